"""The Triton backend (inception_fast/backends/triton/) against an fp64 plain-PyTorch block.

Both launches run on random packed weights in the documented layout (see inception_fast.backends)
and are compared with F.conv2d / F.max_pool2d in float64 from the very same weights.  Outputs are
NaN-poisoned before the kernels run, so an element no kernel writes fails the comparison.

* CPU: the kernels run under TRITON_INTERPRET=1 (tests/conftest.py sets it before triton is
  imported; set it yourself when running this file alone).  fp32 at TOLERANCE["fp32"], plus fp16;
  the interpreter's own tile, and every config the autotuners can choose on a GPU, pinned.
* GPU (marked gpu, skipped without CUDA): fp16/bf16 with the 2x rule, fp32 with and without TF32,
  every autotuning config, and the same two-launch check.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from uninterpreted import run_python

from inception_fast.reference import BLOCK_CONFIGS
from inception_fast.testing import TOLERANCE, check_close, reduced_precision_bound

pytest.importorskip("triton")

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
interpreter_only = pytest.mark.skipif(not INTERPRET, reason="CPU tests need TRITON_INTERPRET=1 set before import")

# Importing the kernels imports triton (in the mode TRITON_INTERPRET chose) and queries no device.
from block_cases import ODD, block_reference, block_reference64, make_block  # noqa: E402,F401
from launch_observer import counting_do_bench, observe_launches  # noqa: E402
from unwritten_reads import assert_bands_untouched, guarded, nan_gapped  # noqa: E402

from inception_fast.backends.triton import _common, branch_convs, reduce_pool  # noqa: E402
from inception_fast.backends.triton import block as tb  # noqa: E402


def check_block(block, tol, what):
    out, scratch = tb.block_forward(**block)
    ref_out, ref_scratch = block_reference64(block)
    assert out.shape == ref_out.shape and scratch.shape == ref_scratch.shape
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert scratch.is_contiguous(memory_format=torch.channels_last)
    assert ref_out.std() > 0.1, "reference output is near zero: the comparison could not fail"
    check_close(scratch, ref_scratch, tol, f"{what} scratch")
    return check_close(out, ref_out, tol, f"{what} out")


# ---------------------------------------------------------------------------------------------
# CPU, under the Triton interpreter
# ---------------------------------------------------------------------------------------------


@interpreter_only
def test_launch1_every_operand_through_its_own_strides_fp32():
    """Launch 1 takes every tensor's real strides: column-major w_red and w_pool (K stride = rows),
    b_red and b_pool every second / third element of poisoned buffers, out NCHW (channel stride
    H*W) and scratch a channel slice of a wider channels_last buffer (channel stride 1).  All four
    lie between guard bands: a bias read past its last column, or a store of the 64-row tile's
    rows past the 30 pixels, hits a band (the interpreter's load check, assert_bands_untouched);
    the scratch buffer's other channels stay NaN.  (First in the file: a kernel that writes past
    the end of out still runs inside the bands here.)"""
    block = make_block(ODD, k5=3, n=2, h=3, w=5, seed=21)
    for name in ("w_red", "w_pool"):
        block[name] = block[name].t().contiguous().t()
        assert block[name].stride(0) == 1
    bands = []
    for name, step in (("b_red", 2), ("b_pool", 3)):
        gapped = guarded(block[name].numel() * step, torch.float32, "cpu", bands).view(-1, step)[:, 0]
        block[name] = gapped.copy_(block[name])
    n, _, h, w = block["x"].shape
    r = block["w3"].shape[1] + block["w5"].shape[1]
    c_total = _nan_outputs(block)[0].shape[1]
    out = guarded(n * c_total * h * w, torch.float32, "cpu", bands).view(n, c_total, h, w)
    wide = guarded(n * h * w * (r + 3), torch.float32, "cpu", bands).view(n, h, w, r + 3).permute(0, 3, 1, 2)
    scratch = wide[:, 1 : 1 + r]
    assert scratch.stride(1) == 1 and out.stride(1) == h * w
    _launch1_alone(block, out, scratch)
    assert torch.isnan(wide[:, 0]).all() and torch.isnan(wide[:, 1 + r :]).all(), "a store outside scratch's slice"
    assert_bands_untouched(bands)


@interpreter_only
@pytest.mark.parametrize("name", list(BLOCK_CONFIGS))
def test_googlenet_blocks_fp32(name, poisoned):
    # Alternate the branch-3 kernel (torchvision's 3 / the paper's 5) and the batch across blocks.
    i = list(BLOCK_CONFIGS).index(name)
    block = make_block(BLOCK_CONFIGS[name], k5=3 if i % 2 == 0 else 5, n=1 if i % 3 else 2, h=5, w=5)
    check_block(block, TOLERANCE["fp32"], name)


@interpreter_only
@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("k5", [3, 5])
def test_odd_shapes_fp32(n, k5, poisoned):
    check_block(make_block(ODD, k5=k5, n=n, h=5, w=7, seed=n + k5), TOLERANCE["fp32"], f"odd n={n} k5={k5}")


@interpreter_only
@pytest.mark.parametrize("k5,pool_rows", [(3, 16), (5, 8)])
def test_small_tiles_fp32(k5, pool_rows):
    """16-wide tiles: several M, N and K tiles per problem, each with a ragged edge; with 8 pool
    rows the pool role splits each 16-row tile over two programs (the last part past M)."""
    import triton

    block = make_block((37, 21, 19, 33, 9, 17, 18), k5=k5, n=2, h=3, w=5, seed=k5)
    small = triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16})
    launch1 = triton.Config({**small.kwargs, "BLOCK_M_POOL": pool_rows})
    out, scratch = _launch_poisoned(block, launch1, small)
    ref_out, ref_scratch = block_reference64(block)
    check_close(scratch, ref_scratch, TOLERANCE["fp32"], "scratch")
    check_close(out, ref_out, TOLERANCE["fp32"], "out")


@interpreter_only
def test_autotuned_launch_path(monkeypatch, poisoned):
    """The GPU's launch path (triton.autotune, grid from the config) run by the interpreter, with a
    stand-in do_bench; tuned configs are reused per shape key and every config the prunes keep gets
    benchmarked."""
    import triton

    fake_do_bench, benchmarked = counting_do_bench()
    configs = [
        triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16}),
        triton.Config({"BLOCK_M": 32, "BLOCK_N": 16, "BLOCK_K": 32}),
    ]
    tuned_1 = reduce_pool.make_tuned_kernel(configs, do_bench=fake_do_bench)
    # Launch 2 gets the same tiles split two ways (block_forward has launch 1 zero their counters)
    # and one unsplit config, which its prune drops for this small problem.
    splits = [triton.Config({**c.kwargs, "SPLIT_K": 2}) for c in configs]
    tuned_2 = branch_convs.make_tuned_kernel(splits + configs[:1], do_bench=fake_do_bench)
    monkeypatch.setattr(reduce_pool, "_tuned_kernel", tuned_1)
    monkeypatch.setattr(branch_convs, "_tuned_kernel", tuned_2)
    logged = len(_common.tuning_log())
    check_block(make_block(ODD, k5=5, n=2, h=4, w=5, seed=1), TOLERANCE["fp32"], "autotuned")
    assert len(benchmarked) == 4 and len(tuned_1.cache) == 1 and len(tuned_2.cache) == 1
    # Each kernel's choice and its per-config times are on record (benchmarks report them).
    log = _common.tuning_log()[logged:]
    assert [e["kernel"] for e in log] == ["_reduce_pool_kernel", "_branch_convs_kernel"]
    for entry, tuned, kept in zip(log, (tuned_1, tuned_2), (tuned_1.configs, tuned_2.configs[:2])):
        assert entry["chosen"] == _common.config_name(tuned.best_config) and entry["shape"]["M"] == 2 * 4 * 5
        assert set(entry["us"]) == {_common.config_name(c) for c in kept} and entry["chosen"] in entry["us"]
    # The same shape again: the kernels start straight with the configs the autotuner chose,
    # without going through it (no new benchmark, no new cache entry).
    block = make_block(ODD, k5=5, n=2, h=4, w=5, seed=2)
    _, _, launched = observe_launches(lambda: check_block(block, TOLERANCE["fp32"], "tuned"), monkeypatch)
    assert launched == [reduce_pool._reduce_pool_kernel, branch_convs._branch_convs_kernel]
    assert [list(_common._TUNED_CONFIGS[t].values()) for t in (tuned_1, tuned_2)] == [
        [tuned_1.best_config],
        [tuned_2.best_config],
    ]
    assert len(_common.tuning_log()) == logged + 2
    assert len(benchmarked) == 4 and len(tuned_1.cache) == 1 and len(tuned_2.cache) == 1
    check_block(make_block(ODD, k5=3, n=1, h=3, w=5, seed=3), TOLERANCE["fp32"], "autotuned, new shape")
    assert len(benchmarked) == 8 and len(tuned_1.cache) == 2 and len(tuned_2.cache) == 2


@interpreter_only
@pytest.mark.parametrize("split,k5", [(2, 3), (3, 5), (16, 3)])
def test_split_k_fp32(split, k5):
    """Launch 2 with K split over programs: the last of a tile's programs adds the partial sums.
    Launch 1 zeroes the (garbage-filled) counters, and each tile leaves its counter at 0 again.
    With 16 splits, branch 3's 9 K steps leave most programs of a tile with no step at all."""
    import triton

    block = make_block(ODD, k5=k5, n=2, h=3, w=5, seed=20 + split)
    tile = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16}
    out, scratch, counters = _launch_poisoned(
        block, triton.Config(tile), triton.Config({**tile, "SPLIT_K": split}), split_counters=True
    )
    ref_out, ref_scratch = block_reference64(block)
    check_close(scratch, ref_scratch, TOLERANCE["fp32"], "split-K scratch")
    check_close(out, ref_out, TOLERANCE["fp32"], f"split-K {split} out")
    assert counters.numel() > 0 and not counters.any()
    # Launch 2 alone (no launch 1 to zero the counters): it allocates zeroed ones itself.
    out.fill_(float("nan"))
    branch_convs.launch_branch_convs(
        scratch,
        block["w3"],
        block["b3"],
        block["w5"],
        block["b5"],
        out,
        ODD[1],
        config=triton.Config({**tile, "SPLIT_K": split}),
    )
    check_close(
        out[:, ODD[1] : ODD[1] + ODD[3] + ODD[5]],
        ref_out[:, ODD[1] : ODD[1] + ODD[3] + ODD[5]],
        TOLERANCE["fp32"],
        "split-K, launch 2 alone",
    )


