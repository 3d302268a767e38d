"""Incremental mode: rebuild the key index from what changed since the last successful run.

A successful run leaves one snapshot per source, ``paths.data/snapshots/<system>.msgpack``:
the bytes of the file it read and, for every physical line, what that line
turned into (normalized key, raw form, timestamp, or why it was rejected). An
incremental run then treats each source by what happened to it:

- **unchanged** (the same bytes): its part of the index is rebuilt from the
  snapshot's columns; nothing is parsed or normalized;
- **changed**: every line is looked up by its exact bytes among the previous
  file's lines (one dict lookup in C per line); only lines never seen before go
  through the reader's parser and the normalizer; then the index is rebuilt in
  file order with the new line numbers, so inserted or removed lines, reordered
  files and moved duplicates come out exactly as a full read gives them;
- **no usable snapshot** (none, unreadable, another format, other settings,
  another header): the source is read in full by the pipeline, and an
  ``incremental.fallback`` warning says why.

Why the bytes of one line are enough: a line's outcome depends only on its
bytes, the header and the settings (both checked), *provided a record starts
there and ends on the same line*. Only a record whose quoted field runs over
several lines (or is never closed) depends on its neighbours; such records are
flagged ``BOUND`` and are never reused for another file, and a line that is not
in the previous file is always parsed with the lines that follow it.

Snapshots are written in a background thread while the run plans and reports,
to temporary files that are renamed into place only after the run's state is
committed; a failed, interrupted or dry run leaves the previous snapshots.
"""

from __future__ import annotations

import codecs
import os
import queue
import re
import threading
import time
from bisect import bisect_left, bisect_right
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import compress, repeat
from operator import is_, ne
from pathlib import Path
from typing import BinaryIO, overload

import msgspec

from keysync import logs
from keysync.checkpoint import InputFingerprint, fingerprint, settings_hash
from keysync.config import Config, SourceConfig
from keysync.messages import RawBatch, RejectedRow
from keysync.normalization import KeyNormalizer, compile_rules
from keysync.stages.merger import KeyIndex, SourcePosition, SystemKeys
from keysync.stages.normalizer import normalize_batch
from keysync.stages.reader import (
    Header,
    SourceUnavailable,
    _RecordParser,
    read_header,
)
from keysync.state import StateStore, paused_gc

FORMAT_VERSION = 1
FOLDER = "snapshots"

# One byte per physical data line (line number = index + 2).
VALID = 1  # a usable record starts on this line
REJECTED = 2  # a rejected record starts on this line
BOUND = 4  # that record's outcome depends on other lines: never reused for another file
_RECORD = bytes(1 if code & (VALID | REJECTED) else 0 for code in range(256))
_VALID = bytes(1 if code & VALID else 0 for code in range(256))
_REJECTED = bytes(1 if code & REJECTED else 0 for code in range(256))
_RECORD_THEN_NONE = re.compile(b"\x01\x00")  # in ``kinds.translate(_RECORD)``
_REUSABLE = bytes(1 if code & (VALID | REJECTED) and not code & BOUND else 0 for code in range(256))

Rejection = tuple[str, str, str]  # error_type, message, raw (as in rejected_rows.csv)
_Parse = tuple[list[str], list[int], list[str], list[RejectedRow], int, int]  # _RecordParser.parse


class Snapshot(msgspec.Struct, array_like=True):
    """One source as a successful run read it; the columns are per physical data line."""

    format: int
    system: str
    run_id: str
    settings_hash: str
    size: int
    mtime_ns: int
    header: bytes  # line 1 with its line end, as in the file
    body: bytes  # every byte after line 1
    kinds: bytes  # VALID / REJECTED / BOUND bits
    keys: list[str]  # normalized key of a valid record starting on the line, else ""
    stamps: list[str]  # its timestamp cell
    raws: list[str]  # its raw key where that differs from the key, else ""
    rejections: dict[int, Rejection]  # line index -> why the record starting there was rejected
    spans: dict[int, int]  # line index -> lines used, for records over several lines
    dup_keys: list[str]  # keys that occur more than once


