"""The names the docs, configs and benches give for code and files exist: a module moved or a
test renamed leaves no stale pointer (the stage packages left fourteen)."""

from __future__ import annotations

import pkgutil
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# docs/lab and docs/results are dated records: they name files as they were then.
SOURCES = ["README.md", "cluster.yaml", "docs/*.md", "docs/stages/*.md", "bench/*.md", "bench/*.py", "conf/**/*.yaml",
           "jobs/*", "hpa_ray/**/*.py"]  # fmt: skip
# `hpa_ray.a.b`, not a file name's `.hpa_ray.lock`, not a pattern's `build_*` or `build_{…}`
DOTTED = re.compile(r"(?<![\w.])hpa_ray(?:\.\w+)+(?![\w*{])(?!\.\w)")
# a project path; not part of a longer one (../shared/tools/…)
PATH = re.compile(r"(?<![\w./-])(?:hpa_ray|tests|bench|conf|jobs|tools|docs)/[\w./-]*\w")
EXAMPLES = {"conf/mine.yaml", "conf/STAGE.yaml"}  # a user's file, a placeholder
OLD = {"hpa_ray/backends/classical.py"}  # named as commits before the stage packages had it (bench)
OUTPUTS = "docs/results/"  # where a bench command writes its record


def _texts():
    for pattern in SOURCES:
        for path in sorted(ROOT.glob(pattern)):
            if path.is_file() and "__pycache__" not in path.parts:
                yield path.relative_to(ROOT), path.read_text()


def _resolves(dotted: str) -> bool:
    """A module, or an attribute of the longest importable module prefix (pkgutil's lookup)."""
    try:
        pkgutil.resolve_name(dotted)
    except (ImportError, AttributeError):
        return False
    return True


def test_every_dotted_name_resolves():
    stale = sorted({(str(path), name) for path, text in _texts() for name in DOTTED.findall(text)
                    if not _resolves(name)})  # fmt: skip
    assert stale == []


def test_every_project_path_exists():
    stale = sorted({(str(path), name) for path, text in _texts() for name in PATH.findall(text)
                    if name not in EXAMPLES | OLD and not name.startswith(OUTPUTS)
                    and not (ROOT / name.rstrip(".")).exists()})  # fmt: skip
    assert stale == []


def test_the_checks_see_a_stale_name():
    assert not _resolves("hpa_ray.config.TrainConfig") and _resolves("hpa_ray.train.config.TrainConfig")
    assert DOTTED.findall("see hpa_ray.train.fit.fit_fold, .hpa_ray.lock and hpa_ray.x.build_*") == [
        "hpa_ray.train.fit.fit_fold"
    ]
    assert PATH.findall("tests/unit/x.py and ../shared/tools/gpu-bundle/make-bundle.sh") == ["tests/unit/x.py"]
