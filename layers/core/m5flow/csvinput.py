"""Reading CSV uploads: decoding, pyarrow with ragged rows reported, a fast wide reader.

Every problem becomes one line, `<file>: <where>: found <x>; expected <y>`, built by
`problem`, so that all the input checks of the shard step read alike.

The fast reader exists because a general CSV reader spends most of its time on per-column
bookkeeping when a file has 1,947 columns (pyarrow: about 5 s of CPU for the full M5 sales
file). `parse_wide_integers` finds every separator with numpy, reads each number from its
last digit backwards (most M5 cells are one digit), and fills a row-major float32 matrix
directly, chunk by chunk on every core: about 1 s of CPU. It accepts only the canonical
layout (no quotes, plain digits, the same width on every row) and returns None otherwise,
so that the caller falls back to pyarrow, which can also say what is wrong.
"""

from __future__ import annotations

import array
import csv
import functools
import io
import os
import re
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from m5flow.exceptions import InputRejectedError
from m5flow.wording import cut, listed

_ARCHIVES = {b"PK\x03\x04": "zip", b"BZh": "bzip2", b"\xfd7zXZ": "xz", b"\x28\xb5\x2f\xfd": "zstd"}
_ROWS_QUOTED = 3  # rows of the wrong width named one by one before "and N more"
_COMMA, _NEWLINE, _QUOTE, _ZERO = ord(","), ord("\n"), ord('"'), ord("0")
_CHUNK_BYTES = 4 << 20
# A row of bare separators: what a spreadsheet writes for a row whose cells were cleared
_SEPARATORS_ONLY = re.compile(rb"^,+\r?$", re.MULTILINE)


def first_of(mask: np.ndarray) -> int:
    """The index of the first True in `mask`: the row a reason names as an example."""
    return int(np.flatnonzero(mask)[0])


def problem(name: str, where: str, found: str, expected: str, count: int = 1) -> str:
    """One reason: `<file>: <where>: found <x>; expected <y>` (and how many are alike)."""
    return f"{name}: {where}: found {found}; expected {expected}" + (
        f" ({count:,} in all)" if count > 1 else ""
    )


# Of a cell, a reason shows this many characters: a stray quote can make one cell of the
# rest of the file.
_QUOTED_CHARS = 60


def quoted(value: object) -> str:
    """A cell as a reason shows it: Python-quoted text (numpy strings included), its first
    characters if it is long (a 2.6 MB cell made a reason EventBridge could never carry)."""
    return cut(str(value), _QUOTED_CHARS, quote=True)


def decoded(name: str, payload: bytes, max_bytes: int) -> bytes:
    """The CSV text of one upload: size-checked, gunzipped, without a byte-order mark, rows
    ending in LF (or CRLF), rows of bare separators (`,,,,`: a spreadsheet's cleared rows)
    left blank, as blank rows are read.

    A `.csv` object whose bytes are gzip is accepted and decompressed: `aws s3 cp` of a
    gzipped file, or an upload with Content-Encoding gzip, keeps the name, and refusing it
    would only cost the user a round trip. The limit applies to the decompressed size and
    inflating stops there, so a gzip bomb is refused without being expanded. Other archives
    (zip, bzip2, xz, zstd) are refused by name.

    Raises
    ------
    InputRejectedError
        Too large, a corrupt gzip stream, an archive, an empty file, or not UTF-8 text.
    """
    if len(payload) > max_bytes:
        found = f"{len(payload):,} bytes"
        raise InputRejectedError([problem(name, "size", found, f"at most {max_bytes:,} bytes")])
    if payload[:2] == b"\x1f\x8b":
        payload = _gunzip(name, payload, max_bytes)
    for magic, kind in _ARCHIVES.items():
        if payload.startswith(magic):
            found = f"a {kind} archive"
            raise InputRejectedError([problem(name, "content", found, "a CSV, plain or gzip")])
    payload = payload.removeprefix(b"\xef\xbb\xbf")
    first_cr = payload.find(b"\r")
    if first_cr >= 0 and payload[first_cr + 1 : first_cr + 2] != b"\n":
        # A lone CR ends each row (Excel for Mac's "CSV (Macintosh)"); read it as CRLF is read
        payload = payload.replace(b"\r", b"\n")
    if b"\n," in payload:  # rows of bare separators left by a spreadsheet are blank rows
        payload = _SEPARATORS_ONLY.sub(b"", payload)
    if not payload or payload.isspace():
        raise InputRejectedError([problem(name, "content", "an empty file", "a header and rows")])
    if not payload.isascii():
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            row = payload.count(b"\n", 0, exc.start) + 1
            found = f"byte {payload[exc.start]:#04x}"
            raise InputRejectedError([problem(name, f"row {row}", found, "UTF-8 text")]) from None
    nul = payload.find(b"\x00")
    if nul >= 0:  # UTF-8 allows it, no CSV holds it: UTF-16 without its byte-order mark
        row = payload.count(b"\n", 0, nul) + 1
        found = "a NUL byte (UTF-16 text, or not text)"
        raise InputRejectedError([problem(name, f"row {row}", found, "UTF-8 text")])
    if not payload.endswith(b"\n"):
        # pyarrow cannot infer the columns of a lone header without its line end; a copy is
        # made only then, which any editor's "no newline at end of file" can cause
        payload += b"\n"
    return payload


