"""FusedInception / FusedGoogLeNet on the torch backend against the reference and torchvision."""

import copy

import pytest
import torch
import torchvision
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from inception_fast import FusedGoogLeNet, FusedInception, GoogLeNet, Inception, available_backends, fuse
from inception_fast.backends import availability
from inception_fast.packing import PackedBlock
from inception_fast.reference import BLOCK_CONFIGS
from inception_fast.testing import TOLERANCE, calibrate, check_close, reduced_precision_bound, rel_error

CL = torch.channels_last
FP32 = TOLERANCE["fp32"]


def calibrated_block(cfg, x, batch_norm=True, k=3):
    ref = Inception(*cfg, batch_norm=batch_norm, branch3_kernel=k)
    calibrate(ref, x)
    return ref, FusedInception.from_torchvision(ref, backend="torch").eval()


def calibrated_net(variant="torchvision", size=64, **kw):
    ref = GoogLeNet(variant=variant, **kw)
    calibrate(ref, torch.randn(4, ref.in_channels, size, size))
    return ref, FusedGoogLeNet.from_torchvision(ref, backend="torch").eval()


def net_tolerance(ref, x):
    """fp32 through the whole net: at most 2x the reference's own fp32 error (see TOLERANCE)."""
    with torch.no_grad():
        ref32 = ref(x)
        ref64 = copy.deepcopy(ref).double()(x.double())
    assert ref32.std() > 0.05, "reference activations vanished; the comparison could not fail"
    return ref64, reduced_precision_bound(ref32, ref64)


# -- blocks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(BLOCK_CONFIGS))
@pytest.mark.parametrize("fmt", ["nchw", "cl"])
def test_block_parity_real_configs(name, fmt):
    cfg = BLOCK_CONFIGS[name]
    x = torch.randn(3, cfg[0], 7, 5)
    ref, fused = calibrated_block(cfg, x)
    if fmt == "cl":
        x = x.contiguous(memory_format=CL)
    with torch.no_grad():
        want = ref(x)
        assert want.std() > 0.1
        got = fused(x)
    check_close(got, want, FP32)
    assert got.is_contiguous(memory_format=CL) == (fmt == "cl")
    assert got.is_contiguous() == (fmt == "nchw")


@pytest.mark.parametrize("batch_norm", [True, False])
@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("shape", [(1, 13, 1, 1), (1, 13, 5, 7), (3, 13, 9, 4)])
def test_block_parity_odd_shapes(batch_norm, k, shape):
    cfg = (13, 5, 7, 9, 3, 6, 4)
    x = torch.randn(shape)
    ref, fused = calibrated_block(cfg, torch.randn(4, 13, 6, 6), batch_norm, k)
    with torch.no_grad():
        want = ref(x)
        assert want.std() > 0.05
        check_close(fused(x), want, FP32)


def low_precision_parity(ref, fused, x, dtype, what):
    """The fused model in ``dtype`` against the fp64 reference, within 2x the error the reference
    itself makes in ``dtype`` (TOLERANCE's low-precision rule).  Both models are converted with
    .to(dtype), so their BatchNorm statistics and weights are fp16/bf16 values and the fused model
    folds them from there."""
    ref64 = copy.deepcopy(ref).double().eval()
    ref_low = copy.deepcopy(ref).to(dtype).eval()
    fused_low = copy.deepcopy(fused).to(dtype).eval()
    with torch.no_grad():
        want = ref64(x.double())
        own = ref_low(x.to(dtype))
        got = fused_low(x.to(dtype))
    assert want.std() > 0.05, "reference activations vanished; the comparison could not fail"
    assert got.dtype == dtype
    return check_close(got, want, reduced_precision_bound(own, want), what)


# (backend, dtype): the torch backend in both, Triton under the interpreter (which has no bf16).
LOW_PRECISION_CASES = pytest.mark.parametrize(
    "backend,dtype",
    [("torch", torch.float16), ("torch", torch.bfloat16), ("triton", torch.float16)],
    ids=["torch-fp16", "torch-bf16", "triton-fp16"],
)


def runs_here(backend):
    if backend not in available_backends("cpu"):
        pytest.skip(f"the {backend} backend does not run on this CPU: {availability(backend, 'cpu')}")


@LOW_PRECISION_CASES
@pytest.mark.parametrize("name", ["inception3a", "inception4e"])
def test_block_low_precision_against_fp64(name, backend, dtype):
    runs_here(backend)
    cfg = BLOCK_CONFIGS[name]
    x = torch.randn(2, cfg[0], 5, 7)
    ref, _ = calibrated_block(cfg, x)
    fused = FusedInception.from_torchvision(ref, backend=backend)
    low_precision_parity(ref, fused, x, dtype, f"{name} {backend} {dtype}")


