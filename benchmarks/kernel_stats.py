"""Offline statistics of the Triton kernels: no GPU needed.

Compiles every autotuning config of both Triton launches (the "hopper" backend's launches with TMA
descriptors too, as launches "launch1_tma" and "launch2_tma"; and of the stem kernel, conv1 with and
without its max pool, of conv1 over aligned rows (conv_rows.py: launches "rows_pad", "rows" and,
with maxpool1 in its epilogue, "rows_pool"), of
the stem's conv2 and conv3 (conv_relu.py, launch "conv_relu"), of the max
pool kernel on GoogLeNet's four pools, of launch 1 with maxpool2/3/4 folded into 3a's/4a's/5a's
loads, of the head's two launches, the average pool and the fc GEMM, on 5b's output, and of the
joined launch of chain.py, launch 2 of a block and launch 1 of the next, as launch "joined" on
3a>3b, 4b>4c and 5a>5b; of the Triton backward's launches A and B; of the train-mode BatchNorm
block's GEMMs and normalise pass, bn_train.py) for a GPU
architecture (default sm_90, the H100) with the arguments the real launchers pass for a given
block, batch and dtype, and reports per config: registers per thread, spilled bytes, shared
memory, and whether the main loops use Hopper's asynchronous
tensor-core MMA (wgmma) and asynchronous global->shared copies (cp.async), or the tensor memory
accelerator's bulk copies (TMA: cp.async.bulk.tensor in the PTX).  The arguments come
from the launchers' own ``_arguments``, and integer/pointer specialization follows Triton's JIT
(a value of 1 is a constant; multiples of 16 and 16-byte-aligned pointers are marked divisible,
unless do_not_specialize_on_alignment),
so the code compiled here is the code a launch on the GPU would compile.  Registers and spills
come from ptxas -v (the one shipped with Triton) on the generated PTX.

    python -m benchmarks.kernel_stats [--arch 90] [--dtype bf16]
        [--block inception3a|stem|convs|pools|folds|head|backward:inception4b|bn_train:inception4b|tma:inception3a|tma
                 |tma1:inception3a|tma1
                 |chain:inception4b|chains] [--batch 256] [--json]

``--block tma`` compiles the TMA launch 2 for all nine blocks, ``--block tma1`` the TMA launch 1
(reduce_pool_tma, launch "launch1_tma"), ``--block chains`` the joined launch for the three pairs.

Runs without TRITON_INTERPRET (the kernels must be JIT functions, not interpreted ones).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from typing import Optional

if os.environ.get("TRITON_INTERPRET") == "1":
    sys.exit("kernel_stats: unset TRITON_INTERPRET (the kernels must be compiled, not interpreted)")

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402
from triton.runtime.jit import mangle_type  # noqa: E402
from triton.tools.tensor_descriptor import TensorDescriptor  # noqa: E402

from benchmarks.helpers.settings import DTYPES  # noqa: E402
from inception_fast.backends.triton import (  # noqa: E402
    _common,
    block_backward,
    branch_convs,
    branch_convs_tma,
    chain,
    conv_relu,
    conv_rows,
    head,
    maxpool,
    reduce_pool,
    reduce_pool_tma,
    stem,
)
from inception_fast.backends.triton._common import SMALL_PROBLEM_PIXELS  # noqa: E402
from inception_fast.cli import positive_int, run_command  # noqa: E402
from inception_fast.geometry import empty_outputs  # noqa: E402
from inception_fast.reference import BLOCK_CONFIGS  # noqa: E402

# Shared memory one block may use on sm_90 (227 KB); a config above it cannot launch.
MAX_SHARED_BYTES = reduce_pool_tma.BLOCK_SHARED_BYTES
SIZES = {
    "inception3a": 28,
    "inception3b": 28,
    "inception4a": 14,
    "inception4b": 14,
    "inception4c": 14,
    "inception4d": 14,
    "inception4e": 14,
    "inception5a": 7,
    "inception5b": 7,
}
_TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.int32: "i32"}


def _source(kernel, args, constexprs):
    """An ASTSource specialized the way triton.jit specializes these runtime arguments."""
    signature, consts, attrs = {}, {}, {}
    for i, (param, name) in enumerate(zip(kernel.params, kernel.arg_names)):
        if param.is_constexpr:
            signature[name] = "constexpr"
            consts[(i,)] = constexprs[name]
            continue
        value = args[i]
        if isinstance(value, TensorDescriptor):  # its type names the dtype and the box
            signature[name] = mangle_type(value)
            continue
        if isinstance(value, torch.Tensor):
            signature[name] = "*" + _TYPES[value.dtype]
            if value.data_ptr() % 16 == 0 and not getattr(param, "do_not_specialize_on_alignment", False):
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(value, int):
            if value == 1 and not param.do_not_specialize:
                signature[name] = "constexpr"
                consts[(i,)] = 1
                continue
            signature[name] = "i32" if -(2**31) <= value < 2**31 else "i64"
            if value % 16 == 0 and not (
                param.do_not_specialize or getattr(param, "do_not_specialize_on_alignment", False)
            ):
                attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            raise TypeError(f"unexpected argument {name}={value!r}")
    return ASTSource(kernel, signature, consts, attrs)


def _ptxas_info(ptx: str) -> dict:
    ptxas = triton.knobs.nvidia.ptxas.path  # the one Triton compiles with (TRITON_PTXAS_PATH, else its own)
    arch = re.search(r"^\.target\s+(\w+)", ptx, re.M).group(1)
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        run = subprocess.run(
            [ptxas, "-v", "--gpu-name", arch, src, "-o", os.path.join(tmp, "k.cubin")],
            capture_output=True,
            text=True,
            check=True,
        )
    regs = re.search(r"Used (\d+) registers", run.stderr)
    spills = [int(v) for v in re.findall(r"(\d+) bytes spill (?:stores|loads)", run.stderr)]
    return {"registers": int(regs.group(1)) if regs else None, "spill_bytes": sum(spills)}


def _compile(kernel, args, constexprs, config, arch: int, sass: bool = False) -> dict:
    meta = dict(constexprs, **config.kwargs)
    compiled = triton.compile(
        _source(kernel, args, meta),
        target=GPUTarget("cuda", arch, 32),
        options={"num_warps": config.num_warps, "num_stages": config.num_stages},
    )
    ttgir, ptx = compiled.asm["ttgir"], compiled.asm["ptx"]
    row = {
        "config": dict(config.kwargs, num_warps=config.num_warps, num_stages=config.num_stages),
        "shared_bytes": compiled.metadata.shared,
        "wgmma": "warp_group_dot" in ttgir,
        "cp_async": "async_copy_global_to_local" in ttgir,
        # TMA: bulk tensor copies global -> shared, issued by one thread per box.
        "tma": compiled.asm["ptx"].count("cp.async.bulk.tensor"),
        # Stores of one element each: where the compiler cannot prove a row or a column mask
        # aligned, every element gets its own address (see _common.row_unit).
        "scalar_stores": len(re.findall(r"\bst\.global\.(?!v\d)", compiled.asm["ptx"])),
        # The same for loads that do not go through cp.async or TMA.
        "scalar_loads": len(re.findall(r"\bld\.global\.(?!v\d)", compiled.asm["ptx"])),
        # Global loads not turned into cp.async (biases; the pool role's shifted loads).
        "sync_loads": len(re.findall(r"\btt\.load\b", ttgir)),
        # cp.async copies by kind: 16-byte .cg ones bypass L1; the A_L1 / POOL_L1 configs' gathers
        # copy 8 bytes at a time with .ca, which L1 caches (_common.l1_align).
        "cp_async_cg16": len(re.findall(r"cp\.async\.cg\.shared\.global\s*\[[^]]*\],\s*\[[^]]*\],\s*0x10", ptx)),
        "cp_async_ca8": len(re.findall(r"cp\.async\.ca\.shared\.global\s*\[[^]]*\],\s*\[[^]]*\],\s*0x8\b", ptx)),
    }
    row.update(_ptxas_info(compiled.asm["ptx"]))
    if sass:
        row["sass"] = _sass_counts(compiled.asm["cubin"])
    return row


def block_tensors(block: str, batch: int, dt: torch.dtype) -> tuple:
    """(ch1, x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, out, scratch): empty CPU tensors of
    ``block`` at its GoogLeNet size (torchvision variant), laid out as the launchers get them."""
    cin, ch1, r3, c3, r5, c5, pool = BLOCK_CONFIGS[block]
    size = SIZES[block]
    cl = torch.channels_last
    x = torch.empty(batch, cin, size, size, dtype=dt).contiguous(memory_format=cl)
    w_red, b_red = torch.empty(ch1 + r3 + r5, cin, dtype=dt), torch.empty(ch1 + r3 + r5, dtype=dt)
    w_pool, b_pool = torch.empty(pool, cin, dtype=dt), torch.empty(pool, dtype=dt)
    w3 = torch.empty(c3, r3, 3, 3, dtype=dt).contiguous(memory_format=cl)
    w5 = torch.empty(c5, r5, 3, 3, dtype=dt).contiguous(memory_format=cl)
    b3, b5 = torch.empty(c3, dtype=dt), torch.empty(c5, dtype=dt)
    out, scratch = empty_outputs(x, w_red, w_pool, w3, w5)
    return ch1, x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, out, scratch


def kernel_stats(block: str = "inception3a", batch: int = 256, dtype: str = "bf16", arch: int = 90) -> list[dict]:
    """One row per (launch, config) for ``block`` at its GoogLeNet size, torchvision variant."""
    dt = DTYPES[dtype]
    ch1, x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, out, scratch = block_tensors(block, batch, dt)
    rows = []
    launches = (
        (
            "launch1",
            reduce_pool,
            reduce_pool._arguments(x, w_red, b_red, w_pool, b_pool, out, scratch),
            reduce_pool._reduce_pool_kernel,
        ),
        (
            "launch2",
            branch_convs,
            branch_convs._arguments(scratch, w3, b3, w5, b5, out, ch1),
            branch_convs._branch_convs_kernel,
        ),
    )
    for launch, module, (args, meta, _grid), kernel in launches:
        for config in map(module._complete_config, module.CONFIGS):
            row = {"block": block, "batch": batch, "dtype": dtype, "arch": f"sm_{arch}", "launch": launch}
            row.update(_compile(kernel, args, meta, config, arch))
            rows.append(row)
    return rows


def _sass_counts(cubin: bytes) -> dict:
    """Counts of the SASS instructions that show which machinery the binary really uses (Triton's
    cuobjdump): HGMMA (wgmma), UTMALDG (TMA loads), HMMA (mma.sync), LDL/STL (local memory)."""
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        sass = subprocess.run([cuobjdump, "--dump-sass", path], capture_output=True, text=True, check=True).stdout
    return {op: len(re.findall(rf"\b{op}\b", sass)) for op in ("HGMMA", "UTMALDG", "HMMA", "LDL", "STL")}


# The compute capabilities (x10) the package's Triton kernels compile for: sm_80 and newer (their
# tensor-core and cp.async code), as CUDA 13's ptxas names them.
ARCHS = (80, 86, 87, 89, 90, 100, 103, 110, 120, 121)


def arch_problem(arch: int, tma: bool = False) -> Optional[str]:
    """Why ``--arch`` cannot be compiled for (``tma``: TMA launches asked for), or None."""
    if arch not in ARCHS:
        return f"--arch {arch}: expected a compute capability x10 the kernels compile for: {', '.join(map(str, ARCHS))}"
    if tma and arch < 90:
        return f"--arch {arch}: the TMA launches need sm_90 or newer"
    return None


def tma_stats(block: str = "inception3a", batch: int = 256, dtype: str = "bf16", arch: int = 90) -> list[dict]:
    """One row per config of the "hopper" backend's launch 2 (branch_convs_tma) for ``block`` at its
    GoogLeNet size, torchvision variant, with each config's descriptor views and boxes (its
    pre_hook, run on copies: _common.config_args), and the SASS counts (_sass_counts); the SWAP_AB
    configs only where the autotuner keeps them."""
    r3 = BLOCK_CONFIGS[block][2]
    ch1, x, w_red, _, w_pool, _, w3, b3, w5, b5, out, scratch = block_tensors(block, batch, DTYPES[dtype])
    args, meta, _grid = branch_convs_tma._arguments(scratch, w3, b3, w5, b5, out, ch1)
    kernel = branch_convs_tma._branch_convs_tma_kernel
    rows = []
    for config in branch_convs_tma.CONFIGS:
        if not branch_convs_tma.swap_fits(config.kwargs, r3):
            continue
        row = {"block": block, "batch": batch, "dtype": dtype, "arch": f"sm_{arch}", "launch": "launch2_tma"}
        row.update(_compile(kernel, _common.config_args(kernel, args, meta, config), meta, config, arch, sass=True))
        rows.append(row)
    return rows


def tma1_stats(block: str = "inception3a", batch: int = 256, dtype: str = "bf16", arch: int = 90) -> list[dict]:
    """One row per config of the "hopper" backend's launch 1 (reduce_pool_tma) for ``block`` at its
    GoogLeNet size, torchvision variant, with each config's descriptor boxes (its pre_hook, run on
    copies: _common.config_args), and the SASS counts (_sass_counts)."""
    _, x, w_red, b_red, w_pool, b_pool, _, _, _, _, out, scratch = block_tensors(block, batch, DTYPES[dtype])
    args, meta, _grid = reduce_pool_tma._arguments(x, w_red, b_red, w_pool, b_pool, out, scratch)
    kernel = reduce_pool_tma._reduce_pool_tma_kernel
    rows = []
    for config in reduce_pool_tma.CONFIGS:
        row = {"block": block, "batch": batch, "dtype": dtype, "arch": f"sm_{arch}", "launch": "launch1_tma"}
        row.update(_compile(kernel, _common.config_args(kernel, args, meta, config), meta, config, arch, sass=True))
        rows.append(row)
    return rows


def backward_stats(block: str = "inception4b", batch: int = 256, dtype: str = "bf16", arch: int = 90) -> list[dict]:
    """One row per (launch, config) of the Triton block backward's launches A and B ("bwd_a",
    "bwd_b"), then launch C ("bwd_c", the split sum, at triton's default 4 warps and 3 stages) for
    ``block`` at its GoogLeNet size."""
    _, x, w_red, _, w_pool, _, w3, _, w5, _, out, scratch = block_tensors(block, batch, DTYPES[dtype])
    buffers, segments, launches = block_backward._arguments(
        torch.empty_like(out), x, w_red, w_pool, w3, w5, out, scratch, True
    )
    _grid, sum_args, sum_meta = block_backward._sum_arguments(buffers["partial"], buffers["grads"], segments)
    compiles = [
        (launch, kernel, args, meta, config)
        for launch, (kernel, _tuned, args, meta, _grid) in zip(("bwd_a", "bwd_b"), launches)
        for config in block_backward.CONFIGS
    ]
    default = triton.Config({}, num_warps=4, num_stages=3)
    compiles.append(("bwd_c", block_backward._sum_splits_kernel, sum_args, sum_meta, default))
    rows = []
    for launch, kernel, args, meta, config in compiles:
        row = {"block": block, "batch": batch, "dtype": dtype, "arch": f"sm_{arch}", "launch": launch}
        row.update(_compile(kernel, args, meta, config, arch))
        rows.append(row)
    return rows


def bn_train_stats(block: str = "inception4b", batch: int = 256, dtype: str = "bf16", arch: int = 90) -> list[dict]:
    """One row per kernel of the train-mode BatchNorm block (bn_train.py, one fixed tile each) for
    ``block`` at its GoogLeNet size, laid out as block_bn_train_forward lays it out: "gemm_red"
    (the three 1x1s over x), "gemm_pool" (the pool projection), "conv3" and "conv5" (the 3x3 and kxk
    over the scratch), and the normalise + ReLU pass from the reduce GEMM's output into the scratch
    ("bn_relu_scratch": 4b's 296- and 136-channel rows) and from the 3x3's into the block output
    ("bn_relu_out")."""
    from inception_fast import geometry
    from inception_fast.backends.triton import bn_train

    ch1, x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, _, _ = block_tensors(block, batch, DTYPES[dtype])
    out, scratch, _pre, (y_red, y3, y5, y_pool) = geometry.bn_train_buffers(x, w_red, w_pool, w3, w5)
    r3, gemm, stats = w3.shape[1], bn_train.GPU_CONFIG, torch.empty(max(out.shape[1], y_red.shape[1]))
    gemm_stats, conv_stats = bn_train._gemm_stats_kernel, bn_train._conv_stats_kernel
    kernels = [
        ("gemm_red", gemm_stats, bn_train._gemm_arguments(geometry.rows(x), w_red, b_red, y_red, gemm)),
        # the pooled input (3x3/s1/p1 of x) has x's shape and strides
        ("gemm_pool", gemm_stats, bn_train._gemm_arguments(geometry.rows(x), w_pool, b_pool, y_pool, gemm)),
        ("conv3", conv_stats, bn_train._conv_arguments(scratch[:, :r3], w3, b3, y3, gemm)),
        ("conv5", conv_stats, bn_train._conv_arguments(scratch[:, r3:], w5, b5, y5, gemm)),
    ]
    to_scratch = bn_train._bn_relu_arguments(y_red[:, ch1:], geometry.rows(scratch), stats, stats)
    to_out = bn_train._bn_relu_arguments(y3, geometry.rows(out)[:, ch1 : ch1 + y3.shape[1]], stats, stats)
    rows = []
    for launch, kernel, (args, meta, *_rest), config in [
        *((name, kernel, arguments, gemm) for name, kernel, arguments in kernels),
        ("bn_relu_scratch", bn_train._bn_relu_kernel, to_scratch, bn_train.PASS_CONFIG),
        ("bn_relu_out", bn_train._bn_relu_kernel, to_out, bn_train.PASS_CONFIG),
    ]:
        row = {"block": block, "batch": batch, "dtype": dtype, "arch": f"sm_{arch}", "launch": launch}
        row.update(_compile(kernel, args, meta, config, arch))
        rows.append(row)
    return rows


def stem_stats(batch: int = 256, dtype: str = "bf16", arch: int = 90, size: int = 224) -> list[dict]:
    """One row per (launch, config) of the stem kernel on torchvision's conv1 + maxpool1, for an
    NCHW input (what a user passes; the kernel reads it directly): "conv_pool" fused, "conv" alone;
    conv_rows.py's padded copy ("rows_pad"), its conv ("rows") and its conv with the pool
    ("rows_pool")."""
    dt = DTYPES[dtype]
    x = torch.empty(batch, 3, size, size, dtype=dt)
    w = torch.empty(64, 3, 7, 7, dtype=dt).contiguous(memory_format=torch.channels_last)
    b = torch.empty(64, dtype=dt)
    rows = []
    for launch, pool in (("conv_pool", (3, 2, 0, True)), ("conv", (1, 1, 0, False))):
        args, meta, _grid, _out = stem._arguments(x, w, b, 2, 3, *pool)
        for config in stem.CONFIGS:
            row = {"block": "stem", "batch": batch, "dtype": dtype, "arch": f"sm_{arch}", "launch": launch}
            row.update(_compile(stem._conv_pool_kernel, args, meta, config, arch))
            rows.append(row)
    # conv_rows.py: the padded copy of the input (its one config), then the conv over its aligned rows.
    (_grid, pad_args, pad_meta), args, meta, _grid, _out = conv_rows._arguments(x, w, b, 2, 3)
    launches = [("rows_pad", conv_rows._pad_kernel, pad_args, pad_meta, conv_rows.PAD_CONFIG)]
    launches += [("rows", conv_rows._conv_rows_kernel, args, meta, config) for config in conv_rows.CONFIGS]
    # Its pooled form: maxpool1 in the conv's epilogue.
    _pad, args, meta, _grid, _out = conv_rows._pool_arguments(x, w, b, 2, 3, (3, 2, 0, True))
    launches += [("rows_pool", conv_rows._conv_rows_pool_kernel, args, meta, c) for c in conv_rows.POOL_CONFIGS]
    for launch, kernel, kargs, kmeta, config in launches:
        row = {"block": "stem", "batch": batch, "dtype": dtype, "arch": f"sm_{arch}", "launch": launch}
        row.update(_compile(kernel, kargs, kmeta, config, arch))
        rows.append(row)
    return rows


# The stem's conv2 and conv3 at 224x224: (Cin, Cout, kernel size) on a 56x56 map.
STEM_CONVS = {"conv2": (64, 64, 1), "conv3": (64, 192, 3)}


def conv_relu_stats(batch: int = 256, dtype: str = "bf16", arch: int = 90) -> list[dict]:
    """One row per (conv, config) of the Triton conv + bias + ReLU (conv_relu.py) on the stem's
    conv2 and conv3 (56x56, channels_last input and weight)."""
    dt = DTYPES[dtype]
    rows = []
    for name, (cin, cout, k) in STEM_CONVS.items():
        x = torch.empty(batch, cin, 56, 56, dtype=dt).contiguous(memory_format=torch.channels_last)
        w = torch.empty(cout, cin, k, k, dtype=dt).contiguous(memory_format=torch.channels_last)
        args, meta, _grid, _out = conv_relu._arguments(x, w, torch.empty(cout, dtype=dt), k // 2)
        for config in map(conv_relu.complete_config, conv_relu.CONFIGS):
            row = {"block": name, "batch": batch, "dtype": dtype, "arch": f"sm_{arch}", "launch": "conv_relu"}
            row.update(_compile(conv_relu._conv_relu_kernel, args, meta, config, arch))
            rows.append(row)
    return rows


# GoogLeNet's four max pools at 224x224: (channels, input size, (kernel, stride, padding, ceil_mode)).
POOLS = {
    "maxpool1": (64, 112, (3, 2, 0, True)),
    "maxpool2": (192, 56, (3, 2, 0, True)),
    "maxpool3": (480, 28, (3, 2, 0, True)),
    "maxpool4": (832, 14, (2, 2, 0, True)),
}


def pool_stats(batch: int = 256, dtype: str = "bf16", arch: int = 90) -> list[dict]:
    """One row per (pool, config) of the max pool kernel on torchvision's maxpool1-4, channels_last."""
    rows = []
    for name, (c, size, params) in POOLS.items():
        x = torch.empty(batch, c, size, size, dtype=DTYPES[dtype]).contiguous(memory_format=torch.channels_last)
        args, meta, _grid, _out = maxpool._arguments(x, *params)
        for config in maxpool.CONFIGS:
            row = {"block": name, "batch": batch, "dtype": dtype, "arch": f"sm_{arch}", "launch": "maxpool"}
            row.update(_compile(maxpool._max_pool_kernel, args, meta, config, arch))
            rows.append(row)
    return rows


# The blocks whose preceding pool folds into their launch 1 (torchvision's variant), and that pool.
FOLDS = {"inception3a": "maxpool2", "inception4a": "maxpool3", "inception5a": "maxpool4"}


def fold_stats(batch: int = 256, dtype: str = "bf16", arch: int = 90) -> list[dict]:
    """One row per (block, config) of launch 1 with the preceding max pool folded into its loads
    (reduce_pool.py, PRE_K > 1): 3a on maxpool2's input, 4a on maxpool3's, 5a on maxpool4's."""
    rows = []
    dt = DTYPES[dtype]
    for block, pool_name in FOLDS.items():
        cin, ch1, r3, c3, r5, c5, pool = BLOCK_CONFIGS[block]
        c, size, params = POOLS[pool_name]
        x = torch.empty(batch, cin, size, size, dtype=dt).contiguous(memory_format=torch.channels_last)
        w_red, b_red = torch.empty(ch1 + r3 + r5, cin, dtype=dt), torch.empty(ch1 + r3 + r5, dtype=dt)
        w_pool, b_pool = torch.empty(pool, cin, dtype=dt), torch.empty(pool, dtype=dt)
        w3 = torch.empty(c3, r3, 3, 3, dtype=dt).contiguous(memory_format=torch.channels_last)
        w5 = torch.empty(c5, r5, 3, 3, dtype=dt).contiguous(memory_format=torch.channels_last)
        hw = (SIZES[block], SIZES[block])
        out, scratch = empty_outputs(x, w_red, w_pool, w3, w5, hw)
        args, meta, _grid = reduce_pool._arguments(x, w_red, b_red, w_pool, b_pool, out, scratch, pre_pool=params)
        for config in map(reduce_pool._complete_config, reduce_pool.CONFIGS):
            row = {"block": block, "batch": batch, "dtype": dtype, "arch": f"sm_{arch}", "launch": f"l1+{pool_name}"}
            row.update(_compile(reduce_pool._reduce_pool_kernel, args, meta, config, arch))
            rows.append(row)
    return rows


def head_stats(batch: int = 256, dtype: str = "bf16", arch: int = 90, classes: int = 1000) -> list[dict]:
    """One row per (launch, config) of the head on 5b's output at 224 (1024 x 7 x 7, channels_last)
    into ``classes`` classes: "avgpool" (the channel means) and "linear" (the fc GEMM)."""
    dt = DTYPES[dtype]
    x = torch.empty(batch, 1024, 7, 7, dtype=dt).contiguous(memory_format=torch.channels_last)
    w, b = torch.empty(classes, 1024, dtype=dt), torch.empty(classes, dtype=dt)
    (p_args, p_meta, _), (l_args, l_meta, _), _out = head._arguments(x, w, b)
    rows = []
    for launch, kernel, args, meta, configs in (
        ("avgpool", head._channel_means_kernel, p_args, p_meta, head.POOL_CONFIGS),
        ("linear", head._linear_kernel, l_args, l_meta, head.LINEAR_CONFIGS),
    ):
        for config in configs:
            row = {"block": "head", "batch": batch, "dtype": dtype, "arch": f"sm_{arch}", "launch": launch}
            row.update(_compile(kernel, args, meta, config, arch))
            rows.append(row)
    return rows


# GoogLeNet's neighbours of one size whose joined launch (chain.py) the model may use: (block i, block i+1).
CHAIN_PAIRS = (("inception3a", "inception3b"), ("inception4b", "inception4c"), ("inception5a", "inception5b"))


def joined_arguments(pair: tuple, batch: int, dt: torch.dtype) -> tuple:
    """(args, launcher-fixed constexprs) of the joined launch of ``pair`` (launch 2 of pair[0],
    launch 1 of pair[1]) at their GoogLeNet size, as chain_forward passes them: with the split-K
    counters of pair[1]'s launch 2 where it may split K."""
    ch1a, _, _, _, _, _, w3, b3, w5, b5, mid, scratch_a = block_tensors(pair[0], batch, dt)
    _, _, w_red, b_red, w_pool, b_pool, w3_b, _, w5_b, _, out, scratch_b = block_tensors(pair[1], batch, dt)
    sync = torch.empty(chain._sync_size(batch * SIZES[pair[0]] ** 2), dtype=torch.int32)
    n_counters = branch_convs.split_k_counters(scratch_b, w3_b, w5_b)
    counters = None if n_counters is None else torch.empty(n_counters, dtype=torch.int32)
    args, meta, _grid = chain._arguments(
        scratch_a, w3, b3, w5, b5, mid, ch1a, w_red, b_red, w_pool, b_pool, out, scratch_b, counters, sync
    )
    return args, meta


def chain_stats(
    pair: tuple = CHAIN_PAIRS[0], batch: int = 256, dtype: str = "bf16", arch: int = 90, configs=None
) -> list[dict]:
    """One row per config of the joined launch (chain.py: launch 2 of ``pair[0]`` and launch 1 of
    ``pair[1]`` in one persistent kernel) at their GoogLeNet size, torchvision variant, with the
    SASS counts (_sass_counts); ``configs`` (default: chain.CONFIGS as the autotuner prunes them for
    this batch, and up to SMALL_PROBLEM_PIXELS pixels only the configs offered there alone: M, H
    and W are not specialized on, so the others compile to the binaries of a large batch)."""
    args, meta = joined_arguments(pair, batch, DTYPES[dtype])
    if configs is None:
        m = batch * SIZES[pair[0]] ** 2
        configs = chain._prune_small_only(chain.CONFIGS, {"M": m})
        if m <= SMALL_PROBLEM_PIXELS:
            configs = chain.SMALL_PROBLEM_CONFIGS
    rows = []
    for config in configs:
        row = {"block": f"{pair[0]}>{pair[1][len('inception') :]}", "batch": batch, "dtype": dtype}
        row.update({"arch": f"sm_{arch}", "launch": "joined"})
        row.update(_compile(chain._joined_kernel, args, meta, config, arch, sass=True))
        rows.append(row)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", type=int, default=90, help="compute capability x10 (90: H100)")
    p.add_argument("--dtype", choices=list(DTYPES), default="bf16")
    p.add_argument(
        "--block",
        action="append",
        choices=[
            *SIZES,
            "stem",
            "convs",
            "pools",
            "folds",
            "head",
            "tma",
            "tma1",
            "chains",
            *(f"{k}:{b}" for k in ("backward", "bn_train", "tma", "tma1") for b in SIZES),
            *(f"chain:{a}" for a, _ in CHAIN_PAIRS),
        ],
        help="repeatable (default: stem, conv2 and conv3, 3a, 4b, 5b, the pools, the folded pools, the head "
        "and the joined launch 4b>4c); convs: the stem's conv2 and conv3 (conv_relu.py); "
        "backward:<block> for the Triton backward; bn_train:<block> for the train-mode BatchNorm block's "
        "kernels; folds: launch 1 of 3a, 4a, 5a with the pool before it "
        "folded in; tma:<block> for the hopper backend's launch 2, tma for it on all nine blocks; "
        "tma1:<block> and tma1 the same for its launch 1; "
        "chain:<block> for the joined launch of that block's launch 2 and the next one's launch 1 "
        "(chain.py), chains for 3a>3b, 4b>4c and 5a>5b",
    )
    p.add_argument("--batch", type=positive_int, default=256)
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = p.parse_args(argv)
    tma = [b for b in args.block or () if b.split(":")[0] in ("tma", "tma1")]
    why = arch_problem(args.arch, tma=bool(tma))
    if why:
        p.error(why)
    rows = []
    # 3a: the narrowest block; 4b: a scratch buffer whose rows are not 16-element multiples
    # (136 channels); 5b: the widest block.
    for block in args.block or [
        "stem",
        "convs",
        "inception3a",
        "inception4b",
        "inception5b",
        "pools",
        "folds",
        "head",
        "chain:inception4b",
    ]:
        if block == "folds":
            rows += fold_stats(args.batch, args.dtype, args.arch)
        elif block == "head":
            rows += head_stats(args.batch, args.dtype, args.arch)
        elif block == "stem":
            rows += stem_stats(args.batch, args.dtype, args.arch)
        elif block == "convs":
            rows += conv_relu_stats(args.batch, args.dtype, args.arch)
        elif block == "pools":
            rows += pool_stats(args.batch, args.dtype, args.arch)
        elif block.startswith("backward:"):
            rows += backward_stats(block.split(":", 1)[1], args.batch, args.dtype, args.arch)
        elif block.startswith("bn_train:"):
            rows += bn_train_stats(block.split(":", 1)[1], args.batch, args.dtype, args.arch)
        elif block == "tma1" or block.startswith("tma1:"):
            for name in list(SIZES) if block == "tma1" else [block.split(":", 1)[1]]:
                rows += tma1_stats(name, args.batch, args.dtype, args.arch)
        elif block == "chains" or block.startswith("chain:"):
            first = [a for a, _ in CHAIN_PAIRS] if block == "chains" else [block.split(":", 1)[1]]
            for pair in (p for p in CHAIN_PAIRS if p[0] in first):
                rows += chain_stats(pair, args.batch, args.dtype, args.arch)
        elif block == "tma" or block.startswith("tma:"):
            for name in list(SIZES) if block == "tma" else [block.split(":", 1)[1]]:
                rows += tma_stats(name, args.batch, args.dtype, args.arch)
        else:
            rows += kernel_stats(block, args.batch, args.dtype, args.arch)
    if args.json:
        print(json.dumps({"max_shared_bytes": MAX_SHARED_BYTES, "rows": rows}, indent=1))
        return 0
    print(
        f"{'block':<14} {'launch':<9} {'config':<28} {'regs':>4} {'spill':>6} {'smem KB':>8} wgmma cp.async "
        "scalar-st sync-ld"
    )
    for r in rows:
        c = r["config"]
        if r["launch"] in ("maxpool", "avgpool"):
            cfg = f"{c['BLOCK_P']}px x {c['BLOCK_C']}ch w{c['num_warps']}"
        elif r["launch"] == "joined":  # launch 2's tile | launch 1's, ticket order, persistent or not
            cfg = (
                f"{c['BLOCK_M2']}x{c['BLOCK_N2']}x{c['BLOCK_K2']}|{c['BLOCK_M']}x{c['BLOCK_N']}x{c['BLOCK_K']}"
                f" p{c['BLOCK_K_POOL']} o{c['ORDER']}{'P' if c['PERSISTENT'] else ''} w{c['num_warps']}"
                f" s{c['num_stages']}"
            )
        elif r["launch"].startswith("bn_relu"):
            cfg = f"{c['BLOCK_M']}px x {c['BLOCK_C']}ch w{c['num_warps']}"
        elif "BLOCK_M" not in c and "BLOCK_H" not in c:  # a launcher-fixed tile (the backward's split sum)
            cfg = f"w{c['num_warps']} s{c['num_stages']}"
        elif r["launch"] == "launch1_tma":
            cfg = (
                f"{c['BLOCK_M']}x{c['BLOCK_N']}x{c['BLOCK_K']} w{c['num_warps']} s{c['num_stages']}"
                + f" p{c['BLOCK_M_POOL']}/{c['BLOCK_K_POOL']}/{c['POOL_STAGES']}"
                + (f" x{c['PROGRAMS_PER_SM']}/SM" if c["PROGRAMS_PER_SM"] > 1 else "")
            )
        elif r["launch"] == "rows_pool":  # conv_rows.py's pooled form: pooled tile, its conv patch's rows
            cfg = (
                f"{c['TILE_P']}x{c['TILE_Q']}px<{c['BLOCK_M']}x{c['BLOCK_N']} w{c['num_warps']} s{c['num_stages']}"
                f" x{c['PROGRAMS_PER_SM']}/SM" + (" l1" if c.get("A_L1") else "")
            )
        elif r["launch"] == "rows":  # conv_rows.py: K is the kernel rows, no K tile
            cfg = f"{c['BLOCK_M']}x{c['BLOCK_N']} w{c['num_warps']} s{c['num_stages']}"
            cfg += " l1" if c.get("A_L1") else ""
        elif r["launch"] == "launch2_tma":
            cfg = (
                f"{c['BLOCK_H']}x{c['BLOCK_W']}x{c['BLOCK_N']}x{c['BLOCK_K']} w{c['num_warps']} s{c['num_stages']}"
                + (" swap" if c["SWAP_AB"] else "")
            )
        else:
            cfg = f"{c['BLOCK_M']}x{c['BLOCK_N']}x{c['BLOCK_K']} w{c['num_warps']} s{c['num_stages']}" + (
                f" split{c['SPLIT_K']}" if c.get("SPLIT_K", 1) > 1 else ""
            )
            cfg += " l1" if c.get("A_L1") else ""  # A's copies 8 bytes wide, through L1
            if "BLOCK_K_POOL" in c:  # launch 1's pool role: its K step, its K split; its taps through L1
                cfg += f" p{c['BLOCK_K_POOL']}" + (f"/{c['POOL_SPLIT_K']}" if c["POOL_SPLIT_K"] > 1 else "")
                cfg += " sync" if c["POOL_STAGES"] == 1 else (" l1" if c.get("POOL_L1") else "")
        print(
            f"{r['block']:<14} {r['launch']:<9} {cfg:<28} {r['registers']:>4} {r['spill_bytes']:>6} "
            f"{r['shared_bytes'] / 1024:>8.1f} {str(r['wgmma']):<5} {str(r['cp_async']):<8} {r['scalar_stores']:>9} "
            f"{r['sync_loads']:>7}"
            + (f"  TMA {r['tma']}, SASS " + " ".join(f"{k} {v}" for k, v in r["sass"].items()) if "sass" in r else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
