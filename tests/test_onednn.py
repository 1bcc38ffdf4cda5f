"""The "onednn" backend (oneDNN's CPU convolutions, bias and ReLU fused, weights prepacked into its
blocked layout): parity with the reference in float32 (tolerance table) and bfloat16
(reduced_precision_bound), the prepacked path taken only where no gradient is wanted, the prepacked
weights rebuilt whenever the source weights change, and "auto" on CPU running it."""

import copy

import pytest
import torch
from model_cases import FUSED_BLOCK_OP, OpRecorder, net_tolerance
from torch import nn

from inception_fast import FusedGoogLeNet, FusedInception, GoogLeNet, Inception, available_backends, backends
from inception_fast.backends import onednn_backend
from inception_fast.testing import TOLERANCE, calibrate, check_close, reduced_precision_bound, rel_error

pytestmark = pytest.mark.skipif(
    "onednn" not in available_backends("cpu"), reason=f"onednn: {backends.availability('onednn', 'cpu')}"
)

FP32 = TOLERANCE["fp32"]
CL = torch.channels_last
PREPACKED_CONV = "mkldnn._convolution_pointwise"


def _block(cfg, seed=0, k=3, size=6, batch_norm=True):
    ref = Inception(*cfg, branch3_kernel=k, batch_norm=batch_norm)
    calibrate(ref, torch.randn(4, cfg[0], size, size), seed=seed)
    return ref, FusedInception.from_torchvision(ref, backend="onednn").eval()


@pytest.mark.parametrize(
    "cfg,k,shape",
    [
        ((16, 8, 6, 8, 4, 6, 5), 3, (2, 16, 6, 6)),
        ((24, 4, 12, 16, 6, 8, 3), 5, (1, 24, 5, 7)),  # branch3 5x5 (paper), batch 1, non-square
        ((16, 8, 6, 8, 4, 6, 5), 3, (3, 16, 1, 1)),  # 1x1 pixels: the pool and the kxk see padding only
    ],
)
def test_block_matches_reference_fp32(cfg, k, shape):
    ref, fused = _block(cfg, k=k)
    x = torch.randn(shape)
    with torch.no_grad():
        want = ref(x)
        with OpRecorder() as rec:
            got = fused(x.contiguous(memory_format=CL))
    assert FUSED_BLOCK_OP not in rec.ops and PREPACKED_CONV in rec.ops, "the prepacked path should run"
    assert got.is_contiguous(memory_format=CL)
    check_close(got, want, FP32, "prepacked block")
    check_close(fused(x.contiguous()), want, FP32, "NCHW in")  # also the op path: gradients are on here


def test_op_path_matches_torch_backend_and_trains():
    """With gradients wanted the block runs the registered op with the plain packed weights: out and
    scratch as the contract says, and the gradients the torch backend's op gives."""
    cfg = (16, 8, 6, 8, 4, 6, 5)
    ref, fused = _block(cfg, seed=3)
    torch_block = FusedInception.from_torchvision(ref, backend="torch").eval()
    x = torch.randn(2, 16, 6, 6, requires_grad=True)
    with OpRecorder() as rec:
        out = fused(x)
    assert FUSED_BLOCK_OP in rec.ops
    want = torch_block(x)
    check_close(out, want, FP32, "op path")
    g = torch.randn_like(want)
    grads = torch.autograd.grad(out, [x, fused.branch2[1].conv.weight], g)
    want_grads = torch.autograd.grad(want, [x, torch_block.branch2[1].conv.weight], g)
    for a, b in zip(grads, want_grads):
        check_close(a, b, FP32, "gradient")
    args = fused.packed(torch.float32)
    xc = x.detach().contiguous(memory_format=CL)
    o1, s1 = torch.ops.inception_fast.inception_block(xc, *args, "onednn")
    o2, s2 = torch.ops.inception_fast.inception_block(xc, *args, "torch")
    assert s1.shape == s2.shape and s1.is_contiguous(memory_format=CL)
    check_close(o1, o2, FP32, "op out")
    check_close(s1, s2, FP32, "op scratch")


# oneDNN's bf16 convolutions need AVX-512 (BW, VL, DQ) or AVX-NE-CONVERT; without them the
# backend refuses bfloat16 by name (test_bf16_without_cpu_support_is_refused_and_auto_runs_torch).
needs_bf16 = pytest.mark.skipif(
    not onednn_backend.bf16_supported(), reason="this CPU has no oneDNN bf16 convolutions (AVX-512 BW/VL/DQ)"
)