class _Version(msgspec.Struct, array_like=True):
    format: int


class Fallback(Exception):
    """This source cannot be updated from its snapshot; the message says why."""


def snapshot_path(config: Config, system: str) -> Path:
    return config.data_dir / FOLDER / f"{system}.msgpack"


def split_lines(body: bytes) -> list[bytes]:
    """Physical lines as the reader sees them: split at ``\\n``, no empty piece after the last."""
    lines = body.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


class _Lines(Sequence[bytes]):
    """``split_lines(body)`` without a million bytes objects at once: lines on demand.

    The body is cut into blocks of whole lines (~64 KiB); a block is split when one
    of its lines is asked for, and only the last two blocks split are kept. Deriving
    a snapshot from the index looks at a few lines, in file order.
    """

    BLOCK = 1 << 16

    def __init__(self, body: bytes) -> None:
        self._body = body
        starts = [0]  # byte offset of each block's first line
        firsts = [0]  # that line's index
        size = len(body)
        while (end := body.find(b"\n", starts[-1] + self.BLOCK)) != -1 and end + 1 < size:
            firsts.append(firsts[-1] + body.count(b"\n", starts[-1], end + 1))
            starts.append(end + 1)
        last = body.count(b"\n", starts[-1]) + (1 if body and not body.endswith(b"\n") else 0)
        self._count = firsts[-1] + last
        starts.append(size)
        self._starts = starts
        self._firsts = firsts
        self._blocks: dict[int, list[bytes]] = {}

    def __len__(self) -> int:
        return self._count

    def _block(self, number: int) -> list[bytes]:
        block = self._blocks.get(number)
        if block is None:
            block = split_lines(self._body[self._starts[number] : self._starts[number + 1]])
            if len(self._blocks) > 1:
                del self._blocks[min(self._blocks)]
            self._blocks[number] = block
        return block

    @overload
    def __getitem__(self, item: int) -> bytes: ...

    @overload
    def __getitem__(self, item: slice) -> list[bytes]: ...

    def __getitem__(self, item: int | slice) -> bytes | list[bytes]:
        if isinstance(item, slice):
            start, stop, step = item.indices(self._count)
            if step != 1:
                raise ValueError("only contiguous slices")
            lines: list[bytes] = []
            while start < stop:
                number = bisect_right(self._firsts, start) - 1
                first = self._firsts[number]
                taken = self._block(number)[start - first : stop - first]
                lines.extend(taken)
                start += len(taken)
            return lines
        if not -self._count <= item < self._count:
            raise IndexError("line index out of range")
        if item < 0:
            item += self._count
        number = bisect_right(self._firsts, item) - 1
        return self._block(number)[item - self._firsts[number]]


def _consume(iterator: Iterable[object]) -> None:
    deque(iterator, maxlen=0)


# ----------------------------------------------------------------- parsing only what's new


@dataclass
class _Parsed:
    """Rows the reader's parser produced for chosen lines, before normalization."""

    raw_keys: list[str] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)
    stamps: list[str] = field(default_factory=list)
    rejected: list[RejectedRow] = field(default_factory=list)


