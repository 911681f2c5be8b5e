"""A moving-shapes action dataset, written as real H.264 .mp4 files with manifests.

Two families of classes, one shape acting per clip over a noisy background with a static
distractor shape:

* `move_left/right/up/down`: the shape travels across the frame. Any 2+ ordered frames tell the
  direction, so 8-frame models solve these: they show that temporal *order* matters.
* `still / flash_early / flash_late`: the shape stays put (small jitter); in `flash_early` and
  `flash_late` it turns white once (and the background brightens: a flash of light), for
  `flash_len` frames, in the first or the last ~40% of the clip. With `flash_len = 4` of 64
  frames, 8 uniformly sampled frames see the flash with probability 1/2 (a missed flash looks
  `still`); 32 frames always see it (twice at eval). These
  classes need *more frames*: the reason Stage 2 at many frames beats Stage 1 at 8. (Detecting a
  flash is learnable from a few hundred clips; counting flashes, the earlier design, was not.)

Everything is a pure function of (`seed`, split, clip number): the same seed gives the same
videos, and a partially written dataset is finished on rerun.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from sfa_cache.atomic import atomic_write_json, atomic_write_text
from sfa_cache.errors import SfaError
from sfa_cache.folders import folder_marker
from sfa_cache.settings_io import config_to_dict
from sfa_cache.video.writer import write_video

MOTION_CLASSES = ("move_left", "move_right", "move_up", "move_down")
FLASH_CLASSES = ("still", "flash_early", "flash_late")
CLASSES = MOTION_CLASSES + FLASH_CLASSES
WHITE = np.array([255, 255, 255], dtype=np.float32)
FLASH_SCENE = 120.0  # a flash also lights the background by this much: a clear per-frame event


@dataclass
class SyntheticConfig:
    train_per_class: int = 40
    val_per_class: int = 12  # selection: early stopping and the best epoch watch this split
    test_per_class: int = 12  # scoring: reported accuracy is read here, never used to choose (0: no test split)
    num_frames: int = 64
    size: int = 64  # frame side in pixels (even)
    flash_len: int = 4  # frames per flash
    fps: int = 16
    seed: int = 0

    def validate(self) -> None:
        if self.size < 16 or self.size % 2:
            raise SfaError(f"size must be an even number >= 16, got {self.size}")
        if self.train_per_class < 1 or self.val_per_class < 1 or self.test_per_class < 0:
            raise SfaError("clips per class must be >= 1 (train, val) and >= 0 (test)")
        if self.flash_len < 1:
            raise SfaError(f"flash length must be >= 1, got {self.flash_len}")
        # Early and late flashes must stay apart (at least 2 flash lengths between them).
        if self.num_frames < 6 * self.flash_len:
            raise SfaError(f"num_frames must be >= 6 * flash_len = {6 * self.flash_len}, got {self.num_frames}")


def shape_mask(kind: str, cy: float, cx: float, r: float, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    if kind == "square":
        return (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= r)
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def random_colour(rng: np.random.Generator) -> np.ndarray:
    """A saturated, non-white colour (one channel high, one low)."""
    c = rng.uniform(0, 120, size=3)
    c[rng.integers(3)] = rng.uniform(170, 230)
    return c.astype(np.float32)


@dataclass
class _ClipPlan:
    """One clip's scene and the acting shape's per-frame state ([T] each)."""

    background: np.ndarray
    kind: str
    colour: np.ndarray
    r: float
    d_mask: np.ndarray
    d_colour: np.ndarray
    cy: np.ndarray
    cx: np.ndarray
    lit: np.ndarray


def plan_clip(label: str, cfg: SyntheticConfig, rng: np.random.Generator) -> _ClipPlan:
    T, S = cfg.num_frames, cfg.size
    yy, xx = pixel_grid(S)
    background = rng.uniform(10, 70, size=3).astype(np.float32)
    r = rng.uniform(0.09, 0.14) * S
    kind = rng.choice(["square", "disk"])
    colour = random_colour(rng)
    # A static distractor shape, away from the border.
    d_r = rng.uniform(0.05, 0.08) * S
    d_mask = shape_mask(rng.choice(["square", "disk"]), *rng.uniform(0.2 * S, 0.8 * S, 2), d_r, yy, xx)
    d_colour = random_colour(rng)

    margin = r + 1
    if label in MOTION_CLASSES:
        travel = rng.uniform(0.35, 0.55) * S
        along = np.linspace(-travel / 2, travel / 2, T)
        centre = rng.uniform(margin + travel / 2, S - margin - travel / 2, size=2)
        cy = np.full(T, centre[0])
        cx = np.full(T, centre[1])
        if label == "move_left":
            cx = centre[1] - along
        elif label == "move_right":
            cx = centre[1] + along
        elif label == "move_up":
            cy = centre[0] - along
        else:
            cy = centre[0] + along
        lit = np.zeros(T, dtype=bool)
    else:
        start = rng.uniform(margin + 2, S - margin - 2, size=2)
        jitter = np.clip(np.cumsum(rng.normal(0, 0.3, size=(T, 2)), axis=0), -2, 2)
        cy, cx = start[0] + jitter[:, 0], start[1] + jitter[:, 1]
        lit = np.zeros(T, dtype=bool)
        if label != "still":  # one flash, starting in the first or the last (T/2 - 2 flash_len) frames
            room = T // 2 - 2 * cfg.flash_len
            s = int(rng.integers(0, room + 1)) + (0 if label == "flash_early" else T - cfg.flash_len - room)
            lit[s : s + cfg.flash_len] = True
    return _ClipPlan(background, str(kind), colour, r, d_mask, d_colour, cy, cx, lit)


def pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(yy, xx) float32 [size, size]: each pixel's row and column, for the shape masks."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return yy, xx


def draw_frame(plan: _ClipPlan, t: int, grid: tuple[np.ndarray, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Frame `t` of a planned clip -> uint8 [size, size, 3] (`grid` from `pixel_grid`, made once per clip)."""
    yy, xx = grid
    size = yy.shape[0]
    img = np.broadcast_to(np.minimum(plan.background + (FLASH_SCENE if plan.lit[t] else 0.0), 255),
                          (size, size, 3)).copy()
    img[plan.d_mask] = plan.d_colour
    img[shape_mask(plan.kind, plan.cy[t], plan.cx[t], plan.r, yy, xx)] = WHITE if plan.lit[t] else plan.colour
    img += rng.normal(0, 6, size=(size, size, 1)).astype(np.float32)  # sensor noise
    return np.clip(img, 0, 255).astype(np.uint8)