@LOW_PRECISION_CASES
def test_googlenet_low_precision_against_fp64(backend, dtype):
    runs_here(backend)
    ref, _ = calibrated_net("torchvision", 32)
    fused = FusedGoogLeNet.from_torchvision(ref, backend=backend)
    low_precision_parity(ref, fused, torch.randn(2, 3, 32, 32), dtype, f"googlenet {backend} {dtype}")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_batch_norm_folds_in_fp32_for_low_precision_weights(dtype):
    """A fp16/bf16 model folds its BatchNorms in fp32 and rounds once: every packed weight (stem and
    blocks) equals that of the same values held in fp32, packed to the same dtype.  A fold in the
    weights' own dtype rounds the scale, the product and the shift each; against fp64 that stays
    within the 2x-own-error rule (~1.2x the reference's own error), so it is checked here."""
    _, fused = calibrated_net("torchvision", 32)
    low = fused.to(dtype)
    same_values = copy.deepcopy(low).float()
    with torch.no_grad():
        pairs = [
            (f"stem {i}", a, b)
            for i, (got, want) in enumerate(zip(low._stem_weights(dtype)[:3], same_values._stem_weights(dtype)[:3]))
            for a, b in zip(got, want)
        ]
        for (name, block), other in zip(low.named_modules(), same_values.modules()):
            if isinstance(block, FusedInception):
                pairs += [
                    (f"{name} {field}", a, b)
                    for field, a, b in zip(PackedBlock._fields, block.packed(dtype), other.packed(dtype))
                ]
    assert len(pairs) == 6 + 9 * 8
    for name, got, want in pairs:
        assert got.dtype == want.dtype == dtype, name
        assert torch.equal(got, want), f"{name}: the fold of the {dtype} model differs from the fp32 fold"


def test_block_from_torchvision_block():
    from torchvision.models.googlenet import Inception as TVInception

    tv = TVInception(*BLOCK_CONFIGS["inception4e"])
    x = torch.randn(2, 528, 4, 4)
    calibrate(tv, x)
    fused = FusedInception.from_torchvision(tv).eval()
    assert fused.backend == "torch"
    with torch.no_grad():
        check_close(fused(x), tv(x), FP32)


# How _OpRecorder names the fused block op (torch.ops.inception_fast.inception_block).
FUSED_BLOCK_OP = "inception_fast.inception_block"


class _OpRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def test_block_forward_has_no_cat_and_one_reduction_gemm():
    cfg = BLOCK_CONFIGS["inception3a"]
    x = torch.randn(2, cfg[0], 5, 5).contiguous(memory_format=CL)
    _, fused = calibrated_block(cfg, x)
    from inception_fast import backends

    with torch.no_grad():
        packed = fused.packed()
        with _OpRecorder() as rec:
            backends.get("torch").op("inception_block")(x, *packed)
    assert not [op for op in rec.ops if "cat" in op], rec.ops
    # ONE product for the three input-reading 1x1s, one for the pool projection.
    assert sum(op == "aten.addmm" for op in rec.ops) == 2, rec.ops


# -- the whole network --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["nchw", "cl"])
@pytest.mark.parametrize("shape", [(2, 3, 64, 64), (1, 3, 64, 64), (3, 3, 57, 71)])
def test_googlenet_parity_with_torchvision(fmt, shape):
    tv = torchvision.models.googlenet(aux_logits=False, init_weights=True)
    calibrate(tv, torch.randn(4, 3, 64, 64))
    fused = FusedGoogLeNet.from_torchvision(tv, backend="torch").eval()
    x = torch.randn(shape)
    if fmt == "cl":
        x = x.contiguous(memory_format=CL)
    ref64, tol = net_tolerance(tv, x)
    with torch.no_grad():
        check_close(fused(x), ref64, tol)


def test_googlenet_transform_input():
    tv = torchvision.models.googlenet(aux_logits=False, init_weights=True, transform_input=True)
    calibrate(tv, torch.randn(4, 3, 64, 64))
    fused = FusedGoogLeNet.from_torchvision(tv).eval()
    assert fused.transform_input
    x = torch.rand(2, 3, 64, 64)
    ref64, tol = net_tolerance(tv, x)
    with torch.no_grad():
        check_close(fused(x), ref64, tol)


@pytest.mark.parametrize("variant,size", [("paper", 64), ("d2l", 96), ("d2l", 20)])
def test_other_variants_parity(variant, size):
    ref, fused = calibrated_net(variant, size)
    x = torch.randn(2, ref.in_channels, size, size)
    ref64, tol = net_tolerance(ref.eval(), x)
    with torch.no_grad():
        check_close(fused(x), ref64, tol)


