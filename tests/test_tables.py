"""The table and JSON printers of the inspection commands (keysync/tables.py).

The streaming forms exist so that `keysync audit` never holds a trail of millions of
events; they must print exactly what the plain forms print.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keysync import tables

cells = st.text(max_size=80) | st.integers() | st.none()
rows = st.lists(st.tuples(cells, cells, cells), max_size=12)


@given(rows, st.integers(min_value=1, max_value=4))
def test_json_list_streamed_in_chunks_is_the_text_of_one_dump(
    items: list[tuple[Any, ...]], chunk: int
) -> None:
    dicts = [{"a": a, "b": b, "c": c} for a, b, c in items]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tables, "JSON_CHUNK", chunk)
        streamed = _printed(lambda: tables.print_json_list(iter(dicts)))
    assert streamed == _printed(lambda: tables.print_json(dicts))


@given(rows)
def test_a_table_streamed_with_widths_from_the_data_is_the_table_made_in_memory(
    items: list[tuple[Any, ...]],
) -> None:
    """The widths are the longest raw cells (what SQL's MAX(LENGTH()) gives); only a cell
    that escapes lengthen may stick out, so the texts here have no control characters."""
    plain = [
        tuple(
            c.translate({n: "?" for n in (*range(32), 127)}) if isinstance(c, str) else c
            for c in row
        )
        for row in items
    ]
    widths = [max((len(str(row[i])) for row in plain), default=0) for i in range(3)]
    headers = ["first", "second", "third"]
    streamed = _printed(lambda: tables.print_table(headers, iter(plain), widths))
    assert streamed == _printed(lambda: tables.print_table(headers, plain))


def _printed(action: Any) -> str:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        action()
    return buffer.getvalue()
