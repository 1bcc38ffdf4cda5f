"""Train-mode BatchNorm for the block (the "triton" backend's ``inception_block_bn_train`` kernel):
convolutions whose epilogue yields the batch statistics, and the normalise + ReLU pass.

* ``_gemm_stats_kernel``: a 1x1 conv as y[M, N] = a[M, K] @ w[N, K]^T + b, M = N*H*W pixel rows.
* ``_conv_stats_kernel``: a kxk conv (stride 1, zero padding k // 2) as an implicit GEMM over
  (kh, kw, cin), reading the NHWC scratch in place (out-of-image taps load 0).
* Both store y in its dtype (fp32 accumulation) into a contiguous [M, Cout] piece of the block's
  pre-BN buffer, and their shared epilogue (``_store_with_stats``) also writes, per BLOCK_M-row
  tile and column, the tile's mean and sum of squared deviations from that mean (M2) of the stored
  (rounded) values, in fp32: the two-pass variance within the tile, which the tile holds in
  registers.  ``combine_tile_stats`` merges the tiles in a fixed order (Chan's parallel formula,
  ATen reductions over a fixed shape): deterministic, no atomics, and no E[y^2] - E[y]^2
  cancellation.
* ``_bn_relu_kernel``: dest = relu(y * scale + shift) per column, one read of y and one write of
  dest (a channel slice of the block output, or the scratch).

The block (``block_bn_train_forward``): the three 1x1s as ONE GEMM over x, the 3x3 and kxk over the
normalised scratch, the pool projection as one GEMM over the pooled input (the Triton max pool),
each followed by the light pass into its slices: 2 + 2 + 2 + 2 launches, plus the max pool and a
few per-channel vector ops.  Not yet fused further: the normalise pass of the reductions cannot run
inside the 3x3/kxk load (their statistics are complete only after the whole first GEMM), and no
kernel here has been tuned or even run on a GPU (one fixed tile, no autotuning).  Dtypes float32 /
float16 / bfloat16 (float32 only under the interpreter); 64-bit row offsets.  Run by
backend="triton", and under "auto" on CUDA where ``choices.BN_TRAIN`` checked it against ATen
and measured it faster.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ... import geometry
from . import _common
from .maxpool import launch_max_pool

__all__ = [
    "launch_gemm_stats",
    "launch_conv_stats",
    "combine_tile_stats",
    "launch_bn_relu",
    "block_bn_train_forward",
]


@triton.jit
def _gemm_stats_kernel(
    a_ptr,
    w_ptr,
    b_ptr,
    y_ptr,
    tile_mean_ptr,
    tile_m2_ptr,
    M,
    N,
    K,
    stride_am,
    stride_ak,
    stride_wn,
    stride_wk,
    stride_ym,
    stride_yn,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
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


@triton.jit
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
    CIN,
    N,
    stride_sn,
    stride_sc,
    stride_sh,
    stride_sw,
    stride_wo,
    stride_wc,
    stride_wh,
    stride_ww,
    stride_ym,
    stride_yn,
    KS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """A KSxKS convolution (stride 1, zero padding KS // 2) as an implicit GEMM over (kh, kw, cin):
    y[pixel, cout] of src (N, CIN, H, W) in any strides, then the shared epilogue."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    m_ok = offs_m < M
    n_ok = offs_n < N
    img = (offs_m // (H * W)).to(tl.int64)
    hh = (offs_m // W) % H
    ww = offs_m % W
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kh in tl.static_range(KS):
        for kw in tl.static_range(KS):
            ih = hh + (kh - KS // 2)
            iw = ww + (kw - KS // 2)
            tap_ok = m_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            src_row = img * stride_sn + ih.to(tl.int64) * stride_sh + iw.to(tl.int64) * stride_sw
            for c0 in range(0, CIN, BLOCK_K):
                k_ok = c0 + offs_k < CIN
                a = tl.load(
                    src_ptr + src_row[:, None] + (c0 + offs_k)[None, :] * stride_sc,
                    mask=tap_ok[:, None] & k_ok[None, :],
                    other=0.0,
                )
                w = tl.load(
                    w_ptr
                    + offs_n[None, :] * stride_wo
                    + (c0 + offs_k)[:, None] * stride_wc
                    + kh * stride_wh
                    + kw * stride_ww,
                    mask=k_ok[:, None] & n_ok[None, :],
                    other=0.0,
                )
                acc = tl.dot(a, w, acc, input_precision=DOT_PRECISION)
    rows = offs_m.to(tl.int64)
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
def _bn_relu_kernel(
    y_ptr,
    dest_ptr,
    scale_ptr,
    shift_ptr,
    M,
    C,
    stride_ym,
    stride_yc,
    stride_dm,
    stride_dc,
    BLOCK_M: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = offs_c < C
    ok = (offs_m < M)[:, None] & c_ok[None, :]
    rows = offs_m.to(tl.int64)
    y = tl.load(y_ptr + rows[:, None] * stride_ym + offs_c[None, :] * stride_yc, mask=ok, other=0.0)
    scale = tl.load(scale_ptr + offs_c, mask=c_ok, other=0.0)
    shift = tl.load(shift_ptr + offs_c, mask=c_ok, other=0.0)
    z = tl.maximum(y.to(tl.float32) * scale[None, :] + shift[None, :], 0.0)
    dest = dest_ptr + rows[:, None] * stride_dm + offs_c[None, :] * stride_dc
    tl.store(dest, z.to(dest_ptr.dtype.element_ty), mask=ok)


# One fixed tile (no autotuning: no GPU has measured this kernel); the interpreter's is larger
# (it pays per program, not per element).
GPU_TILE = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32, "num_warps": 4, "num_stages": 3}
INTERPRETER_TILE = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64}
PASS_TILE = {"BLOCK_M": 64, "BLOCK_C": 64}


def launch_gemm_stats(a2d: torch.Tensor, w: torch.Tensor, b: torch.Tensor, y2d: torch.Tensor):
    """y2d = a2d @ w.T + b (a2d [M, K], w [N, K], y2d [M, N], any strides); returns the per-tile
    (mean, M2) [ceil(M / BLOCK_M), N] float32 and BLOCK_M, for ``combine_tile_stats``."""
    _common.check_dtype(a2d.dtype)
    m, k = a2d.shape
    n = w.shape[0]
    geometry.check_pixel_rows(m)
    tile = INTERPRETER_TILE if _common.INTERPRET else GPU_TILE
    tiles_m = _common.cdiv(m, tile["BLOCK_M"])
    tile_mean = torch.empty((tiles_m, n), dtype=torch.float32, device=a2d.device)
    tile_m2 = torch.empty_like(tile_mean)
    grid = (tiles_m, _common.cdiv(n, tile["BLOCK_N"]))
    _common.launch(
        _gemm_stats_kernel,
        grid,
        a2d,
        w,
        b,
        y2d,
        tile_mean,
        tile_m2,
        m,
        n,
        k,
        *a2d.stride(),
        *w.stride(),
        *y2d.stride(),
        DOT_PRECISION=_common.dot_precision(a2d.dtype),
        **tile,
    )
    return tile_mean, tile_m2, tile["BLOCK_M"]


def launch_conv_stats(src: torch.Tensor, w: torch.Tensor, b: torch.Tensor, y2d: torch.Tensor):
    """y2d = conv2d(src, w, b, padding=k // 2) as [N*H*W, Cout] (src (N, Cin, H, W) and w (Cout, Cin,
    k, k) in any strides); returns the per-tile (mean, M2) and BLOCK_M, as ``launch_gemm_stats``."""
    _common.check_dtype(src.dtype)
    n, cin, h, wd = src.shape
    cout, k = w.shape[0], w.shape[-1]
    m = n * h * wd
    geometry.check_pixel_rows(m)
    tile = INTERPRETER_TILE if _common.INTERPRET else GPU_TILE
    tiles_m = _common.cdiv(m, tile["BLOCK_M"])
    tile_mean = torch.empty((tiles_m, cout), dtype=torch.float32, device=src.device)
    tile_m2 = torch.empty_like(tile_mean)
    grid = (tiles_m, _common.cdiv(cout, tile["BLOCK_N"]))
    _common.launch(
        _conv_stats_kernel,
        grid,
        src,
        w,
        b,
        y2d,
        tile_mean,
        tile_m2,
        m,
        h,
        wd,
        cin,
        cout,
        *src.stride(),
        *w.stride(),
        *y2d.stride(),
        KS=k,
        DOT_PRECISION=_common.dot_precision(src.dtype),
        **tile,
    )
    return tile_mean, tile_m2, tile["BLOCK_M"]


def combine_tile_stats(tile_mean: torch.Tensor, tile_m2: torch.Tensor, rows: int, block_m: int):
    """(mean, biased variance) per column from the per-tile means and M2s of ``rows`` rows in tiles of
    ``block_m`` (the last one partial): Chan's formula, M2 = sum(M2_t) + sum(n_t (mean_t - mean)^2)."""
    tiles = tile_mean.shape[0]
    counts = torch.full((tiles, 1), float(block_m), dtype=torch.float32, device=tile_mean.device)
    counts[-1] = rows - (tiles - 1) * block_m
    mean = (tile_mean * counts).sum(0) / rows
    m2 = tile_m2.sum(0) + (counts * (tile_mean - mean).square()).sum(0)
    return mean, m2 / rows


def launch_bn_relu(y2d, dest2d, gamma, beta, mean, var, eps) -> None:
    """dest2d = relu((y2d - mean) * gamma / sqrt(var + eps) + beta) per column, one pass."""
    scale = (gamma.float() * torch.rsqrt(var + eps)).contiguous()
    shift = (beta.float() - mean * scale).contiguous()
    m, c = y2d.shape
    grid = (_common.cdiv(m, PASS_TILE["BLOCK_M"]), _common.cdiv(c, PASS_TILE["BLOCK_C"]))
    _common.launch(_bn_relu_kernel, grid, y2d, dest2d, scale, shift, m, c, *y2d.stride(), *dest2d.stride(), **PASS_TILE)


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
