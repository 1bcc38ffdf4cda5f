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
    for var in ("INCEPTION_FAST_BENCH_COMPILE", "INCEPTION_FAST_BENCH_CUDA_GRAPH", "INCEPTION_FAST_BENCH_DEADLINE",
                "INCEPTION_FAST_BENCH_BATCHES", "INCEPTION_FAST_BENCH_DTYPES"):
        env.pop(var, None)
    # tests/conftest.py turns the Triton interpreter on for CPU machines; a whole network under
    # it takes minutes, so the smoke runs go without it, except the one Triton case below.
    if triton_interpret:
        env["TRITON_INTERPRET"] = "1"
        env["INCEPTION_FAST_BENCH_DEVICE"] = "cpu"  # the interpreter has no bf16, the GPU grid's dtype
    else:
        env.pop("TRITON_INTERPRET", None)
    return env


def _run_bench(name: str, json_path: Path, *extra_args: str, triton_interpret: bool = False, timeout: int = 300):
    cmd = [sys.executable, "-m", "pytest", str(BENCH / name), "-q", "-p", "no:cacheprovider",
           "--benchmark-json", str(json_path), "--benchmark-columns=median", *extra_args]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(triton_interpret), check=False, capture_output=True, text=True,
                          timeout=timeout)
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
    thr, _ = _run_bench("bench_throughput.py", out / "bench.json")
    thr_rows = _check_rows(thr, "throughput")
    assert {"torchvision", "reference", "fused_torch"} <= {r["model"] for r in thr_rows}
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
        [sys.executable, str(BENCH / "report.py"), str(out / "bench.json"), str(out / "blocks.json"),
         str(out / "absent.json"), "--md", str(md), "--chart", str(chart), "--merged-json", str(merged), "--short"],
        cwd=REPO, check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = md.read_text()
    assert "## Throughput" in text and "| torchvision eager |" in text
    assert "## Per block" in text and "| inception3a |" in text
    assert "absent.json (not found)" in text  # a missing input is reported, not fatal
    assert "torchvision eager" in proc.stdout  # the short table
    assert chart.exists() or "matplotlib" in proc.stderr
    assert len(json.loads(merged.read_text())["benchmarks"]) >= 2


def test_triton_cases_run_under_the_interpreter(tmp_path):
    """The Triton block and Triton launch-1 paths (the only GPU-kernel calls the benchmarks
    make themselves), on the smallest quick block; on CPU this needs the interpreter."""
    pytest.importorskip("triton")
    data, tail = _run_bench("bench_blocks.py", tmp_path / "triton.json", "-k", "inception3a and triton",
                            triton_interpret=True)
    impls = {r["impl"] for r in _check_rows(data, "block")}
    assert impls == {"triton", "launch1_triton"}, tail
