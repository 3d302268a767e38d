"""``keysync generate`` as a user runs it: real subprocess, real config file, real files."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import FullDisk

SYSTEM_FILES = ["A.csv", "B.csv", "C.csv", "D.csv", "E.csv"]


def keysync(cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSYNC_")}
    env["PYTHONIOENCODING"] = "utf-8"
    return subprocess.run(
        [sys.executable, "-m", "keysync", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        check=False,
    )


def write_config(folder: Path, **sections: Any) -> Path:
    path = folder / "keysync-config.yaml"
    path.write_text(yaml.safe_dump(sections), encoding="utf-8")
    return path


def manifest(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    return data


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) <= 3, result.stderr  # click usage errors add a "Usage:/Try" hint
    return result.stderr


def test_generate_writes_the_configured_sources_and_prints_a_summary(tmp_path: Path) -> None:
    write_config(tmp_path)
    result = keysync(tmp_path, "generate", "--keys", "1000")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Generated mock data: scenario normal, seed 42, 1,000 keys per system, 1 day" in out
    data = manifest(tmp_path / "input")
    for name in "ABCDE":
        path = tmp_path / "input" / f"{name}.csv"
        assert path.is_file()
        assert f"{data['systems'][name]['rows_read']:,} rows" in out
        assert str(path) in out
    assert f"manifest: {tmp_path / 'input' / 'manifest.json'}" in out
    assert "match rate 80.0%" in out
    header = (tmp_path / "input" / "A.csv").read_bytes().split(b"\n")[0]
    assert header == b"key,name,last_seen_at"


def test_out_seed_and_scenario_options(tmp_path: Path) -> None:
    write_config(tmp_path)
    result = keysync(
        tmp_path, "generate", "--keys", "1500", "--seed", "7", "--scenario", "failure",
        "--out", "elsewhere",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = tmp_path / "elsewhere"
    assert sorted(p.name for p in out.iterdir()) == [*SYSTEM_FILES, "manifest.json"]
    assert not (tmp_path / "input").exists()
    data = manifest(out)
    assert (data["seed"], data["scenario"], data["keys_per_system"]) == (7, "failure", 1500)
    assert all(abs(data["systems"][p]["match_rate"] - 0.3) <= 0.05 for p in "BCDE")


def test_days_writes_one_snapshot_per_day_and_the_last_day_on_top(tmp_path: Path) -> None:
    write_config(tmp_path)
    result = keysync(tmp_path, "generate", "--keys", "1000", "--days", "3", "--out", "out")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [*SYSTEM_FILES, "history", "manifest.json"]
    days = sorted(p.name for p in (out / "history").iterdir())
    assert days == ["day-01", "day-02", "day-03"]
    for day in days:
        files = sorted(p.name for p in (out / "history" / day).iterdir())
        assert files == [*SYSTEM_FILES, "manifest.json"]
        assert manifest(out / "history" / day)["day"] == int(day[-2:])
    for name in [*SYSTEM_FILES, "manifest.json"]:
        assert (out / name).read_bytes() == (out / "history" / "day-03" / name).read_bytes()
    assert "3 days" in result.stdout and "history:" in result.stdout


def test_keys_per_system_comes_from_the_config(tmp_path: Path) -> None:
    write_config(tmp_path, simulation={"keys_per_system": 1200, "seed": 3})
    result = keysync(tmp_path, "generate", "--out", "out")
    assert result.returncode == 0, result.stderr
    data = manifest(tmp_path / "out")
    assert (data["keys_per_system"], data["seed"]) == (1200, 3)
    assert "1,200 keys per system" in result.stdout


def test_quiet_prints_nothing(tmp_path: Path) -> None:
    write_config(tmp_path)
    result = keysync(tmp_path, "-q", "generate", "--keys", "1000", "--out", "out")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert (tmp_path / "out" / "manifest.json").is_file()


def test_zero_keys_is_a_usage_error(tmp_path: Path) -> None:
    write_config(tmp_path)
    result = keysync(tmp_path, "generate", "--keys", "0", "--out", "out")
    assert "--keys" in assert_one_line_error(result, 2)
    assert not (tmp_path / "out").exists()


def test_unknown_scenario_is_a_usage_error(tmp_path: Path) -> None:
    write_config(tmp_path)
    result = keysync(tmp_path, "generate", "--scenario", "chaos", "--out", "out")
    assert "--scenario" in assert_one_line_error(result, 2)


def test_a_source_that_cannot_be_generated_is_a_config_error(tmp_path: Path) -> None:
    write_config(
        tmp_path, sources={"A": {"path": "a.csv"}, "B": {"path": "b.csv", "encoding": "cp1252"}}
    )
    result = keysync(tmp_path, "generate", "--keys", "1000")
    stderr = assert_one_line_error(result, 2)
    assert "sources.B.encoding" in stderr and "UTF-8" in stderr


def test_days_beyond_ten_years_are_refused_up_front(tmp_path: Path) -> None:
    """Each day's manifest lists every day's targets: 100,000 days would fill the disk."""
    write_config(tmp_path)
    result = keysync(tmp_path, "generate", "--keys", "10", "--days", "100000", "--out", "out")
    assert "--days" in assert_one_line_error(result, 2) and "3660" in result.stderr
    assert not (tmp_path / "out").exists()


def test_two_sources_on_one_file_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    """One system's file would replace the other's, next to a manifest of neither."""
    write_config(
        tmp_path,
        sources={
            s: {"path": p} for s, p in (("A", "in/A.csv"), ("B", "in/B.csv"), ("C", "./in/B.csv"))
        },
    )
    result = keysync(tmp_path, "generate", "--keys", "100")
    stderr = assert_one_line_error(result, 2)
    assert "sources.C.path" in stderr and "is also sources.B.path" in stderr
    assert not (tmp_path / "in").exists()


def test_a_source_path_that_is_a_symlink_loop_is_no_traceback(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "B.csv").symlink_to("B.csv")  # points at itself
    write_config(tmp_path, sources={"A": {"path": "in/A.csv"}, "B": {"path": "in/B.csv"}})
    result = keysync(tmp_path, "generate", "--keys", "100")
    assert "Traceback" not in result.stderr, result.stderr


def test_a_source_inside_the_history_folder_is_refused(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        sources={"A": {"path": "input/A.csv"}, "B": {"path": "input/history/day-01/B.csv"}},
    )
    result = keysync(tmp_path, "generate", "--keys", "100", "--days", "2")
    stderr = assert_one_line_error(result, 2)
    assert "sources.B.path" in stderr and "daily snapshots" in stderr
    assert not (tmp_path / "input").exists()


def test_an_unwritable_output_folder_is_one_line(tmp_path: Path) -> None:
    write_config(tmp_path)
    (tmp_path / "taken").write_text("a file, not a folder", encoding="utf-8")
    result = keysync(tmp_path, "generate", "--keys", "1000", "--out", "taken/sub")
    stderr = assert_one_line_error(result, 3)
    assert stderr.startswith("keysync: error: cannot write mock data")


def test_help_has_an_example(tmp_path: Path) -> None:
    result = keysync(tmp_path, "generate", "--help")
    assert result.returncode == 0
    assert "Example:" in result.stdout and "keysync generate --keys" in result.stdout


@pytest.mark.slow
def test_a_million_keys_per_system_in_under_20_seconds(tmp_path: Path) -> None:
    write_config(tmp_path)
    started = time.perf_counter()
    result = keysync(tmp_path, "generate", "--keys", "1000000", "--out", "out", timeout=600)
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    data = manifest(tmp_path / "out")
    assert all(s["unique_keys"] == 1_000_000 for s in data["systems"].values())
    assert all(abs(data["systems"][p]["match_rate"] - 0.8) <= 0.05 for p in "BCDE")
    assert elapsed < 20, f"{elapsed:.1f} s (load average {os.getloadavg()[0]:.1f})"


def test_generate_called_in_process_gives_sigterm_back(tmp_path: Path) -> None:
    """keysync's `generate` turns SIGTERM into a clean stop for itself; a process that calls
    it (a test runner, a notebook) must get its own SIGTERM handling back afterwards."""
    import signal

    from keysync.cli import main
    from keysync.logs import shutdown_logging

    (tmp_path / "keysync-config.yaml").write_text("{}\n")
    before = signal.getsignal(signal.SIGTERM)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(SystemExit) as done:
            main(["-q", "generate", "--keys", "20"])
    finally:
        os.chdir(cwd)
        shutdown_logging()
    assert done.value.code in (0, None)
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_file_in_a_day_folder_that_generate_did_not_write_is_kept(tmp_path: Path) -> None:
    """Seen (mock-data hunt): `generate --days 2` replaced history/day-01/B.csv, an
    archived export, and a manifest.json that was not keysync's, without a word; only the
    top-level files were checked."""
    write_config(tmp_path)
    day = tmp_path / "input" / "history" / "day-01"
    day.mkdir(parents=True)
    (day / "B.csv").write_text("key,name\nREAL-1,archived export\n", encoding="utf-8")
    result = keysync(tmp_path, "generate", "--keys", "100", "--days", "2")
    stderr = assert_one_line_error(result, 3)
    assert stderr.startswith(f"keysync: error: {day / 'B.csv'} exists and was not written")
    assert (day / "B.csv").read_text(encoding="utf-8") == "key,name\nREAL-1,archived export\n"
    assert not (tmp_path / "input" / "A.csv").exists()
    (day / "B.csv").unlink()
    (day / "manifest.json").write_text('{"mine": 1}\n', encoding="utf-8")
    stderr = assert_one_line_error(keysync(tmp_path, "generate", "--keys", "100", "--days", "2"), 3)
    assert f"{day / 'manifest.json'} exists and was not written" in stderr
    (day / "manifest.json").unlink()
    assert keysync(tmp_path, "-q", "generate", "--keys", "100", "--days", "2").returncode == 0
    assert keysync(tmp_path, "-q", "generate", "--keys", "50", "--days", "2").returncode == 0


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under ``folder``, hidden ones included."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() if p.is_file() else None
        for p in sorted(folder.rglob("*"))
    }


def _sigint_by_default() -> None:
    """In the child: SIGINT raises KeyboardInterrupt, as a terminal starts a command (a
    test run from the background of a non-interactive shell has SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _held_before_publishing(
    folder: Path, *args: str, phase: str = "mock-publish", release: Path | None = None
) -> subprocess.Popen[bytes]:
    """``keysync -q ARGS`` (``generate`` unless they say) held at ``phase``: every file
    written aside, none in place (``mock-publish``), or the first one renamed into place
    (``mock-mid-publish``); until ``release`` exists, if given."""
    command = [] if args and args[0] in ("generate", "run") else ["generate"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSYNC_")}
    env["KEYSYNC_TEST_PAUSE_AT"] = phase
    if release is not None:
        env["KEYSYNC_TEST_PAUSE_UNTIL"] = str(release)
    process = subprocess.Popen(
        [sys.executable, "-m", "keysync", "-q", *command, *args],
        cwd=folder,
        env=env,
        stderr=subprocess.DEVNULL,
        preexec_fn=_sigint_by_default,
    )
    pending = folder / "input" / f".manifest.json.{process.pid}.pending"

    def held() -> bool:
        if phase == "mock-publish":
            return pending.exists()
        # The first file of the first set renamed: a day folder's, or the top level's.
        first = folder / "input" / "history" / "day-01"
        first = first if first.is_dir() and "--days" in args else folder / "input"
        renamed = not (first / f".A.csv.{process.pid}.pending").exists()
        return pending.exists() and renamed and (first / f".B.csv.{process.pid}.pending").exists()

    deadline = time.monotonic() + 60
    while not held():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise AssertionError(f"keysync was never held at {phase}")
        time.sleep(0.01)
    return process


@pytest.mark.parametrize(("before_days", "sig"), [(6, signal.SIGINT), (2, signal.SIGTERM)])
def test_a_stopped_series_leaves_the_previous_series_as_it_was(
    tmp_path: Path, before_days: int, sig: signal.Signals
) -> None:
    """Seen (mock-data hunt): SIGTERM during `generate --days 4` left day-02 with two new
    CSVs beside three old ones and the old manifest. Then (generate hunt): Ctrl-C in
    `generate --days 5` over a 10-day series had already deleted day-06..day-10 and put
    the new day-01.. in place, a folder of two series. Now every day is written aside and
    the whole series goes into place at the end, the old extra days removed then: a
    stopped generate changes nothing (and leaves no day folder it made)."""
    write_config(tmp_path)
    old = ("--keys", "1000", "--days", str(before_days), "--scenario", "drift")
    assert keysync(tmp_path, "-q", "generate", *old).returncode == 0
    before = tree(tmp_path / "input")
    new = ("--keys", "1200", "--days", "4", "--scenario", "failure", "--seed", "3")
    process = _held_before_publishing(tmp_path, *new)
    try:
        process.send_signal(sig)
        assert process.wait(60) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert tree(tmp_path / "input") == before
    assert keysync(tmp_path, "-q", "generate", *new).returncode == 0
    days = sorted(p.name for p in (tmp_path / "input" / "history").iterdir())
    assert days == ["day-01", "day-02", "day-03", "day-04"]
    assert manifest(tmp_path / "input" / "history" / "day-01")["seed"] == 3


def test_a_killed_series_leaves_nothing_a_shorter_one_keeps(tmp_path: Path) -> None:
    """Seen (generate hunt): after a `kill -9` of `generate --days 6`, a later
    `generate --days 2` left history/day-03.. with the killed run's full-size
    `.A.csv.<pid>.pending` files, and day folders holding no manifest at all."""
    write_config(tmp_path)
    assert keysync(tmp_path, "-q", "generate", "--keys", "1000", "--days", "3").returncode == 0
    history = tmp_path / "input" / "history"
    process = _held_before_publishing(tmp_path, "--keys", "1000", "--days", "6")
    process.kill()  # kill -9, every day written aside
    process.wait()
    assert (history / "day-06" / f".A.csv.{process.pid}.pending").is_file()
    assert not (history / "day-06" / "manifest.json").exists()
    assert keysync(tmp_path, "-q", "generate", "--keys", "100", "--days", "2").returncode == 0
    assert sorted(tree(tmp_path / "input")) == [
        *SYSTEM_FILES,
        "history",
        "history/day-01",
        *(f"history/day-01/{name}" for name in [*SYSTEM_FILES, "manifest.json"]),
        "history/day-02",
        *(f"history/day-02/{name}" for name in [*SYSTEM_FILES, "manifest.json"]),
        "manifest.json",
    ]


@pytest.mark.parametrize(("days", "then_days"), [(1, 1), (3, 3), (3, 1)])
def test_a_generate_killed_between_its_renames_is_replaced_by_the_next(
    tmp_path: Path, days: int, then_days: int
) -> None:
    """Seen (review): `kill -9` between generate's last renames left the new A.csv beside
    the old B..E and the old manifest (renamed last); every later generate then refused
    "A.csv has changed since keysync generate wrote it", and the dead writer's pending
    files stayed. Its pending manifest lists the new A.csv: the next generate takes the
    file as its own, writes its series whole and removes what the killed one left."""
    write_config(tmp_path)
    old = ("--keys", "1000", "--days", str(days))
    assert keysync(tmp_path, "-q", "generate", *old).returncode == 0
    new = ("--keys", "1200", "--seed", "3", "--days", str(days))
    process = _held_before_publishing(tmp_path, *new, phase="mock-mid-publish")
    process.kill()  # kill -9 with one file renamed into place
    process.wait()
    then = ("--keys", "900", "--seed", "5", "--days", str(then_days))
    again = keysync(tmp_path, "generate", *then)
    assert again.returncode == 0, again.stderr
    clean = tmp_path / "clean"
    clean.mkdir()
    write_config(clean)
    assert keysync(clean, "-q", "generate", *then).returncode == 0
    assert tree(tmp_path / "input") == tree(clean / "input")  # no leftover, no old file


def test_a_ctrl_c_as_run_keys_puts_the_inputs_in_place_stops_the_run(tmp_path: Path) -> None:
    """Seen (review): a Ctrl-C while `run --keys N` renamed its new inputs into place
    was held till they all were, then dropped: the run went on and ended 0. The new
    inputs stay (they are whole), the run does not start: 130, and one line saying so."""
    write_config(tmp_path)
    assert keysync(tmp_path, "-q", "generate", "--keys", "1000").returncode == 0
    release = tmp_path / "release"
    process = _held_before_publishing(
        tmp_path, "run", "--keys", "1200", phase="mock-mid-publish", release=release
    )
    process.send_signal(signal.SIGINT)  # held: generate blocks it while it renames
    release.touch()
    assert process.wait(60) == 130
    clean = tmp_path / "clean"
    clean.mkdir()
    write_config(clean)
    assert keysync(clean, "-q", "generate", "--keys", "1200").returncode == 0
    assert tree(tmp_path / "input") == tree(clean / "input")
    runs = keysync(tmp_path, "runs")
    assert runs.returncode == 0, runs.stderr
    assert "no runs" in runs.stdout.lower() + runs.stderr.lower()


# ------------------------------------------------- what generate writes over, or refuses

REAL_EXPORT = b"key,name,last_seen_at\nREAL-0001,Real customer,2026-11-20T10:00:00Z\n"


def test_the_manifest_records_the_size_and_sha256_of_each_file(tmp_path: Path) -> None:
    write_config(tmp_path)
    assert keysync(tmp_path, "-q", "generate", "--keys", "100", "--days", "2").returncode == 0
    for folder in (tmp_path / "input", tmp_path / "input" / "history" / "day-01"):
        for section in manifest(folder)["systems"].values():
            data = (folder / section["file"]).read_bytes()
            assert section["size"] == len(data)
            assert section["sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("command", ["generate", "run"])
def test_a_real_export_put_over_a_mock_file_is_not_replaced(tmp_path: Path, command: str) -> None:
    """Seen (generate hunt): `generate --keys 100`, then a real export copied to
    input/B.csv; the next `generate` (or `run --keys 100`) replaced it with mock data,
    exit 0: the manifest listed the name B.csv, and only the name was checked."""
    write_config(tmp_path)
    assert keysync(tmp_path, "-q", "generate", "--keys", "100").returncode == 0
    folder = tmp_path / "input"
    (folder / "B.csv").write_bytes(REAL_EXPORT)
    before = tree(folder)
    result = keysync(tmp_path, "-q", command, "--keys", "100")
    assert_one_line_error(result, 3)
    assert result.stderr == (
        f"keysync: error: {folder / 'B.csv'} has changed since keysync generate wrote it "
        "(its size or content is not what the keysync manifest.json next to it records): "
        "move it away, or write mock data elsewhere (`keysync generate --out DIR`, and "
        "point sources there)\n"
    )
    assert tree(folder) == before


def test_an_edit_that_keeps_the_size_is_seen_too(tmp_path: Path) -> None:
    write_config(tmp_path)
    assert keysync(tmp_path, "-q", "generate", "--keys", "100", "--days", "2").returncode == 0
    day = tmp_path / "input" / "history" / "day-01"
    data = (day / "C.csv").read_bytes()
    (day / "C.csv").write_bytes(data.replace(b"CUST-", b"CUST_", 1))  # same size
    result = keysync(tmp_path, "-q", "generate", "--keys", "100", "--days", "2")
    assert_one_line_error(result, 3)
    assert result.stderr.startswith(f"keysync: error: {day / 'C.csv'} has changed since")
    assert (day / "C.csv").read_bytes() == data.replace(b"CUST-", b"CUST_", 1)


def test_a_shorter_series_does_not_delete_a_day_file_that_changed(tmp_path: Path) -> None:
    """The day folders a shorter series removes are checked as those it replaces."""
    write_config(tmp_path)
    assert keysync(tmp_path, "-q", "generate", "--keys", "100", "--days", "4").returncode == 0
    day = tmp_path / "input" / "history" / "day-04"
    (day / "B.csv").write_bytes(REAL_EXPORT)
    before = tree(tmp_path / "input")
    result = keysync(tmp_path, "-q", "generate", "--keys", "100", "--days", "2")
    assert_one_line_error(result, 3)
    assert result.stderr.startswith(f"keysync: error: {day / 'B.csv'} has changed since")
    assert tree(tmp_path / "input") == before


def test_a_manifest_of_an_older_keysync_still_lets_generate_replace_its_files(
    tmp_path: Path,
) -> None:
    """Manifests written before size and sha256 were recorded list names only: their
    files are taken as generate's own, as they were then (docs/mock-data.md)."""
    write_config(tmp_path)
    assert keysync(tmp_path, "-q", "generate", "--keys", "100").returncode == 0
    folder = tmp_path / "input"
    old = manifest(folder)
    for section in old["systems"].values():
        del section["size"], section["sha256"]
    (folder / "manifest.json").write_text(json.dumps(old), encoding="utf-8")
    (folder / "B.csv").write_bytes(b"key,name,last_seen_at\nCUST-00001,edited,x\n")
    assert keysync(tmp_path, "-q", "generate", "--keys", "100").returncode == 0
    assert (folder / "B.csv").read_bytes() != b"key,name,last_seen_at\nCUST-00001,edited,x\n"
    assert manifest(folder)["systems"]["B"]["size"] == (folder / "B.csv").stat().st_size


def test_an_empty_out_is_a_usage_error(tmp_path: Path) -> None:
    """Seen (generate hunt): `generate --out ""` wrote into the configured inputs, and
    without the run lock that writing there takes."""
    write_config(tmp_path)
    result = keysync(tmp_path, "generate", "--keys", "100", "--out", "")
    assert_one_line_error(result, 2)
    assert result.stderr == (
        "keysync: error: generate: Invalid value for '--out': an empty folder name; give a "
        "folder, or leave --out off to write at the configured source paths "
        "(see `keysync generate --help`)\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keysync-config.yaml"]


@pytest.mark.parametrize(
    ("path", "days", "what"),
    [("input/manifest.json", "1", "manifest.json"), ("input/history", "2", "its daily snapshots")],
)
def test_a_source_where_generate_writes_its_own_files_is_refused(
    tmp_path: Path, path: str, days: str, what: str
) -> None:
    """Seen (generate hunt): B at input/manifest.json put half the set in place, then
    failed with a message about something else."""
    write_config(tmp_path, sources={"A": {"path": "input/A.csv"}, "B": {"path": path}})
    result = keysync(tmp_path, "generate", "--keys", "100", "--days", days)
    assert_one_line_error(result, 2)
    assert result.stderr == (
        f"keysync: error: sources.B.path: {tmp_path / path} is where generate writes "
        f"{what}; give the source a path of its own\n"
    )
    assert not (tmp_path / "input").exists()


def test_a_source_path_that_is_a_folder_is_a_config_error(tmp_path: Path) -> None:
    """Seen (generate hunt): it said the folder "exists and was not written by keysync
    generate" and exited 3, as for a real export."""
    write_config(tmp_path, sources={"A": {"path": "input/A.csv"}, "B": {"path": "input/B.csv"}})
    (tmp_path / "input" / "B.csv").mkdir(parents=True)
    result = keysync(tmp_path, "generate", "--keys", "100")
    assert_one_line_error(result, 2)
    assert result.stderr == (
        f"keysync: error: sources.B.path: {tmp_path / 'input' / 'B.csv'} is a folder, "
        "not a file: point it at a file\n"
    )
    assert sorted(p.name for p in (tmp_path / "input").iterdir()) == ["B.csv"]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_full_disk_names_the_file_generate_could_not_write(tmp_path: Path) -> None:
    """Seen (full-disk hunt, tmpfs): ``cannot write mock data: No space left on device;
    check the output folder``: no file named (a write's error carries none), and "the
    output folder" is paths.output, not where generate writes."""
    write_config(tmp_path)
    assert keysync(tmp_path, "-q", "generate", "--keys", "1000").returncode == 0
    before = tree(tmp_path / "input")
    release = tmp_path / "release"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSYNC_")}
    env.update(KEYSYNC_TEST_PAUSE_AT="starting", KEYSYNC_TEST_PAUSE_UNTIL=str(release))
    process = subprocess.Popen(
        [sys.executable, "-m", "keysync", "-q", "generate", "--keys", "1000", "--seed", "7"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    assert "paused_for_tests starting" in process.stderr.readline()  # its pid is the token
    pending = tmp_path / "input" / f".C.csv.{process.pid}.pending"
    pending.symlink_to("/dev/full")  # C's new content goes there: ENOSPC
    release.touch()
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 3
    assert stderr.splitlines()[-1] == (
        f"keysync: error: cannot write mock data {tmp_path / 'input' / 'C.csv'}: No space "
        "left on device; make room there, and run the command again"
    )
    assert not os.path.lexists(pending)
    assert tree(tmp_path / "input") == before  # the previous files, whole, and nothing else


def test_a_read_only_folder_is_named_by_the_file_with_what_to_do(
    tmp_path: Path, full_disk: Callable[[Path, int], FullDisk]
) -> None:
    """Seen (a new user's walkthrough): ``cannot write mock data /ro/.A.csv.15906.pending:
    Read-only file system; make room there (or fix the permissions)``: a hidden temp file
    named, and room is not what a read-only file system lacks."""
    write_config(tmp_path)
    disk = full_disk(tmp_path / "ro", 256)
    disk.make_read_only()
    result = keysync(tmp_path, "-q", "generate", "--keys", "100", "--out", str(disk.folder))
    assert_one_line_error(result, 3)
    assert result.stderr == (
        f"keysync: error: cannot write mock data {disk.folder / 'A.csv'}: Read-only file "
        "system; write the mock data to a folder on a writable file system, and run the "
        "command again\n"
    )


@pytest.mark.parametrize(
    ("sources", "options", "said"),
    [
        (
            {"A": {"path": "input/A.csv"}, "B": {"path": "input/B.csv", "encoding": "latin-1"}},
            (),
            "sources.B.encoding: mock data is written in UTF-8, not 'latin-1'; set it to utf-8 "
            "to generate",
        ),
        (None, ("--keys", "50000000"), "50,000,000 keys per system is too many"),
        (None, ("--out", "input"), "--out: input/B.csv is a folder, not a file"),
    ],
)
def test_a_refused_generate_makes_no_folder_and_no_file(
    tmp_path: Path, sources: dict[str, Any] | None, options: tuple[str, ...], said: str
) -> None:
    """Seen (a new user's walkthrough): a generate refused for its config (exit 2) left
    data/keysync.lock and data/logs/ behind, where a refused run leaves nothing."""
    write_config(tmp_path, **({"sources": sources} if sources else {}))
    (tmp_path / "input" / "B.csv").mkdir(parents=True)
    result = keysync(tmp_path, "generate", *options)
    assert said in assert_one_line_error(result, 2)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "input",
        "input/B.csv",
        "keysync-config.yaml",
    ]
