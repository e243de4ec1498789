"""The run report: well-formed HTML, one SVG per panel, escaped ids, the same bytes each time."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from m5flow import charts, naming, report, schema, scoring
from m5flow.hierarchy import Hierarchy

REAL = Path(__file__).resolve().parents[3] / "shared" / "m5-real"
VOID = {"meta", "br", "img", "input", "link", "hr"}
SVG_VOID = {"line", "rect", "polyline", "path", "circle"}  # written self-closing here


class Page(HTMLParser):
    """Checks nesting, and collects the SVGs (by aria-label) and the visible text."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.svgs: list[str] = []
        self.text: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "svg":
            self.svgs.append(dict(attrs).get("aria-label") or "")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        pass  # <line .../>: nothing to close

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    assert page.errors == [] and page.stack == []
    return page


def small_case(n_items: int = 4, days: int = 200):
    """Items in 3 stores of 2 states, 2 categories; ids carry characters HTML must escape."""
    stores = [("CA_1", "CA"), ("CA_2", "CA"), ("TX_1", "TX")]
    rows = [(i, s, st) for i in range(n_items) for s, st in stores]
    cat = ["<b>FOODS", "HOBBIES&CO"]
    items = np.array([f"{cat[i % 2]}_1_{i:03d}" for i, _, _ in rows])
    ids = np.array([f"{item}_{s}_evaluation" for item, (_, s, _) in zip(items, rows, strict=True)])
    hierarchy = Hierarchy.from_ids(
        item_ids=items,
        dept_ids=np.array([f"{cat[i % 2]}_1" for i, _, _ in rows]),
        cat_ids=np.array([cat[i % 2] for i, _, _ in rows]),
        store_ids=np.array([s for _, s, _ in rows]),
        state_ids=np.array([st for _, _, st in rows]),
    )
    rng = np.random.default_rng(3)
    rates = rng.uniform(0.3, 8, (len(rows), 1))
    history = rng.poisson(rates, (len(rows), days)).astype(np.float32)
    forecast = np.tile(history[:, -7:], 4).astype(np.float64)
    truth = rng.poisson(rates, (len(rows), 28)).astype(np.float64)
    return history, forecast, truth, hierarchy, ids


def score_of(history, truth, forecast, hierarchy) -> scoring.Score:
    weights = history[:, -28:].sum(axis=1)
    return scoring.wrmsse(history, truth, forecast, hierarchy, weights)


FACTS = {"run id": "demo-<run>&1", "dataset": "small", "models": ["h1-14", "h15-28"]}


def test_one_svg_per_panel_and_the_level_chart_with_a_score() -> None:
    history, forecast, truth, hierarchy, ids = small_case()
    score = score_of(history, truth, forecast, hierarchy)
    html = report.render_report(
        history=history,
        forecast=forecast,
        hierarchy=hierarchy,
        ids=ids,
        facts=FACTS,
        truth=truth,
        score=score,
    )
    page = parse(html)
    # levels, total, 2 states, 3 stores, 2 categories, then the sample series
    assert page.svgs[0] == "error by aggregation level"
    assert page.svgs[1:8] == ["Total unit sales", "CA", "TX", "CA_1", "CA_2", "TX_1", "<b>FOODS"]
    assert page.svgs[8] == "HOBBIES&CO"
    samples = report._samples(history, hierarchy.levels[10].codes, 120)
    assert len(samples) >= 3 and len(page.svgs) == 1 + 1 + 2 + 3 + 2 + len(samples)
    assert page.svgs[9:] == [str(ids[i]) for i, _ in samples]
    assert html.count("<title>level ") == 12
    text = " ".join(page.text)
    assert f"{score.wrmsse:.3f}" in text and "against the uploaded truth" in text
    assert f"over these {len(ids)} series" in text
    assert "d_201..d_228 (28 days)" in text and "h1-14, h15-28" in text


