"""The ops layer: torch.library schemas, argument checks, fake kernels and autograd.

Schemas are defined here in Python, so every op exists (with a fake kernel for
torch.compile) even when the compiled extension is absent.  Each op takes a ``backend``
name and runs that backend's kernel for it, through the registry (``inception_fast.backends``):

* ``inception_fast::inception_block`` -- one Inception block's forward from packed weights (see
  ``inception_fast.packing``).  Returns ``(out, scratch)``: the concatenated block output and the
  two post-ReLU reductions (saved for the backward pass), both channels_last.  ``"auto"`` is
  resolved per call by ``inception_fast.choices.AUTO`` (so the choice also happens under
  torch.compile, whose traced graph only holds the op).  Differentiable: its registered backward
  runs ``inception_fast::inception_block_backward`` with the forward's backend name.
* ``inception_fast::pooled_inception_block`` -- ``inception_block``'s output on
  max_pool2d(x, pool_kernel, pool_stride, pool_padding, ceil_mode=ceil_mode) (square window,
  dilation 1): "torch" runs ATen's pool then its block, "triton" takes the pool while launch 1 loads
  x (the pooled map is never stored).  Inference only: a gradient through it raises.  FusedGoogLeNet
  runs it where INCEPTION_FAST_EXTRA_CANDIDATES offers it and ``inception_fast.choices.FOLD_CHOICE``
  measured it faster (maxpool2/3/4 with 3a/4a/5a).
* ``inception_fast::inception_chain`` -- a run of consecutive blocks (3a-3b, 4a-4e, 5a-5b), each
  block's output the next one's input, optionally on max_pool2d of x as ``pooled_inception_block``
  takes it (``pool`` [kernel, stride, padding], or empty for none); ``weights`` holds the blocks'
  packed weights, eight per block.  Returns the last block's output.  "torch" runs the blocks one
  after another; "triton" joins launch 2 of each block and launch 1 of the next into one
  persistent launch (n + 1 launches for n blocks).  Inference only.  FusedGoogLeNet runs it where
  INCEPTION_FAST_EXTRA_CANDIDATES offers it and ``inception_fast.choices.CHAIN_CHOICE`` measured it
  faster.
* ``inception_fast::inception_block_backward`` -- the block's gradients (input, packed weights and
  biases) from the forward's saved input, output and scratch, through the registry (kernel
  ``inception_block_backward``: the torch backend's ATen chain, the Triton backward launches).
  ``"auto"`` is resolved per call by ``inception_fast.choices.BACKWARD`` (the ATen chain off
  CUDA; on CUDA the Triton backward where it was checked and measured faster, per shape).  Its
  input gradient is an empty tensor when ``need_input_grad`` is False: every output is a tensor,
  so PyTorch's batched gradients (``autograd.grad(is_grads_batched=True)``,
  ``autograd.functional.jacobian(vectorize=True)``) can run it once per gradient.
* ``inception_fast::inception_block_bn_train`` -- the block with train-mode BatchNorm (batch
  statistics) after every conv, from raw conv weights and the BN affine parameters; returns the
  output and, for the backward and the caller's running-statistics update, the pre-BN outputs and
  the batch mean and biased variance.  Differentiable: its backward is the op
  ``inception_block_bn_train_backward``, a chain of ATen calls (CompositeImplicitAutograd, so
  torch.compile traces the ATen calls, and batched gradients run it once per gradient).  See its
  section below.
* ``inception_fast::conv_relu_maxpool`` -- max_pool2d(relu(conv2d(x, w, b))), channels_last: the
  stem's first layer (conv1 + maxpool1); "triton" runs backends/triton/stem.py, or, given the
  weight packed in rows (``w_rows``), the pooled form of backends/triton/conv_rows.py.  Inference
  only (no autograd formula).
* ``inception_fast::conv_relu`` -- relu(conv2d(x, w, b, stride=stride, padding=padding)),
  channels_last: the stem's conv2 and conv3 (stride 1), and conv1 (stride 2) in one of the stem's
  forms.  "triton" runs, at stride 1, an implicit-GEMM kernel for square odd kernels with padding
  k // 2 (backends/triton/conv_relu.py; FusedGoogLeNet runs it where
  ``inception_fast.choices.CONV_RELU_CHOICE`` measured it faster), and at a larger stride the
  aligned-rows kernel for inputs of at most 8 channels (backends/triton/conv_rows.py; the stem's
  "triton_rows" form).  Inference only: a gradient through it raises.
* ``inception_fast::max_pool2d`` -- max_pool2d (square window, dilation 1), channels_last; ATen's
  backward ("cpp": the extension's ``cpu_max_pool2d`` in float32 and bfloat16).
* ``inception_fast::avgpool_linear`` -- linear(mean over H and W of x, w, b): the eval-mode head
  (global average pool, dropout as the identity, fc).  Inference only (no autograd formula).
* ``inception_fast::reduce_pool_`` and ``inception_fast::branch_convs_`` -- the two launches of
  the compiled extension as separate mutating ops (csrc/, ``TORCH_LIBRARY_IMPL``).
* ``inception_fast::cpu_max_pool2d`` -- the compiled extension's CPU max pool (csrc/cpu/max_pool.cpp;
  float32 and bfloat16, channels_last, no argmax): the "cpp" backend's ``max_pool2d`` kernel.
"""

from __future__ import annotations

import contextvars

import torch
import torch.nn.functional as F

from . import backends as _backends
from . import choices, geometry

__all__ = [
    "inception_block",
    "pooled_inception_block",
    "inception_chain",
    "inception_block_bn_train",
    "conv_relu_maxpool",
    "conv_relu",
    "max_pool2d",
    "avgpool_linear",
]

