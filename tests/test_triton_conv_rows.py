"""The Triton conv + bias + ReLU over aligned rows of a padded input (backends/triton/conv_rows.py):
op ``inception_fast::conv_relu`` at a stride above 1 on the triton backend, and the stem's
"triton_rows" form of conv1.

Outputs are compared with ATen's conv in float64 from the same tensors; the launcher's buffers (the
padded input, the output) start as NaN, so an element the kernels do not write fails, and under the
interpreter the unwritten-read check (tests/unwritten_reads.py) fails a load of one.
* CPU: under TRITON_INTERPRET=1 (tests/conftest.py), fp32 at TOLERANCE["fp32"] and fp16 within the
  table's 2x rule: conv1's geometry on odd maps, strides 2 and 3 (4 and 8 padded channels), 1 to 8
  input channels, NCHW and channels_last inputs and weights, every GPU config pinned once.
* GPU (marked gpu, skipped without CUDA): conv1 at 224x224 in bf16 and fp16, every config.
The pooled form (op ``conv_relu_maxpool`` with ``w_rows``, the stem's "triton_rows_pool") likewise
against ATen's conv + ReLU + max pool: torchvision's, d2l's and other pools on odd maps (ceil
mode's overhanging windows), every config, NaN propagation, its refusals; on the GPU conv1 +
maxpool1 at 224x224.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from model_cases import CL

from inception_fast import ops
from inception_fast.testing import TOLERANCE, check_close, reduced_precision_bound

pytest.importorskip("triton")

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
interpreter_only = pytest.mark.skipif(not INTERPRET, reason="CPU tests need TRITON_INTERPRET=1 set before import")

from launch_observer import observe_launches, poison_empty  # noqa: E402

from inception_fast.backends.triton import conv_rows  # noqa: E402

# The choices inside a forward, each on its own: auto's whole-network choice off (conftest).
pytestmark = pytest.mark.usefixtures("no_network_choice")


def make_case(n, cin, h, w, cout, k, dtype=torch.float32, device="cpu", fmt=CL, wfmt=CL, seed=0):
    """(x, w, b): an image-like input and a conv's scale of weights, so that about half the outputs
    pass the ReLU."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cin, h, w, generator=g)
    wt = torch.randn(cout, cin, k, k, generator=g) / (cin * k * k) ** 0.5
    b = torch.randn(cout, generator=g) * 0.1
    x = x.to(device=device, dtype=dtype).contiguous(memory_format=fmt)
    return x, wt.to(device=device, dtype=dtype).contiguous(memory_format=wfmt), b.to(device=device, dtype=dtype)


def check_against(out, ref, x, aten, what):
    """out against the float64 reference ``ref``: fp32 at the table's fp32 bound (tf32 on a GPU that
    allows it), fp16/bf16 within 2x the error of ``aten()`` (ATen in that dtype); channels_last, in
    x's dtype."""
    assert out.shape == ref.shape and out.dtype == x.dtype, what
    assert out.is_contiguous(memory_format=CL), what
    assert ref.std() > 0.05, "the reference is flat; the comparison could not fail"
    if x.dtype == torch.float32:  # on a GPU with cudnn.allow_tf32 (PyTorch's default) the kernel uses TF32
        tol = TOLERANCE["tf32" if x.is_cuda and torch.backends.cudnn.allow_tf32 else "fp32"]
    else:
        tol = reduced_precision_bound(aten(), ref)
    check_close(out, ref, tol, what)


def check_conv(out, x, wt, b, stride, padding, what="conv_rows"):
    """out against ATen's conv + ReLU in float64 (check_against)."""
    ref = F.conv2d(x.double(), wt.double(), b.double(), stride=stride, padding=padding).relu()
    check_against(out, ref, x, lambda: ops.conv_relu(x, wt, b, padding, backend="torch", stride=stride), what)


@pytest.fixture
def poisoned(monkeypatch):
    """The launcher's padded input and output start as NaN."""
    made = poison_empty(monkeypatch, conv_rows)
    yield made
    assert len(made) >= 2, "the launcher allocated its buffers elsewhere; poisoning had no effect"


