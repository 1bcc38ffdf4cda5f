"""Transforms the fused ops have no rules for: torch.func's (jvp, grad, vmap), forward-mode AD and
torch.fx symbolic tracing (torchvision's create_feature_extractor).  Under them the fused modules
compute with the reference's stages and their own modules, so every answer is the reference's;
and copies that cannot keep a computed weight say so."""

import copy
import warnings

import pytest
import torch
from model_cases import calibrated_block, calibrated_net, net_tolerance
from torch import nn
from torch.func import functional_call, grad, jvp, vmap

from inception_fast import FusedGoogLeNet, FusedInception, Inception, available_backends, clear_packed_weights, fuse
from inception_fast.testing import TOLERANCE, calibrate, check_close, reduced_precision_bound

# Forward-mode AD's first use loads torch's jvp decompositions, which call the deprecated torch.jit.script
# (a FutureWarning in torch 2.14, a DeprecationWarning in 2.11).
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
FP32 = TOLERANCE["fp32"]
CFG = (16, 8, 6, 8, 4, 6, 5)


def _net():
    ref, _ = calibrated_net("d2l", 32)  # (its fused copy runs the torch backend: built anew with auto)
    return ref, FusedGoogLeNet.from_torchvision(ref).eval(), torch.randn(2, 1, 32, 32)


def _block():
    x = torch.randn(2, 16, 6, 6)
    ref, fused = calibrated_block(CFG, x)
    return ref, fused, x


@pytest.mark.parametrize("make", [_block, _net], ids=["block", "network"])
def test_jvp_tangent_is_the_references(make):
    ref, fused, x = make()
    tangent = torch.randn_like(x)
    out, want = jvp(ref, (x,), (tangent,))
    fused_out, got = jvp(fused, (x,), (tangent,))
    assert want.std() > 0.05, "reference tangent vanished; the comparison could not fail"
    check_close(fused_out, out, FP32, "jvp primal")
    check_close(got, want, FP32, "jvp tangent")


def test_forward_mode_ad_dual_tensors():
    import torch.autograd.forward_ad as fwAD

    ref, fused, x = _net()
    tangent = torch.randn_like(x)
    results = []
    for model in (ref, fused):
        with fwAD.dual_level():
            results.append(fwAD.unpack_dual(model(fwAD.make_dual(x, tangent))).tangent)
    assert results[0].std() > 0.05
    check_close(results[1], results[0], FP32, "forward-mode AD tangent")


@pytest.mark.parametrize("make", [_block, _net], ids=["block", "network"])
def test_func_grad_over_functional_call(make):
    ref, fused, x = make()
    params = {k: v.detach() for k, v in fused.named_parameters()}

    def loss(model):
        return lambda p: functional_call(model, p, (x,)).square().mean()

    want = grad(loss(ref))(params)
    got = grad(loss(fused))(params)
    for name in params:
        check_close(got[name], want[name], FP32, f"d loss / d {name}")


def test_vmap_per_sample():
    ref, fused, x = _net()
    per_sample = vmap(lambda xi: fused(xi.unsqueeze(0)).squeeze(0))(x)
    with torch.no_grad():
        want = ref(x)
    assert want.std() > 0.05
    check_close(per_sample, want, FP32, "vmap over the batch")


def test_feature_extractor_traces_fused_models():
    """create_feature_extractor traces with torch.fx: a fused model traces to the reference's
    computation, and its features are the reference's."""
    from torchvision.models.feature_extraction import create_feature_extractor

    ref, fused, x = _net()
    nodes = {"inception4c": "mid", "fc": "logits"}
    with torch.no_grad():
        want = create_feature_extractor(ref, nodes)(x)
        got = create_feature_extractor(fused, nodes)(x)
    for name in nodes.values():
        assert want[name].std() > 0.05
        check_close(got[name], want[name], FP32, f"feature {name}")


