"""Incremental mode: a source whose bytes did not change since the last successful run is not read.

A successful run leaves one snapshot per source it read, ``paths.data/snapshots/<system>.msgpack``:
the size and SHA-256 of the file's bytes and that source's part of the key index,
as the run left it (an encode of what the run holds: no line is looked at again).
An incremental run then treats each source by what happened to it:

- **unchanged** (the same size and SHA-256): its part of the index is the
  snapshot's; the file is hashed, not parsed or normalized;
- **changed**: read in full by the pipeline, in parallel with the other changed
  sources, exactly as a full run reads it;
- **no usable snapshot** (none, unreadable, damaged, another format, other
  settings, not a regular file): read in full, and an ``incremental.fallback``
  warning says why.

Why a changed source is read again rather than updated line by line: the
previous design looked every line up among the previous file's lines and parsed
only the new ones, and it measured slower than reading (a changed 1M-row source
took 2.5-2.7 s, one after the other in the parent, where the pipeline reads all
five in 8.9 s in parallel; docs/performance.md, "Session 2").

Snapshots are written in a background thread while the run plans and reports,
to temporary files that are renamed into place only after the run's state is
committed; a failed, interrupted or dry run leaves the previous snapshots. A
source restored from its snapshot keeps that snapshot: it still describes the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
import time
import zlib
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from stat import S_ISREG
from typing import BinaryIO

import msgspec

from keysync import logs
from keysync.checkpoint import InputFingerprint, fingerprint, settings_hash
from keysync.config import Config
from keysync.durable import sync_folder
from keysync.messages import RejectedRow
from keysync.stages.columns import TextColumn
from keysync.stages.merger import KeyIndex, SourcePosition, SystemKeys
from keysync.state import StateStore

# 6: rejected rows with the 2026-12-02 messages (empty-key says what the rules keep, an
# encoding error shows its bytes as 0xF8): a snapshot holds its rejected rows, and an older
# one would replay the old text, unlike a full run; 5: the state
# under a CRC-32 (4: timestamps as one text; 3: as a list; 2: the index; 1: per line)
FORMAT_VERSION = 6
FOLDER = "snapshots"
_CHUNK = 1 << 20


class IndexState(msgspec.Struct, array_like=True):
    """One source's rows as a run left them (a ``SystemKeys``); its index is rebuilt on use."""

    row_keys: list[str]
    row_lines: bytes  # the array of lines, as bytes (machine order: snapshots stay local)
    stamp_width: int | None
    stamp_text: str  # the TextColumn of timestamps: fixed-width cells
    stamp_odd: dict[int, str]
    row_raws: dict[int, str]
    rejected: list[RejectedRow]
    rows_read: int
    next_line: int  # after the file's last line, as a full read ends

    @classmethod
    def of(cls, keys: SystemKeys) -> IndexState:
        return cls(
            keys.row_keys,
            keys.row_lines.tobytes(),
            keys.row_stamps.width,
            keys.row_stamps.text(),
            keys.row_stamps.odd,
            keys.row_raws,
            keys.rejected,
            keys.rows_read,
            keys.position.line,
        )

    def system_keys(self, system: str, size: int) -> SystemKeys:
        """The rows of the whole file again, positioned at its end."""
        return SystemKeys(
            name=system,
            row_keys=self.row_keys,
            row_lines=array("q", self.row_lines),
            row_stamps=TextColumn(
                self.stamp_width, self.stamp_text, self.stamp_odd, len(self.row_keys)
            ),
            row_raws=self.row_raws,
            rejected=self.rejected,
            rows_read=self.rows_read,
            position=SourcePosition(size, self.next_line, 0),
        )


class _Version(msgspec.Struct, array_like=True):
    format: int


class _Head(msgspec.Struct, array_like=True):
    """A snapshot without its index: decoded alone in well under a millisecond."""

    format: int
    system: str
    run_id: str
    settings_hash: str
    size: int
    sha256: str


class Snapshot(_Head):
    """One source as a successful run read it: which bytes, and what the index made of them."""

    state: IndexState


class _Stored(_Head):
    """A snapshot as its file holds it: the state's bytes under a CRC-32 of them.

    The source's SHA-256 says the source is unchanged; the CRC says the state (the
    rows, keys and rejections: all but the few head fields) is as written. A state
    damaged on disk but still decodable (a flipped byte in a key) would otherwise
    put keys that are in no file into the reports and registry; damage to the
    head makes the size, hash or settings differ, and the source is read again.
    """

    state_crc32: int
    state: msgspec.Raw


def _write_stored(handle: BinaryIO, snapshot: Snapshot) -> None:
    """Write ``snapshot`` as a ``_Stored``, field by field: the state encoded once, not copied."""
    state = msgspec.msgpack.encode(snapshot.state)
    fields = (*msgspec.structs.astuple(snapshot)[:-1], zlib.crc32(state))
    handle.write(bytes([0x90 | (len(fields) + 1)]))  # a msgpack fixarray: the fields, the state
    for value in fields:
        handle.write(msgspec.msgpack.encode(value))
    handle.write(state)


