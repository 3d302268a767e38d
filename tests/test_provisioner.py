"""The provisioner: proposals, lifecycle, dry-run marks, and the registry report rows.

Runs go through the real index, comparison, planner and a real SQLite file.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keysync.actor import os_user
from keysync.comparison import Comparison, compare
from keysync.config import Config, parse_config
from keysync.messages import KeyBatch
from keysync.stages.merger import KeyIndex
from keysync.stages.provisioner import (
    DRY_RUN_COLUMN,
    ProvisioningPlan,
    newest_stamp,
    plan_provisioning,
)
from keysync.state import REGISTRY_COLUMNS, StateStore

Rows = Sequence[Any]


def comparison_of(data: Mapping[str, Rows], unavailable: Sequence[str] = ()) -> Comparison:
    """``{system: [key | (key, raw, last_seen_at)]}``; unavailable systems are read as empty."""
    index = KeyIndex(list(data))
    for system, rows in data.items():
        rows = [] if system in unavailable else rows
        parsed = [(r, r, "") if isinstance(r, str) else r for r in rows]
        keys = [k for k, _, _ in parsed]
        index.add(
            KeyBatch.of(
                system=system,
                seq=0,
                start_offset=0,
                end_offset=1,
                first_line=2,
                next_line=2 + len(keys),
                keys=keys,
                raw_changes=[(i, raw) for i, (k, raw, _) in enumerate(parsed) if raw != k],
                lines=list(range(2, 2 + len(keys))),
                timestamps=[stamp for _, _, stamp in parsed],
                rejected=[],
                rows_read=len(keys),
            )
        )
    return compare(index, "A", {s: "unreadable" for s in unavailable})


def at(n: int) -> str:
    return f"2026-02-{n:02d}T02:00:00Z"


class Runs:
    """Consecutive runs against one store and config."""

    def __init__(self, folder: Path, **provisioning: Any) -> None:
        self.config: Config = parse_config({"provisioning": provisioning}, folder)
        self.store = StateStore.open(folder / "keysync.db")
        self.count = 0

    def run(
        self,
        data: Mapping[str, Rows],
        *,
        unavailable: Sequence[str] = (),
        auto_approve: bool = False,
        dry_run: bool = False,
        outcome: str | None = None,
    ) -> ProvisioningPlan:
        self.count += 1
        run_id, now = f"r{self.count}", at(self.count)
        comparison = comparison_of(data, unavailable)
        self.store.begin_run(run_id, now, "full", {"dry_run": dry_run})
        plan = plan_provisioning(
            self.store,
            self.config,
            comparison,
            run_id=run_id,
            now=now,
            auto_approve=auto_approve,
            dry_run=dry_run,
        )
        if outcome == "failed":
            self.store.end_run(run_id, outcome="failed", message="boom")
            return plan
        self.store.commit_run(
            run_id,
            ended_at=now,
            outcome="degraded" if unavailable else "completed",
            exit_code=0,
            plan=plan,
            dry_run=dry_run,
        )
        return plan

    def registry(self) -> dict[str, tuple[str, ...]]:
        return {e.master_key: e.spec_row() for e in self.store.registry_entries()}

    def statuses(self) -> dict[str, str]:
        return {e.master_key: e.status for e in self.store.registry_entries()}

    def events(self, run_id: str | None = None) -> list[tuple[str, str, str, str]]:
        return [(r[3], r[4], r[5], r[6]) for r in self.store.audit_rows(run_id)]


@pytest.fixture
def runs(tmp_path: Path) -> Runs:
    return Runs(tmp_path, deprecate_after_runs=2)


def test_mirror_proposes_one_master_key_per_key(runs: Runs) -> None:
    plan = runs.run(
        {
            "A": ["K1"],
            "B": ["K1", ("X1", "x_1", "2026-01-05T00:00:00Z")],
            "C": [("X1", "X1 ", "2026-01-09T00:00:00Z"), ("X2", "x.2", "")],
        }
    )
    assert runs.registry() == {
        "X1": (
            "X1",
            "Proposed",
            "mirror",
            "B",
            "x_1",
            "B;C",
            at(1),
            at(1),
            "2026-01-09T00:00:00Z",
            "r1",
            "r1",
        ),
        # No input timestamp: last_seen_at stays empty, as in the diff reports.
        "X2": ("X2", "Proposed", "mirror", "C", "x.2", "C", at(1), at(1), "", "r1", "r1"),
    }
    assert (plan.master_key_for("C", "X1"), plan.status_for("C", "X1")) == ("X1", "Proposed")
    assert runs.events("r1")[:2] == [
        ("key.proposed", "B", "X1", "master key X1 (mirror) proposed for B key 'x_1'; seen in B;C"),
        ("key.proposed", "C", "X2", "master key X2 (mirror) proposed for C key 'x.2'; seen in C"),
    ]


def test_namespaced_gives_one_master_key_per_system_and_key(tmp_path: Path) -> None:
    runs = Runs(tmp_path, strategy="namespaced", namespace_separator="::")
    plan = runs.run({"A": ["K1"], "B": ["X1", "K1"], "C": ["X1", "X2"]})
    assert sorted(runs.registry()) == ["B::X1", "C::X1", "C::X2"]
    row = runs.registry()["C::X1"]
    assert (row[3], row[5]) == ("C", "C")  # source_system, seen_in: its own system
    assert plan.master_key_for("B", "X1") == "B::X1"
    assert plan.status_for("B", "X1") == "Proposed"
    # B drops X1: only B's entry loses its seen_in.
    runs.run({"A": ["K1"], "B": ["K1"], "C": ["X1", "X2"]})
    assert runs.registry()["B::X1"][5] == ""
    assert runs.registry()["C::X1"][5] == "C"


def test_a_key_proposed_earlier_is_not_proposed_again(runs: Runs) -> None:
    runs.run({"A": ["K1"], "B": ["X1"]})
    runs.store.change_status(["X1"], "Deprecated", actor="manual-1")
    plan = runs.run({"A": ["K1"], "B": ["X1"], "C": ["X1"]})
    assert plan.counts()["proposed"] == 0
    assert runs.statuses() == {"X1": "Deprecated"}
    assert [e[0] for e in runs.events("r2")] == ["key.seen_in_changed", "run.completed"]


def test_auto_approve_activates_new_keys_and_names_the_switch(tmp_path: Path) -> None:
    runs = Runs(tmp_path)
    runs.run({"A": ["K1"], "B": ["X1"]})
    runs.run({"A": ["K1"], "B": ["X1", "X2"]}, auto_approve=True)
    # X1 was proposed earlier for review: auto-approve applies to new keys only.
    assert runs.statuses() == {"X1": "Proposed", "X2": "Active"}
    user = os_user()
    assert (
        "key.approved",
        "B",
        "X2",
        f"master key X2: Proposed -> Active by --auto-approve (user {user})",
    ) in runs.events("r2")
    configured = Runs(tmp_path / "other", auto_approve=True)
    plan = configured.run({"A": ["K1"], "B": ["X9"]})
    assert plan.status_for("B", "X9") == "Active"
    assert configured.events("r1")[1][3].endswith(f"by provisioning.auto_approve (user {user})")


def test_active_keys_unseen_for_n_successful_runs_are_deprecated(runs: Runs) -> None:
    runs.run({"A": ["K1"], "B": ["X1", "X2"]}, auto_approve=True)
    runs.run({"A": ["K1"], "B": ["X2"]})  # X1 unseen: 1
    runs.run({"A": ["K1"], "B": ["X2"]}, dry_run=True)  # dry runs do not count
    runs.run({"A": ["K1"], "B": ["X2"]}, outcome="failed")  # nor failed ones
    assert runs.statuses()["X1"] == "Active"
    runs.run({"A": ["K1"], "B": ["X2"]})  # unseen: 2 -> Deprecated
    assert runs.statuses() == {"X1": "Deprecated", "X2": "Active"}
    assert (
        "key.deprecated",
        "B",
        "X1",
        "master key X1: Active -> Deprecated: seen in no system for 2 successful runs "
        "(provisioning.deprecate_after_runs = 2)",
    ) in runs.events("r5")
    # A Deprecated key seen again stays Deprecated, and says so.
    runs.run({"A": ["K1"], "B": ["X1", "X2"]})
    assert runs.statuses()["X1"] == "Deprecated"
    assert [e[0] for e in runs.events("r6")] == ["key.reappeared", "run.completed"]


def test_an_unavailable_holder_does_not_make_a_key_unseen(runs: Runs) -> None:
    runs.run({"A": ["K1"], "B": ["K1"], "C": ["X1"]}, auto_approve=True)
    for _ in range(3):
        runs.run({"A": ["K1"], "B": ["K1"], "C": ["X1"]}, unavailable=["C"])
    assert runs.statuses() == {"X1": "Active"}
    assert runs.registry()["X1"][5] == "C"


def test_a_manual_approval_restarts_the_deprecation_count(runs: Runs) -> None:
    runs.run({"A": ["K1"], "B": ["X1"]})
    runs.run({"A": ["K1"], "B": []})
    runs.run({"A": ["K1"], "B": []})
    assert runs.statuses() == {"X1": "Proposed"}  # Proposed keys are never auto-deprecated
    runs.store.change_status(["X1"], "Active", actor="manual-1")
    runs.run({"A": ["K1"], "B": []})
    assert runs.statuses() == {"X1": "Active"}
    runs.run({"A": ["K1"], "B": []})
    assert runs.statuses() == {"X1": "Deprecated"}


def test_a_key_that_appears_in_a_is_resolved_and_keeps_its_entry(runs: Runs) -> None:
    runs.run({"A": ["K1"], "B": ["X1"]}, auto_approve=True)
    plan = runs.run({"A": ["K1", "X1"], "B": ["X1"]})
    assert plan.counts()["resolved"] == 1
    assert runs.registry()["X1"][1] == "Active"
    assert runs.registry()["X1"][5] == "A;B"
    assert runs.events("r2")[0] == (
        "key.resolved",
        "B",
        "X1",
        "master key X1: X1 now appears in A; entry kept (Active)",
    )
    runs.run({"A": ["K1", "X1"], "B": ["X1"]})
    assert [e[0] for e in runs.events("r3")] == ["run.completed"]  # resolved only once
    runs.run({"A": ["K1"], "B": ["X1"]})
    assert [e[0] for e in runs.events("r4")][:1] == ["key.unresolved"]


def test_last_seen_at_is_the_newest_input_timestamp(runs: Runs) -> None:
    runs.run({"A": ["K1"], "B": [("X1", "X1", "2026-01-01T00:00:00Z")]})
    runs.run(
        {
            "A": ["K1"],
            "B": [("X1", "X1", "2026-01-03T00:00:00Z")],
            "C": [("X1", "X1", "2026-01-02T00:00:00Z")],
        }
    )
    row = runs.registry()["X1"]
    assert (row[5], row[7], row[8], row[10]) == ("B;C", at(2), "2026-01-03T00:00:00Z", "r2")
    # Only the timestamp moves: last_seen_at follows, updated_at/updated_run do not.
    runs.run(
        {
            "A": ["K1"],
            "B": [("X1", "X1", "2026-01-04T00:00:00Z")],
            "C": [("X1", "X1", "2026-01-02T00:00:00Z")],
        }
    )
    row = runs.registry()["X1"]
    assert (row[7], row[8], row[10]) == (at(2), "2026-01-04T00:00:00Z", "r2")


def test_dry_run_marks_what_would_change_and_writes_nothing(runs: Runs) -> None:
    runs.run({"A": ["K1"], "B": ["X1", "X2"]}, auto_approve=True)
    runs.run({"A": ["K1"], "B": ["X2"]})
    before = runs.store.table_dump(exclude=["runs"])
    plan = runs.run({"A": ["K1"], "B": ["X2", "X3"]}, dry_run=True)
    assert runs.store.table_dump(exclude=["runs"]) == before
    assert plan.registry_columns() == [*REGISTRY_COLUMNS, DRY_RUN_COLUMN]
    rows = {row[0]: row for row in plan.registry_rows()}
    assert rows["X1"][1] == "Deprecated"
    assert rows["X1"][-1] == "would change status Active -> Deprecated"
    assert rows["X2"][-1] == ""
    assert rows["X3"][1] == "Proposed" and rows["X3"][-1] == "would add (Proposed)"
    assert plan.status_for("B", "X3") == "Proposed"
    assert runs.statuses() == {"X1": "Active", "X2": "Active"}


def test_a_normal_run_has_exactly_the_spec_columns(runs: Runs) -> None:
    plan = runs.run({"A": ["K1"], "B": ["X1"]})
    assert plan.registry_columns() == list(REGISTRY_COLUMNS)
    assert [len(row) for row in plan.registry_rows()] == [11]


keys = st.sampled_from([f"K{i}" for i in range(6)] + ["é-1", "Z9", "a", "B:K1"])
systems_data = st.fixed_dictionaries(
    {"A": st.lists(keys, max_size=5), "B": st.lists(keys, max_size=5), "C": st.lists(keys)}
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(systems_data, st.booleans(), st.booleans(), st.sampled_from(["", "B", "C"])),
        min_size=1,
        max_size=5,
    ),
    st.sampled_from(["mirror", "namespaced"]),
)
def test_the_registry_report_equals_the_registry_after_commit(
    run_specs: list[tuple[dict[str, list[str]], bool, bool, str]], strategy: str
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        runs = Runs(Path(folder), strategy=strategy, deprecate_after_runs=1)
        for data, auto, dry, down in run_specs:
            before = runs.registry()
            plan = runs.run(
                data, auto_approve=auto, dry_run=dry, unavailable=[down] if down else []
            )
            rows = [tuple(row) for row in plan.registry_rows()]
            assert [r[0] for r in rows] == sorted(r[0] for r in rows)
            if dry:
                assert runs.registry() == before
                rows = [r[:-1] for r in rows]
            assert rows == list(runs.registry().values()) or dry
            # Every out-of-authority (system, key) has its master key in the report.
            keys_in_report = {r[0]: r[1] for r in rows}
            for system in ("B", "C"):
                if system == down:
                    continue
                for key in set(data[system]) - set(data["A"]):
                    master_key = plan.master_key_for(system, key)
                    assert keys_in_report[master_key] == plan.status_for(system, key)
        runs.store.close()


@pytest.mark.parametrize("strategy", ["mirror", "namespaced"])
def test_recorded_audit_events_are_the_planned_ones(tmp_path: Path, strategy: str) -> None:
    """The store writes proposal details in SQL; they must read exactly as planned."""
    runs = Runs(tmp_path, strategy=strategy)
    data = {
        "A": ["K1"],
        "B": [("X1", 'it\'s "x1"', "2026-01-01T00:00:00Z"), ("X2", "x|2", "")],
        "C": [("X1", "'; DROP TABLE runs; --", ""), "X3"],
    }
    plan = runs.run(data, auto_approve=True)
    recorded = [(r[0], r[1], r[3], r[4], r[5], r[6]) for r in runs.store.audit_rows("r1")]
    assert recorded[:-1] == plan.events
    assert recorded[-1][2] == "run.completed"
    assert "proposed for B key 'it''s \"x1\"'; seen in B" in recorded[0][5]
    assert [row[1] for row in plan.registry_rows()] == ["Active"] * len(runs.registry())
    assert [tuple(row) for row in plan.registry_rows()] == list(runs.registry().values())


# ------------------------------------------------------------- newest last_seen_at


@pytest.mark.parametrize(
    ("stamps", "newest"),
    [
        (["2026-10-01T10:00:00+05:00", "2026-10-01T06:00:00Z"], "2026-10-01T06:00:00Z"),
        (["2026-10-01T06:00:00Z", "2026-10-01T06:00:00.500Z"], "2026-10-01T06:00:00.500Z"),
        (["2026-10-01 07:00:00", "2026-10-01T06:00:00Z"], "2026-10-01 07:00:00"),  # UTC
        (["yesterday", "2026-10-02T00:00:00Z"], "2026-10-02T00:00:00Z"),
        (["2026-13-45T99:99:99Z", "2026-10-02T00:00:00Z"], "2026-10-02T00:00:00Z"),
        (["2026-02-30T00:00:00Z", "2026-02-01T00:00:00Z"], "2026-02-01T00:00:00Z"),
        (["2028-02-29T00:00:00Z", "2028-02-01T00:00:00Z"], "2028-02-29T00:00:00Z"),
        (["2026-10-01T06:00:00.5Z", "2026-10-01T06:00:00.4Z"], "2026-10-01T06:00:00.5Z"),
        (["2026-10-01T10:30+0500", "2026-10-01T05:00:00Z"], "2026-10-01T10:30+0500"),
        (["2026-10-01T06:00", "2026-10-01T05:59:59Z"], "2026-10-01T06:00"),
        (["2026-10-01T25:00:00Z", "2026-10-01T05:00:00+00:00"], "2026-10-01T05:00:00+00:00"),
        (["=1+1", "", "2026-10-02"], "2026-10-02"),
        (["2026-10-01T10:30+05", "2026-10-01T05:00:00Z"], "2026-10-01T10:30+05"),
        (["20261001T060000Z", "2026-10-01T05:59:59Z"], "20261001T060000Z"),
        (["20261001T1030+0530", "2026-10-01T05:01Z"], "2026-10-01T05:01Z"),
        (["20261002", "2026-10-01T23:00Z"], "20261002"),
        (["2026-1001", "2026-10-01T23:00Z"], "2026-10-01T23:00Z"),  # a mix: no date
        (["20261001T25", "2026-09-01"], "2026-09-01"),
        (["2026-10-01-05", "2026-09-01"], "2026-09-01"),  # an offset needs a time
        (["2026-10-01T00:00+99", "2026-09-01"], "2026-09-01"),  # no 99-hour offset
        (["2026-10-01T10:00+0560", "2026-09-01"], "2026-09-01"),
        (["2026-10-01T06:00:00Z", "2026-10-01T11:00:00+05:00"], "2026-10-01T06:00:00Z"),
        (["", ""], ""),
        (["garbage", "also garbage"], "garbage"),
    ],
)
def test_newest_stamp_compares_instants_not_text(stamps: list[str], newest: str) -> None:
    assert newest_stamp(stamps) == newest


@given(
    st.lists(
        st.tuples(
            st.datetimes(
                min_value=datetime(2000, 1, 1), max_value=datetime(2099, 1, 1), timezones=st.none()
            ),
            st.sampled_from([0, 60, -330, 345]),  # offsets in minutes
            st.sampled_from(["Z", "offset", "none", "fraction"]),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_the_newest_of_any_written_forms_is_the_latest_instant(
    moments: list[tuple[datetime, int, str]],
) -> None:
    stamps, instants = [], []
    for moment, minutes, form in moments:
        utc = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
        local = utc.replace(tzinfo=timezone.utc).astimezone(timezone(timedelta(minutes=minutes)))
        if form == "Z":
            stamps.append(utc.strftime("%Y-%m-%dT%H:%M:%SZ"))
            utc = utc.replace(microsecond=0)
        elif form == "fraction":
            stamps.append(utc.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z")
        elif form == "none":
            stamps.append(utc.isoformat(timespec="milliseconds"))
        else:
            stamps.append(local.isoformat(timespec="milliseconds"))
        instants.append(utc)
    chosen = stamps[instants.index(max(instants))]
    assert newest_stamp(stamps) == chosen
