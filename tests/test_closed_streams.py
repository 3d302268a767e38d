"""keysync started with stdin, stdout or stderr closed (`2>&-` in a cron line).

The first file keysync opened used to take the closed descriptor's number (the log file
became "stdout", the state database "stderr"), and Python's stream for it is ``None``:
the run's first warning was an AttributeError, the run recorded failed, exit 1. With
stdout closed every command printed nothing and said 0.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest


def _shell(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in sh, where ``keysync`` is ``python -m keysync``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSYNC_")}
    env["KEYSYNC"] = f"{sys.executable} -m keysync"
    return subprocess.run(
        ["sh", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def _inputs(tmp_path: Path, systems: str) -> None:
    (tmp_path / "input").mkdir()
    for system in systems:
        (tmp_path / "input" / f"{system}.csv").write_text(
            f"key\nK-1\nK-{system}\n", encoding="utf-8"
        )


def test_a_run_with_stderr_and_stdin_closed_completes_and_the_database_stays_whole(
    tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    write_config(tmp_path)
    _inputs(tmp_path, "ABCD")  # E missing: a degraded run, which warns on stderr

    done = _shell("$KEYSYNC run 2>&- <&-", tmp_path)

    assert done.returncode == 4, (done.stdout, done.stderr)
    assert "E" in done.stdout and "unavailable" in done.stdout, done.stdout
    with sqlite3.connect(tmp_path / "data" / "keysync.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT outcome FROM runs").fetchall() == [("degraded",)]
    log = (tmp_path / "data" / "logs" / "keysync.jsonl").read_text(encoding="utf-8")
    assert '"event":"source.unavailable"' in log and "run.failed" not in log


def test_every_command_refuses_a_closed_stdout_with_one_line_and_does_nothing(
    tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    write_config(tmp_path)
    _inputs(tmp_path, "ABCDE")

    for command in ("run", "runs", "registry export", "config check"):
        done = _shell(f"$KEYSYNC {command} >&-", tmp_path)
        assert done.returncode == 3, (command, done.stderr)
        assert done.stderr == (
            "keysync: error: standard output is closed (started with >&-); nothing was "
            "done: give keysync one (> /dev/null discards what it prints)\n"
        ), command
    assert not (tmp_path / "data").exists()
    assert not (tmp_path / "output").exists()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_stdout_on_a_full_disk_is_one_line_not_a_traceback_and_exit_120(
    tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    """Seen (full-disk hunt): `keysync runs > file` on a full disk (here /dev/full) printed
    Python's "Exception ignored ... No space left on device" traceback at exit, code 120;
    `audit`, whose output fills the buffer, said "no space left on device" naming nothing;
    `run` printed its traceback after its commit."""
    write_config(tmp_path)
    _inputs(tmp_path, "ABCDE")
    for command, advice in [
        ("run", "; the run itself is done (`keysync runs` shows it)"),
        ("runs", ", then run the command again"),
        ("config check", ", then run the command again"),
    ]:
        done = _shell(f"$KEYSYNC {command} > /dev/full", tmp_path)
        assert (done.returncode, done.stderr.splitlines()[-1]) == (
            3,
            "keysync: error: cannot write standard output (/dev/full): no space left on "
            f"device; what it printed is cut short: make room there{advice}",
        ), command
        assert "Traceback" not in done.stderr, command
    with sqlite3.connect(tmp_path / "data" / "keysync.db") as db:
        assert db.execute("SELECT outcome FROM runs").fetchall() == [("completed",)]
