"""``keysync simulate``: watch a scenario unfold, one reconciliation per simulated day.

Why it is built this way:

- The simulation lives in its own folder, ``<paths.output>/simulation/<scenario>/``,
  with its own inputs, registry, history, checkpoints, logs and reports. The user's
  registry (``paths.data``) and reports are never read or written: a simulation is a
  rehearsal, not a run.
- Each day is a real ``keysync.runner.run`` on that day's snapshot, in day order, with
  the configured rules and approval settings, so the registry and key history evolve
  exactly as they would across real daily runs (a key proposed on day 3 is still
  Proposed on day 4, a key gone for ``deprecate_after_runs`` runs is deprecated...).
  The day's exports are placed at one fixed path (``current/``), as a real export job
  would overwrite ``input/``.
- Day 1 runs in full, every later day incremental: an export that did not change since
  the day before is not read again, and an incremental run gives the same report rows
  as a full one (SPEC.md).
- The runs use one process (``parallel: false``): on this 2-core machine it was faster
  at every size measured, 4,000 to 500,000 keys per system, as worker start-up and
  queues cost more than they share (docs/performance.md). The output is identical.
- The timeline and the chart are written like every report: staged, fsynced, renamed.
- The previous complete simulation stays until the new one completes: it is moved aside
  into ``.previous/`` in the same folder (renames, so nothing is copied and the paths
  stored inside its state stay right once it is back), dropped when the new one has
  published its timeline, and put back if anything ends the new one first. After a
  ``kill -9`` (nothing could put it back) the next simulation does so before it starts.

API::

    result = simulate(config, scenario="recovery", days=30)
    result.timeline, result.chart          # paths of timeline.csv and timeline.svg
    result.rows                            # TimelineRow per (day, system), sorted
    print(result.describe())               # the table the CLI prints
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.process
import os
import shutil
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from multiprocessing.connection import Connection
from pathlib import Path

import msgspec
from structlog.typing import FilteringBoundLogger

from keysync import logs
from keysync.chart import Series, line_chart
from keysync.comparison import SystemSummary
from keysync.config import Config, PathsConfig
from keysync.durable import replace_atomically, write_synced
from keysync.errors import (
    EXIT_DEGRADED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    STOPS,
    ConfigError,
    Interrupted,
    KeysyncError,
    ResumableError,
    RunError,
    children_deaf_to_stops,
    stop_name,
    stops_held,
    stops_ignored,
)
from keysync.lock import LOCK_NAME, RunLock
from keysync.runner import STOPPED_AT_ONCE, RunOptions, iso, new_run_id
from keysync.runner import run as run_reconciliation
from keysync.stages.reporter import ReportWriter
from keysync.state import DB_NAME, state_problem

SIMULATION_FOLDER = "simulation"
# What a stopped simulation leaves to do: with no complete one before it; with one, put
# back in its place; and after a second Ctrl-C, when nothing could be put back yet.
STARTS_OVER = "`keysync simulate` starts it over"
PREVIOUS_KEPT = "the previous simulation is kept"
KEPT = f"{PREVIOUS_KEPT}; `keysync simulate` starts a new one"
KEPT_ASIDE = "the previous simulation is kept aside; the next `keysync simulate` puts it back"
TIMELINE = "timeline.csv"
CHART = "timeline.svg"
STATE_CONFIG = "keysync-config.yaml"
CURRENT = "current"  # where each day's exports are placed for that day's run
CUMULATIVE_REPORTS = ("audit_log.csv", "master_key_registry.csv")
# What a simulation remakes from scratch in its folder (data/ too, except data/logs/).
_REMADE = ("input", CURRENT, "checkpoints", "days", "reports", TIMELINE, CHART, STATE_CONFIG)
_KEPT_IN_DATA = ("logs", LOCK_NAME)  # the log is append-only; a lock file is never moved
ASIDE = ".previous"  # the last complete simulation, while a new one runs
MOVING = ".previous.moving"  # one being moved, either way: it and the folder's entries are it

TIMELINE_COLUMNS = {
    "day": "simulated day, 1-based",
    "date": "the day's snapshot date (mock data: 2026-11-01 is day 1)",
    "system": "system name",
    "matched": "keys in both the authority and this system",
    "missing_in_a": "keys in this system, not in the authority",
    "missing_from_system": "keys in the authority, not in this system",
    "duplicates": "normalized keys that occur more than once in this system",
    "rejected": "rows of this system that could not be read",
    "match_rate": "matched / |authority ∪ system|, 4 decimals; empty when unavailable",
    "change": "match_rate minus the previous day's, 4 decimals; empty on day 1 and after a gap",
    "flag": (
        "alert: the rate fell by more than simulation.alert_threshold since the day before; "
        "recovered: first day back within the threshold of the rate before the alert; "
        "unavailable: the source could not be read that day"
    ),
}

ALERT, RECOVERED, UNAVAILABLE = "alert", "recovered", "unavailable"
_BP = 10_000  # rates have 4 decimals: compared as whole basis points, free of float noise


@dataclass(frozen=True)
class TimelineRow:
    """One row of ``timeline.csv``: one system on one simulated day."""

    day: int
    date: str
    system: str
    matched: int | None
    missing_in_a: int | None
    missing_from_system: int | None
    duplicates: int | None
    rejected: int | None
    match_rate: float | None
    change: float | None
    flag: str

    def cells(self) -> list[str]:
        def text(value: int | float | None) -> str:
            return "" if value is None else str(value)

        return [
            str(self.day),
            self.date,
            self.system,
            text(self.matched),
            text(self.missing_in_a),
            text(self.missing_from_system),
            text(self.duplicates),
            text(self.rejected),
            text(self.match_rate),
            text(self.change),
            self.flag,
        ]


class AlertTracker:
    """Decides each day's ``change`` and ``flag`` for every system, in day order.

    - ``alert``: the rate fell by more than ``threshold`` since the previous day
      (``change < -threshold``). The first alert of an episode remembers the rate of
      the day before it: the *pre-alert level*. A further steep fall during the
      episode is flagged ``alert`` again but keeps that level.
    - ``recovered``: the first later day whose rate is back within ``threshold`` of the
      pre-alert level (``rate >= level - threshold``); the episode ends there.
    - A day without a rate (system unavailable) gets neither, and the day after it has
      no ``change`` (there is nothing to compare with); an open episode stays open.

    Comparisons are on the 4-decimal values the timeline shows (as whole basis
    points), so what a reader computes from the CSV is exactly what was flagged.
    """

    def __init__(self, threshold: float) -> None:
        # In basis points, like the rates below; rounded, as 0.5005 * 10000 is
        # 5004.999..., which would make a fall of exactly 0.5005 an alert.
        self.threshold = round(threshold * _BP, 6)
        self.previous: dict[str, int | None] = {}
        self.level: dict[str, int] = {}  # open episodes: system -> pre-alert level

    def observe(self, system: str, rate: float | None) -> tuple[float | None, str]:
        """``(change, flag)`` of ``system``'s next day; ``rate`` None when unavailable."""
        previous = self.previous.get(system)
        points = None if rate is None else round(rate * _BP)
        self.previous[system] = points
        if points is None:
            return None, UNAVAILABLE
        if previous is None:
            return None, ""
        change = (points - previous) / _BP
        if previous - points > self.threshold:
            self.level.setdefault(system, previous)
            return change, ALERT
        level = self.level.get(system)
        if level is not None and level - points <= self.threshold:
            del self.level[system]
            return change, RECOVERED
        return change, ""