def test_a_report_of_one_series_says_this_series() -> None:
    history, forecast, truth, _, ids = small_case(n_items=1)
    one = Hierarchy.from_ids(
        item_ids=np.array(["A_1_001"]), dept_ids=np.array(["A_1"]), cat_ids=np.array(["A"]),
        store_ids=np.array(["CA_1"]), state_ids=np.array(["CA"]),
    )  # fmt: skip
    h, f, t = history[:1], forecast[:1], truth[:1]
    html = report.render_report(
        history=h, forecast=f, hierarchy=one, ids=ids[:1], facts=FACTS, truth=t,
        score=score_of(h, t, f, one),
    )  # fmt: skip
    text = " ".join(parse(html).text)
    assert "over this series." in text and "these 1 series" not in text


def test_ids_are_escaped() -> None:
    history, forecast, _, hierarchy, ids = small_case()
    html = report.render_report(
        history=history, forecast=forecast, hierarchy=hierarchy, ids=ids, facts=FACTS
    )
    assert "<b>" not in html and "<run>" not in html and "&CO" not in html
    assert "&lt;b&gt;FOODS" in html and "demo-&lt;run&gt;&amp;1" in html
    page = parse(html)
    assert "demo-<run>&1" in page.text  # the reader sees the id as it was
    assert any(t.startswith("<b>FOODS_1_") and t.endswith("_evaluation") for t in page.text)


def test_without_truth_or_score_there_is_no_level_chart() -> None:
    history, forecast, _, hierarchy, ids = small_case()
    html = report.render_report(
        history=history, forecast=forecast, hierarchy=hierarchy, ids=ids, facts={}
    )
    page = parse(html)
    assert "error by aggregation level" not in page.svgs
    assert "No score: no truth was uploaded and there is no backtest score." in page.text
    assert "history" in page.text and "actual" not in page.text  # the legend without truth


def test_an_unusable_truth_without_a_backtest_is_not_called_absent() -> None:
    history, forecast, _, hierarchy, ids = small_case()
    facts = {"not scored": ["not scored against sales_test_evaluation.csv: no row for 2 series"]}
    html = report.render_report(
        history=history, forecast=forecast, hierarchy=hierarchy, ids=ids, facts=facts,
        truth_uploaded=True,
    )  # fmt: skip
    assert (
        "No score: the uploaded truth could not be used and there is no backtest score (see "
        "'not scored')." in parse(html).text
    )


@pytest.mark.parametrize("optimistic", [report.EARLY_STOPPED, None])
def test_a_backtest_is_the_headline_when_no_truth_was_uploaded(optimistic: str | None) -> None:
    history, forecast, _, hierarchy, ids = small_case()
    backtest = score_of(history[:, :-28], history[:, -28:], forecast, hierarchy)
    html = report.render_report(
        history=history,
        forecast=forecast,
        hierarchy=hierarchy,
        ids=ids,
        facts=FACTS,
        backtest=backtest,
        optimistic=optimistic,
    )
    page = parse(html)
    assert page.svgs[0] == "error by aggregation level"
    text = " ".join(page.text)
    assert "backtest WRMSSE" in text and "forecasting d_173..d_200 from the days" in text
    said = "It is optimistic: early stopping chose the number of trees" in text
    assert said == (optimistic is not None)  # a backtest twins' run is not called optimistic
    assert "Backtest error by level" in page.text
    assert f"{backtest.wrmsse:.3f}" in text


def test_the_backtest_forecast_is_drawn_dashed_over_the_last_history_days() -> None:
    history, forecast, _, hierarchy, ids = small_case()
    backtest_forecast = history[:, -28:] + 1.0
    common = {"history": history, "forecast": forecast, "hierarchy": hierarchy, "ids": ids}
    backtest = score_of(history[:, :-28], history[:, -28:], backtest_forecast, hierarchy)
    html = report.render_report(
        **common, facts=FACTS, backtest=backtest, backtest_forecast=backtest_forecast
    )
    dashed = re.findall(
        r'<polyline points="([^"]+)"[^>]*stroke-dasharray[^>]*><title>backtest<', html
    )
    panels = [label for label in parse(html).svgs if label != "error by aggregation level"]
    assert len(dashed) == len(panels) > 1  # every line chart: total, states, ..., samples
    assert all(len(points.split()) == 28 for points in dashed)
    assert "dashed, the backtest's forecast" in html
    assert "The charts draw the backtest's forecast of d_173..d_200 dashed." in " ".join(
        parse(html).text
    )
    without = report.render_report(**common, facts=FACTS, backtest=backtest)
    assert "<title>backtest<" not in without and "dashed" not in without


