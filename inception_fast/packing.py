"""BatchNorm folding, weight packing and staleness tracking.

A block's packed weights (layouts in ``inception_fast.backends``):
  w_red (ch1+ch3red+ch5red, Cin), b_red   -- the three 1x1 convs that read the block input
  w_pool (pool_proj, Cin), b_pool          -- the pool branch's 1x1
  w3, b3 / w5, b5                          -- the 3x3 and k×k convs, channels_last 4-D
Eval-mode BatchNorm is folded into each conv with that layer's own eps.

``PackCache`` rebuilds the packed tensors whenever any source changed: an in-place
update (optimizer step, ``load_state_dict``'s copy_) bumps its version counter,
``.to()``/``.half()`` replace its storage, and assigning a new Parameter changes its
identity, so the key (identity, version, storage pointer) of every source tensor
catches all three; a BatchNorm's eps is a source too, compared by value.  Two
writers leave version counters alone: optimizers with ``fused=True`` (their step
kernels write the parameters directly) and nn.BatchNorm2d's running-statistics
update in train mode.  So every optimizer step, through a global step hook, moves
``weights_epoch``, which is part of every key; each BatchNorm's ``num_batches_tracked``,
which its train-mode forward moves, is a source; and the fused modules drop their caches
after a forward in which one of their BatchNorms ran with batch statistics, and on
``train()``/``eval()``.  The cache holds an alias of each source it was built from, so
a replaced storage stays allocated (one stale copy of the weights, until the next
rebuild) and its address cannot come back for a different tensor.

Inference tensors (a model built, moved or loaded under ``torch.inference_mode()``) keep no
version counter, so an in-place change leaves their key as it was; so do parameters attached
into a flat buffer with ``.data =``, and CPU tensors in shared memory, which other processes
write (``_watched``).  For them the cache keeps a private copy
of each such source and, on CPU, compares the bits on every forward (one read
of the weights and of the copy, cheaper than a rebuild; benchmarks/inference_tensor_cost.py
measures it), rebuilding on any difference.  The build reads the copies, not the sources, so the
packed weights hold exactly the bits the next forward compares against, whatever another thread
or process writes meanwhile.  On other devices that comparison would synchronize
the host with the device, so there the packed weights are rebuilt on every forward instead
(a few small kernels per block, which a CUDA graph captures along with the forward).

The check runs on every forward, so the sources are gathered through the modules'
``_modules``/``_parameters``/``_buffers`` dicts, not ``nn.Module.__getattr__``:
about 10 µs a block instead of 75 µs (the eager batch-1 forward is mostly host time).
"""

from __future__ import annotations

import contextvars
from typing import Callable, NamedTuple, Optional

import torch
import torch.utils._pytree as pytree
from torch import Tensor, nn
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

from .testing import float_bits

__all__ = [
    "PackedBlock",
    "stock",
    "conv_and_bn",
    "fold_conv_bn",
    "pack_block",
    "pack_units",
    "block_convs",
    "conv_bn_tensors",
    "conv_bn_sources",
    "PackCache",
    "weights_epoch",
    "rows_channels",
    "rows_length",
    "pack_conv_rows",
]


def rows_channels(cin: int, stride: int) -> int:
    """The channels CP of the padded input that backends/triton/conv_rows.py reads (and of its
    packed weight): 4 where the stride is even and the input has at most 4 channels (a window
    then starts at a multiple of 8 elements), else 8."""
    return 4 if stride % 2 == 0 and cin <= 4 else 8


def rows_length(ks: int, cp: int) -> int:
    """KROW, the elements conv_rows.py loads per kernel row: KS * CP rounded up to a power of two
    (at least 16, the tensor cores' K)."""
    n = 16
    while n < ks * cp:
        n *= 2
    return n


def pack_conv_rows(w: Tensor, stride: int) -> Tensor:
    """A conv weight (COUT, CIN, KS, KS) as conv_rows.py reads it: (KS, KROW, COUT) contiguous, row
    kh's element kw * CP + c holding w[:, c, kh, kw], zero where kw >= KS or c >= CIN."""
    cout, cin, ks, _ = w.shape
    cp = rows_channels(cin, stride)
    rows = w.new_zeros((ks, ks, cp, cout))
    rows[:, :, :cin] = w.permute(2, 3, 1, 0)
    packed = w.new_zeros((ks, rows_length(ks, cp), cout))
    packed[:, : ks * cp] = rows.reshape(ks, ks * cp, cout)
    return packed


