"""`sfa-cache demo`."""

from __future__ import annotations

import click

from sfa_cache.configs import config_from_dict
from sfa_cache.pipelines.job_configs import DemoConfig

D = DemoConfig


@click.command("demo")
@click.option("--workdir", type=click.Path(file_okay=False), default=D.workdir, show_default=True,
              help="Where everything goes; rerun with the same folder to reuse finished phases.")
@click.option("--frames", default=D.frames, show_default=True, help="F: frames of Stage 2 and of the baseline.")
@click.option("--epochs", default=D.epochs, show_default=True, help="Epochs of Stage 1 and of the baseline.")
@click.option("--stage2-epochs", default=D.stage2_epochs, show_default=True)
@click.option("--train-per-class", default=D.train_per_class, show_default=True)
@click.option("--val-per-class", default=D.val_per_class, show_default=True)
@click.option("--pretrain-steps", default=D.pretrain_steps, show_default=True, help="Steps of the stand-in image pre-training.")
@click.option("--device", default=D.device, show_default=True)
@click.option("--num-workers", default=D.num_workers, show_default=True)
@click.option("--seed", default=D.seed, show_default=True)
def demo_cmd(**values: object) -> None:
    """SFA (Stage 1 at 8 frames -> cache -> Stage 2 at F) against the conventional baseline.

    On the synthetic dataset, in one command: trains every method, evaluates each on the raw
    validation videos, prints a table (also WORKDIR/results.md) and draws WORKDIR/results.png.
    """
    from sfa_cache.pipelines.demo import run_demo

    click.echo(run_demo(config_from_dict(DemoConfig, values, where="demo options")))
