"""Max pools folded into the next block's launch 1 (reduce_pool.py with PRE_K > 1), the op
``inception_fast::pooled_inception_block``, and FusedGoogLeNet's measured choice between the two
stages and the folded form (choices.FOLD_CHOICE, stages.pool_block).

The reference is the block of tests/block_cases.py on F.max_pool2d of the input, in float64 from
the same weights; outputs are NaN-poisoned first (the ``poisoned`` fixture), so an element no
kernel writes fails.  The geometries are GoogLeNet's (3x3/2 ceil before 3a and 4a, 2x2/2 ceil
before 5a, d2l's padded 3x3/2 floor) at small sizes, odd and ceil-mode edges included.
* CPU: under TRITON_INTERPRET=1 (tests/conftest.py), fp32 and fp16; every launch-1 config pinned.
* GPU (marked gpu, skipped without CUDA): bf16, every config, GoogLeNet's own sizes.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.nn.functional as F

from inception_fast import choices, ops
from inception_fast.testing import TOLERANCE, check_close, reduced_precision_bound

pytest.importorskip("triton")

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
interpreter_only = pytest.mark.skipif(not INTERPRET, reason="CPU tests need TRITON_INTERPRET=1 set before import")

from block_cases import ODD, block_reference, make_block  # noqa: E402
from launch_observer import forcing_chooser, observe_launches  # noqa: E402
from model_cases import NETWORK, net_tolerance, op_backends  # noqa: E402

from inception_fast.backends.triton import _common, branch_convs, reduce_pool  # noqa: E402
from inception_fast.backends.triton import block as tb  # noqa: E402

# The choices inside a forward, each on its own: auto's whole-network choice off (conftest).
pytestmark = pytest.mark.usefixtures("no_network_choice")


@pytest.fixture(autouse=True)
def _fold_offered(monkeypatch):
    """FusedGoogLeNet offers the folded form only on request (stages.offers): these tests request it."""
    monkeypatch.setenv("INCEPTION_FAST_EXTRA_CANDIDATES", "fold")


CL = torch.channels_last
WEIGHTS = ("w_red", "b_red", "w_pool", "b_pool", "w3", "b3", "w5", "b5")
MAXPOOL23 = (3, 2, 0, True)  # torchvision's maxpool2 and maxpool3 (and the paper's)
MAXPOOL4 = (2, 2, 0, True)
D2L = (3, 2, 1, False)  # d2l's pools: padded, floor mode


def reference64(block, pool):
    """The block on max_pool2d(x, *pool), in float64."""
    b64 = {k: v.double() for k, v in block.items()}
    k, s, p, ceil = pool
    b64["x"] = F.max_pool2d(b64["x"], k, s, p, ceil_mode=ceil).contiguous(memory_format=CL)
    return block_reference(**b64)


def check_folded(block, pool, what, out=None):
    if out is None:
        out = ops.pooled_inception_block(block["x"], *(block[k] for k in WEIGHTS), *pool, backend="triton")
    ref, _ = reference64(block, pool)
    assert out.shape == ref.shape and out.is_contiguous(memory_format=CL) and out.dtype == block["x"].dtype
    assert ref.std() > 0.1, "reference output is near zero: the comparison could not fail"
    if block["x"].dtype == torch.float32:
        return check_close(out, ref, TOLERANCE["fp32"], what)
    ref_lowp, _ = block_reference(
        **{**block, "x": F.max_pool2d(block["x"], pool[0], pool[1], pool[2], ceil_mode=pool[3])}
    )
    return check_close(out, ref, reduced_precision_bound(ref_lowp, ref), what)


# (pool, batch, pre-pool H, W): the three stage geometries shrunk, odd sizes, ceil mode's
# overhanging last window (13, 15, 9 at 3x3/2; 7, 5, 3 at 2x2/2), the smallest inputs (2 and 1),
# d2l's padded floor-mode pool, an unpadded floor-mode pool that drops the last row and column.
CASES = [
    (MAXPOOL23, 2, 13, 9),
    (MAXPOOL23, 1, 15, 14),
    (MAXPOOL23, 3, 3, 2),
    (MAXPOOL4, 2, 7, 5),
    (MAXPOOL4, 3, 1, 1),
    (MAXPOOL4, 1, 9, 3),
    (D2L, 2, 9, 15),
    (D2L, 1, 2, 1),
    ((3, 2, 0, False), 2, 14, 10),  # floor mode: the last row and column belong to no window
]


@interpreter_only
@pytest.mark.parametrize("pool,n,h,w", CASES)
def test_folded_block_fp32(pool, n, h, w, poisoned):
    block = make_block(ODD, k5=3 if h % 2 else 5, n=n, h=h, w=w, seed=h * w + n)
    check_folded(block, pool, f"pool {pool} on {n}x{h}x{w}")


@interpreter_only
@pytest.mark.parametrize("pool,h", [(MAXPOOL23, 11), (MAXPOOL4, 5)])
def test_folded_block_fp16(pool, h, poisoned):
    block = make_block((24, 8, 12, 16, 4, 8, 8), n=2, h=h, w=h, dtype=torch.float16, seed=5)
    check_folded(block, pool, f"fp16 pool {pool}")


def test_folded_launches_tune_no_config_twice():
    """With a pre-pool folded in, launch 1's prune keeps one of each set of configs that differ only
    in what the folded pool role ignores (POOL_STAGES, POOL_L1: the same code), and every distinct
    one; without, all of them."""
    configs = [reduce_pool._complete_config(c) for c in reduce_pool.CONFIGS]
    large = {"M": _common.SMALL_PROBLEM_PIXELS + 1}
    unfolded = reduce_pool._prune(configs, large, PRE_K=1)
    folded = reduce_pool._prune(configs, large, PRE_K=3)
    assert unfolded == reduce_pool._prune_small_only(configs, large)

    def code(c):
        kwargs = {k: v for k, v in c.kwargs.items() if k not in ("POOL_STAGES", "POOL_L1")}
        return repr(sorted(kwargs.items())), c.num_warps, c.num_stages

    assert len(folded) < len(unfolded) and all(c in unfolded for c in folded)
    assert len({code(c) for c in folded}) == len(folded) == len({code(c) for c in unfolded})


@interpreter_only
def test_nan_propagates_like_pytorch(poisoned):
    """A NaN in the input makes NaN every output whose pre-pool windows hold it (through the reduce
    role's window and the pool role's wider one), as ATen's pool + block does, and nothing else."""
    block = make_block(ODD, n=2, h=13, w=11, seed=9)
    block["x"][0, 3, 4, 7] = float("nan")
    block["x"][1, :, 12, 0] = float("nan")  # in ceil mode's last, overhanging window
    out = ops.pooled_inception_block(block["x"], *(block[k] for k in WEIGHTS), *MAXPOOL23, backend="triton")
    ref = ops.pooled_inception_block(block["x"], *(block[k] for k in WEIGHTS), *MAXPOOL23, backend="torch")
    assert out.isnan().any() and torch.equal(out.isnan(), ref.isnan())
    check_close(out.nan_to_num(0.0), ref.nan_to_num(0.0), TOLERANCE["fp32"], "the values beside the NaNs")


