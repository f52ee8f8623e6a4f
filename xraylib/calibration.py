"""Calibration of predicted probabilities: reliability curves, ECE, slope, recalibration.

Framework-free (numpy, scipy, scikit-learn, pandas). Written here rather than taken
from scikit-learn:

* :func:`bin_index` is the one binning that both :func:`reliability_curve` and
  :func:`expected_calibration_error` use. ``sklearn.calibration.calibration_curve``
  puts a value on an edge into the bin below (left-open bins: 0.5 falls in bin 4 of
  10), while ``np.histogram`` counts right-open bins (0.5 falls in bin 5). Combining
  the two mis-aligned the counts with the bins, or raised when their numbers of
  non-empty bins differed. Here both use scikit-learn's rule: bins ``(i/n, (i+1)/n]``
  with 0 in the first, so the curve agrees with ``calibration_curve`` everywhere.
  Edges are ``i / n_bins`` (0.3 is an edge; ``linspace`` gives 0.30000000000000004).
  Both take ``sample_weight`` so a bootstrap that resamples by integer weights gets
  the same value as on copies.
* :func:`calibration_slope_intercept` (Cox 1958; Van Calster et al. 2016): the
  slope of a logistic regression of y on logit(p), and calibration-in-the-large,
  the intercept with logit(p) as offset. Unpenalised fits by scipy.
* Recalibration maps fitted on the validation split and stored with the model as
  small JSON-able dicts: Platt scaling and temperature scaling for binary
  outputs, temperature scaling (Guo et al. 2017) for multi-class outputs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize, special
from sklearn import metrics as skm

SLOPE_EPS = 1e-6  # p clipped to [eps, 1 - eps] for calibration slope/intercept
RECAL_EPS = 1e-12  # p clipped to [eps, 1 - eps] (binary) or [eps, 1] (multi-class) for recalibration
BINARY_METHODS = ("none", "platt", "temperature")
MULTICLASS_METHODS = ("none", "temperature")


def _check_weight(sample_weight, n: int) -> np.ndarray:
    if sample_weight is None:
        return np.ones(n)
    w = np.asarray(sample_weight, dtype=float).ravel()
    if w.shape != (n,):
        raise ValueError(f"sample_weight must have one weight per sample ({n}), got shape {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError("sample_weight must be finite and non-negative with a positive sum")
    return w


def _check_prob(y_prob) -> np.ndarray:
    p = np.asarray(y_prob, dtype=float).ravel()
    if p.size == 0:
        raise ValueError("y_prob is empty; expected at least one probability")
    if not np.isfinite(p).all() or p.min() < 0 or p.max() > 1:
        raise ValueError(f"probabilities must be finite and lie in [0, 1], got range [{np.nanmin(p):.3g}, {np.nanmax(p):.3g}]")
    return p


def _check_binary(y_true, y_prob, sample_weight=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.asarray(y_true).ravel()
    p = _check_prob(y_prob)
    if y.shape != p.shape:
        raise ValueError(f"y_true and y_prob must have the same length, got {y.shape[0]} and {p.shape[0]}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"binary labels must be 0/1, got values {np.unique(y).tolist()[:10]}")
    return y.astype(float), p, _check_weight(sample_weight, y.size)


def _need_both_classes(y: np.ndarray, w: np.ndarray, what: str) -> None:
    if not (w[y == 1].sum() > 0 and w[y == 0].sum() > 0):
        raise ValueError(f"{what} needs both classes (0 and 1) in y_true with positive weight, got only one")


def bin_index(y_prob, n_bins: int = 10) -> np.ndarray:
    """Bin of each probability among ``n_bins`` uniform bins on [0, 1].

    Bin ``i`` is ``(i/n_bins, (i+1)/n_bins]``; the first bin also holds 0.0 (scikit-learn's
    ``calibration_curve`` rule). So with 10 bins 0.5 is in bin 4, 0.3 in bin 2, 0.31 in
    bin 3 and 1.0 in bin 9.

    Raises:
        ValueError: ``n_bins`` is not a positive integer or a probability is outside [0, 1].
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    inner = np.arange(1, n_bins) / n_bins
    return np.searchsorted(inner, _check_prob(y_prob), side="left")


