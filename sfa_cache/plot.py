"""A small PNG chart writer on Pillow (already installed with torchvision), so the demo's figure
needs no plotting library: accuracy curves on the left, a cost bar chart on the right."""

from __future__ import annotations

import os
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from sfa_cache.atomic import atomic_write

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
W, H, PAD = 560, 420, 56  # one panel


def _axes(draw: ImageDraw.ImageDraw, x0: int, title: str, ylabel: str, ymax: float, font: ImageFont.ImageFont) -> None:
    draw.text((x0 + PAD, 12), title, fill="black", font=font)
    draw.line([(x0 + PAD, PAD), (x0 + PAD, H - PAD), (x0 + W - 16, H - PAD)], fill="black", width=1)
    for i in range(5):
        v = ymax * i / 4
        y = H - PAD - (H - 2 * PAD) * i / 4
        draw.line([(x0 + PAD - 4, y), (x0 + PAD, y)], fill="black")
        draw.text((x0 + 6, y - 6), f"{v:.3g}", fill="black", font=font)
    draw.text((x0 + 6, PAD - 28), ylabel, fill="black", font=font)


def curves_and_bars_png(
    path: str | os.PathLike,
    curves: dict[str, Sequence[tuple[float, float]]],
    bars: dict[str, float],
    *,
    curve_title: str = "validation top-1 (%) per epoch",
    bar_title: str = "training cost (s)",
) -> None:
    """Write a two-panel PNG: `curves` (name -> [(epoch, value)]) and `bars` (name -> value)."""
    font = ImageFont.load_default()
    img = Image.new("RGB", (2 * W, H), "white")
    draw = ImageDraw.Draw(img)
    # Left: one line per method.
    ymax = max([100.0] + [v for pts in curves.values() for _, v in pts])
    xmax = max([1.0] + [x for pts in curves.values() for x, _ in pts])
    _axes(draw, 0, curve_title, "top-1", ymax, font)
    for i, (name, pts) in enumerate(curves.items()):
        colour = PALETTE[i % len(PALETTE)]
        xy = [(PAD + (W - PAD - 24) * x / xmax, H - PAD - (H - 2 * PAD) * v / ymax) for x, v in pts]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=2)
        for x, y in xy:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        draw.text((PAD + 10, PAD + 4 + 14 * i), name, fill=colour, font=font)
    draw.text((W // 2, H - PAD + 16), "epoch", fill="black", font=font)
    # Right: one bar per entry.
    bmax = max([1e-9] + list(bars.values())) * 1.1
    _axes(draw, W, bar_title, "", bmax, font)
    n = max(1, len(bars))
    width = (W - PAD - 40) / n
    for i, (name, value) in enumerate(bars.items()):
        x = W + PAD + 12 + i * width
        top = H - PAD - (H - 2 * PAD) * value / bmax
        draw.rectangle([x, top, x + width * 0.7, H - PAD], fill=PALETTE[i % len(PALETTE)])
        draw.text((x, top - 14), f"{value:.0f}", fill="black", font=font)
        draw.text((x, H - PAD + 4 + 12 * (i % 2)), name[:18], fill="black", font=font)
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))