_LIB = torch.library.Library("inception_fast", "DEF")  # kept alive: dropping it would remove the schemas
_LIB.define(
    "inception_block(Tensor x, Tensor w_red, Tensor b_red, Tensor w_pool, Tensor b_pool, "
    "Tensor w3, Tensor b3, Tensor w5, Tensor b5, str backend) -> (Tensor, Tensor)"
)
_LIB.define(
    "pooled_inception_block(Tensor x, Tensor w_red, Tensor b_red, Tensor w_pool, Tensor b_pool, "
    "Tensor w3, Tensor b3, Tensor w5, Tensor b5, int pool_kernel, int pool_stride, int pool_padding, "
    "bool ceil_mode, str backend) -> Tensor"
)
_LIB.define("inception_chain(Tensor x, Tensor[] weights, int[] pool, bool ceil_mode, str backend) -> Tensor")
_LIB.define(
    "inception_block_backward(Tensor grad_out, Tensor x, Tensor w_red, Tensor w_pool, Tensor w3, Tensor w5, "
    "Tensor out, Tensor scratch, bool need_input_grad, str backend) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"
)
_LIB.define(
    "conv_relu_maxpool(Tensor x, Tensor w, Tensor b, int stride, int padding, int pool_kernel, "
    "int pool_stride, int pool_padding, bool ceil_mode, str backend, Tensor? w_rows=None) -> Tensor"
)
_LIB.define(
    "conv_relu(Tensor x, Tensor w, Tensor b, int padding, str backend, int stride=1, Tensor? w_rows=None) -> Tensor"
)
_LIB.define("max_pool2d(Tensor x, int kernel, int stride, int padding, bool ceil_mode, str backend) -> Tensor")
_LIB.define("avgpool_linear(Tensor x, Tensor w, Tensor b, str backend) -> Tensor")
_LIB.define(
    "reduce_pool_(Tensor x, Tensor w_red, Tensor b_red, Tensor w_pool, Tensor b_pool, "
    "Tensor(a!) out, Tensor(b!) scratch) -> ()"
)
_LIB.define("branch_convs_(Tensor scratch, Tensor w3, Tensor b3, Tensor w5, Tensor b5, Tensor(a!) out, int ch1) -> ()")
_LIB.define("cpu_max_pool2d(Tensor x, int kernel, int stride, int padding, bool ceil_mode) -> Tensor")

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check_block_args(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, backend="torch"):
    if x.dim() != 4:
        raise ValueError(f"Inception block expects a 4-D (N, C, H, W) input, got {x.dim()}-D shape {tuple(x.shape)}")
    # float64 on the torch backend only (ATen runs it; gradcheck uses it).
    if x.dtype not in _FLOAT_DTYPES and not (x.dtype == torch.float64 and backend == "torch"):
        raise TypeError(
            f"Inception block supports float32, float16 and bfloat16 inputs (and float64 on the torch backend), "
            f"got {x.dtype}"
        )
    if w_red.dim() != 2:
        raise ValueError(
            f"Inception block: w_red must be 2-D (ch1 + ch3red + ch5red, Cin), got shape {tuple(w_red.shape)}"
        )
    cin = w_red.shape[1]
    if x.shape[1] != cin:
        raise ValueError(
            f"Inception block expects {cin} input channels, got {x.shape[1]} (input shape {tuple(x.shape)})"
        )
    for name, t in (
        ("w_red", w_red),
        ("b_red", b_red),
        ("w_pool", w_pool),
        ("b_pool", b_pool),
        ("w3", w3),
        ("b3", b3),
        ("w5", w5),
        ("b5", b5),
    ):
        if t.device != x.device:
            raise RuntimeError(f"input is on {x.device} but weight {name} is on {t.device}; move the module with .to()")
        if t.dtype != x.dtype:
            raise TypeError(
                f"input dtype {x.dtype} does not match weight {name} dtype {t.dtype}; cast the module or the input"
            )
    geometry.check_block_pixels(x)
    _check_block_weights(cin, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5)


def _check_block_weights(cin, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5) -> None:
    """The packed weights' shapes (w_red 2-D with ``cin`` columns, checked by the caller) agree
    with each other (the layouts in inception_fast.backends): a ValueError naming the first that
    does not, so every backend and the fake kernel refuse the same calls."""

    def fail(name, t, want):
        raise ValueError(f"Inception block: {name} must be {want}, got shape {tuple(t.shape)}")

    if w_pool.dim() != 2 or w_pool.shape[1] != cin:
        fail("w_pool", w_pool, f"(pool_proj, Cin={cin})")
    for name, w in (("w3", w3), ("w5", w5)):
        if w.dim() != 4 or w.shape[2] != w.shape[3] or w.shape[2] % 2 != 1:
            fail(name, w, "(Cout, Cred, k, k) with an odd k")
    ch3red, ch5red = w3.shape[1], w5.shape[1]
    if w_red.shape[0] < ch3red + ch5red:
        fail("w_red", w_red, f"at least ch3red + ch5red = {ch3red + ch5red} rows (w3 reads {ch3red}, w5 {ch5red})")
    for name, b, n in (("b_red", b_red, w_red.shape[0]), ("b_pool", b_pool, w_pool.shape[0])):
        if b.dim() != 1 or b.shape[0] != n:
            fail(name, b, f"({n},)")
    for name, b, n in (("b3", b3, w3.shape[0]), ("b5", b5, w5.shape[0])):
        if b.dim() != 1 or b.shape[0] != n:
            fail(name, b, f"({n},)")


@torch.library.impl(_LIB, "inception_block", "CompositeExplicitAutograd")
def _inception_block_impl(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, backend):
    _check_block_args(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, backend)
    x = x.contiguous(memory_format=torch.channels_last)
    if x.shape[0] == 0:  # an empty batch: nothing to compute, the reference's empty result
        if backend != "auto":
            _kernel("inception_block", backend, x)  # the same errors as a full batch
        return geometry.empty_outputs(x, w_red, w_pool, w3, w5)
    if backend == "auto":
        backend = choices.AUTO.choose(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5)
    with torch.no_grad():  # the op is differentiated by its registered backward, not through its kernels
        return _kernel("inception_block", backend, x)(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5)


def _implementation(op: str, backend: str, x):
    """(backend ``backend``, its kernel for ``op``), or the ValueError of a backend name that is
    unknown or lacks ``op`` (an old name stands for its new one on x's device type).  The fake
    kernels check this too, so a trace refuses what the real call would."""
    new = _backends.RENAMED.get((backend, x.device.type), backend)
    impl = _backends.get(new)
    try:
        return impl, impl.op(op)
    except ValueError as e:
        if new == backend:
            raise
        raise ValueError(f"{e} (on {x.device.type}, {backend!r} names the {new!r} backend)") from None


def _fake_backend_check(op: str, backend: str, x, auto: bool = False) -> None:
    """For a fake kernel: the real call's ValueError where ``backend`` is unknown or lacks ``op``
    ("auto" passes where ``auto``: the op resolves it per call).  Not whether the backend runs on
    x's device: a trace may be made for a device this process does not have."""
    if not (auto and backend == "auto"):
        try:
            _implementation(op, backend, x)
        except RuntimeError:  # a backend that cannot be loaded in this process: the trace may be for another
            pass


def _kernel(op: str, backend: str, x):
    """Backend ``backend``'s kernel for ``op`` (an old name: its new one's, with the deprecation
    warning only where that backend implements ``op``), checked to run on x's device."""
    impl, kernel = _implementation(op, backend, x)
    backend = _backends.renamed(backend, x.device)
    why = impl.unavailable_reason(x.device)
    if why is not None:
        raise RuntimeError(f"backend {backend!r} is unavailable on {x.device}: {why}")
    return kernel


