#!/usr/bin/env bash
# The GPU suite: one prepared script for a short window on a bare GPU machine with no network.
#
#   benchmarks/gpu_suite.sh OUTDIR [--quick]
#
# Steps, in order, each time-boxed (benchmarks/suite_steps.sh's run_step) and each run even when an
# earlier one failed; a step (not the tests) that dies of a measured candidate's GPU fault
# (inception_fast.choices.CandidateFault) runs once more without that candidate, as do the later
# steps and the next call on this tree (suite_steps.sh says how):
#   env        versions and device (into suite.log)
#   ceilings   the roofline's ceilings measured on this device, a few seconds: an 8192³ bf16 GEMM
#              and a 1 GiB device copy, median of 20 each (benchmarks/helpers/roofline.py); every
#              roofline fraction of the run uses them (without CUDA: skipped)     -> ceilings.json
#   install    python3 -m pip install --no-build-isolation --no-deps -e .  (builds the extension,
#              for this device's architecture unless TORCH_CUDA_ARCH_LIST is set)
#              skipped with SKIP_INSTALL=1 (when already installed), and in SUITE_PART=check where
#              the last install from this tree is still there (build/suite_install.sha256)
#   tests      python3 -m pytest -m gpu tests                               -> tests.log
#              in SUITE_TEST_WORKERS (default 6; 0: one) processes where pytest-xdist is there;
#              skipped with SKIP_TESTS=1
#   compile    the torch.compile anchors, first of the benchmarks (bench_throughput.py --compile
#              -k compile): default mode with freezing at batch 256 (profiled), and on CUDA
#              reduce-overhead with freezing at batch 1, where the batch-1 targets are held
#                                                                           -> compile.json
#              skipped with SKIP_COMPILE=1
#   throughput benchmarks/bench_throughput.py at batch 256, bf16 (SUITE_DTYPES), channels_last:
#              torchvision, FusedGoogLeNet [triton] [cuda] [auto] (SUITE_MODELS), with each
#              model's kernel profile (where the time goes, how busy the GPU is) -> bench.json
#   graph      the same models at batch 1 and 256 as CUDA-graph replays        -> graph.json
#              (the batch-1 target is under a CUDA graph; at 256: the forward without host time)
#   blocks     benchmarks/bench_blocks.py as CUDA-graph replays (kernel time, no host time): the
#              stem, each stage outside the blocks (conv1+pool1, conv2, conv3, maxpool2-4, head),
#              each block, launch 1 alone, torchvision's and FusedGoogLeNet's, and last
#              Triton's launch 1 with one role alone (3a, 4a, 5b: its 1x1s, its pool branch)
#                                                                           -> blocks.json
#   blocks1    the same at batch 1 (where batch-1 time goes)                -> blocks1.json
#   first      benchmarks/first_forward.py: a fresh process to FusedGoogLeNet's first forward's
#              result (cold: ATen's computations while the workers compile) and to its tuned
#              result, cold and warm caches, batch 256 then 1 (torch.compile's compile time is the
#              compile step's; SUITE_FIRST_COMPILE=1 adds its cold and warm processes too;
#              SUITE_FIRST_BASELINE=1 its --baseline rows per batch: tuning not deferred, no
#              precompile, and Triton's own tuning, one compile at a time, 25 + 100 ms per config)
#                                                                           -> first.json
#              skipped with SKIP_FIRST=1
#   cold_start opt-in (SUITE_COLD_START=1; not in SUITE_PART=bench): benchmarks/cold_start.py at
#              batch 256, the Triton binaries a cold first forward compiles, timed one by one and
#              on this machine's cores (~1 min)                             -> cold_start.json
#   train_bwd, train_bn  opt-in (SUITE_TRAIN=1; not in SUITE_PART=check):
#              benchmarks/bench_block_backward.py at batch 256 bf16, every block: the block
#              backward, and the forward with train-mode BatchNorm, plain PyTorch / the ATen op /
#              the Triton kernels                                -> train_bwd.json, train_bn.json
#              Each opt-in step keeps its minimum (30 s) from every step before it.
#   report     <name>.md, <name>.png, <name>.json  (name: YYYY-MM-DD_<gpu>_torch.._triton.._cuda..;
#              <name>_check.* in SUITE_PART=check, which reports the first forward and cold start)
# and prints a short table LAST.  Everything else goes to suite.log, which also gets each step's
# elapsed seconds and the suite's time so far, and the summary ends with the total against the
# budget.  At the end the step files (ceilings.json bench.json graph.json blocks.json blocks1.json
# compile.json first.json cold_start.json train_*.json) are packed into steps.tar.gz, so OUTDIR holds at most 6 files:
# suite.log tests.log steps.tar.gz <name>.{md,png,json}, within the device tool's 8 files back.
# <name>.json holds every step's rows, the ceilings, and the first-forward, cold-start and training
# rows (report.py reads it back as an input).
#
# --quick: tiny sizes (also runs on a CPU-only machine, then the CPU grid).
# SUITE_DTYPES (default bf16; "bf16,fp32" for the whole grid): the throughput step's dtypes.
# SUITE_MODELS: the throughput and graph steps' models, in order (default
#   torchvision,fused_triton,fused_cuda,fused_auto, the issues' rows; "all" for every model).
#   A SUITE_MODELS or SUITE_DTYPES given is checked first: an unknown name exits 2 at once.
# SUITE_BUDGET_S (default 470 s: install, tests, benchmarks, compile anchors and report in under
# 8 minutes): the whole run's time box; each step gets at most its cap and never eats the minimum
# kept for the steps after it (the later steps are the ones cut when a machine is slow; a step
# stopped at its deadline still writes its JSON; blocks1 leaves the first-forward step 60 s).
# Give the caller's own timeout ~40 s more.  The caps of the steps from tests to first add up to
# 760 s (1060 s with env, ceilings and install), so on a fresh machine with a cold Triton cache
# one 470 s run is likely to cut blocks, blocks1 or first.
# SUITE_PART (default all): "check" runs env, install, the GPU tests (the newest kernels' files
# first), the first-forward step (and cold_start) and their report; "bench" runs env, ceilings,
# install, the benchmarks, the compile anchors (and the training steps) and the report.  On a fresh machine one call cannot hold everything (H200,
# 2026-12-04, cold Triton cache: tests ~170 s in 6 workers, compile anchors 59 s, the throughput
# step ~30 s per FusedGoogLeNet model, the graph step ~90 s for three models, first forward over
# 64 s).  Two calls back to back on one warm machine do (the second finds the extension built, so
# its install step builds nothing, and Triton's cache warm; the device tool lets an idle machine go
# after ~30 s, so send the second at once):
#   SUITE_PART=bench SUITE_BUDGET_S=440 benchmarks/gpu_suite.sh OUT_BENCH     (timeout 480)
#   SUITE_PART=check SUITE_BUDGET_S=260 benchmarks/gpu_suite.sh OUT_CHECK     (timeout 300)
# which with a 1-2 minute start fills a 15-minute window: no room for a rerun, and the first
# forward's cold rows may still be cut.
# Step times seen on the H100 (2026-11-27/28, fresh machine): env 13-15 s, install 31-34 s, tests
# 54-110 s (the cap stopped them once), graph 42 s, blocks 46-53 s, blocks1 22 s, one compile
# anchor 43-48 s; the throughput step took 148 s over the whole grid (121 s over its bf16 half),
# cut to the issues' rows here; the stage rows add 14 short cases to blocks and to blocks1 (~10 s together).  On the H200
# (2026-12-04): env 14 s, ceilings 5 s, install 26 s (TORCH_CUDA_ARCH_LIST=9.0).
# SKIP_INSTALL=1 on a fresh machine runs from the source tree without the compiled extension
# (torch and triton backends only).  Benchmarks stop starting new cases at
# their step's deadline (INCEPTION_FAST_BENCH_DEADLINE), so their JSON is still written.
set -u -o pipefail

