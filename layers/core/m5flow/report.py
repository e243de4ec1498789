"""The run report: one self-contained HTML page with inline SVG plots (no scripts, no network).

It shows the headline score, the run's facts, the error of each M5 aggregation level, and the
last weeks of history with the forecast (and the truth, when uploaded) for the total, each
state, store and category, and a few sample series. Pure: arrays in, a string out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

import numpy as np

from m5flow.scoring import LEVELS, Hierarchy, Score

ACTUAL, FORECAST, ORIGIN, GRID, INK, MUTED = (
    "#3d4f63", "#e8710a", "#9aa5b1", "#e6e9ee", "#1f2933", "#616e7c",
)  # fmt: skip
SAMPLES = 3  # highest-volume and intermittent series shown, each
_STYLE = """
body{margin:0;background:#f4f6f8;color:#1f2933;font:14px/1.45 system-ui,-apple-system,
"Segoe UI",Roboto,sans-serif}main{max-width:1160px;margin:0 auto;padding:24px 20px 40px}
h1{font-size:22px;margin:0 0 2px}h2{font-size:16px;margin:28px 0 10px}
.sub,.note,footer{color:#616e7c}.card{background:#fff;border:1px solid #e2e6ea;
border-radius:8px;padding:14px 18px}.headline{display:flex;gap:24px;align-items:center;
margin-top:18px}.big{font-size:40px;font-weight:650;letter-spacing:-.5px}
.big small{display:block;font-size:12px;font-weight:500;color:#616e7c;letter-spacing:0}
.grid{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:12px}
.grid .card,.wide{padding:8px 10px}svg{display:block;width:100%;height:auto}
table{border-collapse:collapse}td{padding:3px 18px 3px 0;vertical-align:top}
td:first-child{color:#616e7c}.facts{display:inline-block}footer{margin-top:32px;font-size:12px}
"""


@dataclass(frozen=True)
class _Line:
    label: str
    x: np.ndarray  # day numbers
    y: np.ndarray
    color: str
    width: float


def _nice_step(span: float, ticks: int = 5) -> float:
    """The smallest round step (1, 2, 2.5 or 5 x 10^k) giving at most `ticks` intervals."""
    raw = max(span, 1e-9) / ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)


def _number(value: float) -> str:
    """Axis labels: 0, 0.5, 12, 1.2k, 35k."""
    if abs(value) >= 1000:
        return f"{value / 1000:.1f}".rstrip("0").rstrip(".") + "k"
    return f"{value:.2f}".rstrip("0").rstrip(".") or "0"


def _day_ticks(first: int, last: int, dates: np.ndarray | None) -> list[tuple[int, str]]:
    """Month starts (with dates), else every 30th day number, within [first, last]."""
    if dates is None:
        return [(d, f"d_{d}") for d in range(first, last + 1) if d % 30 == 0]
    ticks = []
    for day in range(first, last + 1):
        date = dates[day - 1].astype("datetime64[D]").item()
        if date.day == 1:
            ticks.append((day, date.strftime("%b %Y")))
    return ticks


def _line_chart(
    title: str,
    lines: Sequence[_Line],
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
        out.append(
            f'<polyline points="{points}" fill="none" stroke="{line.color}" '
            f'stroke-width="{line.width}" stroke-linejoin="round">'
            f"<title>{escape(line.label)}</title></polyline>"
        )
    legend_x = width - right
    for label, color in reversed(list(dict((ln.label, ln.color) for ln in lines).items())):
        legend_x -= 7 * len(label) + 30
        out.append(
            f'<rect x="{legend_x}" y="8" width="14" height="3" rx="1.5" fill="{color}"/>'
            f'<text x="{legend_x + 19}" y="13" font-size="11" fill="{INK}">{escape(label)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _level_chart(score: Score, size: tuple[int, int] = (1120, 350)) -> str:
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


def _samples(history: np.ndarray, items: np.ndarray, shown: int) -> list[tuple[int, str]]:
    """Series of the top-selling items, then of intermittent ones, one per item.

    Intermittent: no sale on at least half of the last 8 weeks, yet sold in both halves of
    them (so a series launched or delisted lately does not count).
    """
    volume = history[:, -shown:].astype(np.float64).sum(axis=1)
    by_volume = [int(i) for i in np.argsort(-volume, kind="stable") if volume[i] > 0]
    sold = history[:, -56:] != 0
    half = sold.shape[1] // 2
    zero_share = 1 - sold.mean(axis=1)
    steady = sold[:, :half].any(axis=1) & sold[:, half:].any(axis=1)
    intermittent = [i for i in by_volume if steady[i] and zero_share[i] >= 0.5]
    picked: list[tuple[int, str]] = []
    seen: set[int] = set()
    for candidates, why in (
        (by_volume, lambda i: f"high volume: {volume[i]:,.0f} units in the shown days"),
        (
            intermittent,
            lambda i: f"intermittent: no sale on {zero_share[i]:.0%} of the last 8 weeks",
        ),
    ):
        taken = 0
        for i in candidates:
            if taken < SAMPLES and items[i] not in seen:
                picked.append((i, why(i)))
                seen.add(items[i])
                taken += 1
    return picked


def _panel(
    title: str,
    history: np.ndarray,
    forecast: np.ndarray,
    truth: np.ndarray | None,
    days: tuple[int, int],
    ticks: list[tuple[int, str]],
    size: tuple[int, int] = (560, 220),
    note: str = "",
) -> str:
    first, origin = days  # first shown history day, last history day
    hist_x = np.arange(first, origin + 1)
    horizon_x = np.arange(origin + 1, origin + 1 + forecast.shape[-1])
    label = "actual" if truth is not None else "history"
    lines = [_Line(label, hist_x, history, ACTUAL, 1.4)]
    if truth is not None:  # the actual line runs on across the origin
        joined_x, joined_y = np.r_[origin, horizon_x], np.r_[history[-1], truth]
        lines.append(_Line(label, joined_x, joined_y, ACTUAL, 1.4))
    lines.append(_Line("forecast", horizon_x, forecast, FORECAST, 2.0))
    return _line_chart(title, lines, origin + 0.5, ticks, size, note)


def _facts_table(facts: Mapping[str, object]) -> str:
    rows = []
    for key, value in facts.items():
        shown = ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
        rows.append(f"<tr><td>{escape(str(key))}</td><td>{escape(shown)}</td></tr>")
    return f'<div class="card facts"><table>{"".join(rows)}</table></div>'


def render_report(
    *,
    history: np.ndarray,
    forecast: np.ndarray,
    hierarchy: Hierarchy,
    ids: np.ndarray,
    facts: Mapping[str, object],
    truth: np.ndarray | None = None,
    score: Score | None = None,
    backtest: Score | None = None,
    dates: np.ndarray | None = None,
    days_shown: int = 120,
) -> str:
    """Render the run report as one self-contained HTML page.

    Parameters
    ----------
    history
        Units sold, (n_series, T): days d_1..d_T.
    forecast
        (n_series, h): days d_T+1..d_T+h.
    hierarchy, ids
        The series' M5 levels (`scoring.Hierarchy`) and their ids, in row order.
    facts
        Shown as a table, in order (run id, dataset, models...); lists are joined.
    truth
        (n_series, h) actual sales after the origin, drawn when given.
    score
        The WRMSSE of `forecast` against `truth`: the headline when given.
    backtest
        Else the headline: the WRMSSE of the same method on the last h history days.
    dates
        datetime64 of d_1..d_T+h (T+h values, e.g. `M5Data.calendar["date"]`), for month
        ticks (default: day-number ticks).
    days_shown
        History days drawn before the origin.

    Returns
    -------
    str
        The HTML: deterministic for the same inputs, with every id escaped.

    Example
    -------
    >>> html = render_report(history=h, forecast=f, hierarchy=hy, ids=ids,
    ...                      facts={"run id": "demo"})  # doctest: +SKIP
    """
    n, last_day = history.shape
    horizon = forecast.shape[1]
    shown = min(days_shown, last_day)
    ticks = _day_ticks(last_day - shown + 1, last_day + horizon, dates)
    window = history[:, -shown:]
    coarse = [1, 2, 3, 4]
    sums, fsums = hierarchy.aggregate(window, coarse), hierarchy.aggregate(forecast, coarse)
    tsums = hierarchy.aggregate(truth, coarse) if truth is not None else None
    horizon_days = f"d_{last_day + 1}..d_{last_day + horizon}"
    if score is not None:
        kind, shown_score = "WRMSSE", score
        sentence = (
            f"WRMSSE of this forecast against the uploaded truth ({horizon_days}), the mean "
            f"of the 12 M5 aggregation levels over these {n:,} series."
        )
    elif backtest is not None:
        kind, shown_score = "backtest WRMSSE", backtest
        sentence = (
            "No truth was uploaded, so this is a backtest: the WRMSSE of the same method "
            f"forecasting d_{last_day - horizon + 1}..d_{last_day} from the days before them. "
            f"The forecast of {horizon_days} itself is not scored."
        )
    else:
        kind, shown_score = "not scored", None
        sentence = "No score: no truth was uploaded and no backtest was run."

    def panel(
        title: str,
        hist: np.ndarray,
        fore: np.ndarray,
        actual: np.ndarray | None,
        size: tuple[int, int] = (560, 220),
        note: str = "",
    ) -> str:
        days = (last_day - shown + 1, last_day)
        return _panel(title, hist, fore, actual, days, ticks, size, note)

    title = escape(str(facts.get("run id", "")))
    big = f"{shown_score.wrmsse:.3f}" if shown_score else "—"
    run_facts = {"series": f"{n:,}", "history": f"d_1..d_{last_day}"}
    run_facts["horizon"] = f"{horizon_days} ({horizon} days)"
    parts = [
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>m5flow report '
        f"{title}</title><style>{_STYLE}</style></head><body><main>",
        f'<h1>m5flow forecast report</h1><div class="sub">{title}</div>',
        f'<div class="card headline"><div class="big">{big}<small>{kind}</small></div>'
        f"<p>{escape(sentence)}</p></div>",
        "<h2>Run</h2>" + _facts_table(dict(facts) | run_facts),
    ]
    if shown_score is not None:
        chart = _level_chart(shown_score)
        parts.append(f'<h2>Error by level</h2><div class="card wide">{chart}</div>')
    total = panel("Total unit sales", sums[1][0], fsums[1][0], tsums and tsums[1][0], (1120, 300))
    parts.append(f'<h2>Total</h2><div class="card wide">{total}</div>')
    for number, heading in ((2, "States"), (3, "Stores"), (4, "Categories")):
        labels = hierarchy.levels[number].labels
        charts = [
            panel(str(label), sums[number][g], fsums[number][g], tsums and tsums[number][g])
            for g, label in enumerate(labels)
        ]
        parts.append(f"<h2>{heading}</h2>" + _grid(charts))
    samples = [
        panel(str(ids[i]), window[i], forecast[i], None if truth is None else truth[i], note=why)
        for i, why in _samples(history, hierarchy.levels[10].codes, shown)
    ]
    parts.append("<h2>Sample series</h2>" + _grid(samples))
    parts.append(
        f"<footer>m5flow · the last {shown} days of history and the {horizon}-day forecast; "
        "sums over the series of this run only.</footer></main></body></html>"
    )
    return "\n".join(parts)


def _grid(panels: list[str]) -> str:
    cards = "".join(f'<div class="card">{p}</div>' for p in panels)
    return f'<div class="grid">{cards}</div>'
