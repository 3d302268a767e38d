"""Differential test of keysync against the model in oracle.py, on random cases.

    python bench/oracle/run.py SUBCOMMAND --seeds FROM TO [--keep DIR] [-v]

Subcommands: single, structure, names, incremental, resume, multirun, mock, series, edits
(see README.md next to this file). keysync runs as ``sys.executable -m keysync`` in a
temporary folder, so this tests whatever keysync that Python imports (the repo's venv,
or a tree on PYTHONPATH). One line per case, then a count; exit 1 if any case differs.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import cases
from oracle import FORMULA_STARTS, Expected, RegistryModel, expected_run, guard, normalize
from state_oracle import RunResult, StateModel, Tag, rules_of

REPORTS = {
    "summary": "reconciliation_summary.csv",
    "missing_in_A": "diff_missing_in_A.csv",
    "missing_from_system": "diff_missing_from_system.csv",
    "duplicates": "duplicates.csv",
    "rejected": "rejected_rows.csv",
    "registry": "master_key_registry.csv",
}
DETAIL = ("summary", "missing_in_A", "missing_from_system", "duplicates", "rejected")
# column of the system name in each detail report, for its `# totals:` header line
TOTALS_COLUMN = {"missing_in_A": 1, "missing_from_system": 1, "duplicates": 0, "rejected": 0}
REGISTRY_STABLE = ("status", "strategy", "source_system", "source_key", "seen_in", "last_seen_at")
TIMEOUT_S = 180

Report = tuple[dict[str, str], list[str], list[list[str]]]
Outputs = dict[str, Report]


# ------------------------------------------------------------------ running keysync


def keysync(
    case: Path, *args: str, command: str = "run", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m keysync -q -c CASE/keysync-config.yaml COMMAND ARGS`` in the case folder."""
    argv = [sys.executable, "-m", "keysync", "-q", "-c", str(case / cases.CONFIG_NAME), command]
    try:
        return subprocess.run(
            [*argv, *args], cwd=case, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, -1, "", f"timeout after {TIMEOUT_S} s")


def read_report(path: Path) -> Report:
    """(`# name: value` lines, header, rows) of a report file (SPEC "Reports")."""
    lines = path.read_bytes().decode("utf-8").split("\n")
    meta: dict[str, str] = {}
    i = 0
    while i < len(lines) and lines[i].startswith("# "):
        name, _, value = lines[i][2:].partition(": ")
        meta[name] = value
        i += 1
    rows = list(csv.reader(io.StringIO("\n".join(lines[i:]))))
    return meta, rows[0], rows[1:]


def load_outputs(out: Path) -> Outputs:
    return {k: read_report(out / f) for k, f in REPORTS.items() if (out / f).exists()}


def fresh_state(case: Path) -> None:
    for d in ("output", "data", "checkpoints"):
        shutil.rmtree(case / d, ignore_errors=True)


# ------------------------------------------------------------------ comparing


def _rows_diff(name: str, got: list[list[str]], want: list[list[str]]) -> str | None:
    """The first differing row of a report, or None."""
    if got == want:
        return None
    for i, (g, w) in enumerate(zip(got, want)):
        if g != w:
            return f"{name} row {i + 1}: keysync {g} oracle {w}"
    if len(got) > len(want):
        return f"{name} row {len(want) + 1}: keysync-only {got[len(want)]}"
    return f"{name} row {len(got) + 1}: oracle-only {want[len(got)]}"


def _totals_diff(name: str, meta: dict[str, str], rows: list[list[str]]) -> str | None:
    """SPEC: detail reports carry the row count and the totals in their header lines."""
    if "rows" in meta and meta["rows"] != str(len(rows)):
        return f"{name}: header says rows={meta['rows']}, file has {len(rows)}"
    if name in TOTALS_COLUMN and meta.get("totals"):
        told = dict(x.split("=", 1) for x in meta["totals"].split("; ") if "=" in x)
        counted: dict[str, int] = {}
        for r in rows:
            counted[r[TOTALS_COLUMN[name]]] = counted.get(r[TOTALS_COLUMN[name]], 0) + 1
        if {k: int(v) for k, v in told.items() if int(v)} != counted:
            return f"{name}: header totals {meta['totals']!r}, rows per system {counted}"
    return None


def compare_reports(exp: Expected, outs: Outputs, registry: bool = True) -> list[str]:
    """Report files against the model: the five detail reports, the registry's stable columns."""
    probs: list[str] = []
    if exp.exit_code == 3:
        return probs
    for name in DETAIL:
        if name not in outs:
            probs.append(f"{name}: report missing")
            continue
        meta, _, rows = outs[name]
        if name == "missing_from_system":
            rows = [r[:4] for r in rows]  # missing_since depends on the history
        elif name == "rejected":
            rows = [[r[0], r[2], r[3], r[5]] for r in rows]  # file and message: free text
        want = {
            "summary": exp.summary,
            "missing_in_A": exp.missing_in_a,
            "missing_from_system": exp.missing_from_system,
            "duplicates": exp.duplicates,
            "rejected": exp.rejected,
        }[name]
        for p in (_rows_diff(name, rows, want), _totals_diff(name, meta, outs[name][2])):
            if p:
                probs.append(p)
    if registry:
        probs += compare_registry(exp.registry, outs)
    return probs


