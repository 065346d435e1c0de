"""The cache root: atomic files, cache layouts, roots, entries, views, records, markers, staleness."""
