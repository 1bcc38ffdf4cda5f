"""Launch 2 of the Inception block on Hopper's machinery (the "hopper" backend): branch 2's 3x3 and
branch 3's kxk conv (k odd) over scratch, with tensor-memory-accelerator (TMA) loads, a software
pipeline over K and a persistent grid.  It computes what branch_convs.py computes.

* Each conv is an implicit GEMM over K = (kh, kw, cin) of one output tile: a BLOCK_H x BLOCK_W
  rectangle of one image's pixels (M = BLOCK_H * BLOCK_W rows) by BLOCK_N output channels.
* A operand: a 4-D TMA descriptor over the branch's channel slice of scratch, viewed NHWC
  [N, H, W, cin].  Tap (kh, kw) of channel block c0 is the box at (n, h0 + kh - k//2,
  w0 + kw - k//2, c0), reshaped to [M, BLOCK_K].  TMA fills out-of-bounds elements (negative
  coordinates included) with zeros: that is the conv's zero padding, and the zero K tail of the
  last channel block.
* B operand: a 3-D TMA descriptor over the weights, whose memory is (Cout, kh, kw, Cin), viewed
  [Cout, kh*kw, Cin]; box (BLOCK_N, 1, BLOCK_K) at (n0, tap, c0), zero past Cout and Cin.
  Triton feeds wgmma the A tile, reshaped from its 4-D box, from registers.  The SWAP_AB configs
  (branch 2 only, where BLOCK_K divides ch3red) view the weights flat, [Cout, kh*kw*Cin], box
  (BLOCK_N, BLOCK_K) at (n0, tap*Cin + c0), and compute the tile transposed (weights x pixels^T),
  which lets wgmma read both operands from shared memory.
* The (kh, kw, cin-block) loop is one flat loop, pipelined num_stages deep by Triton.
* Persistent grid: min(#SMs, #tiles) programs stride over all output tiles of both convs; branch
  2's tiles come first (its K, 9 * ch3red, is the longer one in every GoogLeNet block), so the
  short branch-3 tiles fill the last wave.  Within a conv the column tiles of one pixel rectangle
  are neighbours, so programs that share an A tile run together and read it from L2.
* Epilogue: bias + ReLU (NaN propagates as in PyTorch), masked pointer stores into the conv's
  channel slice of out: [ch1, ch1+ch3) for branch 2, [ch1+ch3, ch1+ch3+ch5) for branch 3.

TMA needs 16-byte aligned bases and strides (``tma_unsupported_reason``): the channel offsets of
scratch and the channel counts must be multiples of 16 bytes, the channel axis contiguous, and the
weights channels_last.  The launcher refuses anything else with that reason (the "hopper"
backend then runs branch_convs.py's launch 2).  No split-K: batch 1 has few tiles, and
``backend="auto"`` measures this kernel against the others per shape.

Dtypes: fp16/bf16 operands with fp32 accumulation; fp32 uses TF32 only when
torch.backends.cudnn.allow_tf32 is on (_common.dot_precision), else exact fp32.  Output offsets
are 64-bit.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from ... import geometry
from . import _common

__all__ = [
    "launch_branch_convs_tma",
    "tma_unsupported_reason",
    "swap_fits",
    "CONFIGS",
    "INTERPRETER_CONFIG",
    "INTERPRETER_PROGRAMS",
]


@triton.jit
def _tma_conv_tile(
    a_desc,
    w_desc,
    b_ptr,
    out_ptr,
    tile,
    n_col_tiles,
    n_th,
    n_tw,
    H,
    W,
    cin,
    cout,
    cout_off,
    stride_out_n,
    stride_out_h,
    stride_out_w,
    stride_out_c,
    stride_b,
    KS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SWAP_AB: tl.constexpr,
):
    """Output tile ``tile`` (column tiles fastest, then the pixel rectangles of each image) of a
    KSxKS conv: the flat (kh, kw, cin-block) loop of TMA loads and dots, then bias + ReLU into
    out's channels [cout_off, cout_off + cout).  SWAP_AB: the weights' descriptor is 2-D
    [Cout, kh*kw*Cin] (BLOCK_K divides cin) and the tile is computed transposed, weights x pixels."""
    BLOCK_M: tl.constexpr = BLOCK_H * BLOCK_W
    pid_n = tile % n_col_tiles
    rect = tile // n_col_tiles
    tw = rect % n_tw
    th = (rect // n_tw) % n_th
    img = rect // (n_tw * n_th)
    h0 = th * BLOCK_H
    w0 = tw * BLOCK_W
    n0 = pid_n * BLOCK_N
    n_cblocks = tl.cdiv(cin, BLOCK_K)
    n_iters = KS * KS * n_cblocks
    if SWAP_AB:
        acc_t = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for it in range(0, n_iters):
        tap = it // n_cblocks
        c0 = (it - tap * n_cblocks) * BLOCK_K
        kh = tap // KS
        kw = tap - kh * KS
        a = a_desc.load([img, h0 + kh - KS // 2, w0 + kw - KS // 2, c0])
        a = tl.reshape(a, (BLOCK_M, BLOCK_K))
        if SWAP_AB:
            # Both operands straight from shared memory (wgmma reads the pixels' tile transposed);
            # exact since BLOCK_K divides cin: no K block runs into the next tap's weights.
            b = w_desc.load([n0, tap * cin + c0])
            acc_t = tl.dot(b, tl.trans(a), acc_t, input_precision=DOT_PRECISION)
        else:
            # The pixels' tile reshaped from its 4-D box goes through registers (wgmma's A operand).
            b = w_desc.load([n0, tap, c0])
            b = tl.reshape(b, (BLOCK_N, BLOCK_K))
            acc = tl.dot(a, tl.trans(b), acc, input_precision=DOT_PRECISION)
    if SWAP_AB:
        acc = tl.trans(acc_t)

    offs_m = tl.arange(0, BLOCK_M)
    hh = h0 + offs_m // BLOCK_W
    ww = w0 + offs_m % BLOCK_W
    row_ok = (hh < H) & (ww < W)
    o_row = img.to(tl.int64) * stride_out_n + hh.to(tl.int64) * stride_out_h + ww.to(tl.int64) * stride_out_w
    offs_n = n0 + tl.arange(0, BLOCK_N)
    col_ok = offs_n < cout
    bias = tl.load(b_ptr + offs_n * stride_b, mask=col_ok, other=0.0).to(tl.float32)
    y = tl.maximum(acc + bias[None, :], 0.0, propagate_nan=tl.PropagateNan.ALL).to(out_ptr.dtype.element_ty)
    tl.store(
        out_ptr + o_row[:, None] + (cout_off + offs_n).to(tl.int64)[None, :] * stride_out_c,
        y,
        mask=row_ok[:, None] & col_ok[None, :],
    )


@triton.jit(do_not_specialize=["N", "H", "W"])
def _branch_convs_tma_kernel(
    # TMA descriptors: scratch's two channel slices (NHWC) and the two convs' weights [Cout, kh*kw, Cin].
    a3_desc,
    a5_desc,
    w3_desc,
    w5_desc,
    # Biases and the block output.
    b3_ptr,
    b5_ptr,
    out_ptr,
    # Images and their height and width.
    N,
    H,
    W,
    # Channel counts: the convs' inputs and outputs; branch 1's width, where branch 2's slice of out starts.
    cin3,
    cout3,
    cin5,
    cout5,
    ch1,
    # Strides in elements.
    stride_out_n,
    stride_out_h,
    stride_out_w,
    stride_out_c,
    stride_b3,
    stride_b5,
    # Fixed by the launcher: branch 3's kernel size, its column and K tiles, tf32/ieee.
    K5: tl.constexpr,
    BLOCK_N5: tl.constexpr,
    BLOCK_K5: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    # The tile (autotuned).
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SWAP_AB: tl.constexpr,
):
    """Launch 2 as a persistent kernel: each program strides over the output tiles of both convs
    (all of branch 2's, then branch 3's), bias + ReLU into their slices of out."""
    TILE_N5: tl.constexpr = BLOCK_N if BLOCK_N5 > BLOCK_N else BLOCK_N5
    n_th = tl.cdiv(H, BLOCK_H)
    n_tw = tl.cdiv(W, BLOCK_W)
    rects = N * n_th * n_tw
    n_cols3 = tl.cdiv(cout3, BLOCK_N)
    n_cols5 = tl.cdiv(cout5, TILE_N5)
    tiles3 = rects * n_cols3
    total = tiles3 + rects * n_cols5
    for t in tl.range(tl.program_id(0), total, tl.num_programs(0)):
        if t < tiles3:
            _tma_conv_tile(
                a3_desc,
                w3_desc,
                b3_ptr,
                out_ptr,
                t,
                n_cols3,
                n_th,
                n_tw,
                H,
                W,
                cin3,
                cout3,
                ch1,
                stride_out_n,
                stride_out_h,
                stride_out_w,
                stride_out_c,
                stride_b3,
                3,
                DOT_PRECISION,
                BLOCK_H,
                BLOCK_W,
                BLOCK_N,
                BLOCK_K,
                SWAP_AB,
            )
        else:
            _tma_conv_tile(
                a5_desc,
                w5_desc,
                b5_ptr,
                out_ptr,
                t - tiles3,
                n_cols5,
                n_th,
                n_tw,
                H,
                W,
                cin5,
                cout5,
                ch1 + cout3,
                stride_out_n,
                stride_out_h,
                stride_out_w,
                stride_out_c,
                stride_b5,
                K5,
                DOT_PRECISION,
                BLOCK_H,
                BLOCK_W,
                TILE_N5,
                BLOCK_K5,
                False,
            )


def _block_shapes(meta: dict) -> tuple:
    """The four descriptors' box shapes for a tile choice (kernel constexprs in ``meta``)."""
    bh, bw, bn, bk = meta["BLOCK_H"], meta["BLOCK_W"], meta["BLOCK_N"], meta["BLOCK_K"]
    bk5, tile_n5 = meta["BLOCK_K5"], min(meta["BLOCK_N5"], bn)  # as TILE_N5 in the kernel
    w3_box = [bn, bk] if meta.get("SWAP_AB", False) else [bn, 1, bk]
    return [1, bh, bw, bk], [1, bh, bw, bk5], w3_box, [tile_n5, 1, bk5]


