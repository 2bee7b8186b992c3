"""tools/module_graph.py: the package's module graph, read from the source."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

from module_graph import LAYERS, cycles, edges, upward  # noqa: E402

STAGES = ["synth", "segment", "folds", "train", "tune", "predict", "evaluate", "report", "cluster"]


def test_no_cycle_and_no_upward_import_lazy_ones_counted():
    graph = edges()
    assert cycles(graph) == []
    assert upward(graph) == []
    assert "hpa_ray.segment.backends" in graph["hpa_ray.segment.stage"]
    assert "hpa_ray.segment.stage" in graph["hpa_ray.predict.run"]
    assert graph["hpa_ray.segment.backends"]["hpa_ray.segment.backends.hpa"] is True, "hpa backend imported lazily"
    assert not any(t.startswith("hpa_ray.train") for t in graph["hpa_ray.segment.stage"]), "segment needs no training"


def test_the_package_is_a_small_core_under_stage_packages():
    top = sorted(p.name for p in (ROOT / "hpa_ray").glob("*.py"))
    assert len(top) <= 12, top
    packages = {p.name for p in (ROOT / "hpa_ray").iterdir() if (p / "__init__.py").exists()}
    assert packages == set(LAYERS[:-1]), "every package has its place in the layers"
    for stage in STAGES:  # `python -m hpa_ray.<stage>` and the stage's own config section
        assert (ROOT / "hpa_ray" / stage / "__main__.py").exists(), stage
    for stage in ["synth", "segment", "folds", "train", "tune", "predict"]:
        assert (ROOT / "hpa_ray" / stage / "config.py").exists(), stage


def test_stage_packages_and_their_configs_import_without_ray():
    modules = [f"hpa_ray.{s}" for s in STAGES] + [
        f"hpa_ray.{s}.config" for s in ["synth", "segment", "folds", "train", "tune", "predict"]
    ]
    code = "import importlib, json, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    code += "print(json.dumps(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'))))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_a_cycle_through_a_lazy_import_and_an_upward_import_are_found(tmp_path):
    package = tmp_path / "hpa_ray"
    (package / "core").mkdir(parents=True)
    (package / "train").mkdir()
    for init in [package, package / "core", package / "train"]:
        (init / "__init__.py").write_text("")
    (package / "core" / "a.py").write_text("from hpa_ray.core import b\n")
    (package / "core" / "b.py").write_text("def f():\n    from hpa_ray.core.a import g\n")
    (package / "core" / "c.py").write_text("def f():\n    from hpa_ray.train import fit\n")
    (package / "train" / "fit.py").write_text("from hpa_ray.core import c\n")
    graph = edges(package)
    assert graph["hpa_ray.core.b"] == {"hpa_ray.core.a": True}
    assert ["hpa_ray.core.a", "hpa_ray.core.b", "hpa_ray.core.a"] in cycles(graph)
    assert upward(graph) == [("hpa_ray.core.c", "hpa_ray.train.fit")]


def test_the_command_prints_every_module():
    out = subprocess.run(
        [sys.executable, "tools/module_graph.py"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "hpa_ray.segment.stage:" in out.stdout
    assert "cycles (lazy imports counted): none" in out.stdout and "upward imports: none" in out.stdout
