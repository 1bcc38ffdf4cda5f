"""Time from a fresh process to the first forward's result: FusedGoogLeNet against torch.compile.

    python -m benchmarks.first_forward [--device cuda] [--batches 1,256] [--dtype bf16]
                                       [--size 224] [--json OUT.json] [--no-compile] [--baseline]

Each row is a new Python process, timed from just before it starts to the moment its first
forward's result is on the host (device synchronized): imports, building the model (torchvision's
variant, random weights), moving it to the device, and the first forward.  For FusedGoogLeNet
(``backend="auto"``) with cold caches that forward hands its Triton binaries to the precompile's
workers and runs ATen's computations while they compile (inception_fast.precompiler: tuning
deferred).  "to tuned" is the time until the first forward after the workers are done (which
autotunes the Triton kernels and measures the choices: the stem, the pools, the blocks) has its
result; "steady forward" the forward after that.  For torch.compile the first forward is the
compiled one.

* cold: empty caches (a new TRITON_CACHE_DIR, hence an empty choice store inside it, and a new
  TORCHINDUCTOR_CACHE_DIR), as on a new machine;
* warm: the caches the cold run left, as for a user's second run.

torch.compile (inductor, freezing, torchvision's model) is timed the same way, cold and warm.

A FusedGoogLeNet row also says how many shapes its Triton autotuners tuned and how many of
those they benchmarked (the others read Triton's disk cache: all of them in a warm row), the
threads and worker processes that compiled side by side and the ms each config was timed for
(backends/triton/_common.py: compile_threads, tuning_bench_ms), and what the first forward's
precompile did ("precompile": binaries handed to workers, compiled, failed, found on disk;
inception_fast.precompile).  ``--baseline`` adds, per batch, a cold row "fused, tuning not
deferred" (INCEPTION_FAST_DEFER_TUNING=0: the first forward waits for its binaries and measures),
rows "fused, no precompile"
(INCEPTION_FAST_PRECOMPILE=0: each shape's configs compiled on threads as it first launches),
cold and warm, and a cold row "fused, Triton's tuning" with INCEPTION_FAST_COMPILE_THREADS=1,
INCEPTION_FAST_TUNING_MS=25,100 and no precompile: the configs compiled one by one inside their
benchmarks and timed for Triton's default 25 + 100 ms, as triton.autotune does by itself.
``python -m benchmarks.cold_start`` counts and times, without a GPU, the compiles a cold first
forward makes.

Each row runs with its own tuning settings and none of the caller's.  The rows run one after
another, cold then warm per batch.  Under the GPU suite's step deadline
(INCEPTION_FAST_BENCH_DEADLINE) each process gets a share of the time left (a cold one three times
a warm one's) and is killed past it, process group and all; its row keeps the first result if the
process had it (the child prints it as it comes) and says what it did not reach.  Rows that would
start past the deadline are reported as not run.  Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

from inception_fast.choices import ENV_SKIP
from inception_fast.cli import (
    HelpFormatter,
    UsageError,
    check_image_size,
    check_seconds,
    check_writable,
    positive_int,
    resolve_device,
    run_command,
    write_json,
)

CHILD = r"""
import json, os, sys, time
t_start = float(sys.argv[1])
kind, device, dtype = sys.argv[2], sys.argv[3], sys.argv[5]
batch, size = int(sys.argv[4]), int(sys.argv[6])
import torch, torchvision
t_import = time.time()
dt = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
tv = torchvision.models.googlenet(weights=None, init_weights=False, aux_logits=False).eval()
if kind == "fused":
    from inception_fast import FusedGoogLeNet
    model = FusedGoogLeNet.from_torchvision(tv)
else:
    import torch._inductor.config as cfg
    cfg.freezing = True
    model = torch.compile(tv)
model = model.to(device, dt).eval()
x = torch.rand(batch, 3, size, size, device=device, dtype=dt).contiguous(memory_format=torch.channels_last)
def sync():
    if device.startswith("cuda"):
        torch.cuda.synchronize()
