"""``inception_fast.precompile(module, *inputs)``: every Triton binary a forward will need, compiled
at once in worker processes before that forward.

    model = FusedGoogLeNet.from_torchvision(tv).cuda().eval()
    inception_fast.precompile(model, x)      # or fuse()d networks; optional for FusedGoogLeNet
    logits = model(x)

A cold first forward otherwise compiles 160-200 binaries (each measured candidate's autotune configs)
one kernel at a time, as each first launches, on threads that share the GIL.  Here one
compile-only pass of ``module(*inputs)`` (inception_fast.compile_only: no Triton kernel runs, every
config of every candidate is recorded; of a choice the choice store holds, its stored candidate's)
learns them all, and backends/triton/compile_pool compiles the ones not already in Triton's cache
on disk, all at once, one worker process per CPU.  The forward
then loads each binary from the cache.  With ``wait=False`` the call returns once the jobs are
handed out; the forward then waits for each binary where its kernel first launches, so its GPU
benchmarks overlap the compiles still running (FusedGoogLeNet with backend auto defers instead,
below).  The workers stop a few seconds after their last job.

FusedGoogLeNet precompiles by itself (``wait=False``) on its first forward per input shape, dtype,
device and layout where that forward may run Triton kernels (backend auto, triton, hopper or
hopper_tma2, a CUDA input, every part in eval mode, no gradients), and CapturedForward before it
captures.  INCEPTION_FAST_PRECOMPILE=0 turns the workers off: then neither runs a pass (an
explicit ``precompile`` still runs one, and only counts), and the autotuners compile each shape's
configs on threads as it first launches.

Tuning deferred (FusedGoogLeNet with backend auto, INCEPTION_FAST_DEFER_TUNING, default on; a
named backend runs its own kernels, which wait for their binaries): while the workers still
compile binaries a precompile handed them for an input, that model's forwards on it run inside
``choices.measuring_deferred()``: every measured choice not measured yet takes its trusted
candidate (ATen's computation, the torch backend's blocks), which compiles nothing, and keeps
nothing, so a cold process has its first result after its imports, the compile-only pass (a
forward's host time, and one run of each candidate that is not a Triton kernel) and a forward of
ATen's, instead of after every compile.  The first forward after the workers are done measures
(its autotune benchmarks and choices: seconds, once), and the later ones run what it chose.  The
results before and after agree within the tolerance table, not bit for bit.  ``precompile(model,
x)`` (``wait=True``) ahead of the first forward, or INCEPTION_FAST_DEFER_TUNING=0, makes the first
forward the measuring one; ``compiles_pending(model, x)`` says how many of its binaries are
still compiling.  A CUDA graph captured before that measuring forward (not CapturedForward, which
waits for the workers and runs its warm-up eagerly) captures ATen's computations.
INCEPTION_FAST_AUTO=static never defers.

Apart from that deferral, nothing here changes what is computed: the pass's outputs are
discarded, a binary that could not be compiled ahead is compiled by its launch.  With a warm
cache the pass costs a forward's host time and the GPU time of its non-Triton candidates (ATen,
cuDNN, the CUDA extension), which it runs once each.
"""

from __future__ import annotations

import logging
import os
import weakref

import torch
from torch import nn

from .caches import LRUDict
from .choices import ContextLost, measuring_deferred, static_mode
from .compile_only import compile_only, compiling_only
from .reference import GoogLeNet, Inception

__all__ = ["precompile", "compiles_pending", "ENV_DEFER"]

# INCEPTION_FAST_DEFER_TUNING=0: FusedGoogLeNet's forwards wait for their binaries and measure at
# once, instead of running ATen's computations while the workers compile.
ENV_DEFER = "INCEPTION_FAST_DEFER_TUNING"

# Per module: the inputs (device, dtype, shape, strides of each) precompiled for, most recent
# last, each with the futures of the binaries its precompile left to the workers (emptied once
# they are all done).
_DONE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _key(inputs) -> tuple:
    return tuple((t.device, t.dtype, tuple(t.shape), t.stride()) for t in inputs)


def _pool():
    """backends/triton/compile_pool, or None where Triton cannot be imported."""
    try:
        from .backends.triton import compile_pool
    except Exception:
        return None
    return compile_pool


