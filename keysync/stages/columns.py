"""A column of short texts, one per row, kept as one string of fixed-width cells.

A million timestamps as separate ``str`` objects take ~70 MB and as many
allocations; as one string of 20-character cells they take 20 MB, and a batch
is appended with one ``join``. The width is the commonest of the first
non-empty cells. Shorter and empty cells are padded with NUL characters, which
a cell never holds (the reader rejects rows with NUL bytes). Longer cells (a
corrupt or differently written value) are kept aside by row and win on lookup;
should they become common (an export that switches to fractional seconds after
its first rows), the column is widened once to hold them, so that a million
cells never end up in the side table. Lookups of many rows run in C (``at``).

Batches cross from the readers already packed the same way (``pack_cells``), so
the parent appends a batch's cells as one string, without an object per cell.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from itertools import compress, repeat

_PAD = "\x00"
_MAX_WIDTH = 64  # a longer cell never widens the column: it stays aside
_WIDEN_AT = 1024  # cells aside (and an eighth of the rows) before widening is tried


Aside = list[tuple[int, str]]  # (row in the batch, cell): cells too long for the text


def pack_cells(cells: list[str]) -> tuple[int, str, Aside]:
    """The cells as (width, text, aside), as ``TextColumn`` stores them.

    ``text`` holds every cell padded with NUL to ``width``; a longer cell is empty
    there and kept in ``aside``. A batch whose cells share one length (the usual
    case) takes one ``join``. Otherwise the width is the commonest length up to
    ``_MAX_WIDTH``, so that one odd cell (a corrupt value of megabytes) never
    widens the text of the whole batch.
    """
    if not cells:
        return 0, "", []
    text = "".join(cells)
    width = len(cells[0])
    if len(text) == width * len(cells) and max(map(len, cells)) == width:
        return width, text, []
    widths = Counter(map(len, cells))
    widths.pop(0, None)
    fitting = [length for length, _ in widths.most_common() if length <= _MAX_WIDTH]
    width = fitting[0] if fitting else 0
    aside = [(row, cell) for row, cell in enumerate(cells) if len(cell) > width]
    if aside:
        cells = cells.copy()
        for row, _ in aside:
            cells[row] = ""
    text = "".join(map(str.ljust, cells, repeat(width), repeat(_PAD))) if width else ""
    return width, text, aside


def unpack_cells(
    width: int, text: str, rows: int, aside: Sequence[tuple[int, str]] = ()
) -> list[str]:
    """The ``rows`` cells that ``pack_cells`` gave (width, text, aside) for."""
    if width:
        ends = range(width, width * rows + 1, width)
        padded = map(text.__getitem__, map(slice, range(0, len(text), width), ends))
        cells = list(map(str.rstrip, padded, repeat(_PAD)))
    else:
        cells = [""] * rows
    for row, cell in aside:
        cells[row] = cell
    return cells


class TextColumn:
    """Append-only texts by row number."""

    def __init__(
        self,
        width: int | None = None,
        text: str = "",
        odd: dict[int, str] | None = None,
        rows: int = 0,
    ) -> None:
        """An empty column, or one saved earlier (its ``width``, ``text()``, ``odd``, length)."""
        self.width = width  # None while every cell so far is empty
        self.odd: dict[int, str] = odd or {}  # row -> a non-empty cell of another width
        self._text = text
        self._parts: list[str] = []  # appended since ``_text`` was last joined
        self._rows = rows
        self._widen_at = _WIDEN_AT

    def __len__(self) -> int:
        return self._rows

    def extend(self, cells: list[str]) -> None:
        if not cells:
            return
        if self.width is None:
            widths = Counter(map(len, cells))
            widths.pop(0, None)
            if not widths:  # still nothing but empty cells: nothing to store yet
                self._rows += len(cells)
                return
            self.width = widths.most_common(1)[0][0]
            self._parts.append(_PAD * (self.width * self._rows))  # the empty rows so far
        width = self.width
        other = list(compress(range(len(cells)), map(width.__ne__, map(len, cells))))
        if other:  # a Python step for these only
            cells = cells.copy()  # the caller's list may still be needed (a checkpoint)
            for i in other:
                cell = cells[i]
                if len(cell) > width:
                    self.odd[self._rows + i] = cell
                    cell = ""
                cells[i] = cell.ljust(width, _PAD)
        self._parts.append("".join(cells))
        self._rows += len(cells)
        if len(self.odd) > max(self._widen_at, self._rows >> 3):  # many, and common
            self._widen()

    def extend_packed(
        self, width: int, text: str, rows: int, aside: Sequence[tuple[int, str]] = ()
    ) -> None:
        """Append ``rows`` cells packed by ``pack_cells``: as they are, when the widths agree.

        Cells padded to this column's width are what ``extend`` would store, so the
        text is appended whole; any other width, or cells aside, take ``extend``'s
        way, cell by cell.
        """
        if width and width == self.width and not aside:
            self._parts.append(text)
            self._rows += rows
        else:
            self.extend(unpack_cells(width, text, rows, aside))

    def _widen(self) -> None:
        """Widen the column to the longest cell kept aside (up to ``_MAX_WIDTH``): one pass."""
        fitting = [len(cell) for cell in self.odd.values() if len(cell) <= _MAX_WIDTH]
        if fitting and self.width is not None:
            width, wider = self.width, max(fitting)
            text, ends = self.text(), range(width, width * self._rows + 1, width)
            cells = list(map(text.__getitem__, map(slice, range(0, len(text), width), ends)))
            for row, cell in list(self.odd.items()):
                if len(cell) <= wider:
                    cells[row] = cell
                    del self.odd[row]
            self._text = "".join(map(str.ljust, cells, repeat(wider), repeat(_PAD)))
            self.width = wider
        self._widen_at = max(_WIDEN_AT, 2 * len(self.odd))  # cells that still do not fit

    def text(self) -> str:
        """Every row's cell, ``width`` characters each (padded; cells kept aside as padding)."""
        if self._parts:
            self._text = "".join([self._text, *self._parts])
            self._parts = []
        return self._text

    def __getitem__(self, row: int) -> str:
        cell = self.odd.get(row)
        if cell is not None:
            return cell
        if self.width is None:
            return ""
        start = row * self.width
        return self.text()[start : start + self.width].rstrip(_PAD)

    def at(self, rows: list[int]) -> Iterator[str]:
        """The cells of ``rows``, all in C."""
        if self.width is None:
            return iter([""] * len(rows))
        width = self.width
        starts = list(map(width.__mul__, rows))
        cells = map(self.text().__getitem__, map(slice, starts, map(width.__add__, starts)))
        cells = map(str.rstrip, cells, repeat(_PAD))
        return map(self.odd.get, rows, cells) if self.odd else cells
