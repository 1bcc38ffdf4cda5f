"""Compile-only passes: a forward whose Triton launches record what they would compile instead of
running.

Inside ``with compile_only() as recorded:`` (this thread only) every Triton launch of this package
(``backends/triton/_common.launch`` and the autotuned launches, all configs an autotuner would
benchmark) adds to ``recorded.jobs`` the binaries it would compile (``compile_pool.record``) and to
``recorded.launches`` (kernel name, launch kwargs), and launches nothing; the measured choices
run each of their candidates once (a choice the choice store holds: its stored one), check none,
measure none and remember nothing new; host reads
of a launch's results (the chain's error flag) are skipped.  Every other op runs as usual, on
tensors the skipped launches never wrote, so nothing a compile-only pass returns is a result:
``inception_fast.precompile`` runs one to learn a forward's binaries before compiling them all at
once.  A pass must not update state from its outputs (BatchNorm in train mode): callers run it
in eval mode without gradients.

This module imports nothing from the package, so any layer may ask ``compiling_only()``.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field

__all__ = ["Recorded", "compile_only", "compiling_only", "add_jobs", "add_launch"]

_LOCAL = threading.local()


@dataclass
class Recorded:
    """What a compile-only pass met: ``jobs`` [(compile_pool.Job, on_disk)] in launch order (none
    under the Triton interpreter, which compiles nothing), ``launches`` [(kernel name, kwargs)]."""

    jobs: list = field(default_factory=list)
    launches: list = field(default_factory=list)


@contextlib.contextmanager
def compile_only():
    """A compile-only pass in this thread (see the module's docstring); yields its Recorded."""
    outer = getattr(_LOCAL, "recorded", None)
    _LOCAL.recorded = Recorded()
    try:
        yield _LOCAL.recorded
    finally:
        _LOCAL.recorded = outer


def compiling_only() -> bool:
    """Whether this thread is in a compile-only pass."""
    return getattr(_LOCAL, "recorded", None) is not None


def add_jobs(jobs: list) -> None:
    _LOCAL.recorded.jobs.extend(jobs)


def add_launch(name: str, kwargs: dict) -> None:
    _LOCAL.recorded.launches.append((name, kwargs))
