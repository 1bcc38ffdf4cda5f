"""Train-mode BatchNorm, fused (inception_fast::inception_block_bn_train): the block and the whole
network against the reference's autograd and nn.BatchNorm2d's running statistics, in fp32 with the
tolerance table; PyTorch's semantics at the edges (batch 1, momentum None, track_running_stats=False,
eval/train switching, per-branch momentum and eps, affine=False); opcheck; the Triton backend's
kernels under the interpreter against the torch backend's."""

import copy
import os

import pytest
import torch
import torch.nn.functional as F
from block_cases import ODD, UNIT8
from model_cases import FP32, FUSED_BLOCK_OP, OpRecorder, op_backends
from torch import nn

from inception_fast import FusedGoogLeNet, FusedInception, GoogLeNet, Inception, available_backends
from inception_fast.reference import BLOCK_CONFIGS
from inception_fast.testing import calibrate, check_close, reduced_precision_bound

BN_OP = "inception_fast.inception_block_bn_train"
SMALL = (24, 8, 6, 10, 4, 6, 5)


def bns(model):
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def trained_pair(cfg, k=3, backend="torch", calib=(4, 6, 5)):
    """A calibrated reference block (random BN affine parameters, running statistics of a batch)
    and a fused copy, both in train mode."""
    ref = Inception(*cfg, branch3_kernel=k)
    calibrate(ref, torch.randn(calib[0], cfg[0], *calib[1:]))
    fused = FusedInception.from_torchvision(ref, backend=backend)
    return ref.train(), fused.train()


def step(model, x, target):
    """(output, [grad of x, grad of every parameter], the ops the forward dispatched)."""
    model.zero_grad()
    x = x.clone().requires_grad_(True)
    with OpRecorder() as rec:
        out = model(x)
    (out * target).sum().backward()
    return out.detach(), [x.grad] + [p.grad for p in model.parameters()], rec.ops


def assert_same_step(ref, fused, x, ran_fused=True, what=""):
    """One training step of both: output, every gradient, and afterwards every buffer."""
    target = torch.randn(x.shape[0], sum(c for c in _out_channels(ref)), *x.shape[2:])
    want, gw, _ = step(ref, x, target)
    assert want.std() > 0.1, "reference activations vanished: the comparison could not fail"
    got, gg, ops = step(fused, x, target)
    assert (ops.count(BN_OP) == 1) == ran_fused, f"{what}: fused op ran {ops.count(BN_OP)} times"
    check_close(got, want, FP32, f"{what} output")
    names = ["input"] + [n for n, _ in ref.named_parameters()]
    for name, g, w in zip(names, gg, gw):
        assert (g is None) == (w is None), name
        if w is not None:
            check_close(g, w, FP32, f"{what} gradient of {name}")
    assert_same_buffers(ref, fused, what)


def _out_channels(block):
    return [block.branch1.conv.out_channels, block.branch2[1].conv.out_channels] + [
        block.branch3[1].conv.out_channels,
        block.branch4[1].conv.out_channels,
    ]


def assert_same_buffers(ref, fused, what=""):
    for (name, b_ref), (_, b) in zip(ref.named_buffers(), fused.named_buffers()):
        if b_ref.is_floating_point():
            check_close(b, b_ref, FP32, f"{what} {name}")
        else:
            assert torch.equal(b, b_ref), f"{what} {name}: {b.item()} != {b_ref.item()}"


# -- the block -----------------------------------------------------------------------------------


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize(
    "cfg,k,shape",
    [(SMALL, 3, (3, 7, 5)), (ODD, 5, (3, 9, 4)), (ODD, 3, (1, 5, 7)), (BLOCK_CONFIGS["inception4e"], 3, (2, 3, 3))],
    ids=["small-k3", "odd-k5", "odd-batch1", "4e"],
)
def test_block_train_steps_match_reference(cfg, k, shape, momentum):
    """Three steps: output, every gradient (input, each conv weight, each BN gamma/beta), and the
    running mean/var and num_batches_tracked after each (momentum a float, and None: the cumulative
    average).  Batch 1 at 5x7: BN has 35 values per channel, PyTorch trains; so must we."""
    ref, fused = trained_pair(cfg, k)
    for bn in bns(ref) + bns(fused):
        bn.momentum = momentum
    for i in range(3):
        assert_same_step(ref, fused, torch.randn(shape[0], cfg[0], *shape[1:]), what=f"step {i}")


@pytest.mark.parametrize("use_reentrant", [False, True], ids=["non-reentrant", "reentrant"])
def test_activation_checkpoint_updates_running_statistics_as_the_reference(use_reentrant):
    """torch.utils.checkpoint around the block: the recompute in the backward runs every
    BatchNorm's running-statistics update again, as nn.BatchNorm2d's does (num_batches_tracked
    moves twice a step).  A non-reentrant checkpoint's recompute stops as soon as the last tensor
    the forward saved is saved again, which for the fused block is its op's: the update comes
    before it.  Output, every gradient and every buffer as the reference's."""
    ref, fused = trained_pair(SMALL)
    x = torch.randn(3, SMALL[0], 7, 5)
    target = torch.randn(3, sum(_out_channels(ref)), 7, 5)
    results = []
    for model in (ref, fused):
        xi = x.clone().requires_grad_(True)
        out = torch.utils.checkpoint.checkpoint(model, xi, use_reentrant=use_reentrant)
        (out * target).sum().backward()
        results.append((out.detach(), [xi.grad] + [p.grad for p in model.parameters()]))
    (want, gw), (got, gg) = results
    check_close(got, want, FP32, "output")
    for g, w in zip(gg, gw):
        check_close(g, w, FP32, "gradient")
    assert_same_buffers(ref, fused, "after the step")
    assert fused.branch1.bn.num_batches_tracked.item() == 2 + 2  # calibrate's two, then the forward and its recompute


