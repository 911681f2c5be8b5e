"""Stage 2's feeds from finished caches: the epoch order and draws (epochs), the clip-by-clip
dataset (dataset), a resident copy (resident), streamed shards (streaming), where the features
live (placement), copies shared across processes (shared) and the feeds built from them (stage2).

Reads caches through `sfa_cache.cache.format`; never imports `extraction`. Imports nothing here,
so the command line can read the placement vocabulary without loading torch.
"""
