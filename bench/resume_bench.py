"""Resume after ``kill -9`` at ~80 %, and the cost of checkpoints, on 5 x N keys.

Resume: starts ``keysync run`` with ``KEYSYNC_TEST_PAUSE_AT=reading:<80 % of the
rows>`` (keysync/testhooks.py: the run stops there, its checkpoint flushed),
kills the whole process group with SIGKILL, then times ``keysync run --resume``
and reads ``resume_s`` (process start to rows flowing again) from the
``run.resumed`` event of the JSON log.

Checkpoint overhead: ``--overhead`` times, alternately, ``keysync run`` with the
default ``checkpoint_interval: 5000`` and with 10**9 (no checkpoint until the end).

    python bench/resume_bench.py --workdir /tmp/keysync-bench --keys 1000000 --overhead 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_duckdb import clean_env as _clean_env
from compare_duckdb import generate, imported_from, write_config
from measure import load_average, run_measured

PYTHONPATH: list[str] = []  # --pythonpath: time another checkout's keysync


def clean_env() -> dict[str, str]:
    return _clean_env(PYTHONPATH[0] if PYTHONPATH else None)


def rows_in(inputs: Path) -> int:
    """Data records of A..E, roughly (lines minus headers): enough to aim at 80 %."""
    total = 0
    for system in "ABCDE":
        with open(inputs / f"{system}.csv", "rb") as handle:
            total += sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
        total -= 1
    return total


def events(log_file: Path, name: str) -> list[dict[str, object]]:
    if not log_file.exists():
        return []
    found = []
    for line in log_file.read_text(errors="replace").splitlines():
        if f'"{name}"' in line:
            found.append(json.loads(line))
    return found


def resume_once(folder: Path, fraction: float) -> dict[str, float]:
    """One kill -9 at ``fraction`` of the rows and one ``--resume``; the figures."""
    config = write_config(folder, "resume", {})
    home = config.parent
    for name in ("data", "output", "checkpoints"):
        shutil.rmtree(home / name, ignore_errors=True)
    log_file = home / "data" / "logs" / "keysync.jsonl"
    pause_at = int(rows_in(folder / "input") * fraction)
    env = clean_env()
    env["KEYSYNC_TEST_PAUSE_AT"] = f"reading:{pause_at}"
    command = [sys.executable, "-m", "keysync", "-q", "-c", str(config), "run"]
    started = time.perf_counter()
    first = subprocess.Popen(
        command,
        env=env,
        cwd=home,  # not a checkout: `python -m` would import it first (compare_duckdb.py)
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    while not events(log_file, "run.paused_for_tests"):
        if first.poll() is not None:
            raise RuntimeError(f"the run ended before pausing: {first.stderr.read()[-2000:]!r}")
        time.sleep(0.2)
    to_pause = time.perf_counter() - started
    os.killpg(first.pid, signal.SIGKILL)  # kill -9 of the whole process group
    first.wait()
    checkpoint_bytes = sum(
        p.stat().st_size for p in (home / "checkpoints").rglob("*") if p.is_file()
    )
    resumed = run_measured([*command, "--resume"], env=clean_env(), cwd=home)
    (event,) = events(log_file, "run.resumed")
    return {
        "paused_at_rows": float(pause_at),
        "first_run_to_pause_s": to_pause,
        "checkpoint_mib": checkpoint_bytes / 2**20,
        "resume_s": float(event["resume_s"]),  # type: ignore[arg-type]
        "replay_s": float(event.get("replay_s", 0.0)),  # type: ignore[arg-type]
        "resumed_run_wall_s": resumed.wall_s,
        "resumed_run_peak_pss_mib": resumed.peak_pss_mib,
    }


def overhead(folder: Path, rounds: int) -> None:
    contenders = {
        "interval 5000": write_config(folder, "ckpt-5000", {}),
        "interval 10**9": write_config(
            folder, "ckpt-huge", {"processing.checkpoint_interval": 10**9}
        ),
    }
    walls: dict[str, list[float]] = {name: [] for name in contenders}
    for round_number in range(rounds):
        names = list(contenders) if round_number % 2 == 0 else list(contenders)[::-1]
        for name in names:
            home = contenders[name].parent
            for sub in ("data", "output", "checkpoints"):
                shutil.rmtree(home / sub, ignore_errors=True)
            load = load_average()
            command = [sys.executable, "-m", "keysync", "-q", "-c", str(contenders[name]), "run"]
            result = run_measured(command, env=clean_env(), cwd=home)
            walls[name].append(result.wall_s)
            print(f"round {round_number + 1} {name:>15}: {result.wall_s:6.2f} s (load {load})")
    default, huge = walls["interval 5000"], walls["interval 10**9"]
    ratios = [a / b for a, b in zip(default, huge)]
    print(
        f"checkpoint overhead: median wall {statistics.median(default):.2f} s vs "
        f"{statistics.median(huge):.2f} s; ratio per round "
        f"{', '.join(f'{r:.3f}' for r in ratios)}; median {statistics.median(ratios):.3f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--fraction", type=float, default=0.8, help="where to kill (of rows)")
    parser.add_argument("--resumes", type=int, default=3, help="kill + resume cycles")
    parser.add_argument("--overhead", type=int, default=0, help="rounds of the overhead test")
    parser.add_argument("--pythonpath", help="PYTHONPATH of the keysync to time")
    args = parser.parse_args(argv)
    if args.pythonpath:
        PYTHONPATH.append(args.pythonpath)
    folder = args.workdir
    keys_file = folder / "input" / ".keys"
    if not keys_file.exists() or keys_file.read_text() != str(args.keys):
        generate(folder, args.keys)
        keys_file.write_text(str(args.keys))
    print(f"keysync from {imported_from(clean_env(), folder / 'input')}", flush=True)
    for attempt in range(args.resumes):
        figures = resume_once(folder, args.fraction)
        shown = ", ".join(
            f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items()
        )
        print(f"resume {attempt + 1} (load {load_average()}): {shown}", flush=True)
    if args.overhead:
        overhead(folder, args.overhead)
    return 0


if __name__ == "__main__":
    sys.exit(main())
