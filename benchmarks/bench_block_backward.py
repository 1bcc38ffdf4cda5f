"""Per-block training kernels: the block backward op's, or the train-mode BatchNorm block's,
candidates against plain PyTorch.

For each GoogLeNet block at its size for ``--size`` (torchvision's variant, packed weights from a
randomly initialised block), times, side by side (``inception_fast.timing.time_interleaved``):

``--op backward`` (default):

* ``reference``: the plain-PyTorch block's autograd backward (torch.autograd.grad of its output,
  BatchNorm folded into the convs so it computes what the fused op computes);
* ``aten_chain``: ``inception_block_backward`` on the torch backend (also the cpp and cuda backends'
  backward);
* ``triton``: the Triton backward (CUDA only; first checked against the ATen chain in fp64 by the
  rule of ``inception_fast.choices.BACKWARD``, and left out, with the reason, where it disagrees).

``--op bn_train``, the forward with train-mode BatchNorm (batch statistics):

* ``reference``: the plain-PyTorch block, each conv followed by F.batch_norm(training=True) and
  ReLU, the branches concatenated;
* ``aten_chain``: ``inception_block_bn_train`` on the torch backend;
* ``triton``: its Triton kernels (backends/triton/bn_train.py; CUDA only, checked as
  ``inception_fast.choices.BN_TRAIN`` checks them, left out with the reason where they disagree).

    python -m benchmarks.bench_block_backward [--op backward|bn_train] [--device cpu|cuda]
        [--dtype fp32|bf16|fp16] [--batch 8] [--size 112] [--block inception3a ...] [--json FILE]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F

from benchmarks.helpers.environment import environment
from benchmarks.helpers.settings import DTYPES, ENV_DEADLINE, deadline
from benchmarks.helpers.shapes import block_shapes
from inception_fast import backends
from inception_fast.choices import checked_against
from inception_fast.cli import (
    UsageError,
    check_image_size,
    check_seconds,
    check_writable,
    positive_int,
    resolve_device,
    run_command,
    write_json,
)
from inception_fast.reference import BLOCK_CONFIGS
from inception_fast.timing import time_interleaved
from inception_fast.train import batch_norm_refusal


def _sizes(image_size: int) -> dict:
    """Each block's spatial size at ``image_size``: its input's in torchvision's GoogLeNet
    (benchmarks.helpers.shapes; about /8 for 3a-3b, /16 for 4a-4e, /32 for 5a-5b, each max pool's
    floor-or-ceil rounding taken as the network takes it)."""
    shapes = block_shapes(image_size)
    return {name: shapes[name].input_chw[1] for name in BLOCK_CONFIGS}


def _block(cfg, n, size, dtype, device):
    cin, ch1, r3, c3, r5, c5, pool = cfg
    cl = torch.channels_last
    g = torch.Generator().manual_seed(0)

    def rnd(*shape, fan_in):
        return (torch.randn(*shape, generator=g) * fan_in**-0.5).to(device=device, dtype=dtype)

    x = torch.randn(n, cin, size, size, generator=g).relu().to(device=device, dtype=dtype).contiguous(memory_format=cl)
    w_red, b_red = rnd(ch1 + r3 + r5, cin, fan_in=cin), rnd(ch1 + r3 + r5, fan_in=1) * 0.1
    w_pool, b_pool = rnd(pool, cin, fan_in=cin), rnd(pool, fan_in=1) * 0.1
    w3 = rnd(c3, r3, 3, 3, fan_in=9 * r3).contiguous(memory_format=cl)
    w5 = rnd(c5, r5, 3, 3, fan_in=9 * r5).contiguous(memory_format=cl)
    b3, b5 = rnd(c3, fan_in=1) * 0.1, rnd(c5, fan_in=1) * 0.1
    return x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5


def _reference_forward(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5):
    r3, r5 = w3.shape[1], w5.shape[1]
    ch1 = w_red.shape[0] - r3 - r5
    red = F.relu(F.conv2d(x, w_red[:, :, None, None], b_red))
    y3 = F.relu(F.conv2d(red[:, ch1 : ch1 + r3], w3, b3, padding=w3.shape[-1] // 2))
    y5 = F.relu(F.conv2d(red[:, ch1 + r3 :], w5, b5, padding=w5.shape[-1] // 2))
    yp = F.relu(F.conv2d(F.max_pool2d(x, 3, 1, 1), w_pool[:, :, None, None], b_pool))
    return torch.cat([red[:, :ch1], y3, y5, yp], 1)


def _reference_bn_train(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, gamma, beta, eps):
    """The block with train-mode BatchNorm in plain PyTorch; gamma and beta in the op's channel order
    (the three 1x1s, the 3x3, the kxk, the pool projection)."""
    r3, r5 = w3.shape[1], w5.shape[1]
    ch1 = w_red.shape[0] - r3 - r5

    def bn_relu(y, col0):
        cols = slice(col0, col0 + y.shape[1])
        return F.relu(F.batch_norm(y, None, None, gamma[cols], beta[cols], training=True, eps=eps))

    red = bn_relu(F.conv2d(x, w_red[:, :, None, None], b_red), 0)
    col = w_red.shape[0]
    y3 = bn_relu(F.conv2d(red[:, ch1 : ch1 + r3], w3, b3, padding=w3.shape[-1] // 2), col)
    y5 = bn_relu(F.conv2d(red[:, ch1 + r3 :], w5, b5, padding=w5.shape[-1] // 2), col + y3.shape[1])
    yp = bn_relu(F.conv2d(F.max_pool2d(x, 3, 1, 1), w_pool[:, :, None, None], b_pool), col + y3.shape[1] + y5.shape[1])
    return torch.cat([red[:, :ch1], y3, y5, yp], 1)


def _backward_candidates(args):
    """(reference, the op's name, its arguments) of ``--op backward``."""
    leaves = [a.detach().requires_grad_() for a in args]
    y = _reference_forward(*leaves)
    grad = torch.randn_like(y)
    x, w_red, _, w_pool, _, w3, _, w5, _ = args
    out, scratch = backends.get("torch").op("inception_block")(*args)
    bwd = (grad.contiguous(memory_format=torch.channels_last), x, w_red, w_pool, w3, w5, out, scratch, True)
    reference = lambda: torch.autograd.grad(y, leaves, grad, retain_graph=True)  # noqa: E731
    return reference, "inception_block_backward", bwd


def _bn_train_candidates(args):
    """(reference, the op's name, its arguments) of ``--op bn_train``: random BatchNorm affine
    parameters in float32, as the fused modules pass them."""
    x, w_red, _, w_pool, _, w3, _, w5, _ = args
    g = torch.Generator().manual_seed(1)
    channels = w_red.shape[0] + w3.shape[0] + w5.shape[0] + w_pool.shape[0]
    gamma = (1 + 0.1 * torch.randn(channels, generator=g)).to(x.device)
    beta = (0.1 * torch.randn(channels, generator=g)).to(x.device)
    op_args = (*args, gamma, beta, 1e-3)
    return lambda: _reference_bn_train(*op_args), "inception_block_bn_train", op_args


def run(device: str, dtype: str, batch: int, image_size: int, blocks, budget_s: float, op: str = "backward") -> list:
    dev, dt = torch.device(device), DTYPES[dtype]
    candidates = _bn_train_candidates if op == "bn_train" else _backward_candidates
    what = "train-mode BatchNorm block" if op == "bn_train" else "block backward"
    # The GPU suite's step deadline (benchmarks/gpu_suite.sh): blocks not started by then are left out.
    stop = deadline()
    rows = []
    for name in blocks:
        if stop and time.time() > stop:
            print(f"{op} {name}: not run, past the step's deadline ({ENV_DEADLINE})", flush=True)
            continue
        size = _sizes(image_size)[name]
        reference, op_name, op_args = candidates(_block(BLOCK_CONFIGS[name], batch, size, dt, dev))
        aten = backends.get("torch").op(op_name)
        fns = {"reference": reference, "aten_chain": lambda: aten(*op_args)}
        errors = {}
        if dev.type == "cuda" and backends.availability("triton", dev) is None:
            fast = backends.get("triton").op(op_name)
            args64 = tuple(a.double() if isinstance(a, torch.Tensor) else a for a in op_args)
            checked = checked_against(
                lambda: fast(*op_args), lambda: aten(*op_args), f"the triton {what}", lambda: aten(*args64)
            )
            try:
                checked()
                fns["triton"] = checked
            except Exception as exc:  # the reason goes into the table
                errors["triton"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        with torch.no_grad():
            timings = time_interleaved(fns, device=dev, batch=batch, budget_s=budget_s)
        row = {
            "op": op,
            "block": name,
            "size": size,
            "batch": batch,
            "dtype": dtype,
            "ms": {k: t.median_s * 1e3 for k, t in timings.items()},
            "iqr_ms": {k: [q * 1e3 for q in t.quartiles_s] for k, t in timings.items()},
            "errors": errors,
        }
        rows.append(row)
        print(
            f"{op} {name:<12} {size:>3}x{size:<3} "
            + "  ".join(f"{k} {v:8.2f} ms" for k, v in row["ms"].items())
            + f"  aten_chain/reference {row['ms']['aten_chain'] / row['ms']['reference']:.2f}"
            + (f"  {errors}" if errors else ""),
            flush=True,
        )
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--op", choices=["backward", "bn_train"], default="backward")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda where there is one)")
    p.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    p.add_argument("--batch", type=positive_int, default=8)
    p.add_argument("--size", type=positive_int, default=112, help="the network's input size")
    p.add_argument("--block", action="append", choices=list(BLOCK_CONFIGS))
    p.add_argument("--budget", type=float, default=5.0, help="seconds of extra rounds per block while rows overlap")
    p.add_argument("--json", help="write the rows and the environment here")
    a = p.parse_args(argv)
    try:
        a.device = str(resolve_device(a.device, "this benchmark"))
        check_seconds(a.budget, "--budget")
        check_image_size(a.size, "torchvision", "--size")
        if a.json is not None:
            check_writable(a.json)
        deadline()
    except (UsageError, ValueError) as exc:
        p.error(str(exc))
    if a.op == "bn_train":
        why = batch_norm_refusal("torchvision", 1000, 3, a.size, a.batch)
        if why is not None:
            p.error(f"--op bn_train --batch {a.batch} at --size {a.size}: {why}; use a larger batch or size")
    rows = run(a.device, a.dtype, a.batch, a.size, a.block or list(BLOCK_CONFIGS), a.budget, a.op)
    if a.json:
        write_json(a.json, {"environment": environment(torch.device(a.device)), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
