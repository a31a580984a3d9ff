"""Fixtures for the training job's tests: a real CIFAR-layout archive built from scikit-learn's digits.

The 1,797 8x8 handwritten digits (a real data set shipped with scikit-learn) are upscaled to
32x32, copied to three channels and packed by `jobs.train.data.pack_cifar` into a genuine
`cifar-10-python.tar.gz`: the job reads them exactly as it reads CIFAR-10.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jobs.train.data import pack_cifar

ROOT = Path(__file__).resolve().parents[2]
DIGITS = [str(i) for i in range(10)]


def digits_arrays(*, test_fraction: float = 0.2, seed: int = 0):
    """(train_images, train_labels, test_images, test_labels): uint8 (N, 3, 32, 32) and int64 (N,)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = (digits.images * (255 / 16)).round().astype(np.uint8)  # 0..16 -> 0..255
    pixels = pixels.repeat(4, axis=1).repeat(4, axis=2)  # 8x8 -> 32x32, nearest neighbour
    images = np.repeat(pixels[:, None], 3, axis=1)
    order = np.random.default_rng(seed).permutation(len(images))
    n_test = int(len(images) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return images[train], digits.target[train], images[test], digits.target[test]


@pytest.fixture(scope="session")
def digits_archive(tmp_path_factory) -> Path:
    train_images, train_labels, test_images, test_labels = digits_arrays()
    return pack_cifar(train_images=train_images, train_labels=train_labels, test_images=test_images,
                      test_labels=test_labels, classes=DIGITS,
                      dest=tmp_path_factory.mktemp("digits") / "cifar-10-python.tar.gz")


@pytest.fixture
def train_env(job_env, tmp_path) -> dict[str, str]:
    """A subprocess environment for a small, fast CPU run (override per test)."""
    return {
        **job_env,
        "TRAIN_CACHE_DIR": str(tmp_path / "cache"),
        "TRAIN_DEVICE": "cpu",
        "TRAIN_THREADS": "1",
        "TRAIN_BATCH_SIZE": "32",
        "TRAIN_EPOCHS": "3",
        "TRAIN_LOG_EVERY": "10",
        "OMP_NUM_THREADS": "1",
    }


def train_command(*, torchrun: int = 0) -> list[str]:
    """`python -m jobs.train`, or N processes under torchrun (through the exit-code wrapper)."""
    if torchrun:
        cmd = [sys.executable, "-m", "jobs.train.torchrun", "--standalone", f"--nproc_per_node={torchrun}", "-m", "jobs.train"]
    else:
        cmd = [sys.executable, "-m", "jobs.train"]
    return cmd


def run_train(env: dict[str, str], *, timeout: float = 180, torchrun: int = 0) -> subprocess.CompletedProcess:
    return subprocess.run(train_command(torchrun=torchrun), env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def interrupt_train(env: dict[str, str], *, epoch: int, step: int, torchrun: int = 0) -> tuple[int, str, float]:
    """Start a run, SIGTERM it once it logs (epoch, step); return (exit code, rest of stdout, seconds to exit)."""
    proc = subprocess.Popen(train_command(torchrun=torchrun), env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    sent = None
    for line in proc.stdout:
        event = json.loads(line) if line.startswith("{") else {}
        if event.get("event") == "train" and event.get("epoch") == epoch and event.get("step") == step:
            proc.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            break
    rest, err = proc.communicate(timeout=60)
    assert sent is not None, f"never reached epoch {epoch} step {step}: {err[-3000:]}"
    return proc.returncode, rest, time.monotonic() - sent


def log_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def read_metrics(output: Path) -> dict:
    return json.loads((output / "metrics.json").read_text())
