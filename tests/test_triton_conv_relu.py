"""The Triton conv + bias + ReLU (backends/triton/conv_relu.py), its op ``inception_fast::conv_relu``,
and its place among the candidates of the stem's conv2/conv3 choice (choices.CONV_RELU_CHOICE).

Outputs are compared with ATen's conv in float64 from the same tensors, with the kernel's output
NaN-poisoned first, so an element it does not write fails.
* CPU: under TRITON_INTERPRET=1 (tests/conftest.py), fp32 at TOLERANCE["fp32"] and fp16 within the
  table's 2x rule, 1x1 and 3x3 kernels on odd maps and channel counts (no tile filled), every GPU
  config pinned once.
* GPU (marked gpu, skipped without CUDA): conv2 and conv3 at GoogLeNet's sizes in bf16, every config.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from model_cases import CL, calibrated_net, net_tolerance, op_backends

from inception_fast import FusedGoogLeNet, choices, ops, stages
from inception_fast.testing import TOLERANCE, check_close, reduced_precision_bound

pytest.importorskip("triton")

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
interpreter_only = pytest.mark.skipif(not INTERPRET, reason="CPU tests need TRITON_INTERPRET=1 set before import")

from launch_observer import counting_do_bench, forcing_chooser, observe_launches, poison_empty  # noqa: E402
from unwritten_reads import nan_gapped  # noqa: E402

from inception_fast.backends.triton import conv_relu  # noqa: E402

# The choices inside a forward, each on its own: auto's whole-network choice off (conftest).
pytestmark = pytest.mark.usefixtures("no_network_choice")


def make_case(n, cin, h, w, cout, k, dtype=torch.float32, device="cpu", fmt=CL, seed=0):
    """(x, w, b): post-ReLU activations (as conv1's and conv2's outputs are) and a conv's scale of
    weights, so that about half the outputs pass the ReLU."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cin, h, w, generator=g).relu()
    wt = torch.randn(cout, cin, k, k, generator=g) / (cin * k * k / 2) ** 0.5
    b = torch.randn(cout, generator=g) * 0.1
    x = x.to(device=device, dtype=dtype).contiguous(memory_format=fmt)
    return x, wt.to(device=device, dtype=dtype).contiguous(memory_format=CL), b.to(device=device, dtype=dtype)


