"""Benchmarks of jobrunner against baselines measured in the same run (see README.md)."""
