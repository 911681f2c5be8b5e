"""`sfa-cache`: the command-line interface. Each command parses options and calls one pipeline."""

from __future__ import annotations

import logging
from typing import Any

import click
from click.core import ParameterSource

from sfa_cache.errors import SfaError


class SfaGroup(click.Group):
    """Turns `SfaError` (a user mistake or bad input) into a one-line error and exit code 1."""

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
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s")


def explicit_params(ctx: click.Context) -> dict[str, Any]:
    """Options the user actually gave (command line or environment), not click defaults."""
    given = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    return {k: v for k, v in ctx.params.items() if ctx.get_parameter_source(k) in given}


# Commands register themselves on `cli` when their modules are imported.
from sfa_cache.cli import (  # noqa: E402,F401
    ablate_cmd, cache_cmd, convert_cmd, demo_cmd, evaluate_cmd, extract_cmd, pack_cmd, plan_cmd, stage1_cmd,
    synthetic_cmd, train_temporal_cmd,
)
