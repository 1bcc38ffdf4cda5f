"""Model test cases shared by the layer tests: calibrated reference/fused pairs, the whole-network
tolerance, a dispatch recorder that shows whether the fused block op ran, and the backends that
run an op here."""

import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from inception_fast import FusedGoogLeNet, FusedInception, GoogLeNet, Inception
from inception_fast.testing import TOLERANCE, calibrate, reduced_precision_bound

CL = torch.channels_last
FP32 = TOLERANCE["fp32"]


def _whole_network(group: str):
    """Marks for a GPU test of the whole network that compiles and measures all of its Triton
    kernels: under the GPU suite's pytest-xdist (--dist loadgroup) the tests of ``group`` run one
    after another on one worker, not side by side, each compiling on every core, and each gets 300 s
    under pytest-timeout instead of the suite's 120 s (both marks do nothing without the plugins)."""

    def mark(test):
        return pytest.mark.timeout(300)(pytest.mark.xdist_group(group)(test))

    return mark


# An empty Triton cache of its own: everything compiles.
COLD_NETWORK = _whole_network("cold_network")
# The process's Triton cache: whatever the tests before left in it.
NETWORK = _whole_network("network")


def calibrated_block(cfg, x, batch_norm=True, k=3):
    ref = Inception(*cfg, batch_norm=batch_norm, branch3_kernel=k)
    calibrate(ref, x)
    return ref, FusedInception.from_torchvision(ref, backend="torch").eval()


def calibrated_net(variant="torchvision", size=64, **kw):
    ref = GoogLeNet(variant=variant, **kw)
    calibrate(ref, torch.randn(4, ref.in_channels, size, size))
    return ref, FusedGoogLeNet.from_torchvision(ref, backend="torch").eval()


def net_tolerance(ref, x):
    """fp32 through the whole net: at most 2x the reference's own fp32 error (see TOLERANCE), the
    larger of its errors with ``x`` as given and as channels_last (a fused model computes in
    channels_last, where the CPU's convolution kernels round differently)."""
    with torch.no_grad():
        ref32 = ref(x)
        ref32_cl = ref(x.contiguous(memory_format=torch.channels_last)) if x.dim() == 4 else ref32
        ref64 = copy.deepcopy(ref).double()(x.double())
    assert ref32.std() > 0.05, "reference activations vanished; the comparison could not fail"
    return ref64, max(reduced_precision_bound(r, ref64) for r in (ref32, ref32_cl))


def op_backends(op: str, device="cpu") -> list:
    """The backends that implement ``op`` (an inception_fast op name) and run on ``device`` (on the
    CPU, "triton" under TRITON_INTERPRET=1): what an op test runs torch.library.opcheck on."""
    from inception_fast import backends

    return [name for name in backends.available_backends(device) if op in backends.get(name).kernels]


# How OpRecorder names the fused block op (torch.ops.inception_fast.inception_block).
FUSED_BLOCK_OP = "inception_fast.inception_block"


class OpRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))