class PackedBlock(NamedTuple):
    w_red: Tensor
    b_red: Tensor
    w_pool: Tensor
    b_pool: Tensor
    w3: Tensor
    b3: Tensor
    w5: Tensor
    b5: Tensor


def stock(module: nn.Module, cls: type) -> bool:
    """Whether ``module`` is a ``cls`` that computes what ``cls`` does: a subclass with a forward of
    its own (a scaled pool, a LoRA Linear, a standardised conv) computes something else, and a fused
    stage or a measured choice keyed on its settings alone would replace that computation."""
    return isinstance(module, cls) and type(module).forward is cls.forward


def conv_and_bn(unit) -> tuple[nn.Module, Optional[nn.Module]]:
    """A conv(→BN) unit as (conv, bn or None): a module with ``conv`` (and maybe ``bn``) children,
    like torchvision's BasicConv2d and ours, or a (conv, bn-or-None) pair (a block that ``fuse()``
    recognised from its forward, whose convs and BatchNorms are wherever its author put them)."""
    if isinstance(unit, tuple):
        return unit
    children = unit._modules
    return children["conv"], children.get("bn")


# While a PackCache builds: id(watched source) -> its private copy, which the build reads instead.
_STAND_INS: contextvars.ContextVar[Optional[dict]] = contextvars.ContextVar("inception_fast_stand_ins", default=None)


def _read(t: Optional[Tensor]) -> Optional[Tensor]:
    """``t``, or the copy standing in for it while a PackCache builds (see ``PackCache.get``).
    Never while torch.compile traces (nothing stands in then; dynamo before torch 2.14 cannot
    trace a ContextVar's get)."""
    if torch.compiler.is_compiling():
        return t
    stand_ins = _STAND_INS.get()
    return t if stand_ins is None or t is None else stand_ins.get(id(t), t)


def fold_conv_bn(unit, dtype: Optional[torch.dtype] = None) -> tuple[Tensor, Tensor]:
    """(weight, bias) of conv→BN as one conv.  ``unit``: torchvision's BasicConv2d, ours, or a
    (conv, bn-or-None) pair.  A conv without bias and without BN gets a zero bias.

    Differentiable: under autograd the folded tensors carry gradients back to the
    conv and BN parameters.  Folding is done in at least float32.
    """
    conv, bn = conv_and_bn(unit)
    w = _read(conv.weight)
    dtype = dtype or w.dtype
    work = torch.promote_types(w.dtype, torch.float32)
    w = w.to(work)
    b = _read(conv.bias)
    b = b.to(work) if b is not None else None
    if bn is not None:
        mean, var, gamma, beta = (_read(t) for t in (bn.running_mean, bn.running_var, bn.weight, bn.bias))
        if var is None or mean is None:
            raise RuntimeError("cannot fold a BatchNorm without running statistics (track_running_stats=False)")
        inv_std = torch.rsqrt(var.to(work) + bn.eps)
        scale = inv_std if gamma is None else gamma.to(work) * inv_std
        shift = -mean.to(work) * scale
        if beta is not None:
            shift = shift + beta.to(work)
        if b is not None:
            shift = shift + b * scale
        w = w * scale.view(-1, 1, 1, 1)
        b = shift
    elif b is None:
        b = torch.zeros(w.shape[0], dtype=work, device=w.device)
    return w.to(dtype), b.to(dtype)


def pack_block(block: nn.Module, dtype: Optional[torch.dtype] = None) -> PackedBlock:
    """Packs an Inception block (torchvision's or ours) for the fused op."""
    return pack_units(block_convs(block), dtype)


def pack_units(units, dtype: Optional[torch.dtype] = None) -> PackedBlock:
    """Packs a block given as its six conv(→BN) units in packing order: branch 1's 1x1, branch 2's
    1x1 and k×k, branch 3's 1x1 and k×k, the pool branch's 1x1 (see ``fold_conv_bn`` for a unit)."""
    (w1, b1), (w2r, b2r), (w3, b3), (w5r, b5r), (w5, b5), (wp, bp) = (fold_conv_bn(unit, dtype) for unit in units)
    w_red = torch.cat([w1, w2r, w5r], 0).flatten(1).contiguous()
    b_red = torch.cat([b1, b2r, b5r], 0).contiguous()
    cl = torch.channels_last
    return PackedBlock(
        w_red,
        b_red,
        wp.flatten(1).contiguous(),
        bp.contiguous(),
        w3.contiguous(memory_format=cl),
        b3.contiguous(),
        w5.contiguous(memory_format=cl),
        b5.contiguous(),
    )


