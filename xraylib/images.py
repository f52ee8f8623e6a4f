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

import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from xraylib import config

RESIZE_MODES = ("pad", "stretch")
EQUALIZE_MODES = ("none", "hist", "clahe")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".pgm", ".ppm", ".dcm")


# Largest image decoded, in pixels: Pillow's own decompression-bomb limit (about 89 megapixels; a chest
# X-ray is at most about 16). Pillow only warns between this and twice this; we refuse at the limit.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS
THUMBNAIL_SIZE = 64  # side of the grayscale thumbnails compared to find near-identical images


class ImageReadError(ValueError):
    """A file could not be decoded as an image (corrupt, truncated, not an image, too large, no permission)."""


@contextmanager
def _decoding(path: str | Path):
    """Open ``path`` with Pillow and turn every way decoding can fail into one :class:`ImageReadError`.

    The message says why in words: not an image, truncated or corrupt, oversized
    (Pillow's decompression-bomb guard, a warning made an error here), permission
    denied, or out of memory.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if is_dicom(path):
                yield dicom_image(path)
            else:
                with Image.open(path) as img:
                    yield img
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        size = "x".join(str(n) for n in _header_size(path)) or "unknown size"
        raise ImageReadError(f"oversized image ({size} pixels) beyond the limit of {MAX_PIXELS:,} pixels "
                             f"(decompression-bomb guard): {type(err).__name__}") from err
    except PermissionError as err:
        raise ImageReadError("permission denied: the file cannot be opened for reading") from err
    except MemoryError as err:
        raise ImageReadError("out of memory while decoding the image") from err
    except UnidentifiedImageError as err:
        raise ImageReadError("not an image Pillow can decode (unknown format or not an image file)") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageReadError(f"corrupt or truncated image: {type(err).__name__}: {err}") from err


def is_dicom(path: str | Path) -> bool:
    """A ``.dcm`` file, or any file with the DICOM preamble (``DICM`` at byte 128)."""
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with path.open("rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def dicom_image(path: str | Path) -> Image.Image:
    """A DICOM radiograph as an 8-bit grayscale PIL image, read with pydicom.

    The stored values go through the modality LUT (rescale slope/intercept) and the
    first VOI LUT or window the file defines, as a viewer shows them; ``MONOCHROME1``
    (white = low values) is inverted; the result is rescaled from its own range to
    0..255 (as 16-bit PNGs are). The source is recorded in ``image.info["source_mode"]``
    (e.g. ``DICOM MONOCHROME2 16-bit``). Colour and multi-frame files are refused.

    Raises:
        ImageReadError: not a DICOM file, no pixel data, a compression pydicom cannot decode
            here, more than one frame, colour, or larger than :data:`MAX_PIXELS`.
    """
    import pydicom  # well-kept DICOM reader; imported only when a DICOM file is read
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path, force=Path(path).suffix.lower() == ".dcm")
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as err:
        raise ImageReadError(f"not a readable DICOM file ({type(err).__name__}: {err})") from err
    if "SOPClassUID" not in ds and "PixelData" not in ds and "Modality" not in ds:  # read with force: no DICOM
        raise ImageReadError("not a readable DICOM file (no DICOM elements found)")
    if "PixelData" not in ds:
        raise ImageReadError("DICOM file without pixel data (a report or structured document, not an image)")
    rows, columns, frames = int(ds.get("Rows", 0)), int(ds.get("Columns", 0)), int(ds.get("NumberOfFrames", 1) or 1)
    if rows * columns > MAX_PIXELS:
        raise ImageReadError(f"oversized image ({columns}x{rows} pixels) beyond the limit of {MAX_PIXELS:,} pixels")
    if frames > 1:
        raise ImageReadError(f"DICOM file with {frames} frames; expected one radiograph")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if not photometric.startswith("MONOCHROME"):
        raise ImageReadError(f"colour DICOM ({photometric}); expected a grayscale radiograph (MONOCHROME1/2)")
    try:
        values = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds, index=0).astype(np.float64)
    except (NotImplementedError, RuntimeError, ValueError, AttributeError, TypeError) as err:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", syntax) or "unknown transfer syntax"
        raise ImageReadError(f"cannot decode the DICOM pixel data ({name}): {type(err).__name__}: {err}") from err
    if photometric == "MONOCHROME1":
        values = values.max() - values
    lo, hi = float(values.min()), float(values.max())
    gray = np.zeros(values.shape, np.uint8) if hi <= lo else np.round((values - lo) * (255.0 / (hi - lo))).astype(
        np.uint8)
    image = Image.fromarray(gray)  # uint8 (H, W): mode L
    image.info["source_mode"] = f"DICOM {photometric} {int(ds.get('BitsStored', ds.get('BitsAllocated', 8)))}-bit"
    return image


def _header_size(path: str | Path) -> tuple[int, ...]:
    """Width and height from the image header without decoding (empty when unknown)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                with Image.open(path) as img:
                    return tuple(img.size)
            finally:
                Image.MAX_IMAGE_PIXELS = previous
    except Exception:  # noqa: BLE001 - only for the message; any failure means "unknown"
        return ()


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
        with _decoding(path) as img:
            img.load()
            return to_gray_uint8(img)
    except ImageReadError as err:
        raise ImageReadError(f"cannot read {path} as an image: {err}") from err


