"""`sfa-cache plan`."""

from __future__ import annotations

import json

import click

from sfa_cache.pipelines.job_configs import PlanConfig
from sfa_cache.runtime import AMP_MODES
from sfa_cache.settings_io import config_from_dict
from sfa_cache.train.optim import OPTIMIZERS

P = PlanConfig


@click.command("plan")
@click.option("--budget", default=P.budget, show_default=True, help="GPU memory per process: 12GiB, 16GB, 800MiB ...")
@click.option("--backbone", "backbones", multiple=True, default=P.backbones, show_default=True,
              help="timm ViT of the spatial transformer (repeat for several).")
@click.option("--image-size", default=P.image_size, show_default=True)
@click.option("--amp", type=click.Choice(AMP_MODES), default=P.amp, show_default=True)
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=P.optimizer, show_default=True)
@click.option("--temporal-depth", default=P.temporal_depth, show_default=True)
@click.option("--estimate", is_flag=True, help="Use the memory model even when a GPU is there.")
@click.option("--device", default=P.device, show_default=True, help="The CUDA device to measure on.")
@click.option("--step", default=P.step, show_default=True, help="Frame counts tried are multiples of this.")
@click.option("--cap", default=P.cap, show_default=True, help="The largest frame count tried.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON instead of a table.")
def plan_cmd(as_json: bool, **values: object) -> None:
    """How many frames per clip fit a memory budget: baseline, the paper's Stage 2, cached Stage 2.

    With a GPU it measures two real training steps per probe; without one it estimates from a
    documented memory model, and says which it did. Examples:

    \b
      sfa-cache plan --budget 12GiB
      sfa-cache plan --budget 24GB --backbone vit_large_patch16_224 --amp none
    """
    from sfa_cache.pipelines.plan import rows_as_json, run_plan

    values["backbones"] = tuple(values["backbones"])
    text, rows = run_plan(config_from_dict(PlanConfig, values, where="plan options"))
    click.echo(json.dumps(rows_as_json(rows), indent=2) if as_json else text)
