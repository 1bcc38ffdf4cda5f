"""The Triton head (backends/triton/head.py), its op ``inception_fast::avgpool_linear``, and
FusedGoogLeNet's measured choice between it and ATen's head (choices.HEAD_CHOICE).

Logits are compared with ATen's head in float64 from the same weights; the kernel's output and its
means buffer are NaN-poisoned where it matters, so an element it does not write fails.
* CPU: under TRITON_INTERPRET=1 (tests/conftest.py), fp32 at TOLERANCE["fp32"] and fp16 within the
  table's 2x rule, on odd shapes (no tile filled), every GPU config pinned.
* GPU (marked gpu, skipped without CUDA): bf16 and fp32 (with and without TF32) on 5b's shape, every
  config pair.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from model_cases import CL, calibrated_net, net_tolerance, op_backends
from torch import nn

from inception_fast import FusedGoogLeNet, choices, ops, stages
from inception_fast.testing import TOLERANCE, check_close, reduced_precision_bound

pytest.importorskip("triton")

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
interpreter_only = pytest.mark.skipif(not INTERPRET, reason="CPU tests need TRITON_INTERPRET=1 set before import")

from launch_observer import forcing_chooser, poison_empty  # noqa: E402
from unwritten_reads import assert_bands_untouched, guarded, nan_gapped  # noqa: E402

from inception_fast.backends.triton import _common, head  # noqa: E402

# The choices inside a forward, each on its own: auto's whole-network choice off (conftest).
pytestmark = pytest.mark.usefixtures("no_network_choice")


def make_case(n, c, h, w, classes, dtype=torch.float32, device="cpu", fmt=CL, seed=0):
    """(x, W, b): activations after a ReLU (as 5b's are) and a Linear's scale of weights."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g).relu()
    wt = torch.randn(classes, c, generator=g) / c**0.5
    b = torch.randn(classes, generator=g) * 0.1
    x = x.to(device=device, dtype=dtype).contiguous(memory_format=fmt)
    return x, wt.to(device=device, dtype=dtype), b.to(device=device, dtype=dtype)


def reference64(x, wt, b):
    return F.linear(x.double().mean((2, 3)), wt.double(), b.double())


def check_head(out, x, wt, b, what="head"):
    """out against ATen's head in float64: fp32 at the table's fp32 bound, fp16/bf16 within 2x
    ATen's own error in that dtype."""
    assert out.shape == (x.shape[0], wt.shape[0]) and out.dtype == x.dtype
    ref = reference64(x, wt, b)
    assert ref.std() > 0.05, "the reference is flat; the comparison could not fail"
    if x.dtype == torch.float32:
        tol = TOLERANCE["fp32"]
    else:
        tol = reduced_precision_bound(ops.avgpool_linear(x, wt, b, backend="torch"), ref)
    check_close(out, ref, tol, what)


@pytest.fixture
def poisoned_head(monkeypatch):
    """The head launcher's buffers (means, logits) start as NaN."""
    made = poison_empty(monkeypatch, head)
    yield made
    assert made, "the head allocated nothing through torch.empty; poisoning had no effect"


# (N, C, H, W, classes): batch 1 and 3; 1x1, 7x7 (5b's at 224) and 3x5 maps; channel and class
# counts that fill no tile (the interpreter's tiles are 16-32 wide), and 1000 classes.
SHAPES = [(1, 37, 7, 7, 10), (3, 70, 3, 5, 1000), (3, 40, 1, 1, 10), (1, 1024, 7, 7, 10)]


@interpreter_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("n,c,h,w,classes", SHAPES)
def test_head_matches_aten(poisoned_head, dtype, n, c, h, w, classes):
    x, wt, b = make_case(n, c, h, w, classes, dtype=dtype, seed=c)
    check_head(ops.avgpool_linear(x, wt, b, backend="triton"), x, wt, b)


@interpreter_only
def test_every_config_and_any_layout(poisoned_head):
    """Every GPU config pair (pinned), on an NCHW input and a weight that is a transposed view: the
    kernels take any strides; an empty batch gives an empty result."""
    x, wt, b = make_case(3, 70, 3, 5, 40, fmt=torch.contiguous_format, seed=1)
    wt = wt.t().contiguous().t()
    for pool_cfg, linear_cfg in zip(head.POOL_CONFIGS, head.LINEAR_CONFIGS):
        check_head(head.launch_avgpool_linear(x, wt, b, pool_cfg, linear_cfg), x, wt, b, str(pool_cfg))
    assert ops.avgpool_linear(x[:0], wt, b, backend="triton").shape == (0, 40)  # launches nothing


@interpreter_only
def test_empty_logits_launch_nothing(monkeypatch):
    """CUDA rejects an empty grid: an empty batch, or no classes, gets its empty logits without a
    launch of either kernel."""

    def no_launch(*args, **kwargs):
        raise AssertionError("launched a kernel for empty logits")

    monkeypatch.setattr(head._common, "launch_configured", no_launch)
    x, wt, b = make_case(3, 70, 3, 5, 40, seed=1)
    assert head.launch_avgpool_linear(x[:0], wt, b).shape == (0, 40)
    assert head.launch_avgpool_linear(x, wt[:0], b[:0]).shape == (3, 0)


@interpreter_only
def test_bfloat16_rejected_by_interpreter():
    """The launcher's own dtype check: the interpreter has no bfloat16."""
    x, wt, b = make_case(1, 37, 7, 7, 10, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="bfloat16 is not supported by the Triton interpreter"):
        head.launch_avgpool_linear(x, wt, b)


@interpreter_only
def test_strided_bias_and_no_access_outside_the_buffers(monkeypatch):
    """The bias is read through its stride (a view of every other element, NaN in the gaps); the
    input, the means and the logits sit between poisoned guard bands: a load past the input's last
    channel or of a means row past the batch trips the unwritten-read check, a store past the
    logits changes the band (on a GPU: someone else's memory).  Every GPU config pair and the
    interpreter's, on 3 images (no image tile filled) of 70 channels (no channel tile filled)."""
    bands = []

    def guarded_empty(shape, dtype, device):
        return guarded(shape[0] * shape[1], dtype, device, bands).view(shape)

    x, wt, b = make_case(3, 70, 3, 5, 40, seed=5)
    x = guarded(x.numel(), x.dtype, x.device, bands).view(3, 3, 5, 70).permute(0, 3, 1, 2).copy_(x)
    monkeypatch.setattr(head.torch, "empty", guarded_empty)
    gapped = nan_gapped(b)
    for pool_cfg, linear_cfg in [(None, None), *zip(head.POOL_CONFIGS, head.LINEAR_CONFIGS)]:
        check_head(head.launch_avgpool_linear(x, wt, gapped, pool_cfg, linear_cfg), x, wt, b, str(linear_cfg))
    assert_bands_untouched(bands)


@pytest.mark.parametrize("tf32", [True, False], ids=["tf32", "exact"])
def test_dot_precision_follows_matmul_allow_tf32(tf32, monkeypatch, backend_flag):
    """The GEMM multiplies fp32 in TF32 only while matmul.allow_tf32 is on (nn.Linear's flag, not
    cuDNN's, here set the other way), read at call time, as the GPU's launch path asks for it (the
    interpreter multiplies exactly either way: test_gpu_head_5b_shape checks the results on a GPU)."""
    monkeypatch.setattr(_common, "INTERPRET", False)
    backend_flag(torch.backends.cuda.matmul, "allow_tf32", tf32)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", not tf32)
    _, (_, meta, _), _ = head._arguments(*make_case(2, 37, 3, 5, 10, device="meta"))
    assert meta["PRECISION"] == ("tf32" if tf32 else "ieee")


@interpreter_only
def test_a_planted_bug_fails():
    """The comparison can fail: logits without the bias, and the mean over one column too few."""
    x, wt, b = make_case(2, 37, 3, 5, 10, seed=2)
    out = ops.avgpool_linear(x, wt, b, backend="triton")
    wrong = out - b.double().to(out.dtype)  # the bias left out
    with pytest.raises(AssertionError, match="relative error"):
        check_head(wrong, x, wt, b)
    with pytest.raises(AssertionError, match="relative error"):
        check_head(ops.avgpool_linear(x[..., :-1], wt, b, backend="triton"), x, wt, b)


def test_op_checks_opcheck_and_torch_backend():
    """The op's argument checks name the problem; its torch backend is the reference's ATen head;
    opcheck covers the schema, the fake kernel and the torch backend; an empty batch is empty."""
    x, wt, b = make_case(2, 6, 3, 3, 5)
    with pytest.raises(ValueError, match="4-D"):
        ops.avgpool_linear(x[0], wt, b)
    with pytest.raises(TypeError, match="float32"):
        ops.avgpool_linear(x.to(torch.int32), wt, b)
    with pytest.raises(ValueError, match="2-D weight"):
        ops.avgpool_linear(x, wt[None], b)
    with pytest.raises(ValueError, match="expects 6 input channels"):
        ops.avgpool_linear(x[:, :4], wt, b)
    with pytest.raises(ValueError, match="bias of shape"):
        ops.avgpool_linear(x, wt, b[:3])
    with pytest.raises(TypeError, match="does not match w dtype"):
        ops.avgpool_linear(x, wt.double(), b)
    with pytest.raises(ValueError, match="1x1 pixels"):
        ops.avgpool_linear(x[..., :0], wt, b)
    with pytest.raises(ValueError, match="'torch' or 'triton'"):
        ops.avgpool_linear(x, wt, b, backend="cpp")
    ref = nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(6, 5))
    ref[2].weight.data.copy_(wt)
    ref[2].bias.data.copy_(b)
    assert torch.equal(ops.avgpool_linear(x, wt, b), ref(x))
    assert ops.avgpool_linear(x[:0], wt, b).shape == (0, 5)
    for backend in op_backends("avgpool_linear"):
        torch.library.opcheck(torch.ops.inception_fast.avgpool_linear.default, (x, wt, b, backend))


