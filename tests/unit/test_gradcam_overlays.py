"""Grad-CAM overlays at the original resolution (``xraylib predict --cam``): geometry, files, figure, index."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from xraylib import gradcam_figures, gradcam_maps, gradcam_overlays, images

HEIGHT, WIDTH, SPOT = 90, 150, (20, 110)  # a wide radiograph with a bright spot in its upper right part
SIZE = 32


def _radiograph(height: int = HEIGHT, width: int = WIDTH, spot=SPOT) -> np.ndarray:
    rows, cols = np.mgrid[:height, :width]
    blob = np.exp(-((rows - spot[0]) ** 2 + (cols - spot[1]) ** 2) / (2 * 6.0 ** 2))
    return np.uint8(np.round(40 + 200 * blob))


def _map_of(image: np.ndarray, mode: str) -> np.ndarray:
    """What a model that looks at the spot would give: the prepared image itself, scaled to [0, 1]."""
    prepared = images.resize(image, SIZE, mode).astype(np.float32)
    return gradcam_maps.normalize_cam(prepared - prepared[prepared > 0].min())


@pytest.mark.parametrize("height, width", [(40, 20), (20, 40), (37, 91), (91, 37), (50, 50), (12, 100), (33, 32)])
@pytest.mark.parametrize("size", [8, 32, 33])
def test_pad_box_is_where_images_resize_puts_the_image(height, width, size):
    white = np.full((height, width), 255, np.uint8)
    rows, cols = np.nonzero(images.resize(white, size, "pad"))
    top, left, inner_height, inner_width = gradcam_maps.pad_box(height, width, size)
    assert (rows.min(), cols.min(), rows.max() + 1 - rows.min(), cols.max() + 1 - cols.min()) == \
        (top, left, inner_height, inner_width)


@pytest.mark.parametrize("mode", ["stretch", "pad"])
def test_a_map_goes_back_to_where_the_spot_is_in_the_original(mode):
    original = _radiograph()
    back = gradcam_maps.to_original(_map_of(original, mode), original.shape, mode)
    assert back.shape == (HEIGHT, WIDTH) and back.dtype == np.float32 and 0 <= back.min() <= back.max() <= 1
    peak = np.unravel_index(int(back.argmax()), back.shape)
    assert abs(peak[0] - SPOT[0]) <= 3 and abs(peak[1] - SPOT[1]) <= 3  # one prepared pixel is ~5 original ones
    assert np.corrcoef(back.ravel(), original.ravel().astype(float))[0, 1] > 0.95  # the whole map lines up
    with pytest.raises(ValueError, match="square"):
        gradcam_maps.to_original(np.zeros((4, 5)), original.shape, mode)
    with pytest.raises(ValueError, match="resize mode"):
        gradcam_maps.to_original(np.zeros((4, 4)), original.shape, "crop")


@pytest.mark.parametrize("mode", ["stretch", "pad"])
def test_overlay_writer_writes_original_size_overlays_figures_and_index(mode, tmp_path, monkeypatch):
    original = _radiograph()
    for name in ("scan.png", "scan.bmp"):
        Image.fromarray(original).save(tmp_path / name)
    titles = []

    def recording(image, cam, title, colormap):
        titles.append(title)
        return gradcam_figures.plot_overlay(image, cam, title, colormap)

    monkeypatch.setattr(gradcam_overlays, "plot_overlay", recording)
    writer = gradcam_overlays.OverlayWriter(tmp_path / "cams", SIZE, mode)
    writer.add(tmp_path / "scan.png", _map_of(original, mode), "PNEUMONIA", 0.87, true_label="NORMAL")
    low = _map_of(original, mode)[::8, ::8]  # a feature-map-sized map (4 x 4) is upsampled first
    writer.add(tmp_path / "scan.bmp", low, "NORMAL", 0.6)
    index = writer.finish()
    assert list(index.columns) == gradcam_overlays.INDEX_COLUMNS
    assert list(index["overlay"]) == ["scan_cam.png", "scan-2_cam.png"]  # same stem: nothing overwritten
    assert list(index["figure"]) == ["scan_figure.png", "scan-2_figure.png"]
    for name in index["overlay"]:
        with Image.open(tmp_path / "cams" / name) as overlay:
            assert overlay.size == (WIDTH, HEIGHT) and overlay.mode == "RGB"  # the original's own pixels
    for name in index["figure"]:
        with Image.open(tmp_path / "cams" / name) as figure:
            assert figure.format == "PNG" and figure.size[0] > 2 * WIDTH
    first = index.iloc[0]
    assert abs(first["peak_row"] - SPOT[0]) <= 3 and abs(first["peak_col"] - SPOT[1]) <= 3  # original pixels
    assert titles[0] == "scan.png: predicted PNEUMONIA (p = 0.870), true NORMAL"
    assert titles[1] == "scan.bmp: predicted NORMAL (p = 0.600)"
    written = pd.read_csv(tmp_path / "cams" / gradcam_overlays.INDEX_FILE)
    assert list(written["predicted"]) == ["PNEUMONIA", "NORMAL"] and written["probability"].tolist() == [0.87, 0.6]


def test_nothing_is_written_without_images(tmp_path):
    index = gradcam_overlays.OverlayWriter(tmp_path / "cams", SIZE, "pad").finish()
    assert index.empty and not (tmp_path / "cams").exists()


def test_overlay_figure_shows_the_radiograph_the_overlay_and_a_labelled_colour_bar():
    original = _radiograph()
    cam = gradcam_maps.to_original(_map_of(original, "pad"), original.shape, "pad")
    figure = gradcam_figures.plot_overlay(original, cam, "x.png: predicted PNEUMONIA (p = 0.870)", "viridis")
    radiograph, overlay, bar = figure.axes
    assert figure.get_suptitle() == "x.png: predicted PNEUMONIA (p = 0.870)"
    assert bar.get_ylabel() == gradcam_maps.COLORBAR_LABEL
    assert radiograph.get_title() == f"radiograph ({WIDTH} x {HEIGHT} px)"
    assert radiograph.images[0].get_array().shape == (HEIGHT, WIDTH)  # drawn at the original resolution
    assert overlay.images[0].get_array().shape == (HEIGHT, WIDTH, 3)
    with pytest.raises(ValueError, match="one shape"):
        gradcam_figures.plot_overlay(original, cam[:10], "t")
