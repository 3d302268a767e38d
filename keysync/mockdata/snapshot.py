"""One system's export on one day: the CSV bytes and its ground truth.

Rows are built column by column with list comprehensions over the held keys
(creation order), then duplicates, corrupted rows and blank lines are inserted
by slicing, so per-row Python work stays at a few operations. Physical line
numbers follow from the final record list: a record starts on line
``2 + index + (multi-line records before it)``, which ``bisect`` answers for
the few rows the manifest names.

Stable per (system, key): the written variant, whether and how the key is
duplicated, its activity rhythm (``last_seen_at``). Per (system, day): the
corrupted rows and blank lines. So consecutive days differ only where keys
were added, removed or seen again: a series that state and incremental
features can use.
"""

from __future__ import annotations

import functools
from array import array
from bisect import bisect_left, bisect_right
from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta
from random import Random
from typing import Any

from keysync.mockdata.corruption import corrupt_rows, corruption_context
from keysync.mockdata.keys import KeyUniverse, random_words
from keysync.mockdata.names import csv_cell
from keysync.mockdata.variants import CANONICAL_GATE, GATE_BITS, messy_cell, other_messy_cell
from keysync.mockdata.variants import unquote as unquote_cell
from keysync.normalization import KeyNormalizer

# Fixed so files never depend on today's clock: day d is REFERENCE_DATE + (d - 1) days, 02:00 UTC.
REFERENCE_DATE = date(2026, 11, 1)
SNAPSHOT_SECONDS = 2 * 3600
DAY_SECONDS = 86_400
# Of 256: 4 = 1.6 % of a system's keys occur twice (half exact copies, half collisions).
DUPLICATE_GATE = 4
# A duplicate lands 1..1024 rows after the first occurrence (at most a quarter of the file).
DUPLICATE_REACH = 1024
# Blank lines: a tenth of the corruption rate (at least one when corruption is on).
BLANK_SHARE_OF_CORRUPTION = 0.1

_TAG_DUPLICATE, _TAG_CORRUPT, _TAG_BLANK = 0, 1, 2
# Corrupted rows copy their timestamps from the first rows; lines are encoded in chunks.
_STAMP_SAMPLE = 1000
_ENCODE_CHUNK = 65_536


def snapshot_date(day: int) -> date:
    return REFERENCE_DATE + timedelta(days=day - 1)


def snapshot_at(day: int) -> str:
    """The snapshot moment of ``day`` (1-based), ISO 8601 UTC."""
    return f"{snapshot_date(day).isoformat()}T02:00:00Z"


_TIMES_OF_DAY = 8192  # distinct times of day a key can be seen at (13 random bits)


@functools.lru_cache(maxsize=1)
def _times_of_day() -> list[str]:
    """8192 times of day spread over 24 h, each with its own seconds."""
    rng = Random("keysync-times-of-day")
    step = DAY_SECONDS / _TIMES_OF_DAY
    seconds = [int(i * step + rng.random() * step) for i in range(_TIMES_OF_DAY)]
    return [f"T{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}Z" for s in seconds]


@functools.lru_cache(maxsize=8)
def _rhythm_table(day: int, history_days: int) -> tuple[list[str], list[int]]:
    """(dates by offset, offset by rhythm) of ``day``.

    A rhythm is a (period, phase) pair, period 1..history_days days, phase
    0..period-1: the key is active on the days where (day + phase) % period
    is 0. ``offset`` is the number of days since the latest activity, and the
    key was last seen on the day before that activity's snapshot date.
    """
    last = snapshot_date(day) - timedelta(days=1)
    dates = [(last - timedelta(days=k)).isoformat() for k in range(history_days)]
    offsets = [
        (day + phase) % period for period in range(1, history_days + 1) for phase in range(period)
    ]
    return dates, offsets


def timestamps(words: list[int], day: int, history_days: int, simulate: bool) -> list[str]:
    """``last_seen_at`` of each key on ``day``, from its stable random word (bits 32..63).

    Each key has a rhythm (bits 45..63) and a time of day (bits 32..44). Its
    last_seen_at lies within ``history_days`` days before the snapshot date and
    changes only on the days the key is active again (about 1 in 15 rows a day
    with 30 days of history), so consecutive snapshots mostly agree.
    ``simulate`` false: every row is stamped with the snapshot moment.
    """
    if not simulate:
        return [snapshot_at(day)] * len(words)
    dates, offsets = _rhythm_table(day, history_days)
    rhythms = len(offsets)
    times = _times_of_day()
    return [dates[offsets[(w >> 45) % rhythms]] + times[(w >> 32) & 8191] for w in words]