# (N, Cin, H, W, Cout, k, stride, padding): conv1's geometry on odd and tiny maps (the last
# window's overhang, a map smaller than the kernel), 1/4/5/8 channels, stride 3 (8 padded
# channels), a 1x1 kernel at stride 2, a padding larger than the kernel's half, and a 4x4 kernel
# at an odd width (W + 2*PAD = 13 is the widest the windows need: WP must be rounded up to even,
# or at 4 padded channels the row pitch in units of 8 elements is wrong), a wide map (a padded row
# of 134 x 8 elements, more than the padded copy's 1024-element chunk: two chunks a row).
SHAPES = [
    (2, 3, 19, 23, 24, 7, 2, 3),
    (1, 3, 5, 4, 16, 7, 2, 3),
    (3, 1, 9, 11, 8, 3, 2, 1),
    (1, 4, 10, 7, 40, 5, 2, 2),
    (2, 5, 12, 13, 16, 3, 3, 0),
    (1, 8, 8, 9, 16, 7, 2, 3),
    (2, 2, 7, 8, 16, 1, 2, 0),
    (1, 3, 6, 6, 16, 3, 2, 4),
    (1, 3, 9, 11, 16, 4, 2, 1),
    (1, 5, 4, 131, 8, 3, 2, 1),
]


@interpreter_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("n,cin,h,w,cout,k,stride,padding", SHAPES)
def test_conv_rows_matches_aten(poisoned, dtype, n, cin, h, w, cout, k, stride, padding):
    x, wt, b = make_case(n, cin, h, w, cout, k, dtype=dtype, seed=cin + k + stride)
    check_conv(ops.conv_relu(x, wt, b, padding, backend="triton", stride=stride), x, wt, b, stride, padding)


@interpreter_only
def test_every_config_any_layout_and_two_launches(poisoned, monkeypatch):
    """Every GPU config (pinned) once on conv1's geometry, NCHW input and NCHW weight; the op is
    the two launches (the padded copy, the conv) and nothing else; an empty batch launches nothing."""
    for i, config in enumerate(conv_rows.CONFIGS):
        x, wt, b = make_case(2, 3, 15, 14, 64, 7, fmt=torch.contiguous_format, wfmt=torch.contiguous_format, seed=i)
        check_conv(conv_rows.launch_conv_rows(x, wt, b, 2, 3, config), x, wt, b, 2, 3, str(config))
    out, _ops, launched = observe_launches(lambda: ops.conv_relu(x, wt, b, 3, backend="triton", stride=2), monkeypatch)
    assert launched == [conv_rows._pad_kernel, conv_rows._conv_rows_kernel]
    check_conv(out, x, wt, b, 2, 3, "through the op")
    empty, _ops, launched = observe_launches(
        lambda: ops.conv_relu(x[:0], wt, b, 3, backend="triton", stride=2), monkeypatch
    )
    assert empty.shape == (0, 64, 8, 7) and launched == []


@interpreter_only
@pytest.mark.filterwarnings("ignore:invalid value encountered in matmul:RuntimeWarning")  # the interpreter's Inf * 0
def test_inf_beyond_a_window_stays_out_of_it():
    """The kernel loads a power-of-two run from each window's start, past the window's last column:
    an Inf there (a pixel other windows hold) must not reach the outputs whose windows miss it.
    Outputs are finite exactly where ATen's are, and equal there."""
    x, wt, b = make_case(1, 3, 13, 17, 16, 7, seed=7)
    x[0, :2, 6, 8] = float("inf")  # channel 0: the element right past a window; 1: further on
    out = ops.conv_relu(x, wt, b, 3, backend="triton", stride=2)
    ref = F.conv2d(x.double(), wt.double(), b.double(), stride=2, padding=3).relu()
    finite = ref.isfinite()
    assert 0 < (~finite).sum() < finite.sum()
    assert torch.equal(out.isfinite(), finite)
    check_close(torch.where(finite, out, 0.0), torch.where(finite, ref, 0.0), TOLERANCE["fp32"])


