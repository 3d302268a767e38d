"""The provisioner: master keys for out-of-authority keys, and their lifecycle.

API::

    plan = plan_provisioning(store, config, comparison, run_id=..., now=...,
                             auto_approve=options.auto_approve, dry_run=options.dry_run)
    plan.master_key_for(system, key) -> str   # diff_missing_in_A.csv proposed_master_key
    plan.status_for(system, key) -> str       # diff_missing_in_A.csv registry_status
    plan.statuses() -> {master_key: status}    # the same for every master key at once
    plan.registry_columns() -> list[str]      # SPEC columns (+ "dry_run_change" in a dry run)
    plan.registry_rows() -> iterator of rows  # master_key_registry.csv, by master_key
    plan.events                               # audit events this run would record
    plan.counts() -> {"proposed": ..., "approved": ..., "deprecated": ..., ...}
    store.commit_run(..., plan=plan)          # writes it (nothing with dry_run=True)
    log_committed(plan)                       # then logs what changed (the runner does both)

``auto_approve`` is the ``--auto-approve`` flag only; ``provisioning.auto_approve``
is read from the config here, so the audit trail can say which one approved.

Planning is pure: it reads the registry once and decides; ``commit_run``
writes the decisions in the run's transaction. A dry run therefore goes
through exactly the same code and shows, in the registry report, what a real
run would have changed.

Lifecycle (SPEC.md "Registry and state"):

- A key held by a peer but not by the authority gets a master key, once:
  ``mirror`` one per key (master key = the normalized key), ``namespaced``
  one per (system, key) (``<system><sep><key>``). A master key that exists in
  any status is never proposed again.
- ``Proposed -> Active`` by ``keysync registry approve``, or at once for keys
  proposed in a run with ``--auto-approve``/``provisioning.auto_approve``
  (keys proposed earlier, under review, are left for a person to approve).
- ``Active -> Deprecated`` after ``deprecate_after_runs`` successful runs in
  which no system holds the key (counted from when it became Active), or by
  ``keysync registry deprecate``.
- A key that appears in the authority keeps its entry and gets a
  ``key.resolved`` audit event (``key.unresolved`` if it leaves A again).
- "Seen": a mirror entry is seen in every system holding its key (A
  included); a namespaced entry only in its own system and in A. A system
  not read in this run (unavailable, or left out by ``--systems``) keeps
  what it was last seen holding, so an outage never counts as "unseen".
- ``updated_at``/``updated_run`` change with ``status`` or ``seen_in``.
  ``last_seen_at`` is the newest input ``last_seen_at`` among the systems
  holding the key, by the instant (``newest_stamp``; as in the diff reports,
  empty when the inputs carry none),
  kept when no system holds it; refreshing it does not bump ``updated_*``.
  It is deliberately not "the time of this run": that would rewrite every
  registry row on every run.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from itertools import repeat
from operator import add, itemgetter
from typing import Any

from keysync import logs
from keysync.actor import os_user
from keysync.comparison import Comparison
from keysync.config import Config
from keysync.history import last_known_holders
from keysync.stages.merger import SystemKeys
from keysync.state import (
    MK_IN_AUTHORITY,
    MK_KEY,
    MK_LAST_SEEN_AT,
    MK_SEEN_IN,
    MK_STATUS,
    MK_STATUS_SEQ,
    MK_STRATEGY,
    MK_SYSTEM,
    MK_UNSEEN_SINCE,
    REGISTRY_COLUMNS,
    STATUSES,
    HistoryState,
    RegistryRow,
    StateStore,
    as_iso,
    paused_gc,
)
from keysync.testhooks import pause_for_tests

DRY_RUN_COLUMN = "dry_run_change"
# (timestamp, run_id, event, system, key, detail) — audit_events without its seq.
AuditEvent = tuple[str, str, str, str, str, str]


QUOTE, QUOTES = "'", "''"


# A new master key, compactly: (master_key, source_system, source_key, seen_in,
# last_seen_at, key). Status, strategy, times and run ids are the same for every new
# entry of a run, so the store binds only these six values per row (and builds the
# key.proposed detail from them in SQL): at 500k proposals that halves the commit.
NewEntry = tuple[str, str, str, str, str, str]


# The usual form, with fields in range (a day 31 in a 30-day month still passes).
_IN_UTC_SECONDS = re.compile(
    r"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\dZ"
).fullmatch


def newest_stamp(stamps: list[str]) -> str:
    """The newest of some rows' ``last_seen_at`` values, by the instant, not the text.

    Values all written the usual way (``2026-11-27T02:00:00Z``) sort as text: the
    fast path, and the only one mock data takes. Otherwise ISO 8601 values are
    compared as instants (``Z`` or an offset, with or without its colon or minutes;
    fractions; a space for the ``T``; no seconds; no time; the basic form
    ``20261001T060000Z``; no offset at all is taken as UTC),
    a value that is no timestamp never beats one that is, and an instant written
    two ways keeps the first system's. "" when none is given.
    """
    written = [stamp for stamp in stamps if stamp]
    if len(written) < 2:
        return written[0] if written else ""
    if all(map(_IN_UTC_SECONDS, written)):
        latest = max(written)
        if latest[8:10] <= "28" or _instant(latest)[0]:  # else a 02-30: not a date at all
            return latest
    return max(written, key=_instant)


# ISO 8601 as exports write it: a date, then optionally a time (T or space), fractions,
# and Z or an offset (``+05:00``, ``+0500``, ``+05``, hours up to 23); the extended form
# (``2026-10-01T06:00``) or the basic one (``20261001T0600``), not a mix; an offset only
# after a time (``2026-10-01-05`` is no instant). Parsed here, not by
# datetime.fromisoformat, which accepts less on Python 3.10 than on 3.11: the newest
# value must not depend on that.
_OFFSET = r"(?:\s*(?:([Zz])|([+-])([01]\d|2[0-3])(?::?([0-5]\d))?))?"
_ISO_8601_FORMS = (
    re.compile(
        r"\s*(\d{4})-(\d\d)-(\d\d)(?:[T ](\d\d):(\d\d)(?::(\d\d)(?:[.,](\d{1,9}))?)?"
        + _OFFSET
        + r")?\s*"
    ),
    re.compile(
        r"\s*(\d{4})(\d\d)(\d\d)(?:T(\d\d)(\d\d)(?:(\d\d)(?:[.,](\d{1,9}))?)?" + _OFFSET + r")?\s*"
    ),
)


def _instant(stamp: str) -> tuple[int, datetime | str]:
    """A sort key: (1, the instant) for a timestamp, (0, the text) for anything else."""
    extended, basic = _ISO_8601_FORMS
    match = extended.fullmatch(stamp) or basic.fullmatch(stamp)
    if match is None:
        return 0, stamp
    year, month, day, hour, minute, second, fraction, _, sign, off_h, off_m = match.groups()
    try:
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((fraction or "0").ljust(6, "0")[:6]),
            tzinfo=timezone.utc,
        )
        if sign:
            offset = timedelta(hours=int(off_h), minutes=int(off_m or 0))
            moment -= offset if sign == "+" else -offset
    except (ValueError, OverflowError):  # 2026-02-30, hour 25, an offset past year 1
        return 0, stamp
    return 1, moment


@dataclass
class ProvisioningPlan:
    """The registry as it will be after this run, and the decisions that lead there."""

    run_id: str
    seq: int
    now: str
    strategy: str
    separator: str
    dry_run: bool
    existing: dict[str, RegistryRow]
    new_status: str = "Proposed"
    approver: str = ""  # "--auto-approve", "provisioning.auto_approve" or ""
    approved_by: str = ""  # the approver and the user who ran it, as the audit trail says
    new: dict[str, NewEntry] = field(default_factory=dict)  # in master_key order
    changed: dict[str, RegistryRow] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    change_events: list[AuditEvent] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    notable: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # Namespaced entries named under another namespace_separator: (system, key) -> their
    # name. They still stand for that system's key (none is proposed again), so the
    # reports must show them, not a name of the new separator that has no entry.
    named_before: dict[tuple[str, str], str] = field(default_factory=dict)
    # Out-of-authority keys that get no master key because another key's entry has the
    # name theirs would take (a separator keys can hold, and a strategy switch):
    # (system, key) -> that name. Every such run warns (registry.name_taken); the audit
    # trail records each once, when it begins (key.name_taken), from the store's
    # name_conflicts, which the commit replaces for the peers this run read.
    name_taken: dict[tuple[str, str], str] = field(default_factory=dict)
    peers_read: tuple[str, ...] = ()

    # ---------------------------------------------------------- for the reporter

    def master_key_for(self, system: str, key: str) -> str:
        if self.name_taken and (system, key) in self.name_taken:
            return ""  # no entry stands for it: showing the other key's would mislead
        if self.strategy == "namespaced":
            name = f"{system}{self.separator}{key}"
            return self.named_before.get((system, key), name) if self.named_before else name
        return key

    def status_for(self, system: str, key: str) -> str:
        """The status the master key of this (system, key) has after this run."""
        master_key = self.master_key_for(system, key)
        row = self.changed.get(master_key)
        if row is not None:
            return str(row[MK_STATUS])
        if master_key in self.new:
            return self.new_status
        row = self.existing.get(master_key)
        return str(row[MK_STATUS]) if row is not None else ""

    def statuses(self) -> dict[str, str]:
        """Every master key's status after this run, as one table (built in C).

        The reporter looks up hundreds of thousands of keys: a dict lookup each
        instead of a ``status_for`` call each.
        """
        table = dict(zip(self.existing, map(itemgetter(MK_STATUS), self.existing.values())))
        table.update(dict.fromkeys(self.new, self.new_status))
        table.update(zip(self.changed, map(itemgetter(MK_STATUS), self.changed.values())))
        return table

    def status_counts(self) -> dict[str, int]:
        """How many master keys have each status after this run (Proposed: the backlog
        waiting for a decision), from whole columns: ~0.07 s for a million entries."""
        totals = Counter(map(itemgetter(MK_STATUS), self.existing.values()))
        totals.subtract(self.existing[key][MK_STATUS] for key in self.changed)
        totals.update(map(itemgetter(MK_STATUS), self.changed.values()))
        totals[self.new_status] += len(self.new)
        return {status: totals[status] for status in STATUSES}

    def registry_columns(self) -> list[str]:
        columns = list(REGISTRY_COLUMNS)
        if self.dry_run:
            columns.append(DRY_RUN_COLUMN)
        return columns

    def registry_rows(self) -> Iterator[tuple[str, ...]]:
        """Rows of master_key_registry.csv after this run, by master_key.

        In a dry run each row ends with ``dry_run_change``: ``would add (<status>)``,
        ``would change status <old> -> <new>; seen_in <old> -> <new>``, or empty
        (``last_seen_at`` refreshes are not marked: they follow the inputs).

        Built at once, column-wise with ``zip``/``map`` (no Python step per row),
        and without cyclic garbage collection (a row is a tuple, and at 400k rows
        next to the index each automatic full collection walks the whole heap).
        The first 11 columns are TEXT NOT NULL in
        the store and ``str`` in every planned row, so the cells are used as they
        are. Existing and new master keys are two runs sorted by master key (SQLite
        orders TEXT by UTF-8 bytes, which is code point order, as Python does), and
        no key is in both (a known master key is never proposed again), so one
        sort merges them in C.
        """
        with paused_gc():
            return iter(self._registry_rows())

    def _registry_rows(self) -> list[tuple[str, ...]]:
        existing, new = self.existing, self.new.values()
        first_eleven = itemgetter(slice(0, 11))
        # changed.get(master_key, existing row): the row after this run.
        rows: list[tuple[str, ...]] = list(
            map(first_eleven, map(self.changed.get, existing, existing.values()))
        )
        now, run_id = self.now, self.run_id
        added: Iterator[tuple[str, ...]] = zip(
            map(itemgetter(0), new),  # master_key
            repeat(self.new_status),
            repeat(self.strategy),
            map(itemgetter(1), new),  # source_system
            map(itemgetter(2), new),  # source_key
            map(itemgetter(3), new),  # seen_in
            repeat(now),  # created_at
            repeat(now),  # updated_at
            map(itemgetter(4), new),  # last_seen_at
            repeat(run_id),  # created_run
            repeat(run_id),  # updated_run
        )
        if self.dry_run:
            notes = zip(map(self.notes.get, existing, repeat("")))
            rows = list(map(add, rows, notes))
            added = map(add, added, repeat((f"would add ({self.new_status})",)))
        if not rows:
            return list(added)
        rows.extend(added)
        rows.sort(key=itemgetter(0))
        return rows

    @property
    def events(self) -> list[AuditEvent]:
        """Every audit event of this run, in the order the store records them."""
        now, run_id, strategy = self.now, self.run_id, self.strategy
        events = list(self.change_events)
        events.extend(
            (
                now,
                run_id,
                "key.proposed",
                source,
                key,
                f"master key {master_key} ({strategy}) proposed for {source} key "
                f"'{source_key.replace(QUOTE, QUOTES)}'; seen in {seen_in}",
            )
            for master_key, source, source_key, seen_in, _, key in self.new.values()
        )
        if self.approver:
            tail = f": Proposed -> Active by {self.approved_by}"
            events.extend(
                (now, run_id, "key.approved", source, key, f"master key {master_key}{tail}")
                for master_key, source, _, _, _, key in self.new.values()
            )
        return events

    # ------------------------------------------------------------- for the store

    def new_row(self, entry: NewEntry) -> RegistryRow:
        master_key, source, source_key, seen_in, last_seen, key = entry
        now, run_id = self.now, self.run_id
        system = "" if self.strategy == "mirror" else source
        return (
            master_key,
            self.new_status,
            self.strategy,
            source,
            source_key,
            seen_in,
            now,
            now,
            last_seen,
            run_id,
            run_id,
            system,
            key,
            self.seq,
            None,
            0,
        )

    def new_entries(self) -> list[NewEntry]:
        """New entries in primary-key order: a B-tree fills ~2.5x faster that way."""
        return list(self.new.values())

    def changed_rows(self) -> list[RegistryRow]:
        return list(self.changed.values())

    def counts(self) -> dict[str, int]:
        return dict(self.stats)


# What a run counts of its registry changes (``ProvisioningPlan.counts``), in this order.
CHANGES = (
    "proposed",
    "approved",
    "deprecated",
    "resolved",
    "unresolved",
    "reappeared",
    "seen_in_changed",
)


def unchanged_counts(registry_total: int) -> dict[str, int]:
    """``ProvisioningPlan.counts`` of a run that changed no master key (keysync/replay.py)."""
    return {**dict.fromkeys(CHANGES, 0), "registry_total": registry_total}


def plan_provisioning(
    store: StateStore,
    config: Config,
    comparison: Comparison,
    *,
    run_id: str,
    now: object,
    auto_approve: bool = False,
    dry_run: bool = False,
) -> ProvisioningPlan:
    """Decide this run's registry changes (pure: the store is only read)."""
    pause_for_tests("planning")
    with paused_gc():
        return _plan(store, config, comparison, run_id, now, auto_approve, dry_run)


