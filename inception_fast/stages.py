"""FusedGoogLeNet's stages outside the Inception blocks, each in the form measured fastest.

* ``stem_conv1``: conv1 + ReLU + maxpool1 (STEM_CHOICE): the input as is ("channels_last"),
  zero-padded to the next multiples of 4 and 8 channels ("pad4"/"pad8" for 3 channels, "pad<N>"
  in general, ``stem_padded_channels``: cuDNN's tensor-core kernels want channel counts in
  multiples of 4 or 8; the padding adds zeros to the sums), convolved in NCHW ("nchw"), and,
  where the model's backend runs Triton kernels (auto, triton, hopper, hopper_tma2) and Triton
  runs, the Triton stem kernel
  ("triton": conv, ReLU and pool in one launch, the conv output never stored;
  backends/triton/stem.py), that kernel without its pool ("triton_conv"), or, on inputs of at most
  8 channels, the Triton conv that reads a padded copy of the input in aligned rows, then the pool
  ("triton_rows": op ``conv_relu`` with conv1's stride, backends/triton/conv_rows.py), or that
  conv with the pool in its epilogue where the pool is at most 3x3 with a stride of at most 2
  ("triton_rows_pool": op ``conv_relu_maxpool`` with the packed weight; the conv output is never
  stored).
* ``conv_relu``: conv2 and conv3 with bias and ReLU (CONV_RELU_CHOICE): ATen (the conv, then bias
  and ReLU as two more passes) against cuDNN's fused conv-bias-ReLU, which is known to pick slow
  kernels for some shapes, and, where the model's backend runs Triton kernels and Triton runs,
  the Triton implicit-GEMM conv with bias + ReLU in its epilogue ("triton", op ``conv_relu``;
  backends/triton/conv_relu.py), checked against an fp64 ATen conv like the fused op.
* ``max_pool``: the pools between stages (POOL_CHOICE): ATen's, which also writes an int64 argmax
  per output, against the Triton pool (backends/triton/maxpool.py); on CPU (CPU_POOL_CHOICE)
  against the compiled extension's (csrc/cpu/max_pool.cpp); every one's first result must equal
  ATen's bit for bit (NaN where ATen has NaN).  ``block_max_pool`` likewise for the "onednn" blocks' pool branch.
* ``pool_block``: a max pool and the block after it (maxpool2/3/4 with 3a/4a/5a; FOLD_CHOICE,
  offered only where INCEPTION_FAST_EXTRA_CANDIDATES says so, see ``offers``):
  "separate" (the pool as ``max_pool`` runs it, then the block as the model runs it) against
  "folded" (the Triton block whose launch 1 takes the pool while loading its input, op
  ``pooled_inception_block``: the pooled map is never stored), which must agree with an fp64 ATen
  pool + block within the tolerance table's rule.
* ``block_chain``: a run of consecutive blocks (3a-3b, 4a-4e, 5a-5b) and the max pool before it
  (CHAIN_CHOICE, likewise offered only on request): "separate" (the pool and each block as the
  model runs them) against "chained" (op ``inception_chain``: each block's launch 2 and the next
  block's launch 1 in one persistent Triton launch, the pool folded into the first launch 1),
  checked like the fold.
* ``head``: the eval-mode head, global average pool + dropout (the identity) + fc (HEAD_CHOICE):
  ATen's (mean, then addmm) against the Triton head (backends/triton/head.py: the pool and a GEMM
  with the bias in two launches, 5b's output read once), which must agree with a float64 ATen
  head within the tolerance table's rule.

With the "onednn" backend on CPU and no gradient wanted, conv1's first form ("onednn") and conv2
and conv3 are oneDNN convolutions from prepacked weights with bias and ReLU fused
(``FusedGoogLeNet._stem_prepacked``, ``stem_onednn_params``).

Each measures on CUDA (the pools on CPU too), per shape, on the first call
(``inception_fast.choices``), and keeps the fastest.  Where nothing is measured, and with
gradients, the first candidate runs: channels_last ATen (the stem's oneDNN form where the model
runs its stem from oneDNN's prepacked weights; the "onednn" blocks' pool branch, the separable
pool).  The results are channels_last (the head's: (N, classes) logits).
"""

