"""`sfa-cache pack-wds`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click

_FILE = click.Path(exists=True, dir_okay=False)


@click.command("pack-wds")
@click.option("--manifest", type=_FILE, required=True, help="CSV with path,label[,split] of the videos to pack.")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    required=True,
    help="Folder for the shards (created; a rerun finishes it).",
)
@click.option("--shard-size", default="1GB", show_default=True, help="Largest shard size (e.g. 1GB, 500MiB).")
@click.option("--prefix", help="Shard name prefix [default: the manifest's name]: PREFIX-000000.tar ...")
@click.option(
    "--root",
    type=click.Path(exists=True, file_okay=False),
    help="Folder video paths are relative to [default: the CSV's folder].",
)
@click.option("--split", help="Keep only manifest rows with this 'split' value.")
@click.option("--classes", type=_FILE, help="Class list [default: inferred from the manifest].")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def pack_wds_cmd(manifest: str, out: str, shard_size: str, prefix: Optional[str], root: Optional[str],
                 split: Optional[str], classes: Optional[str], no_progress: bool) -> None:
    """Write a manifest's videos into WebDataset tar shards (video bytes unchanged, plus .cls and .json).

    Each shard is written to a temp file and renamed, so an interrupted pack leaves only whole
    shards; the same command again writes the rest. The last line printed is a JSON summary whose
    "pattern" is what --wds / --train-wds take. Example:

    \b
      sfa-cache pack-wds --manifest data/train.csv --out shards --shard-size 1GB
      sfa-cache stage1 --train-wds 'shards/train-{000000..000012}.tar' ...
    """
    from sfa_cache.data.inputs import input_name
    from sfa_cache.data.manifest import infer_classes, read_classes_file, read_manifest
    from sfa_cache.data.pack_wds import pack_wds
    from sfa_cache.report import parse_size

    class_list = read_classes_file(classes) if classes else infer_classes(manifest)
    m = read_manifest(manifest, class_list, root, split)
    result = pack_wds(m, out, parse_size(shard_size), prefix=prefix or input_name(manifest), progress=not no_progress)
    if result.missing:
        click.echo(f"warning: {len(result.missing)} videos not found, listed in {Path(out) / 'missing.txt'}", err=True)
    click.echo(json.dumps({"out": str(result.out), "pattern": result.pattern, "shards": result.shards,
                           "samples": result.samples, "shards_written": result.shards_written,
                           "missing": len(result.missing)}))
