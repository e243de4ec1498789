"""The events m5flow emits on EventBridge (`source: m5flow`), and the adapter that sends them.

Every detail carries `run_id` and `dataset`, so a subscriber can follow one run with a single
rule; failures carry the `stage` that failed and a human-readable `reason`.

S3, EventBridge and SageMaker all deliver at least once, so the same step may run twice, even
at the same time. Each announcement therefore has a name within its run, and is recorded in
the bucket under `events/<run>/<name>.json` by a conditional write before it is sent: only
the delivery that wins the write announces it. The record doubles as the run's history.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from m5flow.storage import AlreadyExistsError, Storage

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
        if self.ledger is not None:
            record = {"detail-type": detail_type, "detail": dict(detail)}
            try:
                self.ledger.write(key, json.dumps(record, default=str).encode(), if_absent=True)
            except AlreadyExistsError:
                return False
        try:
            self._put(detail_type, detail)
        except Exception:
            if self.ledger is not None:
                self.ledger.delete(key)
            raise
        return True

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
