"""The console helpers: progress lines, quiet/verbose switching, log file placement."""

from __future__ import annotations

import os
import time

from hpa_ray.runtime import console


def test_progress_prints_rate_and_eta_only_when_the_count_moves(capsys):
    done = [0]
    with console.Progress("segment", 10, lambda: done[0], every=0.05):
        time.sleep(0.2)  # nothing done yet: no line
        done[0] = 4
        time.sleep(0.2)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert lines and all("segment: 4/10 images" in line and "/s" in line and "ETA" in line for line in lines)
    assert len(lines) == 1, "one line per change of the count"


def test_progress_on_a_terminal_is_a_live_bar(monkeypatch):
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    monkeypatch.setattr(sys, "stdout", screen)
    monkeypatch.setattr(sys, "stderr", screen)  # tqdm writes to stderr
    done = [0]
    with console.Progress("segment", 10, lambda: done[0], every=0.05):
        done[0] = 4
        time.sleep(0.3)
    frames = screen.getvalue().split("\r")
    assert any("segment: 4/10 images |" in frame and "ETA" in frame for frame in frames)


def test_quiet_only_for_a_cli_that_asked_and_verbose_wins(tmp_path, monkeypatch):
    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    monkeypatch.setattr(console, "_LOG_FILE", [])
    assert not console.quiet() and console.tune_verbosity() is None  # library use: frameworks as they are
    console.setup(tmp_path / "logs" / "x.log")
    assert console.quiet() and console.tune_verbosity() == 0
    monkeypatch.setenv(console.VERBOSE_ENV, "1")
    assert not console.quiet()


def test_log_file_beside_local_outputs_and_in_the_working_directory_for_uris(tmp_path):
    assert console.log_file_for(tmp_path / "seg", "segment") == tmp_path / "seg" / "logs" / "segment.log"
    elsewhere = console.log_file_for("s3://bucket/out", "train")
    assert elsewhere.is_absolute() and elsewhere.name == f"train-{os.getpid()}.log"
    assert console.duration(59) == "59s" and console.duration(125) == "2m05s"


def test_raylet_worker_pool_notice_goes_to_the_log_and_other_raylet_messages_stay(tmp_path, monkeypatch, capsys):
    """Ray's driver prints the raylet's messages straight to stdout; a quiet console keeps all but
    the worker-pool notice, which 0.5-CPU trainings set off on purpose (the log file gets it)."""
    import logging

    from ray._private import worker

    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    monkeypatch.setattr(console, "_LOG_FILE", [tmp_path / "x.log"])
    monkeypatch.setattr(worker, "print_to_stdstream", worker.print_to_stdstream)  # restored afterwards
    console._route_raylet_notices()
    routed = worker.print_to_stdstream
    console._route_raylet_notices()  # quiet_frameworks runs before and after ray.init: wrapped once
    assert worker.print_to_stdstream is routed
    logged = tmp_path / "ray.log"
    handler = logging.FileHandler(logged)
    logging.getLogger("ray").addHandler(handler)
    try:
        notice = ("WARNING: 12 PYTHON worker processes have been started on node: abc with address: 127.0.0.1, "
                  "which is 6x the maximum expected startup concurrency (2).")  # fmt: skip
        killed = "Task was killed due to the node running low on memory."
        waiting = "There are tasks with infeasible resource requests that cannot be scheduled."  # a node is starting
        for line in (notice, killed, waiting):
            worker.print_to_stdstream({"lines": [line], "pid": "raylet", "is_err": False}, ignore_prefix=False)
        monkeypatch.setenv(console.VERBOSE_ENV, "1")  # --verbose: everything on the console again
        worker.print_to_stdstream({"lines": [notice.replace("12", "14")], "pid": "raylet", "is_err": False},
                                  ignore_prefix=False)  # fmt: skip
    finally:
        logging.getLogger("ray").removeHandler(handler)
        handler.close()
    out = capsys.readouterr().out
    assert killed in out and "12 PYTHON worker processes" not in out and "14 PYTHON worker processes" in out
    assert "12 PYTHON worker processes" in logged.read_text()
    assert waiting not in out and waiting in logged.read_text()


