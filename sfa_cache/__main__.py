"""`python -m sfa_cache ...`: the `sfa-cache` command."""

from sfa_cache.cli.main import cli

cli(prog_name="sfa-cache")
