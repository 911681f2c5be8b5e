"""The extraction engine: decode clips in worker processes (decode_jobs), run the spatial model
over fixed frame batches (frame_batches, extractor) and write shards through the builder.

Writes caches in the on-disk format of `sfa_cache.cache.format`; never imports `feeds`.
"""
