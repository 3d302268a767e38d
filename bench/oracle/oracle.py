"""An independent model of keysync's reconciliation, written from SPEC.md (the contract).

Where SPEC.md is silent, the model follows README.md and docs/*.md (each function says
which rule it implements). It is not derived from keysync's code: it reads the input
files with its own CSV rules and computes the report rows a run must write.

Two points follow keysync where its documented behaviour is narrower than a literal
reading of "newest" (README "Reports", docs/state.md "last_seen_at"); see
``registry_last_seen`` and ``newest_stamp``.

Everything here is a pure function of the config and the input files.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NamedTuple

ASCII_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
DEFAULT_DELIMITERS = " \t-_./:|\\"
MAX_RECORD_LINES = 10_000  # README "Reading the inputs": a quoted field spans at most 10,000 lines
TRUSTED_LINES = 100  # README: within 100 lines a quoted field is plain CSV; past it, checked
PREVIEW_CHARS = 200  # README: `raw` past 200 characters is cut, with `…`
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # SPEC "Reports"


# ------------------------------------------------------------------ normalization


def normalize(raw: str, rules: dict[str, Any]) -> str:
    """SPEC "Normalization", steps 1-6, in that order, plus README's idempotence refinement.

    ``rules`` is the config's ``normalize`` mapping; missing entries take SPEC's defaults.
    Returns "" for a key that normalizes to nothing (step 7 rejects it as ``empty-key``).
    """
    s = raw
    trim = rules.get("trim", True)
    if trim:  # 1. strip leading/trailing whitespace
        s = s.strip()
    if rules.get("ascii_fold", True):  # 2. NFKD, then drop combining marks
        s = unicodedata.normalize("NFKD", s)
        s = "".join(c for c in s if not unicodedata.combining(c))
    if rules.get("uppercase", True):  # 3.
        s = s.upper()
    d = rules.get("collapse_delims", "-")
    delims = set(rules.get("delimiters", DEFAULT_DELIMITERS))
    if d is not None:  # 4. each maximal run of delimiter chars becomes one D
        out: list[str] = []
        in_run = False
        for c in s:
            if c in delims:
                if not in_run:
                    out.append(d)
                in_run = True
            else:
                out.append(c)
                in_run = False
        s = "".join(out)
    if rules.get("strip_non_alnum", True):  # 5. keep ASCII A-Z, 0-9 and D
        s = "".join(c for c in s if c in ASCII_ALNUM or (d is not None and c == d))
        if d is not None:  # then runs of D collapse again and D goes at both ends
            s = re.sub(re.escape(d) + "+", lambda _m: d, s).strip(d)
    width = rules.get("pad_numbers", 0)
    if width > 0:  # 6. left-pad each maximal digit run to the width
        s = re.sub(r"[0-9]+", lambda m: m.group().zfill(width), s)
    if trim and not rules.get("strip_non_alnum", True):
        # README "Normalization": with strip_non_alnum off the key is trimmed once more
        # at the end (folding "´" gives a space), so normalizing twice equals once.
        s = s.strip()
    return s


def guard(value: str) -> str:
    """SPEC "Reports": a cell a spreadsheet would run as a formula gets a leading `'`."""
    if value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def preview(text: str) -> str:
    """README "Reading the inputs": `raw` as read, NUL shown as `\\x00`, cut at 200 chars."""
    text = text.replace("\x00", "\\x00").rstrip("\r\n")
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "…"


# ------------------------------------------------------------------ reading a source


class Unavailable(Exception):
    """The source cannot be read at all (README: missing, empty, no/duplicate key column...)."""


class Row(NamedTuple):
    line: int  # SPEC: 1-based physical line where the record starts (header = 1)
    raw_key: str
    key: str  # normalized
    stamp: str  # the timestamp_column cell as written ("" without that column)


class Rejected(NamedTuple):
    line: int
    error_type: str
    raw: str


@dataclass
class SourceData:
    rows: list[Row] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    rows_read: int = 0

    def index(self) -> dict[str, list[Row]]:
        """Normalized key -> its rows in file order."""
        idx: dict[str, list[Row]] = {}
        for r in self.rows:
            idx.setdefault(r.key, []).append(r)
        return idx


def _data_encoding(encoding: str) -> str:
    """README: only the file's first BOM is special; `utf-8-sig` data lines decode as utf-8."""
    if encoding.lower().replace("_", "-") in ("utf-8-sig", "utf8-sig"):
        return "utf-8"
    return encoding


