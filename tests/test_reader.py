"""The CSV reader: records, physical line numbers, offsets and row-level errors."""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import itertools
import lzma
import time
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keysync.config import SourceConfig
from keysync.stages import reader
from keysync.stages.reader import SourceUnavailable, read_batches, read_header

SOURCE = SourceConfig(path="unused")


def read_all(path: Path, batch_size: int = 1000, source: SourceConfig = SOURCE):
    rows, rejected, rows_read = [], [], 0
    batches = list(read_batches("B", path, source, batch_size))
    for batch in batches:
        rows.extend(zip(batch.raw_keys, batch.lines, batch.timestamps))
        rejected.extend((r.line, r.error_type) for r in batch.rejected)
        rows_read += batch.rows_read
    return rows, rejected, rows_read, batches


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "B.csv"
    path.write_bytes(data)
    return path


def test_every_error_type_on_its_physical_line(tmp_path: Path) -> None:
    data = (
        b"key,name,last_seen_at\n"
        b"cust_1,Acme,2026-01-01T00:00:00Z\n"  # 2
        b"\n"  # 3 blank: skipped, not counted
        b'"cust 2","two\nlines",t2\n'  # 4-5: one record
        b"CUST-3,a,b,c\n"  # 6 extra-cell
        b"CUST-4,a\n"  # 7 missing-cell
        b'"CUST-5"x,a,b\n'  # 8 bad-quoting
        b"CU\x00ST,a,b\n"  # 9 nul-byte
        b"CU\xffST,a,b\n"  # 10 encoding
        b"last,a,t\r\n"  # 11 CRLF is fine
        b'"never closed,a,b\n'  # 12 bad-quoting, reading resumes at 13
        b"after,a,b"  # 13, no final newline
    )
    rows, rejected, rows_read, _ = read_all(write(tmp_path, data), batch_size=3)
    assert rows == [
        ("cust_1", 2, "2026-01-01T00:00:00Z"),
        ("cust 2", 4, "t2"),
        ("last", 11, "t"),
        ("after", 13, "b"),
    ]
    assert rejected == [
        (6, "extra-cell"),
        (7, "missing-cell"),
        (8, "bad-quoting"),
        (9, "nul-byte"),
        (10, "encoding"),
        (12, "bad-quoting"),
    ]
    assert rows_read == 10


def test_cell_count_messages_say_how_many_cells(tmp_path: Path) -> None:
    data = b"key,name,last_seen_at\nCUST-1\nCUST-2,a\nCUST-3,a,b,c\n"
    *_, batches = read_all(write(tmp_path, data))
    assert [(r.line, r.message) for b in batches for r in b.rejected] == [
        (2, "1 cell, the header has 3"),
        (3, "2 cells, the header has 3"),
        (4, "4 cells, the header has 3"),
    ]


def test_a_record_of_several_lines_with_a_wrong_cell_count_is_shown_whole(
    tmp_path: Path,
) -> None:
    """Seen: `raw` held only `K-1,"multi` of a two-line record; README: the record as read."""
    data = b'key,name,last_seen_at\nK-1,"multi\nline",t,extra\nK-2,"a\nb"\nK-3,n,t\n'
    rows, _, _, batches = read_all(write(tmp_path, data), batch_size=2)
    assert [(r.line, r.error_type, r.raw) for b in batches for r in b.rejected] == [
        (2, "extra-cell", 'K-1,"multi\nline",t,extra'),
        (4, "missing-cell", 'K-2,"a\nb"'),
    ]
    assert rows == [("K-3", 6, "t")]


