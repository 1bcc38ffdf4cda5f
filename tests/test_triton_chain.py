"""A chain of blocks in n + 1 Triton launches (backends/triton/chain.py): launch 2 of block i and
launch 1 of block i+1 joined into one kernel whose launch-1 tiles wait on per-pixel-tile
dependency counters.

The reference is the blocks of tests/block_cases.py applied one after the other in float64 from the
same weights (on F.max_pool2d of the input where a pool comes first); outputs are NaN-poisoned (the
``poisoned`` fixture), so an element no kernel writes fails.  With the same tiles the chain must
equal block_forward called block by block bit for bit: every output element is computed by one
tile with the same arithmetic.  Under the interpreter programs run one after the other, so the
ticket order decides which tiles exist when a launch-1 tile runs.  Every order a GPU may run hands
out each launch-1 tile after everything it reads, so there a wait range too short goes unnoticed:
the test-only orders hand tiles out one step too early for one wait each, where the correct wait
must give up (and the launcher raise, naming the role), and one too short would not.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from uninterpreted import run_python

from inception_fast.testing import TOLERANCE, check_close, reduced_precision_bound

pytest.importorskip("triton")

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
interpreter_only = pytest.mark.skipif(not INTERPRET, reason="CPU tests need TRITON_INTERPRET=1 set before import")

from block_cases import block_reference, make_block  # noqa: E402
from launch_observer import observe_launches  # noqa: E402
from unwritten_reads import assert_bands_untouched, guarded  # noqa: E402

from inception_fast.backends.triton import block as tb  # noqa: E402
from inception_fast.backends.triton import branch_convs, chain, reduce_pool  # noqa: E402

CL = torch.channels_last
WEIGHTS = ("w_red", "b_red", "w_pool", "b_pool", "w3", "b3", "w5", "b5")
MAXPOOL23 = (3, 2, 0, True)
# (in, ch1, ch3red, ch3, ch5red, ch5, pool) of consecutive blocks: each block's output (ch1 + ch3 +
# ch5 + pool) is the next one's input; odd widths that fill no tile.
CHAIN = [(13, 5, 7, 9, 3, 6, 4), (24, 6, 8, 10, 4, 6, 5), (27, 7, 5, 11, 6, 9, 3)]


def make_chain(n_blocks, n, h, w, dtype=torch.float32, seed=0):
    """(x, [block weights]) for the first n_blocks of CHAIN, x (n, 13, h, w)."""
    blocks = []
    for i, cfg in enumerate(CHAIN[:n_blocks]):
        b = make_block(cfg, k5=3 if i % 2 else 5, n=n, h=h, w=w, dtype=dtype, seed=seed + i)
        if i == 0:
            x = b["x"]
        blocks.append(tuple(b[k] for k in WEIGHTS))
    return x, blocks


def reference(x, blocks, pre_pool=None):
    """The blocks one after the other with plain PyTorch ops in x's dtype."""
    if pre_pool is not None:
        k, s, p, ceil = pre_pool
        x = F.max_pool2d(x, k, s, p, ceil_mode=ceil).contiguous(memory_format=CL)
    for b in blocks:
        x = block_reference(x, *b)[0]
    return x


def two_launch_chain(x, blocks, pre_pool=None, config=None):
    """block_forward block by block; with ``config`` (a chain config) both launches pinned to its tiles."""
    if config is None:
        for i, b in enumerate(blocks):
            x = tb.block_forward(x, *b, pre_pool=pre_pool if i == 0 else None)[0]
        return x
    import triton

    kw = config.kwargs
    l1 = triton.Config(
        {k: kw[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "BLOCK_M_POOL", "BLOCK_K_POOL", "POOL_STAGES")},
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )
    l2 = triton.Config(
        {"BLOCK_M": kw["BLOCK_M2"], "BLOCK_N": kw["BLOCK_N2"], "BLOCK_K": kw["BLOCK_K2"]},
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )
    from inception_fast import geometry

    for i, (w_red, b_red, w_pool, b_pool, w3, b3, w5, b5) in enumerate(blocks):
        # The first block takes the pre-pool (folded into its launch 1): its outputs are pooled-size.
        pool = pre_pool if i == 0 else None
        hw = None if pool is None else tuple(geometry.pool_out(s, *pool) for s in x.shape[2:])
        out, scratch = geometry.empty_outputs(x, w_red, w_pool, w3, w5, hw)
        # The chain's first launch 1 is the ordinary one with its interpreter tile; the joined ones pinned.
        reduce_pool.launch_reduce_pool(
            x, w_red, b_red, w_pool, b_pool, out, scratch, config=l1 if i else None, pre_pool=pool
        )
        ch1 = geometry.block_channels(w_red, w_pool, w3, w5).ch1
        last = i == len(blocks) - 1
        branch_convs.launch_branch_convs(scratch, w3, b3, w5, b5, out, ch1, config=None if last else l2)
        x = out
    return x


