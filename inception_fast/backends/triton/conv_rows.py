"""A strided KSxKS convolution over an input with few channels + bias + ReLU, as an implicit GEMM
whose A operand is read in aligned, contiguous rows: relu(conv2d(x, w, b, stride, padding)).
GoogLeNet's conv1 (7x7, stride 2, padding 3, 3 -> 64 channels at 224x224) is the case it is for.

Why: with 3 channels, a conv output pixel's inputs under one kernel row are 7 pixels x 3 channels
= 21 elements that start at an odd element offset; stem.py gathers them two bytes at a time, which
leaves its kernel far from its roofline (1.56 ms at batch 256 bf16 on an H200, 2026-12-04,
against a ~0.12 ms floor).

How, in two launches (the pooled form below likewise):
* ``_pad_kernel`` copies x (N, CIN, H, W, any strides) once to xp (N, HP, WP, CP) contiguous: the
  channels zero-padded to CP (packing.rows_channels: 4 for an even stride and at most 4 channels,
  else 8), the conv's zero padding written out
  (PAD rows and columns before, at least PAD after, more where the last window needs it), WP even.
  In xp, the inputs of output pixel (oh, ow) under kernel row kh are one contiguous run of KS*CP
  elements starting at element ((n*HP + STRIDE*oh + kh)*WP + STRIDE*ow)*CP, a multiple of 8: a
  16-byte-aligned row.
* ``_conv_rows_kernel``: per program BLOCK_M output pixels x BLOCK_N channels; for each kernel row
  kh, A = [BLOCK_M, KROW] (KROW = KS*CP rounded up to a power of two: 32 for conv1) loaded as
  aligned contiguous rows (16-byte vectors, software-pipelined over kh by Triton), B = the packed
  weight rows [KROW, BLOCK_N]; bias + ReLU in the epilogue, stored channels_last.  A row's last
  KROW - KS*CP elements belong to the next pixels: they are loaded (xp is sized so they exist) and
  set to zero before the dot, so an Inf or NaN there never reaches this pixel; their packed weights
  are zero too.  K per pixel is KS*KROW (224 for conv1, against the conv's 147): the extra
  tensor-core work is cheap next to reading the operands.

The pooled form (``_conv_rows_pool_kernel``, launch_conv_rows_pool) takes the max pool after the
conv (conv1's maxpool1, 3x3/2 in ceil mode; any pool up to geometry.ROWS_POOL_MAX) into the
conv's epilogue, so the conv output (at batch 256, 411 MB in bf16) is never written or read back:
* a tile is TILE_P x TILE_Q pooled pixels; its conv computes the patch of conv pixels under their
  windows, ((TILE_P - 1) * s + k) x ((TILE_Q - 1) * s + k) of them flattened into BLOCK_M rows
  (neighbouring tiles' patches overlap by k - s rows and columns: that part is computed twice);
  patch pixels outside the conv output (the pool's padding, ceil mode's overhang) are -inf;
* the patch, ReLU'd and rounded to the output dtype (max and rounding commute, so the result
  equals pooling the stored conv output), goes to the program's own slot of a scratch buffer
  (global memory, L2-resident: the grid is persistent, PROGRAMS_PER_SM programs per SM striding
  over the tiles, so the slots total a few MB), then, after a barrier, each pooled pixel's k x k
  taps are read back from it; a second barrier keeps the next tile from overwriting the slot
  while it is read.  NaN propagates through the max as in PyTorch.

The weight comes packed (``packing.pack_conv_rows``: (KS, KROW, COUT), zero where kw >= KS or
c >= CIN): FusedGoogLeNet keeps conv1's packed with its other stem weights; a call without it packs
the weight itself (a few small kernels).

Dtypes: fp16/bf16 with fp32 accumulation; fp32 uses TF32 only when
torch.backends.cudnn.allow_tf32 is on (as ATen's conv does), else exact fp32.  Offsets are 64-bit.
NaN propagates through the ReLU as in PyTorch.  Supported: square kernels, CIN <= 8 with
KS*CP <= 64, any stride and padding (``supported``).
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ... import geometry
from ...packing import pack_conv_rows, rows_channels, rows_length
from . import _common
from ._common import l1_align, pixel_tile, row_offsets

__all__ = [
    "launch_conv_rows",
    "launch_conv_rows_pool",
    "supported",
    "padded_input_shape",
    "CONFIGS",
    "POOL_CONFIGS",
    "PAD_CONFIG",
    "INTERPRETER_CONFIG",
    "POOL_INTERPRETER_CONFIG",
]

# The longest padded kernel row the kernel takes (KS * CP rounded up to a power of two).
MAX_KROW = 64


@triton.jit
def _pad_kernel(
    x_ptr,
    xp_ptr,
    H,
    W,
    HP,
    WP,
    stride_x_n,
    stride_x_c,
    stride_x_h,
    stride_x_w,
    CIN: tl.constexpr,
    CP: tl.constexpr,
    PAD: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """xp[n, hp, wp, c] = x[n, c, hp - PAD, wp - PAD] where c < CIN and the pixel is in the image,
    else 0; program (row, chunk) writes BLOCK elements of xp's row n*HP + hp."""
    row = tl.program_id(0)
    img = (row // HP).to(tl.int64)
    h = row % HP - PAD
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    in_row = offs < WP * CP
    c = offs % CP
    w = offs // CP - PAD
    ok = in_row & (c < CIN) & (h >= 0) & (h < H) & (w >= 0) & (w < W)
    src = img * stride_x_n + c.to(tl.int64) * stride_x_c + h.to(tl.int64) * stride_x_h + w.to(tl.int64) * stride_x_w
    v = tl.load(x_ptr + src, mask=ok, other=0.0)
    tl.store(xp_ptr + row.to(tl.int64) * (WP * CP) + offs, v, mask=in_row)


@triton.jit
def _conv_rows_tile(
    xp_ptr,
    w_ptr,
    b_ptr,
    img,
    oh,
    ow,
    row_ok,
    offs_n,
    col_ok,
    HP,
    WP_UNITS,
    COUT,
    stride_b,
    KS: tl.constexpr,
    STRIDE: tl.constexpr,
    CP: tl.constexpr,
    KROW: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    A_L1: tl.constexpr,
):
    """[BLOCK_M, BLOCK_N] fp32: relu(conv(x, w) + b) at output pixels (img, oh, ow) (rows not
    row_ok load nothing), channels offs_n; K over (kh, kernel row), both kernels' conv.  A_L1: the
    rows' pipelined copies are 8 bytes wide (cp.async.ca, which L1 caches, so the elements that
    neighbouring pixels' windows share are read from L2 once) instead of 16 (cp.async.cg, which
    bypasses L1: each input element is read from L2 about 13 times at stride 2)."""
    offs_j = tl.arange(0, KROW)
    in_window = offs_j < KS * CP
    # Each pixel's window start in xp, in units of 8 elements (STRIDE * CP is a multiple of 8, and
    # so is a row of xp): multiplied by the constant 8, the offsets are known 16-byte aligned (with
    # A_L1 claimed 8-byte aligned only, _common.l1_align, which the copies then follow).
    start = (img * HP + oh * STRIDE) * WP_UNITS + ow * (STRIDE * CP // 8)
    a_start = start * 8
    A_ALIGN: tl.constexpr = l1_align(A_L1, 8, xp_ptr.dtype.element_ty.primitive_bitwidth)
    if A_ALIGN > 0:
        a_start = tl.multiple_of(a_start, A_ALIGN)
    a_rows = xp_ptr + a_start[:, None] + offs_j[None, :]
    w_rows = w_ptr + offs_j[:, None] * COUT + offs_n[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kh in range(KS):
        a = tl.load(a_rows + kh * WP_UNITS * 8, mask=row_ok[:, None], other=0.0)
        a = tl.where(in_window[None, :], a, tl.zeros_like(a))  # the next pixels' elements
        b = tl.load(w_rows + kh * (KROW * COUT), mask=col_ok[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
    bias = tl.load(b_ptr + offs_n * stride_b, mask=col_ok, other=0.0).to(tl.float32)
    return tl.maximum(acc + bias[None, :], 0.0, propagate_nan=tl.PropagateNan.ALL)


# M, OH and OW only enter masks and index arithmetic on the row axis (one binary across batch sizes).
@triton.jit(do_not_specialize=["M", "OH", "OW", "HP"])
def _conv_rows_kernel(
    # Pointers: the padded input xp, the packed weight (KS, KROW, COUT), the bias, the output.
    xp_ptr,
    w_ptr,
    b_ptr,
    out_ptr,
    # Sizes: M = N*OH*OW output pixels; xp's rows HP and its row length in units of 8 elements.
    M,
    OH,
    OW,
    HP,
    WP_UNITS,
    COUT,
    stride_b,
    stride_out_n,
    stride_out_c,
    stride_out_h,
    stride_out_w,
    # Fixed by the launcher: the conv's geometry, xp's channels, the packed row, tf32/ieee.
    KS: tl.constexpr,
    STRIDE: tl.constexpr,
    CP: tl.constexpr,
    KROW: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    # The tile (autotuned).
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    A_L1: tl.constexpr,
):
    """relu(conv(x, w) + b) for BLOCK_M output pixels x BLOCK_N channels, K over (kh, kernel row)."""
    pid_n, row_ok, img, oh, ow = pixel_tile(tl.program_id(0), tl.cdiv(COUT, BLOCK_N), M, OH, OW, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = offs_n < COUT
    y = _conv_rows_tile(
        xp_ptr, w_ptr, b_ptr, img, oh, ow, row_ok, offs_n, col_ok, HP, WP_UNITS, COUT, stride_b,
        KS, STRIDE, CP, KROW, DOT_PRECISION, BLOCK_M, BLOCK_N, A_L1,
    ).to(out_ptr.dtype.element_ty)  # fmt: skip
    o_row = row_offsets(img, oh, ow, stride_out_n, stride_out_h, stride_out_w)
    tl.store(out_ptr + o_row[:, None] + offs_n[None, :] * stride_out_c, y, mask=row_ok[:, None] & col_ok[None, :])


# N and the map sizes only enter index arithmetic and masks (one binary across batch sizes).
@triton.jit(do_not_specialize=["N", "OH", "OW", "PH", "PW", "HP"])
def _conv_rows_pool_kernel(
    # Pointers: the padded input xp, the packed weight, the bias, the pooled output, and the
    # programs' scratch slots (BLOCK_M x BLOCK_N elements each, in the output's dtype).
    xp_ptr,
    w_ptr,
    b_ptr,
    out_ptr,
    scratch_ptr,
    # Sizes: images, the conv's output map OH x OW, the pooled map PH x PW, xp's rows HP and its
    # row length in units of 8 elements, output channels.
    N,
    OH,
    OW,
    PH,
    PW,
    HP,
    WP_UNITS,
    COUT,
    stride_b,
    stride_out_n,
    stride_out_c,
    stride_out_h,
    stride_out_w,
    # Fixed by the launcher: the conv's geometry, xp's channels, the packed row, tf32/ieee; the pool.
    KS: tl.constexpr,
    STRIDE: tl.constexpr,
    CP: tl.constexpr,
    KROW: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    POOL_K: tl.constexpr,
    POOL_S: tl.constexpr,
    POOL_PAD: tl.constexpr,
    # The tile (autotuned): TILE_P x TILE_Q pooled pixels (BLOCK_P >= their count) from a patch of
    # conv pixels that fits BLOCK_M; BLOCK_N channels; programs per SM of the persistent grid.
    TILE_P: tl.constexpr,
    TILE_Q: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PROGRAMS_PER_SM: tl.constexpr,
    A_L1: tl.constexpr,
):
    """max_pool2d(relu(conv(x, w) + b)) for TILE_P x TILE_Q pooled pixels x BLOCK_N channels per
    tile, the programs striding over the tiles; each program's conv patch passes through its own
    scratch slot (written, then read by the pool after a barrier)."""
    # The conv pixels under the tile's pool windows: a CH x CW patch, flattened row by row.
    CH: tl.constexpr = (TILE_P - 1) * POOL_S + POOL_K
    CW: tl.constexpr = (TILE_Q - 1) * POOL_S + POOL_K
    tl.static_assert(CH * CW <= BLOCK_M, "the conv patch must fit BLOCK_M")
    tl.static_assert(TILE_P * TILE_Q <= BLOCK_P, "the pooled tile must fit BLOCK_P")
    n_cols = tl.cdiv(COUT, BLOCK_N)
    tiles_h = tl.cdiv(PH, TILE_P)
    tiles_w = tl.cdiv(PW, TILE_Q)
    n_tiles = N * tiles_h * tiles_w * n_cols
    offs_m = tl.arange(0, BLOCK_M)
    offs_p = tl.arange(0, BLOCK_P)
    offs_c = tl.arange(0, BLOCK_N)
    # The pooled pixel p of a tile is (pi, pj); its window's tap (dh, dw) is patch pixel
    # (pi * POOL_S + dh, pj * POOL_S + dw).
    pi = offs_p // TILE_Q
    pj = offs_p % TILE_Q
    slot = scratch_ptr + tl.program_id(0).to(tl.int64) * (BLOCK_M * BLOCK_N)
    slot_tile = slot + offs_m[:, None] * BLOCK_N + offs_c[None, :]
    for tile in tl.range(tl.program_id(0), n_tiles, tl.num_programs(0)):
        pid_n = tile % n_cols
        rect = tile // n_cols
        tw = rect % tiles_w
        th = (rect // tiles_w) % tiles_h
        img = (rect // (tiles_w * tiles_h)).to(tl.int64)
        oh = th * (TILE_P * POOL_S) - POOL_PAD + offs_m // CW
        ow = tw * (TILE_Q * POOL_S) - POOL_PAD + offs_m % CW
        # Patch pixels outside the conv's output are the pool's padding (or past the last window).
        conv_ok = (offs_m < CH * CW) & (oh >= 0) & (oh < OH) & (ow >= 0) & (ow < OW)
        offs_n = pid_n * BLOCK_N + offs_c
        col_ok = offs_n < COUT
        y = _conv_rows_tile(
            xp_ptr, w_ptr, b_ptr, img, oh, ow, conv_ok, offs_n, col_ok, HP, WP_UNITS, COUT, stride_b,
            KS, STRIDE, CP, KROW, DOT_PRECISION, BLOCK_M, BLOCK_N, A_L1,
        ).to(out_ptr.dtype.element_ty)  # fmt: skip
        # Rounded before the max, as the conv's output would be: max and rounding commute.
        tl.store(slot_tile, tl.where(conv_ok[:, None], y, float("-inf")))
        tl.debug_barrier()  # the whole patch is in the slot before any thread reads it back
        ph = th * TILE_P + pi
        pw = tw * TILE_Q + pj
        p_ok = (offs_p < TILE_P * TILE_Q) & (ph < PH) & (pw < PW)
        pooled = tl.full((BLOCK_P, BLOCK_N), float("-inf"), dtype=tl.float32)
        for dh in tl.static_range(POOL_K):
            for dw in tl.static_range(POOL_K):
                tap = (pi * POOL_S + dh) * CW + pj * POOL_S + dw
                v = tl.load(slot + tap[:, None] * BLOCK_N + offs_c[None, :], mask=p_ok[:, None], other=float("-inf"))
                pooled = tl.maximum(pooled, v.to(tl.float32), propagate_nan=tl.PropagateNan.ALL)
        o_row = row_offsets(img, ph, pw, stride_out_n, stride_out_h, stride_out_w)
        tl.store(
            out_ptr + o_row[:, None] + offs_n.to(tl.int64)[None, :] * stride_out_c,
            pooled.to(out_ptr.dtype.element_ty),
            mask=p_ok[:, None] & col_ok[None, :],
        )
        tl.debug_barrier()  # every thread is done reading the slot before the next tile writes it


# conv1 has COUT = 64: one column tile.  128- and 256-row tiles for large batches, 64 rows so that
# batch 1 (112x112 = 12544 pixels) still covers the SMs; stages 3-4 pipeline the 7 kernel rows.
# Pipelined, the rows load as 16-byte cp.async copies, which bypass L1: each input element is read
# from L2 by every output pixel whose window covers it (about 13 times over at stride 2).  The
# last two load them through L1, where neighbouring pixels' overlapping rows hit: in 8-byte
# copies (A_L1), still pipelined, or not pipelined (plain vector loads, four programs an SM to
# hide the latency).
CONFIGS = [
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "A_L1": 0}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "A_L1": 0}, num_warps=8, num_stages=4),
    triton.Config({"BLOCK_M": 256, "BLOCK_N": 64, "A_L1": 0}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "A_L1": 0}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "A_L1": 1}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "A_L1": 0}, num_warps=4, num_stages=1),
]
INTERPRETER_CONFIG = {"BLOCK_M": 32, "BLOCK_N": 32, "A_L1": 1}
# The padded copy: one row chunk of 1024 elements a program (an xp row of conv1 is 920), no loop.
PAD_CONFIG = triton.Config({"BLOCK": 1024}, num_warps=4, num_stages=3)

AUTOTUNE_KEY = ["M", "OH", "OW", "HP", "WP_UNITS", "COUT", "KS", "STRIDE", "CP", "KROW", "DOT_PRECISION"]


def _with_defaults(kwargs: dict) -> dict:
    """A config's kwargs with A_L1 (0 where absent: 16-byte row copies)."""
    return {"A_L1": 0, **kwargs}


def make_tuned_kernel(configs=CONFIGS, **autotune_kwargs):
    """The autotuned kernel."""
    configs = [_common.completed_config(c, _with_defaults) for c in configs]
    return triton.autotune(configs=configs, key=AUTOTUNE_KEY, **autotune_kwargs)(_conv_rows_kernel)


_tuned_kernel = None if _common.INTERPRET else make_tuned_kernel(cache_results=True, do_bench=_common.autotune_bench)

# The pooled form's tiles, each for any pool up to geometry.ROWS_POOL_MAX, 3x3 with a stride of 2
# (the patch of conv pixels, ((TILE_P - 1) * 2 + 3) x ((TILE_Q - 1) * 2 + 3), fits BLOCK_M): 7x8
# pooled pixels from a 15x17 patch (255 of 256 rows; 14% of the conv computed twice, by
# neighbouring tiles), 5x5 from 11x11 (121 of 128), and 3x3 from 7x7 (49 of 64) so that batch 1
# (56x56 pooled) still has a few hundred tiles.  PROGRAMS_PER_SM: as many as fit an SM's 64K
# registers (sm_90, bf16: 190, 184-192 and 122-124 registers a thread; where fewer fit, as in
# fp32, the programs past them wait for a free SM: none depends on another).  The last config is
# the 5x5 tile with its rows through L1 in 8-byte copies (A_L1), as in CONFIGS.
POOL_CONFIGS = [
    triton.Config(
        {"TILE_P": 7, "TILE_Q": 8, "BLOCK_M": 256, "BLOCK_P": 64, "BLOCK_N": 64, "PROGRAMS_PER_SM": 1, "A_L1": 0},
        num_warps=8,
        num_stages=3,
    ),
    triton.Config(
        {"TILE_P": 5, "TILE_Q": 5, "BLOCK_M": 128, "BLOCK_P": 32, "BLOCK_N": 64, "PROGRAMS_PER_SM": 2, "A_L1": 0},
        num_warps=4,
        num_stages=3,
    ),
    triton.Config(
        {"TILE_P": 3, "TILE_Q": 3, "BLOCK_M": 64, "BLOCK_P": 16, "BLOCK_N": 64, "PROGRAMS_PER_SM": 4, "A_L1": 0},
        num_warps=4,
        num_stages=3,
    ),
    triton.Config(
        {"TILE_P": 5, "TILE_Q": 5, "BLOCK_M": 128, "BLOCK_P": 32, "BLOCK_N": 64, "PROGRAMS_PER_SM": 2, "A_L1": 1},
        num_warps=4,
        num_stages=3,
    ),
]
# Under the interpreter: one small tile, three programs (so each strides over several tiles and
# reuses its scratch slot), two column tiles where COUT > 32.
POOL_INTERPRETER_CONFIG = {
    "TILE_P": 3,
    "TILE_Q": 3,
    "BLOCK_M": 64,
    "BLOCK_P": 16,
    "BLOCK_N": 32,
    "PROGRAMS_PER_SM": 1,
    "A_L1": 1,
}
INTERPRETER_PROGRAMS = 3

POOL_AUTOTUNE_KEY = [
    "N",
    "OH",
    "OW",
    "PH",
    "PW",
    "HP",
    "WP_UNITS",
    "COUT",
    "KS",
    "STRIDE",
    "CP",
    "KROW",
    "DOT_PRECISION",
    "POOL_K",
    "POOL_S",
    "POOL_PAD",
]


def make_tuned_pool_kernel(configs=POOL_CONFIGS, **autotune_kwargs):
    """The autotuned pooled kernel."""
    configs = [_common.completed_config(c, _with_defaults) for c in configs]
    return triton.autotune(configs=configs, key=POOL_AUTOTUNE_KEY, **autotune_kwargs)(_conv_rows_pool_kernel)


_tuned_pool_kernel = (
    None if _common.INTERPRET else make_tuned_pool_kernel(cache_results=True, do_bench=_common.autotune_bench)
)


def supported(x: torch.Tensor, w: torch.Tensor, stride: int, padding: int) -> bool:
    """Whether this kernel takes the conv: a square kernel over at most 8 input channels whose
    padded kernel row (KS * CP) fits MAX_KROW, stride >= 1, padding >= 0."""
    if x.dim() != 4 or w.dim() != 4 or w.shape[2] != w.shape[3] or w.shape[1] != x.shape[1]:
        return False
    cin, ks = w.shape[1], w.shape[-1]
    return cin <= 8 and stride >= 1 and padding >= 0 and rows_length(ks, rows_channels(cin, stride)) <= MAX_KROW


def padded_input_shape(n: int, cin: int, h: int, w: int, ks: int, stride: int, padding: int) -> tuple:
    """(N, HP, WP, CP) of xp for an (n, cin, h, w) input: every window of the conv (and the KROW
    elements the kernel loads from its start) inside, WP even."""
    cp = rows_channels(cin, stride)
    oh, ow = geometry.conv_out(h, ks, stride, padding), geometry.conv_out(w, ks, stride, padding)
    hp = max(h + 2 * padding, stride * (oh - 1) + ks)
    wp = max(w + 2 * padding, stride * (ow - 1) + rows_length(ks, cp) // cp)
    return n, hp, wp + wp % 2, cp


def _new_buffer(shape, x, memory_format=torch.contiguous_format):
    """The padded input and the output (one place, so tests can poison them)."""
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=memory_format)


def _prepare(x, w, stride, padding, w_rows):
    """The checks and the padded copy both kernels share: (sizes, xp, w_rows, pad launch), sizes =
    (n, cout, ks, oh, ow, hp, wp, cp, krow), pad launch = (grid, args, constexprs but PAD_CONFIG's)."""
    _common.check_dtype(x.dtype)
    if not supported(x, w, stride, padding):
        raise ValueError(
            f"the Triton row conv takes a square kernel over at most 8 channels with a kernel row of at "
            f"most {MAX_KROW} padded elements, got weight {tuple(w.shape)} for input {tuple(x.shape)}, stride {stride}"
        )
    n, cin, h, wd = x.shape
    cout, ks = w.shape[0], w.shape[-1]
    oh, ow = geometry.conv_out(h, ks, stride, padding), geometry.conv_out(wd, ks, stride, padding)
    if min(oh, ow) < 1:
        raise ValueError(f"input {h}x{wd} is too small for a {ks}x{ks}/{stride} conv (padding {padding})")
    geometry.check_pixel_rows(n * oh * ow, "N*OH*OW")
    _, hp, wp, cp = padded_input_shape(n, cin, h, wd, ks, stride, padding)
    krow = rows_length(ks, cp)
    # A packing's shape tells its channel count apart except where both counts give the same row
    # length (kernels of at most 2x2): there a given w_rows could be another stride's, so pack here.
    if w_rows is None or rows_length(ks, 4) == rows_length(ks, 8):
        w_rows = pack_conv_rows(w, stride)
    elif w_rows.shape != (ks, krow, cout) or w_rows.dtype != x.dtype or w_rows.device != x.device:
        raise ValueError(
            f"w_rows must be the weight packed by packing.pack_conv_rows: ({ks}, {krow}, {cout}) in "
            f"{x.dtype} on {x.device}, got {tuple(w_rows.shape)} in {w_rows.dtype} on {w_rows.device}"
        )
    xp = _new_buffer((n, hp, wp, cp), x)
    pad = (
        (n * hp, _common.cdiv(wp * cp, PAD_CONFIG.kwargs["BLOCK"])),
        (x, xp, h, wd, hp, wp, *x.stride()),
        {"CIN": cin, "CP": cp, "PAD": padding},
    )
    return (n, cout, ks, oh, ow, hp, wp, cp, krow), xp, w_rows.contiguous(), pad


def _conv_meta(x, ks, stride, cp, krow) -> dict:
    return {"KS": ks, "STRIDE": stride, "CP": cp, "KROW": krow, "DOT_PRECISION": _common.dot_precision(x.dtype)}


def _arguments(x, w, b, stride, padding, w_rows=None):
    """((pad grid, pad args, pad constexprs but PAD_CONFIG's), conv args, conv constexprs, conv
    grid(meta), out)."""
    (n, cout, ks, oh, ow, hp, wp, cp, krow), xp, w_rows, pad = _prepare(x, w, stride, padding, w_rows)
    m = n * oh * ow
    out = _new_buffer((n, cout, oh, ow), x, torch.channels_last)
    args = (xp, w_rows, b, out, m, oh, ow, hp, wp * cp // 8, cout, b.stride(0), *out.stride())

    def grid(cfg):
        return (_common.cdiv(m, cfg["BLOCK_M"]) * _common.cdiv(cout, cfg["BLOCK_N"]),)

    return pad, args, _conv_meta(x, ks, stride, cp, krow), grid, out


def _launch_pad(pad) -> None:
    grid, args, meta = pad
    options = {"num_warps": PAD_CONFIG.num_warps, "num_stages": PAD_CONFIG.num_stages}
    _common.launch(_pad_kernel, grid, *args, **meta, **PAD_CONFIG.kwargs, **options)


def _pool_arguments(x, w, b, stride, padding, pool, w_rows=None, config=None):
    """(pad launch, args, constexprs, grid(meta), out) for _conv_rows_pool_kernel; ``pool`` =
    (kernel, stride, padding, ceil_mode); the scratch slots cover the pinned ``config``, else every
    config the autotuner may run."""
    pool_kernel, pool_stride, pool_padding, ceil_mode = pool
    if not 0 <= 2 * pool_padding <= pool_kernel:
        raise ValueError(f"a max pool's padding must be at most half its kernel, got {pool_padding} for {pool_kernel}")
    if not geometry.rows_pool_fits(pool_kernel, pool_stride):
        k, s = geometry.ROWS_POOL_MAX
        raise ValueError(
            f"the Triton row conv's pooled form takes a max pool of at most {k}x{k} with a stride of at "
            f"most {s}, got {pool_kernel}x{pool_kernel} with stride {pool_stride}"
        )
    (n, cout, ks, oh, ow, hp, wp, cp, krow), xp, w_rows, pad = _prepare(x, w, stride, padding, w_rows)
    ph, pw = (geometry.pool_out(size, pool_kernel, pool_stride, pool_padding, ceil_mode) for size in (oh, ow))
    if min(ph, pw) < 1:
        raise ValueError(
            f"a {oh}x{ow} conv output is too small for a {pool_kernel}x{pool_kernel}/{pool_stride} max pool"
        )
    out = _new_buffer((n, cout, ph, pw), x, torch.channels_last)
    # The persistent grid: PROGRAMS_PER_SM programs per SM (INTERPRETER_PROGRAMS in place of the
    # SMs off a GPU), never more than the tiles.
    sms = _common.sm_count(x.device) if x.device.type == "cuda" else INTERPRETER_PROGRAMS

    def grid(cfg):
        tiles = (
            n * _common.cdiv(ph, cfg["TILE_P"]) * _common.cdiv(pw, cfg["TILE_Q"]) * _common.cdiv(cout, cfg["BLOCK_N"])
        )
        return (min(sms * cfg["PROGRAMS_PER_SM"], tiles),)

    # The tiles that may run: the pinned one, else the interpreter's or every config's.
    if config is not None:
        tiles = [config.kwargs]
    else:
        tiles = [POOL_INTERPRETER_CONFIG] if _common.INTERPRET else [c.kwargs for c in POOL_CONFIGS]
    scratch = _new_buffer((max(grid(t)[0] * t["BLOCK_M"] * t["BLOCK_N"] for t in tiles),), x)
    args = (xp, w_rows, b, out, scratch, n, oh, ow, ph, pw, hp, wp * cp // 8, cout, b.stride(0), *out.stride())
    meta = {
        **_conv_meta(x, ks, stride, cp, krow),
        "POOL_K": pool_kernel,
        "POOL_S": pool_stride,
        "POOL_PAD": pool_padding,
    }
    return pad, args, meta, grid, out


def launch_conv_rows(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    stride: int,
    padding: int,
    config: Optional[triton.Config] = None,
    w_rows: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """relu(conv2d(x, w, b, stride=stride, padding=padding)) in two launches (the padded copy of x,
    then the conv), returned channels_last.  x (N, Cin, H, W) and w (Cout, Cin, k, k) in any
    strides; ``w_rows``: w already packed (packing.pack_conv_rows), else packed here.  ``config``
    skips autotuning."""
    pad, args, meta, grid, out = _arguments(x, w, b, stride, padding, w_rows)
    if out.numel() > 0:  # CUDA rejects an empty grid
        _launch_pad(pad)
        _common.launch_configured(
            _conv_rows_kernel, _tuned_kernel, grid, args, meta, config, INTERPRETER_CONFIG, config_kwargs=_with_defaults
        )
    return out


def launch_conv_rows_pool(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    stride: int,
    padding: int,
    pool_kernel: int,
    pool_stride: int,
    pool_padding: int,
    ceil_mode: bool,
    config: Optional[triton.Config] = None,
    w_rows: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """max_pool2d(relu(conv2d(x, w, b, stride, padding)), pool_kernel, pool_stride, pool_padding,
    ceil_mode) in two launches (the padded copy of x, then the conv with the pool in its epilogue),
    returned channels_last; the conv's output is never written.  ``w_rows`` and ``config`` (one of
    POOL_CONFIGS) as for launch_conv_rows."""
    pool = (pool_kernel, pool_stride, pool_padding, ceil_mode)
    pad, args, meta, grid, out = _pool_arguments(x, w, b, stride, padding, pool, w_rows, config)
    if out.numel() > 0:  # CUDA rejects an empty grid
        _launch_pad(pad)
        _common.launch_configured(
            _conv_rows_pool_kernel,
            _tuned_pool_kernel,
            grid,
            args,
            meta,
            config,
            POOL_INTERPRETER_CONFIG,
            config_kwargs=_with_defaults,
        )
    return out
