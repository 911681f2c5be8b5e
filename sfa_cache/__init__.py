"""sfa-cache: train factorised-encoder video transformers (ViViT-FE) with the SFA recipe.

Stage 1 fine-tunes the whole model on few frames; the frozen spatial ViT then runs once per clip
into a Zarr feature cache; Stage 2 trains the adapter and temporal transformer on cached tokens.
"""

import importlib.util
import sys
from pathlib import Path

from sfa_cache.errors import SfaError, VideoReadError

__version__ = "0.1.0"
__all__ = ["SfaError", "VideoReadError", "__version__"]


def _map_checkout_subpackages() -> None:
    """In a source checkout, `pipelines/` and `cli/` sit beside `sfa_cache/`; an install maps them
    to `sfa_cache.pipelines` and `sfa_cache.cli` (setup.py). Python run from the checkout's root
    (`python -m pytest`, `python -m benchmarks.gpu_suite`) imports `./sfa_cache` before any
    installed copy, and that folder has neither: so they are mapped here as well, the same way.
    An installed package has both folders inside it and skips this."""
    here = Path(__file__).resolve().parent
    root = here.parent
    if (here / "pipelines").is_dir() or not (root / "setup.py").is_file():
        return
    for name in ("pipelines", "cli"):
        full, folder = f"{__name__}.{name}", root / name
        if full in sys.modules or not (folder / "__init__.py").is_file():
            continue
        spec = importlib.util.spec_from_file_location(full, folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[full] = module
        spec.loader.exec_module(module)


_map_checkout_subpackages()
