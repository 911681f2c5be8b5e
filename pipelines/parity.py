"""`sfa-cache cache verify --parity N`: are these features what my model computes?

N random valid clips of a finished cache are made again from their videos, every view, with
what the cache records: the spatial model (rebuilt from its source and checked against the
cache's fingerprint), the decoder, the frame sampling, the augmentation seed and settings, the
frame transport and AMP. Their CLS tokens are compared with the stored ones.

The difference of one value is `|stored - recomputed| / max(1, |recomputed|)`: absolute for
small values, relative for large ones, so one tolerance fits every backbone's token scale.
Storing in float16 alone moves a value by up to 2^-11 (about 5e-4) of it; batching the frames
differently moves float32 results by far less. The default tolerance is 1e-2 for a cache
extracted in float32 and 5e-2 under AMP, whose rounding (bf16: 2^-8 per operation) grows
through the network and differs between devices. A wrong checkpoint, normalisation, resize or
frame offset moves tokens by O(1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm import tqdm

from sfa_cache.cache.extraction.decode_jobs import ClipJob, clip_spec_of, view_decoder_of
from sfa_cache.cache.extraction.extractor import encode_views
from sfa_cache.cache.format.read import FeatureCache
from sfa_cache.data.inputs import read_input
from sfa_cache.data.manifest import Manifest, manifest_digest
from sfa_cache.errors import SfaError, VideoReadError
from sfa_cache.run.weights import spatial_from_source
from sfa_cache.runtime import BAR_INTERVAL, resolve_device
from sfa_cache.video.reader import check_decoder


def default_tolerance(amp: str) -> float:
    """See the module docstring: float16 storage alone, or AMP's rounding too."""
    return 1e-2 if amp == "none" else 5e-2


def check_tolerance(tolerance: Optional[float]) -> None:
    """A tolerance is a finite number >= 0: every difference compares false with NaN, so a NaN
    tolerance would pass any cache, and a negative one would fail any (user input, not a finding)."""
    if tolerance is not None and not (math.isfinite(tolerance) and tolerance >= 0):
        raise SfaError(f"--tolerance must be a finite number >= 0, got {tolerance}")


@dataclass
class ParityReport:
    tolerance: float
    clips: list[int] = field(default_factory=list)  # cache positions recomputed
    largest: float = 0.0  # the largest difference (module docstring), over every value of every clip
    worst_clip: Optional[int] = None
    problems: list[str] = field(default_factory=list)  # clips that could not be compared, or over the tolerance

    @property
    def ok(self) -> bool:
        return not self.problems


def _cache_manifest(cache: FeatureCache, root: Optional[str]) -> Manifest:
    """The input the cache was made from, cut to its clips in cache order; refused when its
    videos changed since extraction (then nothing would be comparable)."""
    info = cache.index.manifest
    manifest = read_input(info.path, cache.classes, root, info.split)
    by_row = {e.row: e for e in manifest.entries}
    missing = [r for r in info.rows if r not in by_row]
    if missing:
        raise SfaError(f"{info.path} no longer holds {len(missing)} of the cache's clips (first: row {missing[0]}); "
                       "give --root if its paths are relative")
    manifest.entries = [by_row[r] for r in info.rows]
    if manifest_digest(manifest) != info.digest:
        raise SfaError(f"the videos of {info.path} changed since extraction (paths, sizes or labels differ); "
                       "give --root if its paths are relative to another folder")
    return manifest


def check_parity(cache_dir: str | Path, clips: int, *, root: Optional[str] = None, seed: int = 0,
                 device: str = "auto", tolerance: Optional[float] = None, spatial_run: Optional[str | Path] = None,
                 progress: bool = True) -> ParityReport:
    """Recompute `clips` random valid clips of the cache (every view) and compare; see the module doc.

    `spatial_run`: the run to recompute with, where the one the cache records has moved (its weights
    must still be the cache's: the fingerprint is checked).
    """
    if clips < 1:
        raise SfaError(f"--parity takes a number of clips >= 1, got {clips}")
    check_tolerance(tolerance)
    cache = FeatureCache(cache_dir)
    index = cache.index
    amp = index.extraction.amp
    report = ParityReport(default_tolerance(amp) if tolerance is None else tolerance)
    manifest = _cache_manifest(cache, root)
    check_decoder(index.extraction.decoder, [e.path for e in manifest.entries])
    spatial, _ = spatial_from_source(index.source, index.fingerprint, run=spatial_run)
    torch_device = resolve_device(device)
    if amp == "fp16" and torch_device.type != "cuda":
        raise SfaError("the cache was extracted under fp16 AMP, which needs CUDA; run the parity check on a GPU")
    backbone = spatial.backbone.to(torch_device).eval()
    spec, decode = clip_spec_of(index), view_decoder_of(index)
    valid = np.flatnonzero(cache.valid)
    if not valid.size:
        raise SfaError(f"{cache_dir} holds no valid clip to recompute")
    report.clips = sorted(np.random.default_rng(seed).choice(valid, min(clips, valid.size), replace=False).tolist())
    for clip in tqdm(report.clips, desc="parity", unit="clip", disable=not progress, mininterval=BAR_INTERVAL):
        entry = manifest.entries[clip]
        try:
            frames, frame_index = decode(ClipJob(entry.row, entry.path, spec, index.extraction.views.seed or 0))
        except VideoReadError as e:
            report.problems.append(f"clip {clip} ({entry.path}): decodes no more: {e.reason}")
            continue
        stored_index = cache.frame_index(clip)
        if not np.array_equal(frame_index, stored_index):
            report.problems.append(f"clip {clip} ({entry.path}): the decoder now returns other frames (first "
                                   f"{frame_index.ravel()[:4].tolist()}, cached {stored_index.ravel()[:4].tolist()})")
            continue
        tokens = encode_views(backbone, frames, spec, torch_device, amp).numpy()
        stored = cache.features(clip).astype(np.float32)
        difference = float((np.abs(stored - tokens) / np.maximum(1.0, np.abs(tokens))).max())
        if not np.isfinite(difference):  # NaN compares false with everything: it must not pass as small
            report.problems.append(f"clip {clip} ({entry.path}): stored or recomputed tokens are not finite")
            continue
        if difference > report.largest or report.worst_clip is None:
            report.largest, report.worst_clip = difference, clip
    if report.largest > report.tolerance:
        report.problems.append(f"clip {report.worst_clip}: stored tokens differ from the recomputed ones by "
                               f"{report.largest:.2e} > {report.tolerance:.0e}")
    return report
