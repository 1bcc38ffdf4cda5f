"""The compiled extension ``inception_fast._C`` (csrc/), whose kernels the "cpp" and "cuda"
backends run: one Inception block in two launches.

* Launch 1, ``torch.ops.inception_fast.reduce_pool_``: the three input-reading 1x1
  convs (branch 1 into its slice of ``out``, the reductions into ``scratch``) and the whole
  pool branch: on CUDA one kernel, the 1x1s as one GEMM and the 3x3 max pool formed while
  loading; on CPU two GEMMs, then ATen's pool and the projection.
* Launch 2, ``torch.ops.inception_fast.branch_convs_``: the 3x3 and k x k convs as
  implicit GEMMs over ``scratch``, each into its slice of ``out``.
And, on CPU only, ``torch.ops.inception_fast.cpu_max_pool2d`` (csrc/cpu/max_pool.cpp): a
channels_last max pool in float32 and bfloat16 without ATen's argmax (``max_pool2d``).

The extension registers a CPU kernel of each (csrc/cpu/, ATen calls composed in C++) and,
when built with nvcc, a CUDA kernel (csrc/cuda/conv_gemm.cu, tensor cores); the dispatcher
picks one by the tensors' device.  ``block_forward`` therefore serves both backends, and each
backend's ``unavailable_reason`` keeps it to its own device.  The ops' schemas are defined by
inception_fast.ops, which the package imports before any backend is loaded.

Importing this module never fails when the extension is absent: ``load_extension`` imports it
(the backends load it with their plugins, when a model is built or unpickled), and
``missing_reason`` then says why it is missing.
"""

from __future__ import annotations

import importlib
from typing import Optional

import torch

from .. import geometry
from . import torch_backend

__all__ = [
    "BUILD_HINT",
    "load_extension",
    "extension_error",
    "missing_reason",
    "has_cuda_kernels",
    "block_forward",
    "max_pool2d",
]

BUILD_HINT = "build it with: CUDA_HOME=/usr/local/cuda pip install --no-build-isolation -e ."
_extension = None
_extension_error: Optional[str] = None
_tried = False


def load_extension():
    """The imported ``inception_fast._C`` module, or None (see ``extension_error``)."""
    global _extension, _extension_error, _tried
    if not _tried:
        _tried = True
        try:
            _extension = importlib.import_module("inception_fast._C")
        except Exception as exc:  # absent, or built against another torch (undefined symbols)
            _extension_error = f"{type(exc).__name__}: {exc}"
    return _extension


def extension_error() -> Optional[str]:
    """None when the extension loaded, else why it did not."""
    load_extension()
    return _extension_error


def missing_reason() -> Optional[str]:
    """None when the extension loaded, else a backend's reason: why it is missing and how to build it."""
    if load_extension() is None:
        return f"the compiled extension inception_fast._C is not built ({_extension_error}); {BUILD_HINT}"
    return None


def has_cuda_kernels() -> bool:
    """Whether the loaded extension registered CUDA kernels (it was built with nvcc)."""
    if load_extension() is None:
        return False
    return bool(getattr(_extension, "with_cuda", 0)) and torch._C._dispatch_has_kernel_for_dispatch_key(
        "inception_fast::reduce_pool_", "CUDA"
    )


def block_forward(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5):
    """The block kernel (contract in inception_fast.backends) as the extension's two launches."""
    if load_extension() is None:
        raise RuntimeError(f"the compiled extension inception_fast._C is not built ({_extension_error})")
    out, scratch = geometry.empty_outputs(x, w_red, w_pool, w3, w5)
    torch.ops.inception_fast.reduce_pool_(x, w_red, b_red, w_pool, b_pool, out, scratch)
    ch1 = geometry.block_channels(w_red, w_pool, w3, w5).ch1
    torch.ops.inception_fast.branch_convs_(scratch, w3, b3, w5, b5, out, ch1)
    return out, scratch


MAX_POOL_KERNEL = 8  # csrc/cpu/max_pool.cpp's widest window


def max_pool2d(x, kernel, stride, padding, ceil_mode):
    """The "cpp" backend's max pool (op ``inception_fast::max_pool2d``'s contract): the extension's
    kernel in float32 and bfloat16 on CPU with windows up to 8x8, ATen's pool otherwise (float16,
    larger windows); channels_last."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.bfloat16) or kernel > MAX_POOL_KERNEL:
        return torch_backend.max_pool2d(x, kernel, stride, padding, ceil_mode)
    if load_extension() is None:
        raise RuntimeError(f"the compiled extension inception_fast._C is not built ({_extension_error})")
    return torch.ops.inception_fast.cpu_max_pool2d(x, kernel, stride, padding, ceil_mode)
