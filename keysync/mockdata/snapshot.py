"""One system's export on one day: the CSV bytes and its ground truth.

A row is seven byte pieces (key cell, delimiter, name, delimiter, date, time,
newline); names, dates and times are shared byte strings from small tables,
so a million rows create almost no per-row objects and ``bytes.join`` does the
copying in C. Duplicates, corrupted rows and blank lines are spliced in
between runs of base rows. Physical line numbers follow from the final order:
a record starts on line ``2 + index + (multi-line records before it)``, which
``bisect`` answers for the rows the manifest names.

Stable per (system, key): the written variant, whether and how the key is
duplicated, its activity rhythm (``last_seen_at``). Per (system, day): the
corrupted rows and blank lines. So consecutive days differ only where keys
were added, removed or seen again: a series that state and incremental
features can use.
"""

from __future__ import annotations

import re
from array import array
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from itertools import chain
from random import Random
from typing import Any

from keysync.mockdata.clock import STAMP_SAMPLE, timestamp_pieces, timestamps
from keysync.mockdata.corruption import corrupt_rows, corruption_context
from keysync.mockdata.keys import KeyUniverse, random_words
from keysync.mockdata.names import csv_cell
from keysync.mockdata.truth import GroundTruth, TruthRules
from keysync.mockdata.variants import CANONICAL_GATE, GATE_BITS, messy_cell, other_messy_cell

# Of 256: 4 = 1.6 % of a system's keys occur twice (half exact copies, half collisions).
DUPLICATE_GATE = 4
# A duplicate lands 1..1024 rows after the first occurrence (at most a quarter of the file).
DUPLICATE_REACH = 1024
# Blank lines: a tenth of the corruption rate (at least one when corruption is on).
BLANK_SHARE_OF_CORRUPTION = 0.1

_TAG_DUPLICATE, _TAG_CORRUPT, _TAG_BLANK = 0, 1, 2
_DUPLICATE_BYTE = re.compile(b"[\\x00-\\x%02x]" % (DUPLICATE_GATE - 1))


@dataclass(frozen=True)
class SnapshotContext:
    """What stays the same for every system and day of one ``generate`` call."""

    universe: KeyUniverse
    seed: int
    rules: TruthRules
    corruption_rate: float
    history_days: int
    simulate_history: bool


@dataclass
class Snapshot:
    """One system's file for one day and what the manifest says about it."""

    content: bytes
    section: dict[str, Any]
    keys: list[str]  # sorted normalized keys of the valid rows
    key_ids: list[int] | None  # universe indices of those keys, when they are the canonical ones


@dataclass
class _Insert:
    """A line spliced in before base row ``position`` (``line`` ends with a newline)."""

    position: int
    seq: int
    line: bytes
    tag: int
    base_row: int = -1  # duplicates: the row it repeats
    cell: str = ""  # duplicates: its key cell
    error_type: str = ""  # corrupted rows


def _protect(cells: list[str], delimiter: str) -> list[str]:
    """Quote the cells that contain the delimiter (only for delimiters a key can contain)."""
    return [c if c[:1] == '"' or delimiter not in c else csv_cell(c, delimiter) for c in cells]


def _encode_all(texts: list[str]) -> list[bytes]:
    """UTF-8 of each text (none contains NUL), in one encode call instead of a million."""
    if not texts:
        return []
    return "\x00".join(texts).encode("utf-8").split(b"\x00")


def build_snapshot(
    ctx: SnapshotContext,
    system: str,
    day: int,
    held: list[int],
    names: list[bytes],
    multiline_keys: list[int],
    delimiter: str,
    header: str,
) -> Snapshot:
    """The export of ``system`` on ``day`` holding the universe keys ``held`` (ascending).

    ``names`` holds delimiter + name cell + delimiter of every universe key, encoded;
    ``multiline_keys`` the (ascending) universe keys whose name spans two lines.
    """
    d = delimiter
    size = len(ctx.universe)
    keys = list(map(ctx.universe.keys.__getitem__, held))
    words = list(map(_words(ctx.seed, system, "variants", size).__getitem__, held))
    cells = [
        k if (w & GATE_BITS) < CANONICAL_GATE else messy_cell(k, w) for k, w in zip(keys, words)
    ]
    if d != ",":
        cells = _protect(cells, d)
    row_names = list(map(names.__getitem__, held))
    dates, times = _stamp_pieces(words, day, ctx, d)
    stamps = timestamps(words[:STAMP_SAMPLE], day, ctx.history_days, ctx.simulate_history)
    rows = _Rows(_encode_all(cells), row_names, dates, times)
    del words

    inserts = _duplicates(ctx, system, day, held, keys, cells, rows, d)
    n = len(held)
    valid_rows = n + len(inserts)
    rate = ctx.corruption_rate
    rng = Random(f"{ctx.seed}:{system}:day-{day}:corruption")
    corruption = corruption_context(d, ctx.rules.max_key_length, ctx.rules.normalizer)
    for row in corrupt_rows(rng, round(rate * valid_rows), keys, stamps, corruption):
        line = row.record.encode("utf-8", "surrogateescape") + b"\n"
        position = int(rng.random() * (n + 1))
        inserts.append(
            _Insert(position, len(inserts), line, _TAG_CORRUPT, error_type=row.error_type)
        )
    blanks = max(1, round(valid_rows * rate * BLANK_SHARE_OF_CORRUPTION)) if rate > 0 else 0
    for _ in range(blanks):
        inserts.append(_Insert(int(rng.random() * (n + 1)), len(inserts), b"\n", _TAG_BLANK))
    inserts.sort(key=lambda ins: (ins.position, ins.seq))

    parts = [header.encode("utf-8") + b"\n"]
    previous = 0
    for ins in inserts:
        parts.append(rows.join(previous, ins.position))
        parts.append(ins.line)
        previous = ins.position
    parts.append(rows.join(previous, n))
    content = b"".join(parts)
    del parts

    # Index = place among data records and blank lines; multi-line records shift later lines.
    positions = [ins.position for ins in inserts]
    multiline = sorted(
        [i + bisect_right(positions, i) for i in rows_holding(held, multiline_keys)]
        + [ins.position + k for k, ins in enumerate(inserts) if b"\n" in ins.line[:-1]]
    )

    def line_at(index: int) -> int:
        return 2 + index + bisect_left(multiline, index)

    def base_line(row: int) -> int:
        return line_at(row + bisect_right(positions, row))

    truth = GroundTruth(ctx.universe, ctx.rules, keys, cells, held)
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
        physical_lines=1 + n + len(inserts) + len(multiline),
    )
    return Snapshot(content, section, truth.sorted_keys, truth.key_ids)


