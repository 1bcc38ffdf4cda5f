"""Waiting for a process the code under test must have killed."""

from __future__ import annotations

import os
import time

import pytest


def assert_gone(pid: int, what: str, seconds: float = 5.0) -> None:
    """Fails with ``what`` unless process ``pid`` is gone within ``seconds`` (a kill is asynchronous)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    pytest.fail(what)
