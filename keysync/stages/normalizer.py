"""The normalizer: turns a ``RawBatch`` into a ``KeyBatch`` with the compiled rules.

Rejects rows whose raw key is over ``max_key_length`` (``too-long``) or whose
key normalizes to nothing (``empty-key``). The common case, a batch with
neither, is checked with two C-level passes and costs no per-row Python work.
"""

from __future__ import annotations

from itertools import compress
from operator import ne

from keysync.messages import KeyBatch, RawBatch, RejectedRow
from keysync.normalization import KeyNormalizer


def normalize_batch(batch: RawBatch, normalizer: KeyNormalizer, max_key_length: int) -> KeyBatch:
    """Normalize every raw key of ``batch``; bad keys move to ``rejected``."""
    raws = batch.raw_keys
    lines, stamps = batch.lines, batch.timestamps
    rejected = list(batch.rejected)
    too_long = bool(raws) and max(map(len, raws)) > max_key_length
    if too_long:
        keep = [i for i, raw in enumerate(raws) if len(raw) <= max_key_length]
        for i, raw in enumerate(raws):
            if len(raw) > max_key_length:
                rejected.append(
                    RejectedRow(
                        batch.system,
                        lines[i],
                        "too-long",
                        f"key has {len(raw)} characters, the limit is {max_key_length} "
                        "(processing.max_key_length)",
                        raw[:200] + "…",
                    )
                )
        raws = [raws[i] for i in keep]
        lines = [lines[i] for i in keep]
        stamps = [stamps[i] for i in keep]
    keys = normalizer.normalize_many(raws)
    if not all(keys):
        keep = [i for i, key in enumerate(keys) if key]
        for i, key in enumerate(keys):
            if not key:
                rejected.append(
                    RejectedRow(
                        batch.system,
                        lines[i],
                        "empty-key",
                        "the key normalizes to nothing (no letters or digits)",
                        raws[i],
                    )
                )
        keys = [keys[i] for i in keep]
        raws = [raws[i] for i in keep]
        lines = [lines[i] for i in keep]
        stamps = [stamps[i] for i in keep]
    if too_long or len(rejected) > len(batch.rejected):
        rejected.sort(key=lambda row: row.line)
    # Indices of rows whose key changed, found in C: compress(range, map(ne, ...)).
    changed = compress(range(len(keys)), map(ne, raws, keys))
    return KeyBatch(
        system=batch.system,
        seq=batch.seq,
        start_offset=batch.start_offset,
        end_offset=batch.end_offset,
        first_line=batch.first_line,
        next_line=batch.next_line,
        keys=keys,
        raw_changes=[(i, raws[i]) for i in changed],
        lines=lines,
        timestamps=stamps,
        rejected=rejected,
        rows_read=batch.rows_read,
    )
