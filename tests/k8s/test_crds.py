"""Rendered JobSets and TrainJobs against the real CRDs (vendored in tests/k8s/upstream/) and the
admission checks no schema holds: the JobSet webhook's rule-name pattern and DNS-1123 names."""

from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.k8s.manifests import OVERLAYS, name_of, render

UPSTREAM = Path(__file__).parent / "upstream"
CRD_FILES = {"JobSet": "jobset.x-k8s.io_jobsets.yaml", "TrainJob": "trainer.kubeflow.org_trainjobs.yaml"}
# pkg/webhooks/jobset_webhook.go (v0.8.0 .. v0.12.0): ruleNameFmt, length 1..128.
JOBSET_RULE_NAME = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def schema_of(kind: str) -> dict:
    crd = next(d for d in yaml.safe_load_all((UPSTREAM / CRD_FILES[kind]).read_text()) if d)
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    return version["schema"]["openAPIV3Schema"]


def unknown_fields(obj, schema: dict, path: str = "") -> list[str]:
    """Paths of fields the schema does not declare (the API server prunes or rejects them)."""
    found = []
    if isinstance(obj, dict) and schema.get("type") == "object":
        if schema.get("x-kubernetes-preserve-unknown-fields") or ("properties" not in schema and "additionalProperties" in schema):
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict):
                for key, value in obj.items():
                    found += unknown_fields(value, extra, f"{path}.{key}")
            return found
        props = schema.get("properties", {})
        for key, value in obj.items():
            if path == "" and key in ("apiVersion", "kind", "metadata"):  # ObjectMeta: the server's own
                continue
            if key not in props:
                found.append(f"{path}.{key}")
            else:
                found += unknown_fields(value, props[key], f"{path}.{key}")
    elif isinstance(obj, list) and "items" in schema:
        for i, item in enumerate(obj):
            found += unknown_fields(item, schema["items"], f"{path}[{i}]")
    return found


def custom_resources():
    for overlay in OVERLAYS:
        for doc in render(overlay):
            if doc["kind"] in CRD_FILES:
                yield pytest.param(doc, id=f"{overlay}:{name_of(doc)}")


def test_every_custom_kind_is_rendered_somewhere():
    assert {d.values[0]["kind"] for d in custom_resources()} == set(CRD_FILES)


@pytest.mark.parametrize("doc", list(custom_resources()))
def test_custom_resource_matches_the_real_crd(doc):
    schema = schema_of(doc["kind"])
    jsonschema.Draft7Validator(schema).validate(doc)
    assert unknown_fields(doc, schema) == [], f"{name_of(doc)}: fields the CRD does not have"


def test_unknown_field_walk_sees_a_typo():
    doc = next(p.values[0] for p in custom_resources() if p.values[0]["kind"] == "JobSet")
    bad = yaml.safe_load(yaml.safe_dump(doc))
    bad["spec"]["failurePolicy"]["maxRestart"] = 3
    assert unknown_fields(bad, schema_of("JobSet")) == [".spec.failurePolicy.maxRestart"]


@pytest.mark.parametrize("doc", [p for p in custom_resources() if p.values[0]["kind"] == "JobSet"])
def test_jobset_failure_policy_passes_the_webhook(doc):
    policy = doc["spec"]["failurePolicy"]
    names = [r["name"] for r in policy["rules"]]
    assert len(set(names)) == len(names)
    for name in names:
        assert 1 <= len(name) <= 128 and JOBSET_RULE_NAME.match(name), f"rule name {name!r} is refused"
    by_reason = {}
    for rule in policy["rules"]:
        for reason in rule.get("onJobFailureReasons", []):
            by_reason.setdefault(reason, []).append(rule)
    # A child Job past its deadline fails the JobSet instead of restarting it (up to 4 days).
    assert [r["action"] for r in by_reason["DeadlineExceeded"]] == ["FailJobSet"]
    # Preemption (exit 75) restarts without using up maxRestarts; it must come before FailJobSet.
    first = by_reason["PodFailurePolicy"][0]
    assert first["action"] == "RestartJobSetAndIgnoreMaxRestarts"
    assert any(re.fullmatch(p, "Container train for pod ns/p-0 failed with exit code 75 matching FailJob rule at index 2")
               for p in first["onJobFailureMessagePatterns"])
    assert not any(re.fullmatch(p, "Container train for pod ns/p-0 failed with exit code 78 matching FailJob rule at index 1")
                   for p in first["onJobFailureMessagePatterns"])


def test_names_are_dns1123_labels_within_63():
    for overlay in OVERLAYS:
        for doc in render(overlay):
            name = doc["metadata"].get("name") or doc["metadata"].get("generateName", "x")
            assert len(name) <= 63 and DNS1123_LABEL.match(name.rstrip("-")), f"{overlay}: {name_of(doc)}"
