"""Achieved rates and the fraction of the H100 roofline, from work counted off the shapes."""

from __future__ import annotations

import torch

from benchmarks.helpers.shapes import BlockShape
from inception_fast.geometry import block_channels

# Ceilings measured on the H100 (shared/GPU.md).  Roofline fractions use them only for
# bf16/fp16 work on a CUDA device; elsewhere they would mean nothing.
PEAK_BF16_FLOP_PER_S = 779e12  # dense bf16 GEMM, FLOP/s (1 MAC = 2 FLOP)
PEAK_HBM_BYTE_PER_S = 2.98e12  # device-to-device copy, read + write bytes counted


def launch1_work(shape: BlockShape, packed, batch: int, elem_size: int) -> tuple:
    """(flops, bytes) of launch 1 alone: the packed 1x1 GEMM and the pool branch's 1x1.
    Bytes: input once, branch-1 and pool slices plus the reduction scratch written once,
    packed weights once."""
    cin, h, w = shape.input_chw
    n_red, n_pool = packed.w_red.shape[0], packed.w_pool.shape[0]
    ch1, ch3red, ch5red = block_channels(packed.w_red, packed.w_pool, packed.w3, packed.w5)[:3]
    pix = batch * h * w
    macs = pix * cin * (n_red + n_pool)
    elems = pix * cin + pix * (ch1 + n_pool) + pix * (ch3red + ch5red)
    elems += packed.w_red.numel() + packed.b_red.numel() + packed.w_pool.numel() + packed.b_pool.numel()
    return 2 * macs, elem_size * elems


def roofline(flops: float, nbytes: float, seconds: float, device: torch.device, dtype: torch.dtype) -> dict:
    """Achieved rates, and (bf16/fp16 on CUDA only) the fraction of the H100 roofline:
    floor time = max(compute floor, bytes floor) over the measured time."""
    out = {
        "flops": int(flops),
        "bytes": int(nbytes),
        "tflops": flops / seconds / 1e12,
        "gbps": nbytes / seconds / 1e9,
        "ceiling_tflops": PEAK_BF16_FLOP_PER_S / 1e12,
        "ceiling_gbps": PEAK_HBM_BYTE_PER_S / 1e9,
        "compute_floor_s": flops / PEAK_BF16_FLOP_PER_S,
        "bytes_floor_s": nbytes / PEAK_HBM_BYTE_PER_S,
        "roofline_fraction": None,
        "bound": None,
    }
    if device.type == "cuda" and dtype in (torch.bfloat16, torch.float16):
        floor = max(out["compute_floor_s"], out["bytes_floor_s"])
        out["floor_s"] = floor
        out["roofline_fraction"] = floor / seconds
        out["bound"] = "compute" if out["compute_floor_s"] >= out["bytes_floor_s"] else "memory"
    return out
