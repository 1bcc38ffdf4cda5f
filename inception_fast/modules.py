"""FusedInception, FusedGoogLeNet and fuse(): drop-ins for the reference and torchvision.

The fused modules subclass the reference ones, so they own exactly the same
submodules and state_dict keys; only forward differs:

* eval mode: BatchNorm folded, packed weights cached (rebuilt when any source
  tensor changes), one ``inception_fast::inception_block`` op per block.  With
  gradients enabled the packing is redone differentiably and the op's registered
  backward carries gradients back to the original parameters.
* BatchNorm with batch statistics (train mode, or no running statistics): nothing folds, and
  one ``inception_fast::inception_block_bn_train`` op per block computes the block from the raw
  conv weights and the BN affine parameters (the three 1x1s as one GEMM, batch statistics per
  channel, normalise + ReLU into the slices of one output; registered backward), and the block
  then updates each BatchNorm's running statistics as nn.BatchNorm2d does (momentum or the
  cumulative average, unbiased variance, num_batches_tracked).  A block whose BatchNorms mix
  batch and running statistics, differ in eps or are not plain nn.BatchNorm2d runs its own
  modules.  Without BatchNorm (paper, d2l) training goes through the folded op.

FusedGoogLeNet is GoogLeNet's network with its stage hooks (stem, block, pool, pool + block) fused:
the stem and the pools in the forms measured fastest (``inception_fast.stages``), and, where
INCEPTION_FAST_EXTRA_CANDIDATES offers it, maxpool2/3/4 folded into the first launch of the block
after them where that measured faster.  NCHW input works: the
first conv reads either layout and everything after it is channels_last (the kernels' layout); a
standalone FusedInception converts in and back out, so its output's memory format follows the
input's, like torch convolutions.
"""

from __future__ import annotations

import contextvars
import copy
import hashlib
import importlib
import logging
import operator
import sys
import types
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.autograd.forward_ad as forward_ad
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn
from torch._subclasses.fake_tensor import FakeTensor
from torch.nn.utils import parametrize

from . import backends, choices, geometry, ops, precompiler, stages
from .backends import onednn_backend
from .caches import LRUDict
from .packing import (
    PackCache,
    block_convs,
    conv_and_bn,
    conv_bn_sources,
    conv_bn_tensors,
    fold_conv_bn,
    pack_conv_rows,
    pack_units,
    stock,
)
from .recognize import stored_weight
from .reference import BLOCK_CONFIGS, GoogLeNet, Inception

__all__ = [
    "FusedInception",
    "FusedForeignInception",
    "FusedGoogLeNet",
    "fuse",
    "FuseReport",
    "available_backends",
    "clear_packed_weights",
    "is_inception_block",
]

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# The backend a FusedGoogLeNet's forward under backend="auto" on CPU runs (CPU_NETWORK_CHOICE), set
# for the length of that forward: its blocks with backend="auto" run it (_PackedBlock.backend_for).
_NETWORK_BACKEND: contextvars.ContextVar = contextvars.ContextVar("inception_fast_network_backend", default=None)
# CPU_NETWORK_CHOICE measures inputs of at most this many pixels (N·H·W; about a dozen whole forwards
# each, the first forward's cost): what its candidates differ by is a cost per call, which larger
# inputs amortise.  Larger ones run auto's oneDNN form unmeasured (benchmarks/results: it leads at
# 224x224 from batch 1).
CPU_NETWORK_MEASURE_PIXELS = 2 * 224 * 224
# {FusedGoogLeNet: LRUDict {(shape, dtype, channels_last, threads, children's ids): backend or None}}:
# each model's CPU_NETWORK_CHOICE answers, so that a forward reads its choice without digesting the
# model's layers (NetworkKey.layers); a child put in misses.
_NETWORK_MEMO: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_MISS = object()


def available_backends(device="cpu") -> list[str]:
    """The backends that run on ``device`` (e.g. ["torch", "triton", "cuda"]); none on a CUDA device
    this machine does not have."""
    try:
        device = torch.device(device)
    except (TypeError, RuntimeError, ValueError):
        raise ValueError(
            f"available_backends expects a device (a torch.device, a name such as 'cpu' or 'cuda:0', or "
            f"a CUDA index), got {device!r}"
        ) from None
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():  # (0 without CUDA)
        return []
    return backends.available_backends(device)


def _torchvision_class(name: str) -> Optional[type]:
    """torchvision's GoogLeNet class ``name`` (GoogLeNet, Inception, BasicConv2d, InceptionAux), or
    None without torchvision, which is optional."""
    try:
        module = importlib.import_module("torchvision.models.googlenet")
    except Exception:
        return None
    return getattr(module, name)


def _block_classes() -> tuple:
    """Our, the fused and torchvision's Inception block classes."""
    return tuple(c for c in (FusedInception, Inception, _torchvision_class("Inception")) if c is not None)


def _network_classes() -> tuple:
    """Our, the fused and torchvision's GoogLeNet classes."""
    return tuple(c for c in (FusedGoogLeNet, GoogLeNet, _torchvision_class("GoogLeNet")) if c is not None)


def is_inception_block(module: nn.Module) -> bool:
    """True for torchvision's and our Inception blocks (anything with their four-branch layout)."""
    return isinstance(module, _block_classes())


def _block_config(block: nn.Module) -> dict:
    conv = lambda basic: basic.conv  # noqa: E731
    k = conv(block.branch3[1]).kernel_size[0]
    return dict(
        in_channels=conv(block.branch1).in_channels,
        ch1x1=conv(block.branch1).out_channels,
        ch3x3red=conv(block.branch2[0]).out_channels,
        ch3x3=conv(block.branch2[1]).out_channels,
        ch5x5red=conv(block.branch3[0]).out_channels,
        ch5x5=conv(block.branch3[1]).out_channels,
        pool_proj=conv(block.branch4[1]).out_channels,
        batch_norm=getattr(block.branch1, "bn", None) is not None,
        branch3_kernel=k,
    )


def _inception_config(block: Optional[nn.Module]) -> Optional[dict]:
    """``_block_config`` of an Inception block whose convs sit where ours do and whose branch 3
    kernel an Inception takes, else None (a block that is not one, or was changed so far that only
    its own forward computes it)."""
    if not is_inception_block(block):
        return None
    try:
        config = _block_config(block)
    except (AttributeError, TypeError, IndexError, KeyError):
        return None
    return config if config["branch3_kernel"] in (3, 5) else None


def _conv_shapes(block: "_PackedBlock") -> tuple:
    """The shapes of a block's six conv weights in packing order: what its packed weights' shapes
    follow from (a measured choice's key), without packing them."""
    return tuple(tuple(conv_and_bn(unit)[0].weight.shape) for unit in block._units())


def _autocast_on(device_type: str) -> bool:
    """torch.is_autocast_enabled for a device type, False for the meta device (autocast has no
    state for it)."""
    return device_type != "meta" and torch.is_autocast_enabled(device_type)


