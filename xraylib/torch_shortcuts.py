"""Shortcut analysis of a four-class PyTorch checkpoint: its test split under occlusions (notebook 05).

:func:`evaluate_variants` loads a ``best.pt`` and hands it to :func:`evaluate_model`, which
prepares the split's images exactly as :class:`xraylib.torch_data.ManifestDataset` does
(:func:`xraylib.images.prepare` with the checkpoint's size, resizing and equalisation), occludes
each prepared ``uint8`` image with :func:`xraylib.shortcuts.perturb` (``original``,
``border_masked``, ``border_only``, ``lungs_blanked``) BEFORE the normal transform (grey to three
channels, ImageNet normalisation: :func:`xraylib.torch_data.build_transform`), predicts with
:func:`xraylib.torch_evaluate.predict`, and reports each variant with
:func:`xraylib.shortcuts.variant_report`: the :func:`xraylib.metrics.multiclass_report` of
notebook 04 (patient-clustered intervals, groups from :func:`xraylib.torch_evaluate.split_groups`)
plus each class's informedness. All variants share the bootstrap resamples (same labels, groups, seed).

The thorax region blanked is the image's true lung mask where the manifest has one (the
synthetic data), else :func:`xraylib.shortcuts.thorax_region` of the prepared image
(:func:`xraylib.shortcuts.image_region`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from xraylib import config, data, shortcuts
from xraylib.torch_data import ManifestDataset, make_generator, make_loader
from xraylib.torch_evaluate import predict, split_groups
from xraylib.torch_model import load_checkpoint


class OccludedManifestDataset(ManifestDataset):
    """A manifest split whose prepared images are occluded (:func:`xraylib.shortcuts.perturb`) before the transform.

    Set :attr:`variant` to switch the occlusion. The prepared images and their thorax regions
    are computed once and kept (loaders with ``num_workers=0``), so the variants share them.

    Args:
        manifest, split, image_size, resize_mode, equalize_method, class_names: as
            :class:`~xraylib.torch_data.ManifestDataset` (never augmented).
        border: band width per edge as a share of the side (``gradcam.shortcut_border``).
        region: ``central`` or ``lungs_otsu`` where the manifest has no lung mask (``gradcam.shortcut_region``).
        use_lung_masks: blank the manifest's true lung masks where it has them.
    """

    def __init__(self, manifest: pd.DataFrame, split: str, image_size: int, resize_mode: str, equalize_method: str,
                 class_names: Sequence[str] | None, *, border: float, region: str, use_lung_masks: bool = True):
        super().__init__(manifest, split, image_size, resize_mode, equalize_method, class_names=class_names,
                         train=False)
        if region not in shortcuts.REGIONS:
            raise ValueError(f"gradcam.shortcut_region must be one of {shortcuts.REGIONS}, got {region!r}")
        shortcuts.border_mask(2, border)  # raises for a fraction outside [0, 0.5)
        rows = data.select_split(manifest, split)
        use = use_lung_masks and "lung_mask" in rows.columns
        self.lung_masks = list(rows["lung_mask"]) if use else [None] * len(rows)
        self.border = float(border)
        self.region = region
        self.variant = "original"
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, str]] = {}

    def prepared(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        """``(prepared image, thorax region, its source)`` of sample ``index`` (cached)."""
        if index not in self._cache:
            image = super().load(index)
            region, source = shortcuts.image_region(image, self.lung_masks[index], self.resize_mode, self.region)
            self._cache[index] = (image, region, source)
        return self._cache[index]

    def load(self, index: int) -> np.ndarray:
        """The prepared image of sample ``index`` under the current :attr:`variant`."""
        image, region, _ = self.prepared(index)
        return shortcuts.perturb(image, self.variant, self.border, region)


def evaluate_model(model: nn.Module, class_names: Sequence[str], image_size: int, resize_mode: str,
                   equalize_method: str, manifest: pd.DataFrame, split: str = "test", *, border: float, region: str,
                   variants: Sequence[str] = shortcuts.VARIANTS, batch_size: int = 64, n_resamples: int = 1000,
                   seed: int = 0, use_lung_masks: bool = True,
                   device: str | torch.device = "cpu") -> dict:
    """A model's reports on one manifest split under each occlusion of :data:`xraylib.shortcuts.VARIANTS`.

    Args:
        model: a classifier of normalised ``(N, 3, S, S)`` inputs returning logits (on ``device``).
        class_names: its classes in index order.
        image_size, resize_mode, equalize_method: the image preparation it was trained with.
        manifest: the manifest (``path``, ``label``, ``split``; ``lung_mask`` and patient groups when known).
        split: the split evaluated.
        border: band width per edge (:func:`xraylib.shortcuts.border_mask`).
        region: thorax region where there is no true lung mask (:func:`xraylib.shortcuts.thorax_region`).
        variants: the occlusions, ``original`` among them.
        batch_size: images per forward pass.
        n_resamples, seed: the clustered bootstrap (:func:`xraylib.shortcuts.variant_report`).
        use_lung_masks: blank the manifest's true lung masks where it has them.
        device: where the model runs.

    Returns:
        ``{"split", "image_size", "border", "region", "region_source" ({source: images}), "fill",
        "variants": {variant: report}}``.
    """
    unknown = [v for v in variants if v not in shortcuts.VARIANTS]
    if unknown or "original" not in variants:
        raise ValueError(f"variants must be among {shortcuts.VARIANTS} and include 'original', got {list(variants)}")
    dataset = OccludedManifestDataset(manifest, split, image_size, resize_mode, equalize_method, class_names,
                                      border=border, region=region, use_lung_masks=use_lung_masks)
    groups = split_groups(manifest, [config.relative_to_project(p) for p, _ in dataset.samples])
    reports = {}
    for variant in variants:
        dataset.variant = variant
        loader = make_loader(dataset, batch_size, num_workers=0, generator=make_generator(seed))
        y_true, y_prob = predict(model, loader, device)
        reports[variant] = shortcuts.variant_report(y_true, y_prob, list(class_names), groups=groups,
                                                    n_resamples=n_resamples, seed=seed)
    sources = Counter(dataset.prepared(i)[2] for i in range(len(dataset)))
    return {"split": split, "image_size": int(image_size), "border": float(border), "region": region,
            "region_source": dict(sorted(sources.items())), "fill": "image median", "variants": reports}


def evaluate_variants(checkpoint: str | Path, manifest: pd.DataFrame, split: str = "test", *, border: float,
                      region: str, variants: Sequence[str] = shortcuts.VARIANTS, batch_size: int = 64,
                      n_resamples: int = 1000, seed: int = 0, use_lung_masks: bool = True,
                      device: str | torch.device | None = None) -> dict:
    """:func:`evaluate_model` of a ``best.pt`` (:mod:`xraylib.torch_train`), with its image settings; adds ``run``.

    ``device``: default CUDA when available.
    """
    checkpoint = config.resolve(checkpoint)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, meta = load_checkpoint(checkpoint, device)
    result = evaluate_model(model, meta["class_names"], meta["image_size"], meta["resize"], meta["equalize"],
                            manifest, split, border=border, region=region, variants=variants, batch_size=batch_size,
                            n_resamples=n_resamples, seed=seed, use_lung_masks=use_lung_masks, device=device)
    return {"run": checkpoint.parent.name, **result}
