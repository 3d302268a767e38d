"""``keysync simulate``: the timeline shows each scenario's shape and the alerts land right.

Every scenario runs once per module, for real (``python -m keysync simulate`` in a
subprocess, 10 days of 1,000 keys per system), and the tests read what a user would:
``timeline.csv``, ``timeline.svg``, stdout, the simulation's log, its SQLite registry.

Expected days follow docs/mock-data.md with D = 10: ``failure`` breaks on day
ceil(10/2) = 5; ``recovery`` drops on day 10//3 + 1 = 4 and is back to 80 % on day
2*10//3 + 1 = 7 (4: 30 %, 5: 46.7 %, 6: 63.3 %, 7: 80 %).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import itertools
import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import FullDisk
from hypothesis import example, given
from hypothesis import strategies as st

from keysync.lock import RunLock
from keysync.simulate import AlertTracker

DAYS = 10
PEERS = ["B", "C", "D", "E"]
SYSTEMS = ["A", *PEERS]
COLUMNS = [
    "day",
    "date",
    "system",
    "matched",
    "missing_in_a",
    "missing_from_system",
    "duplicates",
    "rejected",
    "match_rate",
    "change",
    "flag",
]
SVG = "{http://www.w3.org/2000/svg}"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSYNC_")}
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def _keysync(folder: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keysync", *args],
        cwd=folder,
        env=_env(),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        check=False,
    )


def _config(folder: Path, **sections: Any) -> None:
    simulation = {"keys_per_system": 1000, **sections.pop("simulation", {})}
    text = yaml.safe_dump({"simulation": simulation, **sections}, sort_keys=False)
    (folder / "keysync-config.yaml").write_text(text, encoding="utf-8")


class Simulated:
    """One finished ``keysync simulate`` and what it left behind."""

    def __init__(self, project: Path, scenario: str, done: subprocess.CompletedProcess[str]):
        self.project = project
        self.done = done
        self.folder = project / "output" / "simulation" / scenario
        self.text = (self.folder / "timeline.csv").read_text(encoding="utf-8")
        body = "".join(line for line in io.StringIO(self.text) if not line.startswith("#"))
        self.header, *rows = list(csv.reader(io.StringIO(body)))
        self.rows = [dict(zip(self.header, row)) for row in rows]

    def rates(self, system: str) -> list[float]:
        return [float(r["match_rate"]) for r in self.rows if r["system"] == system]

    def flags(self, flag: str) -> list[tuple[int, str]]:
        return [(int(r["day"]), r["system"]) for r in self.rows if r["flag"] == flag]

    def events(self, name: str) -> list[dict[str, Any]]:
        log = self.folder / "data" / "logs" / "keysync.jsonl"
        lines = log.read_text(encoding="utf-8").splitlines()
        return [e for e in map(json.loads, lines) if e["event"] == name]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Simulated]:
    """Each scenario simulated once. The recovery project also has a real registry first."""
    results: dict[str, Simulated] = {}
    for scenario in ("normal", "drift", "failure", "recovery"):
        project = tmp_path_factory.mktemp(scenario)
        _config(project)
        if scenario == "recovery":
            for args in (("generate",), ("run",)):
                assert _keysync(project, *args).returncode == 0
            before = {
                p: _digest(p)
                for p in [*(project / "data").rglob("*"), *(project / "output").rglob("*")]
                if p.is_file()
            }
            (project / "before.json").write_text(json.dumps({str(k): v for k, v in before.items()}))
        done = _keysync(project, "simulate", "--scenario", scenario, "--days", str(DAYS))
        assert done.returncode == 0, done.stderr
        results[scenario] = Simulated(project, scenario, done)
    return results


def test_normal_stays_within_5_points_of_80_percent_without_alerts(
    simulated: dict[str, Simulated],
) -> None:
    sim = simulated["normal"]
    for peer in PEERS:
        rates = sim.rates(peer)
        assert len(rates) == DAYS
        assert all(abs(rate - 0.80) <= 0.05 for rate in rates), (peer, rates)
    assert sim.rates("A") == [1.0] * DAYS
    assert [r["flag"] for r in sim.rows] == [""] * len(sim.rows)
    assert sim.events("simulation.alert") == []


def test_drift_falls_every_day_from_80_to_50_percent_without_a_steep_day(
    simulated: dict[str, Simulated],
) -> None:
    sim = simulated["drift"]
    for peer in PEERS:
        rates = sim.rates(peer)
        assert all(later < earlier for earlier, later in itertools.pairwise(rates)), (peer, rates)
        assert abs(rates[0] - 0.80) <= 0.01 and abs(rates[-1] - 0.50) <= 0.01
    # 30 points over 9 steps: 3.3 points a day, never more than the 10-point threshold.
    assert sim.flags("alert") == []


def test_failure_drops_about_50_points_on_one_day_and_alerts_on_that_day(
    simulated: dict[str, Simulated],
) -> None:
    sim = simulated["failure"]
    for peer in PEERS:
        rows = [r for r in sim.rows if r["system"] == peer]
        changes = [float(r["change"]) for r in rows[1:]]
        steep = [day for day, change in enumerate(changes, start=2) if change < -0.10]
        assert steep == [5], (peer, changes)
        assert abs(changes[5 - 2] + 0.50) <= 0.02
        assert all(abs(rate - 0.80) <= 0.05 for rate in sim.rates(peer)[:4])
        assert all(abs(rate - 0.30) <= 0.05 for rate in sim.rates(peer)[4:])
    assert sim.flags("alert") == [(5, peer) for peer in PEERS]
    assert sim.flags("recovered") == []
    alerts = sim.events("simulation.alert")
    assert [(e["day"], e["system"], e["level"]) for e in alerts] == [
        (5, peer, "warning") for peer in PEERS
    ]
    assert all(e["change"] < -0.45 and abs(e["match_rate"] - 0.30) < 0.01 for e in alerts)


def test_recovery_alerts_on_the_drop_and_flags_the_day_it_is_back(
    simulated: dict[str, Simulated],
) -> None:
    sim = simulated["recovery"]
    assert sim.flags("alert") == [(4, peer) for peer in PEERS]
    assert sim.flags("recovered") == [(7, peer) for peer in PEERS]
    for peer in PEERS:
        rates = sim.rates(peer)
        normal = rates[2]  # the day before the drop
        assert rates[3] - normal < -0.45
        assert rates[3] < rates[4] < rates[5] < rates[6]
        assert all(abs(rate - normal) <= 0.05 for rate in rates[6:])  # back within ±5 points
    recovered = sim.events("simulation.recovered")
    assert {(e["day"], e["system"], e["level"]) for e in recovered} == {
        (7, peer, "info") for peer in PEERS
    }
    # The printed table: one line per day, flags on the right days, then the paths.
    lines = sim.done.stdout.splitlines()
    day_lines = {int(line.split()[0]): line for line in lines if line[:4].strip().isdigit()}
    assert sorted(day_lines) == list(range(1, DAYS + 1))
    assert day_lines[4].split()[1:] == ["2026-11-04", "30.0%", "alert:", "B", "C", "D", "E"]
    assert day_lines[7].endswith("recovered: B C D E")
    mean = sum(sim.rates(peer)[4] for peer in PEERS) / len(PEERS)
    assert day_lines[5].split()[1:] == ["2026-11-05", f"{mean:.1%}"]  # no flag that day
    assert f"timeline: {sim.folder / 'timeline.csv'}" in lines
    assert f"chart:    {sim.folder / 'timeline.svg'}" in lines
    # Alerts are warnings, so they reach stderr without -v; the runs' chatter does not.
    assert sim.done.stderr.count("simulation.alert") == 4
    assert "run.started" not in sim.done.stderr


def test_the_users_registry_reports_and_log_are_untouched(
    simulated: dict[str, Simulated],
) -> None:
    sim = simulated["recovery"]
    before = json.loads((sim.project / "before.json").read_text())
    after = {
        str(p): _digest(p)
        for p in [*(sim.project / "data").rglob("*"), *(sim.project / "output").rglob("*")]
        if p.is_file() and sim.folder not in p.parents
    }
    assert after == before
    # The simulation has its own registry, with one successful run per day.
    with sqlite3.connect(sim.folder / "data" / "keysync.db") as db:
        outcomes = [row[0] for row in db.execute("SELECT outcome FROM runs ORDER BY seq")]
    assert outcomes == ["completed"] * DAYS
    with sqlite3.connect(sim.project / "data" / "keysync.db") as db:
        assert db.execute("SELECT count(*) FROM runs").fetchone() == (1,)
    day_events = sim.events("simulation.day")
    assert [e["day"] for e in day_events] == list(range(1, DAYS + 1))
    # Every keysync command can look at the simulation's state through its config file.
    state_config = sim.folder / "keysync-config.yaml"
    assert f"state:    keysync -c {state_config} runs" in sim.done.stdout
    assert yaml.safe_load(state_config.read_text())["simulation"]["scenario"] == "recovery"
    runs = _keysync(sim.project, "-c", str(state_config), "runs")
    assert runs.returncode == 0, runs.stderr
    listed = [line.split() for line in runs.stdout.splitlines()[1:] if line.strip()]
    assert [cells[0] for cells in listed] == [e["run_id"] for e in day_events]
    # Day 1 reads everything; later days are incremental, as a daily schedule would run.
    assert [cells[3] for cells in listed] == ["full"] + ["incremental"] * (DAYS - 1)


def test_each_day_keeps_its_reports_and_the_last_day_the_registry_and_audit_trail(
    simulated: dict[str, Simulated],
) -> None:
    days = simulated["recovery"].folder / "days"
    assert sorted(p.name for p in days.iterdir()) == [f"day-{d:02d}" for d in range(1, DAYS + 1)]
    daily = {
        "reconciliation_summary.csv",
        "diff_missing_in_A.csv",
        "diff_missing_from_system.csv",
        "duplicates.csv",
        "rejected_rows.csv",
        "summary.json",
    }
    for day in range(1, DAYS):
        assert {p.name for p in (days / f"day-{day:02d}").iterdir()} == daily
    cumulative = {"audit_log.csv", "master_key_registry.csv"}
    assert {p.name for p in (days / f"day-{DAYS}").iterdir()} == daily | cumulative


def test_timeline_has_the_spec_columns_sorted_by_day_and_system(
    simulated: dict[str, Simulated],
) -> None:
    sim = simulated["recovery"]
    assert sim.header == COLUMNS
    keys = [(int(r["day"]), r["system"]) for r in sim.rows]
    assert keys == [(day, system) for day in range(1, DAYS + 1) for system in SYSTEMS]
    assert [r["date"] for r in sim.rows[:: len(SYSTEMS)]] == [
        f"2026-11-{day:02d}" for day in range(1, DAYS + 1)
    ]
    head = [line for line in sim.text.splitlines() if line.startswith("# ")]
    assert head[0] == "# report: timeline"
    assert f"# rows: {DAYS * len(SYSTEMS)}" in head
    assert "# totals: alerts=4; recovered=4" in head
    previous: dict[str, float] = {}
    for row in sim.rows:
        rate = float(row["match_rate"])
        matched, only_peer, only_a = (
            int(row[c]) for c in ("matched", "missing_in_a", "missing_from_system")
        )
        assert rate == round(matched / (matched + only_peer + only_a), 4)
        expected = "" if row["day"] == "1" else str(round(rate - previous[row["system"]], 4))
        assert row["change"] == expected
        previous[row["system"]] = rate
    # Each day's own reports agree with its timeline rows.
    day7 = sim.folder / "days" / "day-07" / "reconciliation_summary.csv"
    summary = {r["system"]: r for r in csv.DictReader(day7.open(encoding="utf-8"))}
    for row in sim.rows[6 * len(SYSTEMS) : 7 * len(SYSTEMS)]:
        assert summary[row["system"]]["matched"] == row["matched"]
        assert summary[row["system"]]["match_rate"] == row["match_rate"]


def test_the_chart_is_well_formed_svg_with_one_line_per_peer_and_the_flagged_days(
    simulated: dict[str, Simulated],
) -> None:
    sim = simulated["recovery"]
    root = ET.parse(sim.folder / "timeline.svg").getroot()
    assert root.tag == f"{SVG}svg"
    groups = [g for g in root.iter(f"{SVG}g") if g.get("class") == "series"]
    assert [g.get("data-system") for g in groups] == PEERS
    for group in groups:
        (line,) = group.iter(f"{SVG}polyline")
        assert len(line.get("points", "").split()) == DAYS
    circles = [c.get("class") for c in root.iter(f"{SVG}circle") if c.get("class")]
    assert circles.count("alert") >= 1 and circles.count("recovered") >= 1
    texts = {t.text for t in root.iter(f"{SVG}text")}
    assert {"0 %", "100 %", "1", str(DAYS), "alert d4", "recovered d7"} <= texts
    assert {"B", "C", "D", "E"} <= texts  # the legend


def test_a_second_simulation_starts_over_with_a_fresh_registry(tmp_path: Path) -> None:
    _config(tmp_path)
    first = _keysync(tmp_path, "simulate", "--scenario", "normal", "--days", "3")
    assert first.returncode == 0, first.stderr
    second = _keysync(tmp_path, "-q", "simulate", "--scenario", "normal", "--days", "1")
    assert second.returncode == 0, second.stderr
    assert second.stdout == ""
    folder = tmp_path / "output" / "simulation" / "normal"
    sim = Simulated(tmp_path, "normal", second)
    assert [(r["day"], r["change"], r["flag"]) for r in sim.rows] == [("1", "", "")] * 5
    with sqlite3.connect(folder / "data" / "keysync.db") as db:
        assert db.execute("SELECT count(*) FROM runs").fetchone() == (1,)
    assert [p.name for p in (folder / "days").iterdir()] == ["day-01"]
    # The log is kept across simulations, like any log.
    assert len(sim.events("simulation.started")) == 2
    # Its events name the simulation as timeline.csv does: the log joins the timeline.
    (shown,) = [line for line in sim.text.splitlines() if line.startswith("# run_id: ")]
    simulation_id = shown.removeprefix("# run_id: ")
    assert sim.events("simulation.started")[-1]["simulation_id"] == simulation_id
    assert sim.events("simulation.completed")[-1]["simulation_id"] == simulation_id


def test_an_unavailable_peer_is_flagged_and_the_simulation_exits_degraded(tmp_path: Path) -> None:
    _config(
        tmp_path,
        simulation={"seed": 7, "failures": {"simulate_timeout": True}},
        processing={"source_timeout_s": 0.3},
    )
    done = _keysync(tmp_path, "simulate", "--days", "2")
    assert done.returncode == 4, done.stderr
    sim = Simulated(tmp_path, "normal", done)
    (stalled,) = {system for _, system in sim.flags("unavailable")}
    assert sim.flags("unavailable") == [(1, stalled), (2, stalled)]
    gone = [r for r in sim.rows if r["system"] == stalled]
    assert {(r["matched"], r["match_rate"], r["change"]) for r in gone} == {("", "", "")}
    assert done.stderr.strip().splitlines()[-1] == (
        f"keysync: degraded: {stalled} unavailable on days 1, 2 (no match rate for it on "
        "those days)"
    )


def test_a_simulation_already_running_is_refused_with_one_line(tmp_path: Path) -> None:
    _config(tmp_path)
    folder = tmp_path / "output" / "simulation" / "normal"
    with RunLock.acquire(folder, "sim-test", purpose="simulate"):
        done = _keysync(tmp_path, "simulate", "--days", "2")
    assert done.returncode == 3
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("keysync: error: another keysync command (simulate sim-test")
    assert not (folder / "input").exists()


def test_ctrl_c_stops_the_simulation_with_one_line_and_the_next_one_starts_over(
    tmp_path: Path,
) -> None:
    _config(tmp_path)
    log = tmp_path / "output" / "simulation" / "normal" / "data" / "logs" / "keysync.jsonl"
    running = _simulating(tmp_path, 30)
    _wait_for_log(running, log, lambda text: b'"simulation.day"' in text)
    running.send_signal(signal.SIGINT)
    stdout, stderr = running.communicate(timeout=60)
    assert running.returncode == 130, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("keysync: error: simulation ")
    assert last.endswith("`keysync simulate` starts it over")
    assert stdout == "" and "Traceback" not in stderr
    assert not (log.parents[2] / "timeline.csv").exists()
    again = _keysync(tmp_path, "simulate", "--days", "2")
    assert again.returncode == 0, again.stderr
    assert len(Simulated(tmp_path, "normal", again).rows) == 2 * len(SYSTEMS)


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for a parent (in a container, PID 1 may never reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_kill_9_of_a_simulation_takes_its_generator_helper_with_it(tmp_path: Path) -> None:
    """An orphaned helper went on writing day folders into the next simulation's series."""
    _config(tmp_path, simulation={"keys_per_system": 20_000})
    running = subprocess.Popen(
        [sys.executable, "-m", "keysync", "-q", "simulate", "--days", "30"],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _children(running.pid):
        time.sleep(0.02)
    helpers = _children(running.pid)
    assert helpers, "the simulation never started its generator helper"
    time.sleep(0.5)  # let it write a day or two
    running.kill()
    running.wait(30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(map(_alive, helpers)):
        time.sleep(0.05)
    assert not any(map(_alive, helpers)), "the generator helper outlived the simulation"
    assert running.stderr is not None
    assert "Traceback" not in running.stderr.read().decode()
    running.stderr.close()


def test_a_series_the_generator_refuses_is_one_line_with_its_exit_code(tmp_path: Path) -> None:
    """Also seen (mock-data hunt): the refused simulation had first deleted the previous
    one of the scenario (timeline, chart, days, inputs), though it never started."""
    _config(tmp_path)
    assert _keysync(tmp_path, "-q", "simulate", "--days", "2").returncode == 0
    folder = tmp_path / "output" / "simulation" / "normal"
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and "logs" not in p.parts}
    _config(tmp_path, simulation={"keys_per_system": 9_000_000})
    done = _keysync(tmp_path, "simulate", "--days", "3")
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("keysync: error: 9,000,000 keys per system is too many")
    after = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and "logs" not in p.parts}
    assert after == before


