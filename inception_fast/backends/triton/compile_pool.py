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
* ``submit(recorded)`` hands the jobs that are not already in Triton's cache on disk (``record``
  checks with the key Triton's ``compile`` computes) to worker processes, in order, and returns
  one future per job.  Each worker (``python -m inception_fast.backends.triton.compile_pool``,
  a plain subprocess: no multiprocessing, so a user script without a ``__main__`` guard is never
  re-run) imports the kernel's module, sets a driver that only names the target (it touches no
  GPU) and calls ``preload``, which writes the binary into Triton's cache on disk.
* The launch itself then compiles nothing: Triton finds the binary in its cache, in milliseconds.

Nothing here decides what runs: a job that fails, is lost with its worker or is never submitted
only means the launch compiles that binary itself, as it would without this module.  A job is
never counted as done before its worker answered.

Workers start when a batch has at least ``MIN_JOBS`` binaries to compile, one per CPU this process
may use (``compile_threads()``, at most 16) where the available memory leaves room for them
(``WORKER_BYTES`` each), each when its feeding thread takes its first job; they run at a lower
priority than this process and stop ``IDLE_S`` after their last job, at ``close()`` or when the
process ends.  Launches made while workers run (``busy()``) wait for the binaries they have
(``pending``).
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
from concurrent.futures import Future
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
    "pending",
    "busy",
    "wait",
    "close",
    "stats",
]

ENV_PRECOMPILE = "INCEPTION_FAST_PRECOMPILE"
ENV_COMPILE_THREADS = "INCEPTION_FAST_COMPILE_THREADS"
# Fewer binaries to compile than this and the workers' start (each imports torch and triton,
# ~2 s) costs more than it saves: the autotuners' threads compile them.
MIN_JOBS = 4
# The workers' niceness: the parent keeps the CPU it needs to issue its benchmark launches on time.
WORKER_NICE = 10
# Memory a worker may take (its own pages: torch's and triton's libraries are shared, ~650 MB
# resident in all on the 2-core machine): no more workers start than MemAvailable / this.
WORKER_BYTES = 512 << 20
# A worker's thread stops it after this long without a job.
IDLE_S = 2.0
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
_recording = 0  # threads recording now: the hook is installed while this is above 0
_wrapped_hook: Optional[Callable] = None  # the jit_cache_hook that was set before ours


def _hook(**kwargs):
    sink = getattr(_LOCAL, "sink", None)
    if sink is None:  # another thread's compile while one records: whatever hook was set before
        wrapped = _wrapped_hook
        return wrapped(**kwargs) if wrapped is not None else None
    info, compile_ = kwargs["fn"], kwargs["compile"]
    jit = info.jit_function
    target = jit.device_caches[compile_["device"]][2]
    job = Job(info.module, info.name, compile_["specialization_data"], (target.backend, target.arch, target.warp_size))
    sink.append((job, _on_disk(jit, compile_, target)))
    return True  # do not compile


@contextlib.contextmanager
def _hook_installed():
    """Triton's jit_cache_hook set to ours while any thread records (the hook that was set before
    is called for every other thread's compiles meanwhile, and put back after)."""
    global _recording, _wrapped_hook
    from triton import knobs

    if not hasattr(knobs.runtime, "jit_cache_hook"):
        raise RuntimeError("this Triton has no jit_cache_hook: nothing can be recorded")
    with _HOOK_LOCK:
        if _recording == 0:
            _wrapped_hook = knobs.runtime.jit_cache_hook
            knobs.runtime.jit_cache_hook = _hook
        _recording += 1
    try:
        yield
    finally:
        with _HOOK_LOCK:
            _recording -= 1
            if _recording == 0:
                knobs.runtime.jit_cache_hook = _wrapped_hook
                _wrapped_hook = None


