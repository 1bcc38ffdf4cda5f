"""Benchmark settings and the case grids.

Settings come from environment variables (the conftest's --quick/--compile/--cuda-graph
options set the same variables):

* ``INCEPTION_FAST_BENCH_QUICK=1``: tiny sizes and few repeats (CI smoke run).
* ``INCEPTION_FAST_BENCH_COMPILE=1``: add the torch.compile anchor (torchvision's
  googlenet, default mode, ``torch._inductor.config.freezing = True``) at the largest batch and,
  on CUDA, the batch-1 anchor ``tv_compile_ro`` (mode "reduce-overhead", CUDA graphs, freezing).
* ``INCEPTION_FAST_BENCH_PEERS=1``: on a CPU, add the engines a CPU user would pick instead,
  beside the fused model at every batch: ONNX Runtime (CPU provider) and OpenVINO (f32 and bf16
  inference precision, set explicitly), both running torchvision's googlenet exported with
  ``torch.onnx.export``, and torch.compile with inductor freezing (fp32 and bf16).  Each skips, saying
  why, where its package is missing (``pip install -e .[bench]``).  torchvision is timed with
  NCHW input (the ``contiguous`` rows) and with channels_last input in every run.
* ``INCEPTION_FAST_BENCH_THREADS=2``: ``torch.set_num_threads`` for the run; ONNX Runtime's and
  OpenVINO's thread counts follow ``torch.get_num_threads()`` (default: torch's own; quick: 1).
* ``INCEPTION_FAST_BENCH_CUDA_GRAPH=1``: time CUDA-graph replays instead of eager calls.
* ``INCEPTION_FAST_BENCH_DEVICE=cpu|cuda``: force the device (default: cuda if present).
* ``INCEPTION_FAST_BENCH_BATCHES=256,1`` / ``INCEPTION_FAST_BENCH_DTYPES=bf16``: narrow
  the throughput grid (for short GPU windows).
* ``INCEPTION_FAST_BENCH_FORMATS=channels_last`` / ``INCEPTION_FAST_BENCH_MODELS=torchvision,fused_triton``:
  narrow the throughput grid's memory formats and models; the models run in the order given
  (the GPU suite lists the issues' rows first, so a cut-short step still has them).
* ``INCEPTION_FAST_BENCH_BLOCK_BATCH=1``: the per-block benchmarks' batch (default 256 on a GPU).
* ``INCEPTION_FAST_BENCH_DEADLINE=<unix time>``: benchmarks not started by then skip
  (gpu_suite.sh uses it so a time-boxed run still writes its JSON).
* ``INCEPTION_FAST_BENCH_PROFILE=1``: the throughput benchmark also records, for the headline
  configuration (largest batch, first dtype, channels_last), where one forward's device time
  goes (``kernel_profile``: torch.profiler, time per kernel name) and how much of the timed
  forward the device was busy (``busy``: kernel time over the measured time; well under 1
  means the forward waits on the host).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch

from inception_fast.cli import UsageError, resolve_device
from inception_fast.reference import BLOCK_CONFIGS

ENV_QUICK = "INCEPTION_FAST_BENCH_QUICK"
ENV_COMPILE = "INCEPTION_FAST_BENCH_COMPILE"
ENV_CUDA_GRAPH = "INCEPTION_FAST_BENCH_CUDA_GRAPH"
ENV_DEVICE = "INCEPTION_FAST_BENCH_DEVICE"
ENV_BATCHES = "INCEPTION_FAST_BENCH_BATCHES"
ENV_BLOCK_BATCH = "INCEPTION_FAST_BENCH_BLOCK_BATCH"
ENV_DTYPES = "INCEPTION_FAST_BENCH_DTYPES"
ENV_FORMATS = "INCEPTION_FAST_BENCH_FORMATS"
ENV_MODELS = "INCEPTION_FAST_BENCH_MODELS"
ENV_DEADLINE = "INCEPTION_FAST_BENCH_DEADLINE"  # unix time after which no new benchmark starts
ENV_PROFILE = "INCEPTION_FAST_BENCH_PROFILE"
ENV_PEERS = "INCEPTION_FAST_BENCH_PEERS"
ENV_THREADS = "INCEPTION_FAST_BENCH_THREADS"

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
BACKENDS = ("torch", "triton", "cuda", "cpp", "onednn")
# The block benchmarks also time "hopper" (the Triton block with both launches on TMA) and
# "hopper_tma2" (triton's launch 1, the TMA launch 2); the whole-model grid leaves them to
# fused_auto, which measures them per block shape among its candidates.
BLOCK_BACKENDS = (*BACKENDS, "hopper", "hopper_tma2")
# The CPU peers (benchmarks.helpers.peers) and the dtypes each runs in; torch.compile with
# freezing ("tv_compile") is one in both.
PEER_DTYPES = {"onnxruntime": ("fp32",), "openvino": ("fp32", "bf16"), "tv_compile": ("fp32", "bf16")}
BLOCKS = tuple(BLOCK_CONFIGS)  # inception3a ... inception5b, in network order
# Triton's launch 1 with one role alone (bench_blocks.py), on a block at each image size.
LAUNCH1_ROLES = ("launch1_reduce", "launch1_pool")
ROLE_BLOCKS = ("inception3a", "inception4a", "inception5b")
STEM_LAYERS = ("conv1", "maxpool1", "conv2", "conv3", "maxpool2")
# The stages FusedGoogLeNet runs outside the blocks, each timed alone by bench_blocks.py, and the
# torchvision layers each covers (the head: avgpool, flatten, dropout, fc).
STAGE_LAYERS = {
    "conv1": ("conv1", "maxpool1"),
    "conv2": ("conv2",),
    "conv3": ("conv3",),
    "maxpool2": ("maxpool2",),
    "maxpool3": ("maxpool3",),
    "maxpool4": ("maxpool4",),
    "head": ("avgpool", "dropout", "fc"),
}
STAGES = tuple(STAGE_LAYERS)


def flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def bench_device() -> torch.device:
    """INCEPTION_FAST_BENCH_DEVICE's device, else cuda if present; ValueError naming the variable
    for a value that is no device name or a device this machine lacks."""
    try:
        return resolve_device(os.environ.get(ENV_DEVICE, "").strip() or None, "each benchmark", option=ENV_DEVICE)
    except UsageError as exc:
        raise ValueError(str(exc)) from None


@dataclass(frozen=True)
class Settings:
    device: torch.device
    quick: bool
    cuda_graph: bool
    compile: bool
    peers: bool
    threads: Optional[int]
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
    """Environment variable ``name``'s comma-separated items, None where it is unset or blank;
    ValueError naming it where an item is empty or named twice (a row dropped or measured twice)."""
    raw = os.environ.get(name, "")
    if not raw.strip():
        return None
    values = tuple(v.strip() for v in raw.split(","))
    if not all(values):
        raise ValueError(f"{name}: expected comma-separated names or numbers, got {raw!r} (an empty item)")
    twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
    if twice is not None:
        raise ValueError(f"{name}: {twice!r} is named twice in {raw!r}")
    return values


def _positive(name: str, value) -> int:
    """``value`` of environment variable ``name`` as a positive int; ValueError naming both."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise ValueError(f"{name}: expected positive integers, got {value!r}")
    return number


