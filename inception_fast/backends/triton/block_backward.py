"""The Triton Inception block's backward: every gradient of one block in three launches.

Inputs are what the forward saved: the block input x, the packed weights (layouts in
``inception_fast.backends``), the output ``out`` and the scratch of the two reductions, plus the
gradient of the output, grad_out.  Views as in the forward (reduce_pool.py): an NHWC tensor is a
GEMM operand [M = N*H*W pixels, C]; g1, g3, g5, gp are grad_out's four channel slices, each
through its ReLU as it is loaded (0 where out <= 0, PyTorch's threshold_backward: a NaN output
passes the gradient): no mask tensor and no split or cat copy.

* Launch A (``_branch_grads_kernel``), one 1-D grid of five roles:
  - the 3x3's and the kxk's data gradients, implicit GEMMs over (tap, cout) of g3 / g5 taken at
    the mirrored pixel against w3 / w5, through the reduction's ReLU (0 where scratch <= 0), into
    g_red (N, ch3red + ch5red, H, W): the reductions' gradients;
  - the pool branch's gp @ w_pool, stored into g_pooled (N, Cin, H, W, fp32): the gradient of
    the pooled input, for launch B to route through the max pool;
  - the 3x3's and the kxk's weight and bias gradients, GEMMs over pixels (gw[co, tap, ci] = sum_p
    g[p, co] * scratch[p + tap, ci]), each program one split of the pixels (below).
* Launch B (``_input_grads_kernel``), one 1-D grid of three roles:
  - the block input's gradient for a tile of pixels: the three 1x1s' data gradient as ONE GEMM of
    the packed reduction gradients [g1 | g_red] against the packed w_red, plus the pool branch's
    gradient through the 3x3/s1/p1 max pool, gathered: input pixel p takes g_pooled[q] from each
    of the up to 9 pooled pixels q whose window holds p and whose argmax, recomputed from x, is p.
    No atomics, no saved indices.
  - the packed 1x1 weight and bias gradients ([g1 | g_red]^T @ x) and the pool projection's
    (gp^T @ maxpool(x), the pool recomputed from x as in the forward), GEMMs over pixel splits.
* Launch C (``_sum_splits_kernel``): the weight and bias gradients' pixel splits summed in split
  order (fp32), each gradient into its own tensor in the block's dtype (the op's outputs alias
  nothing).  In the partial buffer their segments start at multiples of SEGMENT_ALIGN; launch C
  neither reads nor stores the gaps between them, which no launch writes.

Weight gradients: the pixels are cut into ``n_splits`` equal chunks (a multiple of the pixel
step); each program writes its chunk's fp32 partial into its own slot of one partial buffer, and
launch C adds the slots in a fixed order.  No atomics: results do not change run to run.

The max pool's argmax follows ATen's max-pool kernels (CPU and CUDA): the window's in-image taps
in row-major order, a tap replaces the running maximum when it is greater or NaN, the first
in-image tap is the start.  So ties go to the first maximum in scan order, and with NaN in a
window to its last NaN.

Dtypes: fp16/bf16 operands with fp32 accumulation; fp32 uses TF32 only when
torch.backends.cudnn.allow_tf32 is on.  64-bit offsets (the pixel's image index is 64-bit).
"""

from __future__ import annotations

import contextlib
from typing import Optional

import torch
import triton
import triton.language as tl

from ... import geometry
from . import _common
from ._common import pixel_rows, row_offsets

__all__ = ["block_backward", "CONFIGS", "INTERPRETER_CONFIG", "split_count"]

# Alignment (see _common.row_unit).  Triton marks an integer argument aligned only when it is a
# multiple of 16, and 4b/4c's reductions' scratch (136 channels), their branch-3 input (24) and
# their 296 packed reduce rows are multiples of 8 only: passed whole, they would make every g_red
# store and every weight-gradient store of the kxk go element by element.  So the launches take
# their row strides divided by a constexpr unit (ROW_UNIT for activations, W_UNIT for weights) and
# their channel counts divided by C_UNIT, multiplied back inside; these quotients are not
# specialized on alignment (blocks with the same units share binaries).  The partial buffer's
# gradient segments start at multiples of SEGMENT_ALIGN elements.
_ROW_STRIDES = ("n", "h", "w")
_DIV_UNIT_A = [
    *(f"{c}_div_unit" for c in ("cin", "ch1", "cin3", "cout3", "cin5", "cout5", "n_pool")),
    *(f"s_{t}_{d}_div_unit" for t in ("go", "o", "s", "r", "p") for d in _ROW_STRIDES),
    *(f"s_{t}_{d}_div_unit" for t in ("w3", "w5") for d in ("o", "h", "w")),
    "s_wp_n_div_unit",
]
_DIV_UNIT_B = [
    *(f"{c}_div_unit" for c in ("cin", "ch1", "n_red", "n_pool", "pool_col0")),
    *(f"s_{t}_{d}_div_unit" for t in ("go", "o", "x", "r", "p", "gx") for d in _ROW_STRIDES),
    "s_wr_n_div_unit",
]
SEGMENT_ALIGN = 16


@triton.jit
def _masked_grad(g_ptr, o_ptr, g_off, o_off, mask):
    """grad_out through the ReLU of the saved output, loaded at the same elements: 0 where the
    output is <= 0, else grad_out (a NaN output passes it, as PyTorch's threshold_backward)."""
    g = tl.load(g_ptr + g_off, mask=mask, other=0.0)
    o = tl.load(o_ptr + o_off, mask=mask, other=0.0)
    return tl.where(o <= 0, tl.zeros_like(g), g)


