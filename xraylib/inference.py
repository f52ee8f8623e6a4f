"""Using a trained model on new images, the same way for both frameworks (imports no framework).

A saved model is opened as a :class:`Classifier` by its framework's back end
(:mod:`xraylib.tf_backend` for ``.keras``, :mod:`xraylib.torch_backend` for ``.pt``),
chosen from the file, which is looked at before the framework is imported.
Everything after loading is written once, here: folder collection, image
preparation (exactly as in training, from the model's :class:`ModelSettings`), the
decision, the CSV schema, the evaluation report and its figures.

The decision: a binary model predicts its positive class (``class_names[1]``) when
that probability reaches the **threshold stored with the model** (chosen on the
validation split at training time); a multi-class model takes the most probable class.

CSV columns, the same for both frameworks (``evaluate`` adds ``label`` after ``path``):
``path, predicted, threshold, prob_<class>..., model, data_source``; class names
become safe column names (``prob_Viral_Pneumonia``); ``threshold`` is empty for
multi-class models.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from xraylib import calibration, config, data, evaluation, images, metrics, model_files, outputs, plots
from xraylib import site_calibration as site_calibration_module
from xraylib.evaluation import safe_column  # noqa: F401  (part of this module's interface: the CSV schema)

FRAMEWORKS = {".keras": "keras", ".pt": "torch", ".pth": "torch"}
BATCH = 32  # images prepared and predicted at a time (memory stays flat on large folders)


@dataclass(frozen=True)
class ModelSettings:
    """What a saved model carries about itself, read in one place (:meth:`from_metadata`).

    ``threshold`` (binary models): the probability of ``class_names[1]`` at or above
    which it is predicted; ``None`` for multi-class models. ``data_source``: where the
    training images came from (``synthetic``, ``kermany``, ...; ``""`` when the model
    file does not say). ``recalibration``: the map fitted on the validation split at training
    time (:mod:`xraylib.calibration`; ``{"method": "none"}`` when the model has none), from
    ``model.json`` (Keras) or the ``calibration.json`` beside a checkpoint (PyTorch).
    """

    framework: str
    arch: str
    class_names: tuple[str, ...]
    image_size: int
    resize: str
    equalize: str
    threshold: float | None
    original_threshold: float | None
    tta: str
    data_source: str
    recalibration: Mapping = dataclasses.field(default_factory=lambda: {"method": "none"})

    @classmethod
    def from_metadata(cls, meta: Mapping, *, framework: str, path: str | Path) -> "ModelSettings":
        """Settings from a Keras ``model.json`` or a PyTorch checkpoint's metadata.

        Raises:
            ModelFileError: a key every reader needs is missing (one line naming the file and the keys).
        """
        needed = ["class_names", "image_size", "resize", "equalize"] + (["threshold"] if framework == "keras" else [])
        missing = [k for k in needed if k not in meta]
        if missing:
            raise model_files.ModelFileError(f"'{path}' lacks the settings {missing}; every xraylib model carries "
                                             f"{needed} (written at training time)")
        names = tuple(str(c) for c in meta["class_names"])
        recalibration = meta.get("calibration")
        sidecar = Path(path).parent / "calibration.json"
        if recalibration is None and framework == "torch" and sidecar.is_file():
            recalibration = json.loads(sidecar.read_text())
        binary = framework == "keras"  # the Keras study is binary; the PyTorch models decide by arg-max
        return cls(
            framework=framework,
            arch=str(meta.get("backbone") or meta.get("arch") or "unknown"),
            class_names=names,
            image_size=int(meta["image_size"]),
            resize=str(meta["resize"]),
            equalize=str(meta["equalize"]),
            threshold=float(meta["threshold"]) if binary else None,
            original_threshold=float(meta["original_threshold"]) if binary and "original_threshold" in meta else None,
            tta=str(meta.get("tta", "none")),  # only Keras models have test-time augmentation
            data_source=str(meta.get("data_source", "")),
            recalibration=dict(recalibration) if recalibration else {"method": "none"},
        )

    def recalibrate(self, probabilities: np.ndarray) -> np.ndarray:
        """``(N, C)`` probabilities after the stored recalibration map (unchanged when there is none)."""
        if self.recalibration.get("method", "none") == "none":
            return probabilities
        if len(self.class_names) == 2 and self.threshold is not None:
            positive = calibration.apply_binary(self.recalibration, probabilities[:, 1])
            return np.column_stack([1.0 - positive, positive])
        return calibration.apply_multiclass(self.recalibration, probabilities)

    def decide(self, probabilities: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """Class index per row of ``(N, C)`` probabilities: the stored (or given) threshold, else arg-max."""
        threshold = self.threshold if threshold is None else threshold
        if threshold is not None and len(self.class_names) == 2:
            return (probabilities[:, 1] >= threshold).astype(int)
        return probabilities.argmax(axis=1)

    def thresholds(self) -> dict[str, float]:
        """Named thresholds a binary evaluation reports: the stored one and, if recorded, the original 0.75."""
        if self.threshold is None:
            return {}
        named = {evaluation.STORED: self.threshold}
        if self.original_threshold is not None:
            named[f"original_{self.original_threshold:g}"] = self.original_threshold
        return named


class Classifier(Protocol):
    """A loaded model of either framework, as everything after loading sees it."""

    path: Path
    settings: ModelSettings

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """``(N, S, S)`` uint8 images prepared by the model's settings -> ``(N, C)`` class probabilities."""

    def cams(self, images: np.ndarray, classes: Sequence[int]) -> np.ndarray:
        """Grad-CAM of ``classes[i]`` on image ``i`` of ``(N, S, S)`` prepared uint8 images -> ``(N, h, w)`` maps
        in [0, 1], at the target layer's resolution or the image size (the overlays are written from them,
        once for both frameworks: :mod:`xraylib.gradcam_overlays`)."""


