"""Model building: backbones, pretrained weights (download failure, local file), cuts, the paper profile."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import yaml

from tests.tf.helpers import build_model, study_params
from xraylib import config, tf_model, tf_train

XCEPTION_FILE = ("weights", "xception_notop_imagenet.weights.h5")


def test_small_cnn_layout_and_gradcam_layer():
    augment = {"flip": "horizontal", "rotation": 0.1, "zoom": 0.1, "contrast": 0.0, "brightness": 0.0}
    model = build_model("small_cnn", 32, augment=augment)
    names = [layer.name for layer in model.layers]
    assert names[:4] == ["image", "augment_flip", "augment_rotation", "augment_zoom"]
    assert {"rescale", "standardize", "head_pool", "prediction"} <= set(names)
    assert tf_model.last_conv_layer_name(model) == "cnn_block4_act"
    assert model.output.shape[-1] == 1
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in model.layers)


def test_xception_is_flat_and_exposes_last_conv():
    model = build_model("xception", 71)
    assert tf_model.last_conv_layer_name(model) == "block14_sepconv2_act"
    assert model.get_layer("block14_sepconv2_act").output.shape[1:3] == (3, 3)
    assert tf_model.resolve_input_norm("auto", "xception", False) == "standardize"
    assert "to_rgb" in [layer.name for layer in model.layers]


def test_split_at_reproduces_the_model():
    model = build_model("xception", 71)
    lower, upper = tf_model.split_at(model, "block14_sepconv1")
    x = np.random.default_rng(0).integers(0, 256, size=(2, 71, 71, 1)).astype("float32")
    np.testing.assert_allclose(upper.predict(lower.predict(x, verbose=0), verbose=0), model.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="skip connection"):
        tf_model.split_at(model, "block13_sepconv2")
    with pytest.raises(ValueError, match="no layer"):
        tf_model.split_at(model, "no_such_layer")


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="train_binary.backbone"):
        build_model("resnet9", 64)
    with pytest.raises(ValueError, match="image_size"):
        build_model("xception", 32)
    with pytest.raises(FileNotFoundError, match="train_binary.weights"):
        build_model("xception", 71, "does/not/exist.weights.h5")
    with pytest.raises(ValueError, match="small_cnn has no pretrained"):
        build_model("small_cnn", 64, "imagenet")


def test_imagenet_without_network_fails_clearly(monkeypatch):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(tf_model.WeightsUnavailableError) as info:
        build_model("xception", 71, "imagenet")
    message = str(info.value)
    assert "internet" in message and "local" in message and "weights:" in message
    assert isinstance(info.value, FileNotFoundError)  # the CLI reports it without a traceback


def test_local_weights_file_is_loaded(tmp_path):
    """Any include_top=False weights file works; here one written by Keras itself."""
    reference = keras.applications.Xception(include_top=False, weights=None, input_shape=(71, 71, 3))
    path = tmp_path / "xception_notop.weights.h5"
    reference.save_weights(path)
    model = build_model("xception", 71, str(path))
    for name in ("block1_conv1", "block14_sepconv2"):
        for got, want in zip(model.get_layer(name).get_weights(), reference.get_layer(name).get_weights()):
            np.testing.assert_array_equal(got, want)
    assert "backbone_scaling" in [layer.name for layer in model.layers]


def test_real_xception_weights_from_shared(tmp_path):
    path = config.shared_path(*XCEPTION_FILE)
    if path is None:
        pytest.skip(f"real weights not available: {config.SHARED_DIR.joinpath(*XCEPTION_FILE)} is absent "
                    "(only on development/CI machines)")
    model = build_model("xception", 71, str(path))
    kernel = model.get_layer("block1_conv1").get_weights()[0]
    assert kernel.shape == (3, 3, 3, 32)
    fresh = build_model("xception", 71).get_layer("block1_conv1").get_weights()[0]
    assert not np.allclose(kernel, fresh)
    # ImageNet first-layer filters respond to edges: a real image gives a non-degenerate feature vector.
    lower, _ = tf_model.split_at(model, "head_dropout")
    x = np.tile(np.linspace(0, 255, 71, dtype="float32"), (1, 71, 1))[..., None]
    features = lower.predict(x, verbose=0)
    assert features.shape == (1, 2048) and features.std() > 0


def test_paper_profile_builds_and_trains_one_step():
    """profiles/paper_gpu.yaml: InceptionResNetV2 at 300 px (weights none here: no download on test machines)."""
    profile = yaml.safe_load((config.PROJECT_ROOT / "profiles" / "paper_gpu.yaml").read_text())
    params = study_params()
    section = {**params["train_binary"], **profile["train_binary"], "weights": "none"}
    cfg = tf_train.TrainConfig.from_params(section, seed=params["seed"])
    assert (cfg.backbone, cfg.image_size) == ("inception_resnet_v2", 300)
    model = tf_model.build_model(cfg.backbone, cfg.image_size, cfg.weights, input_norm=cfg.input_norm,
                                 dropout=cfg.dropout, l2=cfg.l2, augment=cfg.augment, seed=cfg.seed)
    assert tf_model.last_conv_layer_name(model) == "conv_7b_ac"
    assert model.get_layer("conv_7b_ac").output.shape[1:] == (8, 8, 1536)
    loss, _ = tf_train.make_loss(cfg.imbalance, {"pos_weight": 0.3, "neg_weight": 0.7}, cfg.label_smoothing)
    # Eager: tracing the full InceptionResNetV2 training graph costs minutes on a CPU, one eager step seconds.
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss=loss, run_eagerly=True)
    x = np.random.default_rng(0).integers(0, 256, size=(2, 300, 300, 1)).astype("float32")
    logs = model.train_on_batch(x, np.array([0.0, 1.0], "float32"), return_dict=True)
    assert np.isfinite(logs["loss"])
    lower, upper = tf_model.split_at(model, tf_model.fine_tune_layer(cfg.backbone, cfg.fine_tune_at))
    assert upper.input.shape[1:] == (8, 8, 2080)


def test_saving_the_same_weights_twice_gives_the_same_bytes(tmp_path):
    """Keras stamps the save time into the archive; save_model removes it so DVC sees an unchanged model."""
    import time
    import zipfile

    model = build_model("small_cnn", 32)
    meta = {"threshold": 0.3, "class_names": ["NORMAL", "PNEUMONIA"]}
    first = tf_model.save_model(model, tmp_path / "a" / "model.keras", meta)
    time.sleep(2.1)  # zip timestamps have a 2-second resolution
    second = tf_model.save_model(model, tmp_path / "b" / "model.keras", meta)
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as archive:
        assert {item.date_time for item in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    reloaded, stored = tf_model.load_model(first)  # still a valid Keras archive
    x = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 1)).astype("float32")
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert stored["threshold"] == 0.3
