"""Bad images at `xraylib predict` and `xraylib evaluate` with the Keras model: quarantined, the run goes on."""

from __future__ import annotations

import json
import shutil

import keras
import pandas as pd
import pytest

from tests import bad_inputs as bad
from tests.tf.helpers import build_model, train_config
from xraylib import cli, tf_model, tf_train


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, tiny_class_names):
    keras.utils.set_random_seed(0)
    cfg = train_config(image_size=32, seed=0)
    meta = tf_train.model_metadata(cfg, tiny_class_names, 0.5, resize_mode="stretch", equalize_method="none")
    return tf_model.save_model(build_model("small_cnn", 32), tmp_path_factory.mktemp("m") / "model.keras", meta)


def test_predict_and_evaluate_quarantine_bad_images(saved_model, tiny_manifest, tiny_class_names, tmp_path, capsys,
                                                    monkeypatch):
    folder = tmp_path / "external"
    for label in tiny_class_names:
        (folder / label / "nested").mkdir(parents=True)
        for src in tiny_manifest.loc[tiny_manifest["label"] == label, "path"].head(3):
            shutil.copy(src, folder / label / "nested" / src.split("/")[-1])
    bad.huge_png(folder / tiny_class_names[0] / "huge.png")
    bad.zero_bytes(folder / tiny_class_names[1] / "empty.png")
    bad.xray(folder / tiny_class_names[1] / "locked.png", 9)
    before = bad.tree_state(folder)
    with bad.unreadable(monkeypatch, folder / tiny_class_names[1] / "locked.png"):
        code = cli.main(["predict", str(saved_model), str(folder), "--output", str(tmp_path / "p.csv")])
        predicted = capsys.readouterr()
        assert cli.main(["evaluate", str(saved_model), str(folder), "--out", str(tmp_path / "eval")]) == 0
    assert code == 0 and "Traceback" not in predicted.err
    assert len(pd.read_csv(tmp_path / "p.csv")) == 6 and "skipped 3" in predicted.out
    assert "oversized image (20000x20000 pixels)" in predicted.err and "permission denied" in predicted.err
    reasons = pd.read_csv(tmp_path / "eval" / "quarantine.csv").set_index("path")["reason"]
    reasons.index = reasons.index.map(lambda p: p.split("/")[-1])
    assert "oversized" in reasons["huge.png"] and "not an image" in reasons["empty.png"]
    assert "permission denied" in reasons["locked.png"]
    result = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert result["summary"]["images"] == 6 and result["summary"]["quarantined"] == 3
    assert bad.tree_state(folder) == before
