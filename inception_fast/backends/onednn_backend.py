"""The "onednn" backend: each convolution of the block (and of FusedGoogLeNet's stem) as one oneDNN
convolution with its bias and ReLU fused as post-ops, reached through ATen's mkldnn ops
(``torch.ops.mkldnn._convolution_pointwise``), on CPU only.

The block computes what every backend computes (contract in ``inception_fast.backends``):

* the three 1x1 convs that read the block input as ONE convolution against ``w_red`` (viewed as
  (ch1 + ch3red + ch5red, Cin, 1, 1)), bias and ReLU fused;
* the 3x3 and k×k convs reading their channel slices of that result (ATen's mkldnn op copies each
  strided slice to a dense tensor first: 1-2 ms of a 280 ms batch-8 fp32 forward on one EPYC
  core), bias and ReLU fused;
* the pool branch: the 3x3/1 max pool (the prepacked path's caller picks it, by default
  ``max_pool_3x3_s1``; ATen's from the op path), then its 1x1 with bias and ReLU fused;
* the four results stored into their channel slices of one preallocated output (``torch.cat``
  with ``out=``).

Three entry points:

* ``block_forward``: the registered ``inception_block`` kernel, from the plain packed weights
  (oneDNN reorders them to its blocked layout on every call); the op path, used under autograd
  and torch.export with backend onednn.
* ``traced_block_forward``: the same computation as plain ATen ops, what FusedInception runs
  while torch.compile traces it on CPU (not torch.export, whose program holds the op).
* ``prepack_block`` / ``prepacked_block_forward``: the inference path.  The weights are reordered
  into oneDNN's blocked layout (``torch.ops.mkldnn._reorder_convolution_weight``, what inductor's
  freezing does) on an input shape's first call, one copy per layout oneDNN picks
  (``PrepackedConv``), and kept by the caller in an
  ``inception_fast.packing.PackCache``, so they are rebuilt whenever the source weights change.
  The reordered tensors are opaque (``torch._mkldnn`` layout): they carry no autograd and are only
  ever read by these convolutions.  ``prepack_conv`` / ``prepacked_conv_relu`` do the same for one
  conv (FusedGoogLeNet's stem).

NaN and Inf propagate as in PyTorch.  oneDNN's fused ReLU maps NaN to 0 (``relu(NaN)`` is NaN in
PyTorch), so each convolution takes the fused form only where its input and its weights are
finite: every weight is checked once when it is prepacked (on every call from the plain weights),
and each block's input (FusedGoogLeNet's stem: its input, and conv2's) with one sum (``finite``; a
sum that overflows only sends finite data down the exact path).  A conv whose input or weights are
not all finite runs as ATen's conv2d + relu, which keeps the NaN.  Convs fed by a checked one
inherit its answer: finite operands give finite results, unless a value overflows the dtype's range
(about 3.4e38 in float32 and bfloat16) inside the block or stem, the one case where a NaN that such
an overflow makes can still be lost.  The checks cost 1-4% of a forward on 2 cores; the ReLU as a separate ATen
pass instead, exact in that case too, cost up to 15% (bfloat16, batch 8; benchmarks/results).

bfloat16 runs only where oneDNN has bf16 convolutions on this CPU (AVX-512 BW/VL/DQ or
AVX-NE-CONVERT: ``bf16_supported()``); elsewhere the backend computes in float32 only, and a
bfloat16 input gets an error that says so (backend auto then runs the torch backend).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

from .. import geometry
from ..caches import LRUDict
from . import torch_backend
from .registry import Backend, register

__all__ = [
    "bf16_supported",
    "dtypes",
    "PrepackedBlock",
    "PrepackedConv",
    "prepack_block",
    "prepacked_block_forward",
    "prepack_conv",
    "prepacked_conv_relu",
    "block_forward",
    "traced_block_forward",
    "unavailable_reason",
]


def _build_reason() -> Optional[str]:
    if not torch.backends.mkldnn.is_available():
        return "this PyTorch build has no oneDNN (torch.backends.mkldnn.is_available() is False)"
    if not hasattr(torch.ops.mkldnn, "_convolution_pointwise") or not hasattr(
        torch.ops.mkldnn, "_reorder_convolution_weight"
    ):
        return "this PyTorch build lacks torch.ops.mkldnn._convolution_pointwise / _reorder_convolution_weight"
    return None


# Asked once, at import: torch.compile cannot trace torch.backends.mkldnn.is_available().
_BUILD_REASON = _build_reason()


def _ask_bf16() -> bool:
    """Whether oneDNN runs bf16 convolutions on this CPU (a PyTorch without the query: assumed)."""
    query = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if _BUILD_REASON is not None or query is None:
        return _BUILD_REASON is None
    try:
        return bool(query())
    except RuntimeError:
        return True


_BF16 = _ask_bf16()


def bf16_supported() -> bool:
    """Whether oneDNN has bfloat16 convolutions on this CPU (AVX-512 BW/VL/DQ or AVX-NE-CONVERT)."""
    return _BF16


def dtypes() -> tuple:
    """The dtypes this backend computes in on this CPU."""
    return (torch.float32, torch.bfloat16) if _BF16 else (torch.float32,)


def unavailable_reason(device) -> Optional[str]:
    device = torch.device(device)
    if device.type != "cpu":
        return f"runs oneDNN's CPU convolutions, on cpu only, not on {device.type}"
    return _BUILD_REASON


def _dtype_reason(device: torch.device, dtype: torch.dtype) -> Optional[str]:
    """None where this backend computes in ``dtype``, else why not (the registry's dtype_reason)."""
    if dtype == torch.bfloat16 and not _BF16:
        return (
            "computes bfloat16 only on CPUs with AVX-512 (BW, VL and DQ) or AVX-NE-CONVERT, which this one "
            "lacks (torch.ops.mkldnn._is_mkldnn_bf16_supported() is False)"
        )
    if dtype not in (torch.float32, torch.bfloat16):
        return f"computes in float32 and bfloat16, not {dtype}"
    return None


def _check_dtype(x: torch.Tensor) -> None:
    why = _dtype_reason(x.device, x.dtype)
    if why is not None:
        fix = "use float32, or backend='torch' or 'auto'" if x.dtype == torch.bfloat16 else "use backend='torch'"
        raise TypeError(f"the 'onednn' backend {why}; {fix}")


def _conv_relu(x, w, b, padding: int, stride: int = 1):
    """relu(conv2d(x, w, b)): one oneDNN convolution with bias and ReLU as post-ops (``w`` plain or
    reordered); the result is channels_last."""
    return torch.ops.mkldnn._convolution_pointwise(
        x, w, b, [padding, padding], [stride, stride], [1, 1], 1, "relu", [], ""
    )


def finite(t: torch.Tensor) -> bool:
    """Whether every element of ``t`` is finite, from one sum: NaN and ±Inf make it non-finite (a
    sum of finite values that overflows reads as non-finite too, which only costs the exact path)."""
    return math.isfinite(t.sum().item())


def _aten_conv_relu(x, w, b, padding: int, stride: int = 1):
    """relu(conv2d(x, w, b)) through ATen: what a conv with a NaN or Inf operand runs (NaN stays NaN),
    in the operands' dtype as oneDNN's would be (not autocast's)."""
    with torch.autocast(x.device.type, enabled=False):
        return F.conv2d(x, w, b, stride, padding).relu_()


# Weight layouts each prepacked conv keeps a reordered weight in (the least recently used is dropped
# beyond), and input shapes whose layout it remembers.
LAYOUTS_KEPT = 4
SHAPES_REMEMBERED = 64

_SERIALIZED_MD = getattr(torch.ops.mkldnn, "_get_mkldnn_serialized_md", None)


def _layout_of(w: torch.Tensor, shape: tuple):
    """What identifies a reordered weight's layout: oneDNN's memory descriptor, serialized (equal
    descriptors, equal layouts), or, on a PyTorch without the query, the input shape it was
    reordered for."""
    if _SERIALIZED_MD is None:
        return shape
    return _SERIALIZED_MD(w).numpy().tobytes()


def _reorder(conv: "PrepackedConv", shape: tuple) -> torch.Tensor:
    """``conv``'s weight reordered into the layout oneDNN picks for input ``shape``."""
    p, s = [conv.padding] * 2, [conv.stride] * 2
    return torch.ops.mkldnn._reorder_convolution_weight(conv.plain, p, s, [1, 1], 1, list(shape))


class PrepackedConv:
    """One conv: its folded weight and bias, stride and padding, and the weight reordered into
    oneDNN's blocked layout.  oneDNN picks the layout for the problem it solves (the image size,
    sometimes the batch size), and a weight in another layout would be reordered again on every
    call, so an input shape seen for the first time gets its weight reordered for it.  Shapes
    whose layout is the same (on AVX-512, most batch sizes of one image size) share one reordered
    weight: ``layouts`` maps each shape seen (the last ``SHAPES_REMEMBERED``) to its layout, and
    ``reordered`` keeps a weight for each of the ``LAYOUTS_KEPT`` layouts used last (a layout
    served all along stays among occasional ones).  A server cycling through batch sizes thus
    holds one copy and reorders nothing after each size's first call."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor, stride: int = 1, padding: int = 0) -> None:
        self.plain = w.detach().contiguous()
        self.bias = b.detach().contiguous()
        self.stride = stride
        self.padding = padding
        self.layouts = LRUDict(capacity=SHAPES_REMEMBERED)  # input shape -> its weight layout (_layout_of)
        self.reordered = LRUDict(capacity=LAYOUTS_KEPT)  # layout -> the weight in it (opaque)
        self.finite = finite(self.plain) and finite(self.bias)  # else every call runs ATen's conv

    def weight_for(self, x: torch.Tensor) -> torch.Tensor:
        shape = tuple(x.shape)
        layout = self.layouts.get(shape)
        w = self.reordered.get(layout) if layout is not None else None
        if w is not None:
            return w
        w = _reorder(self, shape)  # (threads missing at once each reorder; one copy is kept)
        layout = _layout_of(w, shape)
        self.reordered[layout] = w
        self.layouts[shape] = layout
        return w


def prepack_conv(w: torch.Tensor, b: torch.Tensor, stride: int = 1, padding: int = 0) -> PrepackedConv:
    """``w`` (Cout, Cin, kh, kw) and ``b`` for oneDNN's convolution (square stride/padding)."""
    return PrepackedConv(w, b, stride, padding)


def _prepacked(x: torch.Tensor, conv: PrepackedConv, finite_input: bool) -> torch.Tensor:
    """relu(conv(x)): oneDNN's fused form where ``x`` (as the caller checked) and the weights are
    finite, else ATen's (see the module docstring: NaN)."""
    if finite_input and conv.finite:
        return _conv_relu(x, conv.weight_for(x), conv.bias, conv.padding, conv.stride)
    return _aten_conv_relu(x, conv.plain, conv.bias, conv.padding, conv.stride)


def prepacked_conv_relu(x: torch.Tensor, conv: PrepackedConv, finite_input: Optional[bool] = None) -> torch.Tensor:
    """relu(conv(x)) from a prepacked conv; ``x`` in either layout, the result channels_last.
    ``finite_input``: whether ``x`` is all finite, where the caller knows (else it is checked)."""
    _check_dtype(x)
    if conv.bias.dtype != x.dtype:
        raise TypeError(f"input dtype {x.dtype} does not match the prepacked weights' dtype {conv.bias.dtype}")
    return _prepacked(x, conv, finite(x) if finite_input is None else finite_input)


class PrepackedBlock(NamedTuple):
    red: PrepackedConv  # the three 1x1s that read the block input
    pool: PrepackedConv  # the pool branch's 1x1
    conv3: PrepackedConv
    conv5: PrepackedConv
    channels: tuple  # (ch1, ch3red, ch5red, ch3, ch5, pool_proj)
    cin: int


def prepack_block(packed) -> PrepackedBlock:
    """The block's packed weights (``inception_fast.packing.PackedBlock``) in oneDNN's layout."""
    w_red, b_red, w_pool, b_pool, w3, b3, w5, b5 = packed
    k3, k5 = w3.shape[-1], w5.shape[-1]
    return PrepackedBlock(
        prepack_conv(w_red[:, :, None, None], b_red),
        prepack_conv(w_pool[:, :, None, None], b_pool),
        prepack_conv(w3, b3, padding=k3 // 2),
        prepack_conv(w5, b5, padding=k5 // 2),
        geometry.block_channels(w_red, w_pool, w3, w5),
        w_red.shape[1],
    )


def max_pool_3x3_s1(x: torch.Tensor) -> torch.Tensor:
    """F.max_pool2d(x, 3, 1, 1) on a channels_last ``x``, separably: the max of each row's three
    neighbours, then of each column's, as four in-place ``torch.maximum`` passes over contiguous
    channel vectors.  The same values as ATen's pool (a max is exact; NaN propagates in both), but
    not always the same bits: where a window's maximum is zero and it holds both +0.0 and -0.0,
    ATen keeps the first in its scan order and ``torch.maximum``'s choice between equal zeros
    varies with its vector width, so the sign may differ (only the sign of a zero).  ATen's pool
    also writes an int64 argmax per output: 12.8 against 20.2 ms of CPU time for the nine block pools
    of a batch of 8 at 224x224, one thread (benchmarks/results)."""
    r = x.contiguous(memory_format=torch.channels_last).clone(memory_format=torch.channels_last)
    torch.maximum(r[..., 1:], x[..., :-1], out=r[..., 1:])
    torch.maximum(r[..., :-1], x[..., 1:], out=r[..., :-1])
    out = r.clone(memory_format=torch.channels_last)
    torch.maximum(out[..., 1:, :], r[..., :-1, :], out=out[..., 1:, :])
    torch.maximum(out[..., :-1, :], r[..., 1:, :], out=out[..., :-1, :])
    return out


def _assemble(x, red, y3, y5, yp, ch1):
    """The block output: the four branch results in their channel slices of one channels_last tensor."""
    n, _, h, w = x.shape
    c = ch1 + y3.shape[1] + y5.shape[1] + yp.shape[1]
    out = torch.empty((n, c, h, w), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    return torch.cat([red[:, :ch1], y3, y5, yp], 1, out=out)


def prepacked_block_forward(x: torch.Tensor, pre: PrepackedBlock, pool=max_pool_3x3_s1) -> torch.Tensor:
    """The block's inference forward from prepacked weights; ``x`` (N, Cin, H, W); the result is
    channels_last.  ``pool``: the pool branch's 3x3/1 max pool (padding 1) on the channels_last
    ``x`` (FusedInception passes ``inception_fast.stages.block_max_pool``, a measured choice).  No
    autograd: callers use it only where no gradient is wanted."""
    _check_dtype(x)
    if x.dim() != 4 or x.shape[1] != pre.cin:
        raise ValueError(f"Inception block expects a 4-D input with {pre.cin} channels, got shape {tuple(x.shape)}")
    geometry.check_block_pixels(x)  # (ops' own check, which the other backends' calls pass)
    if pre.red.bias.dtype != x.dtype:
        raise TypeError(f"input dtype {x.dtype} does not match the prepacked weights' dtype {pre.red.bias.dtype}")
    ch1, ch3red, _, _, _, _ = pre.channels
    x = x.contiguous(memory_format=torch.channels_last)
    x_finite = finite(x)  # so is its max pool
    red = _prepacked(x, pre.red, x_finite)
    red_finite = x_finite and pre.red.finite
    y3 = _prepacked(red[:, ch1 : ch1 + ch3red], pre.conv3, red_finite)
    y5 = _prepacked(red[:, ch1 + ch3red :], pre.conv5, red_finite)
    yp = _prepacked(pool(x), pre.pool, x_finite)
    return _assemble(x, red, y3, y5, yp, ch1)


def block_forward(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5):
    """The registered kernel (plain packed weights): returns (out, scratch) as the contract says."""
    _check_dtype(x)
    if not all(finite(t) for t in (x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5)):
        return torch_backend.block_forward(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5)  # NaN stays NaN
    ch1, ch3red, ch5red, ch3, ch5, pool = geometry.block_channels(w_red, w_pool, w3, w5)
    k3, k5 = w3.shape[-1], w5.shape[-1]
    red = _conv_relu(x, w_red[:, :, None, None], b_red, 0)
    y3 = _conv_relu(red[:, ch1 : ch1 + ch3red], w3, b3, k3 // 2)
    y5 = _conv_relu(red[:, ch1 + ch3red :], w5, b5, k5 // 2)
    yp = _conv_relu(F.max_pool2d(x, 3, 1, 1), w_pool[:, :, None, None], b_pool, 0)
    out = _assemble(x, red, y3, y5, yp, ch1)
    scratch = red[:, ch1:].contiguous(memory_format=torch.channels_last)
    return out, scratch


def traced_block_forward(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5):
    """The block as plain ATen ops (conv2d, ReLU, max pool, cat) from the packed weights, for
    torch.compile on CPU: inductor lowers them to the same oneDNN convolutions with bias and ReLU
    fused, with weights reordered once when it freezes them, and fuses the pool and the
    concatenation; the registered op would be opaque to it, reordering its weights on every call.
    NaN: inductor's fused conv + ReLU (oneDNN's) maps NaN to 0, as in compiled torchvision; traced
    without inductor (backend "aot_eager") the ATen ReLU keeps it.
    The three 1x1s as three convolutions, as torchvision's block has them: the 3x3 and k×k then
    read dense maps, not channel slices that ATen's mkldnn op copies first."""
    ch1, ch3red, ch5red, ch3, ch5, pool = geometry.block_channels(w_red, w_pool, w3, w5)
    k3, k5 = w3.shape[-1], w5.shape[-1]
    w1, w3r, w5r = w_red[:, :, None, None].split([ch1, ch3red, ch5red], 0)
    b1, b3r, b5r = b_red.split([ch1, ch3red, ch5red], 0)
    y1 = F.conv2d(x, w1, b1).relu()
    r3 = F.conv2d(x, w3r, b3r).relu()
    r5 = F.conv2d(x, w5r, b5r).relu()
    y3 = F.conv2d(r3, w3, b3, padding=k3 // 2).relu()
    y5 = F.conv2d(r5, w5, b5, padding=k5 // 2).relu()
    yp = F.conv2d(F.max_pool2d(x, 3, 1, 1), w_pool[:, :, None, None], b_pool).relu()
    return torch.cat([y1, y3, y5, yp], 1)


# The backward is the torch backend's ATen chain (torch_backend.block_backward).
register(
    Backend(
        "onednn",
        unavailable_reason,
        {"inception_block": block_forward, "inception_block_backward": torch_backend.block_backward},
        dtype_reason=_dtype_reason,
    )
)
