"""common/forked.py: shares computed in forked children come back in order, a child's exception is
raised here, a child that dies raises WorkerFailed, children never outlive the call, and nothing
forks beside a thread not marked fork_safe."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from common import forked
from common.forked import WorkerFailed, can_fork, fork_safe, map_forked, usable_cpus


@pytest.fixture
def forks(monkeypatch):
    """The pids of the children os.fork made during the test (asserted first: forking is possible)."""
    for thread in threading.enumerate():  # threads an earlier test left finishing (a timed-out request, say)
        if thread is not threading.main_thread() and not getattr(thread, "fork_safe", False):
            thread.join(30)
    assert can_fork(), f"threads alive beside the main thread: {threading.enumerate()}"
    pids: list[int] = []
    real_fork = os.fork

    def recording_fork():
        pid = real_fork()
        if pid:
            pids.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", recording_fork)
    return pids


def assert_reaped(pids: list[int]) -> None:
    """Each child is gone: already waited for (no zombie left) and no such process."""
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        assert not Path(f"/proc/{pid}").exists() or _ppid(pid) != os.getpid(), f"child {pid} is still there"


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


# -- results ---------------------------------------------------------------------------------------


def _pid_and_array(share: int):
    return share, os.getpid(), np.arange(share * 1000, dtype=np.float64) / 7, {"share": share}


def test_results_in_order_from_other_processes(forks):
    shares = list(range(6))  # more shares than this machine's CPUs: each still has its own child
    results = map_forked(_pid_and_array, shares)
    assert [r[0] for r in results] == shares
    pids = [r[1] for r in results]
    assert pids[0] == os.getpid()
    assert os.getpid() not in pids[1:] and len(set(pids[1:])) == len(shares) - 1
    assert sorted(pids[1:]) == sorted(forks)
    for share, _, array, extra in results:
        np.testing.assert_array_equal(array, np.arange(share * 1000, dtype=np.float64) / 7)
        assert array.dtype == np.float64 and extra == {"share": share}
    assert_reaped(forks)


def _big(share: int) -> np.ndarray:
    if share == 0:
        time.sleep(0.3)  # the children write their results meanwhile, far more than a pipe holds
    return np.full(2_000_000, share, dtype=np.int32)  # 8 MB


def test_results_larger_than_a_pipe(forks):
    results = map_forked(_big, [0, 1, 2])
    assert [r.shape for r in results] == [(2_000_000,)] * 3
    assert [int(r[0]) for r in results] == [0, 1, 2] and all((r == r[0]).all() for r in results)
    assert_reaped(forks)


def test_no_shares_or_one_share_run_here(forks):
    assert map_forked(_pid_and_array, []) == []
    [(share, pid, array, _)] = map_forked(_pid_and_array, [5])
    assert (share, pid, array.size) == (5, os.getpid(), 5000)
    assert forks == []


def test_children_share_the_parents_memory(forks):
    data = bytes(range(256)) * 4096  # not pickled to the child: fn reads it through its closure
    results = map_forked(lambda i: (os.getpid(), data[i::4]), [0, 1, 2, 3])
    assert [r[1] for r in results] == [data[i::4] for i in range(4)]
    assert len({r[0] for r in results}) == 4


# -- failures --------------------------------------------------------------------------------------


def _raise_in_child(share: int):
    if share == 2:
        raise ValueError(f"boom in {share}")
    return share


def test_a_childs_exception_is_raised_here(forks):
    with pytest.raises(ValueError, match=r"^boom in 2$"):
        map_forked(_raise_in_child, [0, 1, 2, 3])
    assert len(forks) == 3
    assert_reaped(forks)


class _Unpicklable(Exception):
    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()  # pickle refuses a lock


class _NoUnpickle(Exception):
    def __init__(self, a, b):  # pickles, but unpickling calls __init__(message) and fails
        super().__init__(f"{a}/{b}")


def _raise_unpicklable(share: int):
    if share:
        raise _Unpicklable("cannot send me")
    return share


def _raise_no_unpickle(share: int):
    if share:
        raise _NoUnpickle("x", "y")
    return share


def test_an_unpicklable_exception_becomes_worker_failed(forks):
    with pytest.raises(WorkerFailed, match="_Unpicklable: cannot send me"):
        map_forked(_raise_unpicklable, [0, 1])
    assert_reaped(forks)


def test_an_exception_that_does_not_unpickle_becomes_worker_failed(forks):
    with pytest.raises(WorkerFailed, match="_NoUnpickle: x/y"):  # the child tries it before it sends
        map_forked(_raise_no_unpickle, [0, 1])
    assert_reaped(forks)


def _unpicklable_result(share: int):
    return threading.Lock() if share else share


def test_an_unpicklable_result_becomes_worker_failed(forks):
    with pytest.raises(WorkerFailed):
        map_forked(_unpicklable_result, [0, 1])


def _exit_in_child(share: int):
    if share == 1:
        os._exit(3)
    return share


def _kill_in_child(share: int):
    if share == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return share


@pytest.mark.parametrize("fn", [_exit_in_child, _kill_in_child])
def test_a_child_that_dies_raises_worker_failed(fn, forks):
    with pytest.raises(WorkerFailed, match=r"worker \d+ sent no result \(0 bytes\)"):
        map_forked(fn, [0, 1, 2])
    assert len(forks) == 2
    assert_reaped(forks)


def _sigterm_in_child(share: int):
    if share:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the default action ends the child before this returns
    return share


class _Handled(Exception):
    pass


def _handler(signum, frame):
    raise _Handled("the parent's SIGTERM handler ran in the child")


def test_the_parents_sigterm_handler_is_not_the_childs(forks):
    previous = signal.signal(signal.SIGTERM, _handler)
    try:
        with pytest.raises(WorkerFailed):
            map_forked(_sigterm_in_child, [0, 1])
        assert signal.getsignal(signal.SIGTERM) is _handler  # the parent's own stays
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert_reaped(forks)


def _parent_fails(share: int):
    if share == 0:
        time.sleep(0.2)  # the children are running (sleeping) by now
        raise KeyError("parent share")
    time.sleep(60)  # killed long before this
    return share


def test_a_failing_parent_share_kills_and_reaps_the_children(forks):
    start = time.monotonic()
    with pytest.raises(KeyError, match="parent share"):
        map_forked(_parent_fails, [0, 1, 2])
    assert time.monotonic() - start < 10
    assert len(forks) == 2
    assert_reaped(forks)


def _first_child_fails_others_sleep(share: int):
    if share == 1:
        raise ValueError("first child")
    if share > 1:
        time.sleep(60)
    return share


def test_a_failing_child_ends_the_others(forks):
    start = time.monotonic()
    with pytest.raises(ValueError, match="first child"):
        map_forked(_first_child_fails_others_sleep, [0, 1, 2, 3])
    assert time.monotonic() - start < 10
    assert_reaped(forks)


# -- when to fork ----------------------------------------------------------------------------------


def _pid(share: int) -> int:
    return os.getpid()


def test_a_thread_not_marked_fork_safe_keeps_everything_here(forks):
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="holds-who-knows-what", daemon=True)
    thread.start()
    try:
        assert not can_fork()
        assert map_forked(_pid, [0, 1, 2]) == [os.getpid()] * 3
        assert forks == []
        fork_safe(thread)
        assert can_fork()
        pids = map_forked(_pid, [0, 1, 2])
        assert pids[0] == os.getpid() and os.getpid() not in pids[1:] and len(set(pids)) == 3
        assert len(forks) == 2
    finally:
        stop.set()
        thread.join()
    assert_reaped(forks)


def test_fork_safe_returns_the_thread_and_blob_hashing_is_marked(tmp_path):
    from common.storage import Blob

    thread = threading.Thread(target=lambda: None)
    assert fork_safe(thread) is thread and thread.fork_safe is True
    blob = Blob("x", b"a" * 50_000_000).hash_in_background()
    hashing = blob._digest._thread
    assert hashing is not None and getattr(hashing, "fork_safe", False)
    assert blob.version.startswith("sha256:")


def test_no_fork_off_linux(monkeypatch, forks):
    monkeypatch.setattr(forked.sys, "platform", "darwin")
    assert not can_fork()
    assert map_forked(_pid, [0, 1]) == [os.getpid()] * 2
    assert forks == []


# -- usable_cpus -----------------------------------------------------------------------------------


CPU_MAX = "/sys/fs/cgroup/cpu.max"


@pytest.mark.parametrize(("affinity", "cpu_max", "expected"), [
    (8, "max 100000\n", 8),
    (8, "200000 100000\n", 2),
    (8, "150000 100000\n", 1),  # 1.5 CPUs: rounded down
    (8, "50000 100000\n", 1),  # half a CPU: still one
    (8, "800000 50000\n", 8),  # 16 CPUs' quota: the affinity caps it
    (2, "400000 100000\n", 2),
    (8, None, 8),  # no cgroup v2 file
    (8, "garbage\n", 8),
    (8, "abc 100000\n", 8),
    (1, None, 1),
])
def test_usable_cpus_honours_a_cgroup_limit(affinity, cpu_max, expected, monkeypatch, tmp_path):
    file = tmp_path / "cpu.max"
    if cpu_max is not None:
        file.write_text(cpu_max)
    asked = []

    def fake_path(p):
        asked.append(str(p))
        return file if str(p) == CPU_MAX else Path(p)

    monkeypatch.setattr(forked, "Path", fake_path)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(affinity)))
    assert usable_cpus() == expected
    assert asked == [CPU_MAX]


def test_usable_cpus_on_this_machine():
    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))


def _parent_fails_while_children_send(share: int):
    if share == 0:
        raise KeyError("parent share")
    return np.zeros(1_000_000)  # 8 MB: more than a pipe holds, the children are still sending


def test_a_failure_leaves_no_thread_pipe_or_child(forks):
    open_fds = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with pytest.raises(KeyError):
            map_forked(_parent_fails_while_children_send, [0, 1, 2, 3])
    assert threading.active_count() == 1
    assert len(os.listdir("/proc/self/fd")) == open_fds
    assert_reaped(forks)
