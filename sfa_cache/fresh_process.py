"""Run one function in a freshly spawned process and learn its result and its peak memory.

The demo runs each phase this way and the benchmarks each measurement: a fresh process has a
clean CUDA context and a memory peak of its own, and a crash cannot take the caller down.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue as queue_module
from dataclasses import dataclass
from typing import Any, Callable

import torch

from sfa_cache.errors import SfaError
from sfa_cache.runtime import LOG_DATEFMT, LOG_FORMAT, peak_memory_mb


@dataclass
class FreshRun:
    result: Any
    peak_bytes: float  # CUDA allocator peak on a GPU, the process's peak RSS on the CPU
    start_bytes: float  # the same measure just before `fn` ran (the interpreter and its imports)


def _child(fn: Callable[..., Any], args: tuple, device: torch.device, queue: Any) -> None:
    """A bug raises here with its traceback; the parent sees the process end without a message."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, datefmt=LOG_DATEFMT)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)  # the peak is now what is allocated
    start = peak_memory_mb(device) * 2**20
    try:
        result = fn(*args)
    except SfaError as e:
        queue.put(("error", str(e), 0.0, 0.0))
        return
    except torch.OutOfMemoryError as e:
        queue.put(("oom", str(e).splitlines()[0] if str(e) else "out of memory", 0.0, 0.0))
        return
    peak = peak_memory_mb(device) * 2**20
    queue.put(("ok", result, peak, start))


def run_in_fresh_process(fn: Callable[..., Any], *args: Any, device: torch.device, name: str) -> FreshRun:
    """`fn(*args)` in a spawned process. Its `SfaError` is raised here again (one line for the
    user), out-of-memory as `torch.OutOfMemoryError`; a process that dies without a word (a bug,
    a kill) raises RuntimeError instead of leaving the caller waiting."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, args, device, queue), name=name)
    proc.start()
    while True:
        try:
            status, result, peak, start = queue.get(timeout=1.0)
            break
        except queue_module.Empty:
            if not proc.is_alive():
                raise RuntimeError(f"{name} crashed (exit code {proc.exitcode}); see the traceback above") from None
    proc.join()
    if status == "error":
        raise SfaError(f"{name}: {result}")
    if status == "oom":
        raise torch.OutOfMemoryError(f"{name}: {result}")
    return FreshRun(result, peak, start)
