"""Grad-CAM maps without a framework: the map from activations, scaling, colour overlays, original geometry.

The framework modules compute the raw maps:

* :mod:`xraylib.tf_gradcam` (Keras binary model): ``tf.GradientTape`` on the last
  convolutional activation, weights and map from :func:`cam_from_activations`;
* :mod:`xraylib.torch_gradcam` (PyTorch models): ``pytorch_grad_cam.GradCAM`` on
  :func:`xraylib.torch_model.target_layer`.

Both give the same kind of map: ``ReLU(sum_k alpha_k A_k)`` with ``alpha_k`` the
spatial mean of the gradient of the class score (pre-softmax / pre-sigmoid) with
respect to the activation ``A_k``; min-max scaled to [0, 1] and upsampled
bilinearly to the prepared image (:func:`upsample_cam`). The values are relative:
1 is the strongest evidence in that image, not a probability.

A map lives on the prepared ``S x S`` image the model saw; :func:`to_original`
takes it back to the radiograph's own pixels, undoing the resizing of
:func:`xraylib.images.resize` (``stretch``: a plain resize; ``pad``: the letterbox
padding is cut off first). Colour maps are matplotlib's; the default is the
perceptually uniform ``inferno``, ``jet`` (the original notebooks') stays available.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from xraylib import images

# Perceptually uniform maps first; jet and turbo replicate the original notebooks and the paper's figures.
COLORMAPS = ("inferno", "viridis", "magma", "plasma", "cividis", "turbo", "jet", "hot")
DEFAULT_COLORMAP = "inferno"
OVERLAY_ALPHA = 0.5  # weight of the colour map where an overlay blends it with the radiograph
COLORBAR_LABEL = "Grad-CAM (relative)"  # 1: the strongest evidence in the image, not a probability


def cam_from_activations(activations: np.ndarray, gradients: np.ndarray, channels_last: bool = True) -> np.ndarray:
    """Grad-CAM from activations and the gradients of a class score with respect to them.

    ``alpha_k = mean_ij dS/dA_k(i, j)``, ``cam = ReLU(sum_k alpha_k A_k)`` (Selvaraju et al. 2017).

    Args:
        activations: ``(N, h, w, K)`` (channels last, Keras) or ``(N, K, h, w)``.
        gradients: same shape as ``activations``.
        channels_last: layout of both arrays.

    Returns:
        ``(N, h, w)`` float32 maps, not yet scaled.
    """
    a = np.asarray(activations, dtype=np.float64)
    g = np.asarray(gradients, dtype=np.float64)
    if a.shape != g.shape or a.ndim != 4:
        raise ValueError(f"activations and gradients must be 4-D arrays of one shape, got {a.shape} and {g.shape}")
    if not channels_last:
        a, g = a.transpose(0, 2, 3, 1), g.transpose(0, 2, 3, 1)
    weights = g.mean(axis=(1, 2))  # (N, K)
    return np.maximum(np.einsum("nhwk,nk->nhw", a, weights), 0.0).astype(np.float32)


def normalize_cam(cam: np.ndarray) -> np.ndarray:
    """ReLU, then min-max scale to [0, 1] (as pytorch-grad-cam); a map without positive values becomes zeros."""
    cam = np.maximum(np.asarray(cam, dtype=np.float32), 0.0)
    cam = cam - cam.min()
    peak = float(cam.max())
    return cam / (peak + 1e-7) if peak > 0 else np.zeros_like(cam)


def _shape(shape: int | Sequence[int]) -> tuple[int, int]:
    height, width = (int(shape), int(shape)) if np.isscalar(shape) else (int(shape[0]), int(shape[1]))
    if height < 1 or width < 1:
        raise ValueError(f"target shape must be positive, got {(height, width)}")
    return height, width


def _resize(cam: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a float map (pixel centres aligned, as PIL and pytorch-grad-cam), clipped to [0, 1]."""
    return np.clip(cv2.resize(np.asarray(cam, dtype=np.float32), (width, height), interpolation=cv2.INTER_LINEAR),
                   0.0, 1.0)


def upsample_cam(cam: np.ndarray, shape: int | Sequence[int]) -> np.ndarray:
    """Scale a low-resolution map to [0, 1], resize it bilinearly to ``shape`` (H, W) or ``size x size``, rescale.

    The second min-max scaling (as pytorch-grad-cam) makes the maximum exactly 1
    at the image size (bilinear resizing moves peaks between pixel centres).

    Returns:
        float32 array of ``shape`` with values in [0, 1].
    """
    cam = np.asarray(cam, dtype=np.float32)
    if cam.ndim != 2:
        raise ValueError(f"cam must be a 2-D map (h, w), got shape {cam.shape}")
    height, width = _shape(shape)
    return np.clip(normalize_cam(_resize(normalize_cam(cam), height, width)), 0.0, 1.0).astype(np.float32)


