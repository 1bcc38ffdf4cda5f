"""Measured choices: the fastest of interchangeable computations, per shape, like cudnn.benchmark.

* ``MeasuredChoice``: times each candidate the first time it sees a key and keeps the fastest
  (bounded, see ``inception_fast.caches``); ``measuring_allowed`` is the one test of whether a
  call may measure now.
* ``AUTO`` (``backend="auto"``): per Inception block shape, the fastest available backend.
* ``STEM_CHOICE``, ``CONV_RELU_CHOICE``, ``POOL_CHOICE``: FusedGoogLeNet's stages outside the
  blocks (the stem's first conv, conv2/conv3 with bias+ReLU, the max pools; see
  ``inception_fast.stages``).

Keys are NamedTuples (``AutoKey``, ``StemKey``, ``ConvReluKey``, ``PoolKey``), so benchmarks and
tests read them by field.  Where nothing is measured (off CUDA, while capturing a CUDA graph or
tracing, with ``INCEPTION_FAST_AUTO=static``) each choice takes its first candidate.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional

import torch

from . import backends as _backends
from .caches import LRUDict, short_error

__all__ = [
    "Choice",
    "MeasuredChoice",
    "AutoBackend",
    "AUTO",
    "AUTO_STATIC_ORDER",
    "ENV_AUTO",
    "AutoKey",
    "StemKey",
    "ConvReluKey",
    "PoolKey",
    "STEM_CHOICE",
    "CONV_RELU_CHOICE",
    "POOL_CHOICE",
    "fp32_precision",
]

# Order used where nothing is measured, and the tie-break (the order of the H100 results: cuda
# was fastest at batch 1 and 64 and in 7 of the 9 blocks at batch 256).  CUDA only: off CUDA,
# auto is the torch backend, so the C++ CPU kernels ("cpp") are no candidate.
AUTO_STATIC_ORDER = ("cuda", "triton", "torch")
# INCEPTION_FAST_AUTO=static: never measure; every measured choice takes its first candidate.
ENV_AUTO = "INCEPTION_FAST_AUTO"


@dataclass(frozen=True)
class Choice:
    name: str
    seconds: dict = field(default_factory=dict)  # candidate -> median seconds of one call
    errors: dict = field(default_factory=dict)  # candidate -> why it could not run (one short line)


def _time_call(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    from .timing import time_fn

    # The warm-up compiles and autotunes (Triton) before anything is timed.  CUDA events time
    # the current device's stream, so make the tensors' device the current one.
    with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
        return time_fn(fn, device=device, warmup=2, repeats=repeats).median_s


def _dispatch_mode_active() -> bool:
    try:
        from torch.utils._python_dispatch import _get_current_dispatch_mode
    except ImportError:  # a private helper; without it, assume no mode
        return False
    return _get_current_dispatch_mode() is not None


def fp32_precision(dtype: torch.dtype) -> Optional[bool]:
    """cuDNN's TF32 flag for fp32 work (it changes what the candidates compute), else None."""
    return torch.backends.cudnn.allow_tf32 if dtype == torch.float32 else None


class MeasuredChoice:
    """Per key, the fastest of interchangeable computations, measured once, like cudnn.benchmark.

    ``pick(key, device, runners)`` gets the candidates as {name: zero-argument callable} in order
    of preference.  The first time it sees ``key`` it times each (``repeats`` runs after a
    warm-up; a candidate that raises is skipped and its error kept) and remembers the fastest for
    the rest of the process.  It measures nothing, and returns the first candidate, where it
    cannot or should not (see ``can_measure``).  The candidates agree within the tolerance table,
    not bit for bit.  It keeps the choices of the ``inception_fast.caches.cache_capacity()`` most
    recently used keys; errors are kept short.
    """

    def __init__(
        self,
        measure_on=("cuda",),
        repeats: int = 5,
        timer: Callable[[Callable[[], object], torch.device, int], float] = _time_call,
    ) -> None:
        self.measure_on = tuple(measure_on)
        self.repeats = repeats
        self.timer = timer
        self._choices = LRUDict()

    def choices(self) -> dict:
        """{key: Choice} measured so far in this process (the most recently used ones)."""
        return dict(self._choices)

    def clear(self) -> None:
        self._choices.clear()

    def lookup(self, key):
        """The name chosen for ``key``, or None before it was measured: callers check this first
        and build their runners only on a miss."""
        hit = self._choices.get(key)
        return None if hit is None else hit.name

    def applies(self, device: torch.device, *tensors: torch.Tensor) -> bool:
        """Whether a call on ``device`` goes through this choice at all: the device is one it
        measures on, nothing is being traced, and no tensor needs a gradient (the candidates are
        inference kernels).  Elsewhere callers run their first candidate directly."""
        if device.type not in self.measure_on or torch.compiler.is_compiling():
            return False
        return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))

    def can_measure(self, device: torch.device) -> bool:
        """Whether a miss may be measured now: not off the ``measure_on`` devices, not with
        INCEPTION_FAST_AUTO=static, not while tracing or under a dispatch mode (FlopCounterMode,
        fake tensors) that would see the timing runs, not while capturing a CUDA graph."""
        if device.type not in self.measure_on or os.environ.get(ENV_AUTO, "").strip().lower() == "static":
            return False
        if torch.compiler.is_compiling() or _dispatch_mode_active():
            return False
        return not (device.type == "cuda" and torch.cuda.is_current_stream_capturing())

    def pick(self, key, device: torch.device, runners: dict) -> str:
        hit = self.lookup(key)
        if hit is not None:
            return hit
        names = list(runners)
        if len(names) == 1 or not self.can_measure(device):
            return names[0]
        seconds, errors = {}, {}
        for name in names:
            try:
                with torch.no_grad():
                    seconds[name] = self.timer(runners[name], device, self.repeats)
            except Exception as exc:  # e.g. a tile that does not fit this GPU: measure the others
                errors[name] = short_error(exc)
        if not seconds:
            detail = "; ".join(f"{n}: {e}" for n, e in errors.items())
            raise RuntimeError(f"every candidate failed for {key} ({detail})")
        best = min(seconds, key=lambda n: (seconds[n], names.index(n)))
        self._choices[key] = Choice(best, seconds, errors)
        return best


