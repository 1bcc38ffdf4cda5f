"""The CPU rows of one (dtype, batch, threads) configuration timed side by side in ONE interleaved
run (inception_fast.timing.time_interleaved: one sample of each row per round, so load that drifts
during the run slows every row alike), with each row's ratio to the best peer.

Rows: FusedGoogLeNet with the torch and onednn backends (and cpp where built) and with auto (on
a small input its first forward measures the three as whole forwards,
inception_fast.choices.CPU_NETWORK_CHOICE; printed after the table), and the peers:
torchvision eager with channels_last input ("torchvision_cl"), those of benchmarks.helpers.peers
(ONNX Runtime, OpenVINO) and torch.compile with inductor freezing, in the run's dtype.
bench_throughput.py --peers times the same rows one case after another (pytest-benchmark records);
this script is the one to use on a machine shared with other work.

    python -m benchmarks.cpu_side_by_side --dtype fp32 --batch 8 --threads 2 --budget 60 [--size 224]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from typing import Optional

import torch

from benchmarks.helpers.models import BackendUnavailable, build_model, example_input
from benchmarks.helpers.peers import peer_runner
from benchmarks.helpers.settings import DTYPES, ENV_DEVICE, PEER_DTYPES, settings
from inception_fast.choices import CPU_NETWORK_CHOICE
from inception_fast.cli import UsageError, check_seconds, positive_int, run_command, thread_count
from inception_fast.timing import time_interleaved

FUSED = ("fused_torch", "fused_cpp", "fused_onednn", "fused_auto")


def rows(dtype: str, batch: int, size: Optional[int] = None) -> dict:
    """{label: zero-argument callable} for every row that runs here, on ``size`` x ``size`` images
    (None: the settings', 224); skipped rows are printed."""
    s = settings()
    if size is not None:
        s = dataclasses.replace(s, image_size=size)
    x = example_input(batch, 3, s.image_size, s.image_size, s.device, DTYPES[dtype], torch.channels_last)
    out = {}
    for name in FUSED:
        try:
            model = build_model(name, s, dtype, "channels_last")
        except BackendUnavailable as exc:
            print(f"skip {name}: {exc}")
            continue
        out[name] = lambda m=model: m(x)
    tv = build_model("torchvision", s, dtype, "channels_last")  # eager, at its best layout
    out["torchvision_cl"] = lambda m=tv: m(x)
    for name, dtypes in PEER_DTYPES.items():
        if dtype not in dtypes:
            continue
        try:
            if name == "tv_compile":
                import torch._inductor.config as inductor_config

                compiled = torch.compile(build_model("torchvision", s, dtype, "channels_last"))
                with inductor_config.patch(freezing=True), torch.inference_mode():
                    compiled(x)
                out[name] = lambda c=compiled: c(x)
            else:
                out[name] = peer_runner(name, s, dtype, x)[0]
        except BackendUnavailable as exc:
            print(f"skip {name}: {exc}")
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"), help="precision of every row")
    parser.add_argument("--batch", type=positive_int, default=8, help="images per forward")
    parser.add_argument("--threads", type=thread_count, default=2, help="torch.set_num_threads (the peers get as many)")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of rounds while the spreads overlap")
    parser.add_argument("--size", type=positive_int, default=None, help="the input images' side (default 224)")
    args = parser.parse_args(argv)
    os.environ.setdefault(ENV_DEVICE, "cpu")
    try:
        check_seconds(args.budget, "--budget")
        settings()  # (ValueError for a bad INCEPTION_FAST_BENCH_* value)
    except (UsageError, ValueError) as exc:
        parser.error(str(exc))
    if args.size is not None:
        from inception_fast import GoogLeNet

        smallest = GoogLeNet(init_weights=False).min_input_size()
        if args.size < smallest:
            parser.error(f"--size {args.size} is too small for GoogLeNet: the smallest input side is {smallest}")
    torch.set_num_threads(args.threads)
    fns = rows(args.dtype, args.batch, args.size)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()

    def progress(rounds: int, seconds: float, overlapping: list) -> None:  # one line, rewritten each round
        print(f"\rround {rounds}, {seconds:.0f} s, {len(overlapping)} pairs overlapping", end="", file=sys.stderr)

    timings = time_interleaved(fns, batch=args.batch, min_repeats=9, budget_s=args.budget, on_round=progress)
    print(file=sys.stderr)
    peers = [n for n in timings if n not in FUSED]
    best = min(peers, key=lambda n: timings[n].median_s) if peers else None
    rounds = len(timings[next(iter(timings))].samples_s)
    print(
        f"{args.dtype} batch {args.batch}, {args.size or settings().image_size} px, {args.threads} threads, "
        f"{rounds} rounds in {time.perf_counter() - t0:.0f} s, load average {load:.1f} at the start"
    )
    for name, t in timings.items():
        q1, q3 = t.quartiles_s
        ratio = f"  {timings[best].median_s / t.median_s:.2f}x best peer ({best})" if best else ""
        print(f"{name:14s} {t.median_s * 1e3:8.1f} ms  IQR {q1 * 1e3:.1f}-{q3 * 1e3:.1f}{ratio}")
    for key, choice in CPU_NETWORK_CHOICE.choices().items():
        times = ", ".join(f"{name} {seconds * 1e3:.1f} ms" for name, seconds in choice.seconds.items())
        print(f"fused_auto ran {choice.name} for input {key.shape} ({times or 'stored'})")


if __name__ == "__main__":
    sys.exit(run_command(main))
