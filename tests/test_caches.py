"""Per-shape caches stay bounded: a process that sees many input shapes keeps at most
``cache_capacity()`` entries in each measured choice and in the Triton tuning memos and log,
and keeps failure messages short."""

import pytest
import torch

from inception_fast import choices
from inception_fast.caches import DEFAULT_CACHE_ENTRIES, ENV_CACHE_ENTRIES, LRUDict, cache_capacity, short_error

CAP = 5


@pytest.fixture
def small_caches(monkeypatch):
    monkeypatch.setenv(ENV_CACHE_ENTRIES, str(CAP))
    return CAP


def test_capacity_from_the_environment(monkeypatch):
    """A whole positive number, blanks around it stripped; unset or blank: the default."""
    monkeypatch.delenv(ENV_CACHE_ENTRIES, raising=False)
    assert cache_capacity() == DEFAULT_CACHE_ENTRIES
    for blank in ("", "  "):
        monkeypatch.setenv(ENV_CACHE_ENTRIES, blank)
        assert cache_capacity() == DEFAULT_CACHE_ENTRIES
    monkeypatch.setenv(ENV_CACHE_ENTRIES, " 3 ")
    assert cache_capacity() == 3
    for bad in ("0", "-2", "many", "2.5", "1e3", "3 entries"):
        monkeypatch.setenv(ENV_CACHE_ENTRIES, bad)
        with pytest.raises(ValueError, match=rf"{ENV_CACHE_ENTRIES} must be a positive integer, got '{bad}'"):
            cache_capacity()


def test_lru_keeps_the_most_recently_used(small_caches):
    d = LRUDict()
    for i in range(CAP):
        d[i] = i
    assert d.get(0) == 0  # 0 is now the most recent; 1 the oldest
    d[CAP] = CAP
    assert list(d) == [2, 3, 4, 0, CAP]
    assert d.get(1) is None


@pytest.mark.parametrize(
    "name", ["AUTO", "STEM_CHOICE", "CONV_RELU_CHOICE", "POOL_CHOICE", "CPU_POOL_CHOICE", "HEAD_CHOICE", "FOLD_CHOICE"]
)
def test_measured_choices_stay_bounded_over_many_shapes(name, small_caches, monkeypatch):
    chooser = getattr(choices, name)
    monkeypatch.setattr(chooser, "measure_on", ("cpu",))
    monkeypatch.setattr(chooser, "timer", lambda fn, device, repeats: fn() or 1.0)
    monkeypatch.setattr(chooser, "_choices", type(chooser._choices)())  # its own container, emptied
    huge = "x" * 6500

    def failing():
        raise RuntimeError(f"cudnn said no\n{huge}")

    measured = []
    a, b = chooser.declared[:2]  # two of the names it declares (it takes no others)
    for batch in range(1, 4 * CAP):
        key = ("cpu", torch.float32, (batch, 3, 8, 8))
        runners = {a: lambda: measured.append(key), b: failing}
        assert chooser.pick(key, torch.device("cpu"), runners) == a
        assert len(chooser.choices()) <= CAP
    assert len(measured) == 4 * CAP - 1
    latest = chooser.choices()[("cpu", torch.float32, (4 * CAP - 1, 3, 8, 8))]
    assert latest.errors[b] == "RuntimeError: cudnn said no"
    assert chooser.lookup(("cpu", torch.float32, (1, 3, 8, 8))) is None  # evicted: measured again if seen


def test_a_shared_choice_over_capacity_survives_concurrent_threads(small_caches):
    """Two inference threads sharing one MeasuredChoice past its capacity: hits reorder the LRU dict
    and new entries drop its oldest, while the other thread looks up, measures and copies it.
    No thread may fail (KeyError, "OrderedDict mutated during iteration"); the worst case is
    measuring a key again."""
    from threads import errors_in_threads

    chooser = choices.MeasuredChoice(measure_on=("cpu",), timer=lambda fn, device, repeats: float(fn() == "a"))
    runners = {"a": lambda: "a", "b": lambda: "b"}

    def serve(offset):
        for i in range(20000):
            key = (offset + i) % (3 * CAP)
            if chooser.lookup(key) is None:
                assert chooser.pick(key, torch.device("cpu"), runners) == "b"
            if i % 64 == 0:
                assert len(chooser.choices()) <= CAP

    errors = errors_in_threads(serve, [0, 7])
    assert not errors, errors[:3]


def test_short_error_keeps_one_line_of_at_most_200_characters():
    assert short_error(ValueError("bad\nthe rest")) == "ValueError: bad"
    assert len(short_error(RuntimeError("y" * 5000))) == 200
    assert short_error(KeyError()) == "KeyError"


class _FakeConfig:
    kwargs = {"BLOCK_M": 64}
    num_warps, num_stages = 4, 3


class _FakeAutotuner:
    """What _common reads of a triton Autotuner."""

    keys = ["M", "N"]
    arg_names = ["x", "M", "N"]
    base_fn = None

    def __init__(self):
        self.best_config = _FakeConfig()
        self.cache = {}
        self.configs_timings = None


