"""Data layer: patient ids, manifest, quarantine of bad input, patient-level splits, leakage."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from tests.conftest import KERMANY224, require_shared, write_xray
from xraylib import cli, config, data


@pytest.mark.parametrize("name, expected", [
    ("person1000_bacteria_2931.jpeg", "person1000"),
    ("person1_virus_6.jpeg", "person1"),
    ("person1003_virus_1685_1.jpeg", "person1003"),
    ("IM-0115-0001.jpeg", "IM-0115"),
    ("IM-0117-0001-0002.jpeg", "IM-0117"),
    ("NORMAL2-IM-1427-0001.jpeg", "IM-1427"),
    ("COVID-synpat0012_1.png", "synpat0012"),
    ("Viral Pneumonia-synpat0007_2.png", "synpat0007"),
    ("COVID-123.png", None),
    ("scan.png", None),
])
def test_parse_patient_id(name, expected):
    assert data.parse_patient_id(f"train/X/{name}") == expected


def test_subtype_from_file_name():
    assert data.parse_kermany_subtype("person1_bacteria_1.jpeg") == "bacteria"
    assert data.parse_kermany_subtype("person1_virus_1.jpeg") == "virus"
    assert data.parse_kermany_subtype("IM-0001-0001.jpeg") == ""


def test_scan_kermany_manifest_columns(kermany_tree):
    scan = data.scan_source("kermany", kermany_tree.parent, progress=False)
    m = scan.manifest
    assert list(m.columns) == data.MANIFEST_COLUMNS
    assert len(m) == 21 and scan.quarantine.empty
    row = m[m["path"].str.endswith("person1_bacteria_2.jpeg")].iloc[0]
    assert (row["label"], row["patient_id"], row["source_split"], row["subtype"]) == ("PNEUMONIA", "person1", "train", "bacteria")
    assert (row["width"], row["height"], row["mode"]) == (40, 32, "L")
    assert row["sha256"] == hashlib.sha256(Path(row["path"]).read_bytes()).hexdigest()
    assert set(m["source_split"]) == {"train", "val", "test"}


def test_kermany3_labels_from_file_names(kermany_tree):
    m = data.scan_source("kermany3", kermany_tree, progress=False).manifest
    assert set(m["label"]) == {"NORMAL", "BACTERIA", "VIRUS"}
    assert (m.loc[m["path"].str.contains("_virus_"), "label"] == "VIRUS").all()


def test_duplicate_files_get_a_group(kermany_tree):
    src = kermany_tree / "train" / "NORMAL" / "IM-0001-0001.jpeg"
    shutil.copy(src, kermany_tree / "train" / "NORMAL" / "IM-0050-0001.jpeg")
    m = data.scan_source("kermany", kermany_tree, progress=False).manifest
    dups = m[m["duplicate_group"] != ""]
    assert len(dups) == 2 and dups["duplicate_group"].nunique() == 1


def _bad_copy(kermany_tree: Path) -> Path:
    """The acceptance case: truncated JPEG, text named .png, empty class folder, 16-bit PNG and odd modes."""
    train = kermany_tree / "train"
    good = (train / "NORMAL" / "IM-0001-0001.jpeg").read_bytes()
    (train / "NORMAL" / "IM-0901-0001.jpeg").write_bytes(good[: len(good) // 2])  # truncated JPEG
    (train / "PNEUMONIA" / "person901_bacteria_1.png").write_text("this is not an image\n")  # text named .png
    (train / "PNEUMONIA" / "notes.txt").write_text("readme")  # non-image file
    for split in ("val",):
        shutil.rmtree(kermany_tree / split / "NORMAL")
        (kermany_tree / split / "NORMAL").mkdir()  # empty class folder
    arr16 = (np.arange(40 * 32, dtype=np.uint16).reshape(32, 40) * 50)
    Image.fromarray(arr16).save(train / "NORMAL" / "IM-0902-0001.png")  # 16-bit PNG
    write_xray(train / "NORMAL" / "IM-0903-0001.png", value=20, mode="RGBA")
    write_xray(train / "NORMAL" / "IM-0904-0001.png", value=30, mode="P")
    write_xray(train / "PNEUMONIA" / "person902_virus_1.jpeg", value=200, mode="CMYK")
    return kermany_tree


def data_section(root: Path, source: str = "kermany", task: str = "binary") -> dict:
    """The project's validated ``data`` section with ``data.<task>`` pointed at ``root``.

    No other source to compare it with (cross-source near-duplicates: tests/unit/test_cross_source.py): the
    other task points at the same folder (not compared) and ``data.external`` is empty.
    """
    section = dict(config.load_params()["data"])
    section[task] = {"source": source, "root": str(root), "compare_with": []}
    other = "multiclass" if task == "binary" else "binary"
    section[other] = {"source": "folder", "root": str(root), "compare_with": []}
    section["external"] = []
    return section


def _tree_digest(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_bad_input_is_quarantined_and_the_rest_processed(kermany_tree, tmp_path):
    root = _bad_copy(kermany_tree)
    before = _tree_digest(root)
    with pytest.warns(UserWarning, match="is empty"):
        summary = data.build_manifest("binary", data_section(root), seed=1, out_dir=tmp_path / "out", progress=False)
    assert _tree_digest(root) == before, "raw data must never be modified"
    quarantine = pd.read_csv(tmp_path / "out" / "quarantine.csv")
    reasons = dict(zip(quarantine["path"].map(lambda p: Path(p).name), quarantine["reason"]))
    assert set(reasons) == {"IM-0901-0001.jpeg", "person901_bacteria_1.png", "notes.txt"}
    assert "unreadable" in reasons["IM-0901-0001.jpeg"] and "not an image" in reasons["notes.txt"]
    assert summary["quarantined"] == 3
    assert any("empty" in w for w in summary["warnings"])
    manifest = data.load_manifest("binary", tmp_path / "out")
    modes = dict(zip(manifest["path"].map(lambda p: Path(p).name), manifest["mode"]))
    assert modes["IM-0902-0001.png"].startswith("I;16") and modes["IM-0903-0001.png"] == "RGBA"
    assert modes["IM-0904-0001.png"] == "P" and modes["person902_virus_1.jpeg"] == "CMYK"
    assert summary["images"] == 21 - 1 + 4  # original 21, minus the emptied val image, plus 4 odd-mode files


def test_unknown_class_folder_is_a_clear_error(kermany_tree):
    write_xray(kermany_tree / "train" / "COVID" / "x.png")
    with pytest.raises(ValueError, match=r"unknown class folder .*COVID.*expected only \['NORMAL', 'PNEUMONIA'\]"):
        data.scan_source("kermany", kermany_tree, progress=False)


def test_missing_root_and_bad_source_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*xraylib download"):
        data.scan_source("kermany", tmp_path / "nope")
    with pytest.raises(ValueError, match="data source must be one of"):
        data.scan_source("kaggle", tmp_path)
    with pytest.raises(ValueError, match=r"data.binary.source must be one of"):
        data.data_root_for("binary", {"binary": {"source": "nih"}})
    with pytest.raises(KeyError, match="data.multiclass"):
        data.data_root_for("multiclass", {"binary": {}})
    with pytest.raises(ValueError, match="data.val_fraction"):
        data.assign_splits(pd.DataFrame(columns=data.MANIFEST_COLUMNS), val_fraction=0.7)


def test_covid_radiography_and_folder_layouts(tmp_path):
    covid = tmp_path / "COVID-19_Radiography_Dataset"
    for k, label in enumerate(data.COVID_CLASSES):
        for i in range(2):
            write_xray(covid / label / "images" / f"{label}-{i}.png", 40 + 30 * i + 7 * k)
            write_xray(covid / label / "masks" / f"{label}-{i}.png", 255)
    m = data.scan_source("covid_radiography", tmp_path, progress=False).manifest
    assert sorted(m["label"].unique()) == sorted(data.COVID_CLASSES) and len(m) == 8
    assert (m["lung_mask"] != "").all() and (m["patient_id"].str.startswith("file:")).all()
    folder = tmp_path / "plain"
    for value, label in ((60, "cats"), (160, "dogs")):
        write_xray(folder / label / "a.png", value)
    m = data.scan_source("folder", folder, progress=False).manifest
    assert sorted(m["label"]) == ["cats", "dogs"]


def _synthetic_manifest(n_patients: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        label = "PNEUMONIA" if p % 3 else "NORMAL"
        for k in range(int(rng.integers(1, 4))):
            rows.append({"path": f"p{p}_{k}.png", "label": label, "patient_id": f"person{p}",
                         "source_split": "train", "sha256": f"h{p}_{k}"})
    frame = pd.DataFrame(rows)
    frame.loc[5, "sha256"] = frame.loc[40, "sha256"]  # an identical file under two patients
    return frame


def test_splits_are_patient_level_stratified_and_seeded():
    manifest = _synthetic_manifest()
    a = data.assign_splits(manifest, val_fraction=0.2, test_fraction=0.2, seed=3)
    b = data.assign_splits(manifest, val_fraction=0.2, test_fraction=0.2, seed=3)
    assert a["split"].tolist() == b["split"].tolist()
    assert set(a["split"]) == {"train", "val", "test"}
    # counted here with pandas, not with the module's own leakage check
    assert a.groupby("patient_id")["split"].nunique().max() == 1
    assert a.groupby("sha256")["split"].nunique().max() == 1
    shared = a.loc[a["sha256"] == manifest.loc[40, "sha256"], "patient_id"]  # one file under two patients
    assert shared.nunique() == 2 and a.loc[a["patient_id"].isin(shared), "split"].nunique() == 1
    # both classes in every split, roughly the requested sizes
    assert (pd.crosstab(a["label"], a["split"]) > 0).all().all()
    assert 0.1 < (a["split"] == "test").mean() < 0.3


def test_official_test_split_is_kept_and_clashes_excluded():
    manifest = _synthetic_manifest()
    manifest["sha256"] = [f"u{i}" for i in range(len(manifest))]  # no byte duplicates in this case
    manifest.loc[manifest["patient_id"].isin(["person1", "person2"]), "source_split"] = "test"
    extra = manifest[manifest["patient_id"] == "person1"].iloc[:1].assign(source_split="train", sha256="new")
    manifest = pd.concat([manifest, extra], ignore_index=True)
    split = data.assign_splits(manifest, seed=0)
    assert (split.loc[split["source_split"] == "test", "split"] == "test").all()
    # exactly the one training image of a test patient is excluded, and no patient is in two used splits
    assert split.loc[split["split"] == "excluded", "sha256"].tolist() == ["new"]
    used = split[split["split"] != "excluded"]
    assert used.groupby("patient_id")["split"].nunique().max() == 1
    assert set(used.loc[used["patient_id"].isin(["person1", "person2"]), "split"]) == {"test"}


def test_leakage_check_catches_patients_and_identical_files():
    frame = pd.DataFrame({"patient_id": ["a", "a", "b", "c"], "sha256": ["1", "2", "3", "3"],
                          "split": ["train", "test", "train", "val"]})
    report = data.check_leakage(frame)
    assert report["patients_in_several_splits"] == 1
    assert report["identical_files_in_several_splits"] == 1
    with pytest.raises(ValueError, match="leakage between splits"):
        data.assert_no_leakage(frame)


def _write_params(tmp_path: Path, root: Path) -> Path:
    """The project's params.yaml (complete, as the schema requires) with data.binary pointed at ``root``."""
    full = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    full["seed"] = 1
    full["data"]["binary"] = {"source": "kermany", "root": str(root), "compare_with": []}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(full))
    return params


