"""`sfa-cache make-synthetic`."""

from __future__ import annotations

from pathlib import Path

import click
from tqdm import tqdm

from sfa_cache.data.synthetic import CLASSES, SyntheticConfig, make_synthetic

_D = SyntheticConfig


@click.command("make-synthetic")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--train-per-class", default=_D.train_per_class, show_default=True, help="Training clips per class.")
@click.option("--val-per-class", default=_D.val_per_class, show_default=True,
              help="Validation clips per class (what early stopping and the best epoch watch).")
@click.option("--test-per-class", default=_D.test_per_class, show_default=True,
              help="Test clips per class (where accuracy is reported; 0: no test split).")
@click.option("--num-frames", default=_D.num_frames, show_default=True, help="Frames per video.")
@click.option("--size", default=_D.size, show_default=True, help="Frame side in pixels (even).")
@click.option(
    "--flash-len", default=_D.flash_len, show_default=True, help="Frames of the flash in the flash_early/late classes."
)
@click.option("--fps", default=_D.fps, show_default=True, help="Frame rate written to the files.")
@click.option("--seed", default=_D.seed, show_default=True, help="Same seed, same dataset.")
def make_synthetic_cmd(out: Path, **options: int) -> None:
    """Write a moving-shapes action dataset (.mp4 + train/val/test manifests) to OUT.

    Motion classes (move_left/right/up/down) need temporal order; still / flash_early /
    flash_late (one brief flash of light, early or late, or none) need more than 8 frames,
    which often miss the flash. Rerunning with the same options finishes an interrupted dataset.
    """
    cfg = SyntheticConfig(**options)
    cfg.validate()  # before the progress bar: a bad option is one clean line
    total = (cfg.train_per_class + cfg.val_per_class + cfg.test_per_class) * len(CLASSES)
    with tqdm(total=total, desc="make-synthetic", unit="clip", dynamic_ncols=True) as bar:
        manifests = make_synthetic(out, cfg, progress=bar.update)
    click.echo(f"wrote {total} clips of {len(CLASSES)} classes: {', '.join(str(m) for m in manifests.values())}")