def _threads(value) -> int:
    """INCEPTION_FAST_BENCH_THREADS as a thread count (at most ``cli.thread_limit()``)."""
    from inception_fast.cli import thread_limit

    number = _positive(ENV_THREADS, value)
    if number > thread_limit():
        raise ValueError(f"{ENV_THREADS}: at most {thread_limit()} (4 per CPU), got {value!r}")
    return number


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
        # Enough samples for the spread (recorded beside the median) to be small against the
        # differences between rows on a 2-core machine.
        image, batches, block_batch = 224, (8, 1), 8
        warmup, repeats, min_time, rounds, calib = 2, 11, 1.0, 2, 4
    dtypes = ("bf16", "fp32") if gpu else ("fp32",)  # no fast bf16 convs to speak of on CPU
    batches = tuple(_positive(ENV_BATCHES, b) for b in (_env_list(ENV_BATCHES) or batches))
    twice = next((b for i, b in enumerate(batches) if b in batches[:i]), None)
    if twice is not None:  # the same size spelled twice ("8,08")
        raise ValueError(f"{ENV_BATCHES}: batch size {twice} is named twice in {os.environ[ENV_BATCHES]!r}")
    block_batch = _positive(ENV_BLOCK_BATCH, os.environ.get(ENV_BLOCK_BATCH, "").strip() or block_batch)
    dtypes = _env_list(ENV_DTYPES) or dtypes
    check_dtypes(dtypes)
    formats = _env_list(ENV_FORMATS) or ("channels_last", "contiguous")
    for f in formats:
        if f not in FORMATS:
            raise ValueError(f"{ENV_FORMATS}: unknown memory format {f!r}; choose from {', '.join(FORMATS)}")
    check_models(_env_list(ENV_MODELS) or ())
    deadline()
    return Settings(
        device=device,
        quick=quick,
        cuda_graph=flag(ENV_CUDA_GRAPH) and gpu,
        compile=flag(ENV_COMPILE),
        peers=flag(ENV_PEERS) and not gpu,
        threads=_threads(os.environ[ENV_THREADS]) if os.environ.get(ENV_THREADS, "").strip() else None,
        image_size=image,
        batches=batches,
        dtypes=dtypes,
        formats=formats,
        block_batch=block_batch,
        block_dtype="bf16" if gpu else "fp32",
        compile_batch=max(batches),
        calib_batch=calib,
        warmup=warmup,
        repeats=repeats,
        min_time_s=min_time,
        rounds=rounds,
    )