def _leak_after_splitting(monkeypatch, move) -> None:
    """Let the real splitter run, then move rows so that they leak (as a splitter bug would)."""
    real = data.assign_splits

    def leaky(*args, **kwargs):
        frame = real(*args, **kwargs)
        return move(frame)

    monkeypatch.setattr(data, "assign_splits", leaky)


def _other_split(split: str) -> str:
    return "val" if split != "val" else "train"


def _error_lines(err: str) -> list[str]:
    """The CLI's own messages on stderr (tqdm draws its scan bars there too)."""
    return [line for line in err.splitlines() if line.startswith("xraylib")]


def test_prepare_fails_when_a_patient_leaks(kermany_tree, tmp_path, monkeypatch, capsys):
    def move(frame):
        rows = frame.index[frame["patient_id"] == "person1"]  # person1_bacteria_1 and _2
        assert len(rows) == 2
        frame.loc[rows[1], "split"] = _other_split(frame.loc[rows[0], "split"])
        return frame

    _leak_after_splitting(monkeypatch, move)
    out = tmp_path / "out"
    code = cli.main(["--params", str(_write_params(tmp_path, kermany_tree)), "prepare", "binary", "--out", str(out)])
    lines = _error_lines(capsys.readouterr().err)
    assert code != 0
    assert len(lines) == 1 and lines[0].startswith("xraylib prepare: error: leakage between splits")
    assert "1 patient(s) ['person1']" in lines[0]
    assert not (out / "manifest.csv").exists(), "a leaking split must not be written"


