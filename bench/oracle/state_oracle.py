"""A stateful model of what keysync remembers between runs, from docs/state.md and SPEC.md.

``StateModel`` follows one project through a series of runs and manual commands: the
master key registry (statuses Proposed -> Active -> Deprecated, ``seen_in``,
``source_*``, ``last_seen_at``, ``created_run`` / ``updated_run``), the audit events of
each run or manual session, and the key history (first seen, last seen, missing since).
Like ``oracle.py`` it is written from the contract, not from keysync's code; each method
names the rule it implements. It takes the rows of each run from ``oracle.expected_run``
(its own reader and normalizer) and keeps everything else itself.

Runs and manual sessions are named by tags: a run by its ``seq`` (an int, the order of
keysync's ``runs`` table), a manual session by ``"M<n>"`` (the n-th manual command that
changed something).

Accepted difference 3 of README.md next to this file applies here too: a new entry's
``source_system`` / ``source_key`` / ``last_seen_at`` come from the systems read, while
its ``seen_in`` also counts the systems not read (docs/state.md "seen_in").

Everything here is a pure function of the runs and commands it is given.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from oracle import DEFAULT_DELIMITERS, SourceData, newest_stamp

Tag = int | str  # a run's seq, or "M<n>" for a manual session
Event = tuple[str, str, str]  # (event, system, key) as in audit_events
NORMALIZE_DEFAULTS: dict[str, Any] = {
    "trim": True,
    "ascii_fold": True,
    "uppercase": True,
    "collapse_delims": "-",
    "delimiters": DEFAULT_DELIMITERS,
    "strip_non_alnum": True,
    "pad_numbers": 0,
}


def rules_of(cfg: dict[str, Any]) -> str:
    """docs/state.md "Runs" (`flags.rules`): the settings that shape keys and master keys,
    ``normalize.*``, ``processing.max_key_length``, ``provisioning.strategy`` and
    ``provisioning.namespace_separator``, with their defaults filled in (a default written
    out is no change)."""
    prov = cfg.get("provisioning", {})
    return json.dumps(
        {
            "normalize": {**NORMALIZE_DEFAULTS, **cfg.get("normalize", {})},
            "max_key_length": cfg.get("processing", {}).get("max_key_length", 256),
            "strategy": prov.get("strategy", "mirror"),
            "separator": prov.get("namespace_separator", ":"),
        },
        sort_keys=True,
    )


@dataclass
class Entry:
    """One row of ``master_keys`` (docs/state.md "The master key registry")."""

    key: str  # the normalized key
    system: str  # namespaced: the entry's system; mirror: its source system
    strategy: str
    status: str
    source_system: str
    source_key: str
    seen_in: str
    last_seen_at: str
    created: Tag
    updated: Tag
    unseen: int = 0  # successful runs held by no system, since it became Active
    in_authority: bool = False


@dataclass
class RunResult:
    """What one run must leave: the whole registry, its audit events, the open gaps."""

    registry: dict[str, Entry]
    events: list[Event]
    gaps: dict[tuple[str, str], int]  # (system, key) -> seq its stretch began


@dataclass
class StateModel:
    authority: str
    strategy: str = "mirror"
    separator: str = ":"
    deprecate_after_runs: int = 3
    registry: dict[str, Entry] = field(default_factory=dict)
    known: dict[str, dict[str, str]] = field(default_factory=dict)  # system -> key -> stamp
    raw: dict[str, dict[str, str]] = field(default_factory=dict)  # system -> key -> raw key
    baseline: dict[str, int] = field(default_factory=dict)  # system -> first run read
    first: dict[tuple[str, str], int] = field(default_factory=dict)
    last: dict[tuple[str, str], int] = field(default_factory=dict)
    gone: dict[tuple[str, str], int] = field(default_factory=dict)  # latest disappearance
    gaps: dict[tuple[str, str], int] = field(default_factory=dict)
    last_rules: str | None = None
    last_systems: frozenset[str] | None = None  # the config's, at the last run
    manual_sessions: int = 0
    configured: set[str] = field(default_factory=set)  # the systems of the last run's config
    # (system, key) -> the name another key's entry has, as the last run reading system found
    name_conflicts: dict[tuple[str, str], str] = field(default_factory=dict)

    # -------------------------------------------------------------- manual commands

    def _manual(self, events: list[Event]) -> list[Event]:
        """docs/state.md "Audit trail": a manual command that changes something is one
        session (``manual-<time>-<hex>``); one that changes nothing records nothing."""
        if events:
            self.manual_sessions += 1
            tag = f"M{self.manual_sessions}"
            for _, _, mk in events:
                self.registry[mk].updated = tag
        return [
            (ev, self.registry[mk].source_system, self.registry[mk].key) for ev, _, mk in events
        ]

    def approve(self, master_keys: list[str], all_proposed: bool = False) -> list[Event]:
        """docs/state.md "Lifecycle": `registry approve KEY...` / `--all`: Proposed or
        Deprecated -> Active (`--all`: every Proposed key); the unseen count starts again
        ("counted from when it became Active")."""
        if all_proposed:
            master_keys = [mk for mk, e in self.registry.items() if e.status == "Proposed"]
        events: list[Event] = []
        for mk in master_keys:
            e = self.registry[mk]
            if e.status in ("Proposed", "Deprecated"):
                e.status, e.unseen = "Active", 0
                events.append(("key.approved", "", mk))
        return self._manual(events)

    def deprecate(self, master_keys: list[str]) -> list[Event]:
        """docs/state.md "Lifecycle": `registry deprecate KEY...`: Proposed or Active ->
        Deprecated."""
        events: list[Event] = []
        for mk in master_keys:
            e = self.registry[mk]
            if e.status in ("Proposed", "Active"):
                e.status = "Deprecated"
                events.append(("key.deprecated", "", mk))
        return self._manual(events)

    # -------------------------------------------------------------- a run

    def run(
        self,
        seq: int,
        data: dict[str, SourceData | None],
        rules: str,
        auto_approve: bool = False,
        dry_run: bool = False,
        configured: set[str] | None = None,
    ) -> RunResult:
        """One successful run (completed or degraded). ``data``: the systems of this run
        (the config's, or ``--systems``), None for one that could not be read;
        ``configured``: the config's systems (default: those of ``data``).

        docs/state.md "Dry runs": a dry run shows what it would do and changes nothing.
        """
        saved = copy.deepcopy(self.__dict__) if dry_run else None
        read = {s: d.index() for s, d in data.items() if d is not None}
        events: list[Event] = []
        if self.last_rules is not None and rules != self.last_rules:
            events.append(("rules.changed", "", ""))
        self.last_rules = rules
        self._history(seq, read)
        self.configured = set(data) if configured is None else configured
        # docs/state.md: a change of the configured systems is a settings.changed event
        if self.last_systems is not None and self.configured != self.last_systems:
            events.append(("settings.changed", "", ""))
        self.last_systems = frozenset(self.configured)
        events += self._update_entries(seq, set(read))
        events += self._propose(seq, read, auto_approve)
        result = RunResult(copy.deepcopy(self.registry), events, dict(self.gaps))
        if saved is not None:
            self.__dict__.update(saved)
        return result

    def _history(self, seq: int, read: dict[str, dict[str, list[Any]]]) -> None:
        """docs/state.md "Key history".

        - first seen: the run keysync first found the key in that system (keys there the
          first time it read the system: that run, its baseline);
        - last seen: the latest run that read the system while it held the key;
        - a system not read (unavailable, left out with `--systems`, or taken out of the
          config) counts with its last known keys;
        - missing since, for a key A holds and a peer lacks: the first run of the current
          stretch (a stretch begins when A has the key and the system lacks it); for a key
          A does not hold: the run it disappeared (``gone``).
        """
        for s, idx in read.items():
            self.baseline.setdefault(s, seq)
            for k in idx:
                self.first.setdefault((s, k), seq)
                self.last[(s, k)] = seq
            for k in self.known.get(s, {}).keys() - idx.keys():
                self.gone[(s, k)] = seq
            self.known[s] = {k: rows[0].stamp for k, rows in idx.items()}
            self.raw[s] = {k: rows[0].raw_key for k, rows in idx.items()}
        a_keys = self.known[self.authority]
        for s in self.baseline:
            if s != self.authority:
                held = self.known[s]
                for k in a_keys.keys() - held.keys():
                    self.gaps.setdefault((s, k), seq)
        for s, k in list(self.gaps):
            if k not in a_keys or k in self.known[s]:
                del self.gaps[(s, k)]

    def _update_entries(self, seq: int, read: set[str]) -> list[Event]:
        """docs/state.md "The master key registry", "Lifecycle", "Audit trail", for the
        entries that exist before this run.

        - seen_in: mirror, every system holding the key now (A included); namespaced, that
          system and/or A; a configured system not read keeps what it held last, one taken
          out of the config holds nothing;
        - last_seen_at: the newest of the read holders' first rows; while a holder is not
          read the value never goes back; kept while no system holds the key, and when the
          holders' exports stop carrying one (a renamed column; the diff reports then show
          it empty);
        - an Active key held by no system for ``deprecate_after_runs`` successful runs ->
          Deprecated (`key.deprecated`); a Deprecated key held again stays Deprecated
          (`key.reappeared`); `key.resolved` / `key.unresolved` when it enters / leaves A;
          `key.seen_in_changed`; updated_run = the last change of status or seen_in.
        """
        events: list[Event] = []
        a_keys = self.known[self.authority]
        for e in self.registry.values():
            k = e.key
            scope = sorted(self.known) if e.strategy == "mirror" else [self.authority, e.system]
            holders = sorted(
                {s for s in scope if s in self.configured and k in self.known.get(s, {})}
            )
            old_seen, old_status = e.seen_in, e.status
            if holders:
                stamps = [self.known[s][k] for s in holders if s in read]
                if any(s not in read for s in holders):
                    stamps.append(e.last_seen_at)
                e.last_seen_at = newest_stamp(stamps) or e.last_seen_at
                e.unseen = 0
            elif e.status == "Active":
                e.unseen += 1
                if e.unseen >= self.deprecate_after_runs:
                    e.status = "Deprecated"
                    events.append(("key.deprecated", e.source_system, k))
            in_a = k in a_keys
            if in_a != e.in_authority:
                events.append(("key.resolved" if in_a else "key.unresolved", e.source_system, k))
            e.in_authority = in_a
            seen = ";".join(holders)
            if seen != old_seen:
                reappeared = e.status == "Deprecated" and not old_seen
                events.append(
                    ("key.reappeared" if reappeared else "key.seen_in_changed", e.source_system, k)
                )
                e.seen_in = seen
            if seen != old_seen or e.status != old_status:
                e.updated = seq
        return events

    def _propose(
        self, seq: int, read: dict[str, dict[str, list[Any]]], auto_approve: bool
    ) -> list[Event]:
        """docs/state.md "The master key registry" and "Lifecycle": a key a read peer holds
        and A does not gets a master key once (mirror: the key; namespaced:
        ``<system><sep><key>``), in any status never again; Proposed, or Active at once
        with auto-approve (`key.proposed`, `key.approved`).

        Accepted difference 3: a mirror entry's source_system (first system by name) and
        source_key, and its last_seen_at, come from the peers read in this run; its seen_in
        also counts the systems not read, with what they held last.
        """
        a_keys = self.known[self.authority]
        peers = sorted(s for s in read if s != self.authority)
        new: dict[str, Entry] = {}
        taken: dict[tuple[str, str], str] = {}
        for s in peers:
            for k in read[s].keys() - a_keys.keys():
                mk = k if self.strategy == "mirror" else f"{s}{self.separator}{k}"
                if mk in self.registry or mk in new:
                    holder = self.registry.get(mk)
                    if holder is not None and not self._stands_for(holder, s, k):
                        taken[(s, k)] = mk  # docs/state.md: that key gets no master key
                    continue
                if self.strategy == "mirror":
                    read_holders = [p for p in peers if k in read[p]]
                    holders = [
                        p for p in sorted(self.known) if p in self.configured and k in self.known[p]
                    ]
                    src = read_holders[0]
                    stamp = newest_stamp([self.known[p][k] for p in read_holders])
                else:
                    holders, src, stamp = [s], s, self.known[s][k]
                new[mk] = Entry(
                    key=k,
                    system=src,
                    strategy=self.strategy,
                    status="Active" if auto_approve else "Proposed",
                    source_system=src,
                    source_key=self.raw[src][k],
                    seen_in=";".join(holders),
                    last_seen_at=stamp,
                    created=seq,
                    updated=seq,
                )
        # docs/state.md "Audit trail": key.name_taken once, when it begins
        events: list[Event] = [
            ("key.name_taken", s, k)
            for (s, k), mk in sorted(taken.items())
            if self.name_conflicts.get((s, k)) != mk
        ]
        self.name_conflicts = {
            sk: mk for sk, mk in self.name_conflicts.items() if sk[0] not in peers
        } | taken
        for mk in sorted(new):
            e = self.registry[mk] = new[mk]
            events.append(("key.proposed", e.source_system, e.key))
            if auto_approve:
                events.append(("key.approved", e.source_system, e.key))
        return events

    def _stands_for(self, entry: Entry, system: str, key: str) -> bool:
        """Whether ``entry`` is the master key of ``system``'s ``key`` (not another key's
        entry that has the name, after a strategy switch with a separator keys hold)."""
        if self.strategy == "mirror":
            return entry.strategy == "mirror" and entry.key == key
        return entry.strategy == "namespaced" and entry.system == system and entry.key == key

    # -------------------------------------------------------------- history

    def timeline(self, key: str) -> dict[str, tuple[bool, int | None, int | None, int | None]]:
        """docs/state.md "Key history": per system keysync has read, (present, first seen,
        last seen, missing since) of a key, as `keysync history KEY` shows them."""
        a_keys = self.known.get(self.authority, {})
        out = {}
        for s in self.baseline:
            present = key in self.known[s]
            missing = self.gaps.get((s, key))
            if not present and missing is None and key not in a_keys:
                missing = self.gone.get((s, key))
            out[s] = (present, self.first.get((s, key)), self.last.get((s, key)), missing)
        return out
