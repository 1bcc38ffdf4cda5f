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
from pathlib import Path

import pytest

pytest.importorskip("pytest_benchmark")

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"


def _env(triton_interpret: bool) -> dict:
    env = dict(os.environ)
    env["INCEPTION_FAST_BENCH_QUICK"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    for var in (
        "INCEPTION_FAST_BENCH_COMPILE",
        "INCEPTION_FAST_BENCH_CUDA_GRAPH",
        "INCEPTION_FAST_BENCH_DEADLINE",
        "INCEPTION_FAST_BENCH_BATCHES",
        "INCEPTION_FAST_BENCH_DTYPES",
        "INCEPTION_FAST_BENCH_PROFILE",
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


def _check_rows(data, kind):
    rows = [b["extra_info"] for b in data["benchmarks"]]
    assert rows, "no benchmark recorded"
    for r in rows:
        assert r["kind"] == kind
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
    blk, _ = _run_bench("bench_blocks.py", out / "blocks.json")
    blk_rows = _check_rows(blk, "block")
    assert {r["block"] for r in blk_rows} >= {"stem", "inception3a", "inception5b"}
    for r in blk_rows:
        assert r["flops"] > 0 and r["bytes"] > 0 and r["tflops"] > 0 and r["gbps"] > 0
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
    assert "absent.json (not found)" in text  # a missing input is reported, not fatal
    assert "Where the time goes" in text
    assert "torchvision eager" in proc.stdout  # the short table
    assert chart.exists() or "matplotlib" in proc.stderr
    assert len(json.loads(merged.read_text())["benchmarks"]) >= 2


def test_triton_cases_run_under_the_interpreter(tmp_path):
    """The Triton block and Triton launch-1 paths (the only GPU-kernel calls the benchmarks
    make themselves), on the smallest quick block; on CPU this needs the interpreter."""
    pytest.importorskip("triton")
    data, tail = _run_bench(
        "bench_blocks.py", tmp_path / "triton.json", "-k", "inception3a and triton", triton_interpret=True
    )
    impls = {r["impl"] for r in _check_rows(data, "block")}
    assert impls == {"triton", "launch1_triton"}, tail


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
    """CUDA-graph rows get their × compile from the eager config's anchor; a case whose capture
    failed (timed eagerly) stays apart from the eager rows; profiles are tabulated."""
    sys.path.insert(0, str(REPO))
    from benchmarks import report

    prof = {
        "source": "cuda kernels",
        "us_per_call": 4000.0,
        "kernels": [{"name": "_branch_convs_kernel", "us": 3000.0, "calls": 9, "share": 0.75}],
    }
    rows = [
        _row("torchvision", 0.012),
        _row("tv_compile", 0.006, compile_s=30.0),
        _row("fused_triton", 0.010, kernel_profile=prof, busy=0.4),
        _row("fused_triton", 0.004, timing="cuda_graph"),
        _row("fused_cuda", 0.011, cuda_graph_error="RuntimeError: capture failed"),
    ]
    index = report.throughput_index(rows)
    graph = index[("cuda", "bf16", "channels_last, CUDA graph", 256)]["fused_triton"]
    assert graph["x_compile"] == pytest.approx(1.5)
    assert index[("cuda", "bf16", "channels_last", 256)]["fused_triton"]["median_s"] == 0.010
    assert "fused_cuda" not in index[("cuda", "bf16", "channels_last", 256)]
    text = report.throughput_markdown(rows)
    assert "channels_last, CUDA graph b256 | FusedGoogLeNet[triton] | 4.000" in text
    assert "| _branch_convs_kernel | 3,000.0 | 9 | 75% |" in text and "| 40% |" in text
    assert "busy" in report.throughput_short(rows)


def test_measure_falls_back_to_eager_timing_when_capture_fails():
    sys.path.insert(0, str(REPO))
    from benchmarks.helpers.measure import measure
    from benchmarks.helpers.settings import settings

    class Bench:
        extra_info: dict = {}

        def pedantic(self, fn, rounds, iterations, warmup_rounds):
            fn()

    s = settings()
    bench = Bench()
    timing = measure(bench, lambda: None, s, batch=1, extra={"kind": "block"}, cuda_graph=True)
    assert timing.median_s > 0
    assert bench.extra_info["timing"] != "cuda_graph" and "cuda_graph_error" in bench.extra_info
