"""``generate``: plan which keys every system holds each day, write the files and manifests.

The plan, all from seeded ``random.Random`` streams (string seeds such as
``"42:gaps:B"`` hash the same in every process):

- A universe of canonical keys in creation order (``keys.build_universe``),
  split into the authority's pool (spread evenly over creation order) and a
  pool of keys A never has.
- The authority holds a sliding window of N keys of its pool: each day the
  oldest 1 % leave and as many new ones arrive.
- A peer holds the window minus its "gaps" (the first keys of a per-peer
  random order that fall inside the window, as many as the day's target
  says), plus a sliding window of its own keys from the other pool. Those
  lists are shared in part between peers (a key created in B that reached C
  but never A). As targets move, gaps and own keys grow or shrink at the end
  of their orders, so most keys persist from one day to the next.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import gc
import multiprocessing
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from random import Random
from typing import Any, NoReturn

import msgspec

from keysync.config import Config, NormalizeConfig
from keysync.errors import EXIT_USAGE, STOPS, ConfigError, KeysyncError, child_died, stops_held
from keysync.mockdata.clock import REFERENCE_DATE, snapshot_at, snapshot_date
from keysync.mockdata.files import (
    GENERATOR,
    changed_in_stale_history,
    content_fields,
    day_folder,
    discard_pending,
    foreign_files,
    publish_pending,
    remove_stale_history,
    remove_stale_pending,
    sync_folder,
    write_pending,
)
from keysync.mockdata.keys import KeyUniverse, build_universe, max_universe_size, random_words
from keysync.mockdata.names import NAME_MASK, csv_cell, name_cells
from keysync.mockdata.scenarios import SCENARIOS, DayTarget, day_targets
from keysync.mockdata.snapshot import Snapshot, SnapshotContext, build_snapshot
from keysync.mockdata.truth import TruthRules
from keysync.normalization import compile_rules
from keysync.testhooks import pause_for_tests

MANIFEST_VERSION = 1
# Per-key first lines are stored in the manifest up to this many keys per system.
FIRST_LINES_LIMIT = 100_000
# Share of N the authority (and each peer's own keys) renews per day.
DAILY_CHURN = 0.01
# Chance that a peer's out-of-authority key is also held by a second peer.
SHARED_EXTRA_CHANCE = 0.15
# From this many keys per system, a forked helper process builds half of the systems.
PARALLEL_MIN_KEYS = 200_000
# keys_per_system: null draws one size from this range (inclusive).
DEFAULT_SIZE_RANGE = (1000, 5000)


@dataclass
class GenerateResult:
    """What ``generate`` wrote: top-level files (the last day), manifest, history folders."""

    out_dir: Path
    files: dict[str, Path]
    manifest: Path
    history: list[Path]
    seed: int
    scenario: str
    days: int
    keys_per_system: int
    rows_read: dict[str, int] = field(default_factory=dict)
    rows_rejected: dict[str, int] = field(default_factory=dict)
    match_rates: dict[str, float] = field(default_factory=dict)
    # A Ctrl-C or SIGTERM that came while the files went into place, held till they all
    # were: the series is whole, and a caller that would go on (``run --keys``) stops.
    stopped_by: KeyboardInterrupt | None = None

    def describe(self) -> str:
        """A short human summary, as ``keysync generate`` prints it."""
        day_text = "1 day" if self.days == 1 else f"{self.days} days"
        lines = [
            f"Generated mock data: scenario {self.scenario}, seed {self.seed}, "
            f"{self.keys_per_system:,} keys per system, {day_text}"
        ]
        width = max(len(name) for name in self.files)
        for name, path in self.files.items():
            rate = self.match_rates.get(name)
            rate_text = "authority" if rate is None else f"match rate {rate:.1%}"
            lines.append(
                f"  {name:<{width}}  {self.rows_read[name]:>10,} rows "
                f"({self.rows_rejected[name]:,} corrupt)  {rate_text:<17}  {path}"
            )
        lines.append(f"manifest: {self.manifest}")
        if self.history:
            lines.append(
                f"history:  {self.history[0]} .. {self.history[-1].name} "
                f"({len(self.history)} daily snapshots; the files above are the last day)"
            )
        return "\n".join(lines)


def stalled_system(config: Config) -> str | None:
    """The peer whose reader the pipeline stalls when ``simulate_timeout`` is on, else None.

    Chosen from ``simulation.seed`` alone, so the pipeline and the manifest agree.
    """
    peers = list(config.sources)[1:]
    if not config.simulation.failures.simulate_timeout or not peers:
        return None
    return peers[int(Random(f"{config.simulation.seed}:stalled").random() * len(peers))]


def default_keys(config: Config, seed: int) -> int:
    """``simulation.keys_per_system``, or one size drawn from the seed in 1000..5000."""
    if config.simulation.keys_per_system is not None:
        return config.simulation.keys_per_system
    low, high = DEFAULT_SIZE_RANGE
    return Random(f"{seed}:keys_per_system").randint(low, high)


class _GapOrder:
    """A per-peer random order of the authority's pool positions, extended on demand.

    The order is the de-duplicated stream of ``int(random() * size)`` draws, so
    extending it in chunks of any size gives the same sequence.
    """

    def __init__(self, rng: Random, size: int) -> None:
        self._draw = rng.random
        self._size = size
        self._order: dict[int, None] = {}

    def first_in_window(self, start: int, stop: int, count: int) -> list[int]:
        if count <= 0:
            return []
        span = max(1, stop - start)
        wanted = min(self._size, int(count * self._size / span * 1.1) + 64)
        while True:
            if len(self._order) < wanted:
                self._extend(wanted - len(self._order))
            inside = [p for p in self._order if start <= p < stop]
            if len(inside) >= count:
                return inside[:count]
            wanted = min(self._size, len(self._order) + self._size // 8 + 64)

    def _extend(self, missing: int) -> None:
        draw, size = self._draw, self._size
        while missing > 0:
            before = len(self._order)
            batch = missing + missing // 4 + 16
            self._order.update(dict.fromkeys([int(draw() * size) for _ in range(batch)]))
            missing -= len(self._order) - before
            if len(self._order) >= size:
                return


@dataclass
class _Plan:
    keys: int
    days: int
    peers: list[str]
    targets: list[DayTarget]
    churn: int
    universe: KeyUniverse
    a_pool: list[int]
    extras: dict[str, list[int]]
    gaps: dict[str, _GapOrder]

    def held(self, system: str, day: int) -> list[int]:
        """Universe indices (ascending) of the keys ``system`` holds on ``day``."""
        start = self.churn * (day - 1)
        stop = start + self.keys
        if system not in self.extras:
            return self.a_pool[start:stop]
        target = self.targets[day - 1]
        gaps = set(self.gaps[system].first_in_window(start, stop, target.missing_from_system))
        a_pool = self.a_pool
        matched = [a_pool[p] for p in range(start, stop) if p not in gaps]
        own = self.extras[system][start : start + target.missing_in_a]
        return sorted(matched + own)


def _plan_sizes(keys: int, days: int, peers: int, targets: list[DayTarget]) -> tuple[int, int, int]:
    churn = round(keys * DAILY_CHURN)
    pool = keys + churn * (days - 1)
    need = max(churn * (t.day - 1) + t.missing_in_a for t in targets)
    return churn, pool, pool + peers * need


def _make_plan(seed: int, keys: int, days: int, scenario: str, peers: list[str]) -> _Plan:
    targets = day_targets(scenario, days, keys)
    churn, pool, size = _plan_sizes(keys, days, len(peers), targets)
    universe = build_universe(Random(f"{seed}:universe"), size)
    # Spread the authority's pool evenly over creation order; the rest is the peers' pool.
    a_pool = [i * size // pool for i in range(pool)]
    in_a = set(a_pool)
    others = [u for u in range(size) if u not in in_a]
    extras: dict[str, list[int]] = {peer: [] for peer in peers}
    lists = [extras[peer] for peer in peers]
    count = len(peers)
    draw = Random(f"{seed}:extras").random
    for j, u in enumerate(others):
        owner = j % count
        lists[owner].append(u)
        if count > 1 and draw() < SHARED_EXTRA_CHANCE:
            lists[(owner + 1 + int(draw() * (count - 1))) % count].append(u)
    gaps = {peer: _GapOrder(Random(f"{seed}:gaps:{peer}"), pool) for peer in peers}
    return _Plan(keys, days, peers, targets, churn, universe, a_pool, extras, gaps)


def _universe_names(universe: KeyUniverse, seed: int, delimiter: str) -> list[bytes]:
    """``,name,`` of every universe key (the same in every system), UTF-8 encoded."""
    tables = [
        [f"{delimiter}{name}{delimiter}".encode() for name in table]
        for table in name_cells(delimiter)
    ]
    words = random_words(Random(f"{seed}:names"), len(universe), "H")
    return [tables[f][w & NAME_MASK] for f, w in zip(universe.families, words)]


def _check_sources(config: Config) -> None:
    """Mock files can only be written for sources this generator knows how to write."""
    for name, source in config.sources.items():
        where = f"sources.{name}"
        if codecs.lookup(source.encoding).name != "utf-8":
            raise ConfigError(
                f"{where}.encoding: mock data is written in UTF-8, not {source.encoding!r}; "
                "set it to utf-8 to generate"
            )
        d = source.delimiter
        if d.isalnum() or d in '"\r\n\x00':
            raise ConfigError(f"{where}.delimiter: cannot write mock CSV with delimiter {d!r}")
        columns = [source.key_column, "name", source.timestamp_column]
        if len(set(columns)) != len(columns):
            raise ConfigError(
                f"{where}: key_column and timestamp_column must differ from each other "
                f"and from 'name' to generate mock data (got {columns})"
            )


def _header(config: Config, system: str) -> str:
    source = config.sources[system]
    d = source.delimiter
    return d.join(csv_cell(c, d) for c in (source.key_column, "name", source.timestamp_column))


def _compare(snapshots: dict[str, Snapshot], authority: str) -> None:
    """Expected summary counts per system, exactly as SPEC.md defines them."""
    a = snapshots[authority]
    use_ids = all(s.key_ids is not None for s in snapshots.values())
    a_keys: set[Any] = set(a.key_ids if use_ids and a.key_ids is not None else a.keys)
    for name, snap in snapshots.items():
        if name == authority:
            matched, only_here, only_a = len(a_keys), 0, 0
        else:
            keys: set[Any] = set(
                snap.key_ids if use_ids and snap.key_ids is not None else snap.keys
            )
            matched = len(keys & a_keys)
            only_here, only_a = len(keys) - matched, len(a_keys) - matched
        union = matched + only_here + only_a
        snap.section.update(
            matched=matched,
            missing_in_a=only_here,
            missing_from_system=only_a,
            match_rate=round(matched / union, 4) if union else 1.0,
        )


def _resolve(
    config: Config, keys: int | None, seed: int | None, scenario: str | None, days: int | None
) -> tuple[int, int, str, int]:
    seed = config.simulation.seed if seed is None else seed
    scenario = config.simulation.scenario if scenario is None else scenario
    days = 1 if days is None else days
    keys = default_keys(config, seed) if keys is None else keys
    if scenario not in SCENARIOS:
        raise ConfigError(f"unknown scenario {scenario!r}: choose one of {', '.join(SCENARIOS)}")
    if keys < 1:
        raise ConfigError(f"keys per system must be at least 1, got {keys}")
    if days < 1:
        raise ConfigError(f"days must be at least 1, got {days}")
    _check_sources(config)
    return keys, seed, scenario, days


class _Run:
    """Everything needed to build and write one system's snapshot of one day.

    A forked helper process inherits it, so nothing big is ever pickled on the
    way in; only the manifest section comes back.
    """

    def __init__(
        self,
        config: Config,
        ctx: SnapshotContext,
        plan: _Plan,
        files: dict[str, Path],
        history: Path,
    ) -> None:
        self.config = config
        self.ctx = ctx
        self.plan = plan
        self.files = files
        self.history = history
        # Names the pending files of this generate (the helper inherits it through fork).
        self.token = os.getpid()
        delimiters = sorted({source.delimiter for source in config.sources.values()})
        self.names = {d: _universe_names(plan.universe, ctx.seed, d) for d in delimiters}
        any_names = self.names[delimiters[0]]
        self.multiline_keys = [u for u, name in enumerate(any_names) if b"\n" in name]

    def build(self, system: str, day: int) -> Snapshot:
        source = self.config.sources[system]
        snap = build_snapshot(
            self.ctx,
            system,
            day,
            self.plan.held(system, day),
            self.names[source.delimiter],
            self.multiline_keys,
            source.delimiter,
            _header(self.config, system),
        )
        snap.section.update(content_fields(snap.content))  # a later generate checks it
        days = self.plan.days
        if days > 1:  # in place once the series is written (or the day, for `simulate`)
            write_pending(
                day_folder(self.history, day, days) / f"{system}.csv", snap.content, self.token
            )
        if day == days:  # in place only once every file of the set is written
            write_pending(self.files[system], snap.content, self.token)
        snap.content = b""
        return snap


def _day_sets(history: Path, systems: list[str], days: int) -> list[list[Path]]:
    """Each day's files of a ``--days`` series, its manifest last; none for one day."""
    if days == 1:
        return []
    return [
        [
            *(day_folder(history, day, days) / f"{name}.csv" for name in systems),
            day_folder(history, day, days) / "manifest.json",
        ]
        for day in range(1, days + 1)
    ]