@dataclass(frozen=True)
class SnapshotContext:
    """What stays the same for every system and day of one ``generate`` call."""

    universe: KeyUniverse
    seed: int
    normalizer: KeyNormalizer
    default_rules: bool
    max_key_length: int
    corruption_rate: float
    history_days: int
    simulate_history: bool
    store_first_lines: bool


@dataclass
class Snapshot:
    """One system's file for one day and what the manifest says about it."""

    content: bytes
    section: dict[str, Any]
    keys: list[str]  # sorted normalized keys of the valid rows
    key_ids: list[int] | None  # universe indices of those keys, when they are the canonical ones


@dataclass
class _Insert:
    position: int  # goes before base row ``position``
    seq: int
    record: str
    tag: int
    base_row: int = -1  # duplicates: the row it repeats
    cell: str = ""  # duplicates: its key cell
    error_type: str = ""  # corrupted rows


def _protect(cells: list[str], delimiter: str) -> list[str]:
    """Quote the cells that contain the delimiter (only for delimiters a key can contain)."""
    return [c if c[:1] == '"' or delimiter not in c else csv_cell(c, delimiter) for c in cells]


def build_snapshot(
    ctx: SnapshotContext,
    system: str,
    day: int,
    held: list[int],
    names: list[str],
    delimiter: str,
    header: str,
) -> Snapshot:
    """The export of ``system`` on ``day`` holding the universe keys ``held`` (ascending)."""
    d = delimiter
    size = len(ctx.universe)
    keys = list(map(ctx.universe.keys.__getitem__, held))
    words = list(map(_words(ctx.seed, system, "variants", size).__getitem__, held))
    cells = [
        k if (w & GATE_BITS) < CANONICAL_GATE else messy_cell(k, w) for k, w in zip(keys, words)
    ]
    if d != ",":
        cells = _protect(cells, d)
    name_cells = list(map(names.__getitem__, held))
    records = _records(cells, name_cells, words, day, ctx, d)
    stamps = timestamps(words[:_STAMP_SAMPLE], day, ctx.history_days, ctx.simulate_history)
    del words

    inserts = _duplicates(ctx, system, day, held, keys, cells, records, name_cells, d)
    duplicate_rows = len(inserts)
    n = len(records)
    rate = ctx.corruption_rate
    valid_rows = n + duplicate_rows
    rng = Random(f"{ctx.seed}:{system}:day-{day}:corruption")
    corruption = corruption_context(d, ctx.max_key_length, ctx.normalizer)
    for row in corrupt_rows(rng, round(rate * valid_rows), keys, stamps, corruption):
        position = int(rng.random() * (n + 1))
        inserts.append(
            _Insert(position, len(inserts), row.record, _TAG_CORRUPT, error_type=row.error_type)
        )
    blanks = max(1, round(valid_rows * rate * BLANK_SHARE_OF_CORRUPTION)) if rate > 0 else 0
    for _ in range(blanks):
        inserts.append(_Insert(int(rng.random() * (n + 1)), len(inserts), "", _TAG_BLANK))
    inserts.sort(key=lambda ins: (ins.position, ins.seq))

    # Splice the inserts in by slices; the header goes first and "" makes the final newline.
    final: list[str] = [header]
    previous = 0
    for ins in inserts:
        final.extend(records[previous : ins.position])
        final.append(ins.record)
        previous = ins.position
    final.extend(records[previous:])
    del records
    multiline = [f for f, record in enumerate(final) if "\n" in record]
    final.append("")
    content = b"\n".join(
        "\n".join(final[i : i + _ENCODE_CHUNK]).encode("utf-8", "surrogateescape")
        for i in range(0, len(final), _ENCODE_CHUNK)
    )
    physical_lines = len(final) - 1 + len(multiline)
    del final
    positions = [ins.position for ins in inserts]

    def line_at(index: int) -> int:
        """Physical line of the record at ``index`` among the data records and blanks."""
        return 2 + index + bisect_left(multiline, index + 1)

    def base_line(row: int) -> int:
        return line_at(row + bisect_right(positions, row))

    truth = _GroundTruth(ctx, keys, cells, held)
    for k, ins in enumerate(inserts):
        if ins.tag == _TAG_CORRUPT:
            truth.rejected.append((line_at(ins.position + k), ins.error_type))
        elif ins.tag == _TAG_DUPLICATE:
            truth.add_duplicate(ins.base_row, ins.cell, line_at(ins.position + k))
    section = truth.section(base_line)
    section.update(
        rows_read=n + len(inserts) - blanks,
        blank_lines=blanks,
        multiline_records=len(multiline),
        physical_lines=physical_lines,
    )
    return Snapshot(content, section, truth.sorted_keys, truth.key_ids)


