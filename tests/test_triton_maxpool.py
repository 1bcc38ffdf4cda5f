"""The Triton max pool (backends/triton/maxpool.py), its op ``inception_fast::max_pool2d``, and
FusedGoogLeNet's measured choice between it and ATen's pool (choices.POOL_CHOICE).

A max is exact, so the kernel must equal F.max_pool2d bit for bit (NaN where PyTorch puts NaN).
Outputs come from torch.empty and are overwritten with NaN first where it matters.
* CPU: under TRITON_INTERPRET=1 (tests/conftest.py), fp32 and fp16.
* GPU (marked gpu, skipped without CUDA): bf16 for every config.
"""

from __future__ import annotations

import os
import warnings

import pytest
import torch
import torch.nn.functional as F

from inception_fast import choices, ops
from inception_fast.testing import same_bits

pytest.importorskip("triton")

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
interpreter_only = pytest.mark.skipif(not INTERPRET, reason="CPU tests need TRITON_INTERPRET=1 set before import")

from launch_observer import forcing_chooser  # noqa: E402
from model_cases import op_backends  # noqa: E402
from unwritten_reads import assert_bands_untouched, guarded, poison  # noqa: E402

from inception_fast.backends.triton import maxpool  # noqa: E402

# The choices inside a forward, each on its own: auto's whole-network choice off (conftest).
pytestmark = pytest.mark.usefixtures("no_network_choice")

CL = torch.channels_last
# (kernel, stride, padding, ceil_mode): torchvision's (and the paper's) maxpool1-3 and maxpool4,
# d2l's pools, the blocks' 3x3/1 pool, and a window that misses part of the input at the far edge.
POOLS = [(3, 2, 0, True), (2, 2, 0, True), (3, 2, 1, False), (3, 1, 1, True), (3, 3, 1, True)]


def make_input(n=2, c=19, h=13, w=11, dtype=torch.float32, device="cpu", fmt=CL, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, h, w, generator=g).to(device=device, dtype=dtype).contiguous(memory_format=fmt)


def check_equal(out, x, params):
    expected = F.max_pool2d(x, params[0], params[1], params[2], ceil_mode=params[3])
    assert out.shape == expected.shape and out.dtype == x.dtype
    assert out.is_contiguous(memory_format=CL)
    # Bit for bit, NaN where ATen's, but for the sign of tied zeros (+0.0 normalises it).
    assert same_bits(out + 0.0, expected + 0.0), f"max pool {params} differs"


@interpreter_only
@pytest.mark.parametrize("params", POOLS)
@pytest.mark.parametrize("n,c,h,w", [(2, 19, 13, 11), (1, 64, 8, 8), (3, 5, 7, 9)])
def test_max_pool_equals_pytorch(params, n, c, h, w):
    x = make_input(n, c, h, w, seed=c)
    check_equal(ops.max_pool2d(x, *params, backend="triton"), x, params)


@interpreter_only
@pytest.mark.parametrize("fmt", [torch.contiguous_format, CL], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_layouts_dtypes_nan_and_inf(fmt, dtype):
    """NCHW input (any strides work), fp16, and the edge values: a NaN spreads to every window
    that holds it, -inf is a value like any other (padding must not beat it), zeros of both signs."""
    x = make_input(2, 6, 9, 10, dtype=dtype, fmt=fmt, seed=3)
    x[0, 1, 4, 4] = float("nan")
    x[1, 2] = float("-inf")
    x[1, 3] = 0.0
    x[1, 3, ::2, 1::2] = -0.0  # ties of -0.0 and +0.0 (the sign may differ: see maxpool.py)
    for params in ((3, 2, 1, False), (3, 2, 0, True)):
        check_equal(ops.max_pool2d(x, *params, backend="triton"), x, params)


@interpreter_only
def test_pinned_configs_and_poisoned_output(monkeypatch):
    """Every config, with the output buffer NaN-filled before the kernel runs (a tile it does
    not write would stay NaN)."""
    real_empty = torch.empty

    def poisoned_empty(*args, **kwargs):
        return poison(real_empty(*args, **kwargs))

    x = make_input(2, 70, 10, 12, seed=5)
    monkeypatch.setattr(maxpool.torch, "empty", poisoned_empty)
    for config in maxpool.CONFIGS:
        check_equal(maxpool.launch_max_pool(x, 3, 2, 0, True, config=config), x, (3, 2, 0, True))


@interpreter_only
@pytest.mark.parametrize("c", [19, 70])
def test_no_store_outside_the_output(monkeypatch, c):
    """The output sits between two poisoned guard bands, which must come back untouched: a store
    past the last pixel or the last channel lands there (on a GPU: in someone else's memory)."""
    bands = []

    def guarded_empty(shape, dtype, device, memory_format):
        n, ch, h, w = shape
        return guarded(n * ch * h * w, dtype, device, bands).view(n, h, w, ch).permute(0, 3, 1, 2)

    monkeypatch.setattr(maxpool.torch, "empty", guarded_empty)
    for dtype in (torch.float32, torch.float16):
        x = make_input(2, c, 13, 11, dtype=dtype, seed=c)
        for config in [None, *maxpool.CONFIGS]:
            check_equal(maxpool.launch_max_pool(x, 3, 2, 0, True, config=config), x, (3, 2, 0, True))
    assert_bands_untouched(bands)


@interpreter_only
def test_an_empty_output_launches_nothing(monkeypatch):
    """CUDA rejects an empty grid: an empty batch gets its empty output without a launch."""

    def no_launch(*args, **kwargs):
        raise AssertionError("launched a kernel for an empty output")

    monkeypatch.setattr(maxpool._common, "launch_configured", no_launch)
    out = maxpool.launch_max_pool(make_input(0, 4, 9, 9), 3, 2, 0, True)
    assert out.shape == (0, 4, 4, 4) and out.is_contiguous(memory_format=CL)


@interpreter_only
def test_bfloat16_rejected_by_interpreter():
    """The launcher's own dtype check: the interpreter has no bfloat16."""
    with pytest.raises(TypeError, match="bfloat16 is not supported by the Triton interpreter"):
        maxpool.launch_max_pool(make_input(1, 4, 9, 9, dtype=torch.bfloat16), 3, 2, 0, True)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=interpreter_only)])
