"""The block's backward (op ``inception_fast::inception_block_backward``, registry kernel
``inception_block_backward``): gradcheck of the torch backend's ATen chain in fp64; the Triton
backward (backends/triton/block_backward.py) against the reference module's autograd in fp32, every
gradient (input, and every parameter through the packed weights, BatchNorm folding included);
max-pool ties; the three launches without cat/split; opcheck; and backend="auto"'s measured,
parity-checked choice (inception_fast.choices.BACKWARD).

CPU: the Triton kernels run under TRITON_INTERPRET=1 (tests/conftest.py).  GPU tests skip without CUDA.
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

import pytest
import torch
from block_cases import CL, ODD, UNIT8, make_block
from model_cases import op_backends
from uninterpreted import run_python
from unwritten_reads import assert_bands_untouched, guarded, poison

from inception_fast import FusedInception, Inception, available_backends
from inception_fast.reference import BLOCK_CONFIGS
from inception_fast.testing import TOLERANCE, calibrate, check_close, reduced_precision_bound

FP32 = TOLERANCE["fp32"]
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
interpreter_only = pytest.mark.skipif(not INTERPRET, reason="CPU tests need TRITON_INTERPRET=1 set before import")
BLOCK_ARGS = ("x", "w_red", "b_red", "w_pool", "b_pool", "w3", "b3", "w5", "b5")


def _pair(cfg, x, k=3, batch_norm=True, backend="triton"):
    """A calibrated reference block and its fused copy on ``backend``, both in eval mode."""
    ref = Inception(*cfg, batch_norm=batch_norm, branch3_kernel=k)
    calibrate(ref, x)
    return ref, FusedInception.from_torchvision(copy.deepcopy(ref), backend=backend).eval()


def _grads(model, x, target):
    """[gradient of x, then of every parameter] of (model(x) * target).sum()."""
    model.zero_grad()
    x = x.clone().requires_grad_(True)
    (model(x) * target).sum().backward()
    return [x.grad] + [p.grad for p in model.parameters()]


def check_gradients(cfg, x, k=3, batch_norm=True, backend="triton"):
    """Every gradient of the fused block on ``backend`` against the reference's autograd (fp32)."""
    ref, fused = _pair(cfg, x, k, batch_norm, backend)
    with torch.no_grad():
        y = ref(x)
    assert y.std() > 0.05, "reference activations vanished; the comparison could not fail"
    target = torch.randn_like(y)
    if backend == "triton":  # the forward's two launches and the backward's three ran
        from inception_fast.backends.triton import _common

        before = _common.launch_count()
        got = _grads(fused, x, target)
        assert _common.launch_count() - before == 5
    else:
        got = _grads(fused, x, target)
    want = _grads(ref, x, target)
    names = ["x"] + [n for n, _ in ref.named_parameters()]
    assert len(got) == len(want) == len(names)
    for name, g, w in zip(names, got, want):
        assert w is not None and g is not None, name
        check_close(g, w, FP32, f"gradient of {name}")


