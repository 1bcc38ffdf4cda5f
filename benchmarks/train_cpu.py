"""Training images/s of GoogLeNet (d2l's network by default), fused against the reference, side by
side in one run.

    python -m benchmarks.train_cpu [--variant d2l] [--image-size 96] [--batch 32] [--rounds 5] [--steps 3]
                                   [--dtype float32|bfloat16]

torchvision's variant trains with BatchNorm in train mode (the fused blocks run
inception_fast::inception_block_bn_train), 1000 classes and 3 input channels.

Both models start from the same weights (inception_fast.train.build_models) and take SGD steps
(forward, cross-entropy, backward, step) on the same random batch.  Each round times ``--steps``
steps of the fused model, then of the reference, so both see the same machine load; it prints
the median and the min-max over the rounds.  Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from inception_fast.cli import UsageError, check_backend, check_image_size, positive_int, run_command
from inception_fast.train import batch_norm_refusal, build_models, check_train_dtype


def _step(model, opt, x, y, bf16: bool):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image-size", type=positive_int, default=96)
    p.add_argument("--batch", type=positive_int, default=32)
    p.add_argument("--rounds", type=positive_int, default=5)
    p.add_argument("--steps", type=positive_int, default=3, help="timed steps per model per round")
    p.add_argument("--backend", default="torch")
    p.add_argument("--variant", default="d2l", choices=("d2l", "torchvision", "paper"))
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="bfloat16: CPU autocast")
    args = p.parse_args(argv)
    classes, in_ch = (10, 1) if args.variant == "d2l" else (1000, 3)
    try:
        args.backend = check_backend(args.backend, torch.device("cpu"))
        check_image_size(args.image_size, args.variant)
        check_train_dtype(args.dtype, torch.device("cpu"))
    except UsageError as exc:
        p.error(str(exc))
    why = batch_norm_refusal(args.variant, classes, in_ch, args.image_size, args.batch)
    if why is not None:
        p.error(f"--batch {args.batch} at --image-size {args.image_size}: {why}; use a larger batch or image size")
    models = build_models(args.variant, classes, in_ch, seed=0, backend=args.backend, reference=True)
    opts = {n: torch.optim.SGD(m.parameters(), lr=0.01) for n, m in models.items()}
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, in_ch, args.image_size, args.image_size, generator=g)
    y = torch.randint(0, classes, (args.batch,), generator=g)
    bf16 = args.dtype == "bfloat16"
    for name, model in models.items():  # warm-up
        _step(model, opts[name], x, y, bf16)
    rates = {n: [] for n in models}
    for r in range(args.rounds):
        for name, model in models.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                _step(model, opts[name], x, y, bf16)
            rates[name].append(args.steps * args.batch / (time.perf_counter() - t0))
        print(
            f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {v[-1]:.1f} img/s" for n, v in rates.items()), flush=True
        )
    print(
        f"\n{args.variant} GoogLeNet training, {args.image_size}x{args.image_size}, {args.dtype}, batch {args.batch}, "
        f"{args.rounds} rounds x {args.steps} steps; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}"
    )
    print("| model | images/s median | min | max |\n|---|---|---|---|")
    for name, v in rates.items():
        print(f"| {name} | {statistics.median(v):.1f} | {min(v):.1f} | {max(v):.1f} |")
    ratio = [f / r for f, r in zip(rates["fused"], rates["reference"])]
    print(f"| fused / reference, per round | {statistics.median(ratio):.2f}x | {min(ratio):.2f}x | {max(ratio):.2f}x |")


if __name__ == "__main__":
    sys.exit(run_command(main))
