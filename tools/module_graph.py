"""The package's module graph, read from the source (nothing is imported).

    python tools/module_graph.py          # one line per module: what it imports from hpa_ray
    python tools/module_graph.py --dot | dot -Tsvg > modules.svg   # Graphviz, if installed

Imports at module level are plain edges; imports inside functions (done when called, to keep
start-up light or to avoid a cycle) are marked `(lazy)` / dashed.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hpa_ray"


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.startswith("hpa_ray")]
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hpa_ray"):
        # `from hpa_ray import storage` names a module; `from hpa_ray.x import f` names x
        if node.module == "hpa_ray":
            return [f"hpa_ray.{a.name}" for a in node.names]
        return [node.module]
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
            for target in _targets(node):
                while target not in known and "." in target:  # a name inside a module
                    target = target.rsplit(".", 1)[0]
                lazy = id(node) not in top
                out[target] = out.get(target, True) and lazy
        out.pop(module_name(path, package), None)
        graph[module_name(path, package)] = out
    return graph


def cycles(graph: dict[str, dict[str, bool]]) -> list[list[str]]:
    """Cycles through module-level imports only (lazy ones are how cycles are avoided)."""
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt, lazy in graph.get(node, {}).items():
            if lazy:
                continue
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [node])
    return found


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
    print(f"cycles through module-level imports: {cycles(graph) or 'none'}")


if __name__ == "__main__":
    main()