def compare_registry(want: dict[str, dict[str, str]], outs: Outputs) -> list[str]:
    if "registry" not in outs:
        return ["registry: report missing"]
    _, header, rows = outs["registry"]
    col = {c: i for i, c in enumerate(header)}
    got = {r[col["master_key"]]: r for r in rows}
    probs = []
    # Sorted by the master key itself: the formula guard's "'" (SPEC "Reports") is display.
    shown = [mk[1:] if mk[:1] == "'" and mk[1:].startswith(FORMULA_STARTS) else mk for mk in got]
    if shown != sorted(shown):
        probs.append("registry: rows not sorted by master_key")
    if set(got) != set(want):
        only_k = sorted(set(got) - set(want))[:5]
        only_o = sorted(set(want) - set(got))[:5]
        probs.append(f"registry master keys: keysync-only {only_k} oracle-only {only_o}")
    for mk in sorted(set(got) & set(want)):
        for c, v in want[mk].items():
            if got[mk][col[c]] != v:
                probs.append(f"registry {mk} {c}: keysync {got[mk][col[c]]!r} oracle {v!r}")
    return probs


def stable(outs: Outputs) -> dict[str, list[list[str]]]:
    """Report rows without run-dependent columns, to compare two ways of running."""
    res = {}
    for name, (_, header, rows) in outs.items():
        if name == "missing_from_system":
            rows = [r[:4] for r in rows]
        elif name == "registry":
            col = {c: i for i, c in enumerate(header)}
            keep = [col["master_key"]] + [col[c] for c in REGISTRY_STABLE]
            rows = [[r[i] for i in keep] for r in rows]
        elif name == "rejected":
            rows = [[r[0], os.path.basename(r[1]), *r[2:]] for r in rows]
        res[name] = rows
    return res


def compare_same(label: str, a: Outputs, b: Outputs, skip: tuple[str, ...] = ()) -> list[str]:
    sa, sb = stable(a), stable(b)
    probs = []
    for name in sorted(set(sa) | set(sb)):
        if name in skip:
            continue
        p = _rows_diff(f"{label} {name}", sa.get(name, []), sb.get(name, []))
        if p:
            probs.append(p)
    return probs


def check_exit(rc: int, want: int, stderr: str) -> list[str]:
    return [] if rc == want else [f"exit: keysync {rc} oracle {want}: {stderr.strip()[-300:]}"]


# ------------------------------------------------------------------ subcommands
# Each case function returns (kind, differences), or (kind, None) for a skipped case.

CaseResult = tuple[str, list[str] | None]


def _single_like(
    case: Path, cfg: dict[str, Any], opts: argparse.Namespace, kind: str
) -> CaseResult:
    p = keysync(case)
    exp = expected_run(cfg, case)
    probs = check_exit(p.returncode, exp.exit_code, p.stderr)
    if exp.exit_code == 3 or probs:
        return kind, probs
    outs = load_outputs(case / "output")
    probs += compare_reports(exp, outs)
    if getattr(
        opts, "variants", False
    ):  # same inputs, fresh state: identical rows (configuration.md, README)
        for vname, mod, extra in [
            ("serial", {"parallel": False}, []),
            ("workers2-batch3", {"parallel": True, "workers": 2, "batch_size": 3}, []),
            ("batch1", {"batch_size": 1}, []),
            ("dry-run", {}, ["--dry-run"]),
        ]:
            c2 = json.loads(json.dumps(cfg))
            c2.setdefault("processing", {}).update(mod)
            fresh_state(case)
            cases.write_cfg(case, c2)
            p2 = keysync(case, *extra)
            probs += check_exit(p2.returncode, p.returncode, p2.stderr)
            skip = ("registry",) if vname == "dry-run" else ()
            probs += compare_same(vname, load_outputs(case / "output"), outs, skip)
        cases.write_cfg(case, cfg)
    return kind, probs


def case_single(seed: int, case: Path, opts: argparse.Namespace) -> CaseResult:
    cfg = cases.gen_single(seed, case, control=opts.control)
    return _single_like(case, cfg, opts, "single")


def case_structure(seed: int, case: Path, opts: argparse.Namespace) -> CaseResult:
    cfg = cases.gen_structure(seed, case, big=opts.big)
    return _single_like(case, cfg, opts, "structure-big" if opts.big else "structure")


def case_names(seed: int, case: Path, opts: argparse.Namespace) -> CaseResult:
    return _single_like(case, cases.gen_names(seed, case), opts, "names")


def case_mock(seed: int, case: Path, opts: argparse.Namespace) -> CaseResult:
    cfg, gen_args = cases.gen_mock(seed, case)
    g = keysync(case, *gen_args, command="generate")
    if g.returncode:
        return "mock", [f"keysync generate exit {g.returncode}: {g.stderr.strip()[-300:]}"]
    return _single_like(case, cfg, opts, f"mock-{gen_args[-1]}")


