"""What the local cluster's autoscaler did, read back from Ray: its nodes by type now
(`status_text`), its own events and every node's life (`timeline`), and a node's loss
(`kill_node`, as a cloud preempts an instance).
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from pathlib import Path

from hpa_ray.cluster.local import ClusterError, LocalCluster
from hpa_ray.cluster.provider import NODE_GROUP_LABEL

# "Adding 2 node(s) of type gpu_worker." / "Removing 1 nodes of type gpu_worker (idle)."
_EVENT = re.compile(r"^(Adding|Removing) (\d+) nodes?(?:\(s\))? of type (\S+?)\.?(?: \((.*)\))?\.?$")


def status_text(cluster: LocalCluster) -> str:
    """Nodes by type and state, pending launches and demands (Ray's autoscaler v2 state)."""
    from ray.autoscaler.v2.sdk import get_cluster_status

    status = get_cluster_status(cluster.gcs_address)
    lines = [f"cluster {cluster.name} ({cluster.dashboard}):"]
    for label, nodes in (("active", status.active_nodes), ("idle", status.idle_nodes)):
        counts = _by_type(n.ray_node_type_name for n in nodes)
        lines.append(f"  {label}: {counts or 'none'}")
    pending = _by_type(p.ray_node_type_name for p in status.pending_launches) or "none"
    lines.append(f"  launching: {pending}")
    failed = _by_type(n.ray_node_type_name for n in status.failed_nodes)
    lines.append(f"  terminated so far: {failed or 'none'}")
    demands = [f"{d.bundles_by_count}" for d in status.resource_demands.ray_task_actor_demand]
    demands += [f"placement group {d.bundles_by_count}" for d in status.resource_demands.placement_group_demand]
    lines.append(f"  waiting for resources: {'; '.join(demands) if demands else 'nothing'}")
    return "\n".join(lines)


def _by_type(names) -> str:
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return ", ".join(f"{n} {name}" for name, n in sorted(counts.items()))


def parse_event(message: str) -> dict | None:
    """An autoscaler event's message → {"action": "add"|"remove", "count", "node_type", "reason"}."""
    match = _EVENT.match(message.strip())
    if not match:
        return None
    action, count, node_type, reason = match.groups()
    return {"action": "add" if action == "Adding" else "remove", "count": int(count), "node_type": node_type,
            "reason": reason or ""}  # fmt: skip


def autoscaler_events(cluster: LocalCluster) -> list[dict]:
    """The autoscaler's own events that add or remove nodes, from the session's event log
    (what `ray list cluster-events` serves), times in seconds from the cluster's start."""
    path = Path(cluster.temp_dir) / "session_latest" / "logs" / "events" / "event_AUTOSCALER.log"
    events = []
    for line in path.read_text().splitlines() if path.exists() else []:
        event = json.loads(line)
        parsed = parse_event(event.get("message", ""))
        if parsed:
            at = float(event["timestamp"])
            events.append({"t_s": round(at - cluster.started, 1),
                           "time": datetime.fromtimestamp(at).isoformat(timespec="seconds"), **parsed})  # fmt: skip
    return sorted(events, key=lambda e: e["t_s"])


def timeline(cluster: LocalCluster) -> dict:
    """The autoscaler's own events (nodes added and removed, by type, with times) and each
    node's life (type, start, end and why) since the cluster started; times in seconds from its start."""
    from ray.util.state import list_nodes

    nodes = []
    for node in list_nodes(address=cluster.dashboard, detail=True, limit=10_000, raise_on_missing_output=False):
        start, end = node.start_time_ms / 1000, node.end_time_ms / 1000
        nodes.append({"node_id": node.node_id, "node_type": (node.labels or {}).get(NODE_GROUP_LABEL, ""),
                      "state": node.state, "started_s": round(start - cluster.started, 1),
                      "ended_s": round(end - cluster.started, 1) if end else None,
                      "end_reason": node.state_message or ""})  # fmt: skip
    nodes.sort(key=lambda n: n["started_s"])
    return {"cluster": cluster.name, "started": datetime.fromtimestamp(cluster.started).isoformat(timespec="seconds"),
            "recorded_s": round(time.time() - cluster.started, 1), "node_types": cluster.node_types,
            "events": autoscaler_events(cluster), "nodes": nodes}  # fmt: skip


def kill_node(cluster: LocalCluster, node_type: str, node_id: str | None = None, running: str | None = None) -> str:
    """Kill one worker node of `node_type` at once (its raylet, agents and workers), as a cloud
    terminates a preempted instance: no drain, no goodbye. `node_id` names the node; `running`
    an actor class one of whose live actors it hosts (e.g. RayTrainWorker); else the busiest is
    chosen (most GPUs, then CPUs in use). → its node ID."""
    import psutil

    node_id = node_id or (_running(cluster, node_type, running) if running else _busiest(cluster, node_type))
    raylets = [p for p in cluster.processes() if f"--node_id={node_id}" in (p.info.get("cmdline") or [])]
    if not raylets:
        raise ClusterError(f"no raylet of node {node_id} is running in {cluster.name}")
    victims = [child for raylet in raylets for child in raylet.children(recursive=True)] + raylets
    for proc in victims:
        try:
            proc.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(victims, timeout=3)  # the autoscaler's monitor reaps them; they may stay zombies until then
    return node_id


def _running(cluster: LocalCluster, node_type: str, actor_class: str) -> str:
    from ray.util.state import list_actors, list_nodes

    of_type = {n.node_id for n in list_nodes(address=cluster.dashboard, detail=True, raise_on_missing_output=False)
               if n.state == "ALIVE" and (n.labels or {}).get(NODE_GROUP_LABEL) == node_type}  # fmt: skip
    actors = list_actors(address=cluster.dashboard, filters=[("class_name", "=", actor_class), ("state", "=", "ALIVE")],
                         raise_on_missing_output=False)  # fmt: skip
    hosts = sorted({a.node_id for a in actors} & of_type)
    if not hosts:
        raise ClusterError(f"no {node_type} node runs a live {actor_class} actor in {cluster.name}")
    return hosts[0]


def _busiest(cluster: LocalCluster, node_type: str) -> str:
    from ray.autoscaler.v2.sdk import get_cluster_status

    status = get_cluster_status(cluster.gcs_address)
    nodes = [n for n in status.active_nodes + status.idle_nodes if n.ray_node_type_name == node_type]
    if not nodes:
        raise ClusterError(f"no {node_type} node is up in {cluster.name}")

    def used(node, resource: str) -> float:
        usage = node.resource_usage.usage if node.resource_usage else []
        return sum(u.used for u in usage if u.resource_name == resource)

    return max(nodes, key=lambda n: (used(n, "GPU"), used(n, "CPU"))).node_id
