"""The main job, `python -m inception_fast`, at tiny sizes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from uninterpreted import run_python

from inception_fast import available_backends
from inception_fast.__main__ import main

REPO = Path(__file__).resolve().parents[1]
TINY = ["--device", "cpu", "--batch-sizes", "1", "--image-size", "32", "--repeats", "1", "--no-progress"]


def test_help_runs():
    out = subprocess.run([sys.executable, "-m", "inception_fast", "--help"], capture_output=True, text=True, check=True)
    for option in ("--batch-sizes", "--dtype", "--memory-format", "--variant", "--device", "--backend", "--json"):
        assert option in out.stdout


def test_main_job_checks_parity_and_writes_json(tmp_path, capsys):
    path = tmp_path / "r.json"
    rc = main(
        [
            "--device",
            "cpu",
            "--batch-sizes",
            "1,2",
            "--image-size",
            "48",
            "--repeats",
            "1",
            "--backend",
            "torch",
            "--json",
            str(path),
            "--no-progress",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "parity [torch]" in printed and "img/s" in printed
    data = json.loads(path.read_text())
    assert data["baseline"] == "torchvision"
    assert data["parity"]["torch"] <= data["parity_bound"]
    assert {(r["model"], r["batch"]) for r in data["results"]} == {
        ("torchvision", 1),
        ("torchvision", 2),
        ("fused[torch]", 1),
        ("fused[torch]", 2),
    }
    assert all(r["images_per_s"] > 0 for r in data["results"])


def test_main_job_tunes_each_fused_model_before_its_parity_and_its_timing(monkeypatch, capsys, tmp_path):
    """The main job hands each fused model the exact input of its parity check and of each
    timed batch before the first forward on it (on a GPU: a precompile, so that forward
    measures its choices instead of deferring them, inception_fast.precompiler), in the layout
    --memory-format names, which the fused rows are labelled with."""
    import inception_fast.__main__ as job

    calls = []
    monkeypatch.setattr(job, "_tuned", lambda model, x, on_gpu: calls.append((model.backend, x, on_gpu)))
    real_forward = job.FusedGoogLeNet.forward

    def forward(self, x):
        assert any(m == self.backend and t is x for m, t, _ in calls), "a forward before its _tuned"
        return real_forward(self, x)

    monkeypatch.setattr(job.FusedGoogLeNet, "forward", forward)
    args = ["--device", "cpu", "--batch-sizes", "1,3", "--image-size", "32", "--repeats", "1", "--no-progress"]
    formats = (("channels_last", torch.channels_last, "channels_last"), ("contiguous", torch.contiguous_format, "NCHW"))
    for option, fmt, layout in formats:
        calls.clear()
        path = tmp_path / f"{layout}.json"
        argv = [*args, "--backend", "torch", "--memory-format", option, "--json", str(path)]
        assert job.main(argv) == 0
        capsys.readouterr()
        assert [(b, x.shape[0], on_gpu) for b, x, on_gpu in calls] == [("torch", n, False) for n in (2, 1, 3)]
        assert all(x.is_contiguous(memory_format=fmt) for _, x, _ in calls), layout
        rows = json.loads(path.read_text())["results"]
        assert {r["layout"] for r in rows if r["model"] == "fused[torch]"} == {layout}


def test_a_parity_mismatch_is_the_jobs_exit_code(monkeypatch, capsys):
    """A fused model whose error against the fp64 reference exceeds the bound is reported as a
    MISMATCH and the job exits 1, after its timings (a CI run must not pass on wrong outputs); every
    error the parity check prints is measured against that fp64 reference."""
    import inception_fast.__main__ as job

    refs = []
    monkeypatch.setattr(job, "rel_error", lambda out, ref: refs.append(ref.dtype) or 1.0)  # every output far off
    assert job.main([*TINY, "--backend", "torch"]) == 1
    assert refs and set(refs) == {torch.float64}, "every error is measured against the fp64 reference"
    printed = capsys.readouterr().out
    assert "parity [torch]" in printed and "MISMATCH" in printed and "img/s" in printed


def test_the_parity_bound_is_the_baselines_own_error_in_the_run_dtype(monkeypatch, tmp_path, capsys):
    """The parity bound comes from the baseline computed in the run's dtype (bf16 here) against the
    same baseline in fp64 on the same input; the JSON and each verdict use that bound."""
    import inception_fast.__main__ as job
    from inception_fast.testing import reduced_precision_bound

    seen = []

    def bound(low, ref64):
        seen.append((low, ref64))
        return reduced_precision_bound(low, ref64)

    monkeypatch.setattr(job, "reduced_precision_bound", bound)
    path = tmp_path / "r.json"
    assert job.main([*TINY, "--backend", "torch", "--dtype", "bfloat16", "--json", str(path)]) == 0
    capsys.readouterr()
    ((low, ref64),) = seen
    assert low.dtype == torch.bfloat16 and ref64.dtype == torch.float64 and low.shape == ref64.shape
    assert 0 < job.rel_error(low, ref64) < 0.5, "the baseline in bf16, not in fp64 or another model"
    data = json.loads(path.read_text())
    assert data["parity_bound"] == reduced_precision_bound(low, ref64) > 0


@pytest.mark.parametrize("variant, size", [("d2l", None), ("paper", 32)])
def test_main_job_other_variant_and_format(variant, size, monkeypatch, tmp_path, capsys):
    """A variant other than torchvision's runs against our reference network of that variant (d2l at
    its default image size, 96), in the default dtype on CPU (float32), on NCHW input; the JSON records
    the variant, baseline, layout, image size and dtype that ran."""
    import inception_fast.__main__ as job
    from inception_fast import GoogLeNet

    bases = []
    real = job.FusedGoogLeNet.from_torchvision
    monkeypatch.setattr(
        job.FusedGoogLeNet, "from_torchvision", staticmethod(lambda base, **kw: bases.append(base) or real(base, **kw))
    )
    path = tmp_path / "r.json"
    sized = [] if size is None else ["--image-size", str(size)]
    argv = ["--device", "cpu", "--batch-sizes", "1", "--variant", variant, *sized, "--repeats", "1"]
    rc = main([*argv, "--memory-format", "contiguous", "--backend", "torch", "--no-progress", "--json", str(path)])
    assert rc == 0
    assert "reference" in capsys.readouterr().out
    assert [set(b.state_dict()) for b in bases] == [set(GoogLeNet(variant=variant).state_dict())]
    data = json.loads(path.read_text())
    got = [data[k] for k in ("variant", "baseline", "memory_format", "image_size", "dtype")]
    assert got == [variant, "reference", "contiguous", 96 if size is None else size, str(torch.float32)]


BAD_VALUES = [
    (["--image-size", "8"], "--image-size 8 is too small for variant 'torchvision': the smallest it takes is 15"),
    (["--variant", "d2l", "--image-size", "0"], "--image-size 0 is too small for variant 'd2l'"),
    (["--batch-sizes", "a"], "argument --batch-sizes: expected comma-separated positive integers, got 'a'"),
    (["--batch-sizes", "1,0"], "argument --batch-sizes: expected comma-separated positive integers, got 0 in '1,0'"),
    (["--batch-sizes", "1,,8"], "argument --batch-sizes: expected comma-separated positive integers, got '1,,8'"),
    (["--batch-sizes", "2.5"], "argument --batch-sizes: expected comma-separated positive integers, got '2.5'"),
    (["--device", "gpu"], "--device gpu: not a device name (cpu, cuda or cuda:N)"),
    (["--device", "meta"], "--device meta: the main job runs on cpu or cuda"),
    (["--device", "cpu:1"], "--device cpu:1: there is one cpu device, 'cpu'"),
    (
        ["--backend", "nope"],
        "--backend 'nope' is unavailable on cpu: unknown backend "
        "(known: torch, triton, cuda, cpp, onednn, hopper, hopper_tma2)",
    ),
    (["--backend", "torch,"], "--backend takes backend names separated by commas, got 'torch,'"),
    (["--backend", ","], "--backend takes backend names separated by commas, got ','"),
    (["--repeats", "0"], "--repeats must be at least 1, got 0"),
    (["--repeats", "many"], "argument --repeats: invalid int value: 'many'"),
    (
        ["--time-budget", "inf", "--image-size", "15", "--batch-sizes", "1", "--backend", "torch"],
        "--time-budget must be a number of seconds, at least 0, got inf",
    ),
    (["--dtype", "float16"], "--dtype float16 runs on CUDA only; on cpu use float32 or bfloat16"),
    (["--json", "{tmp}"], "--json {tmp}: cannot write there (Is a directory)"),
    (["--json", "{tmp}/no/such/dir/r.json"], "--json {tmp}/no/such/dir/r.json: cannot write there (No such file"),
    (["--json", ""], "--json: empty path"),
    (["--device", ""], "--device: empty; give cpu, cuda or cuda:N"),
    (["--device", " "], "--device: empty; give cpu, cuda or cuda:N"),
    (["--json", " "], "--json: empty path"),
    (["--image-size", "3000000000"], "--batch-sizes 8 at --image-size 3000000000: a batch beyond any machine's memory"),
    (["--image-size", "99999999999999999999"], "at --image-size 99999999999999999999: a batch beyond any machine's"),
    (
        ["--batch-sizes", "1,1000000000000000000"],
        "--batch-sizes 1000000000000000000 at --image-size 224: a batch beyond",
    ),
    (  # the largest batch first: the check takes the largest, wherever it is in the list
        ["--batch-sizes", "1000000000000000000,1"],
        "--batch-sizes 1000000000000000000 at --image-size 224: a batch beyond",
    ),
]


def _one_error_line(capsys, message):
    """The job stopped before it ran, with one error line that holds ``message``, no traceback."""
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("python -m inception_fast: error: "), err
    assert message in errors[0], err
    assert "Traceback" not in err and out == "", (out, err)


@pytest.mark.parametrize("argv, message", BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_bad_values_get_one_clear_line(tmp_path, capsys, monkeypatch, argv, message):
    import inception_fast.__main__ as job

    def run(args, config):  # a value taken for good would start the whole job: fail at once instead
        raise AssertionError(f"{argv} was taken for a good value")

    monkeypatch.setattr(job, "_run", run)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    with pytest.raises(SystemExit) as exc:
        main(["--device", "cpu", "--no-progress", *argv])
    assert exc.value.code == 2
    _one_error_line(capsys, message.replace("{tmp}", str(tmp_path)))


def test_a_refused_run_leaves_no_json_file_behind(tmp_path, capsys):
    """--json is tried up front (cli.check_writable opens it); a run refused after that try (a batch
    beyond any memory) leaves no file where there was none, and a file that was there as it was."""
    path = tmp_path / "r.json"
    huge = ["--batch-sizes", "1000000000000000000", "--json", str(path)]
    message = "--batch-sizes 1000000000000000000 at --image-size 224: a batch beyond any machine's memory"
    with pytest.raises(SystemExit) as exc:
        main(["--device", "cpu", "--backend", "torch", "--no-progress", *huge])
    assert exc.value.code == 2
    _one_error_line(capsys, message)
    assert list(tmp_path.iterdir()) == []
    path.write_text("an earlier run's results")
    with pytest.raises(SystemExit) as exc:
        main(["--device", "cpu", "--backend", "torch", "--no-progress", *huge])
    assert exc.value.code == 2
    _one_error_line(capsys, message)
    assert path.read_text() == "an earlier run's results"


def test_backend_names_may_have_spaces_around_them(capsys):
    """--backend " torch ,  torch" is the backend torch (spaces around a name are dropped, as a shell
    user writes "torch, onednn"), run once: a name given twice is one row."""
    assert main([*TINY, "--backend", " torch ,  torch"]) == 0
    out, err = capsys.readouterr()
    assert out.count("parity [torch]") == 1 and "fused[torch]" in out, (out, err)
    assert "error" not in err, err


def test_unavailable_backend_names_the_available_ones(capsys, monkeypatch):
    from inception_fast import backends

    monkeypatch.setitem(backends._REGISTRY, "fake", backends.Backend("fake", lambda device: "it exists only here"))
    monkeypatch.setattr(backends, "_PLUGINS", (*backends._PLUGINS, "fake"))
    with pytest.raises(SystemExit) as exc:
        main([*TINY, "--backend", "torch,fake"])
    assert exc.value.code == 2
    avail = ", ".join(["auto", *available_backends("cpu")])
    _one_error_line(capsys, f"--backend 'fake' is unavailable on cpu: it exists only here; available: {avail}")


def test_a_backend_that_cannot_compute_the_dtype_is_refused_or_skipped(capsys, monkeypatch):
    """On a CPU without oneDNN's bf16 convolutions (as this test makes every CPU look): --backend
    onednn with --dtype bfloat16 is one clear line naming the CPU feature; --backend all runs the
    other backends and says which one it skipped and why."""
    from inception_fast.backends import onednn_backend

    if "onednn" not in available_backends("cpu"):
        pytest.skip("the onednn backend does not run here")
    monkeypatch.setattr(onednn_backend, "_BF16", False)
    with pytest.raises(SystemExit) as exc:
        main([*TINY, "--backend", "torch,onednn", "--dtype", "bfloat16"])
    assert exc.value.code == 2
    _one_error_line(capsys, "--backend 'onednn' cannot run --dtype bfloat16 on cpu: it computes bfloat16 only on CPUs")
    assert main([*TINY, "--backend", "all", "--dtype", "bfloat16"]) == 0
    out, err = capsys.readouterr()
    assert "note: backend onednn skipped: it computes bfloat16 only on CPUs with AVX-512" in err
    assert "parity [torch]" in out and "parity [onednn]" not in out and "fused[onednn]" not in out


def test_cuda_device_without_cuda(capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    for device in ("cuda", "cuda:1"):
        with pytest.raises(SystemExit) as exc:
            main(["--device", device, "--no-progress"])
        assert exc.value.code == 2
        _one_error_line(capsys, f"--device {device}: no CUDA device is available")


def test_a_cuda_index_past_the_devices_is_refused(monkeypatch):
    """With two CUDA devices (the CUDA calls stubbed: any machine), cuda:1 and a bare cuda given a
    default index of 1 are taken; cuda:2 and above are refused, naming the count."""
    from inception_fast.cli import UsageError, resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1", "the job") == torch.device("cuda", 1)
    assert resolve_device("cuda", "the job", default_cuda_index=1) == torch.device("cuda", 1)
    for arg, index in (("cuda:2", None), ("cuda:7", None), ("cuda", 2)):
        with pytest.raises(UsageError, match=r"only 2 CUDA device\(s\)"):
            resolve_device(arg, "the job", default_cuda_index=index)


def test_bad_value_from_the_command_line_is_one_line_without_traceback():
    run = subprocess.run(
        [sys.executable, "-m", "inception_fast", "--device", "cpu", "--image-size", "8"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.splitlines()[-1].startswith("python -m inception_fast: error: --image-size 8 is too small")


def test_environment_and_a_full_disk_are_one_line(monkeypatch, capsys):
    """A bad INCEPTION_FAST_CACHE_ENTRIES, INCEPTION_FAST_AUTO, INCEPTION_FAST_SKIP_CANDIDATES or
    INCEPTION_FAST_EXTRA_CANDIDATES is refused before anything runs (each would be met in the first
    forward), and a --json that cannot be written at the end (a full disk: /dev/full) is one line
    with exit code 1."""
    for variable, value, message in (
        ("INCEPTION_FAST_CACHE_ENTRIES", "0", "INCEPTION_FAST_CACHE_ENTRIES must be a positive integer, got '0'"),
        ("INCEPTION_FAST_AUTO", "off", "INCEPTION_FAST_AUTO='off': unknown; the one value is 'static'"),
        ("INCEPTION_FAST_SKIP_CANDIDATES", "cpu_pool:cp", "INCEPTION_FAST_SKIP_CANDIDATES='cpu_pool:cp': choice 'cpu_"),
        ("INCEPTION_FAST_SKIP_CANDIDATES", "cpu_pool:aten", "'aten' is the trusted computation of cpu_pool, which"),
        ("INCEPTION_FAST_EXTRA_CANDIDATES", "bogus", "INCEPTION_FAST_EXTRA_CANDIDATES='bogus': unknown form(s) bogus"),
    ):
        monkeypatch.setenv(variable, value)
        with pytest.raises(SystemExit) as exc:
            main(TINY)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err
        monkeypatch.delenv(variable)
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full to stand in for a full disk")
    with pytest.raises(SystemExit) as exc:
        main([*TINY, "--backend", "torch", "--json", "/dev/full"])
    assert exc.value.code == 1
    assert capsys.readouterr().err.strip() == "error: /dev/full: No space left on device"


@pytest.mark.parametrize("command", ["main", "train"])
@pytest.mark.parametrize(
    "raised,code,message",
    [
        (KeyboardInterrupt(), 130, "interrupted"),  # Ctrl-C
        (BrokenPipeError(32, "Broken pipe"), 1, ""),  # | head: the reader left
        (OSError(28, "No space left on device"), 1, "error: writing standard output: No space left on device"),
    ],
    ids=["ctrl-c", "closed-pipe", "full-stdout"],
)
def test_an_interrupted_or_unwritable_run_ends_without_traceback(monkeypatch, capsys, command, raised, code, message):
    """As ``python -m inception_fast`` runs them (cli.run_command): Ctrl-C, a closed pipe and a
    full standard output end either job with an exit code and at most one line, whatever it was
    doing.  A closed pipe or a full disk that is not standard output's (its flush works) is the
    job's own error, raised; main() called from Python raises them all."""
    import inception_fast.__main__ as main_job
    import inception_fast.train as train_job
    from inception_fast import cli

    def run(*args):
        raise raised

    monkeypatch.setattr(main_job if command == "main" else train_job, "_run", run)
    argv = TINY if command == "main" else ["train", "--epochs", "1", "--no-progress"]
    with pytest.raises(type(raised)):
        main(argv)
    if not isinstance(raised, KeyboardInterrupt):
        with pytest.raises(type(raised)):  # not raised by a write to standard output: the job's own
            cli.run_command(lambda: main(argv))

        def run(*args):  # raised by a print
            sys.stdout.failed = True  # (what _WatchedStream records when its stream's write fails)
            raise raised

        monkeypatch.setattr(main_job if command == "main" else train_job, "_run", run)
    capsys.readouterr()
    assert cli.run_command(lambda: main(argv)) == code
    assert capsys.readouterr().err.strip() == message


