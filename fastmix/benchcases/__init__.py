"""Benchmark cases per op, shared by ``python -m fastmix bench`` and the pytest-benchmark suites."""
