"""Random case generators shared by the subcommands of run.py.

Each generator takes a seed and an empty case folder, writes ``input/*.csv`` and
``keysync-config.yaml`` (JSON, which YAML reads) into it and returns the config as a
dict. The same seed gives the same case on any machine.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

UNICODE = [
    "é",
    "É",
    "ß",
    "ﬁ",
    "①",
    "٣",
    "Å",
    "µ",
    "\u0301",
    "\u00a0",
    "\u2003",
    "Ω",
    "ı",
    "ǅ",
    "ﬀ",
    "²",
    "Ⅻ",
    "😀",
    "ä",
]
# control and line-separator characters (the old driver_ctrl.py)
CONTROL = [
    "\x0b",
    "\x0c",
    "\x1c",
    "\x1d",
    "\x1e",
    "\x85",
    "\u2028",
    "\u2029",
    "\x7f",
    "\ufeff",
    "\u200b",
]
PUNCT = list("#!?;'=+@*&%$()[]{}<>~`^")
DELIMS = list(" \t-_./:|\\")
CONFIG_NAME = "keysync-config.yaml"


DOOM = float(os.environ.get("ORACLE_DOOM", "0"))


def write_cfg(case: Path, cfg: dict[str, Any]) -> None:
    """Write the config (JSON is YAML) into the case folder."""
    (case / CONFIG_NAME).write_text(json.dumps(cfg, ensure_ascii=True, indent=1))


def _fresh(case: Path) -> None:
    (case / "input").mkdir(parents=True, exist_ok=True)


def rand_key(rng: random.Random, control: bool = False) -> str:
    """A business key: mostly SPEC's shapes (CUST-, PROD-, TXN-), sometimes noise."""
    kind = rng.random()
    if kind < 0.3:
        return f"CUST-{rng.randint(0, 99999):05d}"
    if kind < 0.5:
        return f"PROD-{''.join(rng.choice('ABCXYZ') for _ in range(3))}-{rng.randint(0, 999)}"
    if kind < 0.65:
        return f"TXN-{rng.randint(2016, 2026)}-{rng.randint(0, 999):03d}"
    alpha = "abcXYZ0123456789" + "".join(DELIMS + UNICODE + PUNCT) + '",\n\r'
    if control:
        alpha += "".join(CONTROL)
    return "".join(rng.choice(alpha) for _ in range(rng.randint(1, 12)))


def variant(rng: random.Random, key: str) -> str:
    """A messy spelling of a key (case, delimiters, padding, accents, punctuation)."""
    if rng.random() < 0.4:
        return key
    s = key
    if rng.random() < 0.3:
        s = s.lower()
    if rng.random() < 0.3:
        s = s.replace(
            "-", rng.choice(["_", ".", " ", "--", "/", "-_-", ":", "|", "\\", "\t", "-#-"])
        )
    if rng.random() < 0.2:
        s = rng.choice([" ", "  ", "\t", "\u00a0", ""]) + s + rng.choice([" ", "", "\t "])
    if rng.random() < 0.1:
        s = s.replace("E", "É").replace("A", "Å")
    if rng.random() < 0.1:
        s = rng.choice(PUNCT) + s
    if rng.random() < 0.05:
        s = s + rng.choice(UNICODE)
    if rng.random() < 0.05:
        s = "0" + s if rng.random() < 0.5 else s.replace("0", "", 1)
    return s


def rand_ts(rng: random.Random) -> str:
    """A last_seen_at cell: usual UTC, offsets, fractions, a space, no time, junk, empty."""
    r = rng.random()
    d = f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    t = f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
    if r < 0.5:
        return f"{d}T{t}Z"
    if r < 0.6:
        offsets = ["+05:00", "-08:00", "+00:00", "+14:00", "-12:00"]
        return f"{d}T{t}{rng.choice(offsets)}"
    if r < 0.65:
        return f"{d}T{t}.{rng.randint(0, 999999):06d}Z"
    if r < 0.7:
        return f"{d} {t}"
    if r < 0.75:
        return ""
    if r < 0.8:
        junk = [
            "garbage",
            "yesterday",
            "=1+1",
            "-5",
            "2026-13-45T99:99:99Z",
            " 2026-01-01T00:00:00Z ",
        ]
        return rng.choice(junk)
    if r < 0.85:
        return d
    return f"{d}T{t}Z"


