"""`sfa-cache plot`."""

from __future__ import annotations

import click


@click.command("plot")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), required=True,
              help="The figure; its extension sets the format (.png, .pdf or .svg).")
@click.option("--x", "x", type=click.Choice(["epoch", "seconds"]), default="epoch", show_default=True,
              help="Against epochs, or each run's own training seconds (validation and earlier phases, such as "
              "Stage 1, not counted).")
@click.option("--label", "labels", multiple=True, help="A legend name per run, in order [default: the folders].")
@click.option("--title", default="", help="The figure's title.")
def plot_cmd(runs: tuple[str, ...], out: str, x: str, labels: tuple[str, ...], title: str) -> None:
    """Overlay training runs' curves: validation top-1 and training loss per epoch.

    RUNS are run folders of stage1 or train-temporal (any that hold metrics.jsonl, ablation
    entries included).

    \b
    Example:
      sfa-cache plot work/stage1 work/stage2 --x seconds --out curves.png
    """
    from sfa_cache.pipelines.plot_runs import plot_runs

    click.echo(f"wrote {plot_runs(runs, out, x=x, labels=labels, title=title)}")
