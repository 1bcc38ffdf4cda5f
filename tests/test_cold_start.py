"""A cold start's compiles: the autotuners compile the configs they are about to benchmark side by
side (backends/triton/_common.py: autotune_bench, precompile_configs), benchmark each for
tuning_bench_ms(), and blocks alike in their launcher-fixed constexprs share binaries
(benchmarks/cold_start.py counts what a first forward compiles)."""

from __future__ import annotations

import json
import os
import threading

import pytest
import torch
from uninterpreted import run_python

from inception_fast.reference import BLOCK_CONFIGS
from inception_fast.testing import TOLERANCE, check_close, reduced_precision_bound

pytest.importorskip("triton")

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
interpreter_only = pytest.mark.skipif(not INTERPRET, reason="CPU tests need TRITON_INTERPRET=1 set before import")

from block_cases import ODD, block_reference, make_block  # noqa: E402
from launch_observer import counting_do_bench  # noqa: E402

from inception_fast.backends.triton import _common, branch_convs, reduce_pool  # noqa: E402
from inception_fast.backends.triton import block as tb  # noqa: E402


class _Config:
    """A stand-in triton.Config: kwargs and the launch options."""

    def __init__(self, **kwargs):
        self.kwargs, self.pre_hook = kwargs, None

    def all_kwargs(self):
        return {**self.kwargs, "num_warps": 4}


class _Kernel:
    """A stand-in JIT kernel whose warmup (the compile) records its calls and can wait for others."""

    arg_names = ["x", "M"]

    def __init__(self, barrier=None, failing=()):
        self.calls, self.threads, self.barrier, self.failing = [], set(), barrier, failing

    def warmup(self, *args, grid, **kwargs):
        self.threads.add(threading.current_thread().name)
        if self.barrier is not None:
            self.barrier.wait()  # breaks (raises) unless every config compiles at the same time
        if kwargs.get("BLOCK") in self.failing:
            raise RuntimeError("out of resources")
        self.calls.append((args, grid, kwargs))


class _Tuned:
    """A stand-in autotuner: configs and an early prune that keeps BLOCK <= M."""

    def __init__(self, blocks):
        self.configs = [_Config(BLOCK=b) for b in blocks]

    @staticmethod
    def early_config_prune(configs, named_args, **meta):
        assert set(named_args) == {"x", "M"} and meta == {"DTYPE": "fp32"}
        return [c for c in configs if c.kwargs["BLOCK"] <= named_args["M"]]


