"""Custom Keras objects of the binary model: preprocessing layers, augmentation and the loss.

Everything here is registered with ``keras.saving.register_keras_serializable``
(package ``xraylib``), so a saved ``.keras`` model reloads with the default
``safe_mode=True``: no Python lambda is stored in the file. Importing this module
(``xraylib.tf_model`` does) registers the objects.

Preprocessing inside the model, in this order::

    uint8-valued grey image (H, W, 1), 0..255
      -> augmentation (random flip / rotation / zoom [/ contrast / brightness]; training only)
      -> Rescaling(1/255)
      -> Standardize                (per-image (x - mean) / std: the original "standardize" Lambda)
      -> RepeatChannels(3)          (pretrained backbones expect 3 channels)
      -> BackboneScaling(mode)      (only with pretrained weights; see its docstring)
      -> backbone -> head

The per-image standardisation is the same formula as :func:`xraylib.images.standardize`.
"""

from __future__ import annotations

from xraylib import tf_runtime  # noqa: F401,I001  (first: TensorFlow imported quietly, before keras)
import keras
import numpy as np
from keras import ops

PACKAGE = "xraylib"

# The factors of the augmentation block (params.yaml train_binary.augment_<factor>).
AUGMENT_FACTORS = ("flip", "rotation", "zoom", "contrast", "brightness")
# The original Kaggle notebook's block: what notebook 02 previews (augmentation_preview without
# factors). NOT the study's training augmentation, which is params.yaml train_binary.augment_*.
ORIGINAL_AUGMENT = {"flip": "horizontal", "rotation": 0.1, "zoom": 0.1, "contrast": 0.0, "brightness": 0.0}
FLIP_MODES = ("none", "horizontal", "vertical", "horizontal_and_vertical")

# ImageNet statistics of the "torch" preprocess_input mode (DenseNet).
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
BACKBONE_MODES = ("tf", "torch")


@keras.saving.register_keras_serializable(package=PACKAGE)
class Standardize(keras.layers.Layer):
    """Per-image standardisation ``(x - mean) / max(std, 1/sqrt(N))`` over height, width and channels.

    The registered replacement for the original notebook's ``Lambda(standardize)``.
    The floor on ``std`` (as ``tf.image.per_image_standardization``) keeps a
    constant image finite (all zeros). Same formula as :func:`xraylib.images.standardize`.
    """

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        axes = tuple(range(1, len(x.shape)))
        mean = ops.mean(x, axis=axes, keepdims=True)
        std = ops.std(x, axis=axes, keepdims=True)
        n = ops.cast(ops.prod(ops.shape(x)[1:]), self.compute_dtype)
        return (x - mean) / ops.maximum(std, ops.rsqrt(n))

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package=PACKAGE)
class RepeatChannels(keras.layers.Layer):
    """Repeat a 1-channel (grey) image to ``channels`` channels for ImageNet backbones."""

    def __init__(self, channels: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)

    def call(self, inputs):
        return ops.repeat(inputs, self.channels, axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.channels)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


