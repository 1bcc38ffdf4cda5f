"""Watching the Triton launchers, for the kernel tests: every aten op a launcher issues and every
kernel it launches (through inception_fast.backends.triton._common.launch), and a stand-in for
the autotuner's benchmark."""

from __future__ import annotations


def observe_launches(fn, monkeypatch):
    """Runs ``fn()``; returns (its result, the aten ops it issued, the kernels it launched).

    The launches themselves run outside the recording: under the interpreter they copy tensors to
    and from numpy (host-side, not kernels of the op), and on a GPU the autotuner allocates.
    """
    from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

    from inception_fast.backends.triton import _common

    aten_ops, launched = [], []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            aten_ops.append(str(func))
            return func(*args, **(kwargs or {}))

    real = _common.launch

    def observed(kernel, grid, *args, **kwargs):
        launched.append(kernel)
        with _disable_current_modes():
            real(kernel, grid, *args, **kwargs)

    monkeypatch.setattr(_common, "launch", observed)
    with Record():
        result = fn()
    return result, aten_ops, launched


def counting_do_bench():
    """(do_bench, calls): a stand-in for the autotuner's benchmark that runs the kernel once and
    reports alternating times, and the list it appends to per call."""
    calls = []

    def do_bench(fn, quantiles=None, **_):
        fn()
        calls.append(1)
        return [float(len(calls) % 2 + 1)] * 3

    return do_bench, calls
