"""The "hopper" backend: the Triton block with both launches on Hopper's machinery (TMA descriptors,
a pipelined K loop, a persistent grid; launch 1 ``triton/reduce_pool_tma.py``, launch 2
``triton/branch_convs_tma.py``; each falls back to the triton backend's where TMA cannot describe
its operands), on CUDA devices of compute capability 9.0 or more, and on CPU under
TRITON_INTERPRET=1 (tests).

It implements the forward only (op ``inception_block``); its backward is the torch backend's
ATen chain, as for "cuda" and "cpp".  Under ``backend="auto"`` it is one more measured candidate,
checked against the torch backend on its first run.

Importing this module imports no triton; no device is queried before ``unavailable_reason`` is
asked about one.
"""

from __future__ import annotations

import importlib
from typing import Optional

import torch

from . import torch_backend
from . import triton as triton_backend
from .registry import Backend, register


def _unavailable_reason(device) -> Optional[str]:
    device = torch.device(device)
    why = triton_backend._unavailable_reason(device)
    if why is not None:
        return why
    try:
        importlib.import_module("triton.tools.tensor_descriptor")
    except ImportError:
        return "this triton has no host-side TMA descriptors (triton.tools.tensor_descriptor)"
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if major < 9:
            return f"needs compute capability >= 9.0 (TMA, wgmma), found {major}.{minor}"
    return None


def _block_forward(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5):
    from .triton.block import block_forward_tma  # imports triton and compiles nothing until a launch

    return block_forward_tma(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5)


register(
    Backend(
        "hopper",
        _unavailable_reason,
        {"inception_block": _block_forward, "inception_block_backward": torch_backend.block_backward},
    )
)
