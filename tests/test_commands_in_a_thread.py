"""A command called from a worker thread (a service calling the CLI) says its error line.

Seen: the error line is said with Ctrl-C and SIGTERM ignored (errors.stops_ignored), and
signal.signal raises ValueError outside the main thread: `registry export` (no config here: exit 2)
called from a thread ended with exit 1 and no line instead of exit 2.
"""

from __future__ import annotations

import threading
from pathlib import Path

from click.testing import CliRunner, Result

from keysync.cli import main


def test_a_command_failing_in_a_worker_thread_says_its_line(
    tmp_path: Path, monkeypatch: object
) -> None:
    monkeypatch.chdir(tmp_path)  # type: ignore[attr-defined]
    results: list[Result] = []
    worker = threading.Thread(
        target=lambda: results.append(CliRunner().invoke(main, ["registry", "export", "--out", ""]))
    )
    worker.start()
    worker.join(60)
    (result,) = results
    assert result.exit_code == 2, (result.exception, result.output)
    assert result.output.startswith("keysync: error: "), result.output
