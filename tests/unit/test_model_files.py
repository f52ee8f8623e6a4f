"""What a model file is, sniffed from its first bytes, and the one-line errors built from it (no framework)."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xraylib import model_files
from xraylib.model_files import ModelFileError

# torch.save's legacy format starts with a protocol-2 pickle of this number (torch/serialization.py).
TORCH_LEGACY_HEAD = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little") + b".\x80\x02"
# What torch says when weights_only refuses a pickle: it recommends the unsafe option.
TORCH_REFUSAL = ("Weights only load failed. Re-running `torch.load` with `weights_only=False` will likely succeed."
                 "\n\nTrying to load unsupported GLOBAL posix.system whose module posix is blocked.")


def _zip(path: Path, names: list[str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name in names:
            archive.writestr(name, b"x" * 4000)
    return path


def _image(path: Path, fmt: str) -> Path:
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(path, format=fmt)
    return path


def _write(data: bytes):
    """A file maker writing ``data``."""

    def make(path: Path) -> Path:
        path.write_bytes(data)
        return path
    return make


def _truncated(path: Path, names: list[str]) -> Path:
    data = _zip(path, names).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


# file maker -> what describe() says
CASES = {
    "empty": (_write(b""), "an empty file"),
    "text": (_write(b"not a model\n"), "a text file"),
    "utf8_cut": (_write(b"a" + "é".encode() * 1024), "a text file"),  # the 2048-byte head cuts a character
    "html": (_write(b"<!DOCTYPE html><html>404</html>"), "an HTML page"),
    "lfs": (_write(b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n"),
            "a Git LFS pointer"),
    "zip": (lambda p: _zip(p, ["a.txt"]), "a ZIP archive"),
    "torch_zip": (lambda p: _zip(p, ["best/data.pkl", "best/data/0"]), "a PyTorch file"),
    "keras_zip": (lambda p: _zip(p, ["metadata.json", "config.json", "model.weights.h5"]), "a Keras model archive"),
    "torch_cut": (lambda p: _truncated(p, ["best/data.pkl", "best/data/0"]), "a truncated or damaged PyTorch file"),
    "keras_cut": (lambda p: _truncated(p, ["metadata.json", "config.json"]),
                  "a truncated or damaged Keras model archive"),
    "zip_cut": (lambda p: _truncated(p, ["a.txt", "b.txt"]), "a truncated or damaged ZIP archive"),
    "hdf5": (_write(b"\x89HDF\r\n\x1a\n" + bytes(64)), "an HDF5 file"),
    "pickle": (_write(pickle.dumps({"a": 1})), "a Python pickle"),
    "torch_legacy": (_write(TORCH_LEGACY_HEAD + bytes(32)), "a PyTorch file (legacy format)"),
    "png": (lambda p: _image(p, "PNG"), "a PNG image"),
    "jpeg": (lambda p: _image(p, "JPEG"), "a JPEG image"),
    "npy": (_write(b"\x93NUMPY\x01\x00" + bytes(8)), "a NumPy array file"),
    "safetensors": (_write((2).to_bytes(8, "little") + b"{}"), "a safetensors file"),
    "binary": (_write(bytes(range(256))), "binary data"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_describe_says_what_a_file_is_without_changing_it(tmp_path, case):
    make, what = CASES[case]
    path = tmp_path / "model.pt"
    make(path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    assert model_files.describe(path).startswith(what)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_describe_folders_and_missing_paths(tmp_path):
    (tmp_path / "x.pt").mkdir()
    assert model_files.describe(tmp_path / "x.pt") == "a folder"
    assert model_files.describe(tmp_path / "none.pt") == "a path that does not exist"


def test_not_a_model_is_one_line_with_path_what_and_expected(tmp_path):
    path = tmp_path / "best.pt"
    path.write_text("hello\nworld\n")
    err = model_files.not_a_model(path, model_files.TORCH_CHECKPOINT)
    assert isinstance(err, ValueError)
    assert str(err) == (f"'{path}' is a text file, not an xraylib PyTorch checkpoint "
                        "(best.pt from train_multiclass)")


def _check(message: str, path: Path, *parts: str) -> None:
    assert f"'{path}'" in message and "\n" not in message
    assert "weights_only" not in message and "safe_mode" not in message
    for part in parts:
        assert part in message, message


def test_refused_pickle_names_the_class_not_the_unsafe_option(tmp_path):
    path = _zip(tmp_path / "best.pt", ["best/data.pkl"])
    err = model_files.torch_load_error(path, pickle.UnpicklingError(TORCH_REFUSAL), model_files.TORCH_CHECKPOINT)
    _check(str(err), path, "is a PyTorch file holding Python objects other than tensors and plain values "
                           "(posix.system), not an xraylib PyTorch checkpoint", "could run code")


@pytest.mark.parametrize("case,error,what", [
    ("text", KeyError("101"), "a text file, not"),  # what torch raises for a text file
    ("empty", EOFError(), "an empty file, not"),
    ("torch_cut", RuntimeError("PytorchStreamReader failed reading zip archive"), "a truncated or damaged PyTorch"),
    ("torch_legacy", EOFError("Ran out of input"), "a truncated or damaged PyTorch file (legacy format)"),
    ("torch_zip", RuntimeError("PytorchStreamReader failed locating file data/0"), "a truncated or damaged"),
    ("pickle", pickle.UnpicklingError("Weights only load failed. Unsupported operand 149"),
     "a Python pickle, not an xraylib PyTorch checkpoint (best.pt from train_multiclass); xraylib loads only"),
    ("png", pickle.UnpicklingError("Weights only load failed. `weights_only=False`. Unsupported operand 80"),
     "a PNG image, not"),
])
def test_torch_load_errors_say_what_the_file_is(tmp_path, case, error, what):
    path = CASES[case][0](tmp_path / "best.pt")
    _check(str(model_files.torch_load_error(path, error, model_files.TORCH_CHECKPOINT)), path, what)


def test_torch_load_returns_the_result_or_one_line_and_keeps_warnings_of_failures_back(tmp_path):
    path = CASES["pickle"][0](tmp_path / "w.pt")

    def noisy_failure():
        warnings.warn("Detected pickle protocol 4 in the checkpoint")
        raise pickle.UnpicklingError(TORCH_REFUSAL)

    def noisy_success():
        warnings.warn("kept")
        return {"w": 1}

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ModelFileError) as info:
            model_files.torch_load(noisy_failure, path, model_files.TORCH_STATE_DICT)
        assert info.value.__cause__ is None and info.value.__suppress_context__  # torch's text is not chained
        assert not caught
        assert model_files.torch_load(noisy_success, path, model_files.TORCH_STATE_DICT) == {"w": 1}
        assert [str(w.message) for w in caught] == ["kept"]
    _check(str(info.value), path, "posix.system", "not a PyTorch state dict")


@pytest.mark.parametrize("case,what", [
    ("text", "is a text file, not a Keras model archive (.keras, a ZIP written by xraylib)"),
    ("empty", "is an empty file, not a Keras model archive"),
    ("hdf5", "is an HDF5 file, not a Keras model archive"),
    ("zip", "is a ZIP archive without config.json, not a Keras model archive"),
    ("keras_cut", "is a truncated or damaged Keras model archive, not a complete Keras model archive"),
])
def test_check_keras_archive(tmp_path, case, what):
    path = CASES[case][0](tmp_path / "model.keras")
    with pytest.raises(ModelFileError) as info:
        model_files.check_keras_archive(path)
    _check(str(info.value), path, what)
    model_files.check_keras_archive(CASES["keras_zip"][0](tmp_path / "good.keras"))


@pytest.mark.parametrize("error,what", [
    (ValueError("Requested the deserialization of a `Lambda` layer whose `function` is a Python lambda. This carries "
                "a potential risk of arbitrary code execution. ... passing `safe_mode=False` to the loading function"),
     "it holds Python code (a Lambda layer or a pickled function), which xraylib refuses to load"),
    (TypeError("Could not locate class 'MyLayer'. Make sure custom classes are decorated.\nFull object config: {}"),
     "it uses 'MyLayer', which is neither a Keras nor an xraylib layer"),
    (OSError("Unable to synchronously open file (file signature not found)"),
     "Keras could not rebuild the model from it (OSError: Unable to synchronously open file"),
])
def test_keras_load_errors_are_one_line_without_unsafe_advice(tmp_path, error, what):
    path = tmp_path / "model.keras"
    message = str(model_files.keras_load_error(path, error))
    _check(message, path, "is a Keras model archive that xraylib cannot load: " + what)
    assert "unsafe" not in message


@pytest.mark.parametrize("content,what", [
    (b"", "is an empty file, not the model's settings (model.json"),
    (b"{bad json", "is a text file that is not valid JSON (Expecting property name enclosed in double quotes at "
                   "line 1 column 2), not the model's settings"),
    (b"[1, 2]", "is JSON holding an array, not the model's settings"),
    (b"\x89PNG\r\n\x1a\n" + bytes(20), "is a PNG image, not the model's settings"),
    (b'{"threshold": 0.5}', "lacks the settings ['class_names']; expected the model's settings"),
])
def test_read_settings_errors(tmp_path, content, what):
    path = tmp_path / "model.json"
    path.write_bytes(content)
    with pytest.raises(ModelFileError) as info:
        model_files.read_settings(path, ("class_names", "threshold"))
    _check(str(info.value), path, what)
    assert path.read_bytes() == content


def test_read_settings_returns_the_object(tmp_path):
    path = tmp_path / "model.json"
    path.write_text(json.dumps({"class_names": ["A", "B"], "threshold": 0.5}))
    assert model_files.read_settings(path, ("threshold",))["class_names"] == ["A", "B"]


def test_one_line():
    assert model_files.one_line("a\n\tb \x1b[1mc\x1b[0m") == "a b c"
    assert model_files.one_line("x" * 50, limit=10) == "xxxxxxx..."


def test_imports_no_framework():
    code = ("import sys, xraylib.model_files\n"
            "print([f for f in ('tensorflow', 'keras', 'torch', 'torchvision') if f in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_nothing_is_unpickled(tmp_path, monkeypatch):
    """describe() reads bytes only: a pickle whose loading would create a marker file stays inert."""
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    monkeypatch.setattr(pickle, "loads", None)  # any attempt to unpickle would fail loudly
    monkeypatch.setattr(pickle, "load", None)
    assert model_files.describe(path) == "a Python pickle"
    assert not marker.exists()


class _Payload:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")