def cell(rng: random.Random, value: str, delim: str) -> str:
    """A CSV cell, quoted when it must be (and now and then when it need not)."""
    if any(c in value for c in (delim, '"', "\n", "\r")) or rng.random() < 0.05:
        return '"' + value.replace('"', '""') + '"'
    return value


# ------------------------------------------------------------------ single


def gen_single(seed: int, case: Path, control: bool = False) -> dict[str, Any]:
    """Random inputs and settings: normalization rules, delimiters, encodings, BOMs, CRLF,
    corrupt rows of every error_type, missing peers, batch sizes, workers, strategies."""
    rng = random.Random(seed)
    _fresh(case)
    peers = rng.sample(["B", "C", "D", "E"], rng.randint(1, 4))
    if rng.random() < 0.7:
        peers.sort()
    systems = ["A", *peers]
    rules: dict[str, Any] = {}
    if rng.random() < 0.6:
        rules = {
            "trim": rng.random() < 0.8,
            "ascii_fold": rng.random() < 0.8,
            "uppercase": rng.random() < 0.8,
            "collapse_delims": rng.choice(["-", "-", "_", ".", " ", "#", "/", None]),
            "delimiters": (
                "".join(rng.sample([*DELIMS, "#", ",", ";", "'"], rng.randint(0, 9)))
                if rng.random() < 0.5
                else " \t-_./:|\\"
            ),
            "strip_non_alnum": rng.random() < 0.8,
            "pad_numbers": rng.choice([0, 0, 0, 1, 3, 6]),
        }
    max_len = rng.choice([256, 256, 12, 20])
    pool = [rand_key(rng, control) for _ in range(rng.randint(3, 40))]
    names = ["Ann", "Bob, Jr.", 'The "Q"', "multi\nline", "", "=cmd", "é"]
    if control:
        names += CONTROL
    sources: dict[str, Any] = {}
    ts_col = "last_seen_at"
    for s in systems:
        delim = rng.choice([",", ",", ",", ";", "\t", "|"])
        kc = rng.choice(["key", "key", "id"])
        src: dict[str, Any] = {"type": "csv", "path": f"./input/{s}.csv", "key_column": kc}
        if delim != ",":
            src["delimiter"] = delim
        if rng.random() < 0.1:
            src["encoding"] = "latin-1"
        enc = src.get("encoding", "utf-8")
        sources[s] = src
        if s != "A" and rng.random() < 0.1:
            continue  # file absent: the peer is unavailable
        # ORACLE_DOOM=p (h7): with probability p (A: p/4) every row of the source is rejected
        doom_rng = random.Random(f"{seed}-{s}-doom")
        doom = doom_rng.random() < DOOM * (0.25 if s == "A" else 1)
        cols = [kc, "name", ts_col]
        if rng.random() < 0.2:
            rng.shuffle(cols)
        if rng.random() < 0.1:
            cols.remove(ts_col)
        if rng.random() < 0.1:
            cols.append("extra")
        nl = b"\r\n" if rng.random() < 0.3 else b"\n"
        mixed = rng.random() < 0.1
        out = bytearray()
        if rng.random() < 0.15:
            out += b"\xef\xbb\xbf"
        out += delim.join(cols).encode() + nl
        for _ in range(rng.randint(0, 40)):
            k = variant(rng, rng.choice(pool))
            if rng.random() < 0.03:
                k = "x" * rng.randint(max_len - 1, max_len + 2)
            if doom:
                k = doom_rng.choice(["", "   ", "x" * (max_len + 1), "y" * (max_len + 5)])
            vals = {kc: k, "name": rng.choice(names), ts_col: rand_ts(rng), "extra": "z"}
            cells = [cell(rng, vals[c], delim) for c in cols]
            r = rng.random()
            if r < 0.03:
                cells.append("extra")
            elif r < 0.06 and len(cells) > 1:
                cells.pop()
            line = delim.join(cells)
            try:
                b = line.encode(enc)
            except UnicodeEncodeError:
                b = line.encode("utf-8")
            r = rng.random()
            if r < 0.02:
                b = b + b"\x00x"
            elif r < 0.04:
                b = b.replace(b"x", b"\xff", 1) + b"\xfe"
            elif r < 0.06:
                b = b'"unclosed' + delim.encode() + b
            elif r < 0.08:
                b = b'"ab"c' + delim.encode() + b
            elif r < 0.10:
                out += (b"" if rng.random() < 0.5 else b"\r") + nl  # blank line
            elif r < 0.11:
                out += b"   " + nl
            out += b + ((b"\r\n" if rng.random() < 0.5 else b"\n") if mixed else nl)
        if rng.random() < 0.1 and out.endswith(b"\n"):
            out = bytearray(out.rstrip(b"\r\n"))
        (case / "input" / f"{s}.csv").write_bytes(bytes(out))
    proc: dict[str, Any] = {"batch_size": rng.choice([1000, 1, 2, 3, 7]), "max_key_length": max_len}
    if rng.random() < 0.3:
        proc["parallel"] = False
    elif rng.random() < 0.3:
        proc["workers"] = rng.choice([1, 2, 3])
    prov: dict[str, Any] = {"strategy": rng.choice(["mirror", "mirror", "namespaced"])}
    if prov["strategy"] == "namespaced" and rng.random() < 0.5:
        prov["namespace_separator"] = rng.choice(["/", "::", "#"])
    cfg: dict[str, Any] = {"sources": sources, "processing": proc, "provisioning": prov}
    if rules:
        if rules["pad_numbers"] > max_len:
            rules["pad_numbers"] = 0
        cfg["normalize"] = rules
    write_cfg(case, cfg)
    return cfg


