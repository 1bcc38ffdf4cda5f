"""FusedGoogLeNet's stages outside the blocks (inception_fast.stages): every form of the stem's
first conv, which may compete, and the measured conv + bias + ReLU."""

import copy

import pytest
import torch
import torch.nn.functional as F
from model_cases import CL, FP32, calibrated_net, net_tolerance
from torch import nn

from inception_fast import FusedGoogLeNet, available_backends, geometry
from inception_fast.testing import TOLERANCE, check_close, reduced_precision_bound

# The choices inside a forward, each on its own: auto's whole-network choice off (conftest).
pytestmark = pytest.mark.usefixtures("no_network_choice")

# -- the stem's measured first conv -----------------------------------------------------------------


@pytest.mark.parametrize(
    "variant,size,fmt",
    [
        ("torchvision", 40, CL),
        ("torchvision", 33, torch.contiguous_format),
        ("paper", 32, CL),
        ("d2l", 32, torch.contiguous_format),
    ],
)
def test_every_stem_variant_matches_the_reference(monkeypatch, variant, size, fmt):
    """Each way of running conv1 (oneDNN's prepacked conv where the model runs onednn, channels_last,
    zero-padded to 4 and 8 channels, NCHW, and where Triton runs -- under the interpreter here --
    the Triton kernel with and without the pool, and the aligned-rows conv then the pool, or with the
    pool in its epilogue) is forced
    in turn through a measuring chooser
    whose fake timer makes it the fastest."""
    from inception_fast import choices

    ref, _ = calibrated_net(variant, size)
    fused = FusedGoogLeNet.from_torchvision(ref, backend="auto").eval()  # blocks: onednn (else torch) on CPU
    x = torch.randn(2, ref.in_channels, size, size).contiguous(memory_format=fmt)
    ref64, tol = net_tolerance(ref.eval(), x)
    expected = ["channels_last", "pad4", "pad8", "nchw"]
    if fused.backend == "onednn":  # auto on CPU: the prepacked oneDNN conv1 competes first
        expected.insert(0, "onednn")
    if "triton" in available_backends("cpu"):
        expected += ["triton", "triton_conv", "triton_rows", "triton_rows_pool"]
    stems = []  # each candidate's stem output: the same for every winner, so run in the first forward only
    for winner in expected:
        calls = []

        def timer(fn, device, repeats, winner=winner):
            if len(stems) < len(expected):
                stems.append(fn())
            calls.append(fn)
            return 1.0 if len(calls) - 1 == expected.index(winner) else 2.0

        chooser = choices.MeasuredChoice(measure_on=("cpu",), timer=timer)
        monkeypatch.setattr(choices, "STEM_CHOICE", chooser)
        with torch.no_grad():
            out = fused(x)  # the winner's stem computes this output
        assert len(calls) == len(expected) and [c.name for c in chooser.choices().values()] == [winner]
        assert list(chooser.choices().values())[0].seconds.keys() == set(expected)
        check_close(out, ref64, tol)
    assert len(stems) == len(expected)
    for stem in stems:  # the stem outputs agree
        assert stem.is_contiguous(memory_format=CL)
        check_close(stem, stems[0], FP32)


def test_a_stem_form_that_disagrees_is_never_chosen(monkeypatch):
    """Every stem form but the trusted first (ATen, channels_last) is checked on its first run:
    one that is off by 1e-4 is dropped even when it times fastest, and the model stays right."""
    from inception_fast import choices, stages

    ref, _ = calibrated_net("torchvision", 40)
    fused = FusedGoogLeNet.from_torchvision(ref, backend="torch").eval()
    x = torch.randn(2, 3, 40, 40).contiguous(memory_format=CL)
    real = stages.stem_conv1

    def nchw_off(x, w1, b1, padded, variant, *args):
        out = real(x, w1, b1, padded, variant, *args)
        return out * (1 + 1e-4) if variant == "nchw" else out

    monkeypatch.setattr(stages, "stem_conv1", nchw_off)
    calls = []

    def timer(fn, device, repeats):  # the candidates come in order: channels_last, pad4, pad8, nchw
        calls.append(fn)
        fn()
        return 1.0 if len(calls) == 4 else 2.0

    chooser = choices.MeasuredChoice(measure_on=("cpu",), timer=timer)
    monkeypatch.setattr(choices, "STEM_CHOICE", chooser)
    with torch.no_grad():
        out = fused(x)
    (choice,) = chooser.choices().values()
    assert "disagrees with ATen" in choice.errors["nchw"] and choice.name == "channels_last"
    ref64, tol = net_tolerance(ref.eval(), x)
    check_close(out, ref64, tol)


