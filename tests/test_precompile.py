"""inception_fast.precompile: the compile-only pass (inception_fast/compile_only.py), the worker
processes that compile what it recorded (backends/triton/compile_pool.py), and the model's first
forward that uses both (inception_fast/precompiler.py)."""

from __future__ import annotations

import copy
import json
import sys

import pytest
import torch
from model_cases import COLD_NETWORK, FP32, calibrated_net, net_tolerance
from processes import assert_gone
from uninterpreted import run_python

from inception_fast import FusedGoogLeNet, choice_store, choices, precompile
from inception_fast.compile_only import compile_only, compiling_only
from inception_fast.testing import check_close, reduced_precision_bound, rel_error


@pytest.fixture(autouse=True)
def _workers_stopped():
    """No test leaves workers running for the next one."""
    yield
    from inception_fast.backends.triton import compile_pool

    compile_pool.close()


@pytest.fixture
def two_workers(monkeypatch):
    """Two workers allowed, whatever this machine's CPUs and free memory."""
    from inception_fast.backends.triton import compile_pool

    monkeypatch.setenv("INCEPTION_FAST_COMPILE_THREADS", "2")
    monkeypatch.setattr(compile_pool, "_memory_for_workers", lambda: 16)
    return compile_pool


def test_compile_only_pass_launches_nothing_and_meets_every_launch(monkeypatch):
    """Under the interpreter (no binaries to compile): the pass records every Triton launch the
    forward makes (the same kernels, as often), launches none of them, and the forward after it
    gives the reference's logits; eval-mode BatchNorm statistics are untouched."""
    from inception_fast.backends.triton import _common

    if not _common.INTERPRET:
        pytest.skip("the launch count here is the interpreter's (on a GPU the model's own test covers it)")
    ref, _ = calibrated_net(size=32)
    model = FusedGoogLeNet.from_torchvision(ref, backend="triton").eval()
    x = torch.randn(1, 3, 32, 32)
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    n0 = _common.launch_count()
    counts = precompile(model, x)
    with compile_only() as recorded, torch.no_grad():
        model(x)
    assert _common.launch_count() == n0, "a compile-only pass launched a kernel"
    assert counts["binaries"] == 0 and counts["submitted"] == 0
    launched = []
    real = _common.launch
    monkeypatch.setattr(_common, "launch", lambda k, g, *a, **kw: (launched.append(k.__name__), real(k, g, *a, **kw)))
    with torch.no_grad():
        y = model(x)
    assert counts["launches"] == len(launched) > 0
    assert sorted(name for name, _ in recorded.launches) == sorted(launched)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())
    ref64, bound = net_tolerance(ref, x)
    assert rel_error(y.double(), ref64) <= max(bound, FP32)


def test_measured_choice_in_a_compile_only_pass_runs_every_candidate_and_keeps_nothing(monkeypatch):
    """A measured choice inside a compile-only pass runs each candidate once (for what it
    compiles), measures none, checks none against the reference, remembers and stores nothing,
    and returns the first; outside the pass the same wrong candidate is caught and dropped."""
    choice = choices.MeasuredChoice(
        measure_on=("cpu",), store_as="test_precompile", timer=lambda f, d, r: (f(), 1.0)[1]
    )
    monkeypatch.setattr(choice_store.STORE, "put", lambda *a, **k: pytest.fail("a compile-only pass stored a choice"))
    monkeypatch.setattr(choice_store.STORE, "get", lambda *a, **k: None)
    calls = []
    good = torch.ones(3)

    def runners():
        wrong = choices.checked_against(
            lambda: calls.append("wrong") or good * 2, lambda: calls.append("reference") or good, "wrong one"
        )
        return {"first": lambda: calls.append("first") or good, "wrong": wrong}

    device = torch.device("cpu")
    with compile_only():
        assert compiling_only()
        assert choice.pick("k", device, runners()) == "first"
    assert not compiling_only()
    assert calls == ["first", "wrong"], calls  # once each; the reference never ran
    assert choice.lookup("k") is None
    monkeypatch.setattr(choice_store.STORE, "put", lambda *a, **k: None)
    calls.clear()
    assert choice.pick("k", device, runners()) == "first"
    assert "disagrees" in choice.choices()["k"].errors["wrong"]


def test_a_nested_compile_only_pass_leaves_the_outer_one_compile_only():
    """compile_only() inside another (a precompile inside a compile-only forward): the outer pass is
    still compile-only after the inner one ends, and records into its own Recorded again."""
    from inception_fast.compile_only import add_launch

    with compile_only() as outer:
        with compile_only() as inner:
            assert compiling_only()
            add_launch("inner_kernel", {})
        assert compiling_only(), "the outer pass stopped being compile-only"
        add_launch("outer_kernel", {})
    assert not compiling_only()
    assert inner.launches == [("inner_kernel", {})] and outer.launches == [("outer_kernel", {})]


def test_a_compile_only_pass_is_this_threads_only():
    """Another thread's forward during a compile-only pass runs as usual (the pass is per thread)."""
    import threading

    seen = []
    with compile_only():
        other = threading.Thread(target=lambda: seen.append(compiling_only()))
        other.start()
        other.join()
        assert compiling_only()
    assert seen == [False]