def reliability_curve(y_true, y_prob, n_bins: int = 10, sample_weight=None) -> pd.DataFrame:
    """Mean predicted probability vs observed fraction of positives in each non-empty bin.

    Returns:
        DataFrame with ``bin_low, bin_high, mean_predicted, fraction_positive, count``;
        ``count`` is the number of samples, or their summed weight with ``sample_weight``.
    """
    y, p, w = _check_binary(y_true, y_prob, sample_weight)
    idx = bin_index(p, n_bins)
    total = np.bincount(idx, weights=w, minlength=n_bins)
    keep = np.flatnonzero(total > 0)
    count = total[keep] if sample_weight is not None else np.rint(total[keep]).astype(int)
    return pd.DataFrame({
        "bin_low": keep / n_bins,
        "bin_high": (keep + 1) / n_bins,
        "mean_predicted": np.bincount(idx, weights=w * p, minlength=n_bins)[keep] / total[keep],
        "fraction_positive": np.bincount(idx, weights=w * y, minlength=n_bins)[keep] / total[keep],
        "count": count,
    })


def expected_calibration_error(y_true, y_prob, n_bins: int = 10, sample_weight=None) -> float:
    """ECE: count-weighted mean of |fraction_positive - mean_predicted| over the bins of :func:`bin_index`."""
    curve = reliability_curve(y_true, y_prob, n_bins, sample_weight)
    weights = curve["count"] / curve["count"].sum()
    return float((weights * (curve["fraction_positive"] - curve["mean_predicted"]).abs()).sum())


def _logit(p: np.ndarray, eps: float) -> np.ndarray:
    return special.logit(np.clip(p, eps, 1.0 - eps))


def _fit_logistic(x, y, w, slope=None, intercept=None, slope_bounds=(None, None)) -> tuple[float, float]:
    """Weighted unpenalised logistic fit of y on ``slope * x + intercept``; a value given is held fixed."""
    free = [slope is None, intercept is None]

    def unpack(theta):
        it = iter(theta)
        return (next(it) if free[0] else slope), (next(it) if free[1] else intercept)

    def loss(theta):
        a, b = unpack(theta)
        z = a * x + b
        r = w * (special.expit(z) - y)
        grad = [r @ x] * free[0] + [r.sum()] * free[1]
        return (w @ (np.logaddexp(0.0, z) - y * z)) / w.sum(), np.array(grad) / w.sum()

    start = [1.0] * free[0] + [0.0] * free[1]
    bounds = [slope_bounds] * free[0] + [(None, None)] * free[1]
    res = optimize.minimize(loss, start, jac=True, method="L-BFGS-B", bounds=bounds,
                            options={"ftol": 1e-14, "gtol": 1e-10, "maxiter": 1000})
    a, b = unpack(res.x)
    return float(a), float(b)


def calibration_slope_intercept(y_true, y_prob, sample_weight=None) -> dict:
    """Calibration slope and intercept (calibration-in-the-large) of binary probabilities.

    ``slope`` is ``a`` in ``logit P(y=1) = a * logit(p) + b`` (1 is ideal; below 1
    means over-confident); ``intercept`` is ``b`` with ``a`` fixed at 1 (0 is ideal;
    positive means risks are under-estimated). ``p`` is clipped to [1e-6, 1 - 1e-6].
    """
    y, p, w = _check_binary(y_true, y_prob, sample_weight)
    _need_both_classes(y, w, "calibration_slope_intercept")
    x = _logit(p, SLOPE_EPS)
    slope, _ = _fit_logistic(x, y, w)
    _, intercept = _fit_logistic(x, y, w, slope=1.0)
    return {"slope": slope, "intercept": intercept}


def fit_binary(y_true, y_prob, method: str = "platt", sample_weight=None) -> dict:
    """Fit a recalibration map on validation data by minimising log-loss.

    Returns:
        ``{"method": "platt", "a": a, "b": b}`` for ``p' = sigmoid(a * logit(p) + b)``,
        ``{"method": "temperature", "temperature": T}`` for ``p' = sigmoid(logit(p) / T)``,
        or ``{"method": "none"}``. Apply with :func:`apply_binary`.
    """
    if method not in BINARY_METHODS:
        raise ValueError(f"binary recalibration method must be one of {BINARY_METHODS}, got {method!r}")
    y, p, w = _check_binary(y_true, y_prob, sample_weight)
    if method == "none":
        return {"method": "none"}
    _need_both_classes(y, w, "fit_binary")
    x = _logit(p, RECAL_EPS)
    if method == "platt":
        a, b = _fit_logistic(x, y, w)
        return {"method": "platt", "a": a, "b": b}
    inv_t, _ = _fit_logistic(x, y, w, intercept=0.0, slope_bounds=(1e-3, 1e3))
    return {"method": "temperature", "temperature": 1.0 / inv_t}


def _method(params, allowed: tuple[str, ...]) -> str:
    method = params.get("method") if isinstance(params, dict) else None
    if method not in allowed:
        raise ValueError(f"recalibration params must be a dict with 'method' in {allowed}, got {params!r}")
    return method


