"""Benchmarks of inception_fast (run by explicit path; see the README's Benchmarks section).

A package, so that pytest imports ``benchmarks.conftest`` and the helper package
``benchmarks.helpers`` under names that cannot clash with tests/conftest.py.
"""
