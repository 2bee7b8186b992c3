"""Publish an autoscaler config's node types into its cluster's GCS, as Ray's ClusterConfig.

Ray Train, Ray Data and this project's "auto" settings read what a cluster can grow to from
there (`hpa_ray.runtime.resources`); Ray 2.60's VM autoscaler does not write it. This file
imports nothing of hpa_ray, so that a cluster's head can run it alone (cluster.yaml mounts it):

    python3 publish.py ~/ray_bootstrap_config.yaml 127.0.0.1:6379
"""

from __future__ import annotations

import sys
from pathlib import Path


def node_groups(config: dict) -> list[tuple[str, dict[str, float], int, int]]:
    """(name, resources per node, min, max) per node type of an autoscaler config; the head
    counts as one node of its type."""
    head = config.get("head_node_type")
    groups = []
    for name, spec in config["available_node_types"].items():
        resources = {key: float(value) for key, value in (spec.get("resources") or {}).items()}
        low, high = (1, 1) if name == head else (int(spec.get("min_workers", 0)), int(spec.get("max_workers", 0)))
        groups.append((name, resources, low, high))
    return groups


def publish(gcs_address: str, groups: list[tuple[str, dict[str, float], int, int]]) -> None:
    """Write `groups` (see `node_groups`) into the GCS at gcs_address."""
    from ray._raylet import GcsClient
    from ray.core.generated import autoscaler_pb2

    config = autoscaler_pb2.ClusterConfig()
    for name, resources, low, high in groups:
        group = config.node_group_configs.add(name=name, min_count=low, max_count=high)
        for key, amount in resources.items():
            if amount >= 1:  # the proto holds whole units
                group.resources[key] = int(amount)
    GcsClient(address=gcs_address).report_cluster_config(config.SerializeToString())


def main(argv: list[str]) -> int:
    import yaml

    if len(argv) != 2:
        print("usage: publish.py AUTOSCALER_CONFIG GCS_ADDRESS", file=sys.stderr)
        return 2
    groups = node_groups(yaml.safe_load(Path(argv[0]).expanduser().read_text()))
    publish(argv[1], groups)
    print(f"published {len(groups)} node types to {argv[1]}: {', '.join(g[0] for g in groups)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
