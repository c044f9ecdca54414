"""Benchmarks: training and data pipeline timings, a step's cost; only scripts import these."""
