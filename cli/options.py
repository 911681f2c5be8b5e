"""Option groups that several commands share."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import click
from click.core import ParameterSource

from sfa_cache.runtime import AMP_MODES
from sfa_cache.train.optim import OPTIMIZERS, OptimConfig

F = TypeVar("F", bound=Callable)
Optim = OptimConfig


def explicit_params(ctx: click.Context) -> dict[str, Any]:
    """Options the user actually gave (command line or environment), not click defaults."""
    given = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    return {k: v for k, v in ctx.params.items() if ctx.get_parameter_source(k) in given}


# Settings from a file (stage1, extract, train-temporal, evaluate, demo): flags given too win.
config_option = click.option(
    "--config", "config_file", type=click.Path(exists=True, dir_okay=False),
    help="Settings file (YAML or JSON) with this command's keys, snake_case, e.g. a run's own config.json; "
    "flags given as well override it.")


def command_settings(ctx: click.Context, *, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """The settings of this invocation: the --config file's (a run's config.json contributes its
    'train' section), then the flags the user gave on top; click defaults never hide the file's
    values (the config dataclass holds the defaults). `drop`: flags that are not settings."""
    values = explicit_params(ctx)
    path = values.pop("config_file", None)
    for key in drop:
        values.pop(key, None)
    if path is None:
        return values
    from sfa_cache.settings_io import read_settings_file

    data = read_settings_file(path)
    if "kind" in data and isinstance(data.get("train"), dict):  # a run record: the job is its 'train'
        data = data["train"]
    return {**data, **values}


def input_option(prefix: str = "", *, required: bool = False, help: str) -> Callable[[F], F]:
    """`--{prefix}manifest` and its aliases `--{prefix}wds` / `--{prefix}h5`: one option that takes
    any input (a CSV, WebDataset shards or an HDF5 file; the value's form decides)."""
    return click.option(f"--{prefix}manifest", f"--{prefix}wds", f"--{prefix}h5", f"{prefix}manifest".replace("-", "_"),
                        metavar="INPUT", required=required, help=help)


def randaugment_options(f: F) -> F:
    """RandAugment of training clips (stage1, extract's training views)."""
    f = click.option("--randaugment-magnitude", type=int, default=0, show_default=True,
                     help="RandAugment magnitude on torchvision's 0-30 scale (epic: 15, ssv2: 20).")(f)
    return click.option("--randaugment-ops", type=int, default=0, show_default=True,
                        help="RandAugment operations per clip, the same on every frame (the epic / ssv2 presets: 2); "
                        "0: off.")(f)


# Experiment tracking (stage1, train-temporal): sfa_cache/train/tracking.py.
log_option = click.option(
    "--log", default="auto", show_default=True,
    help="Trackers besides metrics.jsonl: auto (TensorBoard event files in OUT/tb when tensorboard is installed, "
    "and OUT/metrics.csv), none, or a comma list of tensorboard, csv, wandb (offline unless WANDB_MODE is set).")

# Resuming a torchrun run with another process count (stage1, train-temporal).
allow_world_size_change_option = click.option(
    "--allow-world-size-change", is_flag=True,
    help="Resume with another number of torchrun processes (changes the global batch and data order).")


def optim_options(*, mixup_help: str, spatial_lr_scale: bool) -> Callable[[F], F]:
    """The OptimConfig flags (epochs ... amp), in one order for every training command.

    `spatial_lr_scale` adds --spatial-lr-scale (only a command that trains the spatial ViT has it).
    """
    options = [
        click.option(
            "--epochs", default=Optim.epochs, show_default=True, help="Epochs to train (with --patience: the most)."
        ),
        click.option(
            "--patience",
            type=int,
            help="Early stopping: end when neither validation top-1 nor validation loss has improved for this many "
            "epochs (needs validation).",
        ),
        click.option("--batch-size", default=Optim.batch_size, show_default=True, help="Clips per step."),
        click.option(
            "--accum-steps",
            default=Optim.accum_steps,
            show_default=True,
            help="Gradient accumulation (effective batch = batch-size x this).",
        ),
        click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=Optim.optimizer, show_default=True),
        click.option(
            "--lr", default=Optim.lr, show_default=True, help="Peak learning rate (cosine schedule with linear warmup)."
        ),
        click.option("--min-lr", default=Optim.min_lr, show_default=True),
    ]
    if spatial_lr_scale:
        options.append(
            click.option(
                "--spatial-lr-scale",
                default=Optim.spatial_lr_scale,
                show_default=True,
                help="The spatial ViT's learning rate relative to --lr "
                "(e.g. 0.1 to fine-tune a pre-trained backbone gently).",
            )
        )
    options += [
        click.option("--weight-decay", default=Optim.weight_decay, show_default=True),
        click.option("--momentum", default=Optim.momentum, show_default=True, help="SGD momentum."),
        click.option("--warmup-epochs", default=Optim.warmup_epochs, show_default=True),
        click.option("--clip-grad", default=Optim.clip_grad, show_default=True, help="Max gradient norm (0 disables)."),
        click.option("--label-smoothing", default=Optim.label_smoothing, show_default=True),
        click.option("--mixup", default=Optim.mixup, show_default=True, help=mixup_help),
        click.option("--amp", type=click.Choice(AMP_MODES), default=Optim.amp, show_default=True,
                     help="Mixed precision (fp16 needs CUDA)."),
        click.option("--ema", type=float, default=Optim.ema, show_default=True, metavar="DECAY",
                     help="Also keep an exponential moving average of the weights with this decay (e.g. 0.999), "
                     "validated every epoch and saved as OUT/ema; 0 = none."),
    ]

    def apply(f: F) -> F:
        for option in reversed(options):  # decorators apply bottom-up; keep the listed order in --help
            f = option(f)
        return f
    return apply
