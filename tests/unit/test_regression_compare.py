"""The regression comparison itself: tolerances, NaN handling, missing figures, exact files."""

from __future__ import annotations

import json

import pytest

from xraylib import regression


def test_within_and_beyond_tolerance():
    tol = {"binary.*": 0.03, "*": 0.05}
    ref = {"binary.test.roc_auc": 0.90, "multiclass.r.test.accuracy": 0.80}
    assert regression.compare({"binary.test.roc_auc": 0.93, "multiclass.r.test.accuracy": 0.75}, ref, tol) == []
    problems = regression.compare({"binary.test.roc_auc": 0.8699, "multiclass.r.test.accuracy": 0.8501}, ref, tol)
    assert len(problems) == 2
    assert problems[0].startswith("binary.test.roc_auc: 0.8699 vs reference 0.9000 (difference -0.0301")
    assert "tolerance 0.050" in problems[1]


def test_first_matching_pattern_wins_and_unmatched_names_are_errors():
    tol = {"gradcam.*.lung_energy": 0.2, "gradcam.*": 0.1}
    assert regression.tolerance_for("gradcam.binary.lung_energy", tol) == 0.2
    assert regression.tolerance_for("gradcam.binary.pointing_game", tol) == 0.1
    with pytest.raises(KeyError, match="no tolerance pattern matches 'binary.test.roc_auc'"):
        regression.tolerance_for("binary.test.roc_auc", tol)


def test_missing_figures_and_nan_mismatch_are_reported():
    tol = {"*": 0.1}
    problems = regression.compare({"a": None, "b": 0.5}, {"a": 0.4, "c": 0.1}, tol)
    assert problems == ["a: None vs reference 0.4", "b: written by the run (0.5) but not in the reference; update "
                        "the reference if the new figure is intended", "c: in the reference (0.1) but not written "
                        "by the run"]
    assert regression.compare({"a": float("nan")}, {"a": None}, tol) == []  # both undefined: agree


def test_exact_comparison_names_the_first_differing_key():
    run = {"data_binary": {"images": 388, "per_split": {"train": 246, "val": 41}}}
    ref = {"data_binary": {"images": 388, "per_split": {"train": 246, "val": 40}}}
    assert regression.compare_exact(run, ref) == ["data_binary.json: per_split.val: 41 vs reference 40"]
    assert regression.compare_exact(ref, ref) == []


def test_null_tolerance_reports_without_comparing():
    tol = {"multiclass.resnet18.*": None, "*": 0.02}
    assert regression.compare({"multiclass.resnet18.test.accuracy": 0.6, "b": 0.5},
                              {"multiclass.resnet18.test.accuracy": 0.9, "b": 0.5}, tol) == []
    assert regression.compare({"b": 0.53}, {"b": 0.5}, tol) == ["b: 0.5300 vs reference 0.5000 (difference +0.0300, "
                                                                 "tolerance 0.020)"]


def test_tolerance_file_is_validated(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("tolerances: {'*': -0.1}\n")
    with pytest.raises(ValueError, match="must be a number >= 0 or null"):
        regression.load_tolerances(path)
    path.write_text("other: 1\n")
    with pytest.raises(ValueError, match="expected a mapping 'tolerances"):
        regression.load_tolerances(path)


def test_committed_reference_covers_every_headline_figure_with_a_tolerance():
    from pathlib import Path

    here = Path(__file__).resolve().parents[1] / "regression"
    reference = json.loads((here / "reference.json").read_text())
    tolerances = regression.load_tolerances(here / "tolerances.yaml")
    assert set(reference["exact"]) == set(regression.EXACT_METRICS)
    unguarded = {name for name in reference["headline"] if regression.tolerance_for(name, tolerances) is None}
    # Only the figures measured to be unstable across numeric paths go unguarded, and they are few: SqueezeNet (no
    # BatchNorm) spans 0.76-0.92 in macro-F1 across the four measured paths; its macro AUC stays guarded.
    assert unguarded <= {"multiclass.resnet18.test.accuracy", "multiclass.resnet18.test.macro_f1",
                         "multiclass.squeezenet.test.accuracy", "multiclass.squeezenet.test.macro_f1"}, unguarded
    assert len(unguarded) <= 2
    for name in set(reference["headline"]) - unguarded:  # Grad-CAM scores rest on ~15 images per model: 1/15 each
        assert regression.tolerance_for(name, tolerances) <= (0.3 if name.startswith("gradcam.") else 0.2), name
    assert reference["recorded_with"]["numerics"] == "default"


def test_copy_leaves_outputs_behind(tmp_path):
    source = tmp_path / "project"
    for rel in ("dvc.yaml", "params.yaml", "xraylib/x.py", "data/raw/a.png", "models/m.pt", "reports/metrics/b.json",
                ".cache/checkpoints/last.pt", "notebooks/01.ipynb", "reports/benchmarks/search.csv"):
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_text(rel)
    copied = regression.copy_project(source, tmp_path / "scratch")
    assert sorted(copied) == ["dvc.yaml", "notebooks/01.ipynb", "params.yaml", "reports/benchmarks/search.csv",
                              "xraylib/x.py"]  # benchmark records are committed inputs (notebook 03 reads one)
    with pytest.raises(ValueError, match="must lie outside the project"):
        regression.copy_project(source, source / "inside")
