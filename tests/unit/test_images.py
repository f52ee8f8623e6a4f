"""Image preparation: odd modes, resize modes, equalisation, standardisation."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.conftest import KERMANY_ORIGINAL, require_shared
from xraylib import images


RAMP = np.tile(np.linspace(0, 255, 50).astype(np.uint8), (30, 1))  # 30x50, every column one grey, 0 and 255 present


def luma(r: int, g: int, b: int) -> int:
    """ITU-R 601-2 luma, the grey PIL documents for RGB -> L: L = R*299/1000 + G*587/1000 + B*114/1000."""
    return int(round(0.299 * r + 0.587 * g + 0.114 * b))


def _alpha_columns() -> np.ndarray:
    """Opaque on the left 20 columns, transparent on the next 15, half (128) on the last 15."""
    alpha = np.full(RAMP.shape, 128, np.uint8)
    alpha[:, :20], alpha[:, 20:35] = 255, 0
    return alpha


def _over_black(grey: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The documented rule for RGBA/LA: composite on black, i.e. grey * alpha / 255."""
    return np.round(grey.astype(float) * alpha / 255.0)


PALETTE = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (128, 128, 128), (255, 255, 255), (200, 100, 50)]
PALETTE_INDEX = np.arange(30 * 50).reshape(30, 50) % len(PALETTE)
CMYK_PIXELS = [((255, 0, 0, 0), (0, 255, 255)),  # cyan ink: no red
               ((0, 255, 0, 0), (255, 0, 255)),  # magenta ink: no green
               ((0, 0, 0, 100), (155, 155, 155)),  # black ink 100: 255 - 100 in every channel
               ((0, 0, 0, 0), (255, 255, 255))]  # no ink: white paper


def _mode_case(mode: str):
    """``(image in that mode, file suffix, expected uint8 grey)`` with the grey known independently of the code."""
    if mode == "L":
        return Image.fromarray(RAMP), "png", RAMP
    if mode == "RGB":
        rgb = np.zeros((*RAMP.shape, 3), np.uint8)
        rgb[..., 0], rgb[..., 1], rgb[..., 2] = RAMP, 255 - RAMP, RAMP // 2
        expected = [[luma(r, g, b) for r, g, b in row] for row in rgb.astype(int)]
        return Image.fromarray(rgb, "RGB"), "png", np.array(expected)
    if mode == "RGBA":
        rgba = np.dstack([RAMP, RAMP, RAMP, _alpha_columns()])
        return Image.fromarray(rgba, "RGBA"), "png", _over_black(RAMP, _alpha_columns())
    if mode == "LA":
        la = Image.merge("LA", [Image.fromarray(RAMP), Image.fromarray(_alpha_columns())])
        return la, "png", _over_black(RAMP, _alpha_columns())
    if mode == "P":
        img = Image.fromarray(PALETTE_INDEX.astype(np.uint8), "P")
        img.putpalette([v for colour in PALETTE for v in colour])
        return img, "png", np.array([luma(*PALETTE[i]) for i in PALETTE_INDEX.ravel()]).reshape(RAMP.shape)
    if mode == "CMYK":
        img = Image.new("CMYK", (len(CMYK_PIXELS), 1))
        for x, (ink, _) in enumerate(CMYK_PIXELS):
            img.putpixel((x, 0), ink)
        return img, "tif", np.array([[luma(*rgb) for _, rgb in CMYK_PIXELS]])
    if mode == "1":
        checker = (np.add.outer(np.arange(30), np.arange(50)) % 2).astype(bool)
        return Image.fromarray(checker), "png", np.where(checker, 255, 0)
    # 32-bit integer and float images are rescaled from their own min..max to 0..255:
    # both are affine maps of RAMP (whose min is 0 and max 255), so RAMP comes back.
    if mode == "I":
        return Image.fromarray(1000 + 4 * RAMP.astype(np.int32), "I"), "tif", RAMP
    if mode == "F":
        return Image.fromarray((-2.5 + 0.01 * RAMP.astype(np.float64)).astype(np.float32), "F"), "tif", RAMP
    raise AssertionError(mode)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P", "CMYK", "1", "I", "F"])
