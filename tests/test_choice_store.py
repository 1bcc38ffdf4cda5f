"""The choice store (inception_fast.choice_store): measured choices kept on disk per fingerprint,
read back by a new process instead of measuring again."""

import json
import os
import pickle
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


def _measuring(name="t", seconds=None, candidates=None):
    """A chooser that measures on CPU with a stand-in timer; ``timed`` lists what it ran."""
    seconds = seconds or {"a": 2.0, "b": 1.0}
    timed = []

    def timer(fn, device, repeats):
        timed.append(fn())
        return seconds[timed[-1]]

    return choices.MeasuredChoice(measure_on=("cpu",), timer=timer, store_as=name, candidates=candidates), timed


RUNNERS = {"a": lambda: "a", "b": lambda: "b"}


def test_a_new_process_reads_the_choice_instead_of_measuring(store):
    first, timed = _measuring()
    key = choices.PoolKey("cpu", torch.float32, (1, 2, 3, 3), (18, 1, 6, 2), (3, 2, 0, True))
    assert first.pick(key, CPU, RUNNERS) == "b" and timed == ["a", "b"]
    assert not first.choices()[key].stored and set(first.choices()[key].seconds) == {"a", "b"}
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
    monkeypatch.setenv(choices.ENV_AUTO, " Static")  # (in any letter case)
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


def test_a_store_file_of_another_format_warns_and_is_measured_again(store):
    """A file that parses but says another format (an older or newer package's): its choices are
    not read (even one naming a known candidate), it warns as damaged, and the next write replaces it."""
    first, _ = _measuring()
    first.pick("k", CPU, RUNNERS)
    (path,) = store.glob("choices-*.json")
    data = json.loads(path.read_text())
    data["format"], data["choices"]["t"] = 0, {repr("k"): "a"}
    path.write_text(json.dumps(data))
    choice_store.STORE.forget()
    again, timed = _measuring()
    with pytest.warns(UserWarning, match="damaged stored choices"):
        assert again.pick("k", CPU, RUNNERS) == "b"
    assert timed == ["a", "b"]
    data = json.loads(path.read_text())
    assert data["format"] == choice_store._FORMAT and data["choices"]["t"] == {repr("k"): "b"}


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


def test_a_choice_stored_again_becomes_the_newest_entry(store, monkeypatch):
    """Storing a key already in the file moves it to the newest end: the trim then drops the
    entries written before it, not the one just written."""
    monkeypatch.setenv("INCEPTION_FAST_CACHE_ENTRIES", "3")
    for key in ("k1", "k2", "k3", "k1", "k4"):
        path = choice_store.STORE.put("t", key, CPU, "b")
    assert list(json.loads(path.read_text())["choices"]["t"]) == [repr("k3"), repr("k1"), repr("k4")]
    choice_store.STORE.forget()
    assert choice_store.STORE.get("t", "k1", CPU) == "b" and choice_store.STORE.get("t", "k2", CPU) is None


@pytest.mark.parametrize("value", ["OFF", "Off", "FALSE", "No"])
def test_the_store_is_turned_off_in_any_letter_case(monkeypatch, value):
    """INCEPTION_FAST_CHOICE_CACHE=OFF turns the store off as "off" does (not a directory named OFF)."""
    monkeypatch.setenv(choice_store.ENV_CHOICE_CACHE, value)
    assert choice_store.store_dir() is None
    monkeypatch.setenv(choice_store.ENV_CHOICE_CACHE, f"{value}-dir")
    assert choice_store.store_dir() is not None  # a name that only starts so is a directory


