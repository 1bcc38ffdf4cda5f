"""Block test cases shared by the kernel tests: random packed weights and a plain-PyTorch block."""

from __future__ import annotations

import torch
import torch.nn.functional as F

CL = torch.channels_last
# (in, ch1, ch3red, ch3, ch5red, ch5, pool): fills no tile, no 16-byte chunk and no K block.
ODD = (13, 5, 7, 9, 3, 6, 4)
# Channel counts that are multiples of 8 but not of 16, as 4b/4c's (136-channel scratch, 24-channel
# branch-3 input, 296 packed reduce rows): the kernels' alignment units (row strides and channel
# counts passed divided by them, see backends/triton/_common.row_unit) come out at 8.
UNIT8 = (40, 24, 16, 24, 8, 16, 8)


def make_block(cfg, k5=3, n=1, h=5, w=5, dtype=torch.float32, device="cpu", seed=0):
    """Input and packed weights in the backend layout; weights scaled so activations stay O(1)."""
    cin, ch1, r3, c3, r5, c5, pool = cfg
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, fan_in=None):
        t = torch.randn(*shape, generator=g)
        return t * fan_in**-0.5 if fan_in else t * 0.2 + 0.05

    tensors = dict(
        x=torch.randn(n, cin, h, w, generator=g).contiguous(memory_format=CL),
        w_red=rnd(ch1 + r3 + r5, cin, fan_in=cin),
        b_red=rnd(ch1 + r3 + r5),
        w_pool=rnd(pool, cin, fan_in=cin),
        b_pool=rnd(pool),
        w3=rnd(c3, r3, 3, 3, fan_in=9 * r3).contiguous(memory_format=CL),
        b3=rnd(c3),
        w5=rnd(c5, r5, k5, k5, fan_in=k5 * k5 * r5).contiguous(memory_format=CL),
        b5=rnd(c5),
    )
    # .to() keeps the memory format, so w3/w5 stay (Cout, kh, kw, Cin) in memory.
    return {k: v.to(device=device, dtype=dtype) for k, v in tensors.items()}


def block_reference(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5):
    """(out, scratch) of the block from packed weights with plain PyTorch ops, in x's dtype."""
    r3, r5 = w3.shape[1], w5.shape[1]
    ch1 = w_red.shape[0] - r3 - r5
    red = F.relu(F.conv2d(x, w_red[:, :, None, None], b_red))
    y3 = F.relu(F.conv2d(red[:, ch1 : ch1 + r3], w3, b3, padding=1))
    y5 = F.relu(F.conv2d(red[:, ch1 + r3 :], w5, b5, padding=w5.shape[-1] // 2))
    yp = F.relu(F.conv2d(F.max_pool2d(x, 3, 1, 1), w_pool[:, :, None, None], b_pool))
    return torch.cat([red[:, :ch1], y3, y5, yp], 1), red[:, ch1:]


def block_reference64(block):
    """``block_reference`` of a make_block case (its input and weights) in float64."""
    return block_reference(**{k: v.double() for k, v in block.items()})
