"""Key history across runs: when each key was seen in each system, and since when it is missing.

API::

    history = plan_history(store, comparison, run_id, now)    # pure: reads, never writes
    history.missing_since(system, key) -> "2026-11-27T02:00:00Z"  # diff_missing_from_system.csv
    history.missing_since_all(system, keys) -> the same for many keys
    history.counts() -> {"appeared": ..., "disappeared": ..., "gaps_opened": ..., ...}
    store.commit_run(..., history=history)                  # writes it, with the run
    plan_unchanged(store, run_id, now, systems)             # a run that read the same files
    key_timeline(store, key) -> KeyTimeline                  # `keysync history KEY`

What is stored, and why (a run must cost what changed, not what exists):

- The authority's key set, as one msgpack blob (``system_state.keys``).
- For each peer X only its difference from the authority: its *gaps* (keys
  of A that X lacks), grouped by the run in which each gap began, and its
  *extra* keys (out-of-authority). Then ``keys(X) = (keys(A) - gaps(X)) |
  extra(X)``: a peer's full key set never needs storing, and at the usual
  10 % discrepancy rates these blobs are a tenth of the size.
- ``key_history`` rows only for *transitions*: a key that appeared in or
  disappeared from a system, with the run. The keys present when keysync
  first read a system are not written one by one; they are "present since
  the system's baseline run" (``system_state.baseline_seq``).

A run compares the authority's keys with the stored blob; unchanged (the
usual case) costs one encode and a byte comparison. If it changed, one set
difference gives the keys added to and removed from A, and every peer's
transitions follow from small set operations on its gaps, its extras and
that delta — never from a pass over a peer's million keys. With A0/A1 the
authority's keys before/now, ``added = A1 - A0``, ``removed = A0 - A1``, a
peer's gaps G0/G1 and extras O0/O1 before/now, and X1 its keys read now
(so its keys before were ``X0 = (A0 - G0) | O0``)::

    disappeared = (O0 - X1) | ((G1 - G0) - added) | ((removed - G0) - X1)
    appeared    = (O1 - O0 - (removed - G0))
                | {k in (G0 - G1) | (added - G1) : k not in O0 and k in A1}

(tests/test_state.py checks this against a brute-force model on random runs).

``missing_since(X, key)`` is when the current stretch began in which the key
is in A but not in X: the first run of it (this run's time for a gap that
begins now). A peer that is unavailable or not read keeps its last known
keys: its gaps and extras are rebased onto the new A without events, so a gap
it had stays open with its original start, and a key A gains meanwhile starts
its gap in that run (docs/state.md, "missing since").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import filterfalse, repeat

import msgspec

from keysync.comparison import Comparison
from keysync.state import HistoryState, StateStore, SystemHistoryState, as_iso, paused_gc

_encode = msgspec.msgpack.Encoder().encode
_decode_keys = msgspec.msgpack.Decoder(list[str]).decode
_decode_groups = msgspec.msgpack.Decoder(dict[int, list[str]]).decode

# One key_history row: (key, system, seq, event, last_seen_seq).
HistoryEvent = tuple[str, str, int, str, "int | None"]


@dataclass
class Transitions:
    """The keys that made one transition (``appeared``, ``disappeared``) in one system in
    this run, sorted: one list of existing strings, not a row object per key.

    A rule change makes every key of every system disappear in its old form and appear
    in its new one: ten million transitions at 5 x 1M keys. As row tuples sorted into
    key_history's primary-key order they took a gigabyte and most of the run's time; as
    a sorted list per system they cost a pointer a key, and inserting them system by
    system keeps the B-tree's inserts about as sequential as the global sort did.
    """

    system: str
    event: str
    last_seen_seq: int | None
    keys: list[str]


@dataclass
class SystemUpdate:
    """What a run writes into ``system_state`` for one system; ``blobs`` only when changed."""

    system: str
    role: str
    baseline_seq: int
    last_read_seq: int
    key_count: int
    blobs: dict[str, bytes | None] = field(default_factory=dict)


@dataclass
class HistoryPlan:
    """The history changes of one run, computed before anything is written."""

    run_id: str
    seq: int
    now: str
    observed: dict[int, str]
    transitions: list[Transitions] = field(default_factory=list)
    updates: list[SystemUpdate] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    gap_starts: dict[str, dict[str, int]] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)

    def missing_since(self, system: str, key: str) -> str:
        """When the current gap of ``key`` in ``system`` began (ISO UTC)."""
        started = self.gap_starts.get(system, {}).get(key, self.seq)
        return self.observed.get(started, self.now)

    def missing_since_all(self, system: str, keys: Iterable[str]) -> Iterator[str]:
        """``missing_since`` of many keys of one system, in C."""
        starts = map(self.gap_starts.get(system, {}).get, keys, repeat(self.seq))
        return map(self.observed.get, starts, repeat(self.now))

    def ordered_transitions(self) -> list[Transitions]:
        """System by system, as key_history's primary key orders them."""
        return sorted(self.transitions, key=lambda t: t.system)

    def rows(self) -> Iterator[HistoryEvent]:
        """The key_history rows to write, system by system, each in key order."""
        for group in self.ordered_transitions():
            yield from zip(
                group.keys,
                repeat(group.system),
                repeat(self.seq),
                repeat(group.event),
                repeat(group.last_seen_seq),
            )

    def system_updates(self) -> list[SystemUpdate]:
        return self.updates

    def removed_systems(self) -> list[str]:
        return self.removed

    def counts(self) -> dict[str, int]:
        return dict(self.stats)


