"""2-D max pool over an activation, written channels_last: GoogLeNet's pools between the stem and
the blocks (maxpool1-4: 3x3/2 with ceil_mode in torchvision's and the paper's variants, except
torchvision's maxpool4, 2x2/2 with ceil_mode; 3x3/2 pad 1 in d2l's).

Why a kernel of our own: ATen's channels_last max pool (max_pool_forward_nhwc) also computes and
writes the int64 argmax of every output (an index tensor as large as four bf16 outputs), which
inference never reads.  This one computes the max only; like every kernel here it is a measured
candidate, chosen per shape only where it is right and faster.

Each program owns BLOCK_P output pixels x BLOCK_C channels: per tap of the KS x KS window one load
of a [BLOCK_P, BLOCK_C] tile (channels contiguous in channels_last: 16-byte vector loads), taps
outside the input read as -inf, so padding never wins, and a NaN anywhere in a window makes that
output NaN, as in PyTorch (propagate_nan; Triton's default max would drop it).  The output size
follows PyTorch's rule, ceil_mode included (ops checks the arguments).

Dtypes: float32 / float16 / bfloat16; the max is exact in any of them, but for the sign of a
zero: of a window's tied -0.0 and +0.0 ATen keeps the first, Triton's max either.  (ATen's rule
written out, a compare and a select, spills with triton 3.6 on the 8-warp tiles.)  As a
candidate, the pool is checked bit for bit against ATen on a shape's first input.  Input in any
strides (NCHW too: slower gathers, same result), output channels_last.  Offsets are 64-bit
(pixel and channel terms alike: an NCHW channel stride times C can pass 2^31).
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ... import geometry
from . import _common

__all__ = ["launch_max_pool", "CONFIGS", "INTERPRETER_CONFIG"]


@triton.jit(do_not_specialize=["M", "H", "W", "OH", "OW"])
def _max_pool_kernel(
    # Pointers: input, channels_last output.
    x_ptr,
    out_ptr,
    # Sizes: M = N*OH*OW output pixels, channels, input H x W, output OH x OW.
    M,
    C,
    H,
    W,
    OH,
    OW,
    # Strides in elements, in (N, C, H, W) order.
    stride_x_n,
    stride_x_c,
    stride_x_h,
    stride_x_w,
    stride_out_n,
    stride_out_c,
    stride_out_h,
    stride_out_w,
    # Fixed by the launcher: the window.
    KS: tl.constexpr,
    STRIDE: tl.constexpr,
    PAD: tl.constexpr,
    # The tile (autotuned).
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """KSxKS max pool (stride STRIDE, padding PAD as -inf) of BLOCK_P output pixels x BLOCK_C
    channels: one [BLOCK_P, BLOCK_C] load per window tap, a running fp32 max that propagates NaN,
    one store."""
    pid_c = tl.program_id(1)
    offs_p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = offs_p < M
    ohw = OH * OW
    img = (offs_p // ohw).to(tl.int64)
    rem = offs_p % ohw
    oh = rem // OW
    ow = rem % OW
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = offs_c < C
    offs_c = offs_c.to(tl.int64)
    x_img = x_ptr + img * stride_x_n
    best = tl.full((BLOCK_P, BLOCK_C), float("-inf"), dtype=tl.float32)
    for kh in tl.static_range(KS):
        h = oh * STRIDE - PAD + kh
        for kw in tl.static_range(KS):
            w = ow * STRIDE - PAD + kw
            tap_ok = p_ok & (h >= 0) & (h < H) & (w >= 0) & (w < W)
            row = h.to(tl.int64) * stride_x_h + w.to(tl.int64) * stride_x_w
            v = tl.load(
                x_img[:, None] + row[:, None] + offs_c[None, :] * stride_x_c,
                mask=tap_ok[:, None] & c_ok[None, :],
                other=float("-inf"),
            )
            best = tl.maximum(best, v.to(tl.float32), propagate_nan=tl.PropagateNan.ALL)
    o_row = img * stride_out_n + oh.to(tl.int64) * stride_out_h + ow.to(tl.int64) * stride_out_w
    tl.store(
        out_ptr + o_row[:, None] + offs_c[None, :] * stride_out_c,
        best.to(out_ptr.dtype.element_ty),
        mask=p_ok[:, None] & c_ok[None, :],
    )


# Memory-bound: tiles of 4-8K elements, channel tiles up to 128 wide (GoogLeNet pools 64 to 832
# channels; a 64-channel input gets one column of programs).  The 4K-element tiles run on 8 warps:
# on 4, triton 3.6's PTX for the 3x3 windows compiles to 72 registers and spills 30 bytes (3.8: 90
# registers, none); on 8 they take 56 (3.6) or 76 (3.8) registers and spill nothing with either.
CONFIGS = [
    triton.Config({"BLOCK_P": 64, "BLOCK_C": 64}, num_warps=8),
    triton.Config({"BLOCK_P": 32, "BLOCK_C": 128}, num_warps=8),
    triton.Config({"BLOCK_P": 128, "BLOCK_C": 64}, num_warps=4),
]
INTERPRETER_CONFIG = {"BLOCK_P": 64, "BLOCK_C": 32}
AUTOTUNE_KEY = ["M", "C", "H", "W", "OH", "OW", "KS", "STRIDE", "PAD", "stride_x_c", "stride_x_w"]


def make_tuned_kernel(configs=CONFIGS, **autotune_kwargs):
    """The autotuned kernel (tests build one with their own configs and do_bench)."""
    return triton.autotune(configs=configs, key=AUTOTUNE_KEY, **autotune_kwargs)(_max_pool_kernel)


_tuned_kernel = None if _common.INTERPRET else make_tuned_kernel(cache_results=True, do_bench=_common.autotune_bench)


def _arguments(x: torch.Tensor, kernel: int, stride: int, padding: int, ceil_mode: bool):
    """(positional args, launcher-fixed constexprs, grid(meta), out) for _max_pool_kernel."""
    _common.check_dtype(x.dtype)
    n, c, h, w = x.shape
    oh, ow = (geometry.pool_out(size, kernel, stride, padding, ceil_mode) for size in (h, w))
    shape = (n, c, oh, ow)
    m = n * oh * ow
    geometry.check_pixel_rows(m, "N*OH*OW")
    out = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    args = (x, out, m, c, h, w, oh, ow, *x.stride(), *out.stride())
    meta = {"KS": kernel, "STRIDE": stride, "PAD": padding}

    def grid(cfg):
        return (_common.cdiv(m, cfg["BLOCK_P"]), _common.cdiv(c, cfg["BLOCK_C"]))

    return args, meta, grid, out


def launch_max_pool(
    x: torch.Tensor, kernel: int, stride: int, padding: int, ceil_mode: bool, config: Optional[triton.Config] = None
) -> torch.Tensor:
    """max_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode) (square window, dilation 1) in one
    launch, returned channels_last.  ``config`` (one of CONFIGS) skips autotuning."""
    args, meta, grid, out = _arguments(x, kernel, stride, padding, ceil_mode)
    if out.numel() > 0:  # CUDA rejects an empty grid
        _common.launch_configured(_max_pool_kernel, _tuned_kernel, grid, args, meta, config, INTERPRETER_CONFIG)
    return out
