"""The Triton stem kernel (backends/triton/stem.py) and its op, ``inception_fast::conv_relu_maxpool``,
against F.conv2d / F.max_pool2d in float64 from the same weights.

Outputs are NaN-poisoned before the kernel runs, so an element it does not write fails.
* CPU: under TRITON_INTERPRET=1 (tests/conftest.py), fp32 at TOLERANCE["fp32"] (also every GPU
  config, pinned), plus fp16.
* GPU (marked gpu, skipped without CUDA): bf16 with the 2x rule for every config, fp32 with and
  without TF32.
"""

from __future__ import annotations

import os
import warnings

import pytest
import torch
import torch.nn.functional as F

from inception_fast import ops
from inception_fast.testing import TOLERANCE, check_close, reduced_precision_bound

pytest.importorskip("triton")

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
interpreter_only = pytest.mark.skipif(not INTERPRET, reason="CPU tests need TRITON_INTERPRET=1 set before import")

from launch_observer import counting_do_bench, observe_launches  # noqa: E402
from unwritten_reads import assert_bands_untouched, guarded, nan_gapped, poison  # noqa: E402

from inception_fast.backends.triton import _common, stem  # noqa: E402

# The choices inside a forward, each on its own: auto's whole-network choice off (conftest).
pytestmark = pytest.mark.usefixtures("no_network_choice")

CL = torch.channels_last
# (stride, padding, pool kernel, pool stride, pool padding, ceil_mode)
TORCHVISION = (2, 3, 3, 2, 0, True)  # conv1 + maxpool1 of torchvision's and the paper's GoogLeNet
D2L = (2, 3, 3, 2, 1, False)  # the d2l textbook's
NO_POOL = (2, 3, 1, 1, 0, False)


def make_case(n=2, cin=3, h=37, w=41, cout=64, k=7, dtype=torch.float32, device="cpu", fmt=CL, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cin, h, w, generator=g).to(device=device, dtype=dtype).contiguous(memory_format=fmt)
    weight = (torch.randn(cout, cin, k, k, generator=g) * (cin * k * k) ** -0.5).to(device=device, dtype=dtype)
    bias = (torch.randn(cout, generator=g) * 0.2 + 0.05).to(device=device, dtype=dtype)
    return x, weight.contiguous(memory_format=CL), bias


def reference(x, weight, bias, stride, padding, pool_k, pool_s, pool_p, ceil_mode):
    y = F.conv2d(x, weight, bias, stride=stride, padding=padding).relu()
    return F.max_pool2d(y, pool_k, pool_s, pool_p, ceil_mode=ceil_mode) if (pool_k, pool_s) != (1, 1) else y


def reference64(x, weight, bias, params):
    return reference(x.double(), weight.double(), bias.double(), *params)


@pytest.fixture
def poisoned(monkeypatch):
    """The kernel's output buffer starts as NaN."""
    real = stem._new_output
    calls = []

    def nan_output(shape, x):
        out = poison(real(shape, x))
        calls.append(out)
        return out

    monkeypatch.setattr(stem, "_new_output", nan_output)
    yield
    assert calls, "the launcher did not allocate through _new_output; poisoning had no effect"


def check_fp32(case, params, what, config=None):
    out = stem.launch_conv_relu_maxpool(*case, *params, config=config)
    ref = reference64(*case, params)
    assert out.shape == ref.shape and out.is_contiguous(memory_format=CL)
    assert ref.std() > 0.1, "reference output is near zero: the comparison could not fail"
    return check_close(out, ref, TOLERANCE["fp32"], what)


# ---------------------------------------------------------------------------------------------
# CPU, under the Triton interpreter
# ---------------------------------------------------------------------------------------------


@interpreter_only
@pytest.mark.parametrize("params", [TORCHVISION, D2L, NO_POOL], ids=["torchvision", "d2l", "no-pool"])
@pytest.mark.parametrize("fmt", [CL, torch.contiguous_format], ids=["cl", "nchw"])
def test_conv1_and_pool_fp32(params, fmt, poisoned):
    """GoogLeNet's conv1 (7x7/2, 3 -> 64) at odd sizes (ceil_mode's overhanging window and the
    padding both occur), in both input layouts: the kernel reads any strides."""
    check_fp32(make_case(n=2, h=37, w=41, fmt=fmt), params, f"{params} {fmt}")


