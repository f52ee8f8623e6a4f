"""Sets of Grad-CAM maps: one model's maps on a list of images, their ``.npz`` files and the Keras subprocess.

TensorFlow and torch crash when imported into one process here, so notebook 05
never imports TensorFlow: :func:`run_keras_cams` runs ``python -m xraylib cams``
(:func:`xraylib.cli.cmd_cams`, which computes the maps with
:mod:`xraylib.tf_gradcam`) in a subprocess; that writes the Keras maps to an
``.npz`` file (:func:`save_camset`) which the notebook reads back
(:func:`load_camset`), with the maps' deletion curves computed in the same
subprocess. The PyTorch maps and curves are computed in the notebook's own process
(:func:`xraylib.torch_gradcam.camset_for_checkpoint`). Both framework modules build
their :class:`CamSet` with :func:`label_indices` and :func:`true_class_maps`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from xraylib import config, data

CAMSET_ARRAYS = ("images", "y_true", "y_pred", "probs", "cam_true", "cam_pred")
CURVE_PREFIX = "curve_"  # CamSet.curves in the .npz file: curve_fractions, curve_deletion_map, ...
# The module `python -m xraylib cams` computes the Keras maps with, in its own (TensorFlow) process. Named here so
# that what notebook 05 runs through the subprocess counts among its dependencies (tests/unit/test_dvc_deps.py).
KERAS_CAMS_MODULE = "xraylib.tf_gradcam"


@dataclass
class CamSet:
    """Grad-CAM maps of one model on a list of images.

    Attributes:
        name: model name (``binary`` or the PyTorch run name).
        class_names: class names in index order.
        paths: image paths as given (project-relative for manifest images).
        images: ``(N, S, S)`` uint8 prepared images (what the model saw).
        y_true: ``(N,)`` true class indices (-1 when unknown).
        y_pred: ``(N,)`` predicted class indices.
        probs: ``(N, C)`` class probabilities.
        cam_true: ``(N, S, S)`` map of the true class (scored against the masks); equals
            ``cam_pred`` where the prediction is right; zeros where the class is unknown.
        cam_pred: ``(N, S, S)`` map of the predicted class (shown in the figures).
        info: model settings (framework, arch, image size, resize, equalize, target layer ...);
            ``info["faithfulness"]`` holds the settings of ``curves`` when they were computed.
        curves: deletion/insertion curves of the ``cam_pred`` maps
            (:func:`xraylib.gradcam_faithfulness.camset_curves`): ``fractions`` and
            ``<mode>_map`` / ``<mode>_random`` ``(N, steps + 1)``; empty when not computed.
    """

    name: str
    class_names: list[str]
    paths: list[str]
    images: np.ndarray
    y_true: np.ndarray
    y_pred: np.ndarray
    probs: np.ndarray
    cam_true: np.ndarray
    cam_pred: np.ndarray
    info: dict = field(default_factory=dict)
    curves: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def correct(self) -> np.ndarray:
        return self.y_true == self.y_pred

    def check_rows(self, frame: pd.DataFrame) -> None:
        """Raise ``ValueError`` unless ``frame["path"]`` lists this set's images in the same order."""
        if list(frame["path"]) != list(self.paths):
            raise ValueError(f"CAM set {self.name!r} does not match the image table: paths differ in content or order")


def label_indices(labels: Sequence[str] | None, class_names: Sequence[str], n: int, model: str) -> np.ndarray:
    """True class indices of ``n`` images from class names (``None`` or ``""``: unknown, -1).

    Raises:
        ValueError: a label that is not a class of the model (named ``model`` in the message).
    """
    labels = [str(v) for v in labels] if labels is not None else [""] * n
    unknown = sorted({lab for lab in labels if lab and lab not in class_names})
    if unknown:
        raise ValueError(f"labels {unknown} are not classes of {model} {list(class_names)}")
    return np.array([list(class_names).index(lab) if lab else -1 for lab in labels], dtype=np.int64)


