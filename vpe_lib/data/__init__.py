"""Data: the PushWorld generator, the on-disk store, exports and real-data readers."""
