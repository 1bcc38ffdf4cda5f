"""BatchNorm folding, weight packing and staleness tracking.

A block's packed weights (layouts in ``inception_fast.backends``):
  w_red (ch1+ch3red+ch5red, Cin), b_red   -- the three 1x1 convs that read the block input
  w_pool (pool_proj, Cin), b_pool          -- the pool branch's 1x1
  w3, b3 / w5, b5                          -- the 3x3 and k×k convs, channels_last 4-D
Eval-mode BatchNorm is folded into each conv with that layer's own eps.

``PackCache`` rebuilds the packed tensors whenever any source tensor changed: an
in-place update (optimizer step, ``load_state_dict``'s copy_) bumps its version
counter, and ``.to()``/``.half()`` replace its storage, so the key (identity,
version, storage pointer, dtype, device) of every source tensor catches both.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch
from torch import Tensor, nn

__all__ = ["PackedBlock", "fold_conv_bn", "pack_block", "block_convs", "conv_bn_tensors", "PackCache"]


class PackedBlock(NamedTuple):
    w_red: Tensor
    b_red: Tensor
    w_pool: Tensor
    b_pool: Tensor
    w3: Tensor
    b3: Tensor
    w5: Tensor
    b5: Tensor


def fold_conv_bn(basic_conv: nn.Module, dtype: Optional[torch.dtype] = None) -> tuple[Tensor, Tensor]:
    """(weight, bias) of conv→BN as one conv.  Works for torchvision's BasicConv2d and ours.

    Differentiable: under autograd the folded tensors carry gradients back to the
    conv and BN parameters.  Folding is done in at least float32.
    """
    conv = basic_conv.conv
    bn = getattr(basic_conv, "bn", None)
    w = conv.weight
    dtype = dtype or w.dtype
    work = torch.promote_types(w.dtype, torch.float32)
    w = w.to(work)
    b = conv.bias.to(work) if conv.bias is not None else None
    if bn is not None:
        if bn.running_var is None or bn.running_mean is None:
            raise RuntimeError("cannot fold a BatchNorm without running statistics (track_running_stats=False)")
        inv_std = torch.rsqrt(bn.running_var.to(work) + bn.eps)
        scale = inv_std if bn.weight is None else bn.weight.to(work) * inv_std
        shift = -bn.running_mean.to(work) * scale
        if bn.bias is not None:
            shift = shift + bn.bias.to(work)
        if b is not None:
            shift = shift + b * scale
        w = w * scale.view(-1, 1, 1, 1)
        b = shift
    elif b is None:
        b = torch.zeros(w.shape[0], dtype=work, device=w.device)
    return w.to(dtype), b.to(dtype)


def pack_block(block: nn.Module, dtype: Optional[torch.dtype] = None) -> PackedBlock:
    """Packs an Inception block (torchvision's or ours) for the fused op."""
    (w1, b1), (w2r, b2r), (w3, b3), (w5r, b5r), (w5, b5), (wp, bp) = (
        fold_conv_bn(unit, dtype) for unit in block_convs(block))
    w_red = torch.cat([w1, w2r, w5r], 0).flatten(1).contiguous()
    b_red = torch.cat([b1, b2r, b5r], 0).contiguous()
    cl = torch.channels_last
    return PackedBlock(w_red, b_red, wp.flatten(1).contiguous(), bp.contiguous(),
                       w3.contiguous(memory_format=cl), b3.contiguous(), w5.contiguous(memory_format=cl), b5.contiguous())


def _tensor_key(t: Tensor) -> tuple:
    try:
        version = t._version
    except RuntimeError:  # inference tensors keep no version counter
        version = -1
    return (id(t), version, t.data_ptr(), t.dtype, t.device)


def conv_bn_tensors(basic_convs) -> list[Tensor]:
    """Every tensor that folding reads from these conv(→BN) modules: the cache key's sources.

    Direct attribute reads, not ``module.parameters()``: this runs on every forward.
    """
    out = []
    for basic in basic_convs:
        conv, bn = basic.conv, getattr(basic, "bn", None)
        out.append(conv.weight)
        if conv.bias is not None:
            out.append(conv.bias)
        if bn is not None:
            out += [t for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var) if t is not None]
    return out


def block_convs(block: nn.Module) -> list[nn.Module]:
    """The six conv(→BN) units of an Inception block, in packing order."""
    return [block.branch1, block.branch2[0], block.branch2[1], block.branch3[0], block.branch3[1], block.branch4[1]]


class PackCache:
    """Caches ``build(module, dtype)`` per dtype, rebuilt whenever a source tensor changes.

    ``sources(module)`` lists the tensors the build reads.
    """

    def __init__(self, build: Callable[[nn.Module, torch.dtype], object],
                 sources: Callable[[nn.Module], list] = lambda block: conv_bn_tensors(block_convs(block))) -> None:
        self._build = build
        self._sources = sources
        self._entries: dict = {}

    def get(self, module: nn.Module, dtype: torch.dtype):
        key = tuple(_tensor_key(t) for t in self._sources(module))
        entry = self._entries.get(dtype)
        if entry is None or entry[0] != key:
            with torch.no_grad():
                packed = self._build(module, dtype)
            self._entries = {k: v for k, v in self._entries.items() if v[0] == key}
            self._entries[dtype] = (key, packed)
            return packed
        return entry[1]

    def clear(self) -> None:
        self._entries.clear()
