"""A small, self-contained SVG line chart: match rate per system over the simulated days.

Why not a plotting library: the chart is a handful of lines, axes and labels, and
an SVG is plain text that every browser opens. A dependency (and its fonts,
backends and start-up time) would cost more than the 200 lines below. The output
is deterministic for the same input, so two simulations of the same seed give
the same bytes.

Series that coincide (the mock peers often share one rate) stay visible: each
series is drawn a little narrower than the one before, so overlapping lines
show as nested coloured bands instead of hiding each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
# Past eight series the colours come round again, dashed (then dotted): never two alike.
DASHES = ("", "9 5", "2 4")
ALERT_COLOR = "#C62828"
RECOVERED_COLOR = "#2E7D32"

WIDTH, HEIGHT = 860, 440
LEFT, RIGHT, TOP, BOTTOM = 64, 150, 56, 56
MAX_X_LABELS = 16


@dataclass
class Series:
    """One line: a value in 0..1 per x position, ``None`` where there is none (a gap)."""

    name: str
    values: Sequence[float | None]
    # x positions (0-based) to mark, by kind: {"alert": [...], "recovered": [...]}
    marks: dict[str, list[int]] = field(default_factory=dict)


def _style(position: int) -> tuple[str, str]:
    """The colour of the ``position``-th series, and its dash attribute ("" for solid)."""
    cycle = position // len(PALETTE)
    dash = DASHES[cycle % len(DASHES)]
    return PALETTE[position % len(PALETTE)], f' stroke-dasharray="{dash}"' if dash else ""


def _fmt(value: float) -> str:
    """Coordinates with at most 2 decimals and no trailing zeros: small, stable output."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _x_step(count: int) -> int:
    """Label every n-th day so that at most ``MAX_X_LABELS`` labels share the axis."""
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 500, 1000):
        if count / step <= MAX_X_LABELS:
            return step
    return max(1, count // MAX_X_LABELS)


def _segments(values: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    """Runs of consecutive known values: a gap (``None``) breaks the line."""
    runs: list[list[tuple[int, float]]] = [[]]
    for index, value in enumerate(values):
        if value is None:
            if runs[-1]:
                runs.append([])
            continue
        runs[-1].append((index, value))
    return [run for run in runs if run]


def line_chart(
    series: Sequence[Series],
    x_labels: Sequence[str],
    *,
    title: str,
    subtitle: str = "",
    x_title: str = "day",
    y_title: str = "match rate",
) -> str:
    """The SVG text of a line chart with a 0-100 % y axis, one ``<polyline>`` per series.

    Every series has ``len(x_labels)`` values. Marked points get a ring in the
    colour of their kind, and every x position with an ``alert`` (or
    ``recovered``) mark gets a dashed vertical line, so the day stands out even
    where the lines coincide.
    """
    count = len(x_labels)
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM

    def x_at(index: int) -> float:
        return LEFT + (plot_w * index / (count - 1) if count > 1 else plot_w / 2)

    def y_at(value: float) -> float:
        return TOP + plot_h * (1 - min(max(value, 0.0), 1.0))

    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="DejaVu Sans, Arial, Helvetica, sans-serif">',
        f"<title>{escape(title)}</title>",
        f"<desc>{escape(subtitle or title)}</desc>",
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        f'<text x="{LEFT}" y="24" font-size="16" font-weight="bold" fill="#222">'
        f"{escape(title)}</text>",
    ]
    if subtitle:
        out.append(f'<text x="{LEFT}" y="42" font-size="12" fill="#555">{escape(subtitle)}</text>')

    # Grid and y axis: 0..100 % every 20 points.
    out.append('<g class="y-axis" font-size="11" fill="#444" text-anchor="end">')
    for percent in range(0, 101, 20):
        grid_y = _fmt(y_at(percent / 100))
        out.append(
            f'<line x1="{LEFT}" y1="{grid_y}" x2="{LEFT + plot_w}" y2="{grid_y}" '
            f'stroke="{"#999" if percent == 0 else "#e3e3e3"}" stroke-width="1"/>'
        )
        out.append(f'<text x="{LEFT - 8}" y="{_fmt(y_at(percent / 100) + 4)}">{percent} %</text>')
    out.append("</g>")
    middle = _fmt(TOP + plot_h / 2)
    out.append(
        f'<text x="16" y="{middle}" font-size="12" fill="#444" text-anchor="middle" '
        f'transform="rotate(-90 16 {middle})">{escape(y_title)}</text>'
    )

    # x axis: a tick per day, a label every few days (always the first and the last).
    step = _x_step(count)
    ends = {0, count - 1}
    labelled = ends | {
        i
        for i in range(count)
        if (i + 1) % step == 0 and all(abs(i - end) >= 0.6 * step for end in ends - {i})
    }
    base = TOP + plot_h
    out.append('<g class="x-axis" font-size="11" fill="#444" text-anchor="middle">')
    for index in range(count):
        x = _fmt(x_at(index))
        out.append(f'<line x1="{x}" y1="{base}" x2="{x}" y2="{base + 4}" stroke="#999"/>')
        if index in labelled:
            out.append(f'<text x="{x}" y="{base + 18}">{escape(x_labels[index])}</text>')
    out.append("</g>")
    out.append(
        f'<text x="{_fmt(LEFT + plot_w / 2)}" y="{HEIGHT - 12}" font-size="12" fill="#444" '
        f'text-anchor="middle">{escape(x_title)}</text>'
    )

    # Vertical markers for the flagged days, under the lines.
    for kind, color in (("alert", ALERT_COLOR), ("recovered", RECOVERED_COLOR)):
        days = sorted({i for s in series for i in s.marks.get(kind, [])})
        if not days:
            continue
        out.append(f'<g class="{kind}-days" font-size="10" fill="{color}" text-anchor="middle">')
        for index in days:
            x = _fmt(x_at(index))
            out.append(
                f'<line x1="{x}" y1="{TOP}" x2="{x}" y2="{base}" stroke="{color}" '
                'stroke-width="1.2" stroke-dasharray="5 4"/>'
            )
            out.append(f'<text x="{x}" y="{TOP - 4}">{kind} d{escape(x_labels[index])}</text>')
        out.append("</g>")

    # The lines: widest first, so coinciding series show as nested bands; 3 px a step,
    # less with many series, so that the widest band stays within ~14 px.
    band = 3.0 if len(series) < 5 else 12.0 / (len(series) - 1)
    widths = [2.0 + band * (len(series) - 1 - i) for i in range(len(series))]
    for position, (one, width) in enumerate(zip(series, widths)):
        color, dash = _style(position)
        out.append(f'<g class="series" data-system={quoteattr(one.name)}>')
        for run in _segments(one.values):
            points = " ".join(f"{_fmt(x_at(i))},{_fmt(y_at(v))}" for i, v in run)
            out.append(
                f'<polyline points="{points}" fill="none" stroke="{color}" '
                f'stroke-width="{_fmt(width)}"{dash} stroke-linejoin="round" '
                f'stroke-linecap="round"><title>{escape(one.name)}</title></polyline>'
            )
            if len(run) == 1:  # a lone day draws no line: show it as a dot
                (spot, level), radius = run[0], _fmt(width / 2 + 1.5)
                out.append(
                    f'<circle cx="{_fmt(x_at(spot))}" cy="{_fmt(y_at(level))}" r="{radius}" '
                    f'fill="{color}"/>'
                )
        out.append("</g>")

    # Rings on flagged points, above the lines.
    for kind, color in (("alert", ALERT_COLOR), ("recovered", RECOVERED_COLOR)):
        rings = [
            (i, value)
            for one in series
            for i in one.marks.get(kind, [])
            if 0 <= i < count and (value := one.values[i]) is not None
        ]
        for index, value in sorted(set(rings)):
            out.append(
                f'<circle class="{kind}" cx="{_fmt(x_at(index))}" cy="{_fmt(y_at(value))}" '
                f'r="6" fill="#ffffff" fill-opacity="0.6" stroke="{color}" stroke-width="2.5"/>'
            )

    # Legend, right of the plot.
    lx = LEFT + plot_w + 20
    out.append('<g class="legend" font-size="12" fill="#222">')
    y = TOP + 8
    for position, one in enumerate(series):
        color, dash = _style(position)
        out.append(
            f'<line x1="{lx}" y1="{y}" x2="{lx + 24}" y2="{y}" stroke="{color}" '
            f'stroke-width="4"{dash} stroke-linecap="round"/>'
        )
        out.append(f'<text x="{lx + 32}" y="{y + 4}">{escape(one.name)}</text>')
        y += 20
    y += 8
    for kind, color in (("alert", ALERT_COLOR), ("recovered", RECOVERED_COLOR)):
        out.append(
            f'<circle cx="{lx + 12}" cy="{y}" r="6" fill="#ffffff" stroke="{color}" '
            'stroke-width="2.5"/>'
        )
        out.append(f'<text x="{lx + 32}" y="{y + 4}">{kind}</text>')
        y += 20
    if len(series) > 1:
        out.append(
            f'<text x="{lx}" y="{y + 12}" font-size="10" fill="#777">lines that coincide</text>'
        )
        out.append(
            f'<text x="{lx}" y="{y + 25}" font-size="10" fill="#777">are drawn nested</text>'
        )
    out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"
