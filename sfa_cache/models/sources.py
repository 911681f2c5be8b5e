"""Where a cache's spatial weights came from, and how to get them back for an assembled model."""

from __future__ import annotations

from typing import Any, Optional

import torch

from sfa_cache.errors import SfaError
from sfa_cache.models.config import SpatialConfig
from sfa_cache.models.fingerprint import spatial_fingerprint
from sfa_cache.models.spatial import SpatialTransformer, backbone_norm, load_backbone_weights
from sfa_cache.models.vivit import load_spatial


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


def spatial_from_source(source: dict[str, Any], fingerprint: str) -> tuple[SpatialTransformer, SpatialConfig]:
    """Rebuild the spatial transformer a cache was extracted with, checked against its fingerprint.

    `source` is cache.json's "source": {"run": RUN_DIR} or {"backbone", "image_size", "weights",
    "seed"}. Weights that cannot be rebuilt offline (timm hub) or that changed since extraction
    are an error naming the fingerprints.
    """
    if "run" in source:
        spatial, cfg = load_spatial(source["run"])
        where = f"run {source['run']}"
    else:
        if source.get("weights") == "timm-hub":
            raise SfaError(f"the cache was extracted from {source['backbone']} hub weights; pass the Stage-1 "
                           "or a local weights run explicitly")
        weights = source.get("weights")
        spatial, cfg = build_backbone_spatial(source["backbone"], int(source["image_size"]), seed=int(source.get("seed", 0)),
                                              weights=None if weights in (None, "random") else weights)
        where = f"backbone {source['backbone']} ({source.get('weights')})"
    found = spatial_fingerprint(spatial.backbone.state_dict(), cfg)
    if found != fingerprint:
        raise SfaError(f"the spatial weights of {where} (fingerprint {found}) are not those the cache was "
                       f"extracted with ({fingerprint}); they changed since extraction")
    return spatial, cfg