def check_chain(x, blocks, out, pre_pool=None, what="chain"):
    ref64 = reference(x.double(), [tuple(t.double() for t in b) for b in blocks], pre_pool)
    assert out.shape == ref64.shape and out.is_contiguous(memory_format=CL) and out.dtype == x.dtype
    assert ref64.std() > 0.1, "reference output is near zero: the comparison could not fail"
    if x.dtype == torch.float32:
        return check_close(out, ref64, TOLERANCE["fp32"], what)
    return check_close(out, ref64, reduced_precision_bound(reference(x, blocks, pre_pool), ref64), what)


def garbage_sync_buffers(monkeypatch):
    """The sync buffers chain_forward allocates from now on, each filled with 7s rather than left
    uninitialized, between guard bands (unwritten_reads.guarded): the chain's first launch 1 must
    zero it, and no launch may store past it (a list, appended to per call; its ``bands`` attribute
    the guard bands)."""
    bufs = GuardedBuffers()

    def full_of_sevens(device, n):
        bufs.append(guarded(n, torch.int32, device, bufs.bands, guard=64).fill_(7))
        return bufs[-1]

    monkeypatch.setattr(chain, "_new_sync_buffer", full_of_sevens)
    return bufs


class GuardedBuffers(list):
    """garbage_sync_buffers' buffers and their guard bands."""

    def __init__(self):
        super().__init__()
        self.bands = []


def assert_sync_zero(bufs):
    """Every joined launch left its sync buffer zeroed (and set no error flag), and stored nothing
    outside it (where ``bufs`` came from garbage_sync_buffers)."""
    assert bufs, "chain_forward allocated no sync buffer"
    for buf in bufs:
        assert not buf.any(), f"the joined launches left the sync buffer non-zero: {buf[:40].tolist()}"
    if isinstance(bufs, GuardedBuffers):
        assert_bands_untouched(bufs.bands)


# (blocks, batch, H, W, pre_pool, dtype): odd sizes; a 3x3 map (every pixel's window touches an
# edge); a pool before the first block in ceil mode (7x5 -> 3x2).
CASES = [
    (2, 1, 5, 7, None, torch.float32),
    (3, 2, 3, 3, None, torch.float32),
    (2, 3, 7, 5, MAXPOOL23, torch.float32),
    (3, 1, 7, 5, MAXPOOL23, torch.float16),
    (2, 3, 3, 5, None, torch.float16),
]


@interpreter_only
@pytest.mark.parametrize("n_blocks,n,h,w,pre_pool,dtype", CASES)
def test_chain_matches_reference_and_blocks(n_blocks, n, h, w, pre_pool, dtype, poisoned, monkeypatch):
    """The interpreter's tiles (the two launches' own), two programs: equal to block_forward block by
    block, bit for bit, and within the tolerance table of the float64 reference; the sync buffer,
    handed over full of garbage, zeroed by the first launch 1 and left zeroed."""
    x, blocks = make_chain(n_blocks, n, h, w, dtype, seed=h * w + n)
    sync = garbage_sync_buffers(monkeypatch)
    out = chain.chain_forward(x, blocks, pre_pool=pre_pool)
    check_chain(x, blocks, out, pre_pool, f"{n_blocks} blocks {n}x{h}x{w} pool {pre_pool} {dtype}")
    assert torch.equal(out, two_launch_chain(x, blocks, pre_pool)), "chain differs from block_forward block by block"
    assert_sync_zero(sync)


def small_tile_config(order, persistent=1):
    """16-row tiles: several launch-2 pixel tiles per image, so the waits span tile boundaries."""
    return chain._config((16, 16, 16), (16, 16, 16, 16, 16, 1), order, 4, 1, persistent=persistent)


@interpreter_only
@pytest.mark.parametrize("order,persistent,programs,n", [(0, 1, 3, 1), (1, 1, 3, 2), (1, 0, None, 1), (5, 1, 3, 2)])
def test_orders_with_small_tiles(order, persistent, programs, n, poisoned, monkeypatch):
    """Producers first, interleaved and (test-only) descending, persistent (3 programs) or one
    ticket per program, with 16-row tiles on one or two images (7 pixels a row): waits across
    pixel-tile and image boundaries.  Every one of these orders hands out each launch-1 tile after
    everything it reads, so this checks the orders' bookkeeping (each tile runs once, and the right
    one: bit for bit the two launches pinned to the same tiles), not the waits' ranges (see
    test_a_wait_gives_up_on_a_missing_tile)."""
    x, blocks = make_chain(2, n, 5, 7, seed=3)
    config = small_tile_config(order, persistent)
    sync = garbage_sync_buffers(monkeypatch)
    out = chain.chain_forward(x, blocks, config=config, programs=programs)
    check_chain(x, blocks, out, what=f"order {order}")
    assert torch.equal(out, two_launch_chain(x, blocks, config=config))
    assert_sync_zero(sync)


