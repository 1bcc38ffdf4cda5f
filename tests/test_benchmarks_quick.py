"""The benchmarks must not rot: run every benchmark file once in quick mode, then the report.

Benchmarks are not tests, so nothing here looks at a timing: it only checks that each
file ran, wrote pytest-benchmark JSON with the headline numbers in extra_info, and that
report.py turns that JSON into markdown.  Each file runs in a subprocess, from the
repository root, by explicit path (as gpu_suite.sh runs them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
from processes import assert_gone

pytest.importorskip("pytest_benchmark")

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"


def _env(triton_interpret: bool) -> dict:
    # Not pytest-xdist's worker variables: a pytest run in a child of an xdist worker would take
    # itself for a worker, and pytest-benchmark then disables itself (an empty JSON).
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")}
    env["INCEPTION_FAST_BENCH_QUICK"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    for var in (
        "INCEPTION_FAST_BENCH_COMPILE",
        "INCEPTION_FAST_BENCH_CUDA_GRAPH",
        "INCEPTION_FAST_BENCH_DEADLINE",
        "INCEPTION_FAST_BENCH_BATCHES",
        "INCEPTION_FAST_BENCH_DTYPES",
        "INCEPTION_FAST_BENCH_PROFILE",
        "INCEPTION_FAST_BENCH_PEERS",
        "INCEPTION_FAST_BENCH_THREADS",
        "INCEPTION_FAST_BENCH_MODELS",
        "INCEPTION_FAST_BENCH_FORMATS",
        "INCEPTION_FAST_BENCH_CEILINGS",
    ):
        env.pop(var, None)
    # tests/conftest.py turns the Triton interpreter on for CPU machines; a whole network under
    # it takes minutes, so the smoke runs go without it, except the one Triton case below.
    if triton_interpret:
        env["TRITON_INTERPRET"] = "1"
        env["INCEPTION_FAST_BENCH_DEVICE"] = "cpu"  # the interpreter has no bf16, the GPU grid's dtype
    else:
        env.pop("TRITON_INTERPRET", None)
    return env


def _run_bench(
    name: str,
    json_path: Path,
    *extra_args: str,
    triton_interpret: bool = False,
    timeout: int = 300,
    extra_env: dict | None = None,
):
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(BENCH / name),
        "-q",
        "-p",
        "no:cacheprovider",
        "--benchmark-json",
        str(json_path),
        "--benchmark-columns=median",
        *extra_args,
    ]
    proc = subprocess.run(
        cmd,
        cwd=REPO,
        env={**_env(triton_interpret), **(extra_env or {})},
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, f"{name} failed (rc={proc.returncode}):\n{tail}"
    assert json_path.exists(), f"{name} wrote no JSON:\n{tail}"
    data = json.loads(json_path.read_text())
    return data, tail


def _check_rows(data, *kinds):
    rows = [b["extra_info"] for b in data["benchmarks"]]
    assert rows, "no benchmark recorded"
    for r in rows:
        assert r["kind"] in kinds
        assert r["quick"] is True
        assert r["median_s"] > 0 and r["images_per_s"] > 0
    assert data["machine_info"]["inception_fast"]["result_basename"]
    return rows


@pytest.fixture(scope="module")
def bench_jsons(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    thr, _ = _run_bench("bench_throughput.py", out / "bench.json", extra_env={"INCEPTION_FAST_BENCH_PROFILE": "1"})
    thr_rows = _check_rows(thr, "throughput")
    assert {"torchvision", "reference", "fused_torch"} <= {r["model"] for r in thr_rows}
    profiled = [r for r in thr_rows if r.get("kernel_profile")]
    assert profiled and all(r["memory_format"] == "channels_last" for r in profiled)
    for r in profiled:  # on CPU: the ops' own time
        assert r["kernel_profile"]["us_per_call"] > 0 and r["kernel_profile"]["kernels"], r["kernel_profile"]
    assert all(isinstance(r["measured_choices"], list) for r in thr_rows if r["model"].startswith("fused_"))
    blk, _ = _run_bench("bench_blocks.py", out / "blocks.json")
    rows = _check_rows(blk, "block", "stage")
    blk_rows = [r for r in rows if r["kind"] == "block"]
    assert {r["block"] for r in blk_rows} >= {"stem", "inception3a", "inception5b"}
    for r in blk_rows:
        assert r["flops"] > 0 and r["bytes"] > 0 and r["tflops"] > 0 and r["gbps"] > 0
    # Every stage outside the blocks, torchvision's and FusedGoogLeNet's, with its work counted.
    sys.path.insert(0, str(REPO))
    from benchmarks.helpers.settings import STAGES

    stage_rows = {(r["block"], r["impl"]): r for r in rows if r["kind"] == "stage"}
    assert set(stage_rows) == {(st, impl) for st in STAGES for impl in ("torchvision", "fused")}
    for (st, impl), r in stage_rows.items():
        assert r["bytes"] > 0 and (r["flops"] > 0) == (not st.startswith("maxpool")), r
        assert r["roofline_fraction"] is None and r["ceiling_source"] is None  # a CPU run: no roofline
        if impl == "fused":  # the same function as torchvision's layers, and what was chosen (on CPU: pools only)
            assert r["rel_error_vs_torchvision"] < 1e-4, r
            assert all(c["choice"] == "CPU_POOL_CHOICE" for c in r["measured_choices"]), r
            assert r["measured_choices"] or "pool" not in st, r
    return out


def test_benchmarks_and_report_run(bench_jsons):
    out = bench_jsons
    md, chart, merged = out / "report.md", out / "chart.png", out / "merged.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH / "report.py"),
            str(out / "bench.json"),
            str(out / "blocks.json"),
            str(out / "absent.json"),
            "--md",
            str(md),
            "--chart",
            str(chart),
            "--merged-json",
            str(merged),
            "--short",
        ],
        cwd=REPO,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = md.read_text()
    assert "## Throughput" in text and "| torchvision eager |" in text
    assert "## Per block" in text and "| inception3a |" in text
    assert "## Stages outside the blocks" in text and "| maxpool3 |" in text and "| head (avgpool + fc) |" in text
    assert "- roofline: none" in text  # no CUDA: no ceilings, no fractions
    assert "µs per stage outside the blocks" in proc.stdout
    assert "absent.json (not found)" in text  # a missing input is reported, not fatal
    from benchmarks.helpers.environment import triton_ptxas

    ptxas = triton_ptxas()  # the header names the ptxas Triton compiles with, where there is one
    assert (f"(ptxas {ptxas})" in text) if ptxas else "(ptxas" not in text
    assert "Where the time goes" in text
    assert "torchvision eager" in proc.stdout  # the short table
    assert chart.exists() or "matplotlib" in proc.stderr
    assert len(json.loads(merged.read_text())["benchmarks"]) >= 2


def test_triton_cases_run_under_the_interpreter(tmp_path):
    """The Triton block and Triton launch-1 paths (the only GPU-kernel calls the benchmarks
    make themselves: launch 1 whole and each of its roles alone), on the smallest quick block; on
    CPU this needs the interpreter.  Each launch 1 wrote its slices right."""
    pytest.importorskip("triton")
    from inception_fast.testing import TOLERANCE

    data, tail = _run_bench(
        "bench_blocks.py",
        tmp_path / "triton.json",
        "-k",
        "inception3a and (triton or launch1_reduce or launch1_pool)",
        triton_interpret=True,
    )
    rows = {r["impl"]: r for r in _check_rows(data, "block")}
    assert set(rows) == {"triton", "launch1_triton", "launch1_reduce", "launch1_pool"}, tail
    for impl in ("launch1_triton", "launch1_reduce", "launch1_pool"):
        assert rows[impl]["rel_error_vs_torch_backend"] < TOLERANCE["fp32"], rows[impl]
    # Each role's work is its share of the whole launch's.
    whole, roles = rows["launch1_triton"], (rows["launch1_reduce"], rows["launch1_pool"])
    assert sum(r["flops"] for r in roles) == whole["flops"] and all(0 < r["bytes"] < whole["bytes"] for r in roles)


def test_cpu_peers_run_where_installed(tmp_path):
    """ONNX Runtime and OpenVINO (f32 and bf16, where the CPU has bf16) at the quick size, from
    one ONNX export, which is gone from the temporary directory when the run ends; skipped where
    the bench extra is not installed (CI installs it)."""
    for module in ("onnxruntime", "openvino", "onnx"):
        pytest.importorskip(module)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    data, tail = _run_bench(
        "bench_throughput.py",
        tmp_path / "peers.json",
        "--peers",
        "--bench-device",
        "cpu",
        "-k",
        "onnxruntime or openvino",
        extra_env={"INCEPTION_FAST_BENCH_DTYPES": "fp32,bf16", "TMPDIR": str(tmp)},
    )
    assert not [p.name for p in tmp.iterdir() if p.name.startswith("inception_fast_onnx_")]
    rows = _check_rows(data, "throughput")
    assert {(r["model"], r["dtype"]) for r in rows} >= {("onnxruntime", "fp32"), ("openvino", "fp32")}, tail
    for r in rows:
        assert r["rel_error_vs_torchvision"] is not None and r["q1_s"] <= r["median_s"] <= r["q3_s"]
        if r["model"] == "openvino":
            assert r["inference_precision"] == {"fp32": "f32", "bf16": "bf16"}[r["dtype"]]


def _cpu_row(model, median_s, dtype="fp32", fmt="channels_last", batch=8, threads=2, spread=0.02, **extra):
    return {
        "kind": "throughput",
        "model": model,
        "dtype": dtype,
        "memory_format": fmt,
        "batch": batch,
        "device": "cpu",
        "cpu_threads": threads,
        "median_s": median_s,
        "q1_s": median_s * (1 - spread),
        "q3_s": median_s * (1 + spread),
        "images_per_s": batch / median_s,
        "timing": "perf_counter",
        **extra,
    }


def test_report_holds_cpu_rows_against_the_best_peer_per_precision(tmp_path):
    """× best peer: fp32 against the fastest of ONNX Runtime, OpenVINO f32 and torch.compile,
    bf16 against OpenVINO bf16 (fp32's table first); ≈ where the spreads overlap; 1- and 2-thread
    runs stay apart, and a run without an NCHW torchvision row shows none."""
    sys.path.insert(0, str(REPO))
    from benchmarks import report

    two = [
        _cpu_row("torchvision", 0.311, fmt="contiguous"),
        _cpu_row("torchvision", 0.166),
        _cpu_row("fused_torch", 0.172, rel_error_vs_torchvision=1e-6),
        _cpu_row("tv_compile", 0.135),
        _cpu_row("onnxruntime", 0.129),
        _cpu_row("openvino", 0.157, inference_precision="f32"),
        _cpu_row("onnxruntime", 0.0131, batch=1, spread=0.3),
        _cpu_row("fused_torch", 0.0130, batch=1),
        _cpu_row("fused_onednn", 0.180, q1_s=None, q3_s=None, min_s=0.170, max_s=0.200),  # min-max, no quartiles
        _cpu_row("fused_torch", 0.101, dtype="bf16", rel_error_vs_torchvision=2e-3),
        _cpu_row("openvino", 0.067, dtype="bf16", inference_precision="bf16"),
    ]
    one = [_cpu_row("fused_torch", 0.300, threads=1), _cpu_row("onnxruntime", 0.250, threads=1)]
    paths = []
    for name, rows in (("two.json", two), ("one.json", one)):
        path = tmp_path / name
        benchmarks = [
            {"name": f"test_throughput[{r['model']}-{r['dtype']}-{r['memory_format']}-b{r['batch']}]", "extra_info": r}
            for r in rows
        ]
        path.write_text(json.dumps({"machine_info": {}, "benchmarks": benchmarks}))
        paths.append(str(path))
    merged = report.load(paths)
    assert len(merged["benchmarks"]) == len(two) + len(one)  # the 1-thread run overwrote nothing
    text = report.throughput_markdown(report._rows(merged, "throughput"))
    assert "| torchvision eager | 25.7 (1.00×) |" in text  # 8 images in 311 ms: a rate under 100 keeps 3 digits
    assert "### Against the CPU peers" in text
    assert "#### cpu (2 threads) fp32" in text and "#### cpu (2 threads) bf16" in text
    assert "#### cpu (1 thread) fp32" in text
    assert text.index("#### cpu (2 threads) fp32") < text.index("#### cpu (2 threads) bf16")  # fp32 first
    # The 1-thread run timed no NCHW torchvision: its table has no row for it.
    assert "NCHW input" not in text.split("#### cpu (1 thread) fp32")[1].split("####")[0]
    assert "| torchvision eager, NCHW input | 311.0 (304.8–317.2) | 0.41× |" in text
    assert "| FusedGoogLeNet[torch] | 172.0 (168.6–175.4) | 0.75× |" in text  # against ONNX Runtime
    assert "| FusedGoogLeNet[onednn] | 180.0 (170.0–200.0) | 0.72× | — | — |" in text  # its min-max spread
    assert "| 13.0 (12.7–13.3) | 1.01× ≈ |" in text  # batch 1: inside ONNX Runtime's wide spread
    assert "| FusedGoogLeNet[torch] | 101.0 (99.0–103.0) | 0.66× |" in text  # bf16: against OpenVINO bf16
    assert "| OpenVINO, f32 |" in text and "| OpenVINO, bf16 |" in text
    # The largest errors, per dtype.
    assert "| FusedGoogLeNet[torch] | bf16 | 2.0e-03 |\n| FusedGoogLeNet[torch] | fp32 | 1.0e-06 |" in text
    assert "Best peer: batch 8: ONNX Runtime (CPU provider); batch 1: ONNX Runtime (CPU provider)." in text
    # The best peer's own row is 1.00× with no ≈ (it is not compared with itself).
    assert "| ONNX Runtime (CPU provider) | 129.0 (126.4–131.6) | 1.00× | 13.1 (9.2–17.0) | 1.00× |" in text
    # The short table heads with the run on the most threads.
    short = report.throughput_short(report._rows(merged, "throughput"))
    assert short.startswith("img/s, cpu (2 threads) fp32")
    # The short lines: the best peer's median over the fused rows', batch 8 then batch 1.
    assert (
        "× best peer, cpu (2 threads) fp32 (b8, b1; ≈ spreads overlap): FusedGoogLeNet[torch] 0.75× 1.01× ≈; "
        "FusedGoogLeNet[onednn] 0.72× —\n" in short
    )
    assert "× best peer, cpu (2 threads) bf16 (b8; ≈ spreads overlap): FusedGoogLeNet[torch] 0.66×" in short
    assert "× best peer, cpu (1 thread) fp32 (b8; ≈ spreads overlap): FusedGoogLeNet[torch] 0.83×" in short
    # Only the channels_last config's engines are peers: a faster NCHW compile row is not one.
    nchw_compile = _cpu_row("tv_compile", 0.050, fmt="contiguous")
    index = report.throughput_index([two[1], two[4], nchw_compile])  # the channels_last config first
    assert report.best_peers(index)[("cpu (2 threads)", "fp32", 8)] is two[4]


def _row(model, median_s, timing="cuda_events", **extra):
    return {
        "kind": "throughput",
        "model": model,
        "dtype": "bf16",
        "memory_format": "channels_last",
        "batch": 256,
        "device": "cuda",
        "median_s": median_s,
        "images_per_s": 256 / median_s,
        "timing": timing,
        **extra,
    }


def test_report_holds_graph_replays_against_the_compile_anchor():
    """CUDA-graph rows get their × compile from the eager config's anchor (at batch 1:
    reduce-overhead's); a case whose capture failed (timed eagerly) stays apart from the eager rows;
    profiles are tabulated (the top 8 names, and a profile that failed with its error); backend="auto"'s
    picks are counted per backend; bf16's tables come before fp32's."""
    sys.path.insert(0, str(REPO))
    from benchmarks import report

    prof = {
        "source": "cuda kernels",
        "us_per_call": 4000.0,
        "kernels": [{"name": "_branch_convs_kernel", "us": 3000.0, "calls": 9, "share": 0.75}]
        + [{"name": f"kernel_{i}", "us": 100.0 - i, "calls": 1, "share": 0.02} for i in range(8)],
    }
    rows = [
        _row("torchvision", 0.012),
        _row("tv_compile", 0.006, compile_s=30.0),
        _row("fused_triton", 0.010, kernel_profile=prof, busy=0.4),
        _row("fused_triton", 0.004, timing="cuda_graph"),
        _row("fused_cuda", 0.011, cuda_graph_error="RuntimeError: capture failed"),
        _row("tv_compile_ro", 0.0005, batch=1, compile_s=25.0),
        _row(
            "fused_triton",
            0.0004,
            batch=1,
            timing="cuda_graph",
            captured_s=0.000625,
            captured_q1_s=0.0006,
            captured_q3_s=0.00065,
        ),
        _row(
            "fused_cuda",
            0.0005,
            batch=1,
            timing="cuda_graph",
            captured_error="RuntimeError: a | b",
            kernel_profile={"error": "RuntimeError: CUPTI unavailable"},
        ),
        _row("fused_auto", 0.009, auto_choices={"triton": 7, "cuda": 2}),
        _row("torchvision", 0.030, dtype="fp32"),
    ]
    rows[2]["rel_error_vs_torchvision"] = 2e-3  # the largest of fused_triton's configs: the one listed
    rows[3]["rel_error_vs_torchvision"] = 1e-3
    rows[4]["rel_error_vs_torchvision"] = float("nan")  # a NaN is listed whatever comes after it
    rows[7]["rel_error_vs_torchvision"] = 1e-4
    index = report.throughput_index(rows)
    assert index[("cuda", "bf16", "channels_last", 256)]["fused_triton"]["x_eager"] == pytest.approx(1.2)
    assert index[("cuda", "bf16", "channels_last, CUDA graph", 1)]["fused_triton"]["x_compile"] == pytest.approx(1.25)
    graph = index[("cuda", "bf16", "channels_last, CUDA graph", 256)]["fused_triton"]
    assert graph["x_compile"] == pytest.approx(1.5)
    assert index[("cuda", "bf16", "channels_last", 256)]["fused_triton"]["median_s"] == 0.010
    assert "fused_cuda" not in index[("cuda", "bf16", "channels_last", 256)]
    text = report.throughput_markdown(rows)
    assert "channels_last, CUDA graph b256 | FusedGoogLeNet[triton] | 4.000" in text
    assert "| FusedGoogLeNet[triton] | 25,600 (1.20×) |" in text  # 0.010 s against torchvision's 0.012
    assert "| FusedGoogLeNet[triton] | bf16 | 2.0e-03 |" in text and "| FusedGoogLeNet[cuda] | bf16 | nan |" in text
    assert "| cuda bf16 channels_last b1 | torch.compile(tv), reduce-overhead, freezing | 0.500 |" in text
    assert "torch.compile(tv), reduce-overhead, freezing b1 25.0 s" in text
    assert "| _branch_convs_kernel | 3,000.0 | 9 | 75% |" in text
    assert "| kernel_6 |" in text and "| kernel_7 |" not in text  # the top 8 of the 9 names the profile kept
    # Timed 10 ms, 4,000 µs of kernels per call: busy 40%, 8 kernel names shown.
    assert "| cuda bf16 channels_last b256 | FusedGoogLeNet[triton] | 10.000 | 4.000 | 40% | 8 |" in text
    assert "The profiler failed for:\n- FusedGoogLeNet[cuda] (cuda bf16 channels_last b1): RuntimeError: CUPTI" in text
    assert "| cuda bf16 channels_last b256 | cuda × 2, triton × 7 |" in text
    assert text.index("### cuda bf16 channels_last\n") < text.index("### cuda fp32 channels_last\n")
    assert "busy" in report.throughput_short(rows)
    # The anchor's own cell holds its × eager and no × compile over itself.
    assert "| torch.compile(tv), freezing | 42,667 2.00× | — |" in report.throughput_short(rows)
    # batch 1 through CapturedForward, per call as the reduce-overhead anchor is timed
    assert "| b1 | FusedGoogLeNet[triton] | 0.400 | 0.625 (0.600–0.650) | 0.80× |" in text
    assert "| b1 | FusedGoogLeNet[cuda] | 0.500 | failed: RuntimeError: a / b | — |" in text
    assert "FusedGoogLeNet[triton] 0.400 (1.25× eager compile), per CapturedForward call 0.625 (0.80×)" in (
        report.throughput_short(rows)
    )
    # torch.compile is also a bf16 CPU peer: on a GPU it stays the anchor, with no peers' table
    assert "CPU peers" not in text and "best peer" not in report.throughput_short(rows)


def test_report_keeps_the_eager_row_beside_a_failed_capture_of_the_same_case(tmp_path):
    """bench.json's eager row and graph.json's row of the same case whose capture failed (timed
    eagerly, so the same name, timing and batch) are two results: the eager one stays in the eager
    table; so is the same case at another batch from a third file."""
    sys.path.insert(0, str(REPO))
    from benchmarks import report

    def bench_file(name, **extra):
        info = {"device": "cuda", "timing": "cuda_events", "batch": 256, **extra}
        doc = {"benchmarks": [{"name": "test_throughput[fused_cuda]", "fullname": "x::fused_cuda", "extra_info": info}]}
        path = tmp_path / name
        path.write_text(json.dumps(doc))
        return str(path)

    eager = bench_file("bench.json", median_s=0.010)
    failed = bench_file("graph.json", median_s=0.011, cuda_graph_error="RuntimeError: capture failed")
    batch1 = bench_file("batch1.json", median_s=0.001, batch=1)
    rows = report.load([eager, failed, batch1])["benchmarks"]
    assert sorted(r["extra_info"]["median_s"] for r in rows) == [0.001, 0.010, 0.011]


class _Benchmark:
    """pytest-benchmark's fixture as measure() uses it: extra_info, group and one pedantic round that runs fn."""

    def __init__(self):
        self.extra_info, self.group = {}, None

    def pedantic(self, fn, rounds, iterations, warmup_rounds):
        fn()


def test_measure_falls_back_to_eager_timing_when_capture_fails():
    sys.path.insert(0, str(REPO))
    from benchmarks.helpers.measure import measure
    from benchmarks.helpers.settings import settings

    s = settings()
    bench = _Benchmark()
    timing = measure(bench, lambda: None, s, batch=1, extra={"kind": "block"}, cuda_graph=True)
    assert timing.median_s > 0
    assert bench.extra_info["timing"] != "cuda_graph" and "cuda_graph_error" in bench.extra_info


def test_measure_records_time_fns_median_spread_and_extremes(monkeypatch):
    """measure(): the row's extra_info holds time_fn's median, quartiles, min and max of its samples
    (a clock that each call moves by the next of 2, 1, 100, 4, 3 s), the images per second at the
    row's batch, the case's own fields, and the rounds pytest-benchmark is asked for; interleaved
    rounds and their table hold each round's median and the median, min and max over rounds; a
    parity that cannot be computed is None."""
    sys.path.insert(0, str(REPO))
    import torch

    import inception_fast.timing as timing
    from benchmarks.helpers.measure import interleaved_rounds, measure, parity, rounds_table

    now, durations = [0.0], iter([2.0, 1.0, 100.0, 4.0, 3.0] * 4)
    monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))

    def call():
        now[0] += next(durations)

    class Bench:
        def __init__(self):
            self.extra_info, self.group, self.rounds = {}, None, None

        def pedantic(self, fn, rounds, iterations, warmup_rounds):
            self.rounds = rounds

    s = types.SimpleNamespace(
        device=torch.device("cpu"), cuda_graph=False, warmup=0, repeats=5, min_time_s=0.0, quick=True, rounds=3
    )
    bench = Bench()
    t = measure(bench, call, s, batch=6, extra={"kind": "block", "block": "inception3a"}, group="g")
    info = bench.extra_info
    assert t.median_s == 3.0 and (info["median_s"], info["q1_s"], info["q3_s"]) == (3.0, 2.0, 4.0)
    assert (info["min_s"], info["max_s"], info["samples"]) == (1.0, 100.0, 5)
    assert info["images_per_s"] == 2.0 and info["batch"] == 6 and info["timing"] == "perf_counter"
    assert info["kind"] == "block" and info["block"] == "inception3a" and bench.group == "g" and bench.rounds == 3

    # Each round: one warm-up call, then the median of 3 timed calls (4 of [1, 100, 4], 2 of [2, 1, 100], ...).
    durations = iter([2.0, 1.0, 100.0, 4.0, 3.0, 2.0, 1.0, 100.0, 5.0, 1.0, 3.0, 2.0])
    rows = interleaved_rounds({"b1": {"x": call}}, rounds=3, repeats=3)
    assert rows == {("b1", "x"): [4.0, 2.0, 2.0]}
    assert "| b1 | x | 2000.000 | 2000.000 | 4000.000 |" in rounds_table(rows, "batch", "calls", 3)
    # The median over rounds is of the sorted times, not the middle round's.
    assert "| b8 | y | 2.000 | 1.000 | 3.000 |" in rounds_table({("b8", "y"): [3e-3, 1e-3, 2e-3]}, "batch", "calls", 3)
    # A parity that cannot be computed (shapes differ) is recorded as None, not raised.
    assert parity(torch.ones(2), torch.ones(3)) is None and parity(torch.ones(2), torch.ones(2)) == 0.0


