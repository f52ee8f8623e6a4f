"""Grad-CAM for the Keras binary model, written with ``tf.GradientTape``.

For a batch of prepared grey images and one class per image:

1. one forward pass returns the activations ``A`` of the target layer (the
   backbone's last convolutional activation, :func:`target_layer_name`, e.g.
   ``block14_sepconv2_act`` for Xception or ``conv_7b_ac`` for InceptionResNetV2)
   and the class score;
2. the tape gives ``dS/dA``; :func:`xraylib.gradcam_maps.cam_from_activations` turns
   both into ``ReLU(sum_k mean(dS/dA_k) A_k)``, which
   :func:`xraylib.gradcam_maps.upsample_cam` scales to [0, 1] at the image size.

The class score ``S`` is taken before the output activation, as in the Grad-CAM
paper: for a ``Dense(1, sigmoid)`` head, ``S = z`` (the logit) for the positive
class and ``S = -z`` for the negative one (``sigmoid(-z) = 1 - p``), so a
saturated probability never zeroes the gradient.

Models: :func:`xraylib.tf_model.build_model` returns one flat functional model,
whose layers are all reachable with ``model.get_layer``; then a "grad model" from
the model inputs to ``[target activation, head input]`` is built directly.
Keras 3 cannot build such a model when the target sits in a NESTED backbone
(e.g. ``Sequential([InceptionResNetV2(...), GlobalAveragePooling2D(), Dense(1)])``
as in the original notebook): then the outer model must be a chain of layers;
the backbone is replaced by a sub-model returning ``[target, backbone output]``
and the chain is run layer by layer (checked once against ``model(x)``; a model
that is not a chain, e.g. with a skip connection around the backbone, is
refused with a ``ValueError``).

:func:`write_camset` is what the internal command ``python -m xraylib cams MODEL
--images CSV --out NPZ`` runs (with ``--deletion-steps``, also the maps' deletion
curves, :mod:`xraylib.gradcam_faithfulness`, since they need the model); notebook 05 calls it through
:func:`xraylib.gradcam_sets.run_keras_cams`, so the notebook never imports TensorFlow.
``xraylib predict --cam`` uses :class:`GradCam` through
:meth:`xraylib.tf_backend.KerasClassifier.cams`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from xraylib.tf_runtime import tf  # noqa: I001  (first: TensorFlow imported quietly, before keras)
import keras
import numpy as np

from xraylib import gradcam_faithfulness, images, tf_model
from xraylib.gradcam_maps import cam_from_activations, upsample_cam
from xraylib.gradcam_sets import CamSet, label_indices, save_camset, true_class_maps

SCORE_ACTIVATIONS = ("sigmoid", "softmax")


# --------------------------------------------------------------------------- layers

def _find(model: keras.Model, name: str) -> tuple[keras.layers.Layer, list[keras.Model]] | None:
    """``(layer, chain of nested models holding it)``; ``None`` when absent (depth-first, any nesting)."""
    for layer in model.layers:
        if layer.name == name:
            return layer, []
        if isinstance(layer, keras.Model):
            found = _find(layer, name)
            if found is not None:
                return found[0], [layer, *found[1]]
    return None


def _is_spatial(layer: keras.layers.Layer) -> bool:
    try:
        shape = layer.output.shape
    except (AttributeError, ValueError):
        return False
    return len(shape) == 4 and not isinstance(layer, keras.layers.InputLayer)


def target_layer_name(model: keras.Model) -> str:
    """The Grad-CAM layer: the backbone's last convolutional activation.

    For models of :func:`xraylib.tf_model.build_model` this is
    :func:`xraylib.tf_model.last_conv_layer_name` (e.g. ``conv_7b_ac`` for
    InceptionResNetV2); any other model gets its known last-conv layer (also
    inside a nested backbone) or else its last layer with a 4-D output.

    Raises:
        ValueError: the model has no spatial (4-D) layer.
    """
    try:
        tf_model.backbone_of(model)
        return tf_model.last_conv_layer_name(model)
    except ValueError:
        pass
    for name in tf_model.LAST_CONV_LAYERS.values():
        if _find(model, name) is not None:
            return name
    for layer in reversed(model.layers):
        if isinstance(layer, keras.Model):
            try:
                return target_layer_name(layer)
            except ValueError:
                continue
        if _is_spatial(layer) and not layer.name.startswith(("augment", "image")):
            return layer.name
    raise ValueError(f"model {model.name!r} has no convolutional (4-D) layer to take Grad-CAM from")


def _score_head(model: keras.Model) -> keras.layers.Dense | None:
    """The final ``Dense`` layer when its activation is sigmoid/softmax (its logits are the class scores)."""
    last = model.layers[-1]
    if isinstance(last, keras.layers.Dense) and getattr(last.activation, "__name__", "") in SCORE_ACTIVATIONS:
        return last
    return None


class GradCam:
    """Grad-CAM of a Keras classifier at one layer.

    Args:
        model: a Keras model with one image input and one output: ``(N, 1)``
            sigmoid probability of class 1, or ``(N, C)`` class probabilities.
        layer_name: target layer (default :func:`target_layer_name`); may lie in a nested backbone.

    Raises:
        ValueError: unknown layer, or a nested layer in a model that is not a chain of layers.
    """

    def __init__(self, model: keras.Model, layer_name: str | None = None):
        self.model = model
        self.layer_name = layer_name or target_layer_name(model)
        found = _find(model, self.layer_name)
        if found is None:
            raise ValueError(f"model {model.name!r} has no layer {self.layer_name!r}")
        self.layer, nesting = found
        self.head = _score_head(model)
        head_input = self.head.input if self.head is not None else model.outputs[0]
        self.nested = bool(nesting)
        if not self.nested:
            self.grad_model = keras.Model(model.inputs, [self.layer.output, head_input, model.outputs[0]])
        else:
            self.container = nesting[0]  # the top-level layer that holds the target
            inner = nesting[0]
            self.inner = keras.Model(inner.inputs, [_find(inner, self.layer_name)[0].output, inner.output])
            self.chain = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
            self._check_chain()

    @property
    def map_size(self) -> list[int]:
        """Height and width of the target layer's output (the map's resolution before upsampling)."""
        return [int(d) for d in self.layer.output.shape[1:3]]

    def _forward(self, x):
        """``(activations, scores input, probabilities)`` for a batch, recorded by an enclosing tape."""
        if not self.nested:
            return self.grad_model(x, training=False)
        h, acts, head_in = x, None, None
        for layer in self.chain:
            if layer is self.head:
                head_in = h
            if layer is self.container:
                acts, h = self.inner(h, training=False)
            else:
                h = layer(h, training=False)
        return acts, (head_in if self.head is not None else h), h

    def _check_chain(self) -> None:
        """Raise ``ValueError`` unless running the layers one after the other reproduces the model."""
        shape = [1 if d is None else int(d) for d in self.model.inputs[0].shape]
        x = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
        problem = ""
        try:
            chained = keras.ops.convert_to_numpy(self._forward(x)[2])
            reference = keras.ops.convert_to_numpy(self.model(x, training=False))
            if chained.shape != reference.shape or not np.allclose(chained, reference, atol=1e-4):
                problem = "running its layers one after the other gives other outputs"
        except Exception as err:  # a layer fed the wrong tensor fails in backend-specific ways
            problem = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        if problem:
            raise ValueError(f"Grad-CAM layer {self.layer_name!r} lies in the nested model {self.container.name!r} "
                             f"of {self.model.name!r}, which is not a chain of layers ({problem}); build the model "
                             "flat (backbone with input_tensor=, as xraylib.tf_model.build_model) or pass a layer "
                             "of the outer model")

    def _scores(self, head_in, probs, classes):
        """Per-image class score before the output activation (see the module docstring)."""
        classes = tf.constant(np.asarray(classes, dtype=np.int32))
        if self.head is not None:
            logits = tf.matmul(head_in, self.head.kernel)
            if self.head.use_bias:
                logits = logits + self.head.bias
        else:  # no recognisable head: use the probabilities themselves
            logits = probs
        if logits.shape[-1] == 1:
            z = logits[:, 0]
            if self.head is None:  # probability of class 1 -> score of class 0 is 1 - p
                return tf.where(classes == 1, z, 1.0 - z)
            return tf.where(classes == 1, z, -z)
        return tf.gather(logits, classes, axis=1, batch_dims=1)

    def activations_and_gradients(self, batch: np.ndarray, classes: Sequence[int]):
        """``(activations, gradients, probabilities)`` as numpy arrays for one batch.

        Args:
            batch: ``(N, S, S)`` or ``(N, S, S, 1)`` images, 0..255.
            classes: the class index whose score is explained, one per image.
        """
        x = np.asarray(batch, dtype=np.float32)
        if x.ndim == 3:
            x = x[..., None]
        if len(classes) != len(x):
            raise ValueError(f"need one class per image, got {len(classes)} classes for {len(x)} images")
        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            acts, head_in, probs = self._forward(x)
            scores = self._scores(head_in, probs, classes)
        grads = tape.gradient(scores, acts)
        return acts.numpy(), grads.numpy(), keras.ops.convert_to_numpy(probs)

    def __call__(self, batch: np.ndarray, classes: Sequence[int],
                 batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """Maps of ``classes`` for ``batch``: ``(cams (N, S, S) float32 in [0, 1], probabilities)``."""
        batch = np.asarray(batch)
        size = batch.shape[1:3]
        cams, probs = [], []
        for start in range(0, len(batch), batch_size):
            acts, grads, p = self.activations_and_gradients(batch[start:start + batch_size],
                                                            list(classes[start:start + batch_size]))
            cams += [upsample_cam(c, size) for c in cam_from_activations(acts, grads)]
            probs.append(p)
        if not cams:
            return np.zeros((0, *size), np.float32), np.zeros((0, 1), np.float32)
        return np.stack(cams), np.concatenate(probs)


# --------------------------------------------------------------------------- model settings and predictions

def model_settings(model: keras.Model, meta: dict) -> dict:
    """Image preparation, class names and threshold of a saved model (sidecar JSON, with fallbacks)."""
    size = meta.get("image_size") or model.input_shape[1]
    return {
        "image_size": int(size),
        "resize": meta.get("resize", "stretch"),
        "equalize": meta.get("equalize", "none"),
        "class_names": list(meta.get("class_names", ["NORMAL", "PNEUMONIA"])),
        "threshold": float(meta.get("threshold", 0.5)),
    }


def class_probabilities(output: np.ndarray) -> np.ndarray:
    """``(N, 1)`` sigmoid output -> ``(N, 2)`` ``[1 - p, p]``; ``(N, C)`` unchanged."""
    output = np.asarray(output, dtype=np.float64)
    return np.concatenate([1.0 - output, output], axis=1) if output.shape[1] == 1 else output


def predicted_classes(probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Binary: class 1 when ``p >= threshold``; more classes: arg-max."""
    probs = np.asarray(probs)
    return (probs[:, 1] >= threshold).astype(np.int64) if probs.shape[1] == 2 else probs.argmax(1).astype(np.int64)


