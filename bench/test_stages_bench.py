"""Benchmarks of the stages on real mock data: normalization, the reader, the merger.

    pip install -e '.[bench]'
    pytest bench/test_stages_bench.py --benchmark-enable --benchmark-columns=min,median,max

Each benchmark records its unit cost in ``extra_info`` (µs a key, rows a second,
µs a row), printed by ``--benchmark-verbose`` and kept by ``--benchmark-json``.
Inputs: ``keysync generate --keys 100000`` (seed 42), system B: ~103k rows, a
third with a quoted name, ~30 % messy keys, ~3 % non-ASCII keys, 1 % corrupt.
Without ``--benchmark-enable`` every benchmark runs once, as a smoke test.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from keysync.config import NormalizeConfig, SourceConfig
from keysync.messages import KeyBatch
from keysync.normalization import compile_rules
from keysync.stages.merger import KeyIndex
from keysync.stages.normalizer import normalize_batch
from keysync.stages.reader import read_batches

KEYS = 100_000
BATCH = 1000


@pytest.fixture(scope="module")
def inputs(mock_inputs: Callable[[int], Path]) -> Path:
    return mock_inputs(KEYS)


def _source(inputs: Path, system: str) -> SourceConfig:
    return SourceConfig(type="csv", path=str(inputs / f"{system}.csv"))


def _raw_batches(inputs: Path, system: str = "B") -> list[list[str]]:
    path = inputs / f"{system}.csv"
    return [b.raw_keys for b in read_batches(system, path, _source(inputs, system), BATCH)]


def _per(benchmark: Any, count: int, unit: str, scale: float) -> None:
    """Record the median cost per item (``scale`` turns seconds into ``unit``)."""
    median = benchmark.stats.stats.median if benchmark.stats else None
    if median:
        benchmark.extra_info[unit] = round(median / count * scale, 4)


def test_normalize_messy_batches(benchmark: Any, inputs: Path) -> None:
    """Raw keys as read (messy, some non-ASCII), batch by batch: µs a key."""
    batches = _raw_batches(inputs)
    normalizer = compile_rules(NormalizeConfig())
    keys = benchmark(lambda: [normalizer.normalize_many(b) for b in batches])
    assert sum(map(len, keys)) == sum(map(len, batches))
    _per(benchmark, sum(map(len, batches)), "us_per_key", 1e6)


def test_normalize_normal_batches(benchmark: Any, inputs: Path) -> None:
    """Keys already in normal form (the fast path: the batch comes back as it is)."""
    normalizer = compile_rules(NormalizeConfig())
    batches = [[k for k in normalizer.normalize_many(b) if k] for b in _raw_batches(inputs)]
    out = benchmark(lambda: [normalizer.normalize_many(b) for b in batches])
    assert out == batches
    _per(benchmark, sum(map(len, batches)), "us_per_key", 1e6)


def test_normalize_one_messy_key_at_a_time(benchmark: Any, inputs: Path) -> None:
    """``normalize`` per key, the path a batch falls back to (non-ASCII keys)."""
    normalizer = compile_rules(NormalizeConfig())
    raws = [k for b in _raw_batches(inputs) for k in b if normalizer.normalize(k) != k][:20_000]
    benchmark(lambda: [normalizer.normalize(k) for k in raws])
    _per(benchmark, len(raws), "us_per_key", 1e6)


def test_reader_rows_per_second(benchmark: Any, inputs: Path) -> None:
    """``read_batches`` over B.csv (parse, split cells, capture row errors)."""
    path, source = inputs / "B.csv", _source(inputs, "B")
    rows = benchmark(lambda: sum(b.rows_read for b in read_batches("B", path, source, BATCH)))
    assert rows > KEYS
    median = benchmark.stats.stats.median if benchmark.stats else None
    if median:
        benchmark.extra_info["rows_per_s"] = round(rows / median)


def test_reader_and_normalizer_rows_per_second(benchmark: Any, inputs: Path) -> None:
    """What one reader process does with ``workers: null``: read, then normalize."""
    path, source = inputs / "B.csv", _source(inputs, "B")
    normalizer = compile_rules(NormalizeConfig())

    def read_and_normalize() -> int:
        return sum(
            normalize_batch(b, normalizer, 256).rows_read
            for b in read_batches("B", path, source, BATCH)
        )

    rows = benchmark(read_and_normalize)
    median = benchmark.stats.stats.median if benchmark.stats else None
    if median:
        benchmark.extra_info["rows_per_s"] = round(rows / median)


def test_merger_five_systems(benchmark: Any, inputs: Path) -> None:
    """``KeyIndex.add`` of every normalized batch of A..E, then ``finish`` (the parent's work)."""
    normalizer = compile_rules(NormalizeConfig())
    batches: list[KeyBatch] = []
    for system in "ABCDE":
        path, source = inputs / f"{system}.csv", _source(inputs, system)
        batches.extend(
            normalize_batch(b, normalizer, 256) for b in read_batches(system, path, source, BATCH)
        )

    def merge() -> KeyIndex:
        index = KeyIndex("ABCDE")
        for batch in batches:
            index.add(batch)
        for system in "ABCDE":
            index.finish(system)  # as when each source ends: first rows of repeated keys
        return index

    index = benchmark.pedantic(merge, rounds=5, iterations=1)
    assert all(len(index[s]) > 0.8 * KEYS for s in "ABCDE")
    _per(benchmark, sum(b.rows_read for b in batches), "us_per_row", 1e6)
