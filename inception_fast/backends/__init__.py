"""Backend registry.

A backend is a name, a test of whether it runs on a device, and the kernels it implements: one
per op of ``inception_fast.ops`` ("inception_block", "inception_block_backward", "conv_relu_maxpool",
"max_pool2d", "avgpool_linear", ...), each
called with the op's arguments but the backend name, on inputs the op has checked.  Adding a
backend is one ``register`` call (``registry.py``) in one file (or package) under ``backends/``,
plus its name in ``_PLUGINS``.

The block kernel's contract, for every backend:

    inception_block(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5) -> (out, scratch)

* ``x``: (N, Cin, H, W), channels_last-contiguous, float32/float16/bfloat16.
* ``w_red``: (ch1 + ch3red + ch5red, Cin) row-major; the three 1x1 convs that read the block
  input, BN folded, stacked in branch order.  ``b_red`` their biases.
* ``w_pool``: (pool_proj, Cin); ``b_pool``.
* ``w3``: (ch3, ch3red, 3, 3) and ``w5``: (ch5, ch5red, k, k), both stored channels_last, i.e.
  their memory is (Cout, kh, kw, Cin) contiguous; ``b3``, ``b5``.
* ``out``: (N, ch1 + ch3 + ch5 + pool_proj, H, W), channels_last-contiguous, each branch written
  straight into its channel slice [branch1 | branch2 | branch3 | pool].
* ``scratch``: (N, ch3red + ch5red, H, W), channels_last-contiguous: the two reductions after
  bias+ReLU (kept for the backward pass).
Both are allocated by ``inception_fast.geometry.empty_outputs``.  All outputs are post-ReLU.

The block on a max-pooled input (op ``pooled_inception_block``, inference only), where a backend
has one ("torch": ATen's pool then its block; "triton": the pool folded into launch 1's loads):

    pooled_inception_block(x, kernel, stride, padding, ceil_mode, w_red, ..., b5) -> out

* ``x``: the block's input BEFORE max_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode),
  channels_last-contiguous; the weights as above; ``out`` as above at the pooled size.

Consecutive blocks (op ``inception_chain``, inference only), where a backend has one ("torch":
the blocks one after another; "triton": each block's launch 2 joined with the next block's
launch 1):

    inception_chain(x, blocks, pre_pool) -> out

* ``blocks``: a list of the blocks' packed weights, (w_red, b_red, w_pool, b_pool, w3, b3, w5, b5)
  each, block i's output channels block i+1's input channels; ``pre_pool`` None or (kernel,
  stride, padding, ceil_mode), the max pool before the first block as ``pooled_inception_block``
  takes it; ``out`` the last block's output.

The block backward's kernel (op ``inception_block_backward``), where a backend has one:

    inception_block_backward(grad_out, x, w_red, w_pool, w3, w5, out, scratch, need_input_grad)
        -> (grad_x or None, gw_red, gb_red, gw_pool, gb_pool, gw3, gb3, gw5, gb5)

* ``x``, the weights, ``out`` and ``scratch`` as the forward had and made them; ``grad_out`` shaped
  like ``out``, any strides.
* The gradients have the shapes of the forward's x, weights and biases; ``grad_x`` is None when
  ``need_input_grad`` is False.
"torch" implements it as a chain of ATen calls, which "cpp", "cuda", "onednn", "hopper" and
"hopper_tma2" register as theirs; "triton" in three Triton launches (``triton/block_backward.py``).

"torch" is always present; "triton", "cuda", "cpp" and "onednn" when they load ("cuda" and "cpp"
are the CUDA and the C++ CPU kernels of the compiled extension, ``extension.py``; "onednn" is
oneDNN's CPU convolutions with prepacked weights, ``onednn_backend.py``; "hopper" the Triton block
with both launches on TMA, sm90+, ``hopper_backend.py``; "hopper_tma2", from the same module, the
triton backend's launch 1 with the TMA launch 2, so each TMA launch is a measured candidate of its
own).  No module here imports
``inception_fast.ops``: the ops layer calls down into the registry, never the other way.

Renamed backends keep their old name for one release (``RENAMED``): ``resolve`` and the ops map it
to the new one, with a DeprecationWarning; ``available_backends`` lists only the new name.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Optional

import torch

from .registry import _REGISTRY, OPS, Backend, register

__all__ = [
    "Backend",
    "OPS",
    "RENAMED",
    "register",
    "get",
    "names",
    "availability",
    "dtype_reason",
    "available_backends",
    "renamed",
    "resolve",
]

_LOAD_ERRORS: dict[str, str] = {}
# The optional backends, loaded in this order (backend="auto" is decided in inception_fast.choices).
_PLUGINS = ("triton", "cuda", "cpp", "onednn", "hopper", "hopper_tma2")
_MODULES = {
    "torch": ".torch_backend",
    "triton": ".triton",
    "cuda": ".cuda_backend",
    "cpp": ".cpp_backend",
    "onednn": ".onednn_backend",
    "hopper": ".hopper_backend",
    "hopper_tma2": ".hopper_backend",
}
# Old names, kept until the next release: (name, device type) -> the backend that runs there now.
# Until then "cuda" named the compiled extension's kernels on CPU as well as on CUDA.
RENAMED = {("cuda", "cpu"): "cpp"}
_loaded = False


def _load_plugins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    importlib.import_module(_MODULES["torch"], __name__)
    for name in _PLUGINS:
        try:
            importlib.import_module(_MODULES.get(name, f".{name}_backend"), __name__)
        except Exception as exc:  # an absent triton / .so must not break import
            _LOAD_ERRORS[name] = f"{type(exc).__name__}: {exc}"
    # The compiled extension too (under a millisecond; a failure is recorded, not raised), so that
    # a backend's first availability check inside a torch.compile trace does not import it there.
    importlib.import_module(".extension", __name__).load_extension()


def names() -> list[str]:
    _load_plugins()
    return ["torch", *_PLUGINS]


def get(name: str) -> Backend:
    _load_plugins()
    if name not in _REGISTRY:
        known = ", ".join(names())
        why = _LOAD_ERRORS.get(name)
        if why is not None:
            raise RuntimeError(f"backend {name!r} could not be loaded ({why})")
        raise ValueError(f"unknown backend {name!r}; known backends: {known}")
    return _REGISTRY[name]


def availability(name: str, device) -> Optional[str]:
    """None if backend ``name`` runs on ``device``, else the reason it does not."""
    _load_plugins()
    device = torch.device(device)
    if name not in _REGISTRY:
        if name in _LOAD_ERRORS:
            return f"could not be loaded ({_LOAD_ERRORS[name]})"
        return f"unknown backend (known: {', '.join(names())})"
    return _REGISTRY[name].unavailable_reason(device)


def dtype_reason(name: str, device, dtype: torch.dtype) -> Optional[str]:
    """None if backend ``name``, which runs on ``device``, computes in ``dtype`` there, else the
    reason it does not (the "onednn" backend's bfloat16 on a CPU without oneDNN's bf16 convolutions)."""
    _load_plugins()
    backend = _REGISTRY.get(name)
    if backend is None or backend.dtype_reason is None:
        return None
    return backend.dtype_reason(torch.device(device), dtype)


def available_backends(device="cpu") -> list[str]:
    """The backends that run on ``device``: "torch" first, then the plugins that load and run there."""
    return [n for n in names() if availability(n, device) is None]


def renamed(name: str, device) -> str:
    """``name``, or the backend that replaced it on ``device`` (``RENAMED``), with a DeprecationWarning."""
    device = torch.device(device)
    new = RENAMED.get((name, device.type))
    if new is None:
        return name
    warnings.warn(
        f"backend {name!r} on {device.type} is a deprecated name of the {new!r} backend, kept until the next "
        f"release; pass backend={new!r}",
        DeprecationWarning,
        stacklevel=3,
    )
    return new


def resolve(backend: str, device) -> str:
    """What the ops are given for a module's ``backend`` on ``device``.

    A named backend is returned after checking it runs there (else a RuntimeError that lists
    the ones that do); an old name (``RENAMED``) becomes the new one, with a DeprecationWarning.
    ``"auto"`` stays "auto" on CUDA, where ``inception_fast.choices.AUTO`` chooses per block shape at
    run time; on CPU it is "onednn" where that runs, else "torch": a static rule, backed by the
    side-by-side runs in benchmarks/results (oneDNN's prepacked convolutions against the torch
    backend on the 2-core AVX-512 machine).  The modules run auto's "onednn" from prepacked weights
    only for inference in float32/bfloat16; under torch.compile as plain ATen ops; with gradients,
    under torch.export and in float16 they run the "torch" backend's op
    (``FusedInception.fused_forward``).  A FusedGoogLeNet's inference forward on small inputs
    runs the backend its whole-network choice measured instead (``choices.CPU_NETWORK_CHOICE``).
    """
    device = torch.device(device)
    if backend == "auto":
        if device.type == "cuda":
            return "auto"
        return "onednn" if device.type == "cpu" and availability("onednn", device) is None else "torch"
    backend = renamed(backend, device)
    why = availability(backend, device)
    if why is not None:
        avail = ", ".join(available_backends(device)) or "none"
        raise RuntimeError(f"backend {backend!r} is unavailable on {device}: {why}. Available on {device}: {avail}")
    return backend
