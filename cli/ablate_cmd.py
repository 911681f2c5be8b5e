"""`sfa-cache ablate`."""

from __future__ import annotations

import click


@click.command("ablate")
@click.option(
    "--grid", type=click.Path(exists=True, dir_okay=False), required=True, help="Grid file (.json, or .yaml)."
)
@click.option(
    "--out", type=click.Path(file_okay=False), required=True, help="Folder for one run per entry and the result tables."
)
@click.option(
    "--devices", help="Comma-separated devices, one entry at a time on each [default: every visible GPU, else cpu]."
)
def ablate_cmd(grid: str, out: str, devices: str | None) -> None:
    """Run a list or product of Stage-2 settings against one cache; tabulate the results.

    Writes OUT/<entry>/ (a train-temporal run each), OUT/results.csv and OUT/results.md
    (top-1, top-5, train time, peak memory, parameters trained) and OUT/results.png (top-1
    against parameters trained, training seconds and frames). A rerun skips finished
    entries. Example grid (paper Table 1, frozen spatial rows): examples/grids/table1.json.
    """
    from sfa_cache.pipelines.ablate import COLUMNS, run_ablation

    rows = run_ablation(grid, out, devices=devices.split(",") if devices else None)
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        metrics = "  ".join(f"{c} {r[c]:.2f}" if isinstance(r[c], float) else f"{c} {r[c]}"
                            for c in COLUMNS[2:7] if r.get(c) is not None)
        click.echo(f"{r['name']:<{width}}  {r['status']}  {metrics}")
