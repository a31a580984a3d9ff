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

from common import preemption, storage
from common.errors import JobError, Preempted
from common.exitcodes import ExitCode
from common.logs import configure_logging
from common.provenance import new_run_id
from common.settings import StorageSettings, load_settings, settings_help

S = TypeVar("S", bound=BaseSettings)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # a wrong flag is a configuration error, not argparse's 2
        self.print_usage(sys.stderr)
        self.exit(ExitCode.CONFIG, f"{self.prog}: error: {message}\n")


def make_parser(*, prog: str, settings_cls: type[BaseSettings], summary: str) -> argparse.ArgumentParser:
    storage_help = settings_help(StorageSettings, summary="Storage (both jobs; s3:// URIs):").split("\n", 1)[1]
    return _Parser(
        prog=prog,
        description=settings_help(settings_cls, summary=summary) + storage_help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def run_job(
    *,
    job: str,
    settings_cls: type[S],
    work: Callable[[S, str, structlog.BoundLogger], int],
    context: dict | None = None,
    log_level: str = "info",
    stop_on_sigterm: str | None = None,
) -> int:
    """Load settings, configure logs, run `work(settings, run_id, log)`, map errors to exit codes.

    `stop_on_sigterm`: the Preempted message a SIGTERM raises wherever the job is (for jobs whose
    outputs are whole or absent); None leaves SIGTERM to the job. A SIGTERM recorded before (see
    common.preemption) ends the run before the work either way. A failure after a SIGTERM is
    reported as PREEMPTED: the signal is what ended the run.
    """
    run_id = new_run_id()
    log = configure_logging(job=job, run_id=run_id, level=log_level, **(context or {}))
    try:
        if stop_on_sigterm is not None:
            preemption.stop_on_sigterm(stop_on_sigterm)
        storage.configure(load_settings(StorageSettings))
        settings = load_settings(settings_cls)
        preemption.raise_if_requested()
        return int(work(settings, run_id, log))
    except JobError as exc:
        if preemption.requested() and not isinstance(exc, Preempted):
            return _preempted(log, cause=str(exc))
        log.error("failed", error=str(exc), exit_code=int(exc.exit_code), reason=type(exc).__name__)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except Exception:
        if preemption.requested():
            return _preempted(log, cause="an error while stopping")
        log.exception("unexpected error")
        return int(ExitCode.FAILURE)


def _preempted(log, *, cause: str) -> int:
    log.error("failed", error=f"stopped by SIGTERM (then: {cause})", exit_code=int(ExitCode.PREEMPTED),
              reason="Preempted")
    return int(ExitCode.PREEMPTED)
