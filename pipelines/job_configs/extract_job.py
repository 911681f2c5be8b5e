"""`sfa-cache extract`'s config: which spatial model, what is cached, how it runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from sfa_cache.cache.format.codecs import COMPRESSORS
from sfa_cache.cache.format.layout import DTYPES, VIEW_MODES
from sfa_cache.errors import SfaError
from sfa_cache.pipelines.job_configs.common import DecodeOptions, RuntimeOptions, check_randaugment
from sfa_cache.runtime import validate_amp


@dataclass
class ExtractConfig(RuntimeOptions, DecodeOptions):
    """Everything `sfa-cache extract` takes."""

    manifest: str  # a CSV, WebDataset shards ('shards/train-{000000..000099}.tar') or an HDF5 frame file
    cache_root: str
    # The spatial model: a Stage-1 (or assembled) run directory, or a bare timm backbone.
    model: Optional[str] = None
    backbone: Optional[str] = None
    backbone_weights: Optional[str] = None
    pretrained: bool = False
    image_size: int = 224  # for --backbone only; a --model run brings its own
    root: Optional[str] = None
    classes: Optional[str] = None  # default: the run's classes, else inferred from the manifest
    split: Optional[str] = None
    # What is cached.
    frames: int = 128
    mode: str = "train"  # train: augmented views; eval: centre view or 3 crops
    views: int = 1
    eval_crops: int = 1
    color_jitter_prob: float = 0.8
    flip_prob: float = 0.5  # 0 for datasets with left/right classes
    randaugment_ops: int = 0  # RandAugment of the training views (as stage1's)
    randaugment_magnitude: int = 0
    seed: int = 0
    dtype: str = "float16"
    compressor: str = "blosc"  # lz4 + byte shuffle: smallest and fastest to read (docs/benchmarks.md)
    clips_per_shard: int = 256
    amp: str = "auto"  # auto: bf16 on a GPU that runs it natively, else none (runtime.resolve_amp)
    # How it runs (no effect on the values; device, backend and the rest: the option groups).
    batch_frames: int = 256
    num_workers: int = field(default=4, kw_only=True)  # RuntimeOptions' field, more workers by default: decoding
    strict: bool = False
    progress: bool = True

    def validate(self) -> None:
        check_randaugment(self.randaugment_ops, self.randaugment_magnitude)
        if (self.model is None) == (self.backbone is None):
            raise SfaError(
                "give exactly one of --model (a Stage-1 or assembled run directory) or --backbone (a timm model name)"
            )
        if self.model is not None and (self.backbone_weights or self.pretrained):
            raise SfaError("--backbone-weights / --pretrained go with --backbone, not --model")
        checks = [
            (self.frames >= 1, f"--frames must be >= 1, got {self.frames}"),
            (self.mode in VIEW_MODES, f"--mode must be one of {', '.join(VIEW_MODES)}, got {self.mode!r}"),
            (self.views >= 1, f"--views must be >= 1, got {self.views}"),
            (self.eval_crops in (1, 3), f"--eval-crops must be 1 or 3, got {self.eval_crops}"),
            (self.dtype in DTYPES, f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}"),
            (self.compressor in COMPRESSORS, f"--compressor must be one of {', '.join(COMPRESSORS)}"),
            (self.clips_per_shard >= 1, "--clips-per-shard must be >= 1"),
            (self.batch_frames >= 1, "--batch-frames must be >= 1"),
            (self.seed >= 0, f"--seed must be >= 0, got {self.seed}"),
        ]
        for ok, message in checks:
            if not ok:
                raise SfaError(message)
        self.validate_runtime()
        self.validate_decoding()
        validate_amp(self.amp, allow_auto=True)
        if self.mode == "eval" and self.views != 1:
            raise SfaError("--views is for --mode train; evaluation caches take --eval-crops 1 or 3")
