"""cpu_memory.keep_freed_memory: freed tensor memory is reused instead of page-faulted in again."""
import subprocess
import sys

import pytest

from alexnet2012.cpu_memory import keep_freed_memory

# A 64 MiB tensor is above glibc's largest automatic mmap threshold (32 MiB), so by default each
# allocation maps fresh pages and the first write faults every page in again. With the memory
# kept, a step that allocates what the step before freed faults nothing once the heap has grown
# (the first steps still grow it, and an odd later step may still fault one tensor's pages in: the
# median over the later steps is what is compared).
FAULTS_OF_A_REPEATED_STEP = """
import resource, statistics, sys, torch
from alexnet2012.cpu_memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory() is not None
def step():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a, b = torch.ones(1 << 24), torch.ones(1 << 22)
    (a.sum() + b.sum()).item()
    del a, b
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults = [step() for _ in range(12)]
print(statistics.median_low(faults[2:]))
"""


def faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", FAULTS_OF_A_REPEATED_STEP, mode],
                         capture_output=True, text=True, check=True).stdout
    return int(out.strip().splitlines()[-1])


def test_freed_memory_is_reused_instead_of_faulted_in_again():
    if keep_freed_memory() is None:
        pytest.skip("not glibc: keep_freed_memory changes nothing there")
    default, kept = faults("default"), faults("keep")
    assert default >= 32  # 64 MiB is at least 32 pages even with 2 MiB transparent huge pages
    assert kept * 10 < default, (kept, default)