def test_precompiles_are_kept_per_input_layout():
    """A precompile's bookkeeping is per input device, dtype, shape and strides: binaries pending
    for an NCHW input are not taken as precompiled for a channels_last one of the same shape (its
    kernels are other binaries), nor for another dtype."""
    from concurrent.futures import Future

    from inception_fast import precompiler

    module, x = torch.nn.Identity().eval(), torch.randn(1, 8, 4, 4)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    assert precompiler._key((x,)) == precompiler._key((x.clone(),))
    assert precompiler._key((x,)) != precompiler._key((x_cl,))
    assert precompiler._key((x,)) != precompiler._key((x.double(),))
    precompiler._DONE.setdefault(module, precompiler.LRUDict())[precompiler._key((x,))] = [Future()]
    assert precompiler.compiles_pending(module, x.clone()) == 1
    assert precompiler.compiles_pending(module, x_cl) == 0


def test_precompile_counts_each_binary_once_and_keeps_its_futures(monkeypatch):
    """precompile's counts: a binary the pass records twice counts once, of them those on disk; the
    futures submit gives are what compiles_pending looks at; ``wait`` waits for them and counts the
    compiled ones, ``wait=False`` counts none (under the interpreter the pass runs on the CPU)."""
    from concurrent.futures import Future

    from inception_fast import precompiler
    from inception_fast.compile_only import add_jobs, add_launch

    pool = precompiler._pool()
    if pool is None or not precompiler._interpreted():
        pytest.skip("on the CPU only the interpreter runs a compile-only pass")
    a, b, c = _job(50), _job(51), _job(52)

    class Recording(torch.nn.Module):
        def forward(self, t):
            add_launch("kernel", {})
            add_jobs([(a, False), (b, True), (a, False), (c, False), (b, True)])
            return t

    ok, failed, running = Future(), Future(), Future()
    ok.set_result({"ok": True})
    failed.set_result({"ok": False, "error": "x"})
    handed = []
    futures = [ok, failed]
    monkeypatch.setattr(pool, "submit", lambda recorded: handed.append(list(recorded)) or list(futures))
    module, x = Recording().eval(), torch.zeros(1, 2)
    want = {"launches": 1, "binaries": 3, "on_disk": 1, "submitted": 2}
    assert precompile(module, x, wait=False) == dict(want, compiled=0)
    assert handed[0] == [(a, False), (b, True), (a, False), (c, False), (b, True)]
    assert precompile(module, x) == dict(want, compiled=1)
    futures[:] = [running]
    assert precompile(module, x.t().contiguous(), wait=False)["submitted"] == 1
    assert precompiler.compiles_pending(module, x.t().contiguous()) == 1
    assert precompiler.compiles_pending(module, x) == 0
    running.set_result({"ok": True})
    assert precompiler.compiles_pending(module, x.t().contiguous()) == 0


def test_a_forward_precompiles_its_input_once_and_only_in_eval_mode(monkeypatch):
    """forward_after_precompile: a forward in train mode does not precompile, and leaves the input
    to the first eval-mode forward; a precompile that fails is not tried again on that input."""
    from inception_fast import precompiler

    calls = []

    def failing_precompile(module, x, wait=True):
        if precompiler.training_part(module) is not None:
            raise ValueError("train mode")
        calls.append(tuple(x.shape))
        raise RuntimeError("the pass failed")

    monkeypatch.setattr(precompiler, "precompile", failing_precompile)
    monkeypatch.setattr(precompiler, "_may_precompile", lambda allowed, x: allowed)
    monkeypatch.setattr(precompiler, "workers_on", lambda: True)
    monkeypatch.setattr(precompiler, "_interpreted", lambda: False)
    module, x = torch.nn.Linear(2, 2), torch.ones(1, 2)

    def forward(t):
        return precompiler.forward_after_precompile(module, True, t, lambda u: u, defer=True)

    forward(x)
    assert calls == []
    module.eval()
    forward(x)
    forward(x)
    assert calls == [(1, 2)]
    forward(torch.ones(3, 2))
    assert calls == [(1, 2), (3, 2)]


@pytest.mark.parametrize(
    ("env", "defers"),
    [({}, True), ({"INCEPTION_FAST_DEFER_TUNING": "OFF"}, False), ({"INCEPTION_FAST_AUTO": "static"}, False)],
)
def test_deferring_follows_its_environment(monkeypatch, env, defers):
    """Deferring is on by default, off with INCEPTION_FAST_DEFER_TUNING off (in any case) and with
    INCEPTION_FAST_AUTO=static (which measures nothing to defer)."""
    from inception_fast import precompiler

    monkeypatch.delenv(precompiler.ENV_DEFER, raising=False)
    monkeypatch.delenv(choices.ENV_AUTO, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert precompiler._defer_enabled() is defers


def test_precompile_refuses_what_it_cannot_precompile():
    ref, model = calibrated_net(size=32)
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="the module is in train mode.*eval"):
        precompile(model.train(), x)
    model.eval()
    model.inception4a.train()
    with pytest.raises(ValueError, match="'inception4a' is in train mode"):
        precompile(model, x)
    model.eval()
    with pytest.raises(TypeError, match="nn.Module"):
        precompile(lambda t: t, x)
    with pytest.raises(TypeError, match="input tensors, got none"):
        precompile(model)
    with pytest.raises(TypeError, match="input tensors, got list"):
        precompile(model, [x])
    from inception_fast import precompiler

    with pytest.raises(TypeError, match="compiles_pending expects the forward's input tensors, got str"):
        precompiler.compiles_pending(model, "not a tensor")
    with pytest.raises(TypeError, match="compiles_pending expects an nn.Module"):
        precompiler.compiles_pending(None, x)
    assert precompiler.compiles_pending(model, x) == 0


