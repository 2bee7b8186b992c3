from pathlib import Path

import cv2
import numpy as np
import pytest

from hpa_ray.core.images import ImageError, InputError, list_images, read_channel, read_image
from hpa_ray.core.schema import CHANNELS, IMAGE_EXTENSIONS, IMAGE_FILES
from hpa_ray.runtime.cli import HELP


def _write(dir_, image_id, size=(32, 32), dtype=np.uint8, ext=".png", channels=CHANNELS):
    paths = []
    for c in channels:
        p = dir_ / f"{image_id}_{c}{ext}"
        cv2.imwrite(str(p), np.full(size, 100 if dtype == np.uint8 else 40000, dtype))
        paths.append(str(p))
    return paths


def test_listing_without_labels_finds_every_complete_id(tmp_path):
    _write(tmp_path, "a")
    _write(tmp_path, "b", ext=".tif")
    _write(tmp_path, "c", channels=("red", "green", "blue"))
    _write(tmp_path, "d", ext=".JPG")
    (tmp_path / "notes.txt").write_text("x")
    listing = list_images(tmp_path)
    assert [j["image_id"] for j in listing.jobs] == ["a", "b", "d"]
    assert listing.refused == [{"image_id": "c", "error": "missing channel file(s) ['yellow'] for c"}]
    assert listing.jobs[0]["paths"][0].endswith("a_red.png")


def test_listing_with_labels_reports_each_bad_row(tmp_path):
    images = tmp_path / "img"
    images.mkdir()
    for i in ("ok", "dup", "badlab", "two"):
        _write(images, i)
    _write(images, "two", ext=".tif", channels=("red",))
    _write(images, "extra")
    csv = tmp_path / "labels.csv"
    csv.write_text("ID,Label\nok,8|5|0\ndup,1\ndup,2\nbadlab,3|19\n../up,1\ntwo,4\nmissing,0\nempty,\n")
    listing = list_images(images, csv)
    assert [j["image_id"] for j in listing.jobs] == ["ok"]
    assert listing.jobs[0]["labels_text"] == "0|5|8"
    errors = {r["image_id"]: r["error"] for r in listing.refused}
    assert "appears 2 times" in errors["dup"] and "lines [3, 4]" in errors["dup"]
    assert "different labels" in errors["dup"]
    assert "line 5" in errors["badlab"] and "'19'" in errors["badlab"]
    assert "path separator" in errors["../up"]
    assert "more than one file" in errors["two"]
    assert errors["missing"] == f"no image files for this ID in {images}"  # predict's words for it too
    assert "empty label" in errors["empty"]
    assert listing.unlisted == 1  # "extra" has files but no row


def test_spaces_around_a_labels_files_names_and_values_are_taken_off(tmp_path):
    """A hand-edited `ID, Label` file names the same images as Kaggle's own."""
    _write(tmp_path, "a")
    _write(tmp_path, "b")
    csv = tmp_path / "labels.csv"
    csv.write_text("ID , Label\n a ,5|0 \nb,\t3\n")
    listing = list_images(tmp_path, csv)
    assert [(j["image_id"], j["labels_text"]) for j in listing.jobs] == [("a", "0|5"), ("b", "3")]
    assert not listing.refused and listing.unlisted == 0


@pytest.mark.parametrize(
    "content, message",
    [("", "is empty"), ("Id,Labels\na,1\n", "lacks column"), ("ID,Label\n", "no rows")],
)
def test_unusable_labels_csv_is_an_input_error(tmp_path, content, message):
    _write(tmp_path, "a")
    csv = tmp_path / "labels.csv"
    csv.write_text(content)
    with pytest.raises(InputError, match=message):
        list_images(tmp_path, csv)


def test_no_images_or_no_directory_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no images") as raised:
        list_images(tmp_path)
    # The message and the --images help name every kind of file the reader lists.
    named = str(raised.value).split("}.")[-1].rstrip(")").split("|")
    assert {f".{ext}" for ext in named} == set(IMAGE_EXTENSIONS), raised.value
    assert IMAGE_FILES in HELP["--images"]
    with pytest.raises(InputError, match="does not exist"):
        list_images(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="notes.txt is a file, not a directory"):
        list_images(tmp_path / "notes.txt")


def test_decode_16_bit_scales_to_8_bit(tmp_path):
    paths = _write(tmp_path, "a", dtype=np.uint16, ext=".tif")
    image = read_image(paths)
    assert image.dtype == np.uint8 and image.shape == (4, 32, 32)
    assert image.max() == round(40000 * 255 / 65535)


def test_16_bit_files_holding_fewer_bits_are_scaled_from_the_depth_they_use(tmp_path):
    """A 12-bit camera's data in 16-bit files: scaled by 4095 (one depth for the four channels,
    so their relative brightness stays); 8-bit values in a 16-bit file stay as they are."""
    ramp = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 4  # 0 … 4092: 12 bits
    for c, scale in zip(CHANNELS, (1.0, 0.25, 0.5, 1.0)):
        cv2.imwrite(str(tmp_path / f"a_{c}.png"), (ramp * scale).astype(np.uint16))
    image = read_image([str(tmp_path / f"a_{c}.png") for c in CHANNELS])
    assert image[0].max() == round(4092 * 255 / 4095) and image[1].max() == round(1023 * 255 / 4095)
    for c in CHANNELS:
        cv2.imwrite(str(tmp_path / f"b_{c}.png"), np.full((8, 8), 200, np.uint16))
    assert (read_image([str(tmp_path / f"b_{c}.png") for c in CHANNELS]) == 200).all()


