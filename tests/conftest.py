"""Shared fixtures. Nothing here imports TensorFlow or torch."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xraylib import config

KERMANY224 = config.SHARED_DIR / "data" / "kermany224"
KERMANY_ORIGINAL = config.SHARED_DIR / "data" / "kermany_val_original"
XCEPTION_WEIGHTS = config.SHARED_DIR / "weights" / "xception_notop_imagenet.weights.h5"


def require_shared(path: Path) -> Path:
    """Skip the calling test, with a message, when real data in ../shared is absent."""
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (only on development/CI machines)")
    return path


def write_xray(path: Path, value: int = 128, size: tuple[int, int] = (40, 32), mode: str = "L") -> Path:
    """Write a small valid image with a gradient so it is not constant."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = size[1], size[0]
    arr = (np.add.outer(np.arange(h), np.arange(w)) % 64 + value - 32).clip(0, 255).astype(np.uint8)
    Image.fromarray(arr).convert(mode).save(path)
    return path


def write_odd_images(folder: Path) -> Path:
    """Valid images in modes the predictor must convert, a corrupt file, a truncated JPEG and a text file."""
    folder.mkdir(parents=True, exist_ok=True)
    ramp = np.add.outer(np.arange(40), np.arange(48)).astype(np.float64)
    Image.fromarray((ramp * 700).astype(np.uint16)).save(folder / "sixteen_bit.png")  # mode I;16
    rgba = np.dstack([np.full((40, 48, 3), 120, np.uint8), (ramp * 2).clip(0, 255).astype(np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    Image.fromarray((ramp * 3).clip(0, 255).astype(np.uint8)).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray((ramp * 3).clip(0, 255).astype(np.uint8)).convert("P").save(folder / "palette.gif")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    good_jpeg = folder / "whole.jpg"
    Image.fromarray((ramp * 3).clip(0, 255).astype(np.uint8)).save(good_jpeg, quality=90)
    (folder / "truncated.jpg").write_bytes(good_jpeg.read_bytes()[:200])
    (folder / "notes.txt").write_text("not an image")
    return folder


def lesion_pairs(n: int, seed: int, size: int = 64):
    """Synthetic NORMAL/PNEUMONIA pairs of one anatomy (difficulty 0): the lesion is the only systematic difference.

    Returns ``(images uint8 (2n, S, S), labels 0/1 (2n,), lesion masks bool (2n, S, S))``.
    """
    from xraylib import synthetic

    images, labels, lesions = [], [], []
    for i in range(n):
        anatomy = synthetic.sample_anatomy(seed * 1000 + i, 0.0)
        for label, name in enumerate(("NORMAL", "PNEUMONIA")):
            image, lesion, _ = synthetic.make_image(name, "binary", seed * 1000 + i, size, 0.0, anatomy=anatomy)
            images.append(image)
            labels.append(label)
            lesions.append(lesion)
    return np.stack(images), np.array(labels), np.stack(lesions)


@pytest.fixture
def kermany_tree(tmp_path: Path) -> Path:
    """A tiny Kermany-layout dataset with real-style file names (train/val/test)."""
    root = tmp_path / "chest_xray"
    names = {
        "NORMAL": ["IM-0001-0001.jpeg", "IM-0002-0001.jpeg", "NORMAL2-IM-0003-0001.jpeg", "IM-0004-0001.jpeg",
                   "IM-0005-0001.jpeg", "IM-0006-0001.jpeg", "IM-0007-0001.jpeg", "IM-0008-0001.jpeg"],
        "PNEUMONIA": ["person1_bacteria_1.jpeg", "person1_bacteria_2.jpeg", "person2_virus_3.jpeg",
                      "person3_bacteria_4.jpeg", "person4_virus_5.jpeg", "person5_bacteria_6.jpeg",
                      "person6_bacteria_7.jpeg", "person7_virus_8.jpeg", "person8_bacteria_9.jpeg",
                      "person9_virus_10.jpeg"],
    }
    for label, files in names.items():
        for i, name in enumerate(files):
            write_xray(root / "train" / label / name, value=60 + 7 * i + (45 if label == "PNEUMONIA" else 0))  # >= 3 grey levels apart across labels
    write_xray(root / "test" / "NORMAL" / "IM-0100-0001.jpeg", 50)
    write_xray(root / "test" / "PNEUMONIA" / "person100_bacteria_100.jpeg", 150)
    write_xray(root / "val" / "NORMAL" / "NORMAL2-IM-0200-0001.jpeg", 70)
    return root


def pytest_sessionfinish(session, exitstatus):  # noqa: ARG001
    """Guard: one pytest process must never hold both frameworks (they crash together here)."""
    if "tensorflow" in sys.modules and "torch" in sys.modules:
        raise RuntimeError("TensorFlow and torch were both imported in one pytest process; keep tests/tf and "
                           "tests/torch in separate runs")
