"""The input checks of the shard step: one malformed file per rule, and the exact reason.

Every reason reads `<file>: <where>: found <x>; expected <y>`; "row N" is line N of the file.
The files are built here, tiny and exact (`tiny_files`), so each test changes one thing.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import zipfile

import numpy as np
import pandas as pd
import pytest

from m5flow import csvinput
from m5flow.csvinput import parse_wide_integers
from m5flow.exceptions import InputRejectedError
from m5flow.schema import (
    CALENDAR_FILE,
    INPUT_FILES,
    MAX_ID_CHARS,
    PRICES_FILE,
    SALES_FILE,
    M5Data,
    parse_inputs,
)
from tests.conftest import REAL_M5

SERIES = (  # item_id, dept_id, cat_id, store_id, state_id
    ("HOBBIES_1_001", "HOBBIES_1", "HOBBIES", "CA_1", "CA"),
    ("HOBBIES_1_001", "HOBBIES_1", "HOBBIES", "TX_1", "TX"),
    ("FOODS_3_002", "FOODS_3", "FOODS", "CA_1", "CA"),
    ("FOODS_3_002", "FOODS_3", "FOODS", "TX_1", "TX"),
)
N_DAYS = 70
START = dt.date(2011, 1, 29)


def tiny_files(n_days: int = N_DAYS, seed: int = 0) -> dict[str, bytes]:
    """A valid upload: 4 series over `n_days` days, a calendar 28 days longer, all prices.

    Series 0 starts selling on day 10, series 3 on day 40, the others on day 1. Days 3,
    17 and 60 carry events; CA has SNAP on days 1-10 of each month, TX on 5-15.
    """
    rng = np.random.default_rng(seed)
    sales = rng.poisson(2.0, (len(SERIES), n_days))
    sales[0, :9] = 0
    sales[3, :39] = 0
    sales[3, 39] = 1
    sales[0, 9] = 3
    sales[1:3, 0] = np.maximum(sales[1:3, 0], 1)
    lines = ["id,item_id,dept_id,cat_id,store_id,state_id," + ",".join(
        f"d_{d}" for d in range(1, n_days + 1))]  # fmt: skip
    for (item, dept, cat, store, state), row in zip(SERIES, sales, strict=True):
        lines.append(f"{item}_{store}_evaluation,{item},{dept},{cat},{store},{state},"
                     + ",".join(map(str, row)))  # fmt: skip
    calendar = ["date,wm_yr_wk,weekday,wday,month,year,d,event_name_1,event_type_1,"
                "event_name_2,event_type_2,snap_CA,snap_TX,snap_WI"]  # fmt: skip
    events = {3: "SuperBowl,Sporting,,", 17: "Easter,Cultural,OrthodoxEaster,Religious",
              60: "IndependenceDay,National,,"}  # fmt: skip
    for d in range(1, n_days + 29):
        date = START + dt.timedelta(d - 1)
        calendar.append(
            f"{date},{11101 + (d - 1) // 7},{date:%A},{(d - 1) % 7 + 1},{date.month},"
            f"{date.year},d_{d},{events.get(d, ',,,')},{int(date.day <= 10)},"
            f"{int(5 <= date.day <= 15)},0"
        )
    prices = ["store_id,item_id,wm_yr_wk,sell_price"]
    for k, (item, _, _, store, _) in enumerate(SERIES):
        for week in range(11101, 11101 + (n_days + 28 + 6) // 7):
            prices.append(f"{store},{item},{week},{1.5 + k + (week - 11101) // 4 * 0.25:.2f}")
    return {
        SALES_FILE: ("\n".join(lines) + "\n").encode(),
        CALENDAR_FILE: ("\n".join(calendar) + "\n").encode(),
        PRICES_FILE: ("\n".join(prices) + "\n").encode(),
    }


def edit(files: dict[str, bytes], name: str, row: int, column: str, value: str) -> None:
    """Set one cell: `row` is the line number (header = 1), `column` its name."""
    lines = files[name].decode().split("\n")
    header = lines[0].split(",")
    cells = lines[row - 1].split(",")
    cells[header.index(column)] = value
    lines[row - 1] = ",".join(cells)
    files[name] = "\n".join(lines).encode()


def reasons_of(files: dict[str, bytes], **options: int) -> list[str]:
    with pytest.raises(InputRejectedError) as caught:
        parse_inputs(files, **options)
    return caught.value.reasons


@pytest.fixture
def files() -> dict[str, bytes]:
    return tiny_files()


def test_valid_upload_parses(files: dict[str, bytes]) -> None:
    data = parse_inputs(files)
    assert data.sales.shape == (4, N_DAYS) and data.sales.dtype == np.float32
    assert list(data.ids) == [f"{s[0]}_{s[3]}_evaluation" for s in SERIES]
    assert list(data.calendar["day"]) == list(range(1, N_DAYS + 29))
    assert data.prices.shape == (4, N_DAYS + 28)
    assert data.prices[1, 0] == np.float32(2.5) and data.missing_price_weeks == 0
    assert data.notices == ()


def test_fast_and_general_readers_agree_on_the_real_slice() -> None:
    files = {name: (REAL_M5 / name).read_bytes() for name in INPUT_FILES}
    fast = parse_inputs(files)
    # A quoted id cell is valid CSV that only the general reader takes.
    quoted = files[SALES_FILE].replace(
        b"\nHOBBIES_1_001_CA_1_evaluation,", b'\n"HOBBIES_1_001_CA_1_evaluation",', 1
    )
    assert quoted != files[SALES_FILE]
    general = parse_inputs({**files, SALES_FILE: quoted})
    np.testing.assert_array_equal(fast.sales, general.sales)
    for column in ("ids", "item_ids", "dept_ids", "cat_ids", "store_ids", "state_ids"):
        assert list(getattr(fast, column)) == list(getattr(general, column))


def test_real_slice_carries_missing_price_weeks_forward() -> None:
    data = parse_inputs({name: (REAL_M5 / name).read_bytes() for name in INPUT_FILES})
    assert data.missing_price_weeks == 28 * 10 * 8
    assert data.notices == (
        "sell_prices.csv: 2,240 missing week(s) of 280 series took the week before's price "
        "(first: store_id CA_1 item_id HOBBIES_1_115 week 11614)",
    )
    row = list(data.ids).index("HOBBIES_1_115_CA_1_evaluation")
    assert np.isnan(data.prices[row]).sum() < data.prices.shape[1]
    assert (data.prices[row, -56:] == data.prices[row, -57]).all()


# --- the fast reader ---------------------------------------------------------------------


def test_fast_reader_matches_a_plain_parse_across_chunks(monkeypatch) -> None:
    rng = np.random.default_rng(1)
    values = rng.integers(0, 10, (500, 40)) ** rng.integers(0, 7, (500, 40))
    values[values > 9_999_999] = 9_999_999
    text = (
        "id,name,"
        + ",".join(f"d_{k}" for k in range(1, 41))
        + "\n"
        + "".join(f"s{i},n-{i}.x," + ",".join(map(str, row)) + "\n" for i, row in enumerate(values))
    )
    monkeypatch.setattr(csvinput, "_CHUNK_BYTES", 997)  # many chunks, cut anywhere
    cells, parsed = parse_wide_integers(text.encode(), 2, workers=3)
    assert cells == [[f"s{i}", f"n-{i}.x"] for i in range(500)]
    np.testing.assert_array_equal(parsed, values.astype(np.float32))
    assert parse_wide_integers(text.encode().rstrip(b"\n"), 2)[1].shape == (500, 40)
    assert parse_wide_integers(text.encode() + b"\n\n", 2)[1].shape == (500, 40)


@pytest.mark.parametrize(
    "body", [b'"a",1,2\n', b"a,1\n", b"a,1,2,3\n", b"a,,2\n", b"a,-1,2\n", b"a,1.0,2\n",
             b"a,12345678,2\n", b"a,1,x\n"],
)  # fmt: skip
def test_fast_reader_declines_anything_irregular(body: bytes) -> None:
    assert parse_wide_integers(b"id,d_1,d_2\nz,0,0\n" + body, 1) is None


# --- whole files -------------------------------------------------------------------------


def test_gzip_is_accepted(files: dict[str, bytes]) -> None:
    zipped = {**files, SALES_FILE: gzip.compress(files[SALES_FILE])}
    np.testing.assert_array_equal(parse_inputs(zipped).sales, parse_inputs(files).sales)


def test_truncated_gzip_is_refused(files: dict[str, bytes]) -> None:
    files[PRICES_FILE] = gzip.compress(files[PRICES_FILE])[:-20]
    (reason,) = reasons_of(files)
    assert reason.startswith("sell_prices.csv: content: found corrupt or truncated gzip data")
    assert reason.endswith("; expected a complete gzip file or a plain CSV")


def test_gzip_is_refused_past_the_size_limit_when_decompressed(files: dict[str, bytes]) -> None:
    files[SALES_FILE] = gzip.compress(files[SALES_FILE])
    limit = len(files[SALES_FILE]) + 10
    assert reasons_of(files, max_bytes=limit)[0] == (
        f"sales_train_evaluation.csv: size: found more than {limit:,} bytes once "
        f"decompressed; expected at most {limit:,} bytes"
    )


def test_other_archives_are_refused(files: dict[str, bytes]) -> None:
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w") as archive:
        archive.writestr("calendar.csv", files[CALENDAR_FILE])
    files[CALENDAR_FILE] = sink.getvalue()
    assert reasons_of(files) == [
        "calendar.csv: content: found a zip archive; expected a CSV, plain or gzip"
    ]


def test_size_limit(files: dict[str, bytes]) -> None:
    size = len(files[PRICES_FILE])
    reasons = reasons_of(files, max_bytes=size - 1)
    assert f"sell_prices.csv: size: found {size:,} bytes; expected at most {size - 1:,} bytes" in (
        reasons
    )


@pytest.mark.parametrize("name", INPUT_FILES)
@pytest.mark.parametrize("content", [b"", b" \n\n"])
def test_empty_file(files: dict[str, bytes], name: str, content: bytes) -> None:
    files[name] = content
    assert f"{name}: content: found an empty file; expected a header and rows" in reasons_of(files)


@pytest.mark.parametrize("name", INPUT_FILES)
def test_header_only(files: dict[str, bytes], name: str) -> None:
    files[name] = files[name].split(b"\n", 1)[0] + b"\n"
    (reason,) = reasons_of(files)
    assert reason.startswith(f"{name}: content: found a header only; expected ")


def test_missing_file(files: dict[str, bytes]) -> None:
    del files[CALENDAR_FILE]
    assert reasons_of(files) == [
        "calendar.csv: upload: found no such file; expected all of "
        "sales_train_evaluation.csv, calendar.csv, sell_prices.csv"
    ]


def test_not_utf8(files: dict[str, bytes]) -> None:
    files[CALENDAR_FILE] = files[CALENDAR_FILE].replace(b"SuperBowl", b"Super\xffBowl")
    assert reasons_of(files) == ["calendar.csv: row 4: found byte 0xff; expected UTF-8 text"]


@pytest.mark.parametrize("line_end", [b"\r\n", b"\r"])  # Windows; old Mac (Excel for Mac)
def test_byte_order_mark_and_other_line_ends_are_accepted(
    files: dict[str, bytes], line_end: bytes
) -> None:
    expected = parse_inputs(files)
    for name in (SALES_FILE, CALENDAR_FILE, PRICES_FILE):
        files[name] = b"\xef\xbb\xbf" + files[name].replace(b"\n", line_end)
    parsed = parse_inputs(files)
    np.testing.assert_array_equal(parsed.sales, expected.sales)
    np.testing.assert_array_equal(parsed.weekly_prices, expected.weekly_prices)
    assert parsed.calendar.equals(expected.calendar)


@pytest.mark.parametrize("line_end", ["\n", "\r\n"])
def test_rows_of_bare_separators_are_read_as_blank_rows(
    files: dict[str, bytes], line_end: str
) -> None:
    """A spreadsheet saves a row whose cells were cleared as `,,,,`: in the middle of a file
    or after its last row, it holds nothing and is skipped like a blank row."""
    expected = parse_inputs(files)
    for name in (SALES_FILE, CALENDAR_FILE, PRICES_FILE):
        lines = files[name].decode().rstrip("\n").split("\n")
        cleared = "," * lines[0].count(",")
        lines = [*lines[:3], cleared, *lines[3:], cleared, cleared]
        files[name] = (line_end.join(lines) + line_end).encode()
    parsed = parse_inputs(files)
    np.testing.assert_array_equal(parsed.sales, expected.sales)
    np.testing.assert_array_equal(parsed.weekly_prices, expected.weekly_prices)
    assert parsed.calendar.equals(expected.calendar)
    # A row with a value in any cell is a row: an id left out is still named
    sales = files[SALES_FILE].decode().split(line_end)
    sales[1] = "," + sales[1].split(",", 1)[1]
    files[SALES_FILE] = line_end.join(sales).encode()
    assert "sales_train_evaluation.csv: row 2, column id: " in "; ".join(reasons_of(files))


def test_every_problem_of_a_file_is_reported_at_once(files: dict[str, bytes]) -> None:
    edit(files, SALES_FILE, 3, "d_5", "-1")
    edit(files, SALES_FILE, 4, "d_9", "x")
    edit(files, SALES_FILE, 5, "d_2", "")
    edit(files, SALES_FILE, 5, "id", "FOODS_3_002_CA_1_evaluation")
    assert reasons_of(files) == [
        "sales_train_evaluation.csv: row 5, column d_2: found ''; expected a value, "
        "a non-negative integer (unit sales)",
        "sales_train_evaluation.csv: row 3, column d_5: found '-1'; expected a non-negative "
        "integer (unit sales) (2 in all)",
        "sales_train_evaluation.csv: row 5, column id: found 'FOODS_3_002_CA_1_evaluation' "
        "as in row 4; expected a unique id (id repeat)",
        "sales_train_evaluation.csv: row 5, column id: found 'FOODS_3_002_CA_1_evaluation'; "
        "expected item_id_store_id[_suffix], FOODS_3_002_TX_1...",
    ]


# --- sales: columns ----------------------------------------------------------------------


def test_sales_missing_id_column(files: dict[str, bytes]) -> None:
    files[SALES_FILE] = files[SALES_FILE].replace(b",cat_id,", b",category,", 1)
    reasons = reasons_of(files)
    assert reasons[1] == (
        "sales_train_evaluation.csv: column 4: found 'category'; expected an id column "
        "(id, item_id, dept_id, cat_id, store_id, state_id) or d_<day>"
    )
    assert reasons[0].startswith(
        "sales_train_evaluation.csv: header: found no column cat_id (columns: id, item_id, "
        "dept_id, category, store_id, state_id, d_1, d_2 and 68 more); expected the columns id, "
    )


def test_sales_repeated_column(files: dict[str, bytes]) -> None:
    files[SALES_FILE] = files[SALES_FILE].replace(b",d_3,", b",d_2,", 1)
    assert reasons_of(files) == [
        "sales_train_evaluation.csv: column 'd_2': found 2 columns of that name; expected "
        "each column once",
        "sales_train_evaluation.csv: column 9: found d_2; expected d_3 (d_1, d_2, ... without "
        "gaps)",
    ]


def test_sales_day_columns_have_a_gap(files: dict[str, bytes]) -> None:
    header, body = files[SALES_FILE].split(b"\n", 1)
    names = header.decode().split(",")
    names[6 + 29 :] = [f"d_{d}" for d in range(31, N_DAYS + 2)]  # d_30 is missing
    files[SALES_FILE] = ",".join(names).encode() + b"\n" + body
    assert reasons_of(files) == [
        "sales_train_evaluation.csv: column 36: found d_31; expected d_30 (d_1, d_2, ... "
        "without gaps)"
    ]


def test_sales_too_few_days() -> None:
    reasons = reasons_of(tiny_files(n_days=40))
    assert reasons == [
        "sales_train_evaluation.csv: header: found 40 day columns; expected at least 56, d_1..d_56"
    ]


def test_sales_row_of_the_wrong_width(files: dict[str, bytes]) -> None:
    lines = files[SALES_FILE].split(b"\n")
    lines[2] = lines[2].rsplit(b",", 1)[0]
    files[SALES_FILE] = b"\n".join(lines)
    assert reasons_of(files) == [
        f"sales_train_evaluation.csv: row 3: found {N_DAYS + 5} fields; expected "
        f"{N_DAYS + 6} fields, as in the header"
    ]


# --- sales: cells ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("-2", "a non-negative integer (unit sales)"),
        ("1.5", "a non-negative integer (unit sales)"),
        ("many", "a non-negative integer (unit sales)"),
        ("nan", "a non-negative integer (unit sales)"),
        ("", "a value, a non-negative integer (unit sales)"),
        ("20000000", "at most 16,777,216 units a day"),
    ],
)
def test_sales_bad_cell(files: dict[str, bytes], value: str, expected: str) -> None:
    edit(files, SALES_FILE, 4, "d_12", value)
    assert reasons_of(files) == [
        f"sales_train_evaluation.csv: row 4, column d_12: found {value!r}; expected {expected}"
    ]


def test_sales_integers_written_as_floats_are_accepted(files: dict[str, bytes]) -> None:
    expected = parse_inputs(files).sales
    edit(files, SALES_FILE, 2, "d_1", "4.0")
    expected[0, 0] = 4
    np.testing.assert_array_equal(parse_inputs(files).sales, expected)


# --- sales: ids ----------------------------------------------------------------------------


def test_ids_unique_per_item_and_store(files: dict[str, bytes]) -> None:
    edit(files, SALES_FILE, 3, "id", "HOBBIES_1_001_TX_1_validation")
    edit(files, SALES_FILE, 5, "id", "HOBBIES_1_001_TX_1_validation")
    edit(files, SALES_FILE, 5, "item_id", "HOBBIES_1_001")
    edit(files, SALES_FILE, 5, "dept_id", "HOBBIES_1")
    edit(files, SALES_FILE, 5, "cat_id", "HOBBIES")
    assert reasons_of(files) == [
        "sales_train_evaluation.csv: row 5, column id: found 'HOBBIES_1_001_TX_1_validation' "
        "as in row 3; expected a unique id (id repeat)",
        "sales_train_evaluation.csv: row 5, column store_id: found 'TX_1' as in row 3; "
        "expected one row per item_id and store_id (item_id, store_id repeat)",
    ]


def test_id_not_made_of_item_and_store(files: dict[str, bytes]) -> None:
    edit(files, SALES_FILE, 2, "id", "HOBBIES_1_001_CA_2_evaluation")
    assert reasons_of(files) == [
        "sales_train_evaluation.csv: row 2, column id: found 'HOBBIES_1_001_CA_2_evaluation'; "
        "expected item_id_store_id[_suffix], HOBBIES_1_001_CA_1..."
    ]


@pytest.mark.parametrize(
    ("row", "column", "value", "reason"),
    [
        (3, "dept_id", "HOBBIES_2", "row 3, column dept_id: found 'HOBBIES_2' for item_id "
         "'HOBBIES_1_001'; expected 'HOBBIES_1' as in row 2 (one dept_id per item_id)"),
        (5, "cat_id", "HOBBIES", "row 5, column cat_id: found 'HOBBIES' for item_id "
         "'FOODS_3_002'; expected 'FOODS' as in row 4 (one cat_id per item_id)"),
        (5, "state_id", "WI", "row 5, column state_id: found 'WI' for store_id 'TX_1'; "
         "expected 'TX' as in row 3 (one state_id per store_id)"),
    ],
)  # fmt: skip
def test_hierarchy_is_consistent(
    files: dict[str, bytes], row: int, column: str, value: str, reason: str
) -> None:
    edit(files, SALES_FILE, row, column, value)
    assert f"sales_train_evaluation.csv: {reason}" in reasons_of(files)


def test_a_hierarchy_clash_names_the_odd_row_not_the_first() -> None:
    """An item in ten stores whose first row alone has another dept_id: that row is wrong,
    not the nine that agree with each other."""
    files = {name: (REAL_M5 / name).read_bytes() for name in INPUT_FILES}
    sales = pd.read_csv(io.BytesIO(files[SALES_FILE]))
    rows = sales.index[sales["item_id"] == "FOODS_1_033"]
    assert len(rows) == 10
    sales.loc[rows[0], "dept_id"] = "FOODS_9"
    files[SALES_FILE] = sales.to_csv(index=False).encode()
    assert reasons_of(files) == [
        f"sales_train_evaluation.csv: row {rows[0] + 2}, column dept_id: found 'FOODS_9' for "
        f"item_id 'FOODS_1_033'; expected 'FOODS_1' as in row {rows[1] + 2} "
        "(one dept_id per item_id)"
    ]


def test_a_tie_in_the_hierarchy_goes_to_the_value_the_id_starts_with(
    files: dict[str, bytes],
) -> None:
    """Two rows of store TX_1, one in WI: a tie, where the store's name tells which is odd."""
    edit(files, SALES_FILE, 3, "state_id", "WI")  # TX_1's first row: the first value seen
    assert (
        "sales_train_evaluation.csv: row 3, column state_id: found 'WI' for store_id 'TX_1'; "
        "expected 'TX' as in row 5 (one state_id per store_id)"
    ) in reasons_of(files)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("HOBBIES_1_001_CA_1_eval uation", "only ASCII letters, digits, '_', '-', '.'"),
        ("", "a value"),
    ],
)
def test_ids_are_safe_in_an_unquoted_cell(
    files: dict[str, bytes], value: str, expected: str
) -> None:
    edit(files, SALES_FILE, 2, "id", value)
    found = "an empty cell" if value == "" else repr(value)
    assert f"sales_train_evaluation.csv: row 2, column id: found {found}; expected {expected}" in (
        reasons_of(files)
    )


