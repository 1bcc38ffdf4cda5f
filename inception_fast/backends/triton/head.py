"""GoogLeNet's head in eval mode: global average pool, dropout (the identity in eval) and the fully
connected layer,

    logits[n, j] = b[j] + sum_c W[j, c] * mean_{h,w} x[n, c, h, w],

for a channels_last x (N, C, H, W) (5b's output: 1024 x 7 x 7 at 224; any C, H, W; other strides
work too, slower), W (J, C) and b (J,) as nn.Linear holds them; logits (N, J) contiguous.

Two launches, x read once:

1. ``_channel_means_kernel``: one program per image and BLOCK_C channels sums the H*W pixels in
   [BLOCK_P, BLOCK_C] tiles (channels contiguous: vector loads) in fp32 and writes the means to an
   fp32 (N, C) buffer (1 MB at batch 256; it stays in L2 for launch 2).
2. ``_linear_kernel``: a tensor-core GEMM, means (N, C) x W^T (C, J), one program per
   [BLOCK_M images, BLOCK_N classes] tile, bias in the epilogue.

Why not one launch: x is 49x larger than the means, and the GEMM is tiny (N x 1024 x 1000), so the
head costs what reading x costs, and reading x fast takes many programs.  A single launch must
either give each program whole images and all classes, i.e. read all of W (2 MB) per program --
at batch 256 keeping W's re-reads below x's size leaves ~13 programs for 132 SMs -- or give each
program a tile of classes and re-read (and re-pool) x once per class tile, or split the channels
over programs and reduce N x J partial logits per split across programs, traffic comparable to x.
Two launches keep every read single: x once at full parallelism (N x C/BLOCK_C programs), the
means once per class tile from L2, W once per image tile.

Precision: the pool accumulates in fp32.  For fp16/bf16 the means are rounded to the input's dtype
for the tensor cores, as ATen's mean does before its GEMM; products accumulate in fp32.  fp32 uses
TF32 only when torch.backends.cuda.matmul.allow_tf32 is on (what nn.Linear follows), else exact
fp32.  The logits are stored in the input's dtype.  Offsets are 64-bit (an image stride times N can
pass 2^31).  Inference only: the op has no backward (the model's head runs ATen under autograd).
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from . import _common

__all__ = [
    "launch_avgpool_linear",
    "POOL_CONFIGS",
    "LINEAR_CONFIGS",
    "POOL_INTERPRETER_CONFIG",
    "LINEAR_INTERPRETER_CONFIG",
]


@triton.jit(do_not_specialize=["N", "H", "W"])
def _channel_means_kernel(
    # Pointers: input (N, C, H, W) in any strides, fp32 means (N, C) contiguous.
    x_ptr,
    means_ptr,
    # Sizes.
    N,
    C,
    H,
    W,
    # Strides of x in elements, in (N, C, H, W) order.
    stride_x_n,
    stride_x_c,
    stride_x_h,
    stride_x_w,
    # The tile (autotuned): pixels per load, channels per program.
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """means[n, c] = mean over the H*W pixels of x[n, c] for image n = program_id(0) and BLOCK_C
    channels, summed in fp32 [BLOCK_P, BLOCK_C] tiles."""
    img = tl.program_id(0).to(tl.int64)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = offs_c < C
    col = offs_c.to(tl.int64) * stride_x_c
    x_img = x_ptr + img * stride_x_n
    hw = H * W
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for p0 in range(0, hw, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        row = (offs_p // W).to(tl.int64) * stride_x_h + (offs_p % W).to(tl.int64) * stride_x_w
        v = tl.load(x_img + row[:, None] + col[None, :], mask=(offs_p < hw)[:, None] & c_ok[None, :], other=0.0)
        acc += v.to(tl.float32)
    means = tl.sum(acc, axis=0) / hw
    tl.store(means_ptr + img * C + offs_c, means, mask=c_ok)


@triton.jit(do_not_specialize=["N"])
def _linear_kernel(
    # Pointers: fp32 means (N, C) contiguous, weight (J, C) and bias (J,) in the input's dtype,
    # logits (N, J).
    means_ptr,
    w_ptr,
    b_ptr,
    out_ptr,
    # Sizes: images, channels (the GEMM's K), classes / J_UNIT.
    N,
    C,
    J_div_unit,
    # Strides in elements (the logits' row stride / J_UNIT).
    stride_w_j,
    stride_w_c,
    stride_b,
    stride_out_n_div_unit,
    stride_out_j,
    # Fixed by the launcher: tl.dot's input precision for fp32 operands; the power of two (up to 16)
    # dividing the class count and the logits' row stride (_common.pow2_unit: 1000 classes are
    # 8 x 125), so masks and rows are known aligned (vector stores, not one per element).
    PRECISION: tl.constexpr,
    J_UNIT: tl.constexpr,
    # The tile (autotuned).
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """logits[BLOCK_M images, BLOCK_N classes] = means @ W^T + b, accumulated in fp32."""
    J = J_div_unit * J_UNIT
    stride_out_n = stride_out_n_div_unit * J_UNIT
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_j = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < N
    j_ok = offs_j < J
    rows = offs_m.to(tl.int64) * C
    w_rows = offs_j.to(tl.int64) * stride_w_j
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, C, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < C
        a = tl.load(means_ptr + rows[:, None] + offs_k[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        wt = tl.load(
            w_ptr + w_rows[None, :] + offs_k.to(tl.int64)[:, None] * stride_w_c,
            mask=k_ok[:, None] & j_ok[None, :],
            other=0.0,
        )
        acc = tl.dot(a.to(wt.dtype), wt, acc, input_precision=PRECISION)
    bias = tl.load(b_ptr + offs_j * stride_b, mask=j_ok, other=0.0).to(tl.float32)
    acc += bias[None, :]
    out = out_ptr + offs_m.to(tl.int64)[:, None] * stride_out_n + offs_j[None, :] * stride_out_j
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & j_ok[None, :])


# The pool is memory-bound: 4K elements per tile; 7x7 = 49 pixels fit one 64-pixel tile of 64
# channels, two 32-pixel tiles of 128 or four 16-pixel tiles of 256 (GoogLeNet's head reads 1024
# channels).
POOL_CONFIGS = [
    triton.Config({"BLOCK_P": 16, "BLOCK_C": 256}, num_warps=4),
    triton.Config({"BLOCK_P": 64, "BLOCK_C": 64}, num_warps=4),
    triton.Config({"BLOCK_P": 32, "BLOCK_C": 128}, num_warps=4),
]
# The GEMM: 16-row tiles for small batches (tl.dot's least M), wider ones for large.
LINEAR_CONFIGS = [
    triton.Config({"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 128}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64}, num_warps=8, num_stages=3),
]
POOL_INTERPRETER_CONFIG = {"BLOCK_P": 16, "BLOCK_C": 64}
LINEAR_INTERPRETER_CONFIG = {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 64}
POOL_AUTOTUNE_KEY = ["N", "C", "H", "W", "stride_x_c", "stride_x_w"]
LINEAR_AUTOTUNE_KEY = ["N", "C", "J_div_unit", "J_UNIT", "PRECISION"]


def make_tuned_kernels(pool_configs=POOL_CONFIGS, linear_configs=LINEAR_CONFIGS, **autotune_kwargs):
    """The two autotuned kernels (pool, GEMM)."""
    return (
        triton.autotune(configs=pool_configs, key=POOL_AUTOTUNE_KEY, **autotune_kwargs)(_channel_means_kernel),
        triton.autotune(configs=linear_configs, key=LINEAR_AUTOTUNE_KEY, **autotune_kwargs)(_linear_kernel),
    )


_tuned_pool, _tuned_linear = (
    (None, None) if _common.INTERPRET else make_tuned_kernels(cache_results=True, do_bench=_common.autotune_bench)
)


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot's input precision: TF32 for fp32 only where nn.Linear would use it (matmul's flag);
    exact in the interpreter (numpy)."""
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32 and not _common.INTERPRET:
        return "tf32"
    return "ieee"