def test_the_epoch_lines_say_once_when_a_worker_was_lost_and_when_a_gpu_is_not_seen(capsys):
    class Trial:
        trial_id, config, last_result = "t0", {"fold": 1}, {}

    lines = console.tune_callbacks("fold", 4)[0]
    for epoch, resumed, fallback in ((0, -1, 1.0), (1, -1, 1.0), (2, 1, 1.0), (3, 1, 1.0)):
        lines.on_trial_result(0, [], Trial(), {"epoch": epoch, "resumed_from_epoch": resumed, "gpu_fallback": fallback})
    out = capsys.readouterr().out
    assert out.count("fold 1  its training worker was lost") == 1 and "checkpoint of epoch 2" in out
    assert out.count("GPUs that torch cannot see") == 1


def test_failures_beyond_the_first_twenty_are_counted_and_pointed_to(capsys):
    failed = [(f"img-{i}", f"cannot decode img-{i}_green.png") for i in range(25)]
    console.print_failures(failed, "out/images.parquet")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == console.FAILURES_SHOWN + 1 and lines[0] == "  failed: img-0: cannot decode img-0_green.png"
    assert lines[-1] == "  ... and 5 more failed; every failure is listed in out/images.parquet"
    same = [(f"img-{i}", "no image files for this ID in images/") for i in range(3)]
    console.print_failures(same, "out/images.parquet")
    assert capsys.readouterr().err.count("failed:") == 3, "a few: each on its line, no count"
    # Many failing alike (a subset of Kaggle's images against its full train.csv): one line for them.
    missing = [(f"id-{i}", "no image files for this ID in images/") for i in range(21802)]
    console.print_failures([*missing[:1], failed[0], *missing[1:]], "out/images.parquet")
    assert capsys.readouterr().err.splitlines() == [
        "  failed: 21802 images: no image files for this ID in images/ (e.g. id-0, id-1)",
        "  failed: img-0: cannot decode img-0_green.png",
        "  every failure is listed in out/images.parquet",
    ]


def test_tunes_trial_printer_writes_to_the_log_while_the_console_is_quiet(tmp_path, monkeypatch, capsys):
    from ray.tune.progress_reporter import TrialProgressCallback

    class Trial:
        last_result: dict = {}

        def __str__(self):
            return "_fold_trial_00000"

    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    monkeypatch.setenv("RAY_AIR_NEW_OUTPUT", "0")  # as console.setup leaves it
    monkeypatch.setattr(console, "_LOG_FILE", [])
    assert len(console.tune_callbacks("fold", 2)) == 1, "library use: Tune adds its own printer, as it does"
    monkeypatch.setattr(console, "_LOG_FILE", [tmp_path / "x.log"])
    printers = [c for c in console.tune_callbacks("fold", 2) if isinstance(c, TrialProgressCallback)]
    assert len(printers) == 1, "given, Tune adds no printer of its own"
    printers[0].on_trial_complete(0, [], Trial())  # a finished trial met again on a rerun
    assert "completed" not in capsys.readouterr().out


def test_a_trial_ending_says_done_stopped_early_or_trained_before(capsys):
    class Trial:
        config = {"fold": 1}

        def __init__(self, last_result):
            self.last_result = last_result

    lines = console.epoch_callback("fold", 4)
    lines.on_trial_complete(0, [], Trial({"epoch": 3, "best_val_map": 0.5}))
    lines.on_trial_complete(0, [], Trial({"epoch": 1, "best_val_map": 0.25}))
    lines.on_trial_complete(0, [], Trial({}))  # a finished run met again on a rerun: no report this time
    assert capsys.readouterr().out.splitlines() == [
        "  fold 1  done: best val_map 0.500",
        "  fold 1  stopped early after 2 epochs: best val_map 0.250",
        "  fold 1  trained before: nothing left to resume",
    ]
