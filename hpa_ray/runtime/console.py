"""What a person reads: a few lines per step on the console; the frameworks' own output in a log file.

By default the stages' CLIs and the demo send Ray's, Ray Data's, Ray Train's and Ray Tune's
INFO output to a log file (they say where), keep their warnings and errors on the console,
turn off Ray Data's progress bars and Tune's status tables, and do not echo the Ray workers'
output (it stays in Ray's session logs, `/tmp/ray/session_latest/logs`). Progress comes from the
stages themselves (`EpochLines` for training and search). `--verbose` or HPA_RAY_VERBOSE=1 brings
the frameworks' output back to the console.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

VERBOSE_ENV = "HPA_RAY_VERBOSE"
_FRAMEWORK_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "ray._private.authentication")
# Loggers whose warnings are notices with nothing to act on in a local run: the log file only.
_FILE_ONLY = ("ray._private.authentication",)  # "Token authentication is enabled …", every start
# The raylet's notices that Ray's driver prints straight to stdout (not through logging), matched
# by their text: "N PYTHON worker processes have been started …, which is Kx the maximum expected
# startup concurrency": trainings of 0.5 CPU, their Tune and Train actors and Ray Data's tasks
# start many workers on purpose, so on a 2-CPU machine it comes every few trials.
# "There are tasks with infeasible resource requests …": on an autoscaling cluster, said of work
# waiting for a node type that is not up yet (the autoscaler is launching it); a request that no
# node type offers at all is refused by the stage itself before it starts (hpa_ray.runtime.resources).
_RAYLET_NOTICES = ("worker processes have been started on node", "tasks with infeasible resource requests")


def verbose() -> bool:
    """Whether the frameworks' own output goes to the console (HPA_RAY_VERBOSE set, not 0)."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


_LOG_FILE: list[Path] = []  # set by a CLI (`setup`); library calls leave the frameworks as they are


def setup(log_file: str | Path, verbose_flag: bool = False) -> None:
    """A CLI's first step: where the frameworks' output goes (unless verbose) once Ray starts."""
    if verbose_flag:
        os.environ[VERBOSE_ENV] = "1"
    _LOG_FILE[:] = [Path(log_file)]
    if not verbose():
        # Tune's default (new) output prints its experiment boxes whatever `verbose` says;
        # the older reporter is silent at verbose=0.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def add_verbose_flag(parser) -> None:
    parser.add_argument("--verbose", action="store_true",
                        help=f"Ray's, Ray Data's and Tune's own output on the console (default: a log file; "
                        f"or {VERBOSE_ENV}=1)")  # fmt: skip


def log_file_for(output: str | Path, stage: str) -> Path:
    """OUTPUT/logs/STAGE.log for a local output directory; for a URI, TMPDIR/hpa_ray-logs/
    STAGE-PID.log (the log grows as it goes, which object storage cannot append to, and a stage
    given URIs writes nothing to the working directory)."""
    import tempfile

    from hpa_ray.core import storage

    if storage.is_uri(output):
        return Path(tempfile.gettempdir()) / "hpa_ray-logs" / f"{stage}-{os.getpid()}.log"
    return Path(output) / "logs" / f"{stage}.log"


def quiet() -> bool:
    """A CLI asked for a quiet console and HPA_RAY_VERBOSE does not override it."""
    return bool(_LOG_FILE) and not verbose()


def before_ray_init() -> None:
    """Called by `_ray.init_ray` before `ray.init`: its start-up lines go to the log file too."""
    if quiet():
        quiet_frameworks(_LOG_FILE[0])


def after_ray_init(context) -> None:
    """Called by `_ray.init_ray` once Ray is up: quiet the frameworks and say where Ray is."""
    if not quiet():
        return
    log_file = quiet_frameworks(_LOG_FILE[0])
    dashboard = getattr(context, "dashboard_url", None)
    where = f"dashboard http://{dashboard}" if dashboard else "no dashboard"
    print(f"Ray started ({where}); its own log lines → {log_file} (--verbose shows them here)", flush=True)


