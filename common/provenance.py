"""Run metadata recorded in every report: run id, timestamps, code and library versions."""

import datetime as dt
import importlib.metadata
import os
import platform
import subprocess
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
    commit = os.environ.get("GIT_COMMIT")
    if not commit:
        root = Path(__file__).resolve().parent.parent
        if (root / ".git").exists():
            try:
                commit = subprocess.run(
                    ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                    capture_output=True, text=True, timeout=5, check=True,
                ).stdout.strip()
            except (OSError, subprocess.SubprocessError):
                commit = None
    return f"{version}+g{commit}" if commit else version


def library_versions(*names: str) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions
