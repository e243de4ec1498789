"""At-least-once delivery: the same event three times, also at once, does the work once."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import boto3
import pandas as pd
import pytest
from botocore.exceptions import ClientError

from m5flow.notifications import EventPublisher
from m5flow.schema import CALENDAR_FILE, INPUT_FILES, PRICES_FILE, SALES_FILE
from m5flow.stages.shard import shard_dataset
from m5flow.storage import (
    DiskStorage,
    ObjectChangedError,
    ObjectHead,
    ObjectMissingError,
    S3Storage,
)
from tests.conftest import as_sent, killed_at_put_events
from tests.unit.test_handlers import _created, _keys, _upload


def _stage(bucket: str) -> tuple[S3Storage, EventPublisher]:
    storage = S3Storage(boto3.client("s3"), bucket)
    return storage, EventPublisher(boto3.client("events"), ledger=storage)


def test_concurrent_deliveries_shard_once_and_announce_once(bucket, small_m5, bus):
    bus.watch("concurrent")
    _upload(bucket, "concurrent", small_m5)
    storage, publisher = _stage(bucket)
    key = f"raw/concurrent/{SALES_FILE}"

    with ThreadPoolExecutor(max_workers=3) as pool:
        outcomes = list(pool.map(lambda _: shard_dataset(storage, publisher, key), range(3)))

    assert sorted(o.status for o in outcomes) == ["duplicate", "duplicate", "started"]
    assert len({o.run_id for o in outcomes}) == 1
    assert [e["detail-type"] for e in bus.drain()] == ["Run Started"]
    assert _keys(bucket, f"runs/{outcomes[0].run_id}/manifest.json")


def test_inputs_in_any_order_start_one_run(bucket, load_function, small_m5, bus):
    bus.watch("ordered")
    shard = load_function("ShardFunction")
    statuses = []
    for name in (PRICES_FILE, SALES_FILE, CALENDAR_FILE):
        _upload(bucket, "ordered", small_m5, (name,))
        statuses.append(shard.invoke(_created(bucket, f"raw/ordered/{name}"))["status"])
    # Events for earlier uploads may arrive late, after the run started: they change nothing.
    for name in INPUT_FILES:
        statuses.append(shard.invoke(_created(bucket, f"raw/ordered/{name}"))["status"])

    assert statuses == ["waiting", "waiting", "started", "duplicate", "duplicate", "duplicate"]
    assert [e["detail-type"] for e in bus.drain()] == ["Run Started"]


def test_unchanged_reupload_is_the_same_run_and_a_changed_input_a_new_one(
    bucket, load_function, small_m5, bus, tmp_path
):
    bus.watch("reupload")
    shard = load_function("ShardFunction")
    event = _created(bucket, f"raw/reupload/{SALES_FILE}")
    _upload(bucket, "reupload", small_m5)
    first = shard.invoke(event)
    _upload(bucket, "reupload", small_m5)
    again = shard.invoke(event)
    changed = pd.read_csv(small_m5 / SALES_FILE)
    changed.loc[0, "d_1941"] += 1
    changed.to_csv(tmp_path / SALES_FILE, index=False)
    _upload(bucket, "reupload", tmp_path, (SALES_FILE,))
    new = shard.invoke(event)

    # The same files again are the same run: refused, with why, instead of starting nothing
    # in silence; a changed file is a new run.
    assert first["status"] == "started" and again == {**first, "status": "rejected"}
    assert new["status"] == "started" and new["run_id"] != first["run_id"]
    events = [(e["detail-type"], e["detail"]["run_id"]) for e in bus.drain()]
    assert events == [("Run Started", first["run_id"]), ("Input Rejected", first["run_id"]),
                      ("Run Started", new["run_id"])]  # fmt: skip


def test_failed_announcement_is_withdrawn_so_the_retry_sends_it(bucket, bus):
    bus.watch("retry")
    storage = S3Storage(boto3.client("s3"), bucket)
    detail = {"run_id": "retry-000000000000", "dataset": "retry", "reason": "x", "stage": "shard"}

    # A real refusal: moto's EventBridge has no bus of that name.
    publisher = EventPublisher(boto3.client("events"), "no-such-bus", ledger=storage)
    with pytest.raises(Exception, match=r"no-such-bus|does not exist|refused"):
        publisher.publish("Run Failed", detail, once="run-failed-x")
    assert _keys(bucket, "events/retry-000000000000/") == []

    publisher.bus_name = "default"
    assert publisher.publish("Run Failed", detail, once="run-failed-x") is True
    assert publisher.publish("Run Failed", detail, once="run-failed-x") is False
    assert [e["detail-type"] for e in bus.drain()] == ["Run Failed"]


@pytest.mark.parametrize("refusals", [1, 3])
def test_an_event_sent_whose_record_cannot_be_marked_does_not_fail_the_step(bucket, bus, refusals):
    """EventBridge took the event, then S3 refused the 'sent' mark: raising would have
    Lambda retry the step a minute later, find the record unsent and long claimed, and send
    the event again. A passing refusal is tried again; a lasting one is logged."""
    refused = []

    class MarkRefused(S3Storage):
        def write(self, key, data, **kwargs):
            if b'"sent": true' in data and len(refused) < refusals:
                refused.append(key)
                raise OSError("S3 is unavailable")
            return super().write(key, data, **kwargs)

    bus.watch("unmarked")
    ledger = MarkRefused(boto3.client("s3"), bucket)
    publisher = EventPublisher(boto3.client("events"), ledger=ledger)
    run = f"unmarked{refusals}-000000000000"
    detail = {"run_id": run, "dataset": "unmarked", "reason": "x", "stage": "shard"}

    assert publisher.publish("Run Failed", detail, once="run-failed") is True
    assert publisher.publish("Run Failed", detail, once="run-failed") is False
    assert [e["detail-type"] for e in bus.drain()] == ["Run Failed"]
    record = json.loads(ledger.read(f"events/{run}/run-failed.json"))
    assert record["sent"] is (refusals < 3)


def test_an_event_of_no_run_is_sent_every_time_and_recorded_nowhere(bucket, bus):
    """A refusal that belongs to no run (a CSV outside any dataset's folder) has no run to
    record it under: a ledger-holding publisher must neither drop the second one as a
    duplicate of the first nor write an `events/None/` record that would."""
    bus.watch("runless")
    _, publisher = _stage(bucket)
    detail = {"run_id": None, "dataset": "runless", "reason": "x", "stage": "shard"}
    assert publisher.publish("Input Rejected", detail, once=None) is True
    assert publisher.publish("Input Rejected", detail, once=None) is True
    assert [e["detail-type"] for e in bus.drain()] == ["Input Rejected"] * 2
    assert _keys(bucket, "events/") == []


def test_an_event_of_a_run_must_be_named(bucket, bus):
    """Without a name the announcement could not be recorded, and a re-delivery would send
    it again: refused before anything is sent."""
    bus.watch("unnamed")
    _, publisher = _stage(bucket)
    detail = {"run_id": "unnamed-0123456789ab", "dataset": "unnamed", "reason": "x"}
    with pytest.raises(ValueError, match="needs a name"):
        publisher.publish("Run Failed", detail, once=None)
    assert bus.drain() == []


def test_a_read_names_the_version_it_wants(bucket, tmp_path):
    """A run reads the inputs it was named after, or learns that they were replaced."""
    for storage in (S3Storage(boto3.client("s3"), bucket), DiskStorage(tmp_path)):
        first = storage.write("raw/v/calendar.csv", b"first")
        assert storage.read("raw/v/calendar.csv", etag=first) == b"first"
        storage.write("raw/v/calendar.csv", b"second")
        with pytest.raises(ObjectChangedError, match=f"replaced after this run began.*{first}"):
            storage.read("raw/v/calendar.csv", etag=first)
        assert storage.read("raw/v/calendar.csv") == b"second"


def test_an_input_replaced_during_the_run_fails_it_with_the_reason(
    bucket, load_function, small_m5, bus
):
    from tests.unit.test_handlers import _run_started, _training_event, _write_predictions

    run = _run_started(bucket, load_function, small_m5, bus, "replaced")
    _write_predictions(bucket, run, pd.read_csv(small_m5 / SALES_FILE))
    calendar = (small_m5 / CALENDAR_FILE).read_bytes()
    boto3.client("s3").put_object(
        Bucket=bucket, Key=f"raw/replaced/{CALENDAR_FILE}", Body=calendar + b"\n"
    )

    result = load_function("AssembleForecastFunction").invoke(
        _training_event(bucket, run, "sagemaker_transform_completed")
    )

    assert result["submission"] is None
    (failed,) = bus.drain()
    assert failed["detail-type"] == "Run Failed"
    assert failed["detail"]["stage"] == "assemble_forecast"
    assert f"raw/replaced/{CALENDAR_FILE} was replaced" in failed["detail"]["reason"]
    assert _keys(bucket, f"runs/{run}/forecast/") == []


def test_an_input_replaced_while_the_shard_step_reads_leaves_it_to_the_newer_event(
    bucket, small_m5, bus
):
    class ReplacedAfterHead(S3Storage):
        def head(self, key: str) -> ObjectHead | None:  # the calendar HEAD saw, since replaced
            head = super().head(key)
            return replace(head, etag="0" * 32) if head and key.endswith(CALENDAR_FILE) else head

    bus.watch("raced")
    _upload(bucket, "raced", small_m5)
    storage = ReplacedAfterHead(boto3.client("s3"), bucket)
    publisher = EventPublisher(boto3.client("events"), ledger=storage)

    outcome = shard_dataset(storage, publisher, f"raw/raced/{SALES_FILE}")

    assert outcome.status == "superseded"
    assert _keys(bucket, "runs/") == [] and bus.drain() == []


def _settings_changed_while_read(
    bucket: str, small_m5, dataset: str, change: Callable[[str], None]
) -> tuple[S3Storage, EventPublisher, str]:
    """Upload the dataset with m5flow.json (min_lags 28 alone), and a storage that does
    `change(key)` to the settings as the shard step reads them: (storage, publisher, key)."""
    settings = f"raw/{dataset}/m5flow.json"
    boto3.client("s3").put_object(Bucket=bucket, Key=settings, Body=b'{"min_lags": [28]}')
    _upload(bucket, dataset, small_m5)

    class SettingsChangedWhileRead(S3Storage):
        def read(self, key: str, *, etag: str | None = None) -> bytes:
            if key == settings and etag is not None:
                change(key)
            return super().read(key, etag=etag)

    storage = SettingsChangedWhileRead(boto3.client("s3"), bucket)
    return storage, EventPublisher(boto3.client("events"), ledger=storage), settings


def test_settings_replaced_while_the_shard_step_reads_start_the_run_with_them(
    bucket, load_function, small_m5, bus
):
    """m5flow.json's own upload starts nothing, so the event that was reading the old one
    starts the run with the new one instead of leaving it to an event that will not."""
    replaced: list[str] = []

    def replace_once(key: str) -> None:  # the user's corrected settings land now
        if not replaced:
            replaced.append(key)
            boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=b'{"min_lags": [14, 28]}')

    bus.watch("resettled")
    storage, publisher, settings = _settings_changed_while_read(
        bucket, small_m5, "resettled", replace_once
    )

    outcome = shard_dataset(storage, publisher, f"raw/resettled/{SALES_FILE}")
    settings_event = load_function("ShardFunction").invoke(_created(bucket, settings))

    assert replaced and (outcome.status, settings_event["status"]) == ("started", "ignored")
    (started,) = bus.drain()
    assert started["detail-type"] == "Run Started"
    # the settings now in the bucket
    assert started["detail"]["models"] == ["h14", "h28", "r1", "h14-bt", "h28-bt"]


def test_settings_deleted_while_the_shard_step_reads_start_the_run_without_them(
    bucket, small_m5, bus
):
    def delete(key: str) -> None:  # the user took them back
        boto3.client("s3").delete_object(Bucket=bucket, Key=key)

    bus.watch("unsettled")
    storage, publisher, _ = _settings_changed_while_read(bucket, small_m5, "unsettled", delete)

    assert shard_dataset(storage, publisher, f"raw/unsettled/{SALES_FILE}").status == "started"
    (started,) = bus.drain()
    assert started["detail"]["models"] == [  # the defaults
        "h7", "h14", "h21", "h28", "r1", "h7-bt", "h14-bt", "h21-bt", "h28-bt"
    ]  # fmt: skip


def _killed_then_retried(monkeypatch, step) -> None:
    """Run `step` with its sender killed between the ledger's record and PutEvents (a
    Lambda timeout: no except runs), then again as Lambda's retry a minute later."""
    from m5flow import notifications

    with killed_at_put_events(monkeypatch, EventPublisher):
        step()
    later = notifications.time.time() + notifications.ABANDONED_AFTER + 1
    monkeypatch.setattr(notifications.time, "time", lambda: later)
    step()


