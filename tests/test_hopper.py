"""The "hopper" backend (both launches with TMA descriptors and a persistent grid:
inception_fast/backends/triton/reduce_pool_tma.py and branch_convs_tma.py) against an fp64
plain-PyTorch block, under the Triton interpreter (TRITON_INTERPRET=1, set by tests/conftest.py).
tests/test_hopper_launch1.py tests launch 1's configs, edge cases and fallback on their own.

Outputs are NaN-poisoned, so an element no kernel writes fails the comparison.  The interpreter
runs the descriptors' loads with TMA's rules (out-of-bounds boxes, negative coordinates included,
read as zeros), not the GPU's pipeline; the GPU tests (marked gpu) run the compiled kernel on a
device of compute capability 9.0 or more and skip elsewhere.  benchmarks/kernel_stats.py shows
what sm_90 code the configs compile to.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from uninterpreted import run_python
from unwritten_reads import nan_gapped

from inception_fast.reference import BLOCK_CONFIGS
from inception_fast.testing import TOLERANCE, check_close, reduced_precision_bound

pytest.importorskip("triton")

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
interpreter_only = pytest.mark.skipif(not INTERPRET, reason="CPU tests need TRITON_INTERPRET=1 set before import")

from block_cases import ODD, block_reference, block_reference64, make_block  # noqa: E402
from launch_observer import counting_do_bench, observe_launches  # noqa: E402

from inception_fast.backends.triton import (  # noqa: E402
    _common,
    branch_convs,
    branch_convs_tma,
    reduce_pool,
    reduce_pool_tma,
)
from inception_fast.backends.triton import block as tb  # noqa: E402

# (in, ch1, ch3red, ch3, ch5red, ch5, pool), TMA-aligned in fp32 and fp16 (channel counts multiples
# of 8): branch 2's 24 input channels leave a K tail at every BLOCK_K, branch 3's 8 one at its
# BLOCK_K5 of 16; 40 and 24 output channels leave ragged column tiles.
ALIGNED = (40, 20, 24, 40, 8, 24, 18)
# For the SWAP_AB configs, whose BLOCK_K (16, 32, 64) must divide branch 2's input channels.
ALIGNED_64 = (40, 20, 64, 40, 8, 24, 18)


def check_hopper(block, what, tol=None):
    out, scratch = tb.block_forward_tma(**block)
    ref_out, ref_scratch = block_reference64(block)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert ref_out.std() > 0.1, "reference output is near zero: the comparison could not fail"
    if block["x"].dtype == torch.float32:
        check_close(scratch, ref_scratch, tol or TOLERANCE["fp32"], f"{what} scratch")
        check_close(out, ref_out, tol or TOLERANCE["fp32"], f"{what} out")
    else:
        ref_out_low, ref_scratch_low = block_reference(**block)
        check_close(out, ref_out, reduced_precision_bound(ref_out_low, ref_out), f"{what} out")
        check_close(scratch, ref_scratch, reduced_precision_bound(ref_scratch_low, ref_scratch), f"{what} scratch")
    return out, scratch


# The aten ops the forward may issue: allocations and the views the TMA descriptors are built on
# (no kernel).  The poisoning fixture's fills are not recorded (unwritten_reads.poison).
ALLOWED_ATEN = {
    "aten.empty.memory_format",
    "aten.empty_strided.default",
    "aten.permute.default",
    "aten.slice.Tensor",
}


def _two_launches(block, monkeypatch):
    """The block through the hopper backend's forward, observed and then checked: (out, kernels
    launched); exactly two launches and no other kernel (no cat)."""
    before = tb.launch_count()
    (out, _), aten_ops, launched = observe_launches(lambda: tb.block_forward_tma(**block), monkeypatch)
    launched = list(launched)  # the check below launches again, still observed
    assert tb.launch_count() - before == 2 and len(launched) == 2
    unexpected = sorted(set(aten_ops) - ALLOWED_ATEN)
    assert aten_ops and not unexpected, f"unexpected aten ops: {unexpected}"
    check_hopper(block, "observed")
    return out, launched


@interpreter_only
def test_writes_nothing_past_the_image_edge():
    """Launch 2 into ``out``, a view of a larger buffer whose extra image is NaN: pixel rectangles
    that overhang the image's right and bottom edges (9x11 with 8x8 and 8x16 tiles) write nothing
    into the next row or past the last image, and every pixel of ``out`` is right.  (First in the
    file: a kernel that does write past the edge still runs inside the buffer here.)"""
    block = make_block(ALIGNED, k5=5, n=2, h=9, w=11, seed=7)
    out_ref, scratch = tb.block_forward(**block)
    c0, c1 = ALIGNED[1], ALIGNED[1] + ALIGNED[3] + ALIGNED[5]
    for config in (branch_convs_tma.CONFIGS[0], branch_convs_tma.CONFIGS[3]):
        big = torch.full((3, *out_ref.shape[1:]), float("nan")).contiguous(memory_format=torch.channels_last)
        out = big[:2]
        branch_convs_tma.launch_branch_convs_tma(
            scratch, block["w3"], block["b3"], block["w5"], block["b5"], out, ALIGNED[1], config=config
        )
        assert torch.isnan(big[2]).all(), f"{_common.config_name(config)} wrote past the last image"
        check_close(out[:, c0:c1], out_ref[:, c0:c1], TOLERANCE["fp32"], _common.config_name(config))


@interpreter_only
@pytest.mark.parametrize("name", list(BLOCK_CONFIGS))
def test_googlenet_blocks_fp32(name, poisoned, monkeypatch):
    """Every GoogLeNet block's channels, odd sizes, k 3 and 5, batch 1 and 3: two launches, both
    the TMA kernels, no cat."""
    i = list(BLOCK_CONFIGS).index(name)
    size = (7, 5, 3, 1)[i % 4]
    block = make_block(BLOCK_CONFIGS[name], k5=3 if i % 2 == 0 else 5, n=1 if i % 3 else 3, h=size, w=size, seed=i)
    _, launched = _two_launches(block, monkeypatch)
    assert launched == [reduce_pool_tma._reduce_pool_tma_kernel, branch_convs_tma._branch_convs_tma_kernel]


@interpreter_only
@pytest.mark.parametrize("n,k5,h,w", [(1, 3, 7, 5), (3, 5, 3, 7), (1, 5, 1, 1), (3, 3, 9, 17)])
def test_odd_shapes(n, k5, h, w, poisoned):
    """Several pixel rectangles per image (9x17 with 8x8 tiles: 2 x 3), ragged at both edges."""
    check_hopper(make_block(ALIGNED, k5=k5, n=n, h=h, w=w, seed=n + k5), f"n={n} k5={k5} {h}x{w}")


@interpreter_only
@pytest.mark.parametrize("i", range(len(branch_convs_tma.CONFIGS)))
def test_every_config_fp32(i, poisoned):
    """Every config the autotuner can choose on a GPU, pinned: 8x16 and 8x8 rectangles, column and
    K tiles, with and without SWAP_AB; 2 images of 9x11 (two rectangles per image in each direction
    with the 8-row tiles)."""
    config = branch_convs_tma.CONFIGS[i]
    cfg = ALIGNED_64 if config.kwargs["SWAP_AB"] else ALIGNED
    block = make_block(cfg, k5=5 if i % 2 else 3, n=2, h=9, w=11, seed=40 + i)
    out, scratch = tb.block_forward(**block)  # launch 1 and the reference launch 2
    out.fill_(float("nan"))
    branch_convs_tma.launch_branch_convs_tma(
        scratch, block["w3"], block["b3"], block["w5"], block["b5"], out, cfg[1], config=config
    )
    ref_out, _ = block_reference64(block)
    c0, c1 = cfg[1], cfg[1] + cfg[3] + cfg[5]
    check_close(out[:, c0:c1], ref_out[:, c0:c1], TOLERANCE["fp32"], _common.config_name(config))
    assert torch.isnan(out[:, :c0]).all() and torch.isnan(out[:, c1:]).all(), "launch 2 wrote outside its slices"


@interpreter_only
def test_swap_configs_only_where_block_k_divides_ch3red():
    """SWAP_AB reads the weights through a flat [Cout, kh*kw*Cin] view, whose K blocks would run
    into the next tap's weights unless BLOCK_K divides ch3red: the autotuner's prune drops those
    configs, and a pinned one is refused."""
    swaps = [c for c in branch_convs_tma.CONFIGS if c.kwargs["SWAP_AB"]]
    assert swaps and {c.kwargs["BLOCK_K"] for c in swaps} == {16, 32, 64}
    kept = branch_convs_tma._prune_swap(branch_convs_tma.CONFIGS, {"cin3": 112})  # 4b
    assert [c for c in kept if c.kwargs["SWAP_AB"]] == [c for c in swaps if c.kwargs["BLOCK_K"] == 16]
    assert len(branch_convs_tma._prune_swap(branch_convs_tma.CONFIGS, {"cin3": 192})) == len(branch_convs_tma.CONFIGS)
    assert not any(c.kwargs["SWAP_AB"] for c in branch_convs_tma._prune_swap(branch_convs_tma.CONFIGS, {"cin3": 24}))
    block = make_block(ALIGNED, n=1, h=3, w=3)
    out, scratch = tb.block_forward(**block)
    with pytest.raises(ValueError, match="SWAP_AB needs BLOCK_K to divide branch 2's 24 input channels"):
        branch_convs_tma.launch_branch_convs_tma(
            scratch, block["w3"], block["b3"], block["w5"], block["b5"], out, 20, config=swaps[0]
        )


@interpreter_only
@pytest.mark.parametrize("cfg,k5", [(BLOCK_CONFIGS["inception4b"], 5), (ALIGNED, 3)])
def test_fp16(cfg, k5, poisoned):
    """fp16: within the table's rule of the same block computed by F.conv2d in fp16."""
    out, _ = check_hopper(make_block(cfg, k5=k5, n=3, h=5, w=3, dtype=torch.float16, seed=3), "fp16")
    assert out.dtype == torch.float16


