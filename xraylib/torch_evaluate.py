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

from xraylib import config, evaluation, metrics
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


def evaluate_split(checkpoint: str | Path, manifest: pd.DataFrame, split: str = "test", *, batch_size: int = 64,
                   num_workers: int = 0, n_resamples: int = 1000, seed: int = 0) -> tuple[dict, pd.DataFrame]:
    """Metrics of a checkpoint on one manifest split.

    Returns:
        ``(report, predictions)``: :func:`xraylib.metrics.multiclass_report` (with
        ``epoch``, the checkpoint's epoch) and :func:`predictions_frame`.
    """
    device = _device_for_eval()
    model, meta = load_checkpoint(checkpoint, device)
    dataset = ManifestDataset(manifest, split, meta["image_size"], meta["resize"], meta["equalize"],
                              class_names=meta["class_names"], train=False)
    loader = make_loader(dataset, batch_size, num_workers=num_workers, generator=make_generator(seed))
    y_true, y_prob = predict(model, loader, device)
    report = metrics.multiclass_report(y_true, y_prob, meta["class_names"], n_resamples=n_resamples, seed=seed)
    report["epoch"] = int(meta.get("epoch", 0))
    return report, predictions_frame(dataset, y_true, y_prob)


def summary_table(results: dict, reports: dict) -> pd.DataFrame:
    """One row per run: architecture, scheduler, best epoch, best validation loss and test figures.

    Args:
        results: ``{run: TrainResult}`` from :func:`xraylib.torch_train.train_all`.
        reports: ``{run: report}`` from :func:`evaluate_split` on the test split.
    """
    rows = []
    for name, result in results.items():
        report = reports[name]
        low, high = report["macro_f1_ci"]
        rows.append({
            "run": name, "arch": result.config.arch, "step_lr": bool(result.config.step_lr),
            "epochs": int(result.history["epoch"].max()), "best_epoch": result.best_epoch,
            "best_val_loss": result.best_val_loss,
            "test_accuracy": report["accuracy"], "test_balanced_accuracy": report["balanced_accuracy"],
            "test_macro_f1": report["macro_f1"], "macro_f1_ci_low": low, "macro_f1_ci_high": high,
            "test_macro_auc_ovr": report.get("macro_auc_ovr", float("nan")),
        })
    return pd.DataFrame(rows)


def study_metrics(results: dict, reports: dict, class_names: Sequence[str], *, synthetic: bool | None = None) -> dict:
    """The metrics document of the study (``reports/metrics/multiclass.json``)."""
    runs = {}
    for name, result in results.items():
        report = reports[name]
        runs[name] = {
            "arch": result.config.arch,
            "step_lr": bool(result.config.step_lr),
            "epochs": int(result.history["epoch"].max()),
            "best_epoch": int(result.best_epoch),
            "best_val_loss": float(result.best_val_loss),
            "final_val_accuracy": float(result.history["val_accuracy"].iloc[-1]),
            "test": {k: report[k] for k in ("n", "accuracy", "balanced_accuracy", "macro_f1", "macro_f1_ci",
                                            "weighted_f1", "macro_auc_ovr", "ece", "per_class", "confusion_matrix")
                     if k in report},
        }
    document = {"classes": list(class_names), "runs": runs}
    if synthetic is not None:
        document = {"synthetic": bool(synthetic), **document}
    return document

