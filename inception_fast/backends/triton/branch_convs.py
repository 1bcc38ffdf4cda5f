"""Launch 2 of the Triton Inception block: branch 2's 3x3 conv and branch 3's kxk conv (k = 3 in
torchvision's variant, 5 in the paper's), both in one kernel.

Each conv is an implicit GEMM: [M = N*H*W pixels] x [K = kh*kw*Cin_branch] x [Cout], with the A
operand gathered straight from scratch (NHWC, zero padding k//2: out-of-image taps load 0) and the
B operand from the weights stored channels_last, i.e. memory (Cout, kh, kw, Cin), so K runs over
(kh, kw, cin) exactly as memory does.  Bias + ReLU in the epilogue; the result goes into its channel
slice of the block output: [ch1, ch1+ch3) for branch 2, [ch1+ch3, ch1+ch3+ch5) for branch 3.

* scratch (N, ch3red + ch5red, H, W): channels [0, ch3red) feed branch 2, the rest branch 3.
* One 1-D grid covers both problems: per BLOCK_M pixel tile, first branch 2's column tiles
  (BLOCK_N wide), then branch 3's (sized to ch5 by the launcher since ch5 is 32..128, but never
  wider than BLOCK_N, which bounds the accumulator's registers on the narrower configs).
  The (kh, kw, cin-block) loop is one flat loop so the software pipeline sees all of K.
* Split-K (configs with SPLIT_K > 1, the only ones offered for small problems: batch 1 has 49 to 784
  pixels, i.e. 28 to 125 programs of 32x32 for 132 SMs, each running 27 to 54 K steps in series):
  SPLIT_K programs share each output tile, each running an even share of the K steps.  Each
  stores its fp32 partial tile into a workspace slot and bumps the tile's counter (acq_rel
  atomic, after a barrier: every thread's partial is out); the one that brings it to SPLIT_K
  adds the SPLIT_K slots in a fixed order (the result does not depend on who came last), resets
  the counter to 0 and runs the epilogue.  The counters are zeroed by launch 1 of the same
  block (it runs first on the stream), or by the launcher when launch 2 runs alone.

Dtypes: fp16/bf16 operands with fp32 accumulation; fp32 uses TF32 only when
torch.backends.cudnn.allow_tf32 is on, else exact fp32.  64-bit offsets throughout.  NaN propagates
through the ReLU as in PyTorch.
For NCHW inputs see the note in reduce_pool.py: the op receives channels_last only.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ... import geometry
from . import _common
from ._common import finish_tile, l1_align, pixel_tile, row_offsets, split_range

__all__ = ["launch_branch_convs", "split_k_counters", "CONFIGS", "INTERPRETER_CONFIG", "SPLIT_K_MAX_PIXELS"]


@triton.jit
def _conv_acc(
    src_ptr,
    w_ptr,
    s_row,
    row_ok,
    hh,
    ww,
    offs_n,
    col_ok,
    H,
    W,
    cin,
    cin_off,
    it_lo,
    it_hi,
    stride_src_h,
    stride_src_w,
    stride_src_c,
    stride_w_o,
    stride_w_h,
    stride_w_w,
    stride_w_c,
    KS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    A_ALIGN: tl.constexpr,
):
    """The fp32 BLOCK_M x BLOCK_N sums of a KSxKS conv (zero padding KS // 2) over src's channels
    [cin_off, cin_off + cin), K steps [it_lo, it_hi) of the flat (kh, kw, cin-block) loop: rows
    ``s_row`` (each pixel's offset in src; hh, ww its position, row_ok whether it exists), columns
    ``offs_n`` of the weight (Cout, KS, KS, Cin in any strides).  A_ALIGN > 0: the tap rows'
    offsets are claimed multiples of A_ALIGN elements only (the caller's guarantee: l1_align), so
    that the A tile's pipelined copies are that wide (cp.async.ca, which L1 caches: a tap that
    neighbouring pixels share is read from L2 once) instead of 16 bytes (cp.async.cg, which
    bypasses L1: each of a pixel's taps reads L2); the weights keep 16-byte copies."""
    offs_k = tl.arange(0, BLOCK_K)
    n_cblocks = tl.cdiv(cin, BLOCK_K)
    w_cols = w_ptr + offs_n[None, :] * stride_w_o
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for it in range(it_lo, it_hi):
        tap = it // n_cblocks
        kk = (it - tap * n_cblocks) * BLOCK_K + offs_k
        kh = tap // KS
        kw = tap - kh * KS
        dh = kh - KS // 2
        dw = kw - KS // 2
        h2 = hh + dh
        w2 = ww + dw
        k_ok = kk < cin
        tap_ok = row_ok & (h2 >= 0) & (h2 < H) & (w2 >= 0) & (w2 < W)
        tap_row = s_row + dh * stride_src_h + dw * stride_src_w
        if A_ALIGN > 0:
            tap_row = tl.multiple_of(tap_row, A_ALIGN)
        a = tl.load(
            src_ptr + tap_row[:, None] + (cin_off + kk)[None, :] * stride_src_c,
            mask=tap_ok[:, None] & k_ok[None, :],
            other=0.0,
        )
        b = tl.load(
            w_cols + kh * stride_w_h + kw * stride_w_w + kk[:, None] * stride_w_c,
            mask=k_ok[:, None] & col_ok[None, :],
            other=0.0,
        )
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
    return acc


@triton.jit
def _conv_tile(
    src_ptr,
    w_ptr,
    b_ptr,
    out_ptr,
    ws_ptr,
    cnt_ptr,
    tile,
    split,
    s_row,
    o_row,
    row_ok,
    hh,
    ww,
    pid_n,
    H,
    W,
    cin,
    cin_off,
    cout,
    cout_off,
    stride_src_h,
    stride_src_w,
    stride_src_c,
    stride_w_o,
    stride_w_h,
    stride_w_w,
    stride_w_c,
    stride_b,
    stride_out_c,
    KS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SPLIT_K: tl.constexpr,
    SLOT: tl.constexpr,
    A_ALIGN: tl.constexpr,
):
    """One output tile of a KSxKS conv over scratch's channels [cin_off, cin_off + cin), as an implicit
    GEMM over (kh, kw, cin); with SPLIT_K > 1 this program's share of K, the last to finish adding
    the partial tiles and running the epilogue; A_ALIGN as for _conv_acc."""
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = offs_n < cout
    n_iters = KS * KS * tl.cdiv(cin, BLOCK_K)
    if SPLIT_K == 1:
        it_lo = 0
        it_hi = n_iters
    else:
        it_lo, it_hi = split_range(n_iters, split, SPLIT_K)
    acc = _conv_acc(
        src_ptr, w_ptr, s_row, row_ok, hh, ww, offs_n, col_ok, H, W, cin, cin_off, it_lo, it_hi,
        stride_src_h, stride_src_w, stride_src_c, stride_w_o, stride_w_h, stride_w_w, stride_w_c,
        KS, DOT_PRECISION, BLOCK_M, BLOCK_N, BLOCK_K, A_ALIGN,
    )  # fmt: skip
    finish_tile(
        acc, b_ptr, out_ptr, o_row, row_ok, offs_n, col_ok, cout_off, stride_b, stride_out_c,
        ws_ptr, cnt_ptr, tile, split, SPLIT_K, SLOT, BLOCK_M, BLOCK_N,
    )  # fmt: skip


# M, H and W only enter masks and index arithmetic on the row axis (one binary across batch
# sizes); the *_div_unit values get their alignment from the constexpr units they are multiplied
# by, so a quotient that is also a multiple of 16 is not marked (blocks with the same units share
# binaries: fewer compiles on a cold start).  A value of 1 is still a constant.
@triton.jit(
    do_not_specialize=["M", "H", "W"],
    do_not_specialize_on_alignment=[
        "cin3_div_unit",
        "cin5_div_unit",
        "stride_scratch_n_div_unit",
        "stride_scratch_h_div_unit",
        "stride_scratch_w_div_unit",
        "stride_out_n_div_unit",
        "stride_out_h_div_unit",
        "stride_out_w_div_unit",
        "stride_w3_o_div_unit",
        "stride_w3_h_div_unit",
        "stride_w3_w_div_unit",
        "stride_w5_o_div_unit",
        "stride_w5_h_div_unit",
        "stride_w5_w_div_unit",
    ],
)
def _branch_convs_kernel(
    # Pointers: scratch (the reductions), both convs' weights and biases, the block output, and the
    # split-K fp32 workspace and int32 tile counters.
    scratch_ptr,
    w3_ptr,
    b3_ptr,
    w5_ptr,
    b5_ptr,
    out_ptr,
    ws_ptr,
    cnt_ptr,
    # Pixels (M = N*H*W) and the image's height and width.
    M,
    H,
    W,
    # Channel counts: the convs' inputs (divided by C_UNIT) and outputs; branch 1's width, where
    # branch 2's slice of out starts.
    cin3_div_unit,
    cout3,
    cin5_div_unit,
    cout5,
    ch1,
    # Strides in elements; those of N, H and W (activations) or O, H and W (weights) divided by
    # ROW_UNIT or W_UNIT.
    stride_scratch_n_div_unit,
    stride_scratch_h_div_unit,
    stride_scratch_w_div_unit,
    stride_scratch_c,
    stride_out_n_div_unit,
    stride_out_h_div_unit,
    stride_out_w_div_unit,
    stride_out_c,
    stride_w3_o_div_unit,
    stride_w3_h_div_unit,
    stride_w3_w_div_unit,
    stride_w3_c,
    stride_b3,
    stride_w5_o_div_unit,
    stride_w5_h_div_unit,
    stride_w5_w_div_unit,
    stride_w5_c,
    stride_b5,
    # Fixed by the launcher: branch 3's kernel size and tile, tf32/ieee, the stride and channel units.
    K5: tl.constexpr,
    BLOCK_N5: tl.constexpr,
    BLOCK_K5: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    ROW_UNIT: tl.constexpr,
    W_UNIT: tl.constexpr,
    C_UNIT: tl.constexpr,
    # The tile (autotuned).
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SPLIT_K: tl.constexpr,
    A_L1: tl.constexpr,
):
    """Launch 2: branch 2's 3x3 and branch 3's K5xK5 conv over scratch, one 1-D grid for both
    (per pixel tile, branch 2's column tiles first), bias + ReLU into their slices of out;
    SPLIT_K programs share a tile's K steps where SPLIT_K > 1."""
    # Multiplied back by the constexpr units, rows and the channel masks are known aligned
    # (see _common.row_unit).
    cin3, cin5 = cin3_div_unit * C_UNIT, cin5_div_unit * C_UNIT
    stride_scratch_n, stride_scratch_h, stride_scratch_w = (
        stride_scratch_n_div_unit * ROW_UNIT,
        stride_scratch_h_div_unit * ROW_UNIT,
        stride_scratch_w_div_unit * ROW_UNIT,
    )
    stride_out_n, stride_out_h, stride_out_w = (
        stride_out_n_div_unit * ROW_UNIT,
        stride_out_h_div_unit * ROW_UNIT,
        stride_out_w_div_unit * ROW_UNIT,
    )
    stride_w3_o, stride_w3_h, stride_w3_w = (
        stride_w3_o_div_unit * W_UNIT,
        stride_w3_h_div_unit * W_UNIT,
        stride_w3_w_div_unit * W_UNIT,
    )
    stride_w5_o, stride_w5_h, stride_w5_w = (
        stride_w5_o_div_unit * W_UNIT,
        stride_w5_h_div_unit * W_UNIT,
        stride_w5_w_div_unit * W_UNIT,
    )
    n_tiles3 = tl.cdiv(cout3, BLOCK_N)
    TILE_N5: tl.constexpr = BLOCK_N if BLOCK_N5 > BLOCK_N else BLOCK_N5
    n_cols = n_tiles3 + tl.cdiv(cout5, TILE_N5)
    # The SPLIT_K programs of one output tile are neighbours in the grid.
    tile = tl.program_id(0) // SPLIT_K
    split = tl.program_id(0) % SPLIT_K
    pid_n, row_ok, img, hh, ww = pixel_tile(tile, n_cols, M, H, W, BLOCK_M)
    s_row = row_offsets(img, hh, ww, stride_scratch_n, stride_scratch_h, stride_scratch_w)
    o_row = row_offsets(img, hh, ww, stride_out_n, stride_out_h, stride_out_w)
    SLOT: tl.constexpr = BLOCK_M * BLOCK_N
    A_ALIGN: tl.constexpr = l1_align(A_L1, ROW_UNIT, scratch_ptr.dtype.element_ty.primitive_bitwidth)

    if pid_n < n_tiles3:
        _conv_tile(
            scratch_ptr,
            w3_ptr,
            b3_ptr,
            out_ptr,
            ws_ptr,
            cnt_ptr,
            tile,
            split,
            s_row,
            o_row,
            row_ok,
            hh,
            ww,
            pid_n,
            H,
            W,
            cin3,
            0,
            cout3,
            ch1,
            stride_scratch_h,
            stride_scratch_w,
            stride_scratch_c,
            stride_w3_o,
            stride_w3_h,
            stride_w3_w,
            stride_w3_c,
            stride_b3,
            stride_out_c,
            3,
            DOT_PRECISION,
            BLOCK_M,
            BLOCK_N,
            BLOCK_K,
            SPLIT_K,
            SLOT,
            A_ALIGN,
        )
    else:
        _conv_tile(
            scratch_ptr,
            w5_ptr,
            b5_ptr,
            out_ptr,
            ws_ptr,
            cnt_ptr,
            tile,
            split,
            s_row,
            o_row,
            row_ok,
            hh,
            ww,
            pid_n - n_tiles3,
            H,
            W,
            cin5,
            cin3,
            cout5,
            ch1 + cout3,
            stride_scratch_h,
            stride_scratch_w,
            stride_scratch_c,
            stride_w5_o,
            stride_w5_h,
            stride_w5_w,
            stride_w5_c,
            stride_b5,
            stride_out_c,
            K5,
            DOT_PRECISION,
            BLOCK_M,
            TILE_N5,
            BLOCK_K5,
            SPLIT_K,
            SLOT,
            A_ALIGN,
        )


# Large tiles for large batches, smaller ones for mid-sized problems; batch 1 (49 to 784 pixels:
# SPLIT_K_MAX_PIXELS) runs only the two that split K four ways, which keep it spread over the SMs.
CONFIGS = [
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "SPLIT_K": 1}, num_warps=8, num_stages=3),
    # One column tile for a 3x3 branch up to 256 wide (3b, 4a-4c; two for 4d-5b): each gathered A
    # tile read by one program instead of two or three.
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 256, "BLOCK_K": 32, "SPLIT_K": 1}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64, "SPLIT_K": 1}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 32, "SPLIT_K": 1}, num_warps=8, num_stages=4),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32, "SPLIT_K": 1}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "SPLIT_K": 1}, num_warps=2, num_stages=3),
    # The others' 16-byte cp.async copies bypass L1, so each of a pixel's nine taps reads L2 (9 reads
    # of each scratch element per column tile); A_L1 copies A in 8-byte pieces, which L1 caches (the
    # taps that neighbouring pixels share then hit), on the two tiles that won most blocks on the H200.
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 32, "A_L1": 1}, num_warps=8, num_stages=4),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "A_L1": 1}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32, "SPLIT_K": 4}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "SPLIT_K": 4}, num_warps=2, num_stages=3),
]
# Split-K configs are tried only up to this many pixels (N*H*W; past it their workspace also
# grows with M for nothing), and there alone: on the H200 (bf16, 2026-12-04, batch 1) every
# unsplit config was 1.4-2.5x slower than the best split one on all nine blocks.
SPLIT_K_MAX_PIXELS = _common.SMALL_PROBLEM_PIXELS
# The interpreter runs programs one by one in numpy, paying per program and per op rather than per
# element: no tuning, one fixed tile, large enough to keep the test suite quick.
INTERPRETER_CONFIG = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "SPLIT_K": 1, "A_L1": 1}

