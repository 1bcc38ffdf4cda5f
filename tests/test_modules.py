"""FusedInception / FusedGoogLeNet against the reference and torchvision: parity in every dtype and
layout, the whole network, state_dict, fuse(), gradients and training, torch.compile, bad input
and CUDA-graph capture (the modules layer)."""

import copy
import types
import warnings

import pytest
import torch
import torchvision
from block_cases import ODD
from model_cases import (
    CL,
    FP32,
    FUSED_BLOCK_OP,
    NETWORK,
    OpRecorder,
    calibrated_block,
    calibrated_net,
    net_tolerance,
)

from inception_fast import FusedGoogLeNet, FusedInception, GoogLeNet, Inception, available_backends, fuse
from inception_fast.backends import availability, onednn_backend, resolve
from inception_fast.reference import BLOCK_CONFIGS
from inception_fast.testing import TOLERANCE, calibrate, check_close, reduced_precision_bound, rel_error, same_bits

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
@pytest.mark.parametrize("n,h,w", [(1, 1, 1), (1, 5, 7), (3, 9, 4)])
def test_block_parity_odd_shapes(batch_norm, k, n, h, w):
    x = torch.randn(n, ODD[0], h, w)
    ref, fused = calibrated_block(ODD, torch.randn(4, ODD[0], 6, 6), batch_norm, k)
    with torch.no_grad():
        want = ref(x)
        assert want.std() > 0.05
        check_close(fused(x), want, FP32)


def low_precision_parity(ref, fused, x, dtype, what):
    """The fused model in ``dtype`` against the fp64 reference, within 2x the error the reference
    itself makes in ``dtype`` (TOLERANCE's low-precision rule).  Both models are converted with
    .to(dtype), so their BatchNorm statistics and weights are fp16/bf16 values and the fused model
    folds them from there."""
    ref64 = copy.deepcopy(ref).double().eval()
    ref_low = copy.deepcopy(ref).to(dtype).eval()
    fused_low = copy.deepcopy(fused).to(dtype).eval()
    with torch.no_grad():
        want = ref64(x.double())
        own = ref_low(x.to(dtype))
        got = fused_low(x.to(dtype))
    assert want.std() > 0.05, "reference activations vanished; the comparison could not fail"
    assert got.dtype == dtype
    return check_close(got, want, reduced_precision_bound(own, want), what)


# (backend, dtype): the torch backend in both, Triton under the interpreter (which has no bf16).
LOW_PRECISION_CASES = pytest.mark.parametrize(
    "backend,dtype",
    [("torch", torch.float16), ("torch", torch.bfloat16), ("triton", torch.float16)],
    ids=["torch-fp16", "torch-bf16", "triton-fp16"],
)


def runs_here(backend):
    if backend not in available_backends("cpu"):
        pytest.skip(f"the {backend} backend does not run on this CPU: {availability(backend, 'cpu')}")


@LOW_PRECISION_CASES
@pytest.mark.parametrize("name", ["inception3a", "inception4e"])
def test_block_low_precision_against_fp64(name, backend, dtype):
    runs_here(backend)
    cfg = BLOCK_CONFIGS[name]
    x = torch.randn(2, cfg[0], 5, 7)
    ref, _ = calibrated_block(cfg, x)
    fused = FusedInception.from_torchvision(ref, backend=backend)
    low_precision_parity(ref, fused, x, dtype, f"{name} {backend} {dtype}")


@LOW_PRECISION_CASES
def test_googlenet_low_precision_against_fp64(backend, dtype):
    runs_here(backend)
    ref, _ = calibrated_net("torchvision", 32)
    fused = FusedGoogLeNet.from_torchvision(ref, backend=backend)
    low_precision_parity(ref, fused, torch.randn(2, 3, 32, 32), dtype, f"googlenet {backend} {dtype}")


def test_deprecated_cuda_name_on_cpu_runs_cpp():
    """backend="cuda" on CPU, the compiled C++ kernels' old name, warns and computes what "cpp"
    computes, in FusedGoogLeNet, FusedInception and fuse(); "cpp" matches the reference."""
    runs_here("cpp")
    ref, _ = calibrated_net("torchvision", 32)
    x = torch.randn(2, 3, 32, 32)
    cpp = FusedGoogLeNet.from_torchvision(ref, backend="cpp").eval()
    old = FusedGoogLeNet.from_torchvision(ref, backend="cuda").eval()
    fused_in_place = fuse(copy.deepcopy(ref).eval(), backend="cuda")
    fused_cpp = fuse(copy.deepcopy(ref).eval(), backend="cpp")  # only the blocks: not FusedGoogLeNet's stem
    block = FusedInception.from_torchvision(ref.inception4a, backend="cuda").eval()
    deprecated = "backend 'cuda' on cpu is a deprecated name of the 'cpp' backend"
    with torch.no_grad():
        want = cpp(x)
        with pytest.warns(DeprecationWarning, match=deprecated):
            assert old.backend == "cpp"
            assert torch.equal(old(x), want)
        with pytest.warns(DeprecationWarning, match=deprecated):
            assert torch.equal(fused_in_place(x), fused_cpp(x))
        x4a = torch.randn(2, BLOCK_CONFIGS["inception4a"][0], 3, 3)
        with pytest.warns(DeprecationWarning, match=deprecated):
            assert torch.equal(block(x4a), FusedInception.from_torchvision(ref.inception4a, backend="cpp").eval()(x4a))
    ref64, tol = net_tolerance(ref, x)
    check_close(want, ref64, tol, "FusedGoogLeNet[cpp]")