def test_batch1_at_1x1_raises_pytorchs_error_and_counts_as_pytorch_does():
    ref, fused = trained_pair(ODD)
    x = torch.randn(1, ODD[0], 1, 1)
    errors = []
    for model in (ref, fused):
        with pytest.raises(ValueError, match="Expected more than 1 value per channel when training") as exc:
            model(x)
        errors.append(str(exc.value))
    assert errors[0] == errors[1]
    assert_same_buffers(ref, fused, "after the error")  # branch 1's counter moved in both
    ref.eval(), fused.eval()  # in eval mode batch 1 at 1x1 is fine (running statistics, folded)
    with torch.no_grad():
        check_close(fused(x), ref(x), FP32, "eval at 1x1")


def test_eval_train_switching_mid_run():
    ref, fused = trained_pair(SMALL, k=5)
    x = lambda: torch.randn(3, SMALL[0], 6, 6)  # noqa: E731
    assert_same_step(ref, fused, x(), what="train 1")
    ref.eval(), fused.eval()
    xe = x()
    with torch.no_grad(), OpRecorder() as rec:
        got = fused(xe)
    assert BN_OP not in rec.ops  # eval: folded running statistics
    with torch.no_grad():
        check_close(got, ref(xe), FP32, "eval after training")
    assert_same_buffers(ref, fused, "eval changes no statistics")
    ref.train(), fused.train()
    assert_same_step(ref, fused, x(), what="train 2")
    assert bns(fused)[0].num_batches_tracked.item() == 2 + 2  # calibrate's two, then two steps


def test_track_running_stats_false_uses_batch_statistics_in_train_and_eval():
    ref, fused = trained_pair(SMALL)
    for model in (ref, fused):
        for name, m in list(model.named_modules()):
            if isinstance(m, nn.BatchNorm2d):
                new = nn.BatchNorm2d(m.num_features, eps=m.eps, track_running_stats=False)
                new.load_state_dict({"weight": m.weight.detach(), "bias": m.bias.detach()})
                parent, _, attr = name.rpartition(".")
                setattr(model.get_submodule(parent), attr, new)
    fused.clear_packed_weights()
    x = torch.randn(3, SMALL[0], 5, 6)
    assert_same_step(ref, fused, x, what="train")
    ref.eval(), fused.eval()
    assert_same_step(ref, fused, x, what="eval")  # no running statistics: batch statistics in eval too


def test_per_branch_momentum_eps_and_affine():
    # different momenta per BatchNorm: the fused op runs, each BN updates with its own momentum
    ref, fused = trained_pair(SMALL)
    for i, (a, b) in enumerate(zip(bns(ref), bns(fused))):
        a.momentum = b.momentum = [0.1, 0.5, None, 0.01, 1.0, 0.3][i]
    for i in range(2):
        assert_same_step(ref, fused, torch.randn(2, SMALL[0], 5, 5), what=f"momenta step {i}")
    # a different eps in one branch: the block runs its own modules, with the same results
    ref.branch3[1].bn.eps = fused.branch3[1].bn.eps = 1e-5
    assert_same_step(ref, fused, torch.randn(2, SMALL[0], 5, 5), ran_fused=False, what="eps")
    # one BatchNorm frozen in eval inside a training block: the modules' own forward too
    ref.branch3[1].bn.eps = fused.branch3[1].bn.eps = 1e-3
    ref.branch2[0].bn.eval(), fused.branch2[0].bn.eval()
    assert_same_step(ref, fused, torch.randn(2, SMALL[0], 5, 5), ran_fused=False, what="frozen")
    # running statistics per branch: branch 1's BatchNorm built without them, branch 3's 1x1's with
    # track_running_stats turned off after (its buffers stay, nn.BatchNorm2d neither reads nor updates
    # them), the pool branch's with momentum None and no batch counter (its average factor is 0)
    ref, fused = trained_pair(SMALL)
    for model in (ref, fused):
        bn = model.branch1.bn
        model.branch1.bn = nn.BatchNorm2d(bn.num_features, eps=bn.eps, track_running_stats=False)
        model.branch3[0].bn.track_running_stats = False
        model.branch4[1].bn.momentum, model.branch4[1].bn.num_batches_tracked = None, None
    for i in range(2):
        assert_same_step(ref, fused, torch.randn(2, SMALL[0], 5, 5), what=f"tracking step {i}")
    # affine=False
    ref, fused = trained_pair(SMALL)
    for model in (ref, fused):
        for unit in (model.branch1, model.branch2[1], model.branch4[1]):
            unit.bn = nn.BatchNorm2d(unit.bn.num_features, eps=1e-3, affine=False)
    assert_same_step(ref, fused, torch.randn(2, SMALL[0], 5, 5), what="affine=False")


@pytest.mark.parametrize("form", ["bias-free", "conv-biases", "one-unit-without-bn"])
def test_foreign_block_train_step(form):
    """A reader's block in train mode: bias-free convs; convs with biases (each 1x1's bias in its
    channels of the batch mean, so of the running mean); one unit without BatchNorm (its own
    modules, not the fused op, which needs six)."""
    from test_recognize import BNInception

    from inception_fast import fuse

    ref = BNInception(10, 4, (5, 6), (3, 4), 3, k=7, bias=form == "conv-biases")
    if form == "one-unit-without-bn":
        ref.d = nn.Sequential(ref.d[0], ref.d[2])
    calibrate(ref, torch.randn(4, 10, 6, 6))
    fused = fuse(copy.deepcopy(ref), backend="torch")
    ref.train(), fused.train()
    x = torch.randn(3, 10, 6, 6, requires_grad=True)
    xf = x.detach().clone().requires_grad_(True)
    with OpRecorder() as rec:
        got = fused(xf)
    assert rec.ops.count(BN_OP) == (form != "one-unit-without-bn")
    want = ref(x)
    target = torch.randn_like(want)
    (want * target).sum().backward()
    (got * target).sum().backward()
    check_close(got, want, FP32, "output")
    check_close(xf.grad, x.grad, FP32, "input gradient")
    for (name, p_ref), p in zip(ref.named_parameters(), fused.parameters()):
        if name.endswith(".0.bias"):  # a conv bias before a train-mode BatchNorm: zero gradient, up to rounding
            continue
        check_close(p.grad, p_ref.grad, FP32, f"gradient of {name}")
    for (name, b_ref), b in zip(ref.named_buffers(), fused.buffers()):
        if b_ref.is_floating_point():
            check_close(b, b_ref, FP32, f"buffer {name}")


