"""The ops layer: the block op's kernels through the registry (one GEMM for the three 1x1s, no cat),
opcheck, unavailable backends, and backend="auto" measuring and choosing (inception_fast.choices)."""

import re

import pytest
import torch
from model_cases import CL, FP32, OpRecorder, calibrated_block, op_backends

from inception_fast import FusedInception, Inception, available_backends
from inception_fast.reference import BLOCK_CONFIGS
from inception_fast.testing import calibrate, check_close, reduced_precision_bound


def test_block_forward_has_no_cat_and_one_reduction_gemm():
    cfg = BLOCK_CONFIGS["inception3a"]
    x = torch.randn(2, cfg[0], 5, 5).contiguous(memory_format=CL)
    _, fused = calibrated_block(cfg, x)
    from inception_fast import backends

    with torch.no_grad():
        packed = fused.packed()
        with OpRecorder() as rec:
            backends.get("torch").op("inception_block")(x, *packed)
    assert not [op for op in rec.ops if "cat" in op], rec.ops
    # ONE product for the three input-reading 1x1s, one for the pool projection.
    assert sum(op == "aten.addmm" for op in rec.ops) == 2, rec.ops


@pytest.mark.parametrize("backend", op_backends("inception_block"))
@pytest.mark.parametrize("fmt", ["nchw", "cl"])
def test_opcheck_inception_block(fmt, backend):
    from inception_fast.packing import pack_block

    block = Inception(12, 4, 5, 6, 3, 4, 3, branch3_kernel=5)
    calibrate(block, torch.randn(2, 12, 5, 6))
    packed = pack_block(block)
    x = torch.randn(2, 12, 5, 6)
    if fmt == "cl":
        x = x.contiguous(memory_format=CL)
    torch.library.opcheck(torch.ops.inception_fast.inception_block.default, (x, *packed, backend))