def plan_history(
    store: StateStore, comparison: Comparison, run_id: str, now: object
) -> HistoryPlan:
    """Work out this run's history changes (pure: the store is only read)."""
    state = store.load_history_state()
    seq = store.run_seq(run_id)
    stamp = as_iso(now)  # type: ignore[arg-type]
    observed = dict(state.observed)
    observed[seq] = stamp
    plan = HistoryPlan(run_id, seq, stamp, observed)
    with paused_gc():
        _Planner(plan, state, comparison).run()
    return plan


_STATS = ("appeared", "disappeared", "gaps_opened", "gaps_closed", "systems_baselined")


def plan_unchanged(
    store: StateStore, run_id: str, now: object, systems: Iterable[str]
) -> HistoryPlan:
    """The history of a run that read what the last successful run read (keysync/replay.py):
    no transition, no blob changed; only that every system was read again in this run."""
    seq = store.run_seq(run_id)
    stamp = as_iso(now)  # type: ignore[arg-type]
    plan = HistoryPlan(run_id, seq, stamp, {seq: stamp}, stats=dict.fromkeys(_STATS, 0))
    heads = store.system_heads()
    for system in systems:
        role, baseline_seq, key_count = heads[system]
        plan.updates.append(SystemUpdate(system, role, baseline_seq, seq, key_count))
    return plan


