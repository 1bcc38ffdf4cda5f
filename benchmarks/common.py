"""The one helper module of the benchmarks: settings, the case grids, model builders,
work counts from shapes, and the bridge from ``inception_fast.timing.time_fn`` to
pytest-benchmark.

Timing: every benchmark's headline number is ``time_fn``'s median (CUDA events after
a warm-up on GPU, optionally CUDA-graph replays; perf_counter on CPU), stored in the
benchmark's ``extra_info`` (``median_s``, ``images_per_s``) so it lands in the
pytest-benchmark JSON.  pytest-benchmark's own ``stats`` come from a few extra
``benchmark.pedantic`` rounds of the eager call followed by a device synchronize, so
they are wall-clock times of a finished call (launch overhead included).

Settings come from environment variables (the conftest's --quick/--compile/
--cuda-graph options set the same variables):

* ``INCEPTION_FAST_BENCH_QUICK=1``: tiny sizes and few repeats (CI smoke run).
* ``INCEPTION_FAST_BENCH_COMPILE=1``: add the torch.compile anchor (torchvision's
  googlenet, default mode, ``torch._inductor.config.freezing = True``).
* ``INCEPTION_FAST_BENCH_CUDA_GRAPH=1``: time CUDA-graph replays instead of eager calls.
* ``INCEPTION_FAST_BENCH_DEVICE=cpu|cuda``: force the device (default: cuda if present).
* ``INCEPTION_FAST_BENCH_BATCHES=256,1`` / ``INCEPTION_FAST_BENCH_DTYPES=bf16``: narrow
  the throughput grid (for short GPU windows).
* ``INCEPTION_FAST_BENCH_BLOCK_BATCH=1``: the per-block benchmarks' batch (default 256 on a GPU).
* ``INCEPTION_FAST_BENCH_DEADLINE=<unix time>``: benchmarks not started by then skip
  (gpu_suite.sh uses it so a time-boxed run still writes its JSON).
* ``INCEPTION_FAST_BENCH_PROFILE=1``: the throughput benchmark also records, for the headline
  configuration (largest batch, first dtype, channels_last), where one forward's device time
  goes (``kernel_profile``: torch.profiler, time per kernel name) and how much of the timed
  forward the device was busy (``busy``: kernel time over the measured time; well under 1
  means the forward waits on the host).

Run as ``python -m benchmarks.common`` (from the repository root) to print the
environment as JSON, including the results base name used by gpu_suite.sh.
"""
from __future__ import annotations

import copy
import datetime as _dt
import json
import os
import platform
import re
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Optional

import torch
from torch import nn

from benchmarks.report import MODEL_LABELS  # noqa: F401  (report.py is stdlib-only, so it owns the labels)
from inception_fast.testing import calibrate
from inception_fast.timing import Timing, time_fn

# Ceilings measured on the H100 (shared/GPU.md).  Roofline fractions use them only for
# bf16/fp16 work on a CUDA device; elsewhere they would mean nothing.
PEAK_BF16_FLOP_PER_S = 779e12  # dense bf16 GEMM, FLOP/s (1 MAC = 2 FLOP)
PEAK_HBM_BYTE_PER_S = 2.98e12  # device-to-device copy, read + write bytes counted

ENV_QUICK = "INCEPTION_FAST_BENCH_QUICK"
ENV_COMPILE = "INCEPTION_FAST_BENCH_COMPILE"
ENV_CUDA_GRAPH = "INCEPTION_FAST_BENCH_CUDA_GRAPH"
ENV_DEVICE = "INCEPTION_FAST_BENCH_DEVICE"
ENV_BATCHES = "INCEPTION_FAST_BENCH_BATCHES"
ENV_BLOCK_BATCH = "INCEPTION_FAST_BENCH_BLOCK_BATCH"
ENV_DTYPES = "INCEPTION_FAST_BENCH_DTYPES"
ENV_DEADLINE = "INCEPTION_FAST_BENCH_DEADLINE"  # unix time after which no new benchmark starts
ENV_PROFILE = "INCEPTION_FAST_BENCH_PROFILE"

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
BACKENDS = ("torch", "triton", "cuda")
BLOCKS = ("inception3a", "inception3b", "inception4a", "inception4b", "inception4c",
          "inception4d", "inception4e", "inception5a", "inception5b")