def test_precompile_compiles_the_pruned_configs_side_by_side(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    tuned, args, meta = _Tuned([16, 32, 64, 128]), ("x", 64), {"DTYPE": "fp32"}

    def grid(cfg):
        return (1,)

    # Three configs survive the prune; on three threads they compile together (the barrier only
    # opens with all three inside warmup at once), each with the launch's args and its own kwargs.
    kernel = _Kernel(barrier=threading.Barrier(3, timeout=10))
    assert _common.precompile_configs(kernel, tuned, grid, args, meta, threads=3) == 3
    assert sorted(c[2]["BLOCK"] for c in kernel.calls) == [16, 32, 64]
    assert all(
        c[0] == args and c[1] is grid and c[2]["DTYPE"] == "fp32" and c[2]["num_warps"] == 4 for c in kernel.calls
    )
    assert len(kernel.threads) == 3 and threading.current_thread().name not in kernel.threads
    # A config that does not compile is left to the benchmark (which reports it): not an error here.
    kernel = _Kernel(failing=(32,))
    assert _common.precompile_configs(kernel, tuned, grid, args, meta, threads=4) == 2
    # One thread, or one config: nothing to overlap, Triton compiles inside the benchmark as always.
    kernel = _Kernel()
    assert _common.precompile_configs(kernel, tuned, grid, args, meta, threads=1) == 0
    assert _common.precompile_configs(kernel, _Tuned([16]), grid, args, meta, threads=4) == 0
    assert kernel.calls == []
    # An autotuner without the attributes read here: no precompile, no error.
    assert _common.precompile_configs(kernel, object(), grid, args, meta, threads=4) == 0
    # Configs with a pre_hook (the TMA kernels': it gives the descriptors the config's boxes, on
    # which Triton specialises): each compiles with the hook run on its own copy of the
    # descriptors, and the launch's descriptor is left as it was.
    from triton.tools.tensor_descriptor import TensorDescriptor

    def boxes(nargs):
        nargs["x"].block_shape = [nargs["BLOCK"], 8]

    hooked = _Tuned([16, 32, 64])
    for c in hooked.configs:
        c.pre_hook = boxes
    desc = TensorDescriptor(torch.zeros(64, 8), [64, 8], [8, 1], [4, 8])
    assert _common.precompile_configs(kernel, hooked, grid, (desc, 64), meta, threads=3) == 3
    assert sorted((c[0][0].block_shape[0], c[2]["BLOCK"]) for c in kernel.calls) == [(16, 16), (32, 32), (64, 64)]
    assert all(c[0][0] is not desc and c[0][0].base is desc.base and c[0][1] == 64 for c in kernel.calls)
    assert desc.block_shape == [4, 8]
    # A hook that edits the descriptor's lists in place edits the copy's own lists.

    def in_place(nargs):
        nargs["x"].block_shape[0] = nargs["BLOCK"]
        nargs["x"].shape[0] = 32
        nargs["x"].strides[0] = 16

    config = _Config(BLOCK=16)
    config.pre_hook = in_place
    copied, m = _common.config_args(kernel, (desc, 64), {}, config)
    assert (copied.block_shape, copied.shape, copied.strides, m) == ([16, 8], [32, 8], [16, 1], 64)
    assert (desc.block_shape, desc.shape, desc.strides) == ([4, 8], [64, 8], [8, 1])


def test_compile_threads_and_tuning_time_settings(monkeypatch):
    monkeypatch.delenv(_common.ENV_COMPILE_THREADS, raising=False)
    assert 1 <= _common.compile_threads() <= 16
    monkeypatch.setenv(_common.ENV_COMPILE_THREADS, "3")
    assert _common.compile_threads() == 3
    monkeypatch.setenv(_common.ENV_COMPILE_THREADS, "0")
    assert _common.compile_threads() == 1
    monkeypatch.setenv(_common.ENV_COMPILE_THREADS, "many")
    with pytest.warns(UserWarning, match="INCEPTION_FAST_COMPILE_THREADS='many' is not an integer"):
        assert _common.compile_threads() == 1
    monkeypatch.delenv(_common.ENV_TUNING_MS, raising=False)
    assert _common.tuning_bench_ms() == _common.TUNING_BENCH_MS
    monkeypatch.setenv(_common.ENV_TUNING_MS, "25,100")
    assert _common.tuning_bench_ms() == (25.0, 100.0)
    for bad in ("25", "a,b", "5,0", "-1,10", "nan,25", "5,inf", "1e308,1e308"):
        monkeypatch.setenv(_common.ENV_TUNING_MS, bad)
        with pytest.warns(UserWarning, match="is not 'warmup,rep' in ms"):
            assert _common.tuning_bench_ms() == _common.TUNING_BENCH_MS


@interpreter_only
def test_autotuned_launch_compiles_its_configs_before_the_first_benchmark(monkeypatch, poisoned):
    """Triton's own autotuner with the package's benchmark (autotune_bench): the first benchmark of
    a new shape compiles every config the autotuner prunes to, on worker threads, before any is
    timed; each is timed for tuning_bench_ms(); a shape already tuned compiles nothing more; the
    block is still right."""
    import triton

    fake_do_bench, benchmarked = counting_do_bench()
    timed_for = []

    def do_bench(fn, warmup, rep, quantiles=None):
        timed_for.append((warmup, rep))
        return fake_do_bench(fn, quantiles=quantiles)

    monkeypatch.setattr(triton.testing, "do_bench", do_bench)
    monkeypatch.setenv(_common.ENV_COMPILE_THREADS, "4")
    monkeypatch.setenv(_common.ENV_TUNING_MS, "2,7")
    configs = [
        triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16}),
        triton.Config({"BLOCK_M": 32, "BLOCK_N": 16, "BLOCK_K": 32}),
    ]
    # Launch 2 gets the same tiles split two ways, and one unsplit config, which its prune drops
    # for this small problem (split-K configs only).
    splits = [triton.Config({**c.kwargs, "SPLIT_K": 2}) for c in configs]
    tuned_1 = reduce_pool.make_tuned_kernel(configs, do_bench=_common.autotune_bench)
    tuned_2 = branch_convs.make_tuned_kernel(splits + configs[:1], do_bench=_common.autotune_bench)
    monkeypatch.setattr(reduce_pool, "_tuned_kernel", tuned_1)
    monkeypatch.setattr(branch_convs, "_tuned_kernel", tuned_2)
    compiled = []

    def recorder(kernel):
        def warmup(*args, grid, **kwargs):
            # Before any benchmark of this kernel's shape, off the launching thread.
            compiled.append((kernel, len(benchmarked), threading.current_thread().name, kwargs))

        return warmup

    for kernel in (reduce_pool._reduce_pool_kernel, branch_convs._branch_convs_kernel):
        monkeypatch.setattr(kernel, "warmup", recorder(kernel), raising=False)

    block = make_block(ODD, k5=3, n=1, h=3, w=4, seed=5)
    out, scratch = tb.block_forward(**block)
    ref_out, ref_scratch = block_reference(**{k: v.double() for k, v in block.items()})
    assert ref_out.std() > 0.1, "reference output is near zero: the comparison could not fail"
    check_close(scratch, ref_scratch, TOLERANCE["fp32"], "scratch")
    check_close(out, ref_out, TOLERANCE["fp32"], "out")
    assert len(benchmarked) == 4 and set(timed_for) == {(2.0, 7.0)}
    main = threading.current_thread().name
    for kernel, tuned, before in (
        (reduce_pool._reduce_pool_kernel, tuned_1, 0),
        (branch_convs._branch_convs_kernel, tuned_2, 2),
    ):
        mine = [c for c in compiled if c[0] is kernel]
        # Each pruned config once, with the launcher's constexprs (the launch's specialization).
        wanted = [c.all_kwargs() for c in tuned.configs if c.kwargs.get("SPLIT_K", 2) > 1]
        got = [{k: c[3][k] for k in wanted[0]} for c in mine]
        assert sorted(map(str, got)) == sorted(map(str, wanted)) and all("DOT_PRECISION" in c[3] for c in mine)
        assert all(c[1] == before and c[2] != main for c in mine)
    # The same shape again: the memo launches the chosen configs; nothing compiles or benchmarks.
    tb.block_forward(**make_block(ODD, k5=3, n=1, h=3, w=4, seed=6))
    assert len(compiled) == 4 and len(benchmarked) == 4
    assert getattr(_common._PENDING, "launch", None) is None