if [[ $# -lt 1 || "$1" == -* ]]; then
    echo "usage: $0 OUTDIR [--quick]" >&2
    exit 2
fi
mkdir -p "$1" || exit 2
OUT=$(cd "$1" && pwd)
shift
QUICK=0
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        *) echo "unknown argument: $arg" >&2; exit 2 ;;
    esac
done
cd "$(dirname "$0")/.." || exit 2
REPO=$(pwd)

PY=${PYTHON:-python3}
LOG="$OUT/suite.log"
: > "$LOG"
export PYTHONUNBUFFERED=1
export PYTHONDONTWRITEBYTECODE=1
# Every benchmark measures its choices afresh, so the report holds their times (the first step
# points the choice store at its own cold and warm caches).
export INCEPTION_FAST_CHOICE_CACHE=off
# The models' first forward measures at once instead of running ATen's computations while the
# precompile's workers compile: the benchmarks time tuned models (the first step sets its own).
export INCEPTION_FAST_DEFER_TUNING=0
# cpp_extension looks for CUDA in /usr/local without this and then fails to link cudart.
if [[ -z "${CUDA_HOME:-}" && -d /usr/local/cuda ]]; then export CUDA_HOME=/usr/local/cuda; fi
# A failed extension build fails the install step instead of warning (the benchmarks still run
# from the source tree, with the cuda backend's skip reason in the log).  The install step builds
# for this device's architecture (TORCH_CUDA_ARCH_LIST, when not given: e.g. 9.0+PTX on an
# H100/H200, about half the build of setup.py's default list).
# SKIP_INSTALL=1 builds nothing, so the extension's tests then skip instead of failing.
if [[ "${SKIP_INSTALL:-0}" == 1 ]]; then
    export INCEPTION_FAST_BUILD_EXT=${INCEPTION_FAST_BUILD_EXT:-0}
else
    export INCEPTION_FAST_BUILD_EXT=${INCEPTION_FAST_BUILD_EXT:-1}
fi
QUICK_FLAG=()
if [[ $QUICK == 1 ]]; then QUICK_FLAG=(--quick); export INCEPTION_FAST_BENCH_QUICK=1; fi

# SUITE_PART: all (default), check (tests and first forward) or bench (the benchmarks and report).
PART=${SUITE_PART:-all}
case "$PART" in
    all | check | bench) ;;
    *) echo "SUITE_PART must be all, check or bench, got '$PART'" >&2; exit 2 ;;
