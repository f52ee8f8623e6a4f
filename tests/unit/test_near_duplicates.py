"""Honest splits: near-duplicate groups, the leakage_group column, image-level splits and the Kermany id caveat."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.conftest import require_shared, write_xray
from xraylib import config, data, synthetic


def _xray(path: Path, seed: int, size: int = 160) -> Path:
    """A synthetic chest-X-ray-like picture; every seed is another "patient" (another anatomy)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(synthetic.make_image("NORMAL", "binary", seed, image_size=size)[0]).save(path)
    return path


def _data_section(root: Path, source: str, task: str = "binary") -> dict:
    """The project's ``data`` section with ``data.<task>`` at ``root`` and no other source to compare it with."""
    section = dict(config.load_params()["data"])
    section[task] = {"source": source, "root": str(root), "compare_with": []}
    other = "multiclass" if task == "binary" else "binary"
    section[other] = {"source": "folder", "root": str(root), "compare_with": []}  # the same folder: not compared
    section["external"] = []
    return section


def _by_name(manifest: pd.DataFrame) -> pd.DataFrame:
    return manifest.set_index(manifest["path"].map(lambda p: Path(p).name))


@pytest.fixture
def copies(tmp_path) -> Path:
    """Kermany layout, 12 normal and 12 pneumonia patients; two normal pictures also saved as re-encoded copies.

    ``IM-0001-0001.png`` is copied as a JPEG (quality 60) under another patient number, and
    ``IM-0002-0001.png`` as a 1.5x larger PNG: the same picture under two patient ids.
    """
    root = tmp_path / "chest_xray" / "train"
    for k in range(1, 13):
        _xray(root / "NORMAL" / f"IM-{k:04d}-0001.png", seed=k)
        _xray(root / "PNEUMONIA" / f"person{k}_bacteria_{k}.png", seed=100 + k)
    with Image.open(root / "NORMAL" / "IM-0001-0001.png") as img:
        img.save(root / "NORMAL" / "IM-0101-0001.jpeg", quality=60)
    with Image.open(root / "NORMAL" / "IM-0002-0001.png") as img:
        img.resize((240, 240), Image.LANCZOS).save(root / "NORMAL" / "IM-0102-0001.png")
    shutil.copy(root / "NORMAL" / "IM-0003-0001.png", root / "NORMAL" / "IM-0103-0001.png")  # identical bytes
    return tmp_path / "chest_xray"


def test_reencoded_copies_join_one_leakage_group(copies):
    m = _by_name(data.scan_source("kermany", copies, progress=False).manifest)
    assert list(m.columns) == data.MANIFEST_COLUMNS
    for original, copy in (("IM-0001-0001.png", "IM-0101-0001.jpeg"), ("IM-0002-0001.png", "IM-0102-0001.png")):
        assert m.loc[original, "patient_id"] != m.loc[copy, "patient_id"]
        assert m.loc[original, "near_duplicate_group"] != ""
        assert m.loc[original, "near_duplicate_group"] == m.loc[copy, "near_duplicate_group"]
        assert m.loc[original, "leakage_group"] == m.loc[copy, "leakage_group"]
    assert m["near_duplicate_group"].ne("").sum() == 4 and m["near_duplicate_group"].nunique() == 3  # 2 groups and ""
    # a byte-identical copy is a duplicate, not a near-duplicate, and still one leakage group
    assert m.loc["IM-0103-0001.png", "duplicate_group"] != "" and m.loc["IM-0103-0001.png", "near_duplicate_group"] == ""
    assert m.loc["IM-0003-0001.png", "leakage_group"] == m.loc["IM-0103-0001.png", "leakage_group"]
    # every other picture is its own patient and its own group
    assert m["leakage_group"].nunique() == len(m) - 3


def test_different_patients_are_not_near_duplicates(tmp_path):
    """Synthetic patients share a layout, a texture and a brightness range; none is another's near-duplicate."""
    for k in range(40):
        _xray(tmp_path / "plain" / ("a" if k % 2 else "b") / f"synpat{k:04d}_1.png", seed=k)
    scan = data.scan_source("folder", tmp_path / "plain", progress=False)
    assert scan.near_duplicates.empty and scan.conflicts.empty
    assert (scan.manifest["near_duplicate_group"] == "").all()
    assert scan.manifest["leakage_group"].nunique() == 40


