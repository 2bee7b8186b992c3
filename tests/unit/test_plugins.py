"""Registries: a backend and a backbone added from a test module, through the registries alone
(`segment.plugins`, `train.plugins`): their configs checked by the plugin's own models."""

from __future__ import annotations

import pytest

from hpa_ray.core.config import ConfigError, load_config
from hpa_ray.segment.config import SegmentConfig
from hpa_ray.train.config import TrainConfig

PLUGIN = "tests.toy_plugin"


def test_plugin_configs_are_checked_by_the_plugins_own_models(tmp_path):
    with pytest.raises(ValueError, match=r"unknown segmentation backend 'toy2'; registered: classical, hpa\b"):
        SegmentConfig(plugins=[PLUGIN], backend="toy2")
    with pytest.raises(ValueError, match="plugin module 'tests.no_such_plugin' cannot be imported"):
        SegmentConfig(plugins=["tests.no_such_plugin"])
    with pytest.raises(ValueError, match="threshold"):
        SegmentConfig(plugins=[PLUGIN], backend="toy", toy={"threshold": 2})
    cfg = SegmentConfig(plugins=[PLUGIN], backend="toy", toy={"grow": 3})
    assert cfg.section().grow == 3 and cfg.section().threshold == 0.3
    (tmp_path / "seg.yaml").write_text("plugins: [tests.toy_plugin]\nbackend: toy\ntoy: {grow: 2}\n")
    assert load_config(SegmentConfig, tmp_path / "seg.yaml").section().grow == 2
    with pytest.raises(ConfigError, match="unknown model 'toy-nett'"):
        load_config(TrainConfig, None, ["plugins=[tests.toy_plugin]", "model=toy-nett"])
