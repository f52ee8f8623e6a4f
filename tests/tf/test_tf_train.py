"""Input pipeline and training: pixels, shuffling, determinism, the cached-feature path, the threshold rule."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

from tests.tf.helpers import study_params, train_config
from xraylib import evaluation, images, metrics, schema, tf_data, tf_model, tf_train

SIZE = 32


def _datasets(manifest, class_names, seed=0):
    tf_train.set_determinism(seed)  # the shuffle order depends on TensorFlow's global seed too
    return tf_data.split_datasets(manifest, class_names, image_size=SIZE, resize_mode="stretch",
                                  equalize_method="none", batch_size=8, seed=seed)


def test_pipeline_yields_the_shared_preparation(tiny_manifest, tiny_class_names):
    frame = tf_data.split_frame(tiny_manifest, "val")
    ds = tf_data.image_dataset(frame["path"], tf_data.encode_labels(frame["label"], tiny_class_names),
                               image_size=SIZE, resize_mode="pad", equalize_method="hist", batch_size=4)
    x, y = next(iter(ds))
    assert x.shape == (4, SIZE, SIZE, 1) and x.dtype.name == "float32"
    for i in range(4):
        expected = images.prepare(frame["path"].iloc[i], SIZE, "pad", "hist")
        np.testing.assert_array_equal(x.numpy()[i, ..., 0], expected)
    assert list(y.numpy()) == list(tf_data.encode_labels(frame["label"].iloc[:4], tiny_class_names))


def test_training_order_is_shuffled_deterministically(tiny_manifest, tiny_class_names):
    def order(seed):
        ds = _datasets(tiny_manifest, tiny_class_names, seed)["train"]["dataset"]
        return [np.concatenate([y.numpy() for _, y in ds]), np.concatenate([x.numpy().sum((1, 2, 3)) for x, _ in ds])]

    a, b, c = order(1), order(1), order(2)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_labels_and_splits_are_checked(tiny_manifest):
    with pytest.raises(ValueError, match="not among"):
        tf_data.encode_labels(["NORMAL", "COVID"], ["NORMAL", "PNEUMONIA"])
    with pytest.raises(ValueError, match="split must be one of"):
        tf_data.split_frame(tiny_manifest, "holdout")
    with pytest.raises(ValueError, match="no images in split 'val'"):
        tf_data.split_frame(tiny_manifest[tiny_manifest["split"] != "val"], "val")


def test_same_seed_same_metrics(tiny_manifest, tiny_class_names):
    cfg = train_config(image_size=SIZE, epochs=2, batch_size=8, seed=7)

    def run():
        data = _datasets(tiny_manifest, tiny_class_names, cfg.seed)
        result = tf_train.train_binary(cfg, data)
        test = tf_train.predict_proba(result.model, data["test"]["dataset"])
        return result, metrics.binary_report(data["test"]["labels"], test, {"t": 0.5}, n_resamples=50)

    (first, report1), (second, report2) = run(), run()
    np.testing.assert_array_equal(first.val_probs, second.val_probs)
    assert first.history.drop(columns="phase").equals(second.history.drop(columns="phase"))
    assert report1 == report2


def test_pretrained_backbone_cached_then_fine_tuned(tmp_path, tiny_manifest, tiny_class_names, capsys):
    weights = tmp_path / "xception_notop.weights.h5"
    keras.applications.Xception(include_top=False, weights=None, input_shape=(71, 71, 3)).save_weights(weights)
    cfg = train_config(backbone="xception", weights=str(weights), image_size=71, epochs=2, fine_tune_epochs=1,
                       batch_size=8, tta="flip", imbalance="class_weight", label_smoothing=0.1, seed=1)
    data = tf_data.split_datasets(tiny_manifest, tiny_class_names, image_size=71, resize_mode="stretch",
                                  equalize_method="none", batch_size=8, seed=1)
    result = tf_train.train_binary(cfg, data, log_csv=tmp_path / "log.csv")
    out = capsys.readouterr().out
    assert "cached frozen activations at 'block14_sepconv1'" in out
    assert out.count("head      epoch") >= 1 and out.count("fine_tune epoch") == 1
    assert result.info["trainable_from"] == "block14_sepconv1"
    assert list(result.history["phase"]).count("fine_tune") == 1
    assert (tmp_path / "log.csv").is_file()
    assert result.val_probs.shape == (len(data["val"]["labels"]),)
    # The cached path and the full model agree on validation (flip TTA included).
    full = tf_train.predict_proba(result.model, data["val"]["dataset"], "flip")
    np.testing.assert_allclose(full, result.val_probs, atol=2e-3)


def test_cached_views_add_augmented_passes_of_the_training_images(tmp_path, tiny_manifest, tiny_class_names):
    weights = tmp_path / "xception_notop.weights.h5"
    keras.applications.Xception(include_top=False, weights=None, input_shape=(71, 71, 3)).save_weights(weights)
    n = int((tiny_manifest["split"] == "train").sum())

    def cache(views):
        cfg = train_config(backbone="xception", weights=str(weights), image_size=71, epochs=1, fine_tune_epochs=1,
                           batch_size=8, cache_views=views, seed=1)
        tf_train.set_determinism(1)  # fresh datasets after the seed: the same shuffled order in every call
        data = tf_data.split_datasets(tiny_manifest, tiny_class_names, image_size=71, resize_mode="stretch",
                                      equalize_method="none", batch_size=8, seed=1)
        model = tf_model.build_model("xception", 71, str(weights), input_norm="auto", dropout=0.3, l2=0.0,
                                     augment=None, seed=1)
        return tf_train.cache_activations(model, cfg, data)["train"]

    (one, y_one), (three, y_three), (again, _) = cache(1), cache(3), cache(3)
    assert len(three) == len(y_three) == 3 * n
    np.testing.assert_array_equal(three[:n], one)  # the first pass is the unaugmented images
    np.testing.assert_array_equal(np.sort(y_three[n:2 * n]), np.sort(y_one))  # every view has every image
    assert not np.allclose(three[n:2 * n], one)  # later passes are different (augmented) pixels
    np.testing.assert_array_equal(again, three)  # seeded: the same views every run
    with pytest.raises(ValueError, match="cache_views"):
        train_config(cache_views=0)


def test_random_view_is_a_seeded_same_size_image():
    gray = (np.arange(40 * 40).reshape(40, 40) % 251).astype(np.uint8)
    a = images.random_view(gray, np.random.default_rng(0))
    b = images.random_view(gray, np.random.default_rng(0))
    assert a.shape == gray.shape and a.dtype == np.uint8 and np.array_equal(a, b)
    assert not np.array_equal(a, gray)
    with pytest.raises(ValueError, match="square 2-D"):
        images.random_view(np.zeros((4, 5), np.uint8), np.random.default_rng(0))


def test_threshold_rule_and_confusion_orientation():
    y_val = np.array([0, 0, 0, 1, 1, 1, 1])
    p_val = np.array([0.1, 0.2, 0.65, 0.6, 0.7, 0.8, 0.9])
    # J = sensitivity + specificity - 1: 3/4 + 1 - 1 = 0.75 at 0.7, beats 1 + 2/3 - 1 at 0.6
    threshold = metrics.youden_threshold(y_val, p_val)
    assert threshold == pytest.approx(0.7)
    cm = evaluation.confusion(np.array([0, 0, 1, 1, 1]), np.array([0.9, 0.1, 0.8, 0.2, 0.75]), 0.75)
    # rows = true (NORMAL, PNEUMONIA), columns = predicted; p >= threshold is PNEUMONIA
    np.testing.assert_array_equal(cm, [[1, 1], [1, 2]])


def test_config_rejects_unknown_choices():
    with pytest.raises(ValueError, match="train_binary.imbalance"):
        train_config(imbalance="focal")
    with pytest.raises(ValueError, match="train_binary.tta"):
        train_config(tta="five_crop")


def test_config_from_params_is_params_yaml_exactly():
    params = study_params()
    section = params["train_binary"]
    cfg = tf_train.TrainConfig.from_params(section, seed=params["seed"])
    expected = {**{k: v for k, v in section.items() if k not in tf_train.STAGE_KEYS}, "seed": params["seed"]}
    assert cfg.as_dict() == expected
    assert {k: type(v) for k, v in cfg.as_dict().items()} == {k: type(v) for k, v in expected.items()}
    assert cfg.augment == {"flip": section["augment_flip"], "rotation": section["augment_rotation"],
                           "zoom": section["augment_zoom"], "contrast": section["augment_contrast"],
                           "brightness": section["augment_brightness"]}
    # Every train_binary key is a training setting or a declared stage key: none is dropped unseen.
    fields = {f.name for f in dataclasses.fields(tf_train.TrainConfig)}
    assert set(schema.section_keys("train_binary")) == (fields - {"seed"}) | set(tf_train.STAGE_KEYS)
    assert not fields & set(tf_train.STAGE_KEYS)
    # Explicit overrides win; nothing else changes.
    changed = tf_train.TrainConfig.from_params(section, seed=3, epochs=2)
    assert changed.as_dict() == {**expected, "seed": 3, "epochs": 2}


def test_config_from_params_names_unknown_and_missing_keys():
    params = study_params()
    section = params["train_binary"]
    with pytest.raises(ValueError, match=r"^train_binary\.epoch: unknown key; did you mean 'epochs'\?$"):
        tf_train.TrainConfig.from_params({**section, "epoch": 3}, seed=0)
    with pytest.raises(ValueError, match=r"train_binary\.augment_zom: unknown key; did you mean 'augment_zoom'\?"):
        tf_train.TrainConfig.from_params(section, seed=0, augment_zom=0.1)
    without = {k: v for k, v in section.items() if k not in ("learning_rate", "tta")}
    with pytest.raises(ValueError) as info:
        tf_train.TrainConfig.from_params(without, seed=0)
    assert str(info.value).splitlines() == ["train_binary.learning_rate: missing (params.yaml must define it)",
                                            "train_binary.tta: missing (params.yaml must define it)"]
    with pytest.raises(ValueError, match=r"^seed: missing \(pass seed=params\['seed'\]"):
        tf_train.TrainConfig.from_params(section)
    with pytest.raises(TypeError):  # no second set of defaults: every field is required
        tf_train.TrainConfig(image_size=32, seed=0)


def test_pretrained_backbone_trained_on_images_then_fine_tuned(tmp_path, tiny_manifest, tiny_class_names):
    """cache_features: false (the GPU recipe): frozen backbone with augmentation, then the top block unfrozen."""
    weights = tmp_path / "xception_notop.weights.h5"
    keras.applications.Xception(include_top=False, weights=None, input_shape=(71, 71, 3)).save_weights(weights)
    cfg = train_config(backbone="xception", weights=str(weights), image_size=71, epochs=1, fine_tune_epochs=1,
                       batch_size=8, cache_features=False, seed=1)
    data = tf_data.split_datasets(tiny_manifest, tiny_class_names, image_size=71, resize_mode="stretch",
                                  equalize_method="none", batch_size=8, seed=1)
    result = tf_train.train_binary(cfg, data)
    assert list(result.history["phase"]) == ["head", "fine_tune"]
    trained = [layer.name for layer in result.model.layers if layer.trainable and layer.weights]
    assert trained == ["block14_sepconv1", "block14_sepconv2", "prediction"]  # batch norm stays frozen
