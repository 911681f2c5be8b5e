"""`sfa-cache evaluate` and `sfa-cache predict`."""

from __future__ import annotations

import json

import click

from sfa_cache.cli.options import command_settings, config_option, input_option
from sfa_cache.data.inputs import INPUT_HELP
from sfa_cache.errors import SfaError
from sfa_cache.pipelines.job_configs import EvaluateConfig
from sfa_cache.runtime import AMP_MODES
from sfa_cache.settings_io import config_from_dict
from sfa_cache.video.reader import BACKENDS

E = EvaluateConfig
_RUN = click.Path(exists=True, file_okay=False)


def _view_options(f):
    for option in reversed(
        [
            click.option(
                "--clips", default=E.clips, show_default=True, help="Temporal clips per video (multi-view testing)."
            ),
            click.option(
                "--crops", type=click.Choice(["1", "3"]), default="1", show_default=True, help="Spatial crops per clip."
            ),
            click.option("--frames", type=int, help="Frames per clip [default: the model's]."),
            click.option("--backend", type=click.Choice(BACKENDS), default=E.backend, show_default=True),
            click.option("--device", default=E.device, show_default=True),
            click.option("--amp", type=click.Choice(AMP_MODES), default=E.amp, show_default=True),
        ]
    ):
        f = option(f)
    return f


@click.command("evaluate")
@config_option
@click.option("--run", "run", type=_RUN, help="Run directory with spatial weights (Stage 1, baseline or assembled); "
              "required.")
@input_option(help=f"The videos to evaluate: {INPUT_HELP} (required, here or in --config).")
@click.option("--root", type=_RUN, help="Folder video paths are relative to [default: the CSV's folder].")
@click.option("--split", help="Keep only manifest rows with this 'split' value.")
@_view_options
@click.option(
    "--batch-size", default=E.batch_size, show_default=True, help="Videos per forward (each has clips x crops views)."
)
@click.option("--num-workers", default=E.num_workers, show_default=True, help="Decoding worker processes.")
@click.option(
    "--decode-timeout",
    default=E.decode_timeout,
    show_default=True,
    help="Seconds per video before its decoder is killed and the video skipped (0: none, a plain DataLoader).",
)
@click.option(
    "--out", type=click.Path(file_okay=False), help="Where metrics go [default: RUN/eval/<manifest>-<clips>x<crops>]."
)
@click.pass_context
def evaluate_cmd(ctx: click.Context, **_: object) -> None:
    """Top-1 / top-5, per-class accuracy and a confusion matrix on raw videos.

    Writes metrics.json and confusion.csv; prints one JSON line. Example (ViViT's 4x3 views):

    \b
      sfa-cache evaluate --run runs/s2/assembled --manifest data/val.csv --clips 4 --crops 3
    """
    values = command_settings(ctx)
    if "crops" in values:
        values["crops"] = int(values["crops"])
    cfg = config_from_dict(EvaluateConfig, values, where="evaluate options")
    from sfa_cache.pipelines.evaluate import run_evaluate

    metrics = run_evaluate(cfg)
    click.echo(json.dumps({k: v for k, v in metrics.items() if k != "per_class_top1"}))


@click.command("predict")
@click.option("--run", "run", type=_RUN, required=True, help="Run directory with spatial weights.")
@click.argument("videos", nargs=-1, required=True, type=click.Path())
@_view_options
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True, help="Labels shown per video.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per video.")
def predict_cmd(run: str, videos: tuple[str, ...], clips: int, crops: str, frames: int | None, backend: str,
                device: str, amp: str, top_k: int, as_json: bool) -> None:
    """Top-k labels with probabilities for each video. Exits 1 if any video could not be read."""
    from sfa_cache.inference import predict

    results = predict(run, videos, clips=clips, crops=int(crops), top_k=top_k, frames=frames, backend=backend,
                      device=device, amp=amp)
    for r in results:
        if as_json:
            click.echo(json.dumps(r))
        elif "error" in r:
            click.echo(f"{r['path']}: cannot read: {r['error']}")
        else:
            click.echo(f"{r['path']}: " + ", ".join(f"{t['label']} {t['prob']:.3f}" for t in r["top"]))
    failed = sum("error" in r for r in results)
    if failed:
        raise SfaError(f"{failed} of {len(results)} video(s) could not be read")
