"""Errors a user can cause in this package that callers catch without importing torch (the `resnas` CLI)."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be read; the message names the file and the fix."""
