"""Tables and JSON on stdout, as the inspection commands print them.

A table's cells show control characters as escapes and long cells shortened, so a
key holding a tab or an ESC cannot break the columns or recolour the terminal.
"""

from __future__ import annotations

import io
import json
from collections.abc import Collection, Iterable, Sequence
from itertools import islice
from typing import Any

import click

MAX_CELL = 60
JSON_CHUNK = 10_000  # items encoded at once by print_json_list


def print_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    widths: Sequence[int] | None = None,
    whole: Collection[str] = (),
    fit: int | None = None,
) -> None:
    """Print aligned columns; long cells are shortened with '…', except in the last
    column and in the columns named in ``whole``: names a user copies into the next
    command (a master key shortened could not be passed to ``registry approve``).

    With ``widths`` (the longest cell of each column as ``visible`` shows it: from the
    database, or a bound such as ``MAX_CELL``) the rows are printed as they come, never
    all held: the audit trail can have millions.

    ``fit`` (a terminal's width): a table wider than that prints its last column under
    each row instead, indented (``    note: ...``), where it holds something: a long
    last cell (a run's note) no longer wraps every row across the screen.
    """
    kept = [i == len(headers) - 1 or header in whole for i, header in enumerate(headers)]
    if widths is None:
        shown = [[_short(str(c), kept=kept[i]) for i, c in enumerate(row)] for row in rows]
        rows, widths = shown, [max(map(len, column), default=0) for column in zip(*shown)]
    widths = [
        max(len(header), width if kept[i] else min(width, MAX_CELL))
        for i, (header, width) in enumerate(zip(headers, [*widths, *[0] * len(headers)]))
    ]
    under = ""
    if fit is not None and sum(widths) + 2 * (len(widths) - 1) > fit and len(headers) > 1:
        under, headers, widths = headers[-1], headers[:-1], widths[:-1]
    out = io.StringIO()
    line = "  ".join(h.upper().ljust(widths[i]) for i, h in enumerate(headers))
    out.write(line.rstrip() + "\n")
    for n, row in enumerate(rows, start=1):
        cells = [_short(str(c), kept=kept[i]) for i, c in enumerate(row)]
        if under:
            *cells, last = cells
        out.write("  ".join(c.ljust(widths[i]) for i, c in enumerate(cells)).rstrip() + "\n")
        if under and last:
            out.write(f"    {under}: {last}\n")
        if n % 10_000 == 0:
            click.echo(out.getvalue(), nl=False)
            out = io.StringIO()
    click.echo(out.getvalue(), nl=False)


# Control characters as escapes: a raw tab breaks the columns, an ESC recolours the terminal.
_VISIBLE = {c: f"\\x{c:02x}" for c in (*range(32), 127)} | {
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
}


def visible(text: str) -> str:
    return text.translate(_VISIBLE)


def _short(text: str, *, kept: bool) -> str:
    text = visible(text)
    if kept or len(text) <= MAX_CELL:
        return text
    return text[: MAX_CELL - 1] + "…"


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def print_json_list(items: Iterable[Any]) -> None:
    """``print_json(list(items))``, the same text, printed ``JSON_CHUNK`` items at a time."""
    iterator = iter(items)
    opening = "[\n"
    while chunk := list(islice(iterator, JSON_CHUNK)):
        text = json.dumps(chunk, indent=2, ensure_ascii=False, default=str)
        click.echo(opening + text[2:-2], nl=False)  # without its own "[\n" and "\n]"
        opening = ",\n"
    click.echo("[]" if opening == "[\n" else "\n]")
