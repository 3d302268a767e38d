"""State through the command line, as a user drives it: real files, real processes, real kills.

Every test runs ``python -m keysync`` in a subprocess over CSV inputs written
here, and checks what a user sees (exit codes, messages, reports, tables) and
what the database holds (read with plain ``sqlite3``).
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import pwd
import re
import select
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import FullDisk, RunKeysync

from keysync.actor import os_user

SYSTEMS = ("A", "B", "C")
Inputs = Mapping[str, Sequence[str | tuple[str, str]]]
USER = pwd.getpwuid(os.geteuid()).pw_name  # the name the audit trail gives manual changes


def write_inputs(folder: Path, inputs: Inputs) -> None:
    """``{system: [raw key | (raw key, last_seen_at)]}`` -> ``folder/input/<system>.csv``."""
    (folder / "input").mkdir(parents=True, exist_ok=True)
    for system, rows in inputs.items():
        with open(folder / "input" / f"{system}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["key", "name", "last_seen_at"])
            for row in rows:
                raw, stamp = (row, "2026-01-01T00:00:00Z") if isinstance(row, str) else row
                writer.writerow([raw, f"name of {raw}", stamp])


@pytest.fixture
def project(tmp_path: Path, write_config: Callable[..., Path]) -> Callable[..., Path]:
    """Write a config for systems A, B, C under tmp_path; returns its path.

    Runs are serial (``parallel: false``, the same output by design and about
    twice as fast to start) except where ``parallel=True`` asks for the real
    multi-process pipeline: the kill and concurrency tests.
    """

    def make(parallel: bool = False, **provisioning: Any) -> Path:
        return write_config(
            tmp_path,
            sources={s: {"path": f"./input/{s}.csv"} for s in SYSTEMS},
            provisioning=provisioning,
            processing={"parallel": parallel, "workers": 1, "checkpoint_interval": 1000},
        )

    return make


def read_report(path: Path) -> list[dict[str, str]]:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line[:1] != "#"]
    return list(csv.DictReader(lines))


def db_rows(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    connection = sqlite3.connect(tmp_path / "data" / "keysync.db")
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def state_dump(tmp_path: Path, *, with_runs: bool = False) -> list[str]:
    """Every row of every table as SQL text; the runs table only if asked."""
    connection = sqlite3.connect(tmp_path / "data" / "keysync.db")
    try:
        return [
            line
            for line in connection.iterdump()
            if with_runs or '"runs"' not in line.split("VALUES")[0]
        ]
    finally:
        connection.close()


def statuses(tmp_path: Path) -> dict[str, str]:
    return dict(db_rows(tmp_path, "SELECT master_key, status FROM master_keys"))


def ok(result: subprocess.CompletedProcess[str], code: int = 0) -> subprocess.CompletedProcess[str]:
    assert result.returncode == code, result.stderr[-2000:]
    return result


# ------------------------------------------------------------ consecutive runs


def test_the_summary_says_what_the_run_did_to_the_registry_and_what_waits(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen: the summary ended with the reports' folder; that a run proposed 1,525 master
    keys, or deprecated approved ones, was only in a long log line on stderr."""
    project(deprecate_after_runs=1)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1", "X-2"], "C": ["K-1"]})
    first = ok(keysync("run")).stdout.splitlines()
    assert first[-2] == (
        "registry: 2 proposed; 2 master keys: 2 Proposed, 0 Active, 0 Deprecated "
        "(review: keysync registry list --status Proposed)"
    )
    ok(keysync("-q", "registry", "approve", "X-1"))
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-2"], "C": ["K-1", "X-3"]})
    dry = ok(keysync("run", "--dry-run")).stdout.splitlines()
    assert dry[-2] == (
        "registry (dry run, nothing saved): would be 1 proposed, 1 deprecated, "
        "1 seen_in changed; 3 master keys: 2 Proposed, 0 Active, 1 Deprecated"
    )
    ok(keysync("-q", "run", "--auto-approve"))
    summary = json.loads((tmp_path / "output" / "summary.json").read_text())
    assert summary["registry"] == {
        "proposed": 1,
        "approved": 1,
        "deprecated": 1,
        "resolved": 0,
        "unresolved": 0,
        "reappeared": 0,
        "seen_in_changed": 1,
        "registry_total": 3,
        "by_status": {"Proposed": 1, "Active": 1, "Deprecated": 1},
    }
    assert ok(keysync("run")).stdout.splitlines()[-2] == (
        "registry: no change; 3 master keys: 1 Proposed, 1 Active, 1 Deprecated "
        "(review: keysync registry list --status Proposed)"
    )