def test_near_duplicates_never_split_and_are_reported(copies, tmp_path):
    out = tmp_path / "out"
    for seed in range(5):  # whatever the seed, each pair stays in one split
        summary = data.build_manifest("binary", _data_section(copies, "kermany"), seed=seed, out_dir=out,
                                      progress=False)
        m = data.load_manifest("binary", out)
        near = m[m["near_duplicate_group"] != ""]
        assert near.groupby("near_duplicate_group")["split"].nunique().eq(1).all()
        assert m.groupby("leakage_group")["split"].nunique().max() == 1
    pairs = pd.read_csv(out / "near_duplicates.csv", keep_default_na=False)
    assert list(pairs.columns) == data.NEAR_DUPLICATE_COLUMNS
    assert sorted(zip(pairs["path_a"].map(lambda p: Path(p).name), pairs["path_b"].map(lambda p: Path(p).name))) == [
        ("IM-0001-0001.png", "IM-0101-0001.jpeg"), ("IM-0002-0001.png", "IM-0102-0001.png")]
    assert (pairs["split_a"] == pairs["split_b"]).all() and pairs["split_a"].isin(data.SPLITS).all()
    assert (pairs["label_a"] == "NORMAL").all() and (pairs["mean_difference"] <= data.NEAR_IDENTICAL_MEAN_DIFFERENCE).all()
    assert pairs["hash_bits"].le(data.NEAR_IDENTICAL_HASH_BITS).all()
    assert summary["near_duplicate_pairs"] == 2 and summary["near_duplicate_images"] == 4
    assert summary["near_duplicate_pairs_cross_patient"] == 2  # the copies were filed under other patient numbers
    assert summary["leakage_near_duplicates"] == 0


def test_the_same_picture_under_two_labels_is_still_a_conflict_not_a_near_duplicate(copies):
    with Image.open(copies / "train" / "NORMAL" / "IM-0004-0001.png") as img:
        img.save(copies / "train" / "PNEUMONIA" / "person50_virus_1.jpeg", quality=70)
    with pytest.warns(UserWarning, match="1 label conflict"):
        scan = data.scan_source("kermany", copies, progress=False)
    assert set(scan.conflicts["path"].map(lambda p: Path(p).name)) == {"IM-0004-0001.png", "person50_virus_1.jpeg"}
    assert "near-identical" in " ".join(scan.conflicts["evidence"])
    assert len(scan.near_duplicates) == 2  # the two same-label pairs of the fixture, not the conflict


def test_near_identical_pairs_is_the_one_pair_search():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (64, 64)).astype(np.uint8)
    thumbnails = [base, np.clip(base.astype(int) + 1, 0, 255).astype(np.uint8), 255 - base]
    phashes = [np.zeros(64, bool), np.r_[np.ones(3, bool), np.zeros(61, bool)], np.ones(64, bool)]
    pairs = data.near_identical_pairs(phashes, thumbnails)
    assert list(pairs.columns) == data.PAIR_COLUMNS
    assert pairs[["a", "b", "hash_bits"]].values.tolist() == [[0, 1, 3]]
    assert pairs["mean_difference"].iat[0] < 1.01
    assert data.near_identical_pairs(phashes, thumbnails, max_hash_bits=2).empty
    assert data.near_identical_pairs(phashes[:1], thumbnails[:1]).empty


def test_leakage_group_column_is_stable_and_matches_leakage_groups(copies):
    first = data.scan_source("kermany", copies, progress=False).manifest
    again = data.scan_source("kermany", copies, progress=False).manifest
    assert first["leakage_group"].tolist() == again["leakage_group"].tolist()
    assert first["leakage_group"].iat[0] == "g00001" and first["leakage_group"].str.fullmatch(r"g\d{5}").all()
    ids = data.leakage_groups(first)
    # one partition: rows share a name exactly when they share an integer group
    pairs = {(name, group) for name, group in zip(first["leakage_group"], ids)}
    assert len(pairs) == len(set(ids)) == first["leakage_group"].nunique()
    # a patient with two images is one group
    person = first[first["patient_id"] == "IM-0001"]
    assert first.loc[first["leakage_group"].isin(person["leakage_group"]), "patient_id"].nunique() == 2  # + its copy


def test_leakage_groups_join_near_duplicates_and_ignore_empty_keys():
    frame = pd.DataFrame({"patient_id": ["a", "b", "c", "d"], "sha256": ["1", "2", "3", "4"],
                          "near_duplicate_group": ["near0001", "", "near0001", ""]})
    ids = data.leakage_groups(frame)
    assert ids[0] == ids[2] and len(set(ids)) == 3
    assert data.leakage_group_names(frame) == ["g00001", "g00002", "g00001", "g00003"]
    assert len(set(data.leakage_groups(frame.drop(columns="near_duplicate_group")))) == 4


def test_leakage_check_catches_near_duplicates_in_two_splits():
    frame = pd.DataFrame({"path": list("abc"), "patient_id": ["a", "b", "c"], "sha256": ["1", "2", "3"],
                          "near_duplicate_group": ["near0001", "near0001", ""], "split": ["train", "test", "val"]})
    report = data.check_leakage(frame)
    assert report["near_duplicates_in_several_splits"] == 1 and report["near_duplicates_examples"] == ["near0001"]
    with pytest.raises(ValueError, match=r"1 near-duplicate group\(s\) \['near0001'\]"):
        data.assert_no_leakage(frame)
    assert data.check_leakage(frame.drop(columns="near_duplicate_group"))["near_duplicates_in_several_splits"] == 0


