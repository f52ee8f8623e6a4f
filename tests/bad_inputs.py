"""Bad input files, made at test time, and a fingerprint of a tree to prove inputs are never modified.

Every maker writes one file (or link) and returns its path. Used by the bad-input
suites in tests/unit (data stage), tests/torch and tests/tf (predict, evaluate).
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image


def xray(path: Path, seed: int, size: tuple[int, int] = (40, 32), mode: str = "L") -> Path:
    """A small valid image with a seed-specific random texture (no two seeds look alike)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0]), dtype=np.uint8)
    Image.fromarray(arr).convert(mode).save(path)
    return path


def truncated_jpeg(path: Path, seed: int) -> Path:
    whole = xray(path.with_name("whole_" + path.name), seed)
    data = whole.read_bytes()
    whole.unlink()
    path.write_bytes(data[: len(data) // 2])
    return path


def zero_bytes(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def text_as_image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("this is not an image\n")
    return path


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def huge_png(path: Path, side: int = 20000) -> Path:
    """A valid 1-bit PNG of ``side`` x ``side`` pixels (400 megapixels at 20000), only ~50 kB on disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", body)
                     + png_chunk(b"IEND", b""))
    return path


def odd_modes(folder: Path, first_seed: int) -> list[Path]:
    """Valid images the readers must convert: 16-bit, RGBA, palette, CMYK, 1-bit and a 1x1 pixel image."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(first_seed)
    out = []
    arr16 = rng.integers(0, 65535, size=(32, 40), dtype=np.uint16)
    Image.fromarray(arr16).save(out_path := folder / "sixteen_bit.png")
    out.append(out_path)
    for k, (name, mode) in enumerate((("rgba.png", "RGBA"), ("palette.png", "P"), ("cmyk.jpg", "CMYK"),
                                      ("one_bit.png", "1"))):
        out.append(xray(folder / name, first_seed + 1 + k, mode=mode))
    out.append(xray(folder / "single_pixel.png", first_seed + 9, size=(1, 1)))
    return out


def tree_state(root: Path) -> dict[str, str]:
    """``{relative path: what it is}`` for everything under ``root``, links not followed.

    Files by content hash and permission bits, links by target, folders by permission
    bits: equal before and after a run means the run modified, added and removed nothing.
    """
    state = {}
    for here, dirs, files in os.walk(root):
        for name in sorted(dirs) + sorted(files):
            path = Path(here) / name
            info = path.lstat()
            key = path.relative_to(root).as_posix()
            if stat.S_ISLNK(info.st_mode):
                state[key] = f"link -> {os.readlink(path)}"
            elif stat.S_ISDIR(info.st_mode):
                state[key] = f"dir {stat.S_IMODE(info.st_mode):o}"
            else:
                mode = stat.S_IMODE(info.st_mode)
                try:
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()
                except PermissionError:
                    digest = "unreadable"
                state[key] = f"file {mode:o} {digest}"
    return state


@contextmanager
def unreadable(monkeypatch, *paths: Path):
    """Make files and folders unreadable: ``chmod 000``, and where that does not stop this user
    (root), make opening and listing them raise ``PermissionError`` as it would for anyone else."""
    saved = {p: stat.S_IMODE(p.stat().st_mode) for p in paths}
    for p in paths:
        p.chmod(0)
    denied = {str(p.resolve()) for p in paths}
    try:
        with monkeypatch.context() as patch:  # undone on leaving, not at the end of the test
            if all(os.access(p, os.R_OK) for p in paths):  # root: permissions do not apply
                real_open, real_scandir = Image.open, os.scandir

                def guarded_open(fp, *args, **kwargs):
                    if isinstance(fp, (str, os.PathLike)) and str(Path(fp).resolve()) in denied:
                        raise PermissionError(13, "Permission denied", str(fp))
                    return real_open(fp, *args, **kwargs)

                def guarded_scandir(path="."):
                    if str(Path(path).resolve()) in denied:
                        raise PermissionError(13, "Permission denied", str(path))
                    return real_scandir(path)

                patch.setattr(Image, "open", guarded_open)
                patch.setattr(os, "scandir", guarded_scandir)
            yield
    finally:
        for p, mode in saved.items():
            p.chmod(mode)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_model_message(message: str, path: Path, what: str, forbidden: tuple[str, ...]) -> None:
    """A model-file refusal: one line, starting with the quoted path, saying ``what``, none of ``forbidden``."""
    assert message.startswith(f"'{path}' ") and what in message, message
    rest = message.removeprefix(f"'{path}' ")
    assert "\n" not in rest and not [word for word in forbidden if word in rest], message
