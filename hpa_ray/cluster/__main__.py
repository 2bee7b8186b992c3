"""`python -m hpa_ray.cluster`: the cluster on your laptop, and checks of what the stages ask of a cluster.

    up         start a local autoscaling cluster from cluster.yaml's node types (workers from zero)
    down       stop that cluster (only its processes; other Ray processes are left alone)
    status     its nodes by type (active, idle, pending, terminated) and pending demands
    address    its dashboard address, for RAY_ADDRESS (ray job submit, jobs/*.sh)
    timeline   the autoscaler's events (nodes added and removed, by type, with times) as JSON
    kill-node  terminate one worker node of a type, as a cloud preempts an instance
    check      the cluster presets' resource requests against a cluster config's node types
    sample-data  a small synthetic set and stand-in U-Net files in jobs/pipeline.sh's layout

Exit status: 0 done, 2 unusable arguments or config (one `error:` line), 1 the cluster failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

DEFAULT_CONFIG = "cluster.yaml"
# The local cluster runs with Ray's token authentication (hpa_ray.cluster.local.auth_mode); this
# process's Ray clients (status, timeline, kill-node, up's own calls) must send the token too.
os.environ.setdefault("RAY_AUTH_MODE", "token")


def _name_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", help="the local cluster's name (default: cluster.yaml's cluster_name + '-local')")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hpa_ray.cluster", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start a local autoscaling cluster from cluster.yaml's node types")
    up.add_argument("--config", default=DEFAULT_CONFIG, help="the Ray autoscaler config (default cluster.yaml)")
    _name_flag(up)
    up.add_argument("--cpu-scale", type=float, help="CPUs per node = the type's CPUs x this (default: the largest "
                    "worker type gets this machine's cores)")  # fmt: skip
    up.add_argument(
        "--idle-timeout-minutes",
        type=float,
        default=1.0,
        help="a worker idle this long is removed (default 1; cluster.yaml's own value is for a cloud)",
    )
    up.add_argument(
        "--dashboard-port", type=int, help="default 8265, or a free port when that one is taken; 0: a free port"
    )
    for command, text in (("down", "stop the local cluster"), ("status", "its nodes and demands"),
                          ("address", "print its dashboard address (for RAY_ADDRESS)")):  # fmt: skip
        _name_flag(commands.add_parser(command, help=text))
    timeline = commands.add_parser("timeline", help="the autoscaler's events as JSON")
    _name_flag(timeline)
    timeline.add_argument("--out", help="write the JSON here (default: print it)")
    kill = commands.add_parser("kill-node", help="terminate one worker node of a type (as a preemption)")
    _name_flag(kill)
    kill.add_argument("node_type", help="a worker node type, e.g. gpu_worker")
    kill.add_argument("--node-id", help="the node to kill (default: the busiest node of the type)")
    kill.add_argument(
        "--running",
        metavar="ACTOR_CLASS",
        help="a node that runs a live actor of this class, e.g. RayTrainWorker (a fold's worker)",
    )
    sample = commands.add_parser("sample-data", help="a small synthetic set in jobs/pipeline.sh's layout")
    sample.add_argument("root", help="the directory to write (ROOT of jobs/pipeline.sh)")
    sample.add_argument("--train", type=int, default=12, help="training images (default 12)")
    sample.add_argument("--test", type=int, default=4, help="test images (default 4)")
    sample.add_argument("--size", type=int, default=1024, help="image side in px (default 1024)")
    sample.add_argument("--seed", type=int, default=0)
    check = commands.add_parser("check", help="presets' resource requests against a cluster config's node types")
    check.add_argument("presets", nargs="+", help="stage configs (conf/cluster/*.yaml); the stage is the file's name")
    check.add_argument("--config", default=DEFAULT_CONFIG, help="the Ray autoscaler config (default cluster.yaml)")
    check.add_argument("--local", action="store_true", help="against the node types as the local cluster scales them")
    return parser


def _name(args) -> str:
    if args.name:
        return args.name
    import yaml

    config = Path(getattr(args, "config", None) or DEFAULT_CONFIG)
    if not config.exists():
        raise FileNotFoundError(f"{config} not found: run from the repository root, or give --name")
    return f"{yaml.safe_load(config.read_text())['cluster_name']}-local"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from hpa_ray.runtime import cli

    return cli.guarded(lambda: _COMMANDS[args.command](args), also=(FileNotFoundError,))


def _up(args) -> int:
    from hpa_ray.cluster.local import describe, up

    if not Path(args.config).exists():
        raise FileNotFoundError(f"{args.config} not found")
    print(f"cluster: starting a local autoscaling cluster from {args.config} …", flush=True)
    cluster = up(args.config, args.name, args.cpu_scale, args.idle_timeout_minutes, args.dashboard_port)
    print(describe(cluster))
    return 0


def _down(args) -> int:
    from hpa_ray.cluster.local import ClusterError, down

    name = _name(args)
    try:
        stopped = down(name)
    except ClusterError:  # none running (LocalCluster.load): no error, cleanup scripts call it anyway
        print(f"cluster {name}: not running; nothing to stop")
        return 0
    print(f"cluster {name}: stopped ({stopped} processes)")
    return 0


def _status(args) -> int:
    from hpa_ray.cluster.local import LocalCluster
    from hpa_ray.cluster.timeline import status_text

    print(status_text(LocalCluster.load(_name(args))))
    return 0


def _address(args) -> int:
    from hpa_ray.cluster.local import LocalCluster

    print(LocalCluster.load(_name(args)).dashboard)
    return 0


def _timeline(args) -> int:
    from hpa_ray.cluster.local import LocalCluster
    from hpa_ray.cluster.timeline import timeline

    record = timeline(LocalCluster.load(_name(args)))
    text = json.dumps(record, indent=2) + "\n"
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"cluster: {len(record['events'])} autoscaler events → {args.out}")
    else:
        print(text, end="")
    return 0


def _kill_node(args) -> int:
    from hpa_ray.cluster.local import LocalCluster
    from hpa_ray.cluster.timeline import kill_node

    node = kill_node(LocalCluster.load(_name(args)), args.node_type, args.node_id, args.running)
    print(f"cluster: terminated {args.node_type} node {node} (its raylet and workers); the autoscaler replaces it "
          "if work still asks for it")  # fmt: skip
    return 0


def _check(args) -> int:
    from hpa_ray.cluster.presets import check_presets

    for line in check_presets(args.config, args.presets, local=args.local):
        print(line)
    return 0


def _sample_data(args) -> int:
    from hpa_ray.cluster.sample import make_sample

    root = make_sample(args.root, args.train, args.test, args.size, args.seed)
    print(f"cluster: {args.train} training and {args.test} test images ({args.size} px) and stand-in U-Nets → {root}")
    print(f"  run the pipeline: HPA_RAY_PRESETS=conf/local-cluster HPA_RAY_MODELS={root.resolve()}/models "
          f"jobs/pipeline.sh {root.resolve()}")  # fmt: skip
    return 0


_COMMANDS = {"up": _up, "down": _down, "status": _status, "address": _address, "timeline": _timeline,
             "kill-node": _kill_node, "check": _check, "sample-data": _sample_data}  # fmt: skip

if __name__ == "__main__":
    sys.exit(main())