from __future__ import annotations

import functools
import os
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import choices, geometry, ops
from .backends import extension
from .backends.onednn_backend import max_pool_3x3_s1
from .packing import stock

__all__ = [
    "STEM_TRITON_VARIANTS",
    "square",
    "pool_params",
    "conv_relu",
    "conv_relu_triton_supported",
    "max_pool",
    "BLOCK_POOL",
    "block_max_pool",
    "fold_params",
    "ENV_EXTRA_CANDIDATES",
    "EXTRA_CANDIDATES",
    "offers",
    "pool_block",
    "standard_head",
    "head",
    "stem_onednn_params",
    "stem_padded_channels",
    "stem_rows_stride",
    "stem_triton_params",
    "stem_key",
    "stem_variants",
    "stem_reference64",
    "stem_conv1",
]

STEM_TRITON_VARIANTS = ("triton", "triton_conv", "triton_rows", "triton_rows_pool")


def square(value) -> Optional[int]:
    """An int for an int or a tuple of equal ints (a square kernel, stride, padding), else None."""
    if isinstance(value, int):
        return value
    return value[0] if len(set(value)) == 1 else None


def pool_params(pool: nn.Module) -> Optional[tuple]:
    """(kernel, stride, padding, ceil_mode) of a square, undilated max pool without indices whose
    forward is MaxPool2d's (``packing.stock``), else None."""
    if not stock(pool, nn.MaxPool2d) or pool.return_indices or square(pool.dilation) != 1:
        return None
    params = (
        square(pool.kernel_size),
        square(pool.stride if pool.stride is not None else pool.kernel_size),
        square(pool.padding),
        bool(pool.ceil_mode),
    )
    return None if None in params else params


def conv_relu_triton_supported(x: Tensor, w: Tensor, padding: int) -> bool:
    """Whether the Triton conv + bias + ReLU computes this conv (a square odd kernel with padding
    k // 2 on a non-empty batch; the op's other checks are the conv's own)."""
    k = w.shape[-1]
    return x.dim() == 4 and x.shape[0] > 0 and w.dim() == 4 and w.shape[-2] == k and k % 2 == 1 and padding == k // 2


def conv_relu(x: Tensor, w: Tensor, b: Tensor, padding: int, triton_allowed: bool = False) -> Tensor:
    """relu(conv2d(x, w, b, padding=padding)), stride 1, as CONV_RELU_CHOICE measured fastest; the
    Triton kernel (op ``conv_relu``) competes only where ``triton_allowed`` (the model's backend
    runs Triton kernels), it supports the shape and Triton runs on x's device."""
    aten = lambda: F.conv2d(x, w, b, padding=padding).relu_()  # noqa: E731
    chooser = choices.CONV_RELU_CHOICE
    if not chooser.applies(x.device, x, w, b):  # the fused ops have no backward
        return aten()
    if w.dtype != x.dtype or b.dtype != x.dtype or torch.is_autocast_enabled(x.device.type):
        return aten()  # autocast's casts (the fused ops take one dtype; the key holds x's only)
    triton_allowed = bool(triton_allowed) and conv_relu_triton_supported(x, w, padding)
    key = choices.ConvReluKey(
        str(x.device),
        x.dtype,
        tuple(x.shape),
        tuple(x.stride()),
        tuple(w.shape),
        padding,
        choices.fp32_precision(x.dtype),
        triton_allowed,
    )
    choice = chooser.lookup(key)
    if choice is None:
        from .backends import availability

        reference64 = lambda: F.conv2d(x.double(), w.double(), b.double(), padding=padding).relu_()  # noqa: E731
        runners = {
            "aten": aten,
            "cudnn_fused": choices.checked_against(
                lambda: torch.cudnn_convolution_relu(x, w, b, (1, 1), (padding, padding), (1, 1), 1),
                aten,
                "cuDNN's fused conv-bias-ReLU",
                reference64,
            ),
        }
        if triton_allowed and availability("triton", x.device) is None:
            runners["triton"] = choices.checked_against(
                lambda: ops.conv_relu(x, w, b, padding, backend="triton"),
                aten,
                "the Triton conv + bias + ReLU",
                reference64,
            )
        choice = chooser.pick(key, x.device, runners)
    if choice == "cudnn_fused":
        return torch.cudnn_convolution_relu(x, w, b, (1, 1), (padding, padding), (1, 1), 1)
    if choice == "triton":
        return ops.conv_relu(x, w, b, padding, backend="triton")
    return aten()


