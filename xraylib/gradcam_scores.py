"""Grad-CAM *localisation* scores against known masks, with chance levels, ceilings and findings in words.

On the synthetic data the true lesion and lung masks are known, so every map is
scored (:func:`score_camset`) on how well it **localises** the lesion:

* :func:`pointing_game`: is the map's maximum inside the lesion? A maximum shared by
  several pixels scores the share of those pixels inside the lesion (the expected
  hit of breaking the tie at random);
* :func:`topk_iou`: IoU of the top ``top_fraction`` of the map with the lesion, ties
  at the k-th value shared out fractionally (no pixel position is preferred), with
  its ceiling (:func:`topk_iou_ceiling`, a perfect map) and chance level
  (:func:`topk_iou_chance`);
* :func:`lung_energy_fraction`: share of the map's energy inside the lungs.

Chance levels are taken **inside the lungs** where a lung mask exists (a random point
in the lungs, :func:`pointing_game_chance`), since the lesions lie there; the whole
image is a far lower and too easy bar. Empty maps (no positive value, or constant:
:func:`is_empty_map`) point nowhere: they score NaN, are counted (``empty_maps``)
and left out of every mean and chance level.

These scores say whether a map lies on the lesion, not whether the model used those
pixels: that is faithfulness, checked by :mod:`xraylib.gradcam_faithfulness`.
:func:`summarize_scores` condenses them per model and class; :func:`shortcut_findings`
and :func:`map_findings` say in one sentence per model what deserves attention.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from xraylib import images, statistics
from xraylib.gradcam_sets import CamSet

# Values within this share of the map's maximum count as equal (float32 rounding of upsampled plateaus).
TIE_TOLERANCE = 1e-6
def load_mask(path: str | float | None, size: int, resize_mode: str = "stretch") -> np.ndarray | None:
    """A mask file resized like the images (:func:`xraylib.images.resize`), as bool; ``None`` when there is none.

    Empty paths (normal images, sources without masks) and all-zero masks give ``None``.
    """
    if path is None or (isinstance(path, float) and math.isnan(path)) or str(path).strip() == "":
        return None
    gray = images.load_gray(path)
    mask = images.resize(gray, size, resize_mode) >= 128
    return mask if mask.any() else None


def camset_masks(camset: CamSet, frame: pd.DataFrame, column: str = "lesion_mask") -> np.ndarray:
    """``(N, S, S)`` bool masks of ``frame[column]`` resized like the CAM set's images (all False where none)."""
    camset.check_rows(frame)
    size, mode = camset.images.shape[1], camset.info.get("resize", "stretch")
    masks = np.zeros(camset.images.shape, dtype=bool)
    for i, path in enumerate(frame[column] if column in frame.columns else []):
        mask = load_mask(path, size, mode)
        if mask is not None:
            masks[i] = mask
    return masks


def _pair(cam, mask, what: str = "lesion mask") -> tuple[np.ndarray, np.ndarray]:
    """``(cam as float64, mask as bool)``, checked: one shape, finite map values."""
    cam = np.asarray(cam, dtype=np.float64)
    mask = np.asarray(mask).astype(bool)
    if cam.shape != mask.shape:
        raise ValueError(f"cam and {what} must have the same shape, got {cam.shape} and {mask.shape}")
    if not np.isfinite(cam).all():
        raise ValueError("cam has NaN or infinite values; expected a finite map (e.g. from upsample_cam)")
    return cam, mask


def _lesion(cam, lesion_mask) -> tuple[np.ndarray, np.ndarray]:
    cam, lesion = _pair(cam, lesion_mask)
    if not lesion.any():
        raise ValueError("localisation scores need a non-empty lesion mask (normal images have none: skip them)")
    return cam, lesion


def is_empty_map(cam) -> bool:
    """True for a map that points nowhere: no positive value, or the same value everywhere.

    Values closer than :data:`TIE_TOLERANCE` times the maximum count as equal.
    """
    cam = np.asarray(cam, dtype=np.float64)
    top = float(cam.max()) if cam.size else 0.0
    return not top > 0 or top - float(cam.min()) <= TIE_TOLERANCE * top


def pointing_game(cam, lesion_mask) -> float:
    """Localisation hit of the map's maximum: 1 inside the lesion, 0 outside, NaN for an empty map.

    A maximum shared by several pixels (ties within :data:`TIE_TOLERANCE` of it)
    scores the share of those pixels inside the lesion: the expected hit when the
    tie is broken at random, so no pixel position (e.g. the first in memory order)
    is favoured.

    Raises:
        ValueError: shapes differ, the map is not finite, or the lesion mask is empty.
    """
    cam, lesion = _lesion(cam, lesion_mask)
    if is_empty_map(cam):
        return float("nan")
    top = cam.max()
    tied = cam >= top - TIE_TOLERANCE * top
    return float(lesion[tied].mean())


