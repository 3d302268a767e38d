"""Incremental mode: what an incremental run gives must equal a full run on the same inputs.

Three layers:

- every scenario over a 10-day ``--days`` series: each day, an incremental run in
  one folder and a full run in another give the same report rows, registry,
  key history and audit trail;
- targeted edits (rows added, removed, changed, moved, duplicates, corrupt and
  multi-line rows, blank lines, CRLF) and random files with random edits
  (hypothesis): a changed file is never taken from its snapshot, and an
  unchanged one is, equal to a full read field by field;
- what a user sees: the fallbacks and their reasons on stderr, an unchanged
  source skipped, a dry run leaving the snapshots alone, a resumed run.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keysync import incremental, replay
from keysync.checkpoint import fingerprint
from keysync.config import Config, load_config
from keysync.pipeline import Pipeline, SourceJob
from keysync.runner import RunOptions, run
from keysync.stages.merger import KeyIndex, SystemKeys
from keysync.state import DB_NAME, StateStore

SYSTEMS = "ABCDE"
KEYS = 2000
DAYS = 10
REPORTS = (
    "reconciliation_summary.csv",
    "diff_missing_in_A.csv",
    "diff_missing_from_system.csv",
    "duplicates.csv",
    "rejected_rows.csv",
    "master_key_registry.csv",
)
# Columns that hold the wall-clock time of a run, or the folder of the inputs.
IGNORED = {"missing_since", "created_at", "updated_at", "created_run", "updated_run", "file"}


# ------------------------------------------------------------------------------ helpers


def make_folder(root: Path, **processing: Any) -> Path:
    """A keysync folder with its own config, inputs, state and output; returns the config."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "input").mkdir(exist_ok=True)
    config = {"processing": {"parallel": False, **processing}}
    path = root / "keysync-config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def report_rows(output: Path) -> dict[str, list[list[str]]]:
    rows = {}
    for name in REPORTS:
        text = (output / name).read_text(encoding="utf-8")
        table = list(csv.reader(io.StringIO("".join(text.splitlines(keepends=True)))))
        table = [row for row in table if row and not row[0].startswith("#")]
        keep = [i for i, column in enumerate(table[0]) if column not in IGNORED]
        rows[name] = [[row[i] for i in keep] for row in table]
    return rows


