"""Pre-train a timm ViT on single synthetic frames: the demo's stand-in for an image checkpoint.

The SFA recipe starts the spatial ViT from an image checkpoint (ImageNet-21k, JFT). None can be
downloaded offline, and a ViT trained from random weights on a few hundred clips learns nothing
in a CPU budget (its CLS tokens barely depend on the pixels at initialisation). So the demo first
teaches the ViT, on frames drawn like the videos' (`render_frames`), where the acting shape is
and whether it is lit. The result is an ordinary weights file for `--backbone-weights`.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm import tqdm

from sfa_cache.atomic import atomic_write
from sfa_cache.data.synthetic import FRAME_CLASSES, render_frames
from sfa_cache.models.config import SpatialConfig
from sfa_cache.models.spatial import SpatialTransformer, backbone_norm
from sfa_cache.runtime import BAR_INTERVAL, autocast
from sfa_cache.video.transforms import eval_transform

log = logging.getLogger(__name__)


@dataclass
class ImagePretrainConfig:
    backbone: str = "vit_tiny_patch16_224"
    image_size: int = 32
    frame_size: int = 64  # rendered like the synthetic videos, then resized and cropped like them
    frames: int = 20_000  # training frames (rendered once)
    steps: int = 800
    batch_size: int = 64
    lr: float = 3e-4  # AdamW, 50 warm-up steps, cosine; 1e-3 does not train a ViT from scratch here
    weight_decay: float = 0.05
    seed: int = 0
    amp: str = "none"  # mixed precision of the forward passes (runtime.AMP_MODES)


def pretrain_on_synthetic_frames(
    cfg: ImagePretrainConfig, out: str | os.PathLike, device: torch.device
) -> dict[str, Any]:
    """Train, write the backbone weights (no head) to `out` (.safetensors); returns held-out accuracy."""
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    spatial = SpatialTransformer(SpatialConfig(backbone=cfg.backbone, image_size=cfg.image_size))
    backbone = spatial.backbone.to(device)
    head = torch.nn.Linear(spatial.embed_dim, FRAME_CLASSES).to(device)
    mean, std = backbone_norm(backbone)
    held_out = 1000
    frames, targets = render_frames(cfg.frames + held_out, cfg.frame_size, rng)
    # The eval view of a clip, frame by frame, in chunks to bound the float copy's memory.
    x = torch.cat(
        [
            eval_transform(chunk, cfg.image_size, mean, std)
            for chunk in np.array_split(frames, max(1, len(frames) // 2000))
        ]
    )
    y = torch.from_numpy(targets)
    params = list(backbone.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = min(50, cfg.steps)
    backbone.train()
    for step in tqdm(range(cfg.steps), desc="image pre-training", unit="step", mininterval=BAR_INTERVAL, leave=False):
        lr = cfg.lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.from_numpy(rng.integers(0, cfg.frames, cfg.batch_size))
        with autocast(device, cfg.amp):
            logits = head(backbone(x[idx].to(device)))
        loss = F.cross_entropy(logits.float(), y[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    backbone.eval()
    with torch.no_grad(), autocast(device, cfg.amp):
        pred = torch.cat([head(backbone(chunk.to(device))).argmax(-1).cpu() for chunk in x[cfg.frames:].split(256)])
    truth = y[cfg.frames:]
    result = {
        "accuracy": float((pred == truth).float().mean()),
        "lit_accuracy": float((pred % 2 == truth % 2).float().mean()),
        "chance": 1 / FRAME_CLASSES,
        "steps": cfg.steps,
    }
    state = {k: v.detach().contiguous().cpu() for k, v in backbone.state_dict().items()}
    atomic_write(out, lambda tmp: save_file(state, str(tmp)))
    log.info("image pre-training: %.1f%% on held-out frames (cell x lit, chance %.1f%%), lit %.1f%% -> %s",
             100 * result["accuracy"], 100 * result["chance"], 100 * result["lit_accuracy"], out)
    return result
