"""Tables and JSON on stdout, as the inspection commands print them.

A table's cells show control characters as escapes and long cells shortened, so a
key holding a tab or an ESC cannot break the columns or recolour the terminal.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from typing import Any

import click

MAX_CELL = 60


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print aligned columns; long cells (except the last column) are shortened with '…'."""
    shown = [
        [_short(str(c), last=i == len(headers) - 1) for i, c in enumerate(row)] for row in rows
    ]
    widths = [len(h) for h in headers]
    for row in shown:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    out = io.StringIO()
    line = "  ".join(h.upper().ljust(widths[i]) for i, h in enumerate(headers))
    out.write(line.rstrip() + "\n")
    for row in shown:
        out.write("  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip() + "\n")
    click.echo(out.getvalue(), nl=False)


# Control characters as escapes: a raw tab breaks the columns, an ESC recolours the terminal.
_VISIBLE = {c: f"\\x{c:02x}" for c in (*range(32), 127)} | {
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
}


def visible(text: str) -> str:
    return text.translate(_VISIBLE)


def _short(text: str, *, last: bool) -> str:
    text = visible(text)
    if last or len(text) <= MAX_CELL:
        return text
    return text[: MAX_CELL - 1] + "…"


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))