class _LineParser:
    """Parses chosen lines of a file exactly as the reader would, given the whole file.

    Lines that certainly hold one complete record (no quote, or quoted fields that
    all close on the line) are context-free: they are parsed together in one call.
    Any other line with a quote may open a record that runs over the next lines;
    it is parsed with the lines that follow it, and the smallest window for which
    the reader completes the record is the number of lines it needs.
    """

    def __init__(self, system: str, source: SourceConfig, header: Header, config: Config) -> None:
        self.system = system
        self.parser = _RecordParser(system, source, header)
        self.normalizer: KeyNormalizer = compile_rules(config.normalize)
        self.max_key_length = config.processing.max_key_length
        delim = re.escape(source.delimiter.encode(source.encoding))
        cell = b'(?:"(?:[^"]|"")*"|[^"' + delim + b"]*)"
        self._closed = re.compile(cell + b"(?:" + delim + cell + b")*\r?").fullmatch

    def context_free(self, line: bytes) -> bool:
        return b'"' not in line or self._closed(line) is not None

    def singles(self, lines: Sequence[bytes], chosen: list[int], into: _Parsed) -> None:
        """Parse context-free lines (indices into ``lines``) in one call."""
        self.singles_of([lines[i] for i in chosen], chosen, into)

    def singles_of(self, texts: list[bytes], chosen: list[int], into: _Parsed) -> None:
        """``singles`` given the lines' bytes (``texts[n]`` is line index ``chosen[n]``)."""
        if not chosen:
            return
        keys, positions, stamps, rejected, _, _ = self.parser.parse(texts, 0, True)
        into.raw_keys.extend(keys)
        into.numbers.extend(chosen[p] + 2 for p in positions)
        into.stamps.extend(stamps)
        into.rejected.extend(
            msgspec.structs.replace(row, line=chosen[row.line] + 2) for row in rejected
        )

    def in_context(self, lines: Sequence[bytes], index: int, into: _Parsed) -> tuple[int, bool]:
        """Parse the record starting at ``lines[index]``; returns (lines used, bound).

        Bound: the outcome depends on what follows this line (more lines, or the end
        of the file), so it cannot be reused where other lines follow.
        """
        count = len(lines)
        first = index + 2
        done: dict[tuple[int, bool], _Parse] = {}

        def parse(width: int, at_eof: bool) -> _Parse:
            # The parser is a pure function of its arguments: each window is parsed once.
            result = done.get((width, at_eof))
            if result is None:
                result = self.parser.parse(list(lines[index : index + width]), first, at_eof)
                done[width, at_eof] = result
            return result

        def complete(width: int) -> bool:
            return parse(width, index + width >= count)[5] > 0

        # Complete on its own line, with more input to come: it depends on nothing else.
        bound = parse(1, False)[5] == 0
        # The reader completes the record once the window holds all of its lines (or at
        # EOF, or at MAX_RECORD_LINES): find that smallest window by doubling, then bisect.
        high = 1
        while not complete(high):
            high *= 2
        low = high // 2 + 1 if high > 1 else 1
        while low < high:
            middle = (low + high) // 2
            if complete(middle):
                high = middle
            else:
                low = middle + 1
        keys, numbers, stamps, rejected, _, _ = parse(high, index + high >= count)
        for key, line, stamp in zip(keys, numbers, stamps):
            if line == first:
                into.raw_keys.append(key)
                into.numbers.append(line)
                into.stamps.append(stamp)
        for row in rejected:
            if row.line == first:
                into.rejected.append(row)
                if row.error_type == "bad-quoting":
                    return 1, bound  # the reader resumes at the next line
        return high, bound

    def outcomes(
        self, parsed: _Parsed
    ) -> tuple[dict[int, tuple[str, str, str]], dict[int, Rejection]]:
        """Normalize: valid rows (line index -> key, stamp, raw or "") and rejections."""
        batch = normalize_batch(
            RawBatch(
                self.system,
                *(0, 0, 0, 0, 0),
                parsed.raw_keys,
                parsed.numbers,
                parsed.stamps,
                parsed.rejected,
                0,
            ),
            self.normalizer,
            self.max_key_length,
        )
        valid = {
            line - 2: (key, stamp, "" if raw == key else raw)
            for key, line, stamp, raw in zip(
                batch.keys, batch.lines, batch.timestamps, batch.raws()
            )
        }
        rejections = {
            row.line - 2: (row.error_type, row.message, row.raw) for row in batch.rejected
        }
        return valid, rejections


# ------------------------------------------------------------------------ line tables


@dataclass
class LineTable:
    """Per physical data line: kind bits, key, timestamp, raw form, rejection.

    ``spans`` holds, for each record that uses more than one line, how many.
    """

    kinds: bytes
    keys: list[str]
    stamps: list[str]
    raws: list[str]
    rejections: dict[int, Rejection]
    spans: dict[int, int]


