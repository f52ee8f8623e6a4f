"""Evaluating the multi-class PyTorch models: test split, external folders, predictions.

Every figure comes from :mod:`xraylib.metrics`: the confusion matrix has true
labels as rows; per class, precision = TP / (TP + FP) with FP = column sum
minus diagonal, recall (sensitivity) = TP / (TP + FN) with FN = row sum minus
diagonal, specificity = TN / (TN + FP). (The original notebook swapped FP and
FN and printed precision under the name recall.)

A ``best.pt`` checkpoint carries the architecture, class names, image size and
the resize/equalisation settings, so :func:`load_checkpoint` rebuilds the model
and :func:`evaluate_folder` / :func:`predict_files` prepare new images exactly
as in training. ``xraylib evaluate`` and ``xraylib predict`` call these two
functions for ``.pt`` files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from xraylib import config, metrics, model_files, plots
from xraylib.data import collect_images as data_collect_images
from xraylib.data import scan_source
from xraylib.images import ImageReadError, prepare
from xraylib.torch_data import ImageListDataset, ManifestDataset, build_transform, make_generator, make_loader
from xraylib.torch_model import build_model

REQUIRED_KEYS = ("arch", "class_names", "image_size", "resize", "equalize", "model_state")


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a trained model from ``best.pt`` / ``last.pt``; returns ``(model in eval mode, metadata)``.

    Raises:
        FileNotFoundError: the file does not exist.
        ModelFileError: (a ``ValueError``) the file is not a checkpoint written by :mod:`xraylib.torch_train`:
            one line saying what it is (text, truncated, a pickle of other Python objects, ...).
    """
    path = config.resolve(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} not found; train it with `xraylib notebook train_multiclass`")
    if not path.is_file():
        raise model_files.not_a_model(path, model_files.TORCH_CHECKPOINT)
    # weights_only: a pickle payload is refused, never run; a bad file gives one line (ModelFileError).
    state = model_files.torch_load(lambda: torch.load(path, map_location="cpu", weights_only=True), path,
                                   model_files.TORCH_CHECKPOINT)
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise model_files.ModelFileError(
            f"{path} is not an xraylib PyTorch checkpoint: missing {missing}; expected best.pt written by "
            "xraylib.torch_train (a bare state dict has no class names or image settings)")
    model = build_model(state["arch"], len(state["class_names"]), "none")
    try:
        model.load_state_dict(state["model_state"])
    except (RuntimeError, TypeError, AttributeError) as err:  # tensors of other shapes or names
        raise model_files.ModelFileError(
            f"'{path}' is a PyTorch checkpoint whose weights do not fit its architecture {state['arch']!r} "
            f"({model_files.one_line(err)}); expected {model_files.TORCH_CHECKPOINT}") from None
    model.to(device).eval()
    meta = {k: v for k, v in state.items() if k not in ("model_state", "optimizer_state", "scheduler_state",
                                                          "scaler_state", "rng")}
    return model, meta


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


def predictions_frame(dataset: ImageListDataset, y_true: np.ndarray, y_prob: np.ndarray) -> pd.DataFrame:
    """One row per image: path, true label, predicted label and the probability of each class."""
    names = dataset.classes
    frame = pd.DataFrame({
        "path": [config.relative_to_project(p) for p, _ in dataset.samples],
        "actual": [names[i] for i in y_true],
        "predicted": [names[i] for i in y_prob.argmax(axis=1)],
    })
    for i, name in enumerate(names):
        frame[f"prob_{name}"] = y_prob[:, i]
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


def per_class_table(report: dict) -> pd.DataFrame:
    """Per-class precision, recall (sensitivity), F1, specificity and support from a report."""
    columns = ["precision", "recall", "f1", "specificity", "support"]
    frame = pd.DataFrame(report["per_class"]).T[columns]
    frame.index.name = "class"
    return frame.astype({"support": int})


def confusion_frame(report: dict) -> pd.DataFrame:
    """The report's confusion matrix as a table: rows ``true <class>``, columns ``predicted <class>``."""
    names = report["class_names"]
    return pd.DataFrame(report["confusion_matrix"], index=pd.Index(names, name="true \\ predicted"), columns=names)


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


def write_json(data: dict, path: str | Path) -> Path:
    """Write ``data`` as JSON at full precision (NaN and infinities as ``null``)."""
    return plots.write_json(data, path)


