"""Evaluation of saved checkpoints: test split, external folders, predictions and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score

from xraylib import cli, inference, torch_backend
from xraylib.torch_evaluate import evaluate_split
from xraylib.torch_model import load_checkpoint


def evaluate_folder(path, folder, out) -> dict:
    return inference.evaluate_folder(inference.load_classifier(path), folder, out)


def predict_files(path, inputs, out_csv, **kwargs) -> dict:
    return inference.predict_files(inference.load_classifier(path), inputs, out_csv, **kwargs)


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


CLASSES = ["BACTERIA", "NORMAL", "VIRUS"]


def _assert_report_matches_sklearn(report: dict, labels, predicted) -> None:
    """Accuracy, macro F1, confusion matrix and per-class recall against scikit-learn on the true labels."""
    assert report["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    assert report["macro_f1"] == pytest.approx(f1_score(labels, predicted, labels=CLASSES, average="macro",
                                                        zero_division=0))
    assert np.asarray(report["confusion_matrix"]).tolist() == confusion_matrix(labels, predicted,
                                                                              labels=CLASSES).tolist()
    recall = recall_score(labels, predicted, labels=CLASSES, average=None, zero_division=0)
    for name, value in zip(CLASSES, recall):
        assert report["per_class"][name]["recall"] == pytest.approx(value)


def test_evaluate_split_agrees_with_its_predictions(trained_checkpoint, tiny_manifest, reference_probs):
    report, predictions = evaluate_split(trained_checkpoint, tiny_manifest, "test", n_resamples=20)
    assert len(predictions) == report["n"] == 6
    test = tiny_manifest[tiny_manifest["split"] == "test"].set_index("path")["label"]
    assert list(predictions["label"]) == list(test.loc[predictions["path"]])  # the manifest's labels
    expected = reference_probs(trained_checkpoint, predictions["path"])
    np.testing.assert_allclose(predictions[[f"prob_{n}" for n in CLASSES]], expected, atol=1e-5)
    predicted = [CLASSES[k] for k in expected.argmax(axis=1)]
    assert list(predictions["predicted"]) == predicted
    _assert_report_matches_sklearn(report, list(predictions["label"]), predicted)


def test_evaluate_folder_quarantines_bad_files(trained_checkpoint, external, tmp_path, reference_probs):
    out = tmp_path / "report"
    result = evaluate_folder(trained_checkpoint, external, out)
    summary = result["summary"]
    assert summary["images"] == 6 and summary["quarantined"] == 1
    assert result["quarantine"][0]["path"].endswith("broken.png")
    assert set(summary["per_class"]) == {"BACTERIA", "NORMAL", "VIRUS"}
    assert set(summary["per_class"]["NORMAL"]) == {"precision", "recall", "f1", "specificity", "support"}
    # Every number against scikit-learn: true labels from the folder names, classes from an independent softmax.
    images = sorted(p for p in external.glob("*/*.png") if p.name != "broken.png")
    labels = [p.parent.name for p in images]
    predicted = [CLASSES[k] for k in reference_probs(trained_checkpoint, images).argmax(axis=1)]
    _assert_report_matches_sklearn(summary, labels, predicted)
    assert [summary["per_class"][c]["support"] for c in CLASSES] == [labels.count(c) for c in CLASSES]
    written = pd.read_csv(out / "predictions.csv").sort_values("path")
    assert list(written["label"]) == labels and list(written["predicted"]) == predicted
    for name in ("metrics.json", "predictions.csv", "confusion_argmax.png", "roc.png", "pr.png", "reliability.png",
                 "quarantine.csv"):
        assert (out / name).is_file(), name
    assert json.loads((out / "metrics.json").read_text())["summary"]["quarantined"] == 1


def test_evaluate_folder_rejects_foreign_classes(trained_checkpoint, external, tmp_path):
    (external / "COVID").mkdir()
    shutil.copy(next((external / "NORMAL").glob("*_0*.png")), external / "COVID" / "x.png")
    with pytest.raises(ValueError, match=r"class folders \['COVID'\].*not classes of the model"):
        evaluate_folder(trained_checkpoint, external, tmp_path / "r")


def test_predict_files_reports_and_skips_bad_inputs(trained_checkpoint, external, tmp_path, reference_probs):
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
    assert list(frame.columns) == ["path", "predicted", "threshold", "prob_BACTERIA", "prob_NORMAL", "prob_VIRUS",
                                   "model", "data_source"]
    assert frame["threshold"].isna().all()  # multi-class models decide by the most probable class
    expected = reference_probs(trained_checkpoint, frame["path"])
    np.testing.assert_allclose(frame[[f"prob_{c}" for c in CLASSES]], expected, atol=1e-5)
    assert list(frame["predicted"]) == [CLASSES[k] for k in expected.argmax(axis=1)]


def test_predict_files_explains_the_predicted_classes(trained_checkpoint, external, tmp_path, monkeypatch,
                                                     reference_probs):
    calls, compute_cams = [], torch_backend.torch_gradcam.compute_cams

    def recording(model, arch, batch, classes, *args, **kwargs):
        calls.append((arch, tuple(batch.shape), list(classes)))
        return compute_cams(model, arch, batch, classes, *args, **kwargs)

    monkeypatch.setattr(torch_backend.torch_gradcam, "compute_cams", recording)
    predict_files(trained_checkpoint, [external / "VIRUS"], tmp_path / "p.csv", cam_dir=tmp_path / "cams")
    index = pd.read_csv(tmp_path / "cams" / "cam_index.csv")
    expected = reference_probs(trained_checkpoint, index["path"])
    assert calls == [("squeezenet", (2, 3, 32, 32), list(expected.argmax(axis=1)))]  # one batch, decided classes
    assert list(index["predicted"]) == [CLASSES[k] for k in expected.argmax(axis=1)]
    np.testing.assert_allclose(index["probability"], expected.max(axis=1), atol=1e-5)
    for name in index["overlay"]:
        with Image.open(tmp_path / "cams" / name) as overlay:
            assert overlay.size == (40, 40)  # the image's own size, not the 32 px the model saw


def test_cli_evaluate_and_predict_dispatch_to_torch(trained_checkpoint, external, tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert cli.main(["evaluate", str(trained_checkpoint), str(external)]) == 0  # --out: ./external_evaluation
    printed = json.loads(capsys.readouterr().out)
    assert printed["images"] == 6 and printed["quarantined"] == 1
    written = pd.read_csv(work / "external_evaluation" / "predictions.csv")
    labels = [Path(p).parent.name for p in written["path"]]  # the true labels: the folder names
    _assert_report_matches_sklearn(printed, labels, list(written["predicted"]))
    assert cli.main(["predict", str(trained_checkpoint), str(external / "BACTERIA"),
                     "--output", str(tmp_path / "p.csv")]) == 0
    assert "predicted 2 image(s)" in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "p.csv")) == 2