def test_aux_heads_in_training():
    """The aux heads in training, on the paper's variant: without BatchNorm its training forward
    runs the fused ops (train-mode BatchNorm would run the reference's own code, and the comparison
    would measure nothing).  fp32 through a whole net: 2x the reference's own error against fp64."""
    ref = GoogLeNet(variant="paper", aux_logits=True)
    calibrate(ref, torch.randn(4, 3, 64, 64))
    fused = FusedGoogLeNet.from_torchvision(ref, backend="torch")
    assert fused.aux1 is not None
    ref.train(), fused.train()
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(3)  # the same dropout masks in all three
    want = ref(x)
    torch.manual_seed(3)
    want64 = copy.deepcopy(ref).double()(x.double())
    torch.manual_seed(3)
    with _OpRecorder() as rec:
        got = fused(x)
    assert rec.ops.count(FUSED_BLOCK_OP) == 9, "the training forward did not run the fused blocks"
    assert len(got) == 3
    for g, w, w64 in zip(got, want, want64):
        check_close(g, w64, reduced_precision_bound(w, w64))
    fused.eval()
    assert isinstance(fused(x), torch.Tensor)


# -- state_dict, fuse(), staleness ---------------------------------------------------------------


def test_state_dict_round_trips_with_torchvision():
    tv = torchvision.models.googlenet(aux_logits=True, init_weights=True)
    fused = FusedGoogLeNet(aux_logits=True, init_weights=False)
    fused.load_state_dict(tv.state_dict(), strict=True)
    assert list(fused.state_dict()) == list(tv.state_dict())
    tv2 = torchvision.models.googlenet(aux_logits=True, init_weights=False)
    tv2.load_state_dict(fused.state_dict(), strict=True)
    for k, v in tv.state_dict().items():
        torch.testing.assert_close(tv2.state_dict()[k], v, rtol=0, atol=0)
    # the published checkpoint carries aux heads; aux_logits=False drops them
    FusedGoogLeNet(aux_logits=False).load_state_dict(tv.state_dict(), strict=True)


def test_fuse_replaces_every_block_in_any_module():
    tv = torchvision.models.googlenet(aux_logits=False, init_weights=True)
    calibrate(tv, torch.randn(4, 3, 64, 64))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = tv(x)
    model = fuse(tv, backend="torch")
    assert model is tv
    blocks = [m for m in model.modules() if isinstance(m, FusedInception)]
    assert len(blocks) == 9 and all(b.backend == "torch" for b in blocks)
    with torch.no_grad():
        check_close(model(x), want, 1e-4)  # same math, block outputs reformatted between ATen layers
    seq = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), Inception(16, 4, 4, 8, 2, 4, 4, batch_norm=False))
    fuse(seq)
    assert isinstance(seq[1], FusedInception) and not seq[1].batch_norm
    single = fuse(Inception(16, 4, 4, 8, 2, 4, 4))
    assert isinstance(single, FusedInception)


def test_packed_weights_never_go_stale():
    cfg = (16, 8, 6, 8, 4, 6, 5)
    x = torch.randn(2, 16, 6, 6)
    ref, fused = calibrated_block(cfg, x)
    with torch.no_grad():
        fused(x)  # caches the packed weights
        fused.branch2[1].conv.weight.mul_(1.5)  # in-place parameter change
        ref.load_state_dict(fused.state_dict())
        check_close(fused(x), ref(x), FP32)
        fused.branch3[0].bn.running_var.mul_(2.0)  # a buffer too
        ref.load_state_dict(fused.state_dict())
        check_close(fused(x), ref(x), FP32)
        other = Inception(*cfg)
        calibrate(other, torch.randn(2, 16, 6, 6), seed=7)
        fused.load_state_dict(other.state_dict())  # load_state_dict
        check_close(fused(x), other(x), FP32)
        fused.to(torch.float64).to(torch.float32)  # .to() replaces storage
        fused.branch1.conv.weight.data = fused.branch1.conv.weight.data * 0.5
        other.branch1.conv.weight.data = other.branch1.conv.weight.data * 0.5
        check_close(fused(x), other(x), FP32)
        # A new Parameter object, and a whole new submodule.
        fused.branch4[1].conv.weight = nn.Parameter(fused.branch4[1].conv.weight * 0.75)
        other.branch4[1].conv.weight = nn.Parameter(other.branch4[1].conv.weight * 0.75)
        check_close(fused(x), other(x), FP32)
        bn = fused.branch2[0].bn
        new_bn = nn.BatchNorm2d(bn.num_features, eps=bn.eps).eval()
        new_bn.running_mean.uniform_(-0.1, 0.1)
        fused.branch2[0].bn = new_bn
        other.branch2[0].bn = copy.deepcopy(new_bn)
        check_close(fused(x), other(x), FP32)


def test_pruned_conv_runs_fused():
    """torch.nn.utils.prune replaces a conv's weight parameter by a computed attribute."""
    from torch.nn.utils import prune

    cfg = (16, 8, 6, 8, 4, 6, 5)
    x = torch.randn(2, 16, 6, 6)
    _, fused = calibrated_block(cfg, x)
    prune.l1_unstructured(fused.branch2[1].conv, "weight", amount=0.5)
    with torch.no_grad():
        check_close(fused(x), Inception.forward(fused, x), FP32)


