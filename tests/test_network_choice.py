"""backend="auto"'s whole-network choice on CPU (choices.CPU_NETWORK_CHOICE): a FusedGoogLeNet's
first no-gradient forward of a small input times whole forwards on onednn, cpp and torch, each
checked first against a float64 forward, and every later forward of that input runs the one kept;
what it never measures (large inputs, gradients, hooks, train mode, static mode, named backends);
the measuring's order (every candidate once, then interleaved rounds); clear errors for bad input."""

import copy

import pytest
import torch
from model_cases import calibrated_net, net_tolerance
from torch import nn

from inception_fast import FusedGoogLeNet, available_backends, backends, choice_store, choices
from inception_fast import modules as fused_modules
from inception_fast.backends import onednn_backend
from inception_fast.testing import reduced_precision_bound, rel_error

pytestmark = pytest.mark.skipif(
    "onednn" not in available_backends("cpu"), reason=f"onednn: {backends.availability('onednn', 'cpu')}"
)

CL = torch.channels_last
CPU = torch.device("cpu")
CHOICE = choices.CPU_NETWORK_CHOICE
HAS_CPP = "cpp" in available_backends("cpu")


@pytest.fixture(autouse=True)
def _fresh_choice():
    CHOICE.clear()
    yield
    CHOICE.clear()


@pytest.fixture
def spies(monkeypatch):
    """{backend: inputs its block kernel ran on}: the onednn blocks' prepacked forward, and the cpp
    and torch backends' inception_block kernels."""
    seen = {"onednn": [], "cpp": [], "torch": []}

    def spy(name, real):
        def run(x, *args, **kwargs):
            seen[name].append(tuple(x.shape))
            return real(x, *args, **kwargs)

        return run

    monkeypatch.setattr(
        onednn_backend, "prepacked_block_forward", spy("onednn", onednn_backend.prepacked_block_forward)
    )
    for name in ("cpp", "torch") if HAS_CPP else ("torch",):
        kernels = backends.get(name).kernels
        monkeypatch.setitem(kernels, "inception_block", spy(name, kernels["inception_block"]))
    return seen


def _net(size=32, backend="auto"):
    ref, _ = calibrated_net(size=size)
    return ref, FusedGoogLeNet.from_torchvision(ref, backend=backend).eval()


def _input(size=32, batch=1):
    return torch.randn(batch, 3, size, size).contiguous(memory_format=CL)


def _ran(seen) -> set:
    return {name for name, calls in seen.items() if calls}


def test_first_forward_measures_whole_forwards_and_later_ones_run_the_choice(spies):
    ref, model = _net()
    x = _input()
    ref64, bound = net_tolerance(ref, x)
    with torch.inference_mode():
        out = model(x)
    (key, choice), *more = CHOICE.choices().items()
    assert not more
    assert (key.device, key.dtype, key.shape, key.channels_last) == ("cpu", torch.float32, (1, 3, 32, 32), True)
    assert key.threads == torch.get_num_threads() and key.layers == fused_modules._layers(model)
    want = {"onednn", "torch"} | ({"cpp"} if HAS_CPP else set())
    assert set(choice.seconds) == want and not choice.errors and choice.name in want
    assert all(s > 0 for s in choice.seconds.values())
    assert rel_error(out, ref64) <= bound, "the measuring forward's result"
    for calls in spies.values():
        calls.clear()
    with torch.inference_mode():
        again = model(x)
    assert _ran(spies) == {choice.name}, "a later forward runs the kept backend, and only it"
    assert len(spies[choice.name]) == 9, "every block"
    assert rel_error(again, ref64) <= bound
    assert len(CHOICE.choices()) == 1, "measured once"


