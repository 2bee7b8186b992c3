"""A local autoscaling cluster built from cluster.yaml's own node types (`python -m hpa_ray.cluster up`).

Ray's autoscaler (v2, as `ray up` runs it since Ray 2.50) runs on a head started here, with a
node provider that launches each worker "instance" as a real raylet on this machine
(`provider.LocalNodeProvider`): the same node type names, min/max workers and idle timeout as
on AWS, CPUs scaled down to fit this machine, GPUs kept as logical GPUs (Ray schedules on them;
`torch.cuda` sees none, so the models run on the CPU and say so).

Every process of the cluster (head, autoscaler, worker nodes, their workers, job drivers) runs
in one session that `up` starts, and `down` ends exactly that session: other Ray processes on
the machine, such as an embedded Ray of another program, are left alone (`ray stop` would
stop them all).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from hpa_ray.core.errors import HpaRayError
from hpa_ray.runtime.resources import NodeType, format_bundle, node_types_from_autoscaler_config

FAKE_HEAD_NODE_ID = "f" * 51 + "00000"  # the provider numbers worker nodes from here (…00001, …)
PROVIDER = "hpa_ray.cluster.provider.LocalNodeProvider"
WORKER_OBJECT_STORE_MB = 512  # each worker node's object store (Ray's default is 30% of the RAM, per node)
HEAD_OBJECT_STORE_MB = 512
UPDATE_INTERVAL_S = 1  # the autoscaler's loop; Ray's default 5 s only delays a laptop's scale-up


class ClusterError(HpaRayError, RuntimeError):
    """The local cluster cannot start, is not running, or is already running."""


@dataclass
class LocalCluster:
    """A running local cluster, as `up` recorded it in STATE_DIR/cluster.json."""

    name: str
    session: int  # the session ID of every process of the cluster
    gcs_address: str  # for ray.init(address=…) and `ray status --address`
    dashboard: str  # for RAY_ADDRESS (ray job submit, jobs/*.sh)
    temp_dir: str  # Ray's session files and logs
    state_dir: str
    config: str  # the autoscaler config that was started
    started: float  # time.time()
    node_types: list[dict]

    @classmethod
    def load(cls, name: str) -> LocalCluster:
        path = state_dir(name) / "cluster.json"
        if not path.exists():
            raise ClusterError(f"no local cluster named {name!r} is running (no {path}); start one with "
                               "python -m hpa_ray.cluster up")  # fmt: skip
        return cls(**json.loads(path.read_text()))

    def processes(self) -> list:
        """The cluster's processes: its session, and anything else that names its temp dir."""
        import psutil

        found = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if os.getsid(proc.pid) == self.session or any(self.temp_dir in a for a in proc.info["cmdline"] or []):
                    found.append(proc)
            except (OSError, psutil.Error):
                continue
        return [p for p in found if p.pid != os.getpid()]


def state_dir(name: str) -> Path:
    """Short: Ray's socket paths under it must stay under the OS's 107 characters."""
    return Path(tempfile.gettempdir()) / "hparay" / name


# The longest socket path Ray makes under its temp dir (the session name's date and PID vary).
_LONGEST_SOCKET = "session_2026-12-04_15-48-59_000088_4194304/sockets/dash_MetricsHead"
_MAX_SOCKET_PATH = 107  # AF_UNIX


# ---------------------------------------------------------------- the config


def auto_cpu_scale(types: list[NodeType], cores: int | None = None) -> float:
    """The factor that gives the largest worker type this machine's cores."""
    cores = cores or os.cpu_count() or 1
    largest = max((t.resources.get("CPU", 0) for t in types if t.max_workers > 0 and t.min_workers >= 0), default=0)
    return min(1.0, cores / largest) if largest else 1.0


def scaled_resources(resources: dict, cpu_scale: float) -> dict:
    """A node type's resources on this machine: CPUs scaled (at least 1 where there were any),
    GPUs and custom resources as they are (GPUs become logical)."""
    out = dict(resources)
    if out.get("CPU"):
        out["CPU"] = max(1, math.ceil(out["CPU"] * cpu_scale - 1e-9))
    return out


# cluster.yaml's command and sync lists: a local node runs none of them
_UNUSED_LISTS = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
                 "head_start_ray_commands", "worker_start_ray_commands", "cluster_synced_files", "rsync_exclude",
                 "rsync_filter")  # fmt: skip


