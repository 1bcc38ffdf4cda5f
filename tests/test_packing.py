"""The packing layer: BN folded in fp32 whatever the weights' dtype, and packed weights that never go
stale: the fused modules compute with the weights in force after in-place edits, load_state_dict,
.to(), new Parameters and optimizer steps, also when the weights are inference tensors (built,
moved or loaded under torch.inference_mode()), on every backend that runs here."""

import copy

import pytest
import torch
from model_cases import calibrated_block, calibrated_net, net_tolerance
from torch import nn

from inception_fast import FusedGoogLeNet, FusedInception, GoogLeNet, Inception, available_backends, packing
from inception_fast.backends import onednn_backend
from inception_fast.packing import PackCache, PackedBlock
from inception_fast.testing import TOLERANCE, calibrate, check_close, reduced_precision_bound, rel_error

FP32 = TOLERANCE["fp32"]
CFG = (16, 8, 6, 8, 4, 6, 5)


def _backends():
    return [b for b in ("torch", "cpp", "triton", "onednn") if b in available_backends("cpu")]


def _check_net(out, ref, x, what):
    """fp32 through a whole network: within 2x the reference's own error against fp64."""
    ref64, tol = net_tolerance(ref, x)
    check_close(out, ref64, tol, what)
    return ref(x)


def _block(seed):
    ref = Inception(*CFG)
    calibrate(ref, torch.randn(4, 16, 6, 6), seed=seed)
    return ref


@pytest.mark.parametrize("backend", _backends())
def test_block_built_and_reloaded_under_inference_mode(backend):
    x = torch.randn(2, 16, 6, 6)
    first, second = _block(1), _block(2)
    with torch.inference_mode():
        fused = FusedInception(*CFG, backend=backend).eval()
        fused.load_state_dict(first.state_dict())
        assert fused.branch1.conv.weight.is_inference()
        check_close(fused(x), first(x), FP32, "built under inference_mode")
        fused.load_state_dict(second.state_dict())  # copy_ into inference tensors: no version bump
        check_close(fused(x), second(x), FP32, "after load_state_dict under inference_mode")
        for model in (fused, second):
            model.branch2[1].conv.weight.mul_(0.5)  # in place, under inference_mode
            model.branch4[1].bn.running_var.mul_(3.0)
        check_close(fused(x), second(x), FP32, "after in-place edits under inference_mode")
        before = fused(x)
        for model in (fused, second):
            model.branch3[0].conv.weight[0, 0, 0, 0] += 1.0  # one element
        after = fused(x)
        check_close(after, second(x), FP32, "after a one-element edit")
        assert rel_error(after, before) > 0


@pytest.mark.parametrize("backend", _backends())
def test_network_built_and_reloaded_under_inference_mode(backend):
    size = 12
    x = torch.randn(2, 1, size, size)
    refs = []
    for seed in (1, 2):
        ref = GoogLeNet(variant="d2l", init_weights=False)  # calibrate draws every weight
        calibrate(ref, torch.randn(4, 1, size, size), seed=seed)
        refs.append(ref)
    with torch.inference_mode():
        fused = FusedGoogLeNet(variant="d2l", backend=backend, init_weights=False).eval()
        fused.load_state_dict(refs[0].state_dict())
        fused(x)  # packs (and caches) the first weights
        fused.load_state_dict(refs[1].state_dict())
        ref1 = _check_net(fused(x), refs[1], x, "reloaded under inference_mode")
        assert rel_error(ref1, refs[0](x)) > 1e-2
        for model in (fused, refs[1]):
            model.conv1.conv.weight.mul_(0.5)  # the stem's packed weights
            model.inception4c.branch2[1].conv.weight.mul_(1.5)
        ref2 = _check_net(fused(x), refs[1], x, "after in-place edits under inference_mode")
        assert rel_error(ref2, ref1) > 1e-2


