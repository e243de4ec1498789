"""The house style is checked with the tests, so it cannot quietly rot."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_ruff_check_and_format_are_clean():
    for command in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *command], cwd=REPO_ROOT, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_no_type_errors():
    """The type hints are checked, so they say what the code does: the core, the local cloud
    (pyproject's [tool.mypy] files) and each handler."""
    handlers = sorted(str(p.relative_to(REPO_ROOT)) for p in REPO_ROOT.glob("functions/*/app.py"))
    assert len(handlers) == 5, handlers
    for files in ([], *([h] for h in handlers)):
        result = subprocess.run(
            [sys.executable, "-m", "mypy", *files], cwd=REPO_ROOT, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr
