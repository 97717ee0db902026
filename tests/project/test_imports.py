"""The product's imports, read from the source (no module is imported): no import circle between
its modules, and the method (patchscaler/) imports neither Ray nor the pipeline, the actors or
the jobs, so it runs and reads on its own."""
import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("patchscaler", "pipeline", "actors", "jobs", "rtm_index", "storage")


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str) -> set[str]:
    """Every module `name` imports, at any depth of its code (a lazy import is still one)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            # `from pkg import mod` needs pkg.mod (and pkg's __init__ only for a name it defines)
            out |= {f"{base}.{a.name}" for a in node.names} | {f"{base}:" + a.name for a in node.names}
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}

    def target(m: str) -> str:
        if ":" not in m:
            return m
        base, name = m.split(":")
        return "" if f"{base}.{name}" in files else base

    return {name: {t for t in map(target, _imports(path, name)) if t in files and t != name}
            for name, path in files.items()}


def test_no_import_circle_between_product_modules():
    graph, state, circles = _graph(), {}, []

    def visit(m, trail):
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                circles.append(" -> ".join(trail[trail.index(n):] + [n]))
            elif n not in state:
                visit(n, trail + [n])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not circles, "\n".join(circles)


def test_the_method_imports_neither_ray_nor_the_layers_above_it():
    bad = []
    for path in (ROOT / "patchscaler").rglob("*.py"):
        for m in _imports(path, _module(path)):
            if m.split(".")[0] in ("ray", "pipeline", "actors", "jobs"):
                bad.append(f"{path.relative_to(ROOT)}: {m}")
    assert not bad, "\n".join(bad)
