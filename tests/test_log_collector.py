"""A real log collector reads every event keysync writes: rsyslog (imfile + mmjsonparse).

The collector runs on the configuration documented in docs/logging.md (only its paths
are swapped for temporary ones), as its own foreground ``rsyslogd`` with its own pid file
and work folder: no system socket, no ``/dev/log``. It tails the log file while real
processes write it, re-serialises every event it parsed, and the test compares that,
event by event, with the file. ``.ci/run`` installs rsyslog; without it the test is skipped
locally and fails in CI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTED_PATHS = {
    "work": "/var/spool/rsyslog-keysync",
    "collected": "/var/log/keysync/collected.jsonl",
    "unparsed": "/var/log/keysync/unparsed.log",
    "log_file": "/srv/keysync/data/logs/keysync.jsonl",
}


def _rsyslogd() -> str | None:
    found = shutil.which("rsyslogd")
    if found:
        return found
    return "/usr/sbin/rsyslogd" if os.access("/usr/sbin/rsyslogd", os.X_OK) else None


def documented_config() -> str:
    """The rsyslog configuration block of docs/logging.md, as a user would copy it."""
    docs = (ROOT / "docs" / "logging.md").read_text(encoding="utf-8")
    match = re.search(r"^```\n(# keysync-rsyslog\.conf.*?)^```", docs, re.MULTILINE | re.DOTALL)
    assert match, "docs/logging.md has no rsyslog configuration block"
    return match.group(1)


class Collector:
    """One rsyslogd in the foreground, tailing ``log_file`` into ``collected``."""

    def __init__(self, folder: Path, log_file: Path) -> None:
        binary = _rsyslogd()
        assert binary is not None
        self.folder = folder
        self.collected = folder / "collected.jsonl"
        self.unparsed = folder / "unparsed.log"
        work = folder / "work"
        work.mkdir(parents=True)
        config = documented_config()
        for name, path in {
            "work": work,
            "collected": self.collected,
            "unparsed": self.unparsed,
            "log_file": log_file,
        }.items():
            assert DOCUMENTED_PATHS[name] in config
            config = config.replace(DOCUMENTED_PATHS[name], str(path))
        self.config = folder / "keysync-rsyslog.conf"
        self.config.write_text(config, encoding="utf-8")
        check = subprocess.run(
            [binary, "-N1", "-f", str(self.config)], capture_output=True, text=True, check=False
        )
        assert check.returncode == 0, f"rsyslogd rejects the documented config:\n{check.stderr}"
        self.pid_file = folder / "rsyslogd.pid"
        self.output = (folder / "rsyslogd.out").open("wb")
        self.process = subprocess.Popen(
            [binary, "-n", "-f", str(self.config), "-i", str(self.pid_file)],
            stdout=self.output,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 15
        while not self.pid_file.exists():
            assert self.process.poll() is None, f"rsyslogd exited: {self.diagnostics()}"
            assert time.monotonic() < deadline, f"rsyslogd did not start: {self.diagnostics()}"
            time.sleep(0.02)

    def events(self, expected: int, timeout: float = 30) -> list[dict[str, Any]]:
        """What the collector wrote, once it has ``expected`` events (or the time is up)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.collected.read_bytes().splitlines() if self.collected.exists() else []
            if len(lines) >= expected or time.monotonic() > deadline:
                return [json.loads(line) for line in lines]
            assert self.process.poll() is None, f"rsyslogd died: {self.diagnostics()}"
            time.sleep(0.05)

    def diagnostics(self) -> str:
        self.output.flush()
        said = (self.folder / "rsyslogd.out").read_text(errors="replace")
        unparsed = self.unparsed.read_text(errors="replace") if self.unparsed.exists() else ""
        return f"rsyslogd said: {said[-2000:]!r}; unparsed lines: {unparsed[-2000:]!r}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.output.close()


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Callable[[Path], Collector]]:
    if _rsyslogd() is None:
        if os.environ.get("CI"):
            pytest.fail("rsyslogd is missing and CI is set: .ci/run must install rsyslog")
        pytest.skip("rsyslogd is not installed (Debian: apt-get install rsyslog)")
    started: list[Collector] = []

    def start(log_file: Path) -> Collector:
        started.append(Collector(tmp_path / "collector", log_file))
        return started[-1]

    yield start
    for one in started:
        one.stop()


def read_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def assert_collected_everything(collector: Collector, *files: Path) -> list[dict[str, Any]]:
    """The collector has every event of ``files``, each with all its fields and values."""
    written = [event for path in files for event in read_events(path)]
    collected = collector.events(len(written))
    assert len(collected) == len(written), (
        f"the collector has {len(collected)} of {len(written)} events; {collector.diagnostics()}"
    )
    if len(files) == 1:  # one file is read in order: compare event by event
        for number, (got, want) in enumerate(zip(collected, written), 1):
            assert got == want, f"event {number} differs after collection"
    else:  # after a rotation the collector may interleave the old file's tail and the new
        canonical = [json.dumps(e, sort_keys=True) for e in written]
        assert sorted(json.dumps(e, sort_keys=True) for e in collected) == sorted(canonical)
    assert not collector.unparsed.exists() or collector.unparsed.stat().st_size == 0
    return written


