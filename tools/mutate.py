"""Mutation check: plants typical kernel bugs in a copy of the tree and reports which the tests catch.

Each mutant is one textual replacement in one file (the original text must occur exactly once, so
a mutant whose target moved fails loudly instead of testing nothing).  For each mutant the tree is
copied to a temporary directory (git metadata and caches left out; the built inception_fast/_C*.so
goes along), the replacement is applied, the compiled extension is rebuilt there when the mutant
says so (csrc/ code that _C itself runs on the CPU), and a targeted pytest selection runs there the
way CI runs it: TRITON_INTERPRET=1, INCEPTION_FAST_BUILD_EXT=1.  The conv_gemm.cu mutants need no
rebuild: on the CPU that source runs only through the test emulator, which the tests compile.

A mutant is caught when its selection fails (pytest exit status 1).  All-passed or all-skipped is
"no"; a selection that collected nothing, or ran past the time limit, is reported as such.  The
script exits 1 unless every mutant it ran was caught.

    python tools/mutate.py --list
    python tools/mutate.py                      # every mutant
    python tools/mutate.py triton_pool_split cuda_vec_image_offset
    python tools/mutate.py -k cuda --clean      # also run each selection on the unmutated tree

Not part of the test suite (pytest collects tests/ only), but tests/test_tools.py checks that every
mutant still applies (its text occurs once in its file) and that its selection's test files exist.
Run it before closing kernel work and quote its table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

EMULATOR = ("tests/test_cuda_ext.py", "-k", "emulated")
TRITON_BLOCK = ("tests/test_triton.py", "-k", "not sm90")  # the sm_90 compile check tests no arithmetic
TRITON_STEM = ("tests/test_triton_stem.py",)
HOPPER = ("tests/test_hopper.py", "-x")
HOPPER_LAUNCH1 = ("tests/test_hopper_launch1.py", "-x")
TRITON_HEAD = ("tests/test_triton_head.py",)
TRITON_CONV_RELU = ("tests/test_triton_conv_relu.py",)
TRITON_CONV_ROWS = ("tests/test_triton_conv_rows.py",)
TRITON_BACKWARD = ("tests/test_backward.py", "-k", "triton")
ONEDNN = ("tests/test_onednn.py",)
# The extension's CPU max pool: its parity tests (both forms) and the model's measured pools.
CPU_MAX_POOL = ("tests/test_cuda_ext.py", "-k", "cpu_max_pool or cpu_model_pools")
# The pool folded into launch 1: its kernel and op tests (the model-level ones run the same kernels).
TRITON_FOLD = ("tests/test_triton_fold.py", "-k", "fp32 or fp16 or nan")
# Launch 1's pool role with its K split.
TRITON_POOL_SPLIT = ("tests/test_triton_pool_split.py", "-k", "fp32 or nan")
# Launch 2 of a block and launch 1 of the next joined in one kernel (chain.py).
TRITON_CHAIN = ("tests/test_triton_chain.py", "-k", "not sm90")
# The precompile: compile-only pass, measured choices inside it, the workers and their cache keys.
PRECOMPILE = ("tests/test_precompile.py",)
# Measured candidates left out (INCEPTION_FAST_SKIP_CANDIDATES) or blamed for a lost CUDA context.
FAULTS = ("tests/test_choice_store.py",)
SUITE_FAULTS = (
    "tests/test_benchmarks_quick.py",
    "-k",
    "faulting_candidate or candidate_fault or skipped_candidates or faulted",
)
# The BN-fold test (test_packing.py) first: under -x it fails before the slower block parity tests run.
# report.py's figures on synthetic rows (the tests that run no benchmark).
REPORT = (
    "tests/test_benchmarks_quick.py",
    "-k",
    "report_holds or report_keeps or report_lists or report_of_side or report_states or report_says or report_blocks",
)
# The work counts behind every roofline fraction (benchmarks/helpers/shapes.py, roofline.launch1_work).
WORK_COUNTS = ("tests/test_work_counts.py",)
FOLD = ("tests/test_packing.py", "tests/test_modules.py", "tests/test_ops.py", "-k", "block or low_precision or fold")


@dataclasses.dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    old: str
    new: str
    tests: tuple
    what: str
    rebuild: bool = False  # rebuild inception_fast._C in the copy (csrc/ code the CPU extension runs)


MUTANTS = [
    Mutant(
        "precompile_on_disk_always",
        "inception_fast/backends/triton/compile_pool.py",
        "        return name in (tc.get_cache_manager(digest).get_group(name) or {})\n",
        "        return True\n",
        PRECOMPILE,
        "every recorded binary is taken to be in Triton's cache already, so the workers compile none",
    ),
    Mutant(
        "precompile_hook_compiles",
        "inception_fast/backends/triton/compile_pool.py",
        "    return True  # do not compile\n",
        "    return None\n",
        PRECOMPILE,
        "the recording hook lets each warmup compile in this process (the pass compiles everything itself)",
    ),
    Mutant(
        "precompile_pass_launches",
        "inception_fast/backends/triton/_common.py",
        "        _record_launch(kernel, grid, args, kwargs)\n        return\n",
        "        _record_launch(kernel, grid, args, kwargs)\n",
        PRECOMPILE,
        "a compile-only pass also launches its kernels (on tensors nothing wrote)",
    ),
    Mutant(
        "precompile_pass_keeps_choice",
        "inception_fast/choices.py",
        "(runners[name](), None)[1])\n            return names[0]\n",
        "(runners[name](), None)[1])\n            self._choices[key] = Choice(names[0])\n            return names[0]\n",
        PRECOMPILE,
        "a measured choice remembers the unmeasured first candidate of a compile-only pass",
    ),
    Mutant(
        "precompile_pass_checks",
        "inception_fast/choices.py",
        "        if not checked and not compiling_only():\n",
        "        if not checked:\n",
        PRECOMPILE,
        "candidates are checked against the reference inside a compile-only pass (outputs nothing computed)",
    ),
    Mutant(
        "precompile_train_part_ignored",
        "inception_fast/precompiler.py",
        "        if m.training:\n",
        "        if m.training and not name:\n",
        PRECOMPILE,
        "a precompile runs its pass with a part of the model in train mode (its BatchNorm statistics updated)",
    ),
    Mutant(
        "precompile_worker_target",
        "inception_fast/backends/triton/compile_pool.py",
        "                driver.set_active(TargetOnlyDriver(*job.target))\n",
        "                driver.set_active(TargetOnlyDriver(job.target[0], 80, job.target[2]))\n",
        PRECOMPILE,
        "the workers compile for another target than the launches' (binaries under other cache keys)",
    ),
    Mutant(
        "defer_still_measures",
        "inception_fast/choices.py",
        "        if device.type not in self.measure_on or static_mode() or deferring():\n",
        "        if device.type not in self.measure_on or static_mode():\n",
        PRECOMPILE,
        "a forward whose measuring is deferred measures anyway (and waits for the workers' binaries)",
    ),
    Mutant(
        "defer_takes_first_candidate",
        "inception_fast/choices.py",
        "                return next((n for n in names if not _checked(runners[n])), names[0])\n",
        "                return names[0]\n",
        PRECOMPILE,
        "a deferred choice runs its first candidate (a kernel never checked on this shape) instead of the trusted one",
    ),
    Mutant(
        "defer_never_ends",
        "inception_fast/precompiler.py",
        "    if any(not f.done() for f in futures):\n",
        "    if futures:\n",
        PRECOMPILE,
        "forwards stay deferred after the workers are done (the model never runs its measured choices)",
    ),
    Mutant(
        "defer_ignores_env",
        "inception_fast/precompiler.py",
        "    defer = defer and _defer_enabled()\n    if any(",
        "    defer = defer\n    if any(",
        PRECOMPILE,
        "INCEPTION_FAST_DEFER_TUNING=0 does not stop the forwards from deferring",
    ),
    # -- the CUDA kernel (csrc/cuda/conv_gemm.cu), through the CPU emulator --------------------------
    Mutant(
        "cuda_vec_image_offset",
        "csrc/cuda/conv_gemm.cu",
        "const T* src = ok ? ld.a + static_cast<int64_t>(rows.a_m[i]) * ld.a_pixel_stride + k : ld.a;",
        "const T* src = ok ? ld.a + static_cast<int64_t>(rows.a_m[i] % (ld.H * ld.W)) * ld.a_pixel_stride + k : ld.a;",
        EMULATOR,
        "vectorised 1x1 loader drops the image offset (pixel index modulo H*W)",
    ),
    Mutant(
        "cuda_pool_padding",
        "csrc/cuda/conv_gemm.cu",
        "v[i] = ok ? neg_inf16(static_cast<const T*>(nullptr)) : make_uint4(0u, 0u, 0u, 0u);",
        "v[i] = make_uint4(0u, 0u, 0u, 0u);",
        EMULATOR,
        "vectorised max pool starts from 0 instead of -inf (padding acts as 0)",
    ),
    Mutant(
        "cuda_k_tail",
        "csrc/cuda/conv_gemm.cu",
        "const int num_kt = (ld.K + kBK - 1) / kBK;",
        "const int num_kt = ld.K / kBK;",
        EMULATOR,
        "K loop rounds down: the K tail is never accumulated",
    ),
    Mutant(
        "cuda_compile_error",
        "csrc/cuda/conv_gemm.cu",
        "ld.pad = ld.ksize / 2;",
        "ld.pad = ld.ksize / 2",
        EMULATOR,
        "a syntax error: the kernel does not compile",
    ),
    # -- the CPU kernels of the compiled extension (csrc/cpu/), rebuilt in the copy -------------------
    Mutant(
        "cpu_pool_padding",
        "csrc/cpu/reduce_pool.cpp",
        "at::max_pool2d(xf, {3, 3}, {1, 1}, {1, 1})",
        "at::max_pool2d(at::constant_pad_nd(xf, {1, 1, 1, 1}, 0), {3, 3}, {1, 1}, {0, 0})",
        ("tests/test_cuda_ext.py", "-k", "cpu"),
        "the CPU kernel's max pool pads with 0 instead of -inf",
        rebuild=True,
    ),
    Mutant(
        "cpu_max_pool_nan",
        "csrc/cpu/max_pool.cpp",
        "_mm512_cmp_ps_mask(v, acc, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q)",
        "_mm512_cmp_ps_mask(v, acc, _CMP_GT_OQ)",
        CPU_MAX_POOL,
        "the AVX-512 max pool drops ATen's NaN rule (a NaN tap loses to any later value)",
        rebuild=True,
    ),
    Mutant(
        "cpu_max_pool_ties",
        "csrc/cpu/max_pool.cpp",
        "_mm512_cmp_ps_mask(v, acc, _CMP_GT_OQ)",
        "_mm512_cmp_ps_mask(v, acc, _CMP_GE_OQ)",
        CPU_MAX_POOL,
        "the AVX-512 max pool keeps the last of equal maxima (the sign of a zero differs from ATen's)",
        rebuild=True,
    ),
    Mutant(
        "cpu_max_pool_portable_nan",
        "csrc/cpu/max_pool.cpp",
        "if (v > acc || std::isnan(v)) {",
        "if (v > acc) {",
        CPU_MAX_POOL,
        "the portable max pool drops ATen's NaN rule",
        rebuild=True,
    ),
    Mutant(
        "cpu_max_pool_tail",
        "csrc/cpu/max_pool.cpp",
        "static_cast<__mmask16>((1u << (c - c0)) - 1u)",
        "static_cast<__mmask16>((1u << (c - c0 - 1)) - 1u)",
        CPU_MAX_POOL,
        "the AVX-512 max pool's last partial vector leaves its last channel unwritten",
        rebuild=True,
    ),
    Mutant(
        "cpu_max_pool_window",
        "csrc/cpu/max_pool.cpp",
        "x1 = std::min<int64_t>(xo * s - p + k, w);",
        "x1 = std::min<int64_t>(xo * s - p + k - 1, w);",
        CPU_MAX_POOL,
        "the max pool's window misses its last column",
        rebuild=True,
    ),
    # -- Triton launch 1 (reduce_pool.py) -------------------------------------------------------------
    Mutant(
        "triton_pool_split",
        "inception_fast/backends/triton/reduce_pool.py",
        "row0 = pid_m * BLOCK_M + (part // n_pool_tiles) * BLOCK_M_POOL",
        "row0 = pid_m * BLOCK_M",
        TRITON_BLOCK,
        "every pool program of a split row tile computes the tile's first rows",
    ),
    Mutant(
        "triton_pool_grid",
        "inception_fast/backends/triton/reduce_pool.py",
        'pool_split = cfg["BLOCK_M"] // cfg["BLOCK_M_POOL"]',
        "pool_split = 1",
        TRITON_BLOCK,
        "the grid launches one pool program per row tile even where the pool role splits",
    ),
    Mutant(
        "triton_pool_padding",
        "inception_fast/backends/triton/reduce_pool.py",
        'tl.where(tap_ok[:, None], v.to(tl.float32), float("-inf"))',
        "tl.where(tap_ok[:, None], v.to(tl.float32), 0.0)",
        TRITON_BLOCK,
        "max pool padding reads as 0 instead of -inf",
    ),
    Mutant(
        "triton_branch1_mask",
        "inception_fast/backends/triton/reduce_pool.py",
        "is_branch1 = offs_n < ch1",
        "is_branch1 = offs_n <= ch1",
        TRITON_BLOCK,
        "off-by-one mask between branch 1's columns and the scratch's",
    ),
    # -- launch 1's pool role with its K split (reduce_pool.py, POOL_SPLIT_K > 1; _common.finish_tile)
    Mutant(
        "triton_pool_split_k_weights",
        "inception_fast/backends/triton/reduce_pool.py",
        "        b_ptrs += k_lo * stride_w_k\n",
        "",
        TRITON_POOL_SPLIT,
        "every split of the pool role multiplies its channels by the first channels' weights",
    ),
    Mutant(
        "triton_split_k_missed_slot",
        "inception_fast/backends/triton/_common.py",
        "for part in tl.static_range(SPLIT_K):",
        "for part in tl.static_range(SPLIT_K - 1):",
        TRITON_POOL_SPLIT,
        "the split-K sum leaves out the last split's partial tile",
    ),
    # -- launch 2 and the next block's launch 1 joined (chain.py) --------------------------------------
    Mutant(
        "triton_chain_no_wait",
        "inception_fast/backends/triton/chain.py",
        "for j in range(lo_row // BLOCK_M2, (hi_row - 1) // BLOCK_M2 + 1):",
        "for j in range(lo_row // BLOCK_M2, lo_row // BLOCK_M2):",
        TRITON_CHAIN,
        "launch-1 tiles of the joined launch wait for no launch-2 tile",
    ),
    Mutant(
        "triton_chain_pool_halo",
        "inception_fast/backends/triton/chain.py",
        "tl.minimum(row0 + BLOCK_M_POOL + W + 1, M),",
        "tl.minimum(row0 + BLOCK_M_POOL, M),",
        TRITON_CHAIN,
        "the pool role waits for its own rows only, not for the image row below that its window reads",
    ),
    Mutant(
        "triton_chain_no_reset",
        "inception_fast/backends/triton/chain.py",
        "for d0 in range(0, n_dep, 1024):",
        "for d0 in range(0, 0, 1024):",
        TRITON_CHAIN,
        "the last program of a joined launch leaves the dependency counters set for the next launch",
    ),
    Mutant(
        "triton_chain_give_up_not_nan",
        "inception_fast/backends/triton/chain.py",
        "        if failed != 0:  # as above\n",
        "        if failed == -1:  # as above\n",
        TRITON_CHAIN,
        "a pool tile whose wait gave up keeps what it computed from unwritten rows instead of NaN",
    ),
    Mutant(
        "triton_chain_pool_reach_short",
        "inception_fast/backends/triton/chain.py",
        "tl.minimum(row0 + BLOCK_M_POOL + W + 1, M),",
        "tl.minimum(row0 + BLOCK_M_POOL + W, M),",
        TRITON_CHAIN,
        "the pool role's wait stops one pixel short of its window's reach (its last pixel's bottom-right neighbour)",
    ),
    Mutant(
        "triton_chain_pool_no_lower_reach",
        "inception_fast/backends/triton/chain.py",
        "tl.maximum(row0 - W - 1, 0),",
        "tl.maximum(row0, 0),",
        TRITON_CHAIN,
        "the pool role's wait starts at its own first row, not at the image row above that its window reads",
    ),
    Mutant(
        "triton_chain_reduce_no_wait",
        "inception_fast/backends/triton/chain.py",
        "REDUCE_WAIT_FAILED, r0, tl.minimum(r0 + BLOCK_M, M)",
        "REDUCE_WAIT_FAILED, r0, r0",
        TRITON_CHAIN,
        "the reduce role waits for none of its rows (with the pool role's waits intact)",
    ),
    Mutant(
        "triton_chain_reduce_first_tile_only",
        "inception_fast/backends/triton/chain.py",
        "REDUCE_WAIT_FAILED, r0, tl.minimum(r0 + BLOCK_M, M)",
        "REDUCE_WAIT_FAILED, r0, r0 + 1",
        TRITON_CHAIN,
        "the reduce role waits only for the launch-2 pixel tile holding its first row",
    ),
    Mutant(
        "triton_chain_sync_not_zeroed",
        "inception_fast/backends/triton/chain.py",
        "launch_reduce_pool(x, w_red, b_red, w_pool, b_pool, mid, scratch, counters=sync, pre_pool=pre_pool)",
        "launch_reduce_pool(x, w_red, b_red, w_pool, b_pool, mid, scratch, pre_pool=pre_pool)",
        TRITON_CHAIN,
        "the chain's first launch 1 does not zero the (uninitialized) sync buffer",
    ),
    # -- the max pool folded into Triton launch 1 (reduce_pool.py, PRE_K > 1) ---------------------------
    Mutant(
        "triton_fold_pool_taps",
        "inception_fast/backends/triton/reduce_pool.py",
        "TAPS: tl.constexpr = 2 * PRE_S + PRE_K",
        "TAPS: tl.constexpr = 2 * PRE_S + PRE_K - 1",
        TRITON_FOLD,
        "the folded pool role's window misses its last row and column of pre-pool taps",
    ),
    Mutant(
        "triton_fold_pool_tail",
        "inception_fast/backends/triton/reduce_pool.py",
        "hi_r = tl.minimum(PRE_S * tl.minimum(hh + 1, H - 1) - PRE_PAD + PRE_K - 1, HI - 1)",
        "hi_r = tl.minimum(PRE_S * (hh + 1) - PRE_PAD + PRE_K - 1, HI - 1)",
        TRITON_FOLD,
        "the folded pool role's last row reads the rows a floor-mode pool drops",
    ),
    Mutant(
        "triton_fold_reduce_padding",
        "inception_fast/backends/triton/reduce_pool.py",
        "x_row = row_offsets(img, hh * PRE_S - PRE_PAD, ww * PRE_S - PRE_PAD, stride_x_n, stride_x_h, stride_x_w)",
        "x_row = row_offsets(img, hh * PRE_S, ww * PRE_S, stride_x_n, stride_x_h, stride_x_w)",
        TRITON_FOLD,
        "the folded reduce role's window starts without the pool's padding",
    ),
    Mutant(
        "triton_fold_nan",
        "inception_fast/backends/triton/reduce_pool.py",
        "pooled = tl.maximum(pooled, v.to(tl.float32), propagate_nan=tl.PropagateNan.ALL)",
        "pooled = tl.maximum(pooled, v.to(tl.float32))",
        TRITON_FOLD,
        "the folded pools' max drops NaN",
    ),
    # -- Triton launch 2 (branch_convs.py) and the shared pixel helpers ----------------------------------
    Mutant(
        "triton_split_k_chunk",
        "inception_fast/backends/triton/_common.py",
        "chunk = tl.cdiv(n_steps, SPLIT_K)",
        "chunk = n_steps // SPLIT_K",
        TRITON_BLOCK,
        "split-K shares round down: the last K steps are dropped when SPLIT_K does not divide them",
    ),
    Mutant(
        "triton_image_offset",
        "inception_fast/backends/triton/_common.py",
        "return img * s_n + hh.to(tl.int64) * s_h + ww.to(tl.int64) * s_w",
        "return hh.to(tl.int64) * s_h + ww.to(tl.int64) * s_w",
        TRITON_BLOCK,
        "row offsets drop the image term: every image reads and writes image 0",
    ),
    # -- the hopper backend's launch 2 with TMA (branch_convs_tma.py) ----------------------------------
    Mutant(
        "tma_tap_column",
        "inception_fast/backends/triton/branch_convs_tma.py",
        "a = a_desc.load([img, h0 + kh - KS // 2, w0 + kw - KS // 2, c0])",
        "a = a_desc.load([img, h0 + kh - KS // 2, w0 + kw - 1, c0])",
        HOPPER,
        "the TMA box's column offset assumes a 3x3: branch 3's 5x5 taps are one column off",
    ),
    Mutant(
        "tma_row_mask",
        "inception_fast/backends/triton/branch_convs_tma.py",
        "row_ok = (hh < H) & (ww < W)",
        "row_ok = hh < H",
        HOPPER,
        "the epilogue masks rows only: a rectangle wider than the image's edge writes into the next row",
    ),
    # -- the hopper backend's launch 1 with TMA (reduce_pool_tma.py) ---------------------------------
    Mutant(
        "tma1_k_offset",
        "inception_fast/backends/triton/reduce_pool_tma.py",
        "b = w_desc.load([n0, k * BLOCK_K])",
        "b = w_desc.load([n0, k])",
        HOPPER_LAUNCH1,
        "the weights' box is taken at K step k, not channel k * BLOCK_K: every K step after the first "
        "multiplies the wrong weights",
    ),
    # (The reduce role's epilogue is reduce_pool.py's _reduce_epilogue, shared by both launch 1s: the
    # two mutants below break both, and launch 1's tests with TMA must catch them.)
    Mutant(
        "tma1_relu_dropped",
        "inception_fast/backends/triton/reduce_pool.py",
        "y = tl.maximum(acc + bias[None, :], 0.0, propagate_nan=tl.PropagateNan.ALL).to(out_ptr.dtype.element_ty)",
        "y = (acc + bias[None, :]).to(out_ptr.dtype.element_ty)",
        HOPPER_LAUNCH1,
        "the reduce role's epilogue drops the ReLU",
    ),
    Mutant(
        "tma1_row_mask",
        "inception_fast/backends/triton/reduce_pool.py",
        "mask=row_ok[:, None] & (col_ok & ~is_branch1)[None, :],",
        "mask=(col_ok & ~is_branch1)[None, :],",
        HOPPER_LAUNCH1,
        "the reductions' store masks columns only: the last row tile writes past the last pixel of scratch",
    ),
    Mutant(
        "tma1_pool_tiles",
        "inception_fast/backends/triton/reduce_pool_tma.py",
        "n_cols = n_red_tiles + n_pool_tiles * POOL_SPLIT",
        "n_cols = n_red_tiles + n_pool_tiles",
        HOPPER_LAUNCH1,
        "the tile count forgets the pool parts of a row tile: configs with 64-row pool parts of "
        "128-row tiles leave half the pool branch unwritten",
    ),
    # -- Triton stem (stem.py) -------------------------------------------------------------------------
    Mutant(
        "triton_stem_pool_mask",
        "inception_fast/backends/triton/stem.py",
        "tap_ok = row_ok & (oh >= 0) & (oh < OH) & (ow >= 0) & (ow < OW)",
        "tap_ok = row_ok & (oh >= 0) & (oh <= OH) & (ow >= 0) & (ow < OW)",
        TRITON_STEM,
        "the stem's pool window takes a tap one row past the conv output",
    ),
    # -- the Triton block backward (backends/triton/block_backward.py) -------------------------------
    Mutant(
        "triton_bwd_tie_last",
        "inception_fast/backends/triton/block_backward.py",
        "beaten = tl.where(t < tp, ~(v < xp) & ~xp_nan,",
        "beaten = tl.where(t < tp, (v > xp) & ~xp_nan,",
        TRITON_BACKWARD,
        "a max-pool tie with an earlier tap does not take the argmax from p (ATen: the first maximum wins)",
    ),
    Mutant(
        "triton_bwd_reduction_mask",
        "inception_fast/backends/triton/block_backward.py",
        "    res = tl.where(r <= 0, 0.0, acc)",
        "    res = acc",
        TRITON_BACKWARD,
        "the reductions' ReLU (0 where scratch <= 0) is not applied to their gradient",
    ),
    Mutant(
        "triton_bwd_row_unit",
        "inception_fast/backends/triton/block_backward.py",
        "    s_s_n, s_s_h, s_s_w = s_s_n_div_unit * ROW_UNIT, s_s_h_div_unit * ROW_UNIT, s_s_w_div_unit * ROW_UNIT",
        "    s_s_n, s_s_h, s_s_w = s_s_n_div_unit * ROW_UNIT, s_s_h_div_unit * ROW_UNIT, s_s_w_div_unit",
        TRITON_BACKWARD,
        "launch A reads the scratch's column stride without multiplying its alignment unit back",
    ),
    Mutant(
        "triton_bwd_split_sum",
        "inception_fast/backends/triton/block_backward.py",
        "    for s in range(0, n_splits):",
        "    for s in range(0, n_splits - 1):",
        TRITON_BACKWARD,
        "the weight gradients' last pixel split is left out of the sum",
    ),
    # -- Triton head (head.py) -------------------------------------------------------------------------
    Mutant(
        "triton_head_pixel_tail",
        "inception_fast/backends/triton/head.py",
        "mask=(offs_p < hw)[:, None] & c_ok[None, :]",
        "mask=(offs_p < hw - 1)[:, None] & c_ok[None, :]",
        TRITON_HEAD,
        "the head's average pool drops the last pixel of every image",
    ),
    Mutant(
        "triton_head_k_tail",
        "inception_fast/backends/triton/head.py",
        "        k_ok = offs_k < C\n",
        "        k_ok = offs_k < C + 1\n",
        TRITON_HEAD,
        "the head's GEMM reads one channel past each image's means (the next image's first)",
    ),
    # -- Triton conv + bias + ReLU (conv_relu.py) -------------------------------------------------------
    Mutant(
        "triton_conv_relu_last_tile",
        "inception_fast/backends/triton/conv_relu.py",
        'return (_common.cdiv(m, cfg["BLOCK_M"]) * _common.cdiv(cout, cfg["BLOCK_N"]),)',
        'return (_common.cdiv(m, cfg["BLOCK_M"]) * _common.cdiv(cout, cfg["BLOCK_N"]) - 1,)',
        TRITON_CONV_RELU,
        "the conv's grid leaves out its last output tile",
    ),
    Mutant(
        "triton_conv_relu_padding",
        "inception_fast/backends/triton/conv_relu.py",
        "    if padding != ks // 2:",
        "    if padding > ks // 2:",
        TRITON_CONV_RELU,
        "the kernel accepts a 3x3 conv without padding and computes it 'same'-padded",
    ),
    Mutant(
        "triton_conv_relu_1x1_weight_unit",
        "inception_fast/backends/triton/_common.py",
        "    s_h, s_w = (0 if w.shape[d] == 1 else s for d, s in ((2, s_h), (3, s_w)))\n",
        "",
        ("tests/test_triton.py", "-k", "sm90"),
        "a 1x1 weight's kh/kw strides (1) enter W_UNIT (_common.weight_strides): conv2's weight loads lose cp.async",
    ),
    # -- BatchNorm folding and packing (packing.py) ------------------------------------------------------
    Mutant(
        "fold_in_weight_dtype",
        "inception_fast/packing.py",
        "work = torch.promote_types(w.dtype, torch.float32)",
        "work = w.dtype",
        FOLD,
        "BN folded in the weights' own dtype (fp16/bf16 models fold in fp16/bf16)",
    ),
    Mutant(
        "fold_without_eps",
        "inception_fast/packing.py",
        "inv_std = torch.rsqrt(var.to(work) + bn.eps)",
        "inv_std = torch.rsqrt(var.to(work))",
        FOLD,
        "BN fold forgets eps",
    ),
    # -- what makes the packed weights stale (packing.py, modules.py) -----------------------------------
    Mutant(
        "cache_ignores_optimizer_steps",
        "inception_fast/packing.py",
        "    out = [_EPOCH[0]]\n",
        "    out = [0]\n",
        ("tests/test_packing.py", "-k", "optimizer_steps"),
        "a fused optimizer's step (no version bump) leaves the packed weights as they were",
    ),
    Mutant(
        "cache_ignores_eps",
        "inception_fast/packing.py",
        "            extra.append(bn.eps)\n",
        "",
        ("tests/test_packing.py", "-k", "eps_change"),
        "a BatchNorm's eps changed after the first forward is not seen",
    ),
    Mutant(
        "stem_cache_kept_after_batch_stats",
        "inception_fast/modules.py",
        "            if _trains_a_batch_norm(self._stem_modules()):",
        "            if False:",
        ("tests/test_packing.py", "-k", "running_statistics"),
        "the stem's folded weights survive its BatchNorm's train-mode update where no counter moves",
    ),
    Mutant(
        "cache_ignores_batch_norm_counter",
        "inception_fast/packing.py",
        "            if counter is not None:\n                extra.append(counter)\n",
        "",
        ("tests/test_packing.py", "-k", "outside"),
        "a BatchNorm trained outside the fused forward (called on its own) leaves the folded weights stale",
    ),
    Mutant(
        "cache_trusts_aliased_storage",
        "inception_fast/packing.py",
        "    return not t._is_view() and t.untyped_storage().nbytes() > t.numel() * t.element_size()\n",
        "    return False\n",
        ("tests/test_packing.py", "-k", "vector_to_parameters"),
        "weights attached into a flat buffer (vector_to_parameters) go stale when the buffer is rewritten",
    ),
    Mutant(
        "cache_key_skips_attribute_tensors",
        "inception_fast/packing.py",
        "            t = params[name] if name in params else getattr(conv, name, None)\n",
        "            t = params.get(name)\n",
        ("tests/test_packing.py", "-k", "attribute"),
        "a conv bias held as a plain attribute or computed by a parametrization is not in the key",
    ),
    Mutant(
        "transforms_take_the_fused_ops",
        "inception_fast/modules.py",
        "    if isinstance(x, torch.fx.Proxy) or torch._C._functorch.maybe_current_level() is not None:\n"
        "        return True  # (the functorch level first: torch.compile may trace a transform's body)\n"
        "    if torch.compiler.is_compiling():\n"
        "        # torch.export bakes no autocast that is on around it: the program's ATen ops cast by the\n"
        "        # autocast state when it runs, which the fused ops (one dtype, chosen at trace time) cannot.\n"
        "        return _exporting() and (_onnx_exporting() or _autocast_on(x.device.type))\n"
        "    return forward_ad._current_level >= 0 or torch.jit.is_tracing() or _onnx_exporting()\n",
        "    return isinstance(x, torch.fx.Proxy) or torch.jit.is_tracing()\n",
        ("tests/test_transforms.py", "-k", "jvp or forward_mode"),
        "torch.func.jvp and forward-mode AD run the fused ops, which have no forward-mode rule (zero tangent)",
    ),
    Mutant(
        "module_settings_unseen",
        "inception_fast/modules.py",
        "            and _settings_match(signature, settings)\n",
        "",
        ("tests/test_replaced_modules.py", "-k", "place and fused_network"),
        "a conv's or pool's stride, padding or kernel changed on the same object leaves the stage fused as before",
    ),
    Mutant(
        "structure_change_keeps_packs",
        "inception_fast/modules.py",
        "                self.changed(owner)\n",
        "                pass\n",
        ("tests/test_replaced_modules.py", "-k", "repack_the_stem"),
        "the stem keeps weights prepacked for conv1's old stride after the stride changed",
    ),
    Mutant(
        "instance_forward_unseen",
        "inception_fast/modules.py",
        '            or "forward" in module.__dict__\n',
        "",
        ("tests/test_replaced_modules.py", "-k", "instance"),
        "a forward set on a module instance (a checkpointing wrapper) is skipped by the fused stage",
    ),
    Mutant(
        "hooks_skipped",
        "inception_fast/modules.py",
        "    if _global_hooks():\n        return True\n    stack = list(modules)",
        "    return False\n    stack = list(modules)",
        ("tests/test_modules.py", "-k", "hook"),
        "the fused stages skip the hooks of the modules they replace",
    ),
    # -- train-mode BatchNorm (inception_block_bn_train) ---------------------------------------------
    Mutant(
        "bn_running_var_biased",
        "inception_fast/modules.py",
        "var[col : col + c] * (count / (count - 1))",
        "var[col : col + c] * 1.0",
        ("tests/test_train_bn.py", "-k", "small-k3"),
        "running variance updated with the biased batch variance",
    ),
    Mutant(
        "bn_momentum_swapped",
        "inception_fast/modules.py",
        "rm.copy_(factor * m + (1.0 - factor) * rm.float())",
        "rm.copy_((1.0 - factor) * m + factor * rm.float())",
        ("tests/test_train_bn.py", "-k", "small-k3"),
        "running mean weights the batch with 1 - momentum",
    ),
    Mutant(
        "bn_backward_no_relu_mask",
        "inception_fast/ops.py",
        "    tb(g2d[:, :ch1], out2d[:, :ch1], 0, grad_input=masked[:, :ch1])",
        "    masked[:, :ch1] = g2d[:, :ch1]",
        ("tests/test_train_bn.py", "-k", "small-k3"),
        "train-mode BN backward without branch 1's ReLU mask",
    ),
    Mutant(
        "triton_bn_stats_no_chan_term",
        "inception_fast/backends/triton/bn_train.py",
        "    m2 = tile_m2.sum(0) + (counts * (tile_mean - mean).square()).sum(0)",
        "    m2 = tile_m2.sum(0)",
        ("tests/test_train_bn.py", "-k", "triton_matches"),
        "tile variances merged without the between-tile term",
    ),
    Mutant(
        "triton_bn_conv_no_padding_shift",
        "inception_fast/backends/triton/branch_convs.py",
        "        dh = kh - KS // 2",
        "        dh = kh",
        ("tests/test_train_bn.py", "-k", "triton_matches"),
        "implicit-GEMM kxk conv taps (branch_convs._conv_acc, which the train-mode convs share) not centred",
    ),
    # -- the stem's aligned-row conv (backends/triton/conv_rows.py) -------------------------------------
    Mutant(
        "triton_rows_window_unmasked",
        "inception_fast/backends/triton/conv_rows.py",
        "        a = tl.where(in_window[None, :], a, tl.zeros_like(a))  # the next pixels' elements\n",
        "",
        TRITON_CONV_ROWS,
        "conv_rows (both kernels' conv): the next pixels' elements loaded past a window are multiplied unmasked",
    ),
    Mutant(
        "triton_rows_pad_shifted",
        "inception_fast/backends/triton/conv_rows.py",
        "    h = row % HP - PAD\n",
        "    h = row % HP - PAD + 1\n",
        TRITON_CONV_ROWS,
        "conv_rows: the padded copy of the input shifted by a row",
    ),
    Mutant(
        "triton_rows_padded_too_narrow",
        "inception_fast/backends/triton/conv_rows.py",
        "    return n, hp, wp + wp % 2, cp\n",
        "    return n, hp, wp + wp % 2 - 2, cp\n",
        TRITON_CONV_ROWS,
        "conv_rows: the padded input too narrow for the last window's loaded run",
    ),
    Mutant(
        "triton_rows_pool_tap_dropped",
        "inception_fast/backends/triton/conv_rows.py",
        "            for dw in tl.static_range(POOL_K):\n",
        "            for dw in tl.static_range(POOL_K - 1):\n",
        TRITON_CONV_ROWS,
        "conv_rows pooled form: the last column of every pool window left out of the max",
    ),
    Mutant(
        "triton_rows_pool_padding_ignored",
        "inception_fast/backends/triton/conv_rows.py",
        "        oh = th * (TILE_P * POOL_S) - POOL_PAD + offs_m // CW\n",
        "        oh = th * (TILE_P * POOL_S) + offs_m // CW\n",
        TRITON_CONV_ROWS,
        "conv_rows pooled form: the pool's padding rows not subtracted from the patch's first row",
    ),
    Mutant(
        "triton_rows_pool_patch_width",
        "inception_fast/backends/triton/conv_rows.py",
        "                tap = (pi * POOL_S + dh) * CW + pj * POOL_S + dw\n",
        "                tap = (pi * POOL_S + dh) * (CW - 1) + pj * POOL_S + dw\n",
        TRITON_CONV_ROWS,
        "conv_rows pooled form: the pool reads the slot with a wrong patch row length",
    ),
    # -- the Triton backward's sums, the kernels' 32-bit and alignment guards ----------------------------
    Mutant(
        "triton_backward_sum_reads_gaps",
        "inception_fast/backends/triton/block_backward.py",
        "    live = ok & (gap == 0)\n",
        "    live = ok\n",
        ("tests/test_backward.py", "-k", "odd_shapes or units_of_8 or backward_fp16"),
        "launch C sums the never-written partials between the gradient segments",
    ),
    Mutant(
        "int32_offset_guard_skipped",
        "inception_fast/backends/triton/_common.py",
        "            geometry.check_int32_offsets(t)\n",
        "            pass\n",
        ("tests/test_triton.py", "-k", "offsets_past"),
        "row_unit lets through a tensor whose 32-bit tap or channel offsets would wrap",
    ),
    Mutant(
        "triton_l1_claim_unguarded",
        "inception_fast/backends/triton/_common.py",
        "    return elements if on and row_unit % elements == 0 else 0\n",
        "    return elements if on else 0\n",
        ("tests/test_triton.py", "-k", "l1_alignment"),
        "the A_L1 / POOL_L1 configs claim 8-byte rows where the row strides do not make it true",
    ),
    # -- train-mode BatchNorm (inception_block_bn_train), continued ----------------------------------------
    Mutant(
        "triton_bn_row_unit",
        "inception_fast/backends/triton/bn_train.py",
        "    stride_am = stride_am_div_unit * ROW_UNIT",
        "    stride_am = stride_am_div_unit",
        ("tests/test_train_bn.py", "-k", "triton"),
        "the statistics GEMM reads its input rows without multiplying their alignment unit back",
    ),
    # -- the onednn backend (backends/onednn_backend.py) and its prepacked-weight cache ----------------
    Mutant(
        "onednn_branch_slice",
        "inception_fast/backends/onednn_backend.py",
        "y5 = _prepacked(red[:, ch1 + ch3red :], pre.conv5, red_finite)",
        "y5 = _prepacked(red[:, -pre.channels[2] - 1 : -1], pre.conv5, red_finite)",
        ONEDNN,
        "the prepacked k×k branch reads its reduction one channel off",
    ),
    # -- fused blocks' and stem's structure checks, fuse()'s trace ---------------------------------------
    Mutant(
        "structure_never_checked",
        "inception_fast/modules.py",
        '        return self.__dict__["_structure"].ok(self)\n',
        "        return True\n",
        ("tests/test_replaced_modules.py",),
        "a fused block keeps its fused forward after one of its modules was replaced by one computing something else",
    ),
    Mutant(
        "stem_structure_ignored",
        "inception_fast/modules.py",
        " or not self._stem_structure.ok(self):",
        ":",
        ("tests/test_replaced_modules.py", "-k", "conv2 or conv3"),
        "the fused stem keeps running conv2 as a 1x1 and conv3 as a 3x3 after they were replaced",
    ),
    Mutant(
        "trace_blind_forwards_fused",
        "inception_fast/recognize.py",
        "    why = _unseen(module)\n",
        "    why = None\n",
        ("tests/test_recognize.py", "-k", "trace_cannot_see"),
        "fuse() swaps in blocks whose forwards draw random numbers, set grad/autocast modes or are decorated",
    ),
    Mutant(
        "parametrized_weight_computed_in_fuse",
        "inception_fast/recognize.py",
        "    if len({(stored_weight(c).device, stored_weight(c).dtype) for c in convs}) != 1:\n",
        "    if len({(c.weight.device, c.weight.dtype) for c in convs}) != 1:\n",
        ("tests/test_recognize.py", "-k", "parametrized"),
        "matching a block computes its parametrized weights (spectral_norm's power iteration runs an extra step)",
    ),
    Mutant(
        "parametrized_weight_computed_twice",
        "inception_fast/modules.py",
        "            with parametrize.cached():\n",
        "            if True:\n",
        ("tests/test_recognize.py", "-k", "parametrized"),
        "a fused forward computes a parametrized weight at every read (spectral_norm steps more than once a forward)",
    ),
    # -- the onednn backend, continued --------------------------------------------------------------------
    Mutant(
        "onednn_nan_unchecked",
        "inception_fast/backends/onednn_backend.py",
        "    return math.isfinite(t.sum().item())\n",
        "    return True\n",
        ONEDNN,
        "every oneDNN conv takes its fused ReLU, which maps NaN to 0, whatever its operands hold",
    ),
    Mutant(
        "onednn_prepack_never_rebuilt",
        "inception_fast/modules.py",
        "self._prepack_cache = PackCache(_prepack_own_units, _own_unit_sources)",
        "self._prepack_cache = PackCache(_prepack_own_units, lambda block: [])",
        ONEDNN,
        "the prepacked weights are never rebuilt after a weight change",
    ),
    Mutant(
        "onednn_stem_conv2_bias",
        "inception_fast/modules.py",
        "onednn_backend.prepack_conv(w2, b2, 1, 0),",
        "onednn_backend.prepack_conv(w2, b2 * 0, 1, 0),",
        ONEDNN,
        "the prepacked stem's conv2 drops its (folded) bias",
    ),
    Mutant(
        "onednn_layout_per_shape",
        "inception_fast/backends/onednn_backend.py",
        "    return _SERIALIZED_MD(w).numpy().tobytes()",
        "    return shape",
        ONEDNN,
        "every input shape keeps a reordered weight of its own, shapes of one layout included",
    ),
    Mutant(
        "onednn_traced_pool_no_relu",
        "inception_fast/backends/onednn_backend.py",
        "    yp = F.conv2d(F.max_pool2d(x, 3, 1, 1), w_pool[:, :, None, None], b_pool).relu()",
        "    yp = F.conv2d(F.max_pool2d(x, 3, 1, 1), w_pool[:, :, None, None], b_pool)",
        ("tests/test_modules.py", "-k", "plain_convolutions"),
        "the block's form for torch.compile on CPU leaves out the pool branch's ReLU",
    ),
    # -- candidate faults, INCEPTION_FAST_SKIP_CANDIDATES, the suite's retries, the jobs' error lines --
    Mutant(
        "fault_blames_a_context_lost_before",
        "inception_fast/choices.py",
        "        if _context_fault(device) is not None:\n            raise _LostBeforeMeasuring(\n",
        "        if False:\n            raise _LostBeforeMeasuring(\n",
        FAULTS,
        "a CUDA context lost before a choice measures is blamed on its first candidate that runs",
    ),
    Mutant(
        "fault_lost_before_plain",
        "inception_fast/choices.py",
        "            raise _LostBeforeMeasuring(\n",
        "            raise RuntimeError(\n",
        FAULTS,
        "a CUDA context lost before a choice measures is a plain RuntimeError (auto: 'every backend failed')",
    ),
    Mutant(
        "fault_lost_before_nested_unblamed",
        "inception_fast/choices.py",
        "            except _LostBeforeMeasuring as exc:  # this candidate lost it before its inner choice ran\n"
        "                error = exc\n",
        "",
        FAULTS,
        "a candidate that lost the context before the choice it runs inside measured is not blamed",
    ),
    Mutant(
        "main_precompile_swallows_fault",
        "inception_fast/__main__.py",
        "        except ContextLost:  # a candidate run in the pass lost the GPU's context: main's one error line\n"
        "            raise\n",
        "",
        ("tests/test_main.py", "-k", "lost_gpu_context"),
        "the job's precompile pass swallows a candidate's fault; the next forward fails with CUDA's own error",
    ),
    Mutant(
        "fault_blames_the_trusted",
        "inception_fast/choices.py",
        "        if not _checked(runner):  # ATen's own computation: not blamed\n",
        "        if False:\n",
        FAULTS,
        "ATen's own computation is recorded as the faulting candidate",
    ),
    Mutant(
        "fault_blames_hardware",
        "inception_fast/choices.py",
        "        if not kernel:  # an ECC error",
        "        if False:  # an ECC error",
        FAULTS,
        "an error no kernel causes by itself (ECC, a launch timeout) is recorded against the candidate",
    ),
    Mutant(
        "fault_capture_counts",
        "inception_fast/choices.py",
        '        if (isinstance(code, int) and 900 <= code <= 907) or "captur" in text.lower():\n',
        "        if False:\n",
        FAULTS,
        "another thread's graph capture, refusing the probe's synchronize, reads as a lost context",
    ),
    Mutant(
        "fault_code_ignored",
        "inception_fast/choices.py",
        "        if isinstance(code, int) and code > 0:\n",
        "        if False:\n",
        FAULTS,
        "the error's cudaError_t is ignored: a fault is told by its text alone",
    ),
    Mutant(
        "fault_only_when_raised",
        "inception_fast/choices.py",
        "            state = _context_fault(device)\n            if state is not None:\n"
        "                raise self._fault(",
        "            state = _context_fault(device) if error is not None else None\n            if state is not None:\n"
        "                raise self._fault(",
        FAULTS,
        "a candidate that faults on a stream its timing did not wait for is not blamed (the next one is)",
    ),
    Mutant(
        "fault_nested_reblamed",
        "inception_fast/choices.py",
        "            except ContextLost:\n                raise\n"
        "            except Exception as exc:  # noqa: BLE001 - measure",
        "            except Exception as exc:  # noqa: BLE001 - measure",
        FAULTS,
        "a fault inside a choice measured within a candidate (the stem's pool) is blamed on the outer candidate",
    ),
    Mutant(
        "fault_compile_pass_swallowed",
        "inception_fast/choices.py",
        "                self._each(key, device, runners, names, lambda name: (runners[name](), None)[1])\n",
        "                for name in names:\n                    try:\n                        runners[name]()\n"
        "                    except Exception:\n                        pass\n",
        FAULTS,
        "a candidate that faults in a compile-only pass (cuDNN's, the extension's run there) is named nowhere",
    ),
    Mutant(
        "fault_precompile_wraps",
        "inception_fast/precompiler.py",
        "    except ContextLost:  # a lost CUDA context (a candidate run in the pass, no Triton kernel): as it is\n"
        "        raise\n",
        "",
        FAULTS,
        "precompile() wraps a candidate's fault in its own error, which names no candidate",
    ),
    Mutant(
        "fault_claims_record",
        "inception_fast/choice_store.py",
        "                return None\n        return path\n",
        "        return path\n",
        FAULTS,
        "a fault the store could not write is said to be recorded",
    ),
    Mutant(
        "fault_not_recorded",
        "inception_fast/choices.py",
        "                path = choice_store.STORE.record_fault(self._entry(name), device, why)\n",
        "                path = None\n",
        FAULTS,
        "a candidate that lost the CUDA context is not recorded: the next process runs it again",
    ),
    Mutant(
        "fault_record_ignored",
        "inception_fast/choices.py",
        "        faulted = self._faulted(names, runners, device)\n",
        "        faulted = {}\n",
        FAULTS,
        "a recorded fault is not read back: the next process measures the faulting candidate again",
    ),
    Mutant(
        "fault_measures_on",
        "inception_fast/choices.py",
        "            if state is not None:\n"
        "                raise self._fault(key, device, name, runners[name], state) from error\n",
        "",
        FAULTS,
        "a lost CUDA context only drops the candidate: the others fail too and the fault is named nowhere",
    ),
    Mutant(
        "skip_not_in_capture",
        "inception_fast/choices.py",
        '            names = [n for n in names if n == "torch" or not self.skipped(n)]  # (pick '
        "measures what is not)\n",
        "",
        FAULTS,
        "auto captures a skipped backend where a CUDA graph meets an unmeasured shape",
    ),
    Mutant(
        "skip_ignored",
        "inception_fast/choices.py",
        "        return bool(entries) and ((None, name) in entries or (self.store_as, name) in entries)\n",
        "        return False\n",
        FAULTS,
        "INCEPTION_FAST_SKIP_CANDIDATES is read but leaves nothing out",
    ),
    Mutant(
        "skip_bare_name_ignored",
        "inception_fast/choices.py",
        "(None, name) in entries or (self.store_as, name) in entries",
        "(self.store_as, name) in entries",
        FAULTS,
        "a bare candidate name in INCEPTION_FAST_SKIP_CANDIDATES leaves out nothing",
    ),
    Mutant(
        "skip_misspelled_accepted",
        "inception_fast/choices.py",
        "        if choice is None and not _declares(every, name):\n",
        "        if False:\n",
        FAULTS,
        "a misspelled bare candidate name in INCEPTION_FAST_SKIP_CANDIDATES is taken and leaves out nothing",
    ),
    Mutant(
        "skip_pattern_prefix",
        "inception_fast/choices.py",
        'return any(re.fullmatch(re.escape(d).replace("<N>", "[0-9]+"), name) for d in declared)',
        'return any(re.match(re.escape(d).replace("<N>", "[0-9]*"), name) for d in declared)',
        FAULTS,
        "a skip entry that only starts with a declared name ('stem:pad', 'stem:triton_row' as 'triton') is taken",
    ),
    Mutant(
        "declared_not_enforced",
        "inception_fast/choices.py",
        "        if self.declared is not None and not all(_declares(self.declared, n) for n in runners):\n",
        "        if False:\n",
        FAULTS,
        "a choice measures a candidate it does not declare (which no skip entry can name)",
    ),
    Mutant(
        "skip_list_unchecked_by_jobs",
        "inception_fast/cli.py",
        "        skip_entries()\n",
        "",
        ("tests/test_main.py", "-k", "environment_and_a_full_disk"),
        "a bad INCEPTION_FAST_SKIP_CANDIDATES reaches the job's first forward: a traceback, not one line",
    ),
    Mutant(
        "auto_offers_refusing_backend",
        "inception_fast/choices.py",
        "        names = [n for n in self.candidates(x.device) if _takes_block(n, w3, w5)]\n",
        "        names = self.candidates(x.device)\n",
        ("tests/test_ops.py", "-k", "refuse_the_branch"),
        "auto in static mode takes triton for a block whose branch 2 is not 3x3 (its launch 2 raises)",
    ),
    Mutant(
        "skip_trusted_allowed",
        "inception_fast/choices.py",
        "                if not _checked(runners[name]):\n                    raise ValueError(\n",
        "                if False:\n                    raise ValueError(\n",
        FAULTS,
        "INCEPTION_FAST_SKIP_CANDIDATES may leave out the trusted computation the others are checked against",
    ),
    Mutant(
        "skip_stored_choice_used",
        "inception_fast/choices.py",
        "            if stored in names:\n",
        "            if stored in runners:\n",
        FAULTS,
        "a stored choice naming a skipped candidate is read back and run",
    ),
    Mutant(
        "suite_no_retry",
        "benchmarks/suite_steps.sh",
        '        if [[ -z "${RETRYING:-}" ]] && (( again >= 15 + ${STEP_MARGIN:-0} )); then\n',
        "        if false; then\n",
        SUITE_FAULTS,
        "a suite step that met a faulting candidate is not run again without it",
    ),
    Mutant(
        "suite_retry_without_time",
        "benchmarks/suite_steps.sh",
        "(( again >= 15 + ${STEP_MARGIN:-0} ))",
        "(( again >= 15 ))",
        SUITE_FAULTS,
        "a step is run again with less of its cap left than its margin: it starts nothing",
    ),
    Mutant(
        "suite_fault_json_overwritten",
        "benchmarks/suite_steps.sh",
        '            keep_fault_json "$@"\n',
        "",
        SUITE_FAULTS,
        "the run again overwrites the JSON of the rows the faulting run measured",
    ),
    Mutant(
        "suite_keeps_caller_skips",
        "benchmarks/suite_steps.sh",
        'echo "$(skip_digest) $FOUND_SKIPS"',
        'echo "$(skip_digest) $INCEPTION_FAST_SKIP_CANDIDATES"',
        SUITE_FAULTS,
        "the caller's own skipped candidates are kept as found faulting for later calls",
    ),
    Mutant(
        "suite_kept_digest_ignored",
        "benchmarks/suite_steps.sh",
        '    if [[ "$digest" == "$(skip_digest)" && -n "${kept:-}" ]]; then\n',
        '    if [[ -n "${kept:-}" ]]; then\n',
        SUITE_FAULTS,
        "another tree's or machine's faulting candidates are skipped",
    ),
    Mutant(
        "suite_retry_past_budget",
        "benchmarks/suite_steps.sh",
        "        (( budget_left < again )) && again=$budget_left\n",
        "",
        SUITE_FAULTS,
        "a step is run again with less of the suite's budget left than a case needs (and its JSON moved aside)",
    ),
    Mutant(
        "skip_choice_stored",
        "inception_fast/choices.py",
        "        if self.store_as is not None and not any(self.skipped(n) for n in skipped or {}):\n",
        "        if self.store_as is not None:\n",
        FAULTS,
        "a choice made without the candidates INCEPTION_FAST_SKIP_CANDIDATES left out is stored for every process",
    ),
    Mutant(
        "fault_lost_reblamed",
        "inception_fast/choices.py",
        "            except ContextLost:\n                raise\n",
        "            except CandidateFault:\n                raise\n",
        FAULTS,
        "a nested choice's unblamed lost context is blamed on the outer candidate",
    ),
    Mutant(
        "fault_one_off_error_counts",
        "inception_fast/choices.py",
        "            return None  # an error reported once, not a lost context\n",
        "            pass\n",
        FAULTS,
        "an error a second synchronize does not meet again reads as a lost context",
    ),
    Mutant(
        "first_forward_fault_kept_to_itself",
        "benchmarks/first_forward.py",
        '                        os.environ[ENV_SKIP] = env[ENV_SKIP] = ",".join(sorted(skips))\n',
        "                        pass\n",
        SUITE_FAULTS,
        "first_forward's rows after a candidate's fault run it again",
    ),
    Mutant(
        "first_forward_timeout_fault_lost",
        "benchmarks/first_forward.py",
        '    fault = [line for line in lines if "CandidateFault: " in line][-1:]\n    if fault:\n',
        '    fault = [line for line in lines if "CandidateFault: " in line][-1:]\n    if fault and not timed_out:\n',
        SUITE_FAULTS,
        "a row cut at its time limit after a candidate's fault names no candidate",
    ),
    Mutant(
        "cli_lost_context_traceback",
        "inception_fast/__main__.py",
        "    except ContextLost as exc:  # a measured candidate lost",
        "    except ImportError as exc:  # a measured candidate lost",
        ("tests/test_main.py", "-k", "lost_gpu_context"),
        "python -m inception_fast ends with a traceback where a candidate lost the GPU's context",
    ),
    Mutant(
        "train_lost_context_traceback",
        "inception_fast/train.py",
        "    except ContextLost as exc:  # a measured candidate lost",
        "    except ImportError as exc:  # a measured candidate lost",
        ("tests/test_train.py", "-k", "lost_gpu_context"),
        "the training job ends with a traceback where a candidate lost the GPU's context",
    ),
    Mutant(
        "suite_tests_skip_faults",
        "benchmarks/suite_steps.sh",
        "[[ $name != tests ]] && faults=",
        "faults=",
        SUITE_FAULTS,
        "the suite's tests step, which tests every kernel, also adds its faults to the skipped candidates",
    ),
    Mutant(
        "suite_cut_line_skips",
        "benchmarks/suite_steps.sh",
        "grep -o 'INCEPTION_FAST_SKIP_CANDIDATES=[a-z0-9_:]* ;' | sed 's/^[^=]*=//; s/ ;$//'",
        "grep -o 'INCEPTION_FAST_SKIP_CANDIDATES=[a-z0-9_:]*' | sed 's/^[^=]*=//'",
        SUITE_FAULTS,
        "the suite takes a candidate's name from a line pytest cut short",
    ),
    Mutant(
        "first_forward_fault_cut",
        "benchmarks/first_forward.py",
        '    fault = [line for line in lines if "CandidateFault: " in line][-1:]\n',
        '    fault = [line for line in lines[-1:] if "CandidateFault: " in line]\n',
        SUITE_FAULTS,
        "first_forward keeps only the start of a CandidateFault line: the suite never learns the candidate",
    ),
    # -- the reference network and from_torchvision's copy ----------------------------------------
    Mutant(
        "paper_lrn_size",
        "inception_fast/reference.py",
        "self.lrn2 = LocalResponseNorm(5, alpha",
        "self.lrn2 = LocalResponseNorm(3, alpha",
        ("tests/test_reference.py", "-k", "paper_variant_structure"),
        "the paper variant's second LRN normalises over 3 channels, not 5",
    ),
    Mutant(
        "init_std",
        "inception_fast/reference.py",
        "std=0.01, a=-2, b=2",
        "std=0.1, a=-2, b=2",
        ("tests/test_reference.py", "-k", "init_is"),
        "init_weights draws ten times torchvision's spread",
    ),
    Mutant(
        "copy_aux_logits_ignored",
        "inception_fast/modules.py",
        "            fused.aux_logits = model.aux_logits\n",
        "            pass\n",
        ("tests/test_modules.py", "-k", "aux_logits_off"),
        "from_torchvision returns aux outputs for a model whose aux_logits was turned off",
    ),
    Mutant(
        "copy_leaves_not_copied",
        "inception_fast/modules.py",
        "        elif not mine._modules or mine",
        "        elif False or mine",
        ("tests/test_replaced_modules.py", "-k", "before_conversion or local_response or runs_a_changed"),
        "from_torchvision keeps the constructor's conv, pool and LRN settings, not the original's",
    ),
    Mutant(
        "copy_structure_assumed",
        "inception_fast/modules.py",
        "module.structure_built(checked=not take)",
        "module.structure_built(checked=False)",
        ("tests/test_replaced_modules.py", "-k", "before_conversion or runs_a_changed"),
        "a copied block or stem is taken to compute the fused pattern without checking its modules",
    ),
    Mutant(
        "copy_instance_forward_walked",
        "inception_fast/modules.py",
        "    if _forward_on_instance(theirs) is not None:",
        "    if False:",
        ("tests/test_replaced_modules.py", "-k", "before_conversion"),
        "a unit or block whose forward was set on the instance is copied as the plain class",
    ),
    Mutant(
        "copy_blocks_not_rebuilt",
        "inception_fast/modules.py",
        "            if config is not None and config != _block_config(getattr(fused, name)):",
        "            if False:",
        ("tests/test_replaced_modules.py", "-k", "torchvision_modules_changed"),
        "a block of other input channels keeps the standard block's in_channels",
    ),
    Mutant(
        "graph_input_dtype_unchecked",
        "inception_fast/graphs.py",
        "x.shape != s.shape or x.dtype != s.dtype or",
        "x.shape != s.shape or",
        ("tests/test_modules.py", "-k", "captured_forward_takes"),
        "a CUDA graph's input of another dtype is cast into its buffer instead of refused",
    ),
    Mutant(
        "copy_parameters_shared",
        "inception_fast/modules.py",
        "value = {n: p if share_tensors or p is None else copy.deepcopy(p) for n, p in value.items()}",
        "value = {n: p for n, p in value.items()}",
        ("tests/test_replaced_modules.py", "-k", "graph_tensors"),
        "from_torchvision's copy trains the original's own parameters",
    ),
    Mutant(
        "copy_hooks_kept",
        "inception_fast/modules.py",
        '        elif "hooks" in key and isinstance(value, dict):\n            value = type(value)()\n',
        "",
        ("tests/test_replaced_modules.py", "-k", "graph_tensors"),
        "a copied module keeps the original's hooks (they fire on the copy too)",
    ),
    Mutant(
        "copy_forward_unbound",
        "inception_fast/modules.py",
        "            value = types.MethodType(value.__func__, new)\n",
        "            pass\n",
        ("tests/test_replaced_modules.py", "-k", "instance and before_conversion"),
        "a forward set on an instance stays bound to the original: the copy computes with its weights",
    ),
    Mutant(
        "copy_instance_forward_taken",
        "inception_fast/modules.py",
        "    name = _forward_on_instance(model)\n",
        "    name = None\n",
        ("tests/test_replaced_modules.py", "-k", "refuses_a_forward"),
        "from_torchvision copies a block whose _forward is set on the instance as the plain class",
    ),
    # -- fuse()'s recognition, the d2l reference, the main job's exit code, the choice store ------
    Mutant(
        "recognize_train_mode_untraced",
        "inception_fast/recognize.py",
        "for mode in (False, True):",
        "for mode in (False, False):",
        ("tests/test_recognize.py", "-k", "lookalikes"),
        "fuse() traces blocks in eval mode only: a forward that differs in train mode is fused",
    ),
    Mutant(
        "recognize_first_extra_node_ignored",
        "inception_fast/recognize.py",
        "extra = [n for n in nodes if n not in used]",
        "extra = [n for n in nodes if n not in used][1:]",
        ("tests/test_recognize.py", "-k", "lookalikes"),
        "a block with one side computation besides its branches (an in-place clamp) is fused",
    ),
    Mutant(
        "recognize_cat_default_dim_channels",
        "inception_fast/recognize.py",
        'result.kwargs.get("dim", 0)',
        'result.kwargs.get("dim", 1)',
        ("tests/test_recognize.py", "-k", "lookalikes"),
        "torch.cat without dim (the batch) is taken as a channel concat",
    ),
    Mutant(
        "recognize_conv_padding_unchecked",
        "inception_fast/recognize.py",
        "or _pair(padding) == size // 2)",
        "or _pair(padding) is not None)",
        ("tests/test_recognize.py", "-k", "lookalikes"),
        "a block whose convs have other padding than k//2 is fused",
    ),
    Mutant(
        "foreign_reference_branch_order",
        "inception_fast/modules.py",
        "unit(0, x), unit(2, unit(1, x)), unit(4, unit(3, x)), unit(5,",
        "unit(0, x), unit(4, unit(3, x)), unit(2, unit(1, x)), unit(5,",
        ("tests/test_recognize.py", "-k", "float64_computes"),
        "a fused foreign block's own reference computation (float64) concatenates branches 2 and 3 swapped",
    ),
    Mutant(
        "d2l_pools_ceil_mode",
        "inception_fast/reference.py",
        'pool = (3, 2, 1, False) if variant == "d2l"',
        'pool = (3, 2, 1, True) if variant == "d2l"',
        ("tests/test_recognize.py", "-k", "d2l_variant"),
        "the d2l variant's 3x3/2 pools run in ceil mode, unlike the textbook network",
    ),
    Mutant(
        "main_exit_ignores_mismatch",
        "inception_fast/__main__.py",
        "return 0 if all(e <= tol for e in parity.values()) else 1",
        "return 0",
        ("tests/test_main.py", "-k", "parity_mismatch"),
        "the main job exits 0 after a parity MISMATCH",
    ),
    Mutant(
        "store_hash_without_extension",
        "inception_fast/choice_store.py",
        'if path.suffix == ".py" or (path.suffix == ".so" and path.name.startswith("_C")):',
        'if path.suffix == ".py":',
        ("tests/test_choice_store.py", "-k", "code_hash"),
        "the code hash leaves out the compiled extension: a rebuilt kernel reads stale choices",
    ),
    Mutant(
        "store_fingerprint_without_triton",
        "inception_fast/choice_store.py",
        '        "triton": triton_version,\n',
        "",
        ("tests/test_choice_store.py", "-k", "triton_version"),
        "the fingerprint leaves out the Triton version: a new Triton reads the old choices",
    ),
    Mutant(
        "store_off_case_sensitive",
        "inception_fast/choice_store.py",
        'if raw.lower() in ("off", "0", "false", "no"):',
        'if raw in ("off", "0", "false", "no"):',
        ("tests/test_choice_store.py", "-k", "letter_case"),
        "INCEPTION_FAST_CHOICE_CACHE=OFF is taken as a directory name",
    ),
    Mutant(
        "store_restored_key_not_newest",
        "inception_fast/choice_store.py",
        "mine.pop(repr(key), None)",
        "mine.get(repr(key), None)",
        ("tests/test_choice_store.py", "-k", "stored_again"),
        "a key stored again keeps its old place, so the trim can drop it",
    ),
    # -- the train job ---------------------------------------------------------------------------
    Mutant(
        "train_resume_rng_not_restored",
        "inception_fast/train.py",
        "        _set_rng_state(rng[dist.rank], device)\n",
        "",
        ("tests/test_train.py", "-k", "dropout_variant"),
        "--resume does not restore the RNG: a dropout variant's resumed epochs draw other masks",
    ),
    Mutant(
        "train_resume_lr_ignored",
        "inception_fast/train.py",
        'group["lr"] = lr',
        'group["lr"] = group["lr"]',
        ("tests/test_train.py", "-k", "dropout_variant"),
        "--resume keeps the checkpoint's learning rate, ignoring a new --lr",
    ),
    Mutant(
        "train_eval_mode_kept",
        "inception_fast/train.py",
        "    model.train()\n    right, total",
        "    right, total",
        ("tests/test_train.py", "-k", "train_mode"),
        "the model stays in eval mode after each epoch's evaluation",
    ),
    Mutant(
        "train_resume_batch_size_unchecked",
        "inception_fast/train.py",
        '        "batch_size": args.batch_size,\n',
        "",
        ("tests/test_train.py", "-k", "dropout_variant"),
        "--resume accepts a checkpoint written with another --batch-size",
    ),
    Mutant(
        "train_same_shuffle_each_epoch",
        "inception_fast/train.py",
        "sampler.set_epoch(epoch)",
        "sampler.set_epoch(0)",
        ("tests/test_train.py", "-k", "dropout_variant"),
        "every epoch takes the same shuffle",
    ),
    Mutant(
        "train_xavier_fan_out_no_kernel",
        "inception_fast/train.py",
        "                fan_out *= m.weight[0, 0].numel()\n",
        "",
        ("tests/test_train.py", "-k", "xavier"),
        "Xavier init's fan_out leaves out the kernel area: conv weights drawn too wide",
    ),
    Mutant(
        "train_ddp_same_dropout_seed",
        "inception_fast/train.py",
        "torch.manual_seed(args.seed + 1_000_003 * dist.rank)",
        "torch.manual_seed(args.seed)",
        ("tests/test_train.py", "-k", "gloo"),
        "every data-parallel process draws the same dropout masks",
    ),
    Mutant(
        "train_ddp_eval_rank0_shard",
        "inception_fast/train.py",
        "idx = list(range(dist.rank, len(data), dist.world))",
        "idx = list(range(0, len(data), dist.world))",
        ("tests/test_train.py", "-k", "gloo"),
        "every data-parallel process evaluates rank 0's share of the test images",
    ),
    Mutant(
        "train_cpu_bf16_ignored",
        "inception_fast/train.py",
        '    use_bf16 = args.dtype == "bfloat16"\n',
        '    use_bf16 = args.dtype == "bfloat16" and device.type == "cuda"\n',
        ("tests/test_train.py", "-k", "bfloat16"),
        "--dtype bfloat16 on cpu trains in float32",
    ),
    Mutant(
        "train_default_epochs",
        "inception_fast/train.py",
        'type=int, default=10, help="train up to',
        'type=int, default=5, help="train up to',
        ("tests/test_train.py", "-k", "defaults_are"),
        "--epochs defaults to 5, not the chapter's 10 the docstring states",
    ),
    Mutant(
        "train_default_lr",
        "inception_fast/train.py",
        'type=float, default=0.1, help="SGD',
        'type=float, default=0.01, help="SGD',
        ("tests/test_train.py", "-k", "defaults_are"),
        "--lr defaults to 0.01, not the chapter's 0.1",
    ),
    Mutant(
        "train_default_variant",
        "inception_fast/train.py",
        'choices=VARIANTS, default="d2l"',
        'choices=VARIANTS, default="paper"',
        ("tests/test_train.py", "-k", "defaults_are"),
        "--variant defaults to paper, not the chapter's d2l",
    ),
    Mutant(
        "train_epochs_unchecked",
        "inception_fast/train.py",
        'for name in ("epochs", "batch_size", "image_size"):',
        'for name in ("batch_size", "image_size"):',
        ("tests/test_train.py", "-k", "counts_and_numbers"),
        "--epochs 0 is taken: a run that trains nothing",
    ),
    Mutant(
        "train_lr_zero_taken",
        "inception_fast/train.py",
        "if not args.lr > 0 or",
        "if args.lr < 0 or",
        ("tests/test_train.py", "-k", "counts_and_numbers"),
        "--lr 0 is taken: a run whose weights never move",
    ),
    Mutant(
        "train_lr_inf_taken",
        "inception_fast/train.py",
        "if not args.lr > 0 or not math.isfinite(args.lr):",
        "if not args.lr > 0:",
        ("tests/test_train.py", "-k", "counts_and_numbers"),
        "--lr inf is taken: a run that diverges at its first step",
    ),
    Mutant(
        "train_seed_negative_taken",
        "inception_fast/train.py",
        "if not 0 <= args.seed < 2**62:",
        "if not args.seed < 2**62:",
        ("tests/test_train.py", "-k", "counts_and_numbers"),
        "--seed -1 is taken",
    ),
    Mutant(
        "train_stop_after_unchecked",
        "inception_fast/train.py",
        'for name in ("steps_per_epoch", "stop_after", "test_limit"):',
        'for name in ("steps_per_epoch", "test_limit"):',
        ("tests/test_train.py", "-k", "counts_and_numbers"),
        "--stop-after 0 is taken: a run that ends at once, saying nothing to train",
    ),
    Mutant(
        "train_batch_split_unchecked",
        "inception_fast/train.py",
        "    if args.batch_size % dist.world:\n",
        "    if False:\n",
        ("tests/test_train.py", "-k", "out_dtype_and_process"),
        "a global --batch-size that does not split over the processes is taken (each trains a smaller share)",
    ),
    Mutant(
        "train_bf16_cpu_unchecked",
        "inception_fast/train.py",
        "    check_train_dtype(args.dtype, device)\n",
        "",
        ("tests/test_train.py", "-k", "out_dtype_and_process"),
        "--dtype bfloat16 is taken on a CPU without oneDNN's bfloat16 convolutions (ATen emulates them, slowly)",
    ),
    Mutant(
        "train_out_names_unchecked",
        "inception_fast/train.py",
        "for name in (CHECKPOINT, HISTORY, CURVES):\n        if",
        "for name in (CHECKPOINT,):\n        if",
        ("tests/test_train.py", "-k", "out_dtype_and_process"),
        "a directory named history.json or curves.png in --out fails the run after its first epoch, not before",
    ),
    Mutant(
        "train_rank_outside_world",
        "inception_fast/train.py",
        "if world < 1 or not 0 <= rank < world:",
        "if world < 1 or not 0 <= rank <= world:",
        ("tests/test_train.py", "-k", "out_dtype_and_process"),
        "RANK=WORLD_SIZE is taken (a process no rendezvous will place)",
    ),
    Mutant(
        "train_checkpoint_not_atomic",
        "inception_fast/train.py",
        "        write(tmp)\n        os.replace(tmp, path)\n",
        "        write(path)\n",
        ("tests/test_train.py", "-k", "checkpoint_write_that_fails"),
        "checkpoint.pt is written in place: a write that fails leaves the previous one damaged",
    ),
    Mutant(
        "train_checkpoint_tmp_left",
        "inception_fast/train.py",
        "        if os.path.exists(tmp):\n            os.remove(tmp)\n",
        "        pass\n",
        ("tests/test_train.py", "-k", "checkpoint_write_that_fails"),
        "a write that fails leaves its temporary file in --out",
    ),
    Mutant(
        "train_resume_inf_weights",
        "inception_fast/train.py",
        "t.is_floating_point() and not t.isfinite().all()",
        "t.is_floating_point() and t.isnan().any()",
        ("tests/test_train.py", "-k", "another_run"),
        "--resume takes weights holding Inf (only NaN is refused)",
    ),
    Mutant(
        "train_resume_image_size_unchecked",
        "inception_fast/train.py",
        '        "image_size": args.image_size,\n',
        "",
        ("tests/test_train.py", "-k", "another_run"),
        "--resume accepts a checkpoint written at another --image-size",
    ),
    Mutant(
        "train_resume_data_unchecked",
        "inception_fast/train.py",
        '        "data": data.name,\n',
        "",
        ("tests/test_train.py", "-k", "another_run"),
        "--resume accepts a checkpoint written on other --data",
    ),
    Mutant(
        "train_resume_reference_unchecked",
        "inception_fast/train.py",
        '        "reference": args.reference,\n',
        "",
        ("tests/test_train.py", "-k", "another_run"),
        "--resume accepts a checkpoint written with(out) --reference",
    ),
    Mutant(
        "train_resume_processes_unchecked",
        "inception_fast/train.py",
        '        "processes": dist.world,\n        "steps_per_epoch"',
        '        "steps_per_epoch"',
        ("tests/test_train.py", "-k", "another_run"),
        "--resume accepts a checkpoint written by another number of processes",
    ),
    Mutant(
        "train_history_at_end_only",
        "inception_fast/train.py",
        "            _write_history(args, history, device, dist)\n        if args.stop_after",
        "        if args.stop_after",
        ("tests/test_train.py", "-k", "another_run"),
        "history.json is written at the end only: a run stopped by --stop-after has none",
    ),
    Mutant(
        "train_eval_drops_last_batch",
        "inception_fast/train.py",
        "for start in range(0, len(idx), batch):",
        "for start in range(0, len(idx) - batch + 1, batch):",
        ("tests/test_train.py", "-k", "counts_every_test_image"),
        "the test accuracy leaves out the last short batch's right answers (still divided by every image)",
    ),
    Mutant(
        "train_eval_own_buffers",
        "inception_fast/train.py",
        "                buf.copy_(synced)  # an in-place op",
        "                pass  # an in-place op",
        ("tests/test_train.py", "-k", "rank_0s_buffers"),
        "under DDP each process evaluates with its own BatchNorm statistics, not rank 0's",
    ),
    Mutant(
        "train_loss_not_weighted",
        "inception_fast/train.py",
        "s[0] += float(loss.detach()) * len(y)",
        "s[0] += float(loss.detach())",
        ("tests/test_train.py", "-k", "means_over_every"),
        "the epoch's train loss sums batch means, not per-image losses (off by the batch size)",
    ),
    Mutant(
        "train_count_full_batches",
        "inception_fast/train.py",
        "s[2] += len(y)",
        "s[2] += local_batch",
        ("tests/test_train.py", "-k", "means_over_every"),
        "a short last batch counts as a full one in the train loss, accuracy and images/s",
    ),
    Mutant(
        "train_test_limit_on_train",
        "inception_fast/train.py",
        "        data.test = _first(data.test, args.test_limit)",
        "        data.train = _first(data.train, args.test_limit)",
        ("tests/test_train.py", "-k", "means_over_every"),
        "--test-limit cuts the training images, not the test images",
    ),
    Mutant(
        "train_steps_per_epoch_max",
        "inception_fast/train.py",
        "steps = min(steps, args.steps_per_epoch)",
        "steps = max(steps, args.steps_per_epoch)",
        ("tests/test_train.py", "-k", "progress_bar"),
        "--steps-per-epoch raises the steps of an epoch instead of capping them",
    ),
    Mutant(
        "train_progress_inverted",
        "inception_fast/train.py",
        "dist.main and not args.no_progress)",
        "dist.main and args.no_progress)",
        ("tests/test_train.py", "-k", "progress_bar"),
        "the progress bar shows under --no-progress and not without it",
    ),
    Mutant(
        "train_progress_fill",
        "inception_fast/train.py",
        "filled = int(24 * done / self.total)",
        "filled = int(24 * (done - 1) / self.total)",
        ("tests/test_train.py", "-k", "progress_bar"),
        "the progress bar is never full (filled one step behind)",
    ),
    Mutant(
        "train_shuffle_seed_ignored",
        "inception_fast/train.py",
        "shuffle=True, seed=args.seed",
        "shuffle=True, seed=0",
        ("tests/test_train.py", "-k", "seed_sets"),
        "the shuffle does not depend on --seed",
    ),
    Mutant(
        "train_init_seed_ignored",
        "inception_fast/train.py",
        "gen = torch.Generator().manual_seed(seed)",
        "gen = torch.Generator().manual_seed(0)",
        ("tests/test_train.py", "-k", "seed_sets"),
        "the initial weights do not depend on --seed",
    ),
    Mutant(
        "train_digits_scale",
        "inception_fast/train.py",
        "[:, None] / 16.0",
        "[:, None] / 15.0",
        ("tests/test_train.py", "-k", "digits_split"),
        "the digits' pixels (0-16) are scaled by 15: values past 1",
    ),
    Mutant(
        "train_digits_split",
        "inception_fast/train.py",
        "    n_test = len(labels) // 5\n",
        "    n_test = len(labels) // 10\n",
        ("tests/test_train.py", "-k", "digits_split"),
        "the digits are split 90/10, not 80/20",
    ),
    Mutant(
        "train_idx_type_unchecked",
        "inception_fast/train.py",
        "    if data[2] != 0x08:\n",
        "    if False:\n",
        ("tests/test_train.py", "-k", "do_not_fit"),
        "an IDX file of another element type is read as unsigned bytes",
    ),
    Mutant(
        "train_idx_longer_taken",
        "inception_fast/train.py",
        "    if len(data) != expected:\n",
        "    if len(data) < expected:\n",
        ("tests/test_train.py", "-k", "do_not_fit"),
        "an IDX file longer than its header says is taken",
    ),
    Mutant(
        "train_fmnist_label_range",
        "inception_fast/train.py",
        "        if len(labels) and int(labels.max()) > 9:\n",
        "        if False:\n",
        ("tests/test_train.py", "-k", "do_not_fit"),
        "Fashion-MNIST labels outside 0-9 are taken",
    ),
    Mutant(
        "train_fmnist_label_count",
        "inception_fast/train.py",
        "if labels.dim() != 1 or len(labels) != len(images):",
        "if labels.dim() != 1:",
        ("tests/test_train.py", "-k", "do_not_fit"),
        "fewer Fashion-MNIST labels than images are taken",
    ),
    Mutant(
        "train_fmnist_not_scaled",
        "inception_fast/train.py",
        "splits.append(Images(images[:, None].float().div_(255), labels.long()))",
        "splits.append(Images(images[:, None].float(), labels.long()))",
        ("tests/test_train.py", "-k", "do_not_fit"),
        "Fashion-MNIST pixels come in as 0-255, not [0, 1]",
    ),
    Mutant(
        "train_folder_split_swapped",
        "inception_fast/train.py",
        "test, train = [samples[i] for i in order[:n_test]], [samples[i] for i in order[n_test:]]",
        "train, test = [samples[i] for i in order[:n_test]], [samples[i] for i in order[n_test:]]",
        ("tests/test_train.py", "-k", "split_and_class"),
        "an image folder's fixed split trains on 20% and tests on 80%",
    ),
    Mutant(
        "train_folder_one_class",
        "inception_fast/train.py",
        "    if len(classes) < 2:\n",
        "    if False:\n",
        ("tests/test_train.py", "-k", "split_and_class"),
        "an image folder with one class folder is taken",
    ),
    Mutant(
        "train_folder_classes_differ",
        "inception_fast/train.py",
        "        if test_classes != classes:\n",
        "        if False:\n",
        ("tests/test_train.py", "-k", "split_and_class"),
        "train/ and test/ with other class folders are taken (labels mean other classes)",
    ),
    Mutant(
        "train_bn_no_step_taken",
        "inception_fast/train.py",
        "        if steps == 1:\n            raise UsageError",
        "        if False:\n            raise UsageError",
        ("tests/test_train.py", "-k", "single_training_image"),
        "one training image BatchNorm cannot take gives an epoch of no steps (a division by zero), not one line",
    ),
    Mutant(
        "train_curves_fused_only",
        "inception_fast/train.py",
        'for model in [m for m in ("fused", "reference") if',
        'for model in [m for m in ("fused",) if',
        ("tests/test_train.py", "-k", "curves_plot"),
        "curves.png leaves out the reference model's curves",
    ),
    Mutant(
        "copy_subclass_taken",
        "inception_fast/modules.py",
        "    for cls in mro[: mro.index(base)] if base is not None else ():",
        "    for cls in ():",
        ("tests/test_replaced_modules.py", "-k", "subclass_computing"),
        "from_torchvision copies a subclass redefining _forward as its torchvision class",
    ),
    Mutant(
        "copy_subclass_init_refused",
        "inception_fast/modules.py",
        '_HARMLESS_OVERRIDES = frozenset({"__init__", "__repr__", "__str__", "extra_repr"})',
        '_HARMLESS_OVERRIDES = frozenset({"__repr__", "__str__", "extra_repr"})',
        ("tests/test_replaced_modules.py", "-k", "subclass_computing"),
        "from_torchvision refuses a subclass that adds only a constructor",
    ),
    Mutant(
        "fuse_subclass_built_as_standard",
        "inception_fast/modules.py",
        "        and _own_computation(block, _block_classes()) is None  #",
        "        and True  #",
        ("tests/test_replaced_modules.py", "-k", "subclass_computing"),
        "fuse() builds a FusedInception from a block subclass with its own _forward (refused: fuse() fails)",
    ),
    Mutant(
        "run_command_file_error_raised",
        "inception_fast/cli.py",
        "            if exc.errno is None or not exc.filename:\n                raise\n",
        "            raise\n",
        ("tests/test_benchmark_args.py", "-k", "full_disk"),
        "a benchmark script's --json on a full disk ends in a traceback after the run",
    ),
    Mutant(
        "bench_env_list_empty_item",
        "benchmarks/helpers/settings.py",
        "    if not all(values):\n",
        "    if False:\n",
        ("tests/test_benchmark_args.py", "-k", "settings_refuse"),
        "INCEPTION_FAST_BENCH_BATCHES=, runs the default grid instead of refusing the value",
    ),
    Mutant(
        "check_output_count_unchecked",
        "inception_fast/choices.py",
        "            if len(outs) != len(refs):\n",
        "            if False:\n",
        ("tests/test_ops.py", "-k", "checked_against_holds"),
        "a candidate returning fewer outputs than ATen is checked only on the ones they share",
    ),
    Mutant(
        "measures_while_capturing",
        "inception_fast/choices.py",
        "        return not capturing(device)",
        "        return True",
        ("tests/test_ops.py", "-k", "while_a_graph_captures"),
        "a measured choice times its candidates inside a user's CUDA-graph capture",
    ),
    Mutant(
        "auto_key_ignores_batch",
        "inception_fast/choices.py",
        "            tuple(x.shape),\n            tuple(w_red.shape),",
        "            tuple(x.shape[1:]),\n            tuple(w_red.shape),",
        ("tests/test_ops.py", "-k", "measures_once"),
        "auto's backend measured at batch 1 is reused at batch 256",
    ),
    Mutant(
        "offers_ignores_all",
        "inception_fast/stages.py",
        '    return form in names or "all" in names',
        "    return form in names",
        ("tests/test_chain_choice.py", "-k", "offered_only_on_request"),
        "INCEPTION_FAST_EXTRA_CANDIDATES=all offers neither the fold nor the chain",
    ),
    Mutant(
        "fold_needs_affine",
        "inception_fast/packing.py",
        "        scale = inv_std if gamma is None else gamma.to(work) * inv_std",
        "        scale = gamma.to(work) * inv_std",
        ("tests/test_packing.py", "-k", "affine_terms"),
        "an eval-mode BatchNorm with affine=False fails to fold (raw AttributeError)",
    ),
    Mutant(
        "pack_cache_ignores_dtype",
        "inception_fast/packing.py",
        "        entry = self._entries.get(dtype)\n",
        "        entry = next(iter(self._entries.values()), None)\n",
        ("tests/test_packing.py", "-k", "own_pack"),
        "a pack made for float32 is reused under bfloat16 autocast (and the reverse)",
    ),
    Mutant(
        "json_probe_file_left_behind",
        "inception_fast/cli.py",
        "    if not existed:\n        os.remove(path)\n",
        "",
        ("tests/test_main.py", "-k", "no_json_file_behind"),
        "a refused run leaves the empty --json file its up-front check created",
    ),
    Mutant(
        "thread_limit_off_by_one",
        "inception_fast/cli.py",
        "    if value > thread_limit():",
        "    if value >= thread_limit():",
        ("tests/test_benchmark_args.py", "-k", "exactly_the_limit"),
        "--threads equal to the limit is refused",
    ),
    Mutant(
        "input_size_checks_last_batch",
        "inception_fast/__main__.py",
        "    check_input_size(max(batches), size,",
        "    check_input_size(batches[-1], size,",
        ("tests/test_main.py", "-k", "bad_values and 1000000000000000000"),
        "--batch-sizes HUGE,1 passes the up-front size check and fails after the parity pass",
    ),
    Mutant(
        "main_backend_names_unstripped",
        "inception_fast/__main__.py",
        '[b.strip() for b in args.backend.split(",")]',
        'args.backend.split(",")',
        ("tests/test_main.py", "-k", "spaces_around"),
        '--backend "torch, onednn" is refused as the unknown backend " onednn"',
    ),
    Mutant(
        "cpp_pool_window_limit_off_by_one",
        "inception_fast/backends/extension.py",
        "or kernel > MAX_POOL_KERNEL:",
        "or kernel > MAX_POOL_KERNEL + 1:",
        ("tests/test_cuda_ext.py", "-k", "cpu_max_pool_layouts"),
        "the cpp backend's max pool sends a 9x9 window to the kernel, which refuses it, instead of ATen's",
    ),
    Mutant(
        "ref_linear_bias_zeroed",
        "inception_fast/reference.py",
        "                if isinstance(m, nn.Conv2d) and m.bias is not None:\n",
        "                if m.bias is not None:\n",
        ("tests/test_reference.py", "-k", "init_is_torchvisions"),
        "init_weights zeroes the linear biases, which torchvision's init leaves to nn.Linear's",
    ),
    Mutant(
        "ref_replaced_pool_ceil_ignored",
        "inception_fast/reference.py",
        "    return default if sizes.pop() != 1 else (*sizes, bool(ceil_mode))",
        "    return default if sizes.pop() != 1 else (*sizes, default[3])",
        ("tests/test_reference.py", "-k", "min_input_size_is_where"),
        "floor-mode pools put in: the size check passes inputs the pools then refuse deep in PyTorch",
    ),
    Mutant(
        "ref_transform_needs_three_unchecked",
        "inception_fast/reference.py",
        "        if transform_input and in_channels != 3:\n",
        "        if False:\n",
        ("tests/test_reference.py", "-k", "three_channels"),
        "transform_input with 1 channel is built, and fails as a conv channel error in the first forward",
    ),
    Mutant(
        "geo_pool_out_ceil_boundary",
        "inception_fast/geometry.py",
        "    if ceil and (out - 1) * s >= size + p:",
        "    if ceil and (out - 1) * s > size + p:",
        ("tests/test_stages.py", "-k", "pool_out"),
        "a ceil-mode pool whose last window starts past the input and its padding counts it (wrong size)",
    ),
    Mutant(
        "geo_block_pixels_width",
        "inception_fast/geometry.py",
        "    if x.shape[2] < 1 or x.shape[3] < 1:",
        "    if x.shape[2] < 1:",
        ("tests/test_inputs.py", "-k", "without_pixels"),
        "a block input of width 0 gets an obscure backend error, not the package's",
    ),
    Mutant(
        "geo_suggests_cl_contiguous_first",
        "inception_fast/geometry.py",
        "    if x.is_contiguous():\n        return False\n",
        "",
        ("tests/test_inputs.py", "-k", "one_channel"),
        "a contiguous 1-channel input gets a channels_last output where the reference's is contiguous",
    ),
    Mutant(
        "timing_quartiles_exclusive",
        "inception_fast/timing.py",
        'n=4, method="inclusive")',
        "n=4)",
        ("tests/test_main.py", "-k", "quartiles_of_a_few"),
        "quartiles of 2-3 samples reach outside min..max: rows are called too noisy to rank more often",
    ),
    Mutant(
        "timing_mean_not_median",
        "inception_fast/timing.py",
        "statistics.median(samples)",
        "statistics.mean(samples)",
        ("tests/test_main.py", "-k", "time_fn_reports"),
        "time_fn reports the mean: one outlier sample skews the reported time",
    ),
    Mutant(
        "timing_min_time_cap_late",
        "inception_fast/timing.py",
        "spent >= min_time_s * 0.5",
        "spent >= min_time_s",
        ("tests/test_main.py", "-k", "minimum_time_stops"),
        "time_fn with min_time_s runs up to twice as long before its 10 x repeats cap stops it",
    ),
    Mutant(
        "timing_interleaved_no_early_stop",
        "inception_fast/timing.py",
        "(not noisy or spent >= budget_s)",
        "not noisy and spent >= budget_s",
        ("tests/test_main.py", "-k", "stops_at_the_minimum_rounds"),
        "time_interleaved with a large budget runs to max_repeats although the rows separated",
    ),
    Mutant(
        "graph_input_device_unchecked",
        "inception_fast/graphs.py",
        " or x.device != s.device",
        "",
        ("tests/test_modules.py", "-k", "captured_forward_takes"),
        "a CUDA graph's input on another device is copied into its buffer instead of refused",
    ),
    Mutant(
        "precompile_key_without_strides",
        "inception_fast/precompiler.py",
        ", tuple(t.shape), t.stride())",
        ", tuple(t.shape))",
        ("tests/test_precompile.py", "-k", "per_input_layout"),
        "a channels_last input of an NCHW input's shape counts as already precompiled",
    ),
    Mutant(
        "compile_only_nested_ends_outer",
        "inception_fast/compile_only.py",
        "_LOCAL.recorded = outer",
        "_LOCAL.recorded = None",
        ("tests/test_precompile.py", "-k", "nested_compile_only"),
        "after a nested compile_only() ends, the outer pass stops being compile-only",
    ),
    Mutant(
        "store_format_unchecked",
        "inception_fast/choice_store.py",
        'data.get("format") != _FORMAT or ',
        "",
        ("tests/test_choice_store.py", "-k", "another_format"),
        "a store file of another format is read and its choices used, with no damaged warning",
    ),
    Mutant(
        "store_merge_stale_overwrites",
        "inception_fast/choice_store.py",
        ".setdefault(k, v)",
        "[k] = v",
        ("tests/test_choice_store.py", "-k", "another_process_rewrote"),
        "put's merge lets this process's stale entry overwrite a newer one another process wrote",
    ),
    Mutant(
        "recognize_stride2_accepted",
        "inception_fast/recognize.py",
        "if _pair(conv.stride) != 1:",
        "if _pair(conv.stride) not in (1, 2):",
        ("tests/test_recognize.py", "-k", "stride"),
        "a block whose convs have stride 2 is fused (its fused forward then fails on a size mismatch)",
    ),
    Mutant(
        "recognize_even_kernel_same_padding",
        "inception_fast/recognize.py",
        "if size % 2 == 0:",
        "if size % 2 == 0 and conv.padding != 'same':",
        ("tests/test_recognize.py", "-k", "same"),
        "a 4x4 conv with padding='same' is fused (the pattern has odd kernels only)",
    ),
    Mutant(
        "recognize_non_square_kernel",
        "inception_fast/recognize.py",
        "len(set(v)) == 1",
        "len(v) >= 1",
        ("tests/test_recognize.py", "-k", "3x5"),
        "a conv with a non-square (3, 5) kernel is taken as a 3x3 and fused",
    ),
    Mutant(
        "recognize_any_norm_folds",
        "inception_fast/recognize.py",
        "if type(bn) not in batch_norm_kinds():",
        "if not isinstance(bn, nn.Module):",
        ("tests/test_recognize.py", "-k", "instance"),
        "any module after a conv is taken as a BatchNorm: InstanceNorm fuses, GroupNorm crashes fuse()",
    ),
    Mutant(
        "recognize_leaky_relu_as_relu",
        "inception_fast/recognize.py",
        "type(root.get_submodule(node.target)) is nn.ReLU",
        'type(root.get_submodule(node.target)).__name__.endswith("ReLU")',
        ("tests/test_recognize.py", "-k", "leaky"),
        "an nn.LeakyReLU is taken as a ReLU and the block fused (wrong answer on negative inputs)",
    ),
    Mutant(
        "recognize_train_eval_match_unchecked",
        "inception_fast/recognize.py",
        "if matches[0] != matches[1]:",
        "if matches[0] != matches[1] and False:",
        ("tests/test_recognize.py", "-k", "only"),
        "a block applying BatchNorm only in train mode is fused from its eval trace (train mode loses the BN)",
    ),
    Mutant(
        "recognize_cat_last_dim",
        "inception_fast/recognize.py",
        "if dim != 1:",
        "if dim not in (1, -1):",
        ("tests/test_recognize.py", "-k", "along"),
        "torch.cat along dim -1 (the width) is taken as a channel concat",
    ),
    Mutant(
        "recognize_pre_hooks_ignored",
        "inception_fast/recognize.py",
        "        or m._forward_pre_hooks\n",
        "",
        ("tests/test_recognize.py", "-k", "pre"),
        "a block carrying a forward pre-hook is fused (the fused block drops a pre-hook on the block itself)",
    ),
    Mutant(
        "recognize_seven_conv_container_skipped",
        "inception_fast/recognize.py",
        "elif n > 6:",
        "elif n > 7:",
        ("tests/test_recognize.py", "-k", "explicit"),
        "fuse() does not search a container holding exactly seven convs: the block inside stays unfused",
    ),
    Mutant(
        "recognize_wrapped_helper_unchecked",
        "inception_fast/recognize.py",
        'if hasattr(fn, "__wrapped__"):',
        "if False:",
        ("tests/test_recognize.py", "-k", "DecoratedHelper"),
        "a helper method wrapped by a decorator that draws random numbers is fused with its draw frozen",
    ),
    Mutant(
        "recognize_nested_code_unchecked",
        "inception_fast/recognize.py",
        'nested = [c for c in code.co_consts if hasattr(c, "co_code")]',
        "nested = []",
        ("tests/test_recognize.py", "-k", "NestedDraw"),
        "random drawn in a function defined inside forward goes unseen: the block is fused with its draw frozen",
    ),
    Mutant(
        "network_choice_not_run",
        "inception_fast/modules.py",
        "            if chosen is not None:\n",
        "            if False:\n",
        ("tests/test_network_choice.py", "-k", "kept_backend"),
        "the blocks ignore the network's choice: auto on CPU keeps running oneDNN whatever was measured",
    ),
    Mutant(
        "network_choice_overrides_named",
        "inception_fast/modules.py",
        '        if self.requested_backend == "auto" and device.type == "cpu" and not torch.compiler.is_compiling():\n',
        '        if device.type == "cpu" and not torch.compiler.is_compiling():\n',
        ("tests/test_network_choice.py", "-k", "named_backend"),
        "a block given a backend by name runs the network's choice instead",
    ),
    Mutant(
        "network_measured_with_grad",
        "inception_fast/modules.py",
        "            or torch.is_grad_enabled()\n            or x.dtype not in onednn_backend.dtypes()\n",
        "            or x.dtype not in onednn_backend.dtypes()\n",
        ("tests/test_network_choice.py", "-k", "train_mode"),
        "a forward with gradients is measured: the timed forwards build autograd graphs",
    ),
    Mutant(
        "network_measured_fp16",
        "inception_fast/modules.py",
        '            or x.dtype not in onednn_backend.dtypes()\n            or _autocast_on("cpu")\n',
        '            or _autocast_on("cpu")\n',
        ("tests/test_network_choice.py", "-k", "other_dtypes"),
        "a float16 forward is measured, where auto's oneDNN form never runs",
    ),
    Mutant(
        "network_measured_under_autocast",
        "inception_fast/modules.py",
        '            or _autocast_on("cpu")\n            or torch.compiler.is_compiling()\n',
        "            or torch.compiler.is_compiling()\n",
        ("tests/test_network_choice.py", "-k", "other_dtypes"),
        "a forward under autocast is measured",
    ),
    Mutant(
        "network_measured_in_train_mode",
        "inception_fast/modules.py",
        " or self._hooked_children or any(m.training for m in self.modules()):",
        " or self._hooked_children:",
        ("tests/test_network_choice.py", "-k", "train_mode"),
        "a forward with a module in train mode is run a dozen times: BatchNorm statistics move, dropout draws",
    ),
    Mutant(
        "network_measured_with_hooks",
        "inception_fast/modules.py",
        " or self._hooked_children or any(m.training for m in self.modules()):",
        " or any(m.training for m in self.modules()):",
        ("tests/test_network_choice.py", "-k", "hooks"),
        "a forward whose modules carry hooks is run a dozen times: the hooks run on every timed forward",
    ),
    Mutant(
        "network_measured_in_static_mode",
        "inception_fast/modules.py",
        "            if not chooser.can_measure(x.device) or self._hooked_children",
        "            if self._hooked_children",
        ("tests/test_network_choice.py", "-k", "static_mode"),
        "static mode's unmeasured answer is kept for the model: a later forward that may measure never does",
    ),
    Mutant(
        "network_no_pixel_cap",
        "inception_fast/modules.py",
        "        if n * h * w <= CPU_NETWORK_MEASURE_PIXELS:\n",
        "        if True:\n",
        ("tests/test_network_choice.py", "-k", "large_inputs"),
        "inputs of any size are measured: a dozen whole forwards at batch 256",
    ),
    Mutant(
        "network_pixel_cap_exclusive",
        "inception_fast/modules.py",
        "        if n * h * w <= CPU_NETWORK_MEASURE_PIXELS:\n",
        "        if n * h * w < CPU_NETWORK_MEASURE_PIXELS:\n",
        ("tests/test_network_choice.py", "-k", "large_inputs"),
        "an input of exactly the limit is not measured",
    ),
    Mutant(
        "network_memo_ignores_children",
        "inception_fast/modules.py",
        "channels_last, threads, tuple(map(id, self._modules.values())))",
        "channels_last, threads)",
        ("tests/test_network_choice.py", "-k", "block_put_in"),
        "a block put in keeps the choice made for the model before",
    ),
    Mutant(
        "network_memo_ignores_threads",
        "inception_fast/modules.py",
        "memo_key = (x.shape, x.dtype, channels_last, threads, ",
        "memo_key = (x.shape, x.dtype, channels_last, ",
        ("tests/test_network_choice.py", "-k", "threads"),
        "a new thread count keeps the choice measured with the old one",
    ),
    Mutant(
        "network_memo_ignores_layout",
        "inception_fast/modules.py",
        "memo_key = (x.shape, x.dtype, channels_last, threads, ",
        "memo_key = (x.shape, x.dtype, threads, ",
        ("tests/test_network_choice.py", "-k", "threads"),
        "an NCHW input keeps the choice measured for channels_last",
    ),
    Mutant(
        "network_layers_names_only",
        "inception_fast/modules.py",
        "    shapes = [(name, tuple(p.shape)) for name, p in model.named_parameters()]\n",
        "    shapes = [name for name, p in model.named_parameters()]\n",
        ("tests/test_network_choice.py", "-k", "block_put_in"),
        "models whose blocks differ in channels share one choice",
    ),
    Mutant(
        "network_candidates_unchecked",
        "inception_fast/modules.py",
        "            name: choices.checked_against(\n",
        "            name: (lambda run, *_: run)(\n",
        ("tests/test_network_choice.py", "-k", "disagrees"),
        "a backend whose network result is wrong may be chosen for being fast",
    ),
    Mutant(
        "network_failure_raised",
        "inception_fast/modules.py",
        "            except choices.EveryCandidateFailed:\n",
        "            except ZeroDivisionError:\n",
        ("tests/test_network_choice.py", "-k", "fails_everywhere"),
        "a model that cannot run raises the measuring's error, not its own",
    ),
    Mutant(
        "network_timed_in_turn",
        "inception_fast/choices.py",
        "        from .timing import time_interleaved\n\n        def first(name):\n",
        "        return super()._seconds(key, device, runners, names)\n\n        def first(name):\n",
        ("tests/test_network_choice.py", "-k", "interleaved"),
        "whole forwards are timed one candidate after another: a drift of the machine's speed favours one",
    ),
    Mutant(
        "network_failed_one_timed",
        "inception_fast/choices.py",
        "            {name: runners[name] for name in ran},\n",
        "            {name: runners[name] for name in names},\n",
        ("tests/test_network_choice.py", "-k", "interleaved"),
        "a candidate that failed its first run is timed anyway",
    ),
    Mutant(
        "pool_key_ignores_threads",
        "inception_fast/stages.py",
        '    threads = torch.get_num_threads() if x.device.type == "cpu" else None\n',
        "    threads = None\n",
        ("tests/test_stages.py", "-k", "per_thread"),
        "a CPU pool keeps the choice measured at another thread count",
    ),
    Mutant(
        "ops_bias_dtype_unchecked",
        "inception_fast/ops.py",
        "        if t.dtype != x.dtype:\n"
        "            raise TypeError(\n"
        '                f"input dtype {x.dtype} does not match weight {name}',
        "        if t.dtype != x.dtype and t.dim() > 1:\n"
        "            raise TypeError(\n"
        '                f"input dtype {x.dtype} does not match weight {name}',
        ("tests/test_ops.py", "-k", "mismatches_are_refused"),
        "a bias or weight in another dtype than the input passes the check (Triton takes it without a word; the "
        "fake kernel traces it)",
    ),
    Mutant(
        "ops_cin_more_channels_accepted",
        "inception_fast/ops.py",
        '    if x.shape[1] != cin:\n        raise ValueError(\n            f"Inception block expects {cin}',
        '    if x.shape[1] < cin:\n        raise ValueError(\n            f"Inception block expects {cin}',
        ("tests/test_ops.py", "-k", "mismatches_are_refused"),
        "an input with more channels than the weights take passes (Triton silently computes on the wrong channels)",
    ),
    Mutant(
        "ops_b5_unchecked",
        "inception_fast/ops.py",
        '    for name, b, n in (("b3", b3, w3.shape[0]), ("b5", b5, w5.shape[0])):\n',
        '    for name, b, n in (("b3", b3, w3.shape[0]),):\n',
        ("tests/test_ops.py", "-k", "inconsistent"),
        "a b5 of the wrong length passes the check (Triton reads past it; the fake kernel accepts it)",
    ),
    Mutant(
        "ops_b_pool_unchecked",
        "inception_fast/ops.py",
        '    for name, b, n in (("b_red", b_red, w_red.shape[0]), ("b_pool", b_pool, w_pool.shape[0])):\n',
        '    for name, b, n in (("b_red", b_red, w_red.shape[0]),):\n',
        ("tests/test_ops.py", "-k", "inconsistent"),
        "a b_pool of the wrong length passes the check",
    ),
    Mutant(
        "ops_weight_device_unchecked",
        "inception_fast/ops.py",
        '        if t.device != x.device:\n            raise RuntimeError(f"input is on {x.device} but weight {name}',
        '        if False:\n            raise RuntimeError(f"input is on {x.device} but weight {name}',
        ("tests/test_ops.py", "-k", "mismatches_are_refused"),
        "a weight on another device than the input reaches the kernels",
    ),
    Mutant(
        "ops_block_scratch_differentiable",
        "inception_fast/ops.py",
        "    ctx.save_for_backward(x, w_red, w_pool, w3, w5, out, scratch)\n    ctx.mark_non_differentiable(scratch)\n",
        "    ctx.save_for_backward(x, w_red, w_pool, w3, w5, out, scratch)\n",
        ("tests/test_backward.py", "-k", "only_the_block_output"),
        "the scratch output requires grad, and a loss through it gets its gradient silently dropped",
    ),
    Mutant(
        "ops_backward_dtype_unchecked",
        "inception_fast/ops.py",
        "        if t.device != x.device or t.dtype != x.dtype:\n"
        "            raise TypeError(\n"
        '                f"inception_block_backward:',
        '        if t.device != x.device:\n            raise TypeError(\n                f"inception_block_backward:',
        ("tests/test_backward.py", "-k", "mismatched"),
        "a grad_out/out/scratch of another dtype reaches the backward kernels",
    ),
    Mutant(
        "ops_backward_scratch_shape_unchecked",
        "inception_fast/ops.py",
        '    for name, t, c in (("grad_out", grad_out, channels.total), ("out", out, channels.total)) + (\n'
        '        ("scratch", scratch, channels.reductions),\n'
        "    ):\n",
        '    for name, t, c in (("grad_out", grad_out, channels.total), ("out", out, channels.total)):\n',
        ("tests/test_backward.py", "-k", "mismatched"),
        "a scratch of the wrong shape reaches the backward kernels (Triton reads past it)",
    ),
    Mutant(
        "ops_pooled_empty_unpooled_shape",
        "inception_fast/ops.py",
        "    if x.shape[0] == 0:  # an empty batch: nothing to compute\n"
        "        return geometry.empty_outputs(x, w_red, w_pool, w3, w5, hw)[0]\n",
        "    if x.shape[0] == 0:  # an empty batch: nothing to compute\n"
        "        return geometry.empty_outputs(x, w_red, w_pool, w3, w5)[0]\n",
        ("tests/test_inputs.py", "-k", "pooled_size"),
        "a pooled block's empty batch has the unpooled height and width",
    ),
    Mutant(
        "ops_conv_relu_default_stride",
        "inception_fast/ops.py",
        'str backend, int stride=1, Tensor? w_rows=None) -> Tensor"\n',
        'str backend, int stride=2, Tensor? w_rows=None) -> Tensor"\n',
        ("tests/test_triton_conv_rows.py", "-k", "op_stride_checks"),
        "schema default stride=2: an explicit stride-2 call (dropped by the dispatcher as the default) runs the "
        "Python kernel at stride 1",
    ),
    Mutant(
        "ops_max_pool_backward_no_padding",
        "inception_fast/ops.py",
        "    ctx.pool = (kernel, stride, padding, ceil_mode)\n",
        "    ctx.pool = (kernel, stride, 0, ceil_mode)\n",
        ("tests/test_ops.py", "-k", "padded_pool"),
        "max_pool2d's gradient is the unpadded pool's (wrong pixels, or a shape error)",
    ),
    Mutant(
        "ops_bn_train_empty_batch_accepted",
        "inception_fast/ops.py",
        "    if n == 0:\n"
        '        raise ValueError("inception_block_bn_train needs a non-empty batch (no'
        ' values to take statistics of)")\n',
        "",
        ("tests/test_train_bn.py", "-k", "rejects_bad_arguments"),
        "an empty batch reaches the train-mode kernel: NaN batch statistics (and NaN running statistics)",
    ),
    Mutant(
        "ops_bn_train_fake_stats_dtype",
        "inception_fast/ops.py",
        "    mean = torch.empty(c_all, dtype=torch.float32, device=x.device)\n",
        "    mean = torch.empty(c_all, dtype=x.dtype, device=x.device)\n",
        ("tests/test_train_bn.py", "-k", "real_outputs_shapes"),
        "the train-mode op's fake kernel gives bf16/fp16 batch statistics where the real op gives float32",
    ),
    Mutant(
        "ops_bn_train_gamma_dtype_unchecked",
        "inception_fast/ops.py",
        "        if t.dtype not in (x.dtype, torch.float32):\n",
        "        if False:\n",
        ("tests/test_train_bn.py", "-k", "rejects_bad_arguments"),
        "a float64 (or int) gamma/beta passes the check",
    ),
    Mutant(
        "torchbe_pooled_no_ceil",
        "inception_fast/backends/torch_backend.py",
        "    pooled = F.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode).contiguous(",
        "    pooled = F.max_pool2d(x, kernel, stride, padding).contiguous(",
        ("tests/test_ops.py", "-k", "take_ceil_mode"),
        "the pooled block ignores ceil_mode",
    ),
    Mutant(
        "torchbe_bn_conv_bias_dropped",
        "inception_fast/backends/torch_backend.py",
        "        y2d.copy_(geometry.rows(F.conv2d(inp, wgt, bias, padding=k // 2)))\n",
        "        y2d.copy_(geometry.rows(F.conv2d(inp, wgt, None, padding=k // 2)))\n",
        ("tests/test_train_bn.py", "-k", "float64_reference_with"),
        "train-mode BN forward drops the 3x3/kxk conv bias: batch mean (and running mean) off by the bias",
    ),
    Mutant(
        "torchbe_stem_not_channels_last",
        "inception_fast/backends/torch_backend.py",
        "        y = F.max_pool2d(y, pool_kernel, pool_stride, pool_padding, ceil_mode=ceil_mode)\n"
        "    return y.contiguous(memory_format=torch.channels_last)\n",
        "        y = F.max_pool2d(y, pool_kernel, pool_stride, pool_padding, ceil_mode=ceil_mode)\n    return y\n",
        ("tests/test_ops.py", "-k", "channels_last_as"),
        "conv_relu_maxpool returns NCHW for an NCHW input (the fake kernel says channels_last)",
    ),
    Mutant(
        "conv_relu_fused_under_autocast",
        "inception_fast/stages.py",
        "    if w.dtype != x.dtype or b.dtype != x.dtype or torch.is_autocast_enabled(x.device.type):",
        "    if w.dtype != x.dtype or b.dtype != x.dtype:",
        ("tests/test_triton_conv_relu.py", "-k", "autocast"),
        "an fp32 conv2/conv3 under autocast runs the fp32 model's stored fused choice, not autocast's dtype",
    ),
    Mutant(
        "stem_key_ignores_ceil_mode",
        "inception_fast/stages.py",
        "        pool.dilation,\n        pool.ceil_mode,\n",
        "        pool.dilation,\n",
        ("tests/test_stages.py", "-k", "stem_key"),
        "stems whose maxpool1 differs only in ceil mode share one measured form",
    ),
    Mutant(
        "stem_key_ignores_layout",
        "inception_fast/stages.py",
        "        x.is_contiguous(),\n",
        "        True,\n",
        ("tests/test_stages.py", "-k", "stem_key"),
        "NCHW and channels_last inputs share one measured stem form",
    ),
    Mutant(
        "main_fused_input_layout_ignored",
        "inception_fast/__main__.py",
        'fmt = torch.channels_last if args.memory_format == "channels_last" else torch.contiguous_format',
        "fmt = torch.channels_last",
        ("tests/test_main.py", "-k", "tunes_each"),
        "--memory-format contiguous still feeds the fused models channels_last input",
    ),
    Mutant(
        "main_fused_layout_label",
        "inception_fast/__main__.py",
        '    fused_layout = "NCHW" if fmt == torch.contiguous_format else "channels_last"',
        '    fused_layout = "channels_last"',
        ("tests/test_main.py", "-k", "tunes_each"),
        "the fused rows of an NCHW run are labelled channels_last",
    ),
    Mutant(
        "main_last_ranking_only",
        "inception_fast/__main__.py",
        "        verdicts.append(_verdict(n, state, overlapping(timings, pairs)))",
        "        verdicts = [_verdict(n, state, overlapping(timings, pairs))]",
        ("tests/test_main.py", "-k", "noisy"),
        "the rankings keep only the last batch size's",
    ),
    Mutant(
        "main_pairs_nchw_only",
        "inception_fast/__main__.py",
        "    pairs = [(f, b) for f in fused_rows for b in baselines]",
        "    pairs = [(f, b) for f in fused_rows for b in list(baselines)[:1]]",
        ("tests/test_main.py", "-k", "noisy"),
        "the fused rows are ranked against torchvision NCHW only, not its channels_last row",
    ),
    Mutant(
        "main_table_iqr",
        "inception_fast/__main__.py",
        "        iqr = f\"{r['q1_ms']:.2f}–{r['q3_ms']:.2f}\"",
        "        iqr = f\"{r['q1_ms']:.2f}–{r['q1_ms']:.2f}\"",
        ("tests/test_main.py", "-k", "noisy"),
        "the table's IQR column prints the first quartile twice",
    ),
    Mutant(
        "main_any_runtime_error_as_oom",
        "inception_fast/__main__.py",
        "        if not is_allocation_failure(exc):\n            raise\n",
        "",
        ("tests/test_main.py", "-k", "runtime_error"),
        "any RuntimeError from the run (a bug) is reported as running out of memory",
    ),
    Mutant(
        "main_d2l_default_size",
        "inception_fast/__main__.py",
        '(96 if args.variant == "d2l" else 224)',
        "224",
        ("tests/test_main.py", "-k", "depend_on_other"),
        "d2l runs at 224 by default, not its 96",
    ),
    Mutant(
        "main_repeats_still_budgeted",
        "inception_fast/__main__.py",
        "        budget = 0.0 if args.repeats else (10.0 if on_gpu else 20.0)",
        "        budget = 10.0 if on_gpu else 20.0",
        ("tests/test_main.py", "-k", "depend_on_other"),
        "--repeats without --time-budget still spends the default budget on more rounds",
    ),
    Mutant(
        "cli_cuda_index_one_past",
        "inception_fast/cli.py",
        "        if (device.index or 0) >= torch.cuda.device_count():",
        "        if (device.index or 0) > torch.cuda.device_count():",
        ("tests/test_main.py", "-k", "cuda_index_past"),
        "cuda:N on a machine with N CUDA devices is taken",
    ),
    Mutant(
        "cli_oom_line_without_the_cause",
        "inception_fast/cli.py",
        "    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__",
        "    first = type(exc).__name__",
        ("tests/test_main.py", "-k", "out_of_memory"),
        "the out-of-memory line drops the allocator's message",
    ),
    Mutant(
        "work_count_no_bias",
        "benchmarks/helpers/shapes.py",
        "* self.kh * self.kw + self.cout\n",
        "* self.kh * self.kw\n",
        WORK_COUNTS,
        "a folded conv's bias is left out of the weight bytes",
    ),
    Mutant(
        "work_count_flop_per_mac",
        "benchmarks/helpers/shapes.py",
        "        return 2 * self.macs(batch)\n",
        "        return self.macs(batch)\n",
        WORK_COUNTS,
        "a block counts one FLOP per multiply-add",
    ),
    Mutant(
        "work_count_no_weights",
        "benchmarks/helpers/shapes.py",
        "(c * h * w + co * ho * wo) + weights)",
        "(c * h * w + co * ho * wo))",
        WORK_COUNTS,
        "a block's floor traffic leaves out its weights",
    ),
    Mutant(
        "work_count_stem_input",
        "benchmarks/helpers/shapes.py",
        '            io[key].setdefault("in", tuple(inp[0].shape[1:]))\n',
        '            io[key]["in"] = tuple(inp[0].shape[1:])\n',
        WORK_COUNTS,
        "the stem's input is taken at maxpool2, not conv1",
    ),
    Mutant(
        "work_count_stem_output",
        "benchmarks/helpers/shapes.py",
        '            io[key]["out"] = tuple(out.shape[1:])\n',
        '            io[key].setdefault("out", tuple(out.shape[1:]))\n',
        WORK_COUNTS,
        "the stem's output is taken at conv1",
    ),
    Mutant(
        "work_count_avgpool",
        "benchmarks/helpers/shapes.py",
        "                flops += in_shape[0] * in_shape[1] * in_shape[2]\n",
        "                pass\n",
        WORK_COUNTS,
        "the head's average pool adds nothing to its FLOPs",
    ),
    Mutant(
        "work_count_fc",
        "benchmarks/helpers/shapes.py",
        "flops += 2 * mod.in_features * mod.out_features",
        "flops += mod.in_features * mod.out_features",
        WORK_COUNTS,
        "the fc counts one FLOP per multiply-add",
    ),
    Mutant(
        "work_count_stage_output",
        "benchmarks/helpers/shapes.py",
        "seen[layers[0]][0], seen[layers[-1]][1]",
        "seen[layers[0]][0], seen[layers[0]][1]",
        WORK_COUNTS,
        "a stage of two layers (conv1 + maxpool1) ends at its first layer's output",
    ),
    Mutant(
        "work_count_pool_role",
        "benchmarks/helpers/roofline.py",
        "        macs += pix * cin * n_pool\n",
        "        macs += pix * cin * n_red\n",
        WORK_COUNTS,
        "launch 1's pool role is counted with the reduce GEMM's columns",
    ),
    Mutant(
        "work_count_launch1_input",
        "benchmarks/helpers/roofline.py",
        "    macs, elems = 0, pix * cin\n",
        "    macs, elems = 0, 0\n",
        WORK_COUNTS,
        "launch 1's input read is left out of its bytes",
    ),
    Mutant(
        "report_x_eager_inverted",
        "benchmarks/report.py",
        'r["x_eager"] = eager["median_s"] / r["median_s"] if eager else None',
        'r["x_eager"] = r["median_s"] / eager["median_s"] if eager else None',
        REPORT,
        "a row's × eager is torchvision's time over the row's, inverted",
    ),
    Mutant(
        "report_anchor_reduce_overhead_first",
        "benchmarks/report.py",
        'COMPILE_ANCHORS = ("tv_compile", "tv_compile_ro")',
        'COMPILE_ANCHORS = ("tv_compile_ro", "tv_compile")',
        REPORT,
        "× compile takes reduce-overhead before default mode where both ran",
    ),
    Mutant(
        "report_peer_from_nchw_config",
        "benchmarks/report.py",
        '        if fmt != "channels_last" or not str(dev).startswith("cpu"):\n',
        '        if not str(dev).startswith("cpu"):\n',
        REPORT,
        "an engine timed in the NCHW config competes for best peer",
    ),
    Mutant(
        "report_best_peer_marked_against_itself",
        "benchmarks/report.py",
        '                mark = " ≈" if r is not peer and _overlap(r, peer) else ""\n',
        '                mark = " ≈" if _overlap(r, peer) else ""\n',
        REPORT,
        "the best peer's own row is marked ≈",
    ),
    Mutant(
        "report_headline_fewest_threads",
        "benchmarks/report.py",
        '            return max(found, key=lambda c: int("".join(ch for ch in c[0] if ch.isdigit()) or 0))',
        '            return min(found, key=lambda c: int("".join(ch for ch in c[0] if ch.isdigit()) or 0))',
        REPORT,
        "the short table heads with the CPU run on the fewest threads",
    ),
    Mutant(
        "report_rel_err_last_config",
        "benchmarks/report.py",
        "errs[key] = math.nan if math.isnan(v) or math.isnan(prev) else max(prev, v)",
        "errs[key] = v",
        REPORT,
        "the largest-error table keeps the last config's error, not the largest",
    ),
    Mutant(
        "report_rel_err_nan_overwritten",
        "benchmarks/report.py",
        "errs[key] = math.nan if math.isnan(v) or math.isnan(prev) else max(prev, v)",
        "errs[key] = v if math.isnan(v) or math.isnan(prev) else max(prev, v)",
        REPORT,
        "a NaN error is replaced by a later config's finite one",
    ),
    Mutant(
        "report_launch1_ratio_inverted",
        "benchmarks/report.py",
        '    return ext["median_s"] / tri["median_s"] if ext and tri else None',
        '    return tri["median_s"] / ext["median_s"] if ext and tri else None',
        REPORT,
        "launch 1 ext/triton is inverted",
    ),
    Mutant(
        "report_mmac_per_image_doubled",
        "benchmarks/report.py",
        'mmac = full[0]["flops"] / 2 / full[0]["batch"] / 1e6 if full else None',
        'mmac = full[0]["flops"] / full[0]["batch"] / 1e6 if full else None',
        REPORT,
        "MMAC per image is read off FLOPs without halving",
    ),
    Mutant(
        "report_stage_total_last",
        "benchmarks/report.py",
        '            if v.get(i):\n                total[i] += v[i]["median_s"]\n',
        '            if v.get(i):\n                total[i] = v[i]["median_s"]\n',
        REPORT,
        "the stages' total is the last stage's time",
    ),
    Mutant(
        "report_choice_listed_per_row",
        "benchmarks/report.py",
        "            if ident not in seen:\n",
        "            if True:\n",
        REPORT,
        "a measured choice recorded by two rows is listed twice",
    ),
    Mutant(
        "report_choice_count_one",
        "benchmarks/report.py",
        'per[c["chosen"]] = per.get(c["chosen"], 0) + 1',
        'per[c["chosen"]] = 1',
        REPORT,
        "the short line counts one key per chosen candidate",
    ),
    Mutant(
        "report_overlap_always",
        "benchmarks/report.py",
        "    return a1 <= b3 and b1 <= a3\n",
        "    return a1 <= b3 or b1 <= a3\n",
        REPORT,
        "any two spreads count as overlapping",
    ),
    Mutant(
        "report_best_peer_slowest",
        "benchmarks/report.py",
        '            best[(dev, dtype, batch)] = min(peers, key=lambda r: r["median_s"])',
        '            best[(dev, dtype, batch)] = max(peers, key=lambda r: r["median_s"])',
        REPORT,
        "the slowest peer is taken as best",
    ),
    Mutant(
        "report_stage_target_inverted",
        "benchmarks/report.py",
        '        if fu and fu.get("roofline_fraction") is not None and fu["roofline_fraction"] < STAGE_TARGET:\n',
        '        if fu and fu.get("roofline_fraction") is not None and fu["roofline_fraction"] > STAGE_TARGET:\n',
        REPORT,
        "stages above the 50% target are listed as below it",
    ),
    Mutant(
        "report_train_speedup_inverted",
        "benchmarks/report.py",
        "_fmt_x(ref / best) if ref and best else",
        "_fmt_x(best / ref) if ref and best else",
        REPORT,
        "the training speed-up is ours over plain PyTorch's",
    ),
    Mutant(
        "timing_no_warmup",
        "inception_fast/timing.py",
        "    with torch.inference_mode():\n        for _ in range(warmup):\n            fn()\n",
        "    with torch.inference_mode():\n",
        ("tests/test_main.py", "-k", "time_fn"),
        "time_fn times the first calls (no warm-up calls made)",
    ),
    Mutant(
        "timing_interleaved_past_the_cap",
        "inception_fast/timing.py",
        "        if rounds >= max_repeats or (",
        "        if (",
        ("tests/test_main.py", "-k", "samples_until"),
        "time_interleaved ignores max_repeats (overlapping rows run forever)",
    ),
    Mutant(
        "timing_interleaved_all_pairs",
        "inception_fast/timing.py",
        "        noisy = overlapping(timings, pairs)\n",
        "        noisy = overlapping(timings)\n",
        ("tests/test_main.py", "-k", "only_the_pairs"),
        "time_interleaved judges every pair, not the pairs asked for",
    ),
    Mutant(
        "timing_progress_off_by_one",
        "inception_fast/timing.py",
        "                on_sample(i, repeats)\n",
        "                on_sample(i - 1, repeats)\n",
        ("tests/test_main.py", "-k", "time_fn_warms"),
        "on_sample counts samples from 0",
    ),
    Mutant(
        "timing_interleaved_mean",
        "inception_fast/timing.py",
        "        timings = {label: Timing(statistics.median(s), s, batch) for label, s in samples.items()}\n",
        "        timings = {label: Timing(statistics.mean(s), s, batch) for label, s in samples.items()}\n",
        ("tests/test_main.py", "-k", "only_the_pairs"),
        "time_interleaved reports each row's mean: one slow round moves it",
    ),
    Mutant(
        "timing_graph_on_cpu_taken",
        "inception_fast/timing.py",
        "    if cuda_graph and not is_cuda:\n",
        "    if False:\n",
        ("tests/test_main.py", "-k", "time_fn_warms"),
        "cuda_graph timing on a CPU device is not refused",
    ),
    Mutant(
        "timing_outside_inference_mode",
        "inception_fast/timing.py",
        "    with torch.inference_mode():\n        for _ in range(warmup):",
        "    if True:\n        for _ in range(warmup):",
        ("tests/test_main.py", "-k", "time_fn_warms"),
        "the timed calls run with autograd recording",
    ),
    Mutant(
        "measure_quartiles_swapped",
        "benchmarks/helpers/measure.py",
        "        q1_s=timing.quartiles_s[0],\n        q3_s=timing.quartiles_s[1],\n",
        "        q1_s=timing.quartiles_s[1],\n        q3_s=timing.quartiles_s[0],\n",
        ("tests/test_benchmarks_quick.py", "-k", "measure_records"),
        "a row's q1_s and q3_s are swapped",
    ),
    Mutant(
        "measure_extremes_unsorted",
        "benchmarks/helpers/measure.py",
        "    samples = sorted(timing.samples_s)\n",
        "    samples = list(timing.samples_s)\n",
        ("tests/test_benchmarks_quick.py", "-k", "measure_records"),
        "a row's min_s and max_s are its first and last samples",
    ),
    Mutant(
        "measure_images_per_s_batch_one",
        "benchmarks/helpers/measure.py",
        "        images_per_s=timing.images_per_s,\n",
        "        images_per_s=1 / timing.median_s,\n",
        ("tests/test_benchmarks_quick.py", "-k", "measure_records"),
        "a row's images per second ignore its batch",
    ),
    Mutant(
        "measure_case_fields_dropped",
        "benchmarks/helpers/measure.py",
        "    info = dict(extra)\n",
        "    info = {}\n",
        ("tests/test_benchmarks_quick.py", "-k", "measure_records"),
        "the case's own fields (kind, block, ...) are not recorded",
    ),
    Mutant(
        "measure_one_pedantic_round",
        "benchmarks/helpers/measure.py",
        "    benchmark.pedantic(synced, rounds=s.rounds, iterations=1, warmup_rounds=0)\n",
        "    benchmark.pedantic(synced, rounds=1, iterations=1, warmup_rounds=0)\n",
        ("tests/test_benchmarks_quick.py", "-k", "measure_records"),
        "pytest-benchmark runs one round whatever the settings say",
    ),
    Mutant(
        "measure_parity_raises",
        "benchmarks/helpers/measure.py",
        "        return rel_error(out, ref)\n    except Exception:\n        return None\n",
        "        return rel_error(out, ref)\n    except ZeroDivisionError:\n        return None\n",
        ("tests/test_benchmarks_quick.py", "-k", "measure_records"),
        "a parity that cannot be computed fails the benchmark",
    ),
    Mutant(
        "measure_rounds_take_the_fastest_call",
        "benchmarks/helpers/measure.py",
        "append(time_fn(fn, warmup=warmup, repeats=repeats).median_s)",
        "append(time_fn(fn, warmup=warmup, repeats=repeats).min_s)",
        ("tests/test_benchmarks_quick.py", "-k", "measure_records"),
        "interleaved rounds record each round's fastest call",
    ),
    Mutant(
        "measure_rounds_table_last_not_max",
        "benchmarks/helpers/measure.py",
        "        ms = [statistics.median(v) * 1e3, min(v) * 1e3, max(v) * 1e3]\n",
        "        ms = [statistics.median(v) * 1e3, min(v) * 1e3, v[-1] * 1e3]\n",
        ("tests/test_benchmarks_quick.py", "-k", "measure_records"),
        "the rounds table's max column is the last round",
    ),
    Mutant(
        "geometry_conv_out_rounds_up",
        "inception_fast/geometry.py",
        "    return (size + 2 * p - k) // s + 1\n",
        "    return (size + 2 * p - k + s - 1) // s + 1\n",
        ("tests/test_geometry.py",),
        "a convolution's output size rounds up",
    ),
    Mutant(
        "geometry_pre_bn_pieces_overlap",
        "inception_fast/geometry.py",
        "        start += rows * c\n",
        "        start += c\n",
        ("tests/test_geometry.py",),
        "the pre-BN pieces overlap (each starts c elements after the last)",
    ),
    Mutant(
        "geometry_pre_bn_widths_swapped",
        "inception_fast/geometry.py",
        "    widths = (w_red.shape[0], ch3, ch5, pool)\n",
        "    widths = (w_red.shape[0], ch5, ch3, pool)\n",
        ("tests/test_geometry.py",),
        "the pre-BN pieces of the 3x3 and the kxk are swapped",
    ),
    Mutant(
        "geometry_even_branch3_taken",
        "inception_fast/geometry.py",
        "    if k5 % 2 == 0 or w5.shape[-2] != k5:\n",
        "    if w5.shape[-2] != k5:\n",
        ("tests/test_geometry.py",),
        "launch 2 takes an even-sized branch-3 conv",
    ),
    Mutant(
        "geometry_oblong_branch3_taken",
        "inception_fast/geometry.py",
        "    if k5 % 2 == 0 or w5.shape[-2] != k5:\n",
        "    if k5 % 2 == 0:\n",
        ("tests/test_geometry.py",),
        "launch 2 takes a non-square branch-3 conv",
    ),
    Mutant(
        "geometry_fold_stride_three",
        "inception_fast/geometry.py",
        "1 <= stride <= min(kernel, 2) and",
        "1 <= stride <= kernel and",
        ("tests/test_geometry.py",),
        "a 3x3/3 max pool (windows apart) is folded",
    ),
    Mutant(
        "geometry_fold_half_padding_refused",
        "inception_fast/geometry.py",
        "and 0 <= 2 * padding <= kernel)",
        "and 0 <= 2 * padding < kernel)",
        ("tests/test_geometry.py",),
        "a pool padded by half its kernel is not folded",
    ),
    Mutant(
        "geometry_rows_pool_any_stride",
        "inception_fast/geometry.py",
        "    return 1 <= kernel <= ROWS_POOL_MAX[0] and 1 <= stride <= ROWS_POOL_MAX[1]\n",
        "    return 1 <= kernel <= ROWS_POOL_MAX[0]\n",
        ("tests/test_geometry.py",),
        "the row conv's epilogue takes a pool of any stride",
    ),
    Mutant(
        "geometry_pixel_row_limit_off_by_one",
        "inception_fast/geometry.py",
        "    if rows >= PIXEL_ROW_LIMIT:\n",
        "    if rows > PIXEL_ROW_LIMIT:\n",
        ("tests/test_geometry.py",),
        "exactly PIXEL_ROW_LIMIT pixel rows are taken",
    ),
    Mutant(
        "geometry_channels_last_gradient",
        "inception_fast/geometry.py",
        "        return grad.contiguous()\n",
        "        return grad\n",
        ("tests/test_geometry.py",),
        "a contiguous input's gradient flows back channels_last",
    ),
    Mutant(
        "store_triton_home_ignored",
        "inception_fast/choice_store.py",
        'home = os.environ.get("TRITON_HOME", "").strip() or pathlib.Path.home()',
        "home = pathlib.Path.home()",
        ("tests/test_choice_store.py", "-k", "beside_triton"),
        "the store ignores TRITON_HOME",
    ),
    Mutant(
        "store_default_not_in_triton_cache",
        "inception_fast/choice_store.py",
        'return pathlib.Path(home) / ".triton" / "cache" / "inception_fast"',
        'return pathlib.Path(home) / "inception_fast"',
        ("tests/test_choice_store.py", "-k", "beside_triton"),
        "the default store is not inside ~/.triton/cache",
    ),
    Mutant(
        "store_code_hash_without_names",
        "inception_fast/choice_store.py",
        "            digest.update(str(path.relative_to(_PACKAGE)).encode())\n",
        "",
        ("tests/test_choice_store.py", "-k", "code_hash_covers"),
        "the code hash leaves out the file names: moved code keeps old choices",
    ),
    Mutant(
        "store_fingerprint_without_torch",
        "inception_fast/choice_store.py",
        '        "torch": torch.__version__,\n',
        "",
        ("tests/test_choice_store.py", "-k", "torch_version_and"),
        "a new torch reads the choices measured under the old one",
    ),
    Mutant(
        "store_fingerprint_without_hardware",
        "inception_fast/choice_store.py",
        '        "hardware": hardware,\n',
        "",
        ("tests/test_choice_store.py", "-k", "torch_version_and"),
        "another processor model reads this one's choices",
    ),
    Mutant(
        "store_read_every_lookup",
        "inception_fast/choice_store.py",
        "                entries = self._files[path] = self._read(path)\n",
        "                entries = self._read(path)\n",
        ("tests/test_choice_store.py", "-k", "read_once"),
        "every lookup reads the store file again",
    ),
    Mutant(
        "store_failed_write_leaves_temporary",
        "inception_fast/choice_store.py",
        "                if tmp is not None and os.path.exists(tmp):\n                    os.unlink(tmp)\n",
        "",
        ("tests/test_choice_store.py", "-k", "read_once"),
        "a write failing at its rename leaves its temporary file",
    ),
    Mutant(
        "store_unreadable_package_raises",
        "inception_fast/choice_store.py",
        "        except OSError as exc:  # the package's files unreadable for the code hash: no store\n",
        "        except ZeroDivisionError as exc:  # the package's files unreadable for the code hash: no store\n",
        ("tests/test_choice_store.py", "-k", "code_hash_turns"),
        "a package unreadable for its code hash fails the forward",
    ),
]

# Left out of the copy: git metadata, caches, build trees and recorded results.
_IGNORE = shutil.ignore_patterns(
    ".git", "__pycache__", ".pytest_cache", ".benchmarks", "build", "*.egg-info", "results", "out", "*.whl"
)


def copy_tree(dst: Path) -> None:
    shutil.copytree(REPO, dst, ignore=_IGNORE, symlinks=True)


def apply(mutant: Mutant, root: Path) -> None:
    path = root / mutant.path
    text = path.read_text()
    count = text.count(mutant.old)
    if count != 1:
        raise RuntimeError(f"{mutant.name}: the text to replace occurs {count} times in {mutant.path} (must be once)")
    path.write_text(text.replace(mutant.old, mutant.new))


def ci_env(root: Path) -> dict:
    env = dict(os.environ)
    env.update(
        TRITON_INTERPRET="1",
        INCEPTION_FAST_BUILD_EXT="1",
        PYTHONDONTWRITEBYTECODE="1",
        # the emulator is compiled per copy, never from another tree's cached build
        TORCH_EXTENSIONS_DIR=str(root / ".torch_extensions"),
    )
    env.setdefault("CUDA_HOME", "/usr/local/cuda")
    env.pop("PYTHONPATH", None)
    return env


def run_group(cmd: list, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run(cmd, capture_output=True, text=True) in a session of its own: past
    ``timeout`` the whole process group is killed (pytest's children, the compiler's jobs), not
    only ``cmd``, before TimeoutExpired is raised; so is it on any other exit (Ctrl-C)."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kwargs
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except BaseException:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def rebuild(root: Path, env: dict, timeout: float) -> tuple[bool, str]:
    """CPU-only rebuild of inception_fast._C in ``root`` (the CPU tests run only its CPU kernels)."""
    run = run_group(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        timeout,
        cwd=root,
        env={**env, "INCEPTION_FAST_CUDA": "0"},
    )
    return run.returncode == 0, (run.stdout + run.stderr)[-2000:]


_SUMMARY = re.compile(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)")


def run_selection(root: Path, tests: tuple, env: dict, timeout: float, first_failure: bool) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *(("-x",) if first_failure else ()), *tests]
    start = time.monotonic()
    try:
        run = run_group(cmd, timeout, cwd=root, env=env)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "rc": None, "counts": {}, "seconds": time.monotonic() - start, "tail": ""}
    seconds = time.monotonic() - start
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    summary = lines[-1] if lines else ""
    counts = {kind.rstrip("s") if kind.startswith("error") else kind: int(n) for n, kind in _SUMMARY.findall(summary)}
    status = {0: "passed", 1: "failed", 5: "no tests"}.get(run.returncode, f"error (exit {run.returncode})")
    return {
        "status": status,
        "rc": run.returncode,
        "counts": counts,
        "seconds": seconds,
        "tail": (run.stdout + run.stderr)[-3000:],
    }


def check_imports_copy(root: Path, env: dict) -> None:
    """The copy's package must be the one imported (an editable install elsewhere must not win)."""
    run = subprocess.run(
        [sys.executable, "-c", "import inception_fast; print(inception_fast.__file__)"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    where = run.stdout.strip()
    if run.returncode != 0 or not Path(where).resolve().is_relative_to(root.resolve()):
        raise RuntimeError(f"the copy in {root} imports inception_fast from {where or run.stderr[-500:]}")


def describe_counts(counts: dict) -> str:
    return ", ".join(f"{n} {k}" for k, n in counts.items()) or "-"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("-k", dest="substring", help="run the mutants whose name contains this")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument(
        "--clean",
        action="store_true",
        help="first run each selection on the unmutated copy (it must pass, or 'caught' means nothing)",
    )
    parser.add_argument(
        "--all-tests", action="store_true", help="run each whole selection (default: stop at the first failure)"
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds per pytest run (default 900)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the tail of pytest's output per mutant")
    args = parser.parse_args(argv)
    if not 0 < args.timeout < float("inf"):  # (NaN fails too)
        parser.error(f"--timeout must be a number of seconds above 0, got {args.timeout}")
    if args.json is not None:  # found out now, not after every mutant ran
        if args.json.is_dir():
            parser.error(f"--json {args.json}: a directory; give a file name")
        if not args.json.resolve().parent.is_dir():
            parser.error(f"--json {args.json}: no directory {args.json.resolve().parent}")

    if args.list:
        width = max(len(m.name) for m in MUTANTS)
        for m in MUTANTS:
            print(f"{m.name:<{width}}  {m.path}: {m.what}\n{'':<{width}}  tests: {' '.join(m.tests)}")
        return 0
    known = {m.name: m for m in MUTANTS}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"unknown mutant(s) {', '.join(unknown)}; see --list")
    chosen = [known[n] for n in args.names] if args.names else list(MUTANTS)
    if args.substring:
        chosen = [m for m in chosen if args.substring in m.name]
    if not chosen:
        parser.error("no mutant selected")

    work = Path(tempfile.mkdtemp(prefix="inception_fast_mutants_"))
    results = []
    try:
        if args.clean:
            root = work / "clean"
            copy_tree(root)
            env = ci_env(root)
            check_imports_copy(root, env)
            for tests in dict.fromkeys(m.tests for m in chosen):
                print(f"[clean] {' '.join(tests)} ...", flush=True)
                r = run_selection(root, tests, env, args.timeout, first_failure=False)
                print(f"[clean] {r['status']}: {describe_counts(r['counts'])} in {r['seconds']:.0f} s", flush=True)
                if r["status"] != "passed":
                    print(r["tail"], file=sys.stderr)
                    return 2
        for i, m in enumerate(chosen, 1):
            root = work / m.name
            copy_tree(root)
            apply(m, root)
            env = ci_env(root)
            if i == 1:
                check_imports_copy(root, env)
            print(f"[{i}/{len(chosen)}] {m.name}: {m.what}; running {' '.join(m.tests)} ...", flush=True)
            start = time.monotonic()
            if m.rebuild:
                ok, log = rebuild(root, env, args.timeout)
                if not ok:
                    r = {"status": "failed", "rc": None, "counts": {"build failed": 1}, "seconds": 0.0, "tail": log}
                else:
                    r = run_selection(root, m.tests, env, args.timeout, first_failure=not args.all_tests)
            else:
                r = run_selection(root, m.tests, env, args.timeout, first_failure=not args.all_tests)
            r["seconds"] = time.monotonic() - start
            caught = {"failed": "yes", "passed": "NO"}.get(r["status"], r["status"])
            results.append(
                {
                    "mutant": m.name,
                    "file": m.path,
                    "tests": " ".join(m.tests),
                    "caught": caught,
                    "counts": r["counts"],
                    "seconds": round(r["seconds"], 1),
                }
            )
            print(
                f"[{i}/{len(chosen)}] {m.name}: caught={caught} ({describe_counts(r['counts'])}) "
                f"in {r['seconds']:.0f} s",
                flush=True,
            )
            if args.verbose or caught not in ("yes", "NO"):
                print(r["tail"], flush=True)
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"copies kept in {work}")

    print("\n| mutant | tests run | caught | pytest | time |\n|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['mutant']} | {r['tests']} | {r['caught']} | {describe_counts(r['counts'])} | {r['seconds']:.0f} s |"
        )
    caught = sum(r["caught"] == "yes" for r in results)
    print(f"\n{caught} of {len(results)} caught")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0 if caught == len(results) else 1  # a mutant that escaped (or did not run) fails the run


if __name__ == "__main__":
    sys.exit(main())
