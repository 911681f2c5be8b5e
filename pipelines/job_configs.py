"""What each command takes: one strict config dataclass per job, and how options become one.

Every field is a key of the run's own `config.json` ('train' section): a saved section passed
back (nested `optim` included) resolves to the same config. Unknown keys are one-line errors.

This module imports nothing heavy (no torch, timm, zarr ...): the command line builds every
`--help` from these dataclasses, and `sfa-cache --help` must appear at once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from sfa_cache.cache.feeds.placement import canonical_request, check_request
from sfa_cache.cache.format.codecs import COMPRESSORS
from sfa_cache.cache.format.layout import DTYPES, VIEW_MODES
from sfa_cache.configs import config_from_dict
from sfa_cache.errors import SfaError
from sfa_cache.models.config import ADAPTER_KINDS
from sfa_cache.runtime import validate_amp
from sfa_cache.train.optim import OPTIMIZERS, OptimConfig
from sfa_cache.video.reader import check_backend

OPTIM_KEYS = frozenset(f.name for f in dataclasses.fields(OptimConfig))


def _flatten_optim(values: dict[str, Any], where: str) -> dict[str, Any]:
    """A nested `optim` section (a config.json) spread into flat keys; flat keys (flags) win over it."""
    values = dict(values)
    nested = values.pop("optim", None) or {}
    if not isinstance(nested, dict):
        raise SfaError(f"{where}: optim must be a mapping, got {type(nested).__name__}")
    unknown = sorted(set(nested) - OPTIM_KEYS)
    if unknown:
        raise SfaError(
            f"{where}: unknown key(s) optim.{', optim.'.join(unknown)}; known keys are {', '.join(sorted(OPTIM_KEYS))}"
        )
    return {**nested, **values}


def _check_randaugment(ops: int, magnitude: int) -> None:
    if ops < 0 or not 0 <= magnitude <= 30:
        raise SfaError(f"--randaugment-ops must be >= 0 and --randaugment-magnitude in 0-30 (torchvision's scale), "
                       f"got {ops} and {magnitude}")


def _nest_optim(values: dict[str, Any]) -> dict[str, Any]:
    """Flat keys -> the config's shape: optimiser keys go into `optim`."""
    optim = {k: v for k, v in values.items() if k in OPTIM_KEYS}
    return {**{k: v for k, v in values.items() if k not in OPTIM_KEYS}, "optim": optim}


# --- sfa-cache stage1 -----------------------------------------------------------------------------

# The paper's per-dataset recipe (supplementary Table 1). Learning rates are for a global batch
# of 128 and are scaled linearly to the global batch (batch_size * accum_steps * processes under
# torchrun) unless --lr is given.
PRESET_BATCH = 128
PRESETS: dict[str, dict[str, Any]] = {
    "k400": {"lr": 0.1, "epochs": 30, "color_jitter_prob": 0.8},
    "k600": {"lr": 0.1, "epochs": 30, "color_jitter_prob": 0.8},
    "mit": {"lr": 0.25, "epochs": 10, "color_jitter_prob": 0.8},
    "epic": {"lr": 0.5, "epochs": 50, "color_jitter_prob": 0.0, "randaugment_ops": 2, "randaugment_magnitude": 15,
             "drop_path": 0.2, "label_smoothing": 0.2, "mixup": 0.1},
    # Something-Something (and Something-Else) have left/right classes: a flip would swap them.
    "ssv2": {"lr": 0.5, "epochs": 35, "color_jitter_prob": 0.0, "flip_prob": 0.0, "randaugment_ops": 2,
             "randaugment_magnitude": 20, "drop_path": 0.3, "label_smoothing": 0.3, "mixup": 0.3},
    "selse": {"lr": 0.5, "epochs": 35, "color_jitter_prob": 0.0, "flip_prob": 0.0},
}
PRESET_COMMON = {"optimizer": "sgd", "momentum": 0.9, "warmup_epochs": 2.5}

# Settings that may change between a run and its resumption without changing its result.
STAGE1_RUNTIME_KEYS = frozenset(
    {
        "out", "device", "num_workers", "decode_timeout", "log_every", "stop_after", "compile", "channels_last",
        "allow_world_size_change", "log",
    }
)