def test_a_refusal_whose_sender_died_is_sent_by_the_retry(bucket, small_m5, bus, monkeypatch):
    bus.watch("killed-refusal")
    _upload(bucket, "killed-refusal", small_m5)
    boto3.client("s3").put_object(
        Bucket=bucket, Key=f"raw/killed-refusal/{CALENDAR_FILE}", Body=b"not,a,calendar\n1,2,3\n"
    )
    storage, publisher = _stage(bucket)
    outcomes = []

    _killed_then_retried(
        monkeypatch,
        lambda: outcomes.append(
            shard_dataset(storage, publisher, f"raw/killed-refusal/{SALES_FILE}").status
        ),
    )

    assert outcomes == ["rejected"]  # the retry's: refused before, and sent now
    assert [e["detail-type"] for e in bus.drain()] == ["Input Rejected"]
    assert shard_dataset(storage, publisher, f"raw/killed-refusal/{SALES_FILE}").status == (
        "refused"
    )
    assert bus.drain() == []


def test_a_second_upload_refusal_whose_sender_died_is_sent_by_the_retry(
    bucket, small_m5, bus, monkeypatch
):
    bus.watch("killed-again")
    _upload(bucket, "killed-again", small_m5)
    storage, publisher = _stage(bucket)
    key = f"raw/killed-again/{SALES_FILE}"
    assert shard_dataset(storage, publisher, key).status == "started"
    bus.drain()
    _upload(bucket, "killed-again", small_m5)  # the same files again

    outcomes = []
    _killed_then_retried(
        monkeypatch, lambda: outcomes.append(shard_dataset(storage, publisher, key).status)
    )

    assert outcomes == ["rejected"]  # the retry's: it sent the refusal
    (again,) = bus.drain()
    assert again["detail-type"] == "Input Rejected"
    assert "these files already made run" in again["detail"]["reason"]


