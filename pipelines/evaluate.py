"""`sfa-cache evaluate`: the end-to-end model on a manifest of raw videos, scored and written.

Multi-view testing as in ViViT (`sfa_cache/inference.py`): `--clips` temporal clips x `--crops`
spatial crops per video, their logits averaged. Any run directory with spatial weights works:
Stage 1, a baseline, or an assembled SFA model. `sfa-cache predict` is `inference.predict`.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from sfa_cache.atomic import atomic_write_json, atomic_write_text
from sfa_cache.data.batches import EpochSampler, collate_items_skip_failed
from sfa_cache.data.failures import FAILURES_FILE, record_failure
from sfa_cache.data.inputs import input_name, read_input
from sfa_cache.data.loaders import video_loader
from sfa_cache.data.video_dataset import MultiViewClipDataset
from sfa_cache.errors import SfaError
from sfa_cache.inference import clip_spec, load_for_inference, multi_view_logits
from sfa_cache.pipelines.job_configs import EvaluateConfig
from sfa_cache.runtime import BAR_INTERVAL, resolve_device
from sfa_cache.train.metrics import confusion_matrix, per_class_accuracy, topk_correct
from sfa_cache.video.reader import check_decoder

log = logging.getLogger("sfa_cache")


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
    dataset = MultiViewClipDataset(manifest, clip_spec(model, cfg.clips, cfg.crops, cfg.backend), out / FAILURES_FILE)
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


