"""Grad-CAM for the PyTorch models with ``pytorch_grad_cam.GradCAM``.

The target layer comes from :func:`xraylib.torch_model.target_layer`:
``layer4[-1]`` for the ResNets, ``features`` for DenseNet121 and SqueezeNet.
The class score is the logit (the models output logits; softmax comes after),
through ``ClassifierOutputTarget``. pytorch-grad-cam returns maps already
scaled to [0, 1] at the input size, the same definition as
:mod:`xraylib.tf_gradcam` (see :mod:`xraylib.gradcam_maps`).

:func:`camset_for_checkpoint` also computes the maps' deletion curves
(:mod:`xraylib.gradcam_faithfulness`) with :func:`class_predictor`, in this process.

DenseNet: torchvision's ``DenseNet.forward`` applies ``F.relu(features,
inplace=True)``, which overwrites the activations kept by a hook on
``features``. :func:`xraylib.torch_model.build_model` (and so every checkpoint
loaded by :func:`xraylib.torch_model.load_checkpoint`) already returns a
:class:`~xraylib.torch_model.CamFriendlyDenseNet`; a plain torchvision DenseNet
passed in here is switched to it for the computation (same parameters and
outputs) and switched back afterwards.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn
from torchvision.models import DenseNet

from xraylib import config, gradcam_faithfulness
from xraylib.gradcam_sets import CamSet, label_indices, true_class_maps
from xraylib.torch_data import build_transform
from xraylib.torch_model import CamFriendlyDenseNet, check_arch, load_checkpoint, target_layer, target_layer_name


@contextlib.contextmanager
def cam_friendly(model: nn.Module):
    """Temporarily make a torchvision DenseNet's final ReLU out of place (see the module docstring)."""
    swapped = isinstance(model, DenseNet) and not isinstance(model, CamFriendlyDenseNet)
    original = type(model)
    if swapped:
        model.__class__ = CamFriendlyDenseNet
    try:
        yield model
    finally:
        if swapped:
            model.__class__ = original