class _Planner:
    def __init__(self, plan: HistoryPlan, state: HistoryState, comparison: Comparison) -> None:
        self.plan = plan
        self.state = state
        self.comparison = comparison
        self.seq = plan.seq
        self.authority = comparison.authority
        self.a_keys = comparison.index[self.authority].first_row
        self.added: set[str] = set()
        self.removed: set[str] = set()
        self.stats = dict.fromkeys(_STATS, 0)

    def run(self) -> None:
        read = [s for s, row in self.comparison.summaries.items() if row.available]
        previous = self._authority()
        for system in read:
            if system == self.authority:
                continue
            self._peer(system, previous.get(system))
        for system, stored in previous.items():
            if system not in read and stored.role == "peer":
                self._rebase(stored)
        self.plan.stats = self.stats

    # -------------------------------------------------------------- authority

    def _authority(self) -> dict[str, SystemHistoryState]:
        """Diff A with its stored keys; returns the stored state still valid for peers."""
        seq, a_keys = self.seq, self.a_keys
        stored = self.state.authority
        blob = _encode(list(a_keys))
        if stored is None or stored.system != self.authority:
            # First run, or another system became the authority: everything starts here.
            self.plan.removed = sorted(self.state.systems)
            self.stats["systems_baselined"] += 1
            self.plan.updates.append(
                SystemUpdate(self.authority, "authority", seq, seq, len(a_keys), {"keys": blob})
            )
            return {}
        blobs: dict[str, bytes | None] = {}
        if stored.keys != blob:
            # filterfalse over a bound __contains__ runs the membership tests in C.
            previous = _decode_keys(stored.keys) if stored.keys else []
            self.removed = set(filterfalse(a_keys.__contains__, previous))
            if len(a_keys) != len(previous) - len(self.removed):
                self.added = set(filterfalse(set(previous).__contains__, a_keys))
            blobs["keys"] = blob
            self._events(self.authority, self.added, self.removed, stored.last_read_seq)
        self.plan.updates.append(
            SystemUpdate(self.authority, "authority", stored.baseline_seq, seq, len(a_keys), blobs)
        )
        return {name: s for name, s in self.state.systems.items() if name != self.authority}

    # ------------------------------------------------------------------ peers

    def _peer(self, system: str, stored: SystemHistoryState | None) -> None:
        seq = self.seq
        gaps_now = self.comparison.gaps.get(system, set())
        extra_now = self.comparison.missing_in_a.get(system, set())
        count = len(self.comparison.index[system].first_row)
        if stored is None or stored.role != "peer":
            self.stats["systems_baselined"] += 1
            self.stats["gaps_opened"] += len(gaps_now)
            self.plan.gap_starts[system] = {}
            self.plan.updates.append(
                SystemUpdate(
                    system,
                    "peer",
                    seq,
                    seq,
                    count,
                    {
                        "gaps": _encode({seq: list(gaps_now)} if gaps_now else {}),
                        "extra": _encode(list(extra_now)),
                    },
                )
            )
            return
        groups = _decode_groups(stored.gaps) if stored.gaps else {}
        gap_start: dict[str, int] = {}
        for started, keys in groups.items():
            gap_start.update(dict.fromkeys(keys, started))
        extra_before = set(_decode_keys(stored.extra)) if stored.extra else set()
        keys_now = self.comparison.index[system].first_row
        added, removed = self.added, self.removed

        # Gaps opened and closed since X was last read; then X's transitions, from small
        # sets only (the algebra is in the module docstring).
        opened = gaps_now.difference(gap_start)
        closed_count = len(gap_start) - (len(gaps_now) - len(opened))
        closed = gap_start.keys() - gaps_now if closed_count else set()
        dropped_from_a = removed.difference(gap_start)  # A lost it, X had it
        disappeared = extra_before.difference(keys_now)
        disappeared |= opened.difference(added)
        disappeared |= dropped_from_a.difference(keys_now)
        appeared = extra_now.difference(extra_before).difference(dropped_from_a)
        appeared.update(
            key
            for key in (*closed, *added.difference(gaps_now))
            if key not in extra_before and key in self.a_keys
        )
        self._events(system, appeared, disappeared, stored.last_read_seq)
        self.stats["gaps_opened"] += len(opened)
        self.stats["gaps_closed"] += closed_count
        self.plan.gap_starts[system] = gap_start
        blobs: dict[str, bytes | None] = {}
        if opened or closed:
            new_groups = {
                started: kept
                for started, keys in groups.items()
                if (kept := [key for key in keys if key in gaps_now])
            }
            if opened:
                new_groups[seq] = list(opened)
            blobs["gaps"] = _encode(new_groups)
        if extra_now != extra_before:
            blobs["extra"] = _encode(list(extra_now))
        self.plan.updates.append(
            SystemUpdate(system, "peer", stored.baseline_seq, seq, count, blobs)
        )

    def _rebase(self, stored: SystemHistoryState) -> None:
        """A peer not read this run keeps its keys; re-express them against the new A."""
        if not self.added and not self.removed:
            return
        groups = _decode_groups(stored.gaps) if stored.gaps else {}
        gap_start: dict[str, int] = {}
        for started, keys in groups.items():
            gap_start.update(dict.fromkeys(keys, started))
        extra = set(_decode_keys(stored.extra)) if stored.extra else set()
        new_groups: dict[int, list[str]] = {}
        for started, keys in groups.items():
            kept = [key for key in keys if key in self.a_keys]
            if kept:
                new_groups[started] = kept
        opened = list(self.added - extra)
        if opened:
            new_groups.setdefault(self.seq, []).extend(opened)
        new_extra = extra.difference(self.a_keys) | self.removed.difference(gap_start)
        self.plan.updates.append(
            SystemUpdate(
                stored.system,
                "peer",
                stored.baseline_seq,
                stored.last_read_seq,
                stored.key_count,
                {"gaps": _encode(new_groups), "extra": _encode(list(new_extra))},
            )
        )

    def _events(
        self, system: str, appeared: Iterable[str], disappeared: Iterable[str], last_read: int
    ) -> None:
        for event, keys, last_seen in (
            ("appeared", appeared, None),
            ("disappeared", disappeared, last_read),
        ):
            if ordered := sorted(keys):
                self.plan.transitions.append(Transitions(system, event, last_seen, ordered))
                self.stats[event] += len(ordered)


# ------------------------------------------------------------------ one key's timeline


@dataclass
class SystemTimeline:
    """One system's view of one key, for ``keysync history KEY``."""

    system: str
    role: str
    present: bool
    first_seen: str
    last_seen: str
    missing_since: str
    first_seen_run: str
    last_seen_run: str
    missing_since_run: str
    note: str


@dataclass
class KeyTimeline:
    key: str
    systems: list[SystemTimeline]
    events: list[tuple[str, str, str, str]]  # (time, run_id, system, event)