def test_blocks_alike_share_binaries(tmp_path):
    """benchmarks/cold_start.py on the first forward at batch 1 and 256 (a subprocess: this process
    may run the interpreter; counts only, nothing compiled): launch 1 and launch 2 compile one
    binary per config per group of blocks alike in their launcher-fixed constexprs and arguments
    equal to 1, not one per block (alignment marks on the *_div_unit arguments would split them)."""
    run = run_python(
        "-m", "benchmarks.cold_start", "--count-only", "--batches", "1,256", "--json", tmp_path / "c.json", timeout=300
    )
    found = json.loads((tmp_path / "c.json").read_text())
    assert "| launch1 | 9 |" in run.stdout
    # Up to SMALL_PROBLEM_PIXELS (batch 1) the autotuners try their small-problem configs alone.
    n_split = sum(c.kwargs.get("SPLIT_K", 1) > 1 for c in branch_convs.CONFIGS)
    n_configs = {
        ("1", "launch1"): len(reduce_pool.SMALL_PROBLEM_CONFIGS),
        ("256", "launch1"): len(reduce_pool.CONFIGS) - len(reduce_pool.SMALL_PROBLEM_CONFIGS),
        ("1", "launch2"): n_split,
        ("256", "launch2"): len(branch_convs.CONFIGS) - n_split,
    }
    for batch in ("1", "256"):
        rows = {r["kernel"]: r for r in found["batches"][batch]["rows"]}
        for kernel in ("launch1", "launch2"):
            r, configs = rows[kernel], n_configs[batch, kernel]
            assert r["launches"] == 9 and r["keys"] == 9 and r["bench_runs"] == 9 * configs, (batch, r)
            assert r["groups"] < r["launches"] and r["binaries"] == r["groups"] * configs, (batch, r)


def _cold_start(script: str, *argv) -> dict:
    """``script`` run after ``from benchmarks import cold_start as cs`` in a subprocess without
    TRITON_INTERPRET (cold_start refuses it); the JSON object its last stdout line prints."""
    run = run_python("-c", "from benchmarks import cold_start as cs\n" + script, *argv, timeout=300)
    return json.loads(run.stdout.splitlines()[-1])


