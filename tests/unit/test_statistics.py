"""Clustered bootstrap, exact intervals and paired comparisons (xraylib.statistics)."""

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from xraylib import metrics, statistics


def clustered_sample(rng, patients_per_class=30, images_per_patient=3, icc=0.6, shift=1.0):
    """Scores with a patient effect: intra-class correlation ``icc``; true AUC = Phi(shift / sqrt(2))."""
    y = np.repeat([0, 1], patients_per_class * images_per_patient)
    patient = np.repeat(np.arange(2 * patients_per_class), images_per_patient)
    effect = rng.normal(0.0, np.sqrt(icc), 2 * patients_per_class)[patient]
    return y, patient, shift * y + effect + rng.normal(0.0, np.sqrt(1 - icc), len(y))


def coverage(clustered: bool, simulations: int, seed: int) -> float:
    true_auc = stats.norm.cdf(1.0 / np.sqrt(2.0))
    rng, hits = np.random.default_rng(seed), 0
    for i in range(simulations):
        y, patient, score = clustered_sample(rng)
        res = statistics.resample(y, patient if clustered else None, n_resamples=400, seed=i)
        result = statistics.bootstrap({"auc": lambda w: statistics.weighted_auc(y, score, w)}, res)["auc"]
        hits += result["ci"][0] <= true_auc <= result["ci"][1]
    return hits / simulations


def test_clustered_interval_covers_95_percent_on_clustered_data():
    # 1,500 simulated studies (30 patients per class x 3 images, ICC 0.6): Monte-Carlo sd of the
    # coverage 0.006. Measured 0.945 and 0.9375 on two seeds of 2,000 studies; images resampled: 0.81.
    assert 0.93 <= coverage(clustered=True, simulations=1500, seed=11) <= 0.97


def test_image_level_interval_is_too_narrow_on_clustered_data():
    assert coverage(clustered=False, simulations=300, seed=12) < 0.9


def test_resample_keeps_groups_together_and_classes_balanced():
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    groups = np.array(["a", "a", "b", "c", "c", "d", "e"])
    res = statistics.resample(y, groups, n_resamples=200, seed=3)
    w = res.weights
    assert w.shape == (200, 7) and res.groups == 5
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 3] == w[:, 4]).all()  # a group is drawn whole
    # each class keeps its number of groups: 2 negative groups, 3 positive groups
    neg_draws = w[:, 0] + w[:, 2]
    pos_draws = w[:, 3] + w[:, 5] + w[:, 6]
    assert (neg_draws == 2).all() and (pos_draws == 3).all()
    assert (statistics.resample(y, groups, 200, seed=3).weights == w).all()  # reproducible
    assert res.jackknife.shape == (5, 7) and (res.jackknife.sum(axis=1) == [5, 6, 5, 6, 6]).all()
    assert "clustered" in res.method and statistics.resample(y, None, 5).method == statistics.IMAGE_METHOD


def test_weighted_metrics_equal_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    p = np.round(np.clip(0.3 * y + rng.uniform(0, 0.7, 120), 0, 1), 2)  # rounded: ties
    w = rng.integers(0, 4, (5, 120))
    expected = [skm.roc_auc_score(y, p, sample_weight=row) for row in w]
    np.testing.assert_allclose(statistics.weighted_auc(y, p, w), expected, rtol=1e-12)
    cm = statistics.weighted_confusion(y, (p >= 0.5).astype(int), w, 2)
    np.testing.assert_array_equal(cm[2], skm.confusion_matrix(y, p >= 0.5, sample_weight=w[2]))
    assert np.isnan(statistics.weighted_auc(y, p, (y == 1).astype(float))[0])  # no negatives drawn


def test_exact_interval_for_five_out_of_five():
    low, high = statistics.proportion_ci(5, 5)
    assert low == pytest.approx(0.478, abs=1e-3) and high == 1.0
    report = metrics.binary_report([0, 0, 0, 1, 1, 1, 1, 1], [.1, .2, .6, .7, .8, .9, .95, .99], {"t": 0.5},
                                   n_resamples=100)
    assert report["t"]["sensitivity"] == 1.0
    assert report["t"]["sensitivity_ci"][0] == pytest.approx(0.478, abs=1e-3)  # not [1, 1]
    assert "t.sensitivity" in report["bootstrap"]["exact"]


