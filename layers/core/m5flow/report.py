"""The run report: one self-contained HTML page with inline SVG plots (no scripts, no network).

It shows the headline score, the run's facts, the error of each M5 aggregation level and the
items that cost the score most, and the last weeks of history with the forecast (and the
truth, when uploaded) for the total, each state, store and category, and a few sample series.
Over the last history weeks, dashed, the backtest: what the models forecast for them (those
that held them out), so the score has a picture. Pure: arrays in, a string out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from html import escape

import numpy as np

from m5flow.charts import ACTUAL, FORECAST, Line, day_ticks, level_chart, line_chart
from m5flow.hierarchy import Hierarchy
from m5flow.scoring import Score

NOT_SCORED = "not scored"  # the facts row that says why a score is missing
SAMPLES = 3  # highest-volume and intermittent series shown, each
_PANELS_PER_LEVEL = 12  # state, store and category charts drawn at most, per level
_STYLE = """
body{margin:0;background:#f4f6f8;color:#1f2933;font:14px/1.45 system-ui,-apple-system,
"Segoe UI",Roboto,sans-serif}main{max-width:1160px;margin:0 auto;padding:24px 20px 40px}
h1{font-size:22px;margin:0 0 2px}h2{font-size:16px;margin:28px 0 10px}
.sub,.note,footer{color:#616e7c}.card{background:#fff;border:1px solid #e2e6ea;
border-radius:8px;padding:14px 18px}.headline{display:flex;gap:24px;align-items:center;
margin-top:18px}.big{font-size:40px;font-weight:650;letter-spacing:-.5px}
.big small{display:block;font-size:12px;font-weight:500;color:#616e7c;letter-spacing:0}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(460px,100%),1fr));gap:12px}
.grid .card,.wide{padding:8px 10px}svg{display:block;width:100%;height:auto}
table{border-collapse:collapse}td{padding:3px 18px 3px 0;vertical-align:top}
td:first-child{color:#616e7c;white-space:nowrap}.facts{display:inline-block}footer{margin-top:32px;font-size:12px}
"""


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
    backtest: np.ndarray | None,
    days: tuple[int, int],
    ticks: list[tuple[int, str]],
    size: tuple[int, int] = (560, 220),
    note: str = "",
) -> str:
    first, origin = days  # first shown history day, last history day
    hist_x = np.arange(first, origin + 1)
    horizon_x = np.arange(origin + 1, origin + 1 + forecast.shape[-1])
    label = "actual" if truth is not None else "history"
    lines = [Line(label, hist_x, history, ACTUAL, 1.4)]
    if truth is not None:  # the actual line runs on across the origin
        joined_x, joined_y = np.r_[origin, horizon_x], np.r_[history[-1], truth]
        lines.append(Line(label, joined_x, joined_y, ACTUAL, 1.4))
    if backtest is not None:
        backtest_x = np.arange(origin - backtest.shape[-1] + 1, origin + 1)
        lines.append(Line("backtest", backtest_x, backtest, FORECAST, 1.4, dash="4 2"))
    lines.append(Line("forecast", horizon_x, forecast, FORECAST, 2.0))
    return line_chart(title, lines, origin + 0.5, ticks, size, note)


def _facts_table(facts: Mapping[str, object]) -> str:
    rows = []
    for key, value in facts.items():
        shown = ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
        rows.append(f"<tr><td>{escape(str(key))}</td><td>{escape(shown)}</td></tr>")
    return f'<div class="card facts"><table>{"".join(rows)}</table></div>'


# Why a backtest of early-stopped models is optimistic: their early stopping watched its
# days (the validation channel), though they never trained on them.
EARLY_STOPPED = "early stopping chose the number of trees on those days"


def _backtest_of(by: str) -> str:
    same = by == "the same method"
    return "The same method's backtest" if same else f"The backtest of {by}"


def render_report(
    *,
    history: np.ndarray,
    forecast: np.ndarray,
    hierarchy: Hierarchy,
    ids: np.ndarray,
    facts: Mapping[str, object],
    truth: np.ndarray | None = None,
    truth_uploaded: bool = False,
    score: Score | None = None,
    backtest: Score | None = None,
    backtest_forecast: np.ndarray | None = None,
    backtest_by: str = "the same method",
    optimistic: str | None = None,
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
        The series' M5 levels (`hierarchy.Hierarchy`) and their ids, in row order.
    facts
        Shown as a table, in order (run id, dataset, models...); lists are joined. The
        series, history and horizon, which the arrays tell, follow the run id and dataset.
    truth
        (n_series, h) actual sales after the origin, drawn when given.
    truth_uploaded
        A truth file was uploaded, though perhaps not usable (the facts say why).
    score
        The WRMSSE of `forecast` against `truth`: the headline when given.
    backtest
        Else the headline: the WRMSSE of the same method (or `backtest_by`) on the last h
        history days.
    backtest_forecast
        (n_series, h): that backtest's forecast of the last h history days, drawn dashed.
    backtest_by
        What made the backtest's forecast, when not all that made the forecast.
    optimistic
        Why the backtest is optimistic, if it is (`EARLY_STOPPED`): said beside its score.
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
    >>> html = render_report(history=data.sales, forecast=data.sales[:, -28:],
    ...                      hierarchy=Hierarchy.from_data(data), ids=data.ids,
    ...                      facts={"run id": "demo"})
    >>> html.startswith("<!DOCTYPE html>"), html.count("<svg") > 10
    (True, True)
    """
    n, last_day = history.shape
    horizon = forecast.shape[1]
    shown = min(days_shown, last_day)
    ticks = day_ticks(last_day - shown + 1, last_day + horizon, dates)
    window = history[:, -shown:]
    coarse = [1, 2, 3, 4]

    def sums_of(values: np.ndarray | None) -> dict[int, np.ndarray] | None:
        return None if values is None else hierarchy.aggregate(values, coarse)

    sums, fsums = hierarchy.aggregate(window, coarse), hierarchy.aggregate(forecast, coarse)
    tsums, bsums = sums_of(truth), sums_of(backtest_forecast)
    horizon_days = f"d_{last_day + 1}..d_{last_day + horizon}"
    backtest_days = f"d_{last_day - horizon + 1}..d_{last_day}"
    if score is not None:
        kind, shown_score = "WRMSSE", score
        these = "this series" if n == 1 else f"these {n:,} series"
        sentence = (
            f"WRMSSE of this forecast against the uploaded truth ({horizon_days}), the mean "
            f"of the 12 M5 aggregation levels over {these}."
        )
        if backtest is not None:
            sentence += (
                f" {_backtest_of(backtest_by)} on {backtest_days} scored {backtest.wrmsse:.3f}"
                + (f" (optimistic: {optimistic})." if optimistic else ".")
            )
    elif backtest is not None:
        kind, shown_score = "backtest WRMSSE", backtest
        why = f"The uploaded truth could not be used (see '{NOT_SCORED}')"
        sentence = (
            (why if truth_uploaded else "No truth was uploaded")
            + f", so this is a backtest: the WRMSSE of {backtest_by} "
            f"forecasting {backtest_days} from the days before them. "
            + (f"It is optimistic: {optimistic}. " if optimistic else "")
            + f"The forecast of {horizon_days} itself is not scored."
        )
    else:
        kind, shown_score = "not scored", None
        truth_part = (
            "the uploaded truth could not be used" if truth_uploaded else "no truth was uploaded"
        )
        why = f" (see '{NOT_SCORED}')" if NOT_SCORED in facts else ""
        sentence = f"No score: {truth_part} and there is no backtest score{why}."

    if backtest_forecast is not None:
        sentence += f" The charts draw the backtest's forecast of {backtest_days} dashed."
    if shown_score is not None and shown_score.unscored:
        count = len(shown_score.unscored)
        which = "backtest score" if shown_score is backtest else "score"
        are, its = ("series is", "its") if count == 1 else ("series are", "their")
        sentence += (
            f" {count} {are} left out of {its} level's {which}: "
            f"{its} history cannot scale an error (a first sale on the last history day, or "
            f"the same amount every day since the first sale): {shown_score.unscored_shown(3)}."
        )

    def panel(
        title: str,
        hist: np.ndarray,
        fore: np.ndarray,
        actual: np.ndarray | None,
        back: np.ndarray | None,
        size: tuple[int, int] = (560, 220),
        note: str = "",
    ) -> str:
        days = (last_day - shown + 1, last_day)
        return _panel(title, hist, fore, actual, back, days, ticks, size, note)

    title = escape(str(facts.get("run id", "")))
    big = f"{shown_score.wrmsse:.3f}" if shown_score else "—"
    run_facts = {"series": f"{n:,}", "history": f"d_1..d_{last_day}"}
    run_facts["horizon"] = f"{horizon_days} ({horizon} days)"
    first = {key: value for key, value in facts.items() if key in ("run id", "dataset")}
    parts = [
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>m5flow report '
        f"{title}</title><style>{_STYLE}</style></head><body><main>",
        f'<h1>m5flow forecast report</h1><div class="sub">{title}</div>',
        f'<div class="card headline"><div class="big">{big}<small>{kind}</small></div>'
        f"<p>{escape(sentence)}</p></div>",
        "<h2>Run</h2>" + _facts_table(first | run_facts | dict(facts)),
    ]
    if shown_score is not None:
        chart = level_chart(shown_score)
        title = "Error by level" if score is not None else "Backtest error by level"
        parts.append(f'<h2>{title}</h2><div class="card wide">{chart}</div>')
        if shown_score.costliest:
            parts.append(_costliest(shown_score, shown_score is score, panel, window, forecast,
                                    truth, backtest_forecast))  # fmt: skip
    total = panel(
        "Total unit sales", sums[1][0], fsums[1][0], None if tsums is None else tsums[1][0],
        None if bsums is None else bsums[1][0], (1120, 300),
    )  # fmt: skip
    parts.append(f'<h2>Total</h2><div class="card wide">{total}</div>')
    for number, heading in ((2, "States"), (3, "Stores"), (4, "Categories")):
        labels = hierarchy.levels[number].labels
        # M5 has 3, 10 and 3; another upload may have hundreds: the largest keep the page light.
        largest = np.argsort(-sums[number].sum(axis=1), kind="stable")[:_PANELS_PER_LEVEL]
        charts = [
            panel(
                str(labels[g]),
                sums[number][g],
                fsums[number][g],
                None if tsums is None else tsums[number][g],
                None if bsums is None else bsums[number][g],
            )
            for g in sorted(largest)
        ]
        if len(labels) > _PANELS_PER_LEVEL:
            heading += f" (the {_PANELS_PER_LEVEL} largest of {len(labels)})"
        parts.append(f"<h2>{escape(heading)}</h2>" + _grid(charts))
    samples = [
        panel(
            str(ids[i]),
            window[i],
            forecast[i],
            None if truth is None else truth[i],
            None if backtest_forecast is None else backtest_forecast[i],
            note=why,
        )
        for i, why in _samples(history, hierarchy.levels[10].codes, shown)
    ]
    if samples:
        parts.append("<h2>Sample series</h2>" + _grid(samples))
    else:
        parts.append(
            f'<h2>Sample series</h2><p class="note">No series sold in the last {shown} days.</p>'
        )
    parts.append(
        f"<footer>m5flow · the last {shown} days of history and the {horizon}-day forecast"
        + ("; dashed, the backtest's forecast of the last days of history" if bsums else "")
        + "; sums over the series of this run only.</footer></main></body></html>"
    )
    return "\n".join(parts)


def _costliest(
    score: Score,
    against_truth: bool,
    panel: Callable[..., str],
    window: np.ndarray,
    forecast: np.ndarray,
    truth: np.ndarray | None,
    backtest_forecast: np.ndarray | None,
) -> str:
    """The items whose forecast cost the score most, each summed over its stores: one
    item's surprise (a sell-out, a delisting) can outweigh every level's table above."""
    scored = "forecast" if against_truth else "backtest (dashed)"
    charts = []
    for cost in score.costliest:
        rows = list(cost.rows)
        note = (
            f"{len(rows)} series; {scored} {cost.forecast_said()}; WRMSSE without it "
            f"{cost.wrmsse_without:.3f}"
        )
        charts.append(panel(
            cost.item, window[rows].sum(axis=0), forecast[rows].sum(axis=0),
            None if truth is None else truth[rows].sum(axis=0),
            None if backtest_forecast is None else backtest_forecast[rows].sum(axis=0),
            note=note,
        ))  # fmt: skip
    which = "score" if against_truth else "backtest score"
    sentence = (
        f"The items whose {scored} cost the {which} of {score.wrmsse:.3f} most, each drawn "
        "summed over its stores, with the WRMSSE of the other items' series: the score as if "
        "the item had not been uploaded."
    )
    return f'<h2>Where the error is</h2><p class="note">{escape(sentence)}</p>' + _grid(charts)


def _grid(panels: list[str]) -> str:
    cards = "".join(f'<div class="card">{p}</div>' for p in panels)
    return f'<div class="grid">{cards}</div>'
