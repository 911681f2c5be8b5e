"""`sfa-cache extract`."""

from __future__ import annotations

import json

import click

from sfa_cache.cache.format.codecs import COMPRESSORS
from sfa_cache.cache.format.layout import DTYPES, VIEW_MODES
from sfa_cache.cli.options import command_settings, config_option, input_option, randaugment_options
from sfa_cache.data.inputs import INPUT_HELP
from sfa_cache.pipelines.job_configs import ExtractConfig
from sfa_cache.runtime import AMP_CHOICES
from sfa_cache.settings_io import config_from_dict
from sfa_cache.video.reader import BACKENDS

E = ExtractConfig
_FILE = click.Path(exists=True, dir_okay=False)


@click.command("extract")
@config_option
@input_option(help=f"The videos to cache: {INPUT_HELP} (required, here or in --config).")
@click.option("--cache-root", type=click.Path(file_okay=False),
              help="Folder holding caches; the cache goes in a subfolder named by its content key.")
@click.option("--model", type=click.Path(exists=True, file_okay=False),
              help="Stage-1 (or assembled) run directory whose spatial transformer is used.")
@click.option("--backbone", help="A bare timm ViT instead of --model (the no-Stage-1 ablation).")
@click.option("--backbone-weights", type=_FILE, help="Local image checkpoint for --backbone.")
@click.option("--pretrained", is_flag=True, help="timm hub weights for --backbone (needs internet).")
@click.option(
    "--image-size",
    default=E.image_size,
    show_default=True,
    help="Frame crop side for --backbone (a --model run brings its own).",
)
@click.option(
    "--root",
    type=click.Path(exists=True, file_okay=False),
    help="Folder video paths are relative to [default: the CSV's folder].",
)
@click.option("--classes", type=_FILE, help="Class list [default: the run's, else from the manifest].")
@click.option("--split", help="Keep only manifest rows with this 'split' value.")
@click.option("--frames", default=E.frames, show_default=True, help="Frames per clip, uniformly sampled.")
@click.option("--mode", type=click.Choice(VIEW_MODES), default=E.mode, show_default=True,
              help="train: augmented views (as Stage 1); eval: centre view or --eval-crops 3.")
@click.option("--views", default=E.views, show_default=True, help="Augmented views per clip (--mode train).")
@click.option("--eval-crops", type=click.Choice(["1", "3"]), default=str(E.eval_crops), show_default=True,
              help="Spatial crops per clip (--mode eval).")
@click.option(
    "--color-jitter-prob",
    default=E.color_jitter_prob,
    show_default=True,
    help="Colour jitter probability of train views.",
)
@click.option("--flip-prob", default=E.flip_prob, show_default=True,
              help="Horizontal flip probability of train views (0 when classes say left/right).")
@randaugment_options
@click.option("--seed", default=E.seed, show_default=True, help="Seed of the train views' augmentation.")
@click.option("--dtype", type=click.Choice(DTYPES), default=E.dtype, show_default=True, help="Stored feature dtype.")
@click.option("--compressor", type=click.Choice(COMPRESSORS), default=E.compressor, show_default=True)
@click.option(
    "--clips-per-shard", default=E.clips_per_shard, show_default=True, help="Clips per Zarr shard (the unit of resume)."
)
@click.option("--amp", type=click.Choice(AMP_CHOICES), default=E.amp, show_default=True,
              help="Mixed precision of the spatial forward (auto: bf16 on a GPU that runs it natively, else none).")
@click.option("--backend", type=click.Choice(BACKENDS), default=E.backend, show_default=True, help="Video decoder.")
@click.option(
    "--batch-frames",
    default=E.batch_frames,
    show_default=True,
    help="Frames per spatial forward, gathered across clips.",
)
@click.option(
    "--device", default=E.device, show_default=True, help="auto | cpu | cuda | cuda:N (auto: this rank's GPU)."
)
@click.option(
    "--num-workers", default=E.num_workers, show_default=True, help="Decoding processes (0: decode inline, no timeout)."
)
@click.option(
    "--decode-timeout",
    default=E.decode_timeout,
    show_default=True,
    help="Seconds per clip before its decoder is killed (0: none).",
)
@click.option("--strict", is_flag=True, help="Exit non-zero if any clip failed to decode.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.pass_context
def extract_cmd(ctx: click.Context, no_progress: bool, **_: object) -> None:
    """Run the frozen spatial transformer once per clip and cache its CLS tokens (Zarr shards).

    Rerunning the same command reuses a finished cache or resumes an interrupted one. Under
    torchrun each rank extracts its own shards. The last line printed is a JSON summary with
    the cache path. Examples:

    \b
      sfa-cache extract --model runs/s1 --manifest data/train.csv --cache-root caches --frames 32 --views 2
      sfa-cache extract --model runs/s1 --manifest data/val.csv --cache-root caches --frames 32 --mode eval
      sfa-cache extract --model runs/s1 --wds 'shards/train-{000000..000099}.tar' --cache-root caches --frames 32
      torchrun --nproc_per_node 4 -m sfa_cache.cli extract --model runs/s1 --manifest train.csv --cache-root caches
    """
    values = command_settings(ctx, drop=("no_progress",))
    if "eval_crops" in values:
        values["eval_crops"] = int(values["eval_crops"])
    if no_progress:
        values["progress"] = False
    cfg = config_from_dict(ExtractConfig, values, where="extract options")
    from sfa_cache.distributed import dist_info
    from sfa_cache.pipelines.extract import run_extract

    result = run_extract(cfg)
    if dist_info().is_main:  # under torchrun, rank 0 speaks for the whole job
        click.echo(json.dumps(result.summary()))
