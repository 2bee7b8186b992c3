from pathlib import Path

import pytest
import yaml

from hpa_ray.config import (
    ConfigError,
    FoldsConfig,
    PredictConfig,
    SegmentConfig,
    SynthConfig,
    TrainConfig,
    TuneConfig,
    load_config,
    write_resolved,
)

CONF = Path(__file__).resolve().parents[1] / "conf"
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


def test_cluster_presets_load():
    files = sorted((CONF / "cluster").glob("*.yaml"))
    assert [p.name for p in files] == ["predict.yaml", "segment.yaml", "train.yaml", "tune.yaml"]
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
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key 'classical.scael'"):
        load_config(SegmentConfig, path)


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
