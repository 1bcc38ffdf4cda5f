"""The "torch" backend: every op from ATen ops, the block arranged like the kernels.

The universal fallback, and on CPU what the modules run where "onednn" does not (gradients,
torch.export, float16; a CPU without oneDNN).  The three input-reading 1x1 convs are ONE
GEMM (addmm) on the NHWC input viewed as [N*H*W, Cin]; the pool branch's 1x1 is an
addmm whose output IS its channel slice of the block output.  ATen convolutions
cannot store into a strided channel slice, so the 3x3 / k×k results and branch 1
are copied into their slices (still no torch.cat and no second full-size output).

``block_backward`` (op ``inception_block_backward``) is the block's gradient as a chain of ATen
calls: one ReLU mask from the saved output for all four branches, ``convolution_backward`` for
the 3x3 and k×k, the three 1x1 input gradients as one GEMM of the packed reduction gradients
against the packed weights, and the pool branch through ATen's max-pool backward (the argmax
recomputed from the saved input).  The "cpp", "cuda", "onednn", "hopper" and "hopper_tma2"
backends register it as theirs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import geometry
from .registry import Backend, register


def _unavailable_reason(device: torch.device):
    return None


def block_forward(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5):
    ch1, ch3red, ch5red, ch3, ch5, pool = geometry.block_channels(w_red, w_pool, w3, w5)
    out, scratch = geometry.empty_outputs(x, w_red, w_pool, w3, w5)
    x2d, out2d = geometry.rows(x), geometry.rows(out)
    red = torch.addmm(b_red, x2d, w_red.t()).relu_()
    out2d[:, :ch1].copy_(red[:, :ch1])
    geometry.rows(scratch).copy_(red[:, ch1:])
    red3, red5 = scratch[:, :ch3red], scratch[:, ch3red:]
    k3, k5 = w3.shape[-1], w5.shape[-1]
    out[:, ch1 : ch1 + ch3].copy_(F.conv2d(red3, w3, b3, padding=k3 // 2).relu_())
    out[:, ch1 + ch3 : ch1 + ch3 + ch5].copy_(F.conv2d(red5, w5, b5, padding=k5 // 2).relu_())
    pooled = F.max_pool2d(x, 3, 1, 1)
    pool_slice = out2d[:, ch1 + ch3 + ch5 :]
    torch.addmm(b_pool, geometry.rows(pooled), w_pool.t(), out=pool_slice)
    pool_slice.relu_()
    return out, scratch


def pooled_block_forward(x, kernel, stride, padding, ceil_mode, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5):
    """The block on max_pool2d(x, ...): ATen's pool, then ``block_forward`` (the reference semantics
    of op ``pooled_inception_block``)."""
    pooled = F.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode).contiguous(memory_format=torch.channels_last)
    return block_forward(pooled, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5)[0]


def chain_forward(x, blocks, pre_pool=None):
    """The last block's output of consecutive blocks (op ``inception_chain``'s reference
    semantics): each block in turn, the first on max_pool2d(x, *pre_pool) where one is given."""
    if pre_pool is not None:
        x = pooled_block_forward(x, *pre_pool, *blocks[0])
        blocks = blocks[1:]
    for block in blocks:
        x = block_forward(x, *block)[0]
    return x


def batch_stats(y2d):
    """(mean, biased variance) per column of an [M, C] view, in float32 (float64 for float64): two
    passes, the column sums and then the sums of squared deviations from the mean (ATen's var_mean
    over the outer dim takes a scalar Welford path on CPU, ~10x slower)."""
    y = y2d.to(torch.promote_types(y2d.dtype, torch.float32))
    mean = y.sum(0) / y.shape[0]
    return mean, (y - mean).square_().sum(0) / y.shape[0]


def bn_relu_into(dest, y2d, gamma, beta, mean, var, eps):
    """dest = relu((y - mean) * gamma / sqrt(var + eps) + beta), per column of the [M, C] views, in
    one multiply-add pass and one in-place ReLU (dest is a strided slice of the block output)."""
    scale = gamma.to(var.dtype) * torch.rsqrt(var + eps)
    shift = beta.to(var.dtype) - mean * scale
    torch.addcmul(shift, y2d, scale, out=dest)
    dest.relu_()


def block_bn_train_forward(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, gamma, beta, eps):
    """inception_block_bn_train (see inception_fast.ops): the three 1x1s as ONE GEMM into their piece
    of ``pre``, the pool projection as one GEMM into its piece, batch statistics per column, then
    normalise + ReLU from ``pre`` straight into the slices of ``out`` and ``scratch``."""
    ch1, ch3red, ch5red, ch3, ch5, pool = geometry.block_channels(w_red, w_pool, w3, w5)
    n_red = w_red.shape[0]
    out, scratch, pre, (y_red, y3, y5, y_pool) = geometry.bn_train_buffers(x, w_red, w_pool, w3, w5)
    means, variances = [], []
    x2d, out2d, scr2d = geometry.rows(x), geometry.rows(out), geometry.rows(scratch)

    def norm(y2d, col0, dests):
        mean, var = batch_stats(y2d)
        means.append(mean)
        variances.append(var)
        sl = slice(col0, col0 + y2d.shape[1])
        g, b = gamma[sl], beta[sl]
        for dest, cols in dests:
            bn_relu_into(dest, y2d[:, cols], g[cols], b[cols], mean[cols], var[cols], eps)

    torch.addmm(b_red, x2d, w_red.t(), out=y_red)
    norm(y_red, 0, [(out2d[:, :ch1], slice(0, ch1)), (scr2d, slice(ch1, n_red))])
    col0 = n_red
    for y2d, dest0, inp, wgt, bias in (
        (y3, ch1, scratch[:, :ch3red], w3, b3),
        (y5, ch1 + ch3, scratch[:, ch3red:], w5, b5),
    ):
        k = wgt.shape[-1]
        y2d.copy_(geometry.rows(F.conv2d(inp, wgt, bias, padding=k // 2)))
        norm(y2d, col0, [(out2d[:, dest0 : dest0 + y2d.shape[1]], slice(None))])
        col0 += y2d.shape[1]
    torch.addmm(b_pool, geometry.rows(F.max_pool2d(x, 3, 1, 1)), w_pool.t(), out=y_pool)
    norm(y_pool, col0, [(out2d[:, ch1 + ch3 + ch5 :], slice(None))])
    return out, scratch, pre, torch.cat(means), torch.cat(variances)


def conv_relu_maxpool(x, w, b, stride, padding, pool_kernel, pool_stride, pool_padding, ceil_mode, w_rows=None):
    y = F.conv2d(x, w, b, stride=stride, padding=padding).relu_()
    if (pool_kernel, pool_stride) != (1, 1):  # a 1x1 pool with stride 2 still subsamples
        y = F.max_pool2d(y, pool_kernel, pool_stride, pool_padding, ceil_mode=ceil_mode)
    return y.contiguous(memory_format=torch.channels_last)


def conv_relu(x, w, b, padding, stride=1, w_rows=None):  # w_rows: the Triton row kernel's packing
    return F.conv2d(x, w, b, stride=stride, padding=padding).relu_().contiguous(memory_format=torch.channels_last)


def max_pool2d(x, kernel, stride, padding, ceil_mode):
    y = F.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode)
    return y.contiguous(memory_format=torch.channels_last)


def block_backward(grad_out, x, w_red, w_pool, w3, w5, out, scratch, need_input_grad):
    """(grad_x or None, gw_red, gb_red, gw_pool, gb_pool, gw3, gb3, gw5, gb5) of one block from the
    forward's saved input, packed weights, output and scratch (layouts in ``inception_fast.backends``)."""
    ch1, ch3red, ch5red, ch3, ch5, pool = geometry.block_channels(w_red, w_pool, w3, w5)
    n, cin, h, w = x.shape
    cl = torch.channels_last
    # Every branch ends in ReLU, so one mask from the saved output covers all four.  ReLU's
    # gradient as PyTorch's (threshold_backward): passed where the output is not <= 0 (NaN
    # included), and 0 where masked, selected, not multiplied (an Inf or NaN gradient stays out).
    relu_grad = torch.ops.aten.threshold_backward
    g = relu_grad(grad_out, out, 0).contiguous(memory_format=cl)
    g1, g3, g5, gp = torch.split(g, [ch1, ch3, ch5, pool], dim=1)
    red3, red5 = torch.split(scratch, [ch3red, ch5red], dim=1)

    def conv_grads(g_br, inp, wgt):
        k = wgt.shape[-1]
        return torch.ops.aten.convolution_backward(
            g_br, inp, wgt, [wgt.shape[0]], [1, 1], [k // 2, k // 2], [1, 1], False, [0, 0], 1, [True, True, True]
        )

    gr3, gw3, gb3 = conv_grads(g3, red3, w3)
    gr5, gw5, gb5 = conv_grads(g5, red5, w5)
    g_red_cols = torch.cat([g1, relu_grad(gr3, red3, 0), relu_grad(gr5, red5, 0)], dim=1)
    g_red2d = geometry.rows(g_red_cols.contiguous(memory_format=cl))
    x2d = geometry.rows(x)
    gw_red = g_red2d.t().mm(x2d)
    gb_red = g_red2d.sum(0)
    pooled, idx = F.max_pool2d_with_indices(x, 3, 1, 1)
    gp2d = geometry.rows(gp)
    gw_pool = gp2d.t().mm(geometry.rows(pooled.contiguous(memory_format=cl)))
    gb_pool = gp2d.sum(0)
    gx = None
    if need_input_grad:
        # The three 1x1 input gradients are one GEMM against the packed weights.
        gx = g_red2d.mm(w_red).reshape(n, h, w, cin).permute(0, 3, 1, 2)
        g_pooled = gp2d.mm(w_pool).reshape(n, h, w, cin).permute(0, 3, 1, 2)
        gx = gx + torch.ops.aten.max_pool2d_with_indices_backward(
            g_pooled, x, [3, 3], [1, 1], [1, 1], [1, 1], False, idx
        )
    return gx, gw_red, gb_red, gw_pool, gb_pool, gw3, gb3, gw5, gb5


def avgpool_linear(x, w, b):
    """The reference head's ATen ops (dropout is the identity in eval): adaptive_avg_pool2d to 1x1
    (ATen's mean over H and W), then addmm."""
    return F.linear(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1), w, b)


register(
    Backend(
        "torch",
        _unavailable_reason,
        {
            "inception_block": block_forward,
            "pooled_inception_block": pooled_block_forward,
            "inception_chain": chain_forward,
            "inception_block_backward": block_backward,
            "inception_block_bn_train": block_bn_train_forward,
            "conv_relu_maxpool": conv_relu_maxpool,
            "conv_relu": conv_relu,
            "max_pool2d": max_pool2d,
            "avgpool_linear": avgpool_linear,
        },
    )
)
