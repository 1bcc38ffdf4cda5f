"""Backend registry.

A backend computes one Inception block's inference forward from packed weights
(see ``inception_fast.packing``).  Every backend implements the same contract:

    block_forward(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5) -> (out, scratch)

* ``x``: (N, Cin, H, W), channels_last-contiguous, float32/float16/bfloat16.
* ``w_red``: (ch1 + ch3red + ch5red, Cin) row-major; the three 1x1 convs that read
  the block input, BN folded, stacked in branch order.  ``b_red`` their biases.
* ``w_pool``: (pool_proj, Cin); ``b_pool``.
* ``w3``: (ch3, ch3red, 3, 3) and ``w5``: (ch5, ch5red, k, k), both stored
  channels_last, i.e. their memory is (Cout, kh, kw, Cin) contiguous; ``b3``, ``b5``.
* ``out``: (N, ch1 + ch3 + ch5 + pool_proj, H, W), channels_last-contiguous, each
  branch written straight into its channel slice [branch1 | branch2 | branch3 | pool].
* ``scratch``: (N, ch3red + ch5red, H, W), channels_last-contiguous: the two
  reductions after bias+ReLU (kept for the backward pass).

All outputs are post-ReLU.  Backends register themselves with ``register``; the
"torch" backend is always present, "triton" and "cuda" when importable.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Optional

import torch

__all__ = ["Backend", "register", "get", "names", "availability", "available_backends"]


@dataclass(frozen=True)
class Backend:
    name: str
    # Returns None when the backend runs on ``device``, else a short reason why not.
    unavailable_reason: Callable[[torch.device], Optional[str]]
    block_forward: Callable[..., tuple]


_REGISTRY: dict[str, Backend] = {}
_LOAD_ERRORS: dict[str, str] = {}
# The optional backends, loaded in this order (backend="auto" is decided in inception_fast.ops).
_PLUGINS = ("triton", "cuda")
_loaded = False


def register(backend: Backend) -> None:
    _REGISTRY[backend.name] = backend


def _load_plugins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    importlib.import_module(".torch_backend", __name__)
    for name in _PLUGINS:
        try:
            importlib.import_module(f".{name}_backend", __name__)
        except Exception as exc:  # an absent triton / .so must not break import
            _LOAD_ERRORS[name] = f"{type(exc).__name__}: {exc}"


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


def available_backends(device="cpu") -> list[str]:
    """The backends that run on ``device``: "torch" first, then the plugins that load and run there."""
    return [n for n in names() if availability(n, device) is None]
