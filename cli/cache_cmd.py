"""`sfa-cache cache info | list | verify | export`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from sfa_cache.cli.options import input_option
from sfa_cache.data.inputs import INPUT_HELP
from sfa_cache.errors import SfaError

_DIR = click.Path(exists=True, file_okay=False)


@click.group("cache")
def cache_group() -> None:
    """Inspect and check feature caches."""


@cache_group.command("info")
@click.argument("cache_dir", type=_DIR)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def info_cmd(cache_dir: str, as_json: bool) -> None:
    """Clips, views, frames, D, dtype, size on disk, fingerprint and failures of CACHE_DIR."""
    from sfa_cache.cache.format.verify import cache_info

    info = cache_info(cache_dir)
    if as_json:
        click.echo(json.dumps(info))
        return
    width = max(len(k) for k in info)
    for k, v in info.items():
        if k == "bytes":
            v = f"{v} ({v / 2**20:.1f} MiB)"
        click.echo(f"{k:<{width}}  {v}")


@cache_group.command("list")
@click.argument("cache_root", type=_DIR)
def list_cmd(cache_root: str) -> None:
    """The caches under CACHE_ROOT: folder, state, clips, views x frames, source manifest."""
    from sfa_cache.cache.format.layout import JOB_FILE
    from sfa_cache.cache.format.verify import cache_info

    found = False
    for path in sorted(Path(cache_root).iterdir()):
        if not (path / JOB_FILE).is_file():
            continue
        found = True
        info = cache_info(path)
        if info["complete"]:
            shape = f"{info['views']} x {info['frames']} x {info['dim']}"
            state = f"complete  {info['clips']} clips ({info['failed']} failed)  {shape}"
        else:
            state = f"unfinished  {info['shards_done']}/{info['shards']} shards"
        click.echo(f"{path.name}  {state}  {info['manifest']}")
    if not found:
        click.echo(f"no caches under {cache_root}")


@cache_group.command("verify")
@click.argument("cache_dir", type=_DIR)
@input_option(help=f"Also check that the cache covers this input's clips: {INPUT_HELP}.")
@click.option("--root", type=_DIR, help="Folder the input's video paths are relative to (with --manifest or --parity).")
@click.option("--split", help="Manifest split the cache was made from (with --manifest).")
@click.option("--parity", type=click.IntRange(min=1), metavar="N",
              help="Also recompute N random clips (every view) from their videos through the cache's recorded model "
              "and preprocessing, and compare with the stored tokens.")
@click.option("--tolerance", type=float, help="Largest difference --parity accepts, |stored - recomputed| / "
              "max(1, |recomputed|) per value [default: 1e-2, or 5e-2 for a cache extracted under AMP].")
@click.option("--seed", default=0, show_default=True, help="Which clips --parity draws.")
@click.option("--device", default="auto", show_default=True, help="Where --parity runs the model.")
@click.option("--spatial-run", type=_DIR, help="Take --parity's spatial weights from this run [default: the run the "
              "cache records]; for a run that has moved (the fingerprint is still checked).")
def verify_cmd(cache_dir: str, manifest: str | None, root: str | None, split: str | None, parity: int | None,
               tolerance: float | None, seed: int, device: str, spatial_run: str | None) -> None:
    """Check every shard's marker and checksum, shapes, NaN placement and manifest coverage;
    with --parity, also that the stored features are what the model computes.

    Exits non-zero, listing every problem, when anything is wrong.

    \b
    Example:
      sfa-cache cache verify caches/train-train-32f-0123abcd --parity 8
    """
    from sfa_cache.cache.format.index import read_cache_index
    from sfa_cache.cache.format.verify import verify_cache
    from sfa_cache.data.inputs import read_input

    if parity:
        from sfa_cache.pipelines.parity import check_tolerance

        check_tolerance(tolerance)  # input, checked before the cache is read
    given = None
    if manifest is not None:
        given = read_input(manifest, read_cache_index(cache_dir).classes, root, split)
    problems = verify_cache(cache_dir, given)
    if not problems and parity:
        from sfa_cache.pipelines.parity import check_parity

        report = check_parity(cache_dir, parity, root=root, seed=seed, device=device, tolerance=tolerance,
                              spatial_run=spatial_run)
        problems += report.problems
        click.echo(f"parity: {len(report.clips)} clip(s) recomputed, largest difference {report.largest:.2e} "
                   f"(clip {report.worst_clip}), tolerance {report.tolerance:.0e}")
    if problems:
        for p in problems:
            click.echo(f"problem: {p}", err=True)
        raise SfaError(f"{Path(cache_dir)}: {len(problems)} problem(s) found")
    click.echo(f"ok: {cache_dir}")


@cache_group.command("export")
@click.argument("cache_dir", type=_DIR)
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["h5"]), default="h5", show_default=True)
@click.option("--compression", type=click.Choice(["gzip", "lzf", "none"]), default="gzip", show_default=True,
              help="HDF5 filter of the features (gzip is readable everywhere; lzf only by h5py).")
def export_cmd(cache_dir: str, out: str, fmt: str, compression: str) -> None:
    """Write CACHE_DIR's features, labels, clip ids and frame numbers to one HDF5 file OUT.

    The layout is in docs/cache-format.md; it is for tools outside this project (training here
    reads the Zarr cache directly).
    """
    from sfa_cache.cache.format.export import export_h5

    summary = export_h5(cache_dir, out, compression=None if compression == "none" else compression, progress=True)
    click.echo(json.dumps(summary))
