"""`sfa-cache plan`'s config: the frame counts that fit a memory budget."""

from __future__ import annotations

from dataclasses import dataclass

from sfa_cache.errors import SfaError
from sfa_cache.runtime import validate_amp
from sfa_cache.train.optim import OPTIMIZERS


@dataclass
class PlanConfig:
    """Everything `sfa-cache plan` takes."""

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