def system_keys(
    system: str, table: LineTable, size: int, candidates: set[str] | None = None
) -> SystemKeys:
    """The index of one system from its line table: exactly what the merger builds.

    First occurrences, their timestamps and raw forms come from dicts built in C
    from whole columns; only keys that occur more than once cost Python work.
    ``candidates``, when given, holds every key that may occur more than once; it
    is checked against the count of repeats, and a scan of all keys replaces it
    when it falls short.
    """
    with paused_gc():
        return _system_keys(system, table, size, candidates)


def _system_keys(
    system: str, table: LineTable, size: int, candidates: set[str] | None
) -> SystemKeys:
    kinds = table.kinds
    count = len(kinds)
    valid = kinds.translate(_VALID)
    lines = list(compress(range(2, count + 2), valid))
    keys = list(compress(table.keys, valid))
    stamps = list(compress(table.stamps, valid))
    raws = list(compress(table.raws, valid))
    # In file order, and for a key seen again, its *last* line and timestamp (fixed below).
    first_line = dict(zip(keys, lines))
    timestamps = dict(zip(keys, stamps))
    raw_forms = dict(compress(zip(keys, raws), raws))
    repeats: dict[str, list[tuple[int, str]]] = {}
    extra = len(keys) - len(first_line)
    if extra:
        positions: dict[str, list[int]] = {}
        if candidates:
            for position in compress(range(len(keys)), map(candidates.__contains__, keys)):
                positions.setdefault(keys[position], []).append(position)
            positions = {key: where for key, where in positions.items() if len(where) > 1}
        if sum(map(len, positions.values())) - len(positions) != extra:
            # Every position whose line is not its key's last line, then that last one.
            positions = {}
            earlier = compress(range(len(keys)), map(ne, map(first_line.__getitem__, keys), lines))
            for position in earlier:
                positions.setdefault(keys[position], []).append(position)
            for key, where in positions.items():
                where.append(bisect_left(lines, first_line[key]))
        for key, where in positions.items():
            first = where[0]
            first_line[key] = lines[first]
            timestamps[key] = stamps[first]
            if raws[first]:
                raw_forms[key] = raws[first]
            else:
                raw_forms.pop(key, None)
            repeats[key] = [(lines[p], raws[p] or key) for p in where]
    rejected = [RejectedRow(system, i + 2, *table.rejections[i]) for i in sorted(table.rejections)]
    return SystemKeys(
        name=system,
        first_line=first_line,
        timestamps=timestamps,
        raw_forms=raw_forms,
        repeats=repeats,
        rejected=rejected,
        rows_read=kinds.translate(_RECORD).count(1),
        position=SourcePosition(size, count + 2, 0),
    )


def update_table(
    old: LineTable, old_lines: list[bytes], lines: list[bytes], parser: _LineParser
) -> tuple[LineTable, list[str]]:
    """The line table of ``lines``, reusing ``old`` for every record seen before.

    A single-line record is reused by its bytes, a multi-line record by the bytes
    of all its lines. Returns the table, and the keys that may occur more than once
    now without doing so before (those of new rows and of lines used twice).
    """
    with paused_gc():
        return _update_table(old, old_lines, lines, parser)