def test_a_chart_of_many_systems_gives_each_its_own_look_and_keeps_the_bands_narrow() -> None:
    """Seen (simulate hunt): with 12 peers, B and J (C and K...) had one colour in the lines
    and the legend, and B's band was 35 px wide on a 328 px plot."""
    from keysync.chart import Series, line_chart

    names = [chr(ord("B") + i) for i in range(12)]
    svg = line_chart([Series(n, [0.8, 0.8, 0.8]) for n in names], ["1", "2", "3"], title="t")
    root = ET.fromstring(svg)
    lines = [
        next(g.iter(f"{SVG}polyline")) for g in root.iter(f"{SVG}g") if g.get("class") == "series"
    ]
    looks = [(line.get("stroke"), line.get("stroke-dasharray")) for line in lines]
    assert len(set(looks)) == 12
    assert max(float(line.get("stroke-width", "0")) for line in lines) <= 14
    legend = next(g for g in root.iter(f"{SVG}g") if g.get("class") == "legend")
    keyed = [(k.get("stroke"), k.get("stroke-dasharray")) for k in legend.iter(f"{SVG}line")]
    assert keyed == looks


def test_a_file_in_the_way_of_the_simulation_folder_is_named_not_logging_file(
    tmp_path: Path,
) -> None:
    """Seen (simulate hunt): "logging.file: cannot open .../simulation/drift/data/logs/
    keysync.jsonl: Not a directory" blamed a setting the user never wrote."""
    _config(tmp_path)
    (tmp_path / "output" / "simulation").mkdir(parents=True)
    (tmp_path / "output" / "simulation" / "drift").write_text("notes")
    done = _keysync(tmp_path, "simulate", "--scenario", "drift", "--days", "2")
    assert done.returncode == 2
    folder = tmp_path / "output" / "simulation" / "drift"
    assert done.stderr.strip().splitlines() == [
        f"keysync: error: cannot make the simulation folder {folder}: {folder} is a file, "
        "not a folder; move it away"
    ]
    assert folder.read_text() == "notes"
    # Seen (review): a file inside the folder was blamed on the folder, which is fine.
    folder.unlink()
    folder.mkdir()
    (folder / "data").write_text("notes")
    done = _keysync(tmp_path, "simulate", "--scenario", "drift", "--days", "2")
    assert (done.returncode, done.stderr.strip().splitlines()) == (
        2,
        [
            f"keysync: error: cannot make the simulation folder {folder}: {folder}/data is a "
            "file, not a folder; move it away"
        ],
    )


