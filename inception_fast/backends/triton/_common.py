"""What the two Triton launchers share: interpreter mode, dot precision, launch counting, and the
@triton.jit helpers that map a program to its tile of output pixels.

No kernels here.  Importing this module imports triton but queries no device.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

__all__ = ["INTERPRET", "dot_precision", "launch", "launch_configured", "launch_count", "check_dtype", "row_unit", "pow2_unit", "row_strides",
           "next_pow2_clamped", "pixel_rows", "pixel_tile", "row_offsets"]

# triton.jit picks the interpreter when a kernel is decorated, i.e. when the kernel modules
# are imported; reading the variable at the same moment keeps launchers and kernels in step.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

_launches = 0


def launch_count() -> int:
    """How many Triton kernels the launchers of this package have issued (for tests)."""
    return _launches


def launch(kernel, grid, *args, **kwargs) -> None:
    """The single place where the launchers start a kernel, so launches can be counted (and,
    in tests, observed without also observing the interpreter's own host copies)."""
    global _launches
    _launches += 1
    kernel[grid](*args, **kwargs)


def launch_configured(kernel, tuned, grid, args: tuple, meta: dict, config, interpreter_config: dict,
                      config_kwargs=dict) -> None:
    """Starts ``kernel`` the way every launcher here does: through its autotuned wrapper ``tuned``
    when no config is pinned (on a GPU), else with the pinned ``config`` (its kwargs passed through
    ``config_kwargs``), or, under the interpreter, with ``interpreter_config``.  ``grid(meta)``
    gives the grid of a tile choice."""
    if config is None and tuned is not None:
        launch(tuned, grid, *args, **meta)
        return
    if config is None:
        meta = {**meta, **interpreter_config}
    else:
        meta = {**meta, **config_kwargs(config.kwargs), "num_warps": config.num_warps, "num_stages": config.num_stages}
    launch(kernel, grid(meta), *args, **meta)


def check_dtype(dtype: torch.dtype) -> None:
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"the Triton Inception kernels support float32, float16 and bfloat16, got {dtype}")
    if INTERPRET and dtype == torch.bfloat16:
        raise TypeError("bfloat16 is not supported by the Triton interpreter")


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot input_precision, read at call time like PyTorch's own convolutions do.

    Only fp32 operands are affected: fp16/bf16 always multiply exactly and accumulate in
    fp32 whatever the setting.  The interpreter multiplies in numpy, i.e. exactly.
    """
    if INTERPRET:
        return "ieee"
    if dtype == torch.float32 and not torch.backends.cudnn.allow_tf32:
        return "ieee"
    return "tf32"


def row_unit(*tensors: torch.Tensor) -> int:
    """The largest power of two, up to 16, that divides every row stride (dims 0, 2, 3: all but
    the channel one) of the given 4-D (N, C, H, W) activations or (O, C, kh, kw) weights.

    Triton marks an integer argument divisible only when it is a multiple of 16; any other stride
    counts as unaligned, and every element then gets its own 64-bit address and a scalar access.
    A scratch buffer with ch3red + ch5red = 136 channels (Inception 4b) is a multiple of 8, i.e. of
    16 bytes in bf16: passed as stride / 8 and multiplied back by this unit as a constexpr inside
    the kernel, its rows are known to be 16-byte aligned (vector stores and cp.async loads).  The
    same goes for channel counts that bound a mask (pow2_unit): 4b's NR = 296 and its branch-3
    input of 24 channels.  For 4b and 4c this removed 3-4.5 KB of register spills and all scalar
    stores from launch 1, and put launch 2's branch-3 loads on cp.async (ptxas sm_90, bf16).
    """
    strides = [t.stride(d) for t in tensors for d in (0, 2, 3)]
    # A stride of 2^31 or more stays whole: Triton passes it as int64, whereas stride // unit
    # could fit int32, and the product with the unit would then wrap in 32 bits.
    return 1 if max(strides) >= 2**31 else pow2_unit(*strides)


def pow2_unit(*values: int) -> int:
    """The largest power of two, up to 16, that divides every value (see row_unit)."""
    unit = 16
    while unit > 1 and any(v % unit for v in values):
        unit //= 2
    return unit


def row_strides(t: torch.Tensor, unit: int) -> tuple:
    """Strides of dims (0, 2, 3, 1) of a 4-D tensor, the first three divided by ``unit`` (row_unit)."""
    return t.stride(0) // unit, t.stride(2) // unit, t.stride(3) // unit, t.stride(1)


def next_pow2_clamped(n: int, lo: int = 16, hi: int = 128) -> int:
    """A tile width for a dimension of size n: tl.dot needs >= 16, registers want <= hi."""
    return max(lo, min(hi, triton.next_power_of_2(n)))


@triton.jit
def pixel_rows(row0, M, H, W, BLOCK_M: tl.constexpr):
    """(row_ok, img, hh, ww) of the BLOCK_M pixel rows from ``row0`` of the N*H*W pixel rows.
    Pixel indices are < M < 2^31 (checked by the launchers); the image index is 64-bit, so
    offsets built from it are too."""
    offs_m = row0 + tl.arange(0, BLOCK_M)
    row_ok = offs_m < M
    hw = H * W
    img = (offs_m // hw).to(tl.int64)
    rem = offs_m % hw
    return row_ok, img, rem // W, rem % W


@triton.jit
def pixel_tile(pid, n_col_tiles, M, H, W, BLOCK_M: tl.constexpr):
    """Program ``pid`` of a 1-D grid whose column tiles vary fastest: (pid_n, row_ok, img, hh, ww)
    for its BLOCK_M pixels (see pixel_rows)."""
    pid_m = pid // n_col_tiles
    row_ok, img, hh, ww = pixel_rows(pid_m * BLOCK_M, M, H, W, BLOCK_M)
    return pid % n_col_tiles, row_ok, img, hh, ww


@triton.jit
def row_offsets(img, hh, ww, s_n, s_h, s_w):
    """64-bit element offsets of the pixels (img, hh, ww) in a tensor with strides s_n, s_h, s_w."""
    return img * s_n + hh.to(tl.int64) * s_h + ww.to(tl.int64) * s_w