def test_gradient_is_atens(backend):
    """The op is differentiable on either backend, with ATen's max-pool gradient."""
    x = make_input(2, 5, 9, 8, seed=7).requires_grad_()
    grad = torch.randn(2, 5, 4, 4)
    (got,) = torch.autograd.grad(ops.max_pool2d(x, 3, 2, 0, True, backend=backend), x, grad)
    (expected,) = torch.autograd.grad(F.max_pool2d(x, 3, 2, 0, ceil_mode=True), x, grad)
    assert torch.equal(got, expected)


def test_op_checks_and_torch_backend():
    """The op's argument checks name the problem; its torch backend is F.max_pool2d, channels_last;
    opcheck covers the schema, the fake kernel and the torch backend."""
    x = make_input(1, 4, 5, 5)
    with pytest.raises(ValueError, match="4-D"):
        ops.max_pool2d(x[0], 3, 2)
    with pytest.raises(TypeError, match="float32"):
        ops.max_pool2d(x.to(torch.int32), 3, 2)
    with pytest.raises(ValueError, match="at most half the kernel"):
        ops.max_pool2d(x, 3, 2, 2)
    with pytest.raises(ValueError, match="too small"):
        ops.max_pool2d(make_input(1, 4, 2, 2), 3, 2)
    # The old name of the cpp backend on CPU: for an op cpp lacks, an error naming both names, and
    # no deprecation warning telling the user to pass a name that fails the same way; for the pool,
    # which cpp has (the extension's), the warning and the cpp pool.
    w, b = torch.randn(3, 4), torch.randn(3)
    with warnings.catch_warnings(), pytest.raises(ValueError, match=r"'torch' or 'triton'.*'cuda' names the 'cpp'"):
        warnings.simplefilter("error")
        ops.avgpool_linear(x, w, b, backend="cuda")
    from inception_fast.backends import availability

    if availability("cpp", "cpu") is None:
        with pytest.warns(DeprecationWarning, match="deprecated name of the 'cpp' backend"):
            check_equal(ops.max_pool2d(x, 3, 2, backend="cuda"), x, (3, 2, 0, False))
    check_equal(ops.max_pool2d(x, 3, 2, 0, True), x, (3, 2, 0, True))
    for backend in op_backends("max_pool2d"):
        torch.library.opcheck(torch.ops.inception_fast.max_pool2d.default, (x, 3, 2, 0, True, backend))


# -- FusedGoogLeNet's measured pools ---------------------------------------------------------------


