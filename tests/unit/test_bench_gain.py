"""bench/accuracy's headlines: the default's gain over the original, with its interval, and
the final window without the item that cost the default most."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REAL_M5, REPO_ROOT

_spec = importlib.util.spec_from_file_location("accuracy_run", REPO_ROOT / "bench/accuracy/run.py")
assert _spec is not None and _spec.loader is not None
run = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = run  # as importlib's recipe: its dataclass looks itself up there
_spec.loader.exec_module(run)


def _table(original: list[float], default: list[float]) -> pd.DataFrame:
    return pd.DataFrame([original, default], index=["original", "default"])


def test_the_year_of_windows_gives_the_readme_s_gain_and_interval() -> None:
    original = [0.899, 0.890, 0.778, 0.717, 0.627, 0.651, 0.759, 0.937, 0.646, 0.690, 0.827,
                0.758, 0.740]  # fmt: skip
    default = [0.710, 0.836, 0.655, 0.715, 0.580, 0.625, 0.742, 0.854, 0.651, 0.839, 0.861,
               0.654, 0.686]  # fmt: skip
    assert run._gain(_table(original, default)).endswith(
        "+5.2% better (target +10%), 95% interval -1.2% to +11.5% over 13 windows"
    )


def test_only_windows_both_scored_count() -> None:
    said = run._gain(_table([0.7, 0.65, 0.8, 0.6], [0.66, 0.6, np.nan, 0.58]))
    assert said.endswith("+5.6% better (target +10%), 95% interval +0.4% to +10.8% over 3 windows")
    assert run._gain(_table([0.7], [0.6])).endswith("+14.3% better (target +10%) on 1 window")


def test_the_final_window_is_also_scored_without_the_default_s_costliest_item() -> None:
    """../shared/m5-real is the final window's layout: its history, and its truth beside it."""
    window = run.Window.read(REAL_M5)
    forecasts = window.baselines()
    forecasts["default"] = forecasts["seasonal naive"]  # a stand-in the item is chosen on
    said = run._without_costliest(window, forecasts, ["default"])
    cost = window.score(forecasts["default"], costliest=1).costliest[0]
    assert said.startswith(
        f"\nThe item whose forecast cost default most on the final window: {cost.described()}."
    )
    without = window.without(cost.item, forecasts)
    assert without["default"] == without["seasonal naive"]
    assert without["default"] == pytest.approx(cost.wrmsse_without)
    lines = said.splitlines()
    assert any(line.split() == ["seasonal", "naive", f"{without['seasonal naive']:.3f}"]
               for line in lines)  # fmt: skip
    moving = window.score(forecasts["28-day moving average"]).wrmsse
    assert without["28-day moving average"] < moving  # FOODS_3_702 costs every method
