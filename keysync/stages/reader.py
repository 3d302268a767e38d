"""The reader: streams one CSV source as ``RawBatch`` messages, capturing row errors.

Speed comes from treating a batch of lines as one string: one decode and one
regex ``findall`` over the whole batch split every well-formed line into its
cells in C. Only lines that the fast pattern refuses (quotes, NUL bytes, bad
bytes, wrong cell count, CRLF) go through the careful per-record path, which
follows Python's ``csv`` module with ``strict=True``.

Positions are exact: every batch says the byte offset after its last record
and the physical line that comes next, so a resumed run restarts a reader at
precisely the next record.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import io
import json
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from operator import add, itemgetter
from pathlib import Path
from typing import BinaryIO

from keysync.config import DEFAULT_TIMESTAMP_COLUMN, SourceConfig
from keysync.messages import RawBatch, RejectedRow

# A quoted field may span this many physical lines, as CSV says. Past
# TRUSTED_RECORD_LINES the reader checks its guess: a record without the header's
# cells is a stray quote (its line rejected, reading resumes at the next line); one
# whose lines look like rows may be a stray quote swallowing rows or a long note of
# row-like lines, and is rejected whole, so that no row is lost silently and no key
# is made up from a note.
MAX_HEADER_BYTES = 1 << 20  # a longer line 1 is no header: refused, not cut
MAX_RECORD_LINES = 10_000
TRUSTED_RECORD_LINES = 100
READ_CHUNK = 1 << 20
RAW_PREVIEW = 200  # characters of a rejected row kept for the report

# csv's own limit (128 KiB by default, and 16 MiB here before) rejected a long quoted note
# as bad-quoting and resumed reading inside it: its lines became rows. A record is bounded
# by MAX_RECORD_LINES lines of the batch already held in memory; 2**31 - 1 is csv's most.
csv.field_size_limit(2**31 - 1)


class SourceUnavailable(Exception):
    """The source cannot be read at all (missing, unreadable, no usable header)."""


@dataclass(frozen=True)
class Header:
    """The parsed header of a source and where its data starts."""

    columns: list[str]
    key_index: int
    timestamp_index: int | None
    data_offset: int
    ends_with_line_end: bool = True  # False: a cut export ends so (``source.unterminated``)
    # Why no timestamp column was found where one is likely meant, or "" (``source.
    # timestamp_column_missing``): a misspelt name left last_seen_at empty without a word.
    timestamp_missing: str = ""


def preview(text: str) -> str:
    """A rejected row's text for ``rejected_rows.csv``: NULs shown, over 200 characters cut."""
    text = text.replace("\x00", "\\x00").rstrip("\r\n")
    return text if len(text) <= RAW_PREVIEW else text[:RAW_PREVIEW] + "…"


_COLUMNS_SHOWN = 20
"""Columns an error lists: an export with 20,000 of them made a 189 KB line on stderr,
in the summary and in the log (past rsyslog's 256 KB it would be cut)."""


def columns_listed(columns: list[str]) -> str:
    """The first 20 columns, and how many more; at most 500 characters of them."""
    shown = ", ".join(columns[:_COLUMNS_SHOWN])
    if len(shown) > 500:  # one huge column: a header another delimiter would split
        shown = shown[:500] + "…"
    more = len(columns) - _COLUMNS_SHOWN
    return shown + (f" and {more:,} more" if more > 0 else "")


def _header_problem(path: Path, text: str, problem: str, fix: str) -> str:
    """The one line saying what is wrong with the header line and what to do about it.

    A carriage return inside the header line means the file ends its lines with CR
    alone (classic Mac exports): keysync reads lines ended by LF or CRLF, so the
    whole file looked like one line. That is the fix to name, whatever else failed.
    """
    if "\r" in text:
        return (
            f"{path}: line 1 (header) holds a carriage return: the file ends its lines "
            "with CR alone, and keysync reads LF or CRLF line ends; convert the file "
            "(for example: tr '\\r' '\\n' < old.csv > new.csv)"
        )
    return f"{path}: {problem}; {fix}"


def _delimiter_hint(system: str, columns: list[str], delimiter: str) -> str:
    """``set sources.X.delimiter`` when the header is one column that another delimiter splits."""
    if len(columns) != 1:
        return ""
    for other in (";", "\t", "|", ","):
        if other != delimiter and other in columns[0]:
            shown = "\\t" if other == "\t" else other
            setting = f'sources.{system}.delimiter: "{shown}"'
            return f'the header looks separated by "{shown}": set {setting}'
    return ""