def class_predictor(model: keras.Model, meta: dict) -> Callable[[np.ndarray], np.ndarray]:
    """``predict_proba``: ``(N, S, S)`` uint8 prepared images -> ``(N, C)`` probabilities (:func:`class_probabilities`).

    The binary model (one sigmoid output) is run with its stored test-time
    augmentation (``meta["tta"]``), as in evaluation.
    """
    if model.outputs[0].shape[-1] == 1:
        tta = meta.get("tta", "none")
        return lambda x: class_probabilities(tf_model.predict_proba(model, np.asarray(x), tta)[:, None])
    return lambda x: class_probabilities(model.predict(np.asarray(x, dtype=np.float32)[..., None], verbose=0))


def camset_for_images(model: keras.Model, meta: dict, paths: Sequence[str], labels: Sequence[str] | None = None, *,
                      name: str = "binary", batch_size: int = 16, deletion_steps: int = 0,
                      deletion_baseline: str = "blur", seed: int = 0) -> CamSet:
    """Prepare images as in training, predict, and compute the maps of the predicted and the true class.

    Args:
        model, meta: from :func:`xraylib.tf_model.load_model`.
        paths: image files (relative paths are taken from the project root).
        labels: true class names (or ``None`` / empty strings when unknown).
        name: name of the set (the model's name in reports).
        batch_size: images per forward/backward pass.
        deletion_steps: also compute the deletion curves of the predicted-class maps with
            this many steps (:func:`xraylib.gradcam_faithfulness.camset_curves`); 0: none.
        deletion_baseline: what deleted pixels become (``blur`` or ``mean``).
        seed: seeds the curves' tie-breaking and random pixel order.
    """
    settings = model_settings(model, meta)
    names = settings["class_names"]
    if not len(paths):
        raise ValueError("no images given; expected at least one image path")
    if deletion_baseline not in gradcam_faithfulness.BASELINES:
        raise ValueError(f"deletion baseline must be one of {gradcam_faithfulness.BASELINES}, "
                         f"got {deletion_baseline!r}")
    y_true = label_indices(labels, names, len(paths), "the model")
    prepared = np.stack([images.prepare(p, settings["image_size"], settings["resize"], settings["equalize"])
                         for p in paths])
    cam = GradCam(model)
    predict_proba = class_predictor(model, meta)
    probs = predict_proba(prepared)
    y_pred = predicted_classes(probs, settings["threshold"])
    cam_pred, _ = cam(prepared, y_pred, batch_size)
    cam_true = true_class_maps(cam_pred, y_true, y_pred, lambda idx, k: cam(prepared[idx], k, batch_size)[0])
    info = {"framework": "keras", "target_layer": cam.layer_name, "map_size": cam.map_size, **settings}
    camset = CamSet(name, names, [str(p) for p in paths], prepared, y_true, y_pred, probs, cam_true, cam_pred, info)
    if deletion_steps:
        camset.curves = gradcam_faithfulness.camset_curves(camset, predict_proba, steps=deletion_steps,
                                                           baseline=deletion_baseline, seed=seed)
        camset.info["faithfulness"] = {"steps": int(deletion_steps), "baseline": deletion_baseline, "seed": int(seed),
                                       "explained": "predicted class", "modes": ["deletion"]}
    return camset


