"""The "hopper" backend's launch 1 (inception_fast/backends/triton/reduce_pool_tma.py: the three 1x1
convs as one GEMM over TMA boxes, the pool branch's gathers, one persistent kernel) against an fp64
plain-PyTorch block, under the Triton interpreter (TRITON_INTERPRET=1, set by tests/conftest.py),
and the hopper block's fallback to the plain launch 1 where TMA cannot describe x or w_red.

The block-level tests of tests/test_hopper.py (every GoogLeNet block's channels, odd shapes, fp16,
the launch count) run both launches on TMA; the ones here pin each config of launch 1 and cover
its descriptors' edge cases.  Outputs are NaN-poisoned (views of larger NaN buffers here), so an
element no program writes, or one written outside its slice, fails.  The GPU test (marked gpu)
runs the compiled kernel on a device of compute capability 9.0 or more and skips elsewhere;
benchmarks/kernel_stats.py (--block tma1) shows what sm_90 code the configs compile to.
"""

from __future__ import annotations

import os
import re

import pytest
import torch

from inception_fast.testing import TOLERANCE, check_close, reduced_precision_bound

pytest.importorskip("triton")

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
interpreter_only = pytest.mark.skipif(not INTERPRET, reason="CPU tests need TRITON_INTERPRET=1 set before import")

from block_cases import ODD, block_reference, block_reference64, make_block  # noqa: E402
from launch_observer import counting_do_bench, observe_launches  # noqa: E402
from unwritten_reads import nan_gapped  # noqa: E402

from inception_fast.backends.triton import (  # noqa: E402
    _common,
    branch_convs,
    branch_convs_tma,
    reduce_pool,
    reduce_pool_tma,
)
from inception_fast.backends.triton import block as tb  # noqa: E402

# (in, ch1, ch3red, ch3, ch5red, ch5, pool), TMA-aligned in fp32 and fp16: 136 input channels are
# 2-5 K steps with a tail at every BLOCK_K (64: 64 + 64 + 8); NR = 72 reduce columns, branch 1's
# 40 inside the first 64-column tile (a tile straddling out and scratch) and a ragged second one.
L1 = (136, 40, 24, 40, 8, 24, 18)
ALIGNED = (40, 20, 24, 40, 8, 24, 18)


def _nan_views(block, extra_images=1):
    """(out, scratch, out's buffer, scratch's buffer): channels_last NaN outputs of the block's
    shape, views of buffers with ``extra_images`` more NaN images after them."""
    x = block["x"]
    n, _, h, w = x.shape
    c_out = block["w_red"].shape[0] - block["w3"].shape[1] - block["w5"].shape[1]
    c_out += block["w3"].shape[0] + block["w5"].shape[0] + block["w_pool"].shape[0]
    c_scratch = block["w3"].shape[1] + block["w5"].shape[1]
    bufs = [
        torch.full((n + extra_images, c, h, w), float("nan"), dtype=x.dtype).contiguous(
            memory_format=torch.channels_last
        )
        for c in (c_out, c_scratch)
    ]
    return bufs[0][:n], bufs[1][:n], bufs[0], bufs[1]


def _launch1(block, out, scratch, **kwargs):
    reduce_pool_tma.launch_reduce_pool_tma(
        block["x"], block["w_red"], block["b_red"], block["w_pool"], block["b_pool"], out, scratch, **kwargs
    )


def _check_launch1(block, out, scratch, tol, what):
    """Launch 1's slices of out (branch 1, the pool branch) and scratch against the fp64 reference;
    branches 2 and 3's slices of out untouched (NaN)."""
    ref_out, ref_scratch = block_reference64(block)
    ch1, pool = block["w_red"].shape[0] - scratch.shape[1], block["w_pool"].shape[0]
    assert ref_out.std() > 0.1, "reference output is near zero: the comparison could not fail"
    check_close(scratch, ref_scratch, tol, f"{what} scratch")
    check_close(out[:, :ch1], ref_out[:, :ch1], tol, f"{what} branch 1")
    check_close(out[:, -pool:], ref_out[:, -pool:], tol, f"{what} pool branch")
    assert torch.isnan(out[:, ch1:-pool]).all(), f"{what}: launch 1 wrote into launch 2's slices"


