"""Evaluating the multi-class PyTorch study on its test split (notebook 04).

Every figure comes from :mod:`xraylib.metrics`: the confusion matrix has true
labels as rows; per class, precision = TP / (TP + FP) with FP = column sum
minus diagonal, recall (sensitivity) = TP / (TP + FN) with FN = row sum minus
diagonal, specificity = TN / (TN + FP). (The original notebook swapped FP and
FN and printed precision under the name recall.)

A ``best.pt`` checkpoint carries the architecture, class names, image size and
the resize/equalisation settings, so :func:`xraylib.torch_model.load_checkpoint`
rebuilds the model. Using a checkpoint on new images (``xraylib evaluate`` /
``xraylib predict``) is :mod:`xraylib.inference`, the same for both frameworks;
tables and figures of a report are :mod:`xraylib.evaluation`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from xraylib import calibration, config, evaluation, metrics, outputs, statistics
from xraylib.torch_data import ManifestDataset, make_generator, make_loader
from xraylib.torch_model import load_checkpoint


def predict(model: nn.Module, loader, device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities for every batch of ``loader``; returns ``(y_true, y_prob)``."""
    device = torch.device(device)
    model.eval()
    labels, probs = [], []
    with torch.no_grad():
        for x, y in loader:
            logits = model(x.to(device))
            probs.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
            labels.append(np.asarray(y))
    return np.concatenate(labels).astype(int), np.concatenate(probs).astype(np.float64)


def _device_for_eval() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def predictions_frame(dataset: ManifestDataset, y_true: np.ndarray, y_prob: np.ndarray) -> pd.DataFrame:
    """One row per image: ``path``, ``label`` (true), ``predicted`` and ``prob_<class>`` (the predict/evaluate schema)."""
    names = dataset.classes
    frame = pd.DataFrame({
        "path": [config.relative_to_project(p) for p, _ in dataset.samples],
        "label": [names[i] for i in y_true],
        "predicted": [names[i] for i in y_prob.argmax(axis=1)],
    })
    for i, name in enumerate(names):
        frame[f"prob_{evaluation.safe_column(name)}"] = y_prob[:, i]
    return frame


def split_probabilities(checkpoint: str | Path, manifest: pd.DataFrame, split: str = "test", *, batch_size: int = 64,
                        num_workers: int = 0, seed: int = 0) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, dict]:
    """``(y_true, y_prob, predictions, meta)`` of a checkpoint on one manifest split (:func:`predictions_frame`)."""
    device = _device_for_eval()
    model, meta = load_checkpoint(checkpoint, device)
    dataset = ManifestDataset(manifest, split, meta["image_size"], meta["resize"], meta["equalize"],
                              class_names=meta["class_names"], train=False)
    loader = make_loader(dataset, batch_size, num_workers=num_workers, generator=make_generator(seed))
    y_true, y_prob = predict(model, loader, device)
    return y_true, y_prob, predictions_frame(dataset, y_true, y_prob), meta


def split_groups(manifest: pd.DataFrame, paths) -> np.ndarray:
    """The clustered bootstrap's group (:func:`xraylib.evaluation.bootstrap_groups`) of each path, in order."""
    frame = manifest.assign(path=[config.relative_to_project(config.resolve(p)) for p in manifest["path"]])
    groups = dict(zip(frame["path"], evaluation.bootstrap_groups(frame)))
    return np.array([groups.get(p, p) for p in paths])


def evaluate_split(checkpoint: str | Path, manifest: pd.DataFrame, split: str = "test", *, batch_size: int = 64,
                   num_workers: int = 0, n_resamples: int = 1000, seed: int = 0,
                   recalibration: dict | None = None) -> tuple[dict, pd.DataFrame]:
    """Metrics of a checkpoint on one manifest split, with patient-clustered intervals.

    Args:
        recalibration: a temperature fitted on validation (:func:`fit_recalibration`); the
            report then has ``calibration`` (before/after, :func:`xraylib.metrics.multiclass_calibration_report`).

    Returns:
        ``(report, predictions)``: :func:`xraylib.metrics.multiclass_report` (with
        ``epoch``, the checkpoint's epoch) and :func:`predictions_frame`.
    """
    y_true, y_prob, predictions, meta = split_probabilities(checkpoint, manifest, split, batch_size=batch_size,
                                                            num_workers=num_workers, seed=seed)
    groups = split_groups(manifest, predictions["path"])
    report = metrics.multiclass_report(y_true, y_prob, meta["class_names"], n_resamples=n_resamples, seed=seed,
                                       groups=groups)
    if recalibration is not None:
        report["calibration"] = metrics.multiclass_calibration_report(
            y_true, y_prob, calibration.apply_multiclass(recalibration, y_prob), recalibration,
            n_resamples=n_resamples, seed=seed, groups=groups)
    report["epoch"] = int(meta.get("epoch", 0))
    return report, predictions


