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
    """Whether process ``pid`` still runs. A zombie does not: it has ended (a ``kill -9``'d
    run whose shell has not yet reaped it), holds no lock and writes no file."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        pass
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:  # no /proc (macOS), or it ended just now: kill(pid, 0) decided
        return False
    state = stat[stat.rfind(b")") + 2 :][:1]  # after "pid (command) "; the name may hold ")"
    return state in (b"Z", b"X")


def temp_path(path: Path, pid: int, suffix: str) -> Path:
    """Where ``path``'s new content is written before it takes its place."""
    return path.with_name(f".{path.name}.{pid}{suffix}")


def dead_writers(path: Path, suffix: str) -> list[Path]:
    """The ``temp_path(path, <pid>, suffix)`` files whose process no longer runs."""
    return _of_dead_writers(path.parent, re.escape(path.name), suffix)


def remove_dead_writers(path: Path, suffix: str) -> None:
    """Remove ``temp_path(path, <pid>, suffix)`` files whose process no longer runs."""
    _remove(dead_writers(path, suffix))


def remove_dead_writers_in(folder: Path, suffix: str) -> None:
    """Remove every ``temp_path(<any name>, <pid>, suffix)`` file in ``folder`` whose process
    no longer runs: for a folder whose files' names are not known (a stale day folder)."""
    _remove(_of_dead_writers(folder, ".+?", suffix))


def _of_dead_writers(folder: Path, name_pattern: str, suffix: str) -> list[Path]:
    # .<name>.<pid><suffix>, or .<name>.<pid>.<random><suffix> (mkstemp's)
    pattern = re.compile(rf"\.{name_pattern}\.(\d+)(?:\.[a-z0-9_]+)?{re.escape(suffix)}")
    found: list[Path] = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            named = pattern.fullmatch(entry.name)
            if named and int(named[1]) != os.getpid() and not pid_alive(int(named[1])):
                found.append(Path(entry.path))
    return found


def _remove(paths: list[Path]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink()
