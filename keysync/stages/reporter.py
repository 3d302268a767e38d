"""The reporter: writes every report of SPEC.md "Reports" from the comparison.

Each file is written to a staging folder (temp file, fsync), and only after
the run's state is committed are the files renamed into ``paths.output``: a
report is always whole, and the set of reports always belongs to one run.

Cells that come from the inputs (raw keys, timestamps, messages) are made safe
for spreadsheets (a leading ``'`` before ``= + - @``, tab, CR) and are quoted
when they contain ``#``, so that ``pandas.read_csv(f, comment="#")`` never
mistakes data for a comment.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate, chain, count, islice, repeat
from operator import add, itemgetter
from pathlib import Path
from typing import Any, Protocol

import msgspec

from keysync import logs
from keysync.comparison import Comparison, SystemSummary
from keysync.durable import replace_atomically, sync_folder
from keysync.errors import RunError
from keysync.stages.merger import KeyIndex
from keysync.state import paused_gc
from keysync.testhooks import pause_for_tests

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# master_key_registry.csv cells that can hold input text (or a key whose rules let
# through any character): master_key, source_key, seen_in, last_seen_at.
REGISTRY_RISKY = (0, 4, 5, 8)

# Column descriptions say {authority}: the first source, whatever its name (see write()).
SUMMARY_COLUMNS = {
    "system": "system name; the authority comes first",
    "available": "false when the source could not be read (then the counts are empty)",
    "rows_read": "data records read, rejected ones included",
    "rows_rejected": "records rejected (see rejected_rows.csv)",
    "unique_keys": "distinct normalized keys",
    "duplicate_keys": "normalized keys that occur more than once (see duplicates.csv)",
    "matched": "keys in both {authority} and this system",
    "missing_in_a": "keys in this system, not in {authority}",
    "missing_from_system": "keys in {authority}, not in this system",
    "match_rate": "matched / |{authority} ∪ system|, 4 decimals",
}
MISSING_IN_A_COLUMNS = {
    "key": "normalized key",
    "system": "system that holds the key ({authority} does not)",
    "source_key": "the key as written on the first row that had it",
    "source_line": "physical line of that row (header = line 1)",
    "last_seen_at": "timestamp column of that row",
    "proposed_master_key": "master key proposed for it",
    "registry_status": "status of that master key after this run",
}
MISSING_FROM_SYSTEM_COLUMNS = {
    "key": "normalized key",
    "system": "system that lacks the key ({authority} has it)",
    "a_source_key": "the key as written in {authority}",
    "a_last_seen_at": "timestamp column of that row in {authority}",
    "missing_since": "first run of the current stretch in which {authority} held the key and the "
    "system (as last read) lacked it",
}
DUPLICATES_COLUMNS = {
    "system": "system",
    "key": "normalized key that occurs more than once",
    "occurrences": "number of rows with the key",
    "distinct_raw_keys": "number of different raw forms among them",
    "collision": "true when different raw keys normalize to this key",
    "source_lines": "physical lines of every occurrence, ;-joined",
}
REJECTED_COLUMNS = {
    "system": "system",
    "file": "source file",
    "line": "physical line where the record starts",
    "error_type": (
        "encoding | extra-cell | missing-cell | empty-key | bad-quoting | nul-byte | too-long"
    ),
    "message": "what is wrong",
    "raw": "the record as read (too-long, empty-key: the key), cut at 200 characters with …",
}

REGISTRY_MEANINGS = {
    "master_key": "the key (mirror), or <system><separator><key> (namespaced)",
    "status": "Proposed | Active | Deprecated",
    "strategy": "mirror | namespaced: how this master key was formed",
    "source_system": "the system (first by name) the key was proposed from",
    "source_key": "the key as written in that system",
    "seen_in": "the systems holding the key after this run, ;-joined",
    "created_at": "when the master key was proposed",
    "updated_at": "when its status or seen_in last changed",
    "last_seen_at": "the newest timestamp column among the rows that hold the key",
    "created_run": "the run that proposed it",
    "updated_run": "the run (or manual-<time>-<4 hex> registry command) that last changed it",
    "dry_run_change": "what this dry run would change (a dry run only)",
}
AUDIT_MEANINGS = {
    "timestamp": "when the event was recorded",
    "run_id": "the run, or manual-<time>-<4 hex> for a registry command (approve, rekey...)",
    "seq": "the event's place in the trail; empty for what a dry run would record",
    "event": "what happened: key.proposed, key.approved, key.deprecated, run.completed...",
    "system": "the system concerned, if any",
    "key": "the key concerned, if any",
    "detail": "what changed, in words",
}


class RegistryView(Protocol):
    """What the reporter needs from the provisioning plan."""

    def master_key_for(self, system: str, key: str) -> str: ...

    def statuses(self) -> dict[str, str]: ...


class GapHistory(Protocol):
    """What the reporter needs from the key history."""

    def missing_since_all(self, system: str, keys: Iterable[str]) -> Iterator[str]: ...


def safe(value: str) -> str:
    """Neutralize a cell a spreadsheet would run as a formula."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def _quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def csv_cell(value: Any) -> str:
    """A cell as ``csv.writer`` (QUOTE_MINIMAL) writes it, a carriage return quoted too."""
    if value is None:
        return ""
    if not isinstance(value, str):
        return str(value)
    return _quote(value) if _NEEDS_QUOTES.search(value) else value