def max_pool(x: Tensor, pool: nn.Module, triton_allowed: bool, cpp_allowed: bool = False, unmeasured=None) -> Tensor:
    """``pool(x)`` as measured fastest (channels_last for a channels_last input).  On CPU where
    ``cpp_allowed`` (the model's backend is onednn or cpp), CPU_POOL_CHOICE: ATen's pool against
    the compiled extension's (backend "cpp", csrc/cpu/max_pool.cpp) where it is built and, for a
    3x3/1 pool with padding 1, the separable form (``max_pool_3x3_s1``).  Elsewhere where
    ``triton_allowed`` (the model's backend runs Triton kernels), POOL_CHOICE: ATen's pool against
    the Triton pool.  Every candidate's first result must equal ATen's bit for bit (NaN where
    ATen has NaN; the separable form's zeros may carry the other sign).  Where nothing may be
    measured (static mode, capture, deferral) ``unmeasured(x)`` runs if given, else ``pool(x)``;
    under a torch.compile trace ``pool(x)`` runs."""
    if x.device.type == "cpu" and cpp_allowed:
        chooser, native = choices.CPU_POOL_CHOICE, "cpp"
    elif triton_allowed:
        chooser, native = choices.POOL_CHOICE, "triton"
    else:
        return pool(x)
    params = pool_params(pool)
    if params is None or not chooser.applies(x.device, x):
        return pool(x)
    threads = torch.get_num_threads() if x.device.type == "cpu" else None
    key = choices.PoolKey(str(x.device), x.dtype, tuple(x.shape), tuple(x.stride()), params, threads)
    choice = chooser.lookup(key)
    if choice is None:
        if not chooser.can_measure(x.device):  # capture, static mode: nothing to build
            return pool(x) if unmeasured is None else unmeasured(x)
        from .backends import availability

        aten = lambda: pool(x)  # noqa: E731
        runners = {"aten": aten}
        if availability(native, x.device) is None:
            runners[native] = choices.checked_against(
                lambda: _native_max_pool(x, params, native), aten, f"the {native} max pool"
            )
        if native == "cpp" and params == (3, 1, 1, False):
            runners["separable"] = choices.checked_against(
                lambda: max_pool_3x3_s1(x), aten, "the separable 3x3 max pool", signed_zeros=False
            )
        choice = chooser.pick(key, x.device, runners)
    if choice == "separable":
        return max_pool_3x3_s1(x)
    return pool(x) if choice == "aten" else _native_max_pool(x, params, choice)


def _native_max_pool(x: Tensor, params: tuple, backend: str) -> Tensor:
    """The pool that writes no argmax: Triton's through op ``max_pool2d``; on CPU the "cpp"
    backend's kernel called directly (no gradient is wanted here; the op's Python layer cost about
    25 µs a call: 8.80 against 8.69 ms for a batch-1 bfloat16 forward on 2 cores)."""
    if backend == "cpp":
        return extension.max_pool2d(x, *params)
    return ops.max_pool2d(x, *params, backend=backend)


BLOCK_POOL = nn.MaxPool2d(3, 1, 1)  # the pool branch's pool in every GoogLeNet block


def block_max_pool(x: Tensor) -> Tensor:
    """The "onednn" block's pool branch max pool (3x3/1, padding 1) on CPU, as ``max_pool``
    measured fastest (ATen's, the separable form, the compiled extension's); where nothing is
    measured, the separable form (no argmax, no extension needed)."""
    return max_pool(x, BLOCK_POOL, False, cpp_allowed=True, unmeasured=max_pool_3x3_s1)


