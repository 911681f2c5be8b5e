"""The demo's rows: what each freezes and initialises, what it trains on, what it pays for."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sfa_cache.pipelines.demo_config import DemoConfig


@dataclass(frozen=True)
class Row:
    """One row of the comparison: what it freezes and initialises, how it trains, what it pays for."""

    key: str  # its run folder and phase name
    label: str
    paper_row: Optional[str]  # "I", "III", "V", "baseline" (the paper's Table 1), or None
    frames: int
    paid: tuple[str, ...] = ()  # earlier phases whose training seconds it pays for
    cache: Optional[str] = None  # a Stage-2 row: "stage1" or "image" features
    adapter: str = "mlp"
    temporal_init: str = "scratch"  # a Stage-2 row: "stage1" or "scratch"

    @property
    def model_dir(self) -> str:
        """The run evaluated on raw video (a Stage-2 row's assembled end-to-end model)."""
        return f"{self.key}/assembled" if self.cache else self.key


def demo_rows(cfg: DemoConfig) -> list[Row]:
    """The rows, in the order of the report: the paper's (I, III, V, baseline) and ours."""
    F, on_s1 = cfg.frames, ("stage1", "extract-stage1")
    rows = [
        Row("baseline", f"baseline: whole ViViT-FE trained end to end at {F} frames", "baseline", F),
        Row("stage1", f"Stage 1 alone: whole ViViT-FE at {cfg.stage1_frames} frames", None, cfg.stage1_frames),
        Row("I", "I: image-checkpoint spatial frozen, no adapter, temporal from scratch", "I", F,
            ("extract-image",), "image", "none"),
        Row("III", "III: image-checkpoint spatial frozen + MLP adapter, temporal from scratch", "III", F,
            ("extract-image",), "image"),
        Row("s1-scratch", "Stage-1 spatial frozen + MLP adapter, temporal from scratch", None, F, on_s1, "stage1"),
        Row("sfa", f"V = SFA: Stage-1 spatial frozen + MLP adapter, temporal from Stage 1 ({F} frames)", "V", F,
            on_s1, "stage1", temporal_init="stage1"),
    ]
    rows += [Row(f"sfa-{f}f", f"V = SFA at {f} frames (from the same {F}-frame cache)", "V", f, on_s1, "stage1",
                 temporal_init="stage1") for f in sorted(cfg.frames_sweep, reverse=True)]
    return rows


def seed_dir(work: Path, seed: int) -> Path:
    """Where one seed's phases run: WORKDIR/seed-<s>."""
    return work / f"seed-{seed}"
