"""`sfa-cache evaluate` and `sfa-cache predict`: the end-to-end model on raw video.

Multi-view testing as in ViViT: `--clips` temporal clips x `--crops` spatial crops per video,
their logits averaged. Any run directory with spatial weights works: Stage 1, a baseline, or an
assembled SFA model.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from tqdm import tqdm

from sfa_cache.atomic import atomic_write_json, atomic_write_text
from sfa_cache.checkpoint import load_model, read_run_record
from sfa_cache.data.batches import EpochSampler, collate_items_skip_failed
from sfa_cache.data.failures import FAILURES_FILE, record_failure
from sfa_cache.data.inputs import input_name, read_input
from sfa_cache.data.loaders import video_loader
from sfa_cache.data.video_dataset import MultiViewClipDataset
from sfa_cache.errors import SfaError, VideoReadError
from sfa_cache.models.vivit import ViViTFE
from sfa_cache.pipelines.job_configs import EvaluateConfig
from sfa_cache.runtime import BAR_INTERVAL, autocast, resolve_device
from sfa_cache.train.metrics import confusion_matrix, per_class_accuracy, topk_correct
from sfa_cache.video.clips import ClipSpec, make_views
from sfa_cache.video.reader import check_decoder

log = logging.getLogger("sfa_cache")



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


def _spec(model: ViViTFE, cfg_clips: int, cfg_crops: int, backend: str) -> ClipSpec:
    s = model.cfg.spatial
    return ClipSpec(frames=model.temporal.num_frames, image_size=s.image_size, mean=s.mean, std=s.std,
                         clips=cfg_clips, crops=cfg_crops, backend=backend)


def run_evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    """Top-1 / top-5, per-class accuracy and the confusion matrix, written next to the run."""
    cfg.validate()
    device = resolve_device(cfg.device)
    model, classes = load_for_inference(cfg.run, cfg.frames, device)
    manifest = read_input(cfg.manifest, classes, cfg.root, cfg.split)
    check_decoder(cfg.backend, [e.path for e in manifest.entries])
    name = input_name(cfg.manifest) + (f"-{cfg.split}" if cfg.split else "") + f"-{cfg.clips}x{cfg.crops}"
    out = Path(cfg.out) if cfg.out else Path(cfg.run) / "eval" / name
    out.mkdir(parents=True, exist_ok=True)
    (out / FAILURES_FILE).unlink(missing_ok=True)
    for skipped in manifest.skipped:  # left out while indexing shards / an HDF5 file: failed too
        record_failure(out / FAILURES_FILE, row=-1, **skipped)
    dataset = MultiViewClipDataset(manifest, _spec(model, cfg.clips, cfg.crops, cfg.backend), out / FAILURES_FILE)
    loader = video_loader(dataset, EpochSampler(len(dataset), shuffle=False), batch_size=cfg.batch_size,
                          num_workers=cfg.num_workers, decode_timeout=cfg.decode_timeout, device=device,
                          collate_fn=collate_items_skip_failed)
    all_logits, all_labels, all_indices, dropped = [], [], [], 0
    for batch, n_dropped in tqdm(loader, desc="evaluate", unit="batch", mininterval=BAR_INTERVAL):
        dropped += n_dropped
        if batch is not None:
            views, labels, indices = batch
            all_logits.append(multi_view_logits(model, views, cfg.amp).cpu())
            all_labels.append(labels)
            all_indices.append(indices)
    if not all_logits:
        raise SfaError(f"no video of {cfg.manifest} could be read; see {out / FAILURES_FILE}")
    logits, labels, indices = torch.cat(all_logits), torch.cat(all_labels), torch.cat(all_indices)
    hits = topk_correct(logits, labels)
    confusion = confusion_matrix(logits.argmax(dim=-1), labels, len(classes))
    metrics = {
        "run": str(cfg.run), "manifest": str(cfg.manifest), "clips": cfg.clips, "crops": cfg.crops,
        "frames": model.temporal.num_frames, "videos": len(labels), "failed": dropped + len(manifest.skipped),
        "top1": 100.0 * hits[1] / len(labels), "top5": 100.0 * hits[5] / len(labels),
        "per_class_top1": dict(zip(classes, per_class_accuracy(confusion))),
    }
    atomic_write_json(out / "metrics.json", metrics)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["true \\ predicted", *classes])
    writer.writerows([name, *row] for name, row in zip(classes, confusion.tolist()))
    atomic_write_text(out / "confusion.csv", buf.getvalue())
    probs = logits.softmax(dim=-1)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["row", "path", "label", "predicted", "probability"])
    for i, label, p in zip(indices.tolist(), labels.tolist(), probs):
        entry = manifest.entries[i]
        writer.writerow([entry.row, entry.path, classes[label], classes[int(p.argmax())], f"{float(p.max()):.6f}"])
    atomic_write_text(out / "predictions.csv", buf.getvalue())
    log.info("top-1 %.2f  top-5 %.2f on %d videos (%d unreadable) -> %s", metrics["top1"], metrics["top5"],
             len(labels), dropped, out)
    return {**metrics, "out": str(out)}


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
    spec = _spec(model, clips, crops, backend)
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