def test_cold_start_lists_every_launch_of_the_first_forward():
    """cold_start.launches: each launch the module docstring names, once per stage it runs on (the
    stem with and without its pool, conv1 over aligned rows, conv2 and conv3, the four max pools,
    both launches of each block on Triton and on TMA, the head); the fold and the joined pairs
    (neighbours of one map size) only where INCEPTION_FAST_EXTRA_CANDIDATES offers them; the block
    backward only with ``train``.  Launch 1 is given launch 2's split-K counters."""
    script = (
        "import json, os\n"
        "from benchmarks.kernel_stats import FOLDS, POOLS, SIZES, STEM_CONVS\n"
        "got = {}\n"
        "for extra in ('', 'fold', 'chain'):\n"
        "    os.environ['INCEPTION_FAST_EXTRA_CANDIDATES'] = extra\n"
        "    got[extra] = [r[:2] for r in cs.launches(1, 'bf16', train=extra == 'chain')]\n"
        "got['sm_80'] = [r[:2] for r in cs.launches(1, 'bf16', arch=80)]\n"
        "from inception_fast.backends.triton._common import autotuned_configs\n"
        "zeroes = []\n"
        "for batch in (1, 256):\n"
        "    rows = cs.launches(batch)\n"
        "    for block in SIZES:\n"
        "        l1, l2 = (next(r for r in rows if r[:2] == (k, block)) for k in ('launch1', 'launch2'))\n"
        "        split = any(c.kwargs.get('SPLIT_K', 1) > 1 for c in autotuned_configs(*l2[2:]))\n"
        "        zeroes.append([dict(zip(l1[2].arg_names, l1[4]))['n_counters'], split])\n"
        "print(json.dumps({'got': got, 'sizes': SIZES, 'folds': list(FOLDS), 'pools': list(POOLS),\n"
        "                  'convs': list(STEM_CONVS), 'zeroes': zeroes}))\n"
    )
    found = _cold_start(script)
    blocks, sizes = list(found["sizes"]), found["sizes"]
    base = {
        "stem": ["conv_pool", "conv"],
        "stem_rows_pad": ["conv1"],
        "stem_rows": ["conv1"],
        "stem_rows_pool": ["conv1"],
        "conv_relu": found["convs"],
        "maxpool": found["pools"],
        **{kernel: blocks for kernel in ("launch1", "launch2", "launch1_tma", "launch2_tma")},
        "head_pool": ["head"],
        "head_linear": ["head"],
    }
    fold = dict(base, launch1_fold=[b for b in blocks if b in found["folds"]])
    joined = [f"{a}>{b}" for a, b in zip(blocks, blocks[1:]) if sizes[a] == sizes[b]]
    chain = dict(base, joined=joined, bwd_a=blocks, bwd_b=blocks)
    assert fold["launch1_fold"] and joined and len(joined) < len(blocks) - 1
    # Below sm_90 auto offers no "hopper" backend: no TMA launch compiles (the chain still offered
    # there, without train).
    sm80 = {k: v for k, v in chain.items() if k not in ("launch1_tma", "launch2_tma", "bwd_a", "bwd_b")}
    for offered, want in (("", base), ("fold", fold), ("chain", chain), ("sm_80", sm80)):
        got: dict = {}
        for kernel, launch in found["got"][offered]:
            got.setdefault(kernel, []).append(launch)
        assert got == want, offered
    # Launch 1 zeroes the counters of launch 2's split-K configs, where its prune keeps them.
    assert any(split for _n, split in found["zeroes"]) and not all(split for _n, split in found["zeroes"])
    assert all((n > 0) == split for n, split in found["zeroes"]), found["zeroes"]


def test_cold_start_counts_binaries_keys_and_benchmark_runs_per_launch():
    """cold_start.binaries fed chosen launches: one launch compiles each config its autotuner keeps
    after the early prune (all distinct binaries: configs differing only in warps or stages too)
    and benchmarks them unless only one is left; the same launches twice add launches only (keys,
    benchmark runs and binaries counted once); a launch with a misaligned tensor is another binary
    of the same group and key; two batches with no argument equal to 1 (and the same launcher
    constexprs) are one group; a launch with another launcher constexpr is another group and key."""
    script = (
        "import json, torch\n"
        "from inception_fast.backends.triton._common import autotuned_configs\n"
        "launches = cs.launches\n"
        "real = launches(1)\n"
        "def counts(rows):\n"
        "    cs.launches = lambda *a, **k: rows\n"
        "    return cs.binaries(1)[1]\n"
        "out = {'single': [], 'twice': [counts(real), counts(real * 2)]}\n"
        "for row in real:\n"
        "    configs = autotuned_configs(*row[2:])\n"
        "    n_kw = len({(tuple(sorted(c.kwargs.items())), c.num_warps, c.num_stages) for c in configs})\n"
        "    out['single'].append([row[0], len(configs), n_kw, counts([row])[row[0]]])\n"
        "row = next(r for r in real if r[0] == 'maxpool')\n"
        "t = next(a for a in row[4] if isinstance(a, torch.Tensor))\n"
        "odd = torch.empty(t.numel() + 1, dtype=t.dtype)[1:].as_strided(t.shape, t.stride())\n"
        "moved = row[:4] + (tuple(odd if a is t else a for a in row[4]),) + row[5:]\n"
        "out['misaligned'] = [len(autotuned_configs(*row[2:])), counts([row, moved])['maxpool']]\n"
        "b2, b3 = (next(r for r in launches(b) if r[0] == 'maxpool') for b in (2, 3))\n"
        "out['batches'] = counts([b2, b3])['maxpool']\n"
        "out['meta'] = counts([row, row[:5] + (dict(row[5], PAD=1 - row[5]['PAD']),)])['maxpool']\n"
        "print(json.dumps(out))\n"
    )
    found = _cold_start(script)
    for kernel, n_configs, n_distinct, c in found["single"]:
        assert n_distinct == n_configs > 0, kernel
        want = {"launches": 1, "keys": 1, "groups": 1, "binaries": n_configs}
        assert c == dict(want, bench_runs=n_configs if n_configs > 1 else 0), kernel
    assert any(n == 1 for _k, n, _d, _c in found["single"])  # stem_rows_pad: one config, no benchmark
    once, twice = found["twice"]
    assert twice == {k: dict(c, launches=2 * c["launches"]) for k, c in once.items()}
    n_configs, c = found["misaligned"]
    assert c == {"launches": 2, "keys": 1, "groups": 1, "bench_runs": n_configs, "binaries": 2 * n_configs}
    assert found["batches"]["groups"] == 1 and found["batches"]["launches"] == 2
    # Another PAD (a launcher constexpr the autotuner keys on): another key and group.
    assert found["meta"]["keys"] == 2 and found["meta"]["groups"] == 2