def test_the_code_hash_covers_the_compiled_extension_and_the_python_sources(tmp_path, monkeypatch):
    """An edited _C extension (as a rebuilt csrc/ kernel) or Python source changes the code hash, so
    choices measured with the old code are measured afresh; other files do not count."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    source, ext = package / "sub" / "mod.py", package / "_C.cpython-311-x86_64-linux-gnu.so"
    source.write_text("x = 1\n")
    ext.write_bytes(b"\x7fELF one")
    monkeypatch.setattr(choice_store, "_PACKAGE", package)
    first = choice_store._code_hash()
    (package / "notes.txt").write_text("not code")
    (package / "other.so").write_bytes(b"\x7fELF not ours")
    assert choice_store._code_hash() == first
    ext.write_bytes(b"\x7fELF two")
    rebuilt = choice_store._code_hash()
    assert rebuilt != first, "a rebuilt extension kept the hash"
    source.write_text("x = 2\n")
    edited = choice_store._code_hash()
    assert edited != rebuilt, "an edited source kept the hash"
    source.rename(package / "sub" / "moved.py")  # the same code under another module name
    assert choice_store._code_hash() != edited, "a moved source kept the hash"


def test_choices_are_stored_per_triton_version(store, monkeypatch):
    """A new Triton compiles other kernels: a choice measured under one Triton version is not read
    back under another (and is under the same one)."""
    import types

    def with_triton(version):
        fake = types.ModuleType("triton")
        fake.__version__ = version
        monkeypatch.setitem(sys.modules, "triton", fake)
        monkeypatch.setattr(choice_store, "_FINGERPRINTS", {})
        choice_store.STORE.forget()

    with_triton("1.0.0")
    first, _ = _measuring()
    assert first.pick("k", CPU, RUNNERS) == "b"
    with_triton("2.0.0")
    other, timed = _measuring(seconds={"a": 1.0, "b": 2.0})
    assert other.pick("k", CPU, RUNNERS) == "a" and timed == ["a", "b"], "Triton 2.0.0 read 1.0.0's choice"
    with_triton("1.0.0")
    same, timed = _measuring(seconds={"a": 1.0, "b": 2.0})
    assert same.pick("k", CPU, RUNNERS) == "b" and timed == []
    assert len(list(store.glob("choices-*.json"))) == 2


@pytest.mark.parametrize("change", ["torch", "hardware"])
def test_choices_are_stored_per_torch_version_and_processor(store, monkeypatch, change):
    """Another torch (other ATen kernels) or another processor model: a stored choice is not read
    back; the file is another one."""
    first, _ = _measuring()
    assert first.pick("k", CPU, RUNNERS) == "b"
    if change == "torch":
        monkeypatch.setattr(torch, "__version__", torch.__version__ + ".other")
    else:
        monkeypatch.setattr(choice_store, "_cpu_model", lambda: "Another CPU @ 1 GHz")
    monkeypatch.setattr(choice_store, "_FINGERPRINTS", {})
    choice_store.STORE.forget()
    other, timed = _measuring(seconds={"a": 1.0, "b": 2.0})
    assert other.pick("k", CPU, RUNNERS) == "a" and timed == ["a", "b"]
    assert len(list(store.glob("choices-*.json"))) == 2


def test_the_default_store_is_beside_tritons_cache(tmp_path, monkeypatch):
    """Without INCEPTION_FAST_CHOICE_CACHE: inception_fast/ in TRITON_CACHE_DIR, else in
    TRITON_HOME's .triton/cache, else in the home directory's."""
    import pathlib

    for name in (choice_store.ENV_CHOICE_CACHE, "TRITON_CACHE_DIR", "TRITON_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(pathlib.Path, "home", classmethod(lambda cls: tmp_path / "home"))
    assert choice_store.store_dir() == tmp_path / "home" / ".triton" / "cache" / "inception_fast"
    monkeypatch.setenv("TRITON_HOME", str(tmp_path / "th"))
    assert choice_store.store_dir() == tmp_path / "th" / ".triton" / "cache" / "inception_fast"
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "tc"))
    assert choice_store.store_dir() == tmp_path / "tc" / "inception_fast"


def test_a_store_file_is_read_once_a_process_and_a_failed_write_leaves_no_temporary(store, monkeypatch):
    """Lookups after the first come from memory; a write that fails at its rename warns and leaves
    neither a temporary file nor a changed store file."""
    choice_store.STORE.put("t", "k1", CPU, "b")
    choice_store.STORE.forget()
    reads = []
    real_read = choice_store.ChoiceStore._read
    monkeypatch.setattr(
        choice_store.ChoiceStore, "_read", lambda self, path: reads.append(path) or real_read(self, path)
    )
    for key in ("k1", "k2", "k1", "k3"):
        choice_store.STORE.get("t", key, CPU)
    assert len(reads) == 1
    (path,) = store.glob("choices-*.json")
    before = path.read_bytes()

    def no_rename(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(choice_store.os, "replace", no_rename)
    with pytest.warns(UserWarning, match="cannot store the measured choices in .*: No space left on device"):
        assert choice_store.STORE.put("t", "k2", CPU, "a") is None
    assert sorted(p.name for p in store.iterdir()) == [path.name] and path.read_bytes() == before


def test_a_package_that_cannot_be_read_for_its_code_hash_turns_the_store_off(store, monkeypatch):
    def unreadable():
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(choice_store, "_FINGERPRINTS", {})
    monkeypatch.setattr(choice_store, "_CODE", [])
    monkeypatch.setattr(choice_store, "_code_hash", unreadable)
    with pytest.warns(UserWarning, match="measured choices are not stored: PermissionError"):
        assert choice_store.STORE.path(CPU) is None
    chooser, timed = _measuring()
    with pytest.warns(UserWarning, match="not stored"):
        assert chooser.pick("k", CPU, RUNNERS) == "b" and timed == ["a", "b"]


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


def test_an_entry_another_process_rewrote_keeps_its_newer_value(store):
    """This process read and stored "k" (in memory too); another process then rewrote "k" in the
    file (simulated by writing the file).  This process's next write, of another key, merges the
    file's newer "k" in, not its own stale one, and keeps the keys only it knows."""
    store_ = choice_store.STORE
    assert store_.put("t", "k", CPU, "a") is not None
    store_.put("t", "mine", CPU, "a")
    (path,) = store.glob("choices-*.json")
    data = json.loads(path.read_text())
    data["choices"]["t"] = {repr("k"): "b"}  # the other process's write (it never saw "mine")
    path.write_text(json.dumps(data))
    store_.put("t", "later", CPU, "a")
    on_disk = json.loads(path.read_text())["choices"]["t"]
    assert on_disk == {repr("k"): "b", repr("mine"): "a", repr("later"): "a"}
    assert store_.get("t", "k", CPU) == "b"


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


