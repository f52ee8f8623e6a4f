"""Evaluation metrics for binary and multi-class chest X-ray classifiers, each with a 95 % interval.

Built on scikit-learn so the formulas are the standard ones; the intervals come from
:mod:`xraylib.statistics` (a bootstrap that resamples patients, i.e. leakage groups,
within each class, with BCa intervals) and calibration from :mod:`xraylib.calibration`.
Written here:

* :func:`per_class_from_confusion` spells out TP/FP/FN/TN from a confusion
  matrix whose rows are true labels. The original multi-class notebook swapped
  false positives and false negatives (and called precision "recall"); this
  function is tested against scikit-learn on a hand-made matrix.
* :func:`binary_report` and :func:`multiclass_report` compute every figure once on
  all images and once per resample (as weighted metrics, see :mod:`xraylib.statistics`):
  a figure ``X`` has its interval in ``X_ci``; a proportion that is 0 or 1 gets the exact
  Clopper-Pearson interval over its patients (groups) instead, listed under
  ``bootstrap.exact``; resamples on which a figure is undefined are counted in
  ``bootstrap.n_nan``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from xraylib import calibration, statistics



def _check_binary(y_true, y_prob) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true).astype(int).ravel()
    y_prob = np.asarray(y_prob, dtype=float).ravel()
    if y_true.shape != y_prob.shape:
        raise ValueError(f"y_true and y_prob must have the same length, got {y_true.shape} and {y_prob.shape}")
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError(f"binary labels must be 0/1, got values {np.unique(y_true).tolist()}")
    if y_prob.size and (y_prob.min() < 0 or y_prob.max() > 1):
        raise ValueError(f"probabilities must lie in [0, 1], got range [{y_prob.min():.3g}, {y_prob.max():.3g}]")
    return y_true, y_prob


def _safe_div(num: float, den: float) -> float:
    return float(num) / float(den) if den else float("nan")


def binary_metrics(y_true, y_prob, threshold: float) -> dict:
    """Confusion counts and rates at ``threshold`` (``y_prob >= threshold`` is positive).

    Returns accuracy, sensitivity (recall), specificity, precision (PPV), NPV, F1
    and the counts tp/fp/tn/fn. Positive class = 1 (PNEUMONIA).
    """
    y_true, y_prob = _check_binary(y_true, y_prob)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold!r}")
    y_pred = (y_prob >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    precision = _safe_div(tp, tp + fp)
    sensitivity = _safe_div(tp, tp + fn)
    return {
        "threshold": float(threshold),
        "accuracy": _safe_div(tp + tn, len(y_true)),
        "sensitivity": sensitivity,
        "specificity": _safe_div(tn, tn + fp),
        "precision": precision,
        "npv": _safe_div(tn, tn + fn),
        "f1": _safe_div(2 * tp, 2 * tp + fp + fn),
        "tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn),
    }


def youden_threshold(y_true, y_prob) -> float:
    """Threshold that maximises Youden's J = sensitivity + specificity - 1 on the ROC curve.

    Choose it on the validation split, then apply it unchanged to test data.
    """
    y_true, y_prob = _check_binary(y_true, y_prob)
    if len(np.unique(y_true)) < 2:
        raise ValueError("youden_threshold needs both classes in y_true")
    fpr, tpr, thresholds = skm.roc_curve(y_true, y_prob)
    finite = np.isfinite(thresholds)
    j = np.where(finite, tpr - fpr, -np.inf)
    return float(np.clip(thresholds[int(np.argmax(j))], 0.0, 1.0))


def _exact_where_degenerate(block: dict, key: str, n_groups: int, exact: list, path: str) -> None:
    """Clopper-Pearson over the ``n_groups`` patients behind a proportion that is exactly 0 or 1."""
    value = block.get(key)
    if value is None or not np.isfinite(value) or value not in (0.0, 1.0) or n_groups == 0:
        return
    block[f"{key}_ci"] = statistics.proportion_ci(n_groups if value == 1.0 else 0, n_groups)
    exact.append(path)


def _put(target: dict, results: dict, prefix: str, n_nan: dict) -> None:
    """Copy :func:`xraylib.statistics.bootstrap` results into ``target`` as ``name`` / ``name_ci``."""
    for name, result in results.items():
        target[name] = result["estimate"]
        target[f"{name}_ci"] = result["ci"]
        if result["n_nan"]:
            n_nan[f"{prefix}{name}"] = result["n_nan"]


def _groups_behind(codes: np.ndarray, mask: np.ndarray) -> int:
    return int(len(np.unique(codes[mask])))


RATES = ("accuracy", "sensitivity", "specificity", "precision", "npv", "f1", "balanced_accuracy")


def _rates(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Rates of ``(B, 2, 2)`` confusion matrices (rows = true, positive = 1); NaN where undefined."""
    tn, fp, fn, tp = cm[:, 0, 0], cm[:, 0, 1], cm[:, 1, 0], cm[:, 1, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity, specificity = tp / (tp + fn), tn / (tn + fp)
        return {"accuracy": (tp + tn) / (tp + tn + fp + fn), "sensitivity": sensitivity, "specificity": specificity,
                "precision": tp / (tp + fp), "npv": tn / (tn + fn), "f1": 2 * tp / (2 * tp + fp + fn),
                "balanced_accuracy": (sensitivity + specificity) / 2}


def binary_report(y_true, y_prob, thresholds: dict[str, float], n_resamples: int = 1000, seed: int = 0,
                  groups=None) -> dict:
    """Everything the binary notebook and ``xraylib evaluate`` report for one prediction set, with intervals.

    Args:
        y_true: 0/1 labels (1 = positive class).
        y_prob: predicted probability of the positive class.
        thresholds: named operating points, e.g. ``{"original_0.75": 0.75, "youden_val": t}``.
        n_resamples: bootstrap resamples.
        seed: bootstrap seed.
        groups: patient (leakage group) per image; ``None`` resamples images, and the
            report says so (``bootstrap.method``).

    Returns:
        ``n``, ``n_positive``, ``roc_auc``, ``average_precision``, ``brier``, ``ece`` (each with
        ``_ci``), one block per threshold with the confusion counts and ``accuracy``,
        ``sensitivity``, ``specificity``, ``precision`` (PPV), ``npv``, ``f1``,
        ``balanced_accuracy`` (each with ``_ci``), and ``bootstrap`` (method, resamples,
        groups, NaN counts per figure, figures with exact intervals).
    """
    y_true, y_prob = _check_binary(y_true, y_prob)
    res = statistics.resample(y_true, groups, n_resamples, seed)
    codes = statistics.group_codes(groups, len(y_true))
    n_nan: dict = {}
    exact: list = []
    report: dict = {"n": int(len(y_true)), "n_positive": int(y_true.sum())}
    overall = {"brier": lambda w: (w @ (y_prob - y_true) ** 2) / w.sum(axis=1),
               "ece": statistics.rowwise(lambda w: calibration.expected_calibration_error(y_true, y_prob,
                                                                                        sample_weight=w))}
    if len(np.unique(y_true)) == 2:
        overall = {"roc_auc": lambda w: statistics.weighted_auc(y_true, y_prob, w),
                   "average_precision": statistics.rowwise(
                       lambda w: skm.average_precision_score(y_true, y_prob, sample_weight=w)), **overall}
    _put(report, statistics.bootstrap(overall, res), "", n_nan)
    for name, threshold in thresholds.items():
        y_pred = (y_prob >= threshold).astype(int)
        rate_fns = {key: (lambda w, key=key: _rates(statistics.weighted_confusion(y_true, y_pred, w, 2))[key])
                    for key in RATES}
        entry: dict = {}
        _put(entry, statistics.bootstrap(rate_fns, res), f"{name}.", n_nan)
        entry.update(binary_metrics(y_true, y_prob, threshold))  # the point values as exact fractions
        entry["balanced_accuracy"] = (entry["sensitivity"] + entry["specificity"]) / 2
        behind = {"accuracy": np.ones(len(y_true), bool), "sensitivity": y_true == 1, "specificity": y_true == 0,
                  "precision": y_pred == 1, "npv": y_pred == 0}
        for key, mask in behind.items():
            _exact_where_degenerate(entry, key, _groups_behind(codes, mask), exact, f"{name}.{key}")
        report[name] = entry
    report["bootstrap"] = {**res.describe(), "n_nan": n_nan, "exact": exact}
    return report


def binary_subgroups(y_true, y_prob, subgroup, thresholds: dict[str, float], n_resamples: int = 1000,
                     seed: int = 0, groups=None) -> dict:
    """Results per subgroup of the positives (e.g. bacterial vs viral pneumonia), each against all negatives.

    For subgroup ``s``: ``n`` positives of ``s``, ROC-AUC of ``s`` vs every negative and the
    sensitivity at each threshold, with intervals (:func:`binary_report` on those images).
    Positives without a subgroup (empty string) are left out.
    """
    y_true, y_prob = _check_binary(y_true, y_prob)
    subgroup = np.asarray(subgroup, dtype=str)
    groups = None if groups is None else np.asarray(groups)
    out = {}
    for name in sorted(set(subgroup[y_true == 1].tolist()) - {""}):
        keep = (y_true == 0) | (subgroup == name)
        part = binary_report(y_true[keep], y_prob[keep], thresholds, n_resamples, seed,
                             None if groups is None else groups[keep])
        out[name] = {"n": int(((y_true == 1) & keep).sum()), "roc_auc": part.get("roc_auc"),
                     "roc_auc_ci": part.get("roc_auc_ci"),
                     **{t: {k: part[t][k] for k in ("threshold", "sensitivity", "sensitivity_ci")} for t in thresholds}}
    return out


def calibration_report(y_true, before, after, method: dict, n_resamples: int = 1000, seed: int = 0,
                       groups=None) -> dict:
    """ECE, Brier score, calibration slope and intercept before and after recalibration, with intervals.

    Args:
        y_true: 0/1 labels.
        before: probabilities as the model gives them.
        after: the same after the recalibration ``method`` (fitted on validation, never on these images).
        method: the stored recalibration parameters (:func:`xraylib.calibration.fit_binary`).
    """
    y_true, before = _check_binary(y_true, before)
    _, after = _check_binary(y_true, after)
    res = statistics.resample(y_true, groups, n_resamples, seed)
    out: dict = {"method": dict(method)}
    n_nan: dict = {}
    both = len(np.unique(y_true)) == 2
    for name, prob in (("before", before), ("after", after)):
        fns = {"ece": statistics.rowwise(lambda w, p=prob: calibration.expected_calibration_error(
                   y_true, p, sample_weight=w)),
               "brier": lambda w, p=prob: (w @ (p - y_true) ** 2) / w.sum(axis=1)}
        if both:
            fns["slope"] = statistics.rowwise(lambda w, p=prob: calibration.calibration_slope_intercept(
                y_true, p, sample_weight=w)["slope"])
            fns["intercept"] = statistics.rowwise(lambda w, p=prob: calibration.calibration_slope_intercept(
                y_true, p, sample_weight=w)["intercept"])
        out[name] = {}
        _put(out[name], statistics.bootstrap(fns, res), f"{name}.", n_nan)
    out["bootstrap"] = {**res.describe(), "n_nan": n_nan}
    return out


def per_class_from_confusion(cm, class_names: list[str]) -> pd.DataFrame:
    """Per-class counts and rates from a confusion matrix with rows = true, columns = predicted.

    For class k: TP = cm[k, k]; FP = column k sum - TP (predicted k, truly other);
    FN = row k sum - TP (truly k, predicted other); TN = the rest.
    """
    cm = np.asarray(cm, dtype=np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(class_names):
        raise ValueError(f"confusion matrix must be square with one row per class ({len(class_names)}), got {cm.shape}")
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    tn = cm.sum() - tp - fp - fn
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), np.nan)
        recall = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
        specificity = np.where(tn + fp > 0, tn / (tn + fp), np.nan)
    return pd.DataFrame({
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "precision": precision, "recall": recall, "f1": f1, "specificity": specificity,
        "one_vs_rest_accuracy": (tp + tn) / cm.sum(), "support": tp + fn,
    }, index=pd.Index(class_names, name="class"))