def _run_command_in_a_process(body: str, **kwargs) -> subprocess.CompletedProcess:
    code = f"import sys\nfrom inception_fast.cli import run_command\n{body}\nsys.exit(run_command(body))\n"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # (block-buffered, as a user's)
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, text=True, timeout=120, **kwargs)


def test_ctrl_c_keeps_what_was_printed(tmp_path):
    body = "def body():\n    print('a row')\n    raise KeyboardInterrupt"
    with open(tmp_path / "out.txt", "w") as out:
        run = _run_command_in_a_process(body, stdout=out, stderr=subprocess.PIPE)
    assert run.returncode == 130 and run.stderr.strip() == "interrupted"
    assert (tmp_path / "out.txt").read_text() == "a row\n"


def test_standard_output_on_a_full_disk_is_one_line():
    if not os.path.exists("/dev/full"):
        pytest.fail("no /dev/full on this Linux machine")
    with open("/dev/full", "w") as full:
        run = subprocess.run(
            [sys.executable, "-m", "inception_fast", *TINY, "--backend", "torch"],
            cwd=REPO,
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
        big = _run_command_in_a_process(
            "def body():\n    print('x' * 100000)\n    return 0", stdout=full, stderr=subprocess.PIPE
        )
        # a line that stays in the buffer: the write works, the flush at the end fails
        small = _run_command_in_a_process(
            "def body():\n    print('a row')\n    return 0", stdout=full, stderr=subprocess.PIPE
        )
    for done in (run, big, small):
        assert done.returncode == 1 and done.stderr.strip() == "error: writing standard output: No space left on device"


def test_cpu_rows_name_what_runs():
    """On a CPU without TRITON_INTERPRET (a user's), 'all' times the backends that run there,
    "cpp" where the extension is built, and never prints a fused[cuda] row."""
    code = (
        "import sys, inception_fast\n"
        "from inception_fast.__main__ import main\n"
        "print('available:', ','.join(inception_fast.available_backends('cpu')))\n"
        f"sys.exit(main({TINY + ['--backend', 'all']!r}))\n"
    )
    run = run_python("-c", code)
    avail = run.stdout.splitlines()[0].removeprefix("available: ").split(",")
    assert "torch" in avail and "cuda" not in avail and "triton" not in avail, avail
    assert "fused[cuda]" not in run.stdout and "parity [cuda]" not in run.stdout
    for backend in avail:
        assert f"fused[{backend}]" in run.stdout and f"parity [{backend}]" in run.stdout, run.stdout


def test_deprecated_cuda_backend_on_cpu_runs_cpp(capsys):
    if "cpp" not in available_backends("cpu"):
        pytest.skip("the compiled extension is not built")
    assert main([*TINY, "--backend", "cuda"]) == 0
    out, err = capsys.readouterr()
    assert "fused[cpp]" in out and "fused[cuda]" not in out
    assert "warning: --backend cuda on cpu is a deprecated name of cpp, kept until the next release" in err


def test_every_option_has_help_and_says_its_default_once():
    from inception_fast.__main__ import build_parser as main_parser
    from inception_fast.train import build_parser as train_parser

    for parser in (main_parser(), train_parser()):
        text = parser.format_help()
        assert "(default: None)" not in text and "(default: False)" not in text
        formatter = parser._get_formatter()
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{action.option_strings[0]} has no help text"
                assert formatter._expand_help(action).count("default") <= 1, action.option_strings


def test_help_formatter_names_a_default_once_and_no_default_that_is_no_value():
    import argparse

    from inception_fast.cli import HelpFormatter

    parser = argparse.ArgumentParser(prog="job", formatter_class=HelpFormatter)
    parser.add_argument("--size", type=int, default=224, help="the side")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default: 5 on CPU)")
    parser.add_argument("--name", default=None, help="a name")
    parser.add_argument("--quiet", action="store_true", help="say less")
    parser.add_argument("path", nargs="?", default="out.json", help="where")
    formatter = parser._get_formatter()
    helps = {a.dest: formatter._expand_help(a) for a in parser._actions if a.dest != "help"}
    assert helps == {
        "size": "the side (default: 224)",
        "rounds": "rounds (default: 5 on CPU)",
        "name": "a name",
        "quiet": "say less",
        "path": "where",
    }


