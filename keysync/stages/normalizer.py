"""The normalizer: turns a ``RawBatch`` into a ``KeyBatch`` with the compiled rules.

Rejects rows whose raw key is over ``max_key_length`` (``too-long``) or whose
key normalizes to nothing (``empty-key``). Finding those rows, dropping them
and listing the raw forms that changed are C-level passes over the batch
(``compress``, ``map``, ``del``); only a rejected row costs a Python step. That
matters because most batches hold one: the mock data's corrupted rows put a
too-long or an empty key in three batches out of four, and a Python pass over
every row of such a batch cost ~0.14 µs a row (docs/performance.md, "Session 5").
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import compress, count
from operator import ne, not_
from typing import Any

from keysync.config import NormalizeConfig
from keysync.messages import KeyBatch, RawBatch, RejectedRow
from keysync.normalization import KeyNormalizer
from keysync.stages.reader import preview


def empty_key_message(rules: NormalizeConfig) -> str:
    """Why a key that normalizes to nothing is rejected, true of every such key.

    "No letters or digits" was not: ``漢字`` and ``١٢٣`` are letters and digits that
    ``strip_non_alnum`` removes, and ``abc`` loses its letters with ``uppercase: false``.
    So the message says what these rules let through.
    """
    if rules.strip_non_alnum:
        separator = rules.collapse_delims
        joined = "" if separator is None else f" (joined by {separator!r})"
        return f"the key normalizes to nothing: the rules keep only ASCII A-Z and 0-9{joined}"
    folded = ", once folded" if rules.ascii_fold else ""  # "´" folds to a space, "\u0301" away
    if not rules.trim:
        return f"the key normalizes to nothing: it is empty{folded}"
    return f"the key normalizes to nothing: it is empty or only whitespace{folded}"


def too_long_message(length: int, limit: int) -> str:
    return f"key has {length} characters, the limit is {limit} (processing.max_key_length)"


def normalize_batch(batch: RawBatch, normalizer: KeyNormalizer, max_key_length: int) -> KeyBatch:
    """Normalize every raw key of ``batch``; bad keys move to ``rejected``."""
    raws = batch.raw_keys
    lines, stamps = batch.lines, batch.timestamps
    rejected = list(batch.rejected)
    too_long = _rows_where(map(max_key_length.__lt__, map(len, raws)))
    if too_long:
        rejected.extend(
            RejectedRow(
                batch.system,
                lines[i],
                "too-long",
                too_long_message(len(raws[i]), max_key_length),
                preview(raws[i]),
            )
            for i in too_long
        )
        raws, lines, stamps = _without(too_long, raws, lines, stamps)
    keys = normalizer.normalize_many(raws)
    empty = _rows_where(map(not_, keys))
    if empty:
        message = empty_key_message(normalizer.rules)
        rejected.extend(
            RejectedRow(batch.system, lines[i], "empty-key", message, preview(raws[i]))
            for i in empty
        )
        keys, raws, lines, stamps = _without(empty, keys, raws, lines, stamps)
    if too_long or empty:
        rejected.sort(key=lambda row: row.line)
    changed = _rows_where(map(ne, raws, keys))
    return KeyBatch.of(
        system=batch.system,
        seq=batch.seq,
        start_offset=batch.start_offset,
        end_offset=batch.end_offset,
        first_line=batch.first_line,
        next_line=batch.next_line,
        keys=keys,
        raw_changes=list(zip(changed, map(raws.__getitem__, changed))),
        lines=lines,
        timestamps=stamps,
        rejected=rejected,
        rows_read=batch.rows_read,
    )


def _rows_where(flags: Iterable[object]) -> list[int]:
    """The positions of the true values in ``flags``, found in C."""
    return list(compress(count(), flags))


def _without(rows: list[int], *columns: list[Any]) -> list[list[Any]]:
    """Copies of ``columns`` without the (ascending) ``rows``, in C.

    A few rows (the usual case) are ``del``eted from a copy; many take one
    ``compress`` per column, as each ``del`` moves the rest of the list.
    """
    if len(rows) > 16:
        keep = [True] * len(columns[0])
        for row in rows:
            keep[row] = False
        return [list(compress(column, keep)) for column in columns]
    kept = []
    for column in columns:
        column = column.copy()  # the batch's own lists stay as they were
        for row in reversed(rows):
            del column[row]
        kept.append(column)
    return kept
