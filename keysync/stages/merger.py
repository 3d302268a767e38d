"""The merger: appends normalized batches, in source order, to each system's rows.

The parent's work per batch is the serial part of the pipeline, and replaying a
checkpoint repeats it, so it is kept to C calls over whole lists: a batch's
keys, lines and timestamps are appended, and its keys go into a hash map from
key to row with one ``dict.update`` ("last row wins"); one intersection with the
index finds the keys that had a row before, which get it back ("first row
wins"). Only rows whose key occurs more than once cost a Python step, to list
the occurrences. Rows appended without indexing (a checkpoint replay) are
indexed in one pass when the index is next used. Lines, timestamps and raw
forms are looked up through a key's first row, and only for the keys that end
up in a report.

Batches of one source are applied strictly in ``seq`` order (early arrivals
wait), so the rows always equal "every row of source S before offset O_S": a
consistent cut that a checkpoint can store.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, KeysView
from dataclasses import dataclass, field
from itertools import compress, islice
from operator import itemgetter, ne

from keysync.messages import KeyBatch, RejectedRow
from keysync.stages.columns import TextColumn

_index, _raw = itemgetter(0), itemgetter(1)


@dataclass
class SourcePosition:
    """Where a source stands: the next byte, line and batch ``seq`` to apply."""

    offset: int = 0
    line: int = 2
    seq: int = 0


@dataclass
class SystemKeys:
    """One system's usable rows in file order, and the key index built from them.

    ``row_keys``, ``row_lines`` and ``row_stamps`` are aligned, one entry per
    usable row (lines in an array, timestamps in a ``TextColumn``: as lists they
    would hold an object per row, ~100 MB more per million); ``row_raws`` maps a
    row number to its raw key where that differs from the normalized one. A key's
    first row decides its line, timestamp and raw form ("first row wins"); every
    occurrence of a repeated key is kept.
    """

    name: str
    row_keys: list[str] = field(default_factory=list)
    row_lines: array[int] = field(default_factory=lambda: array("q"))  # 8 bytes a row
    row_stamps: TextColumn = field(default_factory=TextColumn)
    row_raws: dict[int, str] = field(default_factory=dict)
    rejected: list[RejectedRow] = field(default_factory=list)
    rows_read: int = 0
    position: SourcePosition = field(default_factory=SourcePosition)
    # The index, key -> first row, and the repeated keys: kept complete batch by batch
    # while ``_indexed`` covers every row; rows appended without indexing (a checkpoint
    # replay, a snapshot) are indexed in one pass when the index is next used.
    _first_row: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    _indexed: int = field(default=0, repr=False, compare=False)
    _repeats: dict[str, list[tuple[int, str]]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def apply(self, batch: KeyBatch, *, index: bool = True) -> None:
        """Append one batch's rows; the caller guarantees ``seq`` order.

        With ``index`` the batch's keys also go into the index at once: the parent has
        time for that while the readers parse the next batches. A checkpoint replay
        passes False, to get the run reading again sooner; the index catches up on use.
        """
        self.rows_read += batch.rows_read
        self.rejected.extend(batch.rejected)
        self.position = SourcePosition(batch.end_offset, batch.next_line, batch.seq + 1)
        if not batch.keys:
            return
        base = len(self.row_keys)
        self.row_keys.extend(batch.keys)
        self.row_lines.frombytes(batch.lines)
        self.row_stamps.extend_packed(
            batch.stamp_width, batch.stamps, len(batch.keys), batch.long_stamps
        )
        if batch.raw_changes:
            changes = batch.raw_changes
            self.row_raws.update(zip(map(base.__add__, map(_index, changes)), map(_raw, changes)))
        if index and self._indexed == base:
            self._index_batch(batch.keys, base)

    def _index_batch(self, keys: list[str], base: int) -> None:
        """Index one batch's rows (``base`` onwards), keeping first rows and repeats right.

        The batch goes in with one ``dict.update`` (last row wins); what that got
        wrong is put back at once: the keys with an earlier row (one C-speed
        intersection with the index) get it back, and only rows whose key occurs
        more than once take a Python step, to keep the first row and list every
        occurrence. So the index is complete after every batch and no pass over the
        whole source is left for its end.
        """
        first = self._first_row
        before = len(first)
        earlier = {key: first[key] for key in first.keys() & keys}
        end = base + len(keys)
        first.update(zip(keys, range(base, end)))
        self._indexed = end
        if not earlier and len(first) - before == len(keys):
            return  # every key of the batch is new, and occurs once
        first.update(earlier)
        suspects = set(earlier)
        if len(first) - before != len(keys) - len(earlier):  # a key occurs twice here
            suspects.update(key for key, times in Counter(keys).items() if times > 1)
        lines, raws, repeats = self.row_lines, self.row_raws, self._repeats
        for row in compress(range(base, end), map(suspects.__contains__, keys)):
            key = keys[row - base]
            occurrences = repeats.get(key)
            if occurrences is None:
                start = earlier.get(key)
                if start is None:  # the key's first row, in this batch
                    first[key] = row
                    repeats[key] = [(lines[row], raws.get(row, key))]
                    continue
                repeats[key] = occurrences = [(lines[start], raws.get(start, key))]
            occurrences.append((lines[row], raws.get(row, key)))

    # -- the index ------------------------------------------------------------------

    @property
    def first_row(self) -> dict[str, int]:
        """Every distinct key -> the number of its first row, in order of first occurrence."""
        if self._indexed < len(self.row_keys):
            self._complete_index()
        return self._first_row

    @property
    def repeats(self) -> dict[str, list[tuple[int, str]]]:
        """Keys seen more than once -> every occurrence as (line, raw key), in file order."""
        self.first_row  # noqa: B018 - completes the index, which finds the repeats
        return self._repeats

    def _complete_index(self) -> None:
        """Index the rows not indexed yet, then give each repeated key its first row back."""
        keys, first = self.row_keys, self._first_row
        rows = len(keys)
        first.update(zip(islice(keys, self._indexed, None), range(self._indexed, rows)))
        self._indexed = rows
        repeats: dict[str, list[tuple[int, str]]] = {}
        if len(first) != rows:
            # A key whose row in the index is not this row has more than one row.
            repeated = set(compress(keys, map(ne, map(first.__getitem__, keys), range(rows))))
            lines, raws = self.row_lines, self.row_raws
            for row in compress(range(rows), map(repeated.__contains__, keys)):
                key = keys[row]
                occurrences = repeats.get(key)
                if occurrences is None:
                    first[key] = row
                    repeats[key] = occurrences = []
                occurrences.append((lines[row], raws.get(row, key)))
        self._repeats = repeats

    def keys(self) -> KeysView[str]:
        return self.first_row.keys()

    def __len__(self) -> int:
        return len(self.first_row)

    def timestamp(self, key: str, default: str = "") -> str:
        """The timestamp of ``key``'s first row; ``default`` for a key this system lacks."""
        row = self.first_row.get(key)
        return default if row is None else self.row_stamps[row]

    def raw_form(self, key: str) -> str:
        """The raw key as written on the first row that had ``key``."""
        return self.row_raws.get(self.first_row[key], key)

    def as_dicts(self) -> tuple[dict[str, int], dict[str, str], dict[str, str]]:
        """Every key's first line, its timestamp, and its raw form where that differs.

        For tests and benchmarks that compare two indexes; a run never needs them all.
        """
        keys, rows = list(self.first_row), list(self.first_row.values())
        raws = dict(zip(keys, self.raws_at(rows, keys)))
        return (
            dict(zip(keys, self.lines_at(rows))),
            dict(zip(keys, self.stamps_at(rows))),
            {key: raw for key, raw in raws.items() if raw != key},
        )

    # Columns for many keys at once, all in C: look the keys' rows up once (``rows_of``),
    # then read each column at those rows. For the reports.

    def rows_of(self, keys: Iterable[str]) -> list[int]:
        """The first row of each of ``keys`` (every one held by this system)."""
        return list(map(self.first_row.__getitem__, keys))

    def lines_at(self, rows: Iterable[int]) -> Iterator[int]:
        return map(self.row_lines.__getitem__, rows)

    def stamps_at(self, rows: list[int]) -> Iterator[str]:
        return self.row_stamps.at(rows)

    def raws_at(self, rows: Iterable[int], keys: Iterable[str]) -> Iterator[str]:
        """The raw key of each row, where ``keys`` holds the row's key."""
        return map(self.row_raws.get, rows, keys)


