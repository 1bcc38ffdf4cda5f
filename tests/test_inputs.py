"""Inputs that must get the reference's behaviour or a clear error, never a traceback from
deep inside or a silent oddity."""

import copy

import pytest
import torch
import torchvision

from inception_fast import (
    FusedGoogLeNet,
    FusedInception,
    GoogLeNet,
    Inception,
    available_backends,
    clear_packed_weights,
    precompile,
)
from inception_fast.testing import TOLERANCE, calibrate, check_close, reduced_precision_bound


def test_from_torchvision_rejects_other_networks_clearly():
    resnet = torchvision.models.resnet18()
    with pytest.raises(TypeError, match="expects a torchvision googlenet .* got ResNet.*use inception_fast.fuse"):
        FusedGoogLeNet.from_torchvision(resnet)
    with pytest.raises(TypeError, match="expected an Inception block, got ResNet"):
        FusedInception.from_torchvision(resnet)


@pytest.mark.parametrize("cls", [GoogLeNet, FusedGoogLeNet])
@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_num_classes_must_be_a_positive_int(cls, bad):
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        cls(bad, init_weights=False)


@pytest.mark.parametrize("cls", [GoogLeNet, FusedGoogLeNet])
def test_in_channels_and_unknown_arguments_are_refused_by_name(cls):
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="in_channels must be a positive int"):
            cls(in_channels=bad, init_weights=False)
    for name in ("foo", "batch_norm", "ch1x1"):  # (batch_norm: the variant decides; ch1x1: each block's own)
        with pytest.raises(TypeError, match=f"{cls.__name__}\\(\\) got an unexpected keyword argument '{name}'"):
            cls(init_weights=False, **{name: 1})


@pytest.mark.parametrize("cls", [GoogLeNet, FusedGoogLeNet])
def test_num_classes_is_honoured_for_every_variant(cls):
    assert cls(variant="d2l", init_weights=False).fc.out_features == 10
    assert cls(variant="torchvision", init_weights=False).fc.out_features == 1000
    assert cls(1000, variant="d2l", init_weights=False).fc.out_features == 1000
    assert cls(7, variant="paper", init_weights=False).fc.out_features == 7


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_empty_batch_gives_the_references_empty_result(fmt):
    ref = Inception(16, 8, 6, 8, 4, 6, 5).eval()
    block = FusedInception.from_torchvision(ref, backend="torch").eval()
    x = torch.randn(0, 16, 5, 7).contiguous(memory_format=fmt)
    with torch.no_grad():
        out, expected = block(x), ref(x)
    assert out.shape == expected.shape == (0, 27, 5, 7) and out.dtype == expected.dtype
    tv = torchvision.models.googlenet(init_weights=False, aux_logits=False).eval()
    net = FusedGoogLeNet.from_torchvision(tv, backend="torch").eval()
    images = torch.randn(0, 3, 64, 64).contiguous(memory_format=fmt)
    with torch.no_grad():
        assert net(images).shape == tv(images).shape == (0, 1000)
        assert GoogLeNet(init_weights=False).eval()(images).shape == (0, 1000)


def test_empty_batch_through_the_op_and_a_calibrated_block():
    from inception_fast import ops
    from inception_fast.packing import pack_block

    ref = Inception(16, 8, 6, 8, 4, 6, 5)
    calibrate(ref, torch.randn(2, 16, 5, 5))
    packed = pack_block(ref)
    x = torch.randn(0, 16, 5, 5).contiguous(memory_format=torch.channels_last)
    out = ops.inception_block(x, *packed, backend="torch")
    assert out.shape == (0, 27, 5, 5)
    with pytest.raises(ValueError, match="at least 1x1 pixels"):
        ops.inception_block(torch.randn(1, 16, 0, 5), *packed, backend="torch")
    with pytest.raises(ValueError, match="unknown backend 'nope'"):  # checked on an empty batch too
        ops.inception_block(x, *packed, backend="nope")


def test_empty_batch_of_a_pooled_block_or_chain_has_the_pooled_size():
    """An empty batch into the pooled block (the pool folded into it) and into the chain: the
    reference's empty result, at the height and width of the max pool (9x8 pooled 3x3/2 in ceil
    mode: 4x4), from every backend that runs them, and what the fake kernels tell a trace."""
    import torch.nn.functional as F
    from torch._subclasses.fake_tensor import FakeTensorMode

    from inception_fast import ops
    from inception_fast.packing import pack_block

    ref = Inception(16, 8, 6, 8, 4, 6, 5)
    calibrate(ref, torch.randn(2, 16, 9, 8))
    packed = pack_block(ref)
    x = torch.randn(0, 16, 9, 8).contiguous(memory_format=torch.channels_last)
    pool = (3, 2, 0, True)
    with torch.no_grad():
        want = ref.eval()(F.max_pool2d(x, 3, 2, 0, ceil_mode=True))
    assert want.shape == (0, 27, 4, 4)
    backends = [b for b in ("torch", "triton") if b in available_backends("cpu")]
    calls = {
        "pooled_inception_block": lambda t, ws, b: ops.pooled_inception_block(t, *ws, *pool, backend=b),
        "inception_chain": lambda t, ws, b: ops.inception_chain(t, [ws], pool, backend=b),
    }
    for name, call in calls.items():
        for backend in backends:
            out = call(x, packed, backend)
            assert out.shape == want.shape and out.dtype == want.dtype, f"{name} on {backend}: {tuple(out.shape)}"
        with FakeTensorMode() as mode:
            fake = call(mode.from_tensor(x), [mode.from_tensor(t) for t in packed], "torch")
        assert fake.shape == want.shape, f"{name}'s fake kernel: {tuple(fake.shape)}"


