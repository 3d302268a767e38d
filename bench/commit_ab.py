"""A/B of ``StateStore.commit_run``: the same planned run committed by two keysync trees.

Planning once and pickling the plan takes the reading, comparison and planning
(and their noise) out of the measurement, and gives both trees the very same
run id, timestamps and rows, so their databases can be compared exactly::

    cd /tmp   # never inside a tree: the script's folder would come first on sys.path
    PYTHONPATH=/tmp/commit-base python /work/main/bench/commit_ab.py plan \\
        -c /tmp/kb/keysync/keysync-config.yaml -o /tmp/plan-1m.pkl
    PYTHONPATH=/tmp/commit-base python /work/main/bench/commit_ab.py time /tmp/plan-1m.pkl \\
        --rounds 3 --keep /tmp/ab-base
    PYTHONPATH=/work/main python /work/main/bench/commit_ab.py time /tmp/plan-1m.pkl \\
        --rounds 3 --keep /tmp/ab-new
    python /work/main/bench/commit_ab.py compare /tmp/ab-base/keysync.db /tmp/ab-new/keysync.db

``compare`` dumps every table in ``sqlite_master`` and compares them row by row,
ignoring only what differs between two commits of one plan (``runs.pid``) or,
with ``--loose``, between two separate runs (run ids and wall-clock times). Two
separate runs give the same ``system_state`` blobs (msgpack of sets) only with
the same ``PYTHONHASHSEED``.
"""

from __future__ import annotations

import argparse
import gc
import pickle
import re
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def plan(args: argparse.Namespace) -> int:
    """Read the sources, compare and plan a first run; pickle what ``commit_run`` takes."""
    from common import begin_fresh_run, read_index

    from keysync.comparison import compare
    from keysync.config import load_config
    from keysync.history import plan_history
    from keysync.stages.provisioner import plan_provisioning

    config = load_config(args.config)
    result = read_index(config)
    work = Path(tempfile.mkdtemp(prefix="commit-ab-"))
    try:
        store, run_id, now = begin_fresh_run(work)
        comparison = compare(result.index, config.authority, result.unavailable)
        provisioning = plan_provisioning(
            store,
            config,
            comparison,
            run_id=run_id,
            now=now,
            auto_approve=args.auto_approve,
            dry_run=False,
        )
        history = plan_history(store, comparison, run_id, now)
        store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    with open(args.output, "wb") as out:
        pickle.dump((provisioning, history, run_id, provisioning.now), out, protocol=5)
    print(f"{len(provisioning.new):,} new entries, {len(provisioning.events):,} events")
    return 0


def time_commits(args: argparse.Namespace) -> int:
    """Commit the pickled plan into a fresh database ``--rounds`` times; wall seconds each."""
    import keysync
    from keysync.state import DB_NAME, StateStore

    with open(args.plan, "rb") as source:
        provisioning, history, run_id, now = pickle.load(source)
    gc.collect()
    seconds: list[float] = []
    for round_number in range(args.rounds):
        work = Path(tempfile.mkdtemp(prefix="commit-ab-"))
        store = StateStore.open(work / DB_NAME)
        store.begin_run(run_id, now, "full", {}, dry_run=False)
        started = time.perf_counter()
        store.commit_run(
            run_id,
            ended_at=now,
            outcome="completed",
            exit_code=0,
            counts={},
            plan=provisioning,
            history=history,
        )
        seconds.append(time.perf_counter() - started)
        store.close()
        if args.keep and round_number == 0:
            shutil.rmtree(args.keep, ignore_errors=True)
            shutil.copytree(work, args.keep)
        shutil.rmtree(work)
    figures = " ".join(f"{s:.3f}" for s in seconds)
    print(f"{keysync.__file__}: commit s {figures}, min {min(seconds):.3f}")
    return 0


RUN_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{4}")
MOMENT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def dump(path: Path, loose: bool) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows, sorted; ``runs.pid`` (and with ``loose`` ids and times) masked."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    tables: dict[str, list[tuple[Any, ...]]] = {}
    names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for name in sorted(names):
        cursor = db.execute(f'SELECT * FROM "{name}"')
        columns = [d[0] for d in cursor.description]
        rows = []
        for row in cursor:
            cells = list(row)
            if name == "runs":
                cells[columns.index("pid")] = None
            if loose:
                cells = [_mask(cell) for cell in cells]
            rows.append(tuple(cells))
        tables[name] = sorted(rows, key=repr)
    schema = sorted(db.execute("SELECT type, name, sql FROM sqlite_master"), key=repr)
    tables["(schema)"] = [tuple(r) for r in schema]
    db.close()
    return tables


def _mask(cell: Any) -> Any:
    if isinstance(cell, str):
        return MOMENT.sub("<time>", RUN_ID.sub("<run>", cell))
    return cell


def compare_dbs(args: argparse.Namespace) -> int:
    """Exit 0 if the two databases hold the same rows, else show the first differences."""
    left, right = dump(args.left, args.loose), dump(args.right, args.loose)
    same = True
    for name in sorted(set(left) | set(right)):
        a, b = left.get(name), right.get(name)
        if a == b:
            print(f"  same   {name}: {len(a or []):,} rows")
            continue
        same = False
        print(f"  DIFFER {name}: {len(a or []):,} vs {len(b or []):,} rows")
        for x, y in zip(a or [], b or []):
            if x != y:
                print(f"    {repr(x)[:300]}\n    {repr(y)[:300]}")
                break
    print("identical" if same else "DIFFERENT")
    return 0 if same else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("plan", help="plan a first run and pickle it")
    p.add_argument("-c", "--config", type=Path, required=True)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--auto-approve", action="store_true")
    p.set_defaults(run=plan)
    t = commands.add_parser("time", help="time commit_run of a pickled plan")
    t.add_argument("plan", type=Path)
    t.add_argument("--rounds", type=int, default=3)
    t.add_argument("--keep", type=Path, help="copy the first round's database folder here")
    t.set_defaults(run=time_commits)
    c = commands.add_parser("compare", help="compare every table of two databases")
    c.add_argument("left", type=Path)
    c.add_argument("right", type=Path)
    c.add_argument("--loose", action="store_true", help="mask run ids and ISO times")
    c.set_defaults(run=compare_dbs)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