def test_a_forward_that_fails_in_the_pass_says_so():
    """A forward that fails in the compile-only pass (e.g. one that checks values nothing
    computed) raises an error that says why (under the interpreter, on the CPU: the pass runs
    there for its launch records)."""
    from inception_fast.backends.triton import _common

    if not _common.INTERPRET:
        pytest.skip("on the CPU only the interpreter runs a compile-only pass")

    class Checked(torch.nn.Module):
        def forward(self, t):
            raise ValueError("logits not finite")

    with pytest.raises(RuntimeError, match="compile-only pass of the forward failed.*logits not finite"):
        precompile(Checked().eval(), torch.randn(1, 3, 32, 32))


def test_workers_compile_the_recorded_binaries_and_the_launches_load_them():
    """Without a GPU (a subprocess, no interpreter, sm_90 named by a driver that touches no GPU):
    a compile-only pass through three launchers (the max pool, launch 1, the TMA launch 2 with its
    pre_hooked configs) launches nothing and records one binary per config; two workers compile
    them all into an empty Triton cache; the autotuners' own warmups then find every one there
    (the same cache key: a hit each, no new entry)."""
    run = run_python("tests/precompile_offline.py", env={"INCEPTION_FAST_COMPILE_THREADS": "2"})
    r = json.loads(run.stdout.strip().splitlines()[-1])
    n = sum(r["configs"])
    assert r["launched"] == 0 and r["recorded_launches"] == n
    names = ["_max_pool_kernel", "_reduce_pool_kernel", "_branch_convs_tma_kernel"]
    assert r["jobs"] == [name for name, c in zip(names, r["configs"]) for _ in range(c)]
    assert r["on_disk_before"] == 0 and r["submitted"] == r["compiled"] == n
    assert r["stats"]["failed"] == 0 and r["stats"]["workers_started"] == 2
    assert r["on_disk_after"] == n
    assert r["loads"] == r["hits"] == n and r["new_cache_entries"] == 0


def _settled(condition, seconds: float = 10.0) -> None:
    """Asserts ``condition()`` becomes true within ``seconds`` (a future's done-callbacks run just
    after the waiters wake)."""
    import time

    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert condition()


def _job(i: int):
    from inception_fast.backends.triton import compile_pool

    return compile_pool.Job("inception_fast_no_such_module", f"k{i}", "{}", ("cuda", 90, 32))


def test_a_failed_or_lost_job_is_left_to_its_launch(two_workers, monkeypatch):
    """A job a worker cannot compile counts as failed; workers that die without answering fail
    their jobs and then the rest, promptly, not by hanging; nothing raises."""
    from concurrent.futures import wait as wait_all

    compile_pool = two_workers
    before = compile_pool.stats()
    futures = compile_pool.submit([(_job(i), False) for i in range(3)], force=True)
    assert len(futures) == 3 and compile_pool.wait(futures) == 0
    answers = [f.result() for f in futures]
    assert all(not a["ok"] and "inception_fast_no_such_module" in a["error"] for a in answers), answers
    _settled(lambda: compile_pool.stats()["failed"] - before["failed"] == 3)
    compile_pool.close()
    # Workers that read a job and exit without answering.
    monkeypatch.setattr(
        compile_pool, "_worker_command", lambda: [sys.executable, "-c", "import sys; sys.stdin.readline()"]
    )
    futures = compile_pool.submit([(_job(i), False) for i in range(10, 16)], force=True)
    done, not_done = wait_all(futures, timeout=30)
    assert not not_done, "jobs of dead workers never ended"
    assert compile_pool.wait(futures) == 0
    errors = [f.exception() for f in futures]
    assert all(isinstance(e, RuntimeError) for e in errors), errors
    assert any("died" in str(e) for e in errors) and any("no compile worker left" in str(e) for e in errors)
    assert not compile_pool.busy()
    compile_pool.close()
    # Workers that read a job and never answer: killed after JOB_TIMEOUT_S, their jobs failed.
    monkeypatch.setattr(compile_pool, "JOB_TIMEOUT_S", 1.0)
    monkeypatch.setattr(
        compile_pool,
        "_worker_command",
        lambda: [sys.executable, "-c", "import sys, time; sys.stdin.readline(); time.sleep(60)"],
    )
    futures = compile_pool.submit([(_job(i), False) for i in range(16, 18)], force=True)
    _settled(lambda: len(compile_pool._pool.workers) == 2)
    pids = [w.proc.pid for w in compile_pool._pool.workers]
    done, not_done = wait_all(futures, timeout=30)
    assert not not_done, "jobs of stuck workers never ended"
    assert all("died or got stuck" in str(f.exception()) for f in futures)
    for pid in pids:
        assert_gone(pid, "a stuck worker was not killed")


