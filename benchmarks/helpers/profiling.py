"""Where a call's time goes: torch.profiler time per kernel name."""

from __future__ import annotations

from typing import Callable

import torch

from benchmarks.helpers.measure import error_line


def kernel_profile(fn: Callable[[], object], device: torch.device, calls: int = 3, top: int = 12) -> dict:
    """Where ``fn()``'s time goes, from torch.profiler over ``calls`` calls after one warm-up:
    on CUDA the device time of every kernel, summed per kernel name; elsewhere the CPU ops' own
    time.  Returns {"source", "us_per_call" (all of it), "kernels": the ``top`` names with
    "us" per call, "calls" per call and "share" of the total}, or {"error": why} where the
    profiler cannot run (e.g. no CUPTI)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    try:
        with torch.inference_mode():
            fn()
            if cuda:
                torch.cuda.synchronize(device)
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
            with profile(activities=activities) as prof:
                for _ in range(calls):
                    fn()
                if cuda:
                    torch.cuda.synchronize(device)
        per_name: dict = {}
        if cuda:
            for e in prof.events():
                if e.device_type == DeviceType.CUDA:
                    us, n = per_name.get(e.name, (0.0, 0))
                    per_name[e.name] = (us + e.time_range.elapsed_us(), n + 1)
        else:
            for e in prof.key_averages():
                per_name[e.key] = (e.self_cpu_time_total, e.count)
    except Exception as exc:  # a benchmark keeps its timing when the profiler fails
        return {"error": error_line(exc)}
    total = sum(us for us, _ in per_name.values())
    ranked = sorted(per_name.items(), key=lambda kv: -kv[1][0])[:top]
    return {
        "source": "cuda kernels" if cuda else "cpu ops (self time)",
        "us_per_call": total / calls,
        "kernels": [
            {"name": name[:160], "us": us / calls, "calls": n / calls, "share": us / total if total else None}
            for name, (us, n) in ranked
        ],
    }
