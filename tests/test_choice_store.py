"""The choice store (inception_fast.choice_store): measured choices kept on disk per fingerprint,
read back by a new process instead of measuring again."""

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch

from inception_fast import choice_store, choices

CPU = torch.device("cpu")


@pytest.fixture
def store(tmp_path, monkeypatch):
    """The store in a temporary directory, forgotten before and after (as a new process would)."""
    monkeypatch.setenv(choice_store.ENV_CHOICE_CACHE, str(tmp_path))
    choice_store.STORE.forget()
    yield tmp_path
    choice_store.STORE.forget()


def _measuring(name="t", seconds=None):
    """A chooser that measures on CPU with a stand-in timer; ``timed`` lists what it ran."""
    seconds = seconds or {"a": 2.0, "b": 1.0}
    timed = []

    def timer(fn, device, repeats):
        timed.append(fn())
        return seconds[timed[-1]]

    return choices.MeasuredChoice(measure_on=("cpu",), timer=timer, store_as=name), timed


RUNNERS = {"a": lambda: "a", "b": lambda: "b"}


def test_a_new_process_reads_the_choice_instead_of_measuring(store):
    first, timed = _measuring()
    key = choices.PoolKey("cpu", torch.float32, (1, 2, 3, 3), (18, 1, 6, 2), (3, 2, 0, True))
    assert first.pick(key, CPU, RUNNERS) == "b" and timed == ["a", "b"]
    (path,) = store.glob("choices-*.json")
    data = json.loads(path.read_text())
    assert data["choices"]["t"] == {repr(key): "b"} and data["fingerprint"]["device"] == "cpu"

    choice_store.STORE.forget()
    second, timed2 = _measuring(seconds={"a": 1.0, "b": 2.0})  # would now pick "a" if it measured
    assert second.pick(key, CPU, RUNNERS) == "b" and timed2 == []
    assert second.choices()[key].stored and not second.choices()[key].seconds
    other = key._replace(shape=(2, 2, 3, 3))
    assert second.pick(other, CPU, RUNNERS) == "a" and timed2, "an unseen key is measured"
    assert len(json.loads(path.read_text())["choices"]["t"]) == 2


def test_a_stored_choice_needs_the_same_fingerprint_and_a_known_candidate(store, monkeypatch):
    first, _ = _measuring()
    first.pick("k", CPU, RUNNERS)
    choice_store.STORE.forget()
    # A stored name that is no longer a candidate (say, a backend not installed now) is measured.
    again, timed = _measuring(seconds={"a": 2.0, "c": 1.0})
    assert again.pick("k", CPU, {"a": lambda: "a", "c": lambda: "c"}) == "c" and timed == ["a", "c"]
    # Edited code (another fingerprint): measured afresh.
    choice_store.STORE.forget()
    monkeypatch.setattr(choice_store, "_FINGERPRINTS", {})
    monkeypatch.setattr(choice_store, "_CODE", ["edited"])
    edited, timed = _measuring()
    assert edited.pick("k", CPU, RUNNERS) == "b" and timed == ["a", "b"]
    assert len(list(store.glob("choices-*.json"))) == 2


