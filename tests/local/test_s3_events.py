"""moto's S3 notifications reach the router in the shape AWS sends them."""

from __future__ import annotations

import time
from pathlib import Path

import boto3

from m5flow_local.cloud import LocalCloud


def _s3_events(cloud: LocalCloud, last_key: str, timeout: float = 60) -> list[dict]:
    """The S3 events routed so far, once the one for `last_key` (uploaded last) is in."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = [e for e, _ in list(cloud.routed) if e.get("source") == "aws.s3"]
        if any(e["detail"]["object"]["key"] == last_key for e in events):
            return events
        time.sleep(0.2)
    raise AssertionError(f"no event for {last_key} within {timeout} s")


def test_a_multipart_upload_is_one_object_created(tmp_path: Path) -> None:
    """moto announces a completed multipart upload twice (its completion also puts the
    object); AWS once, as CompleteMultipartUpload. A second upload of the same bytes is a
    new version, and its own event."""
    big = tmp_path / "big.csv"
    big.write_bytes(b"a,b\n" + b"1,2\n" * 2_500_000)  # 10 MB: boto3 uploads it in parts
    with LocalCloud(tmp_path / "work", echo=None) as cloud:
        s3 = boto3.client("s3")
        s3.upload_file(str(big), cloud.bucket, "misc/big.csv")
        s3.upload_file(str(big), cloud.bucket, "misc/big.csv")
        s3.put_object(Bucket=cloud.bucket, Key="misc/last.csv", Body=b"a\n")
        events = _s3_events(cloud, "misc/last.csv")

    created = [(e["detail"]["object"]["key"], e["detail"]["reason"]) for e in events]
    assert created == [
        ("misc/big.csv", "CompleteMultipartUpload"),
        ("misc/big.csv", "CompleteMultipartUpload"),
        ("misc/last.csv", "PutObject"),
    ]
    versions = {e["detail"]["object"]["version-id"] for e in events[:2]}
    assert len(versions) == 2
