"""Recognising an Inception block by what its forward computes, whatever its class.

``match_block(module)`` traces ``module.forward`` with torch.fx (in train and in eval mode:
the trace follows Python branches on ``self.training``) and matches the graph against the
four-branch pattern the fused op computes:

  * one input, read by four branches whose results are ``torch.cat``-ed along dim 1, in order:
  * branch 1: a 1x1 conv (+ BatchNorm) + ReLU;
  * branches 2 and 3: a 1x1 conv (+ BN) + ReLU, then a k×k conv (k odd, padding k//2) (+ BN)
    + ReLU, any k;
  * branch 4: a 3x3 stride-1 padding-1 max pool, then a 1x1 conv (+ BN) + ReLU.

Every conv is a plain ``nn.Conv2d`` with stride 1, dilation 1, groups 1 and zero padding; the
BatchNorms are plain ``nn.BatchNorm2d`` (or ``nn.SyncBatchNorm``, or torchvision's
``FrozenBatchNorm2d``); no conv or BatchNorm serves two units; a ReLU is
the module or the function (``F.relu``, ``torch.relu``, ``.relu()``, in place or not).  Nothing
else may be in the graph, and no module of the block may carry hooks (the fused forward would
skip them; ``match_structure`` is the match without that check, for blocks already fused).
The answer is a ``BlockMatch`` (the six conv(+BN) units in packing order, by their paths
inside the module) or the reason it is not one.

``find_candidates(model)`` lists the modules worth matching: the outermost ones holding exactly
six ``nn.Conv2d`` (an Inception block's count); ``nested_candidates`` the modules inside one that
hold all six too (fuse() takes the innermost that matches).
"""

from __future__ import annotations

import dis
import functools
import inspect
import itertools
import types
from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .packing import stock

__all__ = ["BlockMatch", "match_block", "match_structure", "find_candidates", "nested_candidates", "count_convs"]

_RELU_FUNCTIONS = {F.relu, torch.relu, torch.relu_, F.relu_}
_RELU_METHODS = {"relu", "relu_"}
_CAT_FUNCTIONS = {torch.cat, torch.concat, getattr(torch, "concatenate", torch.cat)}


@dataclass(frozen=True)
class BlockMatch:
    """A recognised block: the (conv path, bn path or None) of its six units in packing order
    (branch 1; branch 2's 1x1, k×k; branch 3's 1x1, k×k; the pool branch's 1x1)."""

    units: tuple
    kernels: tuple  # (branch 2's k, branch 3's k)
    has_bn: bool


class _NotABlock(Exception):
    pass


def count_convs(module: nn.Module) -> int:
    return sum(isinstance(m, nn.Conv2d) for m in module.modules())


def find_candidates(module: nn.Module, prefix: str = "", skip=()):
    """Yields (path, module) for every outermost module holding exactly six convs; descends into
    those holding more (not into instances of ``skip``).  See ``nested_candidates`` for the
    modules inside one that hold all six too."""
    for name, child in module.named_children():
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(child, skip):
            continue
        n = count_convs(child)
        if n == 6:
            yield path, child
        elif n > 6:
            yield from find_candidates(child, path, skip)


def nested_candidates(path: str, module: nn.Module) -> list:
    """[(path, module)]: ``module``, then each child that holds all of its six convs, outermost
    first.  fuse() replaces the innermost of them that computes the block: a wrapper around a block
    (an nn.Sequential holding it) stays, and a block whose branches sit in one ModuleList is the
    module around the list."""
    chain = [(path, module)]
    while True:
        inner = [(name, child) for name, child in chain[-1][1].named_children() if count_convs(child) == 6]
        if len(inner) != 1:
            return chain
        name, child = inner[0]
        chain.append((f"{chain[-1][0]}.{name}" if chain[-1][0] else name, child))


