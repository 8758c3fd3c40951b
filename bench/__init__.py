"""Benchmarks of adaptive_kernels (``python bench/run.py``; see bench/run.py)."""