def test_block_from_torchvision_block():
    from torchvision.models.googlenet import Inception as TVInception

    tv = TVInception(*BLOCK_CONFIGS["inception4e"])
    x = torch.randn(2, 528, 4, 4)
    calibrate(tv, x)
    fused = FusedInception.from_torchvision(tv).eval()
    assert fused.backend == resolve("auto", "cpu")  # "onednn" where it runs, else "torch"
    with torch.no_grad():
        check_close(fused(x), tv(x), FP32)


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


@pytest.mark.parametrize("backend", ["torch", "onednn"])
def test_paper_variant_bfloat16_on_cpu(backend):
    """PyTorch has no 16-bit LocalResponseNorm on the CPU: the paper variant's normalises such
    input in float32 and rounds once, and the fused network in bfloat16 follows its reference (on
    a CPU without oneDNN's bfloat16 convolutions the onednn backend refuses it by name instead)."""
    lrn = GoogLeNet(variant="paper").lrn1
    x = torch.randn(2, 64, 9, 9).to(torch.bfloat16)
    assert same_bits(lrn(x), torch.nn.functional.local_response_norm(x.float(), 5, 1e-4, 0.75, 1.0).bfloat16())
    ref = calibrated_net("paper", 64)[0]
    fused = FusedGoogLeNet.from_torchvision(ref, backend=backend).eval()
    x = torch.randn(2, 3, 64, 64)
    if backend == "onednn" and not onednn_backend.bf16_supported():
        with torch.no_grad(), pytest.raises(TypeError, match="'onednn' backend computes bfloat16 only on CPUs with"):
            fused.bfloat16()(x.bfloat16())
        return
    with torch.no_grad():
        ref16 = copy.deepcopy(ref).bfloat16()(x.bfloat16())
        ref64 = copy.deepcopy(ref).double()(x.double())
        got = fused.bfloat16()(x.bfloat16())
    assert got.dtype == torch.bfloat16 and ref16.std() > 0.05
    check_close(got, ref64, reduced_precision_bound(ref16, ref64))


def test_aux_heads_in_training():
    """The aux heads in training, on the paper's variant: without BatchNorm its training forward
    runs the folded fused ops (train-mode BatchNorm is tested in tests/test_train_bn.py).  fp32
    through a whole net: 2x the reference's own error against fp64."""
    ref = GoogLeNet(variant="paper", aux_logits=True)
    calibrate(ref, torch.randn(4, 3, 64, 64))
    fused = FusedGoogLeNet.from_torchvision(ref, backend="torch")
    assert fused.aux1 is not None
    ref.train(), fused.train()
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(3)  # the same dropout masks in all three
    want = ref(x)
    torch.manual_seed(3)
    want64 = copy.deepcopy(ref).double()(x.double())
    torch.manual_seed(3)
    with OpRecorder() as rec:
        got = fused(x)
    assert rec.ops.count(FUSED_BLOCK_OP) == 9, "the training forward did not run the fused blocks"
    assert len(got) == 3
    for g, w, w64 in zip(got, want, want64):
        check_close(g, w64, reduced_precision_bound(w, w64))
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
    ref64, tol = net_tolerance(tv.eval(), x)
    model = fuse(tv, backend="torch")
    assert model is tv
    blocks = [m for m in model.modules() if isinstance(m, FusedInception)]
    assert len(blocks) == 9 and all(b.backend == "torch" for b in blocks)
    with torch.no_grad():
        check_close(model(x), ref64, tol)
    seq = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), Inception(16, 4, 4, 8, 2, 4, 4, batch_norm=False))
    fuse(seq)
    assert isinstance(seq[1], FusedInception) and not seq[1].batch_norm
    single = fuse(Inception(16, 4, 4, 8, 2, 4, 4))
    assert isinstance(single, FusedInception)


# -- training / gradients ------------------------------------------------------------------------


def _grads(model, x, target):
    """([gradient of x, of every parameter], the ops the forward dispatched)."""
    model.zero_grad()
    x = x.clone().requires_grad_(True)
    with OpRecorder() as rec:
        out = model(x)
    out = out.logits if hasattr(out, "logits") else out
    (out * target).sum().backward()
    return [x.grad] + [p.grad for p in model.parameters()], rec.ops