def stored_weight(conv: Optional[nn.Module], owner: Optional[nn.Module] = None) -> torch.Tensor:
    """The tensor a conv keeps its weight in (its device and dtype are the conv's): a parametrized
    weight's original, not the computed value (reading that would run the parametrization, with its
    side effects: spectral_norm's power iteration in train mode).  A module put in its place that
    has no weight (a wrapper): the first parameter of ``owner``."""
    weight = conv._parameters.get("weight") if conv is not None else None
    if weight is not None:
        return weight
    plist = conv._modules.get("parametrizations") if conv is not None else None
    if plist is not None and "weight" in plist._modules:
        stored = plist._modules["weight"]
        return stored.original if hasattr(stored, "original") else stored.original0
    if conv is not None and isinstance(getattr(conv, "weight", None), torch.Tensor):
        return conv.weight
    return next((owner if owner is not None else conv).parameters())


_FROZEN: list = []  # [the class or None], filled on first use (torchvision's import is optional)


def _frozen_batch_norm() -> tuple:
    """torchvision's FrozenBatchNorm2d (running statistics as buffers, never batch statistics), where
    torchvision is installed."""
    if not _FROZEN:
        try:
            from torchvision.ops.misc import FrozenBatchNorm2d
        except Exception:
            FrozenBatchNorm2d = None
        _FROZEN.append(FrozenBatchNorm2d)
    return () if _FROZEN[0] is None else (_FROZEN[0],)


def batch_norm_kinds() -> tuple:
    """The BatchNorm classes whose eval-mode computation folds into the conv before them."""
    return (nn.BatchNorm2d, nn.SyncBatchNorm, *_frozen_batch_norm())


class _Tracer(torch.fx.Tracer):
    """torch.fx's default tracer (torch.nn modules other than Sequential are leaves), with
    torchvision's FrozenBatchNorm2d a leaf too."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, _frozen_batch_norm()) or super().is_leaf_module(m, module_qualified_name)


def _trace(module: nn.Module) -> torch.fx.Graph:
    try:
        return _Tracer().trace(module)
    except Exception as exc:  # a forward fx cannot trace (data-dependent control flow, ...)
        raise _NotABlock(
            f"its forward cannot be traced by torch.fx ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None


# What a trace cannot see: it records the tensor operations one run of the forward makes, in the
# grad and autocast modes of that run, with its Python branches decided by that run's values.  So a
# forward whose code draws random numbers (stochastic depth: ``if random.random() < p``), switches
# grad or autocast modes (``with torch.no_grad()``, ``@torch.no_grad()``), or is wrapped by any
# decorator, computes things the graph does not show; such a block is left alone.  A draw is told
# by the names the code spells (below) and by what the names it spells hold: a random source under
# a name of its own (``coin = random.random``, ``from secrets import randbelow``, a generator object
# kept on the module, a Distribution class).  Branches on the module's own attributes
# (``if self.bn is not None``, ``self.training``) are fine: the module is traced in both modes, and
# a replaced module is checked again (FusedInception.structure_ok).
_UNSEEN_NAMES = frozenset(
    {
        "random", "rand", "randn", "randint", "randperm", "rand_like", "randn_like", "randint_like",
        "bernoulli", "bernoulli_", "multinomial", "normal", "normal_", "uniform_", "exponential_",
        "poisson", "binomial", "random_", "cauchy_", "log_normal_", "geometric_",
        "sample", "rsample", "sample_n", "manual_seed", "seed", "get_rng_state", "set_rng_state",
        "no_grad", "enable_grad", "set_grad_enabled", "inference_mode", "is_grad_enabled",
        "autocast", "is_autocast_enabled", "set_autocast_enabled",
    }
)  # fmt: skip
_WITH_OPCODES = frozenset({"SETUP_WITH", "BEFORE_WITH", "SETUP_ASYNC_WITH", "BEFORE_ASYNC_WITH"})


def _known_name(module: str) -> bool:
    """Whether ``module`` names a module of PyTorch's, torchvision's or this package's."""
    return module in ("torch", "inception_fast") or module.startswith(("torch.", "torchvision.", "inception_fast."))


def _known_code(obj) -> bool:
    """PyTorch's, torchvision's and this package's code (fused blocks included): what it computes is
    known, and what it does with grad modes is its own business."""
    return _known_name(getattr(obj, "__module__", None) or "")