@interpreter_only
@pytest.mark.parametrize("i", range(len(stem.CONFIGS)))
def test_every_config_fp32(i, poisoned):
    """Each config the autotuner can choose on a GPU, pinned: conv1 with torchvision's pool, 2
    images of 31x29 (8x7 pooled pixels each: the image boundary inside a row tile and a ragged
    last tile at every BLOCK_M; ceil_mode's overhanging window) and K = 147 (a tail at every
    BLOCK_K)."""
    check_fp32(make_case(n=2, h=31, w=29, seed=50 + i), TORCHVISION, f"config {i}", config=stem.CONFIGS[i])


@interpreter_only
@pytest.mark.parametrize(
    "n,cin,h,w,cout,k,params",
    [
        (1, 1, 32, 32, 64, 7, D2L),  # d2l: one input channel, batch 1
        (3, 3, 19, 23, 40, 7, TORCHVISION),  # batch 3, a column tile left partly empty
        (2, 5, 9, 11, 24, 3, (1, 1, 3, 2, 1, True)),  # another conv: 3x3/1, and a pool with both options
        (1, 3, 7, 7, 64, 7, TORCHVISION),  # a 7x7 image: 4x4 conv output, 2x2 after the pool
        # Cin and k with a common factor: the K column's (kh, kw, cin) split must be the real one
        # (with coprime Cin and k, as above, a wrong kw split can still visit every tap once).
        (2, 6, 9, 11, 24, 3, (1, 1, 3, 2, 1, False)),
        (1, 3, 13, 11, 24, 7, (2, 3, 2, 2, 1, False)),  # a 2x2 pool with padding 1: half its kernel
    ],
)
def test_other_shapes_fp32(n, cin, h, w, cout, k, params, poisoned):
    check_fp32(make_case(n=n, cin=cin, h=h, w=w, cout=cout, k=k, seed=n + cin), params, f"{n}x{cin}x{h}x{w} k{k}")


@interpreter_only
def test_strided_bias_fp32(poisoned):
    """The bias is read through its stride: a view of every other element of a buffer whose gaps
    hold NaN (a kernel that assumes stride 1 reads them)."""
    x, w, b = make_case(n=1, h=15, w=13, seed=8)
    gapped = nan_gapped(b)
    out = stem.launch_conv_relu_maxpool(x, w, gapped, *TORCHVISION)
    check_close(out, reference64(x, w, b, TORCHVISION), TOLERANCE["fp32"], "strided bias")


@interpreter_only
def test_no_access_outside_the_buffers(monkeypatch):
    """The output and the bias sit between poisoned guard bands: a store past the last pooled pixel
    or the last channel changes a band (on a GPU: someone else's memory), a bias load past COUT
    reads a band's poison and trips the unwritten-read check.  COUT 40 leaves the 64-wide column
    tile partly empty, 1x8x7 pooled pixels leave the last row tile partly empty; every config."""
    bands = []

    def guarded_output(shape, x):
        n, c, h, w = shape
        return guarded(n * c * h * w, x.dtype, x.device, bands).view(n, h, w, c).permute(0, 3, 1, 2)

    monkeypatch.setattr(stem, "_new_output", guarded_output)
    x, w, b = make_case(n=1, h=31, w=29, cout=40, seed=9)
    guarded_b = guarded(b.numel(), b.dtype, b.device, bands).copy_(b)
    for config in [None, *stem.CONFIGS]:
        check_fp32((x, w, guarded_b), TORCHVISION, f"config {config}", config=config)
    assert_bands_untouched(bands)


def test_launcher_rejects_what_it_does_not_compute():
    """The launcher's own checks (the op checks first): a square weight whose input channels are
    x's, a pool padding of at most half its kernel (1 for a 3x3 pool), and an input whose conv
    output is smaller than the pool's window (no pooled pixel)."""
    x, w, b = make_case(n=1, h=15, w=13)
    with pytest.raises(ValueError, match="max pool"):
        stem.launch_conv_relu_maxpool(x, w, b, 2, 3, 3, 2, 2)
    with pytest.raises(ValueError, match="square conv weight"):
        stem.launch_conv_relu_maxpool(x, w[:, :, :5], b, *TORCHVISION)
    with pytest.raises(ValueError, match="square conv weight"):
        stem.launch_conv_relu_maxpool(x[:, :2], w, b, *TORCHVISION)
    with pytest.raises(ValueError, match="no output"):  # a 2x2 conv output under a 3x3 window
        stem.launch_conv_relu_maxpool(x[..., :3, :3], w, b, 2, 3, 3, 2, 0, False)