@dataclass
class Stage1Config:
    """Everything `sfa-cache stage1` takes; saved under 'train' in the run's config.json."""

    train_manifest: str  # a CSV, WebDataset shards ('shards/train-{000000..000099}.tar') or an HDF5 frame file
    out: str
    val_manifest: Optional[str] = None
    root: Optional[str] = None  # folder a CSV's video paths are relative to (default: each CSV's folder)
    classes: Optional[str] = None  # class list file; default: inferred from the train manifest
    train_split: str = "train"  # rows kept when a manifest has a 'split' column
    val_split: str = "val"
    backbone: str = "vit_base_patch16_224"
    image_size: int = 224
    pretrained: bool = False  # timm hub weights for the backbone's tag (needs internet)
    backbone_weights: Optional[str] = None  # local image checkpoint (.safetensors/.pth/.bin)
    frames: int = 8
    frame_chunk: int = 64
    temporal_depth: Optional[int] = None  # None: 4, or the preset's depth
    temporal_preset: Optional[str] = None  # B | L | H | g
    temporal_pos_std: float = 0.02  # init std of the temporal position embeddings
    drop_path: float = 0.0
    color_jitter_prob: float = 0.8
    flip_prob: float = 0.5  # 0 for datasets with left/right classes (SSv2, the synthetic move_left/right)
    randaugment_ops: int = 0  # RandAugment operations per clip (the epic / ssv2 presets: 2); 0 = off
    randaugment_magnitude: int = 0  # on torchvision's 0-30 scale (epic: 15, ssv2: 20)
    optim: OptimConfig = field(default_factory=OptimConfig)
    backend: str = "decord"
    device: str = "auto"
    channels_last: bool = False
    compile: bool = False
    num_workers: int = 4
    decode_timeout: float = 60.0  # seconds per clip before its decoder is killed and the clip skipped; 0: none
    seed: int = 0
    log_every: int = 50  # optimiser steps between metrics.jsonl train records; 0 = per epoch only
    log: str = "auto"  # trackers besides metrics.jsonl: auto (TensorBoard if installed + CSV) | none | a list
    stop_after: Optional[int] = None  # stop after this many epochs in this invocation
    allow_world_size_change: bool = False  # resume with another number of torchrun processes
    preset: Optional[str] = None

    def validate(self) -> None:
        if self.frames < 1:
            raise SfaError(f"--frames must be >= 1, got {self.frames}")
        _check_randaugment(self.randaugment_ops, self.randaugment_magnitude)
        check_backend(self.backend)
        if self.pretrained and self.backbone_weights:
            raise SfaError("give either --pretrained or --backbone-weights, not both")
        if self.stop_after is not None and self.stop_after < 1:
            raise SfaError("--stop-after must be >= 1")
        if self.decode_timeout < 0:
            raise SfaError("--decode-timeout must be >= 0")
        if self.optim.patience and not self.val_manifest:
            raise SfaError("--patience stops on validation top-1: give --val-manifest")
        self.optim.validate()


def resolve_stage1_config(values: dict[str, Any]) -> Stage1Config:
    """Defaults < preset < `values`: option values (flat; optimiser keys go into `optim`) or a
    saved config.json 'train' section (nested `optim`), or both (flat keys win)."""
    where = "stage1 options"
    values = _flatten_optim(values, where)
    preset = values.get("preset")
    merged: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise SfaError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        merged.update(PRESET_COMMON)
        merged.update(PRESETS[preset])
        if "lr" not in values:
            from sfa_cache.distributed import dist_info  # torchrun's process count, from the environment

            batch = (
                values.get("batch_size", OptimConfig.batch_size)
                * values.get("accum_steps", OptimConfig.accum_steps)
                * dist_info().world_size
            )
            merged["lr"] = merged["lr"] * batch / PRESET_BATCH
    merged.update(values)
    return config_from_dict(Stage1Config, _nest_optim(merged), where=where)


# --- sfa-cache train-temporal ---------------------------------------------------------------------

TEMPORAL_INITS = ("stage1", "scratch")
# Settings that may change between a run and its resumption without changing its result.
TRAIN_TEMPORAL_RUNTIME_KEYS = frozenset(
    {"out", "device", "num_workers", "log_every", "stop_after", "assemble", "allow_world_size_change",
     "cache_in_memory", "log"}  # where the features live changes speed, never the batches
)