# -- FusedGoogLeNet's measured head ----------------------------------------------------------------


@interpreter_only
def test_model_head_through_triton_matches_the_reference(monkeypatch):
    """With the Triton head measured fastest, FusedGoogLeNet's head runs it (two launches more than
    ATen's head, which launches none) and the logits are the reference's within the whole-network
    bound; a torch-pinned model, a train-mode model and a forward with gradients never ask the
    chooser."""
    ref, _ = calibrated_net("torchvision", 40, num_classes=10)
    model = FusedGoogLeNet.from_torchvision(ref, backend="auto").eval()  # blocks: torch on CPU
    x = torch.randn(2, 3, 40, 40)
    ref64, tol = net_tolerance(ref.eval(), x)
    outs, launches = {}, {}
    for winner in ("aten", "triton"):
        chooser = forcing_chooser(winner)
        monkeypatch.setattr(choices, "HEAD_CHOICE", chooser)
        with torch.no_grad():
            model(x)  # measures
            before = _common.launch_count()
            outs[winner] = model(x)  # runs the choice
            launches[winner] = _common.launch_count() - before
        (choice,) = chooser.choices().values()
        assert choice.name == winner and set(choice.seconds) == {"aten", "triton"}, choice
        assert choice.errors == {}
    assert launches["triton"] == launches["aten"] + 2
    check_close(outs["triton"], ref64, tol, "logits through the Triton head")
    check_close(outs["aten"], ref64, tol, "logits through ATen's head")
    chooser = forcing_chooser("triton")
    monkeypatch.setattr(choices, "HEAD_CHOICE", chooser)
    pinned = FusedGoogLeNet.from_torchvision(ref, backend="torch").eval()
    feats = torch.rand(2, 1024, 2, 2).contiguous(memory_format=CL)
    with torch.no_grad():
        pinned._head(feats)
    model._head(feats).sum().backward()  # gradients: ATen's head
    assert model.fc.weight.grad is not None
    model.train()
    with torch.no_grad():
        model._head(feats)
    assert not chooser.choices()


