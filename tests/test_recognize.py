"""fuse() recognises Inception blocks by what their forward computes (inception_fast.recognize)."""

import copy
import functools
import random
import secrets
import types
import warnings
from random import uniform as _uniform

import pytest
import torch
import torch.nn.functional as F
import torchvision
from model_cases import FUSED_BLOCK_OP, OpRecorder
from torch import nn

from inception_fast import FusedInception, fuse
from inception_fast import Inception as OurInception
from inception_fast.modules import FusedForeignInception
from inception_fast.recognize import BlockMatch, match_block
from inception_fast.testing import TOLERANCE, calibrate, check_close, reduced_precision_bound

FP32 = TOLERANCE["fp32"]


# -- the Dive-into-Deep-Learning chapter's network, as a reader types it ------------------------------


class TextbookInception(nn.Module):
    """The chapter's block: bare convs with bias, F.relu in forward, torch.cat."""

    def __init__(self, in_channels, c1, c2, c3, c4):
        super().__init__()
        self.p1_1 = nn.Conv2d(in_channels, c1, kernel_size=1)
        self.p2_1 = nn.Conv2d(in_channels, c2[0], kernel_size=1)
        self.p2_2 = nn.Conv2d(c2[0], c2[1], kernel_size=3, padding=1)
        self.p3_1 = nn.Conv2d(in_channels, c3[0], kernel_size=1)
        self.p3_2 = nn.Conv2d(c3[0], c3[1], kernel_size=5, padding=2)
        self.p4_1 = nn.MaxPool2d(kernel_size=3, stride=1, padding=1)
        self.p4_2 = nn.Conv2d(in_channels, c4, kernel_size=1)

    def forward(self, x):
        b1 = F.relu(self.p1_1(x))
        b2 = F.relu(self.p2_2(F.relu(self.p2_1(x))))
        b3 = F.relu(self.p3_2(F.relu(self.p3_1(x))))
        b4 = F.relu(self.p4_2(self.p4_1(x)))
        return torch.cat((b1, b2, b3, b4), dim=1)


def textbook_googlenet():
    """The chapter's GoogLeNet: five stages in an nn.Sequential, 1 channel in, 10 classes out."""
    stage1 = nn.Sequential(
        nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )
    stage2 = nn.Sequential(
        nn.Conv2d(64, 64, kernel_size=1),
        nn.ReLU(),
        nn.Conv2d(64, 192, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )
    stage3 = nn.Sequential(
        TextbookInception(192, 64, (96, 128), (16, 32), 32),
        TextbookInception(256, 128, (128, 192), (32, 96), 64),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )
    stage4 = nn.Sequential(
        TextbookInception(480, 192, (96, 208), (16, 48), 64),
        TextbookInception(512, 160, (112, 224), (24, 64), 64),
        TextbookInception(512, 128, (128, 256), (24, 64), 64),
        TextbookInception(512, 112, (144, 288), (32, 64), 64),
        TextbookInception(528, 256, (160, 320), (32, 128), 128),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )
    stage5 = nn.Sequential(
        TextbookInception(832, 256, (160, 320), (32, 128), 128),
        TextbookInception(832, 384, (192, 384), (48, 128), 128),
        nn.AdaptiveAvgPool2d((1, 1)),
        nn.Flatten(),
    )
    return nn.Sequential(stage1, stage2, stage3, stage4, stage5, nn.Linear(1024, 10))


def _fuse_quietly(model, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean fuse warns about nothing
        return fuse(model, backend="torch", report=True, **kw)


def test_convs_padded_by_name_are_fused():
    """padding="same" (the k×k convs) and padding="valid" (the 1x1s: no padding) name the pattern's
    padding: the block is fused and computes what it did.  "valid" on a 3x3 is refused, by name."""
    torch.manual_seed(6)
    block = TextbookInception(8, 3, (4, 5), (2, 3), 3).eval()
    for name, padding in (("p1_1", "valid"), ("p2_1", "valid"), ("p2_2", "same"), ("p3_1", "valid")):
        old = getattr(block, name)
        new = nn.Conv2d(old.in_channels, old.out_channels, old.kernel_size, padding=padding)
        new.load_state_dict(old.state_dict())
        setattr(block, name, new)
    block.p3_2 = nn.Conv2d(2, 3, 5, padding="same")
    x = torch.randn(2, 8, 6, 5)
    with torch.no_grad():
        want = block(x)
        assert want.std() > 0.05, "reference activations vanished: the comparison could not fail"
        fused, _ = _fuse_quietly(copy.deepcopy(block))
        assert isinstance(fused, FusedForeignInception)
        check_close(fused(x), want, FP32, "convs padded by name")
    block.p2_2 = nn.Conv2d(2, 5, 3, padding="valid")
    reason = match_block(block)
    assert isinstance(reason, str) and "padding valid with a 3x3 kernel" in reason, reason


def test_textbook_network_fuses_all_nine_blocks_and_keeps_its_outputs_and_keys():
    net = textbook_googlenet()
    x = torch.randn(2, 1, 32, 32)
    calibrate(net, x)  # He-initialised convs: activations stay O(1) through the 22 layers
    with torch.no_grad():
        ref32 = net(x)
        ref64 = copy.deepcopy(net).double()(x.double())
    assert ref32.std() > 0.05, "reference activations vanished; the comparison could not fail"
    saved = copy.deepcopy(net.state_dict())

    fused, report = _fuse_quietly(net)
    assert fused is net
    blocks = [m for m in net.modules() if isinstance(m, FusedForeignInception)]
    assert len(blocks) == 9 and len(report.fused) == 9 and not report.left_alone
    assert [p for p, _ in report.fused] == ["2.0", "2.1", "3.0", "3.1", "3.2", "3.3", "3.4", "4.0", "4.1"]
    assert "fused 9" in str(report)
    assert not net.training  # calibrate left it in eval mode; fuse kept it
    with torch.no_grad():
        check_close(net(x), ref64, reduced_precision_bound(ref32, ref64), "fused textbook network")
    # the user's checkpoint keys and values survive: saved before fuse(), loaded after it
    assert list(net.state_dict()) == list(saved)
    net.load_state_dict(saved, strict=True)
    # ... and the fused blocks follow a load (the packed weights are rebuilt)
    changed = {k: (v * 0.5 if k.endswith("p1_1.weight") else v) for k, v in saved.items()}
    net.load_state_dict(changed)
    unfused = textbook_googlenet().eval()
    unfused.load_state_dict(changed)
    with torch.no_grad():
        want = unfused(x)
        check_close(net(x), want, reduced_precision_bound(want, copy.deepcopy(unfused).double()(x.double())))


def test_gradients_through_a_fused_textbook_block_equal_the_unfused_ones():
    block = TextbookInception(12, 5, (6, 7), (3, 4), 4)
    x = torch.randn(3, 12, 6, 5)
    calibrate(block, x)
    block.train()
    ref = copy.deepcopy(block)
    fused, _ = _fuse_quietly(block)
    assert isinstance(fused, FusedForeignInception) and fused.training

    def grads(model):
        xi = x.clone().requires_grad_()
        out = model(xi)
        weight = torch.randn_like(out, generator=None)
        (out * weight).sum().backward()
        return out, xi.grad, {n: p.grad for n, p in model.named_parameters()}

    torch.manual_seed(1)
    out_ref, gx_ref, gp_ref = grads(ref)
    torch.manual_seed(1)
    out, gx, gp = grads(fused)
    assert (out_ref > 0).float().mean() > 0.2, "ReLUs mostly dead: the gradient check could not fail"
    check_close(out, out_ref, FP32, "output")
    check_close(gx, gx_ref, FP32, "input gradient")
    assert set(gp) == set(gp_ref)
    for name in gp_ref:
        check_close(gp[name], gp_ref[name], FP32, f"gradient of {name}")


def test_the_d2l_variant_is_the_textbook_network_with_its_floor_mode_pools():
    """GoogLeNet(variant="d2l") computes what the chapter's network computes, given the same
    parameters, at a size where its 3x3/2 padding-1 pools' floor mode matters (a ceil-mode pool
    would give 9x9 where floor mode gives 8x8 after the stem's conv)."""
    from inception_fast import GoogLeNet

    x = torch.randn(2, 1, 32, 32)
    after_stem = torch.zeros(1, 1, 16, 16)
    assert F.max_pool2d(after_stem, 3, 2, 1, ceil_mode=True).shape != F.max_pool2d(after_stem, 3, 2, 1).shape
    textbook = calibrate(textbook_googlenet(), x)
    ours = GoogLeNet(variant="d2l", init_weights=False).eval()
    mine, theirs = list(ours.parameters()), list(textbook.parameters())
    assert [p.shape for p in mine] == [p.shape for p in theirs]
    with torch.no_grad():
        for p, q in zip(mine, theirs):
            p.copy_(q)
        want = textbook(x)
        assert want.std() > 0.05, "reference activations vanished; the comparison could not fail"
        check_close(ours(x), want, TOLERANCE["same_ops"], "d2l variant against the textbook network")


def test_a_fused_foreign_block_in_float64_computes_the_original_blocks_branches_in_order():
    """A fused foreign block in float64 runs its own reference computation (not the fused op): its
    branches concatenated in the block's order, as the original computes in float64."""
    block = TextbookInception(8, 3, (4, 5), (2, 6), 4)
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64)
    calibrate(block, x.float())
    ref = copy.deepcopy(block).double()
    fused, _ = _fuse_quietly(block)
    assert isinstance(fused, FusedForeignInception)
    fused = fused.double()
    with torch.no_grad():
        want = ref(x)
        assert want.std() > 0.05, "reference activations vanished; the comparison could not fail"
        check_close(fused(x), want, TOLERANCE["same_ops"], "fused foreign block in float64")


class BNInception(nn.Module):
    """A reader's block with conv → BatchNorm → ReLU modules (bias-free convs unless ``bias``), in its own layout."""

    def __init__(self, cin, c1, c2, c3, c4, k=3, bias=False):
        super().__init__()

        def unit(i, o, kk=1):
            return nn.Sequential(
                nn.Conv2d(i, o, kk, padding=kk // 2, bias=bias), nn.BatchNorm2d(o), nn.ReLU(inplace=True)
            )

        self.a = unit(cin, c1)
        self.b = nn.Sequential(unit(cin, c2[0]), unit(c2[0], c2[1], 3))
        self.c = nn.Sequential(unit(cin, c3[0]), unit(c3[0], c3[1], k))
        self.pool = nn.MaxPool2d(3, 1, 1, ceil_mode=True)  # ceil_mode changes nothing for 3x3/1 padding 1
        self.d = unit(cin, c4)

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x), self.c(x), self.d(self.pool(x))], 1)


