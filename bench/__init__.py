"""Benchmarks behind `make bench` (`python -m bench [name ...]`); never run by the test suite.

Each benchmark is a module `bench/<name>.py` listed in `bench.__main__.BENCHMARKS` with a
`run() -> None` that measures, prints, and writes its own section of docs/benchmarks.md
through `bench.report.write_section`.
"""
