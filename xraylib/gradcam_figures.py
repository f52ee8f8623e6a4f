"""Grad-CAM figures: notebook 05's per-class examples and deletion curves, and the figure of ``xraylib predict --cam``.

Both blend the map into the image (:func:`xraylib.gradcam_maps.apply_mask`) and
carry a colour bar of the map's relative values (:func:`add_colorbar`). The
figures are returned, not written: the notebook shows and saves them with
:func:`xraylib.plots.show_figure` under the name :func:`figure_name` gives;
:mod:`xraylib.gradcam_overlays` writes the predictor's.
"""

from __future__ import annotations

import numpy as np

from xraylib.gradcam_maps import COLORBAR_LABEL, DEFAULT_COLORMAP, apply_mask
from xraylib.gradcam_sets import CamSet


def pick_examples(camset: CamSet, class_index: int, correct: bool, n: int, seed: int = 0) -> np.ndarray:
    """Up to ``n`` indices of images of true class ``class_index`` that were (not) correctly predicted.

    Drawn with a seeded generator, returned in ascending order (reproducible figures).
    """
    candidates = np.flatnonzero((camset.y_true == class_index) & (camset.correct == bool(correct)))
    if len(candidates) > n:
        rng = np.random.default_rng([int(seed), int(class_index), int(correct)])
        candidates = np.sort(rng.choice(candidates, size=n, replace=False))
    return candidates


def plot_class_examples(camset: CamSet, class_index: int, n: int = 4, seed: int = 0,
                        colormap: str = DEFAULT_COLORMAP, outlines: np.ndarray | None = None):
    """Figure of one class: top row correct predictions, bottom row wrong ones, each with its overlay.

    Each tile shows the predicted-class map (:func:`xraylib.gradcam_maps.apply_mask`,
    the original notebooks' overlay) with the predicted class and its probability;
    empty slots say that there was no such image. ``outlines`` (optional
    ``(N, S, S)`` bool, e.g. :func:`xraylib.gradcam_scores.camset_masks`) are drawn
    as white contours (the true lesions on synthetic data).
    """
    import matplotlib.pyplot as plt

    name = camset.class_names[class_index]
    fig, axes = plt.subplots(2, n, figsize=(2.3 * n, 5.0), squeeze=False)
    for r, correct in enumerate((True, False)):
        chosen = pick_examples(camset, class_index, correct, n, seed)
        for c in range(n):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(chosen):
                i = int(chosen[c])
                k = int(camset.y_pred[i])
                ax.imshow(apply_mask(camset.images[i], camset.cam_pred[i], colormap))
                if outlines is not None and outlines[i].any():
                    ax.contour(outlines[i].astype(float), levels=[0.5], colors="white", linewidths=0.8)
                ax.set_title(f"pred {camset.class_names[k]}\np={camset.probs[i, k]:.2f}", fontsize=8)
            else:
                ax.set_facecolor("0.92")
                ax.text(0.5, 0.5, "no image" if c else f"no {'correct' if correct else 'wrong'}\nprediction",
                        ha="center", va="center", fontsize=8, transform=ax.transAxes)
            if c == 0:
                ax.set_ylabel("correct" if correct else "wrong", fontsize=10)
    fig.suptitle(f"{camset.name}: true class {name} (Grad-CAM of the predicted class)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.92, 1))
    add_colorbar(fig, colormap, fig.add_axes((0.93, 0.15, 0.015, 0.7)))
    return fig


def plot_perturbation_curves(name: str, curves: dict[str, np.ndarray], mode: str = "deletion"):
    """Deletion (or insertion) curves of one model: each image's map curve, and the mean curves of map and random order.

    Args:
        name: the model, for the title.
        curves: :attr:`CamSet.curves` (:func:`xraylib.gradcam_faithfulness.camset_curves`).
        mode: ``deletion`` or ``insertion``.

    Reading it: for deletion, a map that shows what the model uses makes the solid
    curve (pixels removed in the map's order) fall below the dashed one (random
    order); the legend gives the areas under the mean curves (lower is more faithful).
    """
    import matplotlib.pyplot as plt

    from xraylib.gradcam_faithfulness import curve_auc

    if f"{mode}_map" not in curves:
        raise KeyError(f"no {mode} curves for {name} (have {sorted(curves)}); compute them with deletion_steps > 0")
    x = 100 * np.asarray(curves["fractions"])
    ours, control = np.asarray(curves[f"{mode}_map"]), np.asarray(curves[f"{mode}_random"])
    valid = np.isfinite(ours).all(axis=1) & np.isfinite(control).all(axis=1)
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    for row in ours[valid]:
        ax.plot(x, row, color="C0", alpha=0.12, linewidth=0.7)
    if valid.any():
        for values, label, style in ((ours[valid], "map order", "-"), (control[valid], "random order", "--")):
            ax.plot(x, values.mean(axis=0), style, color="C0" if style == "-" else "0.3", linewidth=2,
                    label=f"{label} (AUC {curve_auc(values, curves['fractions']).mean():.3f})")
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, "no non-empty map", ha="center", va="center", transform=ax.transAxes)
    verb = "removed (replaced by the baseline)" if mode == "deletion" else "restored (from the baseline)"
    ax.set_xlabel(f"% of pixels {verb}", fontsize=9)
    ax.set_ylabel("probability of the predicted class", fontsize=9)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{name}: {mode} curves ({int(valid.sum())} images)", fontsize=10)
    fig.tight_layout()
    return fig


