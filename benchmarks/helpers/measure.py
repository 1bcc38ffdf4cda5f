"""The bridge from ``inception_fast.timing.time_fn`` to pytest-benchmark, and parity.

Every benchmark's headline number is ``time_fn``'s median (CUDA events after a warm-up on
GPU, optionally CUDA-graph replays; perf_counter on CPU), stored in the benchmark's
``extra_info`` (``median_s``, ``images_per_s``) so it lands in the pytest-benchmark JSON.
pytest-benchmark's own ``stats`` come from a few extra ``benchmark.pedantic`` rounds of the
eager call followed by a device synchronize, so they are wall-clock times of a finished
call (launch overhead included).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from benchmarks.helpers.environment import cpu_name
from benchmarks.helpers.settings import Settings
from inception_fast.timing import Timing, time_fn


def error_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 300 characters of it), for extra_info."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"


def measure(
    benchmark,
    fn: Callable[[], object],
    s: Settings,
    *,
    batch: int,
    extra: dict,
    group: Optional[str] = None,
    cuda_graph: Optional[bool] = None,
) -> Timing:
    """Times ``fn`` with time_fn (the headline number, into extra_info), then lets
    pytest-benchmark record a few synchronized wall-clock rounds of the same call."""
    device = s.device
    cuda_graph = s.cuda_graph if cuda_graph is None else cuda_graph
    info = dict(extra)
    if cuda_graph:  # an error here is the case's own, not the capture's: it propagates
        with torch.inference_mode():
            fn()
    try:
        timing = time_fn(
            fn,
            device=device,
            batch=batch,
            warmup=s.warmup,
            repeats=s.repeats,
            min_time_s=s.min_time_s,
            cuda_graph=cuda_graph,
        )
    except Exception as exc:
        if not cuda_graph:
            raise
        # A case that cannot be captured is still timed, eagerly, and says why.
        info["cuda_graph_error"] = error_line(exc)
        cuda_graph = False
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        timing = time_fn(fn, device=device, batch=batch, warmup=s.warmup, repeats=s.repeats, min_time_s=s.min_time_s)
    samples = sorted(timing.samples_s)
    info.update(
        device=device.type,
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        batch=batch,
        quick=s.quick,
        cpu_threads=torch.get_num_threads(),
        timing="cuda_graph" if cuda_graph else ("cuda_events" if device.type == "cuda" else "perf_counter"),
        stats_timing="wall clock of one eager call + synchronize (pytest-benchmark pedantic)",
        warmup=s.warmup,
        samples=len(samples),
        median_s=timing.median_s,
        q1_s=timing.quartiles_s[0],
        q3_s=timing.quartiles_s[1],
        min_s=samples[0],
        max_s=samples[-1],
        images_per_s=timing.images_per_s,
    )
    benchmark.extra_info.update(info)
    if group:
        benchmark.group = group

    def synced():
        with torch.inference_mode():
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    benchmark.pedantic(synced, rounds=s.rounds, iterations=1, warmup_rounds=0)
    return timing


def captured_call(model, x: torch.Tensor, s: Settings, batch: int) -> dict:
    """A CUDA-graph row's per-call time as a user gets it: ``graphs.CapturedForward`` called with
    ``x`` (copied into the captured input, the replay, the host time of both), with CUDA events
    like every row.  The raw replay leaves out what torch.compile's reduce-overhead calls hold (its
    guards, its input copy): this is the time to hold against them.  A failure is recorded, not
    raised: the replay row stands without it."""
    from inception_fast.graphs import CapturedForward

    try:
        captured = CapturedForward(model, x)
        timing = time_fn(
            lambda: captured(x),
            device=s.device,
            batch=batch,
            warmup=s.warmup,
            repeats=s.repeats,
            min_time_s=s.min_time_s,
        )
    except Exception as exc:
        return {"captured_error": error_line(exc)}
    q1, q3 = timing.quartiles_s
    return {"captured_s": timing.median_s, "captured_q1_s": q1, "captured_q3_s": q3}


def parity(out, ref) -> Optional[float]:
    """‖out − ref‖/‖ref‖ (inception_fast.testing.rel_error), recorded next to a timing so a
    kernel that is fast because it is wrong shows; None when it cannot be computed."""
    from inception_fast.testing import rel_error

    try:
        return rel_error(out, ref)
    except Exception:
        return None


def interleaved_rounds(groups: dict, *, rounds: int, repeats: int, warmup: int = 1) -> dict:
    """Side by side outside pytest-benchmark: ``groups`` is {group label: {run name: fn}}; each
    round times every run of a group once (``time_fn``'s median of ``repeats`` calls), the runs
    interleaved so all see the same machine load, and prints one progress line.  Returns
    {(group label, run name): [seconds, one per round]}."""
    rows: dict = {}
    for group, runs in groups.items():
        for r in range(rounds):
            for name, fn in runs.items():
                rows.setdefault((group, name), []).append(time_fn(fn, warmup=warmup, repeats=repeats).median_s)
            line = ", ".join(f"{name} {rows[(group, name)][-1] * 1e3:.3f} ms" for name in runs)
            print(f"{group} round {r + 1}/{rounds}: {line}", flush=True)
    return rows


def rounds_table(rows: dict, group_header: str, what: str, repeats: int) -> str:
    """``interleaved_rounds``' result as a markdown table (the median over the rounds, min and max,
    in ms) under a caption: ``what`` was timed, with torch's version, threads and CPU."""
    import platform
    import statistics

    rounds = len(next(iter(rows.values()), []))
    caption = (
        f"{what}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}; median of {rounds} rounds (each the median of "
        f"{repeats} calls), min-max"
    )
    lines = [caption, f"| {group_header} | run | ms | min | max |", "|---|---|---|---|---|"]
    for (group, name), v in rows.items():
        ms = [statistics.median(v) * 1e3, min(v) * 1e3, max(v) * 1e3]
        lines.append(f"| {group} | {name} | " + " | ".join(f"{t:.3f}" for t in ms) + " |")
    return "\n".join(lines)
