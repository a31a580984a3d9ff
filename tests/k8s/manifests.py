"""Rendered manifests for the tests: every overlay through `kubectl kustomize`, walked by kind."""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").exists())
# Kinds that are custom resources: kubernetes-validate has no schema for them (see test_manifests).
if shutil.which("kubectl") is None:
    pytest.skip("kubectl is not installed (it renders the kustomizations)", allow_module_level=True)
CRD_KINDS = {("jobset.x-k8s.io/v1alpha2", "JobSet"), ("trainer.kubeflow.org/v1alpha1", "TrainJob")}


@functools.cache
def render(overlay: str) -> tuple[dict, ...]:
    out = subprocess.run([shutil.which("kubectl"), "kustomize", str(K8S / "overlays" / overlay)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"kubectl kustomize {overlay} failed:\n{out.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def all_docs() -> Iterator[tuple[str, dict]]:
    for overlay in OVERLAYS:
        for doc in render(overlay):
            yield overlay, doc


def name_of(doc: dict) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def job_specs(doc: dict) -> Iterator[tuple[str, dict]]:
    """(where, JobSpec) for every Job the object creates: Job, CronJob, and each JobSet replicatedJob."""
    kind = doc["kind"]
    if kind == "Job":
        yield name_of(doc), doc["spec"]
    elif kind == "CronJob":
        yield name_of(doc), doc["spec"]["jobTemplate"]["spec"]
    elif kind == "JobSet":
        for rjob in doc["spec"]["replicatedJobs"]:
            yield f"{name_of(doc)}/{rjob['name']}", rjob["template"]["spec"]


def pod_specs(doc: dict) -> Iterator[tuple[str, dict]]:
    """(where, PodSpec) for every pod template in the object."""
    if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
        yield name_of(doc), doc["spec"]["template"]["spec"]
    for where, spec in job_specs(doc):
        yield where, spec["template"]["spec"]


def containers(pod: dict) -> Iterator[dict]:
    yield from pod.get("initContainers", [])
    yield from pod["containers"]