def figure_name(model: str, class_name: str) -> str:
    """File name (without suffix) of a per-class figure: ``<model>_<class>`` with spaces as underscores."""
    return f"{model}_{class_name}".replace(" ", "_").replace("/", "-")


def add_colorbar(fig, colormap: str, cax=None, ax=None):
    """A colour bar from 0 to 1 of ``colormap``, labelled :data:`xraylib.gradcam_maps.COLORBAR_LABEL`.

    Drawn in ``cax`` when given, else beside ``ax``. Returns the colour bar.
    """
    from matplotlib import cm, colors

    mappable = cm.ScalarMappable(norm=colors.Normalize(0.0, 1.0), cmap=colormap)
    bar = fig.colorbar(mappable, cax=cax, ax=ax, fraction=0.046 if cax is None else 0.15, pad=0.03)
    bar.set_label(COLORBAR_LABEL, fontsize=9)
    bar.ax.tick_params(labelsize=8)
    return bar


def plot_overlay(original: np.ndarray, cam: np.ndarray, title: str, colormap: str = DEFAULT_COLORMAP,
                 max_side: int = 1024):
    """The radiograph beside its Grad-CAM overlay, with a title and a colour bar (``xraylib predict --cam``).

    Args:
        original: ``(H, W)`` uint8 image as read (:func:`xraylib.images.load_gray`).
        cam: ``(H, W)`` map in [0, 1] on the same pixels (:func:`xraylib.gradcam_maps.to_original`).
        title: what the figure says above the images (file, predicted class and probability, true label).
        colormap: one of :data:`xraylib.gradcam_maps.COLORMAPS`.
        max_side: longest side, in figure pixels, of each image panel: images up to this size
            are drawn pixel for pixel (small ones enlarged to at least 250 pixels), larger ones
            scaled down (the overlay file keeps every pixel).

    Returns:
        A matplotlib ``Figure`` (not registered with pyplot: nothing to close).
    """
    from matplotlib.figure import Figure

    original, cam = np.asarray(original), np.asarray(cam)
    if original.ndim != 2 or cam.shape != original.shape:
        raise ValueError(f"need a grey image and a map of one shape (H, W), got {original.shape} and {cam.shape}")
    height, width = original.shape
    dpi, longest = 100, max(height, width)
    scale = min(max(longest, 250), max_side) / longest  # pixel for pixel from 250 to max_side pixels
    panel_w, panel_h = width * scale / dpi, height * scale / dpi
    fig = Figure(figsize=(2 * panel_w + 1.4, panel_h + 0.9), dpi=dpi, layout="constrained")
    left, right = fig.subplots(1, 2)
    left.imshow(original, cmap="gray", vmin=0, vmax=255, interpolation="antialiased")
    left.set_title(f"radiograph ({width} x {height} px)", fontsize=9)
    right.imshow(apply_mask(original, cam, colormap), interpolation="antialiased")
    right.set_title("Grad-CAM overlay", fontsize=9)
    for ax in (left, right):
        ax.set_axis_off()
    add_colorbar(fig, colormap, ax=right)
    fig.suptitle(title, fontsize=10)
    return fig
