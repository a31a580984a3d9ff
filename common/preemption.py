"""SIGTERM (Kubernetes preemption) as a recorded fact that every layer can check.

Imported first by each job's `__main__` (nothing heavy is imported here), so a SIGTERM during
the ~0.3 s of imports is recorded instead of killing the process by signal (143):

- `record_sigterm()`: the handler only records the signal. Used while importing (an exception
  raised inside an import would surface as a traceback) and by jobs that stop at their own
  boundaries (training checkpoints first).
- `stop_on_sigterm(message)`: the handler records and raises `Preempted(message)` once, wherever
  the job is; a SIGTERM recorded earlier raises at once. Used by jobs whose outputs are whole or
  absent (evaluation), so stopping anywhere is safe.

Why a recorded flag and not only the exception: botocore wraps any exception raised inside its
HTTP send into `HTTPClientError` and retries the request, so the exception alone is lost.
`common.storage` checks `requested()` before every retry and after every failed call, and
re-raises the preemption instead.
"""

from __future__ import annotations

import signal

from common.errors import Preempted

_requested = False
_message = "stopped by SIGTERM; rerun"
_raised = False


def requested() -> bool:
    """True once a SIGTERM reached a handler installed here."""
    return _requested


def record_sigterm() -> None:
    """Record SIGTERM without raising (during imports, or for jobs with their own stop points)."""
    signal.signal(signal.SIGTERM, _record)


def stop_on_sigterm(message: str) -> None:
    """Raise `Preempted(message)` on SIGTERM from now on; at once if one was recorded already."""
    global _message
    _message = message
    signal.signal(signal.SIGTERM, _raise)
    raise_if_requested()


def raise_if_requested() -> None:
    if _requested:
        raise Preempted(_message)


def _record(signum, frame) -> None:
    global _requested
    _requested = True


def _raise(signum, frame) -> None:
    global _raised
    _record(signum, frame)
    if not _raised:  # once: a second SIGTERM must not interrupt the clean exit of the first
        _raised = True
        raise Preempted(_message)
