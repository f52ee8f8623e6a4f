"""Occlusion analysis of PyTorch models: hand-made models that look only at the border or only at the centre
must behave as their occlusions predict, and a trained checkpoint's ``original`` figures equal its evaluation."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from xraylib import shortcuts
from xraylib.torch_data import IMAGENET_MEAN, IMAGENET_STD
from xraylib.torch_evaluate import evaluate_split
from xraylib.torch_shortcuts import OccludedManifestDataset, evaluate_model, evaluate_variants

SIZE = 40
CLASSES = ("A", "B", "C")
RING = (30, 80, 200)      # the outer 2 pixels of each side, per class (inside a 0.1 border band of 4 pixels)
CENTRE = (40, 100, 220)   # a 12 x 12 square in the middle (inside the central region, outside the band)
BORDER = 0.1


def _image(k: int, rng: np.random.Generator) -> np.ndarray:
    img = rng.normal(128, 8, (SIZE, SIZE))
    img[:2], img[-2:], img[:, :2], img[:, -2:] = RING[k], RING[k], RING[k], RING[k]
    img[14:26, 14:26] = CENTRE[k]
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def coded_manifest(tmp_path_factory) -> pd.DataFrame:
    """Six test images per class whose outer ring AND centre square both code the class; background median 128."""
    root = tmp_path_factory.mktemp("coded")
    rng = np.random.default_rng(0)
    rows = []
    for k, label in enumerate(CLASSES):
        for i in range(6):
            path = root / label / f"{label}_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_image(k, rng)).save(path)
            rows.append({"path": str(path), "label": label, "patient_id": f"p{k}{i}", "split": "test",
                         "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    return pd.DataFrame(rows)


class GreyLevelModel(nn.Module):
    """Logits from the mean grey of a fixed set of pixels only: the class whose grey level is nearest wins."""

    def __init__(self, pixels: np.ndarray, levels: tuple[int, ...]):
        super().__init__()
        self.register_buffer("pixels", torch.as_tensor(pixels, dtype=torch.bool))
        normalised = (torch.tensor(levels, dtype=torch.float32) / 255.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
        self.register_buffer("levels", normalised)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grey = x[:, 0][:, self.pixels].mean(dim=1, keepdim=True)
        return -100.0 * (grey - self.levels[None, :]) ** 2


def _ring() -> np.ndarray:
    return shortcuts.border_mask(SIZE, 2 / SIZE)


def _centre() -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), bool)
    mask[14:26, 14:26] = True
    return mask


def _accuracy(model: nn.Module, manifest: pd.DataFrame) -> tuple[dict[str, float], dict]:
    result = evaluate_model(model.eval(), list(CLASSES), SIZE, "stretch", "none", manifest, "test", border=BORDER,
                            region="central", n_resamples=50, seed=0)
    assert result["region_source"] == {"central": 18}
    return {variant: report["accuracy"] for variant, report in result["variants"].items()}, result


def test_the_regions_of_the_coded_images_are_where_the_models_look():
    """The ring lies in the band and outside the central region; the centre square inside it, outside the band."""
    band, central = shortcuts.border_mask(SIZE, BORDER), shortcuts.central_region(SIZE)
    assert band[_ring()].all() and not central[_ring()].any()
    assert central[_centre()].all() and not band[_centre()].any()


def test_a_border_model_keeps_its_accuracy_with_the_lungs_blanked_and_loses_it_with_the_border_masked(
        coded_manifest):
    accuracy, result = _accuracy(GreyLevelModel(_ring(), RING), coded_manifest)
    assert accuracy["original"] == 1.0
    assert accuracy["lungs_blanked"] == 1.0 and accuracy["border_only"] == 1.0
    assert accuracy["border_masked"] == pytest.approx(1 / 3)  # the median-filled ring: every image one class
    findings = shortcuts.shortcut_findings("border", result, min_informedness=0.4, min_retained=0.7, border_loss=0.5)
    for label in CLASSES:
        assert any(f.startswith(f"border: {label} is still recognised with the thorax region blanked") for f in findings)
        assert any(f.startswith(f"border: {label} is recognised from the outer 10% of each side alone")
                   for f in findings)
        assert any(f.startswith(f"border: {label} loses all of its informedness") for f in findings)


def test_a_centre_model_loses_its_accuracy_with_the_lungs_blanked_and_keeps_it_with_the_border_masked(
        coded_manifest):
    accuracy, result = _accuracy(GreyLevelModel(_centre(), CENTRE), coded_manifest)
    assert accuracy["original"] == 1.0 and accuracy["border_masked"] == 1.0
    assert accuracy["lungs_blanked"] == pytest.approx(1 / 3) and accuracy["border_only"] == pytest.approx(1 / 3)
    assert shortcuts.shortcut_findings("centre", result, min_informedness=0.4, min_retained=0.7,
                                       border_loss=0.5) == []


def test_true_lung_masks_are_blanked_where_the_manifest_has_them(coded_manifest, tmp_path):
    mask = np.zeros((SIZE * 2, SIZE * 2), np.uint8)
    mask[20:60, 10:30] = 255
    Image.fromarray(mask).save(tmp_path / "lungs.png")
    manifest = coded_manifest.assign(lung_mask=[str(tmp_path / "lungs.png")] + [""] * (len(coded_manifest) - 1))
    dataset = OccludedManifestDataset(manifest, "test", SIZE, "stretch", "none", list(CLASSES), border=BORDER,
                                      region="central")
    image, region, source = dataset.prepared(0)
    assert source == shortcuts.TRUE_MASKS and region.sum() == 20 * 10
    assert dataset.prepared(1)[2] == "central"
    dataset.variant = "lungs_blanked"
    blanked = dataset.load(0)
    np.testing.assert_array_equal(blanked[~region], image[~region])
    assert (blanked[region] == np.round(np.median(image))).all()
    tensor, target = dataset[0]
    assert tensor.shape == (3, SIZE, SIZE) and target == 0


def test_a_trained_checkpoint_original_variant_equals_its_evaluation(trained_checkpoint, tiny_manifest):
    result = evaluate_variants(trained_checkpoint, tiny_manifest, "test", border=BORDER, region="central",
                               n_resamples=100, seed=5, device="cpu")
    assert result["run"] == trained_checkpoint.parent.name and result["region_source"] == {"central": 6}
    assert list(result["variants"]) == list(shortcuts.VARIANTS)
    report, _ = evaluate_split(trained_checkpoint, tiny_manifest, "test", n_resamples=100, seed=5)
    original = result["variants"]["original"]
    for key in ("accuracy", "accuracy_ci", "macro_f1", "macro_f1_ci", "confusion_matrix"):
        assert original[key] == report[key], key
    for name, entry in report["per_class"].items():
        assert original["per_class"][name]["recall"] == entry["recall"]
        assert original["per_class"][name]["recall_ci"] == entry["recall_ci"]
    with pytest.raises(ValueError, match="include 'original'"):
        evaluate_variants(trained_checkpoint, tiny_manifest, border=BORDER, region="central",
                          variants=("border_only",))
