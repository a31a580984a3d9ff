"""Read and write `s3://bucket/key` URIs or local paths, whole or not at all.

S3 goes through boto3 with the standard AWS variables: `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_S3`
select MinIO or any S3-compatible store, credentials come from boto3's own chain (environment,
files, IRSA / workload identity). Writes are single PUTs (or completed multipart uploads) on S3
and temp-file-plus-rename on disk, so a reader never sees half an object.

Failures become `InputDataError` (the object or file does not exist) or `StorageError` (the store
cannot be reached or refused the request), each naming the URI.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import mmap
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from common import preemption
from common.errors import ConfigError, InputDataError, JobError, StorageError
from common.forked import fork_safe
from common.settings import StorageSettings, load_settings


class AlreadyExists(StorageError):
    """A conditional write found the object already there."""


class VersionChanged(StorageError):
    """A write conditional on the object's version (`if_match`) found another version there."""


class Blob:
    """An object's bytes (or a read-only mapping of a file) and version: "etag:<etag>" on S3,
    "sha256:<hex>" on disk, computed when first asked for. `hash_in_background` computes it on a
    thread instead (hashlib releases the GIL); `version_later` gives it as a function to call when
    it is needed, the hash running meanwhile.
    """

    def __init__(self, uri: str, data: bytes | mmap.mmap, version: str | None = None):
        self.uri, self.data, self._version = uri, data, version
        self._digest: _Digest | None = None

    def hash_in_background(self) -> Blob:
        if self._version is None and self._digest is None:
            self._digest = _Digest(self.data)
        return self

    def version_later(self) -> Callable[[], str]:
        """The version, as a function: a file's sha256 starts now on a thread (a reader asks for it
        once it has parsed the bytes, so the hash does not compete with the parsing). The function
        holds the version, not the bytes: a mapped file is unmapped once nothing else holds it."""
        if self._version is not None:
            return functools.partial(str, self._version)
        return self.hash_in_background()._digest

    @property
    def version(self) -> str:
        if self._version is None:
            self._version = self._digest() if self._digest is not None else _sha256(self.data)
        return self._version


def _sha256(data) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


class _Digest:
    """A sha256 version computed on a thread; calling it waits for it. The thread lets go of the
    bytes when it is done (Thread.run drops its arguments)."""

    def __init__(self, data):
        self._value: str | None = None
        # fork_safe: hashlib over a buffer holds no lock a forked decoder could need (load.py)
        self._thread = fork_safe(threading.Thread(target=self._run, args=(data,), name="sha256", daemon=True))
        self._thread.start()

    def _run(self, data) -> None:
        self._value = _sha256(data)

    def __call__(self) -> str:
        self._thread.join()
        return self._value


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


def configure(settings: StorageSettings) -> None:
    """Bound every storage call of this run by `settings` (run_job calls it; else read from the
    environment on first use). A new configuration starts a new deadline budget."""
    global _settings, _spent
    _settings, _spent = settings, 0.0
    s3_client.cache_clear()


def _current() -> StorageSettings:
    global _settings
    if _settings is None:
        _settings = load_settings(StorageSettings)
    return _settings


_settings: StorageSettings | None = None
_spent = 0.0  # seconds spent inside storage calls so far (S3_DEADLINE is their budget)
_in_call = False  # the main thread is inside a bounded call: a SIGALRM is its deadline
_deadline_hit: str | None = None  # the message, once the deadline ended a call


class DeadlineExceeded(StorageError):
    """The run's storage calls used up S3_DEADLINE."""


@functools.cache
def s3_client():
    import boto3
    from botocore.config import Config

    settings = _current()
    custom_endpoint = bool(os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))
    config = Config(
        # boto3 >= 1.36 adds CRC checksums to every request by default; several S3-compatible
        # stores (older MinIO, Ceph, GCS interop) reject or mangle them. Only send them when the
        # operation requires one.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        # total_max_attempts counts the first try; botocore's `max_attempts` key counts retries
        # (3 meant 4 requests).
        retries={"mode": "standard", "total_max_attempts": settings.max_attempts},
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        # Self-hosted stores rarely have wildcard DNS for virtual-hosted buckets.
        s3={"addressing_style": "path"} if custom_endpoint else None,
    )
    client = boto3.session.Session().client("s3", config=config)
    # First among the retry handlers: botocore wraps whatever interrupted its HTTP send (the
    # SIGTERM's Preempted, the deadline's alarm) into HTTPClientError and would retry it.
    client.meta.events.register_first("needs-retry.s3", _refuse_retry_when_aborted)
    return client


