"""How faithful Grad-CAM maps are: scores against known masks, summaries and findings in words.

On the synthetic data the true lesion and lung masks are known, so every map is
scored (:func:`score_camset`) with the pointing game (is the maximum inside the
lesion?), the IoU of the top ``top_fraction`` of the map with the lesion (both from
:mod:`xraylib.metrics`) and the fraction of the map's energy inside the lungs.
:func:`summarize_scores` condenses them per model and class; :func:`shortcut_findings`
and :func:`map_findings` say in one sentence per model what deserves attention.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from xraylib import images, metrics
from xraylib.gradcam_sets import CamSet


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


def lung_energy_fraction(cam: np.ndarray, lung_mask: np.ndarray) -> float:
    """Share of the map's total value inside the lung mask (NaN for an all-zero map)."""
    cam = np.asarray(cam, dtype=np.float64)
    lung = np.asarray(lung_mask, dtype=bool)
    if cam.shape != lung.shape:
        raise ValueError(f"cam and lung mask must have the same shape, got {cam.shape} and {lung.shape}")
    total = cam.sum()
    return float(cam[lung].sum() / total) if total > 0 else float("nan")


def score_cam(cam: np.ndarray, lesion_mask: np.ndarray | None, lung_mask: np.ndarray | None,
              top_fraction: float = 0.1) -> dict:
    """Pointing game, top-k IoU (lesion images) and lung energy fraction (where a lung mask exists).

    Missing masks give ``None`` for the scores that need them.
    """
    out = {"pointing_game": None, "topk_iou": None, "lung_energy": None, "lesion_fraction": None,
           "lung_fraction": None}
    if lesion_mask is not None:
        out["pointing_game"] = bool(metrics.pointing_game(cam, lesion_mask))
        out["topk_iou"] = float(metrics.topk_iou(cam, lesion_mask, top_fraction))
        out["lesion_fraction"] = float(np.mean(lesion_mask))
    if lung_mask is not None:
        out["lung_energy"] = lung_energy_fraction(cam, lung_mask)
        out["lung_fraction"] = float(np.mean(lung_mask))
    return out


def score_camset(camset: CamSet, frame: pd.DataFrame, top_fraction: float = 0.1) -> pd.DataFrame:
    """One row per image: class, correctness and the scores of :func:`score_cam` on the true-class map.

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
                     "correct": bool(camset.y_true[i] == camset.y_pred[i]),
                     "empty_map": bool(camset.cam_true[i].max() <= 0), **scores})
    return pd.DataFrame(rows)


def _mean(values) -> float | None:
    values = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(values)) if values else None


def _summary(rows: pd.DataFrame) -> dict:
    lesion = rows[rows["pointing_game"].notna()]
    return {
        "images": int(len(rows)),
        "empty_maps": int(rows["empty_map"].sum()),
        "accuracy": float(rows["correct"].mean()) if len(rows) else None,
        "lesion_images": int(len(lesion)),
        "pointing_game": _mean(lesion["pointing_game"].astype(float)),
        "pointing_game_chance": _mean(lesion["lesion_fraction"]),
        "topk_iou": _mean(lesion["topk_iou"]),
        "lung_images": int(rows["lung_energy"].notna().sum()),
        "lung_energy": _mean(rows["lung_energy"]),
        "lung_energy_chance": _mean(rows["lung_fraction"]),
    }


def summarize_scores(scores: pd.DataFrame) -> dict:
    """Per-model summary of :func:`score_camset` rows: ``{"overall": ..., "per_class": {class: ...}}``.

    Each block has ``images``, ``empty_maps`` (maps without any positive value: nothing
    is pointed at; they count as misses), ``accuracy`` (on these images), ``lesion_images``,
    ``pointing_game`` (hit rate) with ``pointing_game_chance`` (mean lesion area: the
    hit rate of a random point), ``topk_iou``, ``lung_images``, ``lung_energy`` and
    ``lung_energy_chance`` (mean lung area: the share of a uniform map). ``None``
    where no image has the mask a score needs.
    """
    return {"overall": _summary(scores),
            "per_class": {label: _summary(group) for label, group in scores.groupby("label", sort=True)}}


def shortcut_findings(summaries: dict[str, dict], min_accuracy: float = 0.8, min_lung_energy: float = 0.5) -> list[str]:
    """Models that are accurate but whose maps lie mostly outside the lungs (possible shortcut learning).

    Args:
        summaries: ``{model: summarize_scores(...)}``.
        min_accuracy: accuracy from which a model counts as "scoring well".
        min_lung_energy: mean share of map energy inside the lungs below which it "looks elsewhere".

    Returns:
        One sentence per flagged model (empty when none); models without lung masks are not judged.
    """
    findings = []
    for name, summary in summaries.items():
        overall = summary["overall"]
        accuracy, energy = overall.get("accuracy"), overall.get("lung_energy")
        if accuracy is None or energy is None:
            continue
        if accuracy >= min_accuracy and energy < min_lung_energy:
            findings.append(
                f"{name}: accuracy {accuracy:.2f} but only {energy:.2f} of its Grad-CAM energy lies inside the lungs "
                f"(a uniform map would put {overall['lung_energy_chance']:.2f} there): it scores well while looking "
                f"elsewhere, a sign of shortcut learning.")
    return findings


def map_findings(infos: dict[str, dict], summaries: dict[str, dict], min_cells: int = 3) -> list[str]:
    """Models whose maps cannot localise: a target layer of fewer than ``min_cells`` cells a side, or mostly empty maps.

    Args:
        infos: ``{model: CamSet.info}`` (uses ``map_size`` and ``image_size``).
        summaries: ``{model: summarize_scores(...)}``.
        min_cells: smallest useful map side.

    Returns:
        One sentence per affected model (their localisation scores say little).
    """
    findings = []
    for name, info in infos.items():
        size = info.get("map_size")
        overall = summaries.get(name, {}).get("overall", {})
        empty, total = overall.get("empty_maps", 0), overall.get("images", 0)
        if size and min(size) < min_cells:
            findings.append(f"{name}: its Grad-CAM layer is only {size[0]}x{size[1]} at {info.get('image_size')}px "
                            f"input, too coarse to localise anything; its localisation scores are not meaningful "
                            f"(train at a larger image_size for usable maps).")
        elif total and empty / total > 0.5:
            findings.append(f"{name}: {empty} of {total} maps are empty (no positive evidence for the class); "
                            f"its localisation scores are not meaningful.")
    return findings


def summary_table(summaries: dict[str, dict]) -> pd.DataFrame:
    """One row per model and class (plus ``all``) with the headline scores, for display."""
    columns = ("images", "empty_maps", "accuracy", "pointing_game", "pointing_game_chance", "topk_iou",
               "lung_energy", "lung_energy_chance")
    rows = []
    for name, summary in summaries.items():
        for label, block in [("all", summary["overall"]), *summary["per_class"].items()]:
            rows.append({"model": name, "class": label, **{k: block[k] for k in columns}})
    table = pd.DataFrame(rows)
    numeric = [c for c in table.columns if c not in ("model", "class")]
    table[numeric] = table[numeric].apply(pd.to_numeric, errors="coerce")
    return table