def test_an_id_ending_in_a_line_break_is_refused(files: dict[str, bytes]) -> None:
    """A quoted id cell that ends in a line break: a regex's "$" would let it by, and the
    unquoted inference shards then broke the shard step with pyarrow's error."""
    header, first, rest = files[SALES_FILE].split(b"\n", 2)
    row_id, cells = first.split(b",", 1)
    files[SALES_FILE] = b"\n".join([header, b'"' + row_id + b'\n",' + cells, rest])
    found = repr(row_id.decode() + "\n")
    assert f"sales_train_evaluation.csv: row 2, column id: found {found}; expected only " in (
        " ".join(reasons_of(files))
    )


def test_ids_do_not_start_like_a_formula(files: dict[str, bytes]) -> None:
    edit(files, SALES_FILE, 2, "item_id", "-HOBBIES_1_001")
    edit(files, SALES_FILE, 3, "item_id", "-HOBBIES_1_001")
    edit(files, SALES_FILE, 2, "id", "-HOBBIES_1_001_CA_1")
    edit(files, SALES_FILE, 3, "id", "-HOBBIES_1_001_TX_1")
    assert reasons_of(files) == [
        "sales_train_evaluation.csv: row 2, column id: found '-HOBBIES_1_001_CA_1'; expected "
        "an id that does not start like a spreadsheet formula (2 in all)",
    ]