def _refuse_retry_when_aborted(**_) -> None:
    _raise_if_aborted()  # returning None leaves the decision to botocore's standard handler


def _raise_if_aborted() -> None:
    preemption.raise_if_requested()
    if _deadline_hit is not None:
        raise DeadlineExceeded(_deadline_hit)


def _on_alarm(signum, frame) -> None:
    global _deadline_hit
    if _in_call and _deadline_hit is None:
        _deadline_hit = (f"storage deadline exceeded: the run's storage calls took S3_DEADLINE="
                         f"{_current().deadline:g} s in total; the store answers too slowly or not at all")
        raise DeadlineExceeded(_deadline_hit)


@contextlib.contextmanager
def _bounded(uri: str):
    """Run one storage call within what is left of S3_DEADLINE, and stop for a SIGTERM.

    The deadline is a SIGALRM timer, which interrupts a blocked socket read (a drip-feeding
    store resets every per-read timeout). Signals reach the main thread only: calls made on other
    threads are bounded by the per-attempt timeouts alone.
    """
    global _in_call, _spent, _deadline_hit
    _raise_if_aborted()
    if _in_call:  # nested (read -> _s3_call): the outer call holds the timer
        yield
        return
    remaining = _current().deadline - _spent
    if remaining <= 0:
        _deadline_hit = _deadline_hit or f"storage deadline exceeded: S3_DEADLINE={_current().deadline:g} s used up"
        raise DeadlineExceeded(f"{uri}: {_deadline_hit}")
    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGALRM, _on_alarm) if on_main else None
    started = time.monotonic()
    _in_call = on_main
    try:
        if on_main:
            signal.setitimer(signal.ITIMER_REAL, remaining)
        yield
    finally:
        if on_main:
            signal.setitimer(signal.ITIMER_REAL, 0)
            _in_call = False
            signal.signal(signal.SIGALRM, previous)
        _spent += time.monotonic() - started


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

    with _bounded(uri):
        try:
            return fn(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            _raise_if_aborted()  # the SIGTERM or deadline that caused it, not a storage error
            raise _storage_error(uri, exc) from None


def read(uri: str, *, mapped: bool = False) -> Blob:
    """The whole object. With `mapped`, a local file is not copied: `data` is a read-only
    mapping of its pages (taken in one go), for large inputs that are only parsed. Writers that
    replace a file by renaming (as `write` does) leave a mapping of the old one intact."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with _bounded(uri):
            resp = _s3_call(uri, s3_client().get_object, Bucket=bucket, Key=key)
            data = _read_body(uri, resp["Body"])
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


# Concurrent GETs of `read_many`: botocore's connection pool holds 10 by default.
READ_WORKERS = 10


def read_many(uris: list[str], *, workers: int | None = None, max_bytes: int | None = None) -> list[Blob]:
    """Whole objects (or their first `max_bytes`), in order. Many small S3 objects are bound by
    request latency, so they are fetched `workers` at a time, all within one S3_DEADLINE timer held
    by the calling thread (a thread's calls nest in it); local files are read one after the other."""
    one = read if max_bytes is None else functools.partial(read_head, max_bytes=max_bytes)
    if len(uris) <= 1 or not any(map(is_s3, uris)):
        return [one(uri) for uri in uris]
    from concurrent.futures import ThreadPoolExecutor

    with _bounded(uris[0]):
        pool = ThreadPoolExecutor(max_workers=workers or READ_WORKERS)
        try:
            blobs = list(pool.map(one, uris))
        except BaseException:  # a deadline or SIGTERM: do not wait for the requests still out
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)  # all done: no thread outlives the call (a later fork may need none)
        return blobs


def read_head(uri: str, *, max_bytes: int) -> Blob:
    """The first `max_bytes` of an object or file (all of it when shorter): a file's header."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with _bounded(uri):
            resp = _s3_call(uri, s3_client().get_object, Bucket=bucket, Key=key, Range=f"bytes=0-{max_bytes - 1}")
            data = _read_body(uri, resp["Body"])
        return Blob(uri, data[:max_bytes], f"etag:{resp.get('ETag', '').strip(chr(34))}")
    try:
        with open(uri, "rb") as f:
            return Blob(uri, f.read(max_bytes))
    except FileNotFoundError:
        raise InputDataError(f"{uri}: no such file") from None
    except OSError as exc:
        raise StorageError(f"{uri}: cannot read: {exc.strerror}") from None


def _read_body(uri: str, body, size: int = -1) -> bytes:
    try:
        return body.read() if size < 0 else body.read(size)
    except JobError:
        raise  # SIGTERM or the deadline, raised in the socket read
    except Exception as exc:  # a connection dropped or timed out mid-body
        _raise_if_aborted()
        raise _storage_error(uri, exc) from None


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


def write(uri: str, data: bytes, *, content_type: str = "application/octet-stream", if_absent: bool = False,
          if_match: str | None = None) -> None:
    """Write whole or not at all. `if_absent` refuses to replace an existing object (AlreadyExists);
    `if_match` (a `Blob.version` read earlier) replaces it only if it is still that version
    (VersionChanged otherwise, also when it is gone): a compare-and-swap, so two writers that
    read-modify-write one object never lose each other's change. S3: `If-Match` on the ETag;
    disk: the sha256 compared and the file renamed under an exclusive lock on a hidden lock file."""
    if if_absent and if_match is not None:
        raise ValueError("if_absent and if_match exclude each other")
    if is_s3(uri):
        bucket, key = split_s3(uri)
        extra = {"IfNoneMatch": "*"} if if_absent else {}
        if if_match is not None:
            kind, _, etag = if_match.partition(":")
            if kind != "etag":
                raise ValueError(f"{uri}: if_match needs an S3 version (etag:...), got {if_match!r}")
            extra = {"IfMatch": f'"{etag}"'}
        try:
            _s3_call(uri, s3_client().put_object, Bucket=bucket, Key=key, Body=data, ContentType=content_type, **extra)
        except (AlreadyExists, InputDataError) as exc:
            if if_match is None:
                raise
            # 412, or 404 from stores that check existence first: someone else's version is there (or none).
            raise VersionChanged(f"{uri}: changed since it was read (conditional write refused)") from exc
        return
    _write_local(uri, data, if_absent=if_absent, if_match=if_match)


_confined: dict[Path, str] = {}  # output folder -> the setting that names it


def confine_local_writes(root: str, *, setting: str) -> None:
    """Refuse local writes under `root` that would pass through a symlink below it (a planted
    `plots -> /elsewhere`). `root` itself may be a link: the operator chose it."""
    if not is_s3(root):
        _confined[Path(os.path.abspath(root))] = setting


def _confining_root(path: Path) -> Path | None:
    return next((root for root in _confined if path.is_relative_to(root) and path != root), None)


def _write_local(uri: str, data: bytes, *, if_absent: bool, if_match: str | None = None) -> None:
    """Temp file + rename in the target's folder, created with 0o666 & ~umask like any file.

    Below a confined root every folder is opened with O_NOFOLLOW relative to its parent (no
    check-then-use race), and the rename replaces a symlink at the target rather than follow it.
    """
    path = Path(os.path.abspath(uri))
    root = _confining_root(path)
    try:
        if root is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        else:
            dir_fd = _open_folders_below(root, path.parent.relative_to(root).parts, uri)
        try:
            tmp = f".{path.name}.{secrets.token_hex(6)}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=dir_fd)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                if if_absent:
                    try:  # atomic, and fails if the target exists
                        os.link(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
                    except FileExistsError:
                        raise AlreadyExists(f"{uri}: already exists") from None
                elif if_match is not None:
                    _rename_if_unchanged(tmp, path.name, dir_fd, if_match, uri)
                else:
                    os.rename(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise StorageError(f"{uri}: cannot write: {exc.strerror or exc}") from None


def _rename_if_unchanged(tmp: str, name: str, dir_fd: int, version: str, uri: str) -> None:
    """Rename `tmp` over `name` if `name` still has `version` (sha256:...), under an exclusive
    flock on `.<name>.lock`: writers that all go through here swap one at a time; readers see a
    whole file either way (the rename)."""
    import fcntl

    lock = os.open(f".{name}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=dir_fd)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except FileNotFoundError:
            raise VersionChanged(f"{uri}: gone since it was read (conditional write refused)") from None
        with os.fdopen(fd, "rb") as fh:
            current = f"sha256:{hashlib.file_digest(fh, 'sha256').hexdigest()}"
        if current != version:
            raise VersionChanged(f"{uri}: changed since it was read (conditional write refused)")
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    finally:
        os.close(lock)  # releases the flock


def _open_folders_below(root: Path, parts: tuple[str, ...], uri: str) -> int:
    """A descriptor of root/parts..., creating folders as needed and following no link below root."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, part in enumerate(parts):
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, dir_fd=fd)
            try:
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                below = root.joinpath(*parts[: i + 1])
                raise ConfigError(f"{uri}: {below} is a symlink or a file, not a folder; refusing to write through it "
                                  f"(it lies under {_confined[root]}={root})") from None
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def check_writable(uri: str, *, setting: str) -> None:
    """Fail now, naming `setting`, when the output prefix `uri` cannot be written.

    S3: starts a multipart upload of `<prefix>/.write-probe-<random>` and aborts it: that needs the
    same permission as a PUT (s3:PutObject), and no object ever becomes visible, to readers or
    listings, even for a moment. Local: creates and removes a hidden file in the deepest folder
    of `uri` that exists. A missing bucket or refused permission is CONFIG (78): the setting or the
    credentials are wrong, and no retry can fix them. An unreachable store stays STORAGE (74).
    """
    probe = f".write-probe-{secrets.token_hex(8)}"
    if is_s3(uri):
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = split_s3(uri)
        probe_key = f"{key.rstrip('/')}/{probe}" if key.strip("/") else probe
        with _bounded(uri):
            try:
                upload = s3_client().create_multipart_upload(Bucket=bucket, Key=probe_key)
            except ClientError as exc:
                _raise_if_aborted()
                code = exc.response.get("Error", {}).get("Code", "?")
                if code == "NoSuchBucket":
                    raise ConfigError(f"{setting}={uri}: bucket {bucket!r} does not exist") from None
                if code in ("AccessDenied", "403", "Forbidden", "AllAccessDisabled"):
                    raise ConfigError(f"{setting}={uri}: the credentials may not write here ({code})") from None
                raise _storage_error(uri, exc) from None
            except BotoCoreError as exc:
                _raise_if_aborted()
                raise _storage_error(uri, exc) from None
        # A refused abort leaves an incomplete upload: invisible, removed by the bucket's
        # AbortIncompleteMultipartUpload lifecycle rule; not worth failing the run for.
        with contextlib.suppress(StorageError):
            _s3_call(uri, s3_client().abort_multipart_upload, Bucket=bucket, Key=probe_key, UploadId=upload["UploadId"])
        return
    path = Path(os.path.abspath(uri))
    folder = path
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"{setting}={uri}: {folder} is a file, not a folder")
    try:
        os.close(os.open(folder / probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        os.unlink(folder / probe)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise ConfigError(f"{setting}={uri}: cannot write in {folder}: {exc.strerror}") from None
        raise StorageError(f"{uri}: cannot write in {folder}: {exc.strerror}") from None


def delete(uri: str) -> None:
    """Remove an object or file; one that is already gone is no error."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        _s3_call(uri, s3_client().delete_object, Bucket=bucket, Key=key)
        return
    try:
        os.unlink(uri)  # a link itself, never what it points to
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StorageError(f"{uri}: cannot delete: {exc.strerror or exc}") from None


def download_file(uri: str, dest: Path) -> None:
    """Copy a possibly large object to a local file, streamed in 8 MiB chunks, whole or not at all.

    One stream on this thread (not s3transfer's pool): a SIGTERM or S3_DEADLINE interrupts it.
    """
    if not is_s3(uri):
        raise StorageError(f"{uri}: download_file is for s3:// URIs")
    bucket, key = split_s3(uri)
    dest = Path(dest)
    part = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.part")
    with _bounded(uri):
        resp = _s3_call(uri, s3_client().get_object, Bucket=bucket, Key=key)
        try:
            with open(part, "wb") as fh:
                while chunk := _read_body(uri, resp["Body"], 8 << 20):
                    fh.write(chunk)
            os.replace(part, dest)
        except OSError as exc:
            raise StorageError(f"{dest}: cannot write the download of {uri}: {exc.strerror or exc}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part)


def upload_file(src: Path, uri: str) -> None:
    """Copy a local file to `uri` whole: one streamed PUT on S3 (up to 5 GB), a rename on disk."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with open(src, "rb") as fh:
            _s3_call(uri, s3_client().put_object, Bucket=bucket, Key=key, Body=fh)
        return
    write(uri, Path(src).read_bytes())


def list_names(prefix: str) -> list[str]:
    """Names of the objects/files directly or indirectly under `prefix`, relative to it."""
    if is_s3(prefix):
        bucket, key = split_s3(prefix)
        key = key.rstrip("/") + "/" if key else ""
        names, token = [], {}
        while True:
            page = _s3_call(prefix, s3_client().list_objects_v2, Bucket=bucket, Prefix=key, **token)
            names.extend(obj["Key"][len(key):] for obj in page.get("Contents", []))
            if not page.get("IsTruncated"):
                return sorted(names)
            token = {"ContinuationToken": page["NextContinuationToken"]}
    root = Path(prefix)
    if not root.is_dir():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
