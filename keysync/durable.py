"""Writing a file so that a crash leaves its old content or its new, never part of either.

The new content goes to a temp file in the same folder, is fsynced, and is renamed over
the target: POSIX makes the rename atomic, and fsyncing the folder afterwards makes the
rename itself survive a power cut. Callers name the temp file, because each kind of file
has its own rule for finding and removing what a ``kill -9`` left (``keysync.leftovers``).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_synced(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it; on any failure ``path`` is removed again
    (a full disk leaves no half-written file behind)."""
    try:
        with open(path, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise


def replace_atomically(path: Path, data: bytes, temp: Path) -> None:
    """Give ``path`` the content ``data``, whole or not at all, by way of ``temp`` (a name
    in the same folder). Call ``sync_folder(path.parent)`` after it (or after the last of
    several) where the rename must survive a power cut."""
    write_synced(temp, data)
    try:
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


def sync_folder(folder: Path) -> None:
    """fsync ``folder``: the renames and new names in it are durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
