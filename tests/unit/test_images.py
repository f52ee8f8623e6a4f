"""Image preparation: odd modes, resize modes, equalisation, standardisation."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.conftest import KERMANY_ORIGINAL, require_shared
from xraylib import images


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P", "CMYK", "1", "I", "F"])
def test_every_common_mode_becomes_uint8_gray(tmp_path, mode):
    arr = np.tile(np.linspace(0, 255, 50, dtype=np.uint8), (30, 1))
    img = Image.fromarray(arr).convert(mode)
    path = tmp_path / f"x.{'tif' if mode in ('I', 'F', 'CMYK') else 'png'}"
    img.save(path)
    gray = images.load_gray(path)
    assert gray.dtype == np.uint8 and gray.shape == (30, 50)
    assert gray.max() > gray.min()


def test_16bit_uses_its_own_range(tmp_path):
    arr = np.full((10, 10), 1000, dtype=np.uint16)
    arr[:, 5:] = 3000
    Image.fromarray(arr).save(tmp_path / "x16.png")
    gray = images.load_gray(tmp_path / "x16.png")
    assert gray.min() == 0 and gray.max() == 255


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