@dataclass
class SimulationResult:
    """What ``simulate`` did: where everything is, the timeline rows, the outcome."""

    scenario: str
    days: int
    keys_per_system: int
    seed: int
    authority: str
    folder: Path
    timeline: Path
    chart: Path
    rows: list[TimelineRow]
    run_ids: list[str] = field(default_factory=list)
    exit_code: int = EXIT_OK
    message: str = ""
    duration_s: float = 0.0

    @property
    def flagged(self) -> list[TimelineRow]:
        return [row for row in self.rows if row.flag in (ALERT, RECOVERED)]

    def describe(self) -> str:
        """The table ``keysync simulate`` prints: one line per day, then the paths."""
        lines = [
            f"Simulated scenario {self.scenario}: {self.days} day{'s' if self.days != 1 else ''}, "
            f"seed {self.seed}, "
            f"{self.keys_per_system:,} keys per system ({self.duration_s:.1f} s)",
            f"{'day':>4}  {'date':<10}  {'mean match rate':>15}  flags",
        ]
        by_day: dict[int, list[TimelineRow]] = {}
        for row in self.rows:
            by_day.setdefault(row.day, []).append(row)
        for day, rows in sorted(by_day.items()):
            peers = [r for r in rows if r.system != self.authority]
            rates = [r.match_rate for r in peers if r.match_rate is not None]
            mean = f"{sum(rates) / len(rates):.1%}" if rates else "-"
            lines.append(f"{day:>4}  {rows[0].date:<10}  {mean:>15}  {_flags_text(peers)}")
        lines.append(f"timeline: {self.timeline}")
        lines.append(f"chart:    {self.chart}")
        lines.append(f"state:    keysync -c {self.folder / STATE_CONFIG} runs")
        return "\n".join(lines)