def region_share(lesion_mask, region_mask=None) -> tuple[float, str]:
    """``(share of the region covered by the lesion, region)``: region ``lungs`` with a lung mask, else ``image``.

    It is the chance level of the pointing game: the hit rate of a point drawn
    uniformly inside the region (:func:`pointing_game_chance`).
    """
    lesion = np.asarray(lesion_mask).astype(bool)
    if region_mask is not None and np.asarray(region_mask).any():
        region = np.asarray(region_mask).astype(bool)
        if region.shape != lesion.shape:
            raise ValueError(f"lesion and lung masks must have the same shape, got {lesion.shape} and {region.shape}")
        return float((lesion & region).sum() / region.sum()), "lungs"
    return float(lesion.mean()), "image"


def pointing_game_chance(lesion_mask, lung_mask=None) -> float:
    """Chance level of :func:`pointing_game`: |lesion ∩ lungs| / |lungs|; without lungs, the lesion's image share."""
    return region_share(lesion_mask, lung_mask)[0]


def top_k(size: int, top_fraction: float) -> int:
    """Number of pixels the top-k IoU keeps: ``round(top_fraction * size)``, at least 1."""
    if not 0 < top_fraction <= 1:
        raise ValueError(f"top_fraction must lie in (0, 1], got {top_fraction!r}")
    return max(1, int(round(top_fraction * size)))


def topk_weights(cam, top_fraction: float = 0.1) -> np.ndarray:
    """Weight of each pixel in the map's top ``k`` (:func:`top_k`): 1 above the k-th value, a share for ties, else 0.

    Pixels tied with the k-th largest value (within :data:`TIE_TOLERANCE` of the
    maximum) share the places left, ``(k - above) / tied`` each: the expected
    membership under random tie-breaking. The weights sum to ``k``.
    """
    cam = np.asarray(cam, dtype=np.float64)
    k = top_k(cam.size, top_fraction)
    flat = cam.ravel()
    kth = np.partition(flat, flat.size - k)[flat.size - k]
    tolerance = TIE_TOLERANCE * max(float(flat.max()), 0.0)
    above = flat > kth + tolerance
    tied = ~above & (flat >= kth - tolerance)
    weights = above.astype(np.float64)
    weights[tied] = (k - above.sum()) / tied.sum()
    return weights.reshape(cam.shape)


def _iou(intersection: float, k: float, lesion: float) -> float:
    return float(intersection / (k + lesion - intersection))


def topk_iou(cam, lesion_mask, top_fraction: float = 0.1) -> float:
    """Localisation IoU of the map's top ``top_fraction`` with the lesion; NaN for an empty map.

    Ties at the k-th value get fractional membership (:func:`topk_weights`), so the
    intersection and union are their expected values under random tie-breaking (a
    constant map would score the chance level, never a position-dependent value; it
    is empty and scores NaN). Compare with :func:`topk_iou_ceiling` and :func:`topk_iou_chance`.

    Raises:
        ValueError: shapes differ, the map is not finite, the lesion mask is empty or
            ``top_fraction`` is outside (0, 1].
    """
    cam, lesion = _lesion(cam, lesion_mask)
    k = top_k(cam.size, top_fraction)
    if is_empty_map(cam):
        return float("nan")
    return _iou(float(topk_weights(cam, top_fraction)[lesion].sum()), k, float(lesion.sum()))


def topk_iou_ceiling(lesion_mask, top_fraction: float = 0.1) -> float:
    """Best top-k IoU any map can reach: ``min(k, |lesion|) / max(k, |lesion|)``.

    With ``k`` fixed by ``top_fraction``, a lesion of 3 % of the image and 10 % kept
    reach at most 0.3: a topk IoU of 0.25 is then close to perfect localisation.
    """
    lesion = np.asarray(lesion_mask).astype(bool)
    k, area = top_k(lesion.size, top_fraction), int(lesion.sum())
    if not area:
        raise ValueError("localisation scores need a non-empty lesion mask (normal images have none: skip them)")
    return float(min(k, area) / max(k, area))