# A parent and two forkserver workers, all logging through keysync.logs, many events of
# every shape: large ones (sent in chunks), exceptions, NUL, non-ASCII, nested values.
EMITTER = textwrap.dedent(
    """
    import multiprocessing as mp
    import sys
    import time
    from pathlib import Path

    from keysync import logs


    def work(queue, level, worker):
        logs.setup_worker_logging(queue, level=level, run_id="run-collector", stage="reader")
        log = logs.get_logger(system="B", worker=worker)
        for seq in range(400):
            log.info("test.event", seq=seq, ratio=seq / 7, raw="nul\\x00 café\\nnext line",
                     nested={"a": [1, 2.5, None, True], "b": {"c": "d"}})
            if seq % 100 == 0:
                log.info("test.large", seq=seq, blob="x" * 12000)
        try:
            raise ValueError("worker trouble\\nsecond line")
        except ValueError:
            log.exception("test.failed")


    if __name__ == "__main__":
        logs.setup_logging(level="info", log_file=Path(sys.argv[1]))
        ctx = mp.get_context("forkserver")
        logs.bind_run("run-collector")
        log = logs.get_logger(stage="runner")
        log.info("run.started", mode="full", systems=["A", "B"])
        relay = logs.LogRelay(ctx)
        relay.start()
        workers = [ctx.Process(target=work, args=(relay.queue, relay.level, n)) for n in range(2)]
        for process in workers:
            process.start()
        log_file = Path(sys.argv[1])
        while log_file.stat().st_size < 100_000 and any(p.is_alive() for p in workers):
            time.sleep(0.005)
        log_file.rename(log_file.with_name(log_file.name + ".1"))  # logrotate, mid-run
        for process in workers:
            process.join()
        relay.stop()
        log.info("run.completed", exit_code=0, duration_s=0.25)
    """
)


def test_collector_reads_every_event_of_a_parent_and_its_workers_across_a_rotation(
    tmp_path: Path, collector: Callable[[Path], Collector]
) -> None:
    log_file = tmp_path / "data" / "logs" / "keysync.jsonl"
    log_file.parent.mkdir(parents=True)
    running = collector(log_file)
    script = tmp_path / "emit.py"
    script.write_text(EMITTER, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script), str(log_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr

    rotated = log_file.with_name("keysync.jsonl.1")
    assert read_events(rotated) and read_events(log_file), "the rotation happened mid-run"
    events = assert_collected_everything(running, rotated, log_file)
    assert len(events) == 2 + 2 * (400 + 4 + 1)
    worker_pids = {e["pid"] for e in events if e.get("stage") == "reader"}
    assert len(worker_pids) == 2 and all(e["run_id"] == "run-collector" for e in events)
    failed = [e for e in events if e["event"] == "test.failed"]
    assert [e["exception"]["message"] for e in failed] == ["worker trouble\nsecond line"] * 2


def test_collector_reads_every_event_of_a_real_keysync_run(
    tmp_path: Path, collector: Callable[[Path], Collector], write_config: Any, keysync: Any
) -> None:
    # Mock data with 1 % corruption; one peer stops answering (its reader process says so,
    # then the parent declares it unavailable after 5 s): events from both kinds of process.
    write_config(
        tmp_path,
        simulation={
            "seed": 7,
            "keys_per_system": 2000,
            "failures": {"inject_corruption": 0.01, "simulate_timeout": True},
        },
        processing={
            "workers": 2,
            "batch_size": 200,
            "checkpoint_interval": 1000,
            "source_timeout_s": 5,  # a healthy reader starved > 1 s must not count as silent
        },
    )
    generated = keysync("generate")
    assert generated.returncode == 0, generated.stderr
    log_file = tmp_path / "data" / "logs" / "keysync.jsonl"
    log_file.unlink(missing_ok=True)  # only the run's events: the collector starts first
    log_file.parent.mkdir(parents=True, exist_ok=True)
    running = collector(log_file)

    done = keysync("-v", "run")
    assert done.returncode == 4, done.stderr  # degraded: the silent peer is unavailable

    events = assert_collected_everything(running, log_file)
    names = {e["event"] for e in events}
    assert {"run.started", "source.stalling", "source.unavailable", "row.rejected"} <= names
    assert {"source.rejected_rows", "checkpoint.saved", "report.written", "run.completed"} <= names
    assert len({e["run_id"] for e in events}) == 1
    (parent,) = {e["pid"] for e in events if e["stage"] == "runner"}
    assert {e["pid"] for e in events} - {parent}, "no event of a worker process"
