"""What ``xraylib predict --cam DIR`` writes: Grad-CAM overlays at each image's own resolution, and their index.

The model computes its map on the prepared ``S x S`` image; :class:`OverlayWriter`
takes it back to the radiograph's pixels (:func:`xraylib.gradcam_maps.to_original`,
undoing the model's ``stretch`` or ``pad`` resizing) and writes, per image:

* ``<stem>_cam.png``: the radiograph at its original size with the map blended in
  (:func:`xraylib.gradcam_maps.apply_mask`);
* ``<stem>_figure.png``: the radiograph beside that overlay, titled with the
  predicted class and its probability (and the true label when known), with a
  colour bar of the map's relative values (:func:`xraylib.gradcam_figures.plot_overlay`);

and, when done, ``cam_index.csv``: ``path`` (as in the predictions CSV), ``overlay``,
``figure``, ``predicted``, ``probability``, ``peak_row``, ``peak_col`` (the map's maximum, in
original-image pixels). The same code
serves both frameworks: the back ends only compute maps (``Classifier.cams``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from xraylib import config, images, outputs
from xraylib.gradcam_figures import plot_overlay
from xraylib.gradcam_maps import DEFAULT_COLORMAP, apply_mask, to_original, upsample_cam

INDEX_FILE = "cam_index.csv"
INDEX_COLUMNS = ["path", "overlay", "figure", "predicted", "probability", "peak_row", "peak_col"]


class OverlayWriter:
    """Writes the overlay, the figure and an index row per image into one folder (module docstring).

    Args:
        folder: output folder (created at the first image).
        image_size: side ``S`` of the prepared images the maps were computed on.
        resize_mode: how the model's images were prepared (``stretch`` or ``pad``).
        colormap: one of :data:`xraylib.gradcam_maps.COLORMAPS`.
    """

    def __init__(self, folder: str | Path, image_size: int, resize_mode: str, colormap: str = DEFAULT_COLORMAP):
        self.folder = Path(folder)
        self.image_size = int(image_size)
        self.resize_mode = resize_mode
        self.colormap = colormap
        self.rows: list[dict] = []
        self._stems: set[str] = set()

    def _stem(self, path: str | Path) -> str:
        """``<file stem>``, or ``<stem>-2``, ``-3``... when another image had the same stem (no overwriting)."""
        stem, k = Path(path).stem, 1
        while stem in self._stems:
            k += 1
            stem = f"{Path(path).stem}-{k}"
        self._stems.add(stem)
        return stem

    def add(self, path: str | Path, cam: np.ndarray, predicted: str, probability: float,
            true_label: str | None = None) -> dict:
        """Write the files of one image and return its index row.

        Args:
            path: the image file (read again at its original size).
            cam: the model's map of the explained class, ``(S, S)`` or feature-map sized, in [0, 1].
            predicted: name of the explained (predicted) class.
            probability: the model's probability of that class.
            true_label: the true class, when known (shown in the title).
        """
        original = images.load_gray(path)
        cam = np.asarray(cam, dtype=np.float32)
        if cam.shape != (self.image_size, self.image_size):
            cam = upsample_cam(cam, self.image_size)
        cam = to_original(cam, original.shape, self.resize_mode)
        self.folder.mkdir(parents=True, exist_ok=True)
        stem = self._stem(path)
        overlay, figure = f"{stem}_cam.png", f"{stem}_figure.png"
        Image.fromarray(apply_mask(original, cam, self.colormap)).save(self.folder / overlay)
        title = f"{Path(path).name}: predicted {predicted} (p = {probability:.3f})"
        if true_label:
            title += f", true {true_label}"
        fig = plot_overlay(original, cam, title, self.colormap)
        fig.savefig(self.folder / figure, facecolor="white", metadata={"Software": None})
        peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
        row = {"path": config.relative_to_project(path), "overlay": overlay, "figure": figure, "predicted": predicted,
               "probability": float(probability), "peak_row": int(peak[0]), "peak_col": int(peak[1])}
        self.rows.append(row)
        return row

    def finish(self) -> pd.DataFrame:
        """Write ``cam_index.csv`` (when any image was added) and return the index."""
        index = pd.DataFrame(self.rows, columns=INDEX_COLUMNS)
        if self.rows:
            outputs.write_table(index, self.folder / INDEX_FILE, float_format="%.6g")
        return index
