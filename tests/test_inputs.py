"""Inputs that must get the reference's behaviour or a clear error, never a traceback from
deep inside or a silent oddity."""

import pytest
import torch
import torchvision

from inception_fast import FusedGoogLeNet, FusedInception, GoogLeNet, Inception, available_backends
from inception_fast.testing import calibrate


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


@pytest.mark.parametrize("backend", [b for b in ("torch", "cpp", "onednn") if b in available_backends("cpu")])
def test_a_block_input_without_pixels_is_refused_by_name(backend):
    """Height or width 0 into a fused block, with and without gradients: the package's error on
    every backend (the onednn backend's prepacked path included)."""
    block = FusedInception(16, 8, 6, 8, 4, 6, 5, backend=backend).eval()
    for grad in (False, True):
        with torch.set_grad_enabled(grad), pytest.raises(ValueError, match="at least 1x1 pixels"):
            block(torch.randn(1, 16, 0, 5, requires_grad=grad))


def test_fuse_rejects_an_unknown_backend_even_with_nothing_to_fuse():
    from inception_fast import fuse

    resnet = torchvision.models.resnet18()
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        fuse(resnet, backend="nope")
    with pytest.warns(UserWarning, match="no module of ResNet computes an Inception block"):
        assert fuse(resnet) is resnet