esac
# A SUITE_MODELS or SUITE_DTYPES given is checked before anything runs (a typo would otherwise
# fail the throughput step minutes into the window; the defaults need no check, nor its torch import).
# (Only where they are used: not in --quick or SUITE_PART=check.  A check that cannot run at all,
# say an import failing, only warns: the steps below report that failure in their logs.)
if [[ (-n "${SUITE_MODELS:-}" || -n "${SUITE_DTYPES:-}") && $QUICK == 0 && "${SUITE_PART:-all}" != check ]]; then
    "$PY" - "${SUITE_MODELS:-all}" "${SUITE_DTYPES:-bf16}" <<'CHECK'
import sys
from benchmarks.helpers.settings import check_dtypes, check_models
names = lambda value: [n.strip() for n in value.split(",") if n.strip()]
for variable, check, value in (("SUITE_MODELS", check_models, sys.argv[1]), ("SUITE_DTYPES", check_dtypes, sys.argv[2])):
    try:
        if (variable, value) != ("SUITE_MODELS", "all"):
            check(names(value))
    except ValueError as exc:
        print(f"{variable} (passed on as {exc})", file=sys.stderr)
        sys.exit(3)
CHECK
    rc=$?
    (( rc == 3 )) && exit 2
    (( rc != 0 )) && echo "warning: SUITE_MODELS / SUITE_DTYPES not checked (rc=$rc)" >&2
fi

# part_skips STEP: true (and the summary says so) where SUITE_PART leaves STEP out.
part_skips() {
    local step=$1 part=
    case "$step" in
        tests | first | cold_start) part=check ;;
        ceilings | throughput | graph | blocks | blocks1 | compile | train) part=bench ;;
    esac
    if [[ $PART != all && -n $part && $part != "$PART" ]]; then
        SUMMARY+=("$(printf '%-10s skipped (SUITE_PART=%s)' "$step" "$PART")")
        return 0
    fi
    return 1
}

START=$(date +%s)
BUDGET=${SUITE_BUDGET_S:-470}
# The opt-in steps this call runs keep their minimum from every step before them (otherwise the
# steps before, capped to the budget, would leave them nothing): 30 s for cold_start, 30 s for each
# training step.
OPTIN_RESERVE=0
[[ "${SUITE_COLD_START:-0}" == 1 && $PART != bench ]] && OPTIN_RESERVE=$((OPTIN_RESERVE + 30))
[[ "${SUITE_TRAIN:-0}" == 1 && $PART != check ]] && OPTIN_RESERVE=$((OPTIN_RESERVE + 60))
# What the blocks and blocks1 steps leave the first-forward step (its minimum) when both run.
FIRST_RESERVE=$((60 + OPTIN_RESERVE))
[[ $PART == bench || "${SKIP_FIRST:-0}" == 1 ]] && FIRST_RESERVE=$((10 + OPTIN_RESERVE))
DEADLINE=$((START + BUDGET))
declare -a SUMMARY=()
FAILED=0