def _checked(name):
    """A candidate runner as ``checked_against`` marks one (not the trusted computation)."""
    run = lambda: name  # noqa: E731
    run.checked = True
    return run


def test_a_skipped_candidate_is_never_run_nor_read_back(store, monkeypatch):
    runners = {"a": lambda: "a", "b": _checked("b"), "c": _checked("c")}
    seconds, abc = {"a": 3.0, "b": 1.0, "c": 2.0}, ("a", "b", "c")
    first, timed = _measuring(seconds=seconds, candidates=abc)
    assert first.pick("k", CPU, runners) == "b" and timed == ["a", "b", "c"]
    choice_store.STORE.forget()
    monkeypatch.setenv(choices.ENV_SKIP, " T:b ")  # stored as the choice for "k": not read back either
    second, timed = _measuring(seconds=seconds, candidates=abc)
    assert second.pick("k", CPU, runners) == "c" and timed == ["a", "c"]
    assert second.choices()["k"].errors == {"b": f"skipped ({choices.ENV_SKIP})"}
    (path,) = store.glob("choices-*.json")
    assert json.loads(path.read_text())["choices"]["t"] == {repr("k"): "b"}, "a choice made without b is not kept"
    monkeypatch.setenv(choices.ENV_SKIP, "c,stem:triton")  # a bare name: every choice's; another choice's entry
    third, timed = _measuring(seconds=seconds, candidates=abc)
    assert third.pick("k2", CPU, runners) == "b" and timed == ["a", "b"]
    monkeypatch.setenv(choices.ENV_SKIP, "b,c")  # only the trusted one left: nothing to measure
    fourth, timed = _measuring()
    assert fourth.pick("k3", CPU, runners) == "a" and timed == []


@pytest.mark.parametrize(
    "value, message",
    [
        ("t:a", "'t:a', the trusted computation"),
        ("nosuch:b", "no measured choice is called 'nosuch'; the choices are auto, backward, bn_train, chain, "),
        ("b c", "cannot read 'b c'"),
        ("t:", "cannot read 't:'"),
        (
            "pool:triton,stem:triton_row",
            "choice 'stem' has no candidate 'triton_row'; its candidates are onednn, channels_last, pad<N>, nchw, ",
        ),
        ("stem:pad", "choice 'stem' has no candidate 'pad'"),
        ("tritn", "no measured choice has a candidate 'tritn'; the candidates are "),
        ("triton,pool:aten", "'aten' is the trusted computation of pool, which the other candidates are checked"),
        ("aten", "'aten' is the trusted computation of conv_relu, cpu_pool, head, pool, which"),
        ("stem:channels_last", "'channels_last' is the trusted computation of stem, which"),
    ],
)
def test_a_bad_skip_list_is_an_error_that_says_why(store, monkeypatch, value, message):
    """Entries are checked against the choices and the candidates each declares (a bare name against
    all of them)."""
    monkeypatch.setenv(choices.ENV_SKIP, value)
    chooser, timed = _measuring()
    with pytest.raises(ValueError, match=re.escape(message)):
        chooser.pick("k", CPU, {"a": lambda: "a", "b": _checked("b")})
    assert timed == []
    if value != "t:a":  # a value that cannot be read: every reader of it refuses it
        with pytest.raises(ValueError, match=re.escape(choices.ENV_SKIP)):
            chooser.skipped("b")