# (test-only ORDER, config, (batch, H, W), the roles whose waits must give up): each order hands out
# every launch-1 row tile one step before one of its waits is met.
#  2: after the launch-2 pixel tile holding its own last row: the pool window's reach into the next
#     image row is missing.
#  3: after the pixel tile holding its last row + W, one pixel short of the window's reach (its last
#     pixel's bottom-right neighbour); with W 32 that pixel starts the next 16-row pixel tile.
#  4: after the pixel tile holding its first row, 32-row tiles over 16-row pixel tiles: the reduce
#     role's own second half (and the pool's window) are missing.
#  6: launch-2 pixel tiles last to first, each row tile after the one holding its own first row: the
#     pool window's reach into the image row above is missing (two images: across the boundary too).
#  7: likewise after the one holding its first row - W, one pixel short of the window's reach (its
#     first pixel's top-left neighbour); with W 16 that pixel ends the previous 16-row pixel tile.
WAIT_CASES = [
    (2, small_tile_config(2), (1, 5, 7), r"\(pool role\)"),
    (3, small_tile_config(3), (1, 3, 32), r"\(pool role\)"),
    (4, chain._config((16, 16, 16), (32, 16, 16, 16, 16, 1), 4, 4, 1), (1, 5, 7), r"\(reduce role and pool role\)"),
    (6, small_tile_config(6), (2, 3, 7), r"\(pool role\)"),
    (7, small_tile_config(7), (1, 3, 16), r"\(pool role\)"),
]


@interpreter_only
@pytest.mark.reads_unwritten  # rows no launch 2 has written yet: what the waits detect
@pytest.mark.parametrize("order,config,shape,roles", WAIT_CASES, ids=[f"order{c[0]}" for c in WAIT_CASES])
def test_a_wait_gives_up_on_a_missing_tile(order, config, shape, roles):
    """Under the interpreter (programs one after the other) a wait whose launch-2 tile has not run
    yet never sees it: with the correct row ranges the named roles' waits must give up and the
    launcher raise, naming them.  A wait range one row too short (or a missing wait) would not
    notice, read rows no launch 2 has written, and raise nothing or name other roles."""
    x, blocks = make_chain(2, *shape, seed=4)
    with pytest.raises(RuntimeError, match=roles + " ran before a launch-2 tile it reads was done"):
        chain.chain_forward(x, blocks, config=config, programs=2)


@interpreter_only
@pytest.mark.reads_unwritten  # rows no launch 2 has written yet: what the waits detect
@pytest.mark.parametrize("order,config,shape,roles", [WAIT_CASES[0], WAIT_CASES[2]], ids=["pool", "reduce"])
def test_a_tile_whose_wait_gave_up_is_nan(order, config, shape, roles, monkeypatch):
    """A tile whose wait gave up has read rows not yet written: it stores NaN over its whole output
    tile, so a give-up the host does not check (every call after a shape's first) shows in the
    logits instead of passing as a plausible wrong value.  With the launcher's raise switched off:
    NaN in the output only in the failing role's channels (branch 1 and the reductions feeding
    branches 2 and 3 for the reduce role; the pool branch for the pool role), none elsewhere."""
    monkeypatch.setattr(chain, "_raise_on_wait_error", lambda sync: None)
    x, blocks = make_chain(2, *shape, seed=4)
    out = chain.chain_forward(x, blocks, config=config, programs=2)
    n_pool = blocks[1][2].shape[0]
    nan = out.isnan().flatten(2).any(-1).any(0)  # per channel
    assert nan[-n_pool:].all()  # the pool role gives up in both cases
    assert nan[:-n_pool].all() if "reduce" in roles else not nan[:-n_pool].any()


@interpreter_only
def test_the_error_flag_names_the_roles(monkeypatch):
    """The launcher's reading of the error flag: nothing where it is clear; else a RuntimeError
    naming the roles whose waits gave up, on a GPU the time-out (the interpreter's wording is
    test_a_wait_gives_up_on_a_missing_tile's)."""
    from inception_fast.backends.triton import _common

    sync = torch.zeros(chain._sync_size(16), dtype=torch.int32)
    chain._raise_on_wait_error(sync)
    sync[chain.ERROR.value] = chain.REDUCE_WAIT_FAILED.value | chain.POOL_WAIT_FAILED.value
    monkeypatch.setattr(_common, "INTERPRET", False)
    with pytest.raises(RuntimeError, match=r"\(reduce role and pool role\) waited more than 2 s .* gave up"):
        chain._raise_on_wait_error(sync)


