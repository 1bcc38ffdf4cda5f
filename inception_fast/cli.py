"""What the command-line jobs (``__main__.py``, ``train.py``, the scripts in benchmarks/) share: the
help formatter; the checks of the values they take (device, backend, image size, seconds, an
output file, this package's environment variables: ``check_environment``), each failing with a
``UsageError`` that the job reports as one argparse-style line (``parser.error``, exit code 2),
and the argparse types ``positive_int`` / ``positive_ints`` / ``thread_count``; ``write_json``,
which writes a job's results; ``run_command``, which runs a job's body and turns Ctrl-C, a closed
or full standard output and OS errors into one line and an exit code (``naming_file``,
``os_error_line``); ``is_allocation_failure`` / ``out_of_memory``, the one-line report of running
out of memory."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Optional

import torch

from . import backends
from .reference import GoogLeNet

__all__ = [
    "HelpFormatter",
    "UsageError",
    "resolve_device",
    "check_backend",
    "check_backend_dtype",
    "check_image_size",
    "check_input_size",
    "check_seconds",
    "check_writable",
    "positive_int",
    "positive_ints",
    "is_allocation_failure",
    "out_of_memory",
]


class HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to an option's help, once: not where the help already says its
    default, and not for a default that is no value (None, a flag's False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        no_value = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if "default" in text or no_value or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)".lstrip()


class UsageError(Exception):
    """A bad option value, directory or file: reported as one argparse-style line, exit code 2."""


def resolve_device(
    arg: Optional[str], job: str, default_cuda_index: Optional[int] = None, option: str = "--device"
) -> torch.device:
    """``--device``'s value (None: cuda if available, else cpu) as a device this machine has.

    ``job`` names the job in the error for a device type other than cpu and cuda;
    ``default_cuda_index`` is the index a bare "cuda" gets (None: the current device); ``option``
    names where the value came from (an option, or an environment variable) in the errors."""
    if arg is not None and not arg.strip():
        raise UsageError(f"{option}: empty; give cpu, cuda or cuda:N")
    try:
        device = torch.device(arg or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        raise UsageError(f"{option} {arg}: not a device name (cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"{option} {arg}: no CUDA device is available")
        if device.index is None and default_cuda_index is not None:
            device = torch.device("cuda", default_cuda_index)
        if (device.index or 0) >= torch.cuda.device_count():
            raise UsageError(f"{option} {device}: only {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise UsageError(f"{option} {arg}: {job} runs on cpu or cuda")
    elif device.index not in (None, 0):
        raise UsageError(f"{option} {arg}: there is one cpu device, 'cpu'")
    return device


def check_backend(name: str, device: torch.device) -> str:
    """``--backend``'s value checked against ``device``: the backend to run ("auto", or a name
    that runs there).  An old name (``backends.RENAMED``) becomes its new one, with one "warning:"
    line on stderr."""
    if name == "auto":
        return name
    new = backends.RENAMED.get((name, device.type), name)
    if new != name:
        print(
            f"warning: --backend {name} on {device.type} is a deprecated name of {new}, kept until the next "
            f"release; use --backend {new}",
            file=sys.stderr,
        )
    why = backends.availability(new, device)
    if why is not None:
        avail = ", ".join(["auto", *backends.available_backends(device)])
        raise UsageError(f"--backend {new!r} is unavailable on {device}: {why}; available: {avail}")
    return new


def check_backend_dtype(name: str, device: torch.device, dtype: torch.dtype) -> None:
    """Fails where backend ``name`` (checked by ``check_backend``) cannot compute in ``dtype`` on
    ``device`` ("auto" always can: it runs what can)."""
    why = None if name == "auto" else backends.dtype_reason(name, device, dtype)
    if why is not None:
        raise UsageError(f"--backend {name!r} cannot run --dtype {str(dtype)[6:]} on {device}: it {why}")


def check_environment() -> None:
    """UsageError for a bad value of this package's environment variables that the jobs would
    otherwise meet only in their first forward."""
    from .caches import cache_capacity
    from .choices import skip_entries, static_mode
    from .stages import offers

    try:
        cache_capacity()
        static_mode()
        skip_entries()
        offers("fold")
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def run_command(body) -> int:
    """``body()``, a command's run as ``python -m inception_fast`` calls it (a process about to
    exit), and its exit code: Ctrl-C ends it with "interrupted" and exit code 130, what was
    printed kept; standard output closed by its reader (``| head``) quietly with 1, standard
    output that cannot be written (a full disk) with one error line and 1: no traceback (seen
    through ``_WatchedStream``); and an OSError naming a file the job read or wrote (a full disk,
    no permission: ``write_json``) with one line naming it and 1.  Any other error is raised."""
    stdout = sys.stdout = _WatchedStream(sys.stdout)
    try:
        code = body()
        stdout.flush()  # here, not in the interpreter's exit, where a failure is only printed
        return code
    except KeyboardInterrupt:
        try:
            stdout.flush()  # what was printed, before the exit
        except OSError:
            pass
        sys.stderr.write("interrupted\n")
        return 130
    except OSError as exc:
        if not stdout.failed:
            if exc.errno is None or not exc.filename:
                raise
            sys.stderr.write(os_error_line(exc))
            return 1
        if not isinstance(exc, BrokenPipeError):
            sys.stderr.write(f"error: writing standard output: {exc.strerror or exc}\n")
        return 1
    finally:
        sys.stdout = stdout.stream
        if stdout.failed:  # so that the interpreter's own flush at exit cannot fail again
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, stdout.stream.fileno())
                os.close(devnull)
            except (OSError, ValueError):  # no file descriptor
                pass


class _WatchedStream:
    """A text stream as it is, remembering whether a write or flush to it failed."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.failed = False

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except OSError:
            self.failed = True
            raise

    def flush(self) -> None:
        try:
            self.stream.flush()
        except OSError:
            self.failed = True
            raise

    def __getattr__(self, name):
        return getattr(self.stream, name)


