"""The embedded local Ray that every stage starts (hpa_ray._ray.init_ray)."""

from __future__ import annotations

import os
import sys

from tests.helpers import run_group

# Another Ray runs beside the one under test; an actor of the tested one asks Ray's state API
# about an actor, as Ray Train's placement-group cleaner does.
SCRIPT = """
import subprocess, sys
other = subprocess.Popen([sys.executable, "-c", "import ray, time; ray.init(num_cpus=1, include_dashboard=False); "
                          "print('up', flush=True); time.sleep(300)"], stdout=subprocess.PIPE, text=True)
try:
    assert other.stdout.readline().strip() == "up"
    import ray
    from hpa_ray import _ray
    _ray.init_ray(num_cpus=1)

    @ray.remote
    class Probe:
        def state_of(self, actor_id):
            from ray.util.state import get_actor
            return get_actor(actor_id, timeout=30).state

    probe = Probe.remote()
    print("state:", ray.get(probe.state_of.remote(probe._actor_id.hex())))
finally:
    other.kill()
"""


def test_ray_internals_find_their_cluster_beside_another_ray():
    """Without the address in the workers' environment, Ray's lookup fails with "Found multiple
    active Ray instances", Ray Train's placement-group cleaner dies, and an ASHA-stopped trial
    keeps its CPUs (seen: the demo's fold training then waited forever)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = run_group([sys.executable, "-c", SCRIPT], timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "state: ALIVE" in out.stdout
