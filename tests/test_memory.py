"""keep_freed_memory: freed numpy temporaries are reused instead of faulting fresh pages in."""

import subprocess
import sys

import pytest

CHILD = """
import resource, sys
import numpy as np
from common.memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
arrays = [np.ones(1 << 18) for _ in range(20)]  # 2 MiB each: above glibc's default mmap threshold
del arrays
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
arrays = [np.ones(1 << 18) for _ in range(20)]  # the same again, in the memory just freed?
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True).stdout
    return int(out.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_arrays_are_reused_without_page_faults():
    assert page_faults("keep") < 500  # reused
    assert page_faults("default") > 5000  # 20 arrays of 512 pages, faulted in afresh
