"""The binary pneumonia model in Keras: backbones by name, pretrained weights, saving.

:func:`build_model` returns ONE flat functional model (no nested sub-models), so
every backbone layer is reachable with ``model.get_layer`` (Grad-CAM uses
:func:`last_conv_layer_name`). Layout::

    image (S, S, 1), 0..255 grey
      -> augmentation (training only)          xraylib.tf_layers.augmentation_layers
      -> Rescaling(1/255) -> Standardize       the original notebook's preprocessing
      -> RepeatChannels(3) -> BackboneScaling  only for the ImageNet backbones
      -> backbone (include_top=False)
      -> GlobalAveragePooling2D "head_pool" -> Dropout "head_dropout" -> Dense(1, sigmoid) "prediction"

The output is the probability of the positive class (index 1 of the sorted class
names: PNEUMONIA).

Input scaling (``input_norm``): ``standardize`` is the original notebook (per-image
z-scores straight into the backbone); ``backbone`` is the plain Keras recipe
(the backbone's own ``preprocess_input`` on 0..255 pixels); ``standardize_backbone``
(what ``auto`` picks with pretrained weights) standardises each image first,
then re-expresses it in the range the pretrained filters were trained on (see
:class:`xraylib.tf_layers.BackboneScaling`). ``auto`` picks ``standardize``
without pretrained weights.

Weights (``weights``): ``"imagenet"`` downloads the Keras ImageNet weights (needs
internet; a clear error says to pass a local file otherwise), ``"none"`` starts
from random weights, any other value is a path to a local Keras weights file of
the backbone with ``include_top=False`` (as the original notebook on Kaggle).
"""

from __future__ import annotations

import json
import weakref
from pathlib import Path

from xraylib.tf_runtime import tf  # noqa: I001  (first: TensorFlow imported quietly, before keras)
import keras
import numpy as np

from xraylib import config
from xraylib.tf_layers import (  # noqa: F401  (imports register the custom objects)
    BackboneScaling,
    RepeatChannels,
    Standardize,
    WeightedBinaryCrossentropy,
    augmentation_layers,
)

BACKBONES = ("small_cnn", "xception", "inception_resnet_v2", "densenet121")
# Keras application, its preprocess_input mode, smallest input side.
_APPLICATIONS = {
    "xception": ("Xception", "tf", 71),
    "inception_resnet_v2": ("InceptionResNetV2", "tf", 75),
    "densenet121": ("DenseNet121", "torch", 32),
}
LAST_CONV_LAYERS = {
    "xception": "block14_sepconv2_act",
    "inception_resnet_v2": "conv_7b_ac",
    "densenet121": "relu",
    "small_cnn": "cnn_block4_act",
}
# First layer trained when fine-tuning the top of a pretrained backbone ("auto").
FINE_TUNE_AT = {
    "xception": "block14_sepconv1",           # exit-flow block 14 (2 separable convs)
    "inception_resnet_v2": "conv_7b",         # the final 1x1 conv block
    "densenet121": "conv5_block16_0_bn",      # the last dense layer of block 5
}
INPUT_NORMS = ("auto", "standardize", "backbone", "standardize_backbone")
SMALL_CNN_FILTERS = (16, 32, 64, 128)


class WeightsUnavailableError(FileNotFoundError):
    """Pretrained weights could not be obtained (no internet for ``imagenet``)."""


def resolve_weights(weights) -> str | Path | None:
    """``None`` for random weights, ``"imagenet"``, or the absolute path of a local weights file.

    Raises:
        FileNotFoundError: a path that does not exist.
        ModelFileError: (a ``ValueError``) a file that is not HDF5 nor a ``.keras`` archive (one line: what it is).
    """
    if weights is None or str(weights).lower() in ("none", "null", ""):
        return None
    if str(weights).lower() == "imagenet":
        return "imagenet"
    from xraylib import model_files

    path = config.resolve(weights)
    if not path.exists():
        raise FileNotFoundError(
            f"train_binary.weights: weights file '{weights}' not found (looked at {path}); expected 'imagenet', "
            f"'none' or the path of a Keras include_top=False weights file such as xception_notop.weights.h5")
    what = model_files.describe(path)
    if what not in ("an HDF5 file", "a Keras model archive"):
        raise model_files.not_a_model(path, model_files.KERAS_WEIGHTS, what, "set train_binary.weights to such a "
                                      "file, 'imagenet' or 'none'")
    return path


