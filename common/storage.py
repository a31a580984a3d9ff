"""Read and write `s3://bucket/key` URIs or local paths, whole or not at all.

S3 goes through boto3 with the standard AWS variables: `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_S3`
select MinIO or any S3-compatible store, credentials come from boto3's own chain (environment,
files, IRSA / workload identity). Writes are single PUTs (or completed multipart uploads) on S3
and temp-file-plus-rename on disk, so a reader never sees half an object.

Failures become `InputDataError` (the object or file does not exist) or `StorageError` (the store
cannot be reached or refused the request), each naming the URI.
"""

from __future__ import annotations

import functools
import hashlib
import mmap
import os
import tempfile
import threading
from pathlib import Path

from common.errors import InputDataError, StorageError


class AlreadyExists(StorageError):
    """A conditional write found the object already there."""


class Blob:
    """An object's bytes (or a read-only mapping of a file) and version: "etag:<etag>" on S3,
    "sha256:<hex>" on disk, computed when first asked for. `hash_in_background` computes it on a
    thread instead (hashlib releases the GIL), while the caller parses the bytes.
    """

    def __init__(self, uri: str, data: bytes | mmap.mmap, version: str | None = None):
        self.uri, self.data, self._version = uri, data, version
        self._hashing: threading.Thread | None = None

    def hash_in_background(self) -> Blob:
        if self._version is None and self._hashing is None:
            self._hashing = threading.Thread(target=self._hash, name="sha256", daemon=True)
            self._hashing.start()
        return self

    def _hash(self) -> None:
        self._version = f"sha256:{hashlib.sha256(self.data).hexdigest()}"

    @property
    def version(self) -> str:
        if self._hashing is not None:
            self._hashing.join()
        elif self._version is None:
            self._hash()
        return self._version


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise StorageError(f"{uri}: not an s3://bucket/key URI")
    return bucket, key


def join(prefix: str, *parts: str) -> str:
    """Join URI parts with '/', for s3:// and paths alike."""
    out = prefix.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


@functools.cache
def s3_client():
    import boto3
    from botocore.config import Config

    custom_endpoint = bool(os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))
    config = Config(
        # boto3 >= 1.36 adds CRC checksums to every request by default; several S3-compatible
        # stores (older MinIO, Ceph, GCS interop) reject or mangle them. Only send them when the
        # operation requires one.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"mode": "standard", "max_attempts": int(os.environ.get("AWS_MAX_ATTEMPTS", "3"))},
        connect_timeout=float(os.environ.get("S3_CONNECT_TIMEOUT", "5")),
        read_timeout=60,
        # Self-hosted stores rarely have wildcard DNS for virtual-hosted buckets.
        s3={"addressing_style": "path"} if custom_endpoint else None,
    )
    return boto3.session.Session().client("s3", config=config)


def _storage_error(uri: str, exc: Exception) -> StorageError:
    from botocore.exceptions import ClientError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        return StorageError(f"{uri}: no AWS credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)")
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = err.get("Code", "?")
        if code in ("NoSuchKey", "404", "NotFound"):
            return InputDataError(f"{uri}: no such object")
        if code == "NoSuchBucket":
            return InputDataError(f"{uri}: bucket does not exist")
        if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
            return AlreadyExists(f"{uri}: already exists (conditional write refused)")
        return StorageError(f"{uri}: S3 refused the request: {code} {err.get('Message', '')}".rstrip())
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"
    return StorageError(f"{uri}: cannot reach S3 endpoint {endpoint}: {exc}")


def _s3_call(uri: str, fn, **kwargs):
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(**kwargs)
    except (BotoCoreError, ClientError) as exc:
        raise _storage_error(uri, exc) from None


def read(uri: str, *, mapped: bool = False) -> Blob:
    """The whole object. With `mapped`, a local file is not copied: `data` is a read-only
    mapping of its pages (taken in one go), for large inputs that are only parsed. Writers that
    replace a file by renaming (as `write` does) leave a mapping of the old one intact."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        resp = _s3_call(uri, s3_client().get_object, Bucket=bucket, Key=key)
        try:
            data = resp["Body"].read()
        except Exception as exc:  # a connection dropped mid-body
            raise _storage_error(uri, exc) from None
        return Blob(uri, data, f"etag:{resp.get('ETag', '').strip(chr(34))}")
    path = Path(uri)
    try:
        data = _map(path) if mapped else path.read_bytes()
    except FileNotFoundError:
        raise InputDataError(f"{uri}: no such file") from None
    except IsADirectoryError:
        raise InputDataError(f"{uri}: is a directory, expected a file") from None
    except OSError as exc:
        raise StorageError(f"{uri}: cannot read: {exc.strerror}") from None
    return Blob(uri, data)  # versioned by its sha256


def _map(path: Path) -> mmap.mmap | bytes:
    with path.open("rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return b""  # an empty file cannot be mapped
        return mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE | getattr(mmap, "MAP_POPULATE", 0), prot=mmap.PROT_READ)


def exists(uri: str) -> bool:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            _s3_call(uri, s3_client().head_object, Bucket=bucket, Key=key)
        except InputDataError:
            return False
        return True
    return Path(uri).exists()


def write(uri: str, data: bytes, *, content_type: str = "application/octet-stream", if_absent: bool = False) -> None:
    """Write whole or not at all. `if_absent` refuses to replace an existing object (AlreadyExists)."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        extra = {"IfNoneMatch": "*"} if if_absent else {}
        _s3_call(uri, s3_client().put_object, Bucket=bucket, Key=key, Body=data, ContentType=content_type, **extra)
        return
    path = Path(uri)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            if if_absent:
                try:
                    os.link(tmp, path)  # atomic, and fails if the target exists
                except FileExistsError:
                    raise AlreadyExists(f"{uri}: already exists") from None
            else:
                os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as exc:
        raise StorageError(f"{uri}: cannot write: {exc.strerror or exc}") from None


def download_file(uri: str, dest: Path) -> None:
    """Copy a possibly large object to a local file (multipart, streamed)."""
    if not is_s3(uri):
        raise StorageError(f"{uri}: download_file is for s3:// URIs")
    bucket, key = split_s3(uri)
    _s3_call(uri, s3_client().download_file, Bucket=bucket, Key=key, Filename=str(dest))


def upload_file(src: Path, uri: str) -> None:
    """Copy a local file to `uri` whole: a completed multipart upload on S3, a rename on disk."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        _s3_call(uri, s3_client().upload_file, Filename=str(src), Bucket=bucket, Key=key)
        return
    write(uri, Path(src).read_bytes())


def list_names(prefix: str) -> list[str]:
    """Names of the objects/files directly or indirectly under `prefix`, relative to it."""
    if is_s3(prefix):
        bucket, key = split_s3(prefix)
        key = key.rstrip("/") + "/" if key else ""
        paginator = s3_client().get_paginator("list_objects_v2")
        names = []
        try:
            for page in paginator.paginate(Bucket=bucket, Prefix=key):
                names.extend(obj["Key"][len(key):] for obj in page.get("Contents", []))
        except Exception as exc:
            raise _storage_error(prefix, exc) from None
        return sorted(names)
    root = Path(prefix)
    if not root.is_dir():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
