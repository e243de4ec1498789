"""The events m5flow emits on EventBridge (`source: m5flow`), and the adapter that sends them.

Every detail carries `run_id` and `dataset`, so a subscriber can follow one run with a single
rule; failures carry the `stage` that failed and a human-readable `reason`.

S3, EventBridge and SageMaker all deliver at least once, so the same step may run twice, even
at the same time. Each announcement therefore has a name within its run, and is recorded in
the bucket under `events/<run>/<name>.json` by a conditional write before it is sent: only
the delivery that wins the write announces it. The record doubles as the run's history.

The record says "not yet sent" until EventBridge has accepted the event. A delivery that
died in between (a Lambda timeout, a crash) leaves it so; a retry that finds such a record
older than `ABANDONED_AFTER` sends the event itself, so an announcement is never lost, at
the price of a rare duplicate if the first sender was only slow.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, Literal

from m5flow.storage import AlreadyExistsError, ObjectMissingError, Storage

SOURCE = "m5flow"
DetailType = Literal[
    "Run Started",
    "Input Rejected",
    "Training Started",
    "Transform Started",
    "Forecast Ready",
    "Run Failed",
]
TERMINAL: tuple[DetailType, ...] = ("Forecast Ready", "Input Rejected", "Run Failed")


EVENTS_PREFIX = "events/"
# A sender is slow after this many seconds without EventBridge's answer, and presumed dead:
# far above a PutEvents call, below Lambda's first retry of an asynchronous invocation (60 s).
ABANDONED_AFTER = 30.0


def ledger_key(run_id: str, name: str) -> str:
    """Where the announcement `name` of a run is recorded."""
    return f"{EVENTS_PREFIX}{run_id}/{name}.json"


class EventPublisher:
    """Puts m5flow events on an EventBridge bus through a boto3 `events` client.

    With a `ledger` (the data bucket), each announcement is sent at most once per name.
    """

    def __init__(
        self, client: Any, bus_name: str = "default", ledger: Storage | None = None
    ) -> None:
        self.client = client
        self.bus_name = bus_name
        self.ledger = ledger

    def publish(self, detail_type: DetailType, detail: Mapping[str, Any], *, once: str) -> bool:
        """Send one event unless an earlier delivery already sent the one named `once`.

        Returns True when this call sent it. Raises if EventBridge did not accept it (the
        record is withdrawn first, so Lambda's retry sends it again).
        """
        if "run_id" not in detail or "dataset" not in detail:
            raise ValueError(f"{detail_type} detail must carry run_id and dataset: {detail}")
        key = ledger_key(str(detail["run_id"]), once)
        record = {"detail-type": detail_type, "detail": dict(detail), "sent": False,
                  "recorded": time.time()}  # fmt: skip
        if self.ledger is not None:
            try:
                self.ledger.write(key, _encoded(record), if_absent=True)
            except AlreadyExistsError:
                if not self._abandoned(key):
                    return False
        try:
            self._put(detail_type, detail)
        except Exception:
            if self.ledger is not None:
                self.ledger.delete(key)
            raise
        if self.ledger is not None:
            self.ledger.write(key, _encoded({**record, "sent": True}))
        return True

    def announced(self, run_id: str, once: str) -> bool:
        """Whether the announcement `once` of the run was sent, or is being sent right now."""
        key = ledger_key(run_id, once)
        return (
            self.ledger is not None
            and self.ledger.etag(key) is not None
            and not (self._abandoned(key))
        )

    def resend_abandoned(self, run_id: str, once: str) -> bool:
        """Send the announcement `once` as recorded, if a killed sender left it unsent;
        returns whether it did. Lets a retry finish without redoing the work before it."""
        key = ledger_key(run_id, once)
        if self.ledger is None or self.ledger.etag(key) is None or not self._abandoned(key):
            return False
        record = json.loads(self.ledger.read(key))
        self._put(record["detail-type"], record["detail"])
        self.ledger.write(key, _encoded({**record, "sent": True}))
        return True

    def _abandoned(self, key: str) -> bool:
        """Whether the record at `key` was claimed by a sender that never finished."""
        assert self.ledger is not None
        try:
            record = json.loads(self.ledger.read(key))
        except ObjectMissingError:  # withdrawn after a refusal a moment ago: that one retries
            return False
        if record.get("sent", True):
            return False
        return time.time() - float(record.get("recorded", 0.0)) > ABANDONED_AFTER

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


def _encoded(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, default=str).encode()
