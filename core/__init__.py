"""Feature Bridge compute core: pure torch/numpy/polars compute and I/O (no UI imports)."""