def per_class_rates(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class rates of ``(B, C, C)`` confusion matrices: each ``(B, C)``; NaN where undefined."""
    tp = np.diagonal(cm, axis1=1, axis2=2)
    fp, fn = cm.sum(axis=1) - tp, cm.sum(axis=2) - tp
    tn = cm.sum(axis=(1, 2))[:, None] - tp - fp - fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"precision": tp / (tp + fp), "recall": tp / (tp + fn), "f1": 2 * tp / (2 * tp + fp + fn),
                "specificity": tn / (tn + fp)}


def multiclass_report(y_true, y_prob, class_names: list[str], n_resamples: int = 1000, seed: int = 0,
                      groups=None) -> dict:
    """Overall, macro and per-class metrics for class-probability predictions, each with an interval.

    Args:
        y_true: integer labels (index into ``class_names``).
        y_prob: ``(N, C)`` class probabilities (rows sum to 1).
        class_names: names in class-index order.
        n_resamples: bootstrap resamples.
        seed: bootstrap seed.
        groups: patient (leakage group) per image; ``None`` resamples images.

    Returns:
        ``accuracy``, ``balanced_accuracy``, ``macro_f1``, ``weighted_f1``, ``macro_auc_ovr``
        (all classes present), ``ece`` (top-label) and ``brier`` (multi-class), each with ``_ci``;
        ``confusion_matrix`` (rows = true), ``per_class`` (counts and precision, recall, f1,
        specificity with ``_ci``, support) and ``bootstrap``.
    """
    y_true = np.asarray(y_true).astype(int).ravel()
    y_prob = np.asarray(y_prob, dtype=float)
    n_classes = len(class_names)
    if y_prob.ndim != 2 or y_prob.shape != (len(y_true), n_classes):
        raise ValueError(f"y_prob must have shape (N={len(y_true)}, C={n_classes}), got {y_prob.shape}")
    labels = list(range(n_classes))
    y_pred = y_prob.argmax(axis=1)
    cm = skm.confusion_matrix(y_true, y_pred, labels=labels)
    table = per_class_from_confusion(cm, class_names)
    res = statistics.resample(y_true, groups, n_resamples, seed)
    codes = statistics.group_codes(groups, len(y_true))
    present = [k for k in labels if (y_true == k).any()]
    onehot = np.eye(n_classes)[y_true]

    def confusions(w):
        return statistics.weighted_confusion(y_true, y_pred, w, n_classes)

    def macro(key):
        return lambda w: np.nanmean(per_class_rates(confusions(w))[key][:, present], axis=1)

    def weighted_f1(w):
        cms = confusions(w)
        support = cms.sum(axis=2)
        return np.nansum(per_class_rates(cms)["f1"] * support, axis=1) / support.sum(axis=1)

    overall = {
        "accuracy": lambda w: np.trace(confusions(w), axis1=1, axis2=2) / w.sum(axis=1),
        "balanced_accuracy": macro("recall"),
        "macro_f1": macro("f1"),
        "weighted_f1": weighted_f1,
        "ece": statistics.rowwise(lambda w: calibration.expected_calibration_error(
            (y_pred == y_true).astype(int), y_prob.max(axis=1), sample_weight=w)),
        "brier": lambda w: (w @ ((y_prob - onehot) ** 2).sum(axis=1)) / w.sum(axis=1),
    }
    if len(present) == n_classes:
        overall["macro_auc_ovr"] = lambda w: np.mean(
            [statistics.weighted_auc((y_true == k).astype(int), y_prob[:, k], w) for k in labels], axis=0)
    n_nan: dict = {}
    exact: list = []
    report: dict = {"n": int(len(y_true))}
    _put(report, statistics.bootstrap(overall, res), "", n_nan)
    # point values exactly as scikit-learn computes them (macro over the classes present, as sklearn's labels=)
    report["accuracy"] = float(skm.accuracy_score(y_true, y_pred))
    report["macro_f1"] = float(skm.f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0))
    _exact_where_degenerate(report, "accuracy", _groups_behind(codes, np.ones(len(y_true), bool)), exact, "accuracy")
    per_class_ci = {key: statistics.bootstrap({k: (lambda w, k=k, key=key: per_class_rates(confusions(w))[key][:, k])
                                               for k in labels}, res) for key in ("precision", "recall", "f1",
                                                                                  "specificity")}
    per_class = {}
    for k, (name, row) in enumerate(table.iterrows()):
        entry = {key: (int(value) if key in ("tp", "fp", "fn", "tn", "support") else float(value))
                 for key, value in row.items()}
        for key, results in per_class_ci.items():
            entry[f"{key}_ci"] = results[k]["ci"]
            if results[k]["n_nan"]:
                n_nan[f"per_class.{name}.{key}"] = results[k]["n_nan"]
        behind = {"precision": y_pred == k, "recall": y_true == k, "specificity": y_true != k}
        for key, mask in behind.items():
            _exact_where_degenerate(entry, key, _groups_behind(codes, mask), exact, f"per_class.{name}.{key}")
        per_class[name] = entry
    report.update({"confusion_matrix": cm.tolist(), "class_names": list(class_names), "per_class": per_class,
                   "bootstrap": {**res.describe(), "n_nan": n_nan, "exact": exact}})
    return report


def multiclass_calibration_report(y_true, before, after, method: dict, n_resamples: int = 1000, seed: int = 0,
                                  groups=None) -> dict:
    """Top-label ECE, multi-class Brier score and log-loss before and after recalibration, with intervals.

    ``after`` comes from a recalibration ``method`` fitted on the validation split
    (:func:`xraylib.calibration.fit_temperature`), never on these images.
    """
    y_true = np.asarray(y_true).astype(int).ravel()
    res = statistics.resample(y_true, groups, n_resamples, seed)
    out: dict = {"method": dict(method)}
    n_nan: dict = {}
    for name, prob in (("before", np.asarray(before, dtype=float)), ("after", np.asarray(after, dtype=float))):
        onehot = np.eye(prob.shape[1])[y_true]
        correct = (prob.argmax(axis=1) == y_true).astype(int)
        nll = -np.log(np.clip(prob[np.arange(len(y_true)), y_true], 1e-12, 1.0))
        fns = {"ece": statistics.rowwise(lambda w, p=prob, c=correct: calibration.expected_calibration_error(
                   c, p.max(axis=1), sample_weight=w)),
               "brier": lambda w, p=prob, o=onehot: (w @ ((p - o) ** 2).sum(axis=1)) / w.sum(axis=1),
               "log_loss": lambda w, v=nll: (w @ v) / w.sum(axis=1)}
        out[name] = {}
        _put(out[name], statistics.bootstrap(fns, res), f"{name}.", n_nan)
    out["bootstrap"] = {**res.describe(), "n_nan": n_nan}
    return out
