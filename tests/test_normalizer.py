"""The batch normalizer against a row-by-row model: kept rows, raw forms, rejections.

``normalize_batch`` finds too-long and empty keys and the changed raw forms in
C-level passes over the whole batch; the model takes one row at a time, as
SPEC.md describes it (a raw key over ``max_key_length`` characters is
``too-long``; a key that normalizes to nothing is ``empty-key``; rejected rows
by line).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from keysync.config import NormalizeConfig
from keysync.messages import KeyBatch, RawBatch, RejectedRow
from keysync.normalization import compile_rules
from keysync.stages.normalizer import normalize_batch

NORMALIZER = compile_rules(NormalizeConfig())

raw_keys = st.one_of(
    st.sampled_from(["CUST-00042", " cust_00042 ", "#!?", "", "  ", "café 7", "ＣＵＳＴ１"]),
    st.text(st.sampled_from("aB9-_. #é"), max_size=12),
    st.text(st.sampled_from("X-"), min_size=9, max_size=14),  # around a limit of 10
    st.text(st.sampled_from("#-"), min_size=198, max_size=203),  # around the preview's 200
)


def model(batch: RawBatch, limit: int) -> KeyBatch:
    keys: list[str] = []
    changes: list[tuple[int, str]] = []
    lines: list[int] = []
    stamps: list[str] = []
    rejected = list(batch.rejected)
    for raw, line, stamp in zip(batch.raw_keys, batch.lines, batch.timestamps):
        if len(raw) > limit:
            message = f"key has {len(raw)} characters, the limit is {limit} "
            message += "(processing.max_key_length)"
            shown = raw if len(raw) <= 200 else raw[:200] + "…"
            rejected.append(RejectedRow("B", line, "too-long", message, shown))
            continue
        key = NORMALIZER.normalize(raw)
        if not key:
            message = "the key normalizes to nothing: the rules keep only ASCII A-Z and 0-9"
            message += " (joined by '-')"
            shown = raw if len(raw) <= 200 else raw[:200] + "…"
            rejected.append(RejectedRow("B", line, "empty-key", message, shown))
            continue
        if key != raw:
            changes.append((len(keys), raw))
        keys.append(key)
        lines.append(line)
        stamps.append(stamp)
    rejected.sort(key=lambda row: row.line)
    return KeyBatch.of(
        system="B",
        seq=3,
        start_offset=10,
        end_offset=90,
        first_line=7,
        next_line=40,
        keys=keys,
        raw_changes=changes,
        lines=lines,
        timestamps=stamps,
        rejected=rejected,
        rows_read=33,
    )


@given(st.lists(raw_keys, max_size=60), st.sampled_from([10, 256]), st.booleans())
def test_normalize_batch_equals_the_row_by_row_model(
    raws: list[str], limit: int, parse_error: bool
) -> None:
    lines = [7 + 2 * i for i in range(len(raws))]  # gaps: lines of rows the reader rejected
    stamps = [f"2026-11-{i % 28 + 1:02d}T02:00:00Z" for i in range(len(raws))]
    earlier = [RejectedRow("B", 8, "extra-cell", "3 cells, expected 2", "a,b,c")]
    batch = RawBatch(
        "B", 3, 10, 90, 7, 40, list(raws), lines, stamps, earlier if parse_error else [], 33
    )
    before = (list(batch.raw_keys), list(batch.lines), list(batch.timestamps))
    result = normalize_batch(batch, NORMALIZER, limit)
    assert result == model(batch, limit)
    assert result.raws() == [raw for raw in raws if len(raw) <= limit and NORMALIZER.normalize(raw)]
    assert (batch.raw_keys, batch.lines, batch.timestamps) == before  # the batch is left as it was


def test_a_batch_of_rejected_keys_only() -> None:
    batch = RawBatch("B", 0, 0, 9, 2, 5, ["#", "XXXXXXXXXXXX", "?"], [2, 3, 4], ["", "", ""], [], 3)
    result = normalize_batch(batch, NORMALIZER, 10)
    assert (result.keys, result.line_numbers(), result.timestamps()) == ([], [], [])
    assert result.raw_changes == []
    assert [(r.line, r.error_type) for r in result.rejected] == [
        (2, "empty-key"),
        (3, "too-long"),
        (4, "empty-key"),
    ]


def test_a_batch_with_many_rejected_rows_equals_the_model() -> None:
    """More than a few rejected rows take the other way of dropping them: same batch."""
    raws = [raw for i in range(60) for raw in (f"k-{i}", "#", "X" * 12)]
    batch = RawBatch(
        "B", 3, 10, 90, 7, 40, raws, [7 + i for i in range(len(raws))], ["t"] * len(raws), [], 33
    )
    result = normalize_batch(batch, NORMALIZER, 10)
    assert result == model(batch, 10)
    assert result.keys == [f"K-{i}" for i in range(60)] and len(result.rejected) == 120