def test_foreign_batchnorm_block_eval_and_train():
    block = BNInception(10, 4, (5, 6), (3, 4), 3, k=7)  # any odd k in branch 3
    x = torch.randn(4, 10, 6, 6)
    calibrate(block, x)
    ref = copy.deepcopy(block)
    fused, report = _fuse_quietly(block)
    assert isinstance(fused, FusedForeignInception) and fused.has_bn
    with torch.no_grad():
        want = ref(x)
        assert want.std() > 0.1
        check_close(fused(x), want, FP32, "eval (BN folded)")
    # eval mode with gradients: the folded op carries them to the conv and BN parameters
    for model in (ref, fused):
        model.zero_grad()
        model(x).square().sum().backward()
    for (name, p_ref), p in zip(ref.named_parameters(), fused.parameters()):
        check_close(p.grad, p_ref.grad, FP32, f"eval-mode gradient of {name}")
    # train mode: batch statistics, running stats updated exactly as the original does
    ref.train(), fused.train()
    check_close(fused(x), ref(x), FP32, "train mode")
    for (name, b_ref), b in zip(ref.named_buffers(), fused.buffers()):
        if b_ref.is_floating_point():
            check_close(b, b_ref, FP32, f"buffer {name}")
    # an input of other channels: the original forward's own error
    errors = []
    for model in (ref, fused):
        with pytest.raises(RuntimeError) as exc:
            model(torch.randn(2, 9, 6, 6))
        errors.append(str(exc.value))
    assert errors[0] == errors[1]
    # an input of another dtype than the weights': refused, not computed with cast weights
    with pytest.raises(TypeError, match="does not match its weights' dtype"):
        fused(x.half())


def test_bias_free_conv_without_batchnorm_gets_a_zero_bias():
    block = TextbookInception(8, 3, (4, 5), (2, 3), 3)
    block.p2_2 = nn.Conv2d(4, 5, 3, padding=1, bias=False)
    x = torch.randn(2, 8, 5, 5)
    calibrate(block, x)
    with torch.no_grad():
        want = block(x)
        fused, _ = _fuse_quietly(copy.deepcopy(block))
        assert isinstance(fused, FusedForeignInception)
        check_close(fused(x), want, FP32)


