"""Per-block micro-benchmarks: the stem and Inception 3a-5b one block at a time, and each stage
FusedGoogLeNet runs outside the blocks, one stage at a time.

Implementations per block: torchvision's eager block (BatchNorm unfolded, torch.cat)
and FusedInception (BN folded) with each backend (torch = ATen, triton, cuda, cpp, onednn, hopper,
hopper_tma2: ``settings.BLOCK_BACKENDS``, each where it runs); for the
stem, torchvision's and FusedGoogLeNet's (folded) stem.  Launch 1 alone
(``launch1_ext`` = torch.ops.inception_fast.reduce_pool_ from the compiled extension,
the CUDA kernel on a GPU; ``launch1_triton`` = the Triton launcher; ``launch1_tma`` = the
"hopper" backend's, reduce_pool_tma.py) is timed on the same input, so the launch-1 kernels can be
held against each other block by block.  On a block at each image size (settings.ROLE_BLOCKS)
Triton's launch 1 is also timed with one role alone (``launch1_reduce``: the three 1x1s, given no
pool weights; ``launch1_pool``: the pool branch, given no 1x1 weights; each autotuned for itself),
which says where its time goes.

Stages outside the blocks (``settings.STAGES``, kind "stage"): conv1 + ReLU + maxpool1, conv2,
conv3, maxpool2, maxpool3, maxpool4 and the head (average pool + fc), each as torchvision's layers
run it (``torchvision``: BN unfolded) and as FusedGoogLeNet with backend "auto" runs it
(``fused``: through the model's own stage hooks, in the form its measured choice picked, which is
recorded beside the time with the candidates' µs).

GPU: batch 256 (``INCEPTION_FAST_BENCH_BLOCK_BATCH``), bf16, channels_last.  extra_info holds the
time, the achieved TFLOP/s and GB/s and the fraction of the device's roofline (ceilings measured
in the same run or from the known-device table: benchmarks.helpers.roofline), all counted from
the shapes (MACs of every conv; bytes = input + output + weights, each once).

    python -m pytest benchmarks/bench_blocks.py --benchmark-json blocks.json [--quick]
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.helpers.choices import measured_choices, stem_choice, triton_tuning_mark, triton_tuning_since
from benchmarks.helpers.measure import measure, parity
from benchmarks.helpers.models import (
    BackendUnavailable,
    example_input,
    fused_block,
    fused_stem,
    require_backend,
    tv_block,
    tv_stage,
)
from benchmarks.helpers.roofline import launch1_work, roofline
from benchmarks.helpers.settings import DTYPES, STAGES, block_cases, settings
from benchmarks.helpers.shapes import block_shapes, stage_shapes
from inception_fast import choices, stages
from inception_fast.geometry import block_channels, empty_outputs


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        cases = block_cases()
        metafunc.parametrize("case", cases, ids=[c.id for c in cases])


def _launch1_fn(case, s, x, dtype):
    """A zero-argument call of launch 1 alone, writing into preallocated out/scratch."""
    blk = fused_block(case.block, "torch", s, dtype)  # only for its packed weights
    with torch.no_grad():  # the cached, non-differentiable packing the forward uses
        packed = blk.packed(x.dtype)
    ch1 = block_channels(packed.w_red, packed.w_pool, packed.w3, packed.w5).ch1
    out, scratch = empty_outputs(x, packed.w_red, packed.w_pool, packed.w3, packed.w5)
    c_out = out.shape[1]
    w_red, b_red, w_pool, b_pool = packed.w_red, packed.b_red, packed.w_pool, packed.b_pool
    # One role alone: the other role's weights with no rows (and, for the pool role, no scratch).
    if case.impl == "launch1_reduce":
        w_pool, b_pool = w_pool[:0], b_pool[:0]
    elif case.impl == "launch1_pool":
        w_red, b_red, scratch = w_red[:0], b_red[:0], scratch[:, :0]
    args = (x, w_red, b_red, w_pool, b_pool, out, scratch)
    if case.impl == "launch1_ext":
        _load_extension(x.device)
        op = torch.ops.inception_fast.reduce_pool_
        try:
            op(*args)
        except (NotImplementedError, RuntimeError) as exc:
            pytest.skip(
                f"reduce_pool_ has no kernel for {x.device.type} (extension not built?): "
                f"{str(exc).splitlines()[0][:200]}"
            )
        fn = lambda: op(*args)
    elif case.impl == "launch1_tma":
        try:
            require_backend("hopper", s.device)
        except BackendUnavailable as exc:
            pytest.skip(str(exc))
        from inception_fast.backends.triton.reduce_pool_tma import launch_reduce_pool_tma, tma_unsupported_reason

        why = tma_unsupported_reason(x, packed.w_red)
        if why is not None:
            pytest.skip(f"launch 1 with TMA cannot describe these tensors: {why}")
        fn = lambda: launch_reduce_pool_tma(*args)
    else:
        try:
            require_backend("triton", s.device)
        except BackendUnavailable as exc:
            pytest.skip(str(exc))
        # The backend runs here, so its module imports: a renamed launcher is an ImportError, not a skip.
        from inception_fast.backends.triton.reduce_pool import launch_reduce_pool

        fn = lambda: launch_reduce_pool(*args)

    def check():
        """rel. error of what launch 1 wrote (branch-1 and pool slices, scratch) against the torch backend."""
        from inception_fast.backends import get

        with torch.inference_mode():
            out.fill_(float("nan"))
            scratch.fill_(float("nan"))
            fn()
            ref_out, ref_scratch = get("torch").op("inception_block")(x, *packed)
        n_pool = packed.w_pool.shape[0]
        pairs = []  # (written, expected) of each slice the launch's roles fill
        if case.impl != "launch1_pool":
            pairs += [(out[:, :ch1], ref_out[:, :ch1]), (scratch, ref_scratch)]
        if case.impl != "launch1_reduce":
            pairs.append((out[:, c_out - n_pool :], ref_out[:, c_out - n_pool :]))
        return parity(torch.cat([w for w, _ in pairs], 1), torch.cat([e for _, e in pairs], 1))

    return fn, packed, check


def _load_extension(device):
    """Registers the compiled kernels of reduce_pool_ (CPU and, in a CUDA build, CUDA), if built."""
    import importlib

    _available(device)  # loads the backend plugins; "cuda" and "cpp" load the extension
    try:
        importlib.import_module("inception_fast._C")
    except Exception:  # absent or broken: the op call then says which kernel is missing
        pass


def _available(device):
    import inception_fast

    return inception_fast.available_backends(device)


def _fused_stage_fn(stage: str, model, x):
    """A zero-argument call of FusedGoogLeNet ``model``'s ``stage`` on ``x``, through the hooks its
    forward calls (the stem's conv1 form as STEM_CHOICE picked it)."""
    if stage == "conv1":
        (w1, b1), _, _, padded = model._stem_weights(x.dtype)
        with torch.inference_mode():
            model._stem(x)  # makes the stem's choice at this shape (measured on CUDA)
        variant = choices.STEM_CHOICE.lookup(model.stem_choice_key(x)) or model._stem_variants(x, padded)[0]
        return lambda: model._stem_conv1(x, w1, b1, padded, variant)
    if stage in ("conv2", "conv3"):
        w, b = model._stem_weights(x.dtype)[1 if stage == "conv2" else 2]
        padding = 0 if stage == "conv2" else 1
        return lambda: stages.conv_relu(x, w, b, padding, model._triton_allowed)
    if stage == "maxpool2":
        return lambda: model._max_pool(x, model.maxpool2)
    if stage in ("maxpool3", "maxpool4"):
        pool = getattr(model, stage)
        return lambda: model._pool(pool, x)
    if stage == "head":
        return lambda: model._head(x)
    raise ValueError(f"unknown stage {stage!r}")


def _time_stage(s, benchmark, case, dtype):
    """One stage outside the blocks (kind "stage"), torchvision's or FusedGoogLeNet's."""
    torch_dtype = DTYPES[dtype]
    shape = stage_shapes(s.image_size)[case.block]
    batch = s.block_batch
    x = example_input(
        batch, *shape.input_chw, s.device, torch_dtype, torch.channels_last, nonnegative=case.block != "conv1"
    )
    ref = tv_stage(case.block, s, dtype)
    mark = triton_tuning_mark()  # before the first call, which autotunes a Triton kernel's first shape
    if case.impl == "torchvision":
        fn, backend = (lambda: ref(x)), "aten-unfused"
    else:
        model = fused_stem(s, dtype, "auto")
        fn, backend = _fused_stage_fn(case.block, model, x), "fused-auto"
        with torch.inference_mode():  # also makes the stage's measured choice before any capture
            got, want = fn(), ref(x)
        assert got.shape == want.shape, f"{case.block}: {tuple(got.shape)} against {tuple(want.shape)}"
    extra = dict(
        kind="stage",
        block=case.block,
        impl=case.impl,
        backend=backend,
        dtype=dtype,
        memory_format="channels_last",
        image_size=s.image_size,
        input_shape=[batch, *shape.input_chw],
        output_shape=[batch, *shape.output_chw],
    )
    group = f"stage {case.block} {s.device.type} {dtype} batch {batch}"
    timing = measure(benchmark, fn, s, batch=batch, extra=extra, group=group)
    tuning = triton_tuning_since(mark)
    if tuning:
        benchmark.extra_info["triton_tuning"] = tuning
    benchmark.extra_info.update(
        roofline(shape.flops(batch), shape.bytes(batch, x.element_size()), timing.median_s, s.device, torch_dtype)
    )
    benchmark.extra_info["time_us"] = timing.median_s * 1e6
    if case.impl == "fused":
        # What the stage's measured choice picked at this input, with the candidates' µs (conv2 and
        # conv3 read the same input: each keeps its own, told apart by the weight).
        found = measured_choices(s.device, torch_dtype, shape=tuple(x.shape), image_size=s.image_size)
        benchmark.extra_info["measured_choices"] = [c for c in found if case.block in c["where"].split("/")]
        with torch.inference_mode():
            benchmark.extra_info["rel_error_vs_torchvision"] = parity(fn(), ref(x))


def test_block(benchmark, case):
    s = settings()
    dtype = s.block_dtype
    if case.block in STAGES:
        return _time_stage(s, benchmark, case, dtype)
    torch_dtype = DTYPES[dtype]
    shape = block_shapes(s.image_size)[case.block]
    c, h, w = shape.input_chw
    batch = s.block_batch
    x = example_input(batch, c, h, w, s.device, torch_dtype, torch.channels_last, nonnegative=case.block != "stem")
    extra = dict(
        kind="block",
        block=case.block,
        impl=case.impl,
        dtype=dtype,
        memory_format="channels_last",
        image_size=s.image_size,
        input_shape=[batch, *shape.input_chw],
        output_shape=[batch, *shape.output_chw],
    )
    flops, nbytes = shape.flops(batch), shape.bytes(batch, x.element_size())
    check = None
    try:
        if case.impl.startswith("launch1_"):
            fn, packed, check = _launch1_fn(case, s, x, dtype)
            roles = {"launch1_reduce": ("reduce",), "launch1_pool": ("pool",)}.get(case.impl, ("reduce", "pool"))
            flops, nbytes = launch1_work(shape, packed, batch, x.element_size(), roles)
            ext = "cuda" if s.device.type == "cuda" else "cpp"
            extra["backend"] = {"launch1_ext": ext, "launch1_tma": "hopper"}.get(case.impl, "triton")
            extra["op"] = "launch1"
            extra["roles"] = list(roles)
        elif case.impl == "torchvision":
            mod = tv_block(case.block, s, dtype)
            fn = lambda: mod(x)
            extra["backend"] = "aten-unfused"
        elif case.block == "stem":  # the fused model's stem: BN folded, conv1 as measured fastest
            stem_model = fused_stem(s, dtype, case.impl)
            fn = lambda: stem_model._stem(x)
            extra["backend"] = "aten-folded" if case.impl == "torch" else case.impl
        else:
            mod = fused_block(case.block, case.impl, s, dtype)
            fn = lambda: mod(x)
            extra["backend"] = mod.backend
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    group = f"block {case.block} {s.device.type} {dtype} batch {batch}"
    mark = triton_tuning_mark()
    timing = measure(benchmark, fn, s, batch=batch, extra=extra, group=group)
    tuning = triton_tuning_since(mark)
    if tuning:
        benchmark.extra_info["triton_tuning"] = tuning
    roof = roofline(flops, nbytes, timing.median_s, s.device, torch_dtype)
    benchmark.extra_info.update(roof)
    benchmark.extra_info["time_us"] = timing.median_s * 1e6
    if case.block == "stem" and case.impl != "torchvision":
        benchmark.extra_info["stem_conv1"] = stem_choice(stem_model, x)
    if case.impl == "auto" or (case.block == "stem" and case.impl != "torchvision"):
        benchmark.extra_info["measured_choices"] = measured_choices(
            s.device, torch_dtype, shape=tuple(x.shape), image_size=s.image_size
        )
    if check is not None:
        benchmark.extra_info["rel_error_vs_torch_backend"] = check()
    elif case.impl != "torchvision":
        ref = tv_block(case.block, s, dtype)
        with torch.inference_mode():
            benchmark.extra_info["rel_error_vs_torchvision"] = parity(fn(), ref(x))
