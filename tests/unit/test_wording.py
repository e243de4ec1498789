"""Long values and long lists in messages: cut, counted, and in one form everywhere."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from m5flow.exceptions import ScoringError
from m5flow.stages.failure import refusal_reason
from m5flow.submission import aligned_values
from m5flow.wording import ITEM_CHARS, listed


def test_a_list_shows_its_first_items_each_cut_and_counts_the_rest() -> None:
    assert listed(np.arange(10**7)) == "0, 1, 2, 3, 4 and 9,999,995 more"
    assert listed(iter(["a", "b", "c"]), 2) == "a, b and 1 more"  # an iterator, counted
    assert listed(["x" * 100]) == "x" * ITEM_CHARS + "... (100 chars)"
    assert listed([" a", "b"], show=repr) == "' a', 'b'"


def test_sagemaker_s_long_refusal_is_cut_and_its_length_said() -> None:
    reason = refusal_reason("training job j", "v" * 700)
    assert "(ValidationException: " + "v" * 600 + "... (700 chars)); the stack's" in reason


def test_a_score_file_s_columns_are_listed_cut_even_if_one_is_a_whole_file() -> None:
    """A stray quote can make one header cell of the rest of the file: the reason (which
    Forecast Ready carries) stays short."""
    frame = pd.DataFrame(columns=["x" * 400_000, *(f"c{k}" for k in range(20))])
    with pytest.raises(ScoringError) as caught:
        aligned_values("truth.csv", frame, np.array(["a"]), ["d_1", "d_2"])
    message = str(caught.value)
    assert len(message) < 500
    assert "missing column(s) id, d_1, d_2; expected id,d_1..d_2 (found xxx" in message
    assert "... (400,000 chars), c0, c1, c2, c3, c4, c5, c6 and 13 more)" in message