# Python's and NumPy's modules of random draws: their functions draw under any name.
_RANDOM_MODULES = ("random", "_random", "secrets", "numpy.random")


@functools.lru_cache(maxsize=1)
def _generator_types() -> tuple:
    """Classes whose objects (and their bound methods) draw random numbers."""
    import random

    kinds = [random.Random, torch.Generator, torch.distributions.Distribution]
    try:
        import numpy.random as npr
    except ImportError:
        pass
    else:
        kinds += [npr.Generator, npr.RandomState, npr.BitGenerator]
    return tuple(kinds)


def _random_source(obj, depth: int = 0) -> bool:
    """Whether ``obj``, something a forward's code names, draws random numbers when used: a module of
    ``_RANDOM_MODULES`` or a function of one (``coin = random.random``), a generator object of
    ``_generator_types()``, a method bound to one, or such a class (``Bernoulli``), a
    ``functools.partial`` of any of these, or a list, tuple or dict holding one (``self.rngs[i]``;
    two levels deep, the first 64 items of each)."""
    kinds = _generator_types()
    if isinstance(obj, type):
        return issubclass(obj, kinds)
    if isinstance(obj, functools.partial):
        return _random_source(obj.func, depth)
    if isinstance(obj, (list, tuple, dict)):
        items = obj.values() if isinstance(obj, dict) else obj
        return depth < 2 and any(_random_source(item, depth + 1) for item in itertools.islice(items, 64))
    try:  # (an object's own __getattr__ may raise anything)
        bound_to = getattr(obj, "__self__", None)
    except Exception:
        return False
    if isinstance(obj, kinds) or isinstance(bound_to, kinds):
        return True
    name = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", None)
    if not isinstance(name, str) or not callable(obj) and not isinstance(obj, types.ModuleType):
        return False
    return any(name == m or name.startswith(m + ".") for m in _RANDOM_MODULES)


def _plain_object(obj) -> bool:
    """An instance of a Python class holding attributes of its own (not a class, module, nn.Module,
    tensor or function): a place a draw may be kept (``types.SimpleNamespace``, a dataclass)."""
    if isinstance(obj, (type, types.ModuleType, nn.Module, torch.Tensor)) or callable(obj):
        return False
    try:  # (an object's own __getattr__ may raise anything)
        return isinstance(getattr(obj, "__dict__", None), dict)
    except Exception:
        return False


def _named_objects(name: str, holders: tuple, functions: dict) -> list:
    """What ``name`` may name in a forward's code: an attribute of one of ``holders`` (the module
    first, its own attributes and its class's; a property's getter, setter and deleter, a cached
    property's function, a static or class method's function: nothing is computed) or a global of
    the code's module."""
    found = []
    for holder in holders:
        attr = inspect.getattr_static(holder, name, None)
        if isinstance(attr, property):
            found += [attr.fget, attr.fset, attr.fdel]
        elif isinstance(attr, functools.cached_property):
            found.append(attr.func)
        elif isinstance(attr, (staticmethod, classmethod)):
            found.append(attr.__func__)
        else:
            found.append(attr)
    found.append(functions.get(name))
    return [obj for obj in found if obj is not None]


