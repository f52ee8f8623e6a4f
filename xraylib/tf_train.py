"""Training of the binary Keras model: loss choice, phases, callbacks, feature caching.

Two ways to train, chosen by the weights:

* **From scratch** (``weights: none``, e.g. ``small_cnn``): the whole model is
  fitted on the image datasets; the augmentation layers are active.
* **Pretrained backbone** (``weights: imagenet`` or a local file): phase ``head``
  trains only the classifier on a frozen backbone; the optional phase
  ``fine_tune`` then unfreezes the backbone from ``fine_tune_at`` on (batch
  normalisation stays frozen, as usual for fine-tuning) at a lower learning rate.
  With ``cache_features: true`` the frozen part runs ONCE per image: its
  activations at the cut are kept in memory (float16) and every epoch costs only
  the trainable top, which makes CPU training feasible. Augmentation layers
  cannot act on cached activations; instead ``cache_views: K`` passes the
  training images K times through the frozen part, every pass after the first
  a random image-space view (:func:`xraylib.images.random_view`), so the cache
  holds K augmented copies (K times the extraction time and memory).
  ``cache_features: false`` (the GPU recipe) augments every epoch with the layers.

Callbacks in every phase: early stopping, reduce-LR-on-plateau, a best-on-validation
checkpoint (restored at the end of the phase), a CSV log and one progress line
per epoch. :func:`set_determinism` makes two runs on one CPU identical.

Several devices (two or more GPUs, or the devices of a given strategy): the model
trains under ``tf.distribute.MirroredStrategy`` with the global batch
``batch_size`` split over the replicas and validation computed on one device
(:mod:`xraylib.tf_distribute`); with one device nothing changes.
"""

from __future__ import annotations

import dataclasses
import difflib
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from xraylib.tf_runtime import tf  # noqa: I001  (first: TensorFlow imported quietly, before keras)
import keras
import numpy as np
import pandas as pd

from xraylib import images, tf_distribute, tf_model
# Inference lives in tf_model; predict_proba is also reached as tf_train.predict_proba (notebook 03, benchmarks).
from xraylib.tf_model import TTA_MODES, extract, predict_proba, tta_views  # noqa: F401
from xraylib.tf_layers import WeightedBinaryCrossentropy, class_frequency_weights

IMBALANCE = ("weighted_loss", "class_weight", "none")


# train_binary keys that are not settings of the training run: paths, the data preparation of the
# stage and the evaluation after training (notebook 03 reads them itself).
STAGE_KEYS = ("manifest_dir", "model_dir", "equalize_override", "original_threshold", "n_bootstrap", "recalibration",
              "calibrate_on")


def _unknown_key(dotted: str, key: str, choices) -> str:
    """``train_binary.epoch: unknown key; did you mean 'epochs'?`` (the schema's wording)."""
    close = difflib.get_close_matches(key, sorted(choices), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(sorted(choices))}"
    return f"{dotted}: unknown key; {hint}"