def fold_params(pool: nn.Module) -> Optional[tuple]:
    """``pool_params(pool)`` where that pool folds into the next block's launch 1
    (``geometry.foldable``), else None."""
    params = pool_params(pool)
    if params is None or pool._forward_hooks or pool._forward_pre_hooks:
        return None
    return params if geometry.foldable(*params[:3]) is None else None


# FOLD_CHOICE's folded form and CHAIN_CHOICE's chained form measured slower than the stages run
# separately at every shape on an H200 (2026-12-04, batch 1 and 256: folded 2-5x, chained 2-3x;
# benchmarks/results): FusedGoogLeNet offers them only where INCEPTION_FAST_EXTRA_CANDIDATES names
# them ("fold", "chain", comma-separated, or "all"), and then measures them and runs them only where
# faster.  Off, a cold first forward compiles 39 fewer binaries at batch 256 (of 199).
ENV_EXTRA_CANDIDATES = "INCEPTION_FAST_EXTRA_CANDIDATES"
EXTRA_CANDIDATES = ("fold", "chain")


@functools.lru_cache(maxsize=8)
def _extra_candidates(raw: str) -> frozenset:
    """The forms an INCEPTION_FAST_EXTRA_CANDIDATES value names (parsed once per value: every
    forward asks); a name it does not know is an error that says so."""
    names = frozenset(n.strip().lower() for n in raw.split(",") if n.strip())
    unknown = sorted(names - {"all", *EXTRA_CANDIDATES})
    if unknown:
        raise ValueError(
            f"{ENV_EXTRA_CANDIDATES}={raw!r}: unknown form(s) {', '.join(unknown)}; "
            f"name any of {', '.join(EXTRA_CANDIDATES)}, or all"
        )
    return names


def offers(form: str) -> bool:
    """Whether FusedGoogLeNet offers ``form`` (one of EXTRA_CANDIDATES) to its measured choice:
    only where INCEPTION_FAST_EXTRA_CANDIDATES names it or says "all" (read at each call)."""
    names = _extra_candidates(os.environ.get(ENV_EXTRA_CANDIDATES, ""))
    return form in names or "all" in names


def triton_may_compete(chooser, x: Tensor, triton_allowed: bool) -> bool:
    """Whether a Triton form may compete with the model's own stages for ``x``: the model's backend
    allows it, the input is a non-empty 4-D batch, ``chooser`` applies (its devices, no gradient,
    not tracing) and Triton runs on x's device.  Cheap: the model asks it before anything else
    about a fold or a chain (``pool_block``, ``block_chain``)."""
    from .backends import availability

    if not triton_allowed or x.dim() != 4 or x.shape[0] == 0:
        return False
    return chooser.applies(x.device, x) and availability("triton", x.device) is None


def _precision(x: Tensor) -> Optional[tuple]:
    """fp32's precision settings, which decide what ATen computes (a key field), else None."""
    if x.dtype != torch.float32:
        return None
    return torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()


def _separate_or_fused(chooser, key, x: Tensor, packed, separate, run, name: str, what: str) -> Tensor:
    """``separate()`` or ``run("triton")(x, weights)`` as ``chooser`` measured for ``key`` (measuring
    now if it may): "separate" first (what runs wherever nothing is measured), then ``name``, which
    competes only after its first result agreed with ``run("torch")`` (the same op on ATen) against
    an fp64 run of that, by the tolerance table's rule.  ``packed()``: the weights, a list of
    per-block tuples, built only where the fused form runs or is measured."""
    choice = chooser.lookup(key)
    if choice == "separate" or (choice is None and not chooser.can_measure(x.device)):
        return separate()  # (capture, static mode: the model's stages, nothing to build)
    weights = packed()
    if torch.is_grad_enabled() and any(w.requires_grad for ws in weights for w in ws):
        return separate()  # the fused ops have no backward
    fused = lambda: run("triton")(x, weights)  # noqa: E731
    if choice is None:
        aten = run("torch")
        runners = {
            "separate": separate,
            name: choices.checked_against(
                fused,
                lambda: aten(x, weights),
                what,
                lambda: aten(x.double(), [[w.double() for w in ws] for ws in weights]),
            ),
        }
        choice = chooser.pick(key, x.device, runners)
    return fused() if choice == name else separate()


