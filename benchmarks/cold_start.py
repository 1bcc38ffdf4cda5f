"""What a cold start compiles: every Triton binary the first forward of FusedGoogLeNet
(``backend="auto"``, torchvision's variant, 224x224, channels_last input) would compile on an
sm_90 GPU (``--arch``) with an empty Triton cache, counted and timed here without a GPU.

For each Triton launch of that forward (the stem kernel with and without its pool, conv1 over
aligned rows (conv_rows.py: the padded copy and the conv), conv2 and conv3
(conv_relu.py, CONV_RELU_CHOICE's Triton candidate), the max pool on
maxpool1-4, launch 1 and launch 2 of the nine blocks, the "hopper" backend's TMA launch 1 and
launch 2 of the nine blocks (a candidate of auto on sm_90+, so counted for ``--arch`` 90 and up;
each config's descriptor boxes set by its pre_hook, ``_common.config_args``), launch 1 of 3a, 4a
and 5a with the pool before it folded in, the joined launch of each pair of neighbours in 3a-3b,
4a-4e and 5a-5b (CHAIN_CHOICE's candidate; these two only where INCEPTION_FAST_EXTRA_CANDIDATES offers them,
inception_fast.stages.offers), the head's average pool and GEMM; with
``--train`` also the block backward's launches A and B) it takes the arguments the launcher
passes (its own ``_arguments``), the configs its autotuner benchmarks at that shape (after the
kernel's early prune: SMALL_PROBLEM_PIXELS, split-K), and Triton's specialization of those
arguments (``kernel_stats._source``: ints equal to 1 become constants, multiples of 16 and aligned
pointers are marked divisible, except ``do_not_specialize`` ones).  One binary per distinct
(kernel, signature, constants, divisibility, warps, stages): the JIT compiles each once per
process, whatever the block.  Then it compiles every distinct binary for the target in three
passes (below), each into an empty Triton cache, and prints per kernel:

* launches (block shapes); groups (launches alike in their launcher-fixed constexprs and in
  the arguments equal to 1: the fewest distinct specializations they could compile); autotune
  keys (shapes the autotuner benchmarks); benchmark runs (keys x pruned configs: what
  ``triton.testing.do_bench`` times on the GPU, ~125 ms of GPU time each at Triton's default
  25 ms warm-up + 100 ms of repeats); distinct binaries;
* seconds to compile them: one by one (Triton's autotuner by itself), shape by shape with each
  shape's new binaries on a thread pool (the autotuners without a precompile), all at once on one
  thread pool, and all at once in N worker processes (what ``inception_fast.precompile`` does:
  jobs recorded through each launch's own ``kernel.warmup``, compiled by backends/triton/
  compile_pool's workers, then loaded back by this process as the autotuners load them, which
  must find every binary in the cache; left out under ``--threads 1``, and said so where the
  memory leaves no room for two workers: the pool starts none below two), with the CPU seconds of
  each.

    python -m benchmarks.cold_start [--batches 1,256] [--dtype bf16] [--arch 90]
        [--threads N] [--count-only | --workers-only] [--train] [--json OUT.json]

Runs without TRITON_INTERPRET (the kernels must be JIT functions).  No GPU needed; on the GPU
machine it gives that machine's compile seconds (its CPU cores) for the counts the first forward
will meet.  Not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
import types
from concurrent.futures import ThreadPoolExecutor

if os.environ.get("TRITON_INTERPRET") == "1":
    sys.exit("cold_start: unset TRITON_INTERPRET (the kernels must be compiled, not interpreted)")

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402

from benchmarks.helpers.environment import environment  # noqa: E402
from benchmarks.helpers.settings import DTYPES  # noqa: E402
from benchmarks.kernel_stats import (  # noqa: E402
    FOLDS,
    POOLS,
    SIZES,
    STEM_CONVS,
    _source,
    arch_problem,
    block_tensors,
    joined_arguments,
)
from inception_fast.backends.triton import (  # noqa: E402
    block_backward,
    branch_convs,
    branch_convs_tma,
    chain,
    conv_relu,
    conv_rows,
    head,
    maxpool,
    reduce_pool,
    reduce_pool_tma,
    stem,
)
from inception_fast.backends.triton._common import (  # noqa: E402
    autotuned_configs,
    config_args,
    config_warmup,
    tuning_bench_ms,
)
from inception_fast.cli import UsageError, check_writable, run_command, write_json  # noqa: E402
from inception_fast.stages import offers  # noqa: E402

# The neighbours whose launch 2 and launch 1 the chains (3a-3b, 4a-4e, 5a-5b) join: consecutive
# blocks with no pool between them (the same map size).
JOINED_PAIRS = [(a, b) for a, b in zip(SIZES, list(SIZES)[1:]) if SIZES[a] == SIZES[b]]

# do_bench's default time per benchmarked config (warm-up + repeats), for the estimate column.
DO_BENCH_MS = 25 + 100


def _tuning_key(tuned, kernel, args, meta) -> tuple:
    """The autotuner's key for this launch: its key arguments' values and the tensors' dtypes."""
    named = {**dict(zip(kernel.arg_names, args)), **meta}
    return tuple(named[k] for k in tuned.keys if k in named) + tuple(
        str(a.dtype) for a in args if isinstance(a, torch.Tensor)
    )