_EPOCH = [0]


def weights_epoch() -> int:
    """How many optimizer steps have run in this process (any optimizer): part of every cache key,
    since a fused optimizer's step changes parameters without moving their version counters."""
    return _EPOCH[0]


def _count_step(optimizer, args, kwargs) -> None:
    _EPOCH[0] += 1


register_optimizer_step_post_hook(_count_step)


def _state(sources: list) -> list:
    """The cache key: the optimizer-step count, then (identity, version, storage pointer) of each
    tensor source and the value of any other (a BatchNorm's eps).  An inference tensor keeps no
    version counter: version None (see the module docstring)."""
    out = [_EPOCH[0]]
    for t in sources:
        if not isinstance(t, Tensor):
            out.append(t)
            continue
        out.append((id(t), None if t.is_inference() else t._version, t.data_ptr()))
    return out


def _watched(t: Tensor) -> bool:
    """Whether a source can change with its key unchanged, so the cache compares its bits: an
    inference tensor (no version counter); a CPU tensor in shared memory (``share_memory()``,
    torch.multiprocessing), which other processes write without moving this process's counter
    (Hogwild training); or a tensor that shares a larger storage without being a view of it.
    That is one attached with ``.data =`` into a flat buffer, as
    torch.nn.utils.vector_to_parameters and flat-parameter wrappers do; writes through the buffer
    move the buffer's version counter, not its own.  (A view shares its base's counter.)"""
    if t.is_inference() or (t.device.type == "cpu" and t.is_shared()):
        return True
    return not t._is_view() and t.untyped_storage().nbytes() > t.numel() * t.element_size()


def _faking() -> bool:
    """Whether a FakeTensorMode is active (a trace): real parameters then compute fake results."""
    return any(isinstance(mode, FakeTensorMode) for mode in _get_current_dispatch_mode_stack())


def _holds_fake(packed) -> bool:
    """Whether ``packed`` holds a FakeTensor (packed under FakeTensorMode), which a real call must
    not be given."""
    return any(isinstance(t, FakeTensor) for t in pytree.tree_leaves(packed))


def _same_bits(a: Tensor, b: Tensor) -> bool:
    """Bit-for-bit equality (NaN equals the same NaN, -0.0 differs from 0.0)."""
    if a.dtype.is_floating_point or a.dtype.is_complex:
        a, b = float_bits(a), float_bits(b)
    return torch.equal(a, b)


_CONV_TENSORS = ("weight", "bias")
_BN_TENSORS = ("weight", "bias", "running_mean", "running_var")


def _gather(units, extra: Optional[list]) -> list:
    """``conv_bn_tensors``, and where ``extra`` is a list, what ``conv_bn_sources`` adds appended to it."""
    out = []
    for unit in units:
        conv, bn = conv_and_bn(unit)
        params = conv._parameters
        for name in _CONV_TENSORS:
            t = params[name] if name in params else getattr(conv, name, None)
            if t is not None:
                out.append(t)
        if bn is None:
            continue
        params, buffers = bn._parameters, bn._buffers
        for name in _BN_TENSORS:
            if name in params:
                t = params[name]
            elif name in buffers:
                t = buffers[name]
            else:
                t = getattr(bn, name, None)
            if t is not None:
                out.append(t)
        if extra is not None:
            counter = buffers.get("num_batches_tracked")
            if counter is not None:
                extra.append(counter)
            extra.append(bn.eps)
    return out


def conv_bn_tensors(units) -> list[Tensor]:
    """Every tensor that folding reads from these conv(→BN) units (see ``fold_conv_bn``).

    Dict reads, not attribute reads (see the module docstring): this runs on every forward.  A
    tensor that is neither a parameter nor a buffer is read as folding reads it, through the
    attribute: a pruned or parametrized weight or bias is computed, a plain tensor attribute (a
    hypernetwork's) is held.  A frozen BatchNorm (torchvision.ops.FrozenBatchNorm2d) keeps its
    affine terms as buffers.
    """
    return _gather(units, None)


