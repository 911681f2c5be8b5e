"""`sfa-cache convert kinetics | ssv2 | folders`: public annotation files -> our manifest CSV."""

from __future__ import annotations

import json

import click

from sfa_cache.data import converters

_FILE = click.Path(exists=True, dir_okay=False)
_DIR = click.Path(exists=True, file_okay=False)
_OUT = click.option("--out", type=click.Path(dir_okay=False), required=True,
                    help="Manifest CSV to write (paths relative to its folder); missing videos go to OUT.missing.txt.")
_STRICT = click.option("--strict", is_flag=True, help="Fail (exit 1, nothing written) if any video is missing.")


def _finish(conversion: converters.Conversion, out: str, strict: bool) -> None:
    summary = converters.write_manifest(conversion, out, strict=strict)
    if summary["missing"]:
        click.echo(f"warning: {summary['missing']} videos not found, listed in {summary['missing_report']}", err=True)
    click.echo(json.dumps(summary))


@click.group("convert")
def convert_group() -> None:
    """Turn a dataset's own annotation files into a manifest CSV (path,label[,split]).

    \b
      sfa-cache convert kinetics --csv k400/annotations/train.csv --videos k400/train --out k400/train.csv
      sfa-cache convert ssv2 --labels ssv2/labels.json --annotations ssv2/validation.json \\
          --videos ssv2/videos --out ssv2/val.csv
      sfa-cache convert folders my-videos/ --out my-videos/all.csv
    """


@convert_group.command("kinetics")
@click.option(
    "--csv",
    "csv_path",
    type=_FILE,
    required=True,
    help="Official Kinetics-400/600/700 CSV (label,youtube_id,time_start,time_end,split).",
)
@click.option("--videos", type=_DIR, required=True, help="Folder holding the downloaded clips (searched recursively).")
@click.option("--split", help="Split value to write [default: the CSV's split column].")
@_OUT
@_STRICT
def kinetics_cmd(csv_path: str, videos: str, split: str | None, out: str, strict: bool) -> None:
    """Kinetics: clips named <youtube_id>_<start>_<end>.<ext> (6-digit times) or <youtube_id>.<ext>."""
    _finish(converters.kinetics(csv_path, videos, split), out, strict)


@convert_group.command("ssv2")
@click.option("--labels", type=_FILE, required=True, help="labels.json (template -> index).")
@click.option("--annotations", type=_FILE, required=True, help="train.json or validation.json.")
@click.option("--videos", type=_DIR, required=True, help="Folder of <id>.webm files (searched recursively).")
@click.option("--split", default=None, help="Split value to write [default: train or val, from the file name].")
@_OUT
@_STRICT
def ssv2_cmd(labels: str, annotations: str, videos: str, split: str | None, out: str, strict: bool) -> None:
    """Something-Something v2: labels are the templates without brackets, as in labels.json."""
    split = split or ("val" if "valid" in annotations.lower() else "train")
    _finish(converters.ssv2(labels, annotations, videos, split), out, strict)


@convert_group.command("folders")
@click.argument("root", type=_DIR)
@click.option("--split", default="", help="Split value to write [default: no split column].")
@_OUT
@_STRICT
def folders_cmd(root: str, split: str, out: str, strict: bool) -> None:
    """A folder per class: ROOT/<class>/<video>.<ext>."""
    _finish(converters.folders(root, split), out, strict)
