"""What a model file really is, and one clear line when it is not what was expected (standard library only).

Both frameworks fail on a wrong file with long tracebacks, and PyTorch's message for a
pickle it refuses suggests loading the file unsafely. The loaders in ``torch_*`` and
``tf_*`` modules catch those failures and raise :class:`ModelFileError` built here
instead: the path, what the file is (sniffed from its first bytes, never unpickled)
and what was expected, e.g.::

    'models/x/best.pt' is a text file, not an xraylib PyTorch checkpoint (best.pt from train_multiclass)

Files are only ever opened for reading.
"""

from __future__ import annotations

import json
import pickle  # for its exception type only: nothing here unpickles
import re
import warnings
import zipfile
from pathlib import Path
from typing import Callable, Sequence, TypeVar

TORCH_CHECKPOINT = "an xraylib PyTorch checkpoint (best.pt from train_multiclass)"
TORCH_STATE_DICT = "a PyTorch state dict"
TORCH_RESUME = "a resume checkpoint (last.pt written by xraylib.torch_train)"
KERAS_MODEL = "a Keras model archive (.keras, a ZIP written by xraylib)"
KERAS_WEIGHTS = "a Keras weights file (HDF5, e.g. xception_notop.weights.h5)"
KERAS_SETTINGS = "the model's settings (model.json, a JSON object written by xraylib.tf_model.save_model)"
DAMAGED_HINT = "copy or save it again"

HEAD_BYTES = 2048
# Magic numbers at the start of a file -> what the file is.
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file"),
    (b"\x93NUMPY", "a NumPy array file"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"%PDF-", "a PDF document"),
)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
# torch.save's legacy (non-ZIP) format starts with this number, pickled with protocol 2.
_TORCH_LEGACY_MAGIC = b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_TEXT_CONTROLS = set(b"\t\n\r\f\x1b")
T = TypeVar("T")


class ModelFileError(ValueError):
    """A model, weights or settings file that is not what was expected (one line: path, what it is, expected)."""


def one_line(text: object, limit: int = 160) -> str:
    """``text`` on one line (whitespace and terminal colour codes collapsed), cut to ``limit`` characters."""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(text)).split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _zip_kind(names: Sequence[str]) -> str:
    if any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
        return "PyTorch file"
    if "config.json" in names:
        return "Keras model archive"
    return "ZIP archive"


def _describe_zip(path: Path, head: bytes) -> str:
    try:
        with zipfile.ZipFile(path) as archive:  # reads the central directory only
            return "a " + _zip_kind(archive.namelist())
    except (zipfile.BadZipFile, EOFError, OSError, ValueError):
        # No readable central directory (cut off): name the archive by its first entry.
        first = ""
        if head.startswith(b"PK\x03\x04") and len(head) >= 30:
            size = int.from_bytes(head[26:28], "little")
            first = head[30:30 + size].decode("utf-8", "replace")
        keras_entry = first in ("metadata.json", "config.json", "model.weights.h5")
        return "a truncated or damaged " + ("Keras model archive" if keras_entry else _zip_kind([first]))


def _describe_text(head: bytes) -> str | None:
    """What a text file is, or ``None`` when ``head`` is not text."""
    if any(byte < 0x20 and byte not in _TEXT_CONTROLS for byte in head):
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:  # not just a character cut at the end of the head
            return None
        text = head[: err.start].decode("utf-8")
    start = text.lstrip().lower()
    if start.startswith("version https://git-lfs"):
        return "a Git LFS pointer (a text file standing in for the real file; run `git lfs pull`)"
    if start.startswith(("<!doctype html", "<html")):
        return "an HTML page"
    return "a text file"


def describe(path: str | Path) -> str:
    """What the file at ``path`` is, in words, from its first bytes (nothing is unpickled or executed).

    Returns a phrase with its article: ``"an empty file"``, ``"a text file"``, ``"a ZIP archive"``,
    ``"a PyTorch file"``, ``"a PyTorch file (legacy format)"``, ``"a Keras model archive"``,
    ``"a truncated or damaged PyTorch file"``, ``"an HDF5 file"``, ``"a Python pickle"``,
    ``"a PNG image"``, ``"a JPEG image"``, ``"a folder"``, ``"binary data"``, ...
    """
    path = Path(path)
    if path.is_dir():
        return "a folder"
    if not path.exists():
        return "a path that does not exist"
    if not path.is_file():
        return "a special file (a pipe, socket or device)"
    try:
        with path.open("rb") as handle:
            head = handle.read(HEAD_BYTES)
    except OSError as err:
        return f"an unreadable file ({err.strerror or type(err).__name__})"
    if not head:
        return "an empty file"
    if head.startswith(_ZIP_MAGIC):
        return _describe_zip(path, head)
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if head[128:132] == b"DICM":
        return "a DICOM image"
    if head[0] == 0x80 and 2 <= head[1] <= 5:
        return "a PyTorch file (legacy format)" if head[2:14] == _TORCH_LEGACY_MAGIC else "a Python pickle"
    if len(head) > 8 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 100_000_000:
        return "a safetensors file"
    return _describe_text(head) or "binary data"


def not_a_model(path: str | Path, expected: str, what: str | None = None, hint: str = "") -> ModelFileError:
    """``ModelFileError("'{path}' is {what}, not {expected}[; {hint}]")``; ``what`` defaults to :func:`describe`."""
    what = describe(path) if what is None else what
    return ModelFileError(f"'{path}' is {what}, not {expected}" + (f"; {hint}" if hint else ""))


