"""ViViT-FE model parts: spatial ViT per frame, adapter, temporal transformer, composition.

Import from the modules themselves (`sfa_cache.models.vivit`, `.config` ...): this package file
stays empty so that reading a model config does not load torch and timm.
"""