def _refused_real_and_fake(x, args, backends, error, message, fake_backends=("torch",)):
    """The block op on ``x`` and packed ``args`` raises ``error`` with ``message`` on every one of
    ``backends`` and in its fake kernel (what torch.compile and torch.export trace) for each of
    ``fake_backends``."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    for backend in backends:
        with pytest.raises(error, match=re.escape(message)):
            torch.ops.inception_fast.inception_block(x, *args, backend)
    for backend in fake_backends:
        with FakeTensorMode() as mode, pytest.raises(error, match=re.escape(message)):
            fake = [mode.from_tensor(a) for a in (x, *args)]
            torch.ops.inception_fast.inception_block(*fake, backend)


def test_inconsistent_packed_weights_get_one_clear_error_real_and_fake():
    """A direct op call with packed weights that do not fit together: every backend and the fake
    kernel (what torch.compile and torch.export trace) refuse it with the same ValueError."""
    from inception_fast.packing import pack_block

    block = Inception(12, 4, 5, 6, 3, 4, 3)
    good = list(pack_block(block))
    x = torch.randn(2, 12, 8, 8)
    bad = {
        "w_red": (0, good[0][:6], "w_red must be at least ch3red + ch5red = 8 rows"),
        "b_red": (1, good[1][:-1], "b_red must be (12,)"),
        "w_pool": (2, good[2][:, :-1], "w_pool must be (pool_proj, Cin=12)"),
        "b3": (5, good[5][:-1], "b3 must be (6,)"),
        "b5": (7, good[7][:-1], "b5 must be (4,)"),
        "b_pool": (3, good[3][:-1], "b_pool must be (3,)"),
        "w5 even": (6, torch.randn(4, 3, 2, 2), "w5 must be (Cout, Cred, k, k) with an odd k"),
        "w3 even": (4, torch.randn(6, 5, 2, 2), "w3 must be (Cout, Cred, k, k) with an odd k"),
        "w3 not square": (4, torch.randn(6, 5, 3, 5), "w3 must be (Cout, Cred, k, k) with an odd k"),
        "w_red 4-D": (0, good[0][:, :, None, None], "w_red must be 2-D (ch1 + ch3red + ch5red, Cin)"),
    }
    backends = [b for b in ("torch", "cpp", "onednn") if b in available_backends("cpu")]
    for what, (i, t, message) in bad.items():
        args = list(good)
        args[i] = t
        _refused_real_and_fake(x, args, backends, ValueError, message)
    out, _ = torch.ops.inception_fast.inception_block(x, *good, "torch")  # the consistent ones run
    assert out.shape == (2, 17, 8, 8)


def test_input_channels_dtype_and_device_mismatches_are_refused_real_and_fake():
    """An input with more channels than the packed weights take, a bias or weight in another dtype,
    a weight on another device: every backend and the fake kernel refuse the call by name (the
    Triton kernels would read the input's first Cin channels, or the bias's bytes, without a word)."""
    from inception_fast.packing import pack_block

    good = list(pack_block(Inception(12, 4, 5, 6, 3, 4, 3)))
    x = torch.randn(2, 12, 6, 6)

    def replaced(i, t):
        args = list(good)
        args[i] = t
        return args

    cases = {
        "more channels": (torch.randn(2, 15, 6, 6), good, ValueError, "expects 12 input channels, got 15"),
        "3-D input": (x[0], good, ValueError, "expects a 4-D (N, C, H, W) input, got 3-D"),
        "b3 float64": (x, replaced(5, good[5].double()), TypeError, "does not match weight b3 dtype torch.float64"),
        "b_red float16": (x, replaced(1, good[1].half()), TypeError, "does not match weight b_red dtype torch.float16"),
        "w_pool float64": (x, replaced(2, good[2].double()), TypeError, "weight w_pool dtype torch.float64"),
        "w5 on meta": (x, replaced(6, good[6].to("meta")), RuntimeError, "but weight w5 is on meta"),
    }
    backends = [b for b in ("torch", "cpp", "onednn", "triton") if b in available_backends("cpu")]
    for what, (inp, args, error, message) in cases.items():
        _refused_real_and_fake(inp, args, backends, error, message)
    # float64 (gradcheck's) runs on the torch backend only: every other backend, real and fake, refuses it.
    others = [b for b in backends if b != "torch"]
    f64 = [t.double() for t in good]
    _refused_real_and_fake(x.double(), f64, others, TypeError, "float64 on the torch backend", others)
    assert torch.ops.inception_fast.inception_block(x.double(), *f64, "torch")[0].dtype == torch.float64


@pytest.mark.parametrize("stride", [None, 1, 2, 3])
def test_conv_relu_stride_default_and_given(stride):
    """torch.ops.inception_fast.conv_relu without a stride (as a traced graph or another caller of
    the schema may call it) is the stride-1 conv, and with one, that stride's: ATen's conv and ReLU
    in float64.  (The dispatcher drops an argument equal to the schema's default before it calls
    the Python kernel, whose own default then applies: the two defaults must agree.)"""
    import torch.nn.functional as F

    x, w, b = torch.randn(2, 4, 9, 8), torch.randn(5, 4, 3, 3), torch.randn(5)
    given = () if stride is None else (stride,)
    got = torch.ops.inception_fast.conv_relu(x, w, b, 1, "torch", *given)
    want = F.conv2d(x.double(), w.double(), b.double(), stride=stride or 1, padding=1).relu()
    assert want.std() > 0.1, "reference output is near zero: the comparison could not fail"
    check_close(got, want, FP32, f"conv_relu, stride {stride}")


@pytest.mark.parametrize("backend", [b for b in ("torch", "cpp") if b in available_backends("cpu")])
@pytest.mark.parametrize("pool", [(3, 2, 1, False), (3, 2, 1, True), (3, 1, 1, False)])
def test_max_pool2d_gradient_of_a_padded_pool_is_atens(backend, pool):
    """The max_pool2d op's registered backward recomputes the argmax with the forward's padding
    (and stride and ceil mode): a padded pool's input gradient is ATen's, bit for bit."""
    import torch.nn.functional as F

    from inception_fast import ops

    kernel, stride, padding, ceil = pool
    x = torch.randn(2, 5, 9, 8).requires_grad_()
    want_y = F.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil)
    grad = torch.randn_like(want_y)
    (got,) = torch.autograd.grad(ops.max_pool2d(x, kernel, stride, padding, ceil, backend=backend), x, grad)
    (want,) = torch.autograd.grad(want_y, x, grad)
    assert torch.equal(got, want)


def test_torch_backend_pooled_block_and_chain_take_ceil_mode():
    """The torch backend's pooled block and chain (the ATen reference the Triton forms are measured
    against) on an 8x6 input, where a 3x3/2 pool in ceil mode gives 4x3 and in floor mode 3x2:
    the block on F.max_pool2d(..., ceil_mode=True) of the input, in float64."""
    import torch.nn.functional as F
    from block_cases import ODD, block_reference, make_block

    from inception_fast import ops

    block = make_block(ODD, n=2, h=8, w=6)
    weights = [block[k] for k in ("w_red", "b_red", "w_pool", "b_pool", "w3", "b3", "w5", "b5")]
    pool = (3, 2, 0, True)
    pooled64 = F.max_pool2d(block["x"].double(), 3, 2, 0, ceil_mode=True)
    assert pooled64.shape[2:] == (4, 3)
    want = block_reference(pooled64, *(w.double() for w in weights))[0]
    assert want.std() > 0.1, "reference output is near zero: the comparison could not fail"
    got = ops.pooled_inception_block(block["x"], *weights, *pool, backend="torch")
    check_close(got, want, FP32, "pooled_inception_block, ceil mode")
    got = ops.inception_chain(block["x"], [tuple(weights)], pool, backend="torch")
    check_close(got, want, FP32, "inception_chain of one block, ceil mode")


def test_torch_backend_stage_ops_are_channels_last_as_their_fake_kernels_say():
    """conv_relu_maxpool, conv_relu and max_pool2d on the torch backend, given a contiguous (NCHW)
    input as a network's images are: ATen's values, returned channels_last with the strides their
    fake kernels give a trace (torch.compile takes the fake strides for the real ones)."""
    import torch.nn.functional as F
    from torch._subclasses.fake_tensor import FakeTensorMode

    from inception_fast import ops

    x, w, b = torch.randn(2, 3, 15, 13), torch.randn(8, 3, 3, 3), torch.randn(8)
    x64, w64, b64 = x.double(), w.double(), b.double()
    calls = {
        "conv_relu_maxpool": (
            lambda t: ops.conv_relu_maxpool(t, w, b, 2, 1, 3, 2, 0, True),
            F.max_pool2d(F.conv2d(x64, w64, b64, stride=2, padding=1).relu(), 3, 2, ceil_mode=True),
        ),
        "conv_relu": (lambda t: ops.conv_relu(t, w, b, 1), F.conv2d(x64, w64, b64, padding=1).relu()),
        "max_pool2d": (lambda t: ops.max_pool2d(t, 3, 2, 0, True), F.max_pool2d(x64, 3, 2, ceil_mode=True)),
    }
    for name, (call, want) in calls.items():
        real = call(x)
        check_close(real, want, FP32, name)
        assert real.is_contiguous(memory_format=CL), f"{name}: strides {real.stride()}"
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            fake = call(mode.from_tensor(x))
        assert (fake.shape, fake.dtype, fake.stride()) == (real.shape, real.dtype, real.stride()), name


def test_fake_kernels_refuse_the_backends_the_real_ones_refuse():
    """Under FakeTensorMode (what torch.compile and torch.export trace) an op called with a backend
    that lacks it, or "auto" where the op takes a backend name, raises the real call's ValueError."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from inception_fast.packing import pack_block

    ops = torch.ops.inception_fast
    x, w, b = torch.randn(2, 16, 5, 5), torch.randn(10, 16), torch.randn(10)
    packed = list(pack_block(Inception(16, 4, 4, 8, 2, 4, 4)))
    calls = [
        (lambda t: ops.max_pool2d(t, 3, 1, 1, False, "auto"), "unknown backend 'auto'"),
        (lambda t: ops.avgpool_linear(t, w, b, "onednn"), "onednn"),
        (lambda t: ops.inception_block(t, *packed, "nope"), "unknown backend 'nope'"),
        (lambda t: ops.pooled_inception_block(t, *packed, 3, 1, 1, False, "nope"), "unknown backend 'nope'"),
        (lambda t: ops.inception_chain(t, packed, [], False, "nope"), "unknown backend 'nope'"),
    ]
    for call, message in calls:
        with pytest.raises(ValueError, match=message):
            call(x)
        with FakeTensorMode(allow_non_fake_inputs=True) as mode, pytest.raises(ValueError, match=message):
            call(mode.from_tensor(x))