# --- calendar ------------------------------------------------------------------------------


def test_calendar_missing_snap_column_of_a_state(files: dict[str, bytes]) -> None:
    files[CALENDAR_FILE] = files[CALENDAR_FILE].replace(b",snap_TX,", b",snap_NY,", 1)
    (reason,) = reasons_of(files)
    assert reason.startswith("calendar.csv: header: found no column snap_TX (columns: date, ")
    assert reason.endswith("event_type_2, snap_CA, snap_TX")


def test_calendar_must_cover_the_forecast_days(files: dict[str, bytes]) -> None:
    files[CALENDAR_FILE] = b"\n".join(files[CALENDAR_FILE].split(b"\n")[: N_DAYS + 20])
    assert reasons_of(files) == [
        f"calendar.csv: column d: found 9 day(s) missing, first d_{N_DAYS + 20}; expected "
        f"every day d_1..d_{N_DAYS + 28} (the {N_DAYS} sales days and the 28 forecast days)"
    ]


def test_missing_days_are_named_beside_a_bad_cell(files: dict[str, bytes]) -> None:
    """One upload hears of both: which days the file lacks needs only the d column."""
    lines = files[CALENDAR_FILE].split(b"\n")[: N_DAYS + 20]
    lines[3] = lines[3].replace(b"-", b"/", 1)  # a date as 2011/01-31
    files[CALENDAR_FILE] = b"\n".join(lines)
    reasons = reasons_of(files)
    assert [r.split(":")[1].strip() for r in reasons] == ["row 4, column date", "column d"]
    assert "9 day(s) missing" in reasons[1]