def _flags_text(rows: Sequence[TimelineRow]) -> str:
    """``alert: B C D E`` (systems grouped by flag, in the timeline's order)."""
    groups: dict[str, list[str]] = {}
    for row in rows:
        if row.flag:
            groups.setdefault(row.flag, []).append(row.system)
    return "; ".join(f"{flag}: {' '.join(systems)}" for flag, systems in groups.items())


class DayProgress:
    """One self-erasing line on stderr while days are reconciled (terminals only)."""

    def __init__(self) -> None:
        self._shown = False

    def update(self, day: int, days: int, rows: list[TimelineRow]) -> None:
        import click

        rates = "  ".join(
            f"{row.system} {row.match_rate:.1%}" for row in rows if row.match_rate is not None
        )
        click.echo(f"\r\x1b[Ksimulated day {day}/{days}  {rates}", nl=False, err=True)
        self._shown = True

    def clear(self) -> None:
        import click

        if self._shown:
            click.echo("\r\x1b[K", nl=False, err=True)


def resolve_scenario(config: Config, scenario: str | None) -> str:
    return config.simulation.scenario if scenario is None else scenario


def simulation_folder(config: Config, scenario: str | None = None) -> Path:
    """``<paths.output>/simulation/<scenario>/``: everything one simulation writes."""
    return config.output_dir / SIMULATION_FOLDER / resolve_scenario(config, scenario)


def simulation_log_file(config: Config, scenario: str | None = None) -> Path:
    """The simulation's own JSON Lines log (kept across simulations, like any log)."""
    return simulation_folder(config, scenario) / "data" / "logs" / "keysync.jsonl"


def _day_name(day: int, days: int) -> str:
    """``day-07``: the same folder name the mock data generator uses."""
    return f"day-{day:0{max(2, len(str(days)))}d}"


def _remade_entries(folder: Path) -> list[Path]:
    """What a simulation remakes, relative to ``folder``: the ``_REMADE`` entries and
    ``data/*`` but its log (append-only) and its lock file (keysync/lock.py: were it moved
    or deleted, a process holding it would hold a lock the next one does not see). The
    state database and its ``-wal``/``-journal`` files are among them: they go together."""
    entries = [Path(name) for name in _REMADE if os.path.lexists(folder / name)]
    data = folder / "data"
    if data.is_dir():
        names = sorted(e.name for e in data.iterdir() if e.name not in _KEPT_IN_DATA)
        entries += [Path("data", name) for name in names]
    return entries


def _clear(folder: Path) -> None:
    """Remove the simulation in ``folder`` and what a stopped one left staged; its log stays."""
    for entry in _remade_entries(folder):
        target = folder / entry
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
    for staging in folder.glob(".staging-*"):
        shutil.rmtree(staging, ignore_errors=True)
    (folder / f".{STATE_CONFIG}.tmp").unlink(missing_ok=True)


def _complete(folder: Path) -> bool:
    """Whether ``folder`` holds a whole simulation: the timeline and the chart are published
    after the last day, so one that was stopped or killed has not both."""
    return (folder / TIMELINE).is_file() and (folder / CHART).is_file()


