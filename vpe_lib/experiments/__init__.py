"""Experiments outside the report's stages, each with its own command and page (`still_input`)."""
