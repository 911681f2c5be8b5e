"""The spatial fingerprint: what a cached feature depends on, as one sha256.

It hashes the spatial weights (sorted names, dtype, shape, bytes), the timm architecture, and the
preprocessing that changes features (image size, mean/std, resize and crop policy). Two caches, or a cache and a
Stage-1 run, with the same fingerprint hold features of the same function of the pixels.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

import torch

from sfa_cache.models.config import SpatialConfig
from sfa_cache.video.transforms import RESIZE_RATIO

# Bump when the preprocessing code changes what a given (weights, settings) pair produces.
PREPROCESSING_VERSION = 1
# Bump when what the fingerprint covers changes: fingerprints stored under an older version's
# key are then ignored and recomputed (2: the architecture joined the hash).
FINGERPRINT_VERSION = 2


def preprocessing(cfg: SpatialConfig) -> dict[str, Any]:
    """The feature-changing preprocessing of a spatial config, as recorded in caches."""
    if cfg.mean is None or cfg.std is None:
        raise ValueError("the spatial config's mean/std must be resolved before fingerprinting")
    return {
        "version": PREPROCESSING_VERSION,
        "fingerprint_version": FINGERPRINT_VERSION,
        # Same weights in two timm variants (e.g. GELU vs quick-GELU CLIP) compute different
        # features: the architecture is part of the identity. The pretrained tag is not.
        "architecture": cfg.backbone.split(".")[0],
        "image_size": cfg.image_size,
        "mean": [float(v) for v in cfg.mean],
        "std": [float(v) for v in cfg.std],
        "resize": f"short side to image_size*{RESIZE_RATIO:.6f}, bilinear, antialiased when shrinking",
        "crop": "eval: centre (or 3 along the long side); train views: scale jitter + random crop",
    }


def spatial_fingerprint(backbone_state: Mapping[str, torch.Tensor], cfg: SpatialConfig) -> str:
    """'sha256:<hex>' of a backbone state dict (keys as in the timm model) and its preprocessing."""
    h = hashlib.sha256()
    for name in sorted(backbone_state):
        t = backbone_state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(json.dumps(preprocessing(cfg), sort_keys=True).encode())
    return "sha256:" + h.hexdigest()
