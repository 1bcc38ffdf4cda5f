"""The project's one timing primitive, used by the main job and by benchmarks/.

GPU work is timed with CUDA events after a warm-up, optionally as CUDA-graph
replays; CPU work with perf_counter.  Reports the median of the repeats.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

__all__ = ["Timing", "time_fn"]


@dataclass
class Timing:
    median_s: float
    samples_s: list = field(default_factory=list)
    batch: int = 1

    @property
    def images_per_s(self) -> float:
        return self.batch / self.median_s


def time_fn(
    fn: Callable[[], object],
    *,
    device: torch.device | str = "cpu",
    batch: int = 1,
    warmup: int = 3,
    repeats: int = 10,
    min_time_s: float = 0.0,
    cuda_graph: bool = False,
    on_sample: Optional[Callable[[int, int], None]] = None,
) -> Timing:
    """Times ``fn()`` and returns the median seconds per call.

    ``min_time_s`` keeps repeating (past ``repeats``) until that much time was spent.
    ``on_sample(i, repeats)`` is called after each sample (for progress displays).
    """
    device = torch.device(device)
    is_cuda = device.type == "cuda"
    if cuda_graph and not is_cuda:
        raise ValueError("cuda_graph timing needs a CUDA device")
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        if cuda_graph:
            from .graphs import capture

            run = capture(fn)[0].replay
        else:
            run = fn
        if is_cuda:
            torch.cuda.synchronize(device)
        samples = []
        spent = 0.0
        i = 0
        while i < repeats or spent < min_time_s:
            if is_cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                run()
                end.record()
                end.synchronize()
                s = start.elapsed_time(end) / 1e3
            else:
                t0 = time.perf_counter()
                run()
                s = time.perf_counter() - t0
            samples.append(s)
            spent += s
            i += 1
            if on_sample is not None:
                on_sample(i, repeats)
            if i >= 10 * max(repeats, 1) and spent >= min_time_s * 0.5:
                break
    return Timing(statistics.median(samples), samples, batch)
