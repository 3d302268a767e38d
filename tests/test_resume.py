"""Kill -9 a real run at many points; ``keysync run --resume`` must end as if nothing happened.

Each test runs ``keysync run`` in its own process group, holds it at a known
point with the ``KEYSYNC_TEST_PAUSE_AT`` hook (or just lets it run for a
while), kills the whole group with SIGKILL, resumes, and compares reports and
state with an uninterrupted run on the same inputs.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

KEYS = 20_000
REPORTS = (
    "reconciliation_summary.csv",
    "diff_missing_in_A.csv",
    "diff_missing_from_system.csv",
    "duplicates.csv",
    "rejected_rows.csv",
    "master_key_registry.csv",
)
# Columns that hold the wall-clock time of the run: they differ between any two runs.
CLOCK_COLUMNS = {"missing_since", "created_at", "updated_at", "created_run", "updated_run", "file"}


def keysync_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "keysync", "-q", *args]


def env_with(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSYNC_")}
    env.update(extra)
    return env


def rows_of(path: Path) -> list[dict[str, str]]:
    text = "\n".join(line for line in path.read_text().splitlines() if line[:1] != "#")
    return [
        {k: v for k, v in row.items() if k not in CLOCK_COLUMNS}
        for row in csv.DictReader(io.StringIO(text))
    ]


def registry_state(folder: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(folder / "data" / "keysync.db") as db:
        return db.execute(
            "SELECT master_key, status, strategy, source_system, source_key, seen_in"
            " FROM master_keys ORDER BY master_key"
        ).fetchall()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Inputs plus the reports and state of one uninterrupted run on them."""
    folder = tmp_path_factory.mktemp("reference")
    (folder / "keysync-config.yaml").write_text(
        "processing: {batch_size: 500, checkpoint_interval: 2000}\n"
    )
    config = str(folder / "keysync-config.yaml")
    subprocess.run(keysync_cmd("-c", config, "generate", "--keys", str(KEYS)), check=True)
    subprocess.run(keysync_cmd("-c", config, "run"), check=True, env=env_with())
    return folder


@pytest.fixture
def fresh(reference: Path, tmp_path: Path) -> Path:
    """A folder with the reference inputs and config, and no state yet."""
    shutil.copytree(reference / "input", tmp_path / "input")
    shutil.copy(reference / "keysync-config.yaml", tmp_path / "keysync-config.yaml")
    return tmp_path


