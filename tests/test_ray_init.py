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


DASHBOARD = """
import sys
import ray
from ray._private.worker import get_dashboard_url
from hpa_ray import _ray
if sys.argv[1] == "cli":
    _ray.no_dashboard_unless_asked()  # what python -m hpa_ray.segment / predict do
_ray.init_ray(num_cpus=1)
print("dashboard:", bool(get_dashboard_url()))
"""


def test_a_local_ray_has_its_dashboard_except_in_a_segment_or_predict_cli_process():
    """Ray Train V2 releases a finished trial's resources through the dashboard: a process that
    may train (the demo, library calls) must start Ray with it; only the segment and predict
    CLIs, which never train, leave it out, and HPA_RAY_DASHBOARD=1 brings it back there."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "HPA_RAY_DASHBOARD")}

    def dashboard(mode: str, extra: dict) -> str:
        out = run_group([sys.executable, "-c", DASHBOARD, mode], timeout=300, env={**env, **extra})
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.strip().splitlines()[-1]

    assert dashboard("library", {}) == "dashboard: True"
    assert dashboard("cli", {}) == "dashboard: False"
    assert dashboard("cli", {"HPA_RAY_DASHBOARD": "1"}) == "dashboard: True"