def test_triton_tuning_memos_and_log_stay_bounded(small_caches):
    pytest.importorskip("triton")
    from inception_fast.backends.triton import _common

    tuned = _FakeAutotuner()
    count0 = _common.tuning_count()
    x = torch.empty(1)
    for m in range(1, 8 * CAP):
        tuned.cache[(m, 16)] = tuned.best_config  # what the autotuner itself remembers
        tuned.configs_timings = {tuned.best_config: [0.01]}
        _common._remember_tuned_config(tuned, (x, m, 16), {})
        assert len(_common._TUNED_CONFIGS[tuned]) <= CAP
        assert len(tuned.cache) <= CAP
        assert len(_common.tuning_log()) <= _common.TUNING_LOG_FACTOR * CAP
    assert _common.tuning_count() - count0 == 8 * CAP - 1
    assert _common._tuned_config(tuned, (x, 8 * CAP - 1, 16), {}) is tuned.best_config
    assert _common._tuned_config(tuned, (x, 1, 16), {}) is None
    # Triton's Autotuner keys on the tensors' dtypes too: another dtype's launch is a new shape.
    assert _common._tuned_config(tuned, (x.half(), 8 * CAP - 1, 16), {}) is None
    assert _common.tuning_log()[-1]["shape"] == {"M": 8 * CAP - 1, "N": 16}
    assert _common.tuning_log()[-1]["dtype"] == str(x.dtype)
    assert _common.tuning_log()[-1]["us"] == {_common.config_name(tuned.best_config): pytest.approx(10.0)}  # 0.01 ms
    # The choice store's key too: a config stored for one dtype is not read back for another.
    stored = _common._store_key(tuned, (x, 5, 16), {}, "kernel")
    assert stored is not None and stored != _common._store_key(tuned, (x.half(), 5, 16), {}, "kernel")


def test_threads_missing_one_key_at_once_measure_it_once():
    """Two threads whose first forwards meet the same unmeasured key at once (DataParallel's
    replicas, inference threads sharing a model): one measures every candidate, the other waits and
    takes its answer, instead of both timing (on a GPU, two CUDA-graph timing captures at once)."""
    import threading
    import time

    from threads import errors_in_threads

    timed = []

    def timer(fn, device, repeats):
        timed.append(fn())
        time.sleep(0.05)  # a measurement's length: the other thread arrives meanwhile
        return {"a": 2.0, "b": 1.0}[timed[-1]]

    chooser = choices.MeasuredChoice(measure_on=("cpu",), timer=timer)
    runners = {"a": lambda: "a", "b": lambda: "b"}
    start, picked = threading.Barrier(2), []

    def first_forward(_):
        start.wait()
        picked.append(chooser.pick("key", torch.device("cpu"), runners))

    errors = errors_in_threads(first_forward, [0, 1], switch_interval=None)
    assert not errors, errors
    assert picked == ["b", "b"]
    assert sorted(timed) == ["a", "b"]  # each candidate timed once


class _OneCallAtATimeAutotuner(_FakeAutotuner):
    """An autotuner that, like Triton's, keeps a call's state on itself: its choice for a call is
    the config named after that call's M, recorded as best_config while it runs; two calls at once
    are an error."""

    def __init__(self):
        super().__init__()
        self.running, self.overlaps = 0, 0

    def __getitem__(self, grid):
        def run(x, m, n, **meta):
            import time

            self.running += 1
            self.overlaps += self.running > 1
            self.best_config = type("Config", (_FakeConfig,), {"kwargs": {"BLOCK_M": m}})()
            time.sleep(0.05)  # benchmarking: the other thread arrives meanwhile
            self.running -= 1

        return run


def test_threads_autotune_one_kernel_one_at_a_time():
    """Two threads' first launches of one autotuned kernel (two shapes, as DataParallel replicas of
    different batch sizes make) benchmark one after the other, and each shape keeps its own
    choice: Triton's Autotuner keeps a call's arguments and choice on the kernel object, so two
    calls at once mix them (a config pruned for one M run at another)."""
    pytest.importorskip("triton")
    import threading

    from threads import errors_in_threads

    from inception_fast.backends.triton import _common

    tuned = _OneCallAtATimeAutotuner()
    x = torch.empty(1)
    start = threading.Barrier(2)

    def first_launch(m):
        start.wait()
        _common.launch_configured(None, tuned, lambda meta: (1,), (x, m, 16), {}, None, {})

    errors = errors_in_threads(first_launch, [64, 2048], switch_interval=None)
    assert not errors, errors
    assert tuned.overlaps == 0
    for m in (64, 2048):
        assert _common._tuned_config(tuned, (x, m, 16), {}).kwargs == {"BLOCK_M": m}


def test_lru_setting_an_item_counts_as_use_and_snapshots_go_oldest_first(small_caches):
    d = LRUDict()
    for i in range(CAP):
        d[i] = i
    d[0] = "again"  # overwritten: now the most recent
    d[CAP] = CAP
    assert list(d.snapshot().items()) == [(2, 2), (3, 3), (4, 4), (0, "again"), (CAP, CAP)]


def test_lru_explicit_capacity_beats_the_environment_and_survives_copies(small_caches):
    import copy
    import pickle

    with pytest.raises(ValueError, match="an LRUDict keeps at least one entry, got capacity 0"):
        LRUDict(capacity=0)
    for capacity in (2, CAP + 3):
        d = LRUDict(capacity=capacity)
        for i in range(2 * CAP):
            d[i] = i
        assert list(d) == list(range(2 * CAP - capacity, 2 * CAP))
    small = LRUDict(capacity=2)
    small["a"] = 1
    for copied in (copy.deepcopy(small), pickle.loads(pickle.dumps(small))):
        assert copied.snapshot() == {"a": 1}
        copied["b"], copied["c"] = 2, 3
        assert list(copied) == ["b", "c"]


def test_lru_copy_keeps_every_entry_of_a_larger_explicit_capacity(small_caches):
    """A copy or pickle of an LRUDict whose own capacity is above INCEPTION_FAST_CACHE_ENTRIES keeps
    all its entries (the onednn backend's layouts: capacity 64, whatever the variable says)."""
    import copy
    import pickle

    d = LRUDict(capacity=CAP + 3)
    for i in range(CAP + 3):
        d[i] = i
    assert list(copy.deepcopy(d)) == list(d)
    assert list(pickle.loads(pickle.dumps(d))) == list(d)
