"""Errors that end a job cleanly: a message naming the culprit and a distinct exit code."""

from common.exitcodes import ExitCode


class JobError(Exception):
    """Base class: carries the exit code; its message is shown to the user without a traceback."""

    exit_code = ExitCode.FAILURE


class ConfigError(JobError):
    exit_code = ExitCode.CONFIG


class InputDataError(JobError):
    exit_code = ExitCode.INPUT_DATA


class StorageError(JobError):
    exit_code = ExitCode.STORAGE


class Preempted(JobError):
    exit_code = ExitCode.PREEMPTED
