"""The local autoscaling cluster's config (`python -m hpa_ray.cluster`) and the stages' resource
checks, without a cluster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hpa_ray.cluster.local import auto_cpu_scale, local_autoscaler_config
from hpa_ray.cluster.timeline import parse_event
from hpa_ray.runtime.resources import NodeType, ResourceError, check_requests, node_types_from_autoscaler_config

ROOT = Path(__file__).resolve().parents[2]


CLUSTER = yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_the_local_config_keeps_cluster_yaml_node_types_and_scales_their_cpus():
    types = {t.name: t for t in node_types_from_autoscaler_config(CLUSTER)}
    assert auto_cpu_scale(list(types.values()), cores=2) == 2 / 32  # the largest worker type gets 2 cores
    local = local_autoscaler_config(CLUSTER, "127.0.0.1:1234", cpu_scale=2 / 32, idle_timeout_minutes=0.5)
    nodes = local["available_node_types"]
    assert set(nodes) == set(CLUSTER["available_node_types"]) and local["head_node_type"] == CLUSTER["head_node_type"]
    assert nodes["gpu_worker"]["resources"]["GPU"] == types["gpu_worker"].resources["GPU"] == 1, "logical GPUs kept"
    assert nodes["gpu_worker"]["resources"]["CPU"] == 1 and nodes["cpu_worker"]["resources"]["CPU"] == 2
    assert nodes["head"]["resources"] == {"CPU": 0}, "the head takes no work, as on AWS"
    for name in ("gpu_worker", "cpu_worker"):
        assert (nodes[name]["min_workers"], nodes[name]["max_workers"]) == (
            CLUSTER["available_node_types"][name]["min_workers"],
            CLUSTER["available_node_types"][name]["max_workers"],
        )
    assert local["max_workers"] == CLUSTER["max_workers"] and local["idle_timeout_minutes"] == 0.5
    assert local["provider"]["module"] == "hpa_ray.cluster.provider.LocalNodeProvider"
    assert local["provider"]["gcs_address"] == "127.0.0.1:1234"


def test_a_node_type_without_resources_is_refused():
    from hpa_ray.cluster.local import ClusterError

    cluster = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    cluster["available_node_types"]["gpu_worker"]["resources"] = {}
    with pytest.raises(ClusterError, match="'gpu_worker' states no resources"):
        local_autoscaler_config(cluster, "127.0.0.1:1", 0.25)


def test_autoscaler_event_messages_are_parsed():
    assert parse_event("Adding 2 node(s) of type gpu_worker.") == {
        "action": "add", "count": 2, "node_type": "gpu_worker", "reason": ""}  # fmt: skip
    assert parse_event("Removing 1 nodes of type cpu_worker (idle).") == {
        "action": "remove", "count": 1, "node_type": "cpu_worker", "reason": "idle"}  # fmt: skip
    assert parse_event("Resized to 2 CPUs, 1 GPUs.") is None


def test_a_request_no_node_type_offers_is_refused_with_what_is_offered():
    offered = [NodeType("head", {}), NodeType("gpu_worker", {"CPU": 1, "GPU": 1}, 0, 4)]
    check_requests("train", {"training worker": {"CPU": 1, "GPU": 1}}, offered)
    with pytest.raises(ResourceError) as refused:
        check_requests("train", {"training worker": {"CPU": 4, "GPU": 1}}, offered)
    assert "training worker asks for {CPU 4, GPU 1}" in str(refused.value)
    assert "gpu_worker {CPU 1, GPU 1}" in str(refused.value) and "forever" in str(refused.value)


def _check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hpa_ray.cluster", "check", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_the_presets_fit_the_node_types_they_are_for_and_a_greedy_one_is_refused(tmp_path):
    cluster = _check(*sorted(str(p.relative_to(ROOT)) for p in (ROOT / "conf" / "cluster").glob("*.yaml")))
    assert cluster.returncode == 0, cluster.stderr
    assert "conf/cluster/train.yaml: ok: training worker {CPU 4, GPU 1} on gpu_worker" in cluster.stdout
    local = _check("--local", *sorted(str(p) for p in (ROOT / "conf" / "local-cluster").glob("*.yaml")))
    assert local.returncode == 0 and local.stdout.count(": ok:") == 5, local.stdout + local.stderr
    greedy = tmp_path / "train.yaml"
    greedy.write_text(f"base: {ROOT}/conf/cluster/train.yaml\ngpus_per_worker: 2\n")
    refused = _check(str(greedy))
    assert refused.returncode == 2 and refused.stderr.startswith(f"error: {greedy}: each training worker asks for")
    assert "{CPU 4, GPU 2}" in refused.stderr and "gpu_worker {CPU 8, GPU 1}" in refused.stderr


def test_down_with_no_cluster_running_stops_nothing_and_succeeds_and_status_says_start_one():
    # In a process of its own: the cluster CLI turns on Ray's token authentication for its process
    # (RAY_AUTH_MODE), which would reach every later test's Ray in this one.
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "hpa_ray.cluster", *args], capture_output=True, text=True)

    down = cli("down", "--name", "never-started")
    assert down.returncode == 0 and "cluster never-started: not running; nothing to stop" in down.stdout
    status = cli("status", "--name", "never-started")
    assert status.returncode == 2 and "start one with python -m hpa_ray.cluster up" in status.stderr
