"""The images built and run for real, without a Docker daemon: buildah builds, podman (runc) runs.

    bash tests/images/prepare.sh                 # once per machine: tools + local Debian Python base
    .venv/bin/python -m pytest -m images tests/images -s

Builds docker/Dockerfile.eval on the local base (registry images cannot be pulled here), checks the
image runs as a numeric non-root user on a read-only root filesystem, and runs it with
`--network host` against a SeaweedFS S3 server on loopback: the inputs are uploaded, the container
writes thresholds.json back, and the test reads it from the bucket. A bad-input run must exit with
INPUT_DATA (65) and write nothing. The training image is built with the CPU torch wheel from
/opt/wheels (torchvision left out) and runs `--help` and a one-epoch digits run the same way.

The container commands are the README's "Run with Docker" ones, with podman's runtime flags
(`--runtime runc` and explicit ulimits: crun and the host's rlimits fail on these machines).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from common.exitcodes import ExitCode
from tests.conftest import CREDENTIALS, _start_seaweedfs
from tests.images.conftest import TIMINGS

pytestmark = pytest.mark.images

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = os.environ.get("IMAGES_BASE", "localhost/ml-batch-jobs/debian-python:bookworm")
EVAL_IMAGE = "localhost/ml-batch-jobs/evaluate:test"
TRAIN_IMAGE = "localhost/ml-batch-jobs/train:test-cpu"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
TORCH_CPU_WHEELS = sorted(Path("/opt/wheels").glob("torch-*+cpu-*.whl"))
PODMAN_RUN = ["podman", "--runtime", "runc", "run", "--rm", "--network", "host", "--read-only",
              "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
SAMPLE = ROOT / "jobs" / "evaluate" / "sample"


def report_time(what: str, seconds: float) -> None:
    TIMINGS.append((what, seconds))  # printed in the terminal summary (tests/images/conftest.py)


def run(cmd: list[str], *, timeout: float, check: bool = True) -> subprocess.CompletedProcess:
    start = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    out.seconds = time.monotonic() - start  # type: ignore[attr-defined]
    if check and out.returncode != 0:
        pytest.fail(f"{' '.join(cmd[:6])} ... exited {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def buildah_build(dockerfile: str, tag: str, *extra: str, timeout: float) -> float:
    """The README's `docker build`, daemonless. The host CA bundle is mounted for pip only in this
    build (PIP_CERT is a build argument, never an ENV, so nothing of it reaches the image)."""
    cmd = ["buildah", "build", "--isolation", "chroot", "--layers", "-f", dockerfile,
           "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "--build-arg", "GIT_COMMIT=images-test", *extra]
    if CA_BUNDLE.exists():
        cmd += ["--volume", f"{CA_BUNDLE}:{CA_BUNDLE}:ro", "--build-arg", f"PIP_CERT={CA_BUNDLE}"]
    out = run([*cmd, "-t", tag, str(ROOT)], timeout=timeout)
    return out.seconds  # type: ignore[attr-defined]


def env_flags(env: dict[str, str]) -> list[str]:
    return [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]


@pytest.fixture(scope="module", autouse=True)
def tools():
    missing = [t for t in ("buildah", "podman", "runc") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: run `bash tests/images/prepare.sh`")
    if subprocess.run(["podman", "image", "exists", BASE_IMAGE]).returncode != 0:
        pytest.skip(f"base image {BASE_IMAGE} missing: run `bash tests/images/prepare.sh`")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A SeaweedFS S3 server on loopback, reached from the containers through --network host."""
    server, stop = _start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    client = server.client()
    bucket = f"images-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    yield server, client, bucket
    stop()


def s3_env(server) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": server.endpoint_url, **CREDENTIALS}


def sample_inputs_env(server, client, bucket: str, prefix: str) -> dict[str, str]:
    """The sample's two inputs uploaded under `prefix`, and the S3 and EVAL_ variables that read them."""
    for name in ("predictions.csv", "annotations.json"):
        client.upload_file(str(SAMPLE / name), bucket, f"{prefix}/{name}")
    return {**s3_env(server), "EVAL_PREDICTIONS_URI": f"s3://{bucket}/{prefix}/predictions.csv",
            "EVAL_ANNOTATIONS_URI": f"s3://{bucket}/{prefix}/annotations.json"}


def keys(client, bucket: str, prefix: str) -> list[str]:
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))


@pytest.fixture(scope="module")
def eval_image() -> str:
    seconds = buildah_build("docker/Dockerfile.eval", EVAL_IMAGE, timeout=900)
    report_time("eval image build", seconds)
    return EVAL_IMAGE


