"""The state store: one SQLite file, ``<paths.data>/keysync.db``, one writer at a time.

API (the runner and the CLI call these; everything else is internal)::

    store = StateStore.open(path, create=True)        # NoStateError if missing and not create
    seq = store.begin_run(run_id, started_at, mode, flags)   # commits a `running` row now
    store.commit_run(run_id, ended_at=..., outcome="completed"|"degraded", exit_code=0,
                     counts={...}, plan=ProvisioningPlan, history=HistoryPlan, dry_run=False)
    store.end_run(run_id, outcome="failed"|"interrupted", message="...", exit_code=3)
    store.resume_run(run_id)                  # `--resume`: an interrupted run runs again
    store.runs() / store.run(run_id) -> RunRecord
    store.registry_entries(status=None) / store.registry_entry(master_key) -> RegistryEntry
    store.change_status(master_keys, "Active"|"Deprecated", actor=..., now=...) -> [StatusChange]
    store.audit_rows(run_id=None) -> iterator of audit_log.csv rows (timestamp order)
    store.audit_rows(after_seq=S) / audit_count(after_seq=S) / audit_tail() / audit_event(seq)
    store.key_events(key) -> [KeyEvent]       # keysync.history.key_timeline builds on it
    store.close()

Planning lives elsewhere and only reads the store: ``keysync.stages.provisioner.
plan_provisioning`` and ``keysync.history.plan_history``; ``commit_run`` writes
what they planned.

Why it is built this way:

- **One transaction per run.** ``begin_run`` commits a ``running`` row at once
  (so ``keysync runs`` shows a run in progress, and one killed shows up as
  ``interrupted``); everything else the run changes (registry rows, history,
  audit events) is written by ``commit_run`` in one ``BEGIN IMMEDIATE ...
  COMMIT`` together with the run's final outcome. A process killed at any
  point before ``COMMIT`` leaves the registry as it was: SQLite discards the
  uncommitted WAL frames on the next open.
- **WAL, ``synchronous=FULL``.** WAL lets ``keysync runs``/``registry list``
  read while a run writes. FULL fsyncs the WAL at each commit; a run commits
  once, so durability against power loss costs one fsync per run (measured on a
  5M-row commit: 19.41 s FULL, 19.39 s NORMAL), and a report published
  after the commit never describes state that a power cut could take back.
- **History as transitions and small snapshots, never one row per key per
  run.** A system's key set is described as its difference from the
  authority: ``keys(X) = (keys(A) - gaps(X)) | extra(X)``. The authority's
  keys are one msgpack blob; each peer keeps only its gaps (with the run in
  which each gap began) and its out-of-authority keys, which are small. A run
  writes a ``key_history`` row only when a key appears in or disappears from
  a system, so an unchanged 1M-key source costs one blob comparison. See
  ``keysync/history.py``.
- **Schema versioned with ``PRAGMA user_version``**: migrations are applied in
  order, each in its own transaction; a database written by a newer keysync
  is refused rather than misread.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from keysync.errors import KeysyncError, RunError
from keysync.testhooks import pause_for_tests

if TYPE_CHECKING:
    from keysync.history import HistoryPlan
    from keysync.rekey import Rekey
    from keysync.stages.provisioner import ProvisioningPlan

DB_NAME = "keysync.db"

REGISTRY_COLUMNS = (
    "master_key",
    "status",
    "strategy",
    "source_system",
    "source_key",
    "seen_in",
    "created_at",
    "updated_at",
    "last_seen_at",
    "created_run",
    "updated_run",
)
"""The columns of ``master_key_registry.csv`` and of ``registry export``, in SPEC order."""

AUDIT_COLUMNS = ("timestamp", "run_id", "seq", "event", "system", "key", "detail")

AUDIT_EVENTS = frozenset(
    {
        "rules.changed",
        "settings.changed",
        "key.proposed",
        "key.approved",
        "key.deprecated",
        "key.rekeyed",
        "key.resolved",
        "key.unresolved",
        "key.seen_in_changed",
        "key.reappeared",
        "key.name_taken",
        "run.completed",
        "run.degraded",
        "run.failed",
        "run.interrupted",
    }
)
"""Every event name the audit trail can hold (docs/state.md lists them): ``keysync audit
--event`` refuses any other, so a typo is not taken for "no such events yet"."""

STATUSES = ("Proposed", "Active", "Deprecated")
SUCCESSFUL = ("completed", "degraded")
# How every key.approved / key.deprecated detail begins: its master key, its old status.
_STATUS_CHANGE = re.compile(r"master key (.+?): (?:Proposed|Active|Deprecated) -> ")
# A deprecation that was a decision: by `registry deprecate`, or carried by a rekey.
_DEPRECATED_BY_HAND = re.compile(
    r"master key (.+?): (?:Proposed|Active) -> Deprecated(?: by `keysync registry deprecate`"
    r"|, carried from )"
)
# A key.rekeyed event: the entry a rekey made (and, below, one it made Deprecated).
_MADE_FOR = re.compile(r"master key (.+?) \((?:mirror|namespaced)\) made for the key of ")
_MADE_DEPRECATED = re.compile(_MADE_FOR.pattern + r".*?, Deprecated as ")

# Positions in a master_keys row as stored (SPEC columns first, then bookkeeping).
MK_MASTER_KEY = 0
MK_STATUS = 1
MK_STRATEGY = 2
MK_SOURCE_SYSTEM = 3
MK_SOURCE_KEY = 4
MK_SEEN_IN = 5
MK_CREATED_AT = 6
MK_UPDATED_AT = 7
MK_LAST_SEEN_AT = 8
MK_CREATED_RUN = 9
MK_UPDATED_RUN = 10
MK_SYSTEM = 11  # namespaced: the system the entry belongs to; mirror: ""
MK_KEY = 12  # the normalized key
MK_STATUS_SEQ = 13  # run seq of the last status change (manual: the latest run seq then)
MK_UNSEEN_SINCE = 14  # first run seq of the current unseen stretch; NULL while seen
MK_IN_AUTHORITY = 15  # 1 while the authority holds the key (it was resolved)

RegistryRow = tuple[Any, ...]

_ENTRIES_PER_INSERT = 100
"""New registry entries per ``INSERT ... VALUES``: 600 parameters, within the 999
that SQLite builds before 3.32 allow."""

_MIGRATIONS: tuple[str, ...] = (
    # v1: runs, registry, audit, history. CHECKs are written with OR, not IN (...):
    # SQLite evaluates an IN list per row at twice the cost of the whole insert.
    """
    CREATE TABLE runs (
        run_id      TEXT PRIMARY KEY,
        seq         INTEGER NOT NULL UNIQUE,
        started_at  TEXT NOT NULL,
        ended_at    TEXT,
        mode        TEXT NOT NULL,
        flags       TEXT NOT NULL DEFAULT '{}',
        dry_run     INTEGER NOT NULL DEFAULT 0,
        outcome     TEXT NOT NULL,
        exit_code   INTEGER,
        counts      TEXT NOT NULL DEFAULT '{}',
        message     TEXT NOT NULL DEFAULT '',
        pid         INTEGER NOT NULL,
        observed_at TEXT
    );
    CREATE TABLE master_keys (
        master_key       TEXT PRIMARY KEY,
        status           TEXT NOT NULL
                         CHECK (status = 'Proposed' OR status = 'Active' OR status = 'Deprecated'),
        strategy         TEXT NOT NULL CHECK (strategy = 'mirror' OR strategy = 'namespaced'),
        source_system    TEXT NOT NULL,
        source_key       TEXT NOT NULL,
        seen_in          TEXT NOT NULL,
        created_at       TEXT NOT NULL,
        updated_at       TEXT NOT NULL,
        last_seen_at     TEXT NOT NULL,
        created_run      TEXT NOT NULL,
        updated_run      TEXT NOT NULL,
        system           TEXT NOT NULL,
        key              TEXT NOT NULL,
        status_seq       INTEGER NOT NULL,
        unseen_since_seq INTEGER,
        in_authority     INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE TABLE audit_events (
        seq       INTEGER PRIMARY KEY,
        timestamp TEXT NOT NULL,
        run_id    TEXT NOT NULL,
        event     TEXT NOT NULL,
        system    TEXT NOT NULL DEFAULT '',
        key       TEXT NOT NULL DEFAULT '',
        detail    TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE system_state (
        system        TEXT PRIMARY KEY,
        role          TEXT NOT NULL CHECK (role = 'authority' OR role = 'peer'),
        baseline_seq  INTEGER NOT NULL,
        last_read_seq INTEGER NOT NULL,
        key_count     INTEGER NOT NULL,
        keys          BLOB,
        gaps          BLOB,
        extra         BLOB
    );
    CREATE TABLE key_history (
        key           TEXT NOT NULL,
        system        TEXT NOT NULL,
        seq           INTEGER NOT NULL,
        event         TEXT NOT NULL CHECK (event = 'appeared' OR event = 'disappeared'),
        last_seen_seq INTEGER,
        PRIMARY KEY (key, system, seq)
    ) WITHOUT ROWID;
    """,
    # v2: out-of-authority keys left without a master key because another key's entry
    # has the name theirs would take, as the last run that read their system found them:
    # the audit trail records each one once, when it begins, not every run.
    """
    CREATE TABLE name_conflicts (
        system TEXT NOT NULL,
        key    TEXT NOT NULL,
        name   TEXT NOT NULL,
        PRIMARY KEY (system, key)
    ) WITHOUT ROWID;
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)


def lost_database_problem(path: Path, output_dir: Path | None = None) -> str | None:
    """A missing keysync.db beside the traces earlier runs leave is a lost state, not a
    first run: a new database would reset every decision and publish an audit_log.csv
    that forgot the old trail (a restore gone wrong, a wrong mount). The one line to
    say, or None when nothing shows that runs happened here.

    The published audit_log.csv in ``output_dir`` is a trace too: a ``paths.data``
    pointed at a new folder by mistake, or a volume that did not mount, leaves the
    data folder empty, but not the reports. Starting afresh on purpose means moving
    aside every folder that holds a trace, so the line names each.
    """
    from keysync.audit_report import LINK, NAME, RECORD, records_saved_events
    from keysync.incremental import FOLDER

    data_dir = path.parent
    traces = [data_dir / RECORD, data_dir / LINK]
    traces = [trace for trace in traces if trace.exists()]
    snapshots = data_dir / FOLDER
    if snapshots.is_dir() and any(snapshots.iterdir()):
        traces.append(snapshots)
    aside = [data_dir] if traces else []
    remedy = ""
    if output_dir is not None and records_saved_events(output_dir / NAME):
        if not traces:  # the data folder as new: perhaps not the one meant
            traces, remedy = [output_dir / NAME], "point paths.data at their state, or "
        aside.append(output_dir)
    if not traces:
        return None
    return (
        f"{path} is {'empty' if path.exists() else 'missing'}, but earlier runs left "
        f"{traces[0]}: {remedy}put {path.name} back from a "
        "backup (a new one would start the registry and the audit trail from nothing), or "
        f"move {' and '.join(map(str, aside))} aside to start afresh on purpose"
    )


class NoStateError(KeysyncError):
    """There is no database yet: nothing has run."""

    def __init__(self, path: Path) -> None:
        what = "is empty" if path.exists() else "does not exist"
        super().__init__(f"no runs yet ({path} {what}): run `keysync run` first")
        self.path = path


# SQLite's primary result codes for a database it cannot use, though it is not corrupt.
# PERM, READONLY, IOERR, FULL, CANTOPEN, PROTOCOL (WAL on a network file system), NOLFS
_ACCESS_CODES = {3, 8, 10, 13, 14, 15, 22}
_LOCKED_CODES = {5}  # BUSY: another connection held the database past the busy timeout
_DAMAGED_CODES = {11, 26}  # CORRUPT, NOTADB: pages overwritten, or not a database at all
_DAMAGED_WORDS = ("malformed", "not a database", "could not decode")  # keysync writes UTF-8 only
_ACCESS_WORDS = ("readonly", "disk", "unable to open", "permission", "locking protocol")


def state_problem(exc: sqlite3.DatabaseError, path: Path | None = None) -> str | None:
    """The one line for a state database SQLite cannot use (access, room, a lock, damage).

    None for any other error (an SQL mistake is a bug, not the user's to fix).
    The code is on the exception from Python 3.11 on; before, its text decides.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(exc).lower()
    where = f" {path}" if path is not None else ""
    if primary in _LOCKED_CODES or (primary is None and "locked" in text):
        return (
            f"the state database{where} is locked by another program ({exc}); close what "
            "holds it open (a sqlite3 shell, a backup tool) and run again"
        )
    if primary in _DAMAGED_CODES or (primary is None and any(w in text for w in _DAMAGED_WORDS)):
        return (
            f"the state database{where} is damaged ({exc}); put keysync.db back from a "
            "backup (the registry, the history and the audit trail are in it), or save what "
            "is left with `sqlite3 keysync.db .recover`, then run again"
        )
    if primary in _ACCESS_CODES or (primary is None and any(w in text for w in _ACCESS_WORDS)):
        return (
            f"cannot use the state database{where} ({exc}); make paths.data and keysync.db "
            "in it writable by this user (SQLite keeps keysync.db-wal and -shm files next "
            "to it, even to read) and make room on the disk, then run again"
        )
    return None


@contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection inside: planning allocates millions of tuples and
    creates no cycles, and with a multi-million-object heap each automatic full
    collection costs more than the work itself (measured: 2-3x slower planning)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def utc_now() -> str:
    """Now as ISO 8601 UTC with a ``Z``, to the second."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def as_iso(moment: datetime | str) -> str:
    """Accept a datetime or an already formatted ISO string."""
    if isinstance(moment, str):
        return moment
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class AuditFilter:
    """Which audit events ``keysync audit`` shows (each criterion narrows; none: all).

    ``keys``: the events about any of these keys (a raw key and its normalized form);
    ``namespaced``: also the events of these namespaced master keys, each given as
    (system, key, master key): about that system's key and naming that master key, since
    after a strategy switch a mirror entry's events are about the same system's key;
    ``since``: at or after that time, ``until``: before it (``2026-11-27T02:00:00Z``,
    compared as the text the trail stores); ``limit``: only the latest N of the rest.
    """

    run_id: str | None = None
    events: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    namespaced: tuple[tuple[str, str, str], ...] = ()
    since: str | None = None
    until: str | None = None
    limit: int | None = None

    def sql(self) -> tuple[str, list[Any]]:
        """`` WHERE ...`` (or "") and its parameters."""
        clauses: list[str] = []
        params: list[Any] = []
        if self.run_id is not None:
            clauses.append("run_id = ?")
            params.append(self.run_id)
        if self.events:
            clauses.append(f"event IN ({', '.join('?' * len(self.events))})")
            params.extend(self.events)
        about: list[str] = []
        if self.keys:
            about.append(f"key IN ({', '.join('?' * len(self.keys))})")
            params.extend(self.keys)
        for system, key, master_key in self.namespaced:  # every key event's detail names it
            about.append(
                "(system = ? AND key = ? AND (instr(detail, ?) = 1 OR instr(detail, ?) = 1))"
            )
            params.extend((system, key, f"master key {master_key} ", f"master key {master_key}:"))
        if about:
            clauses.append("(" + " OR ".join(about) + ")")
        if self.since is not None:
            clauses.append("timestamp >= ?")
            params.append(self.since)
        if self.until is not None:
            clauses.append("timestamp < ?")
            params.append(self.until)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


@dataclass(frozen=True)
class RunRecord:
    """One row of ``runs``."""

    run_id: str
    seq: int
    started_at: str
    ended_at: str | None
    mode: str
    flags: dict[str, Any]
    dry_run: bool
    outcome: str
    exit_code: int | None
    counts: dict[str, Any]
    message: str
    pid: int


@dataclass(frozen=True)
class RegistryEntry:
    """One master key, with the SPEC columns and what the lifecycle needs."""

    master_key: str
    status: str
    strategy: str
    source_system: str
    source_key: str
    seen_in: str
    created_at: str
    updated_at: str
    last_seen_at: str
    created_run: str
    updated_run: str
    system: str
    key: str
    status_seq: int
    unseen_since_seq: int | None
    in_authority: bool

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> RegistryEntry:
        return cls(
            master_key=row[0],
            status=row[1],
            strategy=row[2],
            source_system=row[3],
            source_key=row[4],
            seen_in=row[5],
            created_at=row[6],
            updated_at=row[7],
            last_seen_at=row[8],
            created_run=row[9],
            updated_run=row[10],
            system=row[MK_SYSTEM],
            key=row[MK_KEY],
            status_seq=int(row[MK_STATUS_SEQ]),
            unseen_since_seq=row[MK_UNSEEN_SINCE],
            in_authority=bool(row[MK_IN_AUTHORITY]),
        )

    def spec_row(self) -> tuple[str, ...]:
        return tuple(str(getattr(self, name)) for name in REGISTRY_COLUMNS)


@dataclass(frozen=True)
class StatusChange:
    """One manual status change (or the reason it was not made)."""

    master_key: str
    old: str
    new: str
    changed: bool


@dataclass
class SystemHistoryState:
    """What the history keeps about one system between runs (see keysync/history.py)."""

    system: str
    role: str
    baseline_seq: int
    last_read_seq: int
    key_count: int
    keys: bytes | None = None
    gaps: bytes | None = None
    extra: bytes | None = None


@dataclass
class HistoryState:
    """Everything ``plan_history`` loads: per-system state and when each run observed."""

    systems: dict[str, SystemHistoryState] = field(default_factory=dict)
    observed: dict[int, str] = field(default_factory=dict)

    @property
    def authority(self) -> SystemHistoryState | None:
        for state in self.systems.values():
            if state.role == "authority":
                return state
        return None


@dataclass(frozen=True)
class KeyEvent:
    """One row of ``key_history``: a key appeared in or disappeared from a system."""

    system: str
    seq: int
    event: str
    last_seen_seq: int | None


class StateStore:
    """The open database. Not thread-safe; one per process."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._db = connection

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: Path, *, create: bool = True, output_dir: Path | None = None) -> StateStore:
        """Open (and migrate) the database; ``create=False`` refuses a missing file, or an
        empty one (``touch``ed: SQLite would take it, and a reading command would write
        the schema into it, which only ``run`` may). ``output_dir``: where the reports of
        earlier runs would be, if any (see :func:`lost_database_problem`)."""
        path = Path(path)
        empty = path.is_file() and path.stat().st_size == 0
        if not path.exists() or empty:
            lost = lost_database_problem(path, output_dir)
            if lost is not None:
                raise RunError(lost)
            if not create:
                raise NoStateError(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            connection = sqlite3.connect(path, isolation_level=None, timeout=30.0)
        except sqlite3.Error as exc:
            raise RunError(f"cannot open the state database {path}: {exc}") from None
        store = cls(path, connection)
        try:
            store._configure()
            store._migrate()
        except sqlite3.DatabaseError as exc:
            connection.close()
            problem = state_problem(exc, path)
            raise RunError(problem or f"cannot open the state database {path} ({exc})") from None
        except BaseException:
            connection.close()
            raise
        return store

    @functools.cached_property
    def json_each(self) -> bool:
        """Whether SQLite has ``json_each`` (built in since 3.38, an option before)."""
        try:
            self._db.execute("SELECT count(*) FROM json_each('[]')").fetchone()
        except sqlite3.OperationalError:
            return False
        return True

    def _configure(self) -> None:
        db = self._db
        db.execute("PRAGMA page_size=16384")  # new files only: fewer, fuller pages per commit
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA cache_size=-131072")  # up to 128 MiB: big registries insert faster
        db.execute("PRAGMA busy_timeout=30000")

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise RunError(
                f"the state database {self.path} has schema v{version}, newer than this "
                f"keysync understands (v{SCHEMA_VERSION}); upgrade keysync"
            )
        for number in range(version + 1, SCHEMA_VERSION + 1):
            script = _MIGRATIONS[number - 1]
            self._db.execute("BEGIN IMMEDIATE")
            try:
                current = int(self._db.execute("PRAGMA user_version").fetchone()[0])
                if current < number:  # another process may have migrated meanwhile
                    for statement in _statements(script):
                        self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version = {number}")
                self._db.execute("COMMIT")
            except BaseException:  # (a Ctrl-C may come after the COMMIT, or before BEGIN's end)
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    # --------------------------------------------------------------------- runs

    def begin_run(
        self,
        run_id: str,
        started_at: datetime | str,
        mode: str,
        flags: Mapping[str, Any] | None = None,
        *,
        dry_run: bool | None = None,
    ) -> int:
        """Record a run as ``running`` (committed at once); returns its ``seq``.

        Any other run still marked ``running`` is from a process that died
        (the caller holds the run lock), so it is marked ``interrupted`` here,
        with an audit event; a dry run leaves that to the next real run, as it
        changes nothing but its own row (``keysync runs`` shows such a run as
        interrupted already, from the lock).
        """
        flags = dict(flags or {})
        is_dry = bool(flags.get("dry_run", False)) if dry_run is None else dry_run
        started = as_iso(started_at)
        with self._transaction():
            if not is_dry:
                self._close_orphans(found_by=run_id, now=started)
            seq = int(self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM runs").fetchone()[0])
            try:
                self._db.execute(
                    "INSERT INTO runs (run_id, seq, started_at, mode, flags, dry_run, outcome, pid)"
                    " VALUES (?, ?, ?, ?, ?, ?, 'running', ?)",
                    (run_id, seq, started, mode, _json(flags), int(is_dry), os.getpid()),
                )
            except sqlite3.IntegrityError:
                raise RunError(f"run id {run_id} is already recorded; start a new run") from None
        return seq

    def flags_before(self, run_id: str, name: str) -> tuple[str, dict[str, Any]] | None:
        """The run id and ``flags[name]`` (``rules``, ``settings``) of the last successful
        run before ``run_id`` that has them.

        Kept in ``flags`` (JSON), not in a column of their own: a new column would be a
        schema change an older keysync refuses to open.
        """
        rows = self._db.execute(
            "SELECT run_id, flags FROM runs WHERE dry_run = 0"
            " AND (outcome = 'completed' OR outcome = 'degraded')"
            " AND seq < (SELECT seq FROM runs WHERE run_id = ?) ORDER BY seq DESC",
            (run_id,),
        )
        for found, flags in rows:
            recorded = json.loads(flags).get(name)
            if recorded:
                return found, recorded
        return None

    def run_ids_like(self, pattern: str, limit: int = 3) -> list[str]:
        """Audit run ids matching a LIKE ``pattern`` (``manual-20261127T093000Z-%``), by id."""
        rows = self._db.execute(
            "SELECT DISTINCT run_id FROM audit_events WHERE run_id LIKE ? ORDER BY run_id LIMIT ?",
            (pattern, limit),
        )
        return [str(run_id) for (run_id,) in rows]

    def latest_flags(self, name: str) -> dict[str, Any] | None:
        """``flags[name]`` of the last successful run that has them (as :meth:`flags_before`)."""
        rows = self._db.execute(
            "SELECT flags FROM runs WHERE dry_run = 0"
            " AND (outcome = 'completed' OR outcome = 'degraded') ORDER BY seq DESC"
        )
        for (flags,) in rows:
            if recorded := json.loads(flags).get(name):
                return dict(recorded)
        return None

    def resume_run(
        self,
        run_id: str,
        *,
        now: datetime | str | None = None,
        flags: Mapping[str, Any] | None = None,
    ) -> None:
        """Mark a run ``running`` again: ``keysync run --resume`` continues it.

        An interrupted run, or a failed one whose checkpoint was kept (a full disk, a bug
        fixed since): a failure that makes resuming pointless removes the checkpoint.
        A run still marked ``running`` was killed outright (``kill -9``, a power loss):
        that is recorded here, as the next run would have, so the audit trail shows
        every interruption however the run was stopped. Its flags then say ``resume``,
        and take ``flags``: the settings the resumed run commits under, which the next
        run compares its own with.
        """
        at = as_iso(now or utc_now())
        with self._transaction():
            row = self._db.execute(
                "SELECT outcome, dry_run, pid, flags, started_at FROM runs WHERE run_id = ?",
                (run_id,),
            ).fetchone()
            if row is None or row[0] not in ("running", "interrupted", "failed"):
                raise RunError(f"run {run_id} is not an interrupted run; run without --resume")
            outcome, dry, pid, recorded, started = row
            if outcome == "running" and not dry:
                message = _ended_unseen(pid, started, "its --resume")
                self._insert_events([(at, run_id, "run.interrupted", "", "", message)])
            resumed = {**json.loads(recorded), **(flags or {}), "resume": True}
            self._db.execute(
                "UPDATE runs SET outcome = 'running', ended_at = NULL, exit_code = NULL,"
                " message = '', pid = ?, flags = ? WHERE run_id = ?",
                (os.getpid(), _json(resumed), run_id),
            )

    def _close_orphans(self, *, found_by: str, now: str) -> None:
        orphans = self._db.execute(
            "SELECT run_id, dry_run, pid, started_at FROM runs WHERE outcome = 'running'"
        ).fetchall()
        for orphan_id, dry, pid, started in orphans:
            message = f"process {pid} ended without finishing (found by run {found_by})"
            self._db.execute(
                "UPDATE runs SET outcome = 'interrupted', message = ? WHERE run_id = ?",
                (message, orphan_id),
            )
            if not dry:
                detail = _ended_unseen(pid, started, f"run {found_by}")
                self._insert_events([(now, orphan_id, "run.interrupted", "", "", detail)])

    def commit_run(
        self,
        run_id: str,
        *,
        ended_at: datetime | str,
        outcome: str,
        exit_code: int,
        counts: Mapping[str, Any] | None = None,
        plan: ProvisioningPlan | None = None,
        history: HistoryPlan | None = None,
        dry_run: bool = False,
        message: str = "",
    ) -> None:
        """Write everything the run decided and its final outcome, in one transaction.

        With ``dry_run`` only the run's own row changes: no registry row, no
        history, no audit event.
        """
        if outcome not in SUCCESSFUL:
            raise ValueError(f"commit_run outcome must be completed or degraded, not {outcome!r}")
        ended = as_iso(ended_at)
        all_counts: dict[str, Any] = dict(counts or {})
        if plan is not None:
            all_counts["registry"] = plan.counts()
        if history is not None:
            all_counts["history"] = history.counts()
        observed = (plan.now if plan is not None else None) or (
            history.now if history is not None else None
        )
        with paused_gc(), self._transaction():
            row = self._db.execute(
                "SELECT outcome FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            if row is None:
                raise RunError(f"run {run_id} was never begun in {self.path}")
            if row[0] != "running":
                raise RunError(f"run {run_id} is already {row[0]}; its changes were not saved")
            if not dry_run:
                if plan is not None:
                    self._write_registry(plan)
                    self._write_name_conflicts(plan)
                if history is not None:
                    self._write_history(history)
                registry = all_counts.get("registry", {})
                detail = f"outcome {outcome}, exit {exit_code}" + "".join(
                    f", {name} {value}" for name, value in registry.items() if value
                )
                if message:
                    detail += f"; {message}"
                self._insert_events([(ended, run_id, f"run.{outcome}", "", "", detail)])
                pause_for_tests("mid-commit")
            self._db.execute(
                "UPDATE runs SET ended_at = ?, outcome = ?, exit_code = ?, counts = ?,"
                " message = ?, observed_at = ? WHERE run_id = ?",
                (ended, outcome, exit_code, _json(all_counts), message, observed, run_id),
            )

    def end_run(
        self,
        run_id: str,
        *,
        outcome: str,
        message: str = "",
        ended_at: datetime | str | None = None,
        exit_code: int | None = None,
        counts: Mapping[str, Any] | None = None,
    ) -> None:
        """Mark a run ``failed`` or ``interrupted``; nothing else it planned is written."""
        if outcome not in ("failed", "interrupted"):
            raise ValueError(f"end_run outcome must be failed or interrupted, not {outcome!r}")
        ended = as_iso(ended_at or utc_now())
        with self._transaction():
            row = self._db.execute(
                "SELECT outcome, dry_run FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            if row is None or row[0] != "running":
                return
            self._db.execute(
                "UPDATE runs SET ended_at = ?, outcome = ?, exit_code = ?, message = ?,"
                " counts = ? WHERE run_id = ?",
                (ended, outcome, exit_code, message, _json(dict(counts or {})), run_id),
            )
            if not row[1]:  # worded as run.completed's detail begins: outcome, exit code
                said = f"outcome {outcome}" + ("" if exit_code is None else f", exit {exit_code}")
                detail = f"{said}; {message}" if message else said
                self._insert_events([(ended, run_id, f"run.{outcome}", "", "", detail)])

    def runs(self) -> list[RunRecord]:
        """Every run, oldest first."""
        rows = self._db.execute(f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY seq").fetchall()
        return [_run_record(row) for row in rows]

    def run(self, run_id: str) -> RunRecord | None:
        row = self._db.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        return _run_record(row) if row else None

    def run_seq(self, run_id: str) -> int:
        row = self._db.execute("SELECT seq FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise RunError(f"run {run_id} was never begun in {self.path}")
        return int(row[0])

    def successful_seqs(self) -> list[int]:
        """Seqs of runs that committed their state (dry runs excluded), ascending."""
        rows = self._db.execute(
            "SELECT seq FROM runs WHERE outcome IN ('completed', 'degraded') AND dry_run = 0"
            " ORDER BY seq"
        ).fetchall()
        return [int(r[0]) for r in rows]

    def committed_after(self, seq: int) -> bool:
        """Whether a run begun after run ``seq`` committed its state (dry runs do not)."""
        row = self._db.execute(
            "SELECT 1 FROM runs WHERE seq > ? AND outcome IN ('completed', 'degraded')"
            " AND dry_run = 0 LIMIT 1",
            (seq,),
        ).fetchone()
        return row is not None

    def max_seq(self) -> int:
        return int(self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM runs").fetchone()[0])

    def last_committed_seq(self) -> int:
        """The seq of the newest run that committed; a change by hand counts unseen runs after it.

        Not :meth:`max_seq`: a killed run keeps its seq when it is resumed, so a key approved
        between the kill and the resume would not count the resumed run as one it went unseen.
        """
        row = self._db.execute(
            "SELECT MAX(seq) FROM runs WHERE outcome IN ('completed', 'degraded') AND dry_run = 0"
        ).fetchone()
        return int(row[0] or 0)

    def newest_event_by(self, run_id: str) -> bool:
        """Whether the newest audit event is ``run_id``'s: nothing changed the registry since
        that run committed (a registry command, another run, would have recorded one)."""
        row = self._db.execute(
            "SELECT run_id FROM audit_events ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        return row is not None and row[0] == run_id

    def has_unseen_active(self) -> bool:
        """Whether an Active master key is seen in no system: each run counts towards its
        deprecation (provisioning.deprecate_after_runs), even one that reads the same files."""
        row = self._db.execute(
            "SELECT 1 FROM master_keys WHERE status = 'Active' AND unseen_since_seq IS NOT NULL"
            " LIMIT 1"
        ).fetchone()
        return row is not None

    def system_heads(self) -> dict[str, tuple[str, int, int]]:
        """Each system's role, baseline seq and key count (``system_state`` without its keys)."""
        rows = self._db.execute("SELECT system, role, baseline_seq, key_count FROM system_state")
        return {str(s): (str(role), int(base), int(count)) for s, role, base, count in rows}

    def observed_times(self) -> dict[int, str]:
        """When each run looked at the world (its planning time), by seq."""
        rows = self._db.execute("SELECT seq, COALESCE(observed_at, started_at) FROM runs")
        return {int(seq): str(at) for seq, at in rows}

    # ----------------------------------------------------------------- registry

    def load_registry(self) -> list[RegistryRow]:
        """Every master_keys row, all columns, sorted by master_key (the primary key)."""
        return self._db.execute("SELECT * FROM master_keys ORDER BY master_key").fetchall()

    def name_conflicts(self) -> dict[tuple[str, str], str]:
        """(system, key) -> the taken name, as the runs that last read each system left them."""
        rows = self._db.execute("SELECT system, key, name FROM name_conflicts")
        return {(system, key): name for system, key, name in rows}

    def check_writable(self) -> None:
        """Raise now what the run's first write would raise later (a read-only file):
        ``run --keys N`` replaces the inputs before that first write."""
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        self._db.execute(f"PRAGMA user_version = {version}")  # the same value: a real write

    def registry_entries(
        self, status: str | None = None, limit: int | None = None
    ) -> list[RegistryEntry]:
        """Entries by master key, of one ``status`` or all; the first ``limit`` in SQL."""
        return list(self.iter_registry(status, limit))

    def iter_registry(
        self, status: str | None = None, limit: int | None = None
    ) -> Iterator[RegistryEntry]:
        """``registry_entries``, streamed from the database (a listing of millions)."""
        source, params = _registry_selection(status, limit)
        for row in self._db.execute(f"SELECT * FROM {source} ORDER BY master_key", params):
            yield RegistryEntry.from_row(row)

    def registry_widths(
        self,
        columns: Sequence[str],
        status: str | None,
        limit: int | None,
        shown: Callable[[str], str],
    ) -> list[int]:
        """The longest cell of each column of the entries ``iter_registry`` gives, as
        ``shown`` prints it: one pass in SQL, and ``shown`` applied only to the rare rows
        with a control character in a key (as ``audit_widths``)."""
        source, params = _registry_selection(status, limit)
        lengths = ", ".join(f"COALESCE(MAX(LENGTH({column})), 0)" for column in columns)
        widths = list(self._db.execute(f"SELECT {lengths} FROM {source}", params).fetchone())
        listed = ", ".join(columns)
        odd = "master_key GLOB ? OR source_key GLOB ?"  # the columns input bytes reach
        for row in self._db.execute(
            f"SELECT {listed} FROM {source} WHERE {odd}", [*params, *["*[\x01-\x1f\x7f]*"] * 2]
        ):
            widths = [max(w, len(shown(str(cell)))) for w, cell in zip(widths, row)]
        return widths

    def registry_entry(self, master_key: str) -> RegistryEntry | None:
        row = self._db.execute(
            "SELECT * FROM master_keys WHERE master_key = ?", (master_key,)
        ).fetchone()
        return RegistryEntry.from_row(row) if row else None

    def entries_named(self, names: Iterable[str]) -> dict[str, RegistryEntry]:
        """The entries of these exact master keys (the primary key: one lookup each)."""
        rows = self._select_many(
            "SELECT * FROM master_keys WHERE master_key IN ({})", sorted(set(names))
        )
        return {entry.master_key: entry for entry in map(RegistryEntry.from_row, rows)}

    def entries_for_keys(self, keys: Iterable[str]) -> dict[str, list[RegistryEntry]]:
        """Every entry of each normalized key, by master key (namespaced: one per system,
        and after a strategy switch a mirror entry too). The key column has no index (it
        would slow every large commit): one scan per 500 keys."""
        wanted = sorted(set(keys))
        found: dict[str, list[RegistryEntry]] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            rows = self._db.execute(
                f"SELECT * FROM master_keys WHERE key IN ({', '.join('?' * len(chunk))})"
                " ORDER BY master_key",
                chunk,
            )
            for row in rows:
                entry = RegistryEntry.from_row(row)
                found.setdefault(entry.key, []).append(entry)
        return found

    def status_counts(self) -> dict[str, int]:
        """How many master keys have each status (``ProvisioningPlan.status_counts``'s form)."""
        rows = dict(self._db.execute("SELECT status, COUNT(*) FROM master_keys GROUP BY status"))
        return {status: int(rows.get(status, 0)) for status in STATUSES}

    def registry_count(self, status: str | None = None) -> int:
        if status is None:
            return int(self._db.execute("SELECT COUNT(*) FROM master_keys").fetchone()[0])
        row = self._db.execute("SELECT COUNT(*) FROM master_keys WHERE status = ?", (status,))
        return int(row.fetchone()[0])

    def change_status(
        self,
        master_keys: Iterable[str] | None,
        target: str,
        *,
        actor: str,
        now: datetime | str | None = None,
        command: str = "",
        user: str = "",
        reason: str = "",
        dry_run: bool = False,
    ) -> list[StatusChange]:
        """Move master keys to ``target`` by hand (``registry approve/deprecate``).

        With ``dry_run`` the changes are worked out and returned, and nothing is written.
        ``reason`` (``--reason``) ends each event's detail, for the auditor who asks why.

        ``master_keys=None`` means every ``Proposed`` key (``approve --all``).
        Unknown keys raise ``KeysyncError`` (exit 2) before anything changes.
        Approve: Proposed or Deprecated -> Active. Deprecate: Proposed or Active
        -> Deprecated. A key already in ``target`` is reported, not changed.
        Each change is an audit event with ``run_id = actor``.
        """
        if target not in ("Active", "Deprecated"):
            raise ValueError(target)
        stamp = as_iso(now or utc_now())
        event = "key.approved" if target == "Active" else "key.deprecated"
        with self._transaction(reading=dry_run):
            if master_keys is None:
                rows = self._db.execute(
                    "SELECT master_key, status, source_system, key FROM master_keys"
                    " WHERE status = 'Proposed' ORDER BY master_key"
                ).fetchall()
            else:
                wanted = list(dict.fromkeys(master_keys))
                found = {
                    row[0]: row
                    for row in self._select_many(
                        "SELECT master_key, status, source_system, key FROM master_keys"
                        " WHERE master_key IN ({})",
                        wanted,
                    )
                }
                unknown = [key for key in wanted if key not in found]
                if unknown:
                    shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
                    raise KeysyncError(
                        f"unknown master key{'s' if len(unknown) > 1 else ''}: {shown} "
                        "(see `keysync registry list`); nothing was changed",
                        2,
                    )
                rows = [found[key] for key in wanted]
            status_seq = self.last_committed_seq()
            changes: list[StatusChange] = []
            updates: list[tuple[Any, ...]] = []
            events: list[tuple[str, str, str, str, str, str]] = []
            for master_key, status, source_system, key in rows:
                if status == target:
                    changes.append(StatusChange(master_key, status, target, False))
                    continue
                changes.append(StatusChange(master_key, status, target, True))
                updates.append((target, stamp, actor, status_seq, master_key))
                how = f"by `{command}`" if command else "by hand"
                if user:
                    how += f" (user {user})"
                how += _reason_suffix(reason)
                events.append(
                    (
                        stamp,
                        actor,
                        event,
                        source_system,
                        key,
                        f"master key {master_key}: {status} -> {target} {how}",
                    )
                )
            if not dry_run:
                self._db.executemany(
                    "UPDATE master_keys SET status = ?, updated_at = ?, updated_run = ?,"
                    " status_seq = ? WHERE master_key = ?",
                    updates,
                )
                self._insert_events(events)
                pause_for_tests("mid-change")
        return changes

    def deprecated_since_rules_changed(self) -> set[str]:
        """Master keys a run (not a person) deprecated as unseen since the latest
        ``rules.changed`` event: the rule change, not a decision, unseated them."""
        rows = self._db.execute(
            "SELECT detail FROM audit_events WHERE event = 'key.deprecated'"
            " AND run_id NOT LIKE 'manual-%' AND detail LIKE '%: Active -> Deprecated: seen in%'"
            " AND seq > (SELECT MAX(seq) FROM audit_events WHERE event = 'rules.changed')"
        )
        prefix, marker = "master key ", ": Active -> Deprecated: "
        return {detail[len(prefix) : detail.index(marker)] for (detail,) in rows}

    def rules_before_change(self) -> dict[str, Any] | None:
        """``flags.rules`` of the last successful run before the one that recorded the
        latest ``rules.changed``: the rules the registry's old forms were made under."""
        row = self._db.execute(
            "SELECT run_id FROM audit_events WHERE event = 'rules.changed'"
            " ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        found = self.flags_before(row[0], "rules")
        return None if found is None else dict(found[1])

    def unread_since_rules_changed(self) -> set[str]:
        """The systems the history keeps that no run has read since the latest
        ``rules.changed`` (a peer unavailable, or left out with ``--systems``, since then):
        their last known keys are in the forms of the old rules."""
        row = self._db.execute(
            "SELECT runs.seq FROM audit_events JOIN runs ON runs.run_id = audit_events.run_id"
            " WHERE audit_events.event = 'rules.changed' ORDER BY audit_events.seq DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return set()
        rows = self._db.execute("SELECT system FROM system_state WHERE last_read_seq < ?", row)
        return {system for (system,) in rows}

    def deprecated_by_hand(self) -> set[str]:
        """Master keys whose latest change of status was a decision to deprecate them:
        ``registry deprecate``, or such a decision a ``registry rekey`` carried to the key's
        new form (so a second change of the rules carries it on). Any other deprecation
        (a run's, of a key unseen; a rekey's, of a superseded form) is the machinery's,
        which a rekey may undo by handing an approval back."""
        decided: dict[str, int] = {}
        for seq, event, detail in self._db.execute(
            "SELECT seq, event, detail FROM audit_events WHERE run_id LIKE 'manual-%' AND ("
            "(event = 'key.deprecated' AND (detail LIKE '%by `keysync registry deprecate`%'"
            " OR detail LIKE '%-> Deprecated, carried from %'))"
            " OR (event = 'key.rekeyed' AND detail LIKE '%, Deprecated as %'))"
        ):
            pattern = _MADE_DEPRECATED if event == "key.rekeyed" else _DEPRECATED_BY_HAND
            if found := pattern.match(detail):
                decided[found[1]] = max(int(seq), decided.get(found[1], 0))
        if not decided:
            return set()
        later = self._db.execute(
            "SELECT seq, detail FROM audit_events WHERE event IN ('key.approved', "
            "'key.deprecated') AND seq > ?",
            (min(decided.values()),),
        )
        for seq, detail in later:  # approved since (and perhaps deprecated again otherwise)
            if (found := _STATUS_CHANGE.match(detail)) and decided.get(found[1], seq) < seq:
                del decided[found[1]]
        return set(decided)

    def approved_by_runs(self, master_keys: Iterable[str]) -> set[str]:
        """Of ``master_keys``, the Active ones whose latest change of status was a run's
        auto-approval (``--auto-approve``, ``provisioning.auto_approve``) of a key it
        proposed: no one looked at that key, so a decision about it outweighs this."""
        wanted = set(master_keys)
        if not wanted:
            return set()
        latest: dict[str, tuple[int, bool]] = {}
        for seq, event, run_id, detail in self._db.execute(
            "SELECT seq, event, run_id, detail FROM audit_events"
            " WHERE event IN ('key.approved', 'key.deprecated', 'key.rekeyed')"
        ):
            found = _STATUS_CHANGE.match(detail) or _MADE_FOR.match(detail)
            if found and found[1] in wanted and latest.get(found[1], (0, False))[0] < seq:
                # A run approves only what it proposes, and only by auto-approval.
                by_run = event == "key.approved" and not run_id.startswith("manual-")
                latest[found[1]] = (int(seq), by_run)
        return {name for name, (_, by_run) in latest.items() if by_run}

    def apply_rekeys(
        self,
        rekeys: Sequence[Rekey],
        *,
        actor: str,
        now: str,
        command: str,
        user: str,
        reason: str = "",
    ) -> int:
        """Write a ``keysync.rekey`` plan in one transaction, each change an audit event
        with ``run_id = actor`` (as manual changes are); the number of entries rekeyed."""
        seq = self.last_committed_seq()  # as for an approval by hand: the unseen count restarts
        how = f"by `{command}` (user {user})" + _reason_suffix(reason)
        events: list[tuple[str, str, str, str, str, str]] = []

        def event(name: str, system: str, key: str, detail: str) -> None:
            events.append((now, actor, name, system, key, detail))

        done = 0
        with self._transaction():
            for rekey in rekeys:
                if rekey.action == "skip":
                    continue
                old, name, target = rekey.old, rekey.new_name, rekey.target
                if rekey.action.startswith("split") and target is not None:
                    status = "Active" if rekey.action == "split" else "Deprecated"
                    self._set_status(name, status, now, actor, seq)
                    decision = "" if status == "Active" else ", deprecated there by hand"
                    event(
                        "key.approved" if status == "Active" else "key.deprecated",
                        target.source_system,
                        rekey.new_key,
                        f"master key {name}: {target.status} -> {status}, carried from "
                        f"{old.master_key} (its form before the rules changed{decision}; "
                        f"the rules split it: {target.source_system}'s {target.source_key} "
                        f"is {name} now) {how}",
                    )
                    done += 1
                    continue
                system = old.source_system
                status = {"carry": "Active", "deprecate": "Deprecated"}.get(
                    rekey.action, "Proposed"
                )
                if target is not None and rekey.target_seen_in:
                    self._db.execute(
                        "UPDATE master_keys SET seen_in = ?, updated_at = ?, updated_run = ?"
                        " WHERE master_key = ?",
                        (rekey.target_seen_in, now, actor, name),
                    )
                    added = set(rekey.target_seen_in.split(";")) - set(target.seen_in.split(";"))
                    event(
                        "key.seen_in_changed",
                        system,
                        rekey.new_key,
                        f"master key {name}: seen_in {target.seen_in or '(none)'} -> "
                        f"{rekey.target_seen_in}: {';'.join(sorted(added))}, not read since "
                        f"the rules changed, held {old.master_key} (its form before) when "
                        f"last read, {how}",
                    )
                if target is None:
                    # Seen where its form is (rekey._seen): the next run changes nothing.
                    row = [name, status, old.strategy, system, old.source_key, rekey.seen_in]
                    row += [now, now, old.last_seen_at, actor, actor, old.system, rekey.new_key]
                    self._db.execute(
                        f"INSERT INTO master_keys VALUES ({', '.join('?' * 16)})",
                        (*row, seq, None, int(rekey.in_authority)),
                    )
                    event(
                        "key.rekeyed",
                        system,
                        rekey.new_key,
                        f"master key {name} ({old.strategy}) made for the key of "
                        f"{old.master_key} in its form under the rules now, {status} as "
                        f"{old.master_key} was"
                        + (" (deprecated there by hand)" if status == "Deprecated" else "")
                        + f", {how}",
                    )
                elif status == "Deprecated":  # a decision carried: the old stays as it is
                    self._set_status(name, "Deprecated", now, actor, seq)
                    event(
                        "key.deprecated",
                        system,
                        rekey.new_key,
                        f"master key {name}: {target.status} -> Deprecated, carried from "
                        f"{old.master_key} (its form before the rules changed, deprecated "
                        f"there by hand) {how}",
                    )
                elif status == "Active" and target.status != "Active":
                    self._set_status(name, "Active", now, actor, seq)
                    event(
                        "key.approved",
                        system,
                        rekey.new_key,
                        f"master key {name}: {target.status} -> Active, carried from "
                        f"{old.master_key} (its form before the rules changed) {how}",
                    )
                if old.status != "Deprecated":  # else a run deprecated it as unseen already
                    self._set_status(old.master_key, "Deprecated", now, actor, seq)
                    event(
                        "key.deprecated",
                        system,
                        old.key,
                        f"master key {old.master_key}: {old.status} -> Deprecated: superseded "
                        f"by {name}, its key's form under the rules now, {how}",
                    )
                done += 1
            self._insert_events(events)
            pause_for_tests("mid-change")
        return done

    def _set_status(self, master_key: str, status: str, now: str, actor: str, seq: int) -> None:
        self._db.execute(
            "UPDATE master_keys SET status = ?, updated_at = ?, updated_run = ?, status_seq = ?"
            " WHERE master_key = ?",
            (status, now, actor, seq, master_key),
        )

    def _write_registry(self, plan: ProvisioningPlan) -> None:
        """Registry rows and audit events of a run (inside ``commit_run``'s transaction).

        Changed entries are whole rows, replaced. New entries, most of a large
        commit, cross from Python into SQLite once: their six varying values go
        into a temporary table (``_load_new_entries``), and ``INSERT ... SELECT``
        makes from it both their registry rows (what every new entry of the run
        shares, status, strategy, times and run id, is written into the
        statement as literals) and their ``key.proposed`` (with an approver, also
        ``key.approved``) audit events, whose detail SQL builds word for word as
        ``ProvisioningPlan.events`` does (tests/test_state.py holds them to it).
        Each value is bound once, not twice, and no Python string is built per
        event: a first run at 5 x 1M keys (386k new entries) commits in 1.06 s
        instead of 1.68 s (bench/phases.py; bench/commit_ab.py: 0.92 vs 1.22 s).
        """
        self._db.executemany(
            f"REPLACE INTO master_keys VALUES ({', '.join('?' * 16)})", plan.changed_rows()
        )
        entries = plan.new_entries()
        if not entries:
            self._insert_events(plan.change_events)
            return
        self._load_new_entries(entries)
        now, run_id = _literal(plan.now), _literal(plan.run_id)
        system = "''" if plan.strategy == "mirror" else "source"
        self._db.execute(
            f"INSERT INTO master_keys SELECT master_key, {_literal(plan.new_status)},"
            f" {_literal(plan.strategy)}, source, source_key, seen_in, {now}, {now},"
            f" last_seen_at, {run_id}, {run_id}, {system}, key, {int(plan.seq)}, NULL, 0"
            " FROM temp.new_entries ORDER BY rowid"
        )
        # An event's seq is its insertion order: changes, then proposals, then approvals.
        self._insert_events(plan.change_events, later=(plan.now,))
        details = {
            "key.proposed": f"'master key ' || master_key || {_literal(f' ({plan.strategy})')}"
            " || ' proposed for ' || source || ' key ''' || replace(source_key, '''', '''''')"
            " || '''; seen in ' || seen_in"
        }
        if plan.approver:
            tail = _literal(f": Proposed -> Active by {plan.approved_by}")
            details["key.approved"] = f"'master key ' || master_key || {tail}"
        for event, detail in details.items():
            self._db.execute(
                "INSERT INTO audit_events (timestamp, run_id, event, system, key, detail)"
                f" SELECT {now}, {run_id}, {_literal(event)}, source, key, {detail}"
                " FROM temp.new_entries ORDER BY rowid"
            )
        self._db.execute("DROP TABLE temp.new_entries")

    def _load_new_entries(self, entries: Sequence[Sequence[str]]) -> None:
        """``temp.new_entries``: new entries in the order given (rowid order).

        ``_ENTRIES_PER_INSERT`` rows per ``INSERT ... VALUES`` statement: with
        ``executemany``'s one statement step per entry, that step was a third of
        the load (0.28 -> 0.19 s at 386k entries). The table lives in the temp
        database, outside the WAL: it is never part of what a commit makes
        durable, and it goes with the transaction if that rolls back.
        """
        db = self._db
        db.execute(
            "CREATE TEMP TABLE new_entries"
            " (master_key, source, source_key, seen_in, last_seen_at, key)"
        )
        size = _ENTRIES_PER_INSERT
        whole = len(entries) - len(entries) % size
        many = "INSERT INTO temp.new_entries VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?)"] * size)
        for start in range(0, whole, size):
            db.execute(many, tuple(chain.from_iterable(entries[start : start + size])))
        db.executemany("INSERT INTO temp.new_entries VALUES (?, ?, ?, ?, ?, ?)", entries[whole:])

    # -------------------------------------------------------------------- audit

    def _insert_events(self, events: Sequence[Sequence[str]], *, later: Sequence[str] = ()) -> None:
        """Append audit events; their ``seq`` is the order they are given in.

        ``later``: the timestamps of events the caller appends right after these
        by ``INSERT ... SELECT``; they are checked for order with these.

        Events are appended in time order, so ``seq`` order is timestamp order
        and ``audit_rows`` needs no index to list them "by timestamp, seq". Only
        if an event arrives with a timestamp earlier than one already recorded
        (the system clock was set back) is the index ``audit_events_order``
        created, once, and used from then on. At 500k events per run that
        index would cost ~0.3 s of every large commit.
        """
        if not events and not later:
            return
        if not self._has_audit_index():
            row = self._db.execute(
                "SELECT timestamp FROM audit_events ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            previous = row[0] if row else ""
            for timestamp in chain(map(itemgetter(0), events), later):
                if timestamp < previous:
                    self._db.execute(
                        "CREATE INDEX IF NOT EXISTS audit_events_order"
                        " ON audit_events (timestamp, seq)"
                    )
                    break
                previous = timestamp
        self._db.executemany(
            "INSERT INTO audit_events (timestamp, run_id, event, system, key, detail)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            events,
        )

    def _has_audit_index(self) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'audit_events_order'"
        ).fetchone()
        return row is not None

    def _audit_order(self) -> str:
        """``seq`` order is timestamp order unless a clock moved back (then the index exists)."""
        return "timestamp, seq" if self._has_audit_index() else "seq"

    def audit_rows(
        self, run_id: str | None = None, *, after_seq: int | None = None, seq_as_text: bool = False
    ) -> Iterator[tuple[Any, ...]]:
        """Rows of ``audit_log.csv`` (``AUDIT_COLUMNS``), by timestamp then seq.

        ``after_seq``: only the events recorded after the event with that ``seq``
        (``keysync.audit_report`` appends them to the previous file), read by a
        ``seq`` range and, if the order index exists, sorted in a temporary b-tree:
        the cost follows those events, not the whole trail. ``seq_as_text``: the
        ``seq`` as ``str`` (SQLite formats it), so that a row is all text and takes
        the reporter's fast path (``ReportFile.rows`` with ``numbers``).
        """
        columns = ", ".join(
            "CAST(seq AS TEXT)" if seq_as_text and c == "seq" else c for c in AUDIT_COLUMNS
        )
        if after_seq is not None:
            cursor = self._db.execute(
                f"SELECT {columns} FROM audit_events NOT INDEXED WHERE seq > ?"
                f" ORDER BY {self._audit_order()}",
                (after_seq,),
            )
        elif run_id is None:
            cursor = self._db.execute(
                f"SELECT {columns} FROM audit_events ORDER BY {self._audit_order()}"
            )
        else:
            cursor = self._db.execute(
                f"SELECT {columns} FROM audit_events WHERE run_id = ?"
                f" ORDER BY {self._audit_order()}",
                (run_id,),
            )
        while True:
            chunk = cursor.fetchmany(10_000)
            if not chunk:
                return
            yield from chunk

    def audit_rows_where(self, wanted: AuditFilter) -> Iterator[tuple[Any, ...]]:
        """The rows ``keysync audit`` shows: those ``wanted`` selects, by timestamp then
        seq, streamed (a trail of millions of events must not be held in memory)."""
        where, params = wanted.sql()
        columns = ", ".join(AUDIT_COLUMNS)
        order = self._audit_order()
        sql = f"SELECT {columns} FROM audit_events{where} ORDER BY {order}"
        if wanted.limit is not None:  # the latest N, shown oldest first like the rest
            latest = ", ".join(f"{column} DESC" for column in order.split(", "))
            sql = (
                f"SELECT * FROM (SELECT {columns} FROM audit_events{where}"
                f" ORDER BY {latest} LIMIT ?) ORDER BY {order}"
            )
            params.append(wanted.limit)
        cursor = self._db.execute(sql, params)
        while chunk := cursor.fetchmany(10_000):
            yield from chunk

    def audit_event_names(self) -> set[str]:
        """The event names the trail holds (one scan: only to explain an empty answer)."""
        return {row[0] for row in self._db.execute("SELECT DISTINCT event FROM audit_events")}

    def audit_widths(self, wanted: AuditFilter, shown: Callable[[str], str] = str) -> list[int]:
        """The longest cell of each column among the rows ``wanted`` selects, as ``shown``
        prints it (one pass in SQL), so a table of them can be printed as it streams.

        ``shown`` (the table's escapes of control characters) is applied in Python only
        to the rare rows with a control character in their key, found by a second pass.
        The key is the one padded column input bytes reach: keysync writes the others,
        and ``detail``, the last, is not padded (0.25 s for 1M events; a pass over every
        column took 2.5 s).
        """
        where, params = wanted.sql()
        columns = ", ".join(AUDIT_COLUMNS)
        source = f"audit_events{where}"
        if wanted.limit is not None:
            order = ", ".join(f"{column} DESC" for column in self._audit_order().split(", "))
            source = f"(SELECT {columns} FROM audit_events{where} ORDER BY {order} LIMIT ?)"
            params.append(wanted.limit)
        lengths = ", ".join(f"COALESCE(MAX(LENGTH({column})), 0)" for column in AUDIT_COLUMNS)
        widths = list(self._db.execute(f"SELECT {lengths} FROM {source}", params).fetchone())
        if shown is not str:
            for row in self._db.execute(
                f"SELECT {columns} FROM (SELECT {columns} FROM {source}) WHERE key GLOB ?",
                [*params, "*[\x01-\x1f\x7f]*"],
            ):
                widths = [max(w, len(shown(str(cell)))) for w, cell in zip(widths, row)]
        return widths

    def audit_rows_for_key(self, key: str) -> list[tuple[Any, ...]]:
        """Audit rows about one normalized key (``registry show``), by timestamp then seq."""
        columns = ", ".join(AUDIT_COLUMNS)
        return self._db.execute(
            f"SELECT {columns} FROM audit_events WHERE key = ? ORDER BY {self._audit_order()}",
            (key,),
        ).fetchall()

    def audit_count(self, *, after_seq: int | None = None) -> int:
        """Number of audit events; with ``after_seq``, of those recorded after that one."""
        if after_seq is None:
            return int(self._db.execute("SELECT COUNT(*) FROM audit_events").fetchone()[0])
        row = self._db.execute(
            "SELECT COUNT(*) FROM audit_events NOT INDEXED WHERE seq > ?", (after_seq,)
        ).fetchone()
        return int(row[0])

    def audit_tail(self) -> tuple[int, tuple[Any, ...] | None]:
        """The highest ``seq`` recorded (0 if none) and the last row of ``audit_rows()``."""
        top = int(self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM audit_events").fetchone()[0])
        order = ", ".join(f"{column} DESC" for column in self._audit_order().split(", "))
        columns = ", ".join(AUDIT_COLUMNS)
        last = self._db.execute(
            f"SELECT {columns} FROM audit_events ORDER BY {order} LIMIT 1"
        ).fetchone()
        return top, (tuple(last) if last is not None else None)

    def audit_event(self, seq: int) -> tuple[Any, ...] | None:
        """One ``audit_log.csv`` row by its ``seq``, or None."""
        columns = ", ".join(AUDIT_COLUMNS)
        row = self._db.execute(
            f"SELECT {columns} FROM audit_events WHERE seq = ?", (seq,)
        ).fetchone()
        return tuple(row) if row is not None else None

    def audit_earliest_after(self, seq: int) -> str | None:
        """The earliest timestamp among the events recorded after ``seq`` (None: none)."""
        row = self._db.execute(
            "SELECT MIN(timestamp) FROM audit_events NOT INDEXED WHERE seq > ?", (seq,)
        ).fetchone()
        return None if row[0] is None else str(row[0])

    # ------------------------------------------------------------------ history

    def load_history_state(self) -> HistoryState:
        state = HistoryState(observed=self.observed_times())
        for row in self._db.execute(
            "SELECT system, role, baseline_seq, last_read_seq, key_count, keys, gaps, extra"
            " FROM system_state"
        ):
            state.systems[row[0]] = SystemHistoryState(*row)
        return state

    def _write_name_conflicts(self, plan: ProvisioningPlan) -> None:
        """The peers read this run hold exactly the conflicts it found; the others keep theirs."""
        self._db.executemany(
            "DELETE FROM name_conflicts WHERE system = ?", [(p,) for p in plan.peers_read]
        )
        self._db.executemany(
            "INSERT INTO name_conflicts VALUES (?, ?, ?)",
            [(system, key, name) for (system, key), name in plan.name_taken.items()],
        )

    def _write_history(self, history: HistoryPlan) -> None:
        for system in history.removed_systems():
            self._db.execute("DELETE FROM system_state WHERE system = ?", (system,))
        for update in history.system_updates():
            self._db.execute(
                "INSERT INTO system_state (system, role, baseline_seq, last_read_seq, key_count)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (system) DO UPDATE SET"
                " role = excluded.role, baseline_seq = excluded.baseline_seq,"
                " last_read_seq = excluded.last_read_seq, key_count = excluded.key_count",
                (
                    update.system,
                    update.role,
                    update.baseline_seq,
                    update.last_read_seq,
                    update.key_count,
                ),
            )
            for column, blob in update.blobs.items():
                if column not in ("keys", "gaps", "extra"):
                    raise ValueError(column)
                self._db.execute(
                    f"UPDATE system_state SET {column} = ? WHERE system = ?",
                    (blob, update.system),
                )
        insert = "INSERT OR REPLACE INTO key_history (key, system, seq, event, last_seen_seq)"
        if not self.json_each:
            self._db.executemany(insert + " VALUES (?, ?, ?, ?, ?)", history.rows())
            return
        # One statement per system and transition, its keys one JSON array that SQLite
        # walks in C: 2.7x faster than a bound row each (4M rows: 3.5 s of CPU, not 9.5),
        # and a rule change at 5 x 1M writes 10M of them.
        for group in history.ordered_transitions():
            for start in range(0, len(group.keys), _KEYS_PER_JSON):  # far below SQLite's 1 GB
                keys = _keys_json(group.keys[start : start + _KEYS_PER_JSON])
                self._db.execute(
                    insert + " SELECT value, ?, ?, ?, ? FROM json_each(?)",
                    (group.system, history.seq, group.event, group.last_seen_seq, keys),
                )

    def key_events(self, key: str) -> list[KeyEvent]:
        rows = self._db.execute(
            "SELECT system, seq, event, last_seen_seq FROM key_history WHERE key = ?"
            " ORDER BY system, seq",
            (key,),
        )
        return [KeyEvent(*row) for row in rows]

    # ---------------------------------------------------------------- internals

    def last_event_seq(self) -> int:
        """The seq of the newest audit event (0 for none): later events have greater ones."""
        return int(self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM audit_events").fetchone()[0])

    def committed_events_of(self, run_id: str, after: int) -> bool:
        """Whether ``run_id`` has committed audit events after seq ``after`` (a change by hand
        that was stopped: a transaction it left open, by a stop inside its last step, is
        rolled back first). ``after``, taken when it began, keeps this to a look at the newest
        events, by the primary key, not a scan of a trail of millions for ``run_id``."""
        if self._db.in_transaction:
            self._db.rollback()
        row = self._db.execute(
            "SELECT 1 FROM audit_events WHERE seq > ? AND run_id = ? LIMIT 1", (after, run_id)
        ).fetchone()
        return row is not None

    def reading(self) -> _Transaction:
        """One read transaction: reads within it see one committed state, though a run may
        commit meanwhile (a dry run takes no lock)."""
        return self._transaction(reading=True)

    def _transaction(self, *, reading: bool = False) -> _Transaction:
        """One transaction; ``reading``: one that only reads (a dry run), which in WAL mode
        waits for no writer, where ``BEGIN IMMEDIATE`` waits for a run's commit to end."""
        return _Transaction(self._db, "DEFERRED" if reading else "IMMEDIATE")

    def _select_many(self, sql: str, values: Sequence[str]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(values), 500):
            chunk = values[start : start + 500]
            rows.extend(self._db.execute(sql.format(", ".join("?" * len(chunk))), chunk))
        return rows

    def table_dump(self, exclude: Sequence[str] = ()) -> list[str]:
        """Every row of every table as SQL text (tests compare databases with it)."""
        return [
            line
            for line in self._db.iterdump()
            if not any(f'"{name}"' in line.split("VALUES")[0] for name in exclude)
        ]


class _Transaction:
    """``BEGIN IMMEDIATE`` (or ``DEFERRED``) ... ``COMMIT``, rolled back on any exception."""

    def __init__(self, db: sqlite3.Connection, kind: str = "IMMEDIATE") -> None:
        self._db = db
        self._kind = kind

    def __enter__(self) -> None:
        self._db.execute(f"BEGIN {self._kind}")

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        elif self._db.in_transaction:
            # Not after SQLITE_FULL: SQLite has rolled back already, and a ROLLBACK then
            # raised "no transaction is active", hiding the full disk behind a traceback.
            self._db.execute("ROLLBACK")


_RUN_COLUMNS = (
    "run_id, seq, started_at, ended_at, mode, flags, dry_run, outcome, exit_code, counts,"
    " message, pid"
)


def _counts_as_now(counts: dict[str, Any]) -> dict[str, Any]:
    """``runs.counts`` in today's shape: runs recorded before 2026-12-02 kept each system's
    summary at the top, beside ``registry`` and ``history``; now they are under ``systems``."""
    old = {k: v for k, v in counts.items() if isinstance(v, dict) and "available" in v}
    if not old:
        return counts
    return {"systems": old, **{k: v for k, v in counts.items() if k not in old}}


def _run_record(row: Sequence[Any]) -> RunRecord:
    return RunRecord(
        run_id=row[0],
        seq=int(row[1]),
        started_at=row[2],
        ended_at=row[3],
        mode=row[4],
        flags=json.loads(row[5] or "{}"),
        dry_run=bool(row[6]),
        outcome=row[7],
        exit_code=row[8],
        counts=_counts_as_now(json.loads(row[9] or "{}")),
        message=row[10] or "",
        pid=int(row[11]),
    )


def _ended_unseen(pid: int, started: str, found_by: str) -> str:
    """What is known of a run killed outright: not when it died, only that it did."""
    return (
        f"outcome interrupted; process {pid}, started {started}, ended without finishing "
        f"(found by {found_by}; the time of this record is when it was found)"
    )


def _registry_selection(status: str | None, limit: int | None) -> tuple[str, list[Any]]:
    """The entries a listing shows, as a table expression and its parameters."""
    if status is None and limit is None:
        return "master_keys", []
    where = "" if status is None else " WHERE status = ?"
    params: list[Any] = [] if status is None else [status]
    if limit is not None:
        where += " ORDER BY master_key LIMIT ?"
        params.append(limit)
    return f"(SELECT * FROM master_keys{where})", params


def _reason_suffix(reason: str) -> str:
    """The end of a manual change's audit detail: ``; reason: <what the person gave>``."""
    return f"; reason: {reason}" if reason else ""


def _literal(text: str) -> str:
    """A string as an SQL literal (only for values keysync itself makes: run ids, times)."""
    return "'" + text.replace("'", "''") + "'"


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


_keys_json = msgspec.json.Encoder().encode
"""Keys as one JSON array, for ``json_each``: each comes back as it went in, except that
SQLite ends a string at U+0000; a key never holds one (the reader rejects NUL bytes)."""
_KEYS_PER_JSON = 100_000
"""Keys per ``json_each`` statement: one JSON text must stay under SQLite's length
limit (1 GB by default), whatever the keys' lengths (at most 64K characters each)."""


def _statements(script: str) -> list[str]:
    return [part.strip() for part in script.split(";") if part.strip()]