@interpreter_only
def test_packed_weight_layout_and_the_w_rows_argument():
    """packing.pack_conv_rows puts w[:, c, kh, kw] at row kh, element kw*4 + c, zeros elsewhere;
    the op with that packing passed as ``w_rows`` computes what it computes packing by itself,
    and sees an in-place change to w where it packs by itself; a w_rows that is not the packing
    is refused by name; a planted bug fails the comparison."""
    from inception_fast.packing import pack_conv_rows

    x, wt, b = make_case(2, 3, 11, 10, 16, 7, seed=8)
    packed = pack_conv_rows(wt, 2)
    assert packed.shape == (7, 32, 16) and packed.is_contiguous()
    assert torch.equal(packed[2, 5 * 4 + 1], wt[:, 1, 2, 5])
    assert not packed.view(7, 8, 4, 16)[:, 7].any() and not packed.view(7, 8, 4, 16)[:, :, 3].any()
    out = ops.conv_relu(x, wt, b, 3, backend="triton", stride=2)
    check_conv(out, x, wt, b, 2, 3, "packed by the launcher")
    assert torch.equal(ops.conv_relu(x, wt, b, 3, backend="triton", stride=2, w_rows=packed), out)
    wt.mul_(-0.5)
    check_conv(ops.conv_relu(x, wt, b, 3, backend="triton", stride=2), x, wt, b, 2, 3, "after an in-place change")
    with pytest.raises(ValueError, match=r"w_rows must be the weight packed.*\(7, 32, 16\)"):
        ops.conv_relu(x, wt, b, 3, backend="triton", stride=2, w_rows=packed[:, :28])
    with pytest.raises(ValueError, match="w_rows must be the weight packed"):
        ops.conv_relu(x, wt, b, 3, backend="triton", stride=2, w_rows=packed.double())
    # A 2x2 kernel's packings for 4 and 8 channels (strides 2 and 3) have one shape: the launcher
    # packs such a kernel itself rather than trust a w_rows that may be the other stride's.
    x2, w2, b2 = make_case(1, 3, 12, 11, 16, 2, seed=13)
    assert pack_conv_rows(w2, 2).shape == pack_conv_rows(w2, 3).shape
    check_conv(ops.conv_relu(x2, w2, b2, 1, backend="triton", stride=3, w_rows=pack_conv_rows(w2, 2)), x2, w2, b2, 3, 1)
    out = ops.conv_relu(x, wt, b, 3, backend="triton", stride=2)
    with pytest.raises(AssertionError, match="relative error"):
        check_conv((out.double() - b.double().view(1, -1, 1, 1)).relu().float(), x, wt, b, 2, 3, "bias left out")


@interpreter_only
def test_inference_tensors_are_packed_every_call():
    """Under torch.inference_mode() the weight is an inference tensor (no version counter): it is
    packed on every call, so an in-place change made there is seen too."""
    with torch.inference_mode():
        x, wt, b = make_case(1, 3, 11, 10, 16, 7, seed=10)
        check_conv(ops.conv_relu(x, wt, b, 3, backend="triton", stride=2), x, wt, b, 2, 3, "inference")
        wt.mul_(-1.0)
        check_conv(ops.conv_relu(x, wt, b, 3, backend="triton", stride=2), x, wt, b, 2, 3, "changed in place")