@pytest.mark.parametrize("backend", ["cpp", "onednn"])
def test_compiled_cpu_backends_train_through_the_torch_backends_op(backend):
    """The compiled CPU backends have no train-mode BatchNorm kernel: a block built on one trains
    through the torch backend's (the fused op still runs), step for step as the reference."""
    if backend not in available_backends("cpu"):
        pytest.skip(f"the {backend} backend is not built here (INCEPTION_FAST_BUILD_EXT=1 builds it, as CI does)")
    ref, fused = trained_pair(SMALL, backend=backend)
    for i in range(2):
        assert_same_step(ref, fused, torch.randn(3, SMALL[0], 5, 4), what=f"{backend}, step {i}")


def test_an_empty_batch_in_train_mode_is_batch_norms():
    """No images in train mode: what nn.BatchNorm2d does (an empty output, running statistics as they
    were, every counter moved on), not the fused op's refusal of an empty batch."""
    ref, fused = trained_pair(SMALL)
    x = torch.randn(0, SMALL[0], 5, 4)
    want, got = ref(x), fused(x)
    assert got.shape == want.shape == (0, sum(_out_channels(ref)), 5, 4)
    assert_same_buffers(ref, fused, "empty batch")
    assert [bn.num_batches_tracked.item() for bn in bns(fused)] == [3] * 6  # calibrate's two, then this one
    assert_same_step(ref, fused, torch.randn(2, SMALL[0], 5, 4), what="the step after")


def test_sync_batch_norm_trains_through_its_own_modules():
    """nn.SyncBatchNorm in train mode synchronises its statistics across processes inside its own
    forward: a fused block runs its modules then (the fused op would take per-process statistics);
    in eval mode it folds like nn.BatchNorm2d.  Without a process group both compute what
    nn.BatchNorm2d does, so the reference is comparable here."""
    from inception_fast import fuse

    ref = Inception(*SMALL)
    calibrate(ref, torch.randn(4, SMALL[0], 6, 5))
    ref = nn.SyncBatchNorm.convert_sync_batchnorm(ref)
    fused = fuse(copy.deepcopy(ref), backend="torch")
    assert fused is not ref and sum(isinstance(m, nn.SyncBatchNorm) for m in fused.modules()) == 6
    ref.train(), fused.train()
    assert_same_step(ref, fused, torch.randn(3, SMALL[0], 5, 4), ran_fused=False, what="SyncBatchNorm, train")
    ref.eval(), fused.eval()
    x = torch.randn(2, SMALL[0], 5, 4)
    with torch.no_grad(), OpRecorder() as rec:
        got = fused(x)
    assert FUSED_BLOCK_OP in rec.ops, "SyncBatchNorm in eval mode folds"
    with torch.no_grad():
        want = ref(x)
        assert want.std() > 0.1, "reference activations vanished: the comparison could not fail"
        check_close(got, want, FP32, "SyncBatchNorm, eval")


def op_args(cfg=ODD, k=5, shape=(2, 5, 6), dtype=torch.float32, seed=0):
    """Random arguments of inception_block_bn_train (raw weights, conv biases, gamma, beta)."""
    from inception_fast.ops import bn_train_channels

    g = torch.Generator().manual_seed(seed)
    cin, ch1, r3, c3, r5, c5, pool = cfg
    rnd = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    cl = torch.channels_last
    w_red, w_pool = rnd(ch1 + r3 + r5, cin), rnd(pool, cin)
    w3, w5 = rnd(c3, r3, 3, 3).contiguous(memory_format=cl), rnd(c5, r5, k, k).contiguous(memory_format=cl)
    c_all = bn_train_channels(w_red, w_pool, w3, w5)
    args = [
        rnd(shape[0], cin, *shape[1:]).contiguous(memory_format=cl),
        w_red,
        rnd(ch1 + r3 + r5),
        w_pool,
        rnd(pool),
        w3,
        rnd(c3),
        w5,
        rnd(c5),
        rnd(c_all) * 0.3 + 1,
        rnd(c_all) * 0.2,
    ]
    return [a.to(dtype) for a in args]


@pytest.mark.parametrize("backend", op_backends("inception_block_bn_train"))
def test_opcheck_inception_block_bn_train(backend):
    args = op_args()
    for a in args:
        a.requires_grad_(True)
    torch.library.opcheck(torch.ops.inception_fast.inception_block_bn_train.default, (*args, 1e-3, backend))


@pytest.mark.parametrize("need_input_grad", [True, False])
def test_opcheck_inception_block_bn_train_backward(need_input_grad):
    """The backward op on its own (schema, fake kernel, a call under grad mode with inputs that
    want gradients: it records none, as a gradient without a derivative of its own)."""
    x, *rest = op_args()
    out, scratch, pre, mean, var = torch.ops.inception_fast.inception_block_bn_train(x, *rest, 1e-3, "torch")
    w_red, _, w_pool, _, w3, _, w5, _, gamma, _ = rest
    grad = torch.randn_like(out).requires_grad_(True)
    args = (grad, x, w_red, w_pool, w3, w5, gamma, out, scratch, pre, mean, var, 1e-3, need_input_grad)
    torch.library.opcheck(torch.ops.inception_fast.inception_block_bn_train_backward.default, args)


