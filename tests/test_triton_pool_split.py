"""Launch 1's pool role with its K (input channels) split over POOL_SPLIT_K programs per pool tile
(reduce_pool.py, the batch-1 configs), against an fp64 plain-PyTorch block.

Only launch 1 runs: its outputs (branch 1 and the pool branch in ``out``, the reductions in
``scratch``) are compared, in NaN-filled buffers, so an element it leaves unwritten fails; launch 2's
channels are not looked at.  Every config is also pinned in test_triton.py's and test_triton_fold.py's
every-config tests; here the shapes are those the split is for (batch 1, 7x7 and 14x14) with enough
input channels that every split runs several K steps, evenly and not.

CPU tests run under TRITON_INTERPRET=1 (tests/conftest.py); the GPU test (marked gpu) runs the same
checks in bf16 at GoogLeNet's own widths.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from inception_fast.testing import TOLERANCE, check_close, reduced_precision_bound

pytest.importorskip("triton")

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
interpreter_only = pytest.mark.skipif(not INTERPRET, reason="CPU tests need TRITON_INTERPRET=1 set before import")

from block_cases import CL, block_reference, make_block  # noqa: E402
from unwritten_reads import poison  # noqa: E402

from inception_fast import geometry  # noqa: E402
from inception_fast.backends.triton import _common, reduce_pool  # noqa: E402
from inception_fast.reference import BLOCK_CONFIGS  # noqa: E402

SPLIT_CONFIGS = [c for c in reduce_pool.CONFIGS if c.kwargs.get("POOL_SPLIT_K", 1) > 1]
MAXPOOL23 = (3, 2, 0, True)
MAXPOOL4 = (2, 2, 0, True)


def _launch1(block, config, pre_pool=None):
    """(out, scratch) of launch 1 alone with a pinned config, into NaN-filled buffers."""
    x = block["x"]
    hw = None if pre_pool is None else tuple(geometry.pool_out(s, *pre_pool) for s in x.shape[2:])
    out, scratch = geometry.empty_outputs(x, block["w_red"], block["w_pool"], block["w3"], block["w5"], hw)
    poison(out)
    poison(scratch)
    reduce_pool.launch_reduce_pool(
        x, block["w_red"], block["b_red"], block["w_pool"], block["b_pool"], out, scratch,
        config=config, pre_pool=pre_pool,
    )  # fmt: skip
    return out, scratch


def _reference(block, pre_pool=None, dtype=torch.float64):
    b = {k: v.to(dtype) for k, v in block.items()}
    if pre_pool is not None:
        k, s, p, ceil = pre_pool
        b["x"] = F.max_pool2d(b["x"], k, s, p, ceil_mode=ceil).contiguous(memory_format=CL)
    return block_reference(**b)


def _launch1_slices(out, scratch, block):
    """What launch 1 writes: branch 1's and the pool branch's channels of out, and scratch."""
    ch1 = block["w_red"].shape[0] - scratch.shape[1]
    return out[:, :ch1], out[:, out.shape[1] - block["w_pool"].shape[0] :], scratch


def _counters(device):
    return reduce_pool._POOL_COUNTERS[reduce_pool._pool_counter_key(torch.empty(0, device=device))]


def _check_split(block, config, pre_pool, what, tol=None, runs=2):
    """Launch 1 ``runs`` times: parity with the reference, the same bits every time, counters back
    at 0."""
    first, *again = (_launch1_slices(*_launch1(block, config, pre_pool), block) for _ in range(runs))
    ref = _launch1_slices(*_reference(block, pre_pool), block)
    assert ref[1].std() > 0.1, "reference pool branch is near zero: the comparison could not fail"
    ref_lowp = ref if tol is not None else _launch1_slices(*_reference(block, pre_pool, block["x"].dtype), block)
    for i, name in enumerate(("branch 1", "pool", "scratch")):
        bound = tol if tol is not None else reduced_precision_bound(ref_lowp[i], ref[i])
        check_close(first[i], ref[i], bound, f"{what}: {name}")
        assert all(torch.equal(first[i], a[i]) for a in again), f"{what}: {name} differs between runs"
    counters = _counters(block["x"].device)
    assert counters.numel() > 0 and not counters.any(), f"{what}: a pool tile counter was left non-zero"


# (in, ch1, ch3red, ch3, ch5red, ch5, pool): launch 2's widths small (only launch 1 runs); a pool
# of 24 channels (a 32-wide tile with a column tail) and reductions sharing branch 1's column tile.
def _cfg(cin):
    return (cin, 8, 12, 8, 4, 8, 24)


def _split(k_pool, split):
    (config,) = (c for c in SPLIT_CONFIGS if (c.kwargs["BLOCK_K_POOL"], c.kwargs["POOL_SPLIT_K"]) == (k_pool, split))
    return config


# (config's pool K step and split, H, W, Cin, pre-pool), every split config at least once: batch 1
# at 7x7 (49 pixels: one ragged 32-row tile) and 14x14 (196: seven tiles); Cin 200 is 13 K steps
# at 16 channels (split 4: 4, 4, 4, 1) and 7 at 32 (split 2: 4, 3; split 4: 2, 2, 2, 1), Cin 256 is
# 16 and 8 (even shares); the folded pre-pools take the 7x7 map from 14x14 and 13x13 inputs.
CASES = [
    ((16, 4), 7, 7, 200, None),
    ((32, 2), 7, 7, 200, None),
    ((32, 2), 14, 14, 256, None),
    ((32, 4), 14, 14, 200, MAXPOOL23),
    ((16, 4), 13, 13, 256, MAXPOOL4),
]


def test_cases_cover_every_split_config():
    assert {id(_split(*c[0])) for c in CASES} == {id(c) for c in SPLIT_CONFIGS}


def test_split_buffers_fit_every_pool_width_and_grow_enough(monkeypatch):
    """The split-K workspace is sized per (pixels, pool width), not reused from another width at
    the same pixel count: 49 pixels are two 32-row tiles, a pool of 24 one 32-wide column tile, of
    100 one 128-wide, of 200 two; each split config's slots hold a [32, width] fp32 tile.  The
    counters, replaced when too few, cover what the launch asks for even past twice the old count.
    (Host-side only; before the kernel tests, which a too-small buffer would run past.)"""
    monkeypatch.setattr(reduce_pool, "_tuned_kernel", reduce_pool.make_tuned_kernel())
    monkeypatch.setattr(reduce_pool, "_POOL_COUNTERS", {})
    x = torch.empty(1, 8, 7, 7)
    for pool, width, col_tiles in ((24, 32, 1), (100, 128, 1), (24, 32, 1), (200, 128, 2)):
        ws, counters = reduce_pool._pool_split_buffers(x, 49, pool, None)
        want = max(2 * col_tiles * c.kwargs["POOL_SPLIT_K"] * 32 * width for c in SPLIT_CONFIGS)
        assert ws.numel() == want, f"pool {pool}: {ws.numel()} workspace elements, want {want}"
        assert counters.numel() >= 2 * col_tiles and not counters.any()
    small = reduce_pool._pool_counters(x, 3)
    assert reduce_pool._pool_counters(x, 2) is small
    grown = reduce_pool._pool_counters(x, 4 * small.numel() + 1)
    assert grown.numel() >= 4 * small.numel() + 1 and not grown.any()


@interpreter_only
@pytest.mark.parametrize("split,h,w,cin,pre_pool", CASES)
def test_pool_split_k_batch1_fp32(split, h, w, cin, pre_pool):
    config = _split(*split)
    block = make_block(_cfg(cin), n=1, h=h, w=w, seed=cin + h)
    what = f"{_common.config_name(config)}, {h}x{w}, Cin {cin}, pre-pool {pre_pool}"
    # The interpreter runs a tile's programs one after the other: a second run (the same bits) is
    # cheap evidence only on the small cases; the GPU test repeats every one.
    _check_split(block, config, pre_pool, what, TOLERANCE["fp32"], runs=2 if h * w < 64 else 1)


@interpreter_only
def test_pool_split_k_propagates_nan():
    """A NaN in one channel of the last split's share makes NaN exactly the pool outputs whose 3x3
    window holds it (every pool channel: it enters the projection) and the reduce outputs of its
    pixel, as PyTorch does; the other values stay right."""
    config = SPLIT_CONFIGS[-1]
    block = make_block(_cfg(200), n=1, h=7, w=7, seed=5)
    block["x"][0, 195, 3, 6] = float("nan")
    out, scratch = _launch1(block, config)
    ref_out, ref_scratch = _reference(block)
    for got, want, name in zip(_launch1_slices(out, scratch, block), _launch1_slices(ref_out, ref_scratch, block),
                               ("branch 1", "pool", "scratch")):  # fmt: skip
        assert got.isnan().any() and torch.equal(got.isnan(), want.isnan()), f"{name}: NaN where PyTorch has none"
        check_close(got.nan_to_num(0.0), want.nan_to_num(0.0), TOLERANCE["fp32"], f"{name} beside the NaN")
    assert out[0, -1, 2:5, 5:7].isnan().all() and not out[0, -1, :, :5].isnan().any()
    assert not _counters(block["x"].device).any()


@interpreter_only
def test_failed_launch_drops_the_counters(monkeypatch):
    """A launch that raises may have left a tile's count part-way: its stream's counters are dropped
    and the next launch gets fresh zeroed ones (and is right)."""
    config = SPLIT_CONFIGS[0]
    block = make_block(_cfg(200), n=1, h=7, w=7, seed=6)
    _launch1(block, config)
    counters = _counters("cpu")
    counters.fill_(1)  # as a launch stopped part-way would leave them

    def fail(*_args, **_kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(_common, "launch", fail)
        with pytest.raises(KeyboardInterrupt):
            _launch1(block, config)
    assert reduce_pool._pool_counter_key(block["x"]) not in reduce_pool._POOL_COUNTERS
    _check_split(block, config, None, "after a failed launch", TOLERANCE["fp32"], runs=1)
    assert _counters("cpu") is not counters


@interpreter_only
def test_autotuned_path_sizes_buffers_for_every_candidate(monkeypatch):
    """The autotuner runs every config on one set of arguments: the workspace and the counters cover
    the split configs with the most pool tiles and slots; the choice then runs again, remembered."""
    from launch_observer import counting_do_bench

    fake_do_bench, benchmarked = counting_do_bench()
    configs = [reduce_pool.SMALL_PROBLEM_CONFIGS[0], *SPLIT_CONFIGS]
    tuned = reduce_pool.make_tuned_kernel(configs, do_bench=fake_do_bench)
    monkeypatch.setattr(reduce_pool, "_tuned_kernel", tuned)
    block = make_block(_cfg(96), n=1, h=7, w=7, seed=7)
    for what in ("autotuned", "tuned config reused"):
        _check_split(block, None, None, what, TOLERANCE["fp32"], runs=1)
    assert len(benchmarked) == len(configs)
    # With the package's configs: past SMALL_PROBLEM_PIXELS the split configs are pruned (no
    # buffers at all); at 3a's batch 1 the largest split config's slots.
    monkeypatch.setattr(reduce_pool, "_tuned_kernel", reduce_pool.make_tuned_kernel())
    ws, counters = reduce_pool._pool_split_buffers(block["x"], _common.SMALL_PROBLEM_PIXELS + 1, 24, None)
    assert ws.numel() == 0 and counters.numel() == 0
    ws, counters = reduce_pool._pool_split_buffers(block["x"], 49, 24, None)
    assert counters.numel() >= 2 and ws.numel() == max(2 * c.kwargs["POOL_SPLIT_K"] * 32 * 32 for c in SPLIT_CONFIGS)


def test_split_configs_are_batch1_only():
    """POOL_SPLIT_K > 1 only in SMALL_PROBLEM_CONFIGS (pruned past SMALL_PROBLEM_PIXELS), and the
    configs without it run the unsplit code (POOL_SPLIT_K 1)."""
    assert SPLIT_CONFIGS and all(c in reduce_pool.SMALL_PROBLEM_CONFIGS for c in SPLIT_CONFIGS)
    unsplit = [c for c in reduce_pool.CONFIGS if c not in SPLIT_CONFIGS]
    assert all(reduce_pool._complete_config(c).kwargs["POOL_SPLIT_K"] == 1 for c in unsplit)
    everything = [reduce_pool._complete_config(c) for c in reduce_pool.CONFIGS]
    kept = reduce_pool._prune_small_only(everything, {"M": _common.SMALL_PROBLEM_PIXELS + 1})
    assert not any(c.kwargs["POOL_SPLIT_K"] > 1 for c in kept)


@pytest.mark.gpu
@pytest.mark.parametrize("name,size", [("inception3a", 28), ("inception4a", 14), ("inception5b", 7)])
def test_gpu_pool_split_k_batch1_bf16(name, size, gpu):
    """Each split config at batch 1 on GoogLeNet's widths in bf16: parity (2x rule), the same bits on
    both runs (a race between a tile's programs would show), counters back at 0; 4a also folded."""
    block = make_block(BLOCK_CONFIGS[name], n=1, h=size, w=size, dtype=torch.bfloat16, device=gpu, seed=19)
    for config in SPLIT_CONFIGS:
        _check_split(block, config, None, f"{name} {_common.config_name(config)}")
    if name == "inception4a":
        block = make_block(BLOCK_CONFIGS[name], n=1, h=28, w=28, dtype=torch.bfloat16, device=gpu, seed=20)
        for config in SPLIT_CONFIGS:
            _check_split(block, config, MAXPOOL23, f"{name} folded {_common.config_name(config)}")


@pytest.mark.gpu
def test_gpu_pool_split_k_in_a_cuda_graph(gpu):
    """Captured in a CUDA graph, a split launch gets counters of its own (zeroed in the graph) and
    leaves them at 0: every replay gives the eager launch's bits."""
    from inception_fast.graphs import capture

    config = SPLIT_CONFIGS[-1]
    block = make_block(BLOCK_CONFIGS["inception4a"], n=1, h=14, w=14, dtype=torch.bfloat16, device=gpu, seed=21)
    eager = _launch1_slices(*_launch1(block, config), block)
    graph, (out, scratch) = capture(lambda: _launch1(block, config))
    for replay in range(3):
        graph.replay()
        torch.cuda.synchronize()
        for got, want in zip(_launch1_slices(out, scratch, block), eager):
            assert torch.equal(got, want), f"replay {replay} differs from the eager launch"