@keras.saving.register_keras_serializable(package=PACKAGE)
class BackboneScaling(keras.layers.Layer):
    """Map a standardised image into the input range a pretrained backbone was trained on.

    Pretrained weights expect the scaling of the backbone's own ``preprocess_input``
    applied to 0..255 RGB pixels: ``"tf"`` (Xception, InceptionResNetV2) gives
    ``x / 127.5 - 1``, ``"torch"`` (DenseNet) gives ``(x / 255 - mean_c) / std_c``
    with ImageNet channel statistics.

    Our images are first standardised per image (z-scores, the original
    notebook's choice, which also removes exposure and contrast differences
    between machines). To compose both, the z-scored image is re-expressed as
    pixels ``center + spread * z`` (mean grey 128, +-2 standard deviations
    spanning 0..255), then the backbone's ``preprocess_input`` formula is applied.
    With ``from_standardized=False`` the input is taken to be 0..1 and mapped to
    0..255 instead (the plain Keras recipe, without per-image standardisation).
    """

    def __init__(self, mode: str = "tf", from_standardized: bool = True, center: float = 128.0,
                 spread: float = 64.0, **kwargs):
        super().__init__(**kwargs)
        if mode not in BACKBONE_MODES:
            raise ValueError(f"BackboneScaling mode must be one of {BACKBONE_MODES}, got {mode!r}")
        self.mode = mode
        self.from_standardized = bool(from_standardized)
        self.center = float(center)
        self.spread = float(spread)

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        pixels = self.center + self.spread * x if self.from_standardized else 255.0 * x
        if self.mode == "tf":
            return pixels / 127.5 - 1.0
        mean = ops.convert_to_tensor(np.array(_IMAGENET_MEAN, dtype="float32") * 255.0, dtype=self.compute_dtype)
        std = ops.convert_to_tensor(np.array(_IMAGENET_STD, dtype="float32") * 255.0, dtype=self.compute_dtype)
        return (pixels - mean) / std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "from_standardized": self.from_standardized,
                "center": self.center, "spread": self.spread}


@keras.saving.register_keras_serializable(package=PACKAGE)
class WeightedBinaryCrossentropy(keras.losses.Loss):
    """Class-frequency weighted binary cross-entropy of the original notebook.

    ``loss = -mean(w_pos * y * log(p) + w_neg * (1 - y) * log(1 - p))`` with
    ``w_pos = n_negative / n`` and ``w_neg = n_positive / n`` (see
    :func:`class_frequency_weights`), so both classes contribute equally in total.
    ``p`` is clipped to ``[epsilon, 1 - epsilon]``. Optional label smoothing
    replaces ``y`` by ``y * (1 - s) + s / 2``.
    """

    def __init__(self, pos_weight: float = 1.0, neg_weight: float = 1.0, label_smoothing: float = 0.0,
                 epsilon: float = 1e-7, name: str = "weighted_binary_crossentropy",
                 reduction: str = "sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if pos_weight < 0 or neg_weight < 0:
            raise ValueError(f"loss weights must be >= 0, got pos_weight={pos_weight}, neg_weight={neg_weight}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        self.pos_weight = float(pos_weight)
        self.neg_weight = float(neg_weight)
        self.label_smoothing = float(label_smoothing)
        self.epsilon = float(epsilon)

    def call(self, y_true, y_pred):
        y_pred = ops.clip(ops.cast(y_pred, "float32"), self.epsilon, 1.0 - self.epsilon)
        # Labels often come as (batch,) while predictions are (batch, 1): align them,
        # else broadcasting would pair every label with every prediction.
        y = ops.reshape(ops.cast(y_true, "float32"), ops.shape(y_pred))
        if self.label_smoothing:
            y = y * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        loss = -(self.pos_weight * y * ops.log(y_pred) + self.neg_weight * (1.0 - y) * ops.log(1.0 - y_pred))
        return ops.mean(loss, axis=-1)

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction, "pos_weight": self.pos_weight,
                "neg_weight": self.neg_weight, "label_smoothing": self.label_smoothing, "epsilon": self.epsilon}


def class_frequency_weights(labels) -> dict[str, float]:
    """Weights of :class:`WeightedBinaryCrossentropy` and Keras ``class_weight`` from 0/1 labels.

    Returns:
        ``pos_weight = n_neg / n`` and ``neg_weight = n_pos / n`` (the original
        notebook's loss weights) and ``class_weight = {0: n / (2 n_neg), 1: n / (2 n_pos)}``
        (scikit-learn's "balanced" weights, the alternative passed to ``fit``).

    Raises:
        ValueError: labels other than 0/1, or a class missing.
    """
    y = np.asarray(labels).astype(int).ravel()
    if y.size == 0 or not np.isin(y, (0, 1)).all():
        raise ValueError(f"expected a non-empty array of 0/1 labels, got values {np.unique(y).tolist()}")
    n, n_pos = y.size, int(y.sum())
    n_neg = n - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"both classes are needed to weight the loss; got {n_neg} negative and {n_pos} positive "
                         "labels")
    return {
        "n_negative": n_neg, "n_positive": n_pos,
        "pos_weight": n_neg / n, "neg_weight": n_pos / n,
        "class_weight": {0: n / (2.0 * n_neg), 1: n / (2.0 * n_pos)},
    }


