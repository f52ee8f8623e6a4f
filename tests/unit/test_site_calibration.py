"""Site calibration: threshold and recalibration fitted on the target site's own patients, cross-fitted."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from xraylib import calibration, evaluation, metrics
from xraylib import site_calibration as site


def _site(seed: int, n_patients: int = 300, shift: float = 2.0):
    """Patients with 1-3 images; the model's logit is the true one shifted by ``shift`` (over-calls the positive)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 4, n_patients)
    groups = np.repeat(np.arange(n_patients), sizes)
    patient_y = rng.integers(0, 2, n_patients)
    y = patient_y[groups]
    z = rng.normal(0, 1, n_patients)[groups] * 0.7 + rng.normal(0, 1, len(groups)) * 0.7 + (2 * y - 1) * 1.2
    return y, expit(z + shift), groups


def test_every_image_is_decided_by_a_rule_fitted_without_its_patient():
    y, p, g = _site(0)
    fitted = site.cross_fit(y, p, g, "platt", folds=2, seed=3)
    for patient in np.unique(g):
        assert len(set(fitted["fold"][g == patient])) == 1  # a patient never spans two folds
    for k in (0, 1):
        fit, apply = fitted["fold"] != k, fitted["fold"] == k
        cal = calibration.fit_binary(y[fit], p[fit], "platt")  # refit by hand on the OTHER fold
        assert fitted["maps"][k]["a"] == pytest.approx(cal["a"]) and fitted["maps"][k]["b"] == pytest.approx(cal["b"])
        thr = metrics.youden_threshold(y[fit], calibration.apply_binary(cal, p[fit]))
        assert np.all(fitted["threshold"][apply] == thr)
        assert fitted["calibrated"][apply] == pytest.approx(calibration.apply_binary(cal, p[apply]))
        assert {0, 1} <= set(y[apply])  # stratified: both classes in every fold
    assert sum(fitted["fit_images"]) == len(y)  # 2 folds: each image is in exactly one fitting set


def test_decision_scores_cut_at_half_exactly_where_the_fold_threshold_does():
    rng = np.random.default_rng(1)
    p, t = rng.random(1000), rng.choice([0.2, 0.7], 1000)
    assert np.array_equal(site.decision_scores(p, t) >= 0.5, p >= t)


def test_a_site_that_shifts_the_model_gets_its_specificity_and_calibration_back():
    y, p, g = _site(2, n_patients=600)
    as_shipped = metrics.binary_metrics(y, p, 0.5)  # the model over-calls pneumonia at this site
    rep = site.report(y, p, g, "platt", n_resamples=100, seed=0)
    rates = rep["decisions"][site.LABEL]
    assert as_shipped["specificity"] < 0.6 and rates["specificity"] > 0.75
    assert abs(rates["sensitivity"] - rates["specificity"]) < 0.15  # Youden's point on a symmetric problem
    assert rep["calibration"]["before"]["ece"] > 0.15 and rep["calibration"]["after"]["ece"] < 0.05
    assert rep["decisions"]["bootstrap"]["groups"] == len(np.unique(g))  # intervals resample patients
    summary = site.summary(rep)
    assert summary["mode"] == "site-calibrated" and len(summary["thresholds"]) == 2
    assert summary["specificity_ci"][0] < summary["specificity"] < summary["specificity_ci"][1]


def test_too_few_patients_is_one_clear_error():
    y, p, g = np.array([0, 0, 1, 1]), np.array([0.2, 0.3, 0.7, 0.8]), np.array([0, 0, 1, 2])
    with pytest.raises(ValueError, match="at least 2 patients of class 0, got 1"):
        site.cross_fit(y, p, g)
    with pytest.raises(ValueError, match="folds >= 2"):
        site.cross_fit(y, p, np.arange(4), folds=1)


def test_external_table_adds_a_labelled_site_calibrated_column():
    y, p, g = _site(4)
    internal = metrics.binary_report(y, expit(np.log(p / (1 - p)) - 2), {"youden_val": 0.5}, n_resamples=50)
    external = metrics.binary_report(y, p, {evaluation.STORED: 0.5}, n_resamples=50, groups=g)
    external["site_calibration"] = site.report(y, p, g, "temperature", n_resamples=50)
    table = evaluation.external_table(internal, "youden_val", {"site_b": external}, evaluation.STORED)
    assert list(table.columns) == ["internal test", "site_b", "site_b (site-calibrated)"]
    block = external["site_calibration"]["decisions"][site.LABEL]
    assert table.loc["specificity", "site_b (site-calibrated)"].startswith(f"{block['specificity']:.3f} [")
    assert table.loc["roc_auc", "site_b (site-calibrated)"] == ""  # ranking is the model's: not a new AUC
    after = external["site_calibration"]["calibration"]["after"]["ece"]
    assert table.loc["ece_recalibrated", "site_b (site-calibrated)"].startswith(f"{after:.3f}")


def test_store_in_model_refits_the_stored_threshold_and_keeps_the_validation_one(tmp_path):
    import json

    import pandas as pd

    y, p, _ = _site(5)
    sidecar = tmp_path / "model.json"
    sidecar.write_text(json.dumps({"threshold": 0.3, "calibration": {"method": "platt", "a": 1.0, "b": 0.0},
                                   "class_names": ["NORMAL", "PNEUMONIA"]}))
    predictions = pd.DataFrame({"label": np.where(y == 1, "PNEUMONIA", "NORMAL"), "prob_PNEUMONIA": p})
    stored = site.store_in_model(sidecar, "site_b", predictions, ["NORMAL", "PNEUMONIA"], "platt")
    meta = json.loads(sidecar.read_text())
    assert meta["threshold"] == stored["threshold"] == pytest.approx(metrics.youden_threshold(y, p))
    assert meta["validation_threshold"] == 0.3 and meta["validation_calibration"]["a"] == 1.0
    assert meta["calibration"]["a"] == pytest.approx(calibration.fit_binary(y, p, "platt")["a"])
    assert "SITE CALIBRATION" in meta["threshold_rule"] and "'site_b'" in meta["calibration"]["fitted_on"]
    site.store_in_model(sidecar, "site_b", predictions, ["NORMAL", "PNEUMONIA"], "platt")  # twice: validation kept
    assert json.loads(sidecar.read_text())["validation_threshold"] == 0.3


def test_calibrate_on_must_name_an_external_set_with_site_calibration():
    from xraylib import config, schema

    params = config.load_params()
    params["train_binary"]["calibrate_on"] = "nowhere"
    with pytest.raises(schema.ParamsError, match="calibrate_on: expected 'validation' or the name of a data.external"):
        schema.validate_params(params)
    params["train_binary"]["calibrate_on"] = params["data"]["external"][0]["name"]
    params["data"]["external"][0]["site_calibration"] = "none"
    with pytest.raises(schema.ParamsError, match="needs site_calibration platt or temperature"):
        schema.validate_params(params)