def topk_iou_chance(lesion_mask, top_fraction: float = 0.1, lung_mask=None) -> float:
    """Top-k IoU of ``k`` pixels drawn at random inside the lungs (the whole image without a lung mask).

    When ``k`` exceeds the lungs, all of them are taken and the rest is drawn
    outside. The expected intersection ``E[I]`` gives ``E[I] / (k + |lesion| - E[I])``
    (expected intersection over expected union, as :func:`topk_iou` treats ties).
    """
    lesion = np.asarray(lesion_mask).astype(bool)
    k, area, n = top_k(lesion.size, top_fraction), int(lesion.sum()), lesion.size
    if not area:
        raise ValueError("localisation scores need a non-empty lesion mask (normal images have none: skip them)")
    region = np.asarray(lung_mask).astype(bool) if lung_mask is not None and np.asarray(lung_mask).any() else None
    if region is None:
        return _iou(k * area / n, k, area)
    inside, m = min(k, int(region.sum())), int(region.sum())
    outside_lesion = int((lesion & ~region).sum())
    expected = inside * (lesion & region).sum() / m + ((k - inside) * outside_lesion / (n - m) if n > m else 0.0)
    return _iou(float(expected), k, area)


def lung_energy_fraction(cam: np.ndarray, lung_mask: np.ndarray) -> float:
    """Share of the map's total value inside the lung mask (NaN for an all-zero map)."""
    cam, lung = _pair(cam, lung_mask, "lung mask")
    total = cam.sum()
    return float(cam[lung].sum() / total) if total > 0 else float("nan")


def score_cam(cam: np.ndarray, lesion_mask: np.ndarray | None, lung_mask: np.ndarray | None,
              top_fraction: float = 0.1) -> dict:
    """Localisation scores of one map, with the chance levels and ceiling of its masks.

    Returns:
        ``empty_map`` (:func:`is_empty_map`); with a lesion: ``pointing_game``,
        ``pointing_game_chance``, ``chance_region`` (``lungs`` or ``image``, see
        :func:`region_share`), ``topk_iou``, ``topk_iou_chance``, ``topk_iou_ceiling``
        and ``lesion_fraction`` (share of the image); with a lung mask:
        ``lung_energy`` and ``lung_fraction``. Scores of an empty map are NaN;
        missing masks give ``None``.
    """
    out = {"empty_map": is_empty_map(cam), "pointing_game": None, "pointing_game_chance": None,
           "chance_region": None, "topk_iou": None, "topk_iou_chance": None, "topk_iou_ceiling": None,
           "lesion_fraction": None, "lung_energy": None, "lung_fraction": None}
    if lesion_mask is not None:
        share, region = region_share(lesion_mask, lung_mask)
        out.update(pointing_game=pointing_game(cam, lesion_mask), pointing_game_chance=share, chance_region=region,
                   topk_iou=topk_iou(cam, lesion_mask, top_fraction),
                   topk_iou_chance=topk_iou_chance(lesion_mask, top_fraction, lung_mask),
                   topk_iou_ceiling=topk_iou_ceiling(lesion_mask, top_fraction),
                   lesion_fraction=float(np.mean(lesion_mask)))
    if lung_mask is not None:
        out["lung_energy"] = float("nan") if out["empty_map"] else lung_energy_fraction(cam, lung_mask)
        out["lung_fraction"] = float(np.mean(lung_mask))
    return out


def score_camset(camset: CamSet, frame: pd.DataFrame, top_fraction: float = 0.1) -> pd.DataFrame:
    """One row per image: class, correctness and the localisation scores of :func:`score_cam` on the true-class map.

    Args:
        camset: maps of one model; ``camset.paths`` must match ``frame["path"]`` in order.
        frame: the rows the maps were computed on, with ``label``, ``lesion_mask`` and ``lung_mask``.
        top_fraction: share of the map kept for the top-k IoU.

    Masks are resized like the images (the model's ``image_size`` and ``resize``
    from ``camset.info``). The true-class map is scored: the evidence the model
    finds for the finding that is really there.
    """
    camset.check_rows(frame)
    lesions, lungs = camset_masks(camset, frame, "lesion_mask"), camset_masks(camset, frame, "lung_mask")
    rows = []
    for i, row in enumerate(frame.itertuples(index=False)):
        scores = score_cam(camset.cam_true[i], lesions[i] if lesions[i].any() else None,
                           lungs[i] if lungs[i].any() else None, top_fraction)
        rows.append({"model": camset.name, "path": row.path, "label": row.label,
                     "predicted": camset.class_names[int(camset.y_pred[i])],
                     "correct": bool(camset.y_true[i] == camset.y_pred[i]), **scores})
    return pd.DataFrame(rows)


def _mean(values) -> float | None:
    values = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(values)) if values else None


def _region(regions) -> str | None:
    kinds = sorted(set(regions))
    return None if not kinds else kinds[0] if len(kinds) == 1 else "mixed"