def augmentation_layers(*, flip: str, rotation: float, zoom: float, contrast: float, brightness: float,
                        seed: int) -> list:
    """The augmentation block as a list of Keras random layers (identity at inference).

    Every factor is required: the study's values are params.yaml ``train_binary.augment_*``
    (:attr:`xraylib.tf_train.TrainConfig.augment`); the original notebook's block is
    :data:`ORIGINAL_AUGMENT` (flip horizontal, rotation and zoom 0.1).

    Layers take 0..255 images. A factor of 0 leaves a transform out. ``rotation``
    and ``zoom`` are Keras factors (rotation 0.1 = up to +-0.1 * 360 degrees);
    ``contrast`` and ``brightness`` add intensity augmentation (not in the original).

    Raises:
        ValueError: unknown flip mode or a negative factor.
    """
    if flip not in FLIP_MODES:
        raise ValueError(f"augmentation flip must be one of {FLIP_MODES}, got {flip!r}")
    for name, value in (("rotation", rotation), ("zoom", zoom), ("contrast", contrast), ("brightness", brightness)):
        if value is None or float(value) < 0:
            raise ValueError(f"augmentation {name} must be a factor >= 0, got {value!r}")
    layers = []
    if flip != "none":
        layers.append(keras.layers.RandomFlip(flip, seed=seed, name="augment_flip"))
    if rotation:
        layers.append(keras.layers.RandomRotation(float(rotation), seed=seed + 1, name="augment_rotation"))
    if zoom:
        layers.append(keras.layers.RandomZoom(float(zoom), seed=seed + 2, name="augment_zoom"))
    if contrast:
        layers.append(keras.layers.RandomContrast(float(contrast), value_range=(0, 255), seed=seed + 3,
                                                  name="augment_contrast"))
    if brightness:
        layers.append(keras.layers.RandomBrightness(float(brightness), value_range=(0, 255), seed=seed + 4,
                                                    name="augment_brightness"))
    return layers


def augmentation_preview(images: np.ndarray, n_variants: int, seed: int, **augment_params) -> np.ndarray:
    """Apply the real augmentation layers ``n_variants`` times to each image.

    Args:
        images: ``(N, H, W)`` uint8 grey images (e.g. from :func:`xraylib.images.prepare`).
        n_variants: number of random variants per image.
        seed: seed of the augmentation layers (same seed, same variants).
        **augment_params: ``flip``, ``rotation``, ``zoom``, ``contrast``, ``brightness``
            as :func:`augmentation_layers`; a factor not given is the original notebook's
            (:data:`ORIGINAL_AUGMENT`), which is what notebook 02 shows, not the training
            augmentation of params.yaml (pass ``**TrainConfig.augment`` to preview that).

    Returns:
        ``(N, n_variants, H, W)`` uint8 array.
    """
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"images must have shape (N, H, W), got {images.shape}")
    if int(n_variants) < 1:
        raise ValueError(f"n_variants must be >= 1, got {n_variants!r}")
    unknown = set(augment_params) - set(AUGMENT_FACTORS)
    if unknown:
        raise ValueError(f"unknown augmentation parameter(s) {sorted(unknown)}; expected {sorted(AUGMENT_FACTORS)}")
    block = keras.Sequential(augmentation_layers(**{**ORIGINAL_AUGMENT, **augment_params}, seed=int(seed)))
    x = images.astype("float32")[..., None]
    variants = []
    for _ in range(int(n_variants)):
        out = keras.ops.convert_to_numpy(block(x, training=True)) if block.layers else x
        variants.append(np.clip(np.round(out[..., 0]), 0, 255).astype(np.uint8))
    return np.stack(variants, axis=1)
