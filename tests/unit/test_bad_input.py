"""Bad input at the data stage (`xraylib prepare`): every case gives one clear line or a quarantine entry.

Each test builds a small Kermany-layout tree at test time (tests/bad_inputs.py), runs
the command line in this process, and checks the message or the quarantine/conflict
report, that the run went on where it should, and that the input tree is unchanged.
Subprocess runs at the end show that no traceback reaches the terminal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from tests import bad_inputs as bad
from xraylib import cli, config, data

CLASSES = ("NORMAL", "PNEUMONIA")


@pytest.fixture
def tree(tmp_path) -> Path:
    """chest_xray/{train,test}/{NORMAL,PNEUMONIA}: 8 + 2 distinct images per class, one patient each."""
    root = tmp_path / "chest_xray"
    for k, label in enumerate(CLASSES):
        for i in range(10):
            split = "train" if i < 8 else "test"
            name = f"IM-{100 * k + i:04d}-0001.jpeg" if label == "NORMAL" else f"person{100 * k + i}_bacteria_{i}.jpeg"
            bad.xray(root / split / label / name, seed=100 * k + i)
    return root


def prepare(tmp_path: Path, root: Path, capsys, *extra: str) -> tuple[int, str, str, Path]:
    """Run `xraylib prepare binary` on ``root``; returns (exit code, stdout, xraylib's stderr lines, out dir)."""
    params = yaml.safe_load((config.project_root() / "params.yaml").read_text())
    params["data"]["binary"].update(source="kermany", root=str(root))
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    out = tmp_path / "out"
    code = cli.main(["--params", str(path), *extra, "prepare", "binary", "--out", str(out)])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith(("xraylib", "warning"))]
    return code, captured.out, "\n".join(lines), out


def quarantine_reasons(out: Path) -> dict[str, str]:
    table = pd.read_csv(out / "quarantine.csv", keep_default_na=False)
    return dict(zip(table["path"].map(lambda p: Path(p).name), table["reason"]))


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def manifest_names(out: Path) -> set[str]:
    return set(data.load_manifest("binary", out)["path"].map(lambda p: Path(p).name))


# --------------------------------------------------------------------------------------------------
# Files that cannot be images: quarantined with the reason, the run goes on
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, reason", [
    (lambda d: bad.truncated_jpeg(d / "IM-0901-0001.jpeg", 901), "corrupt or truncated"),
    (lambda d: bad.zero_bytes(d / "IM-0902-0001.png"), "not an image Pillow can decode"),
    (lambda d: bad.text_as_image(d / "IM-0903-0001.png"), "not an image Pillow can decode"),
    (lambda d: bad.text_as_image(d / "IM-0904-0001.txt"), "not an image file (suffix '.txt')"),
    (lambda d: bad.huge_png(d / "IM-0905-0001.png"), "oversized image (20000x20000 pixels)"),
], ids=["truncated", "zero-byte", "text-as-png", "text-suffix", "huge-20000px"])
def test_undecodable_files_are_quarantined_and_the_rest_is_kept(tree, tmp_path, capsys, make, reason):
    made = make(tree / "train" / "NORMAL")
    before = bad.tree_state(tree)
    code, out_text, err, out = prepare(tmp_path, tree, capsys)
    assert code == 0, err
    assert reason in quarantine_reasons(out)[made.name]
    assert summary(out)["quarantined"] == 1 and summary(out)["images"] == 20
    assert "1 quarantined" in out_text
    assert bad.tree_state(tree) == before


def test_readable_odd_files_are_kept(tree, tmp_path, capsys):
    """16-bit, RGBA, palette, CMYK, 1-bit, 1x1, a PNG named .jpg and a unicode name are images like any other."""
    folder = tree / "train" / "PNEUMONIA"
    bad.odd_modes(folder, 500)
    bad.xray(folder / "png_named.png", 600).rename(folder / "png_named.jpg")
    bad.xray(folder / "person601_virus_éèü_肺.png", 601)
    before = bad.tree_state(tree)
    code, _, err, out = prepare(tmp_path, tree, capsys)
    assert code == 0, err
    manifest = data.load_manifest("binary", out)
    modes = dict(zip(manifest["path"].map(lambda p: Path(p).name), manifest["mode"]))
    assert modes["sixteen_bit.png"].startswith("I;16")
    assert [modes[n] for n in ("rgba.png", "palette.png", "cmyk.jpg", "one_bit.png", "single_pixel.png",
                               "png_named.jpg")] == ["RGBA", "P", "CMYK", "1", "L", "L"]
    assert "person601_virus_éèü_肺.png" in modes
    assert summary(out)["quarantined"] == 0 and summary(out)["images"] == 28
    assert bad.tree_state(tree) == before