def _mean_ci(rows: pd.DataFrame, column: str) -> list[float] | None:
    """95 % bootstrap interval of the mean of ``column`` over the images that have a value (by class; BCa).

    Over images, not patients: the Grad-CAM sample is a few images per class (``gradcam.max_per_class``).
    """
    values = pd.to_numeric(rows[column], errors="coerce").to_numpy(dtype=float)
    keep = np.isfinite(values)
    if keep.sum() < 2:
        return None
    res = statistics.resample(rows["label"].to_numpy()[keep], None, n_resamples=1000, seed=0)
    return statistics.bootstrap({"mean": lambda w: (w @ values[keep]) / w.sum(axis=1)}, res)["mean"]["ci"]


def _summary(rows: pd.DataFrame) -> dict:
    lesion = rows[rows["pointing_game_chance"].notna()]
    scored = lesion[~lesion["empty_map"].astype(bool)]
    lung = rows[rows["lung_fraction"].notna() & ~rows["empty_map"].astype(bool)]
    return {
        "images": int(len(rows)),
        "empty_maps": int(rows["empty_map"].sum()),
        "accuracy": float(rows["correct"].mean()) if len(rows) else None,
        "lesion_images": int(len(lesion)),
        "scored_images": int(len(scored)),
        "pointing_game": _mean(scored["pointing_game"]),
        "pointing_game_ci": _mean_ci(scored, "pointing_game"),
        "pointing_game_chance": _mean(scored["pointing_game_chance"]),
        "chance_region": _region(scored["chance_region"]),
        "topk_iou": _mean(scored["topk_iou"]),
        "topk_iou_ci": _mean_ci(scored, "topk_iou"),
        "topk_iou_chance": _mean(scored["topk_iou_chance"]),
        "topk_iou_ceiling": _mean(scored["topk_iou_ceiling"]),
        "lung_images": int(len(lung)),
        "lung_energy": _mean(lung["lung_energy"]),
        "lung_energy_ci": _mean_ci(lung, "lung_energy"),
        "lung_energy_chance": _mean(lung["lung_fraction"]),
    }


def summarize_scores(scores: pd.DataFrame) -> dict:
    """Per-model summary of :func:`score_camset` rows: ``{"overall": ..., "per_class": {class: ...}}``.

    Each block holds localisation scores (does the map lie on the lesion?), not
    faithfulness (did the model use those pixels?):

    * ``images``, ``accuracy`` (on these images), ``empty_maps`` (maps pointing
      nowhere, :func:`is_empty_map`: counted here and left out of every mean and chance level);
    * ``lesion_images`` (with a lesion mask) and ``scored_images`` (those with a
      non-empty map: the images behind the lesion scores);
    * ``pointing_game`` (mean hit, ties shared) with ``pointing_game_chance`` (mean
      share of the lesion in the lungs, or in the image: ``chance_region`` says
      ``lungs``, ``image`` or ``mixed``);
    * ``topk_iou`` with ``topk_iou_chance`` (random top-k inside the same region) and
      ``topk_iou_ceiling`` (a perfect map);
    * ``lung_images`` (lung mask and non-empty map), ``lung_energy`` and
      ``lung_energy_chance`` (mean lung area: the share of a uniform map).

    ``pointing_game``, ``topk_iou`` and ``lung_energy`` carry a 95 % interval (``_ci``)
    from a bootstrap over the scored images. ``None`` where no image has what a score needs.
    """
    return {"overall": _summary(scores),
            "per_class": {label: _summary(group) for label, group in scores.groupby("label", sort=True)}}


def shortcut_findings(summaries: dict[str, dict], min_accuracy: float = 0.8, min_lung_energy: float = 0.5,
                      unusable: Iterable[str] = ()) -> list[str]:
    """Models that are accurate but whose maps lie mostly outside the lungs (possible shortcut learning).

    Args:
        summaries: ``{model: summarize_scores(...)}``.
        min_accuracy: accuracy from which a model counts as "scoring well".
        min_lung_energy: mean share of map energy inside the lungs below which it "looks elsewhere".
        unusable: models whose maps cannot localise (:func:`unusable_maps`): not judged, since a map
            of 2x2 cells puts about a uniform map's share in the lungs whatever the model looks at.

    Returns:
        One sentence per flagged model (empty when none); models without lung masks are not judged.
    """
    findings, skip = [], set(unusable)
    for name, summary in summaries.items():
        overall = summary["overall"]
        accuracy, energy = overall.get("accuracy"), overall.get("lung_energy")
        if name in skip or accuracy is None or energy is None:
            continue
        if accuracy >= min_accuracy and energy < min_lung_energy:
            ci = overall.get("lung_energy_ci")
            interval = f" (95 % CI {ci[0]:.2f}-{ci[1]:.2f})" if ci else ""
            findings.append(
                f"{name}: accuracy {accuracy:.2f} but only {energy:.2f}{interval} of its Grad-CAM energy lies inside "
                f"the lungs (a uniform map would put {overall['lung_energy_chance']:.2f} there): it scores well while "
                f"looking elsewhere, a sign of shortcut learning.")
    return findings