def pool_block(
    x: Tensor,
    pool: nn.Module,
    shapes: tuple,
    packed: Callable[[], tuple],
    separate: Callable[[], Tensor],
    backend: str,
) -> Tensor:
    """The block's output on ``pool(x)`` as FOLD_CHOICE measured fastest: ``separate()`` (the pool,
    then the block; the first candidate, what runs wherever nothing is measured) or the folded
    Triton op on the block's packed weights (``packed()``: (w_red, b_red, w_pool, b_pool, w3, b3,
    w5, b5) in x's dtype; ``shapes``: its conv weights' shapes, for the key).  The caller offers
    the fold only where the block folds its BatchNorm and ``triton_may_compete(FOLD_CHOICE, ...)``
    (it asks that first: it is cheap); here it competes only where the pool folds
    (``fold_params``).  ``backend`` (the model's) is part of the key: it decides what
    ``separate()`` runs."""
    chooser = choices.FOLD_CHOICE
    params = fold_params(pool)
    if params is None:
        return separate()
    layout = (str(x.device), x.dtype, tuple(x.shape), tuple(x.stride()))
    key = choices.FoldKey(*layout, params, shapes, backend, _precision(x))

    def run(backend):
        return lambda x, weights: ops.pooled_inception_block(x, *weights[0], *params, backend=backend)

    what = "the max pool folded into the block's launch 1"
    return _separate_or_fused(chooser, key, x, lambda: [packed()], separate, run, "folded", what)


def block_chain(
    x: Tensor,
    pool: Optional[nn.Module],
    shapes: tuple,
    packed: Callable[[], list],
    separate: Callable[[], Tensor],
    backend: str,
) -> Tensor:
    """The last block's output of consecutive blocks on ``pool(x)`` (or on x where ``pool`` is None)
    as CHAIN_CHOICE measured fastest: ``separate()`` (the pool and each block as the model runs them;
    the first candidate) or the chained Triton op on the blocks' packed weights (``packed()``: one
    8-tuple per block, in x's dtype; ``shapes``: per block its conv weights' shapes, for the key;
    launch 2 of each block joined with launch 1 of the next, the pool folded into the first
    launch 1).  ``pool`` must fold (``fold_params``); the caller runs any other pool itself.  The
    caller offers the chain under the same conditions as ``pool_block``'s fold (with CHAIN_CHOICE)."""
    chooser = choices.CHAIN_CHOICE
    params = None if pool is None else fold_params(pool)
    if (pool is not None and params is None) or len(shapes) < 2:
        return separate()
    layout = (str(x.device), x.dtype, tuple(x.shape), tuple(x.stride()))
    key = choices.ChainKey(*layout, params, shapes, backend, _precision(x))

    def run(backend):
        return lambda x, weights: ops.inception_chain(x, weights, params, backend=backend)

    what = "the blocks with each launch 2 joined to the next launch 1"
    return _separate_or_fused(chooser, key, x, packed, separate, run, "chained", what)


def standard_head(avgpool: nn.Module, dropout: nn.Module, fc: nn.Module) -> bool:
    """Whether ``fc(dropout(flatten(avgpool(x), 1)))`` is the computation the Triton head does: a global
    average pool to 1x1, a dropout that is the identity (eval mode) or none, a Linear with a bias,
    each with its class's own forward (``packing.stock``), and no hooks that would see the modules run."""
    modules = (avgpool, dropout, fc)
    if any(m._forward_hooks or m._forward_pre_hooks for m in modules):
        return False
    return (
        stock(avgpool, nn.AdaptiveAvgPool2d)
        and avgpool.output_size in (1, (1, 1))
        and (stock(dropout, nn.Identity) or (stock(dropout, nn.Dropout) and not dropout.training))
        and stock(fc, nn.Linear)
        and fc.bias is not None
    )