@interpreter_only
def test_the_error_flag_is_read_on_the_first_call_per_config(monkeypatch):
    """chain_forward reads the error flag after the chain (a host sync on a GPU) on its first call
    per device, shapes, pinned config and persistent grid size, not on a repeat (the interpreter's
    launcher reads it after each joined launch as well): a config or grid first seen is checked
    even where another one already ran on the same shapes."""
    from inception_fast.caches import LRUDict

    reads = []
    real = chain._raise_on_wait_error

    def counted(sync):
        reads.append(sync)
        real(sync)

    monkeypatch.setattr(chain, "_raise_on_wait_error", counted)
    monkeypatch.setattr(chain, "_CHECKED", LRUDict())
    x, blocks = make_chain(2, 1, 3, 5, seed=12)
    pinned = ((None, None), (small_tile_config(0), None), (small_tile_config(0), 3), (small_tile_config(1), 3))
    for config, programs in pinned:
        for first in (True, False):
            reads.clear()
            chain.chain_forward(x, blocks, config=config, programs=programs)
            assert len(reads) == 1 + first, f"config {config} programs {programs}: {len(reads)} reads, first {first}"


@interpreter_only
def test_n_plus_one_launches_and_no_other_kernels(monkeypatch):
    """Three blocks: launch 1, two joined launches, launch 2; no cat, no memset, only allocations
    (the sync buffer too: launch 1 zeroes it).  Run twice: the same result."""
    x, blocks = make_chain(3, 1, 3, 4, seed=7)
    before = tb.launch_count()
    out, aten_ops, launched = observe_launches(lambda: chain.chain_forward(x, blocks), monkeypatch)
    assert tb.launch_count() - before == 4 and len(launched) == 4
    assert launched[0] in (reduce_pool._reduce_pool_kernel, reduce_pool._tuned_kernel)
    assert launched[1] is chain._joined_kernel and launched[2] is chain._joined_kernel
    assert launched[3] in (branch_convs._branch_convs_kernel, branch_convs._tuned_kernel)
    allowed = {"aten.empty.memory_format", "aten.empty_strided.default"}
    assert aten_ops and set(aten_ops) <= allowed, f"unexpected aten ops: {sorted(set(aten_ops) - allowed)}"
    check_chain(x, blocks, out)
    assert torch.equal(chain.chain_forward(x, blocks), out)


@interpreter_only
def test_joined_launch_zeroes_the_next_split_k_counters(poisoned):
    """The joined launch zeroes the split-K counters of the standalone launch 2 that follows it (as
    launch 1 does in block_forward), so the chain needs no memset."""
    from inception_fast import geometry

    x, blocks = make_chain(2, 1, 3, 5, seed=8)
    w_red, b_red, w_pool, b_pool, w3, b3, w5, b5 = blocks[0]
    mid, scratch = geometry.empty_outputs(x, w_red, w_pool, w3, w5)
    reduce_pool.launch_reduce_pool(x, w_red, b_red, w_pool, b_pool, mid, scratch)
    ch1 = geometry.block_channels(w_red, w_pool, w3, w5).ch1
    w_red2, b_red2, w_pool2, b_pool2, *_ = blocks[1]
    out, scratch2 = geometry.empty_outputs(mid, w_red2, w_pool2, *blocks[1][4::2])
    counters = torch.full((2064,), 7, dtype=torch.int32)  # more than one 1024-wide step, 2 programs
    sync = torch.zeros(chain._sync_size(x.shape[0] * x.shape[2] * x.shape[3]), dtype=torch.int32)
    chain.launch_joined(
        scratch, w3, b3, w5, b5, mid, ch1, w_red2, b_red2, w_pool2, b_pool2, out, scratch2, counters, sync
    )
    assert not counters.any()
    assert_sync_zero([sync])


@interpreter_only
def test_one_block_is_block_forward():
    x, blocks = make_chain(1, 2, 3, 5, seed=9)
    before = tb.launch_count()
    out = chain.chain_forward(x, blocks, pre_pool=(2, 2, 0, True))
    assert tb.launch_count() - before == 2
    assert torch.equal(out, tb.block_forward(x, *blocks[0], pre_pool=(2, 2, 0, True))[0])


@interpreter_only
def test_an_empty_batch_is_an_empty_output(monkeypatch):
    """No images: nothing launches, the output is the last block's, empty, and nothing is waited for
    (the sync buffer, which only a launch zeroes, may hold anything: here a stale error flag)."""
    x, blocks = make_chain(2, 0, 3, 5, seed=4)
    monkeypatch.setattr(chain, "_new_sync_buffer", lambda device, n: torch.full((n,), 7, dtype=torch.int32))
    out = chain.chain_forward(x, blocks, pre_pool=(2, 2, 0, True))
    want = tb.block_forward(tb.block_forward(x, *blocks[0], pre_pool=(2, 2, 0, True))[0], *blocks[1])[0]
    assert out.shape == want.shape and out.shape[0] == 0 and out.is_contiguous(memory_format=torch.channels_last)


