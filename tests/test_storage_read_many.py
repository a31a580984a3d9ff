"""`storage.read_many`: many objects fetched in parallel, in order, and still bounded by S3_DEADLINE."""

from __future__ import annotations

import time

import pytest

from common import storage
from common.settings import StorageSettings
from tests.conftest import CREDENTIALS
from tests.test_storage_faults import SilentEndpoint


def test_read_many_keeps_order_and_reads_heads(s3):
    uris = [s3.put(f"many/{i:03d}.txt", f"object {i} ".encode() * 50) for i in range(25)]
    blobs = storage.read_many(uris)
    assert [bytes(b.data) for b in blobs] == [f"object {i} ".encode() * 50 for i in range(25)]
    heads = storage.read_many(uris, max_bytes=9)
    assert [bytes(b.data) for b in heads] == [f"object {i} ".encode()[:9] for i in range(25)]


def test_read_many_missing_object_is_an_input_error(s3):
    uris = [s3.put("many/a.txt", b"a"), s3.uri("many/missing.txt")]
    with pytest.raises(storage.InputDataError, match="many/missing.txt"):
        storage.read_many(uris)


def test_read_many_stops_at_the_deadline(monkeypatch):
    """10 requests in flight against an endpoint that never answers: the run's deadline (1.5 s)
    ends them all, long before one read timeout (30 s)."""
    endpoint = SilentEndpoint()
    try:
        for key, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{endpoint.port}"}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setattr(storage, "_settings", None)
        monkeypatch.setattr(storage, "_deadline_hit", None)
        storage.configure(StorageSettings(deadline=1.5, read_timeout=30, connect_timeout=5, max_attempts=1))
        t0 = time.monotonic()
        with pytest.raises(storage.DeadlineExceeded):
            storage.read_many([f"s3://bucket/k{i}" for i in range(30)])
        assert time.monotonic() - t0 < 10
    finally:
        endpoint.close()
        storage.s3_client.cache_clear()