def test_uploads_with_many_stores_draw_only_the_largest() -> None:
    n_stores, rng = 15, np.random.default_rng(5)
    stores = np.array([f"S_{k:02d}" for k in range(n_stores)])
    hierarchy = Hierarchy.from_ids(
        item_ids=np.full(n_stores, "I_1"), dept_ids=np.full(n_stores, "D_1"),
        cat_ids=np.full(n_stores, "C"), store_ids=stores, state_ids=np.full(n_stores, "X"),
    )  # fmt: skip
    history = rng.poisson(np.arange(1, n_stores + 1)[:, None], (n_stores, 60)).astype(float)
    html = report.render_report(
        history=history, forecast=history[:, -28:], hierarchy=hierarchy,
        ids=np.array([f"I_1_{s}_evaluation" for s in stores]), facts={},
    )  # fmt: skip
    page = parse(html)
    assert "Stores (the 12 largest of 15)" in page.text
    drawn = [label for label in page.svgs if label.startswith("S_")]
    assert drawn == [f"S_{k:02d}" for k in range(3, 15)]  # the three smallest left out


@pytest.mark.parametrize(
    ("axis", "labels"),
    [
        ([0, 0.025, 0.05, 0.075], ["0", "0.025", "0.05", "0.075"]),
        ([0, 1250, 2500, 3750, 5000], ["0", "1250", "2500", "3750", "5000"]),  # not 1.25k, 5k
        ([-2500, 0, 12500, 25000, 37500], ["-2.5k", "0", "12.5k", "25k", "37.5k"]),
        ([0, 5e6, 1e7, 1.5e7], ["0", "5M", "10M", "15M"]),  # was 5000k .. 15000k
        ([0, 2.5e10, 5e10], ["0", "25B", "50B"]),
    ],
)
def test_axis_labels_are_exact_and_share_one_unit(axis: list[float], labels: list[str]) -> None:
    assert charts.tick_labels(axis) == labels


def test_deterministic_and_self_contained() -> None:
    history, forecast, truth, hierarchy, ids = small_case()
    score = score_of(history, truth, forecast, hierarchy)
    dates = np.arange("2015-11-20", 228, dtype="datetime64[D]")[:228]
    args = dict(history=history, forecast=forecast, hierarchy=hierarchy, ids=ids, facts=FACTS)
    first = report.render_report(**args, truth=truth, score=score, dates=dates)
    assert first == report.render_report(**args, truth=truth, score=score, dates=dates.copy())
    assert "<script" not in first and "http://" not in first.replace("http://www.w3.org", "")
    assert "https://" not in first and "nan," not in first and ",nan" not in first
    assert "Mar 2016" in first and "d_180" not in first  # month ticks with dates
    assert "d_180" in report.render_report(**args)  # day-number ticks without


def test_samples_are_top_items_then_intermittent_ones() -> None:
    days = 120
    volumes = np.array([50.0, 40.0, 45.0, 30.0, 20.0, 2.0])
    history = np.tile(volumes[:, None], (1, days))
    history[5, ::3] = 0  # zero on a third of days: not intermittent
    history[4, 1::4] = history[4, 2::4] = history[4, 3::4] = 0  # zero on 3 days in 4
    items = np.array([0, 0, 1, 2, 3, 4])  # rows 0 and 1 are the same item
    picked = report._samples(history, items, days)
    assert [i for i, _ in picked] == [0, 2, 3, 4]
    assert picked[0][1] == "high volume: 6,000 units in the shown days"
    assert picked[3][1] == "intermittent: no sale on 75% of the last 8 weeks"


