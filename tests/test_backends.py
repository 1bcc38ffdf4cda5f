"""The backend registry (inception_fast.backends): which backends run where, how a requested name
resolves, and the errors for a name that is unknown, failed to load, or lacks an op: each names
the problem and what would work instead."""

import warnings

import pytest
import torch

from inception_fast import backends
from inception_fast.backends import registry

KNOWN = "torch, triton, cuda, cpp, onednn, hopper, hopper_tma2"


def test_an_unknown_name_lists_every_known_backend():
    assert backends.names() == KNOWN.split(", ")
    with pytest.raises(ValueError, match=f"^unknown backend 'nope'; known backends: {KNOWN}$"):
        backends.get("nope")
    assert backends.availability("nope", "cpu") == f"unknown backend (known: {KNOWN})"
    with pytest.raises(RuntimeError, match=r"^backend 'nope' is unavailable on cpu: unknown backend \(known: torch"):
        backends.resolve("nope", "cpu")


def test_a_backend_that_failed_to_load_says_why(monkeypatch):
    backends.names()  # the plugins loaded (or their failures recorded)
    monkeypatch.delitem(registry._REGISTRY, "hopper", raising=False)
    monkeypatch.setitem(backends._LOAD_ERRORS, "hopper", "ImportError: no module named 'triton.tools'")
    with pytest.raises(RuntimeError, match=r"backend 'hopper' could not be loaded \(ImportError: no module named"):
        backends.get("hopper")
    assert backends.availability("hopper", "cpu") == "could not be loaded (ImportError: no module named 'triton.tools')"
    assert "hopper" not in backends.available_backends("cpu")


def test_available_backends_are_the_ones_that_run_torch_first():
    avail = backends.available_backends("cpu")
    assert avail[0] == "torch"
    assert avail == [n for n in backends.names() if backends.availability(n, "cpu") is None]
    assert "cuda" not in avail  # the extension's CUDA kernels; its CPU kernels are "cpp"
    assert backends.available_backends("meta") == ["torch"]


def test_auto_resolves_by_device():
    onednn_runs = backends.availability("onednn", "cpu") is None
    assert backends.resolve("auto", "cpu") == ("onednn" if onednn_runs else "torch")
    assert backends.resolve("auto", "cuda") == "auto"  # chosen per block shape at run time (no device query)
    assert backends.resolve("torch", "cpu") == "torch"


def test_an_unavailable_backend_is_refused_with_the_ones_that_run():
    with pytest.raises(
        RuntimeError,
        match=r"^backend 'cpp' is unavailable on meta: .*on cpu only, not on meta\. Available on meta: torch$",
    ):
        backends.resolve("cpp", "meta")
    assert backends.resolve("torch", "meta") == "torch"


def test_the_old_name_of_the_cpp_backend_resolves_with_a_deprecation_warning():
    if backends.availability("cpp", "cpu") is not None:
        pytest.skip("the C++ extension did not load")
    with pytest.warns(DeprecationWarning, match="'cuda' on cpu is a deprecated name of the 'cpp' backend"):
        assert backends.resolve("cuda", "cpu") == "cpp"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backends.renamed("cpp", "cpu") == "cpp"
        assert backends.renamed("cuda", "cuda") == "cuda"


def test_a_backends_dtype_and_op_refusals(monkeypatch):
    fake = registry.Backend(
        "fake",
        lambda device: None,
        kernels={},
        dtype_reason=lambda device, dtype: None if dtype == torch.float32 else f"no {dtype} on {device}",
    )
    monkeypatch.setitem(registry._REGISTRY, "fake", fake)
    assert backends.dtype_reason("fake", "cpu", torch.float32) is None
    assert backends.dtype_reason("fake", "cpu", torch.float16) == "no torch.float16 on cpu"
    assert backends.dtype_reason("torch", "cpu", torch.float16) is None
    with pytest.raises(ValueError, match=r"^max_pool2d runs on the 'torch' or .* backend, not 'fake'$"):
        fake.op("max_pool2d")
    with pytest.raises(ValueError, match="^no backend implements nope$"):
        fake.op("nope")
    assert backends.get("torch").op("max_pool2d") is backends.get("torch").kernels["max_pool2d"]


@pytest.mark.parametrize(
    "capability,reason",
    [((7, 5), "needs compute capability >= 8.0 (mma.sync), found 7.5"), ((8, 0), None), ((8, 9), None), ((9, 0), None)],
)
def test_the_tensor_core_kernels_need_sm80(monkeypatch, capability, reason):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert registry.sm80_reason(torch.device("cuda", 0), " (mma.sync)") == reason
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert registry.sm80_reason(torch.device("cuda", 0)) == "CUDA is not available"
