import numpy as np
import pytest

from hpa_ray.core.masks import decode_mask, encode_mask, encode_strip
from hpa_ray.core.schema import check_image_id, format_labels, parse_labels


def test_strip_encoding_equals_full_mask_encoding():
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(500):
        h, w = rng.integers(1, 40, 2)
        mask = np.zeros((h, w), bool)
        y0, y1 = sorted(rng.integers(0, h + 1, 2))
        x0, x1 = sorted(rng.integers(0, w + 1, 2))
        mask[y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) > 0.3
        cols = np.flatnonzero(mask.any(0))
        if cols.size == 0:
            continue
        a, b = cols[0], cols[-1] + 1
        text = encode_strip(np.ascontiguousarray(mask.T[a:b]), a, h, w)
        assert text == encode_mask(mask)
        assert np.array_equal(decode_mask(text, h, w), mask)
        checked += 1
    assert checked > 300


def test_sample_submission_mask_decodes(shared_data):
    import pandas as pd

    row = pd.read_csv(shared_data / "sample_submission.csv").iloc[0]
    label, conf, rle = row.PredictionString.split()[:3]
    mask = decode_mask(rle, row.ImageHeight, row.ImageWidth)
    assert mask.shape == (row.ImageHeight, row.ImageWidth)


def test_decode_rejects_garbage():
    with pytest.raises(ValueError, match="does not decode"):
        decode_mask("not base64!", 10, 10)


def test_parse_labels():
    assert format_labels(parse_labels("8|5|0")) == "0|5|8"
    assert parse_labels("18").sum() == 1
    for bad in ("19", "-1", "a", "3|x", ""):
        with pytest.raises(ValueError):
            parse_labels(bad)


def test_image_id_rules():
    assert check_image_id("5c27f04c-bb99-11e8-b2b9-ac1f6b6435d0") is None
    for bad in ("../etc/passwd", "a/b", "a\\b", "..", "a..b", "", " x"):
        assert check_image_id(bad), bad
