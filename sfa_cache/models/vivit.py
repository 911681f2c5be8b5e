"""ViViT Factorised Encoder: spatial ViT per frame -> adapter -> temporal transformer -> head."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from sfa_cache.atomic import atomic_write
from sfa_cache.models.fingerprint import FINGERPRINT_VERSION, spatial_fingerprint
from sfa_cache.configs import config_from_dict
from sfa_cache.errors import SfaError
from sfa_cache.models.adapter import build_adapter
from sfa_cache.models.config import SpatialConfig, ViViTConfig
from sfa_cache.models.spatial import SpatialTransformer, backbone_norm, load_backbone_weights
from sfa_cache.models.temporal import TemporalTransformer, resize_temporal_pos_embed
from sfa_cache.train.run_dir import CONFIG_FILE, read_run_config

MODEL_FILE = "model.safetensors"
# In the safetensors header metadata; versioned so that a stale definition is never trusted.
FINGERPRINT_KEY = f"spatial_fingerprint_v{FINGERPRINT_VERSION}"


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


def load_vivit_state_dict(model: ViViTFE, state_dict: dict[str, torch.Tensor], *, allow_missing_adapter: bool = False) -> None:
    """Load a (possibly foreign-frame-count) ViViTFE state dict, strictly except where allowed."""
    sd = checkpoint_filter_fn(state_dict, model)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if allow_missing_adapter:
        missing = [k for k in missing if not k.startswith("adapter.")]
    if missing or unexpected:
        raise SfaError(f"checkpoint does not fit the model: missing {missing[:8]}, unexpected {unexpected[:8]}")


def save_model_weights(model: ViViTFE, run_dir: str | Path) -> None:
    """Write `model.safetensors` atomically, with the spatial fingerprint in its header metadata.

    The fingerprint travels with the weights it describes, so a cache can be matched to a run
    without hashing the run's weights again.
    """
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {}
    if model.spatial is not None:
        metadata[FINGERPRINT_KEY] = spatial_fingerprint(model.spatial.backbone.state_dict(), model.cfg.spatial)
    atomic_write(Path(run_dir) / MODEL_FILE, lambda tmp: save_file(state, str(tmp), metadata=metadata))


def read_spatial_fingerprint(run_dir: str | Path) -> str:
    """The spatial fingerprint of a run directory's weights (from the header, else computed)."""
    weights = _weights_file(run_dir)
    with safe_open(str(weights), framework="pt") as f:
        stored = (f.metadata() or {}).get(FINGERPRINT_KEY)
    if stored:
        return stored
    spatial, cfg = load_spatial(run_dir)
    return spatial_fingerprint(spatial.backbone.state_dict(), cfg)


def _weights_file(run_dir: str | Path) -> Path:
    weights = Path(run_dir) / MODEL_FILE
    if not weights.is_file():
        raise SfaError(f"{run_dir} has no {MODEL_FILE}")
    return weights


def load_spatial(run_dir: str | Path) -> tuple[SpatialTransformer, SpatialConfig]:
    """Only the spatial transformer of a run directory (Stage 1 or assembled), weights loaded.

    The returned config has mean/std resolved. The temporal part is never built.
    """
    cfg = read_model_config(run_dir).spatial
    if cfg.mean is None or cfg.std is None:
        raise SfaError(f"{run_dir}: the model config has no resolved mean/std")
    with safe_open(str(_weights_file(run_dir)), framework="pt") as f:
        state = {k.removeprefix("spatial."): f.get_tensor(k) for k in f.keys() if k.startswith("spatial.")}
    if not state:
        raise SfaError(f"{run_dir} holds no spatial weights (a Stage-2 run?); give the Stage-1 or assembled run")
    spatial = SpatialTransformer(cfg)
    own = spatial.state_dict()
    missing = [k for k in own if k not in state]
    wrong = [k for k in state if k not in own or state[k].shape != own[k].shape]
    if missing or wrong:
        raise SfaError(f"{run_dir}: spatial weights do not fit {cfg.backbone} at {cfg.image_size} px "
                       f"(missing {missing[:4]}, unexpected or mis-shaped {wrong[:4]})")
    spatial.load_state_dict(state)
    return spatial, cfg


def read_model_config(run_dir: str | Path) -> ViViTConfig:
    """The ViViTConfig stored under 'model' in a run directory's config.json."""
    data = read_run_config(run_dir)
    if "model" not in data:
        raise SfaError(f"{Path(run_dir) / CONFIG_FILE} has no 'model' section")
    return config_from_dict(ViViTConfig, data["model"], where=f"{Path(run_dir) / CONFIG_FILE}: model")


def load_model(run_dir: str | Path, *, num_frames: Optional[int] = None, with_spatial: bool = True) -> ViViTFE:
    """Rebuild the model of a run directory from its config and weights.

    `num_frames` rebuilds the temporal part for another clip length (position embeddings are
    interpolated).
    """
    cfg = read_model_config(run_dir)
    if num_frames is not None:
        cfg = dataclasses.replace(cfg, temporal=dataclasses.replace(cfg.temporal, num_frames=num_frames))
    weights = _weights_file(run_dir)
    model = ViViTFE(cfg, with_spatial=with_spatial)
    load_vivit_state_dict(model, load_file(str(weights)))
    return model
