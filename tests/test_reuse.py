"""Incremental mode when nothing changed: the last run's reports reused (keysync/replay.py).

A reused run must leave exactly what a comparing incremental run leaves on the same
inputs: the same report bytes but for the header's run id and time, the same
summary.json but for the run's own id, times and durations, the same registry,
history, audit trail and run record. And anything that could make a run decide
otherwise, or any report not as the last run wrote it, must make the run compare.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import RunKeysync
from test_accuracy import read_report
from test_incremental import REPORTS as TABLES
from test_incremental import report_rows

from keysync import replay
from keysync.config import NormalizeConfig
from keysync.normalization import compile_rules

REPORTS = (*TABLES, "audit_log.csv")
REUSED = "incremental.reused"


@pytest.fixture
def folder(tmp_path: Path, keysync: RunKeysync) -> Path:
    """300 keys a system, reconciled once by a full run."""
    root = tmp_path / "kept"
    root.mkdir()
    (root / "keysync-config.yaml").write_text("processing: {parallel: false}\n")
    assert keysync("-q", "generate", "--keys", "300", cwd=root).returncode == 0
    first = keysync("-q", "run", cwd=root)
    assert first.returncode == 0, first.stderr
    return root


def last_run(root: Path) -> tuple[str, int]:
    with sqlite3.connect(root / "data/keysync.db") as db:
        run_id, seq = db.execute("SELECT run_id, seq FROM runs ORDER BY seq DESC").fetchone()
    return str(run_id), int(seq)


def outcome(root: Path) -> dict[str, Any]:
    """Every report, summary.json and state table, with the last run's id and times out."""
    run_id, _ = last_run(root)
    reports = {}
    for name in REPORTS:
        text = (root / "output" / name).read_text(encoding="utf-8")
        lines = text.replace(str(root), "ROOT").splitlines()  # (rejected rows name their file)
        assert not lines[0].startswith("#") or f"# run_id: {run_id}" in lines, name
        # The run's own id and time; the audit log's own event has that time too.
        reports[name] = [
            line.replace(run_id, "RUN").split(",", 1)[-1] if run_id in line else line
            for line in lines
            if not line.startswith(("# run_id: ", "# generated_at: "))
        ]
    summary = json.loads((root / "output/summary.json").read_text())
    for own in ("run_id", "started_at", "finished_at", "durations"):
        summary.pop(own)
    with sqlite3.connect(root / "data/keysync.db") as db:
        state = {
            table: sorted(db.execute(f"SELECT * FROM {table}").fetchall())
            for table in ("master_keys", "key_history", "system_state", "name_conflicts")
        }
        state["audit_events"] = [
            (seq, "RUN" if run == run_id else run, event, system, key, detail)
            for seq, run, event, system, key, detail in db.execute(
                "SELECT seq, run_id, event, system, key, detail FROM audit_events ORDER BY seq"
            )
        ]
        state["runs"] = db.execute(
            "SELECT seq, mode, dry_run, outcome, exit_code, counts, message FROM runs ORDER BY seq"
        ).fetchall()
    return {"reports": reports, "summary": summary, "state": state}


def lifecycle(root: Path) -> dict[str, tuple[Any, ...]]:
    """Each master key's status, seen_in, status seq and unseen-since seq (no run ids)."""
    with sqlite3.connect(root / "data/keysync.db") as db:
        rows = db.execute(
            "SELECT master_key, status, seen_in, status_seq, unseen_since_seq FROM master_keys"
        )
        return {row[0]: row[1:] for row in rows}


def twin_without_record(root: Path) -> Path:
    """A copy of the folder whose next incremental run must compare: no record of reports."""
    twin = root.parent / "twin"
    shutil.copytree(root, twin)
    (twin / "data/snapshots" / replay.NAME).unlink()
    return twin


def test_nothing_changed_reuses_the_reports_and_ends_as_a_comparing_run(
    folder: Path, keysync: RunKeysync
) -> None:
    twin = twin_without_record(folder)
    full = folder.parent / "full"
    shutil.copytree(folder, full)
    reused = keysync("run", "--mode", "incremental", cwd=folder)
    compared = keysync("run", "--mode", "incremental", cwd=twin)
    assert keysync("-q", "run", cwd=full).returncode == 0
    assert report_rows(folder / "output") == report_rows(full / "output")  # SPEC: a full run's
    assert reused.returncode == compared.returncode == 0, reused.stderr + compared.stderr
    first_run = json.loads(keysync("runs", "--json", cwd=folder).stdout)[0]["run_id"]
    assert f"{REUSED} " in reused.stderr and f"run={first_run}" in reused.stderr
    assert "nothing is compared" in reused.stderr
    assert "source.finished" not in reused.stderr and "incremental.unchanged" not in reused.stderr
    assert REUSED not in compared.stderr
    assert compared.stderr.count("incremental.unchanged") == 5
    assert outcome(folder) == outcome(twin)
    # What the user reads is the same table, for the run just made.
    shown = [
        said.stdout.replace(last_run(root)[0], "RUN").replace(str(root), "ROOT")
        for said, root in ((reused, folder), (compared, twin))
    ]
    assert shown[0] == shown[1]
    # The next run reuses this one's reports, and its header names this run.
    again = keysync("-q", "run", "--mode", "incremental", cwd=folder)
    assert again.returncode == 0
    header = (folder / "output/diff_missing_in_A.csv").read_text().splitlines()[:5]
    assert f"# run_id: {last_run(folder)[0]}" in header
    # The exit code is this run's: --fail-on-diff fails on the discrepancies reused.
    gated = keysync("run", "--mode", "incremental", "--fail-on-diff", cwd=folder)
    assert gated.returncode == 1 and REUSED in gated.stderr, gated.stderr