def render_clip(label: str, cfg: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    """One clip of class `label` -> uint8 [num_frames, size, size, 3]."""
    plan, grid = plan_clip(label, cfg, rng), pixel_grid(cfg.size)
    return np.stack([draw_frame(plan, t, grid, rng) for t in range(cfg.num_frames)])


def make_synthetic(
    out: str | Path, cfg: SyntheticConfig, progress: Optional[Callable[[int], None]] = None
) -> dict[str, Path]:
    """Write videos, `train.csv`, `val.csv`, `test.csv` (when `test_per_class` > 0), `classes.txt`
    and `synthetic.json` under `out`.

    Rerunning with the same config finishes an interrupted dataset (existing videos are kept);
    a folder holding anything else is refused. Returns the paths of the manifests by split.
    Each split's videos are a function of (seed, split, clip number) alone: adding a test split
    leaves the train and val videos of a seed as they were.
    """
    cfg.validate()
    out = Path(out)
    meta_path = out / "synthetic.json"
    meta = {"format": 1, "classes": list(CLASSES), "config": config_to_dict(cfg)}
    found = folder_marker(out, meta_path.name, what="a synthetic dataset", advice="choose another OUT")
    if found is not None and found != meta:
        raise SfaError(f"{out} holds a synthetic dataset with other settings; choose another OUT")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(meta_path, meta)  # first: claims the folder for this config

    manifests = {}
    splits = (("train", cfg.train_per_class), ("val", cfg.val_per_class), ("test", cfg.test_per_class))
    for split_id, (split, per_class) in enumerate(splits):
        if per_class == 0:
            continue
        rows = []
        for n in range(per_class * len(CLASSES)):
            label = CLASSES[n % len(CLASSES)]
            rel = Path("videos") / split / f"{n:06d}.mp4"
            if not (out / rel).is_file():  # write_video is atomic: a present file is complete
                rng = np.random.default_rng([cfg.seed, split_id, n])
                write_video(out / rel, render_clip(label, cfg, rng), fps=cfg.fps)
            rows.append((rel.as_posix(), label))
            if progress is not None:
                progress(1)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["path", "label"])
        writer.writerows(rows)
        manifests[split] = out / f"{split}.csv"
        atomic_write_text(manifests[split], buf.getvalue())
    atomic_write_text(out / "classes.txt", "\n".join(CLASSES) + "\n")
    return manifests