def test_writes_through_data_need_clear_packed_weights():
    ref, fused = calibrated_net("d2l", 32)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        fused(x)
        for model in (ref, fused):  # .data writes bump no version counter
            model.inception4c.branch2[1].conv.weight.data.mul_(1.5)
            model.conv1.conv.weight.data.mul_(0.5)
        stale = fused(x)
        fused.clear_packed_weights()
        fresh = fused(x)
    ref64, tol = net_tolerance(ref.eval(), x)
    assert rel_error(stale, ref64) > 100 * tol, "the .data write should have been invisible to the cache"
    check_close(fresh, ref64, tol)


def test_replaced_weight_storage_is_not_reused_while_cached():
    # The key holds storage addresses; the cache keeps the storages it was built from alive,
    # so a freed weight's address cannot come back for new weights and look unchanged.
    fused = FusedInception(16, 8, 6, 8, 4, 6, 5, backend="torch").eval()
    x = torch.randn(1, 16, 5, 5)
    with torch.no_grad():
        fused(x)
        w = fused.branch1.conv.weight
        old_ptr = w.data_ptr()
        w.data = w.data * 0.5  # nothing but the cache refers to the old storage now
        held = [t.data_ptr() for entry in fused._pack_cache.snapshot().values() for t in entry[1]]
        assert old_ptr in held, "the cache must keep the storage it was built from"
        fresh = [torch.empty_like(w) for _ in range(16)]
        assert all(t.data_ptr() != old_ptr for t in fresh)


def test_optimizer_step_refreshes_eval_output():
    ref, fused = calibrated_net("d2l", 32)
    x = torch.randn(2, 1, 32, 32)
    opt = torch.optim.SGD(fused.parameters(), lr=0.5)
    with torch.no_grad():
        before = fused(x)
    fused.train()
    fused(x).square().mean().backward()
    opt.step()
    fused.eval()
    ref.load_state_dict(fused.state_dict())
    with torch.no_grad():
        after = fused(x)
        check_close(after, ref.eval()(x), 1e-4)
        assert (after - before).abs().max() > 1e-6


# -- training / gradients ------------------------------------------------------------------------


def _grads(model, x, target):
    """([gradient of x, of every parameter], the ops the forward dispatched)."""
    model.zero_grad()
    x = x.clone().requires_grad_(True)
    with _OpRecorder() as rec:
        out = model(x)
    out = out.logits if hasattr(out, "logits") else out
    (out * target).sum().backward()
    return [x.grad] + [p.grad for p in model.parameters()], rec.ops


# Gradients through the fused op: BatchNorm blocks in eval mode (folded; the gradient reaches the BN
# parameters through the fold), BN-free blocks in eval and train mode.  Train-mode BatchNorm runs
# the reference's own code in FusedInception, so comparing it would measure nothing.
@pytest.mark.parametrize("batch_norm,train", [(True, False), (False, False), (False, True)])
def test_block_gradients_match_reference(batch_norm, train):
    cfg = (24, 8, 6, 10, 4, 6, 5)
    x = torch.randn(3, 24, 6, 5)
    ref, fused = calibrated_block(cfg, x, batch_norm=batch_norm, k=5)
    ref.train(train), fused.train(train)
    target = torch.randn_like(ref(x))
    (got, ops), (want, _) = _grads(fused, x, target), _grads(ref, x, target)
    assert ops.count(FUSED_BLOCK_OP) == 1, "the fused block op did not run"
    assert [g is None for g in got] == [w is None for w in want]
    for g, w in zip(got, want):
        if w is not None:
            check_close(g, w, FP32, "gradient")


@pytest.mark.parametrize("variant,size,train", [("torchvision", 64, False), ("d2l", 32, True)])
def test_googlenet_training_step_matches_reference(variant, size, train):
    """A training step's gradients through the nine fused blocks: torchvision's variant in eval mode
    (BatchNorm folded), d2l's (no BatchNorm) in train mode.  fp32 through a whole net: within 2x
    the reference's own fp32 error against the fp64 gradients."""
    ref, fused = calibrated_net(variant, size)
    ref.train(train), fused.train(train)
    x = torch.randn(2, ref.in_channels, size, size)
    target = torch.randn(2, ref.num_classes)
    ref.dropout.p = fused.dropout.p = 0.0
    (got, ops), (want, _) = _grads(fused, x, target), _grads(ref, x, target)
    want64, _ = _grads(copy.deepcopy(ref).double(), x.double(), target.double())
    assert ops.count(FUSED_BLOCK_OP) == 9, "the fused block op did not run in every block"
    assert [g is None for g in got] == [w is None for w in want]
    for what, sl in (("input", slice(0, 1)), ("parameter", slice(1, None))):
        flat = [torch.cat([g.flatten() for g in grads[sl] if g is not None]) for grads in (got, want, want64)]
        check_close(flat[0], flat[2], reduced_precision_bound(flat[1], flat[2]), f"{variant} {what} gradients")