def test_nul_and_encoding_messages_give_the_byte_of_the_line_not_a_column(
    tmp_path: Path,
) -> None:
    """Seen: `NUL byte at column 9` in a row of 2 cells: the 9 was a place in the line.
    Bad bytes are shown as a hex editor shows them (seen: `b'\\xff'`, Python's notation)."""
    data = b"key,name,last_seen_at\nCUST-1,ab\x00c,t\nCUST-2,\xff,t\nCUST-3,\xe2\x82x,t\n"
    *_, batches = read_all(write(tmp_path, data))
    messages = [r.message for b in batches for r in b.rejected]
    assert messages[0] == "NUL byte at byte 10 of the line"
    assert messages[1] == (
        "byte 0xFF at byte 8 of the line is not valid utf-8; "
        "fix the export or set sources.B.encoding"
    )
    assert messages[2].startswith("bytes 0xE2 0x82 at byte 8 of the line are not valid utf-8; ")


def test_a_quoted_record_with_a_nul_or_bad_bytes_is_rejected_whole_never_read_as_rows(
    tmp_path: Path,
) -> None:
    """Seen: a bad byte on the first line of a multi-line note rejected that line alone,
    and the note's other lines were read as rows: INVENTED-2 became a key and a master
    key. A NUL on a later line cut the record in two, the first part said "never
    closed". A record that spans lines is one record: rejected once, for its first flaw."""
    data = (
        b"key,name,last_seen_at\n"
        b'K1,"caf\xe9 note\nINVENTED-2,from the note,t\nend of note",t\n'  # lines 2-4
        b'K2,"x\n\x00y",t\n'  # lines 5-6
        b'K3,"a\xff\nb\x00",t\n'  # lines 7-8: NUL comes first in SPEC's order
        b"K4,b,t\n"  # line 9
        b'K5,"\xffnever closed\n'  # line 10: the line alone; reading resumes at 11
        b"K6,c,t\n"
    )
    rows, rejected, rows_read, batches = read_all(write(tmp_path, data))
    assert rows == [("K4", 9, "t"), ("K6", 11, "t")]
    assert rejected == [(2, "encoding"), (5, "nul-byte"), (7, "nul-byte"), (10, "encoding")]
    assert rows_read == 6
    messages = [r.message for b in batches for r in b.rejected]
    assert messages[0].startswith("byte 0xE9 at byte 8 of the line is not valid utf-8; ")
    assert messages[1] == "NUL byte at byte 1 of line 6"
    assert messages[2] == "NUL byte at byte 2 of line 8"
    raws = [r.raw for b in batches for r in b.rejected]
    assert raws[0] == 'K1,"caf\\xe9 note\nINVENTED-2,from the note,t\nend of note",t'


@pytest.mark.parametrize("batch_size", [1, 2, 3, 1000])
def test_a_flawed_quoted_record_is_one_record_at_any_batch_size(
    tmp_path: Path, batch_size: int
) -> None:
    data = b'key,name,last_seen_at\nK1,"a\xe9\nB-2,x,t\nc",t\nK3,d,t\n'
    rows, rejected, rows_read, _ = read_all(write(tmp_path, data), batch_size=batch_size)
    assert (rows, rejected, rows_read) == ([("K3", 5, "t")], [(2, "encoding")], 2)


def test_a_quoted_note_over_16_mib_is_one_record_not_rows_made_from_its_lines(
    tmp_path: Path,
) -> None:
    """Seen: csv's field limit (16 MiB) rejected such a note as bad-quoting, reading
    resumed inside it, and NOTE-LINE from inside it became a key."""
    note = b"x" * (9 << 20) + b"\nNOTE-LINE," + b"y" * (9 << 20)
    data = b'key,name\nK1,a\nK2,"' + note + b'"\nK3,ok\n'
    rows, rejected, rows_read, _ = read_all(write(tmp_path, data), source=SourceConfig(path="x"))
    assert [(key, line) for key, line, _ in rows] == [("K1", 2), ("K2", 3), ("K3", 5)]
    assert (rejected, rows_read) == ([], 3)