source "$REPO/benchmarks/suite_steps.sh"
# (The kept list of candidates that faulted: see suite_steps.sh.)
export INCEPTION_FAST_SKIP_CANDIDATES=${INCEPTION_FAST_SKIP_CANDIDATES:-}
CALLER_SKIPS=$INCEPTION_FAST_SKIP_CANDIDATES
SKIP_FILE="$REPO/build/suite_skip_candidates"

log "inception_fast GPU suite: out=$OUT quick=$QUICK budget=${BUDGET}s repo=$REPO" \
    "TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-unset (the device arch, else the setup.py default)} INCEPTION_FAST_BUILD_EXT=$INCEPTION_FAST_BUILD_EXT"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv >> "$LOG" 2>&1
fi

# --- env: versions, device, and the results base name -----------------------------------------
run_step env 60 0 "$LOG" "$PY" -m benchmarks.helpers.environment env "${QUICK_FLAG[@]}"
HAS_CUDA=0
"$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>> "$LOG" && HAS_CUDA=1
NAME=$("$PY" -m benchmarks.helpers.environment name "${QUICK_FLAG[@]}" 2>>"$LOG" | tail -n 1)
NAME=$(printf '%s' "$NAME" | tr -c 'A-Za-z0-9._-' '-')
[[ -z "$NAME" || "$NAME" == "-" ]] && NAME=results
log "results base name: $NAME"

# The step files, packed into steps.tar.gz at the end (none left from an earlier run in OUTDIR).
STEPS="$OUT/steps"
rm -rf "$STEPS" "$OUT/steps.tar.gz"
mkdir -p "$STEPS"

# --- ceilings: the roofline's ceilings measured on this device, first, on an idle GPU ----------
if part_skips ceilings; then
    :
elif [[ $HAS_CUDA == 1 ]]; then
    run_step ceilings 40 0 "$LOG" "$PY" -m benchmarks.helpers.roofline --json "$STEPS/ceilings.json"
else
    SUMMARY+=("$(printf '%-10s skipped (no CUDA: no roofline)' ceilings)")
fi
# Every benchmark's roofline fractions use the measurement (without it: the known-device table).
[[ -s "$STEPS/ceilings.json" ]] && export INCEPTION_FAST_BENCH_CEILINGS="$STEPS/ceilings.json"

# --- install (builds the compiled extension; no network) -------------------------------------
# An install records a digest of what it compiled from (setup.py, csrc/, the build's settings and
# torch's version) in build/ (ignored by git).  SUITE_PART=check right after a bench call on the
# same machine finds it there, with the extension loaded (with its CUDA kernels where there is a
# GPU), and builds nothing again.
STAMP="$REPO/build/suite_install.sha256"
sources_digest() {
    (
        cd "$REPO" || exit 1
        find setup.py csrc -type f -print0 | sort -z | xargs -0 sha256sum
        echo "TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-} INCEPTION_FAST_CUDA=${INCEPTION_FAST_CUDA:-}" \
            "INCEPTION_FAST_BUILD_EXT=$INCEPTION_FAST_BUILD_EXT CUDA_HOME=${CUDA_HOME:-} CXX=${CXX:-}"
        "$PY" -c "import torch; print(torch.__version__)" 2>&1
    ) | sha256sum | cut -d' ' -f1
}
installed_here() {
    [[ -s "$STAMP" && "$(cat "$STAMP")" == "$(sources_digest)" ]] || return 1
    "$PY" -c "
import sys, torch, inception_fast
from inception_fast.backends import extension
if extension.extension_error() is not None or (torch.cuda.is_available() and not extension.has_cuda_kernels()):
    sys.exit(1)
print('inception_fast at', inception_fast.__file__, 'with its extension')" >> "$LOG" 2>&1
}
# The extension is built for this device's architecture alone (about half setup.py's default list),
# with PTX for a later one.
if [[ $HAS_CUDA == 1 && -z "${TORCH_CUDA_ARCH_LIST:-}" && "${SKIP_INSTALL:-0}" != 1 ]]; then
    ARCH=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())" 2>> "$LOG")
    [[ -n "$ARCH" ]] && export TORCH_CUDA_ARCH_LIST="$ARCH+PTX" && log "TORCH_CUDA_ARCH_LIST=$ARCH+PTX (this device)"
