"""The headline summary DVC declares as metrics: its numbers, its choice of run, and a readable `dvc metrics show`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import yaml

from xraylib import config, headline


def _write(folder, name, data):
    (folder / f"{name}.json").write_text(json.dumps(data))


@pytest.fixture
def metrics_dir(tmp_path):
    chosen = {"threshold": 0.31, "sensitivity": 0.9, "sensitivity_ci": [0.85, 0.94], "specificity": 0.8,
              "specificity_ci": [0.7, 0.88]}
    _write(tmp_path, "binary", {"test": {"roc_auc": 0.95, "roc_auc_ci": [0.9, 0.98], "youden_val": chosen}})
    _write(tmp_path, "multiclass", {"runs": {
        "a": {"best_val_loss": 0.40, "test": {"accuracy": 0.99, "macro_f1": 0.99}},  # best on test, not on val
        "b": {"best_val_loss": 0.30, "test": {"accuracy": 0.80, "accuracy_ci": [0.7, 0.86], "macro_f1": 0.75}}}})
    _write(tmp_path, "gradcam", {"shortcut_findings": ["x", "y"]})
    _write(tmp_path, "data_binary", {"synthetic": False})
    _write(tmp_path, "data_multiclass", {"synthetic": True})
    return tmp_path


def test_headline_numbers_choose_the_multiclass_run_on_validation(metrics_dir):
    summary = headline.headline_metrics(metrics_dir)
    assert summary == {"auc": 0.95, "auc_lo": 0.9, "auc_hi": 0.98, "sens": 0.9, "spec": 0.8, "thr": 0.31,
                       "run": "b", "f1": 0.75, "f1_lo": None, "f1_hi": None,  # a missing interval stays missing
                       "acc": 0.80, "shortcuts": 2, "synthetic": 1}
    path = headline.write_summary(metrics_dir)
    assert json.loads(path.read_text()) == summary


def test_missing_metrics_name_the_file_and_the_fix(metrics_dir):
    (metrics_dir / "gradcam.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"gradcam\.json not found; run `dvc repro`"):
        headline.headline_metrics(metrics_dir)


def test_dvc_declares_only_the_summary_as_metrics_and_every_plot_is_titled_and_produced():
    spec = yaml.safe_load((config.PROJECT_ROOT / "dvc.yaml").read_text())
    declared = [next(iter(m)) if isinstance(m, dict) else m
                for stage in spec["stages"].values() for m in stage.get("metrics", [])]
    assert declared == ["reports/metrics/summary.json"]
    assert not [name for name, stage in spec["stages"].items() if "plots" in stage], "plots are top-level views"
    produced = {next(iter(o)) if isinstance(o, dict) else o for stage in spec["stages"].values()
                for o in stage.get("outs", [])}
    for entry in spec["plots"]:
        (plot_id, view), = entry.items()
        assert {"title", "x_label", "y_label", "template"} <= set(view), plot_id
        files = [plot_id] if "/" in plot_id else [f for axis in ("x", "y") if isinstance(view[axis], dict)
                                                  for f in view[axis]]
        assert files and all(f in produced or f.rsplit("/", 1)[0] in produced for f in files), (plot_id, files)
    templates = {next(iter(e.values()))["template"] for e in spec["plots"]}
    assert "confusion" in templates


@pytest.mark.skipif(shutil.which("git") is None, reason="dvc needs git")
def test_dvc_metrics_show_fits_in_200_columns():
    if not (config.METRICS_DIR / "summary.json").is_file():
        pytest.skip("reports/metrics/summary.json not produced yet (dvc repro)")
    shown = subprocess.run([sys.executable, "-m", "dvc", "metrics", "show"], capture_output=True, text=True,
                           cwd=config.PROJECT_ROOT, check=True, env={**__import__("os").environ, "COLUMNS": "200"})
    lines = shown.stdout.splitlines()
    assert lines and "auc_lo" in shown.stdout
    assert max(len(line) for line in lines) <= 200, shown.stdout