def _compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype a block computes in: under autocast the autocast dtype, as the reference's convs
    would; else the input's."""
    if _autocast_on(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def _check_params_match(x: Tensor, ref: Tensor, what: str) -> None:
    if x.device != ref.device:
        raise RuntimeError(
            f"{what} input is on {x.device} but its weights are on {ref.device}; "
            f"move the model with .to({str(x.device)!r}) or the input with .to({str(ref.device)!r})"
        )
    if x.dtype != ref.dtype and not _autocast_on(x.device.type):
        raise TypeError(
            f"{what} input dtype {x.dtype} does not match its weights' dtype {ref.dtype}; "
            f"cast the input with .to({ref.dtype}) or the model with .to({x.dtype})"
        )


def _check_stage_params(model: nn.Module, stage: nn.Module, weight: Tensor, x: Tensor) -> None:
    """A stage of ``model`` (a block, a stem conv) moved to another dtype or device on its own is
    refused, as the reference's convs refuse it, not computed with its weights cast.  (The stage's
    name is looked up only then.)"""
    if x.device != weight.device or (x.dtype != weight.dtype and not _autocast_on(x.device.type)):
        name = next((n for n, m in model.named_children() if m is stage), type(stage).__name__)
        _check_params_match(x, weight, f"GoogLeNet's {name}")


def _transformed(x) -> bool:
    """Whether this forward runs under a transform the fused ops have no rules for: one of
    torch.func's (vmap, grad, jvp, jacrev, jacfwd; functional_call alone is none), forward-mode AD
    (torch.autograd.forward_ad), a torch.fx symbolic trace (``x`` a Proxy: torchvision's
    create_feature_extractor), a TorchScript trace (torch.jit.trace: its graph then holds plain
    ATen ops, which load without this package), an ONNX export, or a torch.export under autocast.
    The fused modules then compute with the reference's stages and their own modules, whose ATen
    ops have those rules (``_ReferenceStages``)."""
    if isinstance(x, torch.fx.Proxy) or torch._C._functorch.maybe_current_level() is not None:
        return True  # (the functorch level first: torch.compile may trace a transform's body)
    if torch.compiler.is_compiling():
        # torch.export bakes no autocast that is on around it: the program's ATen ops cast by the
        # autocast state when it runs, which the fused ops (one dtype, chosen at trace time) cannot.
        return _exporting() and (_onnx_exporting() or _autocast_on(x.device.type))
    return forward_ad._current_level >= 0 or torch.jit.is_tracing() or _onnx_exporting()


def _onnx_exporting() -> bool:
    """Whether torch.onnx.export is tracing (its TorchScript path or its torch.export-based one):
    ONNX has no translation of the fused ops, so the exported graph holds the reference's ATen
    ops, as a TorchScript trace's does.  (torch.onnx is not imported until someone uses it.)"""
    onnx = sys.modules.get("torch.onnx")
    return onnx is not None and onnx.is_in_onnx_export()


def _check_backend_name(backend: str) -> None:
    """Fails early on a backend name nobody knows; availability is checked per device.  Loads the
    backend plugins now, so that a first forward under torch.compile does not import them mid-trace."""
    known = backends.names()
    if backend != "auto" and backend not in known:
        raise ValueError(f"unknown backend {backend!r}; known backends: auto, {', '.join(known)}")


def _pack_own_units(block: nn.Module, dtype: torch.dtype):
    return pack_units(block._units(), dtype)


def _own_unit_tensors(block: nn.Module) -> list:
    return conv_bn_tensors(block._units())


def _own_unit_sources(block: nn.Module) -> list:
    return conv_bn_sources(block._units())


def _global_hooks() -> bool:
    """Whether a hook for every module is registered (``nn.modules.module.register_module_forward_hook``
    and its kin): the fused stages would skip the calls of the modules they replace."""
    m = nn.modules.module
    forward = m._global_forward_hooks or m._global_forward_pre_hooks
    return bool(forward or m._global_backward_hooks or m._global_backward_pre_hooks)


def _hooks_inside(modules) -> bool:
    """Whether any of ``modules`` (None allowed) or a module under them carries a hook or a forward
    of its own (set on the instance: ``module.forward = ...``, as activation-checkpointing wrappers
    do), or a global module hook is registered: a fused stage does not call the modules it
    replaces, so where one carries a hook (a forward pre-hook of torch.nn.utils.prune, a feature
    extractor's forward hook) or another forward, the stage runs its own modules.  Plain attribute
    reads, about 0.4 µs a module: this runs on every forward."""
    if _global_hooks():
        return True
    stack = list(modules)
    while stack:
        module = stack.pop()
        if module is None:
            continue
        if (
            module._forward_hooks
            or module._forward_pre_hooks
            or module._backward_hooks
            or module._backward_pre_hooks
            or "forward" in module.__dict__
        ):
            return True
        stack.extend(module._modules.values())
    return False


# Module structure.  A fused stage computes what its modules computed when it was built (or fuse()d);
# a module put in place of one of them later (a LoRA wrapper around a conv, a dilated conv,
# GroupNorm for a BatchNorm, an avg pool for the max pool, a module inserted into a branch) may
# compute something else.  Each forward walks the stage's modules and compares them, by identity,
# with those it was built from or last checked (``_StructureCheck``); where they differ it checks
# them with a plain predicate (no tracing: a forward may run on several threads, and under
# torch.compile, whose guards on module identity then recompile).  The signature holds the modules
# themselves, not their ids: an id can be reused by a new object once the old one is gone.
def _module_signature(modules) -> tuple:
    """``modules`` and every module under them (None skipped), in walk order."""
    out = []
    stack = list(modules)
    while stack:
        module = stack.pop()
        if module is not None:
            out.append(module)
            stack.extend(module._modules.values())
    return tuple(out)


def _walk_matches(modules, expected: tuple) -> bool:
    """Whether ``_module_signature(modules)`` would be ``expected`` (walked without building it: every
    forward of every fused stage runs this)."""
    stack, i, n = list(modules), 0, len(expected)
    while stack:
        module = stack.pop()
        if module is None:
            continue
        if i == n or expected[i] is not module:
            return False
        i += 1
        stack.extend(module._modules.values())
    return i == n


def _itself(module: nn.Module) -> tuple:
    return (module,)


# A conv's or pool's settings (stride, padding, kernel size, ...) are read from the module on every
# call of its own forward; a fused stage read them once, when it checked the layout and packed.
_GEOMETRY = (
    nn.modules.conv._ConvNd,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
)


_SETTING_TYPES = (int, float, str, tuple, list, type(None))


def _module_settings(signature: tuple) -> tuple:
    """(index, names, values, getter, got) for each conv and pool of a signature: its public settings
    (attributes holding numbers, strings, tuples, lists or None; not tensors, such as a weight held
    as a plain attribute, which the packed weights' key follows) as they are now, lists copied;
    ``getter`` reads them from its ``__dict__`` in one call, and ``got`` is what it returned."""
    out = []
    for i, module in enumerate(signature):
        if isinstance(module, _GEOMETRY):
            d = module.__dict__
            names = tuple(
                k for k, v in d.items() if not k.startswith("_") and k != "training" and isinstance(v, _SETTING_TYPES)
            )
            if names:
                getter = operator.itemgetter(*names)
                values = tuple(list(d[k]) if isinstance(d[k], list) else d[k] for k in names)
                out.append((i, names, values, getter, values if len(names) > 1 else values[0]))
    return tuple(out)


def _settings_match(signature: tuple, settings: tuple) -> bool:
    """Whether each conv and pool of ``signature`` still has the settings recorded in ``settings``."""
    compiling = torch.compiler.is_compiling()
    for i, names, values, getter, got in settings:
        module = signature[i]
        if compiling:  # attribute reads, which torch.compile traces (and guards on)
            if any(getattr(module, name, None) != value for name, value in zip(names, values)):
                return False
            continue
        try:
            if getter(module.__dict__) != got:
                return False
        except KeyError:  # an attribute deleted
            return False
    return True


class _StructureCheck:
    """Whether a stage's modules (``modules(owner)``: what it computes from) still compute its fused
    form: the answer kept for the modules last seen, else ``check(owner)`` on the new ones.  Modules
    are the same when they are the same objects and each conv and pool keeps its settings; where
    they change, ``changed(owner)`` drops what was built from the old ones.  Built knowing they do.
    ``modules``, ``check`` and ``changed`` are plain functions and the signature holds the owner's
    own modules, so the owner pickles and deep-copies with its answer.  A DataParallel replica (its
    modules are copies, walked on its first forward) takes the original's answer."""

    def __init__(self, owner, modules, check, changed, ok: bool = True) -> None:
        self.modules, self.check, self.changed = modules, check, changed
        signature = _module_signature(modules(owner)) if owner is not None else None
        # (signature, settings, answer) as one value: a forward on another thread reads all three
        # as they were set together.
        self.state = (signature, _module_settings(signature) if owner is not None else (), ok)

    def __setstate__(self, state: dict) -> None:
        if "state" not in state:  # pickled before settings were kept: its modules' settings now
            signature, answer = state.pop("signature"), state.pop("answer")
            state["state"] = (signature, _module_settings(signature) if signature is not None else (), answer)
        self.__dict__.update(state)

    def ok(self, owner) -> bool:
        signature, settings, answer = self.state
        if (
            signature is not None
            and _walk_matches(self.modules(owner), signature)
            and _settings_match(signature, settings)
        ):
            return answer
        new = _module_signature(self.modules(owner))
        new_answer = answer if signature is None else bool(self.check(owner))
        if not torch.compiler.is_compiling():  # a trace keeps no state (its guards recompile)
            if signature is not None:
                self.changed(owner)
            self.state = (new, _module_settings(new), new_answer)
        return new_answer

    def for_replica(self) -> "_StructureCheck":
        return _StructureCheck(None, self.modules, self.check, self.changed, self.state[2])


# The six units (packing order: branch 1, branch 2's 1x1 and 3x3, branch 3's 1x1 and kxk, pool) in
# the channel order of inception_block_bn_train's gamma, beta and statistics: the three 1x1s, the
# 3x3, the kxk, the pool projection.
_PRE_ORDER = (0, 1, 3, 2, 4, 5)


def _parametrized(convs) -> bool:
    """Whether a conv's weight is computed by a parametrization (torch.nn.utils.parametrize), outside
    torch.compile's tracing (which sees the computation itself)."""
    return not torch.compiler.is_compiling() and any(_weight_parametrized(conv) for conv in convs)


def _weight_parametrized(module: nn.Module) -> bool:
    # parametrize.is_parametrized, by a dict read (it goes through a failing __getattr__: 7 µs a block)
    plist = module._modules.get("parametrizations") if module is not None else None
    return plist is not None and "weight" in plist._modules


def _uses_batch_stats(bn: nn.Module) -> bool:
    """Whether this BatchNorm normalises with the batch's statistics: in train mode, or without
    running statistics (nn.BatchNorm2d's own rule); never for a frozen one (torchvision's
    FrozenBatchNorm2d, not an nn.BatchNorm2d kin, always uses its buffers)."""
    if not isinstance(bn, nn.modules.batchnorm._NormBase):
        return False
    return bn.training or (bn.running_mean is None and bn.running_var is None)


def _trains_a_batch_norm(modules) -> bool:
    """Whether a BatchNorm among or under ``modules`` is in train mode: run through nn.BatchNorm2d, it
    updated its running statistics without moving their version counters, so the caches folded
    from them must go (inception_fast.packing).  Any modules: a stage running its own modules may
    hold ones put in place of its units."""
    return any(
        isinstance(m, nn.modules.batchnorm._NormBase) and m.training
        for module in modules
        if module is not None
        for m in module.modules()
    )


def _count_batch(bn: nn.Module):
    """nn.BatchNorm2d.forward's counting: num_batches_tracked += 1 in train mode with running
    statistics tracked; returns the running-average factor (momentum, or 1/count with momentum
    None), None where nothing is tracked."""
    if not (bn.training and bn.track_running_stats):
        return None
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    return factor


@torch.no_grad()
def _update_running_stats(bns, mean: Tensor, var: Tensor, count: int) -> None:
    """nn.BatchNorm2d's running-statistics update for each BN in turn, from its slice of the batch
    mean and biased variance: running = factor * batch + (1 - factor) * running, with the unbiased
    variance (count / (count - 1)) for the running estimate."""
    col = 0
    for bn in bns:
        c = bn.num_features
        factor = _count_batch(bn)
        if factor is not None and bn.running_mean is not None:
            m, v = mean[col : col + c], var[col : col + c] * (count / (count - 1))
            rm, rv = bn.running_mean, bn.running_var
            rm.copy_(factor * m + (1.0 - factor) * rm.float())
            rv.copy_(factor * v + (1.0 - factor) * rv.float())
        col += c


def _prepack_own_units(block: nn.Module, dtype: torch.dtype):
    return onednn_backend.prepack_block(pack_units(block._units(), dtype))


def _traced_by_compile() -> bool:
    """Whether Dynamo traces this forward for torch.compile (not torch.export, whose program keeps
    the package's op).  Dynamo's own flag: torch.compiler.is_compiling() also reads True in
    other threads while one compiles."""
    dynamo = getattr(torch.compiler, "is_dynamo_compiling", torch.compiler.is_compiling)
    return dynamo() and not _exporting()


def _exporting() -> bool:
    """Whether torch.export traces this forward.  Read from export's own flag: torch 2.11's Dynamo
    folds a traced call of torch.compiler.is_exporting() to True under torch.compile as well."""
    flag = getattr(torch.compiler, "_is_exporting_flag", None)
    return torch.compiler.is_exporting() if flag is None else bool(flag)


def _prepacked_path(device: torch.device, dtype: torch.dtype, tensors) -> bool:
    """Whether the "onednn" backend runs from its prepacked (opaque, gradient-free) weights: on CPU
    in float32, or bfloat16 where oneDNN has bf16 convolutions on this CPU, not while torch.compile
    or torch.export traces (the graph holds plain ATen ops or the op, computed from the parameters),
    and only where no gradient is wanted."""
    if device.type != "cpu" or dtype not in onednn_backend.dtypes() or torch.compiler.is_compiling():
        return False
    if isinstance(tensors[0], FakeTensor):  # a fake trace (FakeTensorMode): prepacking reads the data
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def _refuse_script(module: nn.Module):
    """``__prepare_scriptable__``, which torch.jit.script calls on every module first: a clear
    error in place of TorchScript's compiler error deep inside the fused forward."""
    raise TypeError(
        f"torch.jit.script cannot compile {type(module).__name__}: its forward picks fused ops in "
        "Python.  Use torch.jit.trace (a TorchScript graph of the reference's ATen ops), "
        "torch.export.export or torch.compile"
    )


class _PackedBlock:
    """The fused forward of a block from its six conv(→BN) units (``_units()``, packing order):
    backend resolution, packed weights (cached, or rebuilt differentiably under autograd), the
    op with or without autograd.  Mixed into FusedInception and FusedForeignInception."""

    __prepare_scriptable__ = _refuse_script

    def _init_packing(self, backend: str) -> None:
        self.requested_backend = backend
        self._pack_cache = PackCache(_pack_own_units, _own_unit_sources)
        # The "onednn" backend's weights reordered to oneDNN's blocked layout (inference only).
        self._prepack_cache = PackCache(_prepack_own_units, _own_unit_sources)
        self._resolved: dict = {}
        _check_backend_name(backend)
        self.structure_built()

    def _units(self) -> list:
        """The six conv(→BN) units in packing order (see packing.pack_units)."""
        raise NotImplementedError

    def _matches_structure(self) -> bool:
        """Whether this block's modules, as they are now, compute the four-branch pattern its fused
        forward computes, with the same units (inception_fast.recognize)."""
        raise NotImplementedError

    def structure_built(self, checked: bool = False) -> None:
        """Its modules, as they are now, compute the block (it was just built from them, or fuse()
        matched them); with ``checked``, whether they do is checked (modules copied from a model)."""
        self.__dict__["_structure"] = _StructureCheck(
            self,
            _itself,
            type(self)._matches_structure,
            _PackedBlock.clear_packed_weights,
            ok=not checked or bool(self._matches_structure()),
        )

    def _replicate_for_data_parallel(self):
        replica = super()._replicate_for_data_parallel()
        replica.__dict__["_structure"] = self.__dict__["_structure"].for_replica()
        return replica

    def structure_ok(self) -> bool:
        """Whether the fused forward may run: False after a module of the block was replaced by one
        that computes something else (see _StructureCheck); the block then runs its own modules."""
        return self.__dict__["_structure"].ok(self)

    def _first_weight(self) -> Tensor:
        raise NotImplementedError

    @property
    def backend(self) -> str:
        """What runs on the parameters' device: a backend name, or "auto" on CUDA with backend="auto",
        where the fastest backend is measured per block shape (``inception_fast.choices.AUTO.choices()``)."""
        return self.backend_for(self._first_weight().device)

    def backend_for(self, device) -> str:
        device = torch.device(device)
        # (Never set while torch.compile traces, and Dynamo before torch 2.14 cannot trace its get.)
        if self.requested_backend == "auto" and device.type == "cpu" and not torch.compiler.is_compiling():
            chosen = _NETWORK_BACKEND.get()
            if chosen is not None:
                return chosen  # the network's forward chose it (FusedGoogLeNet._cpu_network_backend)
        name = self._resolved.get(device)
        if name is None:
            name = backends.resolve(self.requested_backend, device)
            self._resolved[device] = name
        return name

    def packed(self, dtype: Optional[torch.dtype] = None):
        """The packed weights: cached without autograd, rebuilt differentiably when grad is enabled."""
        units = self._units()
        dtype = dtype or self._first_weight().dtype
        if torch.is_grad_enabled() and any(t.requires_grad for t in conv_bn_tensors(units)):
            return pack_units(units, dtype)
        return self._pack_cache.get(self, dtype)

    def clear_packed_weights(self) -> None:
        """Drops the cached packed weights.  Needed only after writes PyTorch's version counters
        do not see (through ``.data``, a NumPy view, the storage); other changes are detected on
        their own (``inception_fast.packing``)."""
        self._pack_cache.clear()
        self._prepack_cache.clear()

    def _apply(self, fn, *args, **kwargs):
        # .to()/.cuda()/.half() replace every weight: drop the packs (and the old storages they
        # keep alive) now rather than at the next forward, which may never come.
        self.clear_packed_weights()
        return super()._apply(fn, *args, **kwargs)

    def __setstate__(self, state) -> None:
        super().__setstate__(state)
        backends.names()  # as at construction (_check_backend_name): not inside a torch.compile trace
        if "_structure" not in state:  # pickled before blocks kept it: as built
            self.structure_built()
        else:  # the callback this code runs when the structure changes (a pickle may hold another)
            state["_structure"].changed = _PackedBlock.clear_packed_weights

    def train(self, mode: bool = True):
        # Training may change the weights in ways no version counter shows (inception_fast.packing):
        # every switch between train and eval mode packs afresh.
        self.clear_packed_weights()
        return super().train(mode)

    def _reference(self, x: Tensor) -> Tensor:
        """The block's computation with its own modules (what a plan "reference" runs)."""
        raise NotImplementedError

    def _reference_run(self, x: Tensor, run=None) -> Tensor:
        """``_reference`` (or ``run``: the block's computation with its own modules in another form),
        then, where one of its BatchNorms was in train mode, the packed weights dropped:
        nn.BatchNorm2d updates its running statistics without moving their version counters."""
        out = (run or self._reference)(x)
        if _trains_a_batch_norm((self,)):
            self.clear_packed_weights()
        return out

    def _bn_plan(self, x: Tensor) -> str:
        """How this forward runs, from what each BatchNorm would do (``_uses_batch_stats``):
        "fold" when none normalises with batch statistics (no BN, or all of them in eval mode with
        running statistics), "batch" when all six do and the fused op covers them (plain
        nn.BatchNorm2d, one eps, a non-empty batch), else "reference" (a mix of the two, other
        BatchNorm classes, per-branch eps): the block's own modules.  Also "reference" for a dtype
        the ops lack (float64), for modules that no longer compute the block (``structure_ok``),
        and for an input wanting its gradient that autocast would cast (a float32 input under
        bfloat16 autocast: the pool's gradient goes to the float32 argmax).
        (Hooks inside the block: the callers' check, ``_hooks_inside``.)"""
        if x.dtype not in _FLOAT_DTYPES or not self.structure_ok():
            return "reference"
        if x.requires_grad and torch.is_grad_enabled() and _compute_dtype(x) != x.dtype:
            # Under autocast the reference max-pools the input as it comes and casts the pooled
            # map: the pool's gradient goes to the argmax of the wider input, which the fused op's
            # cast-first input can tie with a neighbour (the forward's values agree either way).
            return "reference"
        bns = [conv_and_bn(unit)[1] for unit in self._units()]
        present = [bn for bn in bns if bn is not None]
        batch = [_uses_batch_stats(bn) for bn in present]
        if not any(batch):
            return "fold"
        if (
            len(present) == len(bns)
            and all(batch)
            and all(type(bn) is nn.BatchNorm2d for bn in present)
            and len({bn.eps for bn in present}) == 1
            and x.shape[0] > 0
        ):
            return "batch"
        return "reference"

    def _batch_stats_forward(self, x: Tensor) -> Tensor:
        """Every BatchNorm normalising with batch statistics (train mode, or no running statistics):
        the ``inception_block_bn_train`` op from the raw conv weights and the BN affine parameters,
        then each BatchNorm's running statistics updated exactly as nn.BatchNorm2d does."""
        dtype = _compute_dtype(x)
        units = [conv_and_bn(unit) for unit in self._units()]
        convs = [conv for conv, _ in units]
        bns = [units[i][1] for i in _PRE_ORDER]
        weights = [conv.weight.to(dtype) for conv in convs]
        biases = [
            conv.bias.to(dtype) if conv.bias is not None else x.new_zeros(conv.out_channels, dtype=dtype)
            for conv in convs
        ]
        cl = torch.channels_last
        w_red = torch.cat([weights[0], weights[1], weights[3]]).flatten(1).contiguous()
        b_red = torch.cat([biases[0], biases[1], biases[3]])
        # affine=False: gamma 1 and beta 0, constants (no gradient).
        ones = lambda bn: x.new_ones(bn.num_features, dtype=torch.float32)  # noqa: E731
        gamma = torch.cat([ones(bn) if bn.weight is None else bn.weight.float() for bn in bns])
        beta = torch.cat([ones(bn) * 0 if bn.bias is None else bn.bias.float() for bn in bns])
        n, _, h, w = x.shape
        if n * h * w == 1:
            _count_batch(units[0][1])  # as nn.BatchNorm2d: branch 1's counter moves, then its check raises
        backend = self.backend_for(x.device)
        if backend != "auto" and "inception_block_bn_train" not in backends.get(backend).kernels:
            backend = "torch"  # the compiled kernels have no train-mode BatchNorm: ATen's
        out, _, _ = ops.inception_block_bn_train(
            x.to(dtype),
            w_red,
            b_red,
            weights[5].flatten(1).contiguous(),
            biases[5],
            weights[2].contiguous(memory_format=cl),
            biases[2],
            weights[4].contiguous(memory_format=cl),
            biases[4],
            gamma,
            beta,
            bns[0].eps,
            backend=backend,
            before_save=lambda mean, var: _update_running_stats(bns, mean, var, n * h * w),
        )
        return out

    def fused_forward(self, x: Tensor, plan: Optional[str] = None) -> Tensor:
        """The fused path on a channels_last input; returns a channels_last output (under autocast
        in the autocast dtype).  BatchNorm folded, or with batch statistics (``_bn_plan``; ``plan``:
        the caller's, already made for ``x``)."""
        plan = plan or self._bn_plan(x)
        if plan == "reference":
            return self._reference_run(x).contiguous(memory_format=torch.channels_last)
        if _parametrized(conv_and_bn(unit)[0] for unit in self._units()):
            # A parametrized weight (spectral_norm, weight_norm) is computed, with its side effects
            # (spectral_norm's power iteration in train mode), once a forward, as in the conv's own.
            with parametrize.cached():
                return self._fused_forward(x, plan)
        return self._fused_forward(x, plan)

    def _fused_forward(self, x: Tensor, plan: str) -> Tensor:
        if plan == "batch":
            return self._batch_stats_forward(x)
        dtype = _compute_dtype(x)
        backend = self.backend_for(x.device)
        if backend == "onednn":
            if _prepacked_path(x.device, dtype, (x, *_own_unit_tensors(self))):
                pre = self._prepack_cache.get(self, dtype)
                return onednn_backend.prepacked_block_forward(x.to(dtype), pre, stages.block_max_pool)
            if _traced_by_compile() and (self.requested_backend == "auto" or dtype in onednn_backend.dtypes()):
                # torch.compile on CPU: plain ATen ops, which inductor prepacks (freezing) and fuses.
                return onednn_backend.traced_block_forward(x.to(dtype), *self.packed(dtype))
            if self.requested_backend == "auto":
                # With gradients (training), under torch.export, in float16 and in bfloat16 on a CPU
                # without oneDNN's bf16 convolutions, auto on CPU runs the torch backend's op: the
                # prepacked form is an inference form.
                backend = "torch"
        return ops.inception_block(x.to(dtype), *self.packed(dtype), backend=backend)

    def _fused_call(self, x: Tensor, plan: str) -> Tensor:
        """fused_forward on ``x`` in either layout; the output's memory format follows the input's."""
        channels_last = geometry.suggests_channels_last(x)
        out = self.fused_forward(geometry.channels_last_input(x, channels_last), plan)
        return out if channels_last else out.contiguous()


class FusedInception(_PackedBlock, Inception):
    """Inception block with the fused forward; same constructor and state_dict as ``Inception``."""

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
        *,
        batch_norm: bool = True,
        branch3_kernel: int = 3,
        backend: str = "auto",
    ) -> None:
        super().__init__(
            in_channels,
            ch1x1,
            ch3x3red,
            ch3x3,
            ch5x5red,
            ch5x5,
            pool_proj,
            batch_norm=batch_norm,
            branch3_kernel=branch3_kernel,
        )
        self.batch_norm = batch_norm
        self._init_packing(backend)

    def _units(self) -> list:
        return block_convs(self)

    def _first_weight(self) -> Tensor:
        return stored_weight(self.branch1._modules.get("conv"), self)

    def _matches_structure(self) -> bool:
        # Our layout, checked module by module (no trace: this runs inside forward).
        return _inception_layout_ok(self)

    @classmethod
    def from_torchvision(cls, block: nn.Module, backend: str = "auto") -> "FusedInception":
        """A FusedInception holding a copy of ``block``'s weights (torchvision's or our Inception)."""
        return cls._built_from(block, backend, take=False)

    @classmethod
    def _built_from(cls, block: nn.Module, backend: str, take: bool) -> "FusedInception":
        """from_torchvision; with ``take``, holding ``block``'s own parameters and buffers (fuse())."""
        if not is_inception_block(block):
            raise TypeError(f"expected an Inception block, got {type(block).__name__}")
        _refuse_own_computation(block, _block_classes(), "FusedInception.from_torchvision")
        fused = cls(**_block_config(block), backend=backend)
        ref_param = block.branch1.conv.weight
        fused.to(device=ref_param.device, dtype=ref_param.dtype)
        _adopt(fused, block, take=take)
        return fused

    def check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"Inception block expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(
                f"Inception block expects a 4-D (N, C, H, W) input, got {x.dim()}-D shape {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"Inception block expects a floating-point input, got {x.dtype}")
        if x.layout != torch.strided:
            raise TypeError(f"Inception block expects a dense tensor, got layout {x.layout}; call .to_dense() first")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"Inception block expects {self.in_channels} input channels, got {x.shape[1]} "
                f"(input shape {tuple(x.shape)})"
            )
        _check_params_match(x, self._first_weight(), "Inception block")

    def _reference(self, x: Tensor) -> Tensor:
        return Inception.forward(self, x)

    def forward(self, x: Tensor) -> Tensor:
        if _transformed(x):
            return self._reference_run(x)  # the reference's computation (see _transformed)
        self.check_input(x)
        plan = self._bn_plan(x)
        if plan == "reference" or _hooks_inside(self._modules.values()):
            return self._reference_run(x)  # the modules' own forward (see _bn_plan, _hooks_inside)
        return self._fused_call(x, plan)


