"""Before/after of the stages in one process: this checkout against an older one.

Loads ``reader``, ``normalization``/``normalizer`` and ``merger`` from a
baseline checkout (``--baseline DIR``: a folder holding an older ``keysync/``)
next to this checkout's, and times both on the same mock file, alternately,
in CPU seconds (``time.process_time``: less disturbed by other processes than
wall time on a shared machine). Prints the best of ``--rounds`` per stage and
the ratio after / before, and checks that both give the same results.

    git archive <commit> keysync | tar -x -C /tmp/before
    python bench/ab_stages.py --baseline /tmp/before --input /tmp/keysync-bench/input
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from keysync.config import NormalizeConfig, SourceConfig
from keysync.messages import KeyBatch
from keysync.normalization import compile_rules
from keysync.stages import merger, normalizer, reader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from merger_replay_ab import contents


def load(baseline: Path, name: str) -> ModuleType:
    """``keysync.<name>`` as the baseline has it (its own imports resolve to this checkout)."""
    path = baseline / "keysync" / (name.replace(".", "/") + ".py")
    spec = importlib.util.spec_from_file_location(f"baseline_{name.replace('.', '_')}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def best_cpu(call: Callable[[], Any], rounds: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(rounds):
        started = time.process_time()
        result = call()
        best = min(best, time.process_time() - started)
    return best, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True)
    parser.add_argument("--input", type=Path, required=True, help="folder with A.csv..E.csv")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    old_reader = load(args.baseline, "stages.reader")
    old_normalization = load(args.baseline, "normalization")
    old_merger = load(args.baseline, "stages.merger")
    rules = NormalizeConfig()
    new_norm, old_norm = compile_rules(rules), old_normalization.compile_rules(rules)

    def source(system: str) -> SourceConfig:
        return SourceConfig(type="csv", path=str(args.input / f"{system}.csv"))

    path = args.input / "B.csv"
    rows = 0
    results: list[tuple[str, float, float, str]] = []

    def compare(
        label: str, unit: str, count: int, before: Callable[[], Any], after: Callable[[], Any]
    ) -> None:
        old_s = new_s = float("inf")
        old_out = new_out = None
        for _ in range(args.rounds):  # alternate, so load changes hit both
            s, old_out = best_cpu(before, 1)
            old_s = min(old_s, s)
            s, new_out = best_cpu(after, 1)
            new_s = min(new_s, s)
        same = "same output" if old_out == new_out else "OUTPUT DIFFERS"
        results.append((label, old_s / count * 1e6, new_s / count * 1e6, same))
        before_us, after_us = old_s / count * 1e6, new_s / count * 1e6
        print(
            f"{label:<34} before {before_us:7.3f} {unit}  after {after_us:7.3f} {unit}  "
            f"ratio {new_s / old_s:5.2f}  ({same})",
            flush=True,
        )

    def read(module: ModuleType) -> list[Any]:
        return [
            (b.raw_keys, b.lines, b.timestamps, b.rejected, b.end_offset)
            for b in module.read_batches("B", path, source("B"), 1000)
        ]

    raw = list(reader.read_batches("B", path, source("B"), 1000))
    rows = sum(b.rows_read for b in raw)
    compare("reader (B.csv)", "µs/row", rows, lambda: read(old_reader), lambda: read(reader))
    raw_keys = [b.raw_keys for b in raw]
    keys = sum(map(len, raw_keys))
    compare(
        "normalize_many, keys as read",
        "µs/key",
        keys,
        lambda: [old_norm.normalize_many(k) for k in raw_keys],
        lambda: [new_norm.normalize_many(k) for k in raw_keys],
    )
    normal = [[k for k in new_norm.normalize_many(b) if k] for b in raw_keys]
    compare(
        "normalize_many, keys already normal",
        "µs/key",
        keys,
        lambda: [old_norm.normalize_many(k) for k in normal],
        lambda: [new_norm.normalize_many(k) for k in normal],
    )
    batches: list[KeyBatch] = []
    for system in "ABCDE":
        for b in reader.read_batches(system, args.input / f"{system}.csv", source(system), 1000):
            batches.append(normalizer.normalize_batch(b, new_norm, 256))
    merged_rows = sum(b.rows_read for b in batches)

    def merge(module: ModuleType) -> Any:
        index = module.KeyIndex("ABCDE")
        for batch in batches:
            index.add(KeyBatch(**{f: getattr(batch, f) for f in batch.__struct_fields__}))
        return [contents(s) for s in index.systems.values()]

    if load(args.baseline, "messages").KeyBatch.__struct_fields__ != KeyBatch.__struct_fields__:
        # The baseline's merger reads another batch layout (before 2026-12-01: lines and
        # timestamps as lists); fed this one's, it would give wrong rows, not a figure.
        print("merger, 5 systems: skipped: the baseline's KeyBatch has other fields")
    else:
        compare(
            "merger, 5 systems",
            "µs/row",
            merged_rows,
            lambda: merge(old_merger),
            lambda: merge(merger),
        )
    return 0 if all(r[3] == "same output" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
