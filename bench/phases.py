"""Where a run's time goes: every phase of ``keysync run``, timed in one process.

Reads the sources once through the real pipeline (parallel, as configured),
then times each later phase on its own, as the runner calls them: compare,
provisioning plan, history plan, the reconciliation reports, the registry
report, the state commit (a fresh SQLite file each round) and the audit log.
Repeating the later phases (``--rounds``) on the same index shows their noise.
Like ``keysync run``, it does all of this with cyclic garbage collection off
(``paused_gc``): with it on, the first collection after each phase walks every
object the phase made (0.2 s after planning at 5 x 1M), which a run never pays.

    python bench/phases.py -c /tmp/keysync-bench/keysync/keysync-config.yaml --rounds 2
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from common import begin_fresh_run, read_index

from keysync.comparison import compare
from keysync.config import load_config
from keysync.history import plan_history
from keysync.runner import _write_audit_log, iso, utc_now
from keysync.stages.merger import KeyIndex
from keysync.stages.provisioner import plan_provisioning
from keysync.stages.reporter import REGISTRY_RISKY, ReportWriter, write_reconciliation_reports
from keysync.state import paused_gc

T = TypeVar("T")


PROFILE: set[str] = set()
MEMORY: dict[str, float] = {}
CPU: dict[str, float] = {}


def timed(label: str, timings: dict[str, float], call: Callable[[], T]) -> T:
    """Run one phase; wall seconds go to ``timings``, the parent's CPU seconds to ``CPU``."""
    started = time.perf_counter()
    cpu = time.process_time()
    if label in PROFILE:
        profile = cProfile.Profile()
        result = profile.runcall(call)
        pstats.Stats(profile).sort_stats("tottime").print_stats(12)
    else:
        result = call()
    timings[label] = timings.get(label, 0.0) + time.perf_counter() - started
    CPU[label] = time.process_time() - cpu
    MEMORY[label] = _rss_mib()
    return result


def _rss_mib() -> float:
    """This process's resident memory now (MiB): which phase holds the most."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def later_phases(config: Any, index: KeyIndex, unavailable: dict[str, str]) -> dict[str, float]:
    """One pass over the phases after reading, on a fresh state and output folder."""
    timings: dict[str, float] = {}
    work = Path(tempfile.mkdtemp(prefix="keysync-phases-"))
    try:
        store, run_id, now = begin_fresh_run(work)
        comparison = timed(
            "compare", timings, lambda: compare(index, config.authority, unavailable)
        )
        plan = timed(
            "plan_provisioning",
            timings,
            lambda: plan_provisioning(
                store, config, comparison, run_id=run_id, now=now, auto_approve=False, dry_run=False
            ),
        )
        history = timed(
            "plan_history", timings, lambda: plan_history(store, comparison, run_id, now)
        )
        writer = ReportWriter(work / "output", run_id, iso(now))
        files = {s: config.source_path(s) for s in index.systems}
        timed(
            "reconciliation_reports",
            timings,
            lambda: write_reconciliation_reports(writer, comparison, files, plan, history),
        )

        def registry_report() -> None:
            rows = list(plan.registry_rows())
            report = writer.open("master_key_registry.csv", plan.registry_columns(), row_count=0)
            report.rows(rows, risky=REGISTRY_RISKY)
            report.close()

        timed("registry_report", timings, registry_report)
        timed(
            "commit",
            timings,
            lambda: store.commit_run(
                run_id,
                ended_at=utc_now(),
                outcome="completed",
                exit_code=0,
                counts={},
                plan=plan,
                history=history,
                dry_run=False,
            ),
        )
        timed("audit_log", timings, lambda: _write_audit_log(writer, store))
        store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", type=Path, default=Path("keysync-config.yaml"))
    parser.add_argument("--rounds", type=int, default=1, help="passes over the later phases")
    parser.add_argument("--profile", action="append", default=[], help="cProfile this phase")
    args = parser.parse_args(argv)
    PROFILE.update(args.profile)
    with paused_gc():  # as the runner does for a whole run
        return _measure(load_config(args.config), args.rounds)


def _measure(config: Any, rounds: int) -> int:
    systems = list(config.sources)
    started = time.perf_counter()
    result = read_index(config)
    index = result.index
    read_s = time.perf_counter() - started
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        f"read CPU: parent {time.process_time():.2f} s, "
        f"children (readers via forkserver) {children.ru_utime + children.ru_stime:.2f} s"
    )
    rows = sum(index[s].rows_read for s in systems)
    print(
        f"read (pipeline): {read_s:.2f} s for {rows:,} rows ({read_s / rows * 1e6:.2f} µs a row), "
        f"parent RSS {_rss_mib():.0f} MiB"
    )
    gc.collect()
    for round_number in range(rounds):
        timings = later_phases(config, index, result.unavailable)
        total = sum(timings.values())
        parts = ", ".join(f"{name} {seconds:.2f}" for name, seconds in timings.items())
        print(f"round {round_number + 1}: later phases {total:.2f} s: {parts}")
        print("  CPU s: " + ", ".join(f"{k} {v:.2f}" for k, v in CPU.items()))
        print("  parent RSS (MiB) after: " + ", ".join(f"{k} {v:.0f}" for k, v in MEMORY.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