@pytest.mark.parametrize(
    "exc, expected",
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
        (MemoryError(), True),
        (
            RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes. Error code 12"),
            True,
        ),
        (RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 8 bytes."), True),
        (RuntimeError("Storage size calculation overflowed with sizes=[9223372036854775807, 2]"), True),
        (RuntimeError("a bug in the run"), False),
        (ValueError("can't allocate memory"), False),
    ],
    ids=["cuda", "python", "posix_memalign", "malloc", "overflow", "other_runtime_error", "not_a_runtime_error"],
)
def test_is_allocation_failure_knows_each_way_memory_runs_out(exc, expected):
    from inception_fast.cli import is_allocation_failure

    assert is_allocation_failure(exc) is expected


def _stub_timer(monkeypatch, sample):
    """Replaces time_fn (as time_interleaved calls it) by one that runs fn once and returns
    ``sample(k)`` seconds for its k-th call, so that the rows' spreads are chosen by the test."""
    import inception_fast.timing as timing

    calls = []

    def fake_time_fn(fn, *, device="cpu", batch=1, warmup=0, repeats=1, **_):
        fn()
        s = sample(len(calls))
        calls.append(s)
        return timing.Timing(s, [s], batch)

    monkeypatch.setattr(timing, "time_fn", fake_time_fn)
    return calls


