"""How a job runs on this machine: the device, mixed precision, progress-bar pace, peak memory,
and the library versions recorded with every run and cache.

torch is imported inside the functions, not at the top: the command line reads `AMP_MODES`
for its `--help` and option checks, and `sfa-cache --help` must not wait for torch to load.
"""

from __future__ import annotations

import contextlib
import platform
import sys
from typing import TYPE_CHECKING

from sfa_cache.errors import SfaError

if TYPE_CHECKING:
    import torch

AMP_MODES = ("none", "bf16", "fp16")
AMP_CHOICES = ("auto", *AMP_MODES)  # where a command resolves `auto` (resolve_amp)
# Every log line carries its time: long jobs are read from log files after the fact.
LOG_FORMAT = "%(asctime)s %(message)s"
LOG_DATEFMT = "%Y-%m-%d %H:%M:%S"
# Redraw bars often on a terminal, rarely in a log file (each redraw is a line there).
BAR_INTERVAL = 1.0 if sys.stderr.isatty() else 30.0


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; any torch device string otherwise."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:  # torch's message lists two dozen device types
        raise SfaError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SfaError(f"device {name!r} asked for but CUDA is not available")
    return device


def same_device(a: torch.device, b: torch.device) -> bool:
    """Whether two devices are one: a bare 'cuda' is the current CUDA device ('cuda:0' unless set),
    where `torch.device` equality says 'cuda' != 'cuda:0'."""
    import torch

    def index(d: torch.device) -> int | None:
        if d.type == "cuda" and d.index is None:
            return torch.cuda.current_device() if torch.cuda.is_available() else 0
        return d.index

    return a.type == b.type and index(a) == index(b)


def validate_amp(amp: str, *, allow_auto: bool = False) -> None:
    """`amp` names a precision (`auto` too where a command resolves it, `resolve_amp`): the one
    check every config's `validate` uses, so the message is the same everywhere."""
    known = AMP_CHOICES if allow_auto else AMP_MODES
    if amp not in known:
        raise SfaError(f"--amp must be one of {', '.join(known)}, got {amp!r}")


def check_amp(amp: str, device: torch.device) -> None:
    """`amp` is a known mode that `device` can run (fp16 autocast and its grad scaler are CUDA-only here)."""
    validate_amp(amp)
    if amp == "fp16" and device.type != "cuda":
        raise SfaError("--amp fp16 needs a CUDA device; use bf16 or none on CPU")


def runs_bf16_fast(device: torch.device) -> bool:
    """Whether bf16 autocast speeds `device` up: a CUDA GPU with bf16, or a CPU with AVX512-BF16 or
    AMX instructions (oneDNN's bf16 matmuls). Elsewhere bf16 is emulated and slower than float32."""
    import torch

    if device.type == "cuda":  # emulated bf16 (before Ampere) is no faster than float32
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu":
        return False
    # Private probes (torch >= 2.1); their absence reads as "no".
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe() for probe in probes if probe is not None)


def resolve_amp(amp: str, device: torch.device, *, bf16_on_cpu: bool = False) -> str:
    """`auto` -> bf16 where `device` runs it natively (`runs_bf16_fast`), else none; a CPU counts
    only with `bf16_on_cpu`. Any other mode is checked against the device and returned.

    Why a CPU is opt-in: a feature cache is kept and reused, so `extract` stays in float32 on a
    CPU unless asked; the demo, a timed benchmark, takes bf16 wherever it is native.
    """
    if amp == "auto":
        native = (device.type == "cuda" or bf16_on_cpu) and runs_bf16_fast(device)  # probe only when it counts
        return "bf16" if native else "none"
    check_amp(amp, device)
    return amp


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """The autocast context of `amp` on `device` (a no-op for 'none')."""
    import torch

    check_amp(amp, device)
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def keep_freed_host_memory() -> bool:
    """Have glibc keep freed blocks of up to 32 MiB in the process instead of handing them back to
    the OS; returns whether it took the setting (False without glibc).

    A training loop on the CPU allocates and frees a few MiB per batch (gathered tokens, their
    float32 copy, activations). With glibc's defaults whole epochs return those pages to the OS
    and fault them in afresh on every batch: resident Stage-2 epochs of the same batches took
    10 ms or 30-47 ms by turns, 1.0x or 0.3x of what the bytes allow (docs/benchmarks.md). Both
    thresholds are needed: the mmap one so a batch comes from the heap, the trim one so the heap
    keeps it. The price is that the process's resident memory stays at its peak. Process-wide:
    called by `fit` when it trains on the CPU, a process of its own.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process so far: CUDA allocator peak on a GPU, peak RSS on the CPU."""
    if device.type == "cuda":
        import torch

        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def host_available_bytes() -> int:
    """Host memory that can be allocated now without swapping (MemAvailable), else physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def library_versions() -> dict[str, str]:
    """Versions that change numerics or decoding, recorded with every run and cache."""
    import numpy
    import timm
    import torch

    import sfa_cache

    versions = {
        "sfa_cache": sfa_cache.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "numpy": numpy.__version__,
    }
    for name in ("decord", "av"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = "missing"
    return versions
