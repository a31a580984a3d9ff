"""The shell every job's `main()` runs in: `--help`, settings, logging, and exit codes.

A `JobError` ends the job with its exit code and one log line naming the problem, no traceback.
Anything else is a bug: it is logged with its traceback and exits `FAILURE`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TypeVar

import structlog
from pydantic_settings import BaseSettings

from common.errors import JobError
from common.exitcodes import ExitCode
from common.logs import configure_logging
from common.provenance import new_run_id
from common.settings import load_settings, settings_help

S = TypeVar("S", bound=BaseSettings)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # a wrong flag is a configuration error, not argparse's 2
        self.print_usage(sys.stderr)
        self.exit(ExitCode.CONFIG, f"{self.prog}: error: {message}\n")


def make_parser(*, prog: str, settings_cls: type[BaseSettings], summary: str) -> argparse.ArgumentParser:
    return _Parser(
        prog=prog,
        description=settings_help(settings_cls, summary=summary),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def run_job(
    *,
    job: str,
    settings_cls: type[S],
    work: Callable[[S, str, structlog.BoundLogger], int],
    context: dict | None = None,
    log_level: str = "info",
) -> int:
    """Load settings, configure logs, run `work(settings, run_id, log)`, map errors to exit codes."""
    run_id = new_run_id()
    log = configure_logging(job=job, run_id=run_id, level=log_level, **(context or {}))
    try:
        settings = load_settings(settings_cls)
        return int(work(settings, run_id, log))
    except JobError as exc:
        log.error("failed", error=str(exc), exit_code=int(exc.exit_code), reason=type(exc).__name__)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except Exception:
        log.exception("unexpected error")
        return int(ExitCode.FAILURE)