@interpreter_only
def test_bad_input_names_the_problem():
    x, blocks = make_chain(2, 1, 3, 3)
    with pytest.raises(ValueError, match="block 1 takes 23 input channels.*block 0.s output has 24 channels"):
        bad = list(blocks)
        bad[1] = tuple(t[:, :-1] if i in (0, 2) else t for i, t in enumerate(bad[1]))  # w_red, w_pool: 23 inputs
        chain.chain_forward(x, bad)
    with pytest.raises(ValueError, match="block 0 takes 13 input channels.*the input x has 12"):
        chain.chain_forward(x[:, :12], blocks)
    with pytest.raises(ValueError, match="at least one block"):
        chain.chain_forward(x, [])
    with pytest.raises(ValueError, match="block 1: every weight must be a torch.float32 tensor"):
        chain.chain_forward(x, [blocks[0], tuple(t.double() for t in blocks[1])])
    with pytest.raises(ValueError, match="block 1: every weight must be a torch.float32 tensor on cpu, got .* on meta"):
        chain.chain_forward(x, [blocks[0], tuple(t.to("meta") for t in blocks[1])])
    with pytest.raises(ValueError, match=r"block 1 takes 24 input channels .*w_pool \(5, 23\)"):
        bad = list(blocks)
        bad[1] = (*bad[1][:2], bad[1][2][:, :-1], *bad[1][3:])  # w_pool alone: 23 inputs
        chain.chain_forward(x, bad)
    with pytest.raises(ValueError, match="block 0: expected"):
        chain.chain_forward(x, [blocks[0][:7], blocks[1]])
    with pytest.raises(TypeError, match="float32, float16 and bfloat16"):
        chain.chain_forward(x.double(), blocks)
    with pytest.raises(ValueError, match="BLOCK_M_POOL must divide BLOCK_M"):
        chain.chain_forward(x, blocks, config=chain._config((16, 16, 16), (32, 16, 16, 24, 16, 1), 0, 4, 1))


@interpreter_only
def test_test_only_orders_are_refused_off_the_interpreter(monkeypatch):
    """A test-only ORDER makes tiles wait on later tickets: outside the interpreter (where such a
    wait could spin until it gives up) chain_forward refuses it before launching anything."""
    from inception_fast.backends.triton import _common

    x, blocks = make_chain(2, 1, 3, 3)
    monkeypatch.setattr(_common, "INTERPRET", False)
    before = tb.launch_count()
    for order in range(2, 8):
        with pytest.raises(ValueError, match=f"ORDER {order} is a test-only ticket order.*ORDER must be 0 or 1"):
            chain.chain_forward(x, blocks, config=small_tile_config(order))
    assert tb.launch_count() == before


# Tiles the other tests leave out: the pool role's sub-row parts (BLOCK_M_POOL < BLOCK_M, several
# pool tickets per row tile) and a W at which the interleaved order's reach W + 1 decides where a
# row tile goes (with W 7 and 16-row tiles, a reach one pixel shorter places every tile the same).
SUBTILE_L1 = (32, 16, 16, 16, 16, 1)  # BLOCK_M 32, two 16-row pool parts per row tile
L2_16 = (16, 16, 16)


