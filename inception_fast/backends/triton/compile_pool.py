"""Triton binaries compiled in worker processes, ahead of their launch.

A first forward compiles ~200 Triton binaries (every candidate's configs, benchmarks/cold_start.py
counts them).  Compiled by the autotuners one shape at a time, on threads that share the GIL
for ~20-30% of each compile, that takes tens of seconds.  Here instead:

* ``record(call)`` runs ``call`` (it calls ``kernel.warmup(...)``) with Triton's
  ``knobs.runtime.jit_cache_hook`` answering, in this thread only, "do not compile", and keeps
  what each skipped compile was: Triton's own *specialization data* (the JSON that
  ``JITFunction.preload`` compiles: signature, constexprs, alignment attributes, options), the
  kernel's module and name and the target.  Compiling that data anywhere gives the binary the
  launch would have compiled, under the same cache key.
* ``submit(jobs)`` hands the jobs that are not already in Triton's cache on disk (``Job.on_disk``,
  checked with the same key Triton's ``compile`` computes) to worker processes, in order, and
  returns one future per job.  Each worker (``python -m inception_fast.backends.triton.compile_pool``,
  a plain subprocess: no multiprocessing, so a user script without a ``__main__`` guard is never
  re-run) imports the kernel's module, sets a driver that only names the target (it touches no
  GPU) and calls ``preload``, which writes the binary into Triton's cache on disk.
* The launch itself then compiles nothing: Triton finds the binary in its cache, in milliseconds.

Nothing here decides what runs: a job that fails, is lost with its worker or is never submitted
only means the launch compiles that binary itself, as it would without this module.  A job is
never counted as done before its worker answered.

Workers start when a batch has at least ``MIN_JOBS`` binaries to compile, one per CPU this process
may use (``compile_threads()``, at most 16) where the available memory leaves room for them
(``WORKER_BYTES`` each), and leave when ``close()`` is called or the process ends.
``INCEPTION_FAST_PRECOMPILE=0`` turns the workers off (the autotuners then compile on threads).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import queue
import subprocess
import sys
import threading
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, NamedTuple, Optional

__all__ = [
    "ENV_PRECOMPILE",
    "ENV_COMPILE_THREADS",
    "compile_threads",
    "MIN_JOBS",
    "Job",
    "TargetOnlyDriver",
    "enabled",
    "record",
    "submit",
    "wait",
    "close",
    "stats",
]

ENV_PRECOMPILE = "INCEPTION_FAST_PRECOMPILE"
ENV_COMPILE_THREADS = "INCEPTION_FAST_COMPILE_THREADS"
# Fewer binaries to compile than this and the workers' start (each imports torch and triton,
# ~2 s) costs more than it saves: the autotuners' threads compile them.
MIN_JOBS = 4
# Memory a worker may take (its own pages: torch's and triton's libraries are shared, ~650 MB
# resident in all on the 2-core machine): no more workers start than MemAvailable / this.
WORKER_BYTES = 512 << 20
# A worker that has not answered one job in this long is taken to be stuck: it is killed and the
# job counts as failed (the launch then compiles it).  The longest compile seen is ~5 s.
JOB_TIMEOUT_S = 300.0


class Job(NamedTuple):
    """One binary to compile: the kernel (``module``, ``name``: its qualified name), Triton's
    specialization data for it, and the target as (backend, arch, warp size)."""

    module: str
    name: str
    data: str
    target: tuple


def compile_threads() -> int:
    """How many compiles run side by side: the worker processes of a precompile, and the threads on
    which an autotuner compiles its configs before it benchmarks them.  The CPUs this process may
    use, at most 16, or INCEPTION_FAST_COMPILE_THREADS (1: one by one, inside the benchmark, as
    Triton does by itself, and no workers).  Triton's compile spends most of its time (70-85%
    measured, benchmarks/results/2026-12-02_cpu-2core_cold-start.md) in MLIR and LLVM passes and
    in ptxas, outside the GIL, so the configs of one shape compile about 2.5-3x faster together."""
    raw = os.environ.get(ENV_COMPILE_THREADS, "").strip()
    if raw:
        try:
            return max(1, int(raw))
        except ValueError:
            warnings.warn(f"{ENV_COMPILE_THREADS}={raw!r} is not an integer; one compile at a time", stacklevel=2)
            return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(16, cpus))


def enabled() -> bool:
    """Whether compiles may go to worker processes (INCEPTION_FAST_PRECOMPILE is not 0/off)."""
    return os.environ.get(ENV_PRECOMPILE, "1").strip().lower() not in ("0", "off", "false", "no")


# ---------------------------------------------------------------------------------------------
# Recording: what a warmup would compile, without compiling it.

_LOCAL = threading.local()
_HOOK_LOCK = threading.Lock()
_wrapped_hook: Optional[Callable] = None  # the jit_cache_hook that was set before ours


def _hook(**kwargs):
    sink = getattr(_LOCAL, "sink", None)
    if sink is None:  # another thread, or not recording: whatever hook was there before ours
        return _wrapped_hook(**kwargs) if _wrapped_hook is not None else None
    info, compile_ = kwargs["fn"], kwargs["compile"]
    jit = info.jit_function
    target = jit.device_caches[compile_["device"]][2]
    job = Job(info.module, info.name, compile_["specialization_data"], (target.backend, target.arch, target.warp_size))
    sink.append((job, _on_disk(jit, compile_, target)))
    return True  # do not compile


def _install_hook() -> None:
    global _wrapped_hook
    from triton import knobs

    with _HOOK_LOCK:
        current = knobs.runtime.jit_cache_hook
        if current is not _hook:
            _wrapped_hook = current
            knobs.runtime.jit_cache_hook = _hook


def record(call: Callable[[], object]) -> list:
    """Runs ``call`` (one or more ``kernel.warmup(...)``) and returns [(Job, on_disk)] for each
    binary it would have compiled, in order, compiling none of them.  A binary already in the
    kernel's in-memory cache is not a job: Triton does not ask.  Where this Triton has no cache
    hook, nothing is recorded and the warmups compile as usual."""
    _install_hook()
    outer = getattr(_LOCAL, "sink", None)
    _LOCAL.sink = []
    try:
        call()
        return _LOCAL.sink
    finally:
        found, _LOCAL.sink = _LOCAL.sink, outer
        if outer is not None:
            outer.extend(found)


def _on_disk(jit, compile_: dict, target) -> bool:
    """Whether Triton's cache on disk already holds this binary: the key ``triton.compile``
    computes for it (source, backend, options, cache-invalidating environment), looked up the way
    ``compile`` looks it up.  False where anything about that fails (then the job is compiled,
    which finds the binary itself)."""
    try:
        from triton import knobs
        from triton.compiler import compiler as tc

        if knobs.compilation.always_compile or getattr(knobs.runtime, "add_stages_inspection_hook", None) is not None:
            return False
        src = tc.ASTSource(jit, compile_["signature"], compile_["constants"], compile_["configs"][0])
        backend = tc.make_backend(target)
        raw = json.loads(compile_["specialization_data"])["options"]
        options = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
        options = backend.parse_options(dict(options, **src.parse_options()))
        key = tc.get_cache_key(src, backend, options, env_vars=tc.get_cache_invalidating_env_vars())
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        name = f"{src.name[:150]}.json"
        return name in (tc.get_cache_manager(digest).get_group(name) or {})
    except Exception:
        return False


# ---------------------------------------------------------------------------------------------
# Workers.


class TargetOnlyDriver:
    """A Triton driver that names a target and nothing else: what ``JITFunction.preload`` (and a
    warmup) asks of the driver before compiling.  The workers use it, so they never touch a GPU;
    tests use it to compile for sm_90 on a machine without one."""

    def __init__(self, backend: str, arch, warp_size: int) -> None:
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget(backend, arch, warp_size)

    def get_current_target(self):
        return self.target

    def get_current_device(self) -> int:
        return 0

    def set_current_device(self, device) -> None:
        pass

    def get_current_stream(self, device=None) -> int:
        return 0

    def is_active(self) -> bool:
        return True


def _resolve(module: str, name: str):
    """The JITFunction ``module.name`` (through autotune/heuristics wrappers)."""
    import importlib

    from triton.runtime.jit import JITFunction

    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    while not isinstance(obj, JITFunction):
        obj = obj.fn  # an Autotuner or Heuristics wraps its function as .fn
    return obj


def _worker_main() -> None:
    """A worker: one JSON job per line on stdin, one JSON answer per line on stdout."""
    from triton.runtime.driver import driver

    out = sys.stdout
    sys.stdout = sys.stderr  # anything else printed must not reach the answers
    active = None
    for line in sys.stdin:
        job = Job(*json.loads(line))
        try:
            if active != tuple(job.target):
                driver.set_active(TargetOnlyDriver(*job.target))
                active = tuple(job.target)
            _resolve(job.module, job.name).preload(job.data)
            answer = {"ok": True}
        except Exception as exc:
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
        out.write(json.dumps(answer) + "\n")
        out.flush()


def _worker_env() -> dict:
    """The parent's environment, with this process's import path first (the worker must import
    the same copy of the kernels: their source is part of the cache key)."""
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    paths = [p for p in sys.path if p]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _worker_command() -> list:
    return [sys.executable, "-m", __name__]


class _Worker:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            _worker_command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=_worker_env(),
            text=True,
            bufsize=1,
        )

    def run(self, job: Job) -> dict:
        """Sends ``job`` and waits for the answer; raises where the worker died or got stuck."""
        self.proc.stdin.write(json.dumps(list(job)) + "\n")
        self.proc.stdin.flush()
        answer: list = []
        reader = threading.Thread(target=lambda: answer.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(JOB_TIMEOUT_S)
        if not answer or not answer[0]:
            self.kill()
            raise RuntimeError("the compile worker died or got stuck")
        return json.loads(answer[0])

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.kill()
            self.proc.wait(5)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.stdin.close()
            self.proc.wait(10)
        self.kill()


class _Pool:
    """``n`` workers; each job borrows an idle one (a thread per worker waits on its pipe)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.idle: "queue.Queue[_Worker]" = queue.Queue()
        self.workers = [_Worker() for _ in range(n)]
        for w in self.workers:
            self.idle.put(w)
        self.threads = ThreadPoolExecutor(n, thread_name_prefix="inception_fast_compile_worker")
        self.alive = n

    def run(self, job: Job) -> dict:
        while True:
            if self.alive <= 0:
                raise RuntimeError("no compile worker left")
            try:
                worker = self.idle.get(timeout=1.0)
                break
            except queue.Empty:
                continue
        try:
            answer = worker.run(job)
        except Exception:
            self.alive -= 1
            raise
        self.idle.put(worker)
        return answer

    def submit(self, job: Job) -> Future:
        return self.threads.submit(self.run, job)

    def close(self) -> None:
        self.threads.shutdown(wait=True, cancel_futures=True)  # jobs not started: their launches compile them
        for w in self.workers:
            w.close()


