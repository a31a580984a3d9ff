"""Every EVAL_/TRAIN_ variable the manifests and the compose file set is one the jobs accept.

Not just the names: each container's effective environment (its ConfigMaps, its literal env) is
loaded through the job's own settings class, so a bad value (an unknown preset, a policy typo)
fails here instead of as exit 78 in the cluster.
"""

from __future__ import annotations

import os
import re

import pytest
import yaml

from common.settings import env_name, load_settings
from jobs.evaluate.settings import EvalSettings
from jobs.train.settings import TrainSettings
from tests.k8s.manifests import OVERLAYS, ROOT, containers, name_of, pod_specs, render

SETTINGS = {"EVAL_": EvalSettings, "TRAIN_": TrainSettings}
KNOWN = {prefix: {env_name(cls, f) for f in cls.model_fields} for prefix, cls in SETTINGS.items()}
SAMPLE_FIELDS = {"RUN_ID": "evaluate-nightly-29000000", "NODE_RANK": "0", "JOB_COMPLETION_INDEX": "0"}


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion, with sample values for downward-API fields."""
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], SAMPLE_FIELDS.get(m[1], m[0])), value)


def container_env(docs: tuple[dict, ...], c: dict) -> dict[str, str]:
    config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref and (ref["name"] in config_maps or not ref.get("optional")):
            env.update(config_maps[ref["name"]])
    for var in c.get("env", []):
        if "value" in var:
            env[var["name"]] = expand(var["value"], env)
        elif ref := var.get("valueFrom", {}).get("configMapKeyRef"):
            env[var["name"]] = config_maps[ref["name"]][ref["key"]]
        else:
            env[var["name"]] = SAMPLE_FIELDS.get(var["name"], "x")
    return env


def environments():
    for overlay in OVERLAYS:
        docs = render(overlay)
        for doc in docs:
            for where, pod in pod_specs(doc):
                for c in containers(pod):
                    yield pytest.param(container_env(docs, c), id=f"{overlay}:{where}:{c['name']}")
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    for name, service in compose["services"].items():
        env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
        yield pytest.param(env, id=f"compose:{name}")


def check_environment(env: dict[str, str], monkeypatch) -> None:
    for prefix, cls in SETTINGS.items():
        names = {k for k in env if k.startswith(prefix)}
        if not names:
            continue
        assert names <= KNOWN[prefix], f"not {cls.__name__} variables: {sorted(names - KNOWN[prefix])}"
        for key in list(os.environ):
            if key.startswith(tuple(SETTINGS)):
                monkeypatch.delenv(key)
        for key in names:
            monkeypatch.setenv(key, env[key])
        load_settings(cls)  # raises ConfigError naming the variable


@pytest.mark.parametrize("env", list(environments()))
def test_job_environment_is_accepted_by_the_settings_class(env, monkeypatch):
    check_environment(env, monkeypatch)


def test_every_job_container_is_configured():
    """The check above must not pass vacuously: the jobs' containers do carry their variables."""
    seen = {prefix: 0 for prefix in SETTINGS}
    for param in environments():
        env = param.values[0]
        for prefix in SETTINGS:
            seen[prefix] += any(k.startswith(prefix) for k in env)
    assert seen["EVAL_"] >= len(OVERLAYS) * 2 + 1  # Job + CronJob per overlay, compose
    assert seen["TRAIN_"] >= len(OVERLAYS)


def test_the_check_catches_a_misspelt_variable_or_a_bad_value(monkeypatch):
    from common.errors import ConfigError

    with pytest.raises(AssertionError, match="EVAL_IOU_TRESHOLD"):
        check_environment({"EVAL_PREDICTIONS_URI": "a", "EVAL_ANNOTATIONS_URI": "b",
                           "EVAL_OUTPUT_URI": "c", "EVAL_IOU_TRESHOLD": "0.5"}, monkeypatch)
    with pytest.raises(ConfigError, match="TRAIN_PRESET"):
        check_environment({"TRAIN_DATA_URI": "a", "TRAIN_OUTPUT_URI": "b", "TRAIN_PRESET": "fastest"}, monkeypatch)
