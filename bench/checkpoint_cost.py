"""What checkpoints cost the read: the pipeline with and without a checkpoint writer.

``resume_bench.py --overhead`` compares the default interval with 10**9, but a
10**9 run keeps every batch and encodes one frame of all rows at the end, so
it is no baseline. This runs the real read phase (``Pipeline.run()``, GC off)
alternately with no checkpoint at all and with a ``CheckpointWriter`` at
``processing.checkpoint_interval`` taking every batch (flushed at the end, as
a run does), and prints the wall times and their ratio.

    python bench/checkpoint_cost.py -c /tmp/kb/keysync/keysync-config.yaml --rounds 3
"""

from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from common import read_index

from keysync.checkpoint import CheckpointWriter
from keysync.config import Config, load_config
from keysync.messages import KeyBatch
from keysync.pipeline import PipelineObserver


class _Checkpointing(PipelineObserver):
    def __init__(self, writer: CheckpointWriter) -> None:
        self.writer = writer

    def batch_applied(self, batch: KeyBatch) -> None:
        self.writer.add(batch)


def read(config: Config, checkpoints: bool) -> float:
    folder = Path(tempfile.mkdtemp(prefix="keysync-ckpt-"))
    started = time.perf_counter()
    try:
        if checkpoints:
            writer = CheckpointWriter(folder, None, config.processing.checkpoint_interval)
            read_index(config, _Checkpointing(writer))
            writer.flush()
            writer.close()
        else:
            read_index(config)
        return time.perf_counter() - started
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    config = load_config(args.config)
    gc.disable()
    walls: dict[bool, list[float]] = {False: [], True: []}
    for round_number in range(args.rounds):
        order = (False, True) if round_number % 2 == 0 else (True, False)
        for checkpoints in order:
            walls[checkpoints].append(read(config, checkpoints))
            gc.collect()
            name = "with checkpoints" if checkpoints else "without"
            seconds = walls[checkpoints][-1]
            print(f"round {round_number + 1} {name:>16}: {seconds:.2f} s", flush=True)
    ratio = statistics.median(walls[True]) / statistics.median(walls[False])
    print(
        f"read phase: median {statistics.median(walls[True]):.2f} s with checkpoints every "
        f"{config.processing.checkpoint_interval} rows, {statistics.median(walls[False]):.2f} s "
        f"without: ratio {ratio:.3f}"
    )


if __name__ == "__main__":
    main()