def _gunzip(name: str, payload: bytes, max_bytes: int) -> bytes:
    parts: list[bytes] = []
    size, rest = 0, payload
    try:
        while rest:  # a gzip file may hold several members, one after another
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            parts.append(inflater.decompress(rest, max_bytes + 1 - size))
            size += len(parts[-1])
            if size > max_bytes:
                found = f"more than {max_bytes:,} bytes once decompressed"
                raise InputRejectedError(
                    [problem(name, "size", found, f"at most {max_bytes:,} bytes")]
                )
            if not inflater.eof:
                raise zlib.error("the stream ends early")
            rest = inflater.unused_data
    except zlib.error as exc:
        found = f"corrupt or truncated gzip data ({exc})"
        raise InputRejectedError(
            [problem(name, "content", found, "a complete gzip file or a plain CSV")]
        ) from None
    return b"".join(parts)


class RowLines:
    """The file line each data row starts on, for reasons to name. pyarrow and pandas skip
    blank lines (a spreadsheet's cleared rows, which `decoded` leaves blank) and read a
    quoted cell over several lines as one row, so after either, the table's row i + 2 named
    a line above the cell. Worked out only when a reason needs it."""

    def __init__(self, payload: bytes) -> None:
        self._payload = payload

    @functools.cached_property
    def _lines(self) -> np.ndarray:
        data = np.frombuffer(self._payload, np.uint8)
        newlines = np.flatnonzero(data == _NEWLINE)
        if b'"' in self._payload and self._odd_quotes(data, newlines):
            try:
                return self._quoted_lines()
            except csv.Error:  # a cell past csv's size limit: a quote left open, most likely
                pass
        ends = np.append(newlines, len(data))
        starts = np.concatenate(([0], ends[:-1] + 1))
        width = ends - starts
        blank = width == 0
        one = np.flatnonzero(width == 1)
        blank[one] = data[starts[one]] == ord("\r")
        return (np.flatnonzero(~blank) + 1)[1:]  # 1-based; the first is the header

    @staticmethod
    def _odd_quotes(data: np.ndarray, newlines: np.ndarray) -> bool:
        """Whether a line holds an odd number of quotes, as a line that leaves a quoted cell
        open does: then some line break has an odd number of quotes before it (after the
        last line break, quotes change no row's start). Quoted ids alone (`"TX_1"`) close
        on their line: such a file's rows are its lines, found fast (1.4 s and 490 MB for a
        full-scale quoted prices file)."""
        quotes = np.flatnonzero(data == _QUOTE)
        before = np.searchsorted(quotes, newlines)  # the quotes before each line break
        return bool((before % 2).any())

    def _quoted_lines(self) -> np.ndarray:
        """Python's csv module tells where rows start: it reads quotes as pyarrow does (a
        quote opens a cell only at the cell's start, elsewhere it is text), which counting
        them cannot. Line by line (a decoded copy of a whole full-scale file took 650 MB),
        and slow (27 s for a full-scale prices file): only for a file with a line whose
        quotes do not pair."""
        reader = csv.reader(line.decode("utf-8", "replace") for line in io.BytesIO(self._payload))
        starts, line = array.array("q"), 1
        for row in reader:
            if row:  # a blank line is no row
                starts.append(line)
            line = reader.line_num + 1
        return np.frombuffer(starts, dtype=np.int64)[1:]  # the first is the header

    def __call__(self, row: int) -> int:
        return int(self._lines[row]) if row < len(self._lines) else row + 2


def _first_line(payload: bytes) -> bytes:
    """The header line, without copying the rest of the payload."""
    end = payload.find(b"\n")
    return payload[: end if end >= 0 else len(payload)]


def header_of(payload: bytes) -> list[str]:
    """The column names of a CSV payload (its first line)."""
    return next(csv.reader([_first_line(payload).decode("utf-8").rstrip("\r")]), [])