@needs_bf16
def test_block_bf16_within_the_reduced_precision_bound():
    cfg = (32, 8, 12, 16, 4, 8, 8)
    ref, fused = _block(cfg, seed=5, size=7)
    x = torch.randn(2, 32, 7, 7)
    fused = fused.to(torch.bfloat16)
    with torch.inference_mode():
        ref64 = copy.deepcopy(ref).double()(x.double())
        ref_bf16 = copy.deepcopy(ref).to(torch.bfloat16)(x.bfloat16())
        got = fused(x.bfloat16().contiguous(memory_format=CL))
    assert got.dtype == torch.bfloat16
    check_close(got, ref64, reduced_precision_bound(ref_bf16, ref64), "bf16 block")


@pytest.mark.parametrize("dtype", [torch.float32, pytest.param(torch.bfloat16, marks=needs_bf16)])
def test_network_matches_reference(dtype):
    """The whole torchvision network (prepacked stem and blocks) against fp64: float32 (NCHW and
    channels_last input) within the tolerance table, bfloat16 within reduced_precision_bound."""
    ref = GoogLeNet(init_weights=False)
    calibrate(ref, torch.randn(4, 3, 32, 32), seed=1)
    x = torch.randn(2, 3, 32, 32)
    ref64, tol = net_tolerance(ref, x)
    with torch.inference_mode():
        if dtype == torch.float32:
            cases = ((torch.float32, tol, (x, x.contiguous(memory_format=CL))),)
        else:
            ref_bf16 = copy.deepcopy(ref).to(torch.bfloat16)(x.bfloat16())
            cases = ((torch.bfloat16, reduced_precision_bound(ref_bf16, ref64), (x.bfloat16(),)),)
        for dtype, bound, inputs in cases:
            fused = FusedGoogLeNet.from_torchvision(ref, backend="onednn").eval().to(dtype)
            for xin in inputs:
                with OpRecorder() as rec:
                    got = fused(xin)
                assert FUSED_BLOCK_OP not in rec.ops and PREPACKED_CONV in rec.ops
                check_close(got, ref64, bound, f"network {dtype}")


def test_prepacked_weights_follow_every_weight_change():
    """In place, through load_state_dict, new Parameters and a new BatchNorm: the prepacked weights
    are rebuilt (normal tensors: version counters; see test_packing.py for inference tensors)."""
    cfg = (16, 8, 6, 8, 4, 6, 5)
    ref, fused = _block(cfg, seed=2)
    x = torch.randn(2, 16, 6, 6)
    with torch.no_grad():
        first = fused(x)
        for model in (fused, ref):
            model.branch2[1].conv.weight.mul_(1.5)
            model.branch4[1].bn.running_var.mul_(2.0)
        check_close(fused(x), ref(x), FP32, "after in-place edits")
        assert rel_error(fused(x), first) > 1e-3
        other = Inception(*cfg)
        calibrate(other, torch.randn(2, 16, 6, 6), seed=9)
        fused.load_state_dict(other.state_dict())
        check_close(fused(x), other(x), FP32, "after load_state_dict")
        for model in (fused, other):
            model.branch1.conv.weight = nn.Parameter(model.branch1.conv.weight * 0.75)
            model.branch3[0].bn = copy.deepcopy(model.branch3[0].bn)
            model.branch3[0].bn.running_mean.add_(0.1)
        check_close(fused(x), other(x), FP32, "after new Parameters and modules")


def test_auto_on_cpu_runs_onednn_and_other_dtypes_fall_back():
    assert backends.resolve("auto", "cpu") == "onednn"
    ref, _ = _block((16, 8, 6, 8, 4, 6, 5), seed=4)
    auto = FusedInception.from_torchvision(ref, backend="auto").eval()
    assert auto.backend == "onednn"
    x = torch.randn(2, 16, 6, 6)
    with torch.no_grad():
        check_close(auto(x), ref(x), FP32)
        half = copy.deepcopy(auto).half()
        ref64 = copy.deepcopy(ref).double()(x.double())
        bound = reduced_precision_bound(copy.deepcopy(ref).half()(x.half()), ref64)
        check_close(half(x.half()), ref64, bound, "fp16 through auto: the torch backend")
        named = FusedInception.from_torchvision(ref, backend="onednn").eval().half()
        with pytest.raises(TypeError, match="onednn.*float32 and bfloat16"):
            named(x.half())


