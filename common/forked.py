"""Spread a step that holds the GIL over the CPUs: forked workers that send their results back pickled.

msgspec's JSON decoder and the Python loops around it hold the GIL, so threads do not help them;
a forked child shares the parent's memory (copy on write) and needs no pickling of its input.
Fork is only used where it is safe: on Linux, and in a process whose other threads (if any) are
marked `fork_safe` (a child of a threaded process inherits every lock some other thread held at
that moment; a thread that only hashes a buffer holds none the child could need).
"""

from __future__ import annotations

import functools
import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


class WorkerFailed(RuntimeError):
    """A forked worker died or could not send its result (its own exceptions are re-raised as they are)."""


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity, capped by a cgroup CPU limit (a pod's `limits.cpu`)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:  # cgroup v2: "max 100000" (no limit) or "<quota> <period>" in microseconds
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def fork_safe(thread: threading.Thread) -> threading.Thread:
    """Mark a thread that takes no lock a forked child could need (one that only hashes a buffer)."""
    thread.fork_safe = True
    return thread


def can_fork() -> bool:
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    return sys.platform.startswith("linux") and all(getattr(t, "fork_safe", False) for t in others)


def map_forked(fn: Callable[[T], R], shares: Sequence[T]) -> list[R]:
    """[fn(share) for share in shares]: the first share in this process, each other in a forked child.

    Results come back in order. An exception raised by `fn` in a child is raised here (after every
    child is reaped); a child that dies or cannot send its result raises WorkerFailed. Where
    forking is not safe, all shares run here, one after another.
    """
    if len(shares) <= 1 or not can_fork():
        return [fn(share) for share in shares]
    children: list[_Child] = []
    try:
        for share in shares[1:]:
            children.append(_Child(fn, share))
        results = [fn(shares[0])]
        return results + [child.result() for child in children]
    finally:
        for child in children:
            child.close()


class _Child:
    """fn(*args) started in a forked child while this process goes on; `result()` waits for it
    (and raises what it raised); `close()` reaps it, killed first if its result was not read."""

    def __init__(self, fn: Callable[..., R], *args):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: compute, send, leave without running the parent's cleanup
            os.close(read_end)
            _child(functools.partial(fn, *args), write_end)
        os.close(write_end)
        self.pid: int | None = pid
        self._pipe = read_end

    def result(self):
        """The child's result. It is read only now (a thread reading it meanwhile made this process
        slower: with a second thread, each copy-on-write fault costs a TLB shootdown); the child
        waits with what the pipe does not hold."""
        try:
            with os.fdopen(self._pipe, "rb", closefd=False) as pipe:
                payload = pipe.read()
            try:
                ok, value = pickle.loads(payload)
            except Exception:
                raise WorkerFailed(f"worker {self.pid} sent no result ({len(payload)} bytes)") from None
        finally:
            self.close(kill=False)
        if not ok:
            raise value
        return value

    def close(self, *, kill: bool = True) -> None:
        """Reap the child, killed first unless its result was read (its work is not wanted); safe to
        call more than once."""
        pid, self.pid = self.pid, None
        if pid is None:
            return
        if kill:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        os.close(self._pipe)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def _child(fn: Callable[[], R], write_end: int) -> None:
    status = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the parent's preemption handler is not ours
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        try:
            result = fn()
        except BaseException as exc:  # noqa: BLE001 - sent to the parent, which raises it
            payload = _pickled_exception(exc)
        else:
            try:
                payload = pickle.dumps((True, result), protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:  # a result that does not pickle: the worker cannot send it
                payload = pickle.dumps((False, WorkerFailed(f"cannot send the result: {type(exc).__name__}: {exc}")))
        with os.fdopen(write_end, "wb") as out:
            out.write(payload)
        status = 0
    finally:
        os._exit(status)


def _pickled_exception(exc: BaseException) -> bytes:
    try:
        payload = pickle.dumps((False, exc), protocol=pickle.HIGHEST_PROTOCOL)
        pickle.loads(payload)  # some exceptions pickle but do not unpickle (required arguments)
        return payload
    except Exception:
        return pickle.dumps((False, WorkerFailed(f"{type(exc).__name__}: {exc}")))
