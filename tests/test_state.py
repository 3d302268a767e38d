"""The state store and the key history, driven through the real index and comparison.

Each test builds a ``KeyIndex`` from ``KeyBatch`` messages (as the merger
receives them), compares, plans, commits into a real SQLite file and reads
back what a user would see: runs, audit rows, missing_since, timelines.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keysync import state as state_module
from keysync.comparison import Comparison, compare
from keysync.config import Config, parse_config
from keysync.errors import KeysyncError, RunError
from keysync.history import HistoryPlan, key_timeline, plan_history
from keysync.lock import RunLock
from keysync.messages import KeyBatch
from keysync.stages.merger import KeyIndex
from keysync.stages.provisioner import ProvisioningPlan, plan_provisioning
from keysync.state import (
    _ENTRIES_PER_INSERT,
    _MIGRATIONS,
    SCHEMA_VERSION,
    StateStore,
    state_problem,
)

Rows = Sequence[str] | Sequence[tuple[str, str, str]]


def make_index(data: Mapping[str, Rows]) -> KeyIndex:
    """``{system: [key, ...] or [(key, raw, last_seen_at), ...]}`` -> a merged index."""
    index = KeyIndex(list(data))
    for system, rows in data.items():
        keys, raws, stamps = [], [], []
        for row in rows:
            key, raw, stamp = (row, row, "") if isinstance(row, str) else row
            keys.append(key)
            raws.append(raw)
            stamps.append(stamp)
        index.add(
            KeyBatch.of(
                system=system,
                seq=0,
                start_offset=0,
                end_offset=1,
                first_line=2,
                next_line=2 + len(keys),
                keys=keys,
                raw_changes=[(i, raw) for i, raw in enumerate(raws) if raw != keys[i]],
                lines=list(range(2, 2 + len(keys))),
                timestamps=stamps,
                rejected=[],
                rows_read=len(keys),
            )
        )
    return index


def comparison_of(data: Mapping[str, Rows], unavailable: Sequence[str] = ()) -> Comparison:
    index = make_index({s: ([] if s in unavailable else rows) for s, rows in data.items()})
    return compare(index, "A", {s: "unreadable" for s in unavailable})


def at(n: int) -> str:
    return f"2026-01-{n:02d}T02:00:00Z"


def one_run(
    store: StateStore,
    config: Config,
    run_id: str,
    now: str,
    data: Mapping[str, Rows],
    *,
    unavailable: Sequence[str] = (),
    auto_approve: bool = False,
    dry_run: bool = False,
) -> tuple[ProvisioningPlan, HistoryPlan, Comparison]:
    """begin -> plan -> commit, as the runner does."""
    comparison = comparison_of(data, unavailable)
    store.begin_run(run_id, now, "full", {"dry_run": dry_run, "auto_approve": auto_approve})
    plan = plan_provisioning(
        store,
        config,
        comparison,
        run_id=run_id,
        now=now,
        auto_approve=auto_approve,
        dry_run=dry_run,
    )
    history = plan_history(store, comparison, run_id, now)
    store.commit_run(
        run_id,
        ended_at=now,
        outcome="degraded" if unavailable else "completed",
        exit_code=4 if unavailable else 0,
        counts={"rows": 1},
        plan=plan,
        history=history,
        dry_run=dry_run,
    )
    return plan, history, comparison


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return parse_config({"provisioning": {"deprecate_after_runs": 2}}, tmp_path)


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    opened = StateStore.open(tmp_path / "data" / "keysync.db")
    yield opened  # type: ignore[misc]
    opened.close()


# ------------------------------------------------------------------ schema


def test_new_database_is_wal_versioned_and_has_the_tables(tmp_path: Path) -> None:
    path = tmp_path / "keysync.db"
    StateStore.open(path).close()
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {
        "runs",
        "master_keys",
        "audit_events",
        "key_history",
        "system_state",
        "name_conflicts",
    } <= tables
    columns = [r[1] for r in raw.execute("PRAGMA table_info(master_keys)")]
    assert columns[:11] == [
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
    ]
    raw.close()
    # Opening again migrates nothing and keeps the version.
    with StateStore.open(path) as again:
        assert again.schema_version == SCHEMA_VERSION


def test_a_database_of_schema_v1_is_migrated_keeping_its_rows(tmp_path: Path) -> None:
    """Session 13 added name_conflicts (v2): a v1 registry opens, its rows intact."""
    path = tmp_path / "keysync.db"
    raw = sqlite3.connect(path)
    raw.executescript(_MIGRATIONS[0])
    raw.execute(
        "INSERT INTO master_keys VALUES ('X-1', 'Active', 'mirror', 'B', 'x-1', 'B',"
        " 't', 't', 't', 'r1', 'r1', '', 'X-1', 1, NULL, 0)"
    )
    raw.execute("PRAGMA user_version = 1")
    raw.commit()
    raw.close()
    with StateStore.open(path) as store:
        assert store.schema_version == SCHEMA_VERSION == 2
        assert [row[:3] for row in store.load_registry()] == [("X-1", "Active", "mirror")]
        assert store.name_conflicts() == {}


def test_a_database_from_a_newer_keysync_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keysync.db"
    StateStore.open(path).close()
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.commit()
    raw.close()
    with pytest.raises(RunError, match=r"newer than this keysync understands.*upgrade keysync"):
        StateStore.open(path)


def test_a_file_that_is_not_sqlite_gets_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "keysync.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(RunError, match=r"is damaged .*back from a backup"):
        StateStore.open(path)


def test_opening_without_create_never_makes_a_file(tmp_path: Path) -> None:
    path = tmp_path / "data" / "keysync.db"
    with pytest.raises(KeysyncError, match=r"no runs yet .* run `keysync run` first"):
        StateStore.open(path, create=False)
    assert not path.exists()


# -------------------------------------------------------------------- runs


def test_runs_are_recorded_with_mode_flags_counts_and_outcome(
    store: StateStore, config: Config
) -> None:
    one_run(store, config, "r1", at(1), {"A": ["K1"], "B": ["K1", "X1"]})
    store.begin_run("r2", at(2), "incremental", {"dry_run": False, "systems": ["A", "B"]})
    store.end_run("r2", outcome="failed", message="A unreadable", ended_at=at(2), exit_code=3)
    first, second = store.runs()
    assert (first.run_id, first.seq, first.mode, first.outcome, first.exit_code) == (
        "r1",
        1,
        "full",
        "completed",
        0,
    )
    assert first.counts["rows"] == 1
    assert first.counts["registry"]["proposed"] == 1
    assert first.flags == {"dry_run": False, "auto_approve": False}
    assert (second.outcome, second.message, second.exit_code) == ("failed", "A unreadable", 3)
    assert second.flags["systems"] == ["A", "B"]
    events = [(r[1], r[3]) for r in store.audit_rows()]
    assert ("r2", "run.failed") in events and ("r1", "run.completed") in events


def test_a_run_left_running_by_a_dead_process_is_marked_interrupted(
    store: StateStore, config: Config
) -> None:
    store.begin_run("dead", at(1), "full", {})
    one_run(store, config, "r2", at(2), {"A": ["K1"], "B": ["K1"]})
    dead = store.run("dead")
    assert dead is not None and dead.outcome == "interrupted"
    assert "ended without finishing (found by run r2)" in dead.message
    assert ("dead", "run.interrupted") in [(r[1], r[3]) for r in store.audit_rows()]


def test_commit_is_all_or_nothing(tmp_path: Path, store: StateStore, config: Config) -> None:
    """A failure inside the commit leaves registry, history and audit exactly as they were."""
    one_run(store, config, "r1", at(1), {"A": ["K1"], "B": ["K1", "X1"]})
    before = store.table_dump()
    comparison = comparison_of({"A": ["K1"], "B": ["K1", "X1", "X2"], "C": ["X3"]})
    store.begin_run("r2", at(2), "full", {})
    plan = plan_provisioning(store, config, comparison, run_id="r2", now=at(2))
    history = plan_history(store, comparison, "r2", at(2))
    # Someone sneaks X3 into the registry: the run's INSERT of X3 fails half-way.
    other = sqlite3.connect(store.path)
    other.execute(
        "INSERT INTO master_keys VALUES"
        " ('X3','Proposed','mirror','C','X3','C','t','t','t','x','x','','X3',0,NULL,0)"
    )
    other.commit()
    with pytest.raises(sqlite3.IntegrityError):
        store.commit_run(
            "r2",
            ended_at=at(2),
            outcome="completed",
            exit_code=0,
            plan=plan,
            history=history,
        )
    other.execute("DELETE FROM master_keys WHERE master_key = 'X3'")
    other.commit()
    other.close()
    after = store.table_dump()
    changed = [line for line in after if line not in before]
    assert len(changed) == 1 and '"runs"' in changed[0] and "'running'" in changed[0]
    # Nothing of the failed attempt lingers (its temporary table went with the rollback).
    store.commit_run("r2", ended_at=at(2), outcome="completed", exit_code=0, plan=plan)
    assert [e.master_key for e in store.registry_entries()] == ["X1", "X2", "X3"]


def test_dry_run_changes_nothing_but_its_run_record(store: StateStore, config: Config) -> None:
    one_run(store, config, "r1", at(1), {"A": ["K1", "K2"], "B": ["K1", "X1"]})
    before = store.table_dump(exclude=["runs"])
    runs_before = [r.run_id for r in store.runs()]
    plan, _, _ = one_run(
        store,
        config,
        "dry",
        at(2),
        {"A": ["K1"], "B": ["X1", "X2"], "C": ["X3"]},
        dry_run=True,
        auto_approve=True,
    )
    assert plan.counts()["proposed"] == 2  # it did decide something...
    assert store.table_dump(exclude=["runs"]) == before  # ...and wrote none of it
    records = store.runs()
    assert [r.run_id for r in records] == [*runs_before, "dry"]
    assert records[-1].dry_run and records[-1].outcome == "completed"


# ----------------------------------------------------------------- history


def test_three_runs_give_missing_since_from_the_history(store: StateStore, config: Config) -> None:
    # run 1: B lacks K2 and K3; C lacks K3.
    _, h1, _ = one_run(
        store, config, "r1", at(1), {"A": ["K1", "K2", "K3"], "B": ["K1"], "C": ["K1", "K2"]}
    )
    assert h1.missing_since("B", "K2") == at(1)
    # run 2: B still lacks K2 (same stretch), gets K3; C loses K2; A gains K4 that nobody has.
    _, h2, c2 = one_run(
        store,
        config,
        "r2",
        at(2),
        {"A": ["K1", "K2", "K3", "K4"], "B": ["K1", "K3"], "C": ["K1"]},
    )
    assert c2.gaps == {"B": {"K2", "K4"}, "C": {"K2", "K3", "K4"}}
    assert h2.missing_since("B", "K2") == at(1)
    assert h2.missing_since("B", "K4") == at(2)
    assert h2.missing_since("C", "K2") == at(2)
    assert h2.missing_since("C", "K3") == at(1)
    # run 3: B gets K2 then, and loses K3 again: a new stretch for K3.
    _, h3, c3 = one_run(
        store,
        config,
        "r3",
        at(3),
        {"A": ["K1", "K2", "K3", "K4"], "B": ["K1", "K2"], "C": ["K1"]},
    )
    assert c3.gaps["B"] == {"K3", "K4"}
    assert h3.missing_since("B", "K3") == at(3)
    assert h3.missing_since("B", "K4") == at(2)
    assert h3.missing_since("C", "K2") == at(2)
    assert h3.counts()["appeared"] == 1 and h3.counts()["disappeared"] == 1

    timeline = {s.system: s for s in key_timeline(store, "K3").systems}
    assert timeline["A"].present and timeline["A"].first_seen == at(1)
    b = timeline["B"]
    assert (b.present, b.first_seen, b.last_seen, b.missing_since) == (False, at(2), at(2), at(3))
    c = timeline["C"]
    assert (c.present, c.first_seen, c.missing_since) == (False, "", at(1))
    assert c.note == "never seen (in A: a propagation gap)"
    events = key_timeline(store, "K3").events
    assert events == [(at(2), "r2", "B", "appeared"), (at(3), "r3", "B", "disappeared")]


_ANY_KEY = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    before=st.sets(_ANY_KEY, max_size=30),
    after=st.sets(_ANY_KEY, max_size=30),
    peer=st.sets(_ANY_KEY, max_size=30),
)
def test_history_rows_are_the_same_through_json_each_and_bound_rows(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    before: set[str],
    after: set[str],
    peer: set[str],
) -> None:
    """The commit hands SQLite each transition's keys as one JSON array (json_each);
    any key (quotes, backslashes, controls, non-ASCII, digits only) must come back as
    it went in, as one bound row a key does where SQLite lacks json_each."""
    monkeypatch.setattr(state_module, "_KEYS_PER_JSON", 7)  # several statements a group
    stored = []
    for use_json in (True, False):
        folder = Path(tempfile.mkdtemp(dir=tmp_path))
        config = parse_config({}, folder)
        with StateStore.open(folder / "keysync.db") as store:
            store.json_each = use_json  # the fallback, as on an SQLite without JSON
            one_run(store, config, "r1", at(1), {"A": sorted(before), "B": sorted(peer)})
            one_run(store, config, "r2", at(2), {"A": sorted(after), "B": sorted(peer ^ after)})
            with sqlite3.connect(folder / "keysync.db") as db:
                stored.append(db.execute("SELECT * FROM key_history ORDER BY 1, 2, 3").fetchall())
    assert stored[0] == stored[1]
    in_a = {(key, event) for key, system, _, event, _ in stored[0] if system == "A"}
    assert in_a == {(k, "appeared") for k in after - before} | {
        (k, "disappeared") for k in before - after
    }
    assert all(type(key) is str for key, *_ in stored[0])


def test_unchanged_inputs_write_no_history_rows(store: StateStore, config: Config) -> None:
    data = {"A": ["K1", "K2"], "B": ["K1", "X1"]}
    one_run(store, config, "r1", at(1), data)
    _, history, _ = one_run(store, config, "r2", at(2), data)
    assert list(history.rows()) == []
    assert [u.blobs for u in history.system_updates()] == [{}, {}]


def test_a_peer_that_is_unavailable_keeps_its_keys_and_gap_starts(
    store: StateStore, config: Config
) -> None:
    one_run(store, config, "r1", at(1), {"A": ["K1", "K2"], "B": ["K1"], "C": ["K1", "K2"]})
    # r2: B unavailable while A gains K3 and loses K2.
    _, _, c2 = one_run(
        store,
        config,
        "r2",
        at(2),
        {"A": ["K1", "K3"], "B": ["K1"], "C": ["K1", "K2", "K3"]},
        unavailable=["B"],
    )
    assert "B" not in c2.gaps
    assert store.runs()[-1].outcome == "degraded"
    # r3: B is back, unchanged: K3 has been missing from B since A got it (r2).
    _, h3, c3 = one_run(store, config, "r3", at(3), {"A": ["K1", "K3"], "B": ["K1"], "C": ["K1"]})
    assert c3.gaps["B"] == {"K3"}
    assert h3.missing_since("B", "K3") == at(2)
    b_events = [e for e in h3.rows() if e[1] == "B"]
    assert b_events == []  # B did not change: no transition for it
    c_events = sorted((e[0], e[3]) for e in h3.rows() if e[1] == "C")
    assert c_events == [("K2", "disappeared"), ("K3", "disappeared")]


# A brute-force model of the history, checked against the real thing on random runs.

UNIVERSE = [f"K{i}" for i in range(7)]
keysets = st.frozensets(st.sampled_from(UNIVERSE))
run_strategy = st.fixed_dictionaries(
    {
        "A": keysets,
        "B": keysets,
        "C": keysets,
        "B_state": st.sampled_from(["read", "read", "unavailable", "absent"]),
        "C_state": st.sampled_from(["read", "read", "unavailable", "absent"]),
    }
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.lists(run_strategy, min_size=1, max_size=6))
def test_history_matches_a_brute_force_model(runs: list[dict[str, object]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        config = parse_config({}, Path(folder))
        with StateStore.open(Path(folder) / "keysync.db") as store:
            believed: dict[str, set[str]] = {}  # system -> keys at its last read
            gap_start: dict[str, dict[str, int]] = {}  # peer -> key -> run number
            expected_events: list[tuple[str, str, int, str]] = []
            for number, spec in enumerate(runs, start=1):
                data: dict[str, list[str]] = {"A": sorted(spec["A"])}  # type: ignore[call-overload]
                unavailable = []
                for peer in ("B", "C"):
                    state = spec[f"{peer}_state"]
                    if state == "absent":
                        continue
                    data[peer] = sorted(spec[peer])  # type: ignore[call-overload]
                    if state == "unavailable":
                        unavailable.append(peer)
                read = [s for s in data if s not in unavailable]
                for system in read:
                    now_keys = set(data[system])
                    if system in believed:
                        before = believed[system]
                        expected_events += [
                            (k, system, number, "appeared") for k in now_keys - before
                        ]
                        expected_events += [
                            (k, system, number, "disappeared") for k in before - now_keys
                        ]
                    believed[system] = now_keys
                a_now = believed["A"]
                for peer in ("B", "C"):
                    if peer not in believed:
                        continue
                    previous = gap_start.get(peer, {})
                    gap_start[peer] = {k: previous.get(k, number) for k in a_now - believed[peer]}
                _, history, comparison = one_run(
                    store, config, f"r{number}", at(number), data, unavailable=unavailable
                )
                for peer, gaps in comparison.gaps.items():
                    for key in gaps:
                        assert history.missing_since(peer, key) == at(gap_start[peer][key])
            stored = sorted(
                (key, e.system, e.seq, e.event) for key in UNIVERSE for e in store.key_events(key)
            )
            assert stored == sorted(expected_events)
            for key in UNIVERSE:
                for row in key_timeline(store, key).systems:
                    assert row.present == (key in believed[row.system]), (key, row.system)


def test_a_full_disk_in_a_transaction_is_said_as_such_and_changes_nothing(
    store: StateStore, config: Config
) -> None:
    """Seen (failure hunt): a full disk during a run's commit gave a traceback and exit 1:
    after SQLITE_FULL SQLite has rolled back itself, and keysync's ROLLBACK then failed
    with "no transaction is active", which no one-line message knew."""
    one_run(store, config, "r1", at(1), {"A": ["K1"], "B": [f"X{n}" for n in range(3000)]})
    before = store.table_dump()
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full from here on
    with pytest.raises(sqlite3.OperationalError) as raised:  # 3,000 events need new pages
        store.change_status(None, "Active", actor="manual-x", now=at(2))
    assert "full" in str(raised.value)
    assert "cannot use the state database" in str(state_problem(raised.value))
    assert not store._db.in_transaction and store.table_dump() == before


# -------------------------------------------------------------------- audit


def test_audit_rows_are_in_timestamp_order_with_a_global_seq(
    store: StateStore, config: Config
) -> None:
    one_run(store, config, "r1", at(1), {"A": ["K1"], "B": ["X2", "X1"]})
    changes = store.change_status(
        ["X1"], "Active", actor="manual-x", now=at(1), command="keysync registry approve"
    )
    assert [(c.master_key, c.old, c.new, c.changed) for c in changes] == [
        ("X1", "Proposed", "Active", True)
    ]
    rows = list(store.audit_rows())
    assert [r[2] for r in rows] == sorted(r[2] for r in rows)
    assert [(r[1], r[3], r[5]) for r in rows] == [
        ("r1", "key.proposed", "X1"),
        ("r1", "key.proposed", "X2"),
        ("r1", "run.completed", ""),
        ("manual-x", "key.approved", "X1"),
    ]
    assert rows[-1][6] == "master key X1: Proposed -> Active by `keysync registry approve`"
    assert [r[3] for r in store.audit_rows("manual-x")] == ["key.approved"]


@pytest.mark.parametrize("strategy", ["mirror", "namespaced"])
@pytest.mark.parametrize("auto_approve", [False, True])
def test_the_store_records_exactly_the_planned_registry_rows_and_events(
    tmp_path: Path, strategy: str, auto_approve: bool
) -> None:
    """New entries go through SQL (a temporary table, INSERT ... SELECT): the rows and
    the event details it writes are the ones the plan describes, quotes included, in
    the plan's order, across whole and partial batches of the multi-row INSERT."""
    config = parse_config({"provisioning": {"strategy": strategy}}, tmp_path)
    odd = [
        ("Q1", "it's", "2026-01-01T00:00:00Z"),
        ("Q2", "''quoted'' 'twice'", ""),
        ("Q3", "Ünïcødé 鍵 '", "2026-01-02T00:00:00Z"),
        ("Q4", "nul\x00byte", ""),
    ]
    many = [f"N{i:04d}" for i in range(2 * _ENTRIES_PER_INSERT + 7)]
    with StateStore.open(tmp_path / "data" / "keysync.db") as store:
        one_run(store, config, "r1", at(1), {"A": ["K1", "K2"], "B": ["K1", "X1"]})
        seq = store.audit_count()
        data: dict[str, Rows] = {
            "A": ["K1"],
            "B": [("K1", "K1", ""), *odd],
            "C": many,
            "D": ["X1", "Q1"],
        }
        plan, _, _ = one_run(store, config, "r2", at(2), data, auto_approve=auto_approve)
        assert plan.change_events and len(plan.new) > 2 * _ENTRIES_PER_INSERT
        recorded = [row[:2] + row[3:] for row in store.audit_rows(after_seq=seq)]
        assert recorded[:-1] == plan.events
        assert recorded[-1][2] == "run.completed"
        assert sorted(store.load_registry()) == sorted(
            [*plan.changed.values(), *(plan.new_row(e) for e in plan.new.values())]
            + [row for key, row in plan.existing.items() if key not in plan.changed]
        )


