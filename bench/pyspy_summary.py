"""Summarize a ``py-spy record --format raw`` profile: where the samples are.

py-spy's raw format is one line per distinct stack (``frame;frame;... count``).
This prints the processes, the top frames by self samples, and, with
``--under REGEX``, what the first frame matching REGEX calls (inclusive samples):
enough to see which phase of a run, and which line in it, holds the time.

    py-spy record --subprocesses --format raw -r 50 -o prof.txt -- keysync -q run
    python bench/pyspy_summary.py prof.txt
    python bench/pyspy_summary.py prof.txt --under '_Run._report_and_commit \\('
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--under", help="group by what the first frame matching this calls")
    args = parser.parse_args(argv)
    own: Counter[str] = Counter()
    processes: Counter[str] = Counter()
    under: Counter[tuple[str, str]] = Counter()
    pattern = re.compile(args.under) if args.under else None
    total = 0
    for line in args.profile.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = stack.split(";")
        processes[frames[0][:80]] += samples
        own[frames[-1]] += samples
        if pattern is None:
            continue
        for i, frame in enumerate(frames):
            if pattern.search(frame):
                callee = frames[i + 1] if i + 1 < len(frames) else "(self)"
                under[(frame, callee)] += samples
                break
    print(f"{total} samples")
    for name, samples in processes.most_common(10):
        print(f"{samples:8d}  {name}")
    if pattern is not None:
        print(f"--- under {args.under}")
        for (frame, callee), samples in under.most_common(args.top):
            print(f"{samples:8d}  {frame} -> {callee}")
        return 0
    print("--- self samples")
    for frame, samples in own.most_common(args.top):
        print(f"{samples:8d}  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
