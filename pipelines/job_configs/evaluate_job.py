"""`sfa-cache evaluate`'s config: a run's model on a manifest of raw videos, multi-view."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from sfa_cache.errors import SfaError
from sfa_cache.pipelines.job_configs.common import DecodeOptions, RuntimeOptions
from sfa_cache.runtime import validate_amp


@dataclass
class EvaluateConfig(RuntimeOptions, DecodeOptions):
    """Everything `sfa-cache evaluate` takes."""

    run: str
    manifest: str
    root: Optional[str] = None
    split: Optional[str] = None
    clips: int = 1
    crops: int = 1
    frames: Optional[int] = None  # default: the model's own
    batch_size: int = 4
    amp: str = "none"
    out: Optional[str] = None  # default: RUN/eval/<manifest>-<clips>x<crops>

    def validate(self) -> None:
        if self.clips < 1:
            raise SfaError(f"--clips must be >= 1, got {self.clips}")
        if self.crops not in (1, 3):
            raise SfaError(f"--crops must be 1 or 3, got {self.crops}")
        if self.frames is not None and self.frames < 1:
            raise SfaError(f"--frames must be >= 1, got {self.frames}")
        self.validate_runtime()
        self.validate_decoding()  # the timeout is per video here: all its views
        validate_amp(self.amp)