def test_skip_entries_name_declared_candidates_and_a_choice_takes_only_those(store, monkeypatch):
    """Every candidate the package's choices declare, bare or under its choice, and the stem's padded
    forms for any channel count, are entries the variable takes; a choice offered a candidate it
    does not declare refuses it (its declaration is what the variable's entries are checked against)."""
    for chooser in (choices.AUTO, choices.BACKWARD, choices.STEM_CHOICE, choices.CHAIN_CHOICE, choices.CPU_POOL_CHOICE):
        for name in chooser.declared:
            if name == chooser.trusted:  # (an error: see the case above)
                continue
            name = name.replace("<N>", "16")
            entries = choices._skip_entries(f"{chooser.store_as}:{name},{name}")
            assert entries == {(chooser.store_as, name), (None, name)}
    assert choices._skip_entries("stem:pad12") == {("stem", "pad12")}
    from inception_fast import stages  # the stem's forms as stages offers them, for any input channels

    forms = {*stages.STEM_TRITON_VARIANTS, *(f"pad{n}" for c in range(1, 17) for n in stages.stem_padded_channels(c))}
    assert all(choices._declares(choices.STEM_CHOICE.declared, form) for form in forms)
    chooser, timed = _measuring(name="declared", candidates=("a", "b"))
    with pytest.raises(ValueError, match="choice 'declared' was offered 'c', which it does not declare"):
        chooser.pick("k", CPU, {"a": lambda: "a", "c": _checked("c")})
    assert timed == [] and chooser.pick("k", CPU, {"a": lambda: "a", "b": _checked("b")}) == "b"
    trusting, timed = _measuring(name="trusting", candidates=("a", "b"))
    trusting.trusted = "a"
    with pytest.raises(ValueError, match="choice 'trusting' was offered its trusted 'a' as a checked one"):
        trusting.pick("k", CPU, {"a": _checked("a"), "b": _checked("b")})
    assert timed == []


class _Backend:
    """A stand-in backend whose block op is ``run``."""

    def __init__(self, run):
        self.op = lambda name: run
        self.kernels = ("inception_block",)
        self.block_reason = None  # takes every block


def _stand_in_backends(monkeypatch, **runs):
    backends = {name: _Backend(run) for name, run in runs.items()}
    monkeypatch.setattr(choices._backends, "availability", lambda name, device: None)
    monkeypatch.setattr(choices._backends, "get", backends.__getitem__)


def test_auto_measures_no_skipped_backend_and_captures_none(monkeypatch):
    _stand_in_backends(
        monkeypatch, cuda=lambda *a: torch.zeros(1), triton=lambda *a: torch.zeros(1), torch=lambda *a: torch.zeros(1)
    )
    ran = []
    auto = choices.AutoBackend(
        order=("cuda", "triton", "torch"), measure_on=("cpu",), timer=lambda fn, d, r: (ran.append(fn), 1.0)[1]
    )
    monkeypatch.setattr(choices.AutoBackend, "skipped", lambda self, name: name == "cuda")  # as auto:cuda would
    args = (torch.zeros(1, 4, 3, 3), *(torch.zeros(2, 2),) * 8)
    assert auto.choose(*args) == "triton" and len(ran) == 2
    (choice,) = auto.choices().values()
    assert choice.errors == {"cuda": f"skipped ({choices.ENV_SKIP})"}
    auto.clear()
    monkeypatch.setattr(choices, "capturing", lambda device: True)  # nothing measured: the first capture-ready
    assert auto.choose(*args) == "torch"


ILLEGAL = "AcceleratorError: CUDA error: an illegal memory access was encountered"


