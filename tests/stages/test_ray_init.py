"""The embedded local Ray that every stage starts (hpa_ray.runtime.session.init_ray)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from tests.helpers import run_group

# Another Ray runs beside the one under test; an actor of the tested one asks Ray's state API
# about an actor, as Ray Train's placement-group cleaner does.
SCRIPT = """
import subprocess, sys
other = subprocess.Popen([sys.executable, "-c", "import ray, time; "  # its own: never a cluster a killed run left named
                          "ray.init(address='local', num_cpus=1, include_dashboard=False); "
                          "print('up', flush=True); time.sleep(300)"], stdout=subprocess.PIPE, text=True)
try:
    assert other.stdout.readline().strip() == "up"
    import ray
    from hpa_ray.runtime import session
    session.init_ray(num_cpus=1)

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


def test_a_local_ray_starts_even_where_rays_address_file_names_another_cluster(tmp_path):
    """`ray start` and ray.cluster_utils write their cluster's address to Ray's temp directory,
    and a plain `ray.init()` joins it (where it is dead, or with num_cpus given, it fails).
    Without RAY_ADDRESS every stage starts its own local Ray, as init_ray says; its dashboard
    is given longer to start than Ray's 60 s."""
    import tempfile

    ray_tmp = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))  # short: Ray's socket paths under it
    try:
        (ray_tmp / "ray" / "ray_current_cluster").parent.mkdir()
        (ray_tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:9")  # nothing listens there
        env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "RAY_TMPDIR": str(ray_tmp)}
        script = ("import ray; from hpa_ray.runtime import session; session.init_ray(num_cpus=1); "
                  "from ray._private import ray_constants as c; print('cpus', ray.cluster_resources()['CPU'], "
                  "'dashboard', c.RAY_DASHBOARD_STARTUP_TIMEOUT_S)")  # fmt: skip
        out = run_group([sys.executable, "-c", script], timeout=300, env=env)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert out.returncode == 0, out.stderr[-2000:]
    # and its dashboard has 180 s to start, not Ray's 60 (a loaded machine took longer)
    assert out.stdout.strip().splitlines()[-1] == "cpus 1.0 dashboard 180"


DASHBOARD = """
import sys
import ray
from ray._private.worker import get_dashboard_url
from hpa_ray.runtime import session
if sys.argv[1] == "cli":
    session.no_dashboard_unless_asked()  # what python -m hpa_ray.segment / predict do
session.init_ray(num_cpus=1)
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


STOP = """
import os, sys, time
import ray
from hpa_ray.runtime import session
from hpa_ray.runtime import console
console.setup(sys.argv[1], False)  # a quiet CLI, as segment's and predict's
session.no_dashboard_unless_asked()
session.init_ray(num_cpus=1)
from ray._private import ray_constants
processes = ray._private.worker._global_node.all_processes
assert processes[ray_constants.PROCESS_TYPE_MONITOR], "a local Ray has an autoscaler monitor"
pids = [info.process.pid for infos in processes.values() for info in infos]
monitor = processes[ray_constants.PROCESS_TYPE_MONITOR][0].process
raylet = processes[ray_constants.PROCESS_TYPE_RAYLET][0].process
session._stop_autoscaler_monitor()
print("monitor", monitor.poll() is not None, "raylet", raylet.poll() is None)
code = session.exit_code_after_shutdown(3)

def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

print("code", code, "initialized", ray.is_initialized(), "alive", [p for p in pids if alive(p)])
"""


def test_a_quiet_cli_stops_its_ray_at_the_end_monitor_included(tmp_path):
    """The segment and predict CLIs stop Ray themselves (no 0.5 s wait for workers' lines that
    go to the log file) and kill Ray's autoscaler monitor first (it ignores SIGTERM: Ray's own
    shutdown waits 1 s for it). Every process of that Ray is gone and the exit code passes on."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = run_group([sys.executable, "-c", STOP, str(tmp_path / "cli.log")], timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[-2] == "monitor True raylet True"  # the monitor went first, Ray still up
    assert lines[-1] == "code 3 initialized False alive []"


def test_a_local_rays_workers_poll_ray_train_often(ray_local):
    """Ray Train's controller reads its poll interval from its own process's environment: an
    actor started, with env_vars of its own, from inside another actor (as Ray Train starts its
    controller from a Tune trial) has the local Ray's short interval (`session.TRAIN_POLL_ENV`)."""
    from hpa_ray.runtime import session

    @ray_local.remote
    class Trial:
        def controller_env(self, name: str) -> str | None:
            inner = ray_local.remote(lambda: os.environ.get(name))
            return ray_local.get(inner.options(runtime_env={"env_vars": {"OTHER": "1"}}).remote())

    expected = os.environ.get(session.TRAIN_POLL_ENV, session.LOCAL_TRAIN_POLL_S)
    assert ray_local.get(Trial.remote().controller_env.remote(session.TRAIN_POLL_ENV)) == expected
