"""The study's headline numbers: one small ``reports/metrics/summary.json`` for ``dvc metrics show``.

The detailed JSONs (``binary.json``, ``multiclass.json``, ``gradcam.json``,
``data_*.json``) stay outputs of their stages; DVC declares only this summary as
metrics, so ``dvc metrics show``, ``dvc metrics diff`` and ``dvc exp show`` print
about ten columns instead of hundreds. Keys are short on purpose (they are the
column names):

The keys are flat so that the row stays under 200 columns; the two headline figures
carry the bounds of their 95 % patient-clustered bootstrap interval (``*_lo``, ``*_hi``),
and every other figure's interval is in the detailed JSON it comes from:

* the binary model (``binary.json``): internal test ROC-AUC ``auc`` (``auc_lo``,
  ``auc_hi``), sensitivity ``sens`` and specificity ``spec`` at the threshold ``thr``
  chosen on validation;
* the four-class study (``multiclass.json``): the run with the lowest validation loss
  (chosen on validation, never on test; ``run``), its test macro-F1 ``f1`` (``f1_lo``,
  ``f1_hi``) and accuracy ``acc``;
* ``shortcuts``: models the Grad-CAM analysis flags as looking outside the lungs;
* ``synthetic``: 1 when the numbers come from the synthetic demo data.
"""

from __future__ import annotations

import json
from pathlib import Path

from xraylib import config, outputs

SOURCES = ("binary", "multiclass", "gradcam", "data_binary", "data_multiclass")


def _read(folder: Path, name: str) -> dict:
    path = folder / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{config.relative_to_project(path)} not found; run `dvc repro` to produce it")
    return json.loads(path.read_text())


def _bounds(name: str, ci) -> dict:
    """``{name_lo, name_hi}`` of an interval (``None`` each where the report has none)."""
    low, high = ci if ci else (None, None)
    return {f"{name}_lo": low, f"{name}_hi": high}


def headline_metrics(metrics_dir: str | Path | None = None) -> dict:
    """The summary (module docstring) from the detailed metrics in ``metrics_dir`` (default ``reports/metrics``)."""
    folder = config.METRICS_DIR if metrics_dir is None else config.resolve(metrics_dir)
    binary, multiclass, gradcam, *data = (_read(folder, name) for name in SOURCES)
    test, chosen = binary["test"], binary["test"]["youden_val"]
    runs = multiclass["runs"]
    best = min(runs, key=lambda name: runs[name]["best_val_loss"])
    best_test = runs[best]["test"]
    return {
        "auc": test["roc_auc"], **_bounds("auc", test.get("roc_auc_ci")),
        "sens": chosen["sensitivity"], "spec": chosen["specificity"], "thr": chosen["threshold"],
        "run": best, "f1": best_test["macro_f1"], **_bounds("f1", best_test.get("macro_f1_ci")),
        "acc": best_test["accuracy"],
        "shortcuts": len(gradcam["shortcut_findings"]),
        "synthetic": int(any(part["synthetic"] for part in data)),
    }


def write_summary(metrics_dir: str | Path | None = None) -> Path:
    """Write ``summary.json`` beside the detailed metrics it summarises (4 digits: headline precision)."""
    folder = config.METRICS_DIR if metrics_dir is None else config.resolve(metrics_dir)
    return outputs.write_json(headline_metrics(folder), folder / "summary.json", digits=4)