def _unseen_in_code(code, functions: dict, owner: nn.Module, seen: set) -> Optional[str]:
    """Why ``code`` (and the methods and properties of ``owner``, the plain functions, and the
    functions of other classes and modules it calls, and the code nested in it) computes something
    a trace would not show, or None.  ``functions``: the globals of the code's module."""
    if code in seen:
        return None
    seen.add(code)
    for ins in dis.get_instructions(code):
        if ins.opname in _WITH_OPCODES:
            return f"{code.co_name}() enters a context manager (the trace records no grad or autocast mode)"
    names = set(code.co_names)
    what = "random numbers or grad/autocast modes a trace does not record"
    unseen = sorted(names & _UNSEEN_NAMES)
    if unseen:
        return f"{code.co_name}() uses {', '.join(unseen)} ({what})"
    nested = [(c, functions) for c in code.co_consts if hasattr(c, "co_code")]
    # Classes and modules the code names (other than PyTorch's and this package's): a function
    # reached as their attribute (``Helpers.maybe_dropped(x)``, ``utils.jitter(x)``) is followed too.
    holders = [functions[n] for n in names if isinstance(functions.get(n), (type, types.ModuleType))]
    holders = [h for h in holders if not _known_name(h.__name__ if isinstance(h, types.ModuleType) else h.__module__)]
    # Plain objects the module keeps under a name the code spells (a config: ``self.cfg.rng``), and
    # those they keep in turn, three levels deep (``self.cfg.train.rng``): their attributes are looked
    # at too (a generator kept there is named itself, below).
    level, ids = [owner], {id(owner)}
    for _ in range(3):
        kept = (inspect.getattr_static(h, n, None) for h in level for n in sorted(names))
        level = [obj for obj in kept if _plain_object(obj) and not _random_source(obj) and id(obj) not in ids]
        ids.update(map(id, level))
        holders += level
    for name in sorted(names):
        for obj in _named_objects(name, (owner, *holders), functions):
            if _random_source(obj):
                return f"{code.co_name}() draws through {name} ({what})"
            if not (callable(obj) and hasattr(obj, "__code__")) or _known_code(obj):
                continue
            if hasattr(obj, "__wrapped__"):
                return f"{name}() is wrapped by a decorator the trace does not see into"
            nested.append((obj.__code__, getattr(obj, "__globals__", functions)))
    for c, globals_ in nested:
        why = _unseen_in_code(c, globals_, owner, seen)
        if why is not None:
            return why
    return None


def _unseen(module: nn.Module) -> Optional[str]:
    """Why the forward of ``module`` or of a module under it that the trace steps into computes
    something its graph would not show (see _UNSEEN_NAMES), or None."""
    tracer, seen = _Tracer(), set()
    for path, m in module.named_modules():
        if path and tracer.is_leaf_module(m, path):
            continue
        # Its class's forward and those it inherits (reached through super()).
        for cls in type(m).__mro__:
            forward = cls.__dict__.get("forward")
            if forward is None or _known_code(forward):
                continue
            if hasattr(forward, "__wrapped__"):
                return f"the forward of {cls.__name__} is wrapped by a decorator the trace does not see into"
            code = getattr(forward, "__code__", None)
            why = None if code is None else _unseen_in_code(code, forward.__globals__, m, seen)
            if why is not None:
                return f"{cls.__name__}: {why}"
    return None


def _hooks(module: nn.Module) -> bool:
    """Whether any module inside carries a forward or backward hook (the fused forward runs none)."""
    return any(
        m._forward_hooks
        or m._forward_pre_hooks
        or m._backward_hooks
        or getattr(m, "_backward_pre_hooks", None)
        or getattr(m, "_forward_hooks_with_kwargs", None)
        for m in module.modules()
    )


def _pair(v) -> Optional[int]:
    if isinstance(v, int):
        return v
    if isinstance(v, (tuple, list)) and len(set(v)) == 1:
        return int(v[0])
    return None


def _describe(node: torch.fx.Node, root: nn.Module) -> str:
    if node.op == "call_module":
        return f"{type(root.get_submodule(node.target)).__name__} ({node.target})"
    if node.op == "call_function":
        return getattr(node.target, "__name__", str(node.target))
    if node.op == "call_method":
        return f".{node.target}()"
    return node.op


def _is_relu(node: torch.fx.Node, root: nn.Module) -> bool:
    if node.op == "call_module":
        return type(root.get_submodule(node.target)) is nn.ReLU
    if node.op == "call_function":
        return node.target in _RELU_FUNCTIONS
    return node.op == "call_method" and node.target in _RELU_METHODS


def _tensor_args(node: torch.fx.Node) -> list:
    return [a for a in (*node.args, *node.kwargs.values()) if isinstance(a, torch.fx.Node)]