# The pooled size makes every config's own paths run, as test_triton.py's test_every_config_fp32:
# 2 images of 7x7 pooled pixels (14x14 before 3x3/2 ceil) = 98 rows, 40 input channels.
EVERY_CONFIG_BLOCK = (40, 20, 24, 40, 12, 20, 18)


@interpreter_only
@pytest.mark.parametrize("i", range(len(reduce_pool.CONFIGS)))
def test_every_config_folded_fp32(i, poisoned):
    """Every config the autotuner can choose on a GPU, pinned, with the pool folded in (its K step
    capped at FOLD_BLOCK_K in the reduce role); launch 2 with the interpreter's tile."""
    import triton

    config = reduce_pool.CONFIGS[i]
    pool = MAXPOOL23 if i % 2 == 0 else MAXPOOL4
    block = make_block(EVERY_CONFIG_BLOCK, k5=5, n=2, h=14, w=14, seed=60 + i)
    hw = (7, 7)
    from inception_fast import geometry

    out, scratch = geometry.empty_outputs(block["x"], block["w_red"], block["w_pool"], block["w3"], block["w5"], hw)
    ch1 = block["w_red"].shape[0] - scratch.shape[1]
    reduce_pool.launch_reduce_pool(
        block["x"], block["w_red"], block["b_red"], block["w_pool"], block["b_pool"], out, scratch, config=config,
        pre_pool=pool,
    )  # fmt: skip
    branch_convs.launch_branch_convs(
        scratch, block["w3"], block["b3"], block["w5"], block["b5"], out, ch1,
        config=triton.Config(dict(branch_convs.INTERPRETER_CONFIG)),
    )  # fmt: skip
    ref_out, ref_scratch = reference64(block, pool)
    what = f"pool {pool}, launch 1 {_common.config_name(config)}"
    check_close(scratch, ref_scratch, TOLERANCE["fp32"], f"{what}: scratch")
    check_close(out, ref_out, TOLERANCE["fp32"], f"{what}: out")


