"""Reports end to end on small hand-written inputs: exact rows, order, safety, atomicity."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

A = (
    b"key,name,last_seen_at\n"
    b"CUST-00001,a,2026-11-01T00:00:00Z\n"
    b"cust 00002,b,2026-11-02T00:00:00Z\n"
    b"CUST-00003,c,2026-11-03T00:00:00Z\n"
)
B = (
    b"key,name,last_seen_at\n"
    b"CUST-00001,a,2026-11-04T00:00:00Z\n"
    b"=cust-#-00009,evil,+2026\n"  # out-of-authority; formula and '#' in the raw key
    b"cust_00001,dup,2026-11-05T00:00:00Z\n"  # collision with line 2
    b"\n"
    b"#!?,empty,x\n"
)


def setup(tmp_path: Path, parallel: bool = False, b: bytes = B) -> Path:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "A.csv").write_bytes(A)
    (tmp_path / "in" / "B.csv").write_bytes(b)
    config = tmp_path / "keysync-config.yaml"
    config.write_text(
        "sources:\n  A: {path: in/A.csv}\n  B: {path: in/B.csv}\n"
        f"processing: {{parallel: {str(parallel).lower()}}}\n"
    )
    return config


def keysync(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keysync", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def data_rows(path: Path) -> list[list[str]]:
    lines = [
        line for line in path.read_text().splitlines(keepends=True) if not line.startswith("#")
    ]
    return list(csv.reader(io.StringIO("".join(lines))))


def test_reports_hold_exact_rows(tmp_path: Path) -> None:
    config = setup(tmp_path)
    done = keysync(config, "run")
    assert done.returncode == 0, done.stderr
    out = tmp_path / "output"
    assert data_rows(out / "reconciliation_summary.csv") == [
        ["system", "available", "rows_read", "rows_rejected", "unique_keys", "duplicate_keys",
         "matched", "missing_in_a", "missing_from_system", "match_rate"],
        ["A", "true", "3", "0", "3", "0", "3", "0", "0", "1.0"],
        ["B", "true", "4", "1", "2", "1", "1", "1", "2", "0.25"],
    ]  # fmt: skip
    rows = data_rows(out / "diff_missing_in_A.csv")
    assert rows[1] == [
        "CUST-00009", "B", "'=cust-#-00009", "3", "'+2026", "CUST-00009", "Proposed",
    ]  # fmt: skip
    gaps = data_rows(out / "diff_missing_from_system.csv")[1:]
    assert [row[:4] for row in gaps] == [
        ["CUST-00002", "B", "cust 00002", "2026-11-02T00:00:00Z"],
        ["CUST-00003", "B", "CUST-00003", "2026-11-03T00:00:00Z"],
    ]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row[4]) for row in gaps)
    assert data_rows(out / "duplicates.csv")[1:] == [["B", "CUST-00001", "2", "2", "true", "2;4"]]
    rejected = data_rows(out / "rejected_rows.csv")[1:]
    assert [(r[0], r[2], r[3], r[5]) for r in rejected] == [("B", "6", "empty-key", "#!?")]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["exit_code"] == 0 and summary["discrepancies"] is True
    assert not list(out.glob(".staging-*"))


def test_header_block_and_comment_safety(tmp_path: Path) -> None:
    """Lines starting with '#' are the header block; no data line contains an unquoted '#'."""
    config = setup(tmp_path)
    assert keysync(config, "run").returncode == 0
    text = (tmp_path / "output" / "diff_missing_in_A.csv").read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert header[0] == "# report: diff_missing_in_A"
    assert any(line.startswith("# run_id: ") for line in header)
    assert "# rows: 1" in header
    assert "# column source_line: physical line of that row (header = line 1)" in header
    data = [line for line in text.splitlines() if not line.startswith("#")]
    assert data[1] == '"CUST-00009","B","\'=cust-#-00009",3,"\'+2026","CUST-00009","Proposed"'


def test_each_discrepancy_report_totals_its_rows_by_system(tmp_path: Path) -> None:
    """``# totals:`` counts each system's rows, zeros included (duplicates and rejected
    rows of every system read, the authority's too)."""
    config = setup(tmp_path)
    assert keysync(config, "run").returncode == 0
    out = tmp_path / "output"
    totals = {
        name: [
            line for line in (out / name).read_text().splitlines() if line.startswith("# totals")
        ]
        for name in (
            "diff_missing_in_A.csv",
            "diff_missing_from_system.csv",
            "duplicates.csv",
            "rejected_rows.csv",
        )
    }
    assert totals == {
        "diff_missing_in_A.csv": ["# totals: B=1"],
        "diff_missing_from_system.csv": ["# totals: B=2"],
        "duplicates.csv": ["# totals: A=0; B=1"],
        "rejected_rows.csv": ["# totals: A=0; B=1"],
    }


@pytest.mark.parametrize("parallel", [False, True])
def test_fail_on_diff_exits_1(tmp_path: Path, parallel: bool) -> None:
    config = setup(tmp_path, parallel=parallel)
    done = keysync(config, "run", "--fail-on-diff")
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        "keysync: discrepancies found (--fail-on-diff): 1 out-of-authority key, 2 gaps, "
        f"1 duplicate key, 1 rejected row (per system); see the reports in {tmp_path / 'output'}"
    )