def test_stem_triton_variants_only_where_allowed(monkeypatch):
    """A model pinned to the torch backend never runs the Triton stem (its key differs from an auto
    model's, so a choice measured for one is not looked up by the other), and with gradients the
    Triton stem, which has no backward, gives way to ATen."""
    from inception_fast import choices, modules, stages

    ref, pinned = calibrated_net("torchvision", 32)
    auto = FusedGoogLeNet.from_torchvision(ref, backend="auto").eval()
    x = torch.randn(1, 3, 32, 32)
    assert pinned.stem_choice_key(x) != auto.stem_choice_key(x)
    other_pool = FusedGoogLeNet.from_torchvision(ref, backend="auto").eval()
    other_pool.maxpool1 = nn.MaxPool2d(3, stride=2, padding=1)  # as in d2l's stem
    assert other_pool.stem_choice_key(x) != auto.stem_choice_key(x)
    (w1, b1), _, _, padded = pinned._stem_weights(x.dtype)
    assert not set(pinned._stem_variants(x, padded)) & set(stages.STEM_TRITON_VARIANTS)
    chooser = choices.MeasuredChoice(measure_on=())
    chooser._choices[auto.stem_choice_key(x)] = choices.Choice("triton")
    monkeypatch.setattr(choices, "STEM_CHOICE", chooser)
    seen = []
    real = modules.FusedGoogLeNet._stem_conv1
    monkeypatch.setattr(
        modules.FusedGoogLeNet, "_stem_conv1", lambda self, *args: seen.append(args[-1]) or real(self, *args)
    )
    with torch.enable_grad():
        loss = auto(x).square().sum()
    loss.backward()
    assert seen == ["channels_last"] and auto.conv1.conv.weight.grad is not None
    # A frozen model with an input that needs its gradient (saliency), and bias-only training:
    # either way some stem tensor requires grad, so ATen runs and the gradient arrives.
    auto.requires_grad_(False)
    xg = x.clone().requires_grad_(True)
    auto(xg).square().sum().backward()
    assert seen[-1] == "channels_last" and xg.grad is not None and xg.grad.abs().sum() > 0
    auto.conv1.bn.bias.requires_grad_(True)  # folded into conv1's bias only
    auto(x).square().sum().backward()
    assert seen[-1] == "channels_last" and auto.conv1.bn.bias.grad is not None
    if "triton" in available_backends("cpu"):
        with torch.no_grad():  # without gradients the key says whether oneDNN's prepacked conv1 competes
            chooser._choices[auto.stem_choice_key(x)] = choices.Choice("triton")
            auto(x)
        assert seen[-1] == "triton"


def test_stem_padding_candidates():
    from inception_fast.stages import stem_padded_channels as _stem_padded_channels

    assert _stem_padded_channels(3) == [4, 8] and _stem_padded_channels(1) == [4, 8]
    assert _stem_padded_channels(6) == [8] and _stem_padded_channels(8) == []


