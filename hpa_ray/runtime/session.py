"""Starting or joining Ray the same way from every stage."""

from __future__ import annotations

import os
import socket
import sys

# No usage-stats upload, no PyPI version check by albumentations: this often runs offline.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
_GCS_PORT = "RAY_GCS_SERVER_PORT"  # read by a starting local Ray


DASHBOARD_ENV = "HPA_RAY_DASHBOARD"
# Ray Train's controller takes one report per worker per poll, and a worker's next report waits
# for it (Ray 2.60: a queue of one, polled every 2 s), so an epoch shorter than the poll is
# stretched to it and a run ends up to a poll after its last epoch. A local Ray polls every
# 0.5 s (a few RPCs a second); a cluster keeps its own setting, its epochs run longer.
TRAIN_POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
LOCAL_TRAIN_POLL_S = "0.5"
# Ray gives a starting dashboard 60 s, then fails ray.init with the dashboard's log. Its nine
# module processes each import Ray: on a busy 2-core machine (seen: two test workers, ~10
# runnable processes) that took longer, and a training failed before it began.
DASHBOARD_TIMEOUT_ENV = "RAY_DASHBOARD_STARTUP_TIMEOUT_S"
LOCAL_DASHBOARD_TIMEOUT_S = 180


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the cluster at `address` (or $RAY_ADDRESS), else start an embedded local Ray, even
    where a cluster started on this machine (`ray start`, `ray.cluster_utils`) left its address
    in Ray's temp directory: plain `ray.init()` would join that one, and with `num_cpus` fail.

    A local Ray starts with its dashboard (Ray Train V2 releases finished trials' resources
    through it: without it the next trial of a search waits forever) unless HPA_RAY_DASHBOARD=0,
    which the segment and predict CLIs set for their own process (about 1 s of a small run's
    start-up; a user's HPA_RAY_DASHBOARD=1 keeps it).
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    from hpa_ray.runtime import console

    echo = not console.quiet()  # a quiet CLI leaves the workers' output in Ray's session logs
    console.before_ray_init()
    if address:
        console.after_ray_init(ray.init(address=address, log_to_driver=echo))
        return
    # Ray's own actors find their cluster by RAY_ADDRESS or by looking for running GCS processes;
    # with a second Ray on the machine the lookup fails (Ray Train's placement-group cleaner then
    # dies, and a trial stopped by ASHA keeps its CPUs: the next training waits forever). So the
    # GCS gets a known port and this job's workers get its address.
    _give_the_dashboard_time()
    port = free_port()
    os.environ[_GCS_PORT] = str(port)
    try:
        dashboard = os.environ.get(DASHBOARD_ENV, "1") != "0"
        poll = os.environ.get(TRAIN_POLL_ENV, LOCAL_TRAIN_POLL_S)
        env_vars = {"RAY_ADDRESS": f"127.0.0.1:{port}", TRAIN_POLL_ENV: poll}
        context = ray.init(address="local", num_cpus=num_cpus, include_dashboard=dashboard, log_to_driver=echo,
                           runtime_env={"env_vars": env_vars})  # fmt: skip
    finally:
        os.environ.pop(_GCS_PORT, None)
    console.after_ray_init(context)


def _give_the_dashboard_time() -> None:
    """A local Ray's dashboard gets LOCAL_DASHBOARD_TIMEOUT_S to start, unless the user set
    RAY_DASHBOARD_STARTUP_TIMEOUT_S. Ray reads that variable once, when it is imported, into
    ray_constants, which its start-up reads at each start: both are set."""
    if DASHBOARD_TIMEOUT_ENV in os.environ:
        return
    os.environ[DASHBOARD_TIMEOUT_ENV] = str(LOCAL_DASHBOARD_TIMEOUT_S)
    from ray._private import ray_constants

    ray_constants.RAY_DASHBOARD_STARTUP_TIMEOUT_S = LOCAL_DASHBOARD_TIMEOUT_S


def no_dashboard_unless_asked() -> None:
    """For a CLI process that runs one stage without Ray Train: its local Ray starts without
    the dashboard unless HPA_RAY_DASHBOARD says otherwise. Not for library calls: a process
    that trains later needs the dashboard, and Ray cannot add it once started."""
    os.environ.setdefault(DASHBOARD_ENV, "0")


def exit_code_after_shutdown(code: int) -> int:
    """For a stage CLI's last step: stop this process's Ray now and pass `code` on. Left to
    the exit hook, Ray first sleeps 0.5 s so that workers' lines reach the console; a quiet CLI
    sends them to Ray's session logs, so it need not wait (a verbose one still does)."""
    from hpa_ray.runtime import console

    if console.quiet():
        shutdown_ray()
    return code


def shutdown_ray() -> None:
    """Stop this process's Ray, where it started or joined one."""
    ray = sys.modules.get("ray")  # a process that never started Ray does not import it here
    if ray is not None and ray.is_initialized():
        _stop_autoscaler_monitor()
        ray.shutdown()


def _stop_autoscaler_monitor() -> None:
    """A local Ray's shutdown sends its autoscaler monitor SIGTERM and waits 1 s for it; the
    monitor (Ray 2.60) never exits on it, so it is killed after that second — a twelfth of a
    small run. It has nothing to save on a local cluster: killed first. A driver that joined a
    cluster owns no monitor; whatever this Ray's internals hold otherwise, shutdown goes on."""
    import ray

    try:
        from ray._private import ray_constants

        node = ray._private.worker._global_node
        monitors = node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, []) if node else []
        for info in monitors:
            info.process.kill()
            info.process.wait(timeout=5)
    except Exception:  # noqa: BLE001 - an optimisation only: ray.shutdown still stops it
        return