def precompile(module: nn.Module, *inputs: torch.Tensor, wait: bool = True) -> dict:
    """Compiles, ahead of ``module(*inputs)``, the Triton binaries that forward would compile (see
    the module's docstring).  ``module`` and all its parts must be in eval mode (the pass must not
    update BatchNorm's running statistics from outputs it never computed); its forward hooks see
    the pass too.  Returns {"launches": Triton launches the pass met, "binaries": binaries it
    would compile, "on_disk": of those already in Triton's cache, "submitted": compiling in
    workers (handed out now, or by an earlier call whose workers still have them), "compiled": of
    those compiled (only with ``wait``)}.  With CPU inputs (unless Triton's interpreter runs them,
    TRITON_INTERPRET=1), or without Triton, there is nothing to compile: all counts 0; with the
    workers off (INCEPTION_FAST_PRECOMPILE=0) nothing is submitted.  A module of this package
    (FusedGoogLeNet, a fused block) refuses a bad input first, with the error its forward gives;
    a forward that fails in the compile-only pass raises RuntimeError saying so."""
    _check_inputs("precompile", module, inputs)
    training = training_part(module)
    if training is not None:
        raise ValueError(
            f"precompile runs a compile-only forward, and {training} is in train mode: its BatchNorm "
            "would update running statistics from outputs never computed; call module.eval() first"
        )
    if len(inputs) == 1 and isinstance(module, (GoogLeNet, Inception)) and hasattr(module, "check_input"):
        module.check_input(inputs[0])
    counts = {"launches": 0, "binaries": 0, "on_disk": 0, "submitted": 0, "compiled": 0}
    pool = _pool()
    interpreted = pool is not None and _interpreted()
    if pool is None or not (interpreted or any(t.is_cuda for t in inputs)):
        return counts
    if torch.compiler.is_compiling() or any(t.is_cuda for t in inputs) and torch.cuda.is_current_stream_capturing():
        raise RuntimeError("precompile cannot run while torch.compile traces or a CUDA graph captures")
    try:
        with compile_only() as recorded, torch.no_grad():
            module(*inputs)
    except ContextLost:  # a lost CUDA context (a candidate run in the pass, no Triton kernel): as it is
        raise
    except Exception as exc:
        raise RuntimeError(
            "precompile: the compile-only pass of the forward failed (no Triton kernel computes anything "
            f"in it, so a forward that reads its own values cannot be precompiled): {type(exc).__name__}: {exc}"
        ) from exc
    futures = pool.submit(recorded.jobs)
    _DONE.setdefault(module, LRUDict())[_key(inputs)] = futures
    counts.update(
        launches=len(recorded.launches),
        binaries=len({job for job, _ in recorded.jobs}),
        on_disk=len({job for job, on_disk in recorded.jobs if on_disk}),
        submitted=len(futures),
    )
    if futures:  # a long job: say so (the "inception_fast" logger, INFO)
        logging.getLogger("inception_fast").info(
            "precompile: %d Triton binaries compiling in worker processes (%d already in Triton's cache)",
            counts["submitted"],
            counts["on_disk"],
        )
    if wait:
        counts["compiled"] = pool.wait(futures)
    return counts


