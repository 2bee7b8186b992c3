"""jobs/*.sh: the pipeline's order and exit statuses, and what each script submits, with `ray` and
the stages stood in by scripts that record their calls (no Ray runs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _stand_in_stages(directory: Path, statuses: dict[str, int]) -> Path:
    """Stage scripts that record their call (name and arguments) and end with the given exit status."""
    directory.mkdir()
    for name in ("segment", "folds", "tune", "train", "predict"):
        script = directory / f"{name}.sh"
        record = f'echo {name} "$@" >> "{directory}/calls"'
        script.write_text(f"#!/usr/bin/env bash\n{record}\nexit {statuses.get(name, 0)}\n")
        script.chmod(0o755)
    return directory


@pytest.mark.parametrize(
    "statuses, exit_status, calls, said",
    [
        ({}, 0, ["segment", "folds", "tune", "train", "predict"], "done"),
        ({"segment": 3}, 3, ["segment", "folds", "tune", "train", "predict"], "segment: some images failed"),
        ({"predict": 3}, 3, ["segment", "folds", "tune", "train", "predict"], "predict: some images failed"),
        ({"segment": 2}, 2, ["segment"], "segment: unusable inputs or configuration"),
        ({"tune": 3}, 3, ["segment", "folds", "tune"], "tune failed (exit 3); stopping"),
        ({"train": 1}, 1, ["segment", "folds", "tune", "train"], "train failed (exit 1); stopping"),
    ],
)
def test_pipeline_goes_on_after_3_and_stops_after_2_or_other(tmp_path, statuses, exit_status, calls, said):
    stages = _stand_in_stages(tmp_path / "stages", statuses)
    run = subprocess.run(["bash", "jobs/pipeline.sh", str(tmp_path / "root")], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, env={**os.environ, "HPA_RAY_STAGES": str(stages)})  # fmt: skip
    assert run.returncode == exit_status, run.stderr
    lines = (stages / "calls").read_text().splitlines()
    assert [line.split()[0] for line in lines] == calls and said in run.stderr, run.stderr
    root = tmp_path / "root"
    assert lines[0] == f"segment {root}/train {root}/train.csv {root}/out/segment"  # the preset: segment.sh's
    if len(lines) == 5:  # each stage reads what the one before it wrote
        assert lines[3].endswith(f"{root}/out/runs/b2 --config {root}/out/search/best_config.yaml")
        out = f"{root}/out"
        assert lines[4] == f"predict {root}/test {out}/runs/b2 {out}/submission.csv --ids {root}/sample_submission.csv"


@pytest.mark.parametrize("script, args, module", [
    ("segment.sh", ["IN", "L.csv", "OUT", "crop_size=64"], "hpa_ray.segment"),
    ("folds.sh", ["L.csv", "F.csv", "--n-folds", "3"], "hpa_ray.folds"),
    ("tune.sh", ["C", "F.csv", "S", "num_samples=2"], "hpa_ray.tune"),
    ("train.sh", ["C", "F.csv", "R"], "hpa_ray.train"),
    ("predict.sh", ["IN", "R", "S.csv", "--ids", "I.csv"], "hpa_ray.predict"),
])  # fmt: skip
def test_each_job_script_submits_its_stage_with_flags_the_stage_knows(tmp_path, script, args, module):
    """`ray job submit` stood in by a script that records its arguments: the job is the stage's
    module, from the working directory, with flags that module's --help lists."""
    (tmp_path / "bin").mkdir()
    ray = tmp_path / "bin" / "ray"
    ray.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "{tmp_path}/submitted"\n')
    ray.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    run = subprocess.run(["bash", f"jobs/{script}", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert run.returncode == 0, run.stderr
    submitted = (tmp_path / "submitted").read_text().splitlines()
    assert submitted[:2] == ["job", "submit"] and "--working-dir" in submitted
    job = submitted[submitted.index("--") + 1 :]
    assert job[:3] == ["python", "-m", module] and job[-len(args[3:]) or len(job) :] == args[3:]
    help_text = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                               timeout=120).stdout  # fmt: skip
    flags = {a for a in job if a.startswith("--")}
    assert flags and all(flag in help_text for flag in flags), (flags, help_text)


def test_pipeline_takes_the_presets_and_the_unet_files_from_the_environment(tmp_path):
    """HPA_RAY_MODELS points segment at HPA's two U-Net files; HPA_RAY_PRESETS picks each stage's
    preset (conf/local-cluster for the local autoscaling cluster)."""
    (tmp_path / "bin").mkdir()
    ray = tmp_path / "bin" / "ray"
    record = f'printf "%s\\n" "$@" >> "{tmp_path}/submitted"\necho ---- >> "{tmp_path}/submitted"'
    ray.write_text(f"#!/usr/bin/env bash\n{record}\n")
    ray.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "HPA_RAY_MODELS": "/m",
           "HPA_RAY_PRESETS": "conf/local-cluster"}  # fmt: skip
    run = subprocess.run(["bash", "jobs/pipeline.sh", "/r"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert run.returncode == 0, run.stderr
    jobs = (tmp_path / "submitted").read_text().split("----\n")[:-1]
    segment = jobs[0].splitlines()
    assert segment[-2:] == ["hpa.nuclei_model=/m/dpn_unet_nuclei_v1.pth", "hpa.cell_model=/m/dpn_unet_cell_3ch_v1.pth"]
    configs = [job.splitlines()[job.splitlines().index("--config") + 1] for job in jobs]
    assert configs == [f"conf/local-cluster/{stage}.yaml" for stage in ("segment", "folds", "tune", "train", "predict")]
    assert all(Path(ROOT, c).exists() for c in configs)
