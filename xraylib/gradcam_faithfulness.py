"""Is a Grad-CAM map *faithful* to its model? Deletion (and insertion) curves, Petsiuk et al. 2018 (RISE).

The localisation scores of :mod:`xraylib.gradcam_scores` compare a map with the true
lesion; they cannot tell whether the model actually relies on the pixels the map
highlights. Deletion curves test that directly, with the model itself:

1. rank the pixels by the map, highest first (ties broken by a fixed random order,
   so no pixel position is favoured; :func:`pixel_order`);
2. replace the top 0, 1/steps, 2/steps, ... 100 % of them by a baseline (a heavily
   blurred copy of the image, or its mean grey; :func:`baseline_images`) and record
   the model's probability of the explained class each time;
3. do the same in a random pixel order: the control.

A faithful map makes the probability fall faster than the random order: a lower
area under the deletion curve (:func:`curve_auc`). Insertion is the mirror image
(start from the baseline, put the top pixels back; a higher area is better).
:func:`summarize_curves` gives the mean areas and their paired difference per image
with a simple percentile bootstrap over images (images resampled with replacement,
model fixed).

Framework-free: the model enters as ``predict_proba``, a function from ``(N, S, S)``
uint8 prepared images to ``(N, C)`` class probabilities (:class:`xraylib.inference.Classifier`
has one; :mod:`xraylib.tf_gradcam` and :mod:`xraylib.torch_gradcam` pass theirs).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

from xraylib.gradcam_scores import is_empty_map
from xraylib.gradcam_sets import CamSet

BASELINES = ("blur", "mean")
MODES = ("deletion", "insertion")
BLUR_SIGMA = 0.1  # Gaussian sigma of the "blur" baseline, as a share of the image side
PredictProba = Callable[[np.ndarray], np.ndarray]


def baseline_images(images: np.ndarray, baseline: str = "blur") -> np.ndarray:
    """What deleted pixels become: ``blur`` (Gaussian, sigma :data:`BLUR_SIGMA` of the side) or ``mean`` (its mean).

    Args:
        images: ``(N, S, S)`` uint8 images.
        baseline: one of :data:`BASELINES`.

    Returns:
        ``(N, S, S)`` uint8 baseline images.
    """
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    x = np.asarray(images, dtype=np.float64)
    if baseline == "mean":
        out = np.broadcast_to(x.mean(axis=(1, 2), keepdims=True), x.shape)
    else:
        sigma = BLUR_SIGMA * max(x.shape[1:])
        out = ndimage.gaussian_filter(x, sigma=(0, sigma, sigma), mode="reflect")
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def pixel_order(cam: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flat pixel indices, highest map value first; equal values in an order drawn from ``rng`` (no position bias)."""
    flat = np.asarray(cam, dtype=np.float64).ravel()
    return np.lexsort((rng.permutation(flat.size), -flat))


def _ranks(order: np.ndarray) -> np.ndarray:
    ranks = np.empty_like(order)
    ranks[order] = np.arange(order.size)
    return ranks


def _class_probs(predict_proba: PredictProba, images: np.ndarray, classes: np.ndarray, batch_size: int) -> np.ndarray:
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        probs = np.asarray(predict_proba(chunk), dtype=np.float64)
        if probs.ndim != 2 or len(probs) != len(chunk) or int(classes.max()) >= probs.shape[1]:
            raise ValueError(f"predict_proba must return (N, C) probabilities covering the explained classes; got "
                             f"shape {probs.shape} for {len(chunk)} images and class indices up to {classes.max()}")
        out.append(probs[np.arange(len(chunk)), classes[start:start + batch_size]])
    return np.concatenate(out)


