"""The "hopper" and "hopper_tma2" backends: the Triton block with its launches on Hopper's machinery
(TMA descriptors, a pipelined K loop, a persistent grid), on CUDA devices of compute capability
9.0 or more, and on CPU under TRITON_INTERPRET=1 (tests).

* "hopper": both launches on TMA (launch 1 ``triton/reduce_pool_tma.py``, launch 2
  ``triton/branch_convs_tma.py``).
* "hopper_tma2": the triton backend's launch 1 (``triton/reduce_pool.py``) and the TMA launch 2,
  so that ``backend="auto"`` times the TMA launch 2 without the TMA launch 1 as well: each TMA
  launch is then a measured candidate of its own.  It adds no binary (its launches are those of
  "triton" and "hopper"), only timing runs.

Each TMA launch falls back to the triton backend's where TMA cannot describe its operands.  Both
implement the forward only (op ``inception_block``); their backward is the torch backend's ATen
chain, as for "cuda" and "cpp".  Under ``backend="auto"`` they are measured candidates, checked
against the torch backend on their first run.

Importing this module imports no triton; no device is queried before ``unavailable_reason`` is
asked about one.
"""

from __future__ import annotations

import importlib
from typing import Optional

import torch

from .. import geometry
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


def _block_forward_tma2(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5):
    from .triton.block import block_forward_tma

    return block_forward_tma(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, tma_launch1=False)


for _name, _forward in (("hopper", _block_forward), ("hopper_tma2", _block_forward_tma2)):
    register(
        Backend(
            _name,
            _unavailable_reason,
            {"inception_block": _forward, "inception_block_backward": torch_backend.block_backward},
            dtype_reason=lambda device, dtype: triton_backend._dtype_reason(dtype),
            block_reason=geometry.branch_kernels_reason,
        )
    )
