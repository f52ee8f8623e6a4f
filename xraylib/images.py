"""Image loading and preparation shared by both frameworks (numpy / PIL only).

One definition of "a prepared chest X-ray" for the whole repository:

1. :func:`load_gray` reads any file PIL can decode and returns 8-bit grayscale.
   Odd modes are converted, never rejected: 16-bit and 32-bit images are
   rescaled from their own min..max to 0..255, RGBA/LA are composited on black,
   palette / CMYK / RGB images are converted to luminance.
2. :func:`resize` brings the image to ``size x size`` either by stretching (what
   ``image_dataset_from_directory`` and ``transforms.Resize((224, 224))`` do in
   the original notebooks) or by keeping the aspect ratio and padding with black.
3. :func:`equalize` optionally applies histogram equalisation or CLAHE.
4. :func:`standardize` is the per-image ``(x - mean) / std`` of the original
   Keras notebook; the frameworks apply the same formula inside their models.

Raw files are only ever opened for reading.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from xraylib import config

RESIZE_MODES = ("pad", "stretch")
EQUALIZE_MODES = ("none", "hist", "clahe")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".pgm", ".ppm", ".dcm")


class ImageReadError(ValueError):
    """A file could not be decoded as an image."""


def to_gray_uint8(img: Image.Image) -> np.ndarray:
    """Convert a PIL image of any common mode to an 8-bit grayscale array.

    Args:
        img: a loaded PIL image (modes 1, L, P, RGB, RGBA, LA, CMYK, YCbCr, I;16*, I, F).

    Returns:
        ``uint8`` array of shape ``(H, W)``.
    """
    mode = img.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        if hi <= lo:
            return np.zeros(arr.shape, dtype=np.uint8)
        return np.round((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode != "L":
        img = img.convert("RGB").convert("L") if img.mode not in ("1",) else img.convert("L")
    return np.asarray(img, dtype=np.uint8).copy()


def load_gray(path: str | Path) -> np.ndarray:
    """Read an image file as 8-bit grayscale (relative paths are taken from the project root).

    Raises:
        FileNotFoundError: the file does not exist.
        ImageReadError: the file is not a decodable image (corrupt, truncated, not an image).
    """
    path = config.resolve(path)  # manifest paths are relative to the project root
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} does not exist")
    try:
        with Image.open(path) as img:
            img.load()
            return to_gray_uint8(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f"cannot read {path} as an image: {err}") from err


def inspect_image(path: str | Path) -> dict:
    """Fully decode ``path`` and return its ``width``, ``height`` and original ``mode``.

    Raises:
        ImageReadError: if the file cannot be decoded completely (e.g. truncated JPEG).
    """
    try:
        with Image.open(path) as img:
            img.load()
            return {"width": img.width, "height": img.height, "mode": img.mode}
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f"{type(err).__name__}: {err}") from err


def resize(gray: np.ndarray, size: int, mode: str = "pad") -> np.ndarray:
    """Resize a 2-D ``uint8`` image to ``size x size``.

    Args:
        gray: ``(H, W)`` uint8 image.
        size: output side length in pixels (>= 8).
        mode: ``"stretch"`` ignores the aspect ratio (as the original notebooks);
            ``"pad"`` keeps it and pads the short side with black, centred.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    if int(size) != size or size < 8:
        raise ValueError(f"image size must be an integer >= 8, got {size!r}")
    if gray.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {gray.shape}")
    img = Image.fromarray(gray)
    if mode == "stretch":
        return np.asarray(img.resize((size, size), Image.BILINEAR), dtype=np.uint8)
    return np.asarray(ImageOps.pad(img, (size, size), method=Image.BILINEAR, color=0), dtype=np.uint8)


def equalize(gray: np.ndarray, method: str = "none", clip_limit: float = 2.0, tiles: int = 8) -> np.ndarray:
    """Contrast normalisation of a ``uint8`` image: none, global histogram equalisation or CLAHE.

    CLAHE uses scikit-image's ``equalize_adapthist``, a maintained implementation.
    """
    if method not in EQUALIZE_MODES:
        raise ValueError(f"equalize method must be one of {EQUALIZE_MODES}, got {method!r}")
    if method == "none":
        return gray
    if method == "hist":
        return np.asarray(ImageOps.equalize(Image.fromarray(gray)), dtype=np.uint8)
    from skimage.exposure import equalize_adapthist

    kernel = max(8, min(gray.shape) // tiles)
    out = equalize_adapthist(gray, kernel_size=kernel, clip_limit=clip_limit / 100.0)
    return np.round(out * 255).astype(np.uint8)


def prepare(path: str | Path, size: int, resize_mode: str = "pad", equalize_method: str = "none") -> np.ndarray:
    """Load and prepare one image: grayscale ``uint8`` of shape ``(size, size)``.

    This is the single image preparation used by the Keras and PyTorch input
    pipelines, the Grad-CAM overlays and the command-line predictor.
    """
    return equalize(resize(load_gray(path), size, resize_mode), equalize_method)


def standardize(x: np.ndarray) -> np.ndarray:
    """Per-image standardisation ``(x - mean) / std`` as float32.

    ``std`` is floored at ``1/sqrt(N)`` (as ``tf.image.per_image_standardization``)
    so a constant image gives zeros instead of dividing by zero.
    """
    x = np.asarray(x, dtype=np.float32)
    std = max(float(x.std()), 1.0 / np.sqrt(x.size))
    return (x - x.mean()) / std