def _looks_like_row(line: bytes, encoding: str, delim: str, ncols: int) -> bool:
    """README: past 100 lines, a quoted record "whose lines look like rows of the file"."""
    if b"\x00" in line:
        return False
    try:
        t = line.decode(encoding).rstrip("\r")
    except UnicodeDecodeError:
        return False
    if "\r" in t:
        return False
    if '"' not in t:
        return len(t.split(delim)) == ncols
    try:
        cells = next(csv.reader([t], delimiter=delim, strict=True))
    except (csv.Error, StopIteration):
        return False
    return len(cells) == ncols


def _flaw(raw: bytes, encoding: str) -> str | None:
    """README's first two reasons for one line: `nul-byte`, then `encoding`."""
    if b"\x00" in raw:
        return "nul-byte"
    try:
        raw.decode(encoding)
    except UnicodeDecodeError:
        return "encoding"
    return None


def _parse_quoted(
    lines: list[bytes], i: int, encoding: str, delim: str
) -> tuple[list[str] | None, int, str]:
    """One CSV record starting at physical line index ``i`` that holds a quote.

    SPEC: a quoted field may span lines (one record). Returns (cells or None for
    bad-quoting, physical lines used, record text).
    """
    buf: list[str] = []
    for j in range(i, min(len(lines), i + MAX_RECORD_LINES)):
        # README: a NUL or undecodable line does not end a quoted field: the record is
        # rejected whole for it (read_source), its lines are never rows of their own.
        buf.append(lines[j].replace(b"\x00", b"").decode(encoding, "replace") + "\n")
        reader = csv.reader(io.StringIO("".join(buf)), delimiter=delim, strict=True)
        try:
            got = next(reader)
        except csv.Error as e:
            if "EOF" in str(e) or "unexpected end" in str(e):
                continue  # the quote is still open: take the next line
            break  # a quote the dialect cannot parse
        if reader.line_num == len(buf):  # the record used every line given
            return got, len(buf), "".join(buf).rstrip("\n")
        break
    return None, 1, ""


