"""NetworkPolicies as the API server would apply them to each pod template of every overlay:
evaluation pods take no ingress and reach only DNS and the S3 endpoint; training pods take ingress
only from their own job's pods on the rendezvous and collective ports; everything else is denied."""

from __future__ import annotations

import pytest

from tests.k8s.manifests import OVERLAYS, name_of, render

EPHEMERAL = (32768, 60999)
RENDEZVOUS = 29500


def selects(selector: dict, labels: dict) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] in ("In", "NotIn", "Exists", "DoesNotExist"), expr
        has = expr["key"] in labels
        ok = {"In": has and labels.get(expr["key"]) in expr.get("values", []),
              "NotIn": labels.get(expr["key"]) not in expr.get("values", []),
              "Exists": has, "DoesNotExist": not has}[expr["operator"]]
        if not ok:
            return False
    return True


def pod_labels(doc: dict) -> dict[str, dict]:
    """Labels of every pod an object makes (the controllers add the job-name labels)."""
    kind, spec = doc["kind"], doc.get("spec", {})
    if kind in ("Job", "Deployment"):
        return {name_of(doc): spec["template"]["metadata"]["labels"]}
    if kind == "CronJob":
        return {name_of(doc): spec["jobTemplate"]["spec"]["template"]["metadata"]["labels"]}
    if kind == "JobSet":
        return {f"{name_of(doc)}/{r['name']}": r["template"]["spec"]["template"]["metadata"]["labels"]
                for r in spec["replicatedJobs"]}
    if kind == "TrainJob":
        labels = {}
        for patch in spec.get("runtimePatches", []):
            for rjob in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
                labels.update(rjob["template"]["spec"]["template"].get("metadata", {}).get("labels", {}))
        return {f"{name_of(doc)}/node": labels}
    return {}


def cases():
    for overlay in OVERLAYS:
        docs = render(overlay)
        policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
        for doc in docs:
            for where, labels in pod_labels(doc).items():
                yield pytest.param(overlay, labels, policies, id=f"{overlay}:{where}")


def applying(policies, labels, direction):
    return [p for p in policies if direction in p["spec"]["policyTypes"] and selects(p["spec"]["podSelector"], labels)]


def ports(rule) -> set[tuple[str, int, int]]:
    return {(p.get("protocol", "TCP"), p["port"], p.get("endPort", p["port"])) for p in rule.get("ports", [])}


@pytest.mark.parametrize(("overlay", "labels", "policies"), list(cases()))
def test_every_pod_is_isolated_both_ways(overlay, labels, policies):
    # default-deny selects every pod: whatever no policy allows is refused, both ways.
    assert any(p["metadata"]["name"] == "default-deny" and p["spec"]["podSelector"] == {} for p in policies)
    assert applying(policies, labels, "Ingress") and applying(policies, labels, "Egress")
    # ... and each pod has a policy of its own, by its labels (checkov's CKV2_K8S_6 needs that too).
    assert any(p["spec"]["podSelector"].get("matchLabels") and selects(p["spec"]["podSelector"], labels)
               for p in policies)


@pytest.mark.parametrize(("overlay", "labels", "policies"), list(cases()))
def test_what_each_pod_may_reach(overlay, labels, policies):
    component = labels.get("app.kubernetes.io/component")
    ingress = [r for p in applying(policies, labels, "Ingress") for r in p["spec"].get("ingress", [])]
    egress = [r for p in applying(policies, labels, "Egress") for r in p["spec"].get("egress", [])]
    if labels.get("app.kubernetes.io/name") == "minio":
        (rule,) = ingress
        assert ports(rule) == {("TCP", 9000, 9000)} and egress == []
        return
    assert component in ("evaluation", "training"), labels
    dns = [r for r in egress if ports(r) == {("UDP", 53, 53), ("TCP", 53, 53)}]
    assert dns and all(peer["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}} for r in dns for peer in r["to"])
    s3 = [r for r in egress if r not in dns and not any("podSelector" in peer and
                                                        peer["podSelector"].get("matchLabels") == {"app.kubernetes.io/name": labels["app.kubernetes.io/name"]}
                                                        for peer in r["to"])]
    if overlay == "local":
        # The endpoint is the overlay's setting: the in-cluster MinIO (and the download of CIFAR-10
        # for the local training run).
        assert any(ports(r) == {("TCP", 9000, 9000)} and
                                           r["to"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "minio"}}}] for r in s3)
        assert all(ports(r) in ({("TCP", 9000, 9000)}, {("TCP", 443, 443)}) for r in s3)
        if component == "evaluation":
            assert all(ports(r) == {("TCP", 9000, 9000)} for r in s3)
    else:
        assert s3 and all(ports(r) == {("TCP", 443, 443)} and "169.254.0.0/16" in r["to"][0]["ipBlock"]["except"] for r in s3)
    if component == "evaluation":
        assert ingress == [], "evaluation pods serve nothing"
        return
    name = labels["app.kubernetes.io/name"]
    if name == "train":
        assert ingress == [], "single-node training talks over loopback only"
        return
    # Multi-node: only the same job's pods, only on the rendezvous and collective ports.
    assert ingress, name
    for rule in ingress:
        assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": name}}}]
        assert ports(rule) == {("TCP", RENDEZVOUS, RENDEZVOUS), ("TCP", *EPHEMERAL)}


def test_the_selector_check_sees_a_pod_without_policy():
    assert not selects({"matchLabels": {"app.kubernetes.io/component": "evaluation"}}, {"app.kubernetes.io/name": "x"})
    assert selects({"matchExpressions": [{"key": "a", "operator": "In", "values": ["b"]}]}, {"a": "b"})
