"""The reference network against torchvision: structure, state_dict, outputs, variants."""

import pytest
import torch
import torchvision

from inception_fast import GoogLeNet, Inception
from inception_fast.reference import BLOCK_CONFIGS
from inception_fast.testing import TOLERANCE, calibrate, check_close


def tv_googlenet(**kw):
    kw.setdefault("aux_logits", False)
    kw.setdefault("init_weights", True)
    return torchvision.models.googlenet(**kw)


@pytest.mark.parametrize("aux", [False, True])
def test_state_dict_keys_and_shapes_equal_torchvision(aux):
    ours, theirs = GoogLeNet(aux_logits=aux).state_dict(), tv_googlenet(aux_logits=aux).state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in ours)


def test_torchvision_checkpoint_with_aux_keys_loads_strictly_without_aux():
    ckpt = tv_googlenet(aux_logits=True).state_dict()  # like the published weights
    model = GoogLeNet(aux_logits=False)
    model.load_state_dict(ckpt, strict=True)
    assert not any(k.startswith("aux") for k in model.state_dict())
    torch.testing.assert_close(model.fc.weight, ckpt["fc.weight"], rtol=0, atol=0)


def test_our_state_dict_loads_into_torchvision():
    ours = GoogLeNet(aux_logits=True)
    tv = tv_googlenet(aux_logits=True)
    tv.load_state_dict(ours.state_dict(), strict=True)
    torch.testing.assert_close(tv.inception4e.branch3[1].conv.weight, ours.inception4e.branch3[1].conv.weight)


@pytest.mark.parametrize("transform_input", [False, True])
def test_reference_equals_torchvision(transform_input):
    tv = tv_googlenet(transform_input=transform_input)
    x = torch.randn(2, 3, 64, 64)
    calibrate(tv, torch.randn(4, 3, 64, 64))
    ours = GoogLeNet(transform_input=transform_input).eval()
    ours.load_state_dict(tv.state_dict())
    with torch.no_grad():
        ref = tv(x)
        assert ref.std() > 0.05  # activations did not vanish: the comparison can fail
        check_close(ours(x), ref, TOLERANCE["same_ops"])


def test_aux_heads_in_training_match_torchvision():
    tv = tv_googlenet(aux_logits=True)
    calibrate(tv, torch.randn(4, 3, 64, 64))
    ours = GoogLeNet(aux_logits=True)
    ours.load_state_dict(tv.state_dict())
    tv.train(), ours.train()
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(1)
    a = tv(x)
    torch.manual_seed(1)
    b = ours(x)
    for got, want in zip(b, a):
        check_close(got, want, TOLERANCE["same_ops"])
    ours.eval()
    assert isinstance(ours(x), torch.Tensor)


@pytest.mark.parametrize("name", list(BLOCK_CONFIGS))
def test_block_equals_torchvision_block(name):
    from torchvision.models.googlenet import Inception as TVInception

    cfg = BLOCK_CONFIGS[name]
    tv, ours = TVInception(*cfg), Inception(*cfg)
    ours.load_state_dict(tv.state_dict(), strict=True)
    x = torch.randn(1, cfg[0], 5, 6)
    calibrate(tv, x)
    ours.load_state_dict(tv.state_dict())
    with torch.no_grad():
        check_close(ours.eval()(x), tv.eval()(x), 0.0)


def test_paper_variant_structure():
    m = GoogLeNet(variant="paper")
    assert m.inception3a.branch3[1].conv.kernel_size == (5, 5)
    assert m.inception3a.branch1.bn is None and m.inception3a.branch1.conv.bias is not None
    assert isinstance(m.lrn1, torch.nn.LocalResponseNorm) and isinstance(m.lrn2, torch.nn.LocalResponseNorm)
    assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())
    assert m.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


@pytest.mark.parametrize("size", [96, 32, 9, 1])
def test_d2l_variant_runs_down_to_small_images(size):
    m = GoogLeNet(variant="d2l").eval()
    assert m.in_channels == 1 and m.fc.out_features == 10
    assert m.inception3a.branch3[1].conv.kernel_size == (5, 5) and m.lrn1 is None
    assert m(torch.randn(2, 1, size, size)).shape == (2, 10)


def test_min_input_size_matches_torchvision():
    tv = tv_googlenet().eval()
    ours = GoogLeNet().eval()
    n = ours.min_input_size()
    tv(torch.randn(1, 3, n, n))  # the smallest we accept, torchvision accepts
    with pytest.raises(RuntimeError):
        tv(torch.randn(1, 3, n - 1, n - 1))  # and one less fails there too
    with pytest.raises(ValueError, match="too small"):
        ours(torch.randn(1, 3, n - 1, n - 1))


def test_unknown_variant_and_bad_kernel():
    with pytest.raises(ValueError, match="variant"):
        GoogLeNet(variant="resnet")
    with pytest.raises(ValueError, match="branch3_kernel"):
        Inception(8, 4, 4, 4, 4, 4, 4, branch3_kernel=7)
