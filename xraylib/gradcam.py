"""Grad-CAM without a framework: maps, overlays, faithfulness scores and figures (numpy / OpenCV / matplotlib).

The framework modules compute the raw maps and hand them over as a :class:`CamSet`:

* :mod:`xraylib.tf_gradcam` (Keras binary model): ``tf.GradientTape`` on the last
  convolutional activation, weights and map from :func:`cam_from_activations`;
* :mod:`xraylib.torch_gradcam` (PyTorch models): ``pytorch_grad_cam.GradCAM`` on
  :func:`xraylib.torch_model.target_layer`.

Both give the same kind of map: ``ReLU(sum_k alpha_k A_k)`` with ``alpha_k`` the
spatial mean of the gradient of the class score (pre-softmax / pre-sigmoid) with
respect to the activation ``A_k``; min-max scaled to [0, 1] and upsampled
bilinearly to the prepared image (:func:`upsample_cam`).

TensorFlow and torch crash when imported into one process here, so the notebook
never imports TensorFlow: :func:`run_keras_cams` runs ``python -m
xraylib.tf_gradcam`` in a subprocess, which writes the Keras maps to an ``.npz``
file (:func:`save_camset`) that the notebook reads back (:func:`load_camset`);
the PyTorch maps are computed in the notebook's own process.

Faithfulness (beyond the original notebooks): on the synthetic data the true
lesion and lung masks are known, so every map is scored (:func:`score_camset`)
with the pointing game (is the maximum inside the lesion?), the IoU of the top
``top_fraction`` of the map with the lesion (both from :mod:`xraylib.metrics`)
and the fraction of the map's energy inside the lungs.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np
import pandas as pd

from xraylib import config, images, metrics

COLORMAPS = {"jet": cv2.COLORMAP_JET, "turbo": cv2.COLORMAP_TURBO, "inferno": cv2.COLORMAP_INFERNO,
             "hot": cv2.COLORMAP_HOT, "viridis": cv2.COLORMAP_VIRIDIS}
CAMSET_ARRAYS = ("images", "y_true", "y_pred", "probs", "cam_true", "cam_pred")


# --------------------------------------------------------------------------- maps

def cam_from_activations(activations: np.ndarray, gradients: np.ndarray, channels_last: bool = True) -> np.ndarray:
    """Grad-CAM from activations and the gradients of a class score with respect to them.

    ``alpha_k = mean_ij dS/dA_k(i, j)``, ``cam = ReLU(sum_k alpha_k A_k)`` (Selvaraju et al. 2017).

    Args:
        activations: ``(N, h, w, K)`` (channels last, Keras) or ``(N, K, h, w)``.
        gradients: same shape as ``activations``.
        channels_last: layout of both arrays.

    Returns:
        ``(N, h, w)`` float32 maps, not yet scaled.
    """
    a = np.asarray(activations, dtype=np.float64)
    g = np.asarray(gradients, dtype=np.float64)
    if a.shape != g.shape or a.ndim != 4:
        raise ValueError(f"activations and gradients must be 4-D arrays of one shape, got {a.shape} and {g.shape}")
    if not channels_last:
        a, g = a.transpose(0, 2, 3, 1), g.transpose(0, 2, 3, 1)
    weights = g.mean(axis=(1, 2))  # (N, K)
    return np.maximum(np.einsum("nhwk,nk->nhw", a, weights), 0.0).astype(np.float32)


def normalize_cam(cam: np.ndarray) -> np.ndarray:
    """ReLU, then min-max scale to [0, 1] (as pytorch-grad-cam); a map without positive values becomes zeros."""
    cam = np.maximum(np.asarray(cam, dtype=np.float32), 0.0)
    cam = cam - cam.min()
    peak = float(cam.max())
    return cam / (peak + 1e-7) if peak > 0 else np.zeros_like(cam)


def upsample_cam(cam: np.ndarray, shape: int | Sequence[int]) -> np.ndarray:
    """Scale a low-resolution map to [0, 1], resize it bilinearly to ``shape`` (H, W) or ``size x size``, rescale.

    The second min-max scaling (as pytorch-grad-cam) makes the maximum exactly 1
    at the image size (bilinear resizing moves peaks between pixel centres).

    Returns:
        float32 array of ``shape`` with values in [0, 1].
    """
    cam = np.asarray(cam, dtype=np.float32)
    if cam.ndim != 2:
        raise ValueError(f"cam must be a 2-D map (h, w), got shape {cam.shape}")
    height, width = (int(shape), int(shape)) if np.isscalar(shape) else (int(shape[0]), int(shape[1]))
    if height < 1 or width < 1:
        raise ValueError(f"target shape must be positive, got {(height, width)}")
    big = cv2.resize(normalize_cam(cam), (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(normalize_cam(big), 0.0, 1.0).astype(np.float32)


def apply_mask(image: np.ndarray, cam: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """Overlay a Grad-CAM map on an image with a colour map (the original notebooks' ``apply_mask``).

    ``heatmap = colormap(uint8(255 * cam))``; ``overlay = heatmap + image`` (both in
    [0, 1]), divided by its maximum, as 8-bit RGB. A map of another size is
    resized to the image first.

    Args:
        image: grey ``(H, W)`` or RGB ``(H, W, 3)``, uint8 (0..255) or float (0..1).
        cam: map with values in [0, 1].
        colormap: one of :data:`COLORMAPS`.

    Returns:
        ``uint8`` RGB array ``(H, W, 3)``.
    """
    if colormap not in COLORMAPS:
        raise ValueError(f"colormap must be one of {sorted(COLORMAPS)}, got {colormap!r}")
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be grey (H, W) or RGB (H, W, 3), got shape {np.asarray(image).shape}")
    img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 or img.max() > 1.0 else img.astype(np.float32)
    cam = np.clip(np.asarray(cam, dtype=np.float32), 0.0, 1.0)
    if cam.shape != img.shape[:2]:
        cam = np.clip(cv2.resize(cam, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)
    heatmap = cv2.applyColorMap(np.uint8(np.round(255 * cam)), COLORMAPS[colormap])
    heatmap = cv2.cvtColor(heatmap, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    overlay = heatmap + img
    return np.uint8(np.round(255 * overlay / overlay.max()))


# --------------------------------------------------------------------------- scores

def load_mask(path: str | float | None, size: int, resize_mode: str = "stretch") -> np.ndarray | None:
    """A mask file resized like the images (:func:`xraylib.images.resize`), as bool; ``None`` when there is none.

    Empty paths (normal images, sources without masks) and all-zero masks give ``None``.
    """
    if path is None or (isinstance(path, float) and math.isnan(path)) or str(path).strip() == "":
        return None
    gray = images.load_gray(path)
    mask = images.resize(gray, size, resize_mode) >= 128
    return mask if mask.any() else None


def lung_energy_fraction(cam: np.ndarray, lung_mask: np.ndarray) -> float:
    """Share of the map's total value inside the lung mask (NaN for an all-zero map)."""
    cam = np.asarray(cam, dtype=np.float64)
    lung = np.asarray(lung_mask, dtype=bool)
    if cam.shape != lung.shape:
        raise ValueError(f"cam and lung mask must have the same shape, got {cam.shape} and {lung.shape}")
    total = cam.sum()
    return float(cam[lung].sum() / total) if total > 0 else float("nan")


def score_cam(cam: np.ndarray, lesion_mask: np.ndarray | None, lung_mask: np.ndarray | None,
              top_fraction: float = 0.1) -> dict:
    """Pointing game, top-k IoU (lesion images) and lung energy fraction (where a lung mask exists).

    Missing masks give ``None`` for the scores that need them.
    """
    out = {"pointing_game": None, "topk_iou": None, "lung_energy": None, "lesion_fraction": None,
           "lung_fraction": None}
    if lesion_mask is not None:
        out["pointing_game"] = bool(metrics.pointing_game(cam, lesion_mask))
        out["topk_iou"] = float(metrics.topk_iou(cam, lesion_mask, top_fraction))
        out["lesion_fraction"] = float(np.mean(lesion_mask))
    if lung_mask is not None:
        out["lung_energy"] = lung_energy_fraction(cam, lung_mask)
        out["lung_fraction"] = float(np.mean(lung_mask))
    return out


# --------------------------------------------------------------------------- CAM sets

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
        cam_pred: ``(N, S, S)`` map of the predicted class (shown in figures and by ``xraylib predict``).
        info: model settings (framework, arch, image size, resize, equalize, target layer ...).
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

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def correct(self) -> np.ndarray:
        return self.y_true == self.y_pred


def save_camset(camset: CamSet, path: str | Path) -> Path:
    """Write a :class:`CamSet` to one compressed ``.npz`` file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"name": camset.name, "class_names": list(camset.class_names), "paths": list(camset.paths),
              "info": camset.info}
    np.savez_compressed(path, header=np.array(json.dumps(header)), images=camset.images.astype(np.uint8),
                        y_true=camset.y_true.astype(np.int64), y_pred=camset.y_pred.astype(np.int64),
                        probs=camset.probs.astype(np.float64), cam_true=camset.cam_true.astype(np.float32),
                        cam_pred=camset.cam_pred.astype(np.float32))
    return path


def load_camset(path: str | Path) -> CamSet:
    """Read a file written by :func:`save_camset`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CAM file {path} not found; it is written by `python -m xraylib.tf_gradcam`")
    with np.load(path, allow_pickle=False) as data:
        header = json.loads(str(data["header"]))
        arrays = {k: data[k] for k in CAMSET_ARRAYS}
    return CamSet(header["name"], header["class_names"], header["paths"], info=header.get("info", {}), **arrays)


def select_images(manifest: pd.DataFrame, split: str = "test", max_per_class: int = 0, seed: int = 0) -> pd.DataFrame:
    """The manifest rows whose maps are computed: one split, at most ``max_per_class`` per class (0 = all).

    Rows keep the manifest order within each class (sampling is seeded), classes in sorted order.
    """
    if "split" not in manifest.columns:
        raise ValueError("manifest has no 'split' column; build it with `xraylib prepare <task>`")
    rows = manifest[manifest["split"] == split]
    if rows.empty:
        raise ValueError(f"gradcam.split {split!r} has no images; splits present: {sorted(manifest['split'].unique())}")
    if int(max_per_class) < 0:
        raise ValueError(f"gradcam.max_per_class must be >= 0 (0 = all images), got {max_per_class!r}")
    parts = []
    for _, group in rows.groupby("label", sort=True):
        if max_per_class and len(group) > max_per_class:
            group = group.sample(int(max_per_class), random_state=int(seed)).sort_index()
        parts.append(group)
    return pd.concat(parts).reset_index(drop=True)


def run_keras_cams(model_path: str | Path, frame: pd.DataFrame, out_path: str | Path | None = None, *,
                   batch_size: int = 16, timeout: float = 1800) -> CamSet:
    """Grad-CAM of the Keras model on ``frame`` (``path``, ``label``), computed in a TensorFlow subprocess.

    Runs ``python -m xraylib.tf_gradcam MODEL --images CSV --out NPZ`` with this
    Python, so the calling process (e.g. the notebook, which imports torch) never
    loads TensorFlow.

    Args:
        model_path: the saved ``.keras`` model (with its ``.json`` sidecar).
        frame: images to map: ``path`` and ``label`` (true class name, or "" when unknown).
        out_path: keep the ``.npz`` (and the subprocess log as ``.log``) there; default: a
            temporary folder, removed afterwards.
        batch_size: images per forward/backward pass in the subprocess.
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
        command = [sys.executable, "-m", "xraylib.tf_gradcam", str(model_path), "--images", str(csv),
                   "--out", str(target), "--batch-size", str(int(batch_size))]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout,
                              cwd=config.PROJECT_ROOT)
        if out_path is not None:
            target.with_suffix(".log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
            raise RuntimeError(f"Keras Grad-CAM subprocess failed (exit {done.returncode}): "
                               f"{' '.join(command)}\n{tail}")
        return load_camset(target)


def score_camset(camset: CamSet, frame: pd.DataFrame, top_fraction: float = 0.1) -> pd.DataFrame:
    """One row per image: class, correctness and the scores of :func:`score_cam` on the true-class map.

    Args:
        camset: maps of one model; ``camset.paths`` must match ``frame["path"]`` in order.
        frame: the rows the maps were computed on, with ``label``, ``lesion_mask`` and ``lung_mask``.
        top_fraction: share of the map kept for the top-k IoU.

    Masks are resized like the images (the model's ``image_size`` and ``resize``
    from ``camset.info``). The true-class map is scored: the evidence the model
    finds for the finding that is really there.
    """
    if list(frame["path"]) != list(camset.paths):
        raise ValueError(f"CAM set {camset.name!r} does not match the image table: paths differ in content or order")
    size = camset.images.shape[1]
    mode = camset.info.get("resize", "stretch")
    rows = []
    for i, row in enumerate(frame.itertuples(index=False)):
        lesion = load_mask(getattr(row, "lesion_mask", ""), size, mode)
        lung = load_mask(getattr(row, "lung_mask", ""), size, mode)
        scores = score_cam(camset.cam_true[i], lesion, lung, top_fraction)
        rows.append({"model": camset.name, "path": row.path, "label": row.label,
                     "predicted": camset.class_names[int(camset.y_pred[i])],
                     "correct": bool(camset.y_true[i] == camset.y_pred[i]),
                     "empty_map": bool(camset.cam_true[i].max() <= 0), **scores})
    return pd.DataFrame(rows)


def _mean(values) -> float | None:
    values = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(values)) if values else None


def _summary(rows: pd.DataFrame) -> dict:
    lesion = rows[rows["pointing_game"].notna()]
    return {
        "images": int(len(rows)),
        "empty_maps": int(rows["empty_map"].sum()),
        "accuracy": float(rows["correct"].mean()) if len(rows) else None,
        "lesion_images": int(len(lesion)),
        "pointing_game": _mean(lesion["pointing_game"].astype(float)),
        "pointing_game_chance": _mean(lesion["lesion_fraction"]),
        "topk_iou": _mean(lesion["topk_iou"]),
        "lung_images": int(rows["lung_energy"].notna().sum()),
        "lung_energy": _mean(rows["lung_energy"]),
        "lung_energy_chance": _mean(rows["lung_fraction"]),
    }


def summarize_scores(scores: pd.DataFrame) -> dict:
    """Per-model summary of :func:`score_camset` rows: ``{"overall": ..., "per_class": {class: ...}}``.

    Each block has ``images``, ``empty_maps`` (maps without any positive value: nothing
    is pointed at; they count as misses), ``accuracy`` (on these images), ``lesion_images``,
    ``pointing_game`` (hit rate) with ``pointing_game_chance`` (mean lesion area: the
    hit rate of a random point), ``topk_iou``, ``lung_images``, ``lung_energy`` and
    ``lung_energy_chance`` (mean lung area: the share of a uniform map). ``None``
    where no image has the mask a score needs.
    """
    return {"overall": _summary(scores),
            "per_class": {label: _summary(group) for label, group in scores.groupby("label", sort=True)}}


def shortcut_findings(summaries: dict[str, dict], min_accuracy: float = 0.8, min_lung_energy: float = 0.5) -> list[str]:
    """Models that are accurate but whose maps lie mostly outside the lungs (possible shortcut learning).

    Args:
        summaries: ``{model: summarize_scores(...)}``.
        min_accuracy: accuracy from which a model counts as "scoring well".
        min_lung_energy: mean share of map energy inside the lungs below which it "looks elsewhere".

    Returns:
        One sentence per flagged model (empty when none); models without lung masks are not judged.
    """
    findings = []
    for name, summary in summaries.items():
        overall = summary["overall"]
        accuracy, energy = overall.get("accuracy"), overall.get("lung_energy")
        if accuracy is None or energy is None:
            continue
        if accuracy >= min_accuracy and energy < min_lung_energy:
            findings.append(
                f"{name}: accuracy {accuracy:.2f} but only {energy:.2f} of its Grad-CAM energy lies inside the lungs "
                f"(a uniform map would put {overall['lung_energy_chance']:.2f} there): it scores well while looking "
                f"elsewhere, a sign of shortcut learning.")
    return findings


def map_findings(infos: dict[str, dict], summaries: dict[str, dict], min_cells: int = 3) -> list[str]:
    """Models whose maps cannot localise: a target layer of fewer than ``min_cells`` cells a side, or mostly empty maps.

    Args:
        infos: ``{model: CamSet.info}`` (uses ``map_size`` and ``image_size``).
        summaries: ``{model: summarize_scores(...)}``.
        min_cells: smallest useful map side.

    Returns:
        One sentence per affected model (their localisation scores say little).
    """
    findings = []
    for name, info in infos.items():
        size = info.get("map_size")
        overall = summaries.get(name, {}).get("overall", {})
        empty, total = overall.get("empty_maps", 0), overall.get("images", 0)
        if size and min(size) < min_cells:
            findings.append(f"{name}: its Grad-CAM layer is only {size[0]}x{size[1]} at {info.get('image_size')}px "
                            f"input, too coarse to localise anything; its localisation scores are not meaningful "
                            f"(train at a larger image_size for usable maps).")
        elif total and empty / total > 0.5:
            findings.append(f"{name}: {empty} of {total} maps are empty (no positive evidence for the class); "
                            f"its localisation scores are not meaningful.")
    return findings


def summary_table(summaries: dict[str, dict]) -> pd.DataFrame:
    """One row per model and class (plus ``all``) with the headline scores, for display."""
    columns = ("images", "empty_maps", "accuracy", "pointing_game", "pointing_game_chance", "topk_iou",
               "lung_energy", "lung_energy_chance")
    rows = []
    for name, summary in summaries.items():
        for label, block in [("all", summary["overall"]), *summary["per_class"].items()]:
            rows.append({"model": name, "class": label, **{k: block[k] for k in columns}})
    table = pd.DataFrame(rows)
    numeric = [c for c in table.columns if c not in ("model", "class")]
    table[numeric] = table[numeric].apply(pd.to_numeric, errors="coerce")
    return table


# --------------------------------------------------------------------------- figures and overlay files

def pick_examples(camset: CamSet, class_index: int, correct: bool, n: int, seed: int = 0) -> np.ndarray:
    """Up to ``n`` indices of images of true class ``class_index`` that were (not) correctly predicted.

    Drawn with a seeded generator, returned in ascending order (reproducible figures).
    """
    candidates = np.flatnonzero((camset.y_true == class_index) & (camset.correct == bool(correct)))
    if len(candidates) > n:
        rng = np.random.default_rng([int(seed), int(class_index), int(correct)])
        candidates = np.sort(rng.choice(candidates, size=n, replace=False))
    return candidates


def camset_masks(camset: CamSet, frame: pd.DataFrame, column: str = "lesion_mask") -> np.ndarray:
    """``(N, S, S)`` bool masks of ``frame[column]`` resized like the CAM set's images (all False where none)."""
    if list(frame["path"]) != list(camset.paths):
        raise ValueError(f"CAM set {camset.name!r} does not match the image table: paths differ in content or order")
    size, mode = camset.images.shape[1], camset.info.get("resize", "stretch")
    masks = np.zeros(camset.images.shape, dtype=bool)
    for i, path in enumerate(frame[column] if column in frame.columns else []):
        mask = load_mask(path, size, mode)
        if mask is not None:
            masks[i] = mask
    return masks


def plot_class_examples(camset: CamSet, class_index: int, n: int = 4, seed: int = 0, colormap: str = "jet",
                        outlines: np.ndarray | None = None):
    """Figure of one class: top row correct predictions, bottom row wrong ones, each with its overlay.

    Each tile shows the predicted-class map (:func:`apply_mask`) with the predicted
    class and its probability; empty slots say that there was no such image.
    ``outlines`` (optional ``(N, S, S)`` bool, e.g. :func:`camset_masks`) are drawn as
    white contours (the true lesions on synthetic data).
    """
    import matplotlib.pyplot as plt

    name = camset.class_names[class_index]
    fig, axes = plt.subplots(2, n, figsize=(2.3 * n, 5.0), squeeze=False)
    for r, correct in enumerate((True, False)):
        chosen = pick_examples(camset, class_index, correct, n, seed)
        for c in range(n):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(chosen):
                i = int(chosen[c])
                k = int(camset.y_pred[i])
                ax.imshow(apply_mask(camset.images[i], camset.cam_pred[i], colormap))
                if outlines is not None and outlines[i].any():
                    ax.contour(outlines[i].astype(float), levels=[0.5], colors="white", linewidths=0.8)
                ax.set_title(f"pred {camset.class_names[k]}\np={camset.probs[i, k]:.2f}", fontsize=8)
            else:
                ax.set_facecolor("0.92")
                ax.text(0.5, 0.5, "no image" if c else f"no {'correct' if correct else 'wrong'}\nprediction",
                        ha="center", va="center", fontsize=8, transform=ax.transAxes)
            if c == 0:
                ax.set_ylabel("correct" if correct else "wrong", fontsize=10)
    fig.suptitle(f"{camset.name}: true class {name} (Grad-CAM of the predicted class)", fontsize=10)
    fig.tight_layout()
    return fig


def figure_name(model: str, class_name: str) -> str:
    """File name (without suffix) of a per-class figure: ``<model>_<class>`` with spaces as underscores."""
    return f"{model}_{class_name}".replace(" ", "_").replace("/", "-")


def _unique_name(stem: str, used: set[str]) -> str:
    name, k = stem, 1
    while name in used:
        k += 1
        name = f"{stem}-{k}"
    used.add(name)
    return name


def write_overlays(records: Iterable[dict], cam_dir: str | Path, colormap: str = "jet") -> pd.DataFrame:
    """Write one overlay PNG per image and ``cam_index.csv`` into ``cam_dir``.

    Args:
        records: dicts with ``path``, ``image`` (prepared uint8 HxW), ``cam`` ([0, 1], any size),
            ``label`` (predicted class name) and ``probability``.
        cam_dir: output folder (created).
        colormap: see :func:`apply_mask`.

    Returns:
        The index: ``path``, ``overlay`` (file name in ``cam_dir``), ``predicted``, ``probability``,
        ``peak_row`` and ``peak_col`` (map maximum, in prepared-image pixels).
    """
    from PIL import Image

    cam_dir = Path(cam_dir)
    cam_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    rows = []
    for record in records:
        image = np.asarray(record["image"])
        cam = np.asarray(record["cam"], dtype=np.float32)
        if cam.shape != image.shape[:2]:
            cam = upsample_cam(cam, image.shape[:2])
        name = _unique_name(f"{Path(record['path']).stem}_cam", used) + ".png"
        Image.fromarray(apply_mask(image, cam, colormap)).save(cam_dir / name)
        peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
        rows.append({"path": str(record["path"]), "overlay": name, "predicted": record.get("label", ""),
                     "probability": float(record.get("probability", float("nan"))),
                     "peak_row": int(peak[0]), "peak_col": int(peak[1])})
    index = pd.DataFrame(rows, columns=["path", "overlay", "predicted", "probability", "peak_row", "peak_col"])
    index.to_csv(cam_dir / "cam_index.csv", index=False, float_format="%.6g")
    return index
