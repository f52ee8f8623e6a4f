"""The Keras back end keeps the inference contract (tests/contract_cases.py), as the PyTorch one does.

The model is trained, then its stored threshold is moved so that at least one image
lies between 0.5 and the threshold: the predicted class must follow the stored value.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests import contract_cases as contract
from tests.tf.helpers import train_and_save
from xraylib import config, inference, tf_model

SIZE = 32


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_manifest, tiny_class_names):
    path, _, _ = train_and_save(tmp_path_factory.mktemp("contract"), tiny_manifest, tiny_class_names, 0.5,
                                image_size=SIZE, data_source="synthetic")
    return path


@pytest.fixture
def folder(tmp_path, tiny_manifest):
    root = tmp_path / "set"
    for _, row in tiny_manifest[tiny_manifest["split"] == "test"].iterrows():
        (root / row["label"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(config.resolve(row["path"]), root / row["label"])
    return root


def _move_threshold(path, probabilities) -> float:
    """Store a threshold that decides at least one image otherwise than 0.5 would."""
    p = np.sort(probabilities)
    below, above = p[p < 0.5], p[p >= 0.5]
    threshold = float((above[0] + above[1]) / 2) if len(above) > 1 else float((below[-1] + below[-2]) / 2)
    settings = json.loads(tf_model.sidecar_path(path).read_text())
    settings["threshold"] = threshold
    tf_model.sidecar_path(path).write_text(json.dumps(settings))
    assert ((probabilities >= threshold) != (probabilities >= 0.5)).any()
    return threshold


def test_keras_backend_keeps_the_contract_with_a_stored_threshold_not_0_5(trained, folder, tmp_path):
    with pytest.warns(UserWarning, match="trained on the synthetic demo images"):
        first = inference.predict_files(inference.load_classifier(trained), [folder], tmp_path / "first.csv")
    probabilities = np.loadtxt(tmp_path / "first.csv", delimiter=",", skiprows=1, usecols=4, dtype=float)
    assert first["predicted"] == len(probabilities) and first["warning"]
    threshold = _move_threshold(trained, probabilities)
    model = inference.load_classifier(trained)
    assert (model.settings.framework, model.settings.threshold) == ("keras", threshold)
    with pytest.warns(UserWarning, match="synthetic"):
        table = contract.check_predict(model, folder, tmp_path)
        summary = contract.check_evaluate(model, folder, tmp_path, table)
        maps = contract.check_cams(model, folder, tmp_path)
        contract.check_recalibration(model, folder, tmp_path / "recalibration")
    assert maps.shape[1:] == (SIZE, SIZE)  # tf_gradcam upsamples to the image size
    assert summary["stored_threshold"]["threshold"] == pytest.approx(threshold, abs=1e-6)  # metrics.json: 6 digits