class Fallback(Exception):
    """This source cannot be restored from its snapshot; the message says why."""


def snapshot_path(config: Config, system: str) -> Path:
    return config.data_dir / FOLDER / f"{system}.msgpack"


def file_digest(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of a regular file (a pipe or device raises ``Fallback``)."""
    try:
        if not S_ISREG(path.stat().st_mode):
            raise Fallback(f"{path} is not a regular file")
        digest = hashlib.sha256()
        size = 0
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):  # hashlib releases the GIL for large chunks
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise Fallback(f"{path}: cannot read: {exc.strerror or exc}") from None
    return size, digest.hexdigest()


@dataclass
class _Restored:
    keys: SystemKeys
    seconds: float
    from_run: str
    digest: tuple[int, str]


@dataclass
class Snapshots:
    """One run's use of snapshots: restore sources from them, then leave new ones.

    ``restore`` (incremental mode) puts the unchanged sources into the index and
    returns their names; ``prepare`` (every run, after reading) starts writing the
    snapshots of the sources this run read, in the background; ``publish`` (after
    the commit) puts them in place; ``discard`` (a run that did not commit) drops them.
    """

    config: Config
    run_id: str
    save: bool = True
    restored: dict[str, _Restored] = field(default_factory=dict)
    _queue: queue.Queue[tuple[str, Callable[[], Snapshot | str]] | None] = field(
        default_factory=queue.Queue
    )
    _thread: threading.Thread | None = None
    _ready: dict[str, tuple[Path, tuple[int, str]]] = field(default_factory=dict)
    _published: dict[str, tuple[int, str]] = field(default_factory=dict)
    _skipped: dict[str, str] = field(default_factory=dict)
    _unusable: str = ""  # why the folder cannot take snapshots (a file in its place)

    @property
    def folder(self) -> Path:
        return self.config.data_dir / FOLDER

    # ---------------------------------------------------------------------- restore

    def restore(self, index: KeyIndex, systems: Sequence[str], store: StateStore) -> set[str]:
        """Put every unchanged source into the index from its snapshot; returns those systems."""
        log = logs.get_logger(stage="incremental")
        if not store.successful_seqs():
            log.warning(
                "incremental.fallback",
                system=",".join(systems),
                reason="no previous successful run: this run reads every source in full",
            )
            return set()
        for system in systems:
            started = time.monotonic()
            try:
                restored = self._restore(system, started)
            except Fallback as exc:
                log.warning(
                    "incremental.fallback",
                    system=system,
                    reason=f"{exc}; reading {system} in full",
                )
                continue
            if isinstance(restored, str):
                log.info(
                    "incremental.changed",
                    system=system,
                    detail=f"changed since run {restored}: read in full",
                )
                continue
            index.systems[system] = restored.keys
            self.restored[system] = restored
            keys = restored.keys
            log.info(
                "incremental.unchanged",
                system=system,
                lines=keys.position.line - 2,
                rows_read=keys.rows_read,
                rows_rejected=len(keys.rejected),
                unique_keys=len(keys),
                seconds=round(restored.seconds, 3),
                detail=f"unchanged since run {restored.from_run}: skipped",
            )
        return set(self.restored)

    def _load(self, system: str) -> tuple[_Head, bytes]:
        """The snapshot's head, checked, and its bytes (decoded in full only when used)."""
        path = snapshot_path(self.config, system)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise Fallback("no snapshot from a previous run") from None
        except OSError as exc:
            raise Fallback(f"snapshot {path} unreadable: {exc.strerror or exc}") from None
        try:
            version = msgspec.msgpack.decode(data, type=_Version).format
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise Fallback(f"snapshot {path} is unreadable") from None
        if version != FORMAT_VERSION:
            raise Fallback(
                f"snapshot {path} has format {version}, this keysync reads {FORMAT_VERSION}"
            )
        try:
            return msgspec.msgpack.decode(data, type=_Head), data
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise Fallback(f"snapshot {path} is unreadable") from None

    def _restore(self, system: str, started: float) -> _Restored | str:
        """The restored source, or the id of the snapshot's run when the file changed."""
        head, data = self._load(system)
        if head.settings_hash != settings_hash(self.config, [system]):
            raise Fallback(
                "the normalization rules or the source's settings changed since the snapshot"
            )
        path = self.config.source_path(system)
        try:
            if path.stat().st_size != head.size:  # changed: no need to hash it
                return head.run_id
        except OSError as exc:
            raise Fallback(f"{path}: cannot read: {exc.strerror or exc}") from None
        size, sha256 = file_digest(path)
        if (size, sha256) != (head.size, head.sha256):
            return head.run_id
        where = snapshot_path(self.config, system)
        try:
            stored = msgspec.msgpack.decode(data, type=_Stored)
            if zlib.crc32(stored.state) != stored.state_crc32:
                raise Fallback(f"snapshot {where} is damaged (its checksum does not match)")
            state = msgspec.msgpack.decode(stored.state, type=IndexState)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise Fallback(f"snapshot {where} is unreadable") from None
        keys = state.system_keys(system, size)
        return _Restored(keys, time.monotonic() - started, stored.run_id, (size, sha256))

    # ------------------------------------------------------------------------ save

    def prepare(
        self,
        index: KeyIndex,
        unavailable: dict[str, str] | Iterable[str],
        inputs: Sequence[InputFingerprint],
    ) -> None:
        """Start writing snapshots of every source the pipeline read (restored ones keep theirs)."""
        if not self.save:
            return
        fingerprints = {f.system: f for f in inputs}
        for system in index.systems:
            if system in self.restored or system in unavailable or system not in fingerprints:
                continue
            keys = index[system]
            self._submit(system, partial(self._from_index, system, keys, fingerprints[system]))

    def _from_index(
        self, system: str, keys: SystemKeys, started: InputFingerprint
    ) -> Snapshot | str:
        path = self.config.source_path(system)
        try:
            size, sha256 = file_digest(path)
        except Fallback as exc:
            return str(exc)
        if fingerprint(system, path) != started or size != started.size:
            return f"{path} changed during the run"
        hashed = settings_hash(self.config, [system])
        state = IndexState.of(keys)
        return Snapshot(FORMAT_VERSION, system, self.run_id, hashed, size, sha256, state)

    def _submit(self, system: str, build: Callable[[], Snapshot | str]) -> None:
        if self._unusable:
            return
        if self._thread is None:
            try:  # a cache: a folder that cannot be made fails no run, full ones least
                self.folder.mkdir(parents=True, exist_ok=True)
                for stale in self.folder.glob("*.tmp"):
                    stale.unlink(missing_ok=True)
            except OSError as exc:  # one warning for every source ("*"), not one each
                self._unusable = f"cannot use {self.folder}: {exc.strerror or exc}"
                self._skipped["*"] = self._unusable
                return
            self._thread = threading.Thread(target=self._write, name="snapshots", daemon=True)
            self._thread.start()
        self._queue.put((system, build))

    def _write(self) -> None:
        while (job := self._queue.get()) is not None:
            system, build = job
            temp = self.folder / f"{system}.msgpack.{self.run_id}.tmp"
            try:
                snapshot = build()  # its own problems come back as a reason (str)
                if isinstance(snapshot, str):
                    self._skipped[system] = snapshot
                    continue
                digest = (snapshot.size, snapshot.sha256)
                with open(temp, "wb") as handle:
                    _write_stored(handle, snapshot)
                    del snapshot
                    handle.flush()
                    os.fsync(handle.fileno())
                self._ready[system] = (temp, digest)
            except Exception as exc:  # a snapshot is a cache: it never fails the run
                self._skipped[system] = (
                    f"cannot write {temp}: {exc.strerror or exc}"  # a full disk: what and where
                    if isinstance(exc, OSError)
                    else f"{type(exc).__name__}: {exc}"
                )
                with contextlib.suppress(OSError):  # half written (a full disk): only room
                    temp.unlink(missing_ok=True)

    def _finish(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def publish(self) -> None:
        """After the commit: put this run's snapshots in place (each rename is atomic)."""
        self._finish()
        log = logs.get_logger(stage="incremental")
        for system, (temp, digest) in sorted(self._ready.items()):
            target = snapshot_path(self.config, system)
            try:
                os.replace(temp, target)
            except OSError as exc:
                self._skipped[system] = f"cannot write {target}: {exc.strerror or exc}"
                with contextlib.suppress(OSError):  # after the commit: never an error
                    temp.unlink(missing_ok=True)
                continue
            self._published[system] = digest
            log.info("incremental.snapshot_saved", system=system, path=str(target))
        if self._ready:
            try:  # the run is committed: a snapshot problem is a warning, never a failure
                sync_folder(self.folder)
            except OSError as exc:
                self._skipped["*"] = f"cannot sync {self.folder}: {exc.strerror or exc}"
        for system, reason in sorted(self._skipped.items()):
            log.warning(
                "incremental.snapshot_skipped",
                system=system,
                reason=reason,
                detail="the next incremental run reads this source in full",
            )
        self._ready.clear()
        self._skipped.clear()

    def digests(self, systems: Iterable[str]) -> dict[str, tuple[int, str]] | None:
        """After ``publish``: the size and SHA-256 of what this run read of each of
        ``systems``, as its snapshots in place describe it; None if one has none."""
        described = {
            **{system: restored.digest for system, restored in self.restored.items()},
            **self._published,
        }
        if any(system not in described for system in systems):
            return None
        return {system: described[system] for system in systems}

    def discard(self) -> None:
        """The run did not commit: keep the previous snapshots, drop this run's."""
        self._finish()
        for temp, _ in self._ready.values():
            temp.unlink(missing_ok=True)
        self._ready.clear()
        self._skipped.clear()
