"""The C allocator's setting for the command line's process (the library never changes it: it
belongs to whoever owns the process).

On Linux, glibc's malloc gives freed memory at the top of its heaps back to the system, so that
a loop allocating the same large tensors again and again (a feature-visualisation step at batch
32 allocates hundreds of MiB of activations and their gradients) takes fresh pages, and a page
fault per 4 KiB, at every step. Keeping up to :data:`TOP_PAD` bytes free at the top of each heap
(glibc's ``M_TOP_PAD``, as the ``MALLOC_TOP_PAD_`` environment variable sets it) made a batched
CPU render of MobileNetV2 about a fifth faster on a 2-core VM (bench/RESULTS.md); the process
holds up to that much more memory in exchange.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TOP_PAD = -2  # glibc's mallopt parameter number
TOP_PAD = 512 << 20  # bytes


def keep_freed_memory(top_pad: int = TOP_PAD) -> bool:
    """Ask glibc's malloc to keep ``top_pad`` freed bytes per heap for reuse; whether it was set.
    Nothing happens off Linux, without glibc's ``mallopt``, or when ``MALLOC_TOP_PAD_`` is set
    (the user's choice wins)."""
    if not sys.platform.startswith("linux") or "MALLOC_TOP_PAD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_TOP_PAD, top_pad) == 1