# -- torch.compile and opcheck -------------------------------------------------------------------


def test_compile_fullgraph_without_graph_breaks():
    torch._dynamo.reset()
    ref, fused = calibrated_net("torchvision", 64)
    x = torch.randn(2, 3, 64, 64)
    compiled = torch.compile(fused, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        check_close(compiled(x), fused(x), FP32)
        check_close(compiled(x), fused(x), FP32)  # again, after an eager forward filled the caches
        fused.inception4a.branch2[1].conv.weight.mul_(0.5)  # the compiled graph sees weight changes
        check_close(compiled(x), fused(x), FP32)
    block = FusedInception(32, 8, 8, 16, 4, 8, 8).eval()
    calibrate(block, torch.randn(2, 32, 5, 5))
    xb = torch.randn(2, 32, 5, 5, requires_grad=True)
    cb = torch.compile(block, fullgraph=True, backend="aot_eager")
    cb(xb).sum().backward()  # autograd.Function traces too
    assert xb.grad is not None


@pytest.mark.parametrize("fmt", ["nchw", "cl"])
def test_opcheck_inception_block(fmt):
    from inception_fast.packing import pack_block

    block = Inception(12, 4, 5, 6, 3, 4, 3, branch3_kernel=5)
    calibrate(block, torch.randn(2, 12, 5, 6))
    packed = pack_block(block)
    x = torch.randn(2, 12, 5, 6)
    if fmt == "cl":
        x = x.contiguous(memory_format=CL)
    torch.library.opcheck(torch.ops.inception_fast.inception_block.default, (x, *packed, "torch"))


# -- bad input ------------------------------------------------------------------------------------


def test_bad_inputs_get_clear_errors():
    net = FusedGoogLeNet(init_weights=False).eval()
    block = FusedInception(16, 4, 4, 8, 2, 4, 4).eval()
    with pytest.raises(ValueError, match="3 input channels, got 4"):
        net(torch.randn(1, 4, 64, 64))
    with pytest.raises(ValueError, match="16 input channels, got 15"):
        block(torch.randn(1, 15, 5, 5))
    with pytest.raises(ValueError, match="4-D"):
        net(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match="4-D"):
        block(torch.randn(1, 1, 16, 5, 5))
    with pytest.raises(TypeError, match="floating-point"):
        net(torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8))
    with pytest.raises(TypeError, match="float32, float16 and bfloat16"):
        block(torch.randint(0, 3, (1, 16, 5, 5)))
    with pytest.raises(TypeError, match="does not match"):
        net(torch.randn(1, 3, 64, 64, dtype=torch.float64))
    with pytest.raises(TypeError, match="does not match"):
        block(torch.randn(1, 16, 5, 5, dtype=torch.float16))
    with pytest.raises(RuntimeError, match="is on meta"):
        block(torch.randn(1, 16, 5, 5, device="meta"))
    with pytest.raises(RuntimeError, match="is on meta"):
        net(torch.randn(1, 3, 64, 64, device="meta"))
    with pytest.raises(ValueError, match="too small"):
        net(torch.randn(1, 3, 14, 14))
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        FusedInception(16, 4, 4, 8, 2, 4, 4, backend="nope")


