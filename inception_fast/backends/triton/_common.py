"""What the two Triton launchers share: interpreter mode, dot precision, launch counting.

No kernels here.  Importing this module imports triton but queries no device.
"""
from __future__ import annotations

import os

import torch
import triton

__all__ = ["INTERPRET", "dot_precision", "launch", "launch_count", "check_dtype", "next_pow2_clamped"]

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


def next_pow2_clamped(n: int, lo: int = 16, hi: int = 128) -> int:
    """A tile width for a dimension of size n: tl.dot needs >= 16, registers want <= hi."""
    return max(lo, min(hi, triton.next_power_of_2(n)))
