"""Saving, reloading and using a binary model: round trip, external evaluation, the predictor."""

from __future__ import annotations

import json
import shutil

import keras
import numpy as np
import pandas as pd
import pytest

from xraylib import config, tf_data, tf_evaluate, tf_model, tf_train

SIZE = 32


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, tiny_manifest, tiny_class_names):
    """A small CNN trained one epoch and saved with its settings (threshold 0.4, hist equalisation)."""
    tf_train.set_determinism(0)
    data = tf_data.split_datasets(tiny_manifest, tiny_class_names, image_size=SIZE, resize_mode="pad",
                                  equalize_method="hist", batch_size=8, seed=0)
    cfg = tf_train.TrainConfig(image_size=SIZE, epochs=1, batch_size=8, seed=0)
    result = tf_train.train_binary(cfg, data)
    meta = tf_train.model_metadata(cfg, tiny_class_names, 0.4, resize_mode="pad", equalize_method="hist")
    path = tf_model.save_model(result.model, tmp_path_factory.mktemp("model") / "model.keras", meta)
    return path, result.model, data


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
    np.testing.assert_array_equal(tf_train.predict_proba(reloaded, ds), tf_train.predict_proba(model, ds))
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
    result = tf_evaluate.evaluate_folder(path, external_folder, out, batch_size=4)
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
    np.testing.assert_allclose(predictions["probability_PNEUMONIA"], expected[:, 0], atol=1e-5)


def test_evaluate_folder_rejects_unknown_classes(saved_model, external_folder, tmp_path):
    (external_folder / "COVID").mkdir()
    shutil.copy(sorted((external_folder / "NORMAL").glob("synpat*.png"))[0], external_folder / "COVID" / "x.png")
    with pytest.raises(ValueError, match="not classes of the model"):
        tf_evaluate.evaluate_folder(saved_model[0], external_folder, tmp_path / "r")


def test_predict_files_skips_bad_inputs(saved_model, external_folder, tmp_path):
    out_csv = tmp_path / "pred.csv"
    good = next((external_folder / "PNEUMONIA").glob("*.png"))
    result = tf_evaluate.predict_files(saved_model[0], [external_folder / "NORMAL", good, tmp_path / "nope.png"],
                                       out_csv)
    skipped = dict(result["skipped"])
    assert any(p.endswith("broken.png") for p in skipped) and str(tmp_path / "nope.png") in skipped
    table = pd.read_csv(out_csv)
    assert result["predicted"] == len(table) == len(list((external_folder / "NORMAL").glob("synpat*.png"))) + 1
    assert list(table.columns) == ["path", "predicted", "probability_NORMAL", "probability_PNEUMONIA"]
    np.testing.assert_allclose(table["probability_NORMAL"] + table["probability_PNEUMONIA"], 1.0, atol=1e-5)
    assert set(table["predicted"]) <= {"NORMAL", "PNEUMONIA"}


def test_predict_files_writes_gradcam_overlays(saved_model, external_folder, tmp_path):
    good = sorted((external_folder / "PNEUMONIA").glob("*.png"))[:2]
    result = tf_evaluate.predict_files(saved_model[0], good, tmp_path / "pred.csv", cam_dir=tmp_path / "cams")
    assert result["predicted"] == 2
    assert len(list((tmp_path / "cams").glob("*.png"))) == 2


def test_original_validation_images_when_available(saved_model, tmp_path):
    folder = config.shared_path("data", "kermany_val_original")
    if folder is None:
        pytest.skip(f"real data not available: {config.SHARED_DIR / 'data' / 'kermany_val_original'} is absent")
    result = tf_evaluate.evaluate_folder(saved_model[0], folder, tmp_path / "orig")
    assert result["summary"]["images"] == 16 and result["summary"]["quarantined"] == 0