# ------------------------------------------------------------------ structure


def _structure_record(
    rng: random.Random, delim: str, nl: bytes, ncols: int, ki: int, big: bool
) -> bytes:
    """One record: multi-line quoted cells (around the 100-line limit), quote escapes,
    runaway quotes, text after a closing quote, wrong cell counts, blank lines."""
    n = rng.randint(0, 30)
    key = rng.choice([f"K-{n}", f"k_{n}", f" K {n} "])
    cells = []
    for c in range(ncols):
        v = key if c == ki else rng.choice(["x", "", "a b", "2026-01-01T00:00:00Z"])
        if c != ki and big and rng.random() < 0.5:
            v = "y" * rng.randint(100, 2000)
        cells.append(v)
    r = rng.random()
    if r < 0.15:
        c = rng.randrange(ncols)
        nlines = rng.choice([1, 2, 3, 5, 20, 99, 100, 101, 150])
        body = nl.decode().join(f"l{i}" for i in range(nlines))
        cells[c] = '"' + cells[c] + body + '"'
    elif r < 0.2:
        c = rng.randrange(ncols)
        cells[c] = '"' + cells[c] + '""q""' + delim + '"'
    elif r < 0.25:
        c = rng.randrange(ncols)
        cells[c] = '"' + cells[c]
    elif r < 0.28:
        c = rng.randrange(ncols)
        cells[c] = '"' + cells[c] + '"z'
    elif r < 0.30:
        cells.append("more")
    elif r < 0.32 and ncols > 1:
        cells.pop()
    elif r < 0.34:
        return nl
    elif r < 0.35:
        return b"\r" + nl if nl == b"\n" else nl
    elif r < 0.36:
        return b" " + nl
    return delim.join(cells).encode() + nl


def gen_structure(seed: int, case: Path, big: bool = False) -> dict[str, Any]:
    """CSV-structure stress for systems A, B, C (``big``: 1000-2500 records, long cells)."""
    rng = random.Random(seed)
    _fresh(case)
    sources: dict[str, Any] = {}
    for s in ["A", "B", "C"]:
        delim = rng.choice([",", ",", ";", "\t"])
        ncols = rng.randint(1, 4)
        ki = rng.randrange(ncols)
        cols = [f"c{i}" for i in range(ncols)]
        cols[ki] = "key"
        if ncols > 1 and rng.random() < 0.7:
            cols[(ki + 1) % ncols] = "last_seen_at"
        nl = rng.choice([b"\n", b"\r\n"])
        out = bytearray(delim.join(cols).encode() + nl)
        for _ in range(rng.randint(1000, 2500) if big else rng.randint(0, 120)):
            out += _structure_record(rng, delim, nl, ncols, ki, big)
        if rng.random() < 0.2:
            out = bytearray(out.rstrip(b"\r\n"))
        if rng.random() < 0.1:
            out += b'"runaway at end' + nl + b"x" + nl
        (case / "input" / f"{s}.csv").write_bytes(bytes(out))
        sources[s] = {"path": f"./input/{s}.csv"}
        if delim != ",":
            sources[s]["delimiter"] = delim
    proc: dict[str, Any] = {"batch_size": rng.choice([1, 2, 3, 5, 50, 1000])}
    if rng.random() < 0.3:
        proc["parallel"] = False
    elif rng.random() < 0.3:
        proc["workers"] = rng.choice([1, 2])
    cfg: dict[str, Any] = {"sources": sources, "processing": proc}
    write_cfg(case, cfg)
    return cfg