def naming_file(exc: OSError, path) -> OSError:
    """``exc``, or where it names no file (a full disk fails in a write, whose error names none)
    the same error naming ``path``: the file the job was writing."""
    return exc if exc.filename else OSError(exc.errno, exc.strerror, str(path))


def write_json(path, data, indent: int = 1) -> None:
    """``data`` as JSON into ``path``; an OSError names the file (a full disk fails in a write,
    not the open that ``check_writable`` tried before the run)."""
    try:
        with open(path, "w") as f:
            json.dump(data, f, indent=indent)
    except OSError as exc:
        raise naming_file(exc, path) from None


def os_error_line(exc: OSError) -> str:
    """An OSError the jobs meet reading or writing a file (a full disk, no permission): one line."""
    where = f"{exc.filename}: " if exc.filename else ""
    return f"error: {where}{exc.strerror or exc}\n"


def check_image_size(size: int, variant: str, option: str = "--image-size") -> None:
    """Fails unless GoogLeNet(variant) takes square images of side ``size`` (``option``'s value)."""
    smallest = GoogLeNet(variant=variant, init_weights=False).min_input_size()
    if size < smallest:
        raise UsageError(f"{option} {size} is too small for variant {variant!r}: the smallest it takes is {smallest}")


def check_seconds(value: float, option: str, positive: bool = False) -> None:
    """Fails unless ``option``'s ``value`` is a finite number of seconds, at least 0 (``positive``:
    more than 0); NaN and infinity are refused, where a loop bounded by them would not stop."""
    if not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
        least = "more than 0" if positive else "at least 0"
        raise UsageError(f"{option} must be a number of seconds, {least}, got {value}")


def check_writable(path: str, option: str = "--json") -> None:
    """Fails now, not after the run, where ``option``'s file ``path`` cannot be written."""
    if not path.strip():
        raise UsageError(f"{option}: empty path")
    existed = os.path.exists(path)
    try:
        with open(path, "a"):
            pass
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write there ({exc.strerror})") from None
    if not existed:
        os.remove(path)


# Values per input channel past which a batch cannot be held by any machine these jobs run on
# (2**46 is 128 TiB in bfloat16; past 2**63 its size cannot even be computed): refused up front,
# where a tensor allocation would fail with an overflow traceback instead of running out of memory.
MAX_INPUT_VALUES = 2**46


def check_input_size(batch: int, size: int, what: str) -> None:
    """Fails where ``batch`` images of side ``size`` are beyond any memory (``what``: the flags)."""
    if batch * size * size > MAX_INPUT_VALUES:
        raise UsageError(
            f"{what}: a batch beyond any machine's memory ({batch * size * size:.2e} values per channel); "
            "use a smaller batch size or image size"
        )


def positive_int(text: str) -> int:
    """An argparse ``type``: a positive integer, else an argparse error naming the value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def thread_limit() -> int:
    """The most threads a job may ask torch.set_num_threads for: 4 per CPU (far more makes it crash)."""
    return 4 * (os.cpu_count() or 1)


def thread_count(text: str) -> int:
    """An argparse ``type``: a thread count, 1 to ``thread_limit()``, else an argparse error."""
    value = positive_int(text)
    if value > thread_limit():
        raise argparse.ArgumentTypeError(f"at most {thread_limit()} (4 per CPU), got {value}")
    return value


def positive_ints(text: str) -> list[int]:
    """An argparse ``type``: "1,8,64" -> [1, 8, 64], a value given twice kept once ("8,1,8" -> [8, 1]);
    anything else is an argparse error naming the value."""
    values = []
    for item in text.split(","):
        try:
            value = int(item)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {value} in {text!r}")
        values.append(value)
    return list(dict.fromkeys(values))


def is_allocation_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says memory ran out: torch.OutOfMemoryError, MemoryError, or the CPU
    allocator's RuntimeError (DefaultCPUAllocator's "can't allocate memory")."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc)
    known = ("can't allocate memory", "DefaultCPUAllocator", "Storage size calculation overflowed")
    return isinstance(exc, RuntimeError) and any(k in text for k in known)


def out_of_memory(device: torch.device, batches, size: int, exc: BaseException) -> str:
    """The one line a job prints when memory ran out: what it was running, and what to lower."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    sizes = ",".join(str(b) for b in batches) if isinstance(batches, (list, tuple)) else str(batches)
    return (
        f"out of memory on {device} at batch size(s) {sizes}, image size {size}x{size} ({first[:200]}); "
        "use a smaller batch size or image size"
    )