def head(x: Tensor, avgpool: nn.Module, dropout: nn.Module, fc: nn.Module, triton_allowed: bool) -> Tensor:
    """``fc(dropout(flatten(avgpool(x), 1)))`` as HEAD_CHOICE measured fastest; the Triton head competes
    only where ``triton_allowed`` (the model's backend runs Triton kernels), the head is the standard
    one in eval mode (``standard_head``) and no gradient is needed (the op has no backward)."""
    aten = lambda: fc(dropout(torch.flatten(avgpool(x), 1)))  # noqa: E731
    chooser = choices.HEAD_CHOICE
    if not triton_allowed or x.dim() != 4 or x.shape[0] == 0 or not standard_head(avgpool, dropout, fc):
        return aten()  # any fc a user put in (a Sequential, a Linear without bias) runs as it is
    if not chooser.applies(x.device, x, fc.weight, fc.bias):
        return aten()
    w, b = fc.weight, fc.bias
    tf32 = torch.backends.cuda.matmul.allow_tf32 if x.dtype == torch.float32 else None
    key = choices.HeadKey(str(x.device), x.dtype, tuple(x.shape), tuple(x.stride()), w.shape[0], tf32)
    choice = chooser.lookup(key)
    if choice is None:
        if not chooser.can_measure(x.device):  # capture, static mode: ATen, and nothing to build
            return aten()
        from .backends import availability

        runners = {"aten": aten}
        if availability("triton", x.device) is None:
            runners["triton"] = choices.checked_against(
                lambda: ops.avgpool_linear(x, w, b, backend="triton"),
                aten,
                "the Triton head",
                lambda: F.linear(x.double().mean((2, 3)), w.double(), b.double()),
            )
        choice = chooser.pick(key, x.device, runners)
    return ops.avgpool_linear(x, w, b, backend="triton") if choice == "triton" else aten()


def stem_onednn_params(conv: nn.Conv2d) -> Optional[tuple]:
    """(stride, padding) of conv1 for the "onednn" backend's prepacked stem, or None where conv1 is
    not square, is dilated or grouped, or pads by name."""
    if conv.groups != 1 or square(conv.dilation) != 1 or isinstance(conv.padding, str):
        return None
    params = (square(conv.stride), square(conv.padding))
    return None if None in params else params