STEM_LAYERS = ("conv1", "maxpool1", "conv2", "conv3", "maxpool2")


warnings.filterwarnings("ignore", message=".*weight initialization of GoogleNet.*")


# ---------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------
def flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def bench_device() -> torch.device:
    forced = os.environ.get(ENV_DEVICE, "").strip()
    if forced:
        return torch.device(forced)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class Settings:
    device: torch.device
    quick: bool
    cuda_graph: bool
    compile: bool
    image_size: int
    batches: tuple
    dtypes: tuple
    formats: tuple
    block_batch: int
    block_dtype: str
    compile_batch: int
    calib_batch: int
    warmup: int
    repeats: int
    min_time_s: float
    rounds: int  # pytest-benchmark pedantic rounds (wall clock, synchronized)


def _env_list(name: str) -> Optional[tuple]:
    values = tuple(v.strip() for v in os.environ.get(name, "").split(",") if v.strip())
    return values or None


def settings() -> Settings:
    device = bench_device()
    quick = flag(ENV_QUICK)
    gpu = device.type == "cuda"
    if quick:
        image, batches, block_batch = 64, (2,), 2
        warmup, repeats, min_time, rounds, calib = 1, 2, 0.0, 1, 2
    elif gpu:
        image, batches, block_batch = 224, (256, 64, 1), 256
        warmup, repeats, min_time, rounds, calib = 5, 20, 0.1, 5, 8
    else:
        image, batches, block_batch = 224, (8, 1), 8
        warmup, repeats, min_time, rounds, calib = 2, 5, 0.0, 2, 4
    dtypes = ("bf16", "fp32") if gpu else ("fp32",)  # no fast bf16 convs to speak of on CPU
    batches = tuple(int(b) for b in (_env_list(ENV_BATCHES) or batches))
    block_batch = int(os.environ.get(ENV_BLOCK_BATCH) or block_batch)
    dtypes = _env_list(ENV_DTYPES) or dtypes
    for d in dtypes:
        if d not in DTYPES:
            raise ValueError(f"{ENV_DTYPES}: unknown dtype {d!r}; choose from {', '.join(DTYPES)}")
    return Settings(
        device=device, quick=quick, cuda_graph=flag(ENV_CUDA_GRAPH) and gpu, compile=flag(ENV_COMPILE),
        image_size=image, batches=batches, dtypes=dtypes, formats=("channels_last", "contiguous"),
        block_batch=block_batch, block_dtype="bf16" if gpu else "fp32", compile_batch=max(batches),
        calib_batch=calib, warmup=warmup, repeats=repeats, min_time_s=min_time, rounds=rounds,
    )


# ---------------------------------------------------------------------------------------
# case grids (ids must stay free of the word "compile" except for the compile anchor,
# so that `-k compile` selects exactly it)
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ThroughputCase:
    model: str
    dtype: str
    memory_format: str
    batch: int

    @property
    def id(self) -> str:
        return f"{self.model}-{self.dtype}-{self.memory_format}-b{self.batch}"


def throughput_cases(s: Optional[Settings] = None) -> list:
    """Grouped so that all models of one (dtype, format, batch) run side by side,
    headline configurations first (a cut-short run still compares like with like)."""
    s = s or settings()
    models = ["torchvision", "reference", *(f"fused_{b}" for b in BACKENDS)]
    if s.device.type == "cuda":  # off CUDA, auto is the torch backend
        models.append("fused_auto")
    cases = []
    for dtype in s.dtypes:
        for fmt in s.formats:
            for batch in s.batches:
                cases += [ThroughputCase(m, dtype, fmt, batch) for m in models]
    if s.compile:
        # One configuration only: each new shape is another ~30 s compile.
        cases.append(ThroughputCase("tv_compile", s.dtypes[0], "channels_last", s.compile_batch))
    return cases


@dataclass(frozen=True)
class BlockCase:
    block: str  # "stem" or an Inception block name
    impl: str   # torchvision | torch | triton | cuda | launch1_ext | launch1_triton

    @property
    def id(self) -> str:
        return f"{self.block}-{self.impl}"


