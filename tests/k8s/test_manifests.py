"""Every overlay renders and validates against the Kubernetes OpenAPI schemas in strict mode.

Built-in kinds are validated whole, with `kubernetes-validate --strict` (unknown fields are errors),
against the oldest Kubernetes the manifests need (1.31: podFailurePolicy GA, CronJob timeZone) and
the newest the validator knows. JobSet and TrainJob are custom resources with no schema in
kubernetes-validate, and their CRDs cannot be fetched here, so they are checked structurally: their
top-level fields against the CRD's field list, and everything in them that is a built-in type (the
JobSet's Job templates, the TrainJob's container fields) wrapped in a built-in object and validated
strictly like the rest.
"""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest
import yaml

from tests.k8s.manifests import CRD_KINDS, K8S, OVERLAYS, name_of, render, trainjob_pod
from tests.k8s.test_policies import placeholders_only

VERSIONS = ("1.31.0", "1.37.0")
# Fields of the CRDs' specs (JobSet v0.8+ v1alpha2 API; Kubeflow Trainer v2 v1alpha1 API).
JOBSET_SPEC = {"replicatedJobs", "network", "successPolicy", "failurePolicy", "startupPolicy",
               "suspend", "coordinator", "managedBy", "ttlSecondsAfterFinished"}
JOBSET_RJOB = {"name", "groupName", "template", "replicas", "dependsOn"}
JOBSET_FAILURE_ACTIONS = {"FailJobSet", "RestartJobSet", "RestartJobSetAndIgnoreMaxRestarts"}
JOB_FAILURE_REASONS = {"BackoffLimitExceeded", "DeadlineExceeded", "FailedIndexes",
                       "MaxFailedIndexesExceeded", "PodFailurePolicy"}
TRAINJOB_SPEC = {"runtimeRef", "initializer", "trainer", "labels", "annotations",
                 "podTemplateOverrides", "suspend", "managedBy", "runtimePatches"}
TRAINJOB_TRAINER = {"image", "command", "args", "env", "numNodes", "resourcesPerNode", "numProcPerNode"}


def validate_builtin(doc: dict) -> None:
    for version in VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name_of(doc)} invalid for Kubernetes {version}: {exc.path}: {exc.message}")


def validate_jobset(doc: dict) -> None:
    spec = doc["spec"]
    assert set(spec) <= JOBSET_SPEC, f"unknown JobSet fields {set(spec) - JOBSET_SPEC}"
    for rule in spec.get("failurePolicy", {}).get("rules", []):
        assert rule["action"] in JOBSET_FAILURE_ACTIONS and rule.get("name")
        assert set(rule.get("onJobFailureReasons", [])) <= JOB_FAILURE_REASONS
    for rjob in spec["replicatedJobs"]:
        assert set(rjob) <= JOBSET_RJOB, f"unknown replicatedJob fields {set(rjob) - JOBSET_RJOB}"
        # The template is a batch/v1 JobTemplateSpec: validate it as a Job.
        job = {"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": f"{doc['metadata']['name']}-{rjob['name']}",
                            **copy.deepcopy(rjob["template"].get("metadata", {}))},
               "spec": copy.deepcopy(rjob["template"]["spec"])}
        validate_builtin(job)


def validate_trainjob(doc: dict) -> None:
    spec = doc["spec"]
    assert set(spec) <= TRAINJOB_SPEC, f"unknown TrainJob fields {set(spec) - TRAINJOB_SPEC}"
    assert spec["runtimeRef"]["name"]
    trainer = spec["trainer"]
    assert set(trainer) <= TRAINJOB_TRAINER, f"unknown trainer fields {set(trainer) - TRAINJOB_TRAINER}"
    # The pod the Trainer makes (vendored runtime + runtimePatches + trainer) must be a valid Pod.
    validate_builtin({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": doc["metadata"]["name"]},
                      "spec": trainjob_pod(doc)})


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates(overlay):
    docs = render(overlay)
    assert docs, f"{overlay} renders nothing"
    for doc in docs:
        key = (doc["apiVersion"], doc["kind"])
        if key == ("jobset.x-k8s.io/v1alpha2", "JobSet"):
            validate_jobset(doc)
        elif key == ("trainer.kubeflow.org/v1alpha1", "TrainJob"):
            validate_trainjob(doc)
        else:
            assert key not in CRD_KINDS
            validate_builtin(doc)