@interpreter_only
@pytest.mark.parametrize("variant", ["torchvision", "paper", "d2l"])
def test_model_pools_through_triton_match(monkeypatch, variant):
    """With the Triton pool measured fastest, FusedGoogLeNet's four pools (maxpool1 after the
    stem's first conv, maxpool2-4; padded in d2l's variant) run it, and the logits equal those of
    the same model with ATen's pools exactly (a max is exact); a torch-pinned model never asks."""
    from inception_fast import FusedGoogLeNet, GoogLeNet
    from inception_fast.backends.triton import _common
    from inception_fast.testing import calibrate

    ref = GoogLeNet(num_classes=10, variant=variant)
    calibrate(ref, torch.randn(4, ref.in_channels, 40, 40))
    # Backend auto: on the CPU its blocks run ATen's or oneDNN's kernels (not the interpreter's), and
    # the pools are Triton candidates as on the GPU.
    model = FusedGoogLeNet.from_torchvision(ref, backend="auto").eval()
    # On a CPU auto's pools measure the compiled extension's (CPU_POOL_CHOICE); here they take the
    # GPU's path, where the Triton pool competes.
    monkeypatch.setattr(model, "_cpp_pool_allowed", lambda device: False)
    x = torch.randn(1, ref.in_channels, 40, 40)
    monkeypatch.setattr(choices, "STEM_CHOICE", choices.MeasuredChoice(measure_on=()))  # conv1: its first form
    outs, launches = {}, {}
    for winner in ("aten", "triton"):
        chooser = forcing_chooser(winner)
        monkeypatch.setattr(choices, "POOL_CHOICE", chooser)
        with torch.no_grad():
            model(x)  # measures
            before = _common.launch_count()
            outs[winner] = model(x)  # runs the choices
            launches[winner] = _common.launch_count() - before
        assert [c.name for c in chooser.choices().values()] == [winner] * 4
    assert launches == {"aten": 0, "triton": 4}  # the four pools
    assert outs["aten"].std() > 0.05, "activations vanished; the comparison could not fail"
    assert torch.equal(outs["triton"], outs["aten"])
    chooser = forcing_chooser("triton")
    monkeypatch.setattr(choices, "POOL_CHOICE", chooser)
    pinned = FusedGoogLeNet.from_torchvision(ref, backend="torch").eval()
    with torch.no_grad():
        pinned(x)
    assert not chooser.choices()


@interpreter_only
def test_a_wrong_triton_pool_is_never_chosen(monkeypatch):
    """The measured choice checks the Triton pool against ATen's on its first call: a kernel that
    returns a wrong max is dropped with the error on record, however fast it would be."""
    from inception_fast import modules

    real = maxpool.launch_max_pool
    monkeypatch.setattr(maxpool, "launch_max_pool", lambda *args, **kw: real(*args, **kw) + 1.0)
    chooser = forcing_chooser("triton")
    monkeypatch.setattr(choices, "POOL_CHOICE", chooser)
    model = modules.FusedGoogLeNet(num_classes=10, backend="triton", init_weights=True).eval()
    x = make_input(1, 64, 9, 9)
    with torch.no_grad():
        out = model._max_pool(x, model.maxpool1)
    check_equal(out, x, (3, 2, 0, True))
    (choice,) = chooser.choices().values()
    assert choice.name == "aten" and "disagrees with ATen" in choice.errors["triton"]


@pytest.mark.gpu
@pytest.mark.parametrize("config", range(len(maxpool.CONFIGS)))
def test_gpu_max_pool_bf16(config, gpu):
    """GoogLeNet's pool shapes at batch 2, bf16 channels_last, each config: equal to PyTorch."""
    for c, size, params in (
        (64, 112, (3, 2, 0, True)),
        (480, 28, (3, 2, 0, True)),
        (832, 14, (2, 2, 0, True)),
        (192, 56, (3, 2, 1, False)),
    ):
        x = make_input(2, c, size, size, dtype=torch.bfloat16, device=gpu, seed=c)
        check_equal(maxpool.launch_max_pool(x, *params, config=maxpool.CONFIGS[config]), x, params)


@interpreter_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_a_read_of_unwritten_memory_fails(dtype):
    """The suite's check for reads of memory nothing wrote (tests/unwritten_reads.py, on for every
    interpreter test): the pool over an input the launcher module allocated (its torch.empty, which
    the check poisons) and nothing wrote fails at its first load, naming the cause, and is on
    record for conftest to fail the test even where the error was caught (here, the record is
    cleared); over the same input once written, it runs."""
    import unwritten_reads

    x = maxpool.torch.empty(1, 19, 5, 4, dtype=dtype, memory_format=CL)
    with pytest.raises(Exception, match="a load read memory nothing wrote"):
        maxpool.launch_max_pool(x, 3, 2, 0, True)
    assert len(unwritten_reads.HITS) == 1
    unwritten_reads.HITS.clear()
    x.normal_()
    torch.testing.assert_close(maxpool.launch_max_pool(x, 3, 2, 0, True), F.max_pool2d(x, 3, 2, 0, ceil_mode=True))
