"""Measured choices kept on disk, so that a new process does not measure again what an earlier one
on the same machine already measured.

A process's first forward on CUDA measures every candidate of every measured choice (the block
backends, the stem's forms, conv2/conv3, the pools); Triton's autotuners keep their results in
Triton's cache directory, and this store keeps the measured choices beside them: one JSON file
per *fingerprint* (the device's name and compute capability and the cudnn.benchmark setting, or
the CPU's model, its thread count and AVX-512 pool setting; the torch, CUDA, cuDNN and Triton
versions, and a hash of this package's code and compiled extension),
holding {choice name: {key: chosen candidate}}.  A choice is read back only by a process with the
same fingerprint, so a new GPU model, new libraries or an edited kernel measure afresh (a new GPU
driver alone does not: clear the store, or set INCEPTION_FAST_CHOICE_CACHE=off); and only the
candidate's name is stored: every candidate had passed its parity check
(``choices.checked_against``) in the process that measured it.

Where: ``INCEPTION_FAST_CHOICE_CACHE`` (a directory; ``off`` disables the store), by default
``inception_fast/`` inside Triton's cache directory (``TRITON_CACHE_DIR``, else
``~/.triton/cache``), so clearing Triton's cache clears it too.  Each file keeps at most
``caches.cache_capacity()`` entries per choice, the most recently written.  A file that cannot
be read (damaged, another format) is ignored with a warning and replaced by the next write; a
store that cannot be written only warns.  Processes writing at once each merge what is on disk
into their write, without a lock: an entry can be lost (and is measured again), never damaged.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import platform
import tempfile
import threading
import warnings
from typing import Optional

import torch

from .caches import cache_capacity, short_error, trim

__all__ = ["ENV_CHOICE_CACHE", "FAULTS", "store_dir", "fingerprint", "ChoiceStore", "STORE"]

ENV_CHOICE_CACHE = "INCEPTION_FAST_CHOICE_CACHE"
# The section of the candidates that left a CUDA context unusable ("choice:candidate": the error),
# beside the choices' own sections (choices.CandidateFault): a process with the same fingerprint
# does not measure them.
FAULTS = "faults"
_FORMAT = 1
_PACKAGE = pathlib.Path(__file__).resolve().parent


def store_dir() -> Optional[pathlib.Path]:
    """The store's directory, or None where it is turned off (INCEPTION_FAST_CHOICE_CACHE=off)."""
    raw = os.environ.get(ENV_CHOICE_CACHE, "").strip()
    if raw.lower() in ("off", "0", "false", "no"):
        return None
    try:
        if raw:
            return pathlib.Path(raw).expanduser()
        triton_cache = os.environ.get("TRITON_CACHE_DIR", "").strip()
        if triton_cache:
            return pathlib.Path(triton_cache).expanduser() / "inception_fast"
        home = os.environ.get("TRITON_HOME", "").strip() or pathlib.Path.home()
    except RuntimeError as exc:  # "~" with no home directory (a container with an arbitrary uid): no store
        warnings.warn(
            f"inception_fast: measured choices are not stored ({exc}); set {ENV_CHOICE_CACHE} to a directory",
            stacklevel=2,
        )
        return None
    return pathlib.Path(home) / ".triton" / "cache" / "inception_fast"