def test_manual_changes_check_every_key_first(store: StateStore, config: Config) -> None:
    one_run(store, config, "r1", at(1), {"A": ["K1"], "B": ["X1"]})
    before = store.table_dump()
    with pytest.raises(KeysyncError, match="unknown master key: NOPE") as caught:
        store.change_status(["X1", "NOPE"], "Active", actor="manual-x")
    assert caught.value.exit_code == 2
    assert store.table_dump() == before


def test_approve_all_takes_only_proposed_keys(store: StateStore, config: Config) -> None:
    one_run(store, config, "r1", at(1), {"A": ["K1"], "B": ["X1", "X2", "X3"]})
    store.change_status(["X3"], "Deprecated", actor="manual-1")
    changes = store.change_status(None, "Active", actor="manual-2")
    assert [c.master_key for c in changes] == ["X1", "X2"]
    assert {e.master_key: e.status for e in store.registry_entries()} == {
        "X1": "Active",
        "X2": "Active",
        "X3": "Deprecated",
    }
    again = store.change_status(["X1", "X3"], "Active", actor="manual-3")
    assert [(c.master_key, c.changed) for c in again] == [("X1", False), ("X3", True)]


# --------------------------------------------------------------------- lock

HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from keysync.lock import RunLock
    lock = RunLock.acquire(Path(sys.argv[1]), sys.argv[2])
    print("locked", flush=True)
    time.sleep(60)
    """
)


def _hold_lock(data_dir: Path, run_id: str) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(data_dir), run_id],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_writer_is_refused_with_the_holder_named(tmp_path: Path) -> None:
    holder = _hold_lock(tmp_path, "run-one")
    try:
        with pytest.raises(RunError) as caught:
            RunLock.acquire(tmp_path, "run-two")
        message = str(caught.value)
        assert f"another run (run run-one, pid {holder.pid}, started " in message
        assert f"holds the lock on {tmp_path / 'keysync.db'}" in message
        assert caught.value.exit_code == 3
        seen = RunLock.holder(tmp_path)
        assert seen is not None and (seen.run_id, seen.pid) == ("run-one", holder.pid)
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_killed_run_is_cleared(tmp_path: Path) -> None:
    holder = _hold_lock(tmp_path, "killed-run")
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert RunLock.holder(tmp_path) is None
    lock = RunLock.acquire(tmp_path, "next-run")
    try:
        assert lock.stale is not None
        assert (lock.stale.run_id, lock.stale.pid) == ("killed-run", holder.pid)
    finally:
        lock.release()
    # A clean release leaves nothing stale behind.
    with RunLock.acquire(tmp_path, "third") as third:
        assert third.stale is None


def test_the_lock_is_free_again_after_release(tmp_path: Path) -> None:
    with RunLock.acquire(tmp_path, "r1") as lock:
        assert RunLock.holder(tmp_path) is not None
        assert lock.stale is None
    started = time.monotonic()
    RunLock.acquire(tmp_path, "r2").release()
    assert time.monotonic() - started < 1


def test_audit_rows_stay_in_timestamp_order_when_the_clock_went_back(
    store: StateStore, config: Config
) -> None:
    one_run(store, config, "late", at(9), {"A": ["K1"], "B": ["X1"]})
    one_run(store, config, "early", at(3), {"A": ["K1"], "B": ["X1", "X2"]})
    rows = list(store.audit_rows())
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)
    assert [r[1] for r in rows] == ["early", "early", "late", "late"]
    assert [r[1] for r in store.audit_rows("late")] == ["late", "late"]


@pytest.mark.parametrize(
    ("message", "says"),
    [
        ("attempt to write a readonly database", "make paths.data and keysync.db"),
        ("unable to open database file", "make paths.data and keysync.db"),
        ("database or disk is full", "make room on the disk"),
        ("database is locked", "locked by another program"),
        ("no such column: x", None),  # a bug in keysync: no advice to the user
        ("no such table: access_log", None),
    ],
)
def test_sqlite_errors_a_user_can_fix_get_one_line_and_bugs_do_not(
    message: str, says: str | None
) -> None:
    """Without an error code (Python 3.10, or an exception made by hand) the text decides."""
    line = state_problem(sqlite3.OperationalError(message), Path("/srv/keysync.db"))
    if says is None:
        assert line is None
    else:
        assert line is not None and says in line and "/srv/keysync.db" in line


def test_a_real_sqlite_error_is_told_by_its_code(tmp_path: Path) -> None:
    database = tmp_path / "x.db"
    sqlite3.connect(database).execute("CREATE TABLE t (a)").connection.close()
    database.chmod(0o444)
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError) as raised:
        connection.execute("INSERT INTO t VALUES (1)")
    connection.close()
    if sys.version_info >= (3, 11):  # the code decides there, not the text
        assert raised.value.sqlite_errorcode & 0xFF == 8  # SQLITE_READONLY
        coded = sqlite3.OperationalError("an unrelated text")
        coded.sqlite_errorcode = 5  # type: ignore[attr-defined]
        assert "locked by another program" in (state_problem(coded) or "")
    line = state_problem(raised.value)
    assert line is not None and line.startswith("cannot use the state database (")
    with pytest.raises(sqlite3.OperationalError) as raised:
        sqlite3.connect(database).execute("SELECT nope FROM t")
    assert state_problem(raised.value) is None
