"""The main job: ``python -m inception_fast``.  ``python -m inception_fast train ...`` is the
training job (inception_fast/train.py).

Builds FusedGoogLeNet on the machine at hand (CUDA if present, else CPU), checks it
against the reference on random input with calibrated BatchNorm statistics, and
prints a throughput table (images/s): torchvision (or our reference), given NCHW input as
a user gets it and given channels_last, its best layout, against the fused model for each
available backend and a few batch sizes.  The rows are timed side by side, one sample of each
per round, until their spreads separate or a time budget is spent; the table shows the median
and the interquartile range, and says so when the run was too noisy to rank the rows.

A bad option value is one error line (argparse's, exit code 2), checked before anything runs.
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import warnings
from typing import NamedTuple

import torch

from . import FusedGoogLeNet, GoogLeNet, available_backends, backends
from .choices import ContextLost
from .cli import (
    HelpFormatter,
    UsageError,
    check_backend,
    check_backend_dtype,
    check_environment,
    check_image_size,
    check_input_size,
    check_seconds,
    check_writable,
    is_allocation_failure,
    os_error_line,
    out_of_memory,
    positive_ints,
    resolve_device,
    run_command,
    write_json,
)
from .precompiler import precompile, workers_on
from .testing import calibrate, reduced_precision_bound, rel_error
from .timing import overlapping, time_interleaved

# Fewer samples than this make an interquartile range that says nothing about the spread.
MIN_RANKING_ROUNDS = 5
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
        "fastest per block), or 'all' available ones (on CPU: torch, onednn and, when built, cpp)",
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="square input size, at least the variant's smallest (default: 224; 96 for d2l)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="rounds of samples per row, at least (default: 7 on CPU, 30 on CUDA; exactly this many when given "
        "without --time-budget)",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="per batch size, keep adding rounds while a fused row's interquartile range overlaps a torchvision "
        "row's, up to this many seconds (default: 20 on CPU, 10 on CUDA; 0 if --repeats is given)",
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
    min_rounds: int  # rounds of samples per row, at least
    budget: float  # seconds per batch size for more rounds while spreads overlap
    backends: list  # as they run: "auto", or names that run on ``device``


def _config(args) -> _Config:
    """Checks every option against this machine; a bad value raises UsageError (one line)."""
    check_environment()
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
    if args.time_budget is not None:
        check_seconds(args.time_budget, "--time-budget")
        budget = args.time_budget
    else:
        budget = 0.0 if args.repeats else (10.0 if on_gpu else 20.0)
    every = args.backend.strip() == "all"
    names = available_backends(device) if every else [b.strip() for b in args.backend.split(",")]
    if any(not name for name in names):
        raise UsageError(f"--backend takes backend names separated by commas, got {args.backend!r}")
    wanted = list(dict.fromkeys(check_backend(b, device) for b in names))
    if every:  # every backend that runs here, less those that cannot compute the dtype
        skipped = {b: why for b in wanted if (why := backends.dtype_reason(b, device, dtype)) is not None}
        for b, why in skipped.items():
            print(f"note: backend {b} skipped: it {why}", file=sys.stderr)
        wanted = [b for b in wanted if b not in skipped]
    for b in wanted:
        check_backend_dtype(b, device, dtype)
    if args.json is not None:
        check_writable(args.json)
    batches = args.batch_sizes or ([1, 64, 256] if on_gpu else [1, 8])
    check_input_size(max(batches), size, f"--batch-sizes {max(batches)} at --image-size {size}")
    return _Config(
        device=device,
        dtype=dtype,
        batches=batches,
        size=size,
        min_rounds=args.repeats or (30 if on_gpu else 7),
        budget=budget,
        backends=wanted,
    )


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
    """One status line on stderr per batch size: rounds, seconds spent, pairs not yet separated."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def show(self, batch: int, rounds: int, spent: float, budget: float, noisy: list) -> None:
        if not self.enabled:
            return
        state = f"{len(noisy)} pair(s) overlap" if noisy else "spreads separate"
        sys.stderr.write(f"\r  batch {batch:>4}: round {rounds:>3}, {spent:6.1f}s of {budget:g}s budget; {state:<24}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _tuned(model: FusedGoogLeNet, x: torch.Tensor, on_gpu: bool) -> None:
    """On a GPU, every Triton binary of ``model(x)`` compiled before its first forward, which then
    measures its choices instead of deferring them (inception_fast.precompiler): the parity check
    checks the kernels the model chose, and no timed round is one that tunes."""
    if on_gpu and workers_on():
        try:
            precompile(model, x)
        except ContextLost:  # a candidate run in the pass lost the GPU's context: main's one error line
            raise
        except (RuntimeError, ValueError):  # a forward that cannot run compile-only: it compiles itself
            pass


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:
        from .train import main as train_main

        return train_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = _config(args)
    except UsageError as exc:
        parser.error(str(exc))  # one line, exit code 2
    try:
        return _run(args, config)
    except ContextLost as exc:  # a measured candidate lost the GPU's context: what it says, in one line
        parser.exit(1, f"error: {exc}\n")
    except (RuntimeError, MemoryError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        if not is_allocation_failure(exc):
            raise
        parser.exit(1, f"error: {out_of_memory(config.device, config.batches, config.size, exc)}\n")
    except OSError as exc:  # writing --json: a full disk (the path was checked up front)
        if exc.errno is None or not exc.filename:
            raise
        parser.exit(1, os_error_line(exc))


def _run(args, config: _Config) -> int:
    device, dtype, batches, size, min_rounds, budget, wanted = config
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
            xb = x.to(dtype).contiguous(memory_format=fmt)
            _tuned(model, xb, on_gpu)
            err = rel_error(model(xb), ref64)
            parity[b] = err
            verdict = "ok" if err <= tol else "MISMATCH"
            print(
                f"  parity [{b}]: ‖fused − ref64‖/‖ref64‖ = {err:.2e} "
                f"({base_name} in {str(dtype)[6:]}: {rel_error(ref_lp, ref64):.2e}; bound {tol:.2e}) {verdict}"
            )

    # 2. throughput: torchvision as given (NCHW) and at its best layout, the fused rows, interleaved
    baselines = {}
    for layout, mf in (("NCHW", torch.contiguous_format), ("channels_last", torch.channels_last)):
        baselines[f"{base_name} {layout}"] = (base_name, layout, mf, copy.deepcopy(base).to(memory_format=mf))
    fused_layout = "NCHW" if fmt == torch.contiguous_format else "channels_last"
    fused_rows = {f"fused[{b}]": (f"fused[{b}]", fused_layout, fmt, m) for b, m in fused.items()}
    entries = {**baselines, **fused_rows}
    pairs = [(f, b) for f in fused_rows for b in baselines]
    rows, verdicts = [], []
    progress = _Progress(not args.no_progress)
    for n in batches:
        x = torch.randn(n, in_ch, size, size, device=device, dtype=dtype)
        inputs = {mf: x.contiguous(memory_format=mf) for mf in (torch.contiguous_format, torch.channels_last, fmt)}
        fns = {label: (lambda m=m, xi=inputs[mf]: m(xi)) for label, (_, _, mf, m) in entries.items()}
        for _, _, mf, m in fused_rows.values():
            _tuned(m, inputs[mf], on_gpu)
        state = {}

        def on_round(rounds, spent, noisy, n=n):
            state.update(rounds=rounds, spent=spent)
            progress.show(n, rounds, spent, budget, noisy)

        timings = time_interleaved(
            fns,
            device=device,
            batch=n,
            warmup=5 if on_gpu else 1,
            min_repeats=min_rounds,
            max_repeats=max(min_rounds, 1000),
            budget_s=budget,
            pairs=pairs,
            on_round=on_round,
        )
        progress.close()
        best = min(timings[b].median_s for b in baselines)
        given = timings[f"{base_name} NCHW"].median_s
        for label, (model, layout, _, _) in entries.items():
            t = timings[label]
            q1, q3 = t.quartiles_s
            rows.append(
                {
                    "model": model,
                    "layout": layout,
                    "batch": n,
                    "ms": t.median_s * 1e3,
                    "q1_ms": q1 * 1e3,
                    "q3_ms": q3 * 1e3,
                    "min_ms": t.min_s * 1e3,
                    "max_ms": t.max_s * 1e3,
                    "samples": len(t.samples_s),
                    "images_per_s": t.images_per_s,
                    "speedup": best / t.median_s,
                    "speedup_vs_nchw": given / t.median_s,
                }
            )
        verdicts.append(_verdict(n, state, overlapping(timings, pairs)))
    print(format_table(rows, base_name))
    print()
    for line in verdicts:
        print(line)
    if args.json is not None:
        write_json(
            args.json,
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
                "rankings": verdicts,
            },
            indent=2,
        )
    return 0 if all(e <= tol for e in parity.values()) else 1


def format_table(rows: list, base_name: str) -> str:
    """The throughput table: median and interquartile range (ms), images/s, and the speed-up over
    the baseline at its best layout and as given (NCHW)."""
    head = (
        f"{'model':<26} {'layout':<13} {'batch':>5} {'median ms':>10} {'IQR ms':>17} {'img/s':>9} "
        f"{'x best ' + base_name:>17} {'x ' + base_name + ' NCHW':>17}"
    )
    lines = [head]
    for r in rows:
        iqr = f"{r['q1_ms']:.2f}–{r['q3_ms']:.2f}"
        lines.append(
            f"{r['model']:<26} {r['layout']:<13} {r['batch']:>5} {r['ms']:>10.2f} {iqr:>17} "
            f"{r['images_per_s']:>9.1f} {r['speedup']:>16.2f}x {r['speedup_vs_nchw']:>16.2f}x"
        )
    return "\n".join(lines)


def _verdict(batch: int, state: dict, noisy: list) -> str:
    """Whether the rounds at this batch size rank the fused rows against the baselines."""
    rounds = state.get("rounds", 0)
    done = f"{rounds} rounds, {state.get('spent', 0.0):.1f} s"
    if rounds < MIN_RANKING_ROUNDS:
        return f"batch {batch}: only {done}: too few to rank the rows (--repeats {MIN_RANKING_ROUNDS} or more)."
    if not noisy:
        return f"batch {batch}: interquartile ranges separate after {done}: the ranking holds."
    which = "; ".join(f"{a} ~ {b}" for a, b in noisy)
    return (
        f"batch {batch}: too noisy to rank: interquartile ranges overlap after {done} ({which}). "
        "Rerun on a quieter machine or with a larger --time-budget."
    )


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


if __name__ == "__main__":
    sys.exit(run_command(main))  # (Ctrl-C and a closed or full standard output: see run_command)