@pytest.mark.parametrize("undone", [False, True], ids=["kept", "undone"])
@pytest.mark.parametrize("backend", _backends())
def test_watched_weights_written_while_packing(backend, undone, monkeypatch):
    """Another thread's load_state_dict of inference-tensor weights (B over A) landing while the
    cache packs, after the first conv is folded, then kept or undone (A again) before the next
    forward: the packed weights hold exactly the bits the cache compares against, so the next
    forward computes with the weights in force, not a mix."""
    x = torch.randn(2, 16, 6, 6)
    first, second = _block(1), _block(2)
    with torch.inference_mode():
        fused = FusedInception(*CFG, backend=backend).eval()
        fused.load_state_dict(first.state_dict())
    fold, folds = packing.fold_conv_bn, []

    def fold_while_written(unit, dtype=None):
        folds.append(unit)
        if len(folds) == 2:  # the other thread's write, once, after the first conv's fold
            with torch.inference_mode():
                fused.load_state_dict(second.state_dict())
        return fold(unit, dtype)

    monkeypatch.setattr(packing, "fold_conv_bn", fold_while_written)
    with torch.inference_mode():
        fused(x)
        assert len(folds) >= 2, "the write did not land during the packing"
        if undone:
            fused.load_state_dict(first.state_dict())
        want = first if undone else second
        check_close(fused(x), want(x), FP32, "the weights in force")


@pytest.mark.parametrize(
    "backend,network",
    # (the whole network's Triton backward takes minutes under the interpreter)
    [(b, False) for b in _backends()] + [(b, True) for b in _backends() if b != "triton"],
)
def test_inference_mode_forward_then_input_gradient(backend, network):
    """A frozen model run once under inference_mode (a validation pass), then given an input that
    wants its gradient (a saliency map, an adversarial attack): the cached packed weights, built
    under inference_mode, can be saved for the backward, and the gradient is the reference's (a
    block), or the whole network's is the one the same fused model gives without that pass (in fp32
    a whole network's input gradient can take another branch of a max pool or ReLU than fp64's
    wherever two values lie within rounding, so it is not held to the reference here)."""
    if network:
        ref, _ = calibrated_net("torchvision", 32)
        fused = FusedGoogLeNet.from_torchvision(ref, backend=backend).eval()
        want_model = FusedGoogLeNet.from_torchvision(ref, backend=backend).eval()
        x = torch.randn(2, 3, 32, 32)
    else:
        ref = _block(4)
        fused = FusedInception.from_torchvision(ref, backend=backend).eval()
        want_model = copy.deepcopy(ref).double()
        x = torch.randn(2, 16, 6, 6)
    for model in (want_model, fused):
        model.requires_grad_(False)
    with torch.inference_mode():
        fused(x)
    grads = []
    for model in (want_model, fused):
        xg = x.to(next(model.parameters()).dtype, copy=True).requires_grad_(True)
        out = model(xg)
        assert out.std() > 0.05, "activations vanished; the comparison could not fail"
        out.square().sum().backward()
        grads.append(xg.grad)
    want, got = grads
    check_close(got, want, FP32, "input gradient")


def test_a_compiled_forward_reads_no_stand_ins(monkeypatch):
    """While torch.compile traces, folding reads no context variable (the stand-ins are set only by
    an eager PackCache build; dynamo before torch 2.14 cannot trace a ContextVar, which would break
    the graph in every block, and fail fullgraph=True)."""

    class TracedNever:
        value = None

        def get(self):
            if torch.compiler.is_compiling():
                raise RuntimeError("the stand-ins were read while tracing")
            return self.value

        def set(self, value):
            self.value = value

        def reset(self, token):
            self.value = None

    monkeypatch.setattr(packing, "_STAND_INS", TracedNever())
    ref = _block(5)
    fused = FusedInception.from_torchvision(ref, backend="torch").eval()
    x = torch.randn(2, 16, 6, 6)
    with torch.no_grad():
        check_close(torch.compile(fused, fullgraph=True, backend="eager")(x), ref(x), FP32)


def test_model_built_outside_inference_mode_keeps_its_cache():
    """Normal tensors keep version counters, also when edited under inference_mode: no copies."""
    ref = _block(3)
    fused = FusedInception.from_torchvision(ref, backend="torch").eval()
    x = torch.randn(1, 16, 5, 5)
    with torch.inference_mode():
        fused(x)
        _, kept, copies, _ = next(iter(fused._pack_cache.snapshot().values()))
        kept = [t for t in kept if isinstance(t, torch.Tensor)]
        assert kept and all(not t.is_inference() for t in kept), "normal sources are aliased"
        assert not copies, "normal sources are not copied: their version counters suffice"
        for model in (fused, ref):
            model.branch1.conv.weight.mul_(2.0)
        check_close(fused(x), ref(x), FP32)


class _Holder(torch.nn.Module):
    def __init__(self, device):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(4, device=device))