@torch.library.register_fake("inception_fast::inception_block")
def _inception_block_fake(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, backend):
    _fake_backend_check("inception_block", backend, x, auto=True)
    _check_block_args(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, backend)
    return geometry.empty_outputs(x, w_red, w_pool, w3, w5)


def _pooled_block_shape(
    x,
    w_red,
    b_red,
    w_pool,
    b_pool,
    w3,
    b3,
    w5,
    b5,
    kernel,
    stride,
    padding,
    ceil_mode,
    backend,
    op="pooled_inception_block",
):
    """Checks the arguments (errors name ``op``); returns the pooled (PH, PW)."""
    if backend == "auto":
        choice = "FOLD_CHOICE" if op == "pooled_inception_block" else "CHAIN_CHOICE"
        raise ValueError(
            f"{op} takes a backend name ('torch', 'triton'), not 'auto': "
            f"FusedGoogLeNet decides per shape (inception_fast.choices.{choice})"
        )
    _check_block_args(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, backend)
    if kernel < 1 or stride < 1 or not 0 <= 2 * padding <= kernel:
        raise ValueError(
            f"{op}: invalid max pool: kernel {kernel}, stride {stride}, padding {padding} "
            "(padding must be at most half the kernel)"
        )
    hw = tuple(geometry.pool_out(s, kernel, stride, padding, ceil_mode) for s in x.shape[2:])
    if min(hw) < 1:
        raise ValueError(
            f"{op}: input {tuple(x.shape[2:])} is too small for a {kernel}x{kernel}/{stride} max pool "
            f"(padding {padding})"
        )
    return hw


@torch.library.impl(_LIB, "pooled_inception_block", "CompositeExplicitAutograd")
def _pooled_inception_block_impl(
    x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, kernel, stride, padding, ceil_mode, backend
):
    hw = _pooled_block_shape(
        x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, kernel, stride, padding, ceil_mode, backend
    )
    kernel_fn = _kernel("pooled_inception_block", backend, x)
    x = x.contiguous(memory_format=torch.channels_last)
    if x.shape[0] == 0:  # an empty batch: nothing to compute
        return geometry.empty_outputs(x, w_red, w_pool, w3, w5, hw)[0]
    with torch.no_grad():
        return kernel_fn(x, kernel, stride, padding, ceil_mode, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5)


@torch.library.register_fake("inception_fast::pooled_inception_block")
def _pooled_inception_block_fake(
    x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, kernel, stride, padding, ceil_mode, backend
):
    _fake_backend_check("pooled_inception_block", backend, x, auto=True)  # (its shape check refuses "auto")
    hw = _pooled_block_shape(
        x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, kernel, stride, padding, ceil_mode, backend
    )
    return geometry.empty_outputs(x, w_red, w_pool, w3, w5, hw)[0]


def _no_context(ctx, inputs, output):
    pass


def _pooled_block_backward(ctx, grad_out):
    raise RuntimeError(
        "inception_fast::pooled_inception_block is inference only (no backward); for gradients run "
        "the pool and then inception_block (FusedGoogLeNet does so whenever a gradient is wanted)"
    )


torch.library.register_autograd(
    "inception_fast::pooled_inception_block", _pooled_block_backward, setup_context=_no_context
)


def pooled_inception_block(
    x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, kernel, stride, padding=0, ceil_mode=False, backend="torch"
):
    """Inference forward of one block on max_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode);
    returns the channels_last (N, C_total, PH, PW) output ("triton": the pool folded into launch 1)."""
    return torch.ops.inception_fast.pooled_inception_block(
        x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, kernel, stride, padding, ceil_mode, backend
    )


BLOCK_WEIGHTS = 8  # (w_red, b_red, w_pool, b_pool, w3, b3, w5, b5) per block


def _chain_shape(x, weights, pool, ceil_mode, backend):
    """Checks inception_chain's arguments; returns (blocks, pre_pool, (H, W) of the blocks' maps):
    ``blocks`` the weights in groups of eight, ``pre_pool`` (kernel, stride, padding, ceil_mode) or None."""
    if not weights or len(weights) % BLOCK_WEIGHTS:
        raise ValueError(
            f"inception_chain takes {BLOCK_WEIGHTS} packed tensors per block "
            f"(w_red, b_red, w_pool, b_pool, w3, b3, w5, b5), got {len(weights)}"
        )
    if len(pool) not in (0, 3):
        raise ValueError(f"inception_chain: pool is [] or [kernel, stride, padding], got {list(pool)}")
    blocks = [tuple(weights[i : i + BLOCK_WEIGHTS]) for i in range(0, len(weights), BLOCK_WEIGHTS)]
    pre_pool = None if not pool else (*pool, ceil_mode)
    # Without a pool, the checks of a pool that keeps every size (1x1, stride 1): the same errors.
    hw = _pooled_block_shape(x, *blocks[0], *(pre_pool or (1, 1, 0, False)), backend, op="inception_chain")
    for i, block in enumerate(blocks[1:], 1):
        cout = geometry.block_channels(*(blocks[i - 1][j] for j in (0, 2, 4, 6))).total
        if block[0].shape[1] != cout:
            raise ValueError(
                f"inception_chain: block {i - 1} outputs {cout} channels but block {i} expects "
                f"{block[0].shape[1]} input channels"
            )
        try:
            _check_block_args(x.new_empty(0, cout, *hw), *block, backend)
        except (ValueError, TypeError, RuntimeError) as e:
            raise type(e)(f"inception_chain: block {i}: {e}") from None
    return blocks, pre_pool, hw


def _chain_output(x, blocks, hw):
    last = blocks[-1]
    return geometry.empty_outputs(x, last[0], last[2], last[4], last[6], hw)[0]


@torch.library.impl(_LIB, "inception_chain", "CompositeExplicitAutograd")
def _inception_chain_impl(x, weights, pool, ceil_mode, backend):
    blocks, pre_pool, hw = _chain_shape(x, weights, pool, ceil_mode, backend)
    kernel_fn = _kernel("inception_chain", backend, x)
    x = x.contiguous(memory_format=torch.channels_last)
    if x.shape[0] == 0:  # an empty batch: nothing to compute
        return _chain_output(x, blocks, hw)
    with torch.no_grad():
        return kernel_fn(x, blocks, pre_pool)


@torch.library.register_fake("inception_fast::inception_chain")
def _inception_chain_fake(x, weights, pool, ceil_mode, backend):
    _fake_backend_check("inception_chain", backend, x, auto=True)  # (its shape check refuses "auto")
    blocks, _, hw = _chain_shape(x, weights, pool, ceil_mode, backend)
    return _chain_output(x, blocks, hw)


def _chain_backward(ctx, grad_out):
    raise RuntimeError(
        "inception_fast::inception_chain is inference only (no backward); for gradients run the "
        "blocks one by one with inception_block (FusedGoogLeNet does so whenever a gradient is wanted)"
    )