def test_unavailable_backend_names_the_available_ones(monkeypatch):
    from inception_fast import backends
    from inception_fast.packing import pack_block

    kernels = {"inception_block": backends.get("torch").op("inception_block")}
    fake = backends.Backend("fake", lambda device: "it only exists in this test", kernels)
    monkeypatch.setitem(backends._REGISTRY, "fake", fake)
    monkeypatch.setattr(backends, "_PLUGINS", (*backends._PLUGINS, "fake"))
    block = FusedInception(16, 4, 4, 8, 2, 4, 4, backend="fake").eval()
    with pytest.raises(
        RuntimeError, match=r"backend 'fake' is unavailable on cpu: it only exists .* Available on cpu: torch"
    ):
        block(torch.randn(1, 16, 5, 5))
    # The op itself, called directly with that backend's name: the same error, not its kernel run.
    packed = pack_block(Inception(16, 4, 4, 8, 2, 4, 4))
    with pytest.raises(RuntimeError, match="backend 'fake' is unavailable on cpu: it only exists"):
        torch.ops.inception_fast.inception_block(torch.randn(1, 16, 5, 5), *packed, "fake")
    assert "torch" in available_backends("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="backend 'triton' is unavailable on cuda"):
            FusedInception(16, 4, 4, 8, 2, 4, 4, backend="triton").backend_for("cuda")


def test_backend_names_say_where_they_run():
    """The name "cuda" is never listed for the CPU, whatever was built; "cpp" (the compiled C++ CPU
    kernels) is refused on CUDA, with the reason and the backend to use there."""
    from inception_fast import backends

    assert "cuda" not in available_backends("cpu") and "cpp" in backends.names()
    assert backends.availability("cuda", "cpu").startswith("runs on cuda only, not on cpu")
    why = backends.availability("cpp", "cuda")
    assert "on cpu only, not on cuda" in why and "the 'cuda' backend" in why, why
    with pytest.raises(RuntimeError, match=r"backend 'cpp' is unavailable on cuda: runs the C\+\+ CPU kernels"):
        FusedInception(16, 4, 4, 8, 2, 4, 4, backend="cpp").backend_for("cuda")


# -- backend="auto" ------------------------------------------------------------------------------


@pytest.fixture
def fake_backends(monkeypatch):
    """Registered backends that compute with the torch backend: 'slow', 'fast' (as their fake
    timer says), and 'broken' and 'broken2', which raise; ``calls`` records which one ran."""
    from inception_fast import backends
    from inception_fast.backends import torch_backend

    calls = []

    def forward_of(name):
        def forward(*args):
            calls.append(name)
            if name.startswith("broken"):
                raise RuntimeError("no tile fits")
            return torch_backend.block_forward(*args)

        return forward

    for name in ("slow", "fast", "broken", "broken2"):
        monkeypatch.setitem(
            backends._REGISTRY, name, backends.Backend(name, lambda device: None, {"inception_block": forward_of(name)})
        )
    monkeypatch.setattr(backends, "_PLUGINS", (*backends._PLUGINS, "slow", "fast", "broken", "broken2"))
    return calls


def _chooser(calls, order, seconds):
    from inception_fast.choices import AutoBackend

    def timer(fn, device, repeats):
        fn()
        return seconds[calls[-1]]

    return AutoBackend(order=order, measure_on=("cpu",), timer=timer)


def _packed_block(h=5):
    block = FusedInception(16, 4, 4, 8, 2, 4, 4, backend="torch").eval()
    return block, torch.randn(1, 16, h, h).contiguous(memory_format=torch.channels_last), block.packed(torch.float32)


def test_auto_measures_once_per_shape_and_keeps_the_fastest(fake_backends):
    chooser = _chooser(fake_backends, ("slow", "broken", "fast", "torch"), {"slow": 3e-3, "fast": 1e-3, "torch": 2e-3})
    _, x, packed = _packed_block()
    with torch.no_grad():
        assert chooser.choose(x, *packed) == "fast"
        assert sorted(fake_backends) == ["broken", "fast", "slow"]
        fake_backends.clear()
        assert chooser.choose(x, *packed) == "fast"
        assert fake_backends == [], "a measured shape must not be measured again"
        (choice,) = chooser.choices().values()
        assert set(choice.seconds) == {"slow", "fast", "torch"}
        assert "no tile fits" in choice.errors["broken"]
        _, x2, _ = _packed_block(h=7)
        assert chooser.choose(x2, *packed) == "fast" and fake_backends, "a new shape is measured"
        fake_backends.clear()
        assert chooser.choose(torch.cat([x, x]), *packed) == "fast" and fake_backends, "so is a new batch size"
    assert len(chooser.choices()) == 3


def test_auto_tie_goes_to_the_static_order_and_static_mode_measures_nothing(fake_backends, monkeypatch):
    from inception_fast import choices

    _, x, packed = _packed_block()
    tie = _chooser(fake_backends, ("slow", "fast"), {"slow": 1e-3, "fast": 1e-3})
    assert tie.choose(x, *packed) == "slow"
    fake_backends.clear()
    monkeypatch.setenv(choices.ENV_AUTO, "static")
    static = _chooser(fake_backends, ("slow", "fast"), {"slow": 3e-3, "fast": 1e-3})
    assert static.choose(x, *packed) == "slow" and fake_backends == [] and not static.choices()
    # Off the devices it measures on, auto is the torch backend.
    assert choices.AutoBackend(measure_on=("cuda",)).choose(x, *packed) == "torch"


def test_auto_while_a_graph_captures_takes_a_backend_with_nothing_to_compile(fake_backends, monkeypatch):
    """An unmeasured shape met inside a CUDA-graph capture (no eager forward first): auto measures
    nothing and takes the first backend that compiles and tunes nothing at run time (cuda, torch),
    not a Triton one, whose first launch of the shape would compile and benchmark inside the
    capture and end it.  With measuring deferred (a precompile's binaries still on their way) the
    trusted torch backend, as before.  (Capture faked: this machine may have no GPU.)"""
    from inception_fast import choices

    monkeypatch.setattr(choices, "capturing", lambda device: True)
    _, x, packed = _packed_block()
    chooser = _chooser(fake_backends, ("slow", "fast", "torch"), {"slow": 3e-3, "fast": 1e-3, "torch": 2e-3})
    assert chooser.choose(x, *packed) == "torch" and fake_backends == [] and not chooser.choices()
    monkeypatch.setattr(choices, "AUTO_CAPTURE_READY", ("fast", "torch"))
    assert chooser.choose(x, *packed) == "fast" and fake_backends == []
    with choices.measuring_deferred():
        assert chooser.choose(x, *packed) == "torch"


def test_no_measured_choice_measures_while_a_graph_captures(monkeypatch):
    """A CUDA-graph capture cannot hold timing runs: every measured choice (not only auto, which
    checks on its own) takes its first candidate, runs nothing else and keeps nothing while one
    captures.  (Capture faked, and the choice made to measure on this CPU: this machine may have
    no GPU.)"""
    from inception_fast import choices

    ran = []
    runners = {name: (lambda name=name: ran.append(name)) for name in ("first", "second")}
    chooser = choices.MeasuredChoice(measure_on=("cpu",), timer=lambda fn, device, repeats: (fn(), 1e-3)[1])
    cpu = torch.device("cpu")
    assert chooser.can_measure(cpu)
    monkeypatch.setattr(choices, "capturing", lambda device: True)
    assert not chooser.can_measure(cpu)
    assert chooser.pick("key", cpu, runners) == "first" and ran == [] and not chooser.choices()


def test_a_measured_choice_stays_out_of_tracing_and_of_calls_that_need_gradients(monkeypatch):
    """applies(): a call that records a gradient (grad mode on and any tensor requiring one) or that
    torch.compile traces runs its first candidate directly; under no_grad a parameter's
    requires_grad does not count.  can_measure(): nothing is measured while tracing.  (Tracing
    faked.)"""
    from inception_fast import choices

    cpu = torch.device("cpu")
    chooser = choices.MeasuredChoice(measure_on=("cpu",))
    x, w = torch.ones(2), torch.ones(2, requires_grad=True)
    assert chooser.applies(cpu, x) and chooser.can_measure(cpu)
    assert not chooser.applies(cpu, x, w) and not chooser.applies(cpu, w, x)
    with torch.no_grad():
        assert chooser.applies(cpu, x, w)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert not chooser.applies(cpu, x) and not chooser.can_measure(cpu)


def test_a_measured_choice_times_without_autograd_over_its_repeats():
    """Each candidate is timed under no_grad (the candidates are inference kernels: no autograd
    graph is built on a timed call, even with weights that require a gradient), over the chooser's
    ``repeats``."""
    from inception_fast import choices

    w = torch.ones(3, requires_grad=True)
    seen = []

    def timer(fn, device, repeats):
        seen.append((fn().requires_grad, torch.is_grad_enabled(), repeats))
        return 1.0

    chooser = choices.MeasuredChoice(measure_on=("cpu",), repeats=7, timer=timer)
    assert chooser.pick("k", torch.device("cpu"), {"a": lambda: w * 2, "b": lambda: w * 3}) == "a"
    assert seen == [(False, False, 7)] * 2


def test_a_candidate_is_timed_by_its_median_after_warm_up_runs(monkeypatch):
    """The measured choices' timer (choices._time_call): on CPU, the median of ``repeats`` timed
    calls after a warm-up; on CUDA, eager runs first (the compile, the parity check) and then
    CUDA-graph replays, or eager calls where the candidate cannot be captured.  (time_fn, the CUDA
    device context and synchronize stubbed: this machine may have no GPU.)"""
    import contextlib
    import statistics

    from inception_fast import choices, timing

    ran, seen, refuse_capture, synced = [], [], [], []
    samples = [1.0, 3.0, 8.0]  # median, mean and minimum all differ

    def time_fn(fn, *, device, warmup, repeats, cuda_graph=False):
        seen.append({"ran before": len(ran), "warmup": warmup, "repeats": repeats, "graph": cuda_graph})
        if cuda_graph and refuse_capture:
            raise RuntimeError("operation not permitted when stream is capturing")
        for _ in range(warmup + repeats):
            fn()
        return timing.Timing(statistics.median(samples), samples)

    monkeypatch.setattr(timing, "time_fn", time_fn)
    run = lambda: ran.append(1)  # noqa: E731
    assert choices._time_call(run, torch.device("cpu"), 7) == statistics.median(samples)
    assert seen[-1]["warmup"] >= 1 and seen[-1]["repeats"] == 7 and not seen[-1]["graph"]

    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(device))
    gpu = torch.device("cuda", 0)
    ran.clear()
    assert choices._time_call(run, gpu, 7) == statistics.median(samples)
    assert seen[-1]["ran before"] >= 1 and seen[-1]["graph"] and seen[-1]["repeats"] == 7
    refuse_capture.append(True)
    assert choices._time_call(run, gpu, 7) == statistics.median(samples)
    assert [s["graph"] for s in seen[-2:]] == [True, False] and seen[-1]["repeats"] == 7 and synced