def test_inference_tensors_off_cpu_are_rebuilt_every_call():
    """Off the CPU, comparing contents would synchronize with the device: rebuild instead."""
    with torch.inference_mode():
        holder = _Holder("meta")
    builds = []
    cache = PackCache(lambda m, dtype: builds.append(dtype) or m.w * 2, lambda m: [m.w])
    for _ in range(3):
        cache.get(holder, torch.float32)
    assert len(builds) == 3 and not cache.snapshot()
    normal = _Holder("meta")
    for _ in range(3):
        cache.get(normal, torch.float32)
    assert len(builds) == 4, "normal tensors are cached"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_batch_norm_folds_in_fp32_for_low_precision_weights(dtype):
    """A fp16/bf16 model folds its BatchNorms in fp32 and rounds once: every packed weight (stem and
    blocks) equals that of the same values held in fp32, packed to the same dtype.  A fold in the
    weights' own dtype rounds the scale, the product and the shift each; against fp64 that stays
    within the 2x-own-error rule (~1.2x the reference's own error), so it is checked here."""
    _, fused = calibrated_net("torchvision", 32)
    low = fused.to(dtype)
    same_values = copy.deepcopy(low).float()
    with torch.no_grad():
        pairs = [
            (f"stem {i}", a, b)
            for i, (got, want) in enumerate(zip(low._stem_weights(dtype)[:3], same_values._stem_weights(dtype)[:3]))
            for a, b in zip(got, want)
        ]
        for (name, block), other in zip(low.named_modules(), same_values.modules()):
            if isinstance(block, FusedInception):
                pairs += [
                    (f"{name} {field}", a, b)
                    for field, a, b in zip(PackedBlock._fields, block.packed(dtype), other.packed(dtype))
                ]
    assert len(pairs) == 6 + 9 * 8
    for name, got, want in pairs:
        assert got.dtype == want.dtype == dtype, name
        assert torch.equal(got, want), f"{name}: the fold of the {dtype} model differs from the fp32 fold"