# (the branch a NaN goes into, branch 3's kernel, the map's side, the scratch channel and pixel of the
# NaN, the rows and columns of the output it must reach): branch 2 reads scratch channels 0-23 with
# its 3x3, branch 3 channels 24-39 with its k×k.
NAN_CASES = {
    "branch2": (3, 5, (2, 2, 3), (slice(1, 4), slice(2, 5))),
    "branch3": (5, 7, (24 + 5, 1, 4), (slice(0, 4), slice(2, 7))),
}


@interpreter_only
@pytest.mark.parametrize("branch", list(NAN_CASES))
def test_nan_propagates(branch, poisoned):
    """A NaN in one input channel of one pixel of a branch reaches, through its conv, exactly that
    pixel's k×k neighbourhood in that branch's output (as in PyTorch), and nothing of the other
    branch's (their channel slices of scratch meet, branch 3's starting where branch 2's ends)."""
    k5, side, (c, h, w), rows_cols = NAN_CASES[branch]
    block = make_block(ALIGNED, k5=k5, n=1, h=side, w=side, seed=9 if branch == "branch2" else 10)
    out, scratch = tb.block_forward(**block)
    scratch[0, c, h, w] = float("nan")
    out.fill_(float("nan"))
    branch_convs_tma.launch_branch_convs_tma(scratch, block["w3"], block["b3"], block["w5"], block["b5"], out, 20)
    hit, other = (out[0, 20:60], out[0, 60:84]) if branch == "branch2" else (out[0, 60:84], out[0, 20:60])
    expected = torch.zeros(side, side, dtype=torch.bool)
    expected[rows_cols] = True
    assert torch.equal(torch.isnan(hit).all(0), expected) and not torch.isnan(hit[:, ~expected]).any()
    assert not torch.isnan(other).any()


