import itertools

import albumentations as A
import numpy as np
import pytest

from hpa_ray.train_data import augmentation, flip_batch


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
        ("image_id,fold\na,0\nb,one\n", "line 3: fold 'one' is not a whole number"),
        ("image_id,fold\na,0\nb,1.5\n", "line 3: fold '1.5' is not a whole number"),
        ("image_id,fold\na,0\nb,1\na,1\n", "image a is listed more than once"),
    ],
)
def test_a_folds_file_that_cannot_split_the_images_is_refused(tmp_path, text, message):
    """Each once reached Ray Tune or the workers (an empty file: IndexError deep in Tune)."""
    from hpa_ray.train_data import DataError, read_folds

    (tmp_path / "folds.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        read_folds(tmp_path / "folds.csv")


def test_a_good_folds_file_reads_with_integer_folds(tmp_path):
    from hpa_ray.train_data import read_folds

    (tmp_path / "folds.csv").write_text("image_id,fold\n007,0\nb,2.0\n")
    folds = read_folds(tmp_path / "folds.csv")
    assert folds.image_id.tolist() == ["007", "b"] and folds.fold.tolist() == [0, 2] and folds.fold.dtype.kind == "i"