def resolve_input_norm(input_norm: str, backbone: str, pretrained: bool) -> str:
    """The input scaling actually used (``auto`` resolved); see the module docstring."""
    if input_norm not in INPUT_NORMS:
        raise ValueError(f"train_binary.input_norm must be one of {INPUT_NORMS}, got {input_norm!r}")
    if input_norm == "auto":
        return "standardize_backbone" if pretrained else "standardize"
    if backbone == "small_cnn" and input_norm != "standardize":
        raise ValueError(f"input_norm {input_norm!r} needs an ImageNet backbone; small_cnn uses 'standardize'")
    return input_norm


SMALL_CNN_NORM = "batch"  # batch | group (GroupNormalization: no running statistics that lag behind the weights)


def _small_cnn(x):
    """Four conv blocks (16, 32, 64, 128 filters); the last activation is the Grad-CAM layer."""
    for i, filters in enumerate(SMALL_CNN_FILTERS, start=1):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"cnn_block{i}_conv")(x)
        if SMALL_CNN_NORM == "group":
            x = keras.layers.GroupNormalization(groups=8, name=f"cnn_block{i}_bn")(x)
        else:
            x = keras.layers.BatchNormalization(momentum=0.9, name=f"cnn_block{i}_bn")(x)
        x = keras.layers.Activation("relu", name=f"cnn_block{i}_act")(x)
        if i < len(SMALL_CNN_FILTERS):
            x = keras.layers.MaxPooling2D(2, name=f"cnn_block{i}_pool")(x)
    return x


def _reference_backbone(backbone: str, image_size: int, weights: str | Path) -> keras.Model:
    """A stand-alone backbone holding the pretrained weights (downloaded or read from a file)."""
    ctor_name = _APPLICATIONS[backbone][0]
    ctor = getattr(keras.applications, ctor_name)
    shape = (image_size, image_size, 3)
    if weights == "imagenet":
        try:
            return ctor(include_top=False, weights="imagenet", input_shape=shape)
        except Exception as err:  # network errors come in many types (URLError, HTTPError, OSError, ...)
            raise WeightsUnavailableError(
                f"train_binary.weights='imagenet': could not download the ImageNet weights of keras.applications."
                f"{ctor_name} ({type(err).__name__}: {err}). This needs internet access. Without it, download the "
                f"include_top=False weights elsewhere and pass the local file, e.g. weights: "
                f"path/to/{backbone}_notop.weights.h5, or use weights: none to train from scratch."
            ) from err
    model = ctor(include_top=False, weights=None, input_shape=shape)
    try:
        model.load_weights(str(weights))
    except Exception as err:  # Keras raises ValueError/KeyError/OSError depending on the mismatch
        from xraylib.model_files import one_line

        raise ValueError(
            f"train_binary.weights: '{weights}' does not fit backbone {backbone!r} (keras.applications.{ctor_name} "
            f"with include_top=False): {type(err).__name__}: {one_line(err, limit=300)}"
        ) from err
    return model


def _copy_backbone_weights(reference: keras.Model, inline: keras.Model) -> int:
    """Copy weights layer by layer from a stand-alone backbone into the inline one; return layers copied."""
    source = reference.layers[1:]  # skip its InputLayer
    target = inline.layers[-len(source):]
    copied = 0
    for src, dst in zip(source, target):
        if type(src) is not type(dst) or len(src.weights) != len(dst.weights):
            raise ValueError(f"backbone layers do not line up: {src.name} ({type(src).__name__}) vs "
                             f"{dst.name} ({type(dst).__name__})")
        if src.weights:
            dst.set_weights(src.get_weights())
            copied += 1
    return copied