@interpreter_only
def test_unaligned_channels_fall_back(poisoned, monkeypatch):
    """Channel counts TMA cannot describe (ODD's 7 and 3 input channels: 28 and 12 bytes in fp32):
    the TMA launcher refuses with the reason, and the backend's forward runs the pointer launch 2."""
    block = make_block(ODD, k5=5, n=2, h=3, w=4, seed=2)
    _, launched = _two_launches(block, monkeypatch)
    assert launched == [reduce_pool._reduce_pool_kernel, branch_convs._branch_convs_kernel]
    out, scratch = tb.block_forward(**block)
    why = branch_convs_tma.tma_unsupported_reason(scratch, block["w3"], block["w5"])
    assert why is not None and "16-byte" in why
    with pytest.raises(ValueError, match="launch 2 with TMA cannot describe these tensors: scratch's rows"):
        branch_convs_tma.launch_branch_convs_tma(scratch, block["w3"], block["b3"], block["w5"], block["b5"], out, 5)
    aligned = make_block(ALIGNED, n=1, h=3, w=3)
    _, scratch = tb.block_forward(**aligned)
    assert branch_convs_tma.tma_unsupported_reason(scratch, aligned["w3"], aligned["w5"]) is None
    why = branch_convs_tma.tma_unsupported_reason(scratch, aligned["w3"].contiguous(), aligned["w5"])
    assert why is not None and why.startswith("w3 is not channels_last")