fi
if [[ "${SKIP_INSTALL:-0}" == 1 ]]; then
    SUMMARY+=("$(printf '%-10s skipped (SKIP_INSTALL=1)' install)")
    log "step install: skipped (SKIP_INSTALL=1)"
elif [[ $PART == check ]] && installed_here; then
    SUMMARY+=("$(printf '%-10s skipped (the build of this tree is installed)' install)")
    log "step install: skipped, the build of this tree (build/suite_install.sha256) is installed"
else
    # Kept for the steps after it: the benchmarks (all, bench), or the tests and first (check).
    INSTALL_RESERVE=$((300 + OPTIN_RESERVE))
    [[ $PART == check ]] && INSTALL_RESERVE=$((150 + OPTIN_RESERVE))
    rm -f "$STAMP"
    run_step install 200 "$INSTALL_RESERVE" "$LOG" "$PY" -m pip install --no-build-isolation --no-deps -v -e .
    [[ "${SUMMARY[-1]}" == "install    ok"* ]] && mkdir -p "$(dirname "$STAMP")" && sources_digest > "$STAMP"
fi
"$PY" -c "import inception_fast; print('inception_fast', inception_fast.__file__, 'backends on cuda:', \
inception_fast.available_backends('cuda') if __import__('torch').cuda.is_available() else 'no cuda', \
'on cpu:', inception_fast.available_backends('cpu'))" >> "$LOG" 2>&1

# The candidates an earlier call on this tree and machine found faulting (suite_steps.sh).
load_skips

# --- GPU tests -------------------------------------------------------------------------------
: > "$OUT/tests.log"
NEW_TESTS="tests/test_choice_store.py tests/test_precompile.py tests/test_triton_conv_rows.py tests/test_triton_conv_relu.py tests/test_triton_chain.py tests/test_chain_choice.py tests/test_hopper_launch1.py tests/test_triton_fold.py tests/test_hopper.py tests/test_cold_start.py"
TESTS_RESERVE=$((260 + OPTIN_RESERVE))
[[ $PART == check ]] && TESTS_RESERVE=$((110 + OPTIN_RESERVE))  # only first (and the opt-in steps) after it
# The cap allows for a fresh machine's cold Triton cache (the tests compile every config).
if part_skips tests; then
    :
elif [[ "${SKIP_TESTS:-0}" == 1 ]]; then
    SUMMARY+=("$(printf '%-10s skipped (SKIP_TESTS=1)' tests)")
else
    # The newest kernels' files first, then every other test file named one by one (given the
    # directory too, pytest would collect all its files in name order, even those named first), so
    # a cap that stops the step stops it in the files that have passed on a GPU before.  Where
    # pytest-xdist is installed (the GPU image has it) the tests run in SUITE_TEST_WORKERS processes
    # (default 6) sharing the GPU: a cold Triton cache's compiles are most of their time.  The
    # whole-network tests that compile and measure every kernel (xdist_group marks, tests/
    # model_cases.py) run one after another on one worker per group (--dist loadgroup), not side by
    # side.  Under xdist each test's outcome is logged as it comes (-v; -q would cancel it), so a
    # step killed at its cap still says which tests failed.  Tests not started 45 s before the cap
    # skip (INCEPTION_FAST_TEST_DEADLINE, tests/conftest.py), so pytest normally ends by itself with
    # its summary; where pytest-timeout is there, a test that hangs fails alone after 120 s (300 s
    # for the whole-network ones; a cold cache's compiles shared by 6 workers included), with its
    # stack.
    REST_TESTS=$(ls tests/test_*.py | grep -vxF -f <(printf '%s\n' $NEW_TESTS))
    TEST_ARGS=(-q)
    if [[ $HAS_CUDA == 1 && "${SUITE_TEST_WORKERS:-6}" != 0 ]] && "$PY" -c "import xdist" 2>/dev/null; then
        TEST_ARGS=(-n "${SUITE_TEST_WORKERS:-6}" --dist loadgroup -v)
    fi
    "$PY" -c "import pytest_timeout" 2>/dev/null && TEST_ARGS+=(--timeout 120)
    STEP_MARGIN=45 run_step tests 180 "$TESTS_RESERVE" "$OUT/tests.log" \
        env INCEPTION_FAST_SKIP_CANDIDATES="$CALLER_SKIPS" "$PY" -m pytest -m gpu $NEW_TESTS $REST_TESTS \
        -ra -p no:cacheprovider --durations=10 "${TEST_ARGS[@]}"
    tail -n 3 "$OUT/tests.log" | sed 's/^/[tests] /' | tee -a "$LOG"
