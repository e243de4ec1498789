"""Where the pipeline reads and writes objects: an S3 bucket, or a folder on disk.

The shard step and the forecast assembly are written once against `Storage`; the Lambda
handlers use `S3Storage`, and `m5flow shard DATA_DIR OUT_DIR` uses `DiskStorage`.
"""

from __future__ import annotations

import abc
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from m5flow.exceptions import M5flowError


class AlreadyExistsError(M5flowError):
    """Raised by a conditional write when the object is already there."""


class ObjectMissingError(M5flowError):
    """Raised when an object that should be there is not."""


class ObjectChangedError(M5flowError):
    """Raised by a read that names an ETag when the object has been replaced since."""


@dataclass(frozen=True)
class ObjectHead:
    """What a HEAD request tells of an object."""

    etag: str
    size: int
    modified: float  # POSIX seconds (S3: whole seconds)
    version: str | None  # None on an unversioned bucket or a folder


class Storage(abc.ABC):
    """Keys are '/'-separated paths, as in S3."""

    @abc.abstractmethod
    def uri(self, key: str) -> str:
        """Where `key` is, for people and events: s3://bucket/key, or a path."""

    @abc.abstractmethod
    def read(self, key: str, *, etag: str | None = None) -> bytes:
        """The object's bytes; with `etag`, only if it is still that version of it.

        A run is named after its inputs' ETags, so what it reads must be those versions:
        a file replaced in between belongs to another run.
        """

    @abc.abstractmethod
    def write(
        self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None
    ) -> str:
        """Write `body` under `key`; return its ETag. `if_absent`: refuse to overwrite
        (AlreadyExistsError); `if_match`: overwrite only that version (ObjectChangedError,
        or ObjectMissingError when the object is gone)."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove `key` (on a versioned bucket: hide it behind a delete marker)."""

    @abc.abstractmethod
    def head(self, key: str) -> ObjectHead | None:
        """The object's ETag, size, time written and version, or None when there is none."""

    @abc.abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Return the keys under `prefix`, sorted."""

    def uploading(self, key: str) -> bool:
        """Whether an upload of `key` has begun and not yet finished (S3: a multipart
        upload in progress; a folder has none)."""
        return False

    def etag(self, key: str) -> str | None:
        """Return the object's ETag, or None when there is no such object."""
        head = self.head(key)
        return None if head is None else head.etag


class S3Storage(Storage):
    """One S3 bucket through a boto3 client (the endpoint comes from the environment)."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def read(self, key: str, *, etag: str | None = None) -> bytes:
        extra = {"IfMatch": f'"{etag}"'} if etag else {}
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key, **extra)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            raise ObjectMissingError(f"{self.uri(key)} does not exist") from None
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "PreconditionFailed":
                raise ObjectChangedError(_changed(self.uri(key), etag)) from None
            raise

    def write(
        self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None
    ) -> str:
        extra = {"IfNoneMatch": "*"} if if_absent else {}
        if if_match:
            extra["IfMatch"] = f'"{if_match}"'
        try:
            response = self.client.put_object(Bucket=self.bucket, Key=key, Body=body, **extra)
        except self.client.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404") and if_match:
                raise ObjectMissingError(f"{self.uri(key)} does not exist") from None
            if code in ("PreconditionFailed", "ConditionalRequestConflict"):
                if if_match:
                    changed = f"{self.uri(key)} changed since ETag {if_match}"
                    raise ObjectChangedError(changed) from None
                raise AlreadyExistsError(f"{self.uri(key)} already exists") from None
            raise
        return str(response["ETag"]).strip('"')

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def head(self, key: str) -> ObjectHead | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        version = head.get("VersionId")
        return ObjectHead(
            etag=str(head["ETag"]).strip('"'),
            size=int(head["ContentLength"]),
            modified=float(head["LastModified"].timestamp()),
            version=None if version in (None, "null") else str(version),  # "null": unversioned
        )

    def uploading(self, key: str) -> bool:
        # The exact key sorts first under its own prefix: the first page holds it.
        listed = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
        return any(upload["Key"] == key for upload in listed.get("Uploads", []))

    def list(self, prefix: str) -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        return sorted(
            item["Key"]
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
            for item in page.get("Contents", [])
        )


class DiskStorage(Storage):
    """A folder standing in for a bucket; ETags are content hashes."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()  # its uri names runs: one spelling per folder

    def uri(self, key: str) -> str:
        return str(self.root / key)

    def read(self, key: str, *, etag: str | None = None) -> bytes:
        path = self.root / key
        if not path.is_file():
            raise ObjectMissingError(f"{path} does not exist")
        body = path.read_bytes()
        if etag and _md5(body) != etag:
            raise ObjectChangedError(_changed(str(path), etag))
        return body

    def write(
        self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None
    ) -> str:
        path = self.root / key
        if if_match:  # one process writes a folder (the CLI): a check before is enough
            if not path.is_file():
                raise ObjectMissingError(f"{path} does not exist")
            if _md5(path.read_bytes()) != if_match:
                raise ObjectChangedError(f"{path} changed since ETag {if_match}")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with path.open("xb" if if_absent else "wb") as handle:
                handle.write(body)
        except FileExistsError:
            raise AlreadyExistsError(f"{path} already exists") from None
        return _md5(body)

    def delete(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)

    def head(self, key: str) -> ObjectHead | None:
        path = self.root / key
        if not path.is_file():
            return None
        with path.open("rb") as handle:  # streamed: an input may be hundreds of MB
            digest = hashlib.file_digest(handle, lambda: hashlib.md5(usedforsecurity=False))
        stat = path.stat()  # a folder keeps no versions
        return ObjectHead(digest.hexdigest(), stat.st_size, stat.st_mtime, None)

    def list(self, prefix: str) -> list[str]:
        return sorted(
            str(p.relative_to(self.root)) for p in self.root.glob("**/*")
            if p.is_file() and str(p.relative_to(self.root)).startswith(prefix)
        )  # fmt: skip


def _changed(where: str, etag: str | None) -> str:
    return (
        f"{where} was replaced after this run began from ETag {etag}; "
        "the new version makes a run of its own"
    )


def _md5(body: bytes) -> str:
    return hashlib.md5(body, usedforsecurity=False).hexdigest()
