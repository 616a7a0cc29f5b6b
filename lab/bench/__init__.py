"""Benchmarks that measure the lab against references in the same run."""
