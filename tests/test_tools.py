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


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"_inception_fast_tools_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses looks the defining module up by name
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def _load_mutate():
    return _load_tool("mutate")


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


# A package for tools/import_graph.py: {file: source}.  Relative imports of every level, an import
# inside a function, a name that is not a submodule (the edge goes to its package), a module that
# imports itself, an outside module, a backend loaded by name only, a cycle through the top package
# (left out) and one cycle among the modules.
IMPORT_GRAPH_PACKAGE = {
    "__init__.py": "from .a import f\nfrom . import c\n",
    "a.py": "import os\nfrom . import a\n\n\ndef f():\n    import pkg.b\n",
    "b.py": "from .sub import helper\n",
    "c.py": "from pkg import f\n",
    "sub/__init__.py": "from .inner import helper\n",
    "sub/inner.py": "from ..b import x\n",
    "backends/__init__.py": "_MODULES: dict = {'x': '.xb', 'gone': '.not_there'}\n",
    "backends/xb.py": "from .. import a\n",
}


def test_import_graph_follows_every_kind_of_import_and_reports_the_cycles(tmp_path, capsys):
    """tools/import_graph.py on a package of known imports: each module's edges (relative imports
    resolved against the module's package, a non-module name to its package, no edge to itself nor
    outside the package, the backends the registry names), the cycles among the modules closed at
    their first module (not those through the top package), printed with exit status 1; the real
    package has none (exit status 0)."""
    tool = _load_tool("import_graph")
    root = tmp_path / "pkg"
    for name, text in IMPORT_GRAPH_PACKAGE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    mods = tool.modules(root)
    dotted = {
        f"pkg/{n}".removesuffix(".py").removesuffix("/__init__").replace("/", "."): n for n in IMPORT_GRAPH_PACKAGE
    }
    assert mods == {name: root / n for name, n in dotted.items()}
    want = {
        "pkg": {"pkg.a", "pkg.c"},
        "pkg.a": {"pkg.b"},
        "pkg.b": {"pkg.sub"},
        "pkg.c": {"pkg"},
        "pkg.sub": {"pkg.sub.inner"},
        "pkg.sub.inner": {"pkg.b"},
        "pkg.backends": {"pkg.backends.xb"},
        "pkg.backends.xb": {"pkg.a"},
    }
    edges = tool.graph(root, mods)
    assert {m: edges[m] for m in mods} == want
    assert tool.cycles(edges, "pkg") == [["pkg.b", "pkg.sub", "pkg.sub.inner", "pkg.b"]]
    with pytest.raises(SystemExit) as exc:
        tool.main([str(root)])
    out = capsys.readouterr().out.splitlines()
    assert exc.value.code == 1
    assert out[:2] == ["pkg -> pkg.a, pkg.c", "pkg.a -> pkg.b"]
    assert out[-2:] == ["cycles: ", "  pkg.b -> pkg.sub -> pkg.sub.inner -> pkg.b"]
    with pytest.raises(SystemExit) as exc:
        tool.main([str(REPO / "inception_fast")])
    assert exc.value.code == 0 and capsys.readouterr().out.splitlines()[-1] == "cycles: none"
