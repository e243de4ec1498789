"""The examples in the core's docstrings are run, so the documentation cannot drift."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import numpy as np
import pytest

import m5flow

MODULES = sorted(info.name for info in pkgutil.walk_packages(m5flow.__path__, prefix="m5flow."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_hold(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(name)
    result = doctest.testmod(module, extraglobs={"np": np}, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