def _column_hint(system: str, columns: list[str], wanted: str) -> str:
    """``set sources.X.key_column``, with the column the export most likely means (``Key``
    for ``key``, ``cust_id`` for ``cust_ids``) when one is close."""
    setting = f"sources.{system}.key_column"
    folded = {column.casefold(): column for column in columns}
    close = folded.get(wanted.casefold()) or next(
        iter(difflib.get_close_matches(wanted, columns, n=1, cutoff=0.75)), None
    )
    return f"set {setting}: {close} (the closest column)" if close else f"set {setting}"


def no_source_file(paths: dict[str, Path]) -> str:
    """Why the authority is unavailable when not one of ``paths`` (system -> file) exists,
    or "": a first run before any export is in place (or before ``keysync generate``) is
    told so once, not with a file-not-found line per system."""
    if not paths or any(path.exists() for path in paths.values()):
        return ""
    folders = {path.parent for path in paths.values()}
    names = ", ".join(path.name for path in paths.values())
    where = f"not in {next(iter(folders))}" if len(folders) == 1 else "not at their paths"
    return (
        f"no source file exists ({names}: {where}); run `keysync generate` to write mock "
        "ones there, or point each sources.<system>.path at its export"
    )


def _only_blank_lines_follow(handle: BinaryIO, second: bytes) -> bool:
    """Whether nothing but line ends follows the header (``second``: the line after it).

    Read a MiB at a time, and only while that holds: a file with rows stops at once.
    """
    chunk = second
    while chunk:
        if chunk.strip(b"\r\n"):
            return False
        chunk = handle.read(1 << 20)
    return True


# The first bytes of files that are not CSV text but are often handed over as an export:
# read as text they were called a file of CR line ends (gzip), or a header that is not
# utf-8 with the advice to read it as cp1252 (zip, xlsx), which would make keys of bytes.
_PACKED_FORMATS: tuple[tuple[re.Pattern[bytes], str, str], ...] = tuple(
    (re.compile(magic), kind, how)
    for magic, kind, how in (
        (rb"\x1f\x8b", "gzip-compressed", "decompress it first: gunzip -c {name} > new.csv"),
        (
            rb"BZh[1-9](?:1AY&SY|\x17rE8P\x90)",  # a first block, or an empty stream
            "bzip2-compressed",
            "decompress it first: bunzip2 -c {name} > new.csv",
        ),
        (rb"\xfd7zXZ\x00", "xz-compressed", "decompress it first: xz -dc {name} > new.csv"),
        (rb"\x28\xb5\x2f\xfd", "zstd-compressed", "decompress it first: zstd -dc {name} > new.csv"),
        (
            rb"PK\x03\x04",
            "a zip archive (an .xlsx workbook is one)",
            "unzip the CSV from it, or save the sheet as CSV (UTF-8)",
        ),
        (
            rb"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
            "an Office document (an .xls workbook)",
            "save the sheet as CSV (UTF-8)",
        ),
        # A header may start with the text PAR1; Parquet's next byte is binary.
        (rb"PAR1[\x00-\x08\x0b\x0c\x0e-\x1f]", "a Parquet file", "export the table as CSV"),
    )
)


def _packed_format(first: bytes) -> tuple[str, str] | None:
    """(what the file is, what to do) if its first bytes are a compressed or binary format."""
    for magic, kind, how in _PACKED_FORMATS:
        if magic.match(first):
            return kind, how
    return None


