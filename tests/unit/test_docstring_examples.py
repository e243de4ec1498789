"""The examples in the core's docstrings are run, so the documentation cannot drift.

Examples that need data run on the 30 generated series (`small_m5`), given to them under the
names their docstrings use. Only an example that needs a live AWS endpoint may be skipped.
"""

from __future__ import annotations

import doctest
import importlib
import json
import pkgutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import m5flow
from m5flow.features import FeatureConfig
from m5flow.schema import HORIZON, INPUT_FILES, parse_inputs
from m5flow.scoring import format_score
from m5flow.storage import DiskStorage

from ..conftest import EVENTS

_FINDER = doctest.DocTestFinder()


def _examples(name: str) -> list[doctest.Example]:
    module = importlib.import_module(name)
    return [example for test in _FINDER.find(module) for example in test.examples]


MODULES = sorted(
    name
    for name in (info.name for info in pkgutil.walk_packages(m5flow.__path__, prefix="m5flow."))
    if _examples(name)
)
# report_failure's example needs a live event bus (an EventPublisher).
ALLOWED_SKIPS = {"m5flow.stages.failure": 1}


@pytest.fixture(scope="module")
def example_globals(small_m5: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The names the examples use without defining them."""
    data = parse_inputs({n: (small_m5 / n).read_bytes() for n in INPUT_FILES})
    scored = tmp_path_factory.mktemp("example_scores")
    last_weeks = pd.DataFrame(data.sales[:, -HORIZON:], index=pd.Index(data.ids, name="id"))
    last_weeks.set_axis([f"d_{data.last_day + d}" for d in range(1, HORIZON + 1)], axis=1).to_csv(
        scored / "truth.csv"
    )
    last_weeks.set_axis([f"F{d}" for d in range(1, HORIZON + 1)], axis=1).to_csv(
        scored / "submission.csv"
    )
    return {
        "np": np,
        "folder": small_m5,
        "data": data,
        "config": FeatureConfig(),
        "out": tmp_path_factory.mktemp("example_shards"),
        "DiskStorage": DiskStorage,
        "storage": DiskStorage(tmp_path_factory.mktemp("example_bucket")),
        "event": json.loads((EVENTS / "lambda_invocation_failure.json").read_text()),
        "m5_dir": small_m5,
        "truth": scored / "truth.csv",
        "submission": scored / "submission.csv",
        "format_score": format_score,
    }


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_hold(
    name: str,
    example_globals: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(name)
    result = doctest.testmod(module, extraglobs=dict(example_globals), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
    skipped = sum(1 for e in _examples(name) if e.options.get(doctest.SKIP))
    assert skipped == ALLOWED_SKIPS.get(name, 0), f"{name}: {skipped} example(s) skipped"
    assert result.attempted - skipped > 0  # doctest counts a skipped example as attempted
