"""The spatial transformer of ViViT-FE: a timm ViT run on every frame, keeping the CLS token."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

import timm
import torch
from timm.models import vision_transformer
from torch import nn

from sfa_cache.errors import SfaError
from sfa_cache.models.config import SpatialConfig

log = logging.getLogger(__name__)


def create_backbone(cfg: SpatialConfig, pretrained: bool = False) -> nn.Module:
    """The timm model named by `cfg.backbone`, headless, pooling its CLS token.

    `pretrained=True` downloads the timm hub weights for the name's tag (needs internet).
    """
    name = cfg.backbone
    if not timm.is_model(name):
        raise SfaError(f"unknown backbone {name!r}; list candidates with timm.list_models('vit_*')")
    if cfg.image_size < 1:
        raise SfaError(f"image size must be positive, got {cfg.image_size}")
    try:
        model = timm.create_model(
            name,
            pretrained=pretrained,
            img_size=cfg.image_size,
            num_classes=0,
            global_pool="token",
            drop_path_rate=cfg.drop_path,
        )
    except (TypeError, ValueError, AssertionError) as e:
        # timm raises these for models that are not ViTs or cannot pool a CLS token.
        raise SfaError(f"backbone {name!r} cannot be used as a per-frame CLS encoder: {e}") from None
    except (OSError, RuntimeError) as e:
        if pretrained:  # the hub is unreachable, or its file is not there
            raise SfaError(f"cannot fetch pretrained weights for {name!r}: {e}; "
                           "download them elsewhere and pass --backbone-weights PATH") from None
        raise
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if patch is None or getattr(model, "cls_token", None) is None:
        raise SfaError(f"backbone {name!r} is not a ViT with a CLS token")
    if cfg.image_size % patch[0] or cfg.image_size % patch[1]:
        raise SfaError(
            f"image size {cfg.image_size} is not divisible by {name}'s patch size {patch[0]}"
        )
    return model


def backbone_norm(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) from the backbone's timm pretrained cfg (ImageNet defaults if it has none)."""
    data_cfg = timm.data.resolve_data_config({}, model=model)
    return tuple(float(v) for v in data_cfg["mean"]), tuple(float(v) for v in data_cfg["std"])


class SpatialTransformer(nn.Module):
    """Per-frame CLS encoder: [B, T, 3, H, W] -> [B, T, D].

    Frames are flattened into the batch and sent through the ViT `frame_chunk` at a time, so
    activation memory is bounded by the chunk, not by the clip length.
    """

    def __init__(self, cfg: SpatialConfig, pretrained: bool = False) -> None:
        super().__init__()
        self.backbone = create_backbone(cfg, pretrained=pretrained)
        self.embed_dim: int = self.backbone.embed_dim
        self.frame_chunk = max(1, cfg.frame_chunk)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        B, T = frames.shape[:2]
        flat = frames.flatten(0, 1)  # [B*T, 3, H, W]
        tokens = [self.backbone(chunk) for chunk in flat.split(self.frame_chunk)]
        return torch.cat(tokens).view(B, T, self.embed_dim)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file (.safetensors, .pth, .pt, .bin) into a flat tensor dict.

    Wrapped checkpoints ({'state_dict': ...}, {'model': ...}) and DDP `module.` prefixes are
    unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise SfaError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any parse failure of a user file is a user-facing error
        raise SfaError(f"cannot read weights file {path}: {e}") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise SfaError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> list[str]:
    """Load an image checkpoint into `backbone`; returns the checkpoint keys that were ignored.

    timm's `checkpoint_filter_fn` adapts foreign layouts (original JAX/DeiT/CLIP names) and
    resamples the patch position embeddings to this image size. The image classifier (`head.*`)
    is dropped. Missing or shape-mismatched keys are an error naming them: a backbone that is
    silently half random would waste a whole training run.
    """
    sd = read_state_dict(path)
    sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
    if sd and all(k.startswith("backbone.") for k in sd):  # our own SpatialTransformer state dict
        sd = {k.removeprefix("backbone."): v for k, v in sd.items()}
    # Each timm model module ships its own filter (vision_transformer, eva, deit ...).
    module = sys.modules.get(type(backbone).__module__)
    filter_fn = getattr(module, "checkpoint_filter_fn", vision_transformer.checkpoint_filter_fn)
    try:
        sd = filter_fn(sd, backbone)
    except (KeyError, RuntimeError, ValueError) as e:
        raise SfaError(f"{path} does not fit backbone {type(backbone).__name__}: {e}") from None
    own = backbone.state_dict()
    mismatched = [k for k, v in sd.items() if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in sd]
    if missing or mismatched:
        problems = []
        if missing:
            problems.append(f"missing {_names(missing)}")
        if mismatched:
            problems.append("shape mismatch " + _names(
                [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in mismatched]))
        raise SfaError(f"{path} does not fit the backbone: {'; '.join(problems)}")
    unexpected = sorted(k for k in sd if k not in own)
    backbone.load_state_dict({k: v for k, v in sd.items() if k in own})
    if unexpected:
        log.warning("ignored %d key(s) of %s not used by the backbone: %s", len(unexpected), path, _names(unexpected))
    return unexpected


def _names(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" ... (+{len(keys) - limit} more)" if len(keys) > limit else "")


def build_backbone_spatial(backbone: str, image_size: int, *, weights: Optional[str] = None, pretrained: bool = False,
                           seed: int = 0) -> tuple[SpatialTransformer, SpatialConfig]:
    """A bare timm backbone as the spatial transformer (no Stage 1), its config with mean/std resolved.

    Random weights (neither `weights` nor `pretrained`) come from `seed`, so they can be rebuilt.
    """
    torch.manual_seed(seed)
    spatial = SpatialTransformer(SpatialConfig(backbone=backbone, image_size=image_size), pretrained=pretrained)
    if weights:
        load_backbone_weights(spatial.backbone, weights)
    mean, std = backbone_norm(spatial.backbone)
    return spatial, SpatialConfig(backbone=backbone, image_size=image_size, mean=mean, std=std)
