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
  wider than BLOCK_N: a 128-wide branch-3 tile on a 4-warp config spilled, ptxas sm_90 bf16).
  The (kh, kw, cin-block) loop is one flat loop so the software pipeline sees all of K.

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

from . import _common
from ._common import pixel_tile, row_offsets

__all__ = ["launch_branch_convs", "CONFIGS", "INTERPRETER_CONFIG"]


@triton.jit
def _conv_tile(src_ptr, w_ptr, b_ptr, out_ptr, s_row, o_row, row_ok, hh, ww, pid_n,
               H, W, CIN, CIN_OFF, COUT, COUT_OFF, ss_h, ss_w, ss_c, sw_o, sw_h, sw_w, sw_c, sb, so_c,
               KS: tl.constexpr, DOT_PRECISION: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = offs_n < COUT
    offs_k = tl.arange(0, BLOCK_K)
    n_cblocks = tl.cdiv(CIN, BLOCK_K)
    w_cols = w_ptr + offs_n[None, :] * sw_o
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for it in range(0, KS * KS * n_cblocks):
        tap = it // n_cblocks
        kk = (it - tap * n_cblocks) * BLOCK_K + offs_k
        kh = tap // KS
        kw = tap - kh * KS
        dh = kh - KS // 2
        dw = kw - KS // 2
        h2 = hh + dh
        w2 = ww + dw
        k_ok = kk < CIN
        tap_ok = row_ok & (h2 >= 0) & (h2 < H) & (w2 >= 0) & (w2 < W)
        tap_row = s_row + dh * ss_h + dw * ss_w
        a = tl.load(src_ptr + tap_row[:, None] + (CIN_OFF + kk)[None, :] * ss_c,
                    mask=tap_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(w_cols + kh * sw_h + kw * sw_w + kk[:, None] * sw_c,
                    mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)

    bias = tl.load(b_ptr + offs_n * sb, mask=col_ok, other=0.0).to(tl.float32)
    y = tl.maximum(acc + bias[None, :], 0.0, propagate_nan=tl.PropagateNan.ALL).to(out_ptr.dtype.element_ty)
    tl.store(out_ptr + o_row[:, None] + (COUT_OFF + offs_n)[None, :] * so_c, y,
             mask=row_ok[:, None] & col_ok[None, :])


@triton.jit(do_not_specialize=["M", "H", "W"])
def _branch_convs_kernel(
    scratch_ptr, w3_ptr, b3_ptr, w5_ptr, b5_ptr, out_ptr,
    M, H, W, CIN3, COUT3, CIN5, COUT5, CH1,
    ss_n, ss_h, ss_w, ss_c,
    so_n, so_h, so_w, so_c,
    sw3_o, sw3_h, sw3_w, sw3_c, sb3,
    sw5_o, sw5_h, sw5_w, sw5_c, sb5,
    K5: tl.constexpr, BLOCK_N5: tl.constexpr, BLOCK_K5: tl.constexpr, DOT_PRECISION: tl.constexpr,
    ROW_UNIT: tl.constexpr, W_UNIT: tl.constexpr, C_UNIT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # Strides other than the channel one arrive divided by ROW_UNIT (activations) and W_UNIT
    # (weights), the input channel counts by C_UNIT (see _common.row_unit), so rows and the
    # channel masks are known aligned: 4b's branch 3 reads 24 channels, 16 bytes but not 16
    # elements, and without this its loads were not cp.async.
    CIN3, CIN5 = CIN3 * C_UNIT, CIN5 * C_UNIT
    ss_n, ss_h, ss_w = ss_n * ROW_UNIT, ss_h * ROW_UNIT, ss_w * ROW_UNIT
    so_n, so_h, so_w = so_n * ROW_UNIT, so_h * ROW_UNIT, so_w * ROW_UNIT
    sw3_o, sw3_h, sw3_w = sw3_o * W_UNIT, sw3_h * W_UNIT, sw3_w * W_UNIT
    sw5_o, sw5_h, sw5_w = sw5_o * W_UNIT, sw5_h * W_UNIT, sw5_w * W_UNIT
    n_tiles3 = tl.cdiv(COUT3, BLOCK_N)
    TILE_N5: tl.constexpr = BLOCK_N if BLOCK_N5 > BLOCK_N else BLOCK_N5
    n_cols = n_tiles3 + tl.cdiv(COUT5, TILE_N5)
    pid_n, row_ok, img, hh, ww = pixel_tile(tl.program_id(0), n_cols, M, H, W, BLOCK_M)
    s_row = row_offsets(img, hh, ww, ss_n, ss_h, ss_w)
    o_row = row_offsets(img, hh, ww, so_n, so_h, so_w)

    if pid_n < n_tiles3:
        _conv_tile(scratch_ptr, w3_ptr, b3_ptr, out_ptr, s_row, o_row, row_ok, hh, ww, pid_n,
                   H, W, CIN3, 0, COUT3, CH1, ss_h, ss_w, ss_c, sw3_o, sw3_h, sw3_w, sw3_c, sb3, so_c,
                   3, DOT_PRECISION, BLOCK_M, BLOCK_N, BLOCK_K)
    else:
        _conv_tile(scratch_ptr, w5_ptr, b5_ptr, out_ptr, s_row, o_row, row_ok, hh, ww, pid_n - n_tiles3,
                   H, W, CIN5, CIN3, COUT5, CH1 + COUT3, ss_h, ss_w, ss_c, sw5_o, sw5_h, sw5_w, sw5_c, sb5, so_c,
                   K5, DOT_PRECISION, BLOCK_M, TILE_N5, BLOCK_K5)


# H100 bf16: ch3 is 128..384, ch3red 96..192 (K = 9*Cin = 864..1728), pixels 49 .. 200k.
# The last, smallest tile is for batch 1 (5b at 7x7 and 64x64 tiles: 8 programs; 32x32: 32).
CONFIGS = [
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 32}, num_warps=8, num_stages=4),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32}, num_warps=2, num_stages=3),
]
# The interpreter runs programs one by one in numpy, paying per program and per op rather than per
# element: no tuning, one fixed tile, large enough to keep the test suite quick.
INTERPRETER_CONFIG = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64}