def read_source(
    path: Path,
    source: dict[str, Any],
    rules: dict[str, Any],
    max_len: int,
) -> SourceData:
    """SPEC "Reports" (rows_read, source_line, error_type) + README "Reading the inputs".

    Reject reasons, first that applies (README): nul-byte, encoding, bad-quoting,
    extra-cell / missing-cell, too-long, empty-key. `raw` is the record as read, or the
    key cell for too-long and empty-key. A blank line (nothing on it but a line end) is
    skipped and not counted; a line of spaces is a record. Lines end with LF or CRLF.
    Raises Unavailable for a file the system cannot be read from.
    """
    enc = _data_encoding(source.get("encoding", "utf-8"))
    delim = source.get("delimiter", ",")
    key_col = source.get("key_column", "key")
    ts_col = source.get("timestamp_column", "last_seen_at")
    if not path.is_file():
        raise Unavailable("missing or not a regular file")
    lines = path.read_bytes().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if not lines:
        raise Unavailable("empty")
    head = lines[0].removeprefix(b"\xef\xbb\xbf")  # README: a leading BOM is ignored
    if not head.strip():
        raise Unavailable("blank header")
    try:
        header_text = head.decode(enc).rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise Unavailable("header encoding") from e
    if "\r" in header_text:
        raise Unavailable("CR line ends")
    try:
        cols = [c.strip() for c in next(csv.reader([header_text], delimiter=delim, strict=True))]
    except csv.Error as e:
        raise Unavailable("header csv") from e
    if cols.count(key_col) != 1:
        raise Unavailable("key column missing or twice")
    ki = cols.index(key_col)
    ti = cols.index(ts_col) if ts_col in cols else None
    ncols = len(cols)
    if all(b.rstrip(b"\r") == b"" for b in lines[1:]):
        # README "Reading the inputs": a file holding its header line and no rows
        # (blank lines only) is unavailable, as an export that failed part way leaves it.
        raise Unavailable("header and no rows")
    out = SourceData()
    i = 1
    while i < len(lines):
        line_no = i + 1
        raw = lines[i]
        if raw.rstrip(b"\r") == b"":
            i += 1
            continue
        out.rows_read += 1
        shown = raw.decode(enc, "backslashreplace")
        own = _flaw(raw, enc)
        used = 1
        if b'"' in raw:
            cells, used, record_text = _parse_quoted(lines, i, enc, delim)
            if cells is None:  # README: the line alone; reading resumes at the next line
                out.rejected.append(Rejected(line_no, own or "bad-quoting", preview(shown)))
                i += 1
                continue
            if used > TRUSTED_LINES:
                if len(cells) != ncols:  # README: a stray quote; resume at the next line
                    out.rejected.append(Rejected(line_no, own or "bad-quoting", preview(shown)))
                    i += 1
                    continue
                inner = lines[i + 1 : i + used]
                if 2 * sum(_looks_like_row(b, enc, delim, ncols) for b in inner) > len(inner):
                    # README: lines that look like rows: the record is rejected whole
                    whole = b"\n".join(lines[i : i + used]).decode(enc, "backslashreplace")
                    out.rejected.append(Rejected(line_no, "bad-quoting", preview(whole)))
                    i += used
                    continue
            flaws = [f for f in map(lambda b: _flaw(b, enc), lines[i : i + used]) if f]
            if flaws:  # README: the first reason that applies, nul-byte before encoding
                whole = b"\n".join(lines[i : i + used]).decode(enc, "backslashreplace")
                kind = "nul-byte" if "nul-byte" in flaws else "encoding"
                out.rejected.append(Rejected(line_no, kind, preview(whole)))
                i += used
                continue
        elif own:
            out.rejected.append(Rejected(line_no, own, preview(shown)))
            i += 1
            continue
        else:
            cells = raw.decode(enc).rstrip("\r").split(delim)
            record_text = raw.decode(enc)
        i += used
        if len(cells) != ncols:
            kind = "extra-cell" if len(cells) > ncols else "missing-cell"
            out.rejected.append(Rejected(line_no, kind, preview(record_text)))
            continue
        key_raw = cells[ki]
        if len(key_raw) > max_len:
            out.rejected.append(Rejected(line_no, "too-long", preview(key_raw)))
            continue
        key = normalize(key_raw, rules)
        if key == "":
            out.rejected.append(Rejected(line_no, "empty-key", preview(key_raw)))
            continue
        out.rows.append(Row(line_no, key_raw, key, cells[ti] if ti is not None else ""))
    return out


# ------------------------------------------------------------------ timestamps

_OFFSET = r"\s*(?:([Zz])|([+-])(\d\d)(?::?(\d\d))?)?\s*"
_EXTENDED = re.compile(
    r"\s*(\d{4})-(\d\d)-(\d\d)(?:[T ](\d\d):(\d\d)(?::(\d\d)(?:[.,](\d{1,9}))?)?)?" + _OFFSET
)
_BASIC = re.compile(
    r"\s*(\d{4})(\d\d)(\d\d)(?:T(\d\d)(\d\d)(?:(\d\d)(?:[.,](\d{1,9}))?)?)?" + _OFFSET
)