def _code_hash() -> str:
    """This package's Python sources and compiled extension: an edited kernel measures afresh."""
    digest = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*")):
        if path.suffix == ".py" or (path.suffix == ".so" and path.name.startswith("_C")):
            digest.update(str(path.relative_to(_PACKAGE)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


_FINGERPRINTS: dict = {}
_CODE: list = []


def _cpu_settings() -> dict:
    """What changes the CPU candidates' times on one machine: the intra-op threads, and whether the
    extension's AVX-512 max pool runs (csrc/cpu/max_pool.cpp reads INCEPTION_FAST_NO_AVX512 per call)."""
    off = os.environ.get("INCEPTION_FAST_NO_AVX512", "")
    return {"threads": torch.get_num_threads(), "avx512_pool": off in ("", "0")}


def _cuda_settings() -> dict:
    """What changes the CUDA candidates' times on one GPU: whether cuDNN times its algorithms per
    shape (torch.backends.cudnn.benchmark), which the cuDNN candidates run by."""
    return {"cudnn_benchmark": bool(torch.backends.cudnn.benchmark)}


def fingerprint(device: torch.device) -> dict:
    """What a stored choice is valid for on ``device`` (computed once per device per process and
    settings: on CPU the thread count and AVX-512 setting, on CUDA cudnn.benchmark)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    settings = _cpu_settings() if device.type == "cpu" else _cuda_settings()
    cache_key = (str(device), *settings.values())
    found = _FINGERPRINTS.get(cache_key)
    if found is not None:
        return found
    if not _CODE:
        _CODE.append(_code_hash())
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        hardware = f"{torch.cuda.get_device_name(device)} sm_{major}{minor}"
    else:
        hardware = _cpu_model()
    found = {
        "format": _FORMAT,
        "device": device.type,
        "hardware": hardware,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "triton": triton_version,
        "code": _CODE[0],
        **settings,
    }
    _FINGERPRINTS[cache_key] = found
    return found


def _file_for(directory: pathlib.Path, print_: dict) -> pathlib.Path:
    name = hashlib.sha256(json.dumps(print_, sort_keys=True).encode()).hexdigest()[:20]
    return directory / f"choices-{name}.json"


class ChoiceStore:
    """{choice name: {key: candidate}} per fingerprint, read once per file and process, written
    back (merged with what other processes wrote meanwhile, atomically) after each measurement."""

    def __init__(self) -> None:
        self._files: dict = {}  # path -> {choice name: {key text: candidate}}
        self._lock = threading.Lock()
        self._warned: set = set()  # the warnings given: each once a process, not once a shape

    def fault(self, candidate: str, device: torch.device) -> Optional[str]:
        """The error recorded for ``candidate`` ("choice:name") having left a CUDA context unusable
        on this fingerprint, or None."""
        return self.get(FAULTS, candidate, device)

    def record_fault(self, candidate: str, device: torch.device, why: str) -> Optional[pathlib.Path]:
        """Records that ``candidate`` ("choice:name") left the CUDA context unusable (``why``); the
        file it is written in, or None (the store is off, or could not be written: warned)."""
        return self.put(FAULTS, candidate, device, why)

    def path(self, device: torch.device) -> Optional[pathlib.Path]:
        """The file ``device``'s choices are kept in (None: the store is off)."""
        directory = store_dir()
        if directory is None:
            return None
        try:
            return _file_for(directory, fingerprint(device))
        except OSError as exc:  # the package's files unreadable for the code hash: no store
            warnings.warn(f"inception_fast: measured choices are not stored: {short_error(exc)}", stacklevel=3)
            return None

    def warn_once(self, message: str) -> None:
        """Warns ``message`` (prefixed with the package's name) once a process."""
        if message not in self._warned:
            self._warned.add(message)
            warnings.warn(f"inception_fast: {message}", stacklevel=4)

    def _read(self, path: pathlib.Path) -> dict:
        try:
            if not path.is_file():  # absent, or a directory or a FIFO (a read would wait on it)
                if path.exists():
                    self.warn_once(f"cannot read the stored choices {path}: not a regular file")
                return {}
            raw = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return {}
        except OSError as exc:
            self.warn_once(f"cannot read the stored choices {path}: {exc.strerror or short_error(exc)}")
            return {}
        try:
            data = json.loads(raw.decode("utf-8"))
            choices = data["choices"]
            if data.get("format") != _FORMAT or not isinstance(choices, dict):
                raise ValueError("not a choice file of this format")
            return {str(section): {str(k): str(v) for k, v in entries.items()} for section, entries in choices.items()}
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:  # ValueError: also bad UTF-8
            self.warn_once(
                f"ignoring the damaged stored choices {path} ({short_error(exc)}); they will be measured again"
            )
            return {}

    def get(self, section: str, key, device: torch.device) -> Optional[str]:
        """The stored candidate for ``key`` of the choice ``section``, or None."""
        path = self.path(device)
        if path is None:
            return None
        with self._lock:
            entries = self._files.get(path)
            if entries is None:
                entries = self._files[path] = self._read(path)
            return entries.get(section, {}).get(repr(key))

    def put(self, section: str, key, device: torch.device, name: str) -> Optional[pathlib.Path]:
        """Stores ``name`` for ``key``, merged into the file as it is now on disk; the file written,
        or None (the store is off, or the write failed and was warned of)."""
        path = self.path(device)
        if path is None:
            return None
        with self._lock:
            entries = self._read(path)
            for sec, known in self._files.get(path, {}).items():
                for k, v in known.items():
                    entries.setdefault(sec, {}).setdefault(k, v)
            mine = entries.setdefault(section, {})
            mine.pop(repr(key), None)
            mine[repr(key)] = name  # newest last: the trim keeps it
            trim(mine, cache_capacity())
            self._files[path] = entries
            data = {"format": _FORMAT, "fingerprint": fingerprint(device), "choices": entries}
            tmp = None
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".choices-", suffix=".tmp")
                with os.fdopen(fd, "w") as f:
                    json.dump(data, f, indent=1)  # insertion order: the oldest entries first, as trim drops them
                os.replace(tmp, path)
            except OSError as exc:
                if tmp is not None and os.path.exists(tmp):
                    os.unlink(tmp)
                # (strerror: the message without the temporary file's random name)
                self.warn_once(f"cannot store the measured choices in {path}: {exc.strerror or exc}")
                return None
        return path

    def forget(self) -> None:
        """Drops what this process read and warned of (the files stay): the next lookup reads them
        again."""
        with self._lock:
            self._files.clear()
            self._warned.clear()


STORE = ChoiceStore()