def test_unavailable_backend_names_the_available_ones(monkeypatch):
    from inception_fast import backends

    fake = backends.Backend("fake", lambda device: "it only exists in this test")
    monkeypatch.setitem(backends._REGISTRY, "fake", fake)
    monkeypatch.setattr(backends, "_PLUGINS", (*backends._PLUGINS, "fake"))
    block = FusedInception(16, 4, 4, 8, 2, 4, 4, backend="fake").eval()
    with pytest.raises(
        RuntimeError, match=r"backend 'fake' is unavailable on cpu: it only exists .* Available on cpu: torch"
    ):
        block(torch.randn(1, 16, 5, 5))
    assert "torch" in available_backends("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="backend 'triton' is unavailable on cuda"):
            FusedInception(16, 4, 4, 8, 2, 4, 4, backend="triton").backend_for("cuda")


# -- backend="auto" ------------------------------------------------------------------------------


@pytest.fixture
def fake_backends(monkeypatch):
    """Registered backends that compute with the torch backend: 'slow', 'fast' (as their fake
    timer says), and 'broken' and 'broken2', which raise; ``calls`` records which one ran."""
    from inception_fast import backends
    from inception_fast.backends import torch_backend

    calls = []

    def forward_of(name):
        def forward(*args):
            calls.append(name)
            if name.startswith("broken"):
                raise RuntimeError("no tile fits")
            return torch_backend.block_forward(*args)

        return forward

    for name in ("slow", "fast", "broken", "broken2"):
        monkeypatch.setitem(
            backends._REGISTRY, name, backends.Backend(name, lambda device: None, {"inception_block": forward_of(name)})
        )
    monkeypatch.setattr(backends, "_PLUGINS", (*backends._PLUGINS, "slow", "fast", "broken", "broken2"))
    return calls


def _chooser(calls, order, seconds):
    from inception_fast.choices import AutoBackend

    def timer(fn, device, repeats):
        fn()
        return seconds[calls[-1]]

    return AutoBackend(order=order, measure_on=("cpu",), timer=timer)


def _packed_block(h=5):
    block = FusedInception(16, 4, 4, 8, 2, 4, 4, backend="torch").eval()
    return block, torch.randn(1, 16, h, h).contiguous(memory_format=torch.channels_last), block.packed(torch.float32)


def test_auto_measures_once_per_shape_and_keeps_the_fastest(fake_backends):
    chooser = _chooser(fake_backends, ("slow", "broken", "fast", "torch"), {"slow": 3e-3, "fast": 1e-3, "torch": 2e-3})
    _, x, packed = _packed_block()
    with torch.no_grad():
        assert chooser.choose(x, *packed) == "fast"
        assert sorted(fake_backends) == ["broken", "fast", "slow"]
        fake_backends.clear()
        assert chooser.choose(x, *packed) == "fast"
        assert fake_backends == [], "a measured shape must not be measured again"
        (choice,) = chooser.choices().values()
        assert set(choice.seconds) == {"slow", "fast", "torch"}
        assert "no tile fits" in choice.errors["broken"]
        _, x2, _ = _packed_block(h=7)
        assert chooser.choose(x2, *packed) == "fast" and fake_backends, "a new shape is measured"
    assert len(chooser.choices()) == 2


def test_auto_tie_goes_to_the_static_order_and_static_mode_measures_nothing(fake_backends, monkeypatch):
    from inception_fast import choices

    _, x, packed = _packed_block()
    tie = _chooser(fake_backends, ("slow", "fast"), {"slow": 1e-3, "fast": 1e-3})
    assert tie.choose(x, *packed) == "slow"
    fake_backends.clear()
    monkeypatch.setenv(choices.ENV_AUTO, "static")
    static = _chooser(fake_backends, ("slow", "fast"), {"slow": 3e-3, "fast": 1e-3})
    assert static.choose(x, *packed) == "slow" and fake_backends == [] and not static.choices()
    # Off the devices it measures on, auto is the torch backend.
    assert choices.AutoBackend(measure_on=("cuda",)).choose(x, *packed) == "torch"


def test_auto_fails_clearly_when_every_backend_fails(fake_backends):
    _, x, packed = _packed_block()
    chooser = _chooser(fake_backends, ("broken", "broken2"), {})
    with pytest.raises(RuntimeError, match=r"every backend failed on input shape \(1, 16, 5, 5\).*no tile fits"):
        chooser.choose(x, *packed)


def test_op_with_auto_runs_the_chosen_backend(fake_backends, monkeypatch):
    from inception_fast import backends, choices, ops

    chooser = _chooser(fake_backends, ("slow", "fast"), {"slow": 3e-3, "fast": 1e-3})
    monkeypatch.setattr(choices, "AUTO", chooser)
    block, x, packed = _packed_block()
    with torch.no_grad():
        out = ops.inception_block(x, *packed, backend="auto")
        fake_backends.clear()
        ops.inception_block(x, *packed, backend="auto")
        assert fake_backends == ["fast"]
        check_close(out, ops.inception_block(x, *packed, backend="torch"), FP32)
    assert backends.resolve("auto", "cpu") == "torch" and backends.resolve("auto", "cuda") == "auto"


@pytest.mark.gpu
def test_gpu_auto_runs_the_backend_it_measured_fastest(cuda_device):
    """Each backend's parity is tested on its own; here: auto measures them all on a 3a block and
    then computes exactly what the fastest one computes."""
    from inception_fast import choices, ops

    if len(available_backends(cuda_device)) < 2:
        pytest.skip("auto measures nothing with a single backend available")
    block = FusedInception(*BLOCK_CONFIGS["inception3a"], backend="auto").eval().to(cuda_device, torch.bfloat16)
    x = torch.randn(4, 192, 28, 28, device=cuda_device, dtype=torch.bfloat16).contiguous(
        memory_format=torch.channels_last
    )
    choices.AUTO.clear()
    with torch.no_grad():
        out = block(x)
        (choice,) = choices.AUTO.choices().values()
        assert set(choice.seconds) | set(choice.errors) == set(available_backends(cuda_device))
        assert choice.seconds[choice.name] == min(choice.seconds.values())
        packed = block.packed(torch.bfloat16)
        expected = ops.inception_block(x, *packed, backend=choice.name)
    assert torch.equal(out, expected)


def test_captured_forward_needs_a_cuda_input():
    from inception_fast import CapturedForward

    with pytest.raises(ValueError, match="CapturedForward needs a CUDA example input, got cpu"):
        CapturedForward(FusedGoogLeNet(variant="d2l").eval(), torch.randn(1, 1, 32, 32))


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["auto", "triton", "cuda"])
def test_gpu_googlenet_captured_forward(cuda_device, backend):
    """Batch 1 is meant to run as a CUDA graph: capture, feed a new input, replay, and get the
    eager answer for it; after a weight change and an eager call (which repacks), the graph still
    computes with the weights it captured, from memory that was kept alive."""
    from inception_fast import CapturedForward

    if backend != "auto" and backend not in available_backends(cuda_device):
        pytest.skip(f"backend {backend!r} is unavailable on {cuda_device}")
    ref, _ = calibrated_net("torchvision", 64)
    model = FusedGoogLeNet.from_torchvision(ref, backend=backend).eval().to(cuda_device, torch.bfloat16)
    shape = (1, 3, 64, 64)
    fast = CapturedForward(model, torch.randn(shape, device=cuda_device, dtype=torch.bfloat16))
    x = torch.randn(shape, device=cuda_device, dtype=torch.bfloat16)
    with torch.inference_mode():
        replayed = fast(x).clone()
        eager = model(x)
        assert eager.float().std() > 0.05, "logits vanished; the comparison could not fail"
        check_close(replayed.float(), eager.float(), FP32)
        for p in model.inception4a.parameters():
            p.mul_(0.5)
        changed = model(x)  # repacks 4a; the graph's packed weights must survive
        torch.cuda.synchronize()
        assert rel_error(changed.float(), eager.float()) > 1e-2
        check_close(fast(x).float(), replayed.float(), FP32)
    with pytest.raises(ValueError, match=r"captured for input \(1, 3, 64, 64\)"):
        fast(torch.randn(2, 3, 64, 64, device=cuda_device, dtype=torch.bfloat16))