@interpreter_only
@pytest.mark.parametrize(
    "order,persistent,programs,l2,l1,shape",
    [
        (1, 1, 3, L2_16, (16, 16, 16, 16, 16, 1), (1, 3, 16)),  # reach W + 1 = 17: one more pixel than a tile
        (1, 1, 3, L2_16, SUBTILE_L1, (2, 3, 16)),
        (0, 0, None, L2_16, SUBTILE_L1, (1, 5, 7)),  # one ticket per program: the grid counts the pool parts
        (5, 1, 3, L2_16, (16, 16, 16, 16, 16, 1), (1, 3, 16)),  # descending, the window's reach up
        # 17 launch-2 pixel tiles: more counters than one 16-counter reset vector, the sync buffer's
        # size (a counter per 16 rows) then exceeds its minimum of 48; 64-row launch-1 tiles keep it short.
        (0, 1, 3, L2_16, (64, 32, 32, 64, 16, 1), (1, 16, 17)),
        # Launch 2's tiles taller and wider than launch 1's, one ticket per program: the grid counts
        # launch 1's row and column tiles with its own tile (18 reductions: two 16-wide tiles).
        (0, 0, None, (32, 32, 16), (16, 16, 16, 16, 16, 1), (1, 5, 7)),
    ],
    ids=[
        "order1-W16",
        "order1-pool-parts",
        "order0-pool-parts-one-ticket",
        "order5-W16",
        "order0-17-pixel-tiles",
        "order0-l2-wider-one-ticket",
    ],
)
def test_orders_at_the_window_reach_and_pool_parts(order, persistent, programs, l2, l1, shape, poisoned, monkeypatch):
    """The interleaved (and descending) orders where a row tile's pool window reaches exactly one
    pixel into the next (previous) launch-2 pixel tile: placed one pixel too early, its wait gives
    up under the interpreter and the launcher raises; and 32-row launch-1 tiles whose pool role
    runs as two 16-row parts (each part's own rows, every part handed out, the one-ticket-per-
    program grid counting them); launch-2 tiles larger than launch 1's (the grid counts each role's
    tiles with its own tile sizes); 17 launch-2 pixel tiles (the sync buffer holds every counter the
    reset's vector stores zero).  Bit for bit the two launches pinned to the same tiles."""
    x, blocks = make_chain(2, *shape, seed=11)
    config = chain._config(l2, l1, order, 4, 1, persistent=persistent)
    sync = garbage_sync_buffers(monkeypatch)
    out = chain.chain_forward(x, blocks, config=config, programs=programs)
    check_chain(x, blocks, out, what=f"order {order} l2 {l2} l1 {l1} {shape}")
    assert torch.equal(out, two_launch_chain(x, blocks, config=config))
    assert_sync_zero(sync)


@interpreter_only
@pytest.mark.reads_unwritten  # rows no launch 2 has written yet: what the waits detect
def test_a_failed_tile_is_nan_over_exactly_its_rows_and_channels(monkeypatch):
    """ORDER 4 with 32-row launch-1 tiles over 16-row launch-2 tiles on 35 pixels: row tile 0 runs
    after pixel tile 0 only, so its reduce and pool waits give up; row tile 1 runs after all of
    them.  With the buffers filled with a finite value (so what a failed tile computed from
    unwritten rows is finite) and the raise switched off: NaN over rows 0-31 of every channel the
    failed tile writes (branch 1 and the pool branch of the block's output, every column of its
    scratch), and nowhere in rows 32-34."""
    from inception_fast import geometry

    real = geometry.empty_outputs
    bufs = []

    def finite_outputs(*args):
        got = real(*args)
        for b in got:
            b.fill_(0.25)
        bufs.append(got)
        return got

    monkeypatch.setattr(geometry, "empty_outputs", finite_outputs)
    monkeypatch.setattr(chain, "_raise_on_wait_error", lambda sync: None)
    x, blocks = make_chain(2, 1, 5, 7, seed=4)
    config = chain._config((16, 16, 16), SUBTILE_L1, 4, 4, 1)
    out = chain.chain_forward(x, blocks, config=config, programs=2)
    assert len(bufs) == 2
    scratch_b = bufs[1][1]
    w_red, _, w_pool, _, w3, _, w5, _ = blocks[1]
    ch1 = geometry.block_channels(w_red, w_pool, w3, w5).ch1

    def rows(t):  # (M, C): one row per pixel
        return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])

    n_pool = w_pool.shape[0]
    for name, t in (("scratch", rows(scratch_b)), ("branch 1", rows(out)[:, :ch1]), ("pool", rows(out)[:, -n_pool:])):
        assert t.shape[0] == 35
        assert t[:32].isnan().all(), f"{name}: the failed tile's rows are not NaN everywhere"
        assert not t[32:].isnan().any(), f"{name}: NaN outside the failed tile's rows"


# Channel widths that are multiples of 2 but for one value: the launcher's alignment units (the
# largest power of two dividing every width / row stride a kernel multiplies back) must see it.
# (in, ch1, ch3red, ch3, ch5red, ch5, pool) of two chained blocks.
UNIT_CHAINS = {
    # block 1's pool branch starts at channel 4 + 5 + 4 = 13 (odd); its other launch-1 widths even.
    "pool-col0-odd": [(16, 4, 4, 6, 2, 4, 2), (16, 4, 4, 5, 2, 4, 2)],
    # block 1's scratch is 4 + 1 = 5 channels wide (odd rows); block 0's scratch and both outputs even.
    "scratch-b-odd": [(16, 4, 4, 6, 2, 4, 2), (16, 4, 4, 6, 1, 4, 2)],
}