# Every shape argument, so a tuned config is reused exactly for the shape it was tuned on.
AUTOTUNE_KEY = ["M", "H", "W", "CIN3", "COUT3", "CIN5", "COUT5", "K5", "DOT_PRECISION", "ROW_UNIT", "W_UNIT",
                "C_UNIT"]


def make_tuned_kernel(configs=CONFIGS, **autotune_kwargs):
    """The autotuned kernel (tests build one with their own configs and do_bench)."""
    return triton.autotune(configs=configs, key=AUTOTUNE_KEY, **autotune_kwargs)(_branch_convs_kernel)


# Winners also go to triton's on-disk cache, so a new process neither re-benchmarks nor compiles
# the losing configs.
_tuned_kernel = None if _common.INTERPRET else make_tuned_kernel(cache_results=True)


def _arguments(scratch, w3, b3, w5, b5, out, ch1):
    """(positional args, launcher-fixed constexprs, grid(meta)) for _branch_convs_kernel."""
    _common.check_dtype(scratch.dtype)
    n, _, h, w = scratch.shape
    cout3, cin3 = w3.shape[0], w3.shape[1]
    cout5, cin5, k5 = w5.shape[0], w5.shape[1], w5.shape[-1]
    if tuple(w3.shape[-2:]) != (3, 3):
        raise ValueError(f"branch 2 must be a 3x3 conv, got weight shape {tuple(w3.shape)}")
    if k5 % 2 == 0 or w5.shape[-2] != k5:
        raise ValueError(f"branch 3 must be a square conv of odd size, got weight shape {tuple(w5.shape)}")
    m = n * h * w
    if m + 1024 >= 2**31:  # + a tile: the last tile's row indices must fit too
        raise ValueError(f"the Triton kernels index pixels with 32 bits; N*H*W = {m} is too large")
    block_n5 = _common.next_pow2_clamped(cout5)
    block_k5 = _common.next_pow2_clamped(cin5, hi=32)
    unit, w_unit = _common.row_unit(scratch, out), _common.row_unit(w3, w5)
    c_unit = _common.pow2_unit(cin3, cin5)
    args = (
        scratch, w3, b3, w5, b5, out,
        m, h, w, cin3 // c_unit, cout3, cin5 // c_unit, cout5, ch1,
        *_common.row_strides(scratch, unit),
        *_common.row_strides(out, unit),
        *_common.row_strides(w3, w_unit), b3.stride(0),
        *_common.row_strides(w5, w_unit), b5.stride(0),
    )
    meta = {"K5": k5, "BLOCK_N5": block_n5, "BLOCK_K5": block_k5, "ROW_UNIT": unit, "W_UNIT": w_unit, "C_UNIT": c_unit,
            "DOT_PRECISION": _common.dot_precision(scratch.dtype)}

    def grid(cfg):
        tile_n5 = min(block_n5, cfg["BLOCK_N"])  # as TILE_N5 in the kernel
        n_cols = triton.cdiv(cout3, cfg["BLOCK_N"]) + triton.cdiv(cout5, tile_n5)
        return (triton.cdiv(m, cfg["BLOCK_M"]) * n_cols,)

    return args, meta, grid


def launch_branch_convs(scratch: torch.Tensor, w3: torch.Tensor, b3: torch.Tensor, w5: torch.Tensor,
                        b5: torch.Tensor, out: torch.Tensor, ch1: int,
                        config: Optional[triton.Config] = None) -> None:
    """Launch 2: fills out[:, ch1:ch1+ch3] and out[:, ch1+ch3:ch1+ch3+ch5] (post-ReLU) in one launch.

    scratch (N, ch3red + ch5red, H, W); w3 (ch3, ch3red, 3, 3); w5 (ch5, ch5red, k, k), k odd;
    out (N, C_total, H, W).  Any strides (channels_last activations and weights are the fast case).
    ``config`` (one of CONFIGS, or any triton.Config with BLOCK_M/N/K) skips autotuning.
    """
    if scratch.numel() == 0:  # nothing to compute, and CUDA rejects an empty grid
        return
    args, meta, grid = _arguments(scratch, w3, b3, w5, b5, out, ch1)
    _common.launch_configured(_branch_convs_kernel, _tuned_kernel, grid, args, meta, config, INTERPRETER_CONFIG)
