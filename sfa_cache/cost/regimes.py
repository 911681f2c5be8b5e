"""The three ways of training ViViT-FE at F frames that the cost tools compare.

* `baseline`: conventional training, the whole ViViT-FE (spatial ViT included) forward + backward.
* `paper`:    the paper's Stage 2, the frozen spatial ViT run every step without gradients, then
              adapter + temporal transformer forward + backward.
* `cached`:   sfa-cache's Stage 2, adapter + temporal transformer on cached CLS tokens; the
              spatial ViT is never built.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from sfa_cache.errors import SfaError
from sfa_cache.models.config import AdapterConfig, SpatialConfig, TemporalConfig, ViViTConfig
from sfa_cache.models.spatial import SpatialTransformer
from sfa_cache.models.vivit import ViViTFE
from sfa_cache.runtime import autocast
from sfa_cache.train.optim import build_optimizer

REGIMES = ("baseline", "paper", "cached")
REGIME_LABELS = {
    "baseline": "baseline: whole ViViT-FE trained",
    "paper": "paper Stage 2: frozen spatial forward + adapter + temporal",
    "cached": "cached Stage 2 (sfa-cache): adapter + temporal on cached tokens",
}


@dataclass(frozen=True)
class SpatialShape:
    """The sizes of a timm ViT that memory and time depend on."""

    backbone: str
    image_size: int
    depth: int
    width: int
    heads: int
    mlp_dim: int
    tokens: int  # per frame: patches + prefix (CLS) tokens
    params: int


@lru_cache(maxsize=None)
def spatial_shape(backbone: str, image_size: int) -> SpatialShape:
    """Read a backbone's sizes by building it on the meta device (no memory, no weights)."""
    with torch.device("meta"):
        vit = SpatialTransformer(SpatialConfig(backbone=backbone, image_size=image_size)).backbone
    block = vit.blocks[0]
    fc1 = getattr(getattr(block, "mlp", None), "fc1", None)
    return SpatialShape(
        backbone=backbone, image_size=image_size, depth=len(vit.blocks), width=vit.embed_dim,
        heads=block.attn.num_heads, mlp_dim=fc1.out_features if fc1 is not None else 4 * vit.embed_dim,
        tokens=vit.patch_embed.num_patches + getattr(vit, "num_prefix_tokens", 1),
        params=sum(p.numel() for p in vit.parameters()),
    )


def regime_config(backbone: str, frames: int, *, image_size: int = 224, temporal_depth: int = 4,
                  adapter: str = "mlp", num_classes: int = 400, frame_chunk: int = 32) -> ViViTConfig:
    """ViViT-FE over `backbone` at `frames` frames; the temporal transformer has the backbone's
    width, heads D/64 and MLP 4D (ViViT-FE's B/L/H sizes) and `temporal_depth` layers."""
    if frames < 1:
        raise SfaError(f"frames must be >= 1, got {frames}")
    return ViViTConfig(
        num_classes=num_classes,
        spatial=SpatialConfig(backbone=backbone, image_size=image_size, frame_chunk=frame_chunk),
        adapter=AdapterConfig(adapter),
        temporal=TemporalConfig(num_frames=frames, depth=temporal_depth),
        embed_dim=spatial_shape(backbone, image_size).width,
    )


def build_regime_model(regime: str, cfg: ViViTConfig, device: torch.device) -> ViViTFE:
    """The model `regime` trains: whole, spatial frozen, or without a spatial part."""
    if regime not in REGIMES:
        raise SfaError(f"unknown regime {regime!r}; choose one of {', '.join(REGIMES)}")
    model = ViViTFE(cfg, with_spatial=regime != "cached").to(device)
    if regime == "paper":
        model.freeze_spatial()
    return model.train()


def regime_forward(regime: str, model: ViViTFE, x: torch.Tensor) -> torch.Tensor:
    """Logits of one batch: frames [B, F, 3, H, W] (baseline, paper) or tokens [B, F, D] (cached)."""
    if regime == "paper":
        with torch.no_grad():
            tokens = model.encode_frames(x)
        return model.forward_head(model.forward_tokens(tokens))
    return model(x)


def regime_input(regime: str, cfg: ViViTConfig, batch: int, device: torch.device) -> torch.Tensor:
    """A random batch shaped like the regime's input."""
    frames = cfg.temporal.num_frames
    if regime == "cached":
        return torch.randn(batch, frames, cfg.embed_dim, device=device)
    size = cfg.spatial.image_size
    return torch.randn(batch, frames, 3, size, size, device=device)


class TrainStep:
    """One optimiser step of a regime (forward, backward, update), as Stage 1 / Stage 2 run it.

    `inputs` supplies each step's batch (e.g. read from a real cache); by default one random
    batch already on the device is reused, so only the model's cost is measured.
    """

    def __init__(self, regime: str, cfg: ViViTConfig, batch: int, device: torch.device, *, amp: str = "none",
                 optimizer: str = "sgd", inputs: Optional[Callable[[], torch.Tensor]] = None) -> None:
        self.regime, self.device, self.amp = regime, device, amp
        self.model = build_regime_model(regime, cfg, device)
        self.optimizer = build_optimizer(self.model, optimizer, lr=1e-3, weight_decay=0.0)
        self.labels = torch.randint(0, cfg.num_classes, (batch,), device=device)
        self.inputs = inputs
        self.fixed = regime_input(regime, cfg, batch, device) if inputs is None else None

    def __call__(self) -> None:
        x = self.fixed if self.inputs is None else self.inputs()
        with autocast(self.device, self.amp):
            loss = F.cross_entropy(regime_forward(self.regime, self.model, x), self.labels)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
