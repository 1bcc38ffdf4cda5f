"""Measured choices: the fastest of interchangeable computations, per shape, like cudnn.benchmark.

* ``MeasuredChoice``: times each candidate the first time it sees a key and keeps the fastest
  (bounded, see ``inception_fast.caches``); ``can_measure`` is the one test of whether a
  call may measure now.
* ``AUTO`` (``backend="auto"``): per Inception block shape, the fastest available backend.
* ``BN_TRAIN``: the block with train-mode BatchNorm (``inception_block_bn_train``) under
  ``backend="auto"``, per shape: ATen's composition or the Triton kernels.
* ``BACKWARD``: the block's backward under ``backend="auto"``, per shape: the ATen chain (the
  torch backend's) or the Triton backward launches, which compete only after their first result
  matched an fp64 ATen reference by the tolerance table's rule.
* ``STEM_CHOICE``, ``CONV_RELU_CHOICE``, ``POOL_CHOICE``, ``HEAD_CHOICE``: FusedGoogLeNet's stages
  outside the blocks (the stem's first conv, conv2/conv3 with bias+ReLU, the max pools, the
  eval-mode head; see ``inception_fast.stages``); ``CPU_POOL_CHOICE``: the max pools on CPU (also
  the "onednn" blocks' pool branch).
* ``CHAIN_CHOICE``: a run of consecutive blocks and the max pool before it run "separate" (as the
  model runs each stage) or "chained" (op ``inception_chain``: launch 2 of each block and launch 1
  of the next in one persistent Triton launch), per shape (``stages.block_chain``).
* ``CPU_NETWORK_CHOICE``: a FusedGoogLeNet under ``backend="auto"`` on CPU, per small input: the
  whole network on oneDNN's prepacked convolutions, the compiled extension's CPU kernels or the
  torch backend's ops, timed as whole forwards in interleaved rounds (``NetworkChoice``).
* ``FOLD_CHOICE``: a max pool and the block after it (maxpool2/3/4 with 3a/4a/5a) run "separate"
  (the pool, then the block) or "folded" (the Triton block whose launch 1 takes the pool on the fly,
  op ``pooled_inception_block``), per shape (``stages.pool_block``).

Every candidate but the trusted one (ATen: the torch backend, ATen's conv, pool and head) enters
through ``checked_against``: its first run is compared with the trusted computation before it is
timed, and a candidate that disagrees is dropped with the disagreement on record.  A kernel that
is wrong on some GPU or shape is never chosen for being fast.  One that faults (an illegal address:
the CUDA context is then unusable) stops the measuring with ``CandidateFault``, which names it; the
choice store records it, and later processes on that GPU and code measure without it.
INCEPTION_FAST_SKIP_CANDIDATES leaves candidates out by name.

Keys are NamedTuples (``AutoKey``, ``StemKey``, ``ConvReluKey``, ``PoolKey``, ``HeadKey``,
``FoldKey``, ``ChainKey``, ``NetworkKey``), so benchmarks and tests read them by field.  Where
nothing is measured (off the devices a choice measures on, CUDA for all but ``CPU_POOL_CHOICE``
and ``CPU_NETWORK_CHOICE``; while capturing a CUDA graph or tracing; with
``INCEPTION_FAST_AUTO=static``) each choice takes its first candidate,
except that ``AUTO`` under a capture takes the first of ``AUTO_CAPTURE_READY``; inside
``measuring_deferred()`` (FusedGoogLeNet's forwards while the workers compile its binaries,
inception_fast.precompiler) each takes its trusted one and keeps nothing.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional, Sequence

import torch

from . import backends as _backends
from . import choice_store
from .caches import MEASURING, LRUDict, short_error
from .compile_only import compiling_only
from .testing import reduced_precision_bound, rel_error, same_bits

__all__ = [
    "Choice",
    "MeasuredChoice",
    "AutoBackend",
    "AUTO",
    "AUTO_STATIC_ORDER",
    "AUTO_CAPTURE_READY",
    "ENV_AUTO",
    "AutoKey",
    "OpChoice",
    "BackwardChoice",
    "BACKWARD",
    "BnTrainChoice",
    "BN_TRAIN",
    "StemKey",
    "ConvReluKey",
    "PoolKey",
    "HeadKey",
    "FoldKey",
    "ChainKey",
    "STEM_CHOICE",
    "CONV_RELU_CHOICE",
    "POOL_CHOICE",
    "CPU_POOL_CHOICE",
    "HEAD_CHOICE",
    "FOLD_CHOICE",
    "CHAIN_CHOICE",
    "NetworkKey",
    "NetworkChoice",
    "CPU_NETWORK_CHOICE",
    "fp32_precision",
    "ENV_SKIP",
    "skip_entries",
    "EveryCandidateFailed",
    "ContextLost",
    "CandidateFault",
    "checked_against",
    "once",
    "measuring_deferred",
    "deferring",
    "static_mode",
    "capturing",
]

# Order used where nothing is measured, and the tie-break: cuda first since it compiles nothing
# (its kernels are built with the package; Triton's compile on first use), although measured
# triton beat it on every block of the H200 run (2026-12-04, graph replays) and it led only the
# H100's eager block timings (2026-11-27); "hopper" and "hopper_tma2" after the two they may
# replace, so neither is ever the unmeasured default.  "hopper" has both
# launches on TMA, "hopper_tma2" only launch 2 (triton's launch 1): each TMA launch is measured on
# its own, and both are candidates on sm_90+ only (their availability).  CUDA only: off
# CUDA, auto is the torch backend, so the C++ CPU kernels ("cpp") are no candidate.
AUTO_STATIC_ORDER = ("cuda", "triton", "hopper", "hopper_tma2", "torch")
# What auto may run unmeasured while a CUDA graph captures: backends that compile and tune nothing
# at run time.  Triton's kernels may still want compiling and benchmarking, which a capture cannot
# do (its first launch of a shape would end the capture, or fail it).
AUTO_CAPTURE_READY = ("cuda", "torch")
# INCEPTION_FAST_AUTO=static: never measure; every measured choice takes its first candidate.
ENV_AUTO = "INCEPTION_FAST_AUTO"
# INCEPTION_FAST_SKIP_CANDIDATES: candidates that no measured choice offers, comma-separated, each
# "choice:candidate" (the choice by its store name, see _CHOICE_NAMES) or a bare "candidate" (that
# candidate of every choice).  The trusted candidates cannot be skipped.
ENV_SKIP = "INCEPTION_FAST_SKIP_CANDIDATES"
_CHOICE_NAMES: set = set()  # every MeasuredChoice's store_as: what a "choice:" prefix may name
# {store_as: the candidates it declares}: what a "choice:candidate" entry of a choice that declares
# its candidates may name, and (their union) what a bare entry may name.  "<N>" in a declared name
# stands for any number ("pad<N>": the stem's input padded to N channels).
_DECLARED: dict = {}
_TRUSTED: dict = {}  # {store_as: the trusted candidate it declares}: one no entry may name


@functools.lru_cache(maxsize=256)
def _declares(declared: tuple, name: str) -> bool:
    """Whether ``name`` is one of the ``declared`` candidate names (kept per pair: pick asks this
    of every candidate it is offered, on CPU at every forward for the stem's unmeasured forms)."""
    return any(re.fullmatch(re.escape(d).replace("<N>", "[0-9]+"), name) for d in declared)


@dataclass(frozen=True)
class Choice:
    name: str
    seconds: dict = field(default_factory=dict)  # candidate -> median seconds of one call
    errors: dict = field(default_factory=dict)  # candidate -> why it could not run (one short line)
    stored: bool = False  # read from the choice store (an earlier process measured it; no times here)


def _time_call(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """The median seconds of one call of ``fn``.  On CUDA, as CUDA-graph replays: that is how a
    latency-bound user runs the model (``graphs.CapturedForward``, torch.compile's
    reduce-overhead), so host time does not rank the candidates.  A candidate that cannot be
    captured is timed eagerly, host time included, which can only handicap it."""
    from .timing import time_fn

    if device.type != "cuda":
        return time_fn(fn, device=device, warmup=2, repeats=repeats).median_s
    # The warm-up compiles and autotunes (Triton), and checks the candidate (checked_against),
    # before anything is timed or captured.  CUDA events time the current device's stream, so
    # make the tensors' device the current one.
    with torch.cuda.device(device):
        with torch.inference_mode():
            for _ in range(2):
                fn()
        try:
            return time_fn(fn, device=device, warmup=0, repeats=repeats, cuda_graph=True).median_s
        except Exception:  # e.g. a kernel that synchronizes or launches off the capturing stream
            torch.cuda.synchronize(device)
            return time_fn(fn, device=device, warmup=0, repeats=repeats).median_s


def once(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` computed on the first call and kept: one trusted result shared by every candidate."""
    kept = []

    def first():
        if not kept:
            kept.append(fn())
        return kept[0]

    return first


def _as_tuple(out) -> tuple:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _disagreement(
    out: torch.Tensor, ref: torch.Tensor, ref64: Optional[torch.Tensor], signed_zeros: bool = True
) -> Optional[str]:
    """None where ``out`` agrees with the trusted result ``ref``; else why not.  Without ``ref64``
    bit for bit (``signed_zeros=False``: a zero may carry the other sign); with it (the trusted
    computation in float64) the tolerance table's rule for a dtype whose own rounding is large
    (``testing.reduced_precision_bound``): ‖out − ref64‖/‖ref64‖ at most low_precision_factor
    times the trusted result's own error, never tighter than fp32's.  Where the trusted result
    holds NaN or Inf (a NaN input, an overflow), ``out`` must hold the same there and be finite
    elsewhere, and the rule applies to the places where both trusted results are finite."""
    if out.shape != ref.shape:
        return f"shape {tuple(out.shape)} where {tuple(ref.shape)} was expected"
    if same_bits(out, ref) or (not signed_zeros and same_bits(out + 0.0, ref + 0.0)):  # -0.0 + 0.0 is +0.0
        return None
    if ref64 is None:
        return "differs from ATen's result (an exact op)"
    finite = torch.isfinite(ref)
    if not bool(finite.all()):
        if not same_bits(out[~finite].to(ref.dtype), ref[~finite]):
            return "differs where the trusted result is NaN or Inf"
        if not bool(torch.isfinite(out[finite]).all()):
            return "NaN or Inf where the trusted result is finite"
        both = finite & torch.isfinite(ref64)  # (float64 may be finite where the trusted overflowed, or not)
        out, ref, ref64 = out[both], ref[both], ref64[both]
        if out.numel() == 0:
            return None
    if not bool(ref64.abs().sum() > 0):  # an all-zero result: rel_error has no scale
        return None if not bool(out.abs().sum() > 0) else "nonzero where the result is all zeros"
    err, bound = rel_error(out, ref64), reduced_precision_bound(ref, ref64)
    if not err <= bound:  # written so that NaN fails
        return f"relative error {err:.2e} against float64 exceeds {bound:.2e} (twice ATen's own error)"
    return None


def checked_against(run, reference, what: str, reference64=None, signed_zeros: bool = True):
    """``run`` as a measured choice's candidate whose first call (the untimed warm-up) must agree
    with ``reference()``, the trusted computation: bit for bit for exact ops (a max; no
    ``reference64``; ``signed_zeros=False`` for a candidate whose zeros may carry the other sign),
    else within the tolerance table's rule against ``reference64()``, the trusted computation in
    float64 (see ``_disagreement``).  Tuples compare element by element.  On a disagreement it
    raises, and the chooser drops the candidate with that error on record."""
    checked = []
    reference = once(reference)
    reference64 = once(reference64) if reference64 is not None else None

    def first_checked():
        out = run()
        if not checked and not compiling_only():
            refs = _as_tuple(reference())
            refs64 = _as_tuple(reference64()) if reference64 is not None else (None,) * len(refs)
            outs = _as_tuple(out)
            if len(outs) != len(refs):
                raise RuntimeError(f"{what} returned {len(outs)} tensors where ATen returns {len(refs)}; not used")
            for i, (o, r, r64) in enumerate(zip(outs, refs, refs64)):
                why = _disagreement(o, r, r64, signed_zeros)
                if why is not None:
                    part = f" (output {i})" if len(refs) > 1 else ""
                    raise RuntimeError(f"{what} disagrees with ATen on input {tuple(r.shape)}{part}: {why}; not used")
            checked.append(True)
        return out

    first_checked.checked = True  # not the trusted candidate (MeasuredChoice.pick while deferring)
    return first_checked


_DEFER = threading.local()


@contextlib.contextmanager
def measuring_deferred():
    """Within (this thread): every measured choice that has not measured a key yet measures
    nothing, reads nothing from the choice store and keeps nothing: it takes its trusted candidate
    (the one not entered through ``checked_against``: ATen's computation), which compiles no
    Triton binary.  Keys measured earlier keep their choice.  The precompiler runs a forward in
    here while worker processes still compile that forward's binaries; the first forward after
    them measures."""
    outer = getattr(_DEFER, "on", False)
    _DEFER.on = True
    try:
        yield
    finally:
        _DEFER.on = outer


def deferring() -> bool:
    """Whether this thread is inside ``measuring_deferred()``."""
    return getattr(_DEFER, "on", False)


def capturing(device: torch.device) -> bool:
    """Whether a CUDA graph is being captured on ``device``'s current stream."""
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def static_mode() -> bool:
    """Whether INCEPTION_FAST_AUTO=static: no measured choice measures (read at each call)."""
    return _static_value(os.environ.get(ENV_AUTO, ""))


@functools.lru_cache(maxsize=8)
def _static_value(raw: str) -> bool:
    """What an INCEPTION_FAST_AUTO value means; a value it does not know is an error that says so."""
    value = raw.strip().lower()
    if value not in ("", "static"):
        raise ValueError(f"{ENV_AUTO}={raw!r}: unknown; the one value is 'static' (nothing is measured), or unset")
    return value == "static"


@functools.lru_cache(maxsize=8)
def _skip_entries(raw: str) -> frozenset:
    """The (choice or None, candidate) pairs an INCEPTION_FAST_SKIP_CANDIDATES value names (parsed
    once per value); an entry it cannot read, or a choice it does not know, is an error that says so."""
    entries = set()
    for item in (part.strip().lower() for part in raw.split(",")):
        if not item:
            continue
        found = re.fullmatch(r"(?:([a-z0-9_]+):)?([a-z0-9_]+)", item)
        if found is None:
            raise ValueError(f"{ENV_SKIP}={raw!r}: cannot read {item!r}; write choice:candidate or candidate")
        choice, name = found.groups()
        if choice is not None and choice not in _CHOICE_NAMES:
            known = ", ".join(sorted(_CHOICE_NAMES))
            raise ValueError(f"{ENV_SKIP}={raw!r}: no measured choice is called {choice!r}; the choices are {known}")
        if choice is not None and choice in _DECLARED and not _declares(_DECLARED[choice], name):
            known = ", ".join(_DECLARED[choice])
            raise ValueError(
                f"{ENV_SKIP}={raw!r}: choice {choice!r} has no candidate {name!r}; its candidates are {known}"
            )
        every = tuple(dict.fromkeys(n for names in _DECLARED.values() for n in names))
        if choice is None and not _declares(every, name):
            known = ", ".join(sorted(every))
            raise ValueError(
                f"{ENV_SKIP}={raw!r}: no measured choice has a candidate {name!r}; the candidates are {known}"
            )
        trusted = [c for c, t in _TRUSTED.items() if t == name and choice in (None, c)]
        if trusted:
            raise ValueError(
                f"{ENV_SKIP}={raw!r}: {name!r} is the trusted computation of {', '.join(sorted(trusted))}, "
                "which the other candidates are checked against: it cannot be skipped"
            )
        entries.add((choice, name))
    return frozenset(entries)


def skip_entries() -> frozenset:
    """INCEPTION_FAST_SKIP_CANDIDATES now, as (choice or None, candidate) pairs; a value that cannot
    be read, or names a choice or candidate that does not exist, is a ValueError that says why."""
    return _skip_entries(os.environ.get(ENV_SKIP, ""))


class EveryCandidateFailed(RuntimeError):
    """A measured choice whose every candidate raised (their errors in the message)."""


class ContextLost(RuntimeError):
    """The CUDA context became unusable while a measured choice ran its candidates: nothing more can
    run on that GPU in this process.  As such, no candidate is blamed (ATen's own computation ran, or
    the error is one no kernel causes by itself); a choice measured around this one passes it on
    unchanged."""


class _LostBeforeMeasuring(ContextLost):
    """The ContextLost of a choice that found the CUDA context unusable before its first candidate.
    Where that choice was measured inside another's candidate (the stem's forms run the pool's
    choice), that candidate's own run lost it: the outer choice blames it (``MeasuredChoice._each``)."""


class CandidateFault(ContextLost):
    """A measured candidate failed on a GPU and left the process's CUDA context unusable (an illegal
    address, a device-side assert: every later CUDA call fails).  ``choice`` and ``candidate`` name
    it as INCEPTION_FAST_SKIP_CANDIDATES does; where the choice store is on it is recorded there,
    and later processes with the same fingerprint measure without it."""

    def __init__(self, message: str, choice: Optional[str] = None, candidate: Optional[str] = None) -> None:
        super().__init__(message)
        self.choice, self.candidate = choice, candidate


# The CUDA errors a kernel causes by itself that leave the context unusable (cudaError_t codes), with
# a piece of each one's text for an error that carries no code.
_KERNEL_FAULTS = {
    700: "an illegal memory access",
    710: "device-side assert",
    714: "hardware stack error",
    715: "illegal instruction",
    716: "misaligned address",
    717: "not supported on global/shared address space",
    718: "invalid program counter",
    719: "unspecified launch failure",
}


def _checked(run) -> bool:
    """Whether candidate ``run`` entered through ``checked_against``: not the trusted computation."""
    return getattr(run, "checked", False)


def _context_fault(device: torch.device) -> Optional[tuple]:
    """None while ``device``'s CUDA context is usable (a synchronize refused because another thread
    is capturing a CUDA graph, cudaError_t 900-907, says nothing about it, nor does an error that a
    second synchronize does not meet again); else (kernel, why): whether the error is one a kernel
    causes by itself (``_KERNEL_FAULTS``: after such a sticky error every CUDA call fails, a
    synchronize included) and the error in short."""
    if device.type != "cuda":
        return None
    try:
        torch.cuda.synchronize(device)
    except Exception as exc:  # noqa: BLE001 - any error here may say the context is gone
        code = getattr(exc, "error_code", None)  # torch.AcceleratorError's, where set
        text = str(exc)
        if (isinstance(code, int) and 900 <= code <= 907) or "captur" in text.lower():
            return None
        try:
            torch.cuda.synchronize(device)
            return None  # an error reported once, not a lost context
        except Exception:  # noqa: BLE001 - sticky
            pass
        if isinstance(code, int) and code > 0:
            kernel = code in _KERNEL_FAULTS
        else:
            kernel = any(piece in text for piece in _KERNEL_FAULTS.values())
        return kernel, short_error(exc)
    return None


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
    recently used keys; errors are kept short.  Threads meeting misses at once measure one at a
    time (``inception_fast.caches.MEASURING``), and one that waited for the same key takes its answer.
    """

    def __init__(
        self,
        measure_on=("cuda",),
        repeats: int = 5,
        timer: Callable[[Callable[[], object], torch.device, int], float] = _time_call,
        store_as: Optional[str] = None,
        candidates: Optional[Sequence[str]] = None,
        trusted: Optional[str] = None,
    ) -> None:
        self.measure_on = tuple(measure_on)
        self.repeats = repeats
        self.timer = timer
        self.store_as = store_as  # its name in the choice store (None: never stored)
        # Every candidate name pick may be given (None: not declared, not checked), and the one it
        # must be given as the trusted computation (not through checked_against) where it is offered
        self.declared = None if candidates is None else tuple(candidates)
        self.trusted = trusted
        if store_as is not None:
            if store_as == choice_store.FAULTS:
                raise ValueError(f"store_as={store_as!r} is the store's section of faulted candidates")
            _CHOICE_NAMES.add(store_as)
            if self.declared is not None:
                _DECLARED[store_as] = tuple(dict.fromkeys(_DECLARED.get(store_as, ()) + self.declared))
            if trusted is not None:  # (the candidate every other one is checked against)
                _TRUSTED[store_as] = trusted
            _skip_entries.cache_clear()  # (a value read before may name what is now declared)
        self._choices = LRUDict()

    def choices(self) -> dict:
        """{key: Choice} measured so far in this process (the most recently used ones)."""
        return self._choices.snapshot()

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
        fake tensors) that would see the timing runs, not while capturing a CUDA graph, not inside
        ``measuring_deferred()``."""
        if device.type not in self.measure_on or static_mode() or deferring():
            return False
        if torch.compiler.is_compiling() or _dispatch_mode_active():
            return False
        return not capturing(device)

    def skipped(self, name: str) -> bool:
        """Whether INCEPTION_FAST_SKIP_CANDIDATES names this choice's candidate ``name`` (read at
        each call; an unreadable value is a ValueError that says why)."""
        entries = skip_entries()
        return bool(entries) and ((None, name) in entries or (self.store_as, name) in entries)

    def _entry(self, name: str) -> str:
        """``name`` as an INCEPTION_FAST_SKIP_CANDIDATES entry for this choice."""
        return name if self.store_as is None else f"{self.store_as}:{name}"

    def _offered(self, names: list, runners: dict) -> tuple[list, dict]:
        """``names`` without the candidates INCEPTION_FAST_SKIP_CANDIDATES names, and {skipped: why}.
        A trusted candidate (one not entered through ``checked_against``) cannot be skipped."""
        skipped = {}
        for name in names:
            if self.skipped(name):
                if not _checked(runners[name]):
                    raise ValueError(
                        f"{ENV_SKIP} names {self._entry(name)!r}, the trusted computation the other candidates "
                        "are checked against: it cannot be skipped"
                    )
                skipped[name] = f"skipped ({ENV_SKIP})"
        return [n for n in names if n not in skipped], skipped

    def _faulted(self, names: list, runners: dict, device: torch.device) -> dict:
        """{name: why} for the checked candidates of ``names`` that the choice store records as having
        left a CUDA context unusable on this fingerprint (warned of once a process)."""
        if self.store_as is None or device.type != "cuda":
            return {}
        found = {}
        for name in names:
            if _checked(runners[name]):
                why = choice_store.STORE.fault(self._entry(name), device)
                if why is not None:
                    found[name] = f"skipped: it left the CUDA context unusable in an earlier process ({why})"
                    choice_store.STORE.warn_once(
                        f"{self._entry(name)} is not measured on this GPU: it left the CUDA context unusable "
                        f"in an earlier process ({why}; recorded in {choice_store.STORE.path(device)}: remove "
                        "that file to try it again)"
                    )
        return found

    def pick(self, key, device: torch.device, runners: dict) -> str:
        hit = self.lookup(key)
        if hit is not None:
            return hit
        if self.declared is not None and not all(_declares(self.declared, n) for n in runners):
            extra = ", ".join(repr(n) for n in runners if not _declares(self.declared, n))
            raise ValueError(f"choice {self.store_as!r} was offered {extra}, which it does not declare")
        if self.trusted in runners and _checked(runners[self.trusted]):
            raise ValueError(f"choice {self.store_as!r} was offered its trusted {self.trusted!r} as a checked one")
        names, skipped = self._offered(list(runners), runners)
        # Where nothing may be measured (tracing, capture, static mode) nothing is read from disk
        # either: the first candidate runs; while deferring, the trusted one.
        if len(names) == 1 or not self.can_measure(device):
            if deferring():
                return next((n for n in names if not _checked(runners[n])), names[0])
            return names[0]
        faulted = self._faulted(names, runners, device)
        if faulted:
            names = [n for n in names if n not in faulted]
            skipped.update(faulted)
        if self.store_as is not None:
            stored = choice_store.STORE.get(self.store_as, key, device)
            if stored in names:
                self._choices[key] = Choice(stored, stored=True)
                return stored
        if compiling_only():  # each candidate once, for what it compiles; nothing measured or kept
            with torch.no_grad():  # (a candidate that is no Triton kernel, cuDNN's or the extension's, runs)
                self._each(key, device, runners, names, lambda name: (runners[name](), None)[1])
            return names[0]
        with MEASURING:  # one thread measures a miss; one that waited finds its answer
            hit = self.lookup(key)
            return hit if hit is not None else self._measure(key, device, runners, names, skipped)

    def _seconds(self, key, device: torch.device, runners: dict, names: list) -> tuple[dict, dict]:
        """({name: median seconds of one call} of the candidates that ran, {name: short error} of
        those that raised): each timed in turn by ``timer``."""

        def timed(name):
            with torch.no_grad():
                return self.timer(runners[name], device, self.repeats)

        return self._each(key, device, runners, names, timed)

    def _measure(self, key, device: torch.device, runners: dict, names: list, skipped: Optional[dict] = None) -> str:
        seconds, errors = self._seconds(key, device, runners, names)
        errors = {**(skipped or {}), **errors}
        if not seconds:
            detail = "; ".join(f"{n}: {e}" for n, e in errors.items())
            raise EveryCandidateFailed(f"every candidate failed for {key} ({detail})")
        best = min(seconds, key=lambda n: (seconds[n], names.index(n)))
        self._choices[key] = Choice(best, seconds, errors)
        # (Not a choice made without the candidates INCEPTION_FAST_SKIP_CANDIDATES left out: a process
        # without it must measure them.  One made without a recorded fault is kept: so is the record.)
        if self.store_as is not None and not any(self.skipped(n) for n in skipped or {}):
            choice_store.STORE.put(self.store_as, key, device, best)
        return best

    def _each(self, key, device: torch.device, runners: dict, names: list, call) -> tuple[dict, dict]:
        """({name: call(name)} of the candidates that returned, {name: short error} of those that
        raised), in ``names``' order: a candidate that raises is dropped and the others run (a tile
        that does not fit this GPU, say).  But where the CUDA context is unusable (checked before the
        first and after each, so a fault shows against the candidate that caused it, even one on a
        stream its timing did not wait for) nothing more can run: before the first, no candidate is
        blamed (a ContextLost); after one, ``_fault`` says which.  What a choice measured inside a
        candidate (the stem's pool) found, a CandidateFault or a ContextLost, passes through as it
        is, except a context it found lost before it began: that candidate's own run lost it."""
        if _context_fault(device) is not None:
            raise _LostBeforeMeasuring(
                f"inception_fast: the CUDA context on {device} is unusable (a kernel launched earlier failed); "
                f"nothing can be measured for {key!r}"
            )
        results, errors = {}, {}
        for name in names:
            error = None
            try:
                results[name] = call(name)
            except _LostBeforeMeasuring as exc:  # this candidate lost it before its inner choice ran
                error = exc
            except ContextLost:
                raise
            except Exception as exc:  # noqa: BLE001 - measure the others
                error = exc
            state = _context_fault(device)
            if state is not None:
                raise self._fault(key, device, name, runners[name], state) from error
            if error is not None:
                errors[name] = short_error(error)
        return results, errors

    def _fault(self, key, device: torch.device, name: str, runner, state: tuple) -> ContextLost:
        """The error for ``device``'s CUDA context found unusable (``state``: ``_context_fault``'s)
        right after candidate ``name`` ran.  A checked candidate and an error a kernel causes: a
        CandidateFault, recorded in the choice store (where it is on); else a ContextLost, which
        blames nobody."""
        kernel, why = state
        where = f"on {device} while candidate {self._entry(name)!r} ran ({why}; measuring {key!r})"
        if not _checked(runner):  # ATen's own computation: not blamed
            return ContextLost(f"inception_fast: the CUDA context became unusable {where}")
        if not kernel:  # an ECC error, a launch timeout: not what a candidate's code does by itself
            return ContextLost(f"inception_fast: the CUDA context became unusable {where}; not recorded against it")
        recorded = ""
        if self.store_as is not None:
            try:
                path = choice_store.STORE.record_fault(self._entry(name), device, why)
            except Exception:  # noqa: BLE001 - the error below matters more than the record
                path = None
            if path is not None:
                recorded = f" Later processes on this GPU and code measure without it (recorded in {path})."
        return CandidateFault(
            f"inception_fast: candidate {self._entry(name)!r} failed on {device} and left the CUDA context "
            f"unusable ({why}; measuring {key!r}): nothing more can run on that GPU in this process.{recorded} "
            f"To run without it, add it to {ENV_SKIP} (comma-separated): {ENV_SKIP}={self._entry(name)} ; "
            "please report it.",
            self.store_as,
            name,
        )


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
        super().__init__(candidates=order, trusted="torch", **kwargs)
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
        names = [n for n in self.candidates(x.device) if _takes_block(n, w3, w5)]
        if not names:
            raise RuntimeError(f"backend 'auto': none of {', '.join(self.order)} runs on {x.device}")
        if capturing(x.device) and not deferring():  # nothing measured: one with nothing to compile or tune
            names = [n for n in names if n == "torch" or not self.skipped(n)]  # (pick measures what is not)
            return next((n for n in names if n in AUTO_CAPTURE_READY), names[0])
        args = (x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5)
        trusted = _backends.get("torch").op("inception_block")
        reference = once(lambda: trusted(*args))
        reference64 = once(lambda: trusted(*(a.double() for a in args)))
        runners = {}
        for name in names:
            run = lambda f=_backends.get(name).op("inception_block"): f(*args)  # noqa: E731
            if name != "torch":
                run = checked_against(run, reference, f"backend {name!r}", reference64)
            runners[name] = run
        try:
            return self.pick(key, x.device, runners)
        except ContextLost:
            raise
        except RuntimeError as exc:
            raise RuntimeError(f"backend 'auto': every backend failed on input shape {tuple(x.shape)}: {exc}") from exc


AUTO = AutoBackend(store_as="auto")


def _takes_block(name: str, w3: torch.Tensor, w5: torch.Tensor) -> bool:
    """Whether backend ``name``'s inception_block takes a block with these branch weights (Triton's
    launch 2: branch 2 3x3 only): one that does not is no candidate, measured or not."""
    reason = _backends.get(name).block_reason
    return reason is None or reason(w3, w5) is None


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
    triton_allowed: bool  # the model's backend lets the Triton kernel compete (and the kernel supports the conv)


class PoolKey(NamedTuple):
    """POOL_CHOICE's and CPU_POOL_CHOICE's key: one max pool."""

    device: str
    dtype: torch.dtype
    shape: tuple
    stride: tuple  # the input's strides (its layout)
    params: tuple  # (kernel, stride, padding, ceil_mode)
    threads: Optional[int] = None  # on CPU torch.get_num_threads(): the ranking changes with it


class HeadKey(NamedTuple):
    """HEAD_CHOICE's key: the eval-mode head (average pool, fc) on one input."""

    device: str
    dtype: torch.dtype
    shape: tuple
    stride: tuple  # the input's strides (its layout)
    classes: int  # the fc's output features
    tf32: Optional[bool]  # fp32: matmul's TF32 flag (nn.Linear follows it), else None


class FoldKey(NamedTuple):
    """FOLD_CHOICE's key: one max pool and the block after it."""

    device: str
    dtype: torch.dtype
    shape: tuple  # the pool's input (N, C, H, W)
    stride: tuple  # the pool input's strides (its layout)
    params: tuple  # the pool's (kernel, stride, padding, ceil_mode)
    block: tuple  # the block's conv weight shapes, in packing order
    backend: str  # the model's backend, which decides what "separate" runs (auto: AUTO's pick per block)
    precision: Optional[tuple]  # fp32: (cuDNN's TF32 flag, matmul precision), else None


# The stem's first conv + ReLU + maxpool1, per input shape and layout (inception_fast.stages).
STEM_CHOICE = MeasuredChoice(
    store_as="stem",
    candidates=(
        *("onednn", "channels_last", "pad<N>", "nchw"),  # ATen's (oneDNN's) forms, then the Triton ones
        *("triton", "triton_conv", "triton_rows", "triton_rows_pool"),
    ),
    trusted="channels_last",
)
# conv2 and conv3 with bias + ReLU: ATen's three passes against cuDNN's fused op and, where the
# model's backend allows it, the Triton implicit-GEMM kernel (backends/triton/conv_relu.py).
CONV_RELU_CHOICE = MeasuredChoice(store_as="conv_relu", candidates=("aten", "cudnn_fused", "triton"), trusted="aten")
# The max pools between stages: ATen's against the Triton pool that writes no argmax.
POOL_CHOICE = MeasuredChoice(store_as="pool", candidates=("aten", "triton"), trusted="aten")
# The same pools on CPU, and the "onednn" blocks' pool branch: ATen's against the compiled
# extension's pool that writes no argmax and, for a 3x3/1 pool, a separable form.
CPU_POOL_CHOICE = MeasuredChoice(
    measure_on=("cpu",), store_as="cpu_pool", candidates=("aten", "cpp", "separable"), trusted="aten"
)
# The eval-mode head: ATen's average pool + addmm against the Triton head (backends/triton/head.py).
HEAD_CHOICE = MeasuredChoice(store_as="head", candidates=("aten", "triton"), trusted="aten")
# A max pool and the block after it: "separate" (the pool as POOL_CHOICE runs it, then the block as
# the model runs it) against "folded" (ops.pooled_inception_block on the triton backend).
FOLD_CHOICE = MeasuredChoice(store_as="fold", candidates=("separate", "folded"), trusted="separate")


class NetworkKey(NamedTuple):
    """CPU_NETWORK_CHOICE's key: a FusedGoogLeNet's architecture and its input on CPU."""

    device: str
    dtype: torch.dtype
    shape: tuple  # the input's (N, C, H, W)
    channels_last: bool  # the input's layout (else NCHW-contiguous or strided)
    threads: int  # torch.get_num_threads(): the ranking changes with it
    layers: str  # a digest of the model's class, variant and parameter names and shapes


class NetworkChoice(MeasuredChoice):
    """A choice among whole forwards of one network (``CPU_NETWORK_CHOICE``): each candidate runs
    once first (its parity check, ``checked_against``, and its own inner choices' measuring), then
    the ones that ran are timed in interleaved rounds (``inception_fast.timing.time_interleaved``),
    so that a drift of the machine's speed during the measuring falls on all of them alike."""

    def __init__(self, rounds: int = 5, budget_s: float = 0.5, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rounds, self.budget_s = rounds, budget_s

    def _seconds(self, key, device: torch.device, runners: dict, names: list) -> tuple[dict, dict]:
        from .timing import time_interleaved

        def first(name):
            with torch.no_grad():
                runners[name]()

        ran, errors = self._each(key, device, runners, names, first)
        if not ran:
            return {}, errors
        timings = time_interleaved(
            {name: runners[name] for name in ran},
            device=device,
            warmup=0,  # (each ran once above)
            min_repeats=self.rounds,
            budget_s=self.budget_s,
            max_repeats=4 * self.rounds,
        )
        return {name: timing.median_s for name, timing in timings.items()}, errors


# backend="auto"'s FusedGoogLeNet on CPU, for inference from oneDNN's prepacked weights (float32, or
# bfloat16 where oneDNN has it), per input shape: every block, the stem and the pools on oneDNN's
# prepacked convolutions ("onednn", what runs where nothing is measured), on the compiled
# extension's CPU kernels ("cpp", where built), or on the torch backend's ATen ops (trusted).
# oneDNN's per-call cost loses on small inputs (batch 1 under ~96x96 on the 2-core machine,
# benchmarks/results), where the extension's blocks win; it wins on larger ones.  Blocks timed
# one by one do not add up to the network's time, so the choice is one for the whole network,
# timed as whole forwards (FusedGoogLeNet._cpu_network_backend).
CPU_NETWORK_CHOICE = NetworkChoice(
    measure_on=("cpu",), store_as="cpu_network", candidates=("onednn", "cpp", "torch"), trusted="torch"
)


class ChainKey(NamedTuple):
    """CHAIN_CHOICE's key: a run of consecutive blocks, with the max pool before the first."""

    device: str
    dtype: torch.dtype
    shape: tuple  # the input (N, C, H, W): the pool's where there is one, else the first block's
    stride: tuple  # the input's strides (its layout)
    params: Optional[tuple]  # the pool's (kernel, stride, padding, ceil_mode), None without a pool
    blocks: tuple  # per block, its conv weight shapes in packing order
    backend: str  # the model's backend, which decides what "separate" runs
    precision: Optional[tuple]  # fp32: (cuDNN's TF32 flag, matmul precision), else None


# A run of consecutive blocks (3a-3b, 4a-4e, 5a-5b) and the max pool before it: "separate" (the pool
# and each block as the model runs them, FOLD_CHOICE and AUTO included) against "chained"
# (ops.inception_chain on the triton backend: each block's launch 2 joined with the next one's launch 1).
CHAIN_CHOICE = MeasuredChoice(store_as="chain", candidates=("separate", "chained"), trusted="separate")


class OpChoice(AutoBackend):
    """Under ``backend="auto"``, per block shape (``AutoKey``): the backend whose kernel for ``op``
    measured fastest, among the torch backend's (ATen, trusted) and those of ``order``'s other
    backends that have one.  "torch" off CUDA, on an empty batch and wherever nothing is
    measured; every other kernel enters through ``checked_against``: on its first run each of its
    outputs must be within the tolerance table's rule of an fp64 run of the torch backend's kernel
    on the same tensors (twice ATen's own error in the dtype, never tighter than the fp32 bound),
    else it is dropped with that error on record."""

    def __init__(self, op: str, what: str, order=("torch", "triton"), **kwargs) -> None:
        super().__init__(order=order, **kwargs)
        self.op, self.what = op, what

    def candidates(self, device: torch.device) -> list[str]:
        return [n for n in super().candidates(device) if self.op in _backends.get(n).kernels]

    def choose_for(self, x, w_red, w_pool, w3, w5, args: tuple) -> str:
        """The backend for ``op(*args)``, where ``x`` and the packed weights are the block's."""
        if x.device.type not in self.measure_on or x.shape[0] == 0:
            return "torch"
        key = self.key(x, w_red, w_pool, w3, w5)
        hit = self.lookup(key)
        if hit is not None:
            return hit
        names = self.candidates(x.device)
        if len(names) < 2 or not self.can_measure(x.device):
            return "torch"
        aten = _backends.get("torch").op(self.op)
        args64 = tuple(a.double() if isinstance(a, torch.Tensor) else a for a in args)
        reference = once(lambda: aten(*args))
        reference64 = once(lambda: aten(*args64))
        runners = {"torch": lambda: aten(*args)}
        for name in names[1:]:
            run = lambda f=_backends.get(name).op(self.op): f(*args)  # noqa: E731
            runners[name] = checked_against(run, reference, f"the {name} {self.what}", reference64)
        return self.pick(key, x.device, runners)


class BackwardChoice(OpChoice):
    """The block backward (``inception_block_backward``): the ATen chain ("torch") or the Triton
    backward launches."""

    def __init__(self, **kwargs) -> None:
        super().__init__("inception_block_backward", "block backward", **kwargs)

    def choose(self, grad_out, x, w_red, w_pool, w3, w5, out, scratch) -> str:  # type: ignore[override]
        args = (grad_out, x, w_red, w_pool, w3, w5, out, scratch, True)
        return self.choose_for(x, w_red, w_pool, w3, w5, args)


BACKWARD = BackwardChoice(store_as="backward")


class BnTrainChoice(OpChoice):
    """The block with train-mode BatchNorm (``inception_block_bn_train``): the torch backend's
    composition of ATen ops or the Triton kernels (the 1x1 GEMMs and the 3x3/kxk with the batch
    statistics in their epilogue)."""

    def __init__(self, **kwargs) -> None:
        super().__init__("inception_block_bn_train", "train-mode BatchNorm block", **kwargs)

    def choose(self, x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, gamma, beta, eps) -> str:  # type: ignore[override]
        args = (x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, gamma, beta, eps)
        return self.choose_for(x, w_red, w_pool, w3, w5, args)


BN_TRAIN = BnTrainChoice(store_as="bn_train")