def reference64(x, wt, b):
    return F.conv2d(x.double(), wt.double(), b.double(), padding=wt.shape[-1] // 2).relu()


def check_conv(out, x, wt, b, what="conv_relu"):
    """out against ATen's conv in float64: fp32 at the table's fp32 bound, fp16/bf16 within 2x ATen's
    own error in that dtype; channels_last, in x's dtype."""
    assert out.shape == (x.shape[0], wt.shape[0], *x.shape[2:]) and out.dtype == x.dtype, what
    assert out.is_contiguous(memory_format=CL), what
    ref = reference64(x, wt, b)
    assert ref.std() > 0.05, "the reference is flat; the comparison could not fail"
    if x.dtype == torch.float32:
        tol = TOLERANCE["fp32"]
    else:
        tol = reduced_precision_bound(ops.conv_relu(x, wt, b, wt.shape[-1] // 2, backend="torch"), ref)
    check_close(out, ref, tol, what)


@pytest.fixture
def poisoned(monkeypatch):
    """The launcher's output starts as NaN."""
    made = poison_empty(monkeypatch, conv_relu)
    yield made
    assert made, "the launcher allocated nothing through torch.empty; poisoning had no effect"


# (N, Cin, H, W, Cout): batch 1 and 3; 5x7, 1x1 and 3x2 maps; channel counts that are not
# multiples of 16 and fill no tile (the interpreter's tile is 64x64x64), and one wider than a tile.
# And 32 input channels but 20 output ones: rows 16-aligned in x and only 4-aligned in the output
# (the row unit must hold for both, see _common.row_unit).
SHAPES = [(1, 20, 5, 7, 24), (3, 37, 1, 1, 70), (3, 9, 3, 2, 130), (2, 32, 3, 5, 20)]


@interpreter_only
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("n,cin,h,w,cout", SHAPES)
def test_conv_relu_matches_aten(poisoned, dtype, k, n, cin, h, w, cout):
    x, wt, b = make_case(n, cin, h, w, cout, k, dtype=dtype, seed=cin + k)
    check_conv(ops.conv_relu(x, wt, b, k // 2, backend="triton"), x, wt, b)


@interpreter_only
def test_every_config_and_any_layout(poisoned):
    """Every GPU config (pinned) once, alternating 3x3 and 1x1, on an NCHW input and a weight in
    NCHW (the launcher makes it channels_last); an empty batch gives an empty result."""
    for i, config in enumerate(conv_relu.CONFIGS):
        k = 3 if i % 2 == 0 else 1
        x, wt, b = make_case(2, 19, 5, 6, 40, k, fmt=torch.contiguous_format, seed=i)
        wt = wt.contiguous()
        check_conv(conv_relu.launch_conv_relu(x, wt, b, k // 2, config), x, wt, b, str(config))
    assert ops.conv_relu(x[:0], wt, b, k // 2, backend="triton").shape == (0, 40, 5, 6)  # launches nothing


@interpreter_only
def test_strided_bias_and_no_input_channels(poisoned, monkeypatch):
    """The bias is read through its stride (a view of every other element, NaN in the gaps); with
    no input channels the sums are empty, no kernel runs, and the output is relu(b), negative
    biases giving 0."""
    x, wt, b = make_case(2, 20, 5, 7, 24, 3, seed=6)
    gapped = nan_gapped(b)
    check_conv(conv_relu.launch_conv_relu(x, wt, gapped, 1), x, wt, b, "strided bias")
    b = torch.linspace(-1, 1, 24)
    out, _ops, launched = observe_launches(lambda: conv_relu.launch_conv_relu(x[:, :0], wt[:, :0], b, 1), monkeypatch)
    assert launched == []  # nothing to sum: no kernel
    assert out.shape == (2, 24, 5, 7) and torch.equal(out, b.relu().view(1, -1, 1, 1).expand_as(out))


def test_supported_refuses_what_the_kernel_does_not_compute():
    """The kernel computes groups=1 only: a weight with fewer input channels than x is refused; so
    are a weight that is not 4-D, a non-square one, float64, and bfloat16 under the interpreter."""
    x, wt, _ = make_case(1, 6, 3, 3, 4, 3)
    assert conv_relu.supported(x, wt, 1) is None
    assert "groups=1" in conv_relu.supported(x, wt[:, :3], 1)
    assert "4-D" in conv_relu.supported(x, wt[0], 1)
    assert "square convs" in conv_relu.supported(x, wt[:, :, :1], 1)
    assert "float32, float16 and bfloat16" in conv_relu.supported(x.double(), wt.double(), 1)
    if INTERPRET:
        assert "interpreter" in conv_relu.supported(x.bfloat16(), wt.bfloat16(), 1)


def test_launcher_refuses_mismatched_weight_and_bias():
    """The launcher's own checks (the op checks first): weight and bias in x's dtype, a bias of
    shape (Cout,)."""
    x, wt, b = make_case(1, 6, 3, 3, 4, 3)
    with pytest.raises(TypeError, match="does not match"):
        conv_relu.launch_conv_relu(x, wt.half(), b, 1)
    with pytest.raises(TypeError, match="does not match"):
        conv_relu.launch_conv_relu(x, wt, b.half(), 1)
    for bad in (torch.cat([b, b[:1]]), b[:3], b[None]):
        with pytest.raises(ValueError, match="bias of shape"):
            conv_relu.launch_conv_relu(x, wt, bad, 1)


@interpreter_only
def test_autotuned_launch_path_one_launch_and_no_other_kernels(monkeypatch, poisoned):
    """The GPU's launch path (triton.autotune) run by the interpreter with a stand-in do_bench:
    every config is benchmarked once per shape (1x1 and 3x3 tuned apart), then the choice is
    reused; a call is one launch and no aten op but the allocations."""
    import triton

    fake_do_bench, benchmarked = counting_do_bench()
    configs = [
        triton.Config({"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 16}),
        triton.Config({"BLOCK_M": 32, "BLOCK_N": 16, "BLOCK_K": 32}),
    ]
    tuned = conv_relu.make_tuned_kernel(configs, do_bench=fake_do_bench)
    monkeypatch.setattr(conv_relu, "_tuned_kernel", tuned)
    for seed, k in ((1, 3), (2, 3), (3, 1)):
        x, wt, b = make_case(1, 20, 5, 7, 24, k, seed=seed)
        out, aten_ops, launched = observe_launches(lambda: conv_relu.launch_conv_relu(x, wt, b, k // 2), monkeypatch)
        # The autotuner on a shape's first call, then its choice launched straight.
        assert launched in ([tuned], [conv_relu._conv_relu_kernel]), launched
        assert set(aten_ops) <= {"aten.empty.memory_format"}, aten_ops
        check_conv(out, x, wt, b, f"autotuned, {k}x{k}")
    assert len(benchmarked) == 4 and len(tuned.cache) == 2


@pytest.mark.parametrize("tf32", [True, False], ids=["tf32", "exact"])
def test_dot_precision_follows_allow_tf32(tf32, monkeypatch):
    """fp32 products in TF32 only while cudnn.allow_tf32 is on, read at call time, as the GPU's
    launch path asks for them (the interpreter multiplies exactly either way: test_gpu_stem_convs
    checks exact fp32 on a GPU)."""
    from inception_fast.backends.triton import _common

    monkeypatch.setattr(_common, "INTERPRET", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", tf32)
    _, meta, _, _ = conv_relu._arguments(*make_case(1, 20, 5, 7, 24, 3, device="meta"), 1)
    assert meta["DOT_PRECISION"] == ("tf32" if tf32 else "ieee")


def test_l1_configs_only_for_convs_with_shared_taps():
    """conv_relu's prune: the A_L1 configs (the gathered A tile through L1) compete on a 3x3 conv,
    not on a 1x1 conv (conv2), whose pixels share no taps; never leaving none."""
    configs = [conv_relu.complete_config(c) for c in conv_relu.CONFIGS]
    l1 = [c for c in configs if c.kwargs["A_L1"]]
    assert l1 and conv_relu._prune(configs, {}, KS=3) == configs
    assert conv_relu._prune(configs, {}, KS=1) == [c for c in configs if c not in l1]
    assert conv_relu._prune(l1, {}, KS=1) == l1


@interpreter_only
def test_nan_propagates_and_a_planted_bug_fails():
    """A NaN input pixel makes NaN every output whose window holds it, as ATen's conv + ReLU does
    (the ReLU does not swallow it); the comparison can fail (the bias left out)."""
    x, wt, b = make_case(1, 20, 5, 7, 24, 3, seed=3)
    x[0, 4, 2, 3] = float("nan")
    out = ops.conv_relu(x, wt, b, 1, backend="triton")
    ref = F.conv2d(x, wt, b, padding=1).relu()
    assert torch.equal(out.isnan(), ref.isnan()) and out.isnan().sum() == 24 * 9
    x, wt, b = make_case(2, 20, 5, 7, 24, 3, seed=4)
    out = ops.conv_relu(x, wt, b, 1, backend="triton")
    with pytest.raises(AssertionError, match="relative error"):
        check_conv((out.double() - b.double().view(1, -1, 1, 1)).relu().float(), x, wt, b)


def test_op_checks_opcheck_and_torch_backend():
    """The op's argument checks name the problem, the Triton kernel refuses what it does not compute
    (an even kernel, padding other than k // 2), a gradient through the op raises; its torch backend
    is ATen's conv + ReLU; opcheck covers the schema, the fake kernel and the torch backend."""
    x, wt, b = make_case(2, 6, 5, 5, 4, 3)
    with pytest.raises(ValueError, match="4-D"):
        ops.conv_relu(x[0], wt, b, 1)
    with pytest.raises(TypeError, match="float32"):
        ops.conv_relu(x.to(torch.int32), wt, b, 1)
    with pytest.raises(TypeError, match="supports float32, float16 and bfloat16 inputs, got torch.float64"):
        ops.conv_relu(x.double(), wt.double(), b.double(), 1)  # ATen would run it
    with pytest.raises(ValueError, match="square weight"):
        ops.conv_relu(x, wt[..., :2], b, 1)
    with pytest.raises(ValueError, match="expects 6 input channels"):
        ops.conv_relu(x[:, :4], wt, b, 1)
    with pytest.raises(ValueError, match="bias of shape"):
        ops.conv_relu(x, wt, b[:3], 1)
    with pytest.raises(TypeError, match="does not match w dtype"):
        ops.conv_relu(x, wt.double(), b, 1)
    with pytest.raises(ValueError, match="padding of 0 or more"):
        ops.conv_relu(x, wt, b, -1)
    with pytest.raises(ValueError, match="too small"):
        ops.conv_relu(x[..., :1, :1], wt, b, 0)
    if INTERPRET:
        with pytest.raises(ValueError, match="'same' padding only"):
            ops.conv_relu(x, wt, b, 0, backend="triton")
        with pytest.raises(ValueError, match="square convs of odd size"):
            ops.conv_relu(x, torch.randn(4, 6, 2, 2), b, 1, backend="triton")
    with pytest.raises(RuntimeError, match="inference only"):
        ops.conv_relu(x, wt.clone().requires_grad_(), b, 1).sum().backward()
    assert torch.equal(ops.conv_relu(x, wt, b, 1), F.conv2d(x, wt, b, padding=1).relu())
    assert ops.conv_relu(x, wt, b, 0).shape == (2, 4, 3, 3)  # the torch backend takes any padding
    for backend in op_backends("conv_relu"):
        torch.library.opcheck(torch.ops.inception_fast.conv_relu.default, (x, wt, b, 1, backend))


# -- the stage's measured choice ---------------------------------------------------------------------


@interpreter_only
def test_stage_runs_the_triton_kernel_where_it_wins(monkeypatch):
    """With Triton measured fastest, stages.conv_relu runs the Triton kernel (one launch) and
    matches ATen; cuDNN's fused op, which has no CPU kernel, is dropped with its error on record.
    Without triton_allowed, or with a padding the kernel does not compute, Triton is not offered."""
    chooser = forcing_chooser("triton")
    monkeypatch.setattr(choices, "CONV_RELU_CHOICE", chooser)
    x, wt, b = make_case(2, 20, 5, 7, 24, 3, seed=5)
    with torch.no_grad():
        stages.conv_relu(x, wt, b, 1, triton_allowed=True)  # measures
        out, _ops, launched = observe_launches(lambda: stages.conv_relu(x, wt, b, 1, triton_allowed=True), monkeypatch)
    assert launched == [conv_relu._conv_relu_kernel]
    check_conv(out, x, wt, b, "the stage through Triton")
    ((key, choice),) = chooser.choices().items()
    assert key.triton_allowed and choice.name == "triton" and set(choice.seconds) == {"aten", "triton"}, choice
    assert "cudnn_convolution_relu" in choice.errors["cudnn_fused"]
    with torch.no_grad():
        stages.conv_relu(x, wt, b, 1, triton_allowed=False)
        stages.conv_relu(x, wt[..., 1:2, 1:2].contiguous(), b, 1, triton_allowed=True)  # 1x1, padding 1
    for key, choice in list(chooser.choices().items())[1:]:
        assert not key.triton_allowed and choice.name == "aten" and "triton" not in choice.seconds, choice


@interpreter_only
def test_mixed_dtypes_under_autocast_take_aten(monkeypatch):
    """Under autocast the stage may see x in fp16 with fp32 weights (an fp32 model): ATen's conv,
    which autocast casts, never a stored choice of an fp16 model of the same shape (the fused ops
    take one dtype, and the key holds x's).  An fp32 input with fp32 weights under autocast also
    takes ATen's conv, which computes in autocast's dtype, not the fp32 model's stored choice."""
    chooser = forcing_chooser("triton")
    monkeypatch.setattr(choices, "CONV_RELU_CHOICE", chooser)
    x, wt, b = make_case(1, 20, 5, 7, 24, 3, seed=6)
    with torch.no_grad():
        stages.conv_relu(x.half(), wt.half(), b.half(), 1, triton_allowed=True)  # stores "triton"
        stages.conv_relu(x, wt, b, 1, triton_allowed=True)  # and for fp32
        with torch.autocast("cpu", dtype=torch.float16):
            outs = [stages.conv_relu(xin, wt, b, 1, triton_allowed=True) for xin in (x.half(), x)]
            expected = [F.conv2d(xin, wt, b, padding=1).relu_() for xin in (x.half(), x)]
    assert [c.name for c in chooser.choices().values()] == ["triton", "triton"]
    for out, want in zip(outs, expected):
        assert out.dtype == want.dtype == torch.float16 and torch.equal(out, want)


@interpreter_only
def test_a_wrong_triton_kernel_is_never_chosen(monkeypatch):
    """The stage checks the Triton kernel against fp64 ATen on its first call: a kernel off by 1%
    is dropped with the error on record, however fast it would be."""
    real = conv_relu.launch_conv_relu
    monkeypatch.setattr(conv_relu, "launch_conv_relu", lambda *args: real(*args) * 1.01)
    chooser = forcing_chooser("triton")
    monkeypatch.setattr(choices, "CONV_RELU_CHOICE", chooser)
    x, wt, b = make_case(2, 20, 5, 7, 24, 1, seed=6)
    with torch.no_grad():
        out = stages.conv_relu(x, wt, b, 0, triton_allowed=True)
    check_close(out, reference64(x, wt, b), TOLERANCE["fp32"], "ATen")
    (choice,) = chooser.choices().values()
    assert choice.name == "aten" and "disagrees with ATen" in choice.errors["triton"], choice


@interpreter_only
def test_model_stem_through_triton_matches_the_reference(monkeypatch):
    """FusedGoogLeNet (backend auto) with the Triton conv measured fastest runs conv2 and conv3
    through it, and the logits are the reference's within the whole-network bound; a torch-pinned
    model never offers it."""
    # On CPU "auto" runs the stem's convs through oneDNN's prepacked path; off, they take the stage
    # as on CUDA.
    monkeypatch.setattr(FusedGoogLeNet, "_stem_prepacked", lambda self, x: None)
    ref, _ = calibrated_net("torchvision", 40, num_classes=10)
    x = torch.randn(2, 3, 40, 40)
    ref64, tol = net_tolerance(ref.eval(), x)
    for backend in ("auto", "torch"):
        chooser = forcing_chooser("triton")
        monkeypatch.setattr(choices, "CONV_RELU_CHOICE", chooser)
        model = FusedGoogLeNet.from_torchvision(ref, backend=backend).eval()
        with torch.no_grad():
            model(x)  # measures
            out, _ops, launched = observe_launches(lambda: model(x), monkeypatch)
        check_close(out, ref64, tol, f"logits, backend {backend}")
        picked = {key.weight[-1]: (key.triton_allowed, c.name) for key, c in chooser.choices().items()}
        triton = backend == "auto"
        assert picked == {1: (triton, "triton" if triton else "aten"), 3: (triton, "triton" if triton else "aten")}
        assert launched.count(conv_relu._conv_relu_kernel) == (2 if triton else 0)


# -- GPU ---------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("config", range(len(conv_relu.CONFIGS)))
def test_gpu_stem_convs(config, gpu):
    """conv2 (1x1, 64 -> 64) and conv3 (3x3, 64 -> 192) at 56x56, batch 2, bf16, each config
    pinned: within 2x ATen's own error; with the first config also fp32 without TF32."""
    cfg = conv_relu.CONFIGS[config]
    for dtype in (torch.bfloat16, torch.float32) if config == 0 else (torch.bfloat16,):
        for cout, k in ((64, 1), (192, 3)):
            x, wt, b = make_case(2, 64, 56, 56, cout, k, dtype=dtype, device=gpu, seed=config + k)
            with torch.backends.cudnn.flags(allow_tf32=False):
                check_conv(conv_relu.launch_conv_relu(x, wt, b, k // 2, cfg), x, wt, b, f"{cfg} {dtype} k{k}")