def test_eval_image_is_non_root_read_only_and_torch_free(eval_image):
    user = run(["podman", "image", "inspect", "--format", "{{.Config.User}}", eval_image], timeout=60).stdout.strip()
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit(), f"image user {user!r}"
    probe = ("import importlib.util, os, pathlib\n"
             "print(os.getuid(), os.getgid())\n"
             "try:\n    pathlib.Path('/opt/venv/probe').write_text('x'); print('root-writable')\n"
             "except OSError: print('root-read-only')\n"
             "pathlib.Path('/tmp/probe').write_text('x'); print('tmp-writable')\n"
             "print('torch' if importlib.util.find_spec('torch') else 'no-torch')\n")
    out = run([*PODMAN_RUN, "--entrypoint", "python", eval_image, "-c", probe], timeout=120)
    assert out.stdout.split() == [uid, gid, "root-read-only", "tmp-writable", "no-torch"], out.stdout
    labels = json.loads(run(["podman", "image", "inspect", "--format", "{{json .Config.Labels}}", eval_image],
                            timeout=60).stdout)
    assert labels["org.opencontainers.image.revision"] == "images-test"


def test_eval_image_help_lists_the_settings(eval_image):
    out = run([*PODMAN_RUN, eval_image, "--help"], timeout=120)
    assert "EVAL_PREDICTIONS_URI" in out.stdout and "EVAL_OUTPUT_URI" in out.stdout


def test_eval_image_stops_promptly_on_sigterm(eval_image):
    """PID 1 is dumb-init, which forwards SIGTERM: `docker stop` / pod deletion ends a running job in
    well under the grace period (a bare Python PID 1 without a handler would ignore it until SIGKILL)."""
    entrypoint = json.loads(run(["podman", "image", "inspect", "--format", "{{json .Config.Entrypoint}}", eval_image],
                                timeout=60).stdout)
    assert entrypoint[:2] == ["dumb-init", "--"]
    name = f"sigterm-{uuid.uuid4().hex[:8]}"
    run([*PODMAN_RUN[:4], "-d", "--name", name, *PODMAN_RUN[5:], "--entrypoint", "dumb-init", eval_image,
         "--", "python", "-c", "import time; print('up', flush=True); time.sleep(300)"], timeout=60)
    try:
        deadline = time.monotonic() + 30
        while "up" not in run(["podman", "logs", name], timeout=30, check=False).stdout:
            assert time.monotonic() < deadline, "container did not start"
            time.sleep(0.2)
        stop = run(["podman", "stop", "--time", "30", name], timeout=60)
        report_time("eval container stop on SIGTERM", stop.seconds)  # type: ignore[attr-defined]
        assert stop.seconds < 10  # type: ignore[attr-defined]
    finally:
        subprocess.run(["podman", "rm", "-f", name], capture_output=True, timeout=60)


def test_eval_image_ships_the_sample_and_runs_the_demo(eval_image):
    """`--demo` on the sample inside the image (the local overlay's seeding reads the same files)."""
    out = run([*PODMAN_RUN, eval_image, "--demo"], timeout=120, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "report written" in out.stdout


def test_eval_container_against_s3(eval_image, s3):
    server, client, bucket = s3
    env = {**sample_inputs_env(server, client, bucket, "inputs"),
           "EVAL_OUTPUT_URI": f"s3://{bucket}/reports/run-1",
           "RUN_ID": "images-test-run-1"}
    out = run([*PODMAN_RUN, *env_flags(env), eval_image], timeout=300, check=False)
    report_time("eval container run (sample, S3)", out.seconds)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # One JSON object per line on stdout (not a TTY), each with the job name and run id.
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert lines and all(line["job"] == "evaluate" and line["run_id"] == "images-test-run-1" for line in lines)
    report = json.loads(client.get_object(Bucket=bucket, Key="reports/run-1/thresholds.json")["Body"].read())
    assert report["run"]["id"] == "images-test-run-1"
    assert report["run"]["code_version"].endswith("+gimages-test")  # GIT_COMMIT from the build
    assert report["inputs"]["predictions"]["uri"] == env["EVAL_PREDICTIONS_URI"]
    assert len(report["classes"]) == 4
    assert 0.0 < report["summary"]["mean_average_precision"] <= 1.0


def test_eval_container_scheduled_runs_compare_with_the_latest(eval_image, s3):
    """What the CronJob does: each run under runs/<RUN_ID>/, compared with the latest complete one."""
    server, client, bucket = s3
    base = {**sample_inputs_env(server, client, bucket, "nightly-inputs"),
            "EVAL_OUTPUT_URI": f"s3://{bucket}/nightly", "EVAL_OUTPUT_LAYOUT": "runs",
            "EVAL_BASELINE_URI": "latest", "EVAL_PLOTS": "false"}
    for run_id in ("evaluate-nightly-1", "evaluate-nightly-2"):
        out = run([*PODMAN_RUN, *env_flags({**base, "RUN_ID": run_id}), eval_image], timeout=300, check=False)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]  # same inputs: no drift
    assert {"nightly/runs/evaluate-nightly-1/thresholds.json", "nightly/runs/evaluate-nightly-2/thresholds.json",
            "nightly/latest.json"} <= set(keys(client, bucket, "nightly/"))
    latest = json.loads(client.get_object(Bucket=bucket, Key="nightly/latest.json")["Body"].read())
    assert latest["run_id"] == "evaluate-nightly-2"
    second = json.loads(client.get_object(Bucket=bucket, Key="nightly/runs/evaluate-nightly-2/thresholds.json")["Body"].read())
    assert second["drift"]["changed"] == []