@interpreter_only
def test_autotuned_launch_path(monkeypatch, poisoned, tmp_path):
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
        triton.Config({"BLOCK_H": 4, "BLOCK_W": 8, "BLOCK_N": 16, "BLOCK_K": 16}),
        triton.Config({"BLOCK_H": 8, "BLOCK_W": 4, "BLOCK_N": 32, "BLOCK_K": 16}),
    ]
    tuned = branch_convs_tma.make_tuned_kernel(configs, do_bench=fake_do_bench)
    monkeypatch.setattr(branch_convs_tma, "_tuned_kernel", tuned)
    check_hopper(make_block(ALIGNED, k5=5, n=2, h=6, w=9, seed=1), "autotuned")
    assert len(benchmarked) == 2 and len(tuned.cache) == 1
    block = make_block(ALIGNED, k5=5, n=2, h=6, w=9, seed=2)
    _, launched = _two_launches(block, monkeypatch)
    assert launched == [reduce_pool_tma._reduce_pool_tma_kernel, branch_convs_tma._branch_convs_tma_kernel]
    assert len(benchmarked) == 2 and list(_common._TUNED_CONFIGS[tuned].values()) == [tuned.best_config]
    chosen = _common.config_name(tuned.best_config)
    del _common._TUNED_CONFIGS[tuned]  # a new process: no memo, an empty autotuner cache
    tuned.cache.clear()
    STORE.forget()
    tuned.best_config = None
    check_hopper(make_block(ALIGNED, k5=5, n=2, h=6, w=9, seed=3), "from the store")
    assert len(benchmarked) == 2 and tuned.best_config is None  # launched with the stored config
    assert [_common.config_name(c) for c in _common._TUNED_CONFIGS[tuned].values()] == [chosen]
    STORE.forget()


@interpreter_only
def test_backend_registry_op_and_backward():
    """ "hopper" is a registered backend, available here (interpreter), refused below sm_90 with the
    reason; the op runs it, and its gradients come from the torch backend's ATen chain."""
    from inception_fast import FusedInception, Inception, available_backends, backends, ops

    assert "hopper" in backends.names() and "hopper" in available_backends("cpu")
    assert set(backends.get("hopper").kernels) == {"inception_block", "inception_block_backward"}
    block = make_block(ALIGNED, k5=3, n=1, h=4, w=4, seed=5)
    out = ops.inception_block(*block.values(), backend="hopper")
    check_close(out, block_reference64(block)[0], TOLERANCE["fp32"])

    torch.manual_seed(0)
    ref = Inception(*ALIGNED).eval()
    fused = FusedInception.from_torchvision(ref, backend="hopper").eval()
    x = torch.randn(2, ALIGNED[0], 4, 5).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    fused(x).square().sum().backward()
    ref(x_ref).square().sum().backward()
    check_close(x.grad, x_ref.grad, TOLERANCE["fp32"], "input gradient")


@interpreter_only
def test_hopper_tma2_runs_the_plain_launch1(poisoned, monkeypatch):
    """ "hopper_tma2" is the plain launch 1 (reduce_pool.py) with the TMA launch 2, on an input the
    TMA launch 1 could describe too, and matches the reference; its backward is the torch backend's."""
    from inception_fast import backends

    backend = backends.get("hopper_tma2")
    assert backend.op("inception_block_backward") is backends.get("torch").op("inception_block_backward")
    block = make_block(ALIGNED, k5=5, n=2, h=5, w=3, seed=4)
    assert reduce_pool_tma.tma_unsupported_reason(block["x"], block["w_red"]) is None
    (out, scratch), _, launched = observe_launches(lambda: backend.op("inception_block")(*block.values()), monkeypatch)
    assert launched == [reduce_pool._reduce_pool_kernel, branch_convs_tma._branch_convs_tma_kernel], launched
    ref_out, ref_scratch = block_reference64(block)
    check_close(out, ref_out, TOLERANCE["fp32"], "hopper_tma2 out")
    check_close(scratch, ref_scratch, TOLERANCE["fp32"], "hopper_tma2 scratch")


