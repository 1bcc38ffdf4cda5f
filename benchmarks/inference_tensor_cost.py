"""What weights that are inference tensors cost per forward, side by side in one run.

    python -m benchmarks.inference_tensor_cost [--batches 1,8] [--rounds 7] [--backend torch]

A FusedGoogLeNet (torchvision's variant, calibrated weights, 224x224, fp32, channels_last input)
built normally, and the same model built and loaded under torch.inference_mode(), whose weights
are inference tensors: those keep no version counter, so on CPU the pack cache compares their
bits with a private copy on every forward (inception_fast.packing).  Each round times both
forwards and the comparison alone (inception_fast.timing.time_fn), interleaved so both see the
same machine load; it prints the medians over the rounds with their min-max.  Not a test.
"""

from __future__ import annotations

import argparse
import platform
import statistics

import torch
import torchvision

from inception_fast import FusedGoogLeNet
from inception_fast.packing import PackCache
from inception_fast.testing import calibrate
from inception_fast.timing import time_fn


def _caches(model):
    return [(m, cache) for m in model.modules() for cache in vars(m).values() if isinstance(cache, PackCache)]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", default="1,8")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--backend", default="torch")
    args = p.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    tv = torchvision.models.googlenet(init_weights=True, aux_logits=False)
    calibrate(tv, torch.randn(4, 3, 224, 224))
    normal = FusedGoogLeNet.from_torchvision(tv, backend=args.backend).eval()
    with torch.inference_mode():
        frozen = FusedGoogLeNet(init_weights=False, backend=args.backend).eval()
        frozen.load_state_dict(tv.state_dict())
    assert frozen.conv1.conv.weight.is_inference() and not normal.conv1.conv.weight.is_inference()
    caches = _caches(frozen)

    def check_only():
        for module, cache in caches:
            cache.get(module, torch.float32)

    rows = {}
    for batch in batches:
        x = torch.rand(batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)
        runs = {
            "built normally": lambda: normal(x),
            "built under inference_mode": lambda: frozen(x),
            "the bit comparison alone": check_only,
        }
        for r in range(args.rounds):
            for name, fn in runs.items():
                rows.setdefault((batch, name), []).append(time_fn(fn, warmup=1, repeats=args.repeats).median_s)
            print(
                f"batch {batch} round {r + 1}/{args.rounds}: "
                + ", ".join(f"{n} {rows[(batch, n)][-1] * 1e3:.2f} ms" for n in runs),
                flush=True,
            )
    print(
        f"\nFusedGoogLeNet[{args.backend}] (torchvision variant), 224x224 fp32 channels_last; torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}; "
        f"median of {args.rounds} rounds (each the median of {args.repeats} calls), min-max"
    )
    print("| batch | weights | ms per forward | min | max |\n|---|---|---|---|---|")
    for (batch, name), v in rows.items():
        print(f"| {batch} | {name} | {statistics.median(v) * 1e3:.2f} | {min(v) * 1e3:.2f} | {max(v) * 1e3:.2f} |")


if __name__ == "__main__":
    main()
