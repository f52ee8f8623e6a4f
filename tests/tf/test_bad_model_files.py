"""Wrong, truncated and unsafe Keras files and settings: one clear line, no code run, the files untouched.

Every bad file is made here, in ``tmp_path``, from a tiny model saved by ``tf_model.save_model``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import keras
import pytest

from tests.conftest import write_xray
from tests import bad_inputs as bad
from xraylib import cli, tf_model
from xraylib.model_files import ModelFileError

SETTINGS = {"class_names": ["NORMAL", "PNEUMONIA"], "threshold": 0.5, "image_size": 8, "resize": "stretch",
            "equalize": "none"}
ARCHIVE = "not a Keras model archive (.keras, a ZIP written by xraylib)"
# TensorFlow's own start-up lines on stderr (C++ logging before absl is initialised), not ours.
TF_NOISE = re.compile(r"^(WARNING: All log messages before absl|[IWE]\d{4} |To enable the following instructions)")


def _tiny(folder: Path, layer=None) -> Path:
    """A tiny Keras model (8x8 grey image -> probability) saved with its settings like train_binary saves it."""
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Flatten()(inputs)
    if layer is not None:
        x = layer(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="prediction")(x)
    return tf_model.save_model(keras.Model(inputs, outputs), folder / "model.keras", SETTINGS)


@pytest.fixture(scope="module")
def good_model(tmp_path_factory) -> Path:
    return _tiny(tmp_path_factory.mktemp("good"))


_sha = bad.sha256


def _check_message(message: str, path: Path, what: str) -> None:
    bad.check_model_message(message, path, what, ("safe_mode", "unsafe"))


def _with_settings(path: Path) -> Path:
    tf_model.sidecar_path(path).write_text(json.dumps(SETTINGS))
    return path


def _cut(good: Path, path: Path) -> None:
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _zip_without_config(good: Path, path: Path) -> None:
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(path, "w") as target:
        for name in source.namelist():
            if name != "config.json":
                target.writestr(name, source.read(name))


def _hdf5(good: Path, path: Path) -> None:
    with h5py.File(path, "w") as handle:
        handle["weights"] = [1.0, 2.0]


BAD_ARCHIVES = {
    "text": (lambda good, p: p.write_text("not a model\n"), "is a text file, " + ARCHIVE),
    "empty": (lambda good, p: p.write_bytes(b""), "is an empty file, " + ARCHIVE),
    "truncated": (_cut, "is a truncated or damaged Keras model archive, not a complete Keras model archive "
                        "(.keras, a ZIP written by xraylib); copy or save it again"),
    "zip_without_config": (_zip_without_config, "is a ZIP archive without config.json, " + ARCHIVE),
    "hdf5": (_hdf5, "is an HDF5 file, " + ARCHIVE),
}


@pytest.mark.parametrize("case", list(BAD_ARCHIVES))
def test_a_bad_keras_file_says_what_it_is(good_model, tmp_path, case):
    write, what = BAD_ARCHIVES[case]
    path = tmp_path / "model.keras"
    write(good_model, path)
    _with_settings(path)
    before = _sha(path)
    with pytest.raises(ModelFileError) as info:
        tf_model.load_model(path)
    _check_message(str(info.value), path, what)
    assert _sha(path) == before


def test_a_folder_named_keras(tmp_path):
    folder = tmp_path / "x.keras"
    folder.mkdir()
    with pytest.raises(ModelFileError) as info:
        tf_model.load_model(folder)
    assert str(info.value) == f"'{folder}' is a folder, {ARCHIVE}"


@pytest.mark.parametrize("content,what", [
    (None, None),
    (b"", "is an empty file, not the model's settings (model.json, a JSON object written by "
          "xraylib.tf_model.save_model)"),
    (b'{"class_names": ', "is a text file that is not valid JSON (Expecting value at line 1 column 17)"),
    (b'["NORMAL", "PNEUMONIA"]', "is JSON holding an array, not the model's settings"),
    (b'{"class_names": ["NORMAL", "PNEUMONIA"]}', "lacks the settings ['threshold']"),
])
def test_missing_or_corrupt_settings(good_model, tmp_path, content, what):
    path = tmp_path / "model.keras"
    shutil.copy(good_model, path)
    sidecar = tf_model.sidecar_path(path)
    if content is None:
        with pytest.raises(FileNotFoundError) as missing:
            tf_model.load_model(path)
        assert "\n" not in str(missing.value) and f"model settings {sidecar} not found" in str(missing.value)
        return
    sidecar.write_bytes(content)
    with pytest.raises(ModelFileError) as info:
        tf_model.load_model(path)
    _check_message(str(info.value), sidecar, what)
    assert sidecar.read_bytes() == content


def test_a_good_model_still_loads(good_model):
    model, settings = tf_model.load_model(good_model)
    assert settings == SETTINGS and model.output_shape == (None, 1)


def test_a_lambda_layer_is_refused_and_never_run(tmp_path, monkeypatch):
    """Its code creates a marker file whenever it runs (Keras would run it to rebuild the model unsafely)."""
    marker = tmp_path / "lambda_ran"
    monkeypatch.setenv("XRAYLIB_TEST_MARKER", str(marker))
    layer = keras.layers.Lambda(lambda x: (open(__import__("os").environ["XRAYLIB_TEST_MARKER"], "w").close(), x)[1],
                                name="code")
    path = _tiny(tmp_path, layer)
    assert marker.exists()  # building the model ran it once
    marker.unlink()
    before = _sha(path)
    with pytest.raises(ModelFileError) as info:
        tf_model.load_model(path)
    _check_message(str(info.value), path, "is a Keras model archive that xraylib cannot load: it holds Python code "
                                          "(a Lambda layer or a pickled function), which xraylib refuses to load")
    assert info.value.__cause__ is None and info.value.__suppress_context__  # Keras's advice is not chained
    assert not marker.exists() and _sha(path) == before


def test_an_unknown_layer_is_named(good_model, tmp_path):
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(good_model) as source, zipfile.ZipFile(path, "w") as target:
        for name in source.namelist():
            data = source.read(name)
            target.writestr(name, data.replace(b'"Dense"', b'"FooLayer"') if name == "config.json" else data)
    _with_settings(path)
    with pytest.raises(ModelFileError) as info:
        tf_model.load_model(path)
    _check_message(str(info.value), path, "FooLayer', which is neither a Keras nor an xraylib layer")


def test_backbone_weights_that_are_no_hdf5(tmp_path):
    weights = tmp_path / "xception_notop.weights.h5"
    weights.write_text("<!DOCTYPE html><html>Sign in to download</html>")
    with pytest.raises(ModelFileError) as info:
        tf_model.resolve_weights(weights)
    assert str(info.value) == (f"'{weights}' is an HTML page, not a Keras weights file (HDF5, e.g. "
                               "xception_notop.weights.h5); set train_binary.weights to such a file, 'imagenet' or "
                               "'none'")


def test_cli_predict_in_process(tmp_path, capsys):
    path = tmp_path / "model.keras"
    path.write_text("not a model\n")
    code = cli.main(["predict", str(path), str(write_xray(tmp_path / "img.png")), "--output", str(tmp_path / "p.csv")])
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [f"xraylib predict: error: '{path}' is a text file, {ARCHIVE}"]


def test_cli_evaluate_prints_one_line(good_model, tmp_path):
    path = tmp_path / "bad.keras"
    _cut(good_model, path)
    _with_settings(path)
    write_xray(tmp_path / "folder" / "NORMAL" / "a.png")
    done = subprocess.run([sys.executable, "-m", "xraylib", "evaluate", str(path), str(tmp_path / "folder"),
                           "--out", str(tmp_path / "out")], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    ours = [line for line in done.stderr.splitlines() if not TF_NOISE.match(line)]
    assert ours == [f"xraylib evaluate: error: '{path}' is a truncated or damaged Keras model archive, not a complete "
                    "Keras model archive (.keras, a ZIP written by xraylib); copy or save it again"]
    assert not (tmp_path / "out").exists()