@interpreter_only
@pytest.mark.parametrize("name", list(UNIT_CHAINS))
def test_alignment_units_see_the_one_odd_width(name, poisoned):
    """Even channel counts everywhere but one (the next block's pool column, or its scratch's row
    stride): the joined launch's units fall to 1, else that offset is rounded down to even."""
    blocks = []
    for i, cfg in enumerate(UNIT_CHAINS[name]):
        b = make_block(cfg, k5=3, n=1, h=3, w=5, seed=20 + i)
        if i == 0:
            x = b["x"]
        blocks.append(tuple(b[k] for k in WEIGHTS))
    out = chain.chain_forward(x, blocks)
    check_chain(x, blocks, out, what=name)
    assert torch.equal(out, two_launch_chain(x, blocks))


@interpreter_only
@pytest.mark.parametrize("persistent,programs", [(0, None), (1, 3)])
def test_a_3x3_branch_of_whole_column_tiles(persistent, programs, poisoned, monkeypatch):
    """Block 0's 3x3 branch exactly one 16-wide column tile (ch3 = BLOCK_N2): launch 2's column
    tiles in the joined launch are the one 3x3 tile, then the kxk tiles; one ticket per program (the
    grid counts them) or persistent."""
    blocks = []
    for i, cfg in enumerate([(16, 4, 4, 16, 2, 4, 2), (26, 4, 4, 6, 2, 4, 2)]):
        b = make_block(cfg, k5=5, n=1, h=3, w=5, seed=30 + i)
        if i == 0:
            x = b["x"]
        blocks.append(tuple(b[k] for k in WEIGHTS))
    config = small_tile_config(0, persistent)
    sync = garbage_sync_buffers(monkeypatch)
    out = chain.chain_forward(x, blocks, config=config, programs=programs)
    check_chain(x, blocks, out, what=f"persistent {persistent}")
    assert torch.equal(out, two_launch_chain(x, blocks, config=config))
    assert_sync_zero(sync)


@interpreter_only
def test_host_checks_of_the_joined_launch():
    """Refused before anything launches: a pinned config with tiles under 16 rows (the sync buffer
    has a counter per 16 rows), a sync buffer too short or not int32, and a block whose w_red has
    fewer rows than its w3 and w5 read."""
    from inception_fast import geometry

    x, blocks = make_chain(2, 1, 3, 5)
    before = tb.launch_count()
    for l2, l1 in (((8, 16, 16), (16, 16, 16, 16, 16, 1)), ((16, 16, 16), (8, 16, 16, 8, 16, 1))):
        with pytest.raises(ValueError, match="must be at least 16"):
            chain.chain_forward(x, blocks, config=chain._config(l2, l1, 0, 4, 1))
    bad = list(blocks)
    w_red, b_red = bad[1][0], bad[1][1]
    bad[1] = (w_red[:10], b_red[:10], *bad[1][2:])  # 10 rows: ch3red + ch5red = 12 needed
    with pytest.raises(ValueError, match="block 1: w_red has 10 rows, fewer than the reductions w3/w5 read"):
        chain.chain_forward(x, bad)
    assert tb.launch_count() == before

    w_red, b_red, w_pool, b_pool, w3, b3, w5, b5 = blocks[0]
    mid, scratch = geometry.empty_outputs(x, w_red, w_pool, w3, w5)
    reduce_pool.launch_reduce_pool(x, w_red, b_red, w_pool, b_pool, mid, scratch)
    ch1 = geometry.block_channels(w_red, w_pool, w3, w5).ch1
    out, scratch2 = geometry.empty_outputs(mid, blocks[1][0], blocks[1][2], *blocks[1][4::2])
    n_sync = chain._sync_size(15)
    before = tb.launch_count()
    for sync in (
        torch.zeros(n_sync - 1, dtype=torch.int32),
        torch.zeros(n_sync, dtype=torch.int64),
        torch.zeros(n_sync, dtype=torch.int32, device="meta"),
    ):
        with pytest.raises(ValueError, match="the sync buffer must be int32"):
            chain.launch_joined(scratch, w3, b3, w5, b5, mid, ch1, *blocks[1][:4], out, scratch2, sync=sync)
    assert tb.launch_count() == before


# GoogLeNet's chains of one size (torchvision's variant): 3a>3b after maxpool2 (folded into 3a's
# launch 1), 4b>4c>4d, 5a>5b after maxpool4; shrunk to batch 2.
GPU_CHAINS = (
    (("inception3a", "inception3b"), 56, MAXPOOL23),
    (("inception4b", "inception4c", "inception4d"), 14, None),
    (("inception5a", "inception5b"), 14, (2, 2, 0, True)),
)


def gpu_chain(names, size, dtype, device, seed=0):
    from inception_fast.reference import BLOCK_CONFIGS

    blocks = []
    for i, name in enumerate(names):
        b = make_block(BLOCK_CONFIGS[name], n=2, h=size, w=size, dtype=dtype, device=device, seed=seed + i)
        if i == 0:
            x = b["x"]
        blocks.append(tuple(b[k] for k in WEIGHTS))
    return x, blocks


