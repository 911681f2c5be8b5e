"""`sfa-cache stage1`."""

from __future__ import annotations

import json

import click

from sfa_cache.cli.options import (
    allow_world_size_change_option,
    command_settings,
    config_option,
    input_option,
    log_option,
    optim_options,
    randaugment_options,
)
from sfa_cache.data.inputs import INPUT_HELP
from sfa_cache.models.config import TEMPORAL_PRESETS
from sfa_cache.pipelines.job_configs import PRESETS, Stage1Config, resolve_stage1_config
from sfa_cache.video.reader import BACKENDS

S = Stage1Config
_FILE = click.Path(exists=True, dir_okay=False)


@click.command("stage1")
@config_option
@input_option("train-", help=f"Training videos: {INPUT_HELP} (required, here or in --config).")
@input_option("val-", help="Validation videos (evaluated every epoch), in any of the same forms.")
@click.option("--out", type=click.Path(file_okay=False), help="Run directory to create (or --resume); required.")
@click.option(
    "--root",
    type=click.Path(exists=True, file_okay=False),
    help="Folder video paths are relative to [default: each CSV's folder].",
)
@click.option(
    "--classes",
    type=_FILE,
    help="Class list (.txt one per line, or .json) [default: the train input's own, else inferred].",
)
@click.option(
    "--train-split", default=S.train_split, show_default=True, help="Rows kept from a manifest with a 'split' column."
)
@click.option(
    "--val-split", default=S.val_split, show_default=True, help="Rows kept from a manifest with a 'split' column."
)
@click.option(
    "--preset", type=click.Choice(list(PRESETS)), help="The paper's per-dataset recipe; explicit flags override it."
)
@click.option(
    "--backbone", default=S.backbone, show_default=True, help="Any timm ViT name (a pretrained tag may follow a dot)."
)
@click.option(
    "--image-size", default=S.image_size, show_default=True, help="Frame crop side; a multiple of the patch size."
)
@click.option("--pretrained", is_flag=True, help="Start the spatial ViT from timm hub weights (needs internet).")
@click.option(
    "--backbone-weights",
    type=_FILE,
    help="Start the spatial ViT from a local image checkpoint (.safetensors/.pth/.bin).",
)
@click.option(
    "--frames",
    default=S.frames,
    show_default=True,
    help="Frames per clip (8: SFA Stage 1; 32: the conventional baseline).",
)
@click.option(
    "--frame-chunk",
    default=S.frame_chunk,
    show_default=True,
    help="Frames per spatial forward (bounds activation memory).",
)
@click.option("--temporal-depth", type=int, help="Temporal transformer layers [default: 4, or the preset's].")
@click.option(
    "--temporal-preset",
    type=click.Choice(list(TEMPORAL_PRESETS)),
    help="Paper size B/L/H/g for the temporal transformer.",
)
@click.option(
    "--temporal-pos-std",
    default=S.temporal_pos_std,
    show_default=True,
    help="Init std of the temporal position embeddings (1.0 when frame tokens are unit-scale and data are few).",
)
@click.option(
    "--drop-path", default=S.drop_path, show_default=True, help="Stochastic depth rate (spatial and temporal)."
)
@click.option(
    "--color-jitter-prob", default=S.color_jitter_prob, show_default=True, help="Probability of colour jitter per clip."
)
@click.option("--flip-prob", default=S.flip_prob, show_default=True,
              help="Horizontal flip probability per clip; 0 when classes say left/right (SSv2, the synthetic data).")
@randaugment_options
@optim_options(mixup_help="Mixup alpha (0 disables).", spatial_lr_scale=True)
@click.option("--channels-last", is_flag=True, help="channels_last memory format for the spatial ViT (CUDA).")
@click.option("--compile", is_flag=True, help="torch.compile the model.")
@click.option("--backend", type=click.Choice(BACKENDS), default=S.backend, show_default=True, help="Video decoder.")
@click.option("--device", default=S.device, show_default=True, help="auto | cpu | cuda | cuda:N")
@click.option("--num-workers", default=S.num_workers, show_default=True, help="Decoding worker processes.")
@click.option("--decode-timeout", default=S.decode_timeout, show_default=True,
              help="Seconds per clip before its decoder is killed and the clip skipped (0: none, a plain DataLoader).")
@click.option("--seed", default=S.seed, show_default=True)
@click.option(
    "--log-every", default=S.log_every, show_default=True, help="Optimiser steps between metrics.jsonl records."
)
@log_option
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last saved epoch.")
@allow_world_size_change_option
@click.option(
    "--stop-after", type=int, help="Stop after this many epochs in this invocation (continue later with --resume)."
)
@click.pass_context
def stage1_cmd(ctx: click.Context, resume: bool, **_: object) -> None:
    """Train the whole ViViT-FE end to end on raw video (SFA Stage 1, or the baseline).

    Writes a run directory (config.json, model.safetensors, train_state.pt, metrics.jsonl,
    classes.json). Example on generated data:

    \b
      sfa-cache make-synthetic data/
      sfa-cache stage1 --train-manifest data/train.csv --val-manifest data/val.csv \\
          --backbone vit_tiny_patch16_224 --image-size 32 --flip-prob 0 --epochs 3 --lr 0.05 --out runs/s1
      sfa-cache stage1 --train-wds 'shards/train-{000000..000099}.tar' --val-h5 frames.h5 ... --out runs/s1
      sfa-cache stage1 --config runs/s1/config.json --seed 1 --out runs/s1-seed1   # a run, varied
    """
    # defaults (Stage1Config) < preset < --config file < explicit flags; --resume is how to run, not what
    values = command_settings(ctx, drop=("resume",))
    if values.get("clip_grad") == 0:
        values["clip_grad"] = None
    cfg = resolve_stage1_config(values)
    from sfa_cache.pipelines.stage1 import run_stage1

    last = run_stage1(cfg, resume=resume)
    click.echo(json.dumps({"out": cfg.out, **{k: v for k, v in last.items() if k != "kind"}}, indent=None))
