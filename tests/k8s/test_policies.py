"""Policies every workload keeps, checked on the rendered overlays, container by container.

The restricted Pod Security Standard plus what issue 7 asks of batch pods: read-only root with an
emptyDir for /tmp, requests and limits, FallbackToLogsOnError, restartPolicy Never, a
podFailurePolicy that ignores disruptions and fails at once on configuration/input errors,
deadlines and TTLs, GPU scheduling, and no secret value written into a manifest.
"""

from __future__ import annotations

import re

import pytest

from common.exitcodes import ExitCode
from tests.k8s.manifests import OVERLAYS, containers, job_specs, name_of, pod_specs, render

SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY|CREDENTIAL", re.I)
# torchrun kills its workers 30 s after forwarding SIGTERM; the pod must outlive that.
TORCHRUN_STOP_TIMEOUT_S = 30


def workloads():
    for overlay in OVERLAYS:
        for doc in render(overlay):
            for where, pod in pod_specs(doc):
                yield pytest.param(doc, pod, id=f"{overlay}:{where}")


def batch_jobs():
    for overlay in OVERLAYS:
        for doc in render(overlay):
            for where, spec in job_specs(doc):
                yield pytest.param(doc, spec, id=f"{overlay}:{where}")


@pytest.mark.parametrize(("doc", "pod"), list(workloads()))
def test_pod_is_restricted(doc, pod):
    sc = pod.get("securityContext", {})
    assert sc.get("runAsNonRoot") is True
    assert sc.get("runAsUser", 0) > 0 and sc.get("runAsGroup", 0) > 0
    assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
    assert pod.get("automountServiceAccountToken") is False
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    assert all("hostPath" not in v for v in volumes.values())
    # The restricted profile's volume types (everything else is refused at admission).
    allowed = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
    assert all(set(v) - {"name"} <= allowed for v in volumes.values()), volumes
    assert not pod.get("securityContext", {}).get("sysctls"), "only safe sysctls pass; none are needed"
    for c in containers(pod):
        where = f"{name_of(doc)} container {c['name']}"
        csc = c.get("securityContext", {})
        assert csc.get("allowPrivilegeEscalation") is False, where
        assert csc.get("capabilities", {}).get("drop") == ["ALL"], where
        assert not csc.get("capabilities", {}).get("add"), where
        assert csc.get("privileged") in (None, False), where
        assert csc.get("readOnlyRootFilesystem") is True, where
        assert csc.get("runAsUser", 1) != 0, where
        assert not any(p.get("hostPort") for p in c.get("ports", [])), f"{where}: hostPort"
        assert csc.get("seccompProfile", {}).get("type", "RuntimeDefault") in ("RuntimeDefault", "Localhost"), where
        if doc["kind"] != "TrainJob":  # no runtime patch can set it (train-trainjob.yaml)
            assert c.get("terminationMessagePolicy") == "FallbackToLogsOnError", where
        image = c["image"]
        assert re.search(r"(:[\w.-]+|@sha256:[0-9a-f]{64})$", image.split("/")[-1]) and not image.endswith(":latest"), \
            f"{where}: pin the image ({image})"
        res = c.get("resources", {})
        assert {"cpu", "memory"} <= set(res.get("requests", {})), f"{where}: requests"
        assert "memory" in res.get("limits", {}), f"{where}: memory limit"
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        if c["name"] != "seed-demo-data":  # the seeding init container writes nothing
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{where}: /tmp must be an emptyDir"


