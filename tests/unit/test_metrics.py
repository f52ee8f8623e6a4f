"""Metric formulas, including the FP/FN swap of the original multi-class notebook."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from xraylib import metrics

# rows = true, columns = predicted; deliberately asymmetric so a swap shows
CM = np.array([[50, 3, 2],
               [10, 30, 5],
               [0, 1, 9]])
NAMES = ["A", "B", "C"]


def _labels_from_cm(cm):
    t, p = [], []
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            t += [i] * cm[i, j]
            p += [j] * cm[i, j]
    return np.array(t), np.array(p)


def test_per_class_counts_by_hand():
    table = metrics.per_class_from_confusion(CM, NAMES)
    # class B: TP 30; FP = predicted B but not B = 3 + 1; FN = true B predicted other = 10 + 5
    assert table.loc["B", ["tp", "fp", "fn", "tn"]].tolist() == [30, 4, 15, 110 - 30 - 4 - 15]
    assert table.loc["B", "precision"] == pytest.approx(30 / 34)
    assert table.loc["B", "recall"] == pytest.approx(30 / 45)
    assert table.loc["C", "specificity"] == pytest.approx((110 - 10 - 7) / (110 - 10 - 7 + 7))


def test_per_class_matches_sklearn_and_catches_the_swap():
    y_true, y_pred = _labels_from_cm(CM)
    table = metrics.per_class_from_confusion(CM, NAMES)
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=[0, 1, 2])
    np.testing.assert_allclose(table["precision"], p)
    np.testing.assert_allclose(table["recall"], r)
    np.testing.assert_allclose(table["f1"], f)
    # the original's bug: FP and FN swapped -> its "precision" is really recall
    swapped = metrics.per_class_from_confusion(CM.T, NAMES)
    assert not np.allclose(swapped["precision"], p)
    np.testing.assert_allclose(swapped["precision"], r)


def test_multiclass_report_consistent():
    y_true, y_pred = _labels_from_cm(CM)
    prob = np.eye(3)[y_pred] * 0.7 + 0.1
    report = metrics.multiclass_report(y_true, prob, NAMES, n_resamples=50)
    assert report["confusion_matrix"] == CM.tolist()
    assert report["accuracy"] == pytest.approx(89 / 110)
    assert report["macro_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro"))
    low, high = report["macro_f1_ci"]
    assert low <= report["macro_f1"] <= high
    with pytest.raises(ValueError, match="y_prob must have shape"):
        metrics.multiclass_report(y_true, prob[:, :2], NAMES)


def test_binary_metrics_and_threshold_direction():
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.4, 0.8, 0.7, 0.9, 0.3])
    m = metrics.binary_metrics(y, p, 0.75)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (1, 1, 2, 2)
    assert m["sensitivity"] == pytest.approx(1 / 3) and m["specificity"] == pytest.approx(2 / 3)
    assert metrics.binary_metrics(y, p, 0.7)["tp"] == 2  # >= threshold is positive
    with pytest.raises(ValueError, match="threshold"):
        metrics.binary_metrics(y, p, 1.5)
    with pytest.raises(ValueError, match="0/1"):
        metrics.binary_metrics([0, 2], [0.1, 0.2], 0.5)


def test_youden_threshold_maximises_j():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(200), np.ones(200)].astype(int)
    p = np.clip(np.r_[rng.normal(0.3, 0.1, 200), rng.normal(0.6, 0.1, 200)], 0, 1)
    t = metrics.youden_threshold(y, p)
    assert 0.4 < t < 0.5
    best = max(metrics.binary_metrics(y, p, c)["sensitivity"] + metrics.binary_metrics(y, p, c)["specificity"]
               for c in np.linspace(0, 1, 101))
    got = metrics.binary_metrics(y, p, t)
    assert got["sensitivity"] + got["specificity"] >= best - 1e-9


def test_binary_report_reproducible_and_interval_contains_estimate():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    p = np.clip(y * 0.3 + rng.random(300) * 0.7, 0, 1)
    a = metrics.binary_report(y, p, {}, n_resamples=200, seed=5)["roc_auc_ci"]
    b = metrics.binary_report(y, p, {}, n_resamples=200, seed=5)["roc_auc_ci"]
    assert a == b and a[0] < skm.roc_auc_score(y, p) < a[1]


def test_multiclass_report_intervals_and_sklearn_values():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 300)
    prob = rng.dirichlet(np.ones(3), 300)
    prob[np.arange(300), y] += 0.5
    prob /= prob.sum(axis=1, keepdims=True)
    report = metrics.multiclass_report(y, prob, ["a", "b", "c"], n_resamples=100, groups=np.arange(300) // 3)
    pred = prob.argmax(axis=1)
    assert report["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert report["weighted_f1"] == pytest.approx(skm.f1_score(y, pred, average="weighted"))
    assert report["macro_auc_ovr"] == pytest.approx(skm.roc_auc_score(y, prob, multi_class="ovr"))
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "macro_auc_ovr", "ece", "brier"):
        low, high = report[f"{key}_ci"]
        assert low <= report[key] <= high, key
    for row in report["per_class"].values():
        for key in ("precision", "recall", "f1", "specificity"):
            assert row[f"{key}_ci"][0] <= row[key] <= row[f"{key}_ci"][1]
    assert report["bootstrap"]["groups"] == 100


def test_binary_report_and_calibration():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 400)
    p = rng.random(400)
    calibrated = np.where(rng.random(400) < p, 1, 0)  # outcomes drawn from p: well calibrated
    report = metrics.binary_report(calibrated, p, {"t50": 0.5}, n_resamples=50)
    assert report["ece"] < 0.1 and "sensitivity_ci" in report["t50"]
    assert report["roc_auc"] == pytest.approx(skm.roc_auc_score(calibrated, p))
    assert report["average_precision"] == pytest.approx(skm.average_precision_score(calibrated, p))
    assert report["brier"] == pytest.approx(skm.brier_score_loss(calibrated, p))
    decided = (p >= 0.5).astype(int)
    assert report["t50"]["accuracy"] == pytest.approx(skm.accuracy_score(calibrated, decided))
    assert report["t50"]["sensitivity"] == pytest.approx(skm.recall_score(calibrated, decided))
    assert report["t50"]["precision"] == pytest.approx(skm.precision_score(calibrated, decided))
    assert report["t50"]["npv"] == pytest.approx(((p < 0.5) & (calibrated == 0)).sum() / (p < 0.5).sum())
    overconfident = metrics.binary_report(y, (p > 0.5).astype(float), {}, n_resamples=20)["ece"]
    assert overconfident > 0.3


def test_external_table_puts_internal_and_external_side_by_side():
    from xraylib import evaluation

    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 200)
    p = np.clip(0.4 * y + rng.random(200) * 0.6, 0, 1)
    internal = metrics.binary_report(y, p, {"youden_val": 0.5}, n_resamples=50)
    shifted = metrics.binary_report(y, np.clip(p + 0.2, 0, 1), {evaluation.STORED: 0.5}, n_resamples=50)
    table = evaluation.external_table(internal, "youden_val", {"site_b": shifted}, evaluation.STORED)
    assert list(table.columns) == ["internal test", "site_b"]
    assert table.loc["roc_auc", "internal test"].startswith(f"{internal['roc_auc']:.3f} [")
    assert table.loc["specificity", "site_b"].startswith(f"{shifted[evaluation.STORED]['specificity']:.3f} [")
    assert table.loc["specificity", "site_b"] != table.loc["specificity", "internal test"]
