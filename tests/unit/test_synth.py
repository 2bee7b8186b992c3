import hashlib
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import psutil
import pytest

from hpa_ray.core.masks import decode_mask
from hpa_ray.core.schema import CHANNELS, NEGATIVE, parse_labels
from hpa_ray.runtime import console
from hpa_ray.synth.config import SynthConfig
from hpa_ray.synth.generate import _LOW, _MAX_RADIUS, _window, main, make_image


def _digest(directory):
    h = hashlib.sha256()
    for p in sorted(directory.rglob("*")):
        if p.is_file() and p.suffix in (".png", ".csv"):
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_cli_writes_kaggle_layout_and_truth(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(console.Progress, "EVERY", 0.02)  # the 10 s of a real run: no line in a test's time
    assert main(["--out", str(tmp_path / "a"), "--n-images", "3", "--seed", "5", "--size", "1024"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert any("synth: " in line and "/3 images" in line and "ETA" in line for line in printed), printed
    assert printed[-1].startswith("wrote 3 images") and str(tmp_path / "a") in printed[-1]
    out = tmp_path / "a"
    labels = pd.read_csv(out / "labels.csv", dtype=str)
    assert list(labels.columns) == ["ID", "Label"] and len(labels) == 3
    for image_id in labels.ID:
        for c in CHANNELS:
            assert (out / "images" / f"{image_id}_{c}.png").is_file()
    truth = pd.read_parquet(out / "truth.parquet")
    assert {"image_id", "cell_id", "image_height", "image_width", "mask_rle", "labels"} <= set(truth.columns)
    for image_id, group in truth.groupby("image_id"):
        union = np.max(np.stack(group.labels.map(np.asarray)), axis=0)
        if union[:NEGATIVE].any():
            union[NEGATIVE] = 0  # cells that show none of the image's labels are Negative, the image is not
        image_label = labels.set_index("ID").Label[image_id]
        assert np.array_equal(union, parse_labels(image_label)), "an image's label is its cells' union"
        masks = [decode_mask(r, 1024, 1024) for r in group.mask_rle]
        assert sum(m.sum() for m in masks) == np.count_nonzero(np.sum(masks, axis=0)), "cells overlap"


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    args = ["--n-images", "2", "--size", "512"]
    main(["--out", str(tmp_path / "a"), "--seed", "1", *args])
    main(["--out", str(tmp_path / "b"), "--seed", "1", *args])
    main(["--out", str(tmp_path / "c"), "--seed", "2", *args])
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")


def test_labels_are_weak_and_negatives_exist():
    rng = np.random.default_rng(3)
    cfg = SynthConfig(size=1024)
    partial, negative, classes = 0, 0, set()
    for _ in range(30):
        s = make_image(1024, cfg, rng)
        if len(s.cell_labels) == 0:
            continue
        assert s.cell_labels.any(1).all(), "every cell shows something"
        partial += int((s.cell_labels.sum(0) < len(s.cell_labels))[s.image_labels > 0].any())
        negative += int(s.image_labels[NEGATIVE])
        classes |= set(np.flatnonzero(s.image_labels))
    assert partial >= 5, "some cells must lack some of their image's labels"
    assert negative >= 1 and len(classes) >= 12


def test_touching_cells_and_nuclei_inside_cells():
    s = make_image(2048, SynthConfig(size=2048), np.random.default_rng(0))
    assert s.cells.max() >= 8
    assert np.all(s.cells[s.nuclei > 0] == s.nuclei[s.nuclei > 0])
    horiz = (s.cells[:, 1:] != s.cells[:, :-1]) & (s.cells[:, 1:] > 0) & (s.cells[:, :-1] > 0)
    assert horiz.any(), "some neighbours touch"


def test_a_cells_window_holds_every_grid_point_within_its_largest_radius():
    """_geometry draws each cell over its window of the 1/_LOW grid only: the window must hold
    every grid point closer to the centre than the largest radius, clipped to the grid (centres
    lie up to 5% outside the image)."""
    low = 256
    coords = np.arange(low) * _LOW
    for centre in (-0.05 * 1024, -400.0, 0.0, 37.3, 511.9, 1023.0, 1.05 * 1024, 1500.0):
        window = _window(centre, low)
        assert 0 <= window.start <= window.stop <= low
        near = np.flatnonzero(np.abs(coords - centre) < _MAX_RADIUS)
        assert set(near) <= set(range(low)[window]), centre
        assert window.stop - window.start <= 2 * _MAX_RADIUS / _LOW + 2, "no more than it needs"


@pytest.mark.slow
def test_3072_and_16_bit(tmp_path):
    s = make_image(3072, SynthConfig(size=3072, bit_depth=16), np.random.default_rng(1))
    assert s.image.shape == (4, 3072, 3072) and s.image.dtype == np.uint16
    assert s.cells.max() >= 15 and s.image.max() > 255


def test_pool_workers_exit_when_the_synth_process_is_killed(tmp_path):
    # kill -9 (or the OOM killer) on `synth` must not leave its pool's workers waiting forever.
    out = tmp_path / "synth"
    args = ["--out", str(out), "--n-images", "400", "--size", "512"]
    proc = subprocess.Popen([sys.executable, "-m", "hpa_ray.synth", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.time() + 120
        while not list((out / "images").glob("*_yellow.png")) and time.time() < deadline:
            time.sleep(0.2)
        workers = psutil.Process(proc.pid).children()
        assert workers, f"the pool's workers have started (exit status {proc.poll()})"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    _, alive = psutil.wait_procs(workers, timeout=15)
    for worker in alive:
        worker.kill()
    assert not alive, f"{len(alive)} of {len(workers)} pool workers outlived their killed parent"