def write_camset(model_path: str | Path, images_csv: str | Path, out: str | Path, *, name: str = "binary",
                 batch_size: int = 16, deletion_steps: int = 0, deletion_baseline: str = "blur",
                 seed: int = 0) -> CamSet:
    """Maps (and deletion curves) of a saved Keras model on the images of a CSV, written to an ``.npz`` file.

    What ``xraylib cams`` runs. Ops run deterministically, so every run writes the
    same maps (notebook 05's outputs are compared between runs).

    Args:
        model_path: ``model.keras`` with its ``model.json`` settings.
        images_csv: a ``path`` column (relative paths: from the project root) and optionally ``label``.
        out: the ``.npz`` file (:func:`xraylib.gradcam_sets.save_camset`).
        name, batch_size, deletion_steps, deletion_baseline, seed: see :func:`camset_for_images`.

    Raises:
        FileNotFoundError: no such model or CSV file.
        ValueError: the CSV has no ``path`` column, labels the model does not know, or an unknown baseline.
    """
    import pandas as pd

    if deletion_baseline not in gradcam_faithfulness.BASELINES:
        raise ValueError(f"deletion baseline must be one of {gradcam_faithfulness.BASELINES}, "
                         f"got {deletion_baseline!r}")
    if deletion_steps < 0:
        raise ValueError(f"deletion steps must be >= 0 (0: no curves), got {deletion_steps}")
    tf.config.experimental.enable_op_determinism()
    table = pd.read_csv(images_csv, keep_default_na=False)
    if "path" not in table.columns:
        raise ValueError(f"{images_csv} has no 'path' column (columns: {list(table.columns)}); expected 'path' "
                         "and optionally 'label'")
    labels = table["label"].astype(str).tolist() if "label" in table.columns else None
    model, meta = tf_model.load_model(model_path, require=tf_model.SETTINGS_KEYS)
    camset = camset_for_images(model, meta, table["path"].tolist(), labels, name=name, batch_size=batch_size,
                               deletion_steps=deletion_steps, deletion_baseline=deletion_baseline, seed=seed)
    save_camset(camset, out)
    return camset