class FusedGoogLeNet(GoogLeNet):
    """GoogLeNet with fused Inception blocks and folded stem; same arguments and state_dict as ``GoogLeNet``."""

    block_class = FusedInception
    __prepare_scriptable__ = _refuse_script

    def __init__(
        self, num_classes: Optional[int] = None, *, variant: str = "torchvision", backend: str = "auto", **kwargs
    ) -> None:
        super().__init__(num_classes, variant=variant, backend=backend, **kwargs)
        self.requested_backend = backend
        self._hooked_children: frozenset = frozenset()  # set by each forward (_hooked)
        self._stem_cache = PackCache(_pack_stem, _stem_sources)
        self._stem_prepack_cache = PackCache(_prepack_stem, _stem_sources)
        self.structure_built()

    def __setstate__(self, state) -> None:
        super().__setstate__(state)
        if "_stem_structure" not in state:  # pickled before the stem kept it: as built
            self.structure_built()
        else:  # the callback this code runs when the structure changes (a pickle may hold another)
            state["_stem_structure"].changed = FusedGoogLeNet._clear_stem

    def structure_built(self, checked: bool = False) -> None:
        """The stem's modules, as they are now, compute what the fused stem computes (see
        _StructureCheck; each block keeps its own); with ``checked``, whether they do is checked."""
        self.__dict__["_stem_structure"] = _StructureCheck(
            self,
            FusedGoogLeNet._stem_modules,
            _stem_computes_fused,
            FusedGoogLeNet._clear_stem,
            ok=not checked or _stem_computes_fused(self),
        )

    def _replicate_for_data_parallel(self):
        replica = super()._replicate_for_data_parallel()
        replica.__dict__["_stem_structure"] = self.__dict__["_stem_structure"].for_replica()
        return replica

    @property
    def backend(self) -> str:
        return self.inception3a.backend

    @classmethod
    def from_torchvision(cls, model: nn.Module, backend: str = "auto") -> "FusedGoogLeNet":
        """A FusedGoogLeNet with a copy of ``model``'s weights (torchvision's googlenet or our GoogLeNet)."""
        if isinstance(model, GoogLeNet):
            conv1 = getattr(model.conv1, "conv", None)  # (a conv1 put in later decides: 1 channel, greyscale)
            variant, in_ch = model.variant, conv1.in_channels if isinstance(conv1, nn.Conv2d) else model.in_channels
        else:
            if not isinstance(model, _torchvision_class("GoogLeNet") or ()):  # (no torchvision: none is)
                raise TypeError(
                    "FusedGoogLeNet.from_torchvision expects a torchvision googlenet or an inception_fast "
                    f"GoogLeNet, got {type(model).__name__}; for other networks holding Inception blocks "
                    "use inception_fast.fuse(model)"
                )
            variant, in_ch = "torchvision", model.conv1.conv.in_channels
        _refuse_own_computation(model, _network_classes(), "FusedGoogLeNet.from_torchvision")
        ref_param = next(model.parameters())
        fc, dropout = model.fc, model.dropout
        # The classes the aux heads are built for (the head itself is copied as it is): theirs, else
        # the fc's, else the model's own count.
        aux_fc = getattr(model.aux1, "fc2", None)
        if isinstance(aux_fc, nn.Linear):
            num_classes = aux_fc.out_features
        elif isinstance(fc, nn.Linear):
            num_classes = fc.out_features
        else:
            num_classes = getattr(model, "num_classes", 1000)
        fused = cls(
            num_classes,
            variant=variant,
            in_channels=in_ch,
            aux_logits=model.aux1 is not None,
            transform_input=model.transform_input,
            dropout=dropout.p if isinstance(dropout, nn.Dropout) else None,
            dropout_aux=model.aux1.dropout.p if model.aux1 is not None else 0.7,
            init_weights=False,
            backend=backend,
        )
        if model.aux1 is not None:
            fused.aux_logits = model.aux_logits
        for name in BLOCK_CONFIGS:  # a block built with other channels or kernel: one built like it
            config = _inception_config(model._modules.get(name))
            if config is not None and config != _block_config(getattr(fused, name)):
                setattr(fused, name, FusedInception(**config, backend=backend))
        fused.to(device=ref_param.device, dtype=ref_param.dtype)
        # Every module is then the original's kind with its settings (_copy_modules): the head
        # whatever it became for fine-tuning (a Sequential or a bias-free fc, Identity as a feature
        # extractor, another pool size), which the fused head runs as it is; the max pools (a
        # paper-variant model saved when its maxpool4 was 2x2/2 keeps computing so), which the fused
        # stages read their settings from; a conv1 of another stride, a conv with another padding
        # mode, the LRNs.  A stage whose modules compute something else runs them as they are.
        _adopt(fused, model)
        return fused

    def _stem_convs(self) -> list[nn.Module]:
        return [self.conv1, self.conv2, self.conv3]

    def _stem_modules(self) -> list:
        """Every module the reference's stem body calls (``GoogLeNet._stem_body``)."""
        return [self.conv1, self.maxpool1, self.lrn1, self.conv2, self.conv3, self.lrn2]

    def _stem_runs_onednn(self, x: Tensor) -> bool:
        """Whether the "onednn" backend runs the stem's convs for ``x`` from prepacked weights (no
        gradient wanted, a conv1 oneDNN's form takes)."""
        if self.backend_for(x.device) != "onednn" or stages.stem_onednn_params(self.conv1.conv) is None:
            return False
        return _prepacked_path(x.device, x.dtype, (x, *conv_bn_tensors(self._stem_convs())))

    def _stem_prepacked(self, x: Tensor) -> Optional[list]:
        """The stem's convs prepacked for oneDNN where ``_stem_runs_onednn``, else None."""
        return self._stem_prepack_cache.get(self, x.dtype) if self._stem_runs_onednn(x) else None

    def backend_for(self, device) -> str:
        """What the blocks run on ``device`` (see FusedInception.backend_for)."""
        return self.inception3a.backend_for(device)

    def _stem_weights(self, dtype):
        if torch.is_grad_enabled() and any(t.requires_grad for t in conv_bn_tensors(self._stem_convs())):
            return _pack_stem(self, dtype)
        return self._stem_cache.get(self, dtype)

    def clear_packed_weights(self) -> None:
        """Drops every cached packed weight (stem and blocks); see FusedInception.clear_packed_weights."""
        clear_packed_weights(self)

    def _clear_stem(self) -> None:
        self._stem_cache.clear()
        self._stem_prepack_cache.clear()

    def _apply(self, fn, *args, **kwargs):
        self._clear_stem()  # as FusedInception._apply; the blocks clear their own
        return super()._apply(fn, *args, **kwargs)

    def train(self, mode: bool = True):
        self._clear_stem()  # as FusedInception.train; the blocks clear their own
        return super().train(mode)

    @property
    def _triton_allowed(self) -> bool:
        """Whether the Triton stem, conv2/conv3, pools, folds, chains and head may compete in the
        measured choices (inception_fast.stages), and the first forward precompiles: the requested
        backend is one that runs Triton kernels (auto, triton, hopper, hopper_tma2)."""
        return self.requested_backend in ("auto", "triton", "hopper", "hopper_tma2")

    def stem_choice_key(self, x: Tensor) -> tuple:
        """The STEM_CHOICE key of this model's first conv on input ``x``."""
        onednn = self._stem_runs_onednn(x)
        return stages.stem_key(x, self.conv1.conv, self.maxpool1, self._triton_allowed, onednn)

    def _max_pool(self, x: Tensor, pool: nn.MaxPool2d) -> Tensor:
        return stages.max_pool(x, pool, self._triton_allowed, self._cpp_pool_allowed(x.device))

    def _cpp_pool_allowed(self, device: torch.device) -> bool:
        """Whether the compiled extension's CPU max pool may compete (CPU_POOL_CHOICE): the blocks run
        the "onednn" or "cpp" backend (auto's on CPU is onednn), whose pools the package owns."""
        return device.type == "cpu" and self.backend_for(device) in ("onednn", "cpp")

    def _stem_variants(self, x: Tensor, padded: dict) -> list[str]:
        onednn = self._stem_runs_onednn(x)
        return stages.stem_variants(x, self.conv1.conv, self.maxpool1, padded, self._triton_allowed, onednn)

    def _stem_runners(self, x: Tensor, w1: Tensor, b1: Tensor, padded: dict) -> dict:
        """STEM_CHOICE's candidates, in order of preference: ATen's "channels_last" form is trusted;
        every other is checked against it on its first run (choices.checked_against)."""
        trusted = "channels_last"
        reference = lambda: self._stem_conv1(x, w1, b1, padded, trusted)  # noqa: E731
        reference64 = lambda: stages.stem_reference64(x, w1, b1, self.conv1.conv, self.maxpool1)  # noqa: E731
        runners = {}
        for v in self._stem_variants(x, padded):
            run = lambda v=v: self._stem_conv1(x, w1, b1, padded, v)  # noqa: E731
            runners[v] = (
                run if v == trusted else choices.checked_against(run, reference, f"the stem's {v!r} form", reference64)
            )
        return runners

    def _stem_conv1(self, x: Tensor, w1: Tensor, b1: Tensor, padded: dict, variant: str) -> Tensor:
        if variant == "onednn":
            conv1 = self._stem_prepack_cache.get(self, x.dtype)[0]
            return self._max_pool(onednn_backend.prepacked_conv_relu(x, conv1), self.maxpool1)
        return stages.stem_conv1(
            x,
            w1,
            b1,
            padded,
            variant,
            self.conv1.conv,
            self.maxpool1,
            self._triton_allowed,
            self._cpp_pool_allowed(x.device),
        )

    def check_input(self, x: Tensor) -> None:
        super().check_input(x)
        weight = next(self.parameters(), None)
        if weight is not None:
            _check_params_match(x, weight, "GoogLeNet")

    def _fused(self, x: Tensor) -> bool:
        """Whether the stem and the pools run fused: not where a stem BatchNorm normalises with
        batch statistics (train mode, or no running statistics: the reference's stem, then
        channels_last; the blocks choose for themselves, ``_block``), not on an empty batch
        (nothing to compute: the reference's empty result) and not in a dtype the fused stages
        lack (float64: the reference's stages throughout)."""
        if x.shape[0] == 0 or x.dtype not in _FLOAT_DTYPES:
            return False
        stem_bns = (conv._modules.get("bn") for conv in self._stem_convs())
        return not any(bn is not None and _uses_batch_stats(bn) for bn in stem_bns)

    # The network is GoogLeNet.forward; these are its stages, fused.
    def _stem_body(self, x: Tensor) -> Tensor:
        """The folded stem up to maxpool2 on ``x`` in either layout; returns channels_last:
        everything after the first conv runs channels_last (one conversion, at the entry)."""
        if not self._fused(x) or self._hooked(*self._stem_modules()) or not self._stem_structure.ok(self):
            if x.shape[0] == 0:
                return super()._stem_body(x)
            # Stem BatchNorms with batch statistics, hooks on the stem's modules, or modules put in
            # that the fused stem does not compute (_stem_computes_fused): the reference's stem, on
            # channels_last (oneDNN's faster layout, and the blocks' layout, which they then run
            # fused in).  A BatchNorm in train mode updated its running statistics unseen by the
            # stem's caches (inception_fast.packing): they are dropped.
            out = super()._stem_body(geometry.channels_last_input(x)).contiguous(memory_format=torch.channels_last)
            if _trains_a_batch_norm(self._stem_modules()):
                self._clear_stem()
            return out
        if _parametrized(unit._modules.get("conv") for unit in self._stem_convs()):
            with parametrize.cached():  # each parametrized weight computed once a forward (_PackedBlock)
                return self._fused_stem_body(x)
        return self._fused_stem_body(x)

    def _fused_stem_body(self, x: Tensor) -> Tensor:
        for conv in self._stem_convs()[1:]:  # (conv1's: check_input)
            _check_stage_params(self, conv, conv.conv.weight, x)
        # Under autocast conv1 casts its input first, as the reference's conv1 does.
        x = x.to(_compute_dtype(x))
        (w1, b1), (w2, b2), (w3, b3), padded = self._stem_weights(x.dtype)
        if torch.compiler.is_compiling():
            # ATen's form, as the measured choices' callers run their first candidate under a trace
            # (MeasuredChoice.applies): a lookup keyed by the input's sizes would fix dynamic ones.
            variant = "channels_last"
        else:
            key = self.stem_choice_key(x)
            variant = choices.STEM_CHOICE.lookup(key)
            if variant is None:  # first forward at this shape: build the candidates and measure them
                variant = choices.STEM_CHOICE.pick(key, x.device, self._stem_runners(x, w1, b1, padded))
        prepacked = self._stem_prepacked(x)
        if (
            variant in stages.STEM_TRITON_VARIANTS
            and torch.is_grad_enabled()
            and any(t.requires_grad for t in (x, w1, b1))
        ) or (variant == "onednn" and prepacked is None):
            variant = "channels_last"  # the Triton kernel has no backward; the prepacked convs no gradient
        x = self._stem_conv1(x, w1, b1, padded, variant)
        if self.lrn1 is not None:
            x = self.lrn1(x)
        if prepacked is not None:  # conv2 and conv3 from oneDNN's prepacked weights, bias and ReLU fused
            finite = onednn_backend.finite(x)  # conv3's input too where conv2's weights are (NaN: onednn_backend)
            x = onednn_backend.prepacked_conv_relu(x, prepacked[1], finite)
            x = onednn_backend.prepacked_conv_relu(x, prepacked[2], finite and prepacked[1].finite)
        else:
            x = stages.conv_relu(x, w2, b2, 0, self._triton_allowed)
            x = stages.conv_relu(x, w3, b3, 1, self._triton_allowed)
        if self.lrn2 is not None:
            x = self.lrn2(x)
        return x

    def _block(self, block: nn.Module, x: Tensor) -> Tensor:
        # fused_forward picks folded or batch-statistics BatchNorm per block (FusedInception._bn_plan);
        # a block carrying hooks, or holding a module that does, is called as a module: its forward
        # runs the hooks (FusedInception.forward).
        if x.shape[0] == 0 or self._hooked(block) or not isinstance(block, _PackedBlock):
            return block(x).contiguous(memory_format=torch.channels_last)  # a block put in: as it is
        _check_stage_params(self, block, block._first_weight(), x)
        return block.fused_forward(x)

    def _pool(self, pool: nn.Module, x: Tensor) -> Tensor:
        return self._max_pool(x, pool) if self._fused(x) and not self._hooked(pool) else pool(x)

    def _fusable_blocks(self, blocks: tuple, x: Tensor) -> bool:
        """Whether a Triton form that joins stages (a pool folded into a block, blocks chained) may
        replace them for ``x``: both would run fused with every block's BatchNorm folded, in the
        weights' dtype, outside torch.compile, and no gradient is wanted (the joined ops have none)."""
        return (
            self._triton_allowed
            and not torch.compiler.is_compiling()
            and all(isinstance(block, _PackedBlock) for block in blocks)
            and self._fused(x)
            and _compute_dtype(x) == x.dtype
            and all(block._bn_plan(x) == "fold" and x.dtype == block._first_weight().dtype for block in blocks)
            and not self._hooked(*blocks)
            and not (
                torch.is_grad_enabled()
                and any(t.requires_grad for t in (x, *(u for block in blocks for u in _own_unit_tensors(block))))
            )
        )

    def _pool_block(self, pool: nn.Module, block: nn.Module, x: Tensor) -> Tensor:
        """``block(pool(x))``: the two stages, or, where the fold is offered (stages.offers) and
        FOLD_CHOICE measured it faster (stages.pool_block), the pool folded into the block's first
        Triton launch."""
        separate = lambda: self._block(block, self._pool(pool, x))  # noqa: E731
        if (
            not stages.triton_may_compete(choices.FOLD_CHOICE, x, self._triton_allowed)
            or not stages.offers("fold")
            or not self._fusable_blocks((block,), x)
            or self._hooked(pool)
        ):
            return separate()
        packed = lambda: block.packed(x.dtype)  # noqa: E731
        shapes = _conv_shapes(block)
        return stages.pool_block(x, pool, shapes, packed, separate, self.requested_backend)

    def _pool_blocks(self, pool: Optional[nn.Module], blocks: tuple, x: Tensor) -> Tensor:
        """The blocks one after another on ``pool(x)`` as the reference runs them (the pool folded
        into the first where FOLD_CHOICE chose so), or, where the chain is offered (stages.offers)
        and CHAIN_CHOICE measured it faster (stages.block_chain), each block's launch 2 joined with
        the next block's launch 1.  A pool that does not fold runs first, on its own."""
        separate = lambda: super(FusedGoogLeNet, self)._pool_blocks(pool, blocks, x)  # noqa: E731
        if (
            len(blocks) < 2
            or not stages.triton_may_compete(choices.CHAIN_CHOICE, x, self._triton_allowed)
            or not stages.offers("chain")
            or not self._fusable_blocks(blocks, x)
        ):
            return separate()
        if pool is not None and (stages.fold_params(pool) is None or self._hooked(pool)):
            x = self._pool(pool, x)
            pool = None
            separate = lambda: super(FusedGoogLeNet, self)._pool_blocks(None, blocks, x)  # noqa: E731
        packed = lambda: [block.packed(x.dtype) for block in blocks]  # noqa: E731
        shapes = tuple(_conv_shapes(block) for block in blocks)
        return stages.block_chain(x, pool, shapes, packed, separate, self.requested_backend)

    def _hooked(self, *modules: Optional[nn.Module]) -> bool:
        """Whether one of ``modules`` (children of this model) carries a hook or holds a module that
        does, as this forward found them (``_hooks_inside``): that stage then runs its own modules."""
        return bool(self._hooked_children) and any(m is not None and id(m) in self._hooked_children for m in modules)

    def forward(self, x: Tensor) -> Tensor:
        """The reference's forward with the fused stages; on the first eval forward of a new input
        shape on a GPU, every Triton binary it needs compiled first, at once
        (inception_fast.precompile); under backend auto, the forwards while those compile run
        ATen's computations and measure nothing (inception_fast.precompiler: tuning deferred).
        On CPU under backend auto, a small input's first forward without gradients chooses the
        backend the whole network runs for that input (``_cpu_network_backend``).
        A stage whose modules carry hooks runs them (``_hooked``)."""
        if _transformed(x):
            return GoogLeNet.forward(_ReferenceStages(self), x)
        children = [c for c in self._modules.values() if c is not None]
        self._hooked_children = (
            frozenset(id(c) for c in children if _hooks_inside((c,))) if _hooks_inside(children) else frozenset()
        )
        chosen = self._cpu_network_backend(x)
        if chosen is not None:  # (CPU: nothing to precompile)
            return self._forward_on(chosen, x)
        return precompiler.forward_after_precompile(
            self, self._triton_allowed, x, super().forward, defer=self.requested_backend == "auto"
        )

    def _forward_on(self, backend: str, x: Tensor) -> Tensor:
        """The reference's forward with the fused stages, those with backend="auto" on CPU running
        ``backend`` (the blocks' backend_for, and through it the stem's and the pools' forms)."""
        token = _NETWORK_BACKEND.set(backend)
        try:
            return GoogLeNet.forward(self, x)
        finally:
            _NETWORK_BACKEND.reset(token)

    def _cpu_network_backend(self, x: Tensor) -> Optional[str]:
        """Under backend="auto" on CPU, for a forward that runs from oneDNN's prepacked weights (no
        gradient, float32 or bfloat16 where oneDNN has it, no autocast, not traced or exported;
        ``forward`` has sent the transforms and traces the fused ops lack elsewhere): the
        backend CPU_NETWORK_CHOICE measured fastest as whole forwards for this input (shape, layout,
        thread count), measured on the first such forward of at most CPU_NETWORK_MEASURE_PIXELS
        pixels.  None where the forward runs as auto runs it unmeasured (oneDNN's prepacked form
        where it applies, else the torch backend): another input, or one not measured yet because
        this forward may not repeat itself (hooks to call, a module in train mode, nothing measured
        now: static mode, a dispatch mode)."""
        if (
            not isinstance(x, Tensor)
            or x.dim() != 4
            or x.layout != torch.strided
            or x.device.type != "cpu"
            or self.requested_backend != "auto"
            or torch.is_grad_enabled()
            or x.dtype not in onednn_backend.dtypes()
            or _autocast_on("cpu")
            or torch.compiler.is_compiling()
            or _exporting()
            or isinstance(x, FakeTensor)
            or not self._fused(x)
        ):
            return None
        channels_last, threads = x.is_contiguous(memory_format=torch.channels_last), torch.get_num_threads()
        memo_key = (x.shape, x.dtype, channels_last, threads, tuple(map(id, self._modules.values())))
        memo = _NETWORK_MEMO.get(self)
        chosen = _MISS if memo is None else memo.get(memo_key, _MISS)
        if chosen is not _MISS:
            return chosen
        if backends.availability("onednn", x.device) is not None:
            return None
        n, _, h, w = x.shape
        chosen = None  # larger inputs: auto's form unmeasured
        if n * h * w <= CPU_NETWORK_MEASURE_PIXELS:
            chooser = choices.CPU_NETWORK_CHOICE
            if not chooser.can_measure(x.device) or self._hooked_children or any(m.training for m in self.modules()):
                return None  # (not kept: a later forward may measure)
            key = choices.NetworkKey(str(x.device), x.dtype, tuple(x.shape), channels_last, threads, _layers(self))
            try:
                chosen = chooser.pick(key, x.device, self._network_runners(x))
            except choices.EveryCandidateFailed:
                return None  # (bad input, a module put in that does not fit: the forward meets its own error)
        chosen = None if chosen in (None, "onednn") else chosen
        if memo is None:
            memo = _NETWORK_MEMO.setdefault(self, LRUDict())
        memo[memo_key] = chosen
        return chosen

    def _network_runners(self, x: Tensor) -> dict:
        """CPU_NETWORK_CHOICE's candidates for ``x``: whole forwards on each backend, oneDNN's first
        (what runs unmeasured).  The torch backend's is trusted; the others' first result must be
        within the tolerance table's rule of a float64 forward (the reference's stages)."""
        trusted = lambda: self._forward_on("torch", x)  # noqa: E731
        reference = choices.once(trusted)
        reference64 = lambda: _float64_forward(self, x)  # noqa: E731
        names = ["onednn"] + (["cpp"] if backends.availability("cpp", x.device) is None else [])
        runners = {
            name: choices.checked_against(
                lambda name=name: self._forward_on(name, x), reference, f"the {name!r} network", reference64
            )
            for name in names
        }
        runners["torch"] = trusted
        return runners

    def _head(self, x: Tensor) -> Tensor:
        """In eval mode, the average pool + fc as HEAD_CHOICE measured fastest (stages.head); in
        train mode (dropout), the reference's head."""
        if self.training or self._hooked(self.avgpool, self.dropout, self.fc):
            return super()._head(x)
        return stages.head(x, self.avgpool, self.dropout, self.fc, self._triton_allowed)


