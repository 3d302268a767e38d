"""Checkpoints: what a killed run needs to continue exactly where it stopped.

A checkpoint folder (``paths.checkpoints/<run_id>/``) holds:

- ``header.msgpack``: format version, run id, a hash of the settings that shape
  the index, and a fingerprint of every input (size, CRC-32 of every byte, SHA-256
  of head and tail). Written once, atomically (temp, fsync, rename).
- ``log.bin``: an append-only log of frames. Each frame carries the batches
  the merger applied since the previous frame (normalized keys, lines,
  timestamps, rejected rows, new source positions) and which sources
  failed. A frame is ``length | crc32 | msgpack``; appending one and
  fsyncing it *is* taking a checkpoint, so its cost grows with the rows since
  the last one, never with the whole index.

Loading replays every complete frame into a fresh ``KeyIndex`` and stops at
the first torn or corrupt one: a kill during a checkpoint write falls back to
the previous checkpoint (Flink: restore only complete checkpoints). The stored
source positions are the next byte and line to read (Kafka: the committed
offset is the next record).
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import shutil
import struct
import threading
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG
from typing import Any

import msgspec

from keysync import logs, testhooks
from keysync.config import Config
from keysync.durable import replace_atomically, sync_folder
from keysync.errors import ResumableError, RunError
from keysync.messages import KeyBatch
from keysync.stages.merger import KeyIndex

FORMAT_VERSION = 4  # 2: KeyBatch lines and timestamps packed; 3: whole-file CRC-32 (2026-12-01);
# 4: rejected rows carry the 2026-12-02 messages (empty-key, encoding), as a fresh run gives
HEADER_FILE = "header.msgpack"
HEADER_TEMP = HEADER_FILE + ".tmp"  # the header on its way to its name
LOG_FILE = "log.bin"
_FRAME = struct.Struct("<II")  # payload length, crc32 of payload
_SAMPLE = 64 * 1024  # hashed at each end of an input
_CHUNK = 1024 * 1024  # read at a time for its CRC-32
# How an interrupted run's record ends while its checkpoint can be resumed, and after.
KEPT = "a checkpoint is kept: `keysync run --resume` continues it"
SUPERSEDED = "its checkpoint was superseded by a later run"


class InputFingerprint(msgspec.Struct, array_like=True, frozen=True):
    """Enough of a file to notice that its bytes changed: size, CRC-32, its two ends.

    Every byte counts, the modification time does not: a line edited in the middle
    with the size and time kept (``cp -p``, ``rsync -t``) is a change, and the same
    bytes copied back with a new time are not. CRC-32 because it reads at memory
    speed (0.12 s for the five 62 MB files of 5 x 1M keys; SHA-256 at the 434 MB/s
    measured on the same loaded machine would take 0.7 s); the SHA-256 of the two
    ends makes a chance match of a changed file still less likely.
    """

    system: str
    path: str
    size: int
    crc32: int
    head_tail_sha256: str


class CheckpointHeader(msgspec.Struct, frozen=True):
    format: int
    run_id: str
    created_at: str
    settings_hash: str
    systems: list[str]
    mode: str
    flags: dict[str, bool]
    inputs: list[InputFingerprint]
    # The provisioning settings the run started with: they decide its registry changes.
    provisioning: dict[str, Any] = {}
    # `--fail-on`'s kinds (a checkpoint written before it existed decodes to none).
    fail_on: list[str] = []
    # The settings ``settings_hash`` covers, by name, to say which one changed (a
    # checkpoint written before they were kept decodes to none: it says less).
    shaping: dict[str, Any] = {}


class Frame(msgspec.Struct, array_like=True):
    number: int
    batches: list[KeyBatch]
    unavailable: dict[str, str]


def settings_hash(config: Config, systems: Iterable[str]) -> str:
    """A hash of every setting that shapes the index: rules, limits, and how sources are read."""
    shaping = {
        "normalize": config.normalize,
        "max_key_length": config.processing.max_key_length,
        "sources": {name: config.sources[name] for name in systems},
    }
    return hashlib.sha256(msgspec.msgpack.encode(shaping)).hexdigest()[:16]


def shaping_settings(config: Config, systems: Iterable[str]) -> dict[str, Any]:
    """The settings :func:`settings_hash` covers, by their config names."""
    named = config.key_rules()
    for system in systems:
        for name, value in msgspec.to_builtins(config.sources[system]).items():
            named[f"sources.{system}.{name}"] = value
    return named


def provisioning_settings(config: Config) -> dict[str, Any]:
    """``provisioning`` as plain values, as a checkpoint header keeps them."""
    settings: dict[str, Any] = msgspec.to_builtins(config.provisioning)
    return settings


def fingerprint(system: str, path: Path) -> InputFingerprint:
    """Size, CRC-32 and a hash of the first and last 64 KiB; (0, 0, "") for a missing file.

    Only a regular file is opened: opening a pipe would block until someone writes to
    it (the reader then reports such a source unavailable, with the reason).
    """
    try:
        stat = path.stat()
        if not S_ISREG(stat.st_mode):
            return InputFingerprint(system, str(path), 0, 0, "")
        crc = 0
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                crc = zlib.crc32(chunk, crc)
            size = handle.tell()
            handle.seek(0)
            digest = hashlib.sha256(handle.read(_SAMPLE))
            if size > _SAMPLE:
                handle.seek(max(_SAMPLE, size - _SAMPLE))
                digest.update(handle.read(_SAMPLE))
    except OSError:
        return InputFingerprint(system, str(path), 0, 0, "")
    return InputFingerprint(system, str(path), size, crc, digest.hexdigest())


RESUME_FROM_LAST = "then `keysync run --resume` continues from the last checkpoint"
MEND = f"make room (or fix the permissions), {RESUME_FROM_LAST}"


class CheckpointWriter:
    """Takes a checkpoint every ``interval`` rows without holding up the merge.

    The merger's thread only encodes a frame (msgspec, fast); a background thread
    appends it and waits for ``fdatasync``, which releases the GIL. ``flush``
    takes a checkpoint of everything applied so far and waits until it is safe.
    """

    def __init__(
        self, directory: Path, header: CheckpointHeader | None, interval: int, frames: int = 0
    ) -> None:
        """Start a checkpoint (with ``header``) or continue a restored one (``frames`` so far)."""
        self.directory = directory
        self.interval = interval
        self._pending: list[KeyBatch] = []
        self._rows = 0
        self._unavailable: dict[str, str] = {}
        self.frames = frames
        directory.mkdir(parents=True, exist_ok=True)
        try:
            if header is not None:
                encoded = msgspec.msgpack.encode(header)
                replace_atomically(directory / HEADER_FILE, encoded, directory / HEADER_TEMP)
                sync_folder(directory)
            self._log = open(directory / LOG_FILE, "ab")  # noqa: SIM115 - closed by close()
        except OSError as exc:  # a full disk before the first frame: say where, leave nothing
            problem = f"cannot write checkpoint in {directory}: {exc.strerror or exc}"
            if header is None:  # a resumed run's checkpoint is what --resume needs
                raise ResumableError(problem, MEND) from None
            shutil.rmtree(directory, ignore_errors=True)  # a new run: nothing of it to keep
            raise RunError(
                f"{problem}; make room (or fix the permissions), then run again"
            ) from None
        self._queue: queue.Queue[tuple[bytes, int, int] | None] = queue.Queue(maxsize=8)
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._write_frames, name="checkpoint", daemon=True)
        self._thread.start()

    def add(self, batch: KeyBatch) -> None:
        """Remember an applied batch; take a checkpoint when the interval is reached."""
        self._pending.append(batch)
        self._rows += batch.rows_read
        if self._rows >= self.interval:
            self._submit()

    def source_unavailable(self, system: str, reason: str) -> None:
        self._unavailable[system] = reason

    def _submit(self) -> None:
        if self._error is not None:
            raise self._failure()
        if not (self._pending or self._unavailable):
            return
        frame = Frame(self.frames, self._pending, self._unavailable)
        self._queue.put((msgspec.msgpack.encode(frame), self.frames, self._rows))
        self.frames += 1
        self._pending, self._rows, self._unavailable = [], 0, {}

    def _write_frames(self) -> None:
        log = logs.get_logger(stage="checkpoint")
        while (item := self._queue.get()) is not None:
            payload, number, rows = item
            try:
                if testhooks.pause_requested("checkpoint-write") == number:
                    self._log.write(
                        (_FRAME.pack(len(payload), zlib.crc32(payload)) + payload)[
                            : len(payload) // 2
                        ]
                    )
                    self._log.flush()
                    testhooks.pause("checkpoint-write")
                if self._error is None:
                    self._log.write(_FRAME.pack(len(payload), zlib.crc32(payload)) + payload)
                    self._log.flush()
                    os.fdatasync(self._log.fileno())
                    log.info("checkpoint.saved", frame=number, rows=rows, bytes=len(payload))
            except OSError as exc:
                self._error = exc
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def _failure(self) -> ResumableError:
        reason = getattr(self._error, "strerror", None) or self._error
        return ResumableError(f"cannot write checkpoint in {self.directory}: {reason}", MEND)

    def flush(self) -> None:
        """Checkpoint everything applied so far and wait until it is on disk."""
        self._submit()
        self._queue.join()
        if self._error is not None:
            raise self._failure()

    def close(self) -> None:
        """Stop the writer thread (after the frames already taken) and close the log."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._log.close()


