"""The commands the README tells people to type: what they say and refuse before any stage runs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import run_group

ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}


def _run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return run_group([sys.executable, *args], timeout=1500, env=ENV, cwd=cwd)


def test_package_lists_its_stages():
    out = _run("-m", "hpa_ray")
    assert out.returncode == 0
    for stage in ("synth", "segment", "folds", "train", "tune", "predict", "submission", "evaluate", "report", "demo"):
        assert stage in out.stdout
    assert _run("-m", "hpa_ray", "nonsense").returncode == 2


def test_stage_help():
    assert _run("-m", "hpa_ray.report", "--help").returncode == 0  # no config: its inputs are flags
    for stage in ("synth", "segment", "folds", "train", "tune", "predict"):
        out = _run("-m", f"hpa_ray.{stage}", "--help")
        assert out.returncode == 0 and "--config" in out.stdout
        assert stage in ("synth", "folds") or "Exit status: 0" in out.stdout, stage
        assert stage != "tune" or "python -m hpa_ray.tune dashboard OUT" in " ".join(out.stdout.split())


# One spelling per idea (hpa_ray.runtime.cli): what each stage reads and writes, by the same flag.
SHARED_FLAGS = {"segment": ["--images", "--labels", "--out"], "folds": ["--labels", "--out"],
                "train": ["--cells", "--folds", "--out"], "tune": ["--cells", "--folds", "--out"],
                "predict": ["--images", "--run-dir", "--out"], "evaluate": ["--out"],
                "report": ["--images", "--labels", "--folds", "--run-dir", "--out"]}  # fmt: skip


CLI_MODULES = {"segment": "segment.stage", "folds": "folds.stratify", "train": "train.fit", "tune": "tune.search",
               "predict": "predict.run", "evaluate": "evaluate.score", "report": "report.build"}  # fmt: skip


def test_one_flag_spelling_across_stages_and_the_old_ones_still_work(tmp_path, shared_data, capsys):
    import importlib

    for stage, flags in SHARED_FLAGS.items():
        with pytest.raises(SystemExit):
            importlib.import_module(f"hpa_ray.{CLI_MODULES[stage]}").main(["--help"])
        shown = capsys.readouterr().out
        assert all(flag in shown for flag in flags), (stage, flags)
        assert "--output-dir" not in shown and "--input-dir" not in shown and "--models" not in shown
    from hpa_ray.folds import stratify as folds
    from hpa_ray.predict import run as predict
    from hpa_ray.train import fit as train

    old = ["--labels", str(shared_data / "train.csv"), "--n-folds", "3", "--output", str(tmp_path / "f.csv")]
    assert folds.main(old) == 0 and (tmp_path / "f.csv").exists()
    assert "warning: --output is deprecated, use --out" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    old = ["--images", str(tmp_path / "empty"), "--models", str(tmp_path), "--output", str(tmp_path / "s.csv")]
    assert predict.main(old) == 2  # parsed under the new names: the error is about the inputs, not the flags
    err = capsys.readouterr().err
    assert "--models is deprecated, use --run-dir" in err and "error:" in err
    assert train.main(["--cells", "c", "--folds", str(tmp_path / "none.csv"), "--run-dir", str(tmp_path / "r")]) == 2
    assert "--run-dir is deprecated, use --out" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(["--cells", "c", "--folds", "f.csv"])
    assert "required: --out" in capsys.readouterr().err


def test_the_full_demo_takes_the_cards_model_where_the_cluster_has_gpus():
    from hpa_ray.demo import CARD_MODEL, default_model
    from hpa_ray.train.backbones import backbone_names

    assert default_model({"CPU": 2.0, "memory": 1e10}) == "small"
    assert default_model({"CPU": 16.0, "GPU": 1.0}) == CARD_MODEL == "efficientnet-b2"
    assert CARD_MODEL in backbone_names()


def test_the_demo_replaces_an_earlier_demo_and_refuses_a_directory_of_other_files(tmp_path):
    """A demo run into an earlier one's --out resumed that run's folds with its own settings (and
    failed), and mixed both seeds' images; into a directory of other files it would mix with them."""
    from hpa_ray.demo import DemoOutError, out_problem, prepare_out

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "cells.csv").write_text("x\n")
    out = _run("-m", "hpa_ray", "demo", "--quick", "--out", str(mine))
    assert out.returncode == 2 and "holds other files (cells.csv) and no earlier demo" in out.stderr
    assert [p.name for p in mine.iterdir()] == ["cells.csv"], "refused before anything is written, a log neither"
    with pytest.raises(DemoOutError, match="give a new or empty directory"):
        prepare_out(mine)
    (tmp_path / "logs-only" / "logs").mkdir(parents=True)
    for fresh in (tmp_path / "new", tmp_path / "logs-only"):
        assert out_problem(fresh) is None and prepare_out(fresh) is False
    earlier = tmp_path / "earlier"  # a demo from before demo.json, stopped after its data
    (earlier / "data" / "train").mkdir(parents=True)
    (earlier / "data" / "train" / "synth_config.yaml").write_text("size: 1024\n")
    (earlier / "runs" / "demo" / "fold-0").mkdir(parents=True)
    (earlier / "folds.csv").write_text("image_id,fold\n")
    (earlier / "notes.txt").write_text("mine\n")
    (earlier / "logs").mkdir()
    assert out_problem(earlier) is None and prepare_out(earlier) is True
    assert sorted(p.name for p in earlier.iterdir()) == ["logs", "notes.txt"], "only the demo's own outputs go"


@pytest.mark.parametrize(
    ("module", "args", "out", "problem"),
    [
        ("hpa_ray.segment.stage", ["--images", "IMG"], "FILE", "is a file; it takes a directory"),
        ("hpa_ray.train.fit", ["--cells", "C", "--folds", "F"], "FILE", "is a file; it takes a directory"),
        ("hpa_ray.tune.search", ["--cells", "C", "--folds", "F"], "FILE/run", "cannot be made: FILE is a file"),
        ("hpa_ray.report.build", [], "FILE", "is a file; it takes a directory"),
        ("hpa_ray.predict.run", ["--images", "IMG", "--run-dir", "R"], "DIR", "is a directory; it takes a file's path"),
        ("hpa_ray.folds.stratify", ["--labels", "L"], "FILE/folds.csv", "cannot be made: FILE is a file"),
        ("hpa_ray.demo", [], "FILE", "is a file; it takes a directory"),
    ],
)
def test_an_unusable_out_is_refused_before_anything_runs(module, args, out, problem, tmp_path, capsys):
    """A file where a stage writes a directory, or the reverse, once crashed with a traceback at the
    first write (predict's: after the whole run)."""
    import importlib

    (tmp_path / "FILE").write_text("x")
    (tmp_path / "DIR").mkdir()
    place = lambda text: text.replace("FILE", str(tmp_path / "FILE")).replace("DIR", str(tmp_path / "DIR"))  # noqa: E731
    with pytest.raises(SystemExit) as exit_:
        importlib.import_module(module).main([*args, "--out", place(out)])
    assert exit_.value.code == 2 and f"--out {place(out)} {place(problem)}" in capsys.readouterr().err