def _weight_view(desc: TensorDescriptor, flat: bool) -> None:
    """Points a weight descriptor (base (Cout, Cin, kh, kw), memory (Cout, kh, kw, Cin)) at its
    [Cout, kh*kw, Cin] view, or with ``flat`` at [Cout, kh*kw*Cin]."""
    w = desc.base
    cout, cin, kh, kw = w.shape
    if flat:
        desc.shape, desc.strides = [cout, kh * kw * cin], [w.stride(0), 1]
    else:
        desc.shape, desc.strides = [cout, kh * kw, cin], [w.stride(0), w.stride(3), 1]


def _set_block_shapes(nargs: dict) -> None:
    """Points the descriptors at the boxes of the tile about to run (the autotuner's pre_hook,
    and the launcher's for a pinned or remembered config); SWAP_AB flattens w3's view."""
    _weight_view(nargs["w3_desc"], nargs.get("SWAP_AB", False))
    for name, shape in zip(("a3_desc", "a5_desc", "w3_desc", "w5_desc"), _block_shapes(nargs)):
        nargs[name].block_shape = shape


def _with_swap(kwargs: dict) -> dict:
    """A config's kwargs with SWAP_AB (False where absent)."""
    return {**kwargs, "SWAP_AB": kwargs.get("SWAP_AB", False)}


