"""What a benchmark ran on: versions, device, and the results base name.

Run as ``python -m benchmarks.helpers.environment [env|name] [--quick]`` (from the repository
root) to print the environment as JSON, or only the results base name gpu_suite.sh uses.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import warnings
from functools import lru_cache
from typing import Optional

import torch

from benchmarks.helpers.settings import ENV_QUICK, bench_device, flag


def _safe(text: str) -> str:
    """A file-name-safe token: letters, digits, '.', '-' only."""
    return re.sub(r"-+", "-", re.sub(r"[^A-Za-z0-9.]+", "-", text)).strip("-") or "unknown"


@lru_cache(maxsize=1)
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def triton_ptxas() -> Optional[str]:
    """The release of the ptxas Triton compiles with (triton.knobs: TRITON_PTXAS_PATH, else the one
    it bundles), e.g. "12.8": the kernels' registers and spills depend on it as well as on Triton's
    version.  None without Triton's NVIDIA backend."""
    try:
        from triton import knobs

        return knobs.nvidia.ptxas.version
    except Exception:  # no triton, no knobs, or no ptxas: information, not an error
        return None


def environment(device: Optional[torch.device] = None) -> dict:
    device = device or bench_device()
    env = {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "device": device.type,
        "cpu_threads": torch.get_num_threads(),
        # the measured candidates left out (the GPU suite sets it after a candidate's fault)
        "skipped_candidates": os.environ.get("INCEPTION_FAST_SKIP_CANDIDATES", "").strip() or None,
    }
    for mod in ("triton", "torchvision", "inception_fast"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception as exc:  # an absent package is information, not an error
            env[mod] = None
            env[f"{mod}_error"] = f"{type(exc).__name__}: {exc}"[:200]
    env["triton_ptxas"] = triton_ptxas()
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["device_name"] = props.name
        env["device_capability"] = f"{props.major}.{props.minor}"
        env["device_memory_gib"] = round(props.total_memory / 2**30, 1)
        env["allow_tf32_cudnn"] = torch.backends.cudnn.allow_tf32
        env["cudnn_benchmark"] = torch.backends.cudnn.benchmark
        with warnings.catch_warnings():  # newer torch deprecates the flag in favour of fp32_precision
            warnings.simplefilter("ignore")
            env["allow_tf32_matmul"] = getattr(torch.backends.cuda.matmul, "allow_tf32", None)
    else:
        env["device_name"] = cpu_name()
    try:
        import inception_fast

        env["backends_available"] = inception_fast.available_backends(device)
    except Exception as exc:
        env["backends_available"] = None
        env["backends_error"] = f"{type(exc).__name__}: {exc}"[:300]
    return env


def result_basename(env: dict, date: Optional[str] = None, quick: bool = False) -> str:
    """YYYY-MM-DD_<gpu>_torch<ver>_triton<ver>_cuda<ver> (benchmarks/results/README.md)."""
    date = date or _dt.datetime.now(_dt.timezone.utc).date().isoformat()  # UTC, as the README says
    gpu = env.get("device_name") if env.get("device") == "cuda" else "cpu"
    torch_ver = (env.get("torch") or "none").split("+")[0]
    name = (
        f"{date}_{_safe(gpu or 'unknown')}_torch{_safe(torch_ver)}_triton{_safe(env.get('triton') or 'none')}"
        f"_cuda{_safe(env.get('torch_cuda') or 'none')}"
    )
    return name + ("_quick" if quick else "")


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Print the benchmark environment as JSON.")
    parser.add_argument("what", nargs="?", default="env", choices=["env", "name"])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    try:
        env = environment()
    except ValueError as exc:  # a bad INCEPTION_FAST_BENCH_* value, named
        parser.error(str(exc))
    env["result_basename"] = result_basename(env, quick=args.quick or flag(ENV_QUICK))
    print(env["result_basename"] if args.what == "name" else json.dumps(env, indent=1))


if __name__ == "__main__":
    main()
