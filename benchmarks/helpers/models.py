"""The models and blocks the benchmarks time, all carrying one set of calibrated weights,
cached per configuration; example inputs; and which backends may run on the device."""

from __future__ import annotations

import copy
import os
import warnings
from functools import lru_cache

import torch
from torch import nn

from benchmarks.helpers.settings import DTYPES, ENV_QUICK, FORMATS, STAGE_LAYERS, STEM_LAYERS, Settings, flag
from inception_fast.testing import calibrate

warnings.filterwarnings("ignore", message=".*weight initialization of GoogleNet.*")
# The benchmarks time tuned models: a cold first forward measures at once instead of running ATen's
# computations while the precompile's workers compile (inception_fast.precompiler), so no timed
# forward is one that tunes (benchmarks/first_forward.py times the deferral in fresh processes).
os.environ.setdefault("INCEPTION_FAST_DEFER_TUNING", "0")


@lru_cache(maxsize=4)
def base_torchvision(image_size: int, calib_batch: int) -> nn.Module:
    """torchvision's googlenet, random weights, BatchNorm calibrated (CPU, fp32, eval).

    Calibration is not cosmetic: with torchvision's init the activations decay towards
    denormals through depth, and denormal arithmetic makes CPU timings 10-100x slow.
    """
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True)
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(calib_batch, 3, image_size, image_size, generator=gen)
    return calibrate(model, example)


def _place(module: nn.Module, device, dtype, memory_format) -> nn.Module:
    module = module.to(device=device, dtype=dtype)
    if memory_format == torch.channels_last:
        module = module.to(memory_format=torch.channels_last)
    return module.eval()


_MODEL_CACHE: dict = {}


def build_model(name: str, s: Settings, dtype: str, memory_format: str) -> nn.Module:
    """The model named by a ThroughputCase, on the benchmark device (cached per config).

    Every model carries the same (calibrated) weights as the torchvision one.  Raises
    ``BackendUnavailable`` for a fused backend that does not run on the device.
    """
    key = (name, str(s.device), dtype, memory_format, s.image_size)
    if key in _MODEL_CACHE:
        return _MODEL_CACHE[key]
    base = base_torchvision(s.image_size, s.calib_batch)
    if name in ("torchvision", "tv_compile", "tv_compile_ro"):
        model = copy.deepcopy(base)
    elif name == "reference":
        from inception_fast import GoogLeNet

        model = GoogLeNet(1000, variant="torchvision", aux_logits=False, init_weights=False)
        model.load_state_dict(base.state_dict())
    elif name.startswith("fused_"):
        backend = name[len("fused_") :]
        require_backend(backend, s.device)
        from inception_fast import FusedGoogLeNet

        model = FusedGoogLeNet.from_torchvision(copy.deepcopy(base), backend=backend)
    else:
        raise ValueError(f"unknown model {name!r}")
    model = _place(model, s.device, DTYPES[dtype], FORMATS[memory_format])
    _MODEL_CACHE[key] = model
    return model


_BLOCK_CACHE: dict = {}


def tv_block(name: str, s: Settings, dtype: str) -> nn.Module:
    """A calibrated torchvision block (or the stem as a Sequential), channels_last on the device."""
    key = ("tv", name, str(s.device), dtype, s.image_size)
    if key not in _BLOCK_CACHE:
        base = base_torchvision(s.image_size, s.calib_batch)
        if name == "stem":
            mod = nn.Sequential(*(copy.deepcopy(getattr(base, n)) for n in STEM_LAYERS))
        else:
            mod = copy.deepcopy(getattr(base, name))
        _BLOCK_CACHE[key] = _place(mod, s.device, DTYPES[dtype], torch.channels_last)
    return _BLOCK_CACHE[key]


def tv_stage(name: str, s: Settings, dtype: str) -> nn.Module:
    """A stage outside the blocks (settings.STAGES) as torchvision runs it: its calibrated layers
    in a Sequential (BatchNorm unfolded; the head with torchvision's flatten), channels_last."""
    key = ("tv_stage", name, str(s.device), dtype, s.image_size)
    if key not in _BLOCK_CACHE:
        base = base_torchvision(s.image_size, s.calib_batch)
        layers = [copy.deepcopy(getattr(base, n)) for n in STAGE_LAYERS[name]]
        if name == "head":
            layers.insert(1, nn.Flatten(1))
        _BLOCK_CACHE[key] = _place(nn.Sequential(*layers), s.device, DTYPES[dtype], torch.channels_last)
    return _BLOCK_CACHE[key]


def fused_block(name: str, backend: str, s: Settings, dtype: str) -> nn.Module:
    """FusedInception (BN folded) from the calibrated torchvision block, channels_last on the device."""
    key = ("fused", name, backend, str(s.device), dtype, s.image_size)
    if key not in _BLOCK_CACHE:
        require_backend(backend, s.device)
        from inception_fast import FusedInception

        base = base_torchvision(s.image_size, s.calib_batch)
        mod = FusedInception.from_torchvision(copy.deepcopy(getattr(base, name)), backend=backend)
        _BLOCK_CACHE[key] = _place(mod, s.device, DTYPES[dtype], torch.channels_last)
    return _BLOCK_CACHE[key]


def fused_stem(s: Settings, dtype: str, backend: str = "torch"):
    """A FusedGoogLeNet with ``backend`` whose stem (BN folded convs) the block benchmark times
    through ``model._stem``: conv1 to maxpool2 (the forward itself calls ``_stem_body``, conv1 to
    conv3, and may fold maxpool2 into 3a where FOLD_CHOICE measured that faster; the stem has no
    public module)."""
    key = ("fused_stem", str(s.device), dtype, s.image_size, backend)
    if key not in _BLOCK_CACHE:
        from inception_fast import FusedGoogLeNet

        require_backend(backend, s.device)
        base = base_torchvision(s.image_size, s.calib_batch)
        _BLOCK_CACHE[key] = _place(
            FusedGoogLeNet.from_torchvision(copy.deepcopy(base), backend=backend),
            s.device,
            DTYPES[dtype],
            torch.channels_last,
        )
    return _BLOCK_CACHE[key]


class BackendUnavailable(RuntimeError):
    pass


def require_backend(backend: str, device: torch.device) -> None:
    """Raises BackendUnavailable (with the registry's reason) unless ``backend`` runs on ``device``.

    Triton on a CPU is its interpreter (seconds per block): it only runs in quick mode, where
    the point is that the benchmark code works, not what it measures."""
    from inception_fast import backends

    if backend == "auto":
        return
    why = backends.availability(backend, device)
    if why is not None:
        raise BackendUnavailable(f"backend {backend!r} unavailable on {device}: {why}")
    if backend == "triton" and torch.device(device).type == "cpu" and not flag(ENV_QUICK):
        raise BackendUnavailable("triton on CPU is the interpreter: timed only with --quick")


def example_input(
    batch: int, channels: int, h: int, w: int, device, dtype, memory_format, seed: int = 0, nonnegative: bool = False
) -> torch.Tensor:
    gen = torch.Generator(device=device).manual_seed(seed)
    shape = (batch, channels, h, w)
    if nonnegative:  # block inputs are post-ReLU activations
        x = torch.rand(shape, generator=gen, device=device, dtype=torch.float32)
    else:
        x = torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
    return x.to(dtype).contiguous(memory_format=memory_format)