@pytest.mark.parametrize("tf32", [True, False], ids=["tf32", "exact"])
def test_dot_precision_follows_allow_tf32(tf32, monkeypatch):
    """fp32 products in TF32 only while cudnn.allow_tf32 is on, read at call time, as the GPU's
    launch path asks for them (the interpreter multiplies exactly either way: test_gpu_fp32 checks
    the results on a GPU)."""
    monkeypatch.setattr(_common, "INTERPRET", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", tf32)
    _, meta, _, _ = stem._arguments(*make_case(n=1, h=15, w=13, device="meta"), *TORCHVISION)
    assert meta["DOT_PRECISION"] == ("tf32" if tf32 else "ieee")


@interpreter_only
def test_fp16(poisoned):
    """Error vs fp64 within 2x that of F.conv2d / F.max_pool2d in fp16 on CPU from the same values."""
    case = make_case(n=2, h=29, w=31, dtype=torch.float16, seed=3)
    out = stem.launch_conv_relu_maxpool(*case, *TORCHVISION)
    ref64, ref16 = reference64(*case, TORCHVISION), reference(*case, *TORCHVISION)
    assert out.dtype == torch.float16 and ref64.std() > 0.1
    check_close(out, ref64, reduced_precision_bound(ref16, ref64), "fp16")


@interpreter_only
def test_poisoning_catches_unwritten_elements(monkeypatch, poisoned):
    """The NaN check can fail: with no launch the output stays NaN and the comparison fails."""
    monkeypatch.setattr(_common, "launch", lambda *args, **kwargs: None)
    with pytest.raises(AssertionError):
        check_fp32(make_case(n=1, h=15, w=15), TORCHVISION, "not launched")


@interpreter_only
def test_one_launch_and_no_other_kernels(monkeypatch):
    case = make_case(n=1, h=21, w=17)
    out, aten_ops, launched = observe_launches(lambda: stem.launch_conv_relu_maxpool(*case, *TORCHVISION), monkeypatch)
    assert launched == [stem._conv_pool_kernel]
    assert set(aten_ops) <= {"aten.empty.memory_format"}, aten_ops
    check_close(out, reference64(*case, TORCHVISION), TOLERANCE["fp32"])


@interpreter_only
def test_autotuned_launch_path(monkeypatch, poisoned):
    """The GPU's launch path (triton.autotune) run by the interpreter with a stand-in do_bench:
    every config is benchmarked once per shape, and pool / no pool are tuned apart."""
    import triton

    fake_do_bench, benchmarked = counting_do_bench()
    configs = [
        triton.Config({"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 16}),
        triton.Config({"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 32}),
    ]
    tuned = stem.make_tuned_kernel(configs, do_bench=fake_do_bench)
    monkeypatch.setattr(stem, "_tuned_kernel", tuned)
    for seed in (1, 2):
        check_fp32(make_case(n=1, h=15, w=17, seed=seed), TORCHVISION, "autotuned")
    assert len(benchmarked) == 2 and len(tuned.cache) == 1
    check_fp32(make_case(n=1, h=15, w=17, seed=3), NO_POOL, "autotuned, no pool")
    assert len(benchmarked) == 4 and len(tuned.cache) == 2


@interpreter_only
def test_op_backends_agree_and_opcheck():
    case = make_case(n=2, h=23, w=19, seed=4)
    ref = reference64(*case, TORCHVISION)
    for backend in ("torch", "triton"):
        out = ops.conv_relu_maxpool(*case, *TORCHVISION, backend=backend)
        assert out.is_contiguous(memory_format=CL)
        check_close(out, ref, TOLERANCE["fp32"], backend)
        torch.library.opcheck(
            torch.ops.inception_fast.conv_relu_maxpool,
            (*case, *TORCHVISION, backend),
            test_utils=("test_schema", "test_faketensor"),
        )


def test_op_rejects_bad_input():
    x, w, b = make_case(n=1, h=16, w=16)
    run = lambda *args, backend="torch": ops.conv_relu_maxpool(*args, *TORCHVISION, backend=backend)  # noqa: E731
    with pytest.raises(ValueError, match="expects 3 input channels, got 4"):
        run(torch.randn(1, 4, 16, 16), w, b)
    with pytest.raises(ValueError, match="4-D"):
        run(x[0], w, b)
    with pytest.raises(TypeError, match="int64"):
        run(x.long(), w, b)
    with pytest.raises(TypeError, match="does not match w dtype"):
        run(x.half(), w, b)
    with pytest.raises(ValueError, match="too small"):
        run(torch.randn(1, 3, 2, 2), w, b)
    with pytest.raises(ValueError, match="bias of shape"):
        run(x, w, b[:5])
    with warnings.catch_warnings(), pytest.raises(ValueError, match=r"'torch' or 'triton'.*'cuda' names the 'cpp'"):
        warnings.simplefilter("error")  # no deprecation warning for a name that fails either way
        run(x, w, b, backend="cuda")
    with pytest.raises(RuntimeError, match="on meta"):
        run(x, w.to("meta"), b)
    with pytest.raises(ValueError, match="pool padding 2"):  # more than half the 3x3 pool's kernel
        ops.conv_relu_maxpool(x, w, b, 2, 3, 3, 2, 2)


@interpreter_only
def test_nan_propagates_like_pytorch():
    x, w, b = make_case(n=1, h=31, w=31, seed=8)
    x[0, 1, 10, 10] = float("nan")
    out = stem.launch_conv_relu_maxpool(x, w, b, *TORCHVISION)
    ref = reference(x, w, b, *TORCHVISION)
    assert torch.isnan(ref).any() and not torch.isnan(ref).all()
    assert torch.equal(torch.isnan(out), torch.isnan(ref))


@interpreter_only
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_strided_1x1_pool(backend):
    """pool_kernel 1 with stride 2 subsamples the conv output; every backend and the fake kernel agree."""
    case = make_case(n=2, cin=3, h=17, w=19, seed=6)
    params = (1, 3, 1, 2, 0, False)
    out = ops.conv_relu_maxpool(*case, *params, backend=backend)
    check_close(out, reference64(*case, params), TOLERANCE["fp32"], backend)
    torch.library.opcheck(
        torch.ops.inception_fast.conv_relu_maxpool,
        (*case, *params, backend),
        test_utils=("test_schema", "test_faketensor"),
    )


@interpreter_only
def test_bfloat16_rejected_by_interpreter():
    with pytest.raises(TypeError, match="bfloat16 is not supported by the Triton interpreter"):
        stem.launch_conv_relu_maxpool(*make_case(n=1, h=15, w=15, dtype=torch.bfloat16), *TORCHVISION)


# ---------------------------------------------------------------------------------------------
# GPU
# ---------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize(
    "i,params",
    [(i, TORCHVISION) for i in range(len(stem.CONFIGS))] + [(0, NO_POOL)],
    ids=[*(f"pool-{i}" for i in range(len(stem.CONFIGS))), "no-pool-0"],
)
def test_gpu_every_config_bf16(i, params, gpu):
    """conv1 at GoogLeNet's 224 input, every config with the pool (one without: the same code with
    one tap): error vs fp64 within 2x cuDNN's in bf16.  Each case is a compile, hence not all 8."""
    case = make_case(n=2, h=224, w=224, dtype=torch.bfloat16, device=gpu, seed=i)
    out = stem.launch_conv_relu_maxpool(*case, *params, config=stem.CONFIGS[i])
    torch.cuda.synchronize()
    ref64, ref16 = reference64(*case, params), reference(*case, *params)
    assert ref64.std() > 0.1
    check_close(out, ref64, reduced_precision_bound(ref16, ref64), f"config {i}")


@pytest.mark.gpu
def test_gpu_autotuned_nchw_input_bf16(gpu):
    """The path the model takes (autotuned), reading an NCHW input directly."""
    case = make_case(n=3, h=100, w=90, dtype=torch.bfloat16, device=gpu, fmt=torch.contiguous_format, seed=5)
    out = ops.conv_relu_maxpool(*case, *TORCHVISION, backend="triton")
    torch.cuda.synchronize()
    ref64, ref16 = reference64(*case, TORCHVISION), reference(*case, *TORCHVISION)
    check_close(out, ref64, reduced_precision_bound(ref16, ref64), "autotuned NCHW")


@pytest.mark.gpu
@pytest.mark.parametrize("tf32", [True, False], ids=["tf32", "exact"])
def test_gpu_fp32(tf32, gpu, monkeypatch):
    """TF32 only when cudnn.allow_tf32 is on (read at call time); exact fp32 otherwise."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", tf32)
    case = make_case(n=2, h=64, w=64, device=gpu, seed=7)
    out = stem.launch_conv_relu_maxpool(*case, *TORCHVISION, config=stem.CONFIGS[-1])
    torch.cuda.synchronize()
    err = check_close(out, reference64(*case, TORCHVISION), TOLERANCE["tf32" if tf32 else "fp32"], f"tf32={tf32}")
    if tf32:
        assert err > 1e-5, f"error {err:.1e}: allow_tf32=True but the kernel seems to compute exact fp32"
