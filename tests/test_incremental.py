"""Incremental mode: what an incremental run gives must equal a full run on the same inputs.

Three layers:

- every scenario over a 10-day ``--days`` series: each day, an incremental run in
  one folder and a full run in another give the same report rows, registry,
  key history and audit trail, and the incremental run updated every source
  from its snapshot (no fallback);
- targeted edits (rows added, removed, changed, moved, duplicates, corrupt and
  multi-line rows, blank lines, CRLF) and random files with random edits
  (hypothesis): the index rebuilt from a snapshot equals a full read, field by
  field;
- what a user sees: the fallbacks and their reasons on stderr, an unchanged
  source skipped, a dry run leaving the snapshots alone, a resumed run.
"""

from __future__ import annotations

import csv
import io
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

from keysync import incremental
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
    assert got.first_line == want.first_line
    assert got.timestamps == want.timestamps
    assert got.raw_forms == want.raw_forms
    assert got.repeats == want.repeats


class _Store:
    """What ``Snapshots.restore`` asks of the state: was there a successful run."""

    def successful_seqs(self) -> list[int]:
        return [1]


def snapshot_then_restore(config: Config, system: str, before: bytes, after: bytes) -> SystemKeys:
    """Snapshot a full read of ``before``, then rebuild ``after`` from it; returns the index."""
    path = config.source_path(system)
    path.write_bytes(before)
    index = full_read(config, [system])
    snapshots = incremental.Snapshots(config, "run-1")
    snapshots.prepare(index, {}, [fingerprint(system, path)])
    snapshots.publish()
    path.write_bytes(after)
    rebuilt = KeyIndex([system])
    restored = incremental.Snapshots(config, "run-2").restore(rebuilt, [system], _Store())  # type: ignore[arg-type]
    assert restored == {system}
    return rebuilt[system]


def check(config: Config, before: bytes, after: bytes) -> SystemKeys:
    """The index rebuilt from ``before``'s snapshot equals a full read of ``after``."""
    got = snapshot_then_restore(config, "A", before, after)
    want = full_read(config, ["A"])["A"]
    assert_same_index(got, want)
    return got


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
            # Every source can be rebuilt from yesterday's snapshot, and equals a full read.
            probe = KeyIndex(list(SYSTEMS))
            with StateStore.open(config.data_dir / DB_NAME) as store:
                restored = incremental.Snapshots(config, "probe", save=False).restore(
                    probe, list(SYSTEMS), store
                )
            assert restored == set(SYSTEMS)
            want = full_read(config, list(SYSTEMS))
            for system in SYSTEMS:
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


def test_snapshot_after_an_incremental_run_serves_the_next_one(config_a: Config) -> None:
    """Day 1 full, day 2 incremental (writes a new snapshot), day 3 from day 2's snapshot."""
    day1, day2 = rows(*BASE), rows(*BASE[2:], "NEW-1,x,t")
    day3 = rows("NEW-0,y,t", *BASE[3:], "NEW-1,x,t")
    snapshot_then_restore(config_a, "A", day1, day2)
    snapshots = incremental.Snapshots(config_a, "run-3")
    rebuilt = KeyIndex(["A"])
    snapshots.restore(rebuilt, ["A"], _Store())  # type: ignore[arg-type]
    snapshots.publish()  # the rebuilt day 2 is written as the new snapshot
    config_a.source_path("A").write_bytes(day3)
    again = KeyIndex(["A"])
    incremental.Snapshots(config_a, "run-4").restore(again, ["A"], _Store())  # type: ignore[arg-type]
    assert_same_index(again["A"], full_read(config_a, ["A"])["A"])


class _SmallBlocks(incremental._Lines):
    BLOCK = 5  # bytes: most lines start a block of their own


PIECE = st.sampled_from([b"", b"a", b"bc", b"def,g", b"\r", b'"h', b"i\x00"])


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(PIECE, max_size=30), newline_at_end=st.booleans())
def test_lines_on_demand_equal_split_lines(pieces: list[bytes], newline_at_end: bool) -> None:
    """The derivation's lazy lines: every line, and every slice, as ``split_lines`` gives."""
    body = b"\n".join(pieces) + (b"\n" if newline_at_end and pieces else b"")
    want = incremental.split_lines(body) if body else []
    for lines in (incremental._Lines(body), _SmallBlocks(body)):
        assert len(lines) == len(want)
        assert [lines[i] for i in range(-len(want), len(want))] == want + want
        for start in range(len(want) + 2):
            for stop in range(start, len(want) + 3):
                assert lines[start:stop] == want[start:stop]
        with pytest.raises(IndexError):
            lines[len(want)]