def block_cases(s: Optional[Settings] = None) -> list:
    s = s or settings()
    # The fused model's stem: BN folded, conv1 run the way it measured fastest.  With backend
    # "torch" that is one of the ATen forms; with "triton" the Triton stem kernel competes too.
    cases = [BlockCase("stem", "torchvision"), BlockCase("stem", "torch"), BlockCase("stem", "triton")]
    for name in BLOCKS:
        cases += [BlockCase(name, impl) for impl in ("torchvision", *BACKENDS)]
    for name in BLOCKS:
        cases += [BlockCase(name, "launch1_ext"), BlockCase(name, "launch1_triton")]
    return cases


# ---------------------------------------------------------------------------------------
# environment
# ---------------------------------------------------------------------------------------
def _safe(text: str) -> str:
    """A file-name-safe token: letters, digits, '.', '-' only."""
    return re.sub(r"-+", "-", re.sub(r"[^A-Za-z0-9.]+", "-", text)).strip("-") or "unknown"


@lru_cache(maxsize=1)
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def environment(device: Optional[torch.device] = None) -> dict:
    device = device or bench_device()
    env = {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "device": device.type,
        "cpu_threads": torch.get_num_threads(),
    }
    for mod in ("triton", "torchvision", "inception_fast"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception as exc:  # an absent package is information, not an error
            env[mod] = None
            env[f"{mod}_error"] = f"{type(exc).__name__}: {exc}"[:200]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["device_name"] = props.name
        env["device_capability"] = f"{props.major}.{props.minor}"
        env["device_memory_gib"] = round(props.total_memory / 2**30, 1)
        env["allow_tf32_cudnn"] = torch.backends.cudnn.allow_tf32
        with warnings.catch_warnings():  # newer torch deprecates the flag in favour of fp32_precision
            warnings.simplefilter("ignore")
            env["allow_tf32_matmul"] = getattr(torch.backends.cuda.matmul, "allow_tf32", None)
    else:
        env["device_name"] = cpu_name()
    try:
        import inception_fast

        env["backends_available"] = inception_fast.available_backends(device)
    except Exception as exc:
        env["backends_available"] = None
        env["backends_error"] = f"{type(exc).__name__}: {exc}"[:300]
    return env


def result_basename(env: dict, date: Optional[str] = None, quick: bool = False) -> str:
    """YYYY-MM-DD_<gpu>_torch<ver>_triton<ver>_cuda<ver> (benchmarks/results/README.md)."""
    date = date or _dt.date.today().isoformat()
    gpu = env.get("device_name") if env.get("device") == "cuda" else "cpu"
    torch_ver = (env.get("torch") or "none").split("+")[0]
    name = (f"{date}_{_safe(gpu or 'unknown')}_torch{_safe(torch_ver)}_triton{_safe(env.get('triton') or 'none')}"
            f"_cuda{_safe(env.get('torch_cuda') or 'none')}")
    return name + ("_quick" if quick else "")


# ---------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------
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
    if name in ("torchvision", "tv_compile"):
        model = copy.deepcopy(base)
    elif name == "reference":
        from inception_fast import GoogLeNet

        model = GoogLeNet(1000, variant="torchvision", aux_logits=False, init_weights=False)
        model.load_state_dict(base.state_dict())
    elif name.startswith("fused_"):
        backend = name[len("fused_"):]
        require_backend(backend, s.device)
        from inception_fast import FusedGoogLeNet

        model = FusedGoogLeNet.from_torchvision(copy.deepcopy(base), backend=backend)
    else:
        raise ValueError(f"unknown model {name!r}")
    model = _place(model, s.device, DTYPES[dtype], FORMATS[memory_format])
    _MODEL_CACHE[key] = model
    return model


def clear_caches() -> None:
    _MODEL_CACHE.clear()
    _BLOCK_CACHE.clear()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


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


def example_input(batch: int, channels: int, h: int, w: int, device, dtype, memory_format, seed: int = 0,
                  nonnegative: bool = False) -> torch.Tensor:
    gen = torch.Generator(device=device).manual_seed(seed)
    shape = (batch, channels, h, w)
    if nonnegative:  # block inputs are post-ReLU activations
        x = torch.rand(shape, generator=gen, device=device, dtype=torch.float32)
    else:
        x = torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
    return x.to(dtype).contiguous(memory_format=memory_format)


# ---------------------------------------------------------------------------------------
# blocks: shapes and work counts
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConvShape:
    cin: int
    cout: int
    kh: int
    kw: int
    groups: int
    hout: int
    wout: int

    def macs_per_image(self) -> int:
        return self.hout * self.wout * self.cout * (self.cin // self.groups) * self.kh * self.kw

    def weight_elems(self) -> int:
        # BN folded: every conv carries a bias.
        return self.cout * (self.cin // self.groups) * self.kh * self.kw + self.cout


@dataclass(frozen=True)
class BlockShape:
    name: str
    input_chw: tuple
    output_chw: tuple
    convs: tuple  # ConvShape, in forward order

    def macs(self, batch: int) -> int:
        return batch * sum(c.macs_per_image() for c in self.convs)

    def flops(self, batch: int) -> int:
        return 2 * self.macs(batch)

    def bytes(self, batch: int, elem_size: int) -> int:
        """Floor traffic: input read once, output written once, weights read once."""
        c, h, w = self.input_chw
        co, ho, wo = self.output_chw
        weights = sum(cv.weight_elems() for cv in self.convs)
        return elem_size * (batch * (c * h * w + co * ho * wo) + weights)


@lru_cache(maxsize=4)
def block_shapes(image_size: int) -> dict:
    """Per block (and "stem"): input/output shapes and every conv's shape, taken by
    running torchvision's googlenet once on a 1-image input with hooks."""
    import torchvision

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False).eval()
    io: dict = {}
    convs: dict = {}
    handles = []

    def owner(mod_name: str) -> Optional[str]:
        top = mod_name.split(".")[0]
        if top in BLOCKS:
            return top
        return "stem" if top in STEM_LAYERS else None

    def io_hook(key):
        def hook(mod, inp, out):
            io.setdefault(key, {})
            io[key].setdefault("in", tuple(inp[0].shape[1:]))
            io[key]["out"] = tuple(out.shape[1:])
        return hook

    def conv_hook(key):
        def hook(mod, inp, out):
            convs.setdefault(key, []).append(ConvShape(mod.in_channels, mod.out_channels, *mod.kernel_size,
                                                       mod.groups, out.shape[2], out.shape[3]))
        return hook

    for name in BLOCKS:
        handles.append(getattr(model, name).register_forward_hook(io_hook(name)))
    # The stem's input is conv1's input, its output maxpool2's output.
    handles.append(model.conv1.register_forward_hook(io_hook("stem")))
    handles.append(model.maxpool2.register_forward_hook(io_hook("stem")))
    for mod_name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d) and owner(mod_name):
            handles.append(mod.register_forward_hook(conv_hook(owner(mod_name))))
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, image_size, image_size))
    finally:
        for h in handles:
            h.remove()
    return {k: BlockShape(k, io[k]["in"], io[k]["out"], tuple(convs[k])) for k in ("stem", *BLOCKS)}


