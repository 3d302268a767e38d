"""The merger of two trees on the same real batches: a saved checkpoint's frames, replayed.

Decodes every frame of one checkpoint folder once, then applies all its batches
with ``KeyIndex.add`` of this tree and of ``--baseline``'s (another checkout's
``keysync/stages/merger.py``), alternately, GC off, and checks that both built
the same index. To get a checkpoint of a large run, stop one with
``KEYSYNC_TEST_PAUSE_AT=reading:<rows>`` and ``kill -9`` it (bench/resume_bench.py).

    python bench/merger_replay_ab.py --checkpoint checkpoints/<run_id> --baseline /tmp/base
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import msgspec

from keysync import checkpoint
from keysync.checkpoint import _FRAME, Frame
from keysync.stages.merger import KeyIndex


def contents(keys: Any) -> tuple[Any, ...]:
    """First lines, timestamps, raw forms, repeats and rows read, from either tree's index.

    Before the index was built on first use, ``SystemKeys`` held the first three as dicts.
    """
    if hasattr(keys, "as_dicts"):
        return (*keys.as_dicts(), keys.repeats, keys.rows_read)
    return (dict(keys.first_line), keys.timestamps, keys.raw_forms, keys.repeats, keys.rows_read)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--baseline", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    path = args.baseline / "keysync" / "stages" / "merger.py"
    spec = importlib.util.spec_from_file_location("baseline_merger", path)
    assert spec and spec.loader
    baseline = importlib.util.module_from_spec(spec)
    sys.modules["baseline_merger"] = baseline
    spec.loader.exec_module(baseline)
    gc.disable()
    data = (args.checkpoint / checkpoint.LOG_FILE).read_bytes()
    decoder = msgspec.msgpack.Decoder(Frame)
    batches, position = [], 0
    while position + _FRAME.size <= len(data):
        length, crc = _FRAME.unpack_from(data, position)
        payload = data[position + _FRAME.size : position + _FRAME.size + length]
        if len(payload) != length or zlib.crc32(payload) != crc:
            break
        batches += decoder.decode(payload).batches
        position += _FRAME.size + length
    systems = checkpoint.read_header(args.checkpoint).systems
    built = {}
    for _ in range(args.rounds):
        for name, make in (("baseline", baseline.KeyIndex), ("this tree", KeyIndex)):
            index = make(systems)
            started = time.perf_counter()
            for batch in batches:
                index.add(batch)
            for keys in index.systems.values():
                keys.keys()  # this tree builds each index on first use: time that too
            print(f"{name:>9}: {time.perf_counter() - started:.2f} s", flush=True)
            built[name] = index
    for system in systems:
        a, b = built["baseline"].systems[system], built["this tree"].systems[system]
        assert contents(a) == contents(b), system
    print(f"identical index from {sum(len(b.keys) for b in batches):,} rows")


if __name__ == "__main__":
    main()
