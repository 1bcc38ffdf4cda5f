"""The compiled extension inception_fast._C (csrc/) and the backends built on it: "cpp" (its C++
CPU kernels) and "cuda" (its CUDA kernels).

Every check compares with F.conv2d / F.max_pool2d in float64 from the very same random
packed weights (layout in inception_fast.backends), on NaN-poisoned outputs, so an element
no kernel writes fails the comparison, and a slice an op must not touch stays NaN.

* CPU kernels (csrc/cpu/): all GoogLeNet block configs at small spatial sizes, odd channel
  counts and sizes, batch 1 and 3, k = 3 and 5; fp32 at TOLERANCE["fp32"], fp16/bf16 with the
  2x rule; torch.library.opcheck; argument errors.
* The CUDA kernel's source (csrc/cuda/conv_gemm.cu) on the CPU, through the emulator in
  tests/cuda_emulator/ (built on first use with torch.utils.cpp_extension, ~30 s): every
  arithmetic mode (bf16, fp16, TF32, exact fp32), the aligned cp.async path and the
  element-wise fallback at batch 2 (M tiles straddling images), several M / N tiles and K tails,
  cp.async landing late and early; NaN and +-inf in x (the pool and the ReLU pass NaN as torch
  does); operands off a 16-byte boundary (the emulator refuses a misaligned cp.async or ldmatrix);
  every operand between poisoned guard bands (stores past out / scratch, loads past x / w); other
  layouts of x and the weights; a column pair straddling branch 1 and scratch; M and nout one past
  a tile.  Under INCEPTION_FAST_BUILD_EXT=1 (CI) an extension or
  emulator that does not build fails these tests; otherwise they skip with the reason.
* The built extension's sm_90 code (cuobjdump's resource usage, no GPU needed): registers and
  no spills.
* GPU (skipped without CUDA, checked at test time): real 3a / 4e / 5b shapes at batch 1 and
  2-8, fp16/bf16 with the 2x rule, fp32 with TF32 (TOLERANCE["tf32"]) and without
  (TOLERANCE["fp32"]), the element-wise fallback, opcheck and CUDA graph capture.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from block_cases import ODD, block_reference, make_block  # noqa: F401
from uninterpreted import run_python

from inception_fast.backends import (
    availability,
    available_backends,
    cpp_backend,
    cuda_backend,
    extension,
    onednn_backend,
    torch_backend,
)
from inception_fast.reference import BLOCK_CONFIGS
from inception_fast.testing import TOLERANCE, check_close, reduced_precision_bound


def build_required() -> bool:
    """INCEPTION_FAST_BUILD_EXT=1 (CI): the compiled code must build, as setup.py demands."""
    return os.environ.get("INCEPTION_FAST_BUILD_EXT", "").strip() == "1"


def unbuilt(why: str):
    """Compiled code that is not there: a skip with the reason, or a failure where the build is
    required (a kernel that does not compile must not turn into skips)."""
    if build_required():
        pytest.fail(f"INCEPTION_FAST_BUILD_EXT=1: {why}", pytrace=False)
    pytest.skip(why, allow_module_level=True)


# Without the extension the module skips, or, where the build is required, each of its tests
# fails (failing here, at import, would stop the whole session's collection: every other file's
# tests would not run).
_UNBUILT = (
    None
    if extension.load_extension() is not None
    else f"inception_fast._C is not built ({extension.extension_error()})"
)
if _UNBUILT is not None and not build_required():
    unbuilt(_UNBUILT)


@pytest.fixture(autouse=True)
def _extension_built():
    if _UNBUILT is not None:
        unbuilt(_UNBUILT)


OPS = torch.ops.inception_fast
NAN = float("nan")
CL = torch.channels_last
REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def dims(b):
    r3, r5 = b["w3"].shape[1], b["w5"].shape[1]
    ch1 = b["w_red"].shape[0] - r3 - r5
    c3, c5, pool = b["w3"].shape[0], b["w5"].shape[0], b["w_pool"].shape[0]
    return ch1, r3, r5, c3, c5, pool


def reference(b, dtype=None):
    """(out, scratch) of the block from packed weights with plain PyTorch ops (dtype: compute in)."""
    return block_reference(**({k: v.to(dtype) for k, v in b.items()} if dtype is not None else b))


def reference_launch2(scratch, b, dtype=torch.float64):
    """Launch 2 alone, from the scratch the kernel under test was given."""
    ch1, r3, r5, c3, c5, pool = dims(b)
    s = scratch.to(dtype)
    w3, b3, w5, b5 = (b[k].to(dtype) for k in ("w3", "b3", "w5", "b5"))
    y3 = F.relu(F.conv2d(s[:, :r3], w3, b3, padding=1))
    y5 = F.relu(F.conv2d(s[:, r3:], w5, b5, padding=w5.shape[-1] // 2))
    return y3, y5


def poisoned_buffers(b):
    ch1, r3, r5, c3, c5, pool = dims(b)
    n, _, h, w = b["x"].shape
    kw = dict(dtype=b["x"].dtype, device=b["x"].device)
    out = torch.full((n, ch1 + c3 + c5 + pool, h, w), NAN, **kw).contiguous(memory_format=CL)
    scratch = torch.full((n, r3 + r5, h, w), NAN, **kw).contiguous(memory_format=CL)
    return out, scratch


def launch1_args(b, out, scratch):
    return (b["x"], b["w_red"], b["b_red"], b["w_pool"], b["b_pool"], out, scratch)


def launch2_args(b, scratch, out):
    return (scratch, b["w3"], b["b3"], b["w5"], b["b5"], out, dims(b)[0])


def assert_nonzero(ref):
    assert ref.double().std() > 0.1, "reference is near zero: the comparison could not fail"


def check_launch1(b, out, scratch, tolerance, what):
    """Launch 1 wrote branch 1, scratch and the pool slice, and left branches 2-3 untouched.

    tolerance(ref64_part, ref_part_in_b's_dtype) gives the bound for each part."""
    ch1, r3, r5, c3, c5, pool = dims(b)
    ref_out, ref_scratch = reference(b, torch.float64)
    low_out, low_scratch = reference(b)
    assert_nonzero(ref_out)
    tail = ch1 + c3 + c5
    check_close(out[:, :ch1], ref_out[:, :ch1], tolerance(ref_out[:, :ch1], low_out[:, :ch1]), f"{what} branch 1")
    check_close(scratch, ref_scratch, tolerance(ref_scratch, low_scratch), f"{what} scratch")
    check_close(out[:, tail:], ref_out[:, tail:], tolerance(ref_out[:, tail:], low_out[:, tail:]), f"{what} pool")
    assert torch.isnan(out[:, ch1:tail]).all(), f"{what}: launch 1 wrote into branch 2/3's slices"


# ---------------------------------------------------------------------------------------------
# CPU kernels
# ---------------------------------------------------------------------------------------------


def _fp32(_ref64, _ref_low):
    return TOLERANCE["fp32"]


@pytest.mark.parametrize("name", list(BLOCK_CONFIGS))
def test_cpu_googlenet_blocks(name):
    i = list(BLOCK_CONFIGS).index(name)
    b = make_block(BLOCK_CONFIGS[name], k5=3 if i % 2 == 0 else 5, n=1 if i % 2 else 3, h=5, w=4 + i % 3, seed=i)
    ch1, r3, r5, c3, c5, pool = dims(b)
    out, scratch = poisoned_buffers(b)
    OPS.reduce_pool_(*launch1_args(b, out, scratch))
    check_launch1(b, out, scratch, _fp32, name)
    OPS.branch_convs_(*launch2_args(b, scratch, out))
    y3, y5 = reference_launch2(scratch, b)
    check_close(out[:, ch1 : ch1 + c3], y3, TOLERANCE["fp32"], f"{name} branch 2")
    check_close(out[:, ch1 + c3 : ch1 + c3 + c5], y5, TOLERANCE["fp32"], f"{name} branch 3")
    check_close(out, reference(b, torch.float64)[0], TOLERANCE["fp32"], f"{name} whole block")


@pytest.mark.parametrize("hw", [(5, 7), (1, 1)], ids=["5x7", "1x1"])
@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("k5", [3, 5])
def test_cpu_odd_shapes(n, k5, hw):
    """Both launches on odd channel counts, at 5x7 and at a single pixel per image (1x1: every window
    of the pool and the convs mostly padding; with N = 1, one pixel in all)."""
    h, w = hw
    what = f"odd n={n} k5={k5} {h}x{w}"
    b = make_block(ODD, k5=k5, n=n, h=h, w=w, seed=10 * h + n + k5)
    out, scratch = poisoned_buffers(b)
    OPS.reduce_pool_(*launch1_args(b, out, scratch))
    check_launch1(b, out, scratch, _fp32, what)
    OPS.branch_convs_(*launch2_args(b, scratch, out))
    check_close(out, reference(b, torch.float64)[0], TOLERANCE["fp32"], what)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cpu_low_precision(dtype):
    b = make_block(BLOCK_CONFIGS["inception4a"], k5=5, n=2, h=5, w=6, dtype=dtype)
    out, scratch = poisoned_buffers(b)
    OPS.reduce_pool_(*launch1_args(b, out, scratch))
    OPS.branch_convs_(*launch2_args(b, scratch, out))
    ref64, ref_scratch64 = reference(b, torch.float64)
    ref_low, ref_scratch_low = reference(b)
    assert out.dtype == dtype and scratch.dtype == dtype
    check_close(scratch, ref_scratch64, reduced_precision_bound(ref_scratch_low, ref_scratch64), "scratch")
    check_close(out, ref64, reduced_precision_bound(ref_low, ref64), "out")


def test_cpu_block_forward_through_registry():
    b = make_block(BLOCK_CONFIGS["inception3a"], k5=3, n=2, h=6, w=5)
    assert cpp_backend._unavailable_reason(torch.device("cpu")) is None
    out, scratch = torch.ops.inception_fast.inception_block(*b.values(), "cpp")
    assert out.is_contiguous(memory_format=CL) and scratch.is_contiguous(memory_format=CL)
    ref_out, ref_scratch = reference(b, torch.float64)
    check_close(scratch, ref_scratch, TOLERANCE["fp32"], "scratch")
    check_close(out, ref_out, TOLERANCE["fp32"], "out")


def test_cpu_block_forward_poisoned(poisoned):
    b = make_block(ODD, k5=5, n=3, h=4, w=6, seed=3)
    out, scratch = extension.block_forward(**b)
    ref_out, ref_scratch = reference(b, torch.float64)
    check_close(scratch, ref_scratch, TOLERANCE["fp32"], "scratch")
    check_close(out, ref_out, TOLERANCE["fp32"], "out")


def test_cpu_accepts_other_layouts():
    """NCHW x and OIHW-contiguous w3/w5 give the same result (copied internally)."""
    b = make_block(ODD, k5=5, n=2, h=5, w=5, seed=7)
    b2 = dict(b, x=b["x"].contiguous(), w3=b["w3"].contiguous(), w5=b["w5"].contiguous())
    out, scratch = poisoned_buffers(b)
    OPS.reduce_pool_(*launch1_args(b2, out, scratch))
    OPS.branch_convs_(*launch2_args(b2, scratch, out))
    check_close(out, reference(b, torch.float64)[0], TOLERANCE["fp32"], "out")


def _opcheck_both_launches(device="cpu"):
    """torch.library.opcheck of both launch ops (schema, fake kernel, autograd registration)."""
    b = make_block(ODD, k5=5, n=2, h=4, w=5, device=device, seed=1)
    out, scratch = poisoned_buffers(b)
    torch.library.opcheck(OPS.reduce_pool_.default, launch1_args(b, out, scratch))
    # opcheck runs on copies: the scratch launch 2 reads must hold launch 1's values, not NaN, or
    # its writes into out (NaN over NaN) would change nothing a schema check could see.
    OPS.reduce_pool_(*launch1_args(b, out, scratch))
    assert not scratch.isnan().any()
    torch.library.opcheck(OPS.branch_convs_.default, launch2_args(b, scratch, out))


def test_cpu_opcheck():
    _opcheck_both_launches()


def test_cpu_argument_errors():
    b = make_block(ODD, n=1, h=4, w=4)
    out, scratch = poisoned_buffers(b)
    ch1, r3, r5, c3, c5, pool = dims(b)
    too_wide = torch.empty(1, ch1 + r3 + r5 + 1, 4, 4).contiguous(memory_format=CL)
    with pytest.raises(RuntimeError, match="scratch has"):
        OPS.reduce_pool_(*launch1_args(b, out, too_wide))
    with pytest.raises(RuntimeError, match="channels_last"):
        OPS.reduce_pool_(*launch1_args(b, out.contiguous(), scratch))
    with pytest.raises(RuntimeError, match="dtype"):
        OPS.reduce_pool_(b["x"], b["w_red"].double(), *launch1_args(b, out, scratch)[2:])
    with pytest.raises(RuntimeError, match="w_red"):
        OPS.reduce_pool_(b["x"], b["w_red"][:, :-1], *launch1_args(b, out, scratch)[2:])
    with pytest.raises(RuntimeError, match="do not fit"):
        OPS.branch_convs_(*launch2_args(b, scratch, out)[:-1], out.shape[1])
    with pytest.raises(RuntimeError, match="scratch"):
        OPS.branch_convs_(scratch[:, 1:], *launch2_args(b, scratch, out)[1:])


RP_OP, BC_OP = "inception_fast::reduce_pool_", "inception_fast::branch_convs_"


def _launch1(b, out, scratch, **new):
    """Launch 1's arguments, those named in ``new`` replaced."""
    args = dict(x=b["x"], w_red=b["w_red"], b_red=b["b_red"], w_pool=b["w_pool"], b_pool=b["b_pool"])
    return tuple({**args, "out": out, "scratch": scratch, **new}.values())


def _launch2(b, scratch, out, ch1=None, **new):
    """Launch 2's arguments, those named in ``new`` (and ch1) replaced."""
    args = dict(scratch=scratch, w3=b["w3"], b3=b["b3"], w5=b["w5"], b5=b["b5"], out=out)
    return (*{**args, **new}.values(), dims(b)[0] if ch1 is None else ch1)


def _nan(*shape, dtype=torch.float32):
    return torch.full(shape, NAN, dtype=dtype).contiguous(memory_format=CL)


def _float64(b):
    return {k: v.double() for k, v in b.items()}


# (id, op, args(b, out, scratch) for ODD at n=1, 4x4, k5=5, the message's end after "<op>: ").
# ODD: Cin 13, ch1 5, ch3red 7, ch3 9, ch5red 3, ch5 6, pool 4: out 24 channels, scratch 10.
ARGUMENT_ERRORS = [
    ("rp-float64", "reduce_pool_", lambda b, o, s: _launch1(_float64(b), o.double(), s.double()),
     "x must be float32, float16 or bfloat16, got Double"),
    ("rp-out-dtype", "reduce_pool_", lambda b, o, s: _launch1(b, o.double(), s),
     "out has dtype Double but x has dtype Float; all arguments must share one dtype"),
    ("rp-scratch-dtype", "reduce_pool_", lambda b, o, s: _launch1(b, o, s.double()),
     "scratch has dtype Double but x has dtype Float"),
    ("rp-w_red-device", "reduce_pool_", lambda b, o, s: _launch1(b, o, s, w_red=b["w_red"].to("meta")),
     "w_red is on meta but x is on cpu; all arguments must be on one device"),
    ("rp-out-device", "reduce_pool_", lambda b, o, s: _launch1(b, o.to("meta"), s),
     "out is on meta but x is on cpu"),
    ("rp-x-3d", "reduce_pool_", lambda b, o, s: _launch1(b, o, s, x=b["x"][0]),
     "x must be 4-D (N, Cin, H, W), got shape [13, 4, 4]"),
    ("rp-out-3d", "reduce_pool_", lambda b, o, s: _launch1(b, o[0], s),
     "out must be 4-D (N, C, H, W), got shape [24, 4, 4]"),
    ("rp-scratch-nchw", "reduce_pool_", lambda b, o, s: _launch1(b, o, s.contiguous()),
     "scratch must be channels_last-contiguous (the kernel writes NHWC rows), got shape [1, 10, 4, 4] "
     "strides [160, 16, 4, 1]"),
    ("rp-out-channel-slice", "reduce_pool_", lambda b, o, s: _launch1(b, _nan(1, 25, 4, 4)[:, :24], s),
     "out must be channels_last-contiguous (the kernel writes NHWC rows), got shape [1, 24, 4, 4] "
     "strides [400, 1, 100, 25]"),
    ("rp-w_pool-cin", "reduce_pool_", lambda b, o, s: _launch1(b, o, s, w_pool=b["w_pool"][:, :-1]),
     "w_pool must be (pool_proj, Cin=13), got shape [4, 12]"),
    ("rp-b_red-longer", "reduce_pool_", lambda b, o, s: _launch1(b, o, s, b_red=b["b_red"].repeat(2)[:16]),
     "b_red must have shape (15), got [16]"),
    ("rp-b_pool-short", "reduce_pool_", lambda b, o, s: _launch1(b, o, s, b_pool=b["b_pool"][:1]),
     "b_pool must have shape (4), got [1]"),
    ("rp-out-height", "reduce_pool_", lambda b, o, s: _launch1(b, _nan(1, 24, 5, 4), s),
     "out must be (1, C_total, 4, 4) like x, got shape [1, 24, 5, 4]"),
    ("rp-scratch-batch", "reduce_pool_", lambda b, o, s: _launch1(b, o, _nan(2, 10, 4, 4)),
     "scratch must be (1, ch3red + ch5red, 4, 4) like x, got shape [2, 10, 4, 4]"),
    ("rp-out-too-few", "reduce_pool_", lambda b, o, s: _launch1(b, _nan(1, 8, 4, 4), s),
     "out has 8 channels, too few for branch 1 (5) plus the pool branch (4)"),
    ("bc-float64", "branch_convs_", lambda b, o, s: _launch2(_float64(b), s.double(), o.double()),
     "scratch must be float32, float16 or bfloat16, got Double"),
    ("bc-out-dtype", "branch_convs_", lambda b, o, s: _launch2(b, s, o.double()),
     "out has dtype Double but scratch has dtype Float"),
    ("bc-b5-dtype", "branch_convs_", lambda b, o, s: _launch2(b, s, o, b5=b["b5"].double()),
     "b5 has dtype Double but scratch has dtype Float"),
    ("bc-w3-device", "branch_convs_", lambda b, o, s: _launch2(b, s, o, w3=b["w3"].to("meta")),
     "w3 is on meta but scratch is on cpu; all arguments must be on one device"),
    ("bc-out-nchw", "branch_convs_", lambda b, o, s: _launch2(b, s, o.contiguous()),
     "out must be channels_last-contiguous (the kernel writes NHWC rows), got shape [1, 24, 4, 4] "
     "strides [384, 16, 4, 1]"),
    ("bc-out-channel-slice", "branch_convs_", lambda b, o, s: _launch2(b, s, _nan(1, 25, 4, 4)[:, :24]),
     "out must be channels_last-contiguous"),
    ("bc-w3-even", "branch_convs_", lambda b, o, s: _launch2(b, s, o, w3=b["w3"][:, :, :2, :2]),
     "w3 must be (ch3, ch3red, k, k) with odd k, got shape [9, 7, 2, 2]"),
    ("bc-w5-not-square", "branch_convs_", lambda b, o, s: _launch2(b, s, o, w5=b["w5"][:, :, :, 1:4]),
     "w5 must be (ch5, ch5red, k, k) with odd k (3 or 5), got shape [6, 3, 5, 3]"),
    ("bc-scratch-wider", "branch_convs_", lambda b, o, s: _launch2(b, _nan(1, 11, 4, 4), o),
     "scratch has 11 channels but w3 reads 7 and w5 reads 3; scratch must hold exactly both reductions"),
    ("bc-b3-short", "branch_convs_", lambda b, o, s: _launch2(b, s, o, b3=b["b3"][:1]),
     "b3 must have shape (9), got [1]"),
    ("bc-b5-short", "branch_convs_", lambda b, o, s: _launch2(b, s, o, b5=b["b5"][:1]),
     "b5 must have shape (6), got [1]"),
    ("bc-out-batch", "branch_convs_", lambda b, o, s: _launch2(b, s, _nan(2, 24, 4, 4)),
     "out must be (1, C_total, 4, 4) like scratch, got shape [2, 24, 4, 4]"),
    ("bc-ch1-negative", "branch_convs_", lambda b, o, s: _launch2(b, s, o, ch1=-1),
     "slices [-1, 14) for the two convs do not fit in out's 24 channels"),
    ("bc-ch1-one-past", "branch_convs_", lambda b, o, s: _launch2(b, s, o, ch1=10),
     "slices [10, 25) for the two convs do not fit in out's 24 channels"),
]  # fmt: skip


@pytest.mark.parametrize("op,args,message", [c[1:] for c in ARGUMENT_ERRORS], ids=[c[0] for c in ARGUMENT_ERRORS])
def test_cpu_argument_errors_name_op_argument_and_shape(op, args, message):
    """Every layout, shape, dtype and device mismatch is refused by csrc/checks.h (shared with the
    CUDA ops, where a mismatch that got through would be an out-of-bounds write), with the op, the
    argument and the offending shape named: not an ATen error from inside the CPU kernel, and not a
    silent success.  A meta-device argument reaches the CPU kernel by redispatching to it (a plain
    call would dispatch to the meta kernel)."""
    b = make_block(ODD, k5=5, n=1, h=4, w=4)
    out, scratch = poisoned_buffers(b)
    call = getattr(OPS, op).default
    called = args(b, out, scratch)
    with pytest.raises(RuntimeError, match="^" + re.escape(f"inception_fast::{op}: {message}")):
        if any(isinstance(a, torch.Tensor) and a.is_meta for a in called):
            call.redispatch(torch._C.DispatchKeySet(torch._C.DispatchKey.CPU), *called)
        else:
            call(*called)


def test_cpu_pixel_limit():
    """N*H*W must stay 256 below 2^31 (the kernels' 32-bit pixel indices and a tile of headroom),
    checked at the bound on zero-channel tensors, which hold no memory: 2^31 - 256 pixels are
    refused by both ops, one fewer is accepted (launch 2 has nothing to compute)."""
    h = 2**23 - 1  # 256 * h = 2^31 - 256
    none2, none1, none4 = torch.empty(0, 0), torch.empty(0), torch.empty(0, 0, 1, 1)
    x, out, scratch = (torch.empty(1, 0, h, 256, memory_format=CL) for _ in range(3))
    too_many = re.escape(f"N*H*W = {256 * h} pixels is too many for one launch (limit 2^31)")
    with pytest.raises(RuntimeError, match=f"^{RP_OP}: {too_many}"):
        OPS.reduce_pool_(x, none2, none1, none2, none1, out, scratch)
    with pytest.raises(RuntimeError, match=f"^{BC_OP}: {too_many}"):
        OPS.branch_convs_(scratch, none4, none1, none4, none1, out, 0)
    scratch, out = (torch.empty(1, 0, 256 * h - 1, 1, memory_format=CL) for _ in range(2))
    OPS.branch_convs_(scratch, none4, none1, none4, none1, out, 0)


def test_cpu_shapes_at_the_checks_bounds():
    """Shapes the checks accept at their bounds run and write only their slices: a block without
    branch 1 (ch1 = 0); launch 1 into an out of exactly ch1 + pool_proj channels; launch 2 into
    the last ch3 + ch5 channels of out; and no pixels (N = 0, H = 0 or W = 0 with N > 0)."""
    no_branch1 = (13, 0, 7, 9, 3, 6, 4)
    b = make_block(no_branch1, k5=5, n=2, h=5, w=4, seed=5)
    out, scratch = poisoned_buffers(b)
    OPS.reduce_pool_(*launch1_args(b, out, scratch))
    ref_out, ref_scratch = reference(b, torch.float64)
    check_close(scratch, ref_scratch, TOLERANCE["fp32"], "ch1 = 0: scratch")
    check_close(out[:, -4:], ref_out[:, -4:], TOLERANCE["fp32"], "ch1 = 0: pool")
    assert torch.isnan(out[:, :-4]).all(), "ch1 = 0: launch 1 wrote into branch 2/3's slices"
    OPS.branch_convs_(*launch2_args(b, scratch, out))
    check_close(out, ref_out, TOLERANCE["fp32"], "ch1 = 0: out")

    b = make_block(ODD, k5=5, n=2, h=5, w=4, seed=6)
    ch1, r3, r5, c3, c5, pool = dims(b)
    ref_out, ref_scratch = reference(b, torch.float64)
    narrow, scratch = _nan(2, ch1 + pool, 5, 4), _nan(2, r3 + r5, 5, 4)
    OPS.reduce_pool_(*launch1_args(b, narrow, scratch))
    check_close(narrow[:, :ch1], ref_out[:, :ch1], TOLERANCE["fp32"], "out of ch1 + pool channels: branch 1")
    check_close(narrow[:, ch1:], ref_out[:, -pool:], TOLERANCE["fp32"], "out of ch1 + pool channels: pool")
    check_close(scratch, ref_scratch, TOLERANCE["fp32"], "out of ch1 + pool channels: scratch")

    out = _nan(2, ch1 + c3 + c5 + pool, 5, 4)
    last = ch1 + pool  # branches 2 and 3 in the last c3 + c5 channels
    OPS.branch_convs_(*launch2_args(b, scratch, out)[:-1], last)
    y3, y5 = reference_launch2(scratch, b)
    check_close(out[:, last : last + c3], y3, TOLERANCE["fp32"], "ch1 at the end: branch 2")
    check_close(out[:, last + c3 :], y5, TOLERANCE["fp32"], "ch1 at the end: branch 3")
    assert torch.isnan(out[:, :last]).all(), "launch 2 wrote before its ch1"

    for n, h, w in [(0, 5, 4), (2, 0, 4), (2, 5, 0)]:
        b = make_block(ODD, k5=5, n=n, h=h, w=w)
        out, scratch = poisoned_buffers(b)
        OPS.reduce_pool_(*launch1_args(b, out, scratch))
        OPS.branch_convs_(*launch2_args(b, scratch, out))


# (kernel, stride, padding, ceil_mode): torchvision's maxpool1-3 and maxpool4, the blocks' 3x3/1
# pool, d2l's padded pool, a window that misses the far edge, a 1x1 window, and the widest (8x8).
CPU_POOLS = [
    (3, 2, 0, True),
    (2, 2, 0, True),
    (3, 1, 1, False),
    (3, 2, 1, False),
    (3, 3, 1, True),
    (1, 1, 0, False),
    (8, 3, 4, True),
]


def pool_input(n, c, h, w, dtype, seed=0, specials=True):
    """Random values with NaN, +-Inf and both zeros planted where windows overlap and at edges."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g)
    if specials:
        flat = x.view(-1)
        picks = torch.randperm(flat.numel(), generator=g)
        for i, v in enumerate((NAN, float("inf"), float("-inf"), 0.0, -0.0, -0.0, 0.0, NAN)):
            flat[picks[i % flat.numel()]] = v
        x[:, :, 0, :2] = -0.0  # equal maxima of both signs: ATen's scan order decides the sign
        x[:, :, 1, :2] = 0.0
    return x.to(dtype).contiguous(memory_format=CL)


def assert_same_bits(got, want, what):
    """Equal bit for bit (the sign of zero too); NaN where ``want`` has NaN."""
    assert got.shape == want.shape and got.dtype == want.dtype, what
    assert got.is_contiguous(memory_format=CL), what
    nan = want.isnan()
    assert torch.equal(got.isnan(), nan), f"{what}: NaN elsewhere than ATen's"
    ints = {torch.float32: torch.int32, torch.bfloat16: torch.int16}[want.dtype]
    assert torch.equal(got.view(ints)[~nan], want.view(ints)[~nan]), f"{what}: differs from ATen"


@pytest.mark.parametrize("portable", [False, True], ids=["native", "portable"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("params", CPU_POOLS, ids=lambda p: "k{}s{}p{}{}".format(*p[:3], "c" * p[3]))
def test_cpu_max_pool_equals_aten(monkeypatch, params, dtype, portable):
    """The extension's CPU max pool equals ATen's bit for bit, NaN, Inf and signed zeros
    included, in both of its forms (AVX-512 and portable), at channel counts that leave every
    vector tail (1, 15, 16, 17, 64 + 1, 130)."""
    if portable:
        monkeypatch.setenv("INCEPTION_FAST_NO_AVX512", "1")
    k, stride, pad, ceil = params
    for i, (n, c, h, w) in enumerate(
        [(2, 1, 9, 11), (1, 15, 10, 7), (2, 16, 8, 8), (1, 17, 9, 9), (2, 65, 7, 12), (1, 130, 11, 10)]
    ):
        x = pool_input(n, c, h, w, dtype, seed=i)
        want = F.max_pool2d(x, k, stride, pad, ceil_mode=ceil)
        assert_same_bits(OPS.cpu_max_pool2d(x, k, stride, pad, ceil), want, f"{params} on {tuple(x.shape)}")


def test_cpu_max_pool_layouts_threads_and_registry(monkeypatch):
    """An NCHW or sliced input gives the same (channels_last) result; one thread and two agree; the
    "cpp" backend's max_pool2d is this kernel in float32/bfloat16 with windows up to 8x8, and ATen's
    pool in float16 and for wider windows."""
    x = pool_input(2, 40, 14, 14, torch.float32, seed=3)
    want = F.max_pool2d(x, 3, 2, 0, ceil_mode=True)
    assert_same_bits(OPS.cpu_max_pool2d(x.contiguous(), 3, 2, 0, True), want, "NCHW input")
    sliced = x[:, 5:29]
    assert_same_bits(OPS.cpu_max_pool2d(sliced, 3, 2, 0, True), want[:, 5:29].contiguous(memory_format=CL), "slice")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = OPS.cpu_max_pool2d(x, 3, 1, 1, False)
    finally:
        torch.set_num_threads(threads)
    assert_same_bits(one, OPS.cpu_max_pool2d(x, 3, 1, 1, False), "one thread against two")
    from inception_fast import ops

    assert_same_bits(ops.max_pool2d(x, 3, 2, 0, True, backend="cpp"), want, "ops.max_pool2d cpp")
    half = x.half()
    got, want = ops.max_pool2d(half, 3, 2, 0, True, backend="cpp"), F.max_pool2d(half, 3, 2, 0, ceil_mode=True)
    assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got.nan_to_num(0.0), want.nan_to_num(0.0))
    for kernel in (8, 9):  # the kernel's widest window, and one past it
        got, want = ops.max_pool2d(x, kernel, 1, 0, False, backend="cpp"), F.max_pool2d(x, kernel, 1, 0)
        assert_same_bits(got, want.contiguous(memory_format=CL), f"ops.max_pool2d cpp {kernel}x{kernel}")
    aten, aten_pool = [], torch_backend.max_pool2d  # which calls reach ATen's pool: float16, windows past 8x8
    monkeypatch.setattr(
        torch_backend, "max_pool2d", lambda x, *args: aten.append((x.dtype, args[0])) or aten_pool(x, *args)
    )
    for t, kernel in ((x, 3), (x.bfloat16(), 3), (x.bfloat16(), 8), (half, 3), (x, 9)):
        want = F.max_pool2d(t, kernel, 1, 0)
        got = extension.max_pool2d(t, kernel, 1, 0, False)
        assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got.nan_to_num(0.0), want.nan_to_num(0.0))
    assert aten == [(torch.float16, 3), (torch.float32, 9)]
    empty = torch.empty(0, 8, 5, 5).contiguous(memory_format=CL)
    assert OPS.cpu_max_pool2d(empty, 3, 2, 0, True).shape == (0, 8, 2, 2)
    plain = pool_input(2, 40, 14, 14, torch.float32, seed=3, specials=False)  # opcheck's compare: no NaN
    torch.library.opcheck(OPS.cpu_max_pool2d.default, (plain, 3, 2, 0, True))
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:  # what a trace takes: the real output's strides (channels_last)
        fake = OPS.cpu_max_pool2d(mode.from_tensor(plain), 3, 2, 0, True)
    real = OPS.cpu_max_pool2d(plain, 3, 2, 0, True)
    assert (fake.shape, fake.dtype, fake.stride()) == (real.shape, real.dtype, real.stride())


def test_cpu_max_pool_argument_errors():
    x = torch.randn(1, 4, 6, 6)
    for args, match in [
        ((x.half(), 3, 2, 0, True), "float32 or bfloat16"),
        ((x[0], 3, 2, 0, True), "4-D"),
        ((x, 9, 1, 0, False), "kernel must be 1 to 8"),
        ((x, 3, 0, 1, False), "stride"),
        ((x, 3, 1, 2, False), "padding"),
        ((x, 3, 1, -1, False), "padding must be 0 to kernel / 2, got -1"),
        ((x[:, :, :, :1], 3, 2, 0, False), re.escape("input [1, 4, 6, 1] is too small for a 3x3/2")),  # width alone
        ((x[:, :, :1], 3, 2, 0, False), re.escape("input [1, 4, 1, 6] is too small for a 3x3/2")),  # height alone
        ((x[:, :, :1, :1], 3, 2, 0, False), "too small"),
        ((x[:, :, :1, :1], 3, 3, 0, False), "too small"),  # PyTorch's size rule rounds down below zero
        ((x, 2**32, 1, 2**31, False), "kernel must be 1 to 8"),  # no overflow into the tap array
    ]:
        with pytest.raises(RuntimeError, match=match):
            OPS.cpu_max_pool2d(*args)


def _pooled_net(backend, dtype=torch.float32):
    from model_cases import calibrated_net

    from inception_fast import FusedGoogLeNet

    ref, _ = calibrated_net(size=40, num_classes=10)
    return FusedGoogLeNet.from_torchvision(ref, backend=backend).eval().to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("backend", ["onednn", "cpp"])
def test_cpu_model_pools_through_the_extension(monkeypatch, backend, dtype):
    """With the extension's pool (or the separable form) measured fastest, FusedGoogLeNet's four
    pools between stages, and with onednn also its blocks' pool branches, run it, and the logits
    equal those with ATen's pools bit for bit (a max is exact); a torch-pinned model never asks.
    (onednn in bfloat16 on a CPU without oneDNN's bfloat16 convolutions: refused by name.)"""
    from launch_observer import forcing_chooser

    from inception_fast import choices

    if backend == "onednn" and "onednn" not in available_backends("cpu"):
        pytest.skip(f"onednn: {availability('onednn', 'cpu')}")
    model = _pooled_net(backend, dtype)
    x = torch.randn(2, 3, 40, 40).to(dtype).contiguous(memory_format=CL)
    if backend == "onednn" and dtype == torch.bfloat16 and not onednn_backend.bf16_supported():
        with torch.no_grad(), pytest.raises(TypeError, match="'onednn' backend computes bfloat16 only on CPUs"):
            model(x)
        return
    monkeypatch.setattr(choices, "STEM_CHOICE", choices.MeasuredChoice(measure_on=()))
    outs, picked = {}, {}
    for winner in ("aten", "cpp", "separable"):
        chooser = forcing_chooser(winner)
        monkeypatch.setattr(choices, "CPU_POOL_CHOICE", chooser)
        with torch.no_grad():
            model(x)  # measures
            outs[winner] = model(x)
        picked[winner] = {(key.params, c.name) for key, c in chooser.choices().items()}
    stage = {(3, 2, 0, True), (2, 2, 0, True)}
    block = {(3, 1, 1, False)} if backend == "onednn" else set()
    # maxpool1-4 each measured (four input shapes), whichever form the stem's conv1 took.
    assert len({k.shape for k in chooser.choices() if k.params in stage}) == 4
    assert picked["aten"] == {(p, "aten") for p in stage | block}
    assert picked["cpp"] == {(p, "cpp") for p in stage | block}
    assert picked["separable"] == {(p, "aten") for p in stage} | {(p, "separable") for p in block}
    assert outs["aten"].float().std() > 0.05, "activations vanished; the comparison could not fail"
    assert torch.equal(outs["cpp"], outs["aten"]) and torch.equal(outs["separable"], outs["aten"])
    chooser = forcing_chooser("cpp")
    monkeypatch.setattr(choices, "CPU_POOL_CHOICE", chooser)
    with torch.no_grad():
        _pooled_net("torch", dtype)(x)
    assert not chooser.choices()


def test_unmeasured_onednn_block_pools_take_the_separable_form(monkeypatch):
    """With INCEPTION_FAST_AUTO=static nothing is measured: the onednn blocks' pool branch then
    runs the separable form (no argmax), the pools between stages ATen's, and the logits are the
    measured model's."""
    from inception_fast import choices, stages

    if "onednn" not in available_backends("cpu"):
        pytest.skip(f"onednn: {availability('onednn', 'cpu')}")
    model = _pooled_net("onednn")
    x = torch.randn(2, 3, 40, 40).contiguous(memory_format=CL)
    with torch.no_grad():
        want = model(x)
    chooser = choices.MeasuredChoice(measure_on=("cpu",))
    monkeypatch.setattr(choices, "CPU_POOL_CHOICE", chooser)
    monkeypatch.setenv("INCEPTION_FAST_AUTO", "static")
    calls = []
    real = stages.max_pool_3x3_s1
    monkeypatch.setattr(stages, "max_pool_3x3_s1", lambda t: (calls.append(t.shape), real(t))[1])
    with torch.no_grad():
        got = model(x)
    assert len(calls) == 9 and not chooser.choices()
    assert torch.equal(got, want)


def test_a_wrong_cpu_pool_is_never_chosen(monkeypatch):
    """The measured choice checks the extension's pool against ATen's on its first call: a kernel
    that returns a wrong max is dropped with the error on record, however fast it would be."""
    from launch_observer import forcing_chooser

    from inception_fast import choices

    real = extension.max_pool2d
    monkeypatch.setattr(extension, "max_pool2d", lambda *args: real(*args) + 1.0)
    chooser = forcing_chooser("cpp")
    monkeypatch.setattr(choices, "CPU_POOL_CHOICE", chooser)
    model = _pooled_net("cpp")
    x = pool_input(1, 64, 9, 9, torch.float32, specials=False)
    with torch.no_grad():
        out = model._max_pool(x, model.maxpool1)
    assert_same_bits(out, F.max_pool2d(x, 3, 2, 0, ceil_mode=True), "maxpool1")
    (choice,) = chooser.choices().values()
    assert choice.name == "aten" and "disagrees with ATen" in choice.errors["cpp"]


def test_unavailable_reasons(monkeypatch):
    """Each backend on its own device only (naming the other one's where it runs), and "cuda" on a
    CUDA device (mocked: no GPU needed) only with the extension's CUDA kernels and compute
    capability 8.0 or more; a missing extension is both backends' reason."""
    cuda = torch.device("cuda", 0)
    assert cpp_backend._unavailable_reason(torch.device("cpu")) is None
    assert "not on meta" in cpp_backend._unavailable_reason(torch.device("meta"))
    assert "not on meta" in cuda_backend._unavailable_reason(torch.device("meta"))
    assert "not on cuda; the compiled CUDA kernels are the 'cuda' backend" in cpp_backend._unavailable_reason(cuda)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(extension, "has_cuda_kernels", lambda: True)
    for capability in ((8, 0), (9, 0), (7, 5)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        why = cuda_backend._unavailable_reason(cuda)
        if capability >= (8, 0):
            assert why is None, (capability, why)
        else:
            assert why.startswith("needs compute capability >= 8.0") and why.endswith("found 7.5"), why
    monkeypatch.setattr(extension, "has_cuda_kernels", lambda: False)
    assert cuda_backend._unavailable_reason(cuda).startswith("inception_fast._C was built without CUDA kernels")
    monkeypatch.setattr(extension, "missing_reason", lambda: "the compiled extension is missing")
    assert cuda_backend._unavailable_reason(cuda) == cpp_backend._unavailable_reason(torch.device("cpu"))
    assert cpp_backend._unavailable_reason(torch.device("cpu")) == "the compiled extension is missing"


def test_cpp_is_the_compiled_cpu_backend_and_cuda_is_not():
    """The extension's CPU kernels run as "cpp"; "cuda" is listed only where CUDA kernels run."""
    assert "cpp" in available_backends("cpu") and "cuda" not in available_backends("cpu")
    assert "'cpp' backend" in availability("cuda", "cpu")


def test_deprecated_cuda_name_on_cpu_warns_and_runs_cpp():
    """backend="cuda" on CPU, the old name of these kernels, still runs them for one release."""
    b = make_block(ODD, k5=5, n=2, h=5, w=6, seed=4)
    with torch.no_grad():
        want = torch.ops.inception_fast.inception_block(*b.values(), "cpp")
        with pytest.warns(DeprecationWarning, match="backend 'cuda' on cpu is a deprecated name of the 'cpp'"):
            got = torch.ops.inception_fast.inception_block(*b.values(), "cuda")
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    check_close(got[0], reference(b, torch.float64)[0], TOLERANCE["fp32"], "out")


def test_import_without_extension():
    """With _C unimportable, the package still imports and "cpp" reports why it is unavailable."""
    code = (
        "import sys; sys.modules['inception_fast._C'] = None\n"
        "import torch, inception_fast\n"
        "from inception_fast.backends import availability\n"
        "why = availability('cpp', 'cpu')\n"
        "assert why.startswith('the compiled extension inception_fast._C is not built'), why\n"
        "try:\n"
        "    import inception_fast._C\n"
        "except ImportError as exc:\n"
        "    assert f'({type(exc).__name__}: {exc})' in why, why\n"
        "assert 'cpp' not in inception_fast.available_backends('cpu')\n"
        "x = torch.randn(1, 4, 8, 8)\n"
        "try:\n"
        "    torch.ops.inception_fast.cpu_max_pool2d(x, 3, 1, 1, False)\n"
        "except RuntimeError as exc:\n"
        "    assert str(exc).startswith('torch.ops.inception_fast.cpu_max_pool2d cannot run on cpu: the compiled "
        "extension inception_fast._C is not built'), exc\n"
        "else:\n"
        "    raise AssertionError('no error')\n"
    )
    run_python("-c", code, timeout=300)


def test_extension_load_failure_is_recorded_once_and_named_by_each_entry(monkeypatch):
    """An extension that fails to load (here its import raises a RuntimeError, as a failing static
    initialiser does) is tried once and its error recorded, not raised: extension_error names it
    before anything else loaded the extension, missing_reason adds how to build it, there are no CUDA
    kernels, and the cpp max pool and block_forward raise it instead of running the ops."""
    import types

    tries = []

    def failing_import(name):
        tries.append(name)
        raise RuntimeError("static initialiser failed")

    monkeypatch.setattr(extension, "importlib", types.SimpleNamespace(import_module=failing_import))
    monkeypatch.setattr(extension, "_tried", False)
    monkeypatch.setattr(extension, "_extension", None)
    monkeypatch.setattr(extension, "_extension_error", None)
    error = "RuntimeError: static initialiser failed"
    assert extension.extension_error() == error
    assert extension.load_extension() is None and not extension.has_cuda_kernels()
    assert extension.missing_reason() == (
        f"the compiled extension inception_fast._C is not built ({error}); {extension.BUILD_HINT}"
    )
    b = make_block(ODD, n=1)
    x = torch.randn(1, 4, 8, 8).contiguous(memory_format=CL)
    for call in (lambda: extension.block_forward(**b), lambda: extension.max_pool2d(x, 3, 1, 1, False)):
        with pytest.raises(RuntimeError, match=re.escape(f"inception_fast._C is not built ({error})")):
            call()
    assert tries == ["inception_fast._C"]


def test_has_cuda_kernels_needs_the_build_flag_and_the_registered_cuda_kernel(monkeypatch):
    """has_cuda_kernels: the loaded extension says it was built with nvcc (with_cuda) and its launch-1
    op has a kernel registered for the CUDA dispatch key; either alone is not enough."""
    import itertools
    import types

    monkeypatch.setattr(extension, "_tried", True)
    monkeypatch.setattr(extension, "_extension_error", None)
    for with_cuda, keys in itertools.product((0, 1), ((), ("CPU",), ("CUDA",), ("CPU", "CUDA"))):
        monkeypatch.setattr(extension, "_extension", types.SimpleNamespace(with_cuda=with_cuda))
        monkeypatch.setattr(
            torch._C,
            "_dispatch_has_kernel_for_dispatch_key",
            lambda op, key, keys=keys: op == "inception_fast::reduce_pool_" and key in keys,
        )
        assert extension.has_cuda_kernels() == (with_cuda == 1 and "CUDA" in keys), (with_cuda, keys)


def test_extension_ops_called_before_the_extension_is_imported_import_it():
    """The extension's own ops (defined in inception_fast.ops, implemented in csrc/) called in a
    process that has not imported inception_fast._C yet run its kernels, not a NotImplementedError."""
    code = (
        "import sys, torch, torch.nn.functional as F\n"
        "import inception_fast.ops\n"
        "assert 'inception_fast._C' not in sys.modules\n"
        "x = torch.randn(2, 5, 9, 9).contiguous(memory_format=torch.channels_last)\n"
        "y = torch.ops.inception_fast.cpu_max_pool2d(x, 3, 2, 1, True)\n"
        "assert 'inception_fast._C' in sys.modules\n"
        "assert torch.equal(y, F.max_pool2d(x, 3, 2, 1, ceil_mode=True))\n"
    )
    run_python("-c", code, timeout=300)


def test_extension_flags():
    ext = extension.load_extension()
    assert ext.with_cuda in (0, 1)
    assert torch._C._dispatch_has_kernel_for_dispatch_key("inception_fast::reduce_pool_", "CPU")
    assert torch._C._dispatch_has_kernel_for_dispatch_key("inception_fast::branch_convs_", "CPU")
    assert extension.has_cuda_kernels() == bool(ext.with_cuda)


def test_sm90_resource_usage_of_the_cuda_kernels():
    """The CUDA kernel's sm_90 instances in the built extension (the H100/H200 code; Triton's
    cuobjdump --dump-resource-usage, no GPU needed): all eight (bf16, fp16, TF32, exact fp32 x the
    aligned cp.async path and the element-wise fallback) are there, at 128 registers
    (__launch_bounds__(256, 2)), and none has a stack frame, i.e. spills, except the TF32 fallback:
    28 bytes with nvcc 13.0 (fp32 with TF32 on rows that are not 16-byte aligned, none of
    GoogLeNet's), left out."""
    import triton

    ext = extension.load_extension()
    if not ext.with_cuda:
        nvcc = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc"
        if build_required() and nvcc.exists():
            pytest.fail(f"INCEPTION_FAST_BUILD_EXT=1 with {nvcc}, but the extension was built without CUDA")
        pytest.skip("the extension was built without CUDA kernels")
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if not cuobjdump.exists():
        pytest.skip("this triton install ships no cuobjdump")
    dump = subprocess.run(
        [str(cuobjdump), "--dump-resource-usage", ext.__file__], capture_output=True, text=True, check=True
    ).stdout
    if "arch = sm_90\n" not in dump:  # setup.py builds 8.0 and 9.0 unless TORCH_CUDA_ARCH_LIST says otherwise
        arch_list = os.environ.get("TORCH_CUDA_ARCH_LIST")
        if arch_list is None:
            pytest.fail("the extension was built without sm_90 code, though setup.py asks for it")
        pytest.skip(f"the extension was built for TORCH_CUDA_ARCH_LIST={arch_list}, without sm_90")
    sm90 = dump.split("arch = sm_90\n", 1)[1].split("arch = ", 1)[0]
    kernels = re.findall(r"conv_gemm_kernelILNS_8GemmModeE(\d)ELb(\d)E.*\n\s*REG:(\d+) STACK:(\d+)", sm90)
    usage = {(int(mode), bool(int(vec))): (int(reg), int(stack)) for mode, vec, reg, stack in kernels}
    assert set(usage) == {(mode, vec) for mode in range(4) for vec in (False, True)}, usage
    assert all(reg == 128 for reg, _ in usage.values()), usage
    # GemmMode (csrc/cuda/conv_gemm.h): 0 bf16, 1 fp16, 2 TF32, 3 exact fp32.
    no_spill = [key for key in usage if key != (2, False)]
    assert all(usage[k][1] == 0 for k in no_spill), {k: usage[k] for k in no_spill}


# ---------------------------------------------------------------------------------------------
# The CUDA kernel's source, emulated on the CPU
# ---------------------------------------------------------------------------------------------


def _build_emulator():
    from torch.utils.cpp_extension import load

    load(
        name="inception_fast_emu",
        sources=[str(REPO / "tests" / "cuda_emulator" / "emulator.cpp")],
        extra_include_paths=[str(REPO / "csrc"), str(REPO / "tests" / "cuda_emulator")],
        extra_cflags=["-O2", "-g0", "-std=c++20", "-DINCEPTION_FAST_EMULATE"],
        is_python_module=False,
    )


def load_emulator(build=_build_emulator):
    """Builds and loads the emulator.  A build that fails (a compile error in conv_gemm.cu, or a
    compiler without C++20 <barrier>) skips its tests, with the reason, unless the build is
    required (INCEPTION_FAST_BUILD_EXT=1, as in CI): then they fail."""
    if shutil.which("c++") is None and shutil.which("g++") is None:
        unbuilt("no C++ compiler to build the kernel emulator")
    try:
        build()
    except Exception as exc:  # noqa: BLE001 - any compiler or loader failure
        unbuilt(f"could not build the kernel emulator: {str(exc)[-500:]}")
    return torch.ops.inception_fast_emu


@pytest.fixture(scope="module")
def emulator():
    yield load_emulator()
    torch.ops.inception_fast_emu.set_eager_copies(False)


@pytest.mark.parametrize("required", [True, False], ids=["build-required", "build-optional"])
def test_failed_emulator_build_fails_where_the_build_is_required(monkeypatch, required):
    """A compile error in the kernel source fails the emulator's tests under
    INCEPTION_FAST_BUILD_EXT=1 (CI), and skips them with the compiler's message otherwise."""

    def broken_build():
        raise RuntimeError("conv_gemm.cu:250: error: expected ';' before 'const'")

    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setenv("INCEPTION_FAST_BUILD_EXT", "1" if required else "")
    try:
        load_emulator(broken_build)
    except BaseException as exc:  # noqa: BLE001 - pytest's skip and fail outcomes are BaseExceptions
        outcome = exc
    else:
        raise AssertionError("a failed emulator build went unnoticed")
    assert type(outcome) is (pytest.fail.Exception if required else pytest.skip.Exception), repr(outcome)
    assert "expected ';'" in str(outcome)


# (dtype, TF32 allowed): the four arithmetic paths of conv_gemm.cu, by test id.
EMULATED_MODES = {
    "bf16": (torch.bfloat16, False),
    "fp16": (torch.float16, False),
    "tf32": (torch.float32, True),
    "fp32": (torch.float32, False),
}


def emulated_modes(*names):
    """Parametrizes a test's ``dtype, tf32`` over the named EMULATED_MODES (all by default)."""
    names = names or tuple(EMULATED_MODES)
    return pytest.mark.parametrize("dtype,tf32", [EMULATED_MODES[n] for n in names], ids=list(names))


# Both at batch 2 with an odd H*W, so a pixel's image offset matters and M tiles straddle images:
# 2 x 9x9 = 162 pixels = 2 M tiles of 128 (the first holds the image boundary, the second starts
# inside image 2); ch1+ch3red+ch5red = 144 and ch3 = 136 = 2 N tiles; 72 input channels = a K tail
# for bf16; a 5x5 branch 3; and ODD, which takes the element-wise (unaligned) loaders.
# "split": an odd ch1 and as many out channels as scratch channels (12), so the column pair that
# straddles branch 1 and scratch has one row stride in both and must still not be stored as a pair;
# and a tile count's edge: 3 x 43x1 = 129 pixels (one row in the last M tile), one pool channel.
EMULATED_SHAPES = {
    "aligned": ((72, 104, 24, 136, 16, 40, 24), 2, 9, 9, 5),
    "odd": (ODD, 2, 5, 7, 3),
    "split": ((16, 3, 7, 4, 5, 4, 1), 3, 43, 1, 3),
}


def _emulated_tolerance(dtype, tf32):
    """tolerance(ref64, ref_low) for a dtype / TF32 mode of the kernel."""
    if dtype != torch.float32:
        return lambda ref64, ref_low: reduced_precision_bound(ref_low, ref64)
    return lambda ref64, ref_low: TOLERANCE["tf32"] if tf32 else TOLERANCE["fp32"]


def _emulated_block(emulator, shape, seed, dtype=torch.float32):
    """Block ``shape`` of EMULATED_SHAPES, its tensors in ``dtype``, with cp.async landing late."""
    cfg, n, h, w, k5 = EMULATED_SHAPES[shape]
    emulator.set_eager_copies(False)
    return make_block(cfg, k5=k5, n=n, h=h, w=w, dtype=dtype, seed=seed)


def _emulated_launches(emulator, b, out, scratch, dtype, tf32, what):
    """Both emulated launches of block ``b`` into ``out`` / ``scratch``, each checked against the
    reference (launch 2 on the scratch launch 1 wrote)."""
    ch1, r3, r5, c3, c5, pool = dims(b)
    emulator.reduce_pool_(*launch1_args(b, out, scratch), tf32)
    tolerance = _emulated_tolerance(dtype, tf32)
    check_launch1(b, out, scratch, tolerance, f"{what}, launch 1")
    emulator.branch_convs_(*launch2_args(b, scratch, out), tf32)
    y3, y5 = reference_launch2(scratch, b)
    l3, l5 = reference_launch2(scratch, b, dtype)
    check_close(out[:, ch1 : ch1 + c3], y3, tolerance(y3, l3), f"{what}, branch 2")
    check_close(out[:, ch1 + c3 : ch1 + c3 + c5], y5, tolerance(y5, l5), f"{what}, branch 3")


@pytest.mark.parametrize("shape", list(EMULATED_SHAPES))
@emulated_modes()
def test_emulated_cuda_kernel(emulator, dtype, tf32, shape):
    b = _emulated_block(emulator, shape, 11, dtype)
    out, scratch = poisoned_buffers(b)
    _emulated_launches(emulator, b, out, scratch, dtype, tf32, f"emulated ({shape})")
    assert not torch.isnan(out).any()


def test_emulated_cuda_kernel_early_copies(emulator):
    """cp.async landing at issue: a prefetch into a stage still being read would corrupt it."""
    cfg, n, h, w, k5 = EMULATED_SHAPES["aligned"]
    b = make_block(cfg, k5=k5, n=n, h=h, w=w, dtype=torch.bfloat16, seed=12)
    ch1, r3, r5, c3, c5, pool = dims(b)
    out, scratch = poisoned_buffers(b)
    emulator.set_eager_copies(True)
    try:
        emulator.reduce_pool_(*launch1_args(b, out, scratch), False)
        check_launch1(b, out, scratch, _emulated_tolerance(torch.bfloat16, False), "early cp.async, launch 1")
        emulator.branch_convs_(*launch2_args(b, scratch, out), False)
    finally:
        emulator.set_eager_copies(False)
    y3, y5 = reference_launch2(scratch, b)
    l3, l5 = reference_launch2(scratch, b, torch.bfloat16)
    check_close(out[:, ch1 : ch1 + c3], y3, reduced_precision_bound(l3, y3), "early cp.async, branch 2")
    check_close(out[:, ch1 + c3 : ch1 + c3 + c5], y5, reduced_precision_bound(l5, y5), "early cp.async, branch 3")


def _check_nonfinite_close(out, ref64, ref_low, tolerance, what):
    """out holds NaN and +-inf exactly where ref64 does, and is close to it elsewhere."""
    nan, inf = ref64.isnan(), ref64.isinf()
    assert nan.any() and inf.any(), f"{what}: the reference has no NaN or inf: the check could not fail"
    assert torch.equal(out.isnan(), nan), f"{what}: NaN where the reference has none, or lost"
    assert torch.equal(out[inf].double(), ref64[inf]), f"{what}: infinities differ"
    # (The reference in bf16 / fp16 may itself go non-finite at a few more places: left out there.)
    finite = ~(nan | inf) & ref_low.isfinite()
    assert finite.double().mean() > 0.5, f"{what}: too little left to compare"
    check_close(out[finite], ref64[finite], tolerance(ref64[finite], ref_low[finite]), f"{what} (finite part)")


@pytest.mark.parametrize("shape", list(EMULATED_SHAPES))
@emulated_modes()
def test_emulated_cuda_kernel_nonfinite_input(emulator, dtype, tf32, shape):
    """NaN and +-inf in x reach launch 1's outputs as in torch: the max pool and the ReLU let NaN through."""
    b = _emulated_block(emulator, shape, 13, dtype)
    x = b["x"]
    n, _, h, w = x.shape
    # A NaN on a corner and one inside (its pool window the whole 3x3), +inf and -inf elsewhere.
    x[n - 1, 1, 0, w - 1] = NAN
    x[0, 2, h // 2, w // 2] = NAN
    x[0, 0, h - 1, w // 3] = float("inf")
    x[n - 1, 3, h // 2, 0] = float("-inf")
    ch1, r3, r5, c3, c5, pool = dims(b)
    out, scratch = poisoned_buffers(b)
    emulator.reduce_pool_(*launch1_args(b, out, scratch), tf32)
    ref_out, ref_scratch = reference(b, torch.float64)
    low_out, low_scratch = reference(b)
    tolerance = _emulated_tolerance(dtype, tf32)
    tail = ch1 + c3 + c5
    _check_nonfinite_close(out[:, :ch1], ref_out[:, :ch1], low_out[:, :ch1], tolerance, "non-finite x, branch 1")
    _check_nonfinite_close(scratch, ref_scratch, low_scratch, tolerance, "non-finite x, scratch")
    _check_nonfinite_close(out[:, tail:], ref_out[:, tail:], low_out[:, tail:], tolerance, "non-finite x, pool")


@pytest.mark.parametrize("shape", ["aligned", "odd"])
def test_emulated_cuda_kernel_accepts_other_layouts(emulator, shape):
    """NCHW x, OIHW-contiguous w3/w5, a transposed w_red / w_pool and strided biases: the launches
    pack what the kernel reads, as the CPU kernels do (test_cpu_accepts_other_layouts)."""
    from unwritten_reads import nan_gapped

    b = _emulated_block(emulator, shape, 16)
    b2 = dict(b, x=b["x"].contiguous(), w3=b["w3"].contiguous(), w5=b["w5"].contiguous())
    for name in ("w_red", "w_pool"):
        b2[name] = b[name].t().contiguous().t()
    for name in ("b_red", "b_pool", "b3", "b5"):
        b2[name] = nan_gapped(b[name])
    out, scratch = poisoned_buffers(b)
    emulator.reduce_pool_(*launch1_args(b2, out, scratch), False)
    emulator.branch_convs_(*launch2_args(b2, scratch, out), False)
    check_close(out, reference(b, torch.float64)[0], TOLERANCE["fp32"], f"other layouts ({shape}) out")


def _misaligned(t):
    """t's values in a buffer one element off a 16-byte boundary (the same layout)."""
    storage = torch.empty(t.numel() + 1, dtype=t.dtype)
    moved = storage[1:].as_strided(t.shape, t.stride()).copy_(t)
    assert moved.data_ptr() % 16 != 0
    return moved


@pytest.mark.parametrize("which", ["w_red", "w_pool", "x", "w3", "w5"])
def test_emulated_cuda_kernel_misaligned_operands(emulator, which):
    """An operand off a 16-byte boundary takes the element-wise loaders (the emulator refuses a
    misaligned cp.async, as the GPU would fault), and both launches stay right."""
    b = _emulated_block(emulator, "aligned", 14, torch.bfloat16)
    b[which] = _misaligned(b[which])
    out, scratch = poisoned_buffers(b)
    _emulated_launches(emulator, b, out, scratch, torch.bfloat16, False, f"misaligned {which}")


@pytest.mark.parametrize("shape", list(EMULATED_SHAPES))
@emulated_modes("bf16", "fp32")
def test_emulated_cuda_kernel_guarded_buffers(emulator, dtype, tf32, shape):
    """Every operand between poisoned guard bands: a store past out or scratch lands in a band, and a
    load past x or a weight (a K tail or a row past M not masked) brings NaN into the results."""
    from unwritten_reads import assert_bands_untouched, guarded

    b = _emulated_block(emulator, shape, 15, dtype)
    bands = []

    def in_guards(t):
        inner = guarded(t.numel(), t.dtype, t.device, bands)
        return inner.as_strided(t.shape, t.stride()).copy_(t)

    b = {k: in_guards(v) for k, v in b.items()}
    fresh_out, fresh_scratch = poisoned_buffers(b)
    out, scratch = in_guards(fresh_out), in_guards(fresh_scratch)
    _emulated_launches(emulator, b, out, scratch, dtype, tf32, f"guarded ({shape})")
    assert_bands_untouched(bands)


# ---------------------------------------------------------------------------------------------
# GPU
# ---------------------------------------------------------------------------------------------

gpu = pytest.mark.gpu


@pytest.fixture
def cuda_kernels(cuda_device):
    why = cuda_backend._unavailable_reason(cuda_device)
    if why is not None:
        pytest.skip(why)
    return cuda_device


def _gpu_block(name, n, dtype, device, k5=3, seed=0):
    """A block at its real GoogLeNet spatial size."""
    size = {"inception3a": 28, "inception4e": 14, "inception5b": 7}[name]
    return make_block(BLOCK_CONFIGS[name], k5=k5, n=n, h=size, w=size, dtype=dtype, device=device, seed=seed)


def _run_two_launches(b):
    out, scratch = poisoned_buffers(b)
    OPS.reduce_pool_(*launch1_args(b, out, scratch))
    ch1, r3, r5, c3, c5, pool = dims(b)
    assert torch.isnan(out[:, ch1 : ch1 + c3 + c5]).all(), "launch 1 wrote into branch 2/3's slices"
    OPS.branch_convs_(*launch2_args(b, scratch, out))
    torch.cuda.synchronize()
    return out, scratch


GPU_CASES = [("inception3a", 4), ("inception4e", 8), ("inception5b", 2), ("inception3a", 1), ("inception5b", 1)]


@gpu
@pytest.mark.parametrize("name,n", GPU_CASES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gpu_low_precision(cuda_kernels, name, n, dtype):
    b = _gpu_block(name, n, dtype, cuda_kernels, k5=5 if n == 1 else 3)
    out, scratch = _run_two_launches(b)
    ref64, ref_scratch64 = reference(b, torch.float64)
    ref_low, ref_scratch_low = reference(b)  # cuDNN in the same dtype
    assert_nonzero(ref64)
    check_close(scratch, ref_scratch64, reduced_precision_bound(ref_scratch_low, ref_scratch64), f"{name} scratch")
    check_close(out, ref64, reduced_precision_bound(ref_low, ref64), f"{name} out")


@gpu
@pytest.mark.parametrize("name,n", GPU_CASES)
@pytest.mark.parametrize("tf32", [True, False], ids=["tf32", "exact"])
def test_gpu_fp32(cuda_kernels, backend_flag, name, n, tf32):
    backend_flag(torch.backends.cudnn, "allow_tf32", tf32)
    b = _gpu_block(name, n, torch.float32, cuda_kernels, k5=5 if n == 1 else 3)
    out, scratch = _run_two_launches(b)
    ref64, ref_scratch64 = reference(b, torch.float64)
    tol = TOLERANCE["tf32"] if tf32 else TOLERANCE["fp32"]
    check_close(scratch, ref_scratch64, tol, f"{name} scratch")
    check_close(out, ref64, tol, f"{name} out")


@gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("n,k5", [(1, 3), (3, 5)])
def test_gpu_odd_shapes(cuda_kernels, backend_flag, dtype, n, k5):
    """Channel counts that break 16-byte chunks take the element-wise loaders."""
    backend_flag(torch.backends.cudnn, "allow_tf32", False)
    b = make_block(ODD, k5=k5, n=n, h=5, w=7, dtype=dtype, device=cuda_kernels, seed=n)
    out, scratch = _run_two_launches(b)
    ref64, ref_scratch64 = reference(b, torch.float64)
    tol_out = TOLERANCE["fp32"] if dtype == torch.float32 else reduced_precision_bound(reference(b)[0], ref64)
    check_close(out, ref64, tol_out, "odd out")


@gpu
def test_gpu_misaligned_weights(cuda_kernels):
    """A weight whose rows start off a 16-byte boundary must take the element-wise path, not fault."""
    b = _gpu_block("inception4e", 2, torch.bfloat16, cuda_kernels)
    w = b["w_red"]
    storage = torch.empty(w.numel() + 1, dtype=w.dtype, device=w.device)
    b["w_red"] = storage[1:].view_as(w).copy_(w)
    out, _ = _run_two_launches(b)
    ref64 = reference(b, torch.float64)[0]
    check_close(out, ref64, reduced_precision_bound(reference(b)[0], ref64), "misaligned w_red")


@gpu
def test_gpu_block_forward_and_graph(cuda_kernels):
    b = _gpu_block("inception4e", 2, torch.bfloat16, cuda_kernels)
    out, scratch = torch.ops.inception_fast.inception_block(*b.values(), "cuda")
    ref64 = reference(b, torch.float64)[0]
    tol = reduced_precision_bound(reference(b)[0], ref64)
    check_close(out, ref64, tol, "block_forward")
    # Both launches are capturable (current stream, no sync, no allocation inside the kernels' setup).
    static_out, static_scratch = poisoned_buffers(b)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        OPS.reduce_pool_(*launch1_args(b, static_out, static_scratch))
        OPS.branch_convs_(*launch2_args(b, static_scratch, static_out))
    graph.replay()
    torch.cuda.synchronize()
    check_close(static_out, ref64, tol, "graph replay")


@gpu
def test_gpu_opcheck(cuda_kernels):
    _opcheck_both_launches(cuda_kernels)