def model_framework(path: Path) -> str:
    """``keras`` or ``torch`` from the file name, after checking the file (before any framework import).

    Raises:
        FileNotFoundError: no such file.
        ModelFileError: the file is not what its suffix says (one line: what it is).
        ValueError: an unknown suffix.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file {path} not found; train it with `dvc repro` first")
    framework = FRAMEWORKS.get(path.suffix.lower())
    if framework is None:
        raise ValueError(f"unknown model type {path.name!r}; expected a .keras (binary Keras) or .pt (PyTorch) file")
    if framework == "keras":
        model_files.check_keras_archive(path)
    else:
        what = model_files.describe(path)
        if not what.startswith(("a PyTorch file", "a truncated or damaged PyTorch file")):
            raise model_files.not_a_model(path, model_files.TORCH_CHECKPOINT, what)
    return framework


def load_classifier(path: str | Path) -> Classifier:
    """Open a saved model with its framework's back end (the only place a framework gets imported)."""
    path = config.resolve(path)
    framework = model_framework(path)
    backend = importlib.import_module(f"xraylib.{'tf' if framework == 'keras' else 'torch'}_backend")
    return backend.load_classifier(path)


def warn_if_synthetic(model: Classifier) -> str | None:
    """Warn (and return the text) when the model was trained on the synthetic demo images."""
    if model.settings.data_source != "synthetic":
        return None
    text = (f"{model.path.name} was trained on the synthetic demo images (data_source: synthetic); its outputs on "
            "real radiographs mean nothing. Train it on real data first (README, Profiles)")
    warnings.warn(text, stacklevel=2)
    return text


def prepared_batches(model: Classifier, paths: Sequence[Path], batch_size: int = BATCH
                     ) -> Iterator[tuple[list[Path], np.ndarray, list[tuple[str, str]]]]:
    """``(kept paths, prepared uint8 images, skipped (path, reason))`` in batches of ``batch_size``."""
    s = model.settings
    for start in range(0, len(paths), batch_size):
        kept, arrays, skipped = [], [], []
        for path in paths[start:start + batch_size]:
            try:
                arrays.append(images.prepare(path, s.image_size, s.resize, s.equalize))
                kept.append(Path(path))
            except (images.ImageReadError, FileNotFoundError) as err:
                skipped.append((str(path), f"unreadable image: {err}"))
        yield kept, (np.stack(arrays) if arrays else np.zeros((0, s.image_size, s.image_size), np.uint8)), skipped


