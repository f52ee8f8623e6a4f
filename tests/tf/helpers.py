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
