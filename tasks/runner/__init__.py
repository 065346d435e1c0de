"""Runs things: the batch, the compile pool, supervision, target commits, the fallback, the nvcc shim."""