_SEPARATORS = {"\t": "tabs", ";": "semicolons", "|": "vertical bars"}
_SHOWN_NAME = 40  # characters of a column name a reason shows


def _shown(column: str) -> str:
    """A column name as a reason lists it; quoted if it holds what cannot be seen (a second
    byte-order mark, a tab), which made "no column id (columns: id, ...)" read as nonsense."""
    return cut(column, _SHOWN_NAME, quote=not column.isprintable())


def missing_columns(name: str, header: list[str], expected: tuple[str, ...]) -> list[str]:
    """Reasons for repeated column names and for expected columns that are absent.

    A header that is one column holding another separator (a spreadsheet's tab-separated
    or European semicolon export) gets that one reason, not an echo of the whole line.
    """
    if header in ([], [""]):
        return [problem(name, "row 1", "a blank line", "the column names, on the first line")]
    if len(header) == 1:
        found = [word for sep, word in _SEPARATORS.items() if header[0].count(sep) >= 2]
        if found:
            line = f"columns separated by {found[0]} ({_shown(header[0])!r})"
            return [problem(name, "header", line, "comma-separated values (CSV)")]
    counts = Counter(header)  # header.count per column was quadratic: 45 s for 70,000 columns
    reasons = [
        problem(name, f"column {column!r}", f"{count} columns of that name", "each column once")
        for column, count in counts.items() if count > 1
    ]  # fmt: skip
    missing = [c for c in expected if c not in counts]
    if missing:
        shown = listed(header, 8, _shown)
        reasons.append(
            problem(name, "header", f"no column {', '.join(missing)} (columns: {shown})",
                    f"the columns {', '.join(expected)}")
        )  # fmt: skip
    return reasons


def typed_csv(
    payload: bytes, types: dict[str, pa.DataType], *, threads: bool = True
) -> tuple[pa.Table, list[pacsv.InvalidRow]]:
    """The `types` columns read with pyarrow, and the rows of the wrong width it skipped
    (numbered only by a single-threaded read).

    Raises
    ------
    pyarrow.ArrowInvalid
        When a cell does not convert to its column's type (the caller explains it).
    """
    ragged: list[pacsv.InvalidRow] = []  # a handler cannot raise through pyarrow

    def skip(row: pacsv.InvalidRow) -> str:
        ragged.append(row)
        return "skip"

    table = pacsv.read_csv(
        io.BytesIO(payload),
        read_options=pacsv.ReadOptions(use_threads=threads, block_size=4 << 20),
        # A quoted cell over several lines is one row even where a 4 MB block ends in it
        # (as fast here: measured at full scale).
        parse_options=pacsv.ParseOptions(invalid_row_handler=skip, newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types=types, include_columns=list(types), strings_can_be_null=False
        ),
    )
    return table, ragged


def read_table(
    name: str, payload: bytes, header: list[str], types: dict[str, pa.DataType], line: RowLines
) -> tuple[pa.Table, list[str]]:
    """Read the `types` columns with pyarrow; rows of the wrong width become reasons, named
    by their line of the file (`line`: the payload's, which the caller's reasons share).

    Raises
    ------
    pyarrow.ArrowInvalid
        When a cell does not convert to its column's type (the caller explains it).
    """
    try:
        table, ragged = typed_csv(payload, types)
    except pa.ArrowInvalid as exc:
        if "CSV parse error" not in str(exc):
            raise  # a cell of the wrong type: the caller names it
        # A quote opened in the header and never closed makes the whole file one header.
        if _first_line(payload).count(b'"') % 2:
            reason = problem(name, "header", "a quote (\") that is not closed on its line",
                             "column names, each quote closed")  # fmt: skip
        else:
            found = f"text that cannot be split into rows ({str(exc).removeprefix('CSV ')})"
            reason = problem(name, "content", found, "comma-separated rows, each quote closed")
        return pa.table({}), [reason]
    if ragged:  # only a single-threaded read knows the rows' numbers
        table, ragged = typed_csv(payload, types, threads=False)
    expected = f"{len(header)} fields, as in the header"
    reasons = [
        problem(name, f"row {line(row.number - 2)}", f"{row.actual_columns} fields", expected)
        for row in ragged[:_ROWS_QUOTED]
    ]
    if len(ragged) > _ROWS_QUOTED:
        found = f"{len(ragged) - _ROWS_QUOTED:,} more rows of the wrong width"
        reasons.append(problem(name, "other rows", found, f"{len(header)} fields in every row"))
    if table.num_rows == 0 and not ragged:
        reasons.append(problem(name, "content", "a header only", "one or more rows after it"))
    return table, reasons