def evaluate_folder(model_path: Path, folder: Path, out_dir: Path, batch_size: int = 32) -> dict:
    """Evaluate a checkpoint on any class-per-folder image set with the model's class names.

    The folder is read with ``scan_source("folder", folder)``: files that cannot be
    decoded are quarantined (listed in ``quarantine.csv`` and the summary) instead of
    stopping the run. Writes ``metrics.json`` (the full per-class report),
    ``predictions.csv``, ``confusion_matrix.png`` and ``quarantine.csv`` to ``out_dir``.

    Returns:
        ``{"summary": ..., "report": ..., "quarantine": [...]}``; the summary holds the
        headline numbers and per-class precision/recall/F1/specificity.

    Raises:
        ValueError: class folders that are not classes of the model.
    """
    import matplotlib.pyplot as plt

    from xraylib import plots

    model_path, folder, out_dir = config.resolve(model_path), config.resolve(folder), config.resolve(out_dir)
    device = _device_for_eval()
    model, meta = load_checkpoint(model_path, device)
    names = list(meta["class_names"])
    scan = scan_source("folder", folder, progress=False)
    unknown = sorted(set(scan.classes) - set(names))  # class folders, also those left empty
    if unknown:
        raise ValueError(f"class folders {unknown} in {folder} are not classes of the model {names}; "
                         f"expected one folder per class named like the training classes")
    index = {name: i for i, name in enumerate(names)}
    samples = [(p, index[label]) for p, label in zip(scan.manifest["path"], scan.manifest["label"])]
    dataset = ImageListDataset(samples, names, meta["image_size"], meta["resize"], meta["equalize"], train=False)
    loader = make_loader(dataset, batch_size, num_workers=0, generator=make_generator(0))
    y_true, y_prob = predict(model, loader, device)
    report = metrics.multiclass_report(y_true, y_prob, names, n_resamples=1000, seed=0)

    out_dir.mkdir(parents=True, exist_ok=True)
    predictions_frame(dataset, y_true, y_prob).to_csv(out_dir / "predictions.csv", index=False, float_format="%.6g")
    scan.quarantine.to_csv(out_dir / "quarantine.csv", index=False)
    fig = plots.plot_confusion_matrix(report["confusion_matrix"], names, title=f"{model_path.parent.name}: {folder.name}")
    fig.savefig(out_dir / "confusion_matrix.png", dpi=plots.DPI, bbox_inches="tight")
    plt.close(fig)
    summary = {
        "model": config.relative_to_project(model_path),
        "arch": meta["arch"],
        "data": config.relative_to_project(folder),
        "images": int(report["n"]),
        "quarantined": int(len(scan.quarantine)),
        **{k: report[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "macro_f1_ci") if k in report},
        "per_class": per_class_table(report).to_dict(orient="index"),
        "confusion_matrix": report["confusion_matrix"],
        "class_names": names,
    }
    result = {"summary": summary, "report": report, "quarantine": scan.quarantine.to_dict(orient="records"),
              "warnings": list(scan.warnings)}
    write_json(result, out_dir / "metrics.json")
    return plots.to_json_safe(result, digits=None)


def collect_images(inputs: Sequence[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Expand files and folders (recursively) into image files; returns ``(files, skipped)``.

    The rules of every reader in xraylib (:func:`xraylib.data.collect_images`): hidden
    entries ignored, links to folders not followed, non-image files in folders and
    missing paths skipped with a reason.
    """
    return data_collect_images(inputs)


def predict_files(model_path: Path, inputs: list[Path], output_csv: Path, cam_dir: Path | None = None) -> dict:
    """Class probabilities for image files and folders, written to a CSV.

    Unreadable files are reported and skipped. The CSV has ``path``, ``predicted``,
    ``probability`` (of the predicted class) and ``prob_<class>`` per class. With
    ``cam_dir``, Grad-CAM overlays are written by
    ``xraylib.torch_gradcam.save_overlays(model, arch, items, cam_dir)``; each item
    is a dict with ``path``, ``image`` (prepared uint8 HxW), ``tensor`` (normalised
    3xHxW input), ``predicted`` (class index), ``label`` (class name), ``probability``
    and ``class_names``.

    Returns:
        ``{"predicted": number of images predicted, "skipped": [(path, reason), ...]}``.
    """
    device = _device_for_eval()
    model, meta = load_checkpoint(model_path, device)
    names = list(meta["class_names"])
    files, skipped = collect_images(inputs)
    transform = build_transform(train=False)
    images, kept = [], []
    for path in files:
        try:
            images.append(prepare(path, meta["image_size"], meta["resize"], meta["equalize"]))
            kept.append(path)
        except (ImageReadError, FileNotFoundError) as err:
            skipped.append((str(path), f"unreadable image: {err}"))
    rows, items = [], []
    with torch.no_grad():
        for start in range(0, len(images), 32):
            batch = torch.stack([transform(img) for img in images[start:start + 32]])
            probs = torch.softmax(model(batch.to(device)).float(), dim=1).cpu().numpy()
            for offset, prob in enumerate(probs):
                path, k = kept[start + offset], int(prob.argmax())
                rows.append({"path": str(path), "predicted": names[k], "probability": float(prob[k]),
                             **{f"prob_{name}": float(p) for name, p in zip(names, prob)}})
                if cam_dir is not None:
                    items.append({"path": path, "image": images[start + offset], "tensor": batch[offset],
                                  "predicted": k, "label": names[k], "probability": float(prob[k]),
                                  "class_names": names})
    output_csv = Path(output_csv)
    output_csv.parent.mkdir(parents=True, exist_ok=True)
    columns = ["path", "predicted", "probability", *[f"prob_{n}" for n in names]]
    pd.DataFrame(rows, columns=columns).to_csv(output_csv, index=False, float_format="%.6g")
    if cam_dir is not None and items:
        from xraylib import torch_gradcam

        torch_gradcam.save_overlays(model, meta["arch"], items, Path(cam_dir))
    return {"predicted": len(rows), "skipped": skipped}