# main() with the compiles stood in for: triton.compile sleeps a moment per binary (recording which
# binary's launch, when, for which arch), compile_workers answers a fixed record; every call is recorded.
_MAIN_SCRIPT = """
import json, os, sys, time
import triton
from inception_fast.backends.triton._common import tuning_bench_ms
real_binaries, real_compile_all = cs.binaries, cs.compile_all
calls = {"binaries": [], "passes": [], "workers": []}
index_of = {}
def binaries(batch, dtype, train=False, arch=90):
    found, counts = real_binaries(batch, dtype, train, arch)
    index_of.update({id(src): index for _label, src, _options, index in found.values()})
    calls["binaries"].append([batch, dtype, train, arch])
    return found, counts
def compile(src, target, options):
    start = time.perf_counter()
    time.sleep(0.0002 * options["num_warps"])
    compiled.append([index_of[id(src)], start, time.perf_counter(), target.arch])
    caches.add((os.environ["TRITON_CACHE_DIR"], triton.knobs.cache.dir))
def compile_all(found, arch, threads, per_launch=False):
    compiled.clear()
    per = real_compile_all(found, arch, threads, per_launch)
    calls["passes"].append([arch, threads, per_launch, per, list(compiled)])
    return per
WORKERS = {"wall": 2.0, "cpu": 0.5, "jobs": 7, "compiled": 6, "failed": 1, "loads": 7, "hits": 7}
def compile_workers(batch, dtype, train, arch, workers):
    calls["workers"].append([batch, dtype, train, arch, workers])
    return dict(WORKERS, workers=workers)
compiled, caches = [], set()
triton.compile = compile
cs.binaries, cs.compile_all, cs.compile_workers = binaries, compile_all, compile_workers
os.environ["TRITON_CACHE_DIR"] = "the-users-cache"
cs.main(sys.argv[1:])
calls["caches"] = [[env, knob, os.path.exists(env)] for env, knob in sorted(caches)]
calls["cache_after"] = [os.environ["TRITON_CACHE_DIR"], triton.knobs.cache.dir]
calls["json"] = json.load(open(sys.argv[sys.argv.index("--json") + 1]))
calls["do_bench_ms"], calls["tuning_ms"], calls["stub_workers"] = cs.DO_BENCH_MS, tuning_bench_ms(), WORKERS
print(json.dumps(calls))
"""


