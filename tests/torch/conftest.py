"""Fixtures for the PyTorch tests: a tiny three-class image set and its manifest (no TensorFlow here)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

CLASSES = ("BACTERIA", "NORMAL", "VIRUS")
PER_CLASS = {"train": 6, "val": 2, "test": 2}


def draw(label_index: int, k: int, size: int = 40) -> np.ndarray:
    """A left-right asymmetric gray image whose pattern depends on the class (so flips are visible)."""
    rng = np.random.default_rng(1000 * label_index + k)
    yy, xx = np.mgrid[0:size, 0:size]
    img = 40 + 3 * xx + rng.normal(0, 8, (size, size))
    img[:, : size // 3] += 60 * label_index  # a bright band on the left, stronger per class
    img[(yy // 8 + label_index) % 3 == 0] += 30
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session", autouse=True)
def one_cpu_thread():
    """Tiny models train faster on one thread, and shared CI cores are not oversubscribed."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """``root/<split>/<class>/img_k.png``: 10 images per class (6 train, 2 val, 2 test)."""
    root = tmp_path_factory.mktemp("tiny3")
    for ci, label in enumerate(CLASSES):
        k = 0
        for split, n in PER_CLASS.items():
            for _ in range(n):
                path = root / split / label / f"{label.lower()}_{k:02d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(draw(ci, k)).save(path)
                k += 1
    return root


@pytest.fixture(scope="session")
def tiny_manifest(tiny_root) -> pd.DataFrame:
    """A manifest like ``data/processed/multiclass/manifest.csv`` for :func:`tiny_root` (one patient per file)."""
    rows = []
    for path in sorted(tiny_root.rglob("*.png")):
        split, label = path.parent.parent.name, path.parent.name
        rows.append({"path": str(path), "label": label, "patient_id": f"file:{path.stem}", "source_split": split,
                     "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "split": split})
    return pd.DataFrame(rows)


@pytest.fixture(scope="session")
def trained_checkpoint(tiny_manifest, tmp_path_factory) -> Path:
    """``best.pt`` of a 2-epoch SqueezeNet on the tiny set (CPU, seconds)."""
    from tests.torch.helpers import run_config
    from xraylib import torch_train

    cfg = run_config("tiny", "squeezenet", epochs=2, batch_size=6, image_size=32, num_workers=0,
                     learning_rate=0.001, seed=3)
    out = tmp_path_factory.mktemp("run") / "tiny"
    result = torch_train.train(cfg, tiny_manifest, out, verbose=False)
    return result.best_path


def softmax_by_hand(checkpoint: Path, paths) -> np.ndarray:
    """Class probabilities of ``checkpoint`` for image files, computed outside xraylib's input pipeline.

    The grey image from :func:`xraylib.images.prepare` (the shared preparation, tested on its own)
    is scaled to 0..1, copied to three channels and normalised with the ImageNet mean and standard
    deviation written out here; the model's logits go through a softmax. Predictions, evaluations and
    Grad-CAM sets must give these numbers.
    """
    import torch

    from xraylib import images
    from xraylib.torch_evaluate import load_checkpoint

    model, meta = load_checkpoint(checkpoint)
    mean = np.array([0.485, 0.456, 0.406])[:, None, None]
    std = np.array([0.229, 0.224, 0.225])[:, None, None]
    batch = []
    for path in paths:
        grey = images.prepare(path, meta["image_size"], meta["resize"], meta["equalize"]) / 255.0
        batch.append((np.repeat(grey[None], 3, axis=0) - mean) / std)
    with torch.no_grad():
        logits = model(torch.tensor(np.stack(batch), dtype=torch.float32)).double().numpy()
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


@pytest.fixture(scope="session")
def reference_probs():
    """:func:`softmax_by_hand`, for tests: ``reference_probs(checkpoint, paths) -> (N, C)``."""
    return softmax_by_hand