def test_unreadable_file_and_out_of_memory_are_quarantined(tree, tmp_path, capsys, monkeypatch):
    denied = tree / "train" / "NORMAL" / "IM-0001-0001.jpeg"
    hungry = tree / "train" / "NORMAL" / "IM-0002-0001.jpeg"
    before = bad.tree_state(tree)
    with bad.unreadable(monkeypatch, denied), monkeypatch.context() as patch:
        guarded_open = Image.open  # the permission guard, where chmod does not stop this user (root)

        def open_without_memory(fp, *args, **kwargs):
            if Path(fp).name == hungry.name:
                raise MemoryError
            return guarded_open(fp, *args, **kwargs)

        patch.setattr(Image, "open", open_without_memory)
        code, _, err, out = prepare(tmp_path, tree, capsys)
    assert code == 0, err
    reasons = quarantine_reasons(out)
    assert "permission denied" in reasons[denied.name]
    assert "out of memory" in reasons[hungry.name]
    assert summary(out)["images"] == 18
    assert bad.tree_state(tree) == before


# --------------------------------------------------------------------------------------------------
# Folder layouts
# --------------------------------------------------------------------------------------------------
def test_nested_images_are_read_and_counted_hidden_files_skipped(tree, tmp_path, capsys):
    folder = tree / "train" / "NORMAL"
    bad.xray(folder / "2019" / "ward_a" / "IM-0700-0001.jpeg", 700)
    bad.xray(folder / "2020" / "IM-0701-0001.jpeg", 701)
    bad.xray(folder / ".IM-0702-0001.jpeg", 702)  # hidden file
    bad.xray(folder / ".thumbnails" / "IM-0703-0001.jpeg", 703)  # hidden folder
    before = bad.tree_state(tree)
    code, out_text, err, out = prepare(tmp_path, tree, capsys)
    assert code == 0, err
    assert {"IM-0700-0001.jpeg", "IM-0701-0001.jpeg"} <= manifest_names(out)
    assert not {"IM-0702-0001.jpeg", ".IM-0702-0001.jpeg", "IM-0703-0001.jpeg"} & manifest_names(out)
    s = summary(out)
    assert (s["nested_images"], s["hidden_skipped"], s["images"]) == (2, 2, 22)
    assert "2 from subfolders" in out_text and "read from subfolders" in err
    assert bad.tree_state(tree) == before


def test_link_loops_broken_links_and_unreadable_subfolders_do_not_stop_the_scan(tree, tmp_path, capsys,
                                                                                monkeypatch):
    folder = tree / "train" / "PNEUMONIA"
    (folder / "loop").symlink_to(folder, target_is_directory=True)  # a folder link back to its parent
    (folder / "self.png").symlink_to(folder / "self.png")  # a file link to itself
    (folder / "gone.png").symlink_to(tmp_path / "nowhere.png")  # broken link
    bad.xray(folder / "locked" / "person800_virus_1.jpeg", 800)
    before = bad.tree_state(tree)
    with bad.unreadable(monkeypatch, folder / "locked"):
        code, _, err, out = prepare(tmp_path, tree, capsys)
    assert code == 0, err
    reasons = quarantine_reasons(out)
    assert reasons["loop"] == "link to a folder: not followed"
    assert "broken or looping link" in reasons["self.png"] and "broken or looping link" in reasons["gone.png"]
    assert reasons["locked"] == "folder cannot be listed: permission denied"
    assert summary(out)["images"] == 20
    assert bad.tree_state(tree) == before


