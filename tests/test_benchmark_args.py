"""The benchmark command lines refuse a bad argument up front: one error line naming the option
and the value, exit code 2 (pytest's usage error, 4, for the benchmarks' pytest options), no
traceback, before any model is built or any row's process started."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.helpers import settings  # noqa: E402

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")

# Each script's first call that does the work: replaced by one that fails the test, so an
# argument refused only after the work started fails at once.
WORK = {
    "report": None,
    "cpu_side_by_side": "rows",
    "bench_block_backward": "run",
    "train_cpu": "build_models",
    "inference_tensor_cost": "calibrate",
    "hook_check_cost": "calibrate",
    "first_forward": "run_rows",
}

TOO_SMALL_BN = "Expected more than 1 value per channel when training"
BAD_ARGS = [
    ("report", ["{tmp}/r.json", "--chart", "{tmp}", "--short"], "--chart {tmp}: a directory; give a file name"),
    ("cpu_side_by_side", ["--budget", "nan"], "--budget must be a number of seconds, at least 0, got nan"),
    ("cpu_side_by_side", ["--budget", "inf"], "--budget must be a number of seconds, at least 0, got inf"),
    ("cpu_side_by_side", ["--batch", "0"], "argument --batch: expected a positive integer, got 0"),
    ("cpu_side_by_side", ["--size", "14"], "--size 14 is too small for GoogLeNet: the smallest input side is 15"),
    ("cpu_side_by_side", ["--size", "-3"], "argument --size: expected a positive integer, got -3"),
    ("bench_block_backward", ["--json", "{tmp}"], "--json {tmp}: cannot write there (Is a directory)"),
    ("bench_block_backward", ["--budget", "-1"], "--budget must be a number of seconds, at least 0, got -1.0"),
    ("bench_block_backward", ["--budget", "nan"], "--budget must be a number of seconds, at least 0, got nan"),
    (
        "bench_block_backward",
        ["--op", "bn_train", "--batch", "1", "--size", "32", "--block", "inception5b"],
        f"--op bn_train --batch 1 at --size 32: {TOO_SMALL_BN}",
    ),
    ("train_cpu", ["--rounds", "0"], "argument --rounds: expected a positive integer, got 0"),
    ("train_cpu", ["--steps", "0"], "argument --steps: expected a positive integer, got 0"),
    ("train_cpu", ["--batch", "0"], "argument --batch: expected a positive integer, got 0"),
    ("train_cpu", ["--batch", "-1"], "argument --batch: expected a positive integer, got -1"),
    ("train_cpu", ["--image-size", "0"], "argument --image-size: expected a positive integer, got 0"),
    (
        "train_cpu",
        ["--variant", "torchvision", "--image-size", "10"],
        "--image-size 10 is too small for variant 'torchvision': the smallest it takes is 15",
    ),
    (
        "train_cpu",
        ["--variant", "torchvision", "--batch", "1", "--image-size", "32"],
        f"--batch 1 at --image-size 32: {TOO_SMALL_BN}",
    ),
    ("train_cpu", ["--backend", "nope"], "--backend 'nope' is unavailable on cpu: unknown backend"),
    ("train_cpu", ["--dtype", "float16"], "argument --dtype: invalid choice: 'float16'"),
    (
        "inference_tensor_cost",
        ["--batches", "abc"],
        "argument --batches: expected comma-separated positive integers, got 'abc'",
    ),
    (
        "inference_tensor_cost",
        ["--batches", "1,0"],
        "argument --batches: expected comma-separated positive integers, got 0 in '1,0'",
    ),
    ("inference_tensor_cost", ["--rounds", "0"], "argument --rounds: expected a positive integer, got 0"),
    ("inference_tensor_cost", ["--repeats", "0"], "argument --repeats: expected a positive integer, got 0"),
    ("inference_tensor_cost", ["--backend", "nope"], "--backend 'nope' is unavailable on cpu: unknown backend"),
    (
        "hook_check_cost",
        ["--sizes", "32,10"],
        "--sizes 10 is too small for variant 'torchvision': the smallest it takes is 15",
    ),
    ("first_forward", ["--device", "gpu"], "--device gpu: not a device name (cpu, cuda or cuda:N)"),
    pytest.param("first_forward", ["--device", "cuda"], "--device cuda: no CUDA device is available", marks=NO_CUDA),
    (
        "first_forward",
        ["--device", "cpu", "--size", "10"],
        "--size 10 is too small for variant 'torchvision': the smallest it takes is 15",
    ),
    (
        "first_forward",
        ["--device", "cpu", "--timeout", "0"],
        "--timeout must be a number of seconds, more than 0, got 0.0",
    ),
    ("first_forward", ["--device", "cpu", "--json", "{tmp}"], "--json {tmp}: cannot write there (Is a directory)"),
    ("first_forward", ["--device", "cpu", "--batches", "1,0"], "--batches must be positive"),
]


def _work_started(*args, **kwargs):
    raise AssertionError("the work started: the bad argument was not refused up front")


def _case_id(case) -> str:
    script, argv, _ = getattr(case, "values", case)
    return " ".join([script, *argv])


@pytest.mark.parametrize("script, argv, message", BAD_ARGS, ids=[_case_id(c) for c in BAD_ARGS])
def test_benchmark_scripts_refuse_a_bad_argument_before_running(script, argv, message, tmp_path, capsys, monkeypatch):
    module = importlib.import_module(f"benchmarks.{script}")
    if WORK[script]:
        monkeypatch.setattr(module, WORK[script], _work_started)
    monkeypatch.setenv(settings.ENV_DEVICE, "cpu")  # (cpu_side_by_side sets it where unset)
    (tmp_path / "r.json").write_text(json.dumps({"benchmarks": []}))
    tmp = str(tmp_path)
    with pytest.raises(SystemExit) as exc:
        module.main([a.replace("{tmp}", tmp) for a in argv])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert exc.value.code == 2 and len(errors) == 1, err
    assert message.replace("{tmp}", tmp) in errors[0] and "Traceback" not in err, err


def test_a_benchmark_scripts_json_on_a_full_disk_is_one_line():
    """--json is tried before the run, but a full disk fails only in the write at its end: one line
    naming the file and exit code 1 (cli.run_command, cli.write_json), not a traceback."""
    if not os.path.exists("/dev/full"):
        pytest.fail("no /dev/full on this Linux machine")
    argv = ["--device", "cpu", "--batch", "2", "--size", "32", "--block", "inception5b", "--budget", "0"]
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_block_backward", *argv, "--json", "/dev/full"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1 and run.stderr.strip() == "error: /dev/full: No space left on device", run.stderr


@pytest.mark.parametrize(
    "env, value, message",
    [
        (settings.ENV_DEVICE, "gpu", "INCEPTION_FAST_BENCH_DEVICE gpu: not a device name (cpu, cuda or cuda:N)"),
        pytest.param(
            settings.ENV_DEVICE, "cuda", "INCEPTION_FAST_BENCH_DEVICE cuda: no CUDA device is available", marks=NO_CUDA
        ),
        (settings.ENV_THREADS, "0", "INCEPTION_FAST_BENCH_THREADS: expected positive integers, got '0'"),
        (settings.ENV_THREADS, "-1", "INCEPTION_FAST_BENCH_THREADS: expected positive integers, got '-1'"),
        (settings.ENV_THREADS, "abc", "INCEPTION_FAST_BENCH_THREADS: expected positive integers, got 'abc'"),
        (
            settings.ENV_BATCHES,
            ",",
            "INCEPTION_FAST_BENCH_BATCHES: expected comma-separated names or numbers, got ',' (an empty item)",
        ),
        (settings.ENV_BATCHES, "8,1,8", "INCEPTION_FAST_BENCH_BATCHES: '8' is named twice in '8,1,8'"),
        (settings.ENV_BATCHES, "8,08", "INCEPTION_FAST_BENCH_BATCHES: batch size 8 is named twice in '8,08'"),
        (settings.ENV_BATCHES, "8,0", "INCEPTION_FAST_BENCH_BATCHES: expected positive integers, got '0'"),
        (settings.ENV_DTYPES, "fp32, fp32", "INCEPTION_FAST_BENCH_DTYPES: 'fp32' is named twice in 'fp32, fp32'"),
        (settings.ENV_BLOCK_BATCH, "2.5", "INCEPTION_FAST_BENCH_BLOCK_BATCH: expected positive integers, got '2.5'"),
        (settings.ENV_DEADLINE, "inf", "INCEPTION_FAST_BENCH_DEADLINE must be a Unix time in seconds, got 'inf'"),
        (settings.ENV_DEADLINE, "nan", "INCEPTION_FAST_BENCH_DEADLINE must be a Unix time in seconds, got 'nan'"),
        (
            settings.ENV_FORMATS,
            "channels_last,,contiguous",
            "INCEPTION_FAST_BENCH_FORMATS: expected comma-separated names or numbers, got "
            "'channels_last,,contiguous' (an empty item)",
        ),
    ],
)
def test_benchmark_settings_refuse_a_bad_value(env, value, message, monkeypatch):
    monkeypatch.setenv(env, value)
    with pytest.raises(ValueError) as exc:
        settings.settings()
    assert str(exc.value) == message


@pytest.mark.parametrize(
    "env",
    [
        settings.ENV_QUICK,
        settings.ENV_DEVICE,
        settings.ENV_BATCHES,
        settings.ENV_BLOCK_BATCH,
        settings.ENV_DTYPES,
        settings.ENV_FORMATS,
        settings.ENV_MODELS,
        settings.ENV_THREADS,
        settings.ENV_DEADLINE,
    ],
)
def test_benchmark_settings_take_a_blank_variable_as_unset(env, monkeypatch):
    """A variable set to blanks (an empty field of a job file or CI matrix) means its default: the
    same settings as with it unset, no error."""
    monkeypatch.delenv(env, raising=False)
    unset = settings.settings()
    monkeypatch.setenv(env, " ")
    assert settings.settings() == unset


def test_benchmark_settings_read_the_documented_variables():
    """The variables settings.py reads (its ENV_* names) are exactly the ones its docstring documents."""
    import re

    read = {value for name, value in vars(settings).items() if name.startswith("ENV_")}
    assert read == set(re.findall(r"``(INCEPTION_FAST_BENCH_\w+)=", settings.__doc__))


def test_benchmark_settings_follow_the_device(monkeypatch):
    """On a CPU: no CUDA-graph timing even when asked for, the CPU peers when asked for, fp32 only.  On
    CUDA (the device mocked: no GPU needed): no CPU peers even when asked for, bf16 first (the headline
    dtype is the block benchmarks' dtype).  On either, a full run's default grid starts at its largest
    batch (the headline), the block benchmarks and the compile anchor run at that batch, and its image,
    batches and repeats are larger than quick mode's."""
    for name in ("BATCHES", "BLOCK_BATCH", "DTYPES", "FORMATS", "MODELS", "THREADS", "DEADLINE", "QUICK"):
        monkeypatch.delenv(f"INCEPTION_FAST_BENCH_{name}", raising=False)
    monkeypatch.setenv(settings.ENV_CUDA_GRAPH, "1")
    monkeypatch.setenv(settings.ENV_PEERS, "1")
    for device in ("cpu", "cuda"):
        gpu = device == "cuda"
        monkeypatch.setattr(settings, "bench_device", lambda d=device: torch.device(d))
        monkeypatch.setenv(settings.ENV_QUICK, "1")
        quick = settings.settings()
        monkeypatch.delenv(settings.ENV_QUICK)
        s = settings.settings()
        assert quick.quick and not s.quick, device
        assert (s.cuda_graph, s.peers) == (quick.cuda_graph, quick.peers) == (gpu, not gpu), device
        assert s.dtypes[0] == s.block_dtype == ("bf16" if gpu else "fp32") and len(s.dtypes) == (2 if gpu else 1)
        assert s.batches[0] == max(s.batches) == s.block_batch == s.compile_batch, (device, s)
        assert s.image_size > quick.image_size and max(s.batches) > max(quick.batches), (device, s)
        assert s.repeats > quick.repeats and s.rounds > quick.rounds, (device, s)


@pytest.mark.parametrize(
    "option, value, line",
    [
        ("--bench-device", "gpu", "ERROR: INCEPTION_FAST_BENCH_DEVICE gpu: not a device name (cpu, cuda or cuda:N)"),
        ("--bench-threads", "0", "ERROR: INCEPTION_FAST_BENCH_THREADS: expected positive integers, got '0'"),
    ],
)
def test_benchmark_pytest_options_refuse_a_bad_value_in_one_line(option, value, line):
    """Through the benchmarks' conftest: pytest's usage error (exit code 4), not an INTERNALERROR
    traceback nor a run that ignores the value."""
    pytest.importorskip("pytest_benchmark")
    env = {k: v for k, v in os.environ.items() if not k.startswith("INCEPTION_FAST_BENCH_")}
    cmd = [sys.executable, "-m", "pytest", "benchmarks/bench_throughput.py", "--quick", option, value]
    proc = subprocess.run(
        [*cmd, "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [line] and "INTERNALERROR" not in proc.stdout


def test_benchmark_conftest_hooks_set_the_run_up_from_its_options(monkeypatch):
    """The benchmarks' conftest, its hooks called directly on a CPU: each flag option sets its own
    variable, --bench-device and --bench-threads theirs; torch gets the threads asked for, else one
    in a quick CPU run and its own count in a full one; cuDNN's autotuner stays off on a CPU; SIGTERM
    becomes one interrupt, then is ignored; bench_*.py files are collected from a folder but not when
    given by path; a benchmark past the deadline skips; the header and the machine info say the run's
    settings."""
    import signal
    import time

    from benchmarks import conftest
    from benchmarks.helpers.settings import (
        ENV_COMPILE,
        ENV_CUDA_GRAPH,
        ENV_DEADLINE,
        ENV_DEVICE,
        ENV_PEERS,
        ENV_QUICK,
        ENV_THREADS,
    )

    base = {k: v for k, v in os.environ.items() if not k.startswith("INCEPTION_FAST_BENCH_")}
    signals, threads = [], []
    monkeypatch.setattr(signal, "signal", lambda *args: signals.append(args))  # (not this process's)
    monkeypatch.setattr(torch, "set_num_threads", threads.append)  # (nor its threads)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)

    def configure(env: dict, **options) -> dict:
        monkeypatch.setattr(os, "environ", dict(base, **env))
        signals.clear()
        threads.clear()
        conftest.pytest_configure(
            types.SimpleNamespace(getoption=lambda name, default=None: options.get(name, default))
        )
        assert signals == [(signal.SIGTERM, conftest._interrupt)]
        return {k: v for k, v in os.environ.items() if k.startswith("INCEPTION_FAST_BENCH_")}

    assert configure({}, quick=True, peers=True, bench_device="cpu") == {
        ENV_QUICK: "1",
        ENV_PEERS: "1",
        ENV_DEVICE: "cpu",
    }
    assert threads == [1] and not torch.backends.cudnn.benchmark
    info = {}
    conftest.pytest_benchmark_update_machine_info(None, info)
    assert info["inception_fast"]["device"] == "cpu" and info["inception_fast"]["result_basename"].endswith("_quick")
    assert "device=cpu quick=True compile=False peers=True cuda_graph=False" in conftest.pytest_report_header(None)
    cpu = {ENV_DEVICE: "cpu"}
    env = configure(cpu, compile=True, cuda_graph=True, bench_threads="3")
    assert env == {**cpu, ENV_COMPILE: "1", ENV_CUDA_GRAPH: "1", ENV_THREADS: "3"} and threads == [3]
    assert "quick=False compile=True peers=False" in conftest.pytest_report_header(None)  # (no CUDA graphs on a CPU)
    assert conftest.pytest_report_header(None).endswith(" threads=3")
    assert configure(cpu) == cpu and threads == [] and not torch.backends.cudnn.benchmark
    assert conftest.pytest_report_header(None).endswith(" threads=default")
    info = {}
    conftest.pytest_benchmark_update_machine_info(None, info)
    assert not info["inception_fast"]["result_basename"].endswith("_quick")

    signals.clear()
    with pytest.raises(KeyboardInterrupt, match="stopped by signal 15"):
        conftest._interrupt(signal.SIGTERM, None)
    assert signals == [(signal.SIGTERM, signal.SIG_IGN)]

    given = Path("benchmarks/bench_given.py")
    parent = types.SimpleNamespace(session=types.SimpleNamespace(isinitpath=lambda path: path == given))
    monkeypatch.setattr(pytest.Module, "from_parent", lambda parent, path: path)
    found = Path("benchmarks/bench_found.py")
    for path in (found, given, Path("benchmarks/helper.py"), Path("benchmarks/bench_data.json")):
        assert conftest.pytest_collect_file(path, parent) == (path if path == found else None), path

    for before in ("", str(time.time() + 3600)):  # no deadline, or one ahead: the benchmark runs
        os.environ[ENV_DEADLINE] = before
        try:
            conftest.pytest_runtest_setup(None)
        except pytest.skip.Exception:
            pytest.fail(f"a benchmark skipped with {ENV_DEADLINE}={before!r}")
    os.environ[ENV_DEADLINE] = str(time.time() - 1)
    with pytest.raises(pytest.skip.Exception, match=f"time budget spent \\({ENV_DEADLINE}\\)"):
        conftest.pytest_runtest_setup(None)


def test_first_forward_device_defaults_to_cuda_where_there_is_one(monkeypatch, capsys):
    """No --device: cuda where there is one, else cpu (said in --help), checked before the rows."""
    from benchmarks import first_forward

    seen = []
    monkeypatch.setattr(first_forward, "run_rows", lambda args, *rest: seen.append(args.device))
    assert first_forward.main(["--no-compile"]) == 0
    assert seen == ["cuda" if torch.cuda.is_available() else "cpu"]
    with pytest.raises(SystemExit):
        first_forward.main(["--help"])
    assert "(default: cuda where there is one, else cpu)" in " ".join(capsys.readouterr().out.split())


def test_first_forward_labels_a_warm_row_after_an_unfinished_cold_run(monkeypatch):
    """A cold row that never reached its tuned result leaves its caches partial: the warm row run on
    them says so; after a complete cold row it is plain "warm"."""
    from benchmarks import first_forward

    results = iter([{"to_first_result_s": 9.0, "error": "tuned not reached in 30 s"}, {}, {"to_tuned_s": 20.0}, {}])
    monkeypatch.setattr(first_forward, "run_child", lambda *args: next(results))
    args = types.SimpleNamespace(device="cpu", dtype="fp32", size=64, timeout=30.0)
    rows = []
    first_forward.run_rows(args, [("fused", "fused", {}, ("cold", "warm"))], [256, 1], 0, ["cold", "warm"] * 2, rows)
    assert [r["cache"] for r in rows] == ["cold", "warm, after an unfinished cold run", "cold", "warm"]


def test_first_forward_rows_get_their_own_caches_and_shares_of_the_deadline(monkeypatch, tmp_path):
    """Each (kind, batch) runs on caches of its own, shared by its cold and warm rows only, without
    the caller's choice store; under a deadline each row gets its weighted share of the time left,
    never more than --timeout, and the rows that would start past it are not run."""
    import time

    from benchmarks import first_forward

    calls = []

    def child(kind, device, batch, dtype, size, env, timeout):
        calls.append((env["TRITON_CACHE_DIR"], env["TORCHINDUCTOR_CACHE_DIR"], env, timeout))
        return {"to_tuned_s": 1.0}

    monkeypatch.setattr(first_forward, "run_child", child)
    monkeypatch.setenv("INCEPTION_FAST_CHOICE_CACHE", str(tmp_path / "store"))
    args = types.SimpleNamespace(device="cpu", dtype="fp32", size=64, timeout=30.0)
    kinds = [("fused", "fused", {}, ("cold", "warm")), ("torch.compile", "torch.compile", {}, ("cold", "warm"))]
    plan = ["cold", "warm"] * 4
    rows = []
    t0 = time.time()
    first_forward.run_rows(args, kinds, [256, 1], t0 + 3600, plan, rows)
    assert [(r["kind"], r["batch"], r["cache"]) for r in rows] == [
        (label, batch, state) for label, *_ in kinds for batch in (256, 1) for state in ("cold", "warm")
    ]
    assert all("INCEPTION_FAST_CHOICE_CACHE" not in c[2] for c in calls)
    triton_dirs = [c[0] for c in calls]
    assert triton_dirs[0::2] == triton_dirs[1::2] and len(set(triton_dirs)) == 4, triton_dirs
    assert len({c[1] for c in calls}) == 4 and all(c[0] != c[1] for c in calls)
    assert all(c[3] == 30.0 for c in calls)  # --timeout caps a share of a far deadline
    # A near deadline: the first row's share is its weight over what the plan has left.
    calls.clear()
    first_forward.run_rows(args, kinds[:1], [256], time.time() + 80, ["cold", "warm", "cold", "warm"], [])
    cold_share, warm_share = (c[3] for c in calls)
    assert 29 < cold_share <= 30 and warm_share <= 80 / 5 + 1, (cold_share, warm_share)
    # Past the deadline: nothing runs and each row says so.
    calls.clear()
    rows = []
    first_forward.run_rows(args, kinds, [1], time.time() - 1, ["cold", "warm"] * 2, rows)
    assert calls == [] and [r["error"] for r in rows] == ["not run: past the deadline"] * 4


def test_a_thread_count_of_exactly_the_limit_is_taken(monkeypatch, capsys):
    """--threads (cli.thread_count) and INCEPTION_FAST_BENCH_THREADS take up to cli.thread_limit()
    threads, 4 per CPU: exactly the limit is taken and reaches torch.set_num_threads; one more is
    refused up front, one error line naming the limit."""
    from benchmarks import cpu_side_by_side
    from inception_fast.cli import thread_count, thread_limit

    limit = thread_limit()
    assert thread_count(str(limit)) == limit
    monkeypatch.setenv(settings.ENV_DEVICE, "cpu")
    seen = []
    monkeypatch.setattr(torch, "set_num_threads", seen.append)  # (not this test process's threads)
    monkeypatch.setattr(cpu_side_by_side, "rows", _work_started)
    with pytest.raises(AssertionError, match="the work started"):
        cpu_side_by_side.main(["--threads", str(limit), "--budget", "0"])
    assert seen == [limit]
    with pytest.raises(SystemExit) as exc:
        cpu_side_by_side.main(["--threads", str(limit + 1), "--budget", "0"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert exc.value.code == 2 and len(errors) == 1, err
    assert f"argument --threads: at most {limit} (4 per CPU), got {limit + 1}" in errors[0], err
    assert seen == [limit]
    monkeypatch.setenv(settings.ENV_THREADS, str(limit))
    assert settings.settings().threads == limit
    monkeypatch.setenv(settings.ENV_THREADS, str(limit + 1))
    with pytest.raises(ValueError) as exc:
        settings.settings()
    assert str(exc.value) == f"INCEPTION_FAST_BENCH_THREADS: at most {limit} (4 per CPU), got '{limit + 1}'"
