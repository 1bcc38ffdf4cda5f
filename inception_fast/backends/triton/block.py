"""One Inception block's forward in exactly two Triton launches (the "triton" backend's
``inception_block`` kernel).

* ``launch_reduce_pool`` (reduce_pool.py, launch 1): the three input-reading 1x1 convs as one GEMM
  (branch 1 into its slice of ``out``, the reductions into ``scratch``) and the whole pool branch.
* ``launch_branch_convs`` (branch_convs.py, launch 2): branch 2's 3x3 and branch 3's kxk convs as
  implicit GEMMs over ``scratch``, each into its slice of ``out``.

``block_forward`` follows the backend contract in ``inception_fast.backends``;
``pooled_block_forward`` is the block on ``max_pool2d(x, ...)`` with that pool folded into launch 1
(its loads take the max on the fly, the pooled map is never stored), still two launches.
``block_forward_tma`` is the "hopper" backend's block: launch 1 with TMA (``reduce_pool_tma.py``)
where TMA can describe x and w_red, and launch 2 with TMA (``branch_convs_tma.py``) where it can
describe scratch and the weights; each launch falls back to the plain one on its own.  With
``tma_launch1=False`` it is the "hopper_tma2" backend's: the plain launch 1, launch 2 with TMA.
Importing this module imports triton (so set TRITON_INTERPRET=1 first to run it on CPU) but queries no device.
"""

from __future__ import annotations

import contextlib

import torch

from ... import geometry
from ._common import INTERPRET, check_dtype, launch_count
from .branch_convs import launch_branch_convs, split_k_counters
from .reduce_pool import launch_reduce_pool

__all__ = [
    "block_forward",
    "block_forward_tma",
    "pooled_block_forward",
    "launch_reduce_pool",
    "launch_branch_convs",
    "launch_count",
    "INTERPRET",
]


def block_forward(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, pre_pool=None):
    """(out, scratch) of one block from packed weights, in two Triton launches and no other kernel.
    ``pre_pool`` (kernel, stride, padding, ceil_mode): the block runs on max_pool2d(x, ...), folded
    into launch 1 (out and scratch are the pooled size)."""
    return _two_launches(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, tma=False, pre_pool=pre_pool)


def block_forward_tma(
    x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, config=None, launch1_config=None, tma_launch1: bool = True
):
    """(out, scratch) of one block in two Triton launches, each with TMA descriptors, a pipelined
    K loop and a persistent grid where its ``tma_unsupported_reason`` finds nothing to object to
    (every GoogLeNet block on a channels_last input, in every dtype), else ``block_forward``'s
    launch.  ``tma_launch1`` False keeps ``block_forward``'s launch 1 (the "hopper_tma2" backend:
    only launch 2 on TMA).  ``config`` pins the TMA launch 2's tile (one of
    branch_convs_tma.CONFIGS), ``launch1_config`` the TMA launch 1's (one of
    reduce_pool_tma.CONFIGS); tests."""
    return _two_launches(
        x,
        w_red,
        b_red,
        w_pool,
        b_pool,
        w3,
        b3,
        w5,
        b5,
        tma=True,
        config=config,
        launch1_config=launch1_config,
        tma_launch1=tma_launch1,
    )


def _two_launches(
    x,
    w_red,
    b_red,
    w_pool,
    b_pool,
    w3,
    b3,
    w5,
    b5,
    tma: bool,
    config=None,
    pre_pool=None,
    launch1_config=None,
    tma_launch1: bool = True,
):
    check_dtype(x.dtype)
    if tma:  # imported here: the other blocks must not need triton.tools.tensor_descriptor
        from . import reduce_pool_tma
        from .branch_convs_tma import launch_branch_convs_tma, tma_unsupported_reason
    hw = None
    if pre_pool is not None:
        hw = tuple(geometry.pool_out(size, *pre_pool) for size in x.shape[2:])
    out, scratch = geometry.empty_outputs(x, w_red, w_pool, w3, w5, hw)
    ch1 = geometry.block_channels(w_red, w_pool, w3, w5).ch1
    # Each launch on TMA where it can describe that launch's operands (launch 1: not with a folded
    # pre-pool, whose pooled input is no TMA box; the "hopper" block never has one).
    tma1 = tma and tma_launch1 and pre_pool is None and reduce_pool_tma.tma_unsupported_reason(x, w_red) is None
    tma2 = tma and tma_unsupported_reason(scratch, w3, w5) is None
    # Launch 2's split-K tile counters, where a split-K config may run (small batches): launch 1
    # (either one) zeroes them, so no third kernel (a memset) is needed.  The TMA launch 2 splits no K.
    n_counters = None if tma2 else split_k_counters(scratch, w3, w5)
    counters = None if n_counters is None else torch.empty(n_counters, dtype=torch.int32, device=x.device)
    # Triton launches on the current CUDA device; the tensors may live on another one.
    with torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext():
        if tma1:
            reduce_pool_tma.launch_reduce_pool_tma(
                x, w_red, b_red, w_pool, b_pool, out, scratch, config=launch1_config, counters=counters
            )
        else:
            launch_reduce_pool(x, w_red, b_red, w_pool, b_pool, out, scratch, counters=counters, pre_pool=pre_pool)
        if tma2:
            launch_branch_convs_tma(scratch, w3, b3, w5, b5, out, ch1, config=config)
        else:
            launch_branch_convs(scratch, w3, b3, w5, b5, out, ch1, counters=counters)
    return out, scratch


def pooled_block_forward(x, kernel, stride, padding, ceil_mode, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5):
    """The block's output on max_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode), in the
    block's two launches: the pool taken while launch 1 loads x."""
    return block_forward(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, (kernel, stride, padding, ceil_mode))[0]