class BiasedBasicConv2d(nn.Module):
    """A custom conv_block for torchvision's Inception: conv with a bias, then BN, then ReLU."""

    def __init__(self, cin, cout, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=True, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class PlainConvBlock(nn.Module):
    """A custom conv_block for torchvision's Inception: conv without bias, then ReLU, no BN."""

    def __init__(self, cin, cout, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)

    def forward(self, x):
        return F.relu(self.conv(x))


@pytest.mark.parametrize("conv_block", [BiasedBasicConv2d, PlainConvBlock])
def test_torchvision_blocks_with_a_custom_conv_block_fuse(conv_block):
    """torchvision's Inception in its own layout, but with a conv_block whose convs carry a bias
    where a BN follows, or neither: fused as a foreign block (FusedInception ties the bias to "no
    BN"), with the block's state_dict keys and its outputs."""
    from torchvision.models.googlenet import Inception as TVInception

    block = TVInception(8, 4, 3, 5, 2, 3, 4, conv_block=conv_block)
    x = torch.randn(2, 8, 5, 5)
    calibrate(block, x)
    with torch.no_grad():
        want = block(x)
    assert want.std() > 0.1
    keys = list(block.state_dict())
    fused, report = _fuse_quietly(block)
    assert isinstance(fused, FusedForeignInception) and len(report.fused) == 1
    assert list(fused.state_dict()) == keys
    with torch.no_grad():
        check_close(fused.eval()(x), want, FP32)


def test_a_fused_foreign_block_keeps_the_blocks_own_attributes():
    """Plain attributes and methods of the user's block class still read after fuse() (a parent
    that reads ``block.out_channels`` in its forward keeps working); a name it never had is a
    clear AttributeError."""

    class Described(TextbookInception):
        def __init__(self, *args):
            super().__init__(*args)
            self.out_channels = 18

        def width(self):
            return self.out_channels

    block = Described(8, 4, (4, 6), (2, 3), 5)
    fused, _ = _fuse_quietly(block)
    assert isinstance(fused, FusedForeignInception)
    assert fused.out_channels == 18 and fused.width() == 18
    assert fused.p1_1 is block.p1_1  # submodules: the fused module's own (the same objects)
    with pytest.raises(AttributeError, match="fused from .*Described.* has no attribute 'nothing'"):
        fused.nothing
    assert copy.deepcopy(fused).out_channels == 18
    # The mode is set on the original block too (its forward and methods read self.training); a name
    # the block never had is the fused block's own, and changes nothing the fused op computes.
    assert fused._source_block is block
    fused.train()
    assert block.training and fused.training
    fused.eval()
    assert not block.training
    fused.note = "mine"
    assert fused.__dict__["note"] == "mine" and not hasattr(block, "note")
    with torch.no_grad(), OpRecorder() as rec:
        fused(torch.randn(1, 8, 4, 4))
    assert FUSED_BLOCK_OP in rec.ops


class PoolSized(TextbookInception):
    """The pool branch's window size is a plain attribute its forward reads."""

    def __init__(self, *args):
        super().__init__(*args)
        self.pool_size = 3

    def forward(self, x):
        b1 = F.relu(self.p1_1(x))
        b2 = F.relu(self.p2_2(F.relu(self.p2_1(x))))
        b3 = F.relu(self.p3_2(F.relu(self.p3_1(x))))
        b4 = F.relu(self.p4_2(F.max_pool2d(x, self.pool_size, 1, self.pool_size // 2)))
        return torch.cat((b1, b2, b3, b4), dim=1)


def test_an_attribute_set_on_a_fused_foreign_block_reaches_its_forward():
    """fuse() traced the forward with the attribute's value then: set on the fused block, the value
    goes to the original block (its methods and forward read it) and the original forward runs, so
    the answer is the original's with the new value; fuse() again matches the block once the value
    computes the pattern again."""
    torch.manual_seed(0)
    model = nn.Sequential(PoolSized(8, 4, (4, 6), (2, 3), 5)).eval()
    x = torch.randn(2, 8, 9, 9)
    original = copy.deepcopy(model[0])
    _fuse_quietly(model)
    fused = model[0]
    assert isinstance(fused, FusedForeignInception) and fused.structure_ok()
    fused.pool_size = 5
    original.pool_size = 5
    assert fused.pool_size == 5 and fused._source_block.pool_size == 5
    with torch.no_grad():
        want = original(x)
        assert (F.max_pool2d(x, 5, 1, 2) != F.max_pool2d(x, 3, 1, 1)).any()  # the change shows
        check_close(model(x), want, FP32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fuse(model, backend="torch")
    assert not fused.structure_ok()  # a 5x5 pool is not the pattern
    fused.pool_size = 3
    original.pool_size = 3
    _fuse_quietly(model)
    assert fused.structure_ok()
    recorder = OpRecorder()
    with torch.no_grad(), recorder:
        got = model(x)
    assert FUSED_BLOCK_OP in recorder.ops
    check_close(got, original(x), FP32)


class PoolSizedWithSetter(PoolSized):
    def set_pool_size(self, size):
        self.pool_size = size  # runs on the original block (found through __getattr__)


@pytest.mark.parametrize("how", ["method of its class", "the original block held from before fuse()"])
def test_an_attribute_changed_on_the_original_block_reaches_the_forward(how):
    """A plain attribute set on the original block itself, not through the fused block's
    __setattr__ (by a method of its class, or through a reference kept from before fuse()): the
    next forward sees it changed and runs the original forward, so the answer is the original's
    with the new value; while nothing changes, the fused op runs."""
    torch.manual_seed(0)
    ref = nn.Sequential(PoolSizedWithSetter(8, 4, (4, 6), (2, 3), 5)).eval()
    model = copy.deepcopy(ref)
    kept = model[0]
    _fuse_quietly(model)
    fused = model[0]
    x = torch.randn(2, 8, 9, 9)
    recorder = OpRecorder()
    with torch.no_grad(), recorder:
        check_close(model(x), ref(x), FP32, "before")
    assert recorder.ops.count(FUSED_BLOCK_OP) == 1, "unchanged, the fused op runs"
    for m in (ref[0], fused if how.startswith("method") else kept):
        m.set_pool_size(5) if how.startswith("method") else setattr(m, "pool_size", 5)
    assert fused.pool_size == 5
    with torch.no_grad():
        want = ref(x)
        assert (F.max_pool2d(x, 5, 1, 2) != F.max_pool2d(x, 3, 1, 1)).any()  # the change shows
        check_close(model(x), want, FP32, how)
        check_close(model(x), want, FP32, f"{how}, a second forward")
    kept.pool_size = 3
    _fuse_quietly(model)  # matches the block again
    assert fused.structure_ok()
    kept.compile()  # a name of nn.Module's own added (torch.compile's, a lazy wrapper): no plain attribute
    assert fused.structure_ok()
    kept.extra = 1.0  # an attribute added to the original: the original forward likewise
    assert not fused.structure_ok()


class Knobbed(TextbookInception):
    """A class-level default, a property and a method that swaps a submodule."""

    out_scale = 1.0

    def __init__(self, *args):
        super().__init__(*args)
        self._pool_on = True

    @property
    def pool_on(self):
        return self._pool_on

    @pool_on.setter
    def pool_on(self, value):
        self._pool_on = bool(value)

    def forward(self, x):
        b1 = F.relu(self.p1_1(x))
        b2 = F.relu(self.p2_2(F.relu(self.p2_1(x))))
        b3 = F.relu(self.p3_2(F.relu(self.p3_1(x))))
        b4 = F.relu(self.p4_2(self.p4_1(x) if self.pool_on else x))
        out = torch.cat((b1, b2, b3, b4), dim=1)
        return out * self.out_scale if self.out_scale != 1.0 else out

    def reinit_branch1(self, seed):
        torch.manual_seed(seed)
        self.p1_1 = nn.Conv2d(self.p1_1.in_channels, self.p1_1.out_channels, 1)


@pytest.mark.parametrize("change", ["class attribute", "property", "method"])
def test_a_fused_foreign_block_changed_through_its_class_computes_what_its_forward_does(change):
    """A class-level default or a property set on the fused block, and a method of the block's class
    that swaps a submodule, called through it, change what the original forward computes: the fused
    block computes that too (the attribute reads back, the new conv is the fused block's)."""
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), Knobbed(16, 4, (4, 6), (2, 3), 5)).eval()
    model = copy.deepcopy(ref)
    _fuse_quietly(model)
    assert isinstance(model[2], FusedForeignInception)
    x = torch.randn(2, 3, 9, 9)
    old_conv = model[2].p1_1
    with torch.no_grad():
        check_close(model(x), ref(x), FP32, "before")
        for m in (ref, model):
            if change == "class attribute":
                m[2].out_scale = 0.5
            elif change == "property":
                m[2].pool_on = False
            else:
                m[2].reinit_branch1(seed=5)
        want = ref(x)
        check_close(model(x), want, FP32, change)
    if change == "class attribute":
        assert model[2].out_scale == 0.5 and type(model[2]._source_block).out_scale == 1.0
    elif change == "property":
        assert model[2].pool_on is False
    else:
        new_conv = model[2].p1_1
        assert new_conv is not old_conv and new_conv is model[2]._source_block.p1_1
        assert dict(model.named_parameters())["2.p1_1.weight"] is new_conv.weight


class Optional_(TextbookInception):
    """Optional extras its forward applies when set (None: off), a flag, and plain tensors kept."""

    def __init__(self, *args):
        super().__init__(*args)
        self.extra, self.scale, self.flag = None, None, False
        self.stats = (torch.zeros(3), torch.ones(3))

    def forward(self, x):
        out = super().forward(x)
        out = self.extra(out) if self.extra is not None else out
        out = out * self.scale if self.scale is not None else out
        return out + 1 if self.flag else out


def test_a_fused_foreign_block_takes_modules_parameters_and_deletions_as_its_forward_does():
    """A module or parameter set over an attribute the forward reads (None: off), a tuple of
    tensors set, a plain attribute deleted: as on the unfused block.  A block pickled before the
    fused block shared the original's dicts (simulated) still writes through after loading."""
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Optional_(8, 4, (4, 6), (2, 3), 5)).eval()
    model = copy.deepcopy(ref)
    _fuse_quietly(model)
    assert isinstance(model[1], FusedForeignInception)
    x = torch.randn(2, 3, 7, 7)
    changes = [
        lambda b: setattr(b, "extra", nn.Hardtanh(0.0, 0.01)),
        lambda b: setattr(b, "scale", nn.Parameter(torch.tensor(3.0))),
        lambda b: setattr(b, "stats", (torch.ones(3), torch.zeros(3))),
        lambda b: delattr(b, "stats"),
    ]
    with torch.no_grad():
        for i, change in enumerate(changes):
            for m in (ref, model):
                change(m[1])
            check_close(model(x), ref(x), FP32, f"change {i}")
    assert "1.scale" in dict(model.named_parameters())
    # Pickled by the code before: its own dicts, no "_adopted" and no attribute snapshot; loaded, it
    # shares them again and takes the snapshot.
    old = copy.deepcopy(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Optional_(8, 4, (4, 6), (2, 3), 5)).eval())
    ref_old = copy.deepcopy(old)
    _fuse_quietly(old)
    state = old[1].__dict__.copy()
    del state["_adopted"], state["_source_attributes"]
    source = state["_source_block"]
    for key in ("_modules", "_parameters", "_buffers"):
        source.__dict__[key] = dict(state[key])
    fresh = FusedForeignInception.__new__(FusedForeignInception)
    fresh.__setstate__(state)
    old[1] = fresh
    with torch.no_grad():
        check_close(old(x), ref_old(x), FP32, "an older pickle, as loaded")
        for m in (ref_old, old):
            m[1].flag = True
        check_close(old(x), ref_old(x), FP32, "an older pickle, a flag set")


class ExtraState(TextbookInception):
    def get_extra_state(self):
        return {"note": 1}

    def set_extra_state(self, state):
        pass


def test_a_block_keeping_state_dict_contents_of_its_own_is_left_alone():
    """A block class with extra state (or state_dict hooks on the block): a fused block would drop
    them from the state_dict, so fuse() leaves it as it is and says why."""
    block = ExtraState(8, 4, (4, 6), (2, 3), 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fused, report = fuse(nn.Sequential(nn.Conv2d(3, 8, 1), block), backend="torch", report=True)
    assert fused[1] is block and not report.fused
    assert "state_dict contents of its own" in str(report)
    hooked = TextbookInception(8, 4, (4, 6), (2, 3), 5)
    hooked._register_load_state_dict_pre_hook(lambda *args: None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fused, report = fuse(nn.Sequential(nn.Conv2d(3, 8, 1), hooked), backend="torch", report=True)
    assert fused[1] is hooked and not report.fused


def test_torchvision_network_and_a_model_with_both_kinds():
    tv = torchvision.models.googlenet(aux_logits=False, init_weights=True)
    _, report = _fuse_quietly(tv)
    assert len(report.fused) == 9 and sum(isinstance(m, FusedInception) for m in tv.modules()) == 9

    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        OurInception(16, 4, 4, 8, 2, 4, 4, batch_norm=False),
        TextbookInception(20, 6, (4, 8), (2, 4), 6),
        nn.Sequential(BNInception(24, 4, (4, 6), (2, 4), 2)),
    )
    x = torch.randn(2, 3, 7, 7)
    calibrate(model, x)
    with torch.no_grad():
        want = model(x)
    assert want.std() > 0.1
    keys = list(model.state_dict())
    _, report = _fuse_quietly(model)
    assert isinstance(model[2], FusedInception)
    assert isinstance(model[3], FusedForeignInception) and isinstance(model[4][0], FusedForeignInception)
    assert [p for p, _ in report.fused] == ["2", "3", "4.0"]
    assert list(model.state_dict()) == keys
    with torch.no_grad():
        check_close(model(x), want, FP32)
    # fusing again finds nothing new and says nothing
    _, again = _fuse_quietly(model)
    assert not again.fused and not again.left_alone


def test_a_block_held_under_two_names_stays_one_block():
    """Weight tying: the same block object reached twice (visited once by named_children) becomes
    one fused block under both names, and a training step moves it as it moves the original."""
    for shared in (OurInception(8, 3, 4, 8, 2, 4, 1), TextbookInception(8, 3, (4, 6), (2, 4), 3)):
        what = type(shared).__name__
        model = nn.Sequential(shared, nn.Conv2d(16, 8, 1), shared)
        x = torch.randn(2, 8, 5, 5)
        calibrate(model, x)
        ref = copy.deepcopy(model)  # deepcopy keeps the tie
        _fuse_quietly(model)
        assert model[0] is model[2], what
        assert isinstance(model[0], (FusedInception, FusedForeignInception)), what
        for net in (ref, model):
            opt = torch.optim.SGD(net.parameters(), lr=0.01)
            net(x).square().mean().backward()
            opt.step()
        with torch.no_grad():
            want = ref(x)
            assert want.std() > 0.1
            check_close(model(x), want, FP32, what)


class SequentialInception(nn.Module):
    """Branches as nn.Sequential with nn.ReLU and nn.MaxPool2d modules: modules the fused forward's
    own reference computation (conv, BN, F.relu, F.max_pool2d) does not call."""

    def __init__(self, cin, c1, c2, c3, c4):
        super().__init__()
        self.b1 = nn.Sequential(nn.Conv2d(cin, c1, 1), nn.ReLU())
        self.b2 = nn.Sequential(nn.Conv2d(cin, c2[0], 1), nn.ReLU(), nn.Conv2d(c2[0], c2[1], 3, padding=1), nn.ReLU())
        self.b3 = nn.Sequential(nn.Conv2d(cin, c3[0], 1), nn.ReLU(), nn.Conv2d(c3[0], c3[1], 5, padding=2), nn.ReLU())
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(cin, c4, 1), nn.ReLU())

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


def test_hooks_on_any_module_of_a_fused_foreign_block_run():
    """A hook registered after fuse() on a wrapper, a ReLU or a pool module of a foreign block fires
    as in the unfused block: the block then runs its original forward."""
    block = SequentialInception(8, 3, (4, 6), (2, 4), 3)
    x = torch.randn(2, 8, 5, 5)
    calibrate(block, x)
    ref = copy.deepcopy(block)
    fused, _ = _fuse_quietly(block)
    assert isinstance(fused, FusedForeignInception)
    for where in ("b1", "b2.1", "b4.0"):
        handles = [
            m.get_submodule(where).register_forward_hook(lambda mod, args, out: out * 0.5 + 0.125) for m in (ref, fused)
        ]
        with torch.no_grad():
            want = ref(x)
            check_close(fused(x), want, FP32, f"a hook on {where}")
        for handle in handles:
            handle.remove()
    with torch.no_grad():
        check_close(fused(x), ref(x), FP32, "after the hooks' removal")
    # A branch replaced after fuse(), then a hook: the original forward runs the new branch.
    new = nn.Sequential(nn.Conv2d(8, 3, 1), nn.ReLU())
    fused.b1, ref.b1 = new, copy.deepcopy(new)
    for m in (ref, fused):
        m.b2[1].register_forward_hook(lambda mod, args, out: out * 0.5)
    with torch.no_grad():
        check_close(fused(x), ref(x), FP32, "a replaced branch and a hook")
        # float64 (the block's own computation) runs the hooks too; a deepcopy keeps them working.
        fused64, ref64 = copy.deepcopy(fused).double(), copy.deepcopy(ref).double()
        check_close(fused64(x.double()), ref64(x.double()), TOLERANCE["same_ops"], "float64 with a hook")


def test_fuse_keeps_a_float64_model_working():
    tv = torchvision.models.googlenet(aux_logits=False, init_weights=True)
    calibrate(tv, torch.randn(4, 3, 64, 64))
    tv = tv.eval().double()
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        want = tv(x)
        _fuse_quietly(tv)
        check_close(tv(x), want, TOLERANCE["same_ops"])


# -- lookalikes: left exactly as they were -------------------------------------------------------


class AvgPoolBranch(TextbookInception):
    def forward(self, x):
        p4 = F.relu(self.p4_2(F.avg_pool2d(x, 3, 1, 1)))
        return torch.cat(
            (
                F.relu(self.p1_1(x)),
                F.relu(self.p2_2(F.relu(self.p2_1(x)))),
                F.relu(self.p3_2(F.relu(self.p3_1(x)))),
                p4,
            ),
            dim=1,
        )


class MissingReLU(TextbookInception):
    def forward(self, x):
        return torch.cat(
            (
                F.relu(self.p1_1(x)),
                F.relu(self.p2_2(self.p2_1(x))),
                F.relu(self.p3_2(F.relu(self.p3_1(x)))),
                F.relu(self.p4_2(self.p4_1(x))),
            ),
            dim=1,
        )


class OtherOrder(TextbookInception):
    def forward(self, x):
        return torch.cat(
            (
                F.relu(self.p2_2(F.relu(self.p2_1(x)))),
                F.relu(self.p1_1(x)),
                F.relu(self.p3_2(F.relu(self.p3_1(x)))),
                F.relu(self.p4_2(self.p4_1(x))),
            ),
            dim=1,
        )


class Sigmoid(TextbookInception):
    def forward(self, x):
        return torch.cat(
            (
                torch.sigmoid(self.p1_1(x)),
                F.relu(self.p2_2(F.relu(self.p2_1(x)))),
                F.relu(self.p3_2(F.relu(self.p3_1(x)))),
                F.relu(self.p4_2(self.p4_1(x))),
            ),
            dim=1,
        )


class ExtraScale(TextbookInception):
    def forward(self, x):
        return 2 * super().forward(x)


class SharedReduction(TextbookInception):  # branch 3 reads branch 2's reduction
    def forward(self, x):
        r = F.relu(self.p2_1(x))
        return torch.cat(
            (F.relu(self.p1_1(x)), F.relu(self.p2_2(r)), F.relu(self.p3_2(r[:, :2])), F.relu(self.p4_2(self.p4_1(x)))),
            dim=1,
        )


class HalvedInTraining(TextbookInception):  # eval mode computes the pattern, train mode does not
    def forward(self, x):
        b1 = F.relu(self.p1_1(x))
        b2 = F.relu(self.p2_2(F.relu(self.p2_1(x))))
        if self.training:
            b2 = b2 * 0.5
        b3 = F.relu(self.p3_2(F.relu(self.p3_1(x))))
        b4 = F.relu(self.p4_2(self.p4_1(x)))
        return torch.cat((b1, b2, b3, b4), dim=1)


class ClampedInput(TextbookInception):  # one side computation before the branches, in place
    def forward(self, x):
        x.clamp_(-0.5, 0.5)
        return super().forward(x)


class CatWithoutDim(TextbookInception):  # torch.cat's default dim 0: the batch, not the channels
    def forward(self, x):
        b1 = F.relu(self.p1_1(x))
        b2 = F.relu(self.p2_2(F.relu(self.p2_1(x))))
        b3 = F.relu(self.p3_2(F.relu(self.p3_1(x))))
        b4 = F.relu(self.p4_2(self.p4_1(x)))
        return torch.cat((b1, b2, b3, b4))


class CatLastDim(TextbookInception):  # dim=-1: the width, not the channels
    def forward(self, x):
        b1 = F.relu(self.p1_1(x))
        b2 = F.relu(self.p2_2(F.relu(self.p2_1(x))))
        b3 = F.relu(self.p3_2(F.relu(self.p3_1(x))))
        b4 = F.relu(self.p4_2(self.p4_1(x)))
        return torch.cat((b1, b2, b3, b4), dim=-1)


class BatchNormInTrainingOnly(TextbookInception):  # each mode's trace is the pattern, but not the same one
    def __init__(self, *args):
        super().__init__(*args)
        self.bn = nn.BatchNorm2d(self.p1_1.out_channels)

    def forward(self, x):
        b1 = self.p1_1(x)
        if self.training:
            b1 = self.bn(b1)
        b1 = F.relu(b1)
        b2 = F.relu(self.p2_2(F.relu(self.p2_1(x))))
        b3 = F.relu(self.p3_2(F.relu(self.p3_1(x))))
        b4 = F.relu(self.p4_2(self.p4_1(x)))
        return torch.cat((b1, b2, b3, b4), dim=1)


class LastReLUMissing(TextbookInception):  # branch 1 ends at its conv: the pattern's ReLU is not there
    def forward(self, x):
        b1 = self.p1_1(x)
        b2 = F.relu(self.p2_2(F.relu(self.p2_1(x))))
        b3 = F.relu(self.p3_2(F.relu(self.p3_1(x))))
        b4 = F.relu(self.p4_2(self.p4_1(x)))
        return torch.cat((b1, b2, b3, b4), dim=1)


class SigmoidMethod(TextbookInception):  # a tensor method other than .relu() after a conv
    def forward(self, x):
        b1 = self.p1_1(x).sigmoid()
        b2 = F.relu(self.p2_2(F.relu(self.p2_1(x))))
        b3 = F.relu(self.p3_2(F.relu(self.p3_1(x))))
        b4 = F.relu(self.p4_2(self.p4_1(x)))
        return torch.cat((b1, b2, b3, b4), dim=1)


class InputConcatenated(TextbookInception):  # DenseNet-style: the block's input joins the four branches
    def forward(self, x):
        b1 = F.relu(self.p1_1(x))
        b2 = F.relu(self.p2_2(F.relu(self.p2_1(x))))
        b3 = F.relu(self.p3_2(F.relu(self.p3_1(x))))
        b4 = F.relu(self.p4_2(self.p4_1(x)))
        return torch.cat((b1, b2, b3, b4, x), dim=1)


def _with(block, **attrs):
    for name, module in attrs.items():
        setattr(block, name, module)
    return block


def _lookalikes():
    cfg = (8, 3, (4, 5), (2, 3), 3)
    tb = lambda cls=TextbookInception: cls(*cfg)  # noqa: E731
    hooked = tb()
    hooked.p1_1.register_forward_hook(lambda m, i, o: None)
    grad_pre_hooked = tb()  # scales the gradient reaching p2_2's output: a fused block would skip it
    grad_pre_hooked.p2_2.register_full_backward_pre_hook(lambda m, grad_output: (grad_output[0] * 0.5,))
    pre_hooked = tb()  # on the block itself: a fused block would not run it
    pre_hooked.register_forward_pre_hook(lambda m, args: (args[0] * 0.5,))
    group_norm, instance_norm, leaky = BNInception(*cfg), BNInception(*cfg), BNInception(*cfg)
    group_norm.a[1] = nn.GroupNorm(1, 3)
    instance_norm.a[1] = nn.InstanceNorm2d(3, affine=True)
    leaky.b[1][2] = nn.LeakyReLU(0.1)
    return {
        "avg pool in branch 4": (AvgPoolBranch(*cfg), "avg_pool2d"),
        "missing ReLU": (MissingReLU(*cfg), "not ReLU"),
        "other concat order": (OtherOrder(*cfg), "concat input 1"),
        "sigmoid": (Sigmoid(*cfg), "sigmoid"),
        "output scaled": (ExtraScale(*cfg), "not torch.cat"),
        "shared reduction": (SharedReduction(*cfg), "used elsewhere"),
        "padding reflect": (_with(tb(), p2_2=nn.Conv2d(4, 5, 3, padding=1, padding_mode="reflect")), "padding_mode"),
        "dilated conv": (_with(tb(), p2_2=nn.Conv2d(4, 5, 3, padding=2, dilation=2)), "dilation"),
        "grouped conv": (_with(tb(), p2_2=nn.Conv2d(4, 6, 3, padding=1, groups=2), p3_1=nn.Conv2d(8, 2, 1)), "groups"),
        "pool with explicit defaults": (
            _with(tb(), p4_1=nn.MaxPool2d(3, 1, 1, dilation=1, ceil_mode=True)),
            None,
        ),  # control: the same pool is fine
        "5x5 pool": (_with(tb(), p4_1=nn.MaxPool2d(5, 1, 2)), "max pool kernel 5"),
        "1x1 pool conv is 3x3": (_with(tb(), p4_2=nn.Conv2d(8, 3, 3, padding=1)), "where a 1x1 belongs"),
        "forward hook": (hooked, "hooks"),
        "backward pre-hook": (grad_pre_hooked, "hooks"),
        "branch 1 without its ReLU": (LastReLUMissing(*cfg), "p1_1) is followed by nothing, not ReLU"),
        "sigmoid method": (SigmoidMethod(*cfg), ".sigmoid(), not ReLU"),
        "branch 1 conv is 3x3": (_with(tb(), p1_1=nn.Conv2d(8, 3, 3, padding=1)), "p1_1: a 3x3 conv where a 1x1"),
        "reduction conv is 3x3": (_with(tb(), p3_1=nn.Conv2d(8, 2, 3, padding=1)), "p3_1: a 3x3 conv where a 1x1"),
        "input concatenated too": (InputConcatenated(*cfg), "torch.cat of 5 tensors"),
        "forward pre-hook on the block": (pre_hooked, "hooks"),
        "stride 2 convs": (
            _with(
                tb(),
                p1_1=nn.Conv2d(8, 3, 1, stride=2),
                p2_2=nn.Conv2d(4, 5, 3, padding=1, stride=2),
                p3_2=nn.Conv2d(2, 3, 5, padding=2, stride=2),
                p4_2=nn.Conv2d(8, 3, 1, stride=2),
            ),
            "stride (2, 2)",
        ),
        "4x4 conv padded same": (_with(tb(), p2_2=nn.Conv2d(4, 5, 4, padding="same")), "even kernel 4x4"),
        "3x5 conv": (_with(tb(), p2_2=nn.Conv2d(4, 5, (3, 5), padding=(1, 2))), "non-square kernel (3, 5)"),
        "group norm": (group_norm, "GroupNorm after the conv"),
        "instance norm": (instance_norm, "InstanceNorm2d after the conv"),
        "leaky ReLU": (leaky, "LeakyReLU (b.1.2), not ReLU"),
        "batch norm in train mode only": (BatchNormInTrainingOnly(*cfg), "something else in train mode"),
        "halved in train mode": (HalvedInTraining(*cfg), "mul where a conv belongs"),
        "input clamped in place": (ClampedInput(*cfg), "clamp_"),
        "cat without dim": (CatWithoutDim(8, 4, (4, 4), (2, 4), 4), "along dim 0"),  # equal branch widths
        "cat along dim -1": (CatLastDim(8, 4, (4, 4), (2, 4), 4), "along dim -1"),
        "1x1 convs padded": (
            _with(
                tb(),
                p1_1=nn.Conv2d(8, 3, 1, padding=1),
                p2_1=nn.Conv2d(8, 4, 1, padding=1),
                p3_1=nn.Conv2d(8, 2, 1, padding=1),
                p4_2=nn.Conv2d(8, 3, 1, padding=1),
            ),
            "with a 1x1 kernel (the pattern has padding 0)",
        ),
    }


@pytest.mark.parametrize("name", list(_lookalikes()))
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # the 4x4 case's own forward
def test_lookalikes_stay_unfused_with_outputs_unchanged(name):
    block, reason = _lookalikes()[name]
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), block)
    model = nn.Sequential(net)  # a container holding seven convs (the block's and one more): searched into
    x = torch.randn(2, 1, 6, 6)
    calibrate(model, x)
    with torch.no_grad():
        want = model(x)
    if reason is None:  # the control case fuses
        _, report = _fuse_quietly(model)
        assert isinstance(net[2], FusedForeignInception) and [p for p, _ in report.fused] == ["0.2"]
        with torch.no_grad():
            check_close(model(x), want, FP32)
        return
    with pytest.warns(UserWarning, match="left 1 lookalike"):
        _, report = fuse(model, backend="torch", report=True)
    assert net[2] is block and not report.fused
    [(path, cls, why)] = report.left_alone
    assert path == "0.2" and cls == type(block).__name__ and reason in why, why
    with torch.no_grad():
        assert torch.equal(model(x), want)


