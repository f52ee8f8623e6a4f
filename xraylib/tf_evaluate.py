"""Evaluation and prediction with a saved binary Keras model (``xraylib evaluate`` / ``xraylib predict``).

The model's settings are read from the JSON saved beside it
(:func:`xraylib.tf_model.save_model`): class names, image size, resize and
equalisation (so images are prepared exactly as in training), test-time
augmentation and the decision threshold chosen on the validation split
(Youden's J), which is applied unchanged to new data.

The report helpers (:func:`report_figures`, :func:`curve_frames`,
:func:`summarize`) are shared by notebook 03 and :func:`evaluate_folder`, so
internal and external evaluations look the same.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from xraylib import config, data, images, metrics, plots, tf_data, tf_model, tf_train

STORED = "stored_threshold"
ORIGINAL_THRESHOLD = 0.75


def confusion(y_true, y_prob, threshold: float) -> np.ndarray:
    """2x2 confusion matrix at ``threshold``: rows = true class, columns = predicted class."""
    y_pred = (np.asarray(y_prob) >= threshold).astype(int)
    return skm.confusion_matrix(np.asarray(y_true).astype(int), y_pred, labels=[0, 1])


def curve_frames(y_true, y_prob) -> dict[str, pd.DataFrame]:
    """ROC, precision-recall and reliability curves as tables (for DVC plots)."""
    fpr, tpr, roc_t = skm.roc_curve(y_true, y_prob)
    precision, recall, pr_t = skm.precision_recall_curve(y_true, y_prob)
    return {
        "roc": pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": np.clip(roc_t, 0, 1)}),
        "pr": pd.DataFrame({"recall": recall, "precision": precision,
                            "threshold": np.append(pr_t, 1.0).clip(0, 1)}),
        "calibration": metrics.reliability_curve(y_true, y_prob),
    }


def report_figures(y_true, y_prob, thresholds: dict[str, float], class_names: list[str],
                   title: str = "test") -> dict:
    """Confusion matrix per threshold (rows = true labels), ROC, precision-recall and reliability figures."""
    figures = {}
    for name, threshold in thresholds.items():
        figures[f"confusion_{name}"] = plots.plot_confusion_matrix(
            confusion(y_true, y_prob, threshold), class_names, title=f"{title}: {name} = {threshold:.3f}")
    figures["roc"] = plots.plot_roc({title: (y_true, y_prob)}, title=f"ROC curve ({title})")
    figures["pr"] = plots.plot_pr({title: (y_true, y_prob)}, title=f"precision-recall ({title})")
    figures["reliability"] = plots.plot_reliability({title: metrics.reliability_curve(y_true, y_prob)},
                                                    title=f"calibration ({title})")
    return figures


def summarize(report: dict, thresholds: dict[str, float]) -> dict:
    """The headline numbers of a :func:`xraylib.metrics.binary_report` (AUC and rates per threshold)."""
    out = {"n": report["n"], "n_positive": report["n_positive"]}
    for key in ("roc_auc", "roc_auc_ci", "average_precision", "brier", "ece"):
        if key in report:
            out[key] = report[key]
    for name in thresholds:
        entry = report[name]
        out[name] = {k: entry[k] for k in ("threshold", "accuracy", "sensitivity", "specificity", "precision", "f1",
                                           "sensitivity_ci", "specificity_ci") if k in entry}
    return out


def summary_table(summary: dict, thresholds: dict[str, float], digits: int = 3) -> pd.DataFrame:
    """One row per threshold: accuracy, sensitivity, specificity, precision, F1 (rounded, for printing)."""
    rows = []
    for name in thresholds:
        entry = summary[name]
        rows.append({"threshold": name, "value": entry["threshold"],
                     **{k: entry[k] for k in ("accuracy", "sensitivity", "specificity", "precision", "f1")}})
    return pd.DataFrame(rows).set_index("threshold").round(digits)


def _model_thresholds(meta: dict) -> dict[str, float]:
    if "threshold" not in meta:
        raise KeyError("the model's settings (.json) have no 'threshold'; re-save it with xraylib.tf_model.save_model")
    return {STORED: float(meta["threshold"]), "original_0.75": float(meta.get("original_threshold",
                                                                              ORIGINAL_THRESHOLD))}


def evaluate_folder(model_path: Path, folder: Path, out_dir: Path, batch_size: int = 32) -> dict:
    """Evaluate a saved model on a class-per-folder image set (e.g. ``NORMAL/`` and ``PNEUMONIA/``).

    Bad files are quarantined by :func:`xraylib.data.scan_source` and listed in the
    results. Writes ``metrics.json``, ``predictions.csv``, ``quarantine.csv``,
    curve CSVs and figures into ``out_dir``. The decision threshold is the one
    stored with the model (chosen on the validation split); the original 0.75 is
    reported beside it.

    Returns:
        dict with ``summary`` (headline numbers), ``report`` (all metrics) and ``quarantine``.

    Raises:
        FileNotFoundError: model, settings or folder missing.
        ValueError: class folders that are not classes of the model.
    """
    model, meta = tf_model.load_model(model_path, require=tf_model.SETTINGS_KEYS)
    class_names = list(meta["class_names"])
    scan = data.scan_source("folder", folder, progress=False)
    frame = scan.manifest
    unknown = sorted(set(scan.classes) - set(class_names))  # class folders, also those left empty
    if unknown:
        raise ValueError(f"class folders {unknown} in '{folder}' are not classes of the model {class_names}; "
                         f"expected subfolders named {class_names}")
    y_true = tf_data.encode_labels(frame["label"], class_names)
    dataset = tf_data.image_dataset(frame["path"], y_true, image_size=int(meta["image_size"]),
                                    resize_mode=meta["resize"], equalize_method=meta["equalize"],
                                    batch_size=int(batch_size), cache=False)
    y_prob = tf_train.predict_proba(model, dataset, meta.get("tta", "none"))
    thresholds = _model_thresholds(meta)
    report = metrics.binary_report(y_true, y_prob, thresholds, n_resamples=1000, seed=0)
    summary = {"model": config.relative_to_project(model_path), "data": config.relative_to_project(folder),
               "images": int(len(frame)), "quarantined": int(len(scan.quarantine)), "tta": meta.get("tta", "none"),
               **summarize(report, thresholds)}

    out_dir = config.resolve(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictions = pd.DataFrame({"path": frame["path"], "label": frame["label"],
                                f"probability_{class_names[1]}": np.round(y_prob, 6)})
    predictions["predicted"] = np.where(y_prob >= thresholds[STORED], class_names[1], class_names[0])
    predictions.to_csv(out_dir / "predictions.csv", index=False)
    scan.quarantine.to_csv(out_dir / "quarantine.csv", index=False)
    result = {"summary": summary, "report": report,
              "quarantine": scan.quarantine.to_dict(orient="records"), "warnings": scan.warnings}
    plots.write_json(result, out_dir / "metrics.json", digits=6)
    if len(np.unique(y_true)) == 2:
        for name, table in curve_frames(y_true, y_prob).items():
            table.to_csv(out_dir / f"{name}.csv", index=False, float_format="%.6g")
        for name, fig in report_figures(y_true, y_prob, thresholds, class_names, title="external").items():
            fig.savefig(out_dir / f"{name}.png", dpi=plots.DPI, bbox_inches="tight")
            plots.plt.close(fig)
    return result


def _expand_inputs(inputs: list[Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files and folders to image files, by the same rules as every other reader (:func:`data.collect_images`)."""
    return data.collect_images(inputs)