@pytest.mark.skipif("triton" not in available_backends("cpu"), reason="needs triton under TRITON_INTERPRET=1")
def test_auto_never_takes_a_backend_whose_kernels_refuse_the_branch_kernels(monkeypatch):
    """A block whose branch 2 is not 3x3 (fuse() takes any odd k) is no candidate for the Triton
    launch 2: auto passes over such a backend where it measures nothing too (static mode; the first
    candidate on a GPU without the cuda extension is triton), so the forward runs, on torch."""
    from inception_fast import choices, ops

    monkeypatch.setenv(choices.ENV_AUTO, "static")
    chooser = choices.AutoBackend(order=("triton", "torch"), measure_on=("cpu",))
    block, x, packed = _packed_block()
    assert chooser.choose(x, *packed) == "triton"
    w3 = packed[4]
    w3_5x5 = torch.randn(*w3.shape[:2], 5, 5).contiguous(memory_format=torch.channels_last)
    wide = (*packed[:4], w3_5x5, *packed[5:])
    assert chooser.choose(x, *wide) == "torch" and not chooser.choices()
    monkeypatch.setattr(choices, "AUTO", chooser)
    ops.inception_block(x, *wide, backend="auto")  # ran; triton's would raise
    with pytest.raises(ValueError, match=re.escape("branch 2 must be a 3x3 conv, got weight shape (8, 4, 5, 5)")):
        ops.inception_block(x, *wide, backend="triton")


