"""ViViT-FE model parts: spatial ViT per frame, adapter, temporal transformer, composition."""

from sfa_cache.models.config import AdapterConfig, SpatialConfig, TemporalConfig, ViViTConfig
from sfa_cache.models.vivit import ViViTFE, load_model

__all__ = ["AdapterConfig", "SpatialConfig", "TemporalConfig", "ViViTConfig", "ViViTFE", "load_model"]