# Gradients through the fused op: BatchNorm blocks in eval mode (folded; the gradient reaches the BN
# parameters through the fold), BN-free blocks in eval and train mode.  Train-mode BatchNorm (its own
# op) is tests/test_train_bn.py's.
@pytest.mark.parametrize("batch_norm,train", [(True, False), (False, False), (False, True)])
def test_block_gradients_match_reference(batch_norm, train):
    cfg = (24, 8, 6, 10, 4, 6, 5)
    x = torch.randn(3, 24, 6, 5)
    ref, fused = calibrated_block(cfg, x, batch_norm=batch_norm, k=5)
    ref.train(train), fused.train(train)
    target = torch.randn_like(ref(x))
    (got, ops), (want, _) = _grads(fused, x, target), _grads(ref, x, target)
    assert ops.count(FUSED_BLOCK_OP) == 1, "the fused block op did not run"
    assert [g is None for g in got] == [w is None for w in want]
    for g, w in zip(got, want):
        if w is not None:
            check_close(g, w, FP32, "gradient")


@pytest.mark.parametrize("variant,size,train", [("torchvision", 32, False), ("d2l", 32, True)])
def test_googlenet_training_step_matches_reference(variant, size, train):
    """A training step's gradients through the nine fused blocks: torchvision's variant in eval mode
    (BatchNorm folded), d2l's (no BatchNorm) in train mode.  fp32 through a whole net: within 2x
    the reference's own fp32 error against the fp64 gradients, input by input, on all but a third
    of INPUTS inputs.

    Not on all, because through a whole net that error is discrete: where two values in a max pool
    window (or a ReLU's input and 0) are closer than fp32's rounding, fp32 and fp64 route the
    gradient differently, and one such flip in a deep layer moves the input gradient by 3e-3 to
    5e-2.  An input has none (~1e-6) or a few, in the fused model and in the reference alike but
    not on the same inputs, and which ones depends on the CPU's convolution kernels (and on the
    layout: the fused model computes in channels_last, so the reference's error on an input is the
    larger of its two layouts').  The more pixels, the more flips: measured over 16 inputs,
    torchvision's variant flips on 0-3 at 32x32, 3-6 at 48x48 and 5-7 at 64x64.  A wrong gradient
    is wrong on every input."""
    ref, fused = calibrated_net(variant, size)
    ref.train(train), fused.train(train)
    ref.dropout.p = fused.dropout.p = 0.0
    ref64 = copy.deepcopy(ref).double()
    off = {"input": [], "parameter": []}  # per input where the fused gradients are off
    for _ in range(INPUTS):
        x = torch.randn(2, ref.in_channels, size, size)
        target = torch.randn(2, ref.num_classes)
        (got, ops), (want, _) = _grads(fused, x, target), _grads(ref, x, target)
        want_cl, _ = _grads(ref, x.contiguous(memory_format=torch.channels_last), target)
        want64, _ = _grads(ref64, x.double(), target.double())
        assert ops.count(FUSED_BLOCK_OP) == 9, "the fused block op did not run in every block"
        assert [g is None for g in got] == [w is None for w in want]
        for what, sl in (("input", slice(0, 1)), ("parameter", slice(1, None))):
            # fused, reference (NCHW input), reference (channels_last input), fp64 reference
            f, r, r_cl, r64 = (
                torch.cat([g.flatten() for g in grads[sl] if g is not None]) for grads in (got, want, want_cl, want64)
            )
            err, tol = rel_error(f, r64), max(reduced_precision_bound(w, r64) for w in (r, r_cl))
            assert err <= FLIP_MOST, f"{variant} {what} gradients off by {err:.1e}: more than a flip"
            if not err <= tol:
                off[what].append(f"{err:.1e} > {tol:.1e}")
    for what, errors in off.items():
        assert len(errors) <= INPUTS // 3, (
            f"{variant} {what} gradients off on {len(errors)} of {INPUTS} inputs: {errors}"
        )


# Inputs of test_googlenet_training_step_matches_reference, each compared on its own; and the
# most a flip moved a gradient there (measured 3e-3 to 5e-2), with room.
INPUTS = 12
FLIP_MOST = 0.1


# -- torch.compile and opcheck -------------------------------------------------------------------


def test_compile_fullgraph_without_graph_breaks(tmp_path, monkeypatch):
    # With the choice store on, as users have it: tracing must not read it (a file read breaks the graph).
    monkeypatch.setenv("INCEPTION_FAST_CHOICE_CACHE", str(tmp_path))
    torch._dynamo.reset()
    ref, fused = calibrated_net("torchvision", 64)
    x = torch.randn(2, 3, 64, 64)
    compiled = torch.compile(fused, fullgraph=True, backend="aot_eager")
    # Dynamo warns once per process per message (a memo emptied here): tracing the model warns
    # about nothing, not even a memoised helper (Dynamo warns at every lru_cache it meets).
    monkeypatch.setattr(torch._dynamo.utils, "warn_once_cache", set(), raising=False)
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_close(compiled(x), fused(x), FP32)
    assert not [str(w.message) for w in caught]
    with torch.no_grad():
        check_close(compiled(x), fused(x), FP32)  # again, after an eager forward filled the caches
        fused.inception4a.branch2[1].conv.weight.mul_(0.5)  # the compiled graph sees weight changes
        check_close(compiled(x), fused(x), FP32)
    block = FusedInception(32, 8, 8, 16, 4, 8, 8).eval()
    calibrate(block, torch.randn(2, 32, 5, 5))
    xb = torch.randn(2, 32, 5, 5, requires_grad=True)
    cb = torch.compile(block, fullgraph=True, backend="aot_eager")
    cb(xb).sum().backward()  # autograd.Function traces too
    assert xb.grad is not None


