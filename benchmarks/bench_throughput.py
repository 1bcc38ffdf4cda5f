"""Whole-network inference throughput (images/s) of GoogLeNet implementations.

Models: torchvision eager, the reference GoogLeNet, FusedGoogLeNet with each backend (on
CUDA also backend="auto", with the backends it chose per block in extra_info), and (opt-in:
--compile or INCEPTION_FAST_BENCH_COMPILE=1) torch.compile of torchvision's model in default
mode with inductor freezing at the largest batch and, on CUDA, in mode "reduce-overhead" (CUDA
graphs) with freezing at batch 1 (``tv_compile_ro``, the batch-1 anchor).  On a CPU, --peers
(INCEPTION_FAST_BENCH_PEERS=1) adds the CPU peers beside them at every batch: ONNX Runtime,
OpenVINO f32 and bf16 (benchmarks.helpers.peers) and torch.compile with freezing (fp32 and bf16).
Grid: see benchmarks.helpers.settings.settings() (GPU: batch 256/64/1 × bf16/fp32 ×
channels_last/contiguous; CPU: batch 8/1, fp32, both formats: every model given NCHW input
(the contiguous rows, as a user has it) and channels_last input).  The headline number is
extra_info["images_per_s"], with the spread (q1_s, q3_s, min_s, max_s) beside it.

    python -m pytest benchmarks/bench_throughput.py --benchmark-json out.json [--quick] [--cuda-graph]
    python -m pytest benchmarks/bench_throughput.py --compile -k compile --benchmark-json compile.json
    INCEPTION_FAST_BENCH_DTYPES=fp32,bf16 python -m pytest benchmarks/bench_throughput.py --peers \
        --bench-device cpu --bench-threads 2 --benchmark-json cpu.json

With INCEPTION_FAST_BENCH_PROFILE=1 the headline configuration also records each model's kernel
profile (see benchmarks.helpers.profiling.kernel_profile).  Each FusedGoogLeNet row records the
measured choices made so far at its device, dtype and batch (``measured_choices``: backend auto
per block, the stem, the pools, the head, any other MeasuredChoice) with the candidates' µs.  As
CUDA-graph replays at batch 1, a FusedGoogLeNet row also holds its time per call through
``graphs.CapturedForward`` (``captured_s``: input copy, replay and host time, as the
reduce-overhead anchor's calls are timed).
"""

from __future__ import annotations

import time

import numpy
import pytest
import torch

from benchmarks.helpers.choices import (
    auto_choices,
    measured_choices,
    stem_choice,
    triton_tuning_mark,
    triton_tuning_since,
)
from benchmarks.helpers.measure import captured_call, measure, parity
from benchmarks.helpers.models import BackendUnavailable, build_model, example_input
from benchmarks.helpers.peers import PEERS, peer_runner
from benchmarks.helpers.profiling import kernel_profile
from benchmarks.helpers.settings import DTYPES, ENV_PROFILE, FORMATS, flag, settings, throughput_cases
from benchmarks.report import MODEL_LABELS


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        cases = throughput_cases()
        metafunc.parametrize("case", cases, ids=[c.id for c in cases])


def _compiled(model: torch.nn.Module, x: torch.Tensor, mode: str = "default"):
    """torch.compile (``mode``) with freezing; returns (fn, compile seconds).
    Compilation happens at the first call, so that call runs under the config patch."""
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    compiled = torch.compile(model, mode=mode)
    with inductor_config.patch(freezing=True), torch.inference_mode():
        t0 = time.perf_counter()
        compiled(x)
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        seconds = time.perf_counter() - t0
    return compiled, seconds


def _as_tensor(out) -> torch.Tensor:
    """A peer returns a numpy array; parity compares tensors."""
    return out if isinstance(out, torch.Tensor) else torch.from_numpy(numpy.asarray(out))


def test_throughput(benchmark, case):
    s = settings()
    fmt = FORMATS[case.memory_format]
    x = example_input(case.batch, 3, s.image_size, s.image_size, s.device, DTYPES[case.dtype], fmt)
    peer_info = None
    try:
        if case.model in PEERS:
            fn, peer_info = peer_runner(case.model, s, case.dtype, x)
        else:
            model = build_model(case.model, s, case.dtype, case.memory_format)
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    extra = dict(
        kind="throughput",
        model=case.model,
        label=MODEL_LABELS[case.model],
        dtype=case.dtype,
        memory_format=case.memory_format,
        image_size=s.image_size,
    )
    if case.model.startswith("fused_"):
        extra["backend"] = model.backend
    if peer_info is not None:
        extra.update(peer_info, input_layout="NCHW fp32 array (the engine picks its own layout)")
    else:
        fn = lambda: model(x)
    if case.model in ("tv_compile", "tv_compile_ro"):
        mode = "reduce-overhead" if case.model == "tv_compile_ro" else "default"
        compiled, compile_s = _compiled(model, x, mode)
        extra.update(compile_s=compile_s, compile_mode=mode, freezing=True)
        fn = lambda: compiled(x)
    group = f"throughput {s.device.type} {case.dtype} {case.memory_format} batch {case.batch}"
    mark = triton_tuning_mark()
    measure(benchmark, fn, s, batch=case.batch, extra=extra, group=group)
    tuning = triton_tuning_since(mark)
    if s.cuda_graph and case.model.startswith("fused_") and case.batch == 1 and s.device.type == "cuda":
        # Batch 1's anchor (reduce-overhead) is timed per call: so is this row, through CapturedForward.
        benchmark.extra_info.update(captured_call(model, x, s, case.batch))
    if tuning:  # the first model to launch a Triton kernel at a shape records what was tuned
        benchmark.extra_info["triton_tuning"] = tuning
    if case.model == "fused_auto":
        benchmark.extra_info["auto_choices"] = auto_choices(case.dtype, case.batch)
    if case.model.startswith("fused_"):
        benchmark.extra_info["stem_conv1"] = stem_choice(model, x)
        # Every measured choice made so far at this device, dtype and batch (report: Measured choices).
        benchmark.extra_info["measured_choices"] = measured_choices(
            s.device, DTYPES[case.dtype], batch=case.batch, image_size=s.image_size
        )
    if (
        flag(ENV_PROFILE)
        and case.model not in PEERS  # their kernels are not torch ops: the profiler would see none
        and not s.cuda_graph
        and case.batch == max(s.batches)
        and case.dtype == s.dtypes[0]
        and case.memory_format == "channels_last"
    ):
        prof = kernel_profile(fn, s.device)
        benchmark.extra_info["kernel_profile"] = prof
        if prof.get("us_per_call") and s.device.type == "cuda":
            benchmark.extra_info["busy"] = prof["us_per_call"] * 1e-6 / benchmark.extra_info["median_s"]
    if case.model != "torchvision":
        tv = build_model("torchvision", s, case.dtype, case.memory_format)
        with torch.inference_mode():
            benchmark.extra_info["rel_error_vs_torchvision"] = parity(_as_tensor(fn()), tv(x))
