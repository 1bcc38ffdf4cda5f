"""inception_fast.precompile: the compile-only pass (inception_fast/compile_only.py), the worker
processes that compile what it recorded (backends/triton/compile_pool.py), and the model's first
forward that uses both (inception_fast/precompiler.py)."""

from __future__ import annotations

import copy
import json
import sys

import pytest
import torch
from model_cases import FP32, calibrated_net, net_tolerance
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
    done, not_done = wait_all(futures, timeout=120)
    assert not not_done, "jobs of dead workers never ended"
    assert compile_pool.wait(futures) == 0
    errors = [f.exception() for f in futures]
    assert all(isinstance(e, RuntimeError) for e in errors), errors
    assert any("died" in str(e) for e in errors) and any("no compile worker left" in str(e) for e in errors)
    assert not compile_pool.busy()


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
    futures = compile_pool.submit(many)
    assert len(futures) == len(many) and compile_pool.busy()
    assert compile_pool.submit(many) == futures and compile_pool.pending(many) == futures
    compile_pool.wait(futures)
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


@pytest.mark.gpu
def test_gpu_first_forward_compiles_nothing_itself(gpu, monkeypatch, tmp_path):
    """On the GPU, with an empty Triton cache: the first eval forward of FusedGoogLeNet (auto,
    bf16) precompiles in workers, and this process then compiles no binary of its own (Triton's
    compile listener sees only cache hits); the logits are the reference's; a second forward does
    not precompile again."""
    import triton

    from inception_fast.backends.triton import compile_pool

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
    # 72x72: a size no other test launches, so no binary is already in this process's memory.
    x = torch.randn(2, 3, 72, 72, device=gpu, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    misses = []
    monkeypatch.setattr(
        triton.knobs.compilation,
        "listener",
        lambda **kw: None if kw["cache_hit"] else misses.append(kw["src"].name),
        raising=False,
    )
    before = compile_pool.stats()
    with torch.no_grad():
        y = model(x)
        torch.cuda.synchronize()
    after = compile_pool.stats()
    assert after["submitted"] > before["submitted"], after
    assert after["failed"] == before["failed"], after
    assert misses == [], f"compiled in this process after the precompile: {sorted(set(misses))}"
    with torch.no_grad():
        expected = ref64(x.double())
        check_close(y.double(), expected, reduced_precision_bound(ref(x).double(), expected), "first forward")
        model(x)
    assert compile_pool.stats()["submitted"] == after["submitted"]