def test_kernel_profile_ranks_the_time_per_call_of_each_kernel_or_op(monkeypatch):
    """kernel_profile on a stub profiler's events: fn runs once, then ``calls`` times under the
    profiler, all in inference mode; on CUDA (CPU and CUDA activities) the device events only, summed
    per name; on CPU each op's self time, not its total; per call: the time, the launches and the
    total; ranked by time, the ``top`` kept, each with its share of the total; a profiler that fails
    is one error line."""
    sys.path.insert(0, str(REPO))
    import torch
    import torch.profiler
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity

    from benchmarks.helpers.profiling import kernel_profile

    def event(name, us, device=DeviceType.CUDA):
        return types.SimpleNamespace(
            name=name, device_type=device, time_range=types.SimpleNamespace(elapsed_us=lambda: us)
        )

    cuda_events = [event("gemm", 30.0), event("relu", 6.0), event("launch", 500.0, DeviceType.CPU)]
    cuda_events += [event("gemm", 30.0), event("pool", 15.0), event("relu", 6.0)]
    cpu_ops = [
        types.SimpleNamespace(key="aten::relu", self_cpu_time_total=10.0, cpu_time_total=10.0, count=3),
        types.SimpleNamespace(key="aten::conv2d", self_cpu_time_total=5.0, cpu_time_total=300.0, count=3),
        types.SimpleNamespace(key="aten::mkldnn_convolution", self_cpu_time_total=90.0, cpu_time_total=90.0, count=6),
    ]
    activities = []

    class Profile:
        def __init__(self, activities: list):
            self.activities = activities

        def __enter__(self):
            activities.append((self.activities, len(calls)))
            return self

        def __exit__(self, *exc):
            return False

        def events(self):
            return cuda_events

        def key_averages(self):
            return cpu_ops

    monkeypatch.setattr(torch.profiler, "profile", Profile)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    calls = []

    def fn():
        calls.append(torch.is_inference_mode_enabled())

    prof = kernel_profile(fn, torch.device("cuda"), calls=2, top=2)
    assert calls == [True] * 3 and activities == [([ProfilerActivity.CPU, ProfilerActivity.CUDA], 1)]
    total = 30.0 + 6.0 + 30.0 + 15.0 + 6.0
    assert prof == {
        "source": "cuda kernels",
        "us_per_call": pytest.approx(total / 2),
        "kernels": [
            {"name": "gemm", "us": pytest.approx(30.0), "calls": 1.0, "share": pytest.approx(60.0 / total)},
            {"name": "pool", "us": pytest.approx(7.5), "calls": 0.5, "share": pytest.approx(15.0 / total)},
        ],
    }
    calls.clear()
    activities.clear()
    prof = kernel_profile(fn, torch.device("cpu"), calls=3)
    assert calls == [True] * 4 and activities == [([ProfilerActivity.CPU], 1)]
    assert prof["source"] == "cpu ops (self time)" and prof["us_per_call"] == pytest.approx(105.0 / 3)
    assert [(k["name"], k["us"], k["calls"], k["share"]) for k in prof["kernels"]] == [
        ("aten::mkldnn_convolution", pytest.approx(30.0), 2.0, pytest.approx(90.0 / 105.0)),
        ("aten::relu", pytest.approx(10.0 / 3), 1.0, pytest.approx(10.0 / 105.0)),
        ("aten::conv2d", pytest.approx(5.0 / 3), 1.0, pytest.approx(5.0 / 105.0)),
    ]

    def no_cupti():
        raise RuntimeError("CUPTI unavailable\nsecond line")

    assert kernel_profile(no_cupti, torch.device("cpu")) == {"error": "RuntimeError: CUPTI unavailable"}