def launch1_work(shape: BlockShape, packed, batch: int, elem_size: int) -> tuple:
    """(flops, bytes) of launch 1 alone: the packed 1x1 GEMM and the pool branch's 1x1.
    Bytes: input once, branch-1 and pool slices plus the reduction scratch written once,
    packed weights once."""
    cin, h, w = shape.input_chw
    n_red, n_pool = packed.w_red.shape[0], packed.w_pool.shape[0]
    ch3red, ch5red = packed.w3.shape[1], packed.w5.shape[1]
    ch1 = n_red - ch3red - ch5red
    pix = batch * h * w
    macs = pix * cin * (n_red + n_pool)
    elems = pix * cin + pix * (ch1 + n_pool) + pix * (ch3red + ch5red)
    elems += packed.w_red.numel() + packed.b_red.numel() + packed.w_pool.numel() + packed.b_pool.numel()
    return 2 * macs, elem_size * elems


def roofline(flops: float, nbytes: float, seconds: float, device: torch.device, dtype: torch.dtype) -> dict:
    """Achieved rates, and (bf16/fp16 on CUDA only) the fraction of the H100 roofline:
    floor time = max(compute floor, bytes floor) over the measured time."""
    out = {
        "flops": int(flops),
        "bytes": int(nbytes),
        "tflops": flops / seconds / 1e12,
        "gbps": nbytes / seconds / 1e9,
        "ceiling_tflops": PEAK_BF16_FLOP_PER_S / 1e12,
        "ceiling_gbps": PEAK_HBM_BYTE_PER_S / 1e9,
        "compute_floor_s": flops / PEAK_BF16_FLOP_PER_S,
        "bytes_floor_s": nbytes / PEAK_HBM_BYTE_PER_S,
        "roofline_fraction": None,
        "bound": None,
    }
    if device.type == "cuda" and dtype in (torch.bfloat16, torch.float16):
        floor = max(out["compute_floor_s"], out["bytes_floor_s"])
        out["floor_s"] = floor
        out["roofline_fraction"] = floor / seconds
        out["bound"] = "compute" if out["compute_floor_s"] >= out["bytes_floor_s"] else "memory"
    return out


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
    through ``model._fused_stem``, the method its forward calls (the stem has no public module)."""
    key = ("fused_stem", str(s.device), dtype, s.image_size, backend)
    if key not in _BLOCK_CACHE:
        from inception_fast import FusedGoogLeNet

        require_backend(backend, s.device)
        base = base_torchvision(s.image_size, s.calib_batch)
        _BLOCK_CACHE[key] = _place(FusedGoogLeNet.from_torchvision(copy.deepcopy(base), backend=backend),
                                   s.device, DTYPES[dtype], torch.channels_last)
    return _BLOCK_CACHE[key]


def triton_launch1() -> Optional[Callable]:
    """The Triton launch-1 launcher, or None when its module is absent.

    The launcher lives in inception_fast/backends/triton/reduce_pool.py; its name is
    looked up among the plausible ones so that a rename degrades to a skip."""
    try:
        import importlib

        mod = importlib.import_module("inception_fast.backends.triton.reduce_pool")
    except Exception:
        return None
    for name in ("launch_reduce_pool", "reduce_pool_", "reduce_pool", "reduce_pool_launch", "launch1", "launch"):
        fn = getattr(mod, name, None)
        if callable(fn):
            return fn
    return None


# ---------------------------------------------------------------------------------------
# the bridge to pytest-benchmark
# ---------------------------------------------------------------------------------------
def measure(benchmark, fn: Callable[[], object], s: Settings, *, batch: int, extra: dict,
            group: Optional[str] = None, cuda_graph: Optional[bool] = None) -> Timing:
    """Times ``fn`` with time_fn (the headline number, into extra_info), then lets
    pytest-benchmark record a few synchronized wall-clock rounds of the same call."""
    device = s.device
    cuda_graph = s.cuda_graph if cuda_graph is None else cuda_graph
    info = dict(extra)
    if cuda_graph:  # an error here is the case's own, not the capture's: it propagates
        with torch.inference_mode():
            fn()
    try:
        timing = time_fn(fn, device=device, batch=batch, warmup=s.warmup, repeats=s.repeats,
                         min_time_s=s.min_time_s, cuda_graph=cuda_graph)
    except Exception as exc:
        if not cuda_graph:
            raise
        # A case that cannot be captured is still timed, eagerly, and says why.
        info["cuda_graph_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        cuda_graph = False
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        timing = time_fn(fn, device=device, batch=batch, warmup=s.warmup, repeats=s.repeats,
                         min_time_s=s.min_time_s)
    samples = sorted(timing.samples_s)
    info.update(
        device=device.type,
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        batch=batch,
        quick=s.quick,
        cpu_threads=torch.get_num_threads(),
        timing="cuda_graph" if cuda_graph else ("cuda_events" if device.type == "cuda" else "perf_counter"),
        stats_timing="wall clock of one eager call + synchronize (pytest-benchmark pedantic)",
        warmup=s.warmup,
        samples=len(samples),
        median_s=timing.median_s,
        min_s=samples[0],
        max_s=samples[-1],
        images_per_s=timing.images_per_s,
    )
    benchmark.extra_info.update(info)
    if group:
        benchmark.group = group

    def synced():
        with torch.inference_mode():
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    benchmark.pedantic(synced, rounds=s.rounds, iterations=1, warmup_rounds=0)
    return timing


def kernel_profile(fn: Callable[[], object], device: torch.device, calls: int = 3, top: int = 12) -> dict:
    """Where ``fn()``'s time goes, from torch.profiler over ``calls`` calls after one warm-up:
    on CUDA the device time of every kernel, summed per kernel name; elsewhere the CPU ops' own
    time.  Returns {"source", "us_per_call" (all of it), "kernels": the ``top`` names with
    "us" per call, "calls" per call and "share" of the total}, or {"error": why} where the
    profiler cannot run (e.g. no CUPTI)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    try:
        with torch.inference_mode():
            fn()
            if cuda:
                torch.cuda.synchronize(device)
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
            with profile(activities=activities) as prof:
                for _ in range(calls):
                    fn()
                if cuda:
                    torch.cuda.synchronize(device)
        per_name: dict = {}
        if cuda:
            for e in prof.events():
                if e.device_type == DeviceType.CUDA:
                    us, n = per_name.get(e.name, (0.0, 0))
                    per_name[e.name] = (us + e.time_range.elapsed_us(), n + 1)
        else:
            for e in prof.key_averages():
                per_name[e.key] = (e.self_cpu_time_total, e.count)
    except Exception as exc:  # a benchmark keeps its timing when the profiler fails
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"}
    total = sum(us for us, _ in per_name.values())
    ranked = sorted(per_name.items(), key=lambda kv: -kv[1][0])[:top]
    return {"source": "cuda kernels" if cuda else "cpu ops (self time)", "us_per_call": total / calls,
            "kernels": [{"name": name[:160], "us": us / calls, "calls": n / calls, "share": us / total if total else None}
                        for name, (us, n) in ranked]}


