"""Figures: one look everywhere, one writer for every figure file.

Every figure goes through :func:`save_figure`: ``reports/figures/<subdir>/<name>.png``
at 300 dpi (print quality) and ``<name>.svg`` (vector, for papers), or into any
folder given. Notebooks call :func:`show_figure`, which also shows the figure inline,
so an executed notebook carries its figures. JSON and CSV writers are
:mod:`xraylib.outputs`.
"""

from __future__ import annotations

import io
import math
import sys
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:  # scripts and commands draw off-screen; notebooks keep their inline backend
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from sklearn import metrics as skm  # noqa: E402

from xraylib import config  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")
plt.rcParams["svg.hashsalt"] = "xraylib"  # same SVG element ids on every run
DPI = 300
SCREEN_DPI = 100  # figures shown inline in notebooks
FORMATS = ("png", "svg")


def save_figure(fig: plt.Figure, name: str, subdir: str = "", *, folder: str | Path | None = None,
                close: bool = True) -> Path:
    """Save ``fig`` as ``<folder>/<subdir>/<name>.png`` (300 dpi) and ``.svg``; returns the PNG path.

    ``folder`` defaults to ``reports/figures``. Files carry no date or software
    version, so an unchanged figure is an unchanged file. The figure is closed
    unless ``close=False``.
    """
    base = config.FIGURES_DIR if folder is None else config.resolve(folder)
    target = base / subdir if subdir else base
    target.mkdir(parents=True, exist_ok=True)
    for suffix in FORMATS:
        metadata = {"Software": None} if suffix == "png" else {"Date": None, "Creator": None}
        fig.savefig(target / f"{name}.{suffix}", dpi=DPI, bbox_inches="tight", facecolor="white", metadata=metadata)
    if close:
        plt.close(fig)
    return target / f"{name}.png"


def show_figure(fig: plt.Figure, name: str, subdir: str = "", *, folder: str | Path | None = None) -> None:
    """:func:`save_figure`, and show the figure inline when running in a notebook (then close it).

    The notebook gets a screen-resolution PNG (:data:`SCREEN_DPI`) as its only output
    (no ``<Figure ...>`` text): the print-quality files are on disk, and nothing
    about the figure is printed to the terminal that streams the notebook's output.
    """
    save_figure(fig, name, subdir, folder=folder, close=False)
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # pragma: no cover - IPython ships with ipykernel, a dependency
        get_ipython = None
    if get_ipython is not None and get_ipython() is not None:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=SCREEN_DPI, bbox_inches="tight", facecolor="white",
                    metadata={"Software": None})
        display({"image/png": buffer.getvalue()}, raw=True)
    plt.close(fig)


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
    """Reliability diagram with the number of images per bin below it.

    ``curves`` maps a label to a :func:`xraylib.calibration.reliability_curve` frame
    (``mean_predicted``, ``fraction_positive``, ``count``; ``bin_low``/``bin_high`` where present).
    """
    fig, (ax, counts) = plt.subplots(2, 1, figsize=(5, 6.2), sharex=True, gridspec_kw={"height_ratios": [4, 1.3]})
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfect calibration")
    width = 0.8 / max(len(curves), 1)
    for i, (label, frame) in enumerate(curves.items()):
        ax.plot(frame["mean_predicted"], frame["fraction_positive"], marker="o", label=label)
        centres = ((frame["bin_low"] + frame["bin_high"]) / 2 if "bin_low" in frame else frame["mean_predicted"])
        n_bins = max(len(frame), 10)
        counts.bar(np.asarray(centres) + (i - (len(curves) - 1) / 2) * width / n_bins, frame["count"],
                   width=width / n_bins, label=label)
    ax.set(ylabel="observed fraction positive", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")
    counts.set(xlabel="mean predicted probability", ylabel="images per bin", xlim=(0, 1))
    fig.tight_layout()
    return fig


def plot_decision_curve(frame: pd.DataFrame, title: str = "") -> plt.Figure:
    """Net benefit against the threshold probability (:func:`xraylib.statistics.net_benefit`)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(frame["threshold"], frame["model"], label="model")
    ax.plot(frame["threshold"], frame["treat_all"], ls="--", c="grey", label="treat all")
    ax.plot(frame["threshold"], frame["treat_none"], ls=":", c="black", label="treat none")
    top = float(np.nanmax(frame[["model", "treat_all"]].to_numpy()))
    ax.set(xlabel="threshold probability", ylabel="net benefit", title=title, xlim=(0, 1),
           ylim=(-0.05, max(top, 0.05) * 1.1))
    ax.legend()
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


def plot_set_histograms(frame: pd.DataFrame, title: str = "") -> plt.Figure:
    """Mean intensity histogram of each image set, one panel per class (:func:`xraylib.dataset_shift.intensity_histograms`)."""
    labels = sorted(frame["label"].unique())
    fig, axes = plt.subplots(1, max(1, len(labels)), figsize=(4.6 * max(1, len(labels)), 3.4), squeeze=False,
                             sharey=True)
    for ax, label in zip(axes[0], labels):
        for set_name, part in frame[frame["label"] == label].groupby("set", sort=False):
            ax.plot(part["intensity"], part["fraction"], label=set_name, drawstyle="steps-post")
        ax.set(title=label, xlabel="pixel intensity (0-255)")
        ax.legend(fontsize=8)
    axes[0, 0].set_ylabel("fraction of pixels")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
