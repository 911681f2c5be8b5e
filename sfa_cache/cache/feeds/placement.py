"""Where Stage 2 keeps a cache's features while it trains: the words, and the choice.

    --cache-in-memory   auto | gpu | ram | stream     (REQUESTS; `off` is still read as `stream`)
    placement           gpu | ram | stream            (PLACEMENTS: the log line, a result's `features`)

One word per idea from the flag to the log line: `stream` (whole shards read from disk by worker
processes, `streaming.py`); `off`, the flag's former word for it, is accepted wherever a request
is read (flag, config file, grid) and becomes `stream` there (`canonical_request`).

`choose_placement` turns a request into a placement: `gpu` when the features fit in the free GPU
memory beside the training step (the memory model's estimate plus a margin), else `ram` when they
fit in `HOST_FRACTION` of the host's available memory, else `stream`. The batches are the same in
every placement (`epochs.py`), so the choice changes speed, never results.

A new feed mode is a word in `PLACEMENTS`, its case in `choose_placement` and its batches in
`stage2.make_feeds` (docs/architecture.md). Nothing heavy is imported at module level: the command
line reads `REQUESTS` to build its --help.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from sfa_cache.errors import SfaError
from sfa_cache.runtime import host_available_bytes

if TYPE_CHECKING:
    import torch

PLACEMENTS = ("gpu", "ram", "stream")  # where the features live
REQUESTS = ("auto", *PLACEMENTS)  # what --cache-in-memory takes: a placement, or the first that fits
FORMER_WORDS = {"off": "stream"}  # accepted so that existing commands, configs and grids keep working

GPU_MARGIN_BYTES = 1 << 30  # CUDA context, allocator fragmentation and what the memory model leaves out
HOST_FRACTION = 0.6  # of the host's available memory a resident copy may take


def canonical_request(requested: str) -> str:
    """The word for a --cache-in-memory value (`off` -> `stream`); anything else as given, for
    `check_request` to judge."""
    return FORMER_WORDS.get(requested, requested)


def check_request(requested: str) -> str:
    """The canonical request, or a one-line error naming the words --cache-in-memory takes."""
    canonical = canonical_request(requested)
    if canonical not in REQUESTS:
        raise SfaError(f"--cache-in-memory must be one of {', '.join(REQUESTS)}, got {requested!r}")
    return canonical


def fits_in_host(nbytes: int, host_free: Optional[int] = None) -> bool:
    """Whether `nbytes` of features may be held in host memory (`HOST_FRACTION` of what is available)."""
    return nbytes <= HOST_FRACTION * (host_free if host_free is not None else host_available_bytes())


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.2f} GiB"


def _gpu_fit(requested: str, nbytes: int, device: torch.device, step_bytes: int,
             gpu_free: Optional[int]) -> Optional[str]:
    """Why the features go to the GPU, or None when they do not fit (an error when `gpu` was asked for)."""
    if gpu_free is None:
        import torch

        gpu_free = torch.cuda.mem_get_info(device)[0]
    if nbytes + step_bytes + GPU_MARGIN_BYTES <= gpu_free:
        return f"{_gib(nbytes)} of features + {_gib(step_bytes)} step + {_gib(GPU_MARGIN_BYTES)} margin " \
               f"fit in {_gib(gpu_free)} free on {device}"
    if requested == "gpu":
        raise SfaError(f"--cache-in-memory gpu: {_gib(nbytes)} of features + {_gib(step_bytes)} for the step + "
                       f"{_gib(GPU_MARGIN_BYTES)} margin do not fit in the {_gib(gpu_free)} free on {device}; "
                       "use --cache-in-memory auto")
    return None


def choose_placement(requested: str, nbytes: int, device: torch.device, *, step_bytes: int = 0,
                     gpu_free: Optional[int] = None, host_free: Optional[int] = None) -> tuple[str, str]:
    """Where `nbytes` of features go: -> (gpu | ram | stream, why in words).

    `requested`: one of REQUESTS (or `off`). A forced placement that cannot hold the features is a
    one-line error, not a silent fallback. `step_bytes` is the training step's own peak (the
    memory model's estimate), kept free on the GPU beside the features.
    """
    requested = check_request(requested)
    if requested == "stream":
        return "stream", "--cache-in-memory stream"
    if requested == "gpu" and device.type != "cuda":
        raise SfaError(f"--cache-in-memory gpu needs a CUDA training device, not {device}")
    if device.type == "cuda" and requested in ("auto", "gpu"):
        why = _gpu_fit(requested, nbytes, device, step_bytes, gpu_free)
        if why is not None:
            return "gpu", why
    host = host_free if host_free is not None else host_available_bytes()
    if fits_in_host(nbytes, host):
        return "ram", f"{_gib(nbytes)} of features within {HOST_FRACTION:.0%} of {_gib(host)} available host memory"
    if requested == "ram":
        raise SfaError(f"--cache-in-memory ram: {_gib(nbytes)} of features exceed {HOST_FRACTION:.0%} of the "
                       f"{_gib(host)} of available host memory; use --cache-in-memory auto or stream")
    return "stream", f"{_gib(nbytes)} of features fit neither on the device nor in {HOST_FRACTION:.0%} of " \
                     f"{_gib(host)} host memory"