def test_op_stride_checks_and_torch_backend():
    """The op's stride argument: checked, ATen's strided conv + ReLU on the torch backend, covered by
    opcheck; the Triton kernel refuses inputs of more than 8 channels with a clear error."""
    x, wt, b = make_case(2, 3, 11, 10, 16, 7, seed=9)
    with pytest.raises(ValueError, match="stride of 1 or more"):
        ops.conv_relu(x, wt, b, 3, stride=0)
    with pytest.raises(ValueError, match="too small for a 7x7/2 conv"):
        ops.conv_relu(x[..., :2, :2], wt, b, 0, stride=2)
    assert torch.equal(ops.conv_relu(x, wt, b, 3, stride=2), F.conv2d(x, wt, b, stride=2, padding=3).relu())
    torch.library.opcheck(torch.ops.inception_fast.conv_relu.default, (x, wt, b, 3, "torch", 2))
    if INTERPRET:
        x9, w9, b9 = make_case(1, 9, 8, 8, 16, 3)
        with pytest.raises(ValueError, match="at most 8 channels"):
            ops.conv_relu(x9, w9, b9, 1, backend="triton", stride=2)


def check_pooled(out, x, wt, b, stride, padding, pool, what="conv_rows_pool"):
    """out against max_pool2d of ATen's conv + ReLU in float64 (check_against)."""
    k, s, p, ceil = pool
    conv = F.conv2d(x.double(), wt.double(), b.double(), stride=stride, padding=padding).relu()
    ref = F.max_pool2d(conv, k, s, p, ceil_mode=ceil)
    check_against(out, ref, x, lambda: ops.conv_relu_maxpool(x, wt, b, stride, padding, k, s, p, ceil), what)


# (N, Cin, H, W, Cout, k, stride, padding, pool): torchvision's maxpool1 (3x3/2, ceil mode) after
# conv1 on odd maps whose last window overhangs, d2l's (3x3/2, padding 1), 2x2/2 in ceil mode, a
# stride-1 pool with padding, a 1x1/2 subsampling, 40 output channels (two column tiles under the
# interpreter's 32-wide tile), a map smaller than one tile, a 2x2/2 pool with padding 1 (exactly
# half its kernel, which PyTorch takes).
POOL_SHAPES = [
    (2, 3, 19, 23, 24, 7, 2, 3, (3, 2, 0, True)),
    (1, 3, 31, 29, 40, 7, 2, 3, (3, 2, 1, False)),
    (1, 3, 15, 17, 16, 7, 2, 3, (2, 2, 0, True)),
    (2, 4, 12, 10, 8, 3, 2, 1, (3, 1, 1, False)),
    (1, 5, 14, 13, 16, 3, 3, 1, (1, 2, 0, False)),
    (1, 3, 7, 6, 16, 7, 2, 3, (3, 2, 0, True)),
    (1, 3, 13, 11, 16, 7, 2, 3, (2, 2, 1, False)),
]


@interpreter_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("n,cin,h,w,cout,k,stride,padding,pool", POOL_SHAPES)
def test_conv_rows_pool_matches_aten(poisoned, dtype, n, cin, h, w, cout, k, stride, padding, pool):
    """The pooled form through op ``conv_relu_maxpool`` with the packed weight: ATen's conv + ReLU
    + max pool, the conv output never stored (its scratch slots start as NaN too)."""
    from inception_fast.packing import pack_conv_rows

    x, wt, b = make_case(n, cin, h, w, cout, k, dtype=dtype, seed=cin + k + stride + pool[0])
    w_rows = pack_conv_rows(wt, stride)
    out = ops.conv_relu_maxpool(x, wt, b, stride, padding, *pool, backend="triton", w_rows=w_rows)
    check_pooled(out, x, wt, b, stride, padding, pool)