def triton_tuning_mark() -> int:
    """A mark in the Triton autotuning log (see triton_tuning_since)."""
    kernels = _triton_common()
    return kernels.tuning_count() if kernels is not None else 0


def triton_tuning_since(mark: int) -> list:
    """The Triton autotuners' choices (and per-config µs where they benchmarked) made since
    ``mark``: inception_fast.backends.triton._common.tuning_log() entries (the log keeps the most
    recent ones only, see its TUNING_LOG_FACTOR)."""
    kernels = _triton_common()
    if kernels is None:
        return []
    new = kernels.tuning_count() - mark
    return kernels.tuning_log()[-new:] if new > 0 else []


def _triton_common():
    import sys

    return sys.modules.get("inception_fast.backends.triton._common")  # never imports triton itself


def auto_choices(dtype: str, batch: int) -> dict:
    """{backend: number of block shapes} that backend="auto" chose at this dtype and batch."""
    from inception_fast import choices

    counts: dict = {}
    for key, choice in choices.AUTO.choices().items():
        if key[1] == DTYPES[dtype] and key[2][0] == batch:
            counts[choice.name] = counts.get(choice.name, 0) + 1
    return counts


def stem_choice(model, x: torch.Tensor) -> Optional[dict]:
    """How FusedGoogLeNet ``model`` ran its first conv on input ``x``: the measured variant and the
    µs of each (None where nothing was measured, e.g. on CPU)."""
    from inception_fast import choices

    choice = choices.STEM_CHOICE.choices().get(model.stem_choice_key(x))
    if choice is None:
        return None
    # conv2 and conv3 (ATen or cuDNN's fused conv-bias-ReLU, see choices.CONV_RELU_CHOICE) at this
    # batch and dtype.
    convs = [{"weight": list(key[4]), "chosen": c.name, "us": {k: v * 1e6 for k, v in c.seconds.items()},
              "errors": c.errors}
             for key, c in choices.CONV_RELU_CHOICE.choices().items()
             if key[0] == str(x.device) and key[1] == x.dtype and key[2][0] == x.shape[0]]
    return {"chosen": choice.name, "us": {k: v * 1e6 for k, v in choice.seconds.items()}, "errors": choice.errors,
            "conv_relu": convs}


def parity(out, ref) -> Optional[float]:
    """‖out − ref‖/‖ref‖ (inception_fast.testing.rel_error), recorded next to a timing so a
    kernel that is fast because it is wrong shows; None when it cannot be computed."""
    from inception_fast.testing import rel_error

    try:
        return rel_error(out, ref)
    except Exception:
        return None


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Print the benchmark environment as JSON.")
    parser.add_argument("what", nargs="?", default="env", choices=["env", "name"])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    env = environment()
    env["result_basename"] = result_basename(env, quick=args.quick or flag(ENV_QUICK))
    print(env["result_basename"] if args.what == "name" else json.dumps(env, indent=1))


if __name__ == "__main__":
    main()