def test_fail_on_gates_only_the_kinds_named(tmp_path: Path) -> None:
    """Real exports always hold some discrepancy: a CI gate names the ones it fails on."""
    config = setup(tmp_path)
    # The inputs hold every kind; each gate counts only its own in the final line.
    done = keysync(config, "run", "--fail-on", "Rejected, missing-in-a")
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        "keysync: discrepancies found (--fail-on missing-in-a,rejected): 1 out-of-authority "
        f"key, 1 rejected row (per system); see the reports in {tmp_path / 'output'}"
    )
    summary = json.loads((tmp_path / "output" / "summary.json").read_text())
    assert summary["flags"]["fail_on"] == ["missing-in-a", "rejected"]
    assert summary["exit_code"] == 1
    # Only a duplicate and gaps left: the same gate passes, another fails.
    (tmp_path / "in" / "B.csv").write_text("key\nCUST-00001\ncust_00001\n")
    passed = keysync(config, "run", "--fail-on", "rejected,missing-in-a")
    assert passed.returncode == 0, passed.stderr
    assert keysync(config, "run", "--fail-on", "duplicates").returncode == 1
    for bad, said in (("gap", "unknown kind 'gap'"), (" , ", "no kind given")):
        refused = keysync(config, "run", "--fail-on", bad)
        assert refused.returncode == 2
        assert f"Invalid value for '--fail-on': {said}; choose from missing-in-a, " in (
            refused.stderr
        )