def test_auto_fails_clearly_when_every_backend_fails(fake_backends):
    _, x, packed = _packed_block()
    chooser = _chooser(fake_backends, ("broken", "broken2"), {})
    with pytest.raises(RuntimeError, match=r"every backend failed on input shape \(1, 16, 5, 5\).*no tile fits"):
        chooser.choose(x, *packed)


def test_op_with_auto_runs_the_chosen_backend(fake_backends, monkeypatch):
    from inception_fast import backends, choices, ops

    chooser = _chooser(fake_backends, ("slow", "fast"), {"slow": 3e-3, "fast": 1e-3})
    monkeypatch.setattr(choices, "AUTO", chooser)
    block, x, packed = _packed_block()
    with torch.no_grad():
        out = ops.inception_block(x, *packed, backend="auto")
        fake_backends.clear()
        ops.inception_block(x, *packed, backend="auto")
        assert fake_backends == ["fast"]
        check_close(out, ops.inception_block(x, *packed, backend="torch"), FP32)
    on_cpu = "onednn" if backends.availability("onednn", "cpu") is None else "torch"
    assert backends.resolve("auto", "cpu") == on_cpu and backends.resolve("auto", "cuda") == "auto"


@pytest.mark.parametrize("output", [0, 1])
def test_auto_never_picks_a_fast_backend_that_disagrees_with_aten(fake_backends, monkeypatch, output):
    """A backend whose block output (0) or saved reductions (1) are off by 1e-4 -- ten times the
    fp32 bound -- is dropped on its first run, however fast, with the disagreement on record."""
    from inception_fast import backends
    from inception_fast.backends import torch_backend

    def off_by_a_little(*args):
        fake_backends.append("wrong")
        res = list(torch_backend.block_forward(*args))
        res[output] = res[output] * (1 + 1e-4)
        return tuple(res)

    wrong = backends.Backend("wrong", lambda device: None, {"inception_block": off_by_a_little})
    monkeypatch.setitem(backends._REGISTRY, "wrong", wrong)
    monkeypatch.setattr(backends, "_PLUGINS", (*backends._PLUGINS, "wrong"))
    chooser = _chooser(fake_backends, ("wrong", "slow"), {"wrong": 1e-4, "slow": 3e-3})
    _, x, packed = _packed_block()
    with torch.no_grad():
        assert chooser.choose(x, *packed) == "slow"
    (choice,) = chooser.choices().values()
    assert "wrong" not in choice.seconds and "disagrees with ATen" in choice.errors["wrong"]
    assert f"(output {output})" in choice.errors["wrong"] and "exceeds" in choice.errors["wrong"]