# Every shape argument, so a tuned config is reused exactly for the shape it was tuned on.
AUTOTUNE_KEY = [
    "M",
    "H",
    "W",
    "cin3_div_unit",
    "cout3",
    "cin5_div_unit",
    "cout5",
    "K5",
    "DOT_PRECISION",
    "ROW_UNIT",
    "W_UNIT",
    "C_UNIT",
]


def _split_k(kwargs: dict) -> int:
    return kwargs.get("SPLIT_K", 1)


def _with_defaults(kwargs: dict) -> dict:
    """A config's kwargs with SPLIT_K and A_L1 (1 and 0 where absent: no split, 16-byte A copies)."""
    return {"SPLIT_K": 1, "A_L1": 0, **kwargs}


def _prune_split_k(configs, named_args, **_kwargs):
    """The autotuner's early prune: the split-K configs up to SPLIT_K_MAX_PIXELS, the others past
    it (each unless nothing else is left).  Triton calls it only when there are several configs."""
    split = named_args["M"] <= SPLIT_K_MAX_PIXELS
    return [c for c in configs if (_split_k(c.kwargs) > 1) == split] or configs


def _complete_config(config: triton.Config) -> triton.Config:
    """A copy of ``config`` (warps, stages, hooks and all) with _with_defaults' kwargs."""
    return _common.completed_config(config, _with_defaults)


