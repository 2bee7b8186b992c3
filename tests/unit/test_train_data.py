import itertools
import re

import albumentations as A
import numpy as np
import pytest

from hpa_ray.train.augment import augmentation, flip_batch


def test_flip_batch_is_exactly_the_albumentations_augmentation():
    crops = np.random.default_rng(0).integers(0, 255, (8, 4, 13, 13), dtype=np.uint8)
    draws = np.array(list(itertools.product([False, True], repeat=3)))
    flipped = flip_batch(crops, draws)
    names = [type(t).__name__ for t in augmentation().transforms]
    assert names == ["Transpose", "HorizontalFlip", "VerticalFlip"]
    for crop, out, (t, h, v) in zip(crops, flipped, draws):
        forced = A.Compose([A.Transpose(p=float(t)), A.HorizontalFlip(p=float(h)), A.VerticalFlip(p=float(v))])
        expected = forced(image=crop.transpose(1, 2, 0))["image"].transpose(2, 0, 1)
        assert np.array_equal(out, expected), (t, h, v)
    assert flipped.flags.c_contiguous and not np.shares_memory(flipped, crops)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("image_id,fold\n", "has a header but no rows"),
        ("image_id,split\na,0\n", "needs columns image_id,fold"),
        ("image_id,fold\na,0\nb,one\n", "image b: fold 'one' is not a whole number"),
        ("image_id,fold\na,0\nb,1.5\n", "image b: fold '1.5' is not a whole number"),
        ("image_id,fold\na,0\nb,inf\n", "image b: fold 'inf' is not a whole number"),
        ("image_id,fold\na,0\n,1\n", "row 2 has an empty image_id"),
        ("image_id,fold\na,0\nb,1\na,1\n", "image a is listed more than once"),
        ("image_id,fold\na,0\nb,1,2\n", "folds file .* cannot be read as a CSV: Expected 2 fields in line 3"),
    ],
)
def test_a_folds_file_that_cannot_split_the_images_is_refused(tmp_path, text, message):
    """Each once reached Ray Tune or the workers (an empty file: IndexError deep in Tune)."""
    from hpa_ray.train.data import DataError, read_folds

    (tmp_path / "folds.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        read_folds(tmp_path / "folds.csv")


def test_a_good_folds_file_reads_with_integer_folds(tmp_path):
    from hpa_ray.train.data import read_folds

    (tmp_path / "folds.csv").write_text("image_id,fold\n007,0\nNA,2.0\n")
    folds = read_folds(tmp_path / "folds.csv")
    assert folds.image_id.tolist() == ["007", "NA"] and folds.fold.tolist() == [0, 2] and folds.fold.dtype.kind == "i"


def test_unlabelled_cells_are_refused_for_training(tmp_path):
    """Cells of images segmented without --labels (null labels) once trained to NaN losses and a
    val_map of 0 without a word."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hpa_ray.train.data import DataError, check_cells

    labels = pa.array([None, None], pa.list_(pa.uint8()))
    cells = pa.table({"image_id": ["a", "a"], "crop": pa.array([b"x", b"y"], pa.binary(1)), "labels": labels})
    (tmp_path / "cells").mkdir()
    pq.write_table(cells, tmp_path / "cells" / "part-0.parquet")
    with pytest.raises(DataError, match="have no labels .* segment the training images with --labels"):
        check_cells(str(tmp_path / "cells"))
    labelled = cells.set_column(2, "labels", pa.array([[0] * 19, [1] + [0] * 18], pa.list_(pa.uint8())))
    pq.write_table(labelled, tmp_path / "cells" / "part-0.parquet")
    assert check_cells(str(tmp_path / "cells")) == 1
    # The segment output given for its cells/ (its manifest parts are Parquet too).
    pq.write_table(pa.table({"image_id": ["a"], "status": ["ok"]}), tmp_path / "images.parquet")
    given_for = f"is a segment output: give its cells directory, {re.escape(str(tmp_path / 'cells'))}$"
    with pytest.raises(DataError, match=given_for):
        check_cells(str(tmp_path))