@interpreter_only
def test_two_launches_no_pool_kernel_no_cat(monkeypatch):
    block = make_block(ODD, n=2, h=9, w=7, seed=2)
    before = tb.launch_count()
    out, aten_ops, launched = observe_launches(
        lambda: tb.pooled_block_forward(block["x"], *MAXPOOL23, *(block[k] for k in WEIGHTS)), monkeypatch
    )
    assert tb.launch_count() - before == 2
    assert launched == [reduce_pool._reduce_pool_kernel, branch_convs._branch_convs_kernel]
    allowed = {"aten.empty.memory_format", "aten.empty_strided.default"}
    assert aten_ops and set(aten_ops) <= allowed, f"unexpected aten ops: {sorted(set(aten_ops) - allowed)}"
    check_folded(block, MAXPOOL23, "two launches", out)


def test_op_checks_errors_and_opcheck():
    block = make_block(ODD, n=2, h=9, w=7)
    args = [block[k] for k in ("x", *WEIGHTS)]
    out = ops.pooled_inception_block(*args, *MAXPOOL23)
    assert out.shape == (2, sum(ODD[i] for i in (1, 3, 5, 6)), 4, 3)
    for backend in op_backends("pooled_inception_block"):
        torch.library.opcheck(torch.ops.inception_fast.pooled_inception_block.default, (*args, *MAXPOOL23, backend))
    with pytest.raises(ValueError, match="at most half the kernel"):
        ops.pooled_inception_block(*args, 3, 2, 2)
    with pytest.raises(ValueError, match="too small"):
        ops.pooled_inception_block(block["x"][:, :, :2, :2], *args[1:], 3, 3, 0, False)
    with pytest.raises(ValueError, match="not 'auto'.*choices.FOLD_CHOICE"):
        ops.pooled_inception_block(*args, *MAXPOOL23, backend="auto")
    with pytest.raises(ValueError, match="expects 13 input channels"):
        ops.pooled_inception_block(block["x"][:, :5], *args[1:], *MAXPOOL23)
    with pytest.raises(ValueError, match="runs on the 'torch' or 'triton' backend"):
        ops.pooled_inception_block(*args, *MAXPOOL23, backend="cpp")
    x = block["x"].clone().requires_grad_()
    y = ops.pooled_inception_block(x, *args[1:], *MAXPOOL23)
    with pytest.raises(RuntimeError, match="inference only"):
        y.sum().backward()