def test_first_forward_times_fresh_processes_cold_and_warm(tmp_path):
    """benchmarks/first_forward.py: a cold and a warm fresh process per batch, each reporting its
    time to the first result (and with --baseline the rows without the precompile and with
    Triton's own tuning); bad arguments are refused."""
    out = tmp_path / "first.json"
    cmd = [sys.executable, "-m", "benchmarks.first_forward", "--device", "cpu", "--dtype", "fp32"]
    run = subprocess.run(
        [*cmd, "--batches", "1", "--size", "32", "--no-compile", "--baseline", "--json", str(out)],
        cwd=REPO,
        env=_env(triton_interpret=False),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["kind"], r["cache"]) for r in rows] == [
        ("fused", "cold"),
        ("fused", "warm"),
        ("fused, tuning not deferred", "cold"),
        ("fused, no precompile", "cold"),
        ("fused, no precompile", "warm"),
        ("fused, Triton's tuning", "cold"),
    ]
    for r in rows:
        assert 0 < r["first_forward_s"] <= r["to_first_result_s"] < r["to_tuned_s"], r
        assert r["steady_forward_s"] > 0, r
    # --baseline: tuning not deferred, no precompile, then Triton's own tuning (one compile at a
    # time, 25 + 100 ms), each in its own rows only, whatever the caller's environment.
    sys.path.insert(0, str(REPO))
    from benchmarks import first_forward

    no_pre, waits = first_forward.NO_PRECOMPILE, first_forward.NOT_DEFERRED
    assert [r["tuning_env"] for r in rows] == [{}, {}, waits, no_pre, no_pre, first_forward.TRITON_TUNING]
    assert "| fused | 1 | warm |" in run.stdout
    bad = subprocess.run([*cmd, "--batches", "x"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--batches must be comma-separated integers" in bad.stderr


def test_first_forward_keeps_a_cut_process_first_result_and_kills_its_group(monkeypatch, tmp_path):
    """A first_forward process past its time keeps the first result it printed, and its process
    group dies with it (the precompile's workers must not go on filling the next row's cache);
    under a deadline a cold row gets three warm rows' share of the time left."""
    import time

    sys.path.insert(0, str(REPO))
    from benchmarks import first_forward

    pid_file = tmp_path / "worker.pid"
    child = (
        "import json, subprocess, sys, time\n"
        f"w = subprocess.Popen(['sleep', '60']); open({str(pid_file)!r}, 'w').write(str(w.pid))\n"
        "print('FIRST ' + json.dumps({'first_forward_s': 0.5, 'to_first_result_s': 1.5}), flush=True)\n"
        "time.sleep(60)\n"
    )
    monkeypatch.setattr(first_forward, "CHILD", child)
    t0 = time.time()
    row = first_forward.run_child("fused", "cpu", 1, "fp32", 32, dict(os.environ), 5.0)
    assert time.time() - t0 < 30
    assert row == {"first_forward_s": 0.5, "to_first_result_s": 1.5, "error": "tuned not reached in 5 s"}
    assert_gone(int(pid_file.read_text()), "the child's worker outlived its killed process group")
    # A child that never printed its first result says so.
    monkeypatch.setattr(first_forward, "CHILD", "import time; time.sleep(60)")
    assert first_forward.run_child("fused", "cpu", 1, "fp32", 32, dict(os.environ), 2.0) == {
        "error": "first result not reached in 2 s"
    }
    assert first_forward.row_timeout(300.0, 0, ["cold", "warm"]) == 300.0
    share = first_forward.row_timeout(300.0, time.time() + 80, ["cold", "warm", "cold", "warm"])
    assert 29 < share <= 30
    assert 15 < first_forward.row_timeout(300.0, time.time() + 80, ["warm", "cold", "warm"]) <= 16


def test_first_forward_stopped_by_sigterm_kills_its_child_group_and_writes_its_rows(tmp_path):
    """The GPU suite's step timeout signals first_forward's process group, which its children (own
    sessions) are not in: a SIGTERM kills the running child's group and still writes the JSON, with
    the first result the stopped child had printed."""
    import signal
    import time

    pid_file, out = tmp_path / "worker.pid", tmp_path / "first.json"
    child = (
        "import json, subprocess, time\n"
        "print('FIRST ' + json.dumps({'first_forward_s': 0.5, 'to_first_result_s': 1.5}), flush=True)\n"
        f"w = subprocess.Popen(['sleep', '60']); open({str(pid_file)!r}, 'w').write(str(w.pid))\n"
        "time.sleep(60)\n"
    )
    driver = (
        "import sys\n"
        "from benchmarks import first_forward\n"
        f"first_forward.CHILD = {child!r}\n"
        f"sys.exit(first_forward.main(['--device', 'cpu', '--batches', '1', '--no-compile', '--json', {str(out)!r}]))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", driver], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for _ in range(300):
        if pid_file.exists() and pid_file.read_text():
            break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"the child never started: {proc.communicate()}")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 1
    assert_gone(int(pid_file.read_text()), "the running child's worker outlived a SIGTERM to first_forward")
    result = json.loads(out.read_text())
    assert result["stopped"] == f"stopped by signal {int(signal.SIGTERM)}"
    (row,) = result["rows"]  # the stopped process's first result is kept
    assert row["first_forward_s"] == 0.5 and row["to_first_result_s"] == 1.5
    assert row["error"] == f"tuned not reached: stopped by signal {int(signal.SIGTERM)}"


def test_report_lists_the_measured_pools_and_head():
    """The stages' measured choices that results recorded before the generic list kept in stem_conv1
    (helpers.choices.stem_choice) reach the report: each max pool and the head with the candidates'
    µs; rows that carry the generic list (measured_choices) get no such tables."""
    sys.path.insert(0, str(REPO))
    from benchmarks import report

    stem = {
        "chosen": "triton",
        "us": {"channels_last": 300.0, "triton": 100.0},
        "errors": {},
        "conv_relu": [],
        "stages": [
            {"stage": "head", "shape": [256, 1024, 7, 7], "chosen": "triton", "us": {"aten": 15.0, "triton": 9.5}},
            {"stage": "max pool", "shape": [256, 64, 112, 112], "chosen": "aten", "us": {"aten": 80.0}},
        ],
    }
    text = report.throughput_markdown([_row("fused_triton", 0.008, stem_conv1=stem)])
    assert "| cuda bf16 channels_last b256 | head 256x1024x7x7 | triton | aten 15.0, triton 9.5 |" in text
    assert "| max pool 256x64x112x112 | aten | aten 80.0 |" in text
    generic = [{"choice": "POOL_CHOICE", "chosen": "aten", "key": {"shape": [256, 64, 112, 112]}}]
    text = report.throughput_markdown([_row("fused_triton", 0.008, stem_conv1=stem, measured_choices=generic)])
    assert "The max pools and the head" not in text and "The stem's first conv" not in text


H200 = "NVIDIA H200"


def test_ceilings_come_from_the_run_then_the_device_table(tmp_path, monkeypatch):
    """A measurement taken on this device wins; else the known-device table (H200, H100 SXM); an
    unknown device, or a measurement from another device, gets no table row; the fraction is
    max(FLOPs / FLOP ceiling, bytes / byte ceiling) over the time."""
    sys.path.insert(0, str(REPO))
    from benchmarks.helpers import roofline

    path = tmp_path / "ceilings.json"
    path.write_text(json.dumps({"device_name": H200, "flop_per_s": 700e12, "byte_per_s": 4.0e12}))
    measured = roofline.resolve_ceilings(H200, str(path))
    assert (measured["flop_per_s"], measured["byte_per_s"]) == (700e12, 4.0e12)
    assert measured["source"] == "measured in this run (ceilings.json)"
    table = roofline.resolve_ceilings("NVIDIA H100 80GB HBM3", str(path))  # measured on another device
    assert (table["flop_per_s"], table["byte_per_s"]) == (779e12, 2.98e12) and table["source"].startswith("table")
    assert roofline.resolve_ceilings(H200, str(tmp_path / "absent.json"))["byte_per_s"] == 4.3e12
    assert roofline.resolve_ceilings("NVIDIA H100 PCIe", None) is None  # other ceilings than the SXM part
    # compute-bound: 7e12 FLOP at 700 TFLOP/s is 10 ms; 1e9 B at 4 TB/s is 0.25 ms; run in 20 ms.
    r = roofline.roofline_with(7e12, 1e9, 0.020, measured, applies=True)
    assert r["roofline_fraction"] == pytest.approx(0.5) and r["bound"] == "compute"
    assert r["ceiling_tflops"] == pytest.approx(700) and r["ceiling_source"] == measured["source"]
    # Achieved: 7e12 FLOP in 20 ms is 350 TFLOP/s, 1e9 B in 20 ms is 50 GB/s; the copy ceiling is 4,000 GB/s.
    assert (r["tflops"], r["gbps"], r["ceiling_gbps"]) == pytest.approx((350, 50, 4000))
    r = roofline.roofline_with(1e9, 4e9, 0.004, measured, applies=True)  # memory-bound: 1 ms floor
    assert r["roofline_fraction"] == pytest.approx(0.25) and r["bound"] == "memory"
    assert roofline.roofline_with(1e9, 4e9, 0.004, measured, applies=False)["roofline_fraction"] is None
    assert roofline.roofline_with(1e9, 4e9, 0.004, None, applies=True)["ceiling_tflops"] is None
    # On a CUDA device the fraction is given for bf16 and fp16 work only, against the device's ceilings.
    monkeypatch.setattr(roofline, "ceilings", lambda device: measured)
    import torch

    for dtype, applies in ((torch.bfloat16, True), (torch.float16, True), (torch.float32, False)):
        got = roofline.roofline(1e9, 4e9, 0.004, torch.device("cuda"), dtype)
        assert got["ceiling_tflops"] == pytest.approx(700), dtype
        assert got["roofline_fraction"] == (pytest.approx(0.25) if applies else None), dtype
    # A rate of zero is no measurement (a floor divided by it would be infinite).
    path.write_text(json.dumps({"device_name": H200, "flop_per_s": 700e12, "byte_per_s": 0}))
    assert roofline.read_ceilings(str(path)) is None
    # The measurement's own code path, at toy sizes on the CPU (the suite runs it on the GPU only).
    monkeypatch.setattr(roofline, "GEMM_N", 32)
    monkeypatch.setattr(roofline, "COPY_BYTES", 1 << 16)
    monkeypatch.setattr(roofline, "REPEATS", 2)
    monkeypatch.setattr(roofline, "WARMUP", 1)
    got = roofline.measure_ceilings(__import__("torch").device("cpu"))
    assert got["flop_per_s"] > 0 and got["byte_per_s"] > 0 and got["gemm"]["flops"] == 2 * 32**3
    assert got["copy"]["bytes"] == 2 << 16 and got["gemm"]["repeats"] == 2


def _gpu_row(kind, block, impl, median_s, flops, nbytes, ceil, **extra):
    from benchmarks.helpers.roofline import roofline_with

    return {
        "kind": kind,
        "block": block,
        "impl": impl,
        "device": "cuda",
        "dtype": "bf16",
        "memory_format": "channels_last",
        "batch": 256,
        "timing": "cuda_graph",
        "median_s": median_s,
        "images_per_s": 256 / median_s,
        **roofline_with(flops, nbytes, median_s, ceil, applies=True),
        **extra,
    }


def test_report_blocks_and_stages_tables_hold_their_ratios_and_totals():
    """The blocks table: multiply-adds per image off the row's FLOPs, launch 1 ext over triton, the
    stem's measured first conv per backend, the blocks whose capture failed (kept in the graph-timed
    table), and a detail row per block and implementation (launch 1's error against the torch backend);
    the short blocks table leaves the stem out; the stages table: the sum of every stage's µs per
    implementation and their ratio, the short one in the network's order; × compile against the
    default-mode anchor where reduce-overhead ran at the same config too; measured choices once per
    choice and key, however many rows recorded them."""
    sys.path.insert(0, str(REPO))
    from benchmarks import report

    ceil = {"device_name": H200, "flop_per_s": 800e12, "byte_per_s": 4.0e12, "source": "measured"}
    blocks = [
        _gpu_row("block", "inception3a", "torchvision", 1250e-6, 60e9, 100e6, ceil),
        _gpu_row("block", "inception3a", "triton", 200e-6, 60e9, 100e6, ceil),  # 60 GFLOP at b256: 117.2 MMAC/img
        _gpu_row("block", "inception3a", "launch1_ext", 125e-6, 20e9, 50e6, ceil, rel_error_vs_torch_backend=1e-3),
        _gpu_row("block", "inception3a", "launch1_triton", 100e-6, 20e9, 50e6, ceil),
    ]
    stem = {"chosen": "im2col", "us": {"im2col": 150.0, "direct": 180.0}}
    failed = {"timing": "cuda_events", "cuda_graph_error": "RuntimeError: capture failed"}
    more = [
        _gpu_row("block", "stem", "triton", 150e-6, 10e9, 80e6, ceil, stem_conv1=stem),
        _gpu_row("block", "inception3b", "triton", 300e-6, 60e9, 100e6, ceil, **failed),
    ]
    assert len(report._block_groups([*blocks, *more])) == 1  # the failed capture stays with the graph rows
    text = report.blocks_markdown([*blocks, *more])
    assert "| inception3a | 117.2 | 1,250 (6%) | 200 (37%) | 125 (20%) | 100 (25%) | 1.25× |" in text
    assert "The fused stem (backend triton) ran its first conv as `im2col` (measured, µs of conv1 + ReLU + max" in text
    assert "max pool: im2col 150, direct 180)." in text
    assert "(host time included):\n- inception3b triton: RuntimeError: capture failed\n" in text
    # launch 1 ext: 20 GFLOP and 50 MB in 125 µs, 160 TFLOP/s and 400 GB/s; compute-bound (25 µs floor).
    assert "| inception3a | launch-1 ext |  | 125 | 160.00 | 400 | 20% | compute | 20.00 | 50.0 | 1.0e-03 |" in text
    short = report.blocks_short([*blocks, *more])
    assert "| 3a | 1,250 6% | 200 37% | 125 20% | 100 25% | 1.25× |" in short and "| stem |" not in short
    stages = [
        _gpu_row("stage", "conv2", "torchvision", 100e-6, 6e9, 50e6, ceil),
        _gpu_row("stage", "conv2", "fused", 37.5e-6, 6e9, 50e6, ceil),
        _gpu_row("stage", "maxpool3", "torchvision", 125e-6, 0, 200e6, ceil),
        _gpu_row("stage", "maxpool3", "fused", 62.5e-6, 0, 200e6, ceil),
    ]
    assert "| **all stages outside the blocks** |  |  | 225 | 100 | 2.25× |" in report.stages_markdown(stages)
    # A stage timed one way only (a run cut short) stays out of both totals, which compare like with like.
    one_way = _gpu_row("stage", "conv1", "fused", 250e-6, 60e9, 180e6, ceil)
    total = "| **all stages outside the blocks** (not conv1: timed one way) |  |  | 225 | 100 | 2.25× |"
    assert total in report.stages_markdown([*stages, one_way])
    head = [_gpu_row("stage", "head", impl, 10e-6, 1e9, 4e6, ceil) for impl in ("torchvision", "fused")]
    short = report.stages_short([*head, *stages]).splitlines()
    assert [line.split(" | ")[0] for line in short[3:]] == ["| conv2", "| maxpool3", "| head"]
    both = [
        _row("torchvision", 0.012),
        _row("tv_compile", 0.006),
        _row("tv_compile_ro", 0.004),
        _row("fused_triton", 0.010),
    ]
    fused = report.throughput_index(both)[("cuda", "bf16", "channels_last", 256)]["fused_triton"]
    assert fused["x_compile"] == pytest.approx(0.6)
    # On a GPU the short table heads with bf16 where fp32 ran too.
    assert report.throughput_short([*both, _row("torchvision", 0.030, dtype="fp32")]).startswith(
        "img/s, cuda bf16 channels_last"
    )
    # A stage at exactly the target meets it; the block tables come largest batch first.
    at_target = [_gpu_row("stage", "conv3", "fused", 50e-6, 0, 100e6, ceil, roofline_fraction=0.5)]
    assert "All fused stages measured meet it." in report.stages_markdown(at_target)
    assert [g[0]["batch"] for g in report._block_groups([{**blocks[0], "batch": 1}, *blocks])] == [256, 1]
    # A choice that two rows recorded is listed and counted once; two keys of one choice count two.
    pools = [
        {
            "choice": "POOL_CHOICE",
            "where": where,
            "key": {"device": "cuda:0", "dtype": "bfloat16", "shape": shape},
            "chosen": "triton",
            "us": {"aten": 80.0, "triton": 52.5},
        }
        for where, shape in (("maxpool3", [256, 480, 28, 28]), ("maxpool4", [256, 832, 14, 14]))
    ]
    recorded = [{**stages[1], "measured_choices": pools}, {**stages[3], "measured_choices": pools[::-1]}]
    assert report.measured_choices_short(recorded) == "measured choices, cuda:0 bfloat16 b256: POOL_CHOICE triton×2"
    assert report.measured_choices_markdown(recorded).count("| POOL_CHOICE | maxpool3 |") == 1


def test_report_of_side_inputs_only_holds_first_forward_cold_start_and_training(tmp_path):
    """The GPU suite's check call has no benchmark JSON: report.py reports its first-forward,
    cold-start and training rows alone (no empty benchmark sections), takes the device from their
    recorded environment (a figure a cold-start batch did not record, or a worker pass that started no
    worker, shows as —), and its merged JSON renders the same tables again (given with a training
    file it already holds, that file's rows once); an input of ceilings alone is no result (exit 1)."""
    sys.path.insert(0, str(REPO))
    from benchmarks import report

    env = {"device": "cuda", "device_name": H200, "torch": "2.11.0", "inception_fast": "0.1.0"}
    first = {
        "size": 224,
        "environment": env,
        "rows": [{"kind": "fused", "batch": 1, "cache": "cold", "device": "cuda", "dtype": "bf16",
                  "error": "first result not reached in 40 s"}],
    }  # fmt: skip
    cold = {
        "arch": "sm_90",
        "dtype": "bf16",
        "threads": 16,
        "batches": {"256": {"rows": [], "summary": {"binaries": 186, "launches": 49, "keys": 49, "bench_runs": 301,
                                                    "bench_estimate_package_s": 9.03, "serial_s": 301.5,
                                                    "parallel_s": 40.25}},
                    "1": {"rows": [], "summary": {"binaries": 90, "launches": 30, "keys": 30, "bench_runs": 0,
                                                  "bench_estimate_package_s": 0.0, "serial_s": 150.0,
                                                  "parallel_s": 20.0,
                                                  "workers": {"wall": 12.5, "compiled": 88, "failed": 2}}},
                    "8": {"rows": [], "summary": {"binaries": 95, "launches": 31, "bench_runs": 4,
                                                  "bench_estimate_package_s": 0.5,
                                                  "workers": {"workers": 2, "jobs": 95, "skipped": "no room"}}}},
    }  # fmt: skip
    train = [
        {"op": "backward", "block": "inception4a", "size": 14, "batch": 256, "dtype": "bf16",
         "ms": {"reference": 3.0, "aten_chain": 2.0}, "iqr_ms": {"reference": [2.9, 3.1], "aten_chain": [1.9, 2.1]},
         "errors": {"triton": "AssertionError: the triton block backward differs"}},
        {"op": "bn_train", "block": "inception4a", "size": 14, "batch": 256, "dtype": "bf16",
         "ms": {"reference": 1.2, "aten_chain": 1.0, "triton": 0.4}, "iqr_ms": {}, "errors": {}},
    ]  # fmt: skip
    paths = {}
    for name, data in (("first", first), ("cold", cold), ("bwd", {"rows": train[:1]}), ("bn", {"rows": train[1:]})):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(data))
    md, merged = tmp_path / "r.md", tmp_path / "m.json"
    side = ["--first", str(paths["first"]), "--cold-start", str(paths["cold"])]
    side += ["--train", str(paths["bwd"]), "--train", str(paths["bn"])]
    assert report.main([*side, "--md", str(md), "--merged-json", str(merged)]) == 0
    text = md.read_text()
    assert f"# inception_fast benchmarks: {H200}" in text
    assert "## Throughput" not in text and "## Blocks" not in text
    assert "first result not reached in 40 s" in text
    assert "| 256 | 186 | 49 | 49 | 301 | 9.0 | 301.5 | 40.2 | — |" in text
    assert "| 1 | 90 | 30 | 30 | 0 | 0.0 | 150.0 | 20.0 | 12.5 (88 compiled, 2 failed) |" in text
    assert "| 8 | 95 | 31 | — | 4 | 0.5 | — | — | — (no room) |" in text  # counted only; no worker started
    assert "| backward | inception4a | 14 | 256 | bf16 | 3.00 (2.90–3.10) | 2.00 (1.90–2.10) | AssertionError" in text
    assert "| bn_train | inception4a | 14 | 256 | bf16 | 1.20 | 1.00 | 0.40 | 3.00× |" in text
    again = tmp_path / "again.md"
    assert report.main([str(merged), "--md", str(again)]) == 0
    assert again.read_text().split("## ", 1)[1] == text.split("## ", 1)[1]
    twice = report.load_side(report.load([str(merged)]), train=[str(paths["bwd"])])
    assert twice["train"]["rows"] == train
    (tmp_path / "ceilings_only.json").write_text(json.dumps({"ceilings": {"flop_per_s": 1e15, "byte_per_s": 4e12}}))
    assert report.main([str(tmp_path / "ceilings_only.json"), "--md", str(tmp_path / "c.md")]) == 1
    with pytest.raises(SystemExit) as nothing:
        report.main(["--md", str(md)])
    assert nothing.value.code == 2