def _move_entries(source: Path, target: Path) -> None:
    """Rename each remade entry of ``source`` to the same place under ``target``. One
    filesystem: every entry moves whole, and a move cut short is finished by ``_put_back``
    (``MOVING`` says one is under way)."""
    for entry in _remade_entries(source):
        (target / entry).parent.mkdir(parents=True, exist_ok=True)
        os.rename(source / entry, target / entry)


def _set_aside(folder: Path) -> bool:
    """Move the previous simulation into ``ASIDE`` if it is complete (True), else clear it:
    a stopped one is not worth keeping. First whatever a killed simulation left half done
    is finished, so the last complete simulation is the one set aside."""
    _recover(folder)
    if not _complete(folder):
        _clear(folder)
        return False
    moving = folder / MOVING
    moving.mkdir()
    _move_entries(folder, moving)
    os.rename(moving, folder / ASIDE)  # from here on, what the folder holds is the new one's
    _clear(folder)  # what was staged and never published
    return True


def _recover(folder: Path) -> None:
    """After a ``kill -9``: drop the simulation set aside if the new one had completed (it
    was killed while dropping it), else put it back in place of the new one's remains."""
    if (folder / ASIDE).is_dir() and _complete(folder):
        shutil.rmtree(folder / ASIDE)
    elif (folder / ASIDE).is_dir() or (folder / MOVING).is_dir():
        _put_back(folder, "a simulation was killed before it completed")


def _put_back(folder: Path, reason: str) -> None:
    """Replace what the new simulation left with the one set aside, if there is one. Renames
    only, into the folder whose paths its state holds, so it works as it did."""
    aside, moving = folder / ASIDE, folder / MOVING
    if not aside.is_dir() and not moving.is_dir():
        return
    if aside.is_dir():
        _clear(folder)
        os.rename(aside, moving)  # from here on, the folder's entries are the previous one's
    _move_entries(moving, folder)
    shutil.rmtree(moving)  # empty folders now
    logs.get_logger(stage="simulate").info("simulation.restored", folder=str(folder), reason=reason)


@contextmanager
def _previous_kept(folder: Path, simulation_id: str) -> Iterator[bool]:
    """The previous complete simulation stays until the new one completes: set aside at the
    start (yields True if there was one), put back if anything ends the block early (a day
    that fails, Ctrl-C, SIGTERM, a bug), dropped once the block is done. The moves hold
    Ctrl-C and SIGTERM, so a second one cannot leave a simulation half moved; setting aside
    holds the state's lock too, so no change by hand (``registry approve``) is cut in two."""
    kept = False
    try:
        with stops_held(), RunLock.acquire(folder / "data", simulation_id, purpose="simulate"):
            kept = _set_aside(folder)
        yield kept
    except BaseException as exc:
        with stops_ignored():  # the outcome is decided: the folder as it was, and one line
            _put_back(folder, f"the new simulation did not complete ({type(exc).__name__})")
        if isinstance(exc, KeyboardInterrupt):  # outside the days (which say their own)
            raise Interrupted(
                f"simulation stopped by {stop_name(exc)}; {_what_next(kept)}"
            ) from None
        raise
    shutil.rmtree(folder / ASIDE, ignore_errors=True)  # (what is left: the next one drops it)


def _what_next(kept: bool, *, at_once: bool = False) -> str:
    """What a stopped simulation tells the user: whether the previous one is in place."""
    if not kept:
        return STARTS_OVER
    return KEPT_ASIDE if at_once else KEPT


def day_config(config: Config, folder: Path, inputs: Path, day: int, days: int) -> Config:
    """The configuration of one simulated day: the inputs in ``inputs``, the simulation's
    own state and a report folder for the day."""
    sources = {
        name: msgspec.structs.replace(source, path=str(inputs / f"{name}.csv"))
        for name, source in config.sources.items()
    }
    processing = msgspec.structs.replace(
        config.processing, parallel=False, mode="full" if day == 1 else "incremental"
    )
    return msgspec.structs.replace(
        config,
        sources=sources,
        processing=processing,
        paths=PathsConfig(
            output=str(folder / "days" / _day_name(day, days)),
            data=str(folder / "data"),
            checkpoints=str(folder / "checkpoints"),
        ),
        logging=msgspec.structs.replace(
            config.logging, file=str(folder / "data/logs/keysync.jsonl")
        ),
        base_dir=str(folder),
    )


