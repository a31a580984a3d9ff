"""How runs are launched (issue 14, fix 5): the platform (namespace, configuration, CronJob,
policies, services) is applied and re-applied at will; each run (the one-off evaluation Job and the
training Job/JobSet/TrainJob) is created once, selected by its label. Re-applying the platform
never starts work again, and a run created again evaluates nothing twice."""

from __future__ import annotations

import re

import pytest

from tests.k8s.manifests import OVERLAYS, ROOT, name_of, render

LAUNCH = "ml-batch-jobs/launch"
RUN_KINDS = {"Job", "JobSet", "TrainJob"}
APPLY = "-l 'ml-batch-jobs/launch!=run'"
CREATE = "-l ml-batch-jobs/launch=run"


def selected(docs, selector: str) -> set[str]:
    """kubectl's -l on the objects of the files: `key=value` or `key!=value` (absent key matches !=)."""
    key, op, value = re.fullmatch(r"([\w./-]+)(!=|=)([\w.-]+)", selector).groups()
    labels = lambda d: d["metadata"].get("labels", {})  # noqa: E731
    return {name_of(d) for d in docs if (labels(d).get(key) == value) == (op == "=")}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_apply_never_starts_work_and_create_starts_each_run_once(overlay):
    docs = render(overlay)
    platform = selected(docs, f"{LAUNCH}!=run")
    runs = selected(docs, f"{LAUNCH}=run")
    assert platform | runs == {name_of(d) for d in docs} and not platform & runs
    assert not {n for n in platform if n.split("/")[0] in RUN_KINDS}, "kubectl apply would run (again) after the TTL"
    assert {n for n in runs if n.split("/")[0] in RUN_KINDS} == runs
    assert "Job/evaluate" in runs and len(runs) == 2, runs  # the evaluation and one training form
    assert "CronJob/evaluate-nightly" in platform and "Namespace/ml-batch-jobs" in platform


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_one_off_evaluation_is_a_slot_named_by_its_job(overlay):
    (job,) = [d for d in render(overlay) if name_of(d) == "Job/evaluate"]
    (c,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in c["env"]}
    # The run id is the Job's name: a retry, or the same Job created again after its TTL, is the
    # same slot, and layout `runs` writes a slot's report only if absent (tests/evaluate/test_scheduled.py).
    assert env["RUN_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['batch.kubernetes.io/job-name']"
    assert env["EVAL_OUTPUT_LAYOUT"]["value"] == "runs"
    assert "$(RUN_ID)" not in env["EVAL_OUTPUT_URI"]["value"]


def test_readme_launches_the_way_the_manifests_say():
    readme = (ROOT / "README.md").read_text()
    applies = re.findall(r"^\s*kubectl apply -k .*$", readme, re.M)
    creates = re.findall(r"^\s*kubectl create -k .*$", readme, re.M)
    assert applies and creates
    assert all(APPLY in line for line in applies), applies
    assert all(CREATE in line for line in creates), creates
    for path in (ROOT / "k8s").rglob("*.yaml"):
        text, name = path.read_text(), path.relative_to(ROOT)
        for line in re.findall(r"kubectl (?:apply|create) -k .*", text):
            assert (APPLY in line) if " apply " in f" {line} " else (CREATE in line), f"{name}: {line}"