def true_class_maps(cam_pred: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray,
                    maps_of: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """Maps of the true classes: the predicted-class map where the prediction is right, zeros where unknown.

    Args:
        cam_pred: ``(N, S, S)`` maps of the predicted classes.
        y_true, y_pred: ``(N,)`` class indices (-1 in ``y_true``: unknown).
        maps_of: ``maps_of(indices, classes)`` computes the maps of ``classes`` for the images at ``indices``
            (only called for the wrongly predicted images).
    """
    cam_true = np.array(cam_pred, copy=True)
    redo = np.flatnonzero((y_true >= 0) & (y_true != y_pred))
    if len(redo):
        cam_true[redo] = maps_of(redo, y_true[redo])
    cam_true[y_true < 0] = 0.0
    return cam_true


def save_camset(camset: CamSet, path: str | Path) -> Path:
    """Write a :class:`CamSet` to one compressed ``.npz`` file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"name": camset.name, "class_names": list(camset.class_names), "paths": list(camset.paths),
              "info": camset.info}
    np.savez_compressed(path, header=np.array(json.dumps(header)), images=camset.images.astype(np.uint8),
                        y_true=camset.y_true.astype(np.int64), y_pred=camset.y_pred.astype(np.int64),
                        probs=camset.probs.astype(np.float64), cam_true=camset.cam_true.astype(np.float32),
                        cam_pred=camset.cam_pred.astype(np.float32),
                        **{CURVE_PREFIX + k: np.asarray(v, dtype=np.float64) for k, v in camset.curves.items()})
    return path


def load_camset(path: str | Path) -> CamSet:
    """Read a file written by :func:`save_camset`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CAM file {path} not found; it is written by `python -m xraylib cams MODEL "
                                "--images CSV --out NPZ`")
    with np.load(path, allow_pickle=False) as data:
        header = json.loads(str(data["header"]))
        arrays = {k: data[k] for k in CAMSET_ARRAYS}
        curves = {k[len(CURVE_PREFIX):]: data[k] for k in data.files if k.startswith(CURVE_PREFIX)}
    return CamSet(header["name"], header["class_names"], header["paths"], info=header.get("info", {}),
                  curves=curves, **arrays)


def select_images(manifest: pd.DataFrame, split: str = "test", max_per_class: int = 0, seed: int = 0) -> pd.DataFrame:
    """The manifest rows whose maps are computed: one split, at most ``max_per_class`` per class (0 = all).

    Rows keep the manifest order within each class (sampling is seeded), classes in sorted order.
    """
    rows = data.select_split(manifest, split)
    if int(max_per_class) < 0:
        raise ValueError(f"gradcam.max_per_class must be >= 0 (0 = all images), got {max_per_class!r}")
    parts = []
    for _, group in rows.groupby("label", sort=True):
        if max_per_class and len(group) > max_per_class:
            group = group.sample(int(max_per_class), random_state=int(seed)).sort_index()
        parts.append(group)
    return pd.concat(parts).reset_index(drop=True)


def run_keras_cams(model_path: str | Path, frame: pd.DataFrame, out_path: str | Path | None = None, *,
                   batch_size: int = 16, deletion_steps: int = 0, deletion_baseline: str = "blur", seed: int = 0,
                   timeout: float = 1800) -> CamSet:
    """Grad-CAM of the Keras model on ``frame`` (``path``, ``label``), computed in a TensorFlow subprocess.

    Runs ``python -m xraylib cams MODEL --images CSV --out NPZ`` with this Python,
    so the calling process (e.g. the notebook, which imports torch) never loads
    TensorFlow. The deletion curves (:mod:`xraylib.gradcam_faithfulness`) need the
    model too, so they are computed in the same subprocess and come back in
    :attr:`CamSet.curves`.

    Args:
        model_path: the saved ``.keras`` model (with its ``.json`` sidecar).
        frame: images to map: ``path`` and ``label`` (true class name, or "" when unknown).
        out_path: keep the ``.npz`` (and the subprocess log as ``.log``) there; default: a
            temporary folder, removed afterwards.
        batch_size: images per forward/backward pass in the subprocess.
        deletion_steps: points of the deletion curves beyond the first (0: no curves).
        deletion_baseline: what deleted pixels become (:data:`xraylib.gradcam_faithfulness.BASELINES`).
        seed: seeds the curves' tie-breaking and random pixel order.
        timeout: seconds before the subprocess is stopped.

    Raises:
        FileNotFoundError: the model file does not exist.
        RuntimeError: the subprocess failed (the end of its log is in the message).
    """
    model_path = config.resolve(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"Keras model {model_path} not found; train it with `dvc repro train_binary`")
    with tempfile.TemporaryDirectory(prefix="xraylib_gradcam_") as tmp:
        target = config.resolve(out_path) if out_path is not None else Path(tmp) / "cams.npz"
        target.parent.mkdir(parents=True, exist_ok=True)
        csv = Path(tmp) / "images.csv"
        frame[["path", "label"]].to_csv(csv, index=False)
        command = [sys.executable, "-m", "xraylib", "cams", str(model_path), "--images", str(csv),
                   "--out", str(target), "--batch-size", str(int(batch_size)),
                   "--deletion-steps", str(int(deletion_steps)), "--deletion-baseline", str(deletion_baseline),
                   "--seed", str(int(seed))]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout,
                              cwd=config.PROJECT_ROOT)
        if out_path is not None:
            target.with_suffix(".log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
            raise RuntimeError(f"Keras Grad-CAM subprocess ({KERAS_CAMS_MODULE}) failed (exit {done.returncode}): "
                               f"{' '.join(command)}\n{tail}")
        return load_camset(target)
