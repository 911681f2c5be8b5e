"""`sfa-cache demo`'s settings: one strict dataclass (docs/demo.md gives the measurements behind
each default)."""

from __future__ import annotations

from dataclasses import dataclass

from sfa_cache.errors import SfaError
from sfa_cache.runtime import validate_amp

# The stand-in image checkpoint's pre-training task (train/image_pretrain.py): `generic` stands for
# ImageNet (what an object is), `aligned` is trained on the video classes' own per-frame facts.
CHECKPOINTS = ("generic", "aligned")


@dataclass
class DemoConfig:
    """`sfa-cache demo`: the paper's Table 1 in miniature on synthetic data."""

    workdir: str = "sfa-demo"
    checkpoint: str = "generic"  # the premise: CHECKPOINTS
    seeds: int = 1  # runs everything (data, image checkpoint, training) for seeds seed, seed+1, ...
    frames: int = 32  # F: extraction, the Stage-2 rows and the baseline
    frames_sweep: tuple[int, ...] = (8, 16)  # SFA also at these frame counts, from the same F-frame cache
    stage1_frames: int = 8
    # Every row trains until neither validation top-1 nor loss has improved for `patience` epochs, or its cap (the
    # cosine schedule spans the cap); its best epoch by validation top-1 is the one kept and tested.
    patience: int = 10
    stage1_max_epochs: int = 48
    baseline_max_epochs: int = 64
    stage2_max_epochs: int = 80  # a Stage-2 row on its cache (an epoch costs under a second)
    # A row whose kept model is never right on some class of the validation videos has stalled: it is
    # trained again from another seed, at most this many times, then reported as stalled (demo.py).
    restarts: int = 1
    backbone: str = "vit_tiny_patch16_224"
    image_size: int = 32
    pretrain_steps: int = 0  # steps of the image pre-training; 0: the checkpoint's own (generic 2000, aligned 800)
    batch_size: int = 16
    lr: float = 5e-4  # Stage 1: AdamW, the temporal transformer's (the baseline's: the same model, the same lr)
    spatial_lr_scale: float = 0.05  # the spatial ViT trains at lr x this, in Stage 1 and the baseline
    baseline_lr: float = 5e-4  # the baseline's own
    temporal_depth: int = 2  # every temporal transformer
    temporal_pos_std: float = 1.0  # at ViT's 0.02 the frame order (left vs right) is not learnt
    color_jitter_prob: float = 0.0  # brightness jitter blurs white (flash) vs coloured
    stage2_lr: float = 1e-3
    stage2_batch_size: int = 16
    train_per_class: int = 40
    val_per_class: int = 24  # selection: patience and the best epoch
    test_per_class: int = 32  # scoring: every reported top-1 (one clip is 0.45 points)
    # Mixed precision for every phase alike. auto: bf16 where the hardware runs it natively (CUDA, or
    # a CPU with AVX512-BF16/AMX), else none.
    amp: str = "auto"
    device: str = "auto"
    num_workers: int = 2
    seed: int = 0

    def validate(self) -> None:
        if self.checkpoint not in CHECKPOINTS:
            raise SfaError(f"--checkpoint must be one of {', '.join(CHECKPOINTS)}, got {self.checkpoint!r}")
        validate_amp(self.amp, allow_auto=True)
        if self.seeds < 1:
            raise SfaError(f"--seeds must be >= 1, got {self.seeds}")
        if self.frames <= self.stage1_frames:
            raise SfaError(f"--frames ({self.frames}) must be more than Stage 1's {self.stage1_frames}")
        if any(not 1 <= f < self.frames for f in self.frames_sweep):
            raise SfaError(f"the frame sweep {self.frames_sweep} must lie below --frames {self.frames}")
        if min(self.patience, self.stage1_max_epochs, self.baseline_max_epochs, self.stage2_max_epochs) < 1:
            raise SfaError("caps and patience must be >= 1")
        if min(self.train_per_class, self.val_per_class, self.test_per_class) < 1:
            raise SfaError("the demo needs train, val and test clips (each per class >= 1)")
        if self.restarts < 0:
            raise SfaError(f"--restarts must be >= 0, got {self.restarts}")
        if self.pretrain_steps < 0:
            raise SfaError(f"--pretrain-steps must be >= 0, got {self.pretrain_steps}")

    @property
    def seed_list(self) -> list[int]:
        return [self.seed + i for i in range(self.seeds)]

    @property
    def image_steps(self) -> int:
        """The image pre-training's steps: generic needs more to learn its own task (measured)."""
        return self.pretrain_steps or (2000 if self.checkpoint == "generic" else 800)
