"""`python -m jobs.evaluate`: see jobs/evaluate/__init__.py for the runbook."""

from __future__ import annotations

import gc

if __name__ == "__main__":
    # First, before the ~0.3 s of imports: a SIGTERM now is recorded (and ends the run with 75
    # once it starts) instead of killing the process by signal (143).
    from common import preemption

    preemption.record_sigterm()
    # A short-lived process: the imports below build ~200k objects that live until exit, and the
    # cyclic GC rescanning them cost ~50 ms a run (a tenth of the polygon benchmark's). Off while
    # importing; then those objects are frozen out of its scans and it runs as usual (see the end).
    gc.disable()

import os
import sys
from pathlib import Path

from common.cli import make_parser, run_job
from common.memory import keep_freed_memory
from jobs.evaluate import __doc__ as RUNBOOK
from jobs.evaluate.job import run
from jobs.evaluate.settings import EvalSettings

SAMPLE = Path(__file__).resolve().parent / "sample"
DEMO_OUTPUT = "eval-demo"


# Kubernetes sends SIGTERM on preemption. Outputs are written whole or not at all, so stopping
# anywhere is safe (a storage call included, see common.preemption); exit PREEMPTED so the Job's
# podFailurePolicy does not count it.
STOPPED = "stopped by SIGTERM before the report was complete; nothing was written, rerun to evaluate"


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(prog="python -m jobs.evaluate", settings_cls=EvalSettings, summary=RUNBOOK)
    parser.add_argument("--demo", action="store_true",
                        help=f"evaluate the bundled sample ({SAMPLE}); output to ./{DEMO_OUTPUT}/ unless EVAL_OUTPUT_URI is set")
    args = parser.parse_args(argv)
    if args.demo:
        os.environ.setdefault("EVAL_PREDICTIONS_URI", str(SAMPLE / "predictions.csv"))
        os.environ.setdefault("EVAL_ANNOTATIONS_URI", str(SAMPLE / "annotations.json"))
        os.environ.setdefault("EVAL_OUTPUT_URI", str(Path.cwd() / DEMO_OUTPUT))
    return run_job(job="evaluate", settings_cls=EvalSettings, work=run, stop_on_sigterm=STOPPED,
                   log_level=os.environ.get("EVAL_LOG_LEVEL", "info"))


if __name__ == "__main__":
    gc.freeze()
    gc.enable()
    keep_freed_memory()  # numpy temporaries reuse memory instead of faulting fresh pages in
    sys.exit(main())
