"""The feature cache, in three subpackages that depend in one direction:

    format/      the on-disk format: layout, index, codecs, shard write and read, verify, export
    extraction/  the extraction engine, which writes caches (uses format/)
    feeds/       Stage 2's feeds, which read them (uses format/)

Nothing is re-exported here: import from the subpackage that owns a name.
"""
