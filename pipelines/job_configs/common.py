"""What every command's config shares: the option groups (how a job runs, how it decodes) and
the `optim` section's flat <-> nested forms.

The groups are dataclasses whose fields are keyword-only, composed into each command's config
by inheritance, so a run's config.json keeps its flat keys (`device`, `backend`, ...) and every
record written before the groups existed still loads; each group is validated once, here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sfa_cache.errors import SfaError
from sfa_cache.train.optim import OptimConfig
from sfa_cache.video.reader import check_backend


@dataclass(kw_only=True)
class RuntimeOptions:
    """Where and with how many worker processes a job runs: never what it computes."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_workers: int = 2  # data-loading worker processes

    def validate_runtime(self) -> None:
        if self.num_workers < 0:
            raise SfaError(f"--num-workers must be >= 0, got {self.num_workers}")


@dataclass(kw_only=True)
class DecodeOptions:
    """How videos are decoded: the backend, and how long one clip may take before it is skipped."""

    backend: str = "decord"  # decord | pyav | torchcodec
    decode_timeout: float = 60.0  # seconds per clip before its decoder is killed and the clip skipped; 0: none

    def validate_decoding(self) -> None:
        check_backend(self.backend)
        if self.decode_timeout < 0:
            raise SfaError("--decode-timeout must be >= 0")


OPTIM_KEYS = frozenset(f.name for f in dataclasses.fields(OptimConfig))


def flatten_optim(values: dict[str, Any], where: str) -> dict[str, Any]:
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


def check_randaugment(ops: int, magnitude: int) -> None:
    if ops < 0 or not 0 <= magnitude <= 30:
        raise SfaError(f"--randaugment-ops must be >= 0 and --randaugment-magnitude in 0-30 (torchvision's scale), "
                       f"got {ops} and {magnitude}")


def nest_optim(values: dict[str, Any]) -> dict[str, Any]:
    """Flat keys -> the config's shape: optimiser keys go into `optim`."""
    optim = {k: v for k, v in values.items() if k in OPTIM_KEYS}
    return {**{k: v for k, v in values.items() if k not in OPTIM_KEYS}, "optim": optim}
