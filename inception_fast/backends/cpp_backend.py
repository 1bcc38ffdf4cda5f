"""The "cpp" backend: the compiled extension's C++ CPU kernels (csrc/cpu/: launch 1 and
launch 2, and a max pool; see ``inception_fast.backends.extension``), on CPU only.  The extension's CUDA
kernels are the "cuda" backend.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import extension, torch_backend
from .registry import Backend, register


def _unavailable_reason(device) -> Optional[str]:
    device = torch.device(device)
    if device.type != "cpu":
        elsewhere = "; the compiled CUDA kernels are the 'cuda' backend" if device.type == "cuda" else ""
        return f"runs the C++ CPU kernels (csrc/cpu/) on cpu only, not on {device.type}{elsewhere}"
    return extension.missing_reason()


# The backward is the torch backend's ATen chain (torch_backend.block_backward).
register(
    Backend(
        "cpp",
        _unavailable_reason,
        {
            "inception_block": extension.block_forward,
            "inception_block_backward": torch_backend.block_backward,
            "max_pool2d": extension.max_pool2d,
        },
    )
)
