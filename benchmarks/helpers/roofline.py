"""Achieved rates and the fraction of the device's roofline, from work counted off the shapes.

The roofline's two ceilings (dense bf16 GEMM FLOP/s; device-to-device copy bytes/s, read + write
counted) come, in this order of preference, from:

1. a measurement in the same run: ``python -m benchmarks.helpers.roofline --json ceilings.json``
   (the GPU suite's ``ceilings`` step) times an 8192³ bf16 GEMM on random data and a 1 GiB device
   copy, median of 20 CUDA-event timings each after 20 warm-up runs, and writes them to a small JSON;
   benchmarks read it from ``INCEPTION_FAST_BENCH_CEILINGS`` when its device name is the current
   device's;
2. ``KNOWN_DEVICES``, ceilings measured earlier on the devices this project has been lent (the
   table names where each figure comes from);
3. for a CUDA device in neither, the same measurement in the benchmark process itself, once.

Every row records the ceilings it used and their source (``ceiling_tflops``, ``ceiling_gbps``,
``ceiling_source``), so the report can say which it used.  Roofline fractions are given for
bf16/fp16 work on a CUDA device only; elsewhere they would mean nothing.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
from functools import lru_cache
from typing import Optional

import torch

from benchmarks.helpers.shapes import BlockShape

ENV_CEILINGS = "INCEPTION_FAST_BENCH_CEILINGS"  # path of the JSON the ceilings step wrote

# (name pattern, words that must all be in the device name, bf16 FLOP/s, copy bytes/s, source).
# The H100 PCIe has other ceilings: only the SXM part (HBM3) matches its row.
KNOWN_DEVICES = (
    (
        "H200",
        ("H200",),
        788e12,
        4.3e12,
        "table: NVIDIA H200, shared/GPU.md (8192³ bf16 GEMM on random data; device copy)",
    ),
    (
        "H100 SXM",
        ("H100", "HBM3"),
        779e12,
        2.98e12,
        "table: NVIDIA H100 80GB HBM3, shared/GPU.md (bf16 GEMM; device copy, measured 2026-11-27)",
    ),
)

GEMM_N = 8192  # the measured GEMM: GEMM_N³, bf16, random operands (zeros run faster)
COPY_BYTES = 1 << 30  # the measured copy: 1 GiB read and 1 GiB written
REPEATS = 20
WARMUP = 20  # ~30 ms of GEMMs first: an idle GPU's clocks ramp up before the timed repeats


def known_ceilings(device_name: str) -> Optional[dict]:
    """The ``KNOWN_DEVICES`` row matching ``device_name`` as a ceilings dict, or None."""
    for _label, words, flops, nbytes, source in KNOWN_DEVICES:
        if all(w.lower() in (device_name or "").lower() for w in words):
            return {"device_name": device_name, "flop_per_s": flops, "byte_per_s": nbytes, "source": source}
    return None


def read_ceilings(path: str) -> Optional[dict]:
    """The ceilings JSON written by ``measure_ceilings`` (``main``), or None where the file is
    missing, unreadable or holds no measurement (two positive numbers): the callers then take the
    known-device table's row, and say so in the row's source."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None

    def rate(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < float("inf")

    if not isinstance(data, dict) or not rate(data.get("flop_per_s")) or not rate(data.get("byte_per_s")):
        return None
    return data


def resolve_ceilings(device_name: str, path: Optional[str] = None) -> Optional[dict]:
    """The ceilings for ``device_name``: the measurement at ``path`` if it was taken on a device of
    that name, else the ``KNOWN_DEVICES`` row, else None."""
    if path:
        measured = read_ceilings(path)
        if measured is not None and measured.get("device_name") == device_name:
            return {**measured, "source": f"measured in this run ({os.path.basename(path)})"}
    return known_ceilings(device_name)


def _time_gemm(device: torch.device, gen: torch.Generator):
    from inception_fast.timing import time_fn

    a = torch.randn(GEMM_N, GEMM_N, device=device, dtype=torch.bfloat16, generator=gen)
    b = torch.randn(GEMM_N, GEMM_N, device=device, dtype=torch.bfloat16, generator=gen)
    c = torch.empty(GEMM_N, GEMM_N, device=device, dtype=torch.bfloat16)
    return time_fn(lambda: torch.mm(a, b, out=c), device=device, warmup=WARMUP, repeats=REPEATS)


def _time_copy(device: torch.device, gen: torch.Generator):
    from inception_fast.timing import time_fn

    src = torch.empty(COPY_BYTES // 4, device=device, dtype=torch.float32).uniform_(generator=gen)
    dst = torch.empty_like(src)
    return time_fn(lambda: dst.copy_(src), device=device, warmup=WARMUP, repeats=REPEATS)


def measure_ceilings(device: torch.device) -> dict:
    """Times a GEMM_N³ bf16 GEMM on random data and a COPY_BYTES device-to-device copy on
    ``device`` (CUDA events, median of REPEATS after a warm-up) and returns the ceilings dict."""
    device = torch.device(device)
    gen = torch.Generator(device=device).manual_seed(0)
    gemm = _time_gemm(device, gen)  # each frees its buffers on return
    copy = _time_copy(device, gen)
    gemm_flops = 2 * GEMM_N**3
    copy_bytes = 2 * COPY_BYTES
    return {
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
        "flop_per_s": gemm_flops / gemm.median_s,
        "byte_per_s": copy_bytes / copy.median_s,
        "gemm": {
            "what": f"torch.mm bf16 {GEMM_N}x{GEMM_N}x{GEMM_N}, randn operands",
            "flops": gemm_flops,
            "median_s": gemm.median_s,
            "min_s": gemm.min_s,
            "max_s": gemm.max_s,
            "repeats": len(gemm.samples_s),
        },
        "copy": {
            "what": f"Tensor.copy_ of {COPY_BYTES >> 20} MiB, device to device, read + write bytes counted",
            "bytes": copy_bytes,
            "median_s": copy.median_s,
            "min_s": copy.min_s,
            "max_s": copy.max_s,
            "repeats": len(copy.samples_s),
        },
        "torch": torch.__version__,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": "measured",
    }


@lru_cache(maxsize=8)
def _ceilings_cached(device_name: str, path: str, device_str: str) -> Optional[dict]:
    found = resolve_ceilings(device_name, path or None)
    if found is not None:
        return found
    try:  # an unknown GPU and no measurement from the suite: measure here, once per process
        return {**measure_ceilings(torch.device(device_str)), "source": "measured by this benchmark process"}
    except Exception as exc:  # out of memory, say: then no roofline fraction, and the reason
        print(f"roofline: could not measure the ceilings of {device_name}: {exc}", file=sys.stderr)
        return None


def ceilings(device: torch.device) -> Optional[dict]:
    """The roofline ceilings of CUDA ``device`` (see the module docstring), or None off CUDA."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return _ceilings_cached(torch.cuda.get_device_name(device), os.environ.get(ENV_CEILINGS, ""), str(device))


def launch1_work(shape: BlockShape, packed, batch: int, elem_size: int, roles=("reduce", "pool")) -> tuple:
    """(flops, bytes) of launch 1 alone: the packed 1x1 GEMM ("reduce") and the pool branch's 1x1
    ("pool"), or the ``roles`` named.  Bytes: input once, what the roles write (branch-1 slice and
    the reduction scratch; the pool slice) once, their packed weights once."""
    cin, h, w = shape.input_chw
    n_red, n_pool = packed.w_red.shape[0], packed.w_pool.shape[0]
    pix = batch * h * w
    macs, elems = 0, pix * cin
    if "reduce" in roles:  # branch 1 and the two reductions: n_red output columns
        macs += pix * cin * n_red
        elems += pix * n_red + packed.w_red.numel() + packed.b_red.numel()
    if "pool" in roles:
        macs += pix * cin * n_pool
        elems += pix * n_pool + packed.w_pool.numel() + packed.b_pool.numel()
    return 2 * macs, elem_size * elems


def roofline_with(flops: float, nbytes: float, seconds: float, ceil: Optional[dict], applies: bool) -> dict:
    """Achieved rates and, where ``applies`` and ceilings ``ceil`` are known, the roofline
    fraction: floor time = max(flops / FLOP ceiling, bytes / byte ceiling) over ``seconds``."""
    out = {
        "flops": int(flops),
        "bytes": int(nbytes),
        "tflops": flops / seconds / 1e12,
        "gbps": nbytes / seconds / 1e9,
        "ceiling_tflops": None,
        "ceiling_gbps": None,
        "ceiling_source": None,
        "compute_floor_s": None,
        "bytes_floor_s": None,
        "roofline_fraction": None,
        "bound": None,
    }
    if ceil is None:
        return out
    out.update(
        ceiling_tflops=ceil["flop_per_s"] / 1e12,
        ceiling_gbps=ceil["byte_per_s"] / 1e9,
        ceiling_source=ceil.get("source"),
        compute_floor_s=flops / ceil["flop_per_s"],
        bytes_floor_s=nbytes / ceil["byte_per_s"],
    )
    if applies:
        floor = max(out["compute_floor_s"], out["bytes_floor_s"])
        out["floor_s"] = floor
        out["roofline_fraction"] = floor / seconds
        out["bound"] = "compute" if out["compute_floor_s"] >= out["bytes_floor_s"] else "memory"
    return out


def roofline(flops: float, nbytes: float, seconds: float, device: torch.device, dtype: torch.dtype) -> dict:
    """``roofline_with`` the device's ceilings (``ceilings``); the fraction for bf16/fp16 on CUDA only."""
    device = torch.device(device)
    ceil = ceilings(device) if device.type == "cuda" else None
    return roofline_with(flops, nbytes, seconds, ceil, dtype in (torch.bfloat16, torch.float16))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Measure the roofline ceilings of the CUDA device (a few seconds).")
    p.add_argument("--json", required=True, help="write the ceilings here")
    p.add_argument("--device", default="cuda")
    args = p.parse_args(argv)
    from inception_fast.cli import UsageError, check_writable, resolve_device, write_json

    if not torch.cuda.is_available():
        print("roofline: no CUDA device, nothing measured (the report uses no roofline)", file=sys.stderr)
        return 3
    try:
        device = resolve_device(args.device, "the roofline")
        if device.type != "cuda":
            raise UsageError(f"--device {args.device}: the ceilings are a CUDA device's")
        check_writable(args.json)
    except UsageError as exc:
        p.error(str(exc))
    data = measure_ceilings(device)
    write_json(args.json, data)
    known = known_ceilings(data["device_name"])
    print(
        f"roofline ceilings of {data['device_name']}: {data['flop_per_s'] / 1e12:.0f} TFLOP/s bf16 GEMM "
        f"({data['gemm']['median_s'] * 1e3:.3f} ms), {data['byte_per_s'] / 1e9:,.0f} GB/s copy "
        f"({data['copy']['median_s'] * 1e3:.3f} ms)"
        + (
            f"; table: {known['flop_per_s'] / 1e12:.0f} TFLOP/s, {known['byte_per_s'] / 1e9:,.0f} GB/s"
            if known
            else "; not in the table"
        )
    )
    return 0


if __name__ == "__main__":
    from inception_fast.cli import run_command

    sys.exit(run_command(main))
