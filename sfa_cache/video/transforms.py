"""Clip transforms on tensors. One set of random parameters per clip, applied to every frame.

Input: uint8 `[T, H, W, 3]` (as decoded). Output: float32 `[T, 3, S, S]`, normalised with the
backbone's mean/std. Training follows the paper's augmentation (supplementary Table 1): scale
jitter in [0.9, 1.33] + random crop, flip p=0.5, colour jitter p=0.8, and RandAugment where a
recipe asks for it. Evaluation resizes the
short side and takes the centre crop (or three crops along the long side).

With `normalise=False` a transform stops before normalising and returns the frames quantised to
uint8 `[T, 3, S, S]` (round(x * 255)); `normalise_uint8` finishes them later, where the model
runs. Extraction does this: its decode workers ship a quarter of the bytes of float32 frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

# Short side before cropping, relative to the crop: 256/224 as in ImageNet / ViViT evaluation.
RESIZE_RATIO = 256 / 224


@dataclass
class AugmentConfig:
    """Training augmentation (paper defaults; presets may switch colour jitter off)."""

    min_scale: float = 0.9  # scale jitter range: short side = S * RESIZE_RATIO * U(min, max)
    max_scale: float = 1.33
    flip_prob: float = 0.5
    color_jitter_prob: float = 0.8
    color_jitter: float = 0.4  # brightness / contrast / saturation factors drawn in 1 +- this
    # RandAugment (Cubuk et al. 2020; the paper's EPIC-Kitchens and SSv2 recipes: 2 ops at
    # magnitude 15 / 20): torchvision's, magnitude on its 0-30 scale; 0 ops = off.
    randaugment_ops: int = 0
    randaugment_magnitude: int = 0


def _to_float(clip: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float32 [T, 3, H, W] in [0, 1]."""
    clip = torch.as_tensor(clip)
    return clip.permute(0, 3, 1, 2).float().div_(255.0)


def _resize_short(x: torch.Tensor, short: int) -> torch.Tensor:
    H, W = x.shape[-2:]
    scale = short / min(H, W)
    size = (max(short, round(H * scale)), max(short, round(W * scale)))
    if size == (H, W):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)


def _crop(x: torch.Tensor, top: int, left: int, size: int) -> torch.Tensor:
    return x[..., top : top + size, left : left + size]


def _normalise(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def _quantise(x: torch.Tensor) -> torch.Tensor:
    """float [..., 3, S, S] in [0, 1] -> uint8 round(x * 255). The clamp guards against values a
    hair outside [0, 1] (resampling rounding); it never moves a value by more than that."""
    return x.mul(255.0).round_().clamp_(0.0, 255.0).to(torch.uint8)


def _finish(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], normalise: bool) -> torch.Tensor:
    """The last step of every transform: normalised float, or quantised uint8 (`normalise=False`)."""
    return _normalise(x, mean, std) if normalise else _quantise(x)


