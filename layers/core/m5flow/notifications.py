"""The events m5flow emits on EventBridge (`source: m5flow`), and the adapter that sends them.

Every detail carries `run_id` and `dataset`, so a subscriber can follow one run with a single
rule, and a `summary`: the event in one sentence (the notification e-mail's text). Failures
carry the `stage` that failed and a human-readable `reason`.

S3, EventBridge and SageMaker all deliver at least once, so the same step may run twice, even
at the same time. Each announcement therefore has a name within its run, and is recorded in
the bucket under `events/<run>/<name>.json` by a conditional write before it is sent: only
the delivery that wins the write announces it. The record doubles as the run's history.

The record says "not yet sent" until EventBridge has accepted the event. A delivery that
died in between (a Lambda timeout, a crash) leaves it so; a retry that finds such a record
older than `ABANDONED_AFTER` sends the event itself, so an announcement is never lost, at
the price of a rare duplicate if the first sender was only slow, or sent the event and then
could not mark its record after three tries.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Literal

from aws_lambda_powertools import Logger

from m5flow.hyperparameters import overrides_said
from m5flow.storage import AlreadyExistsError, ObjectChangedError, ObjectMissingError, Storage
from m5flow.wording import cut

logger = Logger(child=True)
_MARK_ATTEMPTS = 3  # writes of a sent event's record before giving up (0.5 s, then 1 s apart)

SOURCE = "m5flow"
DetailType = Literal[
    "Run Started",
    "Input Rejected",
    "Training Started",
    "Transform Started",
    "Transform Waiting",
    "Backtest Lost",
    "Forecast Ready",
    "Run Failed",
]
TERMINAL: tuple[DetailType, ...] = ("Forecast Ready", "Input Rejected", "Run Failed")


class Stage(StrEnum):
    """The `stage` of an `Input Rejected`, `Backtest Lost` or `Run Failed`: what failed, in one
    vocabulary so that a subscriber's rule on `stage` sees every failure of it.

    The four pipeline steps are named after their functions; `training` and `transform` are
    the SageMaker jobs between them, which fail on their own.
    """

    SHARD = "shard"
    START_TRAINING = "start_training"
    TRAINING = "training"
    PUBLISH_MODEL = "publish_model"
    TRANSFORM = "transform"
    ASSEMBLE_FORECAST = "assemble_forecast"


FORECAST_READY = "forecast-ready"  # the run's `Forecast Ready`, by its name in the ledger
EVENTS_PREFIX = "events/"
# A sender is slow after this many seconds without EventBridge's answer, and presumed dead:
# far above a PutEvents call, below Lambda's first retry of an asynchronous invocation (60 s).
ABANDONED_AFTER = 30.0


def ledger_key(run_id: str, name: str) -> str:
    """Where the announcement `name` of a run is recorded."""
    return f"{EVENTS_PREFIX}{run_id}/{name}.json"


class EventPublisher:
    """Puts m5flow events on an EventBridge bus through a boto3 `events` client.

    With a `ledger` (the data bucket), each announcement of a run is sent at most once per
    name. An event that belongs to no run (`run_id` None) has nowhere to be recorded: it is
    always sent, and a re-delivered trigger may repeat it.
    """

    def __init__(
        self, client: Any, bus_name: str = "default", ledger: Storage | None = None
    ) -> None:
        self.client = client
        self.bus_name = bus_name
        self.ledger = ledger

    def publish(
        self, detail_type: DetailType, detail: Mapping[str, Any], *, once: str | None
    ) -> bool:
        """Send one event unless an earlier delivery already sent the one named `once`.

        `once` names the announcement within its run; an event of no run (`run_id` None)
        has no record, so its `once` is not read (None where no run can be meant). Returns
        True when this call sent it. Raises if EventBridge did not accept it (the record is
        withdrawn first, so Lambda's retry sends it again).
        """
        if "run_id" not in detail or "dataset" not in detail:
            raise ValueError(f"{detail_type} detail must carry run_id and dataset: {detail}")
        if detail["run_id"] is not None and once is None:
            raise ValueError(f"{detail_type} of run {detail['run_id']} needs a name (`once`)")
        detail = {**detail, "summary": summary(detail_type, detail)}
        if self.ledger is None or once is None:
            self._put(detail_type, detail)
            return True
        key = ledger_key(str(detail["run_id"]), once)
        record = {"detail-type": detail_type, "detail": dict(detail), "sent": False,
                  "recorded": time.time()}  # fmt: skip
        try:
            etag = self.ledger.write(key, _encoded(record), if_absent=True)
        except AlreadyExistsError:
            claimed = self._claim_abandoned(key, self._read(key), record)
            if claimed is None:
                return False
            etag = claimed[0]
        self._send(key, record, etag)
        return True

    def settle(self, run_id: str, once: str) -> Literal["absent", "announced", "resent"]:
        """Where the announcement `once` of the run stands, finishing it if need be, from one
        read of its record: never made, sent or being sent, or resent by this call for a
        killed sender (or taken over by another retry: then "announced")."""
        if self.ledger is None:
            return "absent"
        key = ledger_key(run_id, once)
        read = self._read(key)
        if read is None:
            return "absent"
        if not _abandoned(read[1]):
            return "announced"
        claimed = self._claim_abandoned(key, read, {**read[1], "recorded": time.time()})
        if claimed is None:
            return "announced"
        self._send(key, claimed[1], claimed[0])
        return "resent"

    def record(self, run_id: str, once: str) -> dict[str, Any] | None:
        """The record of the run's announcement `once` (`detail`, `recorded`: when, `sent`);
        None without one, or without a ledger."""
        if self.ledger is None:
            return None
        read = self._read(ledger_key(run_id, once))
        return None if read is None else read[1]

    def recorded(self, run_id: str, name_prefix: str) -> list[dict[str, Any]]:
        """The records of the run's announcements whose names start with `name_prefix`
        (`detail`, `recorded`: when, `sent`), none without a ledger."""
        if self.ledger is None:
            return []
        keys = self.ledger.list(ledger_key(run_id, name_prefix).removesuffix(".json"))
        reads = (self._read(key) for key in keys)
        return [read[1] for read in reads if read is not None]

    def _send(self, key: str, record: Mapping[str, Any], etag: str | None) -> None:
        """Put the recorded event on the bus, then mark its record sent. If EventBridge
        refuses it, withdraw the record, unless a retry has taken it over meanwhile."""
        assert self.ledger is not None
        try:
            self._put(record["detail-type"], record["detail"])
        except Exception:
            if self.ledger.etag(key) == etag:
                self.ledger.delete(key)
            raise
        # The event is out: failing the step now would have Lambda's retry, a minute on,
        # find the record unsent and long claimed, and send the event again. So the mark is
        # tried a few times, then given up with a log line; a step that reads the record
        # later may then still send it a second time (the rare duplicate the module allows).
        for attempt in range(_MARK_ATTEMPTS):
            try:
                self.ledger.write(key, _encoded({**record, "sent": True}))
                return
            except Exception:
                if attempt == _MARK_ATTEMPTS - 1:
                    logger.exception("event sent; its record not marked", extra={"record": key})
                else:
                    time.sleep(0.5 * 2**attempt)

    def _read(self, key: str) -> tuple[str, dict[str, Any]] | None:
        """The record at `key` and its ETag; None when there is none."""
        assert self.ledger is not None
        for _ in range(3):  # a record claimed or marked sent between the HEAD and the GET
            etag = self.ledger.etag(key)
            if etag is None:
                return None
            try:
                return etag, json.loads(self.ledger.read(key, etag=etag))
            except ObjectChangedError:
                continue
            except ObjectMissingError:  # withdrawn after a refusal: that sender retries
                return None
        return None

    def _claim_abandoned(
        self, key: str, read: tuple[str, dict[str, Any]] | None, record: Mapping[str, Any]
    ) -> tuple[str, Mapping[str, Any]] | None:
        """Replace the `read` record, if a killed sender left it unsent, with `record`; the
        conditional write (If-Match) lets one of several retries win. Returns the new
        record's ETag and the record, or None when it is not abandoned or another retry won."""
        assert self.ledger is not None
        if read is None or not _abandoned(read[1]):
            return None
        try:
            return self.ledger.write(key, _encoded(record), if_match=read[0]), record
        except (ObjectMissingError, ObjectChangedError):
            return None

    def _put(self, detail_type: DetailType, detail: Mapping[str, Any]) -> None:
        response = self.client.put_events(
            Entries=[
                {
                    "Source": SOURCE,
                    "DetailType": detail_type,
                    "Detail": json.dumps(detail, default=str),
                    "EventBusName": self.bus_name,
                }
            ]
        )
        if response.get("FailedEntryCount"):
            raise RuntimeError(f"EventBridge refused {detail_type}: {response['Entries']}")


def _abandoned(record: Mapping[str, Any]) -> bool:
    """Whether a record was claimed by a sender that never finished (records from before
    the "sent" flag count as sent)."""
    if record.get("sent", True):
        return False
    return time.time() - float(record.get("recorded", 0.0)) > ABANDONED_AFTER


def _encoded(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, default=str).encode()


# ------------------------------------------------------------------- the event in one line

SUMMARY_CHARS = 1_000  # the e-mail's text; the event's other fields hold the rest
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # line breaks, tabs and the other control characters


def summary(detail_type: DetailType, detail: Mapping[str, Any]) -> str:
    """The event in one sentence a person can read: the `summary` of every detail, and the
    text of the stack's notification e-mail.

    The e-mail rule puts it into the message with an EventBridge input transformer, which
    inserts a value into its template unescaped and silently drops a message that comes out
    as invalid JSON. So the sentence holds no double quote (they become single ones), no
    backslash, no line break and no unpaired surrogate, and is cut to `SUMMARY_CHARS` (and
    the length it had). It never raises: the event matters more than its sentence.

    Example
    -------
    >>> summary("Run Failed", {"run_id": "d-1", "dataset": "d", "stage": "training",
    ...                        "reason": 'job j Failed: "eta"\\nis not a number'})
    "Run d-1 of dataset d failed at training: job j Failed: 'eta' is not a number"
    """
    try:
        text = _sentence(detail_type, detail)
    except Exception:  # a field of an unexpected type: say what is sure
        try:
            text = f"{detail_type}: run {detail.get('run_id')} of dataset {detail.get('dataset')}"
        except Exception:  # not even those can be said
            text = detail_type
    text = text.encode("utf-8", "replace").decode().replace('"', "'").replace("\\", "/")
    return cut(" ".join(_CONTROL.sub(" ", text).split()), SUMMARY_CHARS)


def _sentence(detail_type: DetailType, detail: Mapping[str, Any]) -> str:
    get = detail.get
    run, dataset = get("run_id"), get("dataset")
    if run:
        subject = f"Run {run} of dataset {dataset}"
    else:  # refused before it was a run, or a failure of no run
        subject = f"Dataset {dataset}" if dataset else "A step"
    match detail_type:
        case "Run Started":
            notices = get("notices") or []
            settings = overrides_said(get("hyperparameter_overrides") or {})
            return "; ".join([
                f"{subject} started: {_count(get('series'))} series up to day "
                f"{get('last_day')}, model(s) {', '.join(get('models') or [])} to train",
                # What was repaired or let through, before the settings a user chose.
                *([notices] if isinstance(notices, str) else notices),
                *([f"hyperparameters from m5flow.json: {settings}"] if settings else []),
            ])  # fmt: skip
        case "Training Started":
            jobs = get("training_jobs") or []
            instances = get("instances") or {}
            hosts = set(instances.values())
            if hosts in (set(), {1}):
                each = ""
            elif len(hosts) == 1:
                each = f", {hosts.pop()} instances each"
            else:
                each = f", instances per job: {', '.join(f'{j} {n}' for j, n in instances.items())}"
            on = f"on {get('instance_type')}{each}"
            if get("waited"):
                after = "after waiting for the quota"
                return f"{subject}: training job {', '.join(jobs)} started {on}, {after}"
            waiting = len(get("waiting") or [])
            wait = f"; {waiting} more wait for the quota, and start as this run's jobs end"
            return f"{subject}: {len(jobs)} training job(s) started {on}{wait if waiting else ''}"
        case "Transform Started" if get("waited"):
            said = _sentence(detail_type, {**detail, "waited": False})
            return f"{said}, after waiting for the quota"
        case "Transform Started" if get("pass") == 1:  # the recursive model's first pass
            return (
                f"{subject}: model {get('model')} trained; pass 1 of {get('passes')} of its "
                f"recursive forecast, batch transform {get('transform_job')}, started"
            )
        case "Transform Started" if isinstance(number := get("pass"), int) and number > 1:
            return (
                f"{subject}: model {get('model')}, pass {number} of {get('passes')} "
                f"(reads pass {number - 1}'s forecast as the sales of the days it "
                f"forecasts): batch transform {get('transform_job')} started"
            )
        case "Transform Started":
            return (
                f"{subject}: model {get('model')} trained; its batch transform "
                f"{get('transform_job')} started"
            )
        case "Transform Waiting":
            done = f", pass {get('pass')} of {get('passes')}" if get("pass") else " trained"
            return f"{subject}: model {get('model')}{done}: {get('reason')}"
        case "Backtest Lost":
            return (
                f"{subject}: its backtest is lost, the forecast goes on without a backtest "
                f"score; backtest twin {get('model')} failed at {get('stage')}: {get('reason')}"
            )
        case "Forecast Ready":
            headline = get("headline") or {}
            return (
                f"{subject}: the forecast of {_count(headline.get('series'))} series is ready, "
                f"{_scored(headline)}; report {get('report')}"
            )
        case "Input Rejected":
            reasons = get("reasons") or [get("reason")]
            refused = f"was refused, {len(reasons)} problem(s): {get('reason')}"
            if not run and not dataset and get("key"):  # a file outside any dataset's folder
                return f"The upload {get('key')} {refused}"
            upload = f"the upload {get('key')}" if get("key") else "its upload"
            return f"{subject}: {upload} {refused}"
        case "Run Failed":
            where = ""  # of no run: what failed, and on what if it is known
            if not run and get("function"):
                on = f", on {get('trigger')}" if get("trigger") else ""
                where = f" ({get('function')}{on})"
            return f"{subject} failed at {get('stage')}{where}: {get('reason')}"
    return f"{subject}: {detail_type}"


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def _scored(headline: Mapping[str, Any]) -> str:
    """How `Forecast Ready`'s headline says the forecast scored, and why not if it did not:
    a truth file that could not be used is said, not taken for no truth."""
    problems = headline.get("score_problems") or []
    if "wrmsse" in headline:
        said = f"WRMSSE {headline['wrmsse']:.4f} against the uploaded truth"
    elif "backtest_wrmsse" in headline:
        missing = "" if problems else " (no truth was uploaded)"
        models = headline.get("backtest_models")  # when not every model forecast it
        of = f" of {', '.join(models)} alone" if models else ""
        said = f"backtest WRMSSE {headline['backtest_wrmsse']:.4f}{of}{missing}"
    else:  # the problem says "not scored: ..." itself
        return problems[0] if problems else "not scored"
    return f"{said}; {problems[0]}" if problems else said