def _records(
    cells: list[str],
    name_cells: list[str],
    words: list[int],
    day: int,
    ctx: SnapshotContext,
    d: str,
) -> list[str]:
    """One CSV line per held key; the timestamp is built inline (no list of a million stamps)."""
    if ctx.simulate_history and d not in "-:":
        dates, offsets = _rhythm_table(day, ctx.history_days)
        rhythms = len(offsets)
        times = _times_of_day()
        return [
            f"{c}{d}{n}{d}{dates[offsets[(w >> 45) % rhythms]]}{times[(w >> 32) & 8191]}"
            for c, n, w in zip(cells, name_cells, words)
        ]
    stamps = timestamps(words, day, ctx.history_days, ctx.simulate_history)
    stamp_cells = [csv_cell(t, d) for t in stamps]
    return [f"{c}{d}{n}{d}{t}" for c, n, t in zip(cells, name_cells, stamp_cells)]


def _duplicates(
    ctx: SnapshotContext,
    system: str,
    day: int,
    held: list[int],
    keys: list[str],
    cells: list[str],
    records: list[str],
    name_cells: list[str],
    d: str,
) -> list[_Insert]:
    """Second occurrences of 1.6 % of the keys, 1..reach rows after the first one.

    Half are exact copies of the row; half are collisions: another raw variant
    of the same key (the canonical form or a different messy kind), seen at
    another time.
    """
    size = len(ctx.universe)
    gate = _bytes(ctx.seed, system, "duplicate-gate", size)
    flagged = [i for i, g in enumerate(map(gate.__getitem__, held)) if g < DUPLICATE_GATE]
    details = _words(ctx.seed, system, "duplicates", size)
    n = len(records)
    reach = max(1, min(DUPLICATE_REACH, n // 4))
    inserts: list[_Insert] = []
    collisions: list[tuple[int, int, str, int]] = []
    for i in flagged:
        word = details[held[i]]
        position = min(n, i + 1 + (word >> 1) % reach)
        if word & 1:  # an exact copy of the row
            inserts.append(_Insert(position, len(inserts), records[i], _TAG_DUPLICATE, i, cells[i]))
            continue
        if cells[i] != keys[i] and (word >> 11) & 1:
            cell = keys[i]
        else:
            cell = other_messy_cell(keys[i], word >> 12, cells[i])
        if d != ",":
            cell = _protect([cell], d)[0]
        collisions.append((position, i, cell, word))
        inserts.append(_Insert(position, len(inserts), "", _TAG_DUPLICATE, i, cell))
    stamps = timestamps([c[3] for c in collisions], day, ctx.history_days, ctx.simulate_history)
    pending = iter(zip(collisions, stamps))
    for ins in inserts:
        if not ins.record:
            (_, i, cell, _), stamp = next(pending)
            ins.record = f"{cell}{d}{name_cells[i]}{d}{csv_cell(stamp, d)}"
    return inserts


def _words(seed: int, system: str, purpose: str, count: int) -> array[int]:
    """Stable random 64-bit words per (system, universe key); redrawn when needed, never stored."""
    return random_words(Random(f"{seed}:{system}:{purpose}"), count, "Q")


def _bytes(seed: int, system: str, purpose: str, count: int) -> bytes:
    """Stable random bytes per (system, universe key)."""
    return random_words(Random(f"{seed}:{system}:{purpose}"), count, "B").tobytes()


class _GroundTruth:
    """Turns the rows written into the manifest section (keys, duplicates, rejected)."""

    def __init__(
        self, ctx: SnapshotContext, keys: list[str], cells: list[str], held: list[int]
    ) -> None:
        self.ctx = ctx
        self.keys = keys
        self.cells = cells
        self.held = held
        self.rejected: list[tuple[int, str]] = []
        self.dup_rows: list[int] = []
        self.dup_cells: list[str] = []
        self.dup_lines: list[int] = []
        self.sorted_keys: list[str] = []
        self.key_ids: list[int] | None = None

    def add_duplicate(self, base_row: int, cell: str, line: int) -> None:
        self.dup_rows.append(base_row)
        self.dup_cells.append(cell)
        self.dup_lines.append(line)

    def _canonical_is_normal(self) -> bool:
        """True when every row's normalized key is its canonical key (default rules, short keys)."""
        if not self.ctx.default_rules:
            return False
        longest = max(map(len, self.cells), default=0)
        longest = max([longest, *map(len, self.dup_cells)])
        return longest <= self.ctx.max_key_length

    def section(self, base_line: Any) -> dict[str, Any]:
        if self._canonical_is_normal():
            duplicates, first_lines = self._fast(base_line)
        else:
            duplicates, first_lines = self._general(base_line)
        self.rejected.sort()
        errors = Counter(error for _, error in self.rejected)
        return {
            "rows_rejected": len(self.rejected),
            "unique_keys": len(self.sorted_keys),
            "duplicate_keys": len(duplicates),
            "keys": self.sorted_keys,
            "duplicates": duplicates,
            "rejected": [{"line": line, "error_type": error} for line, error in self.rejected],
            "error_types": dict(sorted(errors.items())),
            "first_lines": first_lines,
        }

    def _fast(self, base_line: Any) -> tuple[dict[str, Any], dict[str, int] | None]:
        """Default rules: a row's normalized key is its canonical key, by construction."""
        held_set = set(self.held)
        universe_keys = self.ctx.universe.keys
        self.sorted_keys = [
            universe_keys[u] for u in self.ctx.universe.sorted_order if u in held_set
        ]
        self.key_ids = self.held
        duplicates: dict[str, Any] = {}
        for row, cell, line in zip(self.dup_rows, self.dup_cells, self.dup_lines):
            distinct = len({unquote_cell(self.cells[row]), unquote_cell(cell)})
            duplicates[self.keys[row]] = {
                "lines": [base_line(row), line],
                "distinct_raw_keys": distinct,
                "collision": distinct > 1,
            }
        first_lines = None
        if self.ctx.store_first_lines:
            first_lines = {key: base_line(row) for row, key in enumerate(self.keys)}
        return duplicates, first_lines

    def _general(self, base_line: Any) -> tuple[dict[str, Any], dict[str, int] | None]:
        """Any rules: normalize every raw key and apply the reader contract's row checks."""
        normalize = self.ctx.normalizer.normalize_many
        raws = [unquote_cell(c) for c in self.cells] + [unquote_cell(c) for c in self.dup_cells]
        norms = normalize(raws)
        lines = [base_line(row) for row in range(len(self.cells))] + self.dup_lines
        limit = self.ctx.max_key_length
        occurrences: list[tuple[int, str, str]] = []
        for line, raw, key in zip(lines, raws, norms):
            if len(raw) > limit:
                self.rejected.append((line, "too-long"))
            elif not key:
                self.rejected.append((line, "empty-key"))
            else:
                occurrences.append((line, raw, key))
        occurrences.sort()
        self.sorted_keys = sorted({key for _, _, key in occurrences})
        counts = Counter(key for _, _, key in occurrences)
        grouped: dict[str, list[tuple[int, str]]] = {}
        for line, raw, key in occurrences:
            if counts[key] > 1:
                grouped.setdefault(key, []).append((line, raw))
        duplicates: dict[str, Any] = {}
        for key in sorted(grouped):
            distinct = len({raw for _, raw in grouped[key]})
            duplicates[key] = {
                "lines": [line for line, _ in grouped[key]],
                "distinct_raw_keys": distinct,
                "collision": distinct > 1,
            }
        first_lines: dict[str, int] | None = None
        if self.ctx.store_first_lines:
            first_lines = {}
            for line, _, key in occurrences:
                first_lines.setdefault(key, line)
        return duplicates, first_lines