def test_the_same_files_in_two_stacks_name_different_jobs():
    """SageMaker names are per account and region; buckets are per stack."""
    from m5flow import naming

    etags = {name: f"etag-{name}" for name in INPUT_FILES}
    staging = naming.run_id("demo", etags, "s3://staging-data/")
    production = naming.run_id("demo", etags, "s3://production-data/")
    assert staging != production
    assert naming.job_name(staging, "h7") != naming.job_name(production, "h7")
    assert staging == naming.run_id("demo", dict(reversed(etags.items())), "s3://staging-data/")


@pytest.mark.parametrize(
    "names",
    [("store a", "store_a"), ("日本", "データ"), ("x" * 40 + "-spring", "x" * 40 + "-autumn")],
)
def test_the_same_files_in_two_datasets_make_two_runs(names):
    """Names alike once sanitised and cut short: the second was dropped as a duplicate."""
    from m5flow import naming

    etags = {name: f"etag-{name}" for name in INPUT_FILES}
    first, second = (naming.run_id(name, etags, "s3://data/") for name in names)
    assert first != second


def test_a_long_dataset_name_leaves_each_model_its_own_job_name():
    """Cut at SageMaker's 63 characters without room for the model, every model of a run
    would share one job name, and the second would pass for the first, already started."""
    from m5flow import naming

    etags = {name: f"etag-{name}" for name in INPUT_FILES}
    run = naming.run_id("x" * 80, etags, "s3://data/")
    names = {model: naming.job_name(run, model) for model in ("h7", "h14", "h21", "h28")}
    assert all(len(name) <= 63 and name.endswith(f"-{model}") for model, name in names.items())
    assert len(set(names.values())) == 4


