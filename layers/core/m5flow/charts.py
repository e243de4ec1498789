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


def _number(value: float) -> str:
    """Axis labels, exact for every tick a `_nice_step` makes: 0, 0.025, 12, 1.25k, 35k.

    Example
    -------
    >>> [_number(v) for v in (0.0, 0.025, 0.1 * 3, 12, 1250, 35000)]
    ['0', '0.025', '0.3', '12', '1.25k', '35k']
    """
    if abs(value) >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


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
    """An SVG line chart: title, y grid with round ticks, day ticks, origin line, legend."""
    width, height = size
    left, right, top, bottom = 46, 12, 46, 26
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
        f"{escape(title)}</text>",
    ]
    if note:
        out.append(f'<text x="{left}" y="30" font-size="10.5" fill="{MUTED}">{escape(note)}</text>')
    for k in range(round(y_low / step), round(y_top / step) + 1):
        y = py(k * step)
        out.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>'
            f'<text x="{left - 6}" y="{y + 3.5:.1f}" font-size="10" text-anchor="end" '
            f'fill="{MUTED}">{_number(k * step)}</text>'
        )
    for day, label in ticks:
        x = px(day)
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{height - bottom}" y2="{height - bottom + 4}" '
            f'stroke="{ORIGIN}"/><text x="{x:.1f}" y="{height - 8}" font-size="10" '
            f'text-anchor="middle" fill="{MUTED}">{escape(label)}</text>'
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
    for line in reversed(list({ln.label: ln for ln in lines}.values())):
        legend_x -= 7 * len(line.label) + 30
        dash = f' stroke-dasharray="{line.dash}"' if line.dash else ""
        out.append(
            f'<line x1="{legend_x}" x2="{legend_x + 14}" y1="9.5" y2="9.5" stroke="{line.color}" '
            f'stroke-width="3"{dash}/><text x="{legend_x + 19}" y="13" font-size="11" '
            f'fill="{INK}">{escape(line.label)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def level_chart(score: Score, size: tuple[int, int] = (1120, 350)) -> str:
    """Horizontal bars: each level's weighted RMSSE, with the WRMSSE (their mean) marked."""
    width, height = size
    left, right, top, row = 190, 60, 34, 24
    top_value = max([*score.levels.values(), score.wrmsse]) or 1.0
    step = _nice_step(top_value)
    end = step * math.ceil(top_value / step)

    def px(value: float) -> float:
        return left + value / end * (width - left - right)

    bottom = top + row * len(score.levels)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        'role="img" aria-label="error by aggregation level" font-family="system-ui,sans-serif">',
        f'<text x="10" y="16" font-size="13" font-weight="600" fill="{INK}">'
        "Weighted RMSSE by aggregation level (lower is better)</text>",
    ]
    for k in range(round(end / step) + 1):
        x = px(k * step)
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 4}" y2="{bottom}" stroke="{GRID}"/>'
            f'<text x="{x:.1f}" y="{bottom + 14}" font-size="10" text-anchor="middle" '
            f'fill="{MUTED}">{_number(k * step)}</text>'
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
    out.append(
        f'<line x1="{xw:.1f}" x2="{xw:.1f}" y1="{top - 6}" y2="{bottom}" stroke="{FORECAST}" '
        f'stroke-width="2" stroke-dasharray="5 3"/><text x="{xw + 4:.1f}" y="{top - 8}" '
        f'font-size="11" fill="{FORECAST}">WRMSSE {score.wrmsse:.3f}</text>'
    )
    out += [*values, "</svg>"]
    return "".join(out)
