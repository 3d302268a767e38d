"""Benchmarks of the state: registry updates for 500k proposals, steady runs, history at 1M.

Run (figures go to docs/performance.md, "State and registry"):

    .venv/bin/pytest bench/test_registry_bench.py --benchmark-enable -p no:cacheprovider \\
        --benchmark-columns=min,median,max -q

Each round starts from a fresh database (the setup is not timed). "Registry
updates" means what a run adds to its critical path for the registry:
``plan_provisioning`` plus ``commit_run`` (rows, audit events, run record),
in one transaction, on a real SQLite file with ``synchronous=FULL``.

Without ``--benchmark-enable`` (the default addopts) each benchmark runs once
and only the correctness assertions count.
"""

from __future__ import annotations

import gc
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keysync.comparison import Comparison, compare
from keysync.config import parse_config
from keysync.history import plan_history
from keysync.messages import KeyBatch
from keysync.stages.merger import KeyIndex
from keysync.stages.provisioner import plan_provisioning
from keysync.state import StateStore

PROPOSALS = 500_000
BUDGET_S = 3.0
STAMP = "2026-11-01T02:00:00Z"


def _index(data: dict[str, list[str]]) -> KeyIndex:
    index = KeyIndex(list(data))
    for system, keys in data.items():
        for seq, start in enumerate(range(0, max(len(keys), 1), 100_000)):
            chunk = keys[start : start + 100_000]
            index.add(
                KeyBatch.of(
                    system=system,
                    seq=seq,
                    start_offset=start,
                    end_offset=start + len(chunk),
                    first_line=2 + start,
                    next_line=2 + start + len(chunk),
                    keys=chunk,
                    # one raw form in ten differs from its key, as in messy exports
                    raw_changes=[(i, k.lower()) for i, k in enumerate(chunk) if i % 10 == 0],
                    lines=list(range(2 + start, 2 + start + len(chunk))),
                    timestamps=[STAMP] * len(chunk),
                    rejected=[],
                    rows_read=len(chunk),
                )
            )
    return index


@pytest.fixture(scope="module")
def proposals() -> Comparison:
    """A with 100k keys; B..E each with 125k keys A lacks (500k proposals, no overlap)."""
    shared = [f"CUST-{i:07d}" for i in range(100_000)]
    data = {"A": shared}
    per_peer = PROPOSALS // 4
    for n, peer in enumerate("BCDE"):
        own = [f"PROD-{peer}-{i:07d}" for i in range(n * per_peer, (n + 1) * per_peer)]
        data[peer] = shared[:90_000] + own
    return compare(_index(data), "A", {})


@pytest.fixture
def folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="keysync-bench-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class _Round:
    """A fresh store with a begun run, for one timed round."""

    count = 0

    def __init__(self, folder: Path, runs_before: int = 0, comparison: Comparison | None = None):
        _Round.count += 1
        self.path = folder / f"round-{_Round.count}"
        self.config = parse_config({}, self.path)
        self.store = StateStore.open(self.path / "keysync.db")
        for n in range(runs_before):
            assert comparison is not None
            self.commit(f"before-{n}", comparison)
        self.run_id = f"bench-{_Round.count}"
        self.store.begin_run(self.run_id, STAMP, "full", {})

    def commit(self, run_id: str, comparison: Comparison) -> None:
        self.store.begin_run(run_id, STAMP, "full", {})
        plan = plan_provisioning(self.store, self.config, comparison, run_id=run_id, now=STAMP)
        history = plan_history(self.store, comparison, run_id, STAMP)
        self.store.commit_run(
            run_id, ended_at=STAMP, outcome="completed", exit_code=0, plan=plan, history=history
        )


def _registry_update(round_: _Round, comparison: Comparison) -> dict[str, Any]:
    plan = plan_provisioning(
        round_.store, round_.config, comparison, run_id=round_.run_id, now=STAMP
    )
    round_.store.commit_run(
        round_.run_id, ended_at=STAMP, outcome="completed", exit_code=0, plan=plan
    )
    return plan.counts()


def _check_budget(benchmark: Any) -> None:
    if benchmark.enabled and benchmark.stats is not None:
        best = benchmark.stats.stats.min
        assert best < BUDGET_S, f"best round {best:.2f} s is over the {BUDGET_S} s budget"


def test_registry_updates_for_500k_proposals(
    benchmark: Any, proposals: Comparison, folder: Path
) -> None:
    rounds: list[_Round] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        rounds.append(_Round(folder))
        gc.collect()
        return (rounds[-1], proposals), {}

    counts = benchmark.pedantic(_registry_update, setup=setup, rounds=3, iterations=1)
    assert counts["proposed"] == PROPOSALS
    store = rounds[-1].store
    assert store.registry_count() == PROPOSALS
    assert store.audit_count() == PROPOSALS + 1  # every proposal, and the run's outcome
    _check_budget(benchmark)


def test_registry_update_of_an_unchanged_500k_registry(
    benchmark: Any, proposals: Comparison, folder: Path
) -> None:
    """The steady state: every key already has its entry; nothing to write."""
    rounds: list[_Round] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        rounds.append(_Round(folder, runs_before=1, comparison=proposals))
        gc.collect()
        return (rounds[-1], proposals), {}

    counts = benchmark.pedantic(_registry_update, setup=setup, rounds=3, iterations=1)
    assert counts["proposed"] == 0 and counts["seen_in_changed"] == 0
    _check_budget(benchmark)


@pytest.fixture(scope="module")
def million() -> tuple[Comparison, Comparison]:
    """5 systems x 1M keys (peers: 90 % of A plus 10 % own), and the same with 1 % churn."""
    size = 1_000_000

    def build(churn: float) -> Comparison:
        a = [f"CUST-{i:08d}" for i in range(size)]
        data = {"A": a}
        for n, peer in enumerate("BCDE"):
            own = [f"PROD-{peer}-{i:07d}" for i in range(size // 10)]
            keys = a[n * 10_000 : n * 10_000 + size * 9 // 10] + own
            cut = int(len(keys) * churn)
            data[peer] = keys[cut:] + [f"NEW-{peer}-{i}" for i in range(cut)]
        cut = int(size * churn)
        data["A"] = a[cut:] + [f"NEW-A-{i}" for i in range(cut)]
        return compare(_index(data), "A", {})

    return build(0.0), build(0.01)


@pytest.mark.parametrize("case", ["unchanged", "1% churn"])
def test_history_and_registry_of_a_5x1m_run(
    benchmark: Any, million: tuple[Comparison, Comparison], folder: Path, case: str
) -> None:
    """Planning + commit of a run at 5 x 1M keys after a first run (the lead's 2-3 s budget)."""
    first, churned = million
    current = first if case == "unchanged" else churned
    rounds: list[_Round] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        rounds.append(_Round(folder, runs_before=1, comparison=first))
        gc.collect()
        return (rounds[-1],), {}

    def plan_and_commit(round_: _Round) -> dict[str, Any]:
        plan = plan_provisioning(
            round_.store, round_.config, current, run_id=round_.run_id, now=STAMP
        )
        history = plan_history(round_.store, current, round_.run_id, STAMP)
        round_.store.commit_run(
            round_.run_id,
            ended_at=STAMP,
            outcome="completed",
            exit_code=0,
            plan=plan,
            history=history,
        )
        return history.counts()

    counts = benchmark.pedantic(plan_and_commit, setup=setup, rounds=2, iterations=1)
    if case == "unchanged":
        assert counts["appeared"] == counts["disappeared"] == 0
    else:
        assert counts["appeared"] > 0 and counts["disappeared"] > 0
    _check_budget(benchmark)