def _unusable_reason(info: dict, overall: dict, min_cells: int) -> str | None:
    size = info.get("map_size")
    empty, total = overall.get("empty_maps", 0), overall.get("images", 0)
    if size and min(size) < min_cells:
        return (f"its Grad-CAM layer is only {size[0]}x{size[1]} at {info.get('image_size')}px input, too coarse to "
                f"localise anything; its localisation scores are not meaningful (train at a larger image_size for "
                f"usable maps).")
    if total and empty / total > 0.5:
        return (f"{empty} of {total} maps are empty (no positive evidence for the class, or the same value "
                f"everywhere); its localisation scores are not meaningful.")
    return None


def unusable_maps(infos: dict[str, dict], summaries: dict[str, dict], min_cells: int = 3) -> list[str]:
    """Names of the models whose maps cannot localise (the models :func:`map_findings` reports)."""
    return [name for name, info in infos.items()
            if _unusable_reason(info, summaries.get(name, {}).get("overall", {}), min_cells)]


def map_findings(infos: dict[str, dict], summaries: dict[str, dict], min_cells: int = 3) -> list[str]:
    """Models whose maps cannot localise: a target layer of fewer than ``min_cells`` cells a side, or mostly empty maps.

    Args:
        infos: ``{model: CamSet.info}`` (uses ``map_size`` and ``image_size``).
        summaries: ``{model: summarize_scores(...)}``.
        min_cells: smallest useful map side.

    Returns:
        One sentence per affected model (their localisation scores say little).
    """
    reasons = {name: _unusable_reason(info, summaries.get(name, {}).get("overall", {}), min_cells)
               for name, info in infos.items()}
    return [f"{name}: {reason}" for name, reason in reasons.items() if reason]


def localisation_findings(summaries: dict[str, dict]) -> list[str]:
    """One sentence per model with lesion scores: pointing game and top-k IoU beside their chance levels and ceiling.

    Args:
        summaries: ``{model: summarize_scores(...)}``.

    Returns:
        Sentences such as "binary: localisation on 15 lesion images (2 empty maps left out): pointing game 0.40
        (chance inside the lungs 0.13, perfect 1); top-k IoU 0.12 (chance 0.05, ceiling 0.31)."
    """
    findings = []
    for name, summary in summaries.items():
        o = summary["overall"]
        if not o.get("lesion_images"):
            continue
        empty = o["lesion_images"] - o["scored_images"]
        head = f"{name}: localisation on {o['scored_images']} lesion images ({empty} empty maps left out)"
        if o["pointing_game"] is None:
            findings.append(f"{head}: every map is empty, nothing to score.")
            continue
        where = {"lungs": "inside the lungs", "image": "in the whole image"}.get(o["chance_region"],
                                                                            "inside the lungs or the image")
        findings.append(f"{head}: pointing game {o['pointing_game']:.2f} (chance {where} "
                        f"{o['pointing_game_chance']:.2f}, perfect 1); top-k IoU {o['topk_iou']:.2f} "
                        f"(chance {o['topk_iou_chance']:.2f}, ceiling {o['topk_iou_ceiling']:.2f}).")
    return findings


TABLE_COLUMNS = ("images", "empty_maps", "accuracy", "scored_images", "pointing_game", "pointing_game_chance",
                 "chance_region", "topk_iou", "topk_iou_chance", "topk_iou_ceiling", "lung_energy",
                 "lung_energy_chance")


def summary_table(summaries: dict[str, dict]) -> pd.DataFrame:
    """Localisation scores for display: one row per model and class (plus ``all``), columns :data:`TABLE_COLUMNS`."""
    rows = []
    for name, summary in summaries.items():
        for label, block in [("all", summary["overall"]), *summary["per_class"].items()]:
            rows.append({"model": name, "class": label, **{k: block[k] for k in TABLE_COLUMNS}})
    table = pd.DataFrame(rows)
    numeric = [c for c in table.columns if c not in ("model", "class", "chance_region")]
    table[numeric] = table[numeric].apply(pd.to_numeric, errors="coerce")
    return table