@interpreter_only
def test_a_wrong_triton_head_is_never_chosen(monkeypatch):
    """The measured choice checks the Triton head against ATen's in float64 on its first call: a
    kernel off by 1e-3 is dropped with the error on record, however fast it would be."""
    real = head.launch_avgpool_linear
    monkeypatch.setattr(head, "launch_avgpool_linear", lambda *args: real(*args) * (1 + 1e-3))
    chooser = forcing_chooser("triton")
    monkeypatch.setattr(choices, "HEAD_CHOICE", chooser)
    model = FusedGoogLeNet(num_classes=10, backend="triton").eval()
    x, _, _ = make_case(2, 1024, 2, 3, 10, seed=4)
    with torch.no_grad():
        out = model._head(x)
    check_head(out, x, model.fc.weight, model.fc.bias)
    (choice,) = chooser.choices().values()
    assert choice.name == "aten" and "disagrees with ATen" in choice.errors["triton"], choice


def test_only_the_standard_head_is_fused():
    """A head with hooks, another pool, a dropout in train mode or a Linear without bias runs as
    written (the Triton head computes none of them)."""
    pool, drop, fc = nn.AdaptiveAvgPool2d((1, 1)), nn.Dropout(0.2).eval(), nn.Linear(8, 3)
    assert stages.standard_head(pool, drop, fc) and stages.standard_head(nn.AdaptiveAvgPool2d(1), nn.Identity(), fc)
    assert not stages.standard_head(nn.AdaptiveAvgPool2d((2, 2)), drop, fc)
    assert not stages.standard_head(nn.AdaptiveMaxPool2d((1, 1)), drop, fc)
    assert not stages.standard_head(pool, nn.Dropout(0.2), fc)
    assert not stages.standard_head(pool, drop, nn.Linear(8, 3, bias=False))
    for register in (nn.Module.register_forward_hook, nn.Module.register_forward_pre_hook):
        hooked = nn.Linear(8, 3)
        register(hooked, lambda *args: None)
        assert not stages.standard_head(pool, drop, hooked), register.__name__


@pytest.mark.gpu
@pytest.mark.parametrize("config", range(len(head.POOL_CONFIGS)))
def test_gpu_head_5b_shape(config, gpu, backend_flag):
    """5b's output at 224 (1024 x 7 x 7) into 1000 classes, batch 3, each config pair pinned: bf16
    within 2x ATen's own error; with the first pair also fp32, exact and with TF32 (then at the
    table's TF32 bound).  Few compiles: the GPU suite runs in one lent window."""
    pool_cfg, linear_cfg = head.POOL_CONFIGS[config], head.LINEAR_CONFIGS[config]
    cases = ((torch.bfloat16, False), (torch.float32, False), (torch.float32, True))
    for dtype, tf32 in cases if config == 0 else cases[:1]:
        backend_flag(torch.backends.cuda.matmul, "allow_tf32", tf32)
        x, wt, b = make_case(3, 1024, 7, 7, 1000, dtype=dtype, device=gpu, seed=config)
        out = head.launch_avgpool_linear(x, wt, b, pool_cfg, linear_cfg)
        if tf32:
            check_close(out, reference64(x, wt, b), TOLERANCE["tf32"], "fp32 with TF32")
        else:
            check_head(out, x, wt, b, f"{dtype}")
