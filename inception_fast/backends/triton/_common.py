"""What the Triton launchers share: interpreter mode, dot precision, launch counting, the
autotuners' benchmark (a new shape's configs compiled side by side first), and the @triton.jit
helpers that map a program to its tile of output pixels.

No kernels here.  Importing this module imports triton but queries no device.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import functools
import math
import os
import threading
import warnings
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

import torch
import triton
import triton.language as tl

from ... import compile_only, geometry
from ...caches import MEASURING, LRUDict, cache_capacity, trim
from . import compile_pool
from .compile_pool import ENV_COMPILE_THREADS, compile_threads  # noqa: F401  (re-exported)

__all__ = [
    "INTERPRET",
    "sm_count",
    "hooked_configs",
    "dot_precision",
    "launch",
    "launch_configured",
    "autotune_bench",
    "compile_threads",
    "tuning_bench_ms",
    "launch_count",
    "tuning_log",
    "tuning_count",
    "config_name",
    "no_buffer",
    "check_dtype",
    "check_branch_weights",
    "autotuned_configs",
    "config_args",
    "config_warmup",
    "small_only_prune",
    "row_unit",
    "stride_unit",
    "pow2_unit",
    "row_strides",
    "weight_strides",
    "next_pow2_clamped",
    "cdiv",
    "pixel_rows",
    "pixel_tile",
    "row_offsets",
    "candidate_kwargs",
    "split_range",
    "l1_align",
    "completed_config",
    "bias_relu_store",
    "finish_tile",
]

# triton.jit picks the interpreter when a kernel is decorated, i.e. when the kernel modules
# are imported; reading the variable at the same moment keeps launchers and kernels in step.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

_launches = 0

# Pixels (N*H*W) up to which the autotuners try the configs meant for batch 1 (launch 2's split-K
# and launch 1's deep pool steps, each there alone): batch 1 of every GoogLeNet block (784 at
# 28x28).  Past it the grid fills the GPU without them, and tuning them would only cost time.
SMALL_PROBLEM_PIXELS = 1024


def launch_count() -> int:
    """How many Triton kernels the launchers of this package have issued (for tests)."""
    return _launches


def launch(kernel, grid, *args, **kwargs) -> None:
    """The single place where the launchers start a kernel, so launches can be counted (and,
    in tests, observed without also observing the interpreter's own host copies).  In a
    compile-only pass (inception_fast.compile_only) it records the launch instead."""
    global _launches
    if compile_only.compiling_only():
        _record_launch(kernel, grid, args, kwargs)
        return
    if compile_pool.busy() and hasattr(kernel, "device_caches"):  # a JIT kernel's binary may be on its way
        _wait_for_workers(lambda: kernel.warmup(*args, grid=grid, **kwargs))
    _launches += 1
    kernel[grid](*args, **kwargs)


def _wait_for_workers(warmups: Callable[[], object]) -> None:
    """Waits for the binaries ``warmups`` would compile that the precompile's workers are compiling
    (a binary they do not have is left to the launch)."""
    if INTERPRET or not compile_pool.enabled():
        return
    try:
        compile_pool.wait(compile_pool.pending(compile_pool.record(warmups)))
    except Exception:
        pass


def _record_launch(kernel, grid, args: tuple, kwargs: dict) -> None:
    """A compile-only pass's record of one launch: its kernel and kwargs, and (compiled kernels)
    the binary it would compile, if any (compile_pool.record).  A launch whose warmup fails is left
    to the real pass, which reports it."""
    fn = getattr(kernel, "fn", kernel)
    compile_only.add_launch(getattr(fn, "__name__", type(fn).__name__), dict(kwargs))
    if INTERPRET or not hasattr(kernel, "warmup"):
        return
    try:
        compile_only.add_jobs(compile_pool.record(lambda: kernel.warmup(*args, grid=grid, **kwargs)))
    except Exception:
        pass


def launch_configured(
    kernel,
    tuned,
    grid,
    args: tuple,
    meta: dict,
    config,
    interpreter_config: dict,
    config_kwargs=dict,
    prepare=None,
    store_as: Optional[str] = None,
) -> None:
    """Starts ``kernel`` the way every launcher here does: through its autotuned wrapper ``tuned``
    when no config is pinned (on a GPU; from the second launch of a shape on, straight with the
    config it chose, see _TUNED_CONFIGS), else with the pinned ``config`` (its kwargs passed
    through ``config_kwargs``), or, under the interpreter, with ``interpreter_config``.
    ``grid(meta)`` gives the grid of a tile choice; ``prepare(meta)``, where given, is called with
    the chosen tile before a launch that bypasses the autotuner (whose configs' pre_hooks do the
    same for its own launches).  ``store_as``: the name under which the chosen config is kept in
    the choice store (inception_fast.choice_store) and read back by later processes, for an
    autotuner whose own disk record does not work (Triton skips configs with a pre_hook)."""
    if config is None and tuned is not None:
        config = _tuned_config(tuned, args, meta)
        if config is None and store_as is not None:
            config = _stored_config(tuned, args, meta, store_as)
        if config is None and compile_only.compiling_only():  # every config it would benchmark
            for c in autotuned_configs(kernel, tuned, args, meta):
                _record_launch(kernel, grid, config_args(kernel, args, meta, c), {**meta, **c.all_kwargs()})
            return
        if config is None:
            with MEASURING:  # the autotuner keeps a call's state on itself: one thread at a time
                config = _tuned_config(tuned, args, meta)  # (tuned while this thread waited?)
                if config is None:
                    _autotuned_launch(kernel, tuned, grid, args, meta, store_as)
                    return
    if config is None:
        meta = {**meta, **interpreter_config}
    else:
        # all_kwargs: the tile and every launch option the autotuner would pass (warps, stages, CTAs...).
        options = (
            config.all_kwargs()
            if hasattr(config, "all_kwargs")
            else {**config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages}
        )
        meta = {**meta, **options, **config_kwargs(config.kwargs)}
    if prepare is not None:
        prepare(meta)
    launch(kernel, grid(meta), *args, **meta)


def _autotuned_launch(kernel, tuned, grid, args: tuple, meta: dict, store_as: Optional[str]) -> None:
    """A shape this process has not launched yet: the autotuner decides (under MEASURING)."""
    if compile_pool.busy():  # its configs' binaries may be on their way from the workers
        configs = autotuned_configs(kernel, tuned, args, meta)
        _wait_for_workers(lambda: [config_warmup(kernel, grid, args, meta, c) for c in configs])
    before = (getattr(tuned, "configs_timings", None), getattr(tuned, "bench_time", None))
    # Should it benchmark (no result on disk), autotune_bench first compiles the configs it is
    # about to time on compile_threads() threads.
    _PENDING.launch = (kernel, tuned, grid, args, meta)
    try:
        launch(tuned, grid, *args, **meta)
    finally:
        _PENDING.launch = None
    _remember_tuned_config(tuned, args, meta, *before)
    if store_as is not None:
        _store_config(tuned, args, meta, store_as)


# The first launch of a shape through an autotuner, in this thread, until autotune_bench sees it.
_PENDING = threading.local()
ENV_TUNING_MS = "INCEPTION_FAST_TUNING_MS"
# triton.testing.do_bench's per config: warm-up, then repeats, in ms of GPU time (Triton's default
# is 25 + 100).  A 25 ms median (tens to thousands of runs of these kernels) ranks configs that
# differ by more than a percent or so, and closer ones are a tie either way; at 125 ms a cold first
# forward of GoogLeNet spends 15-20 s in benchmarks alone (benchmarks/cold_start.py counts them).
# INCEPTION_FAST_TUNING_MS="25,100" restores Triton's.
TUNING_BENCH_MS = (5, 25)


def tuning_bench_ms() -> tuple:
    """(warm-up, repeats) in ms for each config the autotuners benchmark: TUNING_BENCH_MS, or
    INCEPTION_FAST_TUNING_MS="warmup,rep"."""
    raw = os.environ.get(ENV_TUNING_MS, "").strip()
    if not raw:
        return TUNING_BENCH_MS
    try:
        warmup, rep = (float(v) for v in raw.split(","))
        if not (0 <= warmup <= 60_000 and 0 < rep <= 60_000):  # (NaN fails too; over a minute is no tuning)
            raise ValueError
    except ValueError:
        warnings.warn(
            f"{ENV_TUNING_MS}={raw!r} is not 'warmup,rep' in ms (up to 60000); using {TUNING_BENCH_MS}", stacklevel=2
        )
        return TUNING_BENCH_MS
    return warmup, rep


def autotune_bench(kernel_call, quantiles=None):
    """The autotuners' benchmark (their ``do_bench``): triton.testing.do_bench for
    tuning_bench_ms().  Its first call for a shape launched through launch_configured first
    compiles every config the autotuner is about to time (precompile_configs), so the compiles
    run side by side instead of one inside each config's benchmark."""
    pending = getattr(_PENDING, "launch", None)
    if pending is not None:
        _PENDING.launch = None
        precompile_configs(*pending)
    from triton.testing import do_bench

    warmup, rep = tuning_bench_ms()
    return do_bench(kernel_call, warmup=warmup, rep=rep, quantiles=quantiles)


def small_only_prune(small_configs, fill: Callable[[dict], dict] = dict, exclusive: bool = False) -> Callable:
    """An early prune for triton.autotune (``prune_configs_by``) that drops ``small_configs`` from
    launches of more than SMALL_PROBLEM_PIXELS pixels (the kernel argument ``M``), unless nothing
    else is left.  With ``exclusive`` it also keeps launches of at most SMALL_PROBLEM_PIXELS to
    ``small_configs`` (where the others are known to lose), unless none of them is left.  A config
    is one of them when its kwargs (completed by ``fill``, the defaults the kernel's configs get),
    warps and stages are those of one of ``small_configs``."""

    def signature(config) -> tuple:
        return tuple(sorted(fill(config.kwargs).items())), config.num_warps, config.num_stages

    small = {signature(c) for c in small_configs}

    def prune(configs, named_args, **_kwargs):
        is_small = named_args["M"] <= SMALL_PROBLEM_PIXELS
        if is_small and not exclusive:
            return configs
        return [c for c in configs if (signature(c) in small) == is_small] or configs

    return prune


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def sm_count(device: torch.device) -> int:
    """CUDA ``device``'s number of SMs (the current device where it has no index), asked once."""
    return _sm_count(device.index if device.index is not None else torch.cuda.current_device())


def completed_config(config, fill: Callable[[dict], dict]):
    """A copy of ``config`` (warps, stages, hooks and all) with its kwargs completed by ``fill``
    (the defaults a kernel's configs get where they name none)."""
    config = copy.copy(config)
    config.kwargs = fill(config.kwargs)
    return config


def hooked_configs(configs, fill: Callable[[dict], dict], pre_hook: Callable) -> list:
    """Copies of ``configs`` with their kwargs completed by ``fill`` and ``pre_hook`` set (the TMA
    kernels' autotuners: the hook gives the descriptors each config's boxes)."""
    hooked = [completed_config(c, fill) for c in configs]
    for c in hooked:
        c.pre_hook = pre_hook
    return hooked


def autotuned_configs(kernel, tuned, args: tuple, meta: dict) -> list:
    """The configs ``tuned`` benchmarks for this launch: its configs after its early prune (Triton
    skips the prune, and the benchmark, for a single config)."""
    configs = list(tuned.configs)
    prune = getattr(tuned, "early_config_prune", None)
    if prune is not None and len(configs) > 1:
        configs = list(prune(configs, dict(zip(kernel.arg_names, args)), **meta))
    return configs


def _is_descriptor(value) -> bool:
    return type(value).__name__ == "TensorDescriptor"


def _descriptor_copy(desc):
    """A copy of a TensorDescriptor with its own shape, strides and block_shape lists: a pre_hook
    that edits one of them in place leaves the original as it was."""
    desc = copy.copy(desc)
    for name in ("shape", "strides", "block_shape"):
        value = getattr(desc, name, None)
        if isinstance(value, list):
            setattr(desc, name, list(value))
    return desc


def config_args(kernel, args: tuple, meta: dict, config) -> tuple:
    """``args`` as the launch with ``config`` sees them.  A config with a pre_hook (the TMA kernels':
    it gives the tensor descriptors that config's boxes, and Triton specialises on the box) has
    it run on copies of the descriptors (their lists copied too), so each config compiles its own
    specialisation, configs can compile side by side, and ``args`` stay as they were."""
    hook = getattr(config, "pre_hook", None)
    if hook is None:
        return args
    names = kernel.arg_names[: len(args)]
    nargs = {name: _descriptor_copy(a) if _is_descriptor(a) else a for name, a in zip(names, args)}
    nargs.update(meta)
    nargs.update(config.all_kwargs())
    hook(nargs)
    return tuple(nargs[name] for name in names)


def config_warmup(kernel, grid, args: tuple, meta: dict, config) -> None:
    """``kernel.warmup`` as the autotuner's launch with ``config`` specializes (its pre_hook
    applied to copies, ``config_args``): compiles that binary, or finds it compiled."""
    kernel.warmup(*config_args(kernel, args, meta, config), grid=grid, **meta, **config.all_kwargs())


def precompile_configs(kernel, tuned, grid, args: tuple, meta: dict, threads: Optional[int] = None) -> int:
    """Compiles ``kernel`` for every config ``tuned`` benchmarks at this launch into the JIT's own
    cache (``kernel.warmup``: the same specialization a launch makes, so the benchmark then finds
    each binary compiled; with the config's pre_hook applied, ``config_args``), on ``threads``
    threads (default compile_threads()): Triton's compile runs mostly outside the GIL, so they
    compile side by side.  Binaries the precompile's workers compiled are only loaded from
    Triton's disk cache here (launch_configured waited for them).  A config that fails to compile
    is left to the benchmark, which reports it as it always has.  Returns how many configs were
    warmed up here (0 with one thread or one config: nothing to overlap)."""
    threads = compile_threads() if threads is None else threads
    try:
        configs = autotuned_configs(kernel, tuned, args, meta)
    except Exception:  # an autotuner without these attributes: it compiles them itself
        return 0
    threads = min(threads, len(configs))
    if threads <= 1:
        return 0
    device = torch.cuda.current_device() if torch.cuda.is_available() else None
    try:  # the JIT's per-device cache made here, not by several threads at once (one would win)
        kernel.device_caches[device]
    except Exception:
        pass

    def compile_one(config) -> bool:
        try:
            with torch.cuda.device(device) if device is not None else contextlib.nullcontext():
                config_warmup(kernel, grid, args, meta, config)
            return True
        except Exception:
            return False

    with ThreadPoolExecutor(threads, thread_name_prefix="inception_fast_compile") as pool:
        return sum(pool.map(compile_one, configs))


# Per autotuned kernel: {shape key: the config its autotuner chose}.  Once a shape has been
# launched, later launches start the kernel with that config directly.  The autotuner's own
# dispatch redoes its key on every call, filtering all ~45 arguments through a list (a quadratic
# scan) and stringifying every dtype, twice per block; the launch it then makes is the one made
# here.
# Each kernel's memo is an LRUDict (inception_fast.caches), and the autotuner's own per-shape
# cache is trimmed to the same capacity after each tuning launch: neither grows with the number
# of shapes a server sees.
_TUNED_CONFIGS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


# Per autotuned kernel: [(key name, its position among the kernel's arguments, or None)].
_KEY_POSITIONS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _shape_key(tuned, args: tuple, meta: dict) -> Optional[tuple]:
    """What the autotuner keys its choice on: the values of its key arguments (positional, or
    constexprs in ``meta``) and the dtypes of the tensors.  None where this Triton's Autotuner
    does not expose its key names."""
    positions = _KEY_POSITIONS.get(tuned)
    if positions is None:
        names = getattr(tuned, "keys", None)
        arg_names = getattr(tuned, "arg_names", None)
        if names is None or arg_names is None:
            return None
        positions = _KEY_POSITIONS[tuned] = [(k, arg_names.index(k) if k in arg_names else None) for k in names]
    n = len(args)
    return (
        tuple(args[i] if i is not None and i < n else meta.get(k) for k, i in positions),
        tuple(a.dtype for a in args if isinstance(a, torch.Tensor)),
    )


def _tuned_config(tuned, args: tuple, meta: dict):
    known = _TUNED_CONFIGS.get(tuned)
    if not known:
        return None
    return known.get(_shape_key(tuned, args, meta))


def _store_key(tuned, args: tuple, meta: dict, store_as: str):
    """(device, the choice store's key) of this launch, or None (no tensor argument, no key)."""
    key = _shape_key(tuned, args, meta)
    device = next((a.device for a in args if isinstance(a, torch.Tensor)), None)
    if key is None or device is None:
        return None
    return device, (store_as, key[0], tuple(str(d) for d in key[1]))


def _stored_config(tuned, args: tuple, meta: dict, store_as: str):
    """The config an earlier process chose for this shape (kept by _store_config), remembered for
    this process too; None where nothing (or no config of ``tuned`` by that name) is stored."""
    from ...choice_store import STORE

    found = _store_key(tuned, args, meta, store_as)
    if found is None:
        return None
    device, key = found
    name = STORE.get("triton_config", key, device)
    config = next((c for c in getattr(tuned, "configs", ()) if config_name(c) == name), None)
    if config is not None:
        memo = _TUNED_CONFIGS.get(tuned)
        if memo is None:
            memo = _TUNED_CONFIGS[tuned] = LRUDict()
        memo[_shape_key(tuned, args, meta)] = config
    return config


def _store_config(tuned, args: tuple, meta: dict, store_as: str) -> None:
    """Keeps the autotuner's choice for this shape in the choice store, by config_name."""
    from ...choice_store import STORE

    found, config = _store_key(tuned, args, meta, store_as), getattr(tuned, "best_config", None)
    if found is not None and config is not None:
        STORE.put("triton_config", found[1], found[0], config_name(config))


def _remember_tuned_config(tuned, args: tuple, meta: dict, timings_before=None, bench_time_before=None) -> None:
    key, config = _shape_key(tuned, args, meta), getattr(tuned, "best_config", None)
    if key is None or config is None:
        return
    memo = _TUNED_CONFIGS.get(tuned)
    if memo is None:
        memo = _TUNED_CONFIGS[tuned] = LRUDict()
    memo[key] = config
    own = getattr(tuned, "cache", None)
    if isinstance(own, dict):
        trim(own, cache_capacity())
    # The autotuner's per-config times for this shape: it replaces its configs_timings dict when
    # it benchmarks, and also when it reads a disk-cache entry (an earlier process's benchmark,
    # which alone leaves its bench_time as it was).
    timings = getattr(tuned, "configs_timings", None)
    timings = timings if timings is not None and timings is not timings_before else None
    names = getattr(tuned, "keys", ())
    _log_tuning(
        {
            "kernel": getattr(getattr(tuned, "base_fn", None), "__name__", None) or type(tuned).__name__,
            "shape": {k: v for k, v in zip(names, key[0])},
            "dtype": str(key[1][0]) if key[1] else None,
            "chosen": config_name(config),
            "us": None if timings is None else {config_name(c): _median_us(t) for c, t in timings.items()},
            "from_cache": timings is not None and getattr(tuned, "bench_time", None) == bench_time_before,
        }
    )


# What the autotuners chose in this process, in launch order (benchmarks record it): one entry
# per (kernel, shape) the first time it launches; the last TUNING_LOG_FACTOR * cache_capacity().
_TUNING_LOG: collections.deque = collections.deque()
_tuning_logged = 0
TUNING_LOG_FACTOR = 4


def _log_tuning(entry: dict) -> None:
    global _tuning_logged
    _tuning_logged += 1
    _TUNING_LOG.append(entry)
    while len(_TUNING_LOG) > TUNING_LOG_FACTOR * cache_capacity():
        _TUNING_LOG.popleft()


def tuning_log() -> list:
    """[{"kernel", "shape" (the autotune key), "dtype", "chosen" (config_name), "us" ({config
    name: median µs} of the autotuner's benchmark of this shape, or None), "from_cache" (that
    benchmark was an earlier process's, read from Triton's disk cache)}], the most recent ones
    (see TUNING_LOG_FACTOR)."""
    return list(_TUNING_LOG)


def tuning_count() -> int:
    """How many entries the tuning log has received in this process (also the dropped ones)."""
    return _tuning_logged


def config_name(config) -> str:
    """A short name for a triton.Config: its tile, then warps and stages ("BLOCK_M=128 ... w4 s3")."""
    tile = " ".join(f"{k}={v}" for k, v in config.kwargs.items())
    return f"{tile} w{config.num_warps} s{config.num_stages}"


def _median_us(timing) -> float:
    """The autotuner's benchmark result (ms, or [median, p20, p80] ms) as median µs."""
    ms = timing[0] if isinstance(timing, (list, tuple)) else timing
    return float(ms) * 1e3


_EMPTY: dict = {}


def no_buffer(like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A zero-element tensor on ``like``'s device, for a pointer argument the launch never
    dereferences (split-K buffers where nothing splits); one per device and dtype, not one
    allocation per launch."""
    key = (like.device, dtype)
    buf = _EMPTY.get(key)
    if buf is None:
        buf = _EMPTY[key] = torch.empty(0, dtype=dtype, device=like.device)
    return buf


def dtype_reason(dtype: torch.dtype) -> Optional[str]:
    """None where the kernels compute in ``dtype`` here, else why not (the registry's dtype_reason,
    and ``check_dtype``'s error)."""
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return f"computes in float32, float16 and bfloat16, got {dtype}"
    if INTERPRET and dtype == torch.bfloat16:
        return "runs under TRITON_INTERPRET=1 here: bfloat16 is not supported by the Triton interpreter"
    return None


def check_dtype(dtype: torch.dtype) -> None:
    why = dtype_reason(dtype)
    if why is not None:
        raise TypeError(f"the triton backend {why}")


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot input_precision, read at call time like PyTorch's own convolutions do.

    Only fp32 operands are affected: fp16/bf16 always multiply exactly and accumulate in
    fp32 whatever the setting.  The interpreter multiplies in numpy, i.e. exactly.
    """
    if INTERPRET:
        return "ieee"
    if dtype == torch.float32 and not torch.backends.cudnn.allow_tf32:
        return "ieee"
    return "tf32"


def check_branch_weights(w3: torch.Tensor, w5: torch.Tensor) -> None:
    """Launch 2's weight shapes: branch 2 a 3x3 conv, branch 3 a square conv of odd size."""
    why = geometry.branch_kernels_reason(w3, w5)
    if why is not None:
        raise ValueError(why)


def row_unit(*tensors: torch.Tensor) -> int:
    """The largest power of two, up to 16, that divides every row stride (dims 0, 2, 3: all but
    the channel one) of the given 4-D (N, C, H, W) activations or (O, C, kh, kw) weights.

    Triton marks an integer argument divisible only when it is a multiple of 16; any other stride
    counts as unaligned, and every element then gets its own 64-bit address and a scalar access.
    A scratch buffer with ch3red + ch5red = 136 channels (Inception 4b) is a multiple of 8, i.e. of
    16 bytes in bf16: passed as stride / 8 (the kernels' ``*_div_unit`` arguments) and multiplied
    back by this unit as a constexpr inside the kernel, its rows are known to be 16-byte aligned
    (vector stores and cp.async loads).  The same goes for channel counts that bound a mask
    (pow2_unit): 4b's 296 reduce columns and its branch-3 input of 24 channels.

    Also refuses, with geometry.check_int32_offsets, a tensor whose channel, row or column offsets
    the kernels would compute past 32 bits.
    """
    strides = []
    for t in tensors:
        s_n, s_c, s_h, s_w = t.stride()
        if max(s_h, s_w) * geometry.TAP_REACH >= 2**31 or s_c * t.shape[1] >= 2**31:  # near 32 bits: check
            geometry.check_int32_offsets(t)
        strides += (s_n, s_h, s_w)
    return stride_unit(*strides)


def stride_unit(*strides: int) -> int:
    """pow2_unit of the strides, or 1 where one reaches 2^31: such a stride stays whole, since
    Triton passes it as int64, whereas stride // unit could fit int32, and the product with the
    unit would then wrap in 32 bits."""
    return 1 if max(strides, default=0) >= 2**31 else pow2_unit(*strides)


def pow2_unit(*values: int) -> int:
    """The largest power of two, up to 16, that divides every value (see row_unit)."""
    g = math.gcd(*values)
    return 16 if g == 0 else min(16, g & -g)


def row_strides(t: torch.Tensor, unit: int) -> tuple:
    """Strides of dims (0, 2, 3, 1) of a 4-D tensor, the first three divided by ``unit`` (row_unit)."""
    s_n, s_c, s_h, s_w = t.stride()
    return s_n // unit, s_h // unit, s_w // unit, s_c


def weight_strides(w: torch.Tensor) -> tuple:
    """(W_UNIT, the weight's strides of dims (0, 2, 3, 1), the first three divided by W_UNIT), as
    row_unit and row_strides give them, but with the kh and kw strides of a 1x1 kernel
    taken as 0: the kernel multiplies them by 0 only, and PyTorch gives size-1 dims stride 1, which
    would make W_UNIT 1 and the weight loads unaligned (no cp.async)."""
    s_o, s_c, s_h, s_w = w.stride()
    s_h, s_w = (0 if w.shape[d] == 1 else s for d, s in ((2, s_h), (3, s_w)))
    unit = stride_unit(s_o, s_h, s_w)
    return unit, (s_o // unit, s_h // unit, s_w // unit, s_c)


def next_pow2_clamped(n: int, lo: int = 16, hi: int = 128) -> int:
    """A tile width for a dimension of size n: tl.dot needs >= 16, registers want <= hi."""
    return max(lo, min(hi, 1 << max(n - 1, 0).bit_length()))


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for the launchers' grids.  Plain Python: triton.cdiv is a constexpr function
    whose call costs ~3 µs on the host, paid several times per launch."""
    return -(-a // b)


@triton.constexpr_function
def l1_align(on, row_unit, element_bits):
    """The alignment, in elements, to claim for a gathered tile's row offsets so that Triton copies
    it 8 bytes at a time with cp.async.ca, which L1 caches (16-byte copies are cp.async.cg, which
    bypasses L1, so every tap of a gather reads L2): 8 bytes' worth where ``on`` and the rows are
    known that aligned (their strides are multiples of ``row_unit`` elements, see row_unit), else 0,
    no claim (rows aligned to less already copy in smaller pieces; a false claim would misalign)."""
    elements = 8 // (element_bits // 8)
    return elements if on and row_unit % elements == 0 else 0


@triton.jit
def pixel_rows(row0, M, H, W, BLOCK_M: tl.constexpr):
    """(row_ok, img, hh, ww) of the BLOCK_M pixel rows from ``row0`` of the N*H*W pixel rows.
    Pixel indices are < M < 2^31 (checked by the launchers); the image index is 64-bit, so
    offsets built from it are too."""
    offs_m = row0 + tl.arange(0, BLOCK_M)
    row_ok = offs_m < M
    hw = H * W
    img = (offs_m // hw).to(tl.int64)
    rem = offs_m % hw
    return row_ok, img, rem // W, rem % W


@triton.jit
def pixel_tile(pid, n_col_tiles, M, H, W, BLOCK_M: tl.constexpr):
    """Program ``pid`` of a 1-D grid whose column tiles vary fastest: (pid_n, row_ok, img, hh, ww)
    for its BLOCK_M pixels (see pixel_rows)."""
    pid_m = pid // n_col_tiles
    row_ok, img, hh, ww = pixel_rows(pid_m * BLOCK_M, M, H, W, BLOCK_M)
    return pid % n_col_tiles, row_ok, img, hh, ww


@triton.jit
def row_offsets(img, hh, ww, s_n, s_h, s_w):
    """64-bit element offsets of the pixels (img, hh, ww) in a tensor with strides s_n, s_h, s_w."""
    return img * s_n + hh.to(tl.int64) * s_h + ww.to(tl.int64) * s_w


def candidate_kwargs(tuned, config, prune, m: int) -> list:
    """The kwargs of the configs a launch of M pixel rows may run: the pinned ``config``, else
    those the autotuned kernel ``tuned`` may pick (its configs after its early ``prune``, which
    Triton skips for a single config), none under the interpreter (``tuned`` None: it runs its
    own tile).  Split-K launchers size their workspace and counters for all of them."""
    if config is not None:
        return [config.kwargs]
    if tuned is None:
        return []
    configs = tuned.configs
    return [c.kwargs for c in (configs if len(configs) == 1 else prune(configs, {"M": m}))]


@triton.jit
def split_range(n_steps, split, SPLIT_K: tl.constexpr):
    """[lo, hi): split ``split``'s share of n_steps K steps among SPLIT_K programs, cdiv(n_steps,
    SPLIT_K) each in order (the last shares shorter, or empty)."""
    chunk = tl.cdiv(n_steps, SPLIT_K)
    lo = split * chunk
    return lo, tl.minimum(lo + chunk, n_steps)


@triton.jit
def bias_relu_store(acc, b_ptr, out_ptr, o_row, row_ok, offs_n, col_ok, cout_off, stride_b, stride_out_c):
    """Bias + ReLU on a finished fp32 tile and its store into out's channels from cout_off."""
    bias = tl.load(b_ptr + offs_n * stride_b, mask=col_ok, other=0.0).to(tl.float32)
    y = tl.maximum(acc + bias[None, :], 0.0, propagate_nan=tl.PropagateNan.ALL).to(out_ptr.dtype.element_ty)
    tl.store(
        out_ptr + o_row[:, None] + (cout_off + offs_n)[None, :] * stride_out_c,
        y,
        mask=row_ok[:, None] & col_ok[None, :],
    )


@triton.jit
def finish_tile(
    acc,
    b_ptr,
    out_ptr,
    o_row,
    row_ok,
    offs_n,
    col_ok,
    cout_off,
    stride_b,
    stride_out_c,
    ws_ptr,
    cnt_ptr,
    tile,
    split,
    SPLIT_K: tl.constexpr,
    SLOT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """The end of an output tile whose K may be split over SPLIT_K programs (``split`` of them,
    all on output tile ``tile``): with SPLIT_K 1, bias_relu_store; else this program's fp32 partial
    ``acc`` goes into workspace slot [tile, split] (SLOT >= BLOCK_M * BLOCK_N fp32 elements each),
    then the tile's int32 counter is bumped (acq_rel atomic, after a barrier: every thread's
    partial is out).  The program that brings it to SPLIT_K adds the SPLIT_K slots in slot order
    (the result does not depend on who came last), resets the counter to 0 and stores.  The
    counters must be 0 when the launch starts; each tile leaves its own at 0."""
    if SPLIT_K == 1:
        bias_relu_store(acc, b_ptr, out_ptr, o_row, row_ok, offs_n, col_ok, cout_off, stride_b, stride_out_c)
    else:
        offs_ws = tl.arange(0, BLOCK_M)[:, None] * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]
        slots = ws_ptr + tile.to(tl.int64) * (SPLIT_K * SLOT)
        tl.store(slots + split * SLOT + offs_ws, acc)
        tl.debug_barrier()  # every thread's partial is written before the (one-thread) atomic
        arrived = tl.atomic_add(cnt_ptr + tile, 1, sem="acq_rel")
        if arrived == SPLIT_K - 1:
            total = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for part in tl.static_range(SPLIT_K):
                total += tl.load(slots + part * SLOT + offs_ws, cache_modifier=".cg")
            tl.atomic_xchg(cnt_ptr + tile, 0)  # ready for the next launch
            bias_relu_store(total, b_ptr, out_ptr, o_row, row_ok, offs_n, col_ok, cout_off, stride_b, stride_out_c)
