"""One stride-1 KSxKS "same" convolution with bias + ReLU: relu(conv2d(x, w, b, padding=KS // 2)),
FusedGoogLeNet's conv2 (1x1, 64 -> 64) and conv3 (3x3, 64 -> 192) at 56x56.

Why: cuDNN runs conv3 at a fraction of its roofline at batch 256 (0.69 ms on an H100, 2026-11-28,
against a compute floor of ~0.23 ms: 1.78e11 FLOP at the roofline table's 779 TFLOP/s), and ATen's
unfused form adds two passes (bias, ReLU) over the output.
This kernel is the third candidate of inception_fast.choices.CONV_RELU_CHOICE, used only where it
agreed with an fp64 ATen run and measured faster.

The conv is an implicit GEMM: [M = N*H*W pixels] x [K = KS*KS*Cin] x [Cout], each program one
BLOCK_M x BLOCK_N output tile (branch_convs._conv_tile: the A operand gathered straight from x with
zero padding KS // 2, out-of-image taps load 0; K runs over (kh, kw, cin) as the weight's memory
does), bias + ReLU in the epilogue (_common.finish_tile).  One 1-D grid, column tiles fastest.

Layouts: x (N, Cin, H, W) channels_last (any strides work; NHWC is the fast case), w (Cout, Cin, KS,
KS) channels_last, i.e. memory (Cout, kh, kw, Cin) (the launcher makes a copy of any other weight),
out (N, Cout, H, W) channels_last.  Supported: stride 1, dilation 1, groups 1, a square odd KS with
padding KS // 2.  No split-K: GoogLeNet's smallest instance (batch 1) has 3136 pixels, past
_common.SMALL_PROBLEM_PIXELS, where the other launchers stop offering it.

Dtypes: fp16/bf16 operands with fp32 accumulation; fp32 uses TF32 only when
torch.backends.cudnn.allow_tf32 is on (as ATen's conv does), else exact fp32.  64-bit offsets
throughout.  NaN propagates through the ReLU as in PyTorch.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ... import geometry
from . import _common
from ._common import l1_align, pixel_tile, row_offsets
from .branch_convs import _conv_tile

__all__ = ["launch_conv_relu", "supported", "CONFIGS", "INTERPRETER_CONFIG"]


# M, H and W only enter masks and index arithmetic on the row axis (one binary across batch sizes);
# the *_div_unit values get their alignment from the constexpr units they are multiplied by.
@triton.jit(
    do_not_specialize=["M", "H", "W"],
    do_not_specialize_on_alignment=[
        "cin_div_unit",
        "stride_x_n_div_unit",
        "stride_x_h_div_unit",
        "stride_x_w_div_unit",
        "stride_out_n_div_unit",
        "stride_out_h_div_unit",
        "stride_out_w_div_unit",
        "stride_w_o_div_unit",
        "stride_w_h_div_unit",
        "stride_w_w_div_unit",
    ],
)
def _conv_relu_kernel(
    # Pointers: the input, the weight, the bias and the output; the split-K workspace and counters
    # (never dereferenced: SPLIT_K is 1).
    x_ptr,
    w_ptr,
    b_ptr,
    out_ptr,
    ws_ptr,
    cnt_ptr,
    # Pixels (M = N*H*W) and the image's height and width.
    M,
    H,
    W,
    # Channels: in (divided by C_UNIT) and out.
    cin_div_unit,
    cout,
    # Strides in elements; those of N, H and W (activations) or O, H and W (weight) divided by
    # ROW_UNIT or W_UNIT.
    stride_x_n_div_unit,
    stride_x_h_div_unit,
    stride_x_w_div_unit,
    stride_x_c,
    stride_out_n_div_unit,
    stride_out_h_div_unit,
    stride_out_w_div_unit,
    stride_out_c,
    stride_w_o_div_unit,
    stride_w_h_div_unit,
    stride_w_w_div_unit,
    stride_w_c,
    stride_b,
    # Fixed by the launcher: the kernel size, tf32/ieee, the stride and channel units.
    KS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    ROW_UNIT: tl.constexpr,
    W_UNIT: tl.constexpr,
    C_UNIT: tl.constexpr,
    # The tile (autotuned), and whether its A copies go through L1 (branch_convs._conv_acc).
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    A_L1: tl.constexpr,
):
    """One BLOCK_M x BLOCK_N tile of relu(conv2d(x, w, b, padding=KS // 2)) per program."""
    cin = cin_div_unit * C_UNIT
    stride_x_n, stride_x_h, stride_x_w = (
        stride_x_n_div_unit * ROW_UNIT,
        stride_x_h_div_unit * ROW_UNIT,
        stride_x_w_div_unit * ROW_UNIT,
    )
    stride_out_n, stride_out_h, stride_out_w = (
        stride_out_n_div_unit * ROW_UNIT,
        stride_out_h_div_unit * ROW_UNIT,
        stride_out_w_div_unit * ROW_UNIT,
    )
    stride_w_o, stride_w_h, stride_w_w = (
        stride_w_o_div_unit * W_UNIT,
        stride_w_h_div_unit * W_UNIT,
        stride_w_w_div_unit * W_UNIT,
    )
    tile = tl.program_id(0)
    pid_n, row_ok, img, hh, ww = pixel_tile(tile, tl.cdiv(cout, BLOCK_N), M, H, W, BLOCK_M)
    x_row = row_offsets(img, hh, ww, stride_x_n, stride_x_h, stride_x_w)
    o_row = row_offsets(img, hh, ww, stride_out_n, stride_out_h, stride_out_w)
    _conv_tile(
        x_ptr, w_ptr, b_ptr, out_ptr, ws_ptr, cnt_ptr, tile, 0, x_row, o_row, row_ok, hh, ww, pid_n,
        H, W, cin, 0, cout, 0, stride_x_h, stride_x_w, stride_x_c,
        stride_w_o, stride_w_h, stride_w_w, stride_w_c, stride_b, stride_out_c,
        KS, DOT_PRECISION, BLOCK_M, BLOCK_N, BLOCK_K, 1, BLOCK_M * BLOCK_N,
        l1_align(A_L1, ROW_UNIT, x_ptr.dtype.element_ty.primitive_bitwidth),
    )  # fmt: skip


# Large tiles for large batches (conv3 at batch 256: 802816 pixels x 192 channels), smaller ones to
# spread batch 1 (3136 pixels) over the SMs; BLOCK_N 64 divides both convs' widths (64, 192).  The
# 256-wide tile holds all of conv3's channels: each gathered A tile is read once instead of once
# per 64-channel column tile, for a quarter of its MMA work on zero columns.
CONFIGS = [
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 32}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 256, "BLOCK_N": 64, "BLOCK_K": 64}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 32}, num_warps=8, num_stages=4),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32}, num_warps=2, num_stages=3),
    # The pipelined configs' 16-byte cp.async copies bypass L1, so each of a pixel's nine taps
    # reads L2 once per column tile.  A_L1 copies A in 8-byte pieces, which L1 caches (the taps
    # that neighbouring pixels share then hit), on conv3's fastest tile on the H200 and on the
    # one that holds all of its channels.
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64, "A_L1": 1}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 32, "A_L1": 1}, num_warps=8, num_stages=3),
]
# The interpreter runs programs one by one in numpy: no tuning, one fixed tile.
INTERPRETER_CONFIG = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "A_L1": 1}