# -- the stem's measured first conv -----------------------------------------------------------------


@pytest.mark.parametrize(
    "variant,size,fmt",
    [
        ("torchvision", 40, CL),
        ("torchvision", 33, torch.contiguous_format),
        ("paper", 32, CL),
        ("d2l", 32, torch.contiguous_format),
    ],
)
def test_every_stem_variant_matches_the_reference(monkeypatch, variant, size, fmt):
    """Each way of running conv1 (channels_last, zero-padded to 4 and 8 channels, NCHW, and where
    Triton runs -- under the interpreter here -- the Triton kernel with and without the pool) is
    forced in turn through a measuring chooser whose fake timer makes it the fastest."""
    from inception_fast import choices

    ref, _ = calibrated_net(variant, size)
    fused = FusedGoogLeNet.from_torchvision(ref, backend="auto").eval()  # blocks: torch on CPU
    x = torch.randn(2, ref.in_channels, size, size).contiguous(memory_format=fmt)
    ref64, tol = net_tolerance(ref.eval(), x)
    expected = ["channels_last", "pad4", "pad8", "nchw"]
    if "triton" in available_backends("cpu"):
        expected += ["triton", "triton_conv"]
    for winner in expected:
        calls = []

        def timer(fn, device, repeats, winner=winner):
            out = fn()
            assert out.is_contiguous(memory_format=CL)
            calls.append(out)
            return 1.0 if len(calls) - 1 == expected.index(winner) else 2.0

        chooser = choices.MeasuredChoice(measure_on=("cpu",), timer=timer)
        monkeypatch.setattr(choices, "STEM_CHOICE", chooser)
        with torch.no_grad():
            out = fused(x)
        assert len(calls) == len(expected) and [c.name for c in chooser.choices().values()] == [winner]
        assert list(chooser.choices().values())[0].seconds.keys() == set(expected)
        for c in calls[1:]:  # the stem outputs agree
            check_close(c, calls[0], FP32)
        check_close(out, ref64, tol)