def predictions_table(model: Classifier, paths: Sequence[Path | str], probabilities: np.ndarray,
                      labels: Sequence[str] | None = None) -> pd.DataFrame:
    """The CSV schema of predict and evaluate (module docstring) for ``probabilities`` ``(N, C)``."""
    s = model.settings
    table = pd.DataFrame({"path": [config.relative_to_project(p) for p in paths]})
    if labels is not None:
        table["label"] = list(labels)
    table["predicted"] = [s.class_names[i] for i in s.decide(probabilities)] if len(table) else []
    table["threshold"] = s.threshold if s.threshold is not None else np.nan
    for k, name in enumerate(s.class_names):
        table[f"prob_{safe_column(name)}"] = np.round(probabilities[:, k], 6) if len(table) else []
    table["model"] = config.relative_to_project(model.path)
    table["data_source"] = s.data_source
    return table


def predict_files(model: Classifier, inputs: Sequence[str | Path], output_csv: str | Path,
                  cam_dir: str | Path | None = None) -> dict:
    """Predict image files and folders (read by :func:`xraylib.data.collect_images`) into one CSV.

    Unreadable files are skipped with the reason and the rest is predicted. With
    ``cam_dir``, the Grad-CAM map of each image's predicted class (``model.cams``) is
    written there at the image's original resolution, with a titled figure and
    ``cam_index.csv`` (:class:`xraylib.gradcam_overlays.OverlayWriter`).

    Returns:
        ``{"predicted": n, "skipped": [(path, reason), ...], "output": csv path, "warning": text or None}``.
    """
    warning = warn_if_synthetic(model)
    files, skipped = data.collect_images(inputs)
    s = model.settings
    overlays = None
    if cam_dir is not None:
        from xraylib import gradcam_overlays  # matplotlib figures: loaded only when overlays are asked for

        overlays = gradcam_overlays.OverlayWriter(config.resolve(cam_dir), s.image_size, s.resize)
    kept, probs = [], []
    for batch_paths, batch, batch_skipped in prepared_batches(model, files):
        skipped += batch_skipped
        if not len(batch):
            continue
        p = model.predict_proba(batch)
        kept += batch_paths
        probs.append(p)
        if overlays is not None:  # written batch by batch: memory stays flat on large folders
            decided = s.decide(p)
            for path, cam, k, row in zip(batch_paths, model.cams(batch, decided), decided, p):
                overlays.add(path, cam, s.class_names[int(k)], float(row[int(k)]))
    probabilities = np.concatenate(probs) if probs else np.zeros((0, len(s.class_names)))
    output_csv = config.resolve(output_csv)
    output_csv.parent.mkdir(parents=True, exist_ok=True)
    predictions_table(model, kept, probabilities).to_csv(output_csv, index=False)
    if overlays is not None:
        overlays.finish()
    return {"predicted": len(kept), "skipped": skipped, "output": str(output_csv), "warning": warning}