@interpreter_only
def test_writes_nothing_past_the_last_pixel():
    """Row tiles that overhang the last pixel (2 images of 9x11: 198 rows, tiles of 64 and 128)
    write nothing into the NaN image after out and scratch.  (First in the file: a kernel that does
    write past the end still runs inside the buffers here.)"""
    block = make_block(L1, n=2, h=9, w=11, seed=7)
    for config in (reduce_pool_tma.CONFIGS[0], reduce_pool_tma.CONFIGS[-1]):
        out, scratch, out_buf, scratch_buf = _nan_views(block)
        _launch1(block, out, scratch, config=config)
        what = _common.config_name(config)
        assert torch.isnan(out_buf[2]).all() and torch.isnan(scratch_buf[2]).all(), f"{what} wrote past the end"
        _check_launch1(block, out, scratch, TOLERANCE["fp32"], what)


@interpreter_only
@pytest.mark.parametrize("i", range(len(reduce_pool_tma.CONFIGS)))
def test_every_config_fp32(i):
    """Every config the autotuner can choose on a GPU, pinned: 128- and 64-row tiles, 64- and
    128-column tiles, pool parts of 64 and 128 rows, one or two programs per SM (3 or 6 programs
    here); 136 input channels (K tails) at 9x11."""
    config = reduce_pool_tma.CONFIGS[i]
    block = make_block(L1, n=2 if i % 2 else 1, h=9, w=11, seed=40 + i)
    out, scratch, _, _ = _nan_views(block)
    _launch1(block, out, scratch, config=config)
    _check_launch1(block, out, scratch, TOLERANCE["fp32"], _common.config_name(config))


@interpreter_only
@pytest.mark.parametrize("n,h,w", [(1, 1, 1), (3, 5, 7)])
def test_fp16(n, h, w, poisoned):
    """fp16 through the hopper block with launch 1's configs pinned (both launches on TMA):
    within the table's rule of the same block computed by F.conv2d in fp16."""
    block = make_block(L1, k5=5, n=n, h=h, w=w, dtype=torch.float16, seed=3)
    config = reduce_pool_tma.CONFIGS[n % len(reduce_pool_tma.CONFIGS)]
    out, scratch = tb.block_forward_tma(**block, launch1_config=config)
    ref_out, ref_scratch = block_reference64(block)
    ref_out_low, ref_scratch_low = block_reference(**block)
    assert out.dtype == torch.float16
    check_close(out, ref_out, reduced_precision_bound(ref_out_low, ref_out), "fp16 out")
    check_close(scratch, ref_scratch, reduced_precision_bound(ref_scratch_low, ref_scratch), "fp16 scratch")


@interpreter_only
def test_strided_x_channel_slice():
    """x a channel slice of a wider channels_last tensor (pixels 48 channels apart, starting at
    channel 8: 16-byte aligned in fp32): the descriptor's row stride is the pixel stride, not Cin,
    and the TMA launch 1 runs on it; the channels around the slice are NaN, so a descriptor whose
    boxes reach past Cin (into the next pixel's first 8 channels) fails."""
    block = make_block(ALIGNED, n=2, h=5, w=6, seed=4)
    wide = torch.full((2, 48, 5, 6), float("nan")).contiguous(memory_format=torch.channels_last)
    wide[:, 8:48] = block["x"]
    block["x"] = wide[:, 8:48]
    assert not block["x"].is_contiguous(memory_format=torch.channels_last)
    assert reduce_pool_tma.tma_unsupported_reason(block["x"], block["w_red"]) is None
    out, scratch, _, _ = _nan_views(block)
    _launch1(block, out, scratch)
    _check_launch1(block, out, scratch, TOLERANCE["fp32"], "channel slice")


