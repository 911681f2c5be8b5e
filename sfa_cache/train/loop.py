"""The training step and evaluation, shared by Stage 1 (frames) and Stage 2 (cached tokens).

Batches are `(inputs, labels, dropped)` from `collate_skip_failed` (inputs and labels None when
every item of the batch failed to decode); `inputs` is whatever the model's forward takes.
"""

from __future__ import annotations

import math
import time
from typing import Any, Iterable

import numpy as np
import torch
from timm.utils.model_ema import ModelEmaV3
from torch import nn
from tqdm import tqdm

from sfa_cache.data.failures import ALL_FAILED_LIMIT
from sfa_cache.distributed import all_reduce_sum, dist_info, is_distributed
from sfa_cache.errors import SfaError
from sfa_cache.runtime import BAR_INTERVAL, autocast
from sfa_cache.train.losses import mixup, soft_cross_entropy, soft_targets
from sfa_cache.train.metrics import topk_correct
from sfa_cache.train.optim import OptimConfig, build_optimizer, lr_at, set_lr

# The training loop reads the loss on the host (a device sync) every this many optimiser steps.
SYNC_EVERY = 32


class FiniteLossWatch:
    """Watches every step's loss for NaN / inf on the device, without a host sync per step: `add`
    keeps the first non-finite loss and its step in device tensors, `check` (a sync) raises."""

    def __init__(self, device: torch.device) -> None:
        self.bad = torch.zeros((), dtype=torch.bool, device=device)
        self.value = torch.zeros((), dtype=torch.float32, device=device)
        self.step = torch.zeros((), dtype=torch.int64, device=device)

    def add(self, loss: torch.Tensor, step: int) -> None:
        first = ~torch.isfinite(loss) & ~self.bad
        self.value = torch.where(first, loss.float(), self.value)
        self.step = torch.where(first, torch.full_like(self.step, step), self.step)
        self.bad |= first

    def check(self) -> None:
        if bool(self.bad):
            raise FloatingPointError(f"loss is {float(self.value)} at step {int(self.step)}; lower --lr or use "
                                     "--amp none")


