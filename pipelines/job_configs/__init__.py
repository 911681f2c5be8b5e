"""What each command takes: one strict config dataclass per job, and how options become one.

Every field is a key of the run's own `config.json` ('train' section): a saved section passed
back (nested `optim` included) resolves to the same config. Unknown keys are one-line errors.
One module per command (`stage1_job.py`, `stage2_job.py`, `extract_job.py`, `evaluate_job.py`,
`plan_job.py`); what they share is `common.py` (the runtime and decoding option groups).

These modules import nothing heavy (no torch, timm, zarr ...): the command line builds every
`--help` from these dataclasses, and `sfa-cache --help` must appear at once.
"""

from sfa_cache.pipelines.job_configs.common import DecodeOptions, RuntimeOptions
from sfa_cache.pipelines.job_configs.evaluate_job import EvaluateConfig
from sfa_cache.pipelines.job_configs.extract_job import ExtractConfig
from sfa_cache.pipelines.job_configs.plan_job import PlanConfig
from sfa_cache.pipelines.job_configs.stage1_job import (
    PRESET_BATCH,
    PRESET_COMMON,
    PRESETS,
    STAGE1_RUNTIME_KEYS,
    Stage1Config,
    resolve_stage1_config,
)
from sfa_cache.pipelines.job_configs.stage2_job import (
    TEMPORAL_INITS,
    TRAIN_TEMPORAL_RUNTIME_KEYS,
    TrainTemporalConfig,
    resolve_train_temporal_config,
)

__all__ = [
    "DecodeOptions", "EvaluateConfig", "ExtractConfig", "PlanConfig", "PRESET_BATCH", "PRESET_COMMON", "PRESETS",
    "RuntimeOptions", "STAGE1_RUNTIME_KEYS", "Stage1Config", "TEMPORAL_INITS", "TRAIN_TEMPORAL_RUNTIME_KEYS",
    "TrainTemporalConfig", "resolve_stage1_config", "resolve_train_temporal_config",
]