def _keys_per_system(config: Config) -> int:
    from keysync.mockdata.generator import default_keys

    return default_keys(config, config.simulation.seed)


@contextmanager
def _stop_requests(kept: bool) -> Iterator[Callable[[], bool]]:
    """Ctrl-C / SIGTERM stop the simulation after the current day; a second one at once.

    During a day the runner's own handlers take the signal: it stops at a clean point
    (``Interrupted``), or, past its last check, finishes the day and forgets it. The
    process-wide wake-up fd sees every handled signal whoever handles it, so a signal the
    runner swallowed still stops the simulation before the next day. ``kept``: a previous
    simulation is set aside (an exit at once leaves it there, for the next one to put back).
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False  # signals reach the main thread only; nothing to watch here
        return
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    requested = False

    def handle(signum: int, frame: object) -> None:
        nonlocal requested
        if requested:  # between days: nothing half-written to protect
            os.write(2, f"{STOPPED_AT_ONCE}; {_what_next(kept, at_once=True)}\n".encode())
            os._exit(EXIT_INTERRUPTED)
        requested = True

    def stop_requested() -> bool:
        nonlocal requested
        try:
            while data := reader.recv(256):
                requested = requested or any(number in STOPS for number in data)
        except BlockingIOError:
            pass
        return requested

    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    previous = {number: signal.signal(number, handle) for number in STOPS}
    try:
        yield stop_requested
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        signal.set_wakeup_fd(previous_fd)
        reader.close()
        writer.close()


def simulate(
    config: Config,
    *,
    scenario: str | None = None,
    days: int | None = None,
    on_day: Callable[[int, int, list[TimelineRow]], None] | None = None,
) -> SimulationResult:
    """Generate the day series, reconcile each day in order, write the timeline and chart.

    ``scenario`` defaults to ``simulation.scenario``, ``days`` to
    ``simulation.temporal.days_of_history``. ``on_day(day, days, rows)`` is called
    after each day. Raises ``RunError`` (exit 3) when a day cannot be reconciled and
    ``Interrupted`` (exit 130) on Ctrl-C; a new ``keysync simulate`` starts over. The
    previous complete simulation of the scenario stays in its folder until this one
    completes (``_previous_kept``).
    """
    clock = time.monotonic()
    scenario = resolve_scenario(config, scenario)
    days = config.simulation.temporal.days_of_history if days is None else days
    if days < 1:
        raise ConfigError(f"days must be at least 1, got {days}")
    folder = simulation_folder(config, scenario)
    started = datetime.now(timezone.utc)
    simulation_id = new_run_id(started)
    log = logs.get_logger(stage="simulate")
    from keysync.mockdata.generator import check_generate

    check_generate(config, scenario=scenario, days=days)  # refused: the last one stays
    with RunLock.acquire(
        folder, simulation_id, db_path=folder / "data" / DB_NAME, purpose="simulate"
    ):
        with _previous_kept(folder, simulation_id) as kept:
            keys = _keys_per_system(config)
            seed = config.simulation.seed
            log.info(
                "simulation.started",
                simulation_id=simulation_id,  # the run_id in timeline.csv's header block
                scenario=scenario,
                days=days,
                keys_per_system=keys,
                seed=seed,
                folder=str(folder),
            )
            with _stop_requests(kept) as stop_requested:
                result = _simulate_days(
                    config, scenario, days, keys, folder, stop_requested, on_day, kept
                )
            _write_outputs(result, simulation_id, started)
        result.duration_s = round(time.monotonic() - clock, 3)
        log.info(
            "simulation.completed",
            simulation_id=simulation_id,
            scenario=scenario,
            days=days,
            alerts=sum(row.flag == ALERT for row in result.rows),
            recovered=sum(row.flag == RECOVERED for row in result.rows),
            duration_s=result.duration_s,
            timeline=str(result.timeline),
            chart=str(result.chart),
        )
        return result


def _simulate_days(
    config: Config,
    scenario: str,
    days: int,
    keys: int,
    folder: Path,
    stop_requested: Callable[[], bool],
    on_day: Callable[[int, int, list[TimelineRow]], None] | None,
    kept: bool,
) -> SimulationResult:
    """Generate the series, then reconcile the days in order; stop early on request.
    ``kept``: a previous simulation is set aside (what a stop then says)."""
    _write_state_config(config, folder, scenario, days)
    result = SimulationResult(
        scenario,
        days,
        keys,
        config.simulation.seed,
        config.authority,
        folder,
        folder / TIMELINE,
        folder / CHART,
        rows=[],
    )
    tracker = AlertTracker(config.simulation.alert_threshold)
    with _Series(config, scenario, days, folder / "input") as series:
        for day in range(1, days + 1):
            day_dir = series.wait_for(day, stop_requested)
            if stop_requested():
                raise Interrupted(
                    f"simulation stopped before day {day} of {days}; {_what_next(kept)}"
                )
            today = _run_day(config, result, tracker, day, day_dir, kept)
            if on_day is not None:
                on_day(day, days, today)
    result.message = _degraded_message(result.rows)
    return result


class _Series:
    """The generated day series, written by a helper process while the days are reconciled.

    Generating is about a fifth of a simulation's work and needs nothing from the runs,
    so on two cores it overlaps them: day d can be reconciled as soon as its folder is
    complete, which the generator marks by writing the day's ``manifest.json`` last.
    The helper is spawned (a fresh interpreter: nothing inherited, not even the lock) and
    ignores Ctrl-C, which the simulation handles; leaving the ``with`` block stops it.
    A one-day series is generated in this process (there is nothing to overlap).
    """

    def __init__(self, config: Config, scenario: str, days: int, out: Path) -> None:
        self.days, self.out = days, out
        self.process: multiprocessing.process.BaseProcess | None = None
        self.ended: tuple[str, int] | None = None  # the helper's report, once it is done
        if days == 1:
            from keysync.mockdata import generate

            generate(config, scenario=scenario, days=1, out=out)
            return
        context = multiprocessing.get_context("spawn")
        self.reader, writer = context.Pipe(duplex=False)
        self.process = context.Process(
            target=_generate_series,
            args=(config, scenario, days, out, writer, os.getpid()),
            name="keysync-simulate-generate",
            daemon=True,
        )
        with children_deaf_to_stops():  # a Ctrl-C while it imports: no traceback of it
            self.process.start()
        writer.close()

    def __enter__(self) -> _Series:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            if self.process.is_alive():
                self.process.kill()  # (deaf to SIGTERM)
            self.process.join()
            self.reader.close()

    def wait_for(self, day: int, stop_requested: Callable[[], bool]) -> Path:
        """The folder of ``day`` once it is complete; raises what the generator raised."""
        from keysync.mockdata.files import day_folder

        if self.process is None:
            return self.out
        folder = day_folder(self.out / "history", day, self.days)
        manifest = folder / "manifest.json"
        while not manifest.exists() and not stop_requested():
            if self.ended is None:
                if self.reader.poll(0.01):
                    self.ended = self._receive()
                continue
            message, code = self.ended
            raise KeysyncError(message or f"the generated series has no day {day}", code or 3)
        return folder

    def _receive(self) -> tuple[str, int]:
        """The helper's last word: ("", 0) when the whole series is written."""
        try:
            ended: tuple[str, int] = self.reader.recv()
            return ended
        except EOFError:  # it ended without a word: killed, or the interpreter failed
            assert self.process is not None
            self.process.join(1)
            return f"generating the mock series failed (exit code {self.process.exitcode})", 3