def test_batches_tile_the_file_exactly(tmp_path: Path) -> None:
    lines = [f"K{i},n,t" for i in range(2500)]
    path = write(tmp_path, ("key,name,last_seen_at\n" + "\n".join(lines) + "\n").encode())
    _, _, _, batches = read_all(path, batch_size=1000)
    assert [b.seq for b in batches] == [0, 1, 2]
    assert batches[0].start_offset == len(b"key,name,last_seen_at\n")
    for before, after in itertools.pairwise(batches):
        assert before.end_offset == after.start_offset
        assert before.next_line == after.first_line
    assert batches[-1].end_offset == path.stat().st_size


def test_resume_from_a_batch_boundary_gives_the_rest(tmp_path: Path) -> None:
    lines = [f"K{i},n,t" if i % 7 else f'"K{i}","x\ny",t' for i in range(300)]
    path = write(tmp_path, ("key,name,last_seen_at\n" + "\n".join(lines) + "\n").encode())
    batches = list(read_batches("B", path, SOURCE, 50))
    middle = batches[2]
    rest = list(
        read_batches(
            "B",
            path,
            SOURCE,
            50,
            start_offset=middle.start_offset,
            start_line=middle.first_line,
            start_seq=middle.seq,
        )
    )
    assert [b.raw_keys for b in rest] == [b.raw_keys for b in batches[2:]]
    assert [b.lines for b in rest] == [b.lines for b in batches[2:]]


def test_header_without_key_column_names_file_and_columns(tmp_path: Path) -> None:
    path = write(tmp_path, b"id,name\n1,a\n")
    with pytest.raises(SourceUnavailable) as err:
        read_header("B", path, SOURCE)
    assert str(err.value) == (
        f"{path}: header has no column 'key' (columns: id, name); set sources.B.key_column"
    )


@pytest.mark.parametrize("header", [b"Key,name", b"KEY,name", b"keys,name", b" key_,name"])
def test_a_header_with_a_column_close_to_the_key_column_names_it_in_the_fix(
    tmp_path: Path, header: bytes
) -> None:
    """UX walkthrough: an export's `Key` for the configured `key` said only "set
    sources.B.key_column", leaving the user to spot the difference."""
    path = write(tmp_path, header + b"\n1,a\n")
    with pytest.raises(SourceUnavailable) as err:
        read_header("B", path, SOURCE)
    close = header.split(b",")[0].strip().decode()
    assert str(err.value).endswith(f"; set sources.B.key_column: {close} (the closest column)")


def test_a_header_not_utf8_suggests_the_encoding_a_windows_export_has(tmp_path: Path) -> None:
    path = write(tmp_path, b"key,caf\xe9\n1,a\n")
    with pytest.raises(SourceUnavailable) as err:
        read_header("B", path, SOURCE)
    assert "line 1 (header) is not valid utf-8" in str(err.value)
    assert str(err.value).endswith(
        "set sources.B.encoding: cp1252 for an export saved on Windows (latin-1 reads any byte)"
    )


def test_a_header_of_thousands_of_columns_is_listed_short(tmp_path: Path) -> None:
    """Seen (log hunt): 20,000 columns and no key column made a 189 KB line on stderr,
    in the summary and in the log."""
    path = write(tmp_path, ",".join(f"c{n}" for n in range(20_000)).encode() + b"\n1\n")
    with pytest.raises(SourceUnavailable) as err:
        read_header("B", path, SOURCE)
    listed = ", ".join(f"c{n}" for n in range(20))
    assert str(err.value) == (
        f"{path}: header has no column 'key' (columns: {listed} and 19,980 more); "
        "set sources.B.key_column"
    )
    path = write(tmp_path, b"x" * 5000 + b"\n1\n")
    with pytest.raises(SourceUnavailable) as err:
        read_header("B", path, SOURCE)
    assert f"(columns: {'x' * 500}…); set sources.B.key_column" in str(err.value)