def test_bf16_without_cpu_support_is_refused_and_auto_runs_torch(monkeypatch):
    """On a CPU without oneDNN's bf16 convolutions (as this test makes every CPU look): the named
    backend refuses bfloat16 with an error that names the CPU feature, for a block and for the
    whole network, where oneDNN itself would fail deep inside a weight reorder; auto runs the torch
    backend's op instead, within the bf16 bound; float32 still runs prepacked."""
    monkeypatch.setattr(onednn_backend, "_BF16", False)
    assert not onednn_backend.bf16_supported() and onednn_backend.dtypes() == (torch.float32,)
    ref, named = _block((16, 8, 6, 8, 4, 6, 5), seed=6)
    auto = FusedInception.from_torchvision(ref, backend="auto").eval()
    x = torch.randn(2, 16, 6, 6)
    with torch.no_grad():
        with pytest.raises(TypeError, match="bfloat16 only on CPUs with AVX-512"):
            copy.deepcopy(named).bfloat16()(x.bfloat16())
        net = GoogLeNet(init_weights=False)
        calibrate(net, torch.randn(2, 3, 32, 32), seed=2)
        with pytest.raises(TypeError, match="bfloat16 only on CPUs with AVX-512"):
            FusedGoogLeNet.from_torchvision(net, backend="onednn").eval().bfloat16()(
                torch.randn(1, 3, 32, 32).bfloat16()
            )
        ref64 = copy.deepcopy(ref).double()(x.double())
        bound = reduced_precision_bound(copy.deepcopy(ref).bfloat16()(x.bfloat16()), ref64)
        with OpRecorder() as rec:
            got = copy.deepcopy(auto).bfloat16()(x.bfloat16())
        assert FUSED_BLOCK_OP in rec.ops and PREPACKED_CONV not in rec.ops, "auto should run the torch backend's op"
        check_close(got, ref64, bound, "bf16 through auto: the torch backend")
        with OpRecorder() as rec:
            check_close(auto(x), ref(x), FP32, "fp32 through auto")
        assert PREPACKED_CONV in rec.ops


@pytest.mark.parametrize("shape", [(2, 5, 6, 7), (1, 3, 1, 4), (1, 2, 5, 1), (2, 4, 1, 1)])
def test_separable_pool_equals_aten(shape):
    """The prepacked block's 3x3/1 max pool gives ATen's values (a max is exact): NaN, infinities
    and every finite value; only a zero maximum's sign may differ (see max_pool_3x3_s1)."""
    from inception_fast.backends.onednn_backend import max_pool_3x3_s1
    from inception_fast.testing import same_bits

    x = torch.randn(shape).contiguous(memory_format=CL)
    x[0, -1, -1, 0] = float("nan")
    x[-1, 0, 0, -1] = float("inf")
    x[-1, -1, 0, 0] = -float("inf")
    want = torch.nn.functional.max_pool2d(x, 3, 1, 1)
    got = max_pool_3x3_s1(x)
    assert got.is_contiguous(memory_format=CL)
    assert same_bits(got + 0.0, want + 0.0)


def _same_nonfinite(got, want, what):
    """NaN and ±Inf exactly where the reference has them, the finite values within the table."""
    assert torch.equal(got.isnan(), want.isnan()), f"{what}: NaN at other places than the reference's"
    assert torch.equal(got.isposinf(), want.isposinf()) and torch.equal(got.isneginf(), want.isneginf()), what
    assert want.isfinite().any() and not want.isfinite().all(), f"{what}: the case should mix finite and not"
    keep = want.isfinite()
    check_close(got[keep], want[keep], FP32, what)


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
def test_block_propagates_nan_and_inf_as_pytorch(bad):
    """oneDNN's fused ReLU maps NaN to 0 where PyTorch's ReLU keeps it: a block whose input holds a NaN
    or an Inf (prepacked path and op path), or whose weights do (a non-finite running mean, as from a
    damaged checkpoint), gives non-finite values exactly where the reference does."""
    cfg = (16, 8, 6, 8, 4, 6, 5)
    ref, fused = _block(cfg, seed=5)
    x = torch.randn(2, 16, 6, 6)
    x[1, 3, 2, 4] = float(bad)
    with torch.no_grad():
        want = ref(x)
        _same_nonfinite(fused(x.contiguous(memory_format=CL)), want, f"prepacked block, {bad} input")
    _same_nonfinite(fused(x.contiguous()).detach(), want, f"op path, {bad} input")  # gradients on: the op
    if bad == "nan":
        x = torch.randn(2, 16, 6, 6)
        # A NaN running mean reaches the folded bias only; a NaN conv weight the folded weight only.
        for name, tensor in (
            ("bias", lambda m: m.branch3[0].bn.running_mean),
            ("weight", lambda m: m.branch4[1].conv.weight),
        ):
            ref, fused = _block(cfg, seed=5)
            for module in (ref, fused):
                with torch.no_grad():
                    tensor(module).view(-1)[1] = float(bad)
            with torch.no_grad():
                want = ref(x)
                _same_nonfinite(fused(x.contiguous(memory_format=CL)), want, f"prepacked block, NaN {name}")
            _same_nonfinite(fused(x.contiguous()).detach(), want, f"op path, NaN {name}")


