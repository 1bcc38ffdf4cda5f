"""The "cuda" backend: the compiled extension's CUDA kernels (csrc/cuda/conv_gemm.cu: the
tensor-core launch 1 and launch 2, see ``inception_fast.backends.extension``), on CUDA devices
of compute capability 8.0 or more.  The extension's C++ CPU kernels are the "cpp" backend.

No device is queried before ``unavailable_reason`` is asked about one.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import extension, torch_backend
from .registry import Backend, register, sm80_reason


def _unavailable_reason(device) -> Optional[str]:
    device = torch.device(device)
    if device.type != "cuda":
        elsewhere = "; the compiled C++ CPU kernels are the 'cpp' backend" if device.type == "cpu" else ""
        return f"runs on cuda only, not on {device.type}{elsewhere}"
    missing = extension.missing_reason()
    if missing is not None:
        return missing
    if not extension.has_cuda_kernels():
        return (
            "inception_fast._C was built without CUDA kernels (no nvcc under CUDA_HOME, or torch without "
            f"CUDA, at build time); {extension.BUILD_HINT}"
        )
    return sm80_reason(device, " (mma.sync bf16, cp.async)")


# The backward is the torch backend's ATen chain (torch_backend.block_backward).
register(
    Backend(
        "cuda",
        _unavailable_reason,
        {"inception_block": extension.block_forward, "inception_block_backward": torch_backend.block_backward},
    )
)
