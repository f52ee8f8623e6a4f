"""Shortcut analysis of the four-class models: image regions, occlusions, Grad-CAM outside the thorax, findings.

DeGrave, Janizek & Lee (Nature Machine Intelligence 3, 610-619, 2021) showed that COVID-19
classifiers trained on radiographs gathered like the COVID-19 Radiography Database learn
*shortcuts*: features of each class's source (text and laterality markers, patient
positioning, framing) instead of lung pathology. The four-class set has such cues by
construction (../shared/data/covid4_224/README.md): Viral Pneumonia are small children,
COVID films carry burned-in text and black padding, Lung_Opacity films are bedside AP
films with markers and lines. This module asks the model itself, with occlusions of the
prepared image (the evaluation is :mod:`xraylib.torch_shortcuts`):

* ``original``: the image as in training;
* ``border_masked`` (:func:`mask_border`): the outer band of each side (:func:`border_mask`,
  where text, markers and padding sit) filled with a neutral grey;
* ``border_only`` (:func:`border_only`): everything *but* that band filled;
* ``lungs_blanked`` (:func:`blank_lungs`): the thorax / lung region filled.

A class that is still recognised with the lungs blanked, or from the border alone, is told
apart by something other than the lungs (:func:`shortcut_findings`). Recognition is judged by
the class's **informedness** (one-vs-rest recall + specificity - 1; chance 0): recall alone
would reward a model that, faced with an occluded image, calls everything one class.

**Fill value.** Occluded pixels become the image's own median grey (:func:`fill_value`), not
black: black is itself a shortcut here (the COVID films' padding, the synthetic second site's
frame), and a fixed mid-grey would be foreign to dark and bright exposures alike. Any flat patch
is still unlike a radiograph, so a *drop* under an occlusion can partly be the model's surprise
at the patch; *keeping* recognition with the lungs blanked cannot be explained that way.

**Thorax region.** Real images come without lung masks. The default, ``central``
(:func:`central_region`), is a fixed rounded rectangle (a superellipse) over the middle of the
image where the lungs of a frontal film lie: it removes the lungs whatever their appearance
(opacities included) and is deliberately generous, so energy outside it is surely not on the
lungs. ``lungs_otsu`` (:func:`otsu_lungs`) segments the dark lung fields inside that region
(Otsu threshold, opening, the largest component on each side, convex hulls); it follows the
patient's anatomy but misses lungs that are white with disease, the very images that matter,
so it is offered, not the default. Where the manifest has true lung masks (the synthetic data),
those are used (:mod:`xraylib.torch_shortcuts`).

Framework-free: numpy, scipy, scikit-image and pandas (matplotlib inside the plotting functions).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from xraylib import config, images, metrics, statistics
from xraylib.gradcam_scores import is_empty_map, load_mask
from xraylib.gradcam_sets import CamSet

REGIONS = ("central", "lungs_otsu")
VARIANTS = ("original", "border_masked", "border_only", "lungs_blanked")
VARIANT_TEXT = {"original": "original images", "border_masked": "border band masked",
                "border_only": "border band only", "lungs_blanked": "thorax region blanked"}
# The fixed thorax region (central_region), in fractions of the image height / width: a superellipse
# |dy / HALF_H| ** POWER + |dx / HALF_W| ** POWER <= 1 around the centre (POWER 2: an ellipse; 4: a
# rectangle with rounded corners, the lungs' outline on a frontal film). Checked against the true lung
# masks of the synthetic data and the mean image of each class of ../shared/data/covid4_224 (lungs
# between about 0.12 and 0.88 of the width, 0.08 and 0.80 of the height).
CENTRAL_CENTRE = (0.46, 0.50)   # (row, column)
CENTRAL_HALF = (0.40, 0.39)     # (half height, half width)
CENTRAL_POWER = 4.0
# lungs_otsu: a segmentation smaller or larger than this share of the image is not believed
# (central_region is used instead).
OTSU_AREA = (0.08, 0.60)
TRUE_MASKS = "true lung masks"  # image_region's source where the manifest has the image's lung mask


# --------------------------------------------------------------------------------------------------
# Regions
# --------------------------------------------------------------------------------------------------
def _shape(size: int | Sequence[int]) -> tuple[int, int]:
    shape = (int(size), int(size)) if np.isscalar(size) else tuple(int(s) for s in size)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"size must be a side length or (height, width) of at least 1 pixel, got {size!r}")
    return shape


def _check_fraction(fraction: float) -> float:
    if isinstance(fraction, bool) or not 0 <= float(fraction) < 0.5:
        raise ValueError(f"border fraction must lie in [0, 0.5) of the side per edge (gradcam.shortcut_border), "
                         f"got {fraction!r}")
    return float(fraction)


def border_mask(size: int | Sequence[int], fraction: float) -> np.ndarray:
    """The outer band of an image: ``round(fraction * side)`` pixels along each edge, as a bool mask.

    Args:
        size: side length, or ``(height, width)``.
        fraction: band width per edge as a share of that side, in [0, 0.5) (0: no band).
    """
    h, w = _shape(size)
    fraction = _check_fraction(fraction)
    bh, bw = int(round(fraction * h)), int(round(fraction * w))
    mask = np.ones((h, w), dtype=bool)
    mask[bh:h - bh, bw:w - bw] = False
    return mask


def central_region(size: int | Sequence[int]) -> np.ndarray:
    """The fixed thorax region: a superellipse over the middle of the image (see :data:`CENTRAL_CENTRE`).

    It covers the lungs of a centred frontal film with a margin, and the heart and mediastinum
    (58 % of the image): on the 97 synthetic test images it holds 99.9 % of the true lung area
    (at least 99.5 % of any image's; Dice 0.60, the rest being heart and margin). On the real
    covid4 films it covers the lungs of most images; tight crops and small children can reach past it.
    """
    h, w = _shape(size)
    y = (np.arange(h) + 0.5)[:, None] / h
    x = (np.arange(w) + 0.5)[None, :] / w
    dy = np.abs(y - CENTRAL_CENTRE[0]) / CENTRAL_HALF[0]
    dx = np.abs(x - CENTRAL_CENTRE[1]) / CENTRAL_HALF[1]
    return dy ** CENTRAL_POWER + dx ** CENTRAL_POWER <= 1.0


def _check_image(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"expected a prepared 2-D uint8 image (xraylib.images.prepare), got "
                         f"shape {image.shape} and dtype {image.dtype}")
    return image


def otsu_lungs(image) -> tuple[np.ndarray, bool]:
    """The dark lung fields of a prepared frontal film: ``(mask, ok)``; ``ok`` False = :func:`central_region`.

    Inside :func:`central_region`: a light Gaussian blur, Otsu's threshold of the pixels there,
    the dark side opened (thin bridges cut), the largest component in each half of the image
    (left and right of the midline), each replaced by its convex hull (vessels and small opacities inside the outline come back).
    A result outside :data:`OTSU_AREA` of the image, or the threshold of a flat region, falls back
    to the central region. Lungs made white by disease are missed: a limitation of any threshold.

    Measured on the 97 synthetic test images against their true lung masks: Dice 0.95 at 128 and
    224 px (lowest 0.90), 0.93 at 40 px; no fallback. On 800 covid4 films (200 per class, 112 px)
    it falls back for 0-3 % per class and, by eye, misses opaque lungs (Lung_Opacity, COVID) and
    odd framings: the synthetic lungs are dark and clean, real diseased ones are not.
    """
    from skimage.filters import threshold_otsu
    from skimage.morphology import convex_hull_image, disk

    image = _check_image(image)
    h, w = image.shape
    prior = central_region(image.shape)
    smooth = ndimage.gaussian_filter(image.astype(np.float64), max(0.5, min(h, w) / 100))
    values = smooth[prior]
    if values.max() - values.min() < 1:
        return prior, False
    dark = (smooth < threshold_otsu(values)) & prior
    dark = ndimage.binary_opening(dark, structure=disk(max(1, min(h, w) // 64)))
    mask = np.zeros_like(dark)
    half = np.zeros_like(dark)
    for columns in (slice(0, w // 2), slice(w // 2, w)):  # one lung per half: no hull across the midline
        half[:] = False
        half[:, columns] = dark[:, columns]
        labels, n = ndimage.label(half)
        if n:
            sizes = ndimage.sum(half, labels, index=np.arange(1, n + 1))
            mask |= convex_hull_image(labels == int(np.argmax(sizes)) + 1)
    if not OTSU_AREA[0] <= mask.mean() <= OTSU_AREA[1]:
        return prior, False
    return mask, True


def thorax_region(image, method: str = "central") -> np.ndarray:
    """The region of ``image`` taken for the thorax: :func:`central_region` or :func:`otsu_lungs` (``method``)."""
    if method not in REGIONS:
        raise ValueError(f"thorax region must be one of {REGIONS} (gradcam.shortcut_region), got {method!r}")
    image = _check_image(image)
    return central_region(image.shape) if method == "central" else otsu_lungs(image)[0]


def has_mask(value) -> bool:
    """True for a manifest ``lung_mask`` entry that names a file (not empty, not NaN)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and str(value).strip() != ""


def image_region(image, lung_mask=None, resize_mode: str = "stretch", method: str = "central") -> tuple[np.ndarray, str]:
    """``(thorax region, source)`` of a prepared image: its true lung mask where one is given, else :func:`thorax_region`.

    Args:
        image: the prepared ``uint8`` image.
        lung_mask: the manifest's ``lung_mask`` path of the image (resized like it), or empty / ``None``.
        resize_mode: how the image was resized (the mask is resized the same way).
        method: :data:`REGIONS` entry used without a true mask.

    Returns:
        The bool mask and where it came from: :data:`TRUE_MASKS` or ``method``.
    """
    image = _check_image(image)
    if has_mask(lung_mask):
        mask = load_mask(config.resolve(lung_mask), image.shape[0], resize_mode)
        if mask is not None:
            return mask, TRUE_MASKS
    return thorax_region(image, method), method


def examples(frame: pd.DataFrame, image_size: int, resize_mode: str = "stretch", equalize_method: str = "none",
             method: str = "central") -> tuple[list[np.ndarray], list[str], list[np.ndarray]]:
    """The first image of each class in ``frame``, prepared at ``image_size``, with its region (:func:`image_region`).

    Returns ``(images, titles, regions)`` for :func:`plot_variant_examples`.
    """
    rows = frame.groupby("label", sort=True).head(1)
    found, titles, regions = [], [], []
    for _, row in rows.iterrows():
        image = images.prepare(config.resolve(row["path"]), image_size, resize_mode, equalize_method)
        region, source = image_region(image, row.get("lung_mask"), resize_mode, method)
        found.append(image)
        regions.append(region)
        titles.append(f"{row['label']}\n(region: {source})")
    return found, titles, regions


def dice(a, b) -> float:
    """Dice overlap of two bool masks (1 for two empty masks)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = a.sum() + b.sum()
    return float(2 * (a & b).sum() / total) if total else 1.0


# --------------------------------------------------------------------------------------------------
# Perturbations (pure: a new image, the input untouched)
# --------------------------------------------------------------------------------------------------
def fill_value(image) -> int:
    """The grey occluded pixels become: the median of the whole image (see the module docstring)."""
    return int(np.round(np.median(_check_image(image))))


def _filled(image, mask, value: int | None) -> np.ndarray:
    image = _check_image(image)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != image.shape:
        raise ValueError(f"region mask must have the image's shape {image.shape}, got {mask.shape}")
    out = image.copy()
    out[mask] = fill_value(image) if value is None else int(value)
    return out


def mask_border(image, fraction: float, value: int | None = None) -> np.ndarray:
    """``image`` with its border band (:func:`border_mask`) filled with ``value`` (default :func:`fill_value`)."""
    image = _check_image(image)
    return _filled(image, border_mask(image.shape, fraction), value)


def border_only(image, fraction: float, value: int | None = None) -> np.ndarray:
    """``image`` with everything but its border band filled with ``value`` (default :func:`fill_value`)."""
    image = _check_image(image)
    return _filled(image, ~border_mask(image.shape, fraction), value)


def blank_lungs(image, region, value: int | None = None) -> np.ndarray:
    """``image`` with the thorax / lung ``region`` (bool mask) filled with ``value`` (default :func:`fill_value`)."""
    return _filled(image, region, value)


def perturb(image, variant: str, fraction: float, region=None) -> np.ndarray:
    """One of :data:`VARIANTS` of a prepared image (``original``: an unchanged copy).

    Raises:
        ValueError: an unknown variant, or ``lungs_blanked`` without a ``region``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if variant == "original":
        return _check_image(image).copy()
    if variant == "border_masked":
        return mask_border(image, fraction)
    if variant == "border_only":
        return border_only(image, fraction)
    if region is None:
        raise ValueError("lungs_blanked needs the thorax region mask (thorax_region or a true lung mask)")
    return blank_lungs(image, region)


# --------------------------------------------------------------------------------------------------
# Grad-CAM energy outside the thorax
# --------------------------------------------------------------------------------------------------
def outside_share(cam, region) -> tuple[float, float]:
    """``(share of the map's energy outside region, chance)``; chance = the area share outside (a uniform map).

    The share is NaN for a map with no positive total (it points nowhere).
    """
    cam = np.asarray(cam, dtype=np.float64)
    region = np.asarray(region, dtype=bool)
    if cam.shape != region.shape:
        raise ValueError(f"cam and region must have the same shape, got {cam.shape} and {region.shape}")
    if not np.isfinite(cam).all():
        raise ValueError("cam has NaN or infinite values; expected a finite map")
    chance = float(1.0 - region.mean())
    total = cam.sum()
    return (float(cam[~region].sum() / total) if total > 0 else float("nan")), chance


def camset_regions(camset: CamSet, method: str = "central") -> np.ndarray:
    """``(N, S, S)`` thorax regions (:func:`thorax_region`) of the CAM set's prepared images."""
    return np.stack([thorax_region(image, method) for image in camset.images])


def _mean_ci(values: np.ndarray, labels: np.ndarray, n_resamples: int, seed: int) -> list[float] | None:
    if len(values) < 2:
        return None
    res = statistics.resample(labels, None, n_resamples=n_resamples, seed=seed)
    return statistics.bootstrap({"mean": lambda w: (w @ values) / w.sum(axis=1)}, res)["mean"]["ci"]


def outside_table(camset: CamSet, regions: dict[str, np.ndarray], *, n_resamples: int = 1000,
                  seed: int = 0) -> pd.DataFrame:
    """Mean share of the true-class map outside each region, per class and overall, beside its chance level.

    Args:
        camset: maps of one model (the map of the true class is used, as for the lung energy).
        regions: ``{region name: (N, S, S) bool masks}``; an image whose mask is empty is left out
            (e.g. no true lung mask).
        n_resamples, seed: the bootstrap (images resampled within each class) of each mean's 95 % interval.

    Returns:
        One row per region and class (``all`` first): ``images`` (non-empty maps with a region),
        ``outside_share`` (mean), ``outside_share_ci``, ``chance`` (mean area share outside) and
        ``ratio`` (share / chance: 1 = as a uniform map, above 1 = drawn outside).
    """
    labels = np.array([camset.class_names[k] if k >= 0 else "" for k in camset.y_true])
    rows = []
    for name, masks in regions.items():
        masks = np.asarray(masks, dtype=bool)
        if masks.shape != camset.cam_true.shape:
            raise ValueError(f"regions[{name!r}] must have the maps' shape {camset.cam_true.shape}, got {masks.shape}")
        shares = np.full(len(camset), np.nan)
        chances = np.full(len(camset), np.nan)
        for i in range(len(camset)):
            if masks[i].any() and labels[i] and not is_empty_map(camset.cam_true[i]):
                shares[i], chances[i] = outside_share(camset.cam_true[i], masks[i])
        keep = np.isfinite(shares)
        for label in ["all", *sorted(set(labels[keep]))]:
            sel = keep & ((labels == label) if label != "all" else True)
            share = float(shares[sel].mean()) if sel.any() else float("nan")
            chance = float(chances[sel].mean()) if sel.any() else float("nan")
            rows.append({"model": camset.name, "region": name, "class": label, "images": int(sel.sum()),
                         "outside_share": share,
                         "outside_share_ci": _mean_ci(shares[sel], labels[sel], n_resamples, seed),
                         "chance": chance, "ratio": share / chance if chance > 0 else float("nan")})
    return pd.DataFrame(rows)


def outside_display(table: pd.DataFrame, unusable: Sequence[str] = ()) -> pd.DataFrame:
    """:func:`outside_table` for reading: the share as ``value [low, high]``; ``usable`` False for ``unusable`` maps.

    ``unusable``: models whose maps cannot localise (:func:`xraylib.gradcam_scores.unusable_maps`):
    a map of 1-2 cells a side spreads over the image whatever the model looks at.
    """
    if table.empty:
        return table
    shown = table.assign(outside_share=[_fmt(v, ci) for v, ci in zip(table["outside_share"],
                                                                        table["outside_share_ci"])],
                         chance=table["chance"].round(2), ratio=table["ratio"].round(2),
                         usable=~table["model"].isin(set(unusable)))
    return shown.drop(columns="outside_share_ci")


# --------------------------------------------------------------------------------------------------
# Reports of the variants and findings
# --------------------------------------------------------------------------------------------------
def variant_report(y_true, y_prob, class_names: list[str], *, groups=None, n_resamples: int = 1000,
                   seed: int = 0) -> dict:
    """:func:`xraylib.metrics.multiclass_report` plus each class's informedness with its interval.

    Informedness (Youden's J of the class against the rest) = recall + specificity - 1: 0 at
    chance, and also 0 for a model that calls every image that class (recall 1, specificity 0).
    Its 95 % interval uses the same clustered resamples as the report's (same labels, groups, seed).
    Where the recall or the specificity is 0 or 1, no resample varies it (the report gives it an exact
    Clopper-Pearson interval instead), so the bootstrap interval is too narrow or a point; it is then
    widened to cover recall + specificity - 1 taken at the ends of their two intervals (conservative).
    """
    report = metrics.multiclass_report(y_true, y_prob, class_names, n_resamples=n_resamples, seed=seed,
                                       groups=groups)
    y_true = np.asarray(y_true).astype(int).ravel()
    y_pred = np.asarray(y_prob).argmax(axis=1)
    res = statistics.resample(y_true, groups, n_resamples, seed)
    n_classes = len(class_names)

    def informedness(k):
        def stat(w):
            rates = metrics.per_class_rates(statistics.weighted_confusion(y_true, y_pred, w, n_classes))
            return rates["recall"][:, k] + rates["specificity"][:, k] - 1.0
        return stat

    results = statistics.bootstrap({name: informedness(k) for k, name in enumerate(class_names)}, res)
    exact = set(report["bootstrap"].get("exact", []))
    for name in class_names:
        entry = report["per_class"][name]
        entry["informedness"] = float(entry["recall"] + entry["specificity"] - 1.0)
        ci = results[name]["ci"]
        degenerate = {f"per_class.{name}.recall", f"per_class.{name}.specificity"} & exact
        if ci is not None and degenerate and entry.get("recall_ci") and entry.get("specificity_ci"):
            # recall or specificity is 0 or 1, where no resample varies it: widen to recall + specificity - 1
            # at the ends of their intervals (exact Clopper-Pearson there)
            low = entry["recall_ci"][0] + entry["specificity_ci"][0] - 1.0
            high = entry["recall_ci"][1] + entry["specificity_ci"][1] - 1.0
            ci = [float(max(-1.0, min(ci[0], low))), float(min(1.0, max(ci[1], high)))]
        entry["informedness_ci"] = ci
    return report


def chance_accuracy(report: dict) -> float:
    """Accuracy of always calling the most frequent class of these images (the bar for "above chance")."""
    support = [entry["support"] for entry in report["per_class"].values()]
    return float(max(support) / sum(support))


def _fmt(value, ci=None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci and ci[0] is not None else "")


def variant_table(results: dict[str, dict], keys: Sequence[str] = ("accuracy", "balanced_accuracy",
                                                                     "macro_f1")) -> pd.DataFrame:
    """One row per run and variant: ``keys`` as ``value [low, high]`` (95 % interval) for reading.

    Args:
        results: ``{run: evaluate_variants(...)}`` (:mod:`xraylib.torch_shortcuts`).
    """
    rows = []
    for run, result in results.items():
        for variant, report in result["variants"].items():
            rows.append({"run": run, "variant": variant,
                         **{k: _fmt(report.get(k), report.get(f"{k}_ci")) for k in keys}})
    return pd.DataFrame(rows)


def per_class_table(result: dict, key: str = "recall") -> pd.DataFrame:
    """Per class (rows) and variant (columns): ``key`` (``recall``, ``specificity``, ``informedness`` ...) with its interval."""
    return pd.DataFrame({variant: {name: _fmt(entry[key], entry.get(f"{key}_ci"))
                                   for name, entry in report["per_class"].items()}
                         for variant, report in result["variants"].items()}).rename_axis("class")


def retained(result: dict) -> pd.DataFrame:
    """Per class: original informedness and the share of it each occluded variant keeps (NaN where it is <= 0)."""
    reports = result["variants"]
    rows = []
    for name, entry in reports["original"]["per_class"].items():
        base = entry["informedness"]
        row = {"class": name, "original": base}
        for variant, report in reports.items():
            if variant != "original":
                row[variant] = report["per_class"][name]["informedness"] / base if base > 0 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows).set_index("class")