def line_with_hash(cells: Sequence[Any], numbers: Sequence[int] = ()) -> str | None:
    """A row holding ``#`` as one line with every text cell quoted, else None.

    csv would leave ``#`` unquoted, and ``pandas.read_csv(f, comment="#")`` would cut the
    line there; ``numbers``: columns written as the numbers they are.
    """
    if not any(isinstance(c, str) and "#" in c for c in cells):
        return None
    line = ",".join(
        _quote(c) if isinstance(c, str) and i not in numbers else str(c)
        for i, c in enumerate(cells)
    )
    return line + "\n"


def _rows_with_cr(rows: Sequence[Sequence[Any]]) -> list[int]:
    """Indices of the rows with a carriage return in a cell: one C-level scan, then per row."""
    if "\r" not in "".join(map(str, chain.from_iterable(rows))):
        return []
    return [i for i, row in enumerate(rows) if any("\r" in str(cell) for cell in row)]


# Finds, in cells each preceded by \x1f, a "#" anywhere or a formula character at a cell
# start. It begins with a character class, which re scans for fast (no "^" tried everywhere).
_NEEDS_CARE = re.compile("#|\x1f[=+\\-@\t\r]")
_FORMULA_START = re.compile("[=+\\-@\t\r]")
_NEEDS_QUOTES = re.compile('[,"\n\r]')
_FIRST = itemgetter(slice(0, 1))
_CHUNK = 10_000


def _rows_needing_care(chunk: Sequence[Sequence[Any]], risky: Sequence[int]) -> set[int]:
    """Indices of rows with a risky cell that holds a ``#`` or starts like a formula.

    May name a row that needs nothing (a cell holding the joining character): the
    careful path is always right, only slower. Never misses one.
    """
    found: set[int] = set()
    for column in risky:
        found.update(_cells_needing_care(list(map(itemgetter(column), chunk))))
    return found