@pytest.mark.parametrize("backend", [b for b in ("torch", "cpp", "onednn") if b in available_backends("cpu")])
def test_a_block_input_without_pixels_is_refused_by_name(backend):
    """Height or width 0 into a fused block, with and without gradients: the package's error on
    every backend (the onednn backend's prepacked path included)."""
    block = FusedInception(16, 8, 6, 8, 4, 6, 5, backend=backend).eval()
    for grad in (False, True):
        for shape in ((1, 16, 0, 5), (1, 16, 5, 0)):
            with torch.set_grad_enabled(grad), pytest.raises(ValueError, match="at least 1x1 pixels"):
                block(torch.randn(*shape, requires_grad=grad))


def test_fuse_rejects_an_unknown_backend_even_with_nothing_to_fuse():
    from inception_fast import fuse

    resnet = torchvision.models.resnet18()
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        fuse(resnet, backend="nope")
    with pytest.warns(UserWarning, match="no module of ResNet computes an Inception block"):
        assert fuse(resnet) is resnet


CPU_BACKENDS = [b for b in ("torch", "cpp", "onednn") if b in available_backends("cpu")]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_a_one_channel_contiguous_input_gets_the_references_layout(backend):
    """A contiguous input with one channel also has channels_last's strides (C = 1): ATen's
    convolutions take it as contiguous and return contiguous results, and so does the fused block."""
    ref = Inception(1, 8, 6, 8, 4, 6, 5)
    calibrate(ref, torch.randn(2, 1, 7, 6), seed=3)
    block = FusedInception.from_torchvision(ref, backend=backend).eval()
    x = torch.randn(2, 1, 7, 6)
    assert x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        want, got = ref.eval()(x), block(x)
    assert want.is_contiguous() and got.stride() == want.stride(), f"{got.stride()} against {want.stride()}"
    check_close(got, want, TOLERANCE["fp32"], "one channel")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_a_channels_last_view_gets_the_references_layout(backend):
    """A view of a channels_last tensor that is not dense (a channel or spatial slice) is
    channels_last to ATen's convolutions (its strides are ordered so), so the reference block
    returns channels_last; the fused block returns the same layout and values."""
    torch.manual_seed(0)
    ref = Inception(16, 8, 6, 8, 4, 6, 5)
    calibrate(ref, torch.randn(2, 16, 7, 6))
    ref.eval()
    block = FusedInception.from_torchvision(ref, backend=backend).eval()
    big = torch.randn(2, 20, 14, 12).contiguous(memory_format=torch.channels_last)
    for what, x in (("channel slice", big[:, 2:18]), ("spatial slice", big[:, 4:, ::2, ::2])):
        assert not x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        with torch.no_grad():
            want, got = ref(x), block(x)
        assert want.is_contiguous(memory_format=torch.channels_last), what
        assert got.stride() == want.stride(), f"{what}: {got.stride()} against the reference's {want.stride()}"
        check_close(got, want, TOLERANCE["fp32"], what)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_a_stage_in_another_dtype_or_device_is_refused_by_name(backend):
    """A block or stem conv moved on its own to another dtype or device: the reference's convs
    refuse the network's input there, and so does the fused network, naming the stage (not its
    weights cast to the input's dtype, nor an error from deep inside)."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    for stage, move, error, match in (
        ("inception4b", lambda m: m.half(), TypeError, "GoogLeNet's inception4b input dtype torch.float32"),
        ("conv2", lambda m: m.double(), TypeError, "GoogLeNet's conv2 input dtype torch.float32"),
        (
            "inception4a",
            lambda m: m.to("meta"),
            RuntimeError,
            "GoogLeNet's inception4a input is on cpu but its weights are on meta; "
            "move the model with .to\\('cpu'\\) or the input with .to\\('meta'\\)",
        ),
    ):
        ref = GoogLeNet(init_weights=False).eval()
        model = FusedGoogLeNet.from_torchvision(ref, backend=backend).eval()
        with torch.no_grad():
            model(x)  # the packed weights built before the move
            for m in (ref, model):
                move(getattr(m, stage))
            with pytest.raises((TypeError, RuntimeError)):
                ref(x)
            with pytest.raises(error, match=match):
                model(x)


@pytest.mark.parametrize("backend", [b for b in ("torch", "auto") if b in available_backends("cpu")])
def test_the_stem_computes_in_the_autocast_dtype(backend):
    """A bfloat16 input to a float32 model under float16 autocast: the reference's convs compute in
    float16 (autocast casts input and weights), the stem included, and so does the fused stem, not
    in the input's bfloat16: the stem's output and the logits within 2x the reference's own error."""
    torch.manual_seed(0)
    tv = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True)
    calibrate(tv, torch.randn(4, 3, 64, 64))
    tv.eval()
    model = FusedGoogLeNet.from_torchvision(tv, backend=backend).eval()
    x = torch.randn(2, 3, 64, 64).bfloat16()
    stem = lambda m, x: m.conv3(m.conv2(m.maxpool1(m.conv1(x))))  # noqa: E731
    ref64 = copy.deepcopy(tv).double()
    with torch.no_grad():
        want64 = (stem(ref64, x.double()), ref64(x.double()))
        with torch.autocast("cpu", dtype=torch.float16):
            want = (stem(tv, x), tv(x))
            got = (model._stem_body(x), model(x))
    assert got[0].dtype == want[0].dtype == torch.float16
    for what, g, w, w64 in zip(("stem", "logits"), got, want, want64):
        check_close(g, w64, reduced_precision_bound(w, w64), what)