def test_an_active_key_seen_nowhere_is_deprecated_on_time_by_unchanged_runs(
    folder: Path, keysync: RunKeysync
) -> None:
    """Each run counts towards deprecate_after_runs, even one on the same files."""
    with open(folder / "output/master_key_registry.csv", newline="") as registry:
        rows = csv.DictReader(line for line in registry if not line.startswith("#"))
        entry = next(row for row in rows if ";" not in row["seen_in"])  # in one peer only
    key, system = entry["master_key"], entry["seen_in"]
    assert keysync("registry", "approve", key, cwd=folder).returncode == 0
    source = folder / "input" / f"{system}.csv"
    normalize = compile_rules(NormalizeConfig()).normalize
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if normalize((next(csv.reader([line]), []) or [""])[0]) != key]
    assert len(kept) < len(lines)
    source.write_text("".join(kept), encoding="utf-8")
    twin = folder.parent / "twin"
    shutil.copytree(folder, twin)
    for run in range(1, 4):  # unseen in runs 1, 2, 3: deprecated in the third
        reused = keysync("-v", "run", "--mode", "incremental", cwd=folder)
        full = keysync("-q", "run", cwd=twin)
        assert reused.returncode == full.returncode == 0, reused.stderr
        assert REUSED not in reused.stderr, run
        if run > 1:
            assert "an Active master key is seen in no system" in reused.stderr
        entries = {root: lifecycle(root) for root in (folder, twin)}
        assert entries[folder][key][0] == ("Active" if run < 3 else "Deprecated"), run
        assert entries[folder] == entries[twin], run
    # Deprecated, it counts no more: the next unchanged run reuses the reports.
    assert REUSED in keysync("run", "--mode", "incremental", cwd=folder).stderr


def _edit_a_report(root: Path) -> None:
    path = root / "output/diff_missing_in_A.csv"
    path.write_text(path.read_text().replace(",B,", ",Q,", 1))


def _drop_a_report(root: Path) -> None:
    (root / "output/duplicates.csv").unlink()


def _touch_a_source(root: Path) -> None:
    path = root / "input/C.csv"
    path.write_bytes(path.read_bytes().replace(b"CUST-", b"CUSU-", 1))  # the same size


def _change_a_rule(root: Path) -> None:
    (root / "keysync-config.yaml").write_text(
        yaml.safe_dump({"processing": {"parallel": False}, "normalize": {"pad_numbers": 6}})
    )


def _change_a_setting(root: Path) -> None:
    (root / "keysync-config.yaml").write_text(
        yaml.safe_dump(
            {"processing": {"parallel": False}, "provisioning": {"deprecate_after_runs": 5}}
        )
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (_edit_a_report, "report diff_missing_in_A.csv is not the one run"),
        (_drop_a_report, "report duplicates.csv is not the one run"),
        (_touch_a_source, "C changed since run"),
        (_change_a_rule, "the configuration changed since the last run"),
        (_change_a_setting, "the configuration changed since the last run"),
        ("approve", "the audit trail has events after run"),
        ("dry-run", "is not the one run"),
        ("systems", "this run reads other systems than the last run"),
        ("failed", "the audit trail has events after run"),
    ],
)
def test_anything_changed_makes_the_run_compare(
    folder: Path, keysync: RunKeysync, change: Any, reason: str
) -> None:
    systems: tuple[str, ...] = ()
    if change == "approve":
        key = (folder / "output/diff_missing_in_A.csv").read_text().splitlines()[-1]
        assert keysync("registry", "approve", key.split(",")[0], cwd=folder).returncode == 0
    elif change == "dry-run":
        assert keysync("-q", "run", "--dry-run", cwd=folder).returncode == 0
    elif change == "systems":
        systems = ("--systems", "A,B")
    elif change == "failed":  # the authority away for one run, then back
        (folder / "input/A.csv").rename(folder / "A.csv")
        assert keysync("-q", "run", cwd=folder).returncode == 3
        (folder / "A.csv").rename(folder / "input/A.csv")
    else:
        change(folder)
    twin = folder.parent / "twin"
    shutil.copytree(folder, twin)
    compared = keysync("-v", "run", "--mode", "incremental", *systems, cwd=folder)
    full = keysync("-q", "run", *systems, cwd=twin)
    assert compared.returncode == full.returncode, compared.stderr
    assert REUSED not in compared.stderr
    (line,) = [line for line in compared.stderr.splitlines() if "incremental.not_reused" in line]
    assert reason in line
    assert report_rows(folder / "output") == report_rows(twin / "output")


