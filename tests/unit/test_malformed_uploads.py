"""A corpus of wrong uploads, each sent through the shard handler as a user would upload it.

Every one must end in `Input Rejected` naming the file and the problem, write nothing under
runs/, and leave the raw objects byte for byte as uploaded.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import boto3
import pandas as pd
import pytest

from m5flow.naming import OVERRIDES_FILE
from m5flow.schema import CALENDAR_FILE, INPUT_FILES, PRICES_FILE, SALES_FILE
from m5flow_local.synth import write_synthetic_m5
from tests.unit.test_handlers import _created, _keys

Files = dict[str, bytes]


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Files:
    out = tmp_path_factory.mktemp("corpus")
    write_synthetic_m5(out, 20, seed=11)
    return {name: (out / name).read_bytes() for name in INPUT_FILES}


def _frame(files: Files, name: str) -> pd.DataFrame:
    import io

    return pd.read_csv(io.BytesIO(files[name]))


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def _sales_cell(files: Files, column: str, value: object) -> bytes:
    sales = _frame(files, SALES_FILE)
    sales[column] = sales[column].astype(object)
    sales.loc[2, column] = value
    return _csv(sales)


def _sales_only_in_the_last_days(files: Files, days: int) -> bytes:
    """Every series launched within the validation window: nothing before it to train on."""
    sales = _frame(files, SALES_FILE)
    day_columns = [c for c in sales.columns if c.startswith("d_")]
    sales[day_columns[:-days]] = 0
    return _csv(sales)


def _first_id_bytes(files: Files) -> bytes:
    return files[SALES_FILE].split(b"\n")[1].split(b",")[0]


CORPUS: dict[str, tuple[Callable[[Files], Files], str, str]] = {
    # name: (how the upload goes wrong, the file named, a phrase of the reason)
    "empty file": (lambda f: {SALES_FILE: b""}, SALES_FILE, "empty"),
    "header only": (lambda f: {SALES_FILE: f[SALES_FILE].split(b"\n")[0] + b"\n"}, SALES_FILE, "header only"),
    "semicolon delimiter": (lambda f: {SALES_FILE: f[SALES_FILE].replace(b",", b";")}, SALES_FILE, "header: found columns separated by semicolons"),
    "tab delimiter": (lambda f: {PRICES_FILE: f[PRICES_FILE].replace(b",", b"\t")}, PRICES_FILE, "expected comma-separated values (CSV)"),
    "history cut at the start": (lambda f: {SALES_FILE: _csv(_frame(f, SALES_FILE).drop(columns=["d_1", "d_2"]))}, SALES_FILE, "found d_3; expected d_1, the calendar's first day"),
    "missing d_ column": (lambda f: {SALES_FILE: _csv(_frame(f, SALES_FILE).drop(columns=["d_100"]))}, SALES_FILE, "expected d_100"),
    "negative sales": (lambda f: {SALES_FILE: _sales_cell(f, "d_50", -1)}, SALES_FILE, "row 4, column d_50: found '-1'"),
    "fractional sales": (lambda f: {SALES_FILE: _sales_cell(f, "d_50", 1.5)}, SALES_FILE, "found '1.5'"),
    "non-numeric cell": (lambda f: {SALES_FILE: _sales_cell(f, "d_50", "abc")}, SALES_FILE, "found 'abc'"),
    "duplicate ids": (lambda f: {SALES_FILE: _csv(pd.concat([_frame(f, SALES_FILE)] * 2))}, SALES_FILE, "unique id"),
    "store in two states": (lambda f: {SALES_FILE: _sales_cell(f, "state_id", "NY")}, SALES_FILE, "state_id"),
    "id inconsistent with item": (lambda f: {SALES_FILE: _sales_cell(f, "item_id", "FOODS_9_999")}, SALES_FILE, "item_id_store_id"),
    "spreadsheet formula id": (lambda f: {SALES_FILE: _sales_cell(f, "id", "=HYPERLINK(1)")}, SALES_FILE, "=HYPERLINK(1)"),
    "non-UTF-8 bytes": (lambda f: {SALES_FILE: f[SALES_FILE].replace(_first_id_bytes(f), _first_id_bytes(f) + "\xe9".encode("latin-1"), 1)}, SALES_FILE, "UTF-8"),
    "UTF-16 without a byte-order mark": (lambda f: {CALENDAR_FILE: f[CALENDAR_FILE].decode().encode("utf-16-le")}, CALENDAR_FILE, "row 1: found a NUL byte (UTF-16 text"),
    "calendar too short": (lambda f: {CALENDAR_FILE: _csv(_frame(f, CALENDAR_FILE).iloc[:1900])}, CALENDAR_FILE, "first d_1901"),
    "calendar missing column": (lambda f: {CALENDAR_FILE: _csv(_frame(f, CALENDAR_FILE).drop(columns=["snap_TX"]))}, CALENDAR_FILE, "snap_TX"),
    "prices for unknown items only": (lambda f: {PRICES_FILE: _csv(_frame(f, PRICES_FILE).assign(item_id="NOPE_1_001"))}, PRICES_FILE, "no price"),
    "negative price": (lambda f: {PRICES_FILE: _csv(_frame(f, PRICES_FILE).assign(sell_price=-1))}, PRICES_FILE, "positive price"),
    "infinite price": (lambda f: {PRICES_FILE: _csv(_frame(f, PRICES_FILE).assign(sell_price=float("inf")))}, PRICES_FILE, "positive price below"),
    "calendar header only, no line end": (lambda f: {CALENDAR_FILE: f[CALENDAR_FILE].split(b"\n")[0]}, CALENDAR_FILE, "header only"),
    "prices header only, no line end": (lambda f: {PRICES_FILE: f[PRICES_FILE].split(b"\n")[0]}, PRICES_FILE, "header only"),
    "weekday not the date's": (lambda f: {CALENDAR_FILE: _csv(_frame(f, CALENDAR_FILE).assign(wday=lambda c: c["wday"] % 7 + 1))}, CALENDAR_FILE, "column wday"),
    "very wide sales": (lambda f: {SALES_FILE: _csv(pd.concat([_frame(f, SALES_FILE), pd.DataFrame(0, index=range(20), columns=[f"d_{d}" for d in range(1942, 4942)])], axis=1))}, CALENDAR_FILE, "missing"),
    "prices not a CSV": (lambda f: {PRICES_FILE: b"\x00\x01\x02 binary \xff\xfe"}, PRICES_FILE, "row 1: found byte 0xff; expected UTF-8 text"),
    "settings not JSON": (lambda f: {OVERRIDES_FILE: b"{min_lags: [28]}"}, OVERRIDES_FILE, "not valid UTF-8 JSON"),
    "settings misspelt": (lambda f: {OVERRIDES_FILE: b'{"min_lag": [28]}'}, OVERRIDES_FILE, "unknown setting 'min_lag'"),
    "settings models short of the horizon": (lambda f: {OVERRIDES_FILE: b'{"min_lags": [7, 14]}'}, OVERRIDES_FILE, "must end at the horizon"),
    "no sale before the validation window": (lambda f: {SALES_FILE: _sales_only_in_the_last_days(f, 10)}, SALES_FILE, "d_1..d_1913: found no sale in any series"),
    "settings hyperparameter NaN": (lambda f: {OVERRIDES_FILE: b'{"hyperparameters": {"eta": NaN}}'}, OVERRIDES_FILE, "NaN is not a JSON number"),
    "settings hyperparameter a list": (lambda f: {OVERRIDES_FILE: b'{"hyperparameters": {"eta": [0.1]}}'}, OVERRIDES_FILE, "'eta' must be a string or a finite number"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_malformed_upload_is_rejected_with_a_reason_and_nothing_written(
    case, good, bucket, load_function, bus, tmp_path: Path
):
    corrupt, named_file, phrase = CORPUS[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        files = {**good, **corrupt(good)}
    dataset = "bad-" + "".join(c if c.isalnum() else "-" for c in case)
    bus.watch(dataset)
    s3 = boto3.client("s3")
    for name, body in files.items():
        s3.put_object(Bucket=bucket, Key=f"raw/{dataset}/{name}", Body=body)

    result = load_function("ShardFunction").invoke(_created(bucket, f"raw/{dataset}/{SALES_FILE}"))

    assert result["status"] == "rejected"
    (event,) = bus.drain()
    assert event["detail-type"] == "Input Rejected"
    reason = event["detail"]["reason"]
    assert f"{named_file}:" in reason and phrase in reason, reason
    # Readable: no reason echoes a whole line of the file (an M5 header is 15 KB).
    assert max(len(line) for line in event["detail"]["reasons"]) < 500, reason
    assert _keys(bucket, "runs/") == []
    for name, body in files.items():
        assert s3.get_object(Bucket=bucket, Key=f"raw/{dataset}/{name}")["Body"].read() == body
