"""`sfa-cache`: the command-line interface. Each command parses options and calls one pipeline.

The command modules import only click and the torch-free config dataclasses at the top; each
imports its pipeline when it runs. So `sfa-cache --help` (and every `CMD --help`) appears at once
instead of after seconds of loading torch, timm and zarr (tests/test_cli_start.py checks it).
"""

from __future__ import annotations

import logging
from typing import Any

import click

from sfa_cache.cli.ablate_cmd import ablate_cmd
from sfa_cache.cli.cache_cmd import cache_group
from sfa_cache.cli.convert_cmd import convert_group
from sfa_cache.cli.demo_cmd import demo_cmd
from sfa_cache.cli.evaluate_cmd import evaluate_cmd, predict_cmd
from sfa_cache.cli.extract_cmd import extract_cmd
from sfa_cache.cli.pack_cmd import pack_wds_cmd
from sfa_cache.cli.plan_cmd import plan_cmd
from sfa_cache.cli.plot_cmd import plot_cmd
from sfa_cache.cli.stage1_cmd import stage1_cmd
from sfa_cache.cli.synthetic_cmd import make_synthetic_cmd
from sfa_cache.cli.train_temporal_cmd import assemble_cmd, train_temporal_cmd
from sfa_cache.errors import SfaError
from sfa_cache.runtime import LOG_DATEFMT, LOG_FORMAT


class SfaGroup(click.Group):
    """Turns `SfaError` (a user mistake or bad input) into a one-line error and exit code 1, and
    lists the commands in the order they were added (the recipe's), not alphabetically."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SfaError as e:
            raise click.ClickException(str(e)) from None


@click.group(cls=SfaGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="sfa-cache")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def cli(verbose: bool) -> None:
    """Train ViViT factorised-encoder video models with the SFA recipe on cached spatial features.

    \b
    Typical flow:
      sfa-cache make-synthetic data/            # or your own CSV manifests
      sfa-cache stage1 --train-manifest data/train.csv --val-manifest data/val.csv --out runs/s1
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT, datefmt=LOG_DATEFMT)


# In the order of the recipe, which `sfa-cache --help` keeps.
for command in (
    make_synthetic_cmd, convert_group, pack_wds_cmd, stage1_cmd, extract_cmd, cache_group, train_temporal_cmd,
    assemble_cmd, evaluate_cmd, predict_cmd, ablate_cmd, plot_cmd, demo_cmd, plan_cmd,
):
    cli.add_command(command)