def inspect_image(path: str | Path, *, fingerprint: bool = False) -> dict:
    """Fully decode ``path`` and return its ``width``, ``height`` and original ``mode``.

    With ``fingerprint``, also ``thumbnail`` (``THUMBNAIL_SIZE`` square grayscale
    ``uint8``, stretched) and ``phash`` (imagehash's 64-bit perceptual hash as 64
    booleans): what :func:`xraylib.data.label_conflicts` compares to find
    near-identical images.

    Raises:
        ImageReadError: if the file cannot be decoded completely (e.g. truncated JPEG), is
            larger than ``MAX_PIXELS`` or cannot be opened; the message says which.
    """
    with _decoding(path) as img:
        img.load()
        info = {"width": img.width, "height": img.height, "mode": img.info.get("source_mode", img.mode)}
        if fingerprint:
            import imagehash  # well-kept perceptual hashes; only the data stage needs them

            gray = Image.fromarray(to_gray_uint8(img))
            info["thumbnail"] = np.asarray(gray.resize((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.BILINEAR),
                                           dtype=np.uint8)
            info["phash"] = imagehash.phash(gray).hash.flatten()
    return info


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


# The recipe of random_view (the views of benchmarks/binary_external_search.py, train_binary.cache_views).
VIEW_ROTATION_DEG = 7.0   # uniform in +-7 degrees
VIEW_MIN_SCALE = 0.8      # a random square crop of 80-100 % of the side, resized back
VIEW_LOG_GAMMA = 0.35     # intensities ** exp(U(-0.35, 0.35)): gamma 0.70-1.42, another exposure curve
VIEW_CONTRAST = 0.25      # contrast x U(0.75, 1.25) about the image mean


def random_view(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random acquisition-like view of a prepared uint8 image (same size): rotation, crop/scale, gamma,
    contrast, and a mirror image half of the time. Pure numpy/PIL, so both frameworks can use it.
    """
    gray = np.asarray(gray)
    if gray.ndim != 2 or gray.shape[0] != gray.shape[1]:
        raise ValueError(f"random_view expects a square 2-D uint8 image, got shape {gray.shape}")
    size = gray.shape[0]
    pil = Image.fromarray(gray.astype(np.uint8)).rotate(rng.uniform(-VIEW_ROTATION_DEG, VIEW_ROTATION_DEG),
                                                        resample=Image.BILINEAR)
    side = int(round(size * (1 - rng.uniform(0, 1 - VIEW_MIN_SCALE))))
    left, top = (int(v) for v in rng.integers(0, size - side + 1, size=2))
    pil = pil.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
    x = np.asarray(pil, dtype=np.float64) / 255.0
    x = x ** np.exp(rng.uniform(-VIEW_LOG_GAMMA, VIEW_LOG_GAMMA))
    x = x.mean() + (1 + rng.uniform(-VIEW_CONTRAST, VIEW_CONTRAST)) * (x - x.mean())
    if rng.random() < 0.5:
        x = x[:, ::-1]
    return np.clip(np.round(x * 255), 0, 255).astype(np.uint8)