def test_a_source_path_under_home_is_the_file_of_this_run_s_home(
    tmp_path: Path, keysync: RunKeysync
) -> None:
    """Seen (reuse hunt): with sources at ~/exp/*.csv, a run under another HOME (the same
    bytes there) reused reports whose rejected_rows.csv named the files of the first."""
    root, first, second = tmp_path / "project", tmp_path / "home1", tmp_path / "home2"
    root.mkdir()
    sources = {name: {"path": f"~/exp/{name}.csv"} for name in "ABCDE"}
    (root / "keysync-config.yaml").write_text(
        yaml.safe_dump({"processing": {"parallel": False}, "sources": sources})
    )
    assert (
        keysync("-q", "generate", "--keys", "300", cwd=root, env={"HOME": str(first)}).returncode
        == 0
    )
    assert keysync("-q", "run", cwd=root, env={"HOME": str(first)}).returncode == 0
    shutil.copytree(first, second)
    moved = keysync("-v", "run", "--mode", "incremental", cwd=root, env={"HOME": str(second)})
    assert moved.returncode == 0, moved.stderr
    assert REUSED not in moved.stderr
    assert "the configuration changed since the last run" in moved.stderr
    named = {row["file"] for row in read_report(root / "output/rejected_rows.csv")}
    assert named and all(name.startswith(str(second / "exp")) for name in named), named


def test_reports_another_keysync_wrote_are_not_passed_on(
    tmp_path: Path, folder: Path, keysync: RunKeysync
) -> None:
    """Seen (reuse hunt): after an upgrade that words a rejected row otherwise, each
    unchanged run passed on the old wording, forever. Any change of keysync's code makes
    the run compare; the run after that reuses what the new code wrote."""
    import keysync as package

    other = tmp_path / "other"
    shutil.copytree(Path(package.__file__).parent, other / "keysync")
    with open(other / "keysync" / "replay.py", "a", encoding="utf-8") as code:
        code.write("# another keysync\n")
    env = {"PYTHONPATH": str(other)}
    upgraded = keysync("-v", "run", "--mode", "incremental", cwd=folder, env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert REUSED not in upgraded.stderr
    assert "keysync's code changed since the last run" in upgraded.stderr
    assert REUSED in keysync("run", "--mode", "incremental", cwd=folder, env=env).stderr
    assert REUSED not in keysync("run", "--mode", "incremental", cwd=folder).stderr


def test_a_record_that_cannot_be_written_is_a_warning_and_the_next_run_compares(
    folder: Path, keysync: RunKeysync
) -> None:
    record = folder / "data/snapshots" / replay.NAME
    record.unlink()
    record.mkdir()  # in the way of the record's rename
    result = keysync("-q", "run", "--mode", "incremental", cwd=folder)
    assert result.returncode == 0, result.stderr
    (warning,) = [line for line in result.stderr.splitlines() if "record_skipped" in line]
    assert f"cannot write {record}" in warning
    record.rmdir()
    again = keysync("-v", "run", "--mode", "incremental", cwd=folder)
    assert REUSED not in again.stderr and "no record of the last run's reports" in again.stderr
    assert REUSED in keysync("run", "--mode", "incremental", cwd=folder).stderr


@pytest.mark.parametrize("phase", ["reporting", "publishing", "tidying"])
def test_a_reusing_run_killed_leaves_a_state_the_next_run_ends_right(
    folder: Path, keysync: RunKeysync, phase: str
) -> None:
    """kill -9 before the commit, after it, and after the reports are in place."""
    twin = folder.parent / "twin"
    shutil.copytree(folder, twin)
    held = subprocess.Popen(
        [sys.executable, "-m", "keysync", "run", "--mode", "incremental"],
        cwd=folder,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("KEYSYNC_")},
            "KEYSYNC_TEST_PAUSE_AT": phase,
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert held.stderr is not None
    said = []
    for line in held.stderr:
        said.append(line)
        if "run.paused_for_tests" in line:
            break
    assert any(REUSED in line for line in said), said
    held.send_signal(signal.SIGKILL)
    held.wait(30)
    held.stderr.close()
    after = keysync("run", "--mode", "incremental", cwd=folder)
    assert after.returncode == 0, after.stderr
    assert keysync("-q", "run", cwd=twin).returncode == 0
    assert report_rows(folder / "output") == report_rows(twin / "output")
    assert lifecycle(folder) == lifecycle(twin)
    outcomes = [r["outcome"] for r in json.loads(keysync("runs", "--json", cwd=folder).stdout)]
    killed = "interrupted" if phase == "reporting" else "completed"
    assert outcomes == ["completed", killed, "completed"]
    # Before the commit the killed run decided nothing: the run after it compares. After
    # it, its reports are in place (published by the next run if need be) but no record
    # names it: the next run compares as well, and leaves the record.
    assert REUSED not in after.stderr
    assert REUSED in keysync("run", "--mode", "incremental", cwd=folder).stderr