def evaluate_folder(model: Classifier, folder: str | Path, out_dir: str | Path, *, batch_size: int = BATCH,
                    site_calibration: str = "none") -> dict:
    """Evaluate a model on a class-per-folder image set whose folders are (some of) its classes.

    The folder is read by the data stage's rules (:func:`xraylib.data.scan_source`,
    source ``folder``): bad files are quarantined, label conflicts left out. Writes to
    ``out_dir``: ``predictions.csv`` (the CSV schema with ``label``), ``quarantine.csv``,
    ``label_conflicts.csv``, ``metrics.json`` (``summary``, ``report``, ``quarantine``,
    ``warnings``) and, for both kinds of model, ``confusion_*.png``, ``roc.png``,
    ``pr.png`` and ``reliability.png``, each also as SVG (one-vs-rest per class for multi-class models).
    Every figure has a 95 % bootstrap interval that resamples patients when the file names carry
    patient ids (Kermany's ``personN`` / ``IM-NNNN``), single images otherwise (then a warning says so);
    a model with a stored recalibration map also reports calibration before and after it.

    ``site_calibration`` (``platt`` or ``temperature``; binary models) adds a separate, labelled
    ``site_calibration`` block: threshold and map fitted on this set's own patients by 2-fold
    cross-fitting (:mod:`xraylib.site_calibration`); the plain report is unchanged.

    Raises:
        ValueError: class folders that are not classes of the model.
    """
    s = model.settings
    folder, out_dir = config.resolve(folder), config.resolve(out_dir)
    warning = warn_if_synthetic(model)
    scan = data.scan_source("folder", folder, progress=False)
    unknown = sorted(set(scan.classes) - set(s.class_names))  # class folders, also those left empty
    if unknown:
        raise ValueError(f"class folders {unknown} in '{folder}' are not classes of the model {list(s.class_names)}; "
                         f"expected subfolders named like the training classes")
    paths, labels, probs, skipped = [], [], [], []
    label_of = {config.resolve(p): label for p, label in zip(scan.manifest["path"], scan.manifest["label"])}
    group_of = dict(zip((config.resolve(p) for p in scan.manifest["path"]), evaluation.bootstrap_groups(scan.manifest)))
    for batch_paths, batch, batch_skipped in prepared_batches(model, list(label_of), batch_size):
        skipped += batch_skipped
        if len(batch):
            paths += batch_paths
            labels += [label_of[p] for p in batch_paths]
            probs.append(model.predict_proba(batch))
    if not paths:
        raise ValueError(f"no usable image under '{folder}' to evaluate")
    probabilities = np.concatenate(probs)
    y_true = np.array([s.class_names.index(label) for label in labels])
    groups = np.array([group_of[p] for p in paths])  # patient ids parsed from the file names where they carry one
    calibrated = s.recalibrate(probabilities)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = predictions_table(model, paths, probabilities, labels)
    outputs.write_table(table, out_dir / "predictions.csv")
    quarantine = pd.concat([scan.quarantine, pd.DataFrame(
        [{"path": p, "label": "", "reason": r} for p, r in skipped], columns=data.QUARANTINE_COLUMNS)],
        ignore_index=True)
    outputs.write_table(quarantine, out_dir / "quarantine.csv")
    outputs.write_table(scan.conflicts, out_dir / "label_conflicts.csv")
    summary = {"model": config.relative_to_project(model.path), "framework": s.framework, "arch": s.arch,
               "data": config.relative_to_project(folder), "data_source_of_model": s.data_source,
               "images": len(paths), "quarantined": len(quarantine), "label_conflicts": len(scan.conflicts),
               "class_names": list(s.class_names)}
    if s.threshold is not None:
        thresholds = s.thresholds()
        report = metrics.binary_report(y_true, probabilities[:, 1], thresholds, n_resamples=1000, seed=0,
                                       groups=groups)
        summary.update(evaluation.summarize(report, thresholds))
        if s.recalibration.get("method", "none") != "none":
            report["calibration"] = metrics.calibration_report(y_true, probabilities[:, 1], calibrated[:, 1],
                                                               s.recalibration, n_resamples=1000, seed=0,
                                                               groups=groups)
            summary["calibration"] = {when: report["calibration"][when] for when in ("before", "after")}
        if site_calibration != "none":
            report["site_calibration"] = site_calibration_module.report(y_true, probabilities[:, 1], groups,
                                                                        site_calibration, n_resamples=1000, seed=0)
            summary["site_calibration"] = site_calibration_module.summary(report["site_calibration"])
        figures = {}
        if len(np.unique(y_true)) == 2:  # curves need both classes
            figures = evaluation.report_figures(y_true, probabilities[:, 1], thresholds, list(s.class_names),
                                                title=folder.name)
            for name, curve in evaluation.curve_frames(y_true, probabilities[:, 1]).items():
                outputs.write_plot_data(curve, name, out_dir)
    else:
        if site_calibration != "none":
            raise ValueError("site calibration is for binary models (a threshold and a one-parameter map); "
                             f"{model.path.name} has {len(s.class_names)} classes")
        report = metrics.multiclass_report(y_true, probabilities, list(s.class_names), n_resamples=1000, seed=0,
                                           groups=groups)
        summary.update({k: report[k] for k in ("accuracy", "accuracy_ci", "balanced_accuracy", "balanced_accuracy_ci",
                                               "macro_f1", "macro_f1_ci", "macro_auc_ovr", "macro_auc_ovr_ci")
                        if k in report})
        if s.recalibration.get("method", "none") != "none":
            report["calibration"] = metrics.multiclass_calibration_report(
                y_true, probabilities, calibrated, s.recalibration, n_resamples=1000, seed=0, groups=groups)
            summary["calibration"] = {when: report["calibration"][when] for when in ("before", "after")}
        summary["bootstrap"] = report["bootstrap"]
        summary["per_class"] = evaluation.per_class_table(report).to_dict(orient="index")
        summary["confusion_matrix"] = report["confusion_matrix"]
        figures = evaluation.multiclass_figures(y_true, probabilities, list(s.class_names), report,
                                                title=folder.name)
    for name, fig in figures.items():
        plots.save_figure(fig, name, folder=out_dir)
    warnings_list = list(scan.warnings) + ([warning] if warning else [])
    if len(set(groups)) == len(groups) and len(groups) > 1:
        warnings_list.append("no patient ids in the file names: the confidence intervals resample single images "
                             "(image-level), which is too narrow if a patient has several images")
    result = {"summary": summary, "report": report, "quarantine": quarantine.to_dict(orient="records"),
              "warnings": warnings_list}
    outputs.write_metrics(result, "metrics", out_dir)
    return outputs.to_json_safe(result, digits=None)


