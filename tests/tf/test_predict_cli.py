"""`xraylib predict` with the Keras binary model: happy path with Grad-CAM overlays and every reachable error path."""

from __future__ import annotations

import json
import math
import shutil

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.conftest import write_odd_images
from tests.tf.helpers import build_model, train_config
from xraylib import cli, config, images, tf_model, tf_train


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, tiny_class_names):
    """A small CNN (32 px) saved as train_binary saves it: model.keras + model.json (threshold 0.5)."""
    keras.utils.set_random_seed(0)
    cfg = train_config(image_size=32, seed=0)
    meta = tf_train.model_metadata(cfg, tiny_class_names, 0.5, resize_mode="stretch", equalize_method="none")
    model = build_model("small_cnn", 32)
    return tf_model.save_model(model, tmp_path_factory.mktemp("cli_model") / "model.keras", meta)


def test_help_lists_the_cam_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["predict", "--help"])
    assert exit_info.value.code == 0
    assert "--cam DIR" in capsys.readouterr().out


def test_predict_folder_with_odd_modes_bad_files_and_overlays(saved_model, tmp_path, capsys):
    folder = write_odd_images(tmp_path / "in")
    missing = tmp_path / "missing.png"
    csv, cams = tmp_path / "out" / "pred.csv", tmp_path / "cams"
    code = cli.main(["predict", str(saved_model), str(folder), str(missing), "--output", str(csv), "--cam", str(cams)])
    captured = capsys.readouterr()
    assert code == 0
    predicted = {"sixteen_bit.png", "rgba.png", "cmyk.jpg", "palette.gif", "whole.jpg"}
    assert f"predicted {len(predicted)} image(s)" in captured.out and "skipped 4" in captured.out
    for bad in ("broken.png", "truncated.jpg", "notes.txt", "missing.png"):
        assert bad in captured.err
    table = pd.read_csv(csv)
    assert {p.split("/")[-1] for p in table["path"]} == predicted
    # Probabilities as Keras gives them for the same pixels, outside the predictor (stored threshold 0.5).
    model = keras.saving.load_model(saved_model)
    pixels = np.stack([images.prepare(p, 32, "stretch", "none") for p in table["path"]])
    expected = model.predict(pixels[..., None].astype("float32"), verbose=0)[:, 0]
    np.testing.assert_allclose(table["prob_PNEUMONIA"], expected, atol=2e-6)
    np.testing.assert_allclose(table["prob_NORMAL"], 1.0 - expected, atol=2e-6)
    assert list(table["predicted"]) == ["PNEUMONIA" if p >= 0.5 else "NORMAL" for p in expected]
    index = pd.read_csv(cams / "cam_index.csv")
    assert sorted(index["path"]) == sorted(table["path"])
    assert list(index["predicted"]) == list(table.set_index("path").loc[index["path"], "predicted"])
    for row in index.itertuples():
        with Image.open(cams / row.overlay) as overlay, Image.open(config.resolve(row.path)) as original:
            assert overlay.mode == "RGB" and overlay.size == original.size  # the image's own size, not 32 px
        assert (cams / row.figure).is_file()


def _constant_model(folder, probability: float, threshold: float):
    """A small CNN whose output unit ignores the image: p = sigmoid(bias) = ``probability`` for every input.

    Saved like train_binary saves it, then the threshold in ``model.json`` is edited by hand.
    """
    keras.utils.set_random_seed(0)
    model = build_model("small_cnn", 32)
    head = model.get_layer("prediction")
    kernel, bias = head.get_weights()
    head.set_weights([np.zeros_like(kernel), np.full_like(bias, math.log(probability / (1.0 - probability)))])
    cfg = train_config(image_size=32, seed=0)
    meta = tf_train.model_metadata(cfg, ["NORMAL", "PNEUMONIA"], 0.5, resize_mode="stretch", equalize_method="none")
    path = tf_model.save_model(model, folder / "model.keras", meta)
    sidecar = json.loads(tf_model.sidecar_path(path).read_text())
    sidecar["threshold"] = threshold
    tf_model.sidecar_path(path).write_text(json.dumps(sidecar))
    return path


@pytest.mark.parametrize("probability, threshold, expected", [
    (0.7, 0.9, "NORMAL"),  # above 0.5 but below the stored threshold
    (0.7, 0.5, "PNEUMONIA"),  # the same model with 0.5 stored: the threshold made the difference
    (0.3, 0.1, "PNEUMONIA"),  # below 0.5 but above the stored threshold
    (0.3, 0.5, "NORMAL"),
])
def test_predict_uses_the_stored_threshold(tmp_path, capsys, probability, threshold, expected):
    model = _constant_model(tmp_path / "model", probability, threshold)
    folder = write_odd_images(tmp_path / "in")
    csv = tmp_path / "pred.csv"
    assert cli.main(["predict", str(model), str(folder), "--output", str(csv)]) == 0
    assert "predicted 5 image(s)" in capsys.readouterr().out
    table = pd.read_csv(csv)
    assert set(table["predicted"]) == {expected}
    np.testing.assert_allclose(table["prob_PNEUMONIA"], probability, atol=2e-6)  # sigmoid of the bias
    np.testing.assert_allclose(table["prob_NORMAL"], 1.0 - probability, atol=2e-6)


def test_only_bad_inputs_exit_1(saved_model, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"garbage")
    assert cli.main(["predict", str(saved_model), str(bad), "--output", str(tmp_path / "p.csv"),
                     "--cam", str(tmp_path / "cams")]) == 1
    captured = capsys.readouterr()
    assert "predicted 0 image(s)" in captured.out and "broken.png" in captured.err
    assert not list(tmp_path.glob("cams/*.png"))


def test_missing_model_or_settings_exit_2(saved_model, tmp_path, capsys):
    image = tmp_path / "x.png"
    Image.fromarray(np.full((20, 20), 90, np.uint8)).save(image)
    assert cli.main(["predict", str(tmp_path / "nope.keras"), str(image)]) == 2
    assert "not found" in capsys.readouterr().err
    lonely = tmp_path / "lonely.keras"
    shutil.copy(saved_model, lonely)
    assert cli.main(["predict", str(lonely), str(image), "--output", str(tmp_path / "p.csv")]) == 2
    assert "model settings" in capsys.readouterr().err


@pytest.mark.real_data
def test_original_resolution_kermany_images(saved_model, tmp_path, capsys):
    source = config.shared_path("data", "kermany_val_original")
    if source is None:
        pytest.skip(f"real data not available: {config.SHARED_DIR / 'data' / 'kermany_val_original'} is absent")
    folder = tmp_path / "val"
    shutil.copytree(source, folder)
    (folder / "NORMAL" / "corrupt.jpeg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    code = cli.main(["predict", str(saved_model), str(folder), "--output", str(tmp_path / "p.csv"),
                     "--cam", str(tmp_path / "cams")])
    captured = capsys.readouterr()
    assert code == 0 and "predicted 16 image(s)" in captured.out and "skipped 1" in captured.out
    assert "corrupt.jpeg" in captured.err
    assert len(list((tmp_path / "cams").glob("*_cam.png"))) == 16
