"""Near-duplicates against the other configured sources: found by the within-source rule, reported, never acted on."""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from tests.unit.test_near_duplicates import _data_section, _xray
from xraylib import config, data, schema


N1, N2, P3 = "synpat0001_1.png", "synpat0002_1.png", "synpat0103_1.png"  # the pictures "other" also has


@pytest.fixture
def two_sources(tmp_path) -> tuple[Path, Path]:
    """A class-per-folder source ``own`` (10 NORMAL, 10 PNEUMONIA patients) and another tree ``other``.

    ``other`` holds three of ``own``'s pictures on another processing path (N1 as JPEG quality 70, N2 1.5x
    larger, P3 resized to 0.75x), nested two levels deep under its own class names, 6 unrelated
    pictures, a copy of P4 in a mask folder (not an image of the set) and a document.
    """
    own, other = tmp_path / "own", tmp_path / "other"
    for k in range(10):
        _xray(own / "NORMAL" / f"synpat{k:04d}_1.png", seed=k)
        _xray(own / "PNEUMONIA" / f"synpat{100 + k:04d}_1.png", seed=100 + k)
    with Image.open(own / "NORMAL" / N1) as img:
        (other / "train" / "healthy").mkdir(parents=True)
        img.save(other / "train" / "healthy" / "a.jpeg", quality=70)
    with Image.open(own / "NORMAL" / N2) as img:
        img.resize((240, 240), Image.LANCZOS).save(other / "train" / "healthy" / "b.png")
    with Image.open(own / "PNEUMONIA" / P3) as img:
        (other / "train" / "sick").mkdir(parents=True)
        img.resize((120, 120), Image.LANCZOS).save(other / "train" / "sick" / "c.png")
    for k in range(6):
        _xray(other / "train" / ("healthy" if k % 2 else "sick") / f"u{k}.png", seed=500 + k)
    with Image.open(own / "PNEUMONIA" / "synpat0104_1.png") as img:
        (other / "lung_masks" / "sick").mkdir(parents=True)
        img.save(other / "lung_masks" / "sick" / "p4.png")
    (other / "README.md").write_text("not an image")
    return own, other


def _section(own: Path, *, compare_with: list[str] = (), external: list[dict] = ()) -> dict:
    section = _data_section(own, "folder")
    section["binary"] = {**section["binary"], "compare_with": list(compare_with)}
    section["external"] = list(external)
    return section


