"""What the package picked while a benchmark ran: the Triton autotuners' configs and the
measured choices (backend "auto" per block shape, the stem's conv1, conv-ReLU, the max pools, the
pools folded into the next block, the head)."""

from __future__ import annotations

import sys
from typing import Optional

import torch

from benchmarks.helpers.settings import DTYPES


def _triton_common():
    return sys.modules.get("inception_fast.backends.triton._common")  # never imports triton itself


def triton_tuning_mark() -> int:
    """A mark in the Triton autotuning log (see triton_tuning_since)."""
    kernels = _triton_common()
    return kernels.tuning_count() if kernels is not None else 0


def triton_tuning_since(mark: int) -> list:
    """The Triton autotuners' choices (and per-config µs where they benchmarked) made since
    ``mark``: inception_fast.backends.triton._common.tuning_log() entries (the log keeps the most
    recent ones only, see its TUNING_LOG_FACTOR)."""
    kernels = _triton_common()
    if kernels is None:
        return []
    new = kernels.tuning_count() - mark
    return kernels.tuning_log()[-new:] if new > 0 else []


def auto_choices(dtype: str, batch: int) -> dict:
    """{backend: number of block shapes} that backend="auto" chose at this dtype and batch."""
    from inception_fast import choices

    counts: dict = {}
    for key, choice in choices.AUTO.choices().items():
        if key.dtype == DTYPES[dtype] and key.shape[0] == batch:
            counts[choice.name] = counts.get(choice.name, 0) + 1
    return counts


def stem_choice(model, x: torch.Tensor) -> Optional[dict]:
    """How FusedGoogLeNet ``model`` ran its first conv on input ``x``: the measured variant and the
    µs of each (None where nothing was measured, e.g. on CPU)."""
    from inception_fast import choices

    choice = choices.STEM_CHOICE.choices().get(model.stem_choice_key(x))
    if choice is None:
        return None
    # conv2 and conv3 (ATen or cuDNN's fused conv-bias-ReLU, see inception_fast.choices.CONV_RELU_CHOICE) at this
    # batch and dtype.
    convs = [
        {
            "weight": list(key.weight),
            "chosen": c.name,
            "us": {k: v * 1e6 for k, v in c.seconds.items()},
            "errors": c.errors,
            "stored": c.stored,  # read from the choice store: measured by an earlier process, no times here
        }
        for key, c in choices.CONV_RELU_CHOICE.choices().items()
        if key.device == str(x.device) and key.dtype == x.dtype and key.shape[0] == x.shape[0]
    ]
    # The max pools, the pools folded into the next block's launch 1 (FOLD_CHOICE: "separate" or
    # "folded") and the eval-mode head (ATen or Triton, POOL_CHOICE and HEAD_CHOICE) at this batch
    # and dtype, each named by its input shape.
    stages = [
        {
            "stage": stage,
            "shape": list(key.shape),
            "chosen": c.name,
            "us": {k: v * 1e6 for k, v in c.seconds.items()},
            "errors": c.errors,
            "stored": c.stored,  # read from the choice store: measured by an earlier process, no times here
        }
        for stage, chooser in (
            ("max pool", choices.POOL_CHOICE),
            ("max pool + block", choices.FOLD_CHOICE),
            ("head", choices.HEAD_CHOICE),
        )
        for key, c in chooser.choices().items()
        if key.device == str(x.device) and key.dtype == x.dtype and key.shape[0] == x.shape[0]
    ]
    return {
        "chosen": choice.name,
        "us": {k: v * 1e6 for k, v in choice.seconds.items()},
        "errors": choice.errors,
        "stored": choice.stored,
        "conv_relu": convs,
        "stages": stages,
    }
