"""Careless and hostile inputs: each refused quickly, as one `error:`/`invalid:` line and the
documented exit status, never a hang, a traceback or a lost file.

Here: those refused before any Ray starts."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
import zlib

import numpy as np
import pandas as pd
import pytest

from hpa_ray.core.masks import encode_mask
from tests.helpers import run_group

ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}


BILLION_LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{b}: &{b} [{', '.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi")
)


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return run_group([sys.executable, *args], timeout=timeout, env=ENV)


def _submission(path, rows: list[tuple[str, int, int, str]]) -> str:
    pd.DataFrame(rows, columns=["ID", "ImageWidth", "ImageHeight", "PredictionString"]).to_csv(path, index=False)
    return str(path)


def _square(size: int) -> str:
    mask = np.zeros((size, size), np.uint8)
    mask[2:6, 3:9] = 1
    return encode_mask(mask)


@pytest.mark.parametrize(
    "rows, message",
    [
        ([("bomb", 2048, 2048, "0 0.5 " + base64.b64encode(zlib.compress(b"0" * 200_000_000)).decode())],
         "inflates past"),
        ([("small", 128, 128, f"0 0.5 {_square(64)}")], "runs cover 4096 pixels, not 16384"),
        ([("huge", 100000, 100000, f"0 0.5 {_square(64)}")], "outside 0-10000"),
        ([("label", 64, 64, f"² 0.5 {_square(64)}")], "label '²' is not an integer"),
        ([("", 64, 64, "")], "empty ID"),
    ],
)  # fmt: skip
def test_submission_validation_is_bounded_and_strict(tmp_path, rows, message):
    path = _submission(tmp_path / "s.csv", rows)
    start = time.perf_counter()
    out = _run("-m", "hpa_ray.predict.submission", "validate", path)
    assert out.returncode == 1 and out.stderr.startswith("invalid: ") and message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and time.perf_counter() - start < 30


def test_submission_that_cannot_be_read_is_exit_2(tmp_path):
    out = _run("-m", "hpa_ray.predict.submission", "validate", str(tmp_path / "missing.csv"))
    assert out.returncode == 2 and out.stderr.startswith("error: ") and "does not exist" in out.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (['crop_size=!!python/object/apply:os.system ["echo pwned"]'], "not valid YAML"),
        (["hpa.nuclei_sha256=1234"], "64 hexadecimal digits"),
        (["--config", "BOMB"], "aliases"),
    ],
)
def test_hostile_config_is_one_error_line_and_exit_2(tmp_path, args, message):
    (tmp_path / "bomb.yaml").write_text(BILLION_LAUGHS)
    args = [str(tmp_path / "bomb.yaml") if a == "BOMB" else a for a in args]
    start = time.perf_counter()
    out = _run("-m", "hpa_ray.segment", "--images", str(tmp_path), "--out", str(tmp_path / "o"), *args)
    assert out.returncode == 2 and out.stderr.startswith("error: ") and message in out.stderr, out.stderr
    assert "pwned" not in out.stdout and "Traceback" not in out.stderr and time.perf_counter() - start < 30


def test_a_digits_only_sha256_is_a_string():
    from hpa_ray.core.config import load_config
    from hpa_ray.segment.config import SegmentConfig

    digits = "1" * 64
    assert load_config(SegmentConfig, None, [f"hpa.cell_sha256={digits}"]).hpa.cell_sha256 == digits
    zeros = "0" * 64  # YAML reads it as the number 0: the override keeps the text typed
    assert load_config(SegmentConfig, None, [f"hpa.cell_sha256={zeros}", "crop_size=96"]).hpa.cell_sha256 == zeros


def test_truncated_cells_part_is_named_before_training(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    cells = tmp_path / "cells"
    cells.mkdir()
    table = pa.table({"image_id": ["a"], "crop": [b"x"], "labels": [[0] * 19]})
    for name in ("part-a.parquet", "part-b.parquet"):
        pq.write_table(table, cells / name)
    (cells / "part-b.parquet").write_bytes((cells / "part-b.parquet").read_bytes()[:-30])
    pd.DataFrame({"image_id": ["a"], "fold": [0]}).to_csv(tmp_path / "folds.csv", index=False)
    start = time.perf_counter()
    out = _run("-m", "hpa_ray.train", "--cells", str(cells), "--folds", str(tmp_path / "folds.csv"), "--fold", "0",
               "--out", str(tmp_path / "run"), "model=tiny")  # fmt: skip
    assert out.returncode == 2 and "part-b.parquet: not a readable Parquet file" in out.stderr, out.stderr
    assert time.perf_counter() - start < 60


@pytest.mark.parametrize("problem", ["missing", "text", "sha"])
def test_hpa_backend_refuses_unusable_models_in_one_line(synth_set, tmp_path, problem):
    from hpa_ray.segment.backends.standin import save_standin

    model = save_standin(str(tmp_path / "m.pth"))
    cell = {"missing": str(tmp_path / "nope.pth"), "text": str(tmp_path / "t.pth"), "sha": model}[problem]
    (tmp_path / "t.pth").write_text("not a model")
    extra = [f"hpa.cell_sha256={'0' * 64}"] if problem == "sha" else []
    start = time.perf_counter()
    out = _run("-m", "hpa_ray.segment", "--images", str(synth_set / "images"), "--out",
               str(tmp_path / "o"), "--backend", "hpa", f"hpa.nuclei_model={model}", f"hpa.cell_model={cell}",
               *extra)  # fmt: skip
    assert out.returncode == 2 and out.stderr.count("error: ") == 1 and "Traceback" not in out.stderr, out.stderr
    assert "hpa.cell_model" in out.stderr and time.perf_counter() - start < 60


def _bomb(inflated: int = 1 << 30) -> str:
    """A mask string that inflates to `inflated` bytes of counts (1 GiB from ~1 MB), built in chunks."""
    deflate, chunk, parts = zlib.compressobj(9), b"0" * (1 << 20), []
    for _ in range(inflated // len(chunk)):
        parts.append(deflate.compress(chunk))
    parts.append(deflate.flush())
    return base64.b64encode(b"".join(parts)).decode()


# The process's own peak RSS (VmHWM, KiB): not ru_maxrss, which Linux carries over exec from the
# forking process (here pytest, hundreds of MiB by then).
_PEAK = """
import os, re, runpy, sys
sys.argv = [sys.argv[1], *sys.argv[3:]]
try:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
finally:
    peak = re.search(r"VmHWM:\\s*(\\d+) kB", open("/proc/self/status").read()).group(1)
    open(os.environ["PEAK_FILE"], "w").write(peak)
