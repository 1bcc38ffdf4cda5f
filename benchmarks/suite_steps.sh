# The GPU suite's step runner and its record of faulting candidates, sourced by gpu_suite.sh (and
# by tests/test_benchmarks_quick.py, which runs run_step on stand-in commands).  It reads and sets
# the suite's globals: LOG (the suite log), START, BUDGET and DEADLINE (Unix seconds), SUMMARY (an
# array of lines) and FAILED; REPO, PY and SKIP_FILE for the kept list; STEP_MARGIN and RETRYING per
# call; INCEPTION_FAST_SKIP_CANDIDATES (exported) and FOUND_SKIPS.
# shellcheck shell=bash
log() { echo "[suite $(date +%H:%M:%S)] $*" | tee -a "$LOG"; }

# Candidates that left a CUDA context unusable.  A measured candidate whose first run faults (an
# illegal address: every later CUDA call of that process fails) raises
# inception_fast.choices.CandidateFault, whose message names it as
# "INCEPTION_FAST_SKIP_CANDIDATES=choice:candidate ;".  A step (not the tests) that failed with one
# runs again once, in what is left of its cap and the budget (where that leaves it time to start a
# case), and it and every later step run without that candidate (INCEPTION_FAST_SKIP_CANDIDATES,
# exported, with the caller's entries).  The step's JSON from the failed run is kept beside the new one as
# NAME.fault.json (gpu_suite.sh reports its rows where the run again did not reach them).  The
# suite still exits 1: a candidate faulted.  The candidates found (not the caller's) are kept in
# SKIP_FILE with a digest of the package's sources, the GPU and torch's version, for the next call on
# this tree and machine (SUITE_PART=check after bench): an edited tree tries every candidate again.
FOUND_SKIPS=${FOUND_SKIPS:-}
skip_digest() {
    (
        cd "$REPO" || exit 1
        find setup.py csrc inception_fast -type f \( -name '*.py' -o -name '*.cu' -o -name '*.cpp' -o -name '*.h' \) \
            -print0 | sort -z | xargs -0 sha256sum
        nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || echo "no GPU"
        "${PY:-python3}" -c "import importlib.metadata as m; print('torch', m.version('torch'))" 2>&1
    ) | sha256sum | cut -d' ' -f1
}
# merged_list A B: the comma-separated lists A and B as one, sorted, without repeats.
merged_list() {
    printf '%s\n' ${1//,/ } ${2//,/ } | sort -u | paste -sd, -
}
# add_skips ENTRIES WHY: the comma-separated candidates ENTRIES are skipped by the steps from now on
# and kept in SKIP_FILE.
add_skips() {
    local current=${INCEPTION_FAST_SKIP_CANDIDATES:-}
    FOUND_SKIPS=$(merged_list "$FOUND_SKIPS" "$1")
    export INCEPTION_FAST_SKIP_CANDIDATES
    INCEPTION_FAST_SKIP_CANDIDATES=$(merged_list "$current" "$1")
    log "skipped candidates from here on: INCEPTION_FAST_SKIP_CANDIDATES=$INCEPTION_FAST_SKIP_CANDIDATES ($2)"
    mkdir -p "$(dirname "$SKIP_FILE")" && echo "$(skip_digest) $FOUND_SKIPS" > "$SKIP_FILE"
}
# load_skips: adds the candidates SKIP_FILE keeps, where its digest is this tree's and machine's
# (else removes it).
load_skips() {
    local digest kept
    [[ -s "$SKIP_FILE" ]] || return 0
    read -r digest kept < "$SKIP_FILE"
    if [[ "$digest" == "$(skip_digest)" && -n "${kept:-}" ]]; then
        add_skips "$kept" "found faulting by an earlier call on this tree, $SKIP_FILE"
    else
        rm -f "$SKIP_FILE"
    fi
}
# new_faults LOGFILE OFFSET: the candidates that the step's output (LOGFILE from byte OFFSET) names as
# faulted and that are not skipped yet, comma-separated (the entry must end with its " ;": a line
# pytest cut short names none).
new_faults() {
    local current=${INCEPTION_FAST_SKIP_CANDIDATES:-}
    tail -c +$(($2 + 1)) "$1" | grep -o 'INCEPTION_FAST_SKIP_CANDIDATES=[a-z0-9_:]* ;' | sed 's/^[^=]*=//; s/ ;$//' |
        sort -u | grep -vxF -f <(printf '%s\n' ${current//,/ } "") | paste -sd, -
}
# keep_fault_json CMD...: moves the JSON a command writes (its --benchmark-json or --json argument)
# to NAME.fault.json, where it exists.
keep_fault_json() {
    local arg prev=
    for arg in "$@"; do
        if [[ ($prev == --benchmark-json || $prev == --json) && -s $arg ]]; then
            mv -f "$arg" "${arg%.json}.fault.json"
        fi
        prev=$arg
    done
}

# run_step NAME CAP_S RESERVE_AFTER_S LOGFILE CMD...
# Runs CMD with a timeout of min(CAP, time left - RESERVE_AFTER); records ok/FAILED/TIMEOUT.
run_step() {
    local name=$1 cap=$2 reserve=$3 logfile=$4
    shift 4
    local now left limit t0 rc secs
    now=$(date +%s)
    left=$((DEADLINE - now - reserve))
    limit=$(( cap < left ? cap : left ))
    if (( limit < 15 )); then
        SUMMARY+=("$(printf '%-10s SKIPPED (no time left in the %ss budget)' "$name" "$BUDGET")")
        log "step $name: skipped, no time left"
        FAILED=1
        return 0
    fi
    log "step $name: start (limit ${limit}s) :: $*"
    local offset
    offset=$(stat -c %s "$logfile" 2>/dev/null || echo 0)
    t0=$(date +%s)
    # Benchmarks and tests stop starting new cases STEP_MARGIN s before the hard timeout, so they
    # end by themselves with their JSON and summary (one the timeout stops is interrupted by its
    # SIGTERM, benchmarks/conftest.py: pytest-benchmark still writes the rows that finished).  The
    # default margin, 10 s plus a tenth of the limit, is held to a third of the limit, so a short
    # step still runs some of its cases; a STEP_MARGIN given (the longest case) is kept whole even
    # where it leaves the step no time to start one.
    local margin=${STEP_MARGIN:-$((10 + limit / 10))}
    [[ -z "${STEP_MARGIN:-}" ]] && (( margin > limit / 3 )) && margin=$((limit / 3))
    local stop=$((t0 + limit - margin))
    INCEPTION_FAST_BENCH_DEADLINE=$stop INCEPTION_FAST_TEST_DEADLINE=$stop \
        timeout -k 20 "$limit" "$@" >> "$logfile" 2>&1
    rc=$?
    secs=$(( $(date +%s) - t0 ))
    if (( rc == 0 )); then
        SUMMARY+=("$(printf '%-10s ok       %4ss' "$name" "$secs")")
    elif (( rc == 5 )) && [[ $name == tests ]]; then
        SUMMARY+=("$(printf '%-10s none     %4ss (no test selected by -m gpu)' "$name" "$secs")")
    elif (( rc == 124 || rc == 137 )); then
        SUMMARY+=("$(printf '%-10s TIMEOUT  %4ss (limit %ss; see %s)' "$name" "$secs" "$limit" "$(basename "$logfile")")")
        FAILED=1
    else
        SUMMARY+=("$(printf '%-10s FAILED   %4ss rc=%s (see %s)' "$name" "$secs" "$rc" "$(basename "$logfile")")")
        FAILED=1
    fi
    log "step $name: rc=$rc after ${secs}s (suite at $(( $(date +%s) - START ))s of ${BUDGET}s)"
    local faults
    if (( rc != 0 )) && [[ $name != tests ]] && faults=$(new_faults "$logfile" "$offset") && [[ -n $faults ]]; then
        add_skips "$faults" "step $name: CandidateFault"
        SUMMARY[-1]+=" (fault: $faults, skipped from here on)"
        # Again only where what is left of the cap and of the budget, less the margin in which no
        # case starts, holds one.
        local again=$((cap - secs)) budget_left=$((DEADLINE - $(date +%s) - reserve))
        (( budget_left < again )) && again=$budget_left
        if [[ -z "${RETRYING:-}" ]] && (( again >= 15 + ${STEP_MARGIN:-0} )); then
            keep_fault_json "$@"
            RETRYING=1 run_step "$name" "$again" "$reserve" "$logfile" "$@"
        fi
    fi
    return 0
}