@interpreter_only
def test_unfoldable_pool_is_refused_by_triton():
    block = make_block(ODD, n=1, h=9, w=9)
    with pytest.raises(ValueError, match="does not fold"):
        ops.pooled_inception_block(block["x"], *(block[k] for k in WEIGHTS), 3, 3, 0, True, backend="triton")


# -- FusedGoogLeNet's measured choice ----------------------------------------------------------------


def _model(variant, backend="triton"):
    from inception_fast import FusedGoogLeNet, GoogLeNet
    from inception_fast.testing import calibrate

    ref = GoogLeNet(num_classes=10, variant=variant)
    calibrate(ref, torch.randn(4, ref.in_channels, 40, 40))
    return ref, FusedGoogLeNet.from_torchvision(ref, backend=backend).eval()


@interpreter_only
def test_model_with_the_fold_forced_matches(monkeypatch, variant="torchvision"):
    """With the folded form measured fastest, maxpool2/3/4 run inside 3a's/4a's/5a's launch 1: the
    logits match the fp64 reference within the whole-network fp32 bound, as the separate stages'
    do (model_cases.net_tolerance; d2l's padded pools: the op tests).
    Backend "auto": on CPU the blocks run ATen's, the folded form the Triton kernels (two launches
    each, no pool kernel).  A torch-pinned model never asks."""
    ref, model = _model(variant, backend="auto")
    x = torch.randn(1, ref.in_channels, 40, 40)
    for name in ("STEM_CHOICE", "POOL_CHOICE", "HEAD_CHOICE"):  # the first candidates: ATen's
        monkeypatch.setattr(choices, name, choices.MeasuredChoice(measure_on=()))
    with torch.no_grad():
        separate = model(x)  # the real FOLD_CHOICE measures on CUDA only
        chooser = forcing_chooser("folded")
        monkeypatch.setattr(choices, "FOLD_CHOICE", chooser)
        before = _common.launch_count()
        folded = model(x)  # measures (and checks the folded form against fp64 ATen), then runs it
        launches = _common.launch_count() - before - sum(chooser.measuring_launches)
    assert [c.name for c in chooser.choices().values()] == ["folded"] * 3
    assert {key.backend for key in chooser.choices()} == {"auto"}  # what "separate" runs is in the key
    assert not any(c.errors for c in chooser.choices().values())
    assert launches == 6  # launch 1 (with the pool) and launch 2 of 3a, 4a and 5a
    expected, tol = net_tolerance(ref, x)
    check_close(separate, expected, tol, "separate against the fp64 reference")
    check_close(folded, expected, tol, "folded against the fp64 reference")
    chooser = forcing_chooser("folded")
    monkeypatch.setattr(choices, "FOLD_CHOICE", chooser)
    with torch.no_grad():
        _, pinned = _model(variant, backend="torch")
        pinned(x)
    assert not chooser.choices()


@interpreter_only
def test_a_hooked_pool_or_block_is_not_folded(monkeypatch):
    """With the folded form forced, a hook on maxpool3 and one inside 5a keep those pools out of
    the folded launch (only maxpool2 folds), and both hooks act as in the reference."""
    ref, model = _model("torchvision", backend="auto")
    x = torch.randn(1, ref.in_channels, 40, 40)
    for name in ("STEM_CHOICE", "POOL_CHOICE", "HEAD_CHOICE"):
        monkeypatch.setattr(choices, name, choices.MeasuredChoice(measure_on=()))
    chooser = forcing_chooser("folded")
    monkeypatch.setattr(choices, "FOLD_CHOICE", chooser)
    for net in (ref, model):
        net.maxpool3.register_forward_pre_hook(lambda m, args: (args[0] * 0.5 + 0.25,))
        net.inception5a.branch1.conv.register_forward_hook(lambda m, args, out: out * 1.5)
    with torch.no_grad():
        got = model(x)
    want, tol = net_tolerance(ref, x)
    check_close(got, want, tol, "hooked pools and blocks against the fp64 reference")
    assert [key.shape[1] for key in chooser.choices()] == [192]  # maxpool2 into 3a only


