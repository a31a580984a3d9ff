"""structlog setup: one JSON object per line on stdout in a container, readable text on a TTY.

Every line carries the job name and the run id (and the rank in training) through bound
context variables.
"""

import logging
import sys

import structlog


def configure_logging(*, job: str, run_id: str, level: str = "info", **context) -> structlog.BoundLogger:
    renderer = (
        structlog.dev.ConsoleRenderer(colors=False)
        if sys.stdout.isatty()
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # Unexpected errors keep their traceback, as structured data in JSON logs.
            *([] if isinstance(renderer, structlog.dev.ConsoleRenderer) else [structlog.processors.dict_tracebacks]),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        # One write per line: ranks sharing a pipe must not interleave halves of lines.
        logger_factory=structlog.WriteLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(job=job, run_id=run_id, **context)
    # boto3/botocore log through the standard library; keep them quiet unless asked.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    return structlog.get_logger()
