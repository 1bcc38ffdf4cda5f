"""Launch 1 of the Inception block on Hopper's machinery (the "hopper" backend): the three 1x1
convs that read the block input as one GEMM with tensor-memory-accelerator (TMA) loads, a
software pipeline over K and a persistent grid, and the pool branch in the same kernel.  It
computes what reduce_pool.py computes without a pre-pool.

* Reduce role (the three 1x1 convs as ONE GEMM): x2d [M = N*H*W, Cin] @ w_red^T [Cin, NR] + b_red,
  ReLU, with NR = ch1 + ch3red + ch5red.  A operand: a 2-D TMA descriptor over x viewed as
  [M, Cin] (box BLOCK_M x BLOCK_K at (m0, k0)); B operand: a 2-D descriptor over w_red [NR, Cin]
  (box BLOCK_N x BLOCK_K at (n0, k0)).  TMA fills the boxes' parts past M, Cin and NR with zeros:
  the K tail of the last step and the ragged row and column tiles need no masks in the K loop,
  which Triton pipelines num_stages deep (TMA loads into shared memory, wgmma from there).
  Epilogue (reduce_pool.py's ``_reduce_epilogue``, shared with the plain launch 1): bias + ReLU
  (NaN propagates as in PyTorch), masked pointer stores: columns [0, ch1) are branch 1 and go into
  out[..., 0:ch1], columns [ch1, NR) into scratch[..., 0:ch3red+ch5red].
* Pool role: reduce_pool.py's ``_pool_tile`` unchanged (the 3x3/s1/p1 max pool taken while its
  A tile is gathered by nine shifted pointer loads, -inf outside the image, pipelined by cp.async
  POOL_STAGES deep, then @ w_pool^T + b_pool, ReLU, into out[..., C_total - pool:]), no K split.
  Nine TMA boxes per K step would move the same L2-resident bytes as the shifted loads do, and
  TMA's zero fill is not the pool's -inf padding (the taps outside the image would need a mask
  after the load anyway), so the gather stays (not measured against TMA boxes).
* Persistent grid: min(#SMs * PROGRAMS_PER_SM, #tiles) programs stride over the tiles.  The
  tiles are ordered as reduce_pool.py orders its programs: per BLOCK_M-row tile, its
  cdiv(NR, BLOCK_N) reduce column tiles, then its BLOCK_M // BLOCK_M_POOL pool parts (each the
  whole pool width).  Programs running at the same time thus work on neighbouring pixel rows, so
  x is expected to be read from HBM about once for both roles, the second role finding its rows in
  L2 (an expectation from the order, not a measured figure; at batch 256 x is larger than L2: all
  reduce tiles first, then all pool tiles, would read it twice).
* Launch 2's split-K counters: zeroed on the way when ``counters`` is passed (the "hopper" block
  passes them only where launch 2 falls back to branch_convs.py's split-K kernel).

Layout assumptions (``tma_unsupported_reason``; the "hopper" block runs reduce_pool.py's launch 1
where it objects): x channels_last with its pixels evenly strided (stride_h == W * stride_w and
stride_n == H * stride_h, i.e. the [M, Cin] view exists; a channel slice of a wider tensor is
fine), 16-byte aligned base and pixel stride; w_red [NR, Cin] with a contiguous Cin axis and
16-byte aligned base and row stride.  No pre-pool fold (reduce_pool.py's PRE_K > 1): the pooled
input cannot be a TMA box (each element is a max over a window), so a block with a folded pre-pool
keeps reduce_pool.py's launch 1.

Dtypes: fp16/bf16 operands with fp32 accumulation; fp32 uses TF32 only when
torch.backends.cudnn.allow_tf32 is on (_common.dot_precision), else exact fp32.  Output offsets are
64-bit; row strides and channel counts travel divided by a power-of-two unit (_common.row_unit,
pow2_unit) so that the stores and the pool role's loads are known to be aligned.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from ... import geometry
from . import _common
from ._common import pixel_rows, row_offsets
from .reduce_pool import _pool_tile, _reduce_epilogue

__all__ = [
    "launch_reduce_pool_tma",
    "tma_unsupported_reason",
    "CONFIGS",
    "INTERPRETER_CONFIG",
    "INTERPRETER_PROGRAMS",
]


@triton.jit
def _tma_reduce_tile(
    x_desc,
    w_desc,
    b_ptr,
    out_ptr,
    scratch_ptr,
    m0,
    n0,
    M,
    H,
    W,
    cin,
    n_red,
    ch1,
    stride_b,
    stride_out_n,
    stride_out_h,
    stride_out_w,
    stride_out_c,
    stride_scratch_n,
    stride_scratch_h,
    stride_scratch_w,
    stride_scratch_c,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """The reduce role on rows [m0, m0 + BLOCK_M) and columns [n0, n0 + BLOCK_N) of x2d @ w_red^T:
    the K loop of TMA boxes and dots, then bias + ReLU, branch 1's columns into out, the others
    into scratch."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(cin, BLOCK_K)):
        a = x_desc.load([m0, k * BLOCK_K])
        b = w_desc.load([n0, k * BLOCK_K])
        acc = tl.dot(a, tl.trans(b), acc, input_precision=DOT_PRECISION)

    row_ok, img, hh, ww = pixel_rows(m0, M, H, W, BLOCK_M)
    o_row = row_offsets(img, hh, ww, stride_out_n, stride_out_h, stride_out_w)
    s_row = row_offsets(img, hh, ww, stride_scratch_n, stride_scratch_h, stride_scratch_w)
    offs_n = n0 + tl.arange(0, BLOCK_N)
    col_ok = offs_n < n_red
    _reduce_epilogue(
        acc, b_ptr, out_ptr, scratch_ptr, o_row, s_row, row_ok, offs_n, col_ok, ch1,
        stride_b, stride_out_c, stride_scratch_c,
    )  # fmt: skip


