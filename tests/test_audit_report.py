"""audit_log.csv is appended to, not rewritten, and is byte-identical to a full rewrite.

Real runs (the library ``keysync.runner.run``, or the ``keysync`` command where a
process must be killed), a real SQLite state and real files. Every time a run
writes ``audit_log.csv``, a spy renders the whole trail again the way keysync
did before the fast path existed (every row from the database, then a dry
run's planned rows) into another folder, with the same run id and time, and
the two files must be equal byte for byte.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from keysync import audit_report, runner
from keysync.config import load_config
from keysync.runner import RunOptions, run
from keysync.stages.reporter import AUDIT_MEANINGS, ReportFile, ReportWriter
from keysync.state import AUDIT_COLUMNS, DB_NAME, StateStore

# A: the authority. B holds keys A lacks, some written to need care in a report:
# formula starts and "#" in the raw keys end up in the audit details.
FIRST = {
    "A": ["CUST-1", "CUST-2", "CUST-3"],
    "B": ["CUST-1", "=cust-#-9", "@prod abc 7", "X-1"],
    "C": ["CUST-2", "+X-2", "X-3 # note"],
}
SECOND = {
    "A": ["CUST-1", "CUST-2", "X-1"],  # X-1 resolved
    "B": ["CUST-1", "=cust-#-9", "X-4", "-X-5"],
    "C": ["CUST-2", "X-3 # note", "X-6"],
}
THIRD = {
    "A": ["CUST-1"],
    "B": ["X-7", "X-8"],
    "C": ["X-6", "#X-9"],
}


def write_inputs(folder: Path, inputs: dict[str, list[str]]) -> None:
    (folder / "input").mkdir(parents=True, exist_ok=True)
    for system, keys in inputs.items():
        with open(folder / "input" / f"{system}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["key", "name", "last_seen_at"])
            for key in keys:
                writer.writerow([key, f"name of {key}", "2026-01-01T00:00:00Z"])


@pytest.fixture
def project(tmp_path: Path, write_config: Callable[..., Path]) -> Path:
    write_config(
        tmp_path,
        sources={s: {"path": f"./input/{s}.csv"} for s in "ABC"},
        processing={"parallel": False, "workers": 1},
        provisioning={"deprecate_after_runs": 1},
    )
    write_inputs(tmp_path, FIRST)
    return tmp_path


def full_rewrite(
    run_id: str, generated_at: str, store: StateStore, planned: Sequence[Any] = ()
) -> bytes:
    """audit_log.csv as keysync wrote it before it could append: every row, rendered
    (a dry run's header says its planned rows were not saved)."""
    description = "every run and registry decision of all runs, by timestamp and seq"
    if planned:
        description += (
            " (dry run: the rows with an empty seq are what it would record; "
            "nothing of them was saved)"
        )
    with tempfile.TemporaryDirectory() as folder:
        writer = ReportWriter(Path(folder), run_id, generated_at)
        report = writer.open(
            "audit_log.csv",
            {column: AUDIT_MEANINGS[column] for column in AUDIT_COLUMNS},
            row_count=store.audit_count() + len(planned),
            description=description,
        )
        report.rows(itertools.chain(store.audit_rows(), planned), risky=(4, 5, 6))
        report.close()
        return report.path.read_bytes()


def header_value(data: bytes, name: str) -> str:
    for line in data.decode("utf-8").splitlines():
        if line.startswith(f"# {name}: "):
            return line.split(": ", 1)[1]
    raise AssertionError(f"no '# {name}:' line")


def published_equals_full_rewrite(folder: Path) -> None:
    """The published file against a full rewrite from the database (no planned rows)."""
    data = (folder / "output" / "audit_log.csv").read_bytes()
    with StateStore.open(folder / "data" / DB_NAME, create=False) as store:
        reference = full_rewrite(
            header_value(data, "run_id"), header_value(data, "generated_at"), store
        )
    assert data == reference


@dataclass
class Write:
    """One audit_log.csv as a run staged it, with the full rewrite made at that moment."""

    data: bytes
    reference: bytes
    appended: bool
    reason: str
    dry_run: bool


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[Write]:
    seen: list[Write] = []
    real = audit_report.AuditLog.finish

    def spy(self: audit_report.AuditLog, report: ReportFile, *, planned: Sequence[Any]) -> None:
        real(self, report, planned=planned)
        reference = full_rewrite(
            self.writer.run_id, self.writer.generated_at, self.store, list(planned)
        )
        seen.append(
            Write(
                report.path.read_bytes(),
                reference,
                self.after_seq is not None,
                self.reason,
                bool(planned),
            )
        )

    monkeypatch.setattr(audit_report.AuditLog, "finish", spy)
    return seen


def run_in(folder: Path, **options: Any) -> None:
    result = run(load_config(folder / "keysync-config.yaml"), RunOptions(**options))
    assert result.exit_code == 0, result.message


def check(writes: list[Write], folder: Path) -> Write:
    """The last write equals its full rewrite and is what was published."""
    last = writes[-1]
    assert last.data == last.reference
    assert (folder / "output" / "audit_log.csv").read_bytes() == last.data
    return last


def keysync_cli(folder: Path, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSYNC_")}
    env.update(kwargs.pop("env", {}))
    return subprocess.run(
        [sys.executable, "-m", "keysync", "-q", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        **kwargs,
    )


# --------------------------------------------------------------------- the fast path


def test_runs_dry_runs_and_manual_changes_append_and_equal_a_full_rewrite(
    project: Path, writes: list[Write]
) -> None:
    run_in(project)
    assert not check(writes, project).appended  # nothing to start from
    write_inputs(project, SECOND)
    run_in(project)
    assert check(writes, project).appended
    # A dry run appends what it would record after the real events...
    write_inputs(project, THIRD)
    run_in(project, dry_run=True)
    dry = check(writes, project)
    assert dry.appended and dry.dry_run
    assert dry.data.count(b"\n") > writes[-2].data.count(b"\n")
    # ... and is not what the next run starts from: it copies the last real file.
    approved = keysync_cli(project, "registry", "approve", "--all")
    assert approved.returncode == 0, approved.stderr
    run_in(project, auto_approve=True)
    assert check(writes, project).appended
    run_in(project)  # nothing new but the run's own event
    last = check(writes, project)
    assert last.appended
    published_equals_full_rewrite(project)
    rows = [line for line in last.data.decode().splitlines() if not line.startswith("#")][1:]
    seqs = [int(next(csv.reader([line]))[2]) for line in rows]
    assert seqs == list(range(1, len(seqs) + 1))  # every event once, in order
    assert header_value(last.data, "rows") == str(len(seqs))


def test_the_copy_costs_no_rendering_of_old_rows(
    project: Path, writes: list[Write], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_in(project)
    write_inputs(project, SECOND)
    rendered: list[int] = []
    real_rows = ReportFile.rows

    def counting(self: ReportFile, rows: Any, *args: Any, **kwargs: Any) -> None:
        listed = list(rows)
        if (
            self.path.name.removesuffix(".part") == "audit_log.csv"
            and self.path.parent.parent == project / "output"
        ):
            rendered.append(len(listed))  # the run's, not the spy's full rewrite
        real_rows(self, listed, *args, **kwargs)

    monkeypatch.setattr(ReportFile, "rows", counting)
    before = len((project / "output" / "audit_log.csv").read_text().splitlines())
    run_in(project)
    last = check(writes, project)
    assert last.appended
    with StateStore.open(project / "data" / DB_NAME, create=False) as store:
        runs = store.runs()
        new = [r for r in store.audit_rows() if r[1] == runs[-1].run_id]
    assert before > len(new) > 0
    assert rendered == [len(new)]  # the audit log rendered only this run's events


# ------------------------------------------------------------- anything doubtful


def _edit_in_place(path: Path) -> None:
    data = bytearray(path.read_bytes())
    at = data.rindex(b"key.proposed")
    data[at : at + 3] = b"KEY"  # same length, header untouched
    with open(path, "r+b") as f:  # the same inode: the kept link sees it too
        f.write(data)


def _truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 40)


def _edit_header(path: Path) -> None:
    data = path.read_bytes().replace(b"# rows: ", b"# rows:  ", 1)
    with open(path, "r+b") as f:
        f.write(data)


def _replace_by_editor(path: Path) -> None:
    temporary = path.with_suffix(".new")
    temporary.write_bytes(path.read_bytes().replace(b"key.proposed", b"KEY.proposed"))
    os.replace(temporary, path)  # a new inode: the link keeps the file keysync wrote


def _delete(path: Path) -> None:
    path.unlink()


def _delete_both(path: Path) -> None:
    path.unlink()
    (path.parent.parent / "data" / audit_report.LINK).unlink()


def _spoil_record(path: Path) -> None:
    (path.parent.parent / "data" / audit_report.RECORD).write_text("{not json")


def _delete_record(path: Path) -> None:
    (path.parent.parent / "data" / audit_report.RECORD).unlink()


def _forge_record(path: Path) -> None:
    record_path = path.parent.parent / "data" / audit_report.RECORD
    record = json.loads(record_path.read_text())
    record["rows"] -= 1  # says the file holds one row fewer than the database up to last_seq
    record_path.write_text(json.dumps(record))


def _record_of_wrong_types(path: Path) -> None:
    record_path = path.parent.parent / "data" / audit_report.RECORD
    record = json.loads(record_path.read_text())
    record["header_len"] = str(record["header_len"])
    record_path.write_text(json.dumps(record))


@pytest.mark.parametrize(
    ("damage", "appended"),
    [
        (_edit_in_place, False),
        (_truncate, False),
        (_edit_header, False),
        (_replace_by_editor, True),  # copied from keysync's own link, the edit is gone
        (_delete, True),  # the same
        (_delete_both, False),
        (_spoil_record, False),
        (_delete_record, False),
        (_forge_record, False),
        (_record_of_wrong_types, False),
    ],
)
def test_a_changed_or_missing_previous_file_gives_the_full_rewrite(
    damage: Callable[[Path], None], appended: bool, project: Path, writes: list[Write]
) -> None:
    run_in(project)
    write_inputs(project, SECOND)
    run_in(project)
    damage(project / "output" / "audit_log.csv")
    write_inputs(project, THIRD)
    run_in(project)
    last = check(writes, project)
    assert last.appended is appended, last.reason
    published_equals_full_rewrite(project)
    run_in(project)  # and the run after it appends again
    assert check(writes, project).appended


def test_without_hard_links_the_published_file_is_used(
    project: Path, writes: list[Write], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_link(*args: Any, **kwargs: Any) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    run_in(project)
    assert not (project / "data" / audit_report.LINK).exists()
    write_inputs(project, SECOND)
    run_in(project)
    assert check(writes, project).appended
    write_inputs(project, THIRD)
    run_in(project, dry_run=True)  # the published file now lists planned events
    assert check(writes, project).appended and writes[-1].dry_run
    run_in(project)
    last = check(writes, project)
    assert not last.appended and "matches" in last.reason
    run_in(project)
    assert check(writes, project).appended


def test_a_clock_set_back_gives_the_full_rewrite_then_appends_in_time_order(
    project: Path, writes: list[Write], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_in(project)
    write_inputs(project, SECOND)
    run_in(project)
    earlier = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=3)
    real_now = runner.utc_now
    monkeypatch.setattr(runner, "utc_now", lambda: earlier)
    write_inputs(project, THIRD)
    run_in(project)
    last = check(writes, project)
    assert not last.appended and "clock" in last.reason
    # The events of that run sort before the earlier runs' ones.
    rows = [line for line in last.data.decode().splitlines() if not line.startswith("#")][1:]
    assert rows[0].startswith(earlier.strftime("%Y-%m-%dT%H:%M:%SZ"))
    monkeypatch.setattr(runner, "utc_now", real_now)
    run_in(project)
    run_in(project)
    assert check(writes, project).appended  # ordered by (timestamp, seq) from the index
    published_equals_full_rewrite(project)


def test_rows_rendered_differently_now_give_the_full_rewrite(
    project: Path, writes: list[Write], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_in(project)
    monkeypatch.setattr(audit_report, "rendering_fingerprint", lambda: "another reporter")
    run_in(project)
    last = check(writes, project)
    assert not last.appended and "rendered" in last.reason


def test_the_probe_rows_cover_what_the_reporter_treats_specially() -> None:
    cells = [str(cell) for row in audit_report._PROBE for cell in row]
    assert any("#" in c for c in cells)
    for start in ("=", "+", "-", "@", "\t", "\r"):
        assert any(c.startswith(start) for c in cells), start
    assert audit_report.rendering_fingerprint() == audit_report.rendering_fingerprint()


# ------------------------------------------------- the checks would see a wrong copy


def _drop(rows: list[Any]) -> list[Any]:
    return rows[:-2] + rows[-1:]


def _duplicate(rows: list[Any]) -> list[Any]:
    return rows[:1] + rows


def _reorder(rows: list[Any]) -> list[Any]:
    return rows[1:2] + rows[:1] + rows[2:]


@pytest.mark.parametrize("fault", [_drop, _duplicate, _reorder])
def test_a_fast_path_that_dropped_duplicated_or_reordered_a_row_is_caught(
    fault: Callable[[list[Any]], list[Any]],
    project: Path,
    writes: list[Write],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the identity tests above would say if the appended rows were wrong."""
    run_in(project)
    write_inputs(project, SECOND)
    real_rows = StateStore.audit_rows

    def faulty(self: StateStore, *args: Any, **kwargs: Any) -> Iterator[tuple[Any, ...]]:
        rows = list(real_rows(self, *args, **kwargs))
        return iter(fault(rows) if kwargs.get("after_seq") is not None else rows)

    monkeypatch.setattr(StateStore, "audit_rows", faulty)
    run_in(project)
    last = writes[-1]
    assert last.appended
    assert last.data != last.reference
    with pytest.raises(AssertionError):
        check(writes, project)


# ------------------------------------------------------------------- kills


def test_a_run_killed_before_publishing_is_published_whole_by_the_next(project: Path) -> None:
    assert keysync_cli(project, "run").returncode == 0
    before = (project / "output" / "audit_log.csv").read_bytes()
    write_inputs(project, SECOND)
    process = subprocess.Popen(
        [sys.executable, "-m", "keysync", "run"],
        cwd=project,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("KEYSYNC_")},
            "KEYSYNC_TEST_PAUSE_AT": "publishing",
        },
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:
        if "run.paused_for_tests" in line:
            break
    # Committed, audit_log.csv staged, record and link already describe the staged file.
    staged = next((project / "output").glob(".staging-*")) / "audit_log.csv"
    assert staged.exists()
    assert (project / "data" / audit_report.LINK).samefile(staged)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    process.stderr.close()
    assert (project / "output" / "audit_log.csv").read_bytes() == before  # the old file, whole
    # The next run first publishes the killed run's reports (its audit log written again).
    write_inputs(project, THIRD)
    assert keysync_cli(project, "run").returncode == 0
    published_equals_full_rewrite(project)
    with sqlite3.connect(project / "data" / DB_NAME) as db:
        outcomes = [row[0] for row in db.execute("SELECT outcome FROM runs ORDER BY seq")]
    assert outcomes == ["completed"] * 3
    assert not list((project / "output").glob(".staging-*"))
