"""The merger and the comparison: in-order application, duplicates, set algebra."""

from __future__ import annotations

import itertools
from unittest.mock import patch

from hypothesis import given
from hypothesis import strategies as st

from keysync.comparison import compare
from keysync.messages import KeyBatch, RejectedRow
from keysync.stages import columns
from keysync.stages.columns import TextColumn, pack_cells, unpack_cells
from keysync.stages.merger import KeyIndex


def batch(system: str, seq: int, rows: list[tuple[str, str, int]], next_line: int = 0) -> KeyBatch:
    keys = [k for k, _, _ in rows]
    return KeyBatch.of(
        system=system,
        seq=seq,
        start_offset=seq * 100,
        end_offset=seq * 100 + 100,
        first_line=rows[0][2] if rows else 2,
        next_line=next_line or (rows[-1][2] + 1 if rows else 2),
        keys=keys,
        raw_changes=[(i, raw) for i, (key, raw, _) in enumerate(rows) if raw != key],
        lines=[line for _, _, line in rows],
        timestamps=[f"t{line}" for _, _, line in rows],
        rejected=[],
        rows_read=len(rows),
    )


def test_batches_apply_in_seq_order_whatever_the_arrival() -> None:
    index = KeyIndex(["A"])
    second = batch("A", 1, [("K2", "k2", 3)])
    first = batch("A", 0, [("K1", "K1", 2)])
    assert index.add(second) == []
    assert index["A"].position.seq == 0  # waits for seq 0
    assert index.add(first) == [first, second]
    assert index["A"].position.seq == 2
    assert index["A"].position.offset == 200
    assert index["A"].as_dicts()[0] == {"K1": 2, "K2": 3}
    assert index["A"].raw_form("K2") == "k2"
    assert index["A"].raw_form("K1") == "K1"


def test_duplicates_within_and_across_batches_keep_first_row() -> None:
    index = KeyIndex(["A"])
    index.add(batch("A", 0, [("K1", "K1", 2), ("K2", "k 2", 3), ("K1", "K1", 4)]))
    index.add(batch("A", 1, [("K2", "K2", 5), ("K3", "K3", 6), ("K2", "k_2", 7)]))
    a = index["A"]
    assert a.as_dicts()[0] == {"K1": 2, "K2": 3, "K3": 6}
    assert a.timestamp("K2") == "t3"
    assert a.raw_form("K2") == "k 2"
    assert a.repeats == {
        "K1": [(2, "K1"), (4, "K1")],
        "K2": [(3, "k 2"), (5, "K2"), (7, "k_2")],
    }


def test_compare_counts_and_rates() -> None:
    index = KeyIndex(["A", "B", "C"])
    index.add(batch("A", 0, [(f"K{i}", f"K{i}", i + 2) for i in range(8)]))
    index.add(batch("B", 0, [(f"K{i}", f"K{i}", i + 2) for i in range(2, 10)]))
    index["A"].rejected.append(RejectedRow("A", 99, "empty-key", "m", "#"))
    result = compare(index, "A", {"C": "gone"})
    assert result.missing_in_a == {"B": {"K8", "K9"}}
    assert result.gaps == {"B": {"K0", "K1"}}
    b = result.summaries["B"]
    assert (b.matched, b.missing_in_a, b.missing_from_system, b.match_rate) == (6, 2, 2, 0.6)
    a = result.summaries["A"]
    assert (a.matched, a.missing_in_a, a.missing_from_system, a.match_rate) == (8, 0, 0, 1.0)
    assert a.rows_rejected == 1
    assert not result.summaries["C"].available
    assert list(result.summaries) == ["A", "B", "C"]


_rows = st.lists(
    st.tuples(
        st.sampled_from(["K1", "K2", "K3", "K4", "K5", "K6"]),  # few keys: many repeats
        st.sampled_from(["", "raw-a", "raw b"]),  # "": the raw key equals the key
    ),
    max_size=60,
)


@given(
    rows=_rows,
    cuts=st.lists(st.integers(0, 60), max_size=6),
    restored=st.integers(0, 6),
    peeks=st.sets(st.integers(0, 6)),
)
def test_index_equals_first_row_wins_over_every_row(
    rows: list[tuple[str, str]], cuts: list[int], restored: int, peeks: set[int]
) -> None:
    """However rows fall into batches, each key keeps its first row and lists every occurrence.

    Also when the first ``restored`` batches come from a checkpoint (not indexed as they
    arrive), and when the keys are asked for between batches (``peeks``).
    """
    lines = [(key, raw or key, 2 + 3 * i) for i, (key, raw) in enumerate(rows)]
    bounds = sorted({0, len(lines), *(c for c in cuts if c <= len(lines))})
    index = KeyIndex(["A"])
    for seq, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        if seq < restored:
            index.restore(batch("A", seq, lines[lo:hi]))
        else:
            index.add(batch("A", seq, lines[lo:hi]))
        if seq in peeks:
            assert set(index["A"].keys()) == {key for key, _, _ in lines[:hi]}
    index.finish("A")
    first: dict[str, tuple[str, int]] = {}
    seen: dict[str, list[tuple[int, str]]] = {}
    for key, raw, line in lines:
        first.setdefault(key, (raw, line))
        seen.setdefault(key, []).append((line, raw))
    a = index["A"]
    first_lines, timestamps, raw_forms = a.as_dicts()
    assert list(first_lines.items()) == [(key, line) for key, (_, line) in first.items()]
    assert timestamps == {key: f"t{line}" for key, (_, line) in first.items()}
    assert raw_forms == {key: raw for key, (raw, _) in first.items() if raw != key}
    assert a.repeats == {key: rows for key, rows in seen.items() if len(rows) > 1}
    assert a.rows_read == len(lines)