def wait_for_event(log_file: Path, event: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log_file.exists() and f'"event":"{event}"' in log_file.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise AssertionError(f"{event} never appeared in {log_file}")


def kill_at(folder: Path, pause_at: str | None, after_event: str = "") -> None:
    """Start a run, wait for the pause point (or a log event), kill -9 its process group."""
    env = env_with(**({"KEYSYNC_TEST_PAUSE_AT": pause_at} if pause_at else {}))
    process = subprocess.Popen(
        keysync_cmd("-c", str(folder / "keysync-config.yaml"), "run"),
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        log = folder / "data" / "logs" / "keysync.jsonl"
        wait_for_event(log, "run.paused_for_tests" if pause_at else after_event)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL


def resume(folder: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        keysync_cmd("-c", str(folder / "keysync-config.yaml"), "run", "--resume", *options),
        env=env_with(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def resume_and_compare(folder: Path, reference: Path) -> dict[str, object]:
    done = resume(folder)
    assert done.returncode == 0, done.stderr
    for name in REPORTS:
        assert rows_of(folder / "output" / name) == rows_of(reference / "output" / name), name
    assert registry_state(folder) == registry_state(reference)
    assert not any((folder / "checkpoints").iterdir()), "a completed run leaves no checkpoint"
    with sqlite3.connect(folder / "data" / "keysync.db") as db:
        outcomes = db.execute("SELECT outcome FROM runs ORDER BY seq").fetchall()
    assert outcomes[-1] == ("completed",)
    events = [
        json.loads(line)
        for line in (folder / "data" / "logs" / "keysync.jsonl").read_text().splitlines()
    ]
    resumed = [e for e in events if e["event"] == "run.resumed"]
    return resumed[-1] if resumed else {}


@pytest.mark.parametrize("rows", [1_000, 30_000, 60_000, 95_000])
def test_kill_while_reading(fresh: Path, reference: Path, rows: int) -> None:
    kill_at(fresh, f"reading:{rows}")
    resumed = resume_and_compare(fresh, reference)
    # The under-2-seconds target is measured on an idle machine in bench/ (docs/performance.md).
    assert float(str(resumed["resume_s"])) > 0
    assert float(str(resumed["replay_s"])) > 0


def test_kill_without_a_hook_right_after_a_checkpoint(fresh: Path, reference: Path) -> None:
    """No test hook in the run at all: kill it the moment its first checkpoint is logged."""
    kill_at(fresh, None, after_event="checkpoint.saved")
    resume_and_compare(fresh, reference)


def test_kill_during_a_checkpoint_write(fresh: Path, reference: Path) -> None:
    kill_at(fresh, "checkpoint-write:5")
    log = fresh / "data" / "logs" / "keysync.jsonl"
    resume_and_compare(fresh, reference)
    assert '"event":"checkpoint.torn"' in log.read_text()


@pytest.mark.parametrize("phase", ["planning", "reporting", "committing", "mid-commit"])
def test_kill_before_the_commit_leaves_state_as_before(
    fresh: Path, reference: Path, phase: str
) -> None:
    kill_at(fresh, phase)
    with sqlite3.connect(fresh / "data" / "keysync.db") as db:
        assert db.execute("SELECT COUNT(*) FROM master_keys").fetchone() == (0,)
    assert not (fresh / "output" / "diff_missing_in_A.csv").exists()
    resume_and_compare(fresh, reference)


def test_kill_after_the_commit_publishes_the_reports(fresh: Path, reference: Path) -> None:
    kill_at(fresh, "publishing")
    # The state is committed; the next run (resume finds nothing to do) publishes the reports.
    done = resume(fresh)
    assert done.returncode == 0, done.stderr
    log = (fresh / "data" / "logs" / "keysync.jsonl").read_text()
    assert '"event":"report.recovered"' in log
    assert registry_state(fresh)[0][1] == "Proposed"


def run_paused_while_reading(fresh: Path, pause_s: int) -> subprocess.Popen[str]:
    """A ``keysync run`` held ``pause_s`` seconds after 40,000 rows; returns once it is held."""
    process = subprocess.Popen(
        [*keysync_cmd("-c", str(fresh / "keysync-config.yaml"), "run")],
        env=env_with(KEYSYNC_TEST_PAUSE_AT="reading:40000", KEYSYNC_TEST_PAUSE_S=str(pause_s)),
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_event(fresh / "data" / "logs" / "keysync.jsonl", "run.paused_for_tests")
    return process


def test_ctrl_c_keeps_a_checkpoint_and_exits_130(fresh: Path, reference: Path) -> None:
    process = run_paused_while_reading(fresh, 2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "interrupted; a checkpoint is kept: `keysync run --resume` continues it" in stderr
    runs = subprocess.run(
        keysync_cmd("-c", str(fresh / "keysync-config.yaml"), "runs"),
        capture_output=True,
        text=True,
        env=env_with(),
    )
    assert "interrupted" in runs.stdout and "keysync run --resume" in runs.stdout
    resume_and_compare(fresh, reference)


def test_a_second_ctrl_c_exits_at_once_with_one_line_and_can_be_resumed(
    fresh: Path, reference: Path
) -> None:
    process = run_paused_while_reading(fresh, 60)
    process.send_signal(signal.SIGINT)  # stop at the next clean point (after the pause)
    time.sleep(0.3)
    # ... no: now. Two SIGINTs that reach a process before it has run its handler once are
    # merged into one (a starved process on a busy machine), so repeat until it is gone.
    deadline = time.monotonic() + 10
    while process.poll() is None and time.monotonic() < deadline:
        process.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(0.5)
    _, stderr = process.communicate(timeout=10)
    assert process.returncode == 130
    # The last line: no warning of multiprocessing's resource tracker after it.
    assert stderr.splitlines()[-1] == (
        "keysync: stopped at once (second interrupt); the last checkpoint is kept: "
        "`keysync run --resume` continues it"
    ), stderr
    assert "" not in stderr.splitlines(), stderr  # no line break for a progress line: no tty
    assert "Traceback" not in stderr
    # Seen (log hunt): the log file ended at the last event before the interrupts.
    logged = (fresh / "data" / "logs" / "keysync.jsonl").read_text().splitlines()
    last = json.loads(logged[-1])
    assert (last["event"], last["exit_code"]) == ("command.failed", 130)
    assert last["message"].startswith("stopped at once (second interrupt)")
    resume_and_compare(fresh, reference)


def _signals_kept_out(pid: int) -> int:
    """The signals of STOPS that process ``pid`` blocks or ignores (a mask of bits)."""
    status = dict(
        line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(status["SigBlk"], 16) | int(status["SigIgn"], 16)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_a_ctrl_c_to_the_whole_process_group_is_taken_by_the_parent_alone(
    fresh: Path, reference: Path
) -> None:
    """A terminal's Ctrl-C (and a supervisor's SIGTERM to the group) reaches every process
    of the run. Seen: one while the fork server was still importing killed it with a
    KeyboardInterrupt traceback, "Aborted!", exit 1, the run recorded failed (EOFError).
    Every child must be deaf to both from birth: the parent stops them."""
    process = subprocess.Popen(
        [*keysync_cmd("-c", str(fresh / "keysync-config.yaml"), "run")],
        env=env_with(KEYSYNC_TEST_PAUSE_AT="reading:10000", KEYSYNC_TEST_PAUSE_S="2"),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    wait_for_event(fresh / "data" / "logs" / "keysync.jsonl", "run.paused_for_tests")
    group = [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit()
        and int(entry.name) != process.pid
        and _pgid_or_none(int(entry.name)) == process.pid
    ]
    stops = (1 << (signal.SIGINT - 1)) | (1 << (signal.SIGTERM - 1))
    # The fork server, the resource tracker and readers (some may have read all by now).
    commands = [_cmdline(pid) for pid in group]
    assert any(b"multiprocessing.forkserver" in command for command in commands), commands
    assert len(group) >= 3, group
    deaf = {pid: _signals_kept_out(pid) & stops == stops for pid in group}
    assert all(deaf.values()), deaf
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stderr.splitlines()[-1].endswith(
        "interrupted; a checkpoint is kept: `keysync run --resume` continues it"
    ), stderr
    assert "Traceback" not in stderr
    resume_and_compare(fresh, reference)


def test_ctrl_c_at_any_moment_of_a_run_ends_it_with_one_line_never_a_traceback(
    fresh: Path,
) -> None:
    """A terminal's Ctrl-C (to the whole process group), once or twice 50 ms apart, at
    moments spread over a whole run. Seen: a traceback and "Aborted!" (exit 1) while the
    fork server imported; a KeyboardInterrupt traceback (killed by SIGINT) when the second
    came as the run ended; exit 3 "cannot open the state database (cannot rollback)" when
    one came as a first run made its database; a NameError for an import it cut short."""
    config = str(fresh / "keysync-config.yaml")
    started = time.monotonic()
    subprocess.run(keysync_cmd("-c", config, "run"), env=env_with(), check=True)
    whole = time.monotonic() - started
    endings = (
        "keysync: error: interrupted while starting; nothing was done",
        "keysync: error: interrupted; nothing is left half-written: run the command again",
        "interrupted; a checkpoint is kept: `keysync run --resume` continues it",
        "keysync: stopped at once (second interrupt); the last checkpoint is kept: "
        "`keysync run --resume` continues it",
    )
    # (From a tenth of a second on: before that Python itself is starting; it dies of it.)
    trials = [(0.1 + whole * n / 8, 1) for n in range(8)] + [
        (0.1 + whole * n / 4, 2) for n in range(4)
    ]
    for n, (delay, interrupts) in enumerate(trials):
        if n % 4 == 0:  # now and then a first run: it makes the state database
            for folder in ("data", "output", "checkpoints"):
                shutil.rmtree(fresh / folder, ignore_errors=True)
        process = subprocess.Popen(
            keysync_cmd("-c", config, "run"),
            env=env_with(),
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(delay)
        for _ in range(interrupts):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGINT)
            time.sleep(0.05)
        _, stderr = process.communicate(timeout=120)
        said = f"after {delay:.2f} s, {interrupts} interrupt(s): exit {process.returncode}"
        assert "Traceback" not in stderr, f"{said}\n{stderr}"
        assert process.returncode in (0, 130), f"{said}\n{stderr}"
        if process.returncode == 130:
            assert stderr.splitlines()[-1].endswith(endings), f"{said}\n{stderr}"
    runs = subprocess.run(
        keysync_cmd("-c", config, "runs"), env=env_with(), capture_output=True, text=True
    )
    assert runs.returncode == 0, runs.stderr
    assert " failed " not in runs.stdout, runs.stdout


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # gone since the listing
        return b""


def _pgid_or_none(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:  # gone since the listing
        return None


def test_changed_input_refuses_to_resume(fresh: Path) -> None:
    kill_at(fresh, "reading:30000")
    with open(fresh / "input" / "C.csv", "a") as handle:
        handle.write("CUST-99999,Late Row,2026-11-27T02:00:00Z\n")
    done = resume(fresh)
    assert done.returncode == 3
    # The only other stderr line allowed is the warning that the killed run's lock was cleared.
    *warnings, error = done.stderr.strip().splitlines()
    assert all("lock.stale_cleared" in line for line in warnings)
    assert error.startswith("keysync: error: cannot resume run ")
    assert "input C" in error and "changed since its checkpoint" in error


def test_a_line_changed_in_place_with_size_and_time_kept_refuses_to_resume(fresh: Path) -> None:
    """Seen: a middle line rewritten to the same length, the time put back (`cp -p`, `rsync -t`),
    was resumed: the run committed A's keys as they were, not as the file holds them."""
    kill_at(fresh, "reading:30000")
    path = fresh / "input" / "C.csv"
    stat = path.stat()
    lines = path.read_bytes().split(b"\n")
    middle = next(n for n in range(len(lines) // 2, len(lines)) if b"CUST-" in lines[n])
    lines[middle] = lines[middle].replace(b"CUST-", b"CUSX-", 1)
    path.write_bytes(b"\n".join(lines))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    done = resume(fresh)
    assert done.returncode == 3, done.stderr
    assert "input C" in done.stderr and "changed since its checkpoint" in done.stderr


def test_an_input_deleted_since_the_kill_is_named_gone_and_resumes_once_back(
    fresh: Path, reference: Path
) -> None:
    """Seen (re-test): a deleted input was reported as "changed since its checkpoint"."""
    kill_at(fresh, "reading:30000")
    path = fresh / "input" / "D.csv"
    kept = path.read_bytes()
    path.unlink()
    done = resume(fresh)
    assert done.returncode == 3, done.stderr
    assert f"input D ({path}) is gone since its checkpoint; put it back to resume" in done.stderr
    path.write_bytes(kept)
    resume_and_compare(fresh, reference)


def test_the_same_bytes_with_a_new_modification_time_resume(fresh: Path, reference: Path) -> None:
    """Seen: an input copied back from a backup (same bytes, new time) was refused for good."""
    kill_at(fresh, "reading:30000")
    path = fresh / "input" / "C.csv"
    content = path.read_bytes()
    path.unlink()
    path.write_bytes(content)
    os.utime(path, (time.time() + 60, time.time() + 60))
    resume_and_compare(fresh, reference)


@pytest.mark.parametrize(
    ("sources", "expected"),
    [
        ("ABCD", "system E is no longer in the config's sources; put it back to resume"),
        ("BACDE", "it was started with the authority A, the config now makes B the authority"),
    ],
)
def test_resume_refuses_a_config_whose_systems_changed(
    fresh: Path, sources: str, expected: str
) -> None:
    """A source taken out, or another one first (the authority), is one line and exit 3."""
    kill_at(fresh, "reading:6000")
    config = fresh / "keysync-config.yaml"
    listed = "".join(f"  {s}: {{path: input/{s}.csv}}\n" for s in sources)
    config.write_text(config.read_text() + f"sources:\n{listed}")
    done = resume(fresh)
    assert done.returncode == 3, done.stderr
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("keysync: error: cannot resume run ") and expected in error, error
    assert error.endswith("run without --resume to start over") and "Traceback" not in done.stderr


def test_resume_refuses_provisioning_settings_changed_since_the_run_started(
    fresh: Path, reference: Path
) -> None:
    """Seen: auto_approve turned on between the kill and --resume approved every key of a
    run started without it. The run now keeps the settings it started with, or says so."""
    kill_at(fresh, "reading:6000")
    config = fresh / "keysync-config.yaml"
    started = config.read_text()
    config.write_text(started + "provisioning: {auto_approve: true, strategy: namespaced}\n")
    done = resume(fresh)
    assert done.returncode == 3, done.stderr
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("keysync: error: cannot resume run "), error
    assert error.endswith(
        ': provisioning.strategy was "mirror" when it started and is "namespaced" now; '
        "provisioning.auto_approve was false when it started and is true now; a run makes "
        "its registry changes with the settings it started with: put them back to resume, "
        "or run without --resume to start over"
    ), error
    config.write_text(started)
    resume_and_compare(fresh, reference)


def test_resume_refused_for_changed_rules_names_the_setting(fresh: Path, reference: Path) -> None:
    """Seen (walkthrough): pad_numbers set to 6 after a kill gave "the normalization or
    source settings changed since its checkpoint", where a provisioning change names
    itself and both values."""
    kill_at(fresh, "reading:6000")
    config = fresh / "keysync-config.yaml"
    started = config.read_text()
    config.write_text(started + "normalize: {pad_numbers: 6}\n")
    done = resume(fresh)
    assert done.returncode == 3, done.stderr
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("keysync: error: cannot resume run "), error
    assert error.endswith(
        ": normalize.pad_numbers was 0 when it started and is 6 now; the rows read so far "
        "were read and normalized with the settings it started with: put them back to "
        "resume, or run without --resume to start over"
    ), error
    config.write_text(started)
    resume_and_compare(fresh, reference)


def test_a_peer_added_before_resume_is_one_settings_change_not_one_every_run(
    fresh: Path,
) -> None:
    """Seen: the run recorded the settings it started with, but its settings.changed came
    from the config at its commit, so a peer added between the kill and --resume was
    reported by the resumed run and then again by every later run."""
    assert plain_run(fresh).returncode == 0
    kill_at(fresh, "reading:6000")
    config = fresh / "keysync-config.yaml"
    shutil.copy(fresh / "input" / "B.csv", fresh / "input" / "F.csv")
    listed = "".join(f"  {s}: {{path: ./input/{s}.csv}}\n" for s in "ABCDEF")
    config.write_text(config.read_text() + f"sources:\n{listed}")
    assert resume(fresh).returncode == 0
    assert plain_run(fresh).returncode == 0
    with sqlite3.connect(fresh / "data" / "keysync.db") as db:
        runs = [run_id for (run_id,) in db.execute("SELECT run_id FROM runs ORDER BY seq")]
        changes = db.execute(
            "SELECT run_id, detail FROM audit_events WHERE event = 'settings.changed'"
        ).fetchall()
    assert changes == [
        (
            runs[1],
            f'the settings changed since run {runs[0]}: sources "A,B,C,D,E" -> "A,B,C,D,E,F"; '
            "F added to the config: not read by this run (--systems, or a run resumed that "
            "began without it)",
        )
    ]
    with sqlite3.connect(fresh / "data" / "keysync.db") as db:
        flags = [json.loads(f) for (f,) in db.execute("SELECT flags FROM runs ORDER BY seq")]
    assert [f["systems"] for f in flags] == ["A,B,C,D,E", "A,B,C,D,E", "A,B,C,D,E,F"]
    assert {f["settings"]["sources"] for f in flags[1:]} == {"A,B,C,D,E,F"}


def test_a_run_killed_outright_and_resumed_is_in_the_audit_trail_and_flagged_resumed(
    fresh: Path, reference: Path
) -> None:
    """Seen: after kill -9 and --resume only run.completed was recorded, and the run's flags
    said resume false: the one interruption that most needs a record left none."""
    kill_at(fresh, "reading:6000")
    resume_and_compare(fresh, reference)
    with sqlite3.connect(fresh / "data" / "keysync.db") as db:
        ((run_id, flags),) = db.execute("SELECT run_id, flags FROM runs").fetchall()
        events = db.execute(
            "SELECT event, detail FROM audit_events WHERE event LIKE 'run.%' ORDER BY seq"
        ).fetchall()
    assert json.loads(flags)["resume"] is True
    assert [event for event, _ in events] == ["run.interrupted", "run.completed"]
    assert events[0][1].startswith("outcome interrupted; process ")
    assert events[0][1].endswith(
        " ended without finishing (found by its --resume; the time of this record is when it "
        "was found)"
    )
    summary = json.loads((fresh / "output" / "summary.json").read_text())
    assert summary["run_id"] == run_id and summary["flags"]["resume"] is True


def test_nothing_to_resume_runs_normally(fresh: Path, write_config: Callable[..., Path]) -> None:
    done = resume(fresh)
    assert done.returncode == 0
    lines = (fresh / "data" / "logs" / "keysync.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    (said,) = [e for e in events if e["event"] == "run.nothing_to_resume"]
    # Seen (log hunt): it had no run_id, so a collector could not join it to the run.
    (started,) = [e for e in events if e["event"] == "run.started"]
    assert said["run_id"] == started["run_id"]


def test_unreadable_checkpoint_falls_back_to_a_fresh_run(fresh: Path, reference: Path) -> None:
    kill_at(fresh, "reading:30000")
    (header,) = (fresh / "checkpoints").glob("*/header.msgpack")
    header.write_bytes(b"\x00garbage")
    done = resume(fresh)
    assert done.returncode == 0, done.stderr
    assert "checkpoint.unusable" in done.stderr and "Traceback" not in done.stderr
    for name in REPORTS:
        assert rows_of(fresh / "output" / name) == rows_of(reference / "output" / name), name


def plain_run(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        keysync_cmd("-c", str(folder / "keysync-config.yaml"), "run"),
        env=env_with(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_run_that_completes_removes_the_checkpoints_it_supersedes(fresh: Path) -> None:
    """Killed, then a plain run (as the refusal advises): nothing is left to resume."""
    kill_at(fresh, "reading:30000")
    with (fresh / "input" / "C.csv").open("a") as handle:
        handle.write("CUST-99999,late,2026-11-30T00:00:00Z\n")  # the next day's export
    # And one of a run killed while its header was written: nothing to resume in it.
    never_begun = fresh / "checkpoints" / "20261130T020000Z-dead"
    never_begun.mkdir()
    (never_begun / "header.msgpack.tmp").write_bytes(b"\x93")
    assert plain_run(fresh).returncode == 0
    assert list((fresh / "checkpoints").iterdir()) == []
    done = resume(fresh)  # a cron job that always passes --resume keeps working
    assert done.returncode == 0, done.stderr
    assert "nothing_to_resume" in (fresh / "data" / "logs" / "keysync.jsonl").read_text()


def runs_listed(folder: Path) -> list[dict[str, Any]]:
    listed = subprocess.run(
        keysync_cmd("-c", str(folder / "keysync-config.yaml"), "runs", "--json"),
        capture_output=True,
        text=True,
        env=env_with(),
        check=True,
    )
    return list(json.loads(listed.stdout))


def test_runs_no_longer_offers_to_resume_a_ctrl_c_run_a_later_run_superseded(
    fresh: Path,
) -> None:
    """Seen: `keysync runs` kept saying "a checkpoint is kept: `keysync run --resume`
    continues it" of a Ctrl-C run long after a completed run had removed that checkpoint."""
    process = run_paused_while_reading(fresh, 2)
    process.send_signal(signal.SIGINT)
    assert process.wait(60) == 130
    assert plain_run(fresh).returncode == 0
    shown = subprocess.run(
        keysync_cmd("-c", str(fresh / "keysync-config.yaml"), "runs"),
        capture_output=True,
        text=True,
        env=env_with(),
        check=True,
    ).stdout.splitlines()
    interrupted, completed = shown[-2:]
    assert interrupted.endswith(" interrupted; its checkpoint was superseded by a later run")
    assert "--resume" not in interrupted and " completed " in completed
    first, last = runs_listed(fresh)
    assert first["note"] == (
        f"run {first['run_id']} interrupted; its checkpoint was superseded by a later run"
    )
    assert "--resume" in first["message"]  # what the run said when it stopped
    assert last["note"] == last["message"]


def test_runs_offers_to_resume_only_the_run_that_resume_continues(fresh: Path) -> None:
    """Seen (a new user's walkthrough): after two interrupted runs, `keysync runs` told
    both that `keysync run --resume` continues them. It continues the newest checkpoint
    only, and the other's is dropped once that run completes."""
    stopped = run_paused_while_reading(fresh, 2)
    stopped.send_signal(signal.SIGINT)
    assert stopped.wait(60) == 130
    log = fresh / "data" / "logs" / "keysync.jsonl"
    log.rename(log.with_name("stopped.jsonl"))  # the next pause is waited for in a new log
    kill_at(fresh, "reading:40000")
    older, newer = runs_listed(fresh)
    assert older["note"] == (
        f"run {older['run_id']} interrupted; `keysync run --resume` continues run "
        f"{newer['run_id']}, not this one"
    )
    assert newer["note"] == "resume with: keysync run --resume"
    done = resume(fresh)
    assert done.returncode == 0, done.stderr
    older, resumed = runs_listed(fresh)
    assert resumed["run_id"] == newer["run_id"] and resumed["outcome"] == "completed"
    assert older["note"] == (
        f"run {older['run_id']} interrupted; its checkpoint was superseded by a later run"
    )
    assert not any((fresh / "checkpoints").iterdir())


def test_resume_with_keys_is_refused_even_with_nothing_to_resume(fresh: Path) -> None:
    """Seen (a new user's walkthrough): with no checkpoint, `run --resume --keys 50` said
    there was nothing to resume and regenerated the inputs. --keys with --resume is
    always a slip: it is refused before anything is written."""
    inputs = {p.name: p.read_bytes() for p in (fresh / "input").iterdir()}
    refused = resume(fresh, "--keys", "50")
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        "keysync: error: --resume continues an interrupted run on the inputs it read, which "
        "--keys 50 would regenerate first: drop --keys, or run without --resume"
    ]
    assert {p.name: p.read_bytes() for p in (fresh / "input").iterdir()} == inputs
    assert not (fresh / "data").exists() and not (fresh / "output").exists()
    kill_at(fresh, "reading:40000")  # and with a run to resume, the same
    (killed,) = (fresh / "checkpoints").iterdir()
    refused = resume(fresh, "--keys", "50")
    assert refused.returncode == 2 and "--keys 50 would regenerate" in refused.stderr
    assert {p.name: p.read_bytes() for p in (fresh / "input").iterdir()} == inputs
    contradicted = resume(fresh, "--dry-run")
    assert contradicted.returncode == 2
    assert contradicted.stderr.strip().splitlines()[-1] == (
        f"keysync: error: --resume continues run {killed.name} as it was started (mode full, "
        "systems A,B,C,D,E), so --dry-run would be ignored: drop it, or run without --resume "
        "to start a new run"
    )
    assert resume(fresh).returncode == 0


def test_a_superseded_checkpoint_is_not_resumed_over_newer_state(fresh: Path) -> None:
    """A checkpoint left next to a later completed run (by an older keysync) is dropped."""
    kill_at(fresh, "reading:30000")
    (killed,) = (fresh / "checkpoints").iterdir()
    shutil.copytree(killed, fresh / "kept")
    assert plain_run(fresh).returncode == 0
    shutil.copytree(fresh / "kept", killed)
    done = resume(fresh)
    assert done.returncode == 0, done.stderr
    assert "checkpoint.superseded" in done.stderr
    with sqlite3.connect(fresh / "data" / "keysync.db") as db:
        runs = db.execute("SELECT run_id, outcome FROM runs ORDER BY seq").fetchall()
    assert runs[0] == (killed.name, "interrupted")  # never brought back and committed late
    assert [outcome for _, outcome in runs[1:]] == ["completed", "completed"]
    assert killed.name not in (fresh / "output" / "diff_missing_in_A.csv").read_text()


def test_a_killed_dry_run_is_superseded_too_and_resume_never_gets_stuck(fresh: Path) -> None:
    """A dry run killed, the next day's export, a real run: --resume has nothing to do.

    Kept, the dry run's checkpoint would make every later --resume refuse (its
    inputs changed), and no plain run would ever remove it.
    """
    config = str(fresh / "keysync-config.yaml")
    process = subprocess.Popen(
        keysync_cmd("-c", config, "run", "--dry-run"),
        env=env_with(KEYSYNC_TEST_PAUSE_AT="reading:30000"),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_event(fresh / "data" / "logs" / "keysync.jsonl", "run.paused_for_tests")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    with (fresh / "input" / "C.csv").open("a") as handle:
        handle.write("CUST-99999,late,2026-11-30T00:00:00Z\n")
    assert plain_run(fresh).returncode == 0
    assert list((fresh / "checkpoints").iterdir()) == []
    for _ in range(2):
        done = resume(fresh)
        assert done.returncode == 0, done.stderr