t_built = time.time()
with torch.no_grad():
    y = model(x); sync(); t_first = time.time()
    print("FIRST " + json.dumps({"import_s": t_import - t_start, "build_s": t_built - t_import,
          "first_forward_s": t_first - t_built, "to_first_result_s": t_first - t_start}), flush=True)
    pending = sys.modules.get("inception_fast.precompiler")
    while pending is not None and pending.compiles_pending(model, x):
        time.sleep(0.02)
    y = model(x); sync(); t_tuned = time.time()
    y = model(x); sync(); t_steady = time.time()
tuning = ("INCEPTION_FAST_COMPILE_THREADS", "INCEPTION_FAST_TUNING_MS", "INCEPTION_FAST_PRECOMPILE",
          "INCEPTION_FAST_DEFER_TUNING")
extra = {"tuning_env": {k: v for k, v in os.environ.items() if k in tuning}}
cp = sys.modules.get("inception_fast.backends.triton.compile_pool")
if cp is not None:
    extra["precompile"] = cp.stats()
tc = sys.modules.get("inception_fast.backends.triton._common")
if tc is not None:
    log = tc.tuning_log()
    benchmarked = sum(e["us"] is not None and not e["from_cache"] for e in log)
    extra.update({"tuned_shapes": len(log), "benchmarked_shapes": benchmarked,
                  "compile_threads": tc.compile_threads(), "tuning_ms": list(tc.tuning_bench_ms())})
print("RESULT " + json.dumps({"import_s": t_import - t_start, "build_s": t_built - t_import,
      "first_forward_s": t_first - t_built, "to_first_result_s": t_first - t_start,
      "to_tuned_s": t_tuned - t_start, "steady_forward_s": t_steady - t_tuned, **extra}))