@pytest.mark.parametrize("args", [("--days", "0"), ("--scenario", "chaos")])
def test_bad_options_exit_2(tmp_path: Path, args: tuple[str, str]) -> None:
    done = _keysync(tmp_path, "simulate", *args)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr


# Rates and thresholds in basis points: the timeline's 4 decimals, compared exactly.
basis_points = st.lists(st.one_of(st.none(), st.integers(0, 10_000)), min_size=1, max_size=40)


@given(basis_points, st.integers(1, 5_010))
@example([8000, 2995, 8000], 5005)  # 0.5005 * 10000 is 5004.999...: a fall of exactly T
def test_flags_follow_their_definition(series: list[int | None], threshold: int) -> None:
    """alert iff the rate fell by more than the threshold since the day before; recovered on
    the first later day within the threshold of the rate before the first alert."""
    tracker = AlertTracker(threshold / 10_000)
    level: int | None = None
    previous: int | None = None
    for rate in series:
        change, flag = tracker.observe("B", None if rate is None else rate / 10_000)
        if rate is None:
            assert (change, flag) == (None, "unavailable")
        elif previous is None:
            assert (change, flag) == (None, "")
        else:
            assert change == (rate - previous) / 10_000
            if previous - rate > threshold:
                assert flag == "alert"
                level = previous if level is None else level
            elif level is not None and level - rate <= threshold:
                assert flag == "recovered"
                level = None
            else:
                assert flag == ""
        previous = rate


