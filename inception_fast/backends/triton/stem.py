"""The stem's first layer in one Triton kernel: a KSxKS strided convolution over an input with few
channels (GoogLeNet's conv1: 7x7, stride 2, pad 3, 3 -> 64 channels) + bias + ReLU, with the max
pool that follows it (maxpool1: 3x3, stride 2, ceil_mode or padding 1) fused in.

Why: conv1 reads 3 channels, too few for cuDNN's NHWC tensor-core kernels, and its output
(64 x 112 x 112 per image, 411 MB at batch 256 in bf16) is 4x larger than the pooled result the
network keeps.  Here the conv output never reaches memory: each program owns BLOCK_M *pooled*
output pixels and one column tile, and for each of the pool's POOL_K x POOL_K taps computes the
conv output under that tap as an implicit GEMM, [BLOCK_M] x [K = KS*KS*CIN] x [BLOCK_N], keeping
the running max.  Neighbouring pool windows overlap, so ~(POOL_K / POOL_S)^2 = 2.25x the conv's
FLOPs are spent (conv1 is only 118 MMAC per image); the taps' input reads mostly hit L1/L2.
POOL_K = 1 (no pool) gives the plain conv + bias + ReLU.

Maths: max over taps commutes with "+ bias" and with ReLU, so the epilogue is relu(max + bias).
Taps outside the conv output (pool padding, ceil_mode's overhang) are -inf, as in F.max_pool2d;
PyTorch's output-size rule guarantees every window holds at least one real tap.

Operands: x (N, CIN, H, W) in any strides (NCHW and channels_last both read directly, so the
model needs no layout conversion before its first conv); w (COUT, CIN, KS, KS) in any strides,
K ordered (kh, kw, cin) as in a channels_last weight; out (N, COUT, PH, PW) channels_last.
Dtypes: fp16/bf16 operands with fp32 accumulation; fp32 uses TF32 only when
torch.backends.cudnn.allow_tf32 is on, else exact fp32.  Offsets are 64-bit.  NaN propagates
through the pool and the ReLU as in PyTorch.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ... import geometry
from . import _common
from ._common import pixel_tile, row_offsets

__all__ = ["launch_conv_relu_maxpool", "CONFIGS", "INTERPRETER_CONFIG"]


@triton.jit(do_not_specialize=["M", "H", "W", "OH", "OW", "PH", "PW"])
def _conv_pool_kernel(
    # Pointers: input, conv weight and bias, the channels_last output.
    x_ptr,
    w_ptr,
    b_ptr,
    out_ptr,
    # Sizes: M = N*PH*PW output pixels; input H x W; conv output OH x OW; pooled PH x PW; channels out.
    M,
    H,
    W,
    OH,
    OW,
    PH,
    PW,
    COUT,
    # Strides in elements, each tensor's in its dim order.
    stride_x_n,
    stride_x_c,
    stride_x_h,
    stride_x_w,
    stride_w_o,
    stride_w_c,
    stride_w_h,
    stride_w_w,
    stride_b,
    stride_out_n,
    stride_out_c,
    stride_out_h,
    stride_out_w,
    # Fixed by the launcher: input channels, the conv's and the pool's geometry, tf32/ieee.
    CIN: tl.constexpr,
    KS: tl.constexpr,
    STRIDE: tl.constexpr,
    PAD: tl.constexpr,
    POOL_K: tl.constexpr,
    POOL_S: tl.constexpr,
    POOL_P: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    # The tile (autotuned).
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """relu(conv(x, w) + b) max-pooled, for BLOCK_M pooled pixels x BLOCK_N channels: per pool tap,
    the conv output under it as an implicit GEMM over (kh, kw, cin), keeping the running max; the
    conv output never reaches memory.  POOL_K = 1 is the plain conv + bias + ReLU."""
    K: tl.constexpr = KS * KS * CIN
    pid_n, row_ok, img, ph, pw = pixel_tile(tl.program_id(0), tl.cdiv(COUT, BLOCK_N), M, PH, PW, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = offs_n < COUT
    offs_k = tl.arange(0, BLOCK_K)
    best = tl.full((BLOCK_M, BLOCK_N), float("-inf"), dtype=tl.float32)
    for tap in range(POOL_K * POOL_K):
        oh = ph * POOL_S - POOL_P + tap // POOL_K
        ow = pw * POOL_S - POOL_P + tap % POOL_K
        tap_ok = row_ok & (oh >= 0) & (oh < OH) & (ow >= 0) & (ow < OW)
        ih0 = oh * STRIDE - PAD
        iw0 = ow * STRIDE - PAD
        x_row = row_offsets(img, ih0, iw0, stride_x_n, stride_x_h, stride_x_w)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        # The (kh, kw, cin) decomposition is per K column, i.e. BLOCK_K values a step.
        for k0 in range(0, K, BLOCK_K):
            kk = k0 + offs_k
            k_ok = kk < K
            cin = kk % CIN
            kw = (kk // CIN) % KS
            kh = kk // (CIN * KS)
            ih = ih0[:, None] + kh[None, :]
            iw = iw0[:, None] + kw[None, :]
            # One unsigned compare per axis: a negative index wraps past the bound.
            a_ok = (tap_ok[:, None] & k_ok[None, :]) & ((ih.to(tl.uint32) < H) & (iw.to(tl.uint32) < W))
            x_col = kh.to(tl.int64) * stride_x_h + kw.to(tl.int64) * stride_x_w + cin.to(tl.int64) * stride_x_c
            a = tl.load(x_ptr + x_row[:, None] + x_col[None, :], mask=a_ok, other=0.0)
            w_col = kh * stride_w_h + kw * stride_w_w + cin * stride_w_c
            b = tl.load(
                w_ptr + offs_n[None, :] * stride_w_o + w_col[:, None], mask=k_ok[:, None] & col_ok[None, :], other=0.0
            )
            acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
        best = tl.maximum(best, tl.where(tap_ok[:, None], acc, float("-inf")), propagate_nan=tl.PropagateNan.ALL)

    bias = tl.load(b_ptr + offs_n * stride_b, mask=col_ok, other=0.0).to(tl.float32)
    # Rows past M are -inf here: relu(-inf) = 0, and they are masked out of the store anyway.
    y = tl.maximum(best + bias[None, :], 0.0, propagate_nan=tl.PropagateNan.ALL).to(out_ptr.dtype.element_ty)
    o_row = row_offsets(img, ph, pw, stride_out_n, stride_out_h, stride_out_w)
    tl.store(out_ptr + o_row[:, None] + offs_n[None, :] * stride_out_c, y, mask=row_ok[:, None] & col_ok[None, :])


# conv1 (K = 147, COUT = 64): one column tile of 64.  128-row tiles for large batches; 64 and 32
# rows so that batch 1 (56x56 = 3136 pooled pixels) still spreads over the SMs.  In bf16/fp16 the
# gathered 2-byte loads cannot use cp.async (4 bytes at least), so num_stages changes nothing there.
# Warps grow with the rows: the pool keeps two [BLOCK_M, BLOCK_N] fp32 tiles (the tap's sum and
# the running max) in registers.
CONFIGS = [
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=8, num_stages=2),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 16}, num_warps=8, num_stages=2),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 16}, num_warps=4, num_stages=2),
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=2),
]
INTERPRETER_CONFIG = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32}

# Every shape argument and the input's channel and column strides (NCHW and channels_last read
# differently), so a tuned config is reused exactly for the shape and layout it was tuned on.
AUTOTUNE_KEY = [
    "M",
    "H",
    "W",
    "OH",
    "OW",
    "PH",
    "PW",
    "COUT",
    "CIN",
    "KS",
    "STRIDE",
    "PAD",
    "POOL_K",
    "POOL_S",
    "POOL_P",
    "DOT_PRECISION",
    "stride_x_c",
    "stride_x_w",
]


def make_tuned_kernel(configs=CONFIGS, **autotune_kwargs):
    """The autotuned kernel."""
    return triton.autotune(configs=configs, key=AUTOTUNE_KEY, **autotune_kwargs)(_conv_pool_kernel)


_tuned_kernel = None if _common.INTERPRET else make_tuned_kernel(cache_results=True, do_bench=_common.autotune_bench)


def _new_output(shape, x):
    """The channels_last output buffer (one place, so tests can poison it)."""
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)


def _arguments(x, w, b, stride, padding, pool_kernel, pool_stride, pool_padding, ceil_mode):
    """(positional args, launcher-fixed constexprs, grid(meta), out) for _conv_pool_kernel."""
    _common.check_dtype(x.dtype)
    n, cin, h, wd = x.shape
    cout, ks = w.shape[0], w.shape[-1]
    if w.dim() != 4 or w.shape[1] != cin or w.shape[2] != ks:
        raise ValueError(f"expected a square conv weight (Cout, {cin}, k, k), got {tuple(w.shape)}")
    oh, ow = geometry.conv_out(h, ks, stride, padding), geometry.conv_out(wd, ks, stride, padding)
    ph, pw = (geometry.pool_out(size, pool_kernel, pool_stride, pool_padding, ceil_mode) for size in (oh, ow))
    if min(oh, ow, ph, pw) < 1 or 2 * pool_padding > pool_kernel:
        raise ValueError(
            f"input {h}x{wd}: no output for a {ks}x{ks}/{stride} conv (padding {padding}) and a "
            f"{pool_kernel}x{pool_kernel}/{pool_stride} max pool (padding {pool_padding})"
        )
    m = n * ph * pw
    geometry.check_pixel_rows(m, "N*PH*PW")
    out = _new_output((n, cout, ph, pw), x)
    args = (
        x,
        w,
        b,
        out,
        m,
        h,
        wd,
        oh,
        ow,
        ph,
        pw,
        cout,
        x.stride(0),
        x.stride(1),
        x.stride(2),
        x.stride(3),
        w.stride(0),
        w.stride(1),
        w.stride(2),
        w.stride(3),
        b.stride(0),
        out.stride(0),
        out.stride(1),
        out.stride(2),
        out.stride(3),
    )
    meta = {
        "CIN": cin,
        "KS": ks,
        "STRIDE": stride,
        "PAD": padding,
        "POOL_K": pool_kernel,
        "POOL_S": pool_stride,
        "POOL_P": pool_padding,
        "DOT_PRECISION": _common.dot_precision(x.dtype),
    }

    def grid(cfg):
        return (_common.cdiv(m, cfg["BLOCK_M"]) * _common.cdiv(cout, cfg["BLOCK_N"]),)

    return args, meta, grid, out


def launch_conv_relu_maxpool(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    stride: int,
    padding: int,
    pool_kernel: int = 1,
    pool_stride: int = 1,
    pool_padding: int = 0,
    ceil_mode: bool = False,
    config: Optional[triton.Config] = None,
) -> torch.Tensor:
    """max_pool2d(relu(conv2d(x, w, b, stride, padding)), pool_kernel, pool_stride, pool_padding,
    ceil_mode) in one launch, returned channels_last; pool_kernel=1 is no pool.

    x (N, Cin, H, W) and w (Cout, Cin, k, k) in any strides.  ``config`` skips autotuning.
    """
    args, meta, grid, out = _arguments(x, w, b, stride, padding, pool_kernel, pool_stride, pool_padding, ceil_mode)
    if out.numel() > 0:  # CUDA rejects an empty grid
        _common.launch_configured(_conv_pool_kernel, _tuned_kernel, grid, args, meta, config, INTERPRETER_CONFIG)
    return out
