"""The extraction engine: decode clips in worker processes, encode their frames in fixed
batches, and hand each filled shard to a writer in the background (`CacheBuilder.write_shard`:
the data, then the marker).

Three stages overlap: a `DecodePool` decodes ahead of the model, the calling thread runs the
spatial model, and a writer thread compresses and writes the previous shard. The model waits
on neither as long as the decode rate keeps up with it (`ExtractStats.model_busy` says).

Frames travel from the workers as uint8 `[V, F, 3, S, S]` and are normalised on the device
(`encode`): a quarter of the bytes of float32 frames through the pool, for a few elementwise
operations where the model runs anyway.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from sfa_cache.cache.extraction.decode_jobs import ClipJob, decode_views
from sfa_cache.cache.extraction.frame_batches import FrameBatcher
from sfa_cache.cache.format.layout import ShardPlan
from sfa_cache.cache.format.write import ShardData
from sfa_cache.data.decode_pool import DecodePool, JobFailure
from sfa_cache.data.failures import ALL_FAILED_LIMIT, record_failure
from sfa_cache.data.manifest import ManifestEntry
from sfa_cache.errors import SfaError
from sfa_cache.runtime import BAR_INTERVAL, autocast
from sfa_cache.video.clips import ClipSpec
from sfa_cache.video.transforms import normalise_uint8

log = logging.getLogger(__name__)


@torch.inference_mode()
def encode_on_device(backbone: nn.Module, frames: torch.Tensor, spec: ClipSpec, device: torch.device,
                     amp: str) -> torch.Tensor:
    """uint8 [N, 3, S, S], not normalised -> CLS tokens [N, D] on `device` (queued, not waited for).

    The frames cross to the device as uint8 and are normalised there in float32, with the
    operations of the CPU transforms (so a CPU run equals normalising on the CPU, bit for bit).
    Under AMP, autocast casts them at the patch embedding, as it cast the float frames workers
    shipped before (in float16 under CUDA AMP: now one rounding fewer). Float frames (a cache
    made with the float32 transport) are taken as already normalised.
    """
    x = frames.to(device, non_blocking=True)
    if x.dtype == torch.uint8:
        x = normalise_uint8(x, spec.mean, spec.std)
    with autocast(device, amp):
        return backbone(x)


def encode_frames(backbone: nn.Module, frames: torch.Tensor, spec: ClipSpec, device: torch.device,
                  amp: str) -> torch.Tensor:
    """uint8 [N, 3, S, S], not normalised -> CLS tokens [N, D] float32 on the CPU (`encode_on_device`)."""
    return encode_on_device(backbone, frames, spec, device, amp).float().cpu()


def encode_views(backbone: nn.Module, views: torch.Tensor, spec: ClipSpec, device: torch.device, amp: str,
                 batch_frames: int = 256) -> torch.Tensor:
    """One clip's views, uint8 [V, F, 3, S, S] (or normalised float) -> CLS tokens [V, F, D]
    float32 on the CPU, `batch_frames` frames per forward (`encode_frames`)."""
    V, F = views.shape[:2]
    tokens = [encode_frames(backbone, chunk, spec, device, amp) for chunk in views.flatten(0, 1).split(batch_frames)]
    return torch.cat(tokens).reshape(V, F, -1)


@dataclass
class ExtractStats:
    clips: int = 0
    valid: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0
    encode_seconds: float = 0.0

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    @property
    def model_busy(self) -> float:
        """Fraction of the wall time the model was computing (1.0: never waited for data)."""
        return self.encode_seconds / self.seconds if self.seconds else 0.0


@dataclass
class ExtractorConfig:
    """How the engine runs (none of it changes the cached values, except dtype and amp)."""

    dtype: str = "float16"
    amp: str = "none"
    batch_frames: int = 256
    workers: int = 4
    decode_timeout: Optional[float] = 60.0
    progress: bool = True


ShardWriter = Callable[[ShardPlan, ShardData, list[dict[str, Any]]], None]


class ShardExtractor:
    """Fills shards with the CLS tokens of `backbone` and gives each to `write` (shard, data, failures).

    `backbone`: [N, 3, S, S] -> [N, D] (a headless timm ViT pooling its CLS token).
    """

    # What a decode worker runs per clip: -> (uint8 frames [V, F, 3, S, S], frame_index [V, F]).
    # A module-level function, imported here: workers unpickle it by name, and the pool preloads
    # its module (`decode_jobs`) from the function itself. `encode` takes what it returns.
    decode = staticmethod(decode_views)

    def __init__(self, backbone: nn.Module, device: torch.device, spec: ClipSpec, cfg: ExtractorConfig,
                 *, write: ShardWriter, seed: int = 0, failure_log: Optional[Path] = None) -> None:
        self.backbone = backbone.to(device).eval()
        self.device = device
        self.spec = spec
        self.cfg = cfg
        self.write = write
        self.seed = seed
        self.failure_log = failure_log
        self.dim: int = backbone.embed_dim

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [N, 3, S, S], not normalised -> [N, D] on the device (`encode_on_device`); the
        batcher brings them back to the host, overlapped with the next batch on a GPU."""
        return encode_on_device(self.backbone, frames, self.spec, self.device, self.cfg.amp)

    def run(self, shards: Sequence[ShardPlan], entries: Sequence[ManifestEntry]) -> ExtractStats:
        """Extract `shards` (global clip ranges into `entries`); each ends with its marker."""
        jobs = [ClipJob(entries[i].row, entries[i].path, self.spec, self.seed)
                for s in shards for i in range(s.start, s.stop)]
        pool = DecodePool(self.decode, workers=self.cfg.workers, timeout=self.cfg.decode_timeout)
        results = pool.imap(jobs)
        stats = ExtractStats()
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer")
        pending: Optional[Future] = None
        bar = tqdm(
            total=len(jobs), unit="clip", desc="extract", disable=not self.cfg.progress, mininterval=BAR_INTERVAL
        )
        t0 = time.perf_counter()
        try:
            for shard in shards:
                data, failures, batcher = self._fill(shard, entries, results, stats, bar)
                stats.encode_seconds += batcher.encode_seconds
                stats.frames += batcher.frames_done
                if pending is not None:
                    pending.result()  # at most one shard in memory waits for the disk
                pending = writer.submit(self.write, shard, data, failures)
                bar.set_postfix(frames_s=f"{stats.frames / (time.perf_counter() - t0):.0f}", failed=len(stats.failures))
            if pending is not None:
                pending.result()
        finally:
            results.close()
            writer.shutdown(wait=True)
            bar.close()
        stats.seconds = time.perf_counter() - t0
        return stats

    def _fill(self, shard: ShardPlan, entries: Sequence[ManifestEntry], results: Any, stats: ExtractStats,
              bar: tqdm) -> tuple[ShardData, list[dict[str, Any]], FrameBatcher]:
        s = self.spec
        data = ShardData.empty(shard.size, s.num_views, s.frames, self.dim, self.cfg.dtype)
        flat = data.features.reshape(shard.size, s.num_views * s.frames, self.dim)  # a view, not a copy

        def sink(row: int, start: int, tokens: torch.Tensor) -> None:
            flat[row, start : start + tokens.shape[0]] = tokens.numpy()

        batcher = FrameBatcher(self.encode, self.cfg.batch_frames, sink, self.device)
        failures: list[dict[str, Any]] = []
        for clip in range(shard.start, shard.stop):
            _, result = next(results)
            row, entry = clip - shard.start, entries[clip]
            data.labels[row], data.clip_index[row] = entry.label, entry.row
            stats.clips += 1
            if isinstance(result, JobFailure):
                failure = {"clip": clip, "row": entry.row, "path": str(entry.path), "reason": result.reason}
                failures.append(failure)
                stats.failures.append(failure)
                log.warning("skipping %s: %s", entry.path, result.reason)
                record_failure(self.failure_log, path=str(entry.path), reason=result.reason, row=entry.row, clip=clip)
                if stats.valid == 0 and stats.clips >= ALL_FAILED_LIMIT:
                    raise SfaError(f"the first {stats.clips} clips all failed to decode (last: {entry.path}: "
                                   f"{result.reason}); check the manifest, --root and --backend")
            else:
                frames, frame_index = result
                data.frame_index[row] = frame_index
                data.valid[row] = True
                stats.valid += 1
                batcher.add(row, frames.flatten(0, 1))
            bar.update(1)
        batcher.flush()
        bad = np.flatnonzero(data.valid & ~np.isfinite(data.features).all(axis=(1, 2, 3)))
        if bad.size:  # e.g. an overflow (inf in float16): never store it as a valid clip
            raise SfaError(f"the spatial model produced NaN/inf for clip {shard.start + int(bad[0])} "
                           f"({entries[shard.start + int(bad[0])].path}); try --amp none")
        return data, failures, batcher