def _layers(model: nn.Module) -> str:
    """NetworkKey.layers: a digest of ``model``'s class, variant and every parameter's name and shape."""
    shapes = [(name, tuple(p.shape)) for name, p in model.named_parameters()]
    text = repr((type(model).__qualname__, getattr(model, "variant", None), shapes))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _float64_forward(model: nn.Module, x: Tensor) -> Tensor:
    """``model(x)`` in float64, ``model`` unchanged: its floating-point parameters and buffers in
    float64 for this call only (torch.func.functional_call).  A FusedGoogLeNet runs the reference's
    stages in float64."""
    state = {
        name: t.double() if t.is_floating_point() else t
        for name, t in (*model.named_parameters(), *model.named_buffers())
    }
    return torch.func.functional_call(model, state, (x.double(),))


def clear_packed_weights(model: nn.Module) -> None:
    """Drops every packed weight cached in ``model``: a FusedGoogLeNet, a model fuse() changed, a
    block.  Needed only after writes PyTorch's version counters do not see (FusedInception's
    clear_packed_weights)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"clear_packed_weights() expects a torch.nn.Module, got {type(model).__name__}")
    for module in model.modules():
        if isinstance(module, FusedGoogLeNet):
            module._clear_stem()
        elif isinstance(module, _PackedBlock):
            module.clear_packed_weights()


class _ReferenceStages:
    """A FusedGoogLeNet seen with GoogLeNet's stage hooks instead of its fused ones (everything
    else is the model's own): ``GoogLeNet.forward`` on it is the reference's computation with the
    model's modules, the path for transforms the fused ops have no rules for (``_transformed``).
    A subclass's own overrides of those stages are not used on this path."""

    __slots__ = ("_model",)
    _STAGES = ("check_input", "_stem_body", "_stem", "_block", "_pool", "_pool_block", "_pool_blocks", "_head")

    def __init__(self, model: "FusedGoogLeNet") -> None:
        object.__setattr__(self, "_model", model)

    def __getattr__(self, name: str):
        if name in _ReferenceStages._STAGES:
            return getattr(GoogLeNet, name).__get__(self)
        return getattr(self._model, name)


