"""Pre-train a timm ViT on synthetic images: the demo's stand-in for an image checkpoint.

The SFA recipe starts the spatial ViT from an image checkpoint (ImageNet-21k, JFT). None can be
downloaded offline, and a ViT trained from random weights on a few hundred clips learns nothing
in a CPU budget. So the demo first pre-trains the ViT on one of two tasks:

- `generic` (the paper's premise): name the kind of object in images drawn unlike the videos'
  frames (`render_objects`), with random crops, flips and brightness / contrast jitter, as
  ImageNet training does: features of what an object is, indifferent to where it is and how lit.
- `aligned`: on frames drawn like the videos' (`render_frames`), where the acting shape is and
  whether it is lit: exactly the per-frame facts the video classes are made of.

The result is an ordinary weights file for `--backbone-weights`.
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
from sfa_cache.data.synthetic_images import FRAME_CLASSES, OBJECT_KINDS, render_frames, render_objects
from sfa_cache.errors import SfaError
from sfa_cache.models.config import SpatialConfig
from sfa_cache.models.spatial import SpatialTransformer, backbone_norm
from sfa_cache.runtime import BAR_INTERVAL, autocast
from sfa_cache.video.transforms import eval_transform

log = logging.getLogger(__name__)


TASKS = ("generic", "aligned")


@dataclass
class ImagePretrainConfig:
    task: str = "generic"  # TASKS: see the module docstring
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


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """ImageNet-style augmentation of normalised images [B, 3, S, S] -> [B, 3, S, S]: a random
    crop of 70-100% of the side resized back, horizontal and vertical flips, and brightness and
    contrast jitter (in units of the normalisation's std)."""
    B = x.shape[0]
    rand = torch.rand(B, 7, generator=gen)
    scale = 0.7 + 0.3 * rand[:, 0]
    flip_x = torch.where(rand[:, 1] < 0.5, -1.0, 1.0)
    flip_y = torch.where(rand[:, 2] < 0.5, -1.0, 1.0)
    theta = torch.zeros(B, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = scale * flip_x, scale * flip_y
    theta[:, 0, 2], theta[:, 1, 2] = (1 - scale) * (2 * rand[:, 3] - 1), (1 - scale) * (2 * rand[:, 4] - 1)
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    contrast = (0.6 + 0.8 * rand[:, 5]).view(B, 1, 1, 1).to(x.device)
    brightness = (rand[:, 6] - 0.5).view(B, 1, 1, 1).to(x.device)
    return x * contrast + brightness


def pretrain_on_synthetic_frames(
    cfg: ImagePretrainConfig, out: str | os.PathLike, device: torch.device
) -> dict[str, Any]:
    """Train, write the backbone weights (no head) to `out` (.safetensors); returns held-out accuracy."""
    if cfg.task not in TASKS:
        raise SfaError(f"the image pre-training task must be one of {', '.join(TASKS)}, got {cfg.task!r}")
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    generic = cfg.task == "generic"
    spatial = SpatialTransformer(SpatialConfig(backbone=cfg.backbone, image_size=cfg.image_size))
    backbone = spatial.backbone.to(device)
    head = torch.nn.Linear(spatial.embed_dim, len(OBJECT_KINDS) if generic else FRAME_CLASSES).to(device)
    mean, std = backbone_norm(backbone)
    held_out = 1000
    render = render_objects if generic else render_frames
    frames, targets = render(cfg.frames + held_out, cfg.frame_size, rng)
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
        batch = augment(x[idx], gen) if generic else x[idx]
        with autocast(device, cfg.amp):
            logits = head(backbone(batch.to(device)))
        loss = F.cross_entropy(logits.float(), y[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    backbone.eval()
    with torch.no_grad(), autocast(device, cfg.amp):
        pred = torch.cat([head(backbone(chunk.to(device))).argmax(-1).cpu() for chunk in x[cfg.frames:].split(256)])
    truth = y[cfg.frames:]
    result = {
        "task": cfg.task,
        "accuracy": float((pred == truth).float().mean()),  # on held-out images, not augmented
        "chance": 1 / head.out_features,
        "steps": cfg.steps,
    }
    if not generic:
        result["lit_accuracy"] = float((pred % 2 == truth % 2).float().mean())
    state = {k: v.detach().contiguous().cpu() for k, v in backbone.state_dict().items()}
    atomic_write(out, lambda tmp: save_file(state, str(tmp)))
    log.info("image pre-training (%s): %.1f%% on held-out images (%s, chance %.1f%%) -> %s", cfg.task,
             100 * result["accuracy"], "object kind" if generic else "cell x lit", 100 * result["chance"], out)
    return result
