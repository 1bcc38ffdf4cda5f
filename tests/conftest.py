"""Shared test setup.  The ONE tolerance table lives in inception_fast.testing.TOLERANCE."""

import importlib.util
import os
import time
import warnings

# Triton runs on CPU only under its interpreter, which must be chosen before triton is imported.
# No CUDA device query here: tests must collect on any machine.
if (
    "TRITON_INTERPRET" not in os.environ
    and not os.environ.get("CUDA_VISIBLE_DEVICES")
    and not os.path.exists("/dev/nvidia0")
):
    os.environ["TRITON_INTERPRET"] = "1"

# Measured choices are not read from or written to the user's choice store (tests that test the
# store point it at a temporary directory).
os.environ.setdefault("INCEPTION_FAST_CHOICE_CACHE", "off")
# A cold first forward measures its choices at once instead of running ATen's computations while
# the precompile's workers compile (inception_fast.precompiler): the GPU tests that count on a
# forward having measured see it measure; tests of the deferral turn it on.
os.environ.setdefault("INCEPTION_FAST_DEFER_TUNING", "0")

import pytest  # noqa: E402
import torch  # noqa: E402

# Triton is optional (the tests that need it skip without it).
INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1" and importlib.util.find_spec("triton") is not None
if INTERPRETING:
    import dataclasses

    from triton.runtime import interpreter as _interpreter

    # The interpreter's overflow sanitizer wraps every 32-bit integer add, subtract and multiply in
    # an int64 recomputation and range check whose device_assert it then drops (its options have
    # debug off, in triton 3.6 and 3.8 alike): dead work, about half of an interpreted kernel's time.
    _options = _interpreter.interpreter_builder.options
    if not _options.debug:
        _interpreter.interpreter_builder.options = dataclasses.replace(_options, sanitize_overflow=False)

# The GPU suite's tests step (benchmarks/gpu_suite.sh) is time-boxed: a test not started by this
# unix time skips, so pytest ends by itself, with its summary of failures, before the step's cap
# would kill it.  Unset everywhere else.
ENV_TEST_DEADLINE = "INCEPTION_FAST_TEST_DEADLINE"


def pytest_runtest_setup(item):
    deadline = os.environ.get(ENV_TEST_DEADLINE, "").strip()
    if deadline and time.time() > float(deadline):
        pytest.skip(f"the GPU suite's time box for the tests ran out ({ENV_TEST_DEADLINE})")


warnings.filterwarnings("ignore", message=".*weight initialization of GoogleNet.*")
# Uncalibrated random googlenets produce denormal activations, which run ~100x slower on CPU.
torch.set_flush_denormal(True)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _unwritten_reads(request, monkeypatch):
    """Under the interpreter, a kernel's load of memory nothing wrote fails the test
    (tests/unwritten_reads.py); ``@pytest.mark.reads_unwritten`` opts a test out."""
    if not INTERPRETING or request.node.get_closest_marker("reads_unwritten") is not None:
        yield
        return
    import unwritten_reads

    unwritten_reads.install(monkeypatch)
    yield
    assert not unwritten_reads.HITS, "; ".join(unwritten_reads.HITS)


@pytest.fixture
def no_network_choice(monkeypatch):
    """backend="auto" on CPU without its whole-network choice (choices.CPU_NETWORK_CHOICE, which
    measures no input then): the forwards run auto's unmeasured form.  For the tests of the choices
    made inside a forward (the stem's forms, the pools, the folds and chains under the Triton
    interpreter), which the network choice would otherwise run a dozen times per forward, each of
    its candidates with other forms on offer."""
    from inception_fast import modules

    monkeypatch.setattr(modules, "CPU_NETWORK_MEASURE_PIXELS", 0)


@pytest.fixture
def backend_flag():
    """``set(owner, name, value)``: a torch.backends flag (torch.backends.cuda.matmul.allow_tf32,
    torch.backends.cudnn.allow_tf32) for the test, each restored after it to the value it had before
    the test's first set.  Not through monkeypatch: cuda.matmul's flags are no attributes of the
    cuBLASModule instance but its __getattr__/__setattr__, and pytest 9.2's undo deletes such an
    attribute (an AttributeError in teardown that also leaves the test's later monkeypatches in place)."""
    saved = {}

    def set_flag(owner, name, value):
        saved.setdefault((id(owner), name), (owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    yield set_flag
    for owner, name, value in saved.values():
        setattr(owner, name, value)


@pytest.fixture
def cuda_device():
    """A CUDA device, or a clean skip (queried at test time, never at import)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return torch.device("cuda")


@pytest.fixture
def gpu(cuda_device):
    """A CUDA device for the Triton kernels' GPU tests: skipped under TRITON_INTERPRET=1, where
    the kernels would run in the interpreter, not on the GPU."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("TRITON_INTERPRET=1: kernels would run in the interpreter, not on the GPU")
    return cuda_device


@pytest.fixture
def hopper_gpu(gpu):
    """A CUDA device of compute capability 9.0 or more (TMA, wgmma) for the hopper backend's GPU
    tests; skipped below."""
    major, minor = torch.cuda.get_device_capability(gpu)
    if major < 9:
        pytest.skip(f"the TMA kernels need compute capability >= 9.0, found {major}.{minor}")
    return gpu


@pytest.fixture
def few_tma_programs(monkeypatch):
    """The persistent TMA kernels (reduce_pool_tma, branch_convs_tma) on a grid of 5 programs times
    PROGRAMS_PER_SM, so that on the GPU tests' small shapes each program strides over many tiles
    of both roles, not one.  Same binaries: the grid is host-side, M/H/W are not specialized on."""
    from inception_fast.backends.triton import branch_convs_tma, reduce_pool_tma

    monkeypatch.setattr(reduce_pool_tma, "_programs", lambda *a, **k: 5)
    monkeypatch.setattr(branch_convs_tma, "_programs", lambda *a, **k: 5)
    return 5


@pytest.fixture
def poisoned(monkeypatch):
    """Every block output, scratch and pre-BN buffer the backends allocate (through
    inception_fast.geometry.empty_outputs and empty_pre_bn) starts as NaN (unwritten_reads.poison),
    so an element a kernel leaves unwritten fails the comparison; asserts afterwards that poisoning
    happened."""
    import unwritten_reads

    from inception_fast import geometry

    real = geometry.empty_outputs
    calls = []

    def nan_outputs(*args):
        bufs = real(*args)
        for b in bufs:
            unwritten_reads.poison(b)
        calls.append(bufs)
        return bufs

    real_pre = geometry.empty_pre_bn

    def nan_pre(*args):
        pre = unwritten_reads.poison(real_pre(*args))
        calls.append((pre,))
        return pre

    monkeypatch.setattr(geometry, "empty_outputs", nan_outputs)
    monkeypatch.setattr(geometry, "empty_pre_bn", nan_pre)
    yield calls
    assert calls, "no block output was allocated through geometry.empty_outputs; poisoning had no effect"