def test_auto_takes_a_low_precision_backend_closer_to_float64_than_aten(fake_backends, monkeypatch):
    """bf16: a backend whose outputs are the float64 block rounded to bf16 (closer to float64 than
    ATen's bf16 computation, not bit for bit ATen's) agrees by the tolerance table's rule, held
    against a float64 run of the torch backend, and is chosen for being the fastest."""
    from inception_fast import backends
    from inception_fast.backends import torch_backend

    def rounded(*args):
        fake_backends.append("rounded")
        return tuple(t.to(args[0].dtype) for t in torch_backend.block_forward(*(a.double() for a in args)))

    monkeypatch.setitem(
        backends._REGISTRY, "rounded", backends.Backend("rounded", lambda device: None, {"inception_block": rounded})
    )
    monkeypatch.setattr(backends, "_PLUGINS", (*backends._PLUGINS, "rounded"))
    chooser = _chooser(fake_backends, ("rounded", "slow"), {"rounded": 1e-4, "slow": 3e-3})
    block, x, _ = _packed_block()
    x, packed = x.to(torch.bfloat16), block.packed(torch.bfloat16)
    with torch.no_grad():
        aten = backends.get("torch").op("inception_block")(x, *packed)
        assert not torch.equal(rounded(x, *packed)[0], aten[0])  # (else the check compares nothing)
        assert chooser.choose(x, *packed) == "rounded"
    (choice,) = chooser.choices().values()
    assert set(choice.seconds) == {"rounded", "slow"} and not choice.errors


def test_auto_keys_tell_apart_the_gpu_branch_3_and_fp32_matmul_precision():
    """AutoKey: the same block shape on another GPU, with another branch-3 kernel, or under another
    fp32 matmul precision (the torch backend's GEMMs follow it) is a key of its own, measured anew."""
    from types import SimpleNamespace

    from inception_fast.choices import AutoBackend

    _, x, (w_red, _, w_pool, _, w3, _, w5, _) = _packed_block()
    key = AutoBackend.key(x, w_red, w_pool, w3, w5)
    on = lambda device: SimpleNamespace(device=torch.device(device), dtype=x.dtype, shape=x.shape)  # noqa: E731
    assert AutoBackend.key(on("cuda:0"), w_red, w_pool, w3, w5) != AutoBackend.key(on("cuda:1"), w_red, w_pool, w3, w5)
    assert AutoBackend.key(x, w_red, w_pool, w3, w5[:, :, :1, :1]) != key
    precision = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high" if precision == "highest" else "highest")
        assert AutoBackend.key(x, w_red, w_pool, w3, w5) != key
    finally:
        torch.set_float32_matmul_precision(precision)