def test_eval_container_bad_input_exits_input_data_and_writes_nothing(eval_image, s3):
    server, client, bucket = s3
    client.put_object(Bucket=bucket, Key="bad/annotations.json", Body=b'{"images": "not a list"')
    client.upload_file(str(SAMPLE / "predictions.csv"), bucket, "bad/predictions.csv")
    env = {**s3_env(server),
           "EVAL_PREDICTIONS_URI": f"s3://{bucket}/bad/predictions.csv",
           "EVAL_ANNOTATIONS_URI": f"s3://{bucket}/bad/annotations.json",
           "EVAL_OUTPUT_URI": f"s3://{bucket}/reports/bad"}
    out = run([*PODMAN_RUN, *env_flags(env), eval_image], timeout=300, check=False)
    report_time("eval container run (bad input)", out.seconds)
    assert out.returncode == ExitCode.INPUT_DATA, out.stdout[-3000:] + out.stderr[-3000:]
    assert keys(client, bucket, "reports/bad") == []


def test_eval_container_config_error_exits_config(eval_image, s3):
    server, _, bucket = s3
    env = {**s3_env(server), "EVAL_PREDICTIONS_URI": "a", "EVAL_ANNOTATIONS_URI": "b",
           "EVAL_OUTPUT_URI": f"s3://{bucket}/x", "EVAL_IOU_THRESHOLD": "2"}
    out = run([*PODMAN_RUN, *env_flags(env), eval_image], timeout=120, check=False)
    assert out.returncode == ExitCode.CONFIG and "EVAL_IOU_THRESHOLD" in out.stdout + out.stderr


@pytest.fixture(scope="module")
def train_image() -> str:
    if not TORCH_CPU_WHEELS:
        pytest.skip("no CPU torch wheel in /opt/wheels to build the training image with")
    wheel = TORCH_CPU_WHEELS[-1]
    seconds = buildah_build("docker/Dockerfile.train", TRAIN_IMAGE,
                            "--volume", f"{wheel.parent}:/wheels:ro",
                            "--build-arg", f"TORCH_SPEC=/wheels/{wheel.name}",
                            "--build-arg", "TORCHVISION_SPEC=", timeout=1500)
    report_time(f"train image build ({wheel.name}, no torchvision)", seconds)
    return TRAIN_IMAGE


def test_train_image_help(train_image):
    out = run([*PODMAN_RUN, train_image, "--help"], timeout=120)
    assert "TRAIN_DATA_URI" in out.stdout


def test_train_container_one_epoch_on_digits(train_image, s3, tmp_path):
    """One epoch of the baseline on scikit-learn's digits in the CIFAR layout, archive from S3 and
    outputs to S3. (The local base's Python 3.11.2 has no tarfile filters: the job's stricter
    regular-files-only extraction runs there; python:3.12-slim uses the "data" filter.)"""
    from jobs.train.data import pack_cifar
    from tests.train.conftest import DIGITS, digits_arrays

    server, client, bucket = s3
    train_images, train_labels, test_images, test_labels = digits_arrays()
    archive = pack_cifar(train_images=train_images, train_labels=train_labels, test_images=test_images,
                         test_labels=test_labels, classes=DIGITS, dest=tmp_path / "cifar-10-python.tar.gz")
    client.upload_file(str(archive), bucket, "train/digits/cifar-10-python.tar.gz")
    data_uri, source = f"s3://{bucket}/train/digits/cifar-10-python.tar.gz", "archive from S3"
    env = {**s3_env(server),
           "TRAIN_DATA_URI": data_uri,
           "TRAIN_OUTPUT_URI": f"s3://{bucket}/train/run-1",
           "TRAIN_EPOCHS": "1", "TRAIN_DEVICE": "cpu", "TRAIN_BATCH_SIZE": "32", "TRAIN_THREADS": "2",
           "OMP_NUM_THREADS": "2"}
    out = run([*PODMAN_RUN, "--shm-size", "256m", *env_flags(env), train_image], timeout=600, check=False)
    report_time(f"train container run (1 epoch, digits, {source})", out.seconds)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-3000:]
    metrics = json.loads(client.get_object(Bucket=bucket, Key="train/run-1/metrics.json")["Body"].read())
    assert metrics["epochs_completed"] == 1
    assert metrics["test_accuracy"] > 0.5  # one epoch of the baseline CNN on digits
