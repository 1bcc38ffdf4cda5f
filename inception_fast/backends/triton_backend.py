"""The "triton" backend: one Inception block in two Triton launches (see backends/triton/).

Importing this module is cheap: triton itself is imported on the first availability check or
block forward, and no device is queried until ``unavailable_reason`` is asked about one.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Optional

import torch

from . import Backend, register

_import_error: Optional[str] = None
_imported = False


def _triton_import_error() -> Optional[str]:
    """None when triton imports, else why not (checked once)."""
    global _imported, _import_error
    if not _imported:
        _imported = True
        try:
            importlib.import_module("triton")
        except ImportError as exc:
            _import_error = "triton is not installed" if exc.name == "triton" else f"triton failed to import ({exc})"
        except Exception as exc:  # a broken install must not break backend discovery
            _import_error = f"triton failed to import ({type(exc).__name__}: {exc})"
    return _import_error


def _unavailable_reason(device: torch.device) -> Optional[str]:
    device = torch.device(device)
    why = _triton_import_error()
    if why is not None:
        return why
    if device.type == "cpu":
        if os.environ.get("TRITON_INTERPRET") != "1":
            return "needs TRITON_INTERPRET=1 on CPU (set before triton is imported)"
        kernels = sys.modules.get(f"{__package__}.triton._common")
        if kernels is not None and not kernels.INTERPRET:
            return "needs TRITON_INTERPRET=1 on CPU, set before the kernels were imported (they were compiled for GPU)"
        return None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available"
        major, minor = torch.cuda.get_device_capability(device)
        if major < 8:
            return f"needs compute capability >= 8.0, found {major}.{minor}"
        return None
    return f"runs on CUDA (or on CPU under TRITON_INTERPRET=1), not on {device.type}"


def _block_forward(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5):
    from .triton import block_forward  # imports triton and compiles nothing until a launch

    return block_forward(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5)


register(Backend("triton", _unavailable_reason, _block_forward))