@interpreter_only
def test_a_wrong_folded_kernel_is_never_chosen(monkeypatch):
    """The folded form is checked against fp64 ATen on its first call: a kernel that is off is
    dropped with the error on record, however fast it would be."""
    real = tb.pooled_block_forward
    monkeypatch.setattr(tb, "pooled_block_forward", lambda *a: real(*a) * 1.01)
    chooser = forcing_chooser("folded")
    monkeypatch.setattr(choices, "FOLD_CHOICE", chooser)
    ref, model = _model("torchvision")
    x = torch.randn(1, 480, 9, 9).contiguous(memory_format=CL)
    with torch.no_grad():
        out = model._pool_block(model.maxpool3, model.inception4a, x)
        expected = ref.inception4a(ref.maxpool3(x))
    check_close(out, expected, TOLERANCE["fp32"], "the separate stages")
    (choice,) = chooser.choices().values()
    assert choice.name == "separate" and "disagrees with ATen" in choice.errors["folded"]


@interpreter_only
def test_never_folded_with_gradients_in_train_mode_or_off_the_choice(monkeypatch):
    """No fold where a gradient is wanted, where the block's BatchNorm uses batch statistics, or on
    CPU with the real FOLD_CHOICE (it measures on CUDA only: the static answer, "separate")."""
    import copy

    chooser = forcing_chooser("folded")
    monkeypatch.setattr(choices, "FOLD_CHOICE", chooser)
    ref, model = _model("torchvision")
    x = torch.randn(2, 480, 5, 5).contiguous(memory_format=CL)
    model._pool_block(model.maxpool3, model.inception4a, x)  # grad enabled, parameters require grad
    training = copy.deepcopy(model).train()
    with torch.no_grad():
        training._pool_block(training.maxpool3, training.inception4a, x)
    assert not chooser.choices()
    monkeypatch.setattr(choices, "FOLD_CHOICE", choices.MeasuredChoice())  # CUDA only, like the real one
    with torch.no_grad():
        out = model._pool_block(model.maxpool3, model.inception4a, x)
    assert not choices.FOLD_CHOICE.choices()
    with torch.no_grad():
        check_close(out, ref.inception4a(ref.maxpool3(x)), TOLERANCE["fp32"], "separate")


# -- GPU ---------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("i", range(len(reduce_pool.CONFIGS)))
def test_gpu_folded_bf16_every_config(i, gpu):
    """GoogLeNet's three folds at their real sizes, batch 2, bf16, each launch-1 config pinned."""
    from inception_fast import geometry
    from inception_fast.reference import BLOCK_CONFIGS

    folds = (("inception3a", 56, MAXPOOL23), ("inception4a", 28, MAXPOOL23), ("inception5a", 14, MAXPOOL4))
    for name, size, pool in folds:
        block = make_block(BLOCK_CONFIGS[name], n=2, h=size, w=size, dtype=torch.bfloat16, device=gpu, seed=i)
        hw = tuple(geometry.pool_out(size, *pool) for _ in range(2))
        out, scratch = geometry.empty_outputs(block["x"], block["w_red"], block["w_pool"], block["w3"], block["w5"], hw)
        ch1 = block["w_red"].shape[0] - scratch.shape[1]
        with torch.cuda.device(gpu):
            reduce_pool.launch_reduce_pool(
                block["x"], block["w_red"], block["b_red"], block["w_pool"], block["b_pool"], out, scratch,
                config=reduce_pool.CONFIGS[i], pre_pool=pool,
            )  # fmt: skip
            branch_convs.launch_branch_convs(
                scratch, block["w3"], block["b3"], block["w5"], block["b5"], out, ch1,
                config=branch_convs.CONFIGS[1],
            )  # fmt: skip
        check_folded(block, pool, f"{name} bf16 config {i}", out)


