"""The ops layer: torch.library schemas, fake kernels, autograd and backend choice.

Schemas are defined here in Python, so every op exists (with a fake kernel for
torch.compile) even when the compiled extension is absent.

* ``inception_fast::inception_block`` -- one Inception block's inference forward
  from packed weights (see ``inception_fast.packing``), computed by the named
  backend.  Returns ``(out, scratch)``: the concatenated block output and the two
  post-ReLU reductions (saved for the backward pass).  Both channels_last.
* ``inception_fast::conv_relu_maxpool`` -- max_pool2d(relu(conv2d(x, w, b))), channels_last:
  the stem's first layer (GoogLeNet's conv1 + maxpool1), by the named backend ("torch": ATen;
  "triton": one kernel, the conv output never stored).  Inference only (no autograd formula).
* ``inception_fast::max_pool2d`` -- max_pool2d (square window, dilation 1), channels_last, by the
  named backend ("torch": ATen; "triton": one kernel that writes no argmax); ATen's backward.
* ``inception_fast::reduce_pool_`` and ``inception_fast::branch_convs_`` -- the
  two launches as separate mutating ops; their kernels come from the compiled
  extension (csrc/, ``TORCH_LIBRARY_IMPL(inception_fast, CPU/CUDA, ...)``).

``InceptionBlockFunction`` wraps ``inception_block`` for training: its backward
is ATen (the three 1x1 input gradients as one GEMM, the pool branch through the
max pool, ReLU masks from the saved outputs).

Backend choice: a named backend is checked to run on the device.  ``"auto"`` is
"torch" off CUDA; on CUDA the op receives "auto" and ``AutoBackend`` picks, per
block shape and at run time, the available backend it measured fastest (so the
choice also happens under torch.compile, whose traced graph only holds the op).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from . import backends as _backends
from .caches import LRUDict, short_error

__all__ = ["inception_block", "conv_relu_maxpool", "max_pool2d", "InceptionBlockFunction", "resolve_backend", "block_shapes",
           "MeasuredChoice", "Choice", "AutoBackend", "AUTO", "AUTO_STATIC_ORDER", "ENV_AUTO"]

_LIB = torch.library.Library("inception_fast", "DEF")  # kept alive: dropping it would remove the schemas
_LIB.define(
    "inception_block(Tensor x, Tensor w_red, Tensor b_red, Tensor w_pool, Tensor b_pool, "
    "Tensor w3, Tensor b3, Tensor w5, Tensor b5, str backend) -> (Tensor, Tensor)"
)
_LIB.define(
    "conv_relu_maxpool(Tensor x, Tensor w, Tensor b, int stride, int padding, int pool_kernel, "
    "int pool_stride, int pool_padding, bool ceil_mode, str backend) -> Tensor"
)
_LIB.define("max_pool2d(Tensor x, int kernel, int stride, int padding, bool ceil_mode, str backend) -> Tensor")
_LIB.define(
    "reduce_pool_(Tensor x, Tensor w_red, Tensor b_red, Tensor w_pool, Tensor b_pool, "
    "Tensor(a!) out, Tensor(b!) scratch) -> ()"
)
_LIB.define(
    "branch_convs_(Tensor scratch, Tensor w3, Tensor b3, Tensor w5, Tensor b5, "
    "Tensor(a!) out, int ch1) -> ()"
)

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def block_shapes(x, w_red, w_pool, w3, w5):
    """(ch1, ch3red, ch5red, ch3, ch5, pool_proj) derived from packed weight shapes."""
    ch3, ch3red = w3.shape[0], w3.shape[1]
    ch5, ch5red = w5.shape[0], w5.shape[1]
    ch1 = w_red.shape[0] - ch3red - ch5red
    return ch1, ch3red, ch5red, ch3, ch5, w_pool.shape[0]


def _check_block_args(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5):
    if x.dim() != 4:
        raise ValueError(f"Inception block expects a 4-D (N, C, H, W) input, got {x.dim()}-D shape {tuple(x.shape)}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"Inception block supports float32, float16 and bfloat16 inputs, got {x.dtype}")
    cin = w_red.shape[1]
    if x.shape[1] != cin:
        raise ValueError(f"Inception block expects {cin} input channels, got {x.shape[1]} (input shape {tuple(x.shape)})")
    for name, t in (("w_red", w_red), ("b_red", b_red), ("w_pool", w_pool), ("b_pool", b_pool),
                    ("w3", w3), ("b3", b3), ("w5", w5), ("b5", b5)):
        if t.device != x.device:
            raise RuntimeError(f"input is on {x.device} but weight {name} is on {t.device}; move the module with .to()")
        if t.dtype != x.dtype:
            raise TypeError(f"input dtype {x.dtype} does not match weight {name} dtype {t.dtype}; "
                            "cast the module or the input")
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"Inception block needs an input of at least 1x1 pixels, got shape {tuple(x.shape)}")


def _empty_outputs(x, w_red, w_pool, w3, w5):
    ch1, ch3red, ch5red, ch3, ch5, pool = block_shapes(x, w_red, w_pool, w3, w5)
    n, _, h, w = x.shape
    cl = torch.channels_last
    out = torch.empty((n, ch1 + ch3 + ch5 + pool, h, w), dtype=x.dtype, device=x.device, memory_format=cl)
    scratch = torch.empty((n, ch3red + ch5red, h, w), dtype=x.dtype, device=x.device, memory_format=cl)
    return out, scratch


@torch.library.impl(_LIB, "inception_block", "CompositeExplicitAutograd")
def _inception_block_impl(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, backend):
    _check_block_args(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5)
    x = x.contiguous(memory_format=torch.channels_last)
    if x.shape[0] == 0:  # an empty batch: nothing to compute, the reference's empty result
        return _empty_outputs(x, w_red, w_pool, w3, w5)
    if backend == "auto":
        backend = AUTO.choose(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5)
    impl = _backends.get(backend)
    why = impl.unavailable_reason(x.device)
    if why is not None:
        raise RuntimeError(f"backend {backend!r} is unavailable on {x.device}: {why}")
    with torch.no_grad():  # the op is differentiated by InceptionBlockFunction, not through its kernels
        return impl.block_forward(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5)


@torch.library.register_fake("inception_fast::inception_block")
def _inception_block_fake(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, backend):
    _check_block_args(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5)
    return _empty_outputs(x, w_red, w_pool, w3, w5)


@torch.library.register_fake("inception_fast::reduce_pool_")
def _reduce_pool_fake(x, w_red, b_red, w_pool, b_pool, out, scratch):
    return None


@torch.library.register_fake("inception_fast::branch_convs_")
def _branch_convs_fake(scratch, w3, b3, w5, b5, out, ch1):
    return None


def _conv_relu_maxpool_shape(x, w, b, stride, padding, pool_kernel, pool_stride, pool_padding, ceil_mode):
    """Checks the arguments; returns the (N, Cout, PH, PW) output shape."""
    from .reference import _conv_out, _pool_out

    if x.dim() != 4:
        raise ValueError(f"conv_relu_maxpool expects a 4-D (N, C, H, W) input, got {x.dim()}-D shape {tuple(x.shape)}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"conv_relu_maxpool supports float32, float16 and bfloat16 inputs, got {x.dtype}")
    if w.dim() != 4 or w.shape[2] != w.shape[3]:
        raise ValueError(f"conv_relu_maxpool expects a square weight (Cout, Cin, k, k), got shape {tuple(w.shape)}")
    if w.shape[1] != x.shape[1]:
        raise ValueError(f"conv_relu_maxpool expects {w.shape[1]} input channels, got {x.shape[1]} "
                         f"(input shape {tuple(x.shape)})")
    if tuple(b.shape) != (w.shape[0],):
        raise ValueError(f"conv_relu_maxpool expects a bias of shape ({w.shape[0]},), got {tuple(b.shape)}")
    for name, t in (("w", w), ("b", b)):
        if t.device != x.device:
            raise RuntimeError(f"input is on {x.device} but {name} is on {t.device}")
        if t.dtype != x.dtype:
            raise TypeError(f"input dtype {x.dtype} does not match {name} dtype {t.dtype}")
    if min(stride, pool_kernel, pool_stride) < 1 or padding < 0 or not 0 <= 2 * pool_padding <= pool_kernel:
        raise ValueError(f"invalid conv/pool parameters: stride {stride}, padding {padding}, "
                         f"pool kernel {pool_kernel}, pool stride {pool_stride}, pool padding {pool_padding}")
    k = w.shape[-1]
    oh, ow = (_conv_out(s, k, stride, padding) for s in x.shape[2:])
    ph, pw = (_pool_out(s, pool_kernel, pool_stride, pool_padding, ceil_mode) for s in (oh, ow))
    if min(oh, ow, ph, pw) < 1:
        raise ValueError(f"input {tuple(x.shape[2:])} is too small for a {k}x{k}/{stride} conv (padding {padding}) "
                         f"followed by a {pool_kernel}x{pool_kernel}/{pool_stride} max pool")
    return x.shape[0], w.shape[0], ph, pw


@torch.library.impl(_LIB, "conv_relu_maxpool", "CompositeExplicitAutograd")
def _conv_relu_maxpool_impl(x, w, b, stride, padding, pool_kernel, pool_stride, pool_padding, ceil_mode, backend):
    _conv_relu_maxpool_shape(x, w, b, stride, padding, pool_kernel, pool_stride, pool_padding, ceil_mode)
    cl = torch.channels_last
    if backend == "torch":
        y = F.conv2d(x, w, b, stride=stride, padding=padding).relu_()
        if (pool_kernel, pool_stride) != (1, 1):  # a 1x1 pool with stride 2 still subsamples
            y = F.max_pool2d(y, pool_kernel, pool_stride, pool_padding, ceil_mode=ceil_mode)
        return y.contiguous(memory_format=cl)
    _check_triton("conv_relu_maxpool", backend, x)
    from .backends.triton.stem import launch_conv_relu_maxpool

    with _on_device(x):
        return launch_conv_relu_maxpool(x, w, b, stride, padding, pool_kernel, pool_stride, pool_padding, ceil_mode)


def _check_triton(op: str, backend: str, x) -> None:
    """For the ops with a torch and a triton backend, past the torch one: ``backend`` must be
    "triton", and Triton must run on x's device."""
    if backend != "triton":
        raise ValueError(f"{op} runs on the 'torch' or 'triton' backend, not {backend!r}")
    why = _backends.availability("triton", x.device)
    if why is not None:
        raise RuntimeError(f"backend 'triton' is unavailable on {x.device}: {why}")