@pytest.mark.parametrize(
    "backend",
    ["torch", pytest.param("onednn", marks=pytest.mark.skipif(
        "onednn" not in available_backends("cpu") or not onednn_backend.bf16_supported(),
        reason="oneDNN has no bfloat16 convolutions on this CPU",
    ))],
)  # fmt: skip
def test_each_compute_dtype_keeps_its_own_pack(backend):
    """Float32, then bfloat16 under CPU autocast, then float32 again: each forward computes with the
    weights packed for its own dtype (a pack kept for another dtype would be refused, or compute in
    the wrong one), and the last equals the first bit for bit."""
    ref = _block(seed=11).eval()
    fused = FusedInception.from_torchvision(ref, backend=backend).eval()
    x = torch.randn(2, 16, 6, 6)
    with torch.no_grad():
        first = fused(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low, low_ref = fused(x), ref(x)
        again = fused(x)
        ref64 = copy.deepcopy(ref).double()(x.double())
    check_close(first, ref64, FP32, "float32")
    assert low.dtype == torch.bfloat16
    check_close(low, ref64, reduced_precision_bound(low_ref, ref64), "bfloat16 under autocast")
    assert again.dtype == torch.float32 and torch.equal(again, first)


def test_batch_norm_without_affine_terms_folds():
    """An eval-mode BatchNorm built with affine=False (no weight, no bias) folds as scale 1/std and
    shift -mean/std: the fused block computes what the reference does."""
    ref = Inception(*CFG)
    for unit in [m for m in ref.modules() if isinstance(getattr(m, "bn", None), nn.BatchNorm2d)]:
        unit.bn = nn.BatchNorm2d(unit.bn.num_features, eps=1e-3, affine=False)
    calibrate(ref, torch.randn(4, 16, 6, 6), seed=12)
    assert all(m.weight is None for m in ref.modules() if isinstance(m, nn.BatchNorm2d))
    x = torch.randn(2, 16, 6, 6)
    for backend in _backends():
        fused = FusedInception.from_torchvision(ref, backend=backend).eval()
        with torch.no_grad():
            check_close(fused(x), ref.eval()(x), FP32, f"affine=False BatchNorm folded ({backend})")


def test_packed_weights_never_go_stale():
    cfg = (16, 8, 6, 8, 4, 6, 5)
    x = torch.randn(2, 16, 6, 6)
    ref, fused = calibrated_block(cfg, x)
    with torch.no_grad():
        fused(x)  # caches the packed weights
        fused.branch2[1].conv.weight.mul_(1.5)  # in-place parameter change
        ref.load_state_dict(fused.state_dict())
        check_close(fused(x), ref(x), FP32)
        fused.branch3[0].bn.running_var.mul_(2.0)  # a buffer too
        ref.load_state_dict(fused.state_dict())
        check_close(fused(x), ref(x), FP32)
        other = Inception(*cfg)
        calibrate(other, torch.randn(2, 16, 6, 6), seed=7)
        fused.load_state_dict(other.state_dict())  # load_state_dict
        check_close(fused(x), other(x), FP32)
        fused.to(torch.float64).to(torch.float32)  # .to() replaces storage
        fused.branch1.conv.weight.data = fused.branch1.conv.weight.data * 0.5
        other.branch1.conv.weight.data = other.branch1.conv.weight.data * 0.5
        check_close(fused(x), other(x), FP32)
        # A new Parameter object, and a whole new submodule.
        fused.branch4[1].conv.weight = nn.Parameter(fused.branch4[1].conv.weight * 0.75)
        other.branch4[1].conv.weight = nn.Parameter(other.branch4[1].conv.weight * 0.75)
        check_close(fused(x), other(x), FP32)
        bn = fused.branch2[0].bn
        new_bn = nn.BatchNorm2d(bn.num_features, eps=bn.eps).eval()
        new_bn.running_mean.uniform_(-0.1, 0.1)
        fused.branch2[0].bn = new_bn
        other.branch2[0].bn = copy.deepcopy(new_bn)
        check_close(fused(x), other(x), FP32)


def test_pruned_conv_follows_its_unpruned_weight():
    """torch.nn.utils.prune computes a conv's weight in a forward pre-hook, from weight_orig and the
    mask: the block runs its own modules, so the hook runs, and a change of weight_orig shows."""
    from torch.nn.utils import prune

    cfg = (16, 8, 6, 8, 4, 6, 5)
    x = torch.randn(2, 16, 6, 6)
    ref, fused = calibrated_block(cfg, x)
    for block in (ref, fused):
        prune.l1_unstructured(block.branch2[1].conv, "weight", amount=0.5)
    with torch.no_grad():
        check_close(fused(x), ref(x), FP32)
        for block in (ref, fused):
            block.branch2[1].conv.weight_orig.mul_(-1.0)
        want = ref(x)
        check_close(fused(x), want, FP32)


def test_writes_through_data_need_clear_packed_weights():
    ref, fused = calibrated_net("d2l", 32)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        fused(x)
        for model in (ref, fused):  # .data writes bump no version counter
            model.inception4c.branch2[1].conv.weight.data.mul_(1.5)
            model.conv1.conv.weight.data.mul_(0.5)
        stale = fused(x)
        fused.clear_packed_weights()
        fresh = fused(x)
    ref64, tol = net_tolerance(ref.eval(), x)
    assert rel_error(stale, ref64) > 100 * tol, "the .data write should have been invisible to the cache"
    check_close(fresh, ref64, tol)


def test_replaced_weight_storage_is_not_reused_while_cached():
    # The key holds storage addresses; the cache keeps the storages it was built from alive,
    # so a freed weight's address cannot come back for new weights and look unchanged.
    fused = FusedInception(16, 8, 6, 8, 4, 6, 5, backend="torch").eval()
    x = torch.randn(1, 16, 5, 5)
    with torch.no_grad():
        fused(x)
        w = fused.branch1.conv.weight
        old_ptr = w.data_ptr()
        w.data = w.data * 0.5  # nothing but the cache refers to the old storage now
        kept = [t for entry in fused._pack_cache.snapshot().values() for t in entry[1]]
        held = [t.data_ptr() for t in kept if isinstance(t, torch.Tensor)]
        assert old_ptr in held, "the cache must keep the storage it was built from"
        fresh = [torch.empty_like(w) for _ in range(16)]
        assert all(t.data_ptr() != old_ptr for t in fresh)


def test_optimizer_step_refreshes_eval_output():
    ref, fused = calibrated_net("d2l", 32)
    x = torch.randn(2, 1, 32, 32)
    opt = torch.optim.SGD(fused.parameters(), lr=0.5)
    with torch.no_grad():
        before = fused(x)
    fused.train()
    fused(x).square().mean().backward()
    opt.step()
    fused.eval()
    ref.load_state_dict(fused.state_dict())
    ref64, tol = net_tolerance(ref.eval(), x)
    with torch.no_grad():
        after = fused(x)
    check_close(after, ref64, tol)
    assert rel_error(after, before) > 100 * tol, "the step should have changed the output"


@pytest.mark.parametrize("make", ["adam_fused", "sgd_fused", "adamw_foreach"])
def test_optimizer_steps_in_eval_mode_refresh_the_cache(make):
    """Fine-tuning with frozen BatchNorm keeps the whole model in eval mode, so no train()/eval()
    switch repacks; a fused optimizer's step leaves the version counters alone.  The step hook
    (inception_fast.packing.weights_epoch) must still make the next no-grad forward repack."""
    ref, fused = calibrated_net("torchvision", 64)
    x = torch.randn(2, 3, 64, 64)
    params = list(fused.parameters())
    opt = {
        "adam_fused": lambda: torch.optim.Adam(params, lr=1e-3, fused=True),
        "sgd_fused": lambda: torch.optim.SGD(params, lr=1e-4, fused=True),
        "adamw_foreach": lambda: torch.optim.AdamW(params, lr=1e-3, foreach=True),
    }[make]()
    target = torch.tensor([3, 7])
    with torch.no_grad():
        before = fused(x)  # packs and caches
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(fused(x), target).backward()
        opt.step()
    ref.load_state_dict(fused.state_dict())
    ref64, tol = net_tolerance(ref.eval(), x)
    with torch.no_grad():
        after = fused(x)
    assert rel_error(ref64, before) > 100 * tol, "the steps should have changed the output"
    check_close(after, ref64, tol, f"eval output after {make} steps")


def test_batch_norm_running_statistics_refresh_the_fold():
    """nn.BatchNorm2d's train-mode update of its running statistics moves no version counter.  A
    BatchNorm switched to train mode on its own (no train()/eval() on the fused module) and run
    through the reference path (the stem's BatchNorm; one of a block's, a mix of modes) must not
    leave the folded weights of the eval forward after it stale.  Those two count no batches
    (num_batches_tracked None), so no counter in the key shows the update: the fused modules drop
    their caches after such a forward."""
    ref, fused = calibrated_net("torchvision", 64)
    x = torch.randn(2, 3, 64, 64)
    shifted = torch.randn(4, 3, 64, 64) * 2 + 1  # statistics far from the calibration's
    for model in (ref, fused):
        model.conv1.bn.num_batches_tracked = None
        model.inception3b.branch3[0].bn.num_batches_tracked = None
    with torch.no_grad():
        fused(x)  # packs and caches
        for model in (ref, fused):
            model.conv1.bn.train()
            model.inception3b.branch3[0].bn.train()
            model(shifted)
            model.conv1.bn.eval()
            model.inception3b.branch3[0].bn.eval()
    ref64, tol = net_tolerance(ref, x)
    with torch.no_grad():
        check_close(fused(x), ref64, tol, "eval output after train-mode BatchNorm updates")
        # The whole model through train() and back too.
        fused(x)
        for model in (ref, fused):
            model.train()
            model(shifted)
            model.eval()
    ref64, tol = net_tolerance(ref, x)
    with torch.no_grad():
        check_close(fused(x), ref64, tol, "eval output after a train-mode forward")


def test_batch_norm_eps_change_refreshes_the_fold():
    ref, fused = calibrated_net("torchvision", 64)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = fused(x)  # packs and caches
        for model in (ref, fused):
            model.conv2.bn.eps = 0.5
            model.inception4b.branch2[1].bn.eps = 0.5  # a per-branch eps: the block's own modules
            model.inception4c.branch1.bn.eps = 0.5
            model.inception4c.branch2[0].bn.eps = 0.5
            model.inception4c.branch2[1].bn.eps = 0.5
            model.inception4c.branch3[0].bn.eps = 0.5
            model.inception4c.branch3[1].bn.eps = 0.5
            model.inception4c.branch4[1].bn.eps = 0.5  # one eps throughout: still folded
        ref64, tol = net_tolerance(ref, x)
        assert rel_error(ref64, before) > 100 * tol, "eps 0.5 should have changed the output"
        check_close(fused(x), ref64, tol, "eval output after eps changes")


def test_batch_norm_trained_outside_the_fused_forward_refreshes_the_fold():
    """A BatchNorm run in train mode on its own (called directly, or shared with another model that
    trains) updates its running statistics with no version counter moved and no fused forward
    seeing it: its num_batches_tracked counter, in the key, shows it."""
    ref, fused = calibrated_net("torchvision", 64)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = fused(x)  # packs and caches
        batches = {c: torch.randn(8, c, 3, 3) * 3 + 2 for c in (64, 208)}  # far from the calibration's
        for model in (ref, fused):
            for bn in (model.conv1.bn, model.inception4a.branch2[1].bn):
                bn.train()
                bn(batches[bn.num_features])
                bn.eval()
        ref64, tol = net_tolerance(ref, x)
        assert rel_error(ref64, before) > 100 * tol, "the BatchNorm updates should have changed the output"
        check_close(fused(x), ref64, tol, "eval output after BatchNorms trained outside the model")
        # Without a batch counter nothing in the key shows such an update: every switch between
        # train and eval mode (the stem's and the blocks') packs afresh.
        for model in (ref, fused):
            for bn in (model.conv1.bn, model.inception4a.branch2[1].bn):
                bn.num_batches_tracked = None
        before = fused(x)  # packs and caches
        for model in (ref, fused):
            model.train()
            for bn in (model.conv1.bn, model.inception4a.branch2[1].bn):
                bn(-batches[bn.num_features])
            model.eval()
        ref64, tol = net_tolerance(ref, x)
        assert rel_error(ref64, before) > 100 * tol, "the BatchNorm updates should have changed the output"
        check_close(fused(x), ref64, tol, "eval output after uncounted BatchNorm updates in train mode")


@pytest.mark.parametrize("backend", _backends())
def test_vector_to_parameters_into_one_buffer_refreshes_the_cache(backend):
    """torch.nn.utils.vector_to_parameters attaches every parameter into one flat buffer with
    ``.data =``; rewriting that buffer and attaching again moves neither a parameter's version
    counter nor its storage address.  Such a source is watched by its bits."""
    from torch.nn.utils import parameters_to_vector, vector_to_parameters

    ref, fused = calibrated_block(CFG, torch.randn(4, 16, 6, 6))
    fused = FusedInception.from_torchvision(ref, backend=backend).eval()
    x = torch.randn(2, 16, 6, 6)
    flat = parameters_to_vector(fused.parameters()).detach().clone()
    with torch.no_grad():
        vector_to_parameters(flat, fused.parameters())
        check_close(fused(x), ref(x), FP32, "attached into the flat buffer")
        before = fused(x)
        flat.mul_(torch.empty_like(flat).uniform_(0.5, 1.5))  # the evolution-strategies update
        vector_to_parameters(flat, fused.parameters())
        vector_to_parameters(flat, ref.parameters())
        want = ref(x)
        assert rel_error(want, before) > 1e-2, "the update should have changed the output"
        check_close(fused(x), want, FP32, "after the flat buffer was rewritten")


def _write_shared_weights(blocks, net):
    """Another process's in-place steps (spawned: it must be importable from this module)."""
    with torch.no_grad():
        for block in blocks:
            block.branch2[1].conv.weight.mul_(1.5)
            block.branch2[1].bn.running_var.mul_(0.5)
        net.conv1.conv.weight.mul_(0.5)  # the stem's packed weights
        net.inception4c.branch2[1].conv.weight.mul_(1.5)


def test_weights_in_shared_memory_written_by_another_process():
    """Hogwild training (torch.multiprocessing): the model's tensors in shared memory, written
    in place by another process, which moves no version counter here.  The fused modules
    compute with the new weights, on every backend, the stem's packed weights too."""
    x = torch.randn(2, 16, 6, 6)
    ref = _block(0)
    blocks = [ref] + [FusedInception.from_torchvision(copy.deepcopy(ref), backend=b).eval() for b in _backends()]
    x_net = torch.randn(2, 1, 12, 12)
    net_ref = GoogLeNet(variant="d2l", init_weights=False)
    calibrate(net_ref, torch.randn(4, 1, 12, 12))
    net = FusedGoogLeNet.from_torchvision(net_ref, backend="torch").eval()
    for model in blocks + [net]:
        model.share_memory()
    with torch.no_grad():
        before = [model(x) for model in blocks], net(x_net)  # packs and caches
    child = torch.multiprocessing.get_context("spawn").Process(target=_write_shared_weights, args=(blocks, net))
    child.start()
    child.join(120)
    assert child.exitcode == 0, f"the writing process failed (exit code {child.exitcode})"
    with torch.no_grad():
        want = ref(x)
        assert rel_error(want, before[0][0]) > 1e-2, "the other process's writes should have changed the output"
        for backend, block in zip(_backends(), blocks[1:]):
            check_close(block(x), want, FP32, f"{backend} block after another process wrote its weights")
        current = GoogLeNet(variant="d2l", init_weights=False)
        current.load_state_dict(net.state_dict())  # the reference with the network's weights as they are now
        want_net = _check_net(net(x_net), current.eval(), x_net, "network after another process wrote its weights")
        assert rel_error(want_net, before[1]) > 1e-2, "the other process's writes should have changed the output"


def test_attribute_tensors_are_in_the_key():
    """A conv bias or BatchNorm affine term that is not a parameter or buffer (a plain tensor
    attribute, as hypernetwork code holds it; a parametrization's computed value) is folded from
    the attribute and keyed by it."""
    from torch.nn.utils import parametrize

    x = torch.randn(2, 16, 6, 6)
    ref, fused = calibrated_block(CFG, x, batch_norm=False)  # convs with biases
    bn_ref, bn_fused = calibrated_block(CFG, x)
    with torch.no_grad():
        fused(x), bn_fused(x)  # pack and cache
        for model in (ref, fused):
            conv = model.branch3[1].conv
            bias = conv.bias.detach() + 0.5
            del conv.bias
            conv.bias = bias  # a plain tensor attribute
        check_close(fused(x), ref(x), FP32, "a conv bias held as a plain attribute")
        for model in (ref, fused):
            model.branch3[1].conv.bias = model.branch3[1].conv.bias - 1.0  # a new attribute value
        check_close(fused(x), ref(x), FP32, "the attribute set anew")

    class Shift(nn.Module):
        def __init__(self):
            super().__init__()
            self.by = nn.Parameter(torch.zeros(()))

        def forward(self, t):
            return t + self.by

    for model in (bn_ref, bn_fused):
        parametrize.register_parametrization(model.branch2[1].bn, "bias", Shift())
    with torch.no_grad():
        check_close(bn_fused(x), bn_ref(x), FP32, "a parametrized BatchNorm bias")
        for model in (bn_ref, bn_fused):
            model.branch2[1].bn.parametrizations.bias[0].by.fill_(0.75)
        want = bn_ref(x)
        check_close(bn_fused(x), want, FP32, "after the parametrization's parameter changed")


def _conv_unit(bias, batch_norm, seed=0):
    """A 3x3 conv (bias or not) → BatchNorm (or none) with every term drawn: a conv bias, a mean, a
    gamma of either sign, variances about eps (so that eps and var-against-std both show)."""
    g = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(5, 7, 3, padding=1, bias=bias)
    bn = nn.BatchNorm2d(7, eps=0.05).eval() if batch_norm else None
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) / 6)
        drawn = [conv.bias] + ([bn.weight, bn.bias, bn.running_mean] if batch_norm else [])
        for t in drawn:
            if t is not None:
                t.copy_(torch.randn(t.shape, generator=g))
        if batch_norm:
            bn.running_var.copy_(torch.rand(7, generator=g) * 0.2 + 0.02)
    return conv, bn


