"""Safe image loading: modes, EXIF, every bad-file case of issue 3, preprocessing, the file source."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pairx_plugin.errors import InvalidInputError
from pairx_plugin.images import FileImageSource, load_image, prepare_image


@pytest.fixture(scope="module")
def turtle_path(seaturtle_dir) -> Path:
    return seaturtle_dir / "images" / "identity_a" / "image_1.JPG"


@pytest.fixture(scope="module")
def turtle(turtle_path) -> np.ndarray:
    with Image.open(turtle_path) as image:
        return np.asarray(image.convert("RGB"))


def test_real_jpeg_loads_as_rgb_uint8(turtle_path, turtle):
    rgb = load_image(turtle_path)
    assert rgb.dtype == np.uint8 and rgb.shape == turtle.shape == (631, 518, 3)
    np.testing.assert_array_equal(rgb, turtle)


def test_exif_orientation_is_applied(tmp_path, turtle):
    image = Image.fromarray(turtle)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "rotated.png"
    image.save(path, exif=exif.tobytes())
    rgb = load_image(path)
    assert rgb.shape == (518, 631, 3)
    np.testing.assert_array_equal(rgb, np.rot90(turtle, k=-1))


def test_missing_file(tmp_path):
    missing = tmp_path / "nope" / "missing.jpg"
    with pytest.raises(InvalidInputError, match=r"missing\.jpg.*not found"):
        load_image(missing)
    with pytest.raises(InvalidInputError, match="not a regular file"):
        load_image(tmp_path)


def test_unusable_paths(tmp_path):
    with pytest.raises(InvalidInputError, match="not found|not a usable path"):
        load_image(str(tmp_path / "bad\0name.jpg"))
    with pytest.raises(InvalidInputError, match="not found|not a usable path") as info:
        load_image(tmp_path / ("x" * 5000 + ".jpg"))
    assert len(str(info.value)) < 400 and str(info.value).endswith("check the path")


def test_truncated_jpeg(tmp_path, turtle_path):
    data = turtle_path.read_bytes()
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidInputError, match=r"truncated\.jpg.*truncated or corrupt"):
        load_image(path)


def test_unreadable_file(tmp_path):
    path = tmp_path / "garbage.jpg"
    path.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(InvalidInputError, match=r"garbage\.jpg.*not a readable image"):
        load_image(path)


def test_grayscale_becomes_three_equal_channels(tmp_path, turtle):
    grey = Image.fromarray(turtle).convert("L")
    path = tmp_path / "grey.png"
    grey.save(path)
    rgb = load_image(path)
    assert rgb.shape == turtle.shape
    for channel in range(3):
        np.testing.assert_array_equal(rgb[..., channel], np.asarray(grey))


def test_rgba_is_composited_over_white(tmp_path, turtle):
    alpha = np.full(turtle.shape[:2], 255, dtype=np.uint8)
    alpha[:50, :60] = 0
    path = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([turtle, alpha]), mode="RGBA").save(path)
    rgb = load_image(path)
    assert rgb.shape == turtle.shape
    assert (rgb[:50, :60] == 255).all()
    np.testing.assert_array_equal(rgb[50:], turtle[50:])


def test_palette_image(tmp_path, turtle):
    palette = Image.fromarray(turtle).convert("P", palette=Image.ADAPTIVE, colors=64)
    path = tmp_path / "palette.png"
    palette.save(path)
    rgb = load_image(path)
    np.testing.assert_array_equal(rgb, np.asarray(palette.convert("RGB")))


def test_16_bit_png_is_scaled_not_clipped(tmp_path, turtle):
    grey8 = np.asarray(Image.fromarray(turtle).convert("L")).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(grey8 * 257).save(path)  # full 16-bit range
    with Image.open(path) as check:
        assert check.mode.startswith("I")  # really stored as 16 bit
    rgb = load_image(path)
    assert rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[..., 0], grey8.astype(np.uint8))
    assert rgb.max() < 255 or grey8.max() == 255  # nothing clipped to white


@pytest.mark.parametrize("size", [(1, 1), (5, 100), (100, 7)])
def test_tiny_images_are_refused(tmp_path, size):
    path = tmp_path / f"tiny_{size[0]}x{size[1]}.png"
    Image.new("RGB", size, (10, 20, 30)).save(path)
    with pytest.raises(InvalidInputError, match=rf"tiny_{size[0]}x{size[1]}\.png.*too small"):
        load_image(path)


def _png_with_claimed_size(source: Path, target: Path, width: int, height: int) -> None:
    """Copy a small PNG but rewrite its header to claim width x height (a decompression bomb)."""
    data = bytearray(source.read_bytes())
    assert data[12:16] == b"IHDR"
    data[16:20] = struct.pack(">I", width)
    data[20:24] = struct.pack(">I", height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    target.write_bytes(bytes(data))


def test_decompression_bomb_is_refused_before_decoding(tmp_path, turtle):
    small = tmp_path / "small.png"
    Image.fromarray(turtle[:16, :16]).save(small)
    bomb = tmp_path / "bomb.png"
    _png_with_claimed_size(small, bomb, 100_000, 100_000)  # beyond PIL's own hard limit
    with pytest.raises(InvalidInputError, match=r"bomb\.png.*decompression bomb"):
        load_image(bomb)
    moderate = tmp_path / "moderate.png"
    _png_with_claimed_size(small, moderate, 8_000, 8_000)  # under PIL's limit, over our default
    with pytest.raises(InvalidInputError, match=r"moderate\.png.*64000000 pixels exceeds the limit"):
        load_image(moderate)


def test_pixel_limit_is_configurable(turtle_path):
    with pytest.raises(InvalidInputError, match="exceeds the limit of 100000"):
        load_image(turtle_path, max_pixels=100_000)
    assert load_image(turtle_path, max_pixels=518 * 631).shape == (631, 518, 3)


def test_prepare_image_matches_reference_preprocessing(golden_dir, turtle_path):
    """Same resize + normalisation as the reference (its saved tensors use mean = std = 0.5)."""
    golden = np.load(golden_dir / "effnet_lite0_224.npz")
    rgb = load_image(turtle_path)
    loaded = prepare_image(rgb, 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert loaded.tensor.shape == (1, 3, 224, 224) and loaded.tensor.dtype == torch.float32
    np.testing.assert_allclose(loaded.tensor.numpy(), golden["p12__input0"], atol=1e-5)
    np.testing.assert_array_equal(loaded.display, rgb)
    assert len(loaded.sha256) == 64


def test_prepare_image_crops_display_and_tensor_alike(turtle):
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    cropped = prepare_image(turtle, (96, 128), mean, std, bbox=(100, 50, 200, 300))
    assert cropped.display.shape == (300, 200, 3)
    np.testing.assert_array_equal(cropped.display, turtle[50:350, 100:300])
    assert cropped.tensor.shape == (1, 3, 96, 128)
    direct = prepare_image(np.ascontiguousarray(turtle[50:350, 100:300]), (96, 128), mean, std)
    torch.testing.assert_close(cropped.tensor, direct.tensor)
    assert cropped.sha256 == direct.sha256
    assert cropped.sha256 != prepare_image(turtle, (96, 128), mean, std).sha256
    clipped = prepare_image(turtle, 64, mean, std, bbox=(400, 600, 500, 500))  # runs off the image
    assert clipped.display.shape == (31, 118, 3)


@pytest.mark.parametrize(
    "bbox, message",
    [
        ((0, 0, 0, 10), "positive width"),
        ((5000, 5000, 10, 10), "outside the 518x631 image"),
        ((1, 2, 3), r"\(x, y, w, h\)"),
        ((0, 0, float("nan"), 10), "finite"),
    ],
)
def test_bad_bbox(turtle, bbox, message):
    with pytest.raises(InvalidInputError, match=message):
        prepare_image(turtle, 224, (0.5,) * 3, (0.5,) * 3, bbox=bbox)


def test_bad_prepare_arguments(turtle):
    with pytest.raises(InvalidInputError, match="HxWx3 uint8"):
        prepare_image(turtle.astype(np.float32), 224, (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(InvalidInputError, match="size"):
        prepare_image(turtle, 2, (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(InvalidInputError, match="std > 0"):
        prepare_image(turtle, 224, (0.5,) * 3, (0.5, 0.0, 0.5))


def test_same_pixels_hash_the_same_across_formats(tmp_path, turtle):
    png = tmp_path / "copy.png"
    Image.fromarray(turtle).save(png)
    a = prepare_image(load_image(png), 224, (0.5,) * 3, (0.5,) * 3)
    b = prepare_image(turtle, 224, (0.5,) * 3, (0.5,) * 3)
    assert a.sha256 == b.sha256


def test_file_image_source(seaturtle_dir, tmp_path):
    paths = {"a/1": seaturtle_dir / "images/identity_a/image_1.JPG", "missing": tmp_path / "gone.jpg"}
    source = FileImageSource(paths, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), bboxes={"a/1": (0, 0, 300, 300)})
    loaded = source.load("a/1")
    assert loaded.tensor.shape == (1, 3, 224, 224)
    assert loaded.display.shape == (300, 300, 3)
    with pytest.raises(InvalidInputError, match=r"gone\.jpg.*not found"):
        source.load("missing")
    with pytest.raises(InvalidInputError, match="image id '../../x' is not in this FileImageSource"):
        source.load("../../x")