def parse_instant(stamp: str) -> datetime | None:
    """docs/state.md "last_seen_at": which values are times, and which instant.

    ISO 8601 with `Z`, an offset (`+05:00`, `+0500`, `+05`), fractions or a space for the
    `T`, extended or basic form; no offset = UTC. Anything else (or an impossible date)
    is not a timestamp: None.
    """
    m = _EXTENDED.fullmatch(stamp) or _BASIC.fullmatch(stamp)
    if m is None:
        return None
    y, mo, d, hh, mi, ss, frac, _z, sign, oh, om = m.groups()
    try:
        t = datetime(
            int(y),
            int(mo),
            int(d),
            int(hh or 0),
            int(mi or 0),
            int(ss or 0),
            int((frac or "0").ljust(6, "0")[:6]),
            tzinfo=timezone.utc,
        )
        if sign:
            off = timedelta(hours=int(oh), minutes=int(om or 0))
            t = t - off if sign == "+" else t + off
    except (ValueError, OverflowError):
        return None
    return t


def newest_stamp(stamps: list[str]) -> str:
    """docs/state.md: the newest value by instant, shown as written; "" when none is given.

    A value that is not a timestamp never beats one that is; an instant written two ways
    keeps the first one given (the first system by name).

    Accepted difference 2 (docs/state.md "shown as written", README "Reports": "no
    timestamp at all, stays as it is"): when no value is a timestamp, keysync still shows
    one as written (a lone `yesterday` is the registry's last_seen_at; among several
    non-timestamps, the greatest text). A strict "newest time" would leave it empty.
    """
    written = [s for s in stamps if s]
    if not written:
        return ""
    timed = [(t, s) for s in written if (t := parse_instant(s)) is not None]
    if timed:
        best = timed[0]
        for t, s in timed[1:]:
            if t > best[0]:
                best = (t, s)
        return best[1]
    return max(written)


# ------------------------------------------------------------------ one run


@dataclass
class Expected:
    """The report rows a run must write (cells formula-guarded as in the files)."""

    exit_code: int
    summary: list[list[str]] = field(default_factory=list)
    missing_in_a: list[list[str]] = field(default_factory=list)
    missing_from_system: list[list[str]] = field(default_factory=list)  # without missing_since
    duplicates: list[list[str]] = field(default_factory=list)
    rejected: list[list[str]] = field(default_factory=list)  # system, line, error_type, raw
    registry: dict[str, dict[str, str]] = field(default_factory=dict)  # fresh state only
    unavailable: list[str] = field(default_factory=list)
    data: dict[str, SourceData | None] = field(default_factory=dict)
    # README "Reading the inputs": sources read to their end with every row rejected are
    # unavailable (data[name] is None) but keep rows_read / rows_rejected and their rows.
    all_rejected: dict[str, SourceData] = field(default_factory=dict)


def read_all(
    cfg: dict[str, Any], base: Path, all_rejected: dict[str, SourceData] | None = None
) -> dict[str, SourceData | None]:
    """Every configured source read (None: unavailable), in config order (first = authority).

    README "Reading the inputs": a file read to its end whose every row is rejected is
    unavailable too (None here); its SourceData goes to ``all_rejected`` when given."""
    rules = cfg.get("normalize", {})
    max_len = cfg.get("processing", {}).get("max_key_length", 256)
    data: dict[str, SourceData | None] = {}
    for name, src in cfg["sources"].items():
        try:
            d = read_source(base / src["path"], src, rules, max_len)
        except Unavailable:
            data[name] = None
            continue
        if d.rows_read > 0 and not d.rows:
            data[name] = None
            if all_rejected is not None:
                all_rejected[name] = d
        else:
            data[name] = d
    return data


def system_order(names: list[str], authority: str) -> list[str]:
    """SPEC: rows "by system" with A first. The model reads SPEC's "A" as the authority (the
    first source), then the others by name (the order keysync uses for every report)."""
    return sorted(names, key=lambda s: (s != authority, s))


def registry_last_seen(holders: list[str], idx: dict[str, dict[str, list[Row]]], key: str) -> str:
    """Accepted difference 1 (docs/state.md "last_seen_at", README "Reports"): the registry's
    last_seen_at is the newest of each holding system's FIRST row of the key ("as in the diff
    reports"), not of every row holding it. Systems in name order."""
    return newest_stamp([idx[s][key][0].stamp for s in sorted(holders)])