def test_checked_against_holds_candidates_to_the_tolerance_table():
    """The rule a measured candidate meets on its first run: bit for bit for exact ops; otherwise
    at most low_precision_factor times ATen's own error against float64 (never under the fp32 bound)."""
    from inception_fast.choices import checked_against, once
    from inception_fast.testing import TOLERANCE

    x64 = torch.randn(64, 64, dtype=torch.float64)
    ref = x64.to(torch.bfloat16)
    own = (ref.double() - x64).norm() / x64.norm()

    def run_with(out, exact=False):
        run = checked_against(lambda: out, lambda: ref, "the candidate", None if exact else lambda: x64)
        return run()

    run_with(ref.clone(), exact=True)
    with pytest.raises(RuntimeError, match="an exact op"):
        run_with(ref + 2**-6, exact=True)
    # Only the first call is checked (the timed calls after it compare nothing), and a trusted
    # result shared through once() is computed once for every candidate checked against it.
    outs = iter([ref.clone(), ref + 1.0])
    run = checked_against(lambda: next(outs), lambda: ref, "the candidate", lambda: x64)
    run()
    assert torch.equal(run(), ref + 1.0)
    computed = []
    shared = once(lambda: computed.append(ref) or ref)
    for _ in range(2):
        checked_against(lambda: ref.clone(), shared, "a candidate", lambda: x64)()
    assert len(computed) == 1
    # Exact means bit for bit: infinities, the sign of zero and the dtype count; a NaN's payload does not.
    special = torch.tensor([float("inf"), -0.0, float("nan"), 1.0])
    big = torch.finfo(torch.float32).max
    for wrong in ([big, -0.0, float("nan"), 1.0], [float("inf"), 0.0, float("nan"), 1.0]):
        with pytest.raises(RuntimeError, match="an exact op"):
            checked_against(lambda: torch.tensor(wrong), lambda: special, "specials")()
    with pytest.raises(RuntimeError, match="an exact op"):
        checked_against(lambda: special.double(), lambda: special, "another dtype")()
    flipped = torch.tensor([float("inf"), 0.0, float("nan"), 1.0])  # +0.0 where the reference has -0.0
    checked_against(lambda: flipped, lambda: special, "zero signs", signed_zeros=False)()
    with pytest.raises(RuntimeError, match="an exact op"):
        checked_against(lambda: flipped + 1e-7, lambda: special, "zero signs", signed_zeros=False)()
    other_nan = special.clone().view(torch.int32)
    other_nan[2] |= 1  # another NaN payload
    checked_against(lambda: other_nan.view(torch.float32), lambda: special, "NaN payload")()
    from inception_fast.testing import same_bits

    z = torch.randn(3, dtype=torch.complex128)
    assert same_bits(z, z.clone()) and not same_bits(z, z + 1e-9j)
    # bf16: a result off by (factor - 0.5) times ATen's own error passes, by (factor + 0.5) fails.
    noise = torch.randn_like(x64)
    noise *= own * x64.norm() / noise.norm()
    factor = TOLERANCE["low_precision_factor"]
    run_with(x64 + (factor - 0.5) * noise)
    with pytest.raises(RuntimeError, match="exceeds"):
        run_with(x64 + (factor + 0.5) * noise)
    with pytest.raises(RuntimeError, match="shape"):
        run_with(ref[:2])
    with pytest.raises(RuntimeError, match="returned 1 tensors where ATen returns 2"):  # every output counts
        checked_against(lambda: (ref,), lambda: (ref, ref), "the candidate", lambda: (x64, x64))()
    checked_against(lambda: [ref, ref], lambda: (ref, ref), "a list", lambda: (x64, x64))()  # a list is a tuple
    zeros64 = torch.zeros(4, dtype=torch.float64)
    checked_against(lambda: torch.zeros(4), lambda: torch.zeros(4), "zeros", lambda: zeros64)()
    with pytest.raises(RuntimeError, match="all zeros"):
        checked_against(lambda: torch.full((4,), 1e-3), lambda: torch.zeros(4), "zeros", lambda: zeros64)()
    with pytest.raises(RuntimeError, match="disagrees"):
        checked_against(lambda: ref * float("nan"), lambda: ref, "nan", lambda: x64)()
    # A NaN or Inf in the trusted result (a NaN input, an overflow): the same there, finite and
    # within the rule elsewhere.
    x64_special = x64.clone()
    x64_special[0, 0], x64_special[1, 1] = float("nan"), float("-inf")
    ref_special = x64_special.to(torch.bfloat16)
    check = lambda out: checked_against(lambda: out, lambda: ref_special, "specials", lambda: x64_special)()  # noqa: E731
    check(x64_special + (factor - 0.5) * noise)
    garbage = torch.full_like(x64, 123.0)
    garbage[0, 0], garbage[1, 1] = float("nan"), float("-inf")
    with pytest.raises(RuntimeError, match="exceeds"):
        check(garbage)
    garbage[2, 2] = float("nan")
    with pytest.raises(RuntimeError, match="NaN or Inf where the trusted result is finite"):
        check(garbage)
    for where in ((0, 0), (1, 1)):
        moved = x64_special.clone()
        moved[where] = 1.0
        with pytest.raises(RuntimeError, match="differs where the trusted result is NaN or Inf"):
            check(moved)