fi

# --- benchmarks ------------------------------------------------------------------------------
BENCH_ARGS=(-q -ra -p no:cacheprovider --benchmark-columns=median,rounds --benchmark-sort=name "${QUICK_FLAG[@]}")
# bf16 is the headline dtype; fp32 costs as long again (SUITE_DTYPES=bf16,fp32 adds it; --quick
# keeps the quick grid's own dtype: fp32 on a CPU).
DTYPES_ENV=()
[[ $QUICK == 0 ]] && DTYPES_ENV=(INCEPTION_FAST_BENCH_DTYPES="${SUITE_DTYPES:-bf16}")
# The issues' rows (batch 256 bf16 channels_last; batch 1 and 256 as CUDA graphs) and nothing else,
# the rows they compare first: a step cut short by its deadline still has them.
GRID_ENV=()
SUITE_MODELS=${SUITE_MODELS:-torchvision,fused_triton,fused_cuda,fused_auto}
[[ $QUICK == 0 && $SUITE_MODELS != all ]] && GRID_ENV+=(INCEPTION_FAST_BENCH_MODELS="$SUITE_MODELS")
[[ $QUICK == 0 ]] && GRID_ENV+=(INCEPTION_FAST_BENCH_BATCHES=256 INCEPTION_FAST_BENCH_FORMATS=channels_last)
if ! part_skips throughput; then
    if [[ "${SKIP_COMPILE:-0}" == 1 ]]; then
        SUMMARY+=("$(printf '%-10s skipped (SKIP_COMPILE=1)' compile)")
    else
        # First among the benchmarks: the anchor every ratio divides by, and pure PyTorch, so a
        # failing kernel of ours cannot take it down.  On a CPU-only machine inductor compiles C++
        # (~1.5 min on 2 cores): give it room there.
        COMPILE_CAP=120
        [[ $HAS_CUDA == 0 ]] && COMPILE_CAP=240
        run_step compile "$COMPILE_CAP" $((200 + OPTIN_RESERVE)) "$LOG" env INCEPTION_FAST_BENCH_PROFILE=1 \
            "$PY" -m pytest benchmarks/bench_throughput.py "${BENCH_ARGS[@]}" \
            --compile -k compile --benchmark-json "$STEPS/compile.json"
    fi
    # The graph step reads the choices the throughput step measured (a store of this run's own,
    # outside OUTDIR) instead of measuring them again: the report has their times from the
    # throughput step, and the graph step measures only its batch-1 shapes.
    CHOICES_DIR=$(mktemp -d /tmp/inception_fast_choices.XXXXXX)
    # A FusedGoogLeNet case measures every choice on its first forward (~30 s each on a fresh
    # machine, H200 2026-12-04): no case starts in the last 40 s, so none is cut mid-way.
    STEP_MARGIN=40 run_step throughput 150 $((155 + OPTIN_RESERVE)) "$LOG" env INCEPTION_FAST_CHOICE_CACHE="$CHOICES_DIR" \
        INCEPTION_FAST_BENCH_PROFILE=1 "${DTYPES_ENV[@]}" "${GRID_ENV[@]}" \
        "$PY" -m pytest benchmarks/bench_throughput.py "${BENCH_ARGS[@]}" --benchmark-json "$STEPS/bench.json"
    if [[ $HAS_CUDA == 1 ]]; then
        run_step graph 90 $((105 + OPTIN_RESERVE)) "$LOG" env INCEPTION_FAST_CHOICE_CACHE="$CHOICES_DIR" INCEPTION_FAST_BENCH_CUDA_GRAPH=1 "${GRID_ENV[@]}" \
            INCEPTION_FAST_BENCH_BATCHES=1,256 INCEPTION_FAST_BENCH_DTYPES=bf16 INCEPTION_FAST_BENCH_FORMATS=channels_last \
            "$PY" -m pytest benchmarks/bench_throughput.py "${BENCH_ARGS[@]}" --benchmark-json "$STEPS/graph.json"
    else
        SUMMARY+=("$(printf '%-10s skipped (no CUDA: nothing to capture)' graph)")
    fi
    rm -rf "$CHOICES_DIR"
    # Graph replays: a block's eager time also holds its host time before the first kernel (Python
    # and launches), which would hide the kernels' own time.  A case that cannot be captured is timed
    # eagerly and says so.  (Ignored without CUDA.)
    # Kept after blocks: blocks1 (40 s) and the first forward's reserve (10 s in SUITE_PART=bench).
    run_step blocks 80 $((40 + FIRST_RESERVE)) "$LOG" env INCEPTION_FAST_BENCH_CUDA_GRAPH=1 \
        "$PY" -m pytest benchmarks/bench_blocks.py "${BENCH_ARGS[@]}" --benchmark-json "$STEPS/blocks.json"
    if [[ $HAS_CUDA == 1 ]]; then
        run_step blocks1 40 "$FIRST_RESERVE" "$LOG" env INCEPTION_FAST_BENCH_CUDA_GRAPH=1 INCEPTION_FAST_BENCH_BLOCK_BATCH=1 \
            "$PY" -m pytest benchmarks/bench_blocks.py "${BENCH_ARGS[@]}" --benchmark-json "$STEPS/blocks1.json"
    else
        SUMMARY+=("$(printf '%-10s skipped (no CUDA: nothing to capture)' blocks1)")
    fi
