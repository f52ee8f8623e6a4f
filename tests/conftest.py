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
            write_xray(root / "train" / label / name, value=60 + 7 * i + (40 if label == "PNEUMONIA" else 0))
    write_xray(root / "test" / "NORMAL" / "IM-0100-0001.jpeg", 50)
    write_xray(root / "test" / "PNEUMONIA" / "person100_bacteria_100.jpeg", 150)
    write_xray(root / "val" / "NORMAL" / "NORMAL2-IM-0200-0001.jpeg", 70)
    return root


def pytest_sessionfinish(session, exitstatus):  # noqa: ARG001
    """Guard: one pytest process must never hold both frameworks (they crash together here)."""
    if "tensorflow" in sys.modules and "torch" in sys.modules:
        raise RuntimeError("TensorFlow and torch were both imported in one pytest process; keep tests/tf and "
                           "tests/torch in separate runs")
