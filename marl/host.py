"""Process settings a run applies before it builds anything: torch threads, the C heap.

Large training batches allocate and free tens of megabytes of activations and gradients
every minibatch. glibc's ``malloc`` serves every block above its mmap threshold (at most
32 MiB) with a fresh ``mmap`` and gives it back with ``munmap``, and trims the top of the
heap back to the OS as soon as 128 KiB are free there; each new block then costs a page
fault per 4 KiB page on first touch. For PPO on ``torch/simple_spread_v3`` with the
defaults on one core that was 69,000-139,000 minor faults per iteration at 1,024 env
copies (0.1-0.2 s of kernel time in a 1.2 s iteration) and 1.5 million at 4,096 (2.3 s of
6.7 s); README, "Where one iteration's time goes". With ``train.retain_memory`` (the
default) the run asks glibc to serve every block from the heap and to keep what is freed
there for the next minibatch, so the process keeps its peak memory instead of returning it
between minibatches -- what PyTorch's CUDA caching allocator does on a GPU.
"""

from __future__ import annotations

import ctypes
import sys

import torch

from marl.config import Config

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1
"""Free bytes at the top of the heap before glibc gives them back (the largest it takes)."""

_retained = False


def retain_freed_memory() -> bool:
    """Ask glibc's ``malloc`` to keep freed memory in the process for reuse: no ``mmap``
    per large block, no trimming of the heap below 2 GiB free. Once per process; returns
    whether it is in force (False off Linux or without glibc, which leaves ``malloc`` as it
    was)."""
    global _retained
    if _retained:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        if not hasattr(libc, "gnu_get_libc_version"):  # musl and others: their own malloc
            return False
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _retained = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and mallopt(M_MMAP_MAX, 0) == 1
    return _retained


def configure_process(config: Config) -> None:
    """torch's intra-op threads (``torch_threads``) and the heap (``train.retain_memory``)
    for a run of ``config`` in this process."""
    if config.torch_threads is not None:
        torch.set_num_threads(config.torch_threads)
    if config.train.retain_memory:
        retain_freed_memory()
