"""Benchmarks: tools that time training and the data pipeline and count a step's cost. Scripts
run them; no library module imports this package."""
