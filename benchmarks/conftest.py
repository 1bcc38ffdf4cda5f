"""pytest options for the benchmarks (imported as ``benchmarks.conftest``).

The options only set the environment variables that benchmarks/helpers/settings.py reads, so
a benchmark behaves the same whether started with a flag or an env var.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from benchmarks.helpers.environment import environment, result_basename
from benchmarks.helpers.settings import (
    ENV_COMPILE,
    ENV_CUDA_GRAPH,
    ENV_DEADLINE,
    ENV_DEVICE,
    ENV_PEERS,
    ENV_QUICK,
    ENV_THREADS,
    deadline,
    flag,
    settings,
)


def pytest_addoption(parser):
    group = parser.getgroup("inception_fast benchmarks")
    group.addoption("--quick", action="store_true", help=f"tiny sizes, few repeats (= {ENV_QUICK}=1)")
    group.addoption(
        "--compile",
        action="store_true",
        help=f"add the torch.compile anchor (= {ENV_COMPILE}=1); select it alone with -k compile",
    )
    group.addoption(
        "--peers",
        action="store_true",
        help=f"on CPU, add ONNX Runtime, OpenVINO f32/bf16 and torch.compile+freezing (= {ENV_PEERS}=1)",
    )
    group.addoption("--cuda-graph", action="store_true", help=f"time CUDA-graph replays (= {ENV_CUDA_GRAPH}=1)")
    group.addoption("--bench-device", default=None, help=f"cpu or cuda (= {ENV_DEVICE})")
    group.addoption("--bench-threads", default=None, help=f"torch.set_num_threads for the run (= {ENV_THREADS})")


def _interrupt(signum, frame):
    # Once: `timeout` signals the process and then its group, and a second interrupt could cut
    # short the session's end, where pytest-benchmark writes (timeout -k still kills a hang).
    signal.signal(signum, signal.SIG_IGN)
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def pytest_configure(config):
    # A step's timeout (gpu_suite.sh) ends pytest with SIGTERM.  As an interrupt, pytest still ends
    # its session, and pytest-benchmark writes the rows that finished (killed, it writes nothing).
    try:
        signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:  # not the main thread: leave the signal as it is
        pass
    flags = (("quick", ENV_QUICK), ("compile", ENV_COMPILE), ("peers", ENV_PEERS), ("cuda_graph", ENV_CUDA_GRAPH))
    for opt, env in flags:
        if config.getoption(opt, default=False):
            os.environ[env] = "1"
    for opt, env in (("bench_device", ENV_DEVICE), ("bench_threads", ENV_THREADS)):
        value = config.getoption(opt, default=None)
        if value:
            os.environ[env] = value
    try:
        s = settings()
    except ValueError as exc:  # a bad INCEPTION_FAST_BENCH_* value: one line, not an INTERNALERROR
        raise pytest.UsageError(str(exc)) from None
    import torch

    if s.device.type == "cuda":
        # Every row in its best setting: cuDNN times its convolution algorithms per shape and keeps
        # the fastest (torchvision's model, torch.compile's, the fused model's cuDNN candidates).
        torch.backends.cudnn.benchmark = True
    if s.threads:
        torch.set_num_threads(s.threads)
    elif s.quick and s.device.type == "cpu":
        # A smoke run on a small shared CI box: two spinning OpenMP threads on two busy cores
        # can make a millisecond op take a hundred; one thread keeps the run's time predictable.
        torch.set_num_threads(1)


def pytest_collect_file(file_path, parent):
    # bench_*.py do not match pytest's test_*.py pattern: collect them when the folder is given
    # (`pytest benchmarks/`); a file given by path is already collected by pytest itself.
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_runtest_setup(item):
    # A time-boxed run (gpu_suite.sh) sets a deadline before its hard timeout: benchmarks not yet
    # started then skip, so a case is not cut mid-way, and pytest ends with its JSON written.
    stop = deadline()  # (checked with the other settings when the run began)
    if stop and time.time() > stop:
        pytest.skip(f"time budget spent ({ENV_DEADLINE})")


def pytest_report_header(config):
    s = settings()
    return (
        f"inception_fast benchmarks: device={s.device} quick={s.quick} compile={s.compile} peers={s.peers} "
        f"cuda_graph={s.cuda_graph} image={s.image_size} batches={s.batches} dtypes={s.dtypes} "
        f"threads={s.threads or 'default'}"
    )


def pytest_benchmark_update_machine_info(config, machine_info):
    # Lands in the JSON's machine_info: report.py reads device and versions from here.
    env = environment()
    env["result_basename"] = result_basename(env, quick=flag(ENV_QUICK))
    machine_info["inception_fast"] = env