@interpreter_only
def test_nan_propagates():
    """A NaN in one channel of one input pixel reaches branch 1 and the reductions at exactly that
    pixel, and the pool branch at its 3x3 neighbourhood (as in PyTorch)."""
    block = make_block(ALIGNED, n=1, h=5, w=5, seed=9)
    block["x"][0, 3, 2, 4] = float("nan")
    out, scratch, _, _ = _nan_views(block, extra_images=0)
    _launch1(block, out, scratch)
    one = torch.zeros(5, 5, dtype=torch.bool)
    one[2, 4] = True
    around = torch.zeros(5, 5, dtype=torch.bool)
    around[1:4, 3:5] = True
    assert torch.equal(torch.isnan(out[0, :20]).all(0), one) and not torch.isnan(out[0, :20][:, ~one]).any()
    assert torch.equal(torch.isnan(scratch[0]).all(0), one) and not torch.isnan(scratch[0][:, ~one]).any()
    pool = out[0, -18:]
    assert torch.equal(torch.isnan(pool).all(0), around) and not torch.isnan(pool[:, ~around]).any()


@interpreter_only
def test_zeroes_launch2_counters():
    """Launch 2's split-K counters (passed where launch 2 falls back to the split-K kernel) come out
    zero, whatever they held, and the memory after them (a view of a longer buffer) does not;
    counters that are not int32 multiples of 16 are refused."""
    block = make_block(ALIGNED, n=1, h=3, w=3, seed=1)
    out, scratch, _, _ = _nan_views(block, extra_images=0)
    buf = torch.full((2048 + 16 + 1024,), 7, dtype=torch.int32)
    counters = buf[: 2048 + 16]
    _launch1(block, out, scratch, counters=counters)
    assert not counters.any()
    assert (buf[2048 + 16 :] == 7).all(), "zeroed past the last counter"
    _check_launch1(block, out, scratch, TOLERANCE["fp32"], "with counters")
    with pytest.raises(ValueError, match="int32 and a multiple of 16"):
        _launch1(block, out, scratch, counters=torch.zeros(10, dtype=torch.int32))


def _launched(block, monkeypatch):
    (out, scratch), _, launched = observe_launches(lambda: tb.block_forward_tma(**block), monkeypatch)
    return out, scratch, list(launched)


@interpreter_only
@pytest.mark.parametrize("layout", ["nchw", "misaligned", "odd_channels", "every_other_image"])
def test_fallback_to_the_plain_launch1(layout, poisoned, monkeypatch):
    """Inputs TMA cannot describe: an NCHW x, x starting 4 bytes past a 16-byte boundary, 13 input
    channels (52-byte pixel rows in fp32), x every other image of a batch (its image stride twice
    H*W pixels: no [N*H*W, Cin] view): the reason names the problem, the TMA launcher refuses with
    it, and the hopper block runs the plain launch 1 (launch 2 still on TMA where it can)."""
    if layout == "odd_channels":
        block = make_block(ODD, k5=5, n=2, h=3, w=4, seed=2)
        expected, launch2 = "x's pixel stride (13 torch.float32 elements, 52 bytes) is not a multiple of 16 bytes", None
    else:
        block = make_block(ALIGNED, n=4 if layout == "every_other_image" else 2, h=5, w=3, seed=5)
        launch2 = branch_convs_tma._branch_convs_tma_kernel
        if layout == "nchw":
            block["x"] = block["x"].contiguous()
            expected = "x is not channels_last"
        elif layout == "every_other_image":
            block["x"] = block["x"][::2]
            expected = "pixels are not evenly strided"
        else:
            shifted = torch.empty(2 * 5 * 3 * 40 + 1)[1:].view(2, 5, 3, 40).permute(0, 3, 1, 2)
            shifted.copy_(block["x"])
            block["x"] = shifted
            expected = "x's base address is not 16-byte aligned (data_ptr() % 16 = 4)"
    why = reduce_pool_tma.tma_unsupported_reason(block["x"], block["w_red"])
    assert why is not None and expected in why, why
    out, scratch, launched = _launched(block, monkeypatch)
    assert len(launched) == 2 and launched[0] is reduce_pool._reduce_pool_kernel, launched
    if launch2 is not None:
        assert launched[1] is launch2
    ref_out, ref_scratch = block_reference64(block)
    check_close(out, ref_out, TOLERANCE["fp32"], f"{layout} out")
    check_close(scratch, ref_scratch, TOLERANCE["fp32"], f"{layout} scratch")
    with pytest.raises(ValueError, match="launch 1 with TMA cannot describe these tensors: " + re.escape(why)):
        _launch1(block, *_outputs(block))


