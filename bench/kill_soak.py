"""Random ``kill -9`` soak: a run, and every resume of it, killed at random moments, must
end with the reports of a run never killed.

Each round starts from the same inputs and state as a reference folder, runs keysync, and
with probability 0.8 kills the whole process group (SIGKILL) at a uniformly random moment
of the reference run's duration; then it runs ``--resume`` (which runs normally when there
is nothing to resume), killed in the same way, up to ``--max-kills`` times, until one
ends. The reports (all but ``audit_log.csv``, which lists the killed runs too) must equal
the reference's byte for byte, run ids, today's timestamps and the folder name aside.
``--mode incremental`` first runs a full run, then drops every 25th line of B and C and
adds 300 keys to each, so the killed incremental run has changed and unchanged sources.
``--mode unchanged`` runs the full run and changes nothing: the killed run is an
incremental one that reuses the full run's reports (keysync/replay.py).
``--set SETTING=VALUE`` (repeatable; VALUE read as YAML) changes the config of every
folder, the reference's too: ``--set processing.workers=2`` soaks the normalizer workers.

    python bench/kill_soak.py --workdir /tmp/soak --keys 50000 --rounds 40 --mode full
    python bench/kill_soak.py --workdir /tmp/soak --keys 50000 --rounds 40 --mode incremental
    python bench/kill_soak.py --workdir /tmp/soak --keys 50000 --rounds 40 --mode unchanged
    python bench/kill_soak.py --workdir /tmp/soak --rounds 40 --set processing.workers=2

A failed round's folder is kept as ``fail<round>`` for a look; the exit code is the number
of failed rounds (at most 100).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

RUN_ID = re.compile(rb"\d{8}T\d{6}Z-[0-9a-f]{4}")
TODAY = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z")
CONFIG = Path(__file__).resolve().parent.parent / "keysync-config.yaml"


def keysync(folder: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    command = [sys.executable, "-m", "keysync", "-q", *args]
    return subprocess.run(command, cwd=folder, capture_output=True, timeout=900)


def must(result: subprocess.CompletedProcess[bytes], *codes: int) -> None:
    if result.returncode not in codes:
        raise SystemExit(f"{result.args}: exit {result.returncode}: {result.stderr.decode()}")


def reports(folder: Path, since: bytes) -> dict[str, bytes]:
    """The reports, with what differs between any two runs (ids, this session's times,
    the folder) replaced: a time is replaced only if it is not before ``since``."""

    def stamp(found: re.Match[bytes]) -> bytes:
        return b"TIME" if found[0] >= since else found[0]

    return {
        path.name: TODAY.sub(stamp, RUN_ID.sub(b"RUN", path.read_bytes())).replace(
            str(folder).encode(), b"DIR"
        )
        for path in sorted((folder / "output").glob("*.csv"))
        if path.name != "audit_log.csv"
    }


def change_inputs(folder: Path) -> None:
    """Drop every 25th data line of B and C and add 300 new keys to each."""
    for name in ("B", "C"):
        path = folder / "input" / f"{name}.csv"
        lines = path.read_bytes().split(b"\n")
        kept = [line for i, line in enumerate(lines[:-1]) if i == 0 or i % 25]
        kept += [f"NEW-{name}-{i},New {i},2026-11-30T02:00:00Z".encode() for i in range(300)]
        path.write_bytes(b"\n".join(kept) + b"\n")


def write_config(folder: Path, settings: list[str]) -> None:
    """The repository's config with each ``SETTING=VALUE`` of ``--set`` applied."""
    config = yaml.safe_load(CONFIG.read_text())
    for setting in settings:
        name, equals, value = setting.partition("=")
        if not equals:
            raise SystemExit(f"--set {setting}: not SETTING=VALUE")
        *parents, last = name.split(".")
        section = config
        for parent in parents:
            section = section.setdefault(parent, {})
        section[last] = yaml.safe_load(value)
    (folder / "keysync-config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def prepare(folder: Path, keys: int, mode: str, settings: list[str]) -> None:
    """Inputs, and for an incremental soak the full run before the changes."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    write_config(folder, settings)
    must(keysync(folder, "generate", "--keys", str(keys)), 0)
    if mode == "incremental":
        must(keysync(folder, "run", "--auto-approve"), 0, 1)
        change_inputs(folder)


def settle(folder: Path, mode: str) -> None:
    """For ``--mode unchanged``, the full run whose reports the killed run reuses: in the
    folder itself, as reports name their folder (a copied folder's run compares)."""
    if mode == "unchanged":
        must(keysync(folder, "run", "--auto-approve"), 0, 1)


def killed_until_done(
    folder: Path, mode: str, seconds: float, rng: random.Random, max_kills: int
) -> list[int]:
    """Exit codes of the run and its resumes: -9 for each one killed."""
    args, codes = ["run", "--auto-approve", "--mode", mode], []
    while True:
        process = subprocess.Popen(
            [sys.executable, "-m", "keysync", "-q", *args],
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        if codes.count(-9) < max_kills and rng.random() < 0.8:
            time.sleep(rng.uniform(0, seconds))
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        _, err = process.communicate(timeout=900)
        codes.append(process.returncode)
        if process.returncode != -9:
            if process.returncode not in (0, 1):
                print(err.decode().strip(), flush=True)
            return codes
        args = ["run", "--auto-approve", "--mode", mode, "--resume"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--keys", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--mode", choices=["full", "incremental", "unchanged"], default="full")
    parser.add_argument("--max-kills", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SETTING=VALUE",
        dest="settings",
        help="a config setting for every folder, e.g. processing.workers=2 (repeatable)",
    )
    options = parser.parse_args()
    mode = "full" if options.mode == "full" else "incremental"  # how the killed run runs
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()).encode()
    base = options.workdir / f"{options.mode}-{options.keys}"
    start = base / "start"
    prepare(start, options.keys, options.mode, options.settings)
    reference = base / "reference"
    shutil.rmtree(reference, ignore_errors=True)
    shutil.copytree(start, reference)
    settle(reference, options.mode)
    began = time.monotonic()
    must(keysync(reference, "run", "--auto-approve", "--mode", mode), 0, 1)
    seconds = time.monotonic() - began
    expected = reports(reference, since)
    print(f"reference run: {seconds:.1f} s", flush=True)
    rng, failed = random.Random(options.seed), 0
    for round_ in range(options.rounds):
        work = base / "work"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(start, work)
        settle(work, options.mode)
        codes = killed_until_done(work, mode, seconds, rng, options.max_kills)
        got = reports(work, since)
        names = expected.keys() | got.keys()
        differ = sorted(name for name in names if got.get(name) != expected.get(name))
        ok = codes[-1] in (0, 1) and not differ
        print(f"round {round_}: exit codes {codes}: {'same reports' if ok else differ}", flush=True)
        if not ok:
            failed += 1
            shutil.rmtree(base / f"fail{round_}", ignore_errors=True)
            work.rename(base / f"fail{round_}")
    print(f"{options.rounds - failed} of {options.rounds} rounds ended with the same reports")
    return min(failed, 100)


if __name__ == "__main__":
    sys.exit(main())
