"""Atomic file writes: a crash or a full disk leaves the previous file, never half a file."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path


class DiskFullError(OSError):
    pass


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except OSError as error:
        Path(tmp_name).unlink(missing_ok=True)
        if error.errno == errno.ENOSPC:
            raise DiskFullError(
                errno.ENOSPC, f"no space left to write {path}; free disk space and rerun (the previous file is intact)"
            ) from None
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())