@dataclass
class TrainConfig:
    """Settings of one training run: the ``train_binary`` section of params.yaml and the top-level ``seed``.

    Every field is required: params.yaml is the one source of values, so there is no
    second set of defaults here that could disagree with it. Build it with
    :meth:`from_params` from the (validated) params, overriding what a caller needs;
    the keys of ``train_binary`` that are not training settings are :data:`STAGE_KEYS`.
    """

    backbone: str
    weights: str
    image_size: int
    input_norm: str
    batch_size: int
    epochs: int
    learning_rate: float
    fine_tune_epochs: int
    fine_tune_at: str
    fine_tune_learning_rate: float
    cache_features: bool
    cache_views: int
    dropout: float
    l2: float
    label_smoothing: float
    imbalance: str
    monitor: str
    early_stopping_patience: int
    reduce_lr_patience: int
    reduce_lr_factor: float
    augment_flip: str
    augment_rotation: float
    augment_zoom: float
    augment_contrast: float
    augment_brightness: float
    tta: str
    seed: int  # the top-level ``seed`` of params.yaml, not a train_binary key

    def __post_init__(self):
        if self.imbalance not in IMBALANCE:
            raise ValueError(f"train_binary.imbalance must be one of {IMBALANCE}, got {self.imbalance!r}")
        if self.tta not in TTA_MODES:
            raise ValueError(f"train_binary.tta must be one of {TTA_MODES}, got {self.tta!r}")
        if self.monitor not in ("val_loss", "val_auc"):
            raise ValueError(f"train_binary.monitor must be 'val_loss' or 'val_auc', got {self.monitor!r}")
        for name, least in (("epochs", 1), ("fine_tune_epochs", 0), ("batch_size", 1), ("cache_views", 1)):
            value = getattr(self, name)
            if int(value) != value or value < least:
                raise ValueError(f"train_binary.{name} must be an integer >= {least}, got {value!r}")

    @property
    def augment(self) -> dict:
        """Factors for :func:`xraylib.tf_layers.augmentation_layers`."""
        return {"flip": self.augment_flip, "rotation": self.augment_rotation, "zoom": self.augment_zoom,
                "contrast": self.augment_contrast, "brightness": self.augment_brightness}

    @property
    def pretrained(self) -> bool:
        return tf_model.resolve_weights(self.weights) is not None

    @classmethod
    def from_params(cls, section: Mapping, **overrides) -> "TrainConfig":
        """Build from the ``train_binary`` section of params.yaml, with explicit overrides.

        ``TrainConfig.from_params(params["train_binary"], seed=params["seed"])`` is the
        study's configuration; a test or benchmark adds what it changes, e.g. ``epochs=2``.
        The keys in :data:`STAGE_KEYS` are accepted and left out.

        Args:
            section: ``params["train_binary"]``.
            **overrides: field values that replace the section's; ``seed`` (the top-level
                key of params.yaml) must be given here.

        Raises:
            ValueError: unknown keys (each with the closest valid key) or missing ones, all
                named as dotted params.yaml keys (``train_binary.epochs``, ``seed``).
        """
        fields = [f.name for f in dataclasses.fields(cls)]
        values = {**section, **overrides}
        problems = [_unknown_key(f"train_binary.{key}", key, [*fields, *STAGE_KEYS])
                    for key in values if key not in fields and key not in STAGE_KEYS]
        for name in fields:
            if name not in values:
                problems.append("seed: missing (pass seed=params['seed'], the top-level key of params.yaml)"
                                if name == "seed" else f"train_binary.{name}: missing (params.yaml must define it)")
        if problems:
            raise ValueError("\n".join(problems))
        return cls(**{name: values[name] for name in fields})

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    """What :func:`train_binary` returns."""

    model: keras.Model
    history: pd.DataFrame
    class_weights: dict
    val_probs: np.ndarray
    info: dict = field(default_factory=dict)


