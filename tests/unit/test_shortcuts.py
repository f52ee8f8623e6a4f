"""Framework-free shortcut analysis: regions, occlusions, Grad-CAM energy outside the thorax, reports and findings."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from xraylib import gradcam_sets, outputs, schema, shortcuts, synthetic

SIZES = (40, 64, 128, 224)


def _image(size: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)


# --------------------------------------------------------------------------------------------------
# Regions
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.15, 0.25])
def test_border_band_has_the_area_of_its_width(size, fraction):
    band = shortcuts.border_mask(size, fraction)
    width = int(round(fraction * size))
    assert band.shape == (size, size) and band.dtype == bool
    assert band.sum() == size * size - (size - 2 * width) ** 2
    if width:  # the band is the outer `width` pixels of every edge, nothing else
        assert band[:width].all() and band[-width:].all() and band[:, :width].all() and band[:, -width:].all()
        assert not band[width:-width, width:-width].any()


def test_border_band_of_a_rectangle_and_bad_fractions():
    band = shortcuts.border_mask((30, 50), 0.1)
    assert band.shape == (30, 50) and band.sum() == 30 * 50 - (30 - 6) * (50 - 10)
    for bad in (-0.1, 0.5, 0.7, True):
        with pytest.raises(ValueError, match="border fraction"):
            shortcuts.border_mask(40, bad)


@pytest.mark.parametrize("size", SIZES)
def test_central_region_is_a_fixed_share_in_the_middle(size):
    region = shortcuts.central_region(size)
    assert abs(region.mean() - 0.578) < 0.02  # the same share of the image at any size
    assert region[int(0.46 * size), size // 2] and not region[0, 0] and not region[-1, -1]
    np.testing.assert_array_equal(region, region[:, ::-1])  # left-right symmetric


def test_central_region_holds_the_synthetic_lungs_and_otsu_finds_them():
    for seed in range(4):
        image, _, lungs = synthetic.make_image("Normal", "multiclass", seed, 96, 0.15)
        central = shortcuts.central_region(96)
        assert (lungs & central).sum() / lungs.sum() > 0.99
        mask, ok = shortcuts.otsu_lungs(image)
        assert ok and shortcuts.dice(mask, lungs) > 0.85
        np.testing.assert_array_equal(shortcuts.thorax_region(image, "lungs_otsu"), mask)
        np.testing.assert_array_equal(shortcuts.thorax_region(image, "central"), central)


def test_otsu_falls_back_to_the_central_region_on_a_flat_image():
    mask, ok = shortcuts.otsu_lungs(np.full((64, 64), 90, np.uint8))
    assert not ok
    np.testing.assert_array_equal(mask, shortcuts.central_region(64))
    with pytest.raises(ValueError, match="thorax region must be one of"):
        shortcuts.thorax_region(_image(), "lungs_unet")


def test_image_region_takes_a_true_lung_mask_when_given(tmp_path):
    from PIL import Image

    mask = np.zeros((80, 80), np.uint8)
    mask[20:60, 10:30] = 255
    Image.fromarray(mask).save(tmp_path / "lungs.png")
    region, source = shortcuts.image_region(_image(40), str(tmp_path / "lungs.png"), "stretch", "central")
    assert source == shortcuts.TRUE_MASKS and region.shape == (40, 40) and region[10:30, 5:15].all()
    assert region.sum() == 20 * 10
    for missing in (None, "", float("nan")):
        region, source = shortcuts.image_region(_image(40), missing, "stretch", "central")
        assert source == "central"


def test_the_schema_choices_agree_with_the_regions():
    assert set(schema.ShortcutRegion.__args__) == set(shortcuts.REGIONS)


# --------------------------------------------------------------------------------------------------
# Occlusions: only the intended pixels change, filled with the image's median; inputs untouched
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", (40, 224))
def test_each_occlusion_changes_only_its_pixels(size):
    image = _image(size, seed=size)
    before = image.copy()
    band = shortcuts.border_mask(size, 0.1)
    region = shortcuts.central_region(size)
    median = int(np.round(np.median(image)))
    cases = {"border_masked": band, "border_only": ~band, "lungs_blanked": region}
    for variant, changed in cases.items():
        out = shortcuts.perturb(image, variant, 0.1, region)
        assert out.dtype == np.uint8 and out.shape == image.shape
        np.testing.assert_array_equal(out[~changed], image[~changed])
        assert (out[changed] == median).all()
    np.testing.assert_array_equal(image, before)  # pure functions
    original = shortcuts.perturb(image, "original", 0.1)
    np.testing.assert_array_equal(original, image)
    assert original is not image


def test_occlusions_take_a_given_value_and_check_their_inputs():
    image = _image(32)
    np.testing.assert_array_equal(shortcuts.mask_border(image, 0.25, value=0)[:8], 0)
    assert (shortcuts.border_only(image, 0.25, value=7)[8:24, 8:24] == 7).all()
    with pytest.raises(ValueError, match="uint8"):
        shortcuts.mask_border(image.astype(np.float32), 0.1)
    with pytest.raises(ValueError, match="shape"):
        shortcuts.blank_lungs(image, np.ones((16, 16), bool))
    with pytest.raises(ValueError, match="needs the thorax region"):
        shortcuts.perturb(image, "lungs_blanked", 0.1)
    with pytest.raises(ValueError, match="variant must be one of"):
        shortcuts.perturb(image, "lungs_only", 0.1)


def test_fill_value_is_the_median():
    image = np.array([[0, 0, 10], [10, 10, 200], [250, 250, 255]], np.uint8)
    assert shortcuts.fill_value(image) == 10


# --------------------------------------------------------------------------------------------------
# Grad-CAM energy outside the thorax region
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", (40, 96))
def test_outside_share_against_uniform_inside_and_outside_maps(size):
    region = shortcuts.central_region(size)
    share, chance = shortcuts.outside_share(np.ones((size, size)), region)
    assert chance == pytest.approx(1 - region.mean()) and share == pytest.approx(chance)
    assert shortcuts.outside_share(region.astype(float), region)[0] == 0.0
    assert shortcuts.outside_share((~region).astype(float), region)[0] == 1.0
    assert np.isnan(shortcuts.outside_share(np.zeros((size, size)), region)[0])
    with pytest.raises(ValueError, match="same shape"):
        shortcuts.outside_share(np.ones((size, size + 1)), region)


def _camset(size: int = 32) -> gradcam_sets.CamSet:
    region = shortcuts.central_region(size)
    y_true = np.array([0, 0, 1, 1])
    cams = np.stack([region, region, ~region, np.ones((size, size), bool)]).astype(np.float32)  # last: constant
    images = np.full((4, size, size), 120, np.uint8)
    return gradcam_sets.CamSet("toy", ["A", "B"], [f"{i}.png" for i in range(4)], images, y_true, y_true.copy(),
                               np.eye(2)[y_true], cams, cams.copy(), {"image_size": size, "map_size": [4, 4]})


def test_outside_table_per_class_with_chance():
    camset = _camset()
    table = shortcuts.outside_table(camset, {"central": shortcuts.camset_regions(camset, "central")},
                                    n_resamples=50)
    rows = table.set_index("class")
    chance = 1 - shortcuts.central_region(32).mean()
    assert rows.loc["A", "outside_share"] == 0.0 and rows.loc["A", "images"] == 2
    # B's constant map points nowhere (gradcam_scores.is_empty_map): left out, not scored as a uniform map
    assert rows.loc["B", "outside_share"] == 1.0 and rows.loc["B", "images"] == 1
    assert rows.loc["all", "chance"] == pytest.approx(chance) and rows.loc["all", "images"] == 3
    shown = shortcuts.outside_display(table, unusable=["toy"])
    assert not shown["usable"].any() and isinstance(shown["outside_share"].iloc[0], str)


# --------------------------------------------------------------------------------------------------
# Reports and findings
# --------------------------------------------------------------------------------------------------
def test_informedness_is_zero_for_a_class_called_for_every_image():
    y_true = np.repeat([0, 1, 2], 10)
    collapsed = np.tile([0.1, 0.1, 0.8], (30, 1))  # every image called class 2
    report = shortcuts.variant_report(y_true, collapsed, ["A", "B", "C"], n_resamples=100)
    assert report["per_class"]["C"]["recall"] == 1.0
    assert report["per_class"]["C"]["informedness"] == 0.0
    low, high = report["per_class"]["C"]["informedness_ci"]
    assert low <= 0 <= high and high > low  # no point interval from a resample-free statistic
    perfect = shortcuts.variant_report(y_true, np.eye(3)[y_true], ["A", "B", "C"], n_resamples=100)
    assert perfect["per_class"]["A"]["informedness"] == 1.0
    assert 0 < perfect["per_class"]["A"]["informedness_ci"][0] < 1


def _entry(informedness, recall=None, ci=None):
    recall = informedness if recall is None else recall
    return {"informedness": informedness, "recall": recall,
            "informedness_ci": ci if ci is not None else [informedness - 0.1, informedness + 0.1]}


def _result(per_variant: dict[str, dict[str, dict]]) -> dict:
    return {"border": 0.1, "variants": {v: {"accuracy": 0.5, "per_class": classes}
                                        for v, classes in per_variant.items()}}


THRESHOLDS = {"min_informedness": 0.4, "min_retained": 0.7, "border_loss": 0.5}


def test_findings_name_the_shortcut_classes():
    result = _result({
        "original": {"COVID": _entry(0.9), "Normal": _entry(0.8), "Viral Pneumonia": _entry(0.95),
                     "Lung_Opacity": _entry(0.3)},
        "lungs_blanked": {"COVID": _entry(0.1), "Normal": _entry(0.05), "Viral Pneumonia": _entry(0.85),
                          "Lung_Opacity": _entry(0.3)},
        "border_only": {"COVID": _entry(0.6, ci=[0.45, 0.75]), "Normal": _entry(0.5, ci=[-0.05, 0.9]),
                        "Viral Pneumonia": _entry(0.2), "Lung_Opacity": _entry(0.3)},
        "border_masked": {"COVID": _entry(0.3), "Normal": _entry(0.75), "Viral Pneumonia": _entry(0.9),
                          "Lung_Opacity": _entry(0.0)},
    })
    findings = shortcuts.shortcut_findings("resnet18", result, **THRESHOLDS)
    assert len(findings) == 3, findings
    border_alone, border_needed, blanked = findings  # in class order: COVID's two, then Viral Pneumonia's
    assert blanked.startswith("resnet18: Viral Pneumonia is still recognised with the thorax region blanked")
    assert "0.85" in blanked and "0.95" in blanked
    assert border_alone.startswith("resnet18: COVID is recognised from the outer 10% of each side alone")
    assert border_needed.startswith("resnet18: COVID loses 67% of its informedness")
    # Normal's border-only interval includes 0; Lung_Opacity is not recognised on the original images: not judged
    assert not any("Normal" in f or "Lung_Opacity" in f for f in findings)


def test_findings_are_empty_for_a_model_that_needs_the_lungs_and_thresholds_are_checked():
    result = _result({"original": {"A": _entry(0.9)}, "lungs_blanked": {"A": _entry(0.0)},
                      "border_only": {"A": _entry(0.05)}, "border_masked": {"A": _entry(0.85)}})
    assert shortcuts.shortcut_findings("m", result, **THRESHOLDS) == []
    # a class keeping 0.6 of 0.9 with the lungs blanked is flagged at min_retained 0.6, not at 0.7
    result["variants"]["lungs_blanked"]["per_class"]["A"] = _entry(0.6)
    assert shortcuts.shortcut_findings("m", result, **THRESHOLDS) == []
    assert len(shortcuts.shortcut_findings("m", result, **{**THRESHOLDS, "min_retained": 0.6})) == 1
    with pytest.raises(ValueError, match="min_retained must lie in"):
        shortcuts.shortcut_findings("m", result, **{**THRESHOLDS, "min_retained": 1.5})
    with pytest.raises(ValueError, match="compare with the original"):
        shortcuts.shortcut_findings("m", _result({"border_only": {"A": _entry(0.9)}}), **THRESHOLDS)


def _real_result(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    y_true = np.repeat([0, 1, 2], 12)
    names = ["A", "B", "C"]
    noisy = {v: np.eye(3)[np.where(rng.random(36) < p, y_true, rng.integers(0, 3, 36))] * 0.9 + 0.1 / 3
             for v, p in zip(shortcuts.VARIANTS, (0.95, 0.9, 0.2, 0.5))}
    return {"split": "test", "image_size": 40, "border": 0.1, "region": "central", "region_source": {"central": 36},
            "fill": "image median",
            "variants": {v: shortcuts.variant_report(y_true, p, names, n_resamples=50) for v, p in noisy.items()}}


def test_tables_sentence_and_document_are_consistent_and_json_safe(tmp_path):
    result = _real_result()
    table = shortcuts.variant_table({"m": result})
    assert list(table["variant"]) == list(shortcuts.VARIANTS) and table["accuracy"].str.contains(r"\[").all()
    recall = shortcuts.per_class_table(result)
    assert list(recall.columns) == list(shortcuts.VARIANTS) and list(recall.index) == ["A", "B", "C"]
    kept = shortcuts.retained(result)
    assert kept.loc["A", "original"] == result["variants"]["original"]["per_class"]["A"]["informedness"]
    sentence = shortcuts.accuracy_sentence("m", result)
    assert sentence.startswith("m: accuracy ") and "(always the most frequent class: 0.33)" in sentence
    doc = shortcuts.document({"m": result}, {"m": ["a finding"]}, {"m": sentence},
                             pd.DataFrame([{"model": "m", "region": "central", "class": "all", "outside_share": 0.4}]))
    run = doc["runs"]["m"]
    assert run["findings"] == ["a finding"] and run["region_source"] == {"central": 36}
    assert set(run["variants"]) == set(shortcuts.VARIANTS)
    assert run["variants"]["original"]["per_class"]["A"]["informedness_ci"] is not None
    assert run["gradcam_outside"][0]["outside_share"] == 0.4
    path = outputs.write_metrics(doc, "shortcuts", tmp_path)
    assert json.loads(path.read_text())["variants"] == list(shortcuts.VARIANTS)


def test_figures_draw():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = shortcuts.plot_variant_accuracy({"m": _real_result(), "n": _real_result(1)})
    assert len(fig.axes[0].patches) == 2 * len(shortcuts.VARIANTS)
    plt.close(fig)
    images = [_image(40, k) for k in range(2)]
    fig = shortcuts.plot_variant_examples(images, ["A", "B"], 0.1, [shortcuts.central_region(40)] * 2)
    assert len(fig.axes) == 2 * len(shortcuts.VARIANTS)
    plt.close(fig)


def test_shortcuts_imports_no_framework():
    code = ("import sys, xraylib.shortcuts; "
            "print([m for m in ('tensorflow', 'keras', 'torch', 'torchvision') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
