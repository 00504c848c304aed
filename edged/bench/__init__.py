"""Benchmarks users run on their own board (`edged bench ...`): programs that print tables and write JSON."""
