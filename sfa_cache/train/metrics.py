"""Accuracy bookkeeping."""

from __future__ import annotations

import torch


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, int]:
    """Number of samples whose label is in the top-k predictions, per k (k clipped to C)."""
    kmax = min(max(ks), logits.shape[-1])
    top = logits.topk(kmax, dim=-1).indices  # [B, kmax]
    hit = top.eq(labels[:, None])
    return {k: int(hit[:, : min(k, kmax)].any(dim=-1).sum()) for k in ks}
