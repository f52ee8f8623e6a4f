"""Custom Keras objects: standardisation layer, channel handling, augmentation and the weighted loss."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from xraylib import images
from xraylib.tf_layers import (
    ORIGINAL_AUGMENT,
    BackboneScaling,
    RepeatChannels,
    Standardize,
    WeightedBinaryCrossentropy,
    augmentation_layers,
    augmentation_preview,
    class_frequency_weights,
)


def test_standardize_matches_numpy_reference():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(3, 16, 16, 1)).astype("float32")
    out = keras.ops.convert_to_numpy(Standardize()(x))
    for i in range(3):
        np.testing.assert_allclose(out[i], images.standardize(x[i]), rtol=1e-5, atol=1e-5)
        assert abs(out[i].mean()) < 1e-5 and abs(out[i].std() - 1) < 1e-4


def test_standardize_constant_image_gives_zeros():
    out = keras.ops.convert_to_numpy(Standardize()(np.full((1, 8, 8, 1), 200.0, "float32")))
    assert np.all(out == 0)


def test_repeat_channels_and_backbone_scaling():
    x = np.random.default_rng(1).normal(size=(2, 4, 4, 1)).astype("float32")
    rgb = keras.ops.convert_to_numpy(RepeatChannels(3)(x))
    np.testing.assert_array_equal(rgb, np.concatenate([x, x, x], axis=-1))  # the grey input in every channel
    tf_mode = keras.ops.convert_to_numpy(BackboneScaling("tf")(rgb))
    np.testing.assert_allclose(tf_mode, (128 + 64 * rgb) / 127.5 - 1, rtol=1e-5, atol=1e-6)
    torch_mode = keras.ops.convert_to_numpy(BackboneScaling("torch")(rgb))
    expected = ((128 + 64 * rgb) / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(torch_mode, expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="mode"):
        BackboneScaling("caffe")


def test_weighted_loss_hand_computed():
    # w_pos = 0.25, w_neg = 0.75; labels as (batch,), predictions as (batch, 1) like Keras gives them.
    loss = WeightedBinaryCrossentropy(pos_weight=0.25, neg_weight=0.75)
    y_true = np.array([1.0, 0.0, 1.0, 0.0], "float32")
    y_pred = np.array([[0.8], [0.3], [0.4], [0.1]], "float32")
    expected = np.mean([-0.25 * math.log(0.8), -0.75 * math.log(0.7), -0.25 * math.log(0.4), -0.75 * math.log(0.9)])
    assert float(loss(y_true, y_pred)) == pytest.approx(expected, rel=1e-5)
    # Same numbers with labels shaped like the predictions.
    assert float(loss(y_true[:, None], y_pred)) == pytest.approx(expected, rel=1e-5)


def test_weighted_loss_label_smoothing_and_clipping():
    smooth = WeightedBinaryCrossentropy(1.0, 1.0, label_smoothing=0.2)
    y = 0.9  # 1 * (1 - 0.2) + 0.1
    expected = -(y * math.log(0.6) + (1 - y) * math.log(0.4))
    assert float(smooth(np.array([1.0]), np.array([[0.6]]))) == pytest.approx(expected, rel=1e-5)
    assert np.isfinite(float(WeightedBinaryCrossentropy()(np.array([1.0]), np.array([[0.0]]))))


def test_weighted_loss_config_round_trip():
    loss = WeightedBinaryCrossentropy(0.3, 0.7, label_smoothing=0.1)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(again, WeightedBinaryCrossentropy)
    assert (again.pos_weight, again.neg_weight, again.label_smoothing) == (0.3, 0.7, 0.1)


def test_class_frequency_weights():
    w = class_frequency_weights([0, 1, 1, 1])
    assert w["pos_weight"] == 0.25 and w["neg_weight"] == 0.75
    assert w["class_weight"] == {0: 2.0, 1: pytest.approx(4 / 6)}
    with pytest.raises(ValueError, match="both classes"):
        class_frequency_weights([1, 1])
    with pytest.raises(ValueError, match="0/1"):
        class_frequency_weights([0, 2])


def test_augmentation_is_identity_at_inference_and_random_in_training():
    x = np.random.default_rng(2).integers(0, 256, size=(2, 24, 24, 1)).astype("float32")
    block = keras.Sequential(augmentation_layers(**ORIGINAL_AUGMENT, seed=1))
    assert np.array_equal(keras.ops.convert_to_numpy(block(x, training=False)), x)
    assert not np.array_equal(keras.ops.convert_to_numpy(block(x, training=True)), x)
    with pytest.raises(ValueError, match="flip"):
        augmentation_layers(**{**ORIGINAL_AUGMENT, "flip": "diagonal"}, seed=1)
    with pytest.raises(TypeError, match="zoom"):  # no defaults: the study's factors come from params.yaml
        augmentation_layers(flip="horizontal", rotation=0.03, contrast=0.0, brightness=0.0, seed=1)


def test_augmentation_preview_shape_and_seed():
    imgs = np.random.default_rng(3).integers(0, 256, size=(2, 20, 20)).astype("uint8")
    a = augmentation_preview(imgs, 3, seed=5, rotation=0.1, zoom=0.1, contrast=0.2)
    b = augmentation_preview(imgs, 3, seed=5, rotation=0.1, zoom=0.1, contrast=0.2)
    assert a.shape == (2, 3, 20, 20) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a[:, 0], a[:, 1])
    with pytest.raises(ValueError, match="unknown augmentation"):
        augmentation_preview(imgs, 1, 0, shear=0.1)
