"""The merger: applies normalized batches, in source order, into the key index.

The index keeps, per system, a hash map from normalized key to the first line
it was seen on, plus only what a report can need: the timestamp of that first
row, the raw form where it differs from the normalized key, and every
occurrence of keys seen more than once. Batches are applied with dict and set
operations that run in C; only duplicates and messy keys cost Python work.

Batches of one source are applied strictly in ``seq`` order (early arrivals
wait), so the index always equals "every row of source S before offset O_S":
a consistent cut that a checkpoint can store.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, KeysView
from dataclasses import dataclass, field
from itertools import compress

from keysync.messages import KeyBatch, RejectedRow


@dataclass
class SourcePosition:
    """Where a source stands: the next byte, line and batch ``seq`` to apply."""

    offset: int = 0
    line: int = 2
    seq: int = 0


@dataclass
class SystemKeys:
    """Everything the index knows about one system's keys."""

    name: str
    first_line: dict[str, int] = field(default_factory=dict)
    timestamps: dict[str, str] = field(default_factory=dict)
    raw_forms: dict[str, str] = field(default_factory=dict)
    repeats: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    rejected: list[RejectedRow] = field(default_factory=list)
    rows_read: int = 0
    position: SourcePosition = field(default_factory=SourcePosition)

    def keys(self) -> KeysView[str]:
        return self.first_line.keys()

    def raw_form(self, key: str) -> str:
        """The raw key as written on the first row that had ``key``."""
        return self.raw_forms.get(key, key)

    def apply(self, batch: KeyBatch) -> None:
        """Add one batch's rows; the caller guarantees ``seq`` order."""
        keys = batch.keys
        self.rows_read += batch.rows_read
        self.rejected.extend(batch.rejected)
        self.position = SourcePosition(batch.end_offset, batch.next_line, batch.seq + 1)
        if not keys:
            return
        first_line = self.first_line
        fresh = dict(zip(keys, batch.lines))  # in C; a repeated key keeps its last line
        if len(fresh) == len(keys) and first_line.keys().isdisjoint(fresh):
            # The common case, all in C: every key is new and occurs once.
            first_line.update(fresh)
            self.timestamps.update(zip(keys, batch.timestamps))
            if batch.raw_changes:
                self.raw_forms.update((keys[i], raw) for i, raw in batch.raw_changes)
            return
        self._apply_with_repeats(batch, len(fresh) != len(keys))

    def _apply_with_repeats(self, batch: KeyBatch, repeats_inside: bool) -> None:
        """Some key was seen before or occurs twice: only those rows cost a Python step."""
        keys, lines, stamps = batch.keys, batch.lines, batch.timestamps
        first_line = self.first_line
        # First occurrence within the batch wins: build from the reversed rows.
        first_in_batch = dict(zip(reversed(keys), range(len(keys) - 1, -1, -1)))
        seen_before = first_in_batch.keys() & first_line.keys()
        repeated = set(seen_before)
        if repeats_inside:
            repeated.update(key for key, n in Counter(keys).items() if n > 1)
        raw_of = dict(batch.raw_changes) if batch.raw_changes else {}
        for key in seen_before:
            if key not in self.repeats:
                self.repeats[key] = [(first_line[key], self.raw_form(key))]
            del first_in_batch[key]
        # Rows of repeated keys, found in C; a Python step each for these few rows only.
        for i in compress(range(len(keys)), map(repeated.__contains__, keys)):
            key = keys[i]
            self.repeats.setdefault(key, []).append((lines[i], raw_of.get(i, key)))
        new_rows = first_in_batch.values()
        first_line.update(zip(first_in_batch, map(lines.__getitem__, new_rows)))
        self.timestamps.update(zip(first_in_batch, map(stamps.__getitem__, new_rows)))
        if raw_of:
            self.raw_forms.update(
                (keys[i], raw) for i, raw in raw_of.items() if first_in_batch.get(keys[i]) == i
            )


class KeyIndex:
    """The merged key index of every system, fed batch by batch in source order."""

    def __init__(self, systems: Iterable[str]) -> None:
        self.systems: dict[str, SystemKeys] = {name: SystemKeys(name) for name in systems}
        self._waiting: dict[str, dict[int, KeyBatch]] = {name: {} for name in self.systems}
        # Most keys are held by several systems: while reading, every system's index uses
        # one string object per distinct key (~50 MB less per million rows; see
        # docs/performance.md). ``done_reading`` drops this table.
        self._shared: dict[str, str] | None = {}

    def add(self, batch: KeyBatch) -> list[KeyBatch]:
        """Accept a batch in any order; apply it and any waiting successors. Returns the applied."""
        system = self.systems[batch.system]
        waiting = self._waiting[batch.system]
        waiting[batch.seq] = batch
        applied = []
        shared = self._shared
        while system.position.seq in waiting:
            ready = waiting.pop(system.position.seq)
            if shared is not None and ready.keys:
                ready.keys = list(map(shared.setdefault, ready.keys, ready.keys))  # in C
            system.apply(ready)
            applied.append(ready)
        return applied

    def done_reading(self) -> None:
        """Drop the table of shared key strings (batches added later still work)."""
        self._shared = None

    def __getitem__(self, system: str) -> SystemKeys:
        return self.systems[system]