class KeyIndex:
    """The merged key index of every system, fed batch by batch in source order.

    Each system keeps its own key strings. Sharing one string object per distinct key
    between systems saved ~45 MB per million rows but cost the parent ~0.6 µs a row,
    the largest single item of the serial read (docs/performance.md, "Session 3");
    keeping timestamps as one text per system (``TextColumn``) saves more than that.
    """

    def __init__(self, systems: Iterable[str]) -> None:
        self.systems: dict[str, SystemKeys] = {name: SystemKeys(name) for name in systems}
        self._waiting: dict[str, dict[int, KeyBatch]] = {name: {} for name in self.systems}

    def add(self, batch: KeyBatch) -> list[KeyBatch]:
        """Accept a batch in any order; apply it and any waiting successors. Returns the applied."""
        system = self.systems[batch.system]
        waiting = self._waiting[batch.system]
        waiting[batch.seq] = batch
        applied = []
        while system.position.seq in waiting:
            ready = waiting.pop(system.position.seq)
            system.apply(ready)
            applied.append(ready)
        return applied

    def restore(self, batch: KeyBatch) -> None:
        """Apply a batch replayed from a checkpoint (stored in ``seq`` order), rows only.

        The index of restored rows is built when the source finishes, so that a resumed
        run is reading again sooner (docs/performance.md, "Resume").
        """
        self.systems[batch.system].apply(batch, index=False)

    def finish(self, system: str) -> SystemKeys:
        """``system`` has all its rows: complete its index now."""
        keys = self.systems[system]
        keys.keys()
        return keys

    def __getitem__(self, system: str) -> SystemKeys:
        return self.systems[system]
