"""geometry.py: the sizes, buffers, limits and layouts every layer derives from shapes.

Each rule is held against PyTorch's own where it has one (a convolution's output size, the
gradient layout of ATen's convolutions), and at the boundaries where the package sets its own
(which pools fold, which branch kernels launch 2 takes, the 32-bit pixel row limit).  The pool
output size has its own exhaustive test in test_stages.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from inception_fast import geometry
from inception_fast.testing import TOLERANCE, check_close

CL = torch.channels_last


def test_conv_out_is_atens_output_size():
    for size in range(1, 10):
        for k in range(1, 8):
            for s in range(1, 4):
                for p in range(0, k // 2 + 1):
                    want = geometry.conv_out(size, k, s, p)
                    if want < 1:
                        continue
                    got = F.conv2d(torch.zeros(1, 1, size, 1), torch.zeros(1, 1, k, 1), stride=(s, 1), padding=(p, 0))
                    assert got.shape[2] == want, (size, k, s, p)


def _packed(ch1=5, ch3red=4, ch5red=3, ch3=6, ch5=7, pool=2, cin=8, k5=5):
    """Weights in the packed layouts: w_red stacks branch 1 and the two reductions."""
    w_red = torch.zeros(ch1 + ch3red + ch5red, cin, 1, 1)
    w_pool = torch.zeros(pool, cin, 1, 1)
    w3 = torch.zeros(ch3, ch3red, 3, 3)
    w5 = torch.zeros(ch5, ch5red, k5, k5)
    return w_red, w_pool, w3, w5


def test_block_channels_and_its_buffers():
    w_red, w_pool, w3, w5 = _packed()
    ch = geometry.block_channels(w_red, w_pool, w3, w5)
    assert ch == geometry.BlockChannels(ch1=5, ch3red=4, ch5red=3, ch3=6, ch5=7, pool_proj=2)
    assert ch.total == 5 + 6 + 7 + 2 and ch.reductions == 4 + 3
    x = torch.zeros(2, 8, 5, 3, dtype=torch.float16)
    out, scratch = geometry.empty_outputs(x, w_red, w_pool, w3, w5)
    assert out.shape == (2, 20, 5, 3) and scratch.shape == (2, 7, 5, 3)
    for t in (out, scratch):
        assert t.dtype == torch.float16 and t.is_contiguous(memory_format=CL)
    out, scratch = geometry.empty_outputs(x, w_red, w_pool, w3, w5, hw=(2, 1))  # a block that pools first
    assert out.shape == (2, 20, 2, 1) and scratch.shape == (2, 7, 2, 1)
    # The train-mode BatchNorm buffers: the pre-BN [N*H*W, c] matrices one after the other in one
    # flat buffer, in the op's order (the three 1x1s, the 3x3, the kxk, the pool projection).
    out, scratch, pre, pieces = geometry.bn_train_buffers(x, w_red, w_pool, w3, w5)
    rows = 2 * 5 * 3
    widths = (12, 6, 7, 2)
    assert out.shape == (2, 20, 5, 3) and pre.numel() == rows * sum(widths)
    start = 0
    for piece, c in zip(pieces, widths):
        assert piece.shape == (rows, c) and piece.is_contiguous()
        assert piece.data_ptr() == pre.data_ptr() + start * pre.element_size()
        start += rows * c
    assert len(pieces) == 4


def test_branch_kernels_launch_2_takes():
    w_red, w_pool, w3, w5 = _packed()
    assert geometry.branch_kernels_reason(w3, w5) is None  # the paper's 5x5
    assert geometry.branch_kernels_reason(w3, torch.zeros(7, 3, 3, 3)) is None  # torchvision's 3x3
    assert geometry.branch_kernels_reason(w3, torch.zeros(7, 3, 1, 1)) is None
    refused = {
        "branch 2 must be a 3x3 conv, got weight shape (6, 4, 5, 5)": (torch.zeros(6, 4, 5, 5), w5),
        "branch 2 must be a 3x3 conv, got weight shape (6, 4, 3, 1)": (torch.zeros(6, 4, 3, 1), w5),
        "branch 3 must be a square conv of odd size, got weight shape (7, 3, 4, 4)": (w3, torch.zeros(7, 3, 4, 4)),
        "branch 3 must be a square conv of odd size, got weight shape (7, 3, 3, 5)": (w3, torch.zeros(7, 3, 3, 5)),
    }
    for message, (a, b) in refused.items():
        assert geometry.branch_kernels_reason(a, b) == message


@pytest.mark.parametrize(
    "kernel, stride, padding, folds",
    [
        (3, 2, 0, True),  # torchvision's maxpool3
        (2, 2, 0, True),  # its maxpool4
        (3, 2, 1, True),  # d2l's padded pools
        (3, 1, 1, True),
        (2, 1, 1, True),  # padding half the kernel
        (2, 2, 2, False),
        (3, 2, 2, False),
        (3, 3, 0, False),  # stride past 2
        (2, 3, 0, False),  # windows that do not touch
        (4, 2, 0, False),  # kernel past 3
        (1, 1, 0, False),
    ],
)
def test_which_pools_fold_into_launch_1(kernel, stride, padding, folds):
    why = geometry.foldable(kernel, stride, padding)
    assert (why is None) == folds, why
    if not folds:
        assert why.startswith(f"a {kernel}x{kernel}/{stride} max pool with padding {padding} does not fold")


def test_which_pools_the_row_conv_takes_and_the_pixel_row_limit():
    for (kernel, stride), fits in {(3, 2): True, (2, 2): True, (1, 1): True, (3, 1): True, (4, 2): False}.items():
        assert geometry.rows_pool_fits(kernel, stride) == fits, (kernel, stride)
    assert not geometry.rows_pool_fits(3, 3) and not geometry.rows_pool_fits(0, 1)
    geometry.check_pixel_rows(geometry.PIXEL_ROW_LIMIT - 1)
    with pytest.raises(ValueError, match=f"32 bits; N\\*OH\\*OW = {geometry.PIXEL_ROW_LIMIT} is too large"):
        geometry.check_pixel_rows(geometry.PIXEL_ROW_LIMIT, "N*OH*OW")


def test_rows_is_the_gemm_view_of_a_channels_last_tensor():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    want = x.permute(0, 2, 3, 1).reshape(-1, 3)
    cl = x.contiguous(memory_format=CL)
    view = geometry.rows(cl)
    assert view.shape == (40, 3) and torch.equal(view, want) and view.data_ptr() == cl.data_ptr()
    assert torch.equal(geometry.rows(x), want)  # any other layout: copied, same values


def test_channels_last_input_gives_the_gradient_in_atens_layout():
    """Where ATen's convolutions would take x as it is, the gradient flowing back into x's producer
    comes in their layout: contiguous for a contiguous x, channels_last for a channels_last one or a
    channel slice of one.  (Seen by a hook on a non-leaf x: a leaf's .grad is laid out like the leaf
    whatever arrives.)"""
    w = torch.randn(4, 3, 3, 3)
    for x, grad_cl in (
        (torch.randn(2, 3, 5, 5), False),
        (torch.randn(2, 3, 5, 5).contiguous(memory_format=CL), True),
        (torch.randn(2, 6, 5, 5).contiguous(memory_format=CL)[:, 1:4], True),
    ):
        assert geometry.suggests_channels_last(x) == grad_cl
        grads = []
        for ours in (True, False):
            mid = x.clone().requires_grad_() * 1.0  # keeps x's layout
            mid.register_hook(grads.append)
            F.conv2d(geometry.channels_last_input(mid) if ours else mid, w).sum().backward()
        mine, atens = grads
        assert mine.is_contiguous(memory_format=CL) == grad_cl == atens.is_contiguous(memory_format=CL)
        assert mine.is_contiguous() == (not grad_cl)
        check_close(mine, atens, TOLERANCE["fp32"], "input gradient")
    with torch.no_grad():  # no gradient to shape: the channels_last copy alone
        x = torch.randn(1, 3, 4, 4, requires_grad=True)
        assert geometry.channels_last_input(x).is_contiguous(memory_format=CL)