def _config(kwargs: dict, warps: int, stages: int) -> triton.Config:
    return triton.Config(_with_swap(kwargs), num_warps=warps, num_stages=stages, pre_hook=_set_block_shapes)


# Pixel rectangles of 8x16 and 8x8 (28x28 and 14x14 images waste 23% of the tiles either way, 7x7
# ones 23% of 8x8 tiles and 62% of 8x16 ones; 8 rows keep the TMA box's row count and the wgmma M
# at 64 or 128); 3-5 pipeline stages (32 KB of shared memory per stage at 128x128x64 bf16).
# Without SWAP_AB wgmma takes the pixels' tile from registers (Triton moves a reshaped TMA box
# through them); with it (branch 2 only, where BLOCK_K divides ch3red: _prune_swap) both operands
# come from shared memory.
CONFIGS = [
    _config({"BLOCK_H": 8, "BLOCK_W": 16, "BLOCK_N": 128, "BLOCK_K": 64}, 8, 4),
    _config({"BLOCK_H": 8, "BLOCK_W": 16, "BLOCK_N": 64, "BLOCK_K": 64}, 4, 4),
    _config({"BLOCK_H": 8, "BLOCK_W": 16, "BLOCK_N": 128, "BLOCK_K": 32}, 8, 5),
    _config({"BLOCK_H": 8, "BLOCK_W": 8, "BLOCK_N": 128, "BLOCK_K": 64}, 4, 4),
    _config({"BLOCK_H": 8, "BLOCK_W": 8, "BLOCK_N": 64, "BLOCK_K": 64}, 4, 3),
    _config({"BLOCK_H": 8, "BLOCK_W": 8, "BLOCK_N": 64, "BLOCK_K": 32}, 4, 4),
    _config({"BLOCK_H": 8, "BLOCK_W": 16, "BLOCK_N": 128, "BLOCK_K": 64, "SWAP_AB": True}, 8, 4),
    _config({"BLOCK_H": 8, "BLOCK_W": 16, "BLOCK_N": 128, "BLOCK_K": 32, "SWAP_AB": True}, 8, 4),
    _config({"BLOCK_H": 8, "BLOCK_W": 16, "BLOCK_N": 128, "BLOCK_K": 16, "SWAP_AB": True}, 8, 5),
    _config({"BLOCK_H": 8, "BLOCK_W": 8, "BLOCK_N": 64, "BLOCK_K": 16, "SWAP_AB": True}, 4, 5),
]
# The interpreter runs programs one by one: one fixed tile, and few programs (each striding over
# several tiles, as on the GPU).
INTERPRETER_CONFIG = {"BLOCK_H": 8, "BLOCK_W": 8, "BLOCK_N": 64, "BLOCK_K": 32, "SWAP_AB": False}
INTERPRETER_PROGRAMS = 3

