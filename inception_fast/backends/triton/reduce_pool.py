"""Launch 1 of the Triton Inception block: the three 1x1 convs that read the block input,
and the whole pool branch, in one kernel.

Views: the NHWC input x (N, Cin, H, W) channels_last is a GEMM operand x2d [M = N*H*W, Cin].
Each program owns BLOCK_M output pixels (rows of x2d) and one column tile, in one of two roles:

* reduce (the first cdiv(NR, BLOCK_N) column tiles):
  x2d @ w_red^T + b_red, ReLU, with w_red = [ch1 + ch3red + ch5red, Cin].  Columns [0, ch1) are
  branch 1 and go straight into out[..., 0:ch1]; columns [ch1, NR) are the two reductions and go
  into scratch[..., 0:ch3red+ch5red].  No intermediate for branch 1, no torch.cat.
* pool (the remaining programs: the pool width in one column tile, the BLOCK_M rows split over
  BLOCK_M // BLOCK_M_POOL programs):
  the 3x3 / stride 1 / pad 1 max pool is taken while the A tile is loaded (nine shifted loads of
  BLOCK_K_POOL channels, out-of-image taps read as -inf, so padding never wins), then
  @ w_pool^T + b_pool, ReLU, into out[..., C_total - pool:].  The pooled input never exists in
  memory; the shifted loads mostly hit L1/L2, since neighbouring pixels share their taps.
  The 3x3 max of an input tile is computed once per channel chunk and used by the whole pool
  projection: the pool role's column tile is the whole pool width (BLOCK_N_POOL, the next power
  of two, covers widths up to 128, i.e. one column tile for every GoogLeNet block, whose pools are
  32 to 128 wide), and its row parts own disjoint pixels, so each (pixel, channel) max is taken
  exactly once per launch (nine loads, eight maxima).  Only a pool wider than 128 would take it once
  per 128-column tile.  The reduce role never takes it (its operand is x itself).
* pool split-K (configs with POOL_SPLIT_K > 1, offered only up to SMALL_PROBLEM_PIXELS pixels:
  batch 1 has 49 to 784 pixels, a few dozen programs each stepping through Cin = 192..832): the
  POOL_SPLIT_K programs of a pool tile (neighbours in the grid) each take an even share of its K
  steps (_common.split_range), max pool and all, so every channel chunk is still pooled once;
  they end in _common.finish_tile, as launch 2's split-K does: fp32 partial tiles in a workspace,
  a per-tile int32 counter bumped with an acq_rel atomic after a barrier, and the program that
  brings it to POOL_SPLIT_K adds the slots in slot order (bit-identical run to run), resets the
  counter to 0 and runs the epilogue.  The counters must be 0 when the launch starts and are
  not launch 2's (launch 1 zeroes those on the way, but nothing orders that before its own pool
  programs): the launcher keeps them per device and stream, zeroed once when allocated and left
  at 0 by every launch; see _POOL_COUNTERS for streams, CUDA graphs and failed launches.

Folded pre-pool (PRE_K > 1: the pool before the block, maxpool2/3/4, taken on the fly): the rows
are the pixels (h, w) of the pooled PH x PW map and x is the HI x WI map before the pool.  The
reduce role's A tile is max over the PRE_K x PRE_K window x[s*h - pad + a, s*w - pad + b] (taps
outside the input -inf; every window holds a real one).  The pool role's 3x3/s1/p1 max of the
pooled map is the max over input rows s*(h-1) - pad .. s*(h+1) - pad + k - 1 (a width of 2s + k:
7 taps for 3x3/2, 6 for 2x2/2), clipped to [max(0, s*max(h-1, 0) - pad),
min(HI - 1, s*min(h+1, PH-1) - pad + k - 1)] (the windows of the pooled rows that exist: this
clip covers floor mode's dropped tail and ceil mode's overhang), and the same for the columns; one
contiguous range because consecutive windows touch (s <= k, see ``geometry.foldable``).  The taps are a
loop, one load in flight per step, so the max tile stays in registers; the pooled map is never
written, and launch 2 runs unchanged on the pooled-size scratch.

Column tiles vary fastest in the 1-D grid, so the programs sharing an input tile run together and
read it from L2, not HBM.

Dtypes: fp16/bf16 operands with fp32 accumulation; fp32 operands use TF32 only when
torch.backends.cudnn.allow_tf32 is on (read at call time), else exact fp32.  The max pool is exact
in any dtype, and NaN propagates through the pool and the ReLU as in PyTorch (propagate_nan;
Triton's default max would drop it).  Offsets are 64-bit (pixel index cast before it meets a
stride): N*H*W*C may pass 2^31.

Layout (NCHW): the op only ever receives channels_last tensors.  The ops layer makes x
channels_last, and FusedGoogLeNet converts once at its entry, so every block between stays NHWC
and no per-block NCHW<->NHWC copy or NCHW kernel variant exists.  The kernels still take every
tensor's real strides, so they are correct for any strides; channels_last is what makes the channel
axis contiguous (coalesced loads) and a branch's channel slice a plain column block of out.  Row
strides travel divided by their largest power-of-two factor up to 16 (_common.row_unit), so rows
of, e.g., a 136-channel scratch are still known to be 16-byte aligned.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ... import geometry
from ...caches import LRUDict
from . import _common
from ._common import finish_tile, l1_align, pixel_rows, row_offsets, split_range

__all__ = ["launch_reduce_pool", "CONFIGS", "INTERPRETER_CONFIG"]


@triton.jit
def _window_max(
    x_ptr,
    x_row,
    r0,
    c0,
    lo_r,
    hi_r,
    lo_c,
    hi_c,
    row_ok,
    kk,
    k_ok,
    stride_x_h,
    stride_x_w,
    stride_x_c,
    TAPS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """[BLOCK_M, BLOCK_K] fp32: per row, the max over the TAPS x TAPS input pixels (r0 + dr, c0 + dc)
    that lie in [lo_r, hi_r] x [lo_c, hi_c] (x_row: the 64-bit offset of pixel (r0, c0)), channels
    kk.  Taps outside, masked rows and channels past Cin read -inf; NaN propagates as in PyTorch,
    and the max is exact (fp32 holds every fp16/bf16 value)."""
    pooled = tl.full((BLOCK_M, BLOCK_K), float("-inf"), dtype=tl.float32)
    for t in range(TAPS * TAPS):
        dr = t // TAPS
        dc = t % TAPS
        r = r0 + dr
        c = c0 + dc
        tap_ok = row_ok & (r >= lo_r) & (r <= hi_r) & (c >= lo_c) & (c <= hi_c)
        tap_row = x_row + dr * stride_x_h + dc * stride_x_w
        v = tl.load(
            x_ptr + tap_row[:, None] + kk[None, :] * stride_x_c,
            mask=tap_ok[:, None] & k_ok[None, :],
            other=float("-inf"),
        )
        pooled = tl.maximum(pooled, v.to(tl.float32), propagate_nan=tl.PropagateNan.ALL)
    return pooled


@triton.jit
def _reduce_tile(
    x_ptr,
    w_ptr,
    b_ptr,
    out_ptr,
    scratch_ptr,
    x_row,
    o_row,
    s_row,
    row_ok,
    pid_n,
    cin,
    n_red,
    ch1,
    stride_x_c,
    stride_w_n,
    stride_w_k,
    stride_b,
    stride_out_c,
    stride_scratch_c,
    hh,
    ww,
    HI,
    WI,
    stride_x_h,
    stride_x_w,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRE_K: tl.constexpr,
    PRE_S: tl.constexpr,
    PRE_PAD: tl.constexpr,
    FOLD_STAGES: tl.constexpr,
    FOLD_BLOCK_K: tl.constexpr,
):
    """The reduce role: x2d @ w_red^T + b_red, ReLU, for one [BLOCK_M, BLOCK_N] tile; columns below
    ch1 go to out (branch 1), the others to scratch (the 3x3 and kxk reductions).  With a pre-pool
    (PRE_K > 1) x2d's rows are the pooled pixels (hh, ww), each the max of its PRE_K x PRE_K window
    of the HI x WI input, taken while the A tile is loaded (x_row: the window's top-left tap)."""
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = offs_n < n_red
    offs_k = tl.arange(0, BLOCK_K)
    if PRE_K == 1:  # (a constexpr branch: its names stay bound after it)
        a_ptrs = x_ptr + x_row[:, None] + offs_k[None, :] * stride_x_c
    b_ptrs = w_ptr + offs_n[None, :] * stride_w_n + offs_k[:, None] * stride_w_k
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if PRE_K == 1:
        for k0 in range(0, cin, BLOCK_K):
            k_ok = (k0 + offs_k) < cin
            a = tl.load(a_ptrs, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            b = tl.load(b_ptrs, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
            acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
            a_ptrs += BLOCK_K * stride_x_c
            b_ptrs += BLOCK_K * stride_w_k
    else:
        # The running max is a second fp32 tile beside the accumulator: K steps of at most
        # FOLD_BLOCK_K channels keep both in registers.
        FOLD_K: tl.constexpr = FOLD_BLOCK_K if BLOCK_K > FOLD_BLOCK_K else BLOCK_K
        offs_fk = tl.arange(0, FOLD_K)
        fb_ptrs = w_ptr + offs_n[None, :] * stride_w_n + offs_fk[:, None] * stride_w_k
        r0 = hh * PRE_S - PRE_PAD
        c0 = ww * PRE_S - PRE_PAD
        for k0 in tl.range(0, cin, FOLD_K, num_stages=FOLD_STAGES):
            kk = k0 + offs_fk
            k_ok = kk < cin
            pooled = _window_max(
                x_ptr, x_row, r0, c0, 0, HI - 1, 0, WI - 1, row_ok, kk, k_ok,
                stride_x_h, stride_x_w, stride_x_c, PRE_K, BLOCK_M, FOLD_K,
            )  # fmt: skip
            # Rows past M and channels past Cin are -inf (every tap masked): zero them for the dot.
            a = tl.where(row_ok[:, None] & k_ok[None, :], pooled, 0.0).to(x_ptr.dtype.element_ty)
            b = tl.load(fb_ptrs, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
            acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
            fb_ptrs += FOLD_K * stride_w_k

    _reduce_epilogue(
        acc, b_ptr, out_ptr, scratch_ptr, o_row, s_row, row_ok, offs_n, col_ok, ch1,
        stride_b, stride_out_c, stride_scratch_c,
    )  # fmt: skip


@triton.jit
def _reduce_epilogue(
    acc,
    b_ptr,
    out_ptr,
    scratch_ptr,
    o_row,
    s_row,
    row_ok,
    offs_n,
    col_ok,
    ch1,
    stride_b,
    stride_out_c,
    stride_scratch_c,
):
    """The reduce role's epilogue on a finished fp32 tile (this launch 1's and reduce_pool_tma.py's):
    bias + ReLU (NaN propagates as in PyTorch), columns below ch1 (branch 1) into out, the others
    into scratch from its channel 0."""
    bias = tl.load(b_ptr + offs_n * stride_b, mask=col_ok, other=0.0).to(tl.float32)
    y = tl.maximum(acc + bias[None, :], 0.0, propagate_nan=tl.PropagateNan.ALL).to(out_ptr.dtype.element_ty)
    # A column tile may straddle branch 1 and the reductions: two complementary masked stores.
    is_branch1 = offs_n < ch1
    tl.store(
        out_ptr + o_row[:, None] + offs_n[None, :] * stride_out_c,
        y,
        mask=row_ok[:, None] & (col_ok & is_branch1)[None, :],
    )
    tl.store(
        scratch_ptr + s_row[:, None] + (offs_n - ch1)[None, :] * stride_scratch_c,
        y,
        mask=row_ok[:, None] & (col_ok & ~is_branch1)[None, :],
    )


@triton.jit
def _pool_tile(
    x_ptr,
    w_ptr,
    b_ptr,
    out_ptr,
    x_row,
    o_row,
    row_ok,
    hh,
    ww,
    pid_n,
    H,
    W,
    cin,
    n_pool,
    pool_col0,
    stride_x_h,
    stride_x_w,
    stride_x_c,
    stride_w_n,
    stride_w_k,
    stride_b,
    stride_out_c,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    STAGES: tl.constexpr,
    HI,
    WI,
    PRE_K: tl.constexpr,
    PRE_S: tl.constexpr,
    PRE_PAD: tl.constexpr,
    FOLD_STAGES: tl.constexpr,
    ws_ptr,
    cnt_ptr,
    tile,
    split,
    SPLIT_K: tl.constexpr,
    TAP_ALIGN: tl.constexpr,
):
    """The pool role: the 3x3/s1/p1 max pool of x taken while loading the A tile, then
    @ w_pool^T + b_pool, ReLU, into out's channels from pool_col0.  With a pre-pool (PRE_K > 1,
    PRE_S <= PRE_K) the A tile is the 3x3/s1/p1 max of the pooled H x W map, which is the max over
    the rows PRE_S*(hh-1)-PRE_PAD .. PRE_S*(hh+1)-PRE_PAD+PRE_K-1 of the HI x WI input (x_row: the
    first one's offset), clipped to the windows of the pooled pixels hh-1..hh+1 that exist and to
    the input; the same for the columns.  With SPLIT_K > 1 this program (``split`` of the SPLIT_K on
    pool tile ``tile``) runs its share of the K steps, and the last to finish adds the partial tiles
    and runs the epilogue (_common.finish_tile).  TAP_ALIGN > 0 (with STAGES >= 2): the tap rows'
    offsets are claimed multiples of TAP_ALIGN elements only (the caller's guarantee:
    _common.l1_align), so that their copies are that wide (cp.async.ca, which L1 caches) instead of
    16 bytes (cp.async.cg, which bypasses it): the taps that neighbouring pixels share hit L1
    instead of each reading L2."""
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = offs_n < n_pool
    offs_k = tl.arange(0, BLOCK_K)
    b_ptrs = w_ptr + offs_n[None, :] * stride_w_n + offs_k[:, None] * stride_w_k
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # This program's channels [k_lo, k_hi) (a constexpr branch: its names stay bound after it).
    if SPLIT_K == 1:
        k_lo = 0
        k_hi = cin
    else:
        step_lo, step_hi = split_range(tl.cdiv(cin, BLOCK_K), split, SPLIT_K)
        k_lo = step_lo * BLOCK_K
        k_hi = step_hi * BLOCK_K
        b_ptrs += k_lo * stride_w_k
    if PRE_K > 1:
        TAPS: tl.constexpr = 2 * PRE_S + PRE_K
        r0 = PRE_S * (hh - 1) - PRE_PAD
        c0 = PRE_S * (ww - 1) - PRE_PAD
        lo_r = tl.maximum(PRE_S * tl.maximum(hh - 1, 0) - PRE_PAD, 0)
        hi_r = tl.minimum(PRE_S * tl.minimum(hh + 1, H - 1) - PRE_PAD + PRE_K - 1, HI - 1)
        lo_c = tl.maximum(PRE_S * tl.maximum(ww - 1, 0) - PRE_PAD, 0)
        hi_c = tl.minimum(PRE_S * tl.minimum(ww + 1, W - 1) - PRE_PAD + PRE_K - 1, WI - 1)
        for k0 in tl.range(k_lo, k_hi, BLOCK_K, num_stages=FOLD_STAGES):
            kk = k0 + offs_k
            k_ok = kk < cin
            pooled = _window_max(
                x_ptr, x_row, r0, c0, lo_r, hi_r, lo_c, hi_c, row_ok, kk, k_ok,
                stride_x_h, stride_x_w, stride_x_c, TAPS, BLOCK_M, BLOCK_K,
            )  # fmt: skip
            a = tl.where(row_ok[:, None] & k_ok[None, :], pooled, 0.0).to(x_ptr.dtype.element_ty)
            b = tl.load(b_ptrs, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
            acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
            b_ptrs += BLOCK_K * stride_w_k
    else:
        # STAGES >= 2 software-pipelines the nine shifted loads as cp.async into shared memory (which
        # needs them zero-filled, so padding becomes -inf after the load; 16-byte copies bypass
        # L1, so every tap reads L2); 1 keeps them synchronous, in registers, through L1 (where
        # the taps that neighbouring pixels share hit).
        for k0 in tl.range(k_lo, k_hi, BLOCK_K, num_stages=STAGES):
            kk = k0 + offs_k
            k_ok = kk < cin
            # fp32 holds every fp16/bf16 value exactly, so the max is exact; tl.maximum would
            # promote bf16 to fp32 anyway.
            pooled = tl.full((BLOCK_M, BLOCK_K), float("-inf"), dtype=tl.float32)
            for dh in tl.static_range(3):
                for dw in tl.static_range(3):
                    h2 = hh + (dh - 1)
                    w2 = ww + (dw - 1)
                    tap_ok = row_ok & (h2 >= 0) & (h2 < H) & (w2 >= 0) & (w2 < W)
                    tap_row = x_row + (dh - 1) * stride_x_h + (dw - 1) * stride_x_w
                    offs = tap_row[:, None] + kk[None, :] * stride_x_c
                    if TAP_ALIGN > 0:
                        # On the 2-D offsets: on tap_row the claim would vanish for the taps
                        # whose column shift folds away (dw 1).
                        offs = tl.multiple_of(offs, [1, TAP_ALIGN])
                    v = tl.load(
                        x_ptr + offs,
                        mask=tap_ok[:, None] & k_ok[None, :],
                        other=0.0,
                    )
                    pooled = tl.maximum(
                        pooled,
                        tl.where(tap_ok[:, None], v.to(tl.float32), float("-inf")),
                        propagate_nan=tl.PropagateNan.ALL,
                    )
            # Rows past M are still -inf (every tap masked), channels past Cin 0: zero both, since
            # -inf * 0 would be NaN in the dot.
            a = tl.where(row_ok[:, None] & k_ok[None, :], pooled, 0.0).to(x_ptr.dtype.element_ty)
            b = tl.load(b_ptrs, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
            acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
            b_ptrs += BLOCK_K * stride_w_k

    finish_tile(
        acc, b_ptr, out_ptr, o_row, row_ok, offs_n, col_ok, pool_col0, stride_b, stride_out_c,
        ws_ptr, cnt_ptr, tile, split, SPLIT_K, BLOCK_M * BLOCK_N, BLOCK_M, BLOCK_N,
    )  # fmt: skip


# M, H, W and the tile count only enter masks and index arithmetic on the row axis, so their
# divisibility buys nothing; not specializing on them keeps one binary across batch sizes.  The
# *_div_unit values are multiplied back by a constexpr unit, which is what tells the compiler their
# alignment; whether the quotient is also a multiple of 16 buys nothing, and not marking it lets
# blocks with the same units share binaries (fewer compiles on a cold start).
@triton.jit(
    do_not_specialize=["M", "H", "W", "HI", "WI", "n_pool_tiles"],
    do_not_specialize_on_alignment=[
        "cin_div_unit",
        "n_red_div_unit",
        "ch1_div_unit",
        "n_pool_div_unit",
        "pool_col0_div_unit",
        "stride_x_n_div_unit",
        "stride_x_h_div_unit",
        "stride_x_w_div_unit",
        "stride_out_n_div_unit",
        "stride_out_h_div_unit",
        "stride_out_w_div_unit",
        "stride_scratch_n_div_unit",
        "stride_scratch_h_div_unit",
        "stride_scratch_w_div_unit",
    ],
)
def _reduce_pool_kernel(
    # Pointers: block input, packed 1x1 weights and biases, the two outputs, launch 2's counters;
    # the pool role's split-K fp32 workspace and int32 tile counters (POOL_SPLIT_K > 1).
    x_ptr,
    w_red_ptr,
    b_red_ptr,
    w_pool_ptr,
    b_pool_ptr,
    out_ptr,
    scratch_ptr,
    counters_ptr,
    pool_ws_ptr,
    pool_counters_ptr,
    # Pixels (M = N*H*W) and the image's height and width; the input's (HI x WI: the map before
    # the pre-pool, H x W without one).
    M,
    H,
    W,
    HI,
    WI,
    # Channel counts, divided by C_UNIT: Cin; rows of w_red (ch1 + ch3red + ch5red); branch 1's
    # width; rows of w_pool; the pool branch's first channel in out.
    cin_div_unit,
    n_red_div_unit,
    ch1_div_unit,
    n_pool_div_unit,
    pool_col0_div_unit,
    # Pool column tiles per row tile; how many int32 counters to zero (a multiple of 16, or 0).
    n_pool_tiles,
    n_counters,
    # Strides in elements; those of N, H and W divided by ROW_UNIT.
    stride_x_n_div_unit,
    stride_x_h_div_unit,
    stride_x_w_div_unit,
    stride_x_c,
    stride_w_red_n,
    stride_w_red_k,
    stride_b_red,
    stride_w_pool_n,
    stride_w_pool_k,
    stride_b_pool,
    stride_out_n_div_unit,
    stride_out_h_div_unit,
    stride_out_w_div_unit,
    stride_out_c,
    stride_scratch_n_div_unit,
    stride_scratch_h_div_unit,
    stride_scratch_w_div_unit,
    stride_scratch_c,
    # Fixed by the launcher: tf32/ieee, the pool tile's width, the stride and channel units; the
    # pre-pool folded into the loads (PRE_K x PRE_K, stride PRE_S, padding PRE_PAD; PRE_K 1: none)
    # and the software-pipelining depth of its K loops.
    DOT_PRECISION: tl.constexpr,
    BLOCK_N_POOL: tl.constexpr,
    ROW_UNIT: tl.constexpr,
    C_UNIT: tl.constexpr,
    PRE_K: tl.constexpr,
    PRE_S: tl.constexpr,
    PRE_PAD: tl.constexpr,
    FOLD_STAGES: tl.constexpr,
    FOLD_BLOCK_K: tl.constexpr,
    # The tile (autotuned): reduce role, then pool role.
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_M_POOL: tl.constexpr,
    BLOCK_K_POOL: tl.constexpr,
    POOL_STAGES: tl.constexpr,
    POOL_SPLIT_K: tl.constexpr,
    POOL_L1: tl.constexpr,
):
    """Launch 1: per BLOCK_M pixels, the three 1x1 convs reading x as one GEMM (branch 1 into out,
    the reductions into scratch) and the pool branch (3x3 max pool fused into its 1x1), bias + ReLU;
    it also zeroes launch 2's split-K counters on the way.  With a pre-pool (PRE_K > 1) the pixels
    are those of max_pool2d(x, PRE_K, PRE_S, PRE_PAD) (H x W, ceil mode or not: the launcher's
    sizes), and both roles take that max while loading x (HI x WI); the pooled map is never
    stored."""
    # Multiplied back by the constexpr units, the compiler knows every NHWC row starts aligned and
    # the column masks change only at aligned channels (see _common.row_unit).
    stride_x_n, stride_x_h, stride_x_w = (
        stride_x_n_div_unit * ROW_UNIT,
        stride_x_h_div_unit * ROW_UNIT,
        stride_x_w_div_unit * ROW_UNIT,
    )
    cin, n_red, ch1 = cin_div_unit * C_UNIT, n_red_div_unit * C_UNIT, ch1_div_unit * C_UNIT
    n_pool, pool_col0 = n_pool_div_unit * C_UNIT, pool_col0_div_unit * C_UNIT
    stride_out_n, stride_out_h, stride_out_w = (
        stride_out_n_div_unit * ROW_UNIT,
        stride_out_h_div_unit * ROW_UNIT,
        stride_out_w_div_unit * ROW_UNIT,
    )
    stride_scratch_n, stride_scratch_h, stride_scratch_w = (
        stride_scratch_n_div_unit * ROW_UNIT,
        stride_scratch_h_div_unit * ROW_UNIT,
        stride_scratch_w_div_unit * ROW_UNIT,
    )
    # Per BLOCK_M-row tile: the reduce role's column tiles, then the pool role's, which split the
    # tile's rows into BLOCK_M // BLOCK_M_POOL parts (each part holds the whole pool width).
    n_red_tiles = tl.cdiv(n_red, BLOCK_N)
    POOL_SPLIT: tl.constexpr = BLOCK_M // BLOCK_M_POOL
    n_cols = n_red_tiles + n_pool_tiles * POOL_SPLIT * POOL_SPLIT_K
    pid = tl.program_id(0)
    pid_m = pid // n_cols
    col = pid % n_cols
    # Launch 2's split-K tile counters (branch_convs.py) start at zero: it runs next on the stream.
    # No launch of their own, and nothing to do where launch 2 splits nothing (n_counters 0).
    # n_counters is a multiple of 16 (the buffer is allocated so) and 1024 per step gives every
    # thread 4 or more: vector stores.
    offs_c = tl.arange(0, 1024)
    for c0 in range(pid * 1024, n_counters, tl.num_programs(0) * 1024):
        tl.store(counters_ptr + c0 + offs_c, 0, mask=c0 + offs_c < n_counters)

    if col < n_red_tiles:
        row_ok, img, hh, ww = pixel_rows(pid_m * BLOCK_M, M, H, W, BLOCK_M)
        if PRE_K == 1:
            x_row = row_offsets(img, hh, ww, stride_x_n, stride_x_h, stride_x_w)
        else:  # the pre-pool window's top-left tap (outside the input where it pads)
            x_row = row_offsets(img, hh * PRE_S - PRE_PAD, ww * PRE_S - PRE_PAD, stride_x_n, stride_x_h, stride_x_w)
        o_row = row_offsets(img, hh, ww, stride_out_n, stride_out_h, stride_out_w)
        s_row = row_offsets(img, hh, ww, stride_scratch_n, stride_scratch_h, stride_scratch_w)
        _reduce_tile(
            x_ptr,
            w_red_ptr,
            b_red_ptr,
            out_ptr,
            scratch_ptr,
            x_row,
            o_row,
            s_row,
            row_ok,
            col,
            cin,
            n_red,
            ch1,
            stride_x_c,
            stride_w_red_n,
            stride_w_red_k,
            stride_b_red,
            stride_out_c,
            stride_scratch_c,
            hh,
            ww,
            HI,
            WI,
            stride_x_h,
            stride_x_w,
            DOT_PRECISION,
            BLOCK_M,
            BLOCK_N,
            BLOCK_K,
            PRE_K,
            PRE_S,
            PRE_PAD,
            FOLD_STAGES,
            FOLD_BLOCK_K,
        )
    else:
        # The POOL_SPLIT_K programs sharing a pool tile's K steps are neighbours in the grid.
        if POOL_SPLIT_K == 1:
            k_split = 0
            part = col - n_red_tiles
        else:
            k_split = (col - n_red_tiles) % POOL_SPLIT_K
            part = (col - n_red_tiles) // POOL_SPLIT_K
        row0 = pid_m * BLOCK_M + (part // n_pool_tiles) * BLOCK_M_POOL
        # Names of their own: Triton rejects a name bound in both branches with different shapes.
        p_ok, p_img, p_hh, p_ww = pixel_rows(row0, M, H, W, BLOCK_M_POOL)
        if PRE_K == 1:
            p_x_row = row_offsets(p_img, p_hh, p_ww, stride_x_n, stride_x_h, stride_x_w)
        else:  # the first tap of the pre-pool windows of pixels (hh - 1, ww - 1) .. (hh + 1, ww + 1)
            p_x_row = row_offsets(
                p_img,
                PRE_S * (p_hh - 1) - PRE_PAD,
                PRE_S * (p_ww - 1) - PRE_PAD,
                stride_x_n,
                stride_x_h,
                stride_x_w,
            )
        p_o_row = row_offsets(p_img, p_hh, p_ww, stride_out_n, stride_out_h, stride_out_w)
        _pool_tile(
            x_ptr,
            w_pool_ptr,
            b_pool_ptr,
            out_ptr,
            p_x_row,
            p_o_row,
            p_ok,
            p_hh,
            p_ww,
            part % n_pool_tiles,
            H,
            W,
            cin,
            n_pool,
            pool_col0,
            stride_x_h,
            stride_x_w,
            stride_x_c,
            stride_w_pool_n,
            stride_w_pool_k,
            stride_b_pool,
            stride_out_c,
            DOT_PRECISION,
            BLOCK_M_POOL,
            BLOCK_N_POOL,
            BLOCK_K_POOL,
            POOL_STAGES,
            HI,
            WI,
            PRE_K,
            PRE_S,
            PRE_PAD,
            FOLD_STAGES,
            pool_ws_ptr,
            pool_counters_ptr,
            pid_m * (n_pool_tiles * POOL_SPLIT) + part,
            k_split,
            POOL_SPLIT_K,
            l1_align(POOL_L1, ROW_UNIT, x_ptr.dtype.element_ty.primitive_bitwidth),
        )


# 128-row tiles for large batches; 64- and 32-row tiles so that small images still spread over the
# SMs.  The pool role's column tile is the whole pool width (up to 128; a narrower tile would redo
# the max pool per tile) and it holds nine shifted [BLOCK_M_POOL, BLOCK_K_POOL] loads at once, so
# the 4-warp 128-row configs split its rows over two programs of 64 (fewer registers, and the long
# pool programs even out over the grid).  POOL_STAGES 2 pipelines those loads with cp.async, 1
# loads them through L1.
# `python -m benchmarks.kernel_stats` prints registers, spills and shared memory per config;
# benchmarks/results/triton_tuning_notes.md records how these were chosen.
CONFIGS = [
    triton.Config(
        {"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64, "BLOCK_M_POOL": 64, "BLOCK_K_POOL": 16, "POOL_STAGES": 2},
        num_warps=4,
        num_stages=3,
    ),
    triton.Config(
        {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "BLOCK_M_POOL": 128, "BLOCK_K_POOL": 16, "POOL_STAGES": 1},
        num_warps=8,
        num_stages=3,
    ),
    triton.Config(
        {"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32, "BLOCK_M_POOL": 64, "BLOCK_K_POOL": 16, "POOL_STAGES": 2},
        num_warps=4,
        num_stages=4,
    ),
    triton.Config(
        {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "BLOCK_M_POOL": 64, "BLOCK_K_POOL": 16, "POOL_STAGES": 2},
        num_warps=4,
        num_stages=3,
    ),
    triton.Config(
        {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 64, "BLOCK_M_POOL": 32, "BLOCK_K_POOL": 16, "POOL_STAGES": 2},
        num_warps=2,
        num_stages=3,
    ),
    # The pool role's nine shifted loads through L1, where cp.async's 16-byte copies bypass it:
    # neighbouring pixels share their taps, so most of them then hit L1 instead of each reading L2
    # (at 3a, 9 x 77 MB of L2 traffic per launch with 16-byte copies).  Beside the 64x64 reduce tile
    # that won most blocks on the H200: pipelined in 8-byte copies (POOL_L1, cp.async.ca), or
    # synchronous (POOL_STAGES 1: plain vector loads, which L1 caches).
    triton.Config(
        {
            "BLOCK_M": 64,
            "BLOCK_N": 64,
            "BLOCK_K": 64,
            "BLOCK_M_POOL": 64,
            "BLOCK_K_POOL": 16,
            "POOL_STAGES": 2,
            "POOL_L1": 1,
        },
        num_warps=4,
        num_stages=3,
    ),
    triton.Config(
        {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "BLOCK_M_POOL": 64, "BLOCK_K_POOL": 16, "POOL_STAGES": 1},
        num_warps=4,
        num_stages=3,
    ),
    # A 256-wide reduce tile: 3a's three 1x1s in one column tile (3b-5b in two or three), so each
    # row tile of x is read by fewer programs; its pool role's taps through L1 as above.
    triton.Config(
        {
            "BLOCK_M": 64,
            "BLOCK_N": 256,
            "BLOCK_K": 32,
            "BLOCK_M_POOL": 64,
            "BLOCK_K_POOL": 32,
            "POOL_STAGES": 2,
            "POOL_L1": 1,
        },
        num_warps=8,
        num_stages=3,
    ),
]
# Offered up to SMALL_PROBLEM_PIXELS pixels only (batch 1), and there alone (the configs above
# are for larger problems only): deeper pool steps (32 and 64 channels) shorten the pool role's
# serial K loop, the longest chain of a small launch 1.
SMALL_PROBLEM_CONFIGS = [
    triton.Config(
        {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 64, "BLOCK_M_POOL": 32, "BLOCK_K_POOL": 32, "POOL_STAGES": 2},
        num_warps=4,
        num_stages=3,
    ),
    triton.Config(
        {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 64, "BLOCK_M_POOL": 32, "BLOCK_K_POOL": 64, "POOL_STAGES": 2},
        num_warps=4,
        num_stages=3,
    ),
]
# The pool role's K split over POOL_SPLIT_K programs per pool tile (see _common.finish_tile), for
# batch 1 too: Cin 192..832 at 16..64 channels a step is 3..52 steps in series per pool tile, on a
# grid of a few dozen programs.
SMALL_PROBLEM_CONFIGS += [
    triton.Config(
        {
            "BLOCK_M": 32,
            "BLOCK_N": 32,
            "BLOCK_K": 64,
            "BLOCK_M_POOL": 32,
            "BLOCK_K_POOL": k_pool,
            "POOL_STAGES": 2,
            "POOL_SPLIT_K": split,
        },
        num_warps=4,
        num_stages=3,
    )
    for k_pool, split in ((16, 4), (32, 2), (32, 4))
]
CONFIGS += SMALL_PROBLEM_CONFIGS
# The interpreter runs programs one by one in numpy, paying per program and per op rather than per
# element: no tuning, one fixed tile, large enough to keep the test suite quick.
INTERPRETER_CONFIG = {
    "BLOCK_M": 64,
    "BLOCK_N": 64,
    "BLOCK_K": 64,
    "BLOCK_M_POOL": 64,
    "BLOCK_K_POOL": 64,
    "POOL_STAGES": 1,
    "POOL_SPLIT_K": 1,
    "POOL_L1": 1,
}


def _with_pool_tile(kwargs: dict) -> dict:
    """A config's kwargs with the pool role's tile filled in where absent: all the rows, 16
    channels a step, synchronous loads, no K split, 16-byte copies where pipelined.  Raises unless
    the pool rows divide BLOCK_M."""
    kwargs = {
        "BLOCK_M_POOL": kwargs["BLOCK_M"],
        "BLOCK_K_POOL": 16,
        "POOL_STAGES": 1,
        "POOL_SPLIT_K": 1,
        "POOL_L1": 0,
        **kwargs,
    }
    if kwargs["BLOCK_M_POOL"] > kwargs["BLOCK_M"] or kwargs["BLOCK_M"] % kwargs["BLOCK_M_POOL"]:
        raise ValueError(f"BLOCK_M_POOL {kwargs['BLOCK_M_POOL']} must divide BLOCK_M {kwargs['BLOCK_M']}")
    return kwargs


def _complete_config(config: triton.Config) -> triton.Config:
    """A copy of ``config`` (warps, stages, hooks and all) with _with_pool_tile's kwargs."""
    return _common.completed_config(config, _with_pool_tile)


# Every shape argument, so a tuned config is reused exactly for the shape it was tuned on.
AUTOTUNE_KEY = [
    "M",
    "H",
    "W",
    "HI",
    "WI",
    "PRE_K",
    "PRE_S",
    "PRE_PAD",
    "cin_div_unit",
    "n_red_div_unit",
    "ch1_div_unit",
    "n_pool_div_unit",
    "DOT_PRECISION",
    "ROW_UNIT",
    "C_UNIT",
]


# The folded pre-pool's K loops load PRE_K^2 (reduce role) and (2*PRE_S + PRE_K)^2 (pool role)
# taps per step, one tap at a time (a loop, not unrolled: with all taps in flight every 128-row
# config spilled 1.4-4 KB on sm_90); pipelining them through shared memory would take that many
# tiles per stage, so they load synchronously into registers (2 gives the same code on sm_90).
FOLD_STAGES = 1
# The reduce role's K step with a pre-pool, where a config's BLOCK_K is larger: the running max
# is a second fp32 [BLOCK_M, K] tile beside the accumulator (at BLOCK_K 64 the 128-row configs
# spilled up to 448 bytes on sm_90; `python -m benchmarks.kernel_stats --block folds`).
FOLD_BLOCK_K = 32


def _check_pre_pool(pre_pool) -> tuple:
    """(PRE_K, PRE_S, PRE_PAD) of a pre-pool (kernel, stride, padding, ceil_mode), or (1, 1, 0) for none."""
    if pre_pool is None:
        return 1, 1, 0
    kernel, stride, padding, _ceil = pre_pool
    why = geometry.foldable(kernel, stride, padding)
    if why is not None:
        raise ValueError(why)
    return kernel, stride, padding


# The autotuner's early prune: SMALL_PROBLEM_CONFIGS up to SMALL_PROBLEM_PIXELS, the others past it
# (each unless nothing is left).  Batch 1 tunes only the small configs: on the H200 (bf16,
# 2026-12-04) each of the others timed there was 1.75-6.5x slower than the best small one, on all
# nine blocks and the three folded launches.
_prune_small_only = _common.small_only_prune(SMALL_PROBLEM_CONFIGS, _with_pool_tile, exclusive=True)

# What the folded pool role (PRE_K > 1) ignores: it loads its taps one by one, synchronously.
_FOLD_IGNORES = ("POOL_STAGES", "POOL_L1")


def _prune(configs, named_args, **meta):
    """The autotuner's early prune: _prune_small_only, and with a pre-pool folded in (PRE_K > 1)
    one of each set of configs that differ only in what the folded pool role ignores
    (_FOLD_IGNORES), which compile to the same code."""
    configs = _prune_small_only(configs, named_args)
    if meta.get("PRE_K", 1) == 1:
        return configs
    kept, seen = [], set()
    for c in configs:
        key = (sorted((k, v) for k, v in c.kwargs.items() if k not in _FOLD_IGNORES), c.num_warps, c.num_stages)
        if repr(key) not in seen:
            seen.add(repr(key))
            kept.append(c)
    return kept


def make_tuned_kernel(configs=CONFIGS, **autotune_kwargs):
    """The autotuned kernel (tests build one with their own configs and do_bench)."""
    configs = [_complete_config(c) for c in configs]
    return triton.autotune(
        configs=configs, key=AUTOTUNE_KEY, prune_configs_by={"early_config_prune": _prune}, **autotune_kwargs
    )(_reduce_pool_kernel)


# Winners also go to triton's on-disk cache, so a new process neither re-benchmarks nor compiles
# the losing configs.
_tuned_kernel = None if _common.INTERPRET else make_tuned_kernel(cache_results=True, do_bench=_common.autotune_bench)


def _pool_split_k(kwargs: dict) -> int:
    return kwargs.get("POOL_SPLIT_K", 1)


def _pool_tile_count(m: int, n_pool: int, kwargs: dict) -> int:
    """Pool tiles of one launch (the pool programs without their POOL_SPLIT_K factor)."""
    kw = _with_pool_tile(kwargs)
    row_parts = kw["BLOCK_M"] // kw["BLOCK_M_POOL"]
    return _common.cdiv(m, kw["BLOCK_M"]) * row_parts * _common.cdiv(n_pool, _common.next_pow2_clamped(n_pool))


# The pool role's split-K tile counters, per (device, stream): zeroed when allocated, and every
# launch leaves them at zero (the program that finishes a tile resets its counter), so a launch
# needs no memset.  Per stream, so that launches on two streams never share counters; a launch
# on one stream runs after the previous one there.  Launches that raise (nothing ran, or the
# interpreter stopped part-way) drop their stream's counters; a GPU fault in the kernel leaves the
# CUDA context unusable, counters and all.  A launch captured in a CUDA graph gets counters of its
# own, zeroed in the graph (a memset node before it), so a graph never shares counters with eager
# launches or other graphs.
_POOL_COUNTERS: dict = {}


def _pool_counter_key(like: torch.Tensor):
    return like.device, torch.cuda.current_stream(like.device).cuda_stream if like.is_cuda else None


def _pool_counters(like: torch.Tensor, n: int) -> torch.Tensor:
    """At least ``n`` int32 zeros on ``like``'s device (see _POOL_COUNTERS)."""
    if like.is_cuda and torch.cuda.is_current_stream_capturing():
        return torch.zeros(n, dtype=torch.int32, device=like.device)
    key = _pool_counter_key(like)
    counters = _POOL_COUNTERS.get(key)
    if counters is None or counters.numel() < n:
        # Replacing a smaller buffer frees it in stream order, after the launches that use it.
        n = n if counters is None else max(n, 2 * counters.numel())
        counters = _POOL_COUNTERS[key] = torch.zeros(n, dtype=torch.int32, device=like.device)
    return counters


def _forget_pool_counters(counters: torch.Tensor) -> None:
    for key, cached in list(_POOL_COUNTERS.items()):
        if cached is counters:
            del _POOL_COUNTERS[key]


# {(autotuned kernel, M, pool width): (workspace slots, counters) or None}: what
# _pool_split_buffers needs for an unpinned launch, worked out once per shape rather than per launch
# (the autotuner's prune costs ~25 us of host time).
_SPLIT_SIZES = LRUDict()
_UNKNOWN = object()


def _pool_split_sizes(m: int, n_pool: int, config) -> Optional[tuple]:
    """(fp32 workspace elements, int32 counters) for the pool role's split-K configs that may run
    (see _common.candidate_kwargs), or None where none can."""
    key = (_tuned_kernel, m, n_pool) if config is None else None
    hit = _SPLIT_SIZES.get(key, _UNKNOWN) if key is not None else _UNKNOWN  # one locked read (threads)
    if hit is not _UNKNOWN:
        return hit
    candidates = [
        kw for kw in _common.candidate_kwargs(_tuned_kernel, config, _prune_small_only, m) if _pool_split_k(kw) > 1
    ]
    sizes = None
    if candidates:
        block_n_pool = _common.next_pow2_clamped(n_pool)
        sizes = (
            max(
                _pool_tile_count(m, n_pool, kw) * _pool_split_k(kw) * _with_pool_tile(kw)["BLOCK_M_POOL"] * block_n_pool
                for kw in candidates
            ),
            max(_pool_tile_count(m, n_pool, kw) for kw in candidates),
        )
    if key is not None:
        _SPLIT_SIZES[key] = sizes
    return sizes


def _pool_split_buffers(x, m: int, n_pool: int, config) -> tuple:
    """(fp32 workspace, int32 counters) for the pool role's split-K configs that may run; empty
    ones, never read, where none can."""
    sizes = _pool_split_sizes(m, n_pool, config)
    if sizes is None:
        return _common.no_buffer(x, torch.float32), _common.no_buffer(x, torch.int32)
    return torch.empty(sizes[0], dtype=torch.float32, device=x.device), _pool_counters(x, sizes[1])


def _arguments(x, w_red, b_red, w_pool, b_pool, out, scratch, counters=None, pre_pool=None, config=None):
    """(positional args, launcher-fixed constexprs, grid(meta)) for _reduce_pool_kernel.
    ``counters``: int32 to be zeroed on the way (launch 2's split-K counters), or None.
    ``pre_pool``: (kernel, stride, padding, ceil_mode) of a max pool folded into the loads, or None.
    ``config``: the pinned config (sizes the pool role's split-K buffers), or None: the autotuner's."""
    _common.check_dtype(x.dtype)
    n, cin, hi, wi = x.shape
    pre_k, pre_s, pre_pad = _check_pre_pool(pre_pool)
    if pre_pool is None:
        h, w = hi, wi
    else:
        h, w = (geometry.pool_out(size, *pre_pool) for size in (hi, wi))
    if tuple(out.shape[2:]) != (h, w) or tuple(scratch.shape[2:]) != (h, w):
        raise ValueError(
            f"launch 1: out {tuple(out.shape)} and scratch {tuple(scratch.shape)} must be {h}x{w} "
            f"(the input {hi}x{wi}{'' if pre_pool is None else f' max-pooled by {pre_pool}'})"
        )
    nr, np_ = w_red.shape[0], w_pool.shape[0]
    ch1 = nr - scratch.shape[1]
    m = n * h * w
    geometry.check_pixel_rows(m)
    pool_col0 = out.shape[1] - np_
    unit = _common.row_unit(x, out, scratch)
    c_unit = _common.pow2_unit(cin, nr, ch1, np_, pool_col0)
    block_n_pool = _common.next_pow2_clamped(np_)
    n_pool_tiles = _common.cdiv(np_, block_n_pool)
    if counters is None:
        counters = _common.no_buffer(x, torch.int32)
    pool_ws, pool_counters = _pool_split_buffers(x, m, np_, config)
    args = (
        x,
        w_red,
        b_red,
        w_pool,
        b_pool,
        out,
        scratch,
        counters,
        pool_ws,
        pool_counters,
        m,
        h,
        w,
        hi,
        wi,
        cin // c_unit,
        nr // c_unit,
        ch1 // c_unit,
        np_ // c_unit,
        pool_col0 // c_unit,
        n_pool_tiles,
        counters.numel(),
        *_common.row_strides(x, unit),
        w_red.stride(0),
        w_red.stride(1),
        b_red.stride(0),
        w_pool.stride(0),
        w_pool.stride(1),
        b_pool.stride(0),
        *_common.row_strides(out, unit),
        *_common.row_strides(scratch, unit),
    )
    meta = {
        "DOT_PRECISION": _common.dot_precision(x.dtype),
        "BLOCK_N_POOL": block_n_pool,
        "ROW_UNIT": unit,
        "C_UNIT": c_unit,
        "PRE_K": pre_k,
        "PRE_S": pre_s,
        "PRE_PAD": pre_pad,
        "FOLD_STAGES": FOLD_STAGES,
        "FOLD_BLOCK_K": FOLD_BLOCK_K,
    }

    def grid(cfg):
        pool_split = cfg["BLOCK_M"] // cfg["BLOCK_M_POOL"]
        pool_programs = n_pool_tiles * pool_split * cfg["POOL_SPLIT_K"]
        return (_common.cdiv(m, cfg["BLOCK_M"]) * (_common.cdiv(nr, cfg["BLOCK_N"]) + pool_programs),)

    return args, meta, grid


def launch_reduce_pool(
    x: torch.Tensor,
    w_red: torch.Tensor,
    b_red: torch.Tensor,
    w_pool: torch.Tensor,
    b_pool: torch.Tensor,
    out: torch.Tensor,
    scratch: torch.Tensor,
    config: Optional[triton.Config] = None,
    counters: Optional[torch.Tensor] = None,
    pre_pool: Optional[tuple] = None,
) -> None:
    """Launch 1: fills out[:, :ch1], out[:, -pool:] and scratch (all post-ReLU), in one launch.

    x (N, Cin, H, W); w_red (ch1 + ch3red + ch5red, Cin); w_pool (pool, Cin); out (N, C_total, H, W);
    scratch (N, ch3red + ch5red, H, W).  Any strides (channels_last is the fast case).
    ``config`` (one of CONFIGS, or any triton.Config with BLOCK_M/N/K) skips autotuning.
    ``counters`` (int32): zeroed on the way, for launch 2's split-K (see branch_convs.py).
    ``pre_pool`` (kernel, stride, padding, ceil_mode): the block's input is max_pool2d(x, ...),
    taken on the fly (out and scratch are the pooled size); see geometry.foldable for what folds.
    """
    if x.numel() == 0:  # nothing to compute, and CUDA rejects an empty grid
        return
    if counters is not None and (counters.dtype != torch.int32 or counters.numel() % 16):
        raise ValueError(
            f"the split-K counters must be int32 and a multiple of 16 long, got {counters.numel()} "
            f"{counters.dtype} (branch_convs.split_k_counters gives the count)"
        )
    args, meta, grid = _arguments(x, w_red, b_red, w_pool, b_pool, out, scratch, counters, pre_pool, config)
    try:
        _common.launch_configured(
            _reduce_pool_kernel,
            _tuned_kernel,
            grid,
            args,
            meta,
            config,
            INTERPRETER_CONFIG,
            config_kwargs=_with_pool_tile,
        )
    except BaseException:
        _forget_pool_counters(args[9])  # programs may have stopped with a tile's count part-way
        raise
