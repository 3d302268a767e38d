"""Writing mock files safely: atomic replace, durable renames, stale history cleanup."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import msgspec

from keysync.leftovers import remove_dead_writers, temp_path

GENERATOR = "keysync.mockdata"


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path(path, os.getpid(), ".tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


def pending_path(path: Path, token: int) -> Path:
    """Where ``path``'s new content waits until every file of the set is written."""
    return temp_path(path, token, ".pending")


def remove_stale_pending(paths: list[Path]) -> None:
    """The pending and temp files a killed generate (or ``run --keys``) left beside
    these: full-size copies no later generate would otherwise remove."""
    for path in paths:
        remove_dead_writers(path, ".pending")
        remove_dead_writers(path, ".tmp")


def write_pending(path: Path, data: bytes, token: int) -> None:
    """Write ``data`` durably next to ``path`` (``pending_path``), not yet in its place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pending = pending_path(path, token)
    try:
        fd = os.open(pending, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            pending.unlink()
        raise


def publish_pending(paths: list[Path], token: int) -> None:
    """Rename every pending file into place, one quick rename each, in ``paths`` order."""
    for path in paths:
        os.replace(pending_path(path, token), path)


def discard_pending(paths: list[Path], token: int) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            pending_path(path, token).unlink()


def sync_folder(folder: Path) -> None:
    """Make the renames in ``folder`` durable (no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def day_folder(history: Path, day: int, days: int) -> Path:
    return history / f"day-{day:0{max(2, len(str(days)))}d}"


def foreign_files(targets: list[Path], manifest_path: Path) -> list[Path]:
    """The ``targets`` that exist but no keysync manifest next to them lists: real data.

    ``generate`` writes at the configured source paths; if those hold someone's
    exports, replacing them with mock data would lose them.
    """
    listed: set[str] = set()
    ours = False
    try:
        old = msgspec.json.decode(manifest_path.read_bytes())
    except (OSError, msgspec.DecodeError):
        old = None
    if isinstance(old, dict) and old.get("generator") == GENERATOR:
        ours = True
        for section in (old.get("systems") or {}).values():
            if isinstance(section, dict) and section.get("file"):
                listed.add(os.path.normpath(manifest_path.parent / str(section["file"])))
    foreign = [p for p in targets if p.exists() and os.path.normpath(p) not in listed]
    if manifest_path.exists() and not ours:
        foreign.append(manifest_path)
    return foreign


def remove_stale_history(history: Path, days: int) -> None:
    """Delete day folders of an earlier ``generate`` that this one does not rewrite.

    Only folders named ``day-N`` holding one of our manifests are touched, and
    only the files that manifest lists.
    """
    if not history.is_dir():
        return
    keep = {day_folder(history, d, days).name for d in range(1, days + 1)} if days > 1 else set()
    for folder in sorted(history.iterdir()):
        if folder.name in keep or not re.fullmatch(r"day-\d+", folder.name):
            continue
        manifest = folder / "manifest.json"
        try:
            old = msgspec.json.decode(manifest.read_bytes())
        except (OSError, msgspec.DecodeError):
            continue
        if not isinstance(old, dict) or old.get("generator") != GENERATOR:
            continue
        for section in (old.get("systems") or {}).values():
            name = str(section.get("file", ""))
            if name and "/" not in name and "\\" not in name:
                with contextlib.suppress(OSError):
                    (folder / name).unlink()
        with contextlib.suppress(OSError):
            manifest.unlink()
            folder.rmdir()
    with contextlib.suppress(OSError):
        history.rmdir()  # only if empty