def _pack_stem(model: FusedGoogLeNet, dtype: torch.dtype):
    """[(w1, b1), (w2, b2), (w3, b3), {stem form: w1 as it reads it}]: "pad<N>" (w1 zero-padded
    to N channels, ``stages.stem_padded_channels``) and, where conv1 qualifies, "triton_rows"
    (packing.pack_conv_rows)."""
    packed = [fold_conv_bn(unit, dtype) for unit in model._stem_convs()]
    w1 = packed[0][0]
    padded = {
        f"pad{c}": F.pad(w1, (0, 0, 0, 0, 0, c - w1.shape[1])).contiguous(memory_format=torch.channels_last)
        for c in stages.stem_padded_channels(w1.shape[1])
    }
    stride = stages.stem_rows_stride(model.conv1.conv)
    if stride is not None:
        padded["triton_rows"] = pack_conv_rows(w1, stride)
    return [*packed, padded]


def _prepack_stem(model: FusedGoogLeNet, dtype: torch.dtype):
    """conv1, conv2 and conv3 folded and reordered for oneDNN (the "onednn" backend's stem)."""
    (w1, b1), (w2, b2), (w3, b3) = (fold_conv_bn(unit, dtype) for unit in model._stem_convs())
    stride, padding = stages.stem_onednn_params(model.conv1.conv)
    return [
        onednn_backend.prepack_conv(w1, b1, stride, padding),
        onednn_backend.prepack_conv(w2, b2, 1, 0),
        onednn_backend.prepack_conv(w3, b3, 1, 1),
    ]


