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

from .choices import ContextLost
from .packing import PackCache
from .precompiler import precompile, training_part, workers_on
from .timing import capture

__all__ = ["capture", "CapturedForward", "static_copy"]


def static_copy(example: torch.Tensor) -> torch.Tensor:
    """A copy of ``example`` in its layout to capture with: an ordinary tensor even when made under
    ``torch.inference_mode()`` (an inference tensor could not be written outside it, so every call
    made outside would fail), and with no autograd history (a copy of an input that requires grad
    would chain one more node onto it with every call)."""
    with torch.inference_mode(False), torch.no_grad():
        return torch.empty_like(example, requires_grad=False).copy_(example)


class CapturedForward:
    """``module``'s inference forward at ``example``'s shape, dtype, device and layout, as a CUDA graph.

        fast = CapturedForward(model.eval(), torch.randn(1, 3, 224, 224, device="cuda"))
        logits = fast(x)   # x like the example; the result is overwritten by the next call

    The graph reads its weights by address.  The fused modules' packed (BN-folded) weights are
    copies made before the capture, so the graph keeps computing with those; a tensor the forward
    reads as it is (the head's fc weight, a module that runs unfused) is read in place, so an
    in-place change to it shows.  After changing the weights, build a new CapturedForward.  This
    object holds the memory of every packed copy, parameter and buffer the capture saw, so that no
    later repack, ``.to()`` or replaced module frees memory the graph still reads.
    """

    def __init__(self, module: nn.Module, example: torch.Tensor, warmup: int = 3) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"CapturedForward expects an nn.Module, got {type(module).__name__}")
        training = training_part(module)
        if training is not None:
            raise ValueError(
                f"CapturedForward is for inference, but {training} is in train mode (a graph would replay "
                "its BatchNorm statistics updates and dropout masks on every call); call .eval() first"
            )
        if not isinstance(example, torch.Tensor) or example.device.type != "cuda":
            where = example.device if isinstance(example, torch.Tensor) else type(example).__name__
            raise ValueError(f"CapturedForward needs a CUDA example input, got {where}")
        self.module = module
        self.static_input = static_copy(example)
        if workers_on():
            try:  # every Triton binary compiled at once, before the warm-up runs
                precompile(module, self.static_input, wait=True)
            except ContextLost:
                raise
            except RuntimeError:  # a forward that cannot run compile-only: its launches compile
                pass
        with torch.inference_mode():
            for _ in range(warmup):
                module(self.static_input)
            self.graph, self.static_output = capture(lambda: module(self.static_input))
        # The packed weights (a repack after a weight change, on an eager call, replaces them) and
        # the parameters' and buffers' storage (``.to()`` swaps a parameter's data, a replaced
        # module drops its own): detached views hold the memory itself.
        self._held = [
            cache.snapshot() for m in module.modules() for cache in vars(m).values() if isinstance(cache, PackCache)
        ]
        self._held += [t.detach() for t in (*module.parameters(), *module.buffers())]

    def __call__(self, x: torch.Tensor):
        s = self.static_input
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
        if x.shape != s.shape or x.dtype != s.dtype or x.device != s.device:
            raise ValueError(
                f"this graph was captured for input {tuple(s.shape)} {s.dtype} on {s.device}, "
                f"got {tuple(x.shape)} {x.dtype} on {x.device}; capture another CapturedForward"
            )
        with torch.no_grad():  # x's autograd history stays out of the buffer
            s.copy_(x)
        self.graph.replay()
        return self.static_output