AUTOTUNE_KEY = ["N", "H", "W", "cin3", "cout3", "cin5", "cout5", "K5", "DOT_PRECISION"]


def swap_fits(kwargs: dict, cin3: int) -> bool:
    """Whether a config can run on branch 2's ``cin3`` input channels: SWAP_AB needs BLOCK_K to
    divide them (its flat weight view has no per-tap zero fill)."""
    return not kwargs.get("SWAP_AB", False) or cin3 % kwargs["BLOCK_K"] == 0


def _prune_swap(configs, named_args, **_kwargs):
    """The autotuner's early prune: the SWAP_AB configs whose BLOCK_K does not divide ch3red go."""
    return [c for c in configs if swap_fits(c.kwargs, named_args["cin3"])]


def make_tuned_kernel(configs=CONFIGS, **autotune_kwargs):
    """The autotuned kernel (tests build one with their own configs and do_bench); every config
    gets SWAP_AB and the pre_hook that sets the descriptors' views and boxes."""
    return triton.autotune(
        configs=_common.hooked_configs(configs, _with_swap, _set_block_shapes),
        key=AUTOTUNE_KEY,
        prune_configs_by={"early_config_prune": _prune_swap},
        **autotune_kwargs,
    )(_branch_convs_tma_kernel)


# No cache_results: Triton's on-disk record of the winners skips configs with a pre_hook (it cannot
# serialise them).  The launcher keeps the winner per shape in the choice store instead
# (launch_configured's store_as), so a later process runs the config this one chose (and checked,
# through backend "auto"'s parity check) without benchmarking again.  autotune_bench: the shorter
# benchmark of the other autotuners, which first compiles the configs side by side (each with its
# own boxes: _common.config_args).
_tuned_kernel = None if _common.INTERPRET else make_tuned_kernel(do_bench=_common.autotune_bench)