def _faulting_gpu(monkeypatch, lost):
    """Measuring on a stand-in "cuda:0" without a GPU: no capture, a fingerprint of its own, and
    ``lost`` (a list) saying whether the context is gone (with ``lost[0]``'s state, else a kernel's
    illegal address)."""
    monkeypatch.setattr(choices, "capturing", lambda device: False)
    monkeypatch.setattr(
        choices,
        "_context_fault",
        lambda device: (lost[0] if isinstance(lost[0], tuple) else (True, ILLEGAL)) if lost else None,
    )
    real = choice_store.fingerprint
    monkeypatch.setattr(choice_store, "fingerprint", lambda d: {**real(CPU), "device": "cuda", "hardware": "stand-in"})
    return torch.device("cuda", 0)


def _faulting(lost, seconds, raises=True):
    """A chooser timed by a stand-in, and its candidates: "a" (trusted), "b" (checked: it loses the
    context, and raises where ``raises``, else returns as a fault on another stream would), "c"."""
    timed = []

    def timer(fn, device, repeats):
        timed.append(fn())
        return seconds[timed[-1]]

    def fault():
        lost.append(True)
        if raises:
            raise RuntimeError("CUDA error: an illegal memory access was encountered\nlong details")
        return "b"

    fault.checked = True
    chooser = choices.MeasuredChoice(measure_on=("cuda",), timer=timer, store_as="t")
    return chooser, timed, {"a": lambda: "a", "b": fault, "c": _checked("c")}


@pytest.mark.parametrize("raises", [True, False], ids=["raises", "returns"])
def test_a_candidate_that_loses_the_cuda_context_is_named_recorded_and_skipped_later(store, monkeypatch, raises):
    lost = []
    gpu = _faulting_gpu(monkeypatch, lost)
    chooser, timed, runners = _faulting(lost, {"a": 2.0, "b": 0.5, "c": 1.0}, raises)
    with pytest.raises(choices.CandidateFault) as raised:
        chooser.pick("k", gpu, runners)
    message = str(raised.value)
    assert timed == (["a"] if raises else ["a", "b"]), "nothing runs after the context is lost"
    assert (raised.value.choice, raised.value.candidate) == ("t", "b")
    assert f"add it to {choices.ENV_SKIP} (comma-separated): {choices.ENV_SKIP}=t:b ;" in message
    assert f"unusable ({ILLEGAL}; measuring 'k')" in message
    (path,) = store.glob("choices-*.json")
    assert f"measure without it (recorded in {path})" in message
    assert json.loads(path.read_text())["choices"][choice_store.FAULTS] == {repr("t:b"): ILLEGAL}

    choice_store.STORE.forget()  # a new process: it measures without "b", and says why once
    lost.clear()
    again, timed, runners = _faulting(lost, {"a": 2.0, "c": 1.0})
    with pytest.warns(UserWarning, match=r"t:b is not measured on this GPU: it left the CUDA context unusable"):
        assert again.pick("k2", gpu, runners) == "c"
    assert timed == ["a", "c"] and not lost
    assert again.choices()["k2"].errors["b"].startswith("skipped: it left the CUDA context unusable")


def test_a_fault_not_written_to_the_store_does_not_say_it_was(tmp_path, monkeypatch):
    monkeypatch.setenv(choice_store.ENV_CHOICE_CACHE, str(tmp_path / "file"))
    (tmp_path / "file").write_text("")  # the store's directory is a file: nothing can be written
    choice_store.STORE.forget()
    lost = []
    gpu = _faulting_gpu(monkeypatch, lost)
    chooser, _, runners = _faulting(lost, {"a": 2.0})
    with pytest.warns(UserWarning, match="cannot store"), pytest.raises(choices.CandidateFault) as raised:
        chooser.pick("k", gpu, runners)
    assert "recorded" not in str(raised.value) and f"{choices.ENV_SKIP}=t:b ;" in str(raised.value)
    choice_store.STORE.forget()


def test_an_error_that_leaves_the_context_usable_only_drops_the_candidate(store, monkeypatch):
    lost = []
    gpu = _faulting_gpu(monkeypatch, lost)
    monkeypatch.setattr(choices, "_context_fault", lambda device: None)
    chooser, timed, runners = _faulting(lost, {"a": 2.0, "c": 1.0})
    assert chooser.pick("k", gpu, runners) == "c" and timed == ["a", "c"]
    assert chooser.choices()["k"].errors["b"].startswith("RuntimeError: CUDA error")
    (path,) = store.glob("choices-*.json")
    assert choice_store.FAULTS not in json.loads(path.read_text())["choices"]