def _update_table(
    old: LineTable, old_lines: list[bytes], lines: list[bytes], parser: _LineParser
) -> tuple[LineTable, list[str]]:
    reusable = old.kinds.translate(_REUSABLE)
    known = dict(zip(compress(old_lines, reusable), compress(range(len(old_lines)), reusable)))
    where: list[int | None] = list(map(known.get, lines))
    del known
    count = len(lines)
    misses = list(compress(range(count), map(is_, where, repeat(None))))
    # Multi-line records of the old file, by their first line.
    spanning = {old_lines[i]: i for i, used in old.spans.items()}
    parsed = _Parsed()
    singles: list[int] = []
    spans: dict[int, int] = {}
    bound: list[int] = []
    skip_until = 0
    for index in misses:
        if index < skip_until:
            continue
        line = lines[index]
        if parser.context_free(line):
            singles.append(index)
            continue
        before = spanning.get(line)
        if before is not None:
            used = old.spans[before]
            if lines[index : index + used] == old_lines[before : before + used]:
                where[index] = before  # the same lines: the same record
                spans[index] = used
                skip_until = index + used
                continue
        used, depends = parser.in_context(lines, index, parsed)
        if depends:
            bound.append(index)
        if used > 1:
            spans[index] = used
            skip_until = index + used
    parser.singles(lines, singles, parsed)
    valid, rejections = parser.outcomes(parsed)
    # New outcomes go after the old ones; "nothing" (blank line, inside a record) is one more.
    kinds = bytearray(old.kinds)
    keys, stamps, raws = old.keys, old.stamps, old.raws
    all_rejections = dict(old.rejections)
    nothing = len(kinds)
    kinds.append(0)
    keys.append("")
    stamps.append("")
    raws.append("")
    for index in misses:
        if where[index] is not None:
            continue  # a multi-line record found in the old file
        outcome = valid.get(index)
        if outcome is not None:
            where[index] = len(kinds)
            kinds.append(VALID)
            keys.append(outcome[0])
            stamps.append(outcome[1])
            raws.append(outcome[2])
            continue
        why = rejections.get(index)
        if why is not None:
            where[index] = len(kinds)
            all_rejections[len(kinds)] = why
            kinds.append(REJECTED)
            keys.append("")
            stamps.append("")
            raws.append("")
        else:
            where[index] = nothing
    for index, used in spans.items():
        where[index + 1 : index + used] = [nothing] * (used - 1)
    chosen: list[int] = where  # type: ignore[assignment] # every None was replaced above
    new_kinds = bytearray(map(kinds.__getitem__, chosen))
    for index in (*spans, *bound):
        new_kinds[index] |= BOUND
    rejected_at = list(compress(range(count), new_kinds.translate(_REJECTED)))
    # Keys that may now occur more than once: those of new rows, and of lines used twice.
    may_repeat = [outcome[0] for outcome in valid.values()]
    used_ids = list(compress(chosen, new_kinds.translate(_VALID)))
    if len(set(used_ids)) != len(used_ids):
        may_repeat.extend(keys[i] for i, n in Counter(used_ids).items() if n > 1)
    table = LineTable(
        kinds=bytes(new_kinds),
        keys=list(map(keys.__getitem__, chosen)),
        stamps=list(map(stamps.__getitem__, chosen)),
        raws=list(map(raws.__getitem__, chosen)),
        rejections={i: all_rejections[chosen[i]] for i in rejected_at},
        spans=spans,
    )
    return table, may_repeat


def table_from_index(
    keys: SystemKeys, lines: Sequence[bytes], parser: _LineParser
) -> LineTable | str:
    """The line table of a source the pipeline read, from its index and its lines.

    The index has everything but the timestamps of later occurrences of a key
    and the extent of multi-line records; those few lines are parsed again.
    Returns a reason instead when the file does not match the index (it
    changed after it was read).
    """
    with paused_gc():
        return _table_from_index(keys, lines, parser)


