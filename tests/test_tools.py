"""The repository's tools stay in step with the code they check (no build; a few seconds).

tools/mutate.py plants each mutant by replacing one exact piece of text; a refactor that moves or
rewrites that text, or a test split that moves the tests a mutant's selection names, silently
retires the mutant until someone runs the tool.  These checks make such drift fail CI instead."""

import importlib.util
import sys
from pathlib import Path

import pytest
from processes import assert_gone

REPO = Path(__file__).resolve().parents[1]


def _load_mutate():
    spec = importlib.util.spec_from_file_location("_inception_fast_tools_mutate", REPO / "tools" / "mutate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses looks the defining module up by name
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


MUTANTS = _load_mutate().MUTANTS


def _test_paths(selection):
    """The file paths of a pytest selection (its options and their values left out)."""
    paths, skip_next = [], False
    for arg in selection:
        if skip_next:
            skip_next = False
        elif arg in ("-k", "-m"):
            skip_next = True
        elif not arg.startswith("-"):
            paths.append(arg.split("::")[0])
    return paths


def test_mutant_names_are_unique():
    names = [m.name for m in MUTANTS]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_mutant_still_applies(mutant):
    path = REPO / mutant.path
    assert path.is_file(), f"{mutant.name}: {mutant.path} does not exist"
    count = path.read_text().count(mutant.old)
    assert count == 1, f"{mutant.name}: its text occurs {count} times in {mutant.path} (must be once)"
    assert mutant.new != mutant.old, f"{mutant.name}: the replacement changes nothing"


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_mutant_selection_exists(mutant):
    paths = _test_paths(mutant.tests)
    assert paths, f"{mutant.name}: its selection {mutant.tests} names no test file"
    for p in paths:
        assert (REPO / p).is_file(), f"{mutant.name}: its selection names {p}, which does not exist"


def test_mutate_time_limit_kills_the_run_children_too(tmp_path):
    """A pytest run past mutate's time limit dies with its children (torchrun's workers, a
    compiler's jobs), which would otherwise keep a core busy under the next mutant's run."""
    import os
    import time

    pid_file = tmp_path / "grandchild.pid"
    (tmp_path / "test_sleeps.py").write_text(
        "import subprocess, time\n"
        "def test_sleeps():\n"
        f"    g = subprocess.Popen(['sleep', '60']); open({str(pid_file)!r}, 'w').write(str(g.pid))\n"
        "    time.sleep(60)\n"
    )
    mutate = _load_mutate()
    t0 = time.monotonic()
    result = mutate.run_selection(tmp_path, ("test_sleeps.py",), dict(os.environ), 8.0, first_failure=True)
    assert result["status"] == "timeout" and time.monotonic() - t0 < 30
    assert_gone(int(pid_file.read_text()), "the timed-out run's child outlived it")
