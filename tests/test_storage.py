"""common.storage against real S3 servers on loopback and the local disk."""

import hashlib

import pytest

from common import storage
from common.errors import InputDataError, StorageError


def test_s3_roundtrip_listing_and_conditional_write(s3):
    uri = s3.uri("reports/a/thresholds.json")
    storage.write(uri, b'{"x": 1}', content_type="application/json")
    blob = storage.read(uri)
    assert blob.data == b'{"x": 1}' and blob.version.startswith("etag:")
    assert storage.list_names(s3.uri("reports")) == ["a/thresholds.json"]
    with pytest.raises(storage.AlreadyExists):
        storage.write(uri, b"other", if_absent=True)
    assert storage.read(uri).data == b'{"x": 1}'
    storage.write(s3.uri("reports/b/new.json"), b"1", if_absent=True)
    assert storage.exists(s3.uri("reports/b/new.json"))


def test_s3_missing_object_is_an_input_error(s3):
    with pytest.raises(InputDataError, match="no such object"):
        storage.read(s3.uri("nope.json"))
    assert not storage.exists(s3.uri("nope.json"))


def test_unreachable_endpoint_is_a_storage_error(monkeypatch):
    from tests.conftest import CREDENTIALS, free_port

    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    storage.s3_client.cache_clear()
    try:
        with pytest.raises(StorageError, match="cannot reach S3 endpoint"):
            storage.read("s3://bucket-x/key.json")
    finally:
        storage.s3_client.cache_clear()


def test_local_write_is_atomic_and_conditional(tmp_path):
    target = tmp_path / "out" / "r.json"
    storage.write(str(target), b"one")
    assert target.read_bytes() == b"one"
    with pytest.raises(storage.AlreadyExists):
        storage.write(str(target), b"two", if_absent=True)
    assert target.read_bytes() == b"one"
    assert [p.name for p in target.parent.iterdir()] == ["r.json"]  # no temp files left
    with pytest.raises(InputDataError, match="no such file"):
        storage.read(str(tmp_path / "missing.json"))


@pytest.mark.parametrize("mapped", [False, True])
def test_local_read_whole_or_mapped(tmp_path, mapped):
    path = tmp_path / "data.json"
    path.write_bytes(b'{"a": 1}' * 1000)
    blob = storage.read(str(path), mapped=mapped)
    assert bytes(blob.data) == path.read_bytes()
    digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert blob.version == digest
    assert storage.read(str(path), mapped=mapped).hash_in_background().version == digest
    (tmp_path / "empty.json").write_bytes(b"")
    assert bytes(storage.read(str(tmp_path / "empty.json"), mapped=mapped).data) == b""
    with pytest.raises(InputDataError, match="no such file"):
        storage.read(str(tmp_path / "nope.json"), mapped=mapped)
    with pytest.raises(InputDataError, match="is a directory"):
        storage.read(str(tmp_path), mapped=mapped)


def _compare_and_swap(uri: str) -> None:
    storage.write(uri, b"v1")
    first = storage.read(uri)
    storage.write(uri, b"v2", if_match=first.version)  # still the version read: replaced
    second = storage.read(uri)
    assert second.data == b"v2"
    with pytest.raises(storage.VersionChanged):  # another writer replaced v1 since it was read
        storage.write(uri, b"lost", if_match=first.version)
    assert storage.read(uri).data == b"v2"
    storage.write(uri, b"v3", if_match=second.version)
    assert storage.read(uri).data == b"v3"


def test_s3_write_if_match_is_a_compare_and_swap(s3):
    _compare_and_swap(s3.uri("reports/history.parquet"))
    with pytest.raises(storage.VersionChanged):  # no object to match
        storage.write(s3.uri("reports/missing"), b"x", if_match="etag:0123456789abcdef0123456789abcdef")


def test_local_write_if_match_is_a_compare_and_swap(tmp_path):
    _compare_and_swap(str(tmp_path / "out" / "history.parquet"))
    with pytest.raises(storage.VersionChanged):
        storage.write(str(tmp_path / "out" / "missing"), b"x", if_match="sha256:00")
    assert not [p.name for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]  # no temp files left


def test_version_later_hashes_on_a_thread_and_lets_go_of_the_bytes(tmp_path):
    """A file's sha256 as a function: the hash runs meanwhile, and the mapping is not kept alive."""
    import gc
    import hashlib
    import weakref

    path = tmp_path / "f.json"
    path.write_bytes(b"x" * 10_000_000)
    blob = storage.read(str(path), mapped=True)
    later = blob.version_later()
    data = weakref.ref(blob)
    del blob
    assert later() == f"sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}"
    gc.collect()
    assert data() is None  # the function holds the digest, not the blob and its mapping
    s3_like = storage.Blob("s3://b/k", b"", "etag:abc")
    assert s3_like.version_later()() == "etag:abc"
