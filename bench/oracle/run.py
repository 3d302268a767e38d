"""Differential test of keysync against the model in oracle.py, on random cases.

    python bench/oracle/run.py SUBCOMMAND --seeds FROM TO [--keep DIR] [-v]

Subcommands: single, structure, names, incremental, resume, multirun, mock (see
README.md next to this file). keysync runs as ``sys.executable -m keysync`` in a
temporary folder, so this tests whatever keysync that Python imports (the repo's venv,
or a tree on PYTHONPATH). One line per case, then a count; exit 1 if any case differs.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cases
from oracle import Expected, RegistryModel, expected_run

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
    if list(got) != sorted(got):
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


SUBCOMMANDS: dict[str, tuple[Callable[[int, Path, argparse.Namespace], CaseResult], str]] = {
    "single": (case_single, "random inputs and settings, one run against the model"),
    "structure": (case_structure, "CSV structure: multi-line quotes, runaway quotes, batches"),
    "names": (case_names, "odd system names, authority not A, delimiters, encodings"),
    "incremental": (case_incremental, "incremental after changed files/settings vs full"),
    "resume": (case_resume, "kill -9 while reading, then --resume"),
    "multirun": (case_multirun, "the registry across four runs"),
    "mock": (case_mock, "keysync generate (every scenario), then run against the model"),
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