def _on_device(x):
    """Triton launches on the current CUDA device; the tensors may live on another one."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


@torch.library.register_fake("inception_fast::conv_relu_maxpool")
def _conv_relu_maxpool_fake(x, w, b, stride, padding, pool_kernel, pool_stride, pool_padding, ceil_mode, backend):
    shape = _conv_relu_maxpool_shape(x, w, b, stride, padding, pool_kernel, pool_stride, pool_padding, ceil_mode)
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)


def _max_pool2d_shape(x, kernel, stride, padding, ceil_mode):
    """Checks the arguments; returns the (N, C, OH, OW) output shape."""
    from .reference import _pool_out

    if x.dim() != 4:
        raise ValueError(f"max_pool2d expects a 4-D (N, C, H, W) input, got {x.dim()}-D shape {tuple(x.shape)}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"max_pool2d supports float32, float16 and bfloat16 inputs, got {x.dtype}")
    if kernel < 1 or stride < 1 or not 0 <= 2 * padding <= kernel:
        raise ValueError(f"invalid max pool: kernel {kernel}, stride {stride}, padding {padding} "
                         "(padding must be at most half the kernel)")
    oh, ow = (_pool_out(s, kernel, stride, padding, ceil_mode) for s in x.shape[2:])
    if min(oh, ow) < 1:
        raise ValueError(f"input {tuple(x.shape[2:])} is too small for a {kernel}x{kernel}/{stride} max pool "
                         f"(padding {padding})")
    return x.shape[0], x.shape[1], oh, ow


@torch.library.impl(_LIB, "max_pool2d", "CompositeExplicitAutograd")
def _max_pool2d_impl(x, kernel, stride, padding, ceil_mode, backend):
    _max_pool2d_shape(x, kernel, stride, padding, ceil_mode)
    if backend == "torch":
        y = F.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode)
        return y.contiguous(memory_format=torch.channels_last)
    _check_triton("max_pool2d", backend, x)
    from .backends.triton.maxpool import launch_max_pool

    with _on_device(x):
        return launch_max_pool(x, kernel, stride, padding, ceil_mode)


@torch.library.register_fake("inception_fast::max_pool2d")
def _max_pool2d_fake(x, kernel, stride, padding, ceil_mode, backend):
    shape = _max_pool2d_shape(x, kernel, stride, padding, ceil_mode)
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)


def _max_pool2d_setup_context(ctx, inputs, output):
    x, kernel, stride, padding, ceil_mode, _backend = inputs
    ctx.save_for_backward(x)
    ctx.pool = (kernel, stride, padding, ceil_mode)


def _max_pool2d_backward(ctx, grad):
    """ATen's max-pool gradient (the argmax is recomputed: the forward keeps none)."""
    (x,) = ctx.saved_tensors
    kernel, stride, padding, ceil_mode = ctx.pool
    with torch.enable_grad():
        leaf = x.detach().requires_grad_()
        y = F.max_pool2d(leaf, kernel, stride, padding, ceil_mode=ceil_mode)
        (grad_x,) = torch.autograd.grad(y, leaf, grad)
    return grad_x, None, None, None, None, None