def _cells_needing_care(cells: list[str]) -> list[int]:
    """Indices of the cells that hold a ``#`` or start like a formula: two C-speed scans.

    The first characters of all cells, joined, put cell ``i``'s at position ``i``
    (an empty cell counts as a space), so the formula starts are one regex over a
    string of one character per cell. The cells joined with ``\\x1f`` show each
    ``#`` with ``str.find``; its cell is the number of separators before it.
    That count is only right if no cell holds ``\\x1f`` itself: then (never in
    practice) ``_cells_needing_care_by_regex`` decides, the one scan this used
    to be, which may also name a cell holding ``\\x1f`` and a formula character.
    """
    joined = "\x1f".join(cells)
    if joined.count("\x1f") != len(cells) - 1:
        return _cells_needing_care_by_regex(cells)
    firsts = "".join(map(_FIRST, cells))
    if len(firsts) != len(cells):  # an empty cell: pad each first character to one
        firsts = "".join(map(str.ljust, map(_FIRST, cells), repeat(1)))
    found = [m.start() for m in _FORMULA_START.finditer(firsts)]
    cell, scanned = 0, 0
    position = joined.find("#")
    while position >= 0:
        cell += joined.count("\x1f", scanned, position)
        scanned = position
        found.append(cell)
        position = joined.find("#", position + 1)
    return found


def _cells_needing_care_by_regex(cells: list[str]) -> list[int]:
    """Indices of cells with a ``#`` or a formula start: one regex over the joined cells.

    May name a cell that holds ``\\x1f`` followed by a formula character.
    """
    joined = "\x1f" + "\x1f".join(cells)  # a separator before every cell, the first too
    matches = [m.end() - 1 for m in _NEEDS_CARE.finditer(joined)]  # inside the cell
    if not matches:
        return []
    # Start of cell i in ``joined``: i + 1 separators and the lengths of the cells
    # before it (``add`` over two iterators, so no Python call per cell).
    starts = list(map(add, accumulate(map(len, cells), initial=0), count(1)))
    return [bisect_right(starts, position) - 1 for position in matches]


def _plain_lines(rows: Sequence[Sequence[Any]]) -> list[str] | None:
    """Each row as ``csv.writer`` (``lineterminator="\\n"``) writes it, less the line end; or None.

    Joining cells with ``,`` is what ``csv`` does for a cell that needs no
    quotes: one without ``,``, ``"``, ``\\n`` or ``\\r`` (``\\r`` is left to ``csv``
    whatever the Python version does with it). Rather than look at each cell,
    the joined text is checked at once: exactly one ``,`` between cells and one
    ``\\n`` between rows means no cell has either. A one-cell row of ``""`` is
    quoted by ``csv``, so rows must have two cells at least. A cell that is not
    a ``str`` (a number, None) makes ``join`` fail: ``csv`` formats those.
    """
    try:
        lines = list(map(",".join, rows))
    except TypeError:
        return None
    text = "\n".join(lines)
    cells = sum(map(len, rows))
    if (
        min(map(len, rows)) < 2
        or text.count(",") != cells - len(rows)
        or text.count("\n") != len(rows) - 1
        or '"' in text
        or "\r" in text
    ):
        return None
    return lines


def _plain_text(rows: Sequence[Sequence[Any]]) -> str | None:
    """The rows as ``csv.writer`` writes them, line ends included; or None (``_plain_lines``)."""
    lines = _plain_lines(rows)
    if lines is None:
        return None
    lines.append("")
    return "\n".join(lines)


