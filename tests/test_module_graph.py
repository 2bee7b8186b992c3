"""tools/module_graph.py: the package's module graph, read from the source."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from module_graph import cycles, edges  # noqa: E402


def test_no_cycle_through_module_level_imports_and_the_stages_depend_as_documented():
    graph = edges()
    assert cycles(graph) == []
    assert "hpa_ray.backends" in graph["hpa_ray.segment"] and "hpa_ray.segment" in graph["hpa_ray.predict"]
    assert graph["hpa_ray.backends"]["hpa_ray.backends.hpa"] is True, "the hpa backend is imported lazily"
    assert "hpa_ray.train" not in graph["hpa_ray.segment"], "segment does not pull in training"


def test_a_cycle_is_found(tmp_path):
    package = tmp_path / "hpa_ray"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from hpa_ray import b\n")
    (package / "b.py").write_text("import hpa_ray.a\n\ndef f():\n    from hpa_ray import c\n")
    (package / "c.py").write_text("from hpa_ray.b import f\n")
    graph = edges(package)
    assert graph["hpa_ray.b"] == {"hpa_ray.a": False, "hpa_ray.c": True}
    assert cycles(graph) == [["hpa_ray.a", "hpa_ray.b", "hpa_ray.a"]]


def test_the_command_prints_every_module():
    out = subprocess.run(
        [sys.executable, "tools/module_graph.py"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert (
        out.returncode == 0
        and "hpa_ray.segment:" in out.stdout
        and "cycles through module-level imports: none" in out.stdout
    )
