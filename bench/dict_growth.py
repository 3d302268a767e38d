"""How CPython's dicts and sets cost per key as they grow: the floor under keysync's scaling.

keysync's phases after 1M keys a system cost more per key at 3M (docs/performance.md,
"Session 11"). This times the same kind of work with nothing of keysync around it: a
dict of N shuffled keys built a batch at a time (``keys() & batch`` for the keys seen
before, then ``update``, as ``SystemKeys._index_batch`` does), then set differences
against another set of half of them and some others (as the comparison does).

    python bench/dict_growth.py 1000000 3000000
"""

from __future__ import annotations

import random
import sys
import time


def measure(n: int, batch: int = 5000) -> tuple[float, float]:
    """Nanoseconds a key: building the index, and the set algebra."""
    keys = [f"CUST-{i:08d}" for i in range(n)]
    random.Random(1).shuffle(keys)
    started = time.perf_counter()
    index: dict[str, int] = {}
    for start in range(0, n, batch):
        chunk = keys[start : start + batch]
        _ = index.keys() & chunk
        index.update(zip(chunk, range(start, start + batch)))
    built = time.perf_counter()
    other = set(keys[::2]) | {f"X-{i}" for i in range(n // 10)}
    compared_from = time.perf_counter()
    _ = other - index.keys()
    _ = index.keys() - other
    done = time.perf_counter()
    return (built - started) / n * 1e9, (done - compared_from) / n * 1e9


def main() -> None:
    for n in map(int, sys.argv[1:] or ["1000000", "3000000"]):
        build, algebra = measure(n)
        print(f"{n:>10,} keys: index {build:.0f} ns a key, set algebra {algebra:.0f} ns a key")


if __name__ == "__main__":
    main()
