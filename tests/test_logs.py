"""Structured logs: one JSON line per event from every process, rotation, levels, exceptions.

The multiprocess tests start real ``forkserver`` children (as the pipeline does) that log
through ``LogRelay``; the end-to-end tests run the real ``keysync`` command.
"""

from __future__ import annotations

import io
import json
import math
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keysync import logs

KEYSYNC_PACKAGE = Path(logs.__file__).parent
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")
EVENT_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
COMMON = ("timestamp", "level", "event", "pid")


@pytest.fixture(autouse=True)
def _restore_logging() -> Any:
    yield
    logs.unbind_run()
    logs.shutdown_logging()


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every line of a log file, parsed; fails on a torn, partial or non-object line."""
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), "the last line is incomplete"
    events = []
    for number, line in enumerate(data.splitlines(), 1):
        event = json.loads(line)
        assert isinstance(event, dict), f"line {number} is not a JSON object: {line[:80]!r}"
        events.append(event)
    return events


def assert_common_fields(event: dict[str, Any]) -> None:
    for name in COMMON:
        assert name in event, f"{name} missing in {event}"
    assert RFC3339_UTC.match(event["timestamp"]), event["timestamp"]
    assert event["level"] in logs.LEVELS
    assert EVENT_NAME.match(event["event"]), event["event"]
    assert isinstance(event["pid"], int)


# ----------------------------------------------------------------- one process


def test_every_line_has_the_common_fields_first_then_its_own(tmp_path: Path) -> None:
    log_file = tmp_path / "data" / "logs" / "keysync.jsonl"  # the folders do not exist yet
    logs.setup_logging(level="info", log_file=log_file, stream=io.StringIO())
    log = logs.get_logger(stage="runner")
    logs.bind_run("20261128T001000Z-ab12")
    log.info("run.started", mode="full", systems=["A", "B"])
    log.debug("row.rejected", system="B", line=7)  # below the level: not written
    logs.unbind_run()
    log.info("report.written", path=tmp_path / "out.csv", rows=3)

    first, second = read_events(log_file)
    assert list(first) == [
        *("timestamp", "level", "event", "run_id", "pid", "stage"),
        "mode",
        "systems",
    ]
    assert first["event"] == "run.started" and first["level"] == "info"
    assert first["run_id"] == "20261128T001000Z-ab12" and first["pid"] == os.getpid()
    assert first["systems"] == ["A", "B"] and first["stage"] == "runner"
    assert "run_id" not in second  # outside a run
    assert second["path"] == str(tmp_path / "out.csv")  # a Path is logged as its text
    for event in (first, second):
        assert_common_fields(event)


def test_console_line_is_human_readable_and_has_no_colours_off_a_terminal(
    tmp_path: Path,
) -> None:
    stderr = io.StringIO()
    logs.setup_logging(level="info", log_file=tmp_path / "k.jsonl", stream=stderr)
    logs.bind_run("r-1")
    logs.get_logger(stage="runner").info(
        "run.started", mode="full", note="two words", systems=["A", "B"]
    )
    line = stderr.getvalue()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ info     run\.started  run_id=r-1 stage=runner "
        r'mode=full note="two words" systems=\["A","B"\]\n',
        line,
    ), line
    assert "\x1b" not in line


def test_colours_only_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    primary, secondary = os.openpty()
    with open(secondary, "w", encoding="utf-8", closefd=True) as terminal:
        logs.setup_logging(level="info", log_file=None, stream=terminal)
        logs.get_logger().warning("source.unavailable", system="D")
        shown = os.read(primary, 4096).decode()
        monkeypatch.setenv("NO_COLOR", "1")
        logs.setup_logging(level="info", log_file=None, stream=terminal)
        logs.get_logger().warning("source.unavailable", system="D")
        plain = os.read(primary, 4096).decode()
    os.close(primary)
    assert "\x1b[33m" in shown and "source.unavailable" in shown  # warning in yellow
    assert not re.search(r"\x1b\[[0-9;]*m", plain) and "source.unavailable" in plain
    # On a terminal each line first clears a progress line drawn with "\r".
    assert shown.startswith("\r\x1b[K") and plain.startswith("\r\x1b[K")


def test_log_format_json_puts_the_file_lines_on_stderr(tmp_path: Path) -> None:
    stderr = io.StringIO()
    log_file = tmp_path / "k.jsonl"
    logs.setup_logging(level="info", log_file=log_file, stderr_format="json", stream=stderr)
    log = logs.get_logger(stage="runner")
    log.info("run.started", mode="full")
    log.warning("source.unavailable", system="D", reason="file not found")
    assert stderr.getvalue() == log_file.read_text(encoding="utf-8")
    assert len(stderr.getvalue().splitlines()) == 2


def _fail_deep() -> None:
    try:
        {}["A"]
    except KeyError as exc:
        raise ValueError("cannot read A\nsecond line of the message") from exc


def test_an_exception_is_one_structured_field_never_multiline_text(tmp_path: Path) -> None:
    stderr = io.StringIO()
    log_file = tmp_path / "k.jsonl"
    logs.setup_logging(level="info", log_file=log_file, stream=stderr)
    try:
        _fail_deep()
    except ValueError:
        # an error the console shows (run.failed is file only: the CLI's line says it)
        logs.get_logger(stage="runner").exception("run.unpublished", reason="bug")

    assert len(log_file.read_bytes().splitlines()) == 1
    (event,) = read_events(log_file)
    assert event["level"] == "error" and event["reason"] == "bug"
    exception = event["exception"]
    assert exception["type"] == "ValueError"
    assert exception["message"] == "cannot read A\nsecond line of the message"
    assert exception["frames"][-1].endswith("in _fail_deep")
    assert any(
        frame.endswith(" in test_an_exception_is_one_structured_field_never_multiline_text")
        for frame in exception["frames"]
    )
    assert exception["cause"]["type"] == "KeyError"
    console = stderr.getvalue()
    assert console.count("\n") == 1
    assert 'exception="ValueError: cannot read A\\nsecond line of the message (' in console


_RESERVED = {"timestamp", "level", "event", "run_id", "pid", "stage", "exc_info", "stack_info"}
_scalars = (
    # Lone surrogates too: bytes that are not UTF-8 in a path or an argument arrive so.
    st.text(st.characters(blacklist_categories=()))
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
    | st.none()
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
_fields = st.dictionaries(
    st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True).filter(lambda k: k not in _RESERVED),
    _values | st.binary(max_size=20),
    max_size=6,
)


def _expected(value: Any) -> Any:
    """What a field value reads back as: bytes as text with \\xNN escapes, and so the
    bytes a lone surrogate stands for (surrogateescape's, else its own), NUL visible."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    if isinstance(value, str):
        text = ""
        for char in value:
            if "\udc80" <= char <= "\udcff":
                text += f"\\x{ord(char) - 0xDC00:02x}"
            elif "\ud800" <= char <= "\udfff":
                encoded = char.encode("utf-8", "surrogatepass")
                text += "".join(f"\\x{byte:02x}" for byte in encoded)
            else:
                text += char
        return text.replace("\x00", "\\x00")
    if isinstance(value, list):
        return [_expected(item) for item in value]
    if isinstance(value, dict):
        return {key: _expected(item) for key, item in value.items()}
    return value


def _same(read: Any, written: Any) -> bool:
    if isinstance(written, float):
        return isinstance(read, (int, float)) and math.isclose(read, written, rel_tol=0, abs_tol=0)
    if isinstance(written, list):
        return len(read) == len(written) and all(map(_same, read, written))
    if isinstance(written, dict):
        return read.keys() == written.keys() and all(_same(read[k], written[k]) for k in written)
    return bool(read == written)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(fields=_fields, name=st.from_regex(EVENT_NAME, fullmatch=True))
def test_any_fields_give_exactly_one_json_line_that_reads_back_the_same(
    fields: dict[str, Any], name: str
) -> None:
    stderr = io.StringIO()
    with tempfile.TemporaryDirectory() as folder:
        log_file = Path(folder) / "k.jsonl"
        logs.setup_logging(level="debug", log_file=log_file, stream=stderr)
        logs.get_logger().info(name, **fields)
        data = log_file.read_bytes()
        logs.shutdown_logging()
    assert data.count(b"\n") == 1 and data.endswith(b"\n")
    (event,) = (json.loads(data),)
    assert event["event"] == name
    for key, value in fields.items():
        assert _same(event[key], _expected(value)), (key, event[key], value)
    assert stderr.getvalue().count("\n") == 1  # the console line is one line too


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("stderr_format", ["json", "console"])
def test_a_log_file_that_cannot_be_written_is_said_once_and_json_stays_json(
    stderr_format: str,
) -> None:
    """Seen (log hunt): with --log-format json a full disk under the log file put a plain
    text line into the JSON Lines on stderr. /dev/full: every write is ENOSPC."""
    stderr = io.StringIO()
    logs.setup_logging(
        level="info", log_file=Path("/dev/full"), stream=stderr, stderr_format=stderr_format
    )
    logs.get_logger().info("run.started", mode="full")
    logs.get_logger().warning("run.completed", exit_code=0)
    logs.shutdown_logging()
    lines = stderr.getvalue().splitlines()
    warned = "No space left on device; file logging stopped"
    if stderr_format == "json":
        events = [json.loads(line) for line in lines]
        assert [e["event"] for e in events] == ["log.file_failed", "run.started", "run.completed"]
        assert (events[0]["path"], events[0]["reason"]) == ("/dev/full", warned)
        assert list(events[0])[:5] == ["timestamp", "level", "event", "pid", "stage"]
    else:
        assert lines[0] == f"keysync: warning: cannot write log file /dev/full: {warned}"
        assert sum("file logging stopped" in line for line in lines) == 1


def test_the_console_keeps_a_warning_s_advice_and_cuts_only_runaway_values() -> None:
    """Seen (log hunt): the rules.changed warning lost its last words, "`keysync registry
    rekey` carries the approvals over", to a 200-character cut on the console."""
    advice = "the rules changed since run r1: " + "x" * 400 + "; `keysync registry rekey`"
    warned = logs.render_console({"level": "warning", "event": "rules.changed", "detail": advice})
    assert warned.rstrip("\n").endswith('`keysync registry rekey`"')
    told = logs.render_console({"level": "info", "event": "e.x", "detail": "y" * 400})
    assert "y" * 200 + "…" in told and "y" * 201 not in told
    runaway = logs.render_console({"level": "error", "event": "e.x", "detail": "z" * 5000})
    assert "z" * 2000 + "…" in runaway and len(runaway) < 2100


def test_undecodable_bytes_in_a_value_are_escaped_and_the_other_fields_kept() -> None:
    """Seen (log hunt): a path with a byte that is not UTF-8 (a lone surrogate to Python)
    crashed the console line, exit 1 after a committed run; in the file every field of
    the line became a repr: "rows": "2", a collector's number filter missed it."""
    stderr = io.StringIO()
    with tempfile.TemporaryDirectory() as folder:
        log_file = Path(folder) / "k.jsonl"
        logs.setup_logging(level="debug", log_file=log_file, stream=stderr)
        logs.get_logger().info(
            "report.written", path="/tmp/bad\udcffdir/x.csv", rows=2, also=["\ud800\udcc3"]
        )
        data = log_file.read_bytes()
        logs.shutdown_logging()
    event = json.loads(data)
    assert (event["path"], event["rows"], event["also"]) == (
        "/tmp/bad\\xffdir/x.csv",
        2,
        ["\\xed\\xa0\\x80\\xc3"],
    )
    assert 'path="/tmp/bad\\\\xffdir/x.csv" rows=2' in stderr.getvalue()  # JSON: a backslash


@pytest.mark.parametrize(
    ("level", "quiet", "verbose", "in_file", "on_stderr"),
    [
        ("info", False, 0, "info warning error", "info warning error"),
        ("info", True, 0, "info warning error", "warning error"),
        ("info", False, 1, "debug info warning error", "debug info warning error"),
        ("info", False, 2, "debug info warning error", "debug info warning error"),
        ("warning", False, 0, "warning error", "warning error"),
        ("error", True, 0, "error", "error"),
        ("debug", True, 0, "debug info warning error", "warning error"),
        ("info", True, 1, "debug info warning error", "warning error"),
    ],
)
def test_levels_from_config_and_quiet_and_verbose(
    tmp_path: Path, level: str, quiet: bool, verbose: int, in_file: str, on_stderr: str
) -> None:
    stderr = io.StringIO()
    log_file = tmp_path / "k.jsonl"
    logs.setup_logging(level=level, log_file=log_file, quiet=quiet, verbose=verbose, stream=stderr)
    log = logs.get_logger()
    log.debug("test.debug")
    log.info("test.info")
    log.warning("test.warning")
    log.error("test.error")
    assert " ".join(e["level"] for e in read_events(log_file)) == in_file
    assert " ".join(line.split()[1] for line in stderr.getvalue().splitlines()) == on_stderr


def test_a_logger_made_before_setup_follows_the_later_configuration(tmp_path: Path) -> None:
    early = logs.get_logger(stage="merger")  # e.g. at import time
    log_file = tmp_path / "k.jsonl"
    logs.setup_logging(level="debug", log_file=log_file, stream=io.StringIO())
    early.debug("row.rejected", system="B", line=3)
    (event,) = read_events(log_file)
    assert event["stage"] == "merger" and event["line"] == 3


def test_an_unwritable_log_file_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(logs.ConfigError, match=r"^logging\.file: cannot open .*not-a-folder"):
        logs.setup_logging(level="info", log_file=blocker / "k.jsonl", stream=io.StringIO())


def test_a_file_moved_or_deleted_by_rotation_is_reopened(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "keysync.jsonl"
    logs.setup_logging(level="info", log_file=log_file, stream=io.StringIO())
    log = logs.get_logger()
    for seq in range(3):
        log.info("test.event", seq=seq)
    rotated = log_file.with_name("keysync.jsonl.1")
    log_file.rename(rotated)  # what logrotate does (without copytruncate)
    for seq in range(3, 5):
        log.info("test.event", seq=seq)
    log_file.unlink()  # deleted outright: recreated on the next event
    log.info("test.event", seq=5)

    assert [e["seq"] for e in read_events(rotated)] == [0, 1, 2]
    assert [e["seq"] for e in read_events(log_file)] == [5]


def test_a_line_cut_short_by_a_full_disk_is_ended_before_the_next_event(tmp_path: Path) -> None:
    """The process that hit the full disk stopped logging mid-line; the next one mends it."""
    log_file = tmp_path / "keysync.jsonl"
    log_file.write_bytes(b'{"event":"earlier","seq":0}\n{"event":"cut sh')
    logs.setup_logging(level="info", log_file=log_file, stream=io.StringIO())
    logs.get_logger().info("test.event", seq=1)
    logs.get_logger().info("test.event", seq=2)
    lines = log_file.read_bytes().split(b"\n")
    assert lines[:2] == [b'{"event":"earlier","seq":0}', b'{"event":"cut sh']
    assert [json.loads(line)["seq"] for line in lines[2:] if line] == [1, 2]


# -------------------------------------------------------------- worker processes


def emit_worker(
    queue: logs.LogQueue,
    level: str,
    worker: int,
    count: int,
    big_every: int,
    pause_s: float,
) -> None:
    logs.setup_worker_logging(queue, level=level, run_id="run-mp", stage="test-worker")
    log = logs.get_logger(worker=worker)
    for seq in range(count):
        if big_every and seq % big_every == 0:  # larger than one pipe frame: sent in chunks
            log.info("test.event", seq=seq, blob=f"{worker}:" + "x" * 9000)
        else:
            log.info("test.event", seq=seq)
        log.debug("test.hidden", seq=seq)  # below the relay's level: filtered in the worker
        if pause_s:
            time.sleep(pause_s)


def victim_worker(queue: logs.LogQueue, level: str, progress: Any) -> None:
    logs.setup_worker_logging(queue, level=level, run_id="run-mp", stage="victim")
    log = logs.get_logger(worker=-1)
    seq = 0
    while True:
        log.info("test.event", seq=seq, blob="v" * (9000 if seq % 5 == 0 else 10))
        progress.value = seq  # only once put() has returned: this event counts as sent
        seq += 1


@pytest.fixture
def ctx() -> Any:
    return mp.get_context("forkserver")


def _by_worker(events: list[dict[str, Any]]) -> dict[int, list[int]]:
    seqs: dict[int, list[int]] = {}
    for event in events:
        if event["event"] == "test.event":
            seqs.setdefault(event["worker"], []).append(event["seq"])
    return seqs


def test_many_workers_many_events_exactly_one_whole_line_each(tmp_path: Path, ctx: Any) -> None:
    workers, count = 4, 1500
    stderr = io.StringIO()
    log_file = tmp_path / "k.jsonl"
    logs.setup_logging(level="info", log_file=log_file, stream=stderr)
    logs.bind_run("run-mp")
    relay = logs.LogRelay(ctx)
    relay.start()
    processes = [
        ctx.Process(target=emit_worker, args=(relay.queue, relay.level, n, count, 50, 0.0))
        for n in range(workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    relay.stop()

    events = read_events(log_file)
    assert len(events) == workers * count  # nothing lost, nothing torn, nothing doubled
    for event in events:
        assert_common_fields(event)
        assert event["run_id"] == "run-mp" and event["stage"] == "test-worker"
        assert event["pid"] != os.getpid()
    seqs = _by_worker(events)
    assert seqs == {n: list(range(count)) for n in range(workers)}  # in order per worker
    big = [e for e in events if "blob" in e]
    assert len(big) == workers * count // 50
    assert all(e["blob"] == f"{e['worker']}:" + "x" * 9000 for e in big)
    # Console lines of the workers' events are written by the parent too.
    assert stderr.getvalue().count(" test.event ") == workers * count


def test_a_worker_killed_mid_stream_loses_nothing_it_sent_and_blocks_no_one(
    tmp_path: Path, ctx: Any
) -> None:
    log_file = tmp_path / "k.jsonl"
    logs.setup_logging(level="info", log_file=log_file, stream=io.StringIO())
    relay = logs.LogRelay(ctx)
    relay.start()
    progress = ctx.RawValue("q", -1)
    victim = ctx.Process(target=victim_worker, args=(relay.queue, relay.level, progress))
    others = [
        ctx.Process(target=emit_worker, args=(relay.queue, relay.level, n, 400, 7, 0.001))
        for n in range(2)
    ]
    victim.start()
    for process in others:
        process.start()
    deadline = time.monotonic() + 30
    while progress.value < 300 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert progress.value >= 300, "the victim never got going"
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(10)
    sent = progress.value
    for process in others:
        process.join(60)
        assert process.exitcode == 0, "a healthy worker was blocked or broken by the kill"
    relay.stop()

    events = read_events(log_file)  # every line whole and valid
    seqs = _by_worker(events)
    assert seqs[0] == list(range(400)) and seqs[1] == list(range(400))
    victim_seqs = seqs[-1]
    assert victim_seqs[: sent + 1] == list(range(sent + 1))  # all it had sent, in order
    assert len(victim_seqs) <= sent + 2  # at most the one in flight besides
    lost = [e for e in events if e["event"] == "log.event_lost"]
    assert all(e["worker_pid"] == victim.pid for e in lost)


def test_rotation_mid_run_with_workers_writing(tmp_path: Path, ctx: Any) -> None:
    log_file = tmp_path / "keysync.jsonl"
    logs.setup_logging(level="info", log_file=log_file, stream=io.StringIO())
    relay = logs.LogRelay(ctx)
    relay.start()
    processes = [
        ctx.Process(target=emit_worker, args=(relay.queue, relay.level, n, 300, 0, 0.002))
        for n in range(2)
    ]
    for process in processes:
        process.start()
    deadline = time.monotonic() + 30
    while (not log_file.exists() or log_file.stat().st_size < 5000) and time.monotonic() < deadline:
        time.sleep(0.01)
    rotated = tmp_path / "keysync.jsonl.1"
    log_file.rename(rotated)
    for process in processes:
        process.join(60)
    relay.stop()

    before, after = read_events(rotated), read_events(log_file)
    assert before and after, "events on both sides of the rotation"
    assert max(e["timestamp"] for e in before) <= min(e["timestamp"] for e in after)
    assert _by_worker(before + after) == {0: list(range(300)), 1: list(range(300))}


def test_stop_without_workers_and_twice_is_harmless(tmp_path: Path, ctx: Any) -> None:
    logs.setup_logging(level="info", log_file=tmp_path / "k.jsonl", stream=io.StringIO())
    relay = logs.LogRelay(ctx)
    relay.start()
    relay.stop()
    relay.stop()


# ---------------------------------------------------------- the real command

HEADER = "key,name,last_seen_at\n"


def _rows(numbers: range) -> str:
    return "".join(f"cust_{n:05d},Name {n},2026-01-0{1 + n % 9}T00:00:00Z\n" for n in numbers)


@pytest.fixture
def corrupted_inputs(tmp_path: Path, write_config: Any) -> Path:
    """A..E where B has one row of each kind of corruption and D's file is gone."""
    folder = tmp_path / "input"
    folder.mkdir()
    (folder / "A.csv").write_text(HEADER + _rows(range(400)), encoding="utf-8")
    corrupt = (
        b"bad,extra,cell,here\n"
        b"nul\x00key,x,2026-01-01T00:00:00Z\n"
        b'"CUST-1"x,name,2026-01-01T00:00:00Z\n'
        b"\xff\xfe,x,2026-01-01T00:00:00Z\n"
        b"#!?,x,2026-01-01T00:00:00Z\n"
        b"only-one-cell\n"
    )
    (folder / "B.csv").write_bytes((HEADER + _rows(range(30, 420))).encode() + corrupt)
    (folder / "C.csv").write_text(HEADER + _rows(range(0, 350)), encoding="utf-8")
    (folder / "E.csv").write_text(HEADER + _rows(range(5, 400)), encoding="utf-8")
    # D is configured but its export is missing: the run goes on, degraded (exit 4).
    return write_config(tmp_path, processing={"workers": 2, "batch_size": 64})


def test_every_line_of_a_degraded_run_with_corruption_is_valid_json(
    tmp_path: Path, corrupted_inputs: Path, keysync: Any
) -> None:
    done = keysync("-v", "run")
    assert done.returncode == 4, done.stderr

    events = read_events(tmp_path / "data" / "logs" / "keysync.jsonl")
    for event in events:
        assert_common_fields(event)
        assert "stage" in event
    run_ids = {e.get("run_id") for e in events}
    assert len(run_ids) == 1 and None not in run_ids  # every event inside the run has it
    names = Counter(e["event"] for e in events)
    assert names["run.started"] == 1 and names["run.completed"] == 1
    (unavailable,) = [e for e in events if e["event"] == "source.unavailable"]
    assert unavailable["system"] == "D" and unavailable["level"] == "warning"
    (counted,) = [e for e in events if e["event"] == "source.rejected_rows"]
    assert (counted["system"], counted["count"], counted["level"]) == ("B", 6, "info")
    rejected = [e for e in events if e["event"] == "row.rejected"]
    assert all(e["level"] == "debug" and e["system"] == "B" for e in rejected)
    assert sorted(e["error_type"] for e in rejected) == sorted(
        ["extra-cell", "nul-byte", "bad-quoting", "encoding", "empty-key", "missing-cell"]
    )
    assert [e["line"] for e in rejected] == list(range(392, 398))
    (completed,) = [e for e in events if e["event"] == "run.completed"]
    assert completed["exit_code"] == 4 and completed["duration_s"] > 0
    assert_in_catalogue(events)


def assert_in_catalogue(events: list[dict[str, Any]]) -> None:
    """Every event is in the catalogue, at its level, with the catalogue's fields."""
    for event in events:
        spec = logs.EVENTS[event["event"]]
        missing = [f for f in spec.fields if f not in event]
        assert not missing, f"{event['event']} lacks {missing}"
        assert event["level"] == spec.level, event


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSYNC_")}
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def test_every_line_of_an_interrupted_and_resumed_degraded_run_is_valid_json(
    tmp_path: Path, write_config: Any, keysync: Any
) -> None:
    rows = 100_000  # enough for a SIGTERM to land mid-run (~2 s here)
    folder = tmp_path / "input"
    folder.mkdir()
    corrupt = b"bad,extra,cell,here\nnul\x00key,x,2026-01-01T00:00:00Z\n\xff,x,y\n"
    (folder / "A.csv").write_text(HEADER + _rows(range(rows)), encoding="utf-8")
    (folder / "B.csv").write_bytes(HEADER.encode() + corrupt + _rows(range(20, rows)).encode())
    (folder / "C.csv").write_text(HEADER + _rows(range(rows - 50)), encoding="utf-8")
    (folder / "E.csv").write_text(HEADER + _rows(range(10, rows)), encoding="utf-8")
    write_config(
        tmp_path, processing={"workers": 2, "batch_size": 500, "checkpoint_interval": 2000}
    )
    log_file = tmp_path / "data" / "logs" / "keysync.jsonl"

    stderr_file = (tmp_path / "first-run.stderr").open("w")  # a file never fills up
    first = subprocess.Popen(
        [sys.executable, "-m", "keysync", "-v", "run"],
        cwd=tmp_path,
        env=_clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=stderr_file,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and first.poll() is None:
        if log_file.exists() and b'"checkpoint.saved"' in log_file.read_bytes():
            break
        time.sleep(0.01)
    first.send_signal(signal.SIGTERM)
    try:
        first.wait(timeout=90)
    except subprocess.TimeoutExpired:
        first.kill()
        first.wait()
        tail = log_file.read_text(errors="replace").splitlines()[-5:]
        pytest.fail(f"the run did not stop within 90 s of SIGTERM; log tail: {tail}")
    finally:
        stderr_file.close()
    first_stderr = (tmp_path / "first-run.stderr").read_text(errors="replace")[-2000:]
    assert first.returncode == 130, f"not interrupted (exit {first.returncode}): {first_stderr}"
    resumed = keysync("-v", "run", "--resume")
    assert resumed.returncode == 4, resumed.stderr

    events = read_events(log_file)
    for event in events:
        assert_common_fields(event)
        assert "stage" in event
    assert len({e.get("run_id") for e in events}) == 1  # the resumed run keeps its id
    assert_in_catalogue(events)
    names = [e["event"] for e in events]
    assert names.count("run.started") == 2 and names.count("run.completed") == 1
    interrupted = names.index("run.interrupted")
    assert names.index("run.resumed") > interrupted
    assert [e["resumed"] for e in events if e["event"] == "run.started"] == [False, True]
    (unavailable, *_) = [e for e in events if e["event"] == "source.unavailable"]
    assert unavailable["system"] == "D"
    rejected = [(e["line"], e["error_type"]) for e in events if e["event"] == "row.rejected"]
    assert rejected == [(2, "extra-cell"), (3, "nul-byte"), (4, "encoding")]


def test_quiet_keeps_stderr_to_warnings_but_the_file_keeps_everything(
    tmp_path: Path, corrupted_inputs: Path, keysync: Any
) -> None:
    done = keysync("-q", "run")
    assert done.returncode == 4, done.stderr
    shown = [line for line in done.stderr.splitlines() if line[:4].isdigit()]
    assert shown and all(line.split()[1] in ("warning", "error") for line in shown)
    events = read_events(tmp_path / "data" / "logs" / "keysync.jsonl")
    levels = Counter(e["level"] for e in events)
    assert levels["info"] > 0 and levels["debug"] == 0  # the config level: info
    assert "source.rejected_rows" in {e["event"] for e in events}


def test_routine_events_reach_the_console_only_with_verbose_but_always_the_file(
    tmp_path: Path, corrupted_inputs: Path, keysync: Any
) -> None:
    """A checkpoint every few thousand rows would bury the console of a large run."""
    routine = {"checkpoint.saved", "report.written", "incremental.snapshot_saved"}
    log_file = tmp_path / "data" / "logs" / "keysync.jsonl"
    default = keysync("run")
    assert default.returncode == 4, default.stderr
    shown = {line.split()[2] for line in default.stderr.splitlines() if line[:4].isdigit()}
    assert {"run.started", "source.finished", "run.completed"} <= shown
    assert not shown & routine
    assert routine <= {e["event"] for e in read_events(log_file)}
    log_file.unlink()
    verbose = keysync("-v", "run")
    shown = {line.split()[2] for line in verbose.stderr.splitlines() if line[:4].isdigit()}
    assert routine <= shown


def test_log_format_json_on_stderr_of_a_real_run(
    tmp_path: Path, corrupted_inputs: Path, keysync: Any
) -> None:
    done = keysync("--log-format", "json", "run")
    lines = [line for line in done.stderr.splitlines() if line.startswith("{")]
    file_lines = (tmp_path / "data" / "logs" / "keysync.jsonl").read_text().splitlines()
    assert lines == file_lines


_LOG_CALL = re.compile(
    r"\.(?:debug|info|warning|warn|error|critical|exception)\(\s*\"([a-z_]+(?:\.[a-z_]+)+)\""
)


def test_every_event_the_code_emits_is_in_the_catalogue() -> None:
    emitted = {
        name
        for source in KEYSYNC_PACKAGE.rglob("*.py")
        for name in _LOG_CALL.findall(source.read_text(encoding="utf-8"))
    }
    assert emitted, "no log call found: the pattern is stale"
    assert sorted(emitted - set(logs.EVENTS)) == []


def test_the_docs_catalogue_matches_the_code() -> None:
    docs = (KEYSYNC_PACKAGE.parent / "docs" / "logging.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([a-z_.]+)` \| (\w+) \| ([^|]*) \|", docs, flags=re.MULTILINE)
    documented = {
        name: (level, tuple(re.findall(r"`(\w+)`", fields))) for name, level, fields in rows
    }
    assert documented == {name: (spec.level, spec.fields) for name, spec in logs.EVENTS.items()}


def test_the_docs_name_every_stage_the_code_logs_from() -> None:
    """A collector filtering on ``stage`` needs the whole list."""
    logged = {
        stage
        for source in KEYSYNC_PACKAGE.rglob("*.py")
        for stage in re.findall(r'stage="(\w+)"', source.read_text(encoding="utf-8"))
    }
    docs = (KEYSYNC_PACKAGE.parent / "docs" / "logging.md").read_text(encoding="utf-8")
    (row,) = re.findall(r"^\| `stage` \| (.*) \|$", docs, flags=re.MULTILINE)
    assert set(re.findall(r"`(\w+)`", row)) == logged