@dataclass
class RestoredRun:
    """An interrupted run rebuilt from its checkpoint."""

    directory: Path
    header: CheckpointHeader
    index: KeyIndex
    unavailable: dict[str, str] = field(default_factory=dict)
    frames: int = 0
    torn_tail: bool = False


def read_header(directory: Path) -> CheckpointHeader:
    try:
        header = msgspec.msgpack.decode(
            (directory / HEADER_FILE).read_bytes(), type=CheckpointHeader
        )
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RunError(
            f"checkpoint {directory} is unreadable ({exc}); it cannot be resumed, "
            "the run starts over"
        ) from None
    if header.format != FORMAT_VERSION:
        raise RunError(
            f"checkpoint {directory} has format {header.format} (another keysync version), "
            f"this keysync reads {FORMAT_VERSION}; it cannot be resumed, the run starts over"
        )
    return header


def load(directory: Path) -> RestoredRun:
    """Replay every complete frame of the checkpoint into a fresh index."""
    header = read_header(directory)
    restored = RestoredRun(directory, header, KeyIndex(header.systems))
    try:
        data = (directory / LOG_FILE).read_bytes()
    except FileNotFoundError:
        data = b""
    position = 0
    decoder = msgspec.msgpack.Decoder(Frame)
    while position < len(data):
        if position + _FRAME.size > len(data):
            restored.torn_tail = True
            break
        length, crc = _FRAME.unpack_from(data, position)
        payload = data[position + _FRAME.size : position + _FRAME.size + length]
        if len(payload) != length or zlib.crc32(payload) != crc:
            restored.torn_tail = True
            break
        try:
            frame = decoder.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            restored.torn_tail = True
            break
        for batch in frame.batches:
            restored.index.restore(batch)
        restored.unavailable.update(frame.unavailable)
        restored.frames += 1
        position += _FRAME.size + length
    if restored.torn_tail:
        # Cut the torn frame off, so the frames this run appends next are readable.
        with open(directory / LOG_FILE, "r+b") as handle:
            handle.truncate(position)
            os.fsync(handle.fileno())
    return restored


