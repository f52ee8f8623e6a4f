"""Evaluation reports shared by both frameworks: tables, figures and headline numbers (no framework imports).

Binary (the Keras study, notebook 03, and ``xraylib evaluate`` on any binary model):
:func:`confusion`, :func:`curve_frames`, :func:`report_figures`, :func:`summarize` and
:func:`summary_table` turn a :func:`xraylib.metrics.binary_report` into what a reader
sees, so internal and external evaluations look the same. Multi-class (the PyTorch
study, notebook 04, and ``xraylib evaluate`` on a multi-class model):
:func:`per_class_table` and :func:`confusion_frame`.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from xraylib import metrics, plots

STORED = "stored_threshold"
ORIGINAL_THRESHOLD = 0.75


def safe_column(name: str) -> str:
    """A class name as a CSV column suffix: runs of other characters than letters and digits become ``_``."""
    return re.sub(r"[^0-9A-Za-z]+", "_", str(name)).strip("_") or "class"


def decisions_frame(y_true, y_prob, threshold: float, class_names) -> pd.DataFrame:
    """``label`` and ``predicted`` class names per image at ``threshold`` (DVC's confusion-matrix plot data)."""
    names = np.asarray(list(class_names))
    return pd.DataFrame({"label": names[np.asarray(y_true).astype(int)],
                         "predicted": names[(np.asarray(y_prob) >= threshold).astype(int)]})


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


def per_class_table(report: dict) -> pd.DataFrame:
    """Per-class precision, recall (sensitivity), F1, specificity and support from a report."""
    columns = ["precision", "recall", "f1", "specificity", "support"]
    frame = pd.DataFrame(report["per_class"]).T[columns]
    frame.index.name = "class"
    return frame.astype({"support": int})


def confusion_frame(report: dict) -> pd.DataFrame:
    """The report's confusion matrix as a table: rows ``true <class>``, columns ``predicted <class>``."""
    names = report["class_names"]
    return pd.DataFrame(report["confusion_matrix"], index=pd.Index(names, name="true \\ predicted"), columns=names)


def multiclass_figures(y_true, y_prob, class_names: list[str], report: dict, title: str = "test") -> dict:
    """The figures of a multi-class evaluation, named as the binary ones: ``confusion_argmax`` and
    one-vs-rest ``roc``, ``pr`` and ``reliability`` curves, one line per class present in ``y_true``."""
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob)
    present = [k for k, _ in enumerate(class_names) if 0 < (y_true == k).sum() < len(y_true)]
    one_vs_rest = {class_names[k]: ((y_true == k).astype(int), y_prob[:, k]) for k in present}
    figures = {"confusion_argmax": plots.plot_confusion_matrix(report["confusion_matrix"], class_names,
                                                               title=f"{title}: most probable class")}
    if one_vs_rest:
        figures["roc"] = plots.plot_roc(one_vs_rest, title=f"ROC, one class vs the rest ({title})")
        figures["pr"] = plots.plot_pr(one_vs_rest, title=f"precision-recall, one vs rest ({title})")
        figures["reliability"] = plots.plot_reliability(
            {name: metrics.reliability_curve(*pair) for name, pair in one_vs_rest.items()},
            title=f"calibration, one vs rest ({title})")
    return figures