def unsafe_payload(path: str | Path, expected: str, what: str, names: Sequence[str] = ()) -> ModelFileError:
    """The error for a file holding pickled Python objects that a safe loader refused (``names``: their classes)."""
    found = f" ({', '.join(names[:3])})" if names else ""
    return ModelFileError(f"'{path}' is {what} holding Python objects other than tensors and plain values{found}, "
                          f"not {expected}; xraylib refuses to load it because unpickling them could run code")


def torch_load_error(path: str | Path, err: BaseException, expected: str) -> ModelFileError:
    """Turn any failure of ``torch.load(path, weights_only=True)`` into one line.

    The message says what the file is (:func:`describe`), not what torch said: torch's
    text for a refused pickle recommends loading it unsafely. Only the names of refused
    classes (``GLOBAL module.name``) are taken from it.

    Args:
        path: the file given to ``torch.load``.
        err: the exception it raised.
        expected: what the caller needed, e.g. :data:`TORCH_CHECKPOINT`.
    """
    what = describe(path)
    message = str(err)
    names = list(dict.fromkeys(re.findall(r"GLOBAL ([A-Za-z_][\w.]*)", message)))
    refused = isinstance(err, pickle.UnpicklingError) and (names or "Unsupported" in message)
    if what.startswith("a PyTorch file"):
        if refused:
            return unsafe_payload(path, expected, what, names)
        return not_a_model(path, expected, "a truncated or damaged " + what.removeprefix("a "), DAMAGED_HINT)
    if what.startswith("a truncated or damaged"):
        return not_a_model(path, expected, what, DAMAGED_HINT)
    if what == "a Python pickle":
        if refused and names:
            return unsafe_payload(path, expected, what, names)
        return not_a_model(path, expected, what, "xraylib loads only files written by torch.save, because "
                                                 "unpickling other files could run code")
    return not_a_model(path, expected, what)


def torch_load(load: Callable[[], T], path: str | Path, expected: str) -> T:
    """Call ``load`` (``torch.load(path, weights_only=True)``); a failure becomes :func:`torch_load_error`.

    Warnings raised while loading are kept back and re-issued only when the load
    succeeds: for a file that fails, the one line of :class:`ModelFileError` says it all.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = load()
        except Exception as err:  # empty, text, truncated, foreign or refused file: torch raises many types
            # `from None`: torch's own message for a refused pickle recommends loading it unsafely.
            raise torch_load_error(path, err, expected) from None
    for item in caught:
        warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
    return result


def check_keras_archive(path: str | Path) -> None:
    """Raise :class:`ModelFileError` unless ``path`` is a readable ZIP holding ``config.json`` (a ``.keras`` file)."""
    what = describe(path)
    if what == "a Keras model archive":
        return
    if what.startswith("a truncated or damaged"):
        raise not_a_model(path, "a complete " + KERAS_MODEL.removeprefix("a "), what, DAMAGED_HINT)
    if what == "a ZIP archive":
        what = "a ZIP archive without config.json"
    raise not_a_model(path, KERAS_MODEL, what)


def keras_load_error(path: str | Path, err: BaseException) -> ModelFileError:
    """Turn a failure of ``keras.saving.load_model(path, safe_mode=True)`` into one line.

    A refusal of Python code (``Lambda`` layers) is said in our words; Keras's own text
    suggests turning safe mode off.
    """
    text = one_line(str(err), limit=10_000)
    unknown = re.search(r"(?:locate class|deserialize) '([\w.]+)'", text)
    if re.search(r"safe_mode|unsafe|arbitrary code", text, re.IGNORECASE):
        detail = ("it holds Python code (a Lambda layer or a pickled function), which xraylib refuses to load "
                  "because deserializing it could run code")
    elif unknown:
        detail = f"it uses {unknown.group(1)!r}, which is neither a Keras nor an xraylib layer"
    else:
        detail = f"Keras could not rebuild the model from it ({type(err).__name__}: {one_line(text)})"
    return ModelFileError(f"'{path}' is a Keras model archive that xraylib cannot load: {detail}; "
                          f"expected a model saved by xraylib.tf_model.save_model")


_JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean",
               type(None): "null"}


def read_settings(path: str | Path, require: Sequence[str] = ()) -> dict:
    """The JSON object in ``path`` (a model's ``model.json``), holding at least the keys ``require``.

    Raises:
        ModelFileError: not a text file, invalid JSON, not a JSON object or keys missing.
    """
    what = describe(path)
    if what != "a text file":
        raise not_a_model(path, KERAS_SETTINGS, what)
    try:
        settings = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        reason = (f"{err.msg} at line {err.lineno} column {err.colno}" if isinstance(err, json.JSONDecodeError)
                  else "not UTF-8")
        raise not_a_model(path, KERAS_SETTINGS, f"a text file that is not valid JSON ({reason})") from None
    if not isinstance(settings, dict):
        raise not_a_model(path, KERAS_SETTINGS, f"JSON holding {_JSON_TYPES.get(type(settings), 'a value')}")
    missing = [key for key in require if key not in settings]
    if missing:
        raise ModelFileError(f"'{path}' lacks the settings {missing}; expected {KERAS_SETTINGS} with the keys "
                             f"{list(require)}")
    return settings