torch.library.register_autograd("inception_fast::max_pool2d", _max_pool2d_backward,
                                setup_context=_max_pool2d_setup_context)


def max_pool2d(x, kernel, stride, padding=0, ceil_mode=False, backend="torch"):
    """F.max_pool2d with a square window and dilation 1, returned channels_last ("triton": no index
    tensor, see backends/triton/maxpool.py).  Differentiable: the backward is ATen's."""
    return torch.ops.inception_fast.max_pool2d(x, kernel, stride, padding, ceil_mode, backend)


def conv_relu_maxpool(x, w, b, stride, padding, pool_kernel=1, pool_stride=1, pool_padding=0, ceil_mode=False,
                      backend="torch"):
    """max_pool2d(relu(conv2d(x, w, b, stride, padding)), ...) as one op, channels_last
    (pool_kernel=1 and pool_stride=1: no pool).  Inference only."""
    return torch.ops.inception_fast.conv_relu_maxpool(x, w, b, stride, padding, pool_kernel, pool_stride,
                                                      pool_padding, ceil_mode, backend)


def inception_block(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, backend="torch"):
    """Inference forward of one block; returns the (N, C_total, H, W) channels_last output."""
    return torch.ops.inception_fast.inception_block(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, backend)[0]


def resolve_backend(backend: str, device) -> str:
    """What the op is given for ``backend`` on ``device``.

    A named backend is returned after checking it runs there (else a RuntimeError that lists
    the ones that do).  ``"auto"`` becomes "torch" off CUDA and stays "auto" on CUDA, where
    ``AUTO`` chooses per block shape at run time.
    """
    device = torch.device(device)
    if backend == "auto":
        return "auto" if device.type == "cuda" else "torch"
    why = _backends.availability(backend, device)
    if why is not None:
        avail = ", ".join(_backends.available_backends(device)) or "none"
        raise RuntimeError(f"backend {backend!r} is unavailable on {device}: {why}. Available on {device}: {avail}")
    return backend


