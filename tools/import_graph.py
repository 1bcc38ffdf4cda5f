"""Prints inception_fast's internal import graph (every import, also those inside functions) and its cycles."""
import ast, pathlib, collections, sys
root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "inception_fast")
mods = {}
for f in root.rglob("*.py"):
    name = ".".join(f.with_suffix("").parts)
    if name.endswith(".__init__"): name = name[:-9]
    mods[name] = f
graph = collections.defaultdict(set)
for name, f in mods.items():
    pkg = name if f.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                b = pkg
                for _ in range(node.level - 1): b = b.rpartition(".")[0]
                base = f"{b}.{node.module}" if node.module else b
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
            targets = subs if subs else [base]
            graph[name].update(t for t in targets if t in mods and t != name)
        elif isinstance(node, ast.Import):
            graph[name].update(a.name for a in node.names if a.name in mods)
# The registry loads its plugins by name (importlib): those are imports too.
reg = f"{root.name}.backends"
for plugin in ("torch_backend", "triton", "cuda_backend", "triton_backend"):
    if f"{reg}.{plugin}" in mods:
        graph[reg].add(f"{reg}.{plugin}")
out, color, stack = [], {}, []
def dfs(u):
    color[u] = 1; stack.append(u)
    for v in sorted(graph[u]):
        if v == root.name: continue  # the package itself: its __init__ only re-exports
        if color.get(v) == 1: out.append(stack[stack.index(v):] + [v])
        elif not color.get(v): dfs(v)
    stack.pop(); color[u] = 2
for u in sorted(mods):
    if not color.get(u): dfs(u)
for k in sorted(graph): print(f"{k} -> {', '.join(sorted(graph[k]))}")
print("cycles:", out or "none")