@pytest.mark.parametrize(
    ("row", "column", "value", "expected"),
    [
        (5, "d", "day_4", "d_<day>"),
        (5, "d", "d_3", "each day once"),
        (6, "date", "2011-02-31", "a date as YYYY-MM-DD"),
        (6, "date", "2011-03-04", "2011-02-02, the day after d_4"),
        (6, "month", "3", "2, as in the date"),
        (6, "year", "2010", "2011, as in the date"),
        (6, "wday", "8", "an integer 1..7"),
        (6, "wm_yr_wk", "11100", "at least 11101 (weeks never go back)"),
        (6, "wm_yr_wk", "w1", "a week number (a positive integer)"),
        (6, "snap_CA", "2", "0 or 1"),
        (6, "event_type_1", "Holiday", "one of Cultural, National, Religious, Sporting, or empty"),
    ],
)
def test_calendar_bad_cell(
    files: dict[str, bytes], row: int, column: str, value: str, expected: str
) -> None:
    edit(files, CALENDAR_FILE, row, column, value)
    assert reasons_of(files)[0] == (
        f"calendar.csv: row {row}, column {column}: found {value!r}; expected {expected}"
    )


# --- prices --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("sell_price", "0", "a positive price below 1,000,000"),
        ("sell_price", "-1.5", "a positive price below 1,000,000"),
        ("sell_price", "cheap", "a positive price below 1,000,000"),
        ("sell_price", "1e300", "a positive price below 1,000,000"),
        ("wm_yr_wk", "11101.5", "a week of calendar.csv (a wm_yr_wk)"),
        ("wm_yr_wk", "week", "a week of calendar.csv (a wm_yr_wk)"),
        ("store_id", "", "a value"),
    ],
)
def test_prices_bad_cell(files: dict[str, bytes], column: str, value: str, expected: str) -> None:
    edit(files, PRICES_FILE, 7, column, value)
    assert reasons_of(files) == [
        f"sell_prices.csv: row 7, column {column}: found {value!r}; expected {expected}"
    ]


