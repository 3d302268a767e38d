"""Temporary files a killed keysync leaves beside what it was writing.

Each is named after the file it would replace and the id of the process writing it
(``.A.csv.4711.pending``, ``.registry.csv.4711.k3j9x_2.tmp``): a ``kill -9`` leaves it behind,
full size, and the next writer of that file removes the ones whose process is gone.
Files of a process still running (another generate) are left alone.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def temp_path(path: Path, pid: int, suffix: str) -> Path:
    """Where ``path``'s new content is written before it takes its place."""
    return path.with_name(f".{path.name}.{pid}{suffix}")


def remove_dead_writers(path: Path, suffix: str) -> None:
    """Remove ``temp_path(path, <pid>, suffix)`` files whose process no longer runs."""
    # .<name>.<pid><suffix>, or .<name>.<pid>.<random><suffix> (mkstemp's)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)(?:\.[a-z0-9_]+)?{re.escape(suffix)}")
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            found = pattern.fullmatch(entry.name)
            if found and int(found[1]) != os.getpid() and not pid_alive(int(found[1])):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