def test_empty_class_fails_naming_the_folder(tree, tmp_path, capsys):
    for path in (tree / "train" / "NORMAL").iterdir():
        path.unlink()
    for path in (tree / "test" / "NORMAL").iterdir():
        path.unlink()
    before = bad.tree_state(tree)
    code, _, err, out = prepare(tmp_path, tree, capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("xraylib prepare: error: class 'NORMAL' has no usable image:")
    assert "train/NORMAL" in err and "test/NORMAL" in err and "no files" in err
    assert not out.exists(), "nothing is written when a check fails"
    assert bad.tree_state(tree) == before


def test_class_of_only_bad_files_fails_naming_why(tree, tmp_path, capsys):
    for path in (tree / "test" / "NORMAL").iterdir():
        path.unlink()
    for i, path in enumerate(sorted((tree / "train" / "NORMAL").iterdir())):
        path.unlink()
        bad.text_as_image(path)
    code, _, err, _ = prepare(tmp_path, tree, capsys)
    assert code == 2 and "class 'NORMAL' has no usable image: all 8 file(s)" in err and "8 quarantined" in err


def test_missing_class_folder_of_a_named_source(tree, tmp_path, capsys):
    for split in ("train", "test"):
        for path in (tree / split / "NORMAL").iterdir():
            path.unlink()
        (tree / split / "NORMAL").rmdir()
    code, _, err, _ = prepare(tmp_path, tree, capsys)
    assert code == 2 and "has no images of class(es) ['NORMAL']" in err


@pytest.mark.parametrize("where", ["beside", "instead"])
def test_file_where_a_class_folder_belongs_is_an_error(tree, tmp_path, capsys, where):
    """An image beside the class folders, or a plain file named like a class, would be lost without a word."""
    if where == "beside":
        stray = bad.xray(tree / "train" / "NORMAL.png", 1)
    else:
        stray = tree / "train" / "PNEUMONIA"
        for path in stray.iterdir():
            path.unlink()
        stray.rmdir()
        stray.write_bytes(b"a file named like a class folder")
    (tree / "train" / "README.md").write_text("documents beside class folders are fine\n")
    before = bad.tree_state(tree)
    code, _, err, _ = prepare(tmp_path, tree, capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert f"'{stray}' is a file where a class folder belongs" in err
    assert bad.tree_state(tree) == before


def test_unknown_class_and_missing_root(tree, tmp_path, capsys):
    bad.xray(tree / "train" / "COVID" / "x.png", 5)
    code, _, err, _ = prepare(tmp_path, tree, capsys)
    assert code == 2 and "unknown class folder" in err and "COVID" in err
    code, _, err, _ = prepare(tmp_path, tmp_path / "nowhere", capsys)
    assert code == 2 and "does not exist" in err and len(err.splitlines()) == 1


def test_folder_source_binary_task_needs_two_classes(tmp_path, capsys):
    root = tmp_path / "plain"
    for k, label in enumerate(("a", "b", "c")):
        for i in range(6):
            bad.xray(root / label / f"{label}{i}.png", 10 * k + i)
    params = yaml.safe_load((config.project_root() / "params.yaml").read_text())
    params["data"]["binary"].update(source="folder", root=str(root))
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    code = cli.main(["--params", str(tmp_path / "p.yaml"), "prepare", "binary", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "the binary task needs exactly 2 class folders, found 3: ['a', 'b', 'c']" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# The same picture under two labels
# --------------------------------------------------------------------------------------------------
def test_identical_and_near_identical_images_under_two_labels_are_conflicts(tree, tmp_path, capsys):
    normal, pneumonia = tree / "train" / "NORMAL", tree / "train" / "PNEUMONIA"
    identical = pneumonia / "person900_virus_1.jpeg"
    identical.write_bytes((normal / "IM-0003-0001.jpeg").read_bytes())
    with Image.open(normal / "IM-0004-0001.jpeg") as img:  # the same picture re-encoded as PNG
        img.save(near := pneumonia / "person901_virus_1.png")
    same_label_copy = normal / "IM-0950-0001.jpeg"  # a duplicate with the same label is not a conflict
    same_label_copy.write_bytes((normal / "IM-0005-0001.jpeg").read_bytes())
    before = bad.tree_state(tree)
    code, out_text, err, out = prepare(tmp_path, tree, capsys)
    assert code == 0, err
    conflicts = pd.read_csv(out / "label_conflicts.csv", keep_default_na=False)
    names = dict(zip(conflicts["path"].map(lambda p: Path(p).name), conflicts["evidence"]))
    assert set(names) == {"IM-0003-0001.jpeg", "person900_virus_1.jpeg", "IM-0004-0001.jpeg", "person901_virus_1.png"}
    assert "identical bytes" in names["person900_virus_1.jpeg"]
    assert "near-identical" in names["person901_virus_1.png"]
    assert conflicts["conflict_group"].nunique() == 2
    assert not set(names) & manifest_names(out), "conflicting images are left out of training"
    assert same_label_copy.name in manifest_names(out)
    assert summary(out)["label_conflicts"] == 4 and "4 in label conflicts" in out_text
    assert "label conflict" in err
    assert bad.tree_state(tree) == before


def test_different_images_are_not_conflicts(tree):
    """Distinct pictures, also of one texture at another brightness, are not near-identical."""
    bad.xray(tree / "train" / "NORMAL" / "IM-0960-0001.png", 960)
    with Image.open(tree / "train" / "NORMAL" / "IM-0960-0001.png") as img:
        brighter = Image.eval(img, lambda v: min(255, v + 12))
        brighter.save(tree / "train" / "PNEUMONIA" / "person960_virus_1.png")
    scan = data.scan_source("kermany", tree, progress=False)
    assert scan.conflicts.empty and len(scan.manifest) == 22


# --------------------------------------------------------------------------------------------------
# No traceback reaches the terminal (a separate process, as a user runs it)
# --------------------------------------------------------------------------------------------------
def _run(args: list[str], cwd: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(config.project_root()), config.PROJECT_ENV: str(config.project_root())}
    env.pop("XRAYLIB_DEBUG", None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "xraylib", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=300)


def test_no_traceback_without_debug_and_one_with_it(tree, tmp_path):
    for path in (tree / "train" / "NORMAL").iterdir():
        path.unlink()
    for path in (tree / "test" / "NORMAL").iterdir():
        path.unlink()
    params = yaml.safe_load((config.project_root() / "params.yaml").read_text())
    params["data"]["binary"].update(source="kermany", root=str(tree))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    args = ["--params", str(tmp_path / "params.yaml"), "prepare", "binary", "--out", str(tmp_path / "o")]
    quiet = _run(args, tmp_path)
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr
    assert quiet.stderr.strip().splitlines()[-1].startswith("xraylib prepare: error: class 'NORMAL'")
    loud = _run(["--debug", *args], tmp_path)
    assert loud.returncode == 1 and "Traceback (most recent call last)" in loud.stderr
    env_debug = _run(args, tmp_path, {"XRAYLIB_DEBUG": "1"})
    assert "Traceback (most recent call last)" in env_debug.stderr


# --------------------------------------------------------------------------------------------------
# Wrong parameters: every entry point refuses them before doing anything, naming the dotted key
# --------------------------------------------------------------------------------------------------
ENTRY_POINTS = [["prepare", "binary", "--out", "{tmp}/o"], ["synthesize", "--out", "{tmp}/s"],
                ["notebook", "train_binary"], ["notebook", "train_multiclass"], ["notebook", "gradcam"]]


@pytest.mark.parametrize("case", ["typo_epoch", "typo_val_fractoin", "missing_val_fraction", "missing_section",
                                  "missing_seed", "quoted_no", "fraction_text", "seed_text", "epochs_text",
                                  "negative_size", "lr_1e-4", "unknown_arch"])
def test_wrong_parameters_stop_every_entry_point(tmp_path, capsys, case, monkeypatch):
    from tests.unit.test_schema import CASES

    mutate, expected = CASES[case]
    expected = expected.replace("(params.yaml must define it)", "(p.yaml must define it)")
    params = yaml.safe_load((config.project_root() / "params.yaml").read_text())
    mutate(params)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setattr("papermill.execute_notebook", lambda *a, **k: pytest.fail("the notebook must not run"))
    for entry in ENTRY_POINTS:
        args = [a.format(tmp=tmp_path) for a in entry]
        code = cli.main(["--params", str(tmp_path / "p.yaml"), *args])
        err = capsys.readouterr().err
        assert code == 2, (entry, err)
        assert err.startswith(f"xraylib {entry[0]}: error: p.yaml: 1 problem\n"), err
        assert f"  {expected}\n" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml"], "nothing may be written"


def test_a_failing_notebook_cell_is_one_line_naming_the_executed_notebook():
    from papermill.exceptions import PapermillExecutionError

    err = PapermillExecutionError(7, 12, "cfg = ...", "ValueError", "train_binary.image_size must be >= 16\nmore",
                                  ["Traceback (most recent call last)", "  File ...", "ValueError: ..."])
    failure = cli.notebook_failure(err, config.NOTEBOOKS_DIR / "03_train_binary.ipynb",
                                   config.REPORTS_DIR / "notebooks" / "03_train_binary.ipynb")
    assert str(failure) == ("03_train_binary.ipynb stopped in cell [12]: ValueError: train_binary.image_size must be "
                            ">= 16; more (the executed notebook with the traceback: "
                            "reports/notebooks/03_train_binary.ipynb; --debug prints it)")
    assert failure.input_error
    bug = PapermillExecutionError(1, 2, "x", "IndexError", "list index out of range", [])
    assert not cli.notebook_failure(bug, config.NOTEBOOKS_DIR / "a.ipynb", config.REPORTS_DIR / "a.ipynb").input_error