@triton.jit
def _conv_dgrad_tile(
    gout_ptr,
    out_ptr,
    w_ptr,
    scratch_ptr,
    gred_ptr,
    row_ok,
    img,
    hh,
    ww,
    pid_n,
    H,
    W,
    cout,
    cin,
    g_col0,
    red_col0,
    s_go_n,
    s_go_h,
    s_go_w,
    s_go_c,
    s_o_n,
    s_o_h,
    s_o_w,
    s_o_c,
    s_w_o,
    s_w_h,
    s_w_w,
    s_w_c,
    s_s_n,
    s_s_h,
    s_s_w,
    s_s_c,
    s_r_n,
    s_r_h,
    s_r_w,
    s_r_c,
    KS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """g_red[p, ci] = sum over (kh, kw, co) of g[p - (kh, kw) + KS//2, co] * w[co, kh, kw, ci], or 0
    where scratch[p, ci] <= 0, for one tile of pixels and reduction channels."""
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = offs_n < cin
    offs_k = tl.arange(0, BLOCK_K)
    n_cblocks = tl.cdiv(cout, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for it in range(0, KS * KS * n_cblocks):
        tap = it // n_cblocks
        kk = (it - tap * n_cblocks) * BLOCK_K + offs_k
        kh = tap // KS
        kw = tap - kh * KS
        h2 = hh - (kh - KS // 2)
        w2 = ww - (kw - KS // 2)
        tap_ok = row_ok & (h2 >= 0) & (h2 < H) & (w2 >= 0) & (w2 < W)
        k_ok = kk < cout
        m = tap_ok[:, None] & k_ok[None, :]
        go_row = row_offsets(img, h2, w2, s_go_n, s_go_h, s_go_w)
        o_row = row_offsets(img, h2, w2, s_o_n, s_o_h, s_o_w)
        a = _masked_grad(
            gout_ptr,
            out_ptr,
            go_row[:, None] + (g_col0 + kk)[None, :] * s_go_c,
            o_row[:, None] + (g_col0 + kk)[None, :] * s_o_c,
            m,
        )
        b = tl.load(
            w_ptr + kk[:, None] * s_w_o + kh * s_w_h + kw * s_w_w + offs_n[None, :] * s_w_c,
            mask=k_ok[:, None] & col_ok[None, :],
            other=0.0,
        )
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
    m = row_ok[:, None] & col_ok[None, :]
    s_row = row_offsets(img, hh, ww, s_s_n, s_s_h, s_s_w)
    r = tl.load(scratch_ptr + s_row[:, None] + (red_col0 + offs_n)[None, :] * s_s_c, mask=m, other=0.0)
    res = tl.where(r <= 0, 0.0, acc)
    r_row = row_offsets(img, hh, ww, s_r_n, s_r_h, s_r_w)
    tl.store(
        gred_ptr + r_row[:, None] + (red_col0 + offs_n)[None, :] * s_r_c, res.to(gred_ptr.dtype.element_ty), mask=m
    )


@triton.jit
def _conv_wgrad_tile(
    gout_ptr,
    out_ptr,
    scratch_ptr,
    part_ptr,
    split,
    n_splits,
    tile,
    M,
    H,
    W,
    cout,
    cin,
    g_col0,
    red_col0,
    w_off,
    b_off,
    T,
    s_go_n,
    s_go_h,
    s_go_w,
    s_go_c,
    s_o_n,
    s_o_h,
    s_o_w,
    s_o_c,
    s_s_n,
    s_s_h,
    s_s_w,
    s_s_c,
    KS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """This split's partial gw[co, kh, kw, ci] = sum_p g[p, co] * scratch[p + (kh, kw) - KS//2, ci] for
    one (co tile, ci tile), every tap in turn; the ci tile 0 programs also sum g over the pixels (the bias)."""
    n_ci = tl.cdiv(cin, BLOCK_N)
    ci_tile = tile % n_ci
    co_tile = tile // n_ci
    offs_co = co_tile * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_ci = ci_tile * BLOCK_N + tl.arange(0, BLOCK_N)
    co_ok = offs_co < cout
    ci_ok = offs_ci < cin
    chunk = tl.cdiv(tl.cdiv(M, BLOCK_K), n_splits) * BLOCK_K
    lo = split * chunk
    hi = tl.minimum(lo + chunk, M)
    slot = part_ptr + split.to(tl.int64) * T
    bias = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for tap in range(0, KS * KS):
        kh = tap // KS
        kw = tap - kh * KS
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for p0 in range(lo, hi, BLOCK_K):
            p_ok, img, hh, ww = pixel_rows(p0, M, H, W, BLOCK_K)
            go_row = row_offsets(img, hh, ww, s_go_n, s_go_h, s_go_w)
            o_row = row_offsets(img, hh, ww, s_o_n, s_o_h, s_o_w)
            g = _masked_grad(
                gout_ptr,
                out_ptr,
                go_row[:, None] + (g_col0 + offs_co)[None, :] * s_go_c,
                o_row[:, None] + (g_col0 + offs_co)[None, :] * s_o_c,
                p_ok[:, None] & co_ok[None, :],
            )
            h2 = hh + (kh - KS // 2)
            w2 = ww + (kw - KS // 2)
            tap_ok = p_ok & (h2 >= 0) & (h2 < H) & (w2 >= 0) & (w2 < W)
            s_row = row_offsets(img, h2, w2, s_s_n, s_s_h, s_s_w)
            r = tl.load(
                scratch_ptr + s_row[:, None] + (red_col0 + offs_ci)[None, :] * s_s_c,
                mask=tap_ok[:, None] & ci_ok[None, :],
                other=0.0,
            )
            acc = tl.dot(tl.trans(g), r, acc, input_precision=DOT_PRECISION)
            if tap == 0:
                bias += tl.sum(g.to(tl.float32), axis=0)
        w_idx = offs_co[:, None] * (KS * KS * cin) + tap * cin + offs_ci[None, :]
        tl.store(slot + w_off + w_idx, acc, mask=co_ok[:, None] & ci_ok[None, :])
    if ci_tile == 0:
        tl.store(slot + b_off + offs_co, bias, mask=co_ok)


@triton.jit(do_not_specialize=["M", "H", "W"], do_not_specialize_on_alignment=_DIV_UNIT_A)
def _branch_grads_kernel(
    gout_ptr,
    out_ptr,
    scratch_ptr,
    w3_ptr,
    w5_ptr,
    w_pool_ptr,
    gred_ptr,
    gpooled_ptr,
    part_ptr,
    M,
    H,
    W,
    # Channel counts, divided by C_UNIT.
    cin_div_unit,
    ch1_div_unit,
    cin3_div_unit,
    cout3_div_unit,
    cin5_div_unit,
    cout5_div_unit,
    n_pool_div_unit,
    n_splits,
    # The partial buffer's row length and segment offsets (multiples of SEGMENT_ALIGN).
    T,
    off_w3,
    off_b3,
    off_w5,
    off_b5,
    # Strides (image, row, column, channel); the first three divided by ROW_UNIT (activations) or
    # W_UNIT (w3, w5 and w_pool's row stride).
    s_go_n_div_unit,
    s_go_h_div_unit,
    s_go_w_div_unit,
    s_go_c,
    s_o_n_div_unit,
    s_o_h_div_unit,
    s_o_w_div_unit,
    s_o_c,
    s_s_n_div_unit,
    s_s_h_div_unit,
    s_s_w_div_unit,
    s_s_c,
    s_r_n_div_unit,
    s_r_h_div_unit,
    s_r_w_div_unit,
    s_r_c,
    s_p_n_div_unit,
    s_p_h_div_unit,
    s_p_w_div_unit,
    s_p_c,
    s_w3_o_div_unit,
    s_w3_h_div_unit,
    s_w3_w_div_unit,
    s_w3_c,
    s_w5_o_div_unit,
    s_w5_h_div_unit,
    s_w5_w_div_unit,
    s_w5_c,
    s_wp_n_div_unit,
    s_wp_k,
    K5: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    ROW_UNIT: tl.constexpr,
    W_UNIT: tl.constexpr,
    C_UNIT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Launch A: the 3x3's and kxk's data gradients into g_red, gp @ w_pool into g_pooled, and the
    3x3's and kxk's weight and bias gradients' pixel-split partials."""
    cin, ch1, n_pool = cin_div_unit * C_UNIT, ch1_div_unit * C_UNIT, n_pool_div_unit * C_UNIT
    cin3, cout3 = cin3_div_unit * C_UNIT, cout3_div_unit * C_UNIT
    cin5, cout5 = cin5_div_unit * C_UNIT, cout5_div_unit * C_UNIT
    s_go_n, s_go_h, s_go_w = s_go_n_div_unit * ROW_UNIT, s_go_h_div_unit * ROW_UNIT, s_go_w_div_unit * ROW_UNIT
    s_o_n, s_o_h, s_o_w = s_o_n_div_unit * ROW_UNIT, s_o_h_div_unit * ROW_UNIT, s_o_w_div_unit * ROW_UNIT
    s_s_n, s_s_h, s_s_w = s_s_n_div_unit * ROW_UNIT, s_s_h_div_unit * ROW_UNIT, s_s_w_div_unit * ROW_UNIT
    s_r_n, s_r_h, s_r_w = s_r_n_div_unit * ROW_UNIT, s_r_h_div_unit * ROW_UNIT, s_r_w_div_unit * ROW_UNIT
    s_p_n, s_p_h, s_p_w = s_p_n_div_unit * ROW_UNIT, s_p_h_div_unit * ROW_UNIT, s_p_w_div_unit * ROW_UNIT
    s_w3_o, s_w3_h, s_w3_w = s_w3_o_div_unit * W_UNIT, s_w3_h_div_unit * W_UNIT, s_w3_w_div_unit * W_UNIT
    s_w5_o, s_w5_h, s_w5_w = s_w5_o_div_unit * W_UNIT, s_w5_h_div_unit * W_UNIT, s_w5_w_div_unit * W_UNIT
    s_wp_n = s_wp_n_div_unit * W_UNIT
    # The roles' programs, in grid order: dgrad 3x3, dgrad kxk, g_pooled, wgrad 3x3, wgrad kxk.
    rows = tl.cdiv(M, BLOCK_M)
    end_d3 = rows * tl.cdiv(cin3, BLOCK_N)
    end_d5 = end_d3 + rows * tl.cdiv(cin5, BLOCK_N)
    end_gp = end_d5 + rows * tl.cdiv(cin, BLOCK_N)
    end_w3 = end_gp + n_splits * tl.cdiv(cout3, BLOCK_M) * tl.cdiv(cin3, BLOCK_N)
    pid = tl.program_id(0)
    if pid < end_d5:
        is3 = pid < end_d3
        local = tl.where(is3, pid, pid - end_d3)
        n_cols = tl.where(is3, tl.cdiv(cin3, BLOCK_N), tl.cdiv(cin5, BLOCK_N))
        row_ok, img, hh, ww = pixel_rows((local // n_cols) * BLOCK_M, M, H, W, BLOCK_M)
        if is3:
            _conv_dgrad_tile(
                gout_ptr, out_ptr, w3_ptr, scratch_ptr, gred_ptr, row_ok, img, hh, ww, local % n_cols, H, W,
                cout3, cin3, ch1, 0,
                s_go_n, s_go_h, s_go_w, s_go_c, s_o_n, s_o_h, s_o_w, s_o_c,
                s_w3_o, s_w3_h, s_w3_w, s_w3_c, s_s_n, s_s_h, s_s_w, s_s_c, s_r_n, s_r_h, s_r_w, s_r_c,
                3, DOT_PRECISION, BLOCK_M, BLOCK_N, BLOCK_K,
            )  # fmt: skip
        else:
            _conv_dgrad_tile(
                gout_ptr, out_ptr, w5_ptr, scratch_ptr, gred_ptr, row_ok, img, hh, ww, local % n_cols, H, W,
                cout5, cin5, ch1 + cout3, cin3,
                s_go_n, s_go_h, s_go_w, s_go_c, s_o_n, s_o_h, s_o_w, s_o_c,
                s_w5_o, s_w5_h, s_w5_w, s_w5_c, s_s_n, s_s_h, s_s_w, s_s_c, s_r_n, s_r_h, s_r_w, s_r_c,
                K5, DOT_PRECISION, BLOCK_M, BLOCK_N, BLOCK_K,
            )  # fmt: skip
    elif pid < end_gp:
        # g_pooled = gp @ w_pool for BLOCK_M pixels and BLOCK_N input channels.
        local = pid - end_d5
        n_cols = tl.cdiv(cin, BLOCK_N)
        row_ok, img, hh, ww = pixel_rows((local // n_cols) * BLOCK_M, M, H, W, BLOCK_M)
        offs_n = (local % n_cols) * BLOCK_N + tl.arange(0, BLOCK_N)
        col_ok = offs_n < cin
        offs_k = tl.arange(0, BLOCK_K)
        go_row = row_offsets(img, hh, ww, s_go_n, s_go_h, s_go_w)
        o_row = row_offsets(img, hh, ww, s_o_n, s_o_h, s_o_w)
        pool_col0 = ch1 + cout3 + cout5
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, n_pool, BLOCK_K):
            kk = k0 + offs_k
            k_ok = kk < n_pool
            a = _masked_grad(
                gout_ptr,
                out_ptr,
                go_row[:, None] + (pool_col0 + kk)[None, :] * s_go_c,
                o_row[:, None] + (pool_col0 + kk)[None, :] * s_o_c,
                row_ok[:, None] & k_ok[None, :],
            )
            b = tl.load(
                w_pool_ptr + kk[:, None] * s_wp_n + offs_n[None, :] * s_wp_k,
                mask=k_ok[:, None] & col_ok[None, :],
                other=0.0,
            )
            acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
        p_row = row_offsets(img, hh, ww, s_p_n, s_p_h, s_p_w)
        tl.store(gpooled_ptr + p_row[:, None] + offs_n[None, :] * s_p_c, acc, mask=row_ok[:, None] & col_ok[None, :])
    elif pid < end_w3:
        local = pid - end_gp
        per_split = (end_w3 - end_gp) // n_splits
        _conv_wgrad_tile(
            gout_ptr, out_ptr, scratch_ptr, part_ptr, local // per_split, n_splits, local % per_split, M, H, W,
            cout3, cin3, ch1, 0, off_w3, off_b3, T,
            s_go_n, s_go_h, s_go_w, s_go_c, s_o_n, s_o_h, s_o_w, s_o_c, s_s_n, s_s_h, s_s_w, s_s_c,
            3, DOT_PRECISION, BLOCK_M, BLOCK_N, BLOCK_K,
        )  # fmt: skip
    else:
        local = pid - end_w3
        per_split = (tl.num_programs(0) - end_w3) // n_splits
        _conv_wgrad_tile(
            gout_ptr, out_ptr, scratch_ptr, part_ptr, local // per_split, n_splits, local % per_split, M, H, W,
            cout5, cin5, ch1 + cout3, cin3, off_w5, off_b5, T,
            s_go_n, s_go_h, s_go_w, s_go_c, s_o_n, s_o_h, s_o_w, s_o_c, s_s_n, s_s_h, s_s_w, s_s_c,
            K5, DOT_PRECISION, BLOCK_M, BLOCK_N, BLOCK_K,
        )  # fmt: skip


@triton.jit
def _packed_grad(gout_ptr, out_ptr, gred_ptr, go_row, o_row, r_row, cols, rows_ok, ch1, n_red, s_go_c, s_o_c, s_r_c):
    """[g1 | g_red] at the given pixel rows and packed columns: columns below ch1 from grad_out
    (branch 1, ReLU-masked), the others from g_red.  Two complementary masked loads."""
    is1 = cols < ch1
    g1 = _masked_grad(
        gout_ptr,
        out_ptr,
        go_row[:, None] + cols[None, :] * s_go_c,
        o_row[:, None] + cols[None, :] * s_o_c,
        rows_ok[:, None] & is1[None, :],
    )
    gr = tl.load(
        gred_ptr + r_row[:, None] + (cols - ch1)[None, :] * s_r_c,
        mask=rows_ok[:, None] & (~is1 & (cols < n_red))[None, :],
        other=0.0,
    )
    return tl.where(is1[None, :], g1, gr)


@triton.jit
def _pooled_input(x_ptr, x_row, hh, ww, rows_ok, cols, cols_ok, H, W, s_x_h, s_x_w, s_x_c):
    """maxpool3x3/s1/p1(x) at the given pixels and channels (fp32; padding never wins, NaN
    propagates); 0 on masked rows and columns."""
    pooled = tl.full((hh.shape[0], cols.shape[0]), float("-inf"), dtype=tl.float32)
    for dh in tl.static_range(3):
        for dw in tl.static_range(3):
            h2 = hh + (dh - 1)
            w2 = ww + (dw - 1)
            t_ok = rows_ok & (h2 >= 0) & (h2 < H) & (w2 >= 0) & (w2 < W)
            v = tl.load(
                x_ptr + (x_row + (dh - 1) * s_x_h + (dw - 1) * s_x_w)[:, None] + cols[None, :] * s_x_c,
                mask=t_ok[:, None] & cols_ok[None, :],
                other=0.0,
            )
            pooled = tl.maximum(
                pooled, tl.where(t_ok[:, None], v.to(tl.float32), float("-inf")), propagate_nan=tl.PropagateNan.ALL
            )
    return tl.where(rows_ok[:, None] & cols_ok[None, :], pooled, 0.0)


@triton.jit(do_not_specialize=["M", "H", "W"], do_not_specialize_on_alignment=_DIV_UNIT_B)
def _input_grads_kernel(
    gout_ptr,
    out_ptr,
    x_ptr,
    w_red_ptr,
    gred_ptr,
    gpooled_ptr,
    gx_ptr,
    part_ptr,
    M,
    H,
    W,
    # Channel counts and the pool branch's first output channel, divided by C_UNIT.
    cin_div_unit,
    ch1_div_unit,
    n_red_div_unit,
    n_pool_div_unit,
    pool_col0_div_unit,
    n_splits,
    # The partial buffer's row length and segment offsets (multiples of SEGMENT_ALIGN).
    T,
    off_wr,
    off_br,
    off_wp,
    off_bp,
    # 1 where the input's gradient is wanted, else 0.
    need_dx,
    # Strides (image, row, column, channel); the first three divided by ROW_UNIT, and w_red's row
    # stride by W_UNIT.
    s_go_n_div_unit,
    s_go_h_div_unit,
    s_go_w_div_unit,
    s_go_c,
    s_o_n_div_unit,
    s_o_h_div_unit,
    s_o_w_div_unit,
    s_o_c,
    s_x_n_div_unit,
    s_x_h_div_unit,
    s_x_w_div_unit,
    s_x_c,
    s_r_n_div_unit,
    s_r_h_div_unit,
    s_r_w_div_unit,
    s_r_c,
    s_p_n_div_unit,
    s_p_h_div_unit,
    s_p_w_div_unit,
    s_p_c,
    s_gx_n_div_unit,
    s_gx_h_div_unit,
    s_gx_w_div_unit,
    s_gx_c,
    s_wr_n_div_unit,
    s_wr_k,
    DOT_PRECISION: tl.constexpr,
    ROW_UNIT: tl.constexpr,
    W_UNIT: tl.constexpr,
    C_UNIT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Launch B: the block input's gradient (one GEMM of [g1 | g_red] against w_red, plus g_pooled
    gathered through the max pool's recomputed argmax), and the pixel-split partials of the packed
    1x1 and pool projection weight and bias gradients."""
    cin, ch1, n_red = cin_div_unit * C_UNIT, ch1_div_unit * C_UNIT, n_red_div_unit * C_UNIT
    n_pool, pool_col0 = n_pool_div_unit * C_UNIT, pool_col0_div_unit * C_UNIT
    s_go_n, s_go_h, s_go_w = s_go_n_div_unit * ROW_UNIT, s_go_h_div_unit * ROW_UNIT, s_go_w_div_unit * ROW_UNIT
    s_o_n, s_o_h, s_o_w = s_o_n_div_unit * ROW_UNIT, s_o_h_div_unit * ROW_UNIT, s_o_w_div_unit * ROW_UNIT
    s_x_n, s_x_h, s_x_w = s_x_n_div_unit * ROW_UNIT, s_x_h_div_unit * ROW_UNIT, s_x_w_div_unit * ROW_UNIT
    s_r_n, s_r_h, s_r_w = s_r_n_div_unit * ROW_UNIT, s_r_h_div_unit * ROW_UNIT, s_r_w_div_unit * ROW_UNIT
    s_p_n, s_p_h, s_p_w = s_p_n_div_unit * ROW_UNIT, s_p_h_div_unit * ROW_UNIT, s_p_w_div_unit * ROW_UNIT
    s_gx_n, s_gx_h, s_gx_w = s_gx_n_div_unit * ROW_UNIT, s_gx_h_div_unit * ROW_UNIT, s_gx_w_div_unit * ROW_UNIT
    s_wr_n = s_wr_n_div_unit * W_UNIT
    # The roles' programs, in grid order: input gradient (if wanted), w_red, w_pool.
    n_cin_tiles = tl.cdiv(cin, BLOCK_N)
    end_dx = need_dx * tl.cdiv(M, BLOCK_M) * n_cin_tiles
    end_wr = end_dx + n_splits * tl.cdiv(n_red, BLOCK_M) * n_cin_tiles
    pid = tl.program_id(0)
    if pid < end_dx:
        n_cols = tl.cdiv(cin, BLOCK_N)
        row_ok, img, hh, ww = pixel_rows((pid // n_cols) * BLOCK_M, M, H, W, BLOCK_M)
        offs_n = (pid % n_cols) * BLOCK_N + tl.arange(0, BLOCK_N)
        col_ok = offs_n < cin
        offs_k = tl.arange(0, BLOCK_K)
        go_row = row_offsets(img, hh, ww, s_go_n, s_go_h, s_go_w)
        o_row = row_offsets(img, hh, ww, s_o_n, s_o_h, s_o_w)
        r_row = row_offsets(img, hh, ww, s_r_n, s_r_h, s_r_w)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, n_red, BLOCK_K):
            kk = k0 + offs_k
            a = _packed_grad(
                gout_ptr, out_ptr, gred_ptr, go_row, o_row, r_row, kk, row_ok, ch1, n_red, s_go_c, s_o_c, s_r_c
            )
            b = tl.load(
                w_red_ptr + kk[:, None] * s_wr_n + offs_n[None, :] * s_wr_k,
                mask=(kk < n_red)[:, None] & col_ok[None, :],
                other=0.0,
            )
            acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
        # The pool branch: pooled pixel q = p + (eh, ew) holds p at its tap tp = (1 - eh, 1 - ew).
        # Under ATen's rule (header) p is q's argmax iff it is taken when scanned (it is NaN, or it
        # exceeds every in-image tap before it) and no later tap is (none is NaN or exceeds it).
        x_row = row_offsets(img, hh, ww, s_x_n, s_x_h, s_x_w)
        xp = tl.load(
            x_ptr + x_row[:, None] + offs_n[None, :] * s_x_c, mask=row_ok[:, None] & col_ok[None, :], other=0.0
        ).to(tl.float32)
        xp_nan = xp != xp
        # A runtime loop over the nine neighbours (an unrolled one spills registers on sm_90).
        for e in range(9):
            eh = e // 3 - 1
            ew = e % 3 - 1
            tp = (1 - eh) * 3 + (1 - ew)
            qh = hh + eh
            qw = ww + ew
            q_ok = row_ok & (qh >= 0) & (qh < H) & (qw >= 0) & (qw < W)
            wins = xp_nan | (xp == xp)  # all true: no tap has beaten p yet
            for t in tl.static_range(9):
                th = t // 3 - 1
                tw = t % 3 - 1
                h2 = qh + th
                w2 = qw + tw
                t_ok = q_ok & (h2 >= 0) & (h2 < H) & (w2 >= 0) & (w2 < W) & (t != tp)
                v = tl.load(
                    x_ptr + (x_row + (eh + th) * s_x_h + (ew + tw) * s_x_w)[:, None] + offs_n[None, :] * s_x_c,
                    mask=t_ok[:, None] & col_ok[None, :],
                    other=0.0,
                ).to(tl.float32)
                # Scanned before p: p must exceed it, unless p is NaN.  After p: it must neither be
                # NaN nor exceed p.
                beaten = tl.where(t < tp, ~(v < xp) & ~xp_nan, (v != v) | (v > xp))
                wins = wins & ~(t_ok[:, None] & beaten)
            hit = q_ok[:, None] & col_ok[None, :] & wins
            p_row = row_offsets(img, qh, qw, s_p_n, s_p_h, s_p_w)
            acc += tl.load(gpooled_ptr + p_row[:, None] + offs_n[None, :] * s_p_c, mask=hit, other=0.0)
        gx_row = row_offsets(img, hh, ww, s_gx_n, s_gx_h, s_gx_w)
        tl.store(
            gx_ptr + gx_row[:, None] + offs_n[None, :] * s_gx_c,
            acc.to(gx_ptr.dtype.element_ty),
            mask=row_ok[:, None] & col_ok[None, :],
        )
    else:
        is_red = pid < end_wr
        local = tl.where(is_red, pid - end_dx, pid - end_wr)
        per_split = tl.where(is_red, end_wr - end_dx, tl.num_programs(0) - end_wr) // n_splits
        split = local // per_split
        tile = local % per_split
        n_cols = tl.cdiv(cin, BLOCK_N)
        col_tile = tile % n_cols
        offs_r = (tile // n_cols) * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = col_tile * BLOCK_N + tl.arange(0, BLOCK_N)
        col_ok = offs_n < cin
        n_rows = tl.where(is_red, n_red, n_pool)
        r_ok = offs_r < n_rows
        chunk = tl.cdiv(tl.cdiv(M, BLOCK_K), n_splits) * BLOCK_K
        lo = split * chunk
        hi = tl.minimum(lo + chunk, M)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        bias = tl.zeros((BLOCK_M,), dtype=tl.float32)
        for p0 in range(lo, hi, BLOCK_K):
            p_ok, img, hh, ww = pixel_rows(p0, M, H, W, BLOCK_K)
            go_row = row_offsets(img, hh, ww, s_go_n, s_go_h, s_go_w)
            o_row = row_offsets(img, hh, ww, s_o_n, s_o_h, s_o_w)
            x_row = row_offsets(img, hh, ww, s_x_n, s_x_h, s_x_w)
            if is_red:
                r_row = row_offsets(img, hh, ww, s_r_n, s_r_h, s_r_w)
                g = _packed_grad(
                    gout_ptr, out_ptr, gred_ptr, go_row, o_row, r_row, offs_r, p_ok, ch1, n_red, s_go_c, s_o_c, s_r_c
                )
                b = tl.load(
                    x_ptr + x_row[:, None] + offs_n[None, :] * s_x_c, mask=p_ok[:, None] & col_ok[None, :], other=0.0
                )
            else:
                g = _masked_grad(
                    gout_ptr,
                    out_ptr,
                    go_row[:, None] + (pool_col0 + offs_r)[None, :] * s_go_c,
                    o_row[:, None] + (pool_col0 + offs_r)[None, :] * s_o_c,
                    p_ok[:, None] & r_ok[None, :],
                )
                b = _pooled_input(x_ptr, x_row, hh, ww, p_ok, offs_n, col_ok, H, W, s_x_h, s_x_w, s_x_c).to(
                    x_ptr.dtype.element_ty
                )
            acc = tl.dot(tl.trans(g), b, acc, input_precision=DOT_PRECISION)
            bias += tl.sum(g.to(tl.float32), axis=0)
        slot = part_ptr + split.to(tl.int64) * T
        w_off = tl.where(is_red, off_wr, off_wp)
        tl.store(slot + w_off + offs_r[:, None] * cin + offs_n[None, :], acc, mask=r_ok[:, None] & col_ok[None, :])
        if col_tile == 0:
            tl.store(slot + tl.where(is_red, off_br, off_bp) + offs_r, bias, mask=r_ok)


@triton.jit
def _in_gap(offs, end, ALIGN: tl.constexpr):
    """Whether offsets lie in the gap after a segment that ends at ``end``: up to the next multiple
    of ALIGN, where the next segment starts."""
    return (offs >= end) & (offs < tl.cdiv(end, ALIGN) * ALIGN)


@triton.jit
def _store_segment(dst_ptr, val, offs, prev_end, end, ALIGN: tl.constexpr):
    """Stores the lanes of the segment [start, end) at dst_ptr[offs - start], where start is
    ``prev_end`` rounded up to ALIGN (the segment after the one that ends at ``prev_end``); returns
    ``end``, the next segment's ``prev_end``."""
    start = tl.cdiv(prev_end, ALIGN) * ALIGN
    tl.store(dst_ptr + (offs - start), val, mask=(offs >= start) & (offs < end))
    return end


# The segment ends reach launch C divided by E_UNIT (the largest power of two up to 16 dividing them
# all: 16 on GoogLeNet's blocks but 4b and 4c, 8 there) and multiplied back inside: the gap mask
# is then known constant over runs of E_UNIT elements, and the partials load four at a time.
@triton.jit(do_not_specialize=[f"e{i}_div_unit" for i in range(8)])
def _sum_splits_kernel(
    part_ptr,
    d0_ptr,
    d1_ptr,
    d2_ptr,
    d3_ptr,
    d4_ptr,
    d5_ptr,
    d6_ptr,
    d7_ptr,
    T,
    n_splits,
    e0_div_unit,
    e1_div_unit,
    e2_div_unit,
    e3_div_unit,
    e4_div_unit,
    e5_div_unit,
    e6_div_unit,
    e7_div_unit,
    BLOCK: tl.constexpr,
    ALIGN: tl.constexpr,
    E_UNIT: tl.constexpr,
):
    """Launch C: for i in segment j (the eight segments end at e*_div_unit * E_UNIT, each starts at
    the previous end rounded up to ALIGN), dj[i - start_j] = the sum over splits s, in order, of
    part[s, i] (fp32), in the gradients' dtype.  The gaps between segments, which launches A and B
    never write, are neither read nor stored."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < T
    gap = _in_gap(offs, e0_div_unit * E_UNIT, ALIGN) | _in_gap(offs, e1_div_unit * E_UNIT, ALIGN)
    gap = gap | _in_gap(offs, e2_div_unit * E_UNIT, ALIGN) | _in_gap(offs, e3_div_unit * E_UNIT, ALIGN)
    gap = gap | _in_gap(offs, e4_div_unit * E_UNIT, ALIGN) | _in_gap(offs, e5_div_unit * E_UNIT, ALIGN)
    gap = gap | _in_gap(offs, e6_div_unit * E_UNIT, ALIGN) | _in_gap(offs, e7_div_unit * E_UNIT, ALIGN)
    live = ok & (gap == 0)
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in range(0, n_splits):
        acc += tl.load(part_ptr + s * T + offs, mask=live, other=0.0)
    val = acc.to(d0_ptr.dtype.element_ty)
    end = _store_segment(d0_ptr, val, offs, 0, e0_div_unit * E_UNIT, ALIGN)
    end = _store_segment(d1_ptr, val, offs, end, e1_div_unit * E_UNIT, ALIGN)
    end = _store_segment(d2_ptr, val, offs, end, e2_div_unit * E_UNIT, ALIGN)
    end = _store_segment(d3_ptr, val, offs, end, e3_div_unit * E_UNIT, ALIGN)
    end = _store_segment(d4_ptr, val, offs, end, e4_div_unit * E_UNIT, ALIGN)
    end = _store_segment(d5_ptr, val, offs, end, e5_div_unit * E_UNIT, ALIGN)
    end = _store_segment(d6_ptr, val, offs, end, e6_div_unit * E_UNIT, ALIGN)
    _store_segment(d7_ptr, val, offs, end, e7_div_unit * E_UNIT, ALIGN)


# Launches A and B share one tile: BLOCK_M pixels (data roles) or weight rows (weight roles),
# BLOCK_N columns, BLOCK_K the K step (cout, packed channels, or pixels).  Unmeasured on a GPU:
# the backward competes with the ATen chain per shape (inception_fast.choices.BACKWARD).  The
# 32x32 tile runs on 4 warps: on 2, ptxas held launch A to 168 registers and spilled 36-56 bytes
# (3a and 5b on sm_90, triton 3.6 and 3.8; `python -m benchmarks.kernel_stats --block backward:<block>`).
# At batch 1 with triton 3.6, 3a's and 4a's launch A on 4 warps (96 registers) keeps 8 bytes per
# weight-gradient role on the stack (16 B stored, 16 B loaded: kernel_stats' 32 spill bytes), stored
# before the role's pixel loop and loaded after it (its SASS), none inside the loop.
CONFIGS = [
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 32}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32}, num_warps=4, num_stages=3),
]
# The interpreter runs programs one by one, paying per program and per op: one fixed tile.
INTERPRETER_CONFIG = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32}
SUM_BLOCK = 1024
# Pixels per split of the weight gradients, and the most splits (the partial buffer holds
# n_splits copies of every weight gradient, in fp32).
# Under the interpreter, small: test shapes of more than 32 pixels take several splits.
SPLIT_PIXELS = 32 if _common.INTERPRET else 2048
MAX_SPLITS = 3 if _common.INTERPRET else 32

_UNITS = ["ROW_UNIT", "W_UNIT", "C_UNIT"]
_KEY_A = ["M", "H", "W", *_DIV_UNIT_A[:7], "n_splits", "K5", "DOT_PRECISION", *_UNITS]
_KEY_B = ["M", "H", "W", *_DIV_UNIT_B[:5], "n_splits", "DOT_PRECISION", *_UNITS]
_tuned_a = (
    None
    if _common.INTERPRET
    else triton.autotune(configs=CONFIGS, key=_KEY_A, cache_results=True, do_bench=_common.autotune_bench)(
        _branch_grads_kernel
    )
)
_tuned_b = (
    None
    if _common.INTERPRET
    else triton.autotune(configs=CONFIGS, key=_KEY_B, cache_results=True, do_bench=_common.autotune_bench)(
        _input_grads_kernel
    )
)


def _buffer(shape, dtype, device, memory_format=torch.contiguous_format) -> torch.Tensor:
    """An uninitialised buffer of the backward (every one comes from here, so tests can poison them)."""
    return torch.empty(shape, dtype=dtype, device=device, memory_format=memory_format)


def split_count(m: int) -> int:
    """How many pixel splits the weight gradients use for m = N*H*W pixels."""
    return max(1, min(MAX_SPLITS, _common.cdiv(m, SPLIT_PIXELS)))


def _segments(w_red, w_pool, w3, w5) -> dict:
    """Offsets of each gradient in a row of the partial buffer, each a multiple of SEGMENT_ALIGN:
    name -> (offset, numel); "total" the row's length, also a multiple."""
    sizes = [
        ("w_red", w_red.numel()),
        ("b_red", w_red.shape[0]),
        ("w_pool", w_pool.numel()),
        ("b_pool", w_pool.shape[0]),
        ("w3", w3.numel()),
        ("b3", w3.shape[0]),
        ("w5", w5.numel()),
        ("b5", w5.shape[0]),
    ]
    seg, off = {}, 0
    for name, n in sizes:
        seg[name] = (off, n)
        off += _common.cdiv(n, SEGMENT_ALIGN) * SEGMENT_ALIGN
    seg["total"] = (off, 0)
    return seg


def _arguments(grad_out, x, w_red, w_pool, w3, w5, out, scratch, need_input_grad):
    """The buffers and launches A and B of one block backward: (buffers {name: tensor},
    segments (see _segments), [(kernel, autotuned kernel, args, launcher-fixed constexprs, grid(meta))])."""
    _common.check_dtype(x.dtype)
    ch1, cin3, cin5, cout3, cout5, n_pool = geometry.block_channels(w_red, w_pool, w3, w5)
    n, cin, h, w = x.shape
    n_red = w_red.shape[0]
    k5 = w5.shape[-1]
    if tuple(w3.shape[-2:]) != (3, 3) or k5 % 2 == 0 or w5.shape[-2] != k5:
        raise ValueError(f"branch 2 must be 3x3 and branch 3 square and odd, got {tuple(w3.shape)}, {tuple(w5.shape)}")
    m = n * h * w
    geometry.check_pixel_rows(m)
    dev, dt = x.device, x.dtype
    cl = torch.channels_last
    g_red = _buffer((n, cin3 + cin5, h, w), dt, dev, cl)
    g_pooled = _buffer((n, cin, h, w), torch.float32, dev, cl)
    gx = _buffer((n, cin, h, w), dt, dev, cl) if need_input_grad else _common.no_buffer(x, dt)
    seg = _segments(w_red, w_pool, w3, w5)
    total = seg["total"][0]
    n_splits = split_count(m)
    partial = _buffer((n_splits, total), torch.float32, dev)
    grads = {name: _buffer((numel,), dt, dev) for name, (_off, numel) in seg.items() if name != "total"}
    activations = [grad_out, out, scratch, g_red, g_pooled, x] + ([gx] if need_input_grad else [])
    unit = _common.row_unit(*activations)
    w_unit_a = _common.stride_unit(_common.row_unit(w3, w5), w_pool.stride(0))
    w_unit_b = _common.stride_unit(w_red.stride(0))
    c_unit_a = _common.pow2_unit(cin, ch1, cin3, cout3, cin5, cout5, n_pool)
    pool_col0 = out.shape[1] - n_pool
    c_unit_b = _common.pow2_unit(cin, ch1, n_red, n_pool, pool_col0)

    def strides(t, u=unit):
        return _common.row_strides(t, u)

    common_strides = (*strides(grad_out), *strides(out))

    def grid_a(cfg):
        bm, bn = cfg["BLOCK_M"], cfg["BLOCK_N"]
        data = _common.cdiv(m, bm) * (_common.cdiv(cin3, bn) + _common.cdiv(cin5, bn) + _common.cdiv(cin, bn))
        wgrad3 = _common.cdiv(cout3, bm) * _common.cdiv(cin3, bn)
        wgrad5 = _common.cdiv(cout5, bm) * _common.cdiv(cin5, bn)
        return (data + n_splits * (wgrad3 + wgrad5),)

    def grid_b(cfg):
        bm, bn = cfg["BLOCK_M"], cfg["BLOCK_N"]
        cols = _common.cdiv(cin, bn)
        dx = _common.cdiv(m, bm) * cols if need_input_grad else 0
        return (dx + n_splits * (_common.cdiv(n_red, bm) + _common.cdiv(n_pool, bm)) * cols,)

    args_a = (
        grad_out, out, scratch, w3, w5, w_pool, g_red, g_pooled, partial,
        m, h, w, *(c // c_unit_a for c in (cin, ch1, cin3, cout3, cin5, cout5, n_pool)), n_splits, total,
        seg["w3"][0], seg["b3"][0], seg["w5"][0], seg["b5"][0],
        *common_strides, *strides(scratch), *strides(g_red), *strides(g_pooled),
        *strides(w3, w_unit_a), *strides(w5, w_unit_a), w_pool.stride(0) // w_unit_a, w_pool.stride(1),
    )  # fmt: skip
    gx_strides = strides(gx) if need_input_grad else (0, 0, 0, 0)  # never written without need_dx
    args_b = (
        grad_out, out, x, w_red, g_red, g_pooled, gx, partial,
        m, h, w, *(c // c_unit_b for c in (cin, ch1, n_red, n_pool, pool_col0)), n_splits, total,
        seg["w_red"][0], seg["b_red"][0], seg["w_pool"][0], seg["b_pool"][0], int(bool(need_input_grad)),
        *common_strides, *strides(x), *strides(g_red), *strides(g_pooled), *gx_strides,
        w_red.stride(0) // w_unit_b, w_red.stride(1),
    )  # fmt: skip
    meta = {"DOT_PRECISION": _common.dot_precision(dt), "ROW_UNIT": unit}
    launches = [
        (_branch_grads_kernel, _tuned_a, args_a, {**meta, "K5": k5, "W_UNIT": w_unit_a, "C_UNIT": c_unit_a}, grid_a),
        (_input_grads_kernel, _tuned_b, args_b, {**meta, "W_UNIT": w_unit_b, "C_UNIT": c_unit_b}, grid_b),
    ]
    buffers = {"g_red": g_red, "g_pooled": g_pooled, "gx": gx, "partial": partial, "grads": grads}
    return buffers, seg, launches


def _sum_arguments(partial, grads, seg) -> tuple:
    """(grid, positional args, constexprs) of launch C, which sums ``partial``'s splits into the
    eight 1-D gradient tensors ``grads`` (name -> tensor, in the segments' order)."""
    names = [name for name in seg if name != "total"]
    ends = [seg[name][0] + seg[name][1] for name in names]
    unit = _common.pow2_unit(*ends)
    total = partial.shape[1]
    args = (partial, *(grads[name] for name in names), total, partial.shape[0], *(e // unit for e in ends))
    meta = {"BLOCK": SUM_BLOCK, "ALIGN": SEGMENT_ALIGN, "E_UNIT": unit}
    return (_common.cdiv(total, SUM_BLOCK),), args, meta


def block_backward(
    grad_out, x, w_red, w_pool, w3, w5, out, scratch, need_input_grad, config: Optional[triton.Config] = None
):
    """(grad_x or None, gw_red, gb_red, gw_pool, gb_pool, gw3, gb3, gw5, gb5) of one block in three
    Triton launches (A, B, C above).  ``config`` (BLOCK_M/N/K) pins launches A and B's tile."""
    buffers, seg, launches = _arguments(grad_out, x, w_red, w_pool, w3, w5, out, scratch, need_input_grad)
    grads = buffers["grads"]
    with torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext():
        for kernel, tuned, args, meta, grid in launches:
            _common.launch_configured(kernel, tuned, grid, args, meta, config, INTERPRETER_CONFIG)
        grid, args, meta = _sum_arguments(buffers["partial"], grads, seg)
        _common.launch(_sum_splits_kernel, grid, *args, **meta)
    _, cin3, cin5, cout3, cout5, n_pool = geometry.block_channels(w_red, w_pool, w3, w5)
    n_red, cin, k5 = w_red.shape[0], x.shape[1], w5.shape[-1]

    def view(name, shape):
        return grads[name].view(shape)

    gw3 = view("w3", (cout3, 3, 3, cin3)).permute(0, 3, 1, 2)
    gw5 = view("w5", (cout5, k5, k5, cin5)).permute(0, 3, 1, 2)
    return (
        buffers["gx"] if need_input_grad else None,
        view("w_red", (n_red, cin)),
        view("b_red", (n_red,)),
        view("w_pool", (n_pool, cin)),
        view("b_pool", (n_pool,)),
        gw3,
        view("b3", (cout3,)),
        gw5,
        view("b5", (cout5,)),
    )