def quiet_frameworks(log_file: str | Path) -> Path:
    """Framework INFO lines → log_file (appended), the console keeps Ray's warnings and Ray
    Data's errors (its warnings here are about CPUs that training holds for a moment); Ray
    Data's progress bars off. Before and after `ray.init`; safe to call again."""
    import ray.data

    log_file = Path(log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = ctx.enable_operator_progress_bars = False
    ctx.print_on_execution_start = False
    to_file = logging.FileHandler(log_file)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in _FRAMEWORK_LOGGERS:
        logger = logging.getLogger(name)
        if name in _FILE_ONLY:
            logger.propagate = False
        for handler in list(logger.handlers):
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setLevel(logging.ERROR if name == "ray.data" else logging.WARNING)
            elif getattr(handler, "_hpa_ray", False):
                logger.removeHandler(handler)  # an earlier call's file
        if logger.propagate is False or name == "ray":
            to_file._hpa_ray = True  # type: ignore[attr-defined]
            logger.addHandler(to_file)
    _route_raylet_notices()
    return log_file


def _route_raylet_notices() -> None:
    """While the console is quiet, the raylet's notices (`_RAYLET_NOTICES`) go to the log file
    (logger `ray`, INFO) instead of stdout; its other messages (a worker killed for memory, say)
    stay on the console. Ray's printer is a private function: where it is not found, nothing changes."""
    try:
        from ray._private import worker
    except ImportError:
        return
    printer = getattr(worker, "print_to_stdstream", None)
    if printer is None or getattr(printer, "_hpa_ray", False):
        return

    def print_to_stdstream(data: dict, ignore_prefix: bool) -> None:
        lines = data.get("lines") or []
        if quiet() and data.get("pid") == "raylet" and any(n in line for line in lines for n in _RAYLET_NOTICES):
            logging.getLogger("ray").info("raylet: %s", " ".join(lines))
            return
        printer(data, ignore_prefix)

    print_to_stdstream._hpa_ray = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = print_to_stdstream


FAILURES_SHOWN = 20  # `failed:` lines on the console before one line says how many more


def print_failures(failed: list[tuple[str, str]], listed_in: str, shown: int = FAILURES_SHOWN) -> None:
    """`  failed: ID: error` on stderr for each (image ID, error) pair, at most `shown` lines. Beyond
    that, images failing with the same error share a line (`failed: 21802 images: no image files
    for this ID in DIR (e.g. …)`: a subset of Kaggle's images run against its full train.csv),
    then how many more and where every one is listed."""
    if len(failed) <= shown:
        for image_id, error in failed:
            print(f"  failed: {image_id}: {error}", file=sys.stderr)
        return
    by_error: dict[str, list[str]] = {}
    for image_id, error in failed:
        by_error.setdefault(error, []).append(image_id)
    lines = [(f"  failed: {ids[0]}: {error}" if len(ids) == 1 else
              f"  failed: {len(ids)} images: {error} (e.g. {', '.join(ids[:2])})", len(ids))
             for error, ids in by_error.items()]  # fmt: skip
    for text, _ in lines[:shown]:
        print(text, file=sys.stderr)
    hidden = sum(n for _, n in lines[shown:])
    more = f"... and {hidden} more failed; " if hidden else ""
    print(f"  {more}every failure is listed in {listed_in}", file=sys.stderr)


def print_cell_less(image_ids: list[str], shown: int = 3) -> None:
    """A note on stderr naming images read without fault in which no cell was found: a blank
    image, or one whose nuclei (blue) are not where they were looked for; easy to miss in a count."""
    if image_ids:
        more = f" and {len(image_ids) - shown} more" if len(image_ids) > shown else ""
        print(f"note: no cells found in {len(image_ids)} image(s): {', '.join(image_ids[:shown])}{more} "
              "(blank, or no nuclei in blue?)", file=sys.stderr)  # fmt: skip


def tune_verbosity() -> int | None:
    """Tune's RunConfig(verbose=…): its status tables only when not quiet."""
    return 0 if quiet() else None


def duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """A long step's progress with rate and ETA (tqdm's), polled from `count()` (how many are done
    so far: the step's work runs in Ray, not in a loop here) every `every` seconds by a thread.

    On a terminal: tqdm's live bar. Elsewhere (a log, `ray job logs`, CI) a bar's carriage
    returns would pile up, so one plain line each time the count moved, through tqdm's own
    formatter: `  segment: 48/96 images  3.10 images/s  ETA 00:15`."""

    LINE = "  {desc}: {n_fmt}/{total_fmt}{unit}  {rate_fmt}  ETA {remaining}"
    BAR = "  {desc}: {n_fmt}/{total_fmt}{unit} |{bar}| {rate_fmt}  ETA {remaining}"

    EVERY = 10.0  # seconds between lines off a terminal: a few lines per step

    def __init__(self, what: str, total: int, count, unit: str = "images", every: float | None = None):
        import threading

        self.what, self.total, self.count, self.unit = what, total, count, f" {unit}"
        self.every = every or self.EVERY
        self._stop, self._thread = threading.Event(), threading.Thread(target=self._run, daemon=True)
        self._bar = None

    def __enter__(self):
        from tqdm import tqdm

        self.start = time.perf_counter()
        if sys.stdout.isatty():
            self._bar = tqdm(total=self.total, desc=self.what, unit=self.unit, bar_format=self.BAR, leave=False)
            self.every = min(self.every, 1.0)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=self.every)
        if self._bar is not None:
            self._bar.close()

    def _run(self) -> None:
        from tqdm import tqdm

        last = 0
        while not self._stop.wait(self.every):
            try:
                done = self.count()
            except Exception:  # noqa: BLE001 - a progress line is never worth failing the step
                continue
            if done == last or done >= self.total:
                continue
            if self._bar is not None:
                self._bar.update(done - self._bar.n)
                self._bar.refresh()  # polled seldom: show each change at once
            else:
                print(tqdm.format_meter(done, self.total, time.perf_counter() - self.start, prefix=self.what,
                                        unit=self.unit, bar_format=self.LINE), flush=True)  # fmt: skip
            last = done


