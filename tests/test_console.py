"""The console helpers: progress lines, quiet/verbose switching, log file placement."""

from __future__ import annotations

import os
import time

from hpa_ray import console


def test_progress_prints_rate_and_eta_only_when_the_count_moves(capsys):
    done = [0]
    with console.Progress("segment", 10, lambda: done[0], every=0.05):
        time.sleep(0.2)  # nothing done yet: no line
        done[0] = 4
        time.sleep(0.2)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert lines and all("segment: 4/10 images" in line and "/s" in line and "ETA" in line for line in lines)
    assert len(lines) == 1, "one line per change of the count"


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
