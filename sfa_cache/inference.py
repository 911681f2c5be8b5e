"""Inference with an end-to-end model on raw video: load a run for it, multi-view logits, predict.

The library's one owner of "a run's model on videos", used by `sfa-cache evaluate` / `predict`
(pipelines/evaluate.py) and by the Python API (api.py). Multi-view testing as in ViViT:
`clips` temporal clips x `crops` spatial crops per video, their logits averaged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from sfa_cache.errors import SfaError, VideoReadError
from sfa_cache.models.vivit import ViViTFE
from sfa_cache.run.record import read_run_record
from sfa_cache.run.weights import load_model
from sfa_cache.runtime import autocast, resolve_device
from sfa_cache.video.clips import ClipSpec, make_views
from sfa_cache.video.reader import check_decoder


def load_for_inference(run: str | Path, frames: Optional[int], device: torch.device) -> tuple[ViViTFE, list[str]]:
    """The end-to-end model of `run` (eval mode, on `device`) and its class names."""
    record = read_run_record(run)
    if record.kind == "stage2":
        raise SfaError(f"{run} is a Stage-2 run (no spatial weights); use {Path(run) / 'assembled'} "
                       "or `sfa-cache assemble` it first")
    model = load_model(run, num_frames=frames).to(device).eval()
    return model, list(record.classes)


@torch.no_grad()
def multi_view_logits(model: ViViTFE, views: torch.Tensor, amp: str) -> torch.Tensor:
    """[B, V, F, 3, S, S] -> [B, C]: logits of every view, averaged over the views."""
    B, V = views.shape[:2]
    device = next(model.parameters()).device
    with autocast(device, amp):
        logits = model(views.flatten(0, 1).to(device, non_blocking=True))
    return logits.float().view(B, V, -1).mean(dim=1)


def clip_spec(model: ViViTFE, clips: int, crops: int, backend: str) -> ClipSpec:
    """How to cut a video into the views `model` reads: its frames, image size and normalisation."""
    s = model.cfg.spatial
    return ClipSpec(frames=model.temporal.num_frames, image_size=s.image_size, mean=s.mean, std=s.std,
                    clips=clips, crops=crops, backend=backend)


def predict(
    run: str | Path,
    videos: Sequence[str | Path],
    *,
    clips: int = 1,
    crops: int = 1,
    top_k: int = 5,
    frames: Optional[int] = None,
    backend: str = "decord",
    device: str = "auto",
    amp: str = "none",
) -> list[dict[str, Any]]:
    """Per video: {"path", "top": [{"label", "prob"}, ...]} or {"path", "error"} for an unreadable one."""
    if top_k < 1:
        raise SfaError(f"--top-k must be at least 1, got {top_k}")
    check_decoder(backend, [str(v) for v in videos])
    model, classes = load_for_inference(run, frames, resolve_device(device))
    spec = clip_spec(model, clips, crops, backend)
    results = []
    for path in videos:
        try:
            views, _ = make_views(path, spec)
        except VideoReadError as e:
            results.append({"path": str(path), "error": e.reason})
            continue
        probs = multi_view_logits(model, views[None], amp).softmax(dim=-1)[0]
        top = probs.topk(min(top_k, len(classes)))
        results.append({"path": str(path), "top": [{"label": classes[i], "prob": round(float(p), 6)}
                                                   for p, i in zip(top.values.tolist(), top.indices.tolist())]})
    return results