@interpreter_only
def test_strided_biases_and_nchw_out():
    """Launch 2 with bias views of element strides 2 and 3 (b3 and b5 apart) into an NCHW ``out``
    (channel stride H*W, not 1): every element of both slices is right, the rest of out untouched."""
    block = make_block(ALIGNED, k5=5, n=2, h=5, w=6, seed=21)
    _, scratch = tb.block_forward(**block)
    ref_out, _ = block_reference64(block)
    b3, b5 = nan_gapped(block["b3"], 2), nan_gapped(block["b5"], 3)
    assert (b3.stride(0), b5.stride(0)) == (2, 3)
    out = torch.full(ref_out.shape, float("nan"))
    assert out.is_contiguous() and out.stride(1) == 30
    branch_convs_tma.launch_branch_convs_tma(scratch, block["w3"], b3, block["w5"], b5, out, ALIGNED[1])
    c0, c1 = ALIGNED[1], ALIGNED[1] + ALIGNED[3] + ALIGNED[5]
    check_close(out[:, c0:c1], ref_out[:, c0:c1], TOLERANCE["fp32"], "strided biases, NCHW out")
    assert torch.isnan(out[:, :c0]).all() and torch.isnan(out[:, c1:]).all(), "launch 2 wrote outside its slices"


@interpreter_only
def test_branch3_writes_nothing_past_the_last_image():
    """Branch 2 with three 64-column tiles per pixel rectangle (136 channels) and branch 3 with one
    (the interpreter's tile): the persistent loop runs exactly branch 3's own tiles, so nothing lands
    in the NaN images after ``out``, and both slices are right."""
    cfg = (40, 20, 24, 136, 8, 24, 18)
    block = make_block(cfg, k5=3, n=1, h=5, w=7, seed=22)
    _, scratch = tb.block_forward(**block)
    ref_out, _ = block_reference64(block)
    big = torch.full((3, *ref_out.shape[1:]), float("nan")).contiguous(memory_format=torch.channels_last)
    out = big[:1]
    branch_convs_tma.launch_branch_convs_tma(scratch, block["w3"], block["b3"], block["w5"], block["b5"], out, cfg[1])
    assert torch.isnan(big[1:]).all(), "launch 2 wrote past the last image"
    c0, c1 = cfg[1], cfg[1] + cfg[3] + cfg[5]
    check_close(out[:, c0:c1], ref_out[:, c0:c1], TOLERANCE["fp32"], "136 + 24 channels")


def test_tma_refuses_what_descriptors_cannot_describe():
    """tma_unsupported_reason objects to a branch-3 slice that starts off a 16-byte boundary (6 + 2
    fp32 channels: 32-byte pixel rows, but branch 3 at byte 24), and to a w5 that is NCHW or starts
    off a 16-byte boundary (w3 fine): the interpreter's descriptors would not notice, a GPU's would."""
    scratch = torch.zeros(1, 8, 3, 3).contiguous(memory_format=torch.channels_last)
    w3 = torch.zeros(16, 6, 3, 3).contiguous(memory_format=torch.channels_last)
    w5 = torch.zeros(16, 2, 5, 5).contiguous(memory_format=torch.channels_last)
    why = branch_convs_tma.tma_unsupported_reason(scratch, w3, w5)
    assert why is not None and "branch 3's channel offset (6)" in why, why
    scratch = torch.zeros(1, 24, 3, 3).contiguous(memory_format=torch.channels_last)
    w3 = torch.zeros(16, 16, 3, 3).contiguous(memory_format=torch.channels_last)
    w5 = torch.zeros(16, 8, 5, 5).contiguous(memory_format=torch.channels_last)
    assert branch_convs_tma.tma_unsupported_reason(scratch, w3, w5) is None
    why = branch_convs_tma.tma_unsupported_reason(scratch, w3, w5.contiguous())
    assert why is not None and why.startswith("w5 is not channels_last"), why
    shifted = torch.zeros(16 * 8 * 25 + 1)[1:].view(16, 5, 5, 8).permute(0, 3, 1, 2)
    assert shifted.stride() == w5.stride() and shifted.data_ptr() % 16 == 4
    why = branch_convs_tma.tma_unsupported_reason(scratch, w3, shifted)
    assert why is not None and why.startswith("w5's rows are not 16-byte aligned"), why


