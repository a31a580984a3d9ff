"""Storage faults on loopback: a silent S3 endpoint, SIGTERM during a stalled request or at start-up,
invalid storage settings, and what local writes may touch (umask, planted symlinks).

The stalling endpoint is a real TCP server on 127.0.0.1 that accepts connections and never answers:
what a hung S3 proxy or a black-holed load balancer does to the job.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "jobs" / "evaluate" / "sample"


class SilentEndpoint:
    """Accepts TCP connections and never sends a byte; counts the connections."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.server.settimeout(0.1)
        self.port = self.server.getsockname()[1]
        self.connections: list[socket.socket] = []

    def accept_pending(self) -> None:
        try:
            while True:
                self.connections.append(self.server.accept()[0])
        except OSError:
            pass

    def close(self) -> None:
        for conn in self.connections:
            conn.close()
        self.server.close()


@pytest.fixture
def silent_endpoint():
    endpoint = SilentEndpoint()
    yield endpoint
    endpoint.close()


def job_env(tmp_path: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "EVAL_", "S3_"))}
    env.update(
        PYTHONPATH=str(REPO),
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_DEFAULT_REGION="us-east-1",
        EVAL_PREDICTIONS_URI="s3://bucket/predictions.csv",
        EVAL_ANNOTATIONS_URI=str(SAMPLE / "annotations.json"),
        EVAL_OUTPUT_URI=str(tmp_path / "out"),
    )
    env.update(extra)
    return env


