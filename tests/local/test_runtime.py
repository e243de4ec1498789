"""The in-process Lambda runtime holds handlers to their function's Timeout, as AWS does."""

from __future__ import annotations

from pathlib import Path

import pytest

from m5flow_local.router.runtime import LambdaTimeoutError, LocalFunction
from m5flow_local.router.template import FunctionSpec


def _function(tmp_path: Path, timeout: int) -> LocalFunction:
    (tmp_path / "app.py").write_text(
        "import time\n\n"
        "def handler(event, context):\n"
        "    time.sleep(event['seconds'])\n"
        "    return {'left_ms': context.get_remaining_time_in_millis()}\n"
    )
    spec = FunctionSpec("SlowFunction", tmp_path, "app.handler", {}, timeout, 128)
    return LocalFunction(spec, "us-east-1", "123456789012")


def test_a_handler_within_its_timeout_returns_its_result(tmp_path: Path) -> None:
    result = _function(tmp_path, timeout=5).invoke({"seconds": 0.1})
    assert 0 < result["left_ms"] < 5000


def test_a_handler_past_its_timeout_fails_as_on_aws(tmp_path: Path) -> None:
    with pytest.raises(LambdaTimeoutError, match=r"Task timed out after 1\.00 seconds"):
        _function(tmp_path, timeout=1).invoke({"seconds": 1.2})