def test_names_neither_start_nor_end_with_a_dash():
    """SageMaker's names are [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}."""
    from m5flow import naming

    assert naming.sanitize("--store a--") == "store-a"
    run = naming.run_id("_june_", {name: f"etag-{name}" for name in INPUT_FILES}, "s3://d/")
    assert run.startswith("june-")


def test_an_entry_refused_in_a_successful_answer_is_withdrawn_too(bucket, bus):
    """PutEvents answers 200 with FailedEntryCount for an entry it refuses (throttled,
    malformed): taken for sent, the record would stay and the event be lost for good."""
    storage = S3Storage(boto3.client("s3"), bucket)
    publisher = EventPublisher(boto3.client("events"), ledger=storage)
    detail = {"run_id": "entry-000000000000", "dataset": "entry", "reason": "x"}
    with pytest.raises(RuntimeError, match="EventBridge refused"):
        # moto refuses an entry without a DetailType, in the answer, as AWS does
        publisher.publish("", detail, once="refused-entry")  # type: ignore[arg-type]
    assert _keys(bucket, "events/entry-000000000000/") == []


@pytest.mark.parametrize("resend_as_recorded", [False, True])
def test_an_announcement_whose_sender_died_is_sent_by_the_retry(
    bucket, bus, monkeypatch, resend_as_recorded
):
    """The ledger record is written before PutEvents: a sender killed in between must not
    silence the event for good."""
    from m5flow import notifications

    bus.watch("died")
    bus.drain()
    _, publisher = _stage(bucket)
    detail = {"run_id": "died-000000000000", "dataset": "died", "reason": "x", "stage": "shard"}

    with killed_at_put_events(monkeypatch, publisher):  # not refused: the record stays unsent
        publisher.publish("Run Failed", detail, once="run-failed-x")

    # A concurrent delivery, moments later, leaves it to the sender it presumes alive.
    assert publisher.publish("Run Failed", detail, once="run-failed-x") is False
    assert publisher.settle("died-000000000000", "run-failed-x") == "announced"  # not resent
    # Lambda's retry, a minute later, finds it abandoned and sends it, as recorded.
    later = notifications.time.time() + notifications.ABANDONED_AFTER + 1
    monkeypatch.setattr(notifications.time, "time", lambda: later)
    if resend_as_recorded:
        assert publisher.settle("died-000000000000", "run-failed-x") == "resent"
    else:
        assert publisher.publish("Run Failed", detail, once="run-failed-x") is True
    assert publisher.publish("Run Failed", detail, once="run-failed-x") is False
    assert publisher.settle("died-000000000000", "run-failed-x") == "announced"
    (sent,) = bus.drain()
    assert sent["detail-type"] == "Run Failed" and sent["detail"] == as_sent("Run Failed", detail)


