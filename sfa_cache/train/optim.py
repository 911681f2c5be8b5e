"""Optimisation settings, optimisers and the learning-rate schedule (cosine with linear warmup, as in ViViT).

torch is imported where an optimiser is built, not at the top: the command line reads
`OptimConfig` and `OPTIMIZERS` for its options, and `--help` must not wait for torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Optional

from sfa_cache.errors import SfaError
from sfa_cache.runtime import validate_amp

if TYPE_CHECKING:
    import torch
    from torch import nn

OPTIMIZERS = ("sgd", "adamw")


@dataclass
class OptimConfig:
    """Optimisation hyper-parameters (defaults: the paper's Kinetics recipe, supp. Table 1)."""

    epochs: int = 30  # with `patience`: the most epochs (the cosine schedule spans these)
    patience: Optional[int] = None  # stop once neither val top-1 nor val loss improved for this many epochs
    batch_size: int = 8  # clips per step per process; see accum_steps for the effective batch
    accum_steps: int = 1  # micro-batches per optimiser step
    optimizer: str = "sgd"  # sgd (momentum, paper) | adamw
    lr: float = 0.1  # peak learning rate after warmup
    min_lr: float = 0.0  # end of the cosine
    weight_decay: float = 0.0
    momentum: float = 0.9
    warmup_epochs: float = 2.5
    clip_grad: Optional[float] = 1.0  # max global grad norm; None disables
    label_smoothing: float = 0.0
    mixup: float = 0.0  # Beta(alpha, alpha) mixup; 0 disables
    amp: str = "none"  # none | bf16 | fp16 (fp16 only on CUDA)
    spatial_lr_scale: float = 1.0  # the spatial ViT's lr relative to --lr (e.g. 0.1 for a pre-trained backbone)
    ema: float = 0.0  # decay of an exponential moving average of the weights (e.g. 0.999); 0 = none

    def validate(self) -> None:
        if self.epochs < 1:
            raise SfaError(f"epochs must be >= 1, got {self.epochs}")
        if self.patience is not None and self.patience < 1:
            raise SfaError(f"patience must be >= 1, got {self.patience}")
        if self.batch_size < 1 or self.accum_steps < 1:
            raise SfaError("batch size and accumulation steps must be >= 1")
        if self.lr <= 0:
            raise SfaError(f"learning rate must be positive, got {self.lr}")
        validate_amp(self.amp)
        if not 0 <= self.label_smoothing < 1:
            raise SfaError(f"label smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.ema < 1:
            raise SfaError(f"--ema is a decay in [0, 1) (e.g. 0.999; 0 = no EMA), got {self.ema}")


def param_groups(model: nn.Module, weight_decay: float, spatial_lr_scale: float = 1.0) -> list[dict]:
    """Trainable parameters split into decayed (matrices) and not decayed (biases, norms,
    position embeddings, CLS tokens), the usual ViT convention; parameters under `spatial.` get
    their own groups with `lr_scale = spatial_lr_scale` (a pre-trained image backbone is usually
    fine-tuned with a smaller learning rate than the new temporal transformer)."""
    # Fixed group order (decayed, not decayed; unit scale first): optimiser state is saved by position.
    scales = (1.0,) if spatial_lr_scale == 1.0 else (1.0, spatial_lr_scale)
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {(d, s): [] for s in scales for d in (True, False)}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decayed = not (p.ndim <= 1 or name.endswith(("pos_embed", "cls_token", "reg_token")))
        groups[(decayed, spatial_lr_scale if name.startswith("spatial.") else 1.0)].append(p)
    return [{"params": ps, "weight_decay": weight_decay if d else 0.0, "lr_scale": s}
            for (d, s), ps in groups.items() if ps or s == 1.0]


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float, momentum: float = 0.9,
                    spatial_lr_scale: float = 1.0) -> torch.optim.Optimizer:
    import torch

    groups = param_groups(model, weight_decay, spatial_lr_scale)
    if not any(g["params"] for g in groups):
        raise SfaError("the model has no trainable parameters")
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise SfaError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def lr_at(step: int, *, base_lr: float, total_steps: int, warmup_steps: int, min_lr: float = 0.0) -> float:
    """Linear warmup from 0 to `base_lr` over `warmup_steps`, then cosine decay to `min_lr`."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def trainable_count(params: Iterable[nn.Parameter]) -> int:
    return sum(p.numel() for p in params if p.requires_grad)
