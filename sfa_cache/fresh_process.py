"""Run one function in a freshly spawned process and learn its result and its peak memory.

The demo runs each phase this way and the benchmarks each measurement: a fresh process has a
clean CUDA context and a memory peak of its own, and a crash cannot take the caller down.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import queue as queue_module
import signal
import sys
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


def die_with_parent(parent: int, sig: int = signal.SIGTERM) -> None:
    """In a child process: receive `sig` when process `parent` ends, however it ends.

    A parent killed by SIGTERM runs no cleanup, so without this its spawned phase (hours of
    training) or its decode workers would run on with no one to read their results. Linux
    delivers `sig` to the child when the parent thread dies (prctl PR_SET_PDEATHSIG); elsewhere
    this does nothing (a closed pipe is then the only signal). SIGKILL reaches even a child whose
    native code holds the GIL (a hung decoder).
    """
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, sig)
    except (OSError, AttributeError):  # no glibc
        return
    if os.getppid() != parent:  # the parent died before the request was in place
        os._exit(1)


def _child(fn: Callable[..., Any], args: tuple, device: torch.device, queue: Any, parent: int) -> None:
    """A bug raises here with its traceback; the parent sees the process end without a message."""
    die_with_parent(parent)
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
    proc = ctx.Process(target=_child, args=(fn, args, device, queue, os.getpid()), name=name)
    proc.start()
    try:
        while True:
            try:
                status, result, peak, start = queue.get(timeout=1.0)
                break
            except queue_module.Empty:
                if not proc.is_alive():
                    raise RuntimeError(f"{name} crashed (exit code {proc.exitcode}); see the traceback above") from None
        proc.join()
    finally:  # Ctrl-C or an error here: the phase must not run on alone
        if proc.is_alive():
            proc.terminate()
            proc.join(10)
    if status == "error":
        raise SfaError(f"{name}: {result}")
    if status == "oom":
        raise torch.OutOfMemoryError(f"{name}: {result}")
    return FreshRun(result, peak, start)
