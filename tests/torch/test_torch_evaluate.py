"""Evaluation of saved checkpoints: test split, external folders, predictions and the CLI."""

from __future__ import annotations

import json
import shutil
import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import confusion_matrix

import xraylib
from xraylib import cli
from xraylib.torch_evaluate import evaluate_folder, evaluate_split, load_checkpoint, predict_files


@pytest.fixture
def external(tiny_root, tmp_path):
    """A class-per-folder copy of the test images plus one corrupt file and one text file."""
    folder = tmp_path / "external"
    shutil.copytree(tiny_root / "test", folder)
    (folder / "NORMAL" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    return folder


def test_load_checkpoint_rebuilds_the_model(trained_checkpoint):
    model, meta = load_checkpoint(trained_checkpoint)
    assert not model.training
    assert meta["arch"] == "squeezenet" and meta["class_names"] == ["BACTERIA", "NORMAL", "VIRUS"]
    assert meta["image_size"] == 32 and meta["resize"] == "stretch" and meta["mean"] == [0.485, 0.456, 0.406]


def test_load_checkpoint_rejects_a_bare_state_dict(trained_checkpoint, tmp_path):
    bare = tmp_path / "bare.pt"
    torch.save(torch.load(trained_checkpoint, weights_only=True)["model_state"], bare)
    with pytest.raises(ValueError, match="not an xraylib PyTorch checkpoint"):
        load_checkpoint(bare)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")


def test_evaluate_split_agrees_with_its_predictions(trained_checkpoint, tiny_manifest):
    report, predictions = evaluate_split(trained_checkpoint, tiny_manifest, "test", n_resamples=20)
    assert len(predictions) == report["n"] == 6
    names = report["class_names"]
    expected = confusion_matrix(predictions["actual"], predictions["predicted"], labels=names)
    assert report["confusion_matrix"] == expected.tolist()
    probs = predictions[[f"prob_{n}" for n in names]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)


def test_evaluate_folder_quarantines_bad_files(trained_checkpoint, external, tmp_path):
    out = tmp_path / "report"
    result = evaluate_folder(trained_checkpoint, external, out)
    summary = result["summary"]
    assert summary["images"] == 6 and summary["quarantined"] == 1
    assert result["quarantine"][0]["path"].endswith("broken.png")
    assert set(summary["per_class"]) == {"BACTERIA", "NORMAL", "VIRUS"}
    assert set(summary["per_class"]["NORMAL"]) == {"precision", "recall", "f1", "specificity", "support"}
    assert np.sum(summary["confusion_matrix"]) == 6
    for name in ("metrics.json", "predictions.csv", "confusion_matrix.png", "quarantine.csv"):
        assert (out / name).is_file(), name
    assert json.loads((out / "metrics.json").read_text())["summary"]["quarantined"] == 1


def test_evaluate_folder_rejects_foreign_classes(trained_checkpoint, external, tmp_path):
    (external / "COVID").mkdir()
    shutil.copy(next((external / "NORMAL").glob("*_0*.png")), external / "COVID" / "x.png")
    with pytest.raises(ValueError, match=r"class folders \['COVID'\].*not classes of the model"):
        evaluate_folder(trained_checkpoint, external, tmp_path / "r")


def test_predict_files_reports_and_skips_bad_inputs(trained_checkpoint, external, tmp_path):
    (external / "notes.txt").write_text("not an image")
    single = next((external / "VIRUS").glob("*.png"))
    output = tmp_path / "pred.csv"
    result = predict_files(trained_checkpoint, [external / "NORMAL", single, tmp_path / "missing.png",
                                                external / "notes.txt"], output)
    assert result["predicted"] == 3  # two NORMAL images and one VIRUS image
    reasons = dict(result["skipped"])
    assert "unreadable image" in reasons[str(external / "NORMAL" / "broken.png")]
    assert reasons[str(tmp_path / "missing.png")] == "no such file or folder"
    assert "unreadable image" in reasons[str(external / "notes.txt")]
    frame = pd.read_csv(output)
    assert list(frame.columns) == ["path", "predicted", "probability", "prob_BACTERIA", "prob_NORMAL", "prob_VIRUS"]
    np.testing.assert_allclose(frame.filter(like="prob_").sum(axis=1), 1.0, atol=1e-5)
    assert set(frame["predicted"]) <= {"BACTERIA", "NORMAL", "VIRUS"}


def test_predict_files_hands_items_to_gradcam(trained_checkpoint, external, tmp_path, monkeypatch):
    calls = []
    fake = types.ModuleType("xraylib.torch_gradcam")
    fake.save_overlays = lambda model, arch, items, cam_dir: calls.append((model, arch, items, cam_dir))
    monkeypatch.setitem(sys.modules, "xraylib.torch_gradcam", fake)
    monkeypatch.setattr(xraylib, "torch_gradcam", fake, raising=False)  # if the real module was imported before
    predict_files(trained_checkpoint, [external / "VIRUS"], tmp_path / "p.csv", cam_dir=tmp_path / "cams")
    (model, arch, items, cam_dir), = calls
    assert arch == "squeezenet" and cam_dir == tmp_path / "cams" and len(items) == 2
    item = items[0]
    assert item["image"].shape == (32, 32) and item["image"].dtype == np.uint8
    assert item["tensor"].shape == (3, 32, 32) and item["label"] in item["class_names"]
    assert item["class_names"][item["predicted"]] == item["label"]


def test_cli_evaluate_and_predict_dispatch_to_torch(trained_checkpoint, external, tmp_path, capsys):
    assert cli.main(["evaluate", str(trained_checkpoint), str(external), "--out", str(tmp_path / "ev")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["images"] == 6 and printed["quarantined"] == 1
    assert cli.main(["predict", str(trained_checkpoint), str(external / "BACTERIA"),
                     "--output", str(tmp_path / "p.csv")]) == 0
    assert "predicted 2 image(s)" in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "p.csv")) == 2
