"""The README's "Use" snippet runs as written on the machine at hand, CPU-only included, and
without the network: it is taken from README.md and run as a script in a fresh interpreter,
in an empty folder, with sockets refusing to connect and an empty torch hub cache."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Run before the snippet: any download attempt fails instead of being served from the network.
NO_NETWORK = """\
import socket


def _refuse(*args, **kwargs):
    raise OSError("the README snippet tried to reach the network")


socket.socket.connect = _refuse
socket.create_connection = _refuse
"""


def python_block_under(heading: str, markdown: str) -> str:
    """The first ```python block of the section that starts with the line ``heading``."""
    lines = markdown.splitlines(keepends=True)
    try:
        start = lines.index(heading + "\n")
    except ValueError:
        raise AssertionError(f"README.md has no {heading!r} section") from None
    level = heading.split(" ")[0] + " "
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith(level)), len(lines))
    found = re.search(r"^```python\n(.*?)^```$", "".join(lines[start:end]), re.S | re.M)
    if found is None:
        raise AssertionError(f"README.md's {heading!r} section has no ```python block")
    return found.group(1)


def test_python_block_under_finds_the_first_block_of_its_own_section():
    text = "## A\n```python\na = 1\n```\n## Use\ntext\n```python\nb = 2\n```\n```python\nc = 3\n```\n## B\n"
    assert python_block_under("## Use", text) == "b = 2\n"
    with pytest.raises(AssertionError, match="no '## Use' section"):
        python_block_under("## Use", "## Usage\n```python\nb = 2\n```\n")
    with pytest.raises(AssertionError, match="has no ```python block"):
        python_block_under("## Use", "## Use\ntext\n## B\n```python\nb = 2\n```\n")


def test_use_snippet_runs_as_written(tmp_path):
    snippet = python_block_under("## Use", (REPO / "README.md").read_text())
    (tmp_path / "use.py").write_text(NO_NETWORK + snippet)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
        TORCH_HOME=str(tmp_path / "torch_home"),
    )
    run = subprocess.run([sys.executable, "use.py"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert run.returncode == 0, f"the README's Use snippet failed:\n{run.stderr[-3000:]}"
    assert re.search(r"^(onednn|torch) \['torch'", run.stdout, re.M), run.stdout