def read_header(system: str, path: Path, source: SourceConfig) -> Header:
    """Open the source and parse line 1; raise ``SourceUnavailable`` with a clear reason."""
    try:
        status = os.stat(path)
        mode = status.st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            # A pipe would block the open until someone writes to it; a device never ends.
            raise SourceUnavailable(
                f"{path}: is not a regular file (a pipe, socket or device); "
                f"export the data to a file and point sources.{system}.path at it"
            )
        with open(path, "rb") as handle:
            first = handle.readline(MAX_HEADER_BYTES)
            second = handle.readline(MAX_HEADER_BYTES)  # only to explain a header that runs on
            no_rows = _only_blank_lines_follow(handle, second)
            handle.seek(max(status.st_size - 1, 0))
            last = handle.read(1)
    except FileNotFoundError:
        raise SourceUnavailable(
            f"{path}: file not found; put the export there, or point sources.{system}.path at it"
        ) from None
    except IsADirectoryError:
        raise SourceUnavailable(
            f"{path}: is a folder, expected a CSV file; point sources.{system}.path at the export"
        ) from None
    except OSError as exc:
        raise SourceUnavailable(f"{path}: cannot read: {exc.strerror or exc}") from None
    offset = len(first)
    if offset == MAX_HEADER_BYTES and not first.endswith(b"\n"):
        raise SourceUnavailable(
            f"{path}: line 1 (header) is longer than {MAX_HEADER_BYTES:,} bytes, which no "
            "header of key columns needs; check the export (its line ends, its delimiter)"
        )
    packed = _packed_format(first)
    if packed:
        kind, how = packed
        raise SourceUnavailable(
            f"{path}: the file is {kind}, not CSV text, which keysync does not read; "
            + how.format(name=path.name)
        )
    if first.startswith((b"\xff\xfe", b"\xfe\xff")):  # Excel's "Unicode text", for one
        raise SourceUnavailable(
            f"{path}: the file is UTF-16 (it starts with a UTF-16 byte-order mark), which "
            f"keysync does not read; convert it: iconv -f utf-16 -t utf-8 {path.name} > new.csv"
        )
    if first.startswith(b"\xef\xbb\xbf"):
        first = first[3:]
    if not first.strip():
        if offset < path.stat().st_size:  # something follows the blank first line
            raise SourceUnavailable(
                f"{path}: line 1 is blank, expected the header (a line with "
                f"'{source.key_column}'); remove the blank lines before the header"
            )
        raise SourceUnavailable(
            f"{path}: empty file, expected a header line with '{source.key_column}', as an "
            "export that failed before writing anything leaves it; check the export"
        )
    try:
        text = first.decode(source.encoding).rstrip("\r\n")
    except UnicodeDecodeError:
        # (A file of CR line ends is one line: its first bad byte may be in any row.)
        shown = first.decode(source.encoding, "replace").rstrip("\r\n")
        problem = f"line 1 (header) is not valid {source.encoding}"
        fix = f"set sources.{system}.encoding"
        if codecs.lookup(source.encoding).name in ("utf-8", "utf-8-sig"):  # the usual other
            fix += ": cp1252 for an export saved on Windows (latin-1 reads any byte)"
        raise SourceUnavailable(_header_problem(path, shown, problem, fix)) from None
    if len(text) == 5 and text.startswith("sep="):  # Excel writes it before the header
        delimiter = text[4]
        setting = (
            ""
            if delimiter == source.delimiter
            else (f" and set sources.{system}.delimiter: {json.dumps(delimiter)}")
        )
        raise SourceUnavailable(
            f"{path}: line 1 is Excel's delimiter hint {text!r}, not the header; remove that "
            f"line from the export{setting}"
        )
    try:
        columns = next(csv.reader([text], delimiter=source.delimiter, strict=True))
    except (csv.Error, StopIteration) as exc:
        problem = f"line 1 (header) cannot be parsed as CSV ({exc})"
        fix = "fix the header line of the export"
        if _header_runs_on(text, second, source):
            # Valid CSV (a title typed with Alt+Enter), but keysync reads a one-line header.
            problem = "line 1 (header) has a quoted column title that goes on to line 2"
            fix = "keysync needs the header on one line: put that title on one line in the export"
        raise SourceUnavailable(_header_problem(path, text, problem, fix)) from None
    columns = [c.strip() for c in columns]
    if source.key_column not in columns:
        problem = f"header has no column '{source.key_column}' (columns: {columns_listed(columns)})"
        fix = _delimiter_hint(system, columns, source.delimiter)
        fix = fix or _column_hint(system, columns, source.key_column)
        raise SourceUnavailable(_header_problem(path, text, problem, fix))
    if columns.count(source.key_column) > 1:
        raise SourceUnavailable(
            f"{path}: header names column '{source.key_column}' "
            f"{columns.count(source.key_column)} times (columns: {columns_listed(columns)}); "
            "rename the others in the export, or set "
            f"sources.{system}.key_column to a column named once"
        )
    if no_rows:
        # Not "no keys": an export that failed after its header line looks just like this,
        # and read as empty it would make every key of the others a discrepancy.
        raise SourceUnavailable(
            f"{path}: holds the header line and no rows, as an export that failed part way "
            "leaves it; check the export"
        )
    if source.timestamp_column in columns:
        ts_index, ts_missing = columns.index(source.timestamp_column), ""
    else:
        ts_index, ts_missing = None, _timestamp_missing(system, path, source, columns)
    return Header(
        columns, columns.index(source.key_column), ts_index, offset, last == b"\n", ts_missing
    )