def fit_recalibration(checkpoint: str | Path, manifest: pd.DataFrame, *, batch_size: int = 64, seed: int = 0) -> dict:
    """Temperature scaling (Guo et al. 2017) fitted on the validation split and written beside the checkpoint.

    Writes ``calibration.json`` in the checkpoint's folder (the model's recalibration travels
    with its weights) and returns the parameters.
    """
    y_true, y_prob, _, _ = split_probabilities(checkpoint, manifest, "val", batch_size=batch_size, seed=seed)
    params = {**calibration.fit_temperature(y_true, y_prob), "fitted_on": "validation split",
              "images": int(len(y_true))}
    outputs.write_json(params, Path(checkpoint).parent / "calibration.json")
    return params


def summary_table(entries: dict[str, dict]) -> pd.DataFrame:
    """One row per run: architecture, scheduler, best epoch, best validation loss and test figures with intervals.

    Args:
        entries: ``{run: entry}``, each :func:`run_entry` (the runs of ``multiclass.json``).
    """
    rows = []
    for name, entry in entries.items():
        test = entry["test"]
        row = {"run": name, "arch": entry["arch"], "step_lr": entry["step_lr"], "epochs": entry["epochs"],
               "best_epoch": entry["best_epoch"], "best_val_loss": round(float(entry["best_val_loss"]), 4)}
        for key in ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc_ovr"):
            row[f"test_{key}"] = evaluation.format_ci(test.get(key), test.get(f"{key}_ci"))
        rows.append(row)
    return pd.DataFrame(rows)


TEST_KEYS = ("n", "accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "macro_auc_ovr", "ece", "brier")


def run_entry(result, report: dict, seeds: dict | None = None) -> dict:
    """One run's entry in ``multiclass.json``: what training chose and the test figures, each with its ``_ci``.

    Args:
        result: the run's :class:`xraylib.torch_train.TrainResult`.
        report: :func:`evaluate_split` on the test split.
        seeds: the run's block of :func:`seed_summary` when it was trained with further seeds.
    """
    test = {k: report[k] for k in TEST_KEYS if k in report}
    test.update({f"{k}_ci": report[f"{k}_ci"] for k in TEST_KEYS if f"{k}_ci" in report})
    test.update({k: report[k] for k in ("per_class", "confusion_matrix", "bootstrap", "calibration") if k in report})
    entry = {
        "arch": result.config.arch,
        "step_lr": bool(result.config.step_lr),
        "epochs": int(result.history["epoch"].max()),
        "best_epoch": int(result.best_epoch),
        "best_val_loss": float(result.best_val_loss),
        "final_val_accuracy": float(result.history["val_accuracy"].iloc[-1]),
        "test": test,
    }
    if seeds:
        entry["seeds"] = seeds
    return entry


def study_metrics(entries: dict[str, dict], class_names: Sequence[str], *, synthetic: bool | None = None,
                  comparisons: pd.DataFrame | None = None) -> dict:
    """The metrics document of the study (``reports/metrics/multiclass.json``).

    Args:
        entries: ``{run: entry}`` (:func:`run_entry`), in the order of ``train_multiclass.runs``.
        comparisons: the paired comparisons between runs (:func:`xraylib.evaluation.compare_runs`).
    """
    document = {"classes": list(class_names), "runs": dict(entries)}
    if comparisons is not None and len(comparisons):
        document["comparisons"] = comparisons.to_dict(orient="records")
    if synthetic is not None:
        document = {"synthetic": bool(synthetic), **document}
    return document


def seed_summary(reports_by_seed: dict[str, dict[int, dict]]) -> dict:
    """Per run: test accuracy and macro-F1 of each training seed with their mean and standard deviation."""
    return {run: {key: statistics.mean_sd({str(seed): report[key] for seed, report in by_seed.items()})
                  for key in ("accuracy", "macro_f1")}
            for run, by_seed in reports_by_seed.items()}