_LOCK = threading.Lock()
_pool: Optional[_Pool] = None
_futures: dict = {}  # Job -> Future: every job submitted since the last close()
_stats = {"submitted": 0, "compiled": 0, "failed": 0, "on_disk": 0, "workers_started": 0}


def _memory_for_workers() -> int:
    """How many workers the memory available now leaves room for (Linux: MemAvailable; else no
    limit)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // WORKER_BYTES
    except (OSError, ValueError, IndexError):
        pass
    return 1 << 30


def _workers(jobs_waiting: int) -> Optional[_Pool]:
    global _pool
    if _pool is None:
        n = min(compile_threads(), jobs_waiting, _memory_for_workers())
        if n < 2:
            return None
        try:
            _pool = _Pool(n)
        except OSError:  # no process could start: the launches compile
            return None
        _stats["workers_started"] += n
    return _pool


def _done(future: Future) -> None:
    try:
        ok = future.result().get("ok", False)
    except Exception:
        ok = False
    with _LOCK:
        _stats["compiled" if ok else "failed"] += 1


def submit(recorded: list, start: bool = True, force: bool = False) -> list:
    """Hands the recorded jobs ([(Job, on_disk)], see ``record``) that are not on disk to the
    workers, in order, and returns their futures (a job submitted before, and not yet closed,
    returns its earlier future).  New jobs are submitted only where workers are running or
    ``start`` lets this call start them: with workers on (INCEPTION_FAST_PRECOMPILE), more than
    one CPU, and at least MIN_JOBS new jobs (``force``: any number, for tests)."""
    if not enabled():
        return []
    with _LOCK:
        seen, fresh, futures = set(), [], []
        for job, on_disk in recorded:
            if job in seen:
                continue
            seen.add(job)
            if job in _futures:
                futures.append(_futures[job])
            elif on_disk:
                _stats["on_disk"] += 1
            else:
                fresh.append(job)
        if not fresh or (_pool is None and (not start or (len(fresh) < MIN_JOBS and not force))):
            return futures
        pool = _workers(len(fresh))
        if pool is None:
            return futures
        for job in fresh:
            f = _futures[job] = pool.submit(job)
            f.add_done_callback(_done)
            futures.append(f)
        _stats["submitted"] += len(fresh)
        return futures


def wait(futures: list) -> int:
    """Waits for ``futures``; returns how many compiled (a failed one is the launch's to compile)."""
    ok = 0
    for f in futures:
        try:
            ok += bool(f.result().get("ok", False))
        except Exception:
            pass
    return ok


def close() -> None:
    """Cancels the submitted jobs no worker has started, waits for the others, then stops the
    workers (a later batch starts new ones)."""
    global _pool
    with _LOCK:
        pool, _pool = _pool, None
        _futures.clear()
    if pool is not None:
        pool.close()


def stats() -> dict:
    """Counts since the process started: jobs submitted, compiled, failed, found on disk, and
    workers started."""
    with _LOCK:
        return dict(_stats)


atexit.register(close)


if __name__ == "__main__":
    _worker_main()
