"""The PyTorch back end keeps the inference contract (tests/contract_cases.py), as the Keras one does."""

from __future__ import annotations

import shutil

from tests import contract_cases as contract
from xraylib import inference


def test_torch_backend_keeps_the_contract(trained_checkpoint, tiny_root, tmp_path):
    folder = tmp_path / "set"
    shutil.copytree(tiny_root / "test", folder)
    model = inference.load_classifier(trained_checkpoint)
    assert (model.settings.framework, model.settings.threshold, model.settings.class_names) == \
        ("torch", None, ("BACTERIA", "NORMAL", "VIRUS"))
    table = contract.check_predict(model, folder, tmp_path)
    summary = contract.check_evaluate(model, folder, tmp_path, table)
    assert set(summary["per_class"]) == {"BACTERIA", "NORMAL", "VIRUS"}
    maps = contract.check_cams(model, folder, tmp_path)
    assert maps.shape[1:] == (32, 32)  # pytorch-grad-cam upsamples to the image size
    contract.check_recalibration(model, folder, tmp_path / "recalibration")


def test_torch_model_reads_the_temperature_stored_beside_its_checkpoint(trained_checkpoint, tmp_path):
    copy = tmp_path / "run" / "best.pt"
    copy.parent.mkdir()
    shutil.copy(trained_checkpoint, copy)
    assert inference.load_classifier(copy).settings.recalibration == {"method": "none"}
    (copy.parent / "calibration.json").write_text('{"method": "temperature", "temperature": 1.7}')
    assert inference.load_classifier(copy).settings.recalibration["temperature"] == 1.7