def test_feature_extractor_on_a_fused_torchvision_model():
    torchvision = pytest.importorskip("torchvision")
    from torchvision.models.feature_extraction import create_feature_extractor

    x = torch.randn(2, 3, 64, 64)
    tv = calibrate(torchvision.models.googlenet(aux_logits=False, init_weights=True), torch.randn(4, 3, 64, 64))
    nodes = {"inception4c": "mid", "fc": "logits"}
    with torch.no_grad():
        want = create_feature_extractor(tv, nodes)(x)
        fuse(tv)
        got = create_feature_extractor(tv, nodes)(x)
    for name in nodes.values():
        assert want[name].std() > 0.05
        check_close(got[name], want[name], FP32, f"feature {name}")


def test_computed_weights_are_not_copied_through_state_dict():
    """from_torchvision copies through state_dict, which cannot take a pruned or parametrized
    weight: a clear error.  fuse() keeps such a block as it is (a FusedForeignInception computing
    from the parametrized conv), with the reference's answer."""
    torchvision = pytest.importorskip("torchvision")
    from torch.nn.utils import parametrizations, prune

    x = torch.randn(2, 3, 64, 64)
    for kind in ("prune", "weight_norm"):
        tv = calibrate(torchvision.models.googlenet(aux_logits=False, init_weights=True), torch.randn(4, 3, 64, 64))
        reference = copy.deepcopy(tv)
        for model in (tv, reference):
            conv = model.inception3a.branch2[1].conv
            if kind == "prune":
                prune.l1_unstructured(conv, "weight", amount=0.3)
            else:
                parametrizations.weight_norm(conv)
        with pytest.raises(ValueError, match=r"inception3a\.branch2\.1\.conv.*computed"):
            FusedGoogLeNet.from_torchvision(tv)
        with torch.no_grad():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the pruned block (hooks) is left alone, with a warning
                fuse(tv)
            got = tv(x)
            want = reference(x)
            want64 = reference.double()(x.double())  # (a pruned model cannot be deep-copied)
        assert want.std() > 0.05
        check_close(got, want64, reduced_precision_bound(want, want64), f"fuse() with a {kind} conv")
        if kind == "weight_norm":
            assert type(tv.inception3a).__name__ == "FusedForeignInception"


def test_clear_packed_weights_of_a_fused_torchvision_model():
    torchvision = pytest.importorskip("torchvision")

    x = torch.randn(2, 3, 64, 64)
    tv = calibrate(torchvision.models.googlenet(aux_logits=False, init_weights=True), torch.randn(4, 3, 64, 64))
    fused = fuse(copy.deepcopy(tv))
    with torch.no_grad():
        fused(x)  # packs and caches
        for model in (tv, fused):
            model.inception4c.branch2[1].conv.weight.data.mul_(1.5)  # no version counter moves
        clear_packed_weights(fused)
    ref64, tol = net_tolerance(tv, x)
    with torch.no_grad():
        check_close(fused(x), ref64, tol, "after clear_packed_weights(model)")


@pytest.mark.filterwarnings("ignore:`torch.jit.trace")
def test_torchscript_trace_holds_the_references_ops():
    """torch.jit.trace records the reference's computation (plain ATen ops, passing the trace's own
    check), which computes every batch size and follows nothing of this package."""
    ref, fused, x = _net()
    with torch.no_grad():
        traced = torch.jit.trace(fused, (x,))
        graph = str(traced.inlined_graph)
        assert "inception_fast::" not in graph and "aten::_convolution" in graph
        for n in (1, 3):
            xn = torch.randn(n, *x.shape[1:])
            want = ref(xn)
            assert want.std() > 0.05
            check_close(traced(xn), want, FP32, f"traced, batch {n}")


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")
@pytest.mark.parametrize("dynamo", [True, False], ids=["torch.export", "torchscript"])
def test_onnx_export_holds_the_references_ops(dynamo, tmp_path):
    """torch.onnx.export, on both of its paths, records the reference's computation (ONNX has no
    translation of the fused ops), for the network and a fuse()d block of another class; ONNX
    Runtime then computes the reference's answer (fp32: within 2x the reference's own error)."""
    for module in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(module)  # the bench extra (CI installs it)
    import onnxruntime

    for ref, fused, x in (_net(), _textbook()):
        path = tmp_path / "model.onnx"
        with torch.no_grad():
            torch.onnx.export(fused, (x,), str(path), dynamo=dynamo)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
        ref64, tol = net_tolerance(ref, x)
        check_close(got, ref64, tol, f"ONNX Runtime on the export of {type(fused).__name__}")


