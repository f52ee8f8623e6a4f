"""The Keras back end of :mod:`xraylib.inference`: a saved binary model as a :class:`~xraylib.inference.Classifier`.

Loading (archive and settings checks, safe mode) is :func:`xraylib.tf_model.load_model`;
inference with the model's test-time augmentation is :func:`xraylib.tf_model.predict_proba`;
maps are :class:`xraylib.tf_gradcam.GradCam`. This module only adapts them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Sequence

from xraylib import tf_runtime  # noqa: F401,I001  (first: TensorFlow imported quietly, before keras)
import keras
import numpy as np

from xraylib import tf_gradcam, tf_model
from xraylib.inference import ModelSettings


@dataclass
class KerasClassifier:
    """A binary Keras model: probabilities ``[P(class 0), P(class 1)]`` per image."""

    path: Path
    settings: ModelSettings
    model: keras.Model

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        positive = tf_model.predict_proba(self.model, np.asarray(images, dtype=np.uint8), self.settings.tta)
        return np.stack([1.0 - positive, positive], axis=1)

    @cached_property
    def _gradcam(self) -> tf_gradcam.GradCam:
        return tf_gradcam.GradCam(self.model)

    def cams(self, images: np.ndarray, classes: Sequence[int]) -> np.ndarray:
        return self._gradcam(np.asarray(images, dtype=np.uint8), [int(k) for k in classes])[0]


def load_classifier(path: str | Path) -> KerasClassifier:
    """Open ``model.keras`` with the settings saved beside it (``model.json``)."""
    model, meta = tf_model.load_model(path, require=tf_model.SETTINGS_KEYS)
    return KerasClassifier(Path(path), ModelSettings.from_metadata(meta, framework="keras", path=path), model)