def test_a_write_can_name_the_version_it_replaces(bucket, tmp_path):
    for storage in (S3Storage(boto3.client("s3"), bucket), DiskStorage(tmp_path)):
        first = storage.write("events/r/x.json", b"first")
        second = storage.write("events/r/x.json", b"second", if_match=first)
        with pytest.raises(ObjectChangedError, match=f"changed since ETag {first}"):
            storage.write("events/r/x.json", b"late", if_match=first)
        assert storage.read("events/r/x.json", etag=second) == b"second"
        with pytest.raises(ObjectMissingError):
            storage.write("events/r/absent.json", b"x", if_match=first)


def test_retries_racing_for_an_abandoned_announcement_send_it_once(bucket, bus, monkeypatch):
    from m5flow import notifications

    bus.watch("race")
    bus.drain()
    _, publisher = _stage(bucket)
    detail = {"run_id": "race-000000000000", "dataset": "race"}
    record = {"detail-type": "Forecast Ready", "detail": detail, "sent": False, "recorded": 0.0}
    publisher.ledger.write(
        notifications.ledger_key("race-000000000000", "forecast-ready"),
        json.dumps(record).encode(),
    )

    with ThreadPoolExecutor(max_workers=4) as pool:
        sent = list(pool.map(
            lambda _: publisher.settle("race-000000000000", "forecast-ready"), range(4)
        ))  # fmt: skip

    assert sorted(sent) == ["announced", "announced", "announced", "resent"]
    assert [e["detail"] for e in bus.drain()] == [detail]
    assert publisher.settle("race-000000000000", "forecast-ready") == "announced"


def test_a_slow_sender_refused_after_a_takeover_leaves_the_sent_record(bucket, bus, monkeypatch):
    from m5flow import notifications

    bus.watch("slow")
    bus.drain()
    _, slow = _stage(bucket)
    _, retry = _stage(bucket)
    detail = {"run_id": "slow-000000000000", "dataset": "slow"}
    later = notifications.time.time() + notifications.ABANDONED_AFTER + 1

    def overtaken_then_refused(detail_type, event_detail) -> None:
        # While the slow sender waits on PutEvents, a retry finds its record abandoned and
        # sends the event; then EventBridge refuses the slow sender (a real refusal: moto's
        # EventBridge has no bus of that name).
        monkeypatch.setattr(notifications.time, "time", lambda: later)
        assert retry.settle("slow-000000000000", "forecast-ready") == "resent"
        slow.bus_name = "no-such-bus"
        EventPublisher._put(slow, detail_type, event_detail)

    monkeypatch.setattr(slow, "_put", overtaken_then_refused)
    with pytest.raises(ClientError, match="Event bus no-such-bus does not exist"):
        slow.publish("Forecast Ready", detail, once="forecast-ready")

    assert retry.settle("slow-000000000000", "forecast-ready") == "announced"  # not withdrawn
    assert [e["detail"] for e in bus.drain()] == [as_sent("Forecast Ready", detail)]