def test_nan_resamples_are_counted_not_dropped_silently():
    # npv is undefined when nothing is predicted negative
    report = metrics.binary_report([0, 1, 1, 0], [0.9, 0.8, 0.95, 0.7], {"t": 0.5}, n_resamples=50)
    assert report["bootstrap"]["n_nan"]["t.npv"] == 50 and report["t"]["npv_ci"] is None
    values = np.array([np.nan] * 3 + list(np.linspace(0, 1, 97)))
    ci, n_nan = statistics.bca_interval(0.5, values, np.linspace(0.4, 0.6, 10))
    assert n_nan == 3 and ci is not None


def test_every_headline_figure_has_an_interval():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    p = np.clip(0.4 * y + rng.uniform(0, 0.6, 200), 0, 1)
    report = metrics.binary_report(y, p, {"t": 0.5}, n_resamples=100, groups=np.arange(200) // 2)
    for key in ("roc_auc", "average_precision", "brier", "ece"):
        assert len(report[f"{key}_ci"]) == 2 and report[f"{key}_ci"][0] <= report[key] <= report[f"{key}_ci"][1]
    for key in metrics.RATES:
        low, high = report["t"][f"{key}_ci"]
        assert low <= report["t"][key] <= high, key
    assert report["bootstrap"]["groups"] == 100 and report["bootstrap"]["n_resamples"] == 100


def test_delong_agrees_with_bootstrap_and_is_symmetric():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 300)
    a = y + rng.normal(0, 1.0, 300)
    b = y + rng.normal(0, 1.5, 300)
    result = statistics.delong_test(y, a, b)
    assert result["auc_a"] == pytest.approx(skm.roc_auc_score(y, a))
    res = statistics.resample(y, None, 2000, seed=0)
    diffs = statistics.weighted_auc(y, a, res.weights) - statistics.weighted_auc(y, b, res.weights)
    assert result["se"] == pytest.approx(diffs.std(), rel=0.15)
    swapped = statistics.delong_test(y, b, a)
    assert swapped["difference"] == pytest.approx(-result["difference"]) and swapped["p_value"] == pytest.approx(
        result["p_value"])
    assert statistics.delong_test(y, a, a)["p_value"] == 1.0


def test_paired_difference_detects_a_real_difference_only():
    rng = np.random.default_rng(3)
    y, patient, score = clustered_sample(rng, patients_per_class=60)
    res = statistics.resample(y, patient, 500, seed=0)
    better = statistics.paired_difference(lambda w: statistics.weighted_auc(y, score, w),
                                          lambda w: statistics.weighted_auc(y, rng.permutation(score), w), res)
    assert better["difference"] > 0 and better["ci"][0] > 0 and better["p_value"] < 0.01
    same = statistics.paired_difference(lambda w: statistics.weighted_auc(y, score, w),
                                        lambda w: statistics.weighted_auc(y, score + 1e-9, w), res)
    assert same["difference"] == 0 and same["p_value"] == 1.0


def test_mcnemar_exact_and_holm():
    y = np.array([1] * 20)
    a = np.array([1] * 20)
    b = np.array([1] * 10 + [0] * 10)
    result = statistics.mcnemar_test(y, a, b)
    assert (result["a_only"], result["b_only"]) == (10, 0)
    assert result["p_value"] == pytest.approx(2 * 0.5 ** 10)
    assert statistics.mcnemar_test(y, a, a)["p_value"] == 1.0
    assert statistics.holm({"x": 0.01, "y": 0.04, "z": 0.03}) == pytest.approx({"x": 0.03, "y": 0.06, "z": 0.06})


def test_net_benefit_formula():
    y = np.array([1, 1, 0, 0])
    p = np.array([0.9, 0.4, 0.6, 0.1])
    curve = statistics.net_benefit(y, p, [0.5])
    row = curve.iloc[0]
    assert row["model"] == pytest.approx(1 / 4 - 1 / 4 * 1.0)  # 1 TP, 1 FP, odds 1
    assert row["treat_all"] == pytest.approx(0.5 - 0.5) and row["treat_none"] == 0


def test_mean_sd():
    summary = statistics.mean_sd({1: 0.8, 2: 0.9, 3: None})
    assert summary["mean"] == pytest.approx(0.85) and summary["sd"] == pytest.approx(np.std([0.8, 0.9], ddof=1))
    assert summary["n"] == 2
