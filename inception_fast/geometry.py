"""Block geometry: what every layer derives from packed weights and input shapes.

* ``block_channels``: a block's channel counts, read from its packed weights (layouts in
  ``inception_fast.backends``);
* ``empty_outputs``: the block output and the scratch of the two reductions, channels_last;
  ``empty_pre_bn`` / ``pre_bn_pieces`` / ``bn_train_buffers``: the same for the train-mode
  BatchNorm block (its pre-BN activations and batch statistics);
* ``conv_out`` / ``pool_out``: PyTorch's output-size rules;
* ``foldable``, ``rows_pool_fits`` (``ROWS_POOL_MAX``), ``branch_kernels_reason``: which pools the
  Triton kernels take in their loads or epilogue, and which branch kernels launch 2 takes;
* ``check_pixel_rows`` / ``check_block_pixels`` / ``check_int32_offsets`` (``TAP_REACH``): the
  kernels' 32-bit index limits;
* ``rows``: a channels_last tensor as its [N*H*W, C] GEMM view;
* ``suggests_channels_last`` / ``channels_last_input``: the layout ATen's convolutions give an
  input's results, and an input taken into channels_last with its gradient in its own layout.

No dependency on the rest of the package: every layer may import it.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch._prims_common import suggest_memory_format

__all__ = [
    "BlockChannels",
    "block_channels",
    "empty_outputs",
    "empty_pre_bn",
    "pre_bn_pieces",
    "conv_out",
    "pool_out",
    "foldable",
    "branch_kernels_reason",
    "PIXEL_ROW_LIMIT",
    "suggests_channels_last",
    "channels_last_input",
    "check_pixel_rows",
    "TAP_REACH",
    "check_int32_offsets",
    "rows",
    "bn_train_buffers",
]


class BlockChannels(NamedTuple):
    ch1: int  # branch 1 (1x1)
    ch3red: int  # branch 2's 1x1 reduction
    ch5red: int  # branch 3's 1x1 reduction
    ch3: int  # branch 2's 3x3
    ch5: int  # branch 3's k×k
    pool_proj: int  # branch 4's 1x1 after the max pool

    @property
    def total(self) -> int:
        """Channels of the block output: the four branches side by side."""
        return self.ch1 + self.ch3 + self.ch5 + self.pool_proj

    @property
    def reductions(self) -> int:
        """Channels of the scratch: the two reductions side by side."""
        return self.ch3red + self.ch5red


def block_channels(w_red: torch.Tensor, w_pool: torch.Tensor, w3: torch.Tensor, w5: torch.Tensor) -> BlockChannels:
    """The channel counts of a block, from its packed weights: w_red stacks branch 1 and the two
    reductions, so branch 1 is what the 3x3 and k×k inputs leave of it."""
    ch3, ch3red = w3.shape[0], w3.shape[1]
    ch5, ch5red = w5.shape[0], w5.shape[1]
    return BlockChannels(w_red.shape[0] - ch3red - ch5red, ch3red, ch5red, ch3, ch5, w_pool.shape[0])


def empty_outputs(x: torch.Tensor, w_red, w_pool, w3, w5, hw=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, scratch), uninitialised, channels_last, on x's device and in x's dtype:
    out (N, ch1+ch3+ch5+pool_proj, H, W) and scratch (N, ch3red+ch5red, H, W), H x W x's own or
    ``hw`` (the pooled size, for a block that pools its input first).

    Every backend allocates through this function (called as ``geometry.empty_outputs``), so tests
    can poison both buffers in one place."""
    channels = block_channels(w_red, w_pool, w3, w5)
    n, _, h, w = x.shape
    if hw is not None:
        h, w = hw
    cl = torch.channels_last
    out = torch.empty((n, channels.total, h, w), dtype=x.dtype, device=x.device, memory_format=cl)
    scratch = torch.empty((n, channels.reductions, h, w), dtype=x.dtype, device=x.device, memory_format=cl)
    return out, scratch


