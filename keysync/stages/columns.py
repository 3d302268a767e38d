"""A column of short texts, one per row, kept as one string of fixed-width cells.

A million timestamps as separate ``str`` objects take ~70 MB and as many
allocations; as one string of 20-character cells they take 20 MB, and a batch
is appended with one ``join``. Cells of another width than the column's (a
corrupt or differently written value) are kept aside, by row, and win on
lookup. Lookups of many rows run in C (``at``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from itertools import compress


class TextColumn:
    """Append-only texts by row number; the width is the commonest of the first batch."""

    def __init__(
        self,
        width: int | None = None,
        text: str = "",
        odd: dict[int, str] | None = None,
        rows: int = 0,
    ) -> None:
        """An empty column, or one saved earlier (its ``width``, ``text()``, ``odd``, length)."""
        self.width = width
        self.odd: dict[int, str] = odd or {}  # row -> a cell whose width is not ``width``
        self._text = text
        self._parts: list[str] = []  # appended since ``_text`` was last joined
        self._rows = rows

    def __len__(self) -> int:
        return self._rows

    def extend(self, cells: list[str]) -> None:
        if not cells:
            return
        if self.width is None:
            self.width = Counter(map(len, cells)).most_common(1)[0][0]
        width = self.width
        odd_at = list(compress(range(len(cells)), map(width.__ne__, map(len, cells))))
        if odd_at:
            cells = cells.copy()  # the caller's list may still be needed (a checkpoint)
            pad = " " * width
            for i in odd_at:
                self.odd[self._rows + i] = cells[i]
                cells[i] = pad
        self._parts.append("".join(cells))
        self._rows += len(cells)

    def text(self) -> str:
        """Every row's cell, ``width`` characters each (odd cells padded)."""
        if self._parts:
            self._text = "".join([self._text, *self._parts])
            self._parts = []
        return self._text

    def __getitem__(self, row: int) -> str:
        cell = self.odd.get(row)
        if cell is not None:
            return cell
        width = self.width or 0
        return self.text()[row * width : row * width + width]

    def at(self, rows: list[int]) -> Iterator[str]:
        """The cells of ``rows``, all in C."""
        width = self.width or 0
        starts = list(map(width.__mul__, rows))
        cells = map(self.text().__getitem__, map(slice, starts, map(width.__add__, starts)))
        return map(self.odd.get, rows, cells) if self.odd else cells
