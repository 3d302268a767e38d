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

from collections.abc import Iterable, KeysView
from dataclasses import dataclass, field
from itertools import compress
from operator import ne

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
        repeats_inside = len(fresh) != len(keys)
        if not repeats_inside and first_line.keys().isdisjoint(fresh):
            # Every key is new and occurs once: all in C.
            first_line.update(fresh)
            self.timestamps.update(zip(keys, batch.timestamps))
            if batch.raw_changes:
                self.raw_forms.update((keys[i], raw) for i, raw in batch.raw_changes)
            return
        self._apply_with_repeats(batch, fresh, repeats_inside)

    def _apply_with_repeats(
        self, batch: KeyBatch, fresh: dict[str, int], repeats_inside: bool
    ) -> None:
        """Some keys were seen before or occur twice: apply as if not, then mend those keys.

        Nearly every batch of a real export has a few such keys (duplicates sit close
        together), so the rows are applied with the same C-level updates as unique
        keys ("last row wins"), and only the handful of repeated keys take a Python
        step to restore "first row wins" and record every occurrence.
        """
        keys, lines, stamps = batch.keys, batch.lines, batch.timestamps
        first_line, timestamps, raw_forms = self.first_line, self.timestamps, self.raw_forms
        repeated = fresh.keys() & first_line.keys()
        before = {k: (first_line[k], timestamps[k], raw_forms.get(k)) for k in repeated}
        if repeats_inside:
            # A row whose line is not its key's last line in the batch: that key repeats.
            repeated.update(compress(keys, map(ne, map(fresh.__getitem__, keys), lines)))
        raw_of = dict(batch.raw_changes)
        first_line.update(fresh)
        timestamps.update(zip(keys, stamps))
        raw_forms.update(zip(map(keys.__getitem__, raw_of), raw_of.values()))
        mended: set[str] = set()
        for i in compress(range(len(keys)), map(repeated.__contains__, keys)):
            key = keys[i]
            raw = raw_of.get(i, key)
            if key not in mended:  # its first row in this batch
                mended.add(key)
                if key in before:
                    line, stamp, first_raw = before[key]
                    self.repeats.setdefault(key, [(line, first_raw or key)])
                else:
                    line, stamp, first_raw = lines[i], stamps[i], (raw if raw != key else None)
                    self.repeats[key] = []
                first_line[key], timestamps[key] = line, stamp
                if first_raw is None:
                    raw_forms.pop(key, None)
                else:
                    raw_forms[key] = first_raw
            self.repeats[key].append((lines[i], raw))


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