@interpreter_only
def test_tma_launch1_with_the_plain_launch2(poisoned, monkeypatch):
    """Where TMA can describe x but not scratch (here: launch 2's check made to object), the block
    runs the TMA launch 1 and the plain launch 2, and is still right."""
    monkeypatch.setattr(branch_convs_tma, "tma_unsupported_reason", lambda *a: "objecting for the test")
    block = make_block(L1, k5=5, n=3, h=4, w=3, seed=6)
    out, scratch, launched = _launched(block, monkeypatch)
    assert launched == [reduce_pool_tma._reduce_pool_tma_kernel, branch_convs._branch_convs_kernel]
    ref_out, ref_scratch = block_reference64(block)
    check_close(out, ref_out, TOLERANCE["fp32"], "mixed out")
    check_close(scratch, ref_scratch, TOLERANCE["fp32"], "mixed scratch")


def _outputs(block):
    from inception_fast import geometry

    return geometry.empty_outputs(block["x"], block["w_red"], block["w_pool"], block["w3"], block["w5"])


@interpreter_only
def test_unsupported_weights():
    """w_red with a strided Cin axis, a base address or a row stride that is not a 16-byte
    multiple, is refused with the reason."""
    block = make_block(ALIGNED, n=1, h=3, w=3)
    x, w_red = block["x"], block["w_red"]
    assert reduce_pool_tma.tma_unsupported_reason(x, w_red) is None
    why = reduce_pool_tma.tma_unsupported_reason(x, w_red.t().contiguous().t())
    assert why is not None and why.startswith("w_red is not [NR, Cin]")
    why = reduce_pool_tma.tma_unsupported_reason(x, torch.empty(52, 41)[:, :40])
    assert why == "w_red's row stride (41 torch.float32 elements, 164 bytes) is not a multiple of 16 bytes", why
    shifted = torch.empty(52 * 40 + 1)[1:].view(52, 40)
    why = reduce_pool_tma.tma_unsupported_reason(x, shifted)
    assert why == "w_red's base address is not 16-byte aligned (data_ptr() % 16 = 4)", why


@interpreter_only
def test_wide_pool_strided_biases_and_pool_weights():
    """A pool branch of 136 channels (two 128-column pool tiles) with 64-row pool parts of 128-row
    tiles (CONFIGS[1]) and with the interpreter's tile; the biases views of stride 2 and 3, w_pool
    a transposed (column-major) view and w_red a slice of wider rows (48 elements apart, the 8
    after Cin NaN): every channel of both roles is right."""
    cfg = (40, 20, 24, 40, 8, 24, 136)
    block = make_block(cfg, n=1, h=9, w=11, seed=23)
    w_red = torch.full((block["w_red"].shape[0], 48), float("nan"))
    w_red[:, :40] = block["w_red"]
    block["w_red"] = w_red[:, :40]
    assert reduce_pool_tma.tma_unsupported_reason(block["x"], block["w_red"]) is None
    block["b_red"] = nan_gapped(block["b_red"], 2)
    block["b_pool"] = nan_gapped(block["b_pool"], 3)
    block["w_pool"] = block["w_pool"].t().contiguous().t()
    assert block["w_pool"].stride() == (1, 136)
    for config in (reduce_pool_tma.CONFIGS[1], None):
        assert config is None or config.kwargs["BLOCK_M"] // config.kwargs["BLOCK_M_POOL"] == 2
        out, scratch, _, _ = _nan_views(block, extra_images=0)
        _launch1(block, out, scratch, config=config)
        what = "interpreter tile" if config is None else _common.config_name(config)
        _check_launch1(block, out, scratch, TOLERANCE["fp32"], what)


@interpreter_only
@pytest.mark.parametrize(
    "cfg",
    [(32, 16, 16, 24, 16, 16, 16), (32, 16, 12, 24, 6, 8, 16)],
    ids=["pool_col0_unit", "scratch_row_unit"],
)
def test_channel_and_row_units(cfg):
    """Channel counts and strides travel divided by their common power-of-two unit: with Cin, NR,
    ch1 and the pool width multiples of 16 but the pool branch's first channel (56) of 8 only, and
    with x and out rows multiples of 16 but scratch's (18 channels) of 2 only, every output is right."""
    block = make_block(cfg, n=2, h=3, w=5, seed=24)
    assert reduce_pool_tma.tma_unsupported_reason(block["x"], block["w_red"]) is None
    out, scratch, _, _ = _nan_views(block, extra_images=0)
    _launch1(block, out, scratch)
    _check_launch1(block, out, scratch, TOLERANCE["fp32"], str(cfg))


