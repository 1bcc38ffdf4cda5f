"""The project's ONE tolerance table and its comparisons (inception_fast.testing).

Every parity test in the project goes through these helpers, so a bug here weakens them all at
once without failing any: these tests pin the table, the error measure's edge cases (NaN, inf,
shapes, an all-zero reference), check_close's boundary, same_bits' bit-level rules and what
calibrate promises (the exact batch statistics, activations that do not vanish with depth)."""

import copy
import math

import pytest
import torch
from torch import nn

from inception_fast import GoogLeNet
from inception_fast.testing import TOLERANCE, calibrate, check_close, reduced_precision_bound, rel_error, same_bits


def test_the_tolerance_table_is_pinned():
    """Loosening any entry weakens every test that reads it: change it here, with its reason, too."""
    assert TOLERANCE == {"fp32": 1e-5, "same_ops": 1e-6, "tf32": 5e-3, "low_precision_factor": 2.0}
    # What the fp32 bound must tell apart: fp32 rounding passes, fp16 rounding (~3e-4) fails.
    x64 = torch.randn(4096, dtype=torch.float64)
    check_close(x64.float(), x64, TOLERANCE["same_ops"])
    with pytest.raises(AssertionError, match="exceeds"):
        check_close(x64.half(), x64, TOLERANCE["fp32"])


def test_rel_error_is_the_l2_error_over_the_references_norm_in_float64():
    ref = torch.tensor([3.0, 4.0])
    assert rel_error(2 * ref, ref) == pytest.approx(1.0)  # not over ‖out‖ (0.5)
    assert rel_error(ref + torch.tensor([3.0, 4.0]) / 5, ref) == pytest.approx(0.2)
    assert rel_error(torch.ones(4) * 2, torch.ones(4)) == pytest.approx(1.0)  # L2, not max-abs (0.5)
    x64 = torch.randn(64, dtype=torch.float64) + 3
    assert rel_error(x64 * (1 + 1e-12), x64) == pytest.approx(1e-12, rel=1e-3)  # not rounded to fp32
    assert rel_error(x64, x64 * (1 + 1e-12)) == pytest.approx(1e-12, rel=1e-3)


@pytest.mark.parametrize(
    "out,ref",
    [
        ([1.0, float("nan")], [1.0, 2.0]),
        ([1.0, float("inf")], [1.0, 2.0]),  # inf / ‖ref‖ would be inf: NaN, as documented
        ([1.0, float("-inf")], [1.0, 2.0]),
        ([1.0, 2.0], [1.0, float("inf")]),
        ([1.0, float("inf")], [1.0, float("inf")]),
        ([1.0, float("nan")], [1.0, float("nan")]),
    ],
)
def test_rel_error_is_nan_where_either_side_is_not_finite(out, ref):
    err = rel_error(torch.tensor(out), torch.tensor(ref))
    assert math.isnan(err)
    with pytest.raises(AssertionError, match="relative error nan exceeds"):
        check_close(torch.tensor(out), torch.tensor(ref), 1e30)


def test_rel_error_refuses_other_shapes_and_an_all_zero_reference():
    x = torch.randn(6)
    for out in (x.reshape(1, 6), x.reshape(6, 1), x[:5]):
        with pytest.raises(AssertionError, match=r"shape mismatch: \(.*\) vs \(6,\)"):
            rel_error(out, x)
    for out in (torch.zeros(3), torch.ones(3)):  # a zero output matches a zero reference: still refused
        with pytest.raises(AssertionError, match="reference is all zeros"):
            rel_error(out, torch.zeros(3))


def test_check_close_passes_at_the_tolerance_and_returns_the_error():
    ref = torch.randn(100, dtype=torch.float64)
    out = ref + 1e-3 * torch.randn(100, dtype=torch.float64)
    err = rel_error(out, ref)
    assert check_close(out, ref, err) == err  # at the bound: passes (<=)
    assert check_close(out, ref, 1.0) == err  # the error, not the tolerance
    with pytest.raises(AssertionError, match=r"^weights: relative error .* exceeds"):
        check_close(out, ref, err * (1 - 1e-9), what="weights")


def test_same_bits_signs_nan_and_dtypes():
    nan = float("nan")
    x = torch.tensor([1.0, -0.0, nan, float("-inf")])
    assert same_bits(x, x.clone())
    plus_zero = x.clone()
    plus_zero[1] = 0.0
    assert not same_bits(plus_zero, x)  # +0.0 for -0.0
    other_nan = x.clone().view(torch.int32)
    other_nan[2] ^= 1  # another NaN payload: still NaN where the reference has NaN
    assert same_bits(other_nan.view(torch.float32), x)
    filled = x.nan_to_num(0.0)
    assert not same_bits(filled, x) and not same_bits(x, filled)  # a 0 for a NaN, either way round
    assert not same_bits(x.reshape(1, 4), x) and not same_bits(x[:3], x)
    zeros16 = torch.zeros(3, dtype=torch.float16)
    assert not same_bits(zeros16, zeros16.view(torch.bfloat16))  # the same bits, another dtype
    assert not same_bits(x.double(), x)
    ints = torch.arange(4)
    assert same_bits(ints, ints.clone()) and not same_bits(ints + 1, ints)