def _build(section: dict, out: Path, task: str = "binary") -> dict:
    """``build_manifest`` with its warnings silenced (they are checked in the summary's ``warnings``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return data.build_manifest(task, section, seed=0, out_dir=out, progress=False)


def _name(path: str) -> str:
    return Path(path).name


def test_fingerprint_folder_reads_any_tree_of_images(two_sources):
    _, other = two_sources
    found = data.fingerprint_folder(other, progress=False)
    assert sorted(found.files["path"]) == sorted(
        ["train/healthy/a.jpeg", "train/healthy/b.png", "train/sick/c.png"]
        + [f"train/{'healthy' if k % 2 else 'sick'}/u{k}.png" for k in range(6)])  # no mask folder, no document
    assert set(found.files["label"]) == {"healthy", "sick"}
    assert found.phashes.shape == (9, 64) and found.thumbnails.shape == (9, 64, 64) and found.unreadable == 0
    (other.parent / "empty").mkdir()
    empty = data.fingerprint_folder(other.parent / "empty", progress=False)
    assert empty.files.empty and empty.phashes.shape == (0, 64) and empty.thumbnails.shape == (0, 64, 64)


def test_cross_source_pairs_are_the_within_source_rule_between_two_sets(two_sources):
    own, other = two_sources
    scan = data.scan_source("folder", own, progress=False)
    found = data.fingerprint_folder(other, progress=False)
    pairs = data.cross_source_pairs(scan.phashes, scan.thumbnails, found.phashes, found.thumbnails)
    assert list(pairs.columns) == data.PAIR_COLUMNS
    matched = sorted((_name(scan.manifest["path"].iat[a]), found.files["path"].iat[b])
                     for a, b in zip(pairs["a"], pairs["b"]))
    assert matched == [(N1, "train/healthy/a.jpeg"), (N2, "train/healthy/b.png"),
                       (P3, "train/sick/c.png")]
    assert pairs["hash_bits"].le(data.NEAR_IDENTICAL_HASH_BITS).all()
    assert pairs["mean_difference"].lt(1.0).all()  # re-encoded and rescaled copies: < 1 grey level
    # the scan's fingerprints are the manifest's rows; within one set the rule finds nothing here
    assert len(scan.phashes) == len(scan.thumbnails) == len(scan.manifest) == 20
    assert data.near_identical_pairs(scan.phashes, scan.thumbnails).empty
    assert data.cross_source_pairs(scan.phashes, scan.thumbnails, found.phashes[:0], found.thumbnails[:0]).empty


def test_prepare_reports_near_duplicates_in_a_compare_with_folder(two_sources, tmp_path):
    own, other = two_sources
    out = tmp_path / "out"
    summary = _build(_section(own, compare_with=[str(other)]), out)
    table = pd.read_csv(out / "cross_source_duplicates.csv", keep_default_na=False)
    assert list(table.columns) == data.CROSS_SOURCE_COLUMNS
    assert [(_name(p), label, o, ol) for p, label, o, ol in
            table[["path", "label", "other_path", "other_label"]].itertuples(index=False)] == [
        (N1, "NORMAL", "train/healthy/a.jpeg", "healthy"), (N2, "NORMAL", "train/healthy/b.png", "healthy"),
        (P3, "PNEUMONIA", "train/sick/c.png", "sick")]
    assert (table["other_source"] == str(other)).all()
    manifest = data.load_manifest("binary", out)
    assert table["split"].tolist() == [manifest.set_index("path").at[p, "split"] for p in table["path"]]
    assert summary["cross_source_duplicate_images"] == 3
    assert summary["cross_source_duplicates"] == {str(other): {
        "configured_as": "data.binary.compare_with", "compared_images": 9, "pairs": 3, "images": 3,
        "by_label": {"NORMAL": 2, "PNEUMONIA": 1}}}
    assert summary["warnings"] == [
        f"2 of 10 NORMAL and 1 of 10 PNEUMONIA images are near-duplicates of images in '{other}' "
        "(data.binary.compare_with; 3 pairs, see cross_source_duplicates.csv): do not train on one and evaluate on "
        "the other"]
    # only reported: no near-duplicate group, no leakage group and no split is made from other data sets
    assert (manifest["near_duplicate_group"] == "").all() and manifest["leakage_group"].nunique() == 20
    assert manifest.equals(data.load_manifest("binary", _build_plain(own, tmp_path / "plain")))
    assert data.load_summary("binary", out)["cross_source_duplicates"] == summary["cross_source_duplicates"]


def _build_plain(own: Path, out: Path) -> Path:
    _build(_section(own), out)
    return out


def test_other_task_root_and_external_roots_are_compared(two_sources, tmp_path):
    own, other = two_sources
    section = _section(own, external=[{"name": "site_b", "root": str(other / "train" / "sick"),
                                       "site_calibration": "none"}])
    section["multiclass"] = {"source": "folder", "root": str(other), "compare_with": []}
    summary = _build(section, tmp_path / "out")
    report = summary["cross_source_duplicates"]
    assert list(report) == [str(other), str(other / "train" / "sick")]
    assert report[str(other)]["configured_as"] == "data.multiclass.root" and report[str(other)]["pairs"] == 3
    assert report[str(other / "train" / "sick")] == {"configured_as": "data.external site_b", "compared_images": 4,
                                                     "pairs": 1, "images": 1, "by_label": {"PNEUMONIA": 1}}
    assert summary["cross_source_duplicate_images"] == 3  # P3 matches in both sources: one image
    assert len([w for w in summary["warnings"] if "near-duplicates of images in" in w]) == 2
    # and the multiclass task, prepared from that folder, is compared with data.binary.root
    back, notes = data.comparison_sources("multiclass", section)
    assert [(s["name"], s["configured_as"]) for s in back] == [(str(own), "data.binary.root")]
    assert notes == [f"data.external site_b: '{other / 'train' / 'sick'}' overlaps this task's data root "
                     f"'{other}'; not compared for near-duplicates"]  # a set inside the data root


def test_a_missing_compare_with_folder_is_one_warning(two_sources, tmp_path):
    own, _ = two_sources
    missing = tmp_path / "nowhere"
    summary = _build(_section(own, compare_with=[str(missing)]), tmp_path / "out")
    assert summary["warnings"] == [f"data.binary.compare_with: '{missing}' is not a folder; not compared for "
                                   "near-duplicates"]
    assert summary["cross_source_duplicates"] == {} and summary["cross_source_duplicate_images"] == 0


def test_no_other_source_gives_an_empty_report(two_sources, tmp_path):
    own, _ = two_sources
    out = tmp_path / "out"
    summary = _build(_section(own), out)  # the other task at the same folder: not compared, no warning
    assert summary["cross_source_duplicates"] == {} and summary["cross_source_duplicate_images"] == 0
    assert summary["warnings"] == []
    table = pd.read_csv(out / "cross_source_duplicates.csv")
    assert table.empty and list(table.columns) == data.CROSS_SOURCE_COLUMNS


def test_a_folder_overlapping_the_data_root_is_not_compared(two_sources, tmp_path):
    own, other = two_sources
    section = _section(own, compare_with=[str(own / "NORMAL"), str(other), str(other) + "/"])
    sources, notes = data.comparison_sources("binary", section)
    assert [s["name"] for s in sources] == [str(other)]  # the repeat of the same folder is compared once
    assert notes == [f"data.binary.compare_with: '{own / 'NORMAL'}' overlaps this task's data root "
                     f"'{config.relative_to_project(own)}'; not compared for near-duplicates"]
    section["multiclass"] = {"source": "folder", "root": str(tmp_path), "compare_with": []}  # holds own: skipped
    assert [s["configured_as"] for s in data.comparison_sources("binary", section)[0]] == [
        "data.binary.compare_with"]


def test_compare_with_is_a_required_list_of_paths():
    params = config.load_params(validate=False)
    assert params["data"]["binary"]["compare_with"] == [] and params["data"]["multiclass"]["compare_with"] == []
    for value, message in (("x", "expected a list of folder paths"), ([""], "expected a non-empty path string"),
                           (None, "missing")):
        binary = {k: v for k, v in params["data"]["binary"].items() if k != "compare_with" or value is not None}
        if value is not None:
            binary["compare_with"] = value
        with pytest.raises(schema.ParamsError, match=rf"data\.binary\.compare_with[.\[\]0-9]*: {message}"):
            schema.validate_params({**params, "data": {**params["data"], "binary": binary}})
