"""Packed-weight staleness: the fused modules compute with the weights in force, also when those
are inference tensors (built, moved or loaded under torch.inference_mode()), on every backend
that runs here."""

import copy

import pytest
import torch

from inception_fast import FusedGoogLeNet, FusedInception, GoogLeNet, Inception, available_backends
from inception_fast.packing import PackCache
from inception_fast.testing import TOLERANCE, calibrate, check_close, reduced_precision_bound, rel_error

FP32 = TOLERANCE["fp32"]
CFG = (16, 8, 6, 8, 4, 6, 5)


def _backends():
    return [b for b in ("torch", "cuda", "triton") if b in available_backends("cpu")]


def _check_net(out, ref, x, what):
    """fp32 through a whole network: within 2x the reference's own error against fp64."""
    ref32 = ref(x)
    assert ref32.std() > 0.05, "reference activations vanished; the comparison could not fail"
    ref64 = copy.deepcopy(ref).double()(x.double())
    check_close(out, ref64, reduced_precision_bound(ref32, ref64), what)
    return ref32


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


def test_model_built_outside_inference_mode_keeps_its_cache():
    """Normal tensors keep version counters, also when edited under inference_mode: no copies."""
    ref = _block(3)
    fused = FusedInception.from_torchvision(ref, backend="torch").eval()
    x = torch.randn(1, 16, 5, 5)
    with torch.inference_mode():
        fused(x)
        kept = next(iter(fused._pack_cache.snapshot().values()))[1]
        assert all(not t.is_inference() for t in kept), "normal sources are aliased, not copied"
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
