"""Classification losses with label smoothing and mixup (soft targets)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def soft_targets(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """[B] int labels -> [B, C] smoothed one-hot targets."""
    off = smoothing / num_classes
    t = torch.full((labels.shape[0], num_classes), off, device=labels.device)
    return t.scatter_(1, labels[:, None], 1.0 - smoothing + off)


def mixup(
    x: torch.Tensor, targets: torch.Tensor, alpha: float, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch mixup (Zhang et al.): x' = lam x + (1-lam) x[reversed], the same for targets.

    x: [B, ...] inputs (frames or cached tokens), targets: [B, C] soft targets; the partner of
    each sample is the batch reversed, as in timm. lam ~ Beta(alpha, alpha) drawn from `rng`.
    """
    if alpha <= 0:
        return x, targets
    lam = float(rng.beta(alpha, alpha))
    return x * lam + x.flip(0) * (1 - lam), targets * lam + targets.flip(0) * (1 - lam)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum(t * log_softmax(logits)); logits, targets: [B, C]."""
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