@pytest.mark.gpu
def test_gpu_auto_runs_the_backend_it_measured_fastest(cuda_device):
    """Each backend's parity is tested on its own; here: auto measures them all on a 3a block and
    then computes exactly what the fastest one computes."""
    from inception_fast import choices, ops

    if len(available_backends(cuda_device)) < 2:
        pytest.skip("auto measures nothing with a single backend available")
    block = FusedInception(*BLOCK_CONFIGS["inception3a"], backend="auto").eval().to(cuda_device, torch.bfloat16)
    x = torch.randn(4, 192, 28, 28, device=cuda_device, dtype=torch.bfloat16).contiguous(
        memory_format=torch.channels_last
    )
    choices.AUTO.clear()
    with torch.no_grad():
        out = block(x)
        (choice,) = choices.AUTO.choices().values()
        assert set(choice.seconds) | set(choice.errors) == set(available_backends(cuda_device))
        assert choice.seconds[choice.name] == min(choice.seconds.values())
        packed = block.packed(torch.bfloat16)
        expected = ops.inception_block(x, *packed, backend=choice.name)
    assert torch.equal(out, expected)


@pytest.mark.gpu
def test_gpu_a_candidate_that_cannot_be_captured_is_timed_eagerly(cuda_device):
    """Measured choices time CUDA-graph replays; a candidate that synchronizes (cannot be captured)
    is timed eagerly instead, and the failed capture leaves the caller on its own stream and the
    caching allocator out of capture mode (it can free its cache, and later captures work)."""
    from inception_fast import choices
    from inception_fast.timing import capture

    x = torch.randn(256, 256, device=cuda_device)
    stream = torch.cuda.current_stream()
    chooser = choices.MeasuredChoice(measure_on=("cuda",))
    runners = {"capturable": lambda: x @ x, "syncs": lambda: (x @ x) * (x.sum().item() > -1e30)}
    assert chooser.pick("k", cuda_device, runners) in runners
    (choice,) = chooser.choices().values()
    assert set(choice.seconds) == {"capturable", "syncs"} and not choice.errors
    assert torch.cuda.current_stream() == stream
    torch.cuda.synchronize()
    torch.cuda.empty_cache()  # an allocator left capturing fails an internal assert here
    graph, y = capture(lambda: x + 1)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(y, x + 1)


@pytest.mark.gpu
def test_gpu_a_capture_meets_another_threads_allocations(cuda_device):
    """A CUDA-graph capture (a measured choice's timing, CapturedForward) while another thread
    allocates, frees and synchronizes on its own stream, as an inference thread or a DataParallel
    replica does: both go on (thread_local capture mode; "global" fails the other thread's
    cudaMalloc and ends the capture), and the graph replays the captured work."""
    import threading

    from inception_fast.timing import capture

    x = torch.randn(512, 512, device=cuda_device)
    stop, errors = threading.Event(), []

    def serve():
        try:
            with torch.cuda.device(cuda_device), torch.cuda.stream(torch.cuda.Stream(cuda_device)):
                size = 1 << 20
                while not stop.is_set():
                    y = torch.empty(size, device=cuda_device).fill_(1.0)  # new blocks: cudaMalloc
                    torch.cuda.current_stream().synchronize()
                    del y
                    size = (1 << 20) + (size + (1 << 16)) % (1 << 24)  # growing, bounded
        except Exception as exc:  # noqa: BLE001 -- reported below
            errors.append(repr(exc))

    other = threading.Thread(target=serve)
    other.start()
    try:
        for _ in range(20):
            graph, out = capture(lambda: (x @ x).relu_())
            graph.replay()
            torch.cuda.synchronize(cuda_device)
            torch.testing.assert_close(out, (x @ x).relu_())
    finally:
        stop.set()
        other.join()
    assert not errors, errors[:3]


@pytest.mark.gpu
def test_gpu_capturing_an_unmeasured_block_without_the_extension(cuda_device, monkeypatch):
    """torch.cuda.graph around a block's first forward (nothing measured, no eager run first), on
    an install without the compiled extension: auto runs the torch backend inside the capture
    instead of Triton (whose first launch would benchmark inside it and fail the capture), and
    the replay computes the block."""
    from inception_fast import backends, choices, ops

    real = backends.availability
    monkeypatch.setattr(backends, "availability", lambda n, d: "not built" if n == "cuda" else real(n, d))
    monkeypatch.setattr(choices, "AUTO", choices.AutoBackend(store_as=None))
    block = FusedInception(192, 64, 96, 128, 16, 32, 32, backend="auto").to(cuda_device, torch.bfloat16).eval()
    x = torch.randn(3, 192, 28, 28, device=cuda_device, dtype=torch.bfloat16).contiguous(
        memory_format=torch.channels_last
    )
    packed = block.packed(torch.bfloat16)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad():
        torch.cuda.synchronize()
        with torch.cuda.graph(graph):
            out = ops.inception_block(x, *packed, backend="auto")
        graph.replay()
        torch.cuda.synchronize()
        eager = ops.inception_block(x, *packed, backend="torch")
        exact = ops.inception_block(x.double(), *(t.double() for t in packed), backend="torch")
    bound = reduced_precision_bound(eager, exact)
    check_close(out, exact, bound, "the replayed block (bf16) against float64")
    assert not choices.AUTO.choices()  # nothing measured inside the capture
