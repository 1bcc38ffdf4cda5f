"""The precompile's worker path on real kernels, without a GPU (run by test_precompile.py in a
subprocess without TRITON_INTERPRET; prints one JSON line).

With a driver that only names sm_90 (compile_pool.TargetOnlyDriver) active in this process, the
launchers of three kernels (the max pool, launch 1, and the TMA launch 2, whose configs set their
descriptors' boxes in a pre_hook) run on CPU tensors in a compile-only pass; two workers compile
the recorded binaries into an empty Triton cache; then the autotuners' own warmups
(_common.precompile_configs, workers off) must find every binary there: Triton's compile
listener reports a cache hit for each and no new cache entry appears.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

os.environ.pop("TRITON_INTERPRET", None)
os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="precompile_offline_")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import triton  # noqa: E402
from triton.runtime.driver import driver  # noqa: E402

from benchmarks.kernel_stats import block_tensors  # noqa: E402
from inception_fast.backends.triton import _common, branch_convs_tma, compile_pool, maxpool, reduce_pool  # noqa: E402
from inception_fast.compile_only import compile_only  # noqa: E402


def main() -> dict:
    driver.set_active(compile_pool.TargetOnlyDriver("cuda", 90, 32))
    compile_pool._memory_for_workers = lambda: 16  # two workers, however little memory is free
    tensors = block_tensors("inception4b", 64, torch.bfloat16)
    ch1, x, w_red, b_red, w_pool, b_pool, w3, b3, w5, b5, out, scratch = tensors
    launches = (
        (maxpool._max_pool_kernel, maxpool._tuned_kernel, maxpool._arguments(x, 3, 2, 0, True)[:3]),
        (
            reduce_pool._reduce_pool_kernel,
            reduce_pool._tuned_kernel,
            reduce_pool._arguments(x, w_red, b_red, w_pool, b_pool, out, scratch),
        ),
        (
            branch_convs_tma._branch_convs_tma_kernel,
            branch_convs_tma._tuned_kernel,
            branch_convs_tma._arguments(scratch, w3, b3, w5, b5, out, ch1),
        ),
    )

    def forward():
        maxpool.launch_max_pool(x, 3, 2, 0, True)
        reduce_pool.launch_reduce_pool(x, w_red, b_red, w_pool, b_pool, out, scratch)
        branch_convs_tma.launch_branch_convs_tma(scratch, w3, b3, w5, b5, out, ch1)

    configs = [len(_common.autotuned_configs(k, t, a, m)) for k, t, (a, m, _g) in launches]
    n0 = _common.launch_count()
    with compile_only() as first:
        forward()
    result = {
        "configs": configs,
        "launched": _common.launch_count() - n0,
        "recorded_launches": len(first.launches),
        "jobs": [job.name for job, _ in first.jobs],
        "on_disk_before": sum(d for _, d in first.jobs),
    }
    futures = compile_pool.submit(first.jobs, force=True)
    result["submitted"] = len(futures)
    result["compiled"] = compile_pool.wait(futures)
    result["stats"] = compile_pool.stats()
    compile_pool.close()
    with compile_only() as second:
        forward()
    result["on_disk_after"] = sum(d for _, d in second.jobs)
    entries = len(os.listdir(os.environ["TRITON_CACHE_DIR"]))
    hits = []
    triton.knobs.compilation.listener = lambda **kw: hits.append(bool(kw["cache_hit"]))
    os.environ[compile_pool.ENV_PRECOMPILE] = "0"
    for kernel, tuned, (args, meta, grid) in launches:
        _common.precompile_configs(kernel, tuned, grid, args, meta)
    result["loads"], result["hits"] = len(hits), sum(hits)
    result["new_cache_entries"] = len(os.listdir(os.environ["TRITON_CACHE_DIR"])) - entries
    return result


if __name__ == "__main__":
    try:
        print(json.dumps(main()))
    finally:
        compile_pool.close()
        shutil.rmtree(os.environ["TRITON_CACHE_DIR"], ignore_errors=True)
