"""The Kubeflow TrainJob as the Trainer runs it: the vendored `torch-distributed` runtime (v2.3.0)
plus the TrainJob's runtimePatches and trainer fields (tests/k8s/manifests.trainjob_pod). The
policy tests (test_policies.py) check that effective pod like every other pod template; these
check what is particular to the TrainJob."""

from __future__ import annotations

import copy

import pytest

from tests.k8s.manifests import K8S, render, trainjob_pod


@pytest.fixture(scope="module")
def docs() -> tuple[dict, ...]:
    return render("gpu-kubeflow")


@pytest.fixture(scope="module")
def trainjob(docs) -> dict:
    (doc,) = [d for d in docs if d["kind"] == "TrainJob"]
    return doc


def test_the_runtime_alone_would_be_refused(trainjob):
    """Why the patches exist: the upstream runtime's pod has no security context and runs as the
    default ServiceAccount, which the restricted namespace refuses."""
    bare = copy.deepcopy(trainjob)
    bare["spec"].pop("runtimePatches")
    pod = trainjob_pod(bare)
    assert "securityContext" not in pod and pod.get("serviceAccountName") is None
    assert pod["automountServiceAccountToken"] is True


def test_patched_pod_is_the_other_training_forms_pod(trainjob, docs):
    pod = trainjob_pod(trainjob)
    (single,) = [d for d in render("gpu") if d["kind"] == "Job" and d["metadata"]["name"] == "train"]
    other = single["spec"]["template"]["spec"]
    for field in ("serviceAccountName", "securityContext", "tolerations", "nodeSelector",
                  "terminationGracePeriodSeconds", "automountServiceAccountToken"):
        assert pod[field] == other[field], field
    assert {v["name"]: v for v in pod["volumes"]} == {v["name"]: v for v in other["volumes"]}
    (node,) = pod["containers"]
    (train,) = other["containers"]
    assert node["securityContext"] == train["securityContext"]
    assert sorted(node["volumeMounts"], key=str) == sorted(train["volumeMounts"], key=str)
    assert node["image"] == train["image"]  # the overlay's `images:` reach the trainer too


def test_every_train_config_key_reaches_the_trainer(trainjob, docs):
    (config,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "train-config"]
    env = {e["name"]: e for e in trainjob["spec"]["trainer"]["env"]}
    missing = sorted(set(config["data"]) - set(env))
    assert not missing, f"train-config keys the TrainJob drops: {missing}"
    for key in config["data"]:
        ref = env[key].get("valueFrom", {}).get("configMapKeyRef")
        # Only the output prefix is the TrainJob's own (its checkpoints must not mix with another form's).
        assert (ref == {"name": "train-config", "key": key}) or key == "TRAIN_OUTPUT_URI", key


def test_minimum_trainer_version_is_stated():
    text = (K8S / "components" / "train-kubeflow" / "train-trainjob.yaml").read_text()
    assert "KUBEFLOW TRAINER v2.3.0 OR LATER" in text
