"""Incremental vs full, whole process, side by side: ``run --mode incremental`` vs ``run``.

Usage (from the repository root)::

    .venv/bin/python bench/bench_incremental.py --keys 100000 --rounds 5
    .venv/bin/python bench/bench_incremental.py --keys 1000000 --rounds 3
    .venv/bin/python bench/bench_incremental.py --keys 1000000 --rounds 3 --systems B

It generates one mock data set, copies it into two folders with their own
config, state and output (``full/`` and ``incremental/``) and runs both once to
set up the registry and the snapshots. Then, each round, it changes the same
share of lines in both folders' inputs (``--changed``, default 4 %: new
``last_seen_at`` values, rows removed, new rows, a few moved rows) of every file, or
of the ``--systems`` given only (a day when one peer's export changed), and times
one whole ``keysync`` process in each folder, alternating which goes first so
that a busy machine hurts both alike. It checks that both runs wrote the same
report rows, then prints every time, the medians and their ratio.
"""

from __future__ import annotations

import argparse
import csv
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

SYSTEMS = "ABCDE"
# Columns that differ between any two runs (clock) or between the two folders (file).
IGNORED = {"missing_since", "created_at", "updated_at", "created_run", "updated_run", "file"}
REPORTS = (
    "reconciliation_summary.csv",
    "diff_missing_in_A.csv",
    "diff_missing_from_system.csv",
    "duplicates.csv",
    "rejected_rows.csv",
    "master_key_registry.csv",
)
STAMP = re.compile(rb",(\d{4})-(\d\d)-(\d\d)T(\d\d:\d\d:\d\d)Z\r?$")


def keysync(folder: Path, *args: str) -> float:
    """Run one keysync process in ``folder``; returns its wall time in seconds."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "keysync", "-q", *args],
        cwd=folder,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def mutate(data: bytes, share: float, seed: int) -> bytes:
    """Change ``share`` of the data lines: 70 % new timestamps; 10 % removed, new, copied each."""
    rng = random.Random(seed)
    header, _, body = data.partition(b"\n")
    lines = body.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    chosen = rng.sample(range(len(lines)), int(len(lines) * share))
    cut = len(chosen) // 10
    removed = set(chosen[:cut])
    copied = [lines[i] for i in chosen[cut : 2 * cut]]  # duplicates, elsewhere
    stamp = f"2026-12-0{seed % 9 + 1}T06:00:00Z"
    added = [f"CUST-9{seed % 10}{n:05d},Added in round {seed},{stamp}".encode() for n in range(cut)]
    for i in chosen[2 * cut :]:
        lines[i] = STAMP.sub(
            lambda m: b",%s-%s-%02dT%sZ" % (m[1], m[2], (int(m[3]) + seed) % 28 + 1, m[4]),
            lines[i],
        )
    kept = [line for i, line in enumerate(lines) if i not in removed]
    extra = [*copied, *added]
    places = sorted(rng.randrange(len(kept) + 1) for _ in extra)
    out, start = [], 0
    for place, line in zip(places, extra):
        out.extend(kept[start:place])
        out.append(line)
        start = place
    out.extend(kept[start:])
    return header + b"\n" + b"\n".join(out) + b"\n"


def report_rows(output: Path) -> dict[str, list[list[str]]]:
    rows = {}
    for name in REPORTS:
        with open(output / name, encoding="utf-8", newline="") as handle:
            lines = [line for line in handle if not line.startswith("#")]
        table = list(csv.reader(lines))
        keep = [i for i, column in enumerate(table[0]) if column not in IGNORED]
        rows[name] = [[row[i] for i in keep] for row in table]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--changed", type=float, default=0.04)
    parser.add_argument("--systems", default=SYSTEMS, help="whose files change (default: all)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/keysync-bench-incremental"))
    args = parser.parse_args()
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    folders = {"full": work / "full", "incremental": work / "incremental"}
    for folder in folders.values():
        (folder / "input").mkdir(parents=True)
        (folder / "keysync-config.yaml").write_text("{}\n")
    print(f"generating {len(SYSTEMS)} x {args.keys:,} keys ...", flush=True)
    keysync(folders["full"], "generate", "--keys", str(args.keys), "--seed", "7", "--out", "input")
    for system in SYSTEMS:
        shutil.copy(folders["full"] / f"input/{system}.csv", folders["incremental"] / "input")
    print("first run in both folders (registry, snapshots) ...", flush=True)
    keysync(folders["full"], "run")
    keysync(folders["incremental"], "run")
    times: dict[str, list[float]] = {"full": [], "incremental": []}
    for round_number in range(1, args.rounds + 1):
        for system in args.systems:
            path = folders["full"] / f"input/{system}.csv"
            changed = mutate(path.read_bytes(), args.changed, round_number * 10 + ord(system))
            for folder in folders.values():
                (folder / f"input/{system}.csv").write_bytes(changed)
        order = ["full", "incremental"] if round_number % 2 else ["incremental", "full"]
        for mode in order:
            extra = ["--mode", "incremental"] if mode == "incremental" else []
            times[mode].append(keysync(folders[mode], "run", *extra))
        same = report_rows(folders["full"] / "output") == report_rows(
            folders["incremental"] / "output"
        )
        print(
            f"round {round_number}: full {times['full'][-1]:.2f} s, "
            f"incremental {times['incremental'][-1]:.2f} s, "
            f"ratio {times['full'][-1] / times['incremental'][-1]:.1f}x, "
            f"reports {'equal' if same else 'DIFFER'}",
            flush=True,
        )
        if not same:
            sys.exit("the reports differ: incremental is wrong")
    full = statistics.median(times["full"])
    incremental = statistics.median(times["incremental"])
    print(
        f"{len(SYSTEMS)} x {args.keys:,} keys, {args.changed:.0%} of the lines of "
        f"{','.join(args.systems)} changed per round: "
        f"full median {full:.2f} s, incremental median {incremental:.2f} s, "
        f"ratio {full / incremental:.1f}x"
    )


if __name__ == "__main__":
    main()
