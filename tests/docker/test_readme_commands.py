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
    assert any(c[:5] == ["docker", "compose", "-f", "docker/compose.yaml", "run"] for c in cmds)
    for cmd in cmds:
        if cmd[:2] == ["docker", "compose"] and "--entrypoint" in cmd:
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


JOB_SERVICES = {"evaluate", "train"}


def compose_lines() -> list[str]:
    root = Path(__file__).resolve().parents[2]
    return [line for f in (root / "README.md", root / "docker" / "compose.yaml")
            for line in f.read_text().splitlines() if "compose -f docker/compose.yaml" in line]


def test_compose_commands_run_one_job_each():
    """Each job on its own, after the store is seeded: `run --rm --no-deps JOB` starts and watches
    JOB alone and exits with its code. No `up` for a job: podman-compose's `up --exit-code-from JOB
    JOB` watches the dependencies too (mc-init exiting stops JOB; the image tests' compose run found
    it), and a bare --abort-on-container-exit stops the stack at the first exit."""
    lines = compose_lines()
    assert lines
    jobs_run = set()
    for line in lines:
        args = line.split("compose -f docker/compose.yaml", 1)[1].split("#")[0].split()
        assert args[0] != "up", f"a job started by `up`: {line}"
        if args[0] == "run":
            service = next(a for i, a in enumerate(args[1:], 1)
                           if not a.startswith("-") and args[i - 1] != "--entrypoint")
            if service in JOB_SERVICES:
                assert "--no-deps" in args and "--rm" in args, line
                jobs_run.add(service)
    assert jobs_run == JOB_SERVICES
    # The store is seeded first, by the seeding service's own run (it starts MinIO as its dependency).
    readme = [ln for ln in lines if ln.startswith("docker compose")]
    seed = next(i for i, ln in enumerate(readme) if ln.split()[4:7] == ["run", "--rm", "mc-init"])
    assert all(seed < i for i, ln in enumerate(readme) if "--no-deps evaluate" in ln or "--no-deps train" in ln)