"""


@pytest.mark.parametrize("reader", ["validate", "evaluate", "report"])
@pytest.mark.parametrize("mask, message", [("bomb", "inflates past"), ("small", "runs cover 4096 pixels, not 16384")])
def test_every_reader_of_a_submission_decodes_masks_bounded(tmp_path, reader, mask, message):
    """A zlib bomb (1 GiB of counts) and a mask of another size, given to each command that reads
    submissions: one clear line, exit 1 (invalid) or 2 (unusable), and the process's memory stays
    far below what inflating the bomb would take."""
    size = 2048 if mask == "bomb" else 128
    text = _bomb() if mask == "bomb" else _square(64)
    submission = _submission(tmp_path / "s.csv", [("img", size, size, f"0 0.5 {text}")])
    truth = tmp_path / "truth.parquet"
    pd.DataFrame({"image_id": ["img"], "cell_id": [1], "image_height": [size], "image_width": [size],
                  "mask_rle": [_square(size)], "labels": [[1] + [0] * 18]}).to_parquet(truth)  # fmt: skip
    module, args = {
        "validate": ("hpa_ray.predict.submission", ["validate", submission]),
        "evaluate": ("hpa_ray.evaluate", ["--submission", submission, "--truth", str(truth)]),
        "report": ("hpa_ray.report", ["--out", str(tmp_path / "r"), "--truth", str(truth), "--submission", submission]),
    }[reader]
    peak = tmp_path / "peak"
    out = run_group([sys.executable, "-c", _PEAK, module, "--", *args], timeout=300,
                    env={**ENV, "PEAK_FILE": str(peak)})  # fmt: skip
    assert out.returncode in (1, 2) and message in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert int(peak.read_text()) < 700 * 1024, f"peak RSS {int(peak.read_text()) // 1024} MiB"  # KiB on Linux