def compute_cams(model: nn.Module, arch: str | None, batch: torch.Tensor, classes: Sequence[int] | None,
                 batch_size: int = 16, layer: nn.Module | None = None, *,
                 return_probs: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Grad-CAM maps of ``classes`` (one per image) for a batch of normalised input tensors.

    Args:
        model: a classifier built by :func:`xraylib.torch_model.build_model` (any device).
        arch: its architecture name (picks the target layer); ``None`` with ``layer``.
        batch: ``(N, 3, S, S)`` inputs, normalised as in training (:func:`xraylib.torch_data.build_transform`).
        classes: class index to explain, one per image; ``None``: each image's predicted (arg-max) class.
        batch_size: images per forward/backward pass.
        layer: another target layer (e.g. of a custom model); default :func:`xraylib.torch_model.target_layer`.
        return_probs: also return the softmax probabilities of the same forward pass.

    Returns:
        ``(N, S, S)`` float32 maps in [0, 1]; with ``return_probs`` also ``(N, C)`` probabilities.
    """
    if layer is None:
        layer = target_layer(model, check_arch(arch))
    if classes is not None and len(classes) != len(batch):
        raise ValueError(f"need one class per image, got {len(classes)} classes for {len(batch)} images")
    if len(batch) == 0:
        empty = np.zeros((0, *batch.shape[2:]), np.float32)
        return (empty, np.zeros((0, 0))) if return_probs else empty
    was_training = model.training
    device = next(model.parameters()).device
    maps, probs = [], []
    # Not ``with GradCAM(...)``: its __exit__ prints and swallows IndexError (e.g. a class index out of range).
    with cam_friendly(model):
        cam = GradCAM(model=model, target_layers=[layer])
        try:
            for start in range(0, len(batch), batch_size):
                x = batch[start:start + batch_size].to(device)
                targets = None if classes is None else [ClassifierOutputTarget(int(k))
                                                        for k in classes[start:start + batch_size]]
                maps.append(np.asarray(cam(input_tensor=x, targets=targets), dtype=np.float32))
                probs.append(torch.softmax(cam.outputs.detach().float(), 1).cpu().numpy())
        finally:
            cam.activations_and_grads.release()
            model.train(was_training)
    maps = np.clip(np.concatenate(maps), 0.0, 1.0)
    return (maps, np.concatenate(probs).astype(np.float64)) if return_probs else maps


def feature_map_size(model: nn.Module, arch: str, image_size: int) -> tuple[int, int]:
    """Height and width of the target layer's output for ``image_size`` inputs (the map's resolution).

    At small inputs the maps get very coarse: DenseNet121 downsamples 32x, so a
    48-pixel image gives a 1x1 map, which carries no location at all.
    """
    shapes = []
    handle = target_layer(model, arch).register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[-2:])))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, int(image_size), int(image_size), device=device))
    finally:
        handle.remove()
        model.train(was_training)
    return shapes[0]


def class_predictor(model: nn.Module, batch_size: int = 64) -> Callable[[np.ndarray], np.ndarray]:
    """``predict_proba``: ``(N, S, S)`` uint8 prepared images -> ``(N, C)`` softmax probabilities (float64).

    Inputs go through the training transform without augmentation
    (:func:`xraylib.torch_data.build_transform`), on the model's device, in eval mode.
    """
    transform = build_transform(train=False)
    device = next(model.parameters()).device

    def predict_proba(images: np.ndarray) -> np.ndarray:
        was_training = model.training
        model.eval()
        out = []
        try:
            with torch.no_grad():
                for start in range(0, len(images), batch_size):
                    chunk = images[start:start + batch_size]
                    x = torch.stack([transform(np.asarray(im, dtype=np.uint8)) for im in chunk])
                    out.append(torch.softmax(model(x.to(device)).float(), 1).cpu().numpy())
        finally:
            model.train(was_training)
        return np.concatenate(out).astype(np.float64)

    return predict_proba


def camset_for_checkpoint(checkpoint: str | Path, frame: pd.DataFrame, *, name: str | None = None,
                          batch_size: int = 16, deletion_steps: int = 0, deletion_baseline: str = "blur",
                          seed: int = 0) -> CamSet:
    """Load ``best.pt``, prepare ``frame``'s images as in training, predict, and map predicted and true classes.

    Args:
        checkpoint: a checkpoint written by :mod:`xraylib.torch_train`.
        frame: rows with ``path`` and ``label`` (class names of the model; empty when unknown).
        name: name of the set (default: the run folder's name).
        batch_size: images per forward/backward pass.
        deletion_steps: also compute the deletion curves of the predicted-class maps with
            this many steps (:func:`xraylib.gradcam_faithfulness.camset_curves`, in
            :attr:`CamSet.curves`); 0: none.
        deletion_baseline: what deleted pixels become (``blur`` or ``mean``).
        seed: seeds the curves' tie-breaking and random pixel order.

    Raises:
        ValueError: labels that are not classes of the model, or an unknown baseline.
    """
    from xraylib import images

    if deletion_baseline not in gradcam_faithfulness.BASELINES:
        raise ValueError(f"deletion baseline must be one of {gradcam_faithfulness.BASELINES}, "
                         f"got {deletion_baseline!r}")
    checkpoint = config.resolve(checkpoint)
    model, meta = load_checkpoint(checkpoint)
    names = list(meta["class_names"])
    y_true = label_indices(frame["label"] if "label" in frame.columns else None, names, len(frame),
                           checkpoint.parent.name)
    if frame.empty:
        raise ValueError("no images given; expected at least one row with a 'path'")
    prepared = np.stack([images.prepare(p, meta["image_size"], meta["resize"], meta["equalize"])
                         for p in frame["path"]])
    transform = build_transform(train=False)
    batch = torch.stack([transform(img) for img in prepared])
    cam_pred, probs = compute_cams(model, meta["arch"], batch, None, batch_size, return_probs=True)
    y_pred = probs.argmax(1).astype(np.int64)
    cam_true = true_class_maps(cam_pred, y_true, y_pred,
                               lambda idx, k: compute_cams(model, meta["arch"], batch[idx], k, batch_size))
    info = {"framework": "torch", "arch": meta["arch"], "image_size": int(meta["image_size"]),
            "resize": meta["resize"], "equalize": meta["equalize"],
            "target_layer": target_layer_name(meta["arch"]),
            "map_size": list(feature_map_size(model, meta["arch"], int(meta["image_size"])))}
    camset = CamSet(name or checkpoint.parent.name, names, [str(p) for p in frame["path"]], prepared, y_true, y_pred,
                    probs, cam_true, cam_pred, info)
    if deletion_steps:
        camset.curves = gradcam_faithfulness.camset_curves(camset, class_predictor(model, max(batch_size, 1)),
                                                           steps=deletion_steps, baseline=deletion_baseline, seed=seed)
        camset.info["faithfulness"] = {"steps": int(deletion_steps), "baseline": deletion_baseline, "seed": int(seed),
                                       "explained": "predicted class", "modes": ["deletion"]}
    return camset
