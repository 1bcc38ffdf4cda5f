"""The registry itself: what a backend is, and where backends register.  The backend modules
import this (never the package, which loads them), so the import graph has no cycle."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

import torch

__all__ = ["OPS", "Backend", "register", "sm80_reason"]

# The ops a backend may implement (inception_fast.ops defines their schemas).
OPS = (
    "inception_block",
    "pooled_inception_block",
    "inception_chain",
    "inception_block_backward",
    "inception_block_bn_train",
    "conv_relu_maxpool",
    "conv_relu",
    "max_pool2d",
    "avgpool_linear",
)


@dataclass(frozen=True)
class Backend:
    name: str
    # Returns None when the backend runs on ``device``, else a short reason why not.
    unavailable_reason: Callable[[torch.device], Optional[str]]
    # op name (one of OPS) -> the kernel; a backend need not implement every op.
    kernels: Mapping[str, Callable] = field(default_factory=dict)
    # Returns None when the backend computes in ``dtype`` on ``device`` (where it runs), else a
    # short reason why not; None: every dtype the ops take.
    dtype_reason: Optional[Callable[[torch.device, torch.dtype], Optional[str]]] = None
    # Returns None when the backend's inception_block takes a block with these branch-2 and branch-3
    # conv weights (w3, w5), else a short reason why not; None: every kernel the op takes.
    block_reason: Optional[Callable[[torch.Tensor, torch.Tensor], Optional[str]]] = None

    def op(self, name: str) -> Callable:
        """The kernel for op ``name``, or a clear error naming the backends that implement it."""
        kernel = self.kernels.get(name)
        if kernel is None:
            others = sorted((n for n, b in _REGISTRY.items() if name in b.kernels), key=lambda n: n != "torch")
            if not others:
                raise ValueError(f"no backend implements {name}")
            raise ValueError(f"{name} runs on the {' or '.join(repr(n) for n in others)} backend, not {self.name!r}")
        return kernel


_REGISTRY: dict[str, Backend] = {}  # in registration order


def register(backend: Backend) -> None:
    _REGISTRY[backend.name] = backend


def sm80_reason(device: torch.device, needs: str = "") -> Optional[str]:
    """None when CUDA runs and ``device`` has compute capability 8.0 or more (what the tensor-core
    kernels of the triton and cuda backends need), else why not."""
    if not torch.cuda.is_available():
        return "CUDA is not available"
    major, minor = torch.cuda.get_device_capability(device)
    if major < 8:
        return f"needs compute capability >= 8.0{needs}, found {major}.{minor}"
    return None
