"""Framework-free Grad-CAM code: maps, overlays, localisation scores against known masks, deletion curves, CAM files,
figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from xraylib import gradcam_faithfulness, gradcam_figures, gradcam_maps, gradcam_scores, gradcam_sets, schema, synthetic


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


def test_pointing_game_and_topk_iou_against_a_known_mask():
    mask = np.zeros((10, 10), bool)
    mask[2:4, 2:4] = True
    cam = np.zeros((10, 10))
    cam[3, 3] = 1.0
    assert gradcam_scores.pointing_game(cam, mask) == 1.0
    cam2 = np.zeros((10, 10))
    cam2[8, 8] = 1
    assert gradcam_scores.pointing_game(cam2, mask) == 0.0
    blob = np.zeros((10, 10))
    blob[2:4, 2:4] = 1
    assert gradcam_scores.topk_iou(blob + 1e-3 * np.arange(100).reshape(10, 10), mask, 0.04) == 1.0
    assert gradcam_scores.topk_iou(blob, mask, 0.04) == 1.0  # a plateau of exactly k pixels: no tie to share
    with pytest.raises(ValueError, match="non-empty"):
        gradcam_scores.pointing_game(cam, np.zeros((10, 10)))
    with pytest.raises(ValueError, match="same shape"):
        gradcam_scores.topk_iou(cam, mask[:5], 0.1)
    with pytest.raises(ValueError, match="top_fraction"):
        gradcam_scores.topk_iou(cam, mask, 0.0)
    with pytest.raises(ValueError, match="finite"):
        gradcam_scores.pointing_game(np.full((10, 10), np.nan), mask)


def test_empty_maps_score_nan_and_ties_have_no_position_bias():
    lesion = np.zeros((20, 20), bool)
    lesion[:4, :4] = True  # in the first rows: where a "keep the first/last of the ties" rule would land
    for empty in (np.zeros((20, 20)), np.full((20, 20), 0.7), -np.ones((20, 20))):
        assert gradcam_scores.is_empty_map(empty)
        assert np.isnan(gradcam_scores.pointing_game(empty, lesion))
        assert np.isnan(gradcam_scores.topk_iou(empty, lesion, 0.1))  # was 0.35 with position tie-breaking
    # A maximum shared by 4 pixels, one of them in the lesion: a quarter of a hit.
    cam = np.zeros((20, 20))
    cam[[1, 10, 15, 19], [1, 10, 15, 19]] = 1.0
    cam[5, 5] = 0.5
    assert not gradcam_scores.is_empty_map(cam)
    assert gradcam_scores.pointing_game(cam, lesion) == pytest.approx(0.25)
    # A plateau twice the size of k: every plateau pixel counts half, in whatever position.
    plateau = np.zeros((20, 20))
    plateau[:4, :20] = 1.0  # 80 pixels, k = 40
    weights = gradcam_scores.topk_weights(plateau, 0.1)
    assert weights.sum() == pytest.approx(40) and set(np.unique(weights)) == {0.0, 0.5}
    expected = 8 / (40 + 16 - 8)  # half of the 16 lesion pixels are expected in the top 40
    assert gradcam_scores.topk_iou(plateau, lesion, 0.1) == pytest.approx(expected)
    assert gradcam_scores.topk_iou(plateau[::-1, ::-1], lesion[::-1, ::-1], 0.1) == pytest.approx(expected)
    # Near-ties from float32 rounding count as ties.
    rounded = plateau.astype(np.float32)
    rounded[0, 0] = np.float32(1.0) - np.float32(6e-8)
    assert gradcam_scores.topk_iou(rounded, lesion, 0.1) == pytest.approx(expected)


def test_chance_levels_inside_the_lungs_and_the_ceiling():
    lesion = np.zeros((100, 100), bool)
    lesion[40:55, 30:50] = True  # 3 % of the image
    lung = np.zeros((100, 100), bool)
    lung[10:90, 15:40] = lung[10:90, 60:85] = True  # 40 % of the image; the lesion is half inside
    share, region = gradcam_scores.region_share(lesion, lung)
    assert region == "lungs" and share == pytest.approx(150 / 4000)
    assert gradcam_scores.region_share(lesion, None) == (pytest.approx(0.03), "image")
    assert gradcam_scores.pointing_game_chance(lesion) == pytest.approx(0.03)
    # The numbers: a 3 % lesion with 10 % kept caps the IoU at 0.3, whatever the map.
    assert gradcam_scores.topk_iou_ceiling(lesion, 0.1) == pytest.approx(0.3)
    assert gradcam_scores.topk_iou(lesion.astype(float), lesion, 0.1) == pytest.approx(0.3)
    # The chance levels are what random maps score: points and top-k sets drawn inside the lungs.
    rng = np.random.default_rng(0)
    maps = [rng.random((100, 100)) * lung for _ in range(300)]
    assert np.mean([gradcam_scores.pointing_game(m, lesion) for m in maps]) == pytest.approx(share, abs=0.035)
    chance = gradcam_scores.topk_iou_chance(lesion, 0.1, lung)
    assert np.mean([gradcam_scores.topk_iou(m, lesion, 0.1) for m in maps[:50]]) == pytest.approx(chance, rel=0.1)
    anywhere = gradcam_scores.topk_iou_chance(lesion, 0.1)
    assert anywhere == pytest.approx(1000 * 300 / 10000 / (1000 + 300 - 30))
    assert np.mean([gradcam_scores.topk_iou(rng.random((100, 100)), lesion, 0.1) for _ in range(50)]) == \
        pytest.approx(anywhere, rel=0.15)
    # k larger than the lungs: all of the lungs, the rest drawn outside.
    small = np.zeros((100, 100), bool)
    small[40:50, 30:40] = True
    expected_i = 100 * 100 / 100 + 900 * (300 - 100) / 9900  # 100 lung pixels all in, 900 of the 9900 others
    assert gradcam_scores.topk_iou_chance(lesion, 0.1, small) == pytest.approx(expected_i / (1300 - expected_i))


def test_scores_against_known_masks():
    lesion = np.zeros((20, 20), bool)
    lesion[5:9, 5:9] = True
    lung = np.zeros((20, 20), bool)
    lung[2:12, 2:12] = True
    inside = np.zeros((20, 20))
    inside[6, 6] = 1.0
    scores = gradcam_scores.score_cam(inside, lesion, lung, top_fraction=0.04)
    assert scores["pointing_game"] == 1.0 and scores["lung_energy"] == 1.0 and not scores["empty_map"]
    assert scores["lesion_fraction"] == pytest.approx(16 / 400) and scores["lung_fraction"] == pytest.approx(0.25)
    assert scores["pointing_game_chance"] == pytest.approx(16 / 100) and scores["chance_region"] == "lungs"
    assert scores["topk_iou_ceiling"] == 1.0  # k = 16 = the lesion
    outside = np.zeros((20, 20))
    outside[18, 18] = 1.0
    scores = gradcam_scores.score_cam(outside, lesion, lung)
    assert scores["pointing_game"] == 0.0 and scores["topk_iou"] < 0.1 and scores["lung_energy"] == 0.0
    none = gradcam_scores.score_cam(inside, None, None)
    assert none["pointing_game"] is None and none["lung_energy"] is None
    empty = gradcam_scores.score_cam(np.zeros((20, 20)), lesion, None)
    assert empty["empty_map"] and np.isnan(empty["pointing_game"]) and empty["chance_region"] == "image"
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
    empty = gradcam_sets.CamSet("empty", names, list(frame["path"]), good.images, y, y, np.eye(4)[y],
                                np.zeros_like(corner), np.zeros_like(corner), info)
    summaries = {c.name: gradcam_scores.summarize_scores(gradcam_scores.score_camset(c, frame, 0.1))
                 for c in (good, bad, empty)}
    assert summaries["good"]["overall"]["pointing_game"] == 1.0
    overall = summaries["good"]["overall"]
    assert overall["chance_region"] == "lungs" and overall["scored_images"] == overall["lesion_images"] == 6
    assert overall["pointing_game_chance"] > 2 * np.mean([les.mean() for _, les, _ in images if les.any()])
    assert 0 < overall["topk_iou_chance"] < overall["topk_iou"] < 1
    assert overall["topk_iou"] == pytest.approx(overall["topk_iou_ceiling"])  # the lesion itself: as good as it gets
    nothing = summaries.pop("empty")["overall"]  # maps that point nowhere: counted, scored as missing, not as misses
    assert nothing["empty_maps"] == 8 and nothing["scored_images"] == 0 and nothing["lesion_images"] == 6
    assert nothing["pointing_game"] is None and nothing["pointing_game_chance"] is None
    assert nothing["topk_iou"] is None and nothing["lung_energy"] is None and nothing["lung_images"] == 0
    assert summaries["good"]["overall"]["lung_energy"] == pytest.approx(1.0)
    assert summaries["shortcut"]["overall"]["pointing_game"] == 0.0
    assert summaries["shortcut"]["overall"]["lung_energy"] < 0.1
    low, high = summaries["shortcut"]["overall"]["lung_energy_ci"]  # every score carries its interval
    assert low <= summaries["shortcut"]["overall"]["lung_energy"] <= high < 0.5
    assert summaries["good"]["overall"]["pointing_game_ci"] == [1.0, 1.0]  # every image a hit
    assert nothing["pointing_game_ci"] is None
    assert summaries["good"]["per_class"]["Normal"]["lesion_images"] == 0
    assert summaries["good"]["per_class"]["Normal"]["pointing_game"] is None
    findings = gradcam_scores.shortcut_findings(summaries, min_accuracy=0.8, min_lung_energy=0.5)
    assert len(findings) == 1 and findings[0].startswith("shortcut:") and "shortcut learning" in findings[0]
    coarse = gradcam_scores.map_findings({"good": good.info, "shortcut": bad.info}, summaries)
    assert len(coarse) == 1 and coarse[0].startswith("shortcut:") and "1x1" in coarse[0]
    unusable = gradcam_scores.unusable_maps({"good": good.info, "shortcut": bad.info}, summaries)
    assert unusable == ["shortcut"]  # a 1x1 map cannot say where the model looks: not judged as a shortcut
    assert gradcam_scores.shortcut_findings(summaries, 0.8, 0.5, unusable=unusable) == []
    table = gradcam_scores.summary_table(summaries)
    assert set(table["class"]) == {"all", *names} and table["accuracy"].dtype == float
    assert table["topk_iou_ceiling"].dtype == float and set(table["chance_region"].dropna()) == {"lungs"}
    lines = gradcam_scores.localisation_findings(summaries)
    assert len(lines) == 2 and lines[0].startswith("good: localisation on 6 lesion images (0 empty maps left out)")
    assert "chance inside the lungs" in lines[0] and "ceiling" in lines[0]
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


# --------------------------------------------------------------------------- faithfulness: deletion curves

def _lesion_world(n: int = 12, size: int = 24, seed: int = 0):
    """Images with a bright fixed lesion, and a fake model: P(class 1) = mean intensity inside the lesion / 255."""
    rng = np.random.default_rng(seed)
    lesion = np.zeros((size, size), bool)
    lesion[6:12, 8:16] = True
    images = rng.integers(20, 100, (n, size, size)).astype(np.uint8)
    images[:, lesion] = rng.integers(200, 250, (n, int(lesion.sum())))
    calls = []

    def predict_proba(x):
        calls.append(len(x))
        assert x.dtype == np.uint8 and x.shape[1:] == (size, size)
        p = x[:, lesion].mean(axis=1) / 255.0
        return np.stack([1.0 - p, p], axis=1)

    return images, lesion, predict_proba, calls


def test_deletion_curves_rank_a_map_on_the_lesion_above_a_random_map_and_order():
    images, lesion, predict_proba, calls = _lesion_world()
    rng = np.random.default_rng(1)
    on_lesion = np.broadcast_to(lesion, images.shape) + 0.01 * rng.random(images.shape)
    random_map = rng.random(images.shape)
    results = {}
    for name, cams in (("lesion", on_lesion), ("random", random_map)):
        curves = gradcam_faithfulness.perturbation_curves(predict_proba, images, cams, [1] * len(images), steps=8,
                                                          baseline="mean", seed=0, batch_size=5)
        assert curves["map"].shape == curves["random"].shape == (len(images), 9)
        np.testing.assert_allclose(curves["fractions"], np.linspace(0, 1, 9))
        np.testing.assert_allclose(curves["map"][:, 0], curves["random"][:, 0])  # shared end points
        np.testing.assert_allclose(curves["map"][:, -1], curves["random"][:, -1])
        results[name] = gradcam_faithfulness.summarize_curves(
            {"fractions": curves["fractions"], "deletion_map": curves["map"], "deletion_random": curves["random"]})
    assert max(calls) <= 5 and sum(calls) == 2 * 8 * len(images) * 2  # 2 x steps batches per map set
    good, chance = results["lesion"], results["random"]
    assert good["deletion_auc"] < chance["deletion_auc"] - 0.1  # a map on the lesion deletes the evidence first ...
    assert good["deletion_auc"] < good["deletion_auc_random"] - 0.1  # ... faster than the random order
    assert good["difference"] == pytest.approx(good["deletion_auc"] - good["deletion_auc_random"])
    assert good["difference_ci"][1] < 0 < chance["difference_ci"][1] and chance["difference_ci"][0] < 0
    assert good["images"] == 12 and good["empty_maps"] == 0 and good["steps"] == 8
    assert "faithful to the model" in gradcam_faithfulness.faithfulness_finding("m", good)
    assert "not distinguishable" in gradcam_faithfulness.faithfulness_finding("m", chance)
    # Insertion mirrors it: putting the lesion back first restores the probability fastest.
    back = gradcam_faithfulness.perturbation_curves(predict_proba, images, on_lesion, [1] * len(images), steps=8,
                                                    baseline="mean", mode="insertion")
    fractions = back["fractions"]
    assert (gradcam_faithfulness.curve_auc(back["map"], fractions)
            > gradcam_faithfulness.curve_auc(back["random"], fractions) + 0.1).all()


def test_deletion_curves_leave_out_empty_maps_and_check_their_inputs():
    images, lesion, predict_proba, calls = _lesion_world(4)
    cams = np.random.default_rng(2).random(images.shape)
    cams[1] = 0.0
    curves = gradcam_faithfulness.perturbation_curves(predict_proba, images, cams, [1, 1, 0, 1], steps=3,
                                                      baseline="blur")
    assert np.isnan(curves["map"][1]).all() and np.isfinite(np.delete(curves["map"], 1, axis=0)).all()
    assert curves["map"][0, 0] == pytest.approx(predict_proba(images[:1])[0, 1])
    assert curves["map"][2, 0] == pytest.approx(predict_proba(images[2:3])[0, 0])  # class 0 explained there
    summary = gradcam_faithfulness.summarize_curves({"fractions": curves["fractions"], "deletion_map": curves["map"],
                                                     "deletion_random": curves["random"]})
    assert summary["images"] == 3 and summary["empty_maps"] == 1
    none = gradcam_faithfulness.perturbation_curves(predict_proba, images, np.zeros(images.shape), [1] * 4, steps=2)
    assert np.isnan(none["map"]).all()
    blurred = gradcam_faithfulness.baseline_images(images, "blur")
    assert blurred.dtype == np.uint8 and blurred.std(axis=(1, 2)).max() < images.std(axis=(1, 2)).min()
    means = np.round(images.mean(axis=(1, 2)))[:, None, None]
    assert (gradcam_faithfulness.baseline_images(images, "mean") == means).all()
    with pytest.raises(ValueError, match="baseline"):
        gradcam_faithfulness.baseline_images(images, "zeros")
    with pytest.raises(ValueError, match="same shape"):
        gradcam_faithfulness.perturbation_curves(predict_proba, images, cams[:, :5], [1] * 4)
    with pytest.raises(ValueError, match="steps"):
        gradcam_faithfulness.perturbation_curves(predict_proba, images, cams, [1] * 4, steps=0)
    with pytest.raises(ValueError, match="mode"):
        gradcam_faithfulness.perturbation_curves(predict_proba, images, cams, [1] * 4, mode="both")
    with pytest.raises(ValueError, match="class indices"):
        gradcam_faithfulness.perturbation_curves(predict_proba, images, cams, [2] * 4)
    with pytest.raises(KeyError, match="insertion"):
        gradcam_faithfulness.summarize_curves({"fractions": curves["fractions"]}, "insertion")
    assert gradcam_faithfulness.bootstrap_mean_ci(np.array([0.1])) is None
    assert _choices(schema.DeletionBaseline) == set(gradcam_faithfulness.BASELINES)


def _choices(literal) -> set:
    from typing import get_args

    return set(get_args(literal))


def test_camset_curves_travel_with_the_camset_and_are_drawn(tmp_path):
    camset = _camset(6, size=24)
    images, lesion, predict_proba, _ = _lesion_world(6)
    camset.images = images
    camset.curves = gradcam_faithfulness.camset_curves(camset, predict_proba, steps=4, baseline="mean", seed=3)
    camset.info["faithfulness"] = {"steps": 4, "baseline": "mean", "seed": 3, "explained": "predicted class",
                                   "modes": ["deletion"]}
    assert set(camset.curves) == {"fractions", "deletion_map", "deletion_random"}
    assert camset.curves["deletion_map"].shape == (6, 5)
    again = gradcam_faithfulness.camset_curves(camset, predict_proba, steps=4, baseline="mean", seed=3)
    np.testing.assert_array_equal(again["deletion_random"], camset.curves["deletion_random"])  # seeded
    back = gradcam_sets.load_camset(gradcam_sets.save_camset(camset, tmp_path / "c.npz"))
    assert set(back.curves) == set(camset.curves) and back.info["faithfulness"]["baseline"] == "mean"
    np.testing.assert_allclose(back.curves["deletion_map"], camset.curves["deletion_map"])
    summary = gradcam_faithfulness.summarize_camset(back, seed=0)
    assert {"deletion_auc", "deletion_auc_random", "difference", "difference_ci", "images", "baseline",
            "ci_method"} <= set(summary) and summary["baseline"] == "mean"
    assert gradcam_faithfulness.summarize_camset(_camset()) is None  # no curves computed
    figure = gradcam_figures.plot_perturbation_curves("toy", back.curves)
    assert len(figure.axes[0].get_legend().get_texts()) == 2
    figure.savefig(tmp_path / "d.png")
    with pytest.raises(KeyError, match="insertion"):
        gradcam_figures.plot_perturbation_curves("toy", back.curves, "insertion")
