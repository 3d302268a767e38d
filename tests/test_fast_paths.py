"""The C-level fast paths of issue 8 give exactly what the careful paths give.

- The reader's one-regex path (quoted cells included) equals Python's ``csv``
  module for any column layout: key and timestamp in any column, one column.
- The reporter writes a risky cell the same whether its chunk is clean or not.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keysync.stages.reporter as reporter
from keysync.config import SourceConfig
from keysync.stages.reader import read_batches
from keysync.stages.reporter import ReportFile

LAYOUTS = [
    ["key", "name", "last_seen_at"],
    ["last_seen_at", "key"],
    ["key"],
    ["a", "key", "b", "last_seen_at", "c"],
    ["last_seen_at", "x", "key"],
]
# Text a CSV export holds, plus what makes the fast path step aside: quotes, the
# delimiter, line breaks inside quotes, non-ASCII (a lone CR is a line end to csv, not to
# keysync: SPEC.md lines end with \\n).
cell = st.text(alphabet=st.sampled_from(list('aB7 ,"\n;-é#=')), max_size=6)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    layout=st.sampled_from(LAYOUTS),
    # (a file of just the header is unavailable)
    rows=st.lists(st.lists(cell, min_size=5, max_size=5), min_size=1, max_size=25),
    quote_all=st.booleans(),
    batch_size=st.integers(min_value=1, max_value=6),
)
def test_reader_equals_python_csv_for_any_layout(
    tmp_path: Path, layout: list[str], rows: list[list[str]], quote_all: bool, batch_size: int
) -> None:
    out = io.StringIO()
    quoting = csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL
    writer = csv.writer(out, lineterminator="\n", quoting=quoting)
    writer.writerow(layout)
    for row in rows:
        writer.writerow(row[: len(layout)])
    path = tmp_path / "B.csv"
    path.write_text(out.getvalue(), encoding="utf-8")
    # Python's csv, strict, with the physical line where each record starts.
    expected = []
    parsed = csv.reader(io.StringIO(out.getvalue(), newline=""), strict=True)
    next(parsed)
    key = layout.index("key")
    stamp = layout.index("last_seen_at") if "last_seen_at" in layout else None
    start = parsed.line_num + 1
    for record in parsed:
        expected.append((record[key], "" if stamp is None else record[stamp], start))
        start = parsed.line_num + 1
    got = []
    for batch in read_batches("B", path, SourceConfig(path=str(path)), batch_size):
        assert batch.rejected == []
        got.extend(zip(batch.raw_keys, batch.timestamps, batch.lines))
    assert got == expected


@settings(max_examples=200)
@given(
    rows=st.lists(
        st.tuples(st.sampled_from(["K", "L"]), cell, st.integers(0, 99), cell), max_size=30
    ),
    chunk=st.integers(min_value=1, max_value=8),
)
def test_report_rows_are_written_as_if_each_were_checked(
    rows: list[tuple[str, str, int, str]], chunk: int
) -> None:
    def written(each: bool) -> str:
        buffer = io.StringIO()
        report = ReportFile(Path("unused"), buffer, csv.writer(buffer, lineterminator="\n"))
        if each:
            for row in rows:
                report._careful_row(row, (1, 3))
        else:
            report.rows(rows, risky=(1, 3))
        return buffer.getvalue()

    saved = reporter._CHUNK
    reporter._CHUNK = chunk
    try:
        assert written(each=False) == written(each=True)
    finally:
        reporter._CHUNK = saved


# Cells for the reporter's fast path: what needs csv quoting (, " \n \r), what needs
# care (# and formula starts), the joining character of the care scan, non-ASCII, "".
report_cell = st.text(alphabet=st.sampled_from(list('aZ9-,"\n\r#=+@\t é\x1f')), max_size=5)
plain_cell = st.text(alphabet=st.sampled_from(list("AZ09-: é;")), max_size=5)


@settings(max_examples=300)
@given(
    rows=st.lists(
        st.lists(st.one_of(report_cell, plain_cell, st.integers(), st.none()), max_size=4),
        min_size=1,
        max_size=8,
    )
)
def test_plain_text_is_what_csv_writes_or_nothing(rows: list[list[object]]) -> None:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    text = reporter._plain_text(rows)
    assert text is None or text == buffer.getvalue()


@settings(max_examples=100)
@given(rows=st.lists(st.lists(plain_cell, min_size=2, max_size=4), min_size=1, max_size=8))
def test_plain_text_takes_rows_that_need_nothing(rows: list[list[str]]) -> None:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    assert reporter._plain_text(rows) == buffer.getvalue()


_SEPARATED_FORMULA = re.compile("\x1f[=+\\-@\t\r]")


def _written_by_csv(
    rows: list[tuple[str, str, int, str]], risky: tuple[int, ...], line_end: str = "\n"
) -> str:
    """What the reporter wrote before its fast path: every row checked, numbers as ints.

    A row took the careful path when a risky cell held "#", started like a formula,
    or (the one-regex scan's over-approximation) held "\\x1f" and a formula character.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=line_end)
    for row in rows:
        texts = {c: str(row[c]) for c in risky}
        cells = list(row)
        has_cr = line_end == "\n" and any(isinstance(c, str) and "\r" in c for c in cells)
        if has_cr or any(
            "#" in t or t.startswith(reporter.FORMULA_STARTS) or _SEPARATED_FORMULA.search(t)
            for t in texts.values()
        ):  # a careful row: a "#" in any of its cells quotes them all
            cells = [reporter.safe(texts[i]) if i in texts else c for i, c in enumerate(row)]
            if any(isinstance(c, str) and "#" in c for c in cells):
                line = ",".join(reporter._quote(c) if isinstance(c, str) else str(c) for c in cells)
                buffer.write(line + "\n")
                continue
        if has_cr:  # Python 3.13's csv quotes a cell with a CR even with this line end; so do we
            line = ",".join(
                '"' + c.replace('"', '""') + '"'
                if isinstance(c, str) and any(ch in c for ch in ',"\n\r')
                else str(c)
                for c in cells
            )
            buffer.write(line + "\n")
        else:
            writer.writerow(cells)
    return buffer.getvalue()


@settings(max_examples=300)
@given(
    rows=st.lists(
        st.tuples(
            st.one_of(plain_cell, report_cell),
            st.one_of(plain_cell, report_cell),
            st.integers(0, 10**6),
            st.one_of(plain_cell, report_cell),
        ),
        max_size=30,
    ),
    chunk=st.integers(min_value=1, max_value=8),
    line_end=st.sampled_from(["\n", "\r\n"]),
)
def test_report_rows_with_numbers_as_text_are_written_as_csv_wrote_the_numbers(
    rows: list[tuple[str, str, int, str]], chunk: int, line_end: str
) -> None:
    """``rows(..., numbers=...)`` on str-formatted numbers == the old path on ints.

    With another line end than the reports' "\\n" the fast path steps aside.
    """
    as_text = [(a, b, str(n), c) for a, b, n, c in rows]
    buffer = io.StringIO()
    report = ReportFile(Path("unused"), buffer, csv.writer(buffer, lineterminator=line_end))
    saved = reporter._CHUNK
    reporter._CHUNK = chunk
    try:
        report.rows(as_text, risky=(1, 3), numbers=(2,))
    finally:
        reporter._CHUNK = saved
    assert buffer.getvalue() == _written_by_csv(rows, (1, 3), line_end)
    assert report.count == len(rows)


@settings(max_examples=300)
@given(cells=st.lists(st.one_of(plain_cell, report_cell), min_size=1, max_size=30))
def test_care_scan_names_the_cells_the_regex_scan_names(cells: list[str]) -> None:
    """Every cell with a "#" or a formula start, and the same ones as the one-regex scan."""
    found = set(reporter._cells_needing_care(cells))
    assert found == set(reporter._cells_needing_care_by_regex(cells))
    for i, cell in enumerate(cells):
        if "#" in cell or cell.startswith(reporter.FORMULA_STARTS):
            assert i in found