def conv_bn_sources(units) -> list:
    """What folding reads from these units (a PackCache's sources): their tensors
    (``conv_bn_tensors``), then each BatchNorm's ``num_batches_tracked`` and eps.  The counter is
    not folded, but nn.BatchNorm2d's forward in train mode moves it (``add_``) while its
    running-statistics update moves no version counter: a BatchNorm that ran in train mode
    anywhere (called on its own, shared with another model) shows in the key."""
    extra: list = []
    return _gather(units, extra) + extra


def block_convs(block: nn.Module) -> list[nn.Module]:
    """The six conv(→BN) units of an Inception block, in packing order."""
    children = block._modules
    branch2, branch3 = children["branch2"]._modules, children["branch3"]._modules
    return [
        children["branch1"],
        branch2["0"],
        branch2["1"],
        branch3["0"],
        branch3["1"],
        children["branch4"]._modules["1"],
    ]


def _block_sources(block: nn.Module) -> list:
    return conv_bn_sources(block_convs(block))


class PackCache:
    """Caches ``build(module, dtype)`` per dtype, rebuilt whenever a source changes.

    ``sources(module)`` lists what the build reads: tensors, and plain values (compared by value).
    ``build`` and ``sources`` are module-level functions, so a model holding the cache pickles.
    """

    def __init__(
        self,
        build: Callable[[nn.Module, torch.dtype], object],
        sources: Callable[[nn.Module], list] = _block_sources,
    ) -> None:
        self._build = build
        self._sources = sources
        # dtype -> (key, the sources kept (aliases), the watched sources' copies, packed)
        self._entries: dict = {}

    def get(self, module: nn.Module, dtype: torch.dtype):
        if torch.compiler.is_compiling():
            # Storage addresses cannot be guarded on: the compiled graph folds and packs from the
            # parameters on every call (a few small fused ops), so it never goes stale.
            with torch.no_grad():
                return self._build(module, dtype)
        sources = self._sources(module)
        if _faking() or (sources and isinstance(sources[0], FakeTensor)):
            # A fake trace, or a module built under FakeTensorMode (called outside it: every tensor
            # made under the mode is fake, so its first source tells, at the cost of one isinstance a
            # lookup): no data for the cache's key and bit comparison to read, nor is a fake pack kept.
            with torch.no_grad():
                return self._build(module, dtype)
        key = _state(sources)
        entry = self._entries.get(dtype)
        if entry is not None and entry[0] == key and self._unchanged(sources, entry[2]):
            return entry[3]
        watched = [i for i, t in enumerate(sources) if isinstance(t, Tensor) and _watched(t)]
        cacheable = all(sources[i].device.type == "cpu" for i in watched)
        # Built outside inference mode, so that an entry built under torch.inference_mode() can be
        # saved for a later forward's backward (an input that wants its gradient).
        with torch.inference_mode(False), torch.no_grad():  # (this order: inference_mode(False) turns grad on)
            # A watched source gets a private copy, the content the next call compares against,
            # and the build reads the copy (another thread or process may write the source).
            copies = [(i, sources[i].detach().clone()) for i in watched] if cacheable else []
            token = _STAND_INS.set({id(sources[i]): copy for i, copy in copies})
            try:
                packed = self._build(module, dtype)
            finally:
                _STAND_INS.reset(token)
        if _holds_fake(packed):  # built under FakeTensorMode (a trace): no data to keep for real calls
            return packed
        if not cacheable:
            self._entries = {}  # nothing cheap proves these unchanged next time: rebuild every call
            return packed
        kept = [t.detach() if isinstance(t, Tensor) else t for t in sources]  # keeps the storages' addresses taken
        self._entries = {k: v for k, v in self._entries.items() if v[0] == key}
        self._entries[dtype] = (key, kept, copies, packed)
        return packed

    def __getstate__(self) -> dict:
        # A copy (copy.deepcopy, pickling) starts empty and packs again on its first forward: the
        # packed entries are derived data, and some (oneDNN's prepacked weights) are opaque
        # tensors that cannot be copied or pickled.
        state = self.__dict__.copy()
        state["_entries"] = {}
        return state

    @staticmethod
    def _unchanged(sources: list, copies: list) -> bool:
        """Whether every watched source (``_watched``) still holds the bits of its private copy."""
        return all(_same_bits(sources[i], copy) for i, copy in copies)

    def snapshot(self) -> dict:
        """The current entries (holding them keeps their tensors allocated)."""
        return dict(self._entries)

    def clear(self) -> None:
        self._entries.clear()
