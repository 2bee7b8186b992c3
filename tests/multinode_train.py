"""A fold trained on a simulated 3-node cluster whose Ray Train worker is killed at epoch 2.

Run by tests/e2e/test_multinode.py in a process of its own:
    python tests/multinode_train.py CELLS_DIR FOLDS_CSV RUN_DIR
"""

from __future__ import annotations

import sys

import ray
from ray.cluster_utils import Cluster

from hpa_ray.train.config import TrainConfig
from hpa_ray.train.fit import fit_fold
from tests.helpers import KillWorkerOnce  # PYTHONPATH holds the checkout: the workers import it too


def main() -> None:
    cells, folds, run_dir = sys.argv[1:4]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # the head takes no work
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    cfg = TrainConfig(
        model="tiny",
        epochs=4,
        batch_size=32,
        lr=3e-3,
        cpus_per_worker=0.5,
        patience=3,
        cache_data=False,
    )  # fmt: skip  (streamed: read tasks on both nodes)
    fit_fold(cells, folds, 0, run_dir, cfg, epoch_hooks=(KillWorkerOnce(2),))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main()
