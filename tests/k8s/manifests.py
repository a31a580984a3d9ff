"""Rendered manifests for the tests: every overlay through `kubectl kustomize`, walked by kind."""

from __future__ import annotations

import copy
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
    """(where, PodSpec) for every pod template in the object; a TrainJob's is its effective pod."""
    if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
        yield name_of(doc), doc["spec"]["template"]["spec"]
    for where, spec in job_specs(doc):
        yield where, spec["template"]["spec"]
    if doc["kind"] == "TrainJob":
        yield f"{name_of(doc)}/node", trainjob_pod(doc)


# The ClusterTrainingRuntime the TrainJob names, vendored from Kubeflow Trainer v2.3.0.
RUNTIMES = {"torch-distributed": Path(__file__).parent / "upstream" / "torch_distributed.yaml"}
# Strategic-merge keys of the lists a runtime patch may touch (core/v1 PodSpec and Container).
MERGE_KEYS = {"containers": "name", "initContainers": "name", "volumes": "name", "env": "name",
              "volumeMounts": "mountPath"}


def merge(base, patch, field: str = ""):
    """A strategic merge patch as the Trainer applies runtimePatches: maps merge key by key, keyed
    lists merge item by item, anything else (tolerations, command) is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = merge(base[key], value, key) if key in base else copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and field in MERGE_KEYS:
        key = MERGE_KEYS[field]
        out = [copy.deepcopy(item) for item in base]
        for item in patch:
            at = next((i for i, old in enumerate(out) if old.get(key) == item.get(key)), None)
            if at is None:
                out.append(copy.deepcopy(item))
            else:
                out[at] = merge(out[at], item)
        return out
    return copy.deepcopy(patch)


def trainjob_pod(doc: dict) -> dict:
    """The pod spec the Trainer makes for a TrainJob's nodes: the runtime's template, then every
    runtime patch, then spec.trainer (image, command, args, env, resourcesPerNode) on the trainer
    container; automountServiceAccountToken, which no patch may set, is the ServiceAccount's."""
    runtime = yaml.safe_load(RUNTIMES[doc["spec"]["runtimeRef"]["name"]].read_text())
    (rjob,) = [r for r in runtime["spec"]["template"]["spec"]["replicatedJobs"] if r["name"] == "node"]
    pod = copy.deepcopy(rjob["template"]["spec"]["template"]["spec"])
    for patch in doc["spec"].get("runtimePatches", []):
        for rpatch in patch["trainingRuntimeSpec"]["template"]["spec"].get("replicatedJobs", []):
            if rpatch["name"] == "node":
                pod = merge(pod, rpatch["template"]["spec"]["template"].get("spec", {}))
    trainer = doc["spec"]["trainer"]
    (node,) = [c for c in pod["containers"] if c["name"] == "node"]
    for field in ("image", "command", "args"):
        if field in trainer:
            node[field] = trainer[field]
    node["env"] = merge(node.get("env", []), trainer.get("env", []), "env")
    node["resources"] = trainer.get("resourcesPerNode", node.get("resources", {}))
    if "automountServiceAccountToken" not in pod:
        account = pod.get("serviceAccountName", "default")
        accounts = {d["metadata"]["name"]: d for d in yaml.safe_load_all((K8S / "base" / "serviceaccount.yaml").read_text())}
        pod["automountServiceAccountToken"] = accounts[account].get("automountServiceAccountToken", True) \
            if account in accounts else True
    return pod


def containers(pod: dict) -> Iterator[dict]:
    yield from pod.get("initContainers", [])
    yield from pod["containers"]