# Case ids must stay free of the word "compile" except for the compile anchor, so that
# `-k compile` selects exactly it.
@dataclass(frozen=True)
class ThroughputCase:
    model: str
    dtype: str
    memory_format: str
    batch: int

    @property
    def id(self) -> str:
        return f"{self.model}-{self.dtype}-{self.memory_format}-b{self.batch}"


def known_models() -> tuple:
    """Every throughput model name, on any device (fused_auto runs as its own row on CUDA only)."""
    return ("torchvision", "reference", *(f"fused_{b}" for b in BACKENDS), "fused_auto")


def check_models(names) -> None:
    """ValueError naming the unknown ones among ``names`` (the INCEPTION_FAST_BENCH_MODELS list)."""
    unknown = [m for m in names if m not in known_models()]
    if unknown:
        raise ValueError(
            f"{ENV_MODELS}: unknown model(s) {', '.join(unknown)}; choose from {', '.join(known_models())}"
        )


def deadline() -> float:
    """INCEPTION_FAST_BENCH_DEADLINE as a Unix time (0: none); ValueError where it is not one."""
    raw = os.environ.get(ENV_DEADLINE, "").strip()
    try:
        value = float(raw or 0)
    except ValueError:
        value = float("nan")
    if not value >= 0 or value == float("inf"):  # (NaN fails)
        raise ValueError(f"{ENV_DEADLINE} must be a Unix time in seconds, got {raw!r}")
    return value


def check_dtypes(names) -> None:
    """ValueError naming the unknown ones among ``names`` (the INCEPTION_FAST_BENCH_DTYPES list)."""
    for d in names:
        if d not in DTYPES:
            raise ValueError(f"{ENV_DTYPES}: unknown dtype {d!r}; choose from {', '.join(DTYPES)}")


def throughput_cases(s: Optional[Settings] = None) -> list:
    """Grouped so that all models of one (dtype, format, batch) run side by side,
    headline configurations first (a cut-short run still compares like with like)."""
    s = s or settings()
    models = ["torchvision", "reference", *(f"fused_{b}" for b in BACKENDS)]
    if s.device.type == "cuda":  # off CUDA, auto is one backend: onednn where it runs, else torch
        models.append("fused_auto")
    chosen = _env_list(ENV_MODELS)
    if chosen:
        check_models(chosen)
        models = [m for m in chosen if m in models]
    cases = []
    for dtype in s.dtypes:
        for fmt in s.formats:
            for batch in s.batches:
                cases += [ThroughputCase(m, dtype, fmt, batch) for m in models]
                if s.peers and fmt == "channels_last":
                    # The engines take the NCHW array and choose their own layout: grouped with the
                    # channels_last rows, run right after them.
                    cases += [ThroughputCase(p, dtype, fmt, batch) for p, ds in PEER_DTYPES.items() if dtype in ds]
    anchor = ThroughputCase("tv_compile", s.dtypes[0], "channels_last", s.compile_batch)
    if s.compile and anchor not in cases:
        # One configuration only: each new shape is another ~30 s compile.
        cases.append(anchor)
    if s.compile and s.device.type == "cuda":
        # Batch 1's anchor, where the batch-1 targets are held: reduce-overhead (CUDA graphs).
        cases.append(ThroughputCase("tv_compile_ro", s.dtypes[0], "channels_last", 1))
    return cases


@dataclass(frozen=True)
class BlockCase:
    block: str  # "stem", an Inception block name, or a stage outside the blocks (STAGES)
    # torchvision | torch | triton | cuda | cpp | onednn | hopper | hopper_tma2 | launch1_ext | launch1_triton
    # | launch1_tma | launch1_reduce | launch1_pool | fused (stages)
    impl: str

    @property
    def id(self) -> str:
        return f"{self.block}-{self.impl}"


def block_cases(s: Optional[Settings] = None) -> list:
    s = s or settings()
    # The fused model's stem: BN folded, conv1 run the way it measured fastest.  With backend
    # "torch" that is one of the ATen forms; with "triton" the Triton stem kernel competes too.
    cases = [BlockCase("stem", impl) for impl in ("torchvision", "torch", "triton", "onednn")]
    # Each stage outside the blocks alone: torchvision's layers (BatchNorm unfolded) and
    # FusedGoogLeNet's (backend "auto") stage as its measured choice runs it.  Short cases, before
    # the per-backend block rows, so that a step its deadline cuts short still has them.
    for name in STAGES:
        cases += [BlockCase(name, "torchvision"), BlockCase(name, "fused")]
    for name in BLOCKS:
        cases += [BlockCase(name, impl) for impl in ("torchvision", *BLOCK_BACKENDS)]
    for name in BLOCKS:
        cases += [BlockCase(name, impl) for impl in ("launch1_ext", "launch1_triton", "launch1_tma")]
    # Where Triton's launch 1 spends its time: each role alone (a block at each image size).
    for name in ROLE_BLOCKS:
        cases += [BlockCase(name, impl) for impl in LAUNCH1_ROLES]
    return cases
