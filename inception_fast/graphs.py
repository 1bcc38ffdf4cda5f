"""CUDA graphs for inference: capture a forward once, replay it without host overhead.

Batch-1 latency is dominated by launching kernels, not running them, so that is the setting
for ``CapturedForward``: it warms the model up at one input shape (which compiles and tunes the
Triton kernels and lets ``backend="auto"`` and the stem measure their choices), captures one
forward as a CUDA graph, and then each call copies the new input into the captured input
buffer and replays.  ``capture`` (from inception_fast.timing, which uses it too) is the
primitive underneath.
"""

from __future__ import annotations

import torch
from torch import nn

from .packing import PackCache
from .precompiler import precompile, workers_on
from .timing import capture

__all__ = ["capture", "CapturedForward"]


class CapturedForward:
    """``module``'s inference forward at ``example``'s shape, dtype, device and layout, as a CUDA graph.

        fast = CapturedForward(model.eval(), torch.randn(1, 3, 224, 224, device="cuda"))
        logits = fast(x)   # x like the example; the result is overwritten by the next call

    The graph computes with the weights as they were at capture: the fused modules' packed
    (BN-folded) weights are copies, and this object keeps the ones it captured alive.  After
    changing the weights, build a new CapturedForward.
    """

    def __init__(self, module: nn.Module, example: torch.Tensor, warmup: int = 3) -> None:
        if not isinstance(example, torch.Tensor) or example.device.type != "cuda":
            where = example.device if isinstance(example, torch.Tensor) else type(example).__name__
            raise ValueError(f"CapturedForward needs a CUDA example input, got {where}")
        self.module = module
        self.static_input = torch.empty_like(example).copy_(example)  # keeps the example's layout
        if workers_on():
            try:  # every Triton binary compiled at once, before the warm-up runs
                precompile(module, self.static_input, wait=True)
            except (RuntimeError, ValueError):  # a part in train mode, or a forward that cannot
                pass  # run compile-only: its launches compile
        with torch.inference_mode():
            for _ in range(warmup):
                module(self.static_input)
            self.graph, self.static_output = capture(lambda: module(self.static_input))
        # The graph reads the packed weights by address: hold them, so that a later repack (after a
        # weight change, on an eager call) cannot free memory the graph still reads.
        self._held = [
            cache.snapshot() for m in module.modules() for cache in vars(m).values() if isinstance(cache, PackCache)
        ]

    def __call__(self, x: torch.Tensor):
        s = self.static_input
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
        if x.shape != s.shape or x.dtype != s.dtype or x.device != s.device:
            raise ValueError(
                f"this graph was captured for input {tuple(s.shape)} {s.dtype} on {s.device}, "
                f"got {tuple(x.shape)} {x.dtype} on {x.device}; capture another CapturedForward"
            )
        s.copy_(x)
        self.graph.replay()
        return self.static_output
