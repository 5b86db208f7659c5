"""Benchmark scripts and the reference models/inputs they share with the tests (not installed)."""
