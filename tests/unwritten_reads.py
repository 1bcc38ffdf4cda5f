"""Reads of memory nothing wrote, caught under the Triton interpreter (conftest applies it to every
test there; ``@pytest.mark.reads_unwritten`` opts a test out).

Every float32 and float16 CPU tensor that the Triton launchers (``inception_fast.backends.triton``)
allocate with ``torch.empty``, ``torch.empty_like`` or ``torch.empty_strided``, and every block
output, scratch and pre-BN buffer (``geometry.empty_outputs`` / ``empty_pre_bn``), starts filled
with a NaN whose payload no computation produces (``POISON``; int32 and int64 allocations start at a
count no kernel reaches, ``INT_FILL``); and every load the interpreter runs
fails when one of its active lanes (mask true) returns that bit pattern.  So a kernel that reads a
workspace slot, a scratch row or an alignment gap before anything stored there fails at the load,
even where the garbage would have been masked out later or landed somewhere no test compares (a
GPU would read whatever the allocator left there).  Tensors that need gradients, and tensor
subclasses (fake tensors), are left as they come.  Only the launcher modules see the poisoning
allocators (their ``torch`` is a stand-in), so code that torch.compile traces, and torch's own
tables of its factory functions, never meet them.
"""

from __future__ import annotations

import numpy as np
import torch

POISON = {torch.float32: (torch.int32, 0x7FA5A5A5), torch.float16: (torch.int16, 0x7DA5)}
# Integer allocations (split-K and pool counters, sync flags) have no bit pattern a load could tell
# from a value: they start holding a count no kernel reaches, so a counter nothing zeroed makes the
# kernel's arithmetic wrong instead of happening to start at 0.
INT_FILL = {torch.int32: 0x5A5A5A5A, torch.int64: 0x5A5A5A5A5A5A5A5A}
_NUMPY = {
    np.dtype(np.float32): (np.uint32, POISON[torch.float32][1]),
    np.dtype(np.float16): (np.uint16, POISON[torch.float16][1]),
}


# What the loads of the current test found (install() empties it; conftest fails a test that
# leaves anything here, so a hit inside a measured choice, which drops the failing candidate and
# goes on, still fails the test).
HITS: list = []


class UnwrittenRead(AssertionError):
    """A kernel's load returned poison: memory nothing wrote."""


def poison(t: torch.Tensor) -> torch.Tensor:
    """Fills ``t`` (any device) with POISON where its dtype has one, INT_FILL for an integer one, else
    with NaN: for the tests' own NaN-filled buffers, which then still compare as NaN and still trip
    the load check.  The
    fill is invisible to tests that record the aten ops a launcher issues."""
    from torch.utils._python_dispatch import _disable_current_modes

    with _disable_current_modes(), torch.no_grad():
        if t.dtype in POISON:
            as_int, bits = POISON[t.dtype]
            t.view(as_int).fill_(bits)
        elif t.dtype in INT_FILL:
            t.fill_(INT_FILL[t.dtype])
        else:
            t.fill_(float("nan"))
    return t


def guarded(numel: int, dtype: torch.dtype, device, bands: list, guard: int = 1 << 14) -> torch.Tensor:
    """A flat buffer of ``numel`` elements between two poisoned guard bands of ``guard`` elements,
    which are appended to ``bands`` as (before, after) for ``assert_bands_untouched``: a kernel's
    store past its buffer lands in a band (on a GPU: in someone else's memory)."""
    flat = poison(torch.empty(numel + 2 * guard, dtype=dtype, device=device))
    bands.append((flat[:guard], flat[-guard:]))
    return flat[guard:-guard]


def nan_gapped(t: torch.Tensor, step: int = 2) -> torch.Tensor:
    """1-D ``t`` as a view of every ``step``-th element of a buffer holding NaN in the gaps: a kernel
    that reads it as if contiguous reads the NaN."""
    buffer = torch.full((t.numel(), step), float("nan"), dtype=t.dtype, device=t.device)
    buffer[:, 0] = t
    gapped = buffer[:, 0]
    assert gapped.stride(0) == step and torch.equal(gapped, t)
    return gapped


def assert_bands_untouched(bands: list) -> None:
    """Every guard band of ``guarded`` still holds its poison, bit for bit."""
    from inception_fast.testing import float_bits

    assert bands, "no guarded buffer was allocated"
    for before, after in bands:
        want = float_bits(poison(torch.empty_like(before)))
        assert torch.equal(float_bits(before), want), "a store before the buffer"
        assert torch.equal(float_bits(after), want), "a store past the buffer"


def _poison(t):
    if (
        type(t) is torch.Tensor
        and t.device.type == "cpu"
        and not t.requires_grad
        and (t.dtype in POISON or t.dtype in INT_FILL)
    ):
        poison(t)
    return t


class _PoisoningTorch:
    """``torch`` as a launcher module sees it: the same, but with poisoning allocators."""

    def __getattr__(self, name):
        return getattr(torch, name)

    def empty(self, *args, **kwargs):
        return _poison(torch.empty(*args, **kwargs))

    def empty_like(self, *args, **kwargs):
        return _poison(torch.empty_like(*args, **kwargs))

    def empty_strided(self, *args, **kwargs):
        return _poison(torch.empty_strided(*args, **kwargs))


def install(monkeypatch) -> None:
    """Poisons the allocators and checks the interpreter's loads for the rest of the test."""
    import importlib
    import pkgutil

    from triton.runtime import interpreter

    from inception_fast import geometry
    from inception_fast.backends import triton as triton_backend

    HITS.clear()
    builder = interpreter.interpreter_builder
    load = type(builder).create_masked_load

    def checked_load(ptrs, mask, other, *args, **kwargs):
        out = load(builder, ptrs, mask, other, *args, **kwargs)
        pattern = _NUMPY.get(out.data.dtype)
        if pattern is not None:
            hit = (out.data.view(pattern[0]) == pattern[1]) & np.broadcast_to(mask.data, out.data.shape)
            if hit.any():
                HITS.append(
                    f"a load read memory nothing wrote: {int(hit.sum())} of {hit.size} lanes hold the "
                    f"poison of an uninitialised {out.data.dtype} allocation (tests/unwritten_reads.py)"
                )
                raise UnwrittenRead(HITS[-1])
        return out

    monkeypatch.setattr(builder, "create_masked_load", checked_load)
    stand_in = _PoisoningTorch()
    for info in pkgutil.iter_modules(triton_backend.__path__, triton_backend.__name__ + "."):
        module = importlib.import_module(info.name)
        if getattr(module, "torch", None) is torch:
            monkeypatch.setattr(module, "torch", stand_in)
    for name in ("empty_outputs", "empty_pre_bn"):
        real = getattr(geometry, name)
        monkeypatch.setattr(geometry, name, lambda *a, _real=real, **k: _poisoned(_real(*a, **k)))


def _poisoned(result):
    return tuple(_poison(t) for t in result) if isinstance(result, tuple) else _poison(result)
