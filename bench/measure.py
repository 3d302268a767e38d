"""Time a whole command and sample the memory of its whole process tree.

``/usr/bin/time -v`` reports the peak RSS of one process; a keysync run is a
parent, a forkserver and its children (readers, workers). This samples every
process of the tree every ``interval`` seconds with psutil and keeps the peak
of the *sum*: of RSS (counts shared library pages once per process, an upper
bound) and of PSS (shared pages split between the processes that map them,
the honest "all processes together"; read from smaps, so sampled less often).

Used by ``compare_duckdb.py``, ``scaling.py`` and ``whole_run.py``; works from
the command line too::

    python bench/measure.py -- keysync -q run
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass
class Measured:
    """Wall time and peak memory of one command (MiB, summed over its process tree)."""

    wall_s: float
    peak_rss_mib: float
    peak_pss_mib: float
    peak_processes: int
    returncode: int
    stderr: str = ""
    cpu_s: float = 0.0  # user + system seconds of every process of the tree (last sample)


class TreeSampler:
    """Samples the summed RSS/PSS of a process and all its descendants in a thread."""

    def __init__(self, pid: int, interval: float = 0.05, pss_every: int = 4) -> None:
        self.pid = pid
        self.interval = interval
        self.pss_every = pss_every
        self.peak_rss = 0
        self.peak_pss = 0
        self.peak_processes = 0
        self.cpu: dict[int, float] = {}  # pid -> user + system seconds at its last sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def _run(self) -> None:
        tick = 0
        while not self._stop.is_set():
            processes = self._tree()
            rss = pss = 0
            want_pss = tick % self.pss_every == 0
            for process in processes:
                try:
                    if want_pss:
                        info = process.memory_full_info()
                        rss += info.rss
                        pss += info.pss
                    else:
                        rss += process.memory_info().rss
                    times = process.cpu_times()
                    self.cpu[process.pid] = times.user + times.system
                except psutil.Error:
                    continue
            self.peak_rss = max(self.peak_rss, rss)
            if want_pss:
                self.peak_pss = max(self.peak_pss, pss)
            self.peak_processes = max(self.peak_processes, len(processes))
            tick += 1
            self._stop.wait(self.interval)


def run_measured(
    command: Sequence[str],
    *,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    sample: bool = True,
) -> Measured:
    """Run ``command`` to its end; wall time from spawn to exit, peak memory of its tree.

    Sampling is not free: reading ``smaps`` of a 1.5 GB process tree five times a
    second took ~1 s of CPU from a 15 s keysync run on 2 cores (~7 % of its wall
    time, measured alternately). With ``sample=False`` nothing is sampled and the
    memory and CPU figures are 0 (``getrusage`` would miss the children of a
    multiprocessing forkserver, which we do not reap). Time with
    ``sample=False``; take memory and CPU from separate sampled runs.
    """
    started = time.perf_counter()
    process = subprocess.Popen(
        list(command),
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    sampler = TreeSampler(process.pid)
    if sample:
        sampler.start()
    _, stderr = process.communicate()
    wall = time.perf_counter() - started
    if sample:
        sampler.stop()
    if check and process.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(command)} exited {process.returncode}:\n{stderr[-2000:]}")
    mib = 1024 * 1024
    return Measured(
        wall,
        sampler.peak_rss / mib,
        sampler.peak_pss / mib,
        sampler.peak_processes,
        process.returncode,
        stderr,
        sum(sampler.cpu.values()),
    )


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} {five:.1f} {fifteen:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = [c for c in args.command if c != "--"] or parser.error("no command given")
    result = run_measured(command, check=False)
    print(
        f"wall {result.wall_s:.2f} s, peak RSS (sum) {result.peak_rss_mib:.0f} MiB, "
        f"peak PSS (sum) {result.peak_pss_mib:.0f} MiB, {result.peak_processes} processes, "
        f"CPU {result.cpu_s:.1f} s (sampled), "
        f"exit {result.returncode}, load {load_average()}"
    )
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
