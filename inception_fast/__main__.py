"""The main job: ``python -m inception_fast``.  ``python -m inception_fast train ...`` is the
training job (inception_fast/train.py).

Builds FusedGoogLeNet on the machine at hand (CUDA if present, else CPU), checks it
against the reference on random input with calibrated BatchNorm statistics, and
prints a throughput table (images/s): torchvision (or our reference) against the
fused model for each available backend and a few batch sizes.

A bad option value is one error line (argparse's, exit code 2), checked before anything runs.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
import warnings
from typing import NamedTuple

import torch

from . import FusedGoogLeNet, GoogLeNet, available_backends
from .cli import HelpFormatter, UsageError, check_backend, check_image_size, positive_ints, resolve_device
from .testing import calibrate, reduced_precision_bound, rel_error
from .timing import time_fn

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m inception_fast",
        description=__doc__.split("\n\n")[1],
        formatter_class=HelpFormatter,
        epilog="Training: python -m inception_fast train --help",
    )
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda if available, else cpu)")
    p.add_argument(
        "--batch-sizes",
        type=positive_ints,
        default=None,
        help="comma-separated positive integers (default: 1,8 on CPU; 1,64,256 on CUDA)",
    )
    p.add_argument(
        "--dtype",
        choices=list(DTYPES),
        default=None,
        help="float16 on CUDA only (default: float32 on CPU, bfloat16 on CUDA)",
    )
    p.add_argument(
        "--memory-format", choices=["channels_last", "contiguous"], default="channels_last", help="the input's layout"
    )
    p.add_argument(
        "--variant", choices=["torchvision", "paper", "d2l"], default="torchvision", help="which GoogLeNet to run"
    )
    p.add_argument(
        "--backend",
        default="all",
        help="comma-separated backends to time ('auto' included: on CUDA it measures the "
        "fastest per block), or 'all' available ones (on CPU: torch and, when built, cpp)",
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="square input size, at least the variant's smallest (default: 224; 96 for d2l)",
    )
    p.add_argument(
        "--repeats", type=int, default=None, help="timed repeats per point, at least 1 (default: 3 on CPU, 30 on CUDA)"
    )
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    p.add_argument("--no-progress", action="store_true", help="no progress display on stderr")
    return p


class _Config(NamedTuple):
    """The job's settings, every option checked and its default filled in."""

    device: torch.device
    dtype: torch.dtype
    batches: list
    size: int
    repeats: int
    backends: list  # as they run: "auto", or names that run on ``device``


def _config(args) -> _Config:
    """Checks every option against this machine; a bad value raises UsageError (one line)."""
    device = resolve_device(args.device, "the main job")
    on_gpu = device.type == "cuda"
    dtype = DTYPES[args.dtype or ("bfloat16" if on_gpu else "float32")]
    if dtype == torch.float16 and not on_gpu:
        raise UsageError(f"--dtype float16 runs on CUDA only; on {device} use float32 or bfloat16")
    if dtype == torch.bfloat16 and on_gpu and not torch.cuda.is_bf16_supported(including_emulation=False):
        raise UsageError(f"--dtype bfloat16: {torch.cuda.get_device_name(device)} has no bfloat16 arithmetic")
    size = args.image_size if args.image_size is not None else (96 if args.variant == "d2l" else 224)
    check_image_size(size, args.variant)
    if args.repeats is not None and args.repeats < 1:
        raise UsageError(f"--repeats must be at least 1, got {args.repeats}")
    names = available_backends(device) if args.backend == "all" else [b.strip() for b in args.backend.split(",")]
    wanted = list(dict.fromkeys(check_backend(b, device) for b in names))
    if args.json:
        _check_writable(args.json)
    return _Config(
        device=device,
        dtype=dtype,
        batches=args.batch_sizes or ([1, 64, 256] if on_gpu else [1, 8]),
        size=size,
        repeats=args.repeats or (30 if on_gpu else 3),
        backends=wanted,
    )


def _check_writable(path: str) -> None:
    """Fails now, not after the run, where ``--json PATH`` cannot be written."""
    existed = os.path.exists(path)
    try:
        with open(path, "a"):
            pass
    except OSError as exc:
        raise UsageError(f"--json {path}: cannot write there ({exc.strerror})") from None
    if not existed:
        os.remove(path)