def _table_from_index(
    keys: SystemKeys, lines: Sequence[bytes], parser: _LineParser
) -> LineTable | str:
    count = len(lines)
    if keys.position.line != count + 2:
        return f"the file has {count + 1} lines, the run read {keys.position.line - 1}"
    # Columns indexed by line number (two unused slots in front, dropped at the end):
    # the index's line numbers are used as they are, no list of indices is made.
    width = count + 2
    key_column = [""] * width
    stamp_column = [""] * width
    raw_column = [""] * width
    first = keys.first_line
    timestamps = keys.timestamps
    _consume(map(key_column.__setitem__, first.values(), first))
    if len(timestamps) == len(first) and all(map(is_, timestamps, first)):
        # The merger fills both dicts in the same order: no lookup per key.
        _consume(map(stamp_column.__setitem__, first.values(), timestamps.values()))
    else:
        _consume(map(stamp_column.__setitem__, first.values(), map(timestamps.__getitem__, first)))
    raw_forms = keys.raw_forms
    _consume(map(raw_column.__setitem__, map(first.__getitem__, raw_forms), raw_forms.values()))
    later: list[int] = []
    for key, occurrences in keys.repeats.items():
        first_at = first[key]
        for line, raw in occurrences:
            if line != first_at:
                key_column[line] = key
                raw_column[line] = "" if raw == key else raw
                later.append(line - 2)
    if key_column[0] or key_column[1]:
        return "the file does not match what the run read"
    del key_column[:2], stamp_column[:2], raw_column[:2]
    # VALID where a key starts (a valid record's key is never empty), built in C.
    kinds = bytearray(map(bool, key_column))
    if kinds.count(VALID) != len(first) + len(later):
        return "the file does not match what the run read"
    rejections: dict[int, Rejection] = {}
    for row in keys.rejected:
        index = row.line - 2
        kinds[index] = REJECTED
        rejections[index] = (row.error_type, row.message, row.raw)
    if kinds.translate(_RECORD).count(1) != keys.rows_read:
        return "the file does not match what the run read"
    # A record that may depend on the lines after it: a line with a quote whose next
    # line starts no record, or bad quoting. Parse it again to learn its extent.
    starts = kinds.translate(_RECORD)
    check = [found.start() for found in _RECORD_THEN_NONE.finditer(starts)]  # a few, in C
    if count and starts[-1]:
        check.append(count - 1)
    check.extend(i for i, why in rejections.items() if why[0] == "bad-quoting")
    # Also parse again the later occurrences of keys, for their timestamps. One pass
    # in file order over both kinds of line (``lines`` may split blocks on demand).
    spans: dict[int, int] = {}
    scratch = _Parsed()
    parsed = _Parsed()
    checked = set(check)
    again = set(later)
    singles: list[int] = []
    texts: list[bytes] = []
    for index in sorted(checked | again):
        text = lines[index]
        free = parser.context_free(text)
        if index in checked and not free:
            used, depends = parser.in_context(lines, index, scratch)
            if depends:
                kinds[index] |= BOUND
            if used > 1:
                spans[index] = used
        if index in again:
            if free:
                singles.append(index)
                texts.append(text)
            else:
                parser.in_context(lines, index, parsed)
    if later:
        parser.singles_of(texts, singles, parsed)
        valid, _ = parser.outcomes(parsed)
        for index in later:
            outcome = valid.get(index)
            if outcome is None or outcome[0] != key_column[index]:
                return f"line {index + 2} does not match what the run read"
            stamp_column[index] = outcome[1]
    return LineTable(bytes(kinds), key_column, stamp_column, raw_column, rejections, spans)


# ---------------------------------------------------------------------- the run's hooks


def _snapshot(
    run_id: str, system: str, hashed: str, stat: os.stat_result, header: bytes, body: bytes
) -> Snapshot:
    return Snapshot(
        FORMAT_VERSION,
        system,
        run_id,
        hashed,
        stat.st_size,
        stat.st_mtime_ns,
        header,
        body,
        b"",
        [],
        [],
        [],
        {},
        {},
        [],
    )


def _fill(snapshot: Snapshot, table: LineTable, keys: SystemKeys) -> Snapshot:
    snapshot.kinds = table.kinds
    snapshot.keys = table.keys
    snapshot.stamps = table.stamps
    snapshot.raws = table.raws
    snapshot.rejections = table.rejections
    snapshot.spans = table.spans
    snapshot.dup_keys = list(keys.repeats)
    return snapshot