@dataclass
class ReportFile:
    """One CSV being written: a header block, then rows; committed by ``close``."""

    path: Path
    handle: io.TextIOWrapper
    writer: Any
    count: int = 0

    def rows(
        self,
        rows: Iterable[Sequence[Any]],
        risky: Sequence[int] = (),
        numbers: Sequence[int] = (),
    ) -> None:
        """Write rows; cells in the ``risky`` columns (input text) are made spreadsheet-safe.

        ``numbers``: columns holding numbers already formatted with ``str``, so
        that a row is all text and takes the fast path; written as the numbers
        would be (never quoted, even in a row quoted for a ``#``).

        Rows are taken ``_CHUNK`` at a time, so an iterator (a database cursor) is
        never held in memory whole. The rows that need care (a ``#`` or a formula
        start in a risky cell) are found column by column (``_cells_needing_care``).
        When no cell of the chunk needs csv's quotes (``_plain_lines``, the usual
        case), the chunk is its joined lines with the careful ones put in, in one
        write; otherwise the runs between careful rows go to ``_plain_rows``.
        """
        source = iter(rows)
        while chunk := list(islice(source, _CHUNK)):
            self.count += len(chunk)
            careful = _rows_needing_care(chunk, risky)
            lines = _plain_lines(chunk) if self._joins_like_csv() else None
            if lines is None:  # a cell to quote, or not a str: csv writes the plain runs
                self._runs(chunk, sorted(careful), risky, numbers)
                continue
            for i in careful:  # the dialect's line end is "\n" here, as _plain_lines joins
                lines[i] = self._careful_line(chunk[i], risky, numbers).removesuffix("\n")
            lines.append("")
            self.handle.write("\n".join(lines))

    def _runs(
        self,
        chunk: list[Sequence[Any]],
        careful: list[int],
        risky: Sequence[int],
        numbers: Sequence[int],
    ) -> None:
        """A chunk with a cell for csv: the runs of rows between careful ones in one call each.

        Rows with a carriage return in a cell are careful too: ``csv`` quotes such a
        cell only from Python 3.13 on (with ``lineterminator="\\n"``), and unquoted it
        splits the row in two for every reader.
        """
        if self._joins_like_csv():  # the reports' own dialect, with "\n" line ends
            careful = sorted({*careful, *_rows_with_cr(chunk)})
        done = 0
        for i in careful:
            if i > done:
                self._plain_rows(chunk[done:i])
            self._careful_row(chunk[i], risky, numbers)
            done = i + 1
        if done < len(chunk):
            self._plain_rows(chunk[done:] if done else chunk)

    def _plain_rows(self, rows: Sequence[Sequence[Any]]) -> None:
        """Rows that need no formula guard, exactly as ``csv.writer.writerows`` writes them.

        ``csv`` looks at every character of every cell for one to quote; report
        cells almost never have one, so the run is joined in C with ``,`` and
        ``\\n`` and then checked as a whole (``_plain_text``). Only a run where
        that check fails, or with a cell that is not a ``str``, goes to ``csv``.
        """
        text = _plain_text(rows) if self._joins_like_csv() else None
        if text is None:
            self.writer.writerows(rows)
        else:
            self.handle.write(text)

    def _joins_like_csv(self) -> bool:
        """Whether joining with "," and "\\n" is what this file's csv dialect writes.

        ``ReportWriter.open`` always makes it so; a writer with another dialect
        (a delimiter, a line end, other quoting) simply never takes the fast path.
        """
        dialect = self.writer.dialect
        return (
            dialect.delimiter == ","
            and dialect.quotechar == '"'
            and dialect.lineterminator == "\n"
            and dialect.quoting == csv.QUOTE_MINIMAL
            and dialect.escapechar is None
        )

    def _careful_row(
        self, row: Sequence[Any], risky: Sequence[int], numbers: Sequence[int] = ()
    ) -> None:
        self.handle.write(self._careful_line(row, risky, numbers))

    def _careful_line(
        self, row: Sequence[Any], risky: Sequence[int], numbers: Sequence[int]
    ) -> str:
        """A row with its risky cells made safe, as one line with its end."""
        cells = list(row)
        for column in risky:
            cells[column] = safe(cells[column])
        line = line_with_hash(cells, numbers)
        if line is not None:
            return line
        plain_dialect = self._joins_like_csv()
        if plain_dialect and any(isinstance(c, str) and "\r" in c for c in cells):
            return ",".join(map(csv_cell, cells)) + "\n"  # csv as Python 3.13 writes it
        text = _plain_text([cells]) if plain_dialect else None
        if text is not None:
            return text
        buffer = io.StringIO()
        csv.writer(buffer, self.writer.dialect).writerow(cells)
        return buffer.getvalue()

    def close(self) -> None:
        """Flush, fsync, and give the file its name: a staged report without ``.part`` is whole."""
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        whole = self.path.with_name(self.path.name.removesuffix(PART))
        os.replace(self.path, whole)
        self.path = whole


