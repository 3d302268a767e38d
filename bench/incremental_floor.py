"""The least any incremental run must spend, against a tenth of a full run, in one run.

Issue 6 asks an incremental run with under 5 % of rows changed to take at most a
tenth of a full run's wall time. Whatever its design, an incremental run must
start Python and import keysync, and for each changed source find which lines
are new. This script measures those two costs alone, with C-level builtins
only (read + SHA-256, split into lines, a dict of the previous lines, a probe of
every new line), on the same changed files ``bench_incremental.py`` makes, and
times full ``keysync run`` processes in the same folder, alternating. Nothing
else an incremental run does (parse the new lines, update the index, compare,
plan, report, commit) is counted, so the floor is an underestimate.

    python bench/incremental_floor.py --work /tmp/kbinc1m --rounds 3

Run it with ``PYTHONDONTWRITEBYTECODE`` unset, so that start-up reads compiled
modules as on a user's machine.

``--work`` is a folder made by ``bench_incremental.py`` (its ``full/`` subfolder
holds inputs, config and state that a full run has seen before).
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_incremental import SYSTEMS, keysync, mutate


def startup_seconds() -> float:
    """Wall time of a Python process that imports what every ``keysync run`` imports."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import keysync.cli, keysync.runner"], check=True)
    return time.perf_counter() - started


def changed_lines_cpu(previous: bytes, path: Path) -> tuple[float, int]:
    """CPU seconds to find the lines of ``path`` that are not in ``previous``; how many."""
    started = time.process_time()
    current = path.read_bytes()
    hashlib.sha256(current).digest()
    old_rows = dict(zip(previous.split(b"\n"), range(previous.count(b"\n") + 1)))
    found = list(map(old_rows.get, current.split(b"\n")))
    new = found.count(None)
    return time.process_time() - started, new


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--changed", type=float, default=0.04)
    args = parser.parse_args()
    folder = args.work / "full"
    fulls: list[float] = []
    floors: dict[str, list[float]] = {"one core": [], "two cores": []}
    for round_number in range(1, args.rounds + 1):
        detect, new_lines = 0.0, 0
        for system in SYSTEMS:
            path = folder / f"input/{system}.csv"
            previous = path.read_bytes()
            seed = 1000 + round_number * 10 + ord(system)
            path.write_bytes(mutate(previous, args.changed, seed))
            seconds, new = changed_lines_cpu(previous, path)
            detect, new_lines = detect + seconds, new_lines + new
        startup = startup_seconds()
        fulls.append(keysync(folder, "run"))
        floors["one core"].append(startup + detect)
        floors["two cores"].append(startup + detect / 2)  # split perfectly, at no cost
        print(
            f"round {round_number}: full run {fulls[-1]:.2f} s (a tenth: {fulls[-1] / 10:.3f} s); "
            f"start-up {startup:.3f} s + finding {new_lines:,} new lines {detect:.3f} s CPU",
            flush=True,
        )
    full = statistics.median(fulls)
    for cores, values in floors.items():
        floor = statistics.median(values)
        print(f"median full {full:.2f} s, floor on {cores} {floor:.3f} s: {full / floor:.1f}x")


if __name__ == "__main__":
    main()
