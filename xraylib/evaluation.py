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

from xraylib import calibration, metrics, plots, statistics

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
        "calibration": calibration.reliability_curve(y_true, y_prob),
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
    figures["reliability"] = plots.plot_reliability({title: calibration.reliability_curve(y_true, y_prob)},
                                                    title=f"calibration ({title})")
    return figures


def summarize(report: dict, thresholds: dict[str, float]) -> dict:
    """The headline numbers of a :func:`xraylib.metrics.binary_report`, each with its interval, per threshold too."""
    out = {"n": report["n"], "n_positive": report["n_positive"]}
    for key in ("roc_auc", "average_precision", "brier", "ece"):
        if key in report:
            out[key], out[f"{key}_ci"] = report[key], report.get(f"{key}_ci")
    for name in thresholds:
        entry = report[name]
        out[name] = {k: entry[k] for k in ("threshold", *metrics.RATES,
                                           *(f"{rate}_ci" for rate in metrics.RATES)) if k in entry}
    if "bootstrap" in report:
        out["bootstrap"] = report["bootstrap"]
    return out


def format_ci(value, ci, digits: int = 3) -> str:
    """``0.912 [0.871, 0.944]``: a value and its interval; the value alone without one, ``n/a`` without a value."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    if not ci or ci[0] is None:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def summary_table(summary: dict, thresholds: dict[str, float], digits: int = 3) -> pd.DataFrame:
    """One row per threshold: each rate with its 95 % interval, as ``value [low, high]`` text (for reading)."""
    rows = []
    for name in thresholds:
        entry = summary[name]
        rows.append({"threshold": name, "value": f"{entry['threshold']:.{digits}f}",
                     **{k: format_ci(entry[k], entry.get(f"{k}_ci"), digits) for k in metrics.RATES if k in entry}})
    return pd.DataFrame(rows).set_index("threshold")


def headline_table(report: dict, keys, digits: int = 3) -> pd.DataFrame:
    """The figures ``keys`` of a report with their 95 % intervals, one row each (``value``, ``ci_low``, ``ci_high``)."""
    rows = []
    for key in keys:
        if key in report:
            ci = report.get(f"{key}_ci") or [None, None]
            rows.append({"figure": key, "value": report[key], "ci_low": ci[0], "ci_high": ci[1]})
    return pd.DataFrame(rows).set_index("figure").astype(float).round(digits)


EXTERNAL_FIGURES = ("roc_auc", "average_precision", "accuracy", "sensitivity", "specificity", "precision", "npv",
                    "balanced_accuracy", "ece", "brier")
SITE_CALIBRATED = "site-calibrated"  # xraylib.site_calibration.LABEL: the block and column name of that mode


def external_table(internal: dict, internal_threshold: str, external: dict[str, dict], external_threshold: str,
                   digits: int = 3, internal_calibration: dict | None = None) -> pd.DataFrame:
    """Internal test figures beside each external set's, as ``value [low, high]`` text.

    Rows are :data:`EXTERNAL_FIGURES` (``ece`` of the probabilities as trained) and ``ece_recalibrated``
    (after the recalibration fitted on validation, where the report has it). An external report with a
    ``site_calibration`` block (:func:`xraylib.site_calibration.report`) adds a column
    ``<name> (site-calibrated)``: rates at thresholds fitted on the site's own patients (cross-fitted)
    and the ECE after the site's map; its ROC-AUC and AP are the model's, unchanged, so left blank.

    Args:
        internal: the internal test's :func:`xraylib.metrics.binary_report`.
        internal_threshold: its block of the decision threshold (``youden_val``).
        external: ``{set name: binary_report}`` of the same model on each external set (with its
            ``calibration`` block from :func:`xraylib.inference.evaluate_folder`).
        external_threshold: their block of the same threshold (:data:`STORED`, as ``xraylib evaluate`` names it).
        internal_calibration: the internal test's :func:`xraylib.metrics.calibration_report`.
    """
    def column(report: dict, threshold: str, calibration_block: dict | None) -> dict:
        block, out = report.get(threshold, {}), {}
        for key in EXTERNAL_FIGURES:
            source = report if key in report else block  # AUC, ECE ... overall; rates per threshold
            out[key] = format_ci(source.get(key), source.get(f"{key}_ci"), digits)
        after = (calibration_block or {}).get("after", {})
        out["ece_recalibrated"] = format_ci(after.get("ece"), after.get("ece_ci"), digits)
        return out

    table = {"internal test": column(internal, internal_threshold, internal_calibration)}
    for name, rep in external.items():
        table[name] = column(rep, external_threshold, rep.get("calibration"))
        site = rep.get("site_calibration")
        if site:
            site_column = column(site["decisions"], SITE_CALIBRATED, site["calibration"])
            site_column.update({key: "" for key in ("roc_auc", "average_precision", "ece", "brier")})
            table[f"{name} ({SITE_CALIBRATED})"] = site_column
    frame = pd.DataFrame(table)
    frame.index.name = f"figure (threshold: {internal.get(internal_threshold, {}).get('threshold', float('nan')):.3f})"
    return frame


def bootstrap_groups(frame: pd.DataFrame) -> np.ndarray:
    """The clustered bootstrap's group of each image of a manifest ``frame``.

    ``leakage_group`` (patients joined with their duplicate and near-duplicate images) where
    the manifest has it, else ``patient_id``, else the path (each image its own group).
    """
    for column in ("leakage_group", "patient_id", "path"):
        if column in frame.columns and (frame[column].astype(str) != "").all():
            return frame[column].astype(str).to_numpy()
    return np.arange(len(frame)).astype(str)


def compare_binary_models(y_true, probs: dict[str, np.ndarray], groups=None, n_resamples: int = 1000,
                          seed: int = 0) -> pd.DataFrame:
    """ROC-AUC differences between models scored on the same images: DeLong and the clustered paired bootstrap.

    One row per pair: both AUCs, the difference, DeLong's p-value (images independent) and
    the patient-clustered bootstrap interval and p-value of the difference.
    """
    y_true = np.asarray(y_true).astype(int)
    res = statistics.resample(y_true, groups, n_resamples, seed)
    names, rows = list(probs), []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            delong = statistics.delong_test(y_true, probs[a], probs[b])
            paired = statistics.paired_difference(lambda w, a=a: statistics.weighted_auc(y_true, probs[a], w),
                                                  lambda w, b=b: statistics.weighted_auc(y_true, probs[b], w), res)
            ci = paired["ci"] or [np.nan, np.nan]
            rows.append({"model_a": a, "model_b": b, "auc_a": delong["auc_a"], "auc_b": delong["auc_b"],
                         "difference": delong["difference"], "delong_p": delong["p_value"],
                         "bootstrap_ci_low": ci[0], "bootstrap_ci_high": ci[1], "bootstrap_p": paired["p_value"]})
    return pd.DataFrame(rows)


def compare_thresholds(y_true, y_prob, thresholds: dict[str, float]) -> pd.DataFrame:
    """McNemar's exact test between the decisions at each pair of thresholds on the same images."""
    y_true = np.asarray(y_true).astype(int)
    names, rows = list(thresholds), []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            test = statistics.mcnemar_test(y_true, np.asarray(y_prob) >= thresholds[a],
                                           np.asarray(y_prob) >= thresholds[b])
            rows.append({"threshold_a": a, "threshold_b": b, "right_only_a": test["a_only"],
                         "right_only_b": test["b_only"], "mcnemar_p": test["p_value"]})
    return pd.DataFrame(rows)