def start_job(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.evaluate"], env=env, cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def wait(proc: subprocess.Popen, endpoint: SilentEndpoint, timeout: float) -> float:
    start = time.monotonic()
    while proc.poll() is None:
        endpoint.accept_pending()
        if time.monotonic() - start > timeout:
            proc.kill()
            pytest.fail(f"job still running after {timeout} s")
    endpoint.accept_pending()
    return time.monotonic() - start


def test_silent_endpoint_fails_with_74_after_exactly_max_attempts_requests(tmp_path, silent_endpoint):
    proc = start_job(job_env(tmp_path, silent_endpoint.port, S3_READ_TIMEOUT="1", AWS_MAX_ATTEMPTS="3"))
    elapsed = wait(proc, silent_endpoint, timeout=40)
    out = proc.stdout.read()
    assert proc.returncode == 74, out
    assert len(silent_endpoint.connections) == 3, out  # AWS_MAX_ATTEMPTS counts the first request
    assert elapsed < 20
    assert "Traceback" not in out
    assert not (tmp_path / "out").exists()


def test_sigterm_during_a_stalled_read_exits_75_at_once_and_writes_nothing(tmp_path, silent_endpoint):
    proc = start_job(job_env(tmp_path, silent_endpoint.port))
    silent_endpoint.server.settimeout(30)
    silent_endpoint.connections.append(silent_endpoint.server.accept()[0])  # the job is now inside a GET
    silent_endpoint.server.settimeout(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    elapsed = wait(proc, silent_endpoint, timeout=15)
    out = proc.stdout.read()
    assert proc.returncode == 75, out  # before: botocore retried the wrapped exception and the run went on
    assert elapsed < 5
    assert len(silent_endpoint.connections) == 1, out
    assert not (tmp_path / "out").exists()


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has a SIGTERM handler installed (the SigCgt mask in /proc)."""
    try:
        caught = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("SigCgt:"))
    except (FileNotFoundError, StopIteration):
        return False
    return bool(int(caught.split()[1], 16) >> (signal.SIGTERM - 1) & 1)


def test_sigterm_during_start_up_is_75_not_death_by_signal(tmp_path, silent_endpoint):
    proc = start_job(job_env(tmp_path, silent_endpoint.port))
    # The first thing the job imports installs the handler; everything slow comes after it. Send
    # the signal the moment the handler is there: inside the imports, whatever the machine's load.
    deadline = time.monotonic() + 20
    while not _catches_sigterm(proc.pid):
        assert proc.poll() is None and time.monotonic() < deadline, "the job never installed a SIGTERM handler"
        time.sleep(0.002)
    proc.send_signal(signal.SIGTERM)
    wait(proc, silent_endpoint, timeout=15)
    out = proc.stdout.read()
    assert proc.returncode == 75, out  # before: -15 (killed by the signal)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "variable, value",
    [
        ("AWS_MAX_ATTEMPTS", "abc"),
        ("S3_CONNECT_TIMEOUT", "abc"),
        ("EVAL_IOU_THRESHOLDS", "0.5:0.95:1e-12"),
        ("EVAL_IOU_THRESHOLDS", "0.5:0.95:1e-6"),
        ("EVAL_PREDICTIONS_URI", ""),
    ],
)
def test_invalid_setting_is_78_naming_the_variable(tmp_path, silent_endpoint, variable, value):
    proc = start_job(job_env(tmp_path, silent_endpoint.port, **{variable: value}))
    wait(proc, silent_endpoint, timeout=30)
    out = proc.stdout.read()
    assert proc.returncode == 78, out
    assert variable in out
    assert "Traceback" not in out
    assert not silent_endpoint.connections  # refused before any storage call


def local_run(tmp_path: Path, out: Path, umask: int | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "EVAL_", "S3_"))}
    env.update(PYTHONPATH=str(REPO), EVAL_OUTPUT_URI=str(out), EVAL_PLOTS="true")
    return subprocess.run(
        [sys.executable, "-m", "jobs.evaluate", "--demo"], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
        preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,
    )


def test_local_outputs_honour_the_umask(tmp_path):
    result = local_run(tmp_path, tmp_path / "out", umask=0o022)
    assert result.returncode == 0, result.stdout + result.stderr
    mode = stat.S_IMODE((tmp_path / "out" / "thresholds.json").stat().st_mode)
    assert mode == 0o644  # before: 0o600 whatever the umask (mkstemp's mode)


def test_a_planted_symlink_under_the_output_folder_is_not_followed(tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "artifacts").symlink_to(elsewhere)  # where the plots are staged
    result = local_run(tmp_path, out)
    assert result.returncode != 0
    assert list(elsewhere.iterdir()) == []  # before: the plots landed outside the output folder
    assert "Traceback" not in result.stdout + result.stderr


class DripEndpoint(SilentEndpoint):
    """Answers every request with a 200 whose body arrives one byte every `every` seconds, for ever:
    no single read ever times out."""

    def __init__(self, every: float = 0.3) -> None:
        super().__init__()
        self.every, self.stop = every, threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn = self.server.accept()[0]
            except OSError:
                continue
            threading.Thread(target=self.drip, args=(conn,), daemon=True).start()

    def drip(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nContent-Length: 1000000\r\n\r\n")
            while not self.stop.is_set():
                conn.sendall(b"x")
                time.sleep(self.every)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        super().close()


def test_a_drip_feeding_endpoint_ends_at_the_storage_deadline_with_74(tmp_path):
    endpoint = DripEndpoint()
    try:
        proc = start_job(job_env(tmp_path, endpoint.port, S3_READ_TIMEOUT="2", S3_DEADLINE="3"))
        out, _ = proc.communicate(timeout=60)
    finally:
        endpoint.close()
    assert proc.returncode == 74, out  # before S3_DEADLINE: each byte reset the read timeout, no end at all
    assert "S3_DEADLINE" in out and "Traceback" not in out
    assert not (tmp_path / "out").exists()


# AWS semantics (moto): SeaweedFS creates a bucket on its first write, so there it is never missing.
@pytest.mark.parametrize("s3_server", ["moto"], indirect=True)
def test_a_missing_output_bucket_is_78_before_any_work(s3, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVAL_", "S3_"))}
    env.update(PYTHONPATH=str(REPO), **s3.env, EVAL_PREDICTIONS_URI=str(SAMPLE / "predictions.csv"),
               EVAL_ANNOTATIONS_URI=str(SAMPLE / "annotations.json"), EVAL_OUTPUT_URI="s3://no-such-bucket-here/reports")
    proc = subprocess.run([sys.executable, "-m", "jobs.evaluate"], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 78, proc.stdout + proc.stderr  # a retry cannot create the bucket: not 74, not 65
    assert "EVAL_OUTPUT_URI" in proc.stdout and "no-such-bucket-here" in proc.stdout
    assert '"event": "loaded"' not in proc.stdout  # found before reading or evaluating anything
