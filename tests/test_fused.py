"""FusedInception / FusedGoogLeNet on the torch backend against the reference and torchvision."""
import copy

import pytest
import torch
import torchvision
from torch.utils._python_dispatch import TorchDispatchMode

from inception_fast import FusedGoogLeNet, FusedInception, GoogLeNet, Inception, available_backends, fuse
from inception_fast.reference import BLOCK_CONFIGS
from inception_fast.testing import TOLERANCE, calibrate, check_close, reduced_precision_bound

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


def test_block_from_torchvision_block():
    from torchvision.models.googlenet import Inception as TVInception

    tv = TVInception(*BLOCK_CONFIGS["inception4e"])
    x = torch.randn(2, 528, 4, 4)
    calibrate(tv, x)
    fused = FusedInception.from_torchvision(tv).eval()
    assert fused.backend == "torch"
    with torch.no_grad():
        check_close(fused(x), tv(x), FP32)


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
            backends.get("torch").block_forward(x, *packed)
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
    ref = GoogLeNet(aux_logits=True)
    calibrate(ref, torch.randn(4, 3, 64, 64))
    fused = FusedGoogLeNet.from_torchvision(ref)
    assert fused.aux1 is not None
    ref.train(), fused.train()
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(3)
    want = ref(x)
    torch.manual_seed(3)
    got = fused(x)
    assert len(got) == 3
    for g, w in zip(got, want):
        check_close(g, w, FP32)
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
    model.zero_grad()
    x = x.clone().requires_grad_(True)
    out = model(x)
    out = out.logits if hasattr(out, "logits") else out
    (out * target).sum().backward()
    return [x.grad] + [p.grad for p in model.parameters()]


@pytest.mark.parametrize("batch_norm,train", [(True, False), (True, True), (False, False), (False, True)])
def test_block_gradients_match_reference(batch_norm, train):
    cfg = (24, 8, 6, 10, 4, 6, 5)
    x = torch.randn(3, 24, 6, 5)
    ref, fused = calibrated_block(cfg, x, batch_norm=batch_norm, k=5)
    ref.train(train), fused.train(train)
    target = torch.randn_like(ref(x))
    for g, w in zip(_grads(fused, x, target), _grads(ref, x, target)):
        if w is None:
            assert g is None
            continue
        check_close(g, w, FP32, "gradient")


def test_googlenet_training_step_matches_reference():
    for variant, size in (("torchvision", 64), ("d2l", 32)):
        ref, fused = calibrated_net(variant, size)
        ref.train(), fused.train()
        x = torch.randn(2, ref.in_channels, size, size)
        target = torch.randn(2, ref.num_classes)
        ref.dropout.p = fused.dropout.p = 0.0
        for g, w in zip(_grads(fused, x, target), _grads(ref, x, target)):
            if w is not None:
                check_close(g, w, 1e-4, f"{variant} gradient")  # fp32 through a whole net


# -- torch.compile and opcheck -------------------------------------------------------------------

def test_compile_fullgraph_without_graph_breaks():
    torch._dynamo.reset()
    ref, fused = calibrated_net("torchvision", 64)
    x = torch.randn(2, 3, 64, 64)
    compiled = torch.compile(fused, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
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

    fake = backends.Backend("fake", lambda device: "it only exists in this test", None)
    monkeypatch.setitem(backends._REGISTRY, "fake", fake)
    monkeypatch.setattr(backends, "_PLUGINS", (*backends._PLUGINS, "fake"))
    block = FusedInception(16, 4, 4, 8, 2, 4, 4, backend="fake").eval()
    with pytest.raises(RuntimeError, match=r"backend 'fake' is unavailable on cpu: it only exists .* Available on cpu: torch"):
        block(torch.randn(1, 16, 5, 5))
    assert "torch" in available_backends("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="backend 'triton' is unavailable on cuda"):
            FusedInception(16, 4, 4, 8, 2, 4, 4, backend="triton").backend_for("cuda")
