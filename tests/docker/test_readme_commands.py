"""The README's "Run with Docker" and "Run on Kubernetes" sections name what exists and what the
image tests execute: same build flags, same run flags, same variables, real overlays and names."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from common.settings import env_name
from jobs.evaluate.settings import EvalSettings
from tests.images import test_images

ROOT = Path(__file__).resolve().parents[2]


def section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def commands(text: str) -> list[list[str]]:
    """Shell commands in the section's bash blocks, continuation lines joined, split like a shell."""
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    out = []
    for block in blocks:
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                out.append(shlex.split(line.replace("$(", "").replace(")", "")))
    return out


def env_names(cmd: list[str]) -> set[str]:
    return {cmd[i + 1].split("=")[0] for i, arg in enumerate(cmd[:-1]) if arg == "-e"}


def test_docker_section_has_the_image_tests_commands():
    cmds = commands(section("Run with Docker"))
    podman = [c for c in cmds if c[:2] == ["podman", "--runtime"]]
    assert podman and podman[0][: len(test_images.PODMAN_RUN)] == test_images.PODMAN_RUN
    buildah = [c for c in cmds if c[:2] == ["buildah", "build"]]
    assert buildah and f"BASE_IMAGE={test_images.BASE_IMAGE}" in buildah[0]
    assert "--isolation" in buildah[0] and "docker/Dockerfile.eval" in buildah[0]
    assert ["bash", "tests/images/prepare.sh"] in cmds
    # The plain `docker run` of the eval job sets what the image test sets (and nothing unknown).
    docker_eval = [c for c in cmds if c[:2] == ["docker", "run"] and c[-1] == "ml-evaluate"]
    assert docker_eval, "a plain `docker run ... ml-evaluate` line"
    names = env_names(docker_eval[0])
    assert {"AWS_ENDPOINT_URL", "EVAL_PREDICTIONS_URI", "EVAL_ANNOTATIONS_URI", "EVAL_OUTPUT_URI"} <= names
    assert env_names(podman[0]) == names
    known = {env_name(EvalSettings, f) for f in EvalSettings.model_fields}
    assert {n for n in names if n.startswith("EVAL_")} <= known
    for flag in ("--read-only", "--rm", "--network"):
        assert flag in docker_eval[0]


def test_docker_section_builds_and_composes_what_exists():
    cmds = commands(section("Run with Docker"))
    for cmd in cmds:
        if "-f" in cmd:
            assert (ROOT / cmd[cmd.index("-f") + 1]).exists(), cmd
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    assert any(c[:4] == ["docker", "compose", "-f", "docker/compose.yaml"] and "up" in c for c in cmds)
    for cmd in cmds:
        if cmd[:2] == ["docker", "compose"] and "run" in cmd:
            assert cmd[cmd.index("--entrypoint") + 2] in compose["services"]


def test_kubernetes_section_names_real_overlays_and_the_cronjob():
    text = section("Run on Kubernetes")
    mentioned = set(re.findall(r"k8s/overlays/([\w-]+)", text))
    existing = {p.name for p in (ROOT / "k8s" / "overlays").iterdir() if p.is_dir()}
    assert mentioned == existing
    cron = yaml.safe_load((ROOT / "k8s" / "base" / "eval-cronjob.yaml").read_text())
    assert f"kubectl -n ml-batch-jobs create job --from=cronjob/{cron['metadata']['name']}" in text
    for path in re.findall(r"`(k8s/[\w./-]+\.yaml)`", text):
        assert (ROOT / path).exists(), path


def test_compose_up_commands_watch_one_job_each():
    """A bare `up --abort-on-container-exit` stops every service at the first exit (train is killed
    when evaluate ends): each README/compose `up` must name the one job it waits for."""
    root = Path(__file__).resolve().parents[2]
    ups = [line for f in (root / "README.md", root / "docker" / "compose.yaml")
           for line in f.read_text().splitlines() if "compose -f docker/compose.yaml up" in line]
    assert ups
    for line in ups:
        args = line.split("up", 1)[1].split()
        if "--exit-code-from" in args or "--abort-on-container-exit" in args:
            assert "--exit-code-from" in args, line
            value_at = args.index("--exit-code-from") + 1
            services = [a for i, a in enumerate(args) if not a.startswith("-") and i != value_at]
            assert services == [args[value_at]], f"`up` must name only the service it exits with: {line}"