@pytest.mark.parametrize("passes", ["all", "--workers-only", "--count-only"])
def test_cold_start_reports_each_pass_per_kernel(tmp_path, passes):
    """cold_start.main with the compiles stood in for: per batch it counts with the asked dtype and
    training flag, then runs the three thread passes (one by one; launch by launch, no two launches'
    binaries at once; all at once on --threads) unless --workers-only or --count-only, and the
    worker pass unless --count-only; each row's compile seconds are its own kernel's binaries' in
    the one-by-one pass; the summary adds up the rows, prices the benchmark runs, and carries each
    pass's wall and CPU seconds; the JSON names arch, dtype, threads and the environment.  The
    --count-only run is for sm_80: no TMA launch counted."""
    arch = 80 if passes == "--count-only" else 90
    argv = ["--batches", "1,2", "--dtype", "fp16", "--arch", str(arch), "--threads", "2", "--json", tmp_path / "c.json"]
    if passes == "all":
        argv += ["--train"]
    else:
        argv[1] = "1"
        argv += [passes]
    calls = _cold_start(_MAIN_SCRIPT, *argv)
    found, batches = calls["json"], [int(b) for b in argv[1].split(",")]
    train = passes == "all"
    assert {k: found[k] for k in ("arch", "dtype", "threads")} == {"arch": f"sm_{arch}", "dtype": "fp16", "threads": 2}
    assert found["environment"]["device"] == "cpu" and found["environment"]["torch"] == torch.__version__
    assert calls["binaries"] == [[b, "fp16", train, arch] for b in batches]
    assert list(found["batches"]) == argv[1].split(",")
    want_passes = [[90, 1, False], [90, 2, True], [90, 2, False]] * len(batches) if passes == "all" else []
    assert [p[:3] for p in calls["passes"]] == want_passes
    want_workers = [] if passes == "--count-only" else [[b, "fp16", train, arch, 2] for b in batches]
    assert calls["workers"] == want_workers
    for i, batch in enumerate(argv[1].split(",")):
        rows, summary = found["batches"][batch]["rows"], found["batches"][batch]["summary"]
        assert any(r["kernel"] in ("launch1_tma", "launch2_tma") for r in rows) == (arch >= 90)
        for k in ("launches", "keys", "bench_runs", "binaries"):
            assert summary[k] == sum(r[k] for r in rows), k
        runs = summary["bench_runs"]
        assert summary["bench_estimate_s"] == pytest.approx(runs * calls["do_bench_ms"] / 1e3)
        assert summary["bench_estimate_package_s"] == pytest.approx(runs * sum(calls["tuning_ms"]) / 1e3)
        assert summary.get("workers") == (None if passes == "--count-only" else dict(calls["stub_workers"], workers=2))
        if passes != "all":
            assert all(r["compile_s"] is None and r["longest_s"] is None for r in rows)
            assert "serial_s" not in summary
            continue
        serial, per_shape, parallel = (p[3] for p in calls["passes"][3 * i : 3 * i + 3])
        for r in rows:
            times = serial[r["kernel"]]
            assert len(times) == len(per_shape[r["kernel"]]) == len(parallel[r["kernel"]]) == r["binaries"], r
            assert r["compile_s"] == pytest.approx(sum(times)) and r["longest_s"] == max(times), r
        for name, run in (("serial", serial), ("per_shape", per_shape), ("parallel", parallel)):
            assert (summary[f"{name}_s"], summary[f"{name}_cpu_s"]) == (run["wall"], run["cpu"]), name
        # Launch by launch: each launch's binaries compile after every earlier launch's are done.
        compiles = calls["passes"][3 * i + 1][4]
        assert all(c[3] == 90 for c in compiles) and len(compiles) == summary["binaries"]
        for index, start, _end, _arch in compiles:
            assert all(end <= start for j, _s, end, _a in compiles if j < index), index
    # Each pass compiled into a cache of its own (Triton's variable and knob alike), removed after
    # it; the user's cache is Triton's again afterwards.
    assert calls["cache_after"] == ["the-users-cache"] * 2
    assert len(calls["caches"]) == len(calls["passes"]) == len({env for env, _k, _e in calls["caches"]})
    for env, knob, exists in calls["caches"]:
        assert env == knob and os.path.basename(env).startswith("cold_start_") and not exists, env


def test_cold_start_refuses_bad_arguments_in_one_line(tmp_path):
    """cold_start's command line: a bad --batches, --threads, --arch or --json, or --count-only with
    --workers-only, is one argparse error (exit 2) before anything is counted."""
    script = (
        "import contextlib, io, json, sys\n"
        "cs.binaries = lambda *a, **k: sys.exit('counted')\n"
        "out = []\n"
        "for argv in json.loads(sys.argv[1]):\n"
        "    err = io.StringIO()\n"
        "    with contextlib.redirect_stderr(err):\n"
        "        try:\n"
        "            cs.main(argv)\n"
        "            code = 0\n"
        "        except SystemExit as exc:\n"
        "            code = exc.code\n"
        "    out.append([code, err.getvalue()])\n"
        "print(json.dumps(out))\n"
    )
    cases = [
        (["--batches", "1,x"], "--batches must be comma-separated integers, got '1,x'"),
        (["--batches", "1,0"], "--batches and --threads must be positive"),
        (["--threads", "0"], "--batches and --threads must be positive"),
        (["--arch", "75"], "--arch 75: expected a compute capability x10"),
        (["--json", str(tmp_path / "no" / "c.json")], f"--json {tmp_path / 'no' / 'c.json'}: cannot write there"),
        (["--count-only", "--workers-only"], "argument --workers-only: not allowed with argument --count-only"),
        (["--workers-only", "--threads", "1"], "--workers-only needs --threads 2 or more"),
    ]
    got = _cold_start(script, json.dumps([argv for argv, _m in cases]))
    for (argv, message), (code, err) in zip(cases, got):
        assert code == 2 and message in err and "Traceback" not in err, (argv, err)