def normalise_uint8(
    x: torch.Tensor, mean: Sequence[float], std: Sequence[float], dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """uint8 [..., 3, S, S] (on any device) -> `dtype` [..., 3, S, S]: x / 255, then (x - mean) / std.

    The operations and their order are those of the float path (`_to_float`, then `_normalise`):
    in float32 on the CPU the result equals `_normalise(x.float() / 255, mean, std)` bit for bit.
    It differs from normalising the unquantised float frames by at most 0.5 / 255 / std per value.
    """
    if x.dtype != torch.uint8:
        raise TypeError(f"normalise_uint8 takes uint8 frames, got {x.dtype}")
    if x.dim() < 3 or x.shape[-3] != 3:
        raise ValueError(f"expected frames [..., 3, S, S], got {tuple(x.shape)}")
    m = torch.tensor(tuple(mean), dtype=dtype, device=x.device).view(3, 1, 1)
    s = torch.tensor(tuple(std), dtype=dtype, device=x.device).view(3, 1, 1)
    return (x.to(dtype).div_(255.0) - m) / s


def _grey(x: torch.Tensor) -> torch.Tensor:
    """[T, 3, H, W] -> [T, 1, H, W] luma (ITU-R 601)."""
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def rand_augment(x: torch.Tensor, ops: int, magnitude: int, seed: int) -> torch.Tensor:
    """RandAugment on a clip: float [T, 3, H, W] in [0, 1] -> the same, one draw of `ops`
    operations applied to every frame alike (torchvision treats T as a batch of one image's
    copies), from `seed` (the clip's generator), never from the global RNG."""
    from torchvision.transforms import v2

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return v2.RandAugment(num_ops=ops, magnitude=magnitude, num_magnitude_bins=31)(x).clamp_(0.0, 1.0)


def color_jitter(x: torch.Tensor, brightness: float, contrast: float, saturation: float) -> torch.Tensor:
    """Multiplicative brightness, contrast (around the clip's mean grey) and saturation."""
    x = x * brightness
    x = (x - _grey(x).mean()) * contrast + _grey(x).mean()
    g = _grey(x)
    x = (x - g) * saturation + g
    return x.clamp_(0.0, 1.0)


def train_transform(
    clip: torch.Tensor | np.ndarray,
    size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    rng: np.random.Generator,
    aug: Optional[AugmentConfig] = None,
    *,
    normalise: bool = True,
) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float [T, 3, size, size], one random draw per clip (`aug`: the defaults).

    `normalise=False`: uint8 [T, 3, size, size] instead, the same frames before normalisation.
    """
    aug = aug or AugmentConfig()
    x = _to_float(clip)
    scale = rng.uniform(aug.min_scale, aug.max_scale)
    x = _resize_short(x, max(size, round(size * RESIZE_RATIO * scale)))
    H, W = x.shape[-2:]
    x = _crop(x, int(rng.integers(0, H - size + 1)), int(rng.integers(0, W - size + 1)), size)
    if rng.random() < aug.flip_prob:
        x = x.flip(-1)
    if rng.random() < aug.color_jitter_prob:
        b, c, s = rng.uniform(1 - aug.color_jitter, 1 + aug.color_jitter, size=3)
        x = color_jitter(x, float(b), float(c), float(s))
    if aug.randaugment_ops:  # drawn only when on, so clips without it keep their draws
        x = rand_augment(x, aug.randaugment_ops, aug.randaugment_magnitude, int(rng.integers(2**31)))
    return _finish(x.contiguous(), mean, std, normalise)


def eval_transform(
    clip: torch.Tensor | np.ndarray,
    size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    *,
    normalise: bool = True,
) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float [T, 3, size, size]: short side to size*256/224, centre crop.

    `normalise=False`: uint8 [T, 3, size, size] instead, the same frames before normalisation.
    """
    return eval_crops(clip, size, mean, std, crops=1, normalise=normalise)[0]


def eval_crops(
    clip: torch.Tensor | np.ndarray,
    size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    crops: int = 1,
    *,
    normalise: bool = True,
) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float [crops, T, 3, size, size] for multi-crop testing.

    The short side is resized to size*256/224 as in `eval_transform`; `crops=1` is its centre
    crop, `crops=3` adds the two ends of the long side (ViViT's 3-crop testing), all centred on
    the short side. `normalise=False`: uint8 [crops, T, 3, size, size], before normalisation.
    """
    if crops not in (1, 3):
        raise ValueError(f"crops must be 1 or 3, got {crops}")
    x = _resize_short(_to_float(clip), round(size * RESIZE_RATIO))
    H, W = x.shape[-2:]
    top, left = (H - size) // 2, (W - size) // 2
    if crops == 1:
        corners = [(top, left)]
    elif H > W:  # portrait: the crops run down the long side
        corners = [(0, left), (top, left), (H - size, left)]
    else:
        corners = [(top, 0), (top, left), (top, W - size)]
    return torch.stack(
        [_finish(_crop(x, top, left, size).contiguous(), mean, std, normalise) for top, left in corners]
    )
