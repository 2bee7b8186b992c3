"""The node provider of the local autoscaling cluster (`python -m hpa_ray.cluster up`).

Built on Ray's fake multi-node provider: each worker "instance" the autoscaler launches is a
real raylet on this machine with its node type's resources (logical CPUs and GPUs). What this
subclass changes, so that the nodes behave like separate machines where it matters:
- the node type names are the config's own: the head is tagged with the config's head type (the
  parent says `ray.head.default`), a worker's `ray.io/node-group` label is its type (the parent
  lets it inherit the head's from the autoscaler's environment);
- each node has a runtime-env directory of its own: the nodes share one session directory, and
  a node that is removed deletes its runtime-env files, which were also the running jobs' working
  directories (seen: a job's driver lost its working directory when an idle worker was removed).
"""

from __future__ import annotations

import copy
import json

import ray
import ray._private.ray_constants as ray_constants
from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider
from ray.autoscaler.tags import (
    NODE_KIND_WORKER,
    STATUS_UP_TO_DATE,
    TAG_RAY_NODE_KIND,
    TAG_RAY_NODE_NAME,
    TAG_RAY_NODE_STATUS,
    TAG_RAY_USER_NODE_TYPE,
)

NODE_GROUP_LABEL = "ray.io/node-group"


class LocalNodeProvider(FakeMultiNodeProvider):
    def __init__(self, provider_config: dict, cluster_name: str):
        super().__init__(provider_config, cluster_name)
        head_type = provider_config.get("head_node_type")
        if head_type:
            self._nodes[self._head_node_id]["tags"][TAG_RAY_USER_NODE_TYPE] = head_type

    def _create_node_with_resources_and_labels(self, node_config, tags, count, resources, labels):
        resources = copy.deepcopy(resources)
        with self.lock:
            node_type = tags[TAG_RAY_USER_NODE_TYPE]
            node_id = self._next_hex_node_id()
            labels = {**(labels or {}), NODE_GROUP_LABEL: node_type}
            params = ray._private.parameter.RayParams(
                min_worker_port=0,
                max_worker_port=0,
                dashboard_port=None,
                dashboard_agent_listen_port=0,
                num_cpus=resources.pop("CPU", 0),
                num_gpus=resources.pop("GPU", 0),
                object_store_memory=resources.pop("object_store_memory", None),
                resources=resources,
                labels=labels,
                redis_address=self._gcs_address,
                gcs_address=self._gcs_address,
                runtime_env_dir_name=f"runtime_resources_{node_id[-5:]}",
                env_vars={
                    "RAY_OVERRIDE_NODE_ID_FOR_TESTING": node_id,
                    "RAY_CLOUD_INSTANCE_ID": node_id,
                    "RAY_NODE_TYPE_NAME": node_type,
                    ray_constants.RESOURCES_ENVIRONMENT_VARIABLE: json.dumps(resources),
                    ray_constants.LABELS_ENVIRONMENT_VARIABLE: json.dumps(labels),
                },
            )
            node = ray._private.node.Node(params, head=False, shutdown_at_exit=False, spawn_reaper=False)
            self._nodes[node_id] = {
                "tags": {TAG_RAY_NODE_KIND: NODE_KIND_WORKER, TAG_RAY_USER_NODE_TYPE: node_type,
                         TAG_RAY_NODE_NAME: node_id, TAG_RAY_NODE_STATUS: STATUS_UP_TO_DATE, **tags},
                "node": node,
            }  # fmt: skip