"""

# The autotuners as triton.autotune runs them by itself: each config compiled inside its own
# benchmark, one after another, and timed for Triton's default 25 ms warm-up + 100 ms.
TRITON_TUNING = {
    "INCEPTION_FAST_COMPILE_THREADS": "1",
    "INCEPTION_FAST_TUNING_MS": "25,100",
    "INCEPTION_FAST_PRECOMPILE": "0",
}
# The autotuners without inception_fast.precompile: each shape's configs compiled on threads as
# it first launches.
NO_PRECOMPILE = {"INCEPTION_FAST_PRECOMPILE": "0"}
# The precompile without deferred tuning: the first forward waits for its binaries and measures.
NOT_DEFERRED = {"INCEPTION_FAST_DEFER_TUNING": "0"}
# Every setting a row may set: each row runs with its own and none of the caller's.
KNOBS = {*TRITON_TUNING, *NOT_DEFERRED}


def run_child(kind: str, device: str, batch: int, dtype: str, size: int, env: dict, timeout: float) -> dict:
    """One fresh process's row.  Past ``timeout`` its whole process group (the precompile's workers
    too, so none keeps compiling into the next row's cache) is killed, and the row keeps what the
    process printed by then: its first result (the child prints it as it comes), with "error"
    saying what did not finish."""
    t0 = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, repr(t0), kind, device, str(batch), dtype, str(size)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        timed_out = True
    except BaseException as exc:
        # Stopped from outside (Stopped, KeyboardInterrupt): the child has its own session, so the
        # caller's signal did not reach it or its workers.  A Stopped keeps what it printed.
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, _ = proc.communicate()
        if isinstance(exc, Stopped):
            exc.row = _printed(stdout).get("FIRST ", {})
        raise
    found = _printed(stdout)
    if "RESULT " in found:
        return found["RESULT "]
    row = dict(found.get("FIRST ", {}))
    reached = "tuned" if row else "first result"
    lines = (stderr or stdout).strip().splitlines()
    # A candidate's fault: its line (a dead CUDA context's teardown may print more after it, or hang),
    # also whole on stderr for the suite, and the candidate it names for the rows after this one.
    fault = [line for line in lines if "CandidateFault: " in line][-1:]
    if fault:
        print(f"[first_forward] {kind} batch {batch}: {fault[0]}", file=sys.stderr, flush=True)
        named = re.search(r"INCEPTION_FAST_SKIP_CANDIDATES=([a-z0-9_:]+) ;", fault[0])
        if named:
            row["fault"] = named.group(1)
    if timed_out:
        row["error"] = f"{reached} not reached in {timeout:.0f} s"
    else:
        tail = fault or lines[-1:] or ["no output"]
        row["error"] = f"rc={proc.returncode}: {tail[0][:200]}"
    return row


# A row's share of the time left before a deadline: a cold process compiles and tunes, a warm one
# loads; cold rows get three warm rows' share.
ROW_WEIGHT = {"cold": 3, "warm": 1}


def _printed(stdout: str) -> dict:
    """{"FIRST ": ..., "RESULT ": ...}: the results a child printed."""
    found = {}
    for line in (stdout or "").splitlines():
        for tag in ("FIRST ", "RESULT "):
            if line.startswith(tag):
                found[tag] = json.loads(line[len(tag) :])
    return found


class Stopped(Exception):
    """SIGTERM reached this process (the GPU suite's step timeout): its rows so far are still
    written; ``row`` holds the first result of the process it stopped, if that printed one."""

    row: dict = {}


def _stop(signum, _frame):
    raise Stopped(f"stopped by signal {signum}")


def row_timeout(limit: float, deadline: float, states_left: list) -> float:
    """Seconds for the next row (states_left[0]): ``limit``, or with a deadline (Unix time, 0:
    none) its weighted share of the time left, so that later rows still run."""
    if not deadline:
        return limit
    weights = [ROW_WEIGHT[s] for s in states_left]
    return max(1.0, min(limit, (deadline - time.time()) * weights[0] / sum(weights)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda where there is one, else cpu)")
    p.add_argument("--batches", default="1,256", help="comma-separated batch sizes, rows for each")
    p.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"), help="the model's and input's dtype")
    p.add_argument("--size", type=positive_int, default=224, help="the input images' side")
    p.add_argument("--json", default=None, help="also write the rows here")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per process")
    p.add_argument(
        "--baseline",
        action="store_true",
        help="also FusedGoogLeNet rows per batch: a cold one with the tuning not deferred, ones without the "
        "precompile (cold and warm), and a cold one with Triton's own tuning (one compile at a time, 25 + 100 ms)",
    )
    args = p.parse_args(argv)
    try:
        batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        p.error(f"--batches must be comma-separated integers, got {args.batches!r}")
    if min(batches) < 1:
        p.error("--batches must be positive")
    # Checked before any row's process starts, not once per row inside it.
    try:
        args.device = str(resolve_device(args.device, "this benchmark"))
        check_image_size(args.size, "torchvision", "--size")
        check_seconds(args.timeout, "--timeout", positive=True)
        if args.json is not None:
            check_writable(args.json)
    except UsageError as exc:
        p.error(str(exc))
    # The GPU suite's step deadline (benchmarks/gpu_suite.sh): later rows are reported as not run.
    from benchmarks.helpers.settings import deadline as suite_deadline

    try:
        deadline = suite_deadline()
    except ValueError as exc:
        p.error(str(exc))
    # (label, model, extra environment, cache states)
    kinds = [("fused", "fused", {}, ("cold", "warm"))]
    if args.baseline:
        kinds.append(("fused, tuning not deferred", "fused", NOT_DEFERRED, ("cold",)))
        kinds.append(("fused, no precompile", "fused", NO_PRECOMPILE, ("cold", "warm")))
        kinds.append(("fused, Triton's tuning", "fused", TRITON_TUNING, ("cold",)))
    if not args.no_compile:
        kinds.append(("torch.compile", "torch.compile", {}, ("cold", "warm")))
    rows = []
    # `timeout` signals its own process group; the children run in sessions of their own.
    previous = signal.signal(signal.SIGTERM, _stop)
    # Every row's cache state, in run order (for the rows' shares of the deadline).
    plan = [state for _label, _kind, _env, states in kinds for _batch in batches for state in states]
    stopped = None
    try:
        run_rows(args, kinds, batches, deadline, plan, rows)
    except Stopped as exc:
        stopped = str(exc)
        if rows and exc.row:
            rows[-1].update(exc.row)
        for row in rows:
            if "error" in row or "to_tuned_s" in row:  # (done, or said why not)
                continue
            row["error"] = f"{'tuned' if 'to_first_result_s' in row else 'first result'} not reached: {stopped}"
    finally:
        signal.signal(signal.SIGTERM, previous)
    print_rows(rows)
    if args.json:
        out = {"size": args.size, "rows": rows, **({"stopped": stopped} if stopped else {})}
        if not stopped:
            import torch

            from benchmarks.helpers.environment import environment

            try:
                out["environment"] = environment(torch.device(args.device))
            except Exception as exc:  # (a device query that failed: the rows are written all the same)
                out["environment_error"] = f"{type(exc).__name__}: {exc}"[:200]
        else:  # (no device queries in a stopped run; what the report's header needs of it)
            out["environment"] = {"skipped_candidates": os.environ.get(ENV_SKIP, "").strip() or None}
        write_json(args.json, out)
    return 1 if stopped or any("error" in r for r in rows) else 0


def run_rows(args, kinds, batches, deadline, plan, rows) -> None:
    """Runs the rows one after another, appending each to ``rows`` before it starts."""
    with tempfile.TemporaryDirectory(prefix="first_forward_") as tmp:
        for index, (label, kind, extra_env, states) in enumerate(kinds):
            for batch in batches:
                caches = os.path.join(tmp, f"{index}-{batch}")
                env = {
                    **{k: v for k, v in os.environ.items() if k not in KNOBS},
                    **extra_env,
                    "TRITON_CACHE_DIR": os.path.join(caches, "triton"),
                    "TORCHINDUCTOR_CACHE_DIR": os.path.join(caches, "inductor"),
                }
                env.pop("INCEPTION_FAST_CHOICE_CACHE", None)  # the store lives in Triton's cache
                for state in states:
                    row = {"kind": label, "batch": batch, "cache": state, "device": args.device, "dtype": args.dtype}
                    if state == "warm" and rows and rows[-1]["cache"] == "cold" and "to_tuned_s" not in rows[-1]:
                        # The cold run ended before its tuned result (cut, failed or not run): what
                        # it left in the caches is partial, and this row says so.
                        row["cache"] = "warm, after an unfinished cold run"
                    rows.append(row)
                    if deadline and time.time() > deadline:
                        row["error"] = "not run: past the deadline"
                        continue
                    print(f"[first_forward] {label} batch {batch} {state} ...", file=sys.stderr, flush=True)
                    limit = row_timeout(args.timeout, deadline, plan[len(rows) - 1 :])
                    row.update(run_child(kind, args.device, batch, args.dtype, args.size, env, limit))
                    if "fault" in row:  # the rows after this one run without the candidate that faulted
                        skips = {*filter(None, os.environ.get(ENV_SKIP, "").split(",")), row["fault"]}
                        os.environ[ENV_SKIP] = env[ENV_SKIP] = ",".join(sorted(skips))


def print_rows(rows) -> None:
    print(
        "| model | batch | caches | to first result s | of which first forward s | to tuned s "
        "| steady forward ms | shapes tuned (benchmarked) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "to_first_result_s" in r and "to_tuned_s" not in r:  # cut after its first result
            print(
                f"| {r['kind']} | {r['batch']} | {r['cache']} | {r['to_first_result_s']:.1f} | "
                f"{r['first_forward_s']:.1f} | {r['error']} | | |"
            )
        elif "error" in r:
            print(f"| {r['kind']} | {r['batch']} | {r['cache']} | {r['error']} | | | | |")
        else:
            tuned = f"{r['tuned_shapes']} ({r['benchmarked_shapes']})" if "tuned_shapes" in r else ""
            print(
                f"| {r['kind']} | {r['batch']} | {r['cache']} | {r['to_first_result_s']:.1f} | "
                f"{r['first_forward_s']:.1f} | {r['to_tuned_s']:.1f} | {r['steady_forward_s'] * 1e3:.1f} | {tuned} |"
            )


if __name__ == "__main__":
    sys.exit(run_command(main))
