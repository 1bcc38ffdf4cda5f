"""Watching the Triton launchers, for the kernel tests: every aten op a launcher issues and every
kernel it launches (through inception_fast.backends.triton._common.launch), a stand-in for the
autotuner's benchmark, a measured choice whose stand-in timer decides the winner, and NaN-filled
allocations for a launcher's outputs."""

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


def forcing_chooser(winner: str):
    """A MeasuredChoice that measures on CPU, whose stand-in timer makes the candidate named
    ``winner`` the fastest (every candidate still runs, so each one's parity check runs too).
    ``chooser.measuring_launches``: the Triton launches each timed run made, in order."""
    from inception_fast import choices
    from inception_fast.backends.triton import _common

    def timer(fn, device, repeats):
        before = _common.launch_count()
        try:
            fn()
        finally:
            chooser.measuring_launches.append(_common.launch_count() - before)
        return 1.0 if getattr(timer, "name", None) == winner else 2.0

    chooser = choices.MeasuredChoice(measure_on=("cpu",), timer=timer)
    chooser.measuring_launches = []
    real_pick = chooser.pick

    def pick(key, device, runners):  # lets the timer know whose run it is timing
        named = {}
        for name, run in runners.items():

            def timed(name=name, run=run):
                timer.name = name
                return run()

            named[name] = timed
        return real_pick(key, device, named)

    chooser.pick = pick
    return chooser


def poison_empty(monkeypatch, module) -> list:
    """Makes every floating-point ``torch.empty`` of launcher module ``module`` start as NaN (an
    element its kernel does not write then fails the comparison); returns the list the poisoned
    tensors are recorded in, so a test can check poisoning happened."""
    import torch
    from unwritten_reads import poison

    real_empty = torch.empty
    made = []

    def nan_empty(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        if t.is_floating_point():
            made.append(poison(t))
        return t

    monkeypatch.setattr(module.torch, "empty", nan_empty)
    return made
