"""`sfa-cache demo`."""

from __future__ import annotations

import click

from sfa_cache.cli.options import command_settings, config_option
from sfa_cache.pipelines.demo_config import CHECKPOINTS, DemoConfig
from sfa_cache.runtime import AMP_CHOICES
from sfa_cache.settings_io import config_from_dict

D = DemoConfig


@click.command("demo")
@config_option
@click.option("--workdir", type=click.Path(file_okay=False), default=D.workdir, show_default=True,
              help="Where everything goes; rerun with the same folder to reuse finished phases (and seeds).")
@click.option("--checkpoint", type=click.Choice(CHECKPOINTS), default=D.checkpoint, show_default=True,
              help="The premise. generic: the stand-in image checkpoint learns what an object is, as ImageNet's does "
              "(the paper's); aligned: it learns the video classes' own per-frame facts (where the shape is, whether "
              "it is lit).")
@click.option(
    "--seeds",
    default=D.seeds,
    show_default=True,
    help="Run everything (data, image checkpoint, training) for this many seeds from --seed; report mean ± std.",
)
@click.option(
    "--frames", default=D.frames, show_default=True, help="F: frames of the cache, the Stage-2 rows and the baseline."
)
@click.option("--frames-sweep", type=int, multiple=True, default=D.frames_sweep, show_default=True,
              help="SFA also at these frame counts, from the same cache (repeat the option).")
@click.option("--patience", default=D.patience, show_default=True,
              help="Every row trains until validation top-1 has not improved for this many epochs ...")
@click.option("--stage1-max-epochs", default=D.stage1_max_epochs, show_default=True, help="... or this many (Stage 1).")
@click.option(
    "--baseline-max-epochs", default=D.baseline_max_epochs, show_default=True, help="... or this many (the baseline)."
)
@click.option(
    "--stage2-max-epochs", default=D.stage2_max_epochs, show_default=True, help="... or this many (a Stage-2 row)."
)
@click.option("--restarts", default=D.restarts, show_default=True,
              help="A row never right on some validation class has stalled: train it again from another seed, at "
              "most this many times, then report it as stalled (no verdict read from it).")
@click.option("--train-per-class", default=D.train_per_class, show_default=True)
@click.option("--val-per-class", default=D.val_per_class, show_default=True,
              help="Validation clips per class: what patience and the best epoch watch.")
@click.option("--test-per-class", default=D.test_per_class, show_default=True,
              help="Test clips per class: where every reported top-1 is read.")
@click.option(
    "--pretrain-steps", default=D.pretrain_steps, show_default=True,
    help="Steps of the stand-in image pre-training (0: the checkpoint's own: generic 2000, aligned 800)."
)
@click.option("--amp", type=click.Choice(AMP_CHOICES), default=D.amp, show_default=True,
              help="Mixed precision of every phase; auto: bf16 on a GPU or a CPU with AVX512-BF16/AMX, else none.")
@click.option("--device", default=D.device, show_default=True)
@click.option("--num-workers", default=D.num_workers, show_default=True)
@click.option("--seed", default=D.seed, show_default=True, help="The first seed.")
@click.pass_context
def demo_cmd(ctx: click.Context, **_: object) -> None:
    """The paper's Table 1 in miniature on synthetic data: SFA against the converged baseline and
    the ablation rows, each selected on validation videos and scored on test videos, compared by
    time to target.

    Prints the table and verdict (also WORKDIR/results.md) and writes WORKDIR/results.json,
    results.png (validation top-1 against training seconds) and cost.png. Examples:

    \b
      sfa-cache demo --workdir sfa-demo
      sfa-cache demo --workdir sfa-demo --seeds 3      # reuses seed 0, adds seeds 1 and 2
      sfa-cache demo --workdir sfa-aligned --checkpoint aligned
    """
    from sfa_cache.pipelines.demo import run_demo

    values = command_settings(ctx)  # a workdir's demo.json is a --config file too
    click.echo(run_demo(config_from_dict(DemoConfig, values, where="demo options")), nl=False)
