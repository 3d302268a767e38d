"""A column of short texts, one per row, kept as one string of fixed-width cells.

A million timestamps as separate ``str`` objects take ~70 MB and as many
allocations; as one string of 20-character cells they take 20 MB, and a batch
is appended with one ``join``. The width is the commonest of the first
non-empty cells. Empty cells cost nothing more: they are stored as padding,
NUL characters, which a cell never holds (the reader rejects rows with NUL
bytes). Cells of another width (a corrupt or differently written value) are
kept aside by row and win on lookup. Lookups of many rows run in C (``at``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from itertools import compress, repeat

_PAD = "\x00"


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
        odd_at = list(compress(range(len(cells)), map(width.__ne__, map(len, cells))))
        if odd_at:
            cells = cells.copy()  # the caller's list may still be needed (a checkpoint)
            pad = _PAD * width
            for i in odd_at:
                if cells[i]:
                    self.odd[self._rows + i] = cells[i]
                cells[i] = pad
        self._parts.append("".join(cells))
        self._rows += len(cells)

    def text(self) -> str:
        """Every row's cell, ``width`` characters each (empty and odd cells as padding)."""
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