def case_incremental(seed: int, case: Path, opts: argparse.Namespace) -> CaseResult:
    """Run 1 full; then files change (or settings do); run 2 incremental must give the
    rows of a full run (SPEC "Incremental") and the model's."""
    rng = random.Random(seed * 7 + 1)
    cfg = cases.gen_single(seed, case)
    kind = "incremental-" + rng.choice(["files", "files", "settings"])
    p1 = keysync(case)
    if p1.returncode not in (0, 4):
        return kind, None
    summary = case / "output" / "summary.json"
    first_done = json.loads(summary.read_text())["finished_at"] if summary.exists() else ""
    if kind == "incremental-settings":
        cfg, what = cases.change_settings(rng, cfg)
        cases.write_cfg(case, cfg)
    else:
        what = cases.mutate_files(rng, case, cfg)
    twin = case.with_name(case.name + "-full")
    shutil.copytree(case, twin)  # config paths are relative: the same in both copies
    pi = keysync(case, "--mode", "incremental")
    pf = keysync(twin, "--mode", "full")
    probs = check_exit(pi.returncode, pf.returncode, pi.stderr)
    oi, of = load_outputs(case / "output"), load_outputs(twin / "output")
    probs += compare_same("incremental vs full", oi, of)

    def since(o: Outputs) -> list[list[str]]:
        if "missing_from_system" not in o:
            return []
        _, _, rows = o["missing_from_system"]
        # A gap that begins in run 2 has run 2's time, which differs between the two copies.
        return [[*r[:4], "now" if r[4] >= first_done else r[4]] for r in rows]

    if since(oi) != since(of):
        probs.append("incremental vs full: missing_since differs")
    exp = expected_run(cfg, case)
    probs += check_exit(pf.returncode, exp.exit_code, pf.stderr)
    if pf.returncode in (0, 4):
        probs += compare_reports(exp, oi, registry=False)  # the registry has run 1 in it
    shutil.rmtree(twin, ignore_errors=True)
    return f"{kind}({','.join(what)})", probs