@interpreter_only
def test_empty_batch_launches_nothing(monkeypatch):
    """An empty batch (CUDA rejects an empty grid): both TMA launchers return without launching."""
    block = make_block(ALIGNED, k5=5, n=1, h=3, w=4, seed=27)
    out, scratch = tb.block_forward(**block)
    launched = []
    monkeypatch.setattr(_common, "launch", lambda kernel, *a, **k: launched.append(kernel))
    reduce_pool_tma.launch_reduce_pool_tma(
        block["x"][:0], block["w_red"], block["b_red"], block["w_pool"], block["b_pool"], out[:0], scratch[:0]
    )
    branch_convs_tma.launch_branch_convs_tma(
        scratch[:0], block["w3"], block["b3"], block["w5"], block["b5"], out[:0], ALIGNED[1]
    )
    assert launched == []
    branch_convs_tma.launch_branch_convs_tma(  # the recorder does see a launch
        scratch, block["w3"], block["b3"], block["w5"], block["b5"], out, ALIGNED[1]
    )
    assert launched == [branch_convs_tma._branch_convs_tma_kernel]


@interpreter_only
def test_launchers_refuse_other_dtypes(monkeypatch):
    """Both TMA launchers, called directly (not through the block, which checks first), refuse a
    float64 block with the backend's reason and launch nothing."""
    block = {k: v.double() for k, v in make_block(ALIGNED, k5=3, n=1, h=3, w=3, seed=28).items()}
    out, scratch = _empty_outputs(block)
    launched = []
    monkeypatch.setattr(_common, "launch", lambda kernel, *a, **k: launched.append(kernel))
    with pytest.raises(TypeError, match="computes in float32, float16 and bfloat16, got torch.float64"):
        reduce_pool_tma.launch_reduce_pool_tma(
            block["x"], block["w_red"], block["b_red"], block["w_pool"], block["b_pool"], out, scratch
        )
    with pytest.raises(TypeError, match="computes in float32, float16 and bfloat16, got torch.float64"):
        branch_convs_tma.launch_branch_convs_tma(
            scratch, block["w3"], block["b3"], block["w5"], block["b5"], out, ALIGNED[1]
        )
    assert launched == []


def _empty_outputs(block):
    from inception_fast import geometry

    return geometry.empty_outputs(block["x"], block["w_red"], block["w_pool"], block["w3"], block["w5"])


def test_unavailable_below_sm90(monkeypatch):
    from inception_fast import backends
    from inception_fast.backends import hopper_backend

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert hopper_backend._unavailable_reason("cuda:0") == "needs compute capability >= 9.0 (TMA, wgmma), found 8.0"
    assert backends.availability("hopper_tma2", "cuda:0") == backends.availability("hopper", "cuda:0")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert hopper_backend._unavailable_reason("cuda:0") is None
    assert "not on mps" in hopper_backend._unavailable_reason("mps")
    # A triton without host-side tensor descriptors (the module unimportable): on every device.
    monkeypatch.setitem(sys.modules, "triton.tools.tensor_descriptor", None)
    for device in ("cuda:0", "cpu"):
        assert "no host-side TMA descriptors" in hopper_backend._unavailable_reason(device), device
    # The dtypes and branch weights both take are the triton backend's kernels' (their launches).
    even = torch.empty(8, 4, 4, 4)
    for name in ("hopper", "hopper_tma2"):
        assert backends.dtype_reason(name, "cpu", torch.float64) == backends.dtype_reason(
            "triton", "cpu", torch.float64
        )
        assert backends.dtype_reason(name, "cpu", torch.float64) is not None
        assert backends.dtype_reason(name, "cpu", torch.float32) is None
        assert (
            backends.get(name).block_reason(torch.empty(8, 4, 3, 3), even)
            == "branch 3 must be a square conv of odd size, got weight shape (8, 4, 4, 4)"
        )


