"""The project's one timing primitive, used by the main job and by benchmarks/.

GPU work is timed with CUDA events after a warm-up, optionally as CUDA-graph
replays; CPU work with perf_counter.  Reports the median of the repeats and their
spread (interquartile range, min–max).  ``capture`` records a callable as a CUDA graph (the
graph replays here, and ``graphs.CapturedForward``).

``time_interleaved`` times several callables side by side, one ``time_fn`` sample of each
per round, so that a machine whose load drifts during the run slows every row alike; it
keeps adding rounds, up to a time budget, until the rows' interquartile ranges separate.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

import torch

__all__ = ["Timing", "capture", "time_fn", "time_interleaved", "overlapping"]


@dataclass
class Timing:
    median_s: float
    samples_s: list = field(default_factory=list)
    batch: int = 1

    @property
    def images_per_s(self) -> float:
        return self.batch / self.median_s

    @property
    def min_s(self) -> float:
        return min(self.samples_s) if self.samples_s else self.median_s

    @property
    def max_s(self) -> float:
        return max(self.samples_s) if self.samples_s else self.median_s

    @property
    def quartiles_s(self) -> tuple:
        """(q1, q3) of the samples (inclusive method: within min–max; one sample gives (s, s))."""
        if len(self.samples_s) < 2:
            return (self.median_s, self.median_s)
        q1, _, q3 = statistics.quantiles(self.samples_s, n=4, method="inclusive")
        return (q1, q3)

    def overlaps(self, other: "Timing") -> bool:
        """Whether the two interquartile ranges overlap: then the run cannot rank the two."""
        (a1, a3), (b1, b3) = self.quartiles_s, other.quartiles_s
        return a1 <= b3 and b1 <= a3


def capture(fn: Callable[[], object], warmup: int = 2) -> tuple:
    """(graph, output) of ``fn()`` captured as a CUDA graph after ``warmup`` calls on a side stream.

    Replaying ``graph`` recomputes ``output`` in place from whatever ``fn`` reads.
    """
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    current = torch.cuda.current_stream()
    pool = torch.cuda.graph_pool_handle()  # the graph's private memory pool, named so it can be ended
    try:
        # thread_local: another thread's allocations or stream syncs meanwhile (an inference thread
        # serving, a DataParallel replica) neither fail nor end this capture, as "global" makes them.
        with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
            output = fn()
    except BaseException:
        _end_failed_capture_pool(current.device, pool)
        raise
    finally:
        # A capture that fails (fn synchronized, or launched off the capturing stream) raises from
        # torch.cuda.graph's exit before it switches back from its side stream: switch back here,
        # so that the caller's later work does not run on that stream.
        torch.cuda.set_stream(current)
    return graph, output


def _end_failed_capture_pool(device: torch.device, pool) -> None:
    """Stops the caching allocator serving a failed capture's allocations from its pool.  Up to
    torch 2.11 a capture whose end fails raises before it does so itself (fixed in 2.12, pytorch
    #180395), which leaves the allocator believing a capture is still underway for the rest of the
    process: it frees nothing more, and a later torch.cuda.empty_cache() fails an internal assert.
    Where torch has ended the pool already, ending it again raises, which is ignored.  Where this
    call ended it, the pool is also released (the failed graph never releases it: its reset does
    so only after a capture that ended), so that its memory can be freed.  The pinned host
    allocator's pool routing, which the same failure leaves on, has no Python binding to end it."""
    try:
        torch._C._cuda_endAllocateToPool(device.index, pool)
    except Exception:  # noqa: BLE001 - already ended (torch >= 2.12), or nothing to end
        return
    try:
        torch._C._cuda_releasePool(device.index, pool)
    except Exception:  # noqa: BLE001 - best effort: the process keeps working without it
        pass


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
    """Times ``fn()``: a ``Timing`` with the median seconds per call and every sample.

    ``min_time_s`` keeps repeating (past ``repeats``) until that much time was spent, or, once
    half of it was, until 10 times ``repeats`` samples were taken.
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


def overlapping(timings: dict, pairs: Optional[Iterable[tuple]] = None) -> list:
    """The pairs of labels (all pairs, or those given) whose interquartile ranges overlap."""
    labels = list(timings)
    if pairs is None:
        pairs = [(a, b) for i, a in enumerate(labels) for b in labels[i + 1 :]]
    return [(a, b) for a, b in pairs if timings[a].overlaps(timings[b])]


def time_interleaved(
    fns: dict,
    *,
    device: torch.device | str = "cpu",
    batch: int = 1,
    warmup: int = 3,
    min_repeats: int = 7,
    budget_s: float = 0.0,
    max_repeats: int = 1000,
    pairs: Optional[Iterable[tuple]] = None,
    on_round: Optional[Callable[[int, float, list], None]] = None,
) -> dict:
    """Times each of ``fns`` ({label: callable}) in rounds, one ``time_fn`` sample of each per
    round, and returns {label: Timing}.

    After ``min_repeats`` rounds it keeps going while the interquartile ranges of ``pairs``
    (default: all pairs) overlap and less than ``budget_s`` seconds were spent in rounds (never
    past ``max_repeats``), so a noisy machine gets more samples rather than a confident answer.
    ``on_round(rounds, seconds, overlapping_pairs)`` is called after each round.
    """
    pairs = None if pairs is None else list(pairs)
    for fn in fns.values():
        time_fn(fn, device=device, batch=batch, warmup=warmup, repeats=1)
    samples = {label: [] for label in fns}
    t0 = time.perf_counter()
    rounds = 0
    while True:
        for label, fn in fns.items():
            samples[label] += time_fn(fn, device=device, batch=batch, warmup=0, repeats=1).samples_s
        rounds += 1
        spent = time.perf_counter() - t0
        timings = {label: Timing(statistics.median(s), s, batch) for label, s in samples.items()}
        noisy = overlapping(timings, pairs)
        if on_round is not None:
            on_round(rounds, spent, noisy)
        if rounds >= max_repeats or (rounds >= min_repeats and (not noisy or spent >= budget_s)):
            return timings