@given(
    batches=st.lists(
        st.lists(st.sampled_from(["2026-10-02T12:00:00Z", "2026-10-02T12:00:00Z+01", "", "x"])),
        max_size=6,
    ),
    data=st.data(),
)
def test_text_column_gives_back_every_cell(batches: list[list[str]], data: st.DataObject) -> None:
    """Fixed-width cells, odd widths, empty cells and batches read back exactly, one or many."""
    column = TextColumn()
    cells: list[str] = []
    for batch in batches:
        column.extend(batch)
        cells.extend(batch)
        assert len(column) == len(cells)
    assert [column[row] for row in range(len(cells))] == cells
    rows = data.draw(st.lists(st.integers(0, len(cells) - 1))) if cells else []
    assert list(column.at(rows)) == [cells[row] for row in rows]
    copy = TextColumn(column.width, column.text(), dict(column.odd), len(column))  # a snapshot's
    copy.extend(["late", ""])
    assert [copy[row] for row in range(len(copy))] == [*cells, "late", ""]


def test_a_column_widens_once_longer_cells_become_common() -> None:
    """An export that switches to fractional seconds: the column widens, nothing stays aside."""
    column = TextColumn()
    cells = ["2026-10-02T12:00:00Z"] * 1_000 + ["2026-10-02"] * 10  # shorter ones: padded
    cells += [f"2026-10-02T12:00:{i % 60:02d}.{i % 1000:03d}Z" for i in range(5_000)]
    cells += ["x" * 100, ""]  # too long to widen for: stays aside
    for start in range(0, len(cells), 1_000):
        column.extend(cells[start : start + 1_000])
    assert column.width == 24
    assert column.odd == {len(cells) - 2: "x" * 100}
    assert [column[row] for row in range(len(cells))] == cells
    assert list(column.at(list(range(len(cells))))) == cells
    copy = TextColumn(column.width, column.text(), dict(column.odd), len(column))
    copy.extend(["2026-10-02T12:00:00.5Z"])
    assert copy[len(cells)] == "2026-10-02T12:00:00.5Z" and not copy.odd.keys() - column.odd.keys()


def test_a_few_longer_cells_stay_aside_without_widening_the_column() -> None:
    column = TextColumn()
    cells = ["2026-10-02T12:00:00Z"] * 100_000
    for row in range(0, len(cells), 50):  # 2 % of the cells, 2,000 of them
        cells[row] = "2026-10-02T12:00:00.123Z"
    for start in range(0, len(cells), 1_000):
        column.extend(cells[start : start + 1_000])
    assert column.width == 20 and len(column.odd) == 2_000
    assert list(column.at(list(range(len(cells))))) == cells


@given(batches=st.lists(st.lists(st.text(st.characters(blacklist_characters="\x00"), max_size=70))))
def test_text_column_reads_back_whatever_widens_it(batches: list[list[str]]) -> None:
    """With a tiny widening threshold, any mix of lengths still reads back exactly."""
    with patch.object(columns, "_WIDEN_AT", 2):
        column = TextColumn()
        cells: list[str] = []
        for batch in batches:
            column.extend(batch)
            cells.extend(batch)
        assert [column[row] for row in range(len(cells))] == cells
        assert list(column.at(list(range(len(cells))))) == cells
        assert all(len(cell) > (column.width or 0) for cell in column.odd.values())


@given(
    batches=st.lists(
        st.lists(
            st.one_of(
                st.sampled_from(["2026-10-02T12:00:00Z", "2026-10-02T12:00:00.5Z", "", "x"]),
                st.text(st.characters(blacklist_characters="\x00"), max_size=70),
                st.text(st.sampled_from("x9"), min_size=60, max_size=200),  # past _MAX_WIDTH
            )
        )
    ),
    widen_at=st.sampled_from([2, 1024]),
)
def test_packed_batches_fill_a_column_as_cell_lists_do(
    batches: list[list[str]], widen_at: int
) -> None:
    """What the readers send (``pack_cells``) gives the very column that the cells give."""
    with patch.object(columns, "_WIDEN_AT", widen_at):
        by_cells, packed = TextColumn(), TextColumn()
        cells: list[str] = []
        for batch in batches:
            width, text, aside = pack_cells(batch)
            assert unpack_cells(width, text, len(batch), aside) == batch
            assert len(text) == width * len(batch)  # never more than the cells or 64 a cell:
            assert len(text) <= max(sum(map(len, batch)), columns._MAX_WIDTH * len(batch))
            by_cells.extend(batch)
            packed.extend_packed(width, text, len(batch), aside)
            cells.extend(batch)
        assert (packed.width, packed.text(), packed.odd, len(packed)) == (
            by_cells.width,
            by_cells.text(),
            by_cells.odd,
            len(by_cells),
        )
        assert list(packed.at(list(range(len(cells))))) == cells


def test_one_huge_cell_does_not_widen_a_packed_batch() -> None:
    """A corrupt timestamp of 100k characters stays aside: the text stays 20 a cell."""
    cells = ["2026-10-02T12:00:00Z"] * 999 + ["x" * 100_000]
    width, text, aside = pack_cells(cells)
    assert (width, len(text), aside) == (20, 20 * 1000, [(999, "x" * 100_000)])
    column = TextColumn()
    column.extend_packed(width, text, len(cells), aside)
    assert list(column.at(list(range(len(cells))))) == cells
