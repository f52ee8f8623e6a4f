"""The PyTorch back end of :mod:`xraylib.inference`: a checkpoint as a :class:`~xraylib.inference.Classifier`.

Loading is :func:`xraylib.torch_model.load_checkpoint` (``weights_only``, one-line
refusals); the input transform is the training one without augmentation
(:func:`xraylib.torch_data.build_transform`); maps are
:func:`xraylib.torch_gradcam.compute_cams`. This module only adapts them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
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

    def _inputs(self, images: np.ndarray) -> torch.Tensor:
        """``(N, 3, S, S)`` normalised inputs, on the CPU, from prepared uint8 images (as in training)."""
        transform = build_transform(train=False)
        return torch.stack([transform(np.asarray(image, dtype=np.uint8)) for image in images])

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            logits = self.model(self._inputs(images).to(self.device))
        return torch.softmax(logits.float(), dim=1).cpu().numpy().astype(np.float64)

    def cams(self, images: np.ndarray, classes: Sequence[int]) -> np.ndarray:
        return torch_gradcam.compute_cams(self.model, self.settings.arch, self._inputs(images),
                                          [int(k) for k in classes])


def load_classifier(path: str | Path) -> TorchClassifier:
    """Open ``best.pt`` on the GPU when there is one, else the CPU."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, meta = torch_model.load_checkpoint(path, device)
    return TorchClassifier(Path(path), ModelSettings.from_metadata(meta, framework="torch", path=path), model, device)