@pytest.mark.gpu
@pytest.mark.parametrize("i", range(len(chain.CONFIGS)))
def test_gpu_chain_bf16_every_config(i, gpu, monkeypatch):
    """Each joined-launch config pinned, on GoogLeNet's chains: within the tolerance table of the
    float64 reference, and bit for bit the two launches pinned to the same tiles."""
    config = chain.CONFIGS[i]
    sync = garbage_sync_buffers(monkeypatch)
    for names, size, pool in GPU_CHAINS:
        x, blocks = gpu_chain(names, size, torch.bfloat16, gpu, seed=i)
        out = chain.chain_forward(x, blocks, pre_pool=pool, config=config)
        check_chain(x, blocks, out, pool, f"{names} {config}")
        assert torch.equal(out, two_launch_chain(x, blocks, pool, config)), f"{names} {config}"
    assert_sync_zero(sync)


@pytest.mark.gpu
@pytest.mark.parametrize("programs", [1, 3])
def test_gpu_few_persistent_programs(programs, gpu, monkeypatch):
    """A persistent grid far smaller than the GPU (one program runs every tile in ticket order):
    the waits still end, and the result is the same."""
    config = next(c for c in chain.CONFIGS if c.kwargs["PERSISTENT"])
    x, blocks = gpu_chain(*GPU_CHAINS[1][:2], torch.bfloat16, gpu, seed=5)
    full = chain.chain_forward(x, blocks, config=config)
    sync = garbage_sync_buffers(monkeypatch)
    assert torch.equal(chain.chain_forward(x, blocks, config=config, programs=programs), full)
    assert_sync_zero(sync)


@pytest.mark.gpu
def test_gpu_chain_autotuned_graph_and_streams(gpu):
    """Autotuned: the same result eagerly three times in a row, from a CUDA graph replayed twice
    (its sync buffer zeroed by its first launch 1 on each replay), and on two streams at once (a
    sync buffer per call)."""
    x, blocks = gpu_chain(*GPU_CHAINS[1][:2], torch.bfloat16, gpu, seed=6)
    out = chain.chain_forward(x, blocks)
    check_chain(x, blocks, out, what="autotuned")
    for _ in range(2):
        assert torch.equal(chain.chain_forward(x, blocks), out)
    side = torch.cuda.Stream(gpu)
    side.wait_stream(torch.cuda.current_stream(gpu))
    with torch.cuda.stream(side):
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=side):
            captured = chain.chain_forward(x, blocks)
    for _ in range(2):
        captured.zero_()
        graph.replay()
        torch.cuda.synchronize(gpu)
        assert torch.equal(captured, out)
    streams = [torch.cuda.Stream(gpu) for _ in range(2)]
    results = []
    for s in streams:
        s.wait_stream(torch.cuda.current_stream(gpu))
        with torch.cuda.stream(s):
            results.append(chain.chain_forward(x, blocks))
    torch.cuda.synchronize(gpu)
    assert all(torch.equal(r, out) for r in results)


def test_sm90_compile_stats_of_the_batch_one_configs():
    """The joined launch's batch-1 configs (32-row tiles, 2 warps: no wgmma) on 3a>3b at batch 1,
    compiled for sm_90 (no GPU needed; a subprocess, since this process runs the interpreter), with
    the checks of test_triton.py's compile-stats test, which covers the other configs on 4b>4c."""
    import triton

    if not (Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas").exists():
        pytest.skip("this triton install ships no ptxas")
    from test_triton import check_joined_stats

    run = run_python("-m", "benchmarks.kernel_stats", "--json", "--batch", "1", "--block", "chain:inception3a")
    stats = json.loads(run.stdout)
    rows = stats["rows"]
    assert [(r["block"], r["launch"]) for r in rows] == [("inception3a>3b", "joined")] * len(
        chain.SMALL_PROBLEM_CONFIGS
    )
    for r in rows:
        check_joined_stats(r, stats["max_shared_bytes"])


def test_small_problem_configs_only_for_small_problems():
    """The autotuner's early prune: the batch-1 configs compete only up to SMALL_PROBLEM_PIXELS."""
    from inception_fast.backends.triton import _common

    small = {_common.config_name(c) for c in chain.SMALL_PROBLEM_CONFIGS}
    big = chain._prune_small_only(chain.CONFIGS, {"M": _common.SMALL_PROBLEM_PIXELS + 1})
    assert small and {_common.config_name(c) for c in big} == {_common.config_name(c) for c in chain.CONFIGS} - small
    assert chain._prune_small_only(chain.CONFIGS, {"M": _common.SMALL_PROBLEM_PIXELS}) == chain.CONFIGS
