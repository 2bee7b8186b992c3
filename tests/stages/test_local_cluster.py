"""The stages' resource checks on a local Ray."""

from __future__ import annotations

import pytest

from hpa_ray.runtime.resources import ResourceError


def test_training_that_asks_for_a_gpu_no_node_has_stops_at_once(ray_local):
    """On a Ray with no GPU (and no node type that has one), use_gpu: true would wait forever."""
    from hpa_ray.train.config import TrainConfig
    from hpa_ray.train.fit import check_resources

    check_resources(TrainConfig(use_gpu="auto"))
    with pytest.raises(ResourceError, match=r"training worker asks for \{CPU 1, GPU 1\}"):
        check_resources(TrainConfig(use_gpu=True))