@pytest.mark.parametrize("name", ["torch", "onednn"] + (["cpp"] if HAS_CPP else []))
def test_each_kept_backend_runs_every_block_and_matches_the_reference(name, spies, monkeypatch):
    ref, model = _net()
    x = _input()
    ref64, bound = net_tolerance(ref, x)
    monkeypatch.setattr(CHOICE, "pick", lambda key, device, runners: name)
    with torch.no_grad():
        out = model(x)
    assert _ran(spies) == {name} and len(spies[name]) == 9
    assert rel_error(out, ref64) <= bound


def test_a_block_with_a_named_backend_keeps_it(spies, monkeypatch):
    _, model = _net()
    model.inception4a = fused_modules.FusedInception.from_torchvision(model.inception4a, backend="onednn").eval()
    monkeypatch.setattr(CHOICE, "pick", lambda key, device, runners: "torch")
    with torch.no_grad():
        model(_input())
    assert len(spies["onednn"]) == 1 and len(spies["torch"]) == 8


@pytest.mark.parametrize("wrong", ["onednn"] + (["cpp"] if HAS_CPP else []))
def test_a_candidate_that_disagrees_is_dropped_and_the_result_stays_right(wrong, monkeypatch):
    """A block kernel that is off by 1% on one backend: that whole-network candidate fails its
    check against the float64 forward, is never chosen, and the answer the user gets is right."""
    ref, model = _net()
    x = _input()
    ref64, bound = net_tolerance(ref, x)
    if wrong == "onednn":
        real = onednn_backend.prepacked_block_forward
        monkeypatch.setattr(onednn_backend, "prepacked_block_forward", lambda *a, **k: real(*a, **k) * 1.01)
    else:
        kernels = backends.get(wrong).kernels
        real = kernels["inception_block"]
        monkeypatch.setitem(kernels, "inception_block", lambda *a: (real(*a)[0] * 1.01, real(*a)[1]))
    with torch.no_grad():
        out = model(x)
        again = model(x)
    (choice,) = CHOICE.choices().values()
    assert wrong not in choice.seconds and choice.name != wrong
    assert "disagrees with ATen" in choice.errors[wrong] and "float64" in choice.errors[wrong]
    for got in (out, again):
        assert rel_error(got, ref64) <= bound


def test_bfloat16_is_measured_and_checked_by_the_reduced_precision_rule():
    if torch.bfloat16 not in onednn_backend.dtypes():
        pytest.skip("oneDNN has no bf16 convolutions on this CPU (onednn runs float32 only)")
    ref, model = _net()
    model = model.bfloat16()
    x = _input()
    with torch.no_grad():
        out = model(x.bfloat16())
        ref_bf16 = copy.deepcopy(ref).bfloat16()(x.bfloat16())
        ref64 = copy.deepcopy(ref).double()(x.double())
    (key, choice), *more = CHOICE.choices().items()
    assert not more and key.dtype == torch.bfloat16 and not choice.errors
    assert ref_bf16.float().std() > 0.05
    assert rel_error(out, ref64) <= reduced_precision_bound(ref_bf16, ref64)


def test_the_measuring_leaves_the_model_as_it_was():
    """The float64 check runs the model with float64 copies of its tensors for one call
    (functional_call): its own parameters and buffers are the same tensors afterwards, unchanged."""
    _, model = _net()
    before = {name: (t, t.clone()) for name, t in model.state_dict(keep_vars=True).items()}
    with torch.no_grad():
        model(_input())
    after = model.state_dict(keep_vars=True)
    assert after.keys() == before.keys()
    for name, (t, copy_) in before.items():
        assert after[name] is t and t.dtype == copy_.dtype and torch.equal(t, copy_), name
    assert CHOICE.choices(), "it measured"