@pytest.mark.parametrize("batch_norm", [True, False], ids=["bn", "no_bn"])
@pytest.mark.parametrize("bias", [True, False], ids=["conv_bias", "no_conv_bias"])
def test_fold_computes_the_conv_then_its_batch_norm(bias, batch_norm):
    """fold_conv_bn of every conv(→BN) form, against the unit itself in float64: a conv with its own
    bias before its BatchNorm (as ``fuse()`` finds in other authors' blocks) folds that bias through
    the BatchNorm's scale; a conv with neither gets a zero bias.  A float64 unit folds in float64
    (the fold works in at least float32): far closer than float32's own rounding."""
    conv, bn = _conv_unit(bias, batch_norm)
    x = torch.randn(2, 5, 6, 6)
    ref = nn.Sequential(conv, *([bn] if batch_norm else []))
    ref64 = copy.deepcopy(ref).double()
    with torch.no_grad():
        want = ref64(x.double())
        w, b = packing.fold_conv_bn((conv, bn))
        assert w.dtype == b.dtype == torch.float32
        err32 = check_close(nn.functional.conv2d(x, w, b, padding=1), want, FP32, "float32 fold")
        if not bias and not batch_norm:
            assert torch.equal(b, torch.zeros(7)), "a conv without bias and BatchNorm folds to a zero bias"
        w64, b64 = packing.fold_conv_bn((ref64[0], ref64[1] if batch_norm else None))
        assert w64.dtype == b64.dtype == torch.float64
        err64 = rel_error(nn.functional.conv2d(x.double(), w64, b64, padding=1), want)
        assert err64 < err32 / 1000, f"float64 fold: {err64:.1e}, as if rounded to float32 ({err32:.1e})"