# ------------------------------------------------------------------ names


def gen_names(seed: int, case: Path) -> dict[str, Any]:
    """Odd sources: system names, an authority not called A, up to 8 systems, odd
    delimiters (`.`, `^`, `§`, `é`, space...), encodings (cp1252, latin-1, utf-8-sig),
    key columns with spaces and accents."""
    rng = random.Random(seed)
    _fresh(case)
    all_names = ["A", "B", "ERP", "crm", "Z", "AA", "a", "_x", "1", "S3", "b_2", "Shop", "X"]
    names = rng.sample(all_names, rng.randint(2, 8))
    pool = [rand_key(rng) for _ in range(rng.randint(3, 25))]
    sources: dict[str, Any] = {}
    for s in names:
        delim = rng.choice([",", ".", "^", "]", "-", "\\", " ", "§", "é", "\t", "'", "#", "|"])
        enc = rng.choice(["utf-8", "utf-8", "cp1252", "utf-8-sig", "latin-1"])
        kc = rng.choice(["key", "Kunden Nr", "clé"])
        sources[s] = {
            "path": f"./input/{s}.csv",
            "delimiter": delim,
            "encoding": enc,
            "key_column": kc,
        }
        cols = [kc, "name", "last_seen_at"]
        rng.shuffle(cols)
        file_enc = "utf-8" if enc == "utf-8-sig" else enc
        out = bytearray()
        if enc == "utf-8-sig" or rng.random() < 0.1:
            out += b"\xef\xbb\xbf"

        def encode(text: str, file_enc: str = file_enc) -> bytes:
            try:
                return text.encode(file_enc)
            except UnicodeEncodeError:
                return text.encode("utf-8")

        out += encode(delim.join(cell(rng, c, delim) for c in cols)) + b"\n"
        for _ in range(rng.randint(0, 30)):
            vals = {
                kc: variant(rng, rng.choice(pool)),
                "name": rng.choice(["n", "a b", "x" + delim + "y", "€uro", "\x81"]),
                "last_seen_at": rand_ts(rng),
            }
            line = delim.join(cell(rng, vals[c], delim) for c in cols)
            out += encode(line) + rng.choice([b"\n", b"\r\n"])
        (case / "input" / f"{s}.csv").write_bytes(bytes(out))
    cfg: dict[str, Any] = {
        "sources": sources,
        "processing": {"batch_size": rng.choice([1, 3, 1000]), "parallel": rng.random() < 0.6},
        "provisioning": {"strategy": rng.choice(["mirror", "namespaced"])},
    }
    write_cfg(case, cfg)
    return cfg


# ------------------------------------------------------------------ changes between runs


