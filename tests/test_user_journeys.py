"""What users ran into, each pinned by a real ``keysync`` subprocess on real files.

Every test here started as a session of someone using keysync (a data engineer,
an architect trying rules, QA breaking things, a compliance officer reading the
trail) and a result that a careful user would not accept: a traceback, a wrong
exit code, a setting silently ignored, or state changed by a command that failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RunKeysync

SOURCES = {
    "A": {"path": "in/A.csv"},
    "B": {"path": "in/B.csv"},
    "C": {"path": "in/C.csv"},
}


def _inputs(folder: Path, rows: int = 30) -> None:
    (folder / "in").mkdir(parents=True, exist_ok=True)
    a = "".join(f"CUST-{i:05d},a\n" for i in range(rows))
    b = "".join(f"CUST-{i:05d},b\n" for i in range(5, rows + 5))
    (folder / "in" / "A.csv").write_text("key,name\n" + a)
    (folder / "in" / "B.csv").write_text("key,name\n" + b)
    (folder / "in" / "C.csv").write_text("key,name\n" + a)


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("keysync:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def _runs(folder: Path) -> list[tuple[str, str]]:
    db = folder / "data" / "keysync.db"
    if not db.exists():
        return []
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT run_id, outcome FROM runs ORDER BY run_id").fetchall()


def _registry(folder: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(folder / "data" / "keysync.db") as connection:
        return connection.execute(
            "SELECT master_key, status FROM master_keys ORDER BY master_key"
        ).fetchall()


# ------------------------------------------------------------ unusable output folders


@pytest.mark.parametrize("setting", ["output", "data", "checkpoints"])
@pytest.mark.parametrize("where", ["a-file", "a-file/below"])
def test_a_folder_setting_that_names_a_file_is_one_line_and_exit_2(
    keysync: RunKeysync,
    write_config: Callable[..., Path],
    tmp_path: Path,
    setting: str,
    where: str,
) -> None:
    """Seen: `paths.output: report.csv` (an existing file) read every source, then died
    with a FileExistsError traceback and exit 1 (which means "discrepancies found")."""
    _inputs(tmp_path)
    (tmp_path / "a-file").write_text("not a folder\n")
    write_config(tmp_path, sources=SOURCES, paths={setting: where})
    result = keysync("-q", "run")
    assert result.returncode == 2, result.stderr
    line = _one_error_line(result)
    assert f"paths.{setting}" in line and "a-file" in line, line
    assert (tmp_path / "a-file").read_text() == "not a folder\n"
    assert _runs(tmp_path) == []  # refused before anything was recorded
    checked = keysync("config", "check")  # and `config check` no longer calls it valid
    assert checked.returncode == 2 and _one_error_line(checked) == line


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs a folder no one may write")
def test_an_output_folder_that_cannot_be_written_is_exit_3_naming_the_setting(
    keysync: RunKeysync, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """Seen: a read-only output folder passed the check (os.access says nothing of a
    read-only mount) or was called a configuration error (exit 2) with "permission
    denied", while a full disk there is exit 3. A folder the machine will not let keysync
    write is exit 3 now, with the system's own reason."""
    _inputs(tmp_path)
    write_config(tmp_path, sources=SOURCES, paths={"output": "/sys/kernel"})
    result = keysync("-q", "run")
    assert result.returncode == 3, result.stderr
    line = _one_error_line(result)
    assert line.startswith("keysync: error: ") and "paths.output: cannot use /sys/kernel" in line
    assert _runs(tmp_path) == []  # refused before anything was recorded
    # and a log collector sees it (a nightly cron run whose output mount went read-only)
    log_file = tmp_path / "data" / "logs" / "keysync.jsonl"
    (failed,) = [json.loads(text) for text in log_file.read_text().splitlines()]
    assert (failed["event"], failed["level"], failed["exit_code"]) == ("command.failed", "error", 3)
    assert failed["message"] == line.removeprefix("keysync: error: ")


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs a folder no one may write")
def test_a_log_file_that_cannot_be_written_is_exit_3(
    keysync: RunKeysync, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """Seen (re-test): a read-only logging.file was still exit 2, a configuration error."""
    _inputs(tmp_path)
    write_config(tmp_path, sources=SOURCES, logging={"file": "/sys/kernel/keysync.jsonl"})
    result = keysync("-q", "run")
    assert result.returncode == 3, result.stderr
    assert re.match(
        r"keysync: error: keysync-config\.yaml:\d+: logging\.file: cannot open ",
        _one_error_line(result),
    )


def test_simulate_names_paths_output_when_it_is_a_file(
    keysync: RunKeysync, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """Seen: `simulate` with paths.output naming a file blamed `logging.file`."""
    (tmp_path / "a-file").write_text("x\n")
    write_config(tmp_path, paths={"output": "a-file"}, simulation={"keys_per_system": 50})
    result = keysync("simulate", "--days", "1")
    assert result.returncode == 2, result.stderr
    assert "paths.output" in _one_error_line(result)


def test_registry_export_into_a_missing_folder_under_a_file_is_one_line(
    keysync: RunKeysync, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """Seen: `registry export --out a-file/registry.csv` ended in a FileExistsError traceback."""
    _inputs(tmp_path)
    write_config(tmp_path, sources=SOURCES)
    assert keysync("-q", "run").returncode == 0
    (tmp_path / "a-file").write_text("x\n")
    result = keysync("registry", "export", "--out", "a-file/registry.csv")
    # Seen (review): "the folder a-file does not exist; create it": it cannot be made.
    assert (result.returncode, _one_error_line(result)) == (
        2,
        "keysync: error: cannot write a-file/registry.csv: a-file is a file, not a folder; "
        "choose another --out",
    )
    # Seen (review): a folder that does not exist, written with its slash, became a file.
    folder = keysync("registry", "export", "--out", "exports/")
    assert (folder.returncode, _one_error_line(folder)) == (
        2,
        "keysync: error: cannot write exports/: it names a folder; give a file name, e.g. "
        "--out exports/registry.csv",
    )
    assert not (tmp_path / "exports").exists()
    # Seen (walkthrough): a mistyped folder was made, and the export said "wrote ...".
    typo = keysync("registry", "export", "--out", "exprots/registry.csv")
    assert (typo.returncode, typo.stderr) == (
        2,
        "keysync: error: cannot write exprots/registry.csv: the folder exprots does not "
        "exist; create it, or choose another --out\n",
    )
    assert not (tmp_path / "exprots").exists()
    empty = keysync("registry", "export", "--out", "")
    assert empty.stderr == "keysync: error: --out is empty: give a file, or - for stdout\n"


def test_registry_export_keeps_the_mode_of_the_file_and_takes_dash_for_stdout(
    keysync: RunKeysync, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """Seen: `registry export --out r.csv` (a cron job exporting for a BI tool) made r.csv
    0600 whatever the umask, taking read access from others; `--out -` wrote a file `-`."""
    _inputs(tmp_path)
    write_config(tmp_path, sources=SOURCES)
    assert keysync("-q", "run").returncode == 0
    shared = tmp_path / "shared.csv"
    shared.write_text("old\n")
    shared.chmod(0o640)
    assert keysync("-q", "registry", "export", "--out", str(shared)).returncode == 0
    assert shared.stat().st_mode & 0o777 == 0o640 and shared.read_text().startswith("master_key,")
    fresh = tmp_path / "fresh.csv"
    previous = os.umask(0o022)
    try:
        assert keysync("-q", "registry", "export", "--out", str(fresh)).returncode == 0
    finally:
        os.umask(previous)
    assert fresh.stat().st_mode & 0o777 == 0o644
    to_stdout = keysync("registry", "export", "--out", "-")
    assert to_stdout.stdout == shared.read_text() and not (tmp_path / "-").exists()
    # A link (a shared drop folder) is written through; setuid and setgid are not kept.
    (tmp_path / "drop").mkdir()
    target = tmp_path / "drop" / "registry.csv"
    target.write_text("old\n")
    target.chmod(0o6750)
    link = tmp_path / "latest.csv"
    link.symlink_to(target)
    assert keysync("-q", "registry", "export", "--out", str(link)).returncode == 0
    assert link.is_symlink() and target.read_text() == shared.read_text()
    assert target.stat().st_mode & 0o7777 == 0o750
    assert sorted(p.name for p in (tmp_path / "drop").iterdir()) == ["registry.csv"]
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")  # review: a traceback, exit 1
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    looped = keysync("-q", "registry", "export", "--out", str(tmp_path / "loop1"))
    assert looped.returncode == 2 and "too many levels of symbolic links" in looped.stderr
    assert "Traceback" not in looped.stderr


# ------------------------------------------------------------ --systems


def test_systems_with_no_name_is_a_usage_error_not_every_system(
    keysync: RunKeysync, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """Seen: `run --systems ,` (a variable that expanded to nothing) compared every system."""
    _inputs(tmp_path)
    write_config(tmp_path, sources=SOURCES)
    result = keysync("-q", "run", "--systems", ",")
    assert result.returncode == 2, result.stderr
    assert "--systems" in _one_error_line(result)
    assert _runs(tmp_path) == []


# ------------------------------------------------------------ --resume with other options


def _interrupted_run(folder: Path) -> str:
    """A run killed (-9) after reading everything: its checkpoint waits for --resume."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSYNC_")}
    env.update(KEYSYNC_TEST_PAUSE_AT="planning", KEYSYNC_TEST_PAUSE_S="60")
    process = subprocess.Popen(
        [sys.executable, "-m", "keysync", "-q", "run"],
        cwd=folder,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    log = folder / "data" / "logs" / "keysync.jsonl"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if log.exists() and '"event":"run.paused_for_tests"' in log.read_text():
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the run never reached its pause point")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    (run_id, outcome), *_ = _runs(folder)
    assert outcome == "running"
    return str(run_id)


@pytest.mark.parametrize(
    "extra",
    [["--dry-run"], ["--auto-approve"], ["--mode", "incremental"], ["--systems", "A,B"]],
)
def test_resume_refuses_options_the_interrupted_run_was_not_started_with(
    keysync: RunKeysync, write_config: Callable[..., Path], tmp_path: Path, extra: list[str]
) -> None:
    """Seen: `run --resume --dry-run` on an interrupted real run did a real run: 25 keys
    became Proposed in the registry although the user asked for a dry run."""
    _inputs(tmp_path)
    write_config(tmp_path, sources=SOURCES, processing={"checkpoint_interval": 10})
    run_id = _interrupted_run(tmp_path)
    result = keysync("-q", "run", "--resume", *extra)
    assert result.returncode == 2, result.stderr
    line = _one_error_line(result)
    assert run_id in line and extra[0] in line, line
    assert _runs(tmp_path) == [(run_id, "running")]  # nothing recorded, nothing resumed
    assert _registry(tmp_path) == []
    resumed = keysync("-q", "run", "--resume")  # the run itself is still there to continue
    assert resumed.returncode == 0, resumed.stderr
    assert _runs(tmp_path) == [(run_id, "completed")]


def test_resume_with_nothing_to_resume_still_honours_dry_run(
    keysync: RunKeysync, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """`--resume` in a cron line is "continue if interrupted, else run": options still count."""
    _inputs(tmp_path)
    write_config(tmp_path, sources=SOURCES)
    result = keysync("-q", "run", "--resume", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert [outcome for _, outcome in _runs(tmp_path)] == ["completed"]
    assert _registry(tmp_path) == []


# ------------------------------------------------------------ settings that cannot work


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "cp037"])
def test_an_encoding_the_reader_cannot_split_is_a_config_error(
    keysync: RunKeysync, write_config: Callable[..., Path], tmp_path: Path, encoding: str
) -> None:
    """Seen: `encoding: utf-16` passed `config check`; the run then called a valid UTF-16
    export "not valid utf-16" and left the system out (exit 3 or 4)."""
    sources = {**SOURCES, "B": {"path": "in/B.csv", "encoding": encoding}}
    write_config(tmp_path, sources=sources)
    result = keysync("config", "check")
    assert result.returncode == 2, result.stdout
    line = _one_error_line(result)
    assert "sources.B.encoding" in line and encoding in line and "utf-8" in line, line


@pytest.mark.parametrize("encoding", ["utf-8-sig", "latin-1", "cp1252"])
def test_ascii_compatible_encodings_stay_valid(
    keysync: RunKeysync, write_config: Callable[..., Path], tmp_path: Path, encoding: str
) -> None:
    _inputs(tmp_path)
    sources = {**SOURCES, "B": {"path": "in/B.csv", "encoding": encoding}}
    write_config(tmp_path, sources=sources)
    assert keysync("config", "check").returncode == 0
    result = keysync("-q", "run")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("section", "values", "setting"),
    [
        ("processing", "{source_timeout_s: .nan}", "processing.source_timeout_s"),
        ("provisioning", "{strategy: namespaced, namespace_separator: ''}", "namespace_separator"),
        ("provisioning", "{namespace_separator: X}", "namespace_separator"),
        ("provisioning", '{namespace_separator: "\\n"}', "namespace_separator"),
        ("normalize", "{pad_numbers: 1000000000}", "normalize.pad_numbers"),
        ("processing", "{max_key_length: 100000000000000000000}", "processing.max_key_length"),
        ("simulation", "{temporal: {days_of_history: 1000000}}", "days_of_history"),
        ("paths", "{output: ''}", "paths.output"),
        ("logging", "{file: ''}", "logging.file"),
    ],
)
def test_settings_that_cannot_work_are_refused_by_config_check(
    keysync: RunKeysync, tmp_path: Path, section: str, values: str, setting: str
) -> None:
    """Seen, all accepted as valid: a NaN timeout; an empty namespace separator, which
    makes "BC" + "UST-1" and "B" + "CUST-1" the same master key (a letter or a line break
    is no better); `pad_numbers: 1000000000` (a typo) pads every number in every key to a
    gigabyte; a 21-digit max_key_length (the run died on an OverflowError traceback);
    a million days of history (generate: OverflowError, date value out of range); an
    empty paths.output (reports land next to the config file) or logging.file."""
    (tmp_path / "keysync-config.yaml").write_text(f"{section}: {values}\n")
    result = keysync("config", "check")
    assert result.returncode == 2, result.stdout
    assert setting in _one_error_line(result)


def test_namespaced_keys_with_the_default_separator_still_work(
    keysync: RunKeysync, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    _inputs(tmp_path)
    write_config(
        tmp_path,
        sources=SOURCES,
        provisioning={"strategy": "namespaced", "namespace_separator": "::"},
        normalize={"pad_numbers": 8},
    )
    result = keysync("-q", "run")
    assert result.returncode == 0, result.stderr
    assert ("B::CUST-00000030", "Proposed") in _registry(tmp_path)


# ------------------------------------------------------------ Ctrl-C outside a run


def _ctrl_c_as_on_a_terminal() -> None:
    """In the child: SIGINT handled by default, as a user's terminal starts a command.

    A test run started in the background of a non-interactive shell (`nohup ... &`) has
    SIGINT ignored, which its children inherit; Python then raises no KeyboardInterrupt,
    and generate (which, unlike run, keeps the convention) would not stop."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _ctrl_c_ignored() -> None:
    """In the child: SIGINT ignored, as a non-interactive shell starts `cmd &`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _keysync_as_on_a_terminal(
    folder: Path,
    *args: str,
    pause_at: str | None = None,
    pause_s: float | None = None,
    ctrl_c_ignored: bool = False,
) -> subprocess.Popen[str]:
    """``keysync ARGS`` in its own session with SIGINT handled (or, ``ctrl_c_ignored``, as
    a script's background job has it), output piped, and held at ``pause_at``
    (``KEYSYNC_TEST_PAUSE_AT``) if given: a process to send Ctrl-C to."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSYNC_")}
    if pause_at:
        env["KEYSYNC_TEST_PAUSE_AT"] = pause_at
    if pause_s is not None:
        env["KEYSYNC_TEST_PAUSE_S"] = str(pause_s)
    return subprocess.Popen(
        [sys.executable, "-m", "keysync", *args],
        cwd=folder,
        env=env,
        start_new_session=True,
        preexec_fn=_ctrl_c_ignored if ctrl_c_ignored else _ctrl_c_as_on_a_terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stopped_at(
    folder: Path,
    phase: str,
    stop: int,
    *args: str,
    pause_s: float | None = None,
    ctrl_c_ignored: bool = False,
) -> tuple[int, str]:
    """``keysync ARGS`` held at ``phase``, sent ``stop`` there: its exit code and stderr."""
    process = _keysync_as_on_a_terminal(
        folder, *args, pause_at=phase, pause_s=pause_s, ctrl_c_ignored=ctrl_c_ignored
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if "paused_for_tests" in line:
                break
        process.send_signal(stop)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode, stderr


def test_ctrl_c_during_generate_exits_130_with_one_line(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """Seen: Ctrl-C in `keysync generate` printed click's "Aborted!" and exited 1, the code
    for "discrepancies found"; SPEC.md: 130 interrupted."""
    write_config(tmp_path)
    process = _keysync_as_on_a_terminal(  # held: it cannot finish before the signal
        tmp_path, "generate", "--keys", "100000", "--days", "5", pause_at="mock-publish"
    )
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "input" / "history").exists():
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 130, stderr
    assert "Aborted" not in stderr and "Traceback" not in stderr, stderr
    lines = [line for line in stderr.strip().splitlines() if "paused_for_tests" not in line]
    # Seen (walkthrough): "interrupted; every file already written is complete, run the
    # command again to finish" read as if some new files were in place; none is.
    assert lines == [
        "keysync: error: Ctrl-C stopped `keysync generate` before it replaced any file: the "
        "previous inputs and their manifest are as they were; run it again"
    ]
    assert not list((tmp_path / "input").glob(".*.tmp")), "no half-written file is left"


@pytest.mark.parametrize(
    ("command", "stop"),
    [
        (["approve", "--all"], signal.SIGINT),
        (["deprecate", "CUST-00030", "CUST-00031"], signal.SIGINT),
        (["approve", "--all"], signal.SIGTERM),
    ],
)
def test_ctrl_c_after_a_registry_change_is_committed_says_it_was_made(
    write_config: Callable[..., Path], tmp_path: Path, command: list[str], stop: int
) -> None:
    """Seen (failure hunt): Ctrl-C during the second `approve --all` spends logging and
    listing 77,384 committed approvals said "interrupted ... run the command again" and
    exited 130, never naming the audit run id: the user believed nothing was approved.
    A SIGTERM there ended it with 143 and not a word."""
    _inputs(tmp_path)
    write_config(tmp_path, sources=SOURCES)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSYNC_")}
    assert (
        subprocess.run([sys.executable, "-m", "keysync", "-q", "run"], cwd=tmp_path).returncode == 0
    )
    # held once the changes are committed
    returncode, stderr = _stopped_at(tmp_path, "listing", stop, "registry", *command)
    assert returncode == 0, stderr
    by = "Ctrl-C" if stop == signal.SIGINT else "SIGTERM"
    assert re.fullmatch(
        rf"(approved|deprecated) \d+ master keys \(audit run id manual-\S+\); {by} cut the "
        r"listing short, every change was made\n",
        stderr,
    ), stderr
    listed = subprocess.run(
        [sys.executable, "-m", "keysync", "registry", "list", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    statuses = {e["master_key"]: e["status"] for e in json.loads(listed.stdout)}
    want = "Active" if command[0] == "approve" else "Deprecated"
    assert all(statuses[k] == want for k in (statuses if command[0] == "approve" else command[1:]))


@pytest.mark.parametrize(
    ("command", "stop"),
    [
        (["approve", "--all"], signal.SIGTERM),
        (["deprecate", "CUST-00030", "CUST-00031"], signal.SIGINT),
    ],
)
def test_a_registry_change_stopped_before_its_commit_says_nothing_was_changed(
    write_config: Callable[..., Path], tmp_path: Path, command: list[str], stop: int
) -> None:
    """Seen (registry hunt): SIGTERM to `approve` or `deprecate` before its commit ended it
    with 143 and not a word, the lock left to be cleared as stale; Ctrl-C there said
    "every file already written is complete", which is about files, not the registry."""
    _inputs(tmp_path)
    write_config(tmp_path, sources=SOURCES)
    assert (
        subprocess.run([sys.executable, "-m", "keysync", "-q", "run"], cwd=tmp_path).returncode == 0
    )
    database = tmp_path / "data" / "keysync.db"
    # held with every change written, not committed
    returncode, stderr = _stopped_at(tmp_path, "mid-change", stop, "registry", *command)
    by = "Ctrl-C" if stop == signal.SIGINT else "SIGTERM"
    assert returncode == 130, stderr
    assert stderr == (
        f"keysync: error: {by} stopped `keysync registry {command[0]}"
        f"{' --all' if '--all' in command else ''}` before it changed anything: "
        "nothing was changed; run it again\n"
    )
    with sqlite3.connect(database) as connection:
        manual = connection.execute(
            "SELECT COUNT(*) FROM audit_events WHERE run_id LIKE 'manual-%'"
        ).fetchone()
    assert manual == (0,)
    assert (tmp_path / "data" / "keysync.lock").read_text() == ""  # released, not left stale
    again = subprocess.run(
        [sys.executable, "-m", "keysync", "registry", *command],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0 and "stale" not in again.stderr, again.stderr


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_a_ctrl_c_while_keysync_starts_is_one_line_not_a_traceback(
    write_config: Callable[..., Path], tmp_path: Path, stop: int
) -> None:
    """Seen (incremental hunt): Ctrl-C in the first tenth of a second printed Python's
    KeyboardInterrupt traceback from `import yaml`; SIGTERM there ended with 143."""
    write_config(tmp_path)
    returncode, stderr = _stopped_at(tmp_path, "starting", stop, "run")
    assert (returncode, stderr) == (
        130,
        "keysync: error: interrupted while starting; nothing was done\n",
    )
    assert not (tmp_path / "data").exists()


def test_a_ctrl_c_that_whoever_started_keysync_ignores_stays_ignored(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """Seen (review): a script's `keysync ... &` (SIGINT ignored, as a shell starts a
    background job) ended "interrupted while starting" on a Ctrl-C meant for the script,
    where Python itself would have gone on."""
    write_config(tmp_path)
    returncode, stderr = _stopped_at(
        tmp_path, "starting", signal.SIGINT, "config", "check", pause_s=1, ctrl_c_ignored=True
    )
    assert (returncode, stderr) == (0, ""), stderr  # (its paused_for_tests line was read)
    # Seen (review): `run` put its own handler in, and stopped: 130, "interrupted".
    _inputs(tmp_path)
    write_config(tmp_path, sources=SOURCES)
    returncode, stderr = _stopped_at(
        tmp_path, "planning", signal.SIGINT, "-q", "run", pause_s=1, ctrl_c_ignored=True
    )
    assert (returncode, stderr) == (0, ""), stderr
    assert [outcome for _, outcome in _runs(tmp_path)] == ["completed"]


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_a_ctrl_c_as_keysync_exits_after_a_completed_run_is_ignored(
    write_config: Callable[..., Path], tmp_path: Path, stop: int
) -> None:
    """Seen (incremental hunt): 5 of 30 runs recorded completed 0 yet ended by SIGTERM (143,
    no word) or SIGINT (130): the signal came while the process shut down."""
    _inputs(tmp_path)
    write_config(tmp_path, sources=SOURCES)
    # held for 2 s, the signals ignored there: it goes on by itself
    returncode, stderr = _stopped_at(tmp_path, "exiting", stop, "-q", "run", pause_s=2)
    assert returncode == 0, stderr


def _dead_pid() -> int:
    """The id of a process that has ended (a kill -9'd writer's)."""
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(ended.stdout)


def test_copies_left_by_a_killed_generate_or_export_go_with_the_next_one(
    keysync: RunKeysync, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """Seen (failure hunt): kill -9 of generate left full-size .A.csv.<pid>.pending files
    (15 of them, 259 MB where the inputs took 77) that no later generate or run removed;
    a killed `registry export --out F` left .F.<random> beside F."""
    write_config(tmp_path)
    dead, alive = _dead_pid(), os.getpid()
    inputs = tmp_path / "input"
    inputs.mkdir()
    left = [
        inputs / f".A.csv.{dead}.pending",
        inputs / f".manifest.json.{dead}.pending",
        inputs / f".B.csv.{dead}.tmp",
    ]
    running = inputs / f".A.csv.{alive}.pending"  # another generate, still writing
    for path in [*left, running]:
        path.write_text("old\n")
    assert keysync("-q", "generate", "--keys", "50").returncode == 0
    assert not any(path.exists() for path in left) and running.exists()
    assert keysync("-q", "run").returncode == 0
    export = tmp_path / "out" / "registry.csv"
    export.parent.mkdir()
    stale = export.with_name(f".registry.csv.{dead}.tmp")
    stale.write_text("old\n")
    assert keysync("-q", "registry", "export", "--out", str(export)).returncode == 0
    assert sorted(p.name for p in export.parent.iterdir()) == ["registry.csv"]


# ------------------------------------------------------------ usage errors


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "--mode", "fast"], "`keysync run --help`"),
        (["run", "--bogus"], "--bogus"),
        (["registry", "list", "--status", "Bogus"], "`keysync registry list --help`"),
        (["registry", "frobnicate"], "frobnicate"),
        (["--log-format", "xml", "runs"], "xml"),
        (["generate", "--keys", "0"], "--keys"),
        (["history"], "KEY"),
    ],
)
def test_a_usage_error_is_one_line_exit_2(
    keysync: RunKeysync, tmp_path: Path, args: list[str], expected: str
) -> None:
    """Seen: a mistyped option printed three lines (Usage, Try, Error) plus a blank one;
    SPEC.md: every non-zero exit prints one line saying what is wrong and what to do."""
    (tmp_path / "keysync-config.yaml").write_text("{}\n")
    result = keysync(*args)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("keysync: error: ") and expected in lines[0], lines[0]
    assert "--help" in lines[0]


def test_a_group_without_its_command_still_shows_its_help(keysync: RunKeysync) -> None:
    result = keysync("registry")
    shown = result.stdout + result.stderr
    assert "Usage: " in shown and "approve" in shown


# ------------------------------------------------------------ compliance: one key's trail


def test_history_of_a_namespaced_master_key_shows_its_key(
    keysync: RunKeysync, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """Seen: with `strategy: namespaced`, `keysync history B:CUST-00030` (the master key
    the registry lists) said the key "B-CUST-00030" was never seen: the ":" was
    normalized into a delimiter. A master key is now looked up as it is."""
    _inputs(tmp_path)
    write_config(tmp_path, sources=SOURCES, provisioning={"strategy": "namespaced"})
    assert keysync("-q", "run").returncode == 0
    result = keysync("history", "B:CUST-00030")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("history of CUST-00030 (master key B:CUST-00030)")
    assert "present" in result.stdout and "B:CUST-00030" in result.stdout
    unknown = keysync("history", "B:CUST-99999")
    assert unknown.returncode == 2
    assert "never seen" in _one_error_line(unknown)


# ------------------------------------------------------------ interrupting generate


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _big_generate_over_a_small_one(
    keysync: RunKeysync, write_config: Callable[..., Path], tmp_path: Path, held: bool = False
) -> tuple[Path, dict[str, bytes], subprocess.Popen[str]]:
    """A 50-key mock set in place, then `generate --keys 200000` (with its helper) started;
    ``held``: it waits before it puts its files in place, so a signal finds it at work."""
    write_config(tmp_path)
    assert keysync("-q", "generate", "--keys", "50").returncode == 0
    folder = tmp_path / "input"
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    process = _keysync_as_on_a_terminal(
        tmp_path, "generate", "--keys", "200000", pause_at="mock-publish" if held else None
    )
    return folder, before, process


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_generate_keeps_the_previous_inputs_whole_and_leaves_no_process(
    keysync: RunKeysync, write_config: Callable[..., Path], tmp_path: Path, sig: signal.Signals
) -> None:
    """Seen: `keysync generate --keys 200000` stopped by SIGTERM (or Ctrl-C) while writing
    left C.csv..E.csv of the new data next to A.csv, B.csv and manifest.json of the old,
    a set no run should read; after SIGTERM its forked helper process lived on, orphaned,
    forever. Now the new files replace the old ones only once all are written, and
    the helper goes with the main process."""
    folder, before, process = _big_generate_over_a_small_one(
        keysync, write_config, tmp_path, held=True
    )
    try:
        deadline = time.monotonic() + 60
        while not any(p.name.startswith(".") for p in folder.iterdir()):
            assert time.monotonic() < deadline and process.poll() is None, "never wrote"
            time.sleep(0.005)
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=30)
        deadline = time.monotonic() + 10
        while _group_alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _group_alive(process.pid), "a helper process outlived generate"
    finally:
        if _group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == 130, stderr
    lines = [line for line in stderr.strip().splitlines() if "paused_for_tests" not in line]
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    after = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert after == before


def test_generate_whose_helper_is_killed_says_so_and_keeps_the_previous_inputs(
    keysync: RunKeysync, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """Seen: the helper process that builds half of a big mock set, killed (by the OOM
    killer, say), made `keysync generate` end with a BrokenProcessPool traceback and
    exit 1, the code for "discrepancies found". Now it is one line saying what died and
    what to do, exit 3, and the previous inputs are untouched."""
    folder, before, process = _big_generate_over_a_small_one(keysync, write_config, tmp_path)
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    try:
        deadline = time.monotonic() + 60
        while not children.read_text().split():
            assert time.monotonic() < deadline and process.poll() is None, "no helper started"
            time.sleep(0.005)
        os.kill(int(children.read_text().split()[0]), signal.SIGKILL)
        _, stderr = process.communicate(timeout=60)
    finally:
        if _group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == 3, stderr
    assert stderr == (
        "keysync: error: generate's helper process was killed by signal 9 (out of memory?); "
        "run again\n"
    )
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


# ------------------------------------------------------------ sources that are not CSV files


def _degraded_reason(folder: Path, result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 4, result.stderr
    summary = (folder / "output" / "summary.json").read_text()
    assert '"B"' in summary
    return result.stdout + result.stderr


def test_a_header_naming_the_key_column_twice_makes_the_source_unavailable(
    keysync: RunKeysync, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """Seen: a peer exported as `key,name,key` was compared on its first `key` column
    without a word; which of the two holds the business key is anyone's guess."""
    _inputs(tmp_path)
    (tmp_path / "in" / "B.csv").write_text("key,name,key\nCUST-00001,x,CUST-90001\n")
    write_config(tmp_path, sources=SOURCES)
    result = keysync("run")
    text = _degraded_reason(tmp_path, result)
    assert "column 'key' 2 times" in text, text


def test_a_device_instead_of_a_file_is_unavailable_with_a_clear_reason(
    keysync: RunKeysync, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """Seen: B.csv a link to /dev/zero: 'header has no column 'key' (columns: \\x00\\x00...'."""
    _inputs(tmp_path)
    (tmp_path / "in" / "B.csv").unlink()
    (tmp_path / "in" / "B.csv").symlink_to("/dev/zero")
    write_config(tmp_path, sources=SOURCES)
    result = keysync("run")
    text = _degraded_reason(tmp_path, result)
    assert "not a regular file" in text, text


# ------------------------------------------------------------ disk-ish errors


def test_a_report_that_cannot_be_put_in_place_is_one_line_exit_3(
    keysync: RunKeysync, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """Seen: a folder in the way of output/duplicates.csv (or a full disk: ENOSPC while
    writing a report) ended the run with an IsADirectoryError/OSError traceback and
    exit 1, the code for "discrepancies found"."""
    _inputs(tmp_path)
    write_config(tmp_path, sources=SOURCES)
    (tmp_path / "output" / "duplicates.csv" / "in-the-way").mkdir(parents=True)
    result = keysync("-q", "run")
    assert result.returncode == 3, result.stderr
    line = _one_error_line(result)
    assert "duplicates.csv" in line and "run again" in line, line
    # Refused before the commit: the run is failed, nothing of it is in the registry.
    runs = json.loads(keysync("runs", "--json").stdout)
    assert [r["outcome"] for r in runs] == ["failed"]
    assert keysync("registry", "list").stdout.strip() in ("", "no master keys yet")
    (tmp_path / "output" / "duplicates.csv" / "in-the-way").rmdir()
    (tmp_path / "output" / "duplicates.csv").rmdir()
    again = keysync("-q", "run")  # once the way is clear, the next run is whole again
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "output" / "duplicates.csv").is_file()


# ------------------------------------------------------------ the last line of a run


@pytest.mark.parametrize("quiet", [[], ["-q"]])
def test_a_degraded_run_ends_with_a_line_that_says_why_and_what_to_do(
    keysync: RunKeysync,
    write_config: Callable[..., Path],
    tmp_path: Path,
    quiet: list[str],
) -> None:
    """Seen: a cron mail holding only `keysync: degraded: B unavailable, not compared`:
    neither why B was left out nor what to do about it."""
    _inputs(tmp_path)
    (tmp_path / "in" / "B.csv").write_text("id,name\nCUST-00001,x\n")
    write_config(tmp_path, sources=SOURCES)
    result = keysync(*quiet, "run")
    assert result.returncode == 4, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("keysync: degraded: B unavailable"), last
    assert "header has no column 'key'" in last and "set sources.B.key_column" in last, last
    assert last.endswith("cover the others: run again once it is back"), last
    # Not a third time on stdout: its warning (the log's) and this line say it already.
    assert "header has no column 'key'" not in result.stdout


def test_a_degraded_run_with_fail_on_diff_says_the_others_failed_it_too(
    keysync: RunKeysync, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """Exit 4 comes before 1: a CI gate got "degraded" and no word that B failed it."""
    _inputs(tmp_path)
    (tmp_path / "in" / "C.csv").unlink()
    write_config(tmp_path, sources=SOURCES)
    result = keysync("-q", "run", "--fail-on-diff")
    assert result.returncode == 4, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("keysync: degraded: C unavailable, not compared (C: "), last
    assert last.endswith(
        "cover the others: run again once it is back; in the others, discrepancies found "
        "(--fail-on-diff): 5 out-of-authority keys, 5 gaps (per system)"
    ), last
    assert keysync("-q", "run").stderr.strip().endswith("run again once it is back")


def test_a_run_with_two_peers_down_says_run_again_once_they_are_back(
    keysync: RunKeysync, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    _inputs(tmp_path)
    (tmp_path / "in" / "D.csv").write_text("key,name\nCUST-00001,x\n")
    (tmp_path / "in" / "B.csv").unlink()
    write_config(
        tmp_path, sources={**SOURCES, "D": {"path": "in/D.csv"}, "E": {"path": "in/E.csv"}}
    )
    result = keysync("-q", "run")
    assert result.returncode == 4, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("keysync: degraded: B, E unavailable"), last
    assert last.endswith("cover the others: run again once they are back"), last


def test_fail_on_diff_says_where_the_discrepancies_are(
    keysync: RunKeysync, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    _inputs(tmp_path)
    write_config(tmp_path, sources=SOURCES)
    result = keysync("-q", "run", "--fail-on-diff")
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "discrepancies found" in line and str(tmp_path / "output") in line, line


# ------------------------------------------------------------ generate and real exports


@pytest.mark.parametrize("command", [["generate", "--keys", "20"], ["run", "--keys", "20"]])
def test_generate_never_overwrites_an_export_it_did_not_write(
    keysync: RunKeysync,
    write_config: Callable[..., Path],
    tmp_path: Path,
    command: list[str],
) -> None:
    """Seen: with sources pointing at real exports, `keysync generate` (or `run --keys 20`,
    typed for a quick try) replaced A.csv and B.csv with mock data without a word."""
    _inputs(tmp_path)
    write_config(tmp_path, sources=SOURCES)
    before = {p.name: p.read_bytes() for p in (tmp_path / "in").iterdir()}
    result = keysync("-q", *command)
    assert result.returncode == 3, result.stderr
    line = _one_error_line(result)
    assert "A.csv" in line and "--out" in line, line
    assert {p.name: p.read_bytes() for p in (tmp_path / "in").iterdir()} == before
    assert _runs(tmp_path) == []


def test_generate_still_replaces_its_own_files(
    keysync: RunKeysync, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    write_config(tmp_path, sources=SOURCES)
    assert keysync("-q", "generate", "--keys", "20").returncode == 0
    first = (tmp_path / "in" / "A.csv").read_bytes()
    assert keysync("-q", "generate", "--keys", "30").returncode == 0
    assert (tmp_path / "in" / "A.csv").read_bytes() != first
    rerun = keysync("run", "--keys", "25")
    assert rerun.returncode == 0, rerun.stderr
    (said,) = [line for line in rerun.stderr.splitlines() if "inputs.regenerated" in line]
    assert "keys_per_system=25 seed=42 scenario=normal folder=" in said, said
    # and the run's record says it reconciled mock data made for it
    (record,) = json.loads(keysync("runs", "--json").stdout)
    assert record["flags"]["keys"] == 25
    assert " keys=25 systems=A,B,C " in keysync("runs").stdout


def test_the_readme_first_session_runs_as_written_on_the_default_config(
    tmp_path: Path, keysync: RunKeysync
) -> None:
    """Every `$ keysync ...` line of the README's first session works on the default data.

    The keys it names must be ones the default mock data proposes, and the run id
    it shows stands for the one this run gets.
    """
    repository = Path(__file__).resolve().parent.parent
    readme = (repository / "README.md").read_text(encoding="utf-8")
    session = readme.split("```console\n", 1)[1].split("```", 1)[0]
    commands = [shlex.split(line[2:], comments=True) for line in session.splitlines()]
    commands = [words for words in commands if words[:1] == ["keysync"]]
    assert len(commands) >= 7, session
    (tmp_path / "keysync-config.yaml").write_bytes(
        (repository / "keysync-config.yaml").read_bytes()
    )
    shown_run_id = session.split("\nrun ", 1)[1].split()[0]
    for words in commands:
        args = [_runs(tmp_path)[-1][0] if w == shown_run_id else w for w in words[1:]]
        result = keysync(*args)
        assert result.returncode == 0, (words, result.stderr)


def test_a_checkpoint_folder_shared_with_other_files_loses_none_of_them(
    tmp_path: Path, keysync: RunKeysync, write_config: Callable[..., Path]
) -> None:
    """paths.checkpoints may be '.', or /tmp: a run removes only checkpoints keysync made."""
    write_config(tmp_path, sources=SOURCES, paths={"checkpoints": "."})
    _inputs(tmp_path)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    debris = tmp_path / "20261130T020000Z-dead"  # killed while writing its header
    debris.mkdir()
    (debris / "header.msgpack.tmp").write_bytes(b"\x93")
    for _ in range(2):
        assert keysync("-q", "run").returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [
        "data",
        "in",
        "notes",
        "output",
    ]
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_a_checkpoint_of_another_project_in_a_shared_folder_is_left_alone(
    tmp_path: Path, keysync: RunKeysync, write_config: Callable[..., Path]
) -> None:
    """Two projects with one paths.checkpoints: one's --resume never deletes the other's."""
    shared = tmp_path / "checkpoints"
    for name in ("p1", "p2"):
        write_config(tmp_path / name, sources=SOURCES, paths={"checkpoints": str(shared)})
        _inputs(tmp_path / name)
    theirs = shared / "20261130T020000Z-beef"  # p1's run, killed (its header is all we need)
    theirs.mkdir(parents=True)
    (theirs / "header.msgpack").write_bytes(b"\x00")
    (theirs / "log.bin").write_bytes(b"frames")
    done = keysync("-q", "run", "--resume", cwd=tmp_path / "p2")
    assert done.returncode == 0, done.stderr
    assert (theirs / "log.bin").read_bytes() == b"frames"


def test_on_a_terminal_the_steps_after_reading_are_shown(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """Seen: at 5 x 1M the progress bar stopped at 100 % and nothing moved for 12-38 s
    (comparing, planning, reports, commit): the run looked hung."""
    import pty

    _inputs(tmp_path)
    write_config(tmp_path, sources=SOURCES)
    main, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSYNC_")}
    run = subprocess.Popen(
        [sys.executable, "-m", "keysync", "run"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=terminal,
    )
    os.close(terminal)
    shown = b""
    with contextlib.suppress(OSError):  # EIO once the run has closed its end
        while chunk := os.read(main, 65536):
            shown += chunk
    os.close(main)
    assert run.wait(60) == 0
    steps = re.findall(rb"\r\x1b\[K([a-z][a-z ]+)\.\.\.", shown)
    assert steps == [
        b"comparing",
        b"planning the registry changes",
        b"writing the reports",
        b"saving the state",
        b"writing the audit log",
    ]


def test_a_reading_command_stopped_while_it_waits_says_so_in_words_that_fit(
    tmp_path: Path,
) -> None:
    """Seen (a new user's walkthrough): `keysync -c fifo.yaml runs`, its config a pipe no
    one wrote, stopped by SIGTERM said "every file already written is complete, run the
    command again to finish", of a command that writes no file."""
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    process = subprocess.Popen(
        [sys.executable, "-m", "keysync", "-c", str(fifo), "runs"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while True:  # a writer's end opens once keysync has the pipe open to read its config
        try:
            writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError:  # ENXIO: no reader yet
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
    try:
        process.send_signal(signal.SIGTERM)  # while it waits for the config's first byte
        _, stderr = process.communicate(timeout=30)
    finally:
        os.close(writer)
    assert process.returncode == 130
    assert stderr == (
        "keysync: error: interrupted; nothing is left half-written: run the command again\n"
    )