@interpreter_only
def test_split_k_branch3_wider_than_the_tile_fp32(monkeypatch):
    """Branch 3's 33 channels ask for a 64-wide tile (the next power of two), which the kernel
    clamps to BLOCK_N (16): each split's partial tile must fit its 16x16 workspace slot, and the
    grid's column tiles must be the kernel's.  The workspace is followed by a poisoned guard band
    that must come back untouched (a store past it would land in someone else's memory)."""
    import triton

    real_buffers, bands = branch_convs._split_k_buffers, []

    def guarded_buffers(*args):
        ws, counters = real_buffers(*args)
        return guarded(ws.numel(), ws.dtype, ws.device, bands).view(ws.shape), counters

    monkeypatch.setattr(branch_convs, "_split_k_buffers", guarded_buffers)
    block = make_block((37, 21, 19, 33, 9, 33, 18), k5=3, n=2, h=3, w=5, seed=30)
    tile = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16}
    out, scratch, counters = _launch_poisoned(
        block, triton.Config(tile), triton.Config({**tile, "SPLIT_K": 2}), split_counters=True
    )
    ref_out, ref_scratch = block_reference64(block)
    check_close(scratch, ref_scratch, TOLERANCE["fp32"], "scratch")
    check_close(out, ref_out, TOLERANCE["fp32"], "split-K out, branch 3 wider than the tile")
    assert counters.numel() > 0 and not counters.any()
    assert_bands_untouched(bands)


def test_l1_alignment_claim_only_where_it_holds():
    """The A_L1 / POOL_L1 configs claim a gathered tile's rows 8-byte aligned (so that Triton copies
    them through L1) only where their strides make it true: 8 bytes' worth of elements where the
    row unit covers 8 bytes, no claim where it does not (a false claim would misalign the copies on
    a GPU; the interpreter cannot show it) or where the config does not ask."""
    assert _common.l1_align(1, 16, 16) == 4 and _common.l1_align(1, 4, 16) == 4  # bf16/fp16
    assert _common.l1_align(1, 2, 32) == 2 and _common.l1_align(1, 16, 32) == 2  # fp32
    assert _common.l1_align(1, 2, 16) == 0 and _common.l1_align(1, 1, 32) == 0  # odd channel counts
    assert _common.l1_align(0, 16, 16) == 0


def test_small_problem_configs_only_for_small_problems():
    """The autotuners' prunes give launch 2's split-K configs and launch 1's batch-1 configs the
    problems of up to SMALL_PROBLEM_PIXELS pixels and the other configs the larger ones, each
    alone (never leaving none), and a launch 2 that cannot split asks for no counters."""
    import triton

    configs = [triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "SPLIT_K": s}) for s in (1, 4)]
    limit = _common.SMALL_PROBLEM_PIXELS
    assert branch_convs._prune_split_k(configs, {"M": limit}) == configs[1:]
    assert branch_convs._prune_split_k(configs, {"M": limit + 1}) == configs[:1]
    assert branch_convs._prune_split_k(configs[1:], {"M": limit + 1}) == configs[1:]
    assert branch_convs._prune_split_k(configs[:1], {"M": limit}) == configs[:1]
    launch1 = [reduce_pool._complete_config(c) for c in reduce_pool.CONFIGS]
    small = [reduce_pool._complete_config(c) for c in reduce_pool.SMALL_PROBLEM_CONFIGS]
    assert small and reduce_pool._prune_small_only(launch1, {"M": limit}) == small
    kept = reduce_pool._prune_small_only(launch1, {"M": limit + 1})
    assert len(kept) == len(launch1) - len(small) and not any(c in kept for c in small)
    large = [c for c in launch1 if c not in small]
    assert reduce_pool._prune_small_only(large, {"M": limit}) == large
    scratch = torch.empty(1, 112, 28, 28, device="meta")
    w3, w5 = torch.empty(128, 96, 3, 3, device="meta"), torch.empty(32, 16, 3, 3, device="meta")
    assert branch_convs.split_k_counters(scratch, w3, w5, configs[0]) is None
    # 3a at batch 1, 32x32 tiles: 25 row tiles x (4 + 1) column tiles, rounded up to 16s.
    assert branch_convs.split_k_counters(scratch, w3, w5, configs[1]) == 128


@interpreter_only
@pytest.mark.parametrize("i", range(len(reduce_pool.SMALL_PROBLEM_CONFIGS)))
def test_launch1_batch1_configs_fp32(i):
    """Launch 1's batch-1 configs (32 and 64 pool channels a step), pinned, at odd sizes."""
    import triton

    block = make_block(BLOCK_CONFIGS["inception4a"], k5=3, n=1, h=5, w=3, seed=30 + i)
    out, scratch = _launch_poisoned(
        block, reduce_pool.SMALL_PROBLEM_CONFIGS[i], triton.Config(dict(branch_convs.INTERPRETER_CONFIG))
    )
    ref_out, ref_scratch = block_reference64(block)
    check_close(scratch, ref_scratch, TOLERANCE["fp32"], "scratch")
    check_close(out, ref_out, TOLERANCE["fp32"], "out")


# Launch 1's i-th config with launch 2's i-th (the last of the shorter list again past its end).
EVERY_CONFIG = range(max(len(reduce_pool.CONFIGS), len(branch_convs.CONFIGS)))
# (in, ch1, ch3red, ch3, ch5red, ch5, pool) for test_every_config_fp32, see there.
EVERY_CONFIG_BLOCK = (40, 20, 24, 40, 12, 20, 18)


@interpreter_only
@pytest.mark.parametrize("i", EVERY_CONFIG)
def test_every_config_fp32(i):
    """Every config the autotuners can choose on a GPU, pinned and run by the interpreter (whose own
    INTERPRETER_CONFIG never splits the pool role or K), into NaN-filled buffers with garbage
    split-K counters.  The shape makes each config's own paths run: 2 images of 7x7 = 98 pixels (an
    image boundary inside a row tile, a ragged last tile, and where 64 pool rows split a 128-row
    tile, a second pool program of 34 rows); 40 input channels (a K tail at every BLOCK_K and
    BLOCK_K_POOL); branch 1 and the reductions sharing a column tile; branch 2's 24 input channels,
    9 K steps at BLOCK_K 32, which SPLIT_K 4 shares out unevenly (3, 3, 3, 0)."""
    launch1 = reduce_pool.CONFIGS[min(i, len(reduce_pool.CONFIGS) - 1)]
    launch2 = branch_convs.CONFIGS[min(i, len(branch_convs.CONFIGS) - 1)]
    block = make_block(EVERY_CONFIG_BLOCK, k5=5, n=2, h=7, w=7, seed=40 + i)
    out, scratch, counters = _launch_poisoned(block, launch1, launch2, split_counters=True)
    ref_out, ref_scratch = block_reference64(block)
    assert ref_out.std() > 0.1, "reference output is near zero: the comparison could not fail"
    what = f"launch 1 {_common.config_name(launch1)}, launch 2 {_common.config_name(launch2)}"
    check_close(scratch, ref_scratch, TOLERANCE["fp32"], f"{what}: scratch")
    check_close(out, ref_out, TOLERANCE["fp32"], f"{what}: out")
    if counters is not None:
        assert not counters.any(), f"{what}: a split-K tile counter was left non-zero"


