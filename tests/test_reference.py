"""The reference network against torchvision: structure, state_dict, outputs, variants."""

from types import SimpleNamespace

import pytest
import torch
import torchvision

from inception_fast import GoogLeNet, Inception
from inception_fast.reference import BLOCK_CONFIGS, MAX_POOLS
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_transform_input_rounds_as_torchvision(dtype, channels_last):
    """transform_input gives torchvision's bits in every float dtype (in 16 bits the constants'
    rounding depends on the op), in either memory format."""
    x = torch.rand(2, 3, 9, 7).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    settings = SimpleNamespace(transform_input=True)  # the method reads nothing else: no network built
    want = torchvision.models.GoogLeNet._transform_input(settings, x)
    got = GoogLeNet._transform_input(settings, x)
    assert got.dtype == dtype and torch.equal(got, want)


@pytest.mark.parametrize("dropouts", [{}, {"dropout": 0.0, "dropout_aux": 0.5}], ids=["default", "set"])
def test_aux_heads_in_training_match_torchvision(dropouts):
    """A training forward gives torchvision's logits and aux logits (each aux head on a 6x6 map, where
    its 4x4 average pool has work to do) under one seed, with the dropouts each variant defaults to or
    is given, and leaves torchvision's BatchNorm running statistics.  In eval the aux heads do not run
    and the logits come alone; so do they in training without aux heads."""
    tv = tv_googlenet(aux_logits=True, **dropouts)
    calibrate(tv, torch.randn(4, 3, 96, 96))
    ours = GoogLeNet(aux_logits=True, **dropouts)
    ours.load_state_dict(tv.state_dict())
    tv.train(), ours.train()
    x = torch.randn(2, 3, 96, 96)
    torch.manual_seed(1)
    a = tv(x)
    torch.manual_seed(1)
    b = ours(x)
    for got, want in zip(b, a):
        check_close(got, want, TOLERANCE["same_ops"])
    for name, want in tv.state_dict().items():  # the running statistics, updated with torchvision's momentum
        check_close(ours.state_dict()[name], want, TOLERANCE["same_ops"], name)
    ours.eval()
    calls = []
    for head in (ours.aux1, ours.aux2):
        head.register_forward_hook(lambda *args: calls.append(args))
    assert isinstance(ours(x), torch.Tensor) and not calls
    assert isinstance(GoogLeNet().train()(x), torch.Tensor)


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
    m = GoogLeNet(variant="paper", aux_logits=True)
    assert m.inception3a.branch3[1].conv.kernel_size == (5, 5)
    assert m.inception3a.branch1.bn is None and m.inception3a.branch1.conv.bias is not None
    assert isinstance(m.lrn1, torch.nn.LocalResponseNorm) and isinstance(m.lrn2, torch.nn.LocalResponseNorm)
    assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())  # the aux heads' included
    ran = []
    stem = ("conv1", "maxpool1", "lrn1", "conv2", "conv3", "lrn2", "maxpool2", "inception3a")
    for name in stem:
        getattr(m, name).register_forward_hook(lambda *args, name=name: ran.append(name))
    assert m.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
    assert tuple(ran) == stem  # the stem runs both LRNs, each in its place
    # Table 1 of the paper: every max pool 3x3/2, and 7x7 after the last one at 224x224.
    for name in ("maxpool1", "maxpool2", "maxpool3", "maxpool4"):
        pool = getattr(m, name)
        assert (pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode) == (3, 2, 0, True), name
    sizes = {}
    m.maxpool4.register_forward_hook(lambda mod, inp, out: sizes.update(maxpool4=tuple(out.shape[1:])))
    m(torch.randn(1, 3, 224, 224))
    assert sizes["maxpool4"] == (832, 7, 7)
    # 40% dropout before the classifier, 70% in the aux heads.
    assert m.dropout.p == 0.4 and m.aux1.dropout.p == m.aux2.dropout.p == 0.7
    # LRN as in the paper's Caffe model (size 5, alpha 1e-4, beta 0.75, k 1), after conv1's pool and conv3
    for lrn in (m.lrn1, m.lrn2):
        assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 1e-4, 0.75, 1.0)


