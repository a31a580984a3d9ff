"""docker/compose.yaml brought up for real, with podman-compose (the dev extra) and the README's
commands (seed, then each job with `run --rm --no-deps JOB`), on a machine that can pull no registry image: the test-only override
tests/images/compose.seaweedfs.yaml swaps MinIO for a locally built SeaweedFS S3 server and mc-init
for the evaluation image seeding the same buckets; evaluate and train run as written. The
evaluation's report must land in the bucket, and training (its own `up`, after evaluate exited)
must write its metrics.

    bash tests/images/prepare.sh && .venv/bin/python -m pytest -m images tests/images -k compose -s
"""

from __future__ import annotations

import json
import os
import shutil
import time
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.images.test_images import (  # noqa: F401  (fixtures: images built as the image tests do)
    BASE_IMAGE, EVAL_IMAGE, ROOT, TRAIN_IMAGE, eval_image, report_time, run, tools, train_image)

pytestmark = pytest.mark.images

SEAWEEDFS_IMAGE = "localhost/ml-batch-jobs/seaweedfs:test"
OVERRIDE = ROOT / "tests" / "images" / "compose.seaweedfs.yaml"
COMPOSE_FILE = ROOT / "docker" / "compose.yaml"
# The images the compose file names (its `image:` keys): the ones the image tests build.
COMPOSE_IMAGES = {"ml-evaluate:dev": EVAL_IMAGE, "ml-train:cpu": TRAIN_IMAGE}


def podman_compose() -> str:
    found = shutil.which("podman-compose") or str(Path(sys.executable).parent / "podman-compose")
    assert Path(found).exists(), "podman-compose (dev extra) is not installed"
    return found


@pytest.fixture(scope="module")
def seaweedfs_image(tmp_path_factory) -> str:
    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    context = tmp_path_factory.mktemp("seaweedfs-image")
    shutil.copy2(weed, context / "weed")
    shutil.copy2(ROOT / "tests" / "images" / "seaweedfs.Containerfile", context / "Containerfile")
    out = run(["buildah", "build", "--isolation", "chroot", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
               "-t", SEAWEEDFS_IMAGE, str(context)], timeout=600)
    report_time("seaweedfs image build", out.seconds)  # type: ignore[attr-defined]
    return SEAWEEDFS_IMAGE


@pytest.fixture(scope="module")
def stack(eval_image, train_image, seaweedfs_image, tmp_path_factory):  # noqa: F811
    """The compose project, with its data folder; `down -v` at the end whatever happened."""
    from jobs.train.data import pack_cifar
    from tests.train.conftest import DIGITS, digits_arrays

    for name, built in COMPOSE_IMAGES.items():
        run(["podman", "tag", built, name], timeout=60)
    data = tmp_path_factory.mktemp("compose-data")
    train_images, train_labels, test_images, test_labels = digits_arrays()
    pack_cifar(train_images=train_images, train_labels=train_labels, test_images=test_images,
               test_labels=test_labels, classes=DIGITS, dest=data / "cifar-10-python.tar.gz")
    data.chmod(0o755)
    (data / "cifar-10-python.tar.gz").chmod(0o644)
    project = f"mlbj-compose-{uuid.uuid4().hex[:6]}"
    base = [podman_compose(), "-p", project, "-f", str(COMPOSE_FILE), "-f", str(OVERRIDE)]
    env = {"COMPOSE_TEST_DATA": str(data)}
    yield base, env
    subprocess.run([*base, "down", "-v"], capture_output=True, timeout=300, env={**os.environ, **env})


def compose(stack, *args: str, timeout: float) -> subprocess.CompletedProcess:
    base, env = stack
    start = time.monotonic()
    out = subprocess.run([*base, *args], capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, **env}, stdin=subprocess.DEVNULL)
    out.seconds = time.monotonic() - start  # type: ignore[attr-defined]
    return out


def read_object(stack, bucket: str, key: str) -> bytes:
    """Through the stack's own network: the seeding service's image, the store's credentials."""
    script = (f"import boto3, json; print(json.dumps(json.loads(boto3.client('s3').get_object("
              f"Bucket={bucket!r}, Key={key!r})['Body'].read())))")
    out = compose(stack, "run", "--rm", "--no-deps", "mc-init", script, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1].encode()


def test_compose_runs_each_job_to_its_end(stack):
    # The README's commands, less `build` (the images are the ones built above: no base image can
    # be pulled here).
    out = compose(stack, "run", "--rm", "mc-init", timeout=600)
    assert out.returncode == 0 and "seeded" in out.stdout, out.stdout[-4000:] + out.stderr[-4000:]

    out = compose(stack, "run", "--rm", "--no-deps", "evaluate", timeout=900)
    report_time("compose run evaluate", out.seconds)  # type: ignore[attr-defined]
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    report = json.loads(read_object(stack, "ml-eval", "reports/compose/thresholds.json"))
    assert report["inputs"]["predictions"]["uri"] == "s3://ml-eval/inputs/predictions.csv"
    assert len(report["classes"]) == 4

    # Training on its own: evaluate has exited, the store still runs, nothing stops train.
    out = compose(stack, "run", "--rm", "--no-deps", "train", timeout=1200)
    report_time("compose run train (1 epoch, digits)", out.seconds)  # type: ignore[attr-defined]
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    metrics = json.loads(read_object(stack, "ml-train", "runs/compose/metrics.json"))
    assert metrics["epochs_completed"] == 1 and metrics["test_accuracy"] > 0.5