def local_autoscaler_config(cluster: dict, gcs_address: str, cpu_scale: float,
                            idle_timeout_minutes: float | None = None) -> dict:  # fmt: skip
    """The fake-multinode autoscaler config for cluster.yaml's dict `cluster`: same node type
    names, min/max workers, upscaling speed; resources scaled (`scaled_resources`)."""
    head = cluster["head_node_type"]
    types = {}
    for name, spec in cluster["available_node_types"].items():
        resources = spec.get("resources") or {}
        if name != head and not resources:
            raise ClusterError(f"node type {name!r} states no resources in its config; the local cluster needs "
                               "them (e.g. resources: {CPU: 8, GPU: 1})")  # fmt: skip
        local = scaled_resources(resources, cpu_scale)
        if name == head:
            types[name] = {"resources": local, "node_config": {}, "max_workers": 0}
        else:
            local["object_store_memory"] = WORKER_OBJECT_STORE_MB * 2**20
            types[name] = {"resources": local, "node_config": {}, "min_workers": spec.get("min_workers", 0),
                           "max_workers": spec.get("max_workers", 0)}  # fmt: skip
    return {
        "cluster_name": cluster["cluster_name"],
        "max_workers": cluster.get("max_workers", 8),
        "upscaling_speed": cluster.get("upscaling_speed", 1.0),
        "idle_timeout_minutes": cluster.get("idle_timeout_minutes", 5)
        if idle_timeout_minutes is None
        else idle_timeout_minutes,
        "provider": {
            "type": "external",
            "module": PROVIDER,
            "gcs_address": gcs_address,
            "head_node_id": FAKE_HEAD_NODE_ID,
            "head_node_type": head,
            "launch_multiple": True,
            "disable_node_updaters": True,  # nothing to install: the nodes share this machine's Python
            "disable_launch_config_check": True,
        },
        "auth": {},
        "available_node_types": types,
        "head_node_type": head,
        **{key: [] for key in _UNUSED_LISTS},
        "file_mounts": {},
        "file_mounts_sync_continuously": False,
    }


# ---------------------------------------------------------------- up / down


def up(cluster_yaml: str | Path, name: str | None = None, cpu_scale: float | None = None,
       idle_timeout_minutes: float | None = None, dashboard_port: int | None = None) -> LocalCluster:  # fmt: skip
    """Start the head of a local autoscaling cluster; workers come when work asks for them."""
    import ray._private.services as services

    from hpa_ray.runtime.resources import publish_node_types
    from hpa_ray.runtime.session import free_port

    cluster = yaml.safe_load(Path(cluster_yaml).read_text())
    name = name or f"{cluster['cluster_name']}-local"
    directory = state_dir(name)
    if len(str(directory / "r" / _LONGEST_SOCKET)) > _MAX_SOCKET_PATH:
        raise ClusterError(f"the cluster name {name!r} is too long for Ray's socket paths under {directory}; "
                           "give a shorter --name")  # fmt: skip
    _refuse_if_running(name, directory)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    scale = cpu_scale or auto_cpu_scale(node_types_from_autoscaler_config(cluster))
    ip = services.get_node_ip_address()  # every node's address: one cluster, one address
    port = free_port()
    gcs = f"{ip}:{port}"
    config = local_autoscaler_config(cluster, gcs, scale, idle_timeout_minutes)
    config_path = directory / "autoscaler.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    dashboard_port = _port_or_free(8265) if dashboard_port is None else dashboard_port or free_port()
    temp_dir = directory / "r"  # short: see _LONGEST_SOCKET
    head = config["available_node_types"][config["head_node_type"]]["resources"]
    _ensure_auth_token()
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "RAY_enable_autoscaler_v2": "1", "RAY_AUTH_MODE": auth_mode(),
           "RAY_CLOUD_INSTANCE_ID": FAKE_HEAD_NODE_ID, "RAY_NODE_TYPE_NAME": config["head_node_type"],
           "AUTOSCALER_UPDATE_INTERVAL_S": str(UPDATE_INTERVAL_S), "RAY_USAGE_STATS_ENABLED": "0",
           # Ray's own actors find their cluster by RAY_ADDRESS before looking for running GCS
           # processes, which would find any other Ray on this machine too.
           "RAY_ADDRESS": gcs,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # fmt: skip
    # Every port Ray would otherwise take at a fixed default on its own free one: another Ray on
    # this machine may hold them (its dashboard agent's 52365 among them).
    ports = [f"--{flag}={free_port()}" for flag in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                    "runtime-env-agent-port", "metrics-export-port",
                                                    "ray-client-server-port")]  # fmt: skip
    command = [str(Path(sys.executable).parent / "ray"), "start", "--head", f"--port={port}",
               f"--num-cpus={int(head.get('CPU', 0))}", f"--num-gpus={int(head.get('GPU', 0))}",
               f"--object-store-memory={HEAD_OBJECT_STORE_MB * 2**20}", f"--temp-dir={temp_dir}",
               f"--autoscaling-config={config_path}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
               f"--dashboard-port={dashboard_port}", "--disable-usage-stats", *ports]  # fmt: skip
    log = directory / "start.log"
    with open(log, "w") as out:
        started = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        code = started.wait(timeout=180)
    record = LocalCluster(name, started.pid, gcs, f"http://127.0.0.1:{dashboard_port}", str(temp_dir),
                          str(directory), str(config_path), time.time(),
                          [asdict(t) for t in node_types_from_autoscaler_config(config)])  # fmt: skip
    (directory / "cluster.json").write_text(json.dumps(asdict(record), indent=2) + "\n")
    if code != 0:
        _kill(record)
        raise ClusterError(f"ray start failed (exit {code}); its output: {log}\n{log.read_text()[-2000:]}")
    publish_node_types(gcs, node_types_from_autoscaler_config(config))
    return record


