"""The framework-free part of xraylib.inference: settings, the decision, column names, file checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from xraylib import gradcam_maps, inference
from xraylib.model_files import ModelFileError

KERAS_META = {"class_names": ["NORMAL", "PNEUMONIA"], "image_size": 64, "resize": "stretch", "equalize": "none",
              "threshold": 0.8, "original_threshold": 0.75, "tta": "flip", "backbone": "small_cnn",
              "data_source": "synthetic"}
TORCH_META = {"class_names": ["COVID", "Normal", "Viral Pneumonia"], "image_size": 40, "resize": "stretch",
              "equalize": "none", "arch": "resnet18"}


def test_safe_column_names():
    assert [inference.safe_column(n) for n in ("Viral Pneumonia", "Lung_Opacity", "a/b c", "ü")] == \
        ["Viral_Pneumonia", "Lung_Opacity", "a_b_c", "class"]


def test_settings_from_both_kinds_of_metadata():
    keras = inference.ModelSettings.from_metadata(KERAS_META, framework="keras", path="m.keras")
    assert (keras.arch, keras.threshold, keras.tta, keras.data_source) == ("small_cnn", 0.8, "flip", "synthetic")
    assert keras.thresholds() == {"stored_threshold": 0.8, "original_0.75": 0.75}
    torch = inference.ModelSettings.from_metadata(TORCH_META, framework="torch", path="best.pt")
    assert (torch.arch, torch.threshold, torch.tta, torch.data_source, torch.thresholds()) == \
        ("resnet18", None, "none", "", {})


@pytest.mark.parametrize("missing", ["class_names", "threshold", "image_size"])
def test_missing_settings_are_one_line(missing):
    meta = {k: v for k, v in KERAS_META.items() if k != missing}
    with pytest.raises(ModelFileError, match=rf"^'m.keras' lacks the settings \['{missing}'\]"):
        inference.ModelSettings.from_metadata(meta, framework="keras", path="m.keras")


def test_binary_decision_follows_the_stored_threshold_and_multiclass_the_argmax():
    keras = inference.ModelSettings.from_metadata(KERAS_META, framework="keras", path="m.keras")
    probs = np.array([[0.3, 0.7], [0.15, 0.85], [0.6, 0.4]])
    assert keras.decide(probs).tolist() == [0, 1, 0]  # 0.7 >= 0.5 but < the stored 0.8
    assert keras.decide(probs, threshold=0.5).tolist() == [1, 1, 0]
    torch = inference.ModelSettings.from_metadata(TORCH_META, framework="torch", path="best.pt")
    assert torch.decide(np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])).tolist() == [1, 0]


def test_a_wrong_model_file_is_refused_before_any_framework_is_imported(tmp_path):
    for name, content in (("model.keras", b"just text\n"), ("best.pt", b"just text\n"), ("x.onnx", b"\x08")):
        (tmp_path / name).write_bytes(content)
    code = ("import sys\nfrom xraylib import inference\nfor name in ('model.keras', 'best.pt', 'x.onnx'):\n"
            f"    try:\n        inference.load_classifier(r'{tmp_path}/' + name)\n"
            "    except (ValueError, FileNotFoundError) as err:\n        print(err)\n"
            "print([m for m in ('tensorflow', 'torch') if m in sys.modules])")
    lines = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           cwd=tmp_path.parent).stdout.splitlines()
    assert lines[0].endswith("model.keras' is a text file, not a Keras model archive (.keras, a ZIP written by xraylib)")
    assert lines[1].endswith("best.pt' is a text file, not an xraylib PyTorch checkpoint (best.pt from "
                             "train_multiclass)")
    assert lines[2] == "unknown model type 'x.onnx'; expected a .keras (binary Keras) or .pt (PyTorch) file"
    assert lines[3] == "[]"


class _SpotModel:
    """A framework-free Classifier: fixed probabilities, and a map that is the prepared image itself."""

    def __init__(self, path, resize: str, probabilities):
        meta = {**KERAS_META, "image_size": 32, "resize": resize, "data_source": ""}
        self.path, self.settings = path, inference.ModelSettings.from_metadata(meta, framework="keras", path=path)
        self.probabilities, self.explained = list(probabilities), []

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        p = np.array([self.probabilities.pop(0) for _ in images])
        return np.stack([1.0 - p, p], axis=1)

    def cams(self, images: np.ndarray, classes) -> np.ndarray:
        self.explained += [int(k) for k in classes]
        return np.stack([gradcam_maps.normalize_cam(image.astype(np.float32) - image.min()) for image in images])


@pytest.mark.parametrize("resize", ["stretch", "pad"])
def test_predict_writes_overlays_at_each_images_own_size(resize, tmp_path):
    """Two non-square images with a bright spot: overlays keep their size, the peak is the spot, in their pixels."""
    spots = {"tall.png": ((120, 70), (30, 50)), "wide.png": ((60, 160), (40, 20))}  # (height, width), (row, col)
    for name, ((height, width), (row, col)) in spots.items():
        rows, cols = np.mgrid[:height, :width]
        blob = np.exp(-((rows - row) ** 2 + (cols - col) ** 2) / 50.0)
        Image.fromarray(np.uint8(np.round(30 + 200 * blob))).save(tmp_path / name)
    model = _SpotModel(tmp_path / "m.keras", resize, [0.9, 0.7])  # stored threshold 0.8: PNEUMONIA, NORMAL
    result = inference.predict_files(model, [tmp_path], tmp_path / "p.csv", cam_dir=tmp_path / "cams")
    assert result["predicted"] == 2 and model.explained == [1, 0]  # the decided classes are explained
    index = pd.read_csv(tmp_path / "cams" / "cam_index.csv")
    assert [Path(p).name for p in index["path"]] == ["tall.png", "wide.png"]
    assert list(index["predicted"]) == ["PNEUMONIA", "NORMAL"] and list(index["probability"]) == [0.9, 0.3]
    for row in index.itertuples():
        (height, width), spot = spots[Path(row.path).name]
        with Image.open(tmp_path / "cams" / row.overlay) as overlay:
            assert overlay.size == (width, height)
        assert (tmp_path / "cams" / row.figure).is_file()
        assert abs(row.peak_row - spot[0]) <= 4 and abs(row.peak_col - spot[1]) <= 4
