"""The job end to end, as subprocesses: learning, torchrun with gloo, SIGTERM + resume, S3.

Each run trains the seed's baseline CNN on scikit-learn's digits packed as CIFAR-10 (1,438 train,
359 test images), one thread per process, a few seconds per run.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import torch

from tests.train.conftest import ROOT, interrupt_train, log_lines, read_metrics, run_train


@pytest.fixture(scope="module")
def baseline_run(digits_archive, tmp_path_factory):
    """One single-process baseline run (3 epochs), shared by the tests that inspect its outputs."""
    tmp = tmp_path_factory.mktemp("baseline")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVAL_", "TRAIN_", "AWS_"))}
    env.update(PYTHONPATH=str(ROOT), HOME=str(tmp), TRAIN_CACHE_DIR=str(tmp / "cache"), TRAIN_DEVICE="cpu",
               TRAIN_THREADS="1", OMP_NUM_THREADS="1", TRAIN_BATCH_SIZE="32", TRAIN_EPOCHS="3", TRAIN_LOG_EVERY="10",
               TRAIN_DATA_URI=str(digits_archive), TRAIN_OUTPUT_URI=str(tmp / "out"))
    result = run_train(env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result, tmp / "out", env


def test_baseline_learns_digits_and_writes_every_output(baseline_run):
    result, out, _ = baseline_run
    metrics = read_metrics(out)
    assert metrics["test_accuracy"] >= 0.95, metrics["epochs"]
    assert metrics["epochs_completed"] == 3 and metrics["world_size"] == 1
    assert metrics["train_accuracy"] >= metrics["test_accuracy"] - 0.05
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3]
    assert all(e["images_per_second"] > 0 and 0 <= e["test_accuracy"] <= 1 for e in metrics["epochs"])
    assert set(metrics["per_class_accuracy"]) == {str(i) for i in range(10)}
    assert sum(map(sum, metrics["confusion_matrix"]["matrix"])) == 359
    prov = metrics["provenance"]
    assert prov["data_sha256"] and prov["libraries"]["torch"].startswith("2.") and prov["config"]["model"] == "simple"
    assert prov["device"].startswith("cpu")

    from safetensors.torch import load_file
    weights = load_file(out / "model.safetensors")
    assert weights["7.weight"].shape == (512, 4096)
    predictions, annotations = pq.read_table(out / "predictions.parquet"), pq.read_table(out / "annotations.parquet")
    assert predictions.num_rows == 3590 and annotations.num_rows == 359
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["e0001-s000000.pt", "e0002-s000000.pt", "e0003-s000000.pt"]
    state = torch.load(out / "checkpoints" / "e0003-s000000.pt", weights_only=True)
    assert state["epoch"] == 3 and set(state) >= {"model", "optimizer", "scheduler", "rng", "history"}

    lines = log_lines(result.stdout)
    assert all(line["rank"] == 0 and line["job"] == "train" and line["run_id"] == prov["run_id"] for line in lines)
    assert any(line["event"] == "train" and line["step"] == 10 for line in lines)


def test_evaluate_job_consumes_the_handoff_tables(baseline_run):
    """train -> evaluate: the evaluation job reads predictions/annotations.parquet as written."""
    _, out, env = baseline_run
    report = out.parent / "evaluation"
    env = {k: v for k, v in env.items() if not k.startswith("TRAIN_")}
    env.update(EVAL_PREDICTIONS_URI=str(out / "predictions.parquet"), EVAL_ANNOTATIONS_URI=str(out / "annotations.parquet"),
               EVAL_OUTPUT_URI=str(report), EVAL_CALIBRATION="temperature", EVAL_PLOTS="false")
    result = subprocess.run([sys.executable, "-m", "jobs.evaluate"], env=env, cwd=ROOT, capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    thresholds = json.loads((report / "thresholds.json").read_text())
    assert thresholds["alignment"]["matched_images"] == 359
    assert len(thresholds["classes"]) == 10 and thresholds["matching"]["geometry"] == "image"
    assert all(c["status"] == "ok" and c["n_ground_truth"] > 0 for c in thresholds["classes"])
    calibration = thresholds["calibration"]
    assert calibration["temperature"] > 0 and 0 <= calibration["ece_after"] <= 1


def test_torchrun_two_processes_with_gloo_and_sigterm_resume(digits_archive, train_env, tmp_path):
    """2 ranks learn; SIGTERM to torchrun stops both at one step, exit 75; the rerun matches exactly."""
    env = {**train_env, "TRAIN_DATA_URI": str(digits_archive), "TRAIN_BATCH_SIZE": "16", "TRAIN_LOG_EVERY": "5",
           "TRAIN_AUGMENT": "cutout"}  # digits are not mirror-symmetric: no flips
    reference = run_train({**env, "TRAIN_OUTPUT_URI": str(tmp_path / "reference")}, torchrun=2, timeout=240)
    assert reference.returncode == 0, reference.stdout[-3000:] + reference.stderr[-3000:]
    want = read_metrics(tmp_path / "reference")
    assert want["world_size"] == 2 and want["global_batch_size"] == 32
    assert want["test_accuracy"] >= 0.93, want["epochs"]
    lines = log_lines(reference.stdout)
    assert {line["run_id"] for line in lines} == {want["provenance"]["run_id"]}  # one run id across ranks
    assert {line["rank"] for line in lines if line["level"] == "info"} == {0}  # only rank 0 logs progress

    out = tmp_path / "interrupted"
    code, rest, seconds = interrupt_train({**env, "TRAIN_OUTPUT_URI": str(out)}, epoch=2, step=10, torchrun=2)
    assert code == 75 and seconds < 30, rest[-3000:]
    stopped = [line for line in log_lines(rest) if line["event"] == "failed"]
    assert sorted(line["rank"] for line in stopped) == [0, 1]
    assert len({line["error"] for line in stopped}) == 1  # the same step on both ranks
    resumed = run_train({**env, "TRAIN_OUTPUT_URI": str(out)}, torchrun=2, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got = read_metrics(out)
    assert (got["test_accuracy"], got["test_loss"]) == (want["test_accuracy"], want["test_loss"])


def test_sigterm_checkpoints_and_resume_reproduces_the_uninterrupted_run(digits_archive, train_env, tmp_path):
    base = {**train_env, "TRAIN_DATA_URI": str(digits_archive), "TRAIN_AUGMENT": "crop,flip,cutout",
            "TRAIN_SCHEDULE": "cosine", "TRAIN_WARMUP_EPOCHS": "0.5", "TRAIN_LOG_EVERY": "5"}
    reference = run_train({**base, "TRAIN_OUTPUT_URI": str(tmp_path / "reference")})
    assert reference.returncode == 0, reference.stderr[-3000:]

    out = tmp_path / "interrupted"
    code, rest, seconds = interrupt_train({**base, "TRAIN_OUTPUT_URI": str(out)}, epoch=2, step=15)
    assert code == 75 and seconds < 30, rest[-3000:]
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert checkpoints[0] == "e0001-s000000.pt" and checkpoints[-1].startswith("e0001-s0000")
    assert checkpoints[-1] != "e0001-s000000.pt"  # mid-epoch: epoch 2 part done
    assert not (out / "metrics.json").exists()
    stopped = [json.loads(line) for line in rest.splitlines() if line.startswith("{")]
    assert stopped[-1]["exit_code"] == 75 and "rerun to resume" in stopped[-1]["error"]

    resumed = run_train({**base, "TRAIN_OUTPUT_URI": str(out)})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert any(line["event"] == "resumed" for line in log_lines(resumed.stdout))
    want, got = read_metrics(tmp_path / "reference"), read_metrics(out)
    assert got["test_accuracy"] == want["test_accuracy"]
    assert got["test_loss"] == want["test_loss"]  # bit for bit, not approximately
    assert [e["test_loss"] for e in got["epochs"]] == [e["test_loss"] for e in want["epochs"]]
    assert [e["train_loss"] for e in got["epochs"]] == [e["train_loss"] for e in want["epochs"]]
    assert got["provenance"]["resumed_from"].endswith(checkpoints[-1])


def test_s3_input_and_output(digits_archive, train_env, s3):
    data_uri = s3.put("datasets/cifar-10-python.tar.gz", digits_archive.read_bytes())
    env = {**train_env, **s3.env, "TRAIN_DATA_URI": data_uri, "TRAIN_OUTPUT_URI": s3.uri("runs/r1"), "TRAIN_EPOCHS": "1"}
    result = run_train(env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    keys = s3.keys("runs/r1/")
    assert keys == ["runs/r1/annotations.parquet", "runs/r1/checkpoints/e0001-s000000.pt", "runs/r1/metrics.json",
                    "runs/r1/model.safetensors", "runs/r1/predictions.parquet"]
    metrics = json.loads(s3.get("runs/r1/metrics.json"))
    assert metrics["test_accuracy"] > 0.8 and metrics["provenance"]["data_uri"] == data_uri
    assert pq.read_table(io.BytesIO(s3.get("runs/r1/predictions.parquet"))).num_rows == 3590
