"""`sfa-cache train-temporal`'s config: Stage 2 on cached features."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from sfa_cache.cache.feeds.placement import canonical_request, check_request
from sfa_cache.errors import SfaError
from sfa_cache.models.config import ADAPTER_KINDS
from sfa_cache.pipelines.job_configs.common import RuntimeOptions, flatten_optim, nest_optim
from sfa_cache.settings_io import config_from_dict
from sfa_cache.train.optim import OptimConfig

TEMPORAL_INITS = ("stage1", "scratch")
# Settings that may change between a run and its resumption without changing its result.
TRAIN_TEMPORAL_RUNTIME_KEYS = frozenset(
    {"out", "device", "num_workers", "log_every", "stop_after", "assemble", "allow_world_size_change",
     "cache_in_memory", "log"}  # where the features live changes speed, never the batches
)


@dataclass
class TrainTemporalConfig(RuntimeOptions):
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
        self.validate_runtime()  # num_workers: shard-reading worker processes when streaming
        check_request(self.cache_in_memory)
        if self.shuffle_window < 0:
            raise SfaError(f"--shuffle-window must be >= 0 shards (0: all), got {self.shuffle_window}")
        if self.optim.patience and not self.val_cache:
            raise SfaError("--patience stops on validation top-1: give --val-cache")
        self.optim.validate()


def resolve_train_temporal_config(values: dict[str, Any]) -> TrainTemporalConfig:
    """Option values (flat) or a saved config.json 'train' section (nested `optim`) -> a checked config."""
    where = "train-temporal options"
    return config_from_dict(TrainTemporalConfig, nest_optim(flatten_optim(values, where)), where=where)