@interpreter_only
def test_refuses_outputs_of_another_size():
    """out or scratch of another height or width than x is refused before any launch (larger ones
    here, so that a launcher that does not refuse still writes inside them)."""
    block = make_block(ALIGNED, n=1, h=3, w=4, seed=26)
    out, scratch = _outputs(block)
    taller = torch.empty(1, scratch.shape[1], 4, 4).contiguous(memory_format=torch.channels_last)
    expected = "launch 1: out (1, 102, 3, 4) and scratch (1, 32, 4, 4) must be 3x4"
    with pytest.raises(ValueError, match=re.escape(expected)):
        _launch1(block, out, taller)
    with pytest.raises(ValueError, match="must be 3x4"):
        _launch1(block, out[..., :3], scratch)


def test_stored_config_names_name_one_config_each():
    """The TMA launchers' autotuners, whose choices the choice store keeps by config_name: each
    name names one of their configs (tile, warps and stages), so the config read back is the one
    chosen."""
    for module in (reduce_pool_tma, branch_convs_tma):
        configs = module.make_tuned_kernel().configs
        names = {_common.config_name(c) for c in configs}
        assert len(names) == len(configs), module.__name__


@interpreter_only
def test_autotuned_launch_path(monkeypatch, tmp_path):
    """The GPU's launch path run by the interpreter, with a stand-in do_bench: every config's
    pre_hook gives the descriptors that config's boxes; the second launch of a shape starts the
    kernel with the chosen config directly, the launcher setting the boxes; a new process (the
    memos dropped) reads the chosen config from the choice store and benchmarks nothing."""
    import triton

    from inception_fast.choice_store import ENV_CHOICE_CACHE, STORE

    monkeypatch.setenv(ENV_CHOICE_CACHE, str(tmp_path))
    STORE.forget()
    fake_do_bench, benchmarked = counting_do_bench()
    configs = [
        triton.Config({"BLOCK_M": 32, "BLOCK_N": 16, "BLOCK_K": 16}),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 32, "BLOCK_K": 32, "BLOCK_M_POOL": 32, "BLOCK_K_POOL": 32}),
    ]
    tuned = reduce_pool_tma.make_tuned_kernel(configs, do_bench=fake_do_bench)
    monkeypatch.setattr(reduce_pool_tma, "_tuned_kernel", tuned)

    def run(seed):
        block = make_block(L1, n=2, h=5, w=4, seed=seed)
        out, scratch, _, _ = _nan_views(block)
        _launch1(block, out, scratch)
        _check_launch1(block, out, scratch, TOLERANCE["fp32"], f"seed {seed}")

    run(1)
    assert len(benchmarked) == 2 and len(tuned.cache) == 1
    run(2)
    assert len(benchmarked) == 2 and list(_common._TUNED_CONFIGS[tuned].values()) == [tuned.best_config]
    chosen = _common.config_name(tuned.best_config)
    del _common._TUNED_CONFIGS[tuned]  # a new process: no memo, an empty autotuner cache
    tuned.cache.clear()
    STORE.forget()
    tuned.best_config = None
    run(3)
    assert len(benchmarked) == 2 and tuned.best_config is None  # launched with the stored config
    assert [_common.config_name(c) for c in _common._TUNED_CONFIGS[tuned].values()] == [chosen]
    STORE.forget()


def test_configs_are_complete():
    """Every config carries the pool role's tile, a pool part that divides its rows, and the pre_hook
    that sets the descriptors' boxes; a pinned config whose pool rows do not divide BLOCK_M is refused."""
    import triton

    for c in reduce_pool_tma.CONFIGS:
        assert {"BLOCK_M_POOL", "BLOCK_K_POOL", "POOL_STAGES", "PROGRAMS_PER_SM"} <= set(c.kwargs)
        assert c.kwargs["BLOCK_M"] % c.kwargs["BLOCK_M_POOL"] == 0 and c.pre_hook is not None
    assert {c.kwargs["BLOCK_M"] for c in reduce_pool_tma.CONFIGS} == {64, 128}
    assert {c.kwargs["BLOCK_N"] for c in reduce_pool_tma.CONFIGS} == {64, 128}
    with pytest.raises(ValueError, match="BLOCK_M_POOL 48 must divide BLOCK_M 64"):
        reduce_pool_tma._with_pool_tile(
            triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "BLOCK_M_POOL": 48}).kwargs
        )