def _baseline(variant, device, dtype):
    """torchvision's googlenet for its variant (when torchvision is present), else our reference."""
    if variant == "torchvision":
        try:
            import torchvision

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return "torchvision", torchvision.models.googlenet(aux_logits=False, init_weights=True)
        except ImportError:
            pass
    return "reference", GoogLeNet(variant=variant)


class _Progress:
    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.enabled, self.t0 = total, 0, enabled and total > 0, time.perf_counter()

    def show(self, label: str, i: int, n: int) -> None:
        if not self.enabled:
            return
        frac = (self.done + i / max(n, 1)) / self.total
        bar = "#" * int(frac * 24)
        sys.stderr.write(f"\r[{bar:<24}] {frac * 100:5.1f}%  {label:<40} {time.perf_counter() - self.t0:6.1f}s")
        sys.stderr.flush()

    def step(self) -> None:
        self.done += 1

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:
        from .train import main as train_main

        return train_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        device, dtype, batches, size, repeats, wanted = _config(args)
    except UsageError as exc:
        parser.error(str(exc))  # one line, exit code 2
    on_gpu = device.type == "cuda"
    fmt = torch.channels_last if args.memory_format == "channels_last" else torch.contiguous_format

    torch.manual_seed(0)
    base_name, base = _baseline(args.variant, device, dtype)
    in_ch = 1 if args.variant == "d2l" else 3
    calibrate(base, torch.randn(4, in_ch, min(size, 96), min(size, 96)))
    base = base.to(device)
    fused = {b: FusedGoogLeNet.from_torchvision(base, backend=b).eval().to(device=device, dtype=dtype) for b in wanted}
    print(
        f"inception_fast on {_device_name(device)}: GoogLeNet variant={args.variant}, {str(dtype)[6:]}, "
        f"{args.memory_format}, {size}x{size}; torch {torch.__version__}"
    )

    # 1. parity against the reference, in fp64 on the same device
    x = torch.randn(2, in_ch, size, size, device=device)
    with torch.no_grad():
        ref64 = copy.deepcopy(base).double()(x.double())
        ref_lp = base.to(dtype)(x.to(dtype))
        tol = reduced_precision_bound(ref_lp, ref64)
        parity = {}
        for b, model in fused.items():
            err = rel_error(model(x.to(dtype).contiguous(memory_format=fmt)), ref64)
            parity[b] = err
            verdict = "ok" if err <= tol else "MISMATCH"
            print(
                f"  parity [{b}]: ‖fused − ref64‖/‖ref64‖ = {err:.2e} "
                f"({base_name} in {str(dtype)[6:]}: {rel_error(ref_lp, ref64):.2e}; bound {tol:.2e}) {verdict}"
            )

    # 2. throughput
    rows = []
    progress = _Progress(len(batches) * (1 + len(fused)), not args.no_progress)
    for n in batches:
        x = torch.randn(n, in_ch, size, size, device=device, dtype=dtype).contiguous(memory_format=fmt)
        base_fmt = base.to(memory_format=fmt)
        for label, model in [(base_name, base_fmt), *((f"fused[{b}]", m) for b, m in fused.items())]:
            timing = time_fn(
                lambda: model(x),
                device=device,
                batch=n,
                warmup=1 if not on_gpu else 5,
                repeats=repeats,
                on_sample=lambda i, r, lab=f"{label} batch {n}": progress.show(lab, i, r),
            )
            rows.append({"model": label, "batch": n, "ms": timing.median_s * 1e3, "images_per_s": timing.images_per_s})
            progress.step()
    progress.close()
    base_ips = {r["batch"]: r["images_per_s"] for r in rows if r["model"] == base_name}
    print(f"\n{'model':<18} {'batch':>5} {'ms':>10} {'img/s':>10} {'speedup':>8}")
    for r in rows:
        r["speedup"] = r["images_per_s"] / base_ips[r["batch"]]
        print(f"{r['model']:<18} {r['batch']:>5} {r['ms']:>10.2f} {r['images_per_s']:>10.1f} {r['speedup']:>7.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "device": _device_name(device),
                    "torch": torch.__version__,
                    "python": platform.python_version(),
                    "variant": args.variant,
                    "dtype": str(dtype),
                    "memory_format": args.memory_format,
                    "image_size": size,
                    "baseline": base_name,
                    "parity": parity,
                    "parity_bound": tol,
                    "results": rows,
                },
                f,
                indent=2,
            )
    return 0 if all(e <= tol for e in parity.values()) else 1


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


if __name__ == "__main__":
    sys.exit(main())