@pytest.mark.slow
def test_recovery_30_days_at_the_default_size_within_15_seconds(tmp_path: Path) -> None:
    (tmp_path / "keysync-config.yaml").write_text("", encoding="utf-8")  # all defaults
    started = time.monotonic()
    done = _keysync(tmp_path, "simulate", "--scenario", "recovery", "--days", "30")
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert elapsed < 15, f"took {elapsed:.1f} s"
    sim = Simulated(tmp_path, "recovery", done)
    assert sim.flags("alert") == [(11, peer) for peer in PEERS]  # 30//3 + 1
    assert len(sim.rows) == 30 * len(SYSTEMS)
    assert "3,888 keys per system" in done.stdout  # the size seed 42 draws


# ----------------------------------------------------- the previous simulation is kept

SMALL = {"keys_per_system": 200}  # fast: what is tested is where the files end up


def _kept_by_the_user(folder: Path) -> dict[str, bytes]:
    """Every file a user has of a simulation, by path: the log (appended to) aside."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and "logs" not in p.parts and p.name != "keysync.lock"
    }


def _state_listed(project: Path, folder: Path) -> tuple[str, str]:
    """What ``runs`` and ``registry list`` say of the simulation's state, via its config."""
    state = str(folder / "keysync-config.yaml")
    runs = _keysync(project, "-c", state, "runs")
    listed = _keysync(project, "-c", state, "registry", "list")
    assert (runs.returncode, listed.returncode) == (0, 0), runs.stderr + listed.stderr
    return runs.stdout, listed.stdout