def test_same_bits_compares_the_real_and_imaginary_parts_each():
    z = torch.complex(torch.tensor([1.0, float("nan")]), torch.tensor([2.0, 3.0]))
    assert same_bits(z, z.clone())
    w = z.clone()
    w.imag[1] = 4.0  # NaN in the real part only: the imaginary part still counts
    assert not same_bits(w, z)
    zc = torch.complex(torch.randn(3), torch.randn(3)).conj()  # a lazily conjugated view
    assert same_bits(zc, zc.resolve_conj()) and not same_bits(zc, zc.conj())


def test_reduced_precision_bound_is_the_factor_times_the_references_error_never_below_fp32():
    x64 = torch.randn(4096, dtype=torch.float64)
    own = rel_error(x64.bfloat16(), x64)
    assert reduced_precision_bound(x64.bfloat16(), x64) == pytest.approx(TOLERANCE["low_precision_factor"] * own)
    exact = torch.arange(1.0, 9.0, dtype=torch.float64)  # every value exact in bfloat16: own error 0
    assert reduced_precision_bound(exact.bfloat16(), exact) == TOLERANCE["fp32"]


def _conv_bn():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.3), nn.ReLU())
    bn = model[1]
    bn.running_mean.fill_(5.0)  # stale statistics from an earlier life
    bn.running_var.fill_(9.0)
    bn.num_batches_tracked.fill_(7)
    return model, bn


@pytest.mark.parametrize("steps", [1, 2, 3])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_calibrate_sets_the_exact_batch_statistics_and_restores_the_model(steps, mode):
    model, bn = _conv_bn()
    model.train(mode == "train")
    x = torch.randn(4, 3, 9, 9)
    assert calibrate(model, x, steps=steps) is model
    with torch.no_grad():
        y = model[0](x)
    check_close(bn.running_mean, y.mean((0, 2, 3)), TOLERANCE["fp32"], "running mean")
    check_close(bn.running_var, y.var((0, 2, 3), unbiased=True), TOLERANCE["fp32"], "running var")
    assert not model.training and bn.momentum == 0.3
    assert bool(((bn.weight >= 0.5) & (bn.weight <= 1.5)).all()) and not bool((bn.weight == 1).any())
    assert bool(((bn.bias >= -0.2) & (bn.bias <= 0.3)).all()) and not bool((bn.bias == 0).any())


def test_calibrate_follows_its_seed():
    model, bn = _conv_bn()
    x = torch.randn(2, 3, 9, 9)
    again, other = copy.deepcopy(model), copy.deepcopy(model)
    calibrate(model, x)
    calibrate(again, x, seed=0)
    calibrate(other, x, seed=1)
    assert torch.equal(again[1].weight, bn.weight) and torch.equal(again[1].bias, bn.bias)
    assert not torch.equal(other[1].weight, bn.weight)


def test_calibrate_he_initialises_a_network_without_batchnorm():
    model = nn.Sequential(nn.Conv2d(64, 256, 3), nn.ReLU(), nn.Conv2d(256, 8, 1, bias=False))
    calibrate(model, torch.randn(1, 64, 5, 5))
    for conv in (model[0], model[2]):
        fan_in = conv.weight[0].numel()
        assert conv.weight.std().item() == pytest.approx((2.0 / fan_in) ** 0.5, rel=0.05)
    bias = model[0].bias
    assert bool((bias.abs() <= 0.1).all()) and bias.abs().max().item() > 0.05
    assert not model.training


@pytest.mark.parametrize("variant", ["torchvision", "paper", "d2l"])
def test_calibrated_googlenet_activations_do_not_vanish_with_depth(variant):
    """torchvision's init leaves inception5b's output at ~1e-11 (every comparison would pass):
    calibrated, the last block's output is O(1) for the BatchNorm variant and the two without."""
    net = GoogLeNet(variant=variant)
    x = torch.randn(2, net.in_channels, 64, 64)
    seen = {}
    net.inception5b.register_forward_hook(lambda module, args, out: seen.__setitem__("out", out))
    with torch.no_grad():
        calibrate(net, x)
        net(x)
    rms = seen["out"].pow(2).mean().sqrt().item()
    assert 0.3 < rms < 10, f"{variant}: inception5b's output rms {rms:.2e} after calibrate"