def test_auto_candidates(monkeypatch):
    """backend="auto" measures "hopper" and "hopper_tma2" (each TMA launch on its own) on an sm_90
    device, after the kernels they may replace (the order where nothing is measured), and neither
    below sm_90."""
    from inception_fast import choices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cuda = torch.device("cuda", 0)
    for capability, expected in (((9, 0), True), ((8, 0), False)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        names = choices.AUTO.candidates(cuda)
        assert "triton" in names and names[-1] == "torch", names
        assert ("hopper" in names) == expected and ("hopper_tma2" in names) == expected, names
        if expected:
            assert names.index("triton") < names.index("hopper") < names.index("hopper_tma2"), names


def test_sm90_compile_stats_of_every_config():
    """Every config of both TMA launches compiled for sm_90 on 4b at batch 256 in bf16 (no GPU
    needed; a subprocess, since this process runs the interpreter; 4b: branch 3's 24 input
    channels, 48 bytes, aligned for TMA but no 16-element multiple; 296 reduce columns): the GEMM
    operands arrive by TMA (UTMALDG in the SASS), the dots run on wgmma (HGMMA), shared memory fits
    the H100/H200's 227 KB, and nothing spills or goes through local memory.  Launch 2's only other
    loads are the biases; launch 1's pool role gathers with cp.async where its POOL_STAGES > 1."""
    import triton

    if not (Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas").exists():
        pytest.skip("this triton install ships no ptxas")
    blocks = ("--block", "tma:inception4b", "--block", "tma1:inception4b")
    run = run_python("-m", "benchmarks.kernel_stats", "--json", *blocks)
    stats = json.loads(run.stdout)
    rows = stats["rows"]
    launch2 = [r for r in rows if r["launch"] == "launch2_tma"]
    launch1 = [r for r in rows if r["launch"] == "launch1_tma"]
    assert [r["config"] for r in launch2] == [
        dict(c.kwargs, num_warps=c.num_warps, num_stages=c.num_stages)
        for c in branch_convs_tma.CONFIGS
        if branch_convs_tma.swap_fits(c.kwargs, 112)
    ]
    assert [r["config"] for r in launch1] == [
        dict(c.kwargs, num_warps=c.num_warps, num_stages=c.num_stages) for c in reduce_pool_tma.CONFIGS
    ]
    for r in rows:
        what = f"{r['block']} {r['launch']} {r['config']}"
        assert r["shared_bytes"] <= stats["max_shared_bytes"], what
        assert r["wgmma"] and r["sass"]["HGMMA"] > 0, what
        # Every dot on wgmma, but the 32-row pool parts' (launch 1's small-problem configs).
        assert (r["sass"]["HMMA"] == 0) == (r["config"].get("BLOCK_M_POOL", 64) >= 64), what
        assert r["tma"] > 0 and r["sass"]["UTMALDG"] > 0, what
        assert r["spill_bytes"] == 0 and r["sass"]["LDL"] == 0 and r["sass"]["STL"] == 0, what
        assert r["registers"] is not None and r["registers"] <= 255 and r["scalar_stores"] == 0, what
    for r in launch2:
        assert not r["cp_async"] and r["sync_loads"] == 2, r["config"]
    for r in launch1:
        c = r["config"]
        assert r["cp_async"] == (c["POOL_STAGES"] > 1), c
        # The programs per SM the grid assumes fit one SM's shared memory: 227 KB a block, 228 KB an
        # SM with 1 KB reserved per resident block.  (Registers: test_hopper_launch1's
        # test_programs_per_sm_fit_the_register_file, from the configs alone.)
        assert reduce_pool_tma.programs_fit(c["PROGRAMS_PER_SM"], r["shared_bytes"]), (c, r["shared_bytes"])


# ---------------------------------------------------------------------------------------------
# GPU (sm_90+): skipped without one
# ---------------------------------------------------------------------------------------------


# The GPU tests compile few binaries: the kernel is specialised per block (channel counts) and
# config, and only the 3b tests autotune (every config, once: 3b's 128 input channels of branch 2
# fit every SWAP_AB config); the others pin one config.
SHAPE_3B = dict(cfg=BLOCK_CONFIGS["inception3b"], k5=5, h=28, w=28)


def _gpu_block(cfg, n, dtype, device, k5=3, h=14, w=14, seed=0):
    return make_block(cfg, k5=k5, n=n, h=h, w=w, dtype=dtype, device=device, seed=seed)


@pytest.mark.gpu
@pytest.mark.parametrize("n", [2, 1])
def test_gpu_autotuned_3b_bf16(n, hopper_gpu, few_tma_programs, poisoned):
    """The path models take: autotuned (every config's pre_hook sets the boxes), then again with the
    remembered config (the launcher sets them); batch 1 reuses batch 2's binaries.  Few programs
    (few_tma_programs): each strides over many tiles of both roles."""
    block = _gpu_block(**SHAPE_3B, n=n, dtype=torch.bfloat16, device=hopper_gpu, seed=11)
    for what in ("autotuned", "tuned config reused"):
        check_hopper(block, f"3b batch {n} {what}")


@pytest.mark.gpu
@pytest.mark.parametrize("i", range(len(branch_convs_tma.CONFIGS)))
def test_gpu_every_config_bf16(i, hopper_gpu, few_tma_programs, poisoned):
    """Each config, pinned, on the autotuned test's shape (the same binaries), on few programs."""
    block = _gpu_block(**SHAPE_3B, n=2, dtype=torch.bfloat16, device=hopper_gpu, seed=14)
    out, scratch = tb.block_forward_tma(**block, config=branch_convs_tma.CONFIGS[i])
    torch.cuda.synchronize()
    ref_out, _ = block_reference64(block)
    ref_low, _ = block_reference(**block)
    check_close(
        out, ref_out, reduced_precision_bound(ref_low, ref_out), _common.config_name(branch_convs_tma.CONFIGS[i])
    )


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(BLOCK_CONFIGS))
def test_gpu_googlenet_blocks_bf16(name, hopper_gpu, few_tma_programs, poisoned):
    """Every block's channels at 14x14 (7x7 for 5a/5b), batch 2, the first config, on few programs."""
    size = 7 if name.startswith("inception5") else 14
    block = _gpu_block(BLOCK_CONFIGS[name], n=2, dtype=torch.bfloat16, device=hopper_gpu, h=size, w=size, seed=12)
    out, _ = tb.block_forward_tma(**block, config=branch_convs_tma.CONFIGS[0])
    torch.cuda.synchronize()
    ref_out, ref_low = block_reference64(block)[0], block_reference(**block)[0]
    check_close(out, ref_out, reduced_precision_bound(ref_low, ref_out), name)


@pytest.mark.gpu
@pytest.mark.parametrize("tf32", [True, False], ids=["tf32", "exact"])
def test_gpu_fp32_and_fp16(tf32, hopper_gpu, few_tma_programs, monkeypatch, poisoned):
    """fp32 with TF32 only when cudnn.allow_tf32 is on (read at call time), exact otherwise; fp16.
    The smallest config (fp32 doubles every stage's shared memory), on few programs."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", tf32)
    config = branch_convs_tma.CONFIGS[-1]
    block = _gpu_block(BLOCK_CONFIGS["inception4b"], n=2, dtype=torch.float32, device=hopper_gpu, k5=5, seed=4)
    out, _ = tb.block_forward_tma(**block, config=config)
    torch.cuda.synchronize()
    err = check_close(out, block_reference64(block)[0], TOLERANCE["tf32" if tf32 else "fp32"], f"fp32 tf32={tf32}")
    if tf32:
        assert err > 1e-5, f"error {err:.1e}: allow_tf32=True but the kernels seem to compute exact fp32"
    half = {k: v.half() for k, v in block.items()}
    out, _ = tb.block_forward_tma(**half, config=config)
    torch.cuda.synchronize()
    ref_out, ref_low = block_reference64(half)[0], block_reference(**half)[0]
    check_close(out, ref_out, reduced_precision_bound(ref_low, ref_out), "fp16")


@pytest.mark.gpu
def test_gpu_cuda_graph(hopper_gpu):
    """Both launches capture into a CUDA graph (descriptors passed by value, no host sync) and
    replay to the same bits."""
    block = _gpu_block(**SHAPE_3B, n=1, dtype=torch.bfloat16, device=hopper_gpu, seed=19)
    eager, _ = tb.block_forward_tma(**block)  # compiles and tunes outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured, _ = tb.block_forward_tma(**block)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(captured, eager)