# The stubbed-timer tests' options (each sets its own batches, repeats and budget).
STUBBED = ["--device", "cpu", "--image-size", "32", "--backend", "torch", "--no-progress"]


def test_main_job_says_when_too_noisy_to_rank(tmp_path, capsys, monkeypatch):
    """Rows whose interquartile ranges overlap are called too noisy to rank, each batch size on its
    own; the progress display (on stderr) ends each batch size's line with its last round's state."""
    # every row draws from the same samples: their interquartile ranges overlap
    _stub_timer(monkeypatch, lambda k: (0.010, 0.020, 0.030, 0.025)[k % 4])
    path = tmp_path / "r.json"
    shown = [a for a in STUBBED if a != "--no-progress"]
    rc = main([*shown, "--batch-sizes", "1,2", "--repeats", "6", "--time-budget", "0", "--json", str(path)])
    assert rc == 0
    printed, err = capsys.readouterr()
    lines = err.split("\n")
    assert len(lines) == 3 and lines[-1] == "", err
    for n, line in zip((1, 2), lines):
        last = line.split("\r")[-1]
        assert last.startswith(f"  batch {n:>4}: round   6,") and "2 pair(s) overlap" in last, err
    assert "too noisy to rank" in printed and "median ms" in printed and "IQR ms" in printed
    data = json.loads(path.read_text())
    rows = (("torchvision", "NCHW"), ("torchvision", "channels_last"), ("fused[torch]", "channels_last"))
    got = {(r["model"], r["layout"], r["batch"]) for r in data["results"]}
    assert got == {(*row, n) for row in rows for n in (1, 2)}
    for r in data["results"]:
        assert r["samples"] == 6
        assert r["min_ms"] <= r["q1_ms"] <= r["ms"] <= r["q3_ms"] <= r["max_ms"]
        assert f"{r['q1_ms']:.2f}–{r['q3_ms']:.2f}" in printed, "the table's IQR column"
    assert [line.split(":")[0] for line in data["rankings"]] == ["batch 1", "batch 2"]
    for line in data["rankings"]:  # each fused row against both torchvision layouts
        assert "too noisy" in line and "fused[torch] ~ torchvision NCHW" in line
        assert "fused[torch] ~ torchvision channels_last" in line


