"""Run metadata recorded in every report: run id, timestamps, code and library versions."""

import datetime as dt
import importlib.metadata
import os
import platform
import subprocess
import sys
import uuid
from pathlib import Path

DISTRIBUTION = "ml-batch-jobs"


def new_run_id() -> str:
    """`RUN_ID` when the orchestrator provides one (a CronJob slot), else time plus a random suffix."""
    if run_id := os.environ.get("RUN_ID"):
        return run_id
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{now}-{uuid.uuid4().hex[:8]}"


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def code_version() -> str:
    """Package version plus the git commit: from `GIT_COMMIT` (set at image build) or the checkout."""
    try:
        version = importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        version = "0+unknown"
    commit = os.environ.get("GIT_COMMIT") or _checkout_commit(Path(__file__).resolve().parent.parent)
    return f"{version}+g{commit}" if commit else version


def _checkout_commit(root: Path) -> str | None:
    """The checkout's HEAD commit (short), read from .git without starting git; else asks git."""
    git = root / ".git"
    if not git.exists():
        return None
    try:
        if git.is_dir():
            head = (git / "HEAD").read_text().strip()
            if not head.startswith("ref: "):
                return head[:7]  # detached HEAD
            ref = head[5:]
            if (git / ref).is_file():
                return (git / ref).read_text().strip()[:7]
            for line in (git / "packed-refs").read_text().splitlines():
                if line.endswith(" " + ref):
                    return line[:7]
    except OSError:
        pass
    try:  # a worktree or submodule (.git is a file), or a layout read above did not cover
        return subprocess.run(["git", "-C", str(root), "rev-parse", "--short=7", "HEAD"],
                              capture_output=True, text=True, timeout=5, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def library_versions(*names: str) -> dict[str, str]:
    """Versions of the named distributions; an imported module's own `__version__` is used when it
    has one (reading package metadata costs milliseconds per name)."""
    versions = {"python": platform.python_version()}
    for name in names:
        module = sys.modules.get(name)
        if isinstance(getattr(module, "__version__", None), str):
            versions[name] = module.__version__
            continue
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions
