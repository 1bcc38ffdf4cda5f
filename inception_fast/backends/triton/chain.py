"""A chain of Inception blocks (block i's output is block i+1's input, same spatial size) in n + 1
Triton launches instead of 2n: launch 1 of block 0, then for each pair of neighbours one "joined"
launch that runs launch 2 of block i (its 3x3 and kxk convs, branch_convs.py) and launch 1 of
block i+1 (its three 1x1s and pool branch, reduce_pool.py), then launch 2 of the last block.

What it computes: exactly what ``block_forward`` called block by block computes.  Each output
element is written by one tile of one program, with the same tile functions (``_conv_tile``,
``_reduce_tile``, ``_pool_tile``) and, for the same tile sizes, the same arithmetic in the same
order, so the result is bit-identical to the two-launch blocks with those tiles.  Why: between a
block's launch 2 and the next block's launch 1 (the tail of one, the launch and ramp-up of the
other) SMs idle, which counts most where launches are short (small batches); in one kernel the
next block's 1x1s start on pixel rows whose convs are done while launch 2's last tiles still run.
Whether that pays is for a measurement to decide (the caller's measured choice), not this module.

The joined kernel (``_joined_kernel``) hands out tiles by ticket: each program takes
``t = atomic_add(ticket, 1)`` and runs tile t.  PERSISTENT configs run P programs (on CUDA at most
SM count x PROGRAMS_PER_SM, never more than there are tiles), each taking tickets until t reaches
the tile count T; the others run T programs of one ticket each (a tile's ticket is still taken
when its program starts, not fixed by its program id: the order below holds either way, and the
program keeps only its own role's values in registers, see CONFIGS).  Tickets order the tiles:

* ORDER 0 ("producers first"): tickets 0..T2-1 are block i's launch-2 tiles (per BLOCK_M2 pixel
  tile, its column tiles), T2..T-1 block i+1's launch-1 tiles (per BLOCK_M pixel tile, the reduce
  role's column tiles, then the pool role's parts), in the launches' own grid orders.
* ORDER 1 ("interleaved"): launch-2 pixel tile k's column tiles, then every launch-1 row tile
  whose last needed launch-2 pixel tile is k; a row tile so starts as soon as its inputs can be
  done, while launch 2 still runs (and reads rows launch 2 just wrote, from L2).
* Test-only orders (the interpreter only: there each makes the named waits give up, see below):
  ORDER 1 with each launch-1 row tile placed after the launch-2 pixel tile holding its own last
  row (ORDER 2: as if the pool role's window did not reach the next image row), its last row + W
  (ORDER 3: one pixel short of that reach) or its first row (ORDER 4: the reduce role's own rows
  past the first pixel tile); or launch 2's pixel tiles last to first, each launch-1 row tile
  right after the one holding the first row its pool window reads (ORDER 5, which is complete),
  its own first row (ORDER 6: as if the window did not reach the image row above) or its first
  row - W (ORDER 7: one pixel short of that reach).

Dependencies: one int32 counter per launch-2 pixel tile.  Each of its column tiles, after its
stores, runs a CTA barrier and then one release atomic add (gpu scope) on it: the tile is complete
when the counter reaches the column-tile count NC2.  A launch-1 tile reads block i's output rows
[r0, r0 + BLOCK_M) (reduce role) or its pool window's rows [r0 - W - 1, r0 + BLOCK_M_POOL + W + 1)
clipped to [0, M) (the 3x3 max pool reaches one image row up and down, and one pixel left and
right); before loading it waits until every launch-2 pixel tile covering those rows is complete:
one thread spins on an acquire atomic (gpu scope) per counter, then a CTA barrier (CUTLASS's
semaphore pattern).  The channels launch 1 of block i wrote (branch 1, pool) come from an earlier
kernel in stream order: no wait.

Memory ordering: the producer's stores happen-before its barrier, the barrier before the release
add; the consumer's acquire read of the final count synchronizes with that release (its counter's
release sequence), and its barrier orders every thread's later loads after the acquire.  PTX's
memory model makes the producer CTA's stores visible to the consumer CTA's loads through that
chain (bar.sync is a CTA-scope fence; release/acquire at gpu scope are cumulative), whatever the
consumer's L1 held: the loads are ordinary ones (ld.global, cp.async).  Triton issues a scalar
atomic from one thread and hands its result to all through shared memory.  The ticket adds are
relaxed: they only need to be atomic.

Deadlock freedom: a program takes a ticket only while it runs, and tickets are taken in ticket
order; in ORDER 0 and 1, each tile a launch-1 tile waits on has a smaller ticket, so it was taken
by a running program, which finishes it without waiting on anything (launch-2 tiles never wait).
Hence every wait ends, whether or not all programs are resident at once.  The same argument covers
the interpreter, which runs programs one after the other: program 0 takes every ticket in order,
and the others find none left.  There a dependency not met at the first look can never be met, so
a wait looks SPIN_LIMIT times and gives up.  On a GPU a wait gives up after about 2 s
(WAIT_LIMIT_US, by %globaltimer), which no correct wait comes near: a bug must not hang the
process.  A wait that gave up sets a bit of the error flag (which role's wait), and every later
wait that finds the flag set gives up at once (a systematic bug costs one limit per chain, not one
per wait).  Its tile, computed from rows not yet written, stores NaN over its output tile (a later
call's give-up, which no host check reads, shows in the logits instead of passing as a plausible
value); the interpreter's launcher raises at once, ``chain_forward`` on a GPU on its first call per
shape and config (a host sync), so that the model's first-use parity check drops the chain.  The
test-only ORDERs (interpreter only; a GPU launch refuses them) make tiles wait on later tickets on
purpose.

Counters without a memset: the sync buffer (int32: ticket, done, the error flag, and from
DEP_OFFSET one dependency counter per launch-2 pixel tile) is allocated once per ``chain_forward``
call, uninitialized, and zeroed by the chain's first launch 1 (the ordinary one, with its pre-pool
where there is one) through its ``counters`` argument, which zeroes launch 2's split-K counters in
``block_forward``: free there, since block 0's launch 2 is the joined one and splits no K.  Every
joined launch leaves it zeroed for the next: after its last ticket each program bumps ``done``
(acq_rel); the last one to arrive (every program has left its loop, so no ticket or counter is
touched again) resets ticket, done and the dependency counters (not the error flag, which the
launcher reads after the chain).  The joined launch's programs also zero the split-K counters of
the standalone launch 2 that follows the last joined launch, before taking a ticket (as launch 1
does in ``block_forward``).  So a chain of n blocks is n + 1 launches and nothing else on the GPU
but its buffers' allocation, eagerly and in a CUDA graph alike; each call (each graph) has buffers
of its own, so chains on two streams never share one.

Configs: launch 2 with SPLIT_K 1 and launch 1 with POOL_SPLIT_K 1 and no pre-pool only (a pool
before the first block folds into the chain's first, ordinary, launch 1).  Both roles run under
one num_warps and num_stages; a config's shared memory is the larger of the two roles', its
registers at least the larger of the two (more in a persistent loop, see CONFIGS; ``python -m
benchmarks.kernel_stats --block chains``).

Importing this module imports triton (so set TRITON_INTERPRET=1 first to run it on CPU) but
queries no device.
"""

from __future__ import annotations

import contextlib
from typing import Optional, Sequence

import torch
import triton
import triton.language as tl

from ... import compile_only, geometry
from ...caches import LRUDict
from . import _common
from ._common import pixel_rows, pixel_tile, row_offsets
from .block import block_forward
from .branch_convs import _conv_tile, launch_branch_convs, split_k_counters
from .reduce_pool import _pool_tile, _reduce_tile, launch_reduce_pool

__all__ = ["chain_forward", "CONFIGS", "INTERPRETER_CONFIG"]

# The sync buffer's layout (int32): the ticket, the done count, the error flag (bits: which role's
# wait gave up), then
# from DEP_OFFSET (128 bytes in: the hot ticket on a cache line of its own) one counter per
# launch-2 pixel tile.
TICKET, DONE, ERROR, DEP_OFFSET = (tl.constexpr(v) for v in (0, 1, 2, 32))
# Programs per SM on CUDA: enough to keep every SM busy; programs past what fits start when
# others leave, find no ticket and leave at once.
PROGRAMS_PER_SM = 2
# Under the interpreter: how often a wait looks at a counter before it gives up (programs run one
# after the other, so a dependency missing at the first look is missing for good).
INTERPRETER_SPIN_LIMIT = 2
# On a GPU: how long (in _clock_us's units of 1024 ns: about 2 s) a wait spins on a counter before
# it gives up.  Every wait ends long before in every ORDER the launcher accepts (see the module
# docstring); this bounds a wait that never would (a bug) so that the process does not hang and
# the launcher can raise.
WAIT_LIMIT_US = tl.constexpr(2_000_000_000 // 1024)
# The error flag's bits: which role's wait gave up.
REDUCE_WAIT_FAILED, POOL_WAIT_FAILED = (tl.constexpr(v) for v in (1, 2))


@triton.jit
def _placed_row_tiles(k, W, J, R, BLOCK_M2: tl.constexpr, BLOCK_M: tl.constexpr, ORDER: tl.constexpr):
    """How many launch-1 row tiles the interleaved orders (ORDER >= 1) place up to group k (k >= -2;
    -1: before the first one; group k holds launch-2 pixel tile k, or J - 1 - k in the descending
    orders).  Ascending: those whose last needed launch-2 pixel tile is at most k, where row tile m
    is taken to need rows up to min(M, (m + 1) * BLOCK_M + reach) - 1 (ORDER 1: reach W + 1, the
    pool role's window; the test-only ones less), i.e. pixel tile k once (m + 1) * BLOCK_M + reach
    <= (k + 1) * BLOCK_M2 (k < J - 1), and all of them by the last one.  Descending: those whose
    first needed pixel tile is at least K = J - 1 - k, row tile m taken to need rows from
    max(m * BLOCK_M - reach, 0) (ORDER 5: reach W + 1; ORDER 6: 0; ORDER 7: W), i.e. m >= cdiv(K *
    BLOCK_M2 + reach, BLOCK_M) (K > 0), and all of them by the last one (K = 0)."""
    if ORDER >= 5:
        K = J - 1 - k
        if ORDER == 5:
            reach = W + 1
        elif ORDER == 7:
            reach = W
        else:
            reach = 0
        first = tl.minimum(tl.cdiv(K * BLOCK_M2 + reach, BLOCK_M), R)
        placed = tl.where(K <= 0, R, R - first)
    else:
        if ORDER == 2:
            reach = 0
        elif ORDER == 3:
            reach = W
        elif ORDER == 4:
            reach = 1 - BLOCK_M
        else:
            reach = W + 1
        fits = tl.maximum((k + 1) * BLOCK_M2 - reach, 0) // BLOCK_M
        placed = tl.where(k >= J - 1, R, tl.minimum(fits, R))
    return placed


@triton.jit
def _group_start(k, NC2, NC1, W, J, R, BLOCK_M2: tl.constexpr, BLOCK_M: tl.constexpr, ORDER: tl.constexpr):
    """The first ticket of group k (k >= -1) of the interleaved orders: group -1 holds the row tiles
    placed before any launch-2 tile, group k >= 0 a launch-2 pixel tile's NC2 column tiles and then
    the row tiles placed after it (NC1 tickets each)."""
    return tl.maximum(k, 0) * NC2 + _placed_row_tiles(k - 1, W, J, R, BLOCK_M2, BLOCK_M, ORDER) * NC1


@triton.jit
def _clock_us():
    """%globaltimer, the GPU's global clock (ns), in units of 1024 ns modulo 2**31 (32-bit: fewer
    registers): this thread's reading."""
    return tl.inline_asm_elementwise(
        "{ .reg .u64 t; mov.u64 t, %globaltimer; shr.u64 t, t, 10; cvt.u32.u64 $0, t; and.b32 $0, $0, 0x7fffffff; }",
        "=r",
        [],
        dtype=tl.int32,
        is_pure=False,
        pack=1,
    )


@triton.jit
def _wait_rows(sync_ptr, err_bit, lo_row, hi_row, need, BLOCK_M2: tl.constexpr, SPIN_LIMIT: tl.constexpr):
    """Waits until every launch-2 pixel tile holding a row of [lo_row, hi_row) has all its ``need``
    column tiles stored (one thread's acquire atomics, then a CTA barrier).  A wait that gives up
    goes on and returns ``err_bit`` (else 0), for the kernel to set in the error flag (the launcher
    raises): SPIN_LIMIT 0 (a GPU) after WAIT_LIMIT_US per counter (at once where the error flag
    is already set), else (the interpreter) after SPIN_LIMIT looks per counter."""
    failed = 0
    for j in range(lo_row // BLOCK_M2, (hi_row - 1) // BLOCK_M2 + 1):
        seen = tl.atomic_add(sync_ptr + DEP_OFFSET + j, 0, sem="acquire", scope="gpu")
        if SPIN_LIMIT == 0:
            if seen < need:  # the clock only where there is a wait
                # Once a wait of this chain has given up (the error flag is set: its results are
                # wrong and its launcher raises), the later ones give up at once.
                start = _clock_us()
                if tl.atomic_add(sync_ptr + ERROR, 0, sem="relaxed", scope="gpu") != 0:
                    start -= WAIT_LIMIT_US + 1  # past the limit: the loop's first look gives up
                while seen < need:
                    # Every thread reads the clock, but only the one that issues the program's
                    # atomics acts on it (the loop's condition is the atomic's result, the same in
                    # every thread).  Past the limit it reads the ticket count instead, which is
                    # past this tile's ticket, itself at least ``need`` (every order hands out a
                    # launch-2 pixel tile's column tiles before any launch-1 tile): more than
                    # a pixel tile's count can ever be, so the loop ends and the wait is known to
                    # have failed.
                    late = (_clock_us() - start) & 0x7FFFFFFF > WAIT_LIMIT_US
                    seen = tl.atomic_add(
                        tl.where(late, sync_ptr + TICKET, sync_ptr + DEP_OFFSET + j), 0, sem="acquire", scope="gpu"
                    )
        else:
            spins = 1
            while (seen < need) & (spins < SPIN_LIMIT):
                seen = tl.atomic_add(sync_ptr + DEP_OFFSET + j, 0, sem="acquire", scope="gpu")
                spins += 1
            seen = tl.where(seen < need, need + 1, seen)
        failed = tl.where(seen > need, err_bit, failed)
    tl.debug_barrier()  # every thread's loads come after the acquire
    return failed


@triton.jit
def _store_nan(ptr, rows, row_ok, cols, col_ok, stride_c, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """NaN into the [BLOCK_M, BLOCK_N] tile of ``ptr`` at rows ``rows`` and channels ``cols``: the
    output of a tile whose wait gave up (it read rows no launch 2 had written)."""
    nan = tl.full((BLOCK_M, BLOCK_N), float("nan"), tl.float32).to(ptr.dtype.element_ty)
    tl.store(ptr + rows[:, None] + cols[None, :] * stride_c, nan, mask=row_ok[:, None] & col_ok[None, :])


@triton.jit
def _conv_role(
    u,
    NC2,
    n_tiles3,
    scratch_ptr,
    w3_ptr,
    b3_ptr,
    w5_ptr,
    b5_ptr,
    mid_ptr,
    sync_ptr,
    M,
    H,
    W,
    cin3,
    cout3,
    cin5,
    cout5,
    ch1,
    stride_scratch_n,
    stride_scratch_h,
    stride_scratch_w,
    stride_scratch_c,
    stride_mid_n,
    stride_mid_h,
    stride_mid_w,
    stride_mid_c,
    stride_w3_o,
    stride_w3_h,
    stride_w3_w,
    stride_w3_c,
    stride_b3,
    stride_w5_o,
    stride_w5_h,
    stride_w5_w,
    stride_w5_c,
    stride_b5,
    K5: tl.constexpr,
    TILE_N5: tl.constexpr,
    BLOCK_K5: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M2: tl.constexpr,
    BLOCK_N2: tl.constexpr,
    BLOCK_K2: tl.constexpr,
):
    """Launch-2 tile u of block i (as _branch_convs_kernel's program u with SPLIT_K 1), then its
    pixel tile's dependency counter bumped (barrier, release)."""
    pid_n, row_ok, img, hh, ww = pixel_tile(u, NC2, M, H, W, BLOCK_M2)
    s_row = row_offsets(img, hh, ww, stride_scratch_n, stride_scratch_h, stride_scratch_w)
    o_row = row_offsets(img, hh, ww, stride_mid_n, stride_mid_h, stride_mid_w)
    if pid_n < n_tiles3:
        _conv_tile(
            scratch_ptr, w3_ptr, b3_ptr, mid_ptr, sync_ptr, sync_ptr, 0, 0, s_row, o_row, row_ok, hh, ww,
            pid_n, H, W, cin3, 0, cout3, ch1, stride_scratch_h, stride_scratch_w, stride_scratch_c,
            stride_w3_o, stride_w3_h, stride_w3_w, stride_w3_c, stride_b3, stride_mid_c,
            3, DOT_PRECISION, BLOCK_M2, BLOCK_N2, BLOCK_K2, 1, BLOCK_M2 * BLOCK_N2, 0,
        )  # fmt: skip
    else:
        _conv_tile(
            scratch_ptr, w5_ptr, b5_ptr, mid_ptr, sync_ptr, sync_ptr, 0, 0, s_row, o_row, row_ok, hh, ww,
            pid_n - n_tiles3, H, W, cin5, cin3, cout5, ch1 + cout3, stride_scratch_h, stride_scratch_w,
            stride_scratch_c, stride_w5_o, stride_w5_h, stride_w5_w, stride_w5_c, stride_b5, stride_mid_c,
            K5, DOT_PRECISION, BLOCK_M2, TILE_N5, BLOCK_K5, 1, BLOCK_M2 * BLOCK_N2, 0,
        )  # fmt: skip
    tl.debug_barrier()  # every thread's stores come before the release
    tl.atomic_add(sync_ptr + DEP_OFFSET + u // NC2, 1, sem="release", scope="gpu")


@triton.jit
def _reduce_pool_role(
    v,
    NC1,
    NC2,
    n_red_tiles,
    n_pool_tiles,
    mid_ptr,
    w_red_ptr,
    b_red_ptr,
    w_pool_ptr,
    b_pool_ptr,
    out_ptr,
    scratch_ptr,
    sync_ptr,
    M,
    H,
    W,
    cin,
    n_red,
    ch1,
    n_pool,
    pool_col0,
    stride_mid_n,
    stride_mid_h,
    stride_mid_w,
    stride_mid_c,
    stride_w_red_n,
    stride_w_red_k,
    stride_b_red,
    stride_w_pool_n,
    stride_w_pool_k,
    stride_b_pool,
    stride_out_n,
    stride_out_h,
    stride_out_w,
    stride_out_c,
    stride_scratch_n,
    stride_scratch_h,
    stride_scratch_w,
    stride_scratch_c,
    DOT_PRECISION: tl.constexpr,
    BLOCK_N_POOL: tl.constexpr,
    BLOCK_M2: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_M_POOL: tl.constexpr,
    BLOCK_K_POOL: tl.constexpr,
    POOL_STAGES: tl.constexpr,
    SPIN_LIMIT: tl.constexpr,
):
    """Launch-1 tile v of block i+1 (as _reduce_pool_kernel's program v with no pre-pool and
    POOL_SPLIT_K 1), once the launch-2 pixel tiles of block i holding the rows it reads are done
    (returns _wait_rows's result: non-zero where the wait gave up)."""
    pid_m = v // NC1
    col = v % NC1
    if col < n_red_tiles:
        r0 = pid_m * BLOCK_M
        failed = _wait_rows(sync_ptr, REDUCE_WAIT_FAILED, r0, tl.minimum(r0 + BLOCK_M, M), NC2, BLOCK_M2, SPIN_LIMIT)
        row_ok, img, hh, ww = pixel_rows(r0, M, H, W, BLOCK_M)
        x_row = row_offsets(img, hh, ww, stride_mid_n, stride_mid_h, stride_mid_w)
        o_row = row_offsets(img, hh, ww, stride_out_n, stride_out_h, stride_out_w)
        s_row = row_offsets(img, hh, ww, stride_scratch_n, stride_scratch_h, stride_scratch_w)
        _reduce_tile(
            mid_ptr, w_red_ptr, b_red_ptr, out_ptr, scratch_ptr, x_row, o_row, s_row, row_ok, col, cin,
            n_red, ch1, stride_mid_c, stride_w_red_n, stride_w_red_k, stride_b_red, stride_out_c,
            stride_scratch_c, hh, ww, H, W, stride_mid_h, stride_mid_w,
            DOT_PRECISION, BLOCK_M, BLOCK_N, BLOCK_K, 1, 1, 0, 1, BLOCK_K,
        )  # fmt: skip
        if failed != 0:  # computed from rows not yet written: NaN, never a plausible wrong value
            offs_n = col * BLOCK_N + tl.arange(0, BLOCK_N)
            col_ok = offs_n < n_red
            is_branch1 = offs_n < ch1
            _store_nan(out_ptr, o_row, row_ok, offs_n, col_ok & is_branch1, stride_out_c, BLOCK_M, BLOCK_N)
            _store_nan(
                scratch_ptr, s_row, row_ok, offs_n - ch1, col_ok & ~is_branch1, stride_scratch_c, BLOCK_M, BLOCK_N
            )
    else:
        part = col - n_red_tiles
        row0 = pid_m * BLOCK_M + (part // n_pool_tiles) * BLOCK_M_POOL
        # The 3x3 window of pixel p reads pixels p - W - 1 .. p + W + 1 (flattened).
        failed = _wait_rows(
            sync_ptr,
            POOL_WAIT_FAILED,
            tl.maximum(row0 - W - 1, 0),
            tl.minimum(row0 + BLOCK_M_POOL + W + 1, M),
            NC2,
            BLOCK_M2,
            SPIN_LIMIT,
        )
        p_ok, p_img, p_hh, p_ww = pixel_rows(row0, M, H, W, BLOCK_M_POOL)
        p_x_row = row_offsets(p_img, p_hh, p_ww, stride_mid_n, stride_mid_h, stride_mid_w)
        p_o_row = row_offsets(p_img, p_hh, p_ww, stride_out_n, stride_out_h, stride_out_w)
        _pool_tile(
            mid_ptr, w_pool_ptr, b_pool_ptr, out_ptr, p_x_row, p_o_row, p_ok, p_hh, p_ww,
            part % n_pool_tiles, H, W, cin, n_pool, pool_col0, stride_mid_h, stride_mid_w, stride_mid_c,
            stride_w_pool_n, stride_w_pool_k, stride_b_pool, stride_out_c,
            DOT_PRECISION, BLOCK_M_POOL, BLOCK_N_POOL, BLOCK_K_POOL, POOL_STAGES,
            H, W, 1, 1, 0, 1, sync_ptr, sync_ptr, 0, 0, 1, 0,
        )  # fmt: skip
        if failed != 0:  # as above
            offs_p = (part % n_pool_tiles) * BLOCK_N_POOL + tl.arange(0, BLOCK_N_POOL)
            _store_nan(
                out_ptr, p_o_row, p_ok, pool_col0 + offs_p, offs_p < n_pool, stride_out_c, BLOCK_M_POOL, BLOCK_N_POOL
            )
    return failed


# As the two launches' kernels: the shape values only enter index arithmetic and masks, and the
# *_div_unit values get their alignment from the constexpr units.
@triton.jit(
    do_not_specialize=["M", "H", "W", "n_pool_tiles"],
    do_not_specialize_on_alignment=[
        "cin3_div_unit",
        "cin5_div_unit",
        "cin_div_unit",
        "n_red_div_unit",
        "ch1b_div_unit",
        "n_pool_div_unit",
        "pool_col0_div_unit",
        "stride_scratch_n_div_unit",
        "stride_scratch_h_div_unit",
        "stride_scratch_w_div_unit",
        "stride_mid_n_div_unit",
        "stride_mid_h_div_unit",
        "stride_mid_w_div_unit",
        "stride_w3_o_div_unit",
        "stride_w3_h_div_unit",
        "stride_w3_w_div_unit",
        "stride_w5_o_div_unit",
        "stride_w5_h_div_unit",
        "stride_w5_w_div_unit",
        "stride_out_n_div_unit",
        "stride_out_h_div_unit",
        "stride_out_w_div_unit",
        "stride_sb_n_div_unit",
        "stride_sb_h_div_unit",
        "stride_sb_w_div_unit",
    ],
)
def _joined_kernel(
    # Block i's launch 2: its scratch, its conv weights and biases, its output ("mid", which is
    # block i+1's input).  Block i+1's launch 1: its packed 1x1 weights and biases, its output and
    # scratch, its launch 2's split-K counters (zeroed on the way).  The sync buffer.
    scratch_ptr,
    w3_ptr,
    b3_ptr,
    w5_ptr,
    b5_ptr,
    mid_ptr,
    w_red_ptr,
    b_red_ptr,
    w_pool_ptr,
    b_pool_ptr,
    out_ptr,
    sb_ptr,
    counters_ptr,
    sync_ptr,
    # Pixels (M = N*H*W, both blocks) and the image's height and width.
    M,
    H,
    W,
    # Block i's convs: input channels (divided by C_UNIT2), output channels, branch 1's width.
    cin3_div_unit,
    cout3,
    cin5_div_unit,
    cout5,
    ch1a,
    # Block i+1's launch 1 (divided by C_UNIT1): Cin, rows of w_red, branch 1's width, rows of
    # w_pool, the pool branch's first channel in out; pool column tiles per row tile; how many
    # int32 counters to zero (a multiple of 16, or 0).
    cin_div_unit,
    n_red_div_unit,
    ch1b_div_unit,
    n_pool_div_unit,
    pool_col0_div_unit,
    n_pool_tiles,
    n_counters,
    # Strides in elements; those of N, H and W (activations) or O, H and W (conv weights) divided
    # by ROW_UNIT or W_UNIT.
    stride_scratch_n_div_unit,
    stride_scratch_h_div_unit,
    stride_scratch_w_div_unit,
    stride_scratch_c,
    stride_mid_n_div_unit,
    stride_mid_h_div_unit,
    stride_mid_w_div_unit,
    stride_mid_c,
    stride_w3_o_div_unit,
    stride_w3_h_div_unit,
    stride_w3_w_div_unit,
    stride_w3_c,
    stride_b3,
    stride_w5_o_div_unit,
    stride_w5_h_div_unit,
    stride_w5_w_div_unit,
    stride_w5_c,
    stride_b5,
    stride_w_red_n,
    stride_w_red_k,
    stride_b_red,
    stride_w_pool_n,
    stride_w_pool_k,
    stride_b_pool,
    stride_out_n_div_unit,
    stride_out_h_div_unit,
    stride_out_w_div_unit,
    stride_out_c,
    stride_sb_n_div_unit,
    stride_sb_h_div_unit,
    stride_sb_w_div_unit,
    stride_sb_c,
    # Fixed by the launcher.
    K5: tl.constexpr,
    BLOCK_N5: tl.constexpr,
    BLOCK_K5: tl.constexpr,
    BLOCK_N_POOL: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    ROW_UNIT: tl.constexpr,
    W_UNIT: tl.constexpr,
    C_UNIT2: tl.constexpr,
    C_UNIT1: tl.constexpr,
    SPIN_LIMIT: tl.constexpr,
    # The tile (autotuned): launch 2's, launch 1's, and the ticket order.
    BLOCK_M2: tl.constexpr,
    BLOCK_N2: tl.constexpr,
    BLOCK_K2: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_M_POOL: tl.constexpr,
    BLOCK_K_POOL: tl.constexpr,
    POOL_STAGES: tl.constexpr,
    ORDER: tl.constexpr,
    PERSISTENT: tl.constexpr,
):
    """Launch 2 of block i and launch 1 of block i+1 as one kernel: with PERSISTENT each program
    takes tickets until none is left, else each takes one (see the module docstring for the order,
    the waits and the reset)."""
    cin3, cin5 = cin3_div_unit * C_UNIT2, cin5_div_unit * C_UNIT2
    cin, n_red, ch1b = cin_div_unit * C_UNIT1, n_red_div_unit * C_UNIT1, ch1b_div_unit * C_UNIT1
    n_pool, pool_col0 = n_pool_div_unit * C_UNIT1, pool_col0_div_unit * C_UNIT1
    stride_scratch_n = stride_scratch_n_div_unit * ROW_UNIT
    stride_scratch_h = stride_scratch_h_div_unit * ROW_UNIT
    stride_scratch_w = stride_scratch_w_div_unit * ROW_UNIT
    stride_mid_n = stride_mid_n_div_unit * ROW_UNIT
    stride_mid_h = stride_mid_h_div_unit * ROW_UNIT
    stride_mid_w = stride_mid_w_div_unit * ROW_UNIT
    stride_out_n = stride_out_n_div_unit * ROW_UNIT
    stride_out_h = stride_out_h_div_unit * ROW_UNIT
    stride_out_w = stride_out_w_div_unit * ROW_UNIT
    stride_sb_n = stride_sb_n_div_unit * ROW_UNIT
    stride_sb_h = stride_sb_h_div_unit * ROW_UNIT
    stride_sb_w = stride_sb_w_div_unit * ROW_UNIT
    stride_w3_o = stride_w3_o_div_unit * W_UNIT
    stride_w3_h = stride_w3_h_div_unit * W_UNIT
    stride_w3_w = stride_w3_w_div_unit * W_UNIT
    stride_w5_o = stride_w5_o_div_unit * W_UNIT
    stride_w5_h = stride_w5_h_div_unit * W_UNIT
    stride_w5_w = stride_w5_w_div_unit * W_UNIT

    # The tiles: launch 2's J pixel tiles of NC2 column tiles, launch 1's R row tiles of NC1.
    TILE_N5: tl.constexpr = BLOCK_N2 if BLOCK_N5 > BLOCK_N2 else BLOCK_N5
    n_tiles3 = tl.cdiv(cout3, BLOCK_N2)
    NC2 = n_tiles3 + tl.cdiv(cout5, TILE_N5)
    J = tl.cdiv(M, BLOCK_M2)
    n_red_tiles = tl.cdiv(n_red, BLOCK_N)
    NC1 = n_red_tiles + n_pool_tiles * (BLOCK_M // BLOCK_M_POOL)
    R = tl.cdiv(M, BLOCK_M)
    T2 = J * NC2
    T = T2 + R * NC1

    # The next standalone launch 2's split-K counters start at zero (as launch 1 zeroes them).
    pid = tl.program_id(0)
    offs_c = tl.arange(0, 1024)
    for c0 in range(pid * 1024, n_counters, tl.num_programs(0) * 1024):
        tl.store(counters_ptr + c0 + offs_c, 0, mask=c0 + offs_c < n_counters)

    t = tl.atomic_add(sync_ptr + TICKET, 1, sem="relaxed", scope="gpu")
    while t < T:
        # Ticket t as (is a launch-2 tile, its index u among them, or v among launch 1's).
        if ORDER == 0:
            is_conv = t < T2
            u = t
            v = t - T2
        else:
            # The last group starting at or before t (binary search over k in [-1, J)).
            lo = -1
            hi = J
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if _group_start(mid, NC2, NC1, W, J, R, BLOCK_M2, BLOCK_M, ORDER) <= t:
                    lo = mid
                else:
                    hi = mid
            off = t - _group_start(lo, NC2, NC1, W, J, R, BLOCK_M2, BLOCK_M, ORDER)
            is_conv = (lo >= 0) & (off < NC2)
            v = _placed_row_tiles(lo - 1, W, J, R, BLOCK_M2, BLOCK_M, ORDER) * NC1 + off - tl.where(lo >= 0, NC2, 0)
            if ORDER >= 5:  # descending: group lo is pixel tile J - 1 - lo, row tiles from the top
                u = (J - 1 - lo) * NC2 + off
                v = (R - 1 - v // NC1) * NC1 + v % NC1
            else:
                u = lo * NC2 + off
        if is_conv:
            _conv_role(
                u, NC2, n_tiles3, scratch_ptr, w3_ptr, b3_ptr, w5_ptr, b5_ptr, mid_ptr, sync_ptr, M, H, W,
                cin3, cout3, cin5, cout5, ch1a, stride_scratch_n, stride_scratch_h, stride_scratch_w,
                stride_scratch_c, stride_mid_n, stride_mid_h, stride_mid_w, stride_mid_c,
                stride_w3_o, stride_w3_h, stride_w3_w, stride_w3_c, stride_b3,
                stride_w5_o, stride_w5_h, stride_w5_w, stride_w5_c, stride_b5,
                K5, TILE_N5, BLOCK_K5, DOT_PRECISION, BLOCK_M2, BLOCK_N2, BLOCK_K2,
            )  # fmt: skip
        else:
            failed = _reduce_pool_role(
                v, NC1, NC2, n_red_tiles, n_pool_tiles, mid_ptr, w_red_ptr, b_red_ptr, w_pool_ptr,
                b_pool_ptr, out_ptr, sb_ptr, sync_ptr, M, H, W, cin, n_red, ch1b, n_pool, pool_col0,
                stride_mid_n, stride_mid_h, stride_mid_w, stride_mid_c, stride_w_red_n, stride_w_red_k,
                stride_b_red, stride_w_pool_n, stride_w_pool_k, stride_b_pool,
                stride_out_n, stride_out_h, stride_out_w, stride_out_c,
                stride_sb_n, stride_sb_h, stride_sb_w, stride_sb_c,
                DOT_PRECISION, BLOCK_N_POOL, BLOCK_M2, BLOCK_M, BLOCK_N, BLOCK_K,
                BLOCK_M_POOL, BLOCK_K_POOL, POOL_STAGES, SPIN_LIMIT,
            )  # fmt: skip
            if failed != 0:  # the same in every thread
                tl.atomic_or(sync_ptr + ERROR, failed, sem="relaxed", scope="gpu")
        if PERSISTENT:
            t = tl.atomic_add(sync_ptr + TICKET, 1, sem="relaxed", scope="gpu")
        else:
            t = T

    # The last program to get here resets the buffer for the next launch: every program has left
    # its loop, so no ticket or counter is touched again.
    arrived = tl.atomic_add(sync_ptr + DONE, 1, sem="acq_rel", scope="gpu")
    if arrived == tl.num_programs(0) - 1:
        # Rounded up to 16 counters (the buffer has room: _sync_size), so the stores are vectors.
        n_dep = tl.cdiv(J, 16) * 16
        offs_d = tl.arange(0, 1024)
        for d0 in range(0, n_dep, 1024):
            tl.store(sync_ptr + DEP_OFFSET + d0 + offs_d, 0, mask=d0 + offs_d < n_dep)
        tl.atomic_xchg(sync_ptr + TICKET, 0, sem="relaxed", scope="gpu")
        tl.atomic_xchg(sync_ptr + DONE, 0, sem="relaxed", scope="gpu")


def _config(l2: tuple, l1: tuple, order: int, num_warps: int, num_stages: int, persistent: int = 1) -> triton.Config:
    m2, n2, k2 = l2
    m1, n1, k1, m_pool, k_pool, pool_stages = l1
    return triton.Config(
        {
            "BLOCK_M2": m2,
            "BLOCK_N2": n2,
            "BLOCK_K2": k2,
            "BLOCK_M": m1,
            "BLOCK_N": n1,
            "BLOCK_K": k1,
            "BLOCK_M_POOL": m_pool,
            "BLOCK_K_POOL": k_pool,
            "POOL_STAGES": pool_stages,
            "ORDER": order,
            "PERSISTENT": persistent,
        },
        num_warps=num_warps,
        num_stages=num_stages,
    )


# Pairs of the two launches' own configs that share warps and stages (branch_convs.CONFIGS and
# reduce_pool.CONFIGS, split-K ones aside).  PERSISTENT 0 runs one ticket per program (a grid of T):
# the persistent loop keeps values of both roles live at once (up to ~100 more registers on sm_90
# in bf16), and in producers-first order the 128-row tiles spilled 200-400 bytes; ptxas did better
# on the interleaved order's loop (the 64-row tiles: 172-208 registers against 220-254), which the
# persistent configs here use (`python -m benchmarks.kernel_stats --block chains`).  In fp32 the
# 128-row tiles spill as launch 1's own do (`--dtype fp32`).
CONFIGS = [
    _config((128, 128, 64), (128, 128, 64, 128, 16, 1), 0, 8, 3, persistent=0),
    _config((128, 64, 64), (128, 64, 64, 64, 16, 2), 0, 4, 3, persistent=0),
    _config((128, 64, 64), (128, 64, 64, 64, 16, 2), 1, 4, 3),
    _config((64, 64, 32), (64, 64, 64, 64, 16, 2), 1, 4, 3),
]
# Offered up to SMALL_PROBLEM_PIXELS pixels only (batch 1): 32-row tiles, one ticket per program
# (147-234 registers on sm_90) or persistent (168-250).  With triton 3.6 (ptxas 12.8) the persistent
# one on 4b>4c keeps 24 bytes of per-program values on the stack at 168 registers: six stores before
# the persistent loop, and each role's path reloads one or two per tile, none inside a K loop (its
# SASS); 3.8 keeps them in registers.
SMALL_PROBLEM_CONFIGS = [
    _config((32, 32, 32), (32, 32, 64, 32, 16, 2), 0, 2, 3, persistent=0),
    _config((32, 32, 32), (32, 32, 64, 32, 16, 2), 1, 2, 3),
]
CONFIGS += SMALL_PROBLEM_CONFIGS
# The interpreter's tile: the two launches' INTERPRETER_CONFIGs (so a chain there is bit-identical
# to block_forward block by block), producers first.
INTERPRETER_CONFIG = {
    "BLOCK_M2": 64,
    "BLOCK_N2": 64,
    "BLOCK_K2": 64,
    "BLOCK_M": 64,
    "BLOCK_N": 64,
    "BLOCK_K": 64,
    "BLOCK_M_POOL": 64,
    "BLOCK_K_POOL": 64,
    "POOL_STAGES": 1,
    "ORDER": 0,
    "PERSISTENT": 1,
}
# Both blocks' shapes.
AUTOTUNE_KEY = [
    "M",
    "H",
    "W",
    "cin3_div_unit",
    "cout3",
    "cin5_div_unit",
    "cout5",
    "ch1a",
    "K5",
    "cin_div_unit",
    "n_red_div_unit",
    "ch1b_div_unit",
    "n_pool_div_unit",
    "pool_col0_div_unit",
    "DOT_PRECISION",
    "ROW_UNIT",
    "W_UNIT",
    "C_UNIT2",
    "C_UNIT1",
]


# The autotuner's early prune: SMALL_PROBLEM_CONFIGS only up to SMALL_PROBLEM_PIXELS (unless
# nothing else is left).
_prune_small_only = _common.small_only_prune(SMALL_PROBLEM_CONFIGS)


def make_tuned_kernel(configs=CONFIGS, **autotune_kwargs):
    """The autotuned kernel (tests build one with their own configs and do_bench)."""
    return triton.autotune(
        configs=list(configs),
        key=AUTOTUNE_KEY,
        prune_configs_by={"early_config_prune": _prune_small_only},
        **autotune_kwargs,
    )(_joined_kernel)


_tuned_kernel = None if _common.INTERPRET else make_tuned_kernel(cache_results=True, do_bench=_common.autotune_bench)


def _new_sync_buffer(device: torch.device, n: int) -> torch.Tensor:
    """``n`` int32, uninitialized: chain_forward's first launch 1 zeroes them (tests replace this
    with garbage to check that it does)."""
    return torch.empty(n, dtype=torch.int32, device=device)


def _programs(device: torch.device, tiles: int, meta: dict) -> int:
    """The grid: one program per tile where the config is not PERSISTENT; else at most SM count x
    PROGRAMS_PER_SM on CUDA (``PROGRAMS`` in meta pins it, tests), 2 under the interpreter, and
    never more than there are tiles."""
    if not meta["PERSISTENT"]:
        return tiles
    pinned = meta.get("PROGRAMS")
    if pinned is not None:
        return max(1, min(tiles, pinned))
    if device.type != "cuda":
        return max(1, min(tiles, 2))
    return max(1, min(tiles, _common.sm_count(device) * PROGRAMS_PER_SM))


def _tile_count(m: int, cout3: int, cout5: int, n_red: int, n_pool: int, cfg: dict) -> int:
    tile_n5 = min(_common.next_pow2_clamped(cout5), cfg["BLOCK_N2"])
    nc2 = _common.cdiv(cout3, cfg["BLOCK_N2"]) + _common.cdiv(cout5, tile_n5)
    n_pool_tiles = _common.cdiv(n_pool, _common.next_pow2_clamped(n_pool))
    nc1 = _common.cdiv(n_red, cfg["BLOCK_N"]) + n_pool_tiles * (cfg["BLOCK_M"] // cfg["BLOCK_M_POOL"])
    return _common.cdiv(m, cfg["BLOCK_M2"]) * nc2 + _common.cdiv(m, cfg["BLOCK_M"]) * nc1


def _arguments(scratch_a, w3, b3, w5, b5, mid, ch1a, w_red, b_red, w_pool, b_pool, out_b, scratch_b, counters, sync):
    """(positional args, launcher-fixed constexprs, grid(meta)) for _joined_kernel: launch 2 of the
    block with scratch ``scratch_a`` into ``mid`` (branch 1 ``ch1a`` wide), launch 1 of the next
    block from ``mid`` into ``out_b`` and ``scratch_b``; ``counters`` (int32, zeroed on the way)
    or None; ``sync`` the sync buffer."""
    _common.check_dtype(mid.dtype)
    n, c_mid, h, w = mid.shape
    m = n * h * w
    geometry.check_pixel_rows(m)
    cout3, cin3 = w3.shape[0], w3.shape[1]
    cout5, cin5, k5 = w5.shape[0], w5.shape[1], w5.shape[-1]
    _common.check_branch_weights(w3, w5)
    nr, np_ = w_red.shape[0], w_pool.shape[0]
    ch1b = nr - scratch_b.shape[1]
    pool_col0 = out_b.shape[1] - np_
    unit = _common.row_unit(scratch_a, mid, out_b, scratch_b)
    w_unit = _common.row_unit(w3, w5)
    c_unit2 = _common.pow2_unit(cin3, cin5)
    c_unit1 = _common.pow2_unit(c_mid, nr, ch1b, np_, pool_col0)
    block_n_pool = _common.next_pow2_clamped(np_)
    if counters is None:
        counters = _common.no_buffer(mid, torch.int32)
    args = (
        scratch_a,
        w3,
        b3,
        w5,
        b5,
        mid,
        w_red,
        b_red,
        w_pool,
        b_pool,
        out_b,
        scratch_b,
        counters,
        sync,
        m,
        h,
        w,
        cin3 // c_unit2,
        cout3,
        cin5 // c_unit2,
        cout5,
        ch1a,
        c_mid // c_unit1,
        nr // c_unit1,
        ch1b // c_unit1,
        np_ // c_unit1,
        pool_col0 // c_unit1,
        _common.cdiv(np_, block_n_pool),
        counters.numel(),
        *_common.row_strides(scratch_a, unit),
        *_common.row_strides(mid, unit),
        *_common.row_strides(w3, w_unit),
        b3.stride(0),
        *_common.row_strides(w5, w_unit),
        b5.stride(0),
        w_red.stride(0),
        w_red.stride(1),
        b_red.stride(0),
        w_pool.stride(0),
        w_pool.stride(1),
        b_pool.stride(0),
        *_common.row_strides(out_b, unit),
        *_common.row_strides(scratch_b, unit),
    )
    meta = {
        "K5": k5,
        "BLOCK_N5": _common.next_pow2_clamped(cout5),
        "BLOCK_K5": _common.next_pow2_clamped(cin5, hi=32),
        "BLOCK_N_POOL": block_n_pool,
        "DOT_PRECISION": _common.dot_precision(mid.dtype),
        "ROW_UNIT": unit,
        "W_UNIT": w_unit,
        "C_UNIT2": c_unit2,
        "C_UNIT1": c_unit1,
        "SPIN_LIMIT": INTERPRETER_SPIN_LIMIT if _common.INTERPRET else 0,
    }

    def grid(cfg):
        return (_programs(mid.device, _tile_count(m, cout3, cout5, nr, np_, cfg), cfg),)

    return args, meta, grid


def _sync_size(m: int) -> int:
    """Sync buffer elements for M pixel rows: the header and a counter per 16-row pixel tile (the
    smallest BLOCK_M2 any config has), a multiple of 16."""
    return -(-(DEP_OFFSET.value + _common.cdiv(m, 16)) // 16) * 16


def _check_config(config: Optional[triton.Config]) -> None:
    """A pinned joined-launch config's tiles fit the kernel, and its ORDER is one a GPU may run."""
    if config is None:
        return
    kw = config.kwargs
    if min(kw["BLOCK_M2"], kw["BLOCK_M"], kw["BLOCK_M_POOL"]) < 16 or kw["BLOCK_M"] % kw["BLOCK_M_POOL"]:
        raise ValueError(
            f"joined launch: BLOCK_M2 {kw['BLOCK_M2']}, BLOCK_M {kw['BLOCK_M']} and BLOCK_M_POOL "
            f"{kw['BLOCK_M_POOL']} must be at least 16 (tl.dot), and BLOCK_M_POOL must divide BLOCK_M"
        )
    if kw["ORDER"] not in (0, 1) and not _common.INTERPRET:
        raise ValueError(
            f"joined launch: ORDER {kw['ORDER']} is a test-only ticket order (its waits can wait on "
            "tiles with later tickets, which may never run); on a GPU ORDER must be 0 or 1"
        )


def launch_joined(
    scratch_a,
    w3,
    b3,
    w5,
    b5,
    mid,
    ch1a,
    w_red,
    b_red,
    w_pool,
    b_pool,
    out_b,
    scratch_b,
    counters=None,
    sync: Optional[torch.Tensor] = None,
    config: Optional[triton.Config] = None,
    programs: Optional[int] = None,
) -> None:
    """One joined launch: launch 2 of a block (scratch_a, w3..b5 into ``mid``'s slices from ch1a)
    and launch 1 of the next (``mid`` through w_red..b_pool into out_b and scratch_b).  ``sync``:
    the sync buffer, all zero (int32, at least _sync_size(M) long; left zero but for the error
    flag), or None: a zeroed one of its own.  ``config`` (one of CONFIGS, or any config with their
    kwargs) skips autotuning; ``programs`` pins the persistent grid's size (tests); ``counters`` as
    launch_reduce_pool's."""
    if mid.numel() == 0:  # nothing to compute, and CUDA rejects an empty grid
        return
    _check_config(config)
    m = mid.shape[0] * mid.shape[2] * mid.shape[3]
    n_sync = _sync_size(m)
    if sync is None:
        sync = torch.zeros(n_sync, dtype=torch.int32, device=mid.device)
    elif sync.dtype != torch.int32 or sync.numel() < n_sync or sync.device != mid.device:
        raise ValueError(
            f"joined launch: the sync buffer must be int32 on {mid.device} with at least {n_sync} "
            f"elements, got {sync.numel()} {sync.dtype} on {sync.device}"
        )
    args, meta, grid = _arguments(
        scratch_a, w3, b3, w5, b5, mid, ch1a, w_red, b_red, w_pool, b_pool, out_b, scratch_b, counters, sync
    )
    if programs is not None:
        inner = grid

        def grid(cfg):
            return inner({**cfg, "PROGRAMS": programs})

    with torch.cuda.device(mid.device) if mid.is_cuda else contextlib.nullcontext():
        _common.launch_configured(_joined_kernel, _tuned_kernel, grid, args, meta, config, INTERPRETER_CONFIG)
    if _common.INTERPRET and not compile_only.compiling_only():
        _raise_on_wait_error(sync)


def _raise_on_wait_error(sync: torch.Tensor) -> None:
    """Raises where a joined launch that used ``sync`` set its error flag (reads it: on a GPU this
    waits for the launch)."""
    # On the CPU (the interpreter) tolist: a host read, not a tensor op.
    flag = sync.tolist()[ERROR.value] if sync.device.type == "cpu" else int(sync[ERROR.value].item())
    if not flag:
        return
    roles = [
        name for bit, name in ((REDUCE_WAIT_FAILED, "reduce role"), (POOL_WAIT_FAILED, "pool role")) if flag & bit.value
    ]
    if _common.INTERPRET:
        why = (
            "ran before a launch-2 tile it reads was done (the interpreter runs programs one after the "
            "other: the ticket order is wrong)"
        )
    else:
        why = (
            f"waited more than {WAIT_LIMIT_US.value * 1024 / 1e9:.0f} s for a launch-2 tile it reads and gave up, "
            "so its results are wrong (a bug in the joined kernel's ticket order or waits)"
        )
    raise RuntimeError(f"joined launch: a launch-1 tile ({' and '.join(roles)}) {why}")


def _check_blocks(x: torch.Tensor, blocks: Sequence) -> list:
    """The blocks as lists of 8 tensors, after checking they chain: block i's output channels
    are block i+1's input channels (x's, for block 0); dtype and device as x's."""
    blocks = [list(b) for b in blocks]
    if not blocks:
        raise ValueError("chain_forward needs at least one block")
    cin = x.shape[1]
    for i, b in enumerate(blocks):
        if len(b) != 8:
            raise ValueError(
                f"block {i}: expected (w_red, b_red, w_pool, b_pool, w3, b3, w5, b5), got {len(b)} tensors"
            )
        for t in b:
            if not isinstance(t, torch.Tensor) or t.dtype != x.dtype or t.device != x.device:
                what = type(t).__name__ if not isinstance(t, torch.Tensor) else f"{t.dtype} on {t.device}"
                raise ValueError(f"block {i}: every weight must be a {x.dtype} tensor on {x.device}, got {what}")
        w_red, _, w_pool, _, w3, _, w5, _ = b
        if w_red.shape[1] != cin or w_pool.shape[1] != cin:
            src = "the input x" if i == 0 else f"block {i - 1}'s output"
            raise ValueError(
                f"block {i} takes {w_red.shape[1]} input channels (w_red {tuple(w_red.shape)}, w_pool "
                f"{tuple(w_pool.shape)}), but {src} has {cin} channels"
            )
        if w3.shape[1] + w5.shape[1] > w_red.shape[0]:
            raise ValueError(f"block {i}: w_red has {w_red.shape[0]} rows, fewer than the reductions w3/w5 read")
        cin = geometry.block_channels(w_red, w_pool, w3, w5).total
    return blocks


# The chain_forward calls (device, shapes, config) whose joined launches have been seen to end
# without a failed wait: their first call reads the error flag (a host sync), later ones do not.
_CHECKED = LRUDict()


def _check_key(x: torch.Tensor, blocks: list, pre_pool, config, programs) -> tuple:
    shapes = tuple(tuple(t.shape) for b in blocks for t in b)
    name = None if config is None else _common.config_name(config)
    pool = None if pre_pool is None else tuple(pre_pool)
    return x.device, tuple(x.shape), x.stride(), x.dtype, shapes, pool, name, programs


def chain_forward(x: torch.Tensor, blocks: Sequence, pre_pool=None, config=None, programs=None) -> torch.Tensor:
    """The last block's output of blocks applied one after the other to x (each block a tuple of
    packed weights as ``block_forward`` takes them), in len(blocks) + 1 Triton launches: launch 1
    of the first block (with ``pre_pool``, (kernel, stride, padding, ceil_mode), folded in as
    ``block_forward`` folds it), one joined launch per pair of neighbours, launch 2 of the last.
    ``config`` pins the joined launches' config (one of CONFIGS; tests), ``programs`` their
    persistent grid's size (tests).  The output is channels_last, as block_forward's.

    The first call per device, shapes and config (not one captured in a CUDA graph) waits for the
    chain and raises RuntimeError where a joined launch's wait gave up (see WAIT_LIMIT_US), so
    that a first-use parity check drops the candidate rather than use its wrong result."""
    _common.check_dtype(x.dtype)
    blocks = _check_blocks(x, blocks)
    _check_config(config)
    if len(blocks) == 1:
        return block_forward(x, *blocks[0], pre_pool=pre_pool)[0]
    hw = None
    if pre_pool is not None:
        hw = tuple(geometry.pool_out(size, *pre_pool) for size in x.shape[2:])
    with torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext():
        w_red, b_red, w_pool, b_pool, w3, b3, w5, b5 = blocks[0]
        mid, scratch = geometry.empty_outputs(x, w_red, w_pool, w3, w5, hw)
        # One sync buffer for the joined launches (all of M pixel rows), zeroed by launch 1 here
        # (where there are pixels: with none, nothing launches, and nothing is waited for).
        pixels = mid.shape[0] * mid.shape[2] * mid.shape[3]
        sync = _new_sync_buffer(x.device, _sync_size(pixels))
        launch_reduce_pool(x, w_red, b_red, w_pool, b_pool, mid, scratch, counters=sync, pre_pool=pre_pool)
        for i in range(1, len(blocks)):
            ch1a = geometry.block_channels(w_red, w_pool, w3, w5).ch1
            conv_a = (w3, b3, w5, b5)
            w_red, b_red, w_pool, b_pool, w3, b3, w5, b5 = blocks[i]
            out, scratch_b = geometry.empty_outputs(mid, w_red, w_pool, w3, w5)
            counters = None
            if i == len(blocks) - 1:  # the standalone launch 2 that follows may split K
                n_counters = split_k_counters(scratch_b, w3, w5)
                if n_counters is not None:
                    counters = torch.empty(n_counters, dtype=torch.int32, device=x.device)
            launch_joined(
                scratch, *conv_a, mid, ch1a, w_red, b_red, w_pool, b_pool, out, scratch_b,
                counters=counters, sync=sync, config=config, programs=programs,
            )  # fmt: skip
            mid, scratch = out, scratch_b
        ch1 = geometry.block_channels(w_red, w_pool, w3, w5).ch1
        launch_branch_convs(scratch, w3, b3, w5, b5, mid, ch1, counters=counters)
        if (
            pixels
            and not (x.is_cuda and torch.cuda.is_current_stream_capturing())
            and not compile_only.compiling_only()
        ):
            key = _check_key(x, blocks, pre_pool, config, programs)
            if _CHECKED.get(key) is None:
                _raise_on_wait_error(sync)
                _CHECKED[key] = True
    return mid