def test_fuse_warns_when_it_fuses_nothing():
    with pytest.warns(UserWarning, match="fused 0"):
        fuse(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))
    with pytest.raises(TypeError, match="expects a torch.nn.Module, got str"):
        fuse("googlenet")


def test_match_describes_the_units():
    match = match_block(TextbookInception(8, 3, (4, 5), (2, 3), 3))
    assert isinstance(match, BlockMatch)
    assert match.units == (
        ("p1_1", None),
        ("p2_1", None),
        ("p2_2", None),
        ("p3_1", None),
        ("p3_2", None),
        ("p4_2", None),
    )
    assert match.kernels == (3, 5) and not match.has_bn
    tv = torchvision.models.googlenet(aux_logits=False, init_weights=False).inception3a
    assert match_block(tv).units[0] == ("branch1.conv", "branch1.bn")


class ListInception(nn.Module):
    """A block whose four branches sit in one ModuleList (the container holds all six convs)."""

    def __init__(self, cin, c1, c2, c3, c4):
        super().__init__()
        self.branches = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(cin, c1, 1), nn.ReLU()),
                nn.Sequential(nn.Conv2d(cin, c2[0], 1), nn.ReLU(), nn.Conv2d(c2[0], c2[1], 3, padding=1), nn.ReLU()),
                nn.Sequential(nn.Conv2d(cin, c3[0], 1), nn.ReLU(), nn.Conv2d(c3[0], c3[1], 5, padding=2), nn.ReLU()),
                nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(cin, c4, 1), nn.ReLU()),
            ]
        )

    def forward(self, x):
        return torch.cat([branch(x) for branch in self.branches], 1)