@pytest.mark.parametrize("trusted", [True, False], ids=["trusted candidate", "an error no kernel causes"])
def test_a_lost_context_is_not_blamed_on_atens_computation_nor_for_a_hardware_error(store, monkeypatch, trusted):
    lost = []
    gpu = _faulting_gpu(monkeypatch, lost)
    chooser, timed, runners = _faulting(lost, {})
    if trusted:
        del runners["b"].checked
    else:  # lost in "b" with an error no kernel causes by itself
        state = (False, "AcceleratorError: CUDA error: uncorrectable ECC error encountered")
        monkeypatch.setattr(choices, "_context_fault", lambda device: state if lost else None)
    with pytest.raises(choices.ContextLost, match="unusable on cuda:0 while candidate 't:b' ran") as raised:
        chooser.pick("k", gpu, {"b": runners["b"], "c": runners["c"]})
    assert not isinstance(raised.value, choices.CandidateFault)
    assert trusted or str(raised.value).endswith("; not recorded against it")
    assert not list(store.glob("choices-*.json")), "nothing recorded"


def test_a_context_lost_before_measuring_blames_no_candidate(store, monkeypatch):
    lost = [True]  # an earlier kernel, not a candidate, failed
    gpu = _faulting_gpu(monkeypatch, lost)
    chooser, timed, runners = _faulting(lost, {"a": 2.0, "c": 1.0})
    lost_before = "is unusable .a kernel launched earlier failed.; nothing can be"
    with pytest.raises(choices.ContextLost, match=lost_before) as raised:
        chooser.pick("k", gpu, {"c": runners["c"], "a": runners["a"]})
    assert not isinstance(raised.value, choices.CandidateFault) and timed == []
    assert not list(store.glob("choices-*.json")), "nothing recorded"


def test_a_context_an_outer_candidate_lost_before_its_nested_choice_is_blamed_on_it(store, monkeypatch):
    """The stem's form loses the context with a kernel of its own, then runs the pool's choice, which
    finds it lost before measuring: the stem's form is named, not "nobody"."""
    lost = []
    gpu = _faulting_gpu(monkeypatch, lost)
    inner, inner_timed, inner_runners = _faulting(lost, {"a": 2.0, "c": 1.0})
    outer = choices.MeasuredChoice(measure_on=("cuda",), timer=lambda fn, d, r: (fn(), 1.0)[1], store_as="outer")

    def form():
        lost.append(True)  # its own kernel faults on a stream nothing waited for
        return inner.pick("k", gpu, {"c": inner_runners["c"], "a": inner_runners["a"]})

    form.checked = True
    with pytest.raises(choices.CandidateFault) as raised:
        outer.pick("k", gpu, {"plain": lambda: "plain", "form": form})
    assert (raised.value.choice, raised.value.candidate) == ("outer", "form") and inner_timed == []
    assert "is unusable (a kernel launched earlier failed)" in str(raised.value.__cause__)
    (path,) = store.glob("choices-*.json")
    assert json.loads(path.read_text())["choices"][choice_store.FAULTS] == {repr("outer:form"): ILLEGAL}


def test_auto_passes_a_context_lost_before_measuring_on_unwrapped(monkeypatch):
    monkeypatch.setattr(choices, "_context_fault", lambda device: (True, ILLEGAL))
    _stand_in_backends(monkeypatch, torch=lambda *args: torch.zeros(1), other=lambda *args: torch.zeros(1))
    auto = choices.AutoBackend(order=("torch", "other"), measure_on=("cpu",), timer=lambda fn, d, r: (fn(), 1.0)[1])
    with pytest.raises(choices.ContextLost, match="is unusable .a kernel launched earlier failed.") as raised:
        auto.choose(torch.zeros(1, 4, 3, 3), *(torch.zeros(2, 2),) * 8)
    assert "every backend failed" not in str(raised.value)


def test_a_fault_inside_a_nested_choice_is_blamed_on_its_own_candidate(store, monkeypatch):
    """The stem's forms run the pool's measured choice inside their timing: the pool's candidate
    that faulted is named, not the stem's form that was being timed."""
    lost = []
    gpu = _faulting_gpu(monkeypatch, lost)
    inner, _, inner_runners = _faulting(lost, {"a": 2.0, "c": 1.0})
    outer = choices.MeasuredChoice(measure_on=("cuda",), timer=lambda fn, d, r: (fn(), 1.0)[1], store_as="outer")
    nested = _checked("nested")
    nested_run = lambda: inner.pick("k", gpu, inner_runners)  # noqa: E731
    nested_run.checked = True
    with pytest.raises(choices.CandidateFault) as raised:
        outer.pick("k", gpu, {"plain": lambda: "plain", "nested": nested_run, "other": nested})
    assert (raised.value.choice, raised.value.candidate) == ("t", "b")
    (path,) = store.glob("choices-*.json")
    assert json.loads(path.read_text())["choices"][choice_store.FAULTS] == {repr("t:b"): ILLEGAL}