# -- measured choices: backend="auto", the stem's first conv ----------------------------------------
# Order used where nothing is measured, and the tie-break.  From the H100 run of 2026-11-27
# (benchmarks/results): cuda was fastest at batch 1 and 64 and in 7 of the 9 blocks at batch 256.
AUTO_STATIC_ORDER = ("cuda", "triton", "torch")
# INCEPTION_FAST_AUTO=static: never measure; every measured choice takes its first candidate.
ENV_AUTO = "INCEPTION_FAST_AUTO"


@dataclass(frozen=True)
class Choice:
    name: str
    seconds: dict = field(default_factory=dict)  # candidate -> median seconds of one call
    errors: dict = field(default_factory=dict)   # candidate -> why it could not run


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


class MeasuredChoice:
    """Per key, the fastest of interchangeable computations, measured once, like cudnn.benchmark.

    ``pick(key, device, runners)`` gets the candidates as {name: zero-argument callable} in order
    of preference.  The first time it sees ``key`` it times each (``repeats`` runs after a
    warm-up; a candidate that raises is skipped and its error kept) and remembers the fastest for
    the rest of the process.  It measures nothing, and returns the first candidate, where it
    cannot or should not: off the ``measure_on`` device types, during CUDA-graph capture or
    torch.compile tracing (a later eager call measures), and with INCEPTION_FAST_AUTO=static.
    The candidates agree within the tolerance table, not bit for bit.  It keeps the choices of
    the ``inception_fast.caches.cache_capacity()`` most recently used keys; errors are kept short.
    """

    def __init__(self, measure_on=("cuda",), repeats: int = 5,
                 timer: Callable[[Callable[[], object], torch.device, int], float] = _time_call) -> None:
        self.measure_on = tuple(measure_on)
        self.repeats = repeats
        self.timer = timer
        self._choices = LRUDict()  # bounded: see inception_fast.caches

    def choices(self) -> dict:
        """{key: Choice} measured so far in this process."""
        return dict(self._choices)

    def clear(self) -> None:
        self._choices.clear()

    def lookup(self, key):
        """The name chosen for ``key``, or None before it was measured: callers check this first
        and build their runners only on a miss."""
        hit = self._choices.get(key)
        return None if hit is None else hit.name

    def can_measure(self, device: torch.device) -> bool:
        if device.type not in self.measure_on or os.environ.get(ENV_AUTO, "").strip().lower() == "static":
            return False
        if torch.compiler.is_compiling() or _dispatch_mode_active():
            return False  # tracing, or a mode (FlopCounterMode, fake tensors) that would see the timing runs
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