def compare_runs(y_true, probs: dict[str, np.ndarray], groups=None, n_resamples: int = 1000,
                 seed: int = 0) -> pd.DataFrame:
    """Every pair of multi-class runs on the same test images: macro-F1 difference and accuracy.

    Macro-F1: the patient-clustered paired bootstrap (interval and p-value, then Holm-adjusted
    over all pairs); accuracy: McNemar's exact test on the images one run gets right and the
    other wrong. Runs whose difference has an interval spanning 0 are not told apart by these images.
    """
    y_true = np.asarray(y_true).astype(int)
    n_classes = next(iter(probs.values())).shape[1]
    res = statistics.resample(y_true, groups, n_resamples, seed)
    preds = {name: np.asarray(p).argmax(axis=1) for name, p in probs.items()}

    def macro_f1(pred):
        return lambda w: np.nanmean(metrics.per_class_rates(
            statistics.weighted_confusion(y_true, pred, w, n_classes))["f1"], axis=1)

    names, rows = list(probs), []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            paired = statistics.paired_difference(macro_f1(preds[a]), macro_f1(preds[b]), res)
            ci = paired["ci"] or [np.nan, np.nan]
            rows.append({"run_a": a, "run_b": b, "macro_f1_difference": paired["difference"],
                         "ci_low": ci[0], "ci_high": ci[1], "bootstrap_p": paired["p_value"],
                         "mcnemar_p": statistics.mcnemar_test(y_true, preds[a], preds[b])["p_value"]})
    table = pd.DataFrame(rows)
    if len(table):
        adjusted = statistics.holm(dict(enumerate(table["bootstrap_p"])))
        table.insert(table.columns.get_loc("bootstrap_p") + 1, "bootstrap_p_holm", [adjusted[i] for i in table.index])
    return table


def per_class_table(report: dict, with_ci: bool = False) -> pd.DataFrame:
    """Per-class precision, recall (sensitivity), F1, specificity and support from a report.

    ``with_ci``: each rate as ``value [low, high]`` text with its 95 % interval (for reading).
    """
    columns = ["precision", "recall", "f1", "specificity", "support"]
    if with_ci:
        frame = pd.DataFrame({name: {**{k: format_ci(row[k], row.get(f"{k}_ci")) for k in columns[:-1]},
                                     "support": int(row["support"])}
                              for name, row in report["per_class"].items()}).T[columns]
    else:
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
            {name: calibration.reliability_curve(*pair) for name, pair in one_vs_rest.items()},
            title=f"calibration, one vs rest ({title})")
    return figures