@pytest.mark.gpu
@NETWORK
def test_gpu_fold_choice_checks_the_folded_form(gpu, monkeypatch):
    """FusedGoogLeNet in bf16 at 224x224 on the GPU: FOLD_CHOICE measures maxpool2/3/4 with
    3a/4a/5a, the folded form passes its parity check against fp64 ATen on each (whichever is
    faster), and the logits, with the folds measured and without them, are within the tolerance
    table's rule of the fp64 reference (twice the reference's own bf16 error)."""
    ref, model = _model("torchvision")
    model = model.to(device=gpu, dtype=torch.bfloat16)
    x = torch.randn(2, 3, 224, 224, device=gpu, dtype=torch.bfloat16)
    monkeypatch.setattr(choices, "FOLD_CHOICE", choices.MeasuredChoice())
    with torch.no_grad():
        out = model(x)
        measured = choices.FOLD_CHOICE.choices()
        assert len(measured) == 3
        for key, choice in measured.items():
            assert "folded" in choice.seconds and not choice.errors, f"{key}: {choice}"
        monkeypatch.setattr(choices, "FOLD_CHOICE", choices.MeasuredChoice(measure_on=()))
        separate = model(x)
    with torch.no_grad():
        ref_low = copy.deepcopy(ref).to(device=gpu, dtype=torch.bfloat16)(x)
        expected = ref.to(device=gpu, dtype=torch.float64)(x.double())
    assert expected.std() > 0.05, "activations vanished; the comparison could not fail"
    bound = reduced_precision_bound(ref_low, expected)
    check_close(out, expected, bound, "bf16 logits with the folds measured, against fp64")
    check_close(separate, expected, bound, "bf16 logits without the folds, against fp64")


@interpreter_only
@pytest.mark.parametrize("pool", [MAXPOOL23, D2L], ids=["3x3s2-ceil", "d2l"])
def test_folded_launch1_strided_weights_and_biases_fp32(pool):
    """The folded launch 1 reads its weights and biases through their own strides: column-major
    w_red and w_pool (K stride = rows), b_red and b_pool every second / third element of NaN-gapped
    buffers; 40 input channels are two K steps of the folded reduce role (FOLD_BLOCK_K 32) with a
    tail.  Launch 1 alone: its slices of out and scratch against the fp64 reference."""
    from unwritten_reads import nan_gapped

    from inception_fast import geometry

    block = make_block((40, 8, 8, 8, 4, 8, 8), n=1, h=9, w=9, seed=70)
    for name in ("w_red", "w_pool"):
        block[name] = block[name].t().contiguous().t()
        assert block[name].stride(0) == 1
    block["b_red"] = nan_gapped(block["b_red"], 2)
    block["b_pool"] = nan_gapped(block["b_pool"], 3)
    hw = tuple(geometry.pool_out(s, *pool) for s in block["x"].shape[2:])
    out, scratch = geometry.empty_outputs(block["x"], block["w_red"], block["w_pool"], block["w3"], block["w5"], hw)
    out.fill_(float("nan"))
    scratch.fill_(float("nan"))
    reduce_pool.launch_reduce_pool(
        block["x"], block["w_red"], block["b_red"], block["w_pool"], block["b_pool"], out, scratch, pre_pool=pool
    )
    ref_out, ref_scratch = reference64(block, pool)
    ch1, n_pool = block["w_red"].shape[0] - scratch.shape[1], block["w_pool"].shape[0]
    assert ref_out[:, -n_pool:].std() > 0.1 and ref_scratch.std() > 0.1
    check_close(scratch, ref_scratch, TOLERANCE["fp32"], f"pool {pool}: scratch")
    check_close(out[:, :ch1], ref_out[:, :ch1], TOLERANCE["fp32"], f"pool {pool}: branch 1")
    check_close(out[:, -n_pool:], ref_out[:, -n_pool:], TOLERANCE["fp32"], f"pool {pool}: pool branch")