def test_the_api_refuses_what_it_cannot_take_by_name():
    """clear_packed_weights of something not a module; precompile of a fused model's bad input (the
    model's own error, before any compile-only pass); no backend on a CUDA device this machine
    lacks."""
    with pytest.raises(TypeError, match="clear_packed_weights\\(\\) expects a torch.nn.Module, got str"):
        clear_packed_weights("model")
    with pytest.raises(ValueError, match="expects 3 input channels, got 4"):
        precompile(FusedGoogLeNet(init_weights=False).eval(), torch.randn(1, 4, 64, 64))
    assert available_backends(f"cuda:{torch.cuda.device_count()}") == []


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_an_input_gradient_comes_back_in_the_references_layout(backend):
    """The gradient autograd.grad returns for an input, in the layout the reference's convolutions
    give it (contiguous for a contiguous input, which ``.view`` can flatten; channels_last for a
    channels_last one), from a block in eval and train mode, and from the network (its stem's
    entry, one backend: the blocks' are the block's)."""
    torch.manual_seed(0)
    block = Inception(16, 8, 6, 8, 4, 6, 5)
    calibrate(block, torch.randn(2, 16, 5, 5))
    cases = [(block, FusedInception.from_torchvision(block, backend=backend), (2, 16, 5, 5))]
    if backend == "torch":
        net = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True)
        # 32x32: through the network's larger maps an fp32 gradient's routing flips (below) on 5-7 of
        # 16 inputs at 64x64, on 0-3 at 32x32 (test_modules' training step test).
        calibrate(net, torch.randn(2, 3, 32, 32))
        cases.append((net, FusedGoogLeNet.from_torchvision(net, backend=backend), (2, 3, 32, 32)))
    for ref, fused, shape in cases:
        for train in (False, True):
            for fmt in (torch.contiguous_format, torch.channels_last):
                ref.train(train), fused.train(train)
                x = torch.randn(shape).contiguous(memory_format=fmt)
                what = f"{type(ref).__name__} train={train} {fmt}"
                # (The network's values in train mode: test_modules' training tests, over several
                # inputs. Here a max pool's near-tie in train-mode BatchNorm's maps would move one
                # pixel's gradient, ~1% of it.)
                values = not (train and ref is not block)
                runs = [(ref, x), (fused, x)]
                if values:
                    # The reference in the other layout too: through the network, where a max pool's
                    # near-tie or a ReLU's input at 0 rounds to the other side in one of the layouts,
                    # that layout's gradient moves by 1e-3 or more (which inputs do depends on the CPU's
                    # kernels); the fused model's may do so in either layout.
                    other = torch.contiguous_format if fmt == torch.channels_last else torch.channels_last
                    runs += [(copy.deepcopy(ref).double(), x.double()), (ref, x.contiguous(memory_format=other))]
                grads = []
                for model, inp in runs:
                    inp = inp.clone().requires_grad_(True)
                    torch.manual_seed(1)  # the same dropout masks
                    grads.append(torch.autograd.grad(model(inp).square().sum(), inp)[0])
                want, got = grads[:2]
                assert got.stride() == want.stride(), f"{what}: {got.stride()} against the reference's {want.stride()}"
                if values:
                    tol = max(reduced_precision_bound(w, grads[2]) for w in (want, grads[3]))
                    check_close(got, grads[2], tol, what)