def confident_errors(model: Classifier, predictions: pd.DataFrame, true_class: str, n: int = 8
                     ) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """The ``n`` images of ``true_class`` the model got wrong most confidently, with Grad-CAM overlays.

    Args:
        model: the classifier that wrote ``predictions``.
        predictions: the CSV schema with ``label`` (``predictions.csv`` of :func:`evaluate_folder`).
        true_class: e.g. ``NORMAL``: its images predicted as another class, highest probability
            of the predicted class first.

    Returns:
        ``(prepared images, Grad-CAM overlays as RGB, titles)`` for :func:`xraylib.plots.plot_image_grid`;
        the map is of the (wrongly) predicted class: what drove the wrong call.
    """
    from xraylib import gradcam_maps

    s = model.settings
    if true_class not in s.class_names:
        raise ValueError(f"{true_class!r} is not a class of the model {list(s.class_names)}")
    wrong = predictions[(predictions["label"] == true_class) & (predictions["predicted"] != true_class)].copy()
    wrong["confidence"] = [row[f"prob_{safe_column(row['predicted'])}"] for _, row in wrong.iterrows()]
    wrong = wrong.sort_values("confidence", ascending=False, kind="stable").head(n)
    if wrong.empty:
        return [], [], []
    batch = np.stack([images.prepare(config.resolve(p), s.image_size, s.resize, s.equalize) for p in wrong["path"]])
    classes = [s.class_names.index(c) for c in wrong["predicted"]]
    cams = model.cams(batch, classes)
    overlays = [gradcam_maps.apply_mask(img, gradcam_maps.upsample_cam(cam, img.shape)) for img, cam in zip(batch, cams)]
    titles = [f"{Path(p).name}\n{c} {conf:.2f}" for p, c, conf in zip(wrong["path"], wrong["predicted"],
                                                                      wrong["confidence"])]
    return list(batch), overlays, titles