def test_snapshot_from_small_blocks_is_the_same(
    config_a: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records over several lines, repeated keys and rejections across block boundaries."""
    path = config_a.source_path("A")
    path.write_bytes(rows(*BASE, *BASE))
    index = full_read(config_a, ["A"])
    tables = []
    for block in (1 << 16, 7):
        monkeypatch.setattr(incremental._Lines, "BLOCK", block)
        snapshots = incremental.Snapshots(config_a, "run-1")
        snapshot = snapshots._from_index("A", index["A"], fingerprint("A", path))
        assert isinstance(snapshot, incremental.Snapshot)
        tables.append(msgspec.msgpack.encode(snapshot))
    assert tables[0] == tables[1]
    check(config_a, rows(*BASE, *BASE), rows(*BASE[3:], *BASE))


def test_snapshot_does_not_depend_on_the_index_dict_order(config_a: Config) -> None:
    """A resumed run's index (from a checkpoint) may list keys in another order."""
    path = config_a.source_path("A")
    path.write_bytes(rows(*BASE, *BASE))
    keys = full_read(config_a, ["A"])["A"]
    snapshots = incremental.Snapshots(config_a, "run-1")
    prints = fingerprint("A", path)
    want = msgspec.msgpack.encode(snapshots._from_index("A", keys, prints))
    for reorder_first, reorder_stamps in ((True, True), (False, True), (True, False)):
        shuffled = SystemKeys(
            "A",
            dict(reversed(keys.first_line.items())) if reorder_first else keys.first_line,
            dict(reversed(keys.timestamps.items())) if reorder_stamps else keys.timestamps,
            dict(reversed(keys.raw_forms.items())),
            keys.repeats,
            keys.rejected,
            keys.rows_read,
            keys.position,
        )
        got = snapshots._from_index("A", shuffled, prints)
        assert msgspec.msgpack.encode(got) == want


@pytest.mark.parametrize("size", [0, 1, 255, 256, 65535, 65536, 70000])
def test_streamed_snapshot_is_the_encoded_one(size: int) -> None:
    """``_dump`` writes exactly ``msgspec.msgpack.encode(snapshot)``."""
    snapshot = incremental.Snapshot(
        incremental.FORMAT_VERSION,
        "A",
        "run-1",
        "0123456789abcdef",
        size + 9,
        1_700_000_000_123_456_789,
        b"key,name\n",
        bytes(range(256)) * (size // 256) + b"x" * (size % 256),
        bytes([1, 2, 5, 0]),
        ["K-1", "", "K-2", ""],
        ["t1", "", "t2", ""],
        ["k 1", "", "", ""],
        {1: ("bad-quoting", "never closed", '"x')},
        {2: 2},
        ["K-1"],
    )
    out = io.BytesIO()
    incremental._dump(snapshot, out)
    assert out.getvalue() == msgspec.msgpack.encode(snapshot)


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


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Path]:
    """A folder with 300 keys per system and one successful full run behind it."""
    make_folder(tmp_path, parallel=True)
    assert keysync(tmp_path, "-q", "generate", "--keys", "300").returncode == 0
    first = keysync(tmp_path, "-q", "run")
    assert first.returncode == 0, first.stderr
    yield tmp_path


def test_no_previous_run_falls_back_to_full_and_says_so(tmp_path: Path) -> None:
    make_folder(tmp_path)
    keysync(tmp_path, "-q", "generate", "--keys", "200")
    result = keysync(tmp_path, "run", "--mode", "incremental")
    assert result.returncode == 0, result.stderr
    assert "incremental.fallback" in result.stderr
    assert "no previous successful run: this run reads every source in full" in result.stderr
    assert sorted(p.name for p in (tmp_path / "data/snapshots").iterdir()) == [
        f"{s}.msgpack" for s in SYSTEMS
    ]


def test_unchanged_sources_are_skipped(small: Path) -> None:
    result = keysync(small, "run", "--mode", "incremental")
    assert result.returncode == 0, result.stderr
    for system in SYSTEMS:
        assert f"system={system}" in result.stderr
    assert result.stderr.count("incremental.unchanged") == len(SYSTEMS)
    assert "unchanged since run" in result.stderr and "skipped" in result.stderr
    assert "incremental.fallback" not in result.stderr


def test_changed_header_falls_back_for_that_source(small: Path) -> None:
    path = small / "input/B.csv"
    path.write_bytes(
        path.read_bytes().replace(b"key,name,last_seen_at", b"key,label,last_seen_at", 1)
    )
    result = keysync(small, "-q", "run", "--mode", "incremental")
    assert result.returncode == 0, result.stderr
    fallbacks = [line for line in result.stderr.splitlines() if "incremental.fallback" in line]
    assert len(fallbacks) == 1
    assert "system=B" in fallbacks[0]
    assert "the header line changed since the snapshot; reading B in full" in fallbacks[0]


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
    again = keysync(small, "-q", "run", "--mode", "incremental")
    assert "incremental.fallback" not in again.stderr


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
