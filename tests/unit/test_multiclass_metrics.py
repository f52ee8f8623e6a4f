"""Per-class metrics against a hand-made confusion matrix: catches the original's FP/FN swap."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import precision_recall_fscore_support

from xraylib import metrics
from xraylib.evaluation import per_class_table

CLASSES = ["COVID", "Normal", "Viral Pneumonia"]
# rows = true labels, columns = predicted labels
CM = np.array([[50, 3, 7],
               [10, 30, 0],
               [2, 8, 40]])


def _labels_from(cm):
    y_true = np.repeat(np.arange(len(cm)), cm.sum(axis=1))
    y_pred = np.concatenate([np.repeat(np.arange(len(cm)), row) for row in cm])
    return y_true, y_pred


def _original_notebook_formulas(cm):
    """The original's per-class figures: FP taken from the row and FN from the column (swapped)."""
    tp = np.diag(cm)
    fp_swapped = cm.sum(axis=1) - tp
    fn_swapped = cm.sum(axis=0) - tp
    return tp / (tp + fp_swapped), tp / (tp + fn_swapped)


def test_per_class_by_hand():
    table = metrics.per_class_from_confusion(CM, CLASSES)
    covid = table.loc["COVID"]
    # COVID: TP 50; FP = predicted COVID but truly other = 10 + 2; FN = truly COVID but predicted other = 3 + 7
    assert (covid["tp"], covid["fp"], covid["fn"], covid["tn"]) == (50, 12, 10, 78)
    assert covid["precision"] == pytest.approx(50 / 62)
    assert covid["recall"] == pytest.approx(50 / 60)
    assert covid["specificity"] == pytest.approx(78 / 90)
    assert covid["f1"] == pytest.approx(2 * 50 / (2 * 50 + 12 + 10))
    viral = table.loc["Viral Pneumonia"]
    assert viral["precision"] == pytest.approx(40 / 47) and viral["recall"] == pytest.approx(40 / 50)
    assert list(table["support"]) == [60, 40, 50]


def test_per_class_matches_sklearn_and_not_the_swapped_formulas():
    y_true, y_pred = _labels_from(CM)
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=[0, 1, 2])
    table = metrics.per_class_from_confusion(CM, CLASSES)
    np.testing.assert_allclose(table["precision"], precision)
    np.testing.assert_allclose(table["recall"], recall)
    np.testing.assert_allclose(table["f1"], f1)
    swapped_precision, swapped_recall = _original_notebook_formulas(CM)
    assert not np.allclose(table["precision"], swapped_precision)
    np.testing.assert_allclose(swapped_precision, recall)  # the original printed recall as "precision"
    np.testing.assert_allclose(swapped_recall, precision)


def test_report_and_table_used_by_the_notebook():
    y_true, y_pred = _labels_from(CM)
    y_prob = np.full((len(y_true), 3), 0.1)
    y_prob[np.arange(len(y_true)), y_pred] = 0.8
    report = metrics.multiclass_report(y_true, y_prob, CLASSES, n_resamples=50)
    assert report["confusion_matrix"] == CM.tolist()
    assert report["accuracy"] == pytest.approx(120 / 150)
    table = per_class_table(report)
    assert list(table.columns) == ["precision", "recall", "f1", "specificity", "support"]
    assert table.loc["COVID", "precision"] == pytest.approx(50 / 62)
    assert table.loc["COVID", "recall"] == pytest.approx(50 / 60)
    assert table.loc["Normal", "specificity"] == pytest.approx((150 - 30 - 11 - 10) / (150 - 40))
    macro = np.mean(table["f1"])
    assert report["macro_f1"] == pytest.approx(macro)
    shown = per_class_table(report, with_ci=True)
    low, high = report["per_class"]["COVID"]["precision_ci"]
    assert shown.loc["COVID", "precision"] == f"{50 / 62:.3f} [{low:.3f}, {high:.3f}]"
    assert low <= 50 / 62 <= high and shown.loc["COVID", "support"] == 60
