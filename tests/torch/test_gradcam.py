"""PyTorch Grad-CAM (xraylib.torch_gradcam): target layers, agreement with the definition, DenseNet, localisation,
deletion curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torchvision import models

from tests.conftest import lesion_pairs
from xraylib import (gradcam_faithfulness, gradcam_maps, gradcam_scores, gradcam_sets, inference, torch_gradcam,
                     torch_model)

ARCHS = ["densenet121", "resnet18", "resnet50", "squeezenet"]
MEAN = np.array([0.485, 0.456, 0.406])[:, None, None]  # ImageNet statistics, as torchvision documents them
STD = np.array([0.229, 0.224, 0.225])[:, None, None]


def _batch(n: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ARCHS)
def test_target_layer_and_maps_for_every_architecture(arch):
    torch.manual_seed(0)
    model = torch_model.build_model(arch, 4, "none").eval()
    expected = model.layer4[-1] if arch.startswith("resnet") else model.features
    assert torch_model.target_layer(model, arch) is expected
    cams = torch_gradcam.compute_cams(model, arch, _batch(), [0, 3])
    assert cams.shape == (2, 64, 64) and cams.dtype == np.float32
    assert cams.min() >= 0.0 and cams.max() <= 1.0
    assert not model.training  # left as it was


def test_map_resolution_shrinks_with_the_image():
    densenet = torch_model.build_model("densenet121", 4, "none")
    assert torch_gradcam.feature_map_size(densenet, "densenet121", 48) == (1, 1)  # no location left at 48 px
    assert torch_gradcam.feature_map_size(densenet, "densenet121", 96) == (3, 3)
    resnet = torch_model.build_model("resnet18", 4, "none")
    assert torch_gradcam.feature_map_size(resnet, "resnet18", 128) == (4, 4)


def test_pytorch_grad_cam_agrees_with_the_definition():
    """pytorch-grad-cam against activations and autograd gradients put through xraylib.gradcam_maps (the Keras path)."""
    torch.manual_seed(1)
    model = torch_model.build_model("resnet18", 3, "none").eval()
    x, classes = _batch(3, 96, seed=2), [0, 1, 2]
    kept = {}
    handle = model.layer4[-1].register_forward_hook(lambda m, i, o: kept.update(a=o))
    logits = model(x)
    handle.remove()
    score = logits[torch.arange(3), torch.tensor(classes)].sum()
    grads = torch.autograd.grad(score, kept["a"])[0]
    low = gradcam_maps.cam_from_activations(kept["a"].detach().numpy(), grads.numpy(), channels_last=False)
    expected = np.stack([gradcam_maps.upsample_cam(c, 96) for c in low])
    ours = torch_gradcam.compute_cams(model, "resnet18", x, classes)
    np.testing.assert_allclose(ours, expected, atol=2e-4)


def test_plain_torchvision_densenet_is_made_cam_friendly_for_the_computation():
    torch.manual_seed(2)
    plain = models.densenet121(weights=None, num_classes=4).eval()
    friendly = torch_model.build_model("densenet121", 4, "none").eval()
    friendly.load_state_dict(plain.state_dict())
    x = _batch(2, 96, seed=3)
    expected = torch_gradcam.compute_cams(friendly, "densenet121", x, [1, 2])
    np.testing.assert_allclose(torch_gradcam.compute_cams(plain, "densenet121", x, [1, 2]), expected, atol=1e-6)
    assert type(plain) is models.DenseNet  # switched back afterwards
    # Why it matters: hooking the plain model, the in-place ReLU overwrites the kept activations.
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam = GradCAM(model=plain, target_layers=[plain.features])
    overwritten = cam(input_tensor=x, targets=[ClassifierOutputTarget(1), ClassifierOutputTarget(2)])
    cam.activations_and_grads.release()
    assert np.abs(overwritten - expected).max() > 0.05


def test_bad_arguments_are_named():
    model = torch_model.build_model("squeezenet", 2, "none")
    with pytest.raises(ValueError, match="one class per image"):
        torch_gradcam.compute_cams(model, "squeezenet", _batch(2), [0])
    with pytest.raises(ValueError, match="architecture"):
        torch_gradcam.compute_cams(model, "vgg", _batch(2), [0, 1])


def _pairs(n: int, seed: int, size: int = 64):
    """:func:`tests.conftest.lesion_pairs` as standardised float tensors for a torch model."""
    images, labels, lesions = lesion_pairs(n, seed, size)
    x = torch.tensor(images, dtype=torch.float32)[:, None] / 255.0
    x = (x - x.mean(dim=(2, 3), keepdim=True)) / x.std(dim=(2, 3), keepdim=True)  # per-image standardisation
    return x, torch.tensor(labels, dtype=torch.float32), lesions


def test_map_of_a_trained_model_peaks_inside_obvious_lesions():
    """A tiny CNN (32x32 map) trained for seconds on easy synthetic pairs points at the lesions it learned.

    The torchvision networks downsample 32x (a 2x2 map at 64 px), too coarse for the strict
    pointing game, so the test builds a small net and hands its last block to ``compute_cams``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # faster and reproducible for a model this small
    try:
        x_train, y_train, _ = _pairs(64, 1)
        x_test, y_test, lesions = _pairs(20, 2)
        torch.manual_seed(1)
        block = lambda c_in: [nn.Conv2d(c_in, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()]  # noqa: E731
        model = nn.Sequential(*block(1), *block(16), nn.MaxPool2d(2), *block(16), nn.AdaptiveAvgPool2d(1),
                              nn.Flatten(), nn.Linear(16, 1))
        optimizer = torch.optim.Adam(model.parameters(), 0.003)
        generator = torch.Generator().manual_seed(1)
        for _ in range(20):
            order = torch.randperm(len(x_train), generator=generator)
            for start in range(0, len(order), 16):
                idx = order[start:start + 16]
                optimizer.zero_grad()
                nn.functional.binary_cross_entropy_with_logits(model(x_train[idx])[:, 0], y_train[idx]).backward()
                optimizer.step()
        for module in model.modules():  # re-estimate the batch-norm statistics with the final weights
            if isinstance(module, nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None
        with torch.no_grad():
            model.train()(x_train)
        model.eval()
        with torch.no_grad():
            accuracy = ((model(x_test)[:, 0] > 0).float() == y_test).float().mean().item()
        assert accuracy >= 0.7
        sick = np.flatnonzero(y_test.numpy() == 1)
        cams = torch_gradcam.compute_cams(model, None, x_test[sick], [0] * len(sick), layer=model[9])
    finally:
        torch.set_num_threads(threads)
    # Empty maps score NaN (pointing nowhere); counted as misses here, to keep the bar where it was.
    hits = np.nan_to_num([gradcam_scores.pointing_game(c, m) for c, m in zip(cams, lesions[sick])], nan=0.0)
    obvious = lesions[sick].mean(axis=(1, 2)) >= 0.03  # lesions of at least 3% of the image
    assert obvious.sum() >= 6
    assert hits[obvious].mean() >= 0.6 > 10 * lesions[sick].mean()  # chance ~0.04 (the mean lesion area)
    assert hits.mean() >= 0.4


def test_camset_for_a_checkpoint(trained_checkpoint, tiny_manifest, reference_probs):
    frame = gradcam_sets.select_images(tiny_manifest, "test", 0)
    camset = torch_gradcam.camset_for_checkpoint(trained_checkpoint, frame, batch_size=4)
    assert camset.name == trained_checkpoint.parent.name and camset.class_names == ["BACTERIA", "NORMAL", "VIRUS"]
    assert camset.images.shape == (len(frame), 32, 32) and camset.cam_pred.shape == camset.images.shape
    assert camset.info["arch"] == "squeezenet" and camset.info["target_layer"] == "features"
    assert camset.info["map_size"] == [1, 1]  # SqueezeNet at 32 px: the notebook names such maps
    expected = reference_probs(trained_checkpoint, frame["path"])  # softmax computed outside xraylib's pipeline
    np.testing.assert_allclose(camset.probs, expected, atol=1e-5)
    np.testing.assert_array_equal(camset.y_pred, expected.argmax(axis=1))
    assert list(camset.y_true) == [camset.class_names.index(lab) for lab in frame["label"]]
    # Maps of the true and the predicted class, each computed directly for every image.
    from xraylib.torch_evaluate import load_checkpoint

    model, _ = load_checkpoint(trained_checkpoint)
    batch = torch.tensor(np.stack([(np.repeat(im[None] / 255.0, 3, axis=0) - MEAN) / STD for im in camset.images]),
                         dtype=torch.float32)
    np.testing.assert_allclose(camset.cam_true, torch_gradcam.compute_cams(model, "squeezenet", batch,
                                                                          list(camset.y_true)), atol=1e-5)
    np.testing.assert_allclose(camset.cam_pred, torch_gradcam.compute_cams(model, "squeezenet", batch,
                                                                          list(camset.y_pred)), atol=1e-5)
    bad = frame.assign(label="COVID")
    with pytest.raises(ValueError, match="not classes"):
        torch_gradcam.camset_for_checkpoint(trained_checkpoint, bad)


def test_the_classifiers_maps_are_those_of_compute_cams():
    """``TorchClassifier.cams`` (what ``predict --cam`` uses): the training transform, then :func:`compute_cams`."""
    from xraylib.torch_backend import TorchClassifier

    torch.manual_seed(3)
    model = torch_model.build_model("resnet18", 3, "none").eval()
    meta = {"class_names": ["A", "B", "C"], "image_size": 96, "resize": "stretch", "equalize": "none",
            "arch": "resnet18"}
    settings = inference.ModelSettings.from_metadata(meta, framework="torch", path="best.pt")
    classifier = TorchClassifier(Path("best.pt"), settings, model, torch.device("cpu"))
    images = np.random.default_rng(4).integers(0, 256, (3, 96, 96)).astype(np.uint8)
    batch = torch.tensor(np.stack([(np.repeat(im[None] / 255.0, 3, axis=0) - MEAN) / STD for im in images]),
                         dtype=torch.float32)
    maps = classifier.cams(images, [2, 0, 1])
    assert maps.shape == (3, 96, 96) and maps.max() > 0
    np.testing.assert_allclose(maps, torch_gradcam.compute_cams(model, "resnet18", batch, [2, 0, 1]), atol=1e-5)


def test_deletion_curves_of_a_checkpoint(trained_checkpoint, tiny_manifest):
    """``camset_for_checkpoint(deletion_steps=...)``: curves of the predicted-class maps, empty maps left out."""
    frame = gradcam_sets.select_images(tiny_manifest, "test", 0)
    camset = torch_gradcam.camset_for_checkpoint(trained_checkpoint, frame, batch_size=4, deletion_steps=3,
                                                 deletion_baseline="mean", seed=1)
    assert set(camset.curves) == {"fractions", "deletion_map", "deletion_random"}
    assert camset.curves["deletion_map"].shape == camset.curves["deletion_random"].shape == (len(frame), 4)
    assert camset.info["faithfulness"] == {"steps": 3, "baseline": "mean", "seed": 1, "explained": "predicted class",
                                           "modes": ["deletion"]}
    empty = np.array([gradcam_scores.is_empty_map(c) for c in camset.cam_pred])
    assert np.isnan(camset.curves["deletion_map"][empty]).all()
    assert np.isfinite(camset.curves["deletion_map"][~empty]).all()
    start = camset.probs[np.arange(len(frame)), camset.y_pred]  # step 0: the untouched image
    np.testing.assert_allclose(camset.curves["deletion_map"][~empty, 0], start[~empty], atol=1e-5)
    summary = gradcam_faithfulness.summarize_camset(camset)
    assert summary["images"] == (~empty).sum() and summary["empty_maps"] == empty.sum()
    assert not torch_gradcam.camset_for_checkpoint(trained_checkpoint, frame, batch_size=4).curves  # off by default
    with pytest.raises(ValueError, match="baseline"):
        torch_gradcam.camset_for_checkpoint(trained_checkpoint, frame, deletion_steps=2, deletion_baseline="zeros")


def test_class_predictor_is_the_models_softmax_and_drives_the_curves():
    torch.manual_seed(5)
    model = torch_model.build_model("resnet18", 3, "none").eval()
    images = np.random.default_rng(6).integers(0, 256, (4, 64, 64)).astype(np.uint8)
    batch = torch.tensor(np.stack([(np.repeat(im[None] / 255.0, 3, axis=0) - MEAN) / STD for im in images]),
                         dtype=torch.float32)
    predict_proba = torch_gradcam.class_predictor(model, batch_size=3)
    probs = predict_proba(images)
    with torch.no_grad():
        expected = torch.softmax(model(batch), 1).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    classes = probs.argmax(1)
    cams = torch_gradcam.compute_cams(model, "resnet18", batch, classes)
    curves = gradcam_faithfulness.perturbation_curves(predict_proba, images, cams, classes, steps=4, seed=0)
    assert curves["map"].shape == curves["random"].shape == (4, 5)
    assert np.isfinite(curves["map"]).all() and (curves["map"] >= 0).all() and (curves["map"] <= 1).all()
    np.testing.assert_allclose(curves["map"][:, 0], probs[np.arange(4), classes], atol=1e-6)