def expected_run(cfg: dict[str, Any], base: Path, auto_approve: bool = False) -> Expected:
    """SPEC "The job", "Reports", "Registry and state" for one run on a fresh state.

    Exit codes (SPEC): 3 when A or every peer is unavailable, 4 when a peer is, else 0.
    """
    prov = cfg.get("provisioning", {})
    strategy = prov.get("strategy", "mirror")
    sep = prov.get("namespace_separator", ":")
    names = list(cfg["sources"])
    auth = names[0]
    rejected_only: dict[str, SourceData] = {}
    data = read_all(cfg, base, rejected_only)
    if data[auth] is None or all(data[n] is None for n in names[1:]):
        return Expected(exit_code=3, data=data, all_rejected=rejected_only)
    unavailable = [n for n in names if data[n] is None]
    exp = Expected(
        exit_code=4 if unavailable else 0,
        unavailable=unavailable,
        data=data,
        all_rejected=rejected_only,
    )
    idx = {n: d.index() for n, d in data.items() if d is not None}
    a_idx = idx[auth]
    status = "Active" if auto_approve or prov.get("auto_approve", False) else "Proposed"
    order = system_order(names, auth)
    for name in order:
        d = data[name]
        if d is None and name in rejected_only:
            # README: every row rejected: unavailable, keeps rows_read and rows_rejected,
            # and its rows are in rejected_rows.csv
            r = rejected_only[name]
            exp.summary.append([name, "false", str(r.rows_read), str(len(r.rejected))] + [""] * 6)
            exp.rejected += [[name, str(x.line), x.error_type, x.raw] for x in r.rejected]
            continue
        if d is None:  # SPEC: available = false and empty counts
            exp.summary.append([name, "false"] + [""] * 8)
            continue
        keys = idx[name]
        if name == auth:  # SPEC: matched = unique_keys, both missing counts 0, rate 1.0
            matched, x_only, a_only, rate = len(keys), 0, 0, 1.0
        else:
            matched = len(keys.keys() & a_idx.keys())
            x_only = len(keys.keys() - a_idx.keys())
            a_only = len(a_idx.keys() - keys.keys())
            union = matched + x_only + a_only
            rate = round(matched / union, 4) if union else 1.0
        n_dup = sum(1 for v in keys.values() if len(v) > 1)
        exp.summary.append(
            [
                name,
                "true",
                str(d.rows_read),
                str(len(d.rejected)),
                str(len(keys)),
                str(n_dup),
                str(matched),
                str(x_only),
                str(a_only),
                repr(rate),
            ]
        )
        for k, rows in keys.items():
            if len(rows) > 1:
                distinct = len({r.raw_key for r in rows})
                exp.duplicates.append(
                    [
                        name,
                        k,
                        str(len(rows)),
                        str(distinct),
                        "true" if distinct > 1 else "false",
                        ";".join(str(r.line) for r in rows),
                    ]
                )
        exp.rejected += [[name, str(r.line), r.error_type, r.raw] for r in d.rejected]
        if name == auth:
            continue
        for k in keys.keys() - a_idx.keys():
            first = keys[k][0]  # README: source_key, source_line, last_seen_at of the first row
            mk = k if strategy == "mirror" else f"{name}{sep}{k}"
            exp.missing_in_a.append(
                [k, name, first.raw_key, str(first.line), first.stamp, mk, status]
            )
        for k in a_idx.keys() - keys.keys():
            first = a_idx[k][0]
            exp.missing_from_system.append([k, name, first.raw_key, first.stamp])
    exp.missing_in_a.sort(key=lambda r: (r[0], r[1]))
    exp.missing_from_system.sort(key=lambda r: (r[1], r[0]))
    exp.duplicates.sort(key=lambda r: (order.index(r[0]), r[1]))
    exp.rejected.sort(key=lambda r: (order.index(r[0]), int(r[1])))
    peers = [s for s in order if s != auth and s in idx]
    holders_of: dict[str, list[str]] = {}
    for s in peers:
        for k in idx[s].keys() - a_idx.keys():
            holders_of.setdefault(k, []).append(s)
    for k, holders in holders_of.items():
        groups = [sorted(holders)] if strategy == "mirror" else [[s] for s in holders]
        for group in groups:
            mk = k if strategy == "mirror" else f"{group[0]}{sep}{k}"
            exp.registry[mk] = {
                "status": status,
                "strategy": strategy,
                "source_system": group[0],
                "source_key": idx[group[0]][k][0].raw_key,
                "seen_in": ";".join(group),
                "last_seen_at": registry_last_seen(group, idx, k),
            }
    for rows in (
        exp.summary,
        exp.missing_in_a,
        exp.missing_from_system,
        exp.duplicates,
        exp.rejected,
    ):
        rows[:] = [[guard(c) for c in r] for r in rows]
    exp.registry = {
        guard(mk): {c: guard(v) for c, v in e.items()} for mk, e in exp.registry.items()
    }
    return exp