def test_input_bits_scales_every_image_alike_through_the_segment_stage(tmp_path):
    """Two images of one 12-bit camera, one dim (peak 1000): auto reads each from its own depth
    (the dim one from 10 bits), `input_bits: 12` both from 4095, and 16 as the full range."""
    from hpa_ray.segment.config import SegmentConfig
    from hpa_ray.segment.rows import decode_row

    for image_id, peak in (("bright", 4095), ("dim", 1000)):
        for c in CHANNELS:
            cv2.imwrite(str(tmp_path / f"{image_id}_{c}.png"), np.full((8, 8), peak, np.uint16))

    def decoded(image_id, **cfg):
        row = {
            "image_id": image_id,
            "labels_text": "",
            "paths": [str(tmp_path / f"{image_id}_{c}.png") for c in CHANNELS],
        }
        out = decode_row(row, SegmentConfig(**cfg).model_dump_json())
        assert not out["error"], out["error"]
        return int(out["image"].max())

    assert (decoded("bright"), decoded("dim")) == (255, round(1000 * 255 / 1023))
    assert (decoded("bright", input_bits=12), decoded("dim", input_bits=12)) == (255, round(1000 * 255 / 4095))
    assert decoded("dim", input_bits=16) == round(1000 * 255 / 65535)
    assert decoded("bright", input_bits=10) == 255, "brighter than the depth given: saturates"
    for wrong in (7, 17):
        with pytest.raises(ValueError, match="input_bits must be auto or 8 to 16"):
            SegmentConfig(input_bits=wrong)


@pytest.mark.parametrize("bits", [10, 12, 14])
def test_a_real_image_stored_at_fewer_bits_in_16_bit_files_reads_as_the_8_bit_original(shared_data, tmp_path, bits):
    from tests.conftest import HPA_REAL, real_image_ids

    image_id = real_image_ids()[0]
    original = read_image([str(HPA_REAL / "images" / f"{image_id}_{c}.png") for c in CHANNELS])
    paths = [str(tmp_path / f"{image_id}_{c}.png") for c in CHANNELS]
    for path, channel in zip(paths, original):
        cv2.imwrite(path, np.round(channel * ((2**bits - 1) / 255)).astype(np.uint16))
    assert np.array_equal(read_image(paths), original)


def test_decode_errors_say_what_and_where(tmp_path):
    paths = _write(tmp_path, "a")
    with open(paths[0], "rb+") as f:
        f.truncate(len(f.read()) // 2)
    with pytest.raises(ImageError, match="cannot decode a_red.png"):
        read_channel(paths[0])
    Path(paths[1]).write_bytes(b"")
    with pytest.raises(ImageError, match=r"cannot decode a_green.png: the file is empty \(0 bytes\)$"):
        read_channel(paths[1])
    Path(paths[2]).write_bytes(b"<html>not found</html>")
    with pytest.raises(ImageError, match=r"a_blue.png: not an image .*22 bytes starting b'<html>no'; expected PNG"):
        read_channel(paths[2])
    rgb = tmp_path / "b_red.png"
    cv2.imwrite(str(rgb), np.dstack([np.full((8, 8), 200, np.uint8), np.zeros((8, 8, 2), np.uint8)]))  # blue only
    with pytest.raises(ImageError, match="b_red.png is a colour image with no red in it"):
        read_channel(str(rgb))
    sizes = _write(tmp_path, "c")
    cv2.imwrite(sizes[2], np.zeros((16, 32), np.uint8))
    with pytest.raises(ImageError, match="channel sizes differ: .*blue 32x16"):
        read_image(sizes)


def test_an_image_listed_twice_with_the_same_labels_runs_once(tmp_path, capsys):
    _write(tmp_path, "a")
    csv = tmp_path / "labels.csv"
    csv.write_text("ID,Label\na,5|0\na,0|5\n")
    listing = list_images(tmp_path, csv)
    assert [j["image_id"] for j in listing.jobs] == ["a"] and not listing.refused
    assert listing.jobs[0]["labels_text"] == "0|5" and "listed 2 times with the same labels" in capsys.readouterr().err


def test_colour_channel_files_read_their_own_colour(shared_data, tmp_path):
    """The HPA website's per-channel JPEGs are drawn in their channel's colour (yellow: red and
    green): each reads as that colour, close to the 8-bit original; a grey saved as colour (with
    alpha too) reads unchanged."""
    from tests.conftest import HPA_REAL, real_image_ids
    from tests.helpers import bench_module

    image_id = real_image_ids()[-1]
    original = read_image([str(HPA_REAL / "images" / f"{image_id}_{c}.png") for c in CHANNELS])
    paths = bench_module("jpeg_inputs").write_colour_jpegs(original, tmp_path / image_id, quality=90)
    assert [j["paths"] for j in list_images(tmp_path).jobs] == [paths]
    read = read_image(paths).astype(float)
    for name, got, want in zip(CHANNELS, read, original.astype(float)):
        assert np.abs(got - want).mean() < 6, name  # JPEG's loss, not a channel of another colour
        assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.9, name  # 0.96-0.998 on the four real images
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8)
    cv2.imwrite(str(tmp_path / "g_yellow.png"), cv2.cvtColor(grey, cv2.COLOR_GRAY2BGRA))
    assert np.array_equal(read_channel(str(tmp_path / "g_yellow.png")), grey)
