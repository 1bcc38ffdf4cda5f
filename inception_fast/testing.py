"""Helpers shared by the tests, the main job and the benchmarks.

This module holds the project's ONE tolerance table and error measure, and the
BatchNorm calibration that keeps activations from vanishing with depth (with
torchvision's init, a random googlenet's activations shrink to ~0, and then
every comparison passes).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TOLERANCE", "rel_error", "check_close", "float_bits", "same_bits", "calibrate", "reduced_precision_bound"]

# ‖out − ref‖ / ‖ref‖ allowed, by where the result was computed.
TOLERANCE = {
    # fp32 on CPU (ATen or C++), and Triton under TRITON_INTERPRET=1.
    "fp32": 1e-5,
    # The same fp32 ATen ops in the same order, written twice (our reference against torchvision's
    # network): only the few ops written differently (transform_input) may round differently.
    "same_ops": 1e-6,
    # fp32 on GPU with TF32 tensor cores allowed (cudnn.allow_tf32, PyTorch's default).
    "tf32": 5e-3,
    # fp16/bf16 on GPU, and fp32 through a whole network (where the reference's own fp32
    # rounding, amplified by depth, already reaches ~1e-5): the error against fp64 may be
    # at most this many times the error the reference itself makes in that dtype.
    "low_precision_factor": 2.0,
}


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """‖out − ref‖ / ‖ref‖ in float64; NaN (never passes) when either holds NaN/inf."""
    out64 = out.detach().to(torch.float64).cpu()
    ref64 = ref.detach().to(torch.float64).cpu()
    if out64.shape != ref64.shape:
        raise AssertionError(f"shape mismatch: {tuple(out64.shape)} vs {tuple(ref64.shape)}")
    if not (torch.isfinite(out64).all() and torch.isfinite(ref64).all()):
        return float("nan")
    denom = ref64.norm().item()
    if denom == 0.0:
        raise AssertionError("reference is all zeros: the comparison could not fail")
    return (out64 - ref64).norm().item() / denom


def check_close(out: torch.Tensor, ref: torch.Tensor, tol: float, what: str = "output") -> float:
    """Asserts rel_error(out, ref) <= tol (NaN fails) and returns the error."""
    err = rel_error(out, ref)
    if not err <= tol:  # written so that NaN fails
        raise AssertionError(f"{what}: relative error {err:.3e} exceeds {tol:.1e}")
    return err


_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def float_bits(t: torch.Tensor) -> torch.Tensor:
    """A floating-point or complex tensor's bits as an integer tensor of the same element size (a
    complex one's real and imaginary parts side by side): what bit-for-bit comparisons compare."""
    if t.dtype.is_complex:
        t = torch.view_as_real(t.resolve_conj())
    return t.view(_INT_OF_SIZE[t.element_size()])


def same_bits(out: torch.Tensor, ref: torch.Tensor) -> bool:
    """Whether ``out`` is ``ref`` bit for bit (the dtype, the sign of zero, infinities), NaN exactly
    where ``ref`` has NaN (with any payload): the check for an exact op such as a max pool."""
    if out.shape != ref.shape or out.dtype != ref.dtype:
        return False
    if not (out.dtype.is_floating_point or out.dtype.is_complex):
        return torch.equal(out, ref)
    if out.dtype.is_complex:  # the real and imaginary parts, each bit for bit
        out, ref = torch.view_as_real(out.resolve_conj()), torch.view_as_real(ref.resolve_conj())
    nan = ref.isnan()
    if not torch.equal(out.isnan(), nan):
        return False
    return torch.equal(float_bits(out.masked_fill(nan, 0)), float_bits(ref.masked_fill(nan, 0)))


def reduced_precision_bound(ref_lowp: torch.Tensor, ref_fp64: torch.Tensor) -> float:
    """Tolerance for a result in a dtype whose reference error is itself large (fp16/bf16;
    fp32 through a whole network): factor × the reference's own error in that dtype,
    never tighter than the fp32 bound."""
    own = rel_error(ref_lowp, ref_fp64)
    return max(TOLERANCE["low_precision_factor"] * own, TOLERANCE["fp32"])


@torch.no_grad()
def calibrate(model: nn.Module, example: torch.Tensor, steps: int = 2, seed: int = 0) -> nn.Module:
    """Makes a randomly initialised model a fair test subject.

    Randomises every BatchNorm's affine parameters, then sets the running statistics
    to the exact batch statistics of ``example`` (train-mode forwards with
    momentum=None give a cumulative average), so activations stay O(1) through the
    network.  A network without BatchNorm (paper, d2l) gets He-initialised convs and
    small random biases instead, which keeps ReLU activations at their scale.
    Returns the model in eval mode.
    """
    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                w = torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5
                m.weight.copy_(w)
                if m.bias is not None:
                    m.bias.copy_(torch.empty(m.bias.shape).uniform_(-0.1, 0.1, generator=gen))
    saved_momentum = []
    for bn in bns:
        if bn.weight is not None:  # (affine=False: none to randomise)
            bn.weight.copy_(torch.empty_like(bn.weight, device="cpu").uniform_(0.5, 1.5, generator=gen))
        if bn.bias is not None:
            bn.bias.copy_(torch.empty_like(bn.bias, device="cpu").uniform_(-0.2, 0.3, generator=gen))
        bn.reset_running_stats()
        saved_momentum.append(bn.momentum)
        bn.momentum = None
    was_training = model.training
    if bns:
        model.train()
        for _ in range(steps):
            model(example)
    for bn, m in zip(bns, saved_momentum):
        bn.momentum = m
    model.train(was_training)
    return model.eval()