PART = ".part"  # a staged report still being written
PUBLISHING = ".publishing"  # in the output folder while a run renames its reports into it


class ReportWriter:
    """Writes a run's reports into a staging folder, then publishes them all at once."""

    def __init__(self, output_dir: Path, run_id: str, generated_at: str) -> None:
        self.output_dir = output_dir
        self.run_id = run_id
        self.generated_at = generated_at
        self.staging = output_dir / f".staging-{run_id}"
        self.written: list[str] = []
        self.files: dict[str, ReportFile] = {}
        self.restaged: dict[str, int | None] = {}  # rows of the reports copied, by name

    def open(
        self,
        name: str,
        columns: dict[str, str] | Sequence[str],
        *,
        row_count: int | None = None,
        totals: str = "",
        description: str = "",
    ) -> ReportFile:
        """Start a report; with ``row_count`` set, it gets the ``# name: value`` header block."""
        self.staging.mkdir(parents=True, exist_ok=True)
        path = self.staging / (name + PART)
        handle = open(path, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed by ReportFile
        if row_count is not None:
            handle.write(f"# report: {name.removesuffix('.csv')}\n")
            if description:
                handle.write(f"# description: {description}\n")
            handle.write(f"# run_id: {self.run_id}\n# generated_at: {self.generated_at}\n")
            handle.write(f"# rows: {row_count}\n")
            if totals:
                handle.write(f"# totals: {totals}\n")
            if isinstance(columns, dict):
                for column, meaning in columns.items():
                    handle.write(f"# column {column}: {meaning}\n")
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(list(columns))
        self.written.append(name)
        self.files[name] = ReportFile(path, handle, writer)
        return self.files[name]

    def restage(self, name: str, previous: Path, previous_run_id: str) -> None:
        """Stage the previous run's report ``name`` as this run's (keysync/replay.py): the
        same bytes but for the header's ``run_id`` and ``generated_at`` lines."""
        self.staging.mkdir(parents=True, exist_ok=True)
        path = self.staging / (name + PART)
        renewed = f"# run_id: {self.run_id}\n# generated_at: {self.generated_at}\n"
        with open(previous, "rb") as source, open(path, "wb") as target:
            head = source.read(1 << 16)  # the header block, and then some rows
            lines = f"\n# run_id: {previous_run_id}\n# generated_at: ".encode()
            start = head.find(lines) + 1  # where the run_id line begins
            if start:  # (reconciliation_summary.csv has no header block: nothing to renew)
                end = head.index(b"\n", start + len(lines) - 1) + 1  # after generated_at's
                rows = re.match(rb"# rows: (\d+)\n", head[end:])
                self.restaged[name] = int(rows.group(1)) if rows else None
                head = head[:start] + renewed.encode() + head[end:]
            target.write(head)
            shutil.copyfileobj(source, target, 1 << 20)
            target.flush()
            os.fsync(target.fileno())
        os.replace(path, self.staging / name)
        self.written.append(name)

    def write_json(self, name: str, data: Any) -> None:
        self.staging.mkdir(parents=True, exist_ok=True)
        encoded = msgspec.json.format(msgspec.json.encode(data), indent=2) + b"\n"
        replace_atomically(self.staging / name, encoded, self.staging / (name + PART))
        self.written.append(name)

    def sync(self) -> None:
        """fsync the staging folder: the renames of whole files to their names are durable."""
        sync_folder(self.staging)

    def check_targets(self, names: Iterable[str]) -> None:
        """Refuse now what would stop a report from being renamed into place later.

        Called before the state is committed: a folder in the way of a report would
        otherwise fail the publish after the commit, leaving a run recorded as
        completed next to a mix of this run's reports and the previous run's.
        """
        for name in names:
            target = self.output_dir / name
            if target.is_dir():
                raise RunError(
                    f"cannot put report {name} in place: {target} is a folder; "
                    "move it away and run again"
                )

    def publish(self) -> list[Path]:
        """Rename every staged report into the output folder (each rename is atomic).

        The renames are one by one, so while they last (or if the process is killed
        among them) the folder holds some reports of this run and some of the one
        before. ``output/.publishing`` says so: it names this run, exists only then,
        and the next run finishes the renames before it removes the marker.
        """
        marker = self.output_dir / PUBLISHING
        try:
            marker.write_text(f"{self.run_id}\n", encoding="utf-8")
        except OSError:
            marker.unlink(missing_ok=True)  # a full disk: no marker that names no run
            raise
        sync_folder(self.output_dir)
        published = []
        for number, name in enumerate(self.written):
            target = self.output_dir / name
            os.replace(self.staging / name, target)
            published.append(target)
            if number == 0:
                pause_for_tests("mid-publish")
        sync_folder(self.output_dir)
        marker.unlink()
        sync_folder(self.output_dir)
        log = logs.get_logger(stage="reporter")
        for target in published:
            report = self.files.get(target.name)
            log.info(
                "report.written",
                report=target.name,
                path=str(target),
                rows=report.count if report else self.restaged.get(target.name),
            )
        shutil.rmtree(self.staging, ignore_errors=True)
        return published

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


def _count(value: int | None) -> str:
    return "" if value is None else str(value)


def summary_rows(summaries: Iterable[SystemSummary]) -> list[list[str]]:
    rows = []
    for s in summaries:
        rows.append(
            [
                s.system,
                "true" if s.available else "false",
                _count(s.rows_read),
                _count(s.rows_rejected),
                _count(s.unique_keys),
                _count(s.duplicate_keys),
                _count(s.matched),
                _count(s.missing_in_a),
                _count(s.missing_from_system),
                "" if s.match_rate is None else repr(s.match_rate),
            ]
        )
    return rows


def write_reconciliation_reports(
    writer: ReportWriter,
    comparison: Comparison,
    files: dict[str, Path],
    registry: RegistryView,
    history: GapHistory,
) -> dict[str, int]:
    """Write the summary and the four detail reports; returns rows written per report.

    Without cyclic garbage collection: the rows are ~1M tuples and lists (at 5 x
    1M keys), none in a cycle, allocated next to a multi-million-object index,
    and each automatic full collection would walk that whole heap (it was ~40 %
    of this phase at 5 x 1M).
    """
    with paused_gc():
        return _write_reconciliation_reports(writer, comparison, files, registry, history)


def _write_reconciliation_reports(
    writer: ReportWriter,
    comparison: Comparison,
    files: dict[str, Path],
    registry: RegistryView,
    history: GapHistory,
) -> dict[str, int]:
    index = comparison.index
    authority = comparison.authority
    summaries = list(comparison.summaries.values())
    available = [s.system for s in summaries if s.available]
    counts: dict[str, int] = {}

    def write(name: str, columns: dict[str, str], rows: list[Any], **header: Any) -> None:
        risky = header.pop("risky", ())
        numbers = header.pop("numbers", ())
        described = {
            column: text.replace("{authority}", authority) for column, text in columns.items()
        }
        report = writer.open(name, described, **header)
        report.rows(rows, risky=risky, numbers=numbers)
        report.close()
        counts[name] = len(rows)

    write("reconciliation_summary.csv", SUMMARY_COLUMNS, summary_rows(summaries), risky=(0,))
    rows: list[Any] = _missing_in_a_rows(comparison, registry)
    write(
        "diff_missing_in_A.csv",
        MISSING_IN_A_COLUMNS,
        rows,
        row_count=len(rows),
        totals=_totals_of(comparison.missing_in_a),
        description=f"keys held by a peer but not by the authority {authority} (out-of-authority)",
        risky=(0, 2, 4, 5),
        numbers=(3,),
    )
    rows = _gap_rows(comparison, history)
    write(
        "diff_missing_from_system.csv",
        MISSING_FROM_SYSTEM_COLUMNS,
        rows,
        row_count=len(rows),
        totals=_totals_of(comparison.gaps),
        description=f"keys held by the authority {authority} but not by a peer (propagation gaps)",
        risky=(0, 2, 3),
    )
    rows = _duplicate_rows(index, available)
    write(
        "duplicates.csv",
        DUPLICATES_COLUMNS,
        rows,
        row_count=len(rows),
        totals=_totals({system: len(index[system].repeats) for system in available}),
        description="normalized keys occurring more than once within one system",
        risky=(1,),
        numbers=(2, 3),
    )
    # Every system read to its end: one whose every row was rejected is unavailable,
    # and its rejected rows say why.
    read = [s.system for s in summaries if s.rows_rejected is not None]
    rows = [
        [system, str(files[system]), str(row.line), row.error_type, row.message, row.raw]
        for system in read
        for row in sorted(index[system].rejected, key=lambda r: r.line)
    ]
    write(
        "rejected_rows.csv",
        REJECTED_COLUMNS,
        rows,
        row_count=len(rows),
        totals=_totals({system: len(index[system].rejected) for system in read}),
        description="rows that could not be used, with the reason",
        risky=(1, 4, 5),
        numbers=(2,),
    )
    return counts


def _duplicate_rows(index: KeyIndex, systems: list[str]) -> list[list[Any]]:
    """Rows of duplicates.csv sorted by system, key; source lines in ascending order."""
    rows: list[list[Any]] = []
    for system in systems:
        repeats = index[system].repeats
        for key in sorted(repeats):
            occurrences = repeats[key]  # in file order, so by line
            raws = {raw for _, raw in occurrences}
            rows.append(
                [
                    system,
                    key,
                    str(len(occurrences)),
                    str(len(raws)),
                    "true" if len(raws) > 1 else "false",
                    ";".join(str(line) for line, _ in occurrences),
                ]
            )
    return rows


def _missing_in_a_rows(comparison: Comparison, registry: RegistryView) -> list[tuple[Any, ...]]:
    """Rows of diff_missing_in_A.csv sorted by key, system; built column-wise with map()."""
    rows: list[tuple[Any, ...]] = []
    statuses = registry.statuses()
    for system in sorted(comparison.missing_in_a):
        held = comparison.index[system]
        keys = sorted(comparison.missing_in_a[system])
        at = held.rows_of(keys)
        master_keys = list(map(registry.master_key_for, repeat(system), keys))
        rows.extend(
            zip(
                keys,
                repeat(system),
                held.raws_at(at, keys),
                map(str, held.lines_at(at)),
                held.stamps_at(at),
                master_keys,
                map(statuses.get, master_keys, repeat("")),
            )
        )
    # Each system's run is sorted and systems come in order: a stable sort on the key
    # alone merges the runs (timsort) and keeps equal keys in system order.
    rows.sort(key=itemgetter(0))
    return rows


def _gap_rows(comparison: Comparison, history: GapHistory) -> list[tuple[Any, ...]]:
    """Rows of diff_missing_from_system.csv sorted by system, key."""
    a_keys = comparison.index[comparison.authority]
    rows: list[tuple[Any, ...]] = []
    for system in sorted(comparison.gaps):
        keys = sorted(comparison.gaps[system])
        at = a_keys.rows_of(keys)
        rows.extend(
            zip(
                keys,
                repeat(system),
                a_keys.raws_at(at, keys),
                a_keys.stamps_at(at),
                history.missing_since_all(system, keys),
            )
        )
    return rows


def _totals(counts: dict[str, int]) -> str:
    """A report's ``totals`` header line: each system's count, ``B=3; C=0``."""
    return "; ".join(f"{system}={count}" for system, count in counts.items())


def _totals_of(keys_by_system: dict[str, set[str]]) -> str:
    return _totals({system: len(keys) for system, keys in sorted(keys_by_system.items())})