def test_a_block_with_its_branches_in_one_module_list_is_fused():
    block = ListInception(9, 3, (4, 5), (2, 3), 3)
    x = torch.randn(2, 9, 5, 5)
    calibrate(block, x)
    with torch.no_grad():
        want = block(x)
    assert want.std() > 0.05
    model = nn.Sequential(nn.Identity(), block)
    _, report = _fuse_quietly(model)
    assert [p for p, _ in report.fused] == ["1"] and isinstance(model[1], FusedForeignInception)
    with torch.no_grad():
        check_close(model(x), want, FP32)


def test_fuse_keeps_every_submodules_mode():
    """A BatchNorm frozen in eval inside a training block stays frozen, fused or left alone."""
    block = BNInception(10, 4, (5, 6), (3, 4), 3)
    calibrate(block, torch.randn(4, 10, 6, 6))
    block.train()
    block.b[1][1].eval()
    lookalike = _with(BNInception(10, 4, (5, 6), (3, 4), 3), pool=nn.AvgPool2d(3, 1, 1)).train()
    lookalike.c[0][1].eval()
    model = nn.Sequential(block, nn.Conv2d(23, 10, 1), lookalike)
    before = {name: m.training for name, m in model.named_modules()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the lookalike is reported
        fuse(model, backend="torch")
    assert isinstance(model[0], FusedForeignInception) and not isinstance(model[2], FusedForeignInception)
    after = {name: m.training for name, m in model.named_modules()}
    assert after == before


def test_a_block_with_hooks_is_left_alone():
    for register in ("register_forward_hook", "register_full_backward_hook"):
        block = TextbookInception(8, 3, (4, 5), (2, 3), 3)
        getattr(block.p2_2, register)(lambda *args: None)
        reason = match_block(block)
        assert isinstance(reason, str) and "hooks" in reason, register
        with pytest.warns(UserWarning, match="hooks"):
            assert fuse(block, backend="torch") is block


def test_a_fused_foreign_block_runs_under_autocast():
    """Under autocast the block computes in the autocast dtype, as the reference's convs do."""
    block = TextbookInception(12, 5, (6, 7), (3, 4), 4)
    x = torch.randn(2, 12, 6, 5)
    calibrate(block, x)
    ref = copy.deepcopy(block)
    fused, _ = _fuse_quietly(block)
    with torch.no_grad():
        want64 = copy.deepcopy(ref).double()(x.double())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            own = ref(x)
            got = fused(x)
    assert got.dtype == own.dtype == torch.bfloat16
    check_close(got, want64, reduced_precision_bound(own, want64), "autocast bf16")


# -- forwards whose computation a trace does not show ------------------------------------------------


class StochasticDepthInception(TextbookInception):
    """Drops the whole block at random in training (Python's random module): one trace sees one draw."""

    def forward(self, x):
        if self.training and random.random() < 0.5:
            return torch.zeros(x.shape[0], 13, *x.shape[2:])
        return super().forward(x)


class FrozenInception(TextbookInception):
    @torch.no_grad()
    def forward(self, x):
        return super().forward(x)


class AutocastInception(TextbookInception):
    def forward(self, x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return super().forward(x)


class HelperNoiseInception(TextbookInception):
    def forward(self, x):
        return self._noisy(x)

    def _noisy(self, x):
        return TextbookInception.forward(self, x + 0.1 * torch.randn_like(x))


def _sometimes_halved(method):
    """A decorator as a library ships one: its wrapper draws through a name the block's code never
    spells (a closure's), so only the wrapping itself gives it away."""
    draw = random.random

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        out = method(*args, **kwargs)
        return out * 0.5 if draw() < 0.5 else out

    return wrapper


class DecoratedHelperInception(TextbookInception):
    def forward(self, x):
        return self._branches(x)

    @_sometimes_halved
    def _branches(self, x):
        return TextbookInception.forward(self, x)


class NestedDrawInception(TextbookInception):
    """Stochastic depth with its draw in a function defined inside forward."""

    def forward(self, x):
        def dropped():
            return self.training and random.random() < 0.5

        if dropped():
            return torch.zeros(x.shape[0], 13, *x.shape[2:])
        return super().forward(x)


class InheritedDrawInception(StochasticDepthInception):
    """Stochastic depth inherited: the draw is in a base class's forward, not this class's."""


class RandomlyDroppedConv(nn.Module):
    """A conv wrapper that drops its output at random in training (a submodule the trace steps into)."""

    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        if self.training and random.random() < 0.5:
            return torch.zeros(x.shape[0], self.conv.out_channels, *x.shape[2:])
        return self.conv(x)


class DroppedConvInception(TextbookInception):
    def __init__(self, *args):
        super().__init__(*args)
        self.p2_2 = RandomlyDroppedConv(self.p2_2)


def _randomly_halved(x):
    """A module-level helper (not a method) drawing a random number."""
    return x * 0.5 if random.random() < 0.5 else x


class GlobalHelperInception(TextbookInception):
    def forward(self, x):
        return _randomly_halved(super().forward(x))


bf16_autocast = functools.partial(torch.autocast, "cpu", dtype=torch.bfloat16)  # as training scripts name it


class RenamedAutocastInception(TextbookInception):
    """Autocast through a name of its own: only the with statement gives it away."""

    def forward(self, x):
        with bf16_autocast():
            return super().forward(x)


class PropertyDrawInception(TextbookInception):
    """Stochastic depth with its draw behind a property."""

    @property
    def dropped(self):
        return self.training and random.random() < 0.5

    def forward(self, x):
        if self.dropped:
            return torch.zeros(x.shape[0], 13, *x.shape[2:])
        return super().forward(x)


class _Augment:
    @staticmethod
    def maybe_halved(x):
        return x * 0.5 if random.random() < 0.5 else x


class StaticHelperInception(TextbookInception):
    """A draw in a static method of another class, reached as its attribute."""

    def forward(self, x):
        return _Augment.maybe_halved(super().forward(x))


coin = random.random  # a draw under a name of its own


class AliasDrawInception(TextbookInception):
    """Stochastic depth drawing through a global alias of random.random."""

    def forward(self, x):
        if self.training and coin() < 0.5:
            return super().forward(x) * 0
        return super().forward(x)


class ImportedDrawInception(TextbookInception):
    """A draw through a function imported from Python's random module under another name."""

    def forward(self, x):
        return super().forward(x) * (0.5 if _uniform(0, 1) < 0.5 else 1.0)


class SecretsDrawInception(TextbookInception):
    """A draw through the secrets module (whose functions' code draws through names of its own)."""

    def forward(self, x):
        return super().forward(x) * (0.5 if secrets.randbelow(2) else 1.0)


class GeneratorAttributeInception(TextbookInception):
    """A generator object kept on the module, drawn from through a method name no list holds."""

    def __init__(self, *args):
        super().__init__(*args)
        self.gen = random.Random(0)

    def forward(self, x):
        return super().forward(x) * (0.5 if self.gen.betavariate(2, 2) < 0.5 else 1.0)


class PartialDrawInception(TextbookInception):
    """A draw kept on the module as a functools.partial of a random function."""

    def __init__(self, *args):
        super().__init__(*args)
        self.draw = functools.partial(random.uniform, 0, 1)

    def forward(self, x):
        return super().forward(x) * (0.5 if self.draw() < 0.5 else 1.0)


class HeldGeneratorsInception(TextbookInception):
    """Generator objects kept in a dict on the module, one drawn from by key."""

    def __init__(self, *args):
        super().__init__(*args)
        self.rngs = {"drop": random.Random(0), "jitter": random.Random(1)}

    def forward(self, x):
        return super().forward(x) * (0.5 if self.rngs["drop"].betavariate(2, 2) < 0.5 else 1.0)


class ConfiguredDrawInception(TextbookInception):
    """A generator kept in a plain config object on the module (``self.cfg.rng``)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.cfg = types.SimpleNamespace(p=0.5, rng=random.Random(0))

    def forward(self, x):
        return super().forward(x) * (0.5 if self.cfg.rng.betavariate(2, 2) < self.cfg.p else 1.0)


class NestedConfigDrawInception(TextbookInception):
    """A generator kept in a config two plain objects deep (``self.cfg.train.rng``)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.cfg = types.SimpleNamespace(train=types.SimpleNamespace(p=0.5, rng=random.Random(0)))

    def forward(self, x):
        return super().forward(x) * (0.5 if self.cfg.train.rng.betavariate(2, 2) < self.cfg.train.p else 1.0)


class _Touchy:
    """An object whose own __getattr__ raises something other than AttributeError."""

    __slots__ = ()

    def __getattr__(self, name):
        raise RuntimeError(f"no {name} here")


class TouchyAttributeInception(TextbookInception):
    """A draw, and an attribute the check must look at without tripping over its __getattr__."""

    def __init__(self, *args):
        super().__init__(*args)
        self.touchy = _Touchy()

    def forward(self, x):
        assert self.touchy is not None
        return super().forward(x) * (0.5 if coin() < 0.5 else 1.0)


class DistributionDrawInception(TextbookInception):
    """Stochastic depth drawing from a torch.distributions distribution (its value decides the branch)."""

    def forward(self, x):
        if self.training and torch.distributions.Bernoulli(0.5).sample():
            return super().forward(x) * 0
        return super().forward(x)


class TensorDrawInception(TextbookInception):
    """A draw through one of a tensor's in-place random fills, on a tensor the trace does not follow."""

    def forward(self, x):
        return super().forward(x) * (0.5 if torch.empty(()).geometric_(0.5) > 1 else 1.0)


# A helper of another module, whose own global is the draw: the names in its code are that module's.
_user_helpers = types.ModuleType("user_helpers")
exec(
    "import random\ndraw = random.random\n\ndef maybe_halved(x):\n    return x * 0.5 if draw() < 0.5 else x\n",
    _user_helpers.__dict__,
)


class OtherModuleHelperInception(TextbookInception):
    def forward(self, x):
        return _user_helpers.maybe_halved(super().forward(x))


@pytest.mark.parametrize(
    "cls,why",
    [
        (StochasticDepthInception, "uses random"),
        (FrozenInception, "wrapped by a decorator"),
        (AutocastInception, "enters a context manager"),
        (HelperNoiseInception, "_noisy() uses randn_like"),
        (DecoratedHelperInception, "_branches() is wrapped by a decorator"),
        (NestedDrawInception, "dropped() uses random"),
        (InheritedDrawInception, "StochasticDepthInception: forward() uses random"),
        (DroppedConvInception, "RandomlyDroppedConv: forward() uses random"),
        (GlobalHelperInception, "_randomly_halved() uses random"),
        (RenamedAutocastInception, "enters a context manager"),
        (PropertyDrawInception, "dropped() uses random"),
        (StaticHelperInception, "maybe_halved() uses random"),
        (AliasDrawInception, "forward() draws through coin"),
        (ImportedDrawInception, "forward() draws through _uniform"),
        (SecretsDrawInception, "forward() draws through randbelow"),
        (GeneratorAttributeInception, "forward() draws through gen"),
        (PartialDrawInception, "forward() draws through draw"),
        (HeldGeneratorsInception, "forward() draws through rngs"),
        (ConfiguredDrawInception, "forward() draws through rng"),
        (NestedConfigDrawInception, "forward() draws through rng"),
        (TouchyAttributeInception, "forward() draws through coin"),
        (DistributionDrawInception, "forward() uses sample"),
        (TensorDrawInception, "forward() uses geometric_"),
        (OtherModuleHelperInception, "maybe_halved() draws through draw"),
    ],
)
def test_forwards_a_trace_cannot_see_are_left_alone(cls, why):
    """A trace records one run's tensor operations, in that run's grad and autocast modes, with its
    Python branches decided by that run's values: random draws, grad or autocast modes set inside the
    forward, and decorators would be lost, so such blocks stay as they are."""
    block = cls(8, 3, (4, 5), (2, 3), 3)
    reason = match_block(block)
    assert isinstance(reason, str) and why in reason, reason
    with pytest.warns(UserWarning, match="left 1 lookalike"):
        assert fuse(block, backend="torch") is block


def test_a_lookalike_beside_a_fused_block_is_warned_about():
    """A model with a block fused and a lookalike left alone: the warning names both, the lookalike
    by its path and why (not only where nothing was fused)."""
    net = nn.Sequential(TextbookInception(8, 3, (4, 5), (2, 3), 3), StochasticDepthInception(14, 3, (4, 5), (2, 3), 3))
    want = (
        r"fuse\(\): fused 1 Inception block\(s\) \(1 TextbookInception\); left 1 lookalike\(s\) alone:"
        r"\n  1 \(StochasticDepthInception\): StochasticDepthInception: forward\(\) uses random"
    )
    with pytest.warns(UserWarning, match=want):
        fused, report = fuse(net, backend="torch", report=True)
    assert isinstance(fused[0], FusedForeignInception) and type(fused[1]) is StochasticDepthInception
    assert report.fused == [("0", "TextbookInception")] and [p for p, _, _ in report.left_alone] == ["1"]


@pytest.mark.parametrize("kind", ["spectral_norm", "weight_norm"])
def test_parametrized_convs_are_computed_once_a_forward(kind):
    """A parametrized weight (torch.nn.utils.parametrizations) is computed once a forward, as the conv's
    own forward does: spectral_norm's power iteration then moves its vectors exactly as the original
    block's, in train mode step by step, and fuse() itself runs no parametrization."""
    from torch.nn.utils import parametrizations

    block = TextbookInception(8, 3, (4, 5), (2, 3), 3)
    for name in ("p1_1", "p2_2", "p4_2"):
        getattr(parametrizations, kind)(getattr(block, name))
    ref = copy.deepcopy(block)
    fused, _ = _fuse_quietly(block)
    assert isinstance(fused, FusedForeignInception)
    fused.train(), ref.train()
    for step in range(3):
        x = torch.randn(2, 8, 5, 5)
        with OpRecorder() as rec:
            got = fused(x)
        assert FUSED_BLOCK_OP in rec.ops
        want = ref(x)
        assert want.std() > 0.05, "reference activations vanished: the comparison could not fail"
        check_close(got, want, FP32, f"{kind}, train step {step}")
        if kind == "spectral_norm":
            for name in ("p1_1", "p2_2", "p4_2"):
                mine, theirs = (getattr(m, name).parametrizations.weight[0] for m in (fused, ref))
                assert torch.equal(mine._u, theirs._u), f"{name}: power iteration out of step"
    fused.eval(), ref.eval()
    with torch.no_grad():
        check_close(fused(x), ref(x), FP32, f"{kind}, eval")