def test_prepare_fails_when_identical_files_leak(kermany_tree, tmp_path, monkeypatch, capsys):
    normal = kermany_tree / "train" / "NORMAL"
    shutil.copy(normal / "IM-0001-0001.jpeg", normal / "IM-0050-0001.jpeg")  # same bytes, another patient id

    def move(frame):
        copy = frame.index[frame["path"].str.endswith("IM-0050-0001.jpeg")][0]
        original = frame.index[frame["path"].str.endswith("IM-0001-0001.jpeg")][0]
        frame.loc[copy, "split"] = _other_split(frame.loc[original, "split"])
        return frame

    _leak_after_splitting(monkeypatch, move)
    code = cli.main(["--params", str(_write_params(tmp_path, kermany_tree)), "prepare", "binary",
                     "--out", str(tmp_path / "out")])
    lines = _error_lines(capsys.readouterr().err)
    assert code != 0 and len(lines) == 1 and "leakage between splits" in lines[0]
    assert "0 patient(s) [] and 1 identical file(s)" in lines[0]
    assert "IM-0001-0001.jpeg" in lines[0] and "IM-0050-0001.jpeg" in lines[0]  # the files, not a hash


def test_prepare_without_leakage_writes_the_split(kermany_tree, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["--params", str(_write_params(tmp_path, kermany_tree)), "prepare", "binary", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert "binary: 21 images, 20 patients" in capsys.readouterr().out  # person1 has two images, the others one
    manifest = data.load_manifest("binary", out)
    assert manifest.groupby("patient_id")["split"].nunique().max() == 1


def test_split_table_counts():
    split = data.assign_splits(_synthetic_manifest(), seed=0)
    table = data.split_table(split)
    assert table.loc["total", "all"] == len(split)
    assert table.loc["patients", "all"] == split["patient_id"].nunique()


@pytest.mark.real_data
def test_real_kermany_manifest_has_no_leakage(tmp_path):
    require_shared(KERMANY224)
    summary = data.build_manifest("binary", data_section(KERMANY224), seed=42, out_dir=tmp_path, progress=False)
    assert summary["images"] == 5216 and summary["quarantined"] == 0
    assert summary["per_class"] == {"NORMAL": 1341, "PNEUMONIA": 3875}
    assert summary["leakage_patients"] == 0 and summary["leakage_identical_files"] == 0
    manifest = data.load_manifest("binary", tmp_path)
    assert set(manifest["split"]) == {"train", "val", "test"}
    assert manifest["duplicate_group"].ne("").sum() > 0  # the real data has exact duplicates
    # every id parsed: a patient-level split, with the caveat on how Kermany numbers are read
    assert (summary["split_level"], summary["patient_ids_from_file_names"]) == ("patient", 0)
    assert summary["patient_id_caveat"] == data.KERMANY_ID_CAVEAT
    # measured: the 28 near-identical pairs of this folder are all byte-identical (duplicate_group), none is a
    # re-encoded copy; every image sits in its patient's leakage group
    assert summary["near_duplicate_pairs"] == 0 and summary["leakage_near_duplicates"] == 0
    assert manifest.groupby("leakage_group")["split"].nunique().max() == 1
    assert manifest["leakage_group"].nunique() == len(set(data.leakage_groups(manifest)))


def test_select_split_is_the_one_way_to_take_a_split():
    manifest = pd.DataFrame({"path": list("abcde"), "label": ["x"] * 5,
                             "split": ["train", "test", "train", "excluded", "val"]})
    train = data.select_split(manifest, "train")
    assert list(train["path"]) == ["a", "c"] and list(train.index) == [0, 1]
    assert list(data.select_split(manifest, "excluded")["path"]) == ["d"]
    with pytest.raises(ValueError, match=r"split must be one of \['train', 'val', 'test', 'excluded'\], got 'tset'"):
        data.select_split(manifest, "tset")
    empty = manifest[manifest["split"] != "val"]
    with pytest.raises(ValueError, match=r"no images in split 'val' \(splits present: \['excluded', 'test', 'train'\]\)"):
        data.select_split(empty, "val")
    assert data.select_split(empty, "val", allow_empty=True).empty
    with pytest.raises(ValueError, match="no 'split' column"):
        data.select_split(manifest.drop(columns="split"), "train")
