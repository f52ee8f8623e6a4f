"""`xraylib predict` with a PyTorch checkpoint: happy path with Grad-CAM overlays and every reachable error path."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tests.conftest import write_odd_images
from xraylib import cli, config


def test_help_lists_the_cam_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["predict", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--cam DIR" in out and "--output" in out


def test_predict_folder_with_odd_modes_bad_files_and_overlays(trained_checkpoint, tiny_root, tmp_path, capsys,
                                                              reference_probs):
    folder = write_odd_images(tmp_path / "in")
    shutil.copy(next((tiny_root / "test" / "VIRUS").glob("*.png")), folder / "virus.png")
    missing = tmp_path / "missing.png"
    csv, cams = tmp_path / "out" / "pred.csv", tmp_path / "cams"
    code = cli.main(["predict", str(trained_checkpoint), str(folder), str(missing), "--output", str(csv),
                     "--cam", str(cams)])
    captured = capsys.readouterr()
    assert code == 0
    predicted = {"sixteen_bit.png", "rgba.png", "cmyk.jpg", "palette.gif", "whole.jpg", "virus.png"}
    assert f"predicted {len(predicted)} image(s)" in captured.out and "skipped 4" in captured.out
    for bad in ("broken.png", "truncated.jpg", "notes.txt", "missing.png"):
        assert bad in captured.err
    assert "no such file or folder" in captured.err
    table = pd.read_csv(csv)
    assert {p.split("/")[-1] for p in table["path"]} == predicted
    expected = reference_probs(trained_checkpoint, table["path"])  # softmax computed outside the predictor
    np.testing.assert_allclose(table[["prob_BACTERIA", "prob_NORMAL", "prob_VIRUS"]], expected, atol=1e-5)
    assert list(table["predicted"]) == [["BACTERIA", "NORMAL", "VIRUS"][k] for k in expected.argmax(axis=1)]
    assert table["threshold"].isna().all() and (table["model"] == config.relative_to_project(trained_checkpoint)).all()
    index = pd.read_csv(cams / "cam_index.csv")
    assert sorted(index["path"]) == sorted(table["path"])
    assert list(index["predicted"]) == list(table.set_index("path").loc[index["path"], "predicted"])
    for row in index.itertuples():
        with Image.open(cams / row.overlay) as overlay, Image.open(config.resolve(row.path)) as original:
            assert overlay.mode == "RGB" and overlay.size == original.size  # the image's own size, not 32 px
        assert (cams / row.figure).is_file()


def test_only_bad_inputs_exit_1(trained_checkpoint, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"garbage")
    assert cli.main(["predict", str(trained_checkpoint), str(bad), "--output", str(tmp_path / "p.csv"),
                     "--cam", str(tmp_path / "cams")]) == 1
    captured = capsys.readouterr()
    assert "predicted 0 image(s)" in captured.out and "broken.png" in captured.err
    assert not list(tmp_path.glob("cams/*.png"))


def test_missing_or_foreign_model_exits_2(trained_checkpoint, tiny_root, tmp_path, capsys):
    image = str(next((tiny_root / "test" / "NORMAL").glob("*.png")))
    assert cli.main(["predict", str(tmp_path / "nope.pt"), image]) == 2
    assert "not found" in capsys.readouterr().err
    bare = tmp_path / "bare.pt"
    torch.save(torch.load(trained_checkpoint, weights_only=True)["model_state"], bare)
    assert cli.main(["predict", str(bare), image, "--output", str(tmp_path / "p.csv")]) == 2
    assert "not an xraylib PyTorch checkpoint" in capsys.readouterr().err


@pytest.mark.real_data
def test_original_resolution_kermany_images(trained_checkpoint, tmp_path, capsys):
    source = config.shared_path("data", "kermany_val_original")
    if source is None:
        pytest.skip(f"real data not available: {config.SHARED_DIR / 'data' / 'kermany_val_original'} is absent")
    folder = tmp_path / "val"
    shutil.copytree(source, folder)
    (folder / "NORMAL" / "corrupt.jpeg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    code = cli.main(["predict", str(trained_checkpoint), str(folder), "--output", str(tmp_path / "p.csv"),
                     "--cam", str(tmp_path / "cams")])
    captured = capsys.readouterr()
    assert code == 0 and "predicted 16 image(s)" in captured.out and "skipped 1" in captured.out
    assert "corrupt.jpeg" in captured.err
    assert len(list((tmp_path / "cams").glob("*_cam.png"))) == 16