def _stem_sources(model: FusedGoogLeNet) -> list:
    return conv_bn_sources(model._stem_convs())


def _folding_unit(unit) -> Optional[tuple]:
    """(conv, bn or None) of a conv(→BN)→ReLU unit of ours or torchvision's whose conv is a plain
    nn.Conv2d and whose BatchNorm folds into it, else None (the stem's units and a block's)."""
    from .recognize import batch_norm_kinds, bn_channels

    if type(unit).forward not in _basic_conv_forwards():
        return None
    conv, bn = unit._modules.get("conv"), unit._modules.get("bn")
    if not stock(conv, nn.Conv2d):
        return None
    if bn is not None and (type(bn) not in batch_norm_kinds() or bn_channels(bn) != conv.out_channels):
        return None
    return conv, bn


def _unit_ok(unit, kernel: Optional[int]) -> bool:
    """A ``_folding_unit`` with nothing else inside whose conv the fused op computes (a square odd
    kernel with 'same' padding, stride 1; ``kernel`` 1 where a 1x1 belongs)."""
    from .recognize import conv_problem

    parts = _folding_unit(unit)
    if parts is None or set(unit._modules) - {"conv", "bn"}:
        return False
    return conv_problem(parts[0], "", kernel) is None


def _inception_layout_ok(block: "FusedInception") -> bool:
    """Whether the block's modules are the layout its fused forward reads (block_convs) and compute
    the pattern: four branches, exact nn.Sequential containers of the right length, units
    ``_unit_ok``, branch 4's pool a 3x3/1/1 max pool, channel counts that chain."""
    from .recognize import pool_problem

    m = block._modules
    branches = [m.get(name) for name in ("branch1", "branch2", "branch3", "branch4")]
    if set(m) != {"branch1", "branch2", "branch3", "branch4"}:
        return False
    if any(type(b) is not nn.Sequential or len(b) != 2 for b in branches[1:]):
        return False
    b2, b3, b4 = (b._modules for b in branches[1:])
    units = [(branches[0], 1), (b2["0"], 1), (b2["1"], None), (b3["0"], 1), (b3["1"], None), (b4["1"], 1)]
    if not all(_unit_ok(unit, k) for unit, k in units) or pool_problem(b4["0"], "") is not None:
        return False
    convs = [unit._modules["conv"] for unit, _ in units]
    return (
        len({convs[i].in_channels for i in (0, 1, 3, 5)}) == 1
        and convs[2].in_channels == convs[1].out_channels
        and convs[4].in_channels == convs[3].out_channels
    )


_BASIC_FORWARDS: list = []  # filled on first use (torchvision's import is optional)


def _basic_conv_forwards() -> tuple:
    """The conv(→BN)→ReLU units' forwards the fused stem computes: ours and torchvision's."""
    if not _BASIC_FORWARDS:
        from .reference import BasicConv2d

        _BASIC_FORWARDS[:] = [cls.forward for cls in (BasicConv2d, _torchvision_class("BasicConv2d")) if cls]
    return tuple(_BASIC_FORWARDS)


def _stem_computes_fused(model: "FusedGoogLeNet") -> bool:
    """Whether conv1-conv3 are still what the fused stem computes: ``_folding_unit``s whose conv is
    square with square integer padding, no dilation or groups and zero padding (conv2 1x1 without
    padding, conv3 3x3 with padding 1, as the stem's kernels take them; a BatchNorm with batch
    statistics runs the reference's stem anyway: FusedGoogLeNet._fused), after a plain max pool."""
    if type(model.maxpool1) is not nn.MaxPool2d:
        return False
    for unit, shape in ((model.conv1, None), (model.conv2, (1, 0)), (model.conv3, (3, 1))):
        parts = _folding_unit(unit)
        if parts is None:
            return False
        conv = parts[0]
        params = (stages.square(conv.kernel_size), stages.square(conv.stride), conv.padding)
        if (
            None in params[:2]
            or isinstance(conv.padding, str)
            or stages.square(conv.padding) is None
            or stages.square(conv.dilation) != 1
            or conv.groups != 1
            or conv.padding_mode != "zeros"
        ):
            return False
        if shape is not None and (params[0], stages.square(conv.padding), params[1]) != (*shape, 1):
            return False
    return True


def _is_batchnorm(module: nn.Module) -> bool:
    """nn.BatchNorm2d and its kin (torchvision's FrozenBatchNorm2d too): running statistics and an eps."""
    return all(hasattr(module, name) for name in ("running_mean", "running_var", "eps"))


def _computed_tensor(module: nn.Module) -> Optional[str]:
    """The path (relative to ``module``) of the first conv or BatchNorm under it whose weight or
    bias is not a plain parameter or buffer: computed by a parametrization or by
    torch.nn.utils.prune (weight_orig and a mask), or held as a plain tensor attribute.  None if
    there is none.  A copy through state_dict cannot take those."""
    for path, m in module.named_modules():
        if isinstance(m, nn.Conv2d) or _is_batchnorm(m):
            if "parametrizations" in m._modules or any(
                name not in m._parameters and name not in m._buffers for name in ("weight", "bias")
            ):
                return path or "."
    return None


def _copy_module(module: nn.Module, share_tensors: bool) -> nn.Module:
    """A copy of ``module`` and its submodules for a fused model: each of the same class with its
    settings, parameters and buffers of its own (copies; with ``share_tensors`` the original's
    own, as fuse() takes them), no hooks of any kind (they stay with the original, as the convs'
    do), a forward set on the instance bound to the copy, and every other attribute shared, not
    copied (a feature map a hook kept, a reference back to the model: a deep copy would fail on
    the first and copy the whole model for the second)."""
    new = object.__new__(type(module))
    state = {}
    for key, value in module.__dict__.items():
        if key == "_modules":
            value = {n: None if m is None else _copy_module(m, share_tensors) for n, m in value.items()}
        elif key == "_parameters":
            value = {n: p if share_tensors or p is None else copy.deepcopy(p) for n, p in value.items()}
        elif key == "_buffers":
            with torch.no_grad():
                value = {n: b if share_tensors or b is None else b.clone() for n, b in value.items()}
        elif "hooks" in key and isinstance(value, dict):
            value = type(value)()
        elif key == "_is_full_backward_hook":
            value = None
        elif isinstance(value, types.MethodType) and value.__self__ is module:
            value = types.MethodType(value.__func__, new)
        elif isinstance(value, (dict, list, set)):
            value = copy.copy(value)
        state[key] = value
    new.__dict__.update(state)
    return new


def _tensor_slots(module: nn.Module):
    """(dotted name, owning module, "_parameters" or "_buffers", attribute) of every parameter and
    buffer under ``module``, under every name it is reachable by (shared ones more than once)."""
    for path, m in module.named_modules(remove_duplicate=False):
        for kind in ("_parameters", "_buffers"):
            for attr, t in getattr(m, kind).items():
                if t is not None:
                    yield (f"{path}.{attr}" if path else attr), m, kind, attr


_ALIKE: dict = {}  # class -> what it computes, for the classes whose forwards compute the same