torch.library.register_autograd("inception_fast::inception_chain", _chain_backward, setup_context=_no_context)


def inception_chain(x, blocks, pool=None, backend="torch"):
    """Inference forward of consecutive blocks, ``blocks`` a sequence of packed-weight 8-tuples,
    on x or, with ``pool`` = (kernel, stride, padding, ceil_mode), on max_pool2d(x, ...); returns
    the last block's channels_last output ("triton": n + 1 launches for n blocks)."""
    weights = [t for block in blocks for t in block]
    kernel, ceil_mode = ([], False) if pool is None else (list(pool[:3]), bool(pool[3]))
    return torch.ops.inception_fast.inception_chain(x, weights, kernel, ceil_mode, backend)


@torch.library.register_fake("inception_fast::reduce_pool_")
def _reduce_pool_fake(x, w_red, b_red, w_pool, b_pool, out, scratch):
    return None


@torch.library.register_fake("inception_fast::branch_convs_")
def _branch_convs_fake(scratch, w3, b3, w5, b5, out, ch1):
    return None


@torch.library.register_fake("inception_fast::cpu_max_pool2d")
def _cpu_max_pool2d_fake(x, kernel, stride, padding, ceil_mode):
    shape = _max_pool2d_shape(x, kernel, stride, padding, ceil_mode)
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)


def _extension_kernel_missing(name: str):
    """The kernel of an op the compiled extension implements (csrc/: ``reduce_pool_``,
    ``branch_convs_``, ``cpu_max_pool2d``) until the extension is imported and for devices it has no
    kernel for: the first call imports it and dispatches again; where no kernel can be reached, a
    RuntimeError says why (instead of the dispatcher's NotImplementedError)."""
    qualname = f"inception_fast::{name}"

    def kernel(*args):
        from .backends import extension

        device = next(a.device for a in args if isinstance(a, torch.Tensor))
        key = {"cpu": "CPU", "cuda": "CUDA"}.get(device.type)
        if (
            extension.load_extension() is not None
            and key
            and torch._C._dispatch_has_kernel_for_dispatch_key(qualname, key)
        ):
            return getattr(torch.ops.inception_fast, name)(*args)
        why = extension.missing_reason() or f"the compiled extension has no {device.type} kernel for it"
        raise RuntimeError(f"torch.ops.{qualname.replace('::', '.')} cannot run on {device}: {why}")

    return kernel


for _name in ("reduce_pool_", "branch_convs_", "cpu_max_pool2d"):
    _LIB.impl(_name, _extension_kernel_missing(_name), "CompositeExplicitAutograd")


def _check_conv_args(op: str, x, w, b) -> None:
    """The checks of a conv op (``op`` names it in the errors): a 4-D float input, a square
    (Cout, Cin, k, k) weight with x's channels, a (Cout,) bias, all on x's device and in its dtype."""
    if x.dim() != 4:
        raise ValueError(f"{op} expects a 4-D (N, C, H, W) input, got {x.dim()}-D shape {tuple(x.shape)}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{op} supports float32, float16 and bfloat16 inputs, got {x.dtype}")
    if w.dim() != 4 or w.shape[2] != w.shape[3]:
        raise ValueError(f"{op} expects a square weight (Cout, Cin, k, k), got shape {tuple(w.shape)}")
    if w.shape[1] != x.shape[1]:
        raise ValueError(f"{op} expects {w.shape[1]} input channels, got {x.shape[1]} (input shape {tuple(x.shape)})")
    if tuple(b.shape) != (w.shape[0],):
        raise ValueError(f"{op} expects a bias of shape ({w.shape[0]},), got {tuple(b.shape)}")
    for name, t in (("w", w), ("b", b)):
        if t.device != x.device:
            raise RuntimeError(f"input is on {x.device} but {name} is on {t.device}")
        if t.dtype != x.dtype:
            raise TypeError(f"input dtype {x.dtype} does not match {name} dtype {t.dtype}")


def _conv_relu_maxpool_shape(x, w, b, stride, padding, pool_kernel, pool_stride, pool_padding, ceil_mode):
    """Checks the arguments; returns the (N, Cout, PH, PW) output shape."""
    _check_conv_args("conv_relu_maxpool", x, w, b)
    if min(stride, pool_kernel, pool_stride) < 1 or padding < 0 or not 0 <= 2 * pool_padding <= pool_kernel:
        raise ValueError(
            f"invalid conv/pool parameters: stride {stride}, padding {padding}, "
            f"pool kernel {pool_kernel}, pool stride {pool_stride}, pool padding {pool_padding}"
        )
    k = w.shape[-1]
    oh, ow = (geometry.conv_out(s, k, stride, padding) for s in x.shape[2:])
    ph, pw = (geometry.pool_out(s, pool_kernel, pool_stride, pool_padding, ceil_mode) for s in (oh, ow))
    if min(oh, ow, ph, pw) < 1:
        raise ValueError(
            f"input {tuple(x.shape[2:])} is too small for a {k}x{k}/{stride} conv (padding {padding}) "
            f"followed by a {pool_kernel}x{pool_kernel}/{pool_stride} max pool"
        )
    return x.shape[0], w.shape[0], ph, pw


@torch.library.impl(_LIB, "conv_relu_maxpool", "CompositeExplicitAutograd")
def _conv_relu_maxpool_impl(
    x, w, b, stride, padding, pool_kernel, pool_stride, pool_padding, ceil_mode, backend, w_rows=None
):
    _conv_relu_maxpool_shape(x, w, b, stride, padding, pool_kernel, pool_stride, pool_padding, ceil_mode)
    return _kernel("conv_relu_maxpool", backend, x)(
        x, w, b, stride, padding, pool_kernel, pool_stride, pool_padding, ceil_mode, w_rows
    )


@torch.library.register_fake("inception_fast::conv_relu_maxpool")
def _conv_relu_maxpool_fake(
    x, w, b, stride, padding, pool_kernel, pool_stride, pool_padding, ceil_mode, backend, w_rows=None
):
    _fake_backend_check("conv_relu_maxpool", backend, x)
    shape = _conv_relu_maxpool_shape(x, w, b, stride, padding, pool_kernel, pool_stride, pool_padding, ceil_mode)
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)


def _conv_relu_shape(x, w, b, padding, stride=1):
    """Checks the arguments; returns the (N, Cout, OH, OW) output shape."""
    _check_conv_args("conv_relu", x, w, b)
    if padding < 0:
        raise ValueError(f"conv_relu expects a padding of 0 or more, got {padding}")
    if stride < 1:
        raise ValueError(f"conv_relu expects a stride of 1 or more, got {stride}")
    k = w.shape[-1]
    oh, ow = (geometry.conv_out(s, k, stride, padding) for s in x.shape[2:])
    if min(oh, ow) < 1:
        raise ValueError(f"input {tuple(x.shape[2:])} is too small for a {k}x{k}/{stride} conv (padding {padding})")
    return x.shape[0], w.shape[0], oh, ow