def prewarm_workers(modules: tuple[str, ...]) -> None:
    """One task per CPU that imports `modules` and returns, not waited for: the workers import
    while the driver plans its first Ray Data run (≈1.5 s), instead of after it."""
    import ray

    @ray.remote(num_cpus=1)
    def _import(names: tuple[str, ...]) -> None:
        import importlib

        for name in names:
            importlib.import_module(name)

    # This node's CPUs at most: on a large cluster the workers warm up on their own anyway. The
    # CPUs up now, not those the cluster may grow to: a task with no CPU to run on would start a
    # worker node only to import modules.
    for _ in range(min(int(ray.cluster_resources().get("CPU", 0)), os.cpu_count() or 1)):
        _import.remote(modules)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_resources() -> dict[str, float]:
    """Per resource, what the connected cluster has or can grow to: an autoscaling cluster whose
    GPU workers are at zero still reaches their GPUs (`hpa_ray.runtime.resources`). What every
    "auto" setting (use a GPU, actors, concurrent trainings) is decided on."""
    from hpa_ray.runtime.resources import reachable_resources

    return reachable_resources()


def use_gpu(setting: bool | str) -> bool:
    """A config's `use_gpu`: true, false, or "auto" (the cluster has or can grow GPUs)."""
    if setting == "auto":
        return cluster_resources().get("GPU", 0) > 0
    return bool(setting)


def tensorboard_scalars():
    """Tune's TensorBoard logger (each trial's results as scalars, where Ray writes them) without
    its HParams summary. Tune's summary names every key of a trial's config (`train/…`, the fold
    directory) beside the search's own (tune's RUN_DIR/tensorboard/hparams: the searched values,
    status, best val_map): `tensorboard --logdir RUN_DIR` listed each trial two or three times
    with half the columns empty. Given in a run's callbacks, it replaces Tune's default one."""
    from ray.tune.logger import TBXLoggerCallback

    class TBXScalars(TBXLoggerCallback):
        def _try_log_hparams(self, trial, result) -> None:
            return

    return TBXScalars()