def test_cold_start_worker_pass_counts_the_loads_the_cache_answered():
    """cold_start.compile_workers with the workers stood in for (one job handed out, which failed):
    the jobs recorded through the launch's own warmup, handed out, failed, and loaded back in this
    process: a load the workers left uncompiled is a load, not a cache hit (one small binary
    compiled here for sm_90)."""
    script = (
        "import json, os\n"
        "from concurrent.futures import Future\n"
        "import triton\n"
        "from inception_fast.backends.triton import compile_pool\n"
        "real, out = cs.launches, {}\n"
        "os.environ['TRITON_CACHE_DIR'] = 'the-users-cache'\n"
        "cs.launches = lambda *a, **k: [r for r in real(*a, **k) if r[0] == 'stem_rows_pad']\n"
        "def submit(recorded, force=False):\n"
        "    out['cache'] = [os.environ['TRITON_CACHE_DIR'], triton.knobs.cache.dir]\n"
        "    out['recorded'], future = len(recorded), Future()\n"
        "    future.set_exception(RuntimeError('no worker'))\n"
        "    return [future]\n"
        "compile_pool.submit, compile_pool.wait = submit, lambda futures: 0\n"
        "out['workers'] = cs.compile_workers(1, 'bf16', False, 90, 2)\n"
        "out['threads'] = os.environ[compile_pool.ENV_COMPILE_THREADS]\n"
        "out['after'] = [os.environ['TRITON_CACHE_DIR'], triton.knobs.cache.dir, os.path.exists(out['cache'][0])]\n"
        "print(json.dumps(out))\n"
    )
    found = _cold_start(script)
    assert found["recorded"] == 1 and found["threads"] == "2"
    # The jobs went out with Triton's cache at a new directory, removed afterwards, and the user's
    # cache restored.
    env, knob = found["cache"]
    assert env == knob and os.path.basename(env).startswith("cold_start_"), found["cache"]
    assert found["after"] == ["the-users-cache", "the-users-cache", False]
    w = {k: v for k, v in found["workers"].items() if k not in ("wall", "cpu")}
    assert w == {"workers": 2, "jobs": 1, "compiled": 0, "failed": 1, "loads": 1, "hits": 0}


def test_cold_start_one_thread_leaves_the_worker_pass_out(tmp_path):
    """cold_start.main with --threads 1: the thread passes run (one by one, on one thread), the
    worker pass does not (the compile pool starts no fewer than two workers), and the summary holds
    no worker figures."""
    calls = _cold_start(_MAIN_SCRIPT, "--batches", "1", "--threads", "1", "--json", tmp_path / "c.json")
    assert [p[:3] for p in calls["passes"]] == [[90, 1, False], [90, 1, True], [90, 1, False]]
    assert calls["workers"] == [] and "workers" not in calls["json"]["batches"]["1"]["summary"]


def test_cold_start_worker_pass_says_when_no_worker_started(tmp_path):
    """cold_start.compile_workers where the compile pool hands out no job (it found room for fewer
    than two workers): the pass is reported as not measured, with the jobs recorded and the reason;
    main prints that reason instead of a wall time for zero binaries, and the JSON summary holds it."""
    script = (
        "import contextlib, io, json, sys\n"
        "from inception_fast.backends.triton import compile_pool\n"
        "real, out = cs.launches, {}\n"
        "cs.launches = lambda *a, **k: [r for r in real(*a, **k) if r[0] == 'stem_rows_pad']\n"
        "compile_pool.submit = lambda recorded, force=False: []\n"
        "out['workers'] = cs.compile_workers(1, 'bf16', False, 90, 2)\n"
        "cs.compile_workers = lambda *a: out['workers']\n"
        "printed = io.StringIO()\n"
        "with contextlib.redirect_stdout(printed):\n"
        "    cs.main(['--batches', '1', '--threads', '2', '--workers-only', '--json', sys.argv[1]])\n"
        "out['printed'] = printed.getvalue()\n"
        "out['json'] = json.load(open(sys.argv[1]))['batches']['1']['summary']\n"
        "print(json.dumps(out))\n"
    )
    found = _cold_start(script, tmp_path / "c.json")
    w = found["workers"]
    assert found["json"]["workers"] == w
    assert {k: w[k] for k in ("workers", "jobs")} == {"workers": 2, "jobs": 1} and "no workers" in w["skipped"]
    assert f"compile wall in worker processes: not measured ({w['skipped']})" in found["printed"]
    assert "binaries (" not in found["printed"]