@pytest.mark.parametrize(
    "name", ["conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"]
)
def test_an_in_place_edit_of_any_one_folded_tensor_refreshes_the_pack(name):
    """Each tensor folding reads, edited in place on its own (nothing else in the key moves), is in
    the key: the next forward computes with it, for the plain packed weights and oneDNN's prepacked
    ones alike."""
    x = torch.randn(2, 16, 6, 6)
    ref, _ = calibrated_block(CFG, x, batch_norm=name != "conv.bias")  # (the conv bias: units without BN)
    for backend in [b for b in ("torch", "onednn") if b in _backends()]:
        fused = FusedInception.from_torchvision(ref, backend=backend).eval()
        want_ref = copy.deepcopy(ref)
        with torch.no_grad():
            before = fused(x)  # packs and caches
            for model in (want_ref, fused):
                t = model.branch3[1].get_parameter(name) if "running" not in name else None
                t = model.branch3[1].get_buffer(name) if t is None else t
                t.mul_(1.5).add_(0.25)
            want = want_ref(x)
            assert rel_error(want, before) > 1e-3, f"the edit of {name} should have changed the output"
            check_close(fused(x), want, FP32, f"{backend} after an in-place edit of {name}")


def _swap_weight(conv, how):
    if how == "data":  # new storage, same Parameter, same version counter
        conv.weight.data = conv.weight.data * 0.5
    else:  # a new Parameter viewing the old storage at its address, sharing its version counter
        conv.weight = nn.Parameter(conv.weight.detach().transpose(2, 3))