def test_init_is_torchvisions():
    """init_weights draws what torchvision's does: every conv and linear weight from a normal of std
    0.01 truncated at +-2 (the weights' spread, over 6 million draws), BatchNorm at 1 and 0, and
    the linear biases (fc, the aux heads') as nn.Linear draws them: uniform within 1/sqrt(fan_in).
    Under one seed the parameters are torchvision's own, and init_weights=False leaves PyTorch's
    default init as torchvision's does."""
    torch.manual_seed(0)
    ours, theirs = GoogLeNet(), tv_googlenet()
    for model in (ours, theirs):
        weights = torch.cat(
            [m.weight.flatten() for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        )
        assert abs(weights.std().item() - 0.01) < 2e-4 and weights.abs().max() <= 2
        for fc in [m for m in model.modules() if isinstance(m, torch.nn.Linear)]:
            bound = fc.in_features**-0.5
            assert fc.bias.abs().max() <= bound and fc.bias.std() > bound / 3, f"{type(model).__name__} {fc}"
    bns = [m for m in ours.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(bool((b.weight == 1).all() and (b.bias == 0).all()) for b in bns)
    # Under one seed, the very parameters torchvision draws, with its init or with PyTorch's own.
    for init_weights in (True, False):
        torch.manual_seed(0)
        ours = GoogLeNet(aux_logits=True, init_weights=init_weights).state_dict()
        torch.manual_seed(0)
        theirs = tv_googlenet(aux_logits=True, init_weights=init_weights).state_dict()
        assert all(torch.equal(ours[k], v) for k, v in theirs.items()), f"init_weights={init_weights}"


@pytest.mark.parametrize("variant", ["paper", "d2l"])
def test_init_starts_the_conv_biases_at_zero(variant):
    """The variants without BatchNorm have conv biases; init_weights starts them at zero (and their
    weights as torchvision's), where nn.Conv2d would draw them."""
    convs = [m for m in GoogLeNet(variant=variant).modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.bias is not None and not c.bias.any() for c in convs)


@pytest.mark.parametrize("size", [96, 32, 9, 1])
def test_d2l_variant_runs_down_to_small_images(size):
    m = GoogLeNet(variant="d2l").eval()
    assert m.in_channels == 1 and m.fc.out_features == 10
    assert m.inception3a.branch3[1].conv.kernel_size == (5, 5) and m.lrn1 is None
    assert m.dropout.p == 0.0  # the chapter's network has no dropout
    # The chapter's pools: nn.MaxPool2d(kernel_size=3, stride=2, padding=1), floor mode.
    for name in MAX_POOLS:
        pool = getattr(m, name)
        assert (pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode) == (3, 2, 1, False), name
    assert m(torch.randn(2, 1, size, size)).shape == (2, 10)


def _floor_mode_pools() -> GoogLeNet:
    """torchvision's variant with its max pools replaced by floor-mode ones (ceil_mode=False)."""
    m = GoogLeNet()
    for name in MAX_POOLS:
        pool = getattr(m, name)
        setattr(m, name, torch.nn.MaxPool2d(pool.kernel_size, pool.stride, pool.padding, ceil_mode=False))
    return m


@pytest.mark.parametrize("variant", ["paper", "d2l", "torchvision, floor-mode pools put in"])
def test_min_input_size_is_where_the_network_stops_running(variant, monkeypatch):
    """The size check's pool arithmetic is the modules' own (pools put in included): the smallest
    accepted size runs, and one less fails in PyTorch itself once the check is out of the way."""
    m = (_floor_mode_pools() if variant.startswith("torchvision") else GoogLeNet(variant=variant)).eval()
    n, c = m.min_input_size(), m.in_channels
    m(torch.randn(1, c, n, n))
    with pytest.raises(ValueError, match="too small"):
        m(torch.randn(1, c, n - 1, n - 1))
    if n > 1:
        monkeypatch.setattr(m, "check_input", lambda x: None)
        with pytest.raises(RuntimeError):
            m(torch.randn(1, c, n - 1, n - 1))


@pytest.mark.parametrize(
    "pool",
    [
        torch.nn.MaxPool2d((5, 3), 2, ceil_mode=True),
        torch.nn.MaxPool2d(5, (2, 3), ceil_mode=True),
        torch.nn.MaxPool2d(5, 2, dilation=2, ceil_mode=True),
    ],
    ids=["non-square window", "non-square stride", "dilated"],
)
def test_min_input_size_reads_only_square_undilated_pools(pool):
    """A max pool put in whose geometry the size check cannot read (a non-square window or stride,
    a dilation) leaves the check with the variant's own pool; a plain square 5x5/2 pool put in is
    read (the smallest size grows)."""
    base = GoogLeNet().min_input_size()
    m = GoogLeNet()
    m.maxpool1 = pool
    assert m.min_input_size() == base
    m.maxpool1 = torch.nn.MaxPool2d(5, 2, ceil_mode=True)
    assert m.min_input_size() > base


def test_min_input_size_matches_torchvision():
    tv = tv_googlenet().eval()
    ours = GoogLeNet().eval()
    n = ours.min_input_size()
    tv(torch.randn(1, 3, n, n))  # the smallest we accept, torchvision accepts
    with pytest.raises(RuntimeError):
        tv(torch.randn(1, 3, n - 1, n - 1))  # and one less fails there too
    with pytest.raises(ValueError, match="too small"):
        ours(torch.randn(1, 3, n - 1, n - 1))


@pytest.mark.parametrize("variant, in_channels", [("d2l", 1), ("torchvision", 1), ("paper", 4)])
def test_transform_input_needs_three_channels(variant, in_channels):
    """transform_input applies ImageNet's per-channel statistics: another channel count is refused
    when the network is built, not met as a conv's channel error in the first forward."""
    with pytest.raises(ValueError, match="transform_input needs 3 input channels"):
        GoogLeNet(variant=variant, in_channels=in_channels, transform_input=True)


def test_unknown_variant_and_bad_kernel():
    with pytest.raises(ValueError, match="variant"):
        GoogLeNet(variant="resnet")
    with pytest.raises(ValueError, match="branch3_kernel"):
        Inception(8, 4, 4, 4, 4, 4, 4, branch3_kernel=7)
    # A branch without channels would be a conv with no outputs: refused by the argument's name.
    for i, name in enumerate(("in_channels", "ch1x1", "ch3x3red", "ch3x3", "ch5x5red", "ch5x5", "pool_proj")):
        sizes = [8, 4, 4, 4, 4, 4, 4]
        sizes[i] = -1 if i % 2 else 0
        with pytest.raises(ValueError, match=f"Inception {name} must be a positive channel count, got {sizes[i]}"):
            Inception(*sizes)