class AutoKey(NamedTuple):
    """AUTO's key: one block shape."""

    device: str
    dtype: torch.dtype
    shape: tuple  # the input's (N, C, H, W)
    w_red: tuple  # packed weight shapes
    w_pool: tuple
    w3: tuple
    w5: tuple
    precision: Optional[tuple]  # fp32: (cuDNN's TF32 flag, matmul precision), else None


class AutoBackend(MeasuredChoice):
    """``backend="auto"``: per block shape, the available backend of ``order`` measured fastest.

    Off the devices it measures on the answer is "torch".  A named backend is the reproducible
    choice.
    """

    def __init__(self, order=AUTO_STATIC_ORDER, **kwargs) -> None:
        super().__init__(**kwargs)
        self.order = tuple(order)

    def candidates(self, device: torch.device) -> list[str]:
        return [n for n in self.order if _backends.availability(n, device) is None]

    @staticmethod
    def key(x, w_red, w_pool, w3, w5) -> AutoKey:
        # fp32 precision: the kernels follow cuDNN's TF32 flag, the torch backend's GEMMs matmul's.
        precision = (
            (torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision())
            if x.dtype == torch.float32
            else None
        )
        return AutoKey(
            str(x.device),
            x.dtype,
            tuple(x.shape),
            tuple(w_red.shape),
            tuple(w_pool.shape),
            tuple(w3.shape),
            tuple(w5.shape),
            precision,
        )

    def choose(self, x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5) -> str:
        """The backend for this call (``x`` channels_last, weights packed)."""
        if x.device.type not in self.measure_on:
            return "torch"
        key = self.key(x, w_red, w_pool, w3, w5)
        hit = self.lookup(key)
        if hit is not None:  # the common case, first: no availability checks, no closures
            return hit
        names = self.candidates(x.device)
        if not names:
            raise RuntimeError(f"backend 'auto': none of {', '.join(self.order)} runs on {x.device}")
        args = (x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5)
        runners = {name: (lambda f=_backends.get(name).op("inception_block"): f(*args)) for name in names}
        try:
            return self.pick(key, x.device, runners)
        except RuntimeError as exc:
            raise RuntimeError(f"backend 'auto': every backend failed on input shape {tuple(x.shape)}: {exc}") from exc


AUTO = AutoBackend()


class StemKey(NamedTuple):
    """STEM_CHOICE's key: the stem input and the model's first layers."""

    device: str
    dtype: torch.dtype
    shape: tuple
    contiguous: bool  # NCHW-contiguous input (else channels_last or strided)
    tf32: Optional[bool]
    triton_allowed: bool  # the model's backend lets the Triton variants compete
    params: Optional[tuple]  # conv1's and maxpool1's parameters
    onednn: bool = False  # the model's stem runs from oneDNN's prepacked weights ("onednn" competes)


class ConvReluKey(NamedTuple):
    """CONV_RELU_CHOICE's key: one stride-1 conv with bias and ReLU."""

    device: str
    dtype: torch.dtype
    shape: tuple
    stride: tuple  # the input's strides (its layout)
    weight: tuple  # the weight's shape
    padding: int
    tf32: Optional[bool]


class PoolKey(NamedTuple):
    """POOL_CHOICE's key: one max pool."""

    device: str
    dtype: torch.dtype
    shape: tuple
    stride: tuple  # the input's strides (its layout)
    params: tuple  # (kernel, stride, padding, ceil_mode)


# The stem's first conv + ReLU + maxpool1, per input shape and layout (inception_fast.stages).
STEM_CHOICE = MeasuredChoice()
# conv2 and conv3 with bias + ReLU: ATen's three passes against cuDNN's fused op.
CONV_RELU_CHOICE = MeasuredChoice()
# The max pools between stages: ATen's against the Triton pool that writes no argmax.
POOL_CHOICE = MeasuredChoice()