@pytest.mark.parametrize("how", ["data", "same_storage"])
def test_a_weight_replaced_after_packing_refreshes_the_pack(how):
    """A weight replaced between two forwards (no .to(), which drops the packs itself) with only one
    part of its key moved: new storage assigned through ``.data`` (the storage address), or a new
    Parameter that is a view of the old storage at the same address (its identity: a kernel
    transposed in place of the old)."""
    x = torch.randn(2, 16, 6, 6)
    ref, fused = calibrated_block(CFG, x)
    with torch.no_grad():
        before = fused(x)  # packs and caches
        old = fused.branch2[1].conv.weight
        key = (id(old), old._version, old.data_ptr())
        for model in (ref, fused):
            _swap_weight(model.branch2[1].conv, how)
        new = fused.branch2[1].conv.weight
        moved = [a != b for a, b in zip(key, (id(new), new._version, new.data_ptr()))]
        assert moved == ([False, False, True] if how == "data" else [True, False, False])
        want = ref(x)
        assert rel_error(want, before) > 1e-3, "the new weight should have changed the output"
        check_close(fused(x), want, FP32, f"after the weight was replaced ({how})")


def test_a_rebuild_drops_the_packs_of_other_dtypes_built_from_older_weights():
    """Packs for two dtypes from the same weights are both kept; once the weights change, the
    rebuild for one dtype drops the other's pack (it could never be served again, and it keeps the
    old storages allocated)."""
    holder = _Holder("cpu")
    builds = []
    cache = PackCache(lambda m, dtype: builds.append(dtype) or m.w.to(dtype), lambda m: [m.w])
    for dtype in (torch.float32, torch.bfloat16, torch.float32, torch.bfloat16):
        cache.get(holder, dtype)
    assert builds == [torch.float32, torch.bfloat16] and set(cache.snapshot()) == {torch.float32, torch.bfloat16}
    with torch.no_grad():
        holder.w.mul_(2.0)
    assert torch.equal(cache.get(holder, torch.float32), torch.full((4,), 2.0))
    assert list(cache.snapshot()) == [torch.float32], "the bfloat16 pack of the old weights should be gone"