def last_known_holders(
    state: HistoryState, authority: str, unread: Iterable[str], keys: set[str]
) -> dict[str, list[str]]:
    """Of ``keys``, those the ``unread`` peers held when last read: {key: [system, ...]}.

    A peer that is unavailable or left out with ``--systems`` keeps its last known keys,
    ``(keys(A) - gaps) | extra`` as stored; the registry counts it a holder of a new
    entry too, as it does for the entries it already had (docs/state.md).
    """
    stored_a = state.authority
    if stored_a is None or stored_a.system != authority or not keys:
        return {}  # a new authority: history starts over, nothing is known
    a_then = keys.intersection(_decode_keys(stored_a.keys)) if stored_a.keys else set()
    holders: dict[str, list[str]] = {}
    for system in sorted(unread):
        stored = state.systems.get(system)
        if stored is None or stored.role != "peer":
            continue  # never read yet
        held = keys.intersection(_decode_keys(stored.extra)) if stored.extra else set()
        if a_then:
            gaps = _decode_groups(stored.gaps) if stored.gaps else {}
            held |= a_then.difference(*gaps.values())
        for key in held:
            holders.setdefault(key, []).append(system)
    return holders


def holders_when_last_read(state: HistoryState, keys: set[str]) -> dict[str, list[str]]:
    """Of ``keys``, the systems that held each when last read, by name: {key: [system, ...]}.

    Every system the history keeps, the authority (its stored keys) as well as each peer
    (``(keys(A) - gaps) | extra``): the sets a run compared, so what a run would count as
    a key's holders had it read the same inputs again (``registry rekey`` gives a new
    entry those). A peer not read since keeps its last known keys, as runs count it.
    """
    stored_a = state.authority
    if stored_a is None or not keys:
        return {}
    a_then = keys.intersection(_decode_keys(stored_a.keys)) if stored_a.keys else set()
    holders: dict[str, list[str]] = {}
    for system in sorted(state.systems):
        stored = state.systems[system]
        if stored is stored_a:
            held = a_then
        else:
            held = keys.intersection(_decode_keys(stored.extra)) if stored.extra else set()
            if a_then:
                gaps = _decode_groups(stored.gaps) if stored.gaps else {}
                held |= a_then.difference(*gaps.values())
        for key in held:
            holders.setdefault(key, []).append(system)
    return holders


def key_timeline(store: StateStore, key: str) -> KeyTimeline:
    """Everything the history knows about ``key`` (a normalized key), per system."""
    state = store.load_history_state()
    runs = {record.seq: record.run_id for record in store.runs()}
    observed = state.observed

    def when(seq: int | None) -> tuple[str, str]:
        if seq is None:
            return "", ""
        return observed.get(seq, ""), runs.get(seq, "")

    authority = state.authority
    in_a = False
    if authority is not None and authority.keys:
        in_a = key in _decode_keys(authority.keys)
    events = store.key_events(key)
    by_system: dict[str, list[tuple[int, str, int | None]]] = {}
    for event in events:
        by_system.setdefault(event.system, []).append((event.seq, event.event, event.last_seen_seq))
    systems: list[SystemTimeline] = []
    ordered = sorted(state.systems.values(), key=lambda s: (s.role != "authority", s.system))
    for stored in ordered:
        gap_started: int | None = None
        if stored.role == "authority":
            present = in_a
        else:
            groups = _decode_groups(stored.gaps) if stored.gaps else {}
            for started, keys in groups.items():
                if key in keys:
                    gap_started = started
            extra = _decode_keys(stored.extra) if stored.extra else []
            present = (in_a and gap_started is None) or key in extra
        mine = sorted(by_system.get(stored.system, []))
        first: int | None
        if mine:
            first = mine[0][0] if mine[0][1] == "appeared" else stored.baseline_seq
        else:
            first = stored.baseline_seq if present else None
        last: int | None = stored.last_read_seq if present else None
        missing: int | None = gap_started
        gone = [e for e in mine if e[1] == "disappeared"]
        if not present and gone:
            last = gone[-1][2]
            if missing is None:
                missing = gone[-1][0]
        if present:
            note = "present"
        elif first is None:
            note = "never seen" + (" (in A: a propagation gap)" if gap_started else "")
        else:
            note = "missing" + (" (in A: a propagation gap)" if gap_started else "")
        first_at, first_run = when(first)
        last_at, last_run = when(last)
        missing_at, missing_run = when(missing)
        systems.append(
            SystemTimeline(
                stored.system,
                stored.role,
                present,
                first_at,
                last_at,
                missing_at,
                first_run,
                last_run,
                missing_run,
                note,
            )
        )
    timeline = [
        (observed.get(e.seq, ""), runs.get(e.seq, ""), e.system, e.event)
        for e in sorted(events, key=lambda e: (e.seq, e.system))
    ]
    return KeyTimeline(key, systems, timeline)