def record(call: Callable[[], object]) -> list:
    """Runs ``call`` (one or more ``kernel.warmup(...)``) and returns [(Job, on_disk)] for each
    binary it would have compiled, in order, compiling none of them.  A binary already in the
    kernel's in-memory cache is not a job: Triton does not ask.  Raises RuntimeError, before
    calling ``call``, where this Triton has no cache hook (its callers then leave the compiles to
    the launches)."""
    outer = getattr(_LOCAL, "sink", None)
    with _hook_installed():
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
    """A worker: one JSON job per line on stdin, one JSON answer per line on the stdout it was
    started with; anything else written to stdout (Python's or a library's own, at the C level)
    goes to stderr."""
    from triton.runtime.driver import driver

    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    with contextlib.suppress(OSError, AttributeError):
        # Below the parent, whose autotune benchmarks time its launches while the workers compile.
        os.nice(WORKER_NICE)
    active = None
    for line in sys.stdin:
        try:
            job = Job(*json.loads(line))
            if active != tuple(job.target):
                driver.set_active(TargetOnlyDriver(*job.target))
                active = tuple(job.target)
            _resolve(job.module, job.name).preload(job.data)
            answer = {"ok": True}
        except Exception as exc:
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


def _worker_env() -> dict:
    """The parent's environment, with this process's import path first (the worker must import
    the same copy of the kernels: their source is part of the cache key) and Triton's cache
    directory as this process has it (also where it was set in code, ``triton.knobs``)."""
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    paths = [p for p in sys.path if p]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    with contextlib.suppress(Exception):
        from triton import knobs

        env["TRITON_CACHE_DIR"] = str(knobs.cache.dir)
    return env


def _worker_command() -> list:
    return [sys.executable, "-m", __name__]


