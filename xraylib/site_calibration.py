"""Site calibration: a threshold and a recalibration map fitted on the target site's own images, by cross-fitting.

A model's stored threshold and recalibration come from its validation split, i.e. from the
training site. Where a hospital has some labelled images of its own, it can fit both on them
instead. Scoring the same images that were used to fit would flatter the result, so this mode
**cross-fits**: the site's patients are split into ``folds`` parts (scikit-learn's
``StratifiedGroupKFold``: whole patients, both classes in every part); for each part the map
(Platt or temperature) and the threshold (Youden's J on the recalibrated probabilities) are
fitted on the other parts and applied to it. Every image is thus decided by a rule fitted
without its patient, and all images are reported on.

The report is labelled ``site-calibrated`` everywhere it appears: it answers "what would this
model do at that site after a local calibration on N labelled patients", not "what does the
model as shipped do there" (that is the plain external report).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import special

from xraylib import calibration, evaluation, metrics

LABEL = evaluation.SITE_CALIBRATED


def cross_fit(y_true, y_prob, groups, method: str = "platt", folds: int = 2, seed: int = 0) -> dict:
    """Per image: the recalibrated probability and the threshold fitted on the other folds' patients.

    Args:
        y_true: 0/1 labels of the site's images.
        y_prob: the model's probabilities (as trained, before any stored recalibration).
        groups: patient (or leakage-group) id of each image; a patient never spans two folds.
        method: ``platt`` or ``temperature`` (:func:`xraylib.calibration.fit_binary`).
        folds: number of parts (2 = fit on half the patients, apply to the other half, and back).

    Returns:
        ``calibrated``, ``threshold`` and ``fold`` arrays (one value per image), ``maps`` and
        ``thresholds`` (one per fold), ``fit_images`` (images each fold's rule was fitted on).

    Raises:
        ValueError: fewer patients of a class than ``folds``.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    y = np.asarray(y_true, dtype=int)
    p = np.asarray(y_prob, dtype=float)
    g = np.asarray(groups)
    if not (len(y) == len(p) == len(g)):
        raise ValueError(f"y_true, y_prob and groups differ in length: {len(y)}, {len(p)}, {len(g)}")
    if int(folds) != folds or folds < 2:
        raise ValueError(f"site calibration needs folds >= 2, got {folds!r}")
    for label in (0, 1):
        n = len(np.unique(g[y == label]))
        if n < folds:
            raise ValueError(f"site calibration needs at least {folds} patients of class {label}, got {n}")
    calibrated, threshold, fold = np.empty(len(y)), np.empty(len(y)), np.empty(len(y), dtype=int)
    maps, thresholds, fit_images = [], [], []
    splitter = StratifiedGroupKFold(n_splits=int(folds), shuffle=True, random_state=seed)
    for k, (fit, apply) in enumerate(splitter.split(p, y, g)):
        cal = calibration.fit_binary(y[fit], p[fit], method)
        thr = metrics.youden_threshold(y[fit], calibration.apply_binary(cal, p[fit]))
        calibrated[apply] = calibration.apply_binary(cal, p[apply])
        threshold[apply], fold[apply] = thr, k
        maps.append(cal)
        thresholds.append(thr)
        fit_images.append(int(len(fit)))
    return {"calibrated": calibrated, "threshold": threshold, "fold": fold, "maps": maps, "thresholds": thresholds,
            "fit_images": fit_images}


def decision_scores(calibrated, threshold) -> np.ndarray:
    """Scores whose 0.5 cut gives each image's own-fold decision: ``sigmoid(logit(p) - logit(t))``.

    Monotone within a fold, so each fold's ranking is kept; ``score >= 0.5`` exactly when ``p >= t``.
    """
    eps = 1e-12
    p = np.clip(np.asarray(calibrated, dtype=float), eps, 1 - eps)
    t = np.clip(np.asarray(threshold, dtype=float), eps, 1 - eps)
    return special.expit(special.logit(p) - special.logit(t))


def report(y_true, y_prob, groups, method: str = "platt", folds: int = 2, n_resamples: int = 1000,
           seed: int = 0) -> dict:
    """The site-calibrated report: decisions at each fold's own threshold and calibration, patient-clustered CIs.

    ``decisions`` is a :func:`xraylib.metrics.binary_report` of :func:`decision_scores` at 0.5 (its
    rates are the site-calibrated sensitivity, specificity, accuracy ...); ``calibration`` compares the
    model's probabilities with the cross-fitted ones (:func:`xraylib.metrics.calibration_report`).
    """
    fitted = cross_fit(y_true, y_prob, groups, method, folds, seed)
    scores = decision_scores(fitted["calibrated"], fitted["threshold"])
    decisions = metrics.binary_report(y_true, scores, {LABEL: 0.5}, n_resamples=n_resamples, seed=seed,
                                      groups=groups)
    cal = metrics.calibration_report(y_true, y_prob, fitted["calibrated"], {"method": method, "cross_fitted": True},
                                     n_resamples=n_resamples, seed=seed, groups=groups)
    return {"mode": LABEL, "method": method, "folds": int(folds), "maps": fitted["maps"],
            "thresholds": fitted["thresholds"], "fit_images": fitted["fit_images"],
            "decisions": decisions, "calibration": cal,
            "note": (f"threshold and {method} map fitted on the site's own labelled patients, {folds}-fold "
                     "cross-fitted: each image decided by a rule fitted without its patient")}


SUMMARY_FIGURES = ("accuracy", "sensitivity", "specificity", "precision", "npv", "balanced_accuracy")


def summary(site_report: dict) -> dict:
    """The headline of a :func:`report`: rates at the site thresholds and ECE after, each with its interval."""
    block = site_report["decisions"][LABEL]
    after = site_report["calibration"]["after"]
    out = {"mode": LABEL, "method": site_report["method"], "folds": site_report["folds"],
           "thresholds": site_report["thresholds"]}
    for key in SUMMARY_FIGURES:
        out[key], out[f"{key}_ci"] = block.get(key), block.get(f"{key}_ci")
    out["ece"], out["ece_ci"] = after.get("ece"), after.get("ece_ci")
    return out


def store_in_model(sidecar: str | Path, set_name: str, predictions: pd.DataFrame, class_names: list[str],
                   method: str) -> dict:
    """SITE CALIBRATION of a saved binary model: its stored threshold and recalibration refitted on one site's set.

    ``predictions`` is that set's ``predictions.csv`` (labels and the model's probabilities, as
    :func:`xraylib.inference.evaluate_folder` writes them). The threshold is Youden's J on all of the
    set's images (on the model's probabilities, as a validation threshold is), the map is ``method``
    fitted on them; ``model.json`` keeps the validation ones as ``validation_threshold`` and
    ``validation_calibration`` and says in ``threshold_rule`` where the new ones come from. Figures on
    this set must then be its cross-fitted site-calibrated ones (:func:`report`), never scores of
    these images at the stored threshold.

    Returns:
        ``{"threshold", "calibration", "validation_threshold", "images"}``.
    """
    path = Path(sidecar)
    meta = json.loads(path.read_text())
    positive = f"prob_{evaluation.safe_column(class_names[1])}"
    y = (predictions["label"] == class_names[1]).to_numpy(int)
    p = predictions[positive].to_numpy(float)
    threshold = metrics.youden_threshold(y, p)
    cal = {**calibration.fit_binary(y, p, method), "fitted_on": f"external set {set_name!r} (site calibration)"}
    if "validation_threshold" not in meta:  # refitting twice keeps the validation values from training
        meta["validation_threshold"], meta["validation_calibration"] = meta["threshold"], meta.get("calibration")
    meta.update({"threshold": threshold, "calibration": cal,
                 "threshold_rule": (f"SITE CALIBRATION: Youden's J on the {len(y)} images of the external set "
                                    f"{set_name!r} (train_binary.calibrate_on); the validation threshold is "
                                    "validation_threshold")})
    path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return {"threshold": threshold, "calibration": cal, "validation_threshold": meta["validation_threshold"],
            "images": int(len(y))}
