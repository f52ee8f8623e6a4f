"""Saving, reloading and using a binary model: round trip, external evaluation, the predictor."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from tests.tf.helpers import train_and_save
from xraylib import cli, config, inference, tf_data, tf_model

SIZE = 32


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, tiny_manifest, tiny_class_names):
    """A small CNN trained one epoch and saved with its settings (threshold 0.4, hist equalisation)."""
    return train_and_save(tmp_path_factory.mktemp("model"), tiny_manifest, tiny_class_names, 0.4, image_size=SIZE,
                          resize="pad", equalize="hist")


def _evaluate(path, folder, out, **kwargs) -> dict:
    return inference.evaluate_folder(inference.load_classifier(path), folder, out, **kwargs)


def _predict(path, inputs, out_csv, **kwargs) -> dict:
    return inference.predict_files(inference.load_classifier(path), inputs, out_csv, **kwargs)


@pytest.fixture
def external_folder(tmp_path, tiny_manifest):
    """Class-per-folder copy of the tiny test split plus one corrupt file."""
    root = tmp_path / "external"
    for _, row in tiny_manifest[tiny_manifest["split"] == "test"].iterrows():
        target = root / row["label"] / config.resolve(row["path"]).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(config.resolve(row["path"]), target)
    (root / "NORMAL" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return root


def test_round_trip_gives_identical_predictions_in_safe_mode(saved_model):
    path, model, data = saved_model
    reloaded, meta = tf_model.load_model(path)  # keras.saving.load_model(..., safe_mode=True)
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in reloaded.layers)
    ds = data["test"]["dataset"]
    np.testing.assert_array_equal(tf_model.predict_proba(reloaded, ds), tf_model.predict_proba(model, ds))
    assert meta["threshold"] == 0.4 and meta["class_names"] == ["NORMAL", "PNEUMONIA"]
    assert (meta["image_size"], meta["resize"], meta["equalize"]) == (SIZE, "pad", "hist")
    assert tf_model.last_conv_layer_name(reloaded) == "cnn_block4_act"


def test_missing_sidecar_is_reported(saved_model, tmp_path):
    path = tmp_path / "lonely.keras"
    shutil.copy(saved_model[0], path)
    with pytest.raises(FileNotFoundError, match="settings"):
        tf_model.load_model(path)


def test_evaluate_folder_uses_stored_threshold_and_quarantines(saved_model, external_folder, tmp_path):
    path, model, _ = saved_model
    out = tmp_path / "report"
    result = _evaluate(path, external_folder, out, batch_size=4)
    summary = result["summary"]
    assert summary["quarantined"] == 1 and "broken.png" in result["quarantine"][0]["path"]
    assert summary["stored_threshold"]["threshold"] == 0.4
    assert {"roc_auc", "original_0.75"} <= set(summary)
    written = json.loads((out / "metrics.json").read_text())
    assert written["summary"]["images"] == summary["images"]
    for name in ("predictions.csv", "quarantine.csv", "roc.csv", "roc.png", "confusion_stored_threshold.png"):
        assert (out / name).is_file(), name
    predictions = pd.read_csv(out / "predictions.csv")
    # Same pixels as training: probabilities match the model on images prepared with the stored settings.
    expected = model.predict(tf_data.load_images(predictions["path"], SIZE, "pad", "hist")[..., None], verbose=0)
    np.testing.assert_allclose(predictions["prob_PNEUMONIA"], expected[:, 0], atol=1e-5)
    # The metrics, recomputed with scikit-learn from the folder names (the true labels) and Keras' output.
    _assert_binary_summary(summary, predictions["path"].map(_folder_label), expected[:, 0], 0.4)
    assert list(predictions["predicted"]) == ["PNEUMONIA" if p >= 0.4 else "NORMAL" for p in expected[:, 0]]


def _folder_label(path: str) -> str:
    return Path(path).parent.name


def _assert_binary_summary(summary: dict, labels, probability, threshold: float) -> None:
    """Headline numbers of an evaluation against scikit-learn on the true labels."""
    y = (np.asarray(labels) == "PNEUMONIA").astype(int)
    assert 0 < y.sum() < len(y), "the check needs both classes"
    decided = (np.asarray(probability) >= threshold).astype(int)
    assert summary["n"] == len(y) and summary["n_positive"] == y.sum()
    assert summary["roc_auc"] == pytest.approx(skm.roc_auc_score(y, probability), abs=1e-6)
    assert summary["average_precision"] == pytest.approx(skm.average_precision_score(y, probability), abs=1e-6)
    stored = summary["stored_threshold"]
    assert stored["threshold"] == threshold
    assert stored["accuracy"] == pytest.approx(skm.accuracy_score(y, decided))
    assert stored["sensitivity"] == pytest.approx(skm.recall_score(y, decided, zero_division=0))
    assert stored["specificity"] == pytest.approx(skm.recall_score(1 - y, 1 - decided, zero_division=0))
    original = (np.asarray(probability) >= 0.75).astype(int)
    assert summary["original_0.75"]["accuracy"] == pytest.approx(skm.accuracy_score(y, original))


def test_cli_evaluate_writes_to_the_working_directory_and_matches_sklearn(saved_model, external_folder, tmp_path,
                                                                          monkeypatch, capsys):
    path, model, _ = saved_model
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert cli.main(["evaluate", str(path), str(external_folder)]) == 0  # --out defaults to ./external_evaluation
    printed = json.loads(capsys.readouterr().out)
    predictions = pd.read_csv(work / "external_evaluation" / "predictions.csv")
    assert printed["images"] == len(predictions) == len(list(external_folder.glob("*/synpat*.png")))
    expected = model.predict(tf_data.load_images(predictions["path"], SIZE, "pad", "hist")[..., None], verbose=0)
    _assert_binary_summary(printed, predictions["path"].map(_folder_label), expected[:, 0], 0.4)


def test_evaluate_folder_rejects_unknown_classes(saved_model, external_folder, tmp_path):
    (external_folder / "COVID").mkdir()
    shutil.copy(sorted((external_folder / "NORMAL").glob("synpat*.png"))[0], external_folder / "COVID" / "x.png")
    with pytest.raises(ValueError, match="not classes of the model"):
        _evaluate(saved_model[0], external_folder, tmp_path / "r")


def test_predict_files_skips_bad_inputs(saved_model, external_folder, tmp_path):
    out_csv = tmp_path / "pred.csv"
    good = next((external_folder / "PNEUMONIA").glob("*.png"))
    result = _predict(saved_model[0], [external_folder / "NORMAL", good, tmp_path / "nope.png"],
                                       out_csv)
    skipped = dict(result["skipped"])
    assert any(p.endswith("broken.png") for p in skipped) and str(tmp_path / "nope.png") in skipped
    table = pd.read_csv(out_csv)
    assert result["predicted"] == len(table) == len(list((external_folder / "NORMAL").glob("synpat*.png"))) + 1
    assert list(table.columns) == ["path", "predicted", "threshold", "prob_NORMAL", "prob_PNEUMONIA", "model",
                                   "data_source"]
    assert (table["threshold"] == 0.4).all() and (table["model"] == config.relative_to_project(saved_model[0])).all()
    expected = saved_model[1].predict(tf_data.load_images(table["path"], SIZE, "pad", "hist")[..., None],
                                      verbose=0)[:, 0]
    np.testing.assert_allclose(table["prob_PNEUMONIA"], expected, atol=1e-5)
    np.testing.assert_allclose(table["prob_NORMAL"], 1.0 - expected, atol=1e-5)
    assert list(table["predicted"]) == ["PNEUMONIA" if p >= 0.4 else "NORMAL" for p in expected]  # stored 0.4


def test_predict_files_writes_gradcam_overlays(saved_model, external_folder, tmp_path):
    good = sorted((external_folder / "PNEUMONIA").glob("*.png"))[:2]
    result = _predict(saved_model[0], good, tmp_path / "pred.csv", cam_dir=tmp_path / "cams")
    assert result["predicted"] == 2
    cams = tmp_path / "cams"
    assert len(list(cams.glob("*_cam.png"))) == len(list(cams.glob("*_figure.png"))) == 2  # overlay and figure


def test_original_validation_images_when_available(saved_model, tmp_path):
    folder = config.shared_path("data", "kermany_val_original")
    if folder is None:
        pytest.skip(f"real data not available: {config.SHARED_DIR / 'data' / 'kermany_val_original'} is absent")
    result = _evaluate(saved_model[0], folder, tmp_path / "orig")
    assert result["summary"]["images"] == 16 and result["summary"]["quarantined"] == 0


def test_site_calibration_is_an_extra_labelled_block_and_leaves_the_plain_report(saved_model, external_folder,
                                                                                 tmp_path, capsys):
    path = saved_model[0]
    plain = _evaluate(path, external_folder, tmp_path / "plain")
    assert cli.main(["evaluate", str(path), str(external_folder), "--out", str(tmp_path / "site"),
                     "--site-calibration", "platt"]) == 0
    printed = json.loads(capsys.readouterr().out)
    site = printed["site_calibration"]
    assert site["mode"] == "site-calibrated" and site["method"] == "platt" and len(site["thresholds"]) == 2
    for key in ("accuracy", "sensitivity", "specificity", "ece"):
        assert 0 <= site[key] <= 1 and len(site[f"{key}_ci"]) == 2
    assert printed[inference.evaluation.STORED] == plain["summary"][inference.evaluation.STORED]  # as shipped: same
    stored = json.loads((tmp_path / "site" / "metrics.json").read_text())
    assert stored["report"]["site_calibration"]["decisions"]["bootstrap"]["groups"] > 1


def test_confident_errors_are_the_wrongly_called_images_most_confident_first(saved_model, external_folder, tmp_path):
    path = saved_model[0]
    _evaluate(path, external_folder, tmp_path / "r")
    table = pd.read_csv(tmp_path / "r" / "predictions.csv")
    classifier = inference.load_classifier(path)
    images_, overlays, titles = inference.confident_errors(classifier, table, "NORMAL", n=3)
    wrong = table[(table["label"] == "NORMAL") & (table["predicted"] == "PNEUMONIA")]
    assert len(images_) == len(overlays) == len(titles) == min(3, len(wrong))
    expected = wrong.sort_values("prob_PNEUMONIA", ascending=False, kind="stable").head(3)
    assert [t.split("\n")[0] for t in titles] == [Path(p).name for p in expected["path"]]
    for img, overlay in zip(images_, overlays):
        assert img.shape == (SIZE, SIZE) and overlay.shape == (SIZE, SIZE, 3)
    with pytest.raises(ValueError, match="not a class of the model"):
        inference.confident_errors(classifier, table, "COVID")