def _kill_while_reading(case: Path, at: int, *args: str) -> bool:
    """Start a run that pauses after ``at`` rows read (keysync's test hook), kill -9 it
    there. True if it paused."""
    logf = case / "data" / "logs" / "keysync.jsonl"
    before = logf.read_text(errors="replace").count("run.paused_for_tests") if logf.exists() else 0
    env = dict(os.environ, KEYSYNC_TEST_PAUSE_AT=f"reading:{at}", KEYSYNC_TEST_PAUSE_S="60")
    argv = [sys.executable, "-m", "keysync", "-q", "-c", str(case / cases.CONFIG_NAME), "run"]
    proc = subprocess.Popen(
        [*argv, *args],
        cwd=case,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    paused = False
    t0 = time.monotonic()
    while time.monotonic() - t0 < 30 and proc.poll() is None:
        if (
            logf.exists()
            and logf.read_text(errors="replace").count("run.paused_for_tests") > before
        ):
            paused = True
            break
        time.sleep(0.05)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # our own process group (start_new_session)
    proc.wait()
    return paused


def case_resume(seed: int, case: Path, opts: argparse.Namespace) -> CaseResult:
    """kill -9 while reading, then --resume: the reports of an uninterrupted run (SPEC
    "Incremental, checkpoints, resume"); inputs changed since the checkpoint: exit 3."""
    rng = random.Random(seed)
    cfg = cases.gen_single(seed, case)
    kind = "resume-" + rng.choice(["full", "full", "incremental", "changed-input"])
    cfg["processing"].update(
        {"checkpoint_interval": rng.choice([1, 2, 5, 10]), "batch_size": rng.choice([1, 2, 3, 5])}
    )
    if rng.random() < 0.5:
        cfg["processing"]["parallel"] = False
    cases.write_cfg(case, cfg)
    files = [case / s["path"] for s in cfg["sources"].values()]
    lines = sum(len(f.read_bytes().split(b"\n")) for f in files if f.exists())
    mode: list[str] = []
    if kind == "resume-incremental":
        if keysync(case).returncode not in (0, 4):
            return kind, None
        cases.mutate_files(rng, case, cfg)
        mode = ["--mode", "incremental"]
    twin = case.with_name(case.name + "-twin")
    shutil.copytree(case, twin)
    pt = keysync(twin, *mode)
    if pt.returncode not in (0, 4) or lines < 10:
        shutil.rmtree(twin, ignore_errors=True)
        return kind, None
    at = rng.randint(1, max(1, lines // 2))
    paused = _kill_while_reading(case, at, *mode)
    if not paused:
        shutil.rmtree(twin, ignore_errors=True)
        if kind == "resume-incremental":
            return kind, None  # every changed file was shorter than `at`: nothing to kill
        return kind, [f"the run did not pause at reading:{at}"]
    probs: list[str] = []
    if kind == "resume-changed-input":
        a = case / cfg["sources"]["A"]["path"]
        a.write_bytes(a.read_bytes() + b"\nLATE-1\n")
        pr = keysync(case, "--resume")
        probs += check_exit(pr.returncode, 3, pr.stderr)
    else:
        pr = keysync(case, "--resume")
        probs += check_exit(pr.returncode, pt.returncode, pr.stderr)
        outs = load_outputs(case / "output")
        probs += compare_same("resumed vs uninterrupted", outs, load_outputs(twin / "output"))
        log = (case / "data" / "logs" / "keysync.jsonl").read_text(errors="replace")
        if "run.resumed" not in log:
            probs.append("no run.resumed event in the log")
        if kind == "resume-full":
            probs += compare_reports(expected_run(cfg, case), outs)
        else:
            probs += compare_reports(
                expected_run(cfg, case),
                outs,
                registry=False,
            )
    shutil.rmtree(twin, ignore_errors=True)
    return f"{kind}(at {at})", probs


def case_multirun(seed: int, case: Path, opts: argparse.Namespace) -> CaseResult:
    """Four runs on changing inputs, peers now and then unavailable: the registry carried
    across runs (docs/state.md) against RegistryModel."""
    rng, cfg = cases.gen_multirun(seed, case)
    prov = cfg["provisioning"]
    model = RegistryModel(prov["strategy"], prov.get("namespace_separator", ":"))
    probs: list[str] = []
    for run in range(4):
        cases.multirun_inputs(rng, case, cfg)
        p = keysync(case)
        exp = model.run(cfg, case)
        probs += [f"run {run + 1} {x}" for x in check_exit(p.returncode, exp.exit_code, p.stderr)]
        if exp.exit_code == 3:
            continue
        want = {mk: {"status": "Proposed", **e} for mk, e in exp.registry.items()}
        outs = load_outputs(case / "output")
        probs += [f"run {run + 1} {x}" for x in compare_reports(exp, outs, registry=False)]
        probs += [f"run {run + 1} {x}" for x in compare_registry(want, outs)]
        if probs:
            break
    return f"multirun-{prov['strategy']}", probs


# ------------------------------------------------------------------ series of runs
# Two projects get the same inputs and commands day after day: `inc` always runs
# `--mode incremental`, `full` always `--mode full`. After every run they must be equal
# (every report, every state table: SPEC "Incremental"), and `full` must match
# expected_run (the reports) and StateModel (registry, audit trail, key history).

RUN_ID = re.compile(r"(?:manual-)?\d{8}T\d{6}Z-[0-9a-f]{4}")
STATE_REPORTS = {**REPORTS, "audit": "audit_log.csv"}
# a key that is safe on a command line and a plain (normalized) key under every rule set
PLAIN_KEY = re.compile(r"[A-Za-z0-9][!-~]*")
HISTORY_KEYS = 6  # keys per run whose `keysync history --json` is checked


def _canonical(x: Any) -> Any:
    """A decoded state blob with set-like lists sorted (msgpack sets come in hash order)."""
    if isinstance(x, dict):
        return sorted((str(k), _canonical(v)) for k, v in x.items())
    if isinstance(x, list):
        return sorted((_canonical(v) for v in x), key=repr)
    return x


class Project:
    """One project folder of a series, and what keysync keeps in it (docs/state.md)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.path / 'data' / 'keysync.db'}?mode=ro", uri=True)

    def has_db(self) -> bool:
        return (self.path / "data" / "keysync.db").exists()

    def names(self) -> tuple[dict[str, str], dict[str, int]]:
        """run id -> `R<seq>` (runs) or `M<n>` (manual sessions, by first audit event);
        a run's observed_at -> its seq."""
        tags: dict[str, str] = {}
        observed: dict[str, int] = {}
        if not self.has_db():
            return tags, observed
        with closing(self.db()) as c:
            for rid, seq, obs in c.execute("select run_id, seq, observed_at from runs"):
                tags[rid] = f"R{seq}"
                if obs:
                    observed[obs] = seq
            q = "select run_id from audit_events where run_id like 'manual-%' order by seq"
            for (rid,) in c.execute(q):
                tags.setdefault(rid, f"M{sum(t.startswith('M') for t in tags.values()) + 1}")
        return tags, observed

    def last_run(self) -> tuple[str, int, bool]:
        with closing(self.db()) as c:
            q = "select run_id, seq, dry_run from runs order by seq desc limit 1"
            rid, seq, dry = c.execute(q).fetchone()
        return rid, seq, bool(dry)

    def _text(self, tags: dict[str, str], s: str) -> str:
        s = RUN_ID.sub(lambda m: tags.get(m.group(), "R?" + m.group()), s)
        return s.replace(str(self.path), "<P>")

    def tables(self, tags: dict[str, str]) -> dict[str, list[Any]]:
        """The state tables (docs/state.md), run ids as tags, blobs decoded; without the
        times, which differ between two projects."""
        import msgspec  # keysync's own dependency: its state blobs are msgpack

        out: dict[str, list[Any]] = {}
        with closing(self.db()) as c:
            q = "select seq, dry_run, outcome, exit_code, counts from runs order by seq"
            out["runs"] = [
                (seq, dry, outc, ec, json.loads(self._text(tags, counts)))
                for seq, dry, outc, ec, counts in c.execute(q)
            ]
            cur = c.execute("select * from master_keys order by master_key")
            cols = [d[0] for d in cur.description]
            rows = []
            for r in cur:
                d = dict(zip(cols, r))
                del d["created_at"], d["updated_at"]
                d["created_run"] = tags.get(d["created_run"], d["created_run"])
                d["updated_run"] = tags.get(d["updated_run"], d["updated_run"])
                rows.append(d)
            out["master_keys"] = rows
            out["key_history"] = list(c.execute("select * from key_history order by 1, 2, 3"))
            out["system_state"] = [
                (*r[:5], *(_canonical(msgspec.msgpack.decode(b)) if b else None for b in r[5:]))
                for r in c.execute("select * from system_state order by system")
            ]
            q = "select seq, run_id, event, system, key, detail from audit_events order by seq"
            out["audit_events"] = [
                (seq, tags.get(rid, rid), ev, s, k, self._text(tags, d))
                for seq, rid, ev, s, k, d in c.execute(q)
            ]
        return out

    def reports(self, tags: dict[str, str], observed: dict[str, int]) -> dict[str, Any]:
        """Every report plus summary.json, run ids as tags, each run time as its run's
        seq (a time that is no run's observed_at is kept as ``T?<time>``)."""

        def when(t: str) -> str:
            return f"R{observed[t]}" if t in observed else "T?" + t

        out: dict[str, Any] = {}
        for name, f in STATE_REPORTS.items():
            p = self.path / "output" / f
            if not p.exists():
                continue
            meta, header, rows = read_report(p)
            meta = {k: v for k, v in meta.items() if k not in ("generated_at", "run_id")}
            col = {c: i for i, c in enumerate(header)}
            if name == "missing_from_system":
                rows = [[*r[:4], when(r[4])] for r in rows]
            elif name == "rejected":
                rows = [[r[0], os.path.basename(r[1]), *r[2:]] for r in rows]
            elif name == "registry":
                rows = [list(r) for r in rows]
                for r in rows:
                    for c in ("created_run", "updated_run"):
                        r[col[c]] = tags.get(r[col[c]], r[col[c]])
                    for c, by in (("created_at", "created_run"), ("updated_at", "updated_run")):
                        # the time of a run's change is that run's observed_at
                        ok = r[col[by]].startswith("M") or when(r[col[c]]) == r[col[by]]
                        r[col[c]] = "ok" if ok else "TIME?" + r[col[c]]
            elif name == "audit":
                rows = [[tags.get(r[1], r[1]), *r[2:6], self._text(tags, r[6])] for r in rows]
            out[name] = (sorted(meta.items()), header, rows)
        sj = self.path / "output" / "summary.json"
        if sj.exists():
            j = json.loads(sj.read_text())
            for k in ("run_id", "mode", "durations", "started_at", "finished_at", "duration_s"):
                j.pop(k, None)
            j.pop("generated_at", None)
            out["summary.json"] = self._text(tags, json.dumps(j, sort_keys=True))
        return out

    def history(self, key: str, tags: dict[str, str]) -> dict[str, tuple[Any, ...]] | str:
        """`keysync history KEY --json`: system -> (present, first, last, missing since)."""
        p = keysync(self.path, "--json", "--", key, command="history")
        if p.returncode:
            return f"exit {p.returncode}: {p.stderr.strip()[-200:]}"
        return {
            s["system"]: (
                s["present"],
                *(tags.get(s[f], s[f]) for f in ("first_seen_run", "last_seen_run")),
                tags.get(s["missing_since_run"], s["missing_since_run"]),
            )
            for s in json.loads(p.stdout)["systems"]
        }


def _sample_diff(label: str, got: list[Any], want: list[Any], n: int = 3) -> str:
    """A few rows only one side has (or the note that only the order differs)."""
    ga = [json.dumps(x, ensure_ascii=False, default=str) for x in got]
    wa = [json.dumps(x, ensure_ascii=False, default=str) for x in want]
    a_only = [x for x in ga if x not in set(wa)][:n]
    b_only = [x for x in wa if x not in set(ga)][:n]
    if not a_only and not b_only:
        return f"{label}: same rows, other order or count"
    return f"{label}: {' '.join(a_only)} | {' '.join(b_only)}"


def compare_twins(inc: Project, full: Project) -> list[str]:
    """SPEC "Incremental": an incremental run leaves what a full run leaves, every report
    and every state table (run ids, times and paths mapped)."""
    probs: list[str] = []
    (ti, oi), (tf, of) = inc.names(), full.names()
    ri, rf = inc.reports(ti, oi), full.reports(tf, of)
    for name in sorted(set(ri) | set(rf)):
        a, b = ri.get(name), rf.get(name)
        if a == b:
            continue
        if a is None or b is None or name == "summary.json":
            probs.append(f"incremental vs full {name}: {str(a)[:200]} | {str(b)[:200]}")
        elif a[:2] != b[:2]:
            probs.append(f"incremental vs full {name}: header {a[:2]} | {b[:2]}")
        else:
            probs.append(_sample_diff(f"incremental vs full {name}", a[2], b[2]))
    if inc.has_db() != full.has_db():
        return [*probs, "incremental vs full: only one has a database"]
    if full.has_db():
        di, df = inc.tables(ti), full.tables(tf)
        for name in df:
            if di[name] != df[name]:
                probs.append(_sample_diff(f"incremental vs full db {name}", di[name], df[name]))
    return probs


def compare_state(res: RunResult, exp: Expected, proj: Project, seq: int, dry: bool) -> list[str]:
    """The reports of a run in a series against expected_run, with the registry status,
    missing_since, the registry and the run's audit events from StateModel."""
    tags, observed = proj.names()
    outs = load_outputs(proj.path / "output")
    registry = {guard(mk): e for mk, e in res.registry.items()}
    exp.missing_in_a = [
        [*r[:6], registry[r[5]].status if r[5] in registry else "?"] for r in exp.missing_in_a
    ]
    probs = compare_reports(exp, outs, registry=False)
    gaps = {(s, guard(k)): v for (s, k), v in res.gaps.items()}
    got = [r[4] for r in proj.reports(tags, observed).get("missing_from_system", ("", "", []))[2]]
    want = [f"R{gaps.get((r[1], r[0]), '?')}" for r in exp.missing_from_system]
    if got != want:
        bad = next(i for i, (g, w) in enumerate(zip([*got, ""], [*want, ""])) if g != w)
        row = exp.missing_from_system[bad][:2] if bad < len(want) else "?"
        probs.append(
            f"missing_from_system {row} missing_since: keysync {got[bad : bad + 1]} "
            f"oracle {want[bad : bad + 1]}"
        )

    def tag(t: Tag) -> str:
        return t if isinstance(t, str) else f"R{t}"

    want_reg = {
        mk: {
            "status": e.status,
            "strategy": e.strategy,
            "source_system": guard(e.source_system),
            "source_key": guard(e.source_key),
            "seen_in": guard(e.seen_in),
            "last_seen_at": guard(e.last_seen_at),
            "created_run": tag(e.created),
            "updated_run": tag(e.updated),
            "created_at": "ok",
            "updated_at": "ok",
        }
        for mk, e in registry.items()
    }
    rep = proj.reports(tags, observed)
    if "registry" in rep:
        _, header, rows = rep["registry"]
        outs["registry"] = ({}, header, rows)
    probs += compare_registry(want_reg, outs)[:8]
    if dry:  # docs/state.md "Dry runs": the planned events, with an empty seq
        rows = rep.get("audit", ((), (), []))[2]
        got_ev = sorted((r[2], r[3], r[4]) for r in rows if r[1] == "")
        want_ev = sorted((ev, guard(s), guard(k)) for ev, s, k in res.events)
    else:
        run = f"R{seq}"
        got_ev = sorted(e[2:5] for e in proj.tables(tags)["audit_events"] if e[1] == run)
        want_ev = sorted(res.events)
    got_ev = [e for e in got_ev if not e[0].startswith("run.")]
    if got_ev != want_ev:
        probs.append(
            _sample_diff(f"audit events ({len(got_ev)} vs {len(want_ev)})", got_ev, want_ev)
        )
    return probs


def compare_history(model: StateModel, proj: Project, keys: list[str]) -> list[str]:
    """`keysync history KEY --json` against StateModel.timeline (docs/state.md)."""
    tags, _ = proj.names()
    probs = []
    for k in keys:
        got = proj.history(k, tags)
        if isinstance(got, str):
            probs.append(f"history {k}: {got}")
            continue
        for s, (present, *runs) in model.timeline(k).items():
            want = (present, *("" if r is None else f"R{r}" for r in runs))
            g = got.get(s)
            if g is None and (runs[0] is not None or runs[2] is not None):
                probs.append(f"history {k} {s}: keysync has no entry, oracle {want}")
            elif g is not None and g != want:
                probs.append(
                    f"history {k} {s} (present, first, last, missing since): "
                    f"keysync {g} oracle {want}"
                )
    return probs


def _file_sha(p: Path) -> str | None:
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None


class Series:
    """The two projects of a series case and the model that follows them."""

    def __init__(self, case: Path, cfg: dict[str, Any], rng: random.Random) -> None:
        self.inc, self.full = Project(case / "inc"), Project(case / "full")
        self.rng = rng
        prov = cfg.get("provisioning", {})
        self.model = StateModel(
            next(iter(cfg["sources"])),
            prov.get("strategy", "mirror"),
            prov.get("namespace_separator", ":"),
            prov.get("deprecate_after_runs", 3),
        )
        self.snapshot_of: dict[str, tuple[str | None, str]] = {}  # system -> (sha, settings)

    def both(self, *args: str, command: str = "run") -> list[subprocess.CompletedProcess[str]]:
        modes = [["--mode", "incremental"], ["--mode", "full"]] if command == "run" else [[], []]
        with ThreadPoolExecutor(2) as pool:
            futures = [
                pool.submit(keysync, p.path, *args, *m, command=command)
                for p, m in zip((self.inc, self.full), modes)
            ]
            return [f.result() for f in futures]

    def set_inputs(self, cfg: dict[str, Any], inputs: Path) -> None:
        """Both projects: this config, and the files of ``inputs`` as their input folder."""
        for p in (self.inc, self.full):
            shutil.rmtree(p.path / "input", ignore_errors=True)
            shutil.copytree(inputs, p.path / "input")
            cases.write_cfg(p.path, cfg)

    def manual_keys(self, cfg: dict[str, Any], n: int) -> list[str]:
        """Up to n master keys a command line names without doubt: plain, normalized under
        the current rules, no other entry of the same key."""
        rules = cfg.get("normalize", {})
        per_key: dict[str, int] = {}
        for e in self.model.registry.values():
            per_key[e.key] = per_key.get(e.key, 0) + 1
        ok = [
            mk
            for mk, e in self.model.registry.items()
            if PLAIN_KEY.fullmatch(mk) and per_key[e.key] == 1 and normalize(e.key, rules) == e.key
        ]
        return self.rng.sample(ok, min(n, len(ok)))

    def manual(self, args: list[str]) -> list[str]:
        """`registry approve|deprecate ...` in both projects and in the model."""
        pi, pf = self.both(*args[1:], command="registry")
        keys = [a for a in args[2:] if a not in ("--", "--all")]
        if args[1] == "approve":
            self.model.approve(keys, all_proposed="--all" in args)
        else:
            self.model.deprecate(keys)
        probs = check_exit(pi.returncode, 0, pi.stderr) + check_exit(pf.returncode, 0, pf.stderr)
        return [f"{' '.join(args[:2])}: {p}" for p in probs]

    def day(self, rcfg: dict[str, Any], flags: list[str], configured: set[str]) -> list[str]:
        """One run in both projects (``rcfg``: the systems the run reconciles; ``configured``:
        the config's, which ``--systems`` narrows), compared with each other and the model."""
        dry, auto = "--dry-run" in flags, "--auto-approve" in flags
        prov = rcfg.get("provisioning", {})
        self.model.strategy = prov.get("strategy", "mirror")
        self.model.separator = prov.get("namespace_separator", ":")
        before = self.full.tables(self.full.names()[0]) if dry and self.full.has_db() else None
        _wait_next_second()  # one run per second: times map to runs
        pi, pf = self.both(*flags)
        probs = check_exit(pi.returncode, pf.returncode, pi.stderr)
        exp = expected_run(rcfg, self.full.path)
        probs += check_exit(pf.returncode, exp.exit_code, pf.stderr)
        probs += compare_twins(self.inc, self.full)
        if probs or exp.exit_code == 3:
            return probs
        _, seq, was_dry = self.full.last_run()
        if was_dry != dry:
            probs.append(f"runs: dry_run {was_dry}, asked {dry}")
        res = self.model.run(seq, exp.data, rules_of(rcfg), auto, dry, configured)
        probs += compare_state(res, exp, self.full, seq, dry)
        seen = {k for _, k in self.model.first}  # after a dry run: before it (no history)
        pool = sorted(
            {k for d in exp.data.values() if d for k in d.index() if PLAIN_KEY.fullmatch(k)} & seen
        )
        keys = self.rng.sample(pool, min(HISTORY_KEYS, len(pool)))
        probs += compare_history(self.model, self.full, keys)
        if before is not None:
            after = self.full.tables(self.full.names()[0])
            probs += [
                f"dry run changed table {t}" for t in after if t != "runs" and after[t] != before[t]
            ]
        probs += self._incremental_events(rcfg, dry)
        return probs

    def _incremental_events(self, rcfg: dict[str, Any], dry: bool) -> list[str]:
        """docs/incremental.md: a source is `incremental.unchanged` only if its bytes and
        settings are those of the snapshot (the last run that read it, not a dry run)."""
        rid = self.inc.last_run()[0]
        unchanged: set[str] = set()
        log = self.inc.path / "data" / "logs" / "keysync.jsonl"
        for line in log.read_text(errors="replace").splitlines():
            if rid in line and "incremental.unchanged" in line:
                j = json.loads(line)
                if j.get("run_id") == rid and j.get("event") == "incremental.unchanged":
                    unchanged.update(str(j.get("system", "")).split(","))
        probs = []
        # what shapes a source's rows: the key rules and its own settings, not the strategy
        shape = json.loads(rules_of(rcfg))
        rules = json.dumps([shape["normalize"], shape["max_key_length"]], sort_keys=True)
        for s, src in rcfg["sources"].items():
            now = (_file_sha(self.inc.path / src["path"]), rules + json.dumps(src, sort_keys=True))
            if s in unchanged and self.snapshot_of.get(s) != now:
                probs.append(f"incremental: {s} changed since its snapshot, logged unchanged")
            if not dry and now[0] is not None:
                self.snapshot_of[s] = now
        return probs


def _wait_next_second() -> None:
    time.sleep(1.02 - time.time() % 1.0)


def case_series(seed: int, case: Path, opts: argparse.Namespace) -> CaseResult:
    """`keysync generate --days D`; day after day incremental and full projects on the
    day's files (some systems keep yesterday's), with manual approve / deprecate, dry
    runs and `--systems` days mixed in: equal to each other, and to the models."""
    gen = case / "gen"
    cfg, plan, gen_args = cases.gen_series(seed, gen)
    kind = (
        f"series-{plan['scenario']}-{plan['keys']}x{plan['days']}-{plan['strategy'][:2]}"
        f"-dep{plan['deprecate_after_runs']}{'-auto' if plan['auto_approve'] else ''}"
        f"{'-mix' if plan['mix'] else ''}"
    )
    g = keysync(gen, *gen_args, command="generate")
    if g.returncode:
        return kind, [f"keysync generate exit {g.returncode}: {g.stderr.strip()[-300:]}"]
    rng = random.Random(seed)
    series = Series(case, cfg, rng)
    today = gen / "today"
    today.mkdir()
    probs: list[str] = []
    for day in range(1, plan["days"] + 1):
        for f in sorted((gen / "g" / "history" / f"day-{day:02d}").glob("*.csv")):
            if day == 1 or rng.random() >= plan["stale"]:  # else: yesterday's file stays
                shutil.copyfile(f, today / f.name)
        series.set_inputs(cfg, today)
        flags = ["--auto-approve"] if plan["auto_approve"] else []
        rcfg = cfg
        label = f"day {day}"
        if plan["mix"] and day > 1:
            r = rng.random()
            if r < 0.2:
                probs += series.manual(["registry", "approve", "--all"])
                label += " approve-all"
            elif r < 0.35 and (keys := series.manual_keys(cfg, 5)):
                probs += series.manual(["registry", "deprecate", "--", *keys])
                label += " deprecate"
            r = rng.random()
            if r < 0.2:
                flags.append("--dry-run")
            elif r < 0.3:
                systems = ["A", *sorted(rng.sample("BCDE", rng.randint(1, 3)))]
                flags += ["--systems", ",".join(systems)]
                rcfg = {**cfg, "sources": {s: cfg["sources"][s] for s in systems}}
        probs += [f"{label} {flags}: {p}" for p in series.day(rcfg, flags, set(cfg["sources"]))]
        if probs:
            break
    return kind, probs


def case_edits(seed: int, case: Path, opts: argparse.Namespace) -> CaseResult:
    """A `single` case edited at random day after day (cases.Edits), incremental and full
    projects with dry runs, auto-approve, `--systems` and manual approve / deprecate:
    equal to each other, and to the models."""
    rng = random.Random(seed * 31 + 7)
    work = case / "work"
    cfg = cases.gen_single(seed, work)
    cfg.setdefault("provisioning", {})["deprecate_after_runs"] = rng.choice([1, 2, 3])
    cases.write_cfg(work, cfg)
    days = rng.randint(5, 8)
    edits = cases.Edits(rng, work, cfg)
    series = Series(case, cfg, rng)
    kind = f"edits-{cfg['provisioning'].get('strategy', 'mirror')[:2]}-x{days}"
    probs: list[str] = []
    for day in range(1, days + 1):
        ops = edits.day(series.inc.path / "data" / "snapshots") if day > 1 else []
        series.set_inputs(cfg, work / "input")
        label = f"day {day} {ops}"
        if day > 1 and series.model.registry and rng.random() < 0.35:
            act = rng.choice(["approve", "approve", "deprecate", "approve-all"])
            if act == "approve-all":
                probs += series.manual(["registry", "approve", "--all"])
            elif keys := series.manual_keys(cfg, rng.randint(1, 3)):
                probs += series.manual(["registry", act, "--", *keys])
            label += f" {act}"
        flags: list[str] = []
        rcfg = cfg
        r = rng.random()
        peers = list(cfg["sources"])[1:]
        if day > 1 and r < 0.15:
            flags = ["--dry-run"] + (["--auto-approve"] if rng.random() < 0.3 else [])
        elif r < 0.3:
            flags = ["--auto-approve"]
        elif day > 1 and r < 0.4 and len(peers) > 1:
            systems = [edits.names[0], *sorted(rng.sample(peers, rng.randint(1, len(peers) - 1)))]
            flags = ["--systems", ",".join(systems)]
            rcfg = {
                **cfg,
                "sources": {s: cfg["sources"][s] for s in cfg["sources"] if s in systems},
            }
        probs += [f"{label} {flags}: {p}" for p in series.day(rcfg, flags, set(cfg["sources"]))]
        if probs:
            break
    return kind, probs


SUBCOMMANDS: dict[str, tuple[Callable[[int, Path, argparse.Namespace], CaseResult], str]] = {
    "single": (case_single, "random inputs and settings, one run against the model"),
    "structure": (case_structure, "CSV structure: multi-line quotes, runaway quotes, batches"),
    "names": (case_names, "odd system names, authority not A, delimiters, encodings"),
    "incremental": (case_incremental, "incremental after changed files/settings vs full"),
    "resume": (case_resume, "kill -9 while reading, then --resume"),
    "multirun": (case_multirun, "the registry across four runs"),
    "mock": (case_mock, "keysync generate (every scenario), then run against the model"),
    "series": (case_series, "keysync generate --days: a series, incremental vs full vs models"),
    "edits": (case_edits, "random day-to-day edits: a series, incremental vs full vs models"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.add_argument(
            "--seeds",
            nargs=2,
            type=int,
            metavar=("FROM", "TO"),
            required=True,
            help="seeds FROM..TO-1",
        )
        sp.add_argument("--keep", type=Path, metavar="DIR", help="copy failing cases into DIR")
        sp.add_argument("-v", "--verbose", action="store_true", help="print every difference")
        if name in ("single", "structure"):
            sp.add_argument(
                "--variants",
                action="store_true",
                help="also rerun serial / other batch sizes / dry-run: same rows",
            )
        if name == "single":
            sp.add_argument(
                "--control",
                action="store_true",
                help="add control and line-separator characters to keys",
            )
        if name == "structure":
            sp.add_argument("--big", action="store_true", help="1000-2500 records per file")
    opts = parser.parse_args(argv)
    run_case = SUBCOMMANDS[opts.command][0]
    work = Path(tempfile.mkdtemp(prefix="keysync-oracle-"))
    ran = differing = skipped = 0
    t0 = time.monotonic()
    try:
        for seed in range(*opts.seeds):
            case = work / str(seed)
            kind, probs = run_case(seed, case, opts)
            if probs is None:
                skipped += 1
                print(f"{seed:>6} {kind:<24} skipped (no usable first run)", flush=True)
            elif probs:
                ran += 1
                differing += 1
                more = f" (+{len(probs) - 1} more)" if len(probs) > 1 else ""
                print(f"{seed:>6} {kind:<24} DIFF {probs[0][:400]}{more}", flush=True)
                if opts.verbose:
                    for p in probs[1:]:
                        print(f"{'':>6} {'':<24}      {p[:400]}")
                if opts.keep:
                    dest = opts.keep / f"{opts.command}-{seed}"
                    shutil.rmtree(dest, ignore_errors=True)
                    shutil.copytree(case, dest, symlinks=True)
                    (dest / "DIFFERENCES.txt").write_text("\n".join(probs) + "\n")
            else:
                ran += 1
                print(f"{seed:>6} {kind:<24} ok", flush=True)
            shutil.rmtree(case, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    took = time.monotonic() - t0
    print(
        f"{opts.command}: {ran} cases, {differing} with differences, {skipped} skipped, "
        f"{took:.1f} s"
    )
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
