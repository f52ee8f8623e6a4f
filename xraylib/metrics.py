"""Evaluation metrics for binary and multi-class chest X-ray classifiers.

Built on scikit-learn so the formulas are the standard ones. Written here:

* :func:`per_class_from_confusion` spells out TP/FP/FN/TN from a confusion
  matrix whose rows are true labels. The original multi-class notebook swapped
  false positives and false negatives (and called precision "recall"); this
  function is tested against scikit-learn on a hand-made matrix.
* :func:`bootstrap_ci` is a *stratified* percentile bootstrap: resampling within
  each true class keeps both classes in every resample so ROC-AUC is always
  defined, which ``scipy.stats.bootstrap`` cannot guarantee.
* :func:`pointing_game` and :func:`topk_iou` score Grad-CAM maps against
  ground-truth lesion masks.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve


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


def bootstrap_ci(y_true, y_x, statistic: Callable[[np.ndarray, np.ndarray], float], n_resamples: int = 1000,
                 seed: int = 0, confidence: float = 0.95) -> tuple[float, float]:
    """Stratified percentile bootstrap confidence interval of ``statistic(y_true, y_x)``.

    Args:
        y_true: true labels (resampling is done within each label).
        y_x: predictions or scores aligned with ``y_true`` (any leading shape).
        statistic: function of a resampled ``(y_true, y_x)`` pair.
        n_resamples: number of bootstrap resamples.
        seed: random seed (results are reproducible).
        confidence: coverage of the interval.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples!r}")
    y_true = np.asarray(y_true)
    y_x = np.asarray(y_x)
    rng = np.random.default_rng(seed)
    strata = [np.flatnonzero(y_true == c) for c in np.unique(y_true)]
    values = np.empty(n_resamples)
    for i in range(n_resamples):
        idx = np.concatenate([rng.choice(s, size=len(s), replace=True) for s in strata])
        values[i] = statistic(y_true[idx], y_x[idx])
    alpha = (1.0 - confidence) / 2.0
    low, high = np.nanquantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)


def reliability_curve(y_true, y_prob, n_bins: int = 10) -> pd.DataFrame:
    """Mean predicted probability vs observed fraction of positives per probability bin."""
    y_true, y_prob = _check_binary(y_true, y_prob)
    fraction, mean_pred = calibration_curve(y_true, y_prob, n_bins=n_bins, strategy="uniform")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    counts = np.histogram(y_prob, bins=edges)[0]
    return pd.DataFrame({"mean_predicted": mean_pred, "fraction_positive": fraction,
                         "count": counts[counts > 0]})


def expected_calibration_error(y_true, y_prob, n_bins: int = 10) -> float:
    """ECE: bin-size-weighted mean |observed fraction - mean predicted| over uniform bins."""
    curve = reliability_curve(y_true, y_prob, n_bins)
    weights = curve["count"] / curve["count"].sum()
    return float((weights * (curve["fraction_positive"] - curve["mean_predicted"]).abs()).sum())


def binary_report(y_true, y_prob, thresholds: dict[str, float], n_resamples: int = 1000, seed: int = 0) -> dict:
    """Everything the binary notebook and ``xraylib evaluate`` report for one prediction set.

    Args:
        y_true: 0/1 labels (1 = positive class).
        y_prob: predicted probability of the positive class.
        thresholds: named operating points, e.g. ``{"original_0.75": 0.75, "youden_val": t}``.
    """
    y_true, y_prob = _check_binary(y_true, y_prob)
    both = len(np.unique(y_true)) == 2
    report: dict = {"n": int(len(y_true)), "n_positive": int(y_true.sum())}
    if both:
        report["roc_auc"] = float(skm.roc_auc_score(y_true, y_prob))
        report["roc_auc_ci"] = list(bootstrap_ci(y_true, y_prob, skm.roc_auc_score, n_resamples, seed))
        report["average_precision"] = float(skm.average_precision_score(y_true, y_prob))
    report["brier"] = float(skm.brier_score_loss(y_true, y_prob))
    report["ece"] = expected_calibration_error(y_true, y_prob)
    for name, threshold in thresholds.items():
        entry = binary_metrics(y_true, y_prob, threshold)
        for key, positive in (("sensitivity", 1), ("specificity", 0)):
            if (y_true == positive).any():
                def rate(t, p, positive=positive, threshold=threshold):
                    mask = t == positive
                    return float(((p[mask] >= threshold).astype(int) == positive).mean())
                entry[f"{key}_ci"] = list(bootstrap_ci(y_true, y_prob, rate, n_resamples, seed))
        report[name] = entry
    return report


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


def multiclass_report(y_true, y_prob, class_names: list[str], n_resamples: int = 1000, seed: int = 0) -> dict:
    """Overall, macro and per-class metrics for class-probability predictions.

    Args:
        y_true: integer labels (index into ``class_names``).
        y_prob: ``(N, C)`` class probabilities (rows sum to 1).
        class_names: names in class-index order.
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

    def macro_f1(t, p):
        return skm.f1_score(t, p, labels=labels, average="macro", zero_division=0)

    confidence = y_prob.max(axis=1)
    correct = (y_pred == y_true).astype(int)
    report = {
        "n": int(len(y_true)),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(macro_f1(y_true, y_pred)),
        "macro_f1_ci": list(bootstrap_ci(y_true, y_pred, macro_f1, n_resamples, seed)),
        "weighted_f1": float(skm.f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "ece": expected_calibration_error(correct, confidence),
        "confusion_matrix": cm.tolist(),
        "class_names": list(class_names),
        "per_class": {name: {k: (float(v) if k not in ("tp", "fp", "fn", "tn", "support") else int(v))
                             for k, v in row.items()} for name, row in table.iterrows()},
    }
    present = np.unique(y_true)
    if len(present) == n_classes and n_classes > 2:
        report["macro_auc_ovr"] = float(skm.roc_auc_score(y_true, y_prob, multi_class="ovr", labels=labels))
    elif n_classes == 2 and len(present) == 2:
        report["macro_auc_ovr"] = float(skm.roc_auc_score(y_true, y_prob[:, 1]))
    return report


def pointing_game(cam, mask) -> bool:
    """True when the CAM's maximum falls inside the (non-empty) lesion mask."""
    cam = np.asarray(cam, dtype=float)
    mask = np.asarray(mask).astype(bool)
    if cam.shape != mask.shape:
        raise ValueError(f"cam and mask must have the same shape, got {cam.shape} and {mask.shape}")
    if not mask.any():
        raise ValueError("pointing game needs a non-empty lesion mask")
    return bool(mask.flat[int(np.argmax(cam))])


def topk_iou(cam, mask, top_fraction: float = 0.1) -> float:
    """IoU between the top ``top_fraction`` of CAM pixels and the lesion mask."""
    cam = np.asarray(cam, dtype=float)
    mask = np.asarray(mask).astype(bool)
    if cam.shape != mask.shape:
        raise ValueError(f"cam and mask must have the same shape, got {cam.shape} and {mask.shape}")
    if not 0 < top_fraction <= 1:
        raise ValueError(f"top_fraction must lie in (0, 1], got {top_fraction!r}")
    k = max(1, int(round(top_fraction * cam.size)))
    top = np.zeros(cam.size, dtype=bool)
    top[np.argsort(cam.ravel(), kind="stable")[-k:]] = True
    top = top.reshape(cam.shape)
    union = np.logical_or(top, mask).sum()
    return float(np.logical_and(top, mask).sum() / union) if union else 0.0