def test_negative_forecasts_stay_inside_the_plot() -> None:
    lines = [
        charts.Line("history", np.arange(1, 11), np.linspace(0, 9, 10), "#000", 1),
        charts.Line("forecast", np.arange(11, 15), np.array([-3.0, 2, 4, -1]), "#f00", 1),
    ]
    svg = charts.line_chart("t", lines, 10.5, [(5, "d_5")], size=(400, 200))
    points = re.findall(r'points="([^"]+)"', svg)
    ys = [float(p.split(",")[1]) for group in points for p in group.split()]
    assert len(ys) == 14 and all(0 <= y <= 200 for y in ys)
    assert ">-5</text>" in svg  # the axis reaches below zero, in round steps


@pytest.mark.parametrize(("span", "step"), [(2100, 500), (1.72, 0.5), (8, 2), (0.3, 0.1)])
def test_round_axis_steps(span: float, step: float) -> None:
    assert charts._nice_step(span) == pytest.approx(step)


def test_real_slice_report_has_every_panel(tmp_path: Path) -> None:
    data = schema.parse_inputs({n: (REAL / n).read_bytes() for n in schema.INPUT_FILES})
    hierarchy = Hierarchy.from_data(data)
    truth = pd.read_csv(REAL / naming.TRUTH_FILE).set_index("id").loc[data.ids].to_numpy(float)
    forecast = np.tile(data.sales[:, -7:], 4).astype(np.float64)
    weights = scoring.dollar_sales(data.sales, data.prices)
    score = scoring.wrmsse(data.sales, truth, forecast, hierarchy, weights)
    dates = pd.to_datetime(data.calendar["date"]).to_numpy().astype("datetime64[D]")
    html = report.render_report(
        history=data.sales,
        forecast=forecast,
        hierarchy=hierarchy,
        ids=data.ids,
        facts={"run id": "m5-real", "dataset": "m5-real", "models": ["seasonal naive"]},
        truth=truth,
        score=score,
        dates=dates,
    )
    page = parse(html)
    assert len(page.svgs) == 1 + 1 + 3 + 10 + 3 + 6
    assert "0.976" in page.text and "290" in page.text
    (tmp_path / "report.html").write_text(html)


def test_with_truth_the_backtest_is_named_beside_the_score() -> None:
    history, forecast, truth, hierarchy, ids = small_case()
    score = score_of(history, truth, forecast, hierarchy)
    backtest = score_of(history[:, :-28], history[:, -28:], forecast, hierarchy)
    html = report.render_report(
        history=history, forecast=forecast, hierarchy=hierarchy, ids=ids, facts=FACTS,
        truth=truth, score=score, backtest=backtest,
    )  # fmt: skip
    text = " ".join(parse(html).text)
    assert "against the uploaded truth" in text
    assert f"The same method's backtest on d_173..d_200 scored {backtest.wrmsse:.3f}" in text


def test_a_backtest_by_fewer_models_says_which() -> None:
    """The recursive model trains on the backtest's days: the report names who forecast it."""
    history, forecast, _, hierarchy, ids = small_case()
    backtest = score_of(history[:, :-28], history[:, -28:], forecast, hierarchy)
    by = "the direct models alone (h28; r1 trained on those days)"
    html = report.render_report(
        history=history, forecast=forecast, hierarchy=hierarchy, ids=ids, facts=FACTS,
        backtest=backtest, backtest_by=by,
    )  # fmt: skip
    text = " ".join(parse(html).text)
    assert f"the WRMSSE of {by} forecasting d_173..d_200" in text


def _legend_and_title(svg: str) -> tuple[float, str]:
    """The legend's row (its first text's y) and the title as drawn."""
    title = re.search(r'font-weight="600"[^>]*>([^<]*)</text>', svg)
    legend_y = re.search(r'<text x="[\d.]+" y="([\d.]+)" font-size="11"', svg)
    assert title and legend_y
    return float(legend_y.group(1)), title.group(1)