def test_workers_start_only_where_they_pay_and_stop_when_idle(two_workers, monkeypatch):
    """No workers with INCEPTION_FAST_PRECOMPILE=0, with one CPU, without memory for two, for fewer
    than MIN_JOBS new jobs or for jobs already on disk; the same jobs again while the workers have
    them give the same futures; the workers stop IDLE_S after their last job."""
    import time

    compile_pool = two_workers
    # Workers that answer every job at once (no torch to import: this test is about the pool).
    answer = "import json, sys\nfor _ in sys.stdin:\n    print(json.dumps({'ok': False, 'error': 'x'}), flush=True)"
    monkeypatch.setattr(compile_pool, "_worker_command", lambda: [sys.executable, "-c", answer])

    def started() -> int:
        return compile_pool.stats()["workers_started"]

    many = [(_job(i), False) for i in range(20, 20 + compile_pool.MIN_JOBS)]
    s0 = started()
    assert compile_pool.submit(many[:-1]) == []
    assert compile_pool.submit([(job, True) for job, _ in many]) == []
    monkeypatch.setenv("INCEPTION_FAST_PRECOMPILE", "0")
    assert not compile_pool.enabled() and compile_pool.submit(many, force=True) == []
    monkeypatch.setenv("INCEPTION_FAST_PRECOMPILE", "1")
    monkeypatch.setenv("INCEPTION_FAST_COMPILE_THREADS", "1")
    assert compile_pool.submit(many, force=True) == []
    monkeypatch.setenv("INCEPTION_FAST_COMPILE_THREADS", "2")
    monkeypatch.setattr(compile_pool, "_memory_for_workers", lambda: 1)
    assert compile_pool.submit(many, force=True) == []
    monkeypatch.setattr(compile_pool, "_memory_for_workers", lambda: 16)
    assert started() == s0 and not compile_pool.busy()
    submitted = compile_pool.stats()["submitted"]
    futures = compile_pool.submit(many + many[:1])  # a job recorded twice is one job
    assert len(futures) == len(many) and compile_pool.busy()
    one = compile_pool.submit([(_job(30), False)])  # fewer than MIN_JOBS: the running workers take it
    assert len(one) == 1
    assert compile_pool.submit(many) == futures and compile_pool.pending(many) == futures
    assert compile_pool.stats()["submitted"] - submitted == len(many) + 1
    compile_pool.wait(futures + one)
    assert started() == s0 + 2
    workers = list(compile_pool._pool.workers)
    deadline = time.monotonic() + compile_pool.IDLE_S + 30
    while (compile_pool.busy() or any(w.proc.poll() is None for w in workers)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not compile_pool.busy() and all(w.proc.poll() is not None for w in workers), "idle workers still run"
    # Later jobs start new workers.
    later = compile_pool.submit([(_job(i), False) for i in range(40, 40 + compile_pool.MIN_JOBS)])
    assert len(later) == compile_pool.MIN_JOBS
    compile_pool.wait(later)
    assert started() >= s0 + 3


def test_close_cancels_the_queued_jobs_and_stops_the_workers(two_workers, monkeypatch):
    """close() cancels the jobs no worker has taken (counted cancelled, not failed), kills the
    workers (their jobs fail: the launches compile them) and forgets every future: the same jobs
    submitted again get new ones."""
    compile_pool = two_workers
    monkeypatch.setattr(
        compile_pool,
        "_worker_command",
        lambda: [sys.executable, "-c", "import sys, time; sys.stdin.readline(); time.sleep(60)"],
    )
    before = compile_pool.stats()
    jobs = [(_job(i), False) for i in range(60, 66)]
    futures = compile_pool.submit(jobs, force=True)
    _settled(lambda: compile_pool.stats()["workers_started"] - before["workers_started"] == 2)
    _settled(lambda: sum(f.running() for f in futures) == 2)
    pids = [w.proc.pid for w in compile_pool._pool.workers]
    compile_pool.close()
    for pid in pids:
        assert_gone(pid, "close() left a worker running")
    assert sum(f.cancelled() for f in futures) == 4
    _settled(lambda: all(f.done() for f in futures))
    assert compile_pool.wait(futures) == 0 and not compile_pool.busy()
    _settled(lambda: compile_pool.stats()["failed"] - before["failed"] == 2)
    assert compile_pool.stats()["cancelled"] - before["cancelled"] == 4
    again = compile_pool.submit(jobs, force=True)
    assert len(again) == len(jobs) and not any(f in futures or f.cancelled() for f in again)


def test_compile_threads_and_the_workers_switch_read_their_environment(monkeypatch):
    """Without INCEPTION_FAST_COMPILE_THREADS, the CPUs this process may use, at most 16;
    INCEPTION_FAST_PRECOMPILE off in any case; the workers' memory limit from MemAvailable (kB)."""
    import io
    import os

    from inception_fast import precompiler
    from inception_fast.backends.triton import compile_pool

    monkeypatch.delenv(compile_pool.ENV_COMPILE_THREADS, raising=False)  # (its values: test_cold_start.py)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(5)), raising=False)
    assert compile_pool.compile_threads() == 5
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(40)), raising=False)
    assert compile_pool.compile_threads() == 16
    for value, on in (("", True), ("1", True), ("0", False), ("off", False), ("OFF", False), (" False ", False)):
        monkeypatch.setenv(compile_pool.ENV_PRECOMPILE, value)
        assert compile_pool.enabled() is on and precompiler.workers_on() is on, value
    meminfo = "MemTotal:       8388608 kB\nMemAvailable:   2097152 kB\n"
    monkeypatch.setattr(compile_pool, "open", lambda *a, **k: io.StringIO(meminfo), raising=False)
    assert compile_pool._memory_for_workers() == (2 << 30) // compile_pool.WORKER_BYTES