def verify_inputs(header: CheckpointHeader, config: Config) -> None:
    """Refuse (exit 3) when the settings or any input changed since the checkpoint."""
    start_over = "run without --resume to start over"
    gone = [name for name in header.systems if name not in config.sources]
    if gone:
        raise RunError(
            f"cannot resume run {header.run_id}: system {', '.join(gone)} is no longer in the "
            f"config's sources; put it back to resume, or {start_over}"
        )
    if header.systems[0] != config.authority:
        raise RunError(
            f"cannot resume run {header.run_id}: it was started with the authority "
            f"{header.systems[0]}, the config now makes {config.authority} the authority "
            f"(the first source); {start_over}"
        )
    if settings_hash(config, header.systems) != header.settings_hash:
        now = shaping_settings(config, header.systems)
        changed = [
            name for name in now if name in header.shaping and header.shaping[name] != now[name]
        ]
        was = (
            "; ".join(
                f"{name} was {json.dumps(header.shaping[name])} when it started and is "
                f"{json.dumps(now[name])} now"
                for name in changed
            )
            or "the normalization or source settings changed since its checkpoint"
        )
        raise RunError(
            f"cannot resume run {header.run_id}: {was}; the rows read so far were read and "
            f"normalized with the settings it started with: put them back to resume, or "
            f"{start_over}"
        )
    now = provisioning_settings(config)
    changed = [name for name in now if header.provisioning.get(name) != now[name]]
    if changed:
        was = "; ".join(
            f"provisioning.{name} was {json.dumps(header.provisioning.get(name))} when it "
            f"started and is {json.dumps(now[name])} now"
            for name in changed
        )
        raise RunError(
            f"cannot resume run {header.run_id}: {was}; a run makes its registry changes with "
            f"the settings it started with: put them back to resume, or {start_over}"
        )
    for stored in header.inputs:
        path = config.source_path(stored.system)
        current = fingerprint(stored.system, path)
        if current != stored:
            how = "changed" if path.exists() or not stored.size else "is gone"
            raise RunError(
                f"cannot resume run {header.run_id}: input {stored.system} ({stored.path}) {how} "
                "since its checkpoint; put it back to resume, or run without --resume to start "
                "over"
            )


def load_verified(directory: Path, config: Config) -> RestoredRun:
    """Load a checkpoint after checking that its settings and inputs are unchanged."""
    verify_inputs(read_header(directory), config)
    return load(directory)


def interrupted_runs(root: Path) -> list[Path]:
    """Checkpoint folders, newest first (run ids sort by start time)."""
    if not root.is_dir():
        return []
    folders = [p for p in root.iterdir() if p.is_dir() and (p / HEADER_FILE).exists()]
    return sorted(folders, key=lambda p: p.name, reverse=True)


_RUN_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{4}")


def never_begun(root: Path) -> list[Path]:
    """Folders of runs killed while their checkpoint's header was written: nothing in them.

    Only what keysync made: a folder named like a run id, holding nothing but the
    temporary header (and an empty log). ``paths.checkpoints`` may be a folder that
    also holds other things (``.``, ``/tmp``): those are never touched.
    """
    if not root.is_dir():
        return []
    debris = {HEADER_TEMP, LOG_FILE}
    return [
        folder
        for folder in root.iterdir()
        if _RUN_ID.fullmatch(folder.name)
        and folder.is_dir()
        and not folder.is_symlink()
        and not (folder / HEADER_FILE).exists()
        and {entry.name for entry in folder.iterdir()} <= debris
    ]


def remove(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