def _generate_series(
    config: Config, scenario: str, days: int, out: Path, report: Connection, parent: int
) -> None:
    """The helper process: write the whole series, then report ("", 0) or (message, exit).

    It dies with the simulation, even after a ``kill -9`` of it: an orphan would go
    on writing day folders into the series the next simulation starts over.
    """
    for sig in STOPS:  # the parent decides when to stop (it is born with both held, too)
        signal.signal(sig, signal.SIG_IGN)
    from keysync.mockdata import generate
    from keysync.mockdata.generator import die_with_parent

    die_with_parent(parent)
    outcome: tuple[str, int] = ("", 0)
    try:
        generate(config, scenario=scenario, days=days, out=out, each_day=True)
    except KeysyncError as exc:
        outcome = (f"{exc}", exc.exit_code)
    except BaseException as exc:  # a bug: say what, the parent ends with one line
        outcome = (f"generating the mock series failed: {type(exc).__name__}: {exc}", 3)
        raise
    finally:
        with suppress(OSError):  # the simulation is gone: nobody is left to tell
            report.send(outcome)
        report.close()


def _run_day(
    config: Config,
    result: SimulationResult,
    tracker: AlertTracker,
    day: int,
    day_dir: Path,
    kept: bool,
) -> list[TimelineRow]:
    """Reconcile one day's snapshot against the simulation's state; its timeline rows.
    ``kept``: a previous simulation is set aside, put back if the day fails."""
    from keysync.mockdata.clock import snapshot_date

    days, folder = result.days, result.folder
    date = snapshot_date(day).isoformat()
    _deliver(day_dir, folder / CURRENT, list(config.sources))
    run_config = day_config(config, folder, folder / CURRENT, day, days)
    options = RunOptions(stopped_at_once=_what_next(kept, at_once=True))
    try:
        outcome = run_reconciliation(run_config, options)
    except Interrupted:
        raise Interrupted(
            f"simulation interrupted on day {day} of {days}; {_what_next(kept)}"
        ) from None
    except (RunError, OSError, sqlite3.DatabaseError) as exc:
        kept_too = f"; {PREVIOUS_KEPT}" if kept else ""
        if isinstance(exc, ResumableError):  # its checkpoint is the day's, dropped with it
            problem = f"{exc.problem}; make room (or fix the permissions), then simulate again"
        elif isinstance(exc, sqlite3.DatabaseError):  # the simulation's state, not the user's
            problem = state_problem(exc, run_config.data_dir / DB_NAME) or ""
            if not problem:
                raise  # an SQL error is a bug: its traceback helps more than a guess
        elif isinstance(exc, OSError):  # a full disk, a permission: what and where
            where = exc.filename2 if exc.filename2 is not None else exc.filename
            place = f"{os.fsdecode(where)}: " if where is not None else ""
            problem = f"{place}{exc.strerror or exc}; make room (or fix the permissions)"
        else:
            problem = str(exc)
        raise RunError(f"simulation day {day} of {days} ({date}): {problem}{kept_too}") from None
    result.run_ids.append(outcome.run_id)
    if outcome.exit_code == EXIT_DEGRADED:
        result.exit_code = EXIT_DEGRADED
    if day < days:
        # The registry and the audit trail are cumulative: the last day's copies (and the
        # simulation's database) hold them; a copy per day would grow the folder by the square.
        for name in CUMULATIVE_REPORTS:
            (run_config.output_dir / name).unlink(missing_ok=True)
    today = _day_rows(day, date, outcome.summaries, tracker)
    result.rows.extend(today)
    _log_day(logs.get_logger(stage="simulate"), day, date, outcome.run_id, today)
    return today