def test_every_config_covers_the_special_paths():
    """test_every_config_fp32 runs the pool split and the split-K path at least once each, and every
    config of both launches."""
    pairs = [
        (
            reduce_pool.CONFIGS[min(i, len(reduce_pool.CONFIGS) - 1)],
            branch_convs.CONFIGS[min(i, len(branch_convs.CONFIGS) - 1)],
        )
        for i in EVERY_CONFIG
    ]
    assert {id(a) for a, _ in pairs} == {id(c) for c in reduce_pool.CONFIGS}
    assert {id(b) for _, b in pairs} == {id(c) for c in branch_convs.CONFIGS}
    m = 2 * 7 * 7
    assert any(
        a.kwargs["BLOCK_M_POOL"] < a.kwargs["BLOCK_M"] and m % a.kwargs["BLOCK_M"] > a.kwargs["BLOCK_M_POOL"]
        for a, _ in pairs
    ), "no config splits the pool role with rows in its second part"
    cin3 = EVERY_CONFIG_BLOCK[2]
    assert any(
        b.kwargs.get("SPLIT_K", 1) > 1 and (9 * -(-cin3 // b.kwargs["BLOCK_K"])) % b.kwargs["SPLIT_K"] for _, b in pairs
    ), "no split-K config shares K unevenly"


@interpreter_only
def test_non_channels_last_strides(poisoned):
    """The kernels take real strides: contiguous (NCHW) inputs and row-major 4-D weights work too."""
    block = make_block(ODD, k5=5, n=2, h=4, w=6, seed=7)
    block["x"] = block["x"].contiguous()
    block["w3"] = block["w3"].contiguous()
    block["w5"] = block["w5"].contiguous()
    check_block(block, TOLERANCE["fp32"], "NCHW strides")


@interpreter_only
def test_strided_biases(poisoned):
    """Launch 2 reads each branch's bias through its own stride: b3 and b5 are views of every
    second and every third element of buffers whose gaps hold NaN."""
    block = make_block(ODD, k5=5, n=1, h=3, w=5, seed=9)
    for name, step in (("b3", 2), ("b5", 3)):
        block[name] = nan_gapped(block[name], step)
    check_block(block, TOLERANCE["fp32"], "strided biases")


@interpreter_only
@pytest.mark.parametrize("cfg,k5", [(BLOCK_CONFIGS["inception3a"], 3), (ODD, 5)])
def test_fp16(cfg, k5, poisoned):
    """fp16 in, fp16 out: error vs fp64 within 2x (the table's factor) the error of the same block
    computed by F.conv2d / F.max_pool2d in fp16 on CPU, both from identical fp16 inputs and weights
    (the fp64 reference uses those fp16 values exactly).  Both round scratch and out to fp16, so
    the two errors come out nearly equal (~2.3e-4 each)."""
    block = make_block(cfg, k5=k5, n=2, h=5, w=5, dtype=torch.float16, seed=3)
    out, scratch = tb.block_forward(**block)
    ref64_out, ref64_scratch = block_reference64(block)
    ref16_out, ref16_scratch = block_reference(**block)
    assert ref64_out.std() > 0.1
    check_close(out, ref64_out, reduced_precision_bound(ref16_out, ref64_out), "fp16 out")
    check_close(scratch, ref64_scratch, reduced_precision_bound(ref16_scratch, ref64_scratch), "fp16 scratch")
    assert out.dtype == scratch.dtype == torch.float16


@interpreter_only
def test_poisoning_catches_unwritten_elements(monkeypatch, poisoned):
    """The NaN check can fail: without launch 2, branches 2 and 3 stay NaN and the comparison fails."""
    real = _common.launch

    def launch_1_only(kernel, grid, *args, **kwargs):
        if kernel is reduce_pool._reduce_pool_kernel:
            real(kernel, grid, *args, **kwargs)

    monkeypatch.setattr(_common, "launch", launch_1_only)
    block = make_block(ODD, n=1, h=3, w=3)
    out, _ = tb.block_forward(**block)
    ref_out, _ = block_reference64(block)
    ch1, ch3, ch5 = ODD[1], ODD[3], ODD[5]
    assert torch.isnan(out[:, ch1 : ch1 + ch3 + ch5]).all()
    assert not torch.isnan(out[:, :ch1]).any() and not torch.isnan(out[:, ch1 + ch3 + ch5 :]).any()
    with pytest.raises(AssertionError):
        check_close(out, ref_out, TOLERANCE["fp32"])


def _check_two_launches(block, monkeypatch):
    before = tb.launch_count()
    (out, scratch), aten_ops, launched = observe_launches(lambda: tb.block_forward(**block), monkeypatch)
    assert tb.launch_count() - before == 2 and len(launched) == 2
    assert launched[0] in (reduce_pool._reduce_pool_kernel, reduce_pool._tuned_kernel)
    assert launched[1] in (branch_convs._branch_convs_kernel, branch_convs._tuned_kernel)
    allowed = {"aten.empty.memory_format", "aten.empty_strided.default"}
    assert aten_ops and set(aten_ops) <= allowed, f"unexpected aten ops: {sorted(set(aten_ops) - allowed)}"
    if block["x"].dtype == torch.float32:
        ref_out, ref_scratch = block_reference64(block)
        check_close(out, ref_out, TOLERANCE["fp32"])
        check_close(scratch, ref_scratch, TOLERANCE["fp32"])
    else:
        _check_low_precision(block, out, scratch, "two launches")


@interpreter_only
def test_exactly_two_launches_and_no_other_kernels(monkeypatch):
    _check_two_launches(make_block(ODD, k5=5, n=2, h=3, w=4), monkeypatch)


@interpreter_only
def test_backend_registry_and_op():
    from inception_fast import ops
    from inception_fast.backends import availability, available_backends

    assert availability("triton", "cpu") is None
    assert "triton" in available_backends("cpu")
    block = make_block(ODD, k5=3, n=1, h=4, w=4, seed=5)
    out, scratch = torch.ops.inception_fast.inception_block(*block.values(), "triton")
    ref_out, ref_scratch = block_reference64(block)
    check_close(out, ref_out, TOLERANCE["fp32"])
    check_close(scratch, ref_scratch, TOLERANCE["fp32"])
    out2 = ops.inception_block(*block.values(), backend="triton")
    check_close(out2, ref_out, TOLERANCE["fp32"])


def test_unavailable_reasons(monkeypatch):
    from inception_fast.backends import get

    backend = get("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert "TRITON_INTERPRET=1" in backend.unavailable_reason(torch.device("cpu"))
    monkeypatch.delenv("TRITON_INTERPRET")
    assert "TRITON_INTERPRET=1" in backend.unavailable_reason(torch.device("cpu"))
    assert "not on meta" in backend.unavailable_reason(torch.device("meta"))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    reason = backend.unavailable_reason(torch.device("cpu"))
    if _common.INTERPRET:
        assert reason is None
    else:  # the kernels were already imported for the GPU: setting the variable now is too late
        assert "before the kernels were imported" in reason
    monkeypatch.setattr(_common, "INTERPRET", False)  # as if they had been
    assert "before the kernels were imported" in backend.unavailable_reason(torch.device("cpu"))


@interpreter_only
def test_bfloat16_rejected_by_interpreter():
    """The kernels refuse bfloat16 under the interpreter, and the registry says so beforehand (what
    backend="auto" and the modules ask before they offer the backend)."""
    from inception_fast import backends

    block = make_block(ODD, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="bfloat16 is not supported by the Triton interpreter"):
        tb.block_forward(**block)
    assert "bfloat16 is not supported" in backends.dtype_reason("triton", "cpu", torch.bfloat16)
    assert backends.dtype_reason("triton", "cpu", torch.float32) is None


# ---------------------------------------------------------------------------------------------
# GPU
# ---------------------------------------------------------------------------------------------

# Compiling is what GPU tests spend their time on (~1-5 s per kernel variant, ~20 s for the
# unaligned odd shape).  The autotuned path runs on one shape; the other parity tests pin a config,
# which also makes them deterministic (the autotuner's winner may change from run to run).
SHAPE_3A = dict(cfg=BLOCK_CONFIGS["inception3a"], k5=3, n=2, h=28, w=28)


def _check_low_precision(block, out, scratch, what):
    """fp16/bf16: error vs fp64 within 2x the error of F.conv2d (cuDNN) in that dtype."""
    if out.is_cuda:
        torch.cuda.synchronize()
    ref64_out, ref64_scratch = block_reference64(block)
    reflp_out, reflp_scratch = block_reference(**block)
    assert ref64_out.std() > 0.1, "reference output is near zero: the comparison could not fail"
    check_close(scratch, ref64_scratch, reduced_precision_bound(reflp_scratch, ref64_scratch), f"{what} scratch")
    return check_close(out, ref64_out, reduced_precision_bound(reflp_out, ref64_out), f"{what} out")


# Launch 2's configs without split-K, in CONFIGS order (the last two: 64 and 32 rows).
UNSPLIT_CONFIGS = [c for c in branch_convs.CONFIGS if c.kwargs.get("SPLIT_K", 1) == 1]


def _launch_poisoned(block, reduce_config, branch_config, split_counters=False):
    """Both launches with a pinned config each (no autotuning), into NaN-filled buffers.

    split_counters: hand both launches launch 2's split-K counters, filled with garbage (launch 1
    must zero them), as block_forward does; returns them too."""
    b = block
    n, _, h, w = b["x"].shape
    r3, r5 = b["w3"].shape[1], b["w5"].shape[1]
    ch1 = b["w_red"].shape[0] - r3 - r5
    c_total = ch1 + b["w3"].shape[0] + b["w5"].shape[0] + b["w_pool"].shape[0]
    cl, like = torch.channels_last, dict(dtype=b["x"].dtype, device=b["x"].device)
    out = torch.full((n, c_total, h, w), float("nan"), **like).contiguous(memory_format=cl)
    scratch = torch.full((n, r3 + r5, h, w), float("nan"), **like).contiguous(memory_format=cl)
    counters = None
    n_counters = branch_convs.split_k_counters(scratch, b["w3"], b["w5"], branch_config) if split_counters else None
    if n_counters is not None:
        counters = torch.full((n_counters,), 7, dtype=torch.int32, device=b["x"].device)
    reduce_pool.launch_reduce_pool(
        b["x"], b["w_red"], b["b_red"], b["w_pool"], b["b_pool"], out, scratch, config=reduce_config, counters=counters
    )
    branch_convs.launch_branch_convs(
        scratch, b["w3"], b["b3"], b["w5"], b["b5"], out, ch1, config=branch_config, counters=counters
    )
    return (out, scratch, counters) if split_counters else (out, scratch)


@pytest.mark.gpu
@pytest.mark.parametrize("n", [2, 1])
def test_gpu_autotuned_block_forward_bf16(n, gpu, poisoned):
    """The path models take: block_forward with autotuning, on Inception 3a at 28x28 (at batch 1
    with the split-K configs among the candidates), then again through the remembered config."""
    block = make_block(**{**SHAPE_3A, "n": n}, dtype=torch.bfloat16, device=gpu, seed=11)
    for what in ("autotuned", "tuned config reused"):
        _check_low_precision(block, *tb.block_forward(**block), f"3a bf16 batch {n} {what}")


@pytest.mark.gpu
@pytest.mark.parametrize("i", range(max(len(reduce_pool.CONFIGS), len(branch_convs.CONFIGS))))
def test_gpu_every_config_bf16(i, gpu):
    """Each autotuning config of both launches, not just the winner (same binaries as the
    autotuned test; launch 2's split-K configs after launch 1's last)."""
    block = make_block(**SHAPE_3A, dtype=torch.bfloat16, device=gpu, seed=14)
    launch1 = reduce_pool.CONFIGS[min(i, len(reduce_pool.CONFIGS) - 1)]
    out, scratch, _ = _launch_poisoned(
        block, launch1, branch_convs.CONFIGS[i % len(branch_convs.CONFIGS)], split_counters=True
    )
    _check_low_precision(block, out, scratch, f"config {i}")


@pytest.mark.gpu
@pytest.mark.parametrize("name,size", [("inception3a", 28), ("inception5b", 7)])
def test_gpu_split_k_batch1_is_exact_and_repeatable(name, size, gpu):
    """Split-K at batch 1 (what it is for): bf16 parity, and the same bits on every run; the
    partial sums are added in a fixed order, so a difference between runs would be a race
    between a tile's programs (a counter read before every partial was written)."""
    block = make_block(BLOCK_CONFIGS[name], k5=3, n=1, h=size, w=size, dtype=torch.bfloat16, device=gpu, seed=18)
    for config in (c for c in branch_convs.CONFIGS if c.kwargs.get("SPLIT_K", 1) > 1):
        runs = [_launch_poisoned(block, reduce_pool.CONFIGS[-1], config, split_counters=True) for _ in range(5)]
        torch.cuda.synchronize()
        out, scratch, counters = runs[0]
        _check_low_precision(block, out, scratch, f"{name} split-K {config}")
        assert all(torch.equal(r[0], out) for r in runs[1:]), f"{name} {config}: results differ between runs"
        assert not any(r[2].any() for r in runs), "a tile counter was left non-zero"


@pytest.mark.gpu
@pytest.mark.parametrize(
    "name,k5", [(name, 3) for name in BLOCK_CONFIGS] + [("inception5b", 5)], ids=[*BLOCK_CONFIGS, "inception5b-k5"]
)
def test_gpu_googlenet_blocks_bf16(name, k5, gpu):
    size = 14 if name.startswith("inception4") else 7
    block = make_block(BLOCK_CONFIGS[name], k5=k5, n=2, h=size, w=size, dtype=torch.bfloat16, device=gpu, seed=12)
    out, scratch = _launch_poisoned(block, reduce_pool.CONFIGS[0], branch_convs.CONFIGS[0])
    _check_low_precision(block, out, scratch, name)


@pytest.mark.gpu
def test_gpu_fp16(gpu):
    block = make_block(**SHAPE_3A, dtype=torch.float16, device=gpu, seed=17)
    out, scratch = _launch_poisoned(block, reduce_pool.CONFIGS[0], branch_convs.CONFIGS[0])
    _check_low_precision(block, out, scratch, "3a fp16")


# Launch 1's two smallest unsplit tiles, 64 rows (wgmma) and 32 rows (2 warps: mma.sync), by name.
FP32_LAUNCH1 = {
    "64-row": next(c for c in reduce_pool.CONFIGS if c.kwargs["BLOCK_M"] == 64 and c.kwargs["BLOCK_N"] == 64),
    "32-row": next(c for c in reduce_pool.CONFIGS if c.kwargs["BLOCK_M"] == 32 and c.num_warps == 2),
}


@pytest.mark.gpu
@pytest.mark.parametrize("tf32", [True, False], ids=["tf32", "exact"])
@pytest.mark.parametrize("config", [-2, -1], ids=["64-row", "32-row"])
def test_gpu_fp32(tf32, config, gpu, monkeypatch):
    """TF32 only when cudnn.allow_tf32 is on (read at call time); exact fp32 otherwise."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", tf32)
    block = make_block(**SHAPE_3A, device=gpu, seed=13)
    # The two smallest tiles (64 rows on wgmma, 32 rows without): fp32 tiles of the 128-row
    # configs can exceed shared memory (the autotuner skips those; a pinned config must fit).
    launch1 = FP32_LAUNCH1["64-row" if config == -2 else "32-row"]
    out, scratch = _launch_poisoned(block, launch1, UNSPLIT_CONFIGS[config])
    torch.cuda.synchronize()
    ref_out, ref_scratch = block_reference64(block)
    tol = TOLERANCE["tf32"] if tf32 else TOLERANCE["fp32"]
    check_close(scratch, ref_scratch, tol, f"fp32 tf32={tf32} scratch")
    err = check_close(out, ref_out, tol, f"fp32 tf32={tf32} out")
    if tf32:
        # Shows that TF32 really was used: exact fp32 would be ~1e-7.
        assert err > 1e-5, f"error {err:.1e}: allow_tf32=True but the kernels seem to compute exact fp32"


@pytest.mark.gpu
def test_gpu_odd_shape_bf16(gpu):
    """Channel counts and sizes that fill no tile; unaligned rows compile to slow scalar code,
    so one pinned config, no autotuning."""
    block = make_block(ODD, k5=5, n=3, h=5, w=7, dtype=torch.bfloat16, device=gpu, seed=16)
    out, scratch = _launch_poisoned(block, reduce_pool.CONFIGS[-1], UNSPLIT_CONFIGS[-1])
    _check_low_precision(block, out, scratch, "odd bf16")


@pytest.mark.gpu
def test_gpu_exactly_two_launches_and_no_other_kernels(gpu, monkeypatch):
    # Same binaries as the autotuned 3a test (M, H, W are not specialized on): no new compile.
    block = make_block(BLOCK_CONFIGS["inception3a"], k5=3, n=1, h=7, w=7, dtype=torch.bfloat16, device=gpu, seed=15)
    # A first launch allocates the pool role's split-K counters (torch.zeros, once per device and
    # stream, reduce_pool._pool_counters): where no earlier test in this process did, do it here.
    tb.block_forward(**block)
    _check_two_launches(block, monkeypatch)


def test_sm90_compile_stats_of_every_config():
    """Every config of both launches, of the stem kernel and of the conv + bias + ReLU (the stem's
    conv2 and conv3) compiled for sm_90 (no GPU needed; a subprocess, since this process runs the
    interpreter): each fits the H100's shared memory, the
    64- and 128-row ones run on wgmma, the block launches stream their operands with cp.async
    (the stem's gathered 3-channel loads cannot, its aligned-row form (conv_rows.py) does; launch 2
    all of its operands), and no config
    spills registers or stores element by element (the stem, 3a, 4b and 5b: the narrowest block,
    channel counts that are not multiples of 16, the widest block; the max pool kernel on
    GoogLeNet's four pools; launch 1 of 3a, 4a and 5a with maxpool2/3/4 folded in, see there; and
    the head's two launches on 5b's output into 1000 classes; the joined launch 4b>4c of chain.py,
    see check_joined_stats)."""
    import triton

    if not (Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas").exists():
        pytest.skip("this triton install ships no ptxas")
    run = run_python("-m", "benchmarks.kernel_stats", "--json")
    stats = json.loads(run.stdout)
    rows, max_shared = stats["rows"], stats["max_shared_bytes"]
    assert {(r["block"], r["launch"]) for r in rows} == {
        ("stem", "conv_pool"),
        ("stem", "conv"),
        ("stem", "rows_pad"),
        ("stem", "rows"),
        ("stem", "rows_pool"),
        ("conv2", "conv_relu"),
        ("conv3", "conv_relu"),
        *((b, launch) for b in ("inception3a", "inception4b", "inception5b") for launch in ("launch1", "launch2")),
        *((f"maxpool{i}", "maxpool") for i in range(1, 5)),
        ("inception3a", "l1+maxpool2"),
        ("inception4a", "l1+maxpool3"),
        ("inception5a", "l1+maxpool4"),
        ("head", "avgpool"),
        ("head", "linear"),
        ("inception4b>4c", "joined"),
    }
    check_every_config(rows)
    # The rows are of the defaults: batch 256, bf16, sm_90.
    assert {(r["batch"], r["dtype"], r["arch"]) for r in rows} == {(256, "bf16", "sm_90")}
    for r in rows:
        what = f"{r['block']} {r['launch']} {r['config']}"
        assert r["shared_bytes"] <= max_shared, what
        c = r["config"]
        if "BLOCK_K" in c and r["cp_async"] and c["num_stages"] > 1:
            # A pipelined GEMM keeps num_stages - 1 stages or more of its bf16 A and B tiles in shared memory.
            assert r["shared_bytes"] >= (c["num_stages"] - 1) * (c["BLOCK_M"] + c["BLOCK_N"]) * c["BLOCK_K"] * 2, what
        if r["launch"].startswith("l1+"):  # launch 1 with the pool before the block folded in
            # The taps load synchronously, one per step of a loop (reduce_pool.FOLD_STAGES): no
            # cp.async, the loads of the two roles' taps, weights and biases only.  A few configs
            # spill a few dozen bytes (24-32 on 5a's 128x64 tiles and the batch-1 configs with
            # 32-channel pool steps, with triton 3.8); more would be a regression.  With the pool
            # role's K split, its last program of a tile also loads the split partial tiles.
            pool_split = r["config"]["POOL_SPLIT_K"]
            sync_loads = 6 + (pool_split if pool_split > 1 else 0)
            assert not r["cp_async"] and r["sync_loads"] == sync_loads and r["scalar_stores"] == 0, what
            assert r["wgmma"] == (r["config"]["BLOCK_M"] >= 64 and r["config"]["num_warps"] >= 4), what
            assert r["registers"] is not None and r["spill_bytes"] <= 64, what
            continue
        if r["launch"] == "joined":  # chain.py: launch 2 of 4b and launch 1 of 4c in one kernel
            check_joined_stats(r, max_shared)
            continue
        if r["launch"] == "maxpool":  # no matrix work, no loop to pipeline: one load per window tap
            taps = 4 if r["block"] == "maxpool4" else 9
            assert r["spill_bytes"] == 0 and r["scalar_stores"] == 0 and r["sync_loads"] == taps, what
            continue
        if r["launch"] == "avgpool":  # the head's pool: one load per pixel tile, no matrix work
            assert r["spill_bytes"] == 0 and r["sync_loads"] == 1, what
            continue
        if r["launch"] == "rows_pad":  # conv_rows.py's padded copy: one gathered load, rows stored whole
            assert r["spill_bytes"] == 0 and r["scalar_stores"] == 0 and r["sync_loads"] == 1, what
            continue
        # The stem kernel's gathered 3-channel loads cannot use cp.async; conv_rows.py's aligned
        # rows do, and its bias is its one other load (its pooled form's too, besides the pool's
        # nine taps read back from the program's scratch slot), except in its unpipelined config
        # (num_stages 1: its rows and weights through L1), which loads every operand itself.
        unpipelined = r["launch"] == "rows" and r["config"]["num_stages"] == 1
        streamed = r["block"] != "stem" or r["launch"] in ("rows", "rows_pool")
        assert r["cp_async"] == (streamed and not unpipelined), what
        if r["launch"] == "rows":
            assert r["sync_loads"] == 1 + (2 if unpipelined else 0), what
        if r["launch"] == "rows_pool":
            assert r["sync_loads"] == 1 + 9, what
        assert r["wgmma"] == (r["config"]["BLOCK_M"] >= 64 and r["config"]["num_warps"] >= 4), what
        assert r["registers"] is not None and r["registers"] <= 255, what
        # 4b's scratch rows (136 channels), NR (296) and branch-3 input (24 channels) are 16-byte but
        # not 16-element multiples: without _common.row_unit launch 1 spilled 3-4.5 KB and stored
        # element by element, and launch 2 loaded branch 3's operands without cp.async.
        assert r["spill_bytes"] == 0 and r["scalar_stores"] == 0, what
        if r["launch"] == "linear":  # the head's GEMM: the bias is its one load not through cp.async
            assert r["sync_loads"] == 1, what
        if r["launch"] == "conv_relu":  # the stem's conv2/conv3: the bias is the one load not through cp.async
            # (_common.weight_strides: a 1x1 weight's kh/kw strides of 1 would make its loads synchronous)
            assert r["sync_loads"] == 1, what
        if r["launch"] == "launch2":
            # The two biases, and with split-K each branch's partial tiles summed by the last
            # program of a tile; every operand tile is cp.async.
            split = r["config"].get("SPLIT_K", 1)
            assert r["sync_loads"] == 2 + (2 * split if split > 1 else 0), what
    check_l1_copies(rows)


def config_rows(configs) -> list:
    """The "config" fields kernel_stats gives rows of ``configs``."""
    return [dict(c.kwargs, num_warps=c.num_warps, num_stages=c.num_stages) for c in configs]


def check_every_config(rows: list) -> None:
    """Every (block, launch) of the default kernel_stats run has one row per config its launcher
    autotunes over (completed as the launcher completes them), in the configs' order: none left out."""
    from inception_fast.backends.triton import chain, conv_relu, conv_rows, head, maxpool, stem

    block_l1 = config_rows(map(reduce_pool._complete_config, reduce_pool.CONFIGS))
    expected = {
        "conv_pool": config_rows(stem.CONFIGS),
        "conv": config_rows(stem.CONFIGS),
        "rows_pad": config_rows([conv_rows.PAD_CONFIG]),
        "rows": config_rows(conv_rows.CONFIGS),
        "rows_pool": config_rows(conv_rows.POOL_CONFIGS),
        "conv_relu": config_rows(map(conv_relu.complete_config, conv_relu.CONFIGS)),
        "launch1": block_l1,
        "launch2": config_rows(map(branch_convs._complete_config, branch_convs.CONFIGS)),
        "maxpool": config_rows(maxpool.CONFIGS),
        "avgpool": config_rows(head.POOL_CONFIGS),
        "linear": config_rows(head.LINEAR_CONFIGS),
        # 4b>4c at batch 256: the configs the autotuner keeps above SMALL_PROBLEM_PIXELS
        "joined": config_rows(chain._prune_small_only(chain.CONFIGS, {"M": 256 * 14 * 14})),
    }
    for key in {(r["block"], r["launch"]) for r in rows}:
        got = [r["config"] for r in rows if (r["block"], r["launch"]) == key]
        assert got == (block_l1 if key[1].startswith("l1+") else expected[key[1]]), key


def check_l1_copies(rows: list) -> None:
    """Each config that routes a gather through L1 (A_L1: launch 2's and conv_relu's A tile,
    conv_rows' rows; POOL_L1: launch 1's pool taps) against its twin, the same config without:
    the gather's 16-byte cp.async.cg copies (which bypass L1) have all become twice as many 8-byte
    cp.async.ca ones (which L1 caches), and the pool role's come in nines (every tap).  Configs
    without a twin among the configs are not compared, nor conv2's (a 1x1 conv: conv_relu's prune
    never runs A_L1 there)."""
    flags = ("A_L1", "POOL_L1")
    plain = {}
    for r in rows:
        if not any(r["config"].get(f) for f in flags):
            plain[(r["block"], r["launch"], repr(sorted(r["config"].items())))] = r
    checked = 0
    for r in rows:
        if not any(r["config"].get(f) for f in flags) or r["launch"].startswith("l1+") or r["block"] == "conv2":
            continue  # (the folds' pool role gathers with synchronous loads)
        twin_config = {**r["config"], **{f: 0 for f in flags if f in r["config"]}}
        twin = plain.get((r["block"], r["launch"], repr(sorted(twin_config.items()))))
        if twin is None:
            continue
        what = f"{r['block']} {r['launch']} {r['config']}"
        moved = twin["cp_async_cg16"] - r["cp_async_cg16"]
        assert moved > 0 and r["cp_async_ca8"] - twin["cp_async_ca8"] == 2 * moved, (what, r, twin)
        if r["config"].get("POOL_L1"):
            assert moved % 9 == 0, (what, moved)
        checked += 1
    assert checked >= 8, checked


def check_joined_stats(r: dict, max_shared: int) -> None:
    """A kernel_stats row of chain.py's joined launch (launch 2 of a block and launch 1 of the next
    in one kernel): it fits the shared memory, spills nothing (the 128-row configs spilled 200-400
    bytes in a persistent loop, see chain.CONFIGS), stores nothing element by element, streams its
    operands with cp.async and runs on wgmma where both roles' tiles have 64 rows or more and 4 warps
    or more; its synchronous loads are launch 2's two biases and launch 1's (its biases, and the
    pool role's nine shifted loads where POOL_STAGES is 1)."""
    c, what = r["config"], f"{r['block']} {r['launch']} {r['config']}"
    assert r["shared_bytes"] <= max_shared and r["cp_async"], what
    assert r["registers"] is not None and r["registers"] <= 255, what
    assert r["spill_bytes"] == 0 and r["sass"]["LDL"] == 0 and r["sass"]["STL"] == 0, what
    assert r["scalar_stores"] == 0, what
    wgmma = min(c["BLOCK_M2"], c["BLOCK_M"]) >= 64 and c["num_warps"] >= 4
    assert r["wgmma"] == wgmma and (r["sass"]["HGMMA"] > 0) == wgmma, what
    assert r["sync_loads"] == 4 + (10 if c["POOL_STAGES"] == 1 else 0), what


# Run in a subprocess by test_kernel_stats_specializes_like_the_jit (kernel_stats refuses the interpreter).
_SPECIALIZATION_CHECK = """
import torch
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import CUDABackend
from triton.runtime.jit import create_function_from_signature
from benchmarks import kernel_stats as ks
from inception_fast.backends.triton import _common, branch_convs, reduce_pool, reduce_pool_tma, stem

backend = CUDABackend(GPUTarget("cuda", 90, 32))
ch1, x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, out, scratch = ks.block_tensors("inception4b", 1, torch.bfloat16)
image = torch.empty(1, 3, 32, 32, dtype=torch.bfloat16)
stem_w = torch.empty(64, 3, 7, 7, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
stem_args = stem._arguments(image, stem_w, torch.empty(64, dtype=torch.bfloat16), 2, 3, 3, 2, 0, True)[:2]
launches = [
    (reduce_pool._reduce_pool_kernel, reduce_pool._arguments(x, w_red, b_red, w_pool, b_pool, out, scratch)[:2],
     reduce_pool._complete_config(reduce_pool.CONFIGS[0])),
    (branch_convs._branch_convs_kernel, branch_convs._arguments(scratch, w3, b3, w5, b5, out, ch1)[:2],
     branch_convs._complete_config(branch_convs.CONFIGS[0])),
    (reduce_pool_tma._reduce_pool_tma_kernel,
     reduce_pool_tma._arguments(x, w_red, b_red, w_pool, b_pool, out, scratch)[:2], reduce_pool_tma.CONFIGS[0]),
    (stem._conv_pool_kernel, stem_args, stem.CONFIGS[0]),
]
checked = 0
for kernel, (args, meta), config in launches:
    meta = dict(meta, **config.kwargs)
    args = _common.config_args(kernel, args, meta, config)
    ints = [i for i, a in enumerate(args) if type(a) is int]
    # The launch's own values; every int one value at a time: 1 (a constant unless do_not_specialize),
    # multiples of 16 or not, the 32-bit edge; every pointer 2 bytes off 16-byte alignment.
    variants = [args]
    for v in (1, 16, 24, 2**31 - 16, 2**31, -(2**31), -(2**31) - 16):
        variants.append(tuple(v if i in ints else a for i, a in enumerate(args)))
    variants.append(tuple(torch.empty(2, dtype=a.dtype)[1:] if isinstance(a, torch.Tensor) else a for a in args))
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    for variant in variants:
        bound, specialization, options = binder(*variant, **meta)
        _, signature, constants, attrs = kernel._pack_args(backend, {}, bound, specialization, options)
        src = ks._source(kernel, variant, meta)
        what = (kernel.fn.__name__, [a if type(a) is int else type(a).__name__ for a in variant])
        assert src.signature == signature, (what, src.signature, signature)
        assert src.constants == constants, (what, src.constants, constants)
        assert src.attrs == {k: v for k, v in attrs.items() if v}, (what, src.attrs, attrs)
        checked += 1
print(checked)
"""


def test_kernel_stats_specializes_like_the_jit():
    """kernel_stats._source (what every compile statistic is of) against Triton's own JIT binder for
    sm_90 (no GPU, no compile: a subprocess, since kernel_stats refuses the interpreter): the same
    signature, constants and divisibility attributes for launch 1, launch 2, the TMA launch 1 and the
    stem kernel with the launchers' arguments (do_not_specialize / do_not_specialize_on_alignment
    parameters, tensor descriptors), with every int set to 1, to multiples of 16 or not and to the
    32-bit edges, and with every pointer off 16-byte alignment."""
    run = run_python("-c", _SPECIALIZATION_CHECK)
    assert int(run.stdout) == 4 * 9, run.stdout


# Run in a subprocess by test_kernel_stats_reads_ptxas_and_refuses_unknown_targets.
_PTXAS_AND_ARCH_CHECK = """
import contextlib, io, os, re, subprocess, tempfile
import triton
from benchmarks import kernel_stats as ks

# 48 values live at once under .maxnreg 24: ptxas spills them (32 bits each, one STL or LDL a value).
n = 48
body = [f"ld.volatile.global.u32 %r{i}, [%rd2+{4 * i}];" for i in range(1, n + 1)]
body += [f"st.volatile.global.u32 [%rd2+{4 * (n + i)}], %r{i};" for i in range(n, 0, -1)]
ptx = "\\n".join([
    ".version 8.0", ".target sm_90a", ".address_size 64", ".visible .entry k(.param .u64 p) .maxnreg 24", "{",
    ".reg .b64 %rd<3>;", f".reg .b32 %r<{n + 1}>;", "ld.param.u64 %rd1, [p];", "cvta.to.global.u64 %rd2, %rd1;",
    *body, "ret;", "}", "",
])
info = ks._ptxas_info(ptx)
with tempfile.TemporaryDirectory() as tmp:
    src, cubin = os.path.join(tmp, "k.ptx"), os.path.join(tmp, "k.cubin")
    with open(src, "w") as f:
        f.write(ptx)
    subprocess.run([triton.knobs.nvidia.ptxas.path, "--gpu-name", "sm_90a", src, "-o", cubin], check=True)
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    usage = subprocess.run([cuobjdump, "--dump-resource-usage", cubin], capture_output=True, text=True, check=True)
    with open(cubin, "rb") as f:
        sass = ks._sass_counts(f.read())
registers = int(re.search(r"REG:(\\d+)", usage.stdout).group(1))
assert sass["STL"] > 0 and sass["LDL"] > 0, sass
assert info == {"registers": registers, "spill_bytes": 4 * (sass["STL"] + sass["LDL"])}, (info, usage.stdout, sass)
try:
    ks._ptxas_info(ptx.replace("ret;", "ret"))
except subprocess.CalledProcessError:
    pass
else:
    raise AssertionError("statistics of a PTX that ptxas rejects")

for argv, message in (
    (["--arch", "89", "--block", "tma1:inception3a"], "the TMA launches need sm_90 or newer"),
    (["--arch", "89", "--block", "inception3a", "--block", "tma"], "the TMA launches need sm_90 or newer"),
    (["--arch", "75", "--block", "inception3a"], "expected a compute capability x10 the kernels compile for"),
    (["--arch", "95", "--block", "inception3a"], "expected a compute capability x10 the kernels compile for"),
):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            ks.main(argv)
        except SystemExit as exit:
            assert exit.code == 2, (argv, exit.code)
        else:
            raise AssertionError(f"{argv} ran")
    assert message in err.getvalue(), (argv, err.getvalue())
assert ks.arch_problem(90, tma=True) is None and ks.arch_problem(89) is None
print("ok")
"""


def test_kernel_stats_reads_ptxas_and_refuses_unknown_targets():
    """kernel_stats._ptxas_info on a PTX kernel that spills (a subprocess, since kernel_stats refuses
    the interpreter): its registers are the cubin's (cuobjdump's resource usage) and its spilled
    bytes those of the SASS's local stores and loads, both directions counted; a PTX that ptxas
    rejects raises instead of giving statistics.  And --arch: the TMA launches (--block tma,
    tma1:<block>) are refused below sm_90, as is an architecture the kernels do not compile for,
    with argparse's exit status 2 and before anything compiles."""
    import triton

    if not (Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas").exists():
        pytest.skip("this triton install ships no ptxas")
    assert run_python("-c", _PTXAS_AND_ARCH_CHECK).stdout.strip() == "ok"


@interpreter_only
def test_nan_propagates_like_pytorch():
    """A NaN input pixel gives NaN exactly where F.conv2d / F.max_pool2d / F.relu put it (Triton's
    default max would turn it into a number)."""
    block = make_block(ODD, k5=3, n=1, h=5, w=5, seed=9)
    block["x"][0, 2, 2, 2] = float("nan")
    out, _ = tb.block_forward(**block)
    ref_out, _ = block_reference64(block)
    assert torch.isnan(ref_out).any() and not torch.isnan(ref_out).all()
    assert torch.equal(torch.isnan(out), torch.isnan(ref_out))


def test_alignment_units():
    """_common.row_unit: the power of two (up to 16) dividing every row stride, and 1 once a stride
    reaches 2^31, where dividing would let the kernel multiply it back in 32 bits."""

    def strided(channels, h=3, w=3, n_stride=None):
        t = torch.empty(2, channels, h, w, device="meta").contiguous(memory_format=torch.channels_last)
        return t if n_stride is None else t.as_strided(t.shape, (n_stride, *t.stride()[1:]))

    assert _common.row_unit(strided(192)) == 16
    assert _common.row_unit(strided(192), strided(136)) == 8  # 4b's scratch
    assert _common.row_unit(strided(13)) == 1
    assert _common.row_unit(strided(192, n_stride=2**31 + 16)) == 1
    assert _common.row_unit(strided(192, n_stride=2**31)) == 1  # 2^31 itself is 64-bit already
    assert _common.pow2_unit(296, 160, 64) == 8 and _common.pow2_unit(24) == 8 and _common.pow2_unit(7) == 1


def test_no_buffer_is_one_empty_tensor_per_device_and_dtype():
    """_common.no_buffer: an empty tensor of the dtype asked for (a kernel compiles for its pointer
    arguments' dtypes), on the given tensor's device, the same one on every call."""
    x = torch.empty(2, dtype=torch.float16)
    ws, counters = _common.no_buffer(x, torch.float32), _common.no_buffer(x, torch.int32)
    assert (ws.dtype, counters.dtype, ws.numel(), counters.numel()) == (torch.float32, torch.int32, 0, 0)
    assert ws.device == counters.device == x.device
    assert _common.no_buffer(x, torch.float32) is ws and _common.no_buffer(x, torch.int32) is counters


def test_offsets_past_32_bits_are_refused():
    """Channel, row and column strides below 2^31 reach the kernels as 32-bit values, multiplied in
    32 bits by a channel index or a window's reach (geometry.TAP_REACH): a tensor whose products
    would pass 2^31 gets a clear error (from row_unit, which every 4-D launcher calls), where it
    would otherwise read wrong pixels.  Strides of 2^31 or more are 64-bit and pass."""
    from inception_fast import geometry
    from inception_fast.backends.triton import conv_relu

    def meta(shape, strides):
        return torch.empty(0, device="meta").as_strided(shape, strides)

    nchw = torch.empty(1, 513, 2048, 2048, device="meta")  # channel stride 2^22, 512 steps: 2^31
    with pytest.raises(ValueError, match="32-bit channel offsets.*channels_last copy"):
        _common.row_unit(nchw)
    w = torch.empty(64, 513, 1, 1, device="meta").contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="32-bit channel offsets"):
        conv_relu._arguments(nchw, w, torch.empty(64, device="meta"), 0)
    assert _common.row_unit(nchw.contiguous(memory_format=torch.channels_last)) == 1  # 513 channels: no error
    wide = meta((1, 8, 3, 4), (2**30, 1, 2**28, 8))  # a row stride of 2^28, 8 rows: 2^31
    with pytest.raises(ValueError, match="32-bit row offsets"):
        _common.row_unit(wide)
    geometry.check_int32_offsets(meta((1, 8, 3, 4), (2**33, 1, 2**31, 8)))  # 64-bit row stride
    geometry.check_int32_offsets(meta((1, 8, 3, 4), (2**30, 1, 2**28 - 16, 8)))
    geometry.check_int32_offsets(torch.empty(1, 512, 2048, 2048, device="meta"))  # 511 steps: below 2^31


def test_tuned_launch1_rejects_pool_rows_that_do_not_divide_the_tile():
    import triton

    with pytest.raises(ValueError, match="BLOCK_M_POOL 48 must divide BLOCK_M 64"):
        reduce_pool.make_tuned_kernel(
            [triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "BLOCK_M_POOL": 48})]
        )


# ---------------------------------------------------------------------------------------------
# Launch 1 alone (reduce_pool.py): strides, channel units, wide pools and its argument checks
# ---------------------------------------------------------------------------------------------


def _launch1_alone(block, out, scratch, config=None):
    """Launch 1 only, into the given (NaN-filled) out and scratch; then its slices of out (branch 1,
    the pool branch) and scratch against the fp64 reference, and launch 2's slices of out untouched."""
    reduce_pool.launch_reduce_pool(
        block["x"], block["w_red"], block["b_red"], block["w_pool"], block["b_pool"], out, scratch, config=config
    )
    ref_out, ref_scratch = block_reference64(block)
    ch1, pool = block["w_red"].shape[0] - scratch.shape[1], block["w_pool"].shape[0]
    assert ref_out[:, -pool:].std() > 0.1, "reference pool branch is near zero: the comparison could not fail"
    check_close(scratch, ref_scratch, TOLERANCE["fp32"], "scratch")
    check_close(out[:, :ch1], ref_out[:, :ch1], TOLERANCE["fp32"], "branch 1")
    check_close(out[:, -pool:], ref_out[:, -pool:], TOLERANCE["fp32"], "pool branch")
    assert torch.isnan(out[:, ch1:-pool]).all(), "launch 1 wrote into launch 2's channels"


def _nan_outputs(block, out_format=torch.channels_last, bands=None):
    """NaN out and scratch of the block's sizes; with ``bands``, channels_last views of guarded
    buffers (their guard bands appended to it, see unwritten_reads.guarded)."""
    n, _, h, w = block["x"].shape
    r = block["w3"].shape[1] + block["w5"].shape[1]
    c_total = block["w_red"].shape[0] - r + block["w3"].shape[0] + block["w5"].shape[0] + block["w_pool"].shape[0]
    like = dict(dtype=block["x"].dtype, device=block["x"].device)
    if bands is not None:
        return tuple(
            guarded(n * h * w * c, like["dtype"], like["device"], bands).view(n, h, w, c).permute(0, 3, 1, 2)
            for c in (c_total, r)
        )
    out = torch.full((n, c_total, h, w), float("nan"), **like).contiguous(memory_format=out_format)
    scratch = torch.full((n, r, h, w), float("nan"), **like).contiguous(memory_format=torch.channels_last)
    return out, scratch


# (in, ch1, ch3red, ch3, ch5red, ch5, pool), each with one channel count alone setting the kernel's
# channel unit (_common.pow2_unit; 16 for the other counts): the pool branch's first channel in out
# (16 + 12 + 8 = 36: unit 4), branch 1's width (4, where the reduce rows, 16, and the pool's first
# channel, 16, are multiples of 16).
CHANNEL_UNIT_CASES = {
    "pool_col0": (16, 16, 8, 12, 8, 8, 16),
    "ch1": (16, 4, 6, 8, 6, 4, 16),
}


@interpreter_only
@pytest.mark.parametrize("case", list(CHANNEL_UNIT_CASES))
def test_launch1_channel_unit_from_every_count_fp32(case):
    """The channel counts travel divided by their common power-of-two unit: every one of them,
    branch 1's width and the pool branch's first channel in out included, must divide by it (else
    the kernel multiplies back a rounded-down count)."""
    block = make_block(CHANNEL_UNIT_CASES[case], k5=3, n=1, h=3, w=5, seed=22)
    bands = []
    out, scratch = _nan_outputs(block, bands=bands)  # a wrong unit may store past either
    _launch1_alone(block, out, scratch)
    assert_bands_untouched(bands)


@interpreter_only
@pytest.mark.parametrize("pool_rows", [64, 16])
def test_launch1_pool_wider_than_one_tile_fp32(pool_rows):
    """A pool branch wider than 128 channels (136) takes two pool column tiles, each redoing the max
    pool; with 16 pool rows per 32-row tile, two row parts of each (25 pixels: the second part
    partly past M)."""
    import triton

    block = make_block((24, 8, 8, 8, 8, 8, 136), k5=3, n=1, h=5, w=5, seed=23)
    assert _common.next_pow2_clamped(136) == 128
    config = None
    if pool_rows != 64:
        config = triton.Config({"BLOCK_M": 32, "BLOCK_N": 16, "BLOCK_K": 16, "BLOCK_M_POOL": pool_rows})
    out, scratch = _nan_outputs(block)
    _launch1_alone(block, out, scratch, config=config)


def test_launch1_argument_errors():
    """Launch 1 refuses launch 2's counters unless int32 and a multiple of 16 long, and out or
    scratch of another size than the (pooled) input, before it launches anything."""
    block = make_block(ODD, k5=3, n=1, h=3, w=4, seed=24)
    out, scratch = _nan_outputs(block)
    args = [block[k] for k in ("x", "w_red", "b_red", "w_pool", "b_pool")]
    with pytest.raises(ValueError, match="int32 and a multiple of 16"):
        reduce_pool.launch_reduce_pool(*args, out, scratch, counters=torch.zeros(10, dtype=torch.int32))
    with pytest.raises(ValueError, match="int32 and a multiple of 16"):
        reduce_pool.launch_reduce_pool(*args, out, scratch, counters=torch.zeros(16, dtype=torch.int64))
    for bad_out, bad_scratch in ((out[:, :, :2], scratch), (out, scratch[:, :, :, :3])):
        with pytest.raises(ValueError, match="must be 3x4"):
            reduce_pool.launch_reduce_pool(*args, bad_out, bad_scratch)
    assert torch.isnan(out).all() and torch.isnan(scratch).all()


@interpreter_only
def test_launch1_empty_batch_launches_nothing(monkeypatch):
    """An empty batch (CUDA rejects an empty grid) returns without launching the kernel."""
    block = make_block(ODD, k5=3, n=1, h=3, w=4, seed=25)
    out, scratch = _nan_outputs(block)
    args = [block["x"][:0], *(block[k] for k in ("w_red", "b_red", "w_pool", "b_pool"))]
    launched = []
    monkeypatch.setattr(_common, "launch", lambda kernel, *a, **k: launched.append(kernel))
    reduce_pool.launch_reduce_pool(*args, out[:0], scratch[:0])
    assert launched == []
    reduce_pool.launch_reduce_pool(block["x"], *args[1:], out, scratch)  # the recorder does see a launch
    assert launched == [reduce_pool._reduce_pool_kernel] and torch.isnan(out).all()


# ---------------------------------------------------------------------------------------------
# Launch 2 alone (branch_convs.py): strides, alignment units and its argument checks
# ---------------------------------------------------------------------------------------------


def _branches_2_3(block, out):
    """Launch 2's channels of out: branches 2 and 3, [ch1, ch1 + ch3 + ch5)."""
    ch1 = block["w_red"].shape[0] - block["w3"].shape[1] - block["w5"].shape[1]
    return out[:, ch1 : ch1 + block["w3"].shape[0] + block["w5"].shape[0]]


def _launch2_alone(block, out, scratch, config=None):
    """Launch 2 only, on scratch filled with the fp64 reference's reductions, into the given
    (NaN-filled) out; then its slice of out against the reference, and launch 1's slices of out
    (branch 1, the pool branch) untouched."""
    ref_out, ref_scratch = block_reference64(block)
    scratch.copy_(ref_scratch)
    ch1 = block["w_red"].shape[0] - scratch.shape[1]
    branch_convs.launch_branch_convs(
        scratch, block["w3"], block["b3"], block["w5"], block["b5"], out, ch1, config=config
    )
    ref = _branches_2_3(block, ref_out)
    assert ref.std() > 0.1, "reference branches 2 and 3 near zero: the comparison could not fail"
    check_close(_branches_2_3(block, out), ref, TOLERANCE["fp32"], "branches 2 and 3")
    width = ref.shape[1]
    assert torch.isnan(out[:, :ch1]).all() and torch.isnan(out[:, ch1 + width :]).all(), "a store outside launch 2's"


def test_launch2_argument_errors():
    """Launch 2 refuses, before it launches anything: split-K counters too few or not int32, a
    dtype the kernels do not compute in, a branch 3 of even size, and more pixels than 32-bit
    pixel indices reach (on meta tensors: only the arguments are built)."""
    import triton

    from inception_fast import geometry

    block = make_block(ODD, k5=3, n=1, h=3, w=4, seed=27)
    out, scratch = _nan_outputs(block)
    w = [block[k] for k in ("w3", "b3", "w5", "b5")]
    split = triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "SPLIT_K": 2})
    need = branch_convs.split_k_counters(scratch, block["w3"], block["w5"], split)
    for counters in (torch.zeros(need - 1, dtype=torch.int32), torch.zeros(need, dtype=torch.int64)):
        with pytest.raises(ValueError, match=f"launch 2 needs {need} int32 split-K counters"):
            branch_convs.launch_branch_convs(scratch, *w, out, ODD[1], config=split, counters=counters)
    with pytest.raises(TypeError, match="computes in float32, float16 and bfloat16, got torch.float64"):
        branch_convs.launch_branch_convs(scratch.double(), *(t.double() for t in w), out.double(), ODD[1])
    even = torch.zeros(ODD[5], ODD[4], 4, 4).contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="branch 3 must be a square conv of odd size"):
        branch_convs.launch_branch_convs(scratch, *w[:2], even, w[3], out, ODD[1])
    # Shapes that do not fit together (the kernel would read or write past a tensor): out of another
    # size or too narrow for ch1 + ch3 + ch5, weights reading other than scratch's channels, a short bias.
    mismatched = {
        "out of 2 images": ((scratch, *w, out.expand(2, -1, -1, -1), ODD[1]), "must be 1 images of 3x4"),
        "out 3x5": ((scratch, *w, torch.zeros(1, out.shape[1], 3, 5), ODD[1]), "must be 1 images of 3x4"),
        "ch1 past the end": ((scratch, *w, out, out.shape[1] - ODD[3] - ODD[5] + 1), r"holding channels \[10, 25\)"),
        "ch1 negative": ((scratch, *w, out, -1), "ch1 -1"),
        "scratch wider": ((torch.zeros(1, scratch.shape[1] + 1, 3, 4), *w, out, ODD[1]), "must read the 11 channels"),
        "short bias": ((scratch, w[0], w[1][:-1], *w[2:], out, ODD[1]), r"biases of 9 and 6 \(got 8 and 6\)"),
    }
    for what, (args, message) in mismatched.items():
        with pytest.raises(ValueError, match=message):
            branch_convs.launch_branch_convs(*args)
            pytest.fail(f"{what}: launched")
    assert torch.isnan(out).all()
    side = 1 << 15  # 2 x 2^15 x 2^15 = 2^31 pixels
    meta = {k: v.to("meta") for k, v in block.items()}
    big = torch.empty(2, scratch.shape[1], side, side, device="meta").contiguous(memory_format=torch.channels_last)
    big_out = torch.empty(2, out.shape[1], side, side, device="meta").contiguous(memory_format=torch.channels_last)
    assert 2 * side * side >= geometry.PIXEL_ROW_LIMIT
    with pytest.raises(ValueError, match="index pixels with 32 bits"):
        branch_convs._arguments(big, meta["w3"], meta["b3"], meta["w5"], meta["b5"], big_out, ODD[1])