class _Irregular(Exception):
    """Raised inside a chunk when it is not in the canonical layout."""


def parse_wide_integers(
    payload: bytes, n_text: int, max_digits: int = 7, workers: int | None = None
) -> tuple[list[list[str]], np.ndarray] | None:
    """Parse `payload` (a header line, then rows of `n_text` text cells and integer cells).

    Parameters
    ----------
    payload
        The whole file. Lines end with "\\n" or "\\r\\n"; the last one may lack it.
    n_text
        How many leading cells of each row are text (kept as str).
    max_digits
        Longest integer accepted; 7 digits stay exact in float32.
    workers
        Threads (default: the CPUs this process may use).

    Returns
    -------
    (text, values) or None
        `text[i]` holds the text cells of data row i, `values` is float32 (rows, columns);
        None when anything departs from the canonical layout.

    Example
    -------
    >>> parse_wide_integers(b"id,d_1,d_2\\na,0,12\\nb,3,4\\n", 1)[1].tolist()
    [[0.0, 12.0], [3.0, 4.0]]
    """
    if b'"' in payload:
        return None
    if b"\r" in payload:
        payload = payload.replace(b"\r\n", b"\n")
    if not payload.endswith(b"\n") or payload.endswith(b"\n\n"):
        payload = payload.rstrip(b"\n") + b"\n"  # no blank line at the end
    body = payload.find(b"\n") + 1
    n_columns = payload.count(b",", 0, body) + 1
    n_rows = payload.count(b"\n", body)
    if n_columns <= n_text:
        return None
    values = np.empty((n_rows, n_columns - n_text), dtype=np.float32)
    chunks = []  # (first byte, end byte, first row)
    start, row = body, 0
    while start < len(payload):
        end = payload.find(b"\n", min(start + _CHUNK_BYTES, len(payload) - 1)) + 1
        chunks.append((start, end, row))
        row += payload.count(b"\n", start, end)
        start = end
    buffer = np.frombuffer(payload, dtype=np.uint8)

    def parse(chunk: tuple[int, int, int]) -> list[list[str]]:
        return _parse_chunk(payload, buffer, *chunk, n_text, n_columns, max_digits, values)

    workers = workers or len(os.sched_getaffinity(0))
    try:
        with ThreadPoolExecutor(max(1, min(workers, len(chunks)))) as pool:
            text = [cells for part in pool.map(parse, chunks) for cells in part]
    except _Irregular:
        return None
    return text, values


def _parse_chunk(
    payload: bytes,
    buffer: np.ndarray,
    start: int,
    end: int,
    first_row: int,
    n_text: int,
    n_columns: int,
    max_digits: int,
    out: np.ndarray,
) -> list[list[str]]:
    chunk = buffer[start:end]
    separators: np.ndarray = np.flatnonzero((chunk == _COMMA) | (chunk == _NEWLINE))
    if separators.size % n_columns:
        raise _Irregular
    rows = separators.size // n_columns
    separators = separators.reshape(rows, n_columns)
    kinds = chunk[separators]
    if (kinds[:, -1] != _NEWLINE).any() or (kinds[:, :-1] != _COMMA).any():
        raise _Irregular
    ends = separators[:, n_text:]  # one past each number's last digit
    lengths = ends - separators[:, n_text - 1 : -1] - 1
    if lengths.min() < 1 or lengths.max() > max_digits:
        raise _Irregular
    digits = chunk[ends - 1] - np.uint8(_ZERO)  # non-digits wrap around to > 9
    bad = digits > 9
    number = digits.astype(np.int32)
    flat_ends, flat_lengths, flat_number = ends.ravel(), lengths.ravel(), number.ravel()
    longer = np.flatnonzero(flat_lengths > 1)
    scale = 1
    for k in range(1, int(lengths.max())):
        scale *= 10
        longer = longer[flat_lengths[longer] > k]
        digits = chunk[flat_ends[longer] - 1 - k] - np.uint8(_ZERO)
        if (digits > 9).any():
            raise _Irregular
        flat_number[longer] += digits.astype(np.int32) * scale
    if bad.any():
        raise _Irregular
    out[first_row : first_row + rows] = number
    line_starts = np.concatenate(([0], separators[:-1, -1] + 1)) + start
    text_ends = separators[:, n_text - 1] + start
    return [
        payload[a:b].decode("utf-8").split(",")
        for a, b in zip(line_starts.tolist(), text_ends.tolist(), strict=True)
    ]
