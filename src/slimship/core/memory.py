"""Hand memory that Python and PyTorch have freed back to the operating system between stages.

glibc's allocator keeps freed heap pages (and raises its mmap threshold after large frees), so a run that trains,
quantizes and measures one model after another grows its resident memory stage by stage even though each stage
frees what it used. :func:`release_memory` collects garbage and asks glibc to return free pages
(``malloc_trim(0)``); it is cheap (milliseconds) and a no-op where glibc is not the allocator.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc.malloc_trim if libc is not None and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def release_memory() -> bool:
    """Collect garbage and return free heap pages to the OS; True when glibc's ``malloc_trim`` ran."""
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
