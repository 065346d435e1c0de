"""The remote cache: per-shape artifacts, the fsspec store, pull and push around a batch."""