@dataclass
class TrainTemporalConfig:
    """Everything `sfa-cache train-temporal` takes; saved under 'train' in the run's config.json."""

    train_cache: str
    out: str
    val_cache: Optional[str] = None
    stage1: Optional[str] = None  # the Stage-1 run: temporal initialisation and spatial weights
    temporal_init: str = "stage1"  # stage1 | scratch (the ablation)
    frames: int = 32  # a uniform subset of the cached frames per clip
    adapter: str = "mlp"  # none | mlp (the paper's) | residual
    adapter_hidden: Optional[int] = None
    temporal_depth: Optional[int] = None  # scratch without a Stage-1 run: default 4
    temporal_preset: Optional[str] = None  # scratch without a Stage-1 run: B | L | H | g
    temporal_pos_std: Optional[float] = None  # scratch without a Stage-1 run: position-table init std (default 0.02)
    drop_path: float = 0.0
    optim: OptimConfig = field(default_factory=OptimConfig)
    device: str = "auto"
    num_workers: int = 2  # streaming: shard-reading worker processes
    cache_in_memory: str = "auto"  # auto | gpu | ram | stream (`off` read as stream): cache/feeds/placement.py
    shuffle_window: int = 16  # shards shuffled together each epoch (0: all, a full shuffle): cache/feeds/epochs.py
    seed: int = 0
    log_every: int = 50
    log: str = "auto"  # trackers besides metrics.jsonl (train/tracking.py)
    stop_after: Optional[int] = None
    allow_world_size_change: bool = False  # resume with another number of torchrun processes
    assemble: bool = True  # write OUT/assembled when training is complete

    def __post_init__(self) -> None:
        # One word from here on: `off` (the flag's former word, in older commands, configs and
        # grids) is `stream`. An unknown word is left for `validate` to report.
        self.cache_in_memory = canonical_request(self.cache_in_memory)

    def validate(self) -> None:
        if self.temporal_init not in TEMPORAL_INITS:
            raise SfaError(f"--temporal-init must be one of {', '.join(TEMPORAL_INITS)}, got {self.temporal_init!r}")
        if self.temporal_init == "stage1" and self.stage1 is None:
            raise SfaError("--temporal-init stage1 needs --stage1 RUN (or use --temporal-init scratch)")
        if self.adapter not in ADAPTER_KINDS:
            raise SfaError(f"--adapter must be one of {', '.join(ADAPTER_KINDS)}, got {self.adapter!r}")
        if self.frames < 1:
            raise SfaError(f"--frames must be >= 1, got {self.frames}")
        if self.stage1 is not None and (
            self.temporal_depth or self.temporal_preset or self.temporal_pos_std is not None
        ):
            raise SfaError("the temporal architecture comes from --stage1; --temporal-depth / --temporal-preset / "
                           "--temporal-pos-std are for training from scratch without a Stage-1 run")
        if self.stop_after is not None and self.stop_after < 1:
            raise SfaError("--stop-after must be >= 1")
        check_request(self.cache_in_memory)
        if self.shuffle_window < 0:
            raise SfaError(f"--shuffle-window must be >= 0 shards (0: all), got {self.shuffle_window}")
        if self.optim.patience and not self.val_cache:
            raise SfaError("--patience stops on validation top-1: give --val-cache")
        self.optim.validate()


def resolve_train_temporal_config(values: dict[str, Any]) -> TrainTemporalConfig:
    """Option values (flat) or a saved config.json 'train' section (nested `optim`) -> a checked config."""
    where = "train-temporal options"
    return config_from_dict(TrainTemporalConfig, _nest_optim(_flatten_optim(values, where)), where=where)


# --- sfa-cache extract ----------------------------------------------------------------------------

@dataclass
class ExtractConfig:
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
    backend: str = "decord"
    # How it runs (no effect on the values).
    batch_frames: int = 256
    device: str = "auto"
    num_workers: int = 4
    decode_timeout: float = 60.0  # seconds per clip; 0 disables
    strict: bool = False
    progress: bool = True

    def validate(self) -> None:
        _check_randaugment(self.randaugment_ops, self.randaugment_magnitude)
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
            (self.decode_timeout >= 0, "--decode-timeout must be >= 0"),
            (self.seed >= 0, f"--seed must be >= 0, got {self.seed}"),
        ]
        for ok, message in checks:
            if not ok:
                raise SfaError(message)
        check_backend(self.backend)
        validate_amp(self.amp, allow_auto=True)
        if self.mode == "eval" and self.views != 1:
            raise SfaError("--views is for --mode train; evaluation caches take --eval-crops 1 or 3")


# --- sfa-cache evaluate ---------------------------------------------------------------------------

@dataclass
class EvaluateConfig:
    run: str
    manifest: str
    root: Optional[str] = None
    split: Optional[str] = None
    clips: int = 1
    crops: int = 1
    frames: Optional[int] = None  # default: the model's own
    batch_size: int = 4
    num_workers: int = 2
    decode_timeout: float = 60.0  # seconds per video (all its views) before its decoder is killed; 0: none
    backend: str = "decord"
    device: str = "auto"
    amp: str = "none"
    out: Optional[str] = None  # default: RUN/eval/<manifest>-<clips>x<crops>

    def validate(self) -> None:
        if self.clips < 1:
            raise SfaError(f"--clips must be >= 1, got {self.clips}")
        if self.crops not in (1, 3):
            raise SfaError(f"--crops must be 1 or 3, got {self.crops}")
        if self.frames is not None and self.frames < 1:
            raise SfaError(f"--frames must be >= 1, got {self.frames}")
        check_backend(self.backend)
        if self.decode_timeout < 0:
            raise SfaError("--decode-timeout must be >= 0")
        validate_amp(self.amp)


# --- sfa-cache plan -------------------------------------------------------------------------------

@dataclass
class PlanConfig:
    budget: str = "12GiB"
    backbones: tuple[str, ...] = ("vit_base_patch16_224", "vit_large_patch16_224")
    image_size: int = 224
    amp: str = "bf16"  # what extraction uses on CUDA with --amp auto, and the usual choice for training on a GPU
    optimizer: str = "sgd"
    temporal_depth: int = 4
    estimate: bool = False  # estimate even when a GPU is there
    device: str = "auto"
    step: int = 8  # frame counts tried are multiples of this
    cap: int = 4096  # the largest frame count tried

    def validate(self) -> None:
        validate_amp(self.amp)
        if self.optimizer not in OPTIMIZERS:
            raise SfaError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not self.backbones:
            raise SfaError("name at least one --backbone")
