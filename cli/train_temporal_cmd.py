"""`sfa-cache train-temporal` and `sfa-cache assemble`."""

from __future__ import annotations

import json
from typing import Any, Optional

import click

from sfa_cache.cache.feeds.placement import REQUESTS, canonical_request
from sfa_cache.cli.options import (
    allow_world_size_change_option,
    command_settings,
    config_option,
    log_option,
    optim_options,
)
from sfa_cache.models.config import ADAPTER_KINDS, TEMPORAL_PRESETS
from sfa_cache.pipelines.job_configs import TEMPORAL_INITS, TrainTemporalConfig, resolve_train_temporal_config

T = TrainTemporalConfig
_DIR = click.Path(exists=True, file_okay=False)


class _RequestChoice(click.Choice):
    """The --cache-in-memory words (what --help lists); `off`, the flag's former word for `stream`,
    still works and becomes `stream` here, so existing commands keep working."""

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> Any:
        return super().convert(canonical_request(value) if isinstance(value, str) else value, param, ctx)


@click.command("train-temporal")
@config_option
@click.option("--train-cache", type=_DIR, help="Feature cache of the training clips (sfa-cache extract); required.")
@click.option(
    "--val-cache", type=_DIR, help="Feature cache of the evaluation clips (--mode eval), evaluated every epoch."
)
@click.option(
    "--stage1",
    type=_DIR,
    help="Stage-1 run: initialises the temporal transformer; its fingerprint must match the cache.",
)
@click.option("--out", type=click.Path(file_okay=False), help="Run directory to create (or --resume); required.")
@click.option("--temporal-init", type=click.Choice(TEMPORAL_INITS), default=T.temporal_init, show_default=True,
              help="scratch: random temporal transformer (the ablation).")
@click.option(
    "--frames", default=T.frames, show_default=True, help="Frames per clip, a uniform subset of the cached ones."
)
@click.option("--adapter", type=click.Choice(ADAPTER_KINDS), default=T.adapter, show_default=True,
              help="mlp: the paper's Linear-GELU-Linear; residual: x + MLP(x), identity at init.")
@click.option("--adapter-hidden", type=int, help="Adapter hidden width [default: the feature width].")
@click.option("--temporal-depth", type=int, help="Layers, when training from scratch without --stage1 [default: 4].")
@click.option(
    "--temporal-preset",
    type=click.Choice(list(TEMPORAL_PRESETS)),
    help="Paper size B/L/H/g, from scratch without --stage1.",
)
@click.option(
    "--temporal-pos-std",
    type=float,
    help="Init std of the position table, from scratch without --stage1 "
    "[default: 0.02; a --stage1 run brings its own].",
)
@click.option("--drop-path", default=T.drop_path, show_default=True)
@optim_options(mixup_help="Feature-level mixup alpha (0 disables).", spatial_lr_scale=False)
@click.option("--device", default=T.device, show_default=True, help="auto | cpu | cuda | cuda:N")
@click.option("--num-workers", default=T.num_workers, show_default=True,
              help="Shard-reading worker processes when the features are streamed.")
@click.option("--cache-in-memory", type=_RequestChoice(REQUESTS), default=T.cache_in_memory, show_default=True,
              help="Where the features live while training: gpu (when they fit beside the step), ram, or "
              "stream (read the shards from disk); auto picks the first that fits and logs why. Same batches "
              "in every case.")
@click.option("--shuffle-window", default=T.shuffle_window, show_default=True,
              help="Shards shuffled together each epoch (0: all shards, a full shuffle); streaming holds one "
              "window's clips per worker.")
@click.option("--seed", default=T.seed, show_default=True)
@click.option(
    "--log-every", default=T.log_every, show_default=True, help="Optimiser steps between metrics.jsonl records."
)
@log_option
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last saved epoch.")
@allow_world_size_change_option
@click.option("--stop-after", type=int, help="Stop after this many epochs in this invocation.")
@click.option("--no-assemble", is_flag=True, help="Do not write OUT/assembled at the end.")
@click.pass_context
def train_temporal_cmd(ctx: click.Context, resume: bool, no_assemble: bool, **_: object) -> None:
    """Stage 2: train the adapter and temporal transformer on cached features.

    The spatial transformer is never built. At the end, OUT/assembled holds the end-to-end
    model (Stage-1 spatial + Stage-2 adapter and temporal) for evaluate / predict. Example:

    \b
      sfa-cache train-temporal --train-cache caches/train-train-32f-XXXX \\
          --val-cache caches/val-eval-32f-YYYY --stage1 runs/s1 --frames 32 --out runs/s2
    """
    values = command_settings(ctx, drop=("resume", "no_assemble"))
    if values.get("clip_grad") == 0:
        values["clip_grad"] = None
    cfg = resolve_train_temporal_config({**values, **({"assemble": False} if no_assemble else {})})
    from sfa_cache.pipelines.train_temporal import run_train_temporal

    last = run_train_temporal(cfg, resume=resume)
    click.echo(json.dumps({"out": cfg.out, **{k: v for k, v in last.items() if k != "kind"}}))


@click.command("assemble")
@click.argument("stage2_run", type=_DIR)
@click.option("--out", type=click.Path(file_okay=False), help="Where to write it [default: STAGE2_RUN/assembled].")
@click.option(
    "--spatial-run", type=_DIR, help="Take the spatial weights from this run [default: the Stage-1 run of STAGE2_RUN]."
)
def assemble_cmd(stage2_run: str, out: str | None, spatial_run: str | None) -> None:
    """Join Stage-1 spatial and Stage-2 adapter + temporal weights into one end-to-end run."""
    from pathlib import Path

    from sfa_cache.pipelines.assemble import assemble
    from sfa_cache.pipelines.train_temporal import ASSEMBLED_DIR

    path = assemble(stage2_run, out or Path(stage2_run) / ASSEMBLED_DIR, spatial_run=spatial_run)
    click.echo(str(path))