class _Rows:
    """The base rows as byte pieces: key cell, ``,name,``, date, time + newline.

    ``join(a, b)`` gives rows a..b-1. Four shared pieces per row and short runs
    between inserts keep ``bytes.join`` in the CPU cache: about 0.2 s a million rows.
    """

    def __init__(
        self,
        cells: list[bytes],
        names: list[bytes],
        dates: list[bytes],
        times: list[bytes],
    ) -> None:
        self.cells, self.names, self.dates, self.times = cells, names, dates, times

    def join(self, start: int, stop: int) -> bytes:
        pieces = zip(
            self.cells[start:stop],
            self.names[start:stop],
            self.dates[start:stop],
            self.times[start:stop],
        )
        return b"".join(chain.from_iterable(pieces))


def _stamp_pieces(
    words: list[int], day: int, ctx: SnapshotContext, d: str
) -> tuple[list[bytes], list[bytes]]:
    """``last_seen_at`` + newline per row as two pieces; one quoted piece if ``d`` needs it."""
    if ctx.simulate_history and d not in "-:":
        return timestamp_pieces(words, day, ctx.history_days)
    stamps = timestamps(words, day, ctx.history_days, ctx.simulate_history)
    return _encode_all([csv_cell(t, d) for t in stamps]), [b"\n"] * len(stamps)


def _duplicates(
    ctx: SnapshotContext,
    system: str,
    day: int,
    held: list[int],
    keys: list[str],
    cells: list[str],
    rows: _Rows,
    d: str,
) -> list[_Insert]:
    """Second occurrences of 1.6 % of the keys, 1..reach rows after the first one.

    Half are exact copies of the row; half are collisions: another raw variant
    of the same key (the canonical form or a different messy kind), seen at
    another time.
    """
    size = len(ctx.universe)
    gate = _bytes(ctx.seed, system, "duplicate-gate", size)
    duplicated = [m.start() for m in _DUPLICATE_BYTE.finditer(gate)]
    flagged = rows_holding(held, duplicated)
    details = _words(ctx.seed, system, "duplicates", size)
    n = len(held)
    reach = max(1, min(DUPLICATE_REACH, n // 4))
    inserts: list[_Insert] = []
    collisions: list[tuple[_Insert, int]] = []
    for i in flagged:
        word = details[held[i]]
        position = min(n, i + 1 + (word >> 1) % reach)
        if word & 1:  # an exact copy of the row
            inserts.append(
                _Insert(position, len(inserts), rows.join(i, i + 1), _TAG_DUPLICATE, i, cells[i])
            )
            continue
        if cells[i] != keys[i] and (word >> 11) & 1:
            cell = keys[i]
        else:
            cell = other_messy_cell(keys[i], word >> 12, cells[i])
        if d != ",":
            cell = _protect([cell], d)[0]
        insert = _Insert(position, len(inserts), b"", _TAG_DUPLICATE, i, cell)
        inserts.append(insert)
        collisions.append((insert, word))
    stamps = timestamps([w for _, w in collisions], day, ctx.history_days, ctx.simulate_history)
    for (insert, _), stamp in zip(collisions, stamps):
        name = rows.names[insert.base_row]  # already ",name,"
        insert.line = insert.cell.encode() + name + f"{csv_cell(stamp, d)}\n".encode()
    return inserts


def rows_holding(held: list[int], chosen: list[int]) -> list[int]:
    """Rows of ``held`` (ascending universe keys) whose key is in ``chosen`` (ascending, few)."""
    rows = []
    for u in chosen:
        row = bisect_left(held, u)
        if row < len(held) and held[row] == u:
            rows.append(row)
    return rows


def _words(seed: int, system: str, purpose: str, count: int) -> array[int]:
    """Stable random 64-bit words per (system, universe key); redrawn when needed, never stored."""
    return random_words(Random(f"{seed}:{system}:{purpose}"), count, "Q")


def _bytes(seed: int, system: str, purpose: str, count: int) -> bytes:
    """Stable random bytes per (system, universe key)."""
    return random_words(Random(f"{seed}:{system}:{purpose}"), count, "B").tobytes()
