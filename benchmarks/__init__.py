"""Benchmarks of inception_fast (run by explicit path; see benchmarks/README_SECTION.md).

A package, so that pytest imports ``benchmarks.conftest`` and ``benchmarks.common``
under names that cannot clash with tests/conftest.py.
"""