@pytest.mark.gpu
def test_gpu_autotuners_precompile_then_benchmark(gpu, monkeypatch, tmp_path):
    """On the GPU: a new shape's first launch through an autotuner (Triton's disk cache empty, so
    it benchmarks) compiles every config on worker threads first, with the launch's CUDA tensors,
    and the block is right (2 configs per launch: few new binaries)."""
    import triton

    # An empty disk cache, so the autotuners benchmark (a result on disk would skip it).
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    if hasattr(getattr(triton, "knobs", None), "cache"):
        monkeypatch.setattr(triton.knobs.cache, "dir", str(tmp_path))
    monkeypatch.setenv(_common.ENV_COMPILE_THREADS, "4")
    real, compiled = _common.precompile_configs, []

    def spy(*args, **kwargs):
        compiled.append(real(*args, **kwargs))
        return compiled[-1]

    monkeypatch.setattr(_common, "precompile_configs", spy)
    monkeypatch.setattr(
        reduce_pool,
        "_tuned_kernel",
        reduce_pool.make_tuned_kernel(reduce_pool.CONFIGS[:2], do_bench=_common.autotune_bench),
    )
    monkeypatch.setattr(
        branch_convs,
        "_tuned_kernel",
        branch_convs.make_tuned_kernel(branch_convs.CONFIGS[:2], do_bench=_common.autotune_bench),
    )
    # 3 images of 28x28: 2352 pixels, past SMALL_PROBLEM_PIXELS (the prune keeps both configs).
    block = make_block(BLOCK_CONFIGS["inception3a"], k5=3, n=3, h=28, w=28, dtype=torch.bfloat16, device=gpu, seed=21)
    out, scratch = tb.block_forward(**block)
    torch.cuda.synchronize()
    assert compiled == [2, 2]
    ref64_out, ref64_scratch = block_reference(**{k: v.double() for k, v in block.items()})
    reflp_out, reflp_scratch = block_reference(**block)
    assert ref64_out.std() > 0.1, "reference output is near zero: the comparison could not fail"
    check_close(scratch, ref64_scratch, reduced_precision_bound(reflp_scratch, ref64_scratch), "scratch")
    check_close(out, ref64_out, reduced_precision_bound(reflp_out, ref64_out), "out")


@pytest.mark.gpu
def test_gpu_tma_autotuners_precompile_the_binaries_they_benchmark(hopper_gpu, monkeypatch, tmp_path):
    """The hopper block's autotuners (reduce_pool_tma, branch_convs_tma; 2 configs each, each with a
    pre_hook that sets the TMA descriptors' boxes): the precompile compiles both configs, each on
    its own copies of the descriptors (_common.config_args), into the specialization the
    benchmark then launches, so the JIT's cache does not grow during the benchmark; the block is
    right."""
    import triton

    from inception_fast.backends.triton import branch_convs_tma, reduce_pool_tma

    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    if hasattr(getattr(triton, "knobs", None), "cache"):
        monkeypatch.setattr(triton.knobs.cache, "dir", str(tmp_path))
    monkeypatch.setenv(_common.ENV_COMPILE_THREADS, "4")
    dev = torch.cuda.current_device()
    kernels = (reduce_pool_tma._reduce_pool_tma_kernel, branch_convs_tma._branch_convs_tma_kernel)
    # The JIT's in-memory cache of each kernel (triton 3.6/3.8: device_caches[device] is
    # (kernel_cache, kernel_key_cache, target, backend, binder)), emptied for this test (restored
    # afterwards), so that binaries other tests compiled cannot hide a benchmark's compile.
    caches = [k.device_caches[dev][0] for k in kernels]
    for cache in caches:
        for key in list(cache):
            monkeypatch.delitem(cache, key)
    real, compiled, after_precompile = _common.precompile_configs, [], {}

    def spy(kernel, *args, **kwargs):
        compiled.append(real(kernel, *args, **kwargs))
        after_precompile[kernel] = len(kernel.device_caches[dev][0])
        return compiled[-1]

    monkeypatch.setattr(_common, "precompile_configs", spy)
    monkeypatch.setattr(
        reduce_pool_tma,
        "_tuned_kernel",
        reduce_pool_tma.make_tuned_kernel(reduce_pool_tma.CONFIGS[:2], do_bench=_common.autotune_bench),
    )
    monkeypatch.setattr(
        branch_convs_tma,
        "_tuned_kernel",
        branch_convs_tma.make_tuned_kernel(branch_convs_tma.CONFIGS[:2], do_bench=_common.autotune_bench),
    )
    # 3 images of 28x28: 2352 pixels, past SMALL_PROBLEM_PIXELS (both configs kept: bf16 fits every
    # one, and neither launch-2 config swaps A and B).
    block = make_block(
        BLOCK_CONFIGS["inception3a"], k5=3, n=3, h=28, w=28, dtype=torch.bfloat16, device=hopper_gpu, seed=22
    )
    assert reduce_pool_tma.tma_unsupported_reason(block["x"], block["w_red"]) is None
    out, scratch = tb.block_forward_tma(**block)
    torch.cuda.synchronize()
    assert compiled == [2, 2]
    assert set(after_precompile) == set(kernels)
    for kernel, cache in zip(kernels, caches):
        # Two binaries each, made by the precompile; the benchmark and the launch compiled none.
        assert after_precompile[kernel] == 2 and len(cache) == 2, (kernel, after_precompile[kernel], len(cache))
    ref64_out, ref64_scratch = block_reference(**{k: v.double() for k, v in block.items()})
    reflp_out, reflp_scratch = block_reference(**block)
    assert ref64_out.std() > 0.1, "reference output is near zero: the comparison could not fail"
    check_close(scratch, ref64_scratch, reduced_precision_bound(reflp_scratch, ref64_scratch), "scratch")
    check_close(out, ref64_out, reduced_precision_bound(reflp_out, ref64_out), "out")
