"""Where a cache's spatial weights came from, and how to get them back for an assembled model."""

from __future__ import annotations

from typing import Any

import torch

from sfa_cache.errors import SfaError
from sfa_cache.models.config import SpatialConfig
from sfa_cache.models.fingerprint import spatial_fingerprint
from sfa_cache.models.spatial import SpatialTransformer, backbone_norm, load_backbone_weights
from sfa_cache.models.vivit import load_spatial


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
        cfg = SpatialConfig(backbone=source["backbone"], image_size=int(source["image_size"]))
        torch.manual_seed(int(source.get("seed", 0)))  # a random-init backbone is rebuilt bit for bit
        spatial = SpatialTransformer(cfg)
        if source.get("weights") not in (None, "random"):
            load_backbone_weights(spatial.backbone, source["weights"])
        mean, std = backbone_norm(spatial.backbone)
        cfg = SpatialConfig(backbone=cfg.backbone, image_size=cfg.image_size, mean=mean, std=std)
        where = f"backbone {source['backbone']} ({source.get('weights')})"
    found = spatial_fingerprint(spatial.backbone.state_dict(), cfg)
    if found != fingerprint:
        raise SfaError(f"the spatial weights of {where} (fingerprint {found}) are not those the cache was "
                       f"extracted with ({fingerprint}); they changed since extraction")
    return spatial, cfg
