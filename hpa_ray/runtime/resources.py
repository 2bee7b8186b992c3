"""What a cluster can offer, and whether a stage's resource requests fit it.

An autoscaling cluster starts with no workers: its GPUs exist only as node types the autoscaler
may launch. "auto" settings (use a GPU? how many actors?) and the check that a request fits a
node must therefore read the cluster's *node types*, not only the nodes up now. Ray keeps them
in the GCS (`ClusterConfig`, what Ray Train's own check reads); Ray 2.60's VM autoscaler does not
write them there, so `python -m hpa_ray.cluster up` and cluster.yaml's head command publish them
(`hpa_ray/runtime/publish.py`). Without them (a fixed cluster, an embedded local Ray) the live nodes are
what the cluster offers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hpa_ray.core.config import ConfigError
from hpa_ray.runtime.publish import node_groups, publish

GPU = "GPU"
_COUNTED = ("CPU", "GPU")  # the resources requests name; memory and custom resources are not checked


class ResourceError(ConfigError):
    """A stage asks for a resource bundle that no node (type) of the cluster offers: Ray would
    wait for it forever."""


@dataclass(frozen=True)
class NodeType:
    """One kind of node: its resources (per node) and how many the autoscaler may run."""

    name: str
    resources: dict[str, float] = field(hash=False)
    min_workers: int = 0
    max_workers: int = 0

    def fits(self, bundle: dict[str, float]) -> bool:
        return all(self.resources.get(key, 0) >= amount for key, amount in bundle.items() if amount > 0)

    def describe(self) -> str:
        shown = {k: v for k, v in self.resources.items() if k in _COUNTED}
        return f"{self.name} {format_bundle(shown)}"


def format_bundle(bundle: dict[str, float]) -> str:
    inner = ", ".join(f"{key} {amount:g}" for key, amount in sorted(bundle.items()) if key in _COUNTED)
    return "{" + (inner or "no CPU or GPU") + "}"


def node_types_from_autoscaler_config(config: dict) -> list[NodeType]:
    """The node types of a Ray autoscaler config (cluster.yaml's `available_node_types`); the
    head counts as one node of its type."""
    return [NodeType(*group) for group in node_groups(config)]


# ---------------------------------------------------------------- the running cluster's view


def publish_node_types(gcs_address: str, types: list[NodeType]) -> None:
    """Write `types` into the cluster's GCS (what `published_node_types`, Ray Train and Ray Data read)."""
    publish(gcs_address, [(t.name, t.resources, t.min_workers, t.max_workers) for t in types])


def published_node_types() -> list[NodeType]:
    """The node types the connected cluster's GCS holds ([] when none were published)."""
    from ray._private.state import state

    try:
        config = state.get_cluster_config()
    except Exception:  # noqa: BLE001 - an older GCS or none: fall back to the live nodes
        return []
    if config is None:
        return []
    return [NodeType(g.name, {k: float(v) for k, v in g.resources.items()}, g.min_count, g.max_count)
            for g in config.node_group_configs]  # fmt: skip


def live_nodes() -> list[NodeType]:
    """The nodes up now, each as a node type of one."""
    import ray

    nodes = []
    for node in ray.nodes():
        if node.get("Alive"):
            name = (node.get("Labels") or {}).get("ray.io/node-group") or f"node {node.get('NodeManagerAddress', '?')}"
            nodes.append(NodeType(name, dict(node.get("Resources") or {}), 1, 1))
    return nodes


def offered_node_types() -> list[NodeType]:
    """What the connected cluster can place work on: its published node types, else its live nodes."""
    return published_node_types() or live_nodes()


def reachable_resources() -> dict[str, float]:
    """Per resource, the most the connected cluster has or can grow to: the live total, or the
    node types' maxima when larger (an autoscaling cluster with no GPU worker up yet still
    reaches its GPU node types' GPUs)."""
    import ray

    current = dict(ray.cluster_resources())
    grown: dict[str, float] = {}
    for t in published_node_types():
        for key, amount in t.resources.items():
            grown[key] = grown.get(key, 0.0) + amount * t.max_workers
    return {key: max(current.get(key, 0.0), grown.get(key, 0.0)) for key in {*current, *grown}}


def check_requests(stage: str, requests: dict[str, dict[str, float]], offered: list[NodeType]) -> None:
    """Refuse (ResourceError) a request that no node type in `offered` can hold.

    requests: what one unit of work asks for, by name, e.g. {"training worker": {"CPU": 4, "GPU": 1}}.
    """
    if not offered:
        return
    for what, bundle in requests.items():
        if not any(t.fits(bundle) for t in offered):
            shapes = "; ".join(t.describe() for t in offered)
            raise ResourceError(
                f"{stage}: each {what} asks for {format_bundle(bundle)}, which no node of this cluster offers "
                f"({shapes}); Ray would wait for it forever. Lower the request in the config, or add a node "
                "type that has it to the cluster's config"
            )