def test_recording_passes_other_threads_compiles_on_and_nests(monkeypatch):
    """While a thread records, Triton's jit_cache_hook answers other threads' compiles with the hook
    set before (put back after); a record inside another returns its own jobs and the outer one
    keeps them too."""
    import threading
    from types import SimpleNamespace

    from triton import knobs
    from triton.backends.compiler import GPUTarget

    from inception_fast.backends.triton import compile_pool

    earlier = []

    def earlier_hook(**kwargs):
        earlier.append(kwargs["fn"].name)
        return False

    monkeypatch.setattr(knobs.runtime, "jit_cache_hook", earlier_hook)
    jit = SimpleNamespace(device_caches={0: (None, None, GPUTarget("cuda", 90, 32))})

    def compile_(name):  # what Triton's compile asks its hook (the on-disk check fails here: not on disk)
        fn = SimpleNamespace(module="m", name=name, jit_function=jit)
        return knobs.runtime.jit_cache_hook(fn=fn, compile={"device": 0, "specialization_data": name})

    def other_thread():
        t = threading.Thread(target=compile_, args=("other",))
        t.start()
        t.join()

    inner = []
    outer = compile_pool.record(
        lambda: (compile_("a"), other_thread(), inner.extend(compile_pool.record(lambda: compile_("b"))))
    )
    assert earlier == ["other"]
    assert knobs.runtime.jit_cache_hook is earlier_hook
    assert [(job.name, job.target, on_disk) for job, on_disk in outer] == [
        ("a", ("cuda", 90, 32), False),
        ("b", ("cuda", 90, 32), False),
    ]
    assert [job.name for job, _ in inner] == ["b"]


def test_workers_get_this_processs_kernels_and_cache(monkeypatch, tmp_path):
    """The workers' environment: no TRITON_INTERPRET, this process's import path before the
    PYTHONPATH it was given, Triton's cache directory as set in code."""
    import os

    from triton import knobs

    from inception_fast.backends.triton import compile_pool

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    monkeypatch.setattr(sys, "path", ["", "/here", *sys.path])
    with knobs.cache.scope():
        knobs.cache.dir = str(tmp_path)
        env = compile_pool._worker_env()
    assert "TRITON_INTERPRET" not in env
    paths = env["PYTHONPATH"].split(os.pathsep)
    assert paths[0] == "/here" and paths[-1] == "/elsewhere"
    assert env["TRITON_CACHE_DIR"] == str(tmp_path)


