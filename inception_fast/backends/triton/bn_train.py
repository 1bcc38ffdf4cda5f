"""Train-mode BatchNorm for the block (the "triton" backend's ``inception_block_bn_train`` kernel):
convolutions whose epilogue yields the batch statistics, and the normalise + ReLU pass.

* ``_gemm_stats_kernel``: a 1x1 conv as y[M, N] = a[M, K] @ w[N, K]^T + b, M = N*H*W pixel rows.
* ``_conv_stats_kernel``: a kxk conv (stride 1, zero padding k // 2) as an implicit GEMM over
  (kh, kw, cin), reading the NHWC scratch in place (out-of-image taps load 0), with the forward's
  flat K loop (``branch_convs._conv_acc``).
* Both store y in its dtype (fp32 accumulation) into a contiguous [M, Cout] piece of the block's
  pre-BN buffer, and their shared epilogue (``_store_with_stats``) also writes, per BLOCK_M-row
  tile and column, the tile's mean and sum of squared deviations from that mean (M2) of the stored
  (rounded) values, in fp32: the two-pass variance within the tile, which the tile holds in
  registers.  ``combine_tile_stats`` merges the tiles in a fixed order (Chan's parallel formula,
  ATen reductions over a fixed shape): deterministic, no atomics, and no E[y^2] - E[y]^2
  cancellation.
* ``_bn_relu_kernel``: dest = relu(y * scale + shift) per column, one read of y and one write of
  dest (a channel slice of the block output, or the scratch).

Alignment: row strides and channel counts reach the kernels divided by a power of two (the
``*_div_unit`` arguments, multiplied back by the constexpr ROW_UNIT / W_UNIT / C_UNIT inside, as in
the forward: ``_common.row_unit``), so 4b's and 4c's rows of 296/280 reduce channels and 136/152
scratch channels, multiples of 8 but not 16, still load with cp.async and store in vectors.

The block (``block_bn_train_forward``): the three 1x1s as ONE GEMM over x, the 3x3 and kxk over the
normalised scratch, the pool projection as one GEMM over the pooled input (the Triton max pool),
each followed by the light pass into its slices: 3 + 2 + 2 + 2 launches, plus the max pool and a
few per-channel vector ops.  Not yet fused further: the normalise pass of the reductions cannot run
inside the 3x3/kxk load (their statistics are complete only after the whole first GEMM), and no
kernel here has been tuned or even run on a GPU (one fixed tile, no autotuning).  Dtypes float32 /
float16 / bfloat16 (not bfloat16 under the interpreter); 64-bit row offsets.  Run by
backend="triton", and under "auto" on CUDA where ``choices.BN_TRAIN`` checked it against ATen
and measured it faster.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ... import geometry
from . import _common
from ._common import pixel_rows, row_offsets
from .branch_convs import _conv_acc
from .maxpool import launch_max_pool

__all__ = [
    "launch_gemm_stats",
    "launch_conv_stats",
    "combine_tile_stats",
    "launch_bn_relu",
    "block_bn_train_forward",
]


# The *_div_unit values get their alignment from the constexpr units they are multiplied by (see
# _common.row_unit): 4b's 296 reduce columns and 136-channel scratch rows are multiples of 8, not 16.
@triton.jit(
    do_not_specialize=["M"],
    do_not_specialize_on_alignment=[
        "n_div_unit",
        "k_div_unit",
        "stride_am_div_unit",
        "stride_wn_div_unit",
        "stride_ym_div_unit",
    ],
)
def _gemm_stats_kernel(
    a_ptr,
    w_ptr,
    b_ptr,
    y_ptr,
    tile_mean_ptr,
    tile_m2_ptr,
    M,
    n_div_unit,
    k_div_unit,
    stride_am_div_unit,
    stride_ak,
    stride_wn_div_unit,
    stride_wk,
    stride_ym_div_unit,
    stride_yn,
    DOT_PRECISION: tl.constexpr,
    ROW_UNIT: tl.constexpr,
    C_UNIT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """One BLOCK_M x BLOCK_N tile of y = a @ w^T + b, then the shared epilogue."""
    N = n_div_unit * C_UNIT
    K = k_div_unit * C_UNIT
    stride_am = stride_am_div_unit * ROW_UNIT
    stride_wn = stride_wn_div_unit * ROW_UNIT
    stride_ym = stride_ym_div_unit * ROW_UNIT
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    m_ok = offs_m < M
    n_ok = offs_n < N
    rows = offs_m.to(tl.int64)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k_ok = k0 + offs_k < K
        a = tl.load(
            a_ptr + rows[:, None] * stride_am + (k0 + offs_k)[None, :] * stride_ak,
            mask=m_ok[:, None] & k_ok[None, :],
            other=0.0,
        )
        w = tl.load(
            w_ptr + offs_n[None, :] * stride_wn + (k0 + offs_k)[:, None] * stride_wk,
            mask=k_ok[:, None] & n_ok[None, :],
            other=0.0,
        )
        acc = tl.dot(a, w, acc, input_precision=DOT_PRECISION)
    _store_with_stats(
        acc,
        b_ptr,
        y_ptr,
        tile_mean_ptr,
        tile_m2_ptr,
        rows,
        m_ok,
        offs_n,
        n_ok,
        pid_m,
        M,
        N,
        stride_ym,
        stride_yn,
        BLOCK_M,
    )


@triton.jit
def _store_with_stats(
    acc,
    b_ptr,
    y_ptr,
    tile_mean_ptr,
    tile_m2_ptr,
    rows,
    m_ok,
    offs_n,
    n_ok,
    pid_m,
    M,
    N,
    stride_ym,
    stride_yn,
    BLOCK_M: tl.constexpr,
):
    """The epilogue both kernels share: + bias, store in y's dtype, and the tile's per-column mean and
    M2 of the stored values (rows past M excluded) into row pid_m of the tile statistics."""
    acc += tl.load(b_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    y = acc.to(y_ptr.dtype.element_ty)
    ok = m_ok[:, None] & n_ok[None, :]
    tl.store(y_ptr + rows[:, None] * stride_ym + offs_n[None, :] * stride_yn, y, mask=ok)
    # The statistics of what was stored (BatchNorm sees the rounded conv output).
    v = tl.where(m_ok[:, None], y.to(tl.float32), 0.0)
    count = tl.minimum(M - pid_m * BLOCK_M, BLOCK_M).to(tl.float32)
    mean = tl.sum(v, axis=0) / count
    d = tl.where(m_ok[:, None], v - mean[None, :], 0.0)
    m2 = tl.sum(d * d, axis=0)
    tl.store(tile_mean_ptr + pid_m * N + offs_n, mean, mask=n_ok)
    tl.store(tile_m2_ptr + pid_m * N + offs_n, m2, mask=n_ok)


@triton.jit(
    do_not_specialize=["M", "H", "W"],
    do_not_specialize_on_alignment=[
        "cin_div_unit",
        "n_div_unit",
        "stride_sn_div_unit",
        "stride_sh_div_unit",
        "stride_sw_div_unit",
        "stride_wo_div_unit",
        "stride_wh_div_unit",
        "stride_ww_div_unit",
        "stride_ym_div_unit",
    ],
)
def _conv_stats_kernel(
    src_ptr,
    w_ptr,
    b_ptr,
    y_ptr,
    tile_mean_ptr,
    tile_m2_ptr,
    M,
    H,
    W,
    cin_div_unit,
    n_div_unit,
    stride_sn_div_unit,
    stride_sh_div_unit,
    stride_sw_div_unit,
    stride_sc,
    stride_wo_div_unit,
    stride_wh_div_unit,
    stride_ww_div_unit,
    stride_wc,
    stride_ym_div_unit,
    stride_yn,
    KS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    ROW_UNIT: tl.constexpr,
    W_UNIT: tl.constexpr,
    C_UNIT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """A KSxKS convolution (stride 1, zero padding KS // 2) as an implicit GEMM over (kh, kw, cin), the
    forward's one flat K loop (branch_convs._conv_acc): y[pixel, cout] of src (N, CIN, H, W) in any
    strides, then the shared epilogue."""
    cin = cin_div_unit * C_UNIT
    N = n_div_unit * C_UNIT
    stride_sn, stride_sh, stride_sw = (
        stride_sn_div_unit * ROW_UNIT,
        stride_sh_div_unit * ROW_UNIT,
        stride_sw_div_unit * ROW_UNIT,
    )
    stride_wo, stride_wh, stride_ww = (
        stride_wo_div_unit * W_UNIT,
        stride_wh_div_unit * W_UNIT,
        stride_ww_div_unit * W_UNIT,
    )
    pid_m = tl.program_id(0)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    m_ok, img, hh, ww = pixel_rows(pid_m * BLOCK_M, M, H, W, BLOCK_M)
    src_row = row_offsets(img, hh, ww, stride_sn, stride_sh, stride_sw)
    acc = _conv_acc(
        src_ptr, w_ptr, src_row, m_ok, hh, ww, offs_n, n_ok, H, W, cin, 0, 0, KS * KS * tl.cdiv(cin, BLOCK_K),
        stride_sh, stride_sw, stride_sc, stride_wo, stride_wh, stride_ww, stride_wc,
        KS, DOT_PRECISION, BLOCK_M, BLOCK_N, BLOCK_K, 0,
    )  # fmt: skip
    rows = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    _store_with_stats(
        acc,
        b_ptr,
        y_ptr,
        tile_mean_ptr,
        tile_m2_ptr,
        rows,
        m_ok,
        offs_n,
        n_ok,
        pid_m,
        M,
        N,
        stride_ym_div_unit * ROW_UNIT,
        stride_yn,
        BLOCK_M,
    )


@triton.jit(
    do_not_specialize=["M"],
    do_not_specialize_on_alignment=["c_div_unit", "stride_ym_div_unit", "stride_dm_div_unit"],
)
def _bn_relu_kernel(
    y_ptr,
    dest_ptr,
    scale_ptr,
    shift_ptr,
    M,
    c_div_unit,
    stride_ym_div_unit,
    stride_yc,
    stride_dm_div_unit,
    stride_dc,
    ROW_UNIT: tl.constexpr,
    C_UNIT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    C = c_div_unit * C_UNIT
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = offs_c < C
    ok = (offs_m < M)[:, None] & c_ok[None, :]
    rows = offs_m.to(tl.int64)
    y = tl.load(
        y_ptr + rows[:, None] * (stride_ym_div_unit * ROW_UNIT) + offs_c[None, :] * stride_yc, mask=ok, other=0.0
    )
    scale = tl.load(scale_ptr + offs_c, mask=c_ok, other=0.0)
    shift = tl.load(shift_ptr + offs_c, mask=c_ok, other=0.0)
    z = tl.maximum(y.to(tl.float32) * scale[None, :] + shift[None, :], 0.0, propagate_nan=tl.PropagateNan.ALL)
    dest = dest_ptr + rows[:, None] * (stride_dm_div_unit * ROW_UNIT) + offs_c[None, :] * stride_dc
    tl.store(dest, z.to(dest_ptr.dtype.element_ty), mask=ok)


# One fixed tile (no autotuning: no GPU has measured these kernels); the interpreter's is larger
# (it pays per program, not per element).
GPU_CONFIG = triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=3)
INTERPRETER_CONFIG = triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64}, num_warps=4, num_stages=1)
PASS_CONFIG = triton.Config({"BLOCK_M": 64, "BLOCK_C": 64}, num_warps=4, num_stages=1)


def _gemm_config() -> triton.Config:
    return INTERPRETER_CONFIG if _common.INTERPRET else GPU_CONFIG


def _tile_stats(rows: int, n: int, config: triton.Config, like: torch.Tensor) -> tuple:
    """The per-tile (mean, M2) buffers [ceil(rows / BLOCK_M), n] float32 and the launch grid."""
    tiles_m = _common.cdiv(rows, config.kwargs["BLOCK_M"])
    tile_mean = torch.empty((tiles_m, n), dtype=torch.float32, device=like.device)
    return tile_mean, torch.empty_like(tile_mean), (tiles_m, _common.cdiv(n, config.kwargs["BLOCK_N"]))


def _gemm_arguments(a2d, w, b, y2d, config: triton.Config) -> tuple:
    """(args, launcher-fixed constexprs, grid, tile_mean, tile_m2) of _gemm_stats_kernel."""
    _common.check_dtype(a2d.dtype)
    m, k = a2d.shape
    n = w.shape[0]
    geometry.check_pixel_rows(m)
    unit, c_unit = _common.stride_unit(a2d.stride(0), w.stride(0), y2d.stride(0)), _common.pow2_unit(k, n)
    tile_mean, tile_m2, grid = _tile_stats(m, n, config, a2d)
    args = (
        a2d,
        w,
        b,
        y2d,
        tile_mean,
        tile_m2,
        m,
        n // c_unit,
        k // c_unit,
        a2d.stride(0) // unit,
        a2d.stride(1),
        w.stride(0) // unit,
        w.stride(1),
        y2d.stride(0) // unit,
        y2d.stride(1),
    )
    meta = {"DOT_PRECISION": _common.dot_precision(a2d.dtype), "ROW_UNIT": unit, "C_UNIT": c_unit}
    return args, meta, grid, tile_mean, tile_m2


def _conv_arguments(src, w, b, y2d, config: triton.Config) -> tuple:
    """(args, launcher-fixed constexprs, grid, tile_mean, tile_m2) of _conv_stats_kernel."""
    _common.check_dtype(src.dtype)
    n, cin, h, wd = src.shape
    cout, k = w.shape[0], w.shape[-1]
    m = n * h * wd
    geometry.check_pixel_rows(m)
    unit = _common.stride_unit(_common.row_unit(src), y2d.stride(0))
    c_unit = _common.pow2_unit(cin, cout)
    w_unit, w_strides = _common.weight_strides(w)
    tile_mean, tile_m2, grid = _tile_stats(m, cout, config, src)
    args = (
        src,
        w,
        b,
        y2d,
        tile_mean,
        tile_m2,
        m,
        h,
        wd,
        cin // c_unit,
        cout // c_unit,
        *_common.row_strides(src, unit),
        *w_strides,
        y2d.stride(0) // unit,
        y2d.stride(1),
    )
    meta = {
        "KS": k,
        "DOT_PRECISION": _common.dot_precision(src.dtype),
        "ROW_UNIT": unit,
        "W_UNIT": w_unit,
        "C_UNIT": c_unit,
    }
    return args, meta, grid, tile_mean, tile_m2


def _launch(kernel, grid, args: tuple, meta: dict, config: triton.Config) -> None:
    options = {} if _common.INTERPRET else {"num_warps": config.num_warps, "num_stages": config.num_stages}
    _common.launch(kernel, grid, *args, **meta, **config.kwargs, **options)


def launch_gemm_stats(a2d: torch.Tensor, w: torch.Tensor, b: torch.Tensor, y2d: torch.Tensor):
    """y2d = a2d @ w.T + b (a2d [M, K], w [N, K], y2d [M, N], any strides); returns the per-tile
    (mean, M2) [ceil(M / BLOCK_M), N] float32 and BLOCK_M, for ``combine_tile_stats``."""
    config = _gemm_config()
    args, meta, grid, tile_mean, tile_m2 = _gemm_arguments(a2d, w, b, y2d, config)
    _launch(_gemm_stats_kernel, grid, args, meta, config)
    return tile_mean, tile_m2, config.kwargs["BLOCK_M"]


def launch_conv_stats(src: torch.Tensor, w: torch.Tensor, b: torch.Tensor, y2d: torch.Tensor):
    """y2d = conv2d(src, w, b, padding=k // 2) as [N*H*W, Cout] (src (N, Cin, H, W) and w (Cout, Cin,
    k, k) in any strides); returns the per-tile (mean, M2) and BLOCK_M, as ``launch_gemm_stats``."""
    config = _gemm_config()
    args, meta, grid, tile_mean, tile_m2 = _conv_arguments(src, w, b, y2d, config)
    _launch(_conv_stats_kernel, grid, args, meta, config)
    return tile_mean, tile_m2, config.kwargs["BLOCK_M"]


def combine_tile_stats(tile_mean: torch.Tensor, tile_m2: torch.Tensor, rows: int, block_m: int):
    """(mean, biased variance) per column from the per-tile means and M2s of ``rows`` rows in tiles of
    ``block_m`` (the last one partial): Chan's formula, M2 = sum(M2_t) + sum(n_t (mean_t - mean)^2)."""
    tiles = tile_mean.shape[0]
    counts = torch.full((tiles, 1), float(block_m), dtype=torch.float32, device=tile_mean.device)
    counts[-1] = rows - (tiles - 1) * block_m
    mean = (tile_mean * counts).sum(0) / rows
    m2 = tile_m2.sum(0) + (counts * (tile_mean - mean).square()).sum(0)
    return mean, m2 / rows