@pytest.mark.parametrize("make", [_block, _net], ids=["block", "network"])
def test_export_under_autocast_casts_when_the_program_runs(make):
    """torch.export with autocast on around it bakes no cast into the reference's program: its ATen
    ops cast by the autocast state when it runs.  The fused model's program then holds the
    reference's computation: float32 run plainly, bfloat16 run under autocast, as the reference's."""
    ref, fused, x = make()
    with torch.autocast("cpu", torch.bfloat16):
        program = torch.export.export(fused, (x,)).module()
    with torch.no_grad():
        check_close(program(x), ref(x), FP32, "run without autocast")
        with torch.autocast("cpu", torch.bfloat16):
            got, want = program(x), ref(x)
        assert got.dtype == want.dtype == torch.bfloat16
        check_close(got, want, FP32, "run under autocast")


def test_compile_under_autocast_keeps_the_fused_block():
    """Under autocast, torch.export falls back to the reference's computation; torch.compile does
    not: its graph holds the fused op, with BatchNorm folded (torch 2.11's Dynamo reads
    torch.compiler.is_exporting() as True in any trace, so export's own flag is read)."""
    torch._dynamo.reset()
    _, fused, x = _block()
    fused = copy.deepcopy(fused).to(torch.bfloat16)
    graphs = []

    def keep_graph(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        torch.compile(fused, fullgraph=True, backend=keep_graph)(x.to(torch.bfloat16))
    (gm,) = graphs
    targets = [str(node.target) for node in gm.graph.nodes if node.op == "call_function"]
    assert not [t for t in targets if "batch_norm" in t], targets
    assert [t for t in targets if "inception_fast" in t], targets


def test_export_is_read_from_exports_own_flag(monkeypatch):
    """torch 2.11's Dynamo answers torch.compiler.is_exporting() with True in any trace (torch.compile
    too): the fused modules read export's own flag, which only torch.export sets."""
    from inception_fast import modules

    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)  # what 2.11's Dynamo answers
    monkeypatch.setattr(torch.compiler, "is_dynamo_compiling", lambda: True)
    monkeypatch.setattr(torch.compiler, "_is_exporting_flag", False)
    assert not modules._exporting() and modules._traced_by_compile()
    monkeypatch.setattr(torch.compiler, "_is_exporting_flag", True)
    assert modules._exporting() and not modules._traced_by_compile()


def test_torchscript_script_is_refused_naming_what_works():
    """torch.jit.script cannot compile the fused forward: a clear error naming the ways that
    work, for the network, a block and a fuse()d block of another class (inside any model)."""
    _, fused, _ = _net()
    _, foreign, _ = _textbook()
    for model in (fused, fused.inception3a, foreign, nn.Sequential(foreign)):
        with pytest.raises(TypeError, match=r"torch.jit.script cannot compile .*Use torch.jit.trace"):
            torch.jit.script(model)


def _textbook():
    from test_recognize import TextbookInception

    ref = calibrate(TextbookInception(8, 3, (4, 5), (2, 3), 3), torch.randn(4, 8, 6, 6))
    return ref, fuse(copy.deepcopy(ref), backend="torch"), torch.randn(2, 8, 6, 6)


def test_jvp_inside_torch_compile():
    """torch.compile may trace a transform's body: the functorch level is looked at first, so the
    fused block still answers with the reference's tangent (not the fused op's zero)."""
    torch._dynamo.reset()
    ref, fused, x = _block()
    tangent = torch.randn_like(x)
    want = jvp(ref, (x,), (tangent,))[1]
    got = torch.compile(lambda t: jvp(fused, (t,), (tangent,))[1], backend="aot_eager")(x)
    assert want.std() > 0.05
    check_close(got, want, FP32, "jvp under torch.compile")