def test_main_job_ranks_separated_rows_against_both_torchvision_layouts(tmp_path, capsys, monkeypatch):
    """Rows that separate are ranked after --repeats rounds; the table's median, img/s and speed-up
    columns (over torchvision's best layout, then over its NCHW) are the JSON's figures."""
    # rows are called in order (torchvision NCHW, torchvision channels_last, fused), warm-up included
    calls = _stub_timer(monkeypatch, lambda k: (0.030, 0.020, 0.010)[k % 3] * (1 + 0.01 * (k // 3 % 3)))
    path = tmp_path / "r.json"
    # a large budget: separated rows stop at the minimum rounds anyway
    rc = main([*STUBBED, "--batch-sizes", "2", "--repeats", "5", "--time-budget", "600", "--json", str(path)])
    assert rc == 0
    assert len(calls) == 3 * (1 + 5)
    printed, err = capsys.readouterr()
    assert "the ranking holds" in printed and "too noisy" not in printed
    fused = next(r for r in json.loads(path.read_text())["results"] if r["model"] == "fused[torch]")
    assert fused["speedup"] == pytest.approx(2.0) and fused["speedup_vs_nchw"] == pytest.approx(3.0)
    assert fused["images_per_s"] == pytest.approx(fused["batch"] * 1e3 / fused["ms"])
    lines = printed.splitlines()
    head = next(line for line in lines if line.startswith("model"))
    assert head.split()[-7:] == ["img/s", "x", "best", "torchvision", "x", "torchvision", "NCHW"]
    row = next(line.split() for line in lines if line.startswith("fused[torch]"))
    assert row[3] == f"{fused['ms']:.2f}", "the median ms column"
    want = [f"{fused['images_per_s']:.1f}", f"{fused['speedup']:.2f}x", f"{fused['speedup_vs_nchw']:.2f}x"]
    assert row[5:] == want, "the img/s and speed-up columns"
    assert "round" not in err, "--no-progress shows no progress"


def test_main_job_adds_rounds_until_the_budget_only_while_a_fused_row_overlaps(tmp_path, capsys, monkeypatch):
    """With --time-budget, rounds go on past --repeats while the fused row's interquartile range
    overlaps a torchvision row's, until the rounds have spent the budget (on a clock that only the
    timed calls move); torchvision's two rows overlapping each other add no rounds."""
    import types

    import inception_fast.timing as timing

    now = [0.0]
    monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))

    def run(sample):
        def timed(k):  # each row's warm-up call, then rounds of its 3 rows
            s = sample(k)
            now[0] += s
            return s

        calls = _stub_timer(monkeypatch, timed)
        path = tmp_path / "r.json"
        argv = [*STUBBED, "--batch-sizes", "1", "--repeats", "5", "--time-budget", "1", "--json", str(path)]
        assert main(argv) == 0
        capsys.readouterr()
        rounds = {r["samples"] for r in json.loads(path.read_text())["results"]}
        assert rounds == {(len(calls) - 3) // 3} and len(calls) % 3 == 0
        return rounds.pop(), calls[3:]

    rounds, timed = run(lambda k: (0.010, 0.020, 0.030, 0.025)[k % 4])  # every row overlaps every other
    assert rounds > 5 and sum(timed[:-3]) < 1.0 <= sum(timed), "rounds until the budget is spent"
    # torchvision NCHW and channels_last overlap each other; the fused row (third) is far faster
    rounds, _ = run(lambda k: 0.001 if k % 3 == 2 else (0.020, 0.030, 0.025, 0.022)[k // 3 % 4])
    assert rounds == 5


def test_each_timed_row_runs_its_own_model_in_its_layout(monkeypatch, capsys):
    """Each timed row calls the model it is labelled with on input in its layout: torchvision as a
    user gets it (NCHW input and weights), torchvision at channels_last (input and weights), and the
    fused model on --memory-format's layout (channels_last by default)."""
    import torchvision

    import inception_fast.__main__ as job
    import inception_fast.timing as timing

    seen, timed = [], []

    def layout(t):
        return "NCHW" if t.is_contiguous() else "channels_last"

    for cls in (torchvision.models.GoogLeNet, job.FusedGoogLeNet):

        def forward(self, x, real=cls.forward, cls=cls):
            weights = (
                [layout(p) for p in self.parameters() if p.dim() == 4][:1] if cls is not job.FusedGoogLeNet else []
            )
            seen.append((cls.__name__, layout(x), *weights))
            return real(self, x)

        monkeypatch.setattr(cls, "forward", forward)

    def fake_time_fn(fn, *, batch=1, **_):
        seen.clear()
        fn()
        timed.append(list(seen))
        return timing.Timing(0.01, [0.01], batch)

    monkeypatch.setattr(timing, "time_fn", fake_time_fn)
    assert main([*STUBBED, "--batch-sizes", "2", "--repeats", "1", "--time-budget", "0"]) == 0
    capsys.readouterr()
    rows = [
        [("GoogLeNet", "NCHW", "NCHW")],
        [("GoogLeNet", "channels_last", "channels_last")],
        [("FusedGoogLeNet", "channels_last")],
    ]
    assert timed == rows * 2  # warm-up, then one round


def test_main_job_calls_too_few_rounds_too_few(capsys, monkeypatch):
    _stub_timer(monkeypatch, lambda k: (0.030, 0.020, 0.010)[k % 3])
    assert main([*STUBBED, "--batch-sizes", "1", "--repeats", "2"]) == 0
    assert "too few to rank" in capsys.readouterr().out


def test_time_interleaved_samples_until_spreads_separate_or_the_cap(monkeypatch):
    from inception_fast.timing import overlapping, time_interleaved

    # Equal samples: the ranges touch, so they overlap.  2 rows x (1 warm-up + 12 rounds) calls; a
    # loop that ignored the cap fails here instead of running forever.
    _stub_timer(monkeypatch, lambda k: 0.0 if k < 40 else pytest.fail("time_interleaved ran past max_repeats"))
    same = iter([1.0, 2.0, 3.0] * 100)
    other = iter([1.5, 2.5, 3.5] * 100)
    t = time_interleaved({"a": lambda: None, "b": lambda: None}, warmup=0, min_repeats=3, budget_s=1e9, max_repeats=12)
    assert len(t["a"].samples_s) == 12  # never separated: ran to the cap

    monkeypatch.undo()
    import inception_fast.timing as timing

    def fake(fn, *, batch=1, **_):
        s = fn()
        return timing.Timing(s, [s], batch)

    monkeypatch.setattr(timing, "time_fn", fake)
    t = time_interleaved({"a": lambda: next(same), "b": lambda: next(other)}, warmup=0, min_repeats=4, budget_s=0.0)
    assert len(t["a"].samples_s) == 4 and overlapping(t) == [("a", "b")]
    fast = iter([1.0, 1.1, 0.9] * 100)
    slow = iter([2.0, 2.1, 1.9] * 100)
    t = time_interleaved({"a": lambda: next(fast), "b": lambda: next(slow)}, min_repeats=4, budget_s=1e9)
    assert len(t["a"].samples_s) == 4 and overlapping(t) == []
    q1, q3 = t["b"].quartiles_s
    assert t["b"].min_s <= q1 <= t["b"].median_s <= q3 <= t["b"].max_s


def test_quartiles_of_a_few_samples_lie_within_their_range():
    """Two or three samples: the interquartile range (inclusive method) lies within min..max, so two
    rows whose samples do not interleave are not called overlapping (too noisy to rank)."""
    from inception_fast.timing import Timing, overlapping

    two, three = Timing(1.5, [1.0, 2.0]), Timing(2.0, [3.0, 1.0, 2.0])
    assert two.quartiles_s == pytest.approx((1.25, 1.75))
    assert three.quartiles_s == pytest.approx((1.5, 2.5))
    for t in (two, three):
        q1, q3 = t.quartiles_s
        assert t.min_s <= q1 <= t.median_s <= q3 <= t.max_s
    assert Timing(1.0, [1.0]).quartiles_s == (1.0, 1.0)
    assert overlapping({"a": two, "b": Timing(2.55, [2.1, 3.0])}) == []


def _fake_clock(monkeypatch, durations):
    """time_fn's perf_counter replaced by a clock that only a call of the returned function moves:
    each call takes the next of ``durations`` seconds; returns (that function, the calls made)."""
    import types

    import inception_fast.timing as timing

    now, calls = [0.0], []

    def fn():
        now[0] += durations[len(calls) % len(durations)]
        calls.append(now[0])

    monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    return fn, calls


def test_time_fn_reports_the_median_which_one_outlier_does_not_move(monkeypatch):
    """time_fn on CPU: every call is one sample (no warm-up here), and the reported time is their
    median: one sample 100 times slower (a descheduled call) leaves it at the typical call's time."""
    from inception_fast.timing import time_fn

    fn, calls = _fake_clock(monkeypatch, [1.0, 1.0, 100.0, 1.0, 1.0])
    t = time_fn(fn, warmup=0, repeats=5, batch=4)
    assert len(calls) == 5 and t.samples_s == [1.0, 1.0, 100.0, 1.0, 1.0]
    assert t.median_s == 1.0 and t.images_per_s == 4.0 and t.max_s == 100.0


def test_time_fn_with_a_minimum_time_stops_at_ten_times_the_repeats_once_half_was_spent(monkeypatch):
    """min_time_s keeps sampling past ``repeats``; once 10 x repeats samples were taken and half of
    min_time_s was spent, it stops (a slow call does not run up to twice as long as asked)."""
    from inception_fast.timing import time_fn

    fn, calls = _fake_clock(monkeypatch, [0.5])
    t = time_fn(fn, warmup=0, repeats=1, min_time_s=8.0)
    assert len(t.samples_s) == len(calls) == 10 and sum(t.samples_s) == 5.0  # not 16 samples, 8 s
    fn, calls = _fake_clock(monkeypatch, [0.5])
    t = time_fn(fn, warmup=0, repeats=1, min_time_s=12.0)  # at 10 samples not half spent: on to 6 s
    assert len(t.samples_s) == len(calls) == 12


def test_time_interleaved_stops_at_the_minimum_rounds_once_rows_separate_whatever_the_budget(monkeypatch):
    """Rows whose spreads separate from the first rounds on stop at min_repeats even with a budget
    that is never spent (the budget only bounds the rounds of rows that still overlap)."""
    import inception_fast.timing as timing
    from inception_fast.timing import overlapping, time_interleaved

    _stub_timer(monkeypatch, lambda k: (0.010, 0.030)[k % 2] * (1 + 0.01 * (k // 2 % 3)))
    rounds = []
    t = time_interleaved(
        {"fast": lambda: None, "slow": lambda: None},
        warmup=0,
        min_repeats=3,
        budget_s=1e9,
        max_repeats=20,  # bounded: a loop that ignored the separation stops here
        on_round=lambda n, spent, noisy: rounds.append((n, noisy)),
    )
    assert [n for n, _ in rounds] == [1, 2, 3] and rounds[-1][1] == []
    assert len(t["fast"].samples_s) == 3 and overlapping(t) == []
    assert t["fast"].median_s < t["slow"].median_s and isinstance(t["slow"], timing.Timing)


def test_time_interleaved_judges_only_the_pairs_asked_for_and_reports_medians(monkeypatch):
    """With ``pairs``, only those pairs' spreads decide when to stop (rows b and c, never compared,
    overlap throughout); each row's time is the median of its rounds (one slow round of a, 50x its
    others, does not move it)."""
    from inception_fast.timing import time_interleaved

    def sample(k):  # each row's warm-up call first (a, b, c), then rounds of a, b, c
        if k < 3:
            return 1.0
        rnd, row = divmod(k - 3, 3)
        if row == 0:
            return 50.0 if rnd == 4 else 1.0
        return 3.0 * (1 + 0.01 * (rnd % 3))

    _stub_timer(monkeypatch, sample)
    rows = {"a": lambda: None, "b": lambda: None, "c": lambda: None}
    t = time_interleaved(rows, warmup=0, min_repeats=5, budget_s=1e9, max_repeats=20, pairs=[("a", "b")])
    assert len(t["a"].samples_s) == 5 and t["a"].median_s == 1.0 and max(t["a"].samples_s) == 50.0


def test_time_fn_warms_up_reports_each_sample_and_runs_under_inference_mode(monkeypatch):
    """``warmup`` calls are made and not timed; ``on_sample(i, repeats)`` follows every sample from
    1; the calls run under inference mode (no autograd records in the timed work); graph timing off
    CUDA is refused."""
    from inception_fast.timing import time_fn

    fn, calls = _fake_clock(monkeypatch, [1.0])
    modes, progress = [], []

    def call():
        modes.append(torch.is_inference_mode_enabled())
        fn()

    t = time_fn(call, warmup=2, repeats=3, on_sample=lambda i, n: progress.append((i, n)))
    assert len(calls) == 5 and len(t.samples_s) == 3
    assert progress == [(1, 3), (2, 3), (3, 3)] and all(modes)
    with pytest.raises(ValueError, match="cuda_graph timing needs a CUDA device"):
        time_fn(call, cuda_graph=True)


def test_repeats_above_a_thousand_are_run(monkeypatch, capsys):
    """--repeats N runs N rounds, however many: the round cap follows it."""
    import inception_fast.__main__ as job

    seen = {}
    real = job.time_interleaved

    def spy(fns, **kw):
        seen.update(kw)
        return real(fns, **{**kw, "min_repeats": 1, "max_repeats": 1, "budget_s": 0.0})

    monkeypatch.setattr(job, "time_interleaved", spy)
    assert main([*STUBBED, "--batch-sizes", "1", "--repeats", "1500"]) == 0
    assert seen["min_repeats"] == 1500 and seen["max_repeats"] >= 1500


def test_running_out_of_memory_is_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        # 7.7e14 bytes: past any address space, under the size refused before anything runs
        huge = ["--image-size", "8000000", "--batch-sizes", "1"]
        main(["--device", "cpu", *huge, "--backend", "torch", "--no-progress"])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "error: out of memory on cpu at batch size(s) 1, image size 8000000x8000000" in err
    assert "can't allocate memory" in err, "the allocator's own words, in the line"
    assert "Traceback" not in err


def test_a_runtime_error_that_is_not_memory_is_raised_as_it_is(monkeypatch):
    """Only running out of memory becomes main's one line: any other RuntimeError from the run (a
    bug) is raised with its traceback, never reported as out of memory."""
    from inception_fast import __main__ as job

    def broken(args, config):
        raise RuntimeError("a bug in the run")

    monkeypatch.setattr(job, "_run", broken)
    with pytest.raises(RuntimeError, match="a bug in the run"):
        job.main(TINY)


def test_defaults_that_depend_on_other_options():
    """--image-size defaults to 96 for d2l, 224 otherwise; --repeats without --time-budget runs
    exactly that many rounds (no budget for more), and without it 7 rounds and a 20 s budget on CPU;
    --time-budget 0 alone is no budget and the default rounds; float32 and batch sizes 1,8 on CPU;
    " all " is every backend, as "all" is; a batch size given twice is timed once."""
    from inception_fast import __main__ as job

    def config(*argv):
        return job._config(job.build_parser().parse_args(["--device", "cpu", "--backend", "torch", *argv]))

    assert (config("--variant", "d2l").size, config().size, config("--variant", "paper").size) == (96, 224, 224)
    assert (config("--repeats", "3").min_rounds, config("--repeats", "3").budget) == (3, 0.0)
    assert (config().min_rounds, config().budget) == (7, 20.0)
    assert config("--repeats", "3", "--time-budget", "5").budget == 5.0
    assert (config("--time-budget", "0").min_rounds, config("--time-budget", "0").budget) == (7, 0.0)
    assert (config().dtype, config().batches) == (torch.float32, [1, 8])
    assert config("--backend", " all ").backends == config("--backend", "all").backends == available_backends("cpu")
    assert config("--batch-sizes", "8,1,8").batches == [8, 1]


def test_defaults_and_dtype_checks_on_a_cuda_device(monkeypatch):
    """On a CUDA device (the CUDA calls stubbed: any machine): bfloat16, batch sizes 1,64,256, 30
    rounds and a 10 s budget by default; --dtype float16 is taken; a card that computes bfloat16 only
    in emulation refuses bfloat16 (the default included) in one line naming the card."""
    from inception_fast import __main__ as job
    from inception_fast.cli import UsageError

    monkeypatch.setattr(job, "resolve_device", lambda arg, name: torch.device("cuda", 0))
    monkeypatch.setattr(job, "check_backend", lambda name, device: name)
    monkeypatch.setattr(job, "check_backend_dtype", lambda name, device, dtype: None)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)

    def config(*argv):
        return job._config(job.build_parser().parse_args(["--device", "cuda", "--backend", "triton", *argv]))

    got = config()
    assert (got.device.type, got.dtype, got.batches) == ("cuda", torch.bfloat16, [1, 64, 256])
    assert (got.min_rounds, got.budget) == (30, 10.0)
    assert config("--dtype", "float16").dtype == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    for argv in ([], ["--dtype", "bfloat16"]):
        with pytest.raises(UsageError, match="--dtype bfloat16: Tesla V100 has no bfloat16 arithmetic"):
            config(*argv)
    assert config("--dtype", "float32").dtype == torch.float32


def test_a_lost_gpu_context_in_the_precompile_pass_is_not_swallowed(monkeypatch):
    """A candidate run in the job's compile-only pass (cuDNN's, the extension's) that loses the GPU's
    context reaches main's one error line, rather than the next forward failing with CUDA's error; a
    forward that cannot run compile-only (RuntimeError, ValueError) compiles itself; no pass runs on
    the CPU or without workers."""
    from inception_fast import __main__ as job
    from inception_fast.choices import CandidateFault

    def faulted(*args):
        raise CandidateFault("inception_fast: candidate 'auto:cuda' failed ...", "auto", "cuda")

    monkeypatch.setattr(job, "workers_on", lambda: True)
    monkeypatch.setattr(job, "precompile", faulted)
    with pytest.raises(CandidateFault):
        job._tuned(None, None, True)
    assert job._tuned(None, None, False) is None  # on the CPU: no precompile
    monkeypatch.setattr(job, "workers_on", lambda: False)
    assert job._tuned(None, None, True) is None  # no workers: no precompile
    monkeypatch.setattr(job, "workers_on", lambda: True)

    for error in (RuntimeError("precompile: the compile-only pass of the forward failed"), ValueError("no shape")):

        def not_compile_only(*args, error=error):
            raise error

        monkeypatch.setattr(job, "precompile", not_compile_only)
        assert job._tuned(None, None, True) is None  # a forward that cannot run compile-only: it compiles itself


def test_a_lost_gpu_context_is_one_line(capsys, monkeypatch):
    """A measured candidate that faulted (choices.CandidateFault) ends the job with its own message,
    which names the candidate and how to skip it, not a traceback."""
    from inception_fast import __main__ as job
    from inception_fast.choices import CandidateFault

    def faulted(*args):
        raise CandidateFault(
            "inception_fast: candidate 'stem:triton_rows' failed ... INCEPTION_FAST_SKIP_CANDIDATES=x ;"
        )

    monkeypatch.setattr(job, "_run", faulted)
    with pytest.raises(SystemExit) as exc:
        main(["--device", "cpu", "--batch-sizes", "1", "--no-progress"])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "error: inception_fast: candidate 'stem:triton_rows' failed" in err and "Traceback" not in err