def test_stem_triton_variants_only_where_allowed(monkeypatch):
    """A model pinned to the torch backend never runs the Triton stem (its key differs from an auto
    model's, so a choice measured for one is not looked up by the other), and with gradients the
    Triton stem, which has no backward, gives way to ATen."""
    from inception_fast import choices, modules, stages

    ref, pinned = calibrated_net("torchvision", 32)
    auto = FusedGoogLeNet.from_torchvision(ref, backend="auto").eval()
    x = torch.randn(1, 3, 32, 32)
    assert pinned.stem_choice_key(x) != auto.stem_choice_key(x)
    other_pool = FusedGoogLeNet.from_torchvision(ref, backend="auto").eval()
    other_pool.maxpool1 = nn.MaxPool2d(3, stride=2, padding=1)  # as in d2l's stem
    assert other_pool.stem_choice_key(x) != auto.stem_choice_key(x)
    (w1, b1), _, _, padded = pinned._stem_weights(x.dtype)
    assert not set(pinned._stem_variants(x, padded)) & set(stages.STEM_TRITON_VARIANTS)
    chooser = choices.MeasuredChoice(measure_on=())
    chooser._choices[auto.stem_choice_key(x)] = choices.Choice("triton")
    monkeypatch.setattr(choices, "STEM_CHOICE", chooser)
    seen = []
    real = modules.FusedGoogLeNet._stem_conv1
    monkeypatch.setattr(
        modules.FusedGoogLeNet, "_stem_conv1", lambda self, *args: seen.append(args[-1]) or real(self, *args)
    )
    with torch.enable_grad():
        loss = auto(x).square().sum()
    loss.backward()
    assert seen == ["channels_last"] and auto.conv1.conv.weight.grad is not None
    # A frozen model with an input that needs its gradient (saliency), and bias-only training:
    # either way some stem tensor requires grad, so ATen runs and the gradient arrives.
    auto.requires_grad_(False)
    xg = x.clone().requires_grad_(True)
    auto(xg).square().sum().backward()
    assert seen[-1] == "channels_last" and xg.grad is not None and xg.grad.abs().sum() > 0
    auto.conv1.bn.bias.requires_grad_(True)  # folded into conv1's bias only
    auto(x).square().sum().backward()
    assert seen[-1] == "channels_last" and auto.conv1.bn.bias.grad is not None
    if "triton" in available_backends("cpu"):
        with torch.no_grad():
            auto(x)
        assert seen[-1] == "triton"


def test_stem_padding_candidates():
    from inception_fast.stages import stem_padded_channels as _stem_padded_channels

    assert _stem_padded_channels(3) == [4, 8] and _stem_padded_channels(1) == [4, 8]
    assert _stem_padded_channels(6) == [8] and _stem_padded_channels(8) == []


# -- the stem's conv + bias + ReLU: ATen or cuDNN's fused op, measured ------------------------------


def test_conv_relu_skips_a_candidate_that_fails(monkeypatch):
    """Measured on CPU through a stand-in timer that would prefer cuDNN's fused op: it has no CPU
    kernel, so its error is kept and ATen is chosen, and the stem still matches the reference."""
    from inception_fast import choices

    timed = []

    def timer(fn, device, repeats):
        fn()
        timed.append(fn)
        return 1.0 if len(timed) == 2 else 2.0  # the second would win, but fn() raises first

    chooser = choices.MeasuredChoice(measure_on=("cpu",), timer=timer)
    monkeypatch.setattr(choices, "CONV_RELU_CHOICE", chooser)
    ref, fused = calibrated_net("torchvision", 32)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        check_close(fused(x), ref(x), reduced_precision_bound(ref(x), copy.deepcopy(ref).double()(x.double())))
    choices = list(chooser.choices().values())
    assert len(choices) == 2  # conv2 and conv3
    for c in choices:
        assert c.name == "aten" and set(c.seconds) == {"aten"}
        assert "cudnn_convolution_relu" in c.errors["cudnn_fused"]


@pytest.mark.gpu
def test_gpu_conv_relu_fused_matches_aten(cuda_device, monkeypatch):
    """cuDNN's fused conv-bias-ReLU, forced, on the stem's conv3 in channels_last: bf16 within 2x the
    ATen path's own error against fp64 (the table's rule), fp32 at the TF32 tolerance."""
    from inception_fast import choices, modules

    def forcing(winner):  # a stand-in timer under which ``winner`` (a candidate index) is fastest
        calls = []

        def timer(fn, device, repeats):
            fn()
            calls.append(fn)
            return 1.0 if len(calls) - 1 == winner else 2.0

        return timer

    for dtype in (torch.bfloat16, torch.float32):
        x = torch.randn(2, 64, 56, 56, device=cuda_device, dtype=dtype).relu().contiguous(memory_format=CL)
        w = (torch.randn(192, 64, 3, 3, device=cuda_device) / 24).to(dtype).contiguous(memory_format=CL)
        b = torch.randn(192, device=cuda_device, dtype=dtype) * 0.1
        outs = {}
        for i, name in enumerate(("aten", "cudnn_fused")):
            chooser = choices.MeasuredChoice(timer=forcing(i))
            monkeypatch.setattr(choices, "CONV_RELU_CHOICE", chooser)
            with torch.no_grad():
                outs[name] = modules.conv_relu(x, w, b, 1)
            assert [c.name for c in chooser.choices().values()] == [name], chooser.choices()  # errors, if any
        ref = torch.nn.functional.conv2d(x.double(), w.double(), b.double(), padding=1).relu()
        assert ref.std() > 0.1
        tol = reduced_precision_bound(outs["aten"], ref) if dtype == torch.bfloat16 else TOLERANCE["tf32"]
        check_close(outs["cudnn_fused"], ref, tol, f"fused {dtype}")