# What a subclass may define over the class it derives from and still compute what that class
# does: construction and how it prints.
_HARMLESS_OVERRIDES = frozenset({"__init__", "__repr__", "__str__", "extra_repr"})


def _forward_on_instance(module: nn.Module) -> Optional[str]:
    """The name of ``module``'s forward (or torchvision's ``_forward``, which its forward calls)
    where one is set on the instance, else None."""
    return next((name for name in ("forward", "_forward") if name in module.__dict__), None)


def _own_computation(model: nn.Module, known: tuple) -> Optional[str]:
    """Why ``model`` may compute what the class it derives from (its first class in ``known``)
    does not, so that a copy built from that class would compute something else, else None: its
    forward (or torchvision's ``_forward``, which its forward calls) set on the instance, or a
    method of that class (forward, _forward, _transform_input, train, ...) defined again in a
    subclass between them."""
    name = _forward_on_instance(model)
    if name is not None:
        return f"its {name} is set on the instance (it computes something its class does not)"
    mro = type(model).__mro__
    base = next((cls for cls in mro if cls in known), None)
    for cls in mro[: mro.index(base)] if base is not None else ():
        for name, value in vars(cls).items():
            if name in _HARMLESS_OVERRIDES or not hasattr(base, name):
                continue
            if callable(value) or isinstance(value, (staticmethod, classmethod, property)):
                return (
                    f"its class {cls.__qualname__} defines {name} over {base.__name__}'s "
                    f"(it may compute something {base.__name__} does not)"
                )
    return None


def _refuse_own_computation(model: nn.Module, known: tuple, what: str) -> None:
    """A TypeError naming what makes ``model`` compute other than its known class (``_own_computation``)."""
    why = _own_computation(model, known)
    if why is not None:
        raise TypeError(
            f"{what} cannot copy this {type(model).__name__}: {why}; fuse() the model in place, which "
            "keeps such a module as it is"
        )


def _computes_alike(mine: nn.Module, theirs: nn.Module) -> bool:
    """Whether ``theirs`` computes what ``mine``'s class does from the same children: the same
    class, or ours, the fused and torchvision's kind of one GoogLeNet part (block, conv unit, aux
    head), and no forward set on the instance."""
    if _forward_on_instance(theirs) is not None:
        return False
    if type(mine) is type(theirs):
        return True
    if not _ALIKE:
        from .reference import BasicConv2d, InceptionAux

        parts = {
            "block": [Inception, FusedInception, _torchvision_class("Inception")],
            "unit": [BasicConv2d, _torchvision_class("BasicConv2d")],
            "aux": [InceptionAux, _torchvision_class("InceptionAux")],
        }
        _ALIKE.update({cls: part for part, classes in parts.items() for cls in classes if cls is not None})
    part = _ALIKE.get(type(mine))
    return part is not None and _ALIKE.get(type(theirs)) == part


def _copy_modules(fused: nn.Module, original: nn.Module, share_tensors: bool) -> None:
    """Makes each submodule of ``fused`` (built from ``original``'s configuration) what
    ``original``'s is where the constructor could not: a leaf (a conv, BatchNorm, pool, LRN,
    dropout, fc) becomes a copy of the original's (``_copy_module``), with its class and settings
    (a stride, dilation, padding mode, bias, eps, momentum, LRN size, FrozenBatchNorm2d); a module
    of another kind or with other children (an fc that became a Sequential, a unit or block put in,
    Identity) a copy of the original's whole, and None where the original's is None; one computing
    alike is walked.  The fused stages check the modules they compute from and run the modules' own forwards
    where these compute something else (_StructureCheck), so the copy computes what the original
    does."""
    for name, mine in list(fused._modules.items()):
        if name not in original._modules:
            continue
        theirs = original._modules[name]
        if theirs is None or mine is None:
            if theirs is not mine:
                setattr(fused, name, None if theirs is None else _copy_module(theirs, share_tensors))
        elif not mine._modules or mine._modules.keys() != theirs._modules.keys() or not _computes_alike(mine, theirs):
            setattr(fused, name, _copy_module(theirs, share_tensors))
        else:
            _copy_modules(mine, theirs, share_tensors)


def _adopt(fused: nn.Module, original: nn.Module, take: bool = False) -> None:
    """Makes ``fused``, built from ``original``'s configuration and on its device and dtype, the
    original's copy: its modules of the original's kind with the original's settings
    (``_copy_modules``: a conv's stride or padding mode, a BatchNorm's class, eps and momentum,
    which the constructor does not take), the original's state, and each submodule's train/eval
    mode (a frozen BatchNorm stays in eval mode in a model in train mode).
    Each parameter keeps the original's ``requires_grad`` (a frozen one stays frozen) and one shared
    under several names stays one parameter.  With ``take``, the parameters and buffers are the
    original's own objects instead of copies (``fuse()``: an optimizer built before keeps them)."""
    computed = _computed_tensor(original)
    if computed is not None:
        raise ValueError(
            f"{type(fused).__name__}.from_torchvision cannot copy {type(original).__name__}'s module "
            f"{computed!r}: its weight or bias is computed (a parametrization, torch.nn.utils.prune) or "
            "held as a plain attribute, which a copy through state_dict cannot take.  Make it a plain "
            "parameter first (prune.remove, parametrize.remove_parametrizations), or fuse() the model "
            "in place, which keeps it as it is"
        )
    _copy_modules(fused, original, share_tensors=take)
    originals = dict(original.named_modules())
    fused.load_state_dict(original.state_dict(), assign=take)  # (checks the keys and shapes; take: no copy)
    theirs = {name: getattr(m, kind)[attr] for name, m, kind, attr in _tensor_slots(original)}
    first_copy: dict = {}  # id(the original's tensor) -> the copy it got under its first name
    for name, m, kind, attr in list(_tensor_slots(fused)):
        source = theirs.get(name)
        if source is None:
            continue
        mine = source if take else first_copy.setdefault(id(source), getattr(m, kind)[attr])
        if kind == "_parameters" and not take:
            mine.requires_grad_(source.requires_grad)
        getattr(m, kind)[attr] = mine
    for name, module in fused.named_modules():
        module.training = originals.get(name, original).training
        if isinstance(module, (FusedInception, FusedGoogLeNet)):
            # Its modules are the original's kind now; copied (not fuse()'s matched ones), they may
            # compute something else than the fused form, which the check then says.
            module.structure_built(checked=not take)


# Values compared by value when a plain attribute is set on a fused foreign block (the same value
# again changes nothing); others by identity.
_PLAIN_VALUES = (bool, int, float, complex, str, bytes, type(None))
# The instance attributes nn.Module itself keeps: a block's other ones are its plain attributes.
_MODULE_ATTRIBUTES = frozenset(nn.Module().__dict__) | {"_compiled_call_impl"}


def _plain_attributes(block: nn.Module) -> tuple:
    """(number of instance attributes, ((name, value), ...) of the plain ones) of ``block``: what
    its forward may read besides its modules, parameters and buffers."""
    d = block.__dict__
    return len(d), tuple((k, v) for k, v in d.items() if k not in _MODULE_ATTRIBUTES)


def _same_value(before, after) -> bool:
    if after is before:
        return True
    if type(before) is not type(after):
        return False
    if type(after) is tuple:
        return len(before) == len(after) and all(_same_value(a, b) for a, b in zip(before, after))
    return type(after) in _PLAIN_VALUES and after == before


