"""Python in a subprocess without TRITON_INTERPRET, for the tests that need the Triton kernels
compiled (sm_90 statistics, cold-start counts, the precompile's workers, a user's CPU run) while
this process may run the interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_python(*args, env=None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python *args`` from the repository root without TRITON_INTERPRET (``env`` added to this
    process's environment); asserts it exited 0, with its stderr's tail as the message."""
    full = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    full.update(env or {})
    run = subprocess.run(
        [sys.executable, *map(str, args)], cwd=REPO_ROOT, env=full, capture_output=True, text=True, timeout=timeout
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run
