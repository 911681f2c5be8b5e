"""The run directory: its one owner, as `cache/layout.py` is a cache's.

    RUN/config.json        the record (record.py: RunRecord; kind, model, settings, classes, versions)
    RUN/classes.json       the class names (record.py)
    RUN/model.safetensors  the weights, spatial fingerprint in the header (weights.py)
    RUN/train_state.pt     the resumable state, written last in an epoch (progress.py)
    RUN/metrics.jsonl      one record per logged step and per epoch (progress.py)
    RUN/failures.jsonl     clips that could not be loaded (progress.py)
    RUN/best/, RUN/ema/    the best epoch and the EMA weights, run directories of their own (copies.py)

Claiming a folder for a run (new, empty, or resumable with the same settings) is claim.py's.
Pipelines and `train/` reach a run's files only through this package.
"""