def launches(batch: int, dtype: str = "bf16", train: bool = False, arch: int = 90):
    """[(kernel label, launch label, JIT kernel, autotuner, args, launcher constexprs)] of the first
    forward (and, with ``train``, the block backward) at ``batch`` on an sm_``arch`` GPU (the TMA
    launches only from sm_90, where auto offers the "hopper" backend)."""
    dt = DTYPES[dtype]
    rows = []
    x = torch.empty(batch, 3, 224, 224, dtype=dt).contiguous(memory_format=torch.channels_last)
    w = torch.empty(64, 3, 7, 7, dtype=dt).contiguous(memory_format=torch.channels_last)
    b = torch.empty(64, dtype=dt)
    for label, pool in (("conv_pool", (3, 2, 0, True)), ("conv", (1, 1, 0, False))):
        args, meta, _grid, _out = stem._arguments(x, w, b, 2, 3, *pool)
        rows.append(("stem", label, stem._conv_pool_kernel, stem._tuned_kernel, args, meta))
    # conv1 over aligned rows (the stem's "triton_rows" form): the padded copy (its one config, not
    # autotuned), then the conv.
    (_grid, pad_args, pad_meta), args, meta, _grid, _out = conv_rows._arguments(x, w, b, 2, 3)
    untuned = types.SimpleNamespace(configs=[conv_rows.PAD_CONFIG], keys=[])
    rows.append(("stem_rows_pad", "conv1", conv_rows._pad_kernel, untuned, pad_args, pad_meta))
    rows.append(("stem_rows", "conv1", conv_rows._conv_rows_kernel, conv_rows._tuned_kernel, args, meta))
    # ... and its pooled form ("triton_rows_pool": maxpool1 in the conv's epilogue).
    _pad, args, meta, _grid, _out = conv_rows._pool_arguments(x, w, b, 2, 3, (3, 2, 0, True))
    rows.append(("stem_rows_pool", "conv1", conv_rows._conv_rows_pool_kernel, conv_rows._tuned_pool_kernel, args, meta))
    for name, (cin, cout, k) in STEM_CONVS.items():  # conv2 and conv3: the Triton candidate (CONV_RELU_CHOICE)
        c_x = torch.empty(batch, cin, 56, 56, dtype=dt).contiguous(memory_format=torch.channels_last)
        c_w = torch.empty(cout, cin, k, k, dtype=dt).contiguous(memory_format=torch.channels_last)
        args, meta, _grid, _out = conv_relu._arguments(c_x, c_w, torch.empty(cout, dtype=dt), k // 2)
        rows.append(("conv_relu", name, conv_relu._conv_relu_kernel, conv_relu._tuned_kernel, args, meta))
    for name, (c, size, params) in POOLS.items():
        p = torch.empty(batch, c, size, size, dtype=dt).contiguous(memory_format=torch.channels_last)
        args, meta, _grid, _out = maxpool._arguments(p, *params)
        rows.append(("maxpool", name, maxpool._max_pool_kernel, maxpool._tuned_kernel, args, meta))
    for block in SIZES:
        ch1, x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, out, scratch = block_tensors(block, batch, dt)
        if block in FOLDS and offers("fold"):  # the pool folded into launch 1: a candidate (FOLD_CHOICE)
            c, size, params = POOLS[FOLDS[block]]
            pre = torch.empty(batch, x.shape[1], size, size, dtype=dt).contiguous(memory_format=torch.channels_last)
            args, meta, _grid = reduce_pool._arguments(pre, w_red, b_red, w_pool, b_pool, out, scratch, pre_pool=params)
            rows.append(("launch1_fold", block, reduce_pool._reduce_pool_kernel, reduce_pool._tuned_kernel, args, meta))
        n_counters = branch_convs.split_k_counters(scratch, w3, w5)
        counters = None if n_counters is None else torch.empty(n_counters, dtype=torch.int32)
        args, meta, _grid = reduce_pool._arguments(x, w_red, b_red, w_pool, b_pool, out, scratch, counters)
        rows.append(("launch1", block, reduce_pool._reduce_pool_kernel, reduce_pool._tuned_kernel, args, meta))
        args, meta, _grid = branch_convs._arguments(scratch, w3, b3, w5, b5, out, ch1, counters)
        rows.append(("launch2", block, branch_convs._branch_convs_kernel, branch_convs._tuned_kernel, args, meta))
        # The "hopper" backend's block (sm_90+), a candidate auto measures per block: both launches on TMA
        # ("hopper_tma2", triton's launch 1 with the TMA launch 2, adds no binary to these).
        if arch >= 90:
            args, meta, _grid = reduce_pool_tma._arguments(x, w_red, b_red, w_pool, b_pool, out, scratch)
            tma1 = reduce_pool_tma._reduce_pool_tma_kernel
            rows.append(("launch1_tma", block, tma1, reduce_pool_tma._tuned_kernel, args, meta))
            args, meta, _grid = branch_convs_tma._arguments(scratch, w3, b3, w5, b5, out, ch1)
            tma2 = branch_convs_tma._branch_convs_tma_kernel
            rows.append(("launch2_tma", block, tma2, branch_convs_tma._tuned_kernel, args, meta))
        if train:
            _buffers, _segments, bwd = block_backward._arguments(
                torch.empty_like(out), x, w_red, w_pool, w3, w5, out, scratch, True
            )
            for label, (kernel, tuned, args, meta, _grid) in zip(("bwd_a", "bwd_b"), bwd):
                rows.append((label, block, kernel, tuned, args, meta))
    for pair in JOINED_PAIRS if offers("chain") else ():  # launch 2 + the next launch 1 (CHAIN_CHOICE)
        args, meta = joined_arguments(pair, batch, dt)
        rows.append(("joined", ">".join(pair), chain._joined_kernel, chain._tuned_kernel, args, meta))
    h = torch.empty(batch, 1024, 7, 7, dtype=dt).contiguous(memory_format=torch.channels_last)
    fc_w, fc_b = torch.empty(1000, 1024, dtype=dt), torch.empty(1000, dtype=dt)
    (p_args, p_meta, _), (l_args, l_meta, _), _out = head._arguments(h, fc_w, fc_b)
    rows.append(("head_pool", "head", head._channel_means_kernel, head._tuned_pool, p_args, p_meta))
    rows.append(("head_linear", "head", head._linear_kernel, head._tuned_linear, l_args, l_meta))
    return rows


def binaries(batch: int, dtype: str = "bf16", train: bool = False, arch: int = 90) -> tuple[dict, dict]:
    """({binary key: (kernel label, ASTSource, options, index of the first launch needing it)},
    {kernel label: counts}) of the first forward at ``batch`` on sm_``arch``: the distinct binaries its
    autotuners compile, and per kernel the launches, autotune keys, benchmark runs and distinct
    binaries."""
    found, counts = {}, {}
    for index, (kernel_label, _launch, kernel, tuned, args, meta) in enumerate(launches(batch, dtype, train, arch)):
        c = counts.setdefault(
            kernel_label, {"launches": 0, "keys": set(), "bench_runs": 0, "binaries": 0, "groups": set()}
        )
        c["launches"] += 1
        # What the launcher fixes and the arguments equal to 1 that become constants (not the
        # do_not_specialize ones): launches alike in both can share binaries; alignment marks that
        # differ split them further.
        ones = tuple(
            param.name
            for param, a in zip(kernel.params, args)
            if type(a) is int and a == 1 and not param.do_not_specialize
        )
        c["groups"].add((tuple(sorted(meta.items())), ones))
        configs = autotuned_configs(kernel, tuned, args, meta)
        key = _tuning_key(tuned, kernel, args, meta)
        if key not in c["keys"]:
            c["keys"].add(key)
            c["bench_runs"] += len(configs) if len(configs) > 1 else 0
        for config in configs:
            src = _source(kernel, config_args(kernel, args, meta, config), dict(meta, **config.kwargs))
            options = {"num_warps": config.num_warps, "num_stages": config.num_stages}
            bkey = (
                kernel.__name__,
                tuple(src.signature.items()),
                tuple(sorted((k, repr(v)) for k, v in src.constants.items())),
                tuple(sorted((k, repr(v)) for k, v in src.attrs.items())),
                tuple(sorted(options.items())),
            )
            if bkey not in found:
                found[bkey] = (kernel_label, src, options, index)
                c["binaries"] += 1
    for c in counts.values():
        c["keys"], c["groups"] = len(c["keys"]), len(c["groups"])
    return found, counts


@contextlib.contextmanager
def _fresh_cache():
    """Triton's cache pointed at a new empty directory inside the block (so every compile in it is
    a cold one); afterwards the directory, with every binary compiled into it, is removed and the
    cache Triton used before is restored."""
    path = tempfile.mkdtemp(prefix="cold_start_")
    before = os.environ.get("TRITON_CACHE_DIR")
    knobs = getattr(getattr(triton, "knobs", None), "cache", None)  # Triton without knobs reads the variable
    pinned = knobs is not None and "dir" in vars(knobs)
    old_pin = vars(knobs)["dir"] if pinned else None
    os.environ["TRITON_CACHE_DIR"] = path
    if knobs is not None:
        knobs.dir = path
    try:
        yield path
    finally:
        if knobs is not None:
            del knobs.dir
            if pinned:
                knobs.dir = old_pin
        if before is None:
            os.environ.pop("TRITON_CACHE_DIR", None)
        else:
            os.environ["TRITON_CACHE_DIR"] = before
        shutil.rmtree(path, ignore_errors=True)


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (ptxas)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def compile_all(found: dict, arch: int, threads: int, per_launch: bool = False) -> dict:
    """{kernel label: [seconds of each compile]} and the wall ("wall") and CPU ("cpu") seconds of
    compiling every binary of ``found`` into an empty cache, on ``threads`` threads (1: one after
    another).  ``per_launch``: launch by launch, each launch's new binaries on a pool of their own
    (at most ``threads``), as the autotuners compile a new shape's configs before benchmarking
    them; else all binaries on one pool, as a precompile of the whole forward would."""
    with _fresh_cache():
        target = GPUTarget("cuda", arch, 32)

        def one(item):
            label, src, options, _index = item
            t = time.perf_counter()
            triton.compile(src, target=target, options=options)
            return label, time.perf_counter() - t

        batches = [list(found.values())]
        if per_launch:
            by_launch: dict = {}
            for item in found.values():
                by_launch.setdefault(item[3], []).append(item)
            batches = [by_launch[i] for i in sorted(by_launch)]
        t0, cpu0 = time.perf_counter(), _cpu_seconds()
        done = []
        mode = "one by one" if threads <= 1 else ("launch by launch" if per_launch else "all at once")
        for items in batches:
            if threads <= 1 or len(items) == 1:
                done += [one(item) for item in items]
            else:
                with ThreadPoolExecutor(min(threads, len(items))) as pool:
                    done += list(pool.map(one, items))
            # Progress on stderr (the tables go to stdout): a pass takes a minute or more.
            print(
                f"cold_start: {mode}: {len(done)}/{len(found)} binaries compiled, {time.perf_counter() - t0:.0f} s",
                file=sys.stderr,
                flush=True,
            )
        # CPU seconds per wall second above 1 on the pool: the compiles ran side by side (outside the
        # GIL), whatever else the machine was running.
        per = {"wall": time.perf_counter() - t0, "cpu": _cpu_seconds() - cpu0}
        for label, seconds in done:
            per.setdefault(label, []).append(seconds)
        return per


def compile_workers(batch: int, dtype: str, train: bool, arch: int, workers: int) -> dict:
    """The whole forward's binaries compiled at once by ``workers`` worker processes
    (backends/triton/compile_pool, what inception_fast.precompile does) into an empty cache, then
    loaded by this process as the autotuners load them (each config's warmup): {"wall", "cpu"
    (this process), "jobs", "compiled", "failed", "loads", "hits" (loads the cache answered:
    every one, when the workers' cache keys are the launches' own)}.  Recording goes through
    each launch's real ``kernel.warmup`` with a driver that only names sm_<arch>."""
    from triton.runtime.driver import driver

    from inception_fast.backends.triton import compile_pool

    with _fresh_cache():
        os.environ[compile_pool.ENV_COMPILE_THREADS] = str(workers)
        # This process launches nothing: the driver that only names the target stays active (Triton's
        # own would fail to start on a machine without a GPU).
        driver.set_active(compile_pool.TargetOnlyDriver("cuda", arch, 32))
        calls = [
            (kernel, args, meta, c)
            for _kl, _ll, kernel, tuned, args, meta in launches(batch, dtype, train, arch)
            for c in autotuned_configs(kernel, tuned, args, meta)
        ]
        t0, cpu0 = time.perf_counter(), _cpu_seconds()
        recorded = compile_pool.record(lambda: [config_warmup(k, (1,), a, m, c) for k, a, m, c in calls])
        futures = compile_pool.submit(recorded, force=True)
        if recorded and not futures:
            compile_pool.close()
            return {
                "workers": workers,
                "jobs": len(recorded),
                "skipped": "the compile pool started no workers: it needs room for two (CPUs, --threads, memory)",
            }
        done = 0
        for f in futures:
            f.exception()
            done += 1
            if done % 20 == 0 or done == len(futures):
                print(
                    f"cold_start: {workers} workers: {done}/{len(futures)} binaries, {time.perf_counter() - t0:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
        compiled = compile_pool.wait(futures)
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
        compile_pool.close()
        hits = []
        triton.knobs.compilation.listener = lambda **kw: hits.append(bool(kw["cache_hit"]))
        try:
            for k, a, m, c in calls:
                config_warmup(k, (1,), a, m, c)
        finally:
            triton.knobs.compilation.listener = None
        return {
            "wall": wall,
            "cpu": cpu,
            "workers": workers,
            "jobs": len(futures),
            "compiled": compiled,
            "failed": len(futures) - compiled,
            "loads": len(hits),
            "hits": sum(hits),
        }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", default="1,256")
    p.add_argument("--dtype", choices=list(DTYPES), default="bf16")
    p.add_argument("--arch", type=int, default=90, help="compute capability x10 (90: H100/H200)")
    p.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="the pool's threads and workers (default: the CPUs)"
    )
    passes = p.add_mutually_exclusive_group()
    passes.add_argument("--count-only", action="store_true", help="count, compile nothing")
    passes.add_argument(
        "--workers-only",
        action="store_true",
        help="only the worker-process pass (inception_fast.precompile's), not the three thread passes",
    )
    p.add_argument("--train", action="store_true", help="also the block backward's launches")
    p.add_argument("--json", default=None, help="also write the rows here")
    args = p.parse_args(argv)
    try:
        batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        p.error(f"--batches must be comma-separated integers, got {args.batches!r}")
    if min(batches) < 1 or args.threads < 1:
        p.error("--batches and --threads must be positive")
    if args.workers_only and args.threads < 2:
        p.error("--workers-only needs --threads 2 or more: the compile pool starts no fewer than two workers")
    why = arch_problem(args.arch)
    if why:
        p.error(why)
    if args.json is not None:
        try:
            check_writable(args.json)
        except UsageError as exc:
            p.error(str(exc))
    out = {
        "arch": f"sm_{args.arch}",
        "dtype": args.dtype,
        "threads": args.threads,
        "batches": {},
        "environment": environment(torch.device("cpu")),  # the compiles run on this machine's CPUs
    }
    for batch in batches:
        found, counts = binaries(batch, args.dtype, args.train, args.arch)
        serial = per_shape = parallel = workers = None
        if not args.count_only and not args.workers_only:
            serial = compile_all(found, args.arch, 1)
            per_shape = compile_all(found, args.arch, args.threads, per_launch=True)
            parallel = compile_all(found, args.arch, args.threads)
        if not args.count_only and args.threads >= 2:
            workers = compile_workers(batch, args.dtype, args.train, args.arch, args.threads)
        print(f"\nbatch {batch}, {args.dtype}, sm_{args.arch}: a cold first forward's Triton compiles")
        print(
            f"| kernel | launches | groups | autotune keys | benchmark runs (~{DO_BENCH_MS} ms GPU each) | binaries "
            f"| compile s serial | longest compile s |"
        )
        print("|---|---|---|---|---|---|---|---|")
        rows = []
        for label, c in counts.items():
            times = serial.get(label, []) if serial else []
            row = dict(c, kernel=label, compile_s=sum(times) if serial else None)
            row["longest_s"] = max(times) if times else None
            rows.append(row)
            ser = "" if row["compile_s"] is None else f"{row['compile_s']:.1f}"
            lon = "" if row["longest_s"] is None else f"{row['longest_s']:.2f}"
            print(
                f"| {label} | {c['launches']} | {c['groups']} | {c['keys']} | {c['bench_runs']} | {c['binaries']} "
                f"| {ser} | {lon} |"
            )
        total = {k: sum(r[k] for r in rows) for k in ("launches", "keys", "bench_runs", "binaries")}
        summary = dict(total, bench_estimate_s=total["bench_runs"] * DO_BENCH_MS / 1e3)
        if serial:
            summary.update(
                serial_s=serial["wall"],
                serial_cpu_s=serial["cpu"],
                per_shape_s=per_shape["wall"],
                per_shape_cpu_s=per_shape["cpu"],
                parallel_s=parallel["wall"],
                parallel_cpu_s=parallel["cpu"],
            )
        print(
            f"| total | {total['launches']} | | {total['keys']} | {total['bench_runs']} | {total['binaries']} | "
            + (f"{serial['wall']:.1f} | |" if serial else " | |")
        )
        warmup, rep = tuning_bench_ms()
        summary["bench_estimate_package_s"] = total["bench_runs"] * (warmup + rep) / 1e3
        print(
            f"do_bench estimate: {summary['bench_estimate_s']:.1f} s of GPU time at Triton's default 25 + 100 ms, "
            f"{summary['bench_estimate_package_s']:.1f} s at the autotuners' {warmup:g} + {rep:g} ms "
            "(_common.tuning_bench_ms)"
        )
        if workers:
            summary["workers"] = w = workers
        if workers and "skipped" in w:
            print(f"compile wall in worker processes: not measured ({w['skipped']})")
        elif workers:
            print(
                f"compile wall, all at once in {w['workers']} worker processes (inception_fast.precompile): "
                f"{w['wall']:.1f} s for {w['jobs']} binaries ({w['compiled']} compiled, {w['failed']} failed; "
                f"this process {w['cpu']:.1f} CPU s); loaded back as the launches load them: "
                f"{w['hits']} of {w['loads']} from the cache"
                + (f"; {serial['wall'] / w['wall']:.2f}x one by one" if serial else "")
            )
        if serial:
            for what, run in (
                ("one by one (Triton's autotuner by itself)", serial),
                (f"shape by shape, each on up to {args.threads} threads (the autotuners here)", per_shape),
                (f"all at once on {args.threads} threads (a whole-forward precompile)", parallel),
            ):
                print(
                    f"compile wall, {what}: {run['wall']:.1f} s ({run['cpu']:.1f} CPU s, "
                    f"{run['cpu'] / run['wall']:.2f} CPUs busy; {serial['wall'] / run['wall']:.2f}x)"
                )
        out["batches"][str(batch)] = {"rows": rows, "summary": summary}
    if args.json:
        write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
