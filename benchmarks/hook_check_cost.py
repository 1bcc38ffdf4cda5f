"""What the checks every forward makes cost FusedGoogLeNet, side by side in one run.

    python -m benchmarks.hook_check_cost [--sizes 32,224] [--rounds 15] [--backend torch] [--threads 1]

Every forward of FusedGoogLeNet walks its module tree for hooks and instance forwards
(inception_fast.modules: a stage holding such a module runs its own modules), walks each stage's
modules for replaced modules and changed conv/pool settings (the structure checks), and gathers
the packed-weight caches' keys (inception_fast.packing).  Each round times, at batch 1 on
calibrated weights (torchvision's variant, fp32, channels_last input): the forward as it is, the
same forward with the hook walk replaced by a constant "no hooks", the hook walk alone, the
structure checks alone (the nine blocks and the stem) and the keys alone (the nine blocks),
interleaved so all see the same machine load (benchmarks.helpers.measure.interleaved_rounds).
Prints the medians over the rounds with their min-max.  The model has no hooks, so both forwards
compute the same thing.  Not a test.
"""

from __future__ import annotations

import argparse
import sys

import torch

from benchmarks.helpers.measure import interleaved_rounds, rounds_table
from inception_fast import FusedGoogLeNet, GoogLeNet, modules, packing
from inception_fast.cli import (
    UsageError,
    check_backend,
    check_image_size,
    positive_int,
    positive_ints,
    run_command,
    thread_count,
)
from inception_fast.testing import calibrate


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=positive_ints, default=[32, 224])
    p.add_argument("--rounds", type=positive_int, default=15)
    p.add_argument("--repeats", type=positive_int, default=20)
    p.add_argument("--backend", default="torch")
    p.add_argument("--threads", type=thread_count, default=1, help="torch.set_num_threads (the walk is host time)")
    args = p.parse_args(argv)
    try:
        args.backend = check_backend(args.backend, torch.device("cpu"))
        for size in args.sizes:
            check_image_size(size, "torchvision", "--sizes")
    except UsageError as exc:
        p.error(str(exc))
    torch.set_num_threads(args.threads)
    ref = GoogLeNet(variant="torchvision")
    calibrate(ref, torch.randn(4, 3, 64, 64))
    model = FusedGoogLeNet.from_torchvision(ref, backend=args.backend).eval()
    children = [c for c in model._modules.values() if c is not None]
    walk = modules._hooks_inside
    blocks = [m for m in model.modules() if isinstance(m, modules._PackedBlock)]

    def structure_checks():
        for block in blocks:
            block.structure_ok()
        model._stem_structure.ok(model)

    def cache_keys():
        for block in blocks:
            packing._state(modules._own_unit_sources(block))

    def without_walk(x):
        modules._hooks_inside = lambda found: False
        try:
            return model(x)
        finally:
            modules._hooks_inside = walk

    groups = {}
    for size in args.sizes:
        x = torch.rand(1, 3, size, size).contiguous(memory_format=torch.channels_last)
        groups[f"{size}x{size}"] = {
            "forward": lambda x=x: model(x),
            "forward, no walk": lambda x=x: without_walk(x),
            "the walk alone": lambda: walk(children),
            "the structure checks alone": structure_checks,
            "the cache keys alone": cache_keys,
        }
    with torch.inference_mode():
        rows = interleaved_rounds(groups, rounds=args.rounds, repeats=args.repeats, warmup=2)
    print()
    what = f"FusedGoogLeNet[{args.backend}] (torchvision variant), batch 1, fp32 channels_last"
    print(rounds_table(rows, "size", what, args.repeats))


if __name__ == "__main__":
    sys.exit(run_command(main))
