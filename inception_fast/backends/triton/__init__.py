"""The "triton" backend: Triton kernels for the block (two launches, ``block.py``: launch 1
``reduce_pool.py``, launch 2 ``branch_convs.py``; also with the max pool before the block folded
into launch 1's loads, op ``pooled_inception_block``; a run of blocks with each block's launch 2
and the next one's launch 1 joined, op ``inception_chain``, ``chain.py``) and its backward (``block_backward.py``, three
launches), the stem's conv1 + ReLU + max pool in one launch (``stem.py``), conv1 + ReLU read in
aligned rows of a padded copy of the input (``conv_rows.py``), conv2 and conv3 with bias +
ReLU (``conv_relu.py``), the max pool without
an argmax (``maxpool.py``), the head's average pool + linear layer (``head.py``), and the block
with train-mode BatchNorm (``bn_train.py``: the 1x1 GEMMs with batch statistics in their epilogue).
``reduce_pool_tma.py`` and ``branch_convs_tma.py`` (launches 1 and 2 with TMA,
``block.block_forward_tma``) are the "hopper" backend's, registered in ``../hopper_backend.py``.

Importing this package is cheap: triton itself is imported on the first availability check or
kernel call, and no device is queried until ``unavailable_reason`` is asked about one.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from typing import Optional

import torch

from ... import geometry
from ..registry import Backend, register, sm80_reason

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
        kernels = sys.modules.get(f"{__name__}._common")
        if kernels is not None and not kernels.INTERPRET:
            return "needs TRITON_INTERPRET=1 on CPU, set before the kernels were imported (they were compiled for GPU)"
        return None
    if device.type == "cuda":
        return sm80_reason(device)
    return f"runs on CUDA (or on CPU under TRITON_INTERPRET=1), not on {device.type}"


def _dtype_reason(dtype: torch.dtype) -> Optional[str]:
    from ._common import dtype_reason  # imports triton (only asked where the backend runs)

    return dtype_reason(dtype)


def _on_device(x):
    """Triton launches on the current CUDA device; the tensors may live on another one."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def _block_forward(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5):
    from .block import block_forward  # imports triton and compiles nothing until a launch

    return block_forward(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5)


def _pooled_block_forward(x, kernel, stride, padding, ceil_mode, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5):
    from .block import pooled_block_forward

    return pooled_block_forward(x, kernel, stride, padding, ceil_mode, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5)


def _chain_forward(x, blocks, pre_pool):
    from .chain import chain_forward

    with _on_device(x):
        return chain_forward(x, blocks, pre_pool)


def _block_bn_train_forward(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, gamma, beta, eps):
    from .bn_train import block_bn_train_forward

    with _on_device(x):
        return block_bn_train_forward(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, gamma, beta, eps)


def _block_backward(grad_out, x, w_red, w_pool, w3, w5, out, scratch, need_input_grad):
    from .block_backward import block_backward

    with _on_device(x):
        return block_backward(grad_out, x, w_red, w_pool, w3, w5, out, scratch, need_input_grad)


def _conv_relu_maxpool(x, w, b, stride, padding, pool_kernel, pool_stride, pool_padding, ceil_mode, w_rows=None):
    pool = (pool_kernel, pool_stride, pool_padding, ceil_mode)
    with _on_device(x):
        if w_rows is not None:  # the aligned-row conv, pool in its epilogue
            from .conv_rows import launch_conv_rows_pool

            return launch_conv_rows_pool(x, w, b, stride, padding, *pool, w_rows=w_rows)
        from .stem import launch_conv_relu_maxpool

        return launch_conv_relu_maxpool(x, w, b, stride, padding, *pool)


def _conv_relu(x, w, b, padding, stride=1, w_rows=None):
    with _on_device(x):
        if stride == 1:
            from .conv_relu import launch_conv_relu

            return launch_conv_relu(x, w, b, padding)
        from .conv_rows import launch_conv_rows

        return launch_conv_rows(x, w, b, stride, padding, w_rows=w_rows)


def _max_pool2d(x, kernel, stride, padding, ceil_mode):
    from .maxpool import launch_max_pool

    with _on_device(x):
        return launch_max_pool(x, kernel, stride, padding, ceil_mode)


def _avgpool_linear(x, w, b):
    from .head import launch_avgpool_linear

    with _on_device(x):
        return launch_avgpool_linear(x, w, b)


register(
    Backend(
        "triton",
        _unavailable_reason,
        {
            "inception_block": _block_forward,
            "pooled_inception_block": _pooled_block_forward,
            "inception_chain": _chain_forward,
            "inception_block_bn_train": _block_bn_train_forward,
            "inception_block_backward": _block_backward,
            "conv_relu_maxpool": _conv_relu_maxpool,
            "conv_relu": _conv_relu,
            "max_pool2d": _max_pool2d,
            "avgpool_linear": _avgpool_linear,
        },
        dtype_reason=lambda device, dtype: _dtype_reason(dtype),
        block_reason=geometry.branch_kernels_reason,
    )
)