@torch.library.impl(_LIB, "conv_relu", "CompositeExplicitAutograd")
def _conv_relu_impl(x, w, b, padding, backend, stride=1, w_rows=None):
    _conv_relu_shape(x, w, b, padding, stride)
    with torch.no_grad():
        return _kernel("conv_relu", backend, x)(x, w, b, padding, stride, w_rows)


@torch.library.register_fake("inception_fast::conv_relu")
def _conv_relu_fake(x, w, b, padding, backend, stride=1, w_rows=None):
    _fake_backend_check("conv_relu", backend, x)
    shape = _conv_relu_shape(x, w, b, padding, stride)
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)


def _conv_relu_backward(ctx, grad):
    raise RuntimeError(
        "inception_fast::conv_relu is inference only (no backward); for gradients run "
        "F.conv2d(x, w, b, padding=padding).relu() (FusedGoogLeNet does so whenever a gradient is wanted)"
    )


torch.library.register_autograd("inception_fast::conv_relu", _conv_relu_backward, setup_context=_no_context)


def _max_pool2d_shape(x, kernel, stride, padding, ceil_mode):
    """Checks the arguments; returns the (N, C, OH, OW) output shape."""
    if x.dim() != 4:
        raise ValueError(f"max_pool2d expects a 4-D (N, C, H, W) input, got {x.dim()}-D shape {tuple(x.shape)}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"max_pool2d supports float32, float16 and bfloat16 inputs, got {x.dtype}")
    if kernel < 1 or stride < 1 or not 0 <= 2 * padding <= kernel:
        raise ValueError(
            f"invalid max pool: kernel {kernel}, stride {stride}, padding {padding} "
            "(padding must be at most half the kernel)"
        )
    oh, ow = (geometry.pool_out(s, kernel, stride, padding, ceil_mode) for s in x.shape[2:])
    if min(oh, ow) < 1:
        raise ValueError(
            f"input {tuple(x.shape[2:])} is too small for a {kernel}x{kernel}/{stride} max pool (padding {padding})"
        )
    return x.shape[0], x.shape[1], oh, ow


@torch.library.impl(_LIB, "max_pool2d", "CompositeExplicitAutograd")
def _max_pool2d_impl(x, kernel, stride, padding, ceil_mode, backend):
    _max_pool2d_shape(x, kernel, stride, padding, ceil_mode)
    return _kernel("max_pool2d", backend, x)(x, kernel, stride, padding, ceil_mode)


@torch.library.register_fake("inception_fast::max_pool2d")
def _max_pool2d_fake(x, kernel, stride, padding, ceil_mode, backend):
    _fake_backend_check("max_pool2d", backend, x)
    shape = _max_pool2d_shape(x, kernel, stride, padding, ceil_mode)
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)


def _max_pool2d_setup_context(ctx, inputs, output):
    x, kernel, stride, padding, ceil_mode, _backend = inputs
    ctx.save_for_backward(x)
    ctx.pool = (kernel, stride, padding, ceil_mode)


def _max_pool2d_backward(ctx, grad):
    """ATen's max-pool gradient (the argmax is recomputed: the forward keeps none)."""
    (x,) = ctx.saved_tensors
    kernel, stride, padding, ceil_mode = ctx.pool
    with torch.enable_grad():
        leaf = x.detach().requires_grad_()
        y = F.max_pool2d(leaf, kernel, stride, padding, ceil_mode=ceil_mode)
        (grad_x,) = torch.autograd.grad(y, leaf, grad)
    return grad_x, None, None, None, None, None


torch.library.register_autograd(
    "inception_fast::max_pool2d", _max_pool2d_backward, setup_context=_max_pool2d_setup_context
)


