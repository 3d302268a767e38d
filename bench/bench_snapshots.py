"""The snapshot work after a full run, in isolation: what ``Snapshots.prepare`` costs.

Reads every source of a config once through the real pipeline (as a full run
does), then times, per source and ``--rounds`` times, ``Snapshots._from_index``
(since 2026-12-01: hash the file, take the index state; before: read the file
again and derive per-line columns) and the msgpack encoding (what the run's
``snapshots`` thread does). It prints wall and CPU time and a SHA-256 of every
encoded snapshot; run it with ``PYTHONPATH=<other checkout>`` to compare trees::

    PYTHONHASHSEED=0 .venv/bin/python bench/bench_snapshots.py -c /tmp/inc/keysync-config.yaml
    PYTHONHASHSEED=0 PYTHONPATH=/tmp/base .venv/bin/python bench/bench_snapshots.py -c ...

``--profile`` prints a cProfile of one snapshot.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import pstats
import statistics
import time
from pathlib import Path

import msgspec

from keysync.checkpoint import fingerprint
from keysync.config import load_config
from keysync.incremental import Snapshots
from keysync.pipeline import Pipeline, SourceJob
from keysync.stages.merger import KeyIndex


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", type=Path, default=Path("keysync-config.yaml"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--dump", type=Path, help="write each encoded snapshot into this folder")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    systems = list(config.sources)
    index = KeyIndex(systems)
    jobs = [SourceJob(s, config.source_path(s), config.sources[s]) for s in systems]
    started = time.perf_counter()
    Pipeline(config, jobs, index=index).run()
    print(f"read: {time.perf_counter() - started:.2f} s", flush=True)
    snapshots = Snapshots(config, "bench")
    for system in systems:
        prints = fingerprint(system, config.source_path(system))
        build_s, cpu_s, digest = [], [], ""
        for _ in range(args.rounds):
            cpu, wall = time.process_time(), time.perf_counter()
            snapshot = snapshots._from_index(system, index[system], prints)
            assert not isinstance(snapshot, str), snapshot
            data = msgspec.msgpack.encode(snapshot)
            build_s.append(time.perf_counter() - wall)
            cpu_s.append(time.process_time() - cpu)
            del snapshot
            digest = hashlib.sha256(data).hexdigest()[:16]
            if args.dump:
                args.dump.mkdir(parents=True, exist_ok=True)
                (args.dump / f"{system}.msgpack").write_bytes(data)
            del data
        print(
            f"{system}: snapshot + encode {statistics.median(build_s):.3f} s wall, "
            f"{statistics.median(cpu_s):.3f} s CPU (medians of {args.rounds}), sha256 {digest}",
            flush=True,
        )
    if args.profile:
        system = systems[0]
        prints = fingerprint(system, config.source_path(system))
        profile = cProfile.Profile()
        profile.runcall(snapshots._from_index, system, index[system], prints)
        pstats.Stats(profile).sort_stats("tottime").print_stats(15)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
