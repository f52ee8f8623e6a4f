"""Wrong, truncated and unsafe PyTorch files: one clear line, no payload run, the file untouched.

Every bad file is made here, in ``tmp_path``. A pickle payload would create a marker file
when unpickled; each test checks that the marker never appears.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import write_xray
from tests import bad_inputs as bad
from xraylib import model_files
from xraylib.model_files import ModelFileError
from xraylib.torch_evaluate import load_checkpoint
from xraylib.torch_model import build_model

CHECKPOINT = "not an xraylib PyTorch checkpoint (best.pt from train_multiclass)"


class OpenPayload:
    """Unpickling this calls ``open(marker, "w")``: the marker file appears."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


class SystemPayload(OpenPayload):
    """Unpickling this runs a shell command that creates the marker file."""

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class Opaque:
    """A plain class: not a tensor nor a plain value."""


def _cut(source: Path, target: Path) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


def _png(path: Path) -> Path:
    write_xray(path.with_suffix(".png"))
    path.with_suffix(".png").rename(path)
    return path


# name -> (write the bad file at path, given the marker and a real checkpoint; what the message says it is)
BAD_FILES = {
    "text": (lambda p, m, c: p.write_text("this is not a model\n"), "is a text file, " + CHECKPOINT),
    "empty": (lambda p, m, c: p.write_bytes(b""), "is an empty file, " + CHECKPOINT),
    "truncated": (lambda p, m, c: _cut(c, p), "is a truncated or damaged PyTorch file, " + CHECKPOINT),
    "png": (lambda p, m, c: _png(p), "is a PNG image, " + CHECKPOINT),
    "object_zip": (lambda p, m, c: torch.save({"x": Opaque()}, p),
                   "is a PyTorch file holding Python objects other than tensors and plain values "
                   f"({__name__}.Opaque), {CHECKPOINT}; xraylib refuses to load it because unpickling them "
                   "could run code"),
    "payload_zip": (lambda p, m, c: torch.save({"model_state": OpenPayload(m)}, p),
                    "is a PyTorch file holding Python objects other than tensors and plain values (io.open)"),
    "payload_legacy": (lambda p, m, c: torch.save({"x": SystemPayload(m)}, p, _use_new_zipfile_serialization=False),
                       "is a PyTorch file (legacy format) holding Python objects other than tensors and plain "
                       "values (posix.system)"),
    "payload_pickle": (lambda p, m, c: p.write_bytes(pickle.dumps(SystemPayload(m))),
                       "is a Python pickle, " + CHECKPOINT + "; xraylib loads only files written by torch.save"),
}


_sha = bad.sha256


def _check_message(message: str, path: Path, what: str) -> None:
    bad.check_model_message(message, path, what, ("weights_only", "Weights only"))


@pytest.fixture
def bad_file(request, tmp_path, trained_checkpoint):
    """``(path, marker, what)`` for the case ``request.param`` of :data:`BAD_FILES`."""
    write, what = BAD_FILES[request.param]
    path, marker = tmp_path / "best.pt", tmp_path / "payload_ran"
    write(path, marker, trained_checkpoint)
    return path, marker, what


@pytest.mark.parametrize("bad_file", list(BAD_FILES), indirect=True)
def test_load_checkpoint_says_what_the_file_is(bad_file):
    path, marker, what = bad_file
    before = _sha(path)
    with pytest.raises(ModelFileError) as info:
        load_checkpoint(path)
    _check_message(str(info.value), path, what)
    assert info.value.__cause__ is None and info.value.__suppress_context__  # torch's text is not chained
    assert not marker.exists(), "the pickle payload ran"
    assert _sha(path) == before


@pytest.mark.parametrize("bad_file", ["text", "truncated", "payload_zip", "payload_legacy"], indirect=True)
def test_build_model_weights_file_says_what_the_file_is(bad_file):
    path, marker, what = bad_file
    before = _sha(path)
    with pytest.raises(ModelFileError) as info:
        build_model("squeezenet", 3, path)
    _check_message(str(info.value), path, what.split(", not ")[0] + ", not a PyTorch state dict")
    assert not marker.exists() and _sha(path) == before