def set_determinism(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow and make TF ops deterministic (same run twice = same numbers on CPU)."""
    keras.utils.set_random_seed(int(seed))
    tf.config.experimental.enable_op_determinism()


class EpochLine(keras.callbacks.Callback):
    """Print one rounded line per epoch (no timings, so notebook outputs are reproducible)."""

    def __init__(self, phase: str, epochs: int, first_epoch: int = 0):
        super().__init__()
        self.phase = phase
        self.epochs = epochs
        self.first_epoch = first_epoch

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

        def part(prefix):
            return "  ".join(f"{prefix}{k} {logs[prefix + k]:.3f}" for k in ("loss", "auc", "accuracy")
                             if prefix + k in logs)

        number = epoch - self.first_epoch + 1
        print(f"{self.phase:<9} epoch {number:>2}/{self.epochs}  {part('')} | {part('val_')} | lr {lr:.1e}", flush=True)


def make_loss(imbalance: str, weights: dict, label_smoothing: float = 0.0):
    """``(loss, class_weight)`` for an imbalance strategy (see :data:`IMBALANCE`)."""
    if imbalance == "weighted_loss":
        return WeightedBinaryCrossentropy(weights["pos_weight"], weights["neg_weight"], label_smoothing), None
    loss = keras.losses.BinaryCrossentropy(label_smoothing=float(label_smoothing))
    return loss, (weights["class_weight"] if imbalance == "class_weight" else None)


def _metrics() -> list[keras.metrics.Metric]:
    return [keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy(name="accuracy")]


def _compile(model: keras.Model, learning_rate: float, loss) -> None:
    model.compile(optimizer=keras.optimizers.Adam(float(learning_rate)), loss=loss, metrics=_metrics())


def _callbacks(cfg: TrainConfig, phase: str, epochs: int, checkpoint: Path, log_csv: Path | None, append: bool,
               first_epoch: int = 0):
    mode = "min" if cfg.monitor == "val_loss" else "max"
    callbacks = [
        keras.callbacks.EarlyStopping(monitor=cfg.monitor, mode=mode, patience=int(cfg.early_stopping_patience)),
        keras.callbacks.ReduceLROnPlateau(monitor=cfg.monitor, mode=mode, factor=float(cfg.reduce_lr_factor),
                                          patience=int(cfg.reduce_lr_patience), min_lr=1e-6),
        keras.callbacks.ModelCheckpoint(str(checkpoint), monitor=cfg.monitor, mode=mode, save_best_only=True,
                                        save_weights_only=True),
        EpochLine(phase, epochs, first_epoch),
    ]
    if log_csv is not None:
        callbacks.append(keras.callbacks.CSVLogger(str(log_csv), append=append))
    return callbacks


def _history_frame(history: keras.callbacks.History, phase: str, first_epoch: int) -> pd.DataFrame:
    frame = pd.DataFrame(history.history)
    frame.insert(0, "epoch", np.arange(first_epoch + 1, first_epoch + 1 + len(frame)))
    frame.insert(1, "phase", phase)
    return frame


def _fit_arrays(model, x, y, val, cfg, phase, epochs, lr, loss, class_weight, work: Path, log_csv, append,
                initial_epoch=0):
    _compile(model, lr, loss)
    checkpoint = work / f"best_{phase}.weights.h5"
    history = model.fit(x, y, batch_size=int(cfg.batch_size), epochs=initial_epoch + epochs,
                        initial_epoch=initial_epoch, validation_data=val, shuffle=True, class_weight=class_weight,
                        callbacks=_callbacks(cfg, phase, epochs, checkpoint, log_csv, append, initial_epoch), verbose=0)
    if checkpoint.exists():
        model.load_weights(str(checkpoint))
    return _history_frame(history, phase, initial_epoch)


def _fit_datasets(model, train, val, cfg, phase, epochs, lr, loss, class_weight, work: Path, log_csv, append,
                  initial_epoch=0, strategy=None):
    with tf_distribute.scope(strategy):  # a new optimizer: mirrored under a strategy
        _compile(model, lr, loss)
    checkpoint = work / f"best_{phase}.weights.h5"
    callbacks = _callbacks(cfg, phase, epochs, checkpoint, log_csv, append, initial_epoch)
    if strategy is not None:  # validation on one device, first so that every other callback sees it
        callbacks.insert(0, tf_distribute.OneDeviceValidation(val, _metrics))
        val = None
    history = model.fit(train, validation_data=val, epochs=initial_epoch + epochs, initial_epoch=initial_epoch,
                        shuffle=False, class_weight=class_weight, callbacks=callbacks, verbose=0)
    if checkpoint.exists():
        model.load_weights(str(checkpoint))
    return _history_frame(history, phase, initial_epoch)


def _freeze_batchnorm(model: keras.Model) -> None:
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def train_binary(cfg: TrainConfig, data: dict, *, log_csv: str | Path | None = None,
                 strategy: tf.distribute.Strategy | None = None) -> TrainResult:
    """Build and train the binary model; return it with its history and validation probabilities.

    Args:
        cfg: training settings.
        data: :func:`xraylib.tf_data.split_datasets` output with ``train`` and ``val``.
        log_csv: optional CSV training log (Keras ``CSVLogger``).
        strategy: a ``tf.distribute.MirroredStrategy`` to train under, or TensorFlow's default strategy for one
            device; ``None``: :func:`xraylib.tf_distribute.strategy` (mirrored over every GPU when there are two or
            more). Mirrored: ``cfg.batch_size`` is the global batch, split over the replicas; validation runs on
            one device; the cached-feature path stays on one device (see :mod:`xraylib.tf_distribute`).

    Returns:
        :class:`TrainResult`; ``val_probs`` are the validation probabilities
        (with the configured test-time augmentation) used to choose the threshold.

    Raises:
        ValueError: called inside a strategy's scope (pass the strategy instead), a strategy other than those two, or
            a batch size that is no multiple of the replica count.
    """
    if tf.distribute.has_strategy():
        raise ValueError("call train_binary outside strategy.scope() and pass the strategy as strategy=...: it builds "
                         "the model inside the scope and trains and validates outside it")
    strategy = tf_distribute.strategy() if strategy is None else strategy
    if not tf_distribute.is_mirrored(strategy):
        return _train_binary(cfg, data, log_csv)  # one device: exactly the training without tf_distribute
    replicas = tf_distribute.replicas(strategy)
    if cfg.pretrained and cfg.cache_features:
        print(f"cached-feature training runs on one device ({replicas} replica(s) available): the frozen part runs "
              f"once per image and only the small top trains", flush=True)
        return _train_binary(cfg, data, log_csv)
    batch = int(cfg.batch_size)
    train = {**data["train"], "dataset": tf_distribute.training_batches(
        data["train"]["dataset"], len(data["train"]["labels"]), batch, replicas)}
    print(f"training on {replicas} replicas ({type(strategy).__name__}), global batch {batch} ({batch // replicas} "
          f"per replica); validation on one device", flush=True)
    return _train_binary(cfg, {**data, "train": train}, log_csv, strategy)


def _train_binary(cfg: TrainConfig, data: dict, log_csv: str | Path | None,
                  strategy: tf.distribute.Strategy | None = None) -> TrainResult:
    """:func:`train_binary` on one device (``strategy`` None) or mirrored (model built under ``strategy``)."""
    set_determinism(cfg.seed)
    weights = class_frequency_weights(data["train"]["labels"])
    loss, class_weight = make_loss(cfg.imbalance, weights, cfg.label_smoothing)
    with tf_distribute.scope(strategy):  # the model's variables: mirrored under a strategy
        model = tf_model.build_model(cfg.backbone, cfg.image_size, cfg.weights, input_norm=cfg.input_norm,
                                     dropout=cfg.dropout, l2=cfg.l2, augment=cfg.augment, seed=cfg.seed)
    log_csv = Path(log_csv) if log_csv else None
    if log_csv is not None:
        log_csv.parent.mkdir(parents=True, exist_ok=True)
    info = {"trainable_from": None, "cached": None}
    frames = []
    with tempfile.TemporaryDirectory(prefix="xraylib_ckpt_") as tmp:
        work = Path(tmp)
        if not cfg.pretrained:
            # From scratch: every layer trains on the images, with augmentation.
            frames.append(_fit_datasets(model, data["train"]["dataset"], data["val"]["dataset"], cfg, "train",
                                        int(cfg.epochs), cfg.learning_rate, loss, class_weight, work, log_csv, False,
                                        strategy=strategy))
            info["trainable_from"] = "all layers"
            val_probs = predict_proba(model, data["val"]["dataset"], cfg.tta)
        elif cfg.cache_features:
            val_probs = _train_cached(model, cfg, data, work, log_csv, frames, info)
        else:
            val_probs = _train_frozen_on_images(model, cfg, data, loss, class_weight, work, log_csv, frames, info,
                                                strategy)
    history = pd.concat(frames, ignore_index=True)
    info["replicas"] = tf_distribute.replicas(strategy) if strategy is not None else 1  # copies that trained
    return TrainResult(model, history, weights, val_probs, info)


def cut_layer(cfg: TrainConfig) -> str:
    """Where the frozen part ends: the fine-tuning layer, or the head's input without fine-tuning."""
    return tf_model.fine_tune_layer(cfg.backbone, cfg.fine_tune_at) if int(cfg.fine_tune_epochs) > 0 \
        else "head_dropout"


def train_on_cached(model: keras.Model, cfg: TrainConfig, cached_train: np.ndarray, y_train: np.ndarray,
                    cached_val: list[np.ndarray], y_val: np.ndarray, *, log_csv: str | Path | None = None,
                    work: Path | None = None) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """Train the head (and optionally the top block) of ``model`` on activations cached at :func:`cut_layer`.

    Args:
        model: from :func:`xraylib.tf_model.build_model` with a pretrained backbone.
        cfg: training settings.
        cached_train, y_train: training activations at the cut and their 0/1 labels.
        cached_val: validation activations, one array per test-time-augmentation view.
        y_val: validation labels.

    Returns:
        ``(history, val_probs, info)``; ``val_probs`` averaged over the views.
    """
    if work is None:
        with tempfile.TemporaryDirectory(prefix="xraylib_ckpt_") as tmp:
            return train_on_cached(model, cfg, cached_train, y_train, cached_val, y_val, log_csv=log_csv,
                                   work=Path(tmp))
    weights = class_frequency_weights(y_train)
    loss, class_weight = make_loss(cfg.imbalance, weights, cfg.label_smoothing)
    layer = cut_layer(cfg)
    fine_tune = layer != "head_dropout"
    _, upper = tf_model.split_at(model, layer)
    frames = []
    if fine_tune:
        _, head = tf_model.split_at(model, "head_dropout")
        pool = keras.Model(model.get_layer(layer).input, model.get_layer("head_pool").output)
        pooled_train = pool.predict(cached_train, batch_size=int(cfg.batch_size), verbose=0)
        pooled_val = pool.predict(cached_val[0], batch_size=int(cfg.batch_size), verbose=0)
    else:
        head, pooled_train, pooled_val = upper, cached_train, cached_val[0]
    frames.append(_fit_arrays(head, pooled_train, y_train, (pooled_val, y_val), cfg, "head", int(cfg.epochs),
                              cfg.learning_rate, loss, class_weight, work, log_csv, False))
    if fine_tune:
        _freeze_batchnorm(upper)
        frames.append(_fit_arrays(upper, cached_train, y_train, (cached_val[0], y_val), cfg, "fine_tune",
                                  int(cfg.fine_tune_epochs), cfg.fine_tune_learning_rate, loss, class_weight, work,
                                  log_csv, True, initial_epoch=len(frames[-1])))
    top = upper if fine_tune else head
    val_probs = np.mean([top.predict(v, batch_size=int(cfg.batch_size), verbose=0)[:, 0].astype("float64")
                         for v in cached_val], axis=0)
    info = {"trainable_from": layer, "cached": {"cut": layer, "shape": list(cached_train.shape[1:]),
                                                "dtype": str(cached_train.dtype)}}
    return pd.concat(frames, ignore_index=True), val_probs, info


def cache_activations(model: keras.Model, cfg: TrainConfig, data: dict) -> dict:
    """Run the frozen part of ``model`` once over train and val (val once per TTA view).

    Returns:
        ``{"train": (x, y), "val": ([x per view], y)}``; activations stored as float16.
    """
    lower, _ = tf_model.split_at(model, cut_layer(cfg))
    cached_train, y_train = extract(lower, data["train"]["dataset"])
    if int(cfg.cache_views) > 1:
        rng = np.random.default_rng([int(cfg.seed), 0x71E5])
        views = [extract(lower, data["train"]["dataset"], transform=lambda x: random_views(x, rng))
                 for _ in range(int(cfg.cache_views) - 1)]
        cached_train = np.concatenate([cached_train, *(v[0] for v in views)])
        y_train = np.concatenate([y_train, *(v[1] for v in views)])
    views = [extract(lower, data["val"]["dataset"], flip=i == 1) for i in range(len(tta_views(cfg.tta)))]
    return {"train": (cached_train, y_train), "val": ([v[0] for v in views], views[0][1])}


def random_views(batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """:func:`xraylib.images.random_view` of every image of a ``(B, S, S, 1)`` batch (values 0..255)."""
    grey = np.clip(np.round(batch[..., 0]), 0, 255).astype(np.uint8)
    return np.stack([images.random_view(g, rng) for g in grey])[..., None].astype(np.float32)


def _train_cached(model, cfg, data, work, log_csv, frames, info) -> np.ndarray:
    """Pretrained backbone, frozen part computed once per image (see the module docstring)."""
    cache = cache_activations(model, cfg, data)
    (x_train, y_train), (x_val, y_val) = cache["train"], cache["val"]
    print(f"cached frozen activations at '{cut_layer(cfg)}' {tuple(x_train.shape[1:])}: "
          f"train {len(x_train)} images ({int(cfg.cache_views)} view(s) of {len(x_train) // int(cfg.cache_views)}), "
          f"val {len(y_val)} images x {len(x_val)} view(s)", flush=True)
    history, val_probs, cached_info = train_on_cached(model, cfg, x_train, y_train, x_val, y_val, log_csv=log_csv,
                                                      work=work)
    frames.append(history)
    info.update(cached_info)
    return val_probs


def _train_frozen_on_images(model, cfg, data, loss, class_weight, work, log_csv, frames, info,
                            strategy=None) -> np.ndarray:
    """Pretrained backbone trained on images (augmentation active): frozen, then optionally fine-tuned."""
    lower, _ = tf_model.split_at(model, "head_dropout")
    frozen = {id(layer) for layer in lower.layers}
    for layer in model.layers:
        layer.trainable = id(layer) not in frozen
    frames.append(_fit_datasets(model, data["train"]["dataset"], data["val"]["dataset"], cfg, "head",
                                int(cfg.epochs), cfg.learning_rate, loss, class_weight, work, log_csv, False,
                                strategy=strategy))
    info["trainable_from"] = "head_dropout"
    if int(cfg.fine_tune_epochs) > 0:
        cut_layer = tf_model.fine_tune_layer(cfg.backbone, cfg.fine_tune_at)
        below, _ = tf_model.split_at(model, cut_layer)
        frozen = {id(layer) for layer in below.layers}
        for layer in model.layers:
            layer.trainable = id(layer) not in frozen
        _freeze_batchnorm(model)
        frames.append(_fit_datasets(model, data["train"]["dataset"], data["val"]["dataset"], cfg, "fine_tune",
                                    int(cfg.fine_tune_epochs), cfg.fine_tune_learning_rate, loss, class_weight,
                                    work, log_csv, True, initial_epoch=len(frames[-1]), strategy=strategy))
        info["trainable_from"] = cut_layer
    return predict_proba(model, data["val"]["dataset"], cfg.tta)


def model_metadata(cfg: TrainConfig, class_names: list[str], threshold: float, *, resize_mode: str,
                   equalize_method: str, original_threshold: float = 0.75, data_source: str = "",
                   calibration: dict | None = None, replicas: int = 1) -> dict:
    """Settings saved beside the model (``model.json``) so external evaluation prepares and decides alike.

    ``calibration``: the recalibration map fitted on validation (:func:`xraylib.calibration.fit_binary`).
    ``replicas``: how many model copies trained it (``TrainResult.info["replicas"]``; > 1 under MirroredStrategy,
    where each replica's BatchNorm sees its share of the global batch, so the result depends on it).
    """
    weights = tf_model.resolve_weights(cfg.weights)
    return {
        "framework": "keras",
        "task": "binary",
        "class_names": list(class_names),
        "positive_class": class_names[1],
        "image_size": int(cfg.image_size),
        "resize": resize_mode,
        "equalize": equalize_method,
        "threshold": float(threshold),
        "threshold_rule": "Youden's J (sensitivity + specificity - 1) maximised on the validation split",
        "original_threshold": float(original_threshold),
        "tta": cfg.tta,
        "backbone": cfg.backbone,
        "weights": "none" if weights is None else ("imagenet" if weights == "imagenet" else Path(weights).name),
        "input_norm": tf_model.resolve_input_norm(cfg.input_norm, cfg.backbone, weights is not None),
        "data_source": data_source,
        "calibration": dict(calibration) if calibration else {"method": "none"},
        "training": {k: v for k, v in cfg.as_dict().items() if k != "weights"},
        "replicas": int(replicas),
        "keras_version": keras.__version__,
    }