@interpreter_only
def test_conv_rows_pool_every_config_two_launches_and_nan(poisoned, monkeypatch):
    """Every GPU config of the pooled form (pinned) once on conv1 + maxpool1, NCHW input; the op is
    the two launches (the padded copy, the pooled conv) and nothing else; an empty batch launches
    nothing; a NaN input pixel makes NaN exactly the pooled outputs ATen makes NaN."""
    from inception_fast.packing import pack_conv_rows

    pool = (3, 2, 0, True)
    for i, config in enumerate(conv_rows.POOL_CONFIGS):
        x, wt, b = make_case(2, 3, 29, 27, 24, 7, fmt=torch.contiguous_format, seed=20 + i)
        out = conv_rows.launch_conv_rows_pool(x, wt, b, 2, 3, *pool, config=config)
        check_pooled(out, x, wt, b, 2, 3, pool, str(config))
    w_rows = pack_conv_rows(wt, 2)

    def op(x):
        return ops.conv_relu_maxpool(x, wt, b, 2, 3, *pool, backend="triton", w_rows=w_rows)

    out, _ops, launched = observe_launches(lambda: op(x), monkeypatch)
    assert launched == [conv_rows._pad_kernel, conv_rows._conv_rows_pool_kernel]
    check_pooled(out, x, wt, b, 2, 3, pool, "through the op")
    empty, _ops, launched = observe_launches(lambda: op(x[:0]), monkeypatch)
    assert empty.shape == (0, 24, 7, 7) and launched == []
    x[1, 2, 13, 9] = float("nan")
    ref = F.max_pool2d(F.conv2d(x.double(), wt.double(), b.double(), stride=2, padding=3).relu(), 3, 2, ceil_mode=True)
    nan = ref.isnan()
    assert 0 < nan.sum() < (~nan).sum()
    out = op(x)
    assert torch.equal(out.isnan(), nan)
    check_close(torch.where(nan, 0.0, out), torch.where(nan, 0.0, ref), TOLERANCE["fp32"])


@interpreter_only
@pytest.mark.filterwarnings("ignore:invalid value encountered in matmul:RuntimeWarning")  # the interpreter's Inf * 0
def test_pooled_inf_beyond_a_window_stays_out_of_it():
    """The pooled form loads the same runs past each window as the plain conv: an Inf there must
    reach neither the conv pixels whose windows miss it nor the pooled outputs over them.  Pooled
    outputs are finite exactly where ATen's are, and equal there."""
    from inception_fast.packing import pack_conv_rows

    x, wt, b = make_case(1, 3, 25, 29, 16, 7, seed=12)
    x[0, :2, 12, 16] = float("inf")  # channel 0: the element right past a window; 1: further on
    out = ops.conv_relu_maxpool(x, wt, b, 2, 3, 3, 2, 0, True, backend="triton", w_rows=pack_conv_rows(wt, 2))
    conv = F.conv2d(x.double(), wt.double(), b.double(), stride=2, padding=3).relu()
    ref = F.max_pool2d(conv, 3, 2, ceil_mode=True)
    finite = ref.isfinite()
    assert 0 < (~finite).sum() < finite.sum()
    assert torch.equal(out.isfinite(), finite)
    check_close(torch.where(finite, out, 0.0), torch.where(finite, ref, 0.0), TOLERANCE["fp32"])


def test_conv_rows_pool_refuses_what_it_does_not_take():
    """The pooled form names what it does not take: a pool past geometry.ROWS_POOL_MAX, a w_rows
    that is not the packing, a conv output too small for the pool; the torch backend ignores
    w_rows; the op with w_rows passes opcheck."""
    from inception_fast import geometry
    from inception_fast.packing import pack_conv_rows

    x, wt, b = make_case(1, 3, 21, 20, 16, 7, seed=11)
    w_rows = pack_conv_rows(wt, 2)
    plain = ops.conv_relu_maxpool(x, wt, b, 2, 3, 3, 2, 0, True)
    assert torch.equal(ops.conv_relu_maxpool(x, wt, b, 2, 3, 3, 2, 0, True, w_rows=w_rows), plain)
    torch.library.opcheck(
        torch.ops.inception_fast.conv_relu_maxpool.default, (x, wt, b, 2, 3, 3, 2, 0, True, "torch", w_rows)
    )
    assert geometry.rows_pool_fits(3, 2) and not geometry.rows_pool_fits(4, 2) and not geometry.rows_pool_fits(3, 3)
    if INTERPRET:
        with pytest.raises(ValueError, match=r"pooled form takes a max pool of at most 3x3 with a stride of at most 2"):
            ops.conv_relu_maxpool(x, wt, b, 2, 3, 4, 2, 0, False, backend="triton", w_rows=w_rows)
        with pytest.raises(ValueError, match="w_rows must be the weight packed"):
            ops.conv_relu_maxpool(x, wt, b, 2, 3, 3, 2, 0, True, backend="triton", w_rows=w_rows[:, :16])
        with pytest.raises(ValueError, match="too small"):
            ops.conv_relu_maxpool(x[..., :3, :3], wt, b, 2, 0, 3, 2, 0, False, backend="triton", w_rows=w_rows)
        with pytest.raises(ValueError, match="padding must be at most half its kernel"):
            conv_rows.launch_conv_rows_pool(x, wt, b, 2, 3, 3, 2, 2, False)