def mutate_files(rng: random.Random, case: Path, cfg: dict[str, Any]) -> list[str]:
    """Change some input files in place (lines deleted, added, changed at the same size,
    reversed, a runaway quote appended; a peer file created or deleted). Returns what."""
    ops = []
    for s, src in cfg["sources"].items():
        p = case / src["path"]
        r = rng.random()
        if r < 0.35:
            ops.append(f"{s}:same")
            continue
        if not p.exists():
            p.write_bytes(b"key,last_seen_at\nNEW-1,2026-01-01T00:00:00Z\n")
            ops.append(f"{s}:created")
            continue
        lines = p.read_bytes().split(b"\n")
        if r < 0.5 and len(lines) > 2:
            del lines[rng.randrange(1, len(lines))]
            ops.append(f"{s}:del-line")
        elif r < 0.65:
            added = b"ADDED-%d,x,2026-02-02T00:00:00Z" % rng.randint(0, 9)
            lines.insert(rng.randrange(1, len(lines) + 1), added)
            ops.append(f"{s}:add-line")
        elif r < 0.75 and len(lines) > 2:
            i = rng.randrange(1, len(lines))
            lines[i] = lines[i].swapcase()  # same size, other bytes
            ops.append(f"{s}:swapcase")
        elif DOOM and r < 0.85 and rng.random() < DOOM:
            n = max(1, len(lines) - 1)
            lines = lines[:1] + [b"\x00bad,x,y"] * n + [b""]
            ops.append(f"{s}:all-rejected")
        elif r < 0.85 and s != "A":
            p.unlink()
            ops.append(f"{s}:deleted")
            continue
        elif r < 0.92:
            lines = lines[:1] + lines[1:][::-1]
            ops.append(f"{s}:reversed")
        else:
            lines.append(b'"runaway')
            ops.append(f"{s}:runaway")
        p.write_bytes(b"\n".join(lines))
    return ops


