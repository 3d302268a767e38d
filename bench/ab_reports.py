"""Before/after of the reports written after reading, in one process, on one index.

Reads the sources once through the real pipeline, compares and plans (fresh
state), then writes the reconciliation reports and the registry report with
this checkout's ``reporter``/``provisioner`` and with a baseline's
(``--baseline DIR``: a folder holding an older ``keysync/``), alternately,
``--rounds`` times. Both get the same run id and timestamp, so their files
must be byte-identical: every round checks that and stops on a difference.
Prints wall and CPU seconds per phase, median over the rounds, and the ratio.

    git archive <commit> keysync | tar -x -C /tmp/base
    python bench/ab_reports.py --baseline /tmp/base -c /tmp/rep/keysync-config.yaml --rounds 5
"""

from __future__ import annotations

import argparse
import cProfile
import filecmp
import gc
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from ab_stages import load
from common import begin_fresh_run, read_index

from keysync.comparison import compare
from keysync.config import load_config
from keysync.history import plan_history
from keysync.runner import iso
from keysync.stages import provisioner, reporter


def write_all(
    reporter_module: ModuleType,
    registry_rows: Callable[[Any], Any],
    folder: Path,
    run_id: str,
    generated_at: str,
    inputs: tuple[Any, ...],
) -> tuple[dict[str, float], dict[str, float], Path]:
    """Both report phases as ``runner.py`` calls them; wall and CPU seconds of each."""
    comparison, files, plan, history = inputs
    writer = reporter_module.ReportWriter(folder, run_id, generated_at)
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}

    def timed(label: str, call: Callable[[], Any]) -> None:
        started, cpu_started = time.perf_counter(), time.process_time()
        call()
        wall[label] = time.perf_counter() - started
        cpu[label] = time.process_time() - cpu_started

    def registry() -> None:
        rows = list(registry_rows(plan))
        report = writer.open(
            "master_key_registry.csv",
            plan.registry_columns(),
            row_count=len(rows),
            description="every master key after this run",
        )
        # As runner.py writes it in that tree (before 2026-12-01: two risky columns).
        report.rows(rows, risky=getattr(reporter_module, "REGISTRY_RISKY", (4, 5)))
        report.close()

    timed(
        "reconciliation reports",
        lambda: reporter_module.write_reconciliation_reports(
            writer, comparison, files, plan, history
        ),
    )
    timed("registry report", registry)
    return wall, cpu, writer.staging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True)
    parser.add_argument("-c", "--config", type=Path, default=Path("keysync-config.yaml"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dry-run", action="store_true", help="plan as --dry-run does")
    parser.add_argument("--keep", type=Path, help="copy a differing report pair here")
    parser.add_argument("--profile", action="store_true", help="then cProfile 'after' once")
    parser.add_argument(
        "--no-gc",
        action="store_true",
        help="cyclic GC off around both variants, as runner.py runs (since a192a82)",
    )
    args = parser.parse_args(argv)
    if args.no_gc:
        gc.disable()
    old_reporter = load(args.baseline, "stages.reporter")
    old_provisioner = load(args.baseline, "stages.provisioner")
    config = load_config(args.config)
    result = read_index(config)
    index = result.index
    work = Path(tempfile.mkdtemp(prefix="keysync-ab-reports-"))
    try:
        store, run_id, now = begin_fresh_run(work, dry_run=args.dry_run)
        comparison = compare(index, config.authority, result.unavailable)
        plan = provisioner.plan_provisioning(
            store, config, comparison, run_id=run_id, now=now, dry_run=args.dry_run
        )
        history = plan_history(store, comparison, run_id, now)
        files = {s: config.source_path(s) for s in index.systems}
        inputs = (comparison, files, plan, history)
        variants = {
            "before": (old_reporter, old_provisioner.ProvisioningPlan.registry_rows),
            "after": (reporter, provisioner.ProvisioningPlan.registry_rows),
        }
        wall: dict[tuple[str, str], list[float]] = {}
        cpu: dict[tuple[str, str], list[float]] = {}
        for round_number in range(args.rounds):
            staged = {}
            order = list(variants) if round_number % 2 == 0 else list(reversed(variants))
            for name in order:
                module, rows = variants[name]
                folder = work / f"{name}-{round_number}"
                w, c, staged[name] = write_all(module, rows, folder, run_id, iso(now), inputs)
                for label in w:
                    wall.setdefault((name, label), []).append(w[label])
                    cpu.setdefault((name, label), []).append(c[label])
            names = sorted(p.name for p in staged["before"].iterdir())
            assert names == sorted(p.name for p in staged["after"].iterdir()), names
            for report in names:
                same = filecmp.cmp(staged["before"] / report, staged["after"] / report, False)
                if not same:
                    print(f"round {round_number + 1}: {report} differs", file=sys.stderr)
                    if args.keep:
                        for name, folder in staged.items():
                            shutil.copy(folder / report, args.keep / f"{name}-{report}")
                    return 1
            for folder in staged.values():
                shutil.rmtree(folder.parent)
            with open("/proc/loadavg") as loadavg:
                load_now = loadavg.read().split()[0]
            times = "; ".join(
                f"{name} {label} {wall[(name, label)][-1]:.2f} s (CPU {cpu[(name, label)][-1]:.2f})"
                for name in variants
                for label in ("reconciliation reports", "registry report")
            )
            print(f"round {round_number + 1}: {len(names)} reports identical, load {load_now}")
            print(f"  {times}")
        for label in ("reconciliation reports", "registry report"):
            medians = {n: statistics.median(wall[(n, label)]) for n in variants}
            cpus = {n: statistics.median(cpu[(n, label)]) for n in variants}
            print(
                f"{label}: before {medians['before']:.3f} s (CPU {cpus['before']:.3f}), "
                f"after {medians['after']:.3f} s (CPU {cpus['after']:.3f}), "
                f"after / before {medians['after'] / medians['before']:.2f} wall, "
                f"{cpus['after'] / cpus['before']:.2f} CPU"
            )
        if args.profile:
            profile = cProfile.Profile()
            folder = work / "profile"
            profile.runcall(write_all, *variants["after"], folder, run_id, iso(now), inputs)
            pstats.Stats(profile).sort_stats("tottime").print_stats(15)
        store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