def test_second_derivative_is_refused():
    """create_graph=True through the train-mode BatchNorm block: a clear error, not a silently wrong
    second derivative (its gradients also depend on the saved pre-BN outputs and statistics)."""
    x, *rest = op_args()
    x.requires_grad_(True)
    out = torch.ops.inception_fast.inception_block_bn_train(x, *rest, 1e-3, "torch")[0]
    with pytest.raises(RuntimeError, match="no second derivative"):
        torch.autograd.grad(out.square().sum(), x, create_graph=True)


def test_op_rejects_bad_arguments():
    args = op_args()
    op = torch.ops.inception_fast.inception_block_bn_train
    with pytest.raises(ValueError, match="gamma of shape"):
        op(*args[:9], args[9][:-1], args[10], 1e-3, "torch")
    with pytest.raises(ValueError, match="eps must be positive"):
        op(*args, 0.0, "torch")
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        op(args[0][:1, :, :1, :1], *args[1:], 1e-3, "torch")
    # An empty batch has no values to take statistics of (NaN mean and variance, and NaN running
    # statistics after the caller's update); a gamma or beta in a third dtype is refused by name.
    with pytest.raises(ValueError, match="needs a non-empty batch"):
        op(args[0][:0], *args[1:], 1e-3, "torch")
    with pytest.raises(TypeError, match="gamma must be float32 or the input's dtype"):
        op(*args[:9], args[9].double(), args[10], 1e-3, "torch")
    with pytest.raises(TypeError, match="beta must be float32 or the input's dtype"):
        op(*args[:10], args[10].half(), 1e-3, "torch")
    with pytest.raises(RuntimeError, match="but gamma is on meta"):
        op(*args[:9], args[9].to("meta"), args[10], 1e-3, "torch")
    # float64 runs on the torch backend only (ATen; gradcheck's dtype): any other, "auto" included,
    # refuses it by name, the op and its fake kernel alike
    from torch._subclasses.fake_tensor import FakeTensorMode

    doubled = [t.double() for t in args]
    for backend in ("triton", "auto"):
        with pytest.raises(TypeError, match="float64 on the torch backend"):
            op(*doubled, 1e-3, backend)
        with FakeTensorMode() as mode, pytest.raises(TypeError, match="float64 on the torch backend"):
            op(*(mode.from_tensor(t) for t in doubled), 1e-3, backend)


