"""`RowLines`: the file line a reason names for a row that pyarrow found wrong."""

from __future__ import annotations

import pyarrow as pa
import pytest

from m5flow.csvinput import RowLines, decoded, typed_csv

TYPES = {"m": pa.string(), "v": pa.int64()}


def _named_line(payload: bytes) -> int:
    """The line a reason names for the one row of the wrong width in `payload`, as the
    input checks find it: pyarrow's row number, through RowLines."""
    text = decoded("t.csv", payload, 1 << 30)
    _, (ragged,) = typed_csv(text, TYPES, threads=False)
    return RowLines(text)(ragged.number - 2)


@pytest.mark.parametrize(
    ("payload", "line"),
    [
        (b"m,v\nx,1\n\ny,2\nw,1,9\n", 5),  # after a blank line
        (b'm,v\n"x\ny",1\nw,1,9\n', 4),  # after a quoted cell over two lines
        (b'm,v\n"x\n\ny",1\n\nw,1,9\n', 6),  # a blank line inside the cell, one after
        (b'm,v\r\n"x""\r\ny",1\r\nw,1,9\r\n', 4),  # CRLF, a quote within the cell
        (b'm,v\nx"y,1\nw,1,9\n', 3),  # a quote inside a cell is text, as pyarrow reads it
        (b'm,v\n"x",1\n"y",2\nw,1,9\n', 4),  # quoted ids that close on their line
        # A cell past the csv module's size limit: the plain line count, one line early
        # (the line after the cell's break), rather than no reason at all.
        (b"m,v\n" + b'"' + b"q" * 200_000 + b'\nr",1\nw,1,9\n', 3),
    ],
)
def test_a_row_is_named_by_the_line_it_starts_on(payload: bytes, line: int) -> None:
    assert _named_line(payload) == line


def test_a_cell_over_the_line_where_pyarrow_s_block_ends_is_still_one_row() -> None:
    """pyarrow reads 4 MB blocks; a quoted cell over a line break at a block's end was cut
    into two rows (one of them ragged), and every later row named a line too late."""
    rows = b"m,v\n" + b"x,1\n" * ((4 << 20) // 4 - 2)
    rows += b"y" * ((4 << 20) - len(rows) - 5) + b",1\n"
    payload = rows + b'"q\nr",1\nz,1\nw,1,9\n'
    assert _named_line(payload) == payload.count(b"\n")  # the last line