def test_prices_of_weeks_before_or_after_the_calendar_are_ignored(
    files: dict[str, bytes],
) -> None:
    """A history cut to fewer days (sales and calendar from a later d_1) keeps its prices."""
    plain = parse_inputs(dict(files))
    extra = b"CA_1,FOODS_3_002,11001,9.99\nCA_1,FOODS_3_002,99999,9.99\n"
    files[PRICES_FILE] = files[PRICES_FILE] + extra
    data = parse_inputs(files)
    np.testing.assert_array_equal(data.weekly_prices, plain.weekly_prices)
    # Outside the calendar or not, a week must still be a whole number, and is named.
    files[PRICES_FILE] += b"CA_1,FOODS_3_002,99999.5,9.99\nCA_1,FOODS_3_002,inf,9.99\n"
    reasons = reasons_of(files)
    assert len(reasons) == 1 and "column wm_yr_wk: found '99999.5'" in reasons[0], reasons
    assert "(2 in all)" in reasons[0]


def test_prices_row_of_the_wrong_width(files: dict[str, bytes]) -> None:
    lines = files[PRICES_FILE].split(b"\n")
    lines[9] += b",extra"
    files[PRICES_FILE] = b"\n".join(lines)
    assert reasons_of(files) == [
        "sell_prices.csv: row 10: found 5 fields; expected 4 fields, as in the header"
    ]


