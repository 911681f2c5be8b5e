"""The feature cache on disk: where files live (layout), what the JSON indices hold (index), the
compressors (codecs), writing and reading shards (write, read, fast_read), verify and export.

The lowest of the three cache subpackages: it imports neither `extraction` nor `feeds`. Imports
nothing here, so the command line can read the vocabularies in `layout` and `codecs` without
loading torch or zarr.
"""
