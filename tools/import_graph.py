"""Prints the package's internal import graph and its cycles.

    python tools/import_graph.py [PACKAGE_DIR]     # default: inception_fast

Every import counts, also those inside functions, and so do the backends the registry loads by
name (inception_fast/backends/__init__.py imports them with importlib).  Edges into the top
package itself are left out of the cycle search: its __init__ only re-exports the public API.
"""

from __future__ import annotations

import argparse
import ast
import collections
import pathlib
import sys


def plugins(root: pathlib.Path) -> list:
    """The backend modules the registry loads by name: the values of ``_MODULES`` in
    backends/__init__.py ({backend name: relative module}), read from its source."""
    for node in ast.parse((root / "backends" / "__init__.py").read_text()).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == "_MODULES" for t in targets):
            return sorted({m.lstrip(".") for m in ast.literal_eval(node.value).values()})
    raise SystemExit(f"{root}/backends/__init__.py: no _MODULES table of the backends it loads by name")


def modules(root: pathlib.Path) -> dict:
    """{dotted module name: file} for every .py file under ``root``."""
    found = {}
    for f in root.rglob("*.py"):
        name = ".".join(f.relative_to(root.parent).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = f
    return found


def graph(root: pathlib.Path, mods: dict) -> dict:
    """{module: the modules of ``mods`` it imports}."""
    edges = collections.defaultdict(set)
    for name, f in mods.items():
        pkg = name if f.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = pkg
                    for _ in range(node.level - 1):
                        parent = parent.rpartition(".")[0]
                    base = f"{parent}.{node.module}" if node.module else parent
                submodules = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
                edges[name].update(t for t in (submodules or [base]) if t in mods and t != name)
            elif isinstance(node, ast.Import):
                edges[name].update(a.name for a in node.names if a.name in mods)
    registry = f"{root.name}.backends"
    edges[registry].update(f"{registry}.{p}" for p in plugins(root) if f"{registry}.{p}" in mods)
    return edges


def cycles(edges: dict, top: str) -> list:
    found, state, stack = [], {}, []

    def visit(u):
        state[u] = "open"
        stack.append(u)
        for v in sorted(edges[u]):
            if v == top:
                continue
            if state.get(v) == "open":
                found.append(stack[stack.index(v) :] + [v])
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = "done"

    for u in sorted(edges):
        if u not in state:
            visit(u)
    return found


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Print a package's internal import graph and its cycles.")
    parser.add_argument("package", nargs="?", default="inception_fast", help="its directory (default: %(default)s)")
    args = parser.parse_args(argv)
    root = pathlib.Path(args.package).resolve()
    if not (root / "__init__.py").is_file() or not (root / "backends" / "__init__.py").is_file():
        parser.error(f"{args.package}: not the package's directory (no __init__.py and backends/__init__.py there)")
    mods = modules(root)
    edges = graph(root, mods)
    for name in sorted(mods):
        print(f"{name} -> {', '.join(sorted(edges[name])) or '(nothing)'}")
    found = cycles(edges, root.name)
    print("cycles:", "none" if not found else "")
    for c in found:
        print("  " + " -> ".join(c))
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