def _programs(device: torch.device) -> int:
    """How many programs the persistent grid has at most: one per SM."""
    if device.type != "cuda":
        return INTERPRETER_PROGRAMS
    return _common.sm_count(device)


def _misaligned(t: torch.Tensor, offsets) -> bool:
    return any((o * t.element_size()) % 16 for o in offsets)


def tma_unsupported_reason(scratch: torch.Tensor, w3: torch.Tensor, w5: torch.Tensor) -> Optional[str]:
    """None where TMA descriptors can describe launch 2's operands, else why not: the channel axis
    must be contiguous and every base (channel slices included) and stride 16-byte aligned."""
    cin3 = w3.shape[1]
    if scratch.stride(1) != 1:
        return "scratch is not channels_last"
    if scratch.data_ptr() % 16 or _misaligned(scratch, (cin3, *(scratch.stride(d) for d in (0, 2, 3)))):
        return (
            f"scratch's rows or branch 3's channel offset ({cin3}) are not 16-byte aligned "
            f"(strides {tuple(scratch.stride())}, {scratch.dtype})"
        )
    for name, w in (("w3", w3), ("w5", w5)):
        if w.stride(1) != 1 or w.stride(3) != w.shape[1] or w.stride(2) != w.shape[3] * w.stride(3):
            return f"{name} is not channels_last (memory (Cout, kh, kw, Cin)), strides {tuple(w.stride())}"
        if w.data_ptr() % 16 or _misaligned(w, (w.stride(0), w.stride(3))):
            return f"{name}'s rows are not 16-byte aligned (strides {tuple(w.stride())}, {w.dtype})"
    return None


def _descriptors(scratch: torch.Tensor, w3: torch.Tensor, w5: torch.Tensor, meta: dict) -> tuple:
    """TMA descriptors of scratch's two channel slices (NHWC) and the weights [Cout, kh*kw, Cin],
    with the boxes of the tile in ``meta``."""
    n, _, h, w = scratch.shape
    cin3, cin5 = w3.shape[1], w5.shape[1]
    nhwc = scratch.permute(0, 2, 3, 1)
    s_n, s_h, s_w, _ = nhwc.stride()
    shapes = _block_shapes(meta)
    a3 = TensorDescriptor(nhwc[..., :cin3], [n, h, w, cin3], [s_n, s_h, s_w, 1], shapes[0])
    a5 = TensorDescriptor(nhwc[..., cin3:], [n, h, w, cin5], [s_n, s_h, s_w, 1], shapes[1])
    descs = [a3, a5]
    for wt, shape in ((w3, shapes[2]), (w5, shapes[3])):
        cout, cin, kh, kw = wt.shape
        desc = TensorDescriptor(wt, [cout, kh * kw, cin], [wt.stride(0), wt.stride(3), 1], [shape[0], 1, shape[-1]])
        _weight_view(desc, len(shape) == 2)
        desc.block_shape = shape
        descs.append(desc)
    return tuple(descs)


def _tile_count(n: int, h: int, w: int, cout3: int, cout5: int, meta: dict) -> int:
    rects = n * _common.cdiv(h, meta["BLOCK_H"]) * _common.cdiv(w, meta["BLOCK_W"])
    tile_n5 = min(meta["BLOCK_N5"], meta["BLOCK_N"])
    return rects * (_common.cdiv(cout3, meta["BLOCK_N"]) + _common.cdiv(cout5, tile_n5))


