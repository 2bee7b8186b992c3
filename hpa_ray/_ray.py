"""Starting or joining Ray the same way from every stage."""

from __future__ import annotations

import os

# No usage-stats upload, no PyPI version check by albumentations: this often runs offline.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the cluster at `address` (or $RAY_ADDRESS), else start an embedded local Ray.

    The dashboard stays on: Ray Train V2 needs it to release finished trials' resources.
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=True, log_to_driver=True)


def cluster_resources() -> dict[str, float]:
    import ray

    return ray.cluster_resources()