def test_network_propagates_nan_as_pytorch():
    """The whole network on onednn (prepacked stem and blocks): one NaN pixel in one image gives the
    reference's NaN logits for that image and the reference's logits for the other."""
    ref = GoogLeNet(init_weights=False)
    calibrate(ref, torch.randn(4, 3, 32, 32), seed=2)
    fused = FusedGoogLeNet.from_torchvision(ref, backend="onednn").eval()
    x = torch.randn(2, 3, 32, 32)
    x[1, 0, 5, 7] = float("nan")
    with torch.inference_mode():
        want, got = ref(x), fused(x.contiguous(memory_format=CL))
    assert want[1].isnan().all() and got[1].isnan().all()
    check_close(got[0], want[0], FP32, "the image without NaN")


def test_a_prepacked_conv_keeps_the_layouts_used_last(monkeypatch):
    """Beyond LAYOUTS_KEPT layouts, the reordered weight used least recently is dropped: a layout
    served all along stays (dropping the oldest would reorder it again after every few others),
    and each kept weight still computes its shape's conv.  Each shape its own layout here, as on a
    PyTorch without oneDNN's descriptor query, or where every shape gets a layout of its own."""
    monkeypatch.setattr(onednn_backend, "_layout_of", lambda w, shape: shape)
    torch.manual_seed(0)
    w, b = torch.randn(8, 4, 3, 3), torch.randn(8)
    conv = onednn_backend.prepack_conv(w, b, 1, 1)
    hot = torch.randn(1, 4, 6, 6).contiguous(memory_format=torch.channels_last)
    others = [torch.randn(n, 4, 6, 6).contiguous(memory_format=torch.channels_last) for n in range(2, 8)]
    for x in others:
        for t in (hot, x):
            out = onednn_backend.prepacked_conv_relu(t, conv)
            check_close(out, torch.conv2d(t, w, b, 1, 1).relu(), TOLERANCE["fp32"], f"batch {t.shape[0]}")
    assert onednn_backend.LAYOUTS_KEPT == 4
    assert [shape[0] for shape in conv.reordered] == [5, 6, 1, 7]  # least to most recently used