def test_prune():
    """fp16/bf16: every config fits one SM (PROGRAMS_PER_SM of them); fp32, whose stages are twice
    as large, loses the deep 128x128 config and the two-per-SM 128-row ones, and keeps the others.
    The small-problem configs only up to SMALL_PROBLEM_PIXELS."""
    configs, small = reduce_pool_tma.CONFIGS, reduce_pool_tma.SMALL_PROBLEM_CONFIGS
    assert small and all(c in configs for c in small)
    m_small, m_large = _common.SMALL_PROBLEM_PIXELS, _common.SMALL_PROBLEM_PIXELS + 1
    for dtype in (torch.float16, torch.bfloat16):
        x = torch.empty(0, dtype=dtype)
        assert reduce_pool_tma._prune(configs, {"x_ptr": x, "M": m_small}) == configs
        assert reduce_pool_tma._prune(configs, {"x_ptr": x, "M": m_large}) == [c for c in configs if c not in small]
    kept = reduce_pool_tma._prune(configs, {"x_ptr": torch.empty(0), "M": m_small})
    dropped = [c for c in configs if c not in kept]
    assert [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_stages, c.kwargs["PROGRAMS_PER_SM"]) for c in dropped] == [
        (128, 128, 4, 1),
        (128, 64, 3, 2),
        (128, 64, 3, 2),
    ]


def test_programs_per_sm_fit_the_register_file():
    """PROGRAMS_PER_SM programs of every config fit an SM's 64K registers whatever ptxas allocates
    (at most 255 a thread, allocated per warp in 256-register units: 8192 a warp), and the
    shared-memory rule counts the 1 KB each resident block reserves."""
    for c in reduce_pool_tma.CONFIGS:
        kwargs = reduce_pool_tma._with_pool_tile(c.kwargs)
        assert kwargs["PROGRAMS_PER_SM"] * c.num_warps * 8192 <= 65536, _common.config_name(c)
    fit = reduce_pool_tma.programs_fit
    assert fit(1, reduce_pool_tma.BLOCK_SHARED_BYTES) and not fit(1, reduce_pool_tma.BLOCK_SHARED_BYTES + 1)
    half = reduce_pool_tma.SM_SHARED_BYTES // 2 - reduce_pool_tma.SHARED_RESERVED_PER_BLOCK
    assert fit(2, half) and not fit(2, half + 1)


# ---------------------------------------------------------------------------------------------
# GPU (sm_90+): skipped without one
# ---------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("i", range(len(reduce_pool_tma.CONFIGS)))
def test_gpu_every_config_bf16(i, hopper_gpu, few_tma_programs, poisoned):
    """Each config, pinned, on 3b's channels at 28x28, batch 2, bf16, through the hopper block, on 5
    programs per PROGRAMS_PER_SM (few_tma_programs): each strides over many tiles of both roles
    (65 to 175 tiles, by config)."""
    from inception_fast.reference import BLOCK_CONFIGS

    block = make_block(
        BLOCK_CONFIGS["inception3b"], k5=5, n=2, h=28, w=28, dtype=torch.bfloat16, device=hopper_gpu, seed=14
    )
    config = reduce_pool_tma.CONFIGS[i]
    out, scratch = tb.block_forward_tma(**block, launch1_config=config, config=branch_convs_tma.CONFIGS[0])
    torch.cuda.synchronize()
    ref_out, ref_scratch = block_reference64(block)
    ref_low, ref_scratch_low = block_reference(**block)
    what = _common.config_name(config)
    check_close(out, ref_out, reduced_precision_bound(ref_low, ref_out), what)
    check_close(scratch, ref_scratch, reduced_precision_bound(ref_scratch_low, ref_scratch), what)
