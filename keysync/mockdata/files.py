"""Writing mock files safely: atomic replace, durable renames, stale history cleanup."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from pathlib import Path
from typing import Any

import msgspec

from keysync import durable
from keysync.leftovers import dead_writers, remove_dead_writers, remove_dead_writers_in, temp_path
from keysync.testhooks import pause_for_tests

GENERATOR = "keysync.mockdata"


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
    try:
        durable.write_synced(pending_path(path, token), data)
    except OSError as exc:  # named by the file it is for, not its hidden temp (or none: ENOSPC)
        raise OSError(exc.errno, exc.strerror, str(path)) from None


def publish_pending(paths: list[Path], token: int) -> None:
    """Rename every pending file into place, one quick rename each, in ``paths`` order."""
    for done, path in enumerate(paths):
        if done == 1:
            pause_for_tests("mock-mid-publish")  # one file new, the others (and manifest) not
        try:
            os.replace(pending_path(path, token), path)
        except OSError as exc:  # named by the file it is for, as write_pending's are
            raise OSError(exc.errno, exc.strerror, str(path)) from None


def discard_pending(paths: list[Path], token: int) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            pending_path(path, token).unlink()


def sync_folder(folder: Path) -> None:
    """Make the renames in ``folder`` durable (no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        durable.sync_folder(folder)


def day_folder(history: Path, day: int, days: int) -> Path:
    return history / f"day-{day:0{max(2, len(str(days)))}d}"


NOT_LISTED = (
    "exists and was not written by keysync generate (no keysync manifest.json next to it lists it)"
)
CHANGED = (
    "has changed since keysync generate wrote it (its size or content is not what the "
    "keysync manifest.json next to it records)"
)


def content_fields(data: bytes) -> dict[str, Any]:
    """What a manifest records of a file it lists, so that a later ``generate`` can tell
    its own file from one put in its place (a real export, an edit): of the content only,
    so a seed still gives byte-identical manifests."""
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _unchanged(path: Path, section: dict[str, Any]) -> bool:
    """Whether ``path`` still holds what ``section`` records: the size first (one stat),
    the content only when the size matches. A manifest of an older keysync records
    neither: its files count as unchanged, as they did then."""
    size, digest = section.get("size"), section.get("sha256")
    if not isinstance(size, int) or not isinstance(digest, str):
        return True
    try:
        if os.stat(path).st_size != size:
            return False
        hashed = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                hashed.update(chunk)
    except OSError:  # cannot be read: cannot be shown to be ours
        return False
    return hashed.hexdigest() == digest


def _listed(manifest_path: Path) -> dict[str, dict[str, Any]] | None:
    """The files a keysync manifest lists (normalized path -> its system section), or
    None when ``manifest_path`` is not one of ours (missing, unreadable, someone else's)."""
    try:
        old = msgspec.json.decode(manifest_path.read_bytes())
    except (OSError, msgspec.DecodeError):
        return None
    if not isinstance(old, dict) or old.get("generator") != GENERATOR:
        return None
    listed: dict[str, dict[str, Any]] = {}
    for section in (old.get("systems") or {}).values():
        if isinstance(section, dict) and section.get("file"):
            listed[os.path.normpath(manifest_path.parent / str(section["file"]))] = section
    return listed


def _listings(manifest_path: Path) -> list[dict[str, dict[str, Any]]]:
    """What keysync says it wrote beside ``manifest_path`` (``_listed``): the manifest's list,
    if it is ours, and those of a generate killed while its set went into place (``kill -9``,
    a power cut). That one renamed its files one at a time, the manifest last: some are
    new, the rest and the manifest old, and its pending manifest, left beside, lists the
    new ones. They are keysync's too, not real data to refuse to replace."""
    pending = dead_writers(manifest_path, ".pending")
    found = [_listed(path) for path in [manifest_path, *pending]]
    return [listed for listed in found if listed is not None]


def _not_ours(path: Path, listings: list[dict[str, dict[str, Any]]]) -> str | None:
    """Why ``path`` is not what any of ``listings`` says keysync wrote there, or None."""
    key = os.path.normpath(path)
    sections = [listed[key] for listed in listings if key in listed]
    if not sections:
        return NOT_LISTED
    return None if any(_unchanged(path, section) for section in sections) else CHANGED


def _listed_inside(folder: Path, listings: list[dict[str, dict[str, Any]]]) -> list[Path]:
    inside = os.path.normpath(folder)
    paths = {name for listed in listings for name in listed if os.path.dirname(name) == inside}
    return [Path(name) for name in sorted(paths)]


def foreign_files(targets: list[Path], manifest_path: Path) -> list[tuple[Path, str]]:
    """The ``targets`` that exist but are not what a keysync manifest next to them lists
    (real data), each with why (``NOT_LISTED`` or ``CHANGED``).

    ``generate`` writes at the configured source paths; if those hold someone's
    exports, replacing them with mock data would lose them. A file the manifest
    lists whose content no longer matches it (an export copied over a mock file)
    is someone's too.
    """
    listings = _listings(manifest_path)
    foreign = [
        (path, why) for path in targets if path.exists() and (why := _not_ours(path, listings))
    ]
    if manifest_path.exists() and _listed(manifest_path) is None:
        foreign.append((manifest_path, NOT_LISTED))
    return foreign


def changed_in_stale_history(history: Path, days: int) -> list[tuple[Path, str]]:
    """The files of the day folders ``remove_stale_history`` would delete that have
    changed since keysync wrote them: deleting those would lose someone's data."""
    changed: list[tuple[Path, str]] = []
    for folder in _stale_day_folders(history, days):
        listings = _listings(folder / "manifest.json")
        for path in _listed_inside(folder, listings):
            if path.exists() and _not_ours(path, listings) is not None:
                changed.append((path, CHANGED))
    return changed


def _stale_day_folders(history: Path, days: int) -> list[Path]:
    """The ``day-N`` folders under ``history`` that a series of ``days`` does not write."""
    if not history.is_dir():
        return []
    keep = {day_folder(history, d, days).name for d in range(1, days + 1)} if days > 1 else set()
    return [
        folder
        for folder in sorted(history.iterdir())
        if folder.name not in keep and re.fullmatch(r"day-\d+", folder.name) and folder.is_dir()
    ]


def remove_stale_history(history: Path, days: int) -> None:
    """Delete day folders of an earlier ``generate`` that this one does not rewrite.

    In each ``day-N`` folder not kept: the files keysync lists there (``_listings``) and
    the manifest, and what a killed ``generate`` left there (``.A.csv.<pid>.pending``
    of a process that is gone); then the folder, if nothing else is in it.
    """
    for folder in _stale_day_folders(history, days):
        manifest = folder / "manifest.json"
        for path in _listed_inside(folder, _listings(manifest)):
            with contextlib.suppress(OSError):
                path.unlink()
        if _listed(manifest) is not None:
            with contextlib.suppress(OSError):
                manifest.unlink()
        remove_dead_writers_in(folder, ".pending")
        remove_dead_writers_in(folder, ".tmp")
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if empty
    with contextlib.suppress(OSError):
        history.rmdir()  # only if empty
