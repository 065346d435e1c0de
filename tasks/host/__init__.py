"""Reads the machine: installed packages, toolchain fingerprint, GPU probe, settings, the HF cache."""