def accuracy_sentence(run: str, result: dict) -> str:
    """One sentence: the run's accuracy under each variant beside the most-frequent-class accuracy."""
    reports = result["variants"]
    parts = [f"{_fmt(report['accuracy'], report.get('accuracy_ci'))} ({VARIANT_TEXT[variant]})"
             for variant, report in reports.items()]
    chance = chance_accuracy(reports["original"])
    return f"{run}: accuracy {', '.join(parts)} (always the most frequent class: {chance:.2f})."


def shortcut_findings(run: str, result: dict, *, min_informedness: float, min_retained: float,
                      border_loss: float) -> list[str]:
    """Sentences naming the classes this run tells apart by something other than the lungs.

    Judged per class on informedness (recall + specificity - 1, chance 0; :func:`variant_report`),
    only for classes the run recognises on the original images (informedness >= ``min_informedness``):

    * **lungs blanked**: the class keeps informedness >= ``min_informedness`` *and* at least
      ``min_retained`` of its original value: the thorax region is not needed to recognise it;
    * **border only**: informedness >= ``min_informedness`` with an interval above 0 from the
      border band alone: recognised from where text, markers and framing sit;
    * **border masked**: masking the border band alone costs at least ``border_loss`` of the
      original informedness: the class depends on the border (or on the surprise of a flat patch).

    Args:
        run: the run's name (starts each sentence).
        result: :func:`xraylib.torch_shortcuts.evaluate_variants` (``variants``: reports per variant).

    Returns:
        One sentence per finding; empty when nothing is flagged.
    """
    for name, value in (("min_informedness", min_informedness), ("min_retained", min_retained),
                        ("border_loss", border_loss)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    reports = result["variants"]
    if "original" not in reports:
        raise ValueError(f"the findings compare with the original images; variants given: {sorted(reports)}")
    border = result.get("border")
    band = f"the outer {border:.0%} of each side" if border is not None else "the border band"
    findings = []
    for name, entry in reports["original"]["per_class"].items():
        base = entry["informedness"]
        if not base >= min_informedness:  # also NaN: a class absent from these images
            continue
        head = f"{run}: {name}"
        blanked = reports.get("lungs_blanked", {}).get("per_class", {}).get(name)
        if blanked and blanked["informedness"] >= max(min_informedness, min_retained * base):
            findings.append(
                f"{head} is still recognised with the thorax region blanked: informedness "
                f"{_fmt(blanked['informedness'], blanked.get('informedness_ci'))} vs {base:.2f} on the original "
                f"images (recall {blanked['recall']:.2f} vs {entry['recall']:.2f}, chance 0): it is told apart "
                f"by something outside the lungs, a shortcut.")
        only = reports.get("border_only", {}).get("per_class", {}).get(name)
        if only:
            ci = only.get("informedness_ci")
            if only["informedness"] >= min_informedness and ci and ci[0] is not None and ci[0] > 0:
                findings.append(
                    f"{head} is recognised from {band} alone: informedness "
                    f"{_fmt(only['informedness'], ci)} (chance 0; {base:.2f} on the whole image, recall "
                    f"{only['recall']:.2f}): markers, text, framing or body outline tell it apart, a shortcut.")
        masked = reports.get("border_masked", {}).get("per_class", {}).get(name)
        if masked and base - masked["informedness"] >= border_loss * base:
            lost = 1 - masked["informedness"] / base
            findings.append(
                f"{head} loses {'all' if lost >= 1 else f'{lost:.0%}'} of its informedness when only {band} "
                f"is masked ({_fmt(masked['informedness'], masked.get('informedness_ci'))} vs {base:.2f}): its "
                f"recognition depends on the border (or is upset by the flat patch itself).")
    return findings


def document(results: dict[str, dict], findings: dict[str, list[str]], sentences: dict[str, str],
             outside: pd.DataFrame | None = None) -> dict:
    """The ``reports/metrics/shortcuts.json`` document: settings, per run and variant the report, findings.

    Per variant the headline figures with ``_ci`` and per class recall, specificity, informedness
    (with ``_ci``) and support; the Grad-CAM shares outside the regions when ``outside`` is given.
    """
    keys = ("n", "accuracy", "balanced_accuracy", "macro_f1", "macro_auc_ovr")
    runs = {}
    for run, result in results.items():
        variants = {}
        for variant, report in result["variants"].items():
            block = {k: report[k] for k in keys if k in report}
            block.update({f"{k}_ci": report[f"{k}_ci"] for k in keys if f"{k}_ci" in report})
            block["per_class"] = {name: {k: entry[k] for k in ("recall", "recall_ci", "specificity",
                                                                "specificity_ci", "informedness",
                                                                "informedness_ci", "support")}
                                  for name, entry in report["per_class"].items()}
            variants[variant] = block
        runs[run] = {k: result[k] for k in ("split", "image_size", "border", "region", "region_source", "fill")
                     if k in result}
        runs[run].update({"chance_accuracy": chance_accuracy(result["variants"]["original"]),
                          "bootstrap": result["variants"]["original"]["bootstrap"]["method"],
                          "variants": variants, "summary": sentences.get(run), "findings": findings.get(run, [])})
        if outside is not None and len(outside):
            rows = outside[outside["model"] == run]
            runs[run]["gradcam_outside"] = rows.drop(columns="model").to_dict(orient="records")
    return {"variants": list(VARIANTS), "runs": runs}


# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------
def plot_variant_accuracy(results: dict[str, dict], key: str = "accuracy"):
    """Bars of ``key`` per run (groups) and variant (colours) with 95 % intervals; dotted: most frequent class."""
    import matplotlib.pyplot as plt

    runs = list(results)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(runs) + 2), 3.6))
    width = 0.8 / len(VARIANTS)
    for j, variant in enumerate(VARIANTS):
        values, low, high = [], [], []
        for run in runs:
            report = results[run]["variants"].get(variant, {})
            value = report.get(key, float("nan"))
            ci = report.get(f"{key}_ci") or [value, value]
            values.append(value)
            low.append(value - ci[0] if ci[0] is not None else 0.0)
            high.append(ci[1] - value if ci[1] is not None else 0.0)
        x = np.arange(len(runs)) + (j - (len(VARIANTS) - 1) / 2) * width
        ax.bar(x, values, width, yerr=[low, high], capsize=2, label=VARIANT_TEXT[variant])
    if key == "accuracy" and runs:
        chance = chance_accuracy(results[runs[0]]["variants"]["original"])
        ax.axhline(chance, color="black", linestyle=":", linewidth=1, label="most frequent class")
    ax.set_xticks(np.arange(len(runs)), runs, rotation=20, ha="right")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel(f"test {key.replace('_', ' ')}")
    ax.set_title("Four-class models under occlusion (95 % intervals)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def plot_variant_examples(images: Sequence[np.ndarray], titles: Sequence[str], fraction: float,
                          regions: Sequence[np.ndarray]):
    """One row per image (e.g. one per class), one column per variant: what the model is shown."""
    import matplotlib.pyplot as plt

    if len(images) != len(titles) or len(images) != len(regions):
        raise ValueError(f"need one title and one region per image, got {len(images)} images, {len(titles)} titles "
                         f"and {len(regions)} regions")
    fig, axes = plt.subplots(len(images), len(VARIANTS), figsize=(2.1 * len(VARIANTS), 2.1 * len(images)),
                             squeeze=False)
    for i, (image, title, region) in enumerate(zip(images, titles, regions)):
        for j, variant in enumerate(VARIANTS):
            ax = axes[i, j]
            ax.imshow(perturb(image, variant, fraction, region), cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(VARIANT_TEXT[variant], fontsize=8)
            if j == 0:
                ax.set_ylabel(title, fontsize=8)
    fig.tight_layout()
    return fig
