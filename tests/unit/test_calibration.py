"""Calibration: one binning for curve and ECE, slope/intercept, recalibration maps."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from scipy.special import expit, logit, softmax
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve
from sklearn.linear_model import LogisticRegression

from xraylib import calibration as cal

# Tolerances measured over 20 seeds of _binary(n=20_000): standard deviations of
# slope 0.021, intercept 0.017, slope at logit x2 0.010, temperature 0.037;
# the tolerances below are about 5 of those.
SLOPE_TOL, INTERCEPT_TOL, HALF_SLOPE_TOL, TEMPERATURE_TOL = 0.10, 0.08, 0.05, 0.20


def _binary(seed: int, n: int = 20_000, scale: float = 1.0, shift: float = 0.0):
    """True logit z, y ~ Bernoulli(sigmoid(z)), reported p = sigmoid(scale * z + shift)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(-0.5, 1.5, n)
    return rng.binomial(1, expit(z)), expit(scale * z + shift)


def _multiclass(seed: int, n: int = 20_000, k: int = 3, scale: float = 2.0):
    """True logits z, y ~ softmax(z) (Gumbel-max), reported softmax(scale * z), and z."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, (n, k)) + np.linspace(0.5, -0.5, k)
    y = np.argmax(z + rng.gumbel(size=z.shape), axis=1)
    return y, softmax(scale * z, axis=1), z


# --- binning -------------------------------------------------------------------

def test_bin_index_edges_go_left_as_in_sklearn():
    assert cal.bin_index([0.0, 0.05, 0.3, 0.31, 0.5, 0.6, 0.7, 0.99, 1.0], 10).tolist() == [0, 0, 2, 3, 4, 5, 6, 9, 9]


@pytest.mark.parametrize("n_bins", range(1, 41))
def test_bin_index_puts_every_edge_k_over_n_in_bin_k_minus_1(n_bins):
    k = np.arange(n_bins + 1)
    assert cal.bin_index(k / n_bins, n_bins).tolist() == [0, *range(n_bins)]


@pytest.mark.parametrize("n_bins", [0, -1, 2.5, True])
def test_bin_index_rejects_bad_n_bins(n_bins):
    with pytest.raises(ValueError, match="n_bins"):
        cal.bin_index([0.5], n_bins)


def test_reliability_curve_with_points_either_side_of_an_edge_does_not_raise():
    curve = cal.reliability_curve([1, 0], [0.5, 0.45])
    assert list(curve.columns) == ["bin_low", "bin_high", "mean_predicted", "fraction_positive", "count"]
    np.testing.assert_allclose(curve[["bin_low", "bin_high", "mean_predicted", "fraction_positive"]],
                               [[0.4, 0.5, 0.475, 0.5]])
    assert curve["count"].tolist() == [2]
    # the old code raised here: np.histogram put 0.5 in the next bin, calibration_curve did not


def test_ece_by_hand():
    # bins (0.1,0.2]: {0.2 y1} |1-0.2| = 0.8;  (0.3,0.4]: {0.35 y0, 0.4 y1} |0.5-0.375| = 0.125;
    # (0.4,0.5]: {0.5 y1} 0.5;  (0.5,0.6]: {0.55 y0} 0.55.
    # ECE = (0.8 + 2 * 0.125 + 0.5 + 0.55) / 5 = 0.42 (the old code, mixing two binnings, gave 0.505).
    ece = cal.expected_calibration_error([1, 1, 0, 0, 1], [.2, .4, .35, .55, .5])
    assert ece == pytest.approx(0.42)


def test_reliability_curve_agrees_with_sklearn_off_the_edges():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 2000) ** 1.5
    y = rng.binomial(1, p)
    assert not np.isin(p, np.arange(11) / 10).any()
    curve = cal.reliability_curve(y, p, n_bins=10)
    fraction, mean_pred = calibration_curve(y, p, n_bins=10, strategy="uniform")
    np.testing.assert_allclose(curve["fraction_positive"], fraction)
    np.testing.assert_allclose(curve["mean_predicted"], mean_pred)
    assert curve["count"].sum() == len(p)
    manual = (curve["count"] / len(p) * (curve["fraction_positive"] - curve["mean_predicted"]).abs()).sum()
    assert cal.expected_calibration_error(y, p) == pytest.approx(manual)


def test_integer_sample_weights_equal_repeating_the_samples():
    y, p = _binary(1, n=300)
    rng = np.random.default_rng(1)
    idx = rng.integers(0, len(y), len(y))  # a bootstrap resample
    weights = np.bincount(idx, minlength=len(y))
    assert cal.expected_calibration_error(y, p, sample_weight=weights) == pytest.approx(
        cal.expected_calibration_error(y[idx], p[idx]))
    weighted = cal.reliability_curve(y, p, sample_weight=weights)
    np.testing.assert_allclose(weighted.to_numpy(dtype=float), cal.reliability_curve(y[idx], p[idx]).to_numpy(dtype=float))
    s_w, s_r = cal.calibration_summary(y, p, weights), cal.calibration_summary(y[idx], p[idx])
    assert s_w == pytest.approx(s_r, abs=1e-6)


@pytest.mark.parametrize("y_true, y_prob, weight, match", [
    ([0, 1], [0.5], None, "same length"),
    ([0, 2], [0.5, 0.5], None, "0/1"),
    ([0, 0.5], [0.5, 0.5], None, "0/1"),
    ([0, 1], [0.5, 1.5], None, r"\[0, 1\]"),
    ([0, 1], [0.5, np.nan], None, "finite"),
    ([], [], None, "empty"),
    ([0, 1], [0.5, 0.5], [1, -1], "non-negative"),
    ([0, 1], [0.5, 0.5], [1], "one weight per sample"),
])
def test_bad_binary_inputs_raise_one_line(y_true, y_prob, weight, match):
    with pytest.raises(ValueError, match=match) as info:
        cal.expected_calibration_error(y_true, y_prob, sample_weight=weight)
    assert "\n" not in str(info.value)


# --- slope and intercept -------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_perfectly_calibrated_has_slope_one_intercept_zero(seed):
    result = cal.calibration_slope_intercept(*_binary(seed))
    assert result["slope"] == pytest.approx(1.0, abs=SLOPE_TOL)
    assert result["intercept"] == pytest.approx(0.0, abs=INTERCEPT_TOL)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_overconfident_logits_times_two_have_slope_one_half(seed):
    assert cal.calibration_slope_intercept(*_binary(seed, scale=2.0))["slope"] == pytest.approx(0.5, abs=HALF_SLOPE_TOL)


def test_underestimated_risk_has_positive_intercept():
    assert cal.calibration_slope_intercept(*_binary(0, shift=-1.0))["intercept"] == pytest.approx(1.0, abs=INTERCEPT_TOL)


def test_slope_matches_sklearn_and_intercept_solves_its_score_equation():
    y, p = _binary(3, n=5000, scale=2.0)
    w = np.random.default_rng(3).integers(0, 4, len(y))
    result = cal.calibration_slope_intercept(y, p, sample_weight=w)
    x = logit(np.clip(p, 1e-6, 1 - 1e-6))
    model = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(x[:, None], y, sample_weight=w)
    assert result["slope"] == pytest.approx(model.coef_[0, 0], abs=1e-5)
    # with logit(p) as offset, the intercept b makes the weighted residuals sum to zero
    assert np.sum(w * (y - expit(x + result["intercept"]))) == pytest.approx(0.0, abs=1e-4)


def test_slope_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        cal.calibration_slope_intercept([1, 1, 1], [0.2, 0.5, 0.9])


# --- binary recalibration ------------------------------------------------------

def test_binary_recalibration_recovers_the_miscalibration_and_helps_held_out():
    y_val, p_val = _binary(10, scale=2.0)
    y_test, p_test = _binary(11, scale=2.0)
    platt = cal.fit_binary(y_val, p_val, "platt")
    temp = cal.fit_binary(y_val, p_val, "temperature")
    assert platt["a"] == pytest.approx(0.5, abs=HALF_SLOPE_TOL)
    assert platt["b"] == pytest.approx(0.0, abs=INTERCEPT_TOL)
    assert temp["temperature"] == pytest.approx(2.0, abs=TEMPERATURE_TOL)
    for params in (platt, temp):
        fixed = cal.apply_binary(params, p_test)
        assert cal.expected_calibration_error(y_test, fixed) < 0.5 * cal.expected_calibration_error(y_test, p_test)
        assert skm.log_loss(y_test, fixed) < skm.log_loss(y_test, p_test)
        assert skm.roc_auc_score(y_test, fixed) == skm.roc_auc_score(y_test, p_test)


def test_binary_params_are_json_and_none_is_identity():
    y, p = _binary(4, n=2000, scale=2.0)
    for method in ("platt", "temperature"):
        params = cal.fit_binary(y, p, method)
        np.testing.assert_array_equal(cal.apply_binary(json.loads(json.dumps(params)), p), cal.apply_binary(params, p))
    assert cal.fit_binary(y, p, "none") == {"method": "none"}
    np.testing.assert_array_equal(cal.apply_binary({"method": "none"}, p), p)


@pytest.mark.parametrize("call", [
    lambda: cal.fit_binary([0, 1], [0.2, 0.8], "isotonic"),
    lambda: cal.apply_binary({"method": "isotonic"}, [0.5]),
    lambda: cal.apply_binary({"a": 1.0}, [0.5]),
    lambda: cal.apply_multiclass({"method": "platt"}, [[0.5, 0.5]]),
])
def test_bad_method_raises_one_line(call):
    with pytest.raises(ValueError, match="method") as info:
        call()
    assert "\n" not in str(info.value)


# --- multi-class ---------------------------------------------------------------

def test_multiclass_temperature_recovers_two_keeps_argmax_and_helps_held_out():
    y_val, probs_val, z_val = _multiclass(20)
    y_test, probs_test, _ = _multiclass(21)
    params = cal.fit_temperature(y_val, probs_val)
    assert params["temperature"] == pytest.approx(2.0, abs=TEMPERATURE_TOL)
    from_logits = cal.fit_temperature(y_val, 2.0 * z_val, from_probs=False)
    assert from_logits["temperature"] == pytest.approx(params["temperature"], rel=1e-4)
    fixed = cal.apply_multiclass(json.loads(json.dumps(params)), probs_test)
    np.testing.assert_allclose(fixed.sum(axis=1), 1.0)
    np.testing.assert_array_equal(fixed.argmax(axis=1), probs_test.argmax(axis=1))
    before = cal.multiclass_calibration_summary(y_test, probs_test)
    after = cal.multiclass_calibration_summary(y_test, fixed)
    assert after["ece"] < 0.5 * before["ece"]
    assert after["log_loss"] < before["log_loss"]
    assert after["brier"] < before["brier"]


def test_multiclass_none_is_identity():
    _, probs, _ = _multiclass(5, n=50)
    np.testing.assert_array_equal(cal.apply_multiclass({"method": "none"}, probs), probs)


@pytest.mark.parametrize("y_true, probs, match", [
    ([0, 1], [0.5, 0.5], "2-D"),
    ([0], [[0.5, 0.5], [0.5, 0.5]], "same number"),
    ([0, 2], [[0.5, 0.5], [0.5, 0.5]], "0..1"),
    ([0, 1], [[1.5, -0.5], [0.5, 0.5]], r"\[0, 1\]"),
])
def test_bad_multiclass_inputs_raise_one_line(y_true, probs, match):
    with pytest.raises(ValueError, match=match) as info:
        cal.multiclass_calibration_summary(y_true, probs)
    assert "\n" not in str(info.value)


# --- summaries -----------------------------------------------------------------

def test_binary_summary_matches_its_parts():
    y, p = _binary(6, n=3000)
    summary = cal.calibration_summary(y, p)
    assert set(summary) == {"ece", "brier", "slope", "intercept"}
    assert summary["brier"] == pytest.approx(skm.brier_score_loss(y, p))
    assert summary["ece"] == cal.expected_calibration_error(y, p)
    assert summary["slope"] == cal.calibration_slope_intercept(y, p)["slope"]


def test_multiclass_summary_by_hand():
    y = [0, 2]
    probs = np.array([[0.7, 0.2, 0.1],    # correct, confidence 0.7
                      [0.6, 0.3, 0.1]])   # wrong, confidence 0.6
    summary = cal.multiclass_calibration_summary(y, probs)
    # Brier: (0.09 + 0.04 + 0.01 + 0.36 + 0.09 + 0.81) / 2 = 0.70
    assert summary["brier"] == pytest.approx(0.70)
    assert summary["log_loss"] == pytest.approx(skm.log_loss(y, probs, labels=[0, 1, 2]))
    # bins [0.7,0.8): |1 - 0.7|, [0.6,0.7): |0 - 0.6|  -> (0.3 + 0.6) / 2
    assert summary["ece"] == pytest.approx(0.45)


def test_calibration_imports_no_framework():
    code = "import sys, xraylib.calibration; print([m for m in ('tensorflow', 'keras', 'torch') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