def _arguments(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor):
    """((args, meta, grid) of the pool, (args, meta, grid) of the GEMM, out)."""
    _common.check_dtype(x.dtype)
    n, c, h, wd = x.shape
    j = w.shape[0]
    means = torch.empty((n, c), dtype=torch.float32, device=x.device)
    out = torch.empty((n, j), dtype=x.dtype, device=x.device)
    pool_args = (x, means, n, c, h, wd, *x.stride())

    def pool_grid(cfg):
        return (n, _common.cdiv(c, cfg["BLOCK_C"]))

    unit = _common.pow2_unit(j, out.stride(0))
    linear_args = (means, w, b, out, n, c, j // unit, *w.stride(), b.stride(0), out.stride(0) // unit, out.stride(1))

    def linear_grid(cfg):
        return (_common.cdiv(n, cfg["BLOCK_M"]), _common.cdiv(j, cfg["BLOCK_N"]))

    linear_meta = {"PRECISION": dot_precision(x.dtype), "J_UNIT": unit}
    return (pool_args, {}, pool_grid), (linear_args, linear_meta, linear_grid), out


def launch_avgpool_linear(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    pool_config: Optional[triton.Config] = None,
    linear_config: Optional[triton.Config] = None,
) -> torch.Tensor:
    """F.linear(x.mean((2, 3)), w, b) in two launches (see the module's docstring).  The op
    (inception_fast.ops.avgpool_linear) has checked the arguments.  ``pool_config`` and
    ``linear_config`` (of POOL_CONFIGS, LINEAR_CONFIGS) skip autotuning."""
    (p_args, p_meta, p_grid), (l_args, l_meta, l_grid), out = _arguments(x, w, b)
    if out.numel() == 0:  # CUDA rejects an empty grid
        return out
    _common.launch_configured(
        _channel_means_kernel, _tuned_pool, p_grid, p_args, p_meta, pool_config, POOL_INTERPRETER_CONFIG
    )
    _common.launch_configured(
        _linear_kernel, _tuned_linear, l_grid, l_args, l_meta, linear_config, LINEAR_INTERPRETER_CONFIG
    )
    return out
