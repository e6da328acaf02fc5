"""Benchmarks that print numbers (never timed asserts); results go to docs/benchmarks.md."""