class FusedForeignInception(_PackedBlock, nn.Module):
    """An Inception block of any class, recognised by ``fuse()`` from what its forward computes
    (``inception_fast.recognize``), with the fused forward.

    It takes over the original block's submodules, parameters and buffers under their own
    names (the same objects: an optimizer built before ``fuse()`` keeps training them), so its
    state_dict keys are the original's and a checkpoint saved before ``fuse()`` loads after it.
    The forward:

    * eval mode, or no BatchNorm: the fused op from the six conv(→BN) units (BN folded; a conv
      without bias and BN gets a zero bias), differentiable through the op's registered backward;
    * every BatchNorm in train mode: the train-mode BatchNorm op (see the module docstring);
    * BatchNorms mixing train and eval mode or differing in eps, and dtypes the op lacks
      (float64): the matched computation with the block's own modules (each conv, BN and ReLU in
      turn, then torch.cat), which is what the original forward computes: the match proved it;
    * any of its modules replaced since fuse() (``structure_ok``): the original forward, whatever
      the modules now compute, until ``fuse()`` matches them again (``rematch``).
    """

    def __init__(self, block: nn.Module, match, backend: str = "auto") -> None:
        super().__init__()
        for name, child in block._modules.items():
            self.add_module(name, child)
        for name, param in block._parameters.items():
            self.register_parameter(name, param)
        for name, buf in block._buffers.items():
            self.register_buffer(name, buf, persistent=name not in block._non_persistent_buffers_set)
        self.source_class = f"{type(block).__module__}.{type(block).__qualname__}"
        # The original block, not registered (its submodules, parameters and buffers are this
        # module's own, the same objects): with hooks inside, its forward runs, calling every module
        # it calls (wrappers, ReLU and pool modules too), so every hook fires.
        self.__dict__["_source_block"] = block
        self.unit_paths = tuple(match.units)
        self.has_bn = match.has_bn
        self._init_packing(backend)
        self.in_channels = self._units()[0][0].in_channels
        self.training = block.training  # its submodules keep their own modes (a frozen BN stays in eval)
        self._share_dicts_with(block)
        self.__dict__["_adopted"] = True  # from now on, __setattr__ writes the block's own names through

    def _share_dicts_with(self, block: nn.Module) -> None:
        """The original block's dicts of submodules, parameters and buffers become this module's
        (the same dict objects): a module, parameter or buffer replaced on either is replaced on
        both (a method of the block's class that swaps a conv, run through ``__getattr__``)."""
        for key in ("_modules", "_parameters", "_buffers", "_non_persistent_buffers_set"):
            block.__dict__[key] = self.__dict__[key]

    def _replicate_for_data_parallel(self):
        # A replica's dicts are its own: it gets its own shallow copy of the original block on them.
        replica = super()._replicate_for_data_parallel()
        source = copy.copy(self.__dict__["_source_block"])
        replica.__dict__["_source_block"] = source
        replica._share_dicts_with(source)
        return replica

    def __getattr__(self, name: str):
        """Parameters, buffers and submodules as nn.Module finds them; any other name the block's
        own class or instance has (a plain attribute such as ``out_channels``, a method) from the
        original block, so code that read it before ``fuse()`` still reads it."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            source = self.__dict__.get("_source_block")
            if source is None or name.startswith("__"):
                raise
        try:
            return getattr(source, name)
        except AttributeError:
            raise AttributeError(
                f"'{type(self).__name__}' (fused from {self.source_class}) has no attribute {name!r}"
            ) from None

    def __setattr__(self, name: str, value) -> None:
        """A name of the original block's (its instance's, or its class's: a class attribute, a
        property) that is not a module, parameter or buffer, nor this module's own, is set on the
        original block, where its forward and methods read it and where ``__getattr__`` reads it
        back.  Where that changes its value, the forward may compute something else (a size, a
        flag; fuse() traced it with the old value): the original forward runs from then on, until
        ``fuse()`` matches the block again (``rematch``).  The train/eval mode is set on both."""
        d = self.__dict__
        source = d.get("_source_block")
        if name == "training" and source is not None:
            source.training = value
        if not d.get("_adopted") or name in d or hasattr(type(self), name):
            super().__setattr__(name, value)
            return
        if (
            name in d["_parameters"]
            or name in d["_buffers"]
            or name in d["_modules"]
            or isinstance(value, (nn.Module, nn.Parameter))
        ):
            # (shared dicts: the original sees it; a plain attribute of its by that name would hide
            # it, and one its forward read, say None for "no extra scale", now reads the new value)
            shadowed = source.__dict__.pop(name, d) is not d or hasattr(type(source), name)
            super().__setattr__(name, value)
            if shadowed:
                self._original_forward_from_now()
            return
        if not hasattr(source, name):
            super().__setattr__(name, value)
            return
        before = getattr(source, name, None)
        setattr(source, name, value)
        if not _same_value(before, getattr(source, name, None)):
            self._original_forward_from_now()

    def __delattr__(self, name: str) -> None:
        """A plain attribute of the original block's is deleted there (the block then runs its
        original forward, as after a change)."""
        source = self.__dict__.get("_source_block")
        if (
            source is not None
            and self.__dict__.get("_adopted")
            and name in source.__dict__
            and name not in self.__dict__
        ):
            delattr(source, name)
            self._original_forward_from_now()
            return
        super().__delattr__(name)

    def __setstate__(self, state) -> None:
        super().__setstate__(state)
        source = self.__dict__.get("_source_block")
        if source is not None and not self.__dict__.get("_adopted"):  # pickled before the dicts were shared
            self._synced_source()
            self._share_dicts_with(source)
            self.__dict__["_adopted"] = True
        if source is not None and "_source_attributes" not in self.__dict__:  # pickled before they were kept
            self.__dict__["_source_attributes"] = _plain_attributes(source)

    def _original_forward_from_now(self) -> None:
        """A plain attribute the original forward may read changed: fuse() traced the old value."""
        self.__dict__["_structure"] = _StructureCheck(
            self, _itself, type(self)._matches_structure, _PackedBlock.clear_packed_weights, ok=False
        )
        self.__dict__["_source_attributes"] = _plain_attributes(self.__dict__["_source_block"])

    def structure_built(self) -> None:
        super().structure_built()
        self.__dict__["_source_attributes"] = _plain_attributes(self.__dict__["_source_block"])

    def structure_ok(self) -> bool:
        """As _PackedBlock's, and False from the first forward that finds a plain attribute of the
        original block changed, added or deleted other than through this module (a method of the
        block's class run through ``__getattr__``, which sets it on the block itself; code holding
        the block from before ``fuse()``), as after a change through ``__setattr__``."""
        d = self.__dict__
        source, snapshot = d["_source_block"], d["_source_attributes"]
        if len(source.__dict__) != snapshot[0]:
            # A name added or deleted, maybe one of nn.Module's own (a module pickled by an older
            # PyTorch gains them on loading): only the plain ones count.
            now = _plain_attributes(source)
            if _same_value(snapshot[1], now[1]):
                d["_source_attributes"] = now
            else:
                self._original_forward_from_now()
        elif not all(_same_value(v, source.__dict__.get(k, _same_value)) for k, v in snapshot[1]):
            self._original_forward_from_now()
        return super().structure_ok()

    def _find(self, path: str) -> nn.Module:
        module = self
        for part in path.split("."):
            module = module._modules[part]
        return module

    def _units(self) -> list:
        return [(self._find(conv), self._find(bn) if bn is not None else None) for conv, bn in self.unit_paths]

    def _first_weight(self) -> Tensor:
        return stored_weight(self._find(self.unit_paths[0][0]), self)

    def extra_repr(self) -> str:
        return f"from {self.source_class}"

    def _reference(self, x: Tensor) -> Tensor:
        # The units' computation while they still are the block's; else the original forward.
        return self.reference_forward(x) if self.structure_ok() else self._source_forward(x)

    def reference_forward(self, x: Tensor) -> Tensor:
        """The block's computation with its own modules (train-mode BatchNorm included)."""
        units = self._units()

        def unit(i, t):
            conv, bn = units[i]
            t = conv(t)
            return F.relu(bn(t) if bn is not None else t)

        return torch.cat([unit(0, x), unit(2, unit(1, x)), unit(4, unit(3, x)), unit(5, F.max_pool2d(x, 3, 1, 1))], 1)

    def _synced_source(self) -> nn.Module:
        """The original block in this module's train/eval mode (its children, parameters and
        buffers are this module's: the dicts are shared, ``_share_dicts_with``)."""
        source = self._source_block
        source.training = self.training
        return source

    def _source_forward(self, x: Tensor) -> Tensor:
        """The original block's own forward (see _synced_source)."""
        source = self._synced_source()
        return type(source).forward(source, x)

    def _matches_structure(self) -> bool:
        # Any change: the original forward, which computes whatever the modules now are.  Matching
        # them again traces the forward, which must not happen inside one (threads, torch.compile):
        # fuse(model) does it (rematch).
        return False

    def rematch(self) -> bool:
        """Whether the block's modules, as they are now, compute the pattern with the same units
        (traced and matched as fuse() does); if so the fused forward runs again."""
        from .recognize import BlockMatch, match_structure

        try:
            match = match_structure(self._synced_source())
        except Exception:
            return False
        if isinstance(match, BlockMatch) and match.units == self.unit_paths:
            self.structure_built()
            return True
        return False

    def forward(self, x: Tensor) -> Tensor:
        if _transformed(x) or _hooks_inside(self._modules.values()):
            return self._reference_run(x, self._source_forward)  # its original forward: every call, every hook
        if not isinstance(x, Tensor) or x.dim() != 4 or x.dtype not in _FLOAT_DTYPES or x.shape[1] != self.in_channels:
            return self._reference(x)  # its own errors for input it cannot take, float64's answer
        plan = self._bn_plan(x)
        if plan == "reference":
            return self._reference_run(x)
        _check_params_match(x, self._first_weight(), "Inception block")
        return self._fused_call(x, plan)


@dataclass
class FuseReport:
    """What ``fuse()`` did: ``fused`` [(path, class name of the original)], ``left_alone``
    [(path, class name, why)] for modules that looked like Inception blocks (six convs) but do
    not compute the pattern.  ``str()`` is the summary ``fuse()`` logs."""

    fused: list = field(default_factory=list)
    left_alone: list = field(default_factory=list)

    def __str__(self) -> str:
        kinds: dict = {}
        for _, cls in self.fused:
            kinds[cls] = kinds.get(cls, 0) + 1
        text = f"fuse(): fused {len(self.fused)} Inception block(s)"
        if kinds:
            text += " (" + ", ".join(f"{n} {cls}" for cls, n in kinds.items()) + ")"
        if self.left_alone:
            text += f"; left {len(self.left_alone)} lookalike(s) alone:"
            text += "".join(f"\n  {path or '<the model>'} ({cls}): {why}" for path, cls, why in self.left_alone)
        return text


def _standard_units(block: nn.Module) -> tuple:
    """The unit paths of torchvision's / our Inception layout (branch1.conv, ...)."""
    bn = getattr(block.branch1, "bn", None) is not None
    return tuple(
        (f"{p}.conv", f"{p}.bn" if bn else None)
        for p in ("branch1", "branch2.0", "branch2.1", "branch3.0", "branch3.1", "branch4.1")
    )


def _fused_block(block: nn.Module, match, backend: str) -> nn.Module:
    """FusedInception for torchvision's and our own class in their own layout (the class keys
    variants, e.g. FusedGoogLeNet.from_torchvision, rely on), else FusedForeignInception."""
    if (
        is_inception_block(block)
        and _own_computation(block, _block_classes()) is None  # (no forward of its own: ours or torchvision's)
        and match.units == _standard_units(block)
        and match.kernels[0] == 3
        and match.kernels[1] in (3, 5)
        and _computed_tensor(block) is None
        and all((block.get_submodule(conv).bias is None) == (bn is not None) for conv, bn in match.units)
    ):  # the last: our units' conv has a bias exactly where no BN follows (a custom conv_block may differ)
        return FusedInception._built_from(block, backend, take=True)
    return FusedForeignInception(block, match, backend=backend)


def fuse(model: nn.Module, backend: str = "auto", *, report: bool = False):
    """Replaces every Inception block inside ``model`` with a fused one, whatever its class.

    A module is an Inception block when its forward computes the four-branch pattern (traced
    with torch.fx and matched; see ``inception_fast.recognize``): torchvision's and our blocks
    become FusedInception, any other class (the d2l textbook's ``Inception``, your own) a
    FusedForeignInception that keeps its submodules and state_dict keys.  Modules that look like
    blocks (six convs) but compute anything else are left exactly as they were, and so are
    blocks carrying hooks (the fused forward would skip them) and blocks whose forward does what a
    trace cannot see (random draws, grad or autocast modes, decorators).  A FusedForeignInception
    whose modules were replaced since runs its original forward; fuse() on the model again fuses
    it anew where its modules still compute the pattern.

    Both hold the block's own parameter and buffer objects (a parameter shared with other modules
    stays shared; an optimizer built before ``fuse()`` keeps training them; a frozen parameter
    stays frozen).  Device, dtype and the train/eval mode of every submodule are kept.  Returns
    the model (the fused block if ``model`` itself is one), or ``(model, FuseReport)`` with
    ``report=True``.  The summary is logged (logger "inception_fast", level INFO); a warning says
    when nothing was fused or a lookalike was left alone, and why.
    """
    from .recognize import BlockMatch, count_convs, find_candidates, match_block, nested_candidates

    if not isinstance(model, nn.Module):
        raise TypeError(f"fuse() expects a torch.nn.Module, got {type(model).__name__}")
    _check_backend_name(backend)
    done = FuseReport()
    replaced: dict = {}  # id(original block) -> its fused block
    fused_classes = (FusedInception, FusedForeignInception)
    result = model
    # Blocks fused before whose modules changed since run their original forward; those that still
    # compute the pattern are fused again (FusedForeignInception.rematch).
    for block in model.modules():
        if isinstance(block, FusedForeignInception) and not block.structure_ok() and block.rematch():
            done.fused.append((next(p for p, m in model.named_modules() if m is block), block.source_class))
    if isinstance(model, fused_classes):
        candidates = []
    elif count_convs(model) == 6:
        candidates = [("", model)]
    else:
        candidates = list(find_candidates(model, skip=fused_classes))
    for outer_path, outer in candidates:
        tried = [(path, block, match_block(block)) for path, block in nested_candidates(outer_path, outer)]
        matched = [(path, block, match) for path, block, match in tried if isinstance(match, BlockMatch)]
        if not matched:
            done.left_alone.append((outer_path, type(outer).__name__, tried[0][2]))
            continue
        path, block, match = matched[-1]  # the innermost module that computes the block
        if isinstance(block, fused_classes):
            continue
        new = _fused_block(block, match, backend)
        done.fused.append((path, type(block).__name__))
        replaced[id(block)] = new
        if not path:
            result = new
        else:
            parent, _, name = path.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, name, new)
    # A block held under several names (weight tying) is visited once: its other names get the
    # same fused block, so they stay tied.
    if replaced:
        for parent in list(model.modules()):
            for name, child in parent._modules.items():
                if child is not None and id(child) in replaced:
                    parent._modules[name] = replaced[id(child)]
    logging.getLogger("inception_fast").info("%s", done)
    if not done.fused:
        already = sum(isinstance(m, fused_classes) for m in model.modules())
        if not already:
            warnings.warn(
                f"{done}: no module of {type(model).__name__} computes an Inception block"
                if not done.left_alone
                else str(done),
                stacklevel=2,
            )
    elif done.left_alone:
        warnings.warn(str(done), stacklevel=2)
    return (result, done) if report else result