def test_a_long_title_moves_the_legend_to_a_row_of_its_own_and_is_cut_to_fit() -> None:
    lines = [
        charts.Line("actual", np.arange(1, 11), np.ones(10), "#000", 1),
        charts.Line("backtest", np.arange(5, 11), np.ones(6), "#f00", 1, dash="4 2"),
        charts.Line("forecast", np.arange(11, 15), np.ones(4), "#f00", 1),
    ]
    short = charts.line_chart("CA_1", lines, 10.5, [], note="a note")
    assert _legend_and_title(short) == (13.0, "CA_1")  # on the title's row
    m5_id = "HOUSEHOLD_1_474_TX_3_evaluation"  # a real M5 id, which met the legend
    legend_y, drawn = _legend_and_title(charts.line_chart(m5_id, lines, 10.5, [], note="n"))
    assert drawn == m5_id and legend_y > 30  # below the note, not over the title
    endless = "X" * 200
    svg = charts.line_chart(endless, lines, 10.5, [])
    assert _legend_and_title(svg)[1] == "X" * 50 + "…"  # 502 px of room at 9.75 px a capital
    wide = _legend_and_title(charts.line_chart("W" * 200, lines, 10.5, []))[1]
    narrow = _legend_and_title(charts.line_chart("x" * 200, lines, 10.5, []))[1]
    assert len(wide) < 50 < len(narrow)  # an M or a W is wider than an X, an x narrower
    assert f'aria-label="{endless}"' in svg  # the whole title stays the chart's label


def test_month_labels_at_the_chart_edges_stay_inside_it() -> None:
    line = charts.Line("history", np.arange(1, 101), np.ones(100), "#000", 1)
    svg = charts.line_chart("t", [line], 50.5, [(1, "Jan"), (50, "Feb"), (100, "Mar")])
    anchors = re.findall(r'text-anchor="(\w+)" fill="[^"]+">(Jan|Feb|Mar)<', svg)
    assert anchors == [("start", "Jan"), ("middle", "Feb"), ("end", "Mar")]


def test_the_wrmsse_label_stays_inside_the_level_chart() -> None:
    levels = dict.fromkeys(range(1, 13), 0.99)
    svg = charts.level_chart(scoring.Score(0.99, levels, dict.fromkeys(range(1, 13), 1)))
    assert re.search(r'text-anchor="end" fill="#e8710a">WRMSSE 0.990<', svg)  # left of its line
    low = charts.level_chart(scoring.Score(0.5, levels | {1: 0.01}, dict.fromkeys(levels, 1)))
    assert re.search(r'text-anchor="start" fill="#e8710a">WRMSSE 0.500<', low)


def test_series_left_out_are_counted_in_words_and_the_score_named() -> None:
    history, forecast, truth, hierarchy, ids = small_case()
    history[0, :-1], history[0, -1] = 0, 5  # a first sale on the last history day: no scale
    score = score_of(history, truth, forecast, hierarchy)
    common = {"history": history, "forecast": forecast, "hierarchy": hierarchy, "ids": ids}
    one = " ".join(parse(report.render_report(**common, facts=FACTS, score=score)).text)
    assert "1 series is left out of its level's score: its history cannot" in one
    assert "...." not in one and score.series[12] == len(ids) - 1
    history[:6, :-29], history[:6, -29] = 0, 5  # the same, at the backtest's origin
    backtest = score_of(history[:, :-28], history[:, -28:], forecast, hierarchy)
    many = " ".join(parse(report.render_report(**common, facts=FACTS, backtest=backtest)).text)
    assert "12 series are left out of their level's backtest score: " in many  # 6, 4, 2
    assert "and 9 more." in many and "...." not in many


def test_no_sample_series_says_why_instead_of_an_empty_section() -> None:
    history, forecast, _, hierarchy, ids = small_case()
    history[:] = 0
    page = parse(report.render_report(history=history, forecast=forecast, hierarchy=hierarchy,
                                      ids=ids, facts=FACTS))  # fmt: skip
    assert "No series sold in the last 120 days." in page.text
    assert '<div class="grid"></div>' not in report.render_report(
        history=history, forecast=forecast, hierarchy=hierarchy, ids=ids, facts=FACTS
    )