@pytest.mark.parametrize(("doc", "pod"), list(workloads()))
def test_secrets_are_read_only_files_never_environment(doc, pod):
    """Credentials reach a process as a read-only file from a Secret volume (the AWS
    shared-credentials file, MinIO's *_FILE), never as an environment variable."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for c in containers(pod):
        where = f"{name_of(doc)} container {c['name']}"
        assert not any("secretRef" in s for s in c.get("envFrom", [])), f"{where}: envFrom a Secret"
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        for env in c.get("env", []):
            assert "secretKeyRef" not in env.get("valueFrom", {}), f"{where}: {env['name']} from a Secret"
            # A value may reference variables ($(AWS_...)) but never carry a credential itself.
            assert not re.search(r"://[^/$]+:[^/$]+@", env.get("value", "")), env["name"]
            if SECRET_NAME.search(env["name"]):
                assert env["name"].endswith("_FILE"), f"{where}: {env['name']} holds a secret"
        if any(e["name"] == "AWS_SHARED_CREDENTIALS_FILE" for e in c.get("env", [])):
            path = next(e["value"] for e in c["env"] if e["name"] == "AWS_SHARED_CREDENTIALS_FILE")
            mount = mounts[path.rsplit("/", 1)[0]]
            secret = volumes[mount["name"]]["secret"]
            assert mount.get("readOnly") is True, where
            assert secret["secretName"] == "s3-credentials" and secret.get("defaultMode", 0o644) & 0o007 == 0
            assert [i["key"] for i in secret["items"]] == ["credentials"], where
        elif c["name"] in ("evaluate", "train", "node"):
            pytest.fail(f"{where}: a job container without the credentials file")


def placeholders_only(value: str) -> bool:
    """A placeholder, or an AWS credentials file whose every value is one."""
    if value.startswith("REPLACE_ME"):
        return True
    lines = [ln for ln in value.splitlines() if "=" in ln]
    return bool(lines) and all(ln.split("=", 1)[1].strip().startswith("REPLACE_ME") for ln in lines)


def test_rendered_secrets_hold_placeholders_only():
    for overlay in OVERLAYS:
        for doc in render(overlay):
            if doc["kind"] == "Secret":
                assert "data" not in doc, "base64 data hides what is in it; use placeholders in stringData"
                for key, value in doc.get("stringData", {}).items():
                    assert placeholders_only(value), f"{overlay}: {name_of(doc)} {key}"


@pytest.mark.parametrize(("doc", "spec"), list(batch_jobs()))
def test_job_failure_and_lifetime_policy(doc, spec):
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert isinstance(spec.get("backoffLimit"), int)
    assert spec.get("activeDeadlineSeconds", 0) > 0
    ttl = doc["spec"].get("ttlSecondsAfterFinished") if doc["kind"] == "JobSet" else spec.get("ttlSecondsAfterFinished")
    if doc["kind"] == "CronJob":
        # A TTL would delete failed Jobs as early as successful ones: the history limits clean up.
        assert ttl is None, "CronJob Jobs are cleaned up by the history limits, not a TTL"
        assert doc["spec"]["failedJobsHistoryLimit"] > doc["spec"]["successfulJobsHistoryLimit"]
    else:
        assert ttl and ttl > 0
    rules = spec["podFailurePolicy"]["rules"]
    ignored = [r for r in rules if r["action"] == "Ignore" and r.get("onPodConditions")]
    assert any(c["type"] == "DisruptionTarget" and c["status"] == "True"
               for r in ignored for c in r["onPodConditions"]), "disruptions must not burn retries"
    assert rules[0] in ignored, "the disruption rule comes first: a disrupted pod never fails the Job"


@pytest.mark.parametrize(("doc", "spec"), list(batch_jobs()))
def test_pod_failure_policy_exit_codes_match_the_enum(doc, spec):
    names = {c["name"] for c in spec["template"]["spec"]["containers"]}
    by_action: dict[str, set[int]] = {}
    for rule in spec["podFailurePolicy"]["rules"]:
        codes = rule.get("onExitCodes")
        if not codes:
            continue
        assert codes["operator"] == "In"
        assert codes.get("containerName") in names
        values = set(codes["values"])
        assert values <= {int(c) for c in ExitCode}, f"unknown exit codes {values - set(map(int, ExitCode))}"
        by_action.setdefault(rule["action"], set()).update(values)
    # Retrying cannot fix a bad setting or bad input: fail the Job at once.
    assert {ExitCode.CONFIG, ExitCode.INPUT_DATA} <= by_action.get("FailJob", set())
    # A retry can fix these: they must stay countable retries, never FailJob or Ignore.
    for code in (ExitCode.FAILURE, ExitCode.STORAGE):
        assert all(code not in v for v in by_action.values()), code.name
    # Only a clean preemption (checkpoint written) is a free rerun.
    assert by_action.get("Ignore", set()) <= {ExitCode.PREEMPTED}
    # Training that diverged diverges again: never retried.
    if "train" in names:
        assert ExitCode.DIVERGED in by_action.get("FailJob", set()), "DIVERGED=4 must fail the Job"


@pytest.mark.parametrize(("doc", "pod"), list(workloads()))
def test_gpu_pods_are_scheduled_and_stopped_properly(doc, pod):
    gpus = [c for c in pod["containers"] if "nvidia.com/gpu" in c.get("resources", {}).get("limits", {})]
    if not gpus:
        return
    assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in pod["tolerations"])
    assert pod.get("nodeSelector")
    volumes = {v["name"]: v for v in pod["volumes"]}
    for c in gpus:
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
        # jobs.train.torchrun is torchrun passing the job's exit codes on to podFailurePolicy.
        assert c["command"][:5] == ["dumb-init", "--", "python", "-m", "jobs.train.torchrun"]
    assert pod["terminationGracePeriodSeconds"] >= 2 * TORCHRUN_STOP_TIMEOUT_S


@pytest.mark.parametrize(("doc", "pod"), list(workloads()))
def test_training_caches_are_writable(doc, pod):
    for c in pod["containers"]:
        if "jobs.train.torchrun" not in c.get("command", []):
            continue
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert {"/tmp", "/var/cache/ml-train", "/dev/shm"} <= mounts


@pytest.mark.parametrize(("doc", "pod"), list(workloads()))
def test_images_are_pinned_by_digest(doc, pod):
    """Every image by digest (then IfNotPresent is right), except the local overlay's own builds,
    which `kind load` puts on the node without a registry digest."""
    local = doc["metadata"].get("annotations", {}).get("checkov.io/skip3", "").startswith("CKV_K8S_43=")
    for c in containers(pod):
        image = c["image"]
        if not (local and image.startswith(("ml-evaluate:", "ml-train:"))):
            assert re.search(r"@sha256:[0-9a-f]{64}$", image), f"{name_of(doc)}: {image} not pinned by digest"
        assert c.get("imagePullPolicy", "IfNotPresent") == "IfNotPresent", name_of(doc)
