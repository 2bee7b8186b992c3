"""`python -m hpa_ray.cluster check`: the stage presets' resource requests against a cluster
config's node types, before anything runs (a request no node type offers waits forever).

A preset's stage is its file name (conf/cluster/train.yaml is a TrainConfig). `auto` GPU settings
resolve as on that cluster: GPUs are used when some node type has them.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from hpa_ray.core.config import ConfigError, load_config
from hpa_ray.folds.config import FoldsConfig
from hpa_ray.predict.config import PredictConfig
from hpa_ray.runtime.resources import NodeType, check_requests, format_bundle, node_types_from_autoscaler_config
from hpa_ray.segment.config import SegmentConfig
from hpa_ray.train.config import TrainConfig
from hpa_ray.tune.config import TuneConfig


def _gpu(setting, has_gpus: bool) -> bool:
    return has_gpus if setting == "auto" else bool(setting)


def _segment(cfg: SegmentConfig, has_gpus: bool) -> dict:
    from hpa_ray.segment.backends import gpu_use
    from hpa_ray.segment.stage import resource_requests

    use = gpu_use(cfg)
    return resource_requests(cfg, use == "always" or (use == "if_available" and has_gpus))


def _train(cfg: TrainConfig, has_gpus: bool) -> dict:
    from hpa_ray.train.fit import worker_resources

    return {"training worker": worker_resources(cfg, _gpu(cfg.use_gpu, has_gpus))}


def _tune(cfg: TuneConfig, has_gpus: bool) -> dict:
    return _train(cfg.train, has_gpus)


def _predict(cfg: PredictConfig, has_gpus: bool) -> dict:
    from hpa_ray.predict.run import classifier_request

    return classifier_request(cfg) if _gpu(cfg.use_gpu, has_gpus) else {}


def _folds(cfg: FoldsConfig, has_gpus: bool) -> dict:
    return {}  # the folds are made in the job's driver


STAGES = {"segment": (SegmentConfig, _segment), "folds": (FoldsConfig, _folds), "train": (TrainConfig, _train),
          "tune": (TuneConfig, _tune), "predict": (PredictConfig, _predict)}  # fmt: skip


def cluster_node_types(cluster_yaml: str | Path, local: bool = False) -> list[NodeType]:
    """The node types of cluster_yaml, or (local) as `python -m hpa_ray.cluster up` scales them here."""
    cluster = yaml.safe_load(Path(cluster_yaml).read_text())
    if local:
        from hpa_ray.cluster.local import auto_cpu_scale, local_autoscaler_config

        scale = auto_cpu_scale(node_types_from_autoscaler_config(cluster))
        cluster = local_autoscaler_config(cluster, "127.0.0.1:0", scale)
    return node_types_from_autoscaler_config(cluster)


def check_presets(cluster_yaml: str | Path, presets: list[str], local: bool = False) -> list[str]:
    """One line per preset: its requests and the node types that hold them; ResourceError
    (a ConfigError) for the first request that none holds."""
    types = [t for t in cluster_node_types(cluster_yaml, local) if t.max_workers > 0]
    has_gpus = any(t.resources.get("GPU", 0) > 0 for t in types)
    lines = []
    for preset in presets:
        stage = Path(preset).stem
        if stage not in STAGES:
            raise ConfigError(f"{preset}: the file name names no stage ({', '.join(STAGES)})")
        section, requests_of = STAGES[stage]
        requests = requests_of(load_config(section, [preset]), has_gpus)
        check_requests(preset, requests, types)
        fits = [f"{what} {format_bundle(bundle)} on {', '.join(t.name for t in types if t.fits(bundle))}"
                for what, bundle in requests.items()]  # fmt: skip
        lines.append(f"{preset}: ok: {'; '.join(fits) or 'no request of its own'}")
    return lines
