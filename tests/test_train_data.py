import itertools

import albumentations as A
import numpy as np

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