def _covid_names(root: Path, n: int = 8) -> Path:
    """COVID-19 Radiography names (``COVID-1.png``): no patient id in them."""
    for k, label in enumerate(data.COVID_CLASSES):
        for i in range(1, n + 1):
            _xray(root / "COVID-19_Radiography_Dataset" / label / "images" / f"{label}-{i}.png", seed=1000 * k + i,
                  size=96)
    return root


def test_file_name_ids_make_an_image_level_split_and_say_so(tmp_path):
    root = _covid_names(tmp_path / "covid")
    with pytest.warns(UserWarning, match=r"no patient ids in the file names of 32 of 32 images \(e\.g\. COVID-1\.png\): "
                                         r"splits are image-level for them.*test figures may be optimistic"):
        summary = data.build_manifest("multiclass", _data_section(root, "covid_radiography", "multiclass"), seed=0,
                                      out_dir=tmp_path / "out", progress=False)
    assert summary["patient_id_source"] == "file name" and summary["split_level"] == "image"
    assert summary["patient_ids_parsed"] == 0 and summary["patient_ids_from_file_names"] == 32
    assert summary["patient_id_caveat"] is None
    assert any(w.startswith("no patient ids in the file names of 32 of 32 images") for w in summary["warnings"])
    assert data.load_summary("multiclass", tmp_path / "out")["split_level"] == "image"


def test_some_ids_from_file_names_make_a_mixed_split(tmp_path):
    root = tmp_path / "plain"
    for k in range(10):
        _xray(root / "NORMAL" / f"IM-{k:04d}-0001.png", seed=k, size=96)
        _xray(root / "PNEUMONIA" / (f"person{k}_virus_1.png" if k < 7 else f"scan{k}.png"), seed=50 + k, size=96)
    with pytest.warns(UserWarning, match=r"no patient ids in the file names of 3 of 20 images \(e\.g\. scan7\.png\)"):
        summary = data.build_manifest("binary", _data_section(root, "folder"), seed=0, out_dir=tmp_path / "out",
                                      progress=False)
    assert (summary["patient_id_source"], summary["split_level"]) == ("mixed", "mixed")
    assert (summary["patient_ids_parsed"], summary["patient_ids_from_file_names"]) == (17, 3)
    assert summary["patient_id_caveat"] == data.KERMANY_ID_CAVEAT  # Kermany-style ids are read, whatever the source


def test_parsed_ids_make_a_patient_level_split_with_the_kermany_caveat(kermany_tree, tmp_path, recwarn):
    summary = data.build_manifest("binary", _data_section(kermany_tree, "kermany"), seed=1, out_dir=tmp_path / "out",
                                  progress=False)
    assert (summary["patient_id_source"], summary["split_level"]) == ("parsed", "patient")
    assert summary["patient_ids_from_file_names"] == 0 and summary["patient_ids_parsed"] == summary["images"]
    assert not [w for w in recwarn if "no patient ids" in str(w.message)]
    caveat = summary["patient_id_caveat"]
    assert "personN" in caveat and "NORMAL2-IM-NNNN" in caveat and "cannot be matched" in caveat
    # as the parser reads them: NORMAL2-IM-0003 and IM-0003 would be one patient, person and IM never
    assert data.parse_patient_id("NORMAL2-IM-0003-0001.jpeg") == data.parse_patient_id("IM-0003-0002.jpeg")


def test_synthetic_ids_have_no_kermany_caveat(tmp_path):
    for k in range(8):
        write_xray(tmp_path / "s" / "a" / f"synpat{k:04d}_1.png", value=40 + 9 * k)
        write_xray(tmp_path / "s" / "b" / f"synpat{k + 8:04d}_1.png", value=45 + 9 * k)
    fields, warning = data.patient_id_report(data.scan_source("folder", tmp_path / "s", progress=False).manifest)
    assert warning is None and fields["patient_id_caveat"] is None and fields["split_level"] == "patient"


@pytest.mark.real_data
def test_real_covid4_split_is_image_level_and_says_so(tmp_path):
    root = require_shared(config.SHARED_DIR / "data" / "covid4_224")
    with pytest.warns(UserWarning, match=r"no patient ids in the file names of 4249 of 4249 images"):
        summary = data.build_manifest("multiclass", _data_section(root, "covid_radiography", "multiclass"), seed=42,
                                      out_dir=tmp_path, progress=False)
    assert (summary["patient_id_source"], summary["split_level"]) == ("file name", "image")
    assert summary["patient_id_caveat"] is None
    # measured: no re-encoded copies; the re-framed copies this set has are beyond the thumbnail rule (module doc)
    assert summary["near_duplicate_pairs"] == 0 and summary["label_conflicts"] == 0