def test_the_costliest_items_are_drawn_summed_over_their_stores() -> None:
    """The real final window: one item that stopped selling costs seasonal naive most."""
    data = schema.parse_inputs({n: (REAL / n).read_bytes() for n in schema.INPUT_FILES})
    hierarchy = Hierarchy.from_data(data)
    truth = pd.read_csv(REAL / naming.TRUTH_FILE).set_index("id").loc[data.ids].to_numpy(float)
    forecast = np.tile(data.sales[:, -7:], 4).astype(np.float64)
    weights = scoring.dollar_sales(data.sales, data.prices)
    score = scoring.wrmsse(data.sales, truth, forecast, hierarchy, weights, costliest=3)
    html = report.render_report(
        history=data.sales, forecast=forecast, hierarchy=hierarchy, ids=data.ids,
        facts={"run id": "m5-real"}, truth=truth, score=score,
    )  # fmt: skip
    page = parse(html)
    costly = [cost.item for cost in score.costliest]
    assert costly[0] == "FOODS_3_702"
    assert page.svgs[1 : 1 + len(costly)] == costly  # right after the level chart
    text = " ".join(page.text)
    assert "Where the error is" in text and "cost the score of 0.976 most" in text
    first = score.costliest[0]
    assert f"WRMSSE without it {first.wrmsse_without:.3f}" in text
    assert f"forecast {first.forecast_over_truth:.2f} x what sold" in text
    # Its chart is the item's sum over its ten stores, with that note.
    rows = list(first.rows)
    note = (f"10 series; forecast {first.forecast_over_truth:.2f} x what sold; WRMSSE without "
            f"it {first.wrmsse_without:.3f}")  # fmt: skip
    ticks = charts.day_ticks(data.last_day - 119, data.last_day + 28, None)
    chart = report._panel(
        first.item, data.sales[rows, -120:].sum(axis=0), forecast[rows].sum(axis=0),
        truth[rows].sum(axis=0), None, (data.last_day - 119, data.last_day), ticks, note=note,
    )  # fmt: skip
    assert chart in html
    # Not asked for, nothing is drawn.
    plain = scoring.wrmsse(data.sales, truth, forecast, hierarchy, weights)
    html = report.render_report(history=data.sales, forecast=forecast, hierarchy=hierarchy,
                                ids=data.ids, facts={}, truth=truth, score=plain)  # fmt: skip
    assert "Where the error is" not in " ".join(parse(html).text)


def test_the_costliest_items_of_a_backtest_say_so() -> None:
    history, forecast, _, hierarchy, ids = small_case()
    weights = history[:, -56:-28].sum(axis=1)
    backtest_forecast = history[:, -56:-28] * 3.0  # far too high: every item costs
    backtest = scoring.wrmsse(history[:, :-28], history[:, -28:], backtest_forecast, hierarchy,
                              weights, costliest=2)  # fmt: skip
    assert len(backtest.costliest) == 2
    html = report.render_report(history=history, forecast=forecast, hierarchy=hierarchy, ids=ids,
                                facts=FACTS, backtest=backtest,
                                backtest_forecast=backtest_forecast)  # fmt: skip
    text = " ".join(parse(html).text)
    assert "The items whose backtest (dashed) cost the backtest score of " in text
    first = backtest.costliest[0]
    assert f"backtest (dashed) {first.forecast_over_truth:.2f} x what sold" in text


def test_an_item_that_sold_nothing_is_said_so_with_its_forecast() -> None:
    history, forecast, truth, hierarchy, ids = small_case()
    truth[:3] = 0  # item 0, in its three stores, sold nothing
    forecast[:3] = 100.0
    score = scoring.wrmsse(history, truth, forecast, hierarchy, history[:, -28:].sum(axis=1),
                           costliest=1)  # fmt: skip
    (cost,) = score.costliest
    assert list(cost.rows) == [0, 1, 2] and cost.forecast_over_truth is None
    assert cost.described().startswith(f"{cost.item} (3 series, forecast 8,400 units, none sold)")
    html = report.render_report(history=history, forecast=forecast, hierarchy=hierarchy, ids=ids,
                                facts=FACTS, truth=truth, score=score)  # fmt: skip
    assert "3 series; forecast 8,400 units, none sold; WRMSSE without it " in html
