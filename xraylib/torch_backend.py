"""The PyTorch back end of :mod:`xraylib.inference`: a checkpoint as a :class:`~xraylib.inference.Classifier`.

Loading is :func:`xraylib.torch_model.load_checkpoint` (``weights_only``, one-line
refusals); the input transform is the training one without augmentation
(:func:`xraylib.torch_data.build_transform`); overlays are
:func:`xraylib.torch_gradcam.save_overlays`. This module only adapts them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from xraylib import torch_gradcam, torch_model
from xraylib.inference import ModelSettings
from xraylib.torch_data import build_transform


@dataclass
class TorchClassifier:
    """A multi-class PyTorch model: softmax probabilities per image."""

    path: Path
    settings: ModelSettings
    model: nn.Module
    device: torch.device

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        transform = build_transform(train=False)
        batch = torch.stack([transform(np.asarray(image, dtype=np.uint8)) for image in images]).to(self.device)
        with torch.no_grad():
            return torch.softmax(self.model(batch).float(), dim=1).cpu().numpy().astype(np.float64)

    def save_overlays(self, items: list[dict], out_dir: Path) -> pd.DataFrame:
        return torch_gradcam.save_overlays(self.model, self.settings.arch, items, out_dir)


def load_classifier(path: str | Path) -> TorchClassifier:
    """Open ``best.pt`` on the GPU when there is one, else the CPU."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, meta = torch_model.load_checkpoint(path, device)
    return TorchClassifier(Path(path), ModelSettings.from_metadata(meta, framework="torch", path=path), model, device)