def apply_binary(params: dict, y_prob) -> np.ndarray:
    """Apply a map from :func:`fit_binary` to binary probabilities."""
    method = _method(params, BINARY_METHODS)
    p = _check_prob(y_prob)
    if method == "none":
        return p.copy()
    x = _logit(p, RECAL_EPS)
    if method == "platt":
        return special.expit(float(params["a"]) * x + float(params["b"]))
    return special.expit(x / float(params["temperature"]))


def _check_probs(probs, unit: bool = True) -> np.ndarray:
    p = np.asarray(probs, dtype=float)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] < 2:
        raise ValueError(f"probabilities must be a 2-D array (n_samples, n_classes >= 2), got shape {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError("probabilities (or logits) must be finite, got NaN or infinity")
    if unit and (p.min() < 0 or p.max() > 1):
        raise ValueError(f"probabilities must lie in [0, 1], got range [{p.min():.3g}, {p.max():.3g}]")
    return p


def _check_multiclass(y_true, probs, unit: bool = True) -> tuple[np.ndarray, np.ndarray]:
    p = _check_probs(probs, unit)
    y = np.asarray(y_true).ravel()
    if y.shape[0] != p.shape[0]:
        raise ValueError(f"y_true and probs must have the same number of samples, got {y.shape[0]} and {p.shape[0]}")
    if not np.isin(y, np.arange(p.shape[1])).all():
        raise ValueError(f"labels must be integers in 0..{p.shape[1] - 1}, got values {np.unique(y).tolist()[:10]}")
    return y.astype(int), p


def _log_probs(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(probs, RECAL_EPS, 1.0))


def fit_temperature(y_true, probs_or_logits, from_probs: bool = True) -> dict:
    """Multi-class temperature scaling (Guo et al. 2017) fitted by minimising log-loss.

    With ``from_probs`` the scores are probabilities and are used as log-probabilities
    (clipped at 1e-12); otherwise they are logits. Either way :func:`apply_multiclass`
    on the softmax probabilities gives ``softmax(logits / T)``.
    """
    y, z = _check_multiclass(y_true, probs_or_logits, unit=from_probs)
    if from_probs:
        z = _log_probs(z)
    z_true = z[np.arange(len(y)), y]

    def loss(theta):
        s = theta[0] * z
        q = special.softmax(s, axis=1)
        value = np.mean(special.logsumexp(s, axis=1) - theta[0] * z_true)
        return value, np.array([np.mean((q * z).sum(axis=1) - z_true)])

    res = optimize.minimize(loss, [1.0], jac=True, method="L-BFGS-B", bounds=[(1e-3, 1e3)],
                            options={"ftol": 1e-14, "gtol": 1e-10, "maxiter": 1000})
    return {"method": "temperature", "temperature": float(1.0 / res.x[0])}


def apply_multiclass(params: dict, probs) -> np.ndarray:
    """Apply a map from :func:`fit_temperature`: ``softmax(log p / T)`` row by row."""
    method = _method(params, MULTICLASS_METHODS)
    p = _check_probs(probs)
    if method == "none":
        return p.copy()
    return special.softmax(_log_probs(p) / float(params["temperature"]), axis=1)


def calibration_summary(y_true, y_prob, sample_weight=None) -> dict:
    """Binary calibration: ``ece`` (10 bins), ``brier``, ``slope`` and ``intercept``."""
    y, p, _ = _check_binary(y_true, y_prob, sample_weight)
    return {
        "ece": expected_calibration_error(y, p, sample_weight=sample_weight),
        "brier": float(skm.brier_score_loss(y, p, sample_weight=sample_weight)),
        **calibration_slope_intercept(y, p, sample_weight),
    }


def multiclass_calibration_summary(y_true, probs, sample_weight=None) -> dict:
    """Multi-class calibration: top-label ``ece``, multi-class ``brier`` and ``log_loss``.

    Top-label ECE bins the confidence (largest probability) against whether the
    argmax is correct. Brier is the (weighted) mean over images of
    ``sum_k (p_k - onehot_k)^2``; log-loss clips p at 1e-12.
    """
    y, p = _check_multiclass(y_true, probs)
    w = _check_weight(sample_weight, len(y))
    correct = (p.argmax(axis=1) == y).astype(int)
    onehot = np.eye(p.shape[1])[y]
    p_true = np.clip(p[np.arange(len(y)), y], RECAL_EPS, 1.0)
    return {
        "ece": expected_calibration_error(correct, p.max(axis=1), sample_weight=w),
        "brier": float(np.average(((p - onehot) ** 2).sum(axis=1), weights=w)),
        "log_loss": float(np.average(-np.log(p_true), weights=w)),
    }
