"""The op ``inception_fast::inception_chain`` (consecutive blocks, the pool before the first one
optional) and FusedGoogLeNet's measured choice between running the blocks as it always has and
the chained Triton form (choices.CHAIN_CHOICE, stages.block_chain).  The kernel itself, the joined
launch, is tested in tests/test_triton_chain.py.

* The op: argument checks with errors that name the problem, opcheck (fake kernel, schema), the
  torch backend against the blocks one by one, inference only.
* The model (under TRITON_INTERPRET=1): with "chained" forced, each stage of blocks runs in n + 1
  launches and the logits match the separate stages'; a chained kernel that is off is never
  chosen; no chain with gradients, in train mode, or off the chooser's devices.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.nn.functional as F

from inception_fast import choices, ops, stages
from inception_fast.testing import TOLERANCE, check_close

pytest.importorskip("triton")

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
interpreter_only = pytest.mark.skipif(not INTERPRET, reason="CPU tests need TRITON_INTERPRET=1 set before import")

from block_cases import block_reference, make_block  # noqa: E402
from launch_observer import forcing_chooser  # noqa: E402
from model_cases import net_tolerance, op_backends  # noqa: E402

from inception_fast.backends.triton import _common  # noqa: E402

# The choices inside a forward, each on its own: auto's whole-network choice off (conftest).
pytestmark = pytest.mark.usefixtures("no_network_choice")

CL = torch.channels_last
WEIGHTS = ("w_red", "b_red", "w_pool", "b_pool", "w3", "b3", "w5", "b5")


@pytest.fixture(autouse=True)
def _extra_candidates_offered(monkeypatch):
    """FusedGoogLeNet offers the chained and folded forms only on request (stages.offers): these
    tests request both, except the one of the default."""
    monkeypatch.setenv("INCEPTION_FAST_EXTRA_CANDIDATES", "all")


# Two small blocks that chain: the first's 4 + 6 + 5 + 3 = 18 output channels are the second's input.
FIRST = (11, 4, 5, 6, 3, 5, 3)
SECOND = (18, 7, 4, 5, 2, 3, 4)
MAXPOOL23 = (3, 2, 0, True)


def _chain(n=2, h=7, w=5, seed=0):
    a = make_block(FIRST, n=n, h=h, w=w, seed=seed)
    b = make_block(SECOND, n=n, h=h, w=w, seed=seed + 1)
    return a["x"], [tuple(a[k] for k in WEIGHTS), tuple(b[k] for k in WEIGHTS)]


def _one_by_one(x, blocks, pool=None):
    if pool is not None:
        x = F.max_pool2d(x, pool[0], pool[1], pool[2], ceil_mode=pool[3])
    for block in blocks:
        x = block_reference(x, *block)[0]
    return x


@pytest.mark.parametrize("pool", [None, MAXPOOL23])
def test_torch_backend_is_the_blocks_one_by_one(pool):
    x, blocks = _chain(h=9, w=7)
    out = ops.inception_chain(x, blocks, pool)
    ref = _one_by_one(x.double(), [[t.double() for t in b] for b in blocks], pool)
    assert ref.std() > 0.1, "reference output is near zero: the comparison could not fail"
    assert out.shape == ref.shape and out.is_contiguous(memory_format=CL)
    check_close(out, ref, TOLERANCE["fp32"], "inception_chain on the torch backend")


def test_op_checks_errors_and_opcheck():
    x, blocks = _chain()
    weights = [t for b in blocks for t in b]
    for backend in op_backends("inception_chain"):
        torch.library.opcheck(torch.ops.inception_fast.inception_chain.default, (x, weights, [], False, backend))
        torch.library.opcheck(torch.ops.inception_fast.inception_chain.default, (x, weights, [3, 2, 0], True, backend))
    with pytest.raises(ValueError, match="8 packed tensors per block"):
        torch.ops.inception_fast.inception_chain(x, weights[:-1], [], False, "torch")
    with pytest.raises(ValueError, match="block 0 outputs 18 channels but block 1 expects 11"):
        ops.inception_chain(x, [blocks[0], blocks[0]])
    with pytest.raises(ValueError, match="expects 11 input channels"):
        ops.inception_chain(x[:, :5], blocks)
    with pytest.raises(ValueError, match=r"pool is \[\] or \[kernel, stride, padding\]"):
        torch.ops.inception_fast.inception_chain(x, weights, [3, 2], False, "torch")
    with pytest.raises(ValueError, match="too small"):
        ops.inception_chain(x[:, :, :2, :2], blocks, (3, 3, 0, False))
    with pytest.raises(ValueError, match="not 'auto'.*choices.CHAIN_CHOICE"):
        ops.inception_chain(x, blocks, backend="auto")
    with pytest.raises(ValueError, match="runs on the 'torch' or 'triton' backend"):
        ops.inception_chain(x, blocks, backend="cpp")
    with pytest.raises(TypeError, match="inception_chain: block 1: .*does not match weight w3"):
        ops.inception_chain(x, [blocks[0], (*blocks[1][:4], blocks[1][4].half(), *blocks[1][5:])])
    empty = ops.inception_chain(x[:0], blocks, MAXPOOL23)
    assert empty.shape == (0, 7 + 5 + 3 + 4, 3, 2)  # the second block's channels at the pooled 7x5
    y = ops.inception_chain(x.clone().requires_grad_(), blocks)
    with pytest.raises(RuntimeError, match="inference only"):
        y.sum().backward()


# -- FusedGoogLeNet's measured choice ----------------------------------------------------------------


def _model(variant="torchvision", backend="auto"):
    from inception_fast import FusedGoogLeNet, GoogLeNet
    from inception_fast.testing import calibrate

    ref = GoogLeNet(num_classes=10, variant=variant)
    calibrate(ref, torch.randn(4, ref.in_channels, 40, 40))
    return ref, FusedGoogLeNet.from_torchvision(ref, backend=backend).eval()


def _static_stages(monkeypatch):
    for name in ("STEM_CHOICE", "POOL_CHOICE", "HEAD_CHOICE", "FOLD_CHOICE"):  # the first candidates: ATen's
        monkeypatch.setattr(choices, name, choices.MeasuredChoice(measure_on=()))


@interpreter_only
def test_model_with_the_chain_forced_matches(monkeypatch):
    """With "chained" measured fastest, 3a-3b, 4a-4e and 5a-5b each run as one chain (their pools
    folded into the first launch 1): 3 + 6 + 3 Triton launches, and the logits match the fp64
    reference within the whole-network fp32 bound (model_cases.net_tolerance).  A torch-pinned
    model never asks."""
    ref, model = _model()
    x = torch.randn(1, ref.in_channels, 40, 40)
    _static_stages(monkeypatch)
    chooser = forcing_chooser("chained")
    monkeypatch.setattr(choices, "CHAIN_CHOICE", chooser)
    with torch.no_grad():
        before = _common.launch_count()
        chained = model(x)  # measures (and checks the chained form against fp64 ATen), then runs it
        launches = _common.launch_count() - before - sum(chooser.measuring_launches)
    expected, tol = net_tolerance(ref, x)
    made = chooser.choices()
    assert [c.name for c in made.values()] == ["chained"] * 3
    assert not any(c.errors for c in made.values())
    assert [len(key.blocks) for key in made] == [2, 5, 2]
    assert [key.params for key in made] == [MAXPOOL23, MAXPOOL23, (2, 2, 0, True)]
    assert {key.backend for key in made} == {"auto"}  # what "separate" runs is in the key
    assert launches == 3 + 6 + 3
    check_close(chained, expected, tol, "chained against the fp64 reference")
    chooser = forcing_chooser("chained")
    monkeypatch.setattr(choices, "CHAIN_CHOICE", chooser)
    _, pinned = _model(backend="torch")
    with torch.no_grad():
        pinned._pool_blocks(pinned.maxpool4, (pinned.inception5a, pinned.inception5b), torch.randn(1, 832, 4, 4))
    assert not chooser.choices()


@interpreter_only
def test_d2l_padded_pools_fold_into_the_chain(monkeypatch):
    """d2l's padded floor-mode pools fold too (geometry.foldable): the chain's key holds them."""
    ref, model = _model("d2l")
    x = torch.randn(1, 832, 5, 5).contiguous(memory_format=CL)
    chooser = forcing_chooser("chained")
    monkeypatch.setattr(choices, "CHAIN_CHOICE", chooser)
    with torch.no_grad():
        out = model._pool_blocks(model.maxpool4, (model.inception5a, model.inception5b), x)
        expected = ref.inception5b(ref.inception5a(ref.maxpool4(x)))
    ((key, choice),) = chooser.choices().items()
    assert key.params == (3, 2, 1, False) and choice.name == "chained" and not choice.errors
    check_close(out, expected, TOLERANCE["fp32"], "d2l chained against the reference")


@interpreter_only
def test_a_wrong_chained_kernel_is_never_chosen(monkeypatch):
    """The chained form is checked against fp64 ATen on its first call: a kernel that is off is
    dropped with the error on record, however fast it would be."""
    from inception_fast.backends.triton import chain

    real = chain.chain_forward
    monkeypatch.setattr(chain, "chain_forward", lambda *a, **k: real(*a, **k) * 1.01)
    chooser = forcing_chooser("chained")
    monkeypatch.setattr(choices, "CHAIN_CHOICE", chooser)
    ref, model = _model()
    x = torch.randn(1, 832, 5, 5).contiguous(memory_format=CL)
    blocks = (model.inception5a, model.inception5b)
    with torch.no_grad():
        out = model._pool_blocks(None, blocks, x)
        expected = ref.inception5b(ref.inception5a(x))
    check_close(out, expected, TOLERANCE["fp32"], "the separate blocks")
    (choice,) = chooser.choices().values()
    assert choice.name == "separate" and "disagrees with ATen" in choice.errors["chained"]


@interpreter_only
def test_never_chained_with_gradients_in_train_mode_or_off_the_choice(monkeypatch):
    """No chain where a gradient is wanted, where a block's BatchNorm uses batch statistics, for a
    single block, or on CPU with the real CHAIN_CHOICE (it measures on CUDA only: "separate")."""
    import copy

    chooser = forcing_chooser("chained")
    monkeypatch.setattr(choices, "CHAIN_CHOICE", chooser)
    ref, model = _model()
    x = torch.randn(2, 832, 3, 3).contiguous(memory_format=CL)
    blocks = (model.inception5a, model.inception5b)
    model._pool_blocks(None, blocks, x)  # grad enabled, parameters require grad
    training = copy.deepcopy(model).train()
    with torch.no_grad():
        training._pool_blocks(None, (training.inception5a, training.inception5b), x)
        model._pool_blocks(None, blocks[:1], x)
    assert not chooser.choices()
    monkeypatch.setattr(choices, "CHAIN_CHOICE", choices.MeasuredChoice())  # CUDA only, like the real one
    with torch.no_grad():
        out = model._pool_blocks(None, blocks, x)
        expected = ref.inception5b(ref.inception5a(x))
    assert not choices.CHAIN_CHOICE.choices()
    check_close(out, expected, TOLERANCE["fp32"], "separate")


@interpreter_only
def test_the_joined_forms_never_run_on_weights_wanting_a_gradient(monkeypatch):
    """stages' own guard behind the model's (``_fusable_blocks``): with grad enabled and packed weights
    that require grad, the fold and the chain run ``separate()`` and measure nothing (their ops have
    no backward).  Without a gradient wanted, the same calls measure and run the joined form.  Neither
    competes for an empty or unbatched input (``triton_may_compete``)."""
    x, blocks = _chain()
    wanting = [tuple(t.detach().clone().requires_grad_() for t in b) for b in blocks]
    pool = torch.nn.MaxPool2d(3, 2, ceil_mode=True)
    fold, chain = forcing_chooser("folded"), forcing_chooser("chained")
    monkeypatch.setattr(choices, "FOLD_CHOICE", fold)
    monkeypatch.setattr(choices, "CHAIN_CHOICE", chain)
    shapes = tuple(tuple(tuple(t.shape) for t in b) for b in blocks)
    assert stages.triton_may_compete(fold, x, True) and not stages.triton_may_compete(fold, x, False)
    assert not stages.triton_may_compete(fold, x[:0], True), "no images: nothing to join"
    assert not stages.triton_may_compete(fold, x[0], True), "not a batch"
    ran = []
    separate = lambda: ran.append("separate") or x  # noqa: E731
    assert stages.pool_block(x, pool, shapes[0], lambda: wanting[0], separate, "triton") is x
    assert stages.block_chain(x, pool, shapes, lambda: wanting, separate, "triton") is x
    assert ran == ["separate", "separate"] and not fold.choices() and not chain.choices()
    with torch.no_grad():
        folded = stages.pool_block(x, pool, shapes[0], lambda: blocks[0], separate, "triton")
        chained = stages.block_chain(x, pool, shapes, lambda: blocks, separate, "triton")
    assert [c.name for c in fold.choices().values()] == ["folded"]
    assert [c.name for c in chain.choices().values()] == ["chained"]
    want_folded, want_chained = _one_by_one(x, blocks[:1], MAXPOOL23), _one_by_one(x, blocks, MAXPOOL23)
    assert min(want_folded.std(), want_chained.std()) > 0.1, "reference near zero: the comparison could not fail"
    check_close(folded, want_folded, TOLERANCE["fp32"], "folded")
    check_close(chained, want_chained, TOLERANCE["fp32"], "chained")


@interpreter_only
def test_the_chained_and_folded_forms_are_offered_only_on_request(monkeypatch):
    """By default (INCEPTION_FAST_EXTRA_CANDIDATES unset: both measured slower everywhere on an
    H200) the model asks neither CHAIN_CHOICE nor FOLD_CHOICE and runs its stages separately;
    "chain" alone offers the chain only, "all" both; an unknown name is an error that names it
    wherever the forms could compete (read only there: not with gradients, not on other backends)."""
    _static_stages(monkeypatch)
    ref, model = _model()
    x = torch.randn(1, ref.in_channels, 40, 40)
    # Choosers that record what they are asked and run no candidate: each picks "separate", offered first.
    chain_chooser, fold_chooser = (
        choices.MeasuredChoice(measure_on=("cpu",), timer=lambda fn, device, repeats: 1.0) for _ in range(2)
    )
    monkeypatch.setattr(choices, "CHAIN_CHOICE", chain_chooser)
    monkeypatch.setattr(choices, "FOLD_CHOICE", fold_chooser)
    monkeypatch.delenv("INCEPTION_FAST_EXTRA_CANDIDATES")
    expected, tol = net_tolerance(ref, x)
    with torch.no_grad():
        check_close(model(x), expected, tol, "the default forms")
    assert not chain_chooser.choices() and not fold_chooser.choices()
    monkeypatch.setenv("INCEPTION_FAST_EXTRA_CANDIDATES", "chain")
    with torch.no_grad():
        model(x)
    assert len(chain_chooser.choices()) == 3 and not fold_chooser.choices()
    monkeypatch.setenv("INCEPTION_FAST_EXTRA_CANDIDATES", " Chain , fold ")
    with torch.no_grad():
        model._pool_block(model.maxpool3, model.inception4a, torch.randn(1, 480, 7, 7).contiguous(memory_format=CL))
    assert len(fold_chooser.choices()) == 1
    monkeypatch.setenv("INCEPTION_FAST_EXTRA_CANDIDATES", "all")
    assert stages.offers("chain") and stages.offers("fold")
    monkeypatch.setenv("INCEPTION_FAST_EXTRA_CANDIDATES", "chain,folds")
    with pytest.raises(ValueError, match="unknown form.*folds.*fold, chain, or all"), torch.no_grad():
        model(x)


# -- GPU ---------------------------------------------------------------------------------------------


def test_gpu_chain_choice_checks_the_chained_form(gpu, monkeypatch):
    """FusedGoogLeNet in bf16 at 224x224 on the GPU: CHAIN_CHOICE measures 3a-3b, 4a-4e and 5a-5b;
    whatever it picks, the chained form's first result agreed with fp64 ATen (no error on record),
    and the logits match the model with nothing chained."""
    from inception_fast import FusedGoogLeNet, GoogLeNet
    from inception_fast.testing import calibrate, reduced_precision_bound

    ref = GoogLeNet(num_classes=1000)
    calibrate(ref, torch.randn(8, 3, 224, 224))
    model = FusedGoogLeNet.from_torchvision(ref, backend="auto").to(gpu, torch.bfloat16).eval()
    x = torch.randn(4, 3, 224, 224, device=gpu, dtype=torch.bfloat16).contiguous(memory_format=CL)
    monkeypatch.setattr(choices, "CHAIN_CHOICE", choices.MeasuredChoice())
    with torch.no_grad():
        model(x)
        measured = choices.CHAIN_CHOICE.choices()
        out = model(x)
        monkeypatch.setattr(choices, "CHAIN_CHOICE", choices.MeasuredChoice(measure_on=()))
        separate = model(x)
        ref_low = copy.deepcopy(ref).to(gpu, torch.bfloat16)(x)
        expected = ref.to(gpu).double()(x.double())
    assert len(measured) == 3 and not any(c.errors for c in measured.values()), measured
    bound = reduced_precision_bound(ref_low.double(), expected)  # twice the reference's own bf16 error
    check_close(out.double(), expected, bound, "chain choice")
    check_close(separate.double(), expected, bound, "without the chains")
