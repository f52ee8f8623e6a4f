"""Figures, metrics files and DVC plot data: one writer each, one look everywhere.

All figures go through :func:`save_figure` (``reports/figures/<subdir>/<name>.png``),
all metrics through :func:`write_metrics` (``reports/metrics/<name>.json``) and
all curve data through :func:`write_plot_data` (``reports/plots/<name>.csv``),
so notebooks never build paths themselves.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from sklearn import metrics as skm  # noqa: E402

from xraylib import config  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")
DPI = 100


def save_figure(fig: plt.Figure, name: str, subdir: str = "") -> Path:
    """Save ``fig`` as ``reports/figures/<subdir>/<name>.png`` and close it.

    The figure is not shown again by the notebook (it is closed), so executed
    notebooks stay small; the PNG is the artefact.
    """
    folder = config.FIGURES_DIR / subdir if subdir else config.FIGURES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def to_json_safe(value, digits: int | None = 6):
    """Plain-Python copy of ``value`` for JSON: numpy scalars and arrays converted, NaN/inf as ``None``,
    floats rounded to ``digits`` (``None`` keeps full precision)."""
    if isinstance(value, dict):
        return {str(k): to_json_safe(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_safe(v, digits) for v in value]
    if isinstance(value, np.ndarray):
        return to_json_safe(value.tolist(), digits)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return None
        return value if digits is None else round(value, digits)
    return value


def write_json(data: dict, path: str | Path, digits: int | None = None) -> Path:
    """Write ``data`` as indented JSON at ``path`` (see :func:`to_json_safe`), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json_safe(data, digits), indent=2) + "\n")
    return path


def write_metrics(data: dict, name: str) -> Path:
    """Write ``reports/metrics/<name>.json`` (floats rounded to 6 digits, NaN as null)."""
    return write_json(data, config.METRICS_DIR / f"{name}.json", digits=6)


def write_plot_data(frame: pd.DataFrame, name: str) -> Path:
    """Write curve data for ``dvc plots`` as ``reports/plots/<name>.csv``."""
    config.PLOTS_DIR.mkdir(parents=True, exist_ok=True)
    path = config.PLOTS_DIR / f"{name}.csv"
    frame.to_csv(path, index=False, float_format="%.6g")
    return path


def plot_confusion_matrix(cm, class_names: list[str], title: str = "", normalize: bool = False) -> plt.Figure:
    """Heatmap with true labels as rows and predicted labels as columns."""
    cm = np.asarray(cm)
    values = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    size = 1.2 + 0.9 * len(class_names)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    sns.heatmap(values, annot=True, fmt=".2f" if normalize else "d", cmap="Blues", cbar=False,
                xticklabels=class_names, yticklabels=class_names, ax=ax, square=True)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title(title)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    plt.setp(ax.get_yticklabels(), rotation=0)
    return fig


def plot_roc(curves: dict, title: str = "") -> plt.Figure:
    """ROC curves; ``curves`` maps a label to ``(y_true, y_prob)``. AUC in the legend."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for label, (y_true, y_prob) in curves.items():
        fpr, tpr, _ = skm.roc_curve(y_true, y_prob)
        ax.plot(fpr, tpr, label=f"{label} (AUC {skm.auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.set(xlabel="1 - specificity (false positive rate)", ylabel="sensitivity (true positive rate)",
           title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    return fig


def plot_pr(curves: dict, title: str = "") -> plt.Figure:
    """Precision-recall curves; ``curves`` maps a label to ``(y_true, y_prob)``."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for label, (y_true, y_prob) in curves.items():
        precision, recall, _ = skm.precision_recall_curve(y_true, y_prob)
        ap = skm.average_precision_score(y_true, y_prob)
        ax.plot(recall, precision, label=f"{label} (AP {ap:.3f})")
    ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower left")
    return fig


def plot_reliability(curves: dict, title: str = "") -> plt.Figure:
    """Reliability diagram; ``curves`` maps a label to a :func:`metrics.reliability_curve` frame."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfect calibration")
    for label, frame in curves.items():
        ax.plot(frame["mean_predicted"], frame["fraction_positive"], marker="o", label=label)
    ax.set(xlabel="mean predicted probability", ylabel="observed fraction positive", title=title,
           xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")
    return fig


def plot_history(history: pd.DataFrame, title: str = "") -> plt.Figure:
    """Loss and accuracy per epoch for train and validation, side by side."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for column, style in ((metric, "-"), (f"val_{metric}", "--")):
            if column in history:
                ax.plot(history["epoch"], history[column], style, marker="o", ms=3, label=column)
        ax.set(xlabel="epoch", ylabel=metric)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_image_grid(images: list, titles: list[str], ncols: int = 4, overlays: list | None = None,
                    suptitle: str = "", cmap: str = "gray") -> plt.Figure:
    """Grid of grayscale images with titles; ``overlays`` (optional) are outlined masks or RGB images."""
    if len(titles) != len(images):
        raise ValueError(f"need one title per image, got {len(titles)} titles for {len(images)} images")
    n = max(1, len(images))
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.4 * ncols, 2.5 * nrows), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i >= len(images):
            continue
        image = np.asarray(images[i])
        ax.imshow(image, cmap=None if image.ndim == 3 else cmap, vmin=None if image.ndim == 3 else 0,
                  vmax=None if image.ndim == 3 else 255)
        if overlays is not None and overlays[i] is not None:
            overlay = np.asarray(overlays[i])
            if overlay.ndim == 2:
                ax.contour(overlay.astype(float), levels=[0.5], colors="red", linewidths=0.8)
            else:
                ax.imshow(overlay)
        ax.set_title(titles[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def plot_class_split_counts(manifest: pd.DataFrame, title: str = "") -> plt.Figure:
    """Bar chart of images per class, one bar per split, with counts on the bars."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    order = sorted(manifest["label"].unique())
    hue_order = [s for s in ("train", "val", "test", "excluded") if s in set(manifest["split"])]
    sns.countplot(data=manifest, x="label", hue="split", order=order, hue_order=hue_order, ax=ax)
    for container in ax.containers:
        ax.bar_label(container, fontsize=8)
    ax.set(xlabel="class", ylabel="images", title=title)
    return fig


def plot_size_mode(manifest: pd.DataFrame, title: str = "") -> plt.Figure:
    """Image width x height scatter by class, and the count of each original PIL mode."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [2, 1]})
    sns.scatterplot(data=manifest, x="width", y="height", hue="label", s=12, alpha=0.6, ax=axes[0])
    axes[0].set_title("original image size (pixels)")
    sns.countplot(data=manifest, x="mode", hue="label", ax=axes[1])
    axes[1].set_title("original image mode")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_intensity_histograms(before: list, after: list, titles: list[str]) -> plt.Figure:
    """Pixel-intensity histograms per image: prepared uint8 (top) vs standardised (bottom)."""
    n = len(before)
    fig, axes = plt.subplots(2, n, figsize=(2.8 * n, 4.8), squeeze=False)
    for i in range(n):
        axes[0, i].hist(np.ravel(before[i]), bins=32, range=(0, 255), color="steelblue")
        axes[0, i].set_title(titles[i], fontsize=8)
        values = np.ravel(after[i])
        axes[1, i].hist(values, bins=32, color="darkorange")
        axes[1, i].set_title(f"mean {values.mean():.2f}, std {values.std():.2f}", fontsize=8)
    axes[0, 0].set_ylabel("pixels (0-255)")
    axes[1, 0].set_ylabel("pixels (standardised)")
    fig.tight_layout()
    return fig