def test_report_states_the_measured_ceilings_stages_choices_and_first_forward(tmp_path):
    """On a synthetic GPU run: the header names the ceilings measured in the run, the stage table
    holds each stage's µs and roofline fraction at those ceilings with what FusedGoogLeNet chose (or
    read from the choice store), the measured choices are listed generically (an unknown choice object
    too; a key's false flags left out), largest batch first, the first-forward rows are tabulated (a
    record from before deferred tuning with its second forward), and the merged JSON renders the same
    report again."""
    sys.path.insert(0, str(REPO))
    from benchmarks import report

    ceil = {
        "device_name": H200,
        "flop_per_s": 800e12,
        "byte_per_s": 4.0e12,
        "source": "measured in this run (ceilings.json)",
        "gemm": {"what": "torch.mm bf16 8192x8192x8192", "median_s": 1.375e-3, "repeats": 20},
        "copy": {"what": "Tensor.copy_ of 1024 MiB", "median_s": 0.537e-3, "repeats": 20},
    }
    pool_choice = {
        "choice": "POOL_CHOICE",
        "where": "maxpool3",
        "key": {"device": "cuda:0", "dtype": "bfloat16", "shape": [256, 480, 28, 28], "params": [3, 2, 0, True]},
        "chosen": "triton",
        "us": {"aten": 80.0, "triton": 52.5},
        "errors": {},
        "stored": False,
    }
    fold_choice = {  # a choice object the report has never heard of
        "choice": "FOLD_CHOICE",
        "where": "inception4a",
        "key": {"device": "cuda:0", "dtype": "bfloat16", "shape": [256, 480, 28, 28], "folded": True, "pooled": False},
        "chosen": "folded",
        "us": {"separate": 190.0, "folded": 150.0},
        "errors": {"other": "RuntimeError: no kernel"},
        "stored": False,
    }
    fold_b1 = {**fold_choice, "key": {**fold_choice["key"], "shape": [1, 480, 28, 28]}, "errors": {}}
    configs = ["BLOCK_M=128, BLOCK_N=64, BLOCK_K=32, num_warps=8"] * 4  # a key too long to show whole
    wide_choice = {
        **fold_b1,
        "choice": "WIDE_CHOICE",
        "key": {**fold_b1["key"], "folded": False, "configs": configs},
        "errors": {"narrow": "RuntimeError: " + "x" * 300},
    }
    stored_choice = {
        **pool_choice,
        "where": "maxpool4",
        "key": {**pool_choice["key"], "shape": [256, 832, 14, 14]},
        "chosen": "aten",
        "us": {},
        "stored": True,
    }
    rows = [
        # maxpool3: 200 MB at 4 TB/s = 50 µs floor; fused in 62.5 µs = 80%, torchvision in 125 µs = 40%.
        _gpu_row("stage", "maxpool3", "torchvision", 125e-6, 0, 200e6, ceil),
        _gpu_row("stage", "maxpool3", "fused", 62.5e-6, 0, 200e6, ceil, measured_choices=[pool_choice]),
        # conv1: 60 GFLOP at 800 TFLOP/s = 75 µs floor; fused in 250 µs = 30%, below the 50% target.
        _gpu_row("stage", "conv1", "fused", 250e-6, 60e9, 180e6, ceil, measured_choices=[]),
        _gpu_row(
            "block",
            "inception4a",
            "triton",
            200e-6,
            100e9,
            100e6,
            ceil,
            measured_choices=[fold_b1, fold_choice, wide_choice],
        ),
        # maxpool4: 100 MB at 4 TB/s = 25 µs floor; fused in 50 µs = 50%, its choice read from the store.
        _gpu_row("stage", "maxpool4", "fused", 50e-6, 0, 100e6, ceil, measured_choices=[stored_choice]),
    ]
    blocks = tmp_path / "blocks.json"
    blocks.write_text(
        json.dumps({"machine_info": {}, "benchmarks": [{"name": str(i), "extra_info": r} for i, r in enumerate(rows)]})
    )
    ceilings = tmp_path / "ceilings.json"
    ceilings.write_text(json.dumps(ceil))
    first = tmp_path / "first.json"
    first.write_text(
        json.dumps(
            {
                "size": 224,
                "rows": [
                    {
                        "kind": "fused",
                        "batch": 256,
                        "cache": "cold",
                        "device": "cuda",
                        "dtype": "bf16",
                        "to_first_result_s": 9.5,
                        "first_forward_s": 6.0,
                        "to_tuned_s": 31.25,
                        "steady_forward_s": 0.008,
                    },
                    {
                        "kind": "fused",
                        "batch": 256,
                        "cache": "warm",
                        "device": "cuda",
                        "dtype": "bf16",
                        "error": "not run: past the deadline",
                    },
                    {
                        "kind": "fused",
                        "batch": 1,
                        "cache": "cold",
                        "device": "cuda",
                        "dtype": "bf16",
                        "to_first_result_s": 7.25,
                        "first_forward_s": 3.0,
                        "error": "tuned not reached in 20 s",
                    },
                    {
                        "kind": "fused",
                        "batch": 1,
                        "cache": "warm",
                        "device": "cuda",
                        "dtype": "bf16",
                        "to_first_result_s": 1.5,
                        "first_forward_s": 0.5,
                        "second_forward_s": 0.004,
                        "precompile": {"submitted": 12, "compiled": 9, "failed": 1, "on_disk": 2, "workers_started": 4},
                    },
                ],
            }
        )
    )
    md, merged = tmp_path / "r.md", tmp_path / "merged.json"
    args = [
        str(blocks),
        "--ceilings",
        str(ceilings),
        "--first",
        str(first),
        "--md",
        str(md),
        "--merged-json",
        str(merged),
    ]
    assert report.main(args) == 0
    text = md.read_text()
    assert (
        "- roofline ceilings: 800 TFLOP/s dense bf16 GEMM, 4,000 GB/s device copy (read + write): "
        "measured in this run (ceilings.json)" in text
    )
    assert (
        "- ceilings measured in this run on NVIDIA H200: 800 TFLOP/s (torch.mm bf16 8192x8192x8192: "
        "median 1.375 ms of 20), 4,000 GB/s (Tensor.copy_ of 1024 MiB: median 0.537 ms of 20)" in text
    )
    assert "779" not in text and "2.98" not in text  # no H100 figure left anywhere
    assert "| maxpool3 | 0 | 200 | 125 (40%) | 62.5 (80%) | 2.00× | memory | POOL_CHOICE: triton |" in text
    assert "| conv1 + ReLU + maxpool1 | 60 | 180 | — | 250 (30%) | — | compute | — (nothing measured) |" in text
    assert "Below it (fused): conv1 30%." in text
    assert "at 800 TFLOP/s, 4,000 GB/s" in text  # the blocks' floor names the same ceilings
    assert (
        "| POOL_CHOICE | maxpool3 | 256x480x28x28 | triton | triton 52.5, aten 80.0 | — | params=[3, 2, 0, True] |"
        in text
    )
    assert "| maxpool4 | 0 | 100 | — | 50 (50%) | — | memory | POOL_CHOICE: aten (stored) |" in text
    assert "| POOL_CHOICE | maxpool4 | 256x832x14x14 | aten | stored | — |" in text
    assert text.index("### cuda:0 bfloat16 batch 256\n") < text.index("### cuda:0 bfloat16 batch 1\n")
    assert (
        "| FOLD_CHOICE | inception4a | 256x480x28x28 | folded | folded 150.0, separate 190.0 | "
        "other: RuntimeError: no kernel | folded=True |" in text
    )
    assert (
        "| fused | 256 | cold | 9.5 | 6.0 | 31.2 | 8.0 |" in text
        and "| fused | 256 | warm | not run: past the deadline |" in text
        and "| fused | 1 | cold | 7.2 | 3.0 | tuned not reached in 20 s |" in text
        and "| fused | 1 | warm | 1.5 | 0.5 |  | 4.0 | 12 / 9 / 1 / 2 (4 workers) |" in text
    )
    dropped, key = ("narrow: RuntimeError: " + "x" * 300)[:200], f"configs={configs}"[:137] + "..."
    assert (
        f"| WIDE_CHOICE | inception4a | 1x480x28x28 | folded | folded 150.0, separate 190.0 | {dropped} | {key} |"
        in text
    )
    short = report.measured_choices_short(rows)
    assert short == (
        "measured choices, cuda:0 bfloat16 b256: FOLD_CHOICE folded×1; POOL_CHOICE aten×1 triton×1\n"
        "measured choices, cuda:0 bfloat16 b1: FOLD_CHOICE folded×1; WIDE_CHOICE folded×1"
    )
    # The merged JSON is a complete input by itself: ceilings and first-forward rows included.
    again = tmp_path / "again.md"
    assert report.main([str(merged), "--md", str(again)]) == 0
    assert "- sources: blocks.json, ceilings.json, first.json\n" in text
    assert again.read_text().replace("merged.json", "blocks.json, ceilings.json, first.json") == text


def test_measured_choices_lists_every_choice_object_of_the_package():
    """benchmarks.helpers.choices.measured_choices finds a MeasuredChoice in any loaded
    inception_fast module without being told its name, with the candidates' µs, narrowed to a
    device, dtype and batch."""
    import types
    from typing import NamedTuple

    import torch

    sys.path.insert(0, str(REPO))
    from benchmarks.helpers.choices import measured_choices
    from inception_fast.choices import Choice, MeasuredChoice

    class Key(NamedTuple):
        device: str
        dtype: torch.dtype
        shape: tuple
        folded: bool

    seconds = {"separate": 2e-6, "folded": 1e-6}
    chooser = MeasuredChoice(measure_on=("cpu",), timer=lambda fn, device, repeats: seconds[fn()])
    cpu = torch.device("cpu")
    for batch in (4, 1):
        key = Key("cpu", torch.float32, (batch, 480, 8, 8), True)  # maxpool3's input at 64x64 images
        assert chooser.pick(key, cpu, {"separate": lambda: "separate", "folded": lambda: "folded"}) == "folded"
    module = types.ModuleType("inception_fast._bench_test_fold")
    module.NEW_CHOICE = chooser  # a name no package module uses
    sys.modules[module.__name__] = module
    try:
        found = [c for c in measured_choices(cpu, torch.float32, batch=4, image_size=64) if c["choice"] == "NEW_CHOICE"]
        assert len(found) == 1
        assert found[0]["chosen"] == "folded" and found[0]["us"] == pytest.approx({"separate": 2.0, "folded": 1.0})
        assert found[0]["key"] == {"device": "cpu", "dtype": "float32", "shape": [4, 480, 8, 8], "folded": True}
        assert found[0]["where"] == "maxpool3"
        assert not [c for c in measured_choices(cpu, torch.float16, batch=4) if c["choice"] == "NEW_CHOICE"]
        shapes = [c["key"]["shape"] for c in measured_choices(cpu, shape=(1, 480, 8, 8)) if c["choice"] == "NEW_CHOICE"]
        assert shapes == [[1, 480, 8, 8]]
        # a choice read from the choice store: marked stored, no times
        chooser._choices[Key("cpu", torch.float32, (2, 480, 8, 8), True)] = Choice("folded", stored=True)
        found = [c for c in measured_choices(cpu, batch=2) if c["choice"] == "NEW_CHOICE"]
        assert [(c["chosen"], c["stored"], c["us"]) for c in found] == [("folded", True, {})]
    finally:
        del sys.modules[module.__name__]


def test_measured_choices_name_where_each_key_is_and_each_choice_once():
    """``where``: a conv key's weight tells conv2 from conv3 (the same input), a block key's 3x3
    weight (its dimensions in any order) tells 4b, 4c and 4d apart, and a key without a shape is
    nowhere; a choice bound under a second name in another module is listed once, by its name in
    inception_fast.choices."""
    import types
    from typing import NamedTuple

    import torch

    sys.path.insert(0, str(REPO))
    from benchmarks.helpers.choices import choosers, measured_choices
    from benchmarks.helpers.shapes import block_shapes, stage_shapes
    from inception_fast import choices as package_choices
    from inception_fast.choices import Choice, MeasuredChoice

    class ConvKey(NamedTuple):
        device: str
        dtype: torch.dtype
        shape: tuple
        weight: tuple

    class BlockKey(NamedTuple):
        device: str
        dtype: torch.dtype
        shape: tuple
        w3: tuple

    class BareKey(NamedTuple):
        device: str

    stages, blocks = stage_shapes(64), block_shapes(64)
    chooser = MeasuredChoice(measure_on=("cpu",))
    for name in ("conv2", "conv3"):
        chooser._choices[ConvKey("cpu", torch.float32, (4, *stages[name].input_chw), stages[name].conv_weight)] = (
            Choice("aten")
        )
    for name in ("inception4b", "inception4c", "inception4d"):
        c3 = blocks[name].convs[2]
        w3 = (c3.cout, c3.kh, c3.kw, c3.cin) if name == "inception4c" else (c3.cout, c3.cin, c3.kh, c3.kw)
        chooser._choices[BlockKey("cpu", torch.float32, (4, *blocks[name].input_chw), w3)] = Choice("torch")
    chooser._choices[BareKey("cpu")] = Choice("torch")
    module = types.ModuleType("inception_fast._bench_test_where")
    module.WHERE_CHOICE = chooser
    module.RENAMED_AUTO = package_choices.AUTO  # sorts before inception_fast.choices
    sys.modules[module.__name__] = module
    try:
        found = [
            c["where"] for c in measured_choices(torch.device("cpu"), image_size=64) if c["choice"] == "WHERE_CHOICE"
        ]
        assert found == ["conv2", "conv3", "inception4b", "inception4c", "inception4d", ""]
        named = choosers()
        assert named["AUTO"] is package_choices.AUTO
        assert not [n for n in named if n.endswith("RENAMED_AUTO")]
    finally:
        del sys.modules[module.__name__]


def test_throughput_grid_narrows_to_the_models_and_formats_asked_for(monkeypatch):
    """INCEPTION_FAST_BENCH_MODELS and _FORMATS narrow the grid, the models in the order given; an
    unknown name is refused; fused_auto is a known model but a row on CUDA only (off CUDA it is one of
    the other backends), so a CPU grid, narrowed or not, leaves it out."""
    sys.path.insert(0, str(REPO))
    from benchmarks.helpers import settings as bench_settings

    for name in ("COMPILE", "PEERS", "BATCHES", "DTYPES"):
        monkeypatch.delenv(f"INCEPTION_FAST_BENCH_{name}", raising=False)
    monkeypatch.setenv("INCEPTION_FAST_BENCH_DEVICE", "cpu")
    monkeypatch.setenv("INCEPTION_FAST_BENCH_QUICK", "1")
    monkeypatch.setenv("INCEPTION_FAST_BENCH_MODELS", "fused_torch,torchvision")
    monkeypatch.setenv("INCEPTION_FAST_BENCH_FORMATS", "channels_last")
    cases = bench_settings.throughput_cases()
    assert [(c.model, c.memory_format) for c in cases] == [
        ("fused_torch", "channels_last"),
        ("torchvision", "channels_last"),
    ]
    monkeypatch.setenv("INCEPTION_FAST_BENCH_MODELS", "fused_auto,torchvision")
    assert [c.model for c in bench_settings.throughput_cases()] == ["torchvision"]
    monkeypatch.delenv("INCEPTION_FAST_BENCH_MODELS")
    assert {c.model for c in bench_settings.throughput_cases()} == set(bench_settings.known_models()) - {"fused_auto"}
    monkeypatch.setenv("INCEPTION_FAST_BENCH_MODELS", "fused_tortoise")
    with pytest.raises(ValueError, match="unknown model"):
        bench_settings.throughput_cases()
    monkeypatch.setenv("INCEPTION_FAST_BENCH_FORMATS", "nhwc")
    with pytest.raises(ValueError, match="unknown memory format"):
        bench_settings.settings()


