"""Settings for the Keras tests: params.yaml's values, changed only where a test says so.

``from tests.tf.helpers import train_config, build_model``. params.yaml is read from this
repository (not the working directory, which some tests change).
"""

from __future__ import annotations

from pathlib import Path

from xraylib import config

PARAMS_FILE = Path(__file__).resolve().parents[2] / "params.yaml"


def study_params() -> dict:
    """The repository's params.yaml, validated."""
    return config.load_params(PARAMS_FILE)


def train_config(**overrides):
    """The study's :class:`xraylib.tf_train.TrainConfig` (``train_binary`` and ``seed``) with a test's overrides."""
    from xraylib import tf_train

    params = study_params()
    return tf_train.TrainConfig.from_params(params["train_binary"], **{"seed": params["seed"], **overrides})


def build_model(backbone: str, image_size: int, weights: str = "none", **overrides):
    """:func:`xraylib.tf_model.build_model` with the study's ``input_norm``, ``dropout`` and ``l2``.

    No augmentation and seed 0 unless a test passes ``augment`` or ``seed``.
    """
    from xraylib import tf_model

    section = study_params()["train_binary"]
    settings = {"input_norm": section["input_norm"], "dropout": section["dropout"], "l2": section["l2"],
                "augment": None, "seed": 0}
    return tf_model.build_model(backbone, image_size, weights, **{**settings, **overrides})


def train_and_save(folder: Path, manifest, class_names, threshold: float, *, image_size: int = 32,
                   resize: str = "stretch", equalize: str = "none", data_source: str = ""):
    """A small CNN trained one epoch on ``manifest`` and saved as train_binary saves it; returns
    ``(model.keras path, model, datasets)``."""
    from xraylib import tf_data, tf_model, tf_train

    tf_train.set_determinism(0)
    datasets = tf_data.split_datasets(manifest, class_names, image_size=image_size, resize_mode=resize,
                                      equalize_method=equalize, batch_size=8, seed=0)
    cfg = train_config(image_size=image_size, epochs=1, batch_size=8, seed=0)
    result = tf_train.train_binary(cfg, datasets)
    meta = tf_train.model_metadata(cfg, class_names, threshold, resize_mode=resize, equalize_method=equalize,
                                   data_source=data_source)
    return tf_model.save_model(result.model, folder / "model.keras", meta), result.model, datasets
