"""Inline SVG charts for the run report: lines over days, and bars per aggregation level.

Hand-drawn SVG rather than a plotting library: the layer stays small (no matplotlib in a
Lambda), the page needs no script or network, and the charts are plain text a test can read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

import numpy as np

from m5flow.hierarchy import LEVELS
from m5flow.scoring import Score

ACTUAL, FORECAST, ORIGIN, GRID, INK, MUTED = (
    "#3d4f63", "#e8710a", "#9aa5b1", "#e6e9ee", "#1f2933", "#616e7c",
)  # fmt: skip


@dataclass(frozen=True)
class Line:
    label: str
    x: np.ndarray  # day numbers
    y: np.ndarray
    color: str
    width: float
    dash: str = ""  # an SVG stroke-dasharray ("4 3"), or solid


def _nice_step(span: float, ticks: int = 5) -> float:
    """The smallest round step (1, 2, 2.5 or 5 x 10^k) giving at most `ticks` intervals."""
    raw = max(span, 1e-9) / ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)


_UNITS = ((1e9, 1e9, "B"), (1e6, 1e6, "M"), (1e4, 1e3, "k"))  # from, divisor, suffix


def tick_labels(values: Sequence[float]) -> list[str]:
    """Axis labels in one unit for the whole axis, exact for every tick `_nice_step` makes.

    One unit per axis, chosen by its top tick, so an axis never mixes "800" with "1k", and
    labels stay short enough for the margin ("125M", not "125000k"). Thousands keep their
    digits up to 9,999, which read better than "2.5k".

    Example
    -------
    >>> tick_labels([0, 0.025, 0.1 * 3]), tick_labels([0, 2500, 5000]), tick_labels([0, 1.25e4])
    (['0', '0.025', '0.3'], ['0', '2500', '5000'], ['0', '12.5k'])
    >>> tick_labels([0, 2.5e5, 1e6]), tick_labels([-5e7, 0, 1.25e8])
    (['0', '0.25M', '1M'], ['-50M', '0', '125M'])
    """
    top = max((abs(v) for v in values), default=0.0)
    divisor, suffix = next(((d, s) for start, d, s in _UNITS if top >= start), (1.0, ""))
    return [f"{v / divisor:g}{suffix}" if v else "0" for v in values]


_WIDE, _NARROW = set("MWmw@%"), set("iIjlft.,:;'|!()[] ")


def _text_width(text: str, font_size: float, bold: bool = False) -> float:
    """A generous estimate of a sans-serif string's width, by kind of character: SVG cannot
    measure text, and ids run from narrow (`item_1`) to wide (`WW_MM`)."""
    ems = sum(0.95 if c in _WIDE else 0.35 if c in _NARROW else 0.75 if c.isupper() else 0.62
              for c in text)  # fmt: skip
    return ems * font_size * (1.0 if bold else 0.85)


def _fitted(text: str, room: float, font_size: float, bold: bool = False) -> str:
    """`text`, cut with "…" to fit `room` pixels."""
    if _text_width(text, font_size, bold) <= room:
        return text
    keep = len(text)
    while keep > 1 and _text_width(text[:keep] + "…", font_size, bold) > room:
        keep -= 1
    return text[:keep] + "…"


def day_ticks(first: int, last: int, dates: np.ndarray | None) -> list[tuple[int, str]]:
    """Month starts (with dates), else every 30th day number, within [first, last]."""
    if dates is None:
        return [(d, f"d_{d}") for d in range(first, last + 1) if d % 30 == 0]
    ticks = []
    for day in range(first, last + 1):
        date = dates[day - 1].astype("datetime64[D]").item()
        if date.day == 1:
            ticks.append((day, date.strftime("%b %Y")))
    return ticks


def line_chart(
    title: str,
    lines: Sequence[Line],
    origin: float,
    ticks: list[tuple[int, str]],
    size: tuple[int, int] = (560, 220),
    note: str = "",
) -> str:
    """An SVG line chart: title, y grid with round ticks, day ticks, origin line, legend.

    The legend sits on the title's row when both fit, else on a row of its own; a title too
    long for the chart is cut with "…" (the whole of it stays in the chart's label).
    """
    width, height = size
    left, right, bottom = 46, 12, 26
    legend = list({line.label: line for line in lines}.values())
    legend_widths = [7 * len(line.label) + 30 for line in legend]
    shown_title = _fitted(title, width - left - right, 13, bold=True)
    title_end = left + _text_width(shown_title, 13, bold=True) + 12
    header_rows = [16] + ([30] if note else [])
    own_row = title_end > width - right - sum(legend_widths)
    legend_y = header_rows[-1] + 8 if own_row else 8
    # The origin's label has a row below the header's, so a note does not run into it.
    top = legend_y + 5 + 24 if own_row else max(46, header_rows[-1] + 24)
    x0 = min(float(line.x[0]) for line in lines)
    x1 = max(float(line.x[-1]) for line in lines)
    y_min = min(0.0, *(float(np.min(line.y)) for line in lines))  # 0, unless forecast < 0
    y_max = max(float(np.max(line.y)) for line in lines) or 1.0
    step = _nice_step(y_max - y_min)
    y_low, y_top = step * math.floor(y_min / step), step * math.ceil(y_max / step)

    def px(day: float) -> float:
        return left + (day - x0) / max(x1 - x0, 1) * (width - left - right)

    def py(value: float) -> float:
        return height - bottom - (value - y_low) / (y_top - y_low) * (height - top - bottom)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(title)}" font-family="system-ui,sans-serif">',
        f'<text x="{left}" y="16" font-size="13" font-weight="600" fill="{INK}">'
        f"{escape(shown_title)}</text>",
    ]
    if note:
        out.append(f'<text x="{left}" y="30" font-size="10.5" fill="{MUTED}">{escape(note)}</text>')
    grid = [k * step for k in range(round(y_low / step), round(y_top / step) + 1)]
    for value, label in zip(grid, tick_labels(grid), strict=True):
        y = py(value)
        out.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>'
            f'<text x="{left - 6}" y="{y + 3.5:.1f}" font-size="10" text-anchor="end" '
            f'fill="{MUTED}">{label}</text>'
        )
    for day, label in ticks:
        x = px(day)
        # A month starting on the chart's first or last days would lose half its label.
        anchor = "start" if x < left + 25 else "end" if x > width - right - 25 else "middle"
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{height - bottom}" y2="{height - bottom + 4}" '
            f'stroke="{ORIGIN}"/><text x="{x:.1f}" y="{height - 8}" font-size="10" '
            f'text-anchor="{anchor}" fill="{MUTED}">{escape(label)}</text>'
        )
    xo = px(origin)
    out.append(
        f'<line x1="{xo:.1f}" x2="{xo:.1f}" y1="{top - 4}" y2="{height - bottom}" '
        f'stroke="{ORIGIN}" stroke-dasharray="4 3"/><text x="{xo - 4:.1f}" y="{top - 8}" '
        f'font-size="10" text-anchor="end" fill="{MUTED}">forecast origin</text>'
    )
    for line in lines:
        points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(line.x, line.y, strict=True))
        dash = f' stroke-dasharray="{line.dash}"' if line.dash else ""
        out.append(
            f'<polyline points="{points}" fill="none" stroke="{line.color}" '
            f'stroke-width="{line.width}" stroke-linejoin="round"{dash}>'
            f"<title>{escape(line.label)}</title></polyline>"
        )
    legend_x = width - right
    for line, entry_width in reversed(list(zip(legend, legend_widths, strict=True))):
        legend_x -= entry_width
        dash = f' stroke-dasharray="{line.dash}"' if line.dash else ""
        out.append(
            f'<line x1="{legend_x}" x2="{legend_x + 14}" y1="{legend_y + 1.5}" '
            f'y2="{legend_y + 1.5}" stroke="{line.color}" stroke-width="3"{dash}/>'
            f'<text x="{legend_x + 19}" y="{legend_y + 5}" font-size="11" fill="{INK}">'
            f"{escape(line.label)}</text>"
        )
    out.append("</svg>")
    return "".join(out)


def level_chart(score: Score, size: tuple[int, int] = (1120, 350)) -> str:
    """Horizontal bars: each level's weighted RMSSE, with the WRMSSE (their mean) marked."""
    width, height = size
    left, right, top, row = 190, 60, 44, 24  # top: the WRMSSE label has a row of its own
    top_value = max([*score.levels.values(), score.wrmsse]) or 1.0
    step = _nice_step(top_value)
    end = step * math.ceil(top_value / step)

    def px(value: float) -> float:
        return left + value / end * (width - left - right)

    bottom = top + row * len(score.levels)
    height = max(height, bottom + 24)  # the value ticks under the bars
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        'role="img" aria-label="error by aggregation level" font-family="system-ui,sans-serif">',
        f'<text x="10" y="16" font-size="13" font-weight="600" fill="{INK}">'
        "Weighted RMSSE by aggregation level (lower is better)</text>",
    ]
    grid = [k * step for k in range(round(end / step) + 1)]
    for value, label in zip(grid, tick_labels(grid), strict=True):
        x = px(value)
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 4}" y2="{bottom}" stroke="{GRID}"/>'
            f'<text x="{x:.1f}" y="{bottom + 14}" font-size="10" text-anchor="middle" '
            f'fill="{MUTED}">{label}</text>'
        )
    values = []  # drawn last, over the WRMSSE line, on a white halo
    for i, (number, value) in enumerate(score.levels.items()):
        y = top + i * row
        name = LEVELS.get(number, ("?", ()))[0]
        out.append(
            f'<text x="{left - 8}" y="{y + 15}" font-size="11" text-anchor="end" fill="{INK}">'
            f"{number} · {escape(name)} ({score.series.get(number, 0):,})</text>"
            f'<rect x="{left}" y="{y + 4}" width="{px(value) - left:.1f}" height="{row - 8}" '
            f'rx="2" fill="{ACTUAL}"><title>level {number}: {value:.4f}</title></rect>'
        )
        values.append(
            f'<text x="{px(value) + 5:.1f}" y="{y + 15}" font-size="10.5" fill="{INK}" '
            f'stroke="#fff" stroke-width="3" paint-order="stroke">{value:.3f}</text>'
        )
    xw = px(score.wrmsse)
    # Right of the line, unless that runs off the chart (a WRMSSE near the axis' end).
    label_x, anchor = (xw + 4, "start") if xw + 90 <= width else (xw - 4, "end")
    out.append(
        f'<line x1="{xw:.1f}" x2="{xw:.1f}" y1="{top - 6}" y2="{bottom}" stroke="{FORECAST}" '
        f'stroke-width="2" stroke-dasharray="5 3"/><text x="{label_x:.1f}" y="{top - 10}" '
        f'font-size="11" text-anchor="{anchor}" fill="{FORECAST}">'
        f"WRMSSE {score.wrmsse:.3f}</text>"
    )
    out += [*values, "</svg>"]
    return "".join(out)