class AutoBackend(MeasuredChoice):
    """``backend="auto"``: per block shape, the available backend of ``order`` measured fastest.

    The key is (device, dtype, input shape, weight shapes, TF32 setting); off CUDA the answer
    is "torch".  A named backend is the reproducible choice.
    """

    def __init__(self, order=AUTO_STATIC_ORDER, **kwargs) -> None:
        super().__init__(**kwargs)
        self.order = tuple(order)

    def candidates(self, device: torch.device) -> list[str]:
        return [n for n in self.order if _backends.availability(n, device) is None]

    @staticmethod
    def key(x, w_red, w_pool, w3, w5) -> tuple:
        # fp32 precision: the kernels follow cuDNN's TF32 flag, the torch backend's GEMMs matmul's.
        tf32 = ((torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision())
                if x.dtype == torch.float32 else None)
        return (str(x.device), x.dtype, tuple(x.shape), tuple(w_red.shape), tuple(w_pool.shape),
                tuple(w3.shape), tuple(w5.shape), tf32)

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
        runners = {name: (lambda f=_backends.get(name).block_forward: f(*args)) for name in names}
        try:
            return self.pick(key, x.device, runners)
        except RuntimeError as exc:
            raise RuntimeError(f"backend 'auto': every backend failed on input shape {tuple(x.shape)}: {exc}") from exc