def build_model(backbone: str, image_size: int, weights, *, input_norm: str, dropout: float, l2: float,
                augment: dict | None, seed: int) -> keras.Model:
    """Build the binary classifier (uncompiled).

    Every argument is required: the study's values are params.yaml ``train_binary``
    (:class:`xraylib.tf_train.TrainConfig`; :func:`xraylib.tf_train.train_binary` passes them).

    Args:
        backbone: one of :data:`BACKBONES`.
        image_size: input side in pixels (square, 1 grey channel, values 0..255).
        weights: ``"imagenet"``, ``"none"`` or a path to a local include_top=False weights file.
        input_norm: one of :data:`INPUT_NORMS` (see the module docstring).
        dropout: dropout rate before the output unit.
        l2: L2 penalty on the output unit's kernel (0 = none).
        augment: all augmentation factors for :func:`xraylib.tf_layers.augmentation_layers`
            (``flip``, ``rotation``, ``zoom``, ``contrast``, ``brightness``); ``None`` = no augmentation.
        seed: seed of the random layers.

    Raises:
        ValueError: unknown backbone or input_norm, image too small, weights that do not fit.
        FileNotFoundError: a local weights file that does not exist.
        WeightsUnavailableError: ``imagenet`` weights cannot be downloaded.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"train_binary.backbone must be one of {BACKBONES}, got {backbone!r}")
    min_size = _APPLICATIONS[backbone][2] if backbone in _APPLICATIONS else 16
    if int(image_size) != image_size or image_size < min_size:
        raise ValueError(f"train_binary.image_size must be an integer >= {min_size} for {backbone}, got {image_size!r}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"train_binary.dropout must be in [0, 1), got {dropout!r}")
    spec = resolve_weights(weights)
    if backbone == "small_cnn" and spec is not None:
        raise ValueError(f"small_cnn has no pretrained weights; set weights: none (got {weights!r})")
    norm = resolve_input_norm(input_norm, backbone, spec is not None)
    size = int(image_size)

    inputs = keras.Input((size, size, 1), name="image")
    x = inputs
    for layer in augmentation_layers(**augment, seed=int(seed)) if augment is not None else []:
        x = layer(x)
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(x)
    if norm in ("standardize", "standardize_backbone"):
        x = Standardize(name="standardize")(x)
    if backbone == "small_cnn":
        features = _small_cnn(x)
    else:
        ctor_name, mode, _ = _APPLICATIONS[backbone]
        x = RepeatChannels(3, name="to_rgb")(x)
        if norm != "standardize":
            x = BackboneScaling(mode, from_standardized=norm == "standardize_backbone", name="backbone_scaling")(x)
        inline = getattr(keras.applications, ctor_name)(include_top=False, weights=None, input_tensor=x)
        if spec is not None:
            reference = _reference_backbone(backbone, size, spec)
            _copy_backbone_weights(reference, inline)
            del reference
        features = inline.output
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(features)
    x = keras.layers.Dropout(float(dropout), seed=int(seed), name="head_dropout")(x)
    regularizer = keras.regularizers.L2(float(l2)) if l2 else None
    outputs = keras.layers.Dense(1, activation="sigmoid", kernel_regularizer=regularizer, name="prediction")(x)
    return keras.Model(inputs, outputs, name=f"binary_{backbone}")


def last_conv_layer_name(model: keras.Model) -> str:
    """Name of the last convolutional activation (Grad-CAM target), e.g. ``block14_sepconv2_act``.

    Raises:
        ValueError: no 4-D layer output before the head.
    """
    names = {layer.name for layer in model.layers}
    for name in LAST_CONV_LAYERS.values():
        if name in names:
            return name
    for layer in reversed(model.layers):
        shape = getattr(layer, "output", None)
        if shape is not None and len(layer.output.shape) == 4 and not layer.name.startswith(("augment", "image")):
            return layer.name
    raise ValueError(f"model {model.name!r} has no convolutional layer to take Grad-CAM from")


def backbone_of(model: keras.Model) -> str:
    """The backbone name of a model built by :func:`build_model`."""
    name = model.name.removeprefix("binary_")
    if name not in BACKBONES:
        raise ValueError(f"model {model.name!r} was not built by xraylib.tf_model.build_model")
    return name


def fine_tune_layer(backbone: str, fine_tune_at: str = "auto") -> str:
    """The first layer trained when fine-tuning (``auto``: :data:`FINE_TUNE_AT`)."""
    if fine_tune_at != "auto":
        return fine_tune_at
    if backbone not in FINE_TUNE_AT:
        raise ValueError(f"backbone {backbone!r} has no pretrained top to fine-tune; set fine_tune_epochs: 0")
    return FINE_TUNE_AT[backbone]


def split_at(model: keras.Model, layer_name: str) -> tuple[keras.Model, keras.Model]:
    """Cut a model at the input of ``layer_name`` into ``(lower, upper)`` sharing its layers.

    ``upper(lower(x)) == model(x)``. Used to compute the frozen part once and
    train only the part above the cut.

    Raises:
        ValueError: unknown layer, or a cut that later layers bypass.
    """
    try:
        layer = model.get_layer(layer_name)
    except ValueError as err:
        raise ValueError(f"train_binary.fine_tune_at: model {model.name!r} has no layer {layer_name!r}") from err
    cut = layer.input
    if isinstance(cut, (list, tuple)):
        raise ValueError(f"cannot cut {model.name!r} at {layer_name!r}: the layer has {len(cut)} inputs; "
                         "choose a layer with one input")
    try:
        upper = keras.Model(cut, model.output, name=f"{model.name}_upper")
    except ValueError as err:
        raise ValueError(f"cannot cut {model.name!r} at {layer_name!r}: later layers use earlier tensors "
                         f"(a skip connection crosses the cut); choose another layer. ({err})") from err
    lower = keras.Model(model.input, cut, name=f"{model.name}_lower")
    return lower, upper


def sidecar_path(model_path: str | Path) -> Path:
    """``model.keras`` -> ``model.json`` (the settings stored with the model)."""
    return Path(model_path).with_suffix(".json")


def save_model(model: keras.Model, path: str | Path, metadata: dict) -> Path:
    """Save ``model`` as ``.keras`` and its settings (threshold, classes, image preparation) as JSON beside it."""
    path = config.resolve(path)
    if path.suffix != ".keras":
        raise ValueError(f"model path must end in .keras, got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    make_reproducible(path)
    sidecar_path(path).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return path


FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def make_reproducible(path: str | Path) -> Path:
    """Rewrite a ``.keras`` archive so that the same weights always give the same bytes.

    Keras stamps the save time into ``metadata.json`` (``date_saved``) and into the
    zip entry of ``model.weights.h5``; both are replaced by fixed values, so an
    unchanged model keeps its hash and DVC does not re-run the stages downstream.
    """
    import os
    import zipfile

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(tmp, "w") as target:
        for item in source.infolist():
            payload = source.read(item)
            if item.filename == "metadata.json":
                meta = json.loads(payload)
                meta["date_saved"] = "1980-01-01@00:00:00"  # fixed: see the docstring
                payload = json.dumps(meta).encode()
            entry = zipfile.ZipInfo(item.filename, date_time=FIXED_ZIP_TIME)
            entry.compress_type = item.compress_type
            entry.external_attr = 0o644 << 16
            target.writestr(entry, payload)
    os.replace(tmp, path)
    return path


# Settings every reader of a saved model needs (model.json, written by save_model).
SETTINGS_KEYS = ("class_names", "image_size", "resize", "equalize", "threshold")


def load_model(path: str | Path, require: tuple[str, ...] = ("class_names", "threshold")) -> tuple[keras.Model, dict]:
    """Load a saved binary model (safe mode, no compile) and its JSON settings.

    Both files are checked before Keras reads the model, so a wrong file gives one
    line (what the file is, what was expected) instead of a traceback. Safe mode
    stays on: a model holding Python code (a ``Lambda`` layer) is refused, never run.

    Args:
        path: the ``.keras`` file; its settings are the ``.json`` file beside it.
        require: keys the settings must hold.

    Raises:
        FileNotFoundError: the model or its ``.json`` sidecar is missing.
        ModelFileError: (a ``ValueError``) the model is no Keras archive (text, empty, HDF5, truncated, a ZIP
            without ``config.json``), Keras cannot rebuild it, or the settings are not a JSON object with ``require``.
    """
    from xraylib import model_files

    path = config.resolve(path)
    if not path.exists():
        raise FileNotFoundError(f"model file {path} not found; train it with `xraylib notebook train_binary`")
    model_files.check_keras_archive(path)
    meta_path = sidecar_path(path)
    if not meta_path.exists():
        raise FileNotFoundError(f"model settings {meta_path} not found next to {path.name}; it holds the class names, "
                                "image size and threshold and is written by xraylib.tf_model.save_model")
    meta = model_files.read_settings(meta_path, require)
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as err:  # unknown layers, refused Lambda layers, damaged weights: many types
        # `from None`: Keras's message for a refused Lambda layer recommends turning safe mode off.
        raise model_files.keras_load_error(path, err) from None
    return model, meta


# --------------------------------------------------------------------------------------------------
# Inference (used by training for validation, by evaluation, prediction and Grad-CAM)
# --------------------------------------------------------------------------------------------------
TTA_MODES = ("none", "flip")


def flip_images(x):
    """Mirror a batch of images left-right (the test-time augmentation view)."""
    return tf.reverse(x, axis=[2])


def tta_views(tta: str) -> list:
    """The test-time augmentation views: the image, and with ``flip`` its mirror image."""
    return [lambda x: x] + ([flip_images] if tta == "flip" else [])


_INFERENCE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _inference_function(model: keras.Model):
    """One traced ``model(x, training=False)`` per model, reused by every call (no retracing per call)."""
    if model not in _INFERENCE:  # the function holds the model weakly, so the model can still be freed
        ref = weakref.ref(model)
        _INFERENCE[model] = tf.function(lambda x: ref()(x, training=False), reduce_retracing=True)
    return _INFERENCE[model]


def extract(model: keras.Model, dataset: tf.data.Dataset, *, flip: bool = False,
            dtype: str = "float16", transform=None) -> tuple[np.ndarray, np.ndarray]:
    """Run ``model`` over the images of ``dataset`` (inference mode), batch by batch.

    ``transform``: optional numpy function applied to each batch ``(B, S, S, 1)`` first (a random view).

    Returns:
        ``(outputs, labels)`` in the order the dataset yields them (for a shuffled
        dataset: its first epoch's order; the labels come along so they match).
    """
    infer = _inference_function(model)
    parts, labels = [], []
    for x, y in dataset:
        x = flip_images(x) if flip else x
        x = tf.convert_to_tensor(transform(np.asarray(x))) if transform is not None else x
        parts.append(np.asarray(infer(x)).astype(dtype))
        labels.append(np.asarray(y))
    return np.concatenate(parts), np.concatenate(labels)


def predict_proba(model: keras.Model, dataset: tf.data.Dataset | np.ndarray, tta: str = "none",
                  batch_size: int = 32) -> np.ndarray:
    """Probability of the positive class per image, averaged over the TTA views.

    Args:
        model: a binary model (output: probability of class 1).
        dataset: a ``(image, label)`` dataset or an array of images ``(N, S, S)`` / ``(N, S, S, 1)``.
        tta: ``none`` or ``flip`` (mean of the image and its mirror image).
    """
    if tta not in TTA_MODES:
        raise ValueError(f"tta must be one of {TTA_MODES}, got {tta!r}")
    if isinstance(dataset, np.ndarray):
        arr = dataset.astype(np.float32)
        arr = arr[..., None] if arr.ndim == 3 else arr
        dataset = tf.data.Dataset.from_tensor_slices((arr, np.zeros(len(arr), np.float32))).batch(batch_size)
    views = [extract(model, dataset, flip=i == 1, dtype="float64")[0][:, 0] for i in range(len(tta_views(tta)))]
    return np.mean(views, axis=0)