def test_supported_takes_what_the_kernel_takes():
    """supported(): a square kernel over the input's own channels, at most 8 of them, a stride of 1
    or more, a padding of 0 or more, and a padded kernel row (KS * CP rounded up to a power of two)
    of at most MAX_KROW = 64 elements: 8x8 at 8 padded channels and 16x16 at 4 are the largest."""

    def case(cin, k, k2=None, xc=None):
        return torch.empty(1, cin if xc is None else xc, 20, 20), torch.empty(4, cin, k, k if k2 is None else k2)

    assert conv_rows.supported(*case(3, 7), 2, 3) and conv_rows.supported(*case(3, 7), 2, 0)
    assert not conv_rows.supported(*case(3, 7, 5), 2, 3), "a 7x5 kernel"
    assert not conv_rows.supported(*case(3, 7, xc=4), 2, 3), "a weight over 3 channels for a 4-channel input"
    assert not conv_rows.supported(*case(3, 7), 2, -1), "a negative padding"
    assert not conv_rows.supported(*case(3, 7), 0, 3), "stride 0"
    assert not conv_rows.supported(*case(9, 3), 2, 1), "9 channels"
    assert conv_rows.supported(*case(8, 8), 2, 0) and not conv_rows.supported(*case(8, 9), 2, 0)
    assert conv_rows.supported(*case(4, 16), 2, 0) and not conv_rows.supported(*case(4, 17), 2, 0)
    assert conv_rows.supported(*case(4, 8), 3, 0) and not conv_rows.supported(*case(4, 9), 3, 0)


@interpreter_only
def test_launchers_refuse_what_the_op_checks_first():
    """Called directly (the op checks these before it gets there), the launchers refuse a dtype
    the triton backend does not take and a conv or pooled map with no pixels, rather than return an
    empty tensor."""
    from inception_fast.packing import pack_conv_rows

    x, wt, b = make_case(1, 3, 11, 10, 16, 7, seed=14)
    with pytest.raises(TypeError, match="the triton backend"):
        conv_rows.launch_conv_rows(x.double(), wt.double(), b.double(), 2, 3)
    with pytest.raises(TypeError, match="the triton backend"):
        conv_rows.launch_conv_rows_pool(x.double(), wt.double(), b.double(), 2, 3, 3, 2, 0, True)
    # A 5x5 input at padding 0: a 0x0 conv map.
    with pytest.raises(ValueError, match="too small for a 7x7/2 conv"):
        conv_rows.launch_conv_rows(x[..., :5, :5], wt, b, 2, 0)
    with pytest.raises(ValueError, match="too small for a 7x7/2 conv"):
        conv_rows.launch_conv_rows_pool(x[..., :5, :5], wt, b, 2, 0, 3, 2, 0, True)
    # A 9x9 input at padding 0 gives a 2x2 conv map: a 3x3/2 pool without ceil mode has no output.
    with pytest.raises(ValueError, match="too small for a 3x3/2 max pool"):
        conv_rows.launch_conv_rows_pool(x[..., :9, :9], wt, b, 2, 0, 3, 2, 0, False, w_rows=pack_conv_rows(wt, 2))