def test_folder_named_like_a_checkpoint(tmp_path):
    folder = tmp_path / "x.pt"
    folder.mkdir()
    with pytest.raises(ModelFileError) as info:
        load_checkpoint(folder)
    assert str(info.value) == f"'{folder}' is a folder, {CHECKPOINT}"
    with pytest.raises(ModelFileError, match="is a folder, not a PyTorch state dict"):
        build_model("squeezenet", 3, folder)


def test_a_state_dict_that_is_no_checkpoint_keeps_its_message(trained_checkpoint, tmp_path):
    bare = tmp_path / "bare.pt"
    torch.save(torch.load(trained_checkpoint, weights_only=True)["model_state"], bare)
    with pytest.raises(ModelFileError, match=r"is not an xraylib PyTorch checkpoint: missing \['arch'"):
        load_checkpoint(bare)
    build_model("squeezenet", 3, bare)  # the same file is a good state dict


def test_resume_from_a_truncated_or_unsafe_last_pt_starts_over(tiny_manifest, tmp_path, caplog):
    from tests.torch.helpers import run_config
    from xraylib import torch_train

    cfg = run_config("bad", "squeezenet", epochs=1, batch_size=6, image_size=32, num_workers=0, seed=2)
    run = tmp_path / "run"
    torch_train.train(cfg, tiny_manifest, run, verbose=False)
    last = run / "last.pt"
    _cut(last, last)
    cut = last.read_bytes()
    caplog.set_level(logging.WARNING, logger="xraylib.torch_train")
    result = torch_train.train(cfg, tiny_manifest, run, verbose=False)
    assert result.resumed_from_epoch == 0 and len(result.history) == 1
    lines = [r.getMessage() for r in caplog.records if "cannot resume" in r.getMessage()]
    assert lines == [f"bad: cannot resume from last.pt: '{last}' is a truncated or damaged PyTorch file, not a "
                     "resume checkpoint (last.pt written by xraylib.torch_train); copy or save it again; moved it to "
                     "last.pt.unreadable and training afresh"]
    assert (run / "last.pt.unreadable").read_bytes() == cut  # set aside, not changed
    assert torch.load(last, weights_only=True)["epoch"] == 1  # the new run's own last.pt

    marker = tmp_path / "payload_ran"
    torch.save({"epoch": OpenPayload(marker)}, last)
    payload = last.read_bytes()
    caplog.clear()
    assert torch_train._load_resume_state(last, "bad") is None
    (message,) = [r.getMessage() for r in caplog.records]
    assert "holding Python objects other than tensors and plain values (io.open)" in message
    assert "weights_only" not in message and "\n" not in message
    assert not marker.exists() and (run / "last.pt.unreadable").read_bytes() == payload


def _predict(model: Path, image: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xraylib", "predict", str(model), str(image),
                           "--output", str(cwd / "p.csv")], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("bad_file", ["text", "payload_legacy"], indirect=True)
def test_cli_predict_prints_one_line(bad_file, tmp_path):
    path, marker, what = bad_file
    image = write_xray(tmp_path / "img.png")
    before = _sha(path)
    done = _predict(path, image, tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("xraylib predict: error: ")
    _check_message(line.removeprefix("xraylib predict: error: "), path, what)
    assert not marker.exists() and _sha(path) == before and not (tmp_path / "p.csv").exists()


def test_cli_predict_with_a_folder_named_pt(tmp_path):
    (tmp_path / "x.pt").mkdir()
    done = _predict(tmp_path / "x.pt", write_xray(tmp_path / "img.png"), tmp_path)
    assert done.returncode == 2 and done.stderr.splitlines() == [
        f"xraylib predict: error: '{tmp_path / 'x.pt'}' is a folder, not {model_files.TORCH_CHECKPOINT}"]

