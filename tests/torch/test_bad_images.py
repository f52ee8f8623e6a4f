"""Bad images at `xraylib predict` and `xraylib evaluate` with a PyTorch checkpoint: quarantined, the run goes on.

The inputs are made at test time (tests/bad_inputs.py); every test checks that the
input tree is unchanged.
"""

from __future__ import annotations

import json
import shutil

import pandas as pd

from tests import bad_inputs as bad
from xraylib import cli


def test_predict_skips_huge_unreadable_and_link_loops_and_predicts_the_rest(trained_checkpoint, tiny_root, tmp_path,
                                                                            capsys, monkeypatch):
    folder = tmp_path / "in"
    (folder / "nested" / "deeper").mkdir(parents=True)
    shutil.copy(next((tiny_root / "test" / "VIRUS").glob("*.png")), folder / "virus.png")
    shutil.copy(next((tiny_root / "test" / "NORMAL").glob("*.png")), folder / "nested" / "deeper" / "normal.png")
    bad.huge_png(folder / "huge.png")
    bad.xray(folder / "locked.png", 3)
    bad.xray(folder / ".hidden.png", 4)
    (folder / "loop").symlink_to(folder, target_is_directory=True)
    (folder / "self.png").symlink_to(folder / "self.png")
    before = bad.tree_state(folder)
    csv = tmp_path / "pred.csv"
    with bad.unreadable(monkeypatch, folder / "locked.png"):
        code = cli.main(["predict", str(trained_checkpoint), str(folder), "--output", str(csv)])
    captured = capsys.readouterr()
    assert code == 0 and "Traceback" not in captured.err
    assert sorted(p.split("/")[-1] for p in pd.read_csv(csv)["path"]) == ["normal.png", "virus.png"]
    assert "predicted 2 image(s)" in captured.out and "skipped 4" in captured.out
    skipped = [line for line in captured.err.splitlines() if line.startswith("skipped ")]
    assert any("huge.png" in line and "oversized image (20000x20000 pixels)" in line for line in skipped)
    assert "permission denied" in captured.err and "link to a folder: not followed" in captured.err
    assert "broken or looping link" in captured.err
    assert bad.tree_state(folder) == before


def test_evaluate_quarantines_bad_images_and_label_conflicts(trained_checkpoint, tiny_root, tmp_path, capsys):
    folder = tmp_path / "external"
    for label in ("BACTERIA", "NORMAL", "VIRUS"):
        (folder / label).mkdir(parents=True)
        for src in sorted((tiny_root / "test" / label).glob("*.png")):
            shutil.copy(src, folder / label / src.name)
    bad.huge_png(folder / "NORMAL" / "huge.png")
    bad.truncated_jpeg(folder / "VIRUS" / "cut.jpg", 5)
    conflict = sorted((folder / "NORMAL").glob("normal_*.png"))[0]
    shutil.copy(conflict, folder / "VIRUS" / "same_as_normal.png")
    before = bad.tree_state(folder)
    out = tmp_path / "eval"
    code = cli.main(["evaluate", str(trained_checkpoint), str(folder), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    quarantine = pd.read_csv(out / "quarantine.csv")
    reasons = dict(zip(quarantine["path"].map(lambda p: p.split("/")[-1]), quarantine["reason"]))
    assert "oversized" in reasons["huge.png"] and "corrupt or truncated" in reasons["cut.jpg"]
    result = json.loads((out / "metrics.json").read_text())
    assert result["summary"]["images"] == 6 - 1  # 2 per class, minus the NORMAL image in the label conflict
    assert any("label conflict" in w for w in result["warnings"])
    assert bad.tree_state(folder) == before
