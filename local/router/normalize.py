"""Give moto's events the shape AWS delivers, at the boundary, so handlers only see AWS's.

moto's S3 -> EventBridge notifications differ from AWS's: a constant event id, `eTag` for
`etag`, `version-id: "null"` on unversioned buckets, the key not URL-encoded, `reason`
"ObjectCreated" instead of the API call, an extra "Object Tags Added" event for every
plain upload, and two "Object Created" for a multipart upload (its completion also puts
the object). Events that went through moto's PutEvents lose their `account` on the way to
an SQS target.
"""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

_MULTIPART = "CompleteMultipartUpload"


class MultipartCompletions:
    """Remembers the multipart uploads already announced, to drop moto's second event."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str, str, str]] = set()

    def repeated(self, event: dict[str, Any]) -> bool:
        """True for a second "Object Created" of the same completed multipart upload."""
        detail = event.get("detail", {})
        if event.get("detail-type") != "Object Created" or detail.get("reason") != _MULTIPART:
            return False
        obj = detail.get("object", {})
        bucket = detail.get("bucket", {}).get("name", "")
        # The version tells a second upload of the same bytes (the same ETag) from a repeat;
        # on an unversioned bucket there is none, and such a second upload is dropped too.
        upload = (bucket, obj.get("key", ""), obj["etag"], obj.get("version-id", ""))
        if upload in self._seen:
            return True
        self._seen.add(upload)
        return False


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
        # A multipart upload's ETag ends in -<parts>; AWS names the call that completed it.
        multipart = "-" in str(obj.get("etag", ""))
        detail["reason"] = _MULTIPART if multipart else "PutObject"
    return event