# ------------------------------------------------------------------ the registry across runs


@dataclass
class RegistryModel:
    """docs/state.md "Registry" across runs (statuses left aside: no approvals happen).

    - a master key is proposed once; source_system / source_key are fixed then;
    - seen_in = every system holding the key now (A included; namespaced: that system
      and/or A); a system not read in a run keeps what it held last time;
    - last_seen_at: newest of the holders' first rows (accepted difference 1), a system not
      read counting with what it showed last; while one is not read the value never goes
      back; kept while no system holds the key.

    Accepted difference 3 (docs/state.md "seen_in"): an entry proposed while a peer is not
    read counts that peer in seen_in with what it held last, but its source_system,
    source_key and last_seen_at come from the systems read in that run.
    """

    strategy: str = "mirror"
    separator: str = ":"
    entries: dict[str, dict[str, str]] = field(default_factory=dict)
    held: dict[str, dict[str, Row]] = field(default_factory=dict)  # system -> key -> first row

    def run(self, cfg: dict[str, Any], base: Path) -> Expected:
        """Apply one run; returns its Expected (registry = the whole registry after it)."""
        exp = expected_run(cfg, base)
        if exp.exit_code == 3:
            return exp
        auth = next(iter(cfg["sources"]))
        for name, d in exp.data.items():
            if d is not None:
                self.held[name] = {k: rows[0] for k, rows in d.index().items()}
        a_keys = self.held.get(auth, {})
        peers = sorted(n for n in self.held if n != auth)
        read_peers = [n for n in peers if exp.data.get(n) is not None]
        new: set[str] = set()
        for name in peers:
            if exp.data.get(name) is None:
                continue  # proposals come from the peers read in this run (the diff)
            for k in self.held[name]:
                if k in a_keys:
                    continue
                if self.strategy == "mirror":
                    mk = k  # source: the first system by name holding it now
                    source = next(s for s in read_peers if k in self.held[s])
                else:
                    mk, source = f"{name}{self.separator}{k}", name
                if mk not in self.entries:
                    new.add(mk)
                    self.entries[mk] = {
                        "key": k,
                        "system": source,
                        "source_system": source,
                        "source_key": self.held[source][k].raw_key,
                        "last_seen_at": "",
                    }
        for e in self.entries.values():
            k = e["key"]
            scope = sorted(self.held) if self.strategy == "mirror" else sorted({auth, e["system"]})
            holders = [s for s in scope if k in self.held.get(s, {})]
            e["seen_in"] = ";".join(holders)
            # last_seen_at comes from the holders read in this run (accepted difference 3;
            # docs/state.md: keysync keeps a system's timestamp only for keys that have an
            # entry, so a holder not read since before the entry existed adds nothing: what
            # it showed while the entry existed is already in the previous value below).
            stamps = [self.held[s][k].stamp for s in holders if exp.data.get(s) is not None]
            if any(exp.data.get(s) is None for s in holders):
                # docs/state.md: while a holder is not read, the value never goes back
                stamps.append(e["last_seen_at"])
            stamp = newest_stamp(stamps)
            if stamp:
                e["last_seen_at"] = stamp
        exp.registry = {
            guard(mk): {
                c: guard(e[c]) for c in ("source_system", "source_key", "seen_in", "last_seen_at")
            }
            for mk, e in self.entries.items()
        }
        return exp