@pytest.mark.parametrize("kernel", [1, 3])
def test_shapes_of_one_layout_share_one_reordered_weight(monkeypatch, kernel):
    """Input shapes whose weight oneDNN lays out alike (its descriptor, asked of each reordered
    weight) share one copy, and a shape seen before is not reordered again while its layout is
    kept: a server cycling through more batch sizes than LAYOUTS_KEPT reorders nothing after each
    size's first call where they share few layouts.  Expectations from the layouts this CPU's
    oneDNN picks, each shape's result checked."""
    reorders = []
    real = onednn_backend._reorder
    monkeypatch.setattr(onednn_backend, "_reorder", lambda conv, shape: reorders.append(shape) or real(conv, shape))
    torch.manual_seed(1)
    w, b = torch.randn(24, 16, kernel, kernel), torch.randn(24)
    conv = onednn_backend.prepack_conv(w, b, 1, kernel // 2)
    xs = [torch.randn(n, 16, 7, 7).contiguous(memory_format=torch.channels_last) for n in range(1, 9)]
    md = getattr(torch.ops.mkldnn, "_get_mkldnn_serialized_md", None)  # (the package's fallback without it: shapes)
    layouts = {tuple(x.shape): md(real(conv, tuple(x.shape))).numpy().tobytes() if md else tuple(x.shape) for x in xs}
    for rnd in range(2):
        reorders.clear()
        for x in xs:
            out = onednn_backend.prepacked_conv_relu(x, conv)
            check_close(out, torch.conv2d(x, w, b, 1, kernel // 2).relu(), TOLERANCE["fp32"], f"batch {x.shape[0]}")
        distinct = len(set(layouts.values()))
        if rnd == 0:
            assert len(reorders) == len(xs)  # each shape's first call
        elif distinct <= onednn_backend.LAYOUTS_KEPT:
            assert reorders == []
        assert conv.layouts == {s: layouts[s] for s in list(layouts)[-onednn_backend.SHAPES_REMEMBERED :]}
        assert len(conv.reordered) == min(distinct, onednn_backend.LAYOUTS_KEPT)
        assert len({id(t) for t in conv.reordered.values()}) == len(conv.reordered)  # one copy per layout


def test_threads_sharing_a_prepacked_conv(monkeypatch):
    """Inference threads sharing one model share its prepacked convs: while they look up, add and
    drop reordered weights of many input shapes at once (more layouts than kept), no thread fails
    (a dict changed during another's iteration) and each gets a weight; the real convs' results
    per shape are the tests above.  The reorder stubbed (the plain weight) so that the threads
    spend their time in the cache's bookkeeping."""
    from threads import errors_in_threads

    monkeypatch.setattr(onednn_backend, "_layout_of", lambda w, shape: shape)  # every shape its own layout
    monkeypatch.setattr(onednn_backend, "_reorder", lambda conv, shape: conv.plain)
    conv = onednn_backend.prepack_conv(torch.randn(8, 4, 1, 1), torch.randn(8))
    xs = [torch.empty(n, 4, 3, 3) for n in range(1, 12)]

    def serve(offset):
        for i in range(60000):  # enough thread switches to meet a racing update on 2 cores
            assert conv.weight_for(xs[(offset + i) % len(xs)]) is conv.plain

    errors = errors_in_threads(serve, [0, 5, 10])
    assert not errors, errors[:3]
    assert len(conv.reordered) <= onednn_backend.LAYOUTS_KEPT


def test_prepacked_calls_refuse_other_channels_and_dtypes():
    """The prepacked entry points (the modules' inference path, public for other callers) refuse an
    input whose channel count or dtype is not their weights' by name, before oneDNN reads it."""
    cfg = (16, 8, 6, 8, 4, 6, 5)
    ref, fused = _block(cfg, seed=7)
    x = torch.randn(2, 16, 6, 6)
    with torch.no_grad():
        pre = onednn_backend.prepack_block(fused.packed(torch.float32))
        check_close(onednn_backend.prepacked_block_forward(x, pre), ref(x), FP32, "prepacked_block_forward")
        with pytest.raises(ValueError, match=r"4-D input with 16 channels, got shape \(2, 12, 6, 6\)"):
            onednn_backend.prepacked_block_forward(torch.randn(2, 12, 6, 6), pre)
        low = onednn_backend.prepack_block(fused.packed(torch.bfloat16))  # (reordered on first use only)
        wrong = r"input dtype torch.float32 does not match the prepacked weights' dtype torch.bfloat16"
        with pytest.raises(TypeError, match=wrong):
            onednn_backend.prepacked_block_forward(x, low)
        with pytest.raises(TypeError, match=wrong):
            onednn_backend.prepacked_conv_relu(torch.randn(2, 6, 6, 6), low.conv3)
        # Input and weights in float16, which agree: refused by the backend's dtype rule, by name.
        half = onednn_backend.prepack_block(fused.packed(torch.float16))
        with pytest.raises(TypeError, match="onednn.*float32 and bfloat16, not torch.float16"):
            onednn_backend.prepacked_block_forward(x.half(), half)
        with pytest.raises(TypeError, match="onednn.*float32 and bfloat16, not torch.float16"):
            onednn_backend.prepacked_conv_relu(torch.randn(2, 6, 6, 6).half(), half.conv3)


@pytest.mark.parametrize("k", [3, 5])
def test_traced_block_computes_the_op(k):
    """The block's form for torch.compile on CPU (plain ATen ops, traced_block_forward) computes what
    the op does, with branch 3's kernel 3x3 (torchvision) or 5x5 (the paper's variant)."""
    cfg = (24, 4, 12, 16, 6, 8, 3)
    ref, fused = _block(cfg, seed=8, k=k, size=7)
    x = torch.randn(2, 24, 7, 7).contiguous(memory_format=CL)
    with torch.no_grad():
        packed = fused.packed(torch.float32)
        got = onednn_backend.traced_block_forward(x, *packed)
        check_close(got, ref(x), FP32, f"traced block, {k}x{k} branch 3")