def auth_mode() -> str:
    """Ray's token authentication, on unless the user turned it off (RAY_AUTH_MODE=disabled): the
    cluster's ports listen on every interface, and whoever reaches them can run code."""
    return os.environ.get("RAY_AUTH_MODE", "token")


def _ensure_auth_token() -> None:
    """A token for the cluster (Ray keeps it in ~/.ray/auth_token; made once, then reused)."""
    if auth_mode() == "token":
        ray = Path(sys.executable).parent / "ray"
        subprocess.run([str(ray), "get-auth-token", "--generate"], capture_output=True, check=True, timeout=60)


def _refuse_if_running(name: str, directory: Path) -> None:
    if not (directory / "cluster.json").exists():
        return
    existing = LocalCluster.load(name)
    if existing.processes():
        raise ClusterError(f"the local cluster {name!r} is already running ({existing.dashboard}); "
                           f"stop it first: python -m hpa_ray.cluster down --name {name}")  # fmt: skip


def _port_or_free(port: int) -> int:
    import socket

    from hpa_ray.runtime.session import free_port

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            return free_port()


def down(name: str) -> int:
    """Stop the local cluster `name` (its processes only) and remove its files; → processes stopped."""
    cluster = LocalCluster.load(name)
    stopped = _kill(cluster)
    shutil.rmtree(cluster.state_dir, ignore_errors=True)
    return stopped


def _kill(cluster: LocalCluster) -> int:
    """SIGTERM, then SIGKILL what is left after 5 s; the raylets' workers may be forked meanwhile,
    so the sweep repeats until nothing of the cluster is left."""
    import psutil

    stopped: set[int] = set()
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0), (signal.SIGKILL, 5.0)):
        procs = cluster.processes()
        if not procs:
            break
        for proc in procs:
            try:
                proc.send_signal(sig)
                stopped.add(proc.pid)
            except psutil.Error:
                continue
        psutil.wait_procs(procs, timeout=wait)
    return len(stopped)


def describe(cluster: LocalCluster) -> str:
    """The lines `up` prints: where the cluster is and what it may grow to."""
    types = [NodeType(**t) for t in cluster.node_types]
    workers = [f"{t.name} 0-{t.max_workers} x {format_bundle(t.resources)}" for t in types if t.max_workers and
               t.name != _head_name(cluster)]  # fmt: skip
    config = yaml.safe_load(Path(cluster.config).read_text())
    return "\n".join([
        f"cluster {cluster.name}: head up at {cluster.gcs_address}, dashboard {cluster.dashboard}",
        f"  worker node types (logical GPUs): {'; '.join(workers)}",
        f"  workers start when work asks for them and stop after {config['idle_timeout_minutes']:g} idle minute(s)",
        f"  submit jobs with: export RAY_ADDRESS={cluster.dashboard} RAY_AUTH_MODE={auth_mode()}",
        f"  watch it: python -m hpa_ray.cluster status --name {cluster.name}",
        f"  stop it:  python -m hpa_ray.cluster down --name {cluster.name}",
        f"  Ray's logs: {cluster.temp_dir}/session_latest/logs",
    ])  # fmt: skip


def _head_name(cluster: LocalCluster) -> str:
    return yaml.safe_load(Path(cluster.config).read_text())["head_node_type"]