def test_throughput_grid_places_the_compile_anchor_and_the_peers(monkeypatch):
    """The batches run in the order given; the compile anchor at the largest batch and the first
    dtype; on a CPU the peers only beside the channels_last rows, each at the dtypes it runs in, the
    compile anchor among them timed once; a variable set to 0, false, no or off is unset; the block
    benchmarks' batch is the one asked for."""
    sys.path.insert(0, str(REPO))
    from benchmarks.helpers import settings as bench_settings

    for name in ("COMPILE", "PEERS", "MODELS", "FORMATS", "CUDA_GRAPH", "PROFILE", "THREADS", "DEADLINE"):
        monkeypatch.delenv(f"INCEPTION_FAST_BENCH_{name}", raising=False)
    monkeypatch.setenv("INCEPTION_FAST_BENCH_DEVICE", "cpu")
    monkeypatch.setenv("INCEPTION_FAST_BENCH_BATCHES", "1,8,2")
    monkeypatch.setenv("INCEPTION_FAST_BENCH_DTYPES", "fp32,bf16")
    monkeypatch.setenv("INCEPTION_FAST_BENCH_BLOCK_BATCH", "3")
    for off in ("0", "false", "No", "off", ""):
        monkeypatch.setenv("INCEPTION_FAST_BENCH_QUICK", off)
        s = bench_settings.settings()
        assert not s.quick and s.image_size == 224, off
    monkeypatch.setenv("INCEPTION_FAST_BENCH_QUICK", "1")
    monkeypatch.setenv("INCEPTION_FAST_BENCH_COMPILE", "1")
    s = bench_settings.settings()
    assert s.quick and s.batches == (1, 8, 2) and s.block_batch == 3 and s.block_dtype == "fp32"
    cases = bench_settings.throughput_cases(s)
    assert [c for c in cases if c.model.startswith("tv_compile")] == [
        bench_settings.ThroughputCase("tv_compile", "fp32", "channels_last", 8)
    ]
    assert [c.batch for c in cases if c.model == "torchvision"] == [1, 8, 2] * 4  # per dtype, per format
    monkeypatch.setenv("INCEPTION_FAST_BENCH_COMPILE", "0")
    monkeypatch.setenv("INCEPTION_FAST_BENCH_PEERS", "1")
    cases = bench_settings.throughput_cases()
    engines = {"fp32": ("onnxruntime", "openvino", "tv_compile"), "bf16": ("openvino", "tv_compile")}
    ours = bench_settings.known_models()
    peers = sorted((c.model, c.dtype, c.memory_format, c.batch) for c in cases if c.model not in ours)
    assert peers == sorted((m, d, "channels_last", b) for d, ms in engines.items() for m in ms for b in (1, 8, 2))
    monkeypatch.setenv("INCEPTION_FAST_BENCH_COMPILE", "1")  # the anchor is the tv_compile peer's fp32 row at 8
    cases = bench_settings.throughput_cases()
    assert len({c.id for c in cases}) == len(cases) and {c.model for c in cases} >= {"tv_compile"}


def test_benchmark_helpers_models_carry_one_seeded_set_of_weights(monkeypatch):
    """Every model a benchmark times carries the same weights, from fixed seeds (a second build, in
    this process or another, is the same network); the reference model computes
    torchvision's logits, and the torch.compile rows' eager models are torchvision's; each memory
    format and dtype has its own model, in that format and dtype, in eval mode; Triton on a CPU
    (its interpreter) is timed in quick mode only."""
    sys.path.insert(0, str(REPO))
    import torch

    from benchmarks.helpers import models
    from benchmarks.helpers.settings import settings
    from inception_fast.testing import TOLERANCE, check_close

    # Calibrated, as the benchmarks build it (with torchvision's init alone the logits shrink toward 0).
    first, second = (models.base_torchvision.__wrapped__(64, 2) for _ in range(2))
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    monkeypatch.setattr(models, "base_torchvision", lambda image_size, calib_batch: first)
    monkeypatch.setenv("INCEPTION_FAST_BENCH_DEVICE", "cpu")
    monkeypatch.setenv("INCEPTION_FAST_BENCH_QUICK", "1")
    monkeypatch.setattr(models, "_MODEL_CACHE", {})
    s = settings()
    last = models.build_model("torchvision", s, "fp32", "channels_last")
    nchw = models.build_model("torchvision", s, "fp32", "contiguous")
    assert models.build_model("torchvision", s, "fp32", "channels_last") is last and nchw is not last
    assert last.conv1.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not nchw.conv1.conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = nchw(x)
        got = models.build_model("reference", s, "fp32", "contiguous")(x)
    assert want.std() > 0.1, "the logits vanished: the comparison below could not fail"
    check_close(got, want, TOLERANCE["fp32"], "the reference model against torchvision's")
    for name in ("tv_compile", "tv_compile_ro"):  # the eager model each torch.compile row compiles
        with torch.no_grad():
            check_close(models.build_model(name, s, "fp32", "contiguous")(x), want, 0.0, name)
    for name in ("torchvision", "reference"):  # a 16-bit row's model computes in its dtype
        half = models.build_model(name, s, "bf16", "channels_last")
        assert {p.dtype for p in half.parameters()} == {torch.bfloat16} and not half.training, name
    models.require_backend("triton", torch.device("cpu"))  # quick: the interpreter runs
    monkeypatch.setenv("INCEPTION_FAST_BENCH_QUICK", "0")
    with pytest.raises(models.BackendUnavailable, match="the interpreter"):
        models.require_backend("triton", torch.device("cpu"))


def test_benchmark_helpers_example_inputs_follow_their_arguments():
    """example_input: standard normal (uniform on [0, 1) for a block's post-ReLU input) from its seed,
    in the dtype and memory format asked for."""
    sys.path.insert(0, str(REPO))
    import torch

    from benchmarks.helpers.models import example_input

    shape = (2, 3, 4, 5)
    for seed in (0, 1):
        for nonnegative, draw in ((False, torch.randn), (True, torch.rand)):
            x = example_input(*shape, "cpu", torch.float32, torch.channels_last, seed=seed, nonnegative=nonnegative)
            assert torch.equal(x, draw(shape, generator=torch.Generator().manual_seed(seed))), (seed, nonnegative)
            assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    half = example_input(*shape, "cpu", torch.bfloat16, torch.contiguous_format)
    assert half.dtype == torch.bfloat16 and half.is_contiguous()


def test_benchmark_helpers_blocks_are_placed_copies_per_backend_and_dtype(monkeypatch):
    """tv_block, tv_stage, fused_block and fused_stem build copies of the calibrated torchvision
    model's layers (the model itself stays fp32 and NCHW), in the dtype asked for and channels_last,
    cached per block, dtype and backend; a backend that does not run on the device is
    BackendUnavailable."""
    import copy

    import torch

    from benchmarks.helpers import models

    s = _quick_cpu_settings(monkeypatch, 32)
    base = models.base_torchvision.__wrapped__(s.image_size, s.calib_batch)
    saved = copy.deepcopy(base.state_dict())
    monkeypatch.setattr(models, "base_torchvision", lambda image_size, calib_batch: base)
    monkeypatch.setattr(models, "_BLOCK_CACHE", {})
    for dtype, torch_dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        block, stem = models.tv_block("inception3a", s, dtype), models.tv_block("stem", s, dtype)
        head = models.tv_stage("head", s, dtype)
        for mod in (block, stem, head):
            assert {p.dtype for p in mod.parameters()} == {torch_dtype} and not mod.training, (dtype, mod)
        assert block.branch1.conv.weight.is_contiguous(memory_format=torch.channels_last), dtype
        assert stem[0].conv.weight.is_contiguous(memory_format=torch.channels_last), dtype
    for backend in ("torch", "cpp"):
        block = models.fused_block("inception3a", backend, s, "fp32")
        assert block.requested_backend == backend and models.fused_block("inception3a", backend, s, "fp32") is block
        assert models.fused_stem(s, "fp32", backend).requested_backend == backend
    with pytest.raises(models.BackendUnavailable, match="backend 'cuda' unavailable on cpu"):
        models.fused_block("inception3a", "cuda", s, "fp32")
    for name, value in base.state_dict().items():
        assert value.dtype == saved[name].dtype and value.is_contiguous() and torch.equal(value, saved[name]), name


def test_benchmark_helpers_turn_deferred_tuning_off():
    """Importing the benchmark helpers turns deferred tuning off where the environment leaves it
    unset, so that no timed forward is one that tunes."""
    env = {k: v for k, v in os.environ.items() if k != "INCEPTION_FAST_DEFER_TUNING"}
    code = "import os, benchmarks.helpers.models; print(os.environ['INCEPTION_FAST_DEFER_TUNING'])"
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.split()[-1] == "0", run.stdout + run.stderr


def test_benchmark_helpers_count_the_choices_of_one_config(monkeypatch):
    """auto_choices counts backend="auto"'s picks at one dtype and batch; a "cuda:0" key is the
    device "cuda"'s; triton_tuning_since returns the log's entries made since the mark."""
    import collections

    sys.path.insert(0, str(REPO))
    import torch

    import inception_fast.choices as package_choices
    from benchmarks.helpers import choices

    Key = collections.namedtuple("Key", "dtype shape")
    picked = {
        Key(torch.float32, (4, 192, 28, 28)): "triton",
        Key(torch.float32, (4, 480, 14, 14)): "triton",
        Key(torch.float32, (4, 832, 7, 7)): "torch",
        Key(torch.float32, (1, 192, 28, 28)): "torch",
        Key(torch.bfloat16, (4, 192, 28, 28)): "cuda",
    }
    auto = types.SimpleNamespace(choices=lambda: {k: types.SimpleNamespace(name=v) for k, v in picked.items()})
    monkeypatch.setattr(package_choices, "AUTO", auto)
    assert choices.auto_choices("fp32", 4) == {"triton": 2, "torch": 1}
    assert choices.auto_choices("fp32", 1) == {"torch": 1} and choices.auto_choices("bf16", 4) == {"cuda": 1}
    for key_device, device, same in (
        ("cuda:0", "cuda", True),
        ("cuda", "cuda:0", True),
        ("cuda:0", "cuda:0", True),
        ("cuda:1", "cuda:0", False),
        ("cpu", "cuda", False),
        ("cpu", "cpu", True),
        ("no such device", "cpu", False),
    ):
        assert choices._same_device(key_device, device) is same, (key_device, device)
    # A log that received 5 entries and keeps the last 3.
    log = types.SimpleNamespace(tuning_count=lambda: 5, tuning_log=lambda: ["c", "d", "e"])
    monkeypatch.setitem(sys.modules, "inception_fast.backends.triton._common", log)
    assert choices.triton_tuning_mark() == 5
    assert choices.triton_tuning_since(3) == ["d", "e"] and choices.triton_tuning_since(5) == []


def test_benchmark_helpers_name_the_results_after_device_and_versions():
    """YYYY-MM-DD_<gpu or cpu>_torch<version without its local part>_triton<ver>_cuda<ver>, _quick
    for a quick run."""
    sys.path.insert(0, str(REPO))
    from benchmarks.helpers.environment import result_basename

    gpu = {"device": "cuda", "device_name": "NVIDIA H200", "torch": "2.11.0+cu128", "triton": "3.5.0",
           "torch_cuda": "12.8"}  # fmt: skip
    assert result_basename(gpu, "2026-12-07") == "2026-12-07_NVIDIA-H200_torch2.11.0_triton3.5.0_cuda12.8"
    assert result_basename(gpu, "2026-12-07", quick=True).endswith("_cuda12.8_quick")
    cpu = {"device": "cpu", "device_name": "Intel(R) Xeon(R) CPU", "torch": "2.14.1+cpu", "triton": None}
    assert result_basename(cpu, "2026-12-07") == "2026-12-07_cpu_torch2.14.1_tritonnone_cudanone"
    # Each part a file-name-safe token: a run of other characters is one '-', none at either end,
    # dots kept; a name with nothing left is "unknown".
    odd = dict(gpu, device_name=" NVIDIA H100 (80GB) / PCIe ", triton="3.5.0+git.ab12")
    want = "2026-12-07_NVIDIA-H100-80GB-PCIe_torch2.11.0_triton3.5.0-git.ab12_cuda12.8"
    assert result_basename(odd, "2026-12-07") == want
    assert result_basename(dict(gpu, device_name="(?)"), "2026-12-07").startswith("2026-12-07_unknown_torch2.11.0_")


def test_benchmark_environment_describes_the_device_it_is_given(monkeypatch):
    """environment(device): versions (an absent package None, with why), the given device (not the
    benchmarks' default) and its backends, torch's threads, the ptxas Triton compiles with, and
    INCEPTION_FAST_SKIP_CANDIDATES stripped (blank: None); a failing backend list is named."""
    sys.path.insert(0, str(REPO))
    import torch

    import inception_fast
    from benchmarks.helpers import environment as envmod

    monkeypatch.setattr(envmod, "bench_device", lambda: pytest.fail("environment(device) asked for another device"))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 7)
    asked = []
    monkeypatch.setattr(inception_fast, "available_backends", lambda device=None: asked.append(device) or ["torch"])
    monkeypatch.setenv("INCEPTION_FAST_SKIP_CANDIDATES", " stem:triton ")
    monkeypatch.setitem(sys.modules, "torchvision", None)  # an import that fails
    env = envmod.environment(torch.device("cpu"))
    assert env["device"] == "cpu" and env["cpu_threads"] == 7 and env["skipped_candidates"] == "stem:triton"
    assert env["torch"] == torch.__version__ and env["inception_fast"] == inception_fast.__version__
    assert env["torchvision"] is None and env["torchvision_error"].startswith(("ImportError", "ModuleNotFoundError"))
    assert env["backends_available"] == ["torch"] and asked == [torch.device("cpu")]
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        model = None
    assert env["device_name"] == envmod.cpu_name() and (model is None or env["device_name"] == model)
    try:
        from triton import knobs

        ptxas = knobs.nvidia.ptxas.version
    except Exception:
        ptxas = None
    assert env["triton_ptxas"] == ptxas

    def broken(device=None):
        raise RuntimeError("no backend list")

    monkeypatch.setattr(inception_fast, "available_backends", broken)
    monkeypatch.setenv("INCEPTION_FAST_SKIP_CANDIDATES", "  ")
    env = envmod.environment(torch.device("cpu"))
    assert env["skipped_candidates"] is None and env["backends_available"] is None
    assert env["backends_error"] == "RuntimeError: no backend list"


