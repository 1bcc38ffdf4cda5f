"""What looking for hooks costs FusedGoogLeNet per forward, side by side in one run.

    python -m benchmarks.hook_check_cost [--sizes 32,224] [--rounds 15] [--backend torch] [--threads 1]

Every forward of FusedGoogLeNet walks its module tree for hooks (inception_fast.modules: a
stage holding a hooked module runs its own modules).  Each round times, at batch 1 on calibrated
weights (torchvision's variant, fp32, channels_last input): the forward as it is, the same forward
with the walk replaced by a constant "no hooks", and the walk alone (inception_fast.timing.time_fn),
interleaved so all three see the same machine load.  Prints the medians over the rounds with their
min-max.  The model has no hooks, so both forwards compute the same thing.  Not a test.
"""

from __future__ import annotations

import argparse
import platform
import statistics

import torch

from inception_fast import FusedGoogLeNet, GoogLeNet, modules
from inception_fast.testing import calibrate
from inception_fast.timing import time_fn


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="32,224")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--backend", default="torch")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (the walk is host time)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    ref = GoogLeNet(variant="torchvision")
    calibrate(ref, torch.randn(4, 3, 64, 64))
    model = FusedGoogLeNet.from_torchvision(ref, backend=args.backend).eval()
    children = [c for c in model._modules.values() if c is not None]
    walk = modules._hooks_inside
    rows = {}

    def without_walk(x):
        modules._hooks_inside = lambda found: False
        try:
            return model(x)
        finally:
            modules._hooks_inside = walk

    for size in (int(s) for s in args.sizes.split(",")):
        x = torch.rand(1, 3, size, size).contiguous(memory_format=torch.channels_last)
        runs = {
            "forward": lambda: model(x),
            "forward, no walk": lambda: without_walk(x),
            "the walk alone": lambda: walk(children),
        }
        with torch.inference_mode():
            for r in range(args.rounds):
                for name, fn in runs.items():
                    rows.setdefault((size, name), []).append(time_fn(fn, warmup=2, repeats=args.repeats).median_s)
                print(
                    f"{size}x{size} round {r + 1}/{args.rounds}: "
                    + ", ".join(f"{n} {rows[(size, n)][-1] * 1e3:.3f} ms" for n in runs),
                    flush=True,
                )
    print(
        f"\nFusedGoogLeNet[{args.backend}] (torchvision variant), batch 1, fp32 channels_last; torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}; "
        f"median of {args.rounds} rounds (each the median of {args.repeats} calls), min-max"
    )
    print("| size | run | ms | min | max |\n|---|---|---|---|---|")
    for (size, name), v in rows.items():
        print(f"| {size} | {name} | {statistics.median(v) * 1e3:.3f} | {min(v) * 1e3:.3f} | {max(v) * 1e3:.3f} |")


if __name__ == "__main__":
    main()