@pytest.mark.parametrize("backend", ["auto", "onednn"])
def test_compile_on_cpu_traces_the_block_as_plain_convolutions(backend):
    """torch.compile of a fused model on CPU (backend auto or onednn) traces each block as ATen
    convolutions, ReLU, max pool and cat (inductor then prepacks and fuses them, as it does
    torchvision's model), not as the package's op, which inductor could only call as it is (its
    oneDNN form reordering the weights on every call); torch.export still records the op.  The
    compiled model computes the eager one's answer."""
    if availability("onednn", "cpu") is not None:  # (auto on CPU is then the torch backend's op)
        pytest.skip(f"onednn: {availability('onednn', 'cpu')}")
    torch._dynamo.reset()
    ref, fused = calibrated_net("torchvision", 64)
    fused = FusedGoogLeNet.from_torchvision(ref, backend=backend).eval()
    graphs = []

    def keep_graph(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        got = torch.compile(fused, fullgraph=True, backend=keep_graph)(x)
        check_close(got, fused(x), FP32, "compiled on CPU")
    (gm,) = graphs
    targets = [str(node.target) for node in gm.graph.nodes if node.op == "call_function"]
    assert not [t for t in targets if "inception_fast" in t]
    assert sum("conv2d" in t for t in targets) >= 9 * 6  # six convs a block, and the stem's
    program = torch.export.export(fused, (x,))
    assert any("inception_fast" in str(node.target) for node in program.graph.nodes if node.op == "call_function")


def test_compile_on_cpu_keeps_nan_and_refuses_what_eager_refuses():
    """The block traced for torch.compile on CPU: a NaN pixel comes out where the reference puts
    it (ATen's ReLU keeps it; inductor's fused conv + ReLU with freezing is inductor's, as for
    compiled torchvision), and a named onednn backend refuses float16 as it does eagerly."""
    if availability("onednn", "cpu") is not None:
        pytest.skip(f"onednn: {availability('onednn', 'cpu')}")
    torch._dynamo.reset()
    block = FusedInception(16, 4, 4, 8, 2, 4, 4).eval()
    calibrate(block, torch.randn(2, 16, 6, 6))
    x = torch.randn(2, 16, 6, 6).contiguous(memory_format=torch.channels_last)
    x[1, 3, 2, 4] = float("nan")
    with torch.no_grad():
        want = Inception.forward(block, x)
        got = torch.compile(block, fullgraph=True, backend="aot_eager")(x)
    assert torch.equal(got.isnan(), want.isnan()) and got.isnan().any()
    check_close(got[0], want[0], FP32, "the image without NaN")
    named = FusedInception(16, 4, 4, 8, 2, 4, 4, backend="onednn").eval().half()
    xh = torch.randn(2, 16, 6, 6, dtype=torch.float16)
    with torch.no_grad():
        with pytest.raises(TypeError, match="'onednn' backend computes in float32 and bfloat16"):
            named(xh)
        with pytest.raises(TypeError, match="'onednn' backend computes in float32 and bfloat16"):
            torch.compile(named, fullgraph=True, backend="eager")(xh)


def test_compile_with_dynamic_shapes_and_export():
    """Compiled before any eager forward, with dynamic sizes (dynamic=True, mark_dynamic) and
    torch.export with a dynamic batch: no measured choice is keyed by a symbolic size, so nothing
    specialises it, and every size gets the eager answer."""
    torch._dynamo.reset()
    ref, fused = calibrated_net("torchvision", 64)
    compiled = torch.compile(fused, fullgraph=True, dynamic=True, backend="aot_eager")
    marked = torch.compile(fused, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        for n in (2, 3):
            x = torch.randn(n, 3, 64, 64)
            check_close(compiled(x), fused(x), FP32, f"dynamic=True, batch {n}")
            torch._dynamo.mark_dynamic(x, 0)
            check_close(marked(x), fused(x), FP32, f"mark_dynamic, batch {n}")
        batch = torch.export.Dim("batch", min=1, max=16)
        program = torch.export.export(fused, (torch.randn(2, 3, 64, 64),), dynamic_shapes={"x": {0: batch}})
        x = torch.randn(3, 3, 64, 64)
        check_close(program.module()(x), fused(x), FP32, "exported with a dynamic batch")


def test_meta_device_forward_gives_shapes():
    net = FusedGoogLeNet().eval().to("meta")
    out = net(torch.empty(2, 3, 64, 64, device="meta"))
    assert out.shape == (2, 1000) and out.device.type == "meta"
    block = FusedInception(16, 4, 4, 8, 2, 4, 4).eval().to("meta")
    assert block(torch.empty(1, 16, 5, 5, device="meta")).shape == (1, 20, 5, 5)


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
    with pytest.raises(TypeError, match="floating-point"):
        block(torch.randint(0, 3, (1, 16, 5, 5)))
    for backend in [b for b in ("torch", "cpp", "onednn") if b in available_backends("cpu")]:
        with torch.inference_mode(), pytest.raises(TypeError, match="dense tensor, got layout torch.sparse_coo"):
            FusedGoogLeNet(init_weights=False, backend=backend).eval()(torch.randn(1, 3, 32, 32).to_sparse())
        with pytest.raises(TypeError, match="dense tensor, got layout torch.sparse_coo"):
            FusedInception(16, 4, 4, 8, 2, 4, 4, backend=backend).eval()(torch.randn(1, 16, 5, 5).to_sparse())
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


def test_float64_runs_the_reference_computation():
    """float64 (gradcheck's dtype) runs the model's own modules: a float64 model answers as the
    reference does, and the error for a float64 input to a float32 model names a cast that works."""
    ref, fused = calibrated_net("torchvision", 64)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"the model with \.to\(torch\.float64\)"):
        fused(x)
    ref, fused = ref.double(), fused.double()
    with torch.no_grad(), OpRecorder() as rec:
        got = fused(x)
    check_close(got, ref(x), TOLERANCE["same_ops"])
    assert not [op for op in rec.ops if op.startswith("inception_fast.")], "a fused op ran in float64"
    block = FusedInception(8, 3, 4, 5, 2, 3, 3).double().eval()
    calibrate(block, torch.randn(4, 8, 5, 5, dtype=torch.float64))
    xb = torch.randn(1, 8, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(block, (xb,))


def _hook_pairs():
    """(where, register(model) -> handle): hooks that change what they see, so a skipped one shows."""
    scale = lambda module, args, out: out * 0.5  # noqa: E731
    shift = lambda module, args: (args[0] + 0.25,)  # noqa: E731
    return [
        ("block", lambda m: m.inception4c.register_forward_hook(scale)),
        ("conv in a block", lambda m: m.inception4c.branch2[1].conv.register_forward_hook(scale)),
        ("bn in a block", lambda m: m.inception3a.branch4[1].bn.register_forward_pre_hook(shift)),
        ("stem conv", lambda m: m.conv2.conv.register_forward_hook(scale)),
        ("pool", lambda m: m.maxpool3.register_forward_pre_hook(shift)),
        ("head", lambda m: m.fc.register_forward_pre_hook(shift)),
        (
            "global",
            lambda m: torch.nn.modules.module.register_module_forward_hook(
                lambda module, args, out: out * 0.9 if isinstance(module, torch.nn.BatchNorm2d) else None
            ),
        ),
    ]


# The fused blocks a forward runs with the hook in place: all nine but the one with a hook inside it
# (a hook on a block itself fires around its fused forward; a global one on every BatchNorm is
# inside all of them).
_FUSED_BLOCKS_HOOKED = {"conv in a block": 8, "bn in a block": 8, "global": 0}


@pytest.mark.parametrize("where", [w for w, _ in _hook_pairs()])
def test_hooks_run_as_in_the_reference(where):
    """A hook anywhere in the network fires and acts as in the reference: the stage holding it runs
    its own modules; the other stages stay fused.  Removing it brings the fused forward back."""
    register = dict(_hook_pairs())[where]
    ref, fused = calibrated_net("torchvision", 64)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        plain = fused(x)
    handles = [register(ref), register(fused)]
    try:
        ref64, tol = net_tolerance(ref, x)
        with torch.no_grad(), OpRecorder() as hooked_ops:
            hooked = fused(x)
    finally:
        for handle in handles:
            handle.remove()
    assert rel_error(ref64, plain) > 100 * tol, "the hook should have changed the output"
    check_close(hooked, ref64, tol, f"a hook on the {where}")
    assert hooked_ops.ops.count(FUSED_BLOCK_OP) == _FUSED_BLOCKS_HOOKED.get(where, 9), "the other blocks stay fused"
    with torch.no_grad(), OpRecorder() as after:
        check_close(fused(x), plain, tol, "after the hook's removal")
    assert after.ops.count(FUSED_BLOCK_OP) == 9, "every block fused again after the hook's removal"


def test_hooks_inside_a_standalone_block_run():
    cfg = (16, 8, 6, 8, 4, 6, 5)
    x = torch.randn(2, 16, 6, 6)
    ref, fused = calibrated_block(cfg, x)
    seen = []
    for block in (ref, fused):
        block.branch3[1].conv.register_forward_hook(lambda m, a, out: seen.append(1) or out * 2)
    with torch.no_grad():
        check_close(fused(x), ref(x), FP32)
    assert len(seen) == 2
    # a full backward hook, which changes the gradient it passes on, fires too
    ref, fused = calibrated_block(cfg, x)
    grads = []
    for block in (ref, fused):
        block.branch3[1].conv.register_full_backward_hook(lambda m, grad_in, grad_out: (grad_in[0] * 3,))
        xi = x.clone().requires_grad_(True)
        block(xi).sum().backward()
        grads.append(xi.grad)
    check_close(grads[1], grads[0], FP32, "input gradient through a backward hook")


def test_a_fused_network_pickles():
    import io

    _, fused = calibrated_net("torchvision", 64)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = fused(x)  # with its caches filled
    buffer = io.BytesIO()
    torch.save(fused, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    with torch.no_grad():
        check_close(loaded(x), want, FP32)


def test_from_torchvision_keeps_batchnorm_settings_and_modes():
    """BatchNorm eps and momentum set per layer, and a BatchNorm frozen in eval mode inside a model
    in train mode, come through from_torchvision and fuse(): eval and train forwards as the source."""
    tv = torchvision.models.googlenet(aux_logits=False, init_weights=True)
    calibrate(tv, torch.randn(4, 3, 64, 64))
    for bn in (tv.conv1.bn, tv.inception3a.branch2[1].bn, tv.inception5b.branch1.bn):
        bn.eps, bn.momentum = 1e-5, 0.3
    for name, module in tv.named_modules():
        if name.startswith("inception4") and isinstance(module, torch.nn.BatchNorm2d):
            module.eps = 0.2  # a whole block's: still folded
    x = torch.randn(2, 3, 64, 64)
    for make in ("from_torchvision", "fuse"):
        source = copy.deepcopy(tv).eval()
        fused = (
            FusedGoogLeNet.from_torchvision(source, backend="torch")
            if make == "from_torchvision"
            else fuse(copy.deepcopy(source), backend="torch")
        )
        for (name, a), (_, b) in zip(source.named_modules(), fused.named_modules()):
            if isinstance(a, torch.nn.BatchNorm2d):
                assert (b.eps, b.momentum) == (a.eps, a.momentum), f"{make}: {name}"
        modes = {name: m.training for name, m in source.named_modules()}
        assert all(m.training == modes.get(name, source.training) for name, m in fused.named_modules()), make
        ref64, tol = net_tolerance(source, x)
        with torch.no_grad():
            check_close(fused(x), ref64, tol, f"{make}: eval")
        source.train()
        source.inception3b.branch1.bn.eval()  # frozen
        source.dropout.eval()  # (random otherwise)
        fused = (
            FusedGoogLeNet.from_torchvision(source, backend="torch")
            if make == "from_torchvision"
            else fuse(copy.deepcopy(source), backend="torch")
        )
        assert not fused.inception3b.branch1.bn.training and fused.inception3b.branch2[0].bn.training, make
        with torch.no_grad():
            want = source(x)
            got = fused(x)
            got = got.logits if hasattr(got, "logits") else got
            want = want.logits if hasattr(want, "logits") else want
        check_close(got, want, FP32, f"{make}: train mode with a frozen BatchNorm")
    hooked = copy.deepcopy(tv)
    hooked.inception3a.branch2[1].bn.register_forward_hook(lambda *args: None)
    fused = FusedGoogLeNet.from_torchvision(hooked, backend="torch")
    assert not fused.inception3a.branch2[1].bn._forward_hooks, "a copied BatchNorm keeps no hook of the original's"


def test_from_torchvision_takes_a_fine_tuned_head_with_aux_heads_and_a_greyscale_conv1():
    """Our GoogLeNet fine-tuned to 5 classes with its fc a Sequential and its aux heads kept, and
    one given a 1-channel conv1: converted, with the reference's outputs."""
    torch.manual_seed(0)
    model = GoogLeNet(variant="torchvision", num_classes=5, aux_logits=True)
    model.fc = torch.nn.Sequential(torch.nn.Dropout(0.3), torch.nn.Linear(1024, 5))
    model.conv1.conv = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    calibrate(model, torch.randn(4, 1, 64, 64))
    fused = FusedGoogLeNet.from_torchvision(model.eval(), backend="torch").eval()
    x = torch.randn(2, 1, 64, 64)
    ref64, tol = net_tolerance(model, x)
    with torch.no_grad():
        check_close(fused(x), ref64, tol)


def test_from_torchvision_takes_the_models_own_max_pools():
    """A paper-variant model whose maxpool4 is 2x2/2 (one saved before that variant's became the
    paper's 3x3/2): the conversion computes as the model does, and its size check follows the
    pools it holds."""
    torch.manual_seed(0)
    model = GoogLeNet(variant="paper")
    model.maxpool4 = torch.nn.MaxPool2d(2, 2, ceil_mode=True)
    calibrate(model, torch.randn(4, 3, 64, 64))
    fused = FusedGoogLeNet.from_torchvision(model, backend="torch").eval()
    x = torch.randn(2, 3, 64, 64)
    ref64, tol = net_tolerance(model, x)
    with torch.no_grad():
        check_close(fused(x), ref64, tol)
    n = model.min_input_size()
    assert fused.min_input_size() == n < GoogLeNet(variant="paper").min_input_size()
    with torch.no_grad():
        assert fused(torch.randn(1, 3, n, n)).shape == (1, 1000)
    with pytest.raises(ValueError, match="too small"):
        fused(torch.randn(1, 3, n - 1, n - 1))


def test_frozen_and_tied_parameters_stay_frozen_and_tied():
    """A frozen parameter (fine-tuning a head on a frozen backbone) stays frozen and one parameter
    tied across two blocks stays one: from_torchvision in its copy (the source untouched), fuse()
    by keeping the block's own objects (an optimizer built before fuse() trains the fused model)."""
    tv = torchvision.models.googlenet(aux_logits=False, init_weights=True)
    calibrate(tv, torch.randn(4, 3, 64, 64))
    for p in tv.parameters():
        p.requires_grad_(False)
    tv.fc.weight.requires_grad_(True)
    tv.inception4c.branch4[1].conv.weight = tv.inception4b.branch4[1].conv.weight
    x = torch.randn(2, 3, 64, 64)

    copied = FusedGoogLeNet.from_torchvision(tv, backend="torch")
    tied = copied.inception4b.branch4[1].conv.weight
    assert copied.inception4c.branch4[1].conv.weight is tied and tied is not tv.inception4b.branch4[1].conv.weight
    assert [n for n, p in copied.named_parameters() if p.requires_grad] == ["fc.weight"]
    assert len(list(copied.parameters())) == len(list(tv.parameters()))

    source = copy.deepcopy(tv).eval()
    before = {id(p) for p in source.parameters()}
    source_tied = source.inception4b.branch4[1].conv.weight.requires_grad_(True)
    optimizer = torch.optim.SGD([source.fc.weight, source_tied], lr=0.5)
    fused = fuse(source, backend="torch")
    assert {id(p) for p in fused.parameters()} == before
    assert isinstance(fused.inception4b, FusedInception)
    assert fused.inception4c.branch4[1].conv.weight is fused.inception4b.branch4[1].conv.weight
    trainable = ["inception4b.branch4.1.conv.weight", "fc.weight"]  # (named once: the tie is one parameter)
    assert [n for n, p in fused.named_parameters() if p.requires_grad] == trainable
    with torch.no_grad():  # an edit through one name reaches both blocks, as in the source
        fused.inception4b.branch4[1].conv.weight.mul_(3)
        tv.inception4b.branch4[1].conv.weight.mul_(3)
        check_close(fused(x), tv.eval()(x), FP32, "after an in-place edit of a tied weight")
    kept = fused.inception4c.branch4[1].conv.weight.detach().clone()
    fused(x).square().sum().backward()
    optimizer.step()  # built before fuse(): it trains the fused blocks' weight
    assert not torch.equal(fused.inception4c.branch4[1].conv.weight, kept), "the optimizer missed the fused weight"


@pytest.mark.parametrize(
    "backend,how",
    [("auto", "built")] + [("cpp", how) for how in ("built", "unpickled") if "cpp" in available_backends("cpu")],
)
def test_compile_fullgraph_before_any_eager_forward(tmp_path, backend, how):
    """torch.compile(fullgraph=True) as the first thing a fresh process does with a block, built or
    unpickled: the backend plugins and the compiled extension (the cpp backend's) load at
    construction and at unpickling, not while dynamo traces the first forward."""
    import subprocess
    import sys

    path = tmp_path / "block.pt"
    torch.save(FusedInception(32, 8, 8, 16, 4, 8, 8, backend=backend).eval(), path)
    code = (
        "import sys, torch\n"
        "from inception_fast.testing import TOLERANCE, check_close\n"
        "if sys.argv[1] == 'built':\n"
        "    from inception_fast import FusedInception\n"
        "    b = FusedInception(32, 8, 8, 16, 4, 8, 8, backend=sys.argv[2]).eval()\n"
        "else:\n"
        "    b = torch.load(sys.argv[1], weights_only=False)\n"
        "c = torch.compile(b, fullgraph=True, backend='aot_eager')\n"
        "x = torch.randn(2, 32, 5, 5)\n"
        "with torch.no_grad():\n"
        "    check_close(c(x), b(x), TOLERANCE['fp32'])\n"
        "print('ok')\n"
    )
    args = ["built" if how == "built" else str(path), backend]
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


def test_captured_forward_needs_a_cuda_input_and_eval_mode():
    from inception_fast import CapturedForward

    with pytest.raises(ValueError, match="CapturedForward needs a CUDA example input, got cpu"):
        CapturedForward(FusedGoogLeNet(variant="d2l").eval(), torch.randn(1, 1, 32, 32))
    model = FusedGoogLeNet(variant="d2l").eval()
    model.inception3a.train()
    with pytest.raises(
        ValueError, match="for inference, but FusedInception 'inception3a' is in train mode.*call .eval"
    ):
        CapturedForward(model, torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="but the module is in train mode"):
        CapturedForward(FusedGoogLeNet(variant="d2l"), torch.randn(1, 1, 32, 32))
    with pytest.raises(TypeError, match="CapturedForward expects an nn.Module, got function"):
        CapturedForward(lambda x: x, torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="CapturedForward needs a CUDA example input, got list"):
        CapturedForward(FusedGoogLeNet(variant="d2l").eval(), [1.0])


def test_a_captured_forward_takes_only_the_input_it_was_captured_for():
    """A call with another shape, dtype or device is refused, naming both, before anything is
    copied into the graph's input buffer (a copy would cast or fail inside the replay).  Checked
    without a GPU on a CapturedForward whose graph is a stand-in (another device: the meta device)."""
    from inception_fast import CapturedForward

    fast = CapturedForward.__new__(CapturedForward)
    fast.static_input = torch.zeros(1, 3, 8, 8, dtype=torch.bfloat16)
    fast.graph, fast.static_output = types.SimpleNamespace(replay=lambda: None), torch.ones(1, 10)
    assert fast(torch.randn(1, 3, 8, 8, dtype=torch.bfloat16)) is fast.static_output
    # An input that requires grad: its values only, the buffer gets no autograd history.
    x = torch.randn(1, 3, 8, 8, dtype=torch.bfloat16, requires_grad=True)
    assert fast(x) is fast.static_output and torch.equal(fast.static_input, x.detach())
    assert not fast.static_input.requires_grad and fast.static_input.grad_fn is None
    for other in (
        torch.randn(1, 3, 8, 8),
        torch.randn(2, 3, 8, 8, dtype=torch.bfloat16),
        torch.randn(1, 3, 8, 8, dtype=torch.float64),
        torch.empty(1, 3, 8, 8, dtype=torch.bfloat16, device="meta"),
    ):
        before = fast.static_input.clone()
        with pytest.raises(ValueError, match=r"captured for input \(1, 3, 8, 8\) torch.bfloat16 on cpu, got"):
            fast(other)
        assert torch.equal(fast.static_input, before)
    with pytest.raises(TypeError, match="expected a torch.Tensor, got list"):
        fast([1.0])


def test_from_torchvision_keeps_aux_logits_off_on_a_model_with_aux_heads():
    """A torchvision googlenet built with aux heads and then told not to return them (aux_logits =
    False, as before fine-tuning without them): the copy keeps the heads and the setting, so in
    train mode it returns the logits alone, as the original does."""
    tv = torchvision.models.googlenet(aux_logits=True, init_weights=True)
    tv.aux_logits = False
    fused = FusedGoogLeNet.from_torchvision(tv, backend="torch")
    assert fused.aux1 is not None and fused.aux_logits is False
    tv.train(), fused.train()
    x = torch.randn(2, 3, 64, 64)
    assert isinstance(tv(x), torch.Tensor) and isinstance(fused(x), torch.Tensor)


def test_the_captured_input_buffer_is_an_ordinary_tensor_without_history():
    """CapturedForward's input buffer, made under inference_mode or from an input that requires
    grad: writable outside inference mode, no autograd history, the example's layout and values."""
    from inception_fast.graphs import static_copy

    with torch.inference_mode():
        made_inside = static_copy(torch.randn(1, 3, 4, 4))
    assert not made_inside.is_inference()
    made_inside.copy_(torch.randn(1, 3, 4, 4))  # an inference tensor raises here
    leaf = torch.randn(1, 3, 4, 4, requires_grad=True)
    example = (leaf * 2).contiguous(memory_format=CL)
    buf = static_copy(example)
    assert not buf.requires_grad and buf.grad_fn is None
    assert buf.stride() == example.stride() and torch.equal(buf, example)


@pytest.mark.gpu
@NETWORK
@pytest.mark.parametrize("backend", ["auto", "triton", "cuda"])
def test_gpu_googlenet_captured_forward(cuda_device, backend):
    """Batch 1 is meant to run as a CUDA graph: capture, feed a new input, replay, and get the
    eager answer for it; after a weight change and an eager call (which repacks), the graph still
    computes with the weights it captured, from memory that was kept alive."""
    from inception_fast import CapturedForward

    if backend != "auto" and backend not in available_backends(cuda_device):
        pytest.skip(f"backend {backend!r} is unavailable on {cuda_device}")
    ref, _ = calibrated_net("torchvision", 64)
    model = FusedGoogLeNet.from_torchvision(ref, backend=backend).eval().to(cuda_device, torch.bfloat16)
    shape = (1, 3, 64, 64)
    fast = CapturedForward(model, torch.randn(shape, device=cuda_device, dtype=torch.bfloat16))
    x = torch.randn(shape, device=cuda_device, dtype=torch.bfloat16)
    with torch.inference_mode():
        replayed = fast(x).clone()
        eager = model(x)
        assert eager.float().std() > 0.05, "logits vanished; the comparison could not fail"
        check_close(replayed.float(), eager.float(), FP32)
        for p in model.inception4a.parameters():
            p.mul_(0.5)
        changed = model(x)  # repacks 4a; the graph's packed weights must survive
        torch.cuda.synchronize()
        assert rel_error(changed.float(), eager.float()) > 1e-2
        check_close(fast(x).float(), replayed.float(), FP32)
    with pytest.raises(ValueError, match=r"captured for input \(1, 3, 64, 64\)"):
        fast(torch.randn(2, 3, 64, 64, device=cuda_device, dtype=torch.bfloat16))
    with torch.inference_mode():  # built under inference_mode, called outside it
        inside = CapturedForward(model, torch.randn(shape, device=cuda_device, dtype=torch.bfloat16))
    check_close(inside(x).float(), changed.float(), FP32)