def _avgpool_linear_shape(x, w, b):
    """Checks the arguments; returns the (N, J) output shape."""
    if x.dim() != 4:
        raise ValueError(f"avgpool_linear expects a 4-D (N, C, H, W) input, got {x.dim()}-D shape {tuple(x.shape)}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"avgpool_linear supports float32, float16 and bfloat16 inputs, got {x.dtype}")
    if w.dim() != 2:
        raise ValueError(f"avgpool_linear expects a 2-D weight (classes, channels), got shape {tuple(w.shape)}")
    if w.shape[1] != x.shape[1]:
        raise ValueError(
            f"avgpool_linear expects {w.shape[1]} input channels (the weight's), got {x.shape[1]} "
            f"(input shape {tuple(x.shape)})"
        )
    if tuple(b.shape) != (w.shape[0],):
        raise ValueError(f"avgpool_linear expects a bias of shape ({w.shape[0]},), got {tuple(b.shape)}")
    for name, t in (("w", w), ("b", b)):
        if t.device != x.device:
            raise RuntimeError(f"input is on {x.device} but {name} is on {t.device}")
        if t.dtype != x.dtype:
            raise TypeError(f"input dtype {x.dtype} does not match {name} dtype {t.dtype}")
    if min(x.shape[1:]) < 1:
        raise ValueError(f"avgpool_linear needs at least one channel and 1x1 pixels, got shape {tuple(x.shape)}")
    return x.shape[0], w.shape[0]


@torch.library.impl(_LIB, "avgpool_linear", "CompositeExplicitAutograd")
def _avgpool_linear_impl(x, w, b, backend):
    _avgpool_linear_shape(x, w, b)
    return _kernel("avgpool_linear", backend, x)(x, w, b)


@torch.library.register_fake("inception_fast::avgpool_linear")
def _avgpool_linear_fake(x, w, b, backend):
    _fake_backend_check("avgpool_linear", backend, x)
    return x.new_empty(_avgpool_linear_shape(x, w, b))


def avgpool_linear(x, w, b, backend="torch"):
    """F.linear(x.mean((2, 3)), w, b) as one op: the eval-mode head (global average pool, dropout as
    the identity, fc) on an (N, C, H, W) input, channels_last or not; returns (N, J) in x's dtype
    ("triton": backends/triton/head.py).  Inference only."""
    return torch.ops.inception_fast.avgpool_linear(x, w, b, backend)


def conv_relu(x, w, b, padding=0, backend="torch", stride=1, w_rows=None):
    """relu(conv2d(x, w, b, stride=stride, padding=padding)) as one op, returned channels_last
    ("triton": at stride 1 a square odd kernel with padding k // 2, backends/triton/conv_relu.py;
    at a larger stride at most 8 input channels, backends/triton/conv_rows.py, which reads w as
    ``w_rows`` = packing.pack_conv_rows(w, stride) where given, else packs it on each call; the
    other kernels ignore ``w_rows``).  Inference only."""
    return torch.ops.inception_fast.conv_relu(x, w, b, padding, backend, stride, w_rows)


def max_pool2d(x, kernel, stride, padding=0, ceil_mode=False, backend="torch"):
    """F.max_pool2d with a square window and dilation 1, returned channels_last ("triton" and, on CPU,
    "cpp": no index tensor, see backends/triton/maxpool.py and csrc/cpu/max_pool.cpp).
    Differentiable: the backward is ATen's."""
    return torch.ops.inception_fast.max_pool2d(x, kernel, stride, padding, ceil_mode, backend)


def conv_relu_maxpool(
    x,
    w,
    b,
    stride,
    padding,
    pool_kernel=1,
    pool_stride=1,
    pool_padding=0,
    ceil_mode=False,
    backend="torch",
    w_rows=None,
):
    """max_pool2d(relu(conv2d(x, w, b, stride, padding)), ...) as one op, channels_last
    (pool_kernel=1 and pool_stride=1: no pool).  "triton": with ``w_rows`` (packing.pack_conv_rows(w,
    stride)) the aligned-row conv with the pool in its epilogue (backends/triton/conv_rows.py: at
    most 8 input channels, a pool of at most 3x3 with a stride of at most 2), else the gathered
    conv of backends/triton/stem.py; the other kernels ignore ``w_rows``.  Inference only."""
    return torch.ops.inception_fast.conv_relu_maxpool(
        x, w, b, stride, padding, pool_kernel, pool_stride, pool_padding, ceil_mode, backend, w_rows
    )


def inception_block(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, backend="torch"):
    """Inference forward of one block; returns the (N, C_total, H, W) channels_last output."""
    return torch.ops.inception_fast.inception_block(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, backend)[0]


def _check_backward_args(grad_out, x, w_red, w_pool, w3, w5, out, scratch, backend):
    """The forward's checks on x and the weights, and grad_out / out / scratch shaped as the forward made them."""
    if x.dim() != 4:
        raise ValueError(f"inception_block_backward expects a 4-D (N, C, H, W) input, got shape {tuple(x.shape)}")
    no_bias = [w.new_empty(w.shape[:1]) for w in (w_red, w_pool, w3, w5)]  # the backward takes no biases
    _check_block_args(x, w_red, no_bias[0], w_pool, no_bias[1], w3, no_bias[2], w5, no_bias[3], backend)
    n, _, h, w = x.shape
    channels = geometry.block_channels(w_red, w_pool, w3, w5)
    for name, t, c in (("grad_out", grad_out, channels.total), ("out", out, channels.total)) + (
        ("scratch", scratch, channels.reductions),
    ):
        if tuple(t.shape) != (n, c, h, w):
            raise ValueError(f"inception_block_backward: {name} has shape {tuple(t.shape)}, expected {(n, c, h, w)}")
        if t.device != x.device or t.dtype != x.dtype:
            raise TypeError(
                f"inception_block_backward: {name} is {t.dtype} on {t.device}; x is {x.dtype} on {x.device}"
            )


@torch.library.impl(_LIB, "inception_block_backward", "CompositeExplicitAutograd")
def _inception_block_backward_impl(grad_out, x, w_red, w_pool, w3, w5, out, scratch, need_input_grad, backend):
    _check_backward_args(grad_out, x, w_red, w_pool, w3, w5, out, scratch, backend)
    if backend == "auto":
        backend = choices.BACKWARD.choose(grad_out, x, w_red, w_pool, w3, w5, out, scratch)
    kernel = _kernel("inception_block_backward", backend, x)
    if x.shape[0] == 0:  # an empty batch: zero weight gradients, from the ATen chain
        kernel = _backends.get("torch").op("inception_block_backward")
    with torch.no_grad():
        gx, *grads = kernel(grad_out, x, w_red, w_pool, w3, w5, out, scratch, need_input_grad)
    return (x.new_empty(0) if gx is None else gx, *grads)


@torch.library.register_fake("inception_fast::inception_block_backward")
def _inception_block_backward_fake(grad_out, x, w_red, w_pool, w3, w5, out, scratch, need_input_grad, backend):
    _fake_backend_check("inception_block_backward", backend, x, auto=True)
    _check_backward_args(grad_out, x, w_red, w_pool, w3, w5, out, scratch, backend)
    gx = torch.empty_like(x) if need_input_grad else x.new_empty(0)
    biases = (w_red.new_empty(w_red.shape[0]), w_pool.new_empty(w_pool.shape[0]))
    return (
        gx,
        torch.empty_like(w_red),
        biases[0],
        torch.empty_like(w_pool),
        biases[1],
        torch.empty_like(w3),
        w3.new_empty(w3.shape[0]),
        torch.empty_like(w5),
        w5.new_empty(w5.shape[0]),
    )


def _inception_block_setup_context(ctx, inputs, output):
    x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, backend = inputs
    out, scratch = output
    ctx.save_for_backward(x, w_red, w_pool, w3, w5, out, scratch)
    ctx.mark_non_differentiable(scratch)
    ctx.backend = backend


def _refuse_second_derivative() -> None:
    """Raises under create_graph=True: the block ops' gradients depend on their inputs through
    saved tensors that are no differentiable outputs (scratch, pre-BN outputs, batch statistics),
    so a second derivative would come out silently wrong."""
    if torch.is_grad_enabled() and not torch.compiler.is_compiling():
        raise RuntimeError(
            "the fused Inception block has no second derivative (backward with create_graph=True); "
            "use the reference block (inception_fast.Inception) for higher-order gradients"
        )


def _inception_block_backward(ctx, grad_out, _grad_scratch):
    """The block's gradients from the backend the forward was given (``inception_block_backward``)."""
    x, w_red, w_pool, w3, w5, out, scratch = ctx.saved_tensors
    _refuse_second_derivative()
    gx, *grads = torch.ops.inception_fast.inception_block_backward(
        grad_out, x, w_red, w_pool, w3, w5, out, scratch, ctx.needs_input_grad[0], ctx.backend
    )
    return (gx if ctx.needs_input_grad[0] else None, *grads, None)


torch.library.register_autograd(
    "inception_fast::inception_block", _inception_block_backward, setup_context=_inception_block_setup_context
)


# -- train-mode BatchNorm: inception_fast::inception_block_bn_train -------------------------------
#
# The block with every conv followed by a BatchNorm that normalises with the batch's own statistics
# (nn.BatchNorm2d in train mode, or without running statistics).  Nothing folds: the op takes the
# raw conv weights (packed like inception_block's, biases as given, zeros where a conv has none)
# and the six BatchNorms' affine parameters packed in one pair (gamma, beta) in the channel order
# of ``mean`` below.  It returns
#   out     (N, ch1+ch3+ch5+pool, H, W)         channels_last, post BN+ReLU, every branch in its slice
#   scratch (N, ch3red+ch5red, H, W)            channels_last, the two reductions post BN+ReLU
#   pre     (N*H*W*(n_red+ch3+ch5+pool),)       every conv's output before its BN (for the backward): the
#                                               contiguous [N*H*W, c] pieces of geometry.pre_bn_pieces,
#                                               the three 1x1s, the 3x3, the kxk, the pool projection
#   mean, var (n_red+ch3+ch5+pool,) float32     the batch mean and biased variance per channel, same order
# The running-statistics update is the caller's (FusedInception): it needs the modules' momenta.


def bn_train_channels(w_red, w_pool, w3, w5) -> int:
    """Channels of gamma, beta, mean and var (and of ``pre``'s pieces): the three 1x1s, the 3x3, the
    kxk, the pool projection."""
    return w_red.shape[0] + w3.shape[0] + w5.shape[0] + w_pool.shape[0]


_LIB.define(
    "inception_block_bn_train(Tensor x, Tensor w_red, Tensor b_red, Tensor w_pool, Tensor b_pool, "
    "Tensor w3, Tensor b3, Tensor w5, Tensor b5, Tensor gamma, Tensor beta, float eps, str backend) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor)"
)


def _check_bn_train_args(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, gamma, beta, eps, backend):
    _check_block_args(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, backend)
    c_all = bn_train_channels(w_red, w_pool, w3, w5)
    for name, t in (("gamma", gamma), ("beta", beta)):
        if tuple(t.shape) != (c_all,):
            raise ValueError(f"inception_block_bn_train expects {name} of shape ({c_all},), got {tuple(t.shape)}")
        if t.device != x.device:
            raise RuntimeError(f"input is on {x.device} but {name} is on {t.device}; move the module with .to()")
        if t.dtype not in (x.dtype, torch.float32):
            raise TypeError(f"BatchNorm {name} must be float32 or the input's dtype {x.dtype}, got {t.dtype}")
    if not eps > 0:
        raise ValueError(f"BatchNorm eps must be positive, got {eps}")
    n, _, h, w = x.shape
    if n == 0:
        raise ValueError("inception_block_bn_train needs a non-empty batch (no values to take statistics of)")
    if n * h * w == 1:
        # PyTorch's own check and words (F.batch_norm in training); the size is branch 1's BN input.
        size = torch.Size([n, w_red.shape[0] - w3.shape[1] - w5.shape[1], h, w])
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {size}")


def _bn_train_empty(x, w_red, w_pool, w3, w5):
    out, scratch = geometry.empty_outputs(x, w_red, w_pool, w3, w5)
    c_all = bn_train_channels(w_red, w_pool, w3, w5)
    pre = geometry.empty_pre_bn(x, c_all)
    mean = torch.empty(c_all, dtype=torch.float32, device=x.device)
    return out, scratch, pre, mean, torch.empty_like(mean)


@torch.library.impl(_LIB, "inception_block_bn_train", "CompositeExplicitAutograd")
def _inception_block_bn_train_impl(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, gamma, beta, eps, backend):
    _check_bn_train_args(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, gamma, beta, eps, backend)
    x = x.contiguous(memory_format=torch.channels_last)
    if backend == "auto":
        backend = choices.BN_TRAIN.choose(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, gamma, beta, eps)
    with torch.no_grad():
        return _kernel("inception_block_bn_train", backend, x)(
            x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, gamma, beta, eps
        )


@torch.library.register_fake("inception_fast::inception_block_bn_train")
def _inception_block_bn_train_fake(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, gamma, beta, eps, backend):
    _fake_backend_check("inception_block_bn_train", backend, x, auto=True)
    _check_bn_train_args(x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, gamma, beta, eps, backend)
    return _bn_train_empty(x, w_red, w_pool, w3, w5)


# Set by ``inception_block_bn_train(..., before_save=)`` during a recompute: called with (mean, var)
# before the op's tensors are saved for backward.
_BN_TRAIN_BEFORE_SAVE: contextvars.ContextVar = contextvars.ContextVar("inception_fast_before_save", default=None)


def _bn_train_setup_context(ctx, inputs, output):
    x, w_red, _b_red, w_pool, _b_pool, w3, _b3, w5, _b5, gamma, _beta, eps, _backend = inputs
    out, scratch, pre, mean, var = output
    before_save = None if torch.compiler.is_compiling() else _BN_TRAIN_BEFORE_SAVE.get()  # (never set then)
    if before_save is not None:
        before_save(mean, var)
    ctx.save_for_backward(x, w_red, w_pool, w3, w5, gamma, out, scratch, pre, mean, var)
    ctx.eps = eps
    ctx.mark_non_differentiable(scratch, pre, mean, var)


_LIB.define(
    "inception_block_bn_train_backward(Tensor grad_out, Tensor x, Tensor w_red, Tensor w_pool, Tensor w3, "
    "Tensor w5, Tensor gamma, Tensor out, Tensor scratch, Tensor pre, Tensor mean, Tensor var, float eps, "
    "bool need_input_grad) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"
)


@torch.library.impl(_LIB, "inception_block_bn_train_backward", "CompositeImplicitAutograd")
def _inception_block_bn_train_backward_impl(
    grad_out, x, w_red, w_pool, w3, w5, gamma, out, scratch, pre, mean, var, eps, need_input_grad
):
    """The gradients of ``inception_block_bn_train``'s inputs (x, the four packed weights and
    biases, gamma, beta; x's an empty tensor when ``need_input_grad`` is False) from its saved
    input, weights and outputs.  ATen, per group of channels (the three 1x1s together, the 3x3, the
    kxk, the pool projection): the ReLU mask from the saved output (threshold_backward, into a
    contiguous matrix), then BatchNorm's training backward from the saved pre-BN piece and batch
    statistics; the 3x3/kxk through convolution_backward; the three 1x1s' input and weight
    gradients as one GEMM each against the packed weights; the pool branch through the max pool
    (argmax recomputed)."""
    if grad_out.shape != out.shape:
        raise ValueError(
            f"inception_block_bn_train_backward: grad_out has shape {tuple(grad_out.shape)}, "
            f"expected the output's {tuple(out.shape)}"
        )
    with torch.no_grad():  # a gradient with no derivative of its own (_refuse_second_derivative)
        return _bn_train_gradients(
            grad_out, x, w_red, w_pool, w3, w5, gamma, out, scratch, pre, mean, var, eps, need_input_grad
        )


def _bn_train_gradients(grad_out, x, w_red, w_pool, w3, w5, gamma, out, scratch, pre, mean, var, eps, need_input_grad):
    ch1, ch3red, ch5red, ch3, ch5, pool = geometry.block_channels(w_red, w_pool, w3, w5)
    n_red = w_red.shape[0]
    n, cin, h, w = x.shape
    rows = n * h * w
    cl = torch.channels_last
    widths = (n_red, ch3, ch5, pool)
    y_red, y3, y5, y_pool = geometry.pre_bn_pieces(pre, rows, widths)
    invstd = torch.rsqrt(var + eps)
    g2d, out2d, scr2d = geometry.rows(grad_out.contiguous(memory_format=cl)), geometry.rows(out), geometry.rows(scratch)
    starts = [0, n_red, n_red + ch3, n_red + ch3 + ch5]
    stats = [(gamma[s : s + c], mean[s : s + c], invstd[s : s + c]) for s, c in zip(starts, widths)]

    def bn_backward(g_masked, y, group):
        """(grad of pre-BN y, of gamma, of beta) from the masked gradient of the BN output."""
        gam, mu, inv = stats[group]
        return torch.ops.aten.native_batch_norm_backward(
            g_masked, y, gam, None, None, mu, inv, True, eps, [True, True, True]
        )

    def branch_conv(col0, y, group, inp, wgt):
        """BN+ReLU backward of a 3x3/kxk branch (its columns col0: of out), then its conv's."""
        c = y.shape[1]
        masked = torch.ops.aten.threshold_backward(g2d[:, col0 : col0 + c], out2d[:, col0 : col0 + c], 0)
        gy, ggam, gbet = bn_backward(masked, y, group)
        k = wgt.shape[-1]
        gi, gw, gb = torch.ops.aten.convolution_backward(
            gy.view(n, h, w, c).permute(0, 3, 1, 2),
            inp,
            wgt,
            [c],
            [1, 1],
            [k // 2, k // 2],
            [1, 1],
            False,
            [0, 0],
            1,
            [True, True, True],
        )
        return gi, gw, gb, ggam, gbet

    # Dense inputs: oneDNN's weight gradient on a channel slice of the scratch is measurably slower.
    gr3, gw3, gb3, ggam3, gbet3 = branch_conv(ch1, y3, 1, scratch[:, :ch3red].contiguous(memory_format=cl), w3)
    gr5, gw5, gb5, ggam5, gbet5 = branch_conv(ch1 + ch3, y5, 2, scratch[:, ch3red:].contiguous(memory_format=cl), w5)
    # The three 1x1s: their masked post-ReLU gradients side by side in one contiguous matrix.
    masked = torch.empty((rows, n_red), dtype=x.dtype, device=x.device)
    tb = torch.ops.aten.threshold_backward.grad_input
    tb(g2d[:, :ch1], out2d[:, :ch1], 0, grad_input=masked[:, :ch1])
    tb(geometry.rows(gr3), scr2d[:, :ch3red], 0, grad_input=masked[:, ch1 : ch1 + ch3red])
    tb(geometry.rows(gr5), scr2d[:, ch3red:], 0, grad_input=masked[:, ch1 + ch3red :])
    del gr3, gr5  # (each temporary goes once used: under activation checkpointing they set the peak)
    gy_red, ggam_red, gbet_red = bn_backward(masked, y_red, 0)
    gw_red = gy_red.t().mm(geometry.rows(x))
    gb_red = gy_red.sum(0)
    col0 = ch1 + ch3 + ch5
    masked = torch.ops.aten.threshold_backward(g2d[:, col0:], out2d[:, col0:], 0)
    gy_pool, ggam_pool, gbet_pool = bn_backward(masked, y_pool, 3)
    del masked
    pooled, idx = F.max_pool2d_with_indices(x, 3, 1, 1)
    gw_pool = gy_pool.t().mm(geometry.rows(pooled))
    gb_pool = gy_pool.sum(0)
    del pooled
    gx = x.new_empty(0)
    if need_input_grad:
        g_pooled = gy_pool.mm(w_pool).view(n, h, w, cin).permute(0, 3, 1, 2)
        gx = torch.ops.aten.max_pool2d_with_indices_backward(g_pooled, x, [3, 3], [1, 1], [1, 1], [1, 1], False, idx)
        del g_pooled, idx
        gx += gy_red.mm(w_red).view(n, h, w, cin).permute(0, 3, 1, 2)
    g_gamma = torch.cat([ggam_red, ggam3, ggam5, ggam_pool]).to(gamma.dtype)
    g_beta = torch.cat([gbet_red, gbet3, gbet5, gbet_pool]).to(gamma.dtype)
    return gx, gw_red, gb_red, gw_pool, gb_pool, gw3, gb3, gw5, gb5, g_gamma, g_beta


def _inception_block_bn_train_backward(ctx, grad_out, _g_scratch, _g_pre, _g_mean, _g_var):
    """``inception_block_bn_train_backward`` on the saved tensors."""
    _refuse_second_derivative()
    need_x = ctx.needs_input_grad[0]
    gx, *grads = torch.ops.inception_fast.inception_block_bn_train_backward(
        grad_out, *ctx.saved_tensors, ctx.eps, need_x
    )
    return (gx if need_x else None, *grads, None, None)


torch.library.register_autograd(
    "inception_fast::inception_block_bn_train",
    _inception_block_bn_train_backward,
    setup_context=_bn_train_setup_context,
)


def inception_block_bn_train(
    x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, gamma, beta, eps, backend="torch", before_save=None
):
    """One block with train-mode BatchNorm (batch statistics) after every conv; returns
    (out, mean, var): the channels_last block output and the batch mean and biased variance per
    channel in ``pre`` order (see above), for the caller's running-statistics update.

    ``before_save(mean, var)``, where given, runs once: after the op, or, in a forward that the
    autograd engine runs (an activation checkpoint's recompute, in eager mode), before the op's
    tensors are saved for backward.  A non-reentrant checkpoint's recompute stops as soon as the
    last tensor its forward saved is saved again, here, so an update after the op would be skipped
    there, where nn.BatchNorm2d's own update runs."""
    ran, token = [], None
    if before_save is not None and not torch.compiler.is_compiling() and torch._C._current_graph_task_id() != -1:

        def once(mean, var):
            ran.append(True)
            before_save(mean, var)

        token = _BN_TRAIN_BEFORE_SAVE.set(once)
    try:
        out, _scratch, _pre, mean, var = torch.ops.inception_fast.inception_block_bn_train(
            x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, gamma, beta, eps, backend
        )
    finally:
        if token is not None:
            _BN_TRAIN_BEFORE_SAVE.reset(token)
    if before_save is not None and not ran:
        before_save(mean, var)
    return out, mean, var