def test_a_context_lost_by_a_nested_choices_aten_computation_blames_no_candidate(store, monkeypatch):
    """The pool's choice inside the stem's form loses the context while ATen's pool runs: the stem's
    form that was being timed is not blamed either."""
    lost = []
    gpu = _faulting_gpu(monkeypatch, lost)
    inner, _, inner_runners = _faulting(lost, {})
    del inner_runners["b"].checked  # ATen's, trusted
    outer = choices.MeasuredChoice(measure_on=("cuda",), timer=lambda fn, d, r: (fn(), 1.0)[1], store_as="outer")
    nested_run = lambda: inner.pick("k", gpu, {"b": inner_runners["b"], "c": inner_runners["c"]})  # noqa: E731
    nested_run.checked = True
    with pytest.raises(choices.ContextLost, match="while candidate 't:b' ran") as raised:
        outer.pick("k", gpu, {"plain": lambda: "plain", "nested": nested_run})
    assert not isinstance(raised.value, choices.CandidateFault)
    assert not list(store.glob("choices-*.json")), "nothing recorded"


def test_a_fault_in_a_compile_only_pass_is_named(store, monkeypatch):
    """A compile-only pass runs the candidates that are no Triton kernel (cuDNN's, the extension's):
    one that faults there is named and recorded as in a measurement."""
    from inception_fast.compile_only import compile_only

    lost = []
    gpu = _faulting_gpu(monkeypatch, lost)
    chooser, timed, runners = _faulting(lost, {})
    with compile_only(), pytest.raises(choices.CandidateFault, match=f"{choices.ENV_SKIP}=t:b ;"):
        chooser.pick("k", gpu, runners)
    (path,) = store.glob("choices-*.json")
    assert repr("t:b") in json.loads(path.read_text())["choices"][choice_store.FAULTS]


def test_auto_passes_a_candidate_fault_on_unwrapped(monkeypatch):
    lost = []
    monkeypatch.setattr(choices, "_context_fault", lambda device: (True, ILLEGAL) if lost else None)

    def fault(*args):
        lost.append(True)
        raise RuntimeError("CUDA error: misaligned address")

    _stand_in_backends(monkeypatch, torch=lambda *args: torch.zeros(1), bad=fault)
    auto = choices.AutoBackend(order=("torch", "bad"), measure_on=("cpu",), timer=lambda fn, d, r: (fn(), 1.0)[1])
    with pytest.raises(choices.CandidateFault, match=f"{choices.ENV_SKIP}=bad ;"):
        auto.choose(torch.zeros(1, 4, 3, 3), *(torch.zeros(2, 2),) * 8)


def test_no_choice_is_stored_under_the_section_of_faulted_candidates():
    """A measured choice cannot take the store's section of faulted candidates as its own."""
    with pytest.raises(ValueError, match="the store's section of faulted candidates"):
        choices.MeasuredChoice(store_as=choice_store.FAULTS)


def test_a_candidate_fault_survives_pickling():
    fault = choices.CandidateFault("message", "stem", "triton_rows")
    again = pickle.loads(pickle.dumps(fault))
    assert (str(again), again.choice, again.candidate) == ("message", "stem", "triton_rows")


class _CudaError(RuntimeError):
    """torch.AcceleratorError as torch sets it: the message, and the cudaError_t in error_code."""

    def __init__(self, message, code=None):
        super().__init__(message)
        if code is not None:
            self.error_code = code