def _check_conv(conv: nn.Module, where: str, k: Optional[int]) -> int:
    """The square kernel size of a conv the fused op computes (1 when ``k`` is 1), else raises."""
    why = conv_problem(conv, where, k)
    if why is not None:
        raise _NotABlock(why)
    return _pair(conv.kernel_size)


def conv_problem(conv: Optional[nn.Module], where: str, k: Optional[int]) -> Optional[str]:
    """Why ``conv`` is not a conv the fused op computes (``k`` 1: a 1x1; None: any odd square
    kernel), or None.  No exceptions: a fused block's forward runs it, under torch.compile too
    (Dynamo cannot trace an exception's str() on torch 2.11)."""
    if not stock(conv, nn.Conv2d):
        return f"{where}: {type(conv).__name__} is not a plain nn.Conv2d"
    size = _pair(conv.kernel_size)
    if size is None:
        return f"{where}: non-square kernel {tuple(conv.kernel_size)}"
    if k == 1 and size != 1:
        return f"{where}: a {size}x{size} conv where a 1x1 belongs"
    if size % 2 == 0:
        return f"{where}: even kernel {size}x{size} (the branch would change the spatial size)"
    if _pair(conv.stride) != 1:
        return f"{where}: stride {tuple(conv.stride)}"
    if _pair(conv.dilation) != 1:
        return f"{where}: dilation {tuple(conv.dilation)}"
    if conv.groups != 1:
        return f"{where}: groups={conv.groups}"
    if conv.padding_mode != "zeros":
        return f"{where}: padding_mode={conv.padding_mode!r}"
    padding = conv.padding  # ("valid" is no padding: the pattern's for a 1x1)
    if not (padding == "same" or (padding == "valid" and size == 1) or _pair(padding) == size // 2):
        return f"{where}: padding {padding} with a {size}x{size} kernel (the pattern has padding {size // 2})"
    return None


def pool_problem(pool: nn.Module, where: str) -> Optional[str]:
    """Why the module ``pool`` is not a 3x3 stride-1 padding-1 max pool, or None."""
    if type(pool) is not nn.MaxPool2d:
        return f"{where}: {type(pool).__name__} where a 3x3/1 max pool belongs"
    params = (
        _pair(pool.kernel_size),
        _pair(pool.stride if pool.stride is not None else pool.kernel_size),
        _pair(pool.padding),
        _pair(pool.dilation),
        pool.return_indices,
    )
    return _pool_params_problem(params, where)


def _pool_params_problem(params: tuple, where: str) -> Optional[str]:
    if params == (3, 1, 1, 1, False):
        return None
    kernel, stride, padding, dilation, _ = params
    return (
        f"{where}: max pool kernel {kernel}, stride {stride}, padding {padding}, dilation {dilation} "
        "(the pattern has 3, 1, 1, 1)"
    )


def bn_channels(bn: nn.Module) -> int:
    """How many channels a BatchNorm of ``batch_norm_kinds()`` normalises."""
    return bn.num_features if hasattr(bn, "num_features") else bn.running_mean.numel()


def _check_bn(bn: nn.Module, conv: nn.Module, where: str) -> None:
    # Without running statistics (track_running_stats=False) it normalises with batch statistics in
    # eval mode too: the fused block's train-mode BatchNorm op, never a fold (FusedInception._bn_plan).
    if type(bn) not in batch_norm_kinds():
        raise _NotABlock(f"{where}: {type(bn).__name__} after the conv (only nn.BatchNorm2d and its kin fold)")
    if bn_channels(bn) != conv.out_channels:
        raise _NotABlock(f"{where}: BatchNorm2d over {bn_channels(bn)} channels after a conv with {conv.out_channels}")


def _check_pool(node: torch.fx.Node, root: nn.Module, where: str) -> None:
    """A 3x3 stride-1 padding-1 max pool (its ceil_mode changes nothing at that size)."""
    if node.op == "call_module":
        why = pool_problem(root.get_submodule(node.target), where)
    elif node.op == "call_function" and node.target in (F.max_pool2d, torch.max_pool2d):
        names = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
        bound = dict(zip(names, node.args))
        bound.update(node.kwargs)
        kernel = _pair(bound.get("kernel_size"))
        stride = bound.get("stride")
        stride = kernel if stride is None or stride == [] or stride == () else _pair(stride)
        params = (
            kernel,
            stride,
            _pair(bound.get("padding", 0)),
            _pair(bound.get("dilation", 1)),
            bool(bound.get("return_indices", False)),
        )
        why = _pool_params_problem(params, where)
    else:
        why = f"{where}: {_describe(node, root)} where a 3x3/1 max pool belongs"
    if why is not None:
        raise _NotABlock(why)


def _branch_chain(end: torch.fx.Node, start: torch.fx.Node, where: str, root: nn.Module) -> list:
    """The nodes from ``start`` (exclusive) to ``end`` along single-input steps, in order."""
    chain = []
    node = end
    while node is not start:
        if node.op == "placeholder":
            raise _NotABlock(f"{where}: reads another input")
        inputs = _tensor_args(node)
        if len(inputs) != 1:
            raise _NotABlock(f"{where}: {_describe(node, root)} combines {len(inputs)} tensors")
        if node.op not in ("call_module", "call_function", "call_method"):
            raise _NotABlock(f"{where}: unsupported node {node.op}")
        chain.append(node)
        node = inputs[0]
    chain.reverse()
    for step in chain[:-1]:
        if len(step.users) != 1:
            raise _NotABlock(f"{where}: the result of {_describe(step, root)} is used elsewhere too")
    return chain


def _units(chain: list, where: str, root: nn.Module, pooled: bool) -> list:
    """Parses a branch chain into (conv path, bn path) units; checks the pool and every ReLU."""
    steps = list(chain)
    if pooled:
        if not steps:
            raise _NotABlock(f"{where}: empty branch")
        _check_pool(steps.pop(0), root, where)
    units = []
    while steps:
        node = steps.pop(0)
        conv = root.get_submodule(node.target) if node.op == "call_module" else None
        if conv is None or not isinstance(conv, nn.Conv2d):
            raise _NotABlock(f"{where}: {_describe(node, root)} where a conv belongs")
        bn_path = None
        if (
            steps
            and steps[0].op == "call_module"
            and not _is_relu(steps[0], root)
            and not isinstance(root.get_submodule(steps[0].target), nn.Conv2d)
        ):
            bn_node = steps.pop(0)
            _check_bn(root.get_submodule(bn_node.target), conv, where)
            bn_path = bn_node.target
        if not steps or not _is_relu(steps[0], root):
            after = _describe(steps[0], root) if steps else "nothing"
            raise _NotABlock(f"{where}: {_describe(node, root)} is followed by {after}, not ReLU")
        steps.pop(0)
        units.append((node.target, bn_path))
    return units


def _match_graph(graph: torch.fx.Graph, root: nn.Module) -> BlockMatch:
    nodes = list(graph.nodes)
    inputs = [n for n in nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise _NotABlock(f"its forward takes {len(inputs)} inputs, not 1")
    (x,) = inputs
    output = [n for n in nodes if n.op == "output"][0]
    result = output.args[0]
    if not isinstance(result, torch.fx.Node) or result.op != "call_function" or result.target not in _CAT_FUNCTIONS:
        what = _describe(result, root) if isinstance(result, torch.fx.Node) else type(result).__name__
        raise _NotABlock(f"it returns {what}, not torch.cat of four branches")
    tensors = result.args[0] if result.args else result.kwargs.get("tensors")
    dim = result.args[1] if len(result.args) > 1 else result.kwargs.get("dim", 0)
    if dim != 1:
        raise _NotABlock(f"torch.cat along dim {dim}, not 1 (channels)")
    if not isinstance(tensors, (list, tuple)) or len(tensors) != 4:
        raise _NotABlock(f"torch.cat of {len(tensors) if isinstance(tensors, (list, tuple)) else '?'} tensors, not 4")
    shapes = [(False, 1), (False, 2), (False, 2), (True, 1)]
    names = ["branch 1 (1x1)", "branch 2 (1x1, k×k)", "branch 3 (1x1, k×k)", "branch 4 (pool, 1x1)"]
    units, used = [], {x, result, output}
    for i, (branch, (pooled, n_units)) in enumerate(zip(tensors, shapes)):
        where = f"concat input {i + 1}, {names[i]}"
        if not isinstance(branch, torch.fx.Node):
            raise _NotABlock(f"{where}: not a tensor computed from the input")
        chain = _branch_chain(branch, x, where, root)
        used.update(chain)
        found = _units(chain, where, root, pooled)
        if len(found) != n_units:
            raise _NotABlock(
                f"{where}: {len(found)} conv(s) where the pattern has {n_units}{' after a max pool' if pooled else ''}"
            )
        units.extend(found)
    extra = [n for n in nodes if n not in used]
    if extra:
        raise _NotABlock(f"its forward also computes {', '.join(_describe(n, root) for n in extra[:3])}")
    paths = [path for unit in units for path in unit if path is not None]
    if len(set(paths)) != len(paths) or len({id(root.get_submodule(p)) for p in paths}) != len(paths):
        raise _NotABlock("a conv or BatchNorm serves two of its units (the fused op gives each its own)")
    convs = [root.get_submodule(c) for c, _ in units]
    kernels = []
    for i, conv in enumerate(convs):
        where = f"conv {units[i][0]}"
        is_kxk = i in (2, 4)
        size = _check_conv(conv, where, None if is_kxk else 1)
        if is_kxk:
            kernels.append(size)
    cin = convs[0].in_channels
    for i in (0, 1, 3, 5):
        if convs[i].in_channels != cin:
            raise _NotABlock(f"conv {units[i][0]} reads {convs[i].in_channels} channels, conv {units[0][0]} {cin}")
    if len({(stored_weight(c).device, stored_weight(c).dtype) for c in convs}) != 1:
        raise _NotABlock("its convs live on different devices or dtypes")
    return BlockMatch(tuple(units), tuple(kernels), any(bn is not None for _, bn in units))


def match_block(module: nn.Module) -> Union[BlockMatch, str]:
    """A BlockMatch when ``module``'s forward computes the Inception pattern (in train and in
    eval mode), else the reason it does not, as a sentence fragment."""
    if _hooks(module):
        return "it or one of its submodules has hooks (left to run as written; fuse() before registering them)"
    if _own_state_dict(module):
        return (
            "its class keeps state_dict contents of its own (extra state, state_dict hooks or its own "
            "loading): a fused block would drop them"
        )
    return match_structure(module)


_STATE_DICT_METHODS = ("get_extra_state", "set_extra_state", "_save_to_state_dict", "_load_from_state_dict")
_STATE_DICT_HOOKS = (
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)


def _own_state_dict(block: nn.Module) -> bool:
    """Whether the block itself (not its submodules, which a fused block keeps) changes what its
    state_dict holds or how it loads: a class override of nn.Module's state_dict methods or a
    state_dict hook on it.  A fused foreign block has its own class and hook dicts."""
    cls = type(block)
    overridden = any(getattr(cls, name, None) is not getattr(nn.Module, name, None) for name in _STATE_DICT_METHODS)
    return overridden or any(getattr(block, name, None) for name in _STATE_DICT_HOOKS)


def match_structure(module: nn.Module) -> Union[BlockMatch, str]:
    """``match_block`` without its checks for hooks and for an overridden state_dict: whether the
    modules a fused block holds still compute the pattern (its forward runs hooks by itself)."""
    why = _unseen(module)
    if why is not None:
        return why
    modes = {m: m.training for m in module.modules()}  # put back exactly: a frozen BN stays in eval
    matches = []
    try:
        for mode in (False, True):
            module.train(mode)
            matches.append(_match_graph(_trace(module), module))
    except _NotABlock as exc:
        return str(exc)
    finally:
        for m, training in modes.items():
            m.training = training
    if matches[0] != matches[1]:
        return "its forward computes something else in train mode than in eval mode"
    return matches[0]
