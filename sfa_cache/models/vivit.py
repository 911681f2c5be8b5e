"""ViViT Factorised Encoder: spatial ViT per frame -> adapter -> temporal transformer -> head."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from sfa_cache.errors import SfaError
from sfa_cache.models.adapter import build_adapter
from sfa_cache.models.config import ViViTConfig
from sfa_cache.models.spatial import SpatialTransformer, backbone_norm, load_backbone_weights
from sfa_cache.models.temporal import TemporalTransformer, resize_temporal_pos_embed


class ViViTFE(nn.Module):
    """The factorised encoder of ViViT (model 2), in the SFA form of paper Eq. 2.

    `forward`: [B, T, 3, H, W] normalised float frames -> [B, num_classes] logits.
    `with_spatial=False` builds only adapter + temporal (Stage 2 on cached tokens): the spatial
    ViT is then never constructed, so memory does not depend on its size, and `forward` takes
    the cached tokens [B, T, D] instead of frames.
    """

    def __init__(
        self,
        cfg: ViViTConfig,
        *,
        with_spatial: bool = True,
        pretrained: bool = False,
        backbone_weights: Optional[str | Path] = None,
    ) -> None:
        super().__init__()
        self.spatial: Optional[SpatialTransformer] = None
        if with_spatial:
            self.spatial = SpatialTransformer(cfg.spatial, pretrained=pretrained)
            if backbone_weights is not None:
                load_backbone_weights(self.spatial.backbone, backbone_weights)
            mean, std = backbone_norm(self.spatial.backbone)
            # Resolve everything the backbone decided, so the saved config is self-contained.
            cfg = dataclasses.replace(
                cfg,
                embed_dim=self.spatial.embed_dim,
                spatial=dataclasses.replace(cfg.spatial, mean=cfg.spatial.mean or mean, std=cfg.spatial.std or std),
            )
        elif cfg.embed_dim is None:
            raise SfaError("a model without its spatial part needs embed_dim in its config")
        self.cfg = cfg
        self.adapter = build_adapter(cfg.adapter, cfg.embed_dim)
        self.temporal = TemporalTransformer(cfg.temporal, cfg.embed_dim, cfg.num_classes)
        self.spatial_frozen = False

    # --- forward -------------------------------------------------------------------------------
    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """[B, T, 3, H, W] -> [B, T, D] spatial CLS tokens (what the feature cache stores)."""
        if self.spatial is None:
            raise SfaError("this model was built without its spatial transformer")
        return self.spatial(frames)

    def forward_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, T, D] spatial CLS tokens -> [B, D] temporal pre-logits (adapter + temporal)."""
        return self.temporal.forward_features(self.adapter(tokens))

    def forward_features(self, frames: torch.Tensor) -> torch.Tensor:
        """[B, T, 3, H, W] -> [B, D] pre-logits."""
        return self.forward_tokens(self.encode_frames(frames))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """[B, D] -> [B, num_classes]."""
        return self.temporal.forward_head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Frames [B, T, 3, H, W] (or tokens [B, T, D] without a spatial part) -> [B, classes]."""
        features = self.forward_tokens(x) if self.spatial is None else self.forward_features(x)
        return self.forward_head(features)

    # --- freezing ------------------------------------------------------------------------------
    def freeze_spatial(self) -> "ViViTFE":
        """Stop gradients into the spatial ViT and keep it in eval mode (no drop path/dropout)."""
        if self.spatial is not None:
            self.spatial.requires_grad_(False)
            self.spatial.eval()
        self.spatial_frozen = True
        return self

    def train(self, mode: bool = True) -> "ViViTFE":
        super().train(mode)
        if self.spatial_frozen and self.spatial is not None:
            self.spatial.eval()
        return self


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: ViViTFE) -> dict[str, torch.Tensor]:
    """Adapt a ViViTFE state dict to `model`.

    The temporal position table is interpolated to the model's frame count; spatial weights are
    dropped when the model has no spatial part; an adapter absent from the checkpoint (Stage 1 ->
    Stage 2) is left at its own initialisation.
    """
    out = {}
    for key, value in state_dict.items():
        if key.startswith("spatial.") and model.spatial is None:
            continue
        if key == "temporal.pos_embed":
            value = resize_temporal_pos_embed(value, model.temporal.num_frames)
        out[key] = value
    return out


def load_vivit_state_dict(model: ViViTFE, state_dict: dict[str, torch.Tensor], *, allow_missing: tuple[str, ...] = (),
                          drop: tuple[str, ...] = (), where: str = "the checkpoint") -> None:
    """Load a ViViTFE state dict into `model`, adapted by `checkpoint_filter_fn` (another frame
    count, no spatial part), and strictly otherwise: keys under a `drop` prefix are discarded
    (e.g. a head trained on other classes), keys under an `allow_missing` prefix may be absent and
    keep the model's own initialisation (e.g. the adapter, new in Stage 2). Anything else missing
    or unexpected is an error naming `where`."""
    sd = {k: v for k, v in checkpoint_filter_fn(state_dict, model).items() if not k.startswith(drop)}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.startswith(allow_missing + drop)]
    if missing or unexpected:
        raise SfaError(f"{where} does not fit the model (missing {missing[:8]}, unexpected {unexpected[:8]})")