def _scaled(cfg, factor):
    return tuple(max(1, -(-c // factor)) for c in cfg)


# -- the torch backend: gradcheck ---------------------------------------------------------------


@pytest.mark.parametrize("k", [3, 5])
def test_gradcheck_torch_backend_fp64(k):
    block = make_block((4, 2, 3, 3, 2, 3, 2), k5=k, n=2, h=3, w=4, dtype=torch.float64)
    inputs = tuple(block[a].clone().requires_grad_() for a in BLOCK_ARGS)

    def f(*args):
        return torch.ops.inception_fast.inception_block(*args, "torch")[0]

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True)


def test_second_derivative_is_refused():
    """create_graph=True: a clear error, not a silently wrong second derivative."""
    block = make_block(ODD, n=1, h=3, w=3)
    x = block["x"].clone().requires_grad_()
    y = torch.ops.inception_fast.inception_block(x, *(block[a] for a in BLOCK_ARGS[1:]), "torch")[0]
    with pytest.raises(RuntimeError, match="no second derivative"):
        torch.autograd.grad(y.sum(), x, create_graph=True)


@pytest.mark.parametrize("backend", op_backends("inception_block_backward"))
def test_opcheck_backward_op(backend):
    """The op's contract (schema, fake kernel, dispatch) on each backend: its nine outputs alias
    nothing, each gradient in a tensor of its own."""
    block = make_block(ODD, k5=5, n=2, h=3, w=4)
    out, scratch = torch.ops.inception_fast.inception_block(*(block[a] for a in BLOCK_ARGS), "torch")
    args = (torch.randn_like(out), block["x"], block["w_red"], block["w_pool"], block["w3"], block["w5"], out, scratch)
    for need_x in (True, False):
        torch.library.opcheck(torch.ops.inception_fast.inception_block_backward.default, (*args, need_x, backend))


def test_backward_rejects_mismatched_tensors():
    block = make_block(ODD, n=2, h=3, w=4)
    out, scratch = torch.ops.inception_fast.inception_block(*(block[a] for a in BLOCK_ARGS), "torch")
    with pytest.raises(ValueError, match="grad_out has shape"):
        torch.ops.inception_fast.inception_block_backward(
            out[:, 1:],
            block["x"],
            block["w_red"],
            block["w_pool"],
            block["w3"],
            block["w5"],
            out,
            scratch,
            True,
            "torch",
        )
    # The scratch (the forward's saved reductions) and every tensor's dtype are checked too, by the
    # real op and by its fake kernel: a backend's kernels would read past a short scratch.
    from torch._subclasses.fake_tensor import FakeTensorMode

    op = torch.ops.inception_fast.inception_block_backward
    weights = [block[a] for a in ("x", "w_red", "w_pool", "w3", "w5")]
    bad = {
        "short scratch": ((out, *weights, out, scratch[:, 1:]), ValueError, "scratch has shape"),
        "float64 grad_out": ((out.double(), *weights, out, scratch), TypeError, "grad_out is torch.float64"),
        "float16 scratch": ((out, *weights, out, scratch.half()), TypeError, "scratch is torch.float16"),
        "grad_out on meta": ((out.to("meta"), *weights, out, scratch), TypeError, "grad_out is torch.float32 on meta"),
    }
    for what, (args, error, message) in bad.items():
        with pytest.raises(error, match=message):
            op(*args, True, "torch")
        with FakeTensorMode() as mode, pytest.raises(error, match=message):
            op(*(mode.from_tensor(a) for a in args), True, "torch")


def test_only_the_block_output_is_differentiable():
    """The block op's second output (the saved reductions, which its backward ignores a gradient
    of) is marked non-differentiable: it requires no grad, so a loss through it fails loudly
    instead of silently getting no gradient from it."""
    block = make_block(ODD, n=1, h=3, w=3)
    x = block["x"].clone().requires_grad_()
    out, scratch = torch.ops.inception_fast.inception_block(x, *(block[a] for a in BLOCK_ARGS[1:]), "torch")
    assert out.requires_grad and not scratch.requires_grad
    with pytest.raises(RuntimeError, match="does not require grad"):
        scratch.sum().backward()


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train_bn"])
@pytest.mark.parametrize("wants_input", [True, False], ids=["input_and_weights", "weights_only"])
def test_batched_gradients_match_the_reference(train, wants_input):
    """PyTorch's batched gradients (several output gradients in one backward:
    ``autograd.grad(is_grads_batched=True)``, ``autograd.functional.jacobian(vectorize=True)``)
    run through the block's backward ops (eval: inception_block_backward; train-mode BatchNorm:
    inception_block_bn_train_backward) and give the reference's gradients, each one."""
    x = torch.randn(2, ODD[0], 4, 5)
    ref, fused = _pair(ODD, x, backend="torch")
    grads = torch.randn(3, 2, sum(ODD[i] for i in (1, 3, 5, 6)), 4, 5)
    names = ["input"] * wants_input + [name for name, _ in ref.named_parameters()]
    results = []
    for model in (fused, ref):
        model.train(train)
        xr = x.clone().requires_grad_(wants_input)
        out = model(xr)
        assert out.std() > 0.05, "activations vanished; the comparison could not fail"
        inputs = [xr] * wants_input + list(model.parameters())
        got = dict(zip(names, torch.autograd.grad(out, inputs, grads, is_grads_batched=True)))
        if wants_input:
            got["jacobian"] = torch.autograd.functional.jacobian(lambda a: model(a)[:, :3, 1, 2], x, vectorize=True)
        results.append(got)
    for name, want in results[1].items():
        check_close(results[0][name], want, FP32, f"batched gradient of {name}")


def test_empty_batch_gradients_are_zero():
    ref, fused = _pair(ODD, torch.randn(2, ODD[0], 4, 4), backend="torch")
    x = torch.randn(0, ODD[0], 4, 4, requires_grad=True)
    fused(x).sum().backward()
    assert x.grad.shape == x.shape
    assert all(p.grad is None or not p.grad.any() for p in fused.parameters())


# -- the Triton backward under the interpreter ---------------------------------------------------


# Every GoogLeNet block's channels divided by 16 (rounded up), alternating batch 1 and 3, odd and
# even sizes, both branch-3 kernels (5 in every third: it costs the interpreter 25 taps), with and
# without BatchNorm.
@interpreter_only
@pytest.mark.parametrize("i,name", list(enumerate(BLOCK_CONFIGS)))
def test_triton_gradients_every_block_config(i, name):
    cfg = _scaled(BLOCK_CONFIGS[name], 16)
    n, h, w = [(1, 5, 5), (3, 4, 3), (1, 3, 6)][i % 3]
    check_gradients(cfg, torch.randn(n, cfg[0], h, w), k=5 if i % 3 == 1 else 3, batch_norm=i % 4 != 3)


@interpreter_only
def test_triton_gradients_full_channels():
    cfg = BLOCK_CONFIGS["inception3a"]
    check_gradients(cfg, torch.randn(1, cfg[0], 3, 2), k=3)


@pytest.fixture
def poisoned_backward(monkeypatch):
    """Every buffer of the Triton backward starts as NaN, so an element no launch writes fails; the
    eight 1-D weight and bias gradients that launch C stores and the 2-D partial buffer of the pixel
    splits sit between poisoned guard bands, which must stay untouched (no store past a buffer's end
    or before its start: a weight-gradient program of a split past the last); the gradients must
    hold no NaN anywhere (launch C reads no partial that launches A and B did not write)."""
    from inception_fast.backends.triton import block_backward as bb

    real, calls, bands = bb._buffer, [], []

    def poisoned(shape, dtype, device, *args, **kwargs):
        t = (
            guarded(math.prod(shape), dtype, device, bands).view(shape)
            if len(shape) <= 2
            else poison(real(shape, dtype, device, *args, **kwargs))
        )
        calls.append(t)
        return t

    monkeypatch.setattr(bb, "_buffer", poisoned)
    yield calls
    assert calls, "no buffer was allocated through block_backward._buffer; poisoning had no effect"
    grads = [t for t in calls if t.dim() == 1]
    assert grads, "no gradient buffer was allocated"
    for t in grads:
        assert not t.isnan().any(), f"launch C wrote NaN at {t.isnan().nonzero().flatten().tolist()[:8]}"
    assert_bands_untouched(bands)


@interpreter_only
@pytest.mark.parametrize("n,h,w,k", [(3, 5, 7, 5), (1, 7, 3, 3)])
def test_triton_gradients_odd_shapes(n, h, w, k, poisoned_backward):
    check_gradients(ODD, torch.randn(n, ODD[0], h, w), k=k, batch_norm=False)


@interpreter_only
def test_triton_gradients_alignment_units_of_8(poisoned_backward):
    """The launches take their row strides and channel counts divided by 8 here (block_backward's
    ROW_UNIT, W_UNIT and C_UNIT, multiplied back inside), and the weight gradients' segments start
    at multiples of SEGMENT_ALIGN in the flat buffer: every gradient still matches the reference."""
    from inception_fast.backends.triton import block_backward as bb

    args = _backward_args(UNIT8, k=5, n=2, h=5, w=3)
    _buffers, seg, launches = bb._arguments(*args, True)
    poisoned_backward.clear()  # buffers inspected, never launched into
    units = [{u: meta[u] for u in ("ROW_UNIT", "W_UNIT", "C_UNIT")} for _k, _t, _a, meta, _g in launches]
    assert units == [{"ROW_UNIT": 8, "W_UNIT": 8, "C_UNIT": 8}] * 2, units
    assert all(off % bb.SEGMENT_ALIGN == 0 for off, _n in seg.values()), seg
    check_gradients(UNIT8, torch.randn(2, UNIT8[0], 5, 3).contiguous(memory_format=CL), k=5)


# Every channel count of launch B a multiple of 8 but the pool branch's first output channel
# (ch1 + ch3 + ch5 = 28), a multiple of 4 only.
POOL_COL4 = (16, 8, 8, 12, 8, 8, 8)
# Every channel count a multiple of 8 but the block input's (12): launch A's channel unit (g_pooled's
# columns) and its weight unit (w_pool's row stride, 12) are 4 through the input alone.
CIN4 = (12, 8, 8, 16, 8, 8, 8)


@interpreter_only
@pytest.mark.parametrize("cfg,launch", [(POOL_COL4, 1), (CIN4, 0)], ids=["pool_col0", "cin"])
def test_triton_gradients_channel_of_a_smaller_unit(cfg, launch, poisoned_backward):
    """A launch's units come from every channel count and weight row stride it takes, so here one
    count of a unit of 4 makes them 4, not the 8 of the others: launch B takes the pool branch's first
    output channel divided by its channel unit (28 // 8 * 8 would read the pool branch's gradient from
    column 24, branch 3's), launch A the block input's 12 channels (12 // 8 * 8 would leave g_pooled's
    last 4 columns unwritten) and w_pool's row stride of 12.  Every gradient against the ATen chain."""
    from inception_fast import backends
    from inception_fast.backends.triton import block_backward as bb

    args = _backward_args(cfg, k=3, n=2, h=3, w=4)
    _buffers, _seg, launches = bb._arguments(*args, True)
    poisoned_backward.clear()  # buffers inspected, never launched into
    assert launches[launch][3]["C_UNIT"] == 4, launches[launch][3]
    if launch == 0:
        assert launches[0][3]["W_UNIT"] == 4, launches[0][3]
    want = backends.get("torch").op("inception_block_backward")(*args, True)
    got = bb.block_backward(*args, True)
    for j, (g, w) in enumerate(zip(got, want)):
        check_close(g, w, FP32, f"gradient {j}")


def test_sm90_compile_stats_of_every_config():
    """Launches A and B of the Triton backward, every config, compiled for sm_90 on 4b at batch 256
    in bf16 (no GPU needed; a subprocess, since this process runs the interpreter).  4b's scratch
    (136 channels), branch-3 input (24) and packed reduce rows (296) are multiples of 8 only: without
    the alignment units (block_backward's header) launch A stored its gradients element by element
    (129 scalar stores) at 255 registers.  Each config fits the shared memory, spills nothing, runs
    its dots on wgmma where its tile has 64 rows and 4 warps or more, streams its pipelined operands
    with cp.async, and stores element by element only the bias partials, one fp32 per thread (in A
    one per weight-gradient role, which the compiler may merge into one: 4b has one with triton 3.6
    and 3.8, 3a two with 3.6).  The synchronous loads: in A the two dgrad epilogues' scratch tiles
    (the reductions' ReLU masks); in B the input gradient's pixel, its nine neighbours' pool windows
    and g_pooled (11), and the weight roles' loads behind the branch in their pixel loop (x and
    [g1 | g_red]'s three, grad_out's two and the recomputed pool's nine: 15).  Launch C, the split
    sum, spills nothing, and loads its fp32 partials and stores its bf16 gradients in vectors
    (with the segment ends passed whole, its gap mask made every partial load scalar)."""
    import triton

    from inception_fast.backends.triton import block_backward as bb

    if not (Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas").exists():
        pytest.skip("this triton install ships no ptxas")
    run = run_python("-m", "benchmarks.kernel_stats", "--json", "--block", "backward:inception4b")
    stats = json.loads(run.stdout)
    rows = stats["rows"]
    assert [r["launch"] for r in rows] == ["bwd_a"] * len(bb.CONFIGS) + ["bwd_b"] * len(bb.CONFIGS) + ["bwd_c"]
    *rows, split_sum = rows
    assert split_sum["spill_bytes"] == 0, split_sum
    assert split_sum["scalar_loads"] == 0 and split_sum["scalar_stores"] == 0, split_sum  # vectorized
    for r in rows:
        c, what = r["config"], f"{r['launch']} {r['config']}"
        assert r["shared_bytes"] <= stats["max_shared_bytes"], what
        assert r["registers"] is not None and r["registers"] <= 255 and r["spill_bytes"] == 0, what
        assert r["scalar_stores"] in ((1, 2) if r["launch"] == "bwd_a" else (1,)) and r["cp_async"], what
        assert r["wgmma"] == (c["BLOCK_M"] >= 64 and c["num_warps"] >= 4), what
        assert r["sync_loads"] == (2 if r["launch"] == "bwd_a" else 26), what


def _tied_input(n, c, h, w):
    """A post-ReLU-like input full of max-pool ties: all-zero regions (and zero channels), the rest
    drawn from three values, so most 3x3 windows hold their maximum more than once."""
    g = torch.Generator().manual_seed(1)
    x = torch.randint(-1, 3, (n, c, h, w), generator=g).float().clamp_(min=0) * 0.75
    x[:, :, : h // 2, : w // 2] = 0.0
    x[:, ::3] = 0.0
    return x


@interpreter_only
def test_triton_gradients_max_pool_ties():
    """Ties go to the first maximum in window scan order, as in ATen: any other rule routes the
    pool branch's gradient to other pixels and fails."""
    check_gradients(ODD, _tied_input(3, ODD[0], 6, 5), k=3, batch_norm=False)


def _config_count() -> int:
    """How many autotuning configs the Triton backward has (0 without triton)."""
    try:
        from inception_fast.backends.triton import block_backward as bb
    except ImportError:
        return 0
    return len(bb.CONFIGS)


def _backward_args(cfg=ODD, k=3, n=2, h=4, w=5):
    """(grad_out, x, w_red, w_pool, w3, w5, out, scratch) of a random block's forward (torch backend)."""
    block = make_block(cfg, k5=k, n=n, h=h, w=w)
    out, scratch = torch.ops.inception_fast.inception_block(*(block[a] for a in BLOCK_ARGS), "torch")
    return (torch.randn_like(out), block["x"], block["w_red"], block["w_pool"], block["w3"], block["w5"], out, scratch)


# Past one tile of the configs' widest side: with the 64x128 config, 65 pixels take two 64-pixel row
# tiles but one 128 tile; the 3x3's reduction (72) two 64-wide tiles but one 128-wide, and its
# output (16) one of either, so its weight-gradient tiles number 1 or 2 as BLOCK_M and BLOCK_N are
# kept apart or not; the kxk's reduction and output (66) and the pool projection (66) two 64-wide
# tiles but one 128-wide (launch A's and B's role boundaries, pixel tiles and weight tiles count
# BLOCK_M and BLOCK_N apart); the packed reductions (161 = 5 * 32 + 1) end in a K step of one row.
WIDE = (16, 23, 72, 16, 66, 66, 66)
CONFIG_CASES = {"odd": (ODD, 5, (3, 5, 4)), "wide": (WIDE, 3, (1, 5, 13))}


@interpreter_only
@pytest.mark.parametrize("case", list(CONFIG_CASES))
@pytest.mark.parametrize("i", range(_config_count()))
def test_triton_backward_every_config(i, case, poisoned_backward):
    """Each config the GPU autotuner may pick (tiles with BLOCK_M != BLOCK_N included), pinned,
    against the ATen chain on a shape that fills no tile and takes several pixel splits ("odd"),
    and on one whose pixels and channels span two tiles of BLOCK_M but one of BLOCK_N ("wide")."""
    from inception_fast import backends
    from inception_fast.backends.triton import block_backward as bb

    config = bb.CONFIGS[i]
    cfg, k, (n, h, w) = CONFIG_CASES[case]
    args = _backward_args(cfg, k=k, n=n, h=h, w=w)
    got = bb.block_backward(*args, True, config=config)
    want = backends.get("torch").op("inception_block_backward")(*args, True)
    for j, (g, w) in enumerate(zip(got, want)):
        check_close(g, w, FP32, f"{bb.CONFIGS[i]} gradient {j}")


@interpreter_only
def test_triton_backward_refuses_what_its_kernels_cannot_index(monkeypatch):
    """The Triton backward's own checks, before it allocates a buffer: N*H*W past the 32-bit pixel
    index (expanded tensors, nothing allocated), and a 3x3 that is not 3x3 or an even kxk (whose
    taps the kernels would centre wrongly)."""
    from inception_fast import geometry
    from inception_fast.backends.triton import block_backward as bb

    def no_buffer(*args, **kwargs):
        raise AssertionError("a buffer was allocated before the arguments were checked")

    monkeypatch.setattr(bb, "_buffer", no_buffer)
    args = list(_backward_args(n=1, h=1, w=1))
    huge = list(args)
    for i in (0, 1, 6, 7):  # grad_out, x, out, scratch: one pixel, repeated
        huge[i] = args[i].expand(geometry.PIXEL_ROW_LIMIT, *args[i].shape[1:])
    with pytest.raises(ValueError, match=f"32 bits; N\\*H\\*W = {geometry.PIXEL_ROW_LIMIT} is too large"):
        bb.block_backward(*huge, True)
    w3, w5 = args[4], args[5]
    for i, bad in ((5, torch.zeros(w5.shape[0], w5.shape[1], 4, 4)), (4, torch.zeros(w3.shape[0], w3.shape[1], 5, 5))):
        wrong = list(args)
        wrong[i] = bad
        with pytest.raises(ValueError, match="branch 2 must be 3x3 and branch 3 square and odd"):
            bb.block_backward(*wrong, True)


# Channels past one 32-wide tile: with the 32x32 config, the block input, the 3x3's reduction
# (36) and its output (40) and the pool projection (34) take two tiles, and the kxk's reduction (12)
# one, so the two data-gradient roles of launch A take different numbers of column tiles.
EDGES = (40, 8, 36, 40, 12, 20, 34)


@interpreter_only
def test_triton_backward_tile_and_split_edges(poisoned_backward):
    """65 pixels (one 5x13 image): the pixel tiles end in a tile of one pixel, and the weight
    gradients' three pixel splits of 32 in a split of one pixel (the last split's end clamped to
    M, not short of it); with the 32x32 tile, several row and column tiles in every role and more
    than one K step, and with the interpreter's own tile.  Every gradient against the ATen chain."""
    from inception_fast import backends
    from inception_fast.backends.triton import block_backward as bb

    n, h, w = 1, 5, 13
    assert bb.split_count(n * h * w) == 3 and n * h * w % 32 == 1
    args = _backward_args(EDGES, k=3, n=n, h=h, w=w)
    want = backends.get("torch").op("inception_block_backward")(*args, True)
    for config in (bb.CONFIGS[2], None):
        got = bb.block_backward(*args, True, config=config)
        for j, (g, wt) in enumerate(zip(got, want)):
            check_close(g, wt, FP32, f"{config} gradient {j}")
    # Without the input's gradient, launch B's grid holds the weight roles alone: with the interpreter's
    # tile, two input-gradient programs more would hand the pool projection's role splits past the last.
    got = bb.block_backward(*args, False)
    assert got[0] is None
    for j, (g, wt) in enumerate(zip(got[1:], want[1:]), 1):
        check_close(g, wt, FP32, f"weight gradient {j} without the input's")


@interpreter_only
def test_triton_backward_fp16():
    """fp16 operands, fp32 accumulation: each gradient's error against the fp64 ATen chain at most
    twice the fp16 ATen chain's own."""
    from inception_fast import backends

    args = _backward_args(k=5, n=3, h=5, w=4)
    aten = backends.get("torch").op("inception_block_backward")
    ref64 = aten(*(a.double() for a in args), True)
    half = tuple(a.half() for a in args)
    lowp = aten(*half, True)
    got = backends.get("triton").op("inception_block_backward")(*half, True)
    for j, (g, b, r) in enumerate(zip(got, lowp, ref64)):
        assert g.dtype == torch.float16
        check_close(g, r, reduced_precision_bound(b, r), f"fp16 gradient {j}")


@interpreter_only
def test_triton_backward_three_launches_no_cat(monkeypatch):
    from launch_observer import observe_launches

    from inception_fast.backends.triton import block_backward as bb

    block = make_block(ODD, k5=3, n=2, h=4, w=5)
    out, scratch = torch.ops.inception_fast.inception_block(*(block[a] for a in BLOCK_ARGS), "torch")
    args = (torch.randn_like(out), block["x"], block["w_red"], block["w_pool"], block["w3"], block["w5"], out, scratch)
    grads, aten_ops, launched = observe_launches(lambda: bb.block_backward(*args, True), monkeypatch)
    assert launched == [bb._branch_grads_kernel, bb._input_grads_kernel, bb._sum_splits_kernel]
    assert not [op for op in aten_ops if "cat" in op or "split" in op or "copy" in op], aten_ops
    # Without the input's gradient (asked through the registry, as the op asks): no input gradient,
    # the same weight gradients.
    from inception_fast import backends

    grads_no_x = backends.get("triton").op("inception_block_backward")(*args, False)
    assert grads_no_x[0] is None
    for a, b in zip(grads[1:], grads_no_x[1:]):
        assert torch.equal(a, b)


@interpreter_only
def test_triton_backward_nan_input_matches_aten():
    """NaN in the block input: every pooled pixel whose window holds a NaN is NaN in all pool
    channels (the projection mixes them), and the ReLU passes a NaN output's gradient, as
    PyTorch's does, to the tap the recomputed argmax names; the input's gradient is finite and
    equals the ATen chain's."""
    from inception_fast import backends

    block = make_block(ODD, k5=3, n=1, h=5, w=5)
    block["x"][0, :, 2, 2] = float("nan")
    block["x"][0, ::2, 1, 3] = float("nan")
    out, scratch = torch.ops.inception_fast.inception_block(*(block[a] for a in BLOCK_ARGS), "torch")
    args = (torch.randn_like(out), block["x"], block["w_red"], block["w_pool"], block["w3"], block["w5"], out, scratch)
    got = backends.get("triton").op("inception_block_backward")(*args, True)[0]
    want = backends.get("torch").op("inception_block_backward")(*args, True)[0]
    assert torch.isfinite(want).all()
    check_close(got, want, FP32, "input gradient")


def _nonfinite_close(got, want, what, tol=FP32):
    """NaN and +/-Inf exactly where ``want`` has them, the finite values within ``tol``."""
    assert torch.equal(got.isnan(), want.isnan()), (
        f"{what}: NaN at {got.isnan().sum()} places, reference {want.isnan().sum()}"
    )
    inf = want.isinf()
    assert torch.equal(got.isinf(), inf) and torch.equal(got[inf], want[inf]), f"{what}: Inf elsewhere"
    finite = torch.isfinite(want)
    assert finite.any()
    check_close(got[finite], want[finite], tol, what)


@interpreter_only
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # (the interpreter's NumPy)
def test_triton_backward_nan_input_weight_gradients_match_aten():
    """NaN in some channels of one input pixel: the weight gradients that read the input, the packed
    1x1s' and the pool projection's (through the max pool recomputed from x, NaN propagating as in
    ATen's), are NaN in those channels' columns and finite in the others; every gradient has its
    NaN where the ATen chain's has, and its finite values within the fp32 tolerance."""
    from inception_fast import backends

    block = make_block(ODD, k5=3, n=2, h=5, w=5)
    block["x"][1, ::2, 1, 3] = float("nan")
    out, scratch = torch.ops.inception_fast.inception_block(*(block[a] for a in BLOCK_ARGS), "torch")
    args = (torch.randn_like(out), block["x"], block["w_red"], block["w_pool"], block["w3"], block["w5"], out, scratch)
    got = backends.get("triton").op("inception_block_backward")(*args, True)
    want = backends.get("torch").op("inception_block_backward")(*args, True)
    for j in (1, 3):  # gw_red, gw_pool: NaN exactly in the NaN channels' columns
        assert torch.equal(want[j].isnan().all(0), torch.arange(ODD[0]) % 2 == 0), j
    for j, (g, w) in enumerate(zip(got, want)):
        if torch.isfinite(w).any():
            _nonfinite_close(g, w, f"gradient {j}")
        else:  # the 3x3's and kxk's weight gradients read the NaN scratch at every tap
            assert g.isnan().all(), f"gradient {j}: finite where the reference is NaN"


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # (the interpreter's NumPy)
@pytest.mark.parametrize("case", ["nan pixel", "nan weight", "inf weight"])
@pytest.mark.parametrize("backend", [b for b in ("torch", "cpp", "onednn", "triton") if b in available_backends("cpu")])
def test_relu_gradient_where_values_are_not_finite(backend, case):
    """ReLU's gradient as PyTorch's (threshold_backward) on every backend: a NaN output passes the
    gradient (a NaN input pixel: the reference's input gradient is finite, and so is ours), and a
    masked place gets 0 selected, not a product (a NaN or Inf weight in branch 2's 3x3: NaN and Inf
    in the input gradient exactly where the reference's are)."""
    _check_relu_gradient_not_finite(backend, case, torch.device("cpu"), FP32)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_gpu_relu_gradient_of_a_nan_pixel(gpu, backend):
    """The same on the GPU, the Triton backward compiled: a NaN input pixel still leaves the
    reference's finite input gradient.  (The NaN weight cases are left out: where cuDNN's
    algorithms spread a NaN weight's taps differs from ATen's CPU convolution.)"""
    _check_relu_gradient_not_finite(backend, "nan pixel", gpu, TOLERANCE["tf32"])


def _check_relu_gradient_not_finite(backend, case, device, tol):
    x = torch.randn(2, ODD[0], 5, 5)
    ref, _ = _pair(ODD, x, backend="torch")
    if case == "nan pixel":
        x[0, :, 2, 2] = float("nan")
    else:
        with torch.no_grad():
            ref.branch2[1].conv.weight[0, 0, 1, 1] = float(case.split()[0])
    fused = FusedInception.from_torchvision(ref, backend=backend).eval().to(device)
    ref, x = ref.to(device), x.to(device)
    grads = []
    for model in (ref, fused):
        xg = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(xg).sum(), xg)
        grads.append(grad)
    want, got = grads
    if case == "nan pixel":
        assert torch.isfinite(want).all()
    else:
        assert not torch.isfinite(want).all()
    _nonfinite_close(got, want, f"input gradient, {case}", tol)


# -- backend="auto": the measured, parity-checked choice ------------------------------------------


@pytest.fixture
def backward_candidates(monkeypatch):
    """Registered backends whose backward is the ATen chain ('right'), the ATen chain slightly
    wrong ('wrong') or the ATen chain in float64 rounded to the input's dtype ('rounded'), all
    faster than 'torch' by the fake timer, and 'forward_only', which has no backward kernel."""
    from inception_fast import backends
    from inception_fast.backends import torch_backend

    def wrong(*args):
        grads = torch_backend.block_backward(*args)
        return (grads[0], grads[1] * 1.01, *grads[2:])

    def rounded(*args):
        wide = (a.double() if isinstance(a, torch.Tensor) else a for a in args)
        return tuple(g.to(args[0].dtype) for g in torch_backend.block_backward(*wide))

    for name, kernel in (("right", torch_backend.block_backward), ("wrong", wrong), ("rounded", rounded)):
        monkeypatch.setitem(
            backends._REGISTRY,
            name,
            backends.Backend(
                name,
                lambda device: None,
                {"inception_block": torch_backend.block_forward, "inception_block_backward": kernel},
            ),
        )
    monkeypatch.setitem(
        backends._REGISTRY,
        "forward_only",
        backends.Backend("forward_only", lambda device: None, {"inception_block": torch_backend.block_forward}),
    )

    def timer(fn, device, repeats):
        fn()
        return 0.5 if fn.__qualname__.startswith("checked_against") else 1.0  # the candidate is faster

    return timer


@pytest.mark.parametrize(
    "candidate,dtype,chosen",
    [("right", torch.float32, "right"), ("wrong", torch.float32, "torch"), ("rounded", torch.bfloat16, "rounded")],
)
def test_backward_choice_keeps_only_a_correct_faster_kernel(backward_candidates, candidate, dtype, chosen):
    """A faster backward is chosen where its first result agrees with ATen's by the tolerance
    table's rule against a float64 run (bf16: one closer to float64 than ATen's own bf16 chain
    agrees); a backend without a backward kernel is no candidate; an empty batch measures nothing."""
    from inception_fast.choices import BackwardChoice

    order = ("torch", "forward_only", candidate)
    chooser = BackwardChoice(order=order, measure_on=("cpu",), timer=backward_candidates)

    def backward_args(n):
        block = make_block(ODD, k5=5, n=n, h=4, w=5, dtype=dtype)
        out, scratch = torch.ops.inception_fast.inception_block(*(block[a] for a in BLOCK_ARGS), "torch")
        weights = (block["w_red"], block["w_pool"], block["w3"], block["w5"])
        return (torch.randn_like(out), block["x"], *weights, out, scratch)

    assert chooser.choose(*backward_args(0)) == "torch" and not chooser.choices()
    assert chooser.choose(*backward_args(2)) == chosen
    (choice,) = chooser.choices().values()
    if candidate == "wrong":
        assert "disagrees with ATen" in choice.errors["wrong"], choice.errors
    else:
        assert set(choice.seconds) == {"torch", candidate} and not choice.errors


def test_auto_backward_off_cuda_is_the_aten_chain():
    from inception_fast import choices

    block = make_block(ODD, n=1, h=3, w=3)
    out, scratch = torch.ops.inception_fast.inception_block(*(block[a] for a in BLOCK_ARGS), "torch")
    args = (out, block["x"], block["w_red"], block["w_pool"], block["w3"], block["w5"], out, scratch)
    assert choices.BACKWARD.choose(*args) == "torch"


def test_the_backward_runs_the_forwards_backend_and_resolves_auto(monkeypatch):
    """The block op's registered backward runs inception_block_backward on the backend the forward
    was given, and for "auto" on the one inception_fast.choices.BACKWARD chooses: a backend
    registered here ("recording": the torch backend's kernels) records each kernel it runs, and its
    gradients are the torch backend's."""
    from inception_fast import backends, choices

    torch_kernels = backends.get("torch").kernels
    calls = []

    def recorded(op):
        def kernel(*args):
            calls.append(op)
            return torch_kernels[op](*args)

        return kernel

    kernels = {op: recorded(op) for op in ("inception_block", "inception_block_backward")}
    monkeypatch.setitem(backends._REGISTRY, "recording", backends.Backend("recording", lambda device: None, kernels))
    monkeypatch.setattr(backends, "_PLUGINS", (*backends._PLUGINS, "recording"))

    class Chooser:
        def choose(self, *args):
            return "recording"

    monkeypatch.setattr(choices, "BACKWARD", Chooser())
    block = make_block(ODD, n=2, h=3, w=4)
    inputs = [block[a].clone().requires_grad_() for a in BLOCK_ARGS]

    def gradients(backend):
        out, _ = torch.ops.inception_fast.inception_block(*inputs, backend)
        return torch.autograd.grad(out, inputs, grad)

    grad = torch.randn_like(torch.ops.inception_fast.inception_block(*(block[a] for a in BLOCK_ARGS), "torch")[0])
    want = gradients("torch")
    assert calls == []
    for backend, ran in (
        ("recording", ["inception_block", "inception_block_backward"]),
        ("auto", ["inception_block_backward"]),
    ):
        calls.clear()
        got = gradients(backend)
        assert calls == ran, backend
        for name, g, w in zip(BLOCK_ARGS, got, want):
            check_close(g, w, FP32, f"{backend}: gradient of {name}")


# -- GPU ----------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name,k", [("inception3a", 3), ("inception4b", 5)])
def test_gpu_triton_gradients_low_precision(gpu, name, k, dtype):
    """fp16/bf16: each gradient's error against fp64 at most twice the ATen chain's own."""
    from inception_fast import backends

    cfg = BLOCK_CONFIGS[name]
    block = make_block(cfg, k5=k, n=4, h=14, w=14, device=gpu)
    out, scratch = torch.ops.inception_fast.inception_block(*(block[a] for a in BLOCK_ARGS), "torch")
    g = torch.randn_like(out)
    keys = ("x", "w_red", "w_pool", "w3", "w5")
    args64 = (g.double(), *(block[a].double() for a in keys), out.double(), scratch.double(), True)
    args = (g.to(dtype), *(block[a].to(dtype) for a in keys), out.to(dtype), scratch.to(dtype), True)
    ref64 = backends.get("torch").op("inception_block_backward")(*args64)
    lowp = backends.get("torch").op("inception_block_backward")(*args)
    got = backends.get("triton").op("inception_block_backward")(*args)
    for i, (a, b, r) in enumerate(zip(got, lowp, ref64)):
        check_close(a, r, reduced_precision_bound(b, r), f"gradient {i}")


@pytest.mark.gpu
def test_gpu_opcheck_backward_op(gpu):
    """The op's contract on CUDA tensors, on each backend that runs it there (triton among them):
    nine outputs that alias nothing."""
    block = make_block(ODD, k5=5, n=2, h=3, w=4, device=gpu)
    out, scratch = torch.ops.inception_fast.inception_block(*(block[a] for a in BLOCK_ARGS), "torch")
    args = (torch.randn_like(out), block["x"], block["w_red"], block["w_pool"], block["w3"], block["w5"], out, scratch)
    names = op_backends("inception_block_backward", gpu)
    assert "triton" in names, names
    for backend in names:
        for need_x in (True, False):
            torch.library.opcheck(torch.ops.inception_fast.inception_block_backward.default, (*args, need_x, backend))


@pytest.mark.gpu
def test_gpu_auto_backward_is_checked_and_measured(cuda_device):
    from inception_fast import choices

    cfg = _scaled(BLOCK_CONFIGS["inception4a"], 2)
    x = torch.randn(8, cfg[0], 14, 14, device=cuda_device).contiguous(memory_format=CL)
    ref, fused = _pair(cfg, x.cpu(), backend="auto")
    ref, fused = ref.to(cuda_device), fused.to(cuda_device)
    target = torch.randn_like(ref(x))
    got, want = _grads(fused, x, target), _grads(ref, x, target)
    for g, w in zip(got, want):
        check_close(g, w, TOLERANCE["tf32"], "gradient")
    assert choices.BACKWARD.choices(), "backend='auto' measured no backward"


def test_backward_benchmark_runs():
    """benchmarks/bench_block_backward.py must not rot: one small block on the CPU."""
    from benchmarks.bench_block_backward import run

    (row,) = run("cpu", "fp32", 1, 32, ["inception5a"], 0.0)
    assert set(row["ms"]) == {"reference", "aten_chain"} and all(v > 0 for v in row["ms"].values())


def _block_input_sides(image_size: int) -> dict:
    """{block name: the side of its input} in the package's GoogLeNet (torchvision's variant) at ``image_size``."""
    from inception_fast.reference import GoogLeNet

    model = GoogLeNet(variant="torchvision", init_weights=False).eval()
    sides = {}

    def record(name):
        def hook(mod, inp):
            sides[name] = inp[0].shape

        return hook

    for name in BLOCK_CONFIGS:
        getattr(model, name).register_forward_pre_hook(record(name))
    with torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size))
    assert all(shape[-1] == shape[-2] for shape in sides.values()), sides
    return {name: shape[-1] for name, shape in sides.items()}


@pytest.mark.parametrize("op", ["backward", "bn_train"])
def test_backward_benchmark_rows_hold_agreeing_candidates_and_their_times(op, monkeypatch, capsys):
    """bench_block_backward.run, its timing stubbed: each block runs at its input's side in the network
    (at an image size whose pools round), the plain-PyTorch reference computes what the ATen op computes (its
    gradients, or its train-mode output), and each row holds its op, block, batch and dtype, every candidate's
    median and quartiles in ms, and prints the aten_chain/reference ratio; a deadline still ahead leaves every
    block in."""
    import time

    from benchmarks import bench_block_backward
    from benchmarks.helpers.settings import ENV_DEADLINE
    from inception_fast.timing import Timing

    results, timings = [], []

    def timed(fns, *, device, batch, budget_s):
        results.append({k: fn() for k, fn in fns.items()})
        scale = 1e-3 * len(results)  # distinct times per candidate and per block
        timings.append(
            {
                k: Timing(scale * (i + 1), [scale * (i + 1) * f for f in (0.8, 1.0, 1.5, 1.1)], batch)
                for i, k in enumerate(fns)
            }
        )
        return timings[-1]

    monkeypatch.setattr(bench_block_backward, "time_interleaved", timed)
    monkeypatch.setenv(ENV_DEADLINE, str(time.time() + 3600))
    blocks, image_size = ["inception4a", "inception5b"], 100
    rows = bench_block_backward.run("cpu", "fp32", 2, image_size, blocks, 0.0, op=op)
    sides = _block_input_sides(image_size)
    assert [(r["op"], r["block"], r["size"], r["batch"], r["dtype"]) for r in rows] == [
        (op, name, sides[name], 2, "fp32") for name in blocks
    ]
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == len(rows), printed
    for row, timing, line, result in zip(rows, timings, printed, results):
        assert row["ms"] == pytest.approx({k: t.median_s * 1e3 for k, t in timing.items()})
        assert row["iqr_ms"] == {k: pytest.approx([q * 1e3 for q in t.quartiles_s]) for k, t in timing.items()}
        assert row["errors"] == {} and set(row["ms"]) == {"reference", "aten_chain"}
        ratio = timing["aten_chain"].median_s / timing["reference"].median_s
        assert f"aten_chain/reference {ratio:.2f}" in line, line
        want, got = result["reference"], result["aten_chain"]
        if op == "bn_train":
            assert isinstance(want, torch.Tensor) and want.std() > 0.1, "reference activations vanished"
            check_close(got[0], want, FP32, f"{row['block']}: the train-mode output")
            continue
        assert len(got) == len(want) == 9
        for i, (g, w) in enumerate(zip(got, want)):
            assert w.abs().amax() > 0, f"{row['block']}: gradient {i} of the reference vanished"
            check_close(g, w, FP32, f"{row['block']}: gradient {i}")


def test_backward_benchmark_leaves_out_the_blocks_past_its_deadline(monkeypatch, capsys):
    """bench_block_backward.run past the GPU suite's step deadline times no block, returns no row and
    says so for each block."""
    import time

    from benchmarks import bench_block_backward
    from benchmarks.helpers.settings import ENV_DEADLINE

    def timed(*args, **kwargs):
        raise AssertionError("a block past the deadline was timed")

    monkeypatch.setattr(bench_block_backward, "time_interleaved", timed)
    monkeypatch.setenv(ENV_DEADLINE, str(time.time() - 1))
    blocks = ["inception4a", "inception5b"]
    assert bench_block_backward.run("cpu", "fp32", 2, 64, blocks, 0.0) == []
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"backward {name}: not run, past the step's deadline ({ENV_DEADLINE})" for name in blocks]


