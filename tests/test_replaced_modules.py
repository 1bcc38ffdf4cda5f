"""A module put in place of one of a fused model's modules after it was built or fuse()d (a dilated
conv, a LoRA-style wrapper, an avg pool for the max pool, Identity for a BatchNorm, an fc head of
another shape): the stage that holds it runs its own modules and computes what the reference with
the same module computes; the stages around it stay fused; and putting a module that computes the
pattern back makes the stage fused again (a FusedInception at once, a fused foreign block at the
next fuse())."""

import copy
import types

import pytest
import torch
from model_cases import CL, FP32, FUSED_BLOCK_OP, OpRecorder, net_tolerance
from test_recognize import TextbookInception, _fuse_quietly
from torch import nn

from inception_fast import FusedGoogLeNet, FusedInception, GoogLeNet, Inception, available_backends, fuse, recognize
from inception_fast.modules import FusedForeignInception
from inception_fast.reference import BLOCK_CONFIGS
from inception_fast.testing import calibrate, check_close, reduced_precision_bound, rel_error


class LoRAConv(nn.Module):
    """A conv plus a low-rank update, exposing the conv's weight the way adapter libraries do."""

    def __init__(self, conv: nn.Conv2d, rank: int = 2):
        super().__init__()
        self.conv = conv
        self.down = nn.Conv2d(conv.in_channels, rank, 1, bias=False)
        self.up = nn.Conv2d(rank, conv.out_channels, 1, bias=False)
        nn.init.normal_(self.up.weight, std=0.5)

    @property
    def weight(self):
        return self.conv.weight

    def forward(self, x):
        return self.conv(x) + self.up(self.down(x))


class StandardisedConv(nn.Conv2d):
    """Weight standardisation: an nn.Conv2d whose forward normalises its weight first."""

    def forward(self, x):
        w = self.weight
        w = (w - w.mean((1, 2, 3), keepdim=True)) / (w.std((1, 2, 3), keepdim=True) + 1e-5)
        return self._conv_forward(x, w, self.bias)


class HalvedSequential(nn.Sequential):
    """A Sequential subclass with a forward of its own: the same two units, half the result."""

    def forward(self, x):
        return super().forward(x) * 0.5


def _half_forward(self, t):
    return type(self).forward(self, t) * 0.5


def _scaled(module):
    """A forward set on an instance in place of its class's (a wrapper, as checkpointing tools set);
    bound to the module, so a deep copy calls its own."""
    return types.MethodType(_half_forward, module)


def _seeded(make):
    torch.manual_seed(11)
    return make()