def perturbation_curves(predict_proba: PredictProba, images: np.ndarray, cams: np.ndarray, classes: Sequence[int], *,
                        steps: int = 10, baseline: str = "blur", mode: str = "deletion", seed: int = 0,
                        batch_size: int = 64) -> dict[str, np.ndarray]:
    """Deletion or insertion curves of maps and of a random pixel order (the control).

    Args:
        predict_proba: ``(N, S, S)`` uint8 images -> ``(N, C)`` class probabilities.
        images: ``(N, S, S)`` uint8 prepared images (what the model saw).
        cams: ``(N, S, S)`` maps, one per image (only their order matters).
        classes: the explained class of each image (the one the map is for).
        steps: the curve has ``steps + 1`` points, 0 to 100 % of the pixels changed.
        baseline: what deleted pixels become (:func:`baseline_images`).
        mode: ``deletion`` (replace the top pixels by the baseline) or ``insertion``
            (start from the baseline, put the top pixels back).
        seed: seeds the tie-breaking and the random order.
        batch_size: images per ``predict_proba`` call.

    Returns:
        ``fractions`` ``(steps + 1,)``, and ``map`` and ``random`` ``(N, steps + 1)``: the
        probability of the explained class after each step, NaN rows for empty maps
        (:func:`xraylib.gradcam_scores.is_empty_map`: no order to test). The two
        orders share their end points; ``2 * steps`` batches of images are predicted.

    Raises:
        ValueError: shapes that do not match, an unknown ``baseline`` or ``mode``, or ``steps < 1``.
    """
    images, cams = np.asarray(images), np.asarray(cams)
    classes = np.asarray(classes, dtype=np.int64).ravel()
    if images.ndim != 3 or cams.shape != images.shape or len(classes) != len(images):
        raise ValueError(f"need (N, S, S) images, maps of the same shape and N classes; got images {images.shape}, "
                         f"maps {cams.shape}, {len(classes)} classes")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    steps, n = int(steps), int(np.prod(images.shape[1:]))
    fractions = np.linspace(0.0, 1.0, steps + 1)
    curves = {"fractions": fractions, "map": np.full((len(images), steps + 1), np.nan),
              "random": np.full((len(images), steps + 1), np.nan)}
    keep = np.array([not is_empty_map(c) for c in cams], dtype=bool)
    if not keep.any():
        return curves
    images = images[keep].astype(np.uint8)
    classes = classes[keep]
    other = baseline_images(images, baseline)
    start, end = (images, other) if mode == "deletion" else (other, images)
    rng = np.random.default_rng(seed)
    ranks = {"map": np.stack([_ranks(pixel_order(c, rng)) for c in cams[keep]]),
             "random": np.stack([_ranks(rng.permutation(n)) for _ in range(len(images))])}
    flat_start, flat_end = start.reshape(len(images), n), end.reshape(len(images), n)
    first = _class_probs(predict_proba, start, classes, batch_size)
    last = _class_probs(predict_proba, end, classes, batch_size)
    for name, rank in ranks.items():
        values = np.empty((len(images), steps + 1))
        values[:, 0], values[:, -1] = first, last
        for j in range(1, steps):
            changed = rank < int(round(fractions[j] * n))
            x = np.where(changed, flat_end, flat_start).reshape(images.shape)
            values[:, j] = _class_probs(predict_proba, x, classes, batch_size)
        curves[name][keep] = values
    return curves