def test_prices_repeat_a_week(files: dict[str, bytes]) -> None:
    edit(files, PRICES_FILE, 7, "wm_yr_wk", "11101")
    assert reasons_of(files) == [
        "sell_prices.csv: row 7, column wm_yr_wk: found '11101'; expected one price per "
        "store_id, item_id and week"
    ]


def test_prices_missing_columns(files: dict[str, bytes]) -> None:
    files[PRICES_FILE] = files[PRICES_FILE].replace(b"sell_price", b"price", 1)
    assert reasons_of(files) == [
        "sell_prices.csv: header: found no column sell_price (columns: store_id, item_id, "
        "wm_yr_wk, price); expected the columns store_id, item_id, wm_yr_wk, sell_price"
    ]


def test_every_series_that_sold_needs_a_price(files: dict[str, bytes]) -> None:
    lines = files[PRICES_FILE].decode().split("\n")
    files[PRICES_FILE] = "\n".join(x for x in lines if not x.startswith("TX_1,FOODS")).encode()
    assert reasons_of(files) == [
        "sell_prices.csv: rows: found no price for 1 of 4 series that sold, the first store_id "
        "TX_1 item_id FOODS_3_002; expected a price for every item in every store where it sold"
    ]


def test_a_series_not_yet_on_the_shelf_needs_no_price(files: dict[str, bytes]) -> None:
    """Never sold and never priced: an item not launched there yet, kept with a notice."""
    lines = files[PRICES_FILE].decode().split("\n")
    files[PRICES_FILE] = "\n".join(x for x in lines if not x.startswith("TX_1,FOODS")).encode()
    sales = pd.read_csv(io.BytesIO(files[SALES_FILE]))
    unlaunched = (sales["store_id"] == "TX_1") & (sales["cat_id"] == "FOODS")
    sales.loc[unlaunched, [c for c in sales.columns if c.startswith("d_")]] = 0
    files[SALES_FILE] = sales.to_csv(index=False).encode()
    data = parse_inputs(files)
    (row,) = np.flatnonzero(unlaunched)
    assert np.isnan(data.weekly_prices[row]).all()
    assert data.notices == (
        "sell_prices.csv: 1 series never sold and has no price (the first: store_id TX_1 "
        "item_id FOODS_3_002); they are forecast 0",
    )


def test_sales_before_the_first_price_are_let_through_with_a_notice(
    files: dict[str, bytes],
) -> None:
    """A prices file that starts three weeks late: the run goes on, and says so."""
    lines = files[PRICES_FILE].decode().split("\n")
    late = tuple(f"CA_1,FOODS_3_002,{week}," for week in (11101, 11102, 11103))
    files[PRICES_FILE] = "\n".join(x for x in lines if not x.startswith(late)).encode()
    data = parse_inputs(files)
    units = data.sales[2, :21].sum()
    assert units > 0 and np.isnan(data.prices[2, :21]).all() and not np.isnan(data.prices[2, 21])
    assert data.notices == (
        f"sell_prices.csv: 1 series sold {units:,.0f} unit(s) before their first price (the "
        "first: store_id CA_1 item_id FOODS_3_002, priced from d_22); those days train "
        "without a price, so check that the prices file starts early enough",
    )


def test_missing_price_weeks_are_carried_forward(files: dict[str, bytes]) -> None:
    lines = files[PRICES_FILE].decode().split("\n")
    gone = ("CA_1,FOODS_3_002,11103,", "CA_1,FOODS_3_002,11104,")
    files[PRICES_FILE] = "\n".join(x for x in lines if not x.startswith(gone)).encode()
    data = parse_inputs(files)
    assert data.missing_price_weeks == 2
    assert data.notices == (
        "sell_prices.csv: 2 missing week(s) of 1 series took the week before's price "
        "(first: store_id CA_1 item_id FOODS_3_002 week 11103)",
    )
    week_of_day = data.calendar["wm_yr_wk"].to_numpy()
    np.testing.assert_array_equal(
        data.prices[2, (week_of_day == 11103) | (week_of_day == 11104)],
        data.prices[2, week_of_day == 11102][0],
    )


def test_prices_of_unknown_items_are_ignored(files: dict[str, bytes]) -> None:
    expected = parse_inputs(files).weekly_prices
    files[PRICES_FILE] += b"WI_1,FOODS_3_002,11101,3.25\nCA_1,FOODS_9_999,11101,1.00\n"
    np.testing.assert_array_equal(parse_inputs(files).weekly_prices, expected)


def test_m5data_daily_prices_follow_the_weeks(files: dict[str, bytes]) -> None:
    data: M5Data = parse_inputs(files)
    assert data.prices.shape == (4, N_DAYS + 28)
    np.testing.assert_array_equal(data.prices[:, 6], data.prices[:, 0])
    assert data.prices[3, 7 * 4] == np.float32(4.5 + 0.25)


# --- found by fuzzing: cells that crashed the reading instead of being refused ---


def test_a_day_number_past_int64_is_refused(files: dict[str, bytes]) -> None:
    edit(files, CALENDAR_FILE, 5, "d", "d_99999999999999999999")
    assert (
        "calendar.csv: row 5, column d: found 'd_99999999999999999999'; expected d_<day> "
        "with a day number of at most 9 digits"
    ) in reasons_of(files)