def test_every_common_mode_becomes_the_expected_grey(tmp_path, mode):
    img, suffix, expected = _mode_case(mode)
    path = tmp_path / f"x.{suffix}"
    img.save(path)
    with Image.open(path) as reread:
        assert reread.mode == mode  # the file really is in that mode
    gray = images.load_gray(path)
    assert gray.dtype == np.uint8 and gray.shape == expected.shape
    tolerance = 1 if mode in ("RGBA", "LA") else 0  # alpha 128: PIL's integer blend may round the other way
    np.testing.assert_allclose(gray.astype(int), expected, atol=tolerance, rtol=0)


def test_palette_transparency_is_composited_on_black(tmp_path):
    img, _, expected = _mode_case("P")
    img.save(tmp_path / "t.png", transparency=3)  # palette entry 3 (grey 128) is transparent
    with Image.open(tmp_path / "t.png") as reread:
        assert reread.mode == "P" and reread.info["transparency"] == 3
    gray = images.load_gray(tmp_path / "t.png")
    np.testing.assert_array_equal(gray, np.where(PALETTE_INDEX == 3, 0, expected))


def test_16bit_uses_its_own_range(tmp_path):
    arr = np.full((10, 10), 1000, dtype=np.uint16)
    arr[:, 5:] = 3000
    Image.fromarray(arr).save(tmp_path / "x16.png")
    gray = images.load_gray(tmp_path / "x16.png")
    assert (gray[:, :5] == 0).all() and (gray[:, 5:] == 255).all()
    # A 16-bit ramp 128, 384, ... (256 g + 128): (v - min) * 255 / (max - min) gives back g exactly.
    Image.fromarray(RAMP.astype(np.uint16) * 256 + 128).save(tmp_path / "ramp16.png")
    with Image.open(tmp_path / "ramp16.png") as reread:
        assert reread.mode.startswith("I;16")
    np.testing.assert_array_equal(images.load_gray(tmp_path / "ramp16.png"), RAMP)


def test_unreadable_and_missing_files(tmp_path):
    (tmp_path / "t.png").write_text("not an image")
    with pytest.raises(images.ImageReadError, match="cannot read"):
        images.load_gray(tmp_path / "t.png")
    with pytest.raises(FileNotFoundError):
        images.load_gray(tmp_path / "missing.png")


def test_resize_pad_keeps_aspect_and_stretch_fills():
    gray = np.full((20, 40), 200, dtype=np.uint8)
    padded = images.resize(gray, 32, "pad")
    stretched = images.resize(gray, 32, "stretch")
    assert padded.shape == stretched.shape == (32, 32)
    assert padded[0].max() == 0 and padded[16].min() == 200  # black bars top and bottom
    assert stretched.min() == 200
    with pytest.raises(ValueError, match="resize mode"):
        images.resize(gray, 32, "crop")
    with pytest.raises(ValueError, match="image size"):
        images.resize(gray, 4, "pad")


@pytest.mark.parametrize("method", images.EQUALIZE_MODES)
def test_equalize_methods(method):
    rng = np.random.default_rng(0)
    gray = (rng.random((64, 64)) * 60 + 80).astype(np.uint8)
    out = images.equalize(gray, method)
    assert out.shape == gray.shape and out.dtype == np.uint8
    if method != "none":
        assert np.ptp(out) > np.ptp(gray)  # contrast is stretched


def test_standardize_zero_mean_unit_std_and_constant_image():
    x = np.arange(100, dtype=np.uint8).reshape(10, 10)
    z = images.standardize(x)
    assert abs(z.mean()) < 1e-6 and abs(z.std() - 1) < 1e-5
    assert np.all(images.standardize(np.full((4, 4), 7)) == 0)


@pytest.mark.real_data
def test_original_resolution_images_prepare(tmp_path):
    root = require_shared(KERMANY_ORIGINAL)
    for path in sorted(root.rglob("*.jpeg"))[:4]:
        out = images.prepare(path, 96, "pad")
        assert out.shape == (96, 96) and out.dtype == np.uint8