def _held_after_day_1(project: Path, days: int, release: Path) -> subprocess.Popen[str]:
    """``keysync simulate`` held once its day 1 has committed (till ``release`` exists)."""
    log = project / "output" / "simulation" / "normal" / "data" / "logs" / "keysync.jsonl"
    before = log.read_bytes().count(b'"run.paused_for_tests"') if log.exists() else 0
    pause = {
        "KEYSYNC_TEST_PAUSE_AT": "tidying",
        "KEYSYNC_TEST_PAUSE_UNTIL": str(release),
        "KEYSYNC_TEST_PAUSE_S": "60",
    }
    running = _simulating(project, days, pause)
    if _wait_for_log(running, log, lambda text: text.count(b'"run.paused_for_tests"') > before):
        return running
    running.kill()
    raise AssertionError(f"the simulation never reached its pause: {running.communicate()}")


def _simulating(
    project: Path, days: int, env: dict[str, str] | None = None, stdout: int = subprocess.PIPE
) -> subprocess.Popen[str]:
    """``keysync simulate --days DAYS`` started in ``project``, Ctrl-C taken as from a
    terminal (a non-interactive shell may start us with SIGINT ignored; a terminal does not)."""
    return subprocess.Popen(
        [sys.executable, "-m", "keysync", "simulate", "--days", str(days)],
        cwd=project,
        env={**_env(), **(env or {})},
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for_log(running: subprocess.Popen[str], log: Path, seen: Callable[[bytes], bool]) -> bool:
    """Wait (up to 60 s, while ``running`` lives) till the log's bytes satisfy ``seen``."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and running.poll() is None:
        if log.exists() and seen(log.read_bytes()):
            return True
        time.sleep(0.02)
    return False


def _read_until(running: subprocess.Popen[str], text: str, timeout: float = 30) -> str:
    """What ``running`` wrote on stderr up to ``text`` (the rest is left to read)."""
    assert running.stderr is not None
    fd, said = running.stderr.fileno(), b""
    deadline = time.monotonic() + timeout
    while text.encode() not in said and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.1)[0]:
            said += os.read(fd, 65536)
    assert text.encode() in said, said
    return said.decode()


def test_a_simulation_that_fails_on_a_later_day_leaves_the_previous_one_in_place(
    tmp_path: Path,
) -> None:
    """Seen (review): a simulation started by deleting the previous one, so a day that
    could not be reconciled left the user with neither."""
    _config(tmp_path, simulation=SMALL)
    assert _keysync(tmp_path, "-q", "simulate", "--days", "2").returncode == 0
    folder = tmp_path / "output" / "simulation" / "normal"
    first, first_state = _kept_by_the_user(folder), _state_listed(tmp_path, folder)
    release = tmp_path / "release"
    running = _held_after_day_1(tmp_path, 3, release)
    # Day 1 of the new simulation is committed; its day 2 export is one A cannot be read from.
    day_2 = folder / "input" / "history" / "day-02"
    deadline = time.monotonic() + 30
    while not (day_2 / "manifest.json").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    (day_2 / "A.tmp").write_text("garbage\n", encoding="utf-8")
    os.replace(day_2 / "A.tmp", day_2 / "A.csv")
    release.touch()
    stdout, stderr = running.communicate(timeout=60)
    assert running.returncode == 3, stderr
    assert stderr.strip().splitlines()[-1] == (
        "keysync: error: simulation day 2 of 3 (2026-11-02): the authority A is unavailable: "
        f"{folder}/current/A.csv: header has no column 'key' (columns: garbage); set "
        "sources.A.key_column; the previous simulation is kept"
    )
    assert stdout == "" and "Traceback" not in stderr
    assert _kept_by_the_user(folder) == first  # timeline.csv, chart, days, registry: all
    assert _state_listed(tmp_path, folder) == first_state
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []


def test_after_a_kill_9_the_next_simulation_puts_the_previous_one_back_first(
    tmp_path: Path,
) -> None:
    """Nothing can put the previous simulation back when a new one is killed: it waits
    aside, and the next simulation puts it back before it starts (here: one stopped
    by Ctrl-C, which leaves the previous one in place)."""
    _config(tmp_path, simulation=SMALL)
    assert _keysync(tmp_path, "-q", "simulate", "--days", "2").returncode == 0
    folder = tmp_path / "output" / "simulation" / "normal"
    first, first_state = _kept_by_the_user(folder), _state_listed(tmp_path, folder)
    killed = _held_after_day_1(tmp_path, 3, tmp_path / "never")
    killed.kill()
    killed.communicate(timeout=30)
    # What the user finds: the killed simulation's remains, and the previous one kept aside.
    assert not (folder / "timeline.csv").exists()
    assert _kept_by_the_user(folder / ".previous") == first
    release = tmp_path / "release"
    stopped = _held_after_day_1(tmp_path, 3, release)
    stopped.send_signal(signal.SIGINT)
    said = _read_until(stopped, "is finishing")  # the committed day goes on, then it stops
    release.touch()
    _, stderr = stopped.communicate(timeout=60)
    stderr = said + stderr
    assert stopped.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == (
        "keysync: error: simulation stopped before day 2 of 3; the previous simulation is "
        "kept; `keysync simulate` starts a new one"
    )
    assert _kept_by_the_user(folder) == first
    assert _state_listed(tmp_path, folder) == first_state
    # And one that completes replaces it, leaving nothing aside.
    done = _keysync(tmp_path, "simulate", "--days", "1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Simulated scenario normal: 1 day, seed 42, 200 keys")
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []
    assert len(Simulated(tmp_path, "normal", done).rows) == len(SYSTEMS)
    restored = Simulated(tmp_path, "normal", done).events("simulation.restored")
    assert [e["reason"] for e in restored] == [
        "a simulation was killed before it completed",
        "the new simulation did not complete (Interrupted)",
    ]


def test_a_change_by_hand_in_the_simulations_state_holds_off_a_new_simulation(
    tmp_path: Path,
) -> None:
    """The previous simulation's state is moved aside only when no `registry approve`
    (`-c <folder>/keysync-config.yaml`) is writing to it: one line, nothing moved."""
    _config(tmp_path, simulation=SMALL)
    assert _keysync(tmp_path, "-q", "simulate", "--days", "2").returncode == 0
    folder = tmp_path / "output" / "simulation" / "normal"
    first = _kept_by_the_user(folder)
    with RunLock.acquire(folder / "data", "manual-test", purpose="registry approve"):
        done = _keysync(tmp_path, "simulate", "--days", "2")
    assert done.returncode == 3, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(
        "keysync: error: another keysync command (registry approve manual-test, pid "
        f"{os.getpid()}, started "
    )
    assert line.endswith(
        f"holds the lock on {folder}/data/keysync.db; wait for it to finish "
        f"or stop it with `kill {os.getpid()}`"
    )
    assert _kept_by_the_user(folder) == first


@pytest.mark.parametrize(
    ("previous", "then"),
    [
        (False, "`keysync simulate` starts it over"),
        (True, "the previous simulation is kept aside; the next `keysync simulate` puts it back"),
    ],
    ids=["first", "after-another"],
)
def test_a_second_ctrl_c_in_a_day_says_the_simulation_starts_over_not_run_resume(
    tmp_path: Path, previous: bool, then: str
) -> None:
    """Review sweep: a second Ctrl-C while a day was reconciled said the runner's own
    "`keysync run --resume` continues it", which in the user's folder would reconcile
    their own inputs; a second one between days said nothing at all. It exits at once,
    so a previous simulation set aside stays there, for the next one to put back."""
    _config(tmp_path, simulation=SMALL)
    folder = tmp_path / "output" / "simulation" / "normal"
    if previous:
        assert _keysync(tmp_path, "-q", "simulate", "--days", "2").returncode == 0
        first = _kept_by_the_user(folder)
    log = folder / "data" / "logs" / "keysync.jsonl"
    pause = {"KEYSYNC_TEST_PAUSE_AT": "reading:1", "KEYSYNC_TEST_PAUSE_S": "60"}
    running = _simulating(tmp_path, 3, pause, stdout=subprocess.DEVNULL)
    _wait_for_log(running, log, lambda text: b'"run.paused_for_tests"' in text)
    running.send_signal(signal.SIGINT)  # stop at the day's next clean point (after the pause)
    time.sleep(0.3)
    deadline = time.monotonic() + 10  # (two SIGINTs before the handler ran are one)
    while running.poll() is None and time.monotonic() < deadline:
        running.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            running.wait(0.5)
    _, stderr = running.communicate(timeout=10)
    assert running.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == (
        f"keysync: stopped at once (second interrupt); {then}"
    ), stderr
    assert "Traceback" not in stderr
    if previous:
        assert _kept_by_the_user(folder / ".previous") == first


def _held_in_day_1(project: Path, phase: str, release: Path) -> tuple[subprocess.Popen[str], str]:
    """``keysync simulate --days 2`` held at ``phase`` of its day 1's run; and its run id."""
    log = project / "output" / "simulation" / "normal" / "data" / "logs" / "keysync.jsonl"
    before = log.read_bytes().count(b'"run.paused_for_tests"') if log.exists() else 0
    pause = {
        "KEYSYNC_TEST_PAUSE_AT": phase,
        "KEYSYNC_TEST_PAUSE_UNTIL": str(release),
        "KEYSYNC_TEST_PAUSE_S": "60",
    }
    running = _simulating(project, 2, pause)
    if not _wait_for_log(running, log, lambda t: t.count(b'"run.paused_for_tests"') > before):
        running.kill()
        raise AssertionError(f"the simulation never reached its pause: {running.communicate()}")
    events = [json.loads(line) for line in log.read_bytes().splitlines()]
    return running, [e for e in events if e["event"] == "run.paused_for_tests"][-1]["run_id"]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_full_disk_on_a_day_says_simulate_again_not_run_resume(tmp_path: Path) -> None:
    """Seen (full-disk hunt, tmpfs): a day whose reports could not be written ended
    "then `keysync run --resume` continues from the last checkpoint": that resumes the
    user's own run, and the simulation drops its day's checkpoint with the rest of it."""
    _config(tmp_path, simulation=SMALL)
    assert _keysync(tmp_path, "-q", "simulate", "--days", "2").returncode == 0
    folder = tmp_path / "output" / "simulation" / "normal"
    first = _kept_by_the_user(folder)
    release = tmp_path / "release"
    running, run_id = _held_in_day_1(tmp_path, "planning", release)
    staging = folder / "days" / "day-01" / f".staging-{run_id}"
    staging.mkdir(parents=True)
    (staging / "diff_missing_in_A.csv.part").symlink_to("/dev/full")  # ENOSPC as it is written
    release.touch()
    stdout, stderr = running.communicate(timeout=60)
    assert running.returncode == 3, stderr
    assert stderr.strip().splitlines()[-1] == (
        "keysync: error: simulation day 1 of 2 (2026-11-01): cannot write the reports in "
        f"{folder}/days/day-01: No space left on device; make room (or fix the permissions), "
        "then simulate again; the previous simulation is kept"
    )
    assert stdout == "" and "Traceback" not in stderr
    assert _kept_by_the_user(folder) == first


def test_a_full_disk_under_the_simulations_state_names_its_database(
    tmp_path: Path, full_disk: Callable[[Path, int], FullDisk]
) -> None:
    """Seen (full-disk hunt, tmpfs): a day whose commit found the disk full said
    ``cannot use the state database <paths.data>/keysync.db``, the user's own, untouched
    one, and not which day, nor that the previous simulation is kept."""
    _config(tmp_path, simulation=SMALL)
    disk = full_disk(tmp_path / "output", 32768)
    assert _keysync(tmp_path, "-q", "simulate", "--days", "2").returncode == 0
    folder = tmp_path / "output" / "simulation" / "normal"
    first = _kept_by_the_user(folder)
    release = tmp_path / "release"
    running, _ = _held_in_day_1(tmp_path, "committing", release)
    disk.fill()
    release.touch()
    stdout, stderr = running.communicate(timeout=60)
    assert running.returncode == 3, stderr
    assert stderr.strip().splitlines()[-1] == (
        "keysync: error: simulation day 1 of 2 (2026-11-01): cannot write the state "
        f"database {folder}/data/keysync.db (database or disk is full); make room (or fix "
        "the permissions), then simulate again; the previous simulation is kept"
    )
    assert stdout == "" and "Traceback" not in stderr
    disk.make_room()
    assert _kept_by_the_user(folder) == first
    assert _keysync(tmp_path, "-q", "simulate", "--days", "2").returncode == 0