def test_missing_and_empty_files_are_unavailable(tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable, match="file not found"):
        read_header("B", tmp_path / "nope.csv", SOURCE)
    with pytest.raises(SourceUnavailable) as err:
        read_header("B", write(tmp_path, b""), SOURCE)
    assert str(err.value) == (  # what to do, as every other reason says (walkthrough)
        f"{tmp_path / 'B.csv'}: empty file, expected a header line with 'key', as an export "
        "that failed before writing anything leaves it; check the export"
    )
    with pytest.raises(SourceUnavailable) as err:
        read_header("B", tmp_path, SOURCE)
    assert str(err.value) == (
        f"{tmp_path}: is a folder, expected a CSV file; point sources.B.path at the export"
    )
    # Seen (journeys hunt): a header alone read as "no keys", exit 0 and no warning, every
    # peer key out of authority. A failed export looks just like that.
    for header_only in (
        b"key,name,last_seen_at\n",
        b"key,name,last_seen_at",
        b"key,name\r\n\n",
        b"key,name\n\n\r\n\n",  # blank lines are skipped, not rows (seen, review: 2 passed)
        b"key,name\n" + b"\n" * 70_000,  # past a probe of 64 KiB (seen, incremental hunt)
    ):
        with pytest.raises(SourceUnavailable) as err:
            read_header("B", write(tmp_path, header_only), SOURCE)
        assert str(err.value) == (
            f"{tmp_path / 'B.csv'}: holds the header line and no rows, as an export that "
            "failed part way leaves it; check the export"
        )
    assert read_header("B", write(tmp_path, b"key\n\nK-1\n"), SOURCE).data_offset == 4
    assert read_header("B", write(tmp_path, b"key\n \n"), SOURCE).data_offset == 4  # a row


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\nkey,name\na1,x\n", "line 1 is blank, expected the header (a line with 'key'); "
         "remove the blank lines before the header"),
        (b"key,name,last_seen_at\ra1,x,t\ra2,y,t\r", "line 1 (header) holds a carriage return: "
         "the file ends its lines with CR alone, and keysync reads LF or CRLF line ends; convert "
         "the file (for example: tr '\\r' '\\n' < old.csv > new.csv)"),
        # One bad byte anywhere: all one line, so it is the header's (seen: "set .encoding")
        (b"key,name,last_seen_at\ra1,x,t\ra2,\xe9,t\r", "line 1 (header) holds a carriage return: "
         "the file ends its lines with CR alone, and keysync reads LF or CRLF line ends; convert "
         "the file (for example: tr '\\r' '\\n' < old.csv > new.csv)"),
        (b'"key,name\na1,x\n', "line 1 (header) cannot be parsed as CSV (unexpected end of "
         "data); fix the header line of the export"),
        (b'key,"Customer\nName",t\na1,x,t\n', "line 1 (header) has a quoted column title that "
         "goes on to line 2; keysync needs the header on one line: put that title on one line "
         "in the export"),
        ("key,name\na1,x\n".encode("utf-16"), "the file is UTF-16 (it starts with a UTF-16 "
         "byte-order mark), which keysync does not read; convert it: iconv -f utf-16 -t utf-8 "
         "B.csv > new.csv"),
        (b"sep=;\nkey;name\na1;x\n", "line 1 is Excel's delimiter hint 'sep=;', not the header; "
         'remove that line from the export and set sources.B.delimiter: ";"'),
        (b"key;name\na1;x\n", "header has no column 'key' (columns: key;name); the header looks "
         'separated by ";": set sources.B.delimiter: ";"'),
        (b"key\tname\na1\tx\n", "header has no column 'key' (columns: key\tname); the header "
         'looks separated by "\\t": set sources.B.delimiter: "\\t"'),
    ],
    ids=[
        "blank-first-line", "cr-only-line-ends", "cr-only-with-a-bad-byte",
        "stray-quote", "title-on-2-lines", "utf-16",
        "excel-sep-line", "semicolons", "tabs",
    ],
)  # fmt: skip
def test_a_bad_header_says_what_is_wrong_and_what_to_do(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    path = write(tmp_path, content)
    with pytest.raises(SourceUnavailable) as err:
        read_header("B", path, SOURCE)
    assert str(err.value) == f"{path}: {expected}"


def test_a_header_line_longer_than_a_mebibyte_is_refused_not_cut(tmp_path: Path) -> None:
    """Seen: a 1.1 MB line 1 was cut at 1 MiB; its tail became data line 2 and every
    later source_line was off by one."""
    path = write(tmp_path, b"key," + b"n" * (1 << 20) + b"\nK1,a\n")
    with pytest.raises(SourceUnavailable) as err:
        read_header("B", path, SOURCE)
    assert str(err.value) == (
        f"{path}: line 1 (header) is longer than 1,048,576 bytes, which no header of key "
        "columns needs; check the export (its line ends, its delimiter)"
    )


def test_bom_and_other_delimiter(tmp_path: Path) -> None:
    source = SourceConfig(path="x", delimiter=";", timestamp_column="seen")
    path = write(tmp_path, "\ufeffseen;key\n2026;a,b\n".encode())
    rows, rejected, _, _ = read_all(path, source=source)
    assert rows == [("a,b", 2, "2026")]
    assert rejected == []


@pytest.mark.parametrize(
    ("timestamp_column", "header", "said"),
    [
        (
            "last_seen",
            "key,name,last_seen_at",
            "did you mean 'last_seen_at'? set sources.B.timestamp_column",
        ),
        (
            "last_seen_at",
            "key,LastSeenAt,name",
            "did you mean 'LastSeenAt'? set sources.B.timestamp_column",
        ),
        (
            "updated",
            "key,name,last_seen_at",
            "set sources.B.timestamp_column to the column of its timestamps, or leave it "
            "out if the export has none",
        ),
        ("last_seen_at", "key,first_name,last_name", ""),  # no timestamps: fine, and quiet
        ("last_seen_at", "key,name", ""),
        ("seen", "key,seen", ""),
    ],
)
def test_a_header_without_the_timestamp_column_says_why_where_one_is_likely_meant(
    tmp_path: Path, timestamp_column: str, header: str, said: str
) -> None:
    """Seen: `timestamp_column: last_seen` with a header of last_seen_at left every
    last_seen_at of the source empty, without a word."""
    path = write(tmp_path, f"{header}\nK-1,x,y\n".encode())
    found = read_header("B", path, SourceConfig(path="x", timestamp_column=timestamp_column))
    columns = ", ".join(header.split(","))
    assert found.timestamp_missing == (
        said
        and f"{path}: header has no column '{timestamp_column}' (timestamp_column; columns: "
        f"{columns}): last_seen_at stays empty for B; {said}"
    )
    assert (found.timestamp_index is None) == (timestamp_column not in header.split(","))


def test_a_quoted_record_longer_than_a_batch(tmp_path: Path) -> None:
    name = "\n".join(f"part {i}" for i in range(30))
    data = f'key,name,last_seen_at\nA1,x,t\n"A2","{name}",t\nA3,x,t\n'.encode()
    rows, rejected, rows_read, _ = read_all(write(tmp_path, data), batch_size=2)
    assert rows == [("A1", 2, "t"), ("A2", 3, "t"), ("A3", 33, "t")]
    assert rejected == []
    assert rows_read == 3


cell = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"),
    max_size=12,
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(st.tuples(cell, cell, cell), min_size=1, max_size=40),  # none: unavailable
    blank_after=st.sets(st.integers(min_value=0, max_value=40)),
    batch_size=st.integers(min_value=1, max_value=7),
    read_chunk=st.sampled_from([1, 2, 3, 5, 16, reader.READ_CHUNK]),
)
def test_reader_agrees_with_python_csv(
    tmp_path: Path,
    rows: list[tuple[str, str, str]],
    blank_after: set[int],
    batch_size: int,
    read_chunk: int,
) -> None:
    """Any CSV that csv.writer produces reads back as the same records, on the right lines,
    whatever the size of the chunks the file is read in (lines span chunks at small ones)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["key", "name", "last_seen_at"])
    expected = []
    line = 2
    for i, row in enumerate(rows):
        before = out.getvalue().count("\n")
        writer.writerow(row)
        used = out.getvalue().count("\n") - before
        expected.append((row[0], line, row[2]))
        line += used
        if i in blank_after:
            out.write("\n")
            line += 1
    path = write(tmp_path, out.getvalue().encode())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reader, "READ_CHUNK", read_chunk)
        got, rejected, rows_read, _ = read_all(path, batch_size=batch_size)
    assert rejected == []
    assert rows_read == len(rows)
    assert got == expected


@given(batch_size=st.integers(min_value=1, max_value=6))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=12)
def test_a_byte_order_mark_inside_the_file_is_kept_whatever_the_batch_size(
    tmp_path: Path, batch_size: int
) -> None:
    """Only the file's first BOM is special; with utf-8-sig one on a data line stays in its key.

    (Two exports joined with ``cat`` put the second one's BOM at the start of a data line.)
    """
    bom = b"\xef\xbb\xbf"
    data = bom + b"key,name,t\nK-1,a,t\n" + bom + b'K-2,"x\ny",t\nK-3,a,t\n' + bom + b"K-4,a,t\n"
    source = SourceConfig(path="unused", encoding="utf-8-sig", timestamp_column="t")
    rows, rejected, _, _ = read_all(write(tmp_path, data), batch_size=batch_size, source=source)
    assert rejected == []
    assert [(raw, line) for raw, line, _ in rows] == [
        ("K-1", 2),
        ("\ufeffK-2", 3),
        ("K-3", 5),
        ("\ufeffK-4", 6),
    ]


def test_a_quoted_note_of_hundreds_of_lines_is_one_record(tmp_path: Path) -> None:
    """Its lines must never come out as rows: they would be reported as keys of their own."""
    note = "\n".join(f"see ticket,{n}" for n in range(1, 301))
    data = f'key,name,t\nK-1,x,t1\nK-2,"long note\n{note}\nend",t2\nK-3,x,t3\n'.encode()
    rows, rejected, rows_read, _ = read_all(write(tmp_path, data), batch_size=7)
    assert rejected == []
    assert [(raw, line) for raw, line, _ in rows] == [("K-1", 2), ("K-2", 3), ("K-3", 305)]
    assert rows_read == 3


def test_a_stray_quote_paired_far_off_in_another_column_costs_only_its_own_line(
    tmp_path: Path,
) -> None:
    """150 lines on, a quote closes a record of the wrong cells: the rows between stay rows."""
    body = [f"K-{n},name {n},t" for n in range(3, 153)]
    data = "\n".join(["key,name,t", 'K-1,"opens here,t', *body, 'K-2,x" closes,t', "K-9,x,t"])
    rows, rejected, _, _ = read_all(write(tmp_path, (data + "\n").encode()), batch_size=10)
    assert rejected[0] == (2, "bad-quoting")
    assert [raw for raw, _, _ in rows] == [f"K-{n}" for n in range(3, 153)] + ["K-2", "K-9"]


@pytest.mark.parametrize("inner", ["K-{n},name {n},t", "step {n}, restart the service, check"])
def test_a_long_quoted_span_of_row_like_lines_is_rejected_whole_not_guessed(
    tmp_path: Path, inner: str
) -> None:
    """Swallowed rows or a note of row-like lines: neither lost silently nor made into keys."""
    body = [inner.format(n=n) for n in range(3, 153)]
    data = "\n".join(["key,name,t", 'K-1,"opens here,t', *body, 'K-2,closes here",t', "K-9,x,t"])
    rows, rejected, rows_read, _ = read_all(write(tmp_path, (data + "\n").encode()), batch_size=7)
    assert rejected == [(2, "bad-quoting")]
    assert [(raw, line) for raw, line, _ in rows] == [("K-9", 154)]
    assert rows_read == 2


@pytest.mark.parametrize("last_line_end", [b"\n", b""])
def test_a_line_of_many_chunks_is_read_in_time_proportional_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, last_line_end: bytes
) -> None:
    """Seen: a 300 MB cell took the reader over 30 s (each chunk copied the line so far),
    so a run called the source unavailable for a timeout. With 1 KiB chunks a 16 MB line
    took ~100 s that way; read in pieces and joined once, well under a second."""
    monkeypatch.setattr(reader, "READ_CHUNK", 1024)
    long_name = b"n" * (16 << 20)
    path = write(
        tmp_path,
        b"key,name,last_seen_at\n"
        b"K1,Acme,2026-01-01T00:00:00Z\n"
        b"K2," + long_name + b",2026-01-02T00:00:00Z\n"
        b"K3,Acme,2026-01-03T00:00:00Z" + last_line_end,
    )
    started = time.monotonic()
    rows, rejected, rows_read, _ = read_all(path)
    assert time.monotonic() - started < 5
    assert rows == [
        ("K1", 2, "2026-01-01T00:00:00Z"),
        ("K2", 3, "2026-01-02T00:00:00Z"),
        ("K3", 4, "2026-01-03T00:00:00Z"),
    ]
    assert (rejected, rows_read) == ([], 3)


def _zipped(data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("B.csv", data)
    return out.getvalue()


_CSV = b"key,name,last_seen_at\n" + b"".join(b"K-%d,x,t\n" % n for n in range(200))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (gzip.compress(_CSV), "the file is gzip-compressed, not CSV text, which keysync does "
         "not read; decompress it first: gunzip -c B.csv > new.csv"),
        (bz2.compress(_CSV), "the file is bzip2-compressed, not CSV text, which keysync does "
         "not read; decompress it first: bunzip2 -c B.csv > new.csv"),
        (bz2.compress(b""), "the file is bzip2-compressed, not CSV text, which keysync does "
         "not read; decompress it first: bunzip2 -c B.csv > new.csv"),
        (lzma.compress(_CSV), "the file is xz-compressed, not CSV text, which keysync does "
         "not read; decompress it first: xz -dc B.csv > new.csv"),
        # (zstd is not in the standard library before 3.14: a frame's magic number and header)
        (b"\x28\xb5\x2f\xfd\x24\x04\x21\x00", "the file is zstd-compressed, not CSV text, which "
         "keysync does not read; decompress it first: zstd -dc B.csv > new.csv"),
        (_zipped(_CSV), "the file is a zip archive (an .xlsx workbook is one), not CSV text, "
         "which keysync does not read; unzip the CSV from it, or save the sheet as CSV (UTF-8)"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504), "the file is an Office document "
         "(an .xls workbook), not CSV text, which keysync does not read; save the sheet as "
         "CSV (UTF-8)"),
        (b"PAR1\x15\x04\x15\x10\x15\x14L\x15\x02", "the file is a Parquet file, not CSV text, "
         "which keysync does not read; export the table as CSV"),
    ],
    ids=["gzip", "bzip2", "bzip2-empty", "xz", "zstd", "zip", "xls", "parquet"],
)  # fmt: skip
def test_a_compressed_or_binary_file_is_named_for_what_it_is(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    """Seen: a gzipped export was "a file of CR line ends" (with a tr command to run on
    it) and a zipped one "not valid utf-8: set the encoding to cp1252 (latin-1 reads any
    byte)", which would have read its bytes as keys."""
    path = write(tmp_path, content)
    with pytest.raises(SourceUnavailable) as err:
        read_header("B", path, SOURCE)
    assert str(err.value) == f"{path}: {expected}"


@pytest.mark.parametrize("header", [b"PAR1,name", b"BZh1,name", b"PK,name"])
def test_a_header_that_starts_like_a_format_s_magic_is_read_as_text(
    tmp_path: Path, header: bytes
) -> None:
    source = SourceConfig(path="unused", key_column=header.split(b",")[0].decode())
    rows, rejected, _, _ = read_all(write(tmp_path, header + b"\nK-1,a\n"), source=source)
    assert [raw for raw, _, _ in rows] == ["K-1"] and rejected == []