def empty_pre_bn(x: torch.Tensor, channels: int) -> torch.Tensor:
    """A flat buffer of N*H*W*channels elements, uninitialised, x's dtype and device: every conv's
    output before its train-mode BatchNorm (``inception_fast::inception_block_bn_train``), as the
    contiguous [N*H*W, c] pieces of ``pre_bn_pieces``.  Allocated here, like ``empty_outputs``, so
    tests can poison it."""
    n, _, h, w = x.shape
    return torch.empty(n * h * w * channels, dtype=x.dtype, device=x.device)


def pre_bn_pieces(pre: torch.Tensor, rows: int, widths) -> list:
    """The flat pre-BN buffer as consecutive contiguous [rows, c] matrices, one per width in ``widths``
    (NHWC pixel rows: the three 1x1s together, the 3x3, the kxk, the pool projection).  Contiguous
    pieces, not channel slices of one NHWC tensor: ATen's batch-norm backward and the GEMMs run
    several times faster on them."""
    pieces, start = [], 0
    for c in widths:
        pieces.append(pre[start : start + rows * c].view(rows, c))
        start += rows * c
    return pieces


def bn_train_buffers(x: torch.Tensor, w_red, w_pool, w3, w5) -> tuple:
    """``inception_block_bn_train``'s buffers, uninitialised: (out, scratch, pre, pieces), ``pieces``
    the pre-BN [N*H*W, c] matrices of ``pre`` in the op's channel order (the three 1x1s together,
    the 3x3, the kxk, the pool projection)."""
    _, _, _, ch3, ch5, pool = block_channels(w_red, w_pool, w3, w5)
    widths = (w_red.shape[0], ch3, ch5, pool)
    out, scratch = empty_outputs(x, w_red, w_pool, w3, w5)
    pre = empty_pre_bn(x, sum(widths))
    return out, scratch, pre, pre_bn_pieces(pre, x.shape[0] * x.shape[2] * x.shape[3], widths)