def test_a_price_week_spelt_nan_is_refused(files: dict[str, bytes]) -> None:
    edit(files, PRICES_FILE, 3, "wm_yr_wk", "NAN")  # pyarrow reads NAN as a float NaN
    assert reasons_of(files) == [
        "sell_prices.csv: row 3, column wm_yr_wk: found 'NAN'; expected a week of calendar.csv "
        "(a wm_yr_wk)"
    ]


def test_far_apart_calendar_weeks_take_no_table_as_long_as_their_gap(files) -> None:
    """Weeks need only never go back: 1 to 10**9 made a lookup of 7.45 GiB."""
    import tracemalloc

    last = len(files[CALENDAR_FILE].decode().rstrip("\n").split("\n"))
    edit(files, CALENDAR_FILE, last, "wm_yr_wk", str(10**9))
    tracemalloc.start()
    try:
        parse_inputs(files)  # the last day is a forecast day: no price needed for its week
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 << 20


@pytest.mark.parametrize("name", [SALES_FILE, CALENDAR_FILE, PRICES_FILE])
def test_a_quote_left_open_in_a_header_is_refused(files: dict[str, bytes], name: str) -> None:
    """pyarrow then reads the whole file as one header, and raised ArrowInvalid."""
    header, rest = files[name].split(b"\n", 1)
    last = header.rfind(b",") + 1
    files[name] = header[:last] + b'"' + header[last:] + b"\n" + rest
    assert reasons_of(files) == [
        f'{name}: header: found a quote (") that is not closed on its line; expected column '
        "names, each quote closed"
    ]


def test_a_long_bad_cell_is_quoted_by_its_head(files: dict[str, bytes]) -> None:
    """A stray quote once made a 2.6 MB cell of the rest of a prices file, quoted whole in
    a reason no EventBridge event could carry (256 KB)."""
    edit(files, PRICES_FILE, 3, "sell_price", "x" * 5000)
    (reason,) = reasons_of(files)
    assert f"found '{'x' * 60}'... (5,000 chars); expected a positive price" in reason
    assert len(reason) < 300


@pytest.mark.parametrize("general", [False, True])
def test_an_id_cell_past_the_limit_is_refused_before_it_widens_every_cell(files, general):
    """Ids are fixed-width text: one 1 MB cell made every cell 1 MB (6.5 GiB for 290 rows).
    `general`: a bad day cell too, so that the sales are read by the general path."""
    edit(files, SALES_FILE, 3, "dept_id", "D" * (MAX_ID_CHARS + 1))
    if general:
        edit(files, SALES_FILE, 4, "d_5", "x")
    assert reasons_of(files) == [
        f"sales_train_evaluation.csv: row 3, column dept_id: found '{'D' * 60}'... (101 chars), "
        f"1 such cell(s); expected an id of at most {MAX_ID_CHARS} characters"
    ]


def test_a_price_week_repeated_in_another_spelling_is_named(files: dict[str, bytes]) -> None:
    """11608 and 11608.0 are one week to the typed read; the text read compared spellings,
    found nothing, and the reason named no row."""
    lines = files[PRICES_FILE].decode().split("\n")
    store, item, week, price = lines[1].split(",")
    lines.insert(2, f"{store},{item},{week}.0,{price}")
    files[PRICES_FILE] = "\n".join(lines).encode()
    assert reasons_of(files) == [
        f"sell_prices.csv: row 3, column wm_yr_wk: found '{week}.0'; expected one price per "
        "store_id, item_id and week"
    ]


def test_a_price_quoted_open_to_the_end_of_the_file_is_named(files: dict[str, bytes]) -> None:
    payload = files[PRICES_FILE].rstrip(b"\n")
    last_comma = payload.rfind(b",") + 1
    files[PRICES_FILE] = payload[:last_comma] + b'"' + payload[last_comma:]
    rows = len(payload.split(b"\n"))
    (reason,) = reasons_of(files)
    assert reason.startswith(f"sell_prices.csv: row {rows}, column sell_price: found '")


def test_a_header_of_dates_is_one_reason_with_a_count(files: dict[str, bytes]) -> None:
    """A spreadsheet's pivot names the day columns by date: one reason, not one per day."""
    header, rest = files[SALES_FILE].decode().split("\n", 1)
    names = header.split(",")
    names[6:] = [f"2011-01-{k:02d}" if k <= 31 else f"2011-02-{k - 31:02d}"
                 for k in range(1, len(names) - 5)]  # fmt: skip
    files[SALES_FILE] = (",".join(names) + "\n" + rest).encode()
    assert reasons_of(files) == [
        "sales_train_evaluation.csv: column 7: found '2011-01-01'; expected an id column (id, "
        f"item_id, dept_id, cat_id, store_id, state_id) or d_<day> ({len(names) - 6:,} in all)"
    ]


def test_header_reasons_say_what_cannot_be_seen(files: dict[str, bytes]) -> None:
    blank = {**files, CALENDAR_FILE: b"\n" + files[CALENDAR_FILE]}
    assert reasons_of(blank) == [
        "calendar.csv: row 1: found a blank line; expected the column names, on the first line"
    ]
    twice = {**files, SALES_FILE: "\ufeff".encode() * 2 + files[SALES_FILE]}  # one is taken off
    assert "(columns: '\\ufeffid', item_id," in reasons_of(twice)[0]