def _dump(snapshot: Snapshot, handle: BinaryIO) -> None:
    """Write ``msgspec.msgpack.encode(snapshot)`` field by field: the same bytes.

    A snapshot is a msgpack array (``array_like``) and each field's encoding stands
    on its own, so no buffer the size of the whole snapshot is made, and a large
    ``bytes`` field (the file's body) is written as it is, after its ``bin 32`` header.
    """
    fields = msgspec.structs.astuple(snapshot)
    handle.write(msgspec.msgpack.encode([None] * len(fields))[: -len(fields)])
    for value in fields:
        if isinstance(value, bytes) and 1 << 16 <= len(value) < 1 << 32:
            handle.write(b"\xc6" + len(value).to_bytes(4, "big"))
            handle.write(value)
        else:
            handle.write(msgspec.msgpack.encode(value))


def _ascii_compatible(encoding: str) -> bool:
    try:
        return codecs.lookup(encoding).encode('\n",')[0] == b'\n",'
    except LookupError:
        return False


@dataclass
class _Restored:
    keys: SystemKeys
    unchanged: bool
    lines: int
    parsed: int
    seconds: float
    from_run: str


@dataclass
class Snapshots:
    """One run's use of snapshots: restore sources from them, then leave new ones.

    ``restore`` (incremental mode) puts the restorable sources into the index and
    returns their names; ``prepare`` (every run, after reading) starts writing the
    snapshots of this run's sources in the background; ``publish`` (after the
    commit) puts them in place; ``discard`` (a run that did not commit) drops them.
    """

    config: Config
    run_id: str
    save: bool = True
    restored: dict[str, _Restored] = field(default_factory=dict)
    _queue: queue.Queue[tuple[str, Callable[[], Snapshot | str]] | None] = field(
        default_factory=queue.Queue
    )
    _thread: threading.Thread | None = None
    _ready: dict[str, Path] = field(default_factory=dict)
    _skipped: dict[str, str] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.config.data_dir / FOLDER

    # ---------------------------------------------------------------------- restore

    def restore(self, index: KeyIndex, systems: Sequence[str], store: StateStore) -> set[str]:
        """Rebuild every source that has a usable snapshot; returns the systems done."""
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
            index.systems[system] = restored.keys
            self.restored[system] = restored
            keys = restored.keys
            common = {
                "system": system,
                "lines": restored.lines,
                "rows_read": keys.rows_read,
                "rows_rejected": len(keys.rejected),
                "unique_keys": len(keys.first_line),
                "seconds": round(restored.seconds, 3),
            }
            if restored.unchanged:
                log.info(
                    "incremental.unchanged",
                    **common,
                    detail=f"unchanged since run {restored.from_run}: skipped",
                )
            else:
                log.info(
                    "incremental.updated",
                    **common,
                    parsed=restored.parsed,
                    reused=restored.lines - restored.parsed,
                )
        return set(self.restored)

    def _load(self, system: str) -> Snapshot:
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
            return msgspec.msgpack.decode(data, type=Snapshot)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise Fallback(f"snapshot {path} is unreadable") from None

    def _restore(self, system: str, started: float) -> _Restored:
        config = self.config
        source = config.sources[system]
        if not _ascii_compatible(source.encoding):
            raise Fallback(
                f"incremental mode needs an ASCII-compatible encoding, not {source.encoding}"
            )
        snapshot = self._load(system)
        if snapshot.settings_hash != settings_hash(config, [system]):
            raise Fallback(
                "the normalization rules or the source's settings changed since the snapshot"
            )
        path = config.source_path(system)
        try:
            stat = path.stat()
            header = read_header(system, path, source)  # first: it refuses a pipe or device
            data = path.read_bytes()
        except (OSError, SourceUnavailable) as exc:
            raise Fallback(str(exc)) from None
        if data[: header.data_offset] != snapshot.header:
            raise Fallback("the header line changed since the snapshot")
        body = data[header.data_offset :]
        del data
        old = LineTable(
            snapshot.kinds,
            snapshot.keys,
            snapshot.stamps,
            snapshot.raws,
            snapshot.rejections,
            snapshot.spans,
        )
        size = len(snapshot.header) + len(body)
        if body == snapshot.body:
            keys = system_keys(system, old, size, set(snapshot.dup_keys))
            count = len(old.kinds)
            return _Restored(keys, True, count, 0, time.monotonic() - started, snapshot.run_id)
        parser = _LineParser(system, source, header, config)
        lines = split_lines(body)
        table, parsed = update_table(old, split_lines(snapshot.body), lines, parser)
        keys = system_keys(system, table, size, {*snapshot.dup_keys, *parsed})
        from_run = snapshot.run_id
        new = _snapshot(self.run_id, system, snapshot.settings_hash, stat, snapshot.header, body)
        self._submit(system, partial(_fill, new, table, keys))
        return _Restored(keys, False, len(lines), len(parsed), time.monotonic() - started, from_run)

    # ------------------------------------------------------------------------ save

    def prepare(
        self,
        index: KeyIndex,
        unavailable: dict[str, str] | Iterable[str],
        inputs: Sequence[InputFingerprint],
    ) -> None:
        """Start writing snapshots of every source the pipeline read (restored ones are queued)."""
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
        config = self.config
        source = config.sources[system]
        if not _ascii_compatible(source.encoding):
            return f"encoding {source.encoding} is not ASCII-compatible"
        path = config.source_path(system)
        try:
            stat = path.stat()
            header = read_header(system, path, source)
            with open(path, "rb") as handle:  # two reads: the body is never copied
                head = handle.read(header.data_offset)
                body = handle.read()
        except (OSError, SourceUnavailable) as exc:
            return str(exc)
        if fingerprint(system, path) != started or stat.st_size != len(head) + len(body):
            return f"{path} changed during the run"
        parser = _LineParser(system, source, header, config)
        table = table_from_index(keys, _Lines(body), parser)
        if isinstance(table, str):
            return table
        hashed = settings_hash(config, [system])
        new = _snapshot(self.run_id, system, hashed, stat, head, body)
        return _fill(new, table, keys)

    def _submit(self, system: str, build: Callable[[], Snapshot | str]) -> None:
        if not self.save:
            return
        if self._thread is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            for stale in self.folder.glob("*.tmp"):
                stale.unlink(missing_ok=True)
            self._thread = threading.Thread(target=self._write, name="snapshots", daemon=True)
            self._thread.start()
        self._queue.put((system, build))

    def _write(self) -> None:
        while (job := self._queue.get()) is not None:
            system, build = job
            try:
                snapshot = build()
                if isinstance(snapshot, str):
                    self._skipped[system] = snapshot
                    continue
                temp = self.folder / f"{system}.msgpack.{self.run_id}.tmp"
                with open(temp, "wb") as handle:
                    _dump(snapshot, handle)  # no buffer the size of the snapshot
                    del snapshot
                    handle.flush()
                    os.fsync(handle.fileno())
                self._ready[system] = temp
            except Exception as exc:  # a snapshot is a cache: it never fails the run
                self._skipped[system] = f"{type(exc).__name__}: {exc}"

    def _finish(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def publish(self) -> None:
        """After the commit: put this run's snapshots in place (each rename is atomic)."""
        self._finish()
        log = logs.get_logger(stage="incremental")
        for system, temp in sorted(self._ready.items()):
            target = snapshot_path(self.config, system)
            try:
                os.replace(temp, target)
            except OSError as exc:
                self._skipped[system] = f"cannot write {target}: {exc.strerror or exc}"
                continue
            log.info("incremental.snapshot_saved", system=system, path=str(target))
        if self._ready:
            try:  # the run is committed: a snapshot problem is a warning, never a failure
                fd = os.open(self.folder, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
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

    def discard(self) -> None:
        """The run did not commit: keep the previous snapshots, drop this run's."""
        self._finish()
        for temp in self._ready.values():
            temp.unlink(missing_ok=True)
        self._ready.clear()
        self._skipped.clear()