@pytest.mark.parametrize(
    "error, state",
    [
        (None, None),
        (_CudaError("CUDA error: an illegal memory access was encountered", 700), True),
        (_CudaError("CUDA error: device-side assert triggered"), True),  # no code: told by its text
        (_CudaError("CUDA error: device-side assert triggered", 710), True),
        (_CudaError("CUDA kernel failed: cudaErrorIllegalAddress", 700), True),  # a code: told by it, whatever the text
        (_CudaError("CUDA error: unspecified launch failure", 719), True),
        (_CudaError("CUDA error: uncorrectable ECC error encountered", 214), False),
        (_CudaError("CUDA error: the launch timed out and was terminated"), False),
        (_CudaError("CUDA error: operation not permitted when stream is capturing", 900), None),  # another thread's
        (_CudaError("CUDA error: operation failed due to a previous error during capture"), None),
        ("once", None),  # an error the second synchronize does not meet again: not a lost context
    ],
)
def test_a_lost_context_is_told_from_a_capture_elsewhere_and_a_kernels_fault_from_others(monkeypatch, error, state):
    calls = []

    def synchronize(device):
        calls.append(device)
        if error == "once" and len(calls) == 1:
            raise _CudaError("CUDA error: an illegal memory access was encountered", 700)
        if error is not None and error != "once":
            raise error

    monkeypatch.setattr(torch.cuda, "synchronize", synchronize)
    found = choices._context_fault(torch.device("cuda", 0))
    assert (found if found is None else found[0]) is state
    assert found is None or found[1] == f"_CudaError: {error}"
    assert choices._context_fault(CPU) is None


@pytest.mark.gpu
def test_gpu_a_kernel_that_faults_is_named_then_skipped_by_the_next_process(gpu, tmp_path):
    """A real illegal address (a Triton store 4 TiB past its tensor) in a candidate's first run: the
    process says which candidate and how to skip it, and records it; the next process on the same
    GPU measures without it, as does one told to skip it with an empty store."""
    script = textwrap.dedent(
        """
        import os, sys, torch, triton, triton.language as tl
        from inception_fast import choices

        @triton.jit
        def _wild_store(out_ptr):
            tl.store(out_ptr + (1 << 40), 1.0)

        def wild():
            out = torch.ones(1, device="cuda:0")
            _wild_store[(1,)](out)
            return out

        trusted = lambda: torch.ones(1, device="cuda:0")
        runners = {"aten": trusted, "wild": choices.checked_against(wild, trusted, "a wild store")}
        chooser = choices.MeasuredChoice(store_as="gpu_fault_test")
        try:
            print("chose", chooser.pick(sys.argv[1], torch.device("cuda", 0), runners))
        except choices.CandidateFault as exc:
            print("fault", exc.choice, exc.candidate, flush=True)
            print(exc, file=sys.stderr, flush=True)
            os._exit(3)  # (no teardown on the dead context)
        """
    )

    path = tmp_path / "wild_store.py"  # (Triton compiles kernels defined in a file only)
    path.write_text(script)

    def run(key, store, **env):
        environ = {k: v for k, v in os.environ.items() if k != choices.ENV_SKIP}
        environ.update({choice_store.ENV_CHOICE_CACHE: str(store), **env})
        return subprocess.run(
            [sys.executable, str(path), key], env=environ, capture_output=True, text=True, timeout=240
        )

    first = run("first", tmp_path / "store")
    assert first.returncode == 3 and first.stdout.split() == ["fault", "gpu_fault_test", "wild"], first.stderr[-2000:]
    assert f"{choices.ENV_SKIP}=gpu_fault_test:wild ;" in first.stderr
    second = run("second", tmp_path / "store")
    assert second.returncode == 0 and second.stdout.split() == ["chose", "aten"], second.stderr[-2000:]
    assert "gpu_fault_test:wild is not measured on this GPU" in second.stderr
    told = run("third", tmp_path / "empty", **{choices.ENV_SKIP: "gpu_fault_test:wild"})
    assert told.returncode == 0 and told.stdout.split() == ["chose", "aten"], told.stderr[-2000:]


def test_precompile_passes_a_candidate_fault_on(store, monkeypatch):
    """precompile() turns a forward that fails in its compile-only pass into its own error; a
    candidate's fault in the pass reaches the caller as the CandidateFault that names it."""
    from torch import nn

    from inception_fast import precompiler

    lost = []
    gpu = _faulting_gpu(monkeypatch, lost)
    chooser, _, runners = _faulting(lost, {})

    class Measuring(nn.Module):
        def forward(self, x):
            chooser.pick("k", gpu, runners)
            return x

    monkeypatch.setattr(precompiler, "_pool", lambda: object())  # as where Triton runs the pass
    monkeypatch.setattr(precompiler, "_interpreted", lambda: True)
    with pytest.raises(choices.CandidateFault, match=f"{choices.ENV_SKIP}=t:b ;"):
        precompiler.precompile(Measuring().eval(), torch.zeros(1))