def test_a_history_cut_short_keeps_its_whole_calendar_and_prices(files) -> None:
    """Calendar weeks after the forecast days are unused, and their prices ignored: a
    mutant that took them for unknown weeks refused the upload, and no test saw it."""
    frame = pd.read_csv(io.BytesIO(files[SALES_FILE]))
    cut = frame.iloc[:, : frame.shape[1] - 14]  # two weeks of history fewer, nothing else
    files[SALES_FILE] = cut.to_csv(index=False).encode()
    data = parse_inputs(files)
    assert data.last_day == N_DAYS - 14
    assert data.prices.shape == (4, N_DAYS - 14 + 28) and not np.isnan(data.prices[1]).any()


def _real_files() -> dict[str, bytes]:
    return {name: (REAL_M5 / name).read_bytes() for name in INPUT_FILES}


def test_a_price_week_between_two_calendar_weeks_is_refused() -> None:
    """M5's weeks jump from 11152 to 11201: a week between them is no week of the calendar,
    not the next one."""
    files = _real_files()
    prices = pd.read_csv(io.BytesIO(files[PRICES_FILE]))
    prices.loc[1, "wm_yr_wk"] = 11160
    files[PRICES_FILE] = prices.to_csv(index=False).encode()
    assert reasons_of(files) == [
        "sell_prices.csv: row 3, column wm_yr_wk: found '11160'; expected a week of "
        "calendar.csv (a wm_yr_wk)"
    ]


def test_empty_parent_cells_do_not_outvote_the_filled_ones() -> None:
    files = _real_files()
    sales = pd.read_csv(io.BytesIO(files[SALES_FILE]))
    rows = sales.index[sales["item_id"] == "FOODS_1_033"]
    sales.loc[rows[:6], "dept_id"] = ""
    sales.loc[rows[6], "dept_id"] = "FOODS_9"  # against the three FOODS_1 left
    files[SALES_FILE] = sales.to_csv(index=False).encode()
    empty, clash = reasons_of(files)
    assert empty.startswith(f"sales_train_evaluation.csv: row {rows[0] + 2}, column dept_id: ")
    assert "found an empty cell; expected a value (6 in all)" in empty
    assert clash == (
        f"sales_train_evaluation.csv: row {rows[6] + 2}, column dept_id: found 'FOODS_9' for "
        f"item_id 'FOODS_1_033'; expected 'FOODS_1' as in row {rows[7] + 2} (one dept_id per "
        "item_id)"
    )


@pytest.mark.parametrize("where", [SALES_FILE, PRICES_FILE])
def test_a_long_bad_cell_does_not_widen_every_cell_of_its_column(where: str) -> None:
    """Fixed-width text is as wide as the longest cell: 1 MB in one cell of the real slice
    made a column of 290 (or 8,000) cells of 1 MB each."""
    import tracemalloc

    files = _real_files()
    frame = pd.read_csv(io.BytesIO(files[where]), dtype=str, keep_default_na=False)
    frame.iloc[3, frame.columns.get_loc("d_5" if where == SALES_FILE else "sell_price")] = "x" * (
        1 << 20
    )
    files[where] = frame.to_csv(index=False).encode()
    tracemalloc.start()
    try:
        reasons = reasons_of(files)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "(1,048,576 chars)" in reasons[0]
    assert peak < 400 << 20


def test_two_unreadable_weeks_of_one_series_are_no_repeated_week(files) -> None:
    edit(files, PRICES_FILE, 2, "wm_yr_wk", "abc")
    edit(files, PRICES_FILE, 3, "wm_yr_wk", "xyz")
    assert reasons_of(files) == [
        "sell_prices.csv: row 2, column wm_yr_wk: found 'abc'; expected a week of calendar.csv "
        "(a wm_yr_wk) (2 in all)"
    ]


@pytest.mark.parametrize(
    ("name", "line"),
    [('"Super\nBowl"', 11),  # a quoted cell over two lines: the bad cell is on line 11
     ('Super"Bowl', 10),  # a quote inside a cell is text, as pyarrow reads it: no shift
     ('"Super ""Big""\n\nBowl"', 12)],  # quotes within a quoted cell, and a blank line
)  # fmt: skip
def test_rows_are_named_by_their_line_after_a_cell_over_several_lines(files, name, line) -> None:
    edit(files, CALENDAR_FILE, 10, "snap_CA", "7")
    edit(files, CALENDAR_FILE, 3, "event_type_1", "Sporting")
    edit(files, CALENDAR_FILE, 3, "event_name_1", name)
    assert reasons_of(files) == [
        f"calendar.csv: row {line}, column snap_CA: found '7'; expected 0 or 1"
    ]


def test_rows_are_named_by_their_line_of_the_file_after_blank_lines(files) -> None:
    """pyarrow skips blank lines (and a spreadsheet's cleared `,,,,` rows, read as blank):
    counted by table row, a bad cell after one was named a line too early."""
    edit(files, CALENDAR_FILE, 10, "snap_CA", "7")
    lines = files[CALENDAR_FILE].decode().split("\n")
    lines.insert(3, ",,,,,,,,,,,,,")  # a cleared row: now line 4; the bad cell is on line 11
    files[CALENDAR_FILE] = "\n".join(lines).encode()
    sales = files[SALES_FILE].decode().split("\n")
    sales.insert(2, "")  # a blank line 3: the last series is now on line 6
    sales[5] += ",1"  # and has one field too many
    files[SALES_FILE] = "\n".join(sales).encode()
    assert reasons_of(files)[0].startswith("sales_train_evaluation.csv: row 6: found ")
    del sales[5]
    files[SALES_FILE] = "\n".join(sales).encode()
    assert reasons_of(files) == ["calendar.csv: row 11, column snap_CA: found '7'; expected 0 or 1"]
