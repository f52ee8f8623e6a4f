"""The contract every back end of xraylib.inference keeps, run by tests/tf and tests/torch on their own models.

Framework-free: each case takes a loaded :class:`xraylib.inference.Classifier` and a
class-per-folder image set, and checks what a user sees (the CSV schema, the decision,
the evaluation's files and numbers, the Grad-CAM maps and overlays) the same way for both frameworks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from xraylib import config, images, inference

EVALUATE_FILES = {"predictions.csv", "quarantine.csv", "label_conflicts.csv", "metrics.json", "roc.png", "pr.png",
                  "reliability.png"}


def expected_columns(model, *, with_label: bool) -> list[str]:
    probs = [f"prob_{inference.safe_column(c)}" for c in model.settings.class_names]
    return ["path", *(["label"] if with_label else []), "predicted", "threshold", *probs, "model", "data_source"]


def check_predict(model, folder: Path, tmp_path: Path) -> pd.DataFrame:
    """Predict a folder with one unreadable file: the schema, probabilities, the decision, the skip."""
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    result = inference.predict_files(model, [folder], tmp_path / "predict.csv")
    (folder / "broken.png").unlink()
    table = pd.read_csv(tmp_path / "predict.csv", keep_default_na=False, na_values=[""])
    assert list(table.columns) == expected_columns(model, with_label=False)
    assert result["predicted"] == len(table) > 0
    assert [Path(p).name for p, _ in result["skipped"]] == ["broken.png"]
    probs = table[[c for c in table.columns if c.startswith("prob_")]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    names = model.settings.class_names
    if model.settings.threshold is None:  # multi-class: the most probable class, no threshold
        assert table["threshold"].isna().all()
        assert list(table["predicted"]) == [names[k] for k in probs.argmax(axis=1)]
    else:  # binary: the positive class from the stored threshold on, whatever 0.5 would say
        assert (table["threshold"] == model.settings.threshold).all()
        assert list(table["predicted"]) == [names[int(p >= model.settings.threshold)] for p in probs[:, 1]]
    assert (table["model"] == config.relative_to_project(model.path)).all()
    assert (table["data_source"].fillna("") == model.settings.data_source).all()
    return table


def check_evaluate(model, folder: Path, tmp_path: Path, predicted: pd.DataFrame) -> dict:
    """Evaluate the same folder: the same files for both frameworks, numbers that agree with predict."""
    out = tmp_path / "evaluate"
    result = inference.evaluate_folder(model, folder, out)
    written = {p.name for p in out.iterdir()}
    assert EVALUATE_FILES <= written, EVALUATE_FILES - written
    assert any(name.startswith("confusion_") and name.endswith(".png") for name in written)
    table = pd.read_csv(out / "predictions.csv", keep_default_na=False, na_values=[""])
    assert list(table.columns) == expected_columns(model, with_label=True)
    assert list(table["label"]) == [Path(p).parent.name for p in table["path"]]
    same = predicted.set_index("path").loc[table["path"]]
    assert list(same["predicted"]) == list(table["predicted"]), "predict and evaluate decide alike"
    prob_columns = [c for c in table.columns if c.startswith("prob_")]
    np.testing.assert_allclose(same[prob_columns].to_numpy(), table[prob_columns].to_numpy(), atol=1e-5)
    summary = json.loads((out / "metrics.json").read_text())["summary"]
    assert summary["images"] == len(table) and summary["framework"] == model.settings.framework
    accuracy = float((table["label"] == table["predicted"]).mean())
    stored = summary.get("stored_threshold", summary)  # binary: per threshold; multi-class: top level
    assert abs(stored["accuracy"] - accuracy) <= 1e-6  # metrics.json keeps 6 digits
    low, high = stored["accuracy_ci"]  # every figure carries its interval, and says how it was made
    assert low - 1e-6 <= stored["accuracy"] <= high + 1e-6
    assert summary["bootstrap"]["n_resamples"] == 1000 and summary["bootstrap"]["images"] == len(table)
    return summary


def check_recalibration(model, folder: Path, tmp_path: Path) -> dict:
    """A model carrying a recalibration map: evaluate reports calibration before and after it, with intervals,
    and the decisions (predictions.csv) stay those of the raw probabilities."""
    import dataclasses

    plain = inference.evaluate_folder(model, folder, tmp_path / "plain")
    model.settings = dataclasses.replace(model.settings, recalibration={"method": "temperature", "temperature": 3.0})
    result = inference.evaluate_folder(model, folder, tmp_path / "recalibrated")
    block = result["report"]["calibration"]
    assert block["method"]["temperature"] == 3.0
    for when in ("before", "after"):
        assert block[when]["ece"] is not None and len(block[when]["ece_ci"]) == 2
    assert block["before"]["ece"] == plain["report"]["ece"]  # "before" is the model as trained
    assert block["after"]["brier"] != block["before"]["brier"]
    same = pd.read_csv(tmp_path / "plain" / "predictions.csv")["predicted"]
    assert list(pd.read_csv(tmp_path / "recalibrated" / "predictions.csv")["predicted"]) == list(same)
    return block


def check_cams(model, folder: Path, tmp_path: Path) -> np.ndarray:
    """``model.cams``: maps of the asked classes in [0, 1], the same alone as in a batch; ``predict --cam``
    writes them at each image's own size (a copy of one image made twice as wide)."""
    s = model.settings
    paths = sorted(folder.rglob("*.png"))[:4]
    batch = np.stack([images.prepare(p, s.image_size, s.resize, s.equalize) for p in paths])
    decided = s.decide(model.predict_proba(batch))
    maps = model.cams(batch, decided)
    assert maps.ndim == 3 and len(maps) == len(batch) and maps.dtype == np.float32
    assert maps.shape[1] <= s.image_size and maps.shape[2] <= s.image_size  # feature-map or image size
    assert np.isfinite(maps).all() and maps.min() >= 0.0 and maps.max() <= 1.0
    np.testing.assert_allclose(model.cams(batch[1:2], decided[1:2]), maps[1:2], atol=1e-4)  # batch-independent
    assert model.cams(batch, (decided + 1) % len(s.class_names)).shape == maps.shape  # any class can be explained
    wide = tmp_path / "wide" / "wide.png"
    wide.parent.mkdir()
    with Image.open(paths[0]) as image:
        size = (2 * image.width, image.height)
        image.convert("L").resize(size).save(wide)
    inference.predict_files(model, [wide.parent], tmp_path / "cams.csv", cam_dir=tmp_path / "cams")
    index = pd.read_csv(tmp_path / "cams" / "cam_index.csv")
    assert list(index["predicted"]) == list(pd.read_csv(tmp_path / "cams.csv")["predicted"])
    with Image.open(tmp_path / "cams" / index.loc[0, "overlay"]) as overlay:
        assert overlay.size == size and overlay.mode == "RGB"
    assert (tmp_path / "cams" / index.loc[0, "figure"]).is_file()
    assert 0 <= index.loc[0, "peak_row"] < size[1] and 0 <= index.loc[0, "peak_col"] < size[0]
    return maps