def test_benchmark_tools_refuse_bad_input_in_one_line(tmp_path, capsys, monkeypatch):
    """The benchmark command lines: a bad value is one argparse error line (exit 2), not a traceback;
    a bad INCEPTION_FAST_BENCH_* value names the variable; report.py skips an input that is not a
    pytest-benchmark object and refuses an output directory that does not exist."""
    sys.path.insert(0, str(REPO))
    from benchmarks import bench_block_backward, hook_check_cost, report
    from benchmarks.helpers import settings

    cases = [
        (bench_block_backward.main, ["--batch", "0"], "argument --batch: expected a positive integer, got 0"),
        (bench_block_backward.main, ["--device", "gpu"], "--device gpu: not a device name"),
        (hook_check_cost.main, ["--sizes", "abc"], "argument --sizes: expected comma-separated positive integers"),
        (hook_check_cost.main, ["--threads", "0"], "argument --threads: expected a positive integer, got 0"),
        (hook_check_cost.main, ["--backend", "nope"], "--backend 'nope' is unavailable on cpu: unknown backend"),
        (report.main, [str(tmp_path / "r.json"), "--md", str(tmp_path / "no" / "r.md")], "--md"),
    ]
    (tmp_path / "r.json").write_text(json.dumps([1, 2]))
    for main, argv, message in cases:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and message in err and "Traceback" not in err, (argv, err)
    with pytest.raises(SystemExit) as exc:  # nothing could be read: one line naming the input and why
        report.main([str(tmp_path / "r.json"), "--md", str(tmp_path / "r.md")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "no input could be read: " in err and "(not a pytest-benchmark JSON object)" in err
    monkeypatch.setenv(settings.ENV_BATCHES, "8,abc")
    with pytest.raises(ValueError, match="INCEPTION_FAST_BENCH_BATCHES: expected positive integers, got 'abc'"):
        settings.settings()


def test_more_benchmark_tools_refuse_bad_input_in_one_line(tmp_path, capsys, monkeypatch):
    """The rest of the command lines and variables: too many threads (which crash torch), a size the
    network refuses, a side input of the wrong kind, a deadline or model list that is not one, a
    ceilings file whose rates are not numbers, and the tools' arguments (checked before they run)."""
    import importlib.util

    sys.path.insert(0, str(REPO))
    from benchmarks import bench_block_backward, hook_check_cost, report
    from benchmarks.helpers import roofline, settings

    def tool(name):
        spec = importlib.util.spec_from_file_location(f"_tool_{name}", REPO / "tools" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, spec.name, module)  # (its dataclasses look their module up)
        spec.loader.exec_module(module)
        return module.main

    (tmp_path / "list.json").write_text("[1, 2]")
    cases = [
        (hook_check_cost.main, ["--threads", "100000"], "argument --threads: at most "),
        (bench_block_backward.main, ["--size", "8"], "--size 8 is too small for variant 'torchvision'"),
        (report.main, ["--first", str(tmp_path / "list.json")], "(not a first_forward.py JSON object)"),
        (report.main, ["--cold-start", str(tmp_path / "list.json")], "(not a cold_start.py JSON object)"),
        (tool("import_graph"), [str(tmp_path)], "not the package's directory"),
        (tool("mutate"), ["--timeout", "0", "skip_ignored"], "--timeout must be a number of seconds above 0"),
        (tool("mutate"), ["--json", str(tmp_path), "skip_ignored"], "a directory; give a file name"),
    ]
    for main, argv, message in cases:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and message in err and "Traceback" not in err, (argv, err)
    for variable, value, message in (
        (settings.ENV_THREADS, "100000", "INCEPTION_FAST_BENCH_THREADS: at most "),
        (settings.ENV_DEADLINE, "abc", "INCEPTION_FAST_BENCH_DEADLINE must be a Unix time in seconds, got 'abc'"),
        (settings.ENV_MODELS, "torchvision,nope", "INCEPTION_FAST_BENCH_MODELS: unknown model(s) nope"),
    ):
        monkeypatch.setenv(variable, value)
        with pytest.raises(ValueError) as raised:
            settings.settings()
        assert message in str(raised.value)
        monkeypatch.delenv(variable)
    (tmp_path / "ceilings.json").write_text(json.dumps({"device_name": "x", "flop_per_s": "abc", "byte_per_s": 1e12}))
    assert roofline.read_ceilings(str(tmp_path / "ceilings.json")) is None  # the table's row, and its source, instead
    if os.path.exists("/dev/full"):  # report.py's own standard-output handling (it imports no torch)
        results = tmp_path / "bench.json"
        results.write_text(json.dumps({"benchmarks": [{"name": "t", "extra_info": _row("torchvision", 0.01)}]}))
        with open("/dev/full", "w") as full:
            run = subprocess.run(
                [sys.executable, str(REPO / "benchmarks" / "report.py"), str(results)],
                stdout=full, stderr=subprocess.PIPE, text=True, timeout=120,
            )  # fmt: skip
        assert run.returncode == 1 and run.stderr.strip() == "error: writing standard output: No space left on device"


def _run_each_once(monkeypatch, module, calls: dict) -> dict:
    """Replaces ``module.interleaved_rounds`` by one that runs each run of each group twice in
    inference mode (as time_fn does) and keeps, per (group, run), the ``calls`` the second made and
    its result; the keyword arguments and the caller's inference mode under "rounds"."""
    import torch

    seen = {}

    def rounds(groups, **kwargs):
        seen["rounds"] = dict(kwargs, inference_mode=torch.is_inference_mode_enabled())
        for group, runs in groups.items():
            for run, fn in runs.items():
                with torch.inference_mode():
                    fn()
                    calls.clear()
                    out = fn()
                seen[group, run] = ({k: list(v) for k, v in calls.items()}, out)
        return {(group, run): [1e-3] for group, runs in groups.items() for run in runs}

    monkeypatch.setattr(module, "interleaved_rounds", rounds)
    return seen


def _record(monkeypatch, calls: dict, owner, name: str, key) -> None:
    """Wraps ``owner.name`` to append ``key(*args)`` to ``calls[name]`` on each call."""
    original = getattr(owner, name)

    def recorded(*args):
        calls.setdefault(name, []).append(key(*args))
        return original(*args)

    monkeypatch.setattr(owner, name, recorded)


def _record_inputs(monkeypatch, calls: dict, model_class) -> None:
    """``_record`` of ``model_class.forward``: each input's shape and whether it is channels_last."""
    import torch

    _record(
        monkeypatch,
        calls,
        model_class,
        "forward",
        lambda m, x: (x.shape, x.is_contiguous(memory_format=torch.channels_last)),
    )


def test_hook_check_cost_times_what_the_forward_checks(monkeypatch, capsys):
    """benchmarks/hook_check_cost.py, each run called once: per size both forwards take that size's
    channels_last batch-1 input and give the same logits, the one without the walk makes every other
    call the forward makes and puts the walk back; the walk alone walks the modules the forward
    walks, the structure checks alone check the blocks and stem the forward checks, the keys alone
    are those of the forward's block caches; the rounds, repeats, two warm-up calls and one thread
    reach the timing, which runs in inference mode."""
    sys.path.insert(0, str(REPO))
    import torch

    from benchmarks import hook_check_cost
    from inception_fast import FusedGoogLeNet, modules, packing
    from inception_fast.testing import TOLERANCE, check_close

    calls, threads = {}, []
    seen = _run_each_once(monkeypatch, hook_check_cost, calls)
    monkeypatch.setattr(torch, "set_num_threads", threads.append)  # (not this test process's threads)
    _record_inputs(monkeypatch, calls, FusedGoogLeNet)
    _record(monkeypatch, calls, modules, "_hooks_inside", lambda found: found)
    _record(monkeypatch, calls, modules._PackedBlock, "structure_ok", id)
    _record(monkeypatch, calls, modules._StructureCheck, "ok", lambda check, model: (id(check), id(model)))
    _record(monkeypatch, calls, packing, "_state", lambda sources: [id(s) for s in sources])
    walk = modules._hooks_inside
    hook_check_cost.main(["--sizes", "32,40", "--rounds", "3", "--repeats", "4"])
    assert seen["rounds"] == {"rounds": 3, "repeats": 4, "warmup": 2, "inference_mode": True} and threads == [1]
    assert modules._hooks_inside is walk
    for size in (32, 40):
        group = f"{size}x{size}"
        (forward, out), (no_walk, out_no_walk) = seen[group, "forward"], seen[group, "forward, no walk"]
        assert forward["forward"] == [(torch.Size([1, 3, size, size]), True)], group
        check_close(out_no_walk, out, TOLERANCE["fp32"], f"{group}: the forward without the walk")
        assert no_walk == {k: v for k, v in forward.items() if k != "_hooks_inside"}, group
        alone = seen[group, "the walk alone"][0]
        assert [[id(m) for m in found] for found in alone["_hooks_inside"]] == [
            [id(m) for m in found] for found in forward["_hooks_inside"]
        ]
        alone = seen[group, "the structure checks alone"][0]
        assert sorted(alone["structure_ok"]) == sorted(forward["structure_ok"]), group
        assert sorted(alone["ok"]) == sorted(forward["ok"]), group
        keys = seen[group, "the cache keys alone"][0]["_state"]
        assert len(keys) == len(forward["structure_ok"]) and all(k in forward["_state"] for k in keys), group
    assert "FusedGoogLeNet[torch] (torchvision variant), batch 1, fp32 channels_last" in capsys.readouterr().out


def test_inference_tensor_cost_times_the_comparisons_the_forward_makes(monkeypatch, capsys):
    """benchmarks/inference_tensor_cost.py, each run called once: per batch both models take that
    batch's channels_last 224x224 input and give the same logits (calibrated, so they do not
    vanish); the bit comparison alone reads the pack caches the inference-tensor model's forward
    reads, each as often and at the same dtype; the rounds and repeats given reach the timing."""
    sys.path.insert(0, str(REPO))
    import torch

    from benchmarks import inference_tensor_cost
    from inception_fast import FusedGoogLeNet
    from inception_fast.packing import PackCache
    from inception_fast.testing import TOLERANCE, check_close

    calls = {}
    seen = _run_each_once(monkeypatch, inference_tensor_cost, calls)
    _record_inputs(monkeypatch, calls, FusedGoogLeNet)
    _record(monkeypatch, calls, PackCache, "get", lambda cache, module, dtype: (id(cache), id(module), dtype))
    inference_tensor_cost.main(["--batches", "1,2", "--rounds", "3", "--repeats", "4"])
    assert seen["rounds"] == {"rounds": 3, "repeats": 4, "inference_mode": False}
    for batch in (1, 2):
        group = f"batch {batch}"
        (normal, out), (frozen, out_frozen) = seen[group, "built normally"], seen[group, "built under inference_mode"]
        assert normal["forward"] == frozen["forward"] == [(torch.Size([batch, 3, 224, 224]), True)], group
        assert out.std() > 0.1, "the logits vanished: the comparison below could not fail"
        check_close(out_frozen, out, TOLERANCE["fp32"], f"{group}: the model built under inference_mode")
        alone = seen[group, "the bit comparison alone"][0]
        assert sorted(alone["get"], key=str) == sorted(frozen["get"], key=str) and "forward" not in alone, group
    assert "FusedGoogLeNet[torch] (torchvision variant), 224x224 fp32 channels_last" in capsys.readouterr().out


def test_a_benchmark_run_stopped_by_its_timeout_still_writes_what_finished(tmp_path):
    """gpu_suite.sh ends a step at its limit with SIGTERM (timeout): the benchmarks' conftest turns
    it into an interrupt, so pytest-benchmark still writes the rows that finished."""
    bench = tmp_path / "bench_stopped.py"
    bench.write_text(
        "import os, signal, time\n\n"
        "def test_finished(benchmark):\n    benchmark(lambda: None)\n\n"
        "def test_stopped(benchmark):\n    os.kill(os.getpid(), signal.SIGTERM)\n    time.sleep(60)\n"
    )
    out = tmp_path / "out.json"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "benchmarks.conftest", "-p", "no:cacheprovider", str(bench)]
    proc = subprocess.run(
        [*cmd, "--benchmark-json", str(out)], cwd=REPO, env=_env(False), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "stopped by signal" in proc.stdout + proc.stderr
    names = [b["name"] for b in json.loads(out.read_text())["benchmarks"]]
    assert names == ["test_finished"], proc.stdout[-2000:]


def test_captured_call_records_why_it_could_not_time_instead_of_failing_the_row():
    sys.path.insert(0, str(REPO))
    import torch

    from benchmarks.helpers.measure import captured_call

    s = types.SimpleNamespace(device=torch.device("cpu"), warmup=1, repeats=1, min_time_s=0.0)
    info = captured_call(torch.nn.Identity().eval(), torch.ones(1, 3, 8, 8), s, 1)
    assert info == {"captured_error": "ValueError: CapturedForward needs a CUDA example input, got cpu"}


def test_captured_call_records_the_median_and_quartiles_of_its_calls(monkeypatch):
    """A call through CapturedForward that runs: its median and interquartile range (a clock that
    each call moves by the next of 2, 1, 100, 4, 3 s)."""
    sys.path.insert(0, str(REPO))
    import torch

    import inception_fast.graphs as graphs
    import inception_fast.timing as timing
    from benchmarks.helpers.measure import captured_call

    now, durations = [0.0], iter([2.0, 1.0, 100.0, 4.0, 3.0])
    monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))

    class Captured:
        def __init__(self, model, x):
            pass

        def __call__(self, x):
            now[0] += next(durations)

    monkeypatch.setattr(graphs, "CapturedForward", Captured)
    s = types.SimpleNamespace(device=torch.device("cpu"), warmup=0, repeats=5, min_time_s=0.0)
    info = captured_call(torch.nn.Identity(), torch.ones(1), s, 4)
    assert info == {"captured_s": 3.0, "captured_q1_s": 2.0, "captured_q3_s": 4.0}


SUITE_STEPS = r"""
set -u -o pipefail
REPO=$1 OUT=$2
LOG=$OUT/suite.log
: > "$LOG"
START=$(date +%s) BUDGET=300 FAILED=0
DEADLINE=$((START + BUDGET))
SUMMARY=()
SKIP_FILE=$OUT/kept/skips
export INCEPTION_FAST_SKIP_CANDIDATES=stem:pad4
source "$REPO/benchmarks/suite_steps.sh"
# A step whose first run meets a faulting candidate (pytest's whole traceback line, and its summary
# line cut short) and writes its JSON, then passes and writes another.
step='echo "saw [$INCEPTION_FAST_SKIP_CANDIDATES]"
if [[ ! -e $0 ]]; then
    touch "$0"
    echo first > "$2"
    echo "E   CandidateFault: ... To run without it: INCEPTION_FAST_SKIP_CANDIDATES=pool:triton ; please"
    echo "FAILED bench.py::case - CandidateFault: ... INCEPTION_FAST_SKIP_CANDIDATES=head:tri..."
    exit 1
fi
echo again > "$2"'
run_step bench 60 0 "$LOG" bash -c "$step" "$OUT/ran" --json "$OUT/bench.json"
fault='echo "To run without it: INCEPTION_FAST_SKIP_CANDIDATES=$0 ; x"; exit 1'
run_step tests 60 0 "$LOG" bash -c "$fault" conv_relu:triton
# Too little of its cap left for a case to start: not run again.
STEP_MARGIN=10 run_step short 20 0 "$LOG" bash -c "$fault" head:triton
run_step again 60 0 "$LOG" bash -c 'echo "saw [$INCEPTION_FAST_SKIP_CANDIDATES]"; exit 1'
# Too little of the budget left (here 20 s before the reserve, 6 of them spent): not run again, and
# its JSON stays where the report reads it.
late='sleep 6; echo x > "$2"; echo "To run without it: INCEPTION_FAST_SKIP_CANDIDATES=$0 ; x"; exit 1'
run_step late 60 $((DEADLINE - $(date +%s) - 20)) "$LOG" bash -c "$late" fold:folded --json "$OUT/late.json"
printf 'summary: %s\n' "${SUMMARY[@]}"
echo "final [$INCEPTION_FAST_SKIP_CANDIDATES] failed=$FAILED"
"""