class Trainer:
    """Owns the optimiser, the grad scaler and the global step; one call per epoch.

    Randomness inside a step (mixup, drop path, dropout) is re-seeded from (seed, epoch) at the
    start of every epoch, so a run resumed at an epoch boundary replays exactly.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: OptimConfig,
        *,
        steps_per_epoch: int,
        num_classes: int,
        device: torch.device,
        seed: int = 0,
    ) -> None:
        cfg.validate()
        self.module = model  # what is saved and evaluated
        self.model = model  # what trains: under torchrun, wrapped in DistributedDataParallel
        if is_distributed():
            self.model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        self.cfg = cfg
        self.device = device
        self.seed = seed
        self.num_classes = num_classes
        self.micro_per_epoch = steps_per_epoch
        self.steps_per_epoch = math.ceil(steps_per_epoch / cfg.accum_steps)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.warmup_steps = round(cfg.warmup_epochs * self.steps_per_epoch)
        self.optimizer = build_optimizer(
            model, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum, cfg.spatial_lr_scale
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
        # The weights' moving average: timm's ModelEmaV3 (a copy of the model, lerped after every
        # optimiser step, in place and batched; the first step copies). Frozen parameters average
        # to themselves. Every rank holds the same weights, so every rank's average is the same.
        self.ema = ModelEmaV3(model, decay=cfg.ema) if cfg.ema else None
        self.step = 0
        self.epoch = 0  # epochs completed

    def lr(self) -> float:
        c = self.cfg
        return lr_at(
            self.step, base_lr=c.lr, total_steps=self.total_steps, warmup_steps=self.warmup_steps, min_lr=c.min_lr
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.module.state_dict(),
            "world_size": dist_info().world_size,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "step": self.step,
            "epoch": self.epoch,
            "seed": self.seed,
            # No RNG blobs: all randomness is derived from (seed, epoch[, clip]), see class doc.
            "rng": "derived from (seed, epoch)",
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            if state.get("ema") is None:
                raise SfaError("this run was trained without --ema; resume it without --ema")
            self.ema.module.load_state_dict(state["ema"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])

    def _optimizer_step(self) -> float:
        """Apply the accumulated gradients at this step's learning rate (clipped, scaled for fp16),
        then advance the step and the EMA; returns the learning rate used."""
        opt = self.optimizer
        lr = self.lr()
        set_lr(opt, lr)
        if self.cfg.clip_grad:
            self.scaler.unscale_(opt)
            nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], self.cfg.clip_grad)
        self.scaler.step(opt)
        self.scaler.update()
        opt.zero_grad(set_to_none=True)
        self.step += 1
        if self.ema is not None:
            self.ema.update(self.module, step=self.step)
        return lr

    def train_epoch(
        self, loader: Iterable, *, log_every: int = 0, log: Any = None, desc: str = "train"
    ) -> dict[str, float]:
        """One pass over `loader`; returns mean loss, clips seen, clips dropped, seconds."""
        cfg, model, opt = self.cfg, self.model, self.optimizer
        torch.manual_seed(self.seed * 100_003 + self.epoch)
        mix_rng = np.random.default_rng([self.seed, self.epoch, 0x313])
        model.train()
        opt.zero_grad(set_to_none=True)
        # The loss stays on the device: summed there, and read (a host sync) only every
        # SYNC_EVERY optimiser steps, at log steps and at the epoch's end, not after every step.
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        finite = FiniteLossWatch(self.device)
        seen, dropped, t0 = 0, 0, time.perf_counter()
        bar = tqdm(
            loader,
            total=self.micro_per_epoch,
            desc=desc,
            unit="batch",
            dynamic_ncols=True,
            mininterval=BAR_INTERVAL,
            leave=False,
            disable=not dist_info().is_main,
        )
        for i, batch in enumerate(bar):
            last = i + 1 == self.micro_per_epoch
            x, y, n_dropped = batch
            dropped += n_dropped
            if seen == 0 and x is None and dropped >= ALL_FAILED_LIMIT:
                raise SfaError(f"the first {dropped} training clips all failed to load: nothing to learn from; "
                               "check the input, --root and --backend (the failures file lists why)")
            if x is not None:
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                targets = soft_targets(y, self.num_classes, cfg.label_smoothing)
                x, targets = mixup(x, targets, cfg.mixup, mix_rng)
                with autocast(self.device, cfg.amp):
                    loss = soft_cross_entropy(model(x), targets)
                finite.add(loss.detach(), self.step)
                self.scaler.scale(loss / cfg.accum_steps).backward()
                loss_sum += loss.detach() * y.shape[0]
                seen += y.shape[0]
            if (i + 1) % cfg.accum_steps == 0 or last:
                lr = self._optimizer_step()
                logging_now = log is not None and log_every and self.step % log_every == 0
                if self.step % SYNC_EVERY == 0 or logging_now or last:
                    finite.check()
                    mean_loss = float(loss_sum) / max(1, seen)
                    rate = seen / max(1e-9, time.perf_counter() - t0)
                    bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}", clips_s=f"{rate:.1f}")
                    if logging_now:
                        log({"kind": "train", "epoch": self.epoch + 1, "step": self.step, "loss": mean_loss,
                             "lr": lr, "clips_per_s": rate})
        bar.close()
        self.epoch += 1
        finite.check()
        total_loss, seen, dropped = all_reduce_sum([float(loss_sum), seen, dropped], self.device)  # every rank's
        return {"train_loss": total_loss / max(1, seen), "train_clips": int(seen), "train_dropped": int(dropped),
                "train_seconds": time.perf_counter() - t0}


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: Iterable, *, device: torch.device, num_classes: int, amp: str = "none", desc: str = "eval"
) -> dict[str, float]:
    """Mean cross-entropy, top-1 and top-5 (in %) over `loader`; failed clips are counted apart."""
    model.eval()
    loss_sum, n, dropped = 0.0, 0, 0
    hits = {1: 0, 5: 0}
    for batch in tqdm(loader, desc=desc, unit="batch", dynamic_ncols=True, mininterval=BAR_INTERVAL, leave=False,
                      disable=not dist_info().is_main):
        x, y, n_dropped = batch
        dropped += n_dropped
        if x is None:
            continue
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(x)
        loss_sum += soft_cross_entropy(logits, soft_targets(y, num_classes)).item() * y.shape[0]
        for k, v in topk_correct(logits, y).items():
            hits[k] += v
        n += y.shape[0]
    loss_sum, n, hits[1], hits[5], dropped = all_reduce_sum([loss_sum, n, hits[1], hits[5], dropped], device)
    n, dropped = int(n), int(dropped)
    if n == 0:
        return {
            "val_loss": float("nan"),
            "val_top1": float("nan"),
            "val_top5": float("nan"),
            "val_clips": 0,
            "val_dropped": dropped,
        }
    return {
        "val_loss": loss_sum / n,
        "val_top1": 100.0 * hits[1] / n,
        "val_top5": 100.0 * hits[5] / n,
        "val_clips": n,
        "val_dropped": dropped,
    }
