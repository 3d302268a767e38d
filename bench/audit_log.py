"""What ``audit_log.csv`` costs over many runs: ``runner._write_audit_log`` timed per run.

Three harnesses (docs/performance.md, "audit_log.csv in proportion to new events"),
each in one process, printing wall and CPU seconds of every audit log write:

    python bench/audit_log.py simulate FOLDER            # simulate --scenario recovery --days 30
    python bench/audit_log.py runs FOLDER --keys 100000  # 10 runs, a new seed each: a growing trail
    python bench/audit_log.py again FOLDER               # one more incremental run in FOLDER

FOLDER is emptied first (not by ``again``) and gets an empty config. Run it with
``PYTHONPATH=<a checkout>`` to compare two versions, alternating.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path
from typing import Any

import keysync.runner as runner
from keysync.config import load_config
from keysync.logs import setup_logging

_spent: list[tuple[float, float]] = []
_real = runner._write_audit_log


def _timed(*args: Any, **kwargs: Any) -> None:
    wall, cpu = time.perf_counter(), time.process_time()
    _real(*args, **kwargs)
    _spent.append((time.perf_counter() - wall, time.process_time() - cpu))


def _load() -> str:
    return open("/proc/loadavg").read().split()[0]


def _rows(folder: Path) -> str:
    with open(folder / "output" / "audit_log.csv", encoding="utf-8") as handle:
        return handle.read(1000).split("# rows: ")[1].split("\n")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("simulate", "runs", "again"))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    runner._write_audit_log = _timed  # type: ignore[assignment]
    folder: Path = args.folder.resolve()
    if args.what != "again":
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        (folder / "keysync-config.yaml").write_text("{}\n")
    os.chdir(folder)
    config = load_config(folder / "keysync-config.yaml")
    setup_logging(level="info", log_file=config.log_file, quiet=True)
    code = runner.__file__.split("/keysync/")[0]
    started, cpu = time.perf_counter(), time.process_time()
    if args.what == "simulate":
        from keysync.simulate import simulate

        simulate(config, scenario="recovery", days=30)
    elif args.what == "runs":
        from keysync.mockdata import generate

        for i in range(1, args.runs + 1):
            generate(config, keys=args.keys, seed=i)
            at = time.perf_counter()
            runner.run(config, runner.RunOptions(auto_approve=i % 3 == 0))
            wall, audit_cpu = _spent[-1]
            print(
                f"{code} run {i}: rows {_rows(folder)}, audit log wall {wall:.3f}s"
                f" cpu {audit_cpu:.3f}s, run wall {time.perf_counter() - at:.2f}s, load {_load()}",
                flush=True,
            )
    else:
        runner.run(config, runner.RunOptions(mode="incremental"))
        print(f"{code}: rows {_rows(folder)}", flush=True)
    print(
        f"{code} {args.what}: {len(_spent)} audit log writes, wall"
        f" {sum(w for w, _ in _spent):.3f}s cpu {sum(c for _, c in _spent):.3f}s;"
        f" whole: wall {time.perf_counter() - started:.2f}s, parent cpu"
        f" {time.process_time() - cpu:.2f}s; load {_load()}",
        flush=True,
    )


if __name__ == "__main__":
    main()