def test_a_suite_step_meeting_a_faulting_candidate_runs_again_without_it(tmp_path):
    """benchmarks/suite_steps.sh: a step (not the tests) whose output names a candidate that left the
    CUDA context unusable (choices.CandidateFault's "INCEPTION_FAST_SKIP_CANDIDATES=... ;") runs once
    more without it, where its cap leaves time, and so does every later step; the first run's JSON
    is kept aside; the candidates found, not the caller's, are kept with a digest for the next call,
    which skips them where the digest is its own."""
    proc = subprocess.run(
        ["bash", "-c", SUITE_STEPS, "suite", str(REPO), str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    log = (tmp_path / "suite.log").read_text()
    saw = [line for line in log.splitlines() if line.startswith("saw [")]
    assert saw == ["saw [stem:pad4]", "saw [pool:triton,stem:pad4]", "saw [head:triton,pool:triton,stem:pad4]"], log
    summary = [line.split()[1:3] for line in proc.stdout.splitlines() if line.startswith("summary: ")]
    assert summary == [
        ["bench", "FAILED"],
        ["bench", "ok"],
        ["tests", "FAILED"],
        ["short", "FAILED"],
        ["again", "FAILED"],
        ["late", "FAILED"],
    ]
    notes = [line for line in proc.stdout.splitlines() if "skipped from here on)" in line]
    assert [note.split("(fault: ")[1].split(",")[0] for note in notes] == ["pool:triton", "head:triton", "fold:folded"]
    assert proc.stdout.strip().splitlines()[-1] == "final [fold:folded,head:triton,pool:triton,stem:pad4] failed=1"
    assert (tmp_path / "late.json").exists() and not (tmp_path / "late.fault.json").exists()
    assert (tmp_path / "bench.fault.json").read_text() == "first\n" and (
        tmp_path / "bench.json"
    ).read_text() == "again\n"
    digest, kept = (tmp_path / "kept" / "skips").read_text().split()
    assert kept == "fold:folded,head:triton,pool:triton" and len(digest) == 64, "the caller's entries are not kept"

    def next_call(skip_file):
        script = f"REPO={REPO} LOG=/dev/null SKIP_FILE={skip_file}; source $REPO/benchmarks/suite_steps.sh; "
        script += 'load_skips > /dev/null; echo "[${INCEPTION_FAST_SKIP_CANDIDATES:-}]"'
        return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60).stdout.strip()

    assert next_call(tmp_path / "kept" / "skips") == "[fold:folded,head:triton,pool:triton]"
    (tmp_path / "other").write_text(f"{'0' * 64} pool:triton\n")  # another tree or machine
    assert next_call(tmp_path / "other") == "[]" and not (tmp_path / "other").exists()


def test_first_forward_passes_a_candidate_fault_on_whole(monkeypatch, capsys):
    """A first_forward process that died of a CandidateFault: its row keeps the start of the error,
    and the whole line goes to stderr (the suite's log), where the suite reads the candidate's name."""
    sys.path.insert(0, str(REPO))
    from benchmarks import first_forward

    line = (
        "inception_fast.choices.CandidateFault: " + "x" * 300 + " INCEPTION_FAST_SKIP_CANDIDATES=stem:triton ; please"
    )
    earlier = "inception_fast.choices.CandidateFault: INCEPTION_FAST_SKIP_CANDIDATES=pool:triton ; handled"
    # (the fault that ended the process is the last one; teardown after a lost CUDA context may
    # print more after the traceback's last line)
    child = (
        f"import sys; print({earlier!r}, file=sys.stderr); print({line!r}, file=sys.stderr);"
        " print('terminate called', file=sys.stderr); sys.exit(1)"
    )
    monkeypatch.setattr(first_forward, "CHILD", child)
    row = first_forward.run_child("fused", "cpu", 1, "fp32", 32, dict(os.environ), 30.0)
    assert row == {"error": f"rc=1: {line[:200]}", "fault": "stem:triton"}
    assert f"[first_forward] fused batch 1: {line}\n" in capsys.readouterr().err
    # Without a fault the row keeps the last line of stderr, not of what the process printed.
    child = "import sys; print('step 1'); print('Traceback', file=sys.stderr); sys.exit('ValueError: boom')"
    monkeypatch.setattr(first_forward, "CHILD", child)
    row = first_forward.run_child("fused", "cpu", 1, "fp32", 32, dict(os.environ), 30.0)
    assert row == {"error": "rc=1: ValueError: boom"}


def test_first_forward_runs_its_later_rows_without_a_candidate_that_faulted(monkeypatch, tmp_path, capsys):
    """A row whose process died of a CandidateFault (here also one cut at its time limit, hanging
    after the fault) names the candidate; the rows after it run with it in
    INCEPTION_FAST_SKIP_CANDIDATES, and the JSON's environment says so."""
    sys.path.insert(0, str(REPO))
    from benchmarks import first_forward

    child = (
        "import json, os, sys, time\n"
        "skips = os.environ.get('INCEPTION_FAST_SKIP_CANDIDATES', '')\n"
        "if not skips:\n"
        "    print('inception_fast.choices.CandidateFault: ... INCEPTION_FAST_SKIP_CANDIDATES=stem:triton ; x',"
        " file=sys.stderr, flush=True)\n"
        "    time.sleep(60)\n"
        "times = {'to_first_result_s': 1.5, 'first_forward_s': 1.0, 'to_tuned_s': 2.0, 'steady_forward_s': 0.01}\n"
        "print('RESULT ' + json.dumps({**times, 'seen': skips}))\n"
    )
    monkeypatch.setattr(first_forward, "CHILD", child)
    monkeypatch.delenv("INCEPTION_FAST_SKIP_CANDIDATES", raising=False)
    out = tmp_path / "first.json"
    args = ["--device", "cpu", "--batches", "1", "--no-compile", "--timeout", "4", "--json", str(out)]
    assert first_forward.main(args) == 1  # the cold row failed
    cold, warm = json.loads(out.read_text())["rows"]
    assert cold["fault"] == "stem:triton" and cold["error"] == "first result not reached in 4 s"
    assert warm["seen"] == "stem:triton" and "error" not in warm
    assert json.loads(out.read_text())["environment"]["skipped_candidates"] == "stem:triton"
    assert "INCEPTION_FAST_SKIP_CANDIDATES=stem:triton ;" in capsys.readouterr().err
    assert os.environ.pop("INCEPTION_FAST_SKIP_CANDIDATES") == "stem:triton"


def test_report_says_which_inputs_ran_without_skipped_candidates(tmp_path):
    """Steps that ran with INCEPTION_FAST_SKIP_CANDIDATES (the GPU suite sets it after a candidate's
    fault) are named in the header, also when the merged JSON is read back; steps without are not.
    The header takes the device from the input that recorded the suite's environment (not from a
    first input without it), states no TF32 where the environment does not allow it, and lists the
    inputs it could not read."""
    sys.path.insert(0, str(REPO))
    from benchmarks import report

    def write(name, skipped):
        env = {"device": "cuda", "device_name": "stand-in", "skipped_candidates": skipped}
        bench = [{"name": "test_throughput[torchvision]", "extra_info": _row("torchvision", 0.01)}]
        (tmp_path / name).write_text(json.dumps({"machine_info": {"inception_fast": env}, "benchmarks": bench}))
        return str(tmp_path / name)

    paths = [write("bench.json", None), write("graph.json", "pool:triton"), write("blocks.json", "pool:triton")]
    (tmp_path / "first.json").write_text(
        json.dumps({"environment": {"skipped_candidates": "a:b,pool:triton"}, "rows": []})
    )
    foreign = tmp_path / "foreign.json"  # machine_info without the suite's environment
    foreign.write_text(json.dumps({"machine_info": {"node": "x"}, "benchmarks": []}))
    absent = str(tmp_path / "absent.json")
    merged = report.load_side(report.load([str(foreign), *paths, absent]), first=str(tmp_path / "first.json"))
    header = report.header_markdown(merged)
    assert header.startswith("# inception_fast benchmarks: stand-in\n") and "TF32" not in header
    assert f"- missing inputs: {absent} (not found)\n" in header
    line = "candidates not measured (INCEPTION_FAST_SKIP_CANDIDATES: one that left the CUDA context unusable"
    expected = "pool:triton (in graph.json, blocks.json); a:b,pool:triton (in first.json)"
    assert f"{line} earlier in the run, or one the caller named): {expected}\n" in report.header_markdown(merged)
    (tmp_path / "merged.json").write_text(json.dumps(merged))
    again = report.load([str(tmp_path / "merged.json")])
    assert expected in report.header_markdown(again)
    assert line not in report.header_markdown(report.load(paths[:1]))


def test_report_states_the_autotuners_choices_per_kernel_shape_and_dtype():
    """The Triton autotuning table: one row per kernel, shape and dtype (the first row that launched
    it names it), channel counts multiplied back by C_UNIT, tile names abbreviated, every config's µs
    fastest first, and a note where the times came from Triton's disk cache."""
    sys.path.insert(0, str(REPO))
    from benchmarks import report

    shape = {"M": 784, "CIN_div_unit": 12, "NR": 6, "C_UNIT": 16, "ROW_UNIT": 8}
    bf16 = {
        "kernel": "_branch_convs_kernel",
        "shape": shape,
        "dtype": "bf16",
        "chosen": "BLOCK_M=128, BLOCK_N=64",
        "us": {"BLOCK_M=64, BLOCK_N=64": 12.5, "BLOCK_M=128, BLOCK_N=64": 10.5},
    }
    fp16 = {**bf16, "dtype": "fp16", "from_cache": True}
    rows = [
        _gpu_row("block", "inception3a", "triton", 200e-6, 60e9, 100e6, None, triton_tuning=[bf16]),
        _gpu_row("block", "inception3b", "triton", 200e-6, 60e9, 100e6, None, triton_tuning=[bf16, fp16]),
    ]
    text = report.tuning_markdown(rows)
    row = "| _branch_convs_kernel | M=784 CIN=192 NR=96 | {} | M=128, N=64 | M=128, N=64: 10.5; M=64, N=64: 12.5"
    assert f"| inception3a (b256) {row.format('bf16')} |" in text
    assert f"| inception3b (b256) {row.format('fp16')} (Triton's disk cache: an earlier step's benchmark) |" in text
    assert text.count("| _branch_convs_kernel |") == 2


def test_report_blocks_chart_shows_the_largest_batch_as_speedups_over_torchvision(tmp_path, monkeypatch):
    """Without a roofline the chart's stage and block panels are torchvision's time over each
    implementation's, at the largest batch, for whole blocks only (no launch-1 rows)."""
    figure = pytest.importorskip("matplotlib.figure")
    sys.path.insert(0, str(REPO))
    from benchmarks import report

    figures = []
    monkeypatch.setattr(figure.Figure, "savefig", lambda fig, *a, **k: figures.append(fig))

    def row(kind, name, impl, median_s, batch=8):
        return {"kind": kind, "block": name, "impl": impl, "device": "cpu", "dtype": "fp32", "batch": batch,
                "median_s": median_s, "roofline_fraction": None}  # fmt: skip

    rows = [
        row("stage", "conv2", "torchvision", 100e-6),
        row("stage", "conv2", "fused", 50e-6),
        row("block", "inception3a", "torchvision", 200e-6),
        row("block", "inception3a", "triton", 100e-6),
        row("block", "inception3a", "launch1_triton", 40e-6),
        row("block", "inception3a", "torchvision", 20e-6, batch=1),
        row("block", "inception3a", "triton", 5e-6, batch=1),
    ]
    merged = {"machine_info": {}, "benchmarks": [{"extra_info": r} for r in rows]}
    assert report.chart(merged, str(tmp_path / "chart.png")) is None
    stages, blocks = figures[0].axes
    assert [p.get_height() for p in stages.patches] == [pytest.approx(2.0)]
    assert [p.get_height() for p in blocks.patches] == [pytest.approx(2.0)]
    assert blocks.get_title() == "per block, cpu fp32 batch 8"
    assert [t.get_text() for t in blocks.get_legend().get_texts()] == ["triton"]


def _quick_cpu_settings(monkeypatch, image_size: int = 32):
    """The quick CPU benchmark settings at ``image_size`` px."""
    sys.path.insert(0, str(REPO))
    import dataclasses

    from benchmarks.helpers.settings import settings

    monkeypatch.setenv("INCEPTION_FAST_BENCH_DEVICE", "cpu")
    monkeypatch.setenv("INCEPTION_FAST_BENCH_QUICK", "1")
    for name in ("PEERS", "MODELS", "FORMATS", "BATCHES", "DTYPES", "THREADS", "DEADLINE"):
        monkeypatch.delenv(f"INCEPTION_FAST_BENCH_{name}", raising=False)
    return dataclasses.replace(settings(), image_size=image_size)


def test_cpu_peer_runners_compute_torchvisions_logits_on_the_rows_threads(monkeypatch):
    """ONNX Runtime and OpenVINO run the calibrated googlenet exported for the input's shape: their
    logits are torchvision's within the bound of a whole fp32 network (against fp64); both get
    torch.get_num_threads() threads; OpenVINO compiles for the row's precision; ONNX Runtime refuses
    a bf16 row (its export is fp32)."""
    for module in ("onnxruntime", "openvino", "onnx"):
        pytest.importorskip(module)
    import copy

    import onnxruntime
    import torch

    from benchmarks.helpers import models, peers
    from inception_fast.testing import check_close, reduced_precision_bound

    s = _quick_cpu_settings(monkeypatch)
    sessions = []

    class Session(onnxruntime.InferenceSession):
        def __init__(self, path, options, **kwargs):
            sessions.append(options)
            super().__init__(path, options, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", Session)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = models.example_input(2, 3, s.image_size, s.image_size, "cpu", torch.float32, torch.channels_last)
        tv = models.base_torchvision(s.image_size, s.calib_batch)
        with torch.no_grad():
            want, want64 = tv(x), copy.deepcopy(tv).double()(x.double())
        bound = reduced_precision_bound(want, want64)
        assert want.std() > 0.1, "the logits vanished: the comparison below could not fail"
        for name in peers.PEERS:
            fn, info = peers.peer_runner(name, s, "fp32", x)
            check_close(torch.from_numpy(fn()).double(), want64, bound, f"{name}'s logits against fp64")
        assert [o.intra_op_num_threads for o in sessions] == [2]
        assert info["inference_threads"] == 2 and info["inference_precision"] == "f32"
        with pytest.raises(models.BackendUnavailable, match="onnxruntime runs the fp32 export"):
            peers.peer_runner("onnxruntime", s, "bf16", x.bfloat16())
        import openvino

        if "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            fn, info = peers.peer_runner("openvino", s, "bf16", x.bfloat16())
            assert info["inference_precision"] == "bf16" and info["precision"] == "bf16"
    finally:
        torch.set_num_threads(threads)


def test_openvino_peer_sets_its_precision_and_threads_and_refuses_what_it_cannot_run(monkeypatch):
    """OpenVINO (a stub engine here) is compiled with the row's inference precision and torch's
    thread count set explicitly; a CPU without bf16, or an engine that compiles for a precision
    other than the one asked for, is BackendUnavailable rather than a row of the wrong precision."""
    import torch

    from benchmarks.helpers import models, peers

    s = _quick_cpu_settings(monkeypatch)
    caps, configs, compiled_as = ["FP32", "BF16"], [], {}

    class Compiled:
        def __init__(self, config):
            self.config = config

        def get_property(self, key):
            value = compiled_as.get(key, self.config.get(key, "bf16"))  # (the CPU's default precision: bf16)
            return types.SimpleNamespace(get_type_name=lambda: value) if key == "INFERENCE_PRECISION_HINT" else value

        def create_infer_request(self):
            return types.SimpleNamespace(infer=lambda feed: {0: feed[0]})

        def output(self, index):
            return index

    class Core:
        def get_property(self, device, key):
            if key == "OPTIMIZATION_CAPABILITIES":
                return caps
            return types.SimpleNamespace(get_type_name=lambda: "bf16")

        def read_model(self, path):
            return path

        def compile_model(self, model, device, config):
            configs.append(dict(config))
            return Compiled(config)

    fake = types.SimpleNamespace(Core=Core, __version__="stub")
    monkeypatch.setattr(peers, "_require", lambda module: fake)
    monkeypatch.setattr(peers, "onnx_file", lambda *args: ("model.onnx", "dynamo"))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    x = torch.zeros(1, 3, s.image_size, s.image_size)
    for dtype, precision in (("fp32", "f32"), ("bf16", "bf16")):
        configs.clear()
        fn, info = peers.peer_runner("openvino", s, dtype, x.to(models.DTYPES[dtype]))
        assert [(c["INFERENCE_PRECISION_HINT"], c["INFERENCE_NUM_THREADS"]) for c in configs] == [(precision, 3)]
        assert info["inference_precision"] == precision and info["precision"] == dtype and fn().shape == x.shape
    compiled_as["INFERENCE_PRECISION_HINT"] = "bf16"
    with pytest.raises(models.BackendUnavailable, match="openvino compiled for bf16 when asked for f32"):
        peers.peer_runner("openvino", s, "fp32", x)
    caps.remove("BF16")
    with pytest.raises(models.BackendUnavailable, match="this CPU lacks bf16"):
        peers.peer_runner("openvino", s, "bf16", x.bfloat16())
    with pytest.raises(models.BackendUnavailable, match="no fp16 inference precision"):
        peers.peer_runner("openvino", s, "fp16", x.half())


def test_peers_onnx_export_is_the_calibrated_model_at_the_rows_shape_and_names_its_exporter(monkeypatch):
    """onnx_file exports the benchmarks' calibrated torchvision model, in eval mode, for the input
    shape asked for; the dynamo exporter first, then the TorchScript one, naming the one that
    worked; where both fail, BackendUnavailable gives both reasons."""
    pytest.importorskip("onnx")
    import torch

    from benchmarks.helpers import models, peers

    calls = []

    def export(model, args, path, dynamo, **kwargs):
        calls.append((model, model.training, dynamo, tuple(args[0].shape), args[0].dtype))
        if dynamo or fail_both:
            raise RuntimeError(f"stub exporter {dynamo}")

    monkeypatch.setattr(torch.onnx, "export", export)
    fail_both = False
    path, exporter = peers.onnx_file.__wrapped__(32, 2, 3)
    base = models.base_torchvision(32, 2)
    shape = (3, 3, 32, 32)
    assert calls == [(base, False, True, shape, torch.float32), (base, False, False, shape, torch.float32)]
    assert exporter == "torchscript" and path.endswith("googlenet_b3_32.onnx")
    fail_both = True
    with pytest.raises(models.BackendUnavailable) as exc:
        peers.onnx_file.__wrapped__(32, 2, 3)
    assert "dynamo=True: RuntimeError: stub exporter True" in str(exc.value)
    assert "dynamo=False: RuntimeError: stub exporter False" in str(exc.value)


def _stub_side_by_side(monkeypatch, unavailable=()):
    """cpu_side_by_side with stub models, peers and torch.compile: each row's callable returns its
    own label; ``built``, ``peered`` and ``compiled`` record what each was made from."""
    import torch
    import torch._inductor.config as inductor_config

    from benchmarks import cpu_side_by_side as sbs
    from benchmarks.helpers.models import BackendUnavailable

    built, peered, compiled, inputs = [], [], [], []

    def build_model(name, s, dtype, memory_format):
        if name in unavailable:
            raise BackendUnavailable(f"{name} is a stub that does not run")
        built.append((name, dtype, memory_format, s.image_size))
        label = {"torchvision": "torchvision_cl"}.get(name, name)
        return lambda x: inputs.append(x) or label

    def peer_runner(name, s, dtype, x):
        peered.append((name, dtype, s.image_size))
        return (lambda: name), {}

    def compile_(model):
        def run(x):
            compiled.append(inductor_config.freezing)
            return "tv_compile" if model(x) == "torchvision_cl" else "not torchvision"

        return run

    monkeypatch.setattr(sbs, "build_model", build_model)
    monkeypatch.setattr(sbs, "peer_runner", peer_runner)
    monkeypatch.setattr(torch, "compile", compile_)
    monkeypatch.setenv("INCEPTION_FAST_BENCH_DEVICE", "cpu")
    return sbs, built, peered, compiled, inputs


def test_cpu_side_by_side_rows_run_each_engine_at_its_best_in_the_runs_dtype(monkeypatch, capsys):
    """Every row takes the run's dtype and image size and channels_last input; torchvision and
    torch.compile run the channels_last model, compiled with freezing; a backend that does not run
    is skipped (printed), not timed as another row; the peers are those of the dtype."""
    import torch

    sbs, built, peered, compiled, inputs = _stub_side_by_side(monkeypatch, unavailable=("fused_cpp",))
    fns = sbs.rows("bf16", 2, size=32)
    assert list(fns) == ["fused_torch", "fused_onednn", "fused_auto", "torchvision_cl", "openvino", "tv_compile"]
    assert "skip fused_cpp: fused_cpp is a stub that does not run" in capsys.readouterr().out
    assert {name: fn() for name, fn in fns.items()} == {name: name for name in fns}
    assert all(b[1:] == ("bf16", "channels_last", 32) for b in built), built
    assert [b[0] for b in built].count("torchvision") == 2  # the eager row and the compiled one
    assert peered == [("openvino", "bf16", 32)] and compiled[0] is True, compiled  # the first call compiles
    for x in inputs:
        assert x.shape == (2, 3, 32, 32) and x.dtype == torch.bfloat16
        assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    fns = sbs.rows("fp32", 1, size=32)
    peers = ["torchvision_cl", "onnxruntime", "openvino", "tv_compile"]
    assert [name for name in fns if name not in sbs.FUSED] == peers


def test_cpu_side_by_side_prints_each_rows_ratio_to_the_fastest_peer(monkeypatch, capsys):
    """× best peer is the fastest peer's median over the row's (above 1: the row is faster); the
    fused rows are not peers, however fast."""
    from benchmarks import cpu_side_by_side as sbs

    medians = {"fused_torch": 0.05, "fused_auto": 0.5, "torchvision_cl": 0.3, "onnxruntime": 0.2, "tv_compile": 0.1}
    monkeypatch.setattr(sbs, "rows", lambda dtype, batch, size: dict.fromkeys(medians, lambda: None))
    timings = {n: types.SimpleNamespace(median_s=m, quartiles_s=(m, m), samples_s=[m] * 9) for n, m in medians.items()}
    monkeypatch.setattr(sbs, "time_interleaved", lambda fns, **kwargs: {n: timings[n] for n in fns})
    monkeypatch.setattr(sbs.torch, "set_num_threads", lambda n: None)
    monkeypatch.setenv("INCEPTION_FAST_BENCH_DEVICE", "cpu")
    sbs.main(["--budget", "0", "--size", "32"])
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if "best peer" in line}
    assert lines["fused_torch"].endswith("  2.00x best peer (tv_compile)"), lines
    assert lines["fused_auto"].endswith("  0.20x best peer (tv_compile)"), lines
    assert lines["onnxruntime"].endswith("  0.50x best peer (tv_compile)"), lines
    assert lines["tv_compile"].endswith("  1.00x best peer (tv_compile)"), lines


def test_train_cpu_reports_each_models_images_per_second_and_the_fused_over_reference_ratio(monkeypatch, capsys):
    """Stub models on a stub clock (the fused one 0.5 s a step, the reference slower each step):
    images/s is steps x batch over the round's seconds, each model's own; the table's median, min and
    max are those of the rounds printed; the ratio is fused over reference per round; --backend
    reaches the fused model and --dtype bfloat16 runs every step under CPU autocast."""
    import statistics

    import torch
    from torch import nn

    from benchmarks import train_cpu
    from inception_fast.backends import onednn_backend

    clock = types.SimpleNamespace(now=0.0)
    asked, autocast = [], []

    class Stub(nn.Module):
        def __init__(self, name, classes, in_ch, size):
            super().__init__()
            self.name, self.calls = name, 0
            self.fc = nn.Linear(in_ch * size * size, classes)

        def forward(self, x):
            self.calls += 1
            clock.now += 0.5 if self.name == "fused" else 1.0 + 0.25 * self.calls
            autocast.append(torch.is_autocast_enabled("cpu"))
            return self.fc(x.flatten(1))

    def build_models(variant, classes, in_ch, seed, backend, reference):
        asked.append((variant, backend, reference))
        return {name: Stub(name, classes, in_ch, 16) for name in ("fused", "reference")}

    monkeypatch.setattr(train_cpu, "build_models", build_models)
    monkeypatch.setattr(train_cpu, "time", types.SimpleNamespace(perf_counter=lambda: clock.now))
    # The stubs run no convolution, so bfloat16 is allowed on any CPU (test_train checks the refusal).
    monkeypatch.setattr(onednn_backend, "bf16_supported", lambda: True)
    argv = ["--image-size", "16", "--batch", "4", "--rounds", "3", "--steps", "2", "--backend", "onednn"]
    train_cpu.main([*argv, "--dtype", "bfloat16"])
    out = capsys.readouterr().out
    assert asked == [("d2l", "onednn", True)] and autocast and all(autocast)
    rounds = [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("round ")]
    rates = {"fused": [], "reference": []}
    for line in rounds:
        for item in line.split(", "):
            name, rate, _ = item.split()
            rates[name].append(float(rate))
    assert len(rounds) == 3 and rates["fused"] == [8.0] * 3, out  # 2 steps x 4 images in 1 s
    assert all(r < 8.0 for r in rates["reference"]) and len(set(rates["reference"])) == 3, out
    for name, v in rates.items():
        assert f"| {name} | {statistics.median(v):.1f} | {min(v):.1f} | {max(v):.1f} |" in out, out
    ratio = [f / r for f, r in zip(rates["fused"], rates["reference"])]  # (of the rates as printed, rounded)
    row = next(line for line in out.splitlines() if line.startswith("| fused / reference, per round |"))
    got = [float(v.strip().rstrip("x")) for v in row.split("|")[2:5]]
    for g, w in zip(got, (statistics.median(ratio), min(ratio), max(ratio))):
        assert w > 1 and abs(g - w) <= 0.02 * w, (got, ratio)
    autocast.clear()
    train_cpu.main(argv)
    assert autocast and not any(autocast)


def test_throughput_compile_and_peer_rows_time_what_their_label_says(monkeypatch):
    """bench_throughput's CPU rows with stub models and engines: a tv_compile row times the model
    torch.compile returned, compiled at its first call with freezing on in its own mode; a peer row
    runs the engine in the row's dtype, records the engine's info beside the row's and compares the
    engine's logits with torchvision's."""
    import numpy
    import torch
    import torch._inductor.config as inductor_config

    from benchmarks import bench_throughput as bt
    from benchmarks.helpers.settings import ThroughputCase

    _quick_cpu_settings(monkeypatch)
    monkeypatch.delenv("INCEPTION_FAST_BENCH_PROFILE", raising=False)
    eager, compiled_out, engine_out = torch.zeros(2, 4), torch.ones(2, 4), numpy.full((2, 4), 2.0, numpy.float32)
    compiles, peered, measured, compared = [], [], [], []

    def compile_(model, mode="default"):
        def run(x):
            compiles.append((mode, inductor_config.freezing))
            return compiled_out

        return run

    def peer_runner(name, s, dtype, x):
        peered.append((name, dtype, x.dtype))
        return (lambda: engine_out), {"inference_precision": "bf16", "inference_threads": 2}

    def measure(benchmark, fn, s, *, batch, extra, group=None):
        measured.append(fn())
        benchmark.extra_info.update(extra)

    monkeypatch.setattr(bt, "build_model", lambda name, s, dtype, fmt: lambda x: eager)
    monkeypatch.setattr(bt, "peer_runner", peer_runner)
    monkeypatch.setattr(bt, "measure", measure)
    monkeypatch.setattr(bt, "parity", lambda out, ref: compared.append((out, ref)) or 0.0)
    monkeypatch.setattr(torch, "compile", compile_)
    for model, mode in (("tv_compile", "default"), ("tv_compile_ro", "reduce-overhead")):
        compiles.clear()
        bench = types.SimpleNamespace(extra_info={})
        bt.test_throughput(bench, ThroughputCase(model, "fp32", "channels_last", 2))
        assert compiles[0] == (mode, True) and measured[-1] is compiled_out, (model, compiles)
        assert bench.extra_info["compile_mode"] == mode and bench.extra_info["freezing"] is True
        assert compared[-1][0] is compiled_out and compared[-1][1] is eager
    bench = types.SimpleNamespace(extra_info={})
    bt.test_throughput(bench, ThroughputCase("openvino", "bf16", "channels_last", 2))
    assert peered == [("openvino", "bf16", torch.bfloat16)] and measured[-1] is engine_out
    info = bench.extra_info
    assert info["dtype"] == "bf16" and info["inference_precision"] == "bf16" and info["inference_threads"] == 2
    assert torch.equal(compared[-1][0], torch.from_numpy(engine_out)) and compared[-1][1] is eager


BLOCK_ROWS = {  # (block, impl): the backend its row names
    ("stem", "torchvision"): "aten-unfused",
    ("stem", "torch"): "aten-folded",
    ("conv1", "fused"): "fused-auto",
    ("conv2", "fused"): "fused-auto",
    ("conv3", "fused"): "fused-auto",
    ("maxpool4", "fused"): "fused-auto",
    ("head", "torchvision"): "aten-unfused",
    ("inception3a", "torchvision"): "aten-unfused",
    ("inception3a", "torch"): "torch",
    ("inception3a", "launch1_ext"): "cpp",
    ("inception3a", "launch1_reduce"): "triton",
    ("inception3a", "launch1_pool"): "triton",
}


@pytest.mark.parametrize("block, impl", list(BLOCK_ROWS), ids=[" ".join(k) for k in BLOCK_ROWS])
def test_block_rows_hold_their_work_time_and_parity(block, impl, monkeypatch):
    """bench_blocks.test_block in quick CPU settings, in this process: the row names its backend, its
    input and output shapes, its work (the block's or stage's convs; launch 1's roles: the three 1x1s
    that read the block input, the pool projection, or both), its time in µs, its error against
    torchvision's layers (launch 1: the torch backend) within fp32's tolerance, and, on the fused stem,
    the conv1 form chosen and the measured choices; a fused stage's choices are its own."""
    from benchmarks import bench_blocks
    from benchmarks.helpers.settings import STAGES, BlockCase
    from benchmarks.helpers.shapes import block_shapes, stage_shapes
    from inception_fast.testing import TOLERANCE

    s = _quick_cpu_settings(monkeypatch, 64)  # maxpool3's and maxpool4's geometry differ on its 4x4 map
    monkeypatch.setattr(bench_blocks, "settings", lambda: s)
    bench = _Benchmark()
    bench_blocks.test_block(bench, BlockCase(block, impl))
    r = bench.extra_info
    shape = (stage_shapes if block in STAGES else block_shapes)(s.image_size)[block]
    batch = s.block_batch
    assert r["kind"] == ("stage" if block in STAGES else "block") and r["backend"] == BLOCK_ROWS[block, impl], r
    assert r["input_shape"] == [batch, *shape.input_chw] and r["output_shape"] == [batch, *shape.output_chw], r
    assert r["time_us"] == pytest.approx(r["median_s"] * 1e6), r
    if impl.startswith("launch1_"):
        roles = {"launch1_reduce": ["reduce"], "launch1_pool": ["pool"]}.get(impl, ["reduce", "pool"])
        assert r["op"] == "launch1" and r["roles"] == roles, r
        *reduce, pool = [c for c in shape.convs if c.cin == shape.input_chw[0] and c.kh == c.kw == 1]
        convs = (reduce if "reduce" in roles else []) + ([pool] if "pool" in roles else [])
        assert r["flops"] == 2 * batch * sum(c.macs_per_image() for c in convs), r
        assert r["rel_error_vs_torch_backend"] < TOLERANCE["fp32"], r
    else:
        assert r["flops"] == shape.flops(batch) and r["bytes"] == shape.bytes(batch, 4), r
        if impl != "torchvision":
            assert r["rel_error_vs_torchvision"] < TOLERANCE["fp32"], r
        else:
            assert "rel_error_vs_torchvision" not in r, r
    fused_stem = block == "stem" and impl != "torchvision"
    assert ("stem_conv1" in r) == fused_stem and ("measured_choices" in r) == (fused_stem or impl == "fused"), r
    if impl == "fused":
        assert all(block in c["where"].split("/") for c in r["measured_choices"]), r


def test_report_says_the_first_inputs_date_the_rows_device_and_unsourced_ceilings(tmp_path):
    """The header's date is the first input's (a later input's is not taken), its device comes from
    the rows where no input recorded the suite's environment, and rows whose ceilings carry no source
    are said to be unsourced. A benchmark whose median is not a number is left out (and said so), and
    a throughput row that names no model is not a throughput row."""
    sys.path.insert(0, str(REPO))
    from benchmarks import report

    def write(name, date, benches):
        (tmp_path / name).write_text(json.dumps({"datetime": date, "benchmarks": benches}))
        return str(tmp_path / name)

    ceiling = {"ceiling_tflops": 700.0, "ceiling_gbps": 3000.0}
    kept = {"name": "test_throughput[torchvision]", "extra_info": _row("torchvision", 0.02, device_name="rows' GPU")}
    first = write("first.json", "2026-01-02T03:04:05", [kept])
    odd = {"name": "test_throughput[fused]", "extra_info": {**_row("fused", 0.01), "median_s": "fast"}}
    modelless = {"name": "test_throughput[x]", "extra_info": {k: v for k, v in _row("x", 0.01).items() if k != "model"}}
    block = {"name": "test_block[3a]", "extra_info": _gpu_row("block", "3a", "triton", 1e-4, 1e9, 1e6, None, **ceiling)}
    second = write("second.json", "2027-05-06T07:08:09", [odd, modelless, block])
    merged = report.load([first, second])
    header = report.header_markdown(merged)
    assert "- date: 2026-01-02 (UTC)\n" in header
    assert header.startswith("# inception_fast benchmarks: rows' GPU\n") and "- device: rows' GPU (?)" in header
    assert f"{second} (1 benchmark(s) without this suite's extra_info, left out)" in header
    assert [r["model"] for r in report._rows(merged, "throughput")] == ["torchvision"]
    assert "fast" not in report.throughput_markdown(report._rows(merged, "throughput"))
    assert (
        "- roofline ceilings: 700 TFLOP/s dense bf16 GEMM, 3,000 GB/s device copy (read + write): "
        f"{report._UNRECORDED_SOURCE}\n" in header
    )