def _plan(
    store: StateStore,
    config: Config,
    comparison: Comparison,
    run_id: str,
    now: object,
    auto_approve: bool,
    dry_run: bool,
) -> ProvisioningPlan:
    provisioning = config.provisioning
    existing = {row[0]: row for row in store.load_registry()}
    plan = ProvisioningPlan(
        run_id=run_id,
        seq=store.run_seq(run_id),
        now=as_iso(now),  # type: ignore[arg-type]
        strategy=provisioning.strategy,
        separator=provisioning.namespace_separator,
        dry_run=dry_run,
        existing=existing,
    )
    if auto_approve:
        approver = "--auto-approve"
    elif provisioning.auto_approve:
        approver = "provisioning.auto_approve"
    else:
        approver = ""
    plan.approver = approver
    plan.approved_by = f"{approver} (user {os_user()})" if approver else ""
    plan.new_status = "Active" if approver else "Proposed"
    planner = _Planner(plan, comparison, approver, provisioning.deprecate_after_runs)
    planner.configured = set(config.sources)
    planner.successful = store.successful_seqs()
    planner.update_existing()
    planner.propose()
    planner.record_taken_names(store.name_conflicts())
    unread = [system for system in config.sources if system not in planner.read_set]
    if plan.strategy == "mirror" and plan.new and unread:
        planner.add_unread_holders(store.load_history_state(), unread)
    plan.stats = planner.stats
    plan.stats["registry_total"] = len(existing) + len(plan.new)
    return plan


