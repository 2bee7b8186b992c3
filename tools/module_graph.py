"""The package's module graph, read from the source (nothing is imported).

    python tools/module_graph.py          # one line per module, then cycles and upward imports
    python tools/module_graph.py --dot | dot -Tsvg > modules.svg   # Graphviz, if installed

Every import counts, those inside functions too (marked `(lazy)` / dashed): a lazy import
still ties two modules together, it only defers the tie. The package is layered (LAYERS); a
module may import from its own layer and the ones before it, never from a later one.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hpa_ray"

# Lowest first. A module's layer is its first package under hpa_ray (top-level modules: "").
LAYERS = ["core", "runtime", "synth", "segment", "folds", "train", "tune", "predict", "evaluate", "report",
          "cluster", ""]  # fmt: skip


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(node: ast.AST, known: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "hpa_ray"]
    if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "hpa_ray":
        # `from hpa_ray.core import storage` names a module; `from hpa_ray.core.storage import f` names storage
        names = [f"{node.module}.{a.name}" for a in node.names]
        return [n if n in known else node.module for n in names]
    return []


def edges(package: Path = PACKAGE) -> dict[str, dict[str, bool]]:
    """module → {imported module: lazy?} (lazy: only inside functions)."""
    known = {module_name(p, package) for p in package.rglob("*.py")}
    graph: dict[str, dict[str, bool]] = {}
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        top = {id(n) for n in tree.body}
        out: dict[str, bool] = {}
        for node in ast.walk(tree):
            for target in _targets(node, known):
                while target not in known and "." in target:  # a name inside a module
                    target = target.rsplit(".", 1)[0]
                lazy = id(node) not in top
                out[target] = out.get(target, True) and lazy
        out.pop(module_name(path, package), None)
        graph[module_name(path, package)] = out
    return graph


def cycles(graph: dict[str, dict[str, bool]]) -> list[list[str]]:
    """Cycles through imports, lazy ones included."""
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in graph.get(node, {}):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [node])
    return found


def layer(module: str) -> int:
    """The module's place in LAYERS (a module of a package not listed: a ValueError)."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in LAYERS:
        return LAYERS.index(parts[1])
    if len(parts) == 2 or module == "hpa_ray":  # a top-level module (hpa_ray.demo)
        return LAYERS.index("")
    raise ValueError(f"{module}: its package is not in LAYERS")


def upward(graph: dict[str, dict[str, bool]]) -> list[tuple[str, str]]:
    """(module, imported module) where the import goes to a later layer."""
    return [(m, t) for m, targets in graph.items() for t in sorted(targets) if layer(t) > layer(m)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dot", action="store_true", help="Graphviz DOT instead of text")
    args = parser.parse_args()
    graph = edges()
    if args.dot:
        print("digraph hpa_ray {\n  rankdir=LR; node [shape=box, fontsize=10];")
        for module, targets in graph.items():
            for target, lazy in sorted(targets.items()):
                print(f'  "{module}" -> "{target}"{" [style=dashed]" if lazy else ""};')
        print("}")
        return
    for module, targets in graph.items():
        names = ", ".join(f"{t}{' (lazy)' if lazy else ''}" for t, lazy in sorted(targets.items()))
        print(f"{module}: {names or '-'}")
    print(f"cycles (lazy imports counted): {cycles(graph) or 'none'}")
    print(f"upward imports: {[f'{m} -> {t}' for m, t in upward(graph)] or 'none'}")


if __name__ == "__main__":
    main()