def test_same_inputs_give_same_rows_in_both_modes(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = setup(tmp_path / "one", parallel=False)
    two = setup(tmp_path / "two", parallel=True)
    assert keysync(one, "run").returncode == 0
    assert keysync(two, "run").returncode == 0
    for name in ["diff_missing_in_A.csv", "diff_missing_from_system.csv", "duplicates.csv"]:
        rows_one = data_rows(tmp_path / "one" / "output" / name)
        rows_two = data_rows(tmp_path / "two" / "output" / name)
        assert [r[:4] for r in rows_one] == [r[:4] for r in rows_two]


# ----------------------------------------------- cells that readers must not misread

STAMP = b"2026-11-01T00:00:00Z"
REPORTS = [
    "diff_missing_in_A.csv",
    "diff_missing_from_system.csv",
    "duplicates.csv",
    "rejected_rows.csv",
    "master_key_registry.csv",
    "audit_log.csv",
]


def run_on(tmp_path: Path, a: bytes, b: bytes, settings: str = "") -> Path:
    """Run keysync on A and B as given (bytes, as written); returns the output folder."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "A.csv").write_bytes(a)
    (tmp_path / "in" / "B.csv").write_bytes(b)
    config = tmp_path / "keysync-config.yaml"
    config.write_text("sources:\n  A: {path: in/A.csv}\n  B: {path: in/B.csv}\n" + settings)
    done = keysync(config, "run")
    assert done.returncode == 0, done.stderr
    return tmp_path / "output"


def records(path: Path) -> list[list[str]]:
    """The data records of a report as a strict CSV reader sees them (no newline translation).

    A bare carriage return outside quotes ends a record for ``csv`` (and pandas), so a
    cell holding one unquoted shows up here as a record split in two.
    """
    text = path.read_bytes().decode("utf-8")
    lines = text.split("\n")
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return list(csv.reader(io.StringIO("\n".join(lines), newline="")))[1:]


def unquoted_hashes(path: Path) -> list[int]:
    """Offsets of each '#' outside quotes after the header block: where pandas'
    ``comment="#"`` would cut a record."""
    text = path.read_bytes().decode("utf-8")
    start = 0
    while text.startswith("#", start):
        start = text.index("\n", start) + 1
    found, quoted = [], False
    for offset in range(start, len(text)):
        char = text[offset]
        if char == '"':
            quoted = not quoted
        elif char == "#" and not quoted:
            found.append(offset)
    return found


def test_a_carriage_return_in_a_cell_stays_in_its_record(tmp_path: Path) -> None:
    """A quoted CR in the input is quoted in every report (csv leaves it bare before 3.13)."""
    out = run_on(
        tmp_path,
        b'key,name,last_seen_at\n"ab\rc",x,' + STAMP + b"\nA2,y," + STAMP + b"\n",
        b'key,name,last_seen_at\nA2,x,2026-11-02T00:00:00Z\n"zz\ry",q,"2026-11\r03"\n',
    )
    assert [row[:4] for row in records(out / "diff_missing_from_system.csv")] == [
        ["ABC", "B", "ab\rc", STAMP.decode()]
    ]
    assert records(out / "diff_missing_in_A.csv") == [
        ["ZZY", "B", "zz\ry", "3", "2026-11\r03", "ZZY", "Proposed"]
    ]
    registry = records(out / "master_key_registry.csv")
    assert [(row[0], row[4], row[8]) for row in registry] == [("ZZY", "zz\ry", "2026-11\r03")]
    text = (out / "diff_missing_in_A.csv").read_bytes()
    assert b'ZZY,B,"zz\ry",3,"2026-11\r03",ZZY,Proposed\n' in text
    config = str(tmp_path / "keysync-config.yaml")
    export = subprocess.run(
        [sys.executable, "-m", "keysync", "-c", config, "registry", "export"],
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout.decode()
    exported = list(csv.reader(io.StringIO(export, newline="")))
    assert [(row[0], row[4], row[8]) for row in exported[1:]] == [("ZZY", "zz\ry", "2026-11\r03")]


def test_formula_timestamps_are_neutralized_in_the_registry(tmp_path: Path) -> None:
    out = run_on(
        tmp_path,
        b"key,name,last_seen_at\nA1,x," + STAMP + b"\n",
        b'key,name,last_seen_at\nB1,x,"=HYPERLINK(""http://x"",""y"")"\nB2,x,@SUM(1)\nB3,x,+1\n',
    )
    registry = records(out / "master_key_registry.csv")
    assert [(row[0], row[8]) for row in registry] == [
        ("B1", '\'=HYPERLINK("http://x","y")'),
        ("B2", "'@SUM(1)"),
        ("B3", "'+1"),
    ]


def test_keys_that_look_like_formulas_are_neutralized_in_every_report(tmp_path: Path) -> None:
    """With strip_non_alnum off a normalized key may start with = + - @: no report cell may."""
    out = run_on(
        tmp_path,
        b'key,name,last_seen_at\nA1,x,t\n"=1+2",x,t\n"=1+2",y,t\n',
        b"key,name,last_seen_at\n@SUM(A1),x,t\n+5,x,t\n",
        "normalize: {strip_non_alnum: false}\n",
    )
    cells = {name: [cell for row in records(out / name) for cell in row] for name in REPORTS}
    for name, values in cells.items():
        assert not [c for c in values if c.startswith(("=", "+", "-", "@"))], name
    assert records(out / "duplicates.csv")[0][1:] == ["'=1+2", "2", "1", "false", "3;4"]
    assert [row[0] for row in records(out / "diff_missing_in_A.csv")] == ["'+5", "'@SUM(A1)"]
    assert [row[5] for row in records(out / "diff_missing_in_A.csv")] == ["'+5", "'@SUM(A1)"]
    assert [row[0] for row in records(out / "master_key_registry.csv")] == ["'+5", "'@SUM(A1)"]
    assert [row[0] for row in records(out / "diff_missing_from_system.csv")] == ["'=1+2", "A1"]


def test_a_hash_in_a_normalized_key_is_quoted(tmp_path: Path) -> None:
    """``collapse_delims: "#"`` puts '#' in keys: quoted, so comment="#" never cuts a row."""
    out = run_on(
        tmp_path,
        b"key,name,last_seen_at\ncust 1,x," + STAMP + b"\ncust_1,y," + STAMP + b"\n",
        b"key,name,last_seen_at\nprod 9,x," + STAMP + b"\n",
        'normalize: {collapse_delims: "#"}\n',
    )
    for name in REPORTS:
        assert unquoted_hashes(out / name) == [], name
    assert records(out / "diff_missing_in_A.csv") == [
        ["PROD#9", "B", "prod 9", "2", STAMP.decode(), "PROD#9", "Proposed"]
    ]
    assert records(out / "duplicates.csv") == [["A", "CUST#1", "2", "2", "true", "2;3"]]
    assert b'"A","CUST#1",2,2,"true","2;3"\n' in (out / "duplicates.csv").read_bytes()


def test_every_detail_report_describes_each_of_its_columns(tmp_path: Path) -> None:
    """SPEC.md: the header block holds "a one-line description of each column"."""
    config = setup(tmp_path)
    assert keysync(config, "run").returncode == 0
    for name in REPORTS:
        lines = (tmp_path / "output" / name).read_text().splitlines()
        block = [line for line in lines if line.startswith("#")]
        (header,) = [line for line in lines if not line.startswith("#")][:1]
        described = [line.split(":")[0].removeprefix("# column ") for line in block]
        assert [c for c in header.split(",") if c not in described] == [], name


def test_summary_json_holds_numbers_and_booleans(tmp_path: Path) -> None:
    config = setup(tmp_path)
    (tmp_path / "in" / "C.csv").write_bytes(b"")  # an unavailable peer: empty file
    config.write_text(config.read_text().replace("  B:", "  C: {path: in/C.csv}\n  B:"))
    assert keysync(config, "run").returncode == 4
    summary = json.loads((tmp_path / "output" / "summary.json").read_text())
    systems = {row["system"]: row for row in summary["systems"]}
    assert systems["B"] == {
        "system": "B", "available": True, "rows_read": 4, "rows_rejected": 1, "unique_keys": 2,
        "duplicate_keys": 1, "matched": 1, "missing_in_a": 1, "missing_from_system": 2,
        "match_rate": 0.25, "reason": "",
    }  # fmt: skip
    assert systems["C"]["available"] is False and systems["C"]["matched"] is None
    assert "empty file" in systems["C"]["reason"]
