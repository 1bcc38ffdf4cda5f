"""What weights that are inference tensors cost per forward, side by side in one run.

    python -m benchmarks.inference_tensor_cost [--batches 1,8] [--rounds 7] [--backend torch]

A FusedGoogLeNet (torchvision's variant, calibrated weights, 224x224, fp32, channels_last input)
built normally, and the same model built and loaded under torch.inference_mode(), whose weights
are inference tensors: those keep no version counter, so on CPU the pack cache compares their
bits with a private copy on every forward (inception_fast.packing).  Each round times both
forwards and the comparisons alone (the pack caches that forward reads, each read once as it
reads them), interleaved so all see the same machine load
(benchmarks.helpers.measure.interleaved_rounds); it prints the medians over the rounds with their
min-max.  Not a test.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torchvision

from benchmarks.helpers.measure import interleaved_rounds, rounds_table
from inception_fast import FusedGoogLeNet
from inception_fast.cli import UsageError, check_backend, positive_int, positive_ints, run_command
from inception_fast.packing import PackCache
from inception_fast.testing import calibrate


def _caches_read(model, x) -> list:
    """[(module, cache, dtype)]: each pack cache a forward of ``model`` on ``x`` reads, once (the
    forward after a first one, which may measure candidates that read other caches)."""
    read = {}
    get = PackCache.get

    def recorded(cache, module, dtype):
        read.setdefault((id(cache), id(module), dtype), (module, cache, dtype))
        return get(cache, module, dtype)

    with torch.inference_mode():
        model(x)
        PackCache.get = recorded
        try:
            model(x)
        finally:
            PackCache.get = get
    return list(read.values())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=positive_ints, default=[1, 8])
    p.add_argument("--rounds", type=positive_int, default=7)
    p.add_argument("--repeats", type=positive_int, default=5)
    p.add_argument("--backend", default="torch")
    args = p.parse_args(argv)
    try:
        args.backend = check_backend(args.backend, torch.device("cpu"))
    except UsageError as exc:
        p.error(str(exc))
    tv = torchvision.models.googlenet(init_weights=True, aux_logits=False)
    calibrate(tv, torch.randn(4, 3, 224, 224))
    normal = FusedGoogLeNet.from_torchvision(tv, backend=args.backend).eval()
    with torch.inference_mode():
        frozen = FusedGoogLeNet(init_weights=False, backend=args.backend).eval()
        frozen.load_state_dict(tv.state_dict())
    assert frozen.conv1.conv.weight.is_inference() and not normal.conv1.conv.weight.is_inference()

    def check_only(caches):
        for module, cache, dtype in caches:
            cache.get(module, dtype)

    groups = {}
    for batch in args.batches:
        x = torch.rand(batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)
        groups[f"batch {batch}"] = {
            "built normally": lambda x=x: normal(x),
            "built under inference_mode": lambda x=x: frozen(x),
            "the bit comparison alone": lambda caches=_caches_read(frozen, x): check_only(caches),
        }
    rows = interleaved_rounds(groups, rounds=args.rounds, repeats=args.repeats)
    print()
    what = f"FusedGoogLeNet[{args.backend}] (torchvision variant), 224x224 fp32 channels_last"
    print(rounds_table(rows, "batch", what, args.repeats))


if __name__ == "__main__":
    sys.exit(run_command(main))