def test_cpu_choices_are_stored_per_thread_count_and_avx512_setting(store, monkeypatch):
    """Which CPU candidate is fastest depends on the threads and on whether the extension's AVX-512
    pool runs: a choice measured under one setting is not read back under another."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        first, _ = _measuring()
        assert first.pick("k", CPU, RUNNERS) == "b"
        choice_store.STORE.forget()
        torch.set_num_threads(1)
        one, timed = _measuring(seconds={"a": 1.0, "b": 2.0})
        assert one.pick("k", CPU, RUNNERS) == "a" and timed == ["a", "b"], "1 thread read 2 threads' choice"
        torch.set_num_threads(2)
        monkeypatch.setenv("INCEPTION_FAST_NO_AVX512", "1")
        choice_store.STORE.forget()
        portable, timed = _measuring(seconds={"a": 1.0, "b": 2.0})
        assert portable.pick("k", CPU, RUNNERS) == "a" and timed == ["a", "b"], "AVX-512 off read its choice"
        monkeypatch.setenv("INCEPTION_FAST_NO_AVX512", "0")  # "0": the AVX-512 form runs, as unset
        choice_store.STORE.forget()
        again, timed = _measuring(seconds={"a": 1.0, "b": 2.0})
        assert again.pick("k", CPU, RUNNERS) == "b" and timed == []
        assert len(list(store.glob("choices-*.json"))) == 3
    finally:
        torch.set_num_threads(threads)


def test_static_mode_and_off_ignore_the_store(store, monkeypatch):
    first, _ = _measuring(seconds={"a": 2.0, "b": 1.0})
    first.pick("k", CPU, RUNNERS)
    choice_store.STORE.forget()
    monkeypatch.setenv(choices.ENV_AUTO, "static")
    static, timed = _measuring()
    assert static.pick("k", CPU, RUNNERS) == "a" and timed == []
    monkeypatch.delenv(choices.ENV_AUTO)
    monkeypatch.setenv(choice_store.ENV_CHOICE_CACHE, "off")
    off, timed = _measuring()
    assert off.pick("k", CPU, RUNNERS) == "b" and timed == ["a", "b"]
    assert choice_store.store_dir() is None


@pytest.mark.parametrize("value", ["off", "statik", "1"])
def test_an_unknown_auto_value_is_an_error_naming_the_one_value(monkeypatch, value):
    monkeypatch.setenv(choices.ENV_AUTO, value)
    chooser, timed = _measuring()
    with pytest.raises(ValueError, match=f"INCEPTION_FAST_AUTO='{value}': unknown; the one value is 'static'"):
        chooser.pick("k", CPU, RUNNERS)
    assert timed == []


def test_a_damaged_store_warns_and_is_measured_again(store):
    first, _ = _measuring()
    first.pick("k", CPU, RUNNERS)
    (path,) = store.glob("choices-*.json")
    path.write_text("{not json")
    choice_store.STORE.forget()
    again, timed = _measuring()
    with pytest.warns(UserWarning, match="damaged stored choices"):
        assert again.pick("k", CPU, RUNNERS) == "b"
    assert timed == ["a", "b"]
    assert json.loads(path.read_text())["choices"]["t"] == {repr("k"): "b"}, "the next write repairs it"


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage", b"[" * 200000], ids=["binary", "nested too deep"])
def test_an_unreadable_store_file_warns_and_is_measured_again(store, content):
    first, _ = _measuring()
    first.pick("k", CPU, RUNNERS)
    (path,) = store.glob("choices-*.json")
    path.write_bytes(content)
    choice_store.STORE.forget()
    again, timed = _measuring()
    with pytest.warns(UserWarning, match="damaged stored choices"):
        assert again.pick("k", CPU, RUNNERS) == "b"
    assert timed == ["a", "b"]


def test_nothing_is_read_where_nothing_may_be_measured(store, monkeypatch):
    """Tracing, graph capture, static mode: the first candidate, with no file read (a file read
    would break torch.compile's graph)."""
    first, _ = _measuring()
    first.pick("k", CPU, RUNNERS)
    choice_store.STORE.forget()
    reads = []
    monkeypatch.setattr(choice_store.STORE, "get", lambda *a: reads.append(a))
    frozen, timed = _measuring()
    monkeypatch.setattr(frozen, "can_measure", lambda device: False)
    assert frozen.pick("k", CPU, RUNNERS) == "a" and timed == [] and reads == []


@pytest.mark.parametrize("variable", [choice_store.ENV_CHOICE_CACHE, "TRITON_CACHE_DIR", None])
def test_a_home_that_cannot_be_found_only_warns(monkeypatch, variable):
    """A "~" that names no user, or no home directory at all (a container with an arbitrary uid):
    the store is off with a warning that says why; measuring still works."""
    import pathlib

    for name in (choice_store.ENV_CHOICE_CACHE, "TRITON_CACHE_DIR", "TRITON_HOME"):
        monkeypatch.delenv(name, raising=False)
    if variable is None:

        def no_home(*args):
            raise RuntimeError("Could not determine home directory.")

        monkeypatch.setattr(pathlib.Path, "home", classmethod(no_home))
    else:
        monkeypatch.setenv(variable, "~no_such_user_inception_fast/cache")
    with pytest.warns(UserWarning, match="measured choices are not stored.*home directory"):
        assert choice_store.store_dir() is None
    chooser, timed = _measuring()
    with pytest.warns(UserWarning, match="not stored"):
        assert chooser.pick("k", CPU, RUNNERS) == "b" and timed == ["a", "b"]


def test_an_unwritable_store_only_warns(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(choice_store.ENV_CHOICE_CACHE, str(blocker / "sub"))
    choice_store.STORE.forget()
    chooser, _ = _measuring()
    with pytest.warns(UserWarning, match="cannot store the measured choices"):
        assert chooser.pick("k", CPU, RUNNERS) == "b"


def test_a_store_that_cannot_be_written_or_read_warns_once_not_once_a_shape(tmp_path, monkeypatch):
    """A directory where the store file should be, a damaged file, a FIFO (which a read would wait
    on): one warning for each, however many shapes are measured."""
    import warnings

    monkeypatch.setenv(choice_store.ENV_CHOICE_CACHE, str(tmp_path))
    choice_store.STORE.forget()
    first, _ = _measuring()
    first.pick("k", CPU, RUNNERS)
    (path,) = tmp_path.glob("choices-*.json")
    for trouble, message in (
        ("directory", "cannot read|cannot store"),
        ("damaged", "damaged"),
        ("fifo", "not a regular"),
    ):
        path.unlink() if path.is_file() or path.is_fifo() else path.rmdir()
        if trouble == "directory":
            path.mkdir()
        elif trouble == "damaged":
            path.write_text("{not json")
        else:
            os.mkfifo(path)
        choice_store.STORE.forget()
        chooser, _ = _measuring()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for i in range(5):
                assert chooser.pick(f"k{i}", CPU, RUNNERS) == "b"
        told = [str(w.message) for w in caught]
        assert told and all(re.search(message, m) for m in told), told
        assert len(told) == len(set(told)) <= 2, f"{trouble}: {told}"  # (a read and a write at most)


def test_the_store_keeps_the_most_recent_entries(store, monkeypatch):
    """By age, not by name: k10 and k11 sort before k8 and k9 but are newer."""
    monkeypatch.setenv("INCEPTION_FAST_CACHE_ENTRIES", "3")
    chooser, _ = _measuring()
    for i in (8, 9, 10, 11):
        chooser.pick(f"k{i}", CPU, RUNNERS)
    (path,) = store.glob("choices-*.json")
    assert list(json.loads(path.read_text())["choices"]["t"]) == [repr(f"k{i}") for i in (9, 10, 11)]


def test_two_processes_merge_their_choices(store):
    """Each process writes what it measured merged into what is on disk."""
    script = textwrap.dedent(
        """
        import sys, torch
        from inception_fast import choices
        chooser = choices.MeasuredChoice(measure_on=("cpu",), timer=lambda f, d, r: float(f() == "a"), store_as="t")
        print(chooser.pick(sys.argv[1], torch.device("cpu"), {"a": lambda: "a", "b": lambda: "b"}))
        """
    )
    env = {**__import__("os").environ, choice_store.ENV_CHOICE_CACHE: str(store)}
    for key in ("first", "second"):
        out = subprocess.run([sys.executable, "-c", script, key], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "b"
    (path,) = store.glob("choices-*.json")
    assert set(json.loads(path.read_text())["choices"]["t"]) == {repr("first"), repr("second")}


@pytest.mark.gpu
def test_cuda_choices_are_stored_per_cudnn_benchmark_setting(cuda_device, monkeypatch):
    """cudnn.benchmark changes which algorithm a cuDNN candidate runs, so its time: a choice measured
    with it on is not read back with it off, nor the reverse."""
    monkeypatch.setattr(choice_store, "_FINGERPRINTS", {})
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    off = choice_store.fingerprint(cuda_device)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    on = choice_store.fingerprint(cuda_device)
    assert (off["cudnn_benchmark"], on["cudnn_benchmark"]) == (False, True)
    assert {k: v for k, v in off.items() if k != "cudnn_benchmark"} == {
        k: v for k, v in on.items() if k != "cudnn_benchmark"
    }
