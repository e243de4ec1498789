"""The little S3 the jobs need, through ordinary boto3 clients.

The endpoint comes from the environment (``AWS_ENDPOINT_URL`` points at moto's
server in local mode), never from here, so the same code would talk to AWS.
A fresh session per client keeps job threads from sharing boto3's default one,
which is not thread-safe to create clients from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError


def client(region: str) -> Any:
    """A new S3 client for one job thread."""
    return boto3.session.Session().client("s3", region_name=region)


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key/prefix`` -> (bucket, key prefix)."""
    rest = uri.split("://", 1)[1] if "://" in uri else uri
    bucket, _, key = rest.partition("/")
    return bucket, key


def exists(s3: Any, uri: str) -> bool:
    """Whether the object ``s3://bucket/key`` exists."""
    bucket, key = split_uri(uri)
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NoSuchBucket"):
            return False
        raise
    return True


def join_key(prefix: str, *parts: str) -> str:
    """Append parts to a key prefix with exactly one ``/`` between them."""
    key = prefix.rstrip("/")
    for part in parts:
        key = f"{key}/{part.strip('/')}" if key else part.strip("/")
    return key


def list_keys(s3: Any, uri: str) -> list[str]:
    """Object keys under an S3 prefix, sorted, folder markers (``.../``) left out.

    A missing bucket lists as empty: callers report "No S3 objects found" as AWS does.
    """
    bucket, prefix = split_uri(uri)
    keys: list[str] = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(o["Key"] for o in page.get("Contents", []) if not o["Key"].endswith("/"))
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("NoSuchBucket", "AccessDenied"):
            return []
        raise
    return sorted(keys)


def relative_key(key: str, prefix: str) -> str:
    """A key's path below the prefix it was listed under (its file name if they are equal)."""
    rel = key[len(prefix) :].lstrip("/") if key.startswith(prefix) else key
    return rel or key.rsplit("/", 1)[-1]


def download(s3: Any, bucket: str, key: str, dest: Path) -> None:
    """Download one object to ``dest``, creating folders."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    s3.download_file(bucket, key, str(dest))


def no_objects_message(uri: str, region: str, role: str) -> str:
    """AWS's wording when an input prefix holds nothing."""
    bucket, _ = split_uri(uri)
    return (
        f'No S3 objects found under S3 URL "{uri}" given in input data source. Please ensure '
        f"that the bucket exists in the selected region ({region}), that objects exist under that "
        f'S3 prefix, and that the role "{role}" has "s3:ListBucket" permissions on bucket '
        f'"{bucket}".'
    )