AUTO = AutoBackend()


class InceptionBlockFunction(torch.autograd.Function):
    """Autograd for ``inception_block``: forward is the fused op, backward is ATen."""

    @staticmethod
    def forward(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, backend):
        out, scratch = torch.ops.inception_fast.inception_block(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, backend)
        return out, scratch

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, _ = inputs
        out, scratch = output
        ctx.save_for_backward(x, w_red, w_pool, w3, w5, out, scratch)
        ctx.mark_non_differentiable(scratch)

    @staticmethod
    def backward(ctx, grad_out, _grad_scratch):
        x, w_red, w_pool, w3, w5, out, scratch = ctx.saved_tensors
        ch1, ch3red, ch5red, ch3, ch5, pool = block_shapes(x, w_red, w_pool, w3, w5)
        n, cin, h, w = x.shape
        cl = torch.channels_last
        # Every branch ends in ReLU, so one mask from the saved output covers all four.
        g = (grad_out * (out > 0)).contiguous(memory_format=cl)
        g1, g3, g5, gp = torch.split(g, [ch1, ch3, ch5, pool], dim=1)
        red3, red5 = torch.split(scratch, [ch3red, ch5red], dim=1)
        need_x = ctx.needs_input_grad[0]

        def conv_grads(g_br, inp, wgt):
            k = wgt.shape[-1]
            gi, gw, gb = torch.ops.aten.convolution_backward(
                g_br, inp, wgt, [wgt.shape[0]], [1, 1], [k // 2, k // 2], [1, 1], False, [0, 0], 1,
                [True, True, True])
            return gi, gw, gb

        gr3, gw3, gb3 = conv_grads(g3, red3, w3)
        gr5, gw5, gb5 = conv_grads(g5, red5, w5)
        g_red_cols = torch.cat([g1, gr3 * (red3 > 0), gr5 * (red5 > 0)], dim=1)
        # NHWC views as GEMM operands: [N*H*W, C].
        g_red2d = g_red_cols.permute(0, 2, 3, 1).reshape(-1, w_red.shape[0])
        x2d = x.permute(0, 2, 3, 1).reshape(-1, cin)
        gw_red = g_red2d.t().mm(x2d)
        gb_red = g_red2d.sum(0)
        pooled, idx = F.max_pool2d_with_indices(x, 3, 1, 1)
        gp2d = gp.permute(0, 2, 3, 1).reshape(-1, pool)
        gw_pool = gp2d.t().mm(pooled.permute(0, 2, 3, 1).reshape(-1, cin))
        gb_pool = gp2d.sum(0)
        gx = None
        if need_x:
            # The three 1x1 input gradients are one GEMM against the packed weights.
            gx2d = g_red2d.mm(w_red)
            gx = gx2d.reshape(n, h, w, cin).permute(0, 3, 1, 2)
            g_pooled = gp2d.mm(w_pool).reshape(n, h, w, cin).permute(0, 3, 1, 2)
            gx = gx + torch.ops.aten.max_pool2d_with_indices_backward(
                g_pooled, x, [3, 3], [1, 1], [1, 1], [1, 1], False, idx)
        return gx, gw_red, gb_red, gw_pool, gb_pool, gw3, gb3, gw5, gb5, None


# The op is differentiable on its own too (same backward), so direct calls, opcheck and
# torch.compile's AOT autograd all see one autograd formula.
torch.library.register_autograd(
    "inception_fast::inception_block", InceptionBlockFunction.backward, setup_context=InceptionBlockFunction.setup_context
)