else
    for step in graph blocks blocks1 compile; do part_skips "$step"; done
fi

# --- first: from a fresh process to the first forward's result, cold and warm caches ----------
# (FusedGoogLeNet at batch 256, then 1: the issue's ≤ 10 s cold, ≤ 2 s warm; SUITE_FIRST_COMPILE=1
# adds torch.compile with freezing, ~1 min more; SUITE_FIRST_BASELINE=1 the --baseline rows, see
# above; rows past the step's deadline are reported as not run.)  SKIP_FIRST=1 skips it.
if part_skips first; then
    :
elif [[ "${SKIP_FIRST:-0}" == 1 ]]; then
    SUMMARY+=("$(printf '%-10s skipped (SKIP_FIRST=1)' first)")
else
    FIRST_ARGS=(--batches 256,1 --json "$STEPS/first.json")
    [[ "${SUITE_FIRST_COMPILE:-0}" == 1 ]] || FIRST_ARGS+=(--no-compile)
    [[ "${SUITE_FIRST_BASELINE:-0}" == 1 ]] && FIRST_ARGS+=(--baseline)
    [[ $QUICK == 1 ]] && FIRST_ARGS=(--batches 2 --size 64 --no-compile --json "$STEPS/first.json")
    [[ $HAS_CUDA == 1 ]] || FIRST_ARGS+=(--device cpu --dtype fp32)
    run_step first 100 $((5 + OPTIN_RESERVE)) "$LOG" "$PY" -m benchmarks.first_forward "${FIRST_ARGS[@]}"
fi

# --- cold_start (opt-in): what a cold first forward compiles, timed on this machine's CPUs -----
if [[ "${SUITE_COLD_START:-0}" == 1 ]] && ! part_skips cold_start; then
    COLD_ARGS=(--batches 256)
    [[ $QUICK == 1 ]] && COLD_ARGS=(--batches 2 --count-only)  # compiling takes minutes on a small CPU
    run_step cold_start 90 $((5 + OPTIN_RESERVE - 30)) "$LOG" "$PY" -m benchmarks.cold_start "${COLD_ARGS[@]}" --json "$STEPS/cold_start.json"
fi