def _folded(name: str) -> str:
    """A column name as compared for "did you mean": ``Last-Seen At`` is ``lastseenat``."""
    return re.sub(r"[\W_]+", "", name.lower())


def _timestamp_missing(system: str, path: Path, source: SourceConfig, columns: list[str]) -> str:
    """What to say of a header without the ``timestamp_column``, or "" to say nothing.

    The column is optional (an export without timestamps is fine, and the default name
    absent is how it looks), so the default missing is quiet unless the header has a
    column of nearly its name (``last_seen``, ``LastSeenAt``; not ``last_name``, which a
    warning every run could not be silenced for); a name set to another value is one
    the user expects to be there.
    """
    wanted = source.timestamp_column
    default = wanted == DEFAULT_TIMESTAMP_COLUMN
    others = [c for c in columns if c != source.key_column]
    by_folded = {_folded(c): c for c in reversed(others)}  # the first of a folded name wins
    close = difflib.get_close_matches(
        _folded(wanted), list(by_folded), n=1, cutoff=0.8 if default else 0.6
    )
    if not close and default:
        return ""
    said = (
        f"{path}: header has no column '{wanted}' (timestamp_column; columns: "
        f"{columns_listed(columns)}): last_seen_at stays empty for {system}; "
    )
    if close:
        return said + f"did you mean '{by_folded[close[0]]}'? set sources.{system}.timestamp_column"
    return (
        said + f"set sources.{system}.timestamp_column to the column of its timestamps, or "
        "leave it out if the export has none"
    )


def _next_other(whole: tuple[str, ...], start: int) -> int:
    """Index of the next line the fast pattern refused (or blank), or len(whole)."""
    try:
        return whole.index("", start)
    except ValueError:
        return len(whole)


def _cells(columns: list[tuple[str, ...]], group: int) -> tuple[str, ...]:
    """One captured column: its plain cells, or plain + quoted contents when any was quoted."""
    plain, quoted = columns[group], columns[group + 1]
    if any(quoted):  # C-level scan; one of each pair is always empty
        return tuple(map(add, plain, quoted))
    return plain


