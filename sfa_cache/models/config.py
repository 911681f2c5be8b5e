"""Model configuration: one dataclass per model part, serialised next to every checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

from sfa_cache.errors import SfaError

ADAPTER_KINDS = ("none", "mlp", "residual")


@dataclass
class SpatialConfig:
    """The per-frame image transformer: any timm ViT, run on every frame."""

    backbone: str = "vit_base_patch16_224"  # timm model name, optionally with a pretrained tag
    image_size: int = 224  # square input side in pixels; must be a multiple of the patch size
    frame_chunk: int = 64  # frames per spatial forward, bounding activation memory on long clips
    drop_path: float = 0.0  # stochastic depth rate inside the spatial ViT
    # Normalisation; None = take them from the backbone's timm pretrained cfg at build time.
    mean: Optional[tuple[float, float, float]] = None
    std: Optional[tuple[float, float, float]] = None


@dataclass
class SpatialSource:
    """Where spatial weights came from, so that they can be rebuilt and checked: a run directory
    (Stage 1 or assembled), or a bare timm backbone with local weights, hub weights or a seed."""

    OMIT_NONE: ClassVar[tuple[str, ...]] = ("run", "kind", "backbone", "image_size", "seed", "weights")

    run: Optional[str] = None  # an absolute run directory ...
    kind: Optional[str] = None  # ... and its kind
    backbone: Optional[str] = None  # or a timm model name ...
    image_size: Optional[int] = None
    seed: Optional[int] = None  # ... whose random weights came from this seed
    weights: Optional[str] = None  # ... or from this local file, or "timm-hub", or "random"

    def __post_init__(self) -> None:
        if (self.run is None) == (self.backbone is None):
            raise SfaError("a spatial source names either a run or a backbone")


@dataclass
class AdapterConfig:
    """The module between the (frozen) spatial and the temporal transformer (paper Eq. 2)."""

    kind: str = "none"  # none | mlp (Linear-GELU-Linear) | residual (x + MLP(x), zero-init)
    hidden_dim: Optional[int] = None  # None = the embed dim

    def __post_init__(self) -> None:
        if self.kind not in ADAPTER_KINDS:
            raise SfaError(f"adapter kind must be one of {', '.join(ADAPTER_KINDS)}, got {self.kind!r}")


@dataclass
class TemporalConfig:
    """The temporal transformer over per-frame CLS tokens (one token per frame)."""

    num_frames: int = 8  # length of the learned position table (plus one CLS slot)
    depth: int = 4  # ViViT-FE's temporal encoder depth
    num_heads: Optional[int] = None  # None = embed_dim // 64
    mlp_dim: Optional[int] = None  # None = 4 * embed_dim
    drop_path: float = 0.0
    dropout: float = 0.0  # before the classification head
    # Init std of the learned position table. ViT's 0.02 is tiny next to frame tokens with unit-scale
    # elements, so order (the direction of motion) reaches the attention only after long training.
    pos_embed_std: float = 0.02


@dataclass
class ViViTConfig:
    """The whole factorised encoder: spatial -> adapter -> temporal -> head."""

    num_classes: int
    spatial: SpatialConfig = field(default_factory=SpatialConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    embed_dim: Optional[int] = None  # filled in from the backbone when the model is built


# The paper's model sizes (Sec. 4, "heads 12/16/16/16, layers 12/24/32/40, hidden
# 768/1024/1280/1408, MLP 3072/4096/5120/6144"), applied to the temporal side. The width must equal
# the spatial backbone's embed dim, since the temporal input is the spatial CLS token.
TEMPORAL_PRESETS: dict[str, dict[str, int]] = {
    "B": {"width": 768, "depth": 12, "num_heads": 12, "mlp_dim": 3072},
    "L": {"width": 1024, "depth": 24, "num_heads": 16, "mlp_dim": 4096},
    "H": {"width": 1280, "depth": 32, "num_heads": 16, "mlp_dim": 5120},
    "g": {"width": 1408, "depth": 40, "num_heads": 16, "mlp_dim": 6144},
}


def temporal_preset(name: str, embed_dim: int, num_frames: int, depth: Optional[int] = None) -> TemporalConfig:
    """TemporalConfig for a paper preset; `depth` overrides the preset's layer count."""
    if name not in TEMPORAL_PRESETS:
        raise SfaError(f"unknown temporal preset {name!r}; choose one of {', '.join(TEMPORAL_PRESETS)}")
    p = TEMPORAL_PRESETS[name]
    if p["width"] != embed_dim:
        raise SfaError(
            f"temporal preset {name} has width {p['width']} but the spatial backbone gives "
            f"{embed_dim}-d tokens; pick the preset that matches the backbone"
        )
    return TemporalConfig(
        num_frames=num_frames,
        depth=depth if depth is not None else p["depth"],
        num_heads=p["num_heads"],
        mlp_dim=p["mlp_dim"],
    )
