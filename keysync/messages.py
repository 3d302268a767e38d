"""Messages that cross process boundaries between the pipeline stages.

Batches, never single rows, cross a queue. A batch carries everything the next
stage needs and the position in its source (``start_offset``/``end_offset``
in bytes, ``first_line``/``next_line`` physical lines, ``seq``), so that the
merger can apply each source strictly in order and a checkpoint can record
exactly where every source stands.
"""

from __future__ import annotations

from array import array

import msgspec

from keysync.stages.columns import pack_cells, unpack_cells


class RejectedRow(msgspec.Struct, array_like=True, frozen=True):
    """A row that could not be used, with the reason (one row of ``rejected_rows.csv``)."""

    system: str
    line: int
    error_type: str
    message: str
    raw: str


class RawBatch(msgspec.Struct, array_like=True):
    """Rows as read from one source: raw keys and where they came from.

    ``raw_keys``, ``lines`` and ``timestamps`` are aligned; rows that failed to
    parse are already in ``rejected``. ``rows_read`` counts every data record of
    the batch, rejected ones included.
    """

    system: str
    seq: int
    start_offset: int
    end_offset: int
    first_line: int
    next_line: int
    raw_keys: list[str]
    lines: list[int]
    timestamps: list[str]
    rejected: list[RejectedRow]
    rows_read: int


class KeyBatch(msgspec.Struct, array_like=True):
    """A ``RawBatch`` after normalization: only usable rows, with their normalized keys.

    Most raw keys are already normal, so raw forms travel only where they differ:
    ``raw_changes`` holds ``(i, raw)`` for each row whose raw key is not ``keys[i]``.
    Lines and timestamps travel packed, two values instead of two thousand:
    ``lines`` holds the rows' line numbers as 8-byte integers (``array("q")``, in
    the machine's byte order: a checkpoint is resumed where it was written) and
    ``stamps`` the timestamps as one string of ``stamp_width``-character cells,
    with the few longer ones in ``long_stamps`` as ``(i, stamp)`` (``columns.pack_cells``).
    The parent appends both to its columns without an object per row
    (docs/performance.md, "Session 5"). Build one with ``of``.
    The same struct is what a checkpoint stores.
    """

    system: str
    seq: int
    start_offset: int
    end_offset: int
    first_line: int
    next_line: int
    keys: list[str]
    raw_changes: list[tuple[int, str]]
    lines: bytes
    stamp_width: int
    stamps: str
    long_stamps: list[tuple[int, str]]
    rejected: list[RejectedRow]
    rows_read: int

    @classmethod
    def of(
        cls,
        *,
        system: str,
        seq: int,
        start_offset: int,
        end_offset: int,
        first_line: int,
        next_line: int,
        keys: list[str],
        raw_changes: list[tuple[int, str]],
        lines: list[int],
        timestamps: list[str],
        rejected: list[RejectedRow],
        rows_read: int,
    ) -> KeyBatch:
        """A batch from its rows' lines and timestamps as lists (packed here)."""
        width, stamps, long_stamps = pack_cells(timestamps)
        return cls(
            system,
            seq,
            start_offset,
            end_offset,
            first_line,
            next_line,
            keys,
            raw_changes,
            array("q", lines).tobytes(),
            width,
            stamps,
            long_stamps,
            rejected,
            rows_read,
        )

    def line_numbers(self) -> list[int]:
        """Every row's line."""
        numbers = array("q")
        numbers.frombytes(self.lines)
        return numbers.tolist()

    def timestamps(self) -> list[str]:
        """Every row's timestamp."""
        return unpack_cells(self.stamp_width, self.stamps, len(self.keys), self.long_stamps)

    def raws(self) -> list[str]:
        """Every row's raw key."""
        raws = list(self.keys)
        for i, raw in self.raw_changes:
            raws[i] = raw
        return raws


class SourceOpened(msgspec.Struct, array_like=True):
    """A reader found its source readable with a usable header; ``size`` in bytes."""

    system: str
    size: int
    header: list[str]


class SourceFinished(msgspec.Struct, array_like=True):
    """A reader reached the end of its source after ``batches`` batches."""

    system: str
    batches: int


class SourceFailed(msgspec.Struct, array_like=True):
    """A source could not be read at all; ``message`` says what and where."""

    system: str
    message: str