def change_settings(rng: random.Random, cfg: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A copy of the config with 1-3 settings that shape the rows changed (the files stay)."""
    c: dict[str, Any] = json.loads(json.dumps(cfg))
    what = []
    n = c.setdefault("normalize", {})
    for _ in range(rng.randint(1, 3)):
        r = rng.randrange(9)
        if r == 0:
            n["pad_numbers"] = rng.choice([0, 2, 5])
            what.append("pad_numbers")
        elif r == 1:
            n["uppercase"] = not n.get("uppercase", True)
            what.append("uppercase")
        elif r == 2:
            n["collapse_delims"] = rng.choice(["-", "_", None])
            what.append("collapse_delims")
        elif r == 3:
            n["strip_non_alnum"] = not n.get("strip_non_alnum", True)
            what.append("strip_non_alnum")
        elif r == 4:
            c["processing"]["max_key_length"] = rng.choice([5, 10, 300])
            what.append("max_key_length")
        elif r == 5:
            s = rng.choice(list(c["sources"]))
            c["sources"][s]["timestamp_column"] = rng.choice(["name", "nope", "last_seen_at"])
            what.append(f"{s}.timestamp_column")
        elif r == 6:
            s = rng.choice(list(c["sources"]))
            c["sources"][s]["encoding"] = rng.choice(["latin-1", "utf-8", "cp1252"])
            what.append(f"{s}.encoding")
        elif r == 7:
            n["trim"] = not n.get("trim", True)
            what.append("trim")
        else:
            n["delimiters"] = rng.choice([" ", "-_", " \t-_./:|\\"])
            what.append("delimiters")
    if n.get("pad_numbers", 0) > c["processing"].get("max_key_length", 256):
        n["pad_numbers"] = 0
    return c, what


# ------------------------------------------------------------------ multirun


def gen_multirun(seed: int, case: Path) -> tuple[random.Random, dict[str, Any]]:
    """Config for a registry sequence over systems A-D (inputs come from multirun_inputs)."""
    rng = random.Random(seed)
    _fresh(case)
    cfg: dict[str, Any] = {
        "sources": {s: {"path": f"./input/{s}.csv"} for s in "ABCD"},
        "provisioning": {"strategy": rng.choice(["mirror", "namespaced"])},
        "processing": {"parallel": rng.random() < 0.5},
    }
    write_cfg(case, cfg)
    return rng, cfg


def multirun_inputs(rng: random.Random, case: Path, cfg: dict[str, Any]) -> None:
    """One run's inputs: up to 8 of 12 keys per system, messy spellings, some repeated;
    a peer's file is missing now and then (unavailable)."""
    pool = [f"K-{i}" for i in range(12)]
    for s in cfg["sources"]:
        p = case / "input" / f"{s}.csv"
        if s != "A" and rng.random() < 0.15:
            p.unlink(missing_ok=True)
            continue
        rows = ["key,last_seen_at"]
        if (
            DOOM
            and random.Random(f"{len(list(p.parent.iterdir()))}-{s}-{rng.random()}").random() < DOOM
        ):
            rows += [f"#!?,2026-01-0{i + 1}T00:00:00Z" for i in range(rng.randint(1, 3))]
            p.write_text("\n".join(rows) + "\n")
            continue
        for k in rng.sample(pool, rng.randint(0, 8)):
            for _ in range(rng.choice([1, 1, 2])):
                raw = rng.choice([k, k.lower(), k.replace("-", "_")])
                stamp = (
                    f"2026-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T0{rng.randint(0, 9)}:00:00Z"
                )
                rows.append(f"{raw},{stamp}")
        p.write_text("\n".join(rows) + "\n")


# ------------------------------------------------------------------ mock


def gen_mock(seed: int, case: Path) -> tuple[dict[str, Any], list[str]]:
    """Config plus `keysync generate` arguments: mock data of every scenario."""
    rng = random.Random(seed)
    case.mkdir(parents=True, exist_ok=True)
    cfg: dict[str, Any] = {
        "sources": {s: {"path": f"./input/{s}.csv"} for s in "ABCDE"},
        "simulation": {
            "seed": seed,
            "failures": {"inject_corruption": rng.choice([0.01, 0.05, 0.2])},
        },
        "processing": {"batch_size": rng.choice([50, 1000]), "parallel": rng.random() < 0.5},
    }
    if rng.random() < 0.4:
        cfg["normalize"] = {
            "pad_numbers": rng.choice([0, 6]),
            "collapse_delims": rng.choice(["-", "_"]),
        }
    write_cfg(case, cfg)
    scenario = rng.choice(["normal", "drift", "failure", "recovery"])
    args = [
        "--keys",
        str(rng.choice([200, 1000, 3000])),
        "--seed",
        str(seed),
        "--scenario",
        scenario,
    ]
    return cfg, args


# ------------------------------------------------------------------ series


def gen_series(seed: int, case: Path) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """A `keysync generate --days D` series: (config, plan, generate arguments).

    The seed picks the scenario (seed % 4: normal, drift, failure, recovery, so four
    consecutive seeds cover them all), keys per system, days, strategy,
    `deprecate_after_runs`, auto-approve, rules, corruption, how often a system keeps
    yesterday's file (``stale``) and whether manual commands, dry runs and `--systems`
    days are mixed in (``mix``).
    """
    rng = random.Random(seed * 13 + 5)
    plan: dict[str, Any] = {
        "scenario": ["normal", "drift", "failure", "recovery"][seed % 4],
        "keys": rng.choice([200, 500, 1000, 2000]),
        "days": rng.randint(4, 7),
        "strategy": "namespaced" if rng.random() < 0.3 else "mirror",
        "deprecate_after_runs": rng.choice([1, 2, 3]),
        "auto_approve": rng.random() < 0.5,
        "stale": rng.choice([0.0, 0.3, 0.5]),
        "mix": rng.random() < 0.7,
    }
    cfg: dict[str, Any] = {
        "sources": {s: {"path": f"./input/{s}.csv"} for s in "ABCDE"},
        "provisioning": {
            "strategy": plan["strategy"],
            "deprecate_after_runs": plan["deprecate_after_runs"],
        },
        "processing": {"parallel": rng.random() < 0.5, "batch_size": rng.choice([100, 1000])},
    }
    if rng.random() < 0.3:
        cfg["normalize"] = {"pad_numbers": 7, "collapse_delims": "_"}
    if rng.random() < 0.3:
        cfg["simulation"] = {"failures": {"inject_corruption": 0.05}}
    gen_args = ["--keys", str(plan["keys"]), "--seed", str(seed), "--scenario", plan["scenario"]]
    gen_args += ["--days", str(plan["days"]), "--out", "./g"]
    case.mkdir(parents=True, exist_ok=True)
    write_cfg(case, cfg)
    return cfg, plan, gen_args


# ------------------------------------------------------------------ edits (day to day)

EDIT_OPS = (
    *("add", "add", "remove", "reorder", "stamps", "stamps", "dup", "bad", "multiline"),
    *("header-name", "header-ts", "longnote", "same-size"),
)
_STAMP = re.compile(rb"20\d\d-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?")


def _header(data: bytes, src: dict[str, Any]) -> tuple[list[str], str, str]:
    enc = src.get("encoding", "utf-8")
    delim = src.get("delimiter", ",")
    head = data.split(b"\n", 1)[0].removeprefix(b"\xef\xbb\xbf").rstrip(b"\r")
    return head.decode(enc, "replace").split(delim), delim, enc


def _edit_row(
    rng: random.Random,
    cols: list[str],
    delim: str,
    enc: str,
    src: dict[str, Any],
    pool: list[str],
    note_lines: int = 0,
) -> bytes:
    vals = []
    for c in cols:
        if c == src.get("key_column", "key"):
            v = variant(rng, rng.choice(pool)) if rng.random() < 0.8 else rand_key(rng)
        elif c == src.get("timestamp_column", "last_seen_at"):
            v = rand_ts(rng)
        elif note_lines:
            v = "note " + "\n".join(f"line {i}" for i in range(note_lines))
        else:
            v = rng.choice(["Ann", "Bob, Jr.", 'The "Q"', "é", ""])
        vals.append(cell(rng, v, delim))
    try:
        return delim.join(vals).encode(enc)
    except UnicodeEncodeError:
        return delim.join(vals).encode("utf-8")


def edit_file(rng: random.Random, p: Path, src: dict[str, Any], pool: list[str]) -> str:
    """One day's edit of an input file: rows added, removed, swapped or reversed, new
    timestamps, a duplicate, a corrupt row (NUL, bad byte, bad quote, extra / missing
    cell, runaway quote), a 2-6 or 99-130 line note, the `name` or timestamp column
    renamed (and back), a same-size change. Returns what was done."""
    data = p.read_bytes()
    cols, delim, enc = _header(data, src)
    lines = data.split(b"\n")
    trail = lines[-1] == b""
    if trail:
        lines.pop()
    body = lines[1:]
    op = rng.choice(EDIT_OPS)
    if op == "add":
        for _ in range(rng.randint(1, 5)):
            body.insert(rng.randint(0, len(body)), _edit_row(rng, cols, delim, enc, src, pool))
    elif op == "remove":
        for _ in range(rng.randint(1, 3)):
            if body:
                del body[rng.randrange(len(body))]
    elif op == "reorder" and len(body) > 1:
        i, j = rng.randrange(len(body)), rng.randrange(len(body))
        body[i], body[j] = body[j], body[i]
        if rng.random() < 0.3:
            body.reverse()
    elif op == "stamps":
        for i in rng.sample(range(len(body)), min(len(body), 5)):
            new = rand_ts(rng).encode()
            body[i] = _STAMP.sub(lambda _m, new=new: new, body[i], count=1)
    elif op == "dup" and body:
        body.insert(rng.randint(0, len(body)), body[rng.randrange(len(body))])
    elif op == "bad":
        kind = rng.choice(["nul", "enc", "quote", "extra", "missing", "runaway"])
        b = _edit_row(rng, cols, delim, enc, src, pool)
        d = delim.encode()
        b = {
            "nul": b + b"\x00",
            "enc": b + b"\xff\xfe",
            "quote": b'"ab"c' + d + b,
            "extra": b + d + b"x",
            "missing": b.split(d)[0] if len(cols) > 1 else b + d + b"y",
            "runaway": b'"' + b,
        }[kind]
        body.insert(rng.randint(0, len(body)), b)
        op += "-" + kind
    elif op in ("multiline", "longnote"):
        n = rng.randint(2, 6) if op == "multiline" else rng.choice([99, 100, 101, 130])
        body.insert(rng.randint(0, len(body)), _edit_row(rng, cols, delim, enc, src, pool, n))
    elif op in ("header-name", "header-ts"):
        ts = src.get("timestamp_column", "last_seen_at")
        target = "name" if op == "header-name" else ts
        if target in cols:
            new = [("title" if c == "name" else "seen") if c == target else c for c in cols]
        elif op == "header-ts" and "seen" in cols:
            new = [ts if c == "seen" else c for c in cols]  # renamed back
        else:
            new = ["name" if c == "title" else c for c in cols]
        h = lines[0]
        bom = b"\xef\xbb\xbf" if h.startswith(b"\xef\xbb\xbf") else b""
        cr = b"\r" if h.endswith(b"\r") else b""
        lines[0] = bom + delim.join(new).encode(enc, "replace") + cr
    elif op == "same-size" and body:
        i = rng.randrange(len(body))
        body[i] = body[i].swapcase()
    p.write_bytes(b"\n".join([lines[0], *body]) + (b"\n" if trail else b""))
    return f"{p.stem}:{op}"


class Edits:
    """Day-to-day changes of a `gen_single` case (the old driver_edits2.py): file edits,
    a peer's file removed and put back, the authority's file removed (exit 3), the
    strategy switched, a `timestamp_column` changed, a system taken out of the config and
    put back, the incremental project's snapshots deleted or damaged, a rule changed."""

    def __init__(self, rng: random.Random, work: Path, cfg: dict[str, Any]) -> None:
        self.rng, self.work, self.cfg = rng, work, cfg
        self.names = list(cfg["sources"])
        self.pool = [rand_key(rng) for _ in range(30)]
        self.aside: dict[str, bytes] = {}  # system -> its removed file
        self.out_of_config: dict[str, dict[str, Any]] = {}

    def day(self, snapshots: Path) -> list[str]:
        """Change the work folder for the next day; ``snapshots``: the incremental
        project's snapshot folder. Returns what changed."""
        rng, cfg, ops = self.rng, self.cfg, []
        auth = self.names[0]
        for s in self.names:
            if s not in cfg["sources"]:
                continue
            p = self.work / cfg["sources"][s]["path"]
            r = rng.random()
            if s in self.aside and (r < 0.6 or s == auth):
                p.write_bytes(self.aside.pop(s))
                ops.append(f"{s}:restored")
            elif p.exists() and s != auth and r < 0.08:
                self.aside[s] = p.read_bytes()
                p.unlink()
                ops.append(f"{s}:removed")
            elif p.exists() and r < 0.6:
                ops.append(edit_file(rng, p, cfg["sources"][s], self.pool))
        r = rng.random()
        a_path = self.work / cfg["sources"][auth]["path"]
        if r < 0.06:
            prov = cfg.setdefault("provisioning", {})
            prov["strategy"] = "namespaced" if prov.get("strategy") != "namespaced" else "mirror"
            ops.append(f"strategy->{prov['strategy']}")
        elif r < 0.12 and a_path.exists() and auth not in self.aside:
            self.aside[auth] = a_path.read_bytes()
            a_path.unlink()
            ops.append(f"{auth}:removed")
        elif r < 0.18:
            s = rng.choice(self.names)
            src = cfg["sources"].get(s) or self.out_of_config[s]
            ts = src.get("timestamp_column", "last_seen_at")
            src["timestamp_column"] = "name" if ts == "last_seen_at" else "last_seen_at"
            ops.append(f"{s}:timestamp_column->{src['timestamp_column']}")
        elif r < 0.24 and len(self.names) > 2:
            if self.out_of_config:
                s = next(iter(self.out_of_config))
                back = self.out_of_config.pop(s)
                cfg["sources"] = {
                    n: cfg["sources"].get(n) or back
                    for n in self.names
                    if n in cfg["sources"] or n == s
                }
                ops.append(f"config:+{s}")
            else:
                s = rng.choice(self.names[1:])
                self.out_of_config[s] = cfg["sources"].pop(s)
                ops.append(f"config:-{s}")
        elif r < 0.30 and snapshots.exists():
            snaps = sorted(snapshots.glob("*.msgpack"))
            if rng.random() < 0.5 or not snaps:
                shutil.rmtree(snapshots)
                ops.append("incremental:snapshots-deleted")
            else:
                sp = rng.choice(snaps)
                b = bytearray(sp.read_bytes())
                if len(b) > 40:
                    b[len(b) // 2] ^= 0x01
                    sp.write_bytes(bytes(b))
                    ops.append(f"incremental:snapshot-damaged:{sp.stem}")
        if rng.random() < 0.12:
            n = cfg.setdefault("normalize", {})
            which = rng.choice(["pad_numbers", "uppercase", "collapse_delims", "max_key_length"])
            if which == "pad_numbers":
                n["pad_numbers"] = rng.choice([0, 3, 6])
            elif which == "uppercase":
                n["uppercase"] = not n.get("uppercase", True)
            elif which == "collapse_delims":
                n["collapse_delims"] = rng.choice(["-", "_", "."])
            else:
                cfg["processing"]["max_key_length"] = rng.choice([12, 20, 256])
                if n.get("pad_numbers", 0) > cfg["processing"]["max_key_length"]:
                    n["pad_numbers"] = 0
            ops.append(f"rule:{which}")
        write_cfg(self.work, cfg)
        return ops
