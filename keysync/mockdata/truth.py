"""The ground truth of one written file: keys, duplicates, rejected rows, first lines.

With the default rules every valid row's normalized key is its canonical key
(the variants are built that way and a test checks each kind), so the truth
comes straight from the plan. With any other rules, or a ``max_key_length``
that some raw keys exceed, every raw key is normalized with the configured
rules and the reader contract's row checks are applied, so the manifest stays
exactly what a correct reader must find.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from keysync.mockdata.keys import KeyUniverse
from keysync.mockdata.variants import unquote as unquote_cell
from keysync.normalization import KeyNormalizer


@dataclass(frozen=True)
class TruthRules:
    """The reader settings the truth is computed under."""

    normalizer: KeyNormalizer
    default_rules: bool  # config.normalize is the default NormalizeConfig()
    max_key_length: int
    store_first_lines: bool


class GroundTruth:
    """Turns the rows written into the manifest section (keys, duplicates, rejected).

    ``keys``/``cells`` are the canonical key and the written cell of each base
    row (one per held key); duplicates and rejected rows are added as the file
    is assembled. ``base_line(row)`` gives a base row's physical line.
    """

    def __init__(
        self,
        universe: KeyUniverse,
        rules: TruthRules,
        keys: list[str],
        cells: list[str],
        held: list[int],
    ) -> None:
        self.universe = universe
        self.rules = rules
        self.keys = keys
        self.cells = cells
        self.held = held
        self.rejected: list[tuple[int, str]] = []
        self.dup_rows: list[int] = []
        self.dup_cells: list[str] = []
        self.dup_lines: list[int] = []
        self.sorted_keys: list[str] = []
        self.key_ids: list[int] | None = None

    def add_duplicate(self, base_row: int, cell: str, line: int) -> None:
        self.dup_rows.append(base_row)
        self.dup_cells.append(cell)
        self.dup_lines.append(line)

    def _canonical_is_normal(self) -> bool:
        """True when every row's normalized key is its canonical key (default rules, short keys)."""
        if not self.rules.default_rules:
            return False
        longest = max(map(len, self.cells), default=0)
        longest = max([longest, *map(len, self.dup_cells)])
        return longest <= self.rules.max_key_length

    def section(self, base_line: Callable[[int], int]) -> dict[str, Any]:
        if self._canonical_is_normal():
            duplicates, first_lines = self._fast(base_line)
        else:
            duplicates, first_lines = self._general(base_line)
        self.rejected.sort()
        errors = Counter(error for _, error in self.rejected)
        return {
            "rows_rejected": len(self.rejected),
            "unique_keys": len(self.sorted_keys),
            "duplicate_keys": len(duplicates),
            "keys": self.sorted_keys,
            "duplicates": duplicates,
            "rejected": [{"line": line, "error_type": error} for line, error in self.rejected],
            "error_types": dict(sorted(errors.items())),
            "first_lines": first_lines,
        }

    def _fast(
        self, base_line: Callable[[int], int]
    ) -> tuple[dict[str, Any], dict[str, int] | None]:
        """Default rules: a row's normalized key is its canonical key, by construction."""
        self.sorted_keys = self.universe.sorted_keys_of(self.held)
        self.key_ids = self.held
        duplicates: dict[str, Any] = {}
        for row, cell, line in zip(self.dup_rows, self.dup_cells, self.dup_lines):
            distinct = len({unquote_cell(self.cells[row]), unquote_cell(cell)})
            duplicates[self.keys[row]] = {
                "lines": [base_line(row), line],
                "distinct_raw_keys": distinct,
                "collision": distinct > 1,
            }
        first_lines = None
        if self.rules.store_first_lines:
            first_lines = {key: base_line(row) for row, key in enumerate(self.keys)}
        return duplicates, first_lines

    def _general(
        self, base_line: Callable[[int], int]
    ) -> tuple[dict[str, Any], dict[str, int] | None]:
        """Any rules: normalize every raw key and apply the reader contract's row checks."""
        normalize = self.rules.normalizer.normalize_many
        raws = [unquote_cell(c) for c in self.cells] + [unquote_cell(c) for c in self.dup_cells]
        norms = normalize(raws)
        lines = [base_line(row) for row in range(len(self.cells))] + self.dup_lines
        limit = self.rules.max_key_length
        occurrences: list[tuple[int, str, str]] = []
        for line, raw, key in zip(lines, raws, norms):
            if len(raw) > limit:
                self.rejected.append((line, "too-long"))
            elif not key:
                self.rejected.append((line, "empty-key"))
            else:
                occurrences.append((line, raw, key))
        occurrences.sort()
        self.sorted_keys = sorted({key for _, _, key in occurrences})
        counts = Counter(key for _, _, key in occurrences)
        grouped: dict[str, list[tuple[int, str]]] = {}
        for line, raw, key in occurrences:
            if counts[key] > 1:
                grouped.setdefault(key, []).append((line, raw))
        duplicates: dict[str, Any] = {}
        for key in sorted(grouped):
            distinct = len({raw for _, raw in grouped[key]})
            duplicates[key] = {
                "lines": [line for line, _ in grouped[key]],
                "distinct_raw_keys": distinct,
                "collision": distinct > 1,
            }
        first_lines: dict[str, int] | None = None
        if self.rules.store_first_lines:
            first_lines = {}
            for line, _, key in occurrences:
                first_lines.setdefault(key, line)
        return duplicates, first_lines
