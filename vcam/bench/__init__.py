"""Benchmarks behind `fluxrt-cam bench ...`: each returns a JSON-able dict and prints a table."""