def test_a_foreign_blocks_hooks_fire_under_transforms():
    """Under a transform a fused foreign block runs its original forward: every module it calls is
    called, so a hook on one of them fires, and the answer is the original's."""
    ref, fused, x = _textbook()
    calls = []
    fused.p4_1.register_forward_hook(lambda *args: calls.append(1))
    tangent = torch.randn_like(x)
    want = jvp(ref, (x,), (tangent,))[1]
    got = jvp(fused, (x,), (tangent,))[1]
    assert calls == [1] and want.std() > 0.05
    check_close(got, want, FP32, "foreign block jvp tangent")


def test_a_conv_weight_held_as_a_plain_attribute_follows_its_reassignment():
    """Hypernetwork code keeps a conv's weight as a plain tensor attribute and assigns it anew each
    step: the fused block (a foreign one: state_dict cannot copy such a weight) follows it, and its
    structure check compares no tensors."""
    ref, _, x = _textbook()
    w = ref.p2_2.weight.detach().clone()
    del ref.p2_2.weight
    ref.p2_2.weight = w
    fused = fuse(copy.deepcopy(ref), backend="torch")
    assert type(fused).__name__ == "FusedForeignInception"
    with torch.no_grad():
        check_close(fused(x), ref(x), FP32, "a plain-attribute weight")
        for step in range(2):
            w = torch.randn_like(ref.p2_2.weight) * 0.3
            for model in (ref, fused):
                model.p2_2.weight = w.clone()
            want = ref(x)
            assert want.std() > 0.05
            check_close(fused(x), want, FP32, f"after reassignment {step}")


@pytest.mark.parametrize("watched", [False, True], ids=["normal", "inference-weights"])
def test_a_forward_under_fake_tensor_mode_leaves_real_forwards_real(watched):
    """A forward under FakeTensorMode (a trace) with nothing packed yet: the packed weights it
    builds are fake and must not be kept for the real forwards after it; the onednn backend's
    prepacked path, which reads the weights' data, is not taken for a fake input.  With weights
    that are inference tensors, packed by a real forward first: the fake forward does not compare
    their bits (a fake comparison has no data)."""
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

    for backend in available_backends("cpu"):
        ref = Inception(8, 4, 4, 6, 2, 3, 5)
        calibrate(ref, torch.randn(4, 8, 6, 6))
        with torch.inference_mode(watched):
            fused = FusedInception.from_torchvision(ref, backend=backend).eval()
        x = torch.randn(2, 8, 6, 6)
        if watched:
            with torch.inference_mode():
                fused(x)
        with torch.no_grad():
            mode = FakeTensorMode(allow_non_fake_inputs=True)
            with mode:
                fake = fused(mode.from_tensor(x))
            assert isinstance(fake, FakeTensor) and fake.shape == (2, 18, 6, 6)
            got = fused(x)
            assert not isinstance(got, FakeTensor), backend
            check_close(got, ref.eval()(x), TOLERANCE["fp32"], backend)


def test_a_module_built_under_fake_tensor_mode_runs_outside_it_without_reading_data_pointers():
    """A FusedInception whose parameters are FakeTensors (built under FakeTensorMode), called outside
    the mode: a fake result, and the packed-weight cache neither keys on the fake parameters' data
    pointers (deprecated, an error in later PyTorch) nor keeps their pack."""
    import warnings

    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

    with FakeTensorMode():
        fused = FusedInception(16, 8, 6, 8, 4, 6, 5, backend="torch").eval()
        x = torch.randn(2, 16, 7, 7)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*data pointer of FakeTensor")
        with torch.no_grad():
            for _ in range(2):
                out = fused(x)
                assert isinstance(out, FakeTensor) and out.shape == (2, 27, 7, 7)
    assert not fused._pack_cache._entries