def predict_files(model_path: Path, inputs: list[Path], output_csv: Path, cam_dir: Path | None = None) -> dict:
    """Predict class probabilities for image files and folders (searched recursively).

    A file that cannot be read as an image is reported and skipped. Writes a CSV
    with ``path``, ``predicted`` (at the stored threshold) and one probability
    column per class. With ``cam_dir``, Grad-CAM overlays of the predicted class
    are written there (:func:`xraylib.tf_gradcam.save_overlays`).

    Returns:
        ``{"predicted": number of images predicted, "skipped": [(path, reason), ...], "output": csv path}``.
    """
    model, meta = tf_model.load_model(model_path, require=tf_model.SETTINGS_KEYS)
    class_names = list(meta["class_names"])
    size, resize, equalize = int(meta["image_size"]), meta["resize"], meta["equalize"]
    threshold = _model_thresholds(meta)[STORED]
    files, skipped = _expand_inputs(list(inputs))
    kept, prepared = [], []
    for path in files:
        try:
            prepared.append(images.prepare(path, size, resize, equalize))
            kept.append(path)
        except (images.ImageReadError, FileNotFoundError, ValueError) as err:
            skipped.append((str(path), str(err)))
    output_csv = config.resolve(output_csv)
    output_csv.parent.mkdir(parents=True, exist_ok=True)
    columns = ["path", "predicted", *[f"probability_{c}" for c in class_names]]
    if not kept:
        pd.DataFrame(columns=columns).to_csv(output_csv, index=False)
        return {"predicted": 0, "skipped": skipped, "output": str(output_csv)}
    batch = np.stack(prepared)
    p = tf_train.predict_proba(model, batch, meta.get("tta", "none"))
    predicted = (p >= threshold).astype(int)
    table = pd.DataFrame({"path": [str(k) for k in kept], "predicted": [class_names[i] for i in predicted],
                          f"probability_{class_names[0]}": np.round(1.0 - p, 6),
                          f"probability_{class_names[1]}": np.round(p, 6)})
    table.to_csv(output_csv, index=False)
    if cam_dir is not None:
        from xraylib import tf_gradcam  # written by the Grad-CAM work; imported only when overlays are asked for

        items = [{"path": str(k), "image": img, "predicted": int(c), "label": class_names[int(c)],
                  "probability": float(prob if c else 1.0 - prob)}
                 for k, img, c, prob in zip(kept, prepared, predicted, p)]
        tf_gradcam.save_overlays(model, items, cam_dir)
    return {"predicted": len(kept), "skipped": skipped, "output": str(output_csv)}