def curve_auc(curves: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Area under each curve (trapezoid rule over the changed share of pixels, 0 to 1): the mean probability."""
    return np.trapezoid(np.asarray(curves, dtype=np.float64), np.asarray(fractions, dtype=np.float64), axis=-1)


def camset_curves(camset: CamSet, predict_proba: PredictProba, *, steps: int = 10, baseline: str = "blur",
                  modes: Sequence[str] = ("deletion",), seed: int = 0, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Curves of a CAM set's predicted-class maps (the model's own decision is explained), for :attr:`CamSet.curves`.

    Returns:
        ``fractions`` and, per mode, ``<mode>_map`` and ``<mode>_random`` (see :func:`perturbation_curves`).
    """
    out = {}
    for mode in modes:
        curves = perturbation_curves(predict_proba, camset.images, camset.cam_pred, camset.y_pred, steps=steps,
                                     baseline=baseline, mode=mode, seed=seed, batch_size=batch_size)
        out["fractions"] = curves["fractions"]
        out[f"{mode}_map"], out[f"{mode}_random"] = curves["map"], curves["random"]
    return out


def bootstrap_mean_ci(values: np.ndarray, n_resamples: int = 2000, level: float = 0.95,
                      seed: int = 0) -> list[float] | None:
    """Percentile bootstrap interval of a mean over images (resampled with replacement); ``None`` under 2 values."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return None
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (int(n_resamples), len(values)))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    return [float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))]


def summarize_curves(curves: dict[str, np.ndarray], mode: str = "deletion", *, n_resamples: int = 2000,
                     level: float = 0.95, seed: int = 0) -> dict:
    """Mean areas under the map and random curves of one mode, and their paired difference per image.

    Args:
        curves: :func:`camset_curves` output (or :attr:`CamSet.curves`).
        mode: ``deletion`` or ``insertion``.
        n_resamples, level, seed: the percentile bootstrap over images of the difference.

    Returns:
        ``<mode>_auc`` and ``<mode>_auc_random`` (means over images), ``difference``
        (mean of map minus random per image: below 0 is faithful for deletion, above 0
        for insertion), ``difference_ci`` (percentile bootstrap over images, ``level``),
        ``ci_level``, ``images`` (with a non-empty map), ``empty_maps`` (left out) and
        ``steps``; values ``None`` without images.

    Raises:
        KeyError: the curves of ``mode`` were not computed.
    """
    if f"{mode}_map" not in curves:
        raise KeyError(f"no {mode} curves (have {sorted(curves)}); compute them with camset_curves(modes=[{mode!r}])")
    fractions = curves["fractions"]
    ours, control = curve_auc(curves[f"{mode}_map"], fractions), curve_auc(curves[f"{mode}_random"], fractions)
    valid = np.isfinite(ours) & np.isfinite(control)
    difference = ours[valid] - control[valid]
    some = bool(valid.any())
    return {f"{mode}_auc": float(ours[valid].mean()) if some else None,
            f"{mode}_auc_random": float(control[valid].mean()) if some else None,
            "difference": float(difference.mean()) if some else None,
            "difference_ci": bootstrap_mean_ci(difference, n_resamples, level, seed),
            "ci_level": level, "images": int(valid.sum()), "empty_maps": int((~valid).sum()),
            "steps": int(len(fractions) - 1)}


def summarize_camset(camset: CamSet, mode: str = "deletion", *, n_resamples: int = 2000, level: float = 0.95,
                     seed: int = 0) -> dict | None:
    """:func:`summarize_curves` of a CAM set's curves with their settings; ``None`` when none were computed.

    Returns:
        The keys of :func:`summarize_curves` plus ``baseline``, ``explained`` (``predicted class``)
        and ``ci_method`` (how ``difference_ci`` was computed), for ``gradcam.json``.
    """
    if not camset.curves:
        return None
    settings = camset.info.get("faithfulness", {})
    return {**summarize_curves(camset.curves, mode, n_resamples=n_resamples, level=level, seed=seed),
            "baseline": settings.get("baseline"), "explained": settings.get("explained", "predicted class"),
            "ci_method": "percentile bootstrap over images (model fixed)"}


def faithfulness_finding(name: str, summary: dict, mode: str = "deletion") -> str:
    """One sentence reading :func:`summarize_curves`: faster than random (faithful), not distinguishable, or slower."""
    if not summary.get("images"):
        return f"{name}: no non-empty map, no {mode} curve."
    ci, sign = summary["difference_ci"], -1 if mode == "deletion" else 1
    verb = "removing" if mode == "deletion" else "restoring"
    head = (f"{name}: {mode} AUC {summary[f'{mode}_auc']:.3f} with the map's order vs "
            f"{summary[f'{mode}_auc_random']:.3f} in random order (difference {summary['difference']:+.3f}")
    level = round(100 * summary.get("ci_level", 0.95))
    head += (f", {level} % CI {ci[0]:+.3f} to {ci[1]:+.3f}; {summary['images']} images)" if ci
             else f"; {summary['images']} image)")
    if ci and sign * ci[0] > 0 and sign * ci[1] > 0:
        return (head + f": {verb} the pixels the map ranks first changes the prediction more than random pixels; "
                "the map is faithful to the model by this test.")
    if ci and sign * ci[0] < 0 and sign * ci[1] < 0:
        return (head + f": {verb} the map's pixels changes the prediction LESS than random pixels; the map does not "
                "show what the model uses.")
    return head + ": not distinguishable from a random order on these images; the map's faithfulness is not shown."