def _check_inputs(caller: str, module, inputs: tuple) -> None:
    """TypeError unless ``module`` is an nn.Module and ``inputs`` one or more tensors."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"{caller} expects an nn.Module, got {type(module).__name__}")
    bad = [type(t).__name__ for t in inputs if not isinstance(t, torch.Tensor)]
    if bad or not inputs:
        raise TypeError(f"{caller} expects the forward's input tensors, got {', '.join(bad) or 'none'}")


def training_part(module: nn.Module):
    """The name of the first part of ``module`` in train mode ("the module" itself), or None."""
    for name, m in module.named_modules():
        if m.training:
            return f"{type(m).__name__} {name!r}" if name else "the module"
    return None


def workers_on() -> bool:
    """Whether a precompile can hand anything to workers here (Triton importable, workers on)."""
    pool = _pool()
    return pool is not None and pool.enabled()


def _interpreted() -> bool:
    from .backends.triton import _common

    return _common.INTERPRET


def compiles_pending(module: nn.Module, *inputs: torch.Tensor) -> int:
    """How many binaries that a precompile of ``module`` for ``inputs`` handed to the workers are
    not compiled yet (0 where none were, or none is left).  While it is above 0, FusedGoogLeNet's
    eval forwards on such inputs without gradients defer their measuring where deferring applies
    (backend auto, INCEPTION_FAST_DEFER_TUNING on; see the module's docstring)."""
    _check_inputs("compiles_pending", module, inputs)
    done = _DONE.get(module)
    futures = done.get(_key(inputs)) if done is not None else None
    return sum(not f.done() for f in futures) if futures else 0


def _defer_enabled() -> bool:
    """INCEPTION_FAST_DEFER_TUNING is on, and INCEPTION_FAST_AUTO is not static (which measures
    nothing, and runs its first candidates from the first forward on)."""
    off = os.environ.get(ENV_DEFER, "1").strip().lower() in ("0", "off", "false", "no")
    return not off and not static_mode()


def forward_after_precompile(module: nn.Module, triton_allowed: bool, x: torch.Tensor, forward, defer: bool = False):
    """``forward(x)``, FusedGoogLeNet's forward, precompiled first (``wait=False``) where ``x`` is
    new to ``module`` (shape, dtype, device, strides) and the forward may run Triton kernels: a
    CUDA input, every part in eval mode, no gradients, not traced or captured or itself a
    compile-only pass, Triton kernels allowed (``triton_allowed``: the model's backend runs
    them), workers on.  With ``defer`` (backend auto: every Triton kernel is a measured
    candidate), while binaries that precompile handed out are still compiling, the forward runs
    with its measuring deferred (INCEPTION_FAST_DEFER_TUNING, see the module's docstring)."""
    if not _may_precompile(triton_allowed, x):
        if defer and _capturing_unmeasured(module, x):
            # A CUDA graph captured before anything was measured: ATen's computations, for good
            # (an unmeasured choice's first candidate may be a kernel never checked on this shape).
            with measuring_deferred():
                return forward(x)
        return forward(x)
    done = _DONE.get(module)
    key = _key((x,))
    if done is not None and key in done:
        return _forward_deferred(done, key, forward, x, defer)
    if not workers_on() or _interpreted() or training_part(module) is not None:
        return forward(x)
    done = _DONE.setdefault(module, LRUDict())
    done[key] = []  # once, even where the pass fails
    try:
        precompile(module, x, wait=False)
    except ContextLost:
        raise
    except Exception:  # a precompile that fails only leaves the compiles to the forward
        pass
    defer = defer and _defer_enabled()
    if defer and done.get(key):
        logging.getLogger("inception_fast").info(
            "precompile: until the workers are done, forwards on input %s run ATen's computations and "
            "measure nothing (%s=0: wait for them)",
            tuple(x.shape),
            ENV_DEFER,
        )
    return _forward_deferred(done, key, forward, x, defer)


def _may_precompile(triton_allowed: bool, x) -> bool:
    """Whether a FusedGoogLeNet forward on ``x`` may precompile or defer (forward_after_precompile)."""
    return not (
        torch.compiler.is_compiling()  # first: torch.compile traces nothing below
        or not triton_allowed
        or not isinstance(x, torch.Tensor)
        or not x.is_cuda
        or torch.is_grad_enabled()
        or compiling_only()
        or torch.cuda.is_current_stream_capturing()
    )


def _capturing_unmeasured(module: nn.Module, x) -> bool:
    """Whether ``x`` is a CUDA input captured into a CUDA graph, with deferring on, after a
    precompile handed binaries to the workers for it and before the forward that measures (the
    first eligible one after the workers are done: it forgets the futures)."""
    if torch.compiler.is_compiling() or not isinstance(x, torch.Tensor) or not x.is_cuda:
        return False
    if not torch.cuda.is_current_stream_capturing() or not _defer_enabled():
        return False
    done = _DONE.get(module)
    return bool(done is not None and done.get(_key((x,))))


def _forward_deferred(done: LRUDict, key: tuple, forward, x: torch.Tensor, defer: bool):
    """``forward(x)``, inside ``measuring_deferred()`` while binaries of the precompile for ``key``
    are still compiling (with ``defer``, and deferring on); the first call after they are done
    forgets them (and, where it could have deferred, says it measures)."""
    futures = done.get(key)
    if not futures:
        return forward(x)
    defer = defer and _defer_enabled()
    if any(not f.done() for f in futures):
        if not defer:
            return forward(x)
        with measuring_deferred():
            return forward(x)
    done[key] = []
    if defer:
        logging.getLogger("inception_fast").info(
            "precompile: the workers are done; this forward on input %s measures its choices", tuple(x.shape)
        )
    return forward(x)
