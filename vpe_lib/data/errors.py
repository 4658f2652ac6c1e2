"""One exception type for every bad input the data readers and writers meet.

`DataError` subclasses `ValueError` so callers that already catch `ValueError`
keep working; its message always names the offending file and/or field so a
user can find the problem without a debugger.
"""

from __future__ import annotations

from os import PathLike

__all__ = ["DataError"]


class DataError(ValueError):
    """Bad input data: missing/corrupt file, malformed field, inconsistent shapes.

    ``path`` and ``field`` are kept as attributes (possibly ``None``) and are
    also written into the message.
    """

    def __init__(self, message: str, *, path: str | PathLike | None = None,
                 field: str | None = None):
        self.path = None if path is None else str(path)
        self.field = field
        parts = []
        if self.path is not None:
            parts.append(self.path)
        if field is not None:
            parts.append(f"field {field!r}")
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)