def test_the_stage_forms_are_offered_exactly_where_their_kernels_take_them():
    """The predicates that decide which forms compete, at their bounds.  A pool that returns indices,
    is dilated or not square has no pool-only kernel; the Triton conv + bias + ReLU takes odd square
    kernels padded k // 2 on a non-empty batch; the stem's row forms take conv1 with a stride above 1
    over at most 8 channels and a kernel of at most 8x8, every one of which the row conv takes, with the
    pool in its epilogue up to 3x3 stride 2; a dilated or grouped conv1 has neither the Triton stem nor
    oneDNN's prepacked one; a pool carrying either kind of forward hook is not folded."""
    conv_rows = pytest.importorskip("inception_fast.backends.triton.conv_rows")
    from inception_fast import stages

    assert stages.pool_params(nn.MaxPool2d(3, 2, 1, ceil_mode=True)) == (3, 2, 1, True)
    assert stages.pool_params(nn.MaxPool2d(2)) == (2, 2, 0, False)
    for odd in (dict(return_indices=True), dict(dilation=2), dict(kernel_size=(3, 2)), dict(padding=(1, 0))):
        assert stages.pool_params(nn.MaxPool2d(**{"kernel_size": 3, "stride": 2, **odd})) is None, odd
    conv1 = dict(in_channels=6, out_channels=6, kernel_size=7, stride=2, padding=3)
    assert stages.stem_triton_params(nn.Conv2d(**conv1), nn.MaxPool2d(3, 2, ceil_mode=True)) == (2, 3, 3, 2, 0, True)
    assert stages.stem_onednn_params(nn.Conv2d(**conv1)) == (2, 3)
    for odd in (dict(dilation=2), dict(groups=3)):
        conv = nn.Conv2d(**conv1, **odd)
        assert stages.stem_triton_params(conv, nn.MaxPool2d(3, 2)) is None, odd
        assert stages.stem_onednn_params(conv) is None, odd

    x, w3 = torch.empty(1, 4, 6, 6), torch.empty(5, 4, 3, 3)
    assert stages.conv_relu_triton_supported(x, w3, 1)
    assert stages.conv_relu_triton_supported(x, torch.empty(5, 4, 1, 1), 0)
    assert not stages.conv_relu_triton_supported(x, torch.empty(5, 4, 2, 2), 1)  # even
    assert not stages.conv_relu_triton_supported(x, torch.empty(5, 4, 1, 3), 1)  # oblong
    assert not stages.conv_relu_triton_supported(x, w3, 0)  # padding other than k // 2
    assert not stages.conv_relu_triton_supported(x[:0], w3, 1)  # no images

    for cin in range(1, 10):
        for k in range(1, 10):
            for stride in (1, 2, 3):
                conv = nn.Conv2d(cin, 4, k, stride, k // 2)
                got = stages.stem_rows_stride(conv)
                want = stride if stride > 1 and cin <= 8 and k <= 8 else None
                assert got == want, (cin, k, stride, got)
                if got is not None:
                    x = torch.empty(1, cin, 2 * k, 2 * k)
                    assert conv_rows.supported(x, conv.weight, stride, k // 2), (cin, k, stride)

    if "triton" in available_backends(torch.device("cpu")):  # (TRITON_INTERPRET=1, as in CI)
        x, conv1 = torch.empty(1, 3, 16, 16), nn.Conv2d(3, 8, 7, 2, 3)
        fits = [geometry.rows_pool_fits(k, stride) for k, stride in ((2, 1), (3, 2), (4, 2), (3, 3))]
        assert fits == [True, True, False, False], fits  # (geometry.ROWS_POOL_MAX: 3x3, stride 2)
        for k, stride in ((2, 1), (3, 2), (4, 2), (3, 3)):
            forms = stages.stem_variants(x, conv1, nn.MaxPool2d(k, stride), {"triton_rows": None}, True)
            assert "triton_rows" in forms and ("triton_rows_pool" in forms) == geometry.rows_pool_fits(k, stride)

    pool = nn.MaxPool2d(3, 2, ceil_mode=True)
    assert stages.fold_params(pool) == (3, 2, 0, True)
    for register in (pool.register_forward_hook, pool.register_forward_pre_hook):
        handle = register(lambda *args: None)
        assert stages.fold_params(pool) is None, register.__name__
        handle.remove()


def test_stem_key_tells_apart_every_setting_of_conv1_maxpool1_and_the_input():
    """STEM_CHOICE's key: two stems that differ in any setting of conv1 or maxpool1, or inputs that
    differ in dtype, shape or layout, or a model that may or may not offer the Triton or oneDNN
    forms, never share a measured form."""
    from inception_fast.stages import stem_key

    x = torch.randn(1, 3, 32, 32)
    conv, pool = dict(in_channels=3, out_channels=6, kernel_size=7, stride=2, padding=3), dict(kernel_size=3, stride=2)
    cases = [
        ({}, {}, x),
        ({}, {}, x.contiguous(memory_format=CL)),
        ({}, {}, x.double()),
        ({}, {}, x[:, :, :31, :31].contiguous()),
        *(({k: v}, {}, x) for k, v in dict(kernel_size=5, stride=1, padding=2, dilation=2, groups=3).items()),
        *(({}, {k: v}, x) for k, v in dict(kernel_size=2, stride=1, padding=1, dilation=2, ceil_mode=True).items()),
    ]
    keys = [stem_key(xin, nn.Conv2d(**{**conv, **c}), nn.MaxPool2d(**{**pool, **p}), False) for c, p, xin in cases]
    base = (nn.Conv2d(**conv), nn.MaxPool2d(**pool))
    keys += [stem_key(x, *base, True), stem_key(x, *base, False, onednn=True)]
    assert len(set(keys)) == len(keys), keys


# -- the stem's conv + bias + ReLU: ATen or cuDNN's fused op, measured ------------------------------


def test_conv_relu_skips_a_candidate_that_fails(monkeypatch):
    """Measured on CPU through a stand-in timer that would prefer cuDNN's fused op: it has no CPU
    kernel, so its error is kept and ATen is chosen, and the stem still matches the reference."""
    from inception_fast import choices

    timed = []

    def timer(fn, device, repeats):
        fn()
        timed.append(fn)
        return 1.0 if len(timed) == 2 else 2.0  # the second would win, but fn() raises first

    chooser = choices.MeasuredChoice(measure_on=("cpu",), timer=timer)
    monkeypatch.setattr(choices, "CONV_RELU_CHOICE", chooser)
    ref, fused = calibrated_net("torchvision", 32)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        check_close(fused(x), ref(x), reduced_precision_bound(ref(x), copy.deepcopy(ref).double()(x.double())))
    choices = list(chooser.choices().values())
    assert len(choices) == 2  # conv2 and conv3
    for c in choices:
        assert c.name == "aten" and set(c.seconds) == {"aten"}
        assert "cudnn_convolution_relu" in c.errors["cudnn_fused"]


@pytest.mark.gpu
def test_gpu_conv_relu_fused_matches_aten(cuda_device, monkeypatch):
    """cuDNN's fused conv-bias-ReLU, forced, on the stem's conv3 in channels_last: bf16 within 2x the
    ATen path's own error against fp64 (the table's rule), fp32 at the TF32 tolerance."""
    from inception_fast import choices, stages

    def forcing(winner):  # a stand-in timer under which ``winner`` (a candidate index) is fastest
        calls = []

        def timer(fn, device, repeats):
            fn()
            calls.append(fn)
            return 1.0 if len(calls) - 1 == winner else 2.0

        return timer

    for dtype in (torch.bfloat16, torch.float32):
        x = torch.randn(2, 64, 56, 56, device=cuda_device, dtype=dtype).relu().contiguous(memory_format=CL)
        w = (torch.randn(192, 64, 3, 3, device=cuda_device) / 24).to(dtype).contiguous(memory_format=CL)
        b = torch.randn(192, device=cuda_device, dtype=dtype) * 0.1
        outs = {}
        for i, name in enumerate(("aten", "cudnn_fused")):
            chooser = choices.MeasuredChoice(timer=forcing(i))
            monkeypatch.setattr(choices, "CONV_RELU_CHOICE", chooser)
            with torch.no_grad():
                outs[name] = stages.conv_relu(x, w, b, 1)
            assert [c.name for c in chooser.choices().values()] == [name], chooser.choices()  # errors, if any
        ref = torch.nn.functional.conv2d(x.double(), w.double(), b.double(), padding=1).relu()
        assert ref.std() > 0.1
        tol = reduced_precision_bound(outs["aten"], ref) if dtype == torch.bfloat16 else TOLERANCE["tf32"]
        check_close(outs["cudnn_fused"], ref, tol, f"fused {dtype}")


def test_pool_out_is_atens_output_size():
    """geometry.pool_out (the pools, folds and chains size their outputs by it) against ATen's
    max pool on every small size, kernel, stride, padding and rounding mode, ceil mode's rule that
    the last window must start inside the input or its left padding included."""
    for size in range(1, 9):
        for k in range(1, 5):
            for s in range(1, 4):
                for p in range(0, k // 2 + 1):
                    for ceil in (False, True):
                        want = geometry.pool_out(size, k, s, p, ceil)
                        if want < 1:
                            continue
                        got = F.max_pool2d(torch.zeros(1, 1, size, 1), (k, 1), (s, 1), (p, 0), ceil_mode=ceil)
                        assert got.shape[2] == want, (size, k, s, p, ceil)


def test_cpu_pool_choices_are_kept_per_thread_count(monkeypatch):
    """CPU_POOL_CHOICE measures a pool again at another thread count (the ranking of ATen's pool,
    the separable form and the extension's changes with it); a CUDA key carries no count."""
    from inception_fast import choices, stages

    chooser = choices.MeasuredChoice(measure_on=("cpu",), timer=lambda fn, device, repeats: (fn(), 1.0)[1])
    monkeypatch.setattr(choices, "CPU_POOL_CHOICE", chooser)
    x = torch.randn(1, 8, 9, 9).contiguous(memory_format=CL)
    threads = torch.get_num_threads()
    try:
        for count in (1, 2, 1):
            torch.set_num_threads(count)
            with torch.no_grad():
                got = stages.max_pool(x, nn.MaxPool2d(3, 2, ceil_mode=True), False, cpp_allowed=True)
            assert torch.equal(got, F.max_pool2d(x, 3, 2, ceil_mode=True))
    finally:
        torch.set_num_threads(threads)
    assert sorted(key.threads for key in chooser.choices()) == [1, 2], "one choice per count, each kept"


def test_cpu_pool_choices_are_kept_per_pool(monkeypatch):
    """CPU_POOL_CHOICE keeps one choice per pool setting of one input: the separable form, offered
    only for the blocks' 3x3/1 pool with padding 1 and chosen there (a stand-in timer makes the last
    candidate fastest), never computes another pool of that input; each matches ATen's bit for bit."""
    from inception_fast import choices, stages

    calls = []

    def last_fastest(fn, device, repeats):
        fn()
        calls.append(fn)
        return 1.0 / len(calls)

    chooser = choices.MeasuredChoice(measure_on=("cpu",), timer=last_fastest)
    monkeypatch.setattr(choices, "CPU_POOL_CHOICE", chooser)
    x = torch.randn(1, 8, 9, 9).contiguous(memory_format=CL)
    pools = [stages.BLOCK_POOL, nn.MaxPool2d(3, 2, 1), nn.MaxPool2d(3, 1), nn.MaxPool2d(3, 1, 1, ceil_mode=True)]
    with torch.no_grad():
        for pool in pools:
            got = stages.max_pool(x, pool, False, cpp_allowed=True)
            want = F.max_pool2d(x, pool.kernel_size, pool.stride, pool.padding, ceil_mode=pool.ceil_mode)
            assert torch.equal(got, want), pool
    made = list(chooser.choices().values())
    assert len(made) == len(pools) and made[0].name == "separable", made
    for pool, choice in zip(pools[1:], made[1:]):
        assert "separable" not in {*choice.seconds, *choice.errors}, (pool, choice)