class _Worker:
    """One worker process and the pipe to it."""

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
        """Sends ``job`` and returns the answer; raises (and kills the worker) where the worker
        died, got stuck (JOB_TIMEOUT_S) or answered something else than one JSON line."""
        try:
            self.proc.stdin.write(json.dumps(list(job)) + "\n")
            self.proc.stdin.flush()
            answer: list = []
            reader = threading.Thread(target=lambda: answer.append(self.proc.stdout.readline()), daemon=True)
            reader.start()
            reader.join(JOB_TIMEOUT_S)
            if not answer or not answer[0]:
                raise RuntimeError("the compile worker died or got stuck")
            return json.loads(answer[0])
        except Exception:
            self.kill()
            raise

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
    """Up to ``n`` workers fed from one queue, in order, each by a daemon thread of its own (so a
    process that exits is never kept waiting for queued jobs).  Each job handed in starts one
    more thread while there are fewer than ``n``; a thread starts its worker when it takes its
    first job and stops it after IDLE_S without one, so workers do not outlive the batches they
    compile, and a later batch starts them again.  A worker that dies fails its job; when no
    thread is left, what is still queued fails too."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.queue: "queue.Queue" = queue.Queue()
        self.lock = threading.Lock()
        self.threads = 0
        self.stopping = False
        self.workers: list = []

    def _drain(self) -> list:
        """The queued futures, taken off the queue (under the lock; settle them after it)."""
        taken = []
        while True:
            try:
                taken.append(self.queue.get_nowait()[1])
            except queue.Empty:
                return taken

    def _serve(self) -> None:
        worker = None
        while True:
            try:
                job, future = self.queue.get(timeout=IDLE_S)
            except queue.Empty:
                with self.lock:  # submit puts under the lock: no job can arrive after this check
                    if not self.queue.empty() and not self.stopping:
                        continue
                    self.threads -= 1
                break
            if not future.set_running_or_notify_cancel():
                continue
            try:
                if self.stopping:
                    raise RuntimeError("the compile workers were closed")
                if worker is None:
                    worker = _Worker()
                    with self.lock:
                        self.workers.append(worker)
                    _count("workers_started")
                future.set_result(worker.run(job))
            except Exception as exc:
                future.set_exception(exc)
                if worker is None and not self.stopping:
                    continue
                worker = None  # died (run killed it): this thread ends
                with self.lock:
                    self.threads -= 1
                    orphans = self._drain() if self.threads == 0 else []
                for f in orphans:
                    if f.set_running_or_notify_cancel():
                        f.set_exception(RuntimeError("no compile worker left"))
                break
        if worker is not None:
            worker.close()

    def submit(self, job: Job) -> Optional[Future]:
        """The job's future (one more thread started while there are fewer than ``n``), or None
        where this pool was closed."""
        future: Future = Future()
        with self.lock:
            if self.stopping:
                return None
            self.queue.put((job, future))
            if self.threads < self.n:
                self.threads += 1
                threading.Thread(target=self._serve, name="inception_fast_compile_worker", daemon=True).start()
        return future

    def running(self) -> bool:
        return self.threads > 0 and not self.stopping

    def close(self) -> int:
        """Cancels the queued jobs, then stops the workers (a job being compiled is lost: its
        launch compiles it).  Returns how many jobs it cancelled."""
        with self.lock:
            self.stopping = True
            taken = self._drain()
            workers = list(self.workers)
        cancelled = sum(f.cancel() for f in taken)
        for w in workers:
            w.kill()
        return cancelled


_LOCK = threading.Lock()  # the pool, the futures
_STATS_LOCK = threading.Lock()
_pool: Optional[_Pool] = None
_futures: dict = {}  # Job -> Future: every job submitted to the current pool
_stats = {"submitted": 0, "compiled": 0, "failed": 0, "cancelled": 0, "on_disk": 0, "workers_started": 0}


def _count(name: str, n: int = 1) -> None:
    with _STATS_LOCK:
        _stats[name] += n


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


def _compiled(future: Future) -> bool:
    """Whether ``future`` ended with its binary compiled (a worker's {"ok": true} answer)."""
    if future.cancelled() or future.exception() is not None:
        return False
    answer = future.result()
    return isinstance(answer, dict) and answer.get("ok") is True


def _done(future: Future) -> None:
    if not future.cancelled():
        _count("compiled" if _compiled(future) else "failed")


def submit(recorded: list, force: bool = False) -> list:
    """Hands the recorded jobs ([(Job, on_disk)], see ``record``) that are not on disk to the
    workers, in order, and returns their futures (a job handed out before returns its earlier
    future).  No new job is handed out, and no worker started, where workers are off
    (INCEPTION_FAST_PRECOMPILE=0), the CPUs or the available memory leave room for fewer than
    two, or there are fewer than MIN_JOBS new jobs and no workers running (``force``: any number,
    for tests)."""
    global _pool
    if not enabled():
        return []
    futures, new, on_disk = [], [], 0
    with _LOCK:
        seen, fresh = set(), []
        for job, disk in recorded:
            if job in seen:
                continue
            seen.add(job)
            if job in _futures:
                futures.append(_futures[job])
            elif disk:
                on_disk += 1
            else:
                fresh.append(job)
        running = _pool is not None and _pool.running()
        if fresh and (running or len(fresh) >= MIN_JOBS or force):
            if _pool is None:
                n = min(compile_threads(), _memory_for_workers())
                _pool = _Pool(n) if n >= 2 else None
            for job in fresh if _pool is not None else ():
                future = _pool.submit(job)
                if future is None:
                    break
                _futures[job] = future
                new.append(future)
    _count("on_disk", on_disk)
    _count("submitted", len(new))
    for f in new:
        f.add_done_callback(_done)  # outside the lock: a future already done runs it at once
    return futures + new


def pending(recorded: list) -> list:
    """The futures of the recorded jobs the current workers have (none are handed out here)."""
    with _LOCK:
        return [_futures[job] for job, _ in recorded if job in _futures]


def busy() -> bool:
    """Whether workers are running (cheap, no lock: launches ask it before waiting for their
    binaries; a stale answer only costs or saves one look at the futures)."""
    pool = _pool
    return pool is not None and pool.running()


def wait(futures: list) -> int:
    """Waits for ``futures``; returns how many compiled (a failed one is the launch's to compile)."""
    for f in futures:
        with contextlib.suppress(Exception):
            f.result()
    return sum(_compiled(f) for f in futures)


def close() -> None:
    """Cancels the jobs no worker has started and stops the workers (they also stop by
    themselves IDLE_S after their last job)."""
    global _pool
    with _LOCK:
        pool, _pool = _pool, None
        _futures.clear()
    if pool is not None:
        _count("cancelled", pool.close())


def stats() -> dict:
    """Counts since the process started: jobs submitted (then compiled, failed or cancelled by
    ``close``), found on disk, and workers started."""
    with _STATS_LOCK:
        return dict(_stats)


atexit.register(close)


if __name__ == "__main__":
    _worker_main()