def tune_callbacks(label_key: str | None, total_epochs: int) -> list:
    """A Tune run's console callbacks: `EpochLines`, and while the console is quiet, Tune's own
    trial printer with its lines sent to the log file. Tune adds that printer when none is given,
    and its "Trial … completed. Last result: …" ignores `verbose` (a rerun over finished trials
    printed one per trial). A resumed search keeps the callbacks it was started with."""
    callbacks = [epoch_callback(label_key, total_epochs)]
    if quiet() and os.environ.get("RAY_AIR_NEW_OUTPUT") == "0":  # Tune's newer output has its own printer
        from ray.tune.progress_reporter import TrialProgressCallback

        class TrialLinesToLog(TrialProgressCallback):
            def _print(self, msg: str) -> None:
                logging.getLogger("ray.tune").info(msg)

        callbacks.append(TrialLinesToLog())
    return callbacks


def epoch_callback(label_key: str | None, total_epochs: int):
    """A Ray Tune callback printing one line per trial and epoch (EpochLines), made lazily
    so that importing this module does not import Ray Tune."""
    from ray.tune import Callback

    class EpochLines(Callback):
        """`fold 1  epoch 8/24  val_map 0.412 (best 0.430)  170 cells/s  ETA 2m10s` at the first,
        the last and every sixth of the epochs; a line when a trial ends (done, stopped early,
        or failed with its error)."""

        def __init__(self):
            self.first: dict[str, tuple[float, int]] = {}  # trial → (time, epoch) of its first line
            self.resumed: dict[str, float] = {}  # trial → the checkpoint epoch it last resumed from
            self.fallback_said = False

        def _label(self, trial) -> str:
            if label_key and label_key in trial.config:
                return f"{label_key} {trial.config[label_key]}"
            params = {k: v for k, v in trial.config.items() if isinstance(v, int | float)}
            return "trial " + " ".join(f"{k}={v:.3g}" for k, v in params.items()) if params else str(trial)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self._say_events(trial, result)
            epoch, now = int(result.get("epoch", 0)) + 1, time.perf_counter()
            first_time, first_epoch = self.first.setdefault(trial.trial_id, (now, epoch))
            if epoch not in (1, total_epochs) and epoch % max(1, total_epochs // 6):
                return  # about six lines per trial however many epochs
            run = epoch - first_epoch
            per_epoch = (now - first_time) / run if run else result.get("time_this_iter_s", 0)
            eta = duration(per_epoch * (total_epochs - epoch))
            val, best = result.get("val_map", float("nan")), result.get("best_val_map", float("nan"))
            print(f"  {self._label(trial)}  epoch {epoch}/{total_epochs}  val_map {val:.3f} (best {best:.3f})  "
                  f"{result.get('train_images_per_s', 0):.0f} cells/s  ETA {eta}", flush=True)  # fmt: skip

        def _say_events(self, trial, result) -> None:
            """What happened beside the epochs: a worker lost and resumed from a checkpoint
            (a node gone: preempted, or its machine failed), a GPU that torch cannot see."""
            resumed = result.get("resumed_from_epoch", -1)
            if resumed >= 0 and self.resumed.get(trial.trial_id) != resumed:
                self.resumed[trial.trial_id] = resumed
                print(f"  {self._label(trial)}  its training worker was lost (a node gone, or the worker died) and "
                      f"restarted: resumed from the checkpoint of epoch {int(resumed) + 1}", flush=True)  # fmt: skip
            if result.get("gpu_fallback") and not self.fallback_said:
                self.fallback_said = True
                print("warning: the training workers were given GPUs that torch cannot see (logical GPUs of a local "
                      "cluster, or a CPU build of torch): they train on the CPU", flush=True)  # fmt: skip

        def on_trial_complete(self, iteration, trials, trial, **info):
            if "best_val_map" not in (trial.last_result or {}):  # a finished run, run again: Ray Train ends it at once
                print(f"  {self._label(trial)}  trained before: nothing left to resume", flush=True)
                return
            best = trial.last_result["best_val_map"]
            epochs = int(trial.last_result.get("epoch", -1)) + 1
            ended = "done" if epochs >= total_epochs else f"stopped early after {epochs} epochs"
            print(f"  {self._label(trial)}  {ended}: best val_map {best:.3f}", flush=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            print(f"  {self._label(trial)}  FAILED: {trial.error_file or 'see the log'}", flush=True)

    return EpochLines()