class _RecordParser:
    """Turns complete physical lines into records, rows and rejections."""

    def __init__(self, system: str, source: SourceConfig, header: Header) -> None:
        self.system = system
        self.encoding = source.encoding
        # The header took the file's byte-order mark off. Decoded batch by batch, utf-8-sig
        # would also drop one at the start of each batch (a data line beginning with
        # U+FEFF, as after `cat a.csv b.csv`), so results would hang on batch_size.
        self.codec = "utf-8" if codecs.lookup(self.encoding).name == "utf-8-sig" else self.encoding
        self.delimiter = source.delimiter
        self.ncols = len(header.columns)
        self.key_index = header.key_index
        self.ts_index = header.timestamp_index
        delim = re.escape(source.delimiter)
        refused = "\\x00\\r\\n\\udc80-\\udcff"  # NUL, line ends, undecodable bytes
        plain = f'[^{delim}"{refused}]*'
        # A quoted cell on one line (may hold the delimiter and "" escapes): taken in C too.
        # Text after a closing quote cannot match: a cell must end at a delimiter or line end.
        quoted = f'"[^"{refused}]*(?:""[^"{refused}]*)*"'
        # A captured cell is plain or quoted without "" escapes (anything else is careful).
        captured_cell = f'(?:({plain})|"([^"{refused}]*)")'
        # Build the line pattern, noting where each group lands in a findall tuple.
        pattern = ""
        index = 0  # the tuple index of the next group
        group_of: dict[int, int] = {}
        marker = 0
        for i in range(self.ncols):
            if i == 1:
                # A good line is told apart by a capture of its first delimiter: a
                # one-character string that CPython caches, unlike a copy of the whole line.
                pattern += f"({delim})"
                marker = index
                index += 1
            elif i:
                pattern += delim
            if i in (self.key_index, self.ts_index):
                group_of[i] = index
                pattern += captured_cell
                index += 2
            else:
                pattern += f"(?:{plain}|{quoted})"
        if self.ncols == 1:  # no delimiter to capture: capture the whole line
            pattern = f"({pattern})"
            group_of = {i: n + 1 for i, n in group_of.items()}
            index += 1
        self._line_pattern = re.compile(f"^(?:{pattern}\\r?|(.*))$", re.MULTILINE)
        self._good_group = marker
        self._key_group = group_of[self.key_index]
        self._ts_group = group_of[self.ts_index] if self.ts_index is not None else None
        self._other_group = index

    def parse(
        self, lines: list[bytes], first_line: int, at_eof: bool
    ) -> tuple[list[str], list[int], list[str], list[RejectedRow], int, int]:
        """Parse ``lines``; returns keys, lines, timestamps, rejected, records, lines consumed.

        Stops early (consumed < len(lines)) only when a quoted record continues past
        the last line given and more input may follow.
        """
        if not lines:
            return [], [], [], [], 0, 0
        block = b"\n".join(lines)
        try:
            text = block.decode(self.codec)
        except UnicodeDecodeError:
            text = block.decode(self.codec, "surrogateescape")
        matches = self._line_pattern.findall(text)
        count = len(lines)
        if len(matches) != count:  # pragma: no cover - a regex invariant
            raise AssertionError(f"{len(matches)} matches for {count} lines")
        # Columns of the findall tuples, built in C: good-line marker, key, timestamp, other.
        columns = list(zip(*matches))
        whole = columns[self._good_group]
        key_column = _cells(columns, self._key_group)
        ts_group = self._ts_group
        ts_column = _cells(columns, ts_group) if ts_group is not None else ("",) * count
        keys: list[str] = []
        numbers: list[int] = []
        stamps: list[str] = []
        rejected: list[RejectedRow] = []
        records = 0
        good_from = 0  # start of the current run of well-formed lines
        i = _next_other(whole, 0)
        while True:
            # Lines good_from..i-1 are well-formed records: take them as slices, in C.
            keys.extend(key_column[good_from:i])
            stamps.extend(ts_column[good_from:i])
            numbers.extend(range(first_line + good_from, first_line + i))
            records += i - good_from
            if i >= count:
                return keys, numbers, stamps, rejected, records, count
            if not columns[self._other_group][i].rstrip("\r"):
                used = 1  # a blank line: not a record, but it still has a line number
            else:
                used = self._parse_careful(
                    lines, i, first_line, at_eof, keys, numbers, stamps, rejected
                )
                if used == 0:
                    return keys, numbers, stamps, rejected, records, i
                records += 1
            good_from = i + used
            i = _next_other(whole, good_from)

    def _reject(
        self, rejected: list[RejectedRow], line: int, error: str, message: str, raw: str
    ) -> None:
        rejected.append(RejectedRow(self.system, line, error, message, preview(raw)))

    def _parse_careful(
        self,
        lines: list[bytes],
        start: int,
        first_line: int,
        at_eof: bool,
        keys: list[str],
        numbers: list[int],
        stamps: list[str],
        rejected: list[RejectedRow],
    ) -> int:
        """Parse the record starting at ``lines[start]``; returns lines used (0: need more)."""
        line_no = first_line + start
        raw_line = lines[start]
        used = 1
        if b'"' in raw_line:  # a record that may span lines: its flaws are the record's
            parsed = self._parse_quoted(lines, start, at_eof, line_no)
            if parsed is None:
                return 0
            cells, used, problem = parsed
            if problem:
                self._reject(rejected, line_no, *problem, self._record_text(lines, start, used))
                return used
        else:
            flaw = self._flaw(raw_line, "of the line")
            if flaw is not None:
                self._reject(rejected, line_no, *flaw, self._record_text(lines, start, 1))
                return 1
            cells = raw_line.decode(self.codec).rstrip("\r").split(self.delimiter)
        if len(cells) != self.ncols:
            kind = "extra-cell" if len(cells) > self.ncols else "missing-cell"
            found = "1 cell" if len(cells) == 1 else f"{len(cells)} cells"
            record = self._record_text(lines, start, used)
            self._reject(rejected, line_no, kind, f"{found}, the header has {self.ncols}", record)
            return used
        keys.append(cells[self.key_index])
        stamps.append(cells[self.ts_index] if self.ts_index is not None else "")
        numbers.append(line_no)
        return used

    def _record_text(self, lines: list[bytes], start: int, used: int) -> str:
        """The record as read, for ``raw``: its lines, undecodable bytes and NULs escaped."""
        return b"\n".join(lines[start : start + used]).decode(self.codec, "backslashreplace")

    def _flaw(self, raw: bytes, where: str) -> tuple[str, str] | None:
        """``nul-byte`` or ``encoding`` (in that order, SPEC) for one line, with its message."""
        nul = raw.find(b"\x00")
        if nul >= 0:
            return "nul-byte", f"NUL byte at byte {nul + 1} {where}"
        try:
            raw.decode(self.codec)
        except UnicodeDecodeError as exc:
            bad = raw[exc.start : exc.end]  # as a hex editor shows them, not as b'\xf8'
            shown = " ".join(f"0x{byte:02X}" for byte in bad)
            noun, verb = ("byte", "is") if len(bad) == 1 else ("bytes", "are")
            return (
                "encoding",
                f"{noun} {shown} at byte {exc.start + 1} {where} {verb} not valid "
                f"{self.encoding}; fix the export or set sources.{self.system}.encoding",
            )
        return None

    def _look_like_rows(self, lines: list[bytes]) -> bool:
        """Whether most of ``lines`` are well-formed rows of this file (one regex, in C).

        A span of over ``TRUSTED_RECORD_LINES`` lines between two quotes is either one
        long note or a stray quote with the rows it would swallow; only the rows look
        like rows, and losing them silently is the worse mistake.
        """
        text = b"\n".join(lines).decode(self.codec, "surrogateescape")
        good = sum(map(bool, map(itemgetter(self._good_group), self._line_pattern.findall(text))))
        return 2 * good > len(lines)

    def _parse_quoted(
        self, lines: list[bytes], start: int, at_eof: bool, line_no: int
    ) -> tuple[list[str], int, tuple[str, str] | None] | None:
        """csv-parse a record that may span lines: (cells, lines used, problem) or None for more.

        A line with a NUL byte or undecodable bytes does not end the record: the quote
        may close after it, and the lines between are the record's, never rows of their
        own (that made keys up from a note). Such a record is rejected whole, for the
        first flaw (``nul-byte`` before ``encoding``, SPEC); a quote that never closes is
        the first line's problem alone, and reading resumes at the next line.
        """
        pulled = 0
        ran_out = False
        flaws: list[tuple[str, str]] = []  # the first flaw of each kind, in line order
        limit = min(len(lines), start + MAX_RECORD_LINES)

        def feed() -> Iterator[str]:
            nonlocal pulled, ran_out
            for index in range(start, limit):
                raw = lines[index]
                pulled += 1
                where = "of the line" if index == start else f"of line {line_no + index - start}"
                flaw = self._flaw(raw, where)
                if flaw is not None and flaw[0] not in {kind for kind, _ in flaws}:
                    flaws.append(flaw)
                text = raw.replace(b"\x00", b"").decode(self.codec, "replace")
                yield text + "\n"
            ran_out = limit == len(lines)

        def first_flaw() -> tuple[str, str] | None:
            return min(flaws, key=lambda flaw: flaw[0] != "nul-byte") if flaws else None

        reader = csv.reader(feed(), delimiter=self.delimiter, strict=True)
        try:
            cells = next(reader)
        except csv.Error as exc:
            if ran_out and not at_eof and pulled < MAX_RECORD_LINES:
                return None
            own = self._flaw(lines[start], "of the line")
            if own is not None:  # no record: the line alone, for its own flaw
                return [], 1, own
            if "unexpected end of data" in str(exc) or "EOF" in str(exc):
                message = "quoted field is never closed"
                if pulled >= MAX_RECORD_LINES:
                    message += f" within {MAX_RECORD_LINES} lines"
            else:
                message = f"bad quoting: {exc}"
            return [], 1, ("bad-quoting", message + "; reading resumed at the next line")
        except StopIteration:  # pragma: no cover - the first line is never empty here
            return [], 1, ("bad-quoting", "unreadable record")
        if pulled <= TRUSTED_RECORD_LINES:
            flaw = first_flaw()
            return (cells, pulled, None) if flaw is None else ([], pulled, flaw)
        if len(cells) != self.ncols:  # no record of this file: a stray quote
            own = self._flaw(lines[start], "of the line")
            if own is not None:
                return [], 1, own
            stray = (
                f"the quote opened here closes only {pulled - 1} lines later, in a record of "
                f"{len(cells)} cells (the header has {self.ncols}): taken as a stray quote; "
                "reading resumed at the next line"
            )
            return [], 1, ("bad-quoting", stray)
        if self._look_like_rows(lines[start + 1 : start + pulled]):
            # A long note of row-like lines, or a stray quote and the rows it swallowed:
            # either guess would be wrong somewhere (lost rows, or invented keys). Report it.
            ambiguous = (
                f"a quoted field runs {pulled} lines from here and its lines look like rows: "
                "a stray quote or a long note? Rejected whole, none of its lines read; fix the "
                "quote in the export (or keep the note within 100 lines)"
            )
            return [], pulled, ("bad-quoting", ambiguous)
        flaw = first_flaw()
        return (cells, pulled, None) if flaw is None else ([], pulled, flaw)


