"""sfa-cache: train factorised-encoder video transformers (ViViT-FE) with the SFA recipe.

Stage 1 fine-tunes the whole model on few frames; the frozen spatial ViT then runs once per clip
into a Zarr feature cache; Stage 2 trains the adapter and temporal transformer on cached tokens.
"""

from sfa_cache.errors import SfaError, VideoReadError

__version__ = "0.1.0"
__all__ = ["SfaError", "VideoReadError", "__version__"]
