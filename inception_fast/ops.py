"""The ops layer: torch.library schemas, fake kernels, autograd and backend choice.

Schemas are defined here in Python, so every op exists (with a fake kernel for
torch.compile) even when the compiled extension is absent.

* ``inception_fast::inception_block`` -- one Inception block's inference forward
  from packed weights (see ``inception_fast.packing``), computed by the named
  backend.  Returns ``(out, scratch)``: the concatenated block output and the two
  post-ReLU reductions (saved for the backward pass).  Both channels_last.
* ``inception_fast::reduce_pool_`` and ``inception_fast::branch_convs_`` -- the
  two launches as separate mutating ops; their kernels come from the compiled
  extension (csrc/, ``TORCH_LIBRARY_IMPL(inception_fast, CPU/CUDA, ...)``).

``InceptionBlockFunction`` wraps ``inception_block`` for training: its backward
is ATen (the three 1x1 input gradients as one GEMM, the pool branch through the
max pool, ReLU masks from the saved outputs).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import backends as _backends

__all__ = ["inception_block", "InceptionBlockFunction", "resolve_backend", "block_shapes"]

_LIB = torch.library.Library("inception_fast", "DEF")  # kept alive: dropping it would remove the schemas
_LIB.define(
    "inception_block(Tensor x, Tensor w_red, Tensor b_red, Tensor w_pool, Tensor b_pool, "
    "Tensor w3, Tensor b3, Tensor w5, Tensor b5, str backend) -> (Tensor, Tensor)"
)
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
    if x.shape[0] < 1 or x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"Inception block needs a non-empty input, got shape {tuple(x.shape)}")


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
    impl = _backends.get(backend)
    why = impl.unavailable_reason(x.device)
    if why is not None:
        raise RuntimeError(f"backend {backend!r} is unavailable on {x.device}: {why}")
    x = x.contiguous(memory_format=torch.channels_last)
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


def inception_block(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, backend="torch"):
    """Inference forward of one block; returns the (N, C_total, H, W) channels_last output."""
    return torch.ops.inception_fast.inception_block(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, backend)[0]


def resolve_backend(backend: str, device) -> str:
    """Maps "auto" to a concrete backend for ``device``; checks a named one is available there."""
    device = torch.device(device)
    if backend == "auto":
        if device.type == "cuda":
            for name in _backends._PLUGINS:
                if _backends.availability(name, device) is None:
                    return name
        return "torch"
    why = _backends.availability(backend, device)
    if why is not None:
        avail = ", ".join(_backends.available_backends(device)) or "none"
        raise RuntimeError(f"backend {backend!r} is unavailable on {device}: {why}. Available on {device}: {avail}")
    return backend


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