def test_expected_overlays_and_workloads():
    assert {"local", "gpu", "gpu-jobset", "gpu-indexed", "gpu-kubeflow"} <= set(OVERLAYS)
    kinds = {overlay: {name_of(d) for d in render(overlay)} for overlay in OVERLAYS}
    for overlay in OVERLAYS:
        assert {"Job/evaluate", "CronJob/evaluate-nightly", "ConfigMap/eval-config"} <= kinds[overlay]
    assert {"Job/train", "Deployment/minio", "Service/minio", "Secret/s3-credentials"} <= kinds["local"]
    assert "Job/train" in kinds["gpu"]
    assert "JobSet/train-multinode" in kinds["gpu-jobset"]
    assert {"Job/train-indexed", "Service/train-indexed"} <= kinds["gpu-indexed"]
    assert "TrainJob/train-kubeflow" in kinds["gpu-kubeflow"]
    # Cloud overlays create no Secret: credentials come from workload identity or out of band.
    for overlay in OVERLAYS:
        if overlay != "local":
            assert not any(d["kind"] == "Secret" for d in render(overlay)), overlay


def test_everything_lands_in_the_namespace_that_enforces_the_restricted_profile():
    for overlay in OVERLAYS:
        docs = render(overlay)
        (namespace,) = [d for d in docs if d["kind"] == "Namespace"]
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        for doc in docs:
            if doc["kind"] != "Namespace":
                assert doc["metadata"].get("namespace") == namespace["metadata"]["name"], f"{overlay}: {name_of(doc)}"
                assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "ml-batch-jobs"


def test_example_secret_validates_and_holds_placeholders_only():
    doc = yaml.safe_load((K8S / "base" / "s3-credentials.example.yaml").read_text())
    validate_builtin(doc)
    assert list(doc["stringData"]) == ["credentials"]  # the AWS shared-credentials file the pods mount
    assert placeholders_only(doc["stringData"]["credentials"])


def test_indexed_job_rendezvous_matches_its_service():
    docs = {name_of(d): d for d in render("gpu-indexed")}
    job, svc = docs["Job/train-indexed"], docs["Service/train-indexed"]
    pod = job["spec"]["template"]["spec"]
    assert job["spec"]["completionMode"] == "Indexed"
    assert svc["spec"]["clusterIP"] == "None" and pod["subdomain"] == svc["metadata"]["name"]
    assert svc["spec"]["selector"] == {"batch.kubernetes.io/job-name": job["metadata"]["name"]}
    command = pod["containers"][0]["command"]
    assert f"--master-addr={job['metadata']['name']}-0.{svc['metadata']['name']}" in command
    assert "--node-rank=$(JOB_COMPLETION_INDEX)" in command
    assert f"--nnodes={job['spec']['completions']}" in command


def test_jobset_rendezvous_is_its_first_pod():
    (jobset,) = [d for d in render("gpu-jobset") if d["kind"] == "JobSet"]
    name, rjob = jobset["metadata"]["name"], jobset["spec"]["replicatedJobs"][0]
    subdomain = jobset["spec"]["network"].get("subdomain", name)
    command = rjob["template"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert f"--master-addr={name}-{rjob['name']}-0-0.{subdomain}" in command
    assert f"--nnodes={rjob['template']['spec']['completions']}" in command


def test_cronjob_schedule_policy():
    for overlay in OVERLAYS:
        (cron,) = [d for d in render(overlay) if d["kind"] == "CronJob"]
        spec = cron["spec"]
        assert spec["concurrencyPolicy"] == "Forbid"
        assert spec["timeZone"] and spec["startingDeadlineSeconds"] > 0
        assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
        # Each run under its own prefix, keyed by the Job's name (one per schedule slot), compared
        # with the previous complete run (the `latest` pointer).
        env = {e["name"]: e for e in spec["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["RUN_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['batch.kubernetes.io/job-name']"
        assert env["EVAL_OUTPUT_LAYOUT"]["value"] == "runs"
        assert env["EVAL_BASELINE_URI"]["value"] == "latest"
        assert spec["jobTemplate"]["spec"]["activeDeadlineSeconds"] < 24 * 3600


def test_multi_node_forms_say_what_a_lost_node_does():
    """Issue 12: which pods are recreated, by which setting, when a node dies outright."""
    for name in ("train-indexed/train-indexed-job.yaml", "train-jobset/train-jobset.yaml"):
        text = (K8S / "components" / name).read_text()
        assert "A LOST NODE" in text and "DisruptionTarget" in text and "out-of-service" in text, name