def _bn_relu_arguments(y2d, dest2d, scale, shift) -> tuple:
    """(args, launcher-fixed constexprs, grid) of _bn_relu_kernel."""
    m, c = y2d.shape
    unit, c_unit = _common.stride_unit(y2d.stride(0), dest2d.stride(0)), _common.pow2_unit(c)
    args = (y2d, dest2d, scale, shift, m, c // c_unit, y2d.stride(0) // unit, y2d.stride(1))
    args += (dest2d.stride(0) // unit, dest2d.stride(1))
    grid = (_common.cdiv(m, PASS_CONFIG.kwargs["BLOCK_M"]), _common.cdiv(c, PASS_CONFIG.kwargs["BLOCK_C"]))
    return args, {"ROW_UNIT": unit, "C_UNIT": c_unit}, grid


def launch_bn_relu(y2d, dest2d, gamma, beta, mean, var, eps) -> None:
    """dest2d = relu((y2d - mean) * gamma / sqrt(var + eps) + beta) per column, one pass."""
    scale = (gamma.float() * torch.rsqrt(var + eps)).contiguous()
    shift = (beta.float() - mean * scale).contiguous()
    args, meta, grid = _bn_relu_arguments(y2d, dest2d, scale, shift)
    _launch(_bn_relu_kernel, grid, args, meta, PASS_CONFIG)


def block_bn_train_forward(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, gamma, beta, eps):
    """inception_block_bn_train on the triton backend (see the module docstring)."""
    _common.check_dtype(x.dtype)
    ch1, ch3red, ch5red, ch3, ch5, pool = geometry.block_channels(w_red, w_pool, w3, w5)
    n_red = w_red.shape[0]
    out, scratch, pre, (y_red, y3, y5, y_pool) = geometry.bn_train_buffers(x, w_red, w_pool, w3, w5)
    rows = y_red.shape[0]
    means, variances = [], []
    out2d, scr2d = geometry.rows(out), geometry.rows(scratch)

    def gemm(a2d, w, b, y2d):
        means_t, m2_t, block_m = launch_gemm_stats(a2d, w, b, y2d)
        return combine_tile_stats(means_t, m2_t, rows, block_m)

    def normalise(y2d, col0, mean, var, dests):
        means.append(mean)
        variances.append(var)
        sl = slice(col0, col0 + y2d.shape[1])
        g, bt = gamma[sl], beta[sl]
        for dest, cols in dests:
            launch_bn_relu(y2d[:, cols], dest, g[cols], bt[cols], mean[cols], var[cols], eps)

    stats_red = gemm(geometry.rows(x), w_red, b_red, y_red)
    normalise(y_red, 0, *stats_red, [(out2d[:, :ch1], slice(0, ch1)), (scr2d, slice(ch1, n_red))])
    col0 = n_red
    for y2d, dest0, inp, wgt, bias in (
        (y3, ch1, scratch[:, :ch3red], w3, b3),
        (y5, ch1 + ch3, scratch[:, ch3red:], w5, b5),
    ):
        means_t, m2_t, block_m = launch_conv_stats(inp, wgt, bias, y2d)
        mean, var = combine_tile_stats(means_t, m2_t, rows, block_m)
        normalise(y2d, col0, mean, var, [(out2d[:, dest0 : dest0 + y2d.shape[1]], slice(None))])
        col0 += y2d.shape[1]
    pooled = launch_max_pool(x, 3, 1, 1, False)
    stats_pool = gemm(geometry.rows(pooled), w_pool, b_pool, y_pool)
    normalise(y_pool, col0, *stats_pool, [(out2d[:, ch1 + ch3 + ch5 :], slice(None))])
    return out, scratch, pre, torch.cat(means), torch.cat(variances)