def _header_runs_on(first: str, second: bytes, source: SourceConfig) -> bool:
    """Whether the header is one CSV record of two lines (a quoted title with a line
    break in it), rather than a stray quote."""
    text = first + "\n" + second.decode(source.encoding, "replace")
    reader = csv.reader(io.StringIO(text), delimiter=source.delimiter, strict=True)
    try:
        next(reader)
    except (csv.Error, StopIteration):
        return False
    return reader.line_num == 2 and source.key_column in text


def read_batches(
    system: str,
    path: Path,
    source: SourceConfig,
    batch_size: int,
    *,
    header: Header | None = None,
    start_offset: int | None = None,
    start_line: int = 2,
    start_seq: int = 0,
) -> Iterator[RawBatch]:
    """Stream the source from ``start_offset`` (default: after the header) as ``RawBatch``es."""
    header = header or read_header(system, path, source)
    parser = _RecordParser(system, source, header)
    offset = header.data_offset if start_offset is None else start_offset
    line = start_line
    seq = start_seq
    with open(path, "rb") as handle:
        size = handle.seek(0, 2)
        handle.seek(offset)
        # Each chunk is split into lines once; batches are slices of that list (copying
        # or re-counting the rest of a chunk for every batch cost more than parsing it).
        pending: list[bytes] = []  # complete physical lines, not yet in a batch from ``pos``
        pos = 0
        # The start of a line whose end is in a later chunk, in pieces: a line of hundreds
        # of MB (a binary file, a runaway cell) is joined once, not once per chunk (that
        # copied it chunk after chunk: 300 MB took over 30 s, so a run called it a timeout).
        partial: list[bytes] = []
        eof = False
        want = batch_size
        while True:
            while not eof and len(pending) - pos < want:
                chunk = handle.read(READ_CHUNK)
                if not chunk:
                    eof = True
                    if partial:  # a last line without a newline
                        pending.append(b"".join(partial))
                        partial = []
                    break
                if b"\n" not in chunk:
                    partial.append(chunk)
                    continue
                lines = (b"".join(partial) + chunk if partial else chunk).split(b"\n")
                tail = lines.pop()
                partial = [tail] if tail else []
                if pos:
                    del pending[:pos]
                    pos = 0
                pending.extend(lines)
            if pos >= len(pending):
                return
            parts = pending[pos : pos + want]
            at_eof = eof and pos + len(parts) == len(pending)
            keys, numbers, stamps, rejected, records, consumed = parser.parse(parts, line, at_eof)
            if consumed == 0:
                want *= 2  # one record spans more lines than a batch: read further
                continue
            length = min(sum(map(len, parts[:consumed])) + consumed, size - offset)
            pos += consumed
            yield RawBatch(
                system=system,
                seq=seq,
                start_offset=offset,
                end_offset=offset + length,
                first_line=line,
                next_line=line + consumed,
                raw_keys=keys,
                lines=numbers,
                timestamps=stamps,
                rejected=rejected,
                rows_read=records,
            )
            offset += length
            line += consumed
            seq += 1
            want = batch_size