def test_a_worker_compiles_each_job_for_its_own_target(monkeypatch, tmp_path):
    """A real worker process, its kernel a stand-in whose preload writes to stdout (Python's and file
    descriptor 1) and reports the target the worker's driver names: each job is compiled for its
    own target, in a batch that changes targets, the answers are not mixed with what it wrote, and
    the worker runs below this process's priority."""
    import os

    from inception_fast.backends.triton import compile_pool

    (tmp_path / "inception_fast_target_probe.py").write_text(
        "import os\n\n"
        "from triton.runtime.driver import driver\n"
        "from triton.runtime.jit import JITFunction\n\n\n"
        "class Probe(JITFunction):\n"
        "    def __init__(self):\n"
        "        pass\n\n"
        "    def preload(self, data):\n"
        "        print('compiling', data)\n"
        "        os.write(1, b'compiling at the C level\\n')\n"
        "        t = driver.active.get_current_target()\n"
        "        raise RuntimeError(f'{data} for {t.backend} {t.arch} {t.warp_size}')\n\n\n"
        "probe = Probe()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    worker = compile_pool._Worker()
    try:
        answers = [
            worker.run(compile_pool.Job("inception_fast_target_probe", "probe", data, target))
            for data, target in (("a", ("cuda", 80, 32)), ("b", ("cuda", 90, 32)), ("c", ("cuda", 90, 32)))
        ]
        niceness = os.getpriority(os.PRIO_PROCESS, worker.proc.pid) - os.getpriority(os.PRIO_PROCESS, 0)
    finally:
        worker.close()
    assert [a["error"] for a in answers] == [
        "RuntimeError: a for cuda 80 32",
        "RuntimeError: b for cuda 90 32",
        "RuntimeError: c for cuda 90 32",
    ]
    assert niceness == min(compile_pool.WORKER_NICE, 19 - os.getpriority(os.PRIO_PROCESS, 0))


def test_deferred_choices_take_the_trusted_candidate_and_keep_nothing(monkeypatch):
    """Inside choices.measuring_deferred() a measured choice that has not measured a key takes its
    trusted candidate (the one not entered through checked_against), even where it is not the
    first; it times nothing, reads and writes no store and keeps nothing.  A key measured before
    keeps its choice; after the context the same key is measured.  The deferral is this thread's: another
    thread's choices measure meanwhile."""
    import threading

    timed = []
    choice = choices.MeasuredChoice(
        measure_on=("cpu",), store_as="test_defer", timer=lambda f, d, r: (timed.append(1), f(), 1.0)[2]
    )
    monkeypatch.setattr(choice_store.STORE, "get", lambda *a, **k: pytest.fail("deferred: read the store"))
    monkeypatch.setattr(choice_store.STORE, "put", lambda *a, **k: pytest.fail("deferred: stored a choice"))
    t = torch.ones(2)

    def runners():
        return {
            "kernel": choices.checked_against(lambda: t, lambda: t, "the kernel"),
            "aten": lambda: t,
            "other": choices.checked_against(lambda: t, lambda: t, "another kernel"),
        }

    device = torch.device("cpu")
    assert not choices.deferring()
    with choices.measuring_deferred():
        assert choices.deferring() and not choice.can_measure(device)
        with choices.measuring_deferred():
            pass
        assert choices.deferring()  # a nested context restores the outer one
        elsewhere = []
        other = threading.Thread(target=lambda: elsewhere.append(choices.deferring()))
        other.start()
        other.join()
        assert elsewhere == [False], "another thread's choices measure"
        assert choice.pick("new", device, runners()) == "aten"
    assert not choices.deferring()
    assert timed == [] and choice.lookup("new") is None
    monkeypatch.setattr(choice_store.STORE, "get", lambda *a, **k: None)
    monkeypatch.setattr(choice_store.STORE, "put", lambda *a, **k: None)
    assert choice.pick("new", device, runners()) == "kernel"  # measured now: a tie, the first wins
    assert len(timed) == 3
    with choices.measuring_deferred():
        assert choice.pick("new", device, runners()) == "kernel"  # measured before: kept


def test_auto_takes_the_torch_backend_while_deferring(monkeypatch):
    """AUTO (the blocks' backend under auto), measuring on the CPU here: inside
    measuring_deferred() it takes the torch backend (ATen, its trusted candidate) and times and
    keeps nothing; outside, the same call measures every candidate."""
    timed = []
    auto = choices.AutoBackend(measure_on=("cpu",), timer=lambda f, d, r: timed.append(f) or 1.0)
    monkeypatch.setattr(auto, "candidates", lambda device: ["triton", "cuda", "torch"])
    x = torch.randn(1, 8, 4, 4).contiguous(memory_format=torch.channels_last)
    w_red, w_pool, w3, w5 = (
        torch.randn(6, 8, 1, 1),
        torch.randn(2, 8, 1, 1),
        torch.randn(4, 3, 3, 3),
        torch.randn(2, 1, 5, 5),
    )
    b = [torch.zeros(w.shape[0]) for w in (w_red, w_pool, w3, w5)]
    args = (x, w_red, b[0], w_pool, b[1], w3, b[2], w5, b[3])
    with choices.measuring_deferred():
        assert auto.choose(*args) == "torch"
    assert timed == [] and not auto.choices()
    assert auto.choose(*args) == "triton"  # measured: a tie, the order's first
    assert len(timed) == 3 and len(auto.choices()) == 1


def _fake_timer(timed: list):
    """A measured choice's timer for the model tests below: records each candidate, times the
    trusted one as 1 s without running it and fails every checked one, so the trusted candidates
    are chosen and the forward stays ATen's (fast under the interpreter)."""

    def timer(fn, device, repeats):
        timed.append(fn)
        if getattr(fn, "checked", False):
            raise RuntimeError("not timed in this test")
        return 1.0

    return timer


def _every_choice_measuring_on_cpu(monkeypatch, timer) -> list:
    monkeypatch.setenv("INCEPTION_FAST_EXTRA_CANDIDATES", "all")  # the fold and the chain too (stages.offers)
    measured = [c for c in vars(choices).values() if isinstance(c, choices.MeasuredChoice)]
    for c in measured:
        monkeypatch.setattr(c, "measure_on", ("cpu", "cuda"))
        monkeypatch.setattr(c, "timer", timer)
        monkeypatch.setattr(c, "_choices", type(c._choices)())
    return measured


def test_a_deferred_forward_runs_atens_computations_and_measures_nothing(monkeypatch):
    """FusedGoogLeNet (auto) with every measured choice measuring on the CPU (the Triton kernels
    are candidates there under the interpreter): a forward inside measuring_deferred() times no
    candidate, keeps no choice, launches no Triton kernel and gives the reference's logits; the
    same forward outside it measures the choices."""
    from inception_fast.backends import availability
    from inception_fast.backends.triton import _common

    if availability("triton", torch.device("cpu")) is not None:
        pytest.skip("the Triton kernels are candidates on the CPU only under the interpreter")
    timed = []
    measured = _every_choice_measuring_on_cpu(monkeypatch, _fake_timer(timed))
    ref, _ = calibrated_net(size=32)
    model = FusedGoogLeNet.from_torchvision(ref, backend="auto").eval()
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    n0 = _common.launch_count()
    with torch.no_grad(), choices.measuring_deferred():
        y = model(x)
    assert timed == [] and all(not c.choices() for c in measured)
    assert _common.launch_count() == n0, "a deferred forward launched a Triton kernel"
    ref64, bound = net_tolerance(ref, x)
    assert rel_error(y.double(), ref64) <= max(bound, FP32)
    with torch.no_grad():
        model(x)
    assert any(getattr(fn, "checked", False) for fn in timed), "the forward measured no Triton candidate"
    kept = {c.store_as for c in measured if c.choices()}
    # (auto on the CPU runs a static backend, so AUTO is not asked; conv2/conv3 run oneDNN's prepacked
    # convs; its pools measure the compiled extension's, CPU_POOL_CHOICE, not the Triton pool)
    assert {"stem", "cpu_pool", "fold", "chain", "head"} <= kept, kept


def test_forwards_defer_while_their_compiles_run(monkeypatch, caplog):
    """forward_after_precompile: the first forward on an input precompiles once; under backend
    auto it and the next ones run deferred while a binary it handed out is compiling (not with
    INCEPTION_FAST_DEFER_TUNING=0, not for a named backend); the first forward after the
    compiles end measures, and says so; later ones no longer look at the futures."""
    import logging
    from concurrent.futures import Future

    from inception_fast import precompiler

    pending = Future()
    calls = []

    def fake_precompile(module, x, wait=True):
        calls.append(wait)
        precompiler._DONE.setdefault(module, precompiler.LRUDict())[precompiler._key((x,))] = [pending]

    monkeypatch.setattr(precompiler, "precompile", fake_precompile)
    monkeypatch.setattr(precompiler, "_may_precompile", lambda allowed, x: allowed)
    monkeypatch.setattr(precompiler, "workers_on", lambda: True)
    monkeypatch.setattr(precompiler, "_interpreted", lambda: False)
    monkeypatch.delenv(precompiler.ENV_DEFER, raising=False)
    module, x = torch.nn.Linear(2, 2).eval(), torch.ones(1, 2)
    seen = []

    def forward(t, defer=True, m=module):
        return precompiler.forward_after_precompile(
            m, True, t, lambda u: seen.append(choices.deferring()) or u, defer=defer
        )

    caplog.set_level(logging.INFO, logger="inception_fast")
    forward(x)
    forward(x)
    assert calls == [False] and seen == [True, True]
    assert precompiler.compiles_pending(module, x) == 1
    assert "until the workers are done" in caplog.text
    monkeypatch.setenv(precompiler.ENV_DEFER, "0")
    forward(x)
    monkeypatch.setenv(precompiler.ENV_DEFER, "1")
    forward(x, defer=False)  # a named backend: its kernels wait for their own binaries
    assert seen[2:] == [False, False]
    other = torch.nn.Linear(2, 2).eval()
    forward(x, defer=False, m=other)
    assert seen[4] is False and precompiler.compiles_pending(other, x) == 1
    pending.set_result({"ok": True})
    assert precompiler.compiles_pending(module, x) == 0
    forward(x)
    forward(x)
    assert seen[5:] == [False, False] and calls == [False, False]
    assert "the workers are done; this forward" in caplog.text
    assert precompiler._DONE[module][precompiler._key((x,))] == []


def _forget_compiled_kernels(monkeypatch) -> None:
    """Empties, for this test, the in-memory cache of compiled binaries of every Triton kernel of
    the package on the current device (restored afterwards): other tests' binaries would otherwise
    be used without a compile (the kernels do not specialize on the batch or the image size), and
    a compile-only pass would find nothing to compile."""
    import importlib
    import pkgutil

    from triton.runtime.jit import JITFunction

    from inception_fast.backends import triton as package

    dev = torch.cuda.current_device()
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for obj in list(vars(module).values()):
            fn = obj
            while not isinstance(fn, JITFunction) and hasattr(fn, "fn"):
                fn = fn.fn  # an autotuner (or heuristics) around the kernel
            caches = getattr(fn, "device_caches", None) if isinstance(fn, JITFunction) else None
            if caches and dev in caches:
                cache = caches[dev][0]  # (kernel_cache, kernel_key_cache, target, backend, binder)
                for key in list(cache):
                    monkeypatch.delitem(cache, key)


def _cold_auto_model(gpu, monkeypatch, tmp_path, batch: int):
    """FusedGoogLeNet (auto, bf16) on the GPU with an empty Triton cache on disk and in memory, no
    choice store and no measured choice in memory; its torchvision reference in bf16 and fp64; a
    72x72 input; and the list of Triton's compiles in this process (its compile listener's misses)."""
    import triton

    from inception_fast.backends.triton import compile_pool

    compile_pool.close()  # earlier tests' jobs (their futures would stand for these binaries)
    _forget_compiled_kernels(monkeypatch)
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(triton.knobs.cache, "dir", str(tmp_path), raising=False)
    monkeypatch.setenv("INCEPTION_FAST_CHOICE_CACHE", "off")
    for choice in vars(choices).values():  # every measured choice measures afresh
        if isinstance(choice, choices.MeasuredChoice):
            monkeypatch.setattr(choice, "_choices", type(choice._choices)())
    ref32, _ = calibrated_net(size=64)
    ref64 = copy.deepcopy(ref32).to(gpu, torch.float64)
    ref = ref32.to(gpu, torch.bfloat16).eval()
    model = FusedGoogLeNet.from_torchvision(ref, backend="auto").eval()
    x = torch.randn(batch, 3, 72, 72, device=gpu, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    misses = []
    monkeypatch.setattr(
        triton.knobs.compilation,
        "listener",
        lambda **kw: None if kw["cache_hit"] else misses.append(kw["src"].name),
        raising=False,
    )
    return model, ref, ref64, x, misses


def _synced_forward(model, x):
    with torch.no_grad():
        y = model(x)
    torch.cuda.synchronize()
    return y


def _check_logits(y, ref, ref64, x, what: str) -> None:
    with torch.no_grad():
        expected = ref64(x.double())
        check_close(y.double(), expected, reduced_precision_bound(ref(x).double(), expected), what)


def _check_captured_aten(model, x, ref, ref64, launches: int, what: str) -> None:
    """``model(x)`` captured into a CUDA graph and replayed: no Triton launch since ``launches``,
    no block backend measured, the reference's logits."""
    from inception_fast.backends.triton import _common

    graph, static_x = torch.cuda.CUDAGraph(), x.clone()
    with torch.no_grad(), torch.cuda.graph(graph):
        static_y = model(static_x)
    graph.replay()
    torch.cuda.synchronize()
    assert _common.launch_count() == launches, f"{what}: a Triton kernel was launched"
    assert not choices.AUTO.choices(), f"{what}: a choice was measured"
    _check_logits(static_y, ref, ref64, x, what)


@pytest.mark.gpu
@COLD_NETWORK
def test_gpu_first_forward_compiles_nothing_itself(gpu, monkeypatch, tmp_path):
    """On the GPU, with an empty Triton cache and INCEPTION_FAST_DEFER_TUNING=0: the first eval
    forward of FusedGoogLeNet (auto, bf16) precompiles in workers, and this process then compiles
    no binary of its own (Triton's compile listener sees only cache hits); the logits are the
    reference's; a second forward does not precompile again."""
    from inception_fast.backends.triton import compile_pool

    model, ref, ref64, x, misses = _cold_auto_model(gpu, monkeypatch, tmp_path, batch=2)
    monkeypatch.setenv("INCEPTION_FAST_DEFER_TUNING", "0")
    before = compile_pool.stats()
    y = _synced_forward(model, x)
    after = compile_pool.stats()
    assert after["submitted"] > before["submitted"], after
    assert after["failed"] == before["failed"], after
    assert misses == [], f"compiled in this process after the precompile: {sorted(set(misses))}"
    assert choices.AUTO.choices(), "the first forward measured nothing"
    _check_logits(y, ref, ref64, x, "first forward")
    with torch.no_grad():
        model(x)
    assert compile_pool.stats()["submitted"] == after["submitted"]


@pytest.mark.gpu
@COLD_NETWORK
def test_gpu_cold_first_forward_defers_its_measuring_until_the_workers_are_done(gpu, monkeypatch, tmp_path):
    """On the GPU, with an empty Triton cache and deferring on (the default): the first eval
    forward of FusedGoogLeNet (auto, bf16) hands its binaries to the workers and runs ATen's
    computations (no Triton launch, no choice measured), with the reference's logits, and so do
    CUDA graphs captured before the workers are done and after, before an eager forward measured;
    then the next forward measures every choice, compiling nothing itself, and its logits are the
    reference's too."""
    import time

    from inception_fast import precompiler
    from inception_fast.backends.triton import _common

    model, ref, ref64, x, misses = _cold_auto_model(gpu, monkeypatch, tmp_path, batch=3)
    monkeypatch.setenv("INCEPTION_FAST_DEFER_TUNING", "1")
    n0 = _common.launch_count()
    y = _synced_forward(model, x)
    assert precompiler.compiles_pending(model, x) > 0, "the workers were done before the forward ended"
    assert _common.launch_count() == n0, "a deferred forward launched a Triton kernel"
    assert not choices.AUTO.choices() and not choices.STEM_CHOICE.choices()
    _check_logits(y, ref, ref64, x, "deferred first forward")
    # A CUDA graph captured meanwhile captures ATen's computations too (no unchecked kernel).
    _check_captured_aten(model, x, ref, ref64, n0, "captured while deferring")
    assert precompiler.compiles_pending(model, x) > 0, "the workers were done before the capture ended"
    deadline = time.monotonic() + 200
    while precompiler.compiles_pending(model, x) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert precompiler.compiles_pending(model, x) == 0, "the workers did not finish in 200 s"
    # So does one captured after the workers are done but before an eager forward measured.
    _check_captured_aten(model, x, ref, ref64, n0, "captured before the measuring forward")
    y = _synced_forward(model, x)
    assert choices.AUTO.choices() and choices.STEM_CHOICE.choices(), "the forward after the workers measured nothing"
    assert misses == [], f"compiled in this process after the precompile: {sorted(set(misses))}"
    _check_logits(y, ref, ref64, x, "the measuring forward")