@interpreter_only
def test_strided_bias_and_packed_weight(poisoned):
    """A bias and a w_rows that are views with NaN in their gaps (every other element of a buffer)
    give what their contiguous copies give, in both forms: the kernels read the bias by its stride,
    and the launcher makes w_rows contiguous before the kernel reads it as (KS, KROW, COUT) rows."""
    from unwritten_reads import nan_gapped

    from inception_fast.packing import pack_conv_rows

    x, wt, b = make_case(1, 3, 13, 12, 16, 7, seed=15)
    packed = pack_conv_rows(wt, 2)
    gapped_b = nan_gapped(b)
    buffer = torch.full((*packed.shape, 2), float("nan"))
    buffer[..., 0] = packed
    gapped_w = buffer[..., 0]
    assert not gapped_w.is_contiguous() and torch.equal(gapped_w, packed)
    out = ops.conv_relu(x, wt, gapped_b, 3, backend="triton", stride=2, w_rows=gapped_w)
    check_conv(out, x, wt, b, 2, 3, "strided bias and w_rows")
    pool = (3, 2, 0, True)
    out = ops.conv_relu_maxpool(x, wt, gapped_b, 2, 3, *pool, backend="triton", w_rows=gapped_w)
    check_pooled(out, x, wt, b, 2, 3, pool, "pooled, strided bias and w_rows")