def state_rows(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Key history and audit trail, without run ids and times."""
    with sqlite3.connect(db) as connection:
        return {
            "history": connection.execute(
                "SELECT key, system, seq, event, last_seen_seq FROM key_history ORDER BY 1, 2, 3"
            ).fetchall(),
            "audit": connection.execute(
                "SELECT event, system, key, detail FROM audit_events ORDER BY seq"
            ).fetchall(),
        }


def full_read(config: Config, systems: list[str]) -> KeyIndex:
    index = KeyIndex(systems)
    jobs = [SourceJob(s, config.source_path(s), config.sources[s]) for s in systems]
    Pipeline(config, jobs, index=index).run()
    return index


def assert_same_index(got: SystemKeys, want: SystemKeys) -> None:
    """Field by field what a full read gives (dict order is the merger's batch artefact)."""
    assert got.rows_read == want.rows_read
    assert got.rejected == want.rejected
    assert got.as_dicts() == want.as_dicts()
    assert got.repeats == want.repeats


class _Store:
    """What ``Snapshots.restore`` asks of the state: was there a successful run."""

    def successful_seqs(self) -> list[int]:
        return [1]


def snapshot_then_restore(
    config: Config, system: str, before: bytes, after: bytes
) -> SystemKeys | None:
    """Snapshot a full read of ``before``, then offer ``after`` to it.

    Returns the index restored from the snapshot, or None when the source is left
    to the pipeline (read in full).
    """
    path = config.source_path(system)
    path.write_bytes(before)
    index = full_read(config, [system])
    snapshots = incremental.Snapshots(config, "run-1")
    snapshots.prepare(index, {}, [fingerprint(system, path)])
    snapshots.publish()
    path.write_bytes(after)
    rebuilt = KeyIndex([system])
    restored = incremental.Snapshots(config, "run-2").restore(rebuilt, [system], _Store())  # type: ignore[arg-type]
    return rebuilt[system] if restored == {system} else None


def check(config: Config, before: bytes, after: bytes) -> SystemKeys:
    """Only unchanged bytes come from ``before``'s snapshot, equal to a full read of them."""
    got = snapshot_then_restore(config, "A", before, after)
    want = full_read(config, ["A"])["A"]
    if after == before:
        assert got is not None
        assert_same_index(got, want)
    else:
        assert got is None  # changed: the pipeline reads it, as in a full run
    return want


@pytest.fixture
def config_a(tmp_path: Path) -> Config:
    return load_config(make_folder(tmp_path / "one"))


# ---------------------------------------------------------- the 10-day series, per scenario


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    made: dict[str, Path] = {}

    def get(scenario: str) -> Path:
        if scenario not in made:
            root = tmp_path_factory.mktemp(f"series-{scenario}")
            make_folder(root)
            generate = ["generate", "--days", str(DAYS), "--keys", str(KEYS), "--scenario"]
            subprocess.run(
                [sys.executable, "-m", "keysync", "-q", *generate, scenario, "--out", "series"],
                cwd=root,
                check=True,
            )
            made[scenario] = root / "series" / "history"
        return made[scenario]

    return get


@pytest.mark.parametrize("scenario", ["normal", "drift", "failure", "recovery"])
def test_each_day_incremental_equals_full(
    scenario: str, series: Callable[[str], Path], tmp_path: Path
) -> None:
    history = series(scenario)
    days = sorted(history.iterdir())
    assert len(days) == DAYS
    folders = {mode: make_folder(tmp_path / mode) for mode in ("full", "incremental")}
    for number, day in enumerate(days, start=1):
        for config_path in folders.values():
            for system in SYSTEMS:
                shutil.copy(day / f"{system}.csv", config_path.parent / "input")
        run(load_config(folders["full"]), RunOptions(mode="full"))
        config = load_config(folders["incremental"])
        if number > 1:
            # Exactly the sources whose bytes did not change come from yesterday's snapshot.
            probe = KeyIndex(list(SYSTEMS))
            with StateStore.open(config.data_dir / DB_NAME) as store:
                restored = incremental.Snapshots(config, "probe", save=False).restore(
                    probe, list(SYSTEMS), store
                )
            unchanged = {
                s
                for s in SYSTEMS
                if (day / f"{s}.csv").read_bytes() == (days[number - 2] / f"{s}.csv").read_bytes()
            }
            assert restored == unchanged
            want = full_read(config, list(SYSTEMS))
            for system in restored:
                assert_same_index(probe[system], want[system])
        result = run(config, RunOptions(mode="incremental"))
        assert result.mode == "incremental"
        full_dir, incremental_dir = (folders[m].parent for m in ("full", "incremental"))
        assert report_rows(incremental_dir / "output") == report_rows(full_dir / "output"), day
        assert state_rows(incremental_dir / "data/keysync.db") == state_rows(
            full_dir / "data/keysync.db"
        ), day


# ------------------------------------------------------------------ targeted edits, one file

HEADER = b"key,name,last_seen_at\n"


def rows(*lines: str) -> bytes:
    return HEADER + "".join(line + "\n" for line in lines).encode("utf-8", "surrogateescape")


BASE = [
    "CUST-00001,Alpha,2026-01-01T00:00:00Z",
    "cust_00002 ,Beta,2026-01-02T00:00:00Z",
    'PROD-ABC-1,"Gamma, Inc.",2026-01-03T00:00:00Z',
    "CUST-00001,Alpha again,2026-01-04T00:00:00Z",
    'TXN-2024-1,"Multi',
    'line name",2026-01-05T00:00:00Z',
    "",
    "CUST-00003,Delta,2026-01-06T00:00:00Z",
    "CUST-00004,too,many,cells",
    "#!?,Empty key,2026-01-07T00:00:00Z",
    '"CUST-00005"x,Bad quoting,2026-01-08T00:00:00Z',
    "CUST-00006,Epsilon,2026-01-09T00:00:00Z",
]


@pytest.mark.parametrize(
    ("name", "after"),
    [
        ("unchanged", BASE),
        ("row added at the top", ["NEW-1,New,2026-02-01T00:00:00Z", *BASE]),
        ("row removed", BASE[:1] + BASE[2:]),
        ("row changed", [BASE[0].replace("Alpha", "Alpha 2"), *BASE[1:]]),
        ("timestamp changed", [BASE[0].replace("01T", "21T"), *BASE[1:]]),
        ("file reordered", list(reversed(BASE[7:])) + BASE[:7]),
        ("duplicate added", [*BASE, "CUST-00006,Epsilon twin,2026-02-02T00:00:00Z"]),
        ("duplicate removed", BASE[:3] + BASE[4:]),
        ("first of a duplicate removed", BASE[1:]),
        ("collision added", [*BASE, "cust.00003,Delta variant,2026-02-03T00:00:00Z"]),
        ("corrupt row added", [*BASE, "CUST-00007,Zeta\x00,2026-02-04T00:00:00Z"]),
        (
            "multi-line record changed",
            [*BASE[:4], 'TXN-2024-1,"Multi', "line, changed", 'x",t', *BASE[6:]],
        ),
        ("multi-line record moved", BASE[:4] + BASE[6:] + BASE[4:6]),
        ("quote opened, never closed", [*BASE[:2], 'CUST-00008,"open', *BASE[2:]]),
        ("blank lines", [BASE[0], "", "", *BASE[1:], ""]),
        ("a record becomes part of a multi-line one", [*BASE[:3], 'X-1,"opens', *BASE[3:]]),
        ("everything new", ["NEW-2,New,2026-03-01T00:00:00Z"]),
        ("empty", []),
    ],
)
def test_edit_rebuilds_what_a_full_read_gives(
    config_a: Config, name: str, after: list[str]
) -> None:
    check(config_a, rows(*BASE), rows(*after))


def test_crlf_line_ends_and_no_final_newline(config_a: Config) -> None:
    before = rows(*BASE).replace(b"\n", b"\r\n")
    after = (HEADER + "\r\n".join(BASE[2:]).encode()).replace(
        b"key,name,last_seen_at\n", b"key,name,last_seen_at\r\n"
    )
    check(config_a, before, before.replace(b"Beta", b"Beta 2"))
    check(config_a, before, after)


def test_invalid_bytes_and_too_long_keys(config_a: Config) -> None:
    before = rows(*BASE)
    after = before + b"CUST-0009,Espa\xf1a,2026-01-01T00:00:00Z\n" + b"K" * 300 + b",long,t\n"
    keys = check(config_a, before, after)
    assert {row.error_type for row in keys.rejected} >= {"encoding", "too-long", "bad-quoting"}


LINE = st.sampled_from(
    [
        "CUST-1,a,t1",
        "cust 1,b,t2",
        "CUST-2,c,t3",
        "PROD-X-9,d,t4",
        'PROD-X-9,"e, f",t5',
        '"CUST-3",g,t6',
        'CUST-4,"h',
        'i",t7',
        '"j"x,k,t8',
        "",
        "#,l,t9",
        "CUST-5,m",
        "CUST-6,n,o,p",
        "CUST-\x007,q,t",
        'CUST-8,"r""s",t10',
        "CUST-9,u,t11\r",
        "\r",
        "Café 10,v,t12",
        "CUST-11,w\udcff,t13",  # written as an invalid byte
        '"CUST-12\r',
    ]
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(before=st.lists(LINE, max_size=25), after=st.lists(LINE, max_size=25))
def test_random_files_rebuild_exactly(
    config_a: Config, before: list[str], after: list[str]
) -> None:
    check(config_a, rows(*before), rows(*after))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lines=st.lists(LINE, min_size=1, max_size=25),
    edits=st.lists(st.tuples(st.integers(0, 30), LINE, st.booleans()), max_size=4),
)
def test_random_small_edits_rebuild_exactly(
    config_a: Config, lines: list[str], edits: list[tuple[int, str, bool]]
) -> None:
    after = list(lines)
    for where, line, insert in edits:
        where %= len(after) + 1
        if insert or where == len(after):
            after.insert(where, line)
        else:
            del after[where]
    check(config_a, rows(*lines), rows(*after))


def test_snapshot_of_a_changed_source_serves_the_next_run(config_a: Config) -> None:
    """Day 1 full; day 2 changed (read in full, new snapshot); day 3 = day 2, from it."""
    day1, day2 = rows(*BASE), rows(*BASE[2:], "NEW-1,x,t")
    assert snapshot_then_restore(config_a, "A", day1, day2) is None
    path = config_a.source_path("A")
    snapshots = incremental.Snapshots(config_a, "run-3")
    read = KeyIndex(["A"])
    assert snapshots.restore(read, ["A"], _Store()) == set()  # type: ignore[arg-type]
    read = full_read(config_a, ["A"])  # what the pipeline does with it
    snapshots.prepare(read, {}, [fingerprint("A", path)])
    snapshots.publish()
    again = KeyIndex(["A"])
    assert incremental.Snapshots(config_a, "run-4").restore(again, ["A"], _Store()) == {"A"}  # type: ignore[arg-type]
    assert_same_index(again["A"], full_read(config_a, ["A"])["A"])


def test_a_file_changed_in_place_with_the_same_size_and_time_is_read_again(
    config_a: Config,
) -> None:
    """The check is the bytes (SHA-256), not the size or the modification time."""
    before = rows(*BASE)
    after = before.replace(b"Alpha,", b"Alphb,")
    path = config_a.source_path("A")
    path.write_bytes(before)
    stat = path.stat()
    index = full_read(config_a, ["A"])
    snapshots = incremental.Snapshots(config_a, "run-1")
    snapshots.prepare(index, {}, [fingerprint("A", path)])
    snapshots.publish()
    path.write_bytes(after)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    assert (
        incremental.Snapshots(config_a, "run-2").restore(KeyIndex(["A"]), ["A"], _Store()) == set()
    )  # type: ignore[arg-type]


# ------------------------------------------------------------------ what a user sees (CLI)


def keysync(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keysync", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def forget_reports(folder: Path) -> None:
    """Drop the record of the last run's reports: an incremental run on unchanged sources
    then takes them from their snapshots, not the reports from that run (tests/test_reuse.py)."""
    (folder / "data/snapshots" / replay.NAME).unlink()


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Path]:
    """A folder with 300 keys per system and one successful full run behind it."""
    make_folder(tmp_path, parallel=True)
    assert keysync(tmp_path, "-q", "generate", "--keys", "300").returncode == 0
    first = keysync(tmp_path, "-q", "run")
    assert first.returncode == 0, first.stderr
    forget_reports(tmp_path)
    yield tmp_path


def test_no_previous_run_falls_back_to_full_and_says_so(tmp_path: Path) -> None:
    make_folder(tmp_path)
    keysync(tmp_path, "-q", "generate", "--keys", "200")
    result = keysync(tmp_path, "run", "--mode", "incremental")
    assert result.returncode == 0, result.stderr
    assert "incremental.fallback" in result.stderr
    assert "no previous successful run: this run reads every source in full" in result.stderr
    assert sorted(p.name for p in (tmp_path / "data/snapshots").iterdir()) == [
        *(f"{s}.msgpack" for s in SYSTEMS),
        replay.NAME,
    ]


def test_unchanged_sources_are_skipped(small: Path) -> None:
    result = keysync(small, "run", "--mode", "incremental")
    assert result.returncode == 0, result.stderr
    for system in SYSTEMS:
        assert f"system={system}" in result.stderr
    assert result.stderr.count("incremental.unchanged") == len(SYSTEMS)
    assert "unchanged since run" in result.stderr and "skipped" in result.stderr
    assert "incremental.fallback" not in result.stderr


def test_a_changed_source_is_read_in_full_and_the_others_are_skipped(small: Path) -> None:
    path = small / "input/B.csv"
    path.write_bytes(
        path.read_bytes().replace(b"key,name,last_seen_at", b"key,label,last_seen_at", 1)
    )
    result = keysync(small, "run", "--mode", "incremental")
    assert result.returncode == 0, result.stderr
    changed = [line for line in result.stderr.splitlines() if "incremental.changed" in line]
    assert len(changed) == 1 and "system=B" in changed[0]
    assert "changed since run" in changed[0] and "read in full" in changed[0]
    assert result.stderr.count("incremental.unchanged") == len(SYSTEMS) - 1
    assert "incremental.fallback" not in result.stderr
    assert "source.finished" in result.stderr and "system=B" in result.stderr


def test_changed_normalization_falls_back_for_every_source(small: Path) -> None:
    config = yaml.safe_load((small / "keysync-config.yaml").read_text())
    config["normalize"] = {"pad_numbers": 6}
    (small / "keysync-config.yaml").write_text(yaml.safe_dump(config))
    result = keysync(small, "-q", "run", "--mode", "incremental")
    assert result.returncode == 0, result.stderr
    fallbacks = [line for line in result.stderr.splitlines() if "incremental.fallback" in line]
    assert len(fallbacks) == len(SYSTEMS)
    assert all("normalization rules or the source's settings changed" in f for f in fallbacks)


def test_missing_or_unreadable_snapshot_falls_back(small: Path) -> None:
    (small / "data/snapshots/C.msgpack").unlink()
    (small / "data/snapshots/D.msgpack").write_bytes(b"not a snapshot")
    old = msgspec.msgpack.encode([incremental.FORMAT_VERSION + 1, "E"])
    (small / "data/snapshots/E.msgpack").write_bytes(old)
    result = keysync(small, "-q", "run", "--mode", "incremental")
    assert result.returncode == 0, result.stderr
    fallbacks = {
        line.split("system=")[1].split()[0]: line
        for line in result.stderr.splitlines()
        if "incremental.fallback" in line
    }
    assert set(fallbacks) == {"C", "D", "E"}
    assert "no snapshot from a previous run" in fallbacks["C"]
    assert "is unreadable" in fallbacks["D"]
    assert f"has format {incremental.FORMAT_VERSION + 1}" in fallbacks["E"]
    # The run left new snapshots: the next incremental run needs no fallback.
    forget_reports(small)
    again = keysync(small, "-q", "run", "--mode", "incremental")
    assert "incremental.fallback" not in again.stderr


@pytest.mark.parametrize("mode", ["full", "incremental"])
def test_a_snapshot_folder_that_cannot_be_made_is_a_warning_not_a_failed_run(
    small: Path, mode: str
) -> None:
    """Seen (incremental hunt): with a file where data/snapshots should be, every run,
    full ones too, read everything and then failed with exit 3: the folder was made
    outside the code that turns a snapshot problem into a warning."""
    shutil.rmtree(small / "data/snapshots")
    (small / "data/snapshots").write_text("in the way\n")
    result = keysync(small, "-q", "run", "--mode", mode)
    assert result.returncode == 0, result.stderr
    skipped = [line for line in result.stderr.splitlines() if "snapshot_skipped" in line]
    (only,) = skipped  # one for every source, not one each (log hunt)
    assert "system=*" in only and f"cannot use {small}/data/snapshots: File exists" in only
    runs = json.loads(keysync(small, "runs", "--json").stdout)
    assert [r["outcome"] for r in runs] == ["completed", "completed"]


def test_a_damaged_snapshot_that_still_decodes_is_not_trusted(small: Path) -> None:
    """One key changed inside B's snapshot (same length, still valid msgpack): read B again."""
    full = keysync(small, "-q", "run")  # the reference: what B's file really holds
    assert full.returncode == 0, full.stderr
    forget_reports(small)
    expected = (small / "output" / "diff_missing_in_A.csv").read_text().split("# rows:")[1]
    rows = report_rows(small / "output")["diff_missing_in_A.csv"]
    key = next(row[0] for row in rows[1:] if row[1] == "B")  # a key only B's snapshot holds
    forged = "Q" * len(key)
    path = small / "data/snapshots/B.msgpack"
    path.write_bytes(path.read_bytes().replace(key.encode(), forged.encode()))
    result = keysync(small, "-q", "run", "--mode", "incremental")
    assert result.returncode == 0, result.stderr
    (fallback,) = [line for line in result.stderr.splitlines() if "incremental.fallback" in line]
    assert "system=B" in fallback and "is damaged (its checksum does not match)" in fallback
    assert forged not in (small / "output" / "diff_missing_in_A.csv").read_text()
    assert (small / "output" / "diff_missing_in_A.csv").read_text().split("# rows:")[1] == expected


def test_dry_run_leaves_the_snapshots(small: Path) -> None:
    before = {p.name: p.read_bytes() for p in (small / "data/snapshots").iterdir()}
    path = small / "input/A.csv"
    path.write_bytes(path.read_bytes() + b"NEW-1,x,2026-01-01T00:00:00Z\n")
    result = keysync(small, "-q", "run", "--mode", "incremental", "--dry-run")
    assert result.returncode == 0, result.stderr
    after = {p.name: p.read_bytes() for p in (small / "data/snapshots").iterdir()}
    assert after == before


def test_resumed_incremental_run_ends_like_a_full_run(small: Path, tmp_path: Path) -> None:
    """Killed while planning, then resumed: sources come from the snapshots again."""
    path = small / "input/A.csv"
    path.write_bytes(path.read_bytes() + b"NEW-1,x,2026-01-01T00:00:00Z\n")
    twin = tmp_path / "twin"
    shutil.copytree(small, twin)
    env_pause = {"KEYSYNC_TEST_PAUSE_AT": "planning", "KEYSYNC_TEST_PAUSE_S": "60"}
    interrupted = subprocess.Popen(
        [sys.executable, "-m", "keysync", "-q", "run", "--mode", "incremental"],
        cwd=small,
        env={**os.environ, **env_pause},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = small / "data/logs/keysync.jsonl"
    for _ in range(600):
        if log.exists() and "run.paused_for_tests" in log.read_text():
            break
        time.sleep(0.1)
    interrupted.kill()
    interrupted.wait()
    resumed = keysync(small, "-q", "run", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    full = keysync(twin, "-q", "run")
    assert full.returncode == 0, full.stderr
    assert report_rows(small / "output") == report_rows(twin / "output")
