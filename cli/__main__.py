"""`python -m sfa_cache.cli ...` (what torchrun launches)."""

from sfa_cache.cli.main import cli

cli(prog_name="sfa-cache")