# Every shape argument, so a tuned config is reused exactly for the shape it was tuned on.
AUTOTUNE_KEY = ["M", "H", "W", "cin_div_unit", "cout", "KS", "DOT_PRECISION", "ROW_UNIT", "W_UNIT", "C_UNIT"]


def _with_defaults(kwargs: dict) -> dict:
    """A config's kwargs with A_L1 (0 where absent: 16-byte A copies)."""
    return {"A_L1": 0, **kwargs}


def complete_config(config: triton.Config) -> triton.Config:
    """A copy of ``config`` (warps, stages and all) with _with_defaults' kwargs."""
    return _common.completed_config(config, _with_defaults)


def _prune(configs, named_args, **meta):
    """The autotuner's early prune: no A_L1 config for a 1x1 conv (conv2), whose pixels share no
    taps for L1 to keep (and whose offsets drop the claim: it would compile its twin again), unless
    nothing else is left.  Triton calls it only when there are several configs."""
    if meta.get("KS") != 1:
        return configs
    return [c for c in configs if not c.kwargs.get("A_L1")] or configs


def make_tuned_kernel(configs=CONFIGS, **autotune_kwargs):
    """The autotuned kernel (tests build one with their own configs)."""
    configs = [complete_config(c) for c in configs]
    return triton.autotune(
        configs=configs, key=AUTOTUNE_KEY, prune_configs_by={"early_config_prune": _prune}, **autotune_kwargs
    )(_conv_relu_kernel)


