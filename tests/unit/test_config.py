from pathlib import Path

import pytest
import yaml

from hpa_ray.core.config import ConfigError, load_config, write_resolved
from hpa_ray.folds.config import FoldsConfig
from hpa_ray.predict.config import PredictConfig
from hpa_ray.segment.config import SegmentConfig
from hpa_ray.synth.config import SynthConfig
from hpa_ray.train.config import TrainConfig
from hpa_ray.tune.config import TuneConfig

CONF = Path(__file__).resolve().parents[2] / "conf"
# Every file in conf/ and the config class it configures.
CONF_CLASSES = {
    "folds.yaml": FoldsConfig,
    "predict.yaml": PredictConfig,
    "segment.yaml": SegmentConfig,
    "synth.yaml": SynthConfig,
    "train.yaml": TrainConfig,
    "tune.yaml": TuneConfig,
}


def test_every_conf_file_loads_and_is_known():
    files = sorted(p.name for p in CONF.glob("*.yaml"))
    assert set(files) <= set(CONF_CLASSES), f"conf/ has files no test loads: {set(files) - set(CONF_CLASSES)}"
    for name in files:
        load_config(CONF_CLASSES[name], CONF / name)


@pytest.mark.parametrize("presets", ["cluster", "local-cluster"])
def test_cluster_presets_load(presets):
    """One preset per stage that jobs/*.sh submits (HPA_RAY_PRESETS picks the directory)."""
    files = sorted((CONF / presets).glob("*.yaml"))
    assert [p.name for p in files] == ["folds.yaml", "predict.yaml", "segment.yaml", "train.yaml", "tune.yaml"]
    for path in files:
        load_config(CONF_CLASSES[path.name], path)


def test_conf_files_state_the_defaults():
    # The shipped files document the defaults: loading them changes nothing.
    for name, cls in CONF_CLASSES.items():
        if name == "tune.yaml":  # states only part of its base TrainConfig
            continue
        assert load_config(cls, CONF / name).model_dump() == cls().model_dump(), name


def test_unknown_key_names_file_and_dotted_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("classical:\n  scael: 0.5\n")
    with pytest.raises(
        ConfigError, match=r"bad.yaml: unknown key 'classical.scael' \(did you mean 'classical.scale'\?\)"
    ):
        load_config(SegmentConfig, path)
    # A key like none in its section is named alone; a section two levels down is searched.
    with pytest.raises(ConfigError, match=r"unknown key 'zzz'$"):
        load_config(SegmentConfig, None, ["zzz=1"])
    with pytest.raises(ConfigError, match=r"unknown key 'train.epochz' \(did you mean 'train.epochs'\?\)"):
        load_config(TuneConfig, None, ["train.epochz=3"])


def test_wrong_value_names_key_and_value(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("crop_size: -3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: crop_size: .*greater than or equal to 8.*-3"):
        load_config(SegmentConfig, path)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(SegmentConfig, tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(SegmentConfig, tmp_path / "list.yaml")


def test_asha_grace_longer_than_every_trial_is_a_config_error():
    space = "search_space={lr: {type: loguniform, low: 0.001, high: 0.01}, epochs: {type: choice, values: [1]}}"
    with pytest.raises(ConfigError, match=r"grace_period \(2\) is more than the most epochs a trial runs \(1\)"):
        load_config(TuneConfig, None, [space])
    assert load_config(TuneConfig, None, [space, "asha.grace_period=1"]).max_epochs() == 1
    assert load_config(TuneConfig, None, ["search_space={}", "train.epochs=3"]).max_epochs() == 3


def test_overrides_apply_after_the_file_and_are_checked(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("crop_size: 128\nclassical:\n  scale: 0.5\n")
    cfg = load_config(SegmentConfig, path, ["classical.scale=0.125", "backend=hpa"])
    assert (cfg.crop_size, cfg.classical.scale, cfg.backend) == (128, 0.125, "hpa")
    with pytest.raises(ConfigError, match="not KEY=VALUE"):
        load_config(SegmentConfig, None, ["crop_size"])
    with pytest.raises(ConfigError, match="backend"):
        load_config(SegmentConfig, None, ["backend=unet"])


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(SegmentConfig, None, ["crop_size=96", "hpa.scale=0.5"])
    path = write_resolved(cfg, tmp_path / "run" / "config.yaml")
    assert yaml.safe_load(path.read_text())["crop_size"] == 96
    assert load_config(SegmentConfig, path) == cfg


def test_fold_configs_saved_with_the_old_test_hook_still_load(tmp_path):
    (tmp_path / "config.yaml").write_text("model: tiny\nfail_at_epoch: null\n")
    assert load_config(TrainConfig, tmp_path / "config.yaml").model == "tiny"
    (tmp_path / "config.yaml").write_text("model: tiny\nfail_at_epoch: 2\n")
    with pytest.raises(ConfigError, match="unknown key 'fail_at_epoch'"):
        load_config(TrainConfig, tmp_path / "config.yaml")


def test_overlays_state_only_what_differs(tmp_path, shared_data, capsys):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "gpu.yaml").write_text(f"base: {CONF / 'train.yaml'}\nbatch_size: 128\n")  # absolute
    (tmp_path / "mine.yaml").write_text("base: sub/gpu.yaml\nepochs: 3\n")
    cfg = load_config(TrainConfig, tmp_path / "mine.yaml")
    assert (cfg.batch_size, cfg.epochs, cfg.model) == (128, 3, TrainConfig().model), "chain: defaults, gpu, mine"
    (tmp_path / "more.yaml").write_text("epochs: 5\nlr: 0.001\n")
    both = load_config(TrainConfig, [tmp_path / "mine.yaml", tmp_path / "more.yaml"], ["lr=0.002"])
    assert (both.batch_size, both.epochs, both.lr) == (128, 5, 0.002), "files in order, then overrides"
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="already in the chain"):
        load_config(TrainConfig, tmp_path / "a.yaml")
    (tmp_path / "lost.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"nowhere.yaml does not exist \(base of .*lost.yaml\)"):
        load_config(TrainConfig, tmp_path / "lost.yaml")
    from hpa_ray.folds.stratify import main

    (tmp_path / "f1.yaml").write_text("n_folds: 4\nseed: 1\n")
    (tmp_path / "f2.yaml").write_text("n_folds: 3\n")
    args = ["--labels", str(shared_data / "train.csv"), "--out", str(tmp_path / "f.csv")]
    assert main([*args, "--config", str(tmp_path / "f1.yaml"), "--config", str(tmp_path / "f2.yaml")]) == 0
    assert "in 3 folds" in capsys.readouterr().out
    assert yaml.safe_load((tmp_path / "f_config.yaml").read_text())["seed"] == 1