class _Planner:
    def __init__(
        self, plan: ProvisioningPlan, comparison: Comparison, approver: str, deprecate_after: int
    ) -> None:
        self.plan = plan
        self.comparison = comparison
        self.approver = approver
        self.deprecate_after = deprecate_after
        self.successful: list[int] = []
        self.authority = comparison.authority
        self.index = comparison.index
        self.read = sorted(s for s, row in comparison.summaries.items() if row.available)
        self.read_set = set(self.read)
        # A system not read keeps what it held last in seen_in only while it is configured
        # (down, or left out with --systems): one taken out of the config holds nothing.
        self.configured: set[str] = set(self.read)
        self.peers = [s for s in self.read if s != self.authority]
        self.keys = {s: self.index[s].first_row for s in self.read}
        self.shared: set[str] = set()  # out-of-authority keys held by several peers
        # Mirror entries need it whatever the strategy now: switching to namespaced keeps
        # them, and without it every one would look seen in no system (then deprecated).
        mirror_rows = plan.strategy == "mirror" or any(
            row[MK_STRATEGY] == "mirror" for row in plan.existing.values()
        )
        self.seen_of = self._seen_in_by_key() if mirror_rows else {}
        self.namespaced_keys: dict[str, set[str]] = {}
        self.namespaced_names: set[str] = set()  # a mirror key named like one is taken
        self.stats = dict.fromkeys(CHANGES, 0)

    def event(self, event: str, system: str, key: str, detail: str) -> None:
        self.plan.change_events.append(
            (self.plan.now, self.plan.run_id, event, system, key, detail)
        )

    def _seen_in_by_key(self) -> dict[str, str]:
        """Every out-of-authority key with the peers holding it, ";"-joined by name.

        Built with dict and set operations in C; only keys held by several
        peers cost a Python step (one string concatenation per extra peer).
        """
        seen: dict[str, str] = {}
        shared = self.shared
        for system in self.peers:  # sorted by name, so the joined names are too
            held = self.comparison.missing_in_a.get(system)
            if not held:
                continue
            if not seen:
                seen = dict.fromkeys(held, system)
                continue
            both = seen.keys() & held
            shared.update(both)
            suffix = ";" + system
            for key in both:
                seen[key] += suffix
            seen.update(dict.fromkeys(held.difference(both), system))
        return seen

    # -------------------------------------------------------------- proposals

    def propose(self) -> None:
        """New master keys for out-of-authority keys that have none yet, in key order.

        Entries of keys held by one peer are built per peer with ``zip``/``map``
        (in C); only keys several peers hold take a Python step each.
        """
        plan = self.plan
        known = plan.existing.keys()
        fresh: list[NewEntry] = []
        if plan.strategy == "mirror":
            for system in self.peers:
                held = self.comparison.missing_in_a.get(system)
                if not held:
                    continue
                for key in held.intersection(self.namespaced_names):  # none, but after a switch
                    plan.name_taken[(system, key)] = key
                sole = list(held.difference(self.shared).difference(known))
                fresh.extend(self._entries(sole, sole, self.index[system]))
            for key in self.shared.difference(known):
                seen_in = self.seen_of[key]
                holders = seen_in.split(";")
                source = holders[0]
                last_seen = newest_stamp([self.index[h].timestamp(key) for h in holders])
                fresh.append(
                    (key, source, self.index[source].raw_form(key), seen_in, last_seen, key)
                )
        else:
            sep = plan.separator
            for system in self.peers:
                held = self.comparison.missing_in_a.get(system, set())
                keys = list(held.difference(self.namespaced_keys.get(system, set())))
                master_keys = [f"{system}{sep}{key}" for key in keys]
                for entry in self._entries(master_keys, keys, self.index[system]):
                    if entry[0] not in known:
                        fresh.append(entry)
                    else:  # a mirror entry of another key has this name (after a switch)
                        plan.name_taken[(system, entry[5])] = entry[0]
        fresh.sort(key=itemgetter(0))
        plan.new = dict(zip(map(itemgetter(0), fresh), fresh))
        self.stats["proposed"] += len(fresh)
        if self.approver:
            self.stats["approved"] += len(fresh)

    def record_taken_names(self, before: dict[tuple[str, str], str]) -> None:
        """A ``key.name_taken`` event for each key newly left without a master key.

        A key stays in that state as long as it is out of authority (the entry that has
        its name is never removed), so an event every run would bury the trail; one
        when it begins, again if it ends and begins anew, is the decision itself.
        """
        plan = self.plan
        plan.peers_read = tuple(self.peers)
        for (system, key), name in sorted(plan.name_taken.items()):
            if before.get((system, key)) == name:
                continue
            holder = plan.existing[name]
            whose = (
                f"the mirror entry of the key {holder[MK_KEY]}"
                if holder[MK_STRATEGY] == "mirror"
                else f"{holder[MK_SYSTEM]}'s namespaced entry for its key {holder[MK_KEY]}"
            )
            self.event(
                "key.name_taken",
                system,
                key,
                f"no master key for {system} key {key}: the name {name} is {whose} "
                f"({holder[MK_STATUS]}); see `keysync config check` on namespace_separator",
            )

    def add_unread_holders(self, state: HistoryState, unread: list[str]) -> None:
        """Put the peers not read this run that held a new entry's key into its ``seen_in``.

        Without them a key first out of authority during an outage was seen in fewer
        systems than its history says, changed ``seen_in`` when the peer came back, and,
        Active, could be deprecated while the peer holding it was down. ``source_system``
        stays a system read now: only its row gives ``source_key`` and ``last_seen_at``.
        """
        plan = self.plan
        holders = last_known_holders(state, self.authority, unread, set(plan.new))
        for master_key, down in holders.items():
            entry = plan.new[master_key]
            seen_in = ";".join(sorted({*entry[3].split(";"), *down}))
            plan.new[master_key] = (*entry[:3], seen_in, *entry[4:])

    @staticmethod
    def _entries(master_keys: list[str], keys: list[str], held: SystemKeys) -> Iterator[NewEntry]:
        """Entries of keys only ``held`` has: (master_key, system, raw, system, stamp, key)."""
        at = held.rows_of(keys)
        return zip(
            master_keys,
            repeat(held.name),
            held.raws_at(at, keys),
            repeat(held.name),
            held.stamps_at(at),
            keys,
        )

    # ------------------------------------------------------- existing entries

    def update_existing(self) -> None:
        """Refresh seen_in/last_seen_at of every entry; hand real changes to ``_change``.

        This loop runs once per registry row every run, so it is written for
        speed: locals only, no call unless something changed.
        """
        plan = self.plan
        seq = plan.seq
        authority = self.authority
        a_keys = self.keys[authority]
        seen_get = self.seen_of.get
        keys, read, read_set = self.keys, self.read, self.read_set
        stamps = {s: self.index[s].timestamp for s in read}
        namespaced_keys = self.namespaced_keys
        configured = self.configured
        carried_for: dict[str, list[str]] = {}
        change = self._change
        for row in plan.existing.values():
            key = row[MK_KEY]
            old_seen = row[MK_SEEN_IN]
            seen = seen_get(key)
            if seen is not None and seen == old_seen and row[MK_STRATEGY] == "mirror":
                # Fast path, most rows: held by the same peers as before; only the stamp
                # may move.
                if ";" in seen:
                    stamp = newest_stamp([stamps[s](key) for s in seen.split(";")])
                else:
                    stamp = stamps[seen](key)
                if (
                    (stamp or row[MK_LAST_SEEN_AT]) == row[MK_LAST_SEEN_AT]
                    and row[MK_UNSEEN_SINCE] is None
                    and not row[MK_IN_AUTHORITY]
                ):
                    continue
            carried = carried_for.get(old_seen)
            if carried is None:
                carried = [
                    s for s in old_seen.split(";") if s and s not in read_set and s in configured
                ]
                carried_for[old_seen] = carried
            if row[MK_STRATEGY] == "mirror":
                in_authority = seen is None and key in a_keys
                if seen is not None:
                    holders = seen.split(";")
                elif in_authority:
                    holders = [s for s in read if key in keys[s]]
                else:
                    holders = []
            else:
                in_authority = key in a_keys
                system = row[MK_SYSTEM]
                namespaced_keys.setdefault(system, set()).add(key)
                self.namespaced_names.add(row[0])
                if row[0] != f"{system}{plan.separator}{key}":
                    plan.named_before[(system, key)] = row[0]
                scope = (authority,) if system == authority else sorted((authority, system))
                holders = [s for s in scope if s in read_set and key in keys[s]]
            if carried:
                holders = sorted(set(holders).union(carried))
            if holders:
                held = [stamps[s](key) for s in holders if s in stamps]
                if carried:  # a holder not read this run: what it showed last still counts
                    held.append(row[MK_LAST_SEEN_AT])
                last_seen = newest_stamp(held) or row[MK_LAST_SEEN_AT]
                seen_in = ";".join(holders)
                if (
                    seen_in == old_seen
                    and last_seen == row[MK_LAST_SEEN_AT]
                    and row[MK_UNSEEN_SINCE] is None
                    and row[MK_IN_AUTHORITY] == in_authority
                ):
                    continue  # nothing to write
                change(row, seen_in, last_seen, None, int(in_authority))
            else:
                unseen_since = row[MK_UNSEEN_SINCE]
                if unseen_since is None:
                    unseen_since = seq
                elif row[MK_STATUS] != "Active" and row[MK_IN_AUTHORITY] == in_authority:
                    continue  # still unseen, nothing to count for it
                change(row, "", row[MK_LAST_SEEN_AT], unseen_since, int(in_authority))

    def _change(
        self,
        row: RegistryRow,
        seen_in: str,
        last_seen: str,
        unseen_since: int | None,
        in_authority: int,
    ) -> None:
        plan = self.plan
        master_key, key, source = row[0], row[MK_KEY], row[3]
        old_status = status = row[MK_STATUS]
        status_seq = row[MK_STATUS_SEQ]
        old_seen = row[MK_SEEN_IN]
        if status == "Active" and unseen_since is not None:
            unseen_runs = self._unseen_runs(unseen_since, status_seq)
            if unseen_runs >= self.deprecate_after:
                status, status_seq = "Deprecated", plan.seq
                self.stats["deprecated"] += 1
                reason = f"seen in no system for {unseen_runs} successful runs"
                plan.notable.append(
                    ("key.deprecated", {"master_key": master_key, "reason": reason})
                )
                self.event(
                    "key.deprecated",
                    source,
                    key,
                    f"master key {master_key}: Active -> Deprecated: seen in no system for "
                    f"{unseen_runs} successful runs (provisioning.deprecate_after_runs = "
                    f"{self.deprecate_after})",
                )
        if in_authority and not row[MK_IN_AUTHORITY]:
            self.stats["resolved"] += 1
            plan.notable.append(("key.resolved", {"master_key": master_key}))
            self.event(
                "key.resolved",
                source,
                key,
                f"master key {master_key}: {key} now appears in {self.authority}; "
                f"entry kept ({status})",
            )
        elif row[MK_IN_AUTHORITY] and not in_authority:
            self.stats["unresolved"] += 1
            self.event(
                "key.unresolved",
                source,
                key,
                f"master key {master_key}: {key} no longer appears in {self.authority}",
            )
        if seen_in != old_seen:
            if status == "Deprecated" and not old_seen:
                self.stats["reappeared"] += 1
                self.event(
                    "key.reappeared",
                    source,
                    key,
                    f"master key {master_key}: seen again in {seen_in}; stays Deprecated "
                    "(`keysync registry approve` reinstates it)",
                )
            else:
                self.stats["seen_in_changed"] += 1
                self.event(
                    "key.seen_in_changed",
                    source,
                    key,
                    f"master key {master_key}: seen_in {old_seen or '(none)'} -> "
                    f"{seen_in or '(none)'}",
                )
        bump = status != old_status or seen_in != old_seen
        new_row: RegistryRow = (
            master_key,
            status,
            row[2],
            row[3],
            row[4],
            seen_in,
            row[6],
            plan.now if bump else row[7],
            last_seen,
            row[9],
            plan.run_id if bump else row[10],
            row[MK_SYSTEM],
            key,
            status_seq,
            unseen_since,
            in_authority,
        )
        if new_row == row:
            return
        plan.changed[master_key] = new_row
        if not plan.dry_run:
            return
        notes = [
            f"{column} {old or '(none)'} -> {new or '(none)'}"
            for column, old, new in (("status", old_status, status), ("seen_in", old_seen, seen_in))
            if old != new
        ]
        if notes:
            plan.notes[master_key] = "would change " + "; ".join(notes)

    def _unseen_runs(self, unseen_since: int, status_seq: int) -> int:
        """Successful runs since the key was last seen and became Active, this one included."""
        start = max(unseen_since, status_seq + 1)
        earlier = len(self.successful) - bisect_left(self.successful, start)
        return earlier + 1


def warn_of_taken_names(plan: ProvisioningPlan) -> None:
    """One warning for the keys ``plan.name_taken`` left without a master key, naming a few."""
    if not plan.name_taken:
        return
    shown = ", ".join(
        f"{system}'s {key} ({name})" for (system, key), name in sorted(plan.name_taken.items())[:5]
    )
    more = len(plan.name_taken) - 5
    logs.get_logger(stage="provisioner").warning(
        "registry.name_taken",
        count=len(plan.name_taken),
        detail=f"{len(plan.name_taken)} out-of-authority keys get no master key: another key's "
        f"entry has the name theirs would take: {shown}{f' and {more} more' if more > 0 else ''}; "
        "the namespace_separator can be part of a key (see `keysync config check`)",
    )


def log_committed(plan: ProvisioningPlan) -> None:
    """Log what a committed (or, with --dry-run, planned) run changed in the registry."""
    log = logs.get_logger(stage="provisioner")
    if not plan.dry_run:
        for event, fields in plan.notable:
            log.info(event, **fields)
    log.info("registry.changed", dry_run=plan.dry_run, **plan.counts())
