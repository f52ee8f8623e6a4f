"""Framework-free Grad-CAM code: maps, overlays, scores against known masks, CAM files, figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from xraylib import gradcam_figures, gradcam_maps, gradcam_scores, gradcam_sets, synthetic


def _camset(n: int = 6, size: int = 32, classes=("NORMAL", "PNEUMONIA")) -> gradcam_sets.CamSet:
    rng = np.random.default_rng(0)
    y_true = np.arange(n) % 2
    y_pred = y_true.copy()
    y_pred[-1] = 1 - y_pred[-1]
    probs = np.eye(2)[y_pred] * 0.8 + 0.1
    cams = rng.random((n, size, size)).astype(np.float32)
    return gradcam_sets.CamSet("toy", list(classes), [f"img{i}.png" for i in range(n)],
                               rng.integers(0, 255, (n, size, size), dtype=np.uint8), y_true, y_pred, probs, cams,
                               cams.copy(), {"resize": "stretch", "image_size": size, "map_size": [4, 4]})


def test_cam_from_activations_matches_the_definition():
    rng = np.random.default_rng(1)
    acts = rng.random((2, 3, 4, 5))
    grads = rng.standard_normal((2, 3, 4, 5))
    cam = gradcam_maps.cam_from_activations(acts, grads)
    weights = grads.mean(axis=(1, 2))
    expected = np.maximum(sum(weights[:, k, None, None] * acts[..., k] for k in range(5)), 0)
    np.testing.assert_allclose(cam, expected, rtol=1e-5, atol=1e-7)
    first = gradcam_maps.cam_from_activations(acts.transpose(0, 3, 1, 2), grads.transpose(0, 3, 1, 2),
                                              channels_last=False)
    np.testing.assert_allclose(first, cam, rtol=1e-6)
    with pytest.raises(ValueError, match="one shape"):
        gradcam_maps.cam_from_activations(acts, grads[:, :2])


def test_upsample_cam_shape_range_and_peak():
    low = np.zeros((4, 4), np.float32)
    low[1, 2] = 3.0
    low[3, 0] = -5.0  # negative evidence is cut by the ReLU
    big = gradcam_maps.upsample_cam(low, 32)
    assert big.shape == (32, 32) and big.dtype == np.float32
    assert big.min() >= 0.0 and big.max() <= 1.0 and big.max() == pytest.approx(1.0, abs=1e-5)
    row, col = np.unravel_index(big.argmax(), big.shape)
    assert 8 <= row < 16 and 16 <= col < 24  # inside the upsampled cell (1, 2)
    assert gradcam_maps.upsample_cam(low, (20, 30)).shape == (20, 30)
    assert not gradcam_maps.upsample_cam(-np.ones((3, 3)), 9).any()  # no positive evidence: all zero
    with pytest.raises(ValueError, match="2-D"):
        gradcam_maps.upsample_cam(np.zeros((2, 3, 3)), 9)


def test_apply_mask_colours_the_hot_region():
    image = np.full((16, 16), 100, np.uint8)
    cam = np.zeros((16, 16), np.float32)
    cam[:8] = 1.0
    original = gradcam_maps.apply_mask(image, cam, "jet", alpha=None)  # the original notebooks' overlay
    assert original.shape == (16, 16, 3) and original.dtype == np.uint8
    hot, cold = original[2, 2].astype(int), original[12, 12].astype(int)
    assert hot[0] > hot[2] and cold[2] > cold[0]  # jet: red where the map is high, blue where low
    assert original.max() == 255  # renormalised by its maximum, as the original apply_mask
    blend = gradcam_maps.apply_mask(image, cam)  # default: inferno, half and half
    table = gradcam_maps.colormap_table(gradcam_maps.DEFAULT_COLORMAP)
    np.testing.assert_allclose(blend[2, 2], np.round(255 * (0.5 * 100 / 255 + 0.5 * table[255])), atol=1)
    np.testing.assert_allclose(blend[12, 12], np.round(255 * (0.5 * 100 / 255 + 0.5 * table[0])), atol=1)
    assert blend[2, 2].sum() > blend[12, 12].sum()  # inferno: light where the map is high, dark where low
    assert gradcam_maps.apply_mask(image / 255.0, cam[::2, ::2]).shape == (16, 16, 3)  # float image, smaller map
    with pytest.raises(ValueError, match="colormap"):
        gradcam_maps.apply_mask(image, cam, colormap="rainbowish")
    with pytest.raises(ValueError, match="alpha"):
        gradcam_maps.apply_mask(image, cam, alpha=1.5)


def test_scores_against_known_masks():
    lesion = np.zeros((20, 20), bool)
    lesion[5:9, 5:9] = True
    lung = np.zeros((20, 20), bool)
    lung[2:12, 2:12] = True
    inside = np.zeros((20, 20))
    inside[6, 6] = 1.0
    scores = gradcam_scores.score_cam(inside, lesion, lung, top_fraction=0.04)
    assert scores["pointing_game"] is True and scores["lung_energy"] == 1.0
    assert scores["lesion_fraction"] == pytest.approx(16 / 400) and scores["lung_fraction"] == pytest.approx(0.25)
    outside = np.zeros((20, 20))
    outside[18, 18] = 1.0
    scores = gradcam_scores.score_cam(outside, lesion, lung)
    assert scores["pointing_game"] is False and scores["topk_iou"] < 0.1 and scores["lung_energy"] == 0.0
    none = gradcam_scores.score_cam(inside, None, None)
    assert none["pointing_game"] is None and none["lung_energy"] is None
    assert np.isnan(gradcam_scores.lung_energy_fraction(np.zeros((20, 20)), lung))


def test_load_mask_resizes_like_images_and_skips_empty(tmp_path):
    mask = np.zeros((40, 20), np.uint8)
    mask[10:20, 5:15] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    stretched = gradcam_scores.load_mask(tmp_path / "m.png", 10, "stretch")
    padded = gradcam_scores.load_mask(tmp_path / "m.png", 10, "pad")
    assert stretched.shape == padded.shape == (10, 10) and stretched.dtype == bool
    assert stretched.sum() > padded.sum() > 0  # padding keeps the aspect ratio: a smaller region
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "empty.png")
    assert gradcam_scores.load_mask(tmp_path / "empty.png", 8) is None
    assert gradcam_scores.load_mask("", 8) is None and gradcam_scores.load_mask(float("nan"), 8) is None


def test_camset_round_trip(tmp_path):
    camset = _camset()
    path = gradcam_sets.save_camset(camset, tmp_path / "sub" / "cams.npz")
    back = gradcam_sets.load_camset(path)
    assert back.name == "toy" and back.class_names == camset.class_names and back.paths == camset.paths
    assert back.info == camset.info
    np.testing.assert_array_equal(back.images, camset.images)
    np.testing.assert_array_equal(back.y_pred, camset.y_pred)
    np.testing.assert_array_equal(back.cam_pred, camset.cam_pred)
    with pytest.raises(FileNotFoundError, match="xraylib cams"):
        gradcam_sets.load_camset(tmp_path / "missing.npz")


def test_select_images_and_examples_are_reproducible():
    manifest = pd.DataFrame({"path": [f"p{i}" for i in range(30)], "label": ["A", "B", "C"] * 10,
                             "split": ["test"] * 24 + ["train"] * 6})
    picked = gradcam_sets.select_images(manifest, "test", 3, seed=1)
    assert picked["label"].value_counts().to_dict() == {"A": 3, "B": 3, "C": 3}
    assert picked.equals(gradcam_sets.select_images(manifest, "test", 3, seed=1))
    assert len(gradcam_sets.select_images(manifest, "test", 0)) == 24
    with pytest.raises(ValueError, match="no images in split 'val'"):
        gradcam_sets.select_images(manifest, "val")
    camset = _camset(12)
    first = gradcam_figures.pick_examples(camset, 0, True, 2, seed=3)
    assert len(first) == 2 and (camset.y_true[first] == 0).all() and camset.correct[first].all()
    np.testing.assert_array_equal(first, gradcam_figures.pick_examples(camset, 0, True, 2, seed=3))
    assert len(gradcam_figures.pick_examples(camset, 1, False, 4)) == 1


def test_scoring_flags_an_accurate_model_that_looks_outside_the_lungs(tmp_path):
    """Synthetic 4-class images with their true masks: a map on the lesion scores well, one on the corner is flagged."""
    rows, images = [], []
    for i, label in enumerate(["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"] * 2):
        image, lesion, lung = synthetic.make_image(label, "multiclass", i, 32, 0.0)
        paths = {}
        for kind, array in (("path", image), ("lesion_mask", lesion), ("lung_mask", lung)):
            paths[kind] = str(tmp_path / f"{kind}_{i}.png")
            Image.fromarray(array.astype(np.uint8) * (1 if kind == "path" else 255)).save(paths[kind])
        rows.append({**paths, "label": label})
        images.append((image, lesion, lung))
    frame = pd.DataFrame(rows)
    names = sorted(frame["label"].unique())
    y = np.array([names.index(label) for label in frame["label"]])
    on_lesion = np.stack([(les if les.any() else lung).astype(np.float32) for _, les, lung in images])
    corner = np.zeros_like(on_lesion)
    corner[:, :6, :6] = 1.0
    info = {"resize": "stretch", "map_size": [8, 8], "image_size": 32}
    good = gradcam_sets.CamSet("good", names, list(frame["path"]), np.stack([im for im, _, _ in images]), y, y,
                               np.eye(4)[y], on_lesion, on_lesion, info)
    bad = gradcam_sets.CamSet("shortcut", names, list(frame["path"]), good.images, y, y, np.eye(4)[y], corner,
                              corner, {"resize": "stretch", "map_size": [1, 1], "image_size": 32})
    summaries = {c.name: gradcam_scores.summarize_scores(gradcam_scores.score_camset(c, frame, 0.1))
                 for c in (good, bad)}
    assert summaries["good"]["overall"]["pointing_game"] == 1.0
    assert summaries["good"]["overall"]["lung_energy"] == pytest.approx(1.0)
    assert summaries["shortcut"]["overall"]["pointing_game"] == 0.0
    assert summaries["shortcut"]["overall"]["lung_energy"] < 0.1
    assert summaries["good"]["per_class"]["Normal"]["lesion_images"] == 0
    assert summaries["good"]["per_class"]["Normal"]["pointing_game"] is None
    findings = gradcam_scores.shortcut_findings(summaries, min_accuracy=0.8, min_lung_energy=0.5)
    assert len(findings) == 1 and findings[0].startswith("shortcut:") and "shortcut learning" in findings[0]
    coarse = gradcam_scores.map_findings({"good": good.info, "shortcut": bad.info}, summaries)
    assert len(coarse) == 1 and coarse[0].startswith("shortcut:") and "1x1" in coarse[0]
    table = gradcam_scores.summary_table(summaries)
    assert set(table["class"]) == {"all", *names} and table["accuracy"].dtype == float
    masks = gradcam_scores.camset_masks(good, frame, "lesion_mask")
    assert masks.shape == good.images.shape and masks[y == names.index("Normal")].sum() == 0
    with pytest.raises(ValueError, match="paths differ"):
        gradcam_scores.score_camset(good, frame.iloc[::-1], 0.1)


def test_class_figure_has_a_labelled_colour_bar(tmp_path):
    camset = _camset(8)
    figure = gradcam_figures.plot_class_examples(camset, 1, n=3, seed=0, outlines=camset.cam_true > 0.9)
    assert len(figure.axes) == 7  # 2 x 3 tiles and the colour bar
    assert figure.axes[-1].get_ylabel() == gradcam_maps.COLORBAR_LABEL
    figure.savefig(tmp_path / "f.png")
    assert gradcam_figures.figure_name("resnet18", "Viral Pneumonia") == "resnet18_Viral_Pneumonia"


def test_run_keras_cams_needs_the_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_binary"):
        gradcam_sets.run_keras_cams(tmp_path / "none.keras", pd.DataFrame({"path": [], "label": []}))