def _arguments(scratch, w3, b3, w5, b5, out, ch1):
    """(positional args, launcher-fixed constexprs, grid(meta)) for _branch_convs_tma_kernel; the
    descriptors' boxes are those of INTERPRETER_CONFIG until a tile is chosen (_set_block_shapes)."""
    _common.check_dtype(scratch.dtype)
    n, _, h, w = scratch.shape
    cout3, cin3 = w3.shape[0], w3.shape[1]
    cout5, cin5, k5 = w5.shape[0], w5.shape[1], w5.shape[-1]
    _common.check_branch_weights(w3, w5)
    geometry.check_pixel_rows(n * h * w)
    why = tma_unsupported_reason(scratch, w3, w5)
    if why is not None:
        raise ValueError(f"launch 2 with TMA cannot describe these tensors: {why}")
    meta = {
        "K5": k5,
        "BLOCK_N5": _common.next_pow2_clamped(cout5),
        "BLOCK_K5": _common.next_pow2_clamped(cin5, hi=32),
        "DOT_PRECISION": _common.dot_precision(scratch.dtype),
    }
    descs = _descriptors(scratch, w3, w5, {**meta, **INTERPRETER_CONFIG})
    s_on, s_oc, s_oh, s_ow = out.stride()
    args = (
        *descs,
        b3,
        b5,
        out,
        n,
        h,
        w,
        cin3,
        cout3,
        cin5,
        cout5,
        ch1,
        s_on,
        s_oh,
        s_ow,
        s_oc,
        b3.stride(0),
        b5.stride(0),
    )
    programs = _programs(scratch.device)

    def grid(cfg):
        return (min(programs, _tile_count(n, h, w, cout3, cout5, cfg)),)

    return args, meta, grid


def launch_branch_convs_tma(
    scratch: torch.Tensor,
    w3: torch.Tensor,
    b3: torch.Tensor,
    w5: torch.Tensor,
    b5: torch.Tensor,
    out: torch.Tensor,
    ch1: int,
    config: Optional[triton.Config] = None,
) -> None:
    """Launch 2 with TMA: fills out[:, ch1:ch1+ch3] and out[:, ch1+ch3:ch1+ch3+ch5] (post-ReLU).

    scratch (N, ch3red + ch5red, H, W) channels_last; w3 (ch3, ch3red, 3, 3) and w5 (ch5, ch5red,
    k, k), k odd, channels_last; out (N, C_total, H, W).  Tensors TMA cannot describe
    (tma_unsupported_reason) raise a ValueError naming the problem.  ``config`` (one of CONFIGS,
    or any triton.Config with BLOCK_H/W/N/K and optionally SWAP_AB) skips autotuning; a SWAP_AB
    config whose BLOCK_K does not divide ch3red is refused.
    """
    if scratch.numel() == 0:  # nothing to compute, and CUDA rejects an empty grid
        return
    if config is not None and not swap_fits(config.kwargs, w3.shape[1]):
        raise ValueError(
            f"config {_common.config_name(config)}: SWAP_AB needs BLOCK_K to divide branch 2's {w3.shape[1]} "
            "input channels"
        )
    args, meta, grid = _arguments(scratch, w3, b3, w5, b5, out, ch1)
    names = ("a3_desc", "a5_desc", "w3_desc", "w5_desc")
    descs = dict(zip(names, args[:4]))

    def prepare(chosen: dict) -> None:
        _set_block_shapes({**chosen, **descs})

    _common.launch_configured(
        _branch_convs_tma_kernel,
        _tuned_kernel,
        grid,
        args,
        meta,
        config,
        INTERPRETER_CONFIG,
        config_kwargs=_with_swap,
        prepare=prepare,
        store_as="branch_convs_tma",
    )