def test_the_candidates_run_once_each_then_in_interleaved_rounds():
    calls = []
    chooser = choices.NetworkChoice(measure_on=("cpu",), rounds=3, budget_s=0.0)

    def runner(name):
        def run():
            calls.append(name)
            if name == "b" and calls.count("b") > 1:
                raise AssertionError("b failed on its first call: it must not be timed")
            if name == "b":
                raise RuntimeError("b is broken")
            return name

        return run

    names = ["a", "b", "c"]
    picked = chooser.pick("k", CPU, {n: runner(n) for n in names})
    assert calls[:3] == ["a", "b", "c"], "each candidate once first, in order (its check)"
    assert calls[3:] == ["a", "c"] * (len(calls[3:]) // 2) and len(calls[3:]) >= 2 * 3, "then rounds of the rest"
    choice = chooser.choices()["k"]
    assert picked in ("a", "c") and set(choice.seconds) == {"a", "c"} and "b is broken" in choice.errors["b"]


def test_the_interleaved_rounds_rank_the_candidates_by_their_median(monkeypatch):
    """The rounds' median decides, not the fastest round: one lucky round of a slower candidate
    does not win it the choice.  (time_interleaved stubbed with rounds whose minimum ranks the
    other way.)"""
    import statistics

    from inception_fast import timing

    rounds = {"a": [0.5, 2.0, 2.5], "c": [0.9, 1.0, 1.1]}
    monkeypatch.setattr(
        timing,
        "time_interleaved",
        lambda fns, **kwargs: {n: timing.Timing(statistics.median(rounds[n]), rounds[n]) for n in fns},
    )
    chooser = choices.NetworkChoice(measure_on=("cpu",), rounds=3, budget_s=0.0)
    assert chooser.pick("k", CPU, {"a": lambda: "a", "c": lambda: "c"}) == "c"
    assert chooser.choices()["k"].seconds == {n: statistics.median(r) for n, r in rounds.items()}


def test_large_inputs_run_onednn_unmeasured(spies, monkeypatch):
    monkeypatch.setattr(fused_modules, "CPU_NETWORK_MEASURE_PIXELS", 32 * 32 - 1)
    _, model = _net()
    with torch.no_grad():
        model(_input())
        model(_input())
    assert not CHOICE.choices() and _ran(spies) == {"onednn"}
    monkeypatch.setattr(fused_modules, "CPU_NETWORK_MEASURE_PIXELS", 32 * 32)
    with torch.no_grad():
        model(_input(size=33))
    assert not CHOICE.choices(), "kept for the first one: measured no more"
    model2 = copy.deepcopy(model)
    with torch.no_grad():
        model2(_input())
    assert CHOICE.choices(), "at the limit it measures"


def _not_measured(model, x, spies, *, grad=False):
    with torch.set_grad_enabled(grad):
        model(x)
    assert not CHOICE.choices()
    return _ran(spies)


def test_not_measured_with_gradients_or_in_train_mode(spies):
    _, model = _net()
    x = _input()
    assert _not_measured(model, x, spies, grad=True) == {"torch"}, "gradients: the torch backend's op"
    model.inception4b.branch2[0].bn.train()  # one BatchNorm in train mode: its statistics move per forward
    _not_measured(model, x, spies)
    model.eval()
    model.dropout.train()
    _not_measured(model, x, spies)
    model.eval()
    with torch.no_grad():
        model(x)
    assert CHOICE.choices(), "all in eval mode: measured"


def test_not_measured_while_hooks_would_run_on_every_timed_forward(spies):
    _, model = _net()
    x = _input()
    calls = []
    handle = model.inception3b.register_forward_hook(lambda *a: calls.append(1))
    _not_measured(model, x, spies)
    assert calls == [1], "the hook ran once, for the one forward"
    handle.remove()
    handle = nn.modules.module.register_module_forward_hook(lambda *a: None)
    try:
        _not_measured(model, x, spies)
    finally:
        handle.remove()
    with torch.no_grad():
        model(x)
    assert CHOICE.choices(), "without hooks: measured"


def test_not_measured_in_static_mode_under_a_dispatch_mode_or_with_a_named_backend(spies, monkeypatch):
    from model_cases import OpRecorder

    _, model = _net()
    x = _input()
    monkeypatch.setenv(choices.ENV_AUTO, "static")
    assert _not_measured(model, x, spies) == {"onednn"}
    monkeypatch.delenv(choices.ENV_AUTO)
    with OpRecorder():
        _not_measured(model, x, spies)
    named = FusedGoogLeNet.from_torchvision(model, backend="onednn").eval()
    _not_measured(named, x, spies)
    with torch.no_grad():
        model(x)
    assert CHOICE.choices(), "measured once nothing stands in the way"


def test_other_dtypes_and_empty_batches_are_not_measured():
    ref, model = _net()
    with torch.no_grad():
        model.double()
        model(_input().double())
        model.half()
        model(_input().half())
        model.float()
        assert model(_input(batch=0)).shape == (0, 1000)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(_input())
    assert not CHOICE.choices()


def test_threads_layout_and_shape_each_get_their_own_choice():
    _, model = _net()
    threads = torch.get_num_threads()
    try:
        with torch.no_grad():
            torch.set_num_threads(1)
            model(_input())
            torch.set_num_threads(2)
            model(_input())
            model(_input().contiguous())
            model(_input(size=33))
    finally:
        torch.set_num_threads(threads)
    keys = list(CHOICE.choices())
    assert [(k.threads, k.channels_last, k.shape[-1]) for k in keys] == [
        (1, True, 32),
        (2, True, 32),
        (2, False, 32),
        (2, True, 33),
    ]


def test_a_block_put_in_is_chosen_for_again_and_models_alike_share_the_choice(monkeypatch):
    _, model = _net()
    x = _input()
    picks = []
    real = CHOICE.pick
    monkeypatch.setattr(CHOICE, "pick", lambda key, *a: picks.append(key) or real(key, *a))
    with torch.no_grad():
        model(x)
        model(x)
        assert len(picks) == 1, "a later forward reads the model's answer"
        twin = copy.deepcopy(model)
        twin(x)
        assert len(picks) == 2 and picks[1] == picks[0] and len(CHOICE.choices()) == 1, "same key, not measured"
        model.inception5b = fused_modules.FusedInception(832, 384, 160, 384, 48, 128, 128).eval()
        model(x)
    assert len(picks) == 3 and picks[2].layers != picks[0].layers, "another block: another key"


def test_a_stored_choice_is_read_back(tmp_path, monkeypatch):
    monkeypatch.setenv(choice_store.ENV_CHOICE_CACHE, str(tmp_path))
    choice_store.STORE.forget()
    try:
        _, model = _net()
        with torch.no_grad():
            model(_input())
        (key, measured), *_ = CHOICE.choices().items()
        CHOICE.clear()
        choice_store.STORE.forget()
        with torch.no_grad():
            copy.deepcopy(model)(_input())
        again = CHOICE.choices()[key]
        assert again.stored and again.name == measured.name
    finally:
        choice_store.STORE.forget()


@pytest.mark.parametrize(
    "x,error,match",
    [
        (torch.randn(1, 4, 32, 32), ValueError, "expects 3 input channels, got 4"),
        (torch.randn(1, 3, 8, 8), ValueError, "too small"),
        (torch.randn(3, 32, 32), ValueError, "4-D"),
        (torch.randn(1, 3, 32, 32).to_sparse(), TypeError, "dense tensor"),
        ([[1.0]], TypeError, "expects a torch.Tensor"),
    ],
)
def test_bad_input_gets_the_networks_clear_error(x, error, match):
    _, model = _net()
    with torch.no_grad(), pytest.raises(error, match=match):
        model(x)
    assert not CHOICE.choices()


def test_a_model_that_fails_everywhere_raises_its_own_error():
    """A head put in that does not fit (every candidate fails the same way): the forward's own
    error, not the measuring's, and nothing kept."""
    _, model = _net()
    model.fc = nn.Linear(512, 10).eval()
    with torch.no_grad(), pytest.raises(RuntimeError, match="mat1 and mat2 shapes cannot be multiplied") as info:
        model(_input())
    assert "every candidate" not in str(info.value) and not CHOICE.choices()