def test_three_runs_give_statuses_history_and_missing_since(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    project(deprecate_after_runs=5)
    write_inputs(
        tmp_path,
        {
            "A": ["CUST-1", "CUST-2", "CUST-3"],
            "B": ["cust_1", ("X-1", "2026-01-02T00:00:00Z")],
            "C": ["CUST-1", "CUST-2", "x.1", "X-2"],
        },
    )
    ok(keysync("-q", "run"))
    missing = read_report(tmp_path / "output" / "diff_missing_from_system.csv")
    first_run_time = missing[0]["missing_since"]
    assert {(r["system"], r["key"]) for r in missing} == {
        ("B", "CUST-2"),
        ("B", "CUST-3"),
        ("C", "CUST-3"),
    }
    in_a = read_report(tmp_path / "output" / "diff_missing_in_A.csv")
    assert [
        (r["key"], r["system"], r["proposed_master_key"], r["registry_status"]) for r in in_a
    ] == [
        ("X-1", "B", "X-1", "Proposed"),
        ("X-1", "C", "X-1", "Proposed"),
        ("X-2", "C", "X-2", "Proposed"),
    ]
    assert in_a[0]["last_seen_at"] == "2026-01-02T00:00:00Z"  # from the input

    time.sleep(1.1)  # a new second: the next run's time differs
    ok(keysync("registry", "approve", "X-1"))
    write_inputs(
        tmp_path,
        {
            "A": ["CUST-1", "CUST-2", "CUST-3", "CUST-4"],
            "B": ["CUST-1", "CUST-3", "X-1"],
            "C": ["CUST-1", "X-2"],
        },
    )
    ok(keysync("-q", "run"))
    missing = {
        (r["system"], r["key"]): r["missing_since"]
        for r in read_report(tmp_path / "output" / "diff_missing_from_system.csv")
    }
    second_run_time = missing[("B", "CUST-4")]
    assert second_run_time > first_run_time
    assert missing == {
        ("B", "CUST-2"): first_run_time,  # the same stretch continues
        ("B", "CUST-4"): second_run_time,  # new in A
        ("C", "CUST-2"): second_run_time,  # C lost it
        ("C", "CUST-3"): first_run_time,
        ("C", "CUST-4"): second_run_time,
    }

    time.sleep(1.1)
    write_inputs(
        tmp_path,
        {
            "A": ["CUST-1", "CUST-2", "CUST-3", "CUST-4", "X-2"],
            "B": ["CUST-1", "CUST-2", "CUST-4", "X-1"],
            "C": ["CUST-1", "X-2"],
        },
    )
    ok(keysync("-q", "run"))
    missing = {
        (r["system"], r["key"]): r["missing_since"]
        for r in read_report(tmp_path / "output" / "diff_missing_from_system.csv")
    }
    third_run_time = missing[("B", "CUST-3")]
    assert third_run_time > second_run_time
    assert missing[("C", "CUST-2")] == second_run_time
    assert missing[("C", "CUST-3")] == first_run_time
    assert statuses(tmp_path) == {"X-1": "Active", "X-2": "Proposed"}
    registry = {
        r["master_key"]: r for r in read_report(tmp_path / "output" / "master_key_registry.csv")
    }
    assert registry["X-2"]["seen_in"] == "A;C"  # resolved: it is in A now
    events = ok(keysync("audit", "--json")).stdout
    kinds = [(e["event"], e["key"]) for e in json.loads(events)]
    assert ("key.resolved", "X-2") in kinds and ("key.approved", "X-1") in kinds

    history = ok(keysync("history", "cust_3")).stdout
    assert "history of CUST-3 (normalized from 'cust_3')" in history
    lines = {line.split()[0]: line for line in history.splitlines()[2:5]}
    assert "present" in lines["A"]
    runs = [r["run_id"] for r in json.loads(ok(keysync("runs", "--json")).stdout)]
    # B got CUST-3 in run 2 and lost it in run 3: first seen, last seen, missing since.
    assert lines["B"].split()[1:] == [
        "missing",
        "(in",
        "A:",
        "a",
        "propagation",
        "gap)",
        second_run_time,
        f"({runs[1]})",
        second_run_time,
        f"({runs[1]})",
        third_run_time,
        f"({runs[2]})",
    ]
    timeline = json.loads(ok(keysync("history", "CUST-3", "--json")).stdout)
    c = next(s for s in timeline["systems"] if s["system"] == "C")
    # C never had CUST-3: never seen, and a gap since A had it (run 1).
    assert (c["present"], c["first_seen"], c["missing_since"]) == (False, "", first_run_time)
    assert [(e["system"], e["event"], e["run_id"]) for e in timeline["events"]] == [
        ("B", "appeared", runs[1]),
        ("B", "disappeared", runs[2]),
    ]


def test_a_gap_opened_while_the_peer_was_not_read_starts_in_that_run(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """docs/state.md "missing since": the stretch starts when A has the key and B, as last
    read, lacks it; an unread run counts with B's last known keys."""
    project()
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["K-1"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    write_inputs(tmp_path, {"A": ["K-1", "K-2"]})
    kept = (tmp_path / "input" / "B.csv").read_bytes()
    (tmp_path / "input" / "B.csv").unlink()
    ok(keysync("-q", "run"), code=4)  # B unavailable: nothing reported missing from it
    assert "B" not in {
        r["system"] for r in read_report(tmp_path / "output" / "diff_missing_from_system.csv")
    }
    (tmp_path / "input" / "B.csv").write_bytes(kept)
    ok(keysync("-q", "run"))
    second = db_rows(tmp_path, "SELECT COALESCE(observed_at, started_at) FROM runs WHERE seq = 2")
    gaps = read_report(tmp_path / "output" / "diff_missing_from_system.csv")
    assert {(r["system"], r["key"]): r["missing_since"] for r in gaps} == {
        ("B", "K-2"): second[0][0],
        ("C", "K-2"): second[0][0],
    }


def test_history_marks_a_system_taken_out_of_the_config(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path], write_config: Any
) -> None:
    project()
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["K-1"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    write_config(  # C is dropped from the config; its history stays
        tmp_path,
        sources={s: {"path": f"./input/{s}.csv"} for s in ("A", "B")},
        processing={"parallel": False, "workers": 1},
    )
    write_inputs(tmp_path, {"A": ["K-1", "K-2"]})
    ok(keysync("-q", "run"))
    shown = ok(keysync("history", "K-2")).stdout
    (row,) = [line for line in shown.splitlines() if line.startswith("C ")]
    assert "(not in the config)" in row
    assert not [line for line in shown.splitlines() if line.startswith("B ") and "config" in line]
    data = json.loads(ok(keysync("history", "K-2", "--json")).stdout)
    assert {s["system"]: s["configured"] for s in data["systems"]} == {
        "A": True,
        "B": True,
        "C": False,
    }


def test_a_change_of_the_configured_systems_or_the_lifecycle_is_an_audit_event(
    tmp_path: Path, keysync: RunKeysync, write_config: Any
) -> None:
    """Seen (audit review): with C taken out of the config, the next run deprecated Y-1 as
    "seen in no system" while input/C.csv still held it; nothing in the trail said why."""

    def configure(systems: Sequence[str], after: int) -> None:
        write_config(
            tmp_path,
            sources={s: {"path": f"./input/{s}.csv"} for s in systems},
            provisioning={"deprecate_after_runs": after, "auto_approve": True},
            processing={"parallel": False, "workers": 1},
        )

    def changes() -> list[str]:
        query = "SELECT run_id, detail FROM audit_events WHERE event = 'settings.changed'"
        return [detail for _, detail in db_rows(tmp_path, query + " ORDER BY seq")]

    configure(["A", "B", "C"], 2)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["K-1"], "C": ["K-1", "Y-1"]})
    ok(keysync("-q", "run"))
    ok(keysync("-q", "run"))
    configure(["A", "C", "B"], 2)  # the peers' order means nothing
    ok(keysync("-q", "run"))
    assert changes() == []
    configure(["A", "B"], 1)
    ok(keysync("-q", "run"))
    runs = [r["run_id"] for r in json.loads(ok(keysync("runs", "--json")).stdout)]
    assert changes() == [
        f"the settings changed since run {runs[2]}: provisioning.deprecate_after_runs 2 -> 1, "
        'sources "A,B,C" -> "A,B"; C taken out of the config: it holds nothing in the '
        "registry from this run on, and a master key seen in no other system counts towards "
        "provisioning.deprecate_after_runs"
    ]
    assert statuses(tmp_path) == {"Y-1": "Deprecated"}  # the event comes before the expiry
    (seq,) = db_rows(tmp_path, "SELECT seq FROM audit_events WHERE event = 'settings.changed'")
    (later,) = db_rows(tmp_path, "SELECT seq FROM audit_events WHERE event = 'key.deprecated'")
    assert seq < later
    configure(["B", "A", "C"], 1)
    ok(keysync("-q", "run"))
    assert changes()[-1].endswith(
        '"B,A,C"; C added to the config: read from this run on; the authority (the first '
        "source) is B, was A"
    )


def test_a_change_of_a_key_column_is_an_audit_event(
    tmp_path: Path, keysync: RunKeysync, write_config: Any
) -> None:
    """Seen (hunt): `sources.B.key_column: key -> id` gave every key of B another value,
    proposed each as a master key, and nothing in the trail said why."""

    def configure(column: str) -> None:
        sources: dict[str, Any] = {s: {"path": f"./input/{s}.csv"} for s in SYSTEMS}
        sources["B"]["key_column"] = column
        write_config(tmp_path, sources=sources, processing={"parallel": False, "workers": 1})

    write_inputs(tmp_path, {s: ["K-1"] for s in SYSTEMS})
    configure("key")
    ok(keysync("-q", "run"))
    configure("name")  # write_inputs' second column: "name of K-1"
    ok(keysync("-q", "run"))
    runs = [r["run_id"] for r in json.loads(ok(keysync("runs", "--json")).stdout)]
    query = "SELECT run_id, detail FROM audit_events WHERE event = 'settings.changed'"
    assert db_rows(tmp_path, query) == [
        (
            runs[1],
            f'the settings changed since run {runs[0]}: sources.B.key_column "key" -> "name"; '
            "B read from another key column: its keys are those of the new column, and a "
            "master key of the old column's keys seen in no other system counts towards "
            "provisioning.deprecate_after_runs",
        )
    ]


def test_dry_run_leaves_the_database_unchanged_but_the_run_record(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    project()
    write_inputs(tmp_path, {"A": ["K-1", "K-2"], "B": ["K-1", "X-1"], "C": ["K-2"]})
    ok(keysync("-q", "run"))
    before = state_dump(tmp_path)
    runs_before = db_rows(tmp_path, "SELECT * FROM runs ORDER BY seq")
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1", "X-2"], "C": ["X-3", "K-2"]})
    ok(keysync("-q", "run", "--dry-run", "--auto-approve"))
    assert state_dump(tmp_path) == before
    runs_after = db_rows(tmp_path, "SELECT * FROM runs ORDER BY seq")
    assert runs_after[:-1] == runs_before
    assert runs_after[-1][6] == 1 and runs_after[-1][7] == "completed"  # dry_run, outcome
    registry = read_report(tmp_path / "output" / "master_key_registry.csv")
    marks = {r["master_key"]: (r["status"], r["dry_run_change"]) for r in registry}
    assert marks == {
        "K-2": ("Active", "would add (Active)"),
        "X-1": ("Proposed", ""),
        "X-2": ("Active", "would add (Active)"),
        "X-3": ("Active", "would add (Active)"),
    }
    assert "dry run" in (tmp_path / "output" / "master_key_registry.csv").read_text()
    assert statuses(tmp_path) == {"X-1": "Proposed"}
    # The audit log lists the events the dry run would record, and its header says so.
    dry_audit = (tmp_path / "output" / "audit_log.csv").read_text().splitlines()
    assert (
        "# description: every run and registry decision of all runs, by timestamp and seq "
        "(dry run: the rows with an empty seq are what it would record; nothing of them was saved)"
    ) in dry_audit
    assert any(",,key.proposed," in line for line in dry_audit)
    ok(keysync("-q", "run"))
    real_audit = (tmp_path / "output" / "audit_log.csv").read_text().splitlines()
    assert [line for line in real_audit if line.startswith("# description: ")] == [
        "# description: every run and registry decision of all runs, by timestamp and seq"
    ]
    assert not any(",,key." in line for line in real_audit)


def test_auto_approve_activates_new_master_keys(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    project()
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1", "X-2"], "C": ["K-1"]})
    ok(keysync("-q", "run", "--auto-approve"))
    assert statuses(tmp_path) == {"X-1": "Proposed", "X-2": "Active"}
    in_a = read_report(tmp_path / "output" / "diff_missing_in_A.csv")
    assert {r["key"]: r["registry_status"] for r in in_a} == {"X-1": "Proposed", "X-2": "Active"}
    listed = ok(keysync("registry", "list", "--status", "active")).stdout
    assert "X-2" in listed and "X-1" not in listed


def test_active_keys_are_deprecated_after_n_runs_unseen(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    project(deprecate_after_runs=2, auto_approve=True)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1", "X-2"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-2"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    assert statuses(tmp_path) == {"X-1": "Active", "X-2": "Active"}
    ok(keysync("-q", "run"))
    assert statuses(tmp_path) == {"X-1": "Deprecated", "X-2": "Active"}
    shown = ok(keysync("registry", "show", "X-1")).stdout
    assert "seen in no system for 2 successful runs" in shown
    # By hand too, and audited as such: which command, which user, one id per session.
    # The user by the process's id: the environment's login name can say anything.
    spoofed = {"LOGNAME": "mallory", "USER": "mallory", "SUDO_USER": ""}
    done = ok(keysync("registry", "deprecate", "X-2", env=spoofed))
    assert statuses(tmp_path) == {"X-1": "Deprecated", "X-2": "Deprecated"}
    manual = [e for e in json.loads(ok(keysync("audit", "--json")).stdout) if e["key"] == "X-2"]
    assert re.fullmatch(r"manual-\d{8}T\d{6}Z-[0-9a-f]{4}", manual[-1]["run_id"])
    assert f"(audit run id {manual[-1]['run_id']})" in done.stderr
    assert manual[-1]["detail"] == (
        f"master key X-2: Active -> Deprecated by `keysync registry deprecate` (user {USER})"
    )
    listed = json.loads(ok(keysync("audit", "--run", manual[-1]["run_id"], "--json")).stdout)
    assert [(e["event"], e["key"]) for e in listed] == [("key.deprecated", "X-2")]
    # A second session, within the same second or not, is a session of its own.
    ok(keysync("registry", "approve", "X-2"))
    again = [e for e in json.loads(ok(keysync("audit", "--json")).stdout) if e["key"] == "X-2"]
    assert again[-1]["run_id"] != manual[-1]["run_id"]
    # Nothing changed: no audit event, so no id to look up.
    unchanged = ok(keysync("registry", "approve", "X-2"))
    assert "approved 0 master keys (nothing changed, nothing audited)" in unchanged.stderr
    assert json.loads(ok(keysync("audit", "--json")).stdout)[-1] == again[-1]


def test_a_reason_given_by_hand_is_kept_word_for_word_in_each_change_s_audit_event(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """A compliance reader asks why, not only who: --reason answers it in the trail."""
    project()
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1", "X-2"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    ok(keysync("registry", "approve", "X-1", "X-2", "--reason", "  DQ-118: confirmed by CRM "))
    ok(keysync("registry", "deprecate", "X-2", "--reason", "merged into X-1; ticket 7"))
    ok(keysync("registry", "approve", "--all", "--reason", "nothing left: no event"))
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1", "X-2", "X-3"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    ok(keysync("registry", "approve", "--all"))  # a sweep says it was one
    (swept,) = db_rows(
        tmp_path, "SELECT detail FROM audit_events WHERE key = 'X-3' AND event = 'key.approved'"
    )
    assert swept == (
        f"master key X-3: Proposed -> Active by `keysync registry approve --all` (user {USER})",
    )
    audit = ok(keysync("audit", "--event", "key.approved", "--event", "key.deprecated", "--json"))
    events = [e for e in json.loads(audit.stdout) if e["key"] != "X-3"]
    assert [(e["event"], e["key"], e["detail"].split(f"(user {USER})")[1]) for e in events] == [
        ("key.approved", "X-1", "; reason: DQ-118: confirmed by CRM"),
        ("key.approved", "X-2", "; reason: DQ-118: confirmed by CRM"),
        ("key.deprecated", "X-2", "; reason: merged into X-1; ticket 7"),
    ]
    logged = [json.loads(line) for line in (tmp_path / "data/logs/keysync.jsonl").open()]
    assert [e["user_reason"] for e in logged if e["event"] == "key.deprecated"] == [
        "merged into X-1; ticket 7"
    ]
    # Kept word for word, so one line: a newline would read as two events in a log viewer.
    before = state_dump(tmp_path)
    for bad, named in (
        ("two\nlines", "'\\n' (U+000A) at character 4"),
        ("tab\there", "'\\t' (U+0009) at character 4"),
        ("bell\x07", "'\\x07' (U+0007) at character 5"),
        # Seen: a reason pasted from a web page was refused as holding "tabs or control
        # characters" when what it held was a no-break space.
        ("DQ-118:\xa0done", "'\\xa0' (U+00A0 NO-BREAK SPACE) at character 8"),
    ):
        refused = keysync("registry", "deprecate", "X-1", "--reason", bad)
        assert refused.returncode == 2
        assert (
            f"Invalid value for '--reason': {named} is not printable text; give the reason on "
            "one line, without tabs or control characters (plain spaces are fine)"
        ) in " ".join(refused.stderr.split()), refused.stderr
    refused = keysync("registry", "deprecate", "X-1", "--reason", "x" * 1001)
    assert refused.returncode == 2
    assert "it is 1,001 characters; keep it to 1,000" in " ".join(refused.stderr.split())
    assert state_dump(tmp_path) == before
    ok(keysync("registry", "deprecate", "X-1", "--reason", "x" * 1000))
    assert "--reason TEXT" in ok(keysync("registry", "rekey", "--help")).stdout


def test_registry_last_seen_at_is_the_latest_instant_however_the_inputs_write_it(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Offsets, fractions and junk: compared as times, on the first run and on later ones."""
    project()
    write_inputs(
        tmp_path,
        {
            "A": ["K-0"],
            "B": [
                ("K-1", "2026-10-01T10:00:00+05:00"),
                ("K-2", "2026-10-01T06:00:00Z"),
                ("K-4", "yesterday"),
            ],
            "C": [
                ("K-1", "2026-10-01T06:00:00Z"),
                ("K-2", "2026-10-01T06:00:00.500Z"),
                ("K-4", "2026-10-02T00:00:00Z"),
            ],
        },
    )
    ok(keysync("-q", "run"))

    def last_seen() -> dict[str, str]:
        rows = read_report(tmp_path / "output" / "master_key_registry.csv")
        return {r["master_key"]: r["last_seen_at"] for r in rows}

    assert last_seen() == {
        "K-1": "2026-10-01T06:00:00Z",
        "K-2": "2026-10-01T06:00:00.500Z",
        "K-4": "2026-10-02T00:00:00Z",
    }
    write_inputs(
        tmp_path,
        {
            "A": ["K-0"],
            "B": [
                ("K-1", "2026-10-01T10:00:00+05:00"),
                ("K-2", "2026-10-03T06:00:00+01:00"),
                ("K-4", "yesterday"),
            ],
            "C": [
                ("K-1", "2026-10-01T07:00:00Z"),
                ("K-2", "2026-10-01T06:00:00.500Z"),
                ("K-4", "2026-10-02T00:00:00Z"),
            ],
        },
    )
    ok(keysync("-q", "run"))
    assert last_seen() == {
        "K-1": "2026-10-01T07:00:00Z",
        "K-2": "2026-10-03T06:00:00+01:00",
        "K-4": "2026-10-02T00:00:00Z",
    }


def test_registry_last_seen_at_never_goes_back_while_a_holder_is_not_read(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    project()
    write_inputs(
        tmp_path,
        {
            "A": ["K-0"],
            "B": [("K-1", "2026-01-05T00:00:00Z")],
            "C": [("K-1", "2026-01-01T00:00:00Z")],
        },
    )
    ok(keysync("-q", "run"))
    ok(keysync("-q", "run", "--systems", "A,C"))  # B not read: it keeps what it held
    (row,) = read_report(tmp_path / "output" / "master_key_registry.csv")
    assert (row["seen_in"], row["last_seen_at"]) == ("B;C", "2026-01-05T00:00:00Z")


def test_a_wave_of_deprecated_and_resolved_keys_is_counted_on_the_console_listed_in_the_file(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """One console line per key would flood a terminal or a cron mail: counts there, keys here."""
    project(deprecate_after_runs=1, auto_approve=True)
    gone, fixed = [f"X-{n}" for n in range(60)], [f"Y-{n}" for n in range(40)]
    write_inputs(tmp_path, {"A": ["K-1"], "B": gone + fixed, "C": ["K-1"]})
    ok(keysync("-q", "run"))
    write_inputs(tmp_path, {"A": ["K-1", *fixed], "B": fixed, "C": ["K-1"]})
    done = ok(keysync("run"))
    console = [line for line in done.stderr.splitlines() if line[:4].isdigit()]
    assert len(console) < 25, done.stderr
    changed = [line for line in console if " registry.changed " in line]
    assert len(changed) == 1 and "deprecated=60 resolved=40" in changed[0]
    events = [
        json.loads(line)
        for line in (tmp_path / "data" / "logs" / "keysync.jsonl").read_text().splitlines()
    ]
    deprecated = {e["master_key"] for e in events if e["event"] == "key.deprecated"}
    resolved = {e["master_key"] for e in events if e["event"] == "key.resolved"}
    assert deprecated == set(gone) and resolved == set(fixed)


def test_namespaced_gives_one_master_key_per_system_and_key(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    project(strategy="namespaced")
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1", "X-2"], "C": ["x_1"]})
    ok(keysync("-q", "run"))
    assert statuses(tmp_path) == {"B:X-1": "Proposed", "B:X-2": "Proposed", "C:X-1": "Proposed"}
    in_a = read_report(tmp_path / "output" / "diff_missing_in_A.csv")
    assert [(r["system"], r["key"], r["proposed_master_key"]) for r in in_a] == [
        ("B", "X-1", "B:X-1"),
        ("C", "X-1", "C:X-1"),
        ("B", "X-2", "B:X-2"),
    ]
    shown = json.loads(ok(keysync("registry", "show", "x_1", "--json")).stdout)
    assert [(e["master_key"], e["source_key"]) for e in shown] == [
        ("B:X-1", "X-1"),
        ("C:X-1", "x_1"),
    ]
    # Seen (lifecycle hunt): `audit --key B:X-2`, the name the registry lists, matched
    # nothing: its ":" was normalized into a delimiter, B-X-2.
    audited = json.loads(ok(keysync("audit", "--key", "B:X-2", "--json")).stdout)
    assert [(e["event"], e["system"], e["key"]) for e in audited] == [("key.proposed", "B", "X-2")]
    audited = json.loads(ok(keysync("audit", "--key", "C:X-1", "--json")).stdout)
    # C's X-1 only, not B's too (review): a namespaced master key names one system's key
    assert [(e["event"], e["system"], e["key"]) for e in audited] == [("key.proposed", "C", "X-1")]
    # A system and a raw key name that system's entry, as a raw key names a mirror one
    # (seen, config hunt: `registry show B:cust_001` was "unknown", B:CUST-001 worked).
    shown = json.loads(ok(keysync("registry", "show", "C:x_1", "--json")).stdout)
    assert [e["master_key"] for e in shown] == ["C:X-1"]
    audited = json.loads(ok(keysync("audit", "--key", "C:x 1", "--json")).stdout)
    assert [(e["system"], e["key"]) for e in audited] == [("C", "X-1")]
    assert ok(keysync("registry", "approve", "B:x-2", "--dry-run")).stdout == (
        "B:X-2: Proposed -> Active (dry run)\n"
    )
    # named as the registry names it, not as typed (seen, docs check: "master key B:x_1")
    assert ok(keysync("history", "B:x_1")).stdout.splitlines()[0] == (
        "history of X-1 (master key B:X-1)"
    )


def test_switching_to_namespaced_keeps_mirror_entries_seen_where_they_are(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Existing mirror entries keep their systems; none is deprecated for being 'unseen'."""
    project(deprecate_after_runs=2)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-2"], "C": ["X-2"]})
    ok(keysync("-q", "run"))
    ok(keysync("-q", "registry", "approve", "X-2"))
    project(strategy="namespaced", deprecate_after_runs=2)
    ok(keysync("-q", "run"))
    ok(keysync("-q", "run"))
    rows = db_rows(tmp_path, "SELECT master_key, status, strategy, seen_in FROM master_keys")
    assert sorted(rows) == [
        ("B:X-2", "Proposed", "namespaced", "B"),
        ("C:X-2", "Proposed", "namespaced", "C"),
        ("X-2", "Active", "mirror", "B;C"),
    ]
    events = db_rows(tmp_path, "SELECT event FROM audit_events WHERE key = 'X-2'")
    assert ("key.deprecated",) not in events and ("key.seen_in_changed",) not in events
    # B:X-2 was only proposed: the mirror entry X-2's proposal and approval, about the same
    # system's key, are not its events (seen: `audit --key B:X-2` said it was approved).
    audited = json.loads(ok(keysync("audit", "--key", "B:X-2", "--json")).stdout)
    assert [(e["event"], e["system"], e["detail"].split(" (")[0]) for e in audited] == [
        ("key.proposed", "B", "master key B:X-2")
    ]
    shown = ok(keysync("registry", "show", "B:X-2")).stdout
    assert "key.proposed" in shown and "key.approved" not in shown


def test_an_authority_moved_first_is_said_and_reports_name_it_not_a(
    tmp_path: Path, keysync: RunKeysync, write_config: Callable[..., Path]
) -> None:
    """Seen (journeys hunt): with C put first under sources, C became the authority over a
    live registry with nothing on the console but a cut info line, and the summary and the
    reports' column descriptions still said "missing in A", "the key as written in A"."""
    write_inputs(tmp_path, {"A": ["K-1", "K-2"], "B": ["K-1"], "C": ["K-1", "X-1"]})
    sources = {s: {"path": f"./input/{s}.csv"} for s in ("A", "B", "C")}
    write_config(tmp_path, sources=sources, processing={"parallel": False})
    ok(keysync("-q", "run"))
    write_config(tmp_path, sources={"C": sources["C"], "A": sources["A"], "B": sources["B"]})
    done = ok(keysync("run"))
    (warned,) = [line for line in done.stderr.splitlines() if "authority.changed" in line]
    assert "C is the authority now, as the first source in the config" in warned
    assert "put the authority first under sources" in warned
    header = next(line for line in done.stdout.splitlines() if line.startswith("system"))
    assert "missing in C" in header and "missing in A" not in header
    gaps = (tmp_path / "output" / "diff_missing_from_system.csv").read_text()
    assert "# column a_source_key: the key as written in C\n" in gaps
    assert "# column system: system that lacks the key (C has it)\n" in gaps
    again = ok(keysync("run")).stderr
    assert "authority.changed" not in again  # said once, when it changed


# --------------------------------------------------------------- the commands


def test_commands_before_any_run(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    project()
    for args in (["runs"], ["audit"], ["registry", "list"]):
        result = ok(keysync(*args))
        assert result.stdout == ""
        assert "no runs yet" in result.stderr and "run `keysync run` first" in result.stderr
    assert ok(keysync("runs", "--json")).stdout.strip() == "[]"
    export = ok(keysync("registry", "export"))
    assert export.stdout.splitlines() == [
        "master_key,status,strategy,source_system,source_key,seen_in,created_at,updated_at,"
        "last_seen_at,created_run,updated_run"
    ]
    commands = (
        ["history", "K-1"],
        ["registry", "approve", "K-1"],
        ["registry", "deprecate", "K-1"],
        ["registry", "rekey"],
    )
    for args in commands:
        result = keysync(*args)
        assert result.returncode == 3
        assert result.stderr.strip().endswith("run `keysync run` first")
    # Refused, they leave nothing behind (the changing ones had made data/logs/).
    assert not (tmp_path / "data").exists()


def test_registry_commands(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    project()
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1", "=cmd()", "X-3"], "C": ["X-1"]})
    ok(keysync("-q", "run"))
    listed = ok(keysync("registry", "list")).stdout.splitlines()
    assert listed[0].split() == [
        "MASTER_KEY",
        "STATUS",
        "STRATEGY",
        "SOURCE",
        "SOURCE_KEY",
        "SEEN_IN",
        "LAST_SEEN_AT",
    ]
    assert [line.split()[0] for line in listed[1:]] == ["CMD", "X-1", "X-3"]

    unknown = keysync("registry", "approve", "X-1", "NOPE")
    assert unknown.returncode == 2
    assert (
        "unknown master key 'NOPE'" in unknown.stderr and "keysync registry list" in unknown.stderr
    )
    assert statuses(tmp_path)["X-1"] == "Proposed"  # nothing changed

    approved = ok(keysync("registry", "approve", "x_1"))
    assert approved.stdout == "X-1: Proposed -> Active\n"
    again = ok(keysync("registry", "approve", "--all"))
    assert again.stdout.splitlines() == ["CMD: Proposed -> Active", "X-3: Proposed -> Active"]
    assert ok(keysync("registry", "approve", "X-1")).stdout == "X-1: already Active (unchanged)\n"
    assert keysync("registry", "approve").returncode == 2
    assert keysync("registry", "approve", "X-1", "--all").returncode == 2

    out = tmp_path / "exported" / "registry.csv"
    out.parent.mkdir()  # (a folder that does not exist is refused, not made)
    ok(keysync("registry", "export", "--out", str(out)))
    rows = list(csv.reader(out.open(encoding="utf-8")))
    assert rows[0][:2] == ["master_key", "status"]
    assert [(r[0], r[1], r[4]) for r in rows[1:]] == [
        ("CMD", "Active", "'=cmd()"),  # a formula cell is neutralized
        ("X-1", "Active", "X-1"),
        ("X-3", "Active", "X-3"),
    ]
    assert ok(keysync("registry", "export")).stdout == out.read_text(encoding="utf-8")
    shown = ok(keysync("registry", "show", "X-1")).stdout
    assert "seen_in        B;C" in shown
    assert "key.approved" in shown and "key.proposed" in shown
    assert "\nin_authority   false\n" in shown  # as the CSV and JSON write it, not Python's False


def _exported_registry(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path], keys: int
) -> str:
    """A registry of ``keys`` master keys (B's X-0...), and its export on stdout."""
    project()
    write_inputs(tmp_path, {"A": ["K-1"], "B": [f"X-{n}" for n in range(keys)], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    expected = ok(keysync("registry", "export")).stdout
    assert len(expected.splitlines()) == keys + 1
    return expected


def test_registry_export_into_a_named_pipe_streams_into_it_and_leaves_the_pipe(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen: `mkfifo p; cat p & keysync registry export --out p` renamed its temp file
    over the pipe: p became a regular file, and its reader got nothing (and waited on)."""
    expected = _exported_registry(tmp_path, keysync, project, 3000)  # more than a pipe holds
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    read_all = "import sys; sys.stdout.buffer.write(open(sys.argv[1], 'rb').read())"
    reader = subprocess.Popen([sys.executable, "-c", read_all, pipe], stdout=subprocess.PIPE)
    try:
        done = ok(keysync("registry", "export", "--out", str(pipe), timeout=60))
        assert stat.S_ISFIFO(pipe.lstat().st_mode)  # still the pipe (checked before waiting)
        got, _ = reader.communicate(timeout=30)
    finally:
        reader.kill()
        reader.wait()
    assert got.decode("utf-8") == expected
    assert done.stderr == f"wrote 3,000 master keys to {pipe}\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    # A reader that goes away before the end: one line, exit 3, and the pipe is left.
    read_one_line = "import sys; open(sys.argv[1], 'rb').readline()"
    reader = subprocess.Popen([sys.executable, "-c", read_one_line, pipe])
    try:
        cut = keysync("registry", "export", "--out", str(pipe), timeout=60)
        assert reader.wait(30) == 0
    finally:
        reader.kill()
        reader.wait()
    assert (cut.returncode, cut.stderr) == (
        3,
        f"keysync: error: cannot write {pipe}: its reader closed it before the end of the "
        "export; export again, with a reader that reads it all\n",
    )
    assert stat.S_ISFIFO(pipe.lstat().st_mode)
    # A folder is still refused, not written into.
    folder = keysync("registry", "export", "--out", str(tmp_path / "output"))
    assert folder.returncode == 2 and "is a directory" in folder.stderr


@pytest.mark.skipif(not Path("/dev/stdout").exists(), reason="needs /dev/stdout")
def test_registry_export_out_dev_stdout_writes_stdout_as_without_out(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen: `keysync registry export --out /dev/stdout | ...` exited 3 "no such file or
    directory" (it followed /dev/stdout to pipe:[...] and made its temp file there); with
    stdout a file, it replaced that file (`>> log` lost what log held)."""
    expected = _exported_registry(tmp_path, keysync, project, 3)
    into_a_pipe = ok(keysync("registry", "export", "--out", "/dev/stdout"))
    assert (into_a_pipe.stdout, into_a_pipe.stderr) == (
        expected,
        "wrote 3 master keys to /dev/stdout\n",  # on stderr, not in the CSV
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSYNC_")}
    command = [sys.executable, "-m", "keysync", "registry", "export", "--out", "/dev/stdout"]
    log = tmp_path / "exports.log"
    log.write_text("before\n")
    inode = log.stat().st_ino
    with log.open("a") as stdout:  # `>> exports.log`
        appended = subprocess.run(
            command, cwd=tmp_path, env=env, stdout=stdout, stderr=subprocess.PIPE, timeout=120
        )
    assert appended.returncode == 0, appended.stderr
    assert log.read_text() == "before\n" + expected and log.stat().st_ino == inode
    # `2>&1`: stderr is the stream the CSV goes to, and the note stays out of it.
    mixed = subprocess.run(
        command,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    assert (mixed.returncode, mixed.stdout) == (0, expected)


def test_registry_export_into_a_character_device_writes_through_it(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen: `--out /dev/pts/N` (a terminal: a character device, as /dev/null is) exited 3
    "permission denied": the export made its temp file in /dev/pts, to rename it over."""
    expected = _exported_registry(tmp_path, keysync, project, 40).encode("utf-8")
    try:
        terminal, device = os.openpty()
    except OSError:
        pytest.skip("no pseudo-terminal to write to")
    got = bytearray()

    def read_terminal() -> None:
        while len(got) < len(expected):
            if not select.select([terminal], [], [], 30)[0]:
                return  # (nothing came: the assertion below says so)
            try:
                data = os.read(terminal, 65536)
            except OSError:  # EIO: closed
                return
            if not data:
                return
            got.extend(data)

    try:
        tty.setraw(device)  # as it is written: no "\r\n" for "\n", no echo
        reading = threading.Thread(target=read_terminal, daemon=True)
        reading.start()
        name = os.ttyname(device)
        done = ok(keysync("registry", "export", "--out", name, timeout=60))
        reading.join(35)
        assert bytes(got) == expected
        assert done.stderr == f"wrote 40 master keys to {name}\n"
        assert stat.S_ISCHR(os.stat(name).st_mode)
    finally:
        os.close(device)
        os.close(terminal)


def _at_a_terminal(tmp_path: Path, *args: str, **env: str) -> tuple[int, str]:
    """``keysync ARGS`` with stdout and stderr on one pseudo-terminal (raw: as written):
    its exit code and what it showed. Skips where no pseudo-terminal can be opened."""
    try:
        terminal, device = os.openpty()
    except OSError:
        pytest.skip("no pseudo-terminal to write to")
    try:
        tty.setraw(device)
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("KEYSYNC_")}
        done = subprocess.run(
            [sys.executable, "-m", "keysync", *args],
            cwd=tmp_path,
            env={**inherited, **env},
            stdout=device,
            stderr=device,
            timeout=60,
        )
        got = bytearray()
        while select.select([terminal], [], [], 1)[0]:
            got.extend(os.read(terminal, 65536))
    finally:
        os.close(device)
        os.close(terminal)
    return done.returncode, got.decode("utf-8")


def test_registry_export_to_stdout_at_a_terminal_still_says_what_it_wrote(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Review: `--out /dev/stdout` at a terminal left out "wrote N master keys" (stdout
    and stderr are the one terminal), which is kept out of a file only (`2>&1`)."""
    expected = _exported_registry(tmp_path, keysync, project, 3)
    exit_code, said = _at_a_terminal(tmp_path, "registry", "export", "--out", "/dev/stdout")
    assert exit_code == 0
    assert said.startswith(expected), said
    assert "wrote 3 master keys to /dev/stdout" in said[len(expected) :], said


def test_registry_export_through_a_link_into_a_missing_folder_names_that_folder(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen: `ln -s /nonexistent/dir/x.csv link; keysync registry export --out link`
    exited 3 "no such file or directory; choose another --out (or make room)", where a
    plain missing folder is exit 2 naming it."""
    expected = _exported_registry(tmp_path, keysync, project, 3)
    real = tmp_path.resolve()
    (tmp_path / "latest.csv").symlink_to(tmp_path / "drop" / "registry.csv")
    (tmp_path / "relative.csv").symlink_to(Path("drop") / "registry.csv")
    for link in ("latest.csv", "relative.csv"):
        refused = keysync("registry", "export", "--out", link)
        assert (refused.returncode, refused.stderr) == (
            2,
            f"keysync: error: cannot write {link}: it points to {real}/drop/registry.csv; "
            f"the folder {real}/drop does not exist; create it, or choose another --out\n",
        )
    (tmp_path / "a-file").write_text("x\n")
    (tmp_path / "under-a-file.csv").symlink_to(tmp_path / "a-file" / "registry.csv")
    refused = keysync("registry", "export", "--out", "under-a-file.csv")
    assert (refused.returncode, refused.stderr) == (
        2,
        f"keysync: error: cannot write under-a-file.csv: it points to {real}/a-file/"
        f"registry.csv; {real}/a-file is a file, not a folder; choose another --out\n",
    )
    assert not (tmp_path / "drop").exists()
    # The folder there, a dangling link is written through, as `echo > link` would.
    (tmp_path / "drop").mkdir()
    done = ok(keysync("registry", "export", "--out", "latest.csv"))
    assert done.stderr == "wrote 3 master keys to latest.csv\n"
    assert (tmp_path / "latest.csv").is_symlink()
    assert (tmp_path / "drop" / "registry.csv").read_text(encoding="utf-8") == expected
    assert [p.name for p in (tmp_path / "drop").iterdir()] == ["registry.csv"]


def test_registry_export_refuses_a_loop_of_links_and_stdin_as_mistakes_of_the_path(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Review: a loop of links was exit 3 "...; choose another --out (or make room)", and
    `--out /dev/stdin` exit 3 "bad file descriptor ... (or make room)": both are the
    path given, exit 2, and neither has anything to do with room."""
    _exported_registry(tmp_path, keysync, project, 3)
    (tmp_path / "loop.csv").symlink_to(tmp_path / "loop.csv")
    refused = keysync("registry", "export", "--out", "loop.csv")
    assert (refused.returncode, refused.stderr) == (
        2,
        "keysync: error: cannot write loop.csv: too many levels of symbolic links; "
        "choose another --out\n",
    )
    refused = keysync("registry", "export", "--out", "/dev/stdin")
    assert (refused.returncode, refused.stderr) == (
        2,
        "keysync: error: cannot write /dev/stdin: it is keysync's input (stdin); give a "
        "file, or - for stdout\n",
    )
    assert (tmp_path / "loop.csv").is_symlink()


def test_runs_and_audit(tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]) -> None:
    project()
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    ok(keysync("-q", "run", "--auto-approve"))
    (tmp_path / "input" / "C.csv").unlink()
    ok(keysync("-q", "run", "--dry-run"), 4)  # degraded: C is missing
    records = json.loads(ok(keysync("runs", "--json")).stdout)
    assert [(r["mode"], r["dry_run"], r["outcome"], r["exit_code"]) for r in records] == [
        ("full", False, "completed", 0),
        ("full", True, "degraded", 4),
    ]
    assert records[0]["flags"]["auto_approve"] is True
    assert records[0]["counts"]["registry"]["proposed"] == 1
    table = ok(keysync("runs")).stdout.splitlines()
    assert table[0].split()[:7] == [
        "RUN_ID",
        "STARTED",
        "ENDED",
        "MODE",
        "FLAGS",
        "OUTCOME",
        "EXIT",
    ]
    assert "full (dry run)" in table[2] and "degraded" in table[2]
    first = records[0]["run_id"]
    audit = ok(keysync("audit", "--run", first)).stdout.splitlines()
    assert [line.split()[3] for line in audit[1:]] == [
        "key.proposed",
        "key.approved",
        "run.completed",
    ]
    missing = keysync("audit", "--run", "no-such-run")
    assert missing.returncode == 2 and "unknown run 'no-such-run'" in missing.stderr
    log = read_report(tmp_path / "output" / "audit_log.csv")
    assert [(r["run_id"], r["event"]) for r in log][:3] == [
        (first, "key.proposed"),
        (first, "key.approved"),
        (first, "run.completed"),
    ]


def test_every_state_command_has_help_with_an_example(keysync: RunKeysync) -> None:
    for args in (
        ["registry"],
        ["registry", "list"],
        ["registry", "show"],
        ["registry", "approve"],
        ["registry", "deprecate"],
        ["registry", "export"],
        ["runs"],
        ["audit"],
        ["history"],
    ):
        result = ok(keysync(*args, "--help"))
        assert "Example:" in result.stdout, args


# ------------------------------------------------------- kills and concurrency


_held_runs = itertools.count()


class Background:
    """A ``keysync run`` in the background; waits for a line on its stderr."""

    release_file = ""

    def __init__(self, folder: Path, *args: str, env: Mapping[str, str]) -> None:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSYNC_")}
        full_env.update(env)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "keysync", "run", *args],
            cwd=folder,
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        self.lines: list[str] = []
        self._seen = threading.Event()
        self._wanted = ""
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            if self._wanted and self._wanted in line:
                self._seen.set()

    def wait_for(self, text: str, timeout: float = 60) -> None:
        self._wanted = text
        if any(text in line for line in self.lines):
            return
        if not self._seen.wait(timeout):
            raise AssertionError(f"never saw {text!r}; stderr:\n{''.join(self.lines)[-3000:]}")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def release(self) -> None:
        """Let a run held by :meth:`held_at` go on (``KEYSYNC_TEST_PAUSE_UNTIL``)."""
        Path(self.release_file).touch()

    @classmethod
    def held_at(cls, folder: Path, phase: str, *args: str, **env: str) -> Background:
        """A run started and held at ``phase`` (``KEYSYNC_TEST_PAUSE_AT``) when this returns.

        It stays held until :meth:`release` (or :meth:`kill`): no step of the test has to
        beat a timer, however slow the machine.
        """
        release_file = str(folder / f".release-{phase}-{next(_held_runs)}")
        hold = {"KEYSYNC_TEST_PAUSE_AT": phase, "KEYSYNC_TEST_PAUSE_UNTIL": release_file}
        run = cls(folder, *args, env={**hold, **env})
        run.release_file = release_file
        run.wait_for("run.paused_for_tests")
        return run


def test_audit_of_a_run_that_has_recorded_nothing_yet_says_why(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen (audit hunt): `keysync audit --run ID` of a run still running, or killed and
    not yet found, said only "no audit events match", as of a run that decided nothing."""
    project()
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    run = Background.held_at(tmp_path, "planning")
    try:
        run_id = json.loads(ok(keysync("runs", "--json")).stdout)[-1]["run_id"]
        said = (
            f"run {run_id} has recorded no audit events yet: it is still running, or it was "
            "killed before its commit (`keysync runs` says which); a run records its events "
            "when it commits, and a killed one gets its run.interrupted event when the next "
            "run, or its --resume, finds it\n"
        )
        for _ in ("running", "killed"):
            shown = ok(keysync("audit", "--run", run_id))
            assert (shown.stdout, shown.stderr) == ("", said)
            run.kill()
    finally:
        run.kill()
    narrowed = ok(keysync("audit", "--run", run_id, "--event", "key.proposed"))
    assert narrowed.stderr == "no audit events match\n"
    ok(keysync("-q", "run"))
    found = json.loads(ok(keysync("audit", "--run", run_id, "--json")).stdout)
    assert [e["event"] for e in found] == ["run.interrupted"]


PHASES = ["reading", "planning", "reporting", "committing", "mid-commit"]


@pytest.mark.parametrize("phase", PHASES)
def test_kill_9_at_any_phase_leaves_the_state_as_before(
    phase: str, tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    project(parallel=True, deprecate_after_runs=1)
    write_inputs(tmp_path, {"A": ["K-1", "K-2"], "B": ["K-1", "X-1"], "C": ["X-2"]})
    ok(keysync("-q", "run", "--auto-approve"))
    before = state_dump(tmp_path)
    reports_before = (tmp_path / "output" / "master_key_registry.csv").read_bytes()
    # A run that would change everything: new keys, a deprecation, new gaps.
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-3"], "C": ["X-2", "X-4"]})
    run = Background.held_at(tmp_path, phase, "--auto-approve")
    run.kill()
    assert run.process.returncode == -signal.SIGKILL
    assert state_dump(tmp_path) == before
    assert (tmp_path / "output" / "master_key_registry.csv").read_bytes() == reports_before
    assert db_rows(tmp_path, "PRAGMA integrity_check") == [("ok",)]
    killed = db_rows(tmp_path, "SELECT run_id, outcome FROM runs ORDER BY seq")[-1]
    assert killed[1] == "running"
    shown = ok(keysync("runs")).stdout.splitlines()[-1]
    assert "interrupted" in shown and "resume with: keysync run --resume" in shown
    # The next run is not blocked by anything the killed one left, and records it.
    ok(keysync("-q", "run", "--auto-approve"))
    assert statuses(tmp_path) == {
        "X-1": "Deprecated",
        "X-2": "Active",
        "X-3": "Active",
        "X-4": "Active",
    }
    outcomes = dict(db_rows(tmp_path, "SELECT run_id, outcome FROM runs"))
    assert outcomes[killed[0]] == "interrupted"


def test_a_key_approved_between_a_kill_and_its_resume_counts_the_resumed_run_as_unseen(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen: the approval counted from the killed run's seq, which the resumed run keeps, so
    the key stayed Active one run too long and its deprecation named 2 runs where 3 had passed."""
    project(deprecate_after_runs=2)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["P-1", "P-2"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["P-2"], "C": ["K-1"]})
    ok(keysync("-q", "run"))  # P-1 unseen from here on
    run = Background.held_at(tmp_path, "mid-commit")
    run.kill()
    ok(keysync("-q", "registry", "approve", "P-1"))
    ok(keysync("-q", "run", "--resume"))  # the first run unseen since the approval
    assert statuses(tmp_path)["P-1"] == "Active"
    ok(keysync("-q", "run"))  # the second
    assert statuses(tmp_path)["P-1"] == "Deprecated"
    (detail,) = db_rows(
        tmp_path, "SELECT detail FROM audit_events WHERE event = 'key.deprecated' AND key = 'P-1'"
    )
    assert "for 2 successful runs" in detail[0], detail


def test_a_killed_run_its_parent_has_not_reaped_yet_is_interrupted_not_running(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen (registry hunt): right after a `kill -9`, `keysync runs` still said `running`:
    the process was a zombie (ended, not yet reaped by the shell that started it), which
    ``kill(pid, 0)`` takes for a live one."""
    project()
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    run = Background.held_at(tmp_path, "planning")
    run.process.send_signal(signal.SIGKILL)  # and not reaped: this test is its shell
    stat = Path(f"/proc/{run.process.pid}/stat")
    deadline = time.monotonic() + 30
    while stat.read_text().rpartition(")")[2].split()[0] != "Z":
        assert time.monotonic() < deadline, "the killed run never became a zombie"
        time.sleep(0.02)
    try:
        shown = ok(keysync("runs")).stdout.splitlines()[-1]
        assert "interrupted" in shown and "running" not in shown, shown
        ok(keysync("-q", "run"))
    finally:
        run.process.wait(30)


@pytest.mark.parametrize(
    ("phase", "stop"),
    [("tidying", signal.SIGINT), ("tidying", signal.SIGTERM), ("publishing", signal.SIGINT)],
)
def test_a_ctrl_c_after_the_commit_lets_the_run_end_as_completed(
    phase: str, stop: int, tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen (journeys hunt): a Ctrl-C just after the commit ended the command with exit 130
    and "interrupted ... run the command again", though `keysync runs` said completed:
    the user's second run would count once more towards deprecate_after_runs."""
    project(parallel=True)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    run = Background.held_at(tmp_path, phase, "--mode", "incremental")
    run.process.send_signal(stop)
    time.sleep(0.2)  # delivered while held
    run.process.send_signal(stop)  # a second one neither (it would exit at once, 130)
    time.sleep(0.2)
    run.release()
    assert run.process.wait(60) == 0, "".join(run.lines)
    assert not any("interrupted" in line for line in run.lines), run.lines
    said = "keysync: the run has saved its state and is finishing; an interrupt now changes nothing"
    assert sum(line.strip() == said for line in run.lines) == 2, run.lines  # each one is told
    (outcome,) = db_rows(tmp_path, "SELECT outcome FROM runs")
    assert outcome == ("completed",)
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.is_dir()]
    reused = ok(keysync("-v", "run", "--mode", "incremental")).stderr
    assert "incremental.reused" in reused, reused  # the record of its reports was left
    (tmp_path / "data/snapshots/last_run.msgpack").unlink()
    skipped = ok(keysync("-v", "run", "--mode", "incremental")).stderr
    assert skipped.count("incremental.unchanged") == 3, skipped  # the snapshots were renewed


def test_a_ctrl_c_while_the_state_is_saved_is_heeded_no_later_and_said_so(
    tmp_path: Path, project: Callable[..., Path]
) -> None:
    """Seen: a Ctrl-C during the commit was taken up by nothing: the run went on and
    completed without a word, as if the key had not been pressed."""
    project(parallel=True)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    run = Background.held_at(tmp_path, "mid-commit")
    run.process.send_signal(signal.SIGINT)
    time.sleep(0.2)  # delivered while held
    run.release()
    assert run.process.wait(60) == 0, "".join(run.lines)
    said = "keysync: the run has saved its state and is finishing; an interrupt now changes nothing"
    assert [line.strip() for line in run.lines].count(said) == 1, run.lines
    assert db_rows(tmp_path, "SELECT outcome FROM runs") == [("completed",)]


def test_a_run_called_in_process_gives_its_caller_s_signal_handlers_back(
    tmp_path: Path, project: Callable[..., Path]
) -> None:
    """A run ignores Ctrl-C once committed, till it returns; a caller (simulate, a
    notebook) must then have its own handlers again, not ignored signals."""
    from keysync.config import load_config
    from keysync.runner import run as run_reconciliation

    config = load_config(project())
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    assert run_reconciliation(config).exit_code == 0
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_a_dry_run_after_a_kill_leaves_the_killed_run_to_the_next_real_run(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    project(parallel=True)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    killed = Background.held_at(tmp_path, "planning")
    killed.kill()
    before = state_dump(tmp_path)
    runs_before = db_rows(tmp_path, "SELECT * FROM runs ORDER BY seq")
    ok(keysync("-q", "run", "--dry-run"))
    assert state_dump(tmp_path) == before  # no audit event, no registry row
    assert db_rows(tmp_path, "SELECT * FROM runs ORDER BY seq")[:-1] == runs_before
    (shown,) = [
        line for line in ok(keysync("runs")).stdout.splitlines() if runs_before[-1][0] in line
    ]
    assert "interrupted" in shown  # the lock shows it, though its row still says running
    ok(keysync("-q", "run"))
    events = db_rows(tmp_path, "SELECT run_id FROM audit_events WHERE event = 'run.interrupted'")
    assert events == [(runs_before[-1][0],)]


def test_kill_9_after_the_commit_keeps_the_committed_state(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    project(parallel=True)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    run = Background.held_at(tmp_path, "publishing")
    run.kill()
    assert statuses(tmp_path) == {"X-1": "Proposed"}
    assert db_rows(tmp_path, "SELECT outcome FROM runs") == [("completed",)]
    # The next run clears the lock and the checkpoint it left, without calling it interrupted.
    log_file = tmp_path / "data" / "logs" / "keysync.jsonl"
    log_file.unlink()
    ok(keysync("-q", "run"))
    events = [json.loads(line) for line in log_file.read_text().splitlines()]
    (cleared,) = [e for e in events if e["event"] == "lock.stale_cleared"]
    assert cleared["stale_pid"] == run.process.pid != cleared["pid"]
    assert not [e for e in events if e["event"] == "checkpoint.superseded"]
    assert not list((tmp_path / "checkpoints").iterdir())


def committed_then_changed(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> dict[str, bytes]:
    """A committed run (B holds X-1), then B's export gains X-2: the reports that run left."""
    project(parallel=True)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    before = {p.name: p.read_bytes() for p in (tmp_path / "output").iterdir()}
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1", "X-2"], "C": ["K-1"]})
    return before


def test_a_change_by_hand_after_a_kill_while_publishing_publishes_that_run_s_reports_first(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen (failure hunt): killed after its commit, before its renames; then `registry
    approve X-2`; then `run --resume` published the staged reports, which showed X-2
    Proposed and no manual event, while the console said 1 Active."""
    committed_then_changed(tmp_path, keysync, project)
    Background.held_at(tmp_path, "publishing").kill()
    (killed,) = db_rows(tmp_path, "SELECT run_id FROM runs ORDER BY seq DESC LIMIT 1")
    ok(keysync("registry", "approve", "X-2"))  # the killed run's reports go out first
    registry = tmp_path / "output" / "master_key_registry.csv"
    assert f"# run_id: {killed[0]}" in registry.read_text()
    assert not list((tmp_path / "output").glob(".staging-*"))
    ok(keysync("-q", "run"))  # and the next run's show the approval
    assert {r["master_key"]: r["status"] for r in read_report(registry)}["X-2"] == "Active"
    # Reports that cannot be put in place (a full or read-only output/) stop no change by
    # hand (review): the run's --resume is the one to retry them.
    Background.held_at(tmp_path, "publishing").kill()
    (tmp_path / "output" / "duplicates.csv").unlink()
    (tmp_path / "output" / "duplicates.csv").mkdir()
    (tmp_path / "output" / "duplicates.csv" / "in-the-way").touch()
    ok(keysync("registry", "deprecate", "X-2"))
    assert statuses(tmp_path)["X-2"] == "Deprecated"
    assert ",key.approved," in (tmp_path / "output" / "audit_log.csv").read_text()


def test_resuming_a_run_killed_after_its_commit_prints_that_run_s_statuses(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen (registry hunt): after a kill while publishing and an approval by hand, `run
    --resume` printed the master keys by status as they were now, not as that run left
    them, which its summary.json (the one published) gives."""
    committed_then_changed(tmp_path, keysync, project)
    Background.held_at(tmp_path, "publishing").kill()
    ok(keysync("-q", "registry", "approve", "X-2"))
    published = json.loads((tmp_path / "output" / "summary.json").read_text())
    said = ok(keysync("run", "--resume")).stdout.splitlines()[-2]
    by_status = ", ".join(
        f"{n:,} {status}" for status, n in published["registry"]["by_status"].items()
    )
    assert f"master keys: {by_status} (" in said, (said, by_status)
    assert statuses(tmp_path)["X-2"] == "Active"  # the approval itself stands


def test_resuming_a_run_killed_after_its_commit_puts_its_authority_first(
    tmp_path: Path, keysync: RunKeysync, write_config: Callable[..., Path]
) -> None:
    """Seen (review): the resumed summary came back in name order, so with C as the
    authority it named A the authority ("missing in A") and listed A first."""
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["K-1"], "C": ["K-1", "K-2"]})
    write_config(
        tmp_path,
        sources={s: {"path": f"./input/{s}.csv"} for s in ("C", "A", "B")},
        processing={"parallel": False},
    )
    Background.held_at(tmp_path, "publishing").kill()
    table = ok(keysync("run", "--resume")).stdout.splitlines()
    header = next(i for i, line in enumerate(table) if line.startswith("system"))
    assert "missing in C" in table[header]
    assert [line.split()[0] for line in table[header + 2 : header + 5]] == ["C", "A", "B"]


def test_runs_recorded_before_the_systems_moved_under_counts_systems_read_as_now(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Runs recorded before 2026-12-02 kept each system's summary at the top of counts:
    `runs --json` gives them in today's shape, and a resume of one still has its table."""
    project(parallel=False)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    Background.held_at(tmp_path, "publishing").kill()
    ((stored,),) = db_rows(tmp_path, "SELECT counts FROM runs")
    counts = json.loads(stored)
    old = {**counts.pop("systems"), **{k: v for k, v in counts.items() if k != "statuses"}}
    connection = sqlite3.connect(tmp_path / "data" / "keysync.db")
    with connection:
        connection.execute("UPDATE runs SET counts = ?", (json.dumps(old),))
    connection.close()
    (record,) = json.loads(ok(keysync("runs", "--json")).stdout)
    assert sorted(record["counts"]["systems"]) == ["A", "B", "C"]
    assert record["counts"]["registry"]["proposed"] == 1 and "A" not in record["counts"]
    table = ok(keysync("run", "--resume")).stdout.splitlines()
    assert [line.split()[:4] for line in table if line[:2] in ("A ", "B ", "C ")] == [
        ["A", "1", "0", "0"],
        ["B", "0", "1", "1"],
        ["C", "1", "0", "0"],
    ]


def test_a_kill_among_the_renames_of_the_reports_is_marked_and_finished_by_the_next_run(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Renames are one by one: output/.publishing names the run while the folder is a mix."""
    before = committed_then_changed(tmp_path, keysync, project)
    output = tmp_path / "output"
    run = Background.held_at(tmp_path, "mid-publish")
    run.kill()
    (killed,) = db_rows(tmp_path, "SELECT run_id FROM runs ORDER BY seq DESC LIMIT 1")

    def run_ids() -> set[str]:
        headers = [p.read_text().split("# run_id: ")[1].split()[0] for p in output.glob("d*.csv")]
        return {*headers, json.loads((output / "summary.json").read_text())["run_id"]}

    assert (output / ".publishing").read_text() == f"{killed[0]}\n"
    changed = {name for name, data in before.items() if (output / name).read_bytes() != data}
    assert changed == {"reconciliation_summary.csv"}  # the first renamed; the rest are old
    ok(keysync("-q", "run", "--resume"))
    assert not (output / ".publishing").exists()
    assert run_ids() == {killed[0]}
    assert db_rows(tmp_path, "SELECT COUNT(*) FROM runs") == [(2,)]


def test_resume_of_a_run_killed_after_its_commit_finishes_it_and_runs_no_other(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Its reports were all it lacked; a second run would count towards deprecation."""
    project(parallel=True)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    run = Background.held_at(tmp_path, "publishing")
    run.kill()
    (killed,) = db_rows(tmp_path, "SELECT run_id FROM runs")
    assert not (tmp_path / "output" / "master_key_registry.csv").exists()
    done = keysync("run", "--resume")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"run {killed[0]} (full)\n"), done.stdout
    (b_row,) = [line.split() for line in done.stdout.splitlines() if line.startswith("B ")]
    assert b_row[:3] == ["B", "0", "1"]  # its summary: nothing matched, X-1 not in A
    assert done.stdout.splitlines()[-2] == (  # the same registry line as if never killed
        "registry: 1 proposed; 1 master key: 1 Proposed, 0 Active, 0 Deprecated "
        "(review: keysync registry list --status Proposed)"
    )
    assert db_rows(tmp_path, "SELECT run_id, outcome FROM runs") == [(killed[0], "completed")]
    registry = read_report(tmp_path / "output" / "master_key_registry.csv")
    assert [(r["master_key"], r["status"]) for r in registry] == [("X-1", "Proposed")]
    assert not list((tmp_path / "checkpoints").iterdir())
    assert "run.already_committed" in done.stderr


def test_resume_keeps_fail_on_diff_from_when_the_run_started(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    project(parallel=True)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    Background.held_at(tmp_path, "planning", "--fail-on-diff").kill()
    done = keysync("run", "--resume")
    assert done.returncode == 1, done.stderr  # as the uninterrupted run would have ended
    assert json.loads((tmp_path / "output" / "summary.json").read_text())["exit_code"] == 1
    # Asked for only now: it sets only the exit code, so it is honoured too.
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1", "X-2"], "C": ["K-1"]})
    Background.held_at(tmp_path, "planning").kill()
    assert keysync("run", "--resume", "--fail-on-diff").returncode == 1
    # --fail-on too, and the kinds of both commands count.
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1", "X-2", "X-3"], "C": ["Y-1"]})
    Background.held_at(tmp_path, "planning", "--fail-on", "duplicates").kill()
    done = keysync("run", "--resume", "--fail-on", "missing-from-system")
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines()[-1].startswith(
        "keysync: discrepancies found (--fail-on missing-from-system,duplicates): 2 gaps (per "
    )


def test_a_dry_run_killed_while_publishing_keeps_the_events_it_would_record(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    project(parallel=True)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    ok(keysync("-q", "run", "--dry-run"))
    reference = read_report(tmp_path / "output" / "audit_log.csv")
    assert [r["event"] for r in reference if not r["seq"]] == ["key.proposed"]  # would record
    Background.held_at(tmp_path, "publishing", "--dry-run").kill()
    ok(keysync("-q", "run", "--resume"))
    audit = read_report(tmp_path / "output" / "audit_log.csv")
    assert [r["event"] for r in audit if not r["seq"]] == ["key.proposed"]


def test_resume_after_a_later_dry_run_runs_anew_rather_than_claim_the_old_reports(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """The dry run's reports are in output/ now: the killed run's summary would lie."""
    project(parallel=True)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    Background.held_at(tmp_path, "publishing").kill()
    (killed,) = db_rows(tmp_path, "SELECT run_id FROM runs")
    ok(keysync("-q", "run", "--dry-run"))
    done = ok(keysync("run", "--resume"))
    assert not done.stdout.startswith(f"run {killed[0]} ")
    assert db_rows(tmp_path, "SELECT COUNT(*) FROM runs") == [(3,)]
    summary = json.loads((tmp_path / "output" / "summary.json").read_text())
    assert done.stdout.startswith(f"run {summary['run_id']} ")


def test_a_full_disk_after_the_commit_says_the_run_is_committed_and_resume_finishes_it(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    project(parallel=True)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    output = tmp_path / "output"
    run = Background.held_at(tmp_path, "publishing")
    (run_id,) = db_rows(tmp_path, "SELECT run_id FROM runs")[0]
    (output / ".publishing").symlink_to("/dev/full")  # the marker is the first write
    run.release()
    assert run.process.wait(60) == 3
    assert run.lines[-1] == (
        f"keysync: error: run {run_id} is committed, but its reports could not all be put "
        f"in place in {output}: No space left on device; make room, then "
        "`keysync run --resume` puts them in place\n"
    )
    assert not os.path.lexists(output / ".publishing")
    assert db_rows(tmp_path, "SELECT outcome FROM runs") == [("completed",)]
    events = [json.loads(line) for line in (tmp_path / "data/logs/keysync.jsonl").open()]
    assert [e["event"] for e in events if e["event"].startswith("run.")][-1] == "run.unpublished"
    done = ok(keysync("run", "--resume"))
    assert done.stdout.startswith(f"run {run_id} ")
    assert [r["master_key"] for r in read_report(output / "master_key_registry.csv")] == ["X-1"]
    assert db_rows(tmp_path, "SELECT COUNT(*) FROM runs") == [(1,)]


def test_a_full_disk_while_staging_reports_keeps_the_rows_read_for_resume(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """ENOSPC (a report staged on /dev/full) is one line with the folder, exit 3, no debris."""
    before = committed_then_changed(tmp_path, keysync, project)
    output = tmp_path / "output"
    run = Background.held_at(tmp_path, "planning")
    run_id = re.search(r"run_id=(\S+)", "".join(run.lines))[1]  # type: ignore[index]
    staging = output / f".staging-{run_id}"
    staging.mkdir()
    (staging / "diff_missing_in_A.csv.part").symlink_to("/dev/full")  # as it is written
    run.release()
    assert run.process.wait(60) == 3
    assert run.lines[-1] == (
        f"keysync: error: cannot write the reports in {output}: No space left on device; "
        "make room (or fix the permissions), then `keysync run --resume` continues from "
        "the last checkpoint\n"
    )
    assert {p.name: p.read_bytes() for p in output.iterdir()} == before  # no staging left
    assert db_rows(tmp_path, f"SELECT outcome, exit_code FROM runs WHERE run_id = '{run_id}'") == [
        ("failed", 3)
    ]
    assert (tmp_path / "checkpoints" / run_id).is_dir()
    done = ok(keysync("run", "--resume"))
    assert done.stdout.startswith(f"run {run_id} ")  # the same run, finished
    assert db_rows(tmp_path, f"SELECT outcome FROM runs WHERE run_id = '{run_id}'") == [
        ("completed",)
    ]
    assert statuses(tmp_path) == {"X-1": "Proposed", "X-2": "Proposed"}
    assert not (tmp_path / "checkpoints" / run_id).exists()


def test_a_full_disk_failure_superseded_by_a_later_run_no_longer_offers_resume(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen: `keysync runs` kept "`keysync run --resume` continues from the last checkpoint"
    on a failed run whose checkpoint a later completed run had removed."""
    committed_then_changed(tmp_path, keysync, project)
    run = Background.held_at(tmp_path, "planning")
    run_id = re.search(r"run_id=(\S+)", "".join(run.lines))[1]  # type: ignore[index]
    staging = tmp_path / "output" / f".staging-{run_id}"
    staging.mkdir()
    (staging / "diff_missing_in_A.csv.part").symlink_to("/dev/full")
    run.release()
    assert run.process.wait(60) == 3
    ok(keysync("-q", "run"))
    (failed,) = [line for line in ok(keysync("runs")).stdout.splitlines() if run_id in line]
    assert " failed " in failed and failed.endswith(
        "; its checkpoint was superseded by a later run"
    )


def test_a_full_data_folder_names_the_lock_file_it_could_not_write(
    tmp_path: Path,
    keysync: RunKeysync,
    project: Callable[..., Path],
    full_disk: Callable[[Path, int], FullDisk],
) -> None:
    """Seen (full-disk hunt, tmpfs): ``keysync: error: no space left on device; make room,
    ...`` named no file: the run lock's write, whose error carries no file name."""
    project()
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    data = full_disk(tmp_path / "data", 4096)
    ok(keysync("-q", "run"))
    before = state_dump(tmp_path, with_runs=True)
    data.fill()
    done = keysync("run")
    assert done.returncode == 3
    assert done.stderr.splitlines()[-1] == (
        f"keysync: error: {tmp_path / 'data' / 'keysync.lock'}: no space left on device; "
        "make room, fix the permissions or move what is in the way, then run again"
    )
    assert "Traceback" not in done.stderr
    data.make_room()
    assert state_dump(tmp_path, with_runs=True) == before
    ok(keysync("-q", "run"))


def test_a_full_checkpoint_folder_at_the_start_says_where_and_leaves_nothing(
    tmp_path: Path,
    keysync: RunKeysync,
    project: Callable[..., Path],
    full_disk: Callable[[Path, int], FullDisk],
) -> None:
    """Seen (full-disk hunt, tmpfs): the checkpoint's header, its first write, failed with
    ``keysync: error: no space left on device; ...`` (no folder named) and left
    ``checkpoints/<run>/header.msgpack.tmp`` behind."""
    project()
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    checkpoints = full_disk(tmp_path / "checkpoints", 64)
    checkpoints.fill()
    done = keysync("run")
    assert done.returncode == 3
    assert re.fullmatch(
        f"keysync: error: cannot write checkpoint in {re.escape(str(checkpoints.folder))}/"
        r"\d{8}T\d{6}Z-\w+: No space left on device; make room \(or fix the permissions\), "
        "then run again",
        done.stderr.splitlines()[-1],
    ), done.stderr
    assert os.listdir(checkpoints.folder) == [".filler"]  # no run folder, no temp file
    assert db_rows(tmp_path, "SELECT outcome FROM runs") == [("completed",)]
    checkpoints.make_room()
    ok(keysync("-q", "run"))


def test_a_run_the_state_cannot_record_leaves_no_checkpoint_behind(
    tmp_path: Path,
    keysync: RunKeysync,
    project: Callable[..., Path],
    full_disk: Callable[[Path, int], FullDisk],
) -> None:
    """Seen (full-disk hunt, tmpfs): paths.data full as a run recorded itself: exit 3 and
    the state database named, but checkpoints/<run>/ stayed, of a run in no table, which
    no later run removed or resumed."""
    project(parallel=True)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    data = full_disk(tmp_path / "data", 4096)
    ok(keysync("-q", "run"))
    run = Background.held_at(tmp_path, "recording")
    data.fill()
    run.release()
    assert run.process.wait(60) == 3
    database = tmp_path / "data" / "keysync.db"
    assert run.lines[-1].startswith(
        f"keysync: error: cannot use the state database {database} (database or disk is full)"
    )
    assert list((tmp_path / "checkpoints").iterdir()) == []
    data.make_room()
    assert db_rows(tmp_path, "SELECT outcome FROM runs") == [("completed",)]
    done = ok(keysync("run", "--resume"))
    assert "no interrupted run to resume; running normally" in done.stderr


def test_a_full_disk_at_the_commit_keeps_the_checkpoint_and_says_resume(
    tmp_path: Path,
    keysync: RunKeysync,
    project: Callable[..., Path],
    full_disk: Callable[[Path, int], FullDisk],
) -> None:
    """Seen (full-disk hunt, tmpfs): paths.data full at the commit kept the checkpoint, but
    said "... then run again", which reads every row again (a full output/ says
    `--resume`), and `keysync runs` noted a failure it recorded as "OperationalError:
    database or disk is full"."""
    project(parallel=True)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    data = full_disk(tmp_path / "data", 4096)
    ok(keysync("-q", "run"))
    before = state_dump(tmp_path)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1", "X-2"], "C": ["K-1"]})
    run = Background.held_at(tmp_path, "committing")
    run_id = re.search(r"run_id=(\S+)", "".join(run.lines))[1]  # type: ignore[index]
    data.fill()
    run.release()
    assert run.process.wait(60) == 3
    told = (
        f"cannot write the state database {tmp_path / 'data' / 'keysync.db'} (database or "
        "disk is full); make room (or fix the permissions), then `keysync run --resume` "
        "continues from the last checkpoint"
    )
    assert run.lines[-1] == f"keysync: error: {told}\n"
    assert (tmp_path / "checkpoints" / run_id).is_dir()
    data.make_room()
    assert state_dump(tmp_path) == before  # the registry as it was
    # No room even to record the failure: the run is found interrupted, to resume too.
    noted = [line for line in ok(keysync("runs")).stdout.splitlines() if run_id in line]
    assert len(noted) == 1 and noted[0].endswith("resume with: keysync run --resume"), noted
    done = ok(keysync("run", "--resume"))
    assert done.stdout.startswith(f"run {run_id} ")
    assert statuses(tmp_path) == {"X-1": "Proposed", "X-2": "Proposed"}
    assert list((tmp_path / "checkpoints").iterdir()) == []


def test_a_full_disk_under_the_audit_log_record_leaves_no_temp_file(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen (full-disk hunt, tmpfs): a run that filled paths.data while it wrote
    ``audit_log.last.json`` (an optional record) ended fine but left its temp file."""
    project()
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    staged = tmp_path / "data" / ".audit_log.last.json.tmp"
    staged.parent.mkdir()
    staged.symlink_to("/dev/full")  # every write to it: ENOSPC
    ok(keysync("-q", "run"))
    assert not os.path.lexists(staged)
    assert not (tmp_path / "data" / "audit_log.last.json").exists()
    registry = read_report(tmp_path / "output" / "master_key_registry.csv")
    assert [r["master_key"] for r in registry] == ["X-1"]


def test_two_concurrent_runs_one_wins_the_other_exits_3(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    project(parallel=True)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    first = Background.held_at(tmp_path, "planning")
    second = keysync("run")
    assert second.returncode == 3
    running = db_rows(tmp_path, "SELECT run_id FROM runs")[0][0]
    message = second.stderr.strip().splitlines()[-1]
    assert f"another run (run {running}, pid {first.process.pid}, started " in message
    assert "holds the lock on" in message and "keysync.db" in message
    # A manual registry change waits for no one either.
    blocked = keysync("registry", "approve", "--all")
    assert blocked.returncode == 3 and f"run {running}" in blocked.stderr
    first.release()
    assert first.process.wait(60) == 0
    assert db_rows(tmp_path, "SELECT run_id, outcome FROM runs") == [(running, "completed")]
    assert db_rows(tmp_path, "PRAGMA integrity_check") == [("ok",)]
    assert statuses(tmp_path) == {"X-1": "Proposed"}
    ok(keysync("-q", "run"))  # and the lock is free again


def test_a_dry_run_change_by_hand_needs_no_lock_and_holds_none(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen (registry hunt): `approve --all --dry-run` took the run lock: refused while a
    run went on, and a cron run starting during its long listing failed (exit 3)."""
    project(parallel=True)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    # Held inside its commit's open transaction (seen, docs check: the dry run waited 30 s
    # for SQLite's write lock, then blamed "another program")
    running = Background.held_at(tmp_path, "mid-commit")
    shown = ok(keysync("registry", "approve", "--all", "--dry-run", timeout=20))
    assert shown.stdout == "X-1: Proposed -> Active (dry run)\n"
    assert ok(keysync("registry", "rekey", "--dry-run")).returncode == 0
    assert keysync("registry", "approve", "--all").returncode == 3  # a real one waits
    running.release()
    assert running.process.wait(60) == 0
    assert statuses(tmp_path) == {"X-1": "Proposed"}
    held = Background.held_at(tmp_path, "planning", "--dry-run")  # deprecate --dry-run too
    assert ok(keysync("registry", "deprecate", "X-1", "--dry-run")).returncode == 0
    held.release()
    assert held.process.wait(60) == 0


def test_a_refused_run_keys_leaves_the_inputs_alone(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """``run --keys N`` rewrites the inputs only once it may run: valid options, the lock."""
    project(parallel=True)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    before = {p.name: p.read_bytes() for p in (tmp_path / "input").iterdir()}
    bad = keysync("run", "--keys", "50", "--systems", "A,Z")
    assert bad.returncode == 2 and "--systems: unknown system Z" in bad.stderr
    assert not (tmp_path / "data" / "keysync.db").exists()  # a usage error changes nothing
    reading = Background.held_at(tmp_path, "planning")
    blocked = keysync("run", "--keys", "50")
    assert blocked.returncode == 3 and "holds the lock" in blocked.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "input").iterdir()} == before
    reading.kill()


def test_run_systems_with_an_unknown_system_is_a_usage_error_even_during_a_run(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    project(parallel=True)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    reading = Background.held_at(tmp_path, "planning")
    refused = keysync("run", "--systems", "A,Z")
    assert refused.returncode == 2, refused.stderr
    assert (
        refused.stderr.strip()
        .splitlines()[-1]
        .endswith("--systems: unknown system Z (configured: A, B, C)")
    )
    reading.kill()


def _as_a_user(keysync: RunKeysync) -> RunKeysync:
    """``keysync`` run so that file modes apply: as root, without the capability to ignore them."""
    if os.geteuid() != 0:
        return keysync
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: file modes cannot be tested")

    def run(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search", sys.executable]
        return subprocess.run(
            [*prefix, "-m", "keysync", *args],
            cwd=kwargs.get("cwd"),
            capture_output=True,
            text=True,
            timeout=120,
            env={k: v for k, v in os.environ.items() if not k.startswith("KEYSYNC_")},
        )

    return run  # type: ignore[return-value]


def test_a_state_database_that_cannot_be_written_is_one_line_and_exit_3(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    project()
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    user = _as_a_user(keysync)
    database, data = tmp_path / "data" / "keysync.db", tmp_path / "data"
    database.chmod(0o444)
    try:
        inputs = (tmp_path / "input" / "A.csv").read_bytes()
        for command in (("run",), ("run", "--keys", "5"), ("registry", "approve", "--all")):
            done = user("-q", *command, cwd=tmp_path)
            assert done.returncode == 3, (command, done.stderr)
            assert "Traceback" not in done.stderr
            last = done.stderr.strip().splitlines()[-1]
            assert last.startswith("keysync: error: cannot use the state database"), last
            assert "attempt to write a readonly database" in last and "writable" in last
        assert (tmp_path / "input" / "A.csv").read_bytes() == inputs  # a refused --keys too
    finally:
        database.chmod(0o644)
    ok(keysync("runs"))  # closes cleanly: SQLite removes keysync.db-wal and -shm
    assert not list(data.glob("keysync.db-*"))
    data.chmod(0o555)  # the file is readable, its folder is not writable (for -wal, -shm)
    try:
        done = user("runs", cwd=tmp_path)
        assert done.returncode == 3
        assert "move it aside" not in done.stderr  # the database is fine: keep it
        assert "cannot use the state database" in done.stderr and "writable" in done.stderr
    finally:
        data.chmod(0o755)
    ok(keysync("-q", "run"))


def test_runs_record_whether_a_run_approved_what_it_proposed_and_whether_it_resumed(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen: a run approving by provisioning.auto_approve showed auto_approve false in
    `keysync runs`, and `--resume` with nothing to resume showed resume true."""
    project(auto_approve=True)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    ok(keysync("-q", "run", "--resume"))  # nothing to resume: a plain run
    (flags,) = db_rows(tmp_path, "SELECT flags FROM runs")[0]
    recorded = json.loads(flags)
    rules = recorded.pop("rules")
    assert rules["normalize.pad_numbers"] == 0 and rules["provisioning.strategy"] == "mirror"
    assert recorded.pop("settings") == {
        "sources": "A,B,C",
        **{f"sources.{s}.key_column": "key" for s in "ABC"},
        "provisioning.auto_approve": True,
        "provisioning.deprecate_after_runs": 3,
    }
    assert recorded == {
        "dry_run": False,
        "auto_approve": True,
        "fail_on_diff": False,
        "fail_on": [],
        "resume": False,
        "keys": None,
        "user": os_user(),
        "systems": "A,B,C",
    }
    assert statuses(tmp_path) == {"X-1": "Active"}
    shown = ok(keysync("runs")).stdout.splitlines()[-1]
    assert " auto-approve systems=A,B,C " in shown
    summary = json.loads((tmp_path / "output" / "summary.json").read_text())
    assert summary["flags"] == json.loads(flags) and summary["resumed"] is False


def test_a_command_refused_by_a_held_lock_is_in_the_log_and_json_stderr_stays_json(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen: `keysync run` refused by a held lock (a cron job every night) wrote nothing to
    the log a collector reads; `--log-format json` mixed plain lines into JSON stderr."""
    project(parallel=True)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    held = Background.held_at(tmp_path, "planning")
    try:
        refused = keysync("-q", "run")
        in_json = keysync("--log-format", "json", "registry", "approve", "X-1")
    finally:
        held.kill()
    assert refused.returncode == in_json.returncode == 3
    (line,) = refused.stderr.splitlines()
    assert line.startswith("keysync: error: ") and "holds the lock" in line
    log_file = tmp_path / "data" / "logs" / "keysync.jsonl"
    events = [json.loads(text) for text in log_file.read_text().splitlines()]
    failed = [e for e in events if e["event"] == "command.failed"]
    assert [(e["command"], e["exit_code"], e["stage"]) for e in failed] == [
        ("keysync run", 3, "cli"),
        ("keysync registry approve", 3, "cli"),
    ]
    assert failed[0]["message"] == line.removeprefix("keysync: error: ")
    assert [json.loads(text) for text in in_json.stderr.splitlines()] == [failed[1]]
    approved = keysync("--log-format", "json", "registry", "approve", "X-1")
    assert approved.returncode == 0, approved.stderr
    lines = [json.loads(text) for text in approved.stderr.splitlines()]  # all JSON
    # The killed run's lock, the approval (file only on a console), the result.
    assert [e["event"] for e in lines] == ["lock.stale_cleared", "key.approved", "command.said"]
    assert lines[-1]["message"].startswith("approved 1 master key")
    assert log_file.read_text().splitlines()[-3:] == approved.stderr.splitlines()


def test_the_lock_of_a_killed_manual_change_says_where_to_see_whether_it_was_made(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen (failure hunt): after a kill -9'd `registry approve`, the stale-lock warning
    named its manual-... id but not how to tell whether the approval had landed."""
    project()
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    ok(keysync("registry", "approve", "X-1"))
    (approved,) = db_rows(tmp_path, "SELECT run_id FROM audit_events WHERE event = 'key.approved'")
    # As a `registry approve` killed while it held the lock leaves it (its process gone).
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    (tmp_path / "data" / "keysync.lock").write_text(
        json.dumps(
            {
                "run_id": approved[0],
                "pid": int(ended.stdout),
                "started_at": "2026-12-01T00:00:00Z",
                "purpose": "keysync registry approve",
            }
        )
    )
    ok(keysync("-q", "run"))
    log = (tmp_path / "data" / "logs" / "keysync.jsonl").read_text().splitlines()
    (cleared,) = [json.loads(line) for line in log if "lock.stale_cleared" in line]
    session = cleared["stale_run_id"]
    assert session == approved[0]
    assert cleared["detail"].endswith(
        f"; whether its changes were made: `keysync audit --run {session}`"
    )
    shown = json.loads(ok(keysync("audit", "--run", session, "--json")).stdout)
    assert [(e["event"], e["key"]) for e in shown] == [("key.approved", "X-1")]
    assert keysync("audit", "--run", "20260101T000000Z-abcd").returncode == 2  # not a session


def test_audit_of_a_manual_session_with_no_events_says_so_only_if_it_happened(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen: `audit --run` of a mistyped manual-... id (its last character changed) exited
    0 with "recorded nothing (it changed nothing, or was stopped before ...)", while a
    mistyped run id exits 2. A session's id is written without its events only in the
    lock file and, once a kill's stale lock is cleared, in the log: those prove it ran."""
    project()
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1", "X-2"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    release = tmp_path / ".release"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSYNC_")}
    env.update(KEYSYNC_TEST_PAUSE_AT="mid-change", KEYSYNC_TEST_PAUSE_UNTIL=str(release))
    held = subprocess.Popen(
        [sys.executable, "-m", "keysync", "registry", "approve", "X-1"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert held.stderr is not None
        for line in held.stderr:
            if "run.paused_for_tests" in line:
                break
        lock = json.loads((tmp_path / "data" / "keysync.lock").read_text())
        session = lock["run_id"]
        running = ok(keysync("audit", "--run", session))
        assert running.stdout == ""
        assert running.stderr == (
            f"no audit events under {session} yet: it is in progress (keysync "
            f"registry approve, pid {held.pid}, started {lock['started_at']}); its changes "
            "are recorded when it ends\n"
        )
    finally:
        held.kill()  # before its COMMIT: nothing changed, the lock file still names it
        held.wait(30)
    stopped = (
        f"no audit events: {session} recorded nothing (it was stopped before its "
        "changes were made: nothing was changed)\n"
    )
    assert ok(keysync("audit", "--run", session)).stderr == stopped
    ok(keysync("-q", "run"))  # clears the stale lock: the log's lock.stale_cleared names it
    assert (tmp_path / "data" / "keysync.lock").read_text() == ""
    assert ok(keysync("audit", "--run", session)).stderr == stopped
    assert statuses(tmp_path) == {"X-1": "Proposed", "X-2": "Proposed"}
    # A mistyped id is unknown, as a mistyped run id is; a session of that second is named.
    approved = ok(keysync("registry", "approve", "X-2"))
    real = approved.stderr.split("audit run id ")[1].rstrip(")\n")
    typo = real[:-1] + ("0" if real[-1] != "0" else "1")
    wrong = keysync("audit", "--run", typo)
    assert wrong.returncode == 2 and wrong.stdout == ""
    assert wrong.stderr == (
        f"keysync: error: unknown run {typo!r}: no run or manual change has that id; check "
        f"it: the audit trail has {real} from that second (a manual change that changed "
        "nothing, or was stopped before its commit, records nothing)\n"
    )
    never = keysync("audit", "--run", "manual-20260101T000000Z-abcd")
    assert never.returncode == 2
    assert never.stderr == (
        "keysync: error: unknown run 'manual-20260101T000000Z-abcd': no run or manual change "
        "has that id; check it against the run_id column of `keysync audit` (a manual change "
        "that changed nothing, or was stopped before its commit, records nothing)\n"
    )


def test_history_of_a_key_without_timestamps_says_so_instead_of_an_empty_last_seen(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen: `master key CUST-0007: Proposed (seen in B; last seen )`."""
    project()
    write_inputs(tmp_path, {"A": ["K-1"], "B": [("X-1", "")], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    shown = ok(keysync("history", "X-1")).stdout.splitlines()[-1]
    assert shown == "master key X-1: Proposed (seen in B; no last_seen_at)"
    # With one, the footer names the column: the table's LAST_SEEN is a run's time.
    write_inputs(tmp_path, {"A": ["K-1"], "B": [("X-1", "2026-01-02T00:00:00Z")], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    shown = ok(keysync("history", "X-1")).stdout.splitlines()[-1]
    assert shown == "master key X-1: Proposed (seen in B; last_seen_at 2026-01-02T00:00:00Z)"


def test_a_key_first_out_of_authority_during_an_outage_counts_the_peer_that_is_down(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen: K-1 left A while B (which held it) was down; its new entry said seen in C
    only, and when C dropped it too the Active key was deprecated, B still down and
    holding it as far as keysync knew (docs/state.md: an outage never makes a key look
    unseen). The entry now counts B with what B held last."""
    project(deprecate_after_runs=1)
    write_inputs(tmp_path, {"A": ["K-1", "K-9"], "B": ["K-1"], "C": ["K-9"]})
    ok(keysync("-q", "run"))
    write_inputs(tmp_path, {"A": ["K-9"], "C": ["K-1", "K-9"]})
    (tmp_path / "input" / "B.csv").unlink()
    assert keysync("-q", "run", "--auto-approve").returncode == 4
    entry = ("K-1", "Active", "C", "K-1", "B;C")
    query = "SELECT master_key, status, source_system, source_key, seen_in FROM master_keys"
    assert db_rows(tmp_path, query) == [entry]
    write_inputs(tmp_path, {"A": ["K-9"], "C": ["K-9"]})
    assert keysync("-q", "run").returncode == 4
    assert db_rows(tmp_path, query) == [("K-1", "Active", "C", "K-1", "B")]  # not deprecated
    write_inputs(tmp_path, {"A": ["K-9"], "B": ["K-1"], "C": ["K-9"]})
    ok(keysync("-q", "run"))  # B is back and still holds it: nothing changed
    assert db_rows(tmp_path, query) == [("K-1", "Active", "C", "K-1", "B")]
    events = db_rows(tmp_path, "SELECT event FROM audit_events WHERE key = 'K-1' ORDER BY seq")
    assert [e for (e,) in events] == ["key.proposed", "key.approved", "key.seen_in_changed"]


def test_changed_rules_are_warned_audited_and_old_master_keys_stay_findable(
    tmp_path: Path,
    keysync: RunKeysync,
    project: Callable[..., Path],
) -> None:
    """Seen: pad_numbers turned on between two full runs gave no word anywhere; the approved
    CUST-7 silently lost its systems while CUST-0007 was proposed, and `keysync history
    CUST-7` showed CUST-0007 instead of the approved key's own history."""
    config = project()
    write_inputs(tmp_path, {"A": ["CUST-1"], "B": ["cust_7"], "C": ["CUST-1"]})
    ok(keysync("-q", "run", "--auto-approve"))
    (first,) = db_rows(tmp_path, "SELECT run_id FROM runs")[0]
    config.write_text(config.read_text() + "normalize: {pad_numbers: 4}\n")
    second = keysync("-q", "run")
    assert second.returncode == 0, second.stderr
    detail = (
        f"the rules changed since run {first}: normalize.pad_numbers 0 -> 4; "
        "keys may take other forms now (or be rejected)"
    )
    warned = [line for line in second.stderr.splitlines() if "rules.changed" in line]
    assert len(warned) == 1 and detail in warned[0], second.stderr
    events = db_rows(tmp_path, "SELECT event, detail FROM audit_events ORDER BY seq")
    assert [e for e, _ in events if e.startswith("rules.")] == ["rules.changed"]
    assert next(d for e, d in events if e == "rules.changed").startswith(detail)
    assert statuses(tmp_path) == {"CUST-7": "Active", "CUST-0007": "Proposed"}
    shown = ok(keysync("history", "CUST-7")).stdout
    title, pointer, *rest = shown.splitlines()  # CUST-7's own, and where the key went on
    assert (title, pointer) == (
        "history of CUST-7",
        "CUST-7 is its key's form before the rules changed; under the rules now it is "
        "CUST-0007: `keysync history CUST-0007`",
    )
    assert "master key CUST-7: Active" in shown and "CUST-0007" not in "\n".join(rest)
    third = keysync("-q", "run")  # the same rules again: nothing to say
    assert third.returncode == 0 and "rules.changed" not in third.stderr


def test_quiet_json_stderr_still_has_the_line_of_a_non_zero_exit(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Review: `-q --log-format json run --fail-on-diff` exited 1 with nothing on stderr (the
    line was an info event, which -q leaves out), against "every non-zero exit prints one
    line"."""
    project()
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    done = keysync("-q", "--log-format", "json", "run", "--fail-on-diff")
    assert done.returncode == 1
    (line,) = [json.loads(text) for text in done.stderr.splitlines()]
    assert (line["event"], line["level"], line["exit_code"]) == ("command.failed", "error", 1)
    assert line["message"].startswith("discrepancies found") and line["run_id"]


def test_approve_names_every_unknown_key_and_changes_nothing(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen: `registry approve X-1 NOPE-1 NOPE-2` named only NOPE-1; fixing it and running
    again then failed on NOPE-2. A raw tab in a key broke the columns of the tables, an
    ESC recoloured the terminal."""
    project()
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1", "TAB\t7", "\x1b[31mRED-1"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    refused = keysync("registry", "approve", "X-1", "NOPE-1", "NOPE-2")
    assert refused.returncode == 2
    assert refused.stderr == (
        "keysync: error: 2 unknown master keys ('NOPE-1', 'NOPE-2'): no registry entry has "
        "them (see `keysync registry list`); nothing changed\n"
    )
    assert statuses(tmp_path) == {"31MRED-1": "Proposed", "TAB-7": "Proposed", "X-1": "Proposed"}
    pasted = keysync("registry", "approve", *(f"NOPE-{n}" for n in range(5000)))
    assert pasted.stderr.startswith("keysync: error: 5,000 unknown master keys ('NOPE-0', ")
    assert "'NOPE-9' and 4,990 more): no registry entry" in pasted.stderr  # one short line
    assert len(pasted.stderr) < 300
    looked_up = keysync("registry", "show", "NOPE-1")  # a read command changes nothing anyway
    assert looked_up.stderr == (
        "keysync: error: unknown master key 'NOPE-1': no registry entry has it "
        "(see `keysync registry list`)\n"
    )
    listed = ok(keysync("registry", "list")).stdout
    assert "TAB\\t7" in listed and "\\x1b[31mRED-1" in listed
    # Streamed with widths from the database, measured as the escapes print them.
    header, *rows = listed.splitlines()
    assert {row[header.index("SEEN_IN") - 2 :][:3] for row in rows} == {"  B"}, listed
    shown = ok(keysync("registry", "show", "TAB-7")).stdout
    assert "TAB\\t7" in shown
    assert "\t" not in listed + shown and "\x1b" not in listed + shown


def test_a_strategy_switch_is_said_and_audited_with_what_it_does(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen: switching namespaced -> mirror proposed already Active keys again under a
    second master key, with no word of it."""
    config = project(strategy="namespaced")
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    ok(keysync("-q", "run", "--auto-approve"))
    config.write_text(config.read_text().replace("namespaced", "mirror"))
    second = keysync("-q", "run")
    assert second.returncode == 0, second.stderr
    assert sum("rules.changed" in line for line in second.stderr.splitlines()) == 1
    (detail,) = db_rows(tmp_path, "SELECT detail FROM audit_events WHERE event = 'rules.changed'")
    (first,) = db_rows(tmp_path, "SELECT run_id FROM runs ORDER BY seq")[0]
    assert detail == (
        f"the rules changed since run {first}: "
        'provisioning.strategy "namespaced" -> "mirror"; new master keys take the new shape '
        "and existing ones keep theirs, so a key that has an entry of the old shape can be "
        "proposed again in the new one",
    )
    assert statuses(tmp_path) == {"B:X-1": "Active", "X-1": "Proposed"}


def test_manual_approvals_and_deprecations_are_in_the_log_one_event_per_key(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen: a collector saw no approval or deprecation made by hand, only the audit trail had
    them; the log now names each key, the user and the audit run id."""
    project()
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1", "X-2"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    ok(keysync("-q", "registry", "approve", "X-1", "X-2"))
    ok(keysync("-q", "registry", "deprecate", "X-2"))
    log_file = tmp_path / "data" / "logs" / "keysync.jsonl"
    events = [json.loads(line) for line in log_file.read_text().splitlines()]
    manual = [e for e in events if e["event"] in ("key.approved", "key.deprecated")]
    assert [(e["event"], e["master_key"]) for e in manual] == [
        ("key.approved", "X-1"),
        ("key.approved", "X-2"),
        ("key.deprecated", "X-2"),
    ]
    audit_ids = {row[0] for row in db_rows(tmp_path, "SELECT run_id FROM audit_events")}
    for e in manual:
        actor = e["reason"].rsplit("audit run id ", 1)[1].rstrip(")")
        assert actor in audit_ids and e["reason"].startswith("by hand (keysync registry ")


def test_a_system_taken_out_of_the_config_holds_nothing_in_the_registry(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path], write_config: Any
) -> None:
    """Seen: a system removed from (or renamed in) the config kept its last keys in
    seen_in for good, so their Active master keys were never deprecated, and a key
    proposed meanwhile did not count it: the registry disagreed with itself. A system
    that is down or left out with --systems still keeps what it held (an outage); one
    taken out of the config is a decision, and holds nothing."""
    project(deprecate_after_runs=1)
    write_inputs(tmp_path, {"A": ["K-9"], "B": ["K-1", "X-5"], "C": ["K-1"]})
    ok(keysync("-q", "run", "--auto-approve"))
    write_config(
        tmp_path,
        sources={s: {"path": f"./input/{s}.csv"} for s in "AC"},
        provisioning={"deprecate_after_runs": 1},
        processing={"parallel": False, "workers": 1},
    )
    write_inputs(tmp_path, {"A": ["K-9"], "C": ["K-1", "N-1"]})
    ok(keysync("-q", "run"))
    query = "SELECT master_key, status, seen_in FROM master_keys ORDER BY master_key"
    assert db_rows(tmp_path, query) == [
        ("K-1", "Active", "C"),
        ("N-1", "Proposed", "C"),
        ("X-5", "Deprecated", ""),  # held by B alone, and B is gone
    ]
    history = ok(keysync("history", "X-5")).stdout
    assert "B (not in the config)" in history  # the history keeps what B held
    project(deprecate_after_runs=1)  # B is back, its file unchanged
    ok(keysync("-q", "run"))
    assert db_rows(tmp_path, query) == [
        ("K-1", "Active", "B;C"),
        ("N-1", "Proposed", "C"),
        ("X-5", "Deprecated", "B"),  # seen again, still Deprecated (key.reappeared)
    ]


def test_a_key_with_mirror_and_namespaced_entries_is_shown_and_changed_whole(
    tmp_path: Path, keysync: RunKeysync, write_config: Any
) -> None:
    """Seen: after a switch from namespaced to mirror, `registry show x_1` and `approve x_1`
    found the mirror entry X-1 only and left B:X-1 and C:X-1, entries of the same key,
    as they were without a word (docs/state.md: a key finds all its entries)."""

    def configure(strategy: str, separator: str = ":") -> None:
        write_config(
            tmp_path,
            sources={s: {"path": f"./input/{s}.csv"} for s in SYSTEMS},
            provisioning={"strategy": strategy, "namespace_separator": separator},
            processing={"parallel": False, "workers": 1},
        )

    configure("namespaced")
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["x_1"], "C": ["X 1"]})
    ok(keysync("-q", "run"))
    configure("mirror", separator="/")  # entries under another separator are the key's too
    ok(keysync("-q", "run"))
    shown = json.loads(ok(keysync("registry", "show", "x_1", "--json")).stdout)
    assert [entry["master_key"] for entry in shown] == ["B:X-1", "C:X-1", "X-1"]
    approved = ok(keysync("registry", "approve", "x_1"))
    assert approved.stdout.splitlines() == [
        "B:X-1: Proposed -> Active",
        "C:X-1: Proposed -> Active",
        "X-1: Proposed -> Active",
    ]
    assert statuses(tmp_path) == {"B:X-1": "Active", "C:X-1": "Active", "X-1": "Active"}
    # A master key named exactly is that one entry.
    ok(keysync("-q", "registry", "deprecate", "B:X-1"))
    assert statuses(tmp_path) == {"B:X-1": "Deprecated", "C:X-1": "Active", "X-1": "Active"}


def test_a_mirror_entry_named_exactly_is_changed_alone_and_its_key_s_others_are_named(
    tmp_path: Path, keysync: RunKeysync, write_config: Any
) -> None:
    """Seen: after a switch namespaced -> mirror, `registry list` showed B:X-1, C:X-1 and
    the mirror entry X-1; `registry deprecate X-1` deprecated all three, for good (the
    lifecycle has no way back to Proposed). A name the registry lists is that entry."""
    config = write_config(
        tmp_path,
        sources={s: {"path": f"./input/{s}.csv"} for s in SYSTEMS},
        provisioning={"strategy": "namespaced"},
        processing={"parallel": False, "workers": 1},
    )
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["X-1"]})
    ok(keysync("-q", "run"))
    config.write_text(config.read_text().replace("namespaced", "mirror"))
    ok(keysync("-q", "run"))
    before = state_dump(tmp_path)
    note = "X-1 is also the key of B:X-1, C:X-1: name them to change them too"
    dry = ok(keysync("registry", "deprecate", "X-1", "--dry-run"))
    assert dry.stdout == "X-1: Proposed -> Deprecated (dry run)\n"
    assert dry.stderr.splitlines() == [
        note,
        "would deprecate 1 master key (dry run: nothing changed)",
    ]
    assert state_dump(tmp_path) == before
    done = ok(keysync("registry", "deprecate", "X-1", "--reason", "DQ-7"))
    assert done.stdout == "X-1: Proposed -> Deprecated\n"
    assert done.stderr.splitlines()[0] == note
    assert statuses(tmp_path) == {"B:X-1": "Proposed", "C:X-1": "Proposed", "X-1": "Deprecated"}
    events = db_rows(tmp_path, "SELECT detail FROM audit_events WHERE event = 'key.deprecated'")
    assert [detail.split(" (")[0] for (detail,) in events] == [
        "master key X-1: Proposed -> Deprecated by `keysync registry deprecate`"
    ]
    # Named in the same command, an entry is not in the note; the others still are.
    approved = ok(keysync("registry", "approve", "X-1", "B:X-1"))
    assert approved.stdout.splitlines() == [
        "X-1: Deprecated -> Active",
        "B:X-1: Proposed -> Active",
    ]
    assert approved.stderr.splitlines()[0] == (
        "X-1 is also the key of C:X-1: name it to change it too"
    )
    # A raw key that is no entry's name is still the whole key, and needs no note.
    whole = ok(keysync("registry", "approve", "x_1"))
    assert whole.stdout.splitlines() == [
        "B:X-1: already Active (unchanged)",
        "C:X-1: Proposed -> Active",
        "X-1: already Active (unchanged)",
    ]
    assert "also the key of" not in whole.stderr
    # `show` names the entry first, then its key's others.
    shown = json.loads(ok(keysync("registry", "show", "X-1", "--json")).stdout)
    assert [entry["master_key"] for entry in shown] == ["X-1", "B:X-1", "C:X-1"]
    # An entry already in the target status needs no naming.
    ok(keysync("-q", "registry", "deprecate", "C:X-1"))
    again = ok(keysync("registry", "deprecate", "X-1"))
    assert again.stderr.splitlines()[0] == "X-1 is also the key of B:X-1: name it to change it too"
    assert statuses(tmp_path) == {"B:X-1": "Active", "C:X-1": "Deprecated", "X-1": "Deprecated"}


def test_a_lost_database_beside_earlier_runs_traces_is_refused_not_started_afresh(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen: with keysync.db deleted (a restore gone wrong), `run` made a new registry,
    set approved and deprecated keys back to Proposed, and published an audit_log.csv
    that had forgotten the old trail, without a word."""
    project()
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    ok(keysync("-q", "run", "--auto-approve"))
    trail = (tmp_path / "output" / "audit_log.csv").read_bytes()
    database = tmp_path / "data" / "keysync.db"
    database.unlink()
    refused = keysync("-q", "run")
    assert refused.returncode == 3
    assert refused.stderr.splitlines() == [
        f"keysync: error: {database} is missing, but earlier runs left "
        f"{tmp_path / 'data' / 'audit_log.last.json'}: put keysync.db back from a backup "
        "(a new one would start the registry and the audit trail from nothing), or move "
        f"{tmp_path / 'data'} and {tmp_path / 'output'} aside to start afresh on purpose"
    ]
    assert not database.exists()
    assert (tmp_path / "output" / "audit_log.csv").read_bytes() == trail
    # The reading commands say the same, rather than "no runs yet: run keysync run first".
    for command in (["runs"], ["audit", "--json"], ["registry", "list"], ["history", "X-1"]):
        read = keysync("-q", *command)
        assert (read.returncode, read.stderr) == (3, refused.stderr), command
    shutil.move(tmp_path / "data", tmp_path / "old-data")  # afresh, on purpose
    shutil.move(tmp_path / "output", tmp_path / "old-output")
    ok(keysync("-q", "run"))
    assert statuses(tmp_path) == {"X-1": "Proposed"}


def test_a_data_folder_that_is_not_the_one_meant_is_refused_while_the_reports_show_runs(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen (registry hunt): paths.data changed by a typo (or a volume that did not
    mount, an empty folder) started a new registry: an approval and its reason were
    gone from the published audit_log.csv and master_key_registry.csv, exit 0."""
    config = project()
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    ok(keysync("-q", "registry", "approve", "X-1", "--reason", "DQ-7"))
    ok(keysync("-q", "run"))
    published = {p.name: p.read_bytes() for p in (tmp_path / "output").iterdir()}
    settings = yaml.safe_load(config.read_text())
    settings.setdefault("paths", {})["data"] = "./state"
    config.write_text(yaml.safe_dump(settings))
    refused = keysync("-q", "run", "--auto-approve")
    assert refused.returncode == 3
    database = tmp_path / "state" / "keysync.db"
    assert refused.stderr.splitlines() == [
        f"keysync: error: {database} is missing, but earlier runs left "
        f"{tmp_path / 'output' / 'audit_log.csv'}: point paths.data at their state, or put "
        "keysync.db back from a backup (a new one would start the registry and the audit "
        f"trail from nothing), or move {tmp_path / 'output'} aside to start afresh on purpose"
    ]
    assert {p.name: p.read_bytes() for p in (tmp_path / "output").iterdir()} == published
    assert not database.exists()
    # A first dry run's audit_log.csv lists only planned events: no trace of a state.
    shutil.rmtree(tmp_path / "output")
    ok(keysync("-q", "run", "--dry-run"))
    ok(keysync("-q", "run"))
    registry = read_report(tmp_path / "output" / "master_key_registry.csv")
    assert [(r["master_key"], r["status"]) for r in registry] == [("X-1", "Proposed")]


def test_a_status_not_known_lists_the_statuses_as_written(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen (walkthrough): `--status Bogus` listed 'proposed', 'active', 'deprecated', where
    every page and table writes Proposed; any case is still taken."""
    project()
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    wrong = keysync("registry", "list", "--status", "Bogus")
    assert wrong.returncode == 2
    assert "'Bogus' is not one of 'Proposed', 'Active', 'Deprecated'" in wrong.stderr
    assert "X-1" in ok(keysync("registry", "list", "--status", "proposed")).stdout
    # Seen (review): --help still listed them lowercased.
    assert "--status [Proposed|Active|Deprecated]" in ok(keysync("registry", "list", "-h")).stdout


def test_a_first_event_that_quotes_a_line_starting_with_a_hash_is_a_trace_too(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen (oracle): the first event's detail quoted a raw key with a line break and a
    "#" after it; the trace check dropped that line as one of the header's comments, found
    no event, and a new registry started over the lost one."""
    project()
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["AB\n#1"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    body = (tmp_path / "output" / "audit_log.csv").read_text().split("\ntimestamp,")[1]
    assert body.splitlines()[1].startswith('"2026') and body.splitlines()[2].startswith("#1'")
    shutil.move(tmp_path / "data", tmp_path / "lost")
    refused = keysync("-q", "run")
    assert refused.returncode == 3
    assert "earlier runs left" in refused.stderr and "audit_log.csv" in refused.stderr


def test_runs_counts_every_registry_change_of_a_run(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen (audit review): a run that changed 42 keys' seen_in, or brought 19 back,
    showed `-` in the counts column, like a run that changed nothing."""
    project()
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1", "X-1"]})
    ok(keysync("-q", "run"))
    last = ok(keysync("runs")).stdout.splitlines()[-1]
    assert " completed  0     seen_in_changed=1" in last, last


def test_a_degraded_run_names_the_missing_system_in_runs_and_the_audit_trail(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen: `runs` and `run.degraded` said "degraded" with no system named; only the
    summary.json of that run (replaced by the next run) had it."""
    project()
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    (tmp_path / "input" / "C.csv").unlink()
    assert keysync("-q", "run").returncode == 4
    (line,) = ok(keysync("runs")).stdout.splitlines()[1:]
    assert line.endswith(" degraded  4     proposed=1  degraded: C unavailable, not compared")
    (detail,) = db_rows(tmp_path, "SELECT detail FROM audit_events WHERE event = 'run.degraded'")
    assert detail == (
        "outcome degraded, exit 4, proposed 1, registry_total 1; "
        "degraded: C unavailable, not compared",
    )


def test_a_database_cell_that_is_not_utf8_is_damage_not_a_traceback(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen (review): one overwritten page of master_keys gave `Could not decode to UTF-8
    column 'status'`, an OperationalError with no SQLite code: a traceback, exit 1."""
    project()
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    database = tmp_path / "data" / "keysync.db"
    with sqlite3.connect(database) as db:  # what a damaged page looks like to a reader
        db.execute("UPDATE master_keys SET source_key = CAST(x'fffe' AS TEXT)")
    for command in (["registry", "list"], ["registry", "export"], ["run"]):
        done = keysync("-q", *command)
        assert done.returncode == 3 and "Traceback" not in done.stderr, (command, done.stderr)
        assert done.stderr.splitlines()[-1].startswith(
            f"keysync: error: the state database {database} is damaged (Could not decode"
        ), command


def test_a_damaged_database_is_one_line_and_exit_3_in_every_command(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen: with pages of keysync.db overwritten, `registry list`, `show`, `audit`,
    `history` and `run` ended in a DatabaseError traceback and exit 1."""
    project()
    write_inputs(tmp_path, {"A": ["K-1"], "B": [f"X-{n}" for n in range(300)], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    database = tmp_path / "data" / "keysync.db"
    with database.open("r+b") as handle:  # every page but the first (the schema)
        handle.seek(4096)
        handle.write(b"\xff" * (database.stat().st_size - 4096))
    for command in (["registry", "list"], ["registry", "show", "X-1"], ["audit"], ["run"]):
        done = keysync("-q", *command)
        assert done.returncode == 3, (command, done.stderr)
        assert "Traceback" not in done.stderr
        assert done.stderr.splitlines()[-1] == (
            f"keysync: error: the state database {database} is damaged (database disk image "
            "is malformed); put keysync.db back from a backup (the registry, the history and "
            "the audit trail are in it), or save what is left with `sqlite3 keysync.db "
            ".recover`, then run again"
        ), command


def test_audit_filters_by_event_key_time_and_keeps_the_latest_n(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """A compliance reader asks "what was deprecated since Monday" or "what happened to
    this key": filters in the database, not a whole trail piped through jq."""
    project(deprecate_after_runs=1)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1", "X-2"], "C": ["K-1"]})
    ok(keysync("-q", "run", "--auto-approve"))
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-2"], "C": ["K-1"]})
    ok(keysync("-q", "run"))

    def events(*args: str) -> list[tuple[str, str, str]]:
        shown = json.loads(ok(keysync("audit", "--json", *args)).stdout)
        return [(e["event"], e["system"], e["key"]) for e in shown]

    assert events("--event", "key.deprecated") == [("key.deprecated", "B", "X-1")]
    assert events("--key", "x_1") == [  # a raw key finds its normalized form
        ("key.proposed", "B", "X-1"),
        ("key.approved", "B", "X-1"),
        ("key.deprecated", "B", "X-1"),
        ("key.seen_in_changed", "B", "X-1"),
    ]
    assert events("--event", "run.completed", "--event", "key.deprecated", "--limit", "2") == [
        ("key.deprecated", "B", "X-1"),
        ("run.completed", "", ""),
    ]
    assert events("--until", "2000-01-01") == [] and len(events("--since", "2000-01-01")) == 8
    # A time with its offset is that instant: 03:00+05:00 is 22:00Z the day before.
    first = json.loads(ok(keysync("audit", "--json")).stdout)[0]["timestamp"]
    moment = datetime.strptime(first, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    ahead = moment.astimezone(timezone(timedelta(hours=5))).isoformat()
    assert len(events("--since", ahead)) == 8 and events("--until", ahead) == []
    # A log line's time, with its fraction (seen: refused): --until keeps the events of
    # that second (before it + 0.5 s), --since drops the fraction; a time with a space too.
    log_time = moment.strftime("%Y-%m-%dT%H:%M:%S") + ".5Z"
    assert events("--until", log_time) == events("--until", first.replace("Z", "") + ".9Z")
    assert events("--until", log_time)[0] == ("key.proposed", "B", "X-1")
    assert len(events("--since", log_time)) == 8  # a fraction is dropped going forward
    assert len(events("--since", moment.strftime("%Y-%m-%d %H:%M:%S"))) == 8
    table = ok(keysync("audit", "--key", "X-2", "--limit", "1")).stdout.splitlines()
    assert [line.split()[3:6] for line in table] == [
        ["EVENT", "SYSTEM", "KEY"],
        ["key.approved", "B", "X-2"],
    ]
    nothing = ok(keysync("audit", "--event", "key.approved", "--key", "K-1"))
    assert nothing.stdout == "" and nothing.stderr == "no audit events match\n"
    none_yet = ok(keysync("audit", "--event", "key.rekeyed"))  # an event, not in this trail
    assert none_yet.stderr == (
        "no audit events match: the trail has no key.rekeyed (its events: key.approved, "
        "key.deprecated, key.proposed, key.seen_in_changed, run.completed)\n"
    )
    bad = keysync("audit", "--since", "yesterday")
    assert bad.returncode == 2 and "'--since': 'yesterday' does not match" in bad.stderr


ALL_EVENTS = (
    "key.approved, key.deprecated, key.name_taken, key.proposed, key.reappeared, "
    "key.rekeyed, key.resolved, key.seen_in_changed, key.unresolved, rules.changed, "
    "run.completed, run.degraded, run.failed, run.interrupted, settings.changed"
)


def test_audit_refuses_an_event_name_no_event_has_and_suggests_the_nearest(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen: `audit --event key.deprecate` (or bogus) exited 0 with no line on stdout: a
    typo read as "nothing was deprecated". Before the first run too (no trail to ask)."""
    project()
    for before_a_run in True, False:
        typo = keysync("audit", "--event", "key.deprecate")
        assert typo.returncode == 2 and typo.stdout == "", typo.stderr
        assert typo.stderr == (
            "keysync: error: --event key.deprecate: no such event; did you mean "
            f"key.deprecated? (events: {ALL_EVENTS})\n"
        ), before_a_run
        if before_a_run:
            write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
            ok(keysync("-q", "run"))
    bogus = keysync("audit", "--event", "bogus", "--json")
    assert (bogus.returncode, bogus.stdout) == (2, "")
    assert bogus.stderr == f"keysync: error: --event bogus: no such event (events: {ALL_EVENTS})\n"
    two = keysync("audit", "--event", "key.proposed", "--event", "run.complete", "--event", "x")
    assert two.returncode == 2 and two.stderr == (
        "keysync: error: --event run.complete, x: no such events; did you mean run.completed "
        f"for run.complete? (events: {ALL_EVENTS})\n"
    )


def test_the_audit_events_listed_in_the_docs_are_those_audit_accepts() -> None:
    """docs/state.md's table of audit events is what `--event` is checked against."""
    from keysync.state import AUDIT_EVENTS

    page = (Path(__file__).parent.parent / "docs" / "state.md").read_text(encoding="utf-8")
    section = page.split("## Audit trail", 1)[1].split("\nManual changes", 1)[0]
    first_cells = [line.split(" | ")[0] for line in section.splitlines() if line[:3] == "| `"]
    documented = set(re.findall(r"`([a-z_.]+)`", " ".join(first_cells)))
    assert documented == AUDIT_EVENTS
    assert ", ".join(sorted(AUDIT_EVENTS)) == ALL_EVENTS


@pytest.mark.parametrize("blank", ["", " \t"])
def test_an_empty_key_is_refused_where_a_key_is_given(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path], blank: str
) -> None:
    """Seen: `audit --key ""` (an unset shell variable, quoted) listed every event, as if
    no filter were given; "  " listed none. A key named by hand is never blank."""
    project()
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    a_key = "give a key (as a report shows it)"
    a_master_key = "give a master key (as `keysync registry list` shows it)"
    for command, line in [
        (["audit", "--key", blank], f"--key is empty: {a_key}"),
        (["audit", "--key", "X-1", "--key", blank, "--json"], f"--key is empty: {a_key}"),
        (["history", blank], f"KEY is empty: {a_key}"),
        (["registry", "show", blank], f"KEY is empty: {a_master_key}"),
        (["registry", "approve", "X-1", blank], f"KEY is empty: {a_master_key}"),
        (["registry", "deprecate", blank, "--dry-run"], f"KEY is empty: {a_master_key}"),
    ]:
        done = keysync(*command)
        assert (done.returncode, done.stdout) == (2, ""), command
        assert done.stderr == f"keysync: error: {line}\n", command
    assert statuses(tmp_path) == {"X-1": "Proposed"}


def test_registry_list_limit_says_how_many_it_left_out(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    project()
    write_inputs(tmp_path, {"A": ["K-1"], "B": [f"X-{n}" for n in range(5)], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    shown = ok(keysync("registry", "list", "--limit", "2"))
    assert [line.split()[0] for line in shown.stdout.splitlines()] == ["MASTER_KEY", "X-0", "X-1"]
    assert shown.stderr == "2 of 5 master keys shown (--limit 2)\n"
    assert ok(keysync("registry", "list", "--limit", "5")).stderr == ""


def test_a_long_key_is_listed_whole_so_it_can_be_approved_as_copied(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen (hunt): `registry list` and `audit` cut cells at 60 characters with '…', so a
    long master key copied from the listing named no entry in `registry approve`."""
    project()
    long_key = "ORDER-" + "7" * 90
    write_inputs(tmp_path, {"A": ["K-1"], "B": [long_key], "C": ["K-1"]})
    ok(keysync("-q", "run"))

    listed = ok(keysync("registry", "list")).stdout.splitlines()
    copied = listed[1].split()[0]
    assert copied == long_key and listed[1].split()[4] == long_key  # master_key, source_key
    ok(keysync("registry", "approve", copied))
    assert statuses(tmp_path) == {long_key: "Active"}
    trail = ok(keysync("audit", "--key", long_key)).stdout
    assert f"  {long_key}  " in trail


def test_a_new_namespace_separator_keeps_reports_on_the_entries_that_stand_for_the_keys(
    tmp_path: Path, keysync: RunKeysync, write_config: Any
) -> None:
    """Seen: after namespace_separator ":" -> "/", diff_missing_in_A.csv named master key
    B/X-1, which no entry has, with an empty registry_status; the Active B:X-1 that still
    stands for B's X-1 (nothing was proposed again) was nowhere in the report."""

    def configure(separator: str) -> None:
        write_config(
            tmp_path,
            sources={s: {"path": f"./input/{s}.csv"} for s in SYSTEMS},
            provisioning={"strategy": "namespaced", "namespace_separator": separator},
            processing={"parallel": False, "workers": 1},
        )

    configure(":")
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    ok(keysync("-q", "run", "--auto-approve"))
    configure("/")
    done = ok(keysync("run"))
    (warning,) = [line for line in done.stderr.splitlines() if "rules.changed" in line]
    assert 'provisioning.namespace_separator \\":\\" -> \\"/\\"; new namespaced' in warning
    in_a = read_report(tmp_path / "output" / "diff_missing_in_A.csv")
    assert [(r["key"], r["proposed_master_key"], r["registry_status"]) for r in in_a] == [
        ("X-1", "B:X-1", "Active")
    ]
    assert statuses(tmp_path) == {"B:X-1": "Active"}


def test_registry_export_rows_are_those_of_the_registry_report_hash_cells_quoted(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen: export left a source_key such as CUST-#-12 unquoted, which
    pandas.read_csv(comment="#") cuts; master_key_registry.csv quotes such rows."""
    project()
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["CUST-#-12", "X-1"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    report = (tmp_path / "output" / "master_key_registry.csv").read_text(encoding="utf-8")
    rows = [line for line in report.splitlines() if not line.startswith("#")]
    exported = ok(keysync("registry", "export")).stdout.splitlines()
    assert exported == rows
    assert exported[1].startswith('"CUST-12","Proposed","mirror","B","CUST-#-12","B",')


def test_runs_and_audit_say_what_a_killed_or_dry_run_left(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen: a kill -9'd run got no word that a later run had superseded its checkpoint
    (a Ctrl-C'd one did); `audit --run <dry run>` said only "no audit events"."""
    project(parallel=True)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    Background.held_at(tmp_path, "planning").kill()
    ok(keysync("-q", "run"))
    killed = ok(keysync("runs")).stdout.splitlines()[1]
    assert " interrupted " in killed and "ended without finishing" in killed
    assert killed.endswith("; its checkpoint was superseded by a later run")
    ok(keysync("-q", "run", "--dry-run"))
    dry_id = json.loads(ok(keysync("runs", "--json")).stdout)[-1]["run_id"]
    said = ok(keysync("audit", "--run", dry_id))
    assert said.stdout == "" and said.stderr == (
        f"run {dry_id} was a dry run: it recorded no audit events (a dry run that finishes "
        "lists the registry events it would record in its audit_log.csv, with an empty seq)\n"
    )


def test_approve_and_history_print_keys_with_control_characters_escaped(
    tmp_path: Path, keysync: RunKeysync, write_config: Any
) -> None:
    """Seen: with strip_non_alnum off, a peer's key holding ESC coloured the reviewer's
    terminal through `registry approve` and the `history` title; tables escaped it."""
    write_config(
        tmp_path,
        sources={s: {"path": f"./input/{s}.csv"} for s in SYSTEMS},
        normalize={"strip_non_alnum": False},
        processing={"parallel": False, "workers": 1},
    )
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["\x1b[31mRED"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    approved = ok(keysync("registry", "approve", "\x1b[31mRED")).stdout
    assert approved == "\\x1b[31MRED: Proposed -> Active\n"
    history = ok(keysync("history", "\x1b[31mRED")).stdout
    assert "\x1b" not in history
    assert history.startswith("history of \\x1b[31MRED (normalized from '\\x1b[31mRED')")
    # The audit table is streamed with widths from the database: measured escaped too.
    for listing in [], ["--limit", "2"], ["--event", "key.approved"]:
        table = ok(keysync("audit", *listing)).stdout.splitlines()
        starts = {line.index("master key ") for line in table if "master key " in line}
        assert starts == {table[0].index("DETAIL")}, table


def test_a_key_whose_master_key_name_another_key_has_gets_none_and_a_warning(
    tmp_path: Path, keysync: RunKeysync, write_config: Any
) -> None:
    """Seen: with namespace_separator "-", B's key X-1 got the namespaced master key B-X-1;
    after a switch to mirror, C's key B-X-1 got no master key, and diff_missing_in_A.csv,
    `registry show` and `history` pointed at B's entry as if it were C's."""

    def configure(strategy: str) -> None:
        write_config(
            tmp_path,
            sources={s: {"path": f"./input/{s}.csv"} for s in SYSTEMS},
            provisioning={"strategy": strategy, "namespace_separator": "-"},
            processing={"parallel": False, "workers": 1},
        )

    configure("namespaced")
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    configure("mirror")
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1", "b x 1"]})
    done = ok(keysync("-q", "run"))
    (warning,) = [line for line in done.stderr.splitlines() if "registry.name_taken" in line]
    assert "count=1" in warning and "C's B-X-1 (B-X-1)" in warning
    in_a = read_report(tmp_path / "output" / "diff_missing_in_A.csv")
    rows = {(r["key"], r["system"]): (r["proposed_master_key"], r["registry_status"]) for r in in_a}
    assert rows[("B-X-1", "C")] == ("", "")  # not B's entry
    assert rows[("X-1", "B")] == ("X-1", "Proposed")
    assert statuses(tmp_path) == {"B-X-1": "Proposed", "X-1": "Proposed"}

    # Not proposing a master key is a provisioning decision: in the audit trail, once.
    def taken() -> list[tuple[bool, str, str, str]]:
        trail = read_report(tmp_path / "output" / "audit_log.csv")
        return [
            (r["seq"] != "", r["system"], r["key"], r["detail"])
            for r in trail
            if r["event"] == "key.name_taken"
        ]

    first = (
        True,
        "C",
        "B-X-1",
        "no master key for C key B-X-1: the name B-X-1 is B's namespaced entry for its key "
        "X-1 (Proposed); see `keysync config check` on namespace_separator",
    )
    assert taken() == [first]
    ok(keysync("-q", "run"))  # still taken: warned again, not recorded again
    ok(keysync("-q", "run", "--systems", "A,B"))  # C not read: its conflict stands
    assert taken() == [first]
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    ok(keysync("-q", "run"))  # gone from C
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1", "B-X-1"]})
    ok(keysync("-q", "run", "--dry-run"))
    assert taken() == [first, (False, *first[1:])]  # would record it; saved nothing
    ok(keysync("-q", "run"))  # back: a new decision
    assert taken() == [first, first]


@pytest.mark.parametrize(
    ("keys", "command"),
    [(40_000, "registry list"), (3_000, "registry list"), (3_000, "audit")],
)
def test_a_listing_cut_short_by_its_reader_exits_141_quietly_not_1(
    tmp_path: Path, project: Callable[..., Path], keys: int, command: str
) -> None:
    """Seen: `keysync registry list | head -1` exited 1, keysync's "discrepancies found".
    Then (lifecycle hunt): a table printed in one write bigger than the pipe's buffer
    (3,000 rows) exited 0, as if all of it had been read: the pipe took a part, and
    Python's buffered stdout returned that short count and dropped the rest."""
    project()
    # More than any pipe buffer holds: the writer meets the closed end.
    write_inputs(tmp_path, {"A": ["K-1"], "B": [f"X-{n}" for n in range(keys)], "C": ["K-1"]})
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSYNC_")}
    assert (
        subprocess.run(
            [sys.executable, "-m", "keysync", "-q", "run"], cwd=tmp_path, env=env
        ).returncode
        == 0
    )
    listing = subprocess.Popen(
        [sys.executable, "-m", "keysync", *command.split()],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert listing.stdout is not None and listing.stderr is not None
    assert listing.stdout.readline().split()[0] in (b"MASTER_KEY", b"TIMESTAMP")
    time.sleep(0.5)  # the writer is now blocked in its write, part of it in the pipe
    listing.stdout.close()  # as `| head -1` does
    assert listing.wait(60) == 141
    assert listing.stderr.read() == b""


def test_quiet_keeps_a_manual_change_s_note_off_the_terminal_not_out_of_the_log(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen (log hunt): `keysync -q registry approve K` still printed "approved 1 master
    key ...", where the docs say -q shows only warnings and errors."""
    project()
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    done = ok(keysync("-q", "registry", "approve", "X-1"))
    assert (done.stdout, done.stderr) == ("", "")
    logged = [json.loads(line) for line in (tmp_path / "data/logs/keysync.jsonl").open()]
    assert logged[-1]["event"] == "command.said"
    assert logged[-1]["message"].startswith("approved 1 master key (audit run id manual-")
    refused = keysync("-q", "registry", "approve", "NOPE-1")
    assert refused.returncode == 2 and refused.stderr.startswith("keysync: error: unknown ")


def test_approve_and_deprecate_dry_run_show_the_changes_and_make_none(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """`registry approve --all` acted on 1,525 keys with no way to see them first."""
    project()
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1", "X-2"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    before = state_dump(tmp_path)
    shown = ok(keysync("registry", "approve", "--all", "--dry-run"))
    # Each line says it (journeys hunt: stdout alone, in a file, read as changes made).
    assert shown.stdout.splitlines() == [
        "X-1: Proposed -> Active (dry run)",
        "X-2: Proposed -> Active (dry run)",
    ]
    assert shown.stderr == "would approve 2 master keys (dry run: nothing changed)\n"
    deprecating = ok(keysync("registry", "deprecate", "X-1", "--dry-run"))
    assert deprecating.stdout == "X-1: Proposed -> Deprecated (dry run)\n"
    assert state_dump(tmp_path) == before  # no status, no audit event
    events = [json.loads(line) for line in (tmp_path / "data/logs/keysync.jsonl").open()]
    assert not [e for e in events if e["event"] in ("key.approved", "key.deprecated")]


NOTHING_TO_REKEY = (
    "no master key to rekey: each has its key's form under the rules now, or has handed "
    "over to that form's entry\n"
)


def _rules(tmp_path: Path, write_config: Any, **normalize: Any) -> None:
    write_config(
        tmp_path,
        sources={s: {"path": f"./input/{s}.csv"} for s in SYSTEMS},
        normalize=normalize,
        provisioning={"deprecate_after_runs": 1},
        processing={"parallel": False, "workers": 1},
    )


def test_after_a_rule_change_the_old_form_s_name_acts_on_its_own_entry(
    tmp_path: Path, keysync: RunKeysync, write_config: Any
) -> None:
    """Seen (audit review): after pad_numbers 0 -> 3, `registry list` showed X-12 beside
    X-012; `registry deprecate X-12` deprecated X-012 (what X-12 normalizes to now), the
    live one, and X-12 could not be reached by any command."""
    _rules(tmp_path, write_config)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-12"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    _rules(tmp_path, write_config, pad_numbers=3)
    ok(keysync("-q", "run"))
    assert statuses(tmp_path) == {"X-012": "Proposed", "X-12": "Proposed"}
    assert ok(keysync("registry", "show", "X-12")).stdout.startswith("master_key     X-12\n")
    done = ok(keysync("registry", "deprecate", "X-12"))
    assert done.stdout == "X-12: Proposed -> Deprecated\n"
    assert statuses(tmp_path) == {"X-012": "Proposed", "X-12": "Deprecated"}
    # A raw key is still normalized under the rules now: x_12 is X-012.
    assert ok(keysync("registry", "approve", "x_12")).stdout == "X-012: Proposed -> Active\n"


def test_rekey_after_a_rule_change_carries_approvals_to_the_new_forms(
    tmp_path: Path, keysync: RunKeysync, write_config: Any
) -> None:
    """Seen (UX review): pad_numbers 0 -> 6 proposed every key again in its new form and
    deprecated every approved one a few runs later; nothing linked old and new. rekey
    carries each approval over, and each deprecation someone made."""
    _rules(tmp_path, write_config)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-12", "Y-3", "Z-7", "W-1"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    ok(keysync("-q", "registry", "approve", "X-12", "Y-3", "Z-7"))
    ok(keysync("-q", "registry", "deprecate", "Z-7"))  # a decision: it carries too
    _rules(tmp_path, write_config, pad_numbers=4)
    ok(keysync("-q", "run"))  # X-0012 ... proposed; X-12, Y-3 deprecated as unseen (1 run)
    before = state_dump(tmp_path)
    planned = ok(keysync("registry", "rekey", "--dry-run"))
    assert planned.stdout.splitlines() == [
        "W-1 -> W-0001: W-1 Deprecated (was Proposed) (dry run)",
        "X-12 -> X-0012: Active carried, X-12 Deprecated (a run deprecated it as unseen "
        "after the rules changed) (dry run)",
        "Y-3 -> Y-0003: Active carried, Y-3 Deprecated (a run deprecated it as unseen "
        "after the rules changed) (dry run)",
        "Z-7 -> Z-0007: Deprecated carried (a decision: deprecated by hand) (dry run)",
    ]
    assert planned.stderr == "would rekey 4 master keys (dry run: nothing changed)\n"
    assert state_dump(tmp_path) == before
    done = ok(keysync("registry", "rekey", "--reason", "DQ-7: pad_numbers"))
    assert done.stderr.startswith("rekeyed 4 master keys (audit run id manual-")
    logged = [json.loads(line) for line in (tmp_path / "data/logs/keysync.jsonl").open()]
    assert [
        (e["master_key"], e["new_master_key"], e["user_reason"])
        for e in logged
        if e["event"] == "key.rekeyed"
    ] == [
        ("W-1", "W-0001", "DQ-7: pad_numbers"),
        ("X-12", "X-0012", "DQ-7: pad_numbers"),
        ("Y-3", "Y-0003", "DQ-7: pad_numbers"),
        ("Z-7", "Z-0007", "DQ-7: pad_numbers"),
    ]
    assert statuses(tmp_path) == {
        "W-0001": "Proposed",
        "W-1": "Deprecated",
        "X-0012": "Active",
        "X-12": "Deprecated",
        "Y-0003": "Active",
        "Y-3": "Deprecated",
        "Z-0007": "Deprecated",
        "Z-7": "Deprecated",
    }
    session = done.stderr.split("audit run id ")[1].rstrip(")\n")
    audit = json.loads(ok(keysync("audit", "--run", session, "--json")).stdout)
    assert [(e["event"], e["key"]) for e in audit] == [
        ("key.deprecated", "W-1"),
        ("key.approved", "X-0012"),
        ("key.approved", "Y-0003"),
        ("key.deprecated", "Z-0007"),
    ]
    assert audit[3]["detail"].startswith(
        "master key Z-0007: Proposed -> Deprecated, carried from Z-7 (its form before the "
        "rules changed, deprecated there by hand) by `keysync registry rekey` (user "
    )
    assert audit[1]["detail"].startswith(
        "master key X-0012: Proposed -> Active, carried from X-12 (its form before the rules "
        "changed) by `keysync registry rekey` (user "
    )
    ok(keysync("-q", "run"))  # the carried keys are seen in their new forms: nothing moves
    assert statuses(tmp_path)["X-0012"] == "Active"
    again = ok(keysync("registry", "rekey"))  # Deprecated old forms are left as they are
    assert again.stdout == "W-1: left as it is (it is Deprecated)\n"  # Z-7's is carried
    assert again.stderr == "nothing rekeyed: the entries above are left as they are\n"
    # The rules changed back (seen, journeys hunt: every approval was lost, rekey said the
    # old forms "are Deprecated", and only approving each by name brought them back). The
    # old forms were Deprecated by the first rekey, not by a person: they take it back.
    _rules(tmp_path, write_config)
    ok(keysync("-q", "run"))  # X-0012, Y-0003 unseen: deprecated after 1 run
    back = ok(keysync("registry", "rekey"))
    assert back.stdout.splitlines() == [
        "W-0001: left as it is (W-1 is Deprecated; `keysync registry approve W-1` reinstates it)",
        "X-0012 -> X-12: Active carried, X-0012 Deprecated (a run deprecated it as unseen "
        "after the rules changed)",
        "Y-0003 -> Y-3: Active carried, Y-0003 Deprecated (a run deprecated it as unseen "
        "after the rules changed)",
    ]  # Z-0007's deprecation, carried from Z-7, is Z-7's still: nothing to do
    assert {k: v for k, v in statuses(tmp_path).items() if "-0" not in k} == {
        "W-1": "Deprecated",
        "X-12": "Active",
        "Y-3": "Active",
        "Z-7": "Deprecated",  # deprecated by hand: a decision, kept
    }
    assert statuses(tmp_path)["Z-0007"] == "Deprecated"
    session = back.stderr.split("audit run id ")[1].rstrip(")\n")
    audit = json.loads(ok(keysync("audit", "--run", session, "--json")).stdout)
    assert audit[0]["detail"].startswith(
        "master key X-12: Deprecated -> Active, carried from X-0012 (its form before the rules "
        "changed) by `keysync registry rekey` (user "
    )


def test_rekey_before_the_first_run_under_new_rules_makes_the_new_entries(
    tmp_path: Path, keysync: RunKeysync, write_config: Any
) -> None:
    _rules(tmp_path, write_config)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-12"], "C": ["K-1"]})
    ok(keysync("-q", "run", "--auto-approve"))
    _rules(tmp_path, write_config, pad_numbers=4)
    done = ok(keysync("registry", "rekey"))
    assert done.stdout == "X-12 -> X-0012 (made): Active carried, X-12 Deprecated\n"
    ok(keysync("-q", "run"))  # X-0012 exists: not proposed again, and it is seen
    query = "SELECT master_key, status, seen_in FROM master_keys ORDER BY master_key"
    assert db_rows(tmp_path, query) == [("X-0012", "Active", "B"), ("X-12", "Deprecated", "")]
    events = db_rows(tmp_path, "SELECT event FROM audit_events WHERE key = 'X-0012' ORDER BY seq")
    assert [e for (e,) in events] == ["key.rekeyed"]


def test_a_second_rekey_does_not_list_carried_approvals_as_left_alone(
    tmp_path: Path, keysync: RunKeysync, write_config: Any
) -> None:
    """Seen (audit hunt): rules changed, `registry rekey` before any run under them, then
    `registry rekey` again (or after the next run): every entry whose approval the first
    one carried was listed as "X-12: left as it is (it is Deprecated)", as if its approval
    had not been carried; 1,525 such lines for the README's first session."""
    _rules(tmp_path, write_config)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-12", "Y-3"], "C": ["K-1"]})
    ok(keysync("-q", "run", "--auto-approve"))
    ok(keysync("-q", "registry", "deprecate", "Y-3"))  # a decision: carried, once
    _rules(tmp_path, write_config, pad_numbers=4)
    done = ok(keysync("registry", "rekey"))
    assert done.stdout == (
        "X-12 -> X-0012 (made): Active carried, X-12 Deprecated\n"
        "Y-3 -> Y-0003 (made): Deprecated carried (a decision: deprecated by hand)\n"
    )
    for _ in range(2):
        again = ok(keysync("registry", "rekey"))
        assert again.stdout == ""
        assert again.stderr == NOTHING_TO_REKEY
        ok(keysync("-q", "run"))
    assert statuses(tmp_path) == {
        "X-0012": "Active",
        "X-12": "Deprecated",
        "Y-0003": "Deprecated",
        "Y-3": "Deprecated",
    }


def test_rekey_carries_a_deprecation_by_hand_to_the_new_form_as_it_carries_approvals(
    tmp_path: Path, keysync: RunKeysync, write_config: Any
) -> None:
    """Seen (lifecycle hunt): Y-3 deprecated by hand (a duplicate), pad_numbers 0 -> 4 and
    `registry rekey`: Y-0003 was proposed again, as if never decided ("Y-3: left as it is");
    with --auto-approve it was Active, matched again. A deprecation is a decision about
    the key, as an approval is: rekey carries it, with an audit event. A decision on the
    new form stays (V-0005 approved by hand), and where the rules merge an approved key
    and a deprecated one (M-01, M-1 -> M-0001) the approval is carried and the line says
    how to deprecate it."""
    _rules(tmp_path, write_config)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["Y-3", "V-5", "M-01", "M-1"], "C": ["K-1"]})
    ok(keysync("-q", "run", "--auto-approve"))
    ok(keysync("-q", "registry", "deprecate", "Y-3", "V-5", "M-1", "--reason", "duplicates"))
    _rules(tmp_path, write_config, pad_numbers=4)
    ok(keysync("-q", "run", "--auto-approve"))  # Y-0003, V-0005, M-0001 new: approved
    ok(keysync("-q", "registry", "deprecate", "V-0005"))
    ok(keysync("-q", "registry", "approve", "V-0005", "--reason", "V-5 was a mistake"))
    done = ok(keysync("registry", "rekey"))
    assert done.stdout.splitlines() == [
        "M-1: left as it is (M-0001 is Active, carried from M-01; `keysync registry "
        "deprecate M-0001` deprecates it too)",
        "V-5: left as it is (V-0005 is Active; `keysync registry deprecate V-0005` "
        "deprecates it too)",
        "Y-3 -> Y-0003: Deprecated carried (a decision: deprecated by hand)",
    ]
    assert done.stderr.startswith("rekeyed 1 master key (audit run id manual-")
    assert statuses(tmp_path) == {
        "M-0001": "Active",
        "M-01": "Deprecated",
        "M-1": "Deprecated",
        "V-0005": "Active",
        "V-5": "Deprecated",
        "Y-0003": "Deprecated",
        "Y-3": "Deprecated",
    }
    session = done.stderr.split("audit run id ")[1].rstrip(")\n")
    (carried,) = json.loads(ok(keysync("audit", "--run", session, "--json")).stdout)
    assert (carried["event"], carried["key"]) == ("key.deprecated", "Y-0003")
    assert carried["detail"] == (
        "master key Y-0003: Active -> Deprecated, carried from Y-3 (its form before the "
        f"rules changed, deprecated there by hand) by `keysync registry rekey` (user {os_user()})"
    )
    # The next run keeps it (a Deprecated key seen again stays Deprecated), and a second
    # change of the rules carries the decision on: a carried deprecation is one too.
    ok(keysync("-q", "run", "--auto-approve"))
    assert statuses(tmp_path)["Y-0003"] == "Deprecated"
    _rules(tmp_path, write_config, pad_numbers=6)
    ok(keysync("-q", "registry", "rekey"))
    assert statuses(tmp_path)["Y-000003"] == "Deprecated"
    made = db_rows(tmp_path, "SELECT detail FROM audit_events WHERE key = 'Y-000003'")
    assert made == [
        (
            "master key Y-000003 (mirror) made for the key of Y-0003 in its form under the "
            "rules now, Deprecated as Y-0003 was (deprecated there by hand), by `keysync "
            f"registry rekey` (user {os_user()})",
        )
    ]
    again = ok(keysync("registry", "rekey"))
    assert "Y-" not in again.stdout  # carried: nothing left to say of Y-3 or Y-0003


def test_rekey_carries_a_decision_to_each_key_a_rule_change_splits_the_old_form_into(
    tmp_path: Path, keysync: RunKeysync, write_config: Any
) -> None:
    """Seen (lifecycle hunt): pad_numbers 4 -> 0 split X-0001 (B's X-1 and C's X-01, one
    key under the old rules, Active) into X-1 and X-01: rekey carried the approval to
    X-1, the form of its source_key, and X-01 was left Proposed, silently, as if never
    approved; a deprecation by hand (Y-0002) was lost on Y-02 the same way."""
    _rules(tmp_path, write_config, pad_numbers=4)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1", "Y-2"], "C": ["K-1", "X-01", "Y-02"]})
    ok(keysync("-q", "run", "--auto-approve"))
    ok(keysync("-q", "registry", "deprecate", "Y-0002"))
    _rules(tmp_path, write_config)
    ok(keysync("-q", "run"))
    done = ok(keysync("registry", "rekey"))
    assert done.stdout.splitlines() == [
        "X-0001 -> X-1: Active carried, X-0001 Deprecated (a run deprecated it as unseen "
        "after the rules changed)",
        "X-0001 -> X-01: Active carried (the rules split X-0001's key: C's X-01 is X-01 now)",
        "Y-0002 -> Y-2: Deprecated carried (a decision: deprecated by hand)",
        "Y-0002 -> Y-02: Deprecated carried (the rules split Y-0002's key: C's Y-02 is Y-02 now)",
    ]
    assert statuses(tmp_path) == {
        "X-0001": "Deprecated",
        "X-01": "Active",
        "X-1": "Active",
        "Y-0002": "Deprecated",
        "Y-02": "Deprecated",
        "Y-2": "Deprecated",
    }
    query = "SELECT event, detail FROM audit_events WHERE key = 'X-01' AND run_id LIKE 'manual-%'"
    assert db_rows(tmp_path, query) == [
        (
            "key.approved",
            "master key X-01: Proposed -> Active, carried from X-0001 (its form before the "
            "rules changed; the rules split it: C's X-01 is X-01 now) by `keysync registry "
            f"rekey` (user {os_user()})",
        )
    ]
    again = ok(keysync("registry", "rekey"))
    assert (again.stdout, again.stderr) == ("", NOTHING_TO_REKEY)


def test_a_raw_key_approved_after_a_rule_change_before_rekey_names_its_old_entry(
    tmp_path: Path, keysync: RunKeysync, write_config: Any
) -> None:
    """Seen (lifecycle hunt): pad_numbers 0 -> 4 in the config, then `registry approve
    x_12`: "unknown master key 'x_12': no registry entry has it", though X-12 was that
    key's entry; x_12 is X-0012 under the rules now, which no entry has before a run or
    a rekey. The line names the entry of its old form, before and after the next run."""
    _rules(tmp_path, write_config)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-12"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    _rules(tmp_path, write_config, pad_numbers=4)
    hint = (
        "; 'x_12' is X-12 under the rules before they changed: an entry keeps its old "
        "form's name until `keysync registry rekey` carries it to the form now (name it, "
        "or rekey first)"
    )
    refused = keysync("registry", "approve", "x_12")
    assert (refused.returncode, refused.stdout) == (2, "")
    assert refused.stderr == (
        "keysync: error: unknown master key 'x_12': no registry entry has it (see "
        f"`keysync registry list`){hint}; nothing changed\n"
    )
    shown = keysync("registry", "show", "x_12")
    assert shown.returncode == 2 and shown.stderr.endswith(f"list`){hint}\n")
    assert statuses(tmp_path) == {"X-12": "Proposed"}
    assert ok(keysync("registry", "approve", "X-12")).stdout == "X-12: Proposed -> Active\n"


def test_after_two_rule_changes_rekey_lists_no_carried_approval_as_left_alone(
    tmp_path: Path, keysync: RunKeysync, write_config: Any
) -> None:
    """Seen (lifecycle hunt): pad_numbers 0 -> 4, a run, rekey (X-12's approval to X-0012),
    then 4 -> 6 and a run that proposed X-000012: rekey carried X-0012's approval to
    X-000012 and listed "X-12: left as it is (it is Deprecated)", as if an approval had
    been left behind: it took X-000012 as the run left it, Proposed."""
    _rules(tmp_path, write_config)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-12"], "C": ["K-1"]})
    ok(keysync("-q", "run", "--auto-approve"))
    _rules(tmp_path, write_config, pad_numbers=4)
    ok(keysync("-q", "run"))
    ok(keysync("-q", "registry", "rekey"))
    _rules(tmp_path, write_config, pad_numbers=6)
    ok(keysync("-q", "run"))
    done = ok(keysync("registry", "rekey"))
    assert done.stdout == (
        "X-0012 -> X-000012: Active carried, X-0012 Deprecated (a run deprecated it as "
        "unseen after the rules changed)\n"
    )
    assert statuses(tmp_path) == {
        "X-000012": "Active",
        "X-0012": "Deprecated",
        "X-12": "Deprecated",
    }


@pytest.mark.parametrize("strategy", ["mirror", "namespaced"])
def test_a_rekeyed_entry_is_seen_where_its_key_is_so_the_next_run_records_nothing(
    tmp_path: Path, keysync: RunKeysync, write_config: Any, strategy: str
) -> None:
    """Seen: X-1 (B's, then A's too: resolved), pad_numbers 0 -> 3, a run, then `registry
    rekey`: the new X-001 said "seen in no system" and was not in the authority, though A
    and B held it; the next run recorded a false `key.resolved` "X-001 now appears in A"
    and `key.seen_in_changed (none) -> A;B`."""

    def configure(**normalize: Any) -> None:
        write_config(
            tmp_path,
            sources={s: {"path": f"./input/{s}.csv"} for s in SYSTEMS},
            normalize=normalize,
            provisioning={"strategy": strategy},
            processing={"parallel": False, "workers": 1},
        )

    configure()
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["K-1", "X-1"], "C": ["K-1"]})
    ok(keysync("-q", "run", "--auto-approve"))
    write_inputs(tmp_path, {"A": ["K-1", ("X-1", "2026-01-02T00:00:00Z")]})
    ok(keysync("-q", "run"))  # key.resolved X-1
    configure(pad_numbers=3)
    ok(keysync("-q", "run"))
    ok(keysync("-q", "registry", "rekey"))
    name = "X-001" if strategy == "mirror" else "B:X-001"
    query = (
        "SELECT master_key, status, source_system, source_key, seen_in, last_seen_at,"
        f" in_authority FROM master_keys WHERE master_key = '{name}'"
    )
    made = [(name, "Active", "B", "X-1", "A;B", "2026-01-02T00:00:00Z", 1)]
    assert db_rows(tmp_path, query) == made
    shown = json.loads(ok(keysync("registry", "show", name, "--json")).stdout)[0]
    assert (shown["seen_in"], shown["in_authority"]) == ("A;B", True)
    history = ok(keysync("history", name)).stdout
    assert f"master key {name}: Active (seen in A;B; " in history
    seq = db_rows(tmp_path, "SELECT MAX(seq) FROM audit_events")[0][0]
    ok(keysync("-q", "run"))
    events = db_rows(tmp_path, f"SELECT event FROM audit_events WHERE seq > {seq}")
    assert events == [("run.completed",)]  # no key.resolved, no key.seen_in_changed
    assert db_rows(tmp_path, query) == made


@pytest.mark.parametrize("unread", ["unavailable", "left out"])
def test_a_rekeyed_entry_is_seen_in_a_peer_not_read_since_the_rules_changed(
    tmp_path: Path, keysync: RunKeysync, write_config: Any, unread: str
) -> None:
    """Seen (lifecycle hunt): C down (its file missing: a degraded run, exit 4) in the
    first run after pad_numbers 0 -> 4, then `registry rekey`: X-0012 was seen in B alone,
    though C held X-12 when last read, and Z-0005 (C's only) in no system; the next run
    still without C deprecated Z-0005 as unseen, and the one with C back recorded
    `seen_in B -> B;C` for a key whose holders never changed. C's history knows the old
    forms only: what it held is the old entry's seen_in, as runs keep it."""
    inputs: Inputs = {"A": ["K-1"], "B": ["X-12"], "C": ["K-1", "X-12", "Z-5"]}
    write_inputs(tmp_path, inputs)
    _rules(tmp_path, write_config)
    ok(keysync("-q", "run", "--auto-approve"))
    _rules(tmp_path, write_config, pad_numbers=4)
    if unread == "unavailable":
        (tmp_path / "input" / "C.csv").unlink()
        assert keysync("-q", "run").returncode == 4
    else:
        ok(keysync("-q", "run", "--systems", "A,B"))
    done = ok(keysync("registry", "rekey"))
    assert done.stdout.splitlines() == [
        "X-12 -> X-0012: Active carried, X-12 Deprecated; seen_in B -> B;C",
        "Z-5 -> Z-0005 (made): Active carried, Z-5 Deprecated",
    ]
    query = "SELECT master_key, status, seen_in FROM master_keys WHERE key != source_key"
    made = [("X-0012", "Active", "B;C"), ("Z-0005", "Active", "C")]
    assert db_rows(tmp_path, query) == made
    session = done.stderr.split("audit run id ")[1].rstrip(")\n")
    audit = json.loads(ok(keysync("audit", "--run", session, "--json")).stdout)
    assert audit[0]["event"] == "key.seen_in_changed"
    assert audit[0]["detail"] == (
        "master key X-0012: seen_in B -> B;C: C, not read since the rules changed, held X-12 "
        f"(its form before) when last read, by `keysync registry rekey` (user {os_user()})"
    )
    seq = db_rows(tmp_path, "SELECT MAX(seq) FROM audit_events")[0][0]
    if unread == "unavailable":  # still down: C keeps what it held, nothing is unseen
        assert keysync("-q", "run").returncode == 4
        assert db_rows(tmp_path, query) == made
    write_inputs(tmp_path, inputs)
    ok(keysync("-q", "run"))  # C back: it holds what the registry says
    assert db_rows(tmp_path, query) == made
    events = db_rows(tmp_path, f"SELECT event, key FROM audit_events WHERE seq > {seq}")
    # The old forms' entries lose C (it holds the new forms now); the new ones: nothing.
    assert [(e, k) for e, k in events if e.startswith("key.")] == [
        ("key.seen_in_changed", "X-12"),
        ("key.seen_in_changed", "Z-5"),
    ]


def test_runs_marks_the_run_in_which_the_rules_or_settings_changed_and_cuts_no_flag(
    tmp_path: Path, keysync: RunKeysync, write_config: Any
) -> None:
    """Seen (lifecycle hunt): `keysync runs` gave no sign of the run that met new rules
    (its rules.changed event was in `audit` only), so a compliance officer scanning it
    for why keys were proposed again saw a run like any other; and a flags cell over 60
    characters was cut with '…' (the --fail-on kinds, the user): what the run was told
    to do, lost."""

    def configure(after: int = 1, **normalize: Any) -> None:
        write_config(
            tmp_path,
            sources={s: {"path": f"./input/{s}.csv"} for s in SYSTEMS},
            normalize=normalize,
            provisioning={"deprecate_after_runs": after},
            processing={"parallel": False, "workers": 1},
        )

    configure()
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-12"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    configure(pad_numbers=4)
    ok(keysync("-q", "run", "--dry-run"))  # records no event: the next real run does
    kinds = "missing-in-a,missing-from-system,duplicates,rejected"
    assert keysync("-q", "run", "--fail-on", kinds).returncode == 1
    ok(keysync("-q", "run"))
    configure(after=2, pad_numbers=4)
    ok(keysync("-q", "run"))
    records = json.loads(ok(keysync("runs", "--json")).stdout)
    assert [(r["rules_changed"], r["settings_changed"]) for r in records] == [
        (False, False),
        (False, False),
        (True, False),
        (False, False),
        (False, True),
    ]
    query = "SELECT run_id, event FROM audit_events WHERE event LIKE '%s.changed' ORDER BY seq"
    assert db_rows(tmp_path, query) == [
        (records[2]["run_id"], "rules.changed"),
        (records[4]["run_id"], "settings.changed"),
    ]
    table = ok(keysync("runs")).stdout.splitlines()
    user = os_user()
    assert [row.split("  ")[0] for row in table[1:]] == [r["run_id"] for r in records]
    flags = [re.split(r"\s{2,}", row)[4] for row in table[1:]]
    assert flags == [
        f"systems=A,B,C user={user}",
        f"dry-run systems=A,B,C user={user}",
        "rules-changed fail-on=missing-in-a,missing-from-system,duplicates,rejected "
        f"systems=A,B,C user={user}",
        f"systems=A,B,C user={user}",
        f"settings-changed systems=A,B,C user={user}",
    ]


def test_runs_at_a_narrow_terminal_puts_each_note_under_its_run(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen (lifecycle hunt): a run's note (a degraded run's, an interrupted one's with
    how to resume) made `keysync runs` rows ~260 characters wide, each wrapped across a
    terminal. At a terminal narrower than the table, the note goes under its row, whole;
    into a pipe or a file, one line a run, as before."""
    project()
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    (tmp_path / "input" / "C.csv").unlink()
    assert keysync("-q", "run").returncode == 4
    piped = ok(keysync("runs")).stdout.splitlines()
    assert len(piped) == 3 and piped[2].endswith("  degraded: C unavailable, not compared")
    exit_code, said = _at_a_terminal(tmp_path, "runs", COLUMNS="120")
    assert exit_code == 0
    shown = said.replace("\r\n", "\n").splitlines()
    assert [line.rstrip() for line in shown[:3]] == [
        piped[0].removesuffix("NOTE").rstrip(),
        piped[1],
        piped[2].removesuffix("degraded: C unavailable, not compared").rstrip(),
    ]
    assert shown[3:] == ["    note: degraded: C unavailable, not compared"]


def test_a_key_that_normalizes_to_nothing_is_refused_alike_by_audit_and_history(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen (lifecycle hunt): `audit --key "#!?"` said "no audit events match", exit 0, as
    if the key had a clean record, where `history "#!?"` said it names no key, exit 2."""
    project()
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1", "#!?"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    why = (
        "'#!?': the key normalizes to nothing: the rules keep only ASCII A-Z and 0-9 (joined "
        "by '-'), so it names no key (empty-key); give a key as a system exports it or a "
        "report shows it\n"
    )
    history = keysync("history", "#!?")
    assert (history.returncode, history.stdout) == (2, "")
    assert history.stderr == "keysync: error: " + why
    for args in (["--key", "#!?"], ["--key", "X-1", "--key", "#!?", "--json"]):
        audit = keysync("audit", *args)
        assert (audit.returncode, audit.stdout) == (2, "")
        assert audit.stderr == "keysync: error: --key " + why
    assert ok(keysync("audit", "--key", "x_1")).stdout.count("key.proposed") == 1
    # Seen (a new user's walkthrough): a key over the limit was echoed whole as "never seen".
    history = keysync("history", "k" * 2000)
    assert (history.returncode, history.stderr) == (
        2,
        "keysync: error: key has 2000 characters, the limit is 256 "
        "(processing.max_key_length): no system has it (a run rejects a row with such a key: "
        "too-long, in rejected_rows.csv)\n",
    )


def test_history_finds_a_master_key_longer_than_the_limit_of_raw_keys(
    tmp_path: Path, keysync: RunKeysync, write_config: Callable[..., Path]
) -> None:
    """Seen (review): the limit is on raw keys; a namespaced master key, or one padded
    (pad_numbers), is longer, and `history` of it was refused as too long."""
    write_config(
        tmp_path,
        sources={s: {"path": f"./input/{s}.csv"} for s in SYSTEMS},
        normalize={"pad_numbers": 6},
        processing={"parallel": False, "max_key_length": 10},
        provisioning={"strategy": "namespaced"},
    )
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1-2"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    for name in ("B:X-000001-000002", "X-000001-000002", "X-1-2"):
        shown = keysync("history", name)
        assert shown.returncode == 0, (name, shown.stderr)
        assert "X-000001-000002" in shown.stdout, name


def test_history_of_a_key_s_old_form_after_rekey_names_its_form_now(
    tmp_path: Path, keysync: RunKeysync, write_config: Any
) -> None:
    """Seen (lifecycle hunt): after pad_numbers 0 -> 4 and `registry rekey`, `audit --key
    X-12` told the key's story in both forms (X-12's approval, then X-0012's carried one)
    and `history X-12` the old form's only, ending "master key X-12: Deprecated (seen in
    no system)", as if the key had gone: nothing said where its story went on."""
    _rules(tmp_path, write_config)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-12"], "C": ["K-1"]})
    ok(keysync("-q", "run", "--auto-approve"))
    _rules(tmp_path, write_config, pad_numbers=4)
    ok(keysync("-q", "run"))
    ok(keysync("-q", "registry", "rekey"))
    audit = json.loads(ok(keysync("audit", "--key", "X-12", "--json")).stdout)
    assert {e["key"] for e in audit} == {"X-12", "X-0012"}
    shown = ok(keysync("history", "X-12")).stdout.splitlines()
    assert shown[:2] == [
        "history of X-12",
        "X-12 is its key's form before the rules changed; under the rules now it is X-0012: "
        "`keysync history X-0012`",
    ]
    assert shown[-1].startswith("master key X-12: Deprecated (seen in no system; ")
    assert json.loads(ok(keysync("history", "X-12", "--json")).stdout)["key_now"] == "X-0012"
    now = ok(keysync("history", "x_12")).stdout.splitlines()
    assert now[0] == "history of X-0012 (normalized from 'x_12')"
    assert now[-1].startswith("master key X-0012: Active (seen in B; ")


def test_generate_into_the_inputs_waits_for_no_run_it_would_pull_the_files_from(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen: `keysync generate` replaced A.csv..C.csv while a run was reading them; the run
    then published reports of files that no longer existed. It takes the run lock now
    (as `run --keys` does), unless it writes elsewhere (--out)."""
    project(parallel=True)
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    before = {p.name: p.read_bytes() for p in (tmp_path / "input").iterdir()}
    held = Background.held_at(tmp_path, "planning")
    try:
        refused = keysync("generate", "--keys", "20")
        elsewhere = keysync("-q", "generate", "--keys", "20", "--out", str(tmp_path / "other"))
    finally:
        held.kill()
    assert refused.returncode == 3
    (line,) = refused.stderr.splitlines()
    assert line.startswith("keysync: error: another run (run ") and "holds the lock" in line
    assert {p.name: p.read_bytes() for p in (tmp_path / "input").iterdir()} == before
    assert elsewhere.returncode == 0, elsewhere.stderr


def test_an_empty_database_file_is_no_runs_yet_and_reading_commands_leave_it_empty(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen: a 0-byte keysync.db (touched) was 'no runs recorded yet', and `runs` wrote the
    schema into it; only `run` creates the database (docs/state.md)."""
    project()
    database = tmp_path / "data" / "keysync.db"
    database.parent.mkdir()
    database.touch()
    shown = ok(keysync("runs"))
    assert shown.stderr == (
        f"keysync: no runs yet ({database} is empty): run `keysync run` first\n"
    )
    assert database.stat().st_size == 0
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["X-1"], "C": ["K-1"]})
    ok(keysync("-q", "run"))
    assert statuses(tmp_path) == {"X-1": "Proposed"}


def test_history_shows_a_configured_system_no_run_could_read_yet(
    tmp_path: Path, keysync: RunKeysync, project: Callable[..., Path]
) -> None:
    """Seen: a peer unavailable in every run so far had no row at all in `history`."""
    project()
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["K-1"]})  # C.csv never exists
    assert keysync("-q", "run").returncode == 4
    rows = ok(keysync("history", "K-1")).stdout.splitlines()
    assert rows[-1].split()[:4] == ["C", "never", "read", "(no"]
    shown = json.loads(ok(keysync("history", "K-1", "--json")).stdout)["systems"]
    assert [(s["system"], s["present"], s["note"]) for s in shown][-1] == (
        "C",
        False,
        "never read (no run could)",
    )
    # Seen (lifecycle hunt): a peer that runs left out with --systems was said to be one
    # no run could read, as if it were broken.
    write_inputs(tmp_path, {"A": ["K-1"], "B": ["K-1"], "C": ["K-1"]})
    ok(keysync("-q", "run", "--systems", "A,B"))
    shown = json.loads(ok(keysync("history", "K-1", "--json")).stdout)["systems"]
    assert shown[-1]["note"] == "never read (no run could)"  # the first run tried C
    shutil.rmtree(tmp_path / "data")  # afresh: the state and the reports of it
    shutil.rmtree(tmp_path / "output")
    ok(keysync("-q", "run", "--systems", "A,B"))
    shown = json.loads(ok(keysync("history", "K-1", "--json")).stdout)["systems"]
    assert shown[-1]["note"] == "never read (no run has tried)"