def _deliver(day_dir: Path, current: Path, systems: list[str]) -> None:
    """Put the day's exports where the daily run reads them, as a real export job would:
    the same path every day, so incremental runs find their snapshots (they are keyed by
    the source settings, path included). A hard link costs nothing; else a copy."""
    current.mkdir(parents=True, exist_ok=True)
    for system in systems:
        source, target = day_dir / f"{system}.csv", current / f"{system}.csv"
        temporary = current / f".{system}.csv.tmp"
        temporary.unlink(missing_ok=True)
        try:
            os.link(source, temporary)
        except OSError:
            shutil.copyfile(source, temporary)
        os.replace(temporary, target)


def _write_state_config(config: Config, folder: Path, scenario: str, days: int) -> None:
    """``keysync-config.yaml`` in the simulation folder, so that every command can look at
    the simulation's state: ``keysync -c <folder>/keysync-config.yaml runs`` (or
    ``registry list``, ``history KEY``, ``audit``). Its sources are the last day's files,
    and its scenario the one simulated (``--scenario`` may differ from the config's)."""
    last = day_config(config, folder, folder / CURRENT, days, days)
    settings = msgspec.structs.replace(
        last,
        paths=msgspec.structs.replace(last.paths, output=str(folder / "reports")),
        simulation=msgspec.structs.replace(last.simulation, scenario=scenario),
    )
    header = (
        "# The state of a keysync simulation (docs/simulate.md); written by `keysync simulate`.\n"
        f"# Inspect it with: keysync -c {folder / STATE_CONFIG} runs\n"
    )
    text = header + settings.to_yaml()
    replace_atomically(folder / STATE_CONFIG, text.encode(), folder / f".{STATE_CONFIG}.tmp")


