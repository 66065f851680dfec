"""Benchmarks (`make bench`): measurements to report, not timed tests."""
