"""Side by side: ``keysync run`` against the DuckDB reference, alternating, in one run.

Generates 5 x N keys with ``keysync generate`` (once), then times, round after
round and in alternating order, whole processes:

- ``keysync``: ``python -m keysync -q run`` on a fresh state (no registry, no
  checkpoint, no reports: every round is a first run);
- ``duckdb``: ``bench/duckdb_reference.py`` on the same files;
- optionally ``--baseline DIR``: the same ``keysync run`` with ``PYTHONPATH=DIR``
  (an older checkout's ``keysync`` package: before/after in the same run);
- optionally ``--variant NAME:key.path=value,...``: ``keysync run`` with config
  overrides (``--variant big-interval:processing.checkpoint_interval=1000000000``).

Peak memory is summed over each command's whole process tree (``measure.py``).
Sampling it costs CPU (~7 % of a keysync run's wall time on 2 cores), so the
first ``--memory-rounds`` rounds (default 1) sample memory and the others only
time: the medians and ratios come from the timed rounds alone (from every round
if there are no others). The machine is shared, so only same-run ratios mean
much; the load average is printed with every round. Prints the median wall time
of each contender and the ratio keysync / duckdb per round and overall (<= 1.0:
keysync is faster).

    pip install -e '.[bench]'
    python bench/compare_duckdb.py --keys 1000000 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import Measured, load_average, run_measured

BENCH = Path(__file__).resolve().parent


@dataclass
class Contender:
    name: str
    command: list[str]
    env: dict[str, str]
    fresh: list[Path] = field(default_factory=list)  # folders emptied before each round
    results: list[Measured] = field(default_factory=list)
    # Run from the contender's own folder: `python -m` puts the working directory first on
    # sys.path, so from a checkout it would import that checkout, whatever PYTHONPATH says.
    cwd: Path | None = None


def imported_from(env: dict[str, str], cwd: Path) -> str:
    """Where the keysync that ``env`` and ``cwd`` give a subprocess is imported from."""
    done = subprocess.run(
        [sys.executable, "-c", "import keysync; print(keysync.__file__)"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return str(Path(done.stdout.strip()).parent.parent)


def clean_env(pythonpath: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSYNC_")}
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


def set_path(config: dict[str, Any], dotted: str, value: Any) -> None:
    node = config
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def write_config(folder: Path, name: str, overrides: dict[str, Any]) -> Path:
    """A config whose input is the shared ``input/`` and whose state is its own folder."""
    config: dict[str, Any] = {
        "simulation": {"seed": 42},
        "sources": {s: {"type": "csv", "path": f"../input/{s}.csv"} for s in "ABCDE"},
        "paths": {"output": "./output", "data": "./data", "checkpoints": "./checkpoints"},
        "logging": {"file": "./data/logs/keysync.jsonl"},
    }
    for dotted, value in overrides.items():
        set_path(config, dotted, value)
    home = folder / name
    home.mkdir(parents=True, exist_ok=True)
    path = home / "keysync-config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def generate(folder: Path, keys: int) -> None:
    """``keysync generate`` into ``folder/input`` (the config's sources point there)."""
    config = write_config(folder, "generate", {})
    subprocess.run(
        [sys.executable, "-m", "keysync", "-q", "-c", str(config), "generate", "--keys", str(keys)],
        check=True,
        env=clean_env(),
    )


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    name, _, assignments = text.partition(":")
    overrides: dict[str, Any] = {}
    for item in filter(None, assignments.split(",")):
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    return name, overrides


def keysync_contender(
    folder: Path, name: str, overrides: dict[str, Any], pythonpath: str | None = None
) -> Contender:
    config = write_config(folder, name, overrides)
    home = config.parent
    env = clean_env(pythonpath)
    tree = imported_from(env, home)
    if pythonpath and Path(tree).resolve() != Path(pythonpath).resolve():
        raise SystemExit(f"{name}: keysync is imported from {tree}, not from {pythonpath}")
    print(f"{name:>12}: keysync from {tree}")
    return Contender(
        name,
        [sys.executable, "-m", "keysync", "-q", "-c", str(config), "run"],
        env,
        [home / "data", home / "output", home / "checkpoints"],
        cwd=home,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys per system")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, help="reuse this folder (keeps generated input)")
    parser.add_argument("--baseline", help="PYTHONPATH of an older keysync to time alongside")
    parser.add_argument("--pythonpath", help="PYTHONPATH of the keysync to time (default: this)")
    parser.add_argument("--variant", action="append", default=[], help="NAME:key.path=value,...")
    parser.add_argument("--no-duckdb", action="store_true", help="time keysync contenders only")
    parser.add_argument("--duckdb-threads", type=int, default=None)
    parser.add_argument(
        "--memory-rounds", type=int, default=1, help="first rounds that sample memory"
    )
    args = parser.parse_args(argv)

    folder = args.workdir or Path(tempfile.mkdtemp(prefix="keysync-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "input" / "A.csv").exists() or _keys_of(folder) != args.keys:
        print(f"generating 5 x {args.keys:,} keys in {folder}/input ...", flush=True)
        generate(folder, args.keys)
        (folder / "input" / ".keys").write_text(str(args.keys))

    contenders = [keysync_contender(folder, "keysync", {}, args.pythonpath)]
    if args.baseline:
        contenders.append(keysync_contender(folder, "baseline", {}, args.baseline))
    for variant in args.variant:
        name, overrides = parse_variant(variant)
        contenders.append(keysync_contender(folder, name, overrides, args.pythonpath))
    if not args.no_duckdb:
        reference = write_config(folder, "duckdb", {})
        command = [sys.executable, str(BENCH / "duckdb_reference.py"), "-c", str(reference)]
        command += ["--out", str(reference.parent / "output")]
        if args.duckdb_threads:
            command += ["--threads", str(args.duckdb_threads)]
        contenders.append(Contender("duckdb", command, clean_env(), [reference.parent / "output"]))

    for round_number in range(args.rounds):
        # Alternate the order so that neither side always runs first (or always after a
        # run that left the page cache warm).
        order = contenders if round_number % 2 == 0 else contenders[::-1]
        for contender in order:
            for path in contender.fresh:
                shutil.rmtree(path, ignore_errors=True)
            load = load_average()
            sampled = round_number < args.memory_rounds
            result = run_measured(
                contender.command, env=contender.env, cwd=contender.cwd, sample=sampled
            )
            contender.results.append(result)
            if sampled:
                detail = (
                    f"peak RSS {result.peak_rss_mib:6.0f} MiB  PSS {result.peak_pss_mib:6.0f} MiB  "
                    f"CPU {result.cpu_s:5.1f} s  ({result.peak_processes} procs, load {load})"
                )
            else:
                detail = f"timed only, no sampling  (load {load})"
            print(
                f"round {round_number + 1} {contender.name:>12}: {result.wall_s:7.2f} s  {detail}",
                flush=True,
            )
    # Medians and ratios from the timed rounds; from every round if all were sampled.
    first_timed = args.memory_rounds if args.rounds > args.memory_rounds else 0
    print()
    print(
        f"5 x {args.keys:,} keys, {args.rounds} rounds, "
        f"medians of the {args.rounds - first_timed} timed:"
    )
    for contender in contenders:
        walls = [r.wall_s for r in contender.results[first_timed:]]
        sampled_results = contender.results[: args.memory_rounds]
        pss = max((r.peak_pss_mib for r in sampled_results), default=0.0)
        rss = max((r.peak_rss_mib for r in sampled_results), default=0.0)
        print(
            f"  {contender.name:>12}: {statistics.median(walls):7.2f} s "
            f"(min {min(walls):.2f}, max {max(walls):.2f}), "
            f"peak PSS {pss:.0f} MiB, RSS {rss:.0f} MiB"
        )
    base = contenders[0]
    for other in contenders[1:]:
        pairs = zip(base.results[first_timed:], other.results[first_timed:])
        ratios = [a.wall_s / b.wall_s for a, b in pairs]
        print(
            f"  ratio keysync / {other.name}: median {statistics.median(ratios):.2f} "
            f"(per round: {', '.join(f'{r:.2f}' for r in ratios)})"
        )
    return 0


def _keys_of(folder: Path) -> int | None:
    try:
        return int((folder / "input" / ".keys").read_text())
    except (OSError, ValueError):
        return None


if __name__ == "__main__":
    sys.exit(main())
