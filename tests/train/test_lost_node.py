"""A lost node: two "nodes" on loopback, started as the Indexed Job starts them (static
rendezvous on node 0's --master-addr/--master-port), one shared output. SIGKILL to every process
of one node (torchrun and its worker: no SIGTERM, no checkpoint) must make the other exit
non-zero within 60 s; rerunning both resumes from the last checkpoint and ends with exactly the
uninterrupted run's accuracy and loss (issue 12)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import free_port
from tests.train.conftest import ROOT, read_metrics

LOST_NODE_EXIT_S = 60


def start_node(env: dict[str, str], *, rank: int, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "jobs.train.torchrun", "--nnodes=2", "--nproc-per-node=1", f"--node-rank={rank}",
           "--master-addr=127.0.0.1", f"--master-port={port}", "-m", "jobs.train"]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_nodes(env: dict[str, str], timeout: float = 300) -> list[tuple[int, str]]:
    port = free_port()
    nodes = [start_node(env, rank=rank, port=port) for rank in (0, 1)]
    outputs = [node.communicate(timeout=timeout)[0] for node in nodes]
    return [(node.returncode, output) for node, output in zip(nodes, outputs)]


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (torchrun starts its workers in sessions of their own, so a
    process group does not reach them)."""
    pids = [pid]
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as fh:
            for child in fh.read().split():
                pids += process_tree(int(child))
    return pids


def drain(node: subprocess.Popen, lines: list[str]) -> threading.Thread:
    thread = threading.Thread(target=lambda: lines.extend(node.stdout), daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def lost_node_env(digits_archive, tmp_path_factory):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVAL_", "TRAIN_", "AWS_"))}
    return {**env, "PYTHONPATH": str(ROOT), "TRAIN_DATA_URI": str(digits_archive),
            "TRAIN_CACHE_DIR": str(tmp_path_factory.mktemp("cache")), "TRAIN_DEVICE": "cpu", "TRAIN_THREADS": "1",
            "OMP_NUM_THREADS": "1", "TRAIN_BATCH_SIZE": "32", "TRAIN_LOG_EVERY": "5", "TRAIN_EPOCHS": "2"}


@pytest.fixture(scope="module")
def uninterrupted(lost_node_env, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("reference")
    results = run_nodes({**lost_node_env, "TRAIN_OUTPUT_URI": str(out)})
    assert [code for code, _ in results] == [0, 0], results[0][1][-3000:] + results[1][1][-3000:]
    metrics = read_metrics(out)
    assert metrics["world_size"] == 2
    return metrics


@pytest.mark.parametrize("lost", [1, 0], ids=["worker node lost", "master node lost"])
def test_a_lost_node_fails_the_other_and_both_resume_exactly(lost_node_env, uninterrupted, tmp_path, lost):
    out = tmp_path / "out"
    env = {**lost_node_env, "TRAIN_OUTPUT_URI": str(out)}
    port = free_port()
    nodes = [start_node(env, rank=rank, port=port) for rank in (0, 1)]
    logs: list[list[str]] = [[], []]
    try:
        for line in nodes[0].stdout:  # node 0's rank logs progress: kill once epoch 2 is under way
            logs[0].append(line)
            event = json.loads(line) if line.startswith("{") else {}
            if event.get("event") == "train" and event.get("epoch") == 2 and event.get("step") == 10:
                break
        else:
            raise AssertionError("node 0 ended early: " + "".join(logs[0])[-3000:])
        drains = [drain(node, log) for node, log in zip(nodes, logs)]
        for pid in process_tree(nodes[lost].pid):
            os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        survivor = nodes[1 - lost]
        try:
            survivor.wait(timeout=LOST_NODE_EXIT_S)
        except subprocess.TimeoutExpired:
            pass
        seconds = time.monotonic() - killed_at
    finally:
        for node in nodes:
            if node.poll() is None:
                for pid in process_tree(node.pid):
                    os.kill(pid, signal.SIGKILL)
                node.wait()
    for thread in drains:
        thread.join(10)
    text = "".join(logs[1 - lost])[-3000:]
    assert seconds < LOST_NODE_EXIT_S, f"the surviving node still ran {seconds:.0f} s after losing its peer: {text}"
    assert survivor.returncode not in (0, None), text
    assert not (out / "metrics.json").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir())[-1] == "e0001-s000000.pt"

    resumed = run_nodes(env)
    assert [code for code, _ in resumed] == [0, 0], resumed[0][1][-3000:] + resumed[1][1][-3000:]
    events = [json.loads(line) for line in resumed[0][1].splitlines() if line.startswith("{")]
    assert any(e["event"] == "resumed" for e in events)
    got = read_metrics(out)
    assert (got["test_accuracy"], got["test_loss"]) == (uninterrupted["test_accuracy"], uninterrupted["test_loss"])
    assert got["epochs_completed"] == uninterrupted["epochs_completed"] == 2
