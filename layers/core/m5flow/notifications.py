"""The events m5flow emits on EventBridge (`source: m5flow`), and the adapter that sends them.

Every detail carries `run_id` and `dataset`, so a subscriber can follow one run with a single
rule; failures carry the `stage` that failed and a human-readable `reason`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

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


class EventPublisher:
    """Puts m5flow events on an EventBridge bus through a boto3 `events` client."""

    def __init__(self, client: Any, bus_name: str = "default") -> None:
        self.client = client
        self.bus_name = bus_name

    def publish(self, detail_type: DetailType, detail: Mapping[str, Any]) -> None:
        """Send one event; raise if EventBridge did not accept it (so Lambda retries)."""
        if "run_id" not in detail or "dataset" not in detail:
            raise ValueError(f"{detail_type} detail must carry run_id and dataset: {detail}")
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
