"""``audit_log.csv`` in proportion to the events recorded since it was last written.

The audit trail only grows, and ``audit_log.csv`` lists all of it by timestamp
and seq, so the file a run writes is the previous one with the new events at
the end, as long as no new event sorts before an old one. Instead of rendering
every row of every run again from the database, the runner copies the previous
file's rows as bytes and renders only the events recorded since. The result is
byte for byte what rendering the whole trail gives; whenever that cannot be
shown, the whole trail is rendered (the reference behaviour).

How it is shown. After writing an ``audit_log.csv`` that holds recorded events
only (not a dry run's planned ones), the runner keeps, next to the database:

- ``audit_log.last.csv``: a hard link to that file (it shares the published
  file's inode: no disk space while that file exists; it keeps the rows when
  the published file is replaced by a dry run's or deleted, as ``simulate``
  does in its day folders). If the data and output folders are on different
  file systems, no link is kept and the published file is the only candidate.
- ``audit_log.last.json``: what that file is: the length and SHA-256 of its
  header block and of its rows, the number of rows, the highest ``seq`` it
  holds, its last row, and a fingerprint of how rows are rendered.

The next write copies the rows of a candidate (the link, then
``output/audit_log.csv``) only if all of these hold:

1. the record parses, has this format and the same rendering fingerprint
   (a fixed set of probe rows, formula starts and ``#`` included, rendered by
   ``ReportWriter``/``ReportFile`` as they are now);
2. the database agrees: it holds exactly ``rows`` events up to the recorded
   ``seq``, the event at the last row's ``seq`` is that row, and every event
   recorded since sorts after it (no timestamp earlier than its timestamp: a
   clock set back gives a full rewrite);
3. the candidate has exactly the recorded size and header bytes, and its rows
   have the recorded SHA-256 (checked while they are copied; a mismatch
   truncates the staged file back to its header and tries the next candidate).

Staging and publishing are unchanged: the copy goes into the staged file,
which is fsynced and renamed like every report. The record and the link are
written after the staged file is complete and before it is published; every
check above is made again from the bytes and the database, so a record or a
link left by a killed run, a power cut or a user's edit can only cause a full
rewrite, never a wrong file.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from itertools import chain, groupby
from pathlib import Path
from typing import Any, BinaryIO

from keysync.stages.reporter import ReportFile, ReportWriter
from keysync.state import AUDIT_COLUMNS, StateStore

NAME = "audit_log.csv"
DESCRIPTION = "every run and registry decision of all runs, by timestamp and seq"
DRY_RUN_NOTE = (
    " (dry run: the rows with an empty seq are what it would record; nothing of them was saved)"
)
RISKY = (4, 5, 6)  # system, key, detail: text that can come from the inputs
NUMBERS = (2,)  # seq, given as text (``StateStore.audit_rows(seq_as_text=True)``)
LINK = "audit_log.last.csv"
RECORD = "audit_log.last.json"
FORMAT = 1
_DIGESTS = ("header_sha256", "body_sha256")
_COPY_CHUNK = 1 << 20

# Rows whose rendering decides the bytes: formula starts in risky cells, "#" in risky
# and other cells, quotes, separators, line breaks, the joining character of the
# reporter's scan, non-ASCII text, empty cells, an empty seq (a dry run's planned event).
_PROBE: tuple[tuple[Any, ...], ...] = (
    ("2026-11-27T02:00:00Z", "20261127T020000Z-3f9a", 1, "key.proposed", "B", "CUST-1", "ok"),
    ("t", "r", 2, "e", "=B", "+K", "-d"),
    ("t", "r", 3, "e", "@s", "\tk", "\rd"),
    ("t", "r#", 4, "e#", "#s", "k#", "master key # 1"),
    ("t", "r", 5, "e", 's"', '"k"', "a,b"),
    ("t", "r", 6, "e", "s\nx", "k\r\nx", "café ü 漢"),
    ("t", "r", 7, "e", "\x1f=", "a\x1fb", "x\x1f"),
    ("", "", "", "", "", "", ""),
    ("t", "manual-20261127T093000Z", 123456789012, "run.completed", "", "", "=1+1 # x"),
)


def records_saved_events(path: Path) -> bool:
    """Whether the audit_log.csv at ``path`` lists an event a state recorded (a seq): a
    trace of earlier runs. A dry run on a new state lists only planned ones (no seq),
    and those come after the recorded ones, so the first row tells."""
    csv.field_size_limit(2**31 - 1)  # a detail may quote a long raw key (as the reader's)
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            lines = iter(handle)
            # Only the header block is "# " lines: a quoted cell of a row may hold a line
            # that starts with "#" (a raw key with a line break, in a key.proposed detail).
            line = next((line for line in lines if not line.startswith("#")), "")
            rows = csv.reader(chain([line], lines))
            header, first = next(rows, None), next(rows, None)
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    if not header or not first or "seq" not in header or len(first) != len(header):
        return False
    return bool(first[header.index("seq")])


def render_rows(
    report: ReportFile, recorded: Iterable[Sequence[Any]], planned: Sequence[Sequence[Any]] = ()
) -> None:
    """Rows as ``audit_log.csv`` holds them: recorded events, then a dry run's planned ones.

    Recorded events come with their ``seq`` as text
    (``StateStore.audit_rows(seq_as_text=True)``): a row of text only takes the
    reporter's fast path, and the ``seq`` is written as the number it is. A planned
    event has no ``seq`` (an empty cell, quoted like any text where quoting applies).
    """
    report.rows(recorded, risky=RISKY, numbers=NUMBERS)
    if planned:
        report.rows(planned, risky=RISKY)


@functools.cache
def rendering_fingerprint() -> str | None:
    """SHA-256 of the probe rows as ``ReportWriter``/``ReportFile`` write them now.

    Once per process. None if the probe cannot be written (no temporary folder):
    then nothing is copied and nothing recorded.
    """
    try:
        with tempfile.TemporaryDirectory(prefix="keysync-audit-probe-") as folder:
            writer = ReportWriter(Path(folder), "probe", "1970-01-01T00:00:00Z")
            report = writer.open(
                NAME, AUDIT_COLUMNS, row_count=len(_PROBE), description=DESCRIPTION
            )
            for recorded, rows in groupby(_PROBE, lambda row: isinstance(row[2], int)):
                if recorded:
                    render_rows(report, [(*row[:2], str(row[2]), *row[3:]) for row in rows])
                else:
                    render_rows(report, (), list(rows))
            report.handle.close()  # flushed; a probe needs no fsync
            return hashlib.sha256(report.path.read_bytes()).hexdigest()
    except OSError:
        return None


def _hash_range(path: Path, start: int, digest: Any, end: int | None = None) -> int:
    """Feed ``path[start:end]`` to ``digest``; returns the bytes read."""
    done = 0
    with open(path, "rb") as handle:
        handle.seek(start)
        while True:
            want = _COPY_CHUNK if end is None else min(_COPY_CHUNK, end - start - done)
            if want <= 0:
                break
            chunk = handle.read(want)
            if not chunk:
                break
            digest.update(chunk)
            done += len(chunk)
    return done


class AuditLog:
    """One write of ``audit_log.csv``, driven by ``runner._write_audit_log``.

    Made before ``writer.open`` (it checks the record and the database, and opens
    the candidates); ``copy_previous(report)`` right after the header; then the
    runner renders ``store.audit_rows(after_seq=self.after_seq)`` (every event
    when nothing was copied) and a dry run's planned rows; ``finish`` after
    ``report.close()``. See the module docstring for the checks.
    """

    def __init__(self, writer: ReportWriter, store: StateStore) -> None:
        self.writer = writer
        self.store = store
        self.state_dir = store.path.parent
        self.total = store.audit_count()
        self.fingerprint = rendering_fingerprint()
        self.reason = ""  # why the whole trail is rendered ("" when rows were copied)
        self.after_seq: int | None = None  # set when the previous rows were copied
        self.copied_rows = 0
        self._record = self._usable_record()
        self._candidates: list[BinaryIO] = self._open_candidates() if self._record else []
        self._digest = hashlib.sha256()
        self._header_len = 0
        self._hashed_to = 0  # offset in the staged file up to which _digest has seen it
        # A staged file left by an earlier attempt of this run may be the linked one:
        # write a new inode instead of truncating that one.
        (writer.staging / NAME).unlink(missing_ok=True)

    # ------------------------------------------------------------------ checks

    def _usable_record(self) -> dict[str, Any] | None:
        self.reason = "no usable record of the previous audit_log.csv"
        try:
            record = json.loads((self.state_dir / RECORD).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            return None
        numbers = ("rows", "last_seq", "header_len", "body_len")
        if not all(type(record.get(name)) is int and record[name] >= 0 for name in numbers):
            return None
        if not all(isinstance(record.get(name), str) for name in _DIGESTS):
            return None
        rows, last_seq, last_row = record["rows"], record["last_seq"], record.get("last_row")
        if self.fingerprint is None or record.get("fingerprint") != self.fingerprint:
            self.reason = "rows are rendered differently than when it was written"
            return None
        if rows == 0 or not isinstance(last_row, list):
            self.reason = "the previous audit_log.csv holds no rows"
            return None
        if self.total - self.store.audit_count(after_seq=last_seq) != rows:
            self.reason = "the database does not hold the previous file's events"
            return None
        seq = last_row[2] if len(last_row) == len(AUDIT_COLUMNS) else None
        if not isinstance(seq, int) or list(self.store.audit_event(seq) or ()) != last_row:
            self.reason = "the previous file's last row is not in the database"
            return None
        earliest = self.store.audit_earliest_after(last_seq)
        if earliest is not None and earliest < last_row[0]:
            self.reason = "an event was recorded with an earlier time (clock set back)"
            return None
        return record

    def _open_candidates(self) -> list[BinaryIO]:
        """Previous files with the recorded size and header, opened (checked again by hash)."""
        assert self._record is not None
        record = self._record
        found: list[BinaryIO] = []
        for path in (self.state_dir / LINK, self.writer.output_dir / NAME):
            try:
                handle = open(path, "rb")  # noqa: SIM115 - closed in copy_previous
            except OSError:
                continue
            stat = os.fstat(handle.fileno())
            if (
                stat.st_size == record["header_len"] + record["body_len"]
                and not any(os.path.samestat(stat, os.fstat(o.fileno())) for o in found)
                and hashlib.sha256(handle.read(record["header_len"])).hexdigest()
                == record["header_sha256"]
            ):
                found.append(handle)
            else:
                handle.close()
        if not found:
            self.reason = "no previous audit_log.csv matches its record"
        return found

    # ------------------------------------------------------------------ writing

    def copy_previous(self, report: ReportFile) -> None:
        """After the header: copy a verified previous file's rows, or leave the file as is."""
        report.handle.flush()  # the text layer and its buffer: the OS offset is the end
        self._header_len = os.lseek(report.handle.fileno(), 0, os.SEEK_CUR)
        candidates, self._candidates = self._candidates, []
        try:
            for handle in candidates:
                if self._copy_verified(handle, report):
                    assert self._record is not None
                    self.after_seq = int(self._record["last_seq"])
                    self.copied_rows = int(self._record["rows"])
                    self.reason = ""
                    report.count += self.copied_rows
                    return
                report.handle.seek(self._header_len)
                report.handle.truncate()
                self.reason = "the previous audit_log.csv was changed since it was written"
        finally:
            for handle in candidates:
                handle.close()

    def _copy_verified(self, source: BinaryIO, report: ReportFile) -> bool:
        assert self._record is not None
        digest = hashlib.sha256()
        target = report.handle.buffer
        left = int(self._record["body_len"])
        source.seek(int(self._record["header_len"]))
        while left:
            chunk = source.read(min(_COPY_CHUNK, left))
            if not chunk:
                return False
            digest.update(chunk)
            target.write(chunk)
            left -= len(chunk)
        if digest.hexdigest() != self._record["body_sha256"]:
            return False
        self._digest = digest
        self._hashed_to = self._header_len + int(self._record["body_len"])
        return True

    def finish(self, report: ReportFile, *, planned: Sequence[Any]) -> None:
        """After ``report.close()``: remember the file if it holds recorded events only.

        A dry run's file also lists planned events: the record of the last file
        without them (and its link) stays as it was.
        """
        if planned or report.count != self.total or not self.total or not self.fingerprint:
            return
        path = report.path
        if not self._hashed_to:
            self._hashed_to = self._header_len
        header = hashlib.sha256()
        _hash_range(path, 0, header, self._header_len)
        self._hashed_to += _hash_range(path, self._hashed_to, self._digest)
        top, last_row = self.store.audit_tail()
        record = {
            "format": FORMAT,
            "fingerprint": self.fingerprint,
            "run_id": self.writer.run_id,
            "generated_at": self.writer.generated_at,
            "rows": self.total,
            "last_seq": top,
            "last_row": list(last_row or ()),
            "header_len": self._header_len,
            "header_sha256": header.hexdigest(),
            "body_len": self._hashed_to - self._header_len,
            "body_sha256": self._digest.hexdigest(),
        }
        link, temporary = self.state_dir / LINK, self.state_dir / f".{LINK}.tmp"
        try:
            temporary.unlink(missing_ok=True)
            try:
                os.link(path, temporary)
                os.replace(temporary, link)
            except OSError:  # another file system, or no hard links: the published file only
                link.unlink(missing_ok=True)
            staged = self.state_dir / f".{RECORD}.tmp"
            staged.write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
            os.replace(staged, self.state_dir / RECORD)
        except OSError:  # a record is only an offer to save work: never fail a run for it
            (self.state_dir / RECORD).unlink(missing_ok=True)
            (self.state_dir / f".{RECORD}.tmp").unlink(missing_ok=True)  # a full disk: no debris