def stem_padded_channels(c: int) -> list[int]:
    """The padded channel counts worth trying for a first conv reading ``c`` channels."""
    return sorted({-(-c // m) * m for m in (4, 8)} - {c})


def stem_rows_stride(conv: nn.Conv2d) -> Optional[int]:
    """conv1's stride where the stem's "triton_rows" form takes it: a square, undilated, ungrouped
    conv with a stride above 1 over at most 8 channels and a kernel of at most 8x8
    (backends/triton/conv_rows.py), else None."""
    stride, k = square(conv.stride), square(conv.kernel_size)
    if conv.groups != 1 or square(conv.dilation) != 1 or stride is None or k is None:
        return None
    return stride if stride > 1 and conv.in_channels <= 8 and k <= 8 else None


def stem_triton_params(conv: nn.Conv2d, pool: nn.Module) -> Optional[tuple]:
    """(stride, padding, pool kernel, pool stride, pool padding, ceil_mode) for the Triton stem
    kernel, or None where conv1/maxpool1 are not square, dilated or grouped."""
    pool = pool_params(pool)
    if conv.groups != 1 or square(conv.dilation) != 1 or square(conv.kernel_size) is None:
        return None
    if isinstance(conv.padding, str) or pool is None:
        return None
    params = (square(conv.stride), square(conv.padding), *pool)
    return None if None in params else params


def stem_key(
    x: Tensor, conv: nn.Conv2d, pool: nn.Module, triton_allowed: bool, onednn: bool = False
) -> choices.StemKey:
    """STEM_CHOICE's key for input ``x`` of a stem whose first layers are ``conv`` and ``pool``:
    models whose first layers differ never share a choice."""
    params = (
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        pool.kernel_size,
        pool.stride,
        pool.padding,
        pool.dilation,
        pool.ceil_mode,
    )
    return choices.StemKey(
        str(x.device),
        x.dtype,
        tuple(x.shape),
        x.is_contiguous(),
        choices.fp32_precision(x.dtype),
        triton_allowed,
        params,
        onednn,
    )


def stem_variants(
    x: Tensor, conv: nn.Conv2d, pool: nn.Module, padded: dict, triton_allowed: bool, onednn: bool = False
) -> list[str]:
    """The forms of conv1 + ReLU + maxpool1 that compete for input ``x``, in order of preference
    (``onednn``: the model runs its stem from oneDNN's prepacked weights; that form comes first, so
    where nothing is measured, on CPU, it runs)."""
    from .backends import available_backends

    variants = ["onednn"] if onednn else []
    variants += ["channels_last", *(v for v in padded if v.startswith("pad")), "nchw"]
    params = stem_triton_params(conv, pool)
    if triton_allowed and params is not None and "triton" in available_backends(x.device):
        # The row forms where the model packed conv1 for them (stem_rows_stride); the pooled one
        # where its tiles take the pool (geometry.rows_pool_fits).
        rows = "triton_rows" in padded
        offered = {"triton_rows": rows, "triton_rows_pool": rows and geometry.rows_pool_fits(params[2], params[3])}
        variants += [v for v in STEM_TRITON_VARIANTS if offered.get(v, True)]
    return variants


def stem_reference64(x: Tensor, w1: Tensor, b1: Tensor, conv: nn.Conv2d, pool: nn.Module) -> Tensor:
    """conv1 + ReLU + maxpool1 in float64 with ATen: what the stem's candidates are checked against."""
    y = F.conv2d(x.double(), w1.double(), b1.double(), stride=conv.stride, padding=conv.padding).relu_()
    return pool(y)


def stem_conv1(
    x: Tensor,
    w1: Tensor,
    b1: Tensor,
    padded: dict,
    variant: str,
    conv: nn.Conv2d,
    pool: nn.Module,
    triton_allowed: bool,
    cpp_allowed: bool = False,
) -> Tensor:
    """conv1 (folded weights w1, b1; ``padded``: w1 as the forms "pad<N>" (zero-padded to N
    channels, ``stem_padded_channels``) and "triton_rows" (packing.pack_conv_rows) read it) + ReLU + ``pool`` as
    ``variant`` (the pool, where separate, as ``max_pool`` picks it); the result is channels_last."""
    cl = torch.channels_last
    if variant in STEM_TRITON_VARIANTS:  # reads x in either layout
        stride, padding, *pool_args = stem_triton_params(conv, pool)
        if variant == "triton":
            return ops.conv_relu_maxpool(x, w1, b1, stride, padding, *pool_args, backend="triton")
        if variant == "triton_rows_pool":
            w_rows = padded["triton_rows"]
            return ops.conv_relu_maxpool(x, w1, b1, stride, padding, *pool_args, backend="triton", w_rows=w_rows)
        if variant == "triton_rows":
            y = ops.conv_relu(x, w1, b1, padding, backend="triton", stride=stride, w_rows=padded["triton_rows"])
        else:
            y = ops.conv_relu_maxpool(x, w1, b1, stride, padding, backend="triton")
        return max_pool(y, pool, triton_allowed, cpp_allowed).contiguous(memory_format=cl)
    args = dict(stride=conv.stride, padding=conv.padding)
    if variant == "nchw":
        y = pool(F.conv2d(x.contiguous(), w1.contiguous(), b1, **args).relu_())
        return y.contiguous(memory_format=cl)
    if variant != "channels_last":
        w1 = padded[variant]
        n, c, h, w = x.shape
        xp = torch.empty((n, w1.shape[1], h, w), dtype=x.dtype, device=x.device, memory_format=cl)
        xp[:, c:].zero_()
        xp[:, :c].copy_(x)
        x = xp
    y = F.conv2d(geometry.channels_last_input(x), w1, b1, **args).relu_()
    y = max_pool(y, pool, triton_allowed, cpp_allowed)
    return y.contiguous(memory_format=cl)  # a 1-channel input is NCHW and channels_last at once
