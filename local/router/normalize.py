"""Give moto's events the shape AWS delivers, at the boundary, so handlers only see AWS's.

moto's S3 -> EventBridge notifications differ from AWS's: a constant event id, `eTag` for
`etag`, `version-id: "null"` on unversioned buckets, the key not URL-encoded, `reason`
"ObjectCreated" instead of the API call, and an extra "Object Tags Added" event for every
plain upload. Events that went through moto's PutEvents lose their `account` on the way to
an SQS target.
"""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus


def normalize(event: dict[str, Any], account: str) -> dict[str, Any] | None:
    """Return the event as AWS would deliver it, or None for events AWS would not send."""
    event = copy.deepcopy(event)
    event.setdefault("account", account)
    if event.get("source") != "aws.s3":
        return event
    detail = event.get("detail", {})
    if event.get("detail-type") == "Object Tags Added" and detail.get("reason") == "ObjectTagging":
        return None  # moto sends this for every upload; AWS only on explicit tagging
    event["id"] = str(uuid.uuid4())
    if isinstance(event.get("time"), int | float):
        event["time"] = datetime.fromtimestamp(event["time"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    obj = detail.get("object", {})
    if "eTag" in obj:
        obj["etag"] = obj.pop("eTag")
    if obj.get("version-id") in (None, "null"):
        obj.pop("version-id", None)
    if "key" in obj:
        obj["key"] = quote_plus(obj["key"], safe="/")
    if detail.get("reason") == "ObjectCreated":
        detail["reason"] = "PutObject"
    return event
