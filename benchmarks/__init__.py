"""Speed and memory measurements. Run each as `python -m benchmarks.<name> --help`; the results
are recorded in docs/benchmarks.md with the machine and the command."""