EDITS = {
    # the stem (FusedGoogLeNet folds conv1-conv3 and runs conv2 as 1x1/pad 0, conv3 as 3x3/pad 1)
    "conv2 as a 3x3": lambda m: setattr(m.conv2, "conv", _seeded(lambda: nn.Conv2d(64, 64, 3, padding=1, bias=False))),
    "conv3 dilated": lambda m: setattr(
        m.conv3, "conv", _seeded(lambda: nn.Conv2d(64, 192, 3, padding=2, dilation=2, bias=False))
    ),
    "maxpool1 as an avg pool": lambda m: setattr(m, "maxpool1", nn.AvgPool2d(3, 2, ceil_mode=True)),
    "conv2 grouped": lambda m: setattr(m.conv2, "conv", _seeded(lambda: nn.Conv2d(64, 64, 1, groups=2, bias=False))),
    "conv1 as a bare conv + ReLU": lambda m: setattr(
        m, "conv1", _seeded(lambda: nn.Sequential(nn.Conv2d(3, 64, 7, stride=2, padding=3), nn.ReLU()))
    ),
    # a block
    "block branch as a bare conv + ReLU": lambda m: setattr(
        m.inception3a, "branch1", _seeded(lambda: nn.Sequential(nn.Conv2d(192, 64, 1), nn.ReLU()))
    ),
    "block replaced by an unfused one": lambda m: setattr(
        m, "inception4b", _seeded(lambda: Inception(*BLOCK_CONFIGS["inception4b"]))
    ),
    "block conv dilated": lambda m: setattr(
        m.inception3b.branch2[1], "conv", _seeded(lambda: nn.Conv2d(128, 192, 3, padding=2, dilation=2, bias=False))
    ),
    "block conv wrapped (LoRA)": lambda m: setattr(
        m.inception4a.branch1, "conv", _seeded(lambda: LoRAConv(copy.deepcopy(m.inception4a.branch1.conv)))
    ),
    "block conv wrapped without a weight": lambda m: setattr(
        m.inception4d.branch1, "conv", nn.Sequential(copy.deepcopy(m.inception4d.branch1.conv), nn.Dropout(0.0))
    ),
    "block conv standardised": lambda m: setattr(
        m.inception4b.branch3[0], "conv", _seeded(lambda: StandardisedConv(512, 24, 1, bias=False))
    ),
    "block BatchNorm as Identity": lambda m: setattr(m.inception4c.branch2[0], "bn", nn.Identity()),
    "block pool as an avg pool": lambda m: m.inception5a.branch4.__setitem__(0, nn.AvgPool2d(3, 1, 1)),
    "block branch as a Sequential subclass": lambda m: setattr(
        m.inception4a, "branch2", HalvedSequential(*m.inception4a.branch2)
    ),
    "block branch with a module appended": lambda m: m.inception5b.branch2.append(nn.Hardtanh(0.0, 0.5)),
    # a module's settings changed in place (the same objects), and a forward set on an instance
    "conv1 stride 1, in place": lambda m: setattr(m.conv1.conv, "stride", (1, 1)),
    "conv3 circular padding, in place": lambda m: setattr(m.conv3.conv, "padding_mode", "circular"),
    "conv1 dilated, in place": lambda m: (
        setattr(m.conv1.conv, "dilation", (2, 2)),
        setattr(m.conv1.conv, "padding", (6, 6)),
    ),
    "conv2 padded, in place": lambda m: setattr(m.conv2.conv, "padding", (1, 1)),
    "conv3 stride 2, in place": lambda m: setattr(m.conv3.conv, "stride", (2, 2)),
    "conv2 forward set on the instance": lambda m: setattr(m.conv2, "forward", _scaled(m.conv2)),
    "forward of a block set on the instance": lambda m: setattr(m.inception4c, "forward", _scaled(m.inception4c)),
    "block conv dilated, in place": lambda m: (
        setattr(m.inception3b.branch2[1].conv, "dilation", (2, 2)),
        setattr(m.inception3b.branch2[1].conv, "padding", (2, 2)),
    ),
    "block pool 5x5, in place": lambda m: (
        setattr(m.inception5a.branch4[0], "kernel_size", 5),
        setattr(m.inception5a.branch4[0], "padding", 2),
    ),
    "block conv's forward set on the instance": lambda m: setattr(
        m.inception4e.branch1.conv, "forward", _scaled(m.inception4e.branch1.conv)
    ),
    # the head
    "fc as a Sequential": lambda m: setattr(
        m, "fc", _seeded(lambda: nn.Sequential(nn.Dropout(0.2), nn.Linear(1024, 7)))
    ),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_a_module_replaced_in_a_fused_network_is_computed(edit):
    """The network's stages are built, run once, then one module is replaced in the fused model and
    in the reference alike: the fused model gives the reference's logits, and every block not
    touched still runs the fused op."""
    ref = GoogLeNet(init_weights=True)
    calibrate(ref, torch.randn(4, 3, 32, 32), seed=3)
    fused = FusedGoogLeNet.from_torchvision(ref, backend="torch").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fused(x)  # built and run as it came
    EDITS[edit](ref)
    EDITS[edit](fused)
    if edit != "fc as a Sequential":
        calibrate(ref, torch.randn(4, 3, 32, 32), seed=4)  # statistics for the new modules
        fused.load_state_dict(ref.state_dict())
    ref.eval(), fused.eval()
    ref64, tol = net_tolerance(ref, x)
    with torch.no_grad(), OpRecorder() as rec:
        got = fused(x.contiguous(memory_format=CL))
    check_close(got, ref64, tol, edit)
    touched = edit.startswith("block")
    assert rec.ops.count(FUSED_BLOCK_OP) == 9 - touched, "the blocks not touched should stay fused"


# Edits made before conversion that leave a block to its own modules (an unfused block put in
# the original is just what from_torchvision fuses).
_BLOCK_EDITS = {edit for edit in EDITS if edit.startswith("block") or "of a block" in edit} - {
    "block replaced by an unfused one"
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_from_torchvision_copies_modules_changed_before_conversion(edit):
    """The same edits made to the model before FusedGoogLeNet.from_torchvision: the copy takes each
    module as the original has it (its class and settings: a stride, padding mode, dilation, a
    Sequential, a forward set on the instance), not the standard one the constructor builds, so it
    gives the original's logits; a stage holding a changed module runs its modules, and every block
    not touched runs the fused op."""
    ref = GoogLeNet(init_weights=True)
    EDITS[edit](ref)
    calibrate(ref, torch.randn(4, 3, 32, 32), seed=3)
    fused = FusedGoogLeNet.from_torchvision(ref, backend="torch").eval()
    assert list(fused.state_dict()) == list(ref.state_dict())
    x = torch.randn(2, 3, 32, 32)
    ref64, tol = net_tolerance(ref, x)
    with torch.no_grad(), OpRecorder() as rec:
        got = fused(x.contiguous(memory_format=CL))
    check_close(got, ref64, tol, edit)
    assert rec.ops.count(FUSED_BLOCK_OP) == 9 - (edit in _BLOCK_EDITS), "the blocks not touched should stay fused"
    for module in fused.modules():  # a forward set on an instance runs the copy's own weights
        assert "forward" not in vars(module) or module.forward.__self__ is module, edit


def test_from_torchvision_copies_torchvision_modules_changed_before_conversion():
    """torchvision's googlenet with the edits users make before converting (a small-image stem:
    conv1 3x3 stride 1; a conv with a bias; a 5x5 branch 3; blocks of other channels, with
    the stage before and the head to match): the copy computes the original's logits; where
    the fused kernels take the changed modules they still run, and the stem too."""
    import torchvision

    torch.manual_seed(7)
    tv = torchvision.models.googlenet(aux_logits=False, init_weights=True, num_classes=10)
    tv.conv1.conv = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    tv.inception4a.branch1.conv = nn.Conv2d(480, 192, 1, bias=True)
    tv.inception3b.branch3[1].conv = nn.Conv2d(32, 96, 5, padding=2, bias=False)
    block, unit = type(tv.inception5b), type(tv.conv1)
    tv.inception5b, tv.fc = block(832, 384, 192, 384, 48, 128, 256, conv_block=unit), nn.Linear(1152, 10)
    tv.conv3 = unit(64, 256, kernel_size=3, padding=1)  # 3a takes 256 channels
    tv.inception3a = block(256, *BLOCK_CONFIGS["inception3a"][1:], conv_block=unit)
    tv.inception3a.branch3[1].conv = nn.Conv2d(16, 32, 5, padding=2, bias=False)  # other channels and a 5x5
    calibrate(tv, torch.randn(4, 3, 32, 32), seed=8)
    fused = FusedGoogLeNet.from_torchvision(tv, backend="torch").eval()
    assert fused.inception3a.in_channels == 256 and fused.inception3b.branch3[1].conv.kernel_size == (5, 5)
    x = torch.randn(2, 3, 32, 32)
    ref64, tol = net_tolerance(tv, x)
    with torch.no_grad(), OpRecorder() as rec:
        check_close(fused(x.contiguous(memory_format=CL)), ref64, tol, "torchvision, edited")
    assert rec.ops.count(FUSED_BLOCK_OP) == 9 and fused._stem_structure.ok(fused)


@pytest.mark.parametrize("variant", ["paper", "d2l"])
def test_from_torchvision_copies_the_local_response_norms_and_pools(variant):
    """The paper variant's LocalResponseNorms and the d2l variant's pools with other settings: the
    constructor builds the variant's own, the copy takes the original's."""
    ref = GoogLeNet(variant=variant, init_weights=True)
    if variant == "paper":
        ref.lrn1 = nn.LocalResponseNorm(3, alpha=1e-2, beta=0.75, k=2.0)
        ref.lrn2 = None
    else:
        ref.maxpool3 = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
    size = 32 if variant == "paper" else 40
    calibrate(ref, torch.randn(4, ref.in_channels, size, size), seed=9)
    fused = FusedGoogLeNet.from_torchvision(ref, backend="torch").eval()
    x = torch.randn(2, ref.in_channels, size, size)
    ref64, tol = net_tolerance(ref, x)
    with torch.no_grad():
        check_close(fused(x), ref64, tol, variant)


def test_fused_inception_from_torchvision_runs_a_changed_block_as_it_is():
    """FusedInception.from_torchvision of a block whose conv pads by reflection (a setting the
    constructor does not take): the copy has it, finds it is not the fused pattern, and computes
    the block's own forward."""
    block = Inception(*BLOCK_CONFIGS["inception3a"])
    block.branch2[1].conv.padding_mode = "reflect"
    x = torch.randn(2, 192, 8, 8)
    calibrate(block, x, seed=10)
    fused = FusedInception.from_torchvision(block, backend="torch").eval()
    assert not fused.structure_ok()
    with torch.no_grad():
        check_close(fused(x), block(x), FP32, "reflect padding")


def test_copies_take_modules_holding_graph_tensors_and_references_without_their_hooks():
    """A conv holding a feature map a hook kept (a tensor with autograd history, which a deep copy
    refuses) and every conv a reference back to the model (which a deep copy would copy whole, once
    per conv): from_torchvision and fuse() take both, the copy's parameters and buffers are its own
    (fuse()'s the original's), and the original's hooks of every kind stay with it."""
    import torchvision

    torch.manual_seed(12)
    tv = torchvision.models.googlenet(aux_logits=False, init_weights=True).eval()
    calibrate(tv, torch.randn(4, 3, 32, 32), seed=13)
    x = torch.randn(2, 3, 32, 32)
    ref64, tol = net_tolerance(tv, x)  # (before the model holds what a deep copy refuses)
    keep = tv.inception4e.branch1.conv.register_forward_hook(lambda mod, inp, out: setattr(mod, "feat", out))
    tv(torch.randn(1, 3, 32, 32))
    keep.remove()
    assert tv.inception4e.branch1.conv.feat.grad_fn is not None
    for conv in tv.modules():
        if isinstance(conv, nn.Conv2d):
            object.__setattr__(conv, "root", tv)
    fired = []
    conv = tv.inception3a.branch1.conv
    conv.register_state_dict_post_hook(lambda *args: fired.append("state_dict"))
    conv.register_forward_hook(lambda *args: fired.append("forward"))
    fused = FusedGoogLeNet.from_torchvision(tv, backend="torch").eval()
    copied = fused.inception3a.branch1.conv
    assert copied.root is tv and copied.weight is not conv.weight and torch.equal(copied.weight, conv.weight)
    bn, copied_bn = tv.inception3a.branch1.bn, fused.inception3a.branch1.bn
    assert copied_bn.running_var is not bn.running_var and torch.equal(copied_bn.running_var, bn.running_var)
    fired.clear()
    fused.state_dict()
    with torch.no_grad(), OpRecorder() as rec:
        check_close(fused(x), ref64, tol, "copied")
    assert fired == [] and rec.ops.count(FUSED_BLOCK_OP) == 9
    held = tv.inception4e.branch1.conv.weight
    with pytest.warns(UserWarning, match="inception3a .* has hooks"):  # (the block with the hooks is left alone)
        taken = fuse(tv)
    assert isinstance(taken.inception4e, FusedInception) and taken.inception4e.branch1.conv.weight is held


def test_from_torchvision_refuses_a_forward_set_on_the_instance():
    """A block (or network) whose forward, or torchvision's _forward that it calls, is set on the
    instance computes what its class does not: from_torchvision refuses it by name (fuse() keeps it)."""
    import torchvision
    from torchvision.models.googlenet import Inception as TVInception

    block = TVInception(*BLOCK_CONFIGS["inception3a"])
    block._forward = types.MethodType(lambda self, x: [self.branch1(x)], block)
    with pytest.raises(TypeError, match="cannot copy this Inception: its _forward is set on the instance"):
        FusedInception.from_torchvision(block)
    tv = torchvision.models.googlenet(aux_logits=False, init_weights=True)
    tv.forward = _scaled(tv)
    with pytest.raises(TypeError, match="cannot copy this GoogLeNet: its forward is set on the instance"):
        FusedGoogLeNet.from_torchvision(tv)


def _torchvision_subclasses() -> dict:
    """Subclasses of torchvision's classes, each redefining one method its forward calls."""
    import torchvision
    from torchvision.models.googlenet import Inception as TVInception

    class DoubledLogits(torchvision.models.GoogLeNet):
        def _forward(self, x):
            return super()._forward(x) * 2

    class WeightedBranch(TVInception):
        def _forward(self, x):
            outputs = super()._forward(x)
            return [outputs[0] * 3, *outputs[1:]]

    class SameBranches(TVInception):  # computes what its class does: fuse() fuses it as a foreign block
        def _forward(self, x):
            return [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]

    class GreyInput(GoogLeNet):  # ours: a method its forward calls
        def _transform_input(self, x):
            return x.mean(1, keepdim=True).expand_as(x)

    return dict(network=DoubledLogits, block=WeightedBranch, same=SameBranches, ours=GreyInput)


def test_from_torchvision_refuses_a_subclass_computing_otherwise():
    """A subclass of a network or block class that defines again a method of it (torchvision's
    _forward, our _transform_input) may compute what its class does not: from_torchvision refuses
    it by name instead of copying it as its class.  fuse() fuses such a block as a foreign one
    (traced: the pattern only where it computes it); a subclass adding only an __init__ is copied."""
    classes = _torchvision_subclasses()
    with pytest.raises(TypeError, match="cannot copy this DoubledLogits: its class .*DoubledLogits defines _forward"):
        FusedGoogLeNet.from_torchvision(classes["network"](aux_logits=False, init_weights=True))
    with pytest.raises(TypeError, match="cannot copy this GreyInput: its class .*GreyInput defines _transform_input"):
        FusedGoogLeNet.from_torchvision(classes["ours"](transform_input=True))
    x = torch.randn(2, 192, 6, 6)
    for name in ("block", "same"):
        block = classes[name](*BLOCK_CONFIGS["inception3a"]).eval()
        calibrate(block, x, seed=4)
        with pytest.raises(TypeError, match=f"its class .*{classes[name].__name__} defines _forward over Inception's"):
            FusedInception.from_torchvision(block)
        with torch.no_grad():
            expected = block(x)
            if name == "same":
                fused, _ = _fuse_quietly(block)
                assert type(fused) is FusedForeignInception
            else:
                with pytest.warns(UserWarning, match="left 1 lookalike"):
                    fused = fuse(block)
                assert fused is block
            check_close(fused(x), expected, FP32, what=f"fuse() of {classes[name].__name__}")

    class Configured(GoogLeNet):  # only a constructor of its own
        def __init__(self):
            super().__init__(init_weights=True)
            self.note = "mine"

    ref, image = Configured(), torch.randn(2, 3, 48, 48)
    calibrate(ref, image, seed=5)
    fused = FusedGoogLeNet.from_torchvision(ref).eval()
    ref64, tol = net_tolerance(ref.eval(), image)
    with torch.no_grad():
        check_close(fused(image), ref64, tol, what="a copied subclass")


class HalvedMaxPool(nn.MaxPool2d):
    """A max pool subclass with a forward of its own: the same settings, another result."""

    def forward(self, x):
        return super().forward(x) * 0.5


@pytest.mark.parametrize("backend", [b for b in ("onednn", "cpp") if b in available_backends("cpu")])
def test_a_max_pool_subclass_put_in_after_its_shape_was_measured_runs(backend):
    """The CPU backends measure each pool between stages by its settings and input shape: a MaxPool2d
    subclass with its own forward put in after a first forward (same settings, same shape, a choice
    on record) runs its own forward, not the measured kernel."""
    ref = GoogLeNet(init_weights=True)
    calibrate(ref, torch.randn(4, 3, 32, 32), seed=3)
    fused = FusedGoogLeNet.from_torchvision(ref, backend=backend).eval()
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=CL)
    with torch.no_grad():
        before = fused(x)  # measures maxpool3's input shape
    for model in (ref, fused):
        model.maxpool3 = HalvedMaxPool(3, 2, ceil_mode=True)
    ref64, tol = net_tolerance(ref.eval(), x)
    with torch.no_grad():
        got = fused(x)
    assert rel_error(before, ref64) > 10 * tol, "the pool put in should change the logits"
    check_close(got, ref64, tol, f"{backend}: a MaxPool2d subclass at maxpool3")


def test_putting_a_plain_module_back_fuses_the_block_again():
    ref = GoogLeNet(init_weights=True)
    calibrate(ref, torch.randn(4, 3, 32, 32), seed=5)
    fused = FusedGoogLeNet.from_torchvision(ref, backend="torch").eval()
    x = torch.randn(2, 3, 32, 32)
    original = fused.inception3a.branch1.conv
    fused.inception3a.branch1.conv = LoRAConv(copy.deepcopy(original))
    with torch.no_grad(), OpRecorder() as rec:
        fused(x)
    assert rec.ops.count(FUSED_BLOCK_OP) == 8
    fused.inception3a.branch1.conv = original
    with torch.no_grad(), OpRecorder() as rec:
        got = fused(x)
    assert rec.ops.count(FUSED_BLOCK_OP) == 9
    ref64, tol = net_tolerance(ref, x)
    check_close(got, ref64, tol, "the original conv back")


def test_structure_is_checked_again_only_when_modules_change(monkeypatch):
    """Forwards with the same modules reuse the answer; a replaced module (put in by setattr,
    Sequential.insert or a direct _modules write) is checked once, in the forward after it, by a
    predicate (no trace inside a forward)."""
    from inception_fast import modules

    ref = Inception(16, 8, 6, 8, 4, 6, 5)
    calibrate(ref, torch.randn(4, 16, 5, 5))
    fused = fuse(copy.deepcopy(ref).eval(), backend="torch")
    x = torch.randn(2, 16, 5, 5)
    with torch.no_grad():
        assert ref.eval()(x).std() > 0.1, "reference activations vanished: the comparisons could not fail"
    calls = []
    real = modules._inception_layout_ok
    monkeypatch.setattr(modules, "_inception_layout_ok", lambda m: calls.append(1) or real(m))
    monkeypatch.setattr(recognize, "match_structure", lambda m: pytest.fail("traced inside a forward"))
    with torch.no_grad():
        fused(x)
        GoogLeNet(init_weights=False)  # other modules built elsewhere change nothing
        fused(x)
        assert not calls
        fused.branch4[0] = nn.MaxPool2d(3, 1, 1)  # another object, the same computation
        check_close(fused(x), ref.eval()(x), FP32, "an equal pool")
        fused(x)
        assert len(calls) == 1
        fused.branch2._modules["1"] = copy.deepcopy(fused.branch2[1])
        fused.branch2[1]._modules["conv"] = nn.Conv2d(6, 8, 3, padding=2, dilation=2)
        ref.branch2[1].conv = copy.deepcopy(fused.branch2[1].conv)
        with OpRecorder() as rec:
            check_close(fused(x), ref(x), FP32, "a dilated conv written into _modules")
        assert FUSED_BLOCK_OP not in rec.ops
        fused.branch3.insert(1, nn.Hardtanh(0.0, 0.5))
        ref.branch3.insert(1, nn.Hardtanh(0.0, 0.5))
        check_close(fused(x), ref(x), FP32, "a module inserted")


def test_a_fused_foreign_block_is_fused_again_by_fuse():
    """A fused foreign block whose module was replaced runs its original forward; once a module that
    computes the pattern is back, fuse(model) fuses it again (a trace, outside any forward)."""
    model = nn.Sequential(TextbookInception(8, 3, (4, 5), (2, 3), 3))
    _fuse_quietly(model)
    block, x = model[0], torch.randn(2, 8, 6, 6)
    original = block.p2_2
    block.p2_2 = nn.Conv2d(4, 5, 3, padding=2, dilation=2)
    with torch.no_grad(), OpRecorder() as rec:
        model(x)
    assert FUSED_BLOCK_OP not in rec.ops
    _, report = fuse(model, backend="torch", report=True)
    assert not report.fused, "a dilated conv still does not compute the pattern"
    block.p2_2 = original
    _, report = _fuse_quietly(model)
    assert report.fused == [("0", f"{TextbookInception.__module__}.{TextbookInception.__qualname__}")]
    with torch.no_grad(), OpRecorder() as rec:
        model(x)
    assert FUSED_BLOCK_OP in rec.ops


def test_replaced_modules_under_torch_compile():
    """torch.compile (fullgraph): modules replaced before compiling and between calls are computed
    (the walk is traced; Dynamo's guards on module identity recompile), and modules built elsewhere
    cause no recompile."""
    torch._dynamo.reset()
    ref = Inception(16, 8, 6, 8, 4, 6, 5)
    calibrate(ref, torch.randn(4, 16, 5, 5))
    fused = fuse(copy.deepcopy(ref).eval(), backend="torch")
    ref.eval()
    x = torch.randn(2, 16, 5, 5)
    with torch.no_grad():
        assert ref(x).std() > 0.1, "reference activations vanished: the comparisons could not fail"
    for module in (ref, fused):
        module.branch4[0] = nn.AvgPool2d(3, 1, 1)
    compiled = torch.compile(fused, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        check_close(compiled(x), ref(x), FP32, "replaced before compiling")
        for _ in range(8):
            nn.Sequential(nn.ReLU())
        check_close(compiled(x), ref(x), FP32, "after unrelated modules")
        for module in (ref, fused):
            module.branch4[0] = nn.MaxPool2d(3, 1, 1)
            module.branch2[1].conv = _seeded(lambda: nn.Conv2d(6, 8, 3, padding=2, dilation=2))
        check_close(compiled(x), ref(x), FP32, "replaced between calls")


@pytest.mark.parametrize("edit", ["dilated conv", "standardised conv", "avg pool", "GroupNorm"])
def test_a_module_replaced_in_a_fused_foreign_block_is_computed(edit):
    """fuse()d blocks of another class: the block's own forward runs with the new module."""
    block = TextbookInception(8, 3, (4, 5), (2, 3), 3)
    x = torch.randn(2, 8, 6, 6)
    fused, _ = _fuse_quietly(copy.deepcopy(block))
    assert isinstance(fused, FusedForeignInception)
    torch.manual_seed(2)
    new = {
        "dilated conv": ("p2_2", lambda: nn.Conv2d(4, 5, 3, padding=2, dilation=2)),
        "standardised conv": ("p3_1", lambda: StandardisedConv(8, 2, 1)),
        "avg pool": ("p4_1", lambda: nn.AvgPool2d(3, 1, 1)),
        "GroupNorm": ("p1_1", lambda: nn.Sequential(nn.Conv2d(8, 3, 1), nn.GroupNorm(1, 3))),
    }[edit]
    module = new[1]()
    setattr(block, new[0], module)
    setattr(fused, new[0], copy.deepcopy(module))
    with torch.no_grad():
        want = block(x)
        assert want.std() > 0.05
        with OpRecorder() as rec:
            got = fused(x)
    assert FUSED_BLOCK_OP not in rec.ops
    check_close(got, want, FP32, edit)


def test_a_batchnorm_serving_two_units_is_left_alone():
    class SharedBN(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b1, self.b2 = nn.Conv2d(8, 4, 1), nn.Conv2d(8, 4, 1), nn.Conv2d(4, 4, 3, padding=1)
            self.c1, self.c2, self.d = nn.Conv2d(8, 2, 1), nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(8, 3, 1)
            self.bn = nn.BatchNorm2d(4)  # after branch 1's 1x1 and branch 2's 3x3

        def forward(self, x):
            relu = torch.relu
            return torch.cat(
                [
                    relu(self.bn(self.a(x))),
                    relu(self.bn(self.b2(relu(self.b1(x))))),
                    relu(self.c2(relu(self.c1(x)))),
                    relu(self.d(nn.functional.max_pool2d(x, 3, 1, 1))),
                ],
                1,
            )

    assert "serves two of its units" in recognize.match_block(SharedBN())


def test_frozen_batchnorm_blocks_fuse_and_match():
    """torchvision's FrozenBatchNorm2d (detection backbones) folds like a BatchNorm in eval mode, and
    in train mode too (it never uses batch statistics)."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    ref = Inception(16, 8, 6, 8, 4, 6, 5)
    calibrate(ref, torch.randn(4, 16, 5, 5))
    for parent in [m for m in ref.modules() if isinstance(m, nn.Module)]:
        bn = parent._modules.get("bn")
        if isinstance(bn, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(bn.num_features, eps=bn.eps)
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, name).copy_(getattr(bn, name).detach())
            parent.bn = frozen
    fused = fuse(copy.deepcopy(ref), backend="torch")
    assert isinstance(fused, nn.Module) and fused is not ref
    x = torch.randn(2, 16, 5, 5)
    with torch.no_grad():
        assert ref.eval()(x).std() > 0.1, "reference activations vanished: the comparison could not fail"
    for mode in (False, True):
        ref.train(mode), fused.train(mode)
        with OpRecorder() as rec:
            got = fused(x)
        assert FUSED_BLOCK_OP in rec.ops, f"train={mode}: the fused op should run"
        check_close(got, ref(x), FP32, f"FrozenBatchNorm2d, train={mode}")


def test_the_head_runs_any_fc_where_triton_may_compete():
    """stages.head with the Triton head allowed (a GPU model): an fc that is not a Linear runs as it
    is, never read as one (a Sequential raised AttributeError), and a Linear subclass with a forward
    of its own is not the standard head."""
    from inception_fast import stages

    class LoRALinear(nn.Linear):
        def forward(self, x):
            return super().forward(x) + 1.0

    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(8, 3))
    x = torch.randn(2, 8, 3, 3, requires_grad=True)
    got = stages.head(x, nn.AdaptiveAvgPool2d(1), nn.Identity(), module, triton_allowed=True)
    check_close(got, module(x.mean((2, 3))), FP32, "a Sequential fc")
    assert not stages.standard_head(nn.AdaptiveAvgPool2d(1), nn.Identity(), LoRALinear(8, 3))

    class ScaledPool(nn.AdaptiveAvgPool2d):
        def forward(self, x):
            return super().forward(x) * 2.0

    class NoisyDropout(nn.Dropout):
        def forward(self, x):
            return x + 1.0

    fc = nn.Linear(8, 3)
    assert not stages.standard_head(ScaledPool(1), nn.Identity(), fc)
    assert not stages.standard_head(nn.AdaptiveAvgPool2d(1), NoisyDropout(0.2).eval(), fc)
    assert stages.pool_params(HalvedMaxPool(3, 2)) is None and stages.pool_params(nn.MaxPool2d(3, 2)) is not None


HEADS = {
    "fc as a Sequential": lambda m: setattr(m, "fc", nn.Sequential(nn.Dropout(0.5), nn.Linear(1024, 10))),
    "fc without a bias": lambda m: setattr(m, "fc", nn.Linear(1024, 10, bias=False)),
    "fc as Identity (features)": lambda m: setattr(m, "fc", nn.Identity()),
    "dropout as Identity": lambda m: setattr(m, "dropout", nn.Identity()),
    "global max pool": lambda m: setattr(m, "avgpool", nn.AdaptiveMaxPool2d(1)),
    "a 2x2 pool and a wider fc": lambda m: (
        setattr(m, "avgpool", nn.AdaptiveAvgPool2d((2, 2))),
        setattr(m, "fc", nn.Linear(4096, 10)),
    ),
}


@pytest.mark.parametrize("edit", list(HEADS))
def test_from_torchvision_takes_a_head_replaced_for_fine_tuning(edit):
    """A torchvision googlenet whose head was replaced before conversion (the usual fine-tuning
    edit): from_torchvision copies the head as it is, the state_dict keys stay torchvision's, and
    the logits (or features) are the reference's."""
    import torchvision

    torch.manual_seed(5)
    tv = torchvision.models.googlenet(aux_logits=False, init_weights=True)
    HEADS[edit](tv)
    calibrate(tv, torch.randn(4, 3, 32, 32), seed=6)
    fused = FusedGoogLeNet.from_torchvision(tv).eval()
    assert list(fused.state_dict()) == list(tv.state_dict())
    assert all(type(getattr(fused, n)) is type(getattr(tv, n)) for n in ("avgpool", "dropout", "fc"))
    x = torch.randn(2, 3, 32, 32)
    ref64, tol = net_tolerance(tv, x)
    with torch.no_grad():
        check_close(fused(x), ref64, tol, edit)


def test_a_grayscale_conv1_put_in_later_takes_one_channel():
    ref = GoogLeNet(init_weights=True)
    fused = FusedGoogLeNet.from_torchvision(ref, backend="torch")
    for model in (ref, fused):
        torch.manual_seed(1)
        model.conv1.conv = nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)
    calibrate(ref, torch.randn(4, 1, 32, 32), seed=2)
    fused.load_state_dict(ref.state_dict())
    ref.eval(), fused.eval()
    x = torch.randn(2, 1, 32, 32)
    ref64, tol = net_tolerance(ref, x)
    with torch.no_grad():
        check_close(fused(x), ref64, tol, "grayscale")
    with pytest.raises(ValueError, match="expects 1 input channels, got 3"):
        fused(torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize("edit", ["conv1 as a bare conv + ReLU", "block branch as a bare conv + ReLU"])
def test_a_replaced_module_trains_as_the_reference(edit):
    """Train mode with a stage running its own modules: the same outputs and running statistics."""
    ref = GoogLeNet(init_weights=True, aux_logits=False)
    calibrate(ref, torch.randn(4, 3, 32, 32), seed=6)
    fused = FusedGoogLeNet.from_torchvision(ref, backend="torch")
    EDITS[edit](ref)
    EDITS[edit](fused)
    ref.train(), fused.train()
    x = torch.randn(3, 3, 32, 32)
    ref64 = copy.deepcopy(ref).double()
    outs = []
    for model, xin in ((fused, x), (ref, x), (ref64, x.double())):
        torch.manual_seed(7)  # the head's dropout draws alike
        outs.append(model(xin))
    got, want, want64 = outs
    assert want.std() > 0.05
    check_close(got, want64, reduced_precision_bound(want, want64), f"{edit}, train")
    for (name, want), got in zip(ref.named_buffers(), fused.buffers()):
        if want.is_floating_point():
            check_close(got, want, FP32, f"{edit}: {name}")


def test_a_data_parallel_replica_takes_the_original_answer(monkeypatch):
    """nn.DataParallel's replicas (a shallow copy per step, then copies of every child) answer as the
    block they copy, without checking the copies (runs on CPU: replicate() itself needs GPUs)."""
    from inception_fast import modules

    ref = Inception(16, 8, 6, 8, 4, 6, 5)
    calibrate(ref, torch.randn(4, 16, 5, 5))
    fused = fuse(copy.deepcopy(ref).eval(), backend="torch")
    replica = fused._replicate_for_data_parallel()
    for name, child in fused._modules.items():
        replica._modules[name] = copy.deepcopy(child)
    monkeypatch.setattr(modules, "_inception_layout_ok", lambda m: pytest.fail("a replica was checked"))
    assert replica.structure_ok() and fused.structure_ok()
    assert replica.__dict__["_structure"] is not fused.__dict__["_structure"]


@pytest.mark.parametrize("backend", [b for b in ("onednn", "torch") if b in available_backends("cpu")])
def test_settings_changed_in_place_repack_the_stem(backend):
    """oneDNN's prepacked conv1 holds its stride and padding: a change of them on the same conv
    object (stride 1 for small images) drops the stem's packs and prepacks anew."""
    ref = GoogLeNet(init_weights=True)
    calibrate(ref, torch.randn(4, 3, 32, 32), seed=3)
    fused = FusedGoogLeNet.from_torchvision(ref, backend=backend).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fused(x)  # packs (and prepacks) the stem at stride 2
    for model in (ref, fused):
        model.conv1.conv.stride = (1, 1)
        model.conv1.conv.padding = (2, 2)
    ref64, tol = net_tolerance(ref, x)
    with torch.no_grad():
        check_close(fused(x), ref64, tol, "conv1 at stride 1, padding 2")


def test_a_block_pickled_before_settings_were_kept_keeps_its_answer(tmp_path):
    """A structure check pickled before it kept the modules' settings (and dropped packs on a change)
    is restored with the answer it held: a block whose modules no longer compute the pattern stays on
    its own modules after torch.load."""
    ref = Inception(16, 8, 6, 8, 4, 6, 5)
    calibrate(ref, torch.randn(4, 16, 5, 5))
    fused = FusedInception.from_torchvision(ref, backend="torch").eval()
    x = torch.randn(2, 16, 5, 5)
    for model in (ref, fused):
        model.branch2[1].conv = _seeded(lambda: nn.Conv2d(6, 8, 3, padding=2, dilation=2))
    with torch.no_grad():
        fused(x)
    assert not fused.structure_ok()
    check = fused.__dict__["_structure"]
    signature, _, answer = check.state  # back to the old fields
    del check.state, check.changed
    check.signature, check.answer = signature, answer
    torch.save(fused, tmp_path / "old.pt")
    loaded = torch.load(tmp_path / "old.pt", weights_only=False)
    assert not loaded.structure_ok()
    with torch.no_grad():
        want = ref.eval()(x)
        assert want.std() > 0.05
        check_close(loaded(x), want, FP32, "an old pickle")
