"""Fixtures shared by every test: real S3 servers on loopback (moto's server mode and SeaweedFS).

`s3` is parametrised over both servers, so each S3 test runs against moto (fast, permissive) and
SeaweedFS (a real object store: SigV4, conditional writes, strict checksums). It yields an `S3Env`
with a fresh bucket and the environment a job subprocess needs; the current process's environment
is set too (and boto3's cached client reset), so in-process calls reach the same server.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing-access-key",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
    "AWS_DEFAULT_REGION": "us-east-1",
}
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@dataclass
class S3Server:
    kind: str
    endpoint_url: str

    def client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
            config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required"),
        )


@dataclass
class S3Env:
    server: S3Server
    bucket: str
    client: object
    env: dict[str, str] = field(default_factory=dict)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key.lstrip('/')}"

    def put(self, key: str, data: bytes) -> str:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
        return self.uri(key)

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def keys(self, prefix: str = "") -> list[str]:
        resp = self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(obj["Key"] for obj in resp.get("Contents", []))


def _start_moto():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    wait_for_port(port)
    return S3Server("moto", f"http://127.0.0.1:{port}"), server.stop


def _start_seaweedfs(tmp: Path):
    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    ports = {name: free_port() for name in ("s3", "master", "volume", "filer", "webdav", "admin")}
    # gRPC ports default to the HTTP port + 10000, which is past 65535 for a high free port.
    grpc_ports = {name: free_port() for name in ("s3", "master", "volume", "filer", "admin")}
    # Every bucket is a collection with volumes of its own. Left to itself, `weed mini` allows as
    # many volumes as the free disk holds at full size (1 GiB each where space is plenty), so on a
    # machine with a few GiB free it refuses writes (InternalError) after a few dozen buckets.
    # Volumes are sparse files; small ones and a fixed count make the limit independent of the disk.
    args = [weed, "mini", f"-dir={tmp}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-s3.allowDeleteBucketNotEmpty=false", "-admin.ui=false",
            "-master.volumeSizeLimitMB=64", "-volume.max=1000"]
    args += [f"-{name}.port={port}" for name, port in ports.items()]
    args += [f"-{name}.port.grpc={port}" for name, port in grpc_ports.items()]
    log = open(tmp / "weed.log", "wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **CREDENTIALS},
                            start_new_session=True)
    server = S3Server("seaweedfs", f"http://127.0.0.1:{ports['s3']}")
    # Ready means a bucket can be created, not just a listening socket.
    deadline = time.monotonic() + 60
    while True:
        try:
            server.client().list_buckets()
            break
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"weed mini did not start: {(tmp / 'weed.log').read_text()[-2000:]}")
            time.sleep(0.2)

    def stop():
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()

    return server, stop


@pytest.fixture(scope="session", params=["moto", "seaweedfs"])
def s3_server(request, tmp_path_factory):
    if request.param == "moto":
        server, stop = _start_moto()
    else:
        server, stop = _start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    stop()


@pytest.fixture
def s3(s3_server, monkeypatch) -> S3Env:
    """A fresh bucket on a real S3 server, with this process's AWS environment pointed at it."""
    from common import storage

    env = {**CREDENTIALS, "AWS_ENDPOINT_URL": s3_server.endpoint_url}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    storage.s3_client.cache_clear()
    client = s3_server.client()
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    yield S3Env(s3_server, bucket, client, env)
    storage.s3_client.cache_clear()
    delete_bucket(client, bucket)


def delete_bucket(client, bucket: str) -> None:
    """Empty a test's bucket and delete it, so a session's server holds only the live tests' data."""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    client.delete_bucket(Bucket=bucket)


@pytest.fixture
def job_env(tmp_path) -> dict[str, str]:
    """A clean environment for running a job as a subprocess: no EVAL_/TRAIN_/AWS_ leakage."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVAL_", "TRAIN_", "AWS_"))}
    env["PYTHONPATH"] = str(ROOT)
    env["HOME"] = str(tmp_path)
    return env


# In CI every test must run: a skip there (a tool or base image that failed to install) would
# hide a missing feature, so it fails instead. Locally a skip names what to install.
STRICT_NO_SKIP = bool(os.environ.get("CI"))


def _fail_skips(report, what: str) -> None:
    if STRICT_NO_SKIP and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"{what} was skipped, and CI runs every test: {report.longrepr}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_skips(outcome.get_result(), item.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_skips(outcome.get_result(), collector.nodeid)