@interpreter_only
def test_buffers_between_guard_bands(monkeypatch):
    """The launcher's buffers (the padded input, the output, the pooled form's scratch) each between
    two poisoned guard bands (tests/unwritten_reads.py): no kernel stores outside its buffer (the
    padded copy past its last row, the pool past the last pooled row or column), and none loads
    from a band (the conv's run past the last window of the last row must lie inside the padded
    input: a load of band poison fails the unwritten-read check).  Padding 0, so that the padded
    copy's rows hold image pixels from their first element; maps whose last pooled row and column
    are partial tiles."""
    from unwritten_reads import assert_bands_untouched, guarded

    bands = []

    def new_buffer(shape, x, memory_format=torch.contiguous_format):
        if memory_format == torch.channels_last:
            n, c, h, w = shape
            return guarded(n * h * w * c, x.dtype, x.device, bands).view(n, h, w, c).permute(0, 3, 1, 2)
        return guarded(torch.Size(shape).numel(), x.dtype, x.device, bands).view(shape)

    monkeypatch.setattr(conv_rows, "_new_buffer", new_buffer)
    x, wt, b = make_case(2, 3, 15, 17, 16, 7, seed=16)  # pooled 4x4 (ceil mode): partial 3x3 tiles
    check_conv(ops.conv_relu(x, wt, b, 0, backend="triton", stride=2), x, wt, b, 2, 0, "guarded, padding 0")
    check_conv(ops.conv_relu(x, wt, b, 3, backend="triton", stride=2), x, wt, b, 2, 3, "guarded, padding 3")
    # A 5x5 kernel at 4 padded channels loads 8 columns from a window's start: the last window of the
    # last row (11x7 at padding 2: it ends at the padded input's last row and column) loads 3 columns
    # past it, which the padded input must hold.
    x5, w5, b5 = make_case(1, 4, 11, 7, 16, 5, seed=17)
    check_conv(ops.conv_relu(x5, w5, b5, 2, backend="triton", stride=2), x5, w5, b5, 2, 2, "guarded, 5x5")
    assert len(bands) == 6
    pool = (3, 2, 0, True)
    out = conv_rows.launch_conv_rows_pool(x, wt, b, 2, 3, *pool)
    check_pooled(out, x, wt, b, 2, 3, pool, "guarded, pooled")
    assert len(bands) == 9
    # A pinned config's scratch is sized for that config's slots (64 x 64 here, 4 programs), not
    # the interpreter's tile (64 x 32, 3 programs).
    config = conv_rows.POOL_CONFIGS[2]
    assert (config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"]) == (64, 64)
    out = conv_rows.launch_conv_rows_pool(x[:1], wt, b, 2, 3, *pool, config=config)
    check_pooled(out, x[:1], wt, b, 2, 3, pool, "guarded, pooled, pinned config")
    assert len(bands) == 12
    assert_bands_untouched(bands)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_gpu_conv1_every_config(gpu, poisoned, dtype):
    """conv1 at 224x224 (batch 2) on the GPU, every config pinned, NCHW and channels_last inputs,
    then through the op's autotuner."""
    for i, config in enumerate(conv_rows.CONFIGS):
        fmt = CL if i % 2 == 0 else torch.contiguous_format
        x, wt, b = make_case(2, 3, 224, 224, 64, 7, dtype=dtype, device=gpu, fmt=fmt, seed=i)
        check_conv(conv_rows.launch_conv_rows(x, wt, b, 2, 3, config), x, wt, b, 2, 3, str(config))
    check_conv(ops.conv_relu(x, wt, b, 3, backend="triton", stride=2), x, wt, b, 2, 3, "autotuned")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_gpu_other_geometries(gpu, poisoned, dtype):
    """On the GPU: 8 padded channels (stride 3; 5 input channels at stride 2), odd maps, a 3x3
    kernel, and fp32 (TF32, PyTorch's default for convs), through the op's autotuner."""
    for n, cin, h, w, cout, k, stride, padding in [(3, 3, 37, 41, 40, 7, 3, 2), (2, 5, 29, 30, 24, 3, 2, 1)]:
        x, wt, b = make_case(n, cin, h, w, cout, k, dtype=dtype, device=gpu, seed=cin)
        out = ops.conv_relu(x, wt, b, padding, backend="triton", stride=stride)
        check_conv(out, x, wt, b, stride, padding, f"{cin} channels, stride {stride}")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_gpu_conv1_maxpool1_every_pool_config(gpu, poisoned, dtype):
    """conv1 + maxpool1 at 224x224 on the GPU in the pooled form, every config pinned, NCHW and
    channels_last inputs, at batch 8 (448 tiles of 7x8 for 132 SMs: every program runs several
    tiles through its scratch slot); then through the op's autotuner: d2l's padded pool, 96
    output channels (two column tiles), 5 input channels at stride 3, and a NaN pixel."""
    from inception_fast.packing import pack_conv_rows

    pool = (3, 2, 0, True)
    for i, config in enumerate(conv_rows.POOL_CONFIGS):
        fmt = CL if i % 2 == 0 else torch.contiguous_format
        x, wt, b = make_case(8, 3, 224, 224, 64, 7, dtype=dtype, device=gpu, fmt=fmt, seed=30 + i)
        out = conv_rows.launch_conv_rows_pool(x, wt, b, 2, 3, *pool, config=config)
        check_pooled(out, x, wt, b, 2, 3, pool, str(config))
    for n, cin, h, w, cout, k, stride, padding, pool in [
        (2, 3, 224, 224, 64, 7, 2, 3, (3, 2, 1, False)),
        (3, 3, 61, 67, 96, 7, 2, 3, (3, 2, 0, True)),
        (2, 5, 47, 45, 40, 5, 3, 2, (2, 2, 0, True)),
    ]:
        x, wt, b = make_case(n, cin, h, w, cout, k, dtype=dtype, device=gpu, seed=cin + cout)
        w_rows = pack_conv_rows(wt, stride)
        out = ops.conv_relu_maxpool(x, wt, b, stride, padding, *pool, backend="triton", w_rows=w_rows)
        check_pooled(out, x, wt, b, stride, padding, pool, f"autotuned, {cin}->{cout} stride {stride}, pool {pool}")
    x[1, 2, 20, 17] = float("nan")
    ref = F.max_pool2d(F.conv2d(x.double(), wt.double(), b.double(), stride=3, padding=2).relu(), 2, 2, ceil_mode=True)
    out = ops.conv_relu_maxpool(x, wt, b, 3, 2, 2, 2, 0, True, backend="triton", w_rows=w_rows)
    assert 0 < ref.isnan().sum() and torch.equal(out.isnan(), ref.isnan())
