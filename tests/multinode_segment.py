"""Segmentation on a simulated 3-node cluster, one worker node removed mid-run.

Run by tests/e2e/test_multinode.py in a process of its own (a process joins one Ray cluster):
    python tests/multinode_segment.py IMAGES LABELS OUT REPORT_JSON
Writes REPORT_JSON: the nodes that cut cells and whether a node was removed while images were
still left (stdout carries the cluster's own logs).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import ray
from ray.cluster_utils import Cluster

from hpa_ray.runtime.sink import MANIFEST_DIR
from hpa_ray.segment.config import SegmentConfig
from hpa_ray.segment.stage import run_segment


def main() -> None:
    images, labels, out, report = sys.argv[1:5]
    # A head that takes no tasks (as cluster.yaml's) and two one-CPU worker nodes.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    removed = {}

    def remove_a_worker_once_it_has_cut_cells():
        parts, victim = Path(out) / MANIFEST_DIR, workers[1].node_id
        deadline = time.time() + 300
        while time.time() < deadline:
            done = [pd.read_parquet(p) for p in parts.glob("part-*.parquet")] if parts.exists() else []
            if done and victim in set(pd.concat(done).node):
                removed["parts_before"] = len(done)
                # Evidence of the spread: a part the victim committed may be rewritten later by
                # the survivor (Ray re-runs a task whose result died with the node).
                removed["nodes_before"] = sorted(set(pd.concat(done).node))
                cluster.remove_node(workers[1], allow_graceful=False)
                removed["at"] = time.time()
                return
            time.sleep(0.05)

    killer = threading.Thread(target=remove_a_worker_once_it_has_cut_cells, daemon=True)
    killer.start()
    cfg = SegmentConfig(crop_size=32, images_per_block=1)
    result = run_segment(images, out, cfg, labels)
    killer.join(timeout=5)
    Path(report).write_text(json.dumps({"nodes": sorted(set(result.manifest.node)), "removed": removed,
                                        "worker_ids": [w.node_id for w in workers]}))  # fmt: skip
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main()