def test_only_the_output_is_differentiable_and_the_backward_checks_grad_out():
    """scratch, pre and the batch statistics are marked non-differentiable (the backward ignores a
    gradient of them): they require no grad, so a loss through them fails loudly instead of silently
    getting none.  The backward op refuses a grad_out that is not the output's shape by name."""
    x, *rest = op_args()
    x.requires_grad_(True)
    out, *others = torch.ops.inception_fast.inception_block_bn_train(x, *rest, 1e-3, "torch")
    assert out.requires_grad and not any(t.requires_grad for t in others)
    with pytest.raises(RuntimeError, match="does not require grad"):
        others[2].sum().backward()
    w_red, _, w_pool, _, w3, _, w5, _, gamma, _ = rest
    saved = (x.detach(), w_red, w_pool, w3, w5, gamma, out.detach(), *others)
    with pytest.raises(ValueError, match="grad_out has shape"):
        torch.ops.inception_fast.inception_block_bn_train_backward(out.detach()[:, 1:], *saved, 1e-3, True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fake_kernel_gives_the_real_outputs_shapes_dtypes_and_strides(dtype):
    """What torch.compile traces (the fake kernel) is what the op returns: every output's shape,
    dtype and strides, the batch statistics float32 for a bfloat16 input too (opcheck above runs
    in float32 only, where the statistics have the input's dtype)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    args = op_args(ODD, 5, (2, 5, 6), dtype=dtype)
    op = torch.ops.inception_fast.inception_block_bn_train
    real = op(*args, 1e-3, "torch")
    with FakeTensorMode() as mode:
        fake = op(*(mode.from_tensor(a) for a in args), 1e-3, "torch")
    assert real[3].dtype == real[4].dtype == torch.float32
    for name, f, r in zip(("out", "scratch", "pre", "mean", "var"), fake, real):
        assert (f.shape, f.dtype, f.stride()) == (r.shape, r.dtype, r.stride()), name


@pytest.mark.parametrize("k", [3, 5])
def test_op_outputs_match_a_float64_reference_with_conv_biases(k):
    """Every output of the op (out, scratch, the pre-BN pieces, batch mean and biased variance)
    against plain PyTorch in float64 (each conv with its bias, then F.batch_norm on batch
    statistics): nonzero conv biases, which the normalisation cancels in ``out`` but not in
    ``pre`` and the batch mean (the running mean's update)."""
    cin, ch1, r3, c3, r5, c5, pool = SMALL
    args = op_args(SMALL, k, (3, 5, 6))
    x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, gamma, beta = (a.double() for a in args)
    eps = 1e-3
    starts = [0, ch1 + r3 + r5, ch1 + r3 + r5 + c3, ch1 + r3 + r5 + c3 + c5]

    def bn_relu(y, group):
        s = slice(starts[group], starts[group] + y.shape[1])
        return F.batch_norm(y, None, None, gamma[s], beta[s], training=True, eps=eps).relu()

    y_red = F.conv2d(x, w_red[:, :, None, None], b_red)
    red = bn_relu(y_red, 0)
    scratch = red[:, ch1:]
    y3 = F.conv2d(scratch[:, :r3], w3, b3, padding=1)
    y5 = F.conv2d(scratch[:, r3:], w5, b5, padding=k // 2)
    y_pool = F.conv2d(F.max_pool2d(x, 3, 1, 1), w_pool[:, :, None, None], b_pool)
    pres = (y_red, y3, y5, y_pool)
    want = {
        "out": torch.cat([red[:, :ch1], bn_relu(y3, 1), bn_relu(y5, 2), bn_relu(y_pool, 3)], 1),
        "scratch": scratch,
        "pre": torch.cat([y.permute(0, 2, 3, 1).reshape(-1) for y in pres]),  # [N*H*W, c] pieces
        "mean": torch.cat([y.mean((0, 2, 3)) for y in pres]),
        "var": torch.cat([y.var((0, 2, 3), unbiased=False) for y in pres]),
    }
    assert want["out"].std() > 0.1 and b3.abs().min() > 0, "the comparison could not fail"
    got = torch.ops.inception_fast.inception_block_bn_train(*args, eps, "torch")
    for (name, w), g in zip(want.items(), got):
        check_close(g, w, FP32, name)


@pytest.mark.parametrize("off_by,chosen", [(0.0, "fast"), (1e-3, "torch")])
def test_auto_measures_the_bn_train_kernels_and_drops_a_wrong_one(monkeypatch, off_by, chosen):
    """backend="auto" (choices.BN_TRAIN): a kernel faster than ATen's is chosen only if its first
    run agrees with ATen's (here: its batch variance off by ``off_by``)."""
    from inception_fast import backends, choices
    from inception_fast.backends import torch_backend

    def fast(*args):
        out, scratch, pre, mean, var = torch_backend.block_bn_train_forward(*args)
        return out, scratch, pre, mean, var * (1 + off_by)

    kernels = {"inception_block": torch_backend.block_forward, "inception_block_bn_train": fast}
    monkeypatch.setitem(backends._REGISTRY, "fast", backends.Backend("fast", lambda device: None, kernels))
    calls = []

    def timer(fn, device, repeats):
        calls.append(fn)
        fn()
        return 2.0 if len(calls) == 1 else 1.0  # "torch" first, then "fast"

    chooser = choices.BnTrainChoice(order=("torch", "fast"), measure_on=("cpu",), timer=timer)
    monkeypatch.setattr(choices, "BN_TRAIN", chooser)
    args = op_args(ODD, 5, (2, 3, 5))
    got = torch.ops.inception_fast.inception_block_bn_train(*args, 1e-3, "auto")
    (choice,) = chooser.choices().values()
    assert choice.name == chosen
    if off_by:
        assert "disagrees with ATen" in choice.errors["fast"] and "(output 4)" in choice.errors["fast"]
    want = torch.ops.inception_fast.inception_block_bn_train(*args, 1e-3, "torch")
    check_close(got[0], want[0], FP32)


# -- the whole network ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant,size", [("torchvision", 64), ("paper", 64)])
def test_googlenet_train_step_matches_reference(variant, size):
    """One training step with aux heads, fused against reference: the loss, every gradient (input and
    parameters) and, for torchvision's variant, every running statistic afterwards.  fp32 through a
    whole net: within 2x the reference's own fp32 error against fp64 (the tolerance table)."""
    ref = GoogLeNet(variant=variant, aux_logits=True, dropout=0.0, dropout_aux=0.0)
    calibrate(ref, torch.randn(4, 3, size, size))
    fused = FusedGoogLeNet.from_torchvision(ref, backend="torch")
    ref64 = copy.deepcopy(ref).double()
    x, y = torch.randn(3, 3, size, size), torch.randint(0, 1000, (3,))
    results = []
    for model, inp in ((ref, x), (fused, x), (ref64, x.double())):
        model.train()
        model.zero_grad()
        inp = inp.clone().requires_grad_(True)
        with OpRecorder() as rec:
            out = model(inp)
        loss = sum(torch.nn.functional.cross_entropy(o, y) for o in out)
        loss.backward()
        grads = torch.cat([inp.grad.flatten()] + [p.grad.flatten() for p in model.parameters()])
        stats = [b.double().flatten() for n, b in model.named_buffers() if b.is_floating_point()]
        results.append((loss.detach(), grads, torch.cat(stats) if stats else None, rec.ops))
    (l32, g32, s32, _), (lf, gf, sf, ops), (l64, g64, s64, _) = results
    op = BN_OP if variant == "torchvision" else FUSED_BLOCK_OP  # the paper's has no BatchNorm
    assert ops.count(op) == 9, f"the train-mode blocks did not run {op}"
    assert g32.norm() > 0 and (s32 is None or s32.std() > 0)
    check_close(lf.reshape(1), l64.reshape(1), reduced_precision_bound(l32.reshape(1), l64.reshape(1)), "loss")
    check_close(gf, g64, reduced_precision_bound(g32, g64), "gradients")
    if s32 is not None:
        check_close(sf, s64, reduced_precision_bound(s32, s64), "running statistics")
        nbt = [b for n, b in fused.named_buffers() if n.endswith("num_batches_tracked")]
        assert all(b.item() == 3 for b in nbt)  # calibrate's two steps, then this one


# -- the Triton backend under the interpreter ------------------------------------------------------


def _triton_or_skip():
    if "triton" not in available_backends("cpu"):
        pytest.skip("the triton backend does not run here (needs triton and TRITON_INTERPRET=1)")
    assert os.environ.get("TRITON_INTERPRET") == "1"


# Past one tile of the kernels' channels: the reductions' GEMM writes 88 columns and the 3x3's 66
# (two BLOCK_N tiles), the normalise pass covers 80 scratch and 66 output columns (two BLOCK_C
# tiles), and the 3x3 reads 72 input channels (two BLOCK_K steps per tap).
WIDE = (16, 8, 72, 66, 8, 8, 8)


@pytest.mark.parametrize("cfg,k,shape", [(ODD, 5, (3, 5, 7)), (SMALL, 3, (1, 4, 3)), (WIDE, 3, (2, 3, 5))])
def test_triton_matches_torch_backend(cfg, k, shape, poisoned):
    """The op's every output (out, scratch, pre-BN, mean, var) on the triton backend against the torch
    backend's, outputs poisoned first (the backends allocate through geometry.empty_outputs)."""
    _triton_or_skip()
    args = op_args(cfg, k, shape)
    op = torch.ops.inception_fast.inception_block_bn_train
    want = op(*args, 1e-3, "torch")
    got = op(*args, 1e-3, "triton")
    for name, g, w in zip(("out", "scratch", "pre", "mean", "var"), got, want):
        check_close(g, w, FP32, name)


def test_triton_kernels_refuse_too_many_pixels(monkeypatch):
    """The statistics GEMM and the kxk conv refuse N*H*W past their 32-bit pixel index before they
    allocate their tile statistics or launch (expanded tensors: nothing of that size exists)."""
    _triton_or_skip()
    from inception_fast import geometry
    from inception_fast.backends.triton import bn_train

    def no_stats(*args, **kwargs):
        raise AssertionError("tile statistics allocated before the pixel rows were checked")

    monkeypatch.setattr(bn_train, "_tile_stats", no_stats)
    m = geometry.PIXEL_ROW_LIMIT
    b, y2d = torch.zeros(4), torch.zeros(1, 4).expand(m, 4)
    message = f"32 bits; N\\*H\\*W = {m} is too large"
    with pytest.raises(ValueError, match=message):
        bn_train.launch_gemm_stats(torch.zeros(1, 8).expand(m, 8), torch.zeros(4, 8), b, y2d)
    src = torch.zeros(1, 8, 1, 1).expand(m, 8, 1, 1)
    with pytest.raises(ValueError, match=message):
        bn_train.launch_conv_stats(src, torch.zeros(4, 8, 3, 3).contiguous(memory_format=torch.channels_last), b, y2d)


@pytest.mark.parametrize("k,tile", [(3, "interpreter"), (5, "interpreter"), (5, "gpu")])
def test_triton_alignment_units_of_8(k, tile, poisoned, monkeypatch):
    """Every kernel of the triton backend's op takes its row strides and channel counts divided by 8
    here (bn_train's ROW_UNIT and C_UNIT, multiplied back inside; the kxk's weight strides too,
    W_UNIT): every output still matches the torch backend's, with the interpreter's tile and with
    the GPU's (BLOCK_K 32: K of 40 runs a full and a masked step)."""
    _triton_or_skip()
    from inception_fast.backends.triton import _common, bn_train

    if tile == "gpu":
        monkeypatch.setattr(bn_train, "_gemm_config", lambda: bn_train.GPU_CONFIG)

    units, real_launch = [], _common.launch

    def launch(kernel, grid, *args, **kwargs):
        if "ROW_UNIT" in kwargs:
            units.append({u: kwargs[u] for u in ("ROW_UNIT", "W_UNIT", "C_UNIT") if u in kwargs})
        real_launch(kernel, grid, *args, **kwargs)

    monkeypatch.setattr(_common, "launch", launch)
    args = op_args(UNIT8, k, (2, 5, 3))
    op = torch.ops.inception_fast.inception_block_bn_train
    got = op(*args, 1e-3, "triton")
    # 4 GEMMs with statistics and 5 normalise passes (the max pool has no units); the weight units
    # of the 3x3 (16 input channels) and the kxk (8).
    assert len(units) == 9, units
    assert all(u["ROW_UNIT"] == 8 for u in units), units
    # Channel units 8, but 16 for the pass over the kxk's 16 output channels.
    assert [u["C_UNIT"] for u in units] == [8, 8, 8, 8, 8, 8, 16, 8, 8], units
    assert [u["W_UNIT"] for u in units if "W_UNIT" in u] == [16, 8], units
    want = op(*args, 1e-3, "torch")
    for name, g, w in zip(("out", "scratch", "pre", "mean", "var"), got, want):
        check_close(g, w, FP32, name)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # (the interpreter's NumPy)
def test_triton_nan_pixel_propagates_as_the_torch_backends():
    """A NaN input pixel makes the batch statistics of the channels it reaches NaN; BatchNorm + ReLU
    then give NaN there, as F.relu does (PyTorch's ReLU propagates NaN): NaN in every output exactly
    where the torch backend has it, not zeros from a ReLU that drops NaN (the 3x3 and kxk would then
    read zeros from scratch)."""
    _triton_or_skip()
    args = op_args(ODD, 3, (2, 4, 5))
    args[0][0, :, 1, 2] = float("nan")
    op = torch.ops.inception_fast.inception_block_bn_train
    want = op(*args, 1e-3, "torch")
    got = op(*args, 1e-3, "triton")
    for name, g, w in zip(("out", "scratch", "pre", "mean", "var"), got, want):
        assert w.isnan().any(), f"{name}: the reference has no NaN; the case tests nothing"
        assert torch.equal(g.isnan(), w.isnan()), f"{name}: NaN at {g.isnan().sum()} places, torch {w.isnan().sum()}"
        finite = ~w.isnan()
        if finite.any():
            check_close(g[finite], w[finite], FP32, name)


@pytest.mark.parametrize("k", [3, 5])
def test_triton_fp16_statistics_are_of_the_stored_pre_bn_values(k, poisoned):
    """fp16: the mean and (biased) variance the op returns are those of the pre-BN values it
    stored, rounded to fp16 (BatchNorm sees the rounded conv output), within fp32 rounding: the
    statistics of the fp32 accumulator before rounding are off by about 3e-5 to 9e-5 here, and
    the last of the two 64-row tiles holds 41 rows."""
    _triton_or_skip()
    from inception_fast.geometry import pre_bn_pieces

    n, h, w = 3, 5, 7
    args = op_args(ODD, k, (n, h, w), dtype=torch.float16)
    _out, _scratch, pre, mean, var = torch.ops.inception_fast.inception_block_bn_train(*args, 1e-3, "triton")
    widths = (args[1].shape[0], args[5].shape[0], args[7].shape[0], args[3].shape[0])
    stored = torch.cat([p.double() for p in pre_bn_pieces(pre, n * h * w, widths)], 1)
    assert mean.dtype == var.dtype == torch.float32
    check_close(mean, stored.mean(0), FP32, "mean of the stored pre-BN values")
    check_close(var, stored.var(0, unbiased=False), FP32, "variance of the stored pre-BN values")


def test_sm90_compile_stats_of_the_kernels():
    """The triton backend's kernels compiled for sm_90 on 4b at batch 256 in bf16 (no GPU needed; a
    subprocess, since this process runs the interpreter).  4b's reduce rows (296 channels), scratch
    (136) and branch-3 input (24) are multiples of 8 only: without the alignment units the 3x3 and
    kxk spilled 1-1.8 KB at 255 registers (the kxk without cp.async), and the reduce GEMM and the
    normalise pass into the scratch stored element by element.  Each fits the shared memory, spills
    nothing and stores element by element only its tile statistics (one fp32 mean and M2 per
    thread); the GEMMs run on wgmma and stream both operands with cp.async (the bias is their one
    synchronous load); the normalise pass loads y, scale and shift."""
    import json
    from pathlib import Path

    import triton
    from uninterpreted import run_python

    if not (Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas").exists():
        pytest.skip("this triton install ships no ptxas")
    stats = json.loads(run_python("-m", "benchmarks.kernel_stats", "--json", "--block", "bn_train:inception4b").stdout)
    rows = stats["rows"]
    gemms = ["gemm_red", "gemm_pool", "conv3", "conv5"]
    assert [r["launch"] for r in rows] == [*gemms, "bn_relu_scratch", "bn_relu_out"]
    assert {(r["block"], r["batch"], r["dtype"], r["arch"]) for r in rows} == {("inception4b", 256, "bf16", "sm_90")}
    for r in rows:
        what = f"{r['launch']} {r['config']}"
        assert r["shared_bytes"] <= stats["max_shared_bytes"], what
        assert r["registers"] is not None and r["spill_bytes"] == 0, what
        if r["launch"] in gemms:
            assert r["wgmma"] and r["cp_async"] and r["sync_loads"] == 1 and r["scalar_stores"] == 2, what
        else:
            assert r["scalar_stores"] == 0 and r["sync_loads"] == 3, what


def test_triton_block_train_step_matches_reference():
    _triton_or_skip()
    ref, fused = trained_pair(ODD, 5, backend="triton")
    for i in range(2):
        assert_same_step(ref, fused, torch.randn(3, ODD[0], 5, 6), what=f"triton step {i}")


def test_backward_gradcheck_fp64():
    """The op's registered backward (ops._inception_block_bn_train_backward) against numerical
    derivatives in float64, around the torch backend's kernel (the op itself takes fp32/fp16/bf16)."""
    from types import SimpleNamespace

    from inception_fast import backends, ops

    kernel = backends.get("torch").op("inception_block_bn_train")

    class Block(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *args):
            with torch.no_grad():
                outputs = kernel(*args, 1e-3)
            ctx.save_for_backward(args[0], args[1], args[3], args[5], args[7], args[9], *outputs)
            return outputs[0]

        @staticmethod
        def backward(ctx, grad):
            fake = SimpleNamespace(saved_tensors=ctx.saved_tensors, eps=1e-3, needs_input_grad=(True,) * 13)
            return ops._inception_block_bn_train_backward(fake, grad, None, None, None, None)[:11]

    args = op_args((4, 2, 3, 3, 2, 3, 2), 5, (2, 3, 4), dtype=torch.float64, seed=1)
    for a in args:
        a.requires_grad_(True)
    assert torch.autograd.gradcheck(Block.apply, args, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_triton_and_torch_backends_against_fp64(gpu, dtype):
    """On a GPU, both backends' outputs and batch statistics against the torch backend's kernel in
    float64 on the CPU: fp32 within the TF32 bound (PyTorch's default for convolutions, which the
    Triton kernels follow), bf16 within 2x the torch backend's own bf16 error."""
    from inception_fast import backends
    from inception_fast.testing import TOLERANCE

    args = op_args(SMALL, 5, (4, 7, 7))
    want = backends.get("torch").op("inception_block_bn_train")(*[a.double() for a in args], 1e-3)
    op = torch.ops.inception_fast.inception_block_bn_train
    got = {b: op(*[a.to(gpu, dtype) for a in args], 1e-3, b) for b in ("torch", "triton")}
    for i, name in ((0, "out"), (1, "scratch"), (3, "mean"), (4, "var")):
        own = got["torch"][i]
        tol = TOLERANCE["tf32"] if dtype == torch.float32 else reduced_precision_bound(own, want[i])
        check_close(got["triton"][i], want[i], tol, f"triton {name}")
        check_close(own, want[i], max(tol, TOLERANCE["tf32"]), f"torch {name}")


def test_googlenet_without_running_statistics_in_eval():
    """Every BatchNorm built with track_running_stats=False: eval mode normalises with batch
    statistics too (stem, blocks and aux heads), as in PyTorch; nothing folds."""
    ref = GoogLeNet(variant="torchvision", init_weights=False)
    for m in ref.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
    fused = FusedGoogLeNet.from_torchvision(ref, backend="torch")
    for model in (ref, fused):
        gen = torch.Generator().manual_seed(0)
        for name, m in list(model.named_modules()):
            if isinstance(m, nn.BatchNorm2d):
                new = nn.BatchNorm2d(m.num_features, eps=m.eps, track_running_stats=False)
                with torch.no_grad():
                    new.weight.uniform_(0.5, 1.5, generator=gen)
                    new.bias.uniform_(-0.2, 0.3, generator=gen)
                parent, _, attr = name.rpartition(".")
                setattr(model.get_submodule(parent), attr, new)
        model.eval()
    # Batch 4: at 64x64 the last blocks' maps are 2x2, and batch statistics over 2 images (8
    # values a channel) are so ill-conditioned that fp32's own error swings 3x between inputs,
    # and with it the tolerance (2x that error).
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad(), OpRecorder() as rec:
        got = fused(x)
    assert rec.ops.count(BN_OP) == 9
    with torch.no_grad():
        want = ref(x)
        want64 = copy.deepcopy(ref).double()(x.double())
    assert want.std() > 0.1
    check_close(got, want64, reduced_precision_bound(want, want64), "logits")


def test_compile_fullgraph_in_train_mode():
    """torch.compile traces the train-mode block without graph breaks (the op's fake kernel and
    autograd with its backward op, the running-statistics update), with the eager reference's
    outputs and gradients."""
    torch._dynamo.reset()
    ref, fused = trained_pair(SMALL)
    compiled = torch.compile(fused, fullgraph=True, backend="aot_eager")
    for i in range(2):
        x = torch.randn(3, SMALL[0], 6, 5)
        target = torch.randn(3, sum(_out_channels(ref)), 6, 5)
        results = []
        for model in (compiled, ref):
            xr = x.clone().requires_grad_(True)
            out = model(xr)
            results.append((out, torch.autograd.grad((out * target).sum(), [xr, *model.parameters()])))
        (got, got_grads), (want, want_grads) = results
        check_close(got, want, FP32, f"step {i}")
        for name, g, w in zip(["input"] + [n for n, _ in ref.named_parameters()], got_grads, want_grads):
            check_close(g, w, FP32, f"step {i} gradient of {name}")
    assert_same_buffers(ref, fused, "compiled")


def test_autocast_bf16_on_cpu_within_twice_the_references_own_error():
    """Under CPU autocast (bfloat16 convs, float32 BatchNorm parameters and statistics), the block's
    output, input gradient, a BN weight's gradient and running variance, against the float64
    reference: within 2x the reference's own autocast error (the tolerance table's rule).  The
    input is bfloat16, as a block inside an autocast network gets it (the fused op runs)."""
    ref, fused = trained_pair(SMALL)
    ref64 = copy.deepcopy(ref).double()
    x = torch.randn(3, SMALL[0], 6, 5).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fused._bn_plan(x.requires_grad_(True)) == "batch"
    results = []
    for model, inp, autocast in ((ref, x, True), (fused, x, True), (ref64, x.double(), False)):
        inp = inp.detach().clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model(inp)
        out.double().square().sum().backward()
        bn = model.branch2[1].bn
        results.append((out, inp.grad, bn.weight.grad, bn.running_var))
    for i, name in enumerate(("output", "input gradient", "BN weight gradient", "running variance")):
        check_close(results[1][i], results[2][i], reduced_precision_bound(results[0][i], results[2][i]), name)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_autocast_gradient_of_a_float32_input_goes_to_its_own_max(batch_norm):
    """A float32 input under bfloat16 autocast (a block fed by a float32 layer): the reference
    max-pools it as it is, so the pool's gradient goes to the float32 maximum, which casting first
    can tie with a neighbour.  The fused block's input gradient (through the pool branch alone)
    lands where the reference's does, within 2x the reference's own error."""
    torch.manual_seed(0)
    ref = Inception(16, 8, 8, 16, 4, 8, 8, batch_norm=batch_norm)
    calibrate(ref, torch.randn(4, 16, 6, 6))
    fused = FusedInception.from_torchvision(ref, backend="torch")
    ref.train(), fused.train()
    ref64 = copy.deepcopy(ref).double()
    x = torch.randn(4, 16, 6, 6)
    _, i32 = F.max_pool2d_with_indices(x, 3, 1, 1)
    _, i16 = F.max_pool2d_with_indices(x.bfloat16(), 3, 1, 1)
    assert (i32 != i16).any(), "no window where casting first moves the maximum: the test could not fail"
    g = torch.zeros(4, 40, 6, 6, dtype=torch.float64)
    g[:, 32:] = torch.randn(4, 8, 6, 6, dtype=torch.float64)  # the pool branch's channels only
    grads = []
    for model, autocast in ((ref, True), (fused, True), (ref64, False)):
        inp = (x.double() if model is ref64 else x).clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model(inp)
        (out.double() * g).sum().backward()
        grads.append(inp.grad)
    assert torch.equal(grads[1] != 0, grads[0] != 0), "the gradient landed elsewhere than the reference's"
    check_close(grads[1], grads[2], reduced_precision_bound(grads[0], grads[2]), "input gradient")


def test_bn_train_benchmark_runs_and_its_reference_agrees():
    """benchmarks/bench_block_backward.py --op bn_train must not rot: one small block on the CPU, and
    its plain-PyTorch reference computes what the op computes (else its ratios compare unlike)."""
    from benchmarks.bench_block_backward import _block, _bn_train_candidates, run

    (row,) = run("cpu", "fp32", 2, 32, ["inception5a"], 0.0, op="bn_train")
    assert set(row["ms"]) == {"reference", "aten_chain"} and all(v > 0 for v in row["ms"].values())
    reference, op_name, op_args = _bn_train_candidates(_block(BLOCK_CONFIGS["inception4b"], 2, 5, torch.float32, "cpu"))
    want = reference()
    assert want.std() > 0.1, "reference activations vanished: the comparison could not fail"
    out = getattr(torch.ops.inception_fast, op_name)(*op_args, "torch")[0]
    check_close(out, want, FP32, "bench_block_backward's train-mode reference")
