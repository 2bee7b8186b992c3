"""cluster.yaml passes Ray's own autoscaler validation, offline."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[2] / "cluster.yaml"


def _validate(cfg: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(cfg))  # fills defaults; validate_config alone fails
    validate_config(prepared)
    return prepared


def test_cluster_yaml_is_a_valid_aws_autoscaler_config():
    cfg = yaml.safe_load(CLUSTER.read_text())
    prepared = _validate(cfg)
    assert prepared["provider"]["type"] == "aws" and prepared["idle_timeout_minutes"] > 0
    gpu = prepared["available_node_types"]["gpu_worker"]
    assert gpu["min_workers"] == 0 and gpu["max_workers"] >= 1, "GPU workers scale from zero"
    assert prepared["available_node_types"][prepared["head_node_type"]]["resources"] == {"CPU": 0}
    assert any("requirements" in c for c in prepared["setup_commands"]), "requirements on every node"
    for worker in ("gpu_worker", "cpu_worker"):  # workers reach the S3 data: Ray gives only the head a role
        assert "IamInstanceProfile" in prepared["available_node_types"][worker]["node_config"]


def test_a_wrong_type_is_refused():
    from jsonschema.exceptions import ValidationError

    cfg = yaml.safe_load(CLUSTER.read_text())
    cfg["max_workers"] = "many"
    with pytest.raises(ValidationError, match="'many' is not of type 'integer'"):
        _validate(cfg)