# M, H, W only enter the row index arithmetic and masks (one binary across batch sizes); the
# *_div_unit values are multiplied back by constexpr units (see reduce_pool.py).
@triton.jit(
    do_not_specialize=["M", "H", "W", "n_pool_tiles"],
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
def _reduce_pool_tma_kernel(
    # TMA descriptors: x as [M, Cin], w_red [NR, Cin].
    x_desc,
    w_red_desc,
    # Pointers: x (the pool role's gathers), the reduce biases, the pool weights and biases, the two
    # outputs, launch 2's split-K counters.
    x_ptr,
    b_red_ptr,
    w_pool_ptr,
    b_pool_ptr,
    out_ptr,
    scratch_ptr,
    counters_ptr,
    # Pixels (M = N*H*W) and the image's height and width.
    M,
    H,
    W,
    # Channel counts, divided by C_UNIT: Cin; NR; branch 1's width; the pool width; its first channel.
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
    # Fixed by the launcher: tf32/ieee, the pool tile's width, the stride and channel units.
    DOT_PRECISION: tl.constexpr,
    BLOCK_N_POOL: tl.constexpr,
    ROW_UNIT: tl.constexpr,
    C_UNIT: tl.constexpr,
    # The tile (autotuned): reduce role, then pool role.
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_M_POOL: tl.constexpr,
    BLOCK_K_POOL: tl.constexpr,
    POOL_STAGES: tl.constexpr,
    # Programs per SM in the persistent grid (read by the launcher's grid only; a parameter because
    # every config kwarg is passed to the kernel, so configs differing only in it compile to
    # identical code).
    PROGRAMS_PER_SM: tl.constexpr,
):
    """Launch 1 as a persistent kernel: each program strides over the tiles (per BLOCK_M-row tile:
    its reduce column tiles, then its pool parts), bias + ReLU into out and scratch; it also zeroes
    launch 2's split-K counters on the way."""
    stride_x_n = stride_x_n_div_unit * ROW_UNIT
    stride_x_h = stride_x_h_div_unit * ROW_UNIT
    stride_x_w = stride_x_w_div_unit * ROW_UNIT
    cin, n_red, ch1 = cin_div_unit * C_UNIT, n_red_div_unit * C_UNIT, ch1_div_unit * C_UNIT
    n_pool, pool_col0 = n_pool_div_unit * C_UNIT, pool_col0_div_unit * C_UNIT
    stride_out_n = stride_out_n_div_unit * ROW_UNIT
    stride_out_h = stride_out_h_div_unit * ROW_UNIT
    stride_out_w = stride_out_w_div_unit * ROW_UNIT
    stride_scratch_n = stride_scratch_n_div_unit * ROW_UNIT
    stride_scratch_h = stride_scratch_h_div_unit * ROW_UNIT
    stride_scratch_w = stride_scratch_w_div_unit * ROW_UNIT

    pid = tl.program_id(0)
    programs = tl.num_programs(0)
    # Launch 2's split-K tile counters start at zero (it runs next on the stream); n_counters is 0
    # where launch 2 splits nothing.
    offs_c = tl.arange(0, 1024)
    for c0 in range(pid * 1024, n_counters, programs * 1024):
        tl.store(counters_ptr + c0 + offs_c, 0, mask=c0 + offs_c < n_counters)

    n_red_tiles = tl.cdiv(n_red, BLOCK_N)
    POOL_SPLIT: tl.constexpr = BLOCK_M // BLOCK_M_POOL
    n_cols = n_red_tiles + n_pool_tiles * POOL_SPLIT
    total = tl.cdiv(M, BLOCK_M) * n_cols
    for t in tl.range(pid, total, programs):
        pid_m = t // n_cols
        col = t % n_cols
        if col < n_red_tiles:
            _tma_reduce_tile(
                x_desc,
                w_red_desc,
                b_red_ptr,
                out_ptr,
                scratch_ptr,
                pid_m * BLOCK_M,
                col * BLOCK_N,
                M,
                H,
                W,
                cin,
                n_red,
                ch1,
                stride_b_red,
                stride_out_n,
                stride_out_h,
                stride_out_w,
                stride_out_c,
                stride_scratch_n,
                stride_scratch_h,
                stride_scratch_w,
                stride_scratch_c,
                DOT_PRECISION,
                BLOCK_M,
                BLOCK_N,
                BLOCK_K,
            )
        else:
            part = col - n_red_tiles
            row0 = pid_m * BLOCK_M + (part // n_pool_tiles) * BLOCK_M_POOL
            p_ok, p_img, p_hh, p_ww = pixel_rows(row0, M, H, W, BLOCK_M_POOL)
            p_x_row = row_offsets(p_img, p_hh, p_ww, stride_x_n, stride_x_h, stride_x_w)
            p_o_row = row_offsets(p_img, p_hh, p_ww, stride_out_n, stride_out_h, stride_out_w)
            # No pre-pool (PRE_K 1: HI, WI are H, W) and no K split (the split-K buffers are
            # never touched: counters_ptr stands in for them).
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
                H,
                W,
                1,
                1,
                0,
                1,
                counters_ptr,
                counters_ptr,
                0,
                0,
                1,
                0,
            )


def _set_block_shapes(nargs: dict) -> None:
    """Gives the descriptors the boxes of the tile about to run (the autotuner's pre_hook, and the
    launcher's for a pinned or remembered config)."""
    nargs["x_desc"].block_shape = [nargs["BLOCK_M"], nargs["BLOCK_K"]]
    nargs["w_red_desc"].block_shape = [nargs["BLOCK_N"], nargs["BLOCK_K"]]


def _with_pool_tile(kwargs: dict) -> dict:
    """A config's kwargs with the pool role's tile filled in where absent (all the rows, 16
    channels a step, synchronous loads) and one program per SM.  Raises unless the pool rows
    divide BLOCK_M."""
    kwargs = {"BLOCK_M_POOL": kwargs["BLOCK_M"], "BLOCK_K_POOL": 16, "POOL_STAGES": 1, "PROGRAMS_PER_SM": 1, **kwargs}
    if kwargs["BLOCK_M_POOL"] > kwargs["BLOCK_M"] or kwargs["BLOCK_M"] % kwargs["BLOCK_M_POOL"]:
        raise ValueError(f"BLOCK_M_POOL {kwargs['BLOCK_M_POOL']} must divide BLOCK_M {kwargs['BLOCK_M']}")
    return kwargs


def _config(kwargs: dict, warps: int, stages: int) -> triton.Config:
    return triton.Config(_with_pool_tile(kwargs), num_warps=warps, num_stages=stages, pre_hook=_set_block_shapes)


# Reduce tiles of 128 or 64 rows by 64 or 128 columns, 64 channels a K step (128 bytes of a bf16
# row: one swizzled TMA box row), 3 or 4 stages (32 KB of shared memory per stage at 128x128x64
# bf16).  The pool role's tile is reduce_pool.py's: 64 rows by the whole pool width with 16
# channels a step pipelined by cp.async, or with synchronous loads through L1 (POOL_STAGES 1: the
# first config's 128 rows, and a two-per-SM 64-row one; cp.async's 16-byte copies bypass L1, so
# with them every one of the nine taps reads L2).
# NR is 176 (3a) to 624 (5b): 64-column tiles waste less of the last column tile, 128-column ones
# read each A box fewer times.  One program per SM leaves 4 or 8 warps to hide the pool role's
# gather latency; the PROGRAMS_PER_SM 2 configs (4 warps, <= 72 KB of shared memory and <= 255
# registers a thread: two fit an SM) run two.  PROGRAMS_PER_SM is a kernel parameter only because
# a config kwarg must be one (the kernel never reads it): a config that repeats another's tile,
# warps and stages with only PROGRAMS_PER_SM changed compiles to identical code (two binaries of
# the same code) and differs only in the launcher's grid.
CONFIGS = [
    _config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "BLOCK_M_POOL": 128, "POOL_STAGES": 1}, 8, 3),
    _config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "BLOCK_M_POOL": 64, "POOL_STAGES": 2}, 8, 4),
    _config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64, "BLOCK_M_POOL": 64, "POOL_STAGES": 2}, 4, 4),
    _config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64, "BLOCK_M_POOL": 64, "POOL_STAGES": 2}, 4, 3),
    _config({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64, "BLOCK_M_POOL": 64, "POOL_STAGES": 2}, 4, 4),
    _config(
        {"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64, "BLOCK_M_POOL": 64, "POOL_STAGES": 2, "PROGRAMS_PER_SM": 2}, 4, 3
    ),
    _config(
        {"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64, "BLOCK_M_POOL": 64, "POOL_STAGES": 1, "PROGRAMS_PER_SM": 2}, 4, 3
    ),
    _config(
        {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "BLOCK_M_POOL": 64, "POOL_STAGES": 2, "PROGRAMS_PER_SM": 2}, 4, 3
    ),
]
# Offered up to SMALL_PROBLEM_PIXELS pixels only (batch 1: 49 to 784 pixels, a dozen row tiles or
# fewer): 32-row pool parts double the pool programs, and 32 or 64 channels a pool step shorten
# their serial K loop, the longest chain of a small launch 1 (counted, not timed: Cin 192..832 is
# 12..52 pool K steps in series at 16 channels a step, 3..26 at 32 or 64, as for reduce_pool.py's
# SMALL_PROBLEM_CONFIGS; a 32-row pool dot runs on mma.sync, not wgmma).
SMALL_PROBLEM_CONFIGS = [
    _config(
        {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "BLOCK_M_POOL": 32, "BLOCK_K_POOL": k, "POOL_STAGES": 2}, 4, 3
    )
    for k in (32, 64)
]
CONFIGS += SMALL_PROBLEM_CONFIGS
# The interpreter runs programs one by one: one fixed tile whose K step (32) leaves several steps
# and a K tail on the tests' small channel counts, and few programs (each striding over several
# tiles, as on the GPU).
INTERPRETER_CONFIG = {
    "BLOCK_M": 64,
    "BLOCK_N": 64,
    "BLOCK_K": 32,
    "BLOCK_M_POOL": 64,
    "BLOCK_K_POOL": 32,
    "POOL_STAGES": 1,
    "PROGRAMS_PER_SM": 1,
}
INTERPRETER_PROGRAMS = 3

AUTOTUNE_KEY = [
    "M",
    "H",
    "W",
    "cin_div_unit",
    "n_red_div_unit",
    "ch1_div_unit",
    "n_pool_div_unit",
    "DOT_PRECISION",
    "ROW_UNIT",
    "C_UNIT",
]


# Shared memory on sm_90: one block may use up to 227 KB (BLOCK_SHARED_BYTES); an SM has 228 KB
# (SM_SHARED_BYTES), of which each resident block takes 1 KB more than it asks for
# (SHARED_RESERVED_PER_BLOCK: reserved for system use, cudaDevAttrReservedSharedMemoryPerBlock).
BLOCK_SHARED_BYTES = 232448
SM_SHARED_BYTES = 233472
SHARED_RESERVED_PER_BLOCK = 1024


def programs_fit(programs_per_sm: int, shared_bytes: int) -> bool:
    """Whether ``programs_per_sm`` blocks of ``shared_bytes`` of shared memory each fit one sm_90 SM."""
    return (
        shared_bytes <= BLOCK_SHARED_BYTES
        and programs_per_sm * (shared_bytes + SHARED_RESERVED_PER_BLOCK) <= SM_SHARED_BYTES
    )


def shared_bytes_estimate(kwargs: dict, num_stages: int, element_size: int) -> int:
    """The reduce role's pipeline buffers (num_stages A and B boxes) of a config, in bytes: what
    its shared memory comes to on sm_90 for every config with 64-row pool parts (`python -m
    benchmarks.kernel_stats --block tma1`: the pool role's cp.async buffers reuse the same space;
    the 32-row, 64-channel pool part takes 8 KB more on some blocks)."""
    return (kwargs["BLOCK_M"] + kwargs["BLOCK_N"]) * kwargs["BLOCK_K"] * element_size * num_stages


def fits(config: triton.Config, element_size: int) -> bool:
    """Whether PROGRAMS_PER_SM programs of ``config`` fit one SM's shared memory for operands of
    ``element_size`` bytes (fp32 doubles every stage: the deep 128x128 and the two-per-SM 128-row
    configs do not fit)."""
    kwargs = _with_pool_tile(config.kwargs)
    return programs_fit(kwargs["PROGRAMS_PER_SM"], shared_bytes_estimate(kwargs, config.num_stages, element_size))


_prune_small_only = _common.small_only_prune(SMALL_PROBLEM_CONFIGS, _with_pool_tile)


def _prune(configs, named_args, **_kwargs):
    """The autotuner's early prune: the configs that do not fit an SM for x's dtype go, and
    SMALL_PROBLEM_CONFIGS past SMALL_PROBLEM_PIXELS (unless nothing is left)."""
    size = named_args["x_ptr"].element_size()
    kept = [c for c in configs if fits(c, size)] or configs
    return _prune_small_only(kept, named_args)


def make_tuned_kernel(configs=CONFIGS, **autotune_kwargs):
    """The autotuned kernel (tests build one with their own configs and do_bench); every config
    gets the pool tile's defaults and the pre_hook that sets the descriptors' boxes."""
    return triton.autotune(
        configs=_common.hooked_configs(configs, _with_pool_tile, _set_block_shapes),
        key=AUTOTUNE_KEY,
        prune_configs_by={"early_config_prune": _prune},
        **autotune_kwargs,
    )(_reduce_pool_tma_kernel)


# No cache_results: Triton's on-disk record of the winners skips configs with a pre_hook; the
# launcher keeps the winner per shape in the choice store instead (launch_configured's store_as).
_tuned_kernel = None if _common.INTERPRET else make_tuned_kernel(do_bench=_common.autotune_bench)


def _programs(device: torch.device) -> int:
    """How many programs the persistent grid has at most per PROGRAMS_PER_SM: one per SM."""
    if device.type != "cuda":
        return INTERPRETER_PROGRAMS
    return _common.sm_count(device)


def _pixel_stride(x: torch.Tensor) -> int:
    """The stride between consecutive pixels of x's [N*H*W, Cin] view: that of the innermost of W,
    H, N longer than 1; for a single pixel, the smallest 16-byte multiple that holds its channels."""
    n, cin, h, w = x.shape
    s_n, _, s_h, s_w = x.stride()
    for size, stride in ((w, s_w), (h, s_h), (n, s_n)):
        if size > 1:
            return stride
    unit = 16 // x.element_size()
    return -(-max(cin, 1) // unit) * unit


def tma_unsupported_reason(x: torch.Tensor, w_red: torch.Tensor) -> Optional[str]:
    """None where TMA descriptors can describe launch 1's GEMM operands (x as [N*H*W, Cin], w_red
    [NR, Cin]), else why not: contiguous channel axes, evenly strided pixels, 16-byte aligned bases
    and strides."""
    n, cin, h, w = x.shape
    s_n, s_c, s_h, s_w = x.stride()
    if s_c != 1 and cin > 1:
        return f"x is not channels_last (strides {tuple(x.stride())})"
    pixel = _pixel_stride(x)
    if (h > 1 and s_h != w * pixel) or (n > 1 and s_n != h * w * pixel):
        return f"x's pixels are not evenly strided: no [N*H*W, Cin] view (strides {tuple(x.stride())})"
    if x.data_ptr() % 16:
        return f"x's base address is not 16-byte aligned (data_ptr() % 16 = {x.data_ptr() % 16})"
    if (pixel * x.element_size()) % 16:
        return (
            f"x's pixel stride ({pixel} {x.dtype} elements, {pixel * x.element_size()} bytes) is not a "
            f"multiple of 16 bytes (strides {tuple(x.stride())})"
        )
    if w_red.dim() != 2 or (w_red.stride(1) != 1 and w_red.shape[1] > 1):
        return f"w_red is not [NR, Cin] with a contiguous Cin axis (strides {tuple(w_red.stride())})"
    if w_red.data_ptr() % 16:
        return f"w_red's base address is not 16-byte aligned (data_ptr() % 16 = {w_red.data_ptr() % 16})"
    row = w_red.stride(0)
    if (row * w_red.element_size()) % 16:
        return (
            f"w_red's row stride ({row} {w_red.dtype} elements, {row * w_red.element_size()} bytes) is not "
            "a multiple of 16 bytes"
        )
    return None


def _descriptors(x: torch.Tensor, w_red: torch.Tensor, meta: dict) -> tuple:
    """TMA descriptors of x as [N*H*W, Cin] and of w_red [NR, Cin], with the boxes of ``meta``'s tile."""
    n, cin, h, w = x.shape
    x_desc = TensorDescriptor(x, [n * h * w, cin], [_pixel_stride(x), 1], [meta["BLOCK_M"], meta["BLOCK_K"]])
    w_desc = TensorDescriptor(w_red, list(w_red.shape), [w_red.stride(0), 1], [meta["BLOCK_N"], meta["BLOCK_K"]])
    return x_desc, w_desc


def _arguments(x, w_red, b_red, w_pool, b_pool, out, scratch, counters=None):
    """(positional args, launcher-fixed constexprs, grid(meta)) for _reduce_pool_tma_kernel; the
    descriptors' boxes are those of INTERPRETER_CONFIG until a tile is chosen (_set_block_shapes)."""
    _common.check_dtype(x.dtype)
    n, cin, h, w = x.shape
    if tuple(out.shape[2:]) != (h, w) or tuple(scratch.shape[2:]) != (h, w):
        raise ValueError(f"launch 1: out {tuple(out.shape)} and scratch {tuple(scratch.shape)} must be {h}x{w}")
    why = tma_unsupported_reason(x, w_red)
    if why is not None:
        raise ValueError(f"launch 1 with TMA cannot describe these tensors: {why}")
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
    descs = _descriptors(x, w_red, INTERPRETER_CONFIG)
    args = (
        *descs,
        x,
        b_red,
        w_pool,
        b_pool,
        out,
        scratch,
        counters,
        m,
        h,
        w,
        cin // c_unit,
        nr // c_unit,
        ch1 // c_unit,
        np_ // c_unit,
        pool_col0 // c_unit,
        n_pool_tiles,
        counters.numel(),
        *_common.row_strides(x, unit),
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
    }
    programs = _programs(x.device)

    def grid(cfg):
        cols = _common.cdiv(nr, cfg["BLOCK_N"]) + n_pool_tiles * (cfg["BLOCK_M"] // cfg["BLOCK_M_POOL"])
        return (min(programs * cfg["PROGRAMS_PER_SM"], _common.cdiv(m, cfg["BLOCK_M"]) * cols),)

    return args, meta, grid


def launch_reduce_pool_tma(
    x: torch.Tensor,
    w_red: torch.Tensor,
    b_red: torch.Tensor,
    w_pool: torch.Tensor,
    b_pool: torch.Tensor,
    out: torch.Tensor,
    scratch: torch.Tensor,
    config: Optional[triton.Config] = None,
    counters: Optional[torch.Tensor] = None,
) -> None:
    """Launch 1 with TMA: fills out[:, :ch1], out[:, -pool:] and scratch (all post-ReLU), in one launch.

    x (N, Cin, H, W) channels_last; w_red (ch1 + ch3red + ch5red, Cin); w_pool (pool, Cin);
    out (N, C_total, H, W); scratch (N, ch3red + ch5red, H, W).  Tensors TMA cannot describe
    (tma_unsupported_reason) raise a ValueError naming the problem.  ``config`` (one of CONFIGS,
    or any triton.Config with BLOCK_M/N/K) skips autotuning.  ``counters`` (int32, a multiple of
    16 long): zeroed on the way, for launch 2's split-K (see branch_convs.py).
    """
    if x.numel() == 0:  # nothing to compute, and CUDA rejects an empty grid
        return
    if counters is not None and (counters.dtype != torch.int32 or counters.numel() % 16):
        raise ValueError(
            f"the split-K counters must be int32 and a multiple of 16 long, got {counters.numel()} "
            f"{counters.dtype} (branch_convs.split_k_counters gives the count)"
        )
    if config is not None:
        _with_pool_tile(config.kwargs)  # a BLOCK_M_POOL that does not divide BLOCK_M is refused here
    args, meta, grid = _arguments(x, w_red, b_red, w_pool, b_pool, out, scratch, counters)
    descs = {"x_desc": args[0], "w_red_desc": args[1]}

    def prepare(chosen: dict) -> None:
        _set_block_shapes({**chosen, **descs})

    _common.launch_configured(
        _reduce_pool_tma_kernel,
        _tuned_kernel,
        grid,
        args,
        meta,
        config,
        INTERPRETER_CONFIG,
        config_kwargs=_with_pool_tile,
        prepare=prepare,
        store_as="reduce_pool_tma",
    )