def pool_out(size: int, k: int, s: int, p: int, ceil: bool) -> int:
    """PyTorch's pooling output size (aten pooling_output_shape), dilation 1."""
    out = (size + 2 * p - (k - 1) - 1 + (s - 1 if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= size + p:
        out -= 1
    return out


def foldable(kernel: int, stride: int, padding: int) -> Optional[str]:
    """None where a kernel x kernel / stride max pool with ``padding`` folds into the next block's
    launch 1 (the Triton ``pooled_inception_block``), else why not.  The block's own 3x3/s1/p1 pool
    of the pooled map is then a max over one contiguous range of input rows (and columns) only
    where consecutive pool windows overlap or touch (stride <= kernel); the kernel unrolls nothing
    but keeps the window small (kernel 2 or 3, stride at most 2)."""
    if not (1 < kernel <= 3 and 1 <= stride <= min(kernel, 2) and 0 <= 2 * padding <= kernel):
        return (
            f"a {kernel}x{kernel}/{stride} max pool with padding {padding} does not fold into launch 1 "
            "(kernel 2 or 3, stride at most min(kernel, 2), padding at most half the kernel)"
        )
    return None


# The largest max pool (kernel, stride) the pooled form of backends/triton/conv_rows.py takes into
# its epilogue: its tiles' patches of conv pixels are sized for it.
ROWS_POOL_MAX = (3, 2)


def branch_kernels_reason(w3: torch.Tensor, w5: torch.Tensor) -> Optional[str]:
    """None where the Triton launch 2 takes the block's branch weights (branch 2 a 3x3 conv,
    branch 3 a square conv of odd size), else why not."""
    if tuple(w3.shape[-2:]) != (3, 3):
        return f"branch 2 must be a 3x3 conv, got weight shape {tuple(w3.shape)}"
    k5 = w5.shape[-1]
    if k5 % 2 == 0 or w5.shape[-2] != k5:
        return f"branch 3 must be a square conv of odd size, got weight shape {tuple(w5.shape)}"
    return None


def rows_pool_fits(kernel: int, stride: int) -> bool:
    """Whether a kernel x kernel / stride max pool goes into the row conv's epilogue (ROWS_POOL_MAX)."""
    return 1 <= kernel <= ROWS_POOL_MAX[0] and 1 <= stride <= ROWS_POOL_MAX[1]


def conv_out(size: int, k: int, s: int, p: int) -> int:
    """A convolution's output size, dilation 1."""
    return (size + 2 * p - k) // s + 1


# The Triton kernels index pixel rows (N*H*W) with 32 bits; a tile past the last row must fit too.
PIXEL_ROW_LIMIT = 2**31 - 1024


def suggests_channels_last(x: torch.Tensor) -> bool:
    """Whether ATen's convolutions return channels_last results for ``x``: dense channels_last, or
    a view whose strides are ordered as channels_last's (a channel or spatial slice of one; ATen's
    suggest_memory_format)."""
    if x.is_contiguous():
        return False
    return x.is_contiguous(memory_format=torch.channels_last) or suggest_memory_format(x) == torch.channels_last


class _ChannelsLast(torch.autograd.Function):
    """x as channels_last; its gradient contiguous."""

    @staticmethod
    def forward(ctx, x):
        return x.contiguous(memory_format=torch.channels_last)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous()


def channels_last_input(x: torch.Tensor, suggested: Optional[bool] = None) -> torch.Tensor:
    """``x`` as channels_last, for a computation that runs in that layout where ATen's convolutions
    would take ``x`` as it is: a gradient for an ``x`` they would not treat as channels_last comes
    back contiguous, as their input gradient does (``.contiguous(memory_format=...)`` alone would
    hand back the channels_last one, which ``.view`` cannot flatten).  ``suggested``:
    ``suggests_channels_last(x)`` where the caller has it already."""
    if (
        x.requires_grad
        and torch.is_grad_enabled()
        and not (suggests_channels_last(x) if suggested is None else suggested)
    ):
        return _ChannelsLast.apply(x)
    return x.contiguous(memory_format=torch.channels_last)


def rows(t: torch.Tensor) -> torch.Tensor:
    """A channels_last (N, C, H, W) tensor as its [N*H*W, C] GEMM view: no copy for a channels_last
    tensor (reshape copies any other layout)."""
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])


def check_block_pixels(x: torch.Tensor) -> None:
    """Raises where a block input (N, C, H, W) has no pixels to compute: height or width 0."""
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"Inception block needs an input of at least 1x1 pixels, got shape {tuple(x.shape)}")


def check_pixel_rows(rows: int, what: str = "N*H*W") -> None:
    """Raises where ``rows`` pixel rows are too many for 32-bit pixel indices."""
    if rows >= PIXEL_ROW_LIMIT:
        raise ValueError(f"the Triton kernels index pixels with 32 bits; {what} = {rows} is too large")


# The most rows or columns a Triton kernel steps from a pixel's 64-bit offset with a 32-bit product
# (stride x step): a conv's KS // 2 (KS up to 17), a folded pool's window (up to 7 taps).  A
# stride of 2^31 or more reaches the kernel, and its products, as 64-bit; smaller ones stay 32-bit.
TAP_REACH = 8


def check_int32_offsets(t: torch.Tensor) -> None:
    """Raises where a 4-D (N, C, H, W) tensor's channel, row or column stride is passed to the
    Triton kernels as 32-bit (below 2^31) but its largest product there is not: (C - 1) channel
    steps, or TAP_REACH rows or columns."""
    c = t.shape[1]
    _, s_c, s_h, s_w = t.stride()
    for what, stride, steps in (("channel", s_c, c - 1), ("row", s_h, TAP_REACH), ("column", s_w, TAP_REACH)):
        if stride < 2**31 and stride * steps >= 2**31:
            hint = "; a channels_last copy has channel stride 1" if what == "channel" else ""
            raise ValueError(
                f"the Triton kernels step a tensor of shape {tuple(t.shape)} and strides {t.stride()} with "
                f"32-bit {what} offsets: {steps} x its {what} stride {stride} passes 2^31{hint}"
            )