def make_tuned_kernel(configs=CONFIGS, **autotune_kwargs):
    """The autotuned kernel (tests build one with their own configs and do_bench)."""
    return triton.autotune(
        configs=[_complete_config(c) for c in configs],
        key=AUTOTUNE_KEY,
        prune_configs_by={"early_config_prune": _prune_split_k},
        **autotune_kwargs,
    )(_branch_convs_kernel)


# Winners also go to triton's on-disk cache, so a new process neither re-benchmarks nor compiles
# the losing configs.
_tuned_kernel = None if _common.INTERPRET else make_tuned_kernel(cache_results=True, do_bench=_common.autotune_bench)


def split_k_counters(
    scratch: torch.Tensor, w3: torch.Tensor, w5: torch.Tensor, config: Optional[triton.Config] = None
) -> Optional[int]:
    """How many int32 tile counters launch 2 needs (zeroed before it runs) for this block, or None
    where no split-K config can run: the tile count of the split-K config with the most tiles
    (or of ``config``, when pinned), rounded up to a multiple of 16 (launch 1 zeroes them with
    vector stores)."""
    m = scratch.shape[0] * scratch.shape[2] * scratch.shape[3]
    return _counter_count(m, w3.shape[0], w5.shape[0], _split_candidates(m, config))


def _counter_count(m: int, cout3: int, cout5: int, candidates: list) -> Optional[int]:
    tiles = [_tile_count(m, cout3, cout5, kw) for kw in candidates]
    return -(-max(tiles) // 16) * 16 if tiles else None


def _split_candidates(m: int, config: Optional[triton.Config]) -> list:
    """The kwargs of the split-K configs that may run: the pinned ``config``, else those the
    autotuner may pick (its configs after its prune, which it skips for a single config), none
    under the interpreter (it runs its own tile)."""
    return [kw for kw in _common.candidate_kwargs(_tuned_kernel, config, _prune_split_k, m) if _split_k(kw) > 1]


def _tile_count(m: int, cout3: int, cout5: int, cfg: dict) -> int:
    """Output tiles of one launch (the grid without its SPLIT_K factor)."""
    tile_n5 = min(_common.next_pow2_clamped(cout5), cfg["BLOCK_N"])  # as TILE_N5 in the kernel
    return _common.cdiv(m, cfg["BLOCK_M"]) * (_common.cdiv(cout3, cfg["BLOCK_N"]) + _common.cdiv(cout5, tile_n5))


def _arguments(scratch, w3, b3, w5, b5, out, ch1, counters=None, config=None):
    """(positional args, launcher-fixed constexprs, grid(meta)) for _branch_convs_kernel.

    ``counters``: int32, zeroed, at least split_k_counters(...) long (launch 1 zeroes them in a
    block forward); None allocates them here where a split-K config may run."""
    _common.check_dtype(scratch.dtype)
    n, _, h, w = scratch.shape
    cout3, cin3 = w3.shape[0], w3.shape[1]
    cout5, cin5, k5 = w5.shape[0], w5.shape[1], w5.shape[-1]
    _common.check_branch_weights(w3, w5)
    if cin3 + cin5 != scratch.shape[1] or b3.numel() != cout3 or b5.numel() != cout5:
        raise ValueError(
            f"launch 2: w3 {tuple(w3.shape)} and w5 {tuple(w5.shape)} must read the {scratch.shape[1]} channels "
            f"of scratch {tuple(scratch.shape)} between them, with biases of {cout3} and {cout5} "
            f"(got {b3.numel()} and {b5.numel()})"
        )
    if (out.shape[0], *out.shape[2:]) != (n, h, w) or not 0 <= ch1 <= out.shape[1] - cout3 - cout5:
        raise ValueError(
            f"launch 2: out {tuple(out.shape)} must be {n} images of {h}x{w} holding channels "
            f"[{ch1}, {ch1 + cout3 + cout5}) (ch1 {ch1}, branch 2's {cout3}, branch 3's {cout5})"
        )
    m = n * h * w
    geometry.check_pixel_rows(m)
    block_n5 = _common.next_pow2_clamped(cout5)
    block_k5 = _common.next_pow2_clamped(cin5, hi=32)
    unit, w_unit = _common.row_unit(scratch, out), _common.row_unit(w3, w5)
    c_unit = _common.pow2_unit(cin3, cin5)
    ws, counters = _split_k_buffers(scratch, w3, w5, counters, config)
    args = (
        scratch,
        w3,
        b3,
        w5,
        b5,
        out,
        ws,
        counters,
        m,
        h,
        w,
        cin3 // c_unit,
        cout3,
        cin5 // c_unit,
        cout5,
        ch1,
        *_common.row_strides(scratch, unit),
        *_common.row_strides(out, unit),
        *_common.row_strides(w3, w_unit),
        b3.stride(0),
        *_common.row_strides(w5, w_unit),
        b5.stride(0),
    )
    meta = {
        "K5": k5,
        "BLOCK_N5": block_n5,
        "BLOCK_K5": block_k5,
        "ROW_UNIT": unit,
        "W_UNIT": w_unit,
        "C_UNIT": c_unit,
        "DOT_PRECISION": _common.dot_precision(scratch.dtype),
    }

    def grid(cfg):
        return (_tile_count(m, cout3, cout5, cfg) * _split_k(cfg),)

    return args, meta, grid


def _split_k_buffers(scratch, w3, w5, counters, config):
    """(fp32 workspace, int32 counters) for the split-K configs that may run; empty ones (never
    read) where none can."""
    m = scratch.shape[0] * scratch.shape[2] * scratch.shape[3]
    candidates = _split_candidates(m, config)
    n_counters = _counter_count(m, w3.shape[0], w5.shape[0], candidates)
    if n_counters is None:
        return (
            _common.no_buffer(scratch, torch.float32),
            counters if counters is not None else _common.no_buffer(scratch, torch.int32),
        )
    if counters is None:
        counters = torch.zeros(n_counters, dtype=torch.int32, device=scratch.device)
    elif counters.numel() < n_counters or counters.dtype != torch.int32:
        raise ValueError(f"launch 2 needs {n_counters} int32 split-K counters, got {counters.numel()} {counters.dtype}")
    slots = max(
        _tile_count(m, w3.shape[0], w5.shape[0], kw) * _split_k(kw) * kw["BLOCK_M"] * kw["BLOCK_N"] for kw in candidates
    )
    return torch.empty(slots, dtype=torch.float32, device=scratch.device), counters


def launch_branch_convs(
    scratch: torch.Tensor,
    w3: torch.Tensor,
    b3: torch.Tensor,
    w5: torch.Tensor,
    b5: torch.Tensor,
    out: torch.Tensor,
    ch1: int,
    config: Optional[triton.Config] = None,
    counters: Optional[torch.Tensor] = None,
) -> None:
    """Launch 2: fills out[:, ch1:ch1+ch3] and out[:, ch1+ch3:ch1+ch3+ch5] (post-ReLU) in one launch.

    scratch (N, ch3red + ch5red, H, W); w3 (ch3, ch3red, 3, 3); w5 (ch5, ch5red, k, k), k odd;
    out (N, C_total, H, W).  Any strides (channels_last activations and weights are the fast case).
    ``config`` (one of CONFIGS, or any triton.Config with BLOCK_M/N/K and optionally SPLIT_K and
    A_L1) skips autotuning.  ``counters``: the split-K tile counters, already zero (block_forward has
    launch 1 zero them); by default they are allocated zeroed here when a split-K config may run.
    """
    if scratch.numel() == 0:  # nothing to compute, and CUDA rejects an empty grid
        return
    if config is not None:
        config = _complete_config(config)
    args, meta, grid = _arguments(scratch, w3, b3, w5, b5, out, ch1, counters, config)
    _common.launch_configured(
        _branch_convs_kernel, _tuned_kernel, grid, args, meta, config, INTERPRETER_CONFIG, config_kwargs=_with_defaults
    )
