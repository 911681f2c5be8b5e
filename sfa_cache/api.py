"""The Python API: sfa-cache from a notebook or a script, with no manifest and no command line.

    from sfa_cache import api

    model, classes = api.load_run("work/stage2/assembled")           # an end-to-end ViViT-FE
    tokens = api.extract_features(["a.mp4", "b.mp4"], run="work/stage1", frames=32)
    tokens.shape                                                    # (2, 1, 32, D): [N, V, F, D]
    clips = api.cached_clips("work/caches/train-train-32f-...", frames=16)
    api.predict_video("a.mp4", run="work/stage2/assembled")         # {"top": [{"label", "prob"}, ...]}

Every function computes what the matching command computes (`extract`, `train-temporal`'s
reader, `predict`), through the same library code; docs/python-api.md has a worked example.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from sfa_cache.cache.extraction.decode_jobs import ClipJob, decode_views
from sfa_cache.cache.extraction.extractor import encode_views
from sfa_cache.cache.feeds.dataset import CachedFeatureDataset
from sfa_cache.cache.format.read import FeatureCache
from sfa_cache.errors import SfaError, VideoReadError
from sfa_cache.inference import load_for_inference, predict
from sfa_cache.models.vivit import ViViTFE
from sfa_cache.run.weights import load_spatial
from sfa_cache.runtime import resolve_device
from sfa_cache.video.clips import ClipSpec
from sfa_cache.video.reader import check_decoder
from sfa_cache.video.transforms import AugmentConfig

__all__ = ["load_run", "extract_features", "cached_clips", "predict_video"]

PathLike = str | os.PathLike


def load_run(run: PathLike, *, frames: Optional[int] = None, device: str = "cpu") -> tuple[ViViTFE, list[str]]:
    """The end-to-end model of a Stage-1 or assembled run (eval mode, on `device`) and its class
    names. The model takes frames [B, F, 3, S, S], normalised as the run's config says, and
    returns logits [B, classes]; `frames` rebuilds it for another clip length."""
    return load_for_inference(run, frames, resolve_device(device))


def extract_features(
    videos: Sequence[PathLike],
    *,
    run: PathLike,
    frames: int,
    views: int = 1,
    train: bool = False,
    augment: Optional[AugmentConfig] = None,
    seed: int = 0,
    backend: str = "decord",
    device: str = "auto",
    amp: str = "none",
    on_error: str = "raise",
) -> np.ndarray:
    """Per-frame CLS tokens of the run's spatial ViT: videos -> float32 [N, V, F, D].

    `run`: a Stage-1 or assembled run (its spatial weights and normalisation). Evaluation views
    by default (`views` = 1: the F segment centres, centre crop), exactly an `extract --mode eval`
    cache's values before float16 storage; `train=True` draws `views` augmented views per video
    from (seed, position in `videos`, view), as `extract --views` does from (seed, manifest row,
    view). A video that cannot be read raises VideoReadError, or with `on_error="nan"` gets NaN
    tokens (the cache's convention for a failed clip).
    """
    if on_error not in ("raise", "nan"):
        raise SfaError(f"on_error must be 'raise' or 'nan', got {on_error!r}")
    if isinstance(videos, (str, bytes, os.PathLike)):  # a str is a sequence too: of characters
        raise SfaError(f"videos must be a list of paths, got one path {os.fspath(videos)!r}; pass [path]")
    check_decoder(backend, [str(v) for v in videos])
    if frames < 1 or views < 1 or (views > 1 and not train):
        raise SfaError("frames and views must be >= 1; several views are augmented draws (train=True)")
    spatial, scfg = load_spatial(run)
    torch_device = resolve_device(device)
    backbone = spatial.backbone.to(torch_device).eval()
    spec = ClipSpec(frames=frames, image_size=scfg.image_size, mean=tuple(scfg.mean), std=tuple(scfg.std),
                    train=train, backend=backend, augment=augment or AugmentConfig(), views=views if train else 1)
    out = np.full((len(videos), spec.num_views, frames, spatial.embed_dim), np.nan, dtype=np.float32)
    for i, video in enumerate(videos):
        try:
            pixels, _ = decode_views(ClipJob(i, str(video), spec, seed))  # uint8 [V, F, 3, S, S]
        except VideoReadError:
            if on_error == "raise":
                raise
            continue
        out[i] = encode_views(backbone, pixels, spec, torch_device, amp).numpy()
    return out


def cached_clips(cache_dir: PathLike, frames: int, *, train: bool = True, seed: int = 0) -> CachedFeatureDataset:
    """A finished feature cache as a torch Dataset of (tokens float32 [frames, D], label int).

    Works with a plain `DataLoader(dataset, shuffle=True)`: call `dataset.set_epoch(epoch)`
    before each epoch and every clip gets that epoch's view and frame offsets (a function of
    (seed, epoch, clip), the draws `train-temporal` makes). Clips that failed at extraction are
    left out (`dataset.skipped` counts them). `train=False` takes the centre view and frames.
    """
    return CachedFeatureDataset(FeatureCache(cache_dir), frames, train=train, seed=seed)


def predict_video(video: PathLike, *, run: PathLike, top_k: int = 5, clips: int = 1, crops: int = 1,
                  frames: Optional[int] = None, backend: str = "decord", device: str = "auto") -> dict[str, Any]:
    """Top-k labels of one video: {"path", "top": [{"label", "prob"}, ...]}, most probable first;
    `clips` x `crops` views averaged as `sfa-cache predict` does. Raises VideoReadError for a
    video that cannot be read."""
    (result,) = predict(run, [Path(video)], clips=clips, crops=crops, top_k=top_k, frames=frames, backend=backend,
                        device=device)
    if "error" in result:
        raise VideoReadError(str(video), result["error"])
    return result
