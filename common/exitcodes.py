"""One exit-code enum for every job; the Kubernetes podFailurePolicy uses the same numbers.

Numbers follow BSD sysexits(3) where one fits, so operators recognise them.
"""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1  # an unexpected bug: retrying may help, so Kubernetes counts it against backoffLimit
    DRIFT_DETECTED = 3  # the report was written, but thresholds moved beyond tolerance
    DIVERGED = 4  # training stopped: the loss became non-finite or stayed far above its start; a rerun diverges again
    INPUT_DATA = 65  # EX_DATAERR: the inputs are wrong; retrying cannot help
    STORAGE = 74  # EX_IOERR: storage unreachable or refused the request; a retry may help
    PREEMPTED = 75  # EX_TEMPFAIL: stopped by SIGTERM after checkpointing; rerun resumes
    CONFIG = 78  # EX_CONFIG: a setting is invalid; retrying cannot help
