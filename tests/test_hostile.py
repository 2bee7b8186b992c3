"""Careless and hostile inputs: each refused quickly, as one `error:`/`invalid:` line and the
documented exit status, never a hang, a traceback or a lost file."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import zlib

import numpy as np
import pandas as pd
import pytest

from hpa_ray.core.masks import encode_mask
from tests.helpers import process_group, run_group

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


def _hold_lock(directory) -> subprocess.Popen:
    """Another process that owns `directory` until it is killed."""
    code = (f"from hpa_ray.core.locks import owned_by_this_run\nimport time\n"
            f"with owned_by_this_run({str(directory)!r}):\n    print('held', flush=True)\n    time.sleep(600)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=ENV)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_segment_run_refuses_at_once_and_a_dead_owners_lock_is_taken_over(synth_set, tmp_path):
    out_dir = tmp_path / "seg"
    args = ["-m", "hpa_ray.segment", "--images", str(synth_set / "images"), "--labels",
            str(synth_set / "labels.csv"), "--out", str(out_dir), "crop_size=32"]  # fmt: skip
    holder = _hold_lock(out_dir)
    try:
        start = time.perf_counter()
        refused = _run(*args)
        assert refused.returncode == 2 and f"PID {holder.pid}" in refused.stderr, refused.stderr
        assert time.perf_counter() - start < 30 and not (out_dir / "cells").exists()
    finally:
        holder.kill()
        holder.wait()
    taken = _run(*args, timeout=600)
    assert taken.returncode == 0 and "taking over" in taken.stderr, taken.stderr
    assert not (out_dir / ".hpa_ray.lock").exists(), "released at the end"


def test_two_concurrent_segment_runs_never_write_a_cell_twice(synth_set, tmp_path):
    out_dir = tmp_path / "seg"
    args = [sys.executable, "-m", "hpa_ray.segment", "--images", str(synth_set / "images"), "--labels",
            str(synth_set / "labels.csv"), "--out", str(out_dir), "crop_size=32"]  # fmt: skip
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "env": ENV}
    with process_group(args, **pipes) as first:
        time.sleep(0.5)
        with process_group(args + ["images_per_block=2"], **pipes) as second:
            outs = [(p.wait(timeout=600), p.communicate()[1]) for p in (first, second)]
    codes = sorted(code for code, _ in outs)
    assert codes in ([0, 0], [0, 2]), outs
    if codes == [0, 2]:
        assert any(code == 2 and "in use by another run" in err for code, err in outs)
    cells = pd.read_parquet(out_dir / "cells", columns=["image_id", "cell_id"])
    assert not cells.duplicated().any() and len(cells) > 0


def test_predict_refuses_an_empty_id_and_writes_nothing(ray_local, synth_set, tmp_path):
    from tests.test_predict import _make_run

    run_dir = _make_run(tmp_path / "run")
    pd.DataFrame({"ID": ["", "x"]}).to_csv(tmp_path / "ids.csv", index=False)
    out = _run("-m", "hpa_ray.predict", "--images", str(synth_set / "images"), "--run-dir", str(run_dir),
               "--out", str(tmp_path / "sub.csv"), "--ids", str(tmp_path / "ids.csv"))  # fmt: skip
    assert out.returncode == 2 and "line 2 has an empty ID" in out.stderr, out.stderr
    assert not list(tmp_path.glob("sub.csv*")), "no submission, no partial file"


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


def test_hpa_backend_on_a_cpu_only_ray_runs_on_cpu_actors(synth_set, tmp_path):
    from hpa_ray.segment.backends.standin import save_standin

    models = [f"hpa.{k}_model={save_standin(str(tmp_path / f'{k}.pth'))}" for k in ("nuclei", "cell")]
    start = time.perf_counter()
    out = _run("-m", "hpa_ray.segment", "--images", str(synth_set / "images"), "--out",
               str(tmp_path / "o"), "--backend", "hpa", "crop_size=32", *models, timeout=300)  # fmt: skip
    assert out.returncode == 0 and "no GPU" in out.stderr, out.stderr[-2000:]
    assert time.perf_counter() - start < 120
    assert json.loads(out.stdout.strip().splitlines()[-1])["cells"]


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
