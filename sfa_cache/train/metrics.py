"""Accuracy bookkeeping."""

from __future__ import annotations

import torch


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, int]:
    """Number of samples whose label is in the top-k predictions, per k (k clipped to C)."""
    kmax = min(max(ks), logits.shape[-1])
    top = logits.topk(kmax, dim=-1).indices  # [B, kmax]
    hit = top.eq(labels[:, None])
    return {k: int(hit[:, : min(k, kmax)].any(dim=-1).sum()) for k in ks}


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[N] predicted and true class ids -> [C, C] int64 counts, rows = true class, columns = predicted."""
    flat = labels.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def per_class_accuracy(confusion: torch.Tensor) -> list[float | None]:
    """Top-1 accuracy (%) of each true class; None for a class absent from the evaluation set."""
    totals = confusion.sum(dim=1)
    return [None if int(n) == 0 else 100.0 * float(confusion[c, c]) / float(n) for c, n in enumerate(totals)]