_FORKED_RUN: _Run | None = None


def _build_in_helper(system: str, day: int) -> Snapshot:
    """Build in the helper; a key list the main process can rebuild from the plan stays here."""
    assert _FORKED_RUN is not None, "the helper process inherits the run through fork"
    snap = _FORKED_RUN.build(system, day)
    if snap.key_ids is not None:  # canonical keys: cheaper to rebuild than to pickle
        snap.keys, snap.key_ids, snap.section["keys"] = [], None, None
    return snap


def _restore_keys(run: _Run, system: str, day: int, snap: Snapshot) -> Snapshot:
    if snap.section["keys"] is None:
        held = run.plan.held(system, day)
        snap.keys = snap.section["keys"] = run.plan.universe.sorted_keys_of(held)
        snap.key_ids = held
    return snap


@contextlib.contextmanager
def _builder(run: _Run) -> Iterator[Callable[[int], dict[str, Snapshot]]]:
    """Yields ``build_day(day) -> {system: Snapshot}``, in the config's system order.

    From ``PARALLEL_MIN_KEYS`` keys on (and where ``fork`` exists), one forked
    helper process builds the second half of the systems while this one builds
    the first half: the same pure functions, so the files are the same bytes
    either way.

    The helper answers on a plain pipe whose writing end only it holds, and no
    thread waits for it: a helper that dies reads as end-of-file here, and an
    interrupted generate kills it and waits for it, with nothing left to hang
    on. (A ProcessPoolExecutor hung now and then at exit when Ctrl-C came while
    its helper was sending a result: its manager thread waited for the rest of
    a message nobody would write.)
    """
    global _FORKED_RUN
    systems = list(run.config.sources)
    parallel = (
        run.plan.keys >= PARALLEL_MIN_KEYS
        and len(systems) > 1
        and (os.cpu_count() or 1) > 1
        and sys.platform.startswith("linux")
        and "fork" in multiprocessing.get_all_start_methods()
        and threading.active_count() == 1  # forking a threaded process can deadlock the child
        # `simulate` generates its series in a daemonic process, which may have no children.
        and not multiprocessing.current_process().daemon
    )
    if not parallel:
        yield lambda day: {name: run.build(name, day) for name in systems}
        return
    # The main process also plans, compares and writes the manifest: the helper takes more.
    helper_systems = systems[len(systems) // 2 :]
    _FORKED_RUN = run
    context = multiprocessing.get_context("fork")
    answers, helper_end = context.Pipe()
    helper = context.Process(
        target=_helper, args=(helper_end, helper_systems), name="generate-helper", daemon=True
    )
    try:
        with stops_held():  # it is born deaf to Ctrl-C and SIGTERM: the main process decides
            helper.start()
        helper_end.close()

        def build_day(day: int) -> dict[str, Snapshot]:
            try:
                answers.send(day)
            except OSError:  # it died since the last day: say so, not "broken pipe"
                _helper_died(helper)
            built = {name: run.build(name, day) for name in systems if name not in helper_systems}
            for name, snap in _helper_answer(answers, helper):
                built[name] = _restore_keys(run, name, day, snap)
            return {name: built[name] for name in systems}

        yield build_day
        with contextlib.suppress(OSError):  # all is built: a helper gone by now lost nothing
            answers.send(None)  # done: the helper ends
        helper.join()
    finally:
        _FORKED_RUN = None
        if helper.pid is not None and helper.exitcode is None:
            helper.kill()  # interrupted or failed: stop it now rather than wait for its day
            helper.join()
        answers.close()


def _helper(requests: Connection, systems: list[str]) -> None:
    """In the helper: for each day asked, build ``systems`` and send them (or what failed)."""
    _helper_started()
    while (day := requests.recv()) is not None:
        try:
            built = [(name, _build_in_helper(name, day)) for name in systems]
        except Exception as exc:  # a bug, or out of memory: the main process reports it
            failure = (exc, traceback.format_exc())
            try:
                requests.send(failure)
            except Exception:  # an exception that cannot be pickled: its text still tells
                requests.send((RuntimeError(repr(exc)), failure[1]))
            return
        requests.send(built)


def _helper_answer(answers: Connection, helper: BaseProcess) -> list[tuple[str, Snapshot]]:
    try:
        answer = answers.recv()
    except (EOFError, OSError):  # OSError: it died in the middle of an answer
        _helper_died(helper)
    if isinstance(answer, tuple):  # what failed in the helper, and where
        failed, where = answer
        raise failed from HelperTraceback(where)
    built: list[tuple[str, Snapshot]] = answer
    return built


class HelperTraceback(Exception):
    """The helper's own traceback, as the cause of what it raised: a pickled exception
    keeps no frames, and a bug report needs the helper's, not the main process's."""


def _helper_died(helper: BaseProcess) -> NoReturn:
    helper.join()
    raise KeysyncError(child_died("generate's helper process", helper.exitcode)) from None


def _helper_started() -> None:
    """In the helper: die with the main process, leave Ctrl-C and SIGTERM to it.

    The main process stops the helper when it is interrupted; if it is killed
    outright, the kernel ends the helper too (Linux PR_SET_PDEATHSIG), so no
    orphan keeps building files nobody waits for.
    """
    for sig in STOPS:  # (born with both held: see _builder)
        signal.signal(sig, signal.SIG_IGN)
    if _FORKED_RUN is not None:
        die_with_parent(_FORKED_RUN.token)


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel kill this process when its parent dies, even by ``kill -9``.

    Linux PR_SET_PDEATHSIG (elsewhere nothing happens). ``parent_pid`` must be the
    process that started this one, from the thread that outlives it (the signal
    comes when that thread ends): both callers start their helper from the thread
    that waits for it. The parent may have died before the call: then this
    process ends at once.
    """
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL))
    if os.getppid() != parent_pid:
        os._exit(1)  # the parent ended before the line above


def generate(
    config: Config,
    *,
    keys: int | None = None,
    seed: int | None = None,
    scenario: str | None = None,
    days: int | None = None,
    out: Path | None = None,
    each_day: bool = False,
) -> GenerateResult:
    """Write one CSV per configured source and ``manifest.json`` (see docs/mock-data.md).

    Defaults come from ``config.simulation``; ``days`` > 1 also writes
    ``history/day-NN/`` snapshots, and the top-level files are the last day. All of
    it goes into place at the end, so an interrupted generate changes nothing;
    ``each_day`` puts each day folder in place as soon as it is written instead, for
    a caller that reads the days while later ones are made (``simulate``, into a
    folder it emptied: there is no earlier series to keep whole).
    """
    # Millions of lists and ints and no reference cycles: the cyclic GC would only rescan them.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _generate(config, keys, seed, scenario, days, out, each_day)
    finally:
        if collecting:
            gc.enable()


def check_generate(
    config: Config,
    *,
    keys: int | None = None,
    seed: int | None = None,
    scenario: str | None = None,
    days: int | None = None,
) -> None:
    """Raise what ``generate`` would refuse of its options before writing anything (its
    sources, its capacity), for a caller that must not clear earlier results or make
    its folders first (``simulate``, the ``generate`` command)."""
    keys, _, scenario, days = _resolve(config, keys, seed, scenario, days)
    _check_capacity(keys, days, scenario, len(config.sources) - 1)


def check_targets(config: Config, out: Path | None, days: int | None) -> None:
    """Raise what ``generate`` would refuse of the files it writes (``_check_paths``)."""
    _targets(config, out, 1 if days is None else days)


def _targets(config: Config, out: Path | None, days: int) -> tuple[dict[str, Path], Path]:
    """Each system's CSV, and the folder of manifest.json and history/, once checked."""
    systems = list(config.sources)
    if out is not None:
        out_dir = Path(out)
        files = {name: out_dir / f"{name}.csv" for name in systems}
    else:
        files = {name: config.source_path(name) for name in systems}
        out_dir = files[systems[0]].parent
    _check_paths(files, out is not None, out_dir / "manifest.json", out_dir / "history", days)
    return files, out_dir


def _generate(
    config: Config,
    keys: int | None,
    seed: int | None,
    scenario: str | None,
    days: int | None,
    out: Path | None,
    each_day: bool,
) -> GenerateResult:
    keys, seed, scenario, days = _resolve(config, keys, seed, scenario, days)
    systems = list(config.sources)
    authority, peers = systems[0], systems[1:]
    _check_capacity(keys, days, scenario, len(peers))
    files, out_dir = _targets(config, out, days)
    manifest_path = out_dir / "manifest.json"
    history = out_dir / "history"
    day_sets = _day_sets(history, systems, days)
    foreign = foreign_files(list(files.values()), manifest_path)
    for day_set in day_sets:  # an archive someone keeps in history/day-NN is real data too
        foreign = foreign or foreign_files(day_set[:-1], day_set[-1])
    foreign = foreign or changed_in_stale_history(history, days)  # it would delete those
    if foreign:
        path, why = foreign[0]
        raise KeysyncError(
            f"{path} {why}: move it away, or write mock data elsewhere "
            "(`keysync generate --out DIR`, and point sources there)"
        )

    plan = _make_plan(seed, keys, days, scenario, peers)
    ctx = SnapshotContext(
        universe=plan.universe,
        seed=seed,
        rules=TruthRules(
            normalizer=compile_rules(config.normalize),
            default_rules=config.normalize == NormalizeConfig(),
            max_key_length=config.processing.max_key_length,
            store_first_lines=keys <= FIRST_LINES_LIMIT,
        ),
        corruption_rate=config.simulation.failures.inject_corruption,
        history_days=config.simulation.temporal.days_of_history,
        simulate_history=config.simulation.temporal.simulate_history,
    )
    result = GenerateResult(out_dir, files, manifest_path, [], seed, scenario, days, keys)
    run = _Run(config, ctx, plan, files, history)
    # Every set (each day folder's, then the top level's) is replaced only once all of
    # them are written: an interrupted generate leaves the previous series whole.
    # `simulate` reads each day as soon as it is in place, from a folder it just emptied.
    top_level = [*files.values(), manifest_path]
    day_dirs = [day_folder(history, day, days) for day in range(1, days + 1)] if days > 1 else []
    new_dirs = [folder for folder in [history, *day_dirs] if not folder.is_dir()]
    try:
        remove_stale_pending([*top_level, *chain.from_iterable(day_sets)])
        with _builder(run) as build_day:
            for day in range(1, days + 1):
                snapshots = build_day(day)
                _compare(snapshots, authority)
                base = _manifest_base(config, seed, scenario, day, days, keys, plan.targets)
                if days > 1:
                    day_files = {name: f"{name}.csv" for name in systems}
                    day_manifest = _manifest(base, snapshots, day_files)
                    write_pending(day_dirs[day - 1] / "manifest.json", day_manifest, run.token)
                    if each_day:
                        with stops_held():  # a day folder holds one series, never two
                            publish_pending(day_sets[day - 1], run.token)
                        sync_folder(day_dirs[day - 1])
                    result.history.append(day_dirs[day - 1])
                if day == days:
                    top_files = {name: _relative(files[name], out_dir) for name in systems}
                    write_pending(manifest_path, _manifest(base, snapshots, top_files), run.token)
                    _record(result, snapshots, authority)
            pause_for_tests("mock-publish")  # every file pending, none in place yet
            try:
                with stops_held():  # a signal now would leave two series in the folder
                    if not each_day:
                        publish_pending(list(chain.from_iterable(day_sets)), run.token)
                    publish_pending(top_level, run.token)
                    remove_stale_history(history, days)
                    for folder in sorted({*(p.parent for p in top_level), *day_dirs}):
                        sync_folder(folder)
            except KeyboardInterrupt as stop:  # held till the series was in place: it is whole
                result.stopped_by = stop
    except BaseException as exc:
        discard_pending([*top_level, *chain.from_iterable(day_sets)], run.token)
        for folder in reversed(new_dirs):  # made for this series, which is not there
            with contextlib.suppress(OSError):
                folder.rmdir()
        if not isinstance(exc, OSError):
            raise
        where = f" {exc.filename}" if exc.filename else ""
        # (generate, run --keys and simulate all come here: no option of one is named)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            mend = "make room there"
        elif exc.errno == errno.EROFS:
            mend = "write the mock data to a folder on a writable file system"
        else:
            mend = "fix the permissions, or write the mock data to another folder"
        raise KeysyncError(
            f"cannot write mock data{where}: {exc.strerror or exc}; {mend}, and run the "
            "command again"
        ) from None
    return result


def _check_paths(
    files: dict[str, Path], out_given: bool, manifest_path: Path, history: Path, days: int
) -> None:
    """Refuse, before anything is written, a source path generate cannot write a CSV at:
    its own manifest's, its history folder or inside it, a folder. (Two sources on one
    file the config refuses already: ``config._check_one_file_per_source``.)"""
    history_at = os.path.realpath(history)  # realpath, unlike resolve(), takes symlink loops
    ours = {os.path.realpath(manifest_path): "manifest.json"}
    if days > 1:
        ours[history_at] = "its daily snapshots"
    for name, file in files.items():
        where = f"--out: {file}" if out_given else f"sources.{name}.path: {file}"
        real = os.path.realpath(file)
        if real in ours:
            raise ConfigError(
                f"{where} is where generate writes {ours[real]}; give the source a path of its own"
            )
        if real.startswith(history_at + os.sep):
            raise ConfigError(
                f"{where} is inside {history}, where generate writes "
                "its daily snapshots; put the sources next to that folder, not in it"
            )
        if os.path.isdir(file):
            fix = "move it away, or choose another --out" if out_given else "point it at a file"
            raise ConfigError(f"{where} is a folder, not a file: {fix}")


def _check_capacity(keys: int, days: int, scenario: str, peers: int) -> None:
    """Refuse, up front and in one line, a size the key formats cannot hold."""

    def fits(count: int) -> bool:
        _, _, size = _plan_sizes(count, days, peers, day_targets(scenario, days, count))
        return size <= max_universe_size()

    if fits(keys):
        return
    # The largest size that fits, found, not extrapolated: a series adds keys by the day,
    # not in proportion to the keys asked for, and a guess was refused in its turn.
    low, high = 0, keys  # fits(low) (or low is 0), not fits(high)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    series = f", scenario {scenario} and {days:,} days" if days > 1 else f" and scenario {scenario}"
    raise KeysyncError(
        f"{keys:,} keys per system is too many for the mock key formats with {peers} "
        f"peers{series}: use at most {low:,} (--keys, or simulation.keys_per_system)"
        + (", or fewer days" if days > 1 else ""),
        EXIT_USAGE,
    )


def _record(result: GenerateResult, snapshots: dict[str, Snapshot], authority: str) -> None:
    for name, snap in snapshots.items():
        result.rows_read[name] = snap.section["rows_read"]
        result.rows_rejected[name] = snap.section["rows_rejected"]
        if name != authority:
            result.match_rates[name] = snap.section["match_rate"]


def _relative(path: Path, folder: Path) -> str:
    try:
        return Path(os.path.relpath(path, folder)).as_posix()
    except ValueError:  # another drive on Windows
        return path.as_posix()


def _manifest_base(
    config: Config,
    seed: int,
    scenario: str,
    day: int,
    days: int,
    keys: int,
    targets: Sequence[DayTarget],
) -> dict[str, Any]:
    sim = config.simulation
    return {
        "format_version": MANIFEST_VERSION,
        "generator": GENERATOR,
        "seed": seed,
        "scenario": scenario,
        "day": day,
        "days": days,
        "keys_per_system": keys,
        "reference_date": REFERENCE_DATE.isoformat(),
        "snapshot_at": snapshot_at(day),
        "days_of_history": sim.temporal.days_of_history,
        "simulate_history": sim.temporal.simulate_history,
        "inject_corruption": sim.failures.inject_corruption,
        "normalize": msgspec.to_builtins(config.normalize),
        "max_key_length": config.processing.max_key_length,
        "authority": next(iter(config.sources)),
        "stalled_system": stalled_system(config),
        "first_lines_stored": keys <= FIRST_LINES_LIMIT,
        "target": targets[day - 1].as_manifest(snapshot_date(day).isoformat()),
        "targets": [t.as_manifest(snapshot_date(t.day).isoformat()) for t in targets],
    }


def _manifest(base: dict[str, Any], snapshots: dict[str, Snapshot], files: dict[str, str]) -> bytes:
    systems = {name: {**snap.section, "file": files[name]} for name, snap in snapshots.items()}
    return msgspec.json.encode({**base, "systems": systems}, order="sorted") + b"\n"