def _day_rows(
    day: int, date: str, summaries: Sequence[SystemSummary], tracker: AlertTracker
) -> list[TimelineRow]:
    """The day's rows, by system; ``change`` and ``flag`` from the tracker."""
    rows = []
    for summary in sorted(summaries, key=lambda s: s.system):
        rate = summary.match_rate if summary.available else None
        change, flag = tracker.observe(summary.system, rate)
        rows.append(
            TimelineRow(
                day=day,
                date=date,
                system=summary.system,
                matched=summary.matched,
                missing_in_a=summary.missing_in_a,
                missing_from_system=summary.missing_from_system,
                duplicates=summary.duplicate_keys,
                rejected=summary.rows_rejected,
                match_rate=rate,
                change=change,
                flag=flag,
            )
        )
    return rows


def _degraded_message(rows: Sequence[TimelineRow]) -> str:
    """``degraded: D unavailable on days 1, 2, 3 (...)``, or "" when every source was read."""
    days: dict[str, list[str]] = {}
    for row in rows:
        if row.flag == UNAVAILABLE:
            days.setdefault(row.system, []).append(str(row.day))
    if not days:
        return ""
    parts = [
        f"{system} unavailable on day{'s' if len(found) > 1 else ''} {', '.join(found)}"
        for system, found in days.items()
    ]
    return f"degraded: {'; '.join(parts)} (no match rate for it on those days)"


def _log_day(
    log: FilteringBoundLogger, day: int, date: str, run_id: str, rows: list[TimelineRow]
) -> None:
    log.info(
        "simulation.day",
        day=day,
        date=date,
        run_id=run_id,
        match_rates={row.system: row.match_rate for row in rows},
    )
    flagged = {
        ALERT: (log.warning, "simulation.alert"),
        RECOVERED: (log.info, "simulation.recovered"),
    }
    for row in rows:
        if row.flag in flagged:
            emit, event = flagged[row.flag]
            emit(
                event,
                system=row.system,
                day=day,
                date=date,
                match_rate=row.match_rate,
                change=row.change,
            )


def _write_outputs(result: SimulationResult, simulation_id: str, started: datetime) -> None:
    """timeline.csv and timeline.svg, staged and fsynced, then renamed into place together."""
    writer = ReportWriter(result.folder, simulation_id, iso(started))
    rows = result.rows
    report = writer.open(
        TIMELINE,
        TIMELINE_COLUMNS,
        row_count=len(rows),
        totals=(
            f"alerts={sum(r.flag == ALERT for r in rows)}; "
            f"recovered={sum(r.flag == RECOVERED for r in rows)}"
        ),
        description=(
            f"scenario {result.scenario}, {result.days} days, seed {result.seed}, "
            f"{result.keys_per_system} keys per system: one row per day and system"
        ),
    )
    report.rows([row.cells() for row in rows], risky=(2,))
    report.close()
    svg = _chart(result)
    write_synced(writer.staging / CHART, svg.encode())
    writer.written.append(CHART)
    writer.publish()


def _chart(result: SimulationResult) -> str:
    """One line per peer (the authority is 100 % by definition), alert days marked."""
    systems = sorted({row.system for row in result.rows if row.system != result.authority})
    series = []
    for system in systems:
        own = [row for row in result.rows if row.system == system]
        marks: dict[str, list[int]] = {}
        for row in own:
            if row.flag in (ALERT, RECOVERED):
                marks.setdefault(row.flag, []).append(row.day - 1)
        series.append(Series(system, [row.match_rate for row in own], marks))
    return line_chart(
        series,
        [str(day) for day in range(1, result.days + 1)],
        title=f"Match rate per system: scenario {result.scenario}",
        subtitle=(
            f"{result.days} days from {result.rows[0].date if result.rows else ''}, seed "
            f"{result.seed}, {result.keys_per_system:,} keys per system; "
            f"match rate = matched / |{result.authority} ∪ peer|"
        ),
    )