# --- train (opt-in): the training kernels against ATen and plain PyTorch, per block ------------
# (benchmarks/bench_block_backward.py: the block backward, then the forward with train-mode
# BatchNorm; whether the Triton candidates check right and win where choices.BACKWARD and
# choices.BN_TRAIN would pick them; each capped at 90 s)
if [[ "${SUITE_TRAIN:-0}" == 1 ]] && ! part_skips train; then
    TRAIN_ARGS=(--dtype bf16 --batch 256 --size 224 --budget 1)
    [[ $QUICK == 1 ]] && TRAIN_ARGS=(--dtype fp32 --batch 2 --size 64 --budget 0 --block inception5a)
    [[ $HAS_CUDA == 1 ]] || TRAIN_ARGS+=(--device cpu)
    run_step train_bwd 90 35 "$LOG" "$PY" -m benchmarks.bench_block_backward --op backward "${TRAIN_ARGS[@]}" \
        --json "$STEPS/train_bwd.json"
    run_step train_bn 90 5 "$LOG" "$PY" -m benchmarks.bench_block_backward --op bn_train "${TRAIN_ARGS[@]}" \
        --json "$STEPS/train_bn.json"
fi

# --- report ----------------------------------------------------------------------------------
JSONS=()
# (A step run again after a candidate's fault: its first run's rows first, so the second run's win.)
for f in bench.json graph.json blocks.json blocks1.json compile.json; do
    for g in "${f%.json}.fault.json" "$f"; do [[ -s "$STEPS/$g" ]] && JSONS+=("$STEPS/$g"); done
done
SIDE=()
[[ -s "$STEPS/ceilings.json" ]] && SIDE+=(--ceilings "$STEPS/ceilings.json")
ROWS=${#JSONS[@]}  # inputs with rows of their own (the ceilings have none)
# side_json NAME: the step's JSON, else its run's before a candidate's fault (NAME.fault.json), else none.
side_json() {
    local f
    for f in "$STEPS/$1.json" "$STEPS/$1.fault.json"; do [[ -s $f ]] && echo "$f" && return 0; done
    return 1
}
SIDE_JSON=$(side_json first) && SIDE+=(--first "$SIDE_JSON") && ROWS=$((ROWS + 1))
SIDE_JSON=$(side_json cold_start) && SIDE+=(--cold-start "$SIDE_JSON") && ROWS=$((ROWS + 1))
for f in train_bwd train_bn; do
    SIDE_JSON=$(side_json "$f") && SIDE+=(--train "$SIDE_JSON") && ROWS=$((ROWS + 1))
done
# The check call's report (first forward, cold start) is named apart from the bench call's.
[[ $PART == check ]] && NAME="${NAME}_check"
SHORT=$(mktemp /tmp/inception_fast_short.XXXXXX)  # not in OUTDIR, which holds only the files listed above
if (( ROWS > 0 )); then
    "$PY" benchmarks/report.py "${JSONS[@]}" "${SIDE[@]}" --md "$OUT/$NAME.md" --chart "$OUT/$NAME.png" \
        --merged-json "$OUT/$NAME.json" --short > "$SHORT" 2>> "$LOG"
    rc=$?
    (( rc == 0 )) || FAILED=1
    SUMMARY+=("$(printf '%-10s rc=%s -> %s' report "$rc" "$(cd "$OUT" && ls -d "$NAME".* 2>/dev/null | tr '\n' ' ')")")
elif [[ $PART == check ]]; then  # the tests alone (SKIP_FIRST=1): tests.log holds the results
    echo "no report: no first-forward or cold-start rows in SUITE_PART=check" > "$SHORT"
    SUMMARY+=("$(printf '%-10s skipped (no first-forward or cold-start rows)' report)")
else
    echo "no benchmark or side JSON was produced" > "$SHORT"
    SUMMARY+=("$(printf '%-10s no JSON to report' report)")
    FAILED=1
fi

# The step files in one archive: OUTDIR stays within the device tool's 8 files back.
if [[ -n "$(ls -A "$STEPS")" ]]; then
    tar -czf "$OUT/steps.tar.gz" -C "$OUT" steps && rm -rf "$STEPS"
else
    rmdir "$STEPS"
fi

TOTAL=$(( $(date +%s) - START ))
{
    echo
    echo "== inception_fast GPU suite: $NAME, ${TOTAL}s =="
    for line in "${SUMMARY[@]}"; do echo "  $line"; done
    echo "  total      ${TOTAL}s of the ${BUDGET}s budget (SUITE_BUDGET_S)"
    echo "  outputs in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
    echo
    cat "$SHORT"
} | tee -a "$LOG"
rm -f "$SHORT"
exit $FAILED