@pytest.mark.parametrize(
    "argv, expect",
    [
        ([], ("fp32", 8, 112, list(BLOCK_CONFIGS), 5.0, "backward")),
        (
            ["--op", "bn_train", "--dtype", "bf16", "--batch", "4", "--size", "100"]
            + ["--block", "inception4a", "--block", "inception5b", "--budget", "0.5"],
            ("bf16", 4, 100, ["inception4a", "inception5b"], 0.5, "bn_train"),
        ),
    ],
    ids=["defaults", "options"],
)
def test_backward_benchmark_command_line_runs_what_it_names(argv, expect, monkeypatch, tmp_path):
    """bench_block_backward.main passes its options (or the documented defaults) to run and writes
    run's rows with the environment to --json."""
    from benchmarks import bench_block_backward

    calls = []

    def fake_run(*args):
        calls.append(args)
        return [{"op": args[-1], "block": name} for name in args[4]]

    monkeypatch.setattr(bench_block_backward, "run", fake_run)
    out = tmp_path / "rows.json"
    assert bench_block_backward.main(["--device", "cpu", *argv, "--json", str(out)]) == 0
    assert calls == [("cpu", *expect)]
    written = json.loads(out.read_text())
    assert written["rows"] == [{"op": expect[-1], "block": name} for name in expect[3]]
    assert written["environment"]