# Winners also go to triton's on-disk cache, so a new process neither re-benchmarks nor compiles
# the losing configs.
_tuned_kernel = None if _common.INTERPRET else make_tuned_kernel(cache_results=True, do_bench=_common.autotune_bench)


def supported(x: torch.Tensor, w: torch.Tensor, padding: int) -> Optional[str]:
    """None where this kernel computes relu(conv2d(x, w, b, padding=padding)) (stride 1), else why not."""
    if x.dim() != 4 or w.dim() != 4:
        return f"expects a 4-D input and weight, got shapes {tuple(x.shape)} and {tuple(w.shape)}"
    ks = w.shape[-1]
    if w.shape[-2] != ks or ks % 2 == 0:
        return f"supports square convs of odd size, got weight shape {tuple(w.shape)}"
    if padding != ks // 2:
        return f"supports 'same' padding only (a {ks}x{ks} conv with padding {ks // 2}), got padding {padding}"
    if w.shape[1] != x.shape[1]:
        return f"supports groups=1 only: the weight takes {w.shape[1]} channels, the input has {x.shape[1]}"
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return f"supports float32, float16 and bfloat16, got {x.dtype}"
    if _common.INTERPRET and x.dtype == torch.bfloat16:
        return "bfloat16 is not supported by the Triton interpreter"
    return None


def _arguments(x, w, b, padding):
    """(positional args, launcher-fixed constexprs, grid(meta), out) for _conv_relu_kernel."""
    why = supported(x, w, padding)
    if why is not None:
        raise ValueError(f"the Triton conv + bias + ReLU {why}")
    _common.check_dtype(x.dtype)
    if w.dtype != x.dtype or b.dtype != x.dtype:
        raise TypeError(f"input dtype {x.dtype} does not match the weight's {w.dtype} or the bias's {b.dtype}")
    if tuple(b.shape) != (w.shape[0],):
        raise ValueError(f"expects a bias of shape ({w.shape[0]},), got {tuple(b.shape)}")
    n, cin, h, wd = x.shape
    cout, ks = w.shape[0], w.shape[-1]
    m = n * h * wd
    geometry.check_pixel_rows(m)
    if not w.is_contiguous(memory_format=torch.channels_last):
        w = w.contiguous(memory_format=torch.channels_last)
    out = torch.empty((n, cout, h, wd), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    unit, c_unit = _common.row_unit(x, out), _common.pow2_unit(cin)
    w_unit, w_strides = _common.weight_strides(w)
    args = (
        x,
        w,
        b,
        out,
        _common.no_buffer(x, torch.float32),
        _common.no_buffer(x, torch.int32),
        m,
        h,
        wd,
        cin // c_unit,
        cout,
        *_common.row_strides(x, unit),
        *_common.row_strides(out, unit),
        *w_strides,
        b.stride(0),
    )
    meta = {
        "KS": ks,
        "DOT_PRECISION": _common.dot_precision(x.dtype),
        "ROW_UNIT": unit,
        "W_UNIT": w_unit,
        "C_UNIT": c_unit,
    }

    def grid(cfg):
        return (_common.cdiv(m, cfg["BLOCK_M"]) * _common.cdiv(cout, cfg["BLOCK_N"]),)

    return args, meta, grid, out


def launch_conv_relu(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, padding: int, config: Optional[triton.Config] = None
) -> torch.Tensor:
    """relu(conv2d(x, w, b, padding=padding)), stride 1, padding KS // 2, returned channels_last.

    x (N, Cin, H, W) and w (Cout, Cin, KS, KS) in any strides (channels_last: no copy).  ``config``
    (one of CONFIGS, or any triton.Config with BLOCK_M/N/K) skips autotuning."""
    args, meta, grid, out = _arguments(x, w, b, padding)
    if out.numel() > 0 and x.shape[1] > 0:  # CUDA rejects an empty grid
        _common.launch_configured(
            _conv_relu_kernel, _tuned_kernel, grid, args, meta, config, INTERPRETER_CONFIG, config_kwargs=_with_defaults
        )
    elif out.numel() > 0:  # no input channels: the sums are empty, the output relu(b)
        out.copy_(b.view(1, -1, 1, 1).relu().expand_as(out))
    return out
