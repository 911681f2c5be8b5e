"""Still images for the demo's stand-in image checkpoints and probes, drawn with the synthetic
videos' own renderer where they must look like its frames (synthetic.py):

* `render_objects`: the `generic` checkpoint's task, what kind of object an image holds, drawn
  unlike the videos' frames (it stands for ImageNet: its label says nothing of the classes' cues);
* `render_frames`: the `aligned` checkpoint's task, frames drawn like the videos', labelled with
  the acting shape's cell and whether it is lit (exactly the classes' per-frame facts);
* `video_frame_cues`: frames of real clips with those two facts, for the linear probes.
"""

from __future__ import annotations

import numpy as np

from sfa_cache.data.synthetic import (
    CLASSES,
    WHITE,
    SyntheticConfig,
    draw_frame,
    pixel_grid,
    plan_clip,
    random_colour,
    shape_mask,
)


def video_frame_cues(clips: int, per_clip: int, cfg: SyntheticConfig,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames of the videos with the per-frame facts the classes are built from, for probing
    what features encode: `per_clip` random frames of each of `clips` clips of random classes ->
    (uint8 [clips * per_clip, size, size, 3], the acting shape's cell on a GRID x GRID grid, lit).

    Lit frames are rare in the videos (4 of 64 in a flash clip); here a frame of a flash clip is
    a lit one half the time, so that "lit" is not read off a 98% majority class.
    """
    frames, cells, lit = [], [], []
    grid = pixel_grid(cfg.size)
    for _ in range(clips):
        plan = plan_clip(CLASSES[int(rng.integers(len(CLASSES)))], cfg, rng)
        lit_frames = np.flatnonzero(plan.lit)
        for _ in range(per_clip):
            use_lit = lit_frames.size and rng.random() < 0.5
            t = int(rng.choice(lit_frames) if use_lit else rng.integers(cfg.num_frames))
            frames.append(draw_frame(plan, t, grid, rng))
            cells.append(_cell(plan.cy[t], plan.cx[t], cfg.size))
            lit.append(bool(plan.lit[t]))
    return np.stack(frames), np.array(cells, dtype=np.int64), np.array(lit, dtype=np.int64)


def _cell(cy: float, cx: float, size: int) -> int:
    return min(int(cy / size * GRID), GRID - 1) * GRID + min(int(cx / size * GRID), GRID - 1)


# Image pre-training targets: the acting shape's cell on a GRID x GRID grid, and whether it is lit.
GRID = 4
FRAME_CLASSES = 2 * GRID * GRID


def render_frames(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`n` single frames drawn like the clips' -> (uint8 [n, size, size, 3], int64 [n] targets).

    Target = 2 * cell + lit, where cell is the acting shape's centre on a 4 x 4 grid and lit says
    whether it is white. An image model trained on this learns where the shape is and whether it
    flashes: what the video classes are made of. It is the demo's stand-in for an ImageNet
    checkpoint, which cannot be downloaded offline.
    """
    yy, xx = pixel_grid(size)
    frames = np.empty((n, size, size, 3), dtype=np.uint8)
    targets = np.empty(n, dtype=np.int64)
    for i in range(n):
        img = np.broadcast_to(rng.uniform(10, 70, size=3).astype(np.float32), (size, size, 3)).copy()
        d_r = rng.uniform(0.05, 0.08) * size
        img[shape_mask(rng.choice(["square", "disk"]), *rng.uniform(0.2 * size, 0.8 * size, 2), d_r, yy, xx)] = (
            random_colour(rng)
        )
        r = rng.uniform(0.09, 0.14) * size
        cy, cx = rng.uniform(r + 1, size - r - 1, size=2)
        lit = bool(rng.random() < 0.5)
        img[shape_mask(rng.choice(["square", "disk"]), cy, cx, r, yy, xx)] = WHITE if lit else random_colour(rng)
        img += rng.normal(0, 6, size=(size, size, 1)).astype(np.float32)
        frames[i] = np.clip(img, 0, 255).astype(np.uint8)
        targets[i] = 2 * _cell(cy, cx, size) + int(lit)
    return frames, targets


# The generic stand-in for ImageNet: what an object is, not where it is or whether it is lit.
OBJECT_KINDS = ("square", "disk", "triangle", "cross")


def _object_mask(kind: str, cy: float, cx: float, r: float, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    dy, dx = yy - cy, xx - cx
    if kind in ("square", "disk"):
        return shape_mask(kind, cy, cx, r, yy, xx)
    if kind == "triangle":  # apex up, base at cy + r
        return (dy <= r) & (dy >= -r) & (np.abs(dx) <= (dy + r) / 2)
    arm = 0.3 * r  # a cross
    return ((np.abs(dy) <= r) & (np.abs(dx) <= arm)) | ((np.abs(dx) <= r) & (np.abs(dy) <= arm))


def render_objects(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`n` generic object images -> (uint8 [n, size, size, 3], int64 [n] kind in OBJECT_KINDS).

    The demo's stand-in for an ImageNet checkpoint is trained to name the object's kind: a label
    that says nothing of the video classes' per-frame facts (where the acting shape is, whether it
    is lit). The images are drawn unlike the videos' frames: a brightness gradient with blotches
    behind one object of any colour (white included) at any size and place, sometimes with a small
    object of another kind, so that neither position, scale nor brightness predicts the label.
    """
    yy, xx = pixel_grid(size)
    frames = np.empty((n, size, size, 3), dtype=np.uint8)
    kinds = rng.integers(0, len(OBJECT_KINDS), n)
    for i in range(n):
        low, high = rng.uniform(0, 200, size=(2, 3)).astype(np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        ramp = (np.cos(angle) * xx + np.sin(angle) * yy) / size  # in [-1.4, 1.4]
        img = low + (high - low) * (0.5 + 0.35 * ramp)[..., None]
        for _ in range(int(rng.integers(2, 6))):  # soft blotches of texture
            by, bx, br = rng.uniform(0, size, 2).tolist() + [rng.uniform(0.05, 0.2) * size]
            img += (rng.uniform(-40, 40, size=3) * np.exp(-((yy - by) ** 2 + (xx - bx) ** 2) / (2 * br**2))[..., None])
        others = [k for k in range(len(OBJECT_KINDS)) if k != kinds[i]]
        for k in rng.choice(others, int(rng.integers(0, 2)), replace=False):  # a small object of another kind
            r = rng.uniform(0.05, 0.08) * size
            img[_object_mask(OBJECT_KINDS[k], *rng.uniform(r, size - r, 2), r, yy, xx)] = rng.uniform(0, 255, 3)
        r = rng.uniform(0.22, 0.4) * size
        colour = WHITE if rng.random() < 0.2 else rng.uniform(0, 255, 3).astype(np.float32)
        img[_object_mask(OBJECT_KINDS[kinds[i]], *rng.uniform(r, size - r, 2), r, yy, xx)] = colour
        img += rng.normal(0, 6, size=(size, size, 1)).astype(np.float32)
        frames[i] = np.clip(img, 0, 255).astype(np.uint8)
    return frames, kinds.astype(np.int64)