def pad_box(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """Where an ``height x width`` image lies in its ``size x size`` letterbox (:func:`xraylib.images.resize`, ``pad``).

    The arithmetic of ``PIL.ImageOps.pad`` (``contain``, then centred): the long side
    fills ``size``, the short one is scaled and rounded, the offset is rounded.

    Returns:
        ``(top, left, inner_height, inner_width)`` in prepared-image pixels.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image shape must be positive, got {(height, width)}")
    ratio = width / height
    if ratio > 1:  # wide: full width, bands above and below
        inner = max(1, round(height / width * size))
        return round((size - inner) * 0.5), 0, inner, size
    if ratio < 1:  # tall: full height, bands left and right
        inner = max(1, round(width / height * size))
        return 0, round((size - inner) * 0.5), size, inner
    return 0, 0, size, size


def to_original(cam: np.ndarray, original_shape: Sequence[int], resize_mode: str) -> np.ndarray:
    """A map on the prepared ``S x S`` image, back on the original image's ``(H, W)`` pixels.

    ``stretch``: the map is resized to ``(H, W)``; ``pad``: the letterbox bands
    (:func:`pad_box`) are cut off, then the rest is resized. Values stay relative to
    the whole prepared map (no rescaling), so one colour bar fits every image.

    Args:
        cam: ``(S, S)`` map in [0, 1] (bring a feature-map-sized map to ``S`` with :func:`upsample_cam` first).
        original_shape: ``(H, W)`` of the image as read (:func:`xraylib.images.load_gray`).
        resize_mode: the model's ``resize`` setting, one of :data:`xraylib.images.RESIZE_MODES`.

    Returns:
        ``(H, W)`` float32 map in [0, 1].
    """
    cam = np.asarray(cam, dtype=np.float32)
    if cam.ndim != 2 or cam.shape[0] != cam.shape[1]:
        raise ValueError(f"cam must be a square map on the prepared image (S, S), got shape {cam.shape}")
    if resize_mode not in images.RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {images.RESIZE_MODES}, got {resize_mode!r}")
    height, width = _shape(original_shape)
    if resize_mode == "pad":
        top, left, inner_height, inner_width = pad_box(height, width, cam.shape[0])
        cam = cam[top:top + inner_height, left:left + inner_width]
    return _resize(cam, height, width)


def colormap_table(colormap: str) -> np.ndarray:
    """The ``(256, 3)`` RGB values in [0, 1] of a matplotlib colour map named in :data:`COLORMAPS`."""
    if colormap not in COLORMAPS:
        raise ValueError(f"colormap must be one of {list(COLORMAPS)}, got {colormap!r}")
    from matplotlib import colormaps

    return colormaps[colormap](np.linspace(0.0, 1.0, 256))[:, :3].astype(np.float32)


def apply_mask(image: np.ndarray, cam: np.ndarray, colormap: str = DEFAULT_COLORMAP,
               alpha: float | None = OVERLAY_ALPHA) -> np.ndarray:
    """Overlay a Grad-CAM map on an image with a colour map.

    A blend ``(1 - alpha) image + alpha colormap(cam)`` (both in [0, 1]): colours
    keep their meaning, so a colour bar of the map applies. ``alpha=None`` gives the
    original notebooks' ``apply_mask``: ``colormap(cam) + image``, divided by its
    maximum. A map of another size is resized to the image first.

    Args:
        image: grey ``(H, W)`` or RGB ``(H, W, 3)``, uint8 (0..255) or float (0..1).
        cam: map with values in [0, 1].
        colormap: one of :data:`COLORMAPS`.
        alpha: weight of the colour map, in [0, 1]; ``None``: the original additive overlay.

    Returns:
        ``uint8`` RGB array ``(H, W, 3)``.
    """
    table = colormap_table(colormap)
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha!r}")
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be grey (H, W) or RGB (H, W, 3), got shape {np.asarray(image).shape}")
    img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 or img.max() > 1.0 else img.astype(np.float32)
    cam = np.clip(np.asarray(cam, dtype=np.float32), 0.0, 1.0)
    if cam.shape != img.shape[:2]:
        cam = _resize(cam, *img.shape[:2])
    heatmap = table[np.uint8(np.round(255 * cam))]
    if alpha is not None:
        return np.uint8(np.round(255 * np.clip((1.0 - alpha) * img + alpha * heatmap, 0.0, 1.0)))
    overlay = heatmap + img
    return np.uint8(np.round(255 * overlay / max(float(overlay.max()), 1e-7)))
