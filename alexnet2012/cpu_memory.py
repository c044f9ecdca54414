"""Keep the CPU's freed activation memory for the next step instead of returning it to the system.

PyTorch allocates CPU tensors with the C library's ``malloc``. glibc's defaults hand every block
above 128 KiB-32 MiB (the threshold adapts) to the kernel with ``mmap`` and give it back on
``free``, and return the free top of the heap as soon as 128 KiB of it is unused. A training
step allocates and frees hundreds of MB of activations, so under those defaults every step
page-faults its activations in again: on the 2-core test machine, at batch 32, that was about
0.27 s of kernel time per 1.2 s step of this net and 0.12 s for torchvision's AlexNet, and with
this setting 0.06 s and 0.01 s (steps 1.06-1.08 s instead of 1.19-1.26 s). This module
raises both thresholds once per process, which has the effect of the jemalloc or tcmalloc
preload that Intel's PyTorch CPU guide recommends, with nothing to install. Where the C library
is not glibc it changes nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from typing import Optional

# mallopt() parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Blocks below 1 GiB come from the heap, and up to 2 GiB of free heap is kept (mallopt takes an
# int): more than an AlexNet step frees at the batch sizes a CPU can train.
MMAP_THRESHOLD = 1 << 30
TRIM_THRESHOLD = (1 << 31) - 1
DESCRIPTION = (f"glibc mallopt: M_MMAP_THRESHOLD={MMAP_THRESHOLD}, "
               f"M_TRIM_THRESHOLD={TRIM_THRESHOLD} (freed memory kept for the next step)")


def keep_freed_memory() -> Optional[str]:
    """Set glibc's thresholds so that freed tensors' memory is reused rather than returned to the
    system and faulted in again. Returns what was set, or ``None`` where nothing could be
    (not glibc). Safe to call more than once; affects the whole process."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # glibc only: other C libraries' mallopt differ or are no-ops
    except (OSError, AttributeError, TypeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
    return DESCRIPTION if ok else None
