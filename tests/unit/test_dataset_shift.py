"""Dataset-shift analysis: image statistics, per-class comparison, separability, histograms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from xraylib import dataset_shift as ds


def _image(rng, gamma: float = 1.0, border: int = 0, size: int = 48) -> np.ndarray:
    """A smooth 'chest' (bright centre) with noise; ``gamma`` changes exposure, ``border`` paints a black frame."""
    yy, xx = np.mgrid[:size, :size] / (size - 1)
    body = 200 * np.exp(-((xx - 0.5) ** 2 + (yy - 0.5) ** 2) / 0.08) + rng.normal(0, 8, (size, size)) + 30
    img = 255 * (np.clip(body, 0, 255) / 255) ** gamma
    if border:
        img[:border], img[-border:], img[:, :border], img[:, -border:] = 0, 0, 0, 0
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _write(tmp_path, name: str, n: int, seed: int, **kwargs) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for label in ("NORMAL", "PNEUMONIA"):
        folder = tmp_path / name / label
        folder.mkdir(parents=True)
        for i in range(n):
            path = folder / f"{i}.png"
            Image.fromarray(_image(rng, **kwargs)).save(path)
            rows.append({"path": str(path), "label": label})
    return pd.DataFrame(rows)


def test_describe_known_image():
    img = np.full((100, 100), 200, np.uint8)
    img[:10], img[-10:], img[:, :10], img[:, -10:] = 0, 0, 0, 0  # a black frame exactly the 10 % border
    d = ds.describe(img)
    assert d["border_mean"] == 0 and d["centre_mean"] == 200 and d["border_centre_ratio"] == 0
    assert d["dark_fraction"] == pytest.approx(1 - 0.8 ** 2)
    assert d["bright_fraction"] == 0 and (d["height"], d["width"]) == (100, 100)
    assert d["p05"] == 0 and d["p50"] == 200
    with pytest.raises(ValueError, match="2-D grey image"):
        ds.describe(np.zeros((4, 4, 3), np.uint8))


def test_shifted_site_is_found_and_same_site_is_not(tmp_path):
    home = _write(tmp_path, "home", 25, seed=1)
    same = _write(tmp_path, "same", 25, seed=2)
    other = _write(tmp_path, "other", 25, seed=3, gamma=0.6, border=6)  # brighter, framed: another machine
    stats = pd.concat([ds.image_statistics(home, "home"), ds.image_statistics(same, "same"),
                       ds.image_statistics(other, "other")], ignore_index=True)
    assert list(stats.columns[:3]) == ["set", "path", "label"] and len(stats) == 150

    table = ds.compare(stats, "home")
    row = table[(table["label"] == "NORMAL") & (table["statistic"] == "border_mean")].iloc[0]
    assert row["other median"] < row["home median"]  # the frame darkens the border
    assert row["other p"] < 1e-6 and row["same p"] > 0.01
    sizes = table[table["statistic"] == "height"]
    assert (sizes["other KS"] == 0).all() and (sizes["other p"] == 1).all()  # constant: no test, no error

    shifted, alike = ds.separability(stats, "home", "other"), ds.separability(stats, "home", "same")
    assert set(shifted) == {"all", "NORMAL", "PNEUMONIA"}
    assert shifted["all"] > 0.95 and alike["all"] < 0.8
    with pytest.raises(ValueError, match="reference set"):
        ds.compare(stats, "elsewhere")


def test_histograms_are_normalised_per_set_and_class(tmp_path):
    frame = _write(tmp_path, "h", 3, seed=4)
    hist = ds.intensity_histograms({"h": frame}, size=32, bins=16)
    assert len(hist) == 2 * 16 and set(hist["label"]) == {"NORMAL", "PNEUMONIA"}
    assert hist.groupby("label")["fraction"].sum().to_numpy() == pytest.approx([1.0, 1.0])