@pytest.mark.parametrize("tf32", [True, False], ids=["tf32", "exact"])
def test_launch2_dot_precision_follows_allow_tf32(tf32, monkeypatch):
    """Launch 2 asks for TF32 products on fp32 operands only while cudnn.allow_tf32 is on, read at
    call time, as the GPU's launch path does (the interpreter multiplies exactly either way:
    test_gpu_fp32 checks the results on a GPU)."""
    monkeypatch.setattr(_common, "INTERPRET", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", tf32)
    block = {k: v.to("meta") for k, v in make_block(ODD, k5=3, n=1, h=3, w=4, seed=29).items()}
    out, scratch = _nan_outputs(block)
    w = [block[k] for k in ("w3", "b3", "w5", "b5")]
    _, meta, _ = branch_convs._arguments(scratch, *w, out, ODD[1])
    assert meta["DOT_PRECISION"] == ("tf32" if tf32 else "ieee")


@interpreter_only
def test_launch2_empty_batch_launches_nothing(monkeypatch):
    """An empty batch (CUDA rejects an empty grid) returns without launching the kernel."""
    block = make_block(ODD, k5=3, n=1, h=3, w=4, seed=28)
    out, scratch = _nan_outputs(block)
    w = [block[k] for k in ("w3", "b3", "w5", "b5")]
    launched = []
    monkeypatch.setattr(_common, "launch", lambda kernel, *a, **k: launched.append(kernel))
    branch_convs.launch_branch_convs(scratch[:0], *w, out[:0], ODD[1])
    assert launched == []
    branch_convs.launch_branch_convs(scratch, *w, out, ODD[1])  # the recorder does see a launch
    assert launched == [branch_convs._branch_convs_kernel] and torch.isnan(out).all()


def test_split_k_buffers_sized_for_every_candidate(monkeypatch):
    """Where the autotuner may pick either split-K config (64x64 and 32x32 tiles, 4 splits), the
    counters cover the config with the most tiles and the workspace the one with the most slot
    elements, over every image of the batch (Inception 3a at 14x14, batch 2: 392 pixels)."""
    monkeypatch.setattr(branch_convs, "_tuned_kernel", branch_convs.make_tuned_kernel())
    scratch = torch.empty(2, 112, 14, 14, device="meta").contiguous(memory_format=torch.channels_last)
    w3, w5 = torch.empty(128, 96, 3, 3, device="meta"), torch.empty(32, 16, 3, 3, device="meta")
    split = [c.kwargs for c in branch_convs.CONFIGS if c.kwargs.get("SPLIT_K", 1) > 1]
    assert sorted((kw["BLOCK_M"], kw["BLOCK_N"], kw["SPLIT_K"]) for kw in split) == [(32, 32, 4), (64, 64, 4)]
    # 32x32 tiles: 13 row tiles x (4 + 1) column tiles = 65, rounded up to 80; 64x64: 7 x (2 + 1) = 21.
    assert branch_convs.split_k_counters(scratch, w3, w5) == 80
    ws, counters = branch_convs._split_k_buffers(scratch, w3, w5, None, None)
    assert counters.numel() == 80 and counters.dtype == torch.int32
    # Slots: 64x64 tiles 21 x 4 splits x 4096 = 344064; 32x32 ones 65 x 4 x 1024 = 266240.
    assert ws.numel() == 344064 and ws.dtype == torch.float32


# (in, ch1, ch3red, ch3, ch5red, ch5, pool): ODD with a branch 3 wider (20: a 32-wide tile) than
# branch 2 (9: 16 wide), so that the two branches' column tiles differ under a 64-wide BLOCK_N.
LAUNCH2_BLOCK = (13, 5, 7, 9, 3, 20, 4)


@interpreter_only
@pytest.mark.parametrize("split", [1, 2])
def test_launch2_every_operand_through_its_own_strides_fp32(split):
    """Launch 2 takes every tensor's real strides and alignment units: scratch a channel slice of a
    wider channels_last buffer (row unit 16), out NCHW with 3x5 maps (row unit 1), w3 a slice of
    (Cout, 3, 3, 16) weights whose other channels hold poison (unit 16), w5 row-major 5x5 (unit 1),
    b3 and b5 every second / third element; branch 3's column tile (32 wide) wider than branch 2's
    (16).  All lie between guard bands: a load past a mask (rows past the 30 pixels, channels past
    cin, columns past cout) reads poison, a store past out hits a band; scratch's other channels
    stay poison.  The interpreter's own tile, and a split-K one."""
    import triton

    block = make_block(LAUNCH2_BLOCK, k5=5, n=2, h=3, w=5, seed=26)
    bands = []
    ch3, r3 = block["w3"].shape[:2]
    w3 = guarded(ch3 * 9 * 16, torch.float32, "cpu", bands).view(ch3, 3, 3, 16).permute(0, 3, 1, 2)[:, :r3]
    block["w3"] = w3.copy_(block["w3"])
    block["w5"] = guarded(block["w5"].numel(), torch.float32, "cpu", bands).view(block["w5"].shape).copy_(block["w5"])
    for name, step in (("b3", 2), ("b5", 3)):
        gapped = guarded(block[name].numel() * step, torch.float32, "cpu", bands).view(-1, step)[:, 0]
        block[name] = gapped.copy_(block[name])
    n, _, h, w = block["x"].shape
    r = r3 + block["w5"].shape[1]
    c_total = _nan_outputs(block)[0].shape[1]
    out = guarded(n * c_total * h * w, torch.float32, "cpu", bands).view(n, c_total, h, w)
    wide = guarded(n * h * w * 16, torch.float32, "cpu", bands).view(n, h, w, 16).permute(0, 3, 1, 2)
    scratch = wide[:, 1 : 1 + r]
    assert _common.row_unit(scratch) == _common.row_unit(w3) == 16
    assert _common.row_unit(out) == _common.row_unit(block["w5"]) == 1
    tile = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "SPLIT_K": split}
    _launch2_alone(block, out, scratch, config=None if split == 1 else triton.Config(tile))
    assert torch.isnan(wide[:, 0]).all() and torch.isnan(wide[:, 1 + r :]).all(), "a store into scratch"
    assert_bands_untouched(bands)
